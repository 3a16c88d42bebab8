"""A session's WebSocket stream (docs/websocket.md): steps over one socket, as JSON text frames
or as binary frames of raw numbers, several in flight at once, each reply found by its seq.

python3-websockets (the extra `websocket` of this package) is imported only when a stream is
opened, so the rest of the client stays standard library only; without it, opening a stream
raises MissingDependency. Its asyncio client runs on an event loop private to the stream, in
the calling thread, so a stream is used without async code (but not from inside a running
asyncio loop); the loop runs only while a call waits, which is why the client sends no pings
of its own (the daemon closes a socket idle for ws_idle_timeout_s with 1001).
"""
from __future__ import annotations

import asyncio
import json
import struct
from typing import TYPE_CHECKING, Any

from .errors import (BY_CODE, BY_STATUS, BadRequest, ConnectionFailed, Gone, LimitExceeded,
                     MissingDependency, RnndError, Unavailable, error_from_object)
from .transport import RETRY_CODES, USER_AGENT, encode

if TYPE_CHECKING:
    from .session import Session, StepResult

# the binary frames of docs/websocket.md (src/ws_codec.h): every field little-endian
MAGIC = b"RW"
VERSION = 1
KIND_F32, KIND_I32, KIND_OUT = 1, 2, 3
FLAG_LAST, FLAG_IF_STEPS = 1, 2
REQUEST = struct.Struct("<2sBBIIIq")    # magic, version, kind, seq, n_steps, flags, if_steps
REPLY = struct.Struct("<2sBBIIIQ")      # magic, version, kind, seq, rows, width, steps

# the daemon's close codes: the exception each raises, with its error code and meaning
CLOSE_CODES: dict[int, tuple[type[RnndError], str, str]] = {
    1001: (Unavailable, "unavailable",
           "idle past ws_idle_timeout_s, or the server is shutting down"),
    1002: (BadRequest, "invalid_request", "a protocol error"),
    1003: (BadRequest, "invalid_request", "a binary frame of another layout"),
    1007: (BadRequest, "invalid_request", "a text frame that is not UTF-8"),
    1008: (Gone, "gone", "the session was deleted, expired or evicted"),
    1009: (LimitExceeded, "limit_exceeded", "a message over ws_max_message_bytes"),
    1011: (Unavailable, "out_of_memory", "the daemon ran out of memory for the socket"),
}

# the statuses of a refused upgrade (docs/websocket.md, Opening) and their codes: the
# library does not hand over the body of the refusal
UPGRADE_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 410: "gone",
                 503: "unavailable"}


def _websockets() -> Any:
    try:
        from websockets import exceptions
        from websockets.legacy import client
    except ImportError as e:
        raise MissingDependency(
            "Session.stream() needs python3-websockets (pip install "
            "'rnnd-client[websocket]', or apt install python3-websockets): %s" % e) from e
    return client, exceptions


def closed_error(code: int | None, reason: str, by_us: bool) -> RnndError:
    """The exception for a socket that closed with CODE (None: no close frame came)."""
    if code in CLOSE_CODES:
        cls, ecode, meaning = CLOSE_CODES[code]
        err: RnndError = cls("the socket closed with %d (%s)%s"
                             % (code, meaning, ": " + reason if reason else ""), ecode)
    elif by_us:
        err = ConnectionFailed("the stream is closed")
    else:
        err = ConnectionFailed("the socket closed with %s%s"
                               % (code if code is not None else "no close frame",
                                  ": " + reason if reason else ""))
    err.close_code = code
    return err


class Pending:
    """A step sent over a stream; `result()` waits for its reply (the replies of the steps
    sent before it are read on the way, and kept for theirs)."""

    def __init__(self, stream: "Stream", seq: int, last: bool) -> None:
        self.stream = stream
        self.seq = seq
        self.last = last

    def __repr__(self) -> str:
        return "Pending(seq=%d, done=%s)" % (self.seq, self.done())

    def done(self) -> bool:
        """Whether the reply has been read (result() then returns without waiting)."""
        return self.seq in self.stream._outcomes

    def result(self) -> "StepResult":
        """The step's StepResult, or the exception of its error (raised)."""
        outcome = self.stream._wait(self.seq)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class Stream:
    """A WebSocket over one session (`Session.stream()`): `step()` as the HTTP step, `send()`
    to pipeline steps, binary frames with `binary=True`. Closed at the end of a `with` block
    (after reading the replies still due). One thread's, like its Session."""

    def __init__(self, session: "Session", binary: bool = False, max_in_flight: int = 16,
                 timeout: float | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight: expected at least 1, got %r" % (max_in_flight,))
        self.session = session
        self.binary = binary
        self.max_in_flight = max_in_flight
        t = session.client.transport
        self.timeout = t.timeout if timeout is None else timeout
        self.closed = False
        self._client, self._exceptions = _websockets()
        self._seq = 0
        self._waiting: dict[int, Pending] = {}      # sent, in order, reply not read yet
        self._outcomes: dict[int, Any] = {}        # read, result() not called yet
        self._next_steps = session.steps           # the count after the steps in flight
        self._loop = asyncio.new_event_loop()
        try:
            self._ws = self._open()
        except BaseException:
            self._loop.close()
            raise

    def __repr__(self) -> str:
        return "Stream(%s, in_flight=%d%s)" % (self.session.id, len(self._waiting),
                                               ", closed" if self.closed else "")

    # ---- the socket ---------------------------------------------------------------------

    def _open(self) -> Any:
        t = self.session.client.transport
        scheme = "wss" if t.scheme == "https" else "ws"
        path = t.prefix + self.session.path + "/ws"
        url = "%s://%s:%d%s" % (scheme, t.host, t.port, path)
        headers = {k: v for k, v in t.headers.items() if k not in ("User-Agent", "Accept")}
        kw: dict[str, Any] = {}
        if scheme == "wss" and t.ssl_context is not None:
            kw["ssl"] = t.ssl_context


        async def connect() -> Any:
            # made inside the loop: websockets binds a connection to the running loop
            return await self._client.connect(
                url, extra_headers=headers, user_agent_header=USER_AGENT,
                open_timeout=self.timeout, ping_interval=None, max_size=None,
                max_queue=None, compression=None, **kw)
        attempt = 0
        while True:
            try:
                return self._run(connect(), None)
            except self._exceptions.InvalidStatusCode as e:
                code = UPGRADE_CODES.get(e.status_code)
                cls = BY_CODE.get(code or "") or BY_STATUS.get(e.status_code, RnndError)
                try:
                    ra: float | None = max(0.0, float(e.headers.get("Retry-After", "")))
                except ValueError:
                    ra = None
                err: RnndError = cls("GET %s: the upgrade was refused" % path, code,
                                     e.status_code, {}, ra)
                retry = code in RETRY_CODES
            except (OSError, asyncio.TimeoutError, self._exceptions.WebSocketException) as e:
                err, ra = ConnectionFailed("GET %s: cannot open the socket: %s"
                                           % (path, e or type(e).__name__)), None
                retry = True
            if not retry or attempt >= t.retries:
                raise err
            self._loop.run_until_complete(asyncio.sleep(t.delay(attempt, ra)))
            attempt += 1

    def _run(self, coro: Any, timeout: float | None) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def _fail(self, err: RnndError) -> RnndError:
        """Mark the stream closed with ERR; every step still waiting gets it."""
        self.closed = True
        for seq in self._waiting:
            self._outcomes[seq] = err
        self._waiting.clear()
        return err

    def _closed_error(self, e: Any) -> RnndError:
        rcvd = getattr(e, "rcvd", None)
        code = rcvd.code if rcvd is not None else None
        return closed_error(code, rcvd.reason if rcvd is not None else "", self.closed)

    def _send(self, frame: str | bytes) -> None:
        if self.closed:
            raise closed_error(None, "", True)
        try:
            self._run(self._ws.send(frame), self.timeout)
        except self._exceptions.ConnectionClosed as e:
            raise self._fail(self._closed_error(e)) from e
        except asyncio.TimeoutError as e:
            raise ConnectionFailed("sending a frame took over %gs" % self.timeout) from e

    def _read_one(self) -> None:
        """Read one reply and file its outcome under its seq; keeps the session's count."""
        try:
            msg = self._run(self._ws.recv(), self.timeout)
        except self._exceptions.ConnectionClosed as e:
            raise self._fail(self._closed_error(e)) from e
        except asyncio.TimeoutError as e:
            raise ConnectionFailed("no reply within %gs" % self.timeout) from e
        if isinstance(msg, bytes):
            seq, outcome = self._binary_reply(msg)
        else:
            seq, outcome = self._text_reply(msg)
        pend = self._waiting.pop(seq, None)
        if pend is None:
            raise RnndError("a reply for seq %s, which no step in flight has" % seq)
        if pend.last and not isinstance(outcome, BaseException) and \
                isinstance(outcome.outputs, list) and len(outcome.outputs) == 1 and \
                outcome.raw.get("binary"):
            outcome.outputs = outcome.outputs[0]       # one list, as the JSON reply has it
        self._outcomes[seq] = outcome
        if isinstance(outcome, BaseException):
            steps = getattr(outcome, "body", {}).get("steps")
            if isinstance(steps, int):
                self.session.steps = steps
            # the steps still in flight were sent at a count that did not come to be
            self._next_steps = None if self._waiting else self.session.steps
        else:
            self.session.steps = outcome.steps
        if not self._waiting and self._next_steps is None:
            self._next_steps = self.session.steps

    def _binary_reply(self, msg: bytes) -> tuple[int, Any]:
        from .session import StepResult
        if len(msg) < REPLY.size:
            raise self._fail(RnndError("a binary reply of %d bytes" % len(msg)))
        magic, version, kind, seq, rows, width, steps = REPLY.unpack_from(msg)
        if (magic, version, kind) != (MAGIC, VERSION, KIND_OUT) or \
                len(msg) != REPLY.size + 4 * rows * width:
            raise self._fail(RnndError("a binary reply of another layout (%r, %d, %d, %d "
                                       "bytes)" % (magic, version, kind, len(msg))))
        flat = struct.unpack_from("<%df" % (rows * width), msg, REPLY.size)
        outputs = [list(flat[i * width:(i + 1) * width]) for i in range(rows)]
        return seq, StepResult(outputs, steps, None,
                               {"binary": True, "seq": seq, "steps": steps})

    def _text_reply(self, msg: str) -> tuple[int, Any]:
        from .session import StepResult
        try:
            obj = json.loads(msg)
        except ValueError as e:
            raise self._fail(RnndError("a reply that is not JSON: %s" % e)) from e
        seq = obj.get("seq") if isinstance(obj, dict) else None
        if not isinstance(seq, int):
            # a reply without seq answers a frame the daemon could not read: the oldest one,
            # as replies leave in the order of their requests
            seq = next(iter(self._waiting), -1)
        status = obj.get("status", 0) if isinstance(obj, dict) else 0
        if not isinstance(status, int) or status >= 400:
            return seq, error_from_object(obj, status if isinstance(status, int) else None)
        return seq, StepResult(obj.get("outputs"), obj["steps"], obj.get("top_k"), obj)

    def _wait(self, seq: int) -> Any:
        while seq not in self._outcomes:
            if seq not in self._waiting:
                raise RnndError("seq %d: its result was already taken" % seq)
            self._read_one()
        return self._outcomes.pop(seq)

    def _drain(self) -> None:
        """Read every reply still due (kept for their Pending)."""
        while self._waiting:
            self._read_one()

    # ---- steps --------------------------------------------------------------------------

    def send(self, inputs: Any = None, *, text: str | None = None,
             outputs: str | None = None, top_k: int | None = None,
             logits: bool | None = None, if_steps: int | None = None,
             binary: bool | None = None) -> Pending:
        """Send a step without waiting for its reply; `.result()` of the answer waits. The
        arguments are `step()`'s. Its if_steps (unless given) is the count the session will
        have after the steps already in flight, so pipelined steps apply in order or not at
        all. Waits for earlier replies when `max_in_flight` steps are unanswered, and after
        a text step or an error, until the count is known again."""
        if (inputs is None) == (text is None):
            raise ValueError("step: give inputs or text (exactly one)")
        if outputs not in (None, "all", "last"):
            raise ValueError("outputs: expected 'all' or 'last', got %r" % (outputs,))
        if hasattr(inputs, "tolist"):
            inputs = inputs.tolist()
        binary = self.binary if binary is None else binary
        if binary and (text is not None or top_k is not None or logits is not None):
            raise ValueError("a binary step takes inputs and outputs only (no text, top_k "
                             "or logits): send it with binary=False")
        while len(self._waiting) >= self.max_in_flight:
            self._read_one()
        if if_steps is None:
            if self._next_steps is None:
                self._drain()
            if_steps = self._next_steps if self._waiting else self.session.steps
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        frame = self._binary_frame(seq, inputs, outputs, if_steps) if binary else \
            encode({k: v for k, v in (("op", "step"), ("seq", seq), ("inputs", inputs),
                                      ("text", text), ("outputs", outputs),
                                      ("top_k", top_k), ("logits", logits),
                                      ("if_steps", if_steps)) if v is not None}).decode()
        self._send(frame)
        pend = Pending(self, seq, outputs == "last")
        self._waiting[seq] = pend
        assert if_steps is not None
        self._next_steps = None if text is not None else if_steps + len(inputs)
        return pend

    @staticmethod
    def _binary_frame(seq: int, inputs: Any, outputs: str | None, if_steps: int) -> bytes:
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise ValueError("inputs: expected a non-empty list of token ids or of vectors")
        if isinstance(inputs[0], (list, tuple)):
            width = len(inputs[0])
            if any(not isinstance(v, (list, tuple)) or len(v) != width for v in inputs):
                raise ValueError("inputs: every vector must have %d numbers" % width)
            kind, body = KIND_F32, struct.pack("<%df" % (width * len(inputs)),
                                               *(x for v in inputs for x in v))
        else:
            if any(isinstance(x, bool) or not isinstance(x, int) for x in inputs):
                raise ValueError("inputs: expected token ids (integers) or vectors")
            kind, body = KIND_I32, struct.pack("<%di" % len(inputs), *inputs)
        flags = FLAG_IF_STEPS | (FLAG_LAST if outputs == "last" else 0)
        return REQUEST.pack(MAGIC, VERSION, kind, seq, len(inputs), flags, if_steps) + body

    def step(self, inputs: Any = None, *, text: str | None = None,
             outputs: str | None = None, top_k: int | None = None,
             logits: bool | None = None, if_steps: int | None = None,
             binary: bool | None = None) -> "StepResult":
        """`Session.step()` over the socket: INPUTS (token ids or vectors) or TEXT,
        `outputs="last"`, `top_k`, `logits=False`, guarded by IF_STEPS (default: the count
        this stream expects). BINARY (default: the stream's) sends raw float32 vectors or
        int32 ids and reads raw float32 outputs; the numbers are the JSON reply's, bit for
        bit. Errors raise the exception of their code, as over HTTP."""
        return self.send(inputs, text=text, outputs=outputs, top_k=top_k, logits=logits,
                         if_steps=if_steps, binary=binary).result()

    @property
    def in_flight(self) -> int:
        """How many steps were sent whose replies have not been read."""
        return len(self._waiting)

    # ---- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Read the replies still due (so the session's count is known), then close the
        socket with 1000. The session stays open."""
        if self._loop.is_closed():
            return
        if not self.closed:
            try:
                self._drain()
            except RnndError:
                pass
        self.closed = True
        try:
            self._run(self._ws.close(), self.timeout)
        except (OSError, asyncio.TimeoutError, self._exceptions.WebSocketException):
            pass
        finally:
            self._fail(closed_error(None, "", True))
            self._loop.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed() and not loop.is_running():
            self.closed = True          # no replies to wait for: nobody holds a Pending
            try:
                self.close()
            except Exception:
                pass
