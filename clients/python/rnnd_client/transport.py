"""HTTP/1.1 to the daemon with the standard library (http.client), and the retry rules.

One kept-alive connection per thread. A request is retried, with exponential backoff, when no
reply came (connection refused, reset, timed out) or the daemon answered that it did nothing
and the caller may come back (429 `overloaded`, 503 `unavailable` / `out_of_memory`, honouring
Retry-After). A reply that was lost after the request was written may mean the request ran:
only requests that are safe to repeat are then resent (`Policy.REPEATABLE`: reads, infer,
deletes, imports, and steps and resets guarded by `if_steps`); others (`Policy.ONCE`: creating
or forking a session, a generation on a session) are resent only when they were certainly
never delivered.
"""
from __future__ import annotations

import enum
import http.client
import json
import random
import select
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .errors import ConnectionFailed, RnndError, error_from_reply

# answers after which the daemon did nothing and asks to be tried again
RETRY_CODES = frozenset({"overloaded", "unavailable", "out_of_memory"})
USER_AGENT = "rnnd-client/0.1.0"


class Policy(enum.Enum):
    """What a request may be resent after."""
    REPEATABLE = "repeatable"   # any failure: running it twice does no harm
    ONCE = "once"               # only when it certainly never reached the daemon


@dataclass
class Reply:
    """A reply of status < 400. `data`: the JSON body decoded (None when empty); `response`:
    the open response of a streamed request, which the caller reads and closes."""
    status: int
    headers: dict[str, str]
    data: Any = None
    response: http.client.HTTPResponse | None = None
    conn: http.client.HTTPConnection | None = None


def _json_default(obj: Any) -> Any:
    # numpy arrays and scalars (without importing numpy): tolist() gives Python numbers
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError("%s is not JSON serializable" % type(obj).__name__)


def encode(body: Any) -> bytes:
    """BODY as compact JSON; NaN and Infinity are refused here (JSON has neither)."""
    return json.dumps(body, allow_nan=False, separators=(",", ":"),
                      default=_json_default).encode()


def _retry_after(headers: dict[str, str]) -> float | None:
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return None


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether the daemon closed this idle kept-alive connection (it reads as readable: EOF)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Transport:
    """Requests to one daemon. Thread-safe: each thread has its own connection."""

    def __init__(self, url: str, api_key: str | None, timeout: float, retries: int,
                 backoff: float, max_backoff: float,
                 ssl_context: ssl.SSLContext | None) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("url: expected http://HOST:PORT or https://HOST:PORT, got %r"
                             % url)
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.ssl_context = ssl_context
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key is not None:
            self.headers["Authorization"] = "Bearer " + api_key
        self._local = threading.local()
        # every thread's kept-alive connection, so that close_all() reaches them all
        self._conns: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    # ---- connections ---------------------------------------------------------------------

    def new_conn(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _pooled(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and _dropped(conn):
            conn.close()
            conn = None
        if conn is None:
            conn = self._local.conn = self.new_conn()
            with self._lock:
                self._conns.add(conn)
        return conn

    def _discard(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            self._conns.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def close_all(self) -> None:
        """Close every thread's kept-alive connection."""
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()

    def __del__(self) -> None:
        self.close_all()

    def close(self) -> None:
        """Close this thread's kept-alive connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._discard(conn)

    # ---- requests ------------------------------------------------------------------------

    def delay(self, attempt: int, retry_after: float | None) -> float:
        d = self.backoff * (2 ** attempt) * (0.5 + random.random() / 2)
        if retry_after is not None:
            d = max(d, retry_after)
        return min(d, self.max_backoff)

    def request(self, method: str, path: str, body: Any = None,
                policy: Policy = Policy.REPEATABLE, stream: bool = False) -> Reply:
        """Send METHOD PATH with BODY (JSON) under POLICY, retrying as the module says.
        Returns a Reply for status < 400; raises the RnndError of the answer otherwise (or
        ConnectionFailed). An error raised after a retry that followed a lost reply has
        `maybe_applied` set: an earlier attempt may have run."""
        data = None if body is None else encode(body)
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        maybe_applied = False
        attempt = 0
        while True:
            try:
                reply = self._once(method, path, data, headers, stream)
            except _Lost as lost:
                maybe_applied = maybe_applied or lost.sent
                may_retry = policy is Policy.REPEATABLE or not lost.sent
                if attempt >= self.retries or not may_retry:
                    err = ConnectionFailed("%s %s: %s" % (method, path, lost.reason))
                    err.maybe_applied = maybe_applied
                    raise err from lost.__cause__
                time.sleep(self.delay(attempt, None))
                attempt += 1
                continue
            if reply.status < 400:
                return reply
            ra = _retry_after(reply.headers)
            err = error_from_reply(reply.status, reply.data, ra)
            err.maybe_applied = maybe_applied
            if err.code in RETRY_CODES and attempt < self.retries:
                time.sleep(self.delay(attempt, ra))
                attempt += 1
                continue
            raise err

    def _once(self, method: str, path: str, data: bytes | None, headers: dict[str, str],
              stream: bool) -> Reply:
        # a stream owns its connection until it is read to the end
        conn = self.new_conn() if stream else self._pooled()
        try:
            if conn.sock is None:
                conn.connect()
        except (OSError, http.client.HTTPException) as e:
            self._discard(conn)
            raise _Lost(False, "cannot connect to %s:%d: %s" % (self.host, self.port, e)) from e
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
        except (OSError, http.client.HTTPException) as e:
            # not all of the request was written: the daemon cannot have run it
            self._discard(conn)
            raise _Lost(False, "sending failed: %s" % e) from e
        try:
            resp = conn.getresponse()
            rh = {k.lower(): v for k, v in resp.getheaders()}
            if stream and resp.status < 400:
                return Reply(resp.status, rh, None, resp, conn)
            payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self._discard(conn)
            raise _Lost(True, "no reply: %s" % (e or type(e).__name__)) from e
        if stream or resp.will_close:
            self._discard(conn)
        if resp.status >= 400:
            return Reply(resp.status, rh, payload)
        if not payload:
            return Reply(resp.status, rh, None)
        try:
            parsed = json.loads(payload)
        except ValueError as e:
            raise RnndError("%s %s: the reply is not JSON: %s" % (method, path, e), None,
                            resp.status) from e
        return Reply(resp.status, rh, parsed)

    def text(self, path: str) -> str:
        """GET PATH whose reply is text (/metrics)."""
        conn = self.new_conn()
        try:
            conn.request("GET", self.prefix + path, headers=self.headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionFailed("GET %s: %s" % (path, e)) from e
        finally:
            conn.close()
        if resp.status >= 400:
            raise error_from_reply(resp.status, payload,
                                   _retry_after({k.lower(): v for k, v in resp.getheaders()}))
        return payload.decode("utf-8", "replace")


class _Lost(Exception):
    """No reply. SENT: the whole request was written, so the daemon may have run it."""

    def __init__(self, sent: bool, reason: str) -> None:
        super().__init__(reason)
        self.sent = sent
        self.reason = reason


__all__ = ["Policy", "Reply", "Transport", "encode"]
