"""The Python client of clients/python against a live daemon (issue 18 item 4, docs/client.md).

- Install: `pip install --no-deps --no-index --target DIR clients/python` works without a
  network, and the installed copy talks to the daemon.
- Docs: every `python` block of docs/client.md runs, in order in one namespace, against a
  daemon of the bundled charlm, and prints exactly the `text` block that follows it.
- Retries: through a proxy in this file that loses replies, refuses connections or answers 503
  itself: a step whose reply was lost after the daemon ran it is resent with the same
  `if_steps`, refused, and raises ReplyLost, and the session advanced exactly once (its state
  equals a session fed the same steps once); a step lost before the daemon saw it is resent
  and answered; 503 and 429 are retried (create too); a lost create is not resent.
- Errors: each code the daemon sends maps to its class with code, message and status; the
  client's table of codes is the list of include/rnnd/errcode.h.
- Numbers: outputs are the daemon's text decoded by json, each exactly a float32.
- TLS: https:// with an ssl_context that trusts the daemon's certificate; none: refused.
- WebSocket streams (Session.stream): JSON and binary steps (vector and token models) give
  HTTP's outputs, bit for bit; pipelined steps matched by seq, read in any order, guarded by
  if_steps over the steps in flight (a refused one stops those behind it); error frames, a
  refused upgrade (no key, unknown session, max_websockets, retried) and close codes (1008,
  1001) raise the typed exceptions; the stream keeps the session's count and closes (1000) at
  the end of its with block; without python3-websockets, MissingDependency; the installed
  package declares websockets as an optional extra only.

Prints what it checked; exits 1 on any failure.
"""
import contextlib
import io
import json
import os
import random
import re
import secrets
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import unittest

from daemon_util import (PYTHON3, Case, Daemon, contract_check, contract_report, golden_model,
                         stop_ok, tmpdir, write_secret)
from openapi_util import event_violations

SRCDIR = os.environ["RNND_SRCDIR"]
CLIENT_DIR = os.path.join(SRCDIR, "clients", "python")
sys.dont_write_bytecode = True      # the source tree may be read-only (make distcheck)
sys.path.insert(0, CLIENT_DIR)
import rnnd_client  # noqa: E402
from rnnd_client import errors as client_errors  # noqa: E402
from rnnd_client import transport as client_transport  # noqa: E402

_once = client_transport.Transport._once


class _CheckedStream:
    """A streamed reply's response whose events are checked against docs/openapi.yaml as the
    client reads them, line by line."""

    def __init__(self, response, path):
        self._response, self._path = response, path
        self._name = self._data = None

    def readline(self, *args):
        line = self._response.readline(*args)
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith("event: "):
            self._name = text[7:]
        elif text.startswith("data: "):
            self._data = text[6:]
        elif not text and self._data is not None:
            contract_report(event_violations(self._path, self._name, self._data))
            self._name = self._data = None
        return line

    def __getattr__(self, name):
        return getattr(self._response, name)


def _checked_once(self, method, path, data, headers, stream):
    """The client's every request, its reply checked against docs/openapi.yaml as
    Daemon.request's are (a stream's status and headers now, its events as they are read)."""
    reply = _once(self, method, path, data, headers, stream)
    body = reply.data
    if reply.response is not None:
        body = None
        reply.response = _CheckedStream(reply.response, self.prefix + path)
    elif not isinstance(body, bytes):
        body = b"" if body is None else json.dumps(body).encode()
    contract_check(method, self.prefix + path, reply.status, reply.headers, body)
    return reply


client_transport.Transport._once = _checked_once

WORK = tmpdir("client")
CHARLM = os.path.join(SRCDIR, "models", "charlm.rnnd")
DOC_URL = "http://127.0.0.1:8080"
KEY_INFER = "client-infer-0123456789"
KEY_ADMIN = "client-admin-0123456789"


def doc_blocks(text):
    """[(info string, code, line)] of the fenced blocks of a Markdown text, and for each
    whether it follows the previous block with nothing but blank lines between."""
    out, lines, i = [], text.split("\n"), 0
    last_end = None
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i] != "```":
            body.append(lines[i])
            i += 1
        adjacent = last_end is not None and all(not l.strip() for l in lines[last_end + 1:start])
        out.append((m.group(1), "\n".join(body) + "\n", start + 1, adjacent))
        last_end = i
        i += 1
    return out


def shortest_f32(x):
    """The fewest significant digits that give back float32(X) when read as a double and
    rounded to float32 (docs/api.md section 1)."""
    f = struct.unpack("<f", struct.pack("<f", x))[0]
    for digits in range(1, 10):
        s = "%.*g" % (digits, f)
        if struct.unpack("<f", struct.pack("<f", float(s)))[0] == f:
            return s
    return repr(f)


# ---- a proxy that loses what it is told to --------------------------------------------------

def read_request(sock, buf):
    """(method, path, headers dict, body, rest of buffer) of one request from SOCK, or None at
    end of file."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return method, path, headers, buf[:n], buf[n:]


def http_reply(status, body, headers=()):
    """A reply the proxy sends in the daemon's place, with the headers the daemon's carry."""
    data = json.dumps(body).encode()
    head = ["HTTP/1.1 %d X" % status, "Content-Type: application/json",
            "Cache-Control: no-store", "Content-Length: %d" % len(data)] + [
                "%s: %s" % h for h in headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


class Proxy:
    """Forwards requests to the daemon at PORT, one upstream connection per request. RULE
    (method, path, body, n) says what to do with the n-th request (from 0) that matched it
    before: "forward"; "lose_reply" (forward, read the daemon's reply, close the client's
    connection instead of answering); "lose_request" (close without forwarding); or bytes, a
    reply to send instead of forwarding. `seen` lists (method, path, body) of every request."""

    def __init__(self, port, rule):
        self.port = port
        self.rule = rule
        self.seen = []
        self.lock = threading.Lock()
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.srv.close()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        with c:
            while True:
                req = read_request(c, buf)
                if req is None:
                    return
                method, path, headers, body, buf = req
                with self.lock:
                    parsed = json.loads(body) if body else None
                    n = sum(1 for m, p, _ in self.seen if m == method and p == path)
                    self.seen.append((method, path, parsed))
                action = self.rule(method, path, parsed, n)
                if action == "lose_request":
                    return
                if isinstance(action, bytes):
                    c.sendall(action)
                    continue
                reply = self._forward(method, path, headers, body)
                if action == "lose_reply":
                    return
                c.sendall(reply)

    def _forward(self, method, path, headers, body):
        up = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        with up:
            keep = {k: v for k, v in headers.items() if k not in ("connection", "host")}
            head = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1",
                    "Connection: close"] + ["%s: %s" % kv for kv in keep.items()]
            up.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            data = b""
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    break
                data += chunk
        # the daemon closed after its reply: keep the client's connection alive instead
        return data.replace(b"Connection: close\r\n", b"", 1) \
            .replace(b"Connection: Close\r\n", b"", 1)


def only(method, suffix, action, times=1):
    """A rule: ACTION for the first TIMES requests METHOD .../SUFFIX, else forward."""
    def rule(m, p, body, n):
        return action if m == method and p.endswith(suffix) and n < times else "forward"
    return rule


# ---- the tests ---------------------------------------------------------------------------

class Live(Case):
    """One daemon of charlm and the golden lstm_vectors (a vector model, which cannot
    generate), with room for few sessions."""

    @classmethod
    def setUpClass(cls):
        vectors = golden_model("lstm_vectors", WORK)
        cls.d = cls.serve({"charlm": CHARLM, "lstm_vectors": vectors},
                          "--max-sessions", "6")
        cls.url = "http://127.0.0.1:%d" % cls.d.port

    def client(self, url=None, **kw):
        kw.setdefault("backoff", 0.01)
        c = rnnd_client.Client(url or self.url, **kw)
        self.addCleanup(c.close)
        return c

    def steps_of(self, sid):
        st, _, body = self.d.request("GET", "/v1/sessions/" + sid)
        return body.get("steps") if st == 200 else None

    def export(self, sid):
        return self.d.request("GET", "/v1/sessions/%s/state" % sid)[2]["state"]

    def reference_state(self, inputs):
        """The state of a fresh session fed INPUTS once, over plain HTTP."""
        _, _, body = self.d.request("POST", "/v1/sessions", {"model": "charlm"})
        sid = body["id"]
        self.d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": inputs})
        state = self.export(sid)
        self.d.request("DELETE", "/v1/sessions/" + sid)
        return state

    def proxy(self, rule):
        p = Proxy(self.d.port, rule)
        self.addCleanup(p.close)
        return p

    # -- retries ---------------------------------------------------------------------------

    def test_lost_reply_step_applies_once(self):
        p = self.proxy(lambda m, path, b, n:
                       "lose_reply" if path.endswith("/step") and n == 1 else "forward")
        c = self.client(p.url)
        with c.session("charlm") as s:
            s.step([7])
            try:
                s.step([5, 12])
                self.check(False, "a step whose reply was lost raises ReplyLost")
            except rnnd_client.ReplyLost as e:
                self.eq((e.status, e.code, e.steps), (409, "conflict", 3),
                        "ReplyLost: the daemon's conflict, at the count after one run")
                self.check(isinstance(e, rnnd_client.Conflict), "ReplyLost is a Conflict")
            self.eq(self.steps_of(s.id), 3, "the session advanced exactly once (1 + 2 steps)")
            self.eq(s.steps, 3, "the session object took the daemon's count")
            sent = [b for m, path, b in p.seen if path.endswith("/step")]
            self.eq([b["if_steps"] for b in sent], [0, 1, 1],
                    "the step was sent twice, both times with if_steps 1")
            self.eq(self.export(s.id), self.reference_state([7, 5, 12]),
                    "the state is that of the steps run once")
            r = s.step([0])
            self.eq(r.steps, 4, "the session goes on after ReplyLost")

    def test_lost_request_step_resent(self):
        p = self.proxy(only("POST", "/step", "lose_request"))
        c = self.client(p.url)
        ref = self.client().model("charlm").infer([[5, 12]])["outputs"][0]
        with c.session("charlm") as s:
            r = s.step([5, 12])
            self.eq((r.steps, r.outputs), (2, ref),
                    "a step the daemon never saw is resent and answered (outputs as infer's)")
            self.eq(self.steps_of(s.id), 2, "and applied once")
            self.eq(len([1 for m, path, _ in p.seen if path.endswith("/step")]), 2,
                    "two attempts went out")

    def test_lost_reply_reset(self):
        p = self.proxy(only("POST", "/reset", "lose_reply"))
        c = self.client(p.url)
        with c.session("charlm") as s:
            s.step([1, 2, 3])
            s.reset()
            self.eq((s.steps, self.steps_of(s.id)), (0, 0),
                    "a reset whose reply was lost ran once and returns")
            _, _, fresh = self.d.request("POST", "/v1/sessions", {"model": "charlm"})
            self.eq(self.export(s.id), self.export(fresh["id"]), "the state is zeros again")
            self.d.request("DELETE", "/v1/sessions/" + fresh["id"])
            self.eq(len([1 for m, path, _ in p.seen if path.endswith("/reset")]), 2,
                    "the reset was resent")

    def test_unavailable_retried(self):
        busy = http_reply(503, {"error": {"code": "unavailable", "message": "stopping"}},
                          [("Retry-After", "0")])
        full = http_reply(429, {"error": {"code": "overloaded", "message": "full"}},
                          [("Retry-After", "0")])

        def rule(m, path, body, n):
            if n == 0 and path in ("/v1/sessions", "/v1/models/charlm/infer"):
                return busy if path == "/v1/sessions" else full
            if n < 2 and path.endswith("/step"):
                return busy
            return "forward"
        p = self.proxy(rule)
        c = self.client(p.url)
        with c.session("charlm") as s:
            self.eq(s.steps, 0, "a create answered 503 is retried")
            r = s.step([4])
            self.eq(r.steps, 1, "a step answered 503 twice is retried")
        out = c.model("charlm").infer([[4]])
        self.eq(len(out["outputs"][0]), 1, "an infer answered 429 is retried")
        t0 = time.monotonic()
        always = self.proxy(lambda m, path, b, n: busy)
        c2 = self.client(always.url, retries=2)
        try:
            c2.models()
            self.check(False, "503 on every attempt raises Unavailable")
        except rnnd_client.Unavailable as e:
            self.eq((e.status, e.code, e.retry_after), (503, "unavailable", 0.0),
                    "Unavailable carries status, code and Retry-After")
        self.eq(len(always.seen), 3, "retries=2: three attempts")
        self.check(time.monotonic() - t0 < 10, "the retries waited about their backoff")

    def test_lost_create_not_resent(self):
        p = self.proxy(only("POST", "/v1/sessions", "lose_reply"))
        c = self.client(p.url)
        before = len(list(c.sessions()))
        try:
            c.session("charlm")
            self.check(False, "a create whose reply was lost raises ConnectionFailed")
        except rnnd_client.ConnectionFailed as e:
            self.check(e.maybe_applied and isinstance(e, ConnectionError),
                       "ConnectionFailed says the create may have run: %s" % e)
        self.eq(len([1 for m, path, _ in p.seen if path == "/v1/sessions" and m == "POST"]), 1,
                "the create was not resent")
        made = [x for x in c.sessions()]
        self.eq(len(made), before + 1, "exactly one session was created")
        for x in made:
            c.attach(x["id"]).close()

    def test_connection_refused(self):
        s = socket.create_server(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        c = self.client("http://127.0.0.1:%d" % port, retries=2)
        try:
            c.models()
            self.check(False, "a refused connection raises ConnectionFailed")
        except rnnd_client.ConnectionFailed as e:
            self.check("cannot connect" in str(e) and not e.maybe_applied,
                       "ConnectionFailed names the failure: %s" % e)

    # -- errors ----------------------------------------------------------------------------

    def expect(self, fn, cls, status, code, what):
        try:
            fn()
        except rnnd_client.RnndError as e:
            self.check(type(e) is cls and e.status == status and e.code == code and e.message,
                       "%s: want %s %s %s, got %s %r" % (what, cls.__name__, status, code,
                                                          type(e).__name__, e))
            return e
        self.check(False, "%s: no exception" % what)
        return None

    def test_error_classes(self):
        c = self.client(retries=0)
        charlm = c.model("charlm")
        E = rnnd_client
        self.expect(lambda: charlm.infer([[5, 99]]), E.BadRequest, 400, "invalid_request",
                    "token id out of range")
        self.expect(lambda: c.model("nosuch").info(), E.NotFound, 404, "not_found",
                    "unknown model")
        self.expect(lambda: c.attach(secrets.token_hex(16)), E.NotFound, 404, "not_found",
                    "unknown session")
        self.expect(lambda: c.request("DELETE", "/v1/models"), E.MethodNotAllowed, 405,
                    "method_not_allowed", "DELETE /v1/models")
        self.expect(lambda: c.model("lstm_vectors").generate([1]), E.Unsupported, 409,
                    "unsupported", "generate on a vector model")
        self.expect(lambda: charlm.generate("a", max_tokens=4097), E.LimitExceeded, 413,
                    "limit_exceeded", "max_tokens over max_generate_tokens")
        with c.session("charlm") as s:
            s.step([1, 2])
            e = self.expect(lambda: s.step([3], if_steps=5), E.Conflict, 409, "conflict",
                            "if_steps mismatch")
            self.eq((e and e.steps, s.steps), (2, 2), "the conflict's count")
            exp = s.state()
        vec = c.session("lstm_vectors")
        n = len(list(c.sessions()))
        self.expect(lambda: c.import_state(exp, model="lstm_vectors"), E.Conflict, 409,
                    "conflict", "a state of another digest")
        self.eq(len(list(c.sessions())), n, "a refused import leaves no session behind")
        vec.close()
        short = c.session("charlm", ttl_s=1)
        time.sleep(1.4)
        self.expect(lambda: short.step([1]), E.Gone, 410, "gone", "an expired session")
        short.close()       # a gone session closes quietly
        held = [c.session("charlm") for _ in range(6)]
        e = self.expect(lambda: c.session("charlm"), E.Overloaded, 429, "overloaded",
                        "max_sessions reached")
        self.eq(e and e.retry_after, 1.0, "Overloaded carries Retry-After")
        for h in held:
            h.close()
        with c.session("charlm") as s:
            sid = s.id
        self.expect(lambda: c.attach(sid), E.NotFound, 404, "not_found",
                    "a session is deleted when its with block ends")

    def test_errcode_table(self):
        with open(os.path.join(SRCDIR, "include", "rnnd", "errcode.h")) as f:
            listed = re.findall(r'X\(\w+, "(\w+)", (\d+), \d+\)', f.read())
        self.check(len(listed) >= 18, "codes read from errcode.h (%d)" % len(listed))
        self.eq(sorted(client_errors.BY_CODE), sorted(code for code, _ in listed),
                "the client knows every code of errcode.h and no other")
        self.eq(client_errors.STATUS_OF, {code: int(st) for code, st in listed},
                "the client's status of each code is errcode.h's")
        for code, status in listed:
            body = json.dumps({"error": {"code": code, "message": "m"}}).encode()
            e = client_errors.error_from_reply(int(status), body, None)
            self.eq((type(e).__name__, e.code, e.status, e.message),
                    (client_errors.BY_CODE.get(code, rnnd_client.RnndError).__name__, code,
                     int(status), "m"), "the error of %s" % code)
            self.check(isinstance(e, rnnd_client.RnndError) and type(e) is not
                       rnnd_client.RnndError, "%s has a class of its own family" % code)
        e = client_errors.error_from_reply(431, b"<html>too big</html>", None)
        self.check(isinstance(e, rnnd_client.LimitExceeded) and e.code is None,
                   "a reply without an error object maps by its status")

    # -- numbers and streams ---------------------------------------------------------------

    def test_numbers_exact(self):
        c = self.client()
        req = {"inputs": [[5, 12, 0, 7]], "return_state": True}
        got = c.model("charlm").infer(**req)
        _, _, raw = self.d.request("POST", "/v1/models/charlm/infer", req)
        self.eq(got, raw, "infer's reply is the daemon's JSON, unchanged")
        flat = [x for step in got["outputs"][0] for x in step]
        self.check(len(flat) == 4 * 96 and all(float(shortest_f32(x)) == x for x in flat),
                   "every output number is a float32's shortest text, as the daemon wrote it")
        try:
            c.model("charlm").infer([[float("nan")]])
            self.check(False, "NaN is refused before sending")
        except ValueError:
            pass

        class Array:        # what numpy arrays and scalars offer
            def tolist(self):
                return [[5, 12, 0, 7]]
        self.eq(c.model("charlm").infer(Array(), return_state=True), raw,
                "inputs with tolist() are sent as their lists")
        for what, fn in (("a model name with a slash", lambda: c.model("a/b")),
                         ("a session id that is not hex", lambda: c.attach("../models"))):
            try:
                fn()
                self.check(False, "%s: ValueError" % what)
            except ValueError as e:
                self.check("expected" in str(e), "%s: %s" % (what, e))

    def test_stream_equals_plain(self):
        c = self.client()
        charlm = c.model("charlm")
        plain = charlm.generate("It was ", max_tokens=30, temperature=0.9, seed=5)
        gen = charlm.generate("It was ", max_tokens=30, temperature=0.9, seed=5, stream=True)
        toks = list(gen)
        self.eq(gen.completion, plain, "a streamed generation ends as the plain one")
        self.eq([t.index for t in toks], list(range(30)), "30 token events, in order")
        again = charlm.generate("It was ", max_tokens=30, temperature=0.9, seed=5, stream=True)
        self.eq(again.result(), plain, "result() reads a stream to its end")
        with c.session("charlm") as s:
            # long enough (about 0.3 s here) to be cut: a generation runs ~15 tokens a ms
            gen = s.generate("It was ", max_tokens=4096, temperature=0.9, seed=5, stream=True)
            first = next(iter(gen))
            self.eq(first.step, 8, "a session's token event carries its step count")
            gen.close()
            time.sleep(0.3)
            n = s.info()["steps"]
            self.check(8 <= n < 4096 + 7, "closing a stream stops the generation (%d steps)" % n)
            self.check('rnnd_generations_total{finish_reason="cancelled"} 1' in
                       self.d.metrics(), "the daemon counted the generation cancelled")
            done = s.generate("x", max_tokens=3, seed=1)
            self.eq(done.steps, n + 4, "the session goes on after a cancelled generation")
            self.eq(s.steps, n + 4, "the session object took the count")

    # -- WebSocket streams (Session.stream) ------------------------------------------------

    def over_http(self, model, chunks, **kw):
        """The StepResults of CHUNKS fed one step request each to a fresh session over HTTP
        (KW: each step's other arguments)."""
        with self.client().session(model) as s:
            return [s.step(x, **kw) for x in chunks]

    def test_stream_json(self):
        chunks = [[5, 12], [0], [7, 7, 3]]
        want = self.over_http("charlm", chunks)
        c = self.client()
        with c.session("charlm") as s:
            with s.stream() as ws:
                got = [ws.step(x) for x in chunks]
                self.eq([r.outputs for r in got], [r.outputs for r in want],
                        "JSON steps over the socket: outputs equal to HTTP's")
                self.eq([r.steps for r in got], [2, 3, 6], "each reply's step count")
                self.eq(s.steps, 6, "the session object keeps the count")
                r = ws.step(text="The", outputs="last", top_k=3, logits=False)
            with c.session("charlm") as ref:
                for x in chunks:
                    ref.step(x)
                plain = ref.step(text="The", outputs="last", top_k=3, logits=False)
            self.eq((r.outputs, r.steps, r.top_k), (None, 9, plain.top_k),
                    "text, top_k and logits=False as over HTTP")
            self.eq(s.step([1]).steps, 10,
                    "an HTTP step after the stream: its if_steps is the stream's count")

    def test_stream_binary(self):
        c = self.client()
        dim = c.model("lstm_vectors").info()["input_dim"]
        rnd = random.Random(18)
        vecs = [[rnd.randrange(-64, 64) / 32 for _ in range(dim)] for _ in range(5)]
        chunks = [vecs[:2], vecs[2:3], vecs[3:]]
        f32 = lambda rows: struct.pack("<%df" % (len(rows) * len(rows[0])),  # noqa: E731
                                       *(x for r in rows for x in r))
        for model, data in (("lstm_vectors", chunks), ("charlm", [[5, 12], [0], [7, 7, 3]])):
            want = self.over_http(model, data)
            with c.session(model) as s, s.stream(binary=True) as ws:
                got = [ws.step(x) for x in data]
                self.eq([f32(r.outputs) for r in got], [f32(r.outputs) for r in want],
                        "%s: binary steps give HTTP's floats, bit for bit" % model)
                self.eq([r.steps for r in got], [r.steps for r in want],
                        "%s: binary replies carry the step count" % model)
                self.eq(s.steps, want[-1].steps, "%s: the session keeps the count" % model)
            last = self.over_http(model, data, outputs="last")
            with c.session(model) as s, s.stream(binary=True) as ws:
                got = [ws.step(x, outputs="last") for x in data]
                self.eq([f32([r.outputs]) for r in got], [f32([r.outputs]) for r in last],
                        "%s: outputs='last' in binary: one list, HTTP's floats" % model)
        with c.session("charlm") as s, s.stream() as ws:
            for bad in (lambda: ws.step(text="x", binary=True),
                        lambda: ws.step([1], top_k=2, binary=True)):
                try:
                    bad()
                    self.check(False, "a binary step with text or top_k: ValueError")
                except ValueError as e:
                    self.check("binary" in str(e), "refused before sending: %s" % e)

    def test_stream_pipelined(self):
        chunks = [[i % 96, (7 * i) % 96] for i in range(10)]
        want = self.over_http("charlm", chunks)
        c = self.client()
        with c.session("charlm") as s, s.stream(max_in_flight=4) as ws:
            sent = [ws.send(x, binary=i % 2 == 1) for i, x in enumerate(chunks)]
            self.eq(ws.in_flight, 4, "at most max_in_flight steps unanswered")
            self.eq([p.seq for p in sent], list(range(10)), "each step has its seq")
            got = [p.result() for p in reversed(sent)][::-1]
            f32 = lambda row: struct.pack("<%df" % len(row), *row)  # noqa: E731
            self.eq([[f32(o) for o in r.outputs] for r in got],
                    [[f32(o) for o in r.outputs] for r in want],
                    "10 pipelined steps, JSON and binary, read in reverse order: each "
                    "reply is its own step's (matched by seq), outputs equal to HTTP's")
            self.eq([r.steps for r in got], list(range(2, 22, 2)),
                    "they ran in order, each once (if_steps counted over the steps in "
                    "flight)")
            self.eq((s.steps, ws.in_flight), (20, 0), "the session's count after them")
            self.eq(self.export(s.id), self.reference_state([x for ch in chunks for x in ch]),
                    "the state is that of the same steps over HTTP")

    def test_stream_errors(self):
        c = self.client(retries=0)
        E = rnnd_client
        nosuch = E.Session(c, {"id": secrets.token_hex(16), "model": "charlm"})
        self.expect(nosuch.stream, E.NotFound, 404, "not_found",
                    "the upgrade for an unknown session")
        with c.session("charlm") as s, s.stream() as ws:
            ws.step([1, 2])
            c.attach(s.id).step([3])            # another client advances the session
            e = self.expect(lambda: ws.step([4]), E.Conflict, 409, "conflict",
                            "a step over the socket at a stale count")
            self.eq((e and e.steps, s.steps), (3, 3), "the conflict's count, taken")
            self.eq(ws.step([4]).steps, 4, "the stream goes on at the daemon's count")
            self.expect(lambda: ws.step([99], binary=True), E.BadRequest, 400,
                        "invalid_request", "a binary step with an id out of range")
            first = ws.send([5], if_steps=0)
            after = [ws.send([6]), ws.send([7], binary=True)]
            self.expect(first.result, E.Conflict, 409, "conflict", "a pipelined conflict")
            for p in after:
                self.expect(p.result, E.Conflict, 409, "conflict",
                            "a step sent behind a refused one does not run")
            self.eq((self.steps_of(s.id), s.steps), (4, 4), "nothing ran after the refusal")
            self.eq(ws.step([8]).steps, 5, "the next step resynchronises")
            c.request("DELETE", s.path)
            self.expect(lambda: ws.step([9]), E.NotFound, 404, "not_found",
                        "a step on a deleted session")
            e = self.expect(lambda: ws.step([9]), E.Gone, None, "gone",
                            "then the socket is closed")
            self.eq(e and e.close_code, 1008, "with close code 1008")
            self.check(ws.closed, "the stream knows it is closed")

    def test_stream_close(self):
        c = self.client()
        with c.session("charlm") as s:
            with s.stream() as ws:
                ws.step([1])
                pend = ws.send([2, 3])
            self.check(ws.closed, "leaving the with block closes the stream")
            self.eq((pend.result().steps, s.steps), (3, 3),
                    "a step still in flight at the close got its reply")
            self.check(self.d.wait_log(lambda l: "event=ws_closed" in l and "code=1000" in l
                                       and "by=client" in l and "requests=2" in l),
                       "the daemon logs the client's close (1000)")
            self.expect(lambda: ws.step([4]), rnnd_client.ConnectionFailed, None, None,
                        "a step on a closed stream")
            self.eq(s.info()["steps"], 3, "the session outlives its stream")
            real = sys.modules.get("websockets")
            sys.modules["websockets"] = None        # python3-websockets not installed
            try:
                e = self.expect(s.stream, rnnd_client.MissingDependency, None, None,
                                "a stream without python3-websockets")
                self.check(e is not None and "python3-websockets" in str(e)
                           and isinstance(e, ImportError), "the error names the package")
            finally:
                sys.modules["websockets"] = real


class StreamLimits(Case):
    """A stream against a daemon with one WebSocket at most and a 1 s idle timeout."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.serve({"charlm": CHARLM}, "--max-websockets", "1",
                          "--ws-idle-timeout-s", "1")
        cls.url = "http://127.0.0.1:%d" % cls.d.port

    def hold(self, sid):
        """A raw upgraded socket holding the one WebSocket slot."""
        sock = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
        sock.sendall(("GET /v1/sessions/%s/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" % sid).encode())
        self.check(sock.recv(4096).startswith(b"HTTP/1.1 101"), "a raw socket upgraded")
        return sock

    def test_stream_refused_and_idle(self):
        c = rnnd_client.Client(self.url, retries=0)
        with c.session("charlm") as s:
            sock = self.hold(s.id)
            try:
                s.stream()
                self.check(False, "a second socket is refused")
            except rnnd_client.Unavailable as e:
                self.eq((e.status, e.code, e.retry_after is not None),
                        (503, "unavailable", True),
                        "max_websockets: Unavailable with Retry-After")
            patient = rnnd_client.Client(self.url, retries=5, backoff=0.05, max_backoff=0.4)
            threading.Timer(0.3, sock.close).start()
            t0 = time.monotonic()
            ws = rnnd_client.Session(patient, {"id": s.id, "model": "charlm"}).stream()
            self.check(time.monotonic() - t0 >= 0.3,
                       "the upgrade was tried again until the slot was free")
            self.eq(ws.step([1, 2]).steps, 2, "the retried stream steps")
            time.sleep(1.6)
            try:
                ws.step([3])
                self.check(False, "an idle socket is closed")
            except rnnd_client.Unavailable as err:
                self.eq((err.code, err.close_code, ws.closed), ("unavailable", 1001, True),
                        "idle past ws_idle_timeout_s: Unavailable, close code 1001")
            ws.close()
            patient.close()
        c.close()


class FakeResponse(io.BytesIO):
    """An event stream read from bytes, for what a live daemon sends rarely."""


class Events(Case):
    def test_error_event(self):
        stream = (b'data: {"token":3,"text":"a","index":0,"step":6}\n\n: ping\n\n'
                  b'event: error\ndata: {"error":{"code":"numeric_error","message":"x"},'
                  b'"steps":7}\n\ndata: [DONE]\n\n')
        seen = []
        gen = rnnd_client.Generation(FakeResponse(stream), FakeResponse(), seen.append)
        got = []
        try:
            for tok in gen:
                got.append(tok)
            self.check(False, "an error event raises")
        except rnnd_client.NumericError as e:
            self.eq((e.code, e.message, e.steps, e.status), ("numeric_error", "x", 7, 400),
                    "the error event's exception, with its steps")
        self.eq(got, [rnnd_client.Token(3, "a", 0, 6)], "the token before the error")
        self.eq(seen, [6, 7], "the session's count follows the events")
        cut = rnnd_client.Generation(FakeResponse(stream[:48]), FakeResponse())
        try:
            cut.result()
            self.check(False, "a stream without its final event raises")
        except rnnd_client.RnndError as e:
            self.check("final event" in str(e), "a cut stream: %s" % e)


class Keys(Case):
    """API keys: Unauthorized without the key or with a wrong one, Forbidden for /metrics
    with an infer key."""

    @classmethod
    def setUpClass(cls):
        keys = write_secret(os.path.join(WORK, "keys"), "%s user infer\n%s ops admin\n"
                            % (KEY_INFER, KEY_ADMIN))
        cls.d = cls.serve({"charlm": CHARLM}, "--api-keys-file", keys)
        cls.url = "http://127.0.0.1:%d" % cls.d.port

    def test_keys(self):
        for what, key in (("no key", None), ("wrong key", "x" * 24)):
            try:
                rnnd_client.Client(self.url, api_key=key, retries=0).models()
                self.check(False, "%s: Unauthorized" % what)
            except rnnd_client.Unauthorized as e:
                self.eq((e.status, e.code), (401, "unauthorized"), what)
        user = rnnd_client.Client(self.url, api_key=KEY_INFER)
        self.eq([m["name"] for m in user.models()], ["charlm"], "the infer key gets in")
        try:
            user.metrics()
            self.check(False, "/metrics with an infer key: Forbidden")
        except rnnd_client.Forbidden as e:
            self.eq((e.status, e.code), (403, "forbidden"), "/metrics with an infer key")
        admin = rnnd_client.Client(self.url, api_key=KEY_ADMIN)
        self.check("rnnd_sessions" in admin.metrics(), "/metrics with an admin key")
        self.eq(rnnd_client.Client(self.url).ready(), True, "/readyz needs no key")
        s = socket.create_server(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % s.getsockname()[1]
        s.close()
        self.eq(rnnd_client.Client(dead, retries=0).ready(), False, "no daemon: not ready")
        for c in (user, admin):
            c.close()

    def test_stream_keys(self):
        user = rnnd_client.Client(self.url, api_key=KEY_INFER)
        with user.session("charlm") as s:
            for what, key in (("no key", None), ("wrong key", "x" * 24)):
                other = rnnd_client.Session(rnnd_client.Client(self.url, api_key=key,
                                                               retries=0),
                                            {"id": s.id, "model": "charlm"})
                try:
                    other.stream()
                    self.check(False, "%s: the upgrade is refused" % what)
                except rnnd_client.Unauthorized as e:
                    self.eq((e.status, e.code), (401, "unauthorized"),
                            "%s: the upgrade answers Unauthorized" % what)
            with s.stream() as ws:
                self.eq(ws.step([5, 12]).steps, 2, "the key's stream steps")
        user.close()


class Tls(Case):
    """https:// with an ssl_context that trusts a certificate made here (openssl)."""

    def test_https(self):
        cert, key = os.path.join(WORK, "cert.pem"), os.path.join(WORK, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True, timeout=60)
        with daemon_ctx("--tls-cert", cert, "--tls-key", key) as d:
            url = "https://127.0.0.1:%d" % d.port
            with rnnd_client.Client(url, ssl_context=ssl.create_default_context(cafile=cert)
                                    ) as c:
                with c.session("charlm") as s:
                    self.eq(s.step([5, 12]).steps, 2, "a step over HTTPS")
                    with s.stream() as ws:
                        self.eq(ws.step([1], binary=True).steps, 3,
                                "a step over the session's WebSocket on TLS (wss://)")
                gen = c.model("charlm").generate("The ", max_tokens=5, seed=1, stream=True)
                self.eq(gen.result().text, "somet", "a streamed generation over HTTPS")
            try:
                rnnd_client.Client(url, retries=0).models()
                self.check(False, "an unknown certificate is refused")
            except rnnd_client.ConnectionFailed as e:
                self.check("certificate" in str(e).lower(), "the refusal says why: %s" % e)


class Docs(Case):
    """The python blocks of docs/client.md, run against their own daemon."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.serve({"charlm": CHARLM})

    def test_examples(self):
        with open(os.path.join(SRCDIR, "docs", "client.md"), encoding="utf-8") as f:
            blocks = doc_blocks(f.read())
        url = "http://127.0.0.1:%d" % self.d.port
        ns = {"__name__": "docs_client"}
        ran = 0
        for i, (info, code, line, _) in enumerate(blocks):
            if info != "python":
                continue
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    exec(compile(code.replace(DOC_URL, url), "docs/client.md:%d" % line,
                                 "exec"), ns)
            except Exception as e:      # one block's failure is one failed check
                self.check(False, "docs/client.md:%d raised %s: %s"
                           % (line, type(e).__name__, e))
                continue
            ran += 1
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            if nxt and nxt[0] == "text" and nxt[3]:
                self.eq(out.getvalue(), nxt[1], "docs/client.md:%d prints its text block"
                        % line)
            else:
                self.eq(out.getvalue(), "", "docs/client.md:%d prints nothing" % line)
        self.check(ran >= 8, "docs/client.md's examples ran (%d)" % ran)
        self.check(DOC_URL in "".join(c for i, c, _, _ in blocks if i == "python"),
                   "the examples name the address the test replaces")
        left = [x for x in rnnd_client.Client(url).sessions()]
        self.eq(left, [], "the examples close every session they open")


class Install(Case):
    def test_pip_install(self):
        target = os.path.join(WORK, "site")
        subprocess.run(["rm", "-rf", target], check=True)
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
                   HOME=WORK)
        p = subprocess.run([PYTHON3, "-m", "pip", "install", "--no-deps", "--no-index",
                            "--no-cache-dir", "--target", target, CLIENT_DIR],
                           capture_output=True, text=True, timeout=300, env=env)
        self.eq(p.returncode, 0, "pip install clients/python: %s" % p.stderr[-2000:])
        self.check(os.path.exists(os.path.join(target, "rnnd_client", "py.typed")),
                   "the package and its py.typed are installed")
        with open(os.path.join(target, "rnnd_client-0.1.0.dist-info", "METADATA")) as f:
            meta = f.read().splitlines()
        self.check("Provides-Extra: websocket" in meta and
                   'Requires-Dist: websockets>=10.4; extra == "websocket"' in meta and
                   not [l for l in meta if l.startswith("Requires-Dist") and "extra" not in l],
                   "websockets is an optional extra, nothing is required: %r" % meta)
        with daemon_ctx() as d:
            code = ("import sys; sys.path.insert(0, %r); import rnnd_client as r; "
                    "print(r.__file__); c = r.Client(%r); "
                    "print([m['name'] for m in c.models()]); "
                    "s = c.session('charlm'); print(s.step([1, 2]).steps); s.close()"
                    % (target, "http://127.0.0.1:%d" % d.port))
            q = subprocess.run([PYTHON3, "-I", "-c", code], capture_output=True, text=True,
                               timeout=60, cwd=WORK)
        lines = q.stdout.splitlines()
        self.eq(q.returncode, 0, "the installed copy runs: %s" % q.stderr[-2000:])
        self.check(len(lines) == 3 and lines[0].startswith(target),
                   "imported from the install: %r" % lines[:1])
        self.eq(lines[1:], ["['charlm']", "2"], "the installed client talks to the daemon")


@contextlib.contextmanager
def daemon_ctx(*args):
    d = Daemon({"charlm": CHARLM}, *args)
    try:
        yield d
    finally:
        stop_ok(d)


if __name__ == "__main__":
    unittest.main()
