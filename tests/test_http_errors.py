"""A battery of malformed requests against `rnnd serve`: each gets its 4xx status and a JSON
error body with the documented code, nothing a client sends gives a 5xx, and the daemon keeps
serving (checked after every case, and by a valid session at the end whose outputs are
unchanged by all that came before). Run under --enable-sanitizers this also shows the daemon
handles them without memory errors or leaks (it must exit 0 on SIGTERM).

Each check is a unittest case; a failing case fails the run.
"""
import json
import socket
import time
import unittest

from daemon_util import Case, Daemon, golden_model, require, tmpdir, write_model

WORK = tmpdir("http_errors")
VEC = golden_model("lstm_vectors", WORK)        # vectors of dim 4
TOK = golden_model("gru2_tokens_head", WORK)    # tokens, vocab 30
BIDIR = golden_model("lstm_bidir_vectors", WORK)
ONE = write_model(WORK, "one", {"input": {"kind": "vectors", "dim": 1}, "layers": [
    {"type": "rnn", "hidden_size": 3, "direction": "forward"}]})      # vectors of size 1
J = {"Content-Type": "application/json"}


def raw_exchange(port, data, shut=False, timeout=5):
    """Send DATA on a fresh connection; returns what comes back until close or timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if cl and len(rest) >= int(cl[0].split(b":")[1]):
                    break
        return out
    finally:
        s.close()


def malformed_cases(sid, tid, vdig):
    """(name, method, path, raw body or None, headers, status, code) of each refused request."""
    step = "/v1/sessions/%s/step" % sid
    tstep = "/v1/sessions/%s/step" % tid
    return [
        ("bad JSON", "POST", step, b'{"inputs": [', J, 400, "invalid_json"),
        ("trailing garbage", "POST", step, b'{"inputs": [[1,2,3,4]]} x', J, 400, "invalid_json"),
        ("not UTF-8", "POST", step, b'{"inputs": "\xff\xfe"}', J, 400, "invalid_json"),
        ("NaN literal", "POST", step, b'{"inputs": [[NaN,1,2,3]]}', J, 400, "invalid_json"),
        ("Infinity literal", "POST", step, b'{"inputs": [[Infinity,1,2,3]]}', J, 400,
         "invalid_json"),
        ("number overflowing double", "POST", step, b'{"inputs": [[1e400,1,2,3]]}', J, 400,
         "invalid_json"),
        ("number overflowing float32", "POST", step, b'{"inputs": [[1e39,1,2,3]]}', J, 400,
         "invalid_request"),
        ("deep nesting", "POST", step, b'{"inputs": ' + b"[" * 40 + b"]" * 40 + b"}", J, 400,
         "invalid_json"),
        ("duplicate keys", "POST", step, b'{"inputs": [[1,2,3,4]], "inputs": [[1,2,3,4]]}', J,
         400, "invalid_json"),
        ("body is a list", "POST", step, b'[[1,2,3,4]]', J, 400, "invalid_request"),
        ("body is a string", "POST", step, b'"hello"', J, 400, "invalid_json"),
        ("empty body", "POST", step, b"", J, 400, "invalid_request"),
        ("empty inputs", "POST", step, b'{"inputs": []}', J, 400, "invalid_request"),
        ("inputs not a list", "POST", step, b'{"inputs": 3}', J, 400, "invalid_request"),
        ("missing inputs", "POST", step, b'{"outputs": "all"}', J, 400, "invalid_request"),
        ("unknown field", "POST", step, b'{"inputs": [[1,2,3,4]], "temperature": 1}', J, 400,
         "invalid_request"),
        ("wrong dimension", "POST", step, b'{"inputs": [[1,2,3]]}', J, 400, "invalid_request"),
        ("wrong element type", "POST", step, b'{"inputs": [[1,2,"3",4]]}', J, 400,
         "invalid_request"),
        ("boolean element", "POST", step, b'{"inputs": [[1,2,true,4]]}', J, 400,
         "invalid_request"),
        ("null step", "POST", step, b'{"inputs": [null]}', J, 400, "invalid_request"),
        ("bad outputs value", "POST", step, b'{"inputs": [[1,2,3,4]], "outputs": "some"}', J,
         400, "invalid_request"),
        ("negative if_steps", "POST", step, b'{"inputs": [[1,2,3,4]], "if_steps": -1}', J, 400,
         "invalid_request"),
        ("string if_steps", "POST", step, b'{"inputs": [[1,2,3,4]], "if_steps": "0"}', J, 400,
         "invalid_request"),
        ("too many steps", "POST", step,
         json.dumps({"inputs": [[0, 0, 0, 0]] * 101}).encode(), J, 413, "limit_exceeded"),
        ("token out of range", "POST", tstep, b'{"inputs": [3, 30]}', J, 400, "invalid_request"),
        ("negative token", "POST", tstep, b'{"inputs": [-1]}', J, 400, "invalid_request"),
        ("fractional token", "POST", tstep, b'{"inputs": [1.5]}', J, 400, "invalid_request"),
        ("vector for a token model", "POST", tstep, b'{"inputs": [[1,2]]}', J, 400,
         "invalid_request"),
        ("huge token id", "POST", tstep, b'{"inputs": [99999999999999999999]}', J, 400,
         "invalid_json"),
        ("session for unknown model", "POST", "/v1/sessions", b'{"model": "nope"}', J, 404,
         "not_found"),
        ("session model not a string", "POST", "/v1/sessions", b'{"model": 1}', J, 400,
         "invalid_request"),
        ("session on bidirectional model", "POST", "/v1/sessions", b'{"model": "bidir"}', J,
         409, "unsupported"),
        ("ttl_s zero", "POST", "/v1/sessions", b'{"model": "vec", "ttl_s": 0}', J, 400,
         "invalid_request"),
        ("ttl_s huge", "POST", "/v1/sessions", b'{"model": "vec", "ttl_s": 1e12}', J, 400,
         "invalid_request"),
        ("initial state wrong shape", "POST", "/v1/sessions",
         b'{"model": "vec", "digest": "%s", "state": {"layers": [{"h": [[1]], "c": [[1]]}]}}'
         % vdig, J, 400, "invalid_request"),
        ("initial state without digest", "POST", "/v1/sessions",
         b'{"model": "vec", "state": {"layers": []}}', J, 400, "invalid_request"),
        ("state with unknown key", "POST", "/v1/sessions/%s/reset" % sid,
         b'{"digest": "%s", "state": {"layers": [], "x": 1}}' % vdig, J, 400,
         "invalid_request"),
        ("import without digest", "PUT", "/v1/sessions/%s/state" % sid,
         b'{"state": {"layers": []}}', J, 400, "invalid_request"),
        ("import with wrong digest", "PUT", "/v1/sessions/%s/state" % sid,
         b'{"digest": "abc", "state": {"layers": []}}', J, 409, "conflict"),
        ("bad session id", "POST", "/v1/sessions/xyz/step", b'{"inputs": [[1,2,3,4]]}', J, 404,
         "not_found"),
        ("upper-case id", "GET", "/v1/sessions/" + sid.upper(), None, {}, 404, "not_found"),
        ("unknown session", "GET", "/v1/sessions/" + "0" * 32, None, {}, 404, "not_found"),
        ("path traversal", "GET", "/v1/sessions/../models", None, {}, 404, "not_found"),
        ("unknown path", "GET", "/v3/models", None, {}, 404, "not_found"),
        ("trailing slash", "GET", "/v1/models/", None, {}, 404, "not_found"),
        ("wrong method on step", "GET", step, None, {}, 405, "method_not_allowed"),
        ("wrong method on models", "POST", "/v1/models", b"{}", J, 405, "method_not_allowed"),
        ("PUT on a session", "PUT", "/v1/sessions/" + sid, b"{}", J, 405, "method_not_allowed"),
        ("PATCH", "PATCH", "/v1/sessions", b"{}", J, 405, "method_not_allowed"),
        ("form content type", "POST", step, b'inputs=1',
         {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        ("no content type", "POST", step, b'{"inputs": [[1,2,3,4]]}', {"Content-Type": None}, 415,
         "unsupported_media_type"),
        ("oversize body", "POST", step, b'{"inputs": [' + b"0," * 40000 + b"0]}", J, 413,
         "limit_exceeded"),
        ("infer: too many sequences", "POST", "/v1/models/vec/infer",
         json.dumps({"inputs": [[[0, 0, 0, 0]]] * 9}).encode(), J, 413, "limit_exceeded"),
        ("infer: empty sequence", "POST", "/v1/models/vec/infer", b'{"inputs": [[]]}', J, 400,
         "invalid_request"),
        ("infer: unknown field", "POST", "/v1/models/vec/infer",
         b'{"inputs": [[[1,2,3,4]]], "beam": 3}', J, 400, "invalid_request"),
        ("list: limit 0", "GET", "/v1/sessions?limit=0", None, {}, 400, "invalid_request"),
        ("list: bad after", "GET", "/v1/sessions?after=zz", None, {}, 400, "invalid_request"),
    ]


class Refusals(Case):
    """One daemon with tight limits, a vector and a token session, and a reference answer the
    refused requests must not disturb (checked after the last test)."""

    @classmethod
    def setUpClass(cls):
        cls.d = d = Daemon({"vec": VEC, "tok": TOK, "bidir": BIDIR, "one": ONE},
                           "--max-body-bytes", "64K",
                           "--max-json-depth", 16, "--max-steps-per-request", 100,
                           "--max-sequences", 8, "--max-infer-steps", 200)
        cls.addClassCleanup(cls.stop_quickly)
        cls.sid = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
        cls.tid = d.request("POST", "/v1/sessions", {"model": "tok"})[2]["id"]
        cls.step = "/v1/sessions/%s/step" % cls.sid
        cls.tstep = "/v1/sessions/%s/step" % cls.tid
        # a reference the refused requests must not disturb
        cls.probe = [[0.5, -0.25, 1.0, 2.0], [1, 2, 3, 4]]
        cls.ref = d.request("POST", "/v1/models/vec/infer", {"inputs": [cls.probe]})[2]
        cls.vdig = d.request("GET", "/v1/models/vec")[2]["digest"].encode()  # states need it
        cls.addClassCleanup(cls.sessions_untouched)

    @classmethod
    def sessions_untouched(cls):
        """The sessions still work, and no refused request touched their state."""
        d = cls.d
        st, _, a = d.request("POST", cls.step, {"inputs": cls.probe})
        require((st, a and a.get("steps")) == (200, 2),
                "valid step after the refusals: got %r" % ((st, a),))
        require(a["outputs"] == cls.ref["outputs"][0],
                "state untouched by refused requests (bitwise)")
        require(d.request("POST", cls.tstep, {"inputs": [1, 2, 3]})[0] == 200,
                "token session still works")

    @classmethod
    def stop_quickly(cls):
        rc, took = cls.d.stop()
        require(rc == 0, "clean exit (no leak reports under ASan): got %r" % rc)
        require(took < 5, "no request left hanging: stopped in %.1f s" % took)

    def test_malformed(self):
        d = self.d
        cases = malformed_cases(self.sid, self.tid, self.vdig)
        for name, method, path, raw, headers, status, code in cases:
            try:
                resp = d.request(method, path, raw=raw, headers=headers)
            except Exception as e:
                self.check(False, "%s: %r" % (name, e))
                continue
            ok = self.error(resp, status, code, name)
            if ok:
                print("ok   %-34s %d %s" % (name, status, code))
            self.check(d.alive() and d.request("GET", "/healthz")[0] == 200,
                       "%s: daemon still serving" % name)

        print("%d malformed requests sent" % (len(cases) + 4))
        self.check(len(cases) >= 30, "at least 30 malformed cases")

    def test_options(self):
        d = self.d
        # OPTIONS lists a route's methods (and answers CORS preflights: tests/test_tls.py)
        st, hdrs, _ = d.request("OPTIONS", "/v1/sessions")
        self.check(st == 204 and hdrs.get("allow") == "GET, HEAD, POST",
                   "OPTIONS: 204 with Allow (got %s %r)" % (st, hdrs.get("allow")))
        st, _, _ = d.request("OPTIONS", "/v1/nowhere")
        self.eq(st, 404, "OPTIONS on an unknown path: 404")


    def test_list_body(self):
        d = self.d
        # a body that is JSON but not an object: the message of docs/api.md's validation table
        st, _, j = d.request("POST", "/v1/models/vec/infer", raw=b"[1]", headers=J)
        self.check(st == 400 and j.get("error", {}).get("message") ==
                   "the request body must be a JSON object, got a list",
                   "a list body: 400 with the documented message (got %s %r)" % (st, j))


    def test_messages(self):
        d, step = self.d, self.step
        # messages that say what was wrong in the client's terms (issue 13 follow-up)
        def message(method, path, raw, hdrs):
            st, _, j = d.request(method, path, raw=raw, headers=hdrs)
            return st, j.get("error", {}).get("message") if isinstance(j, dict) else j
        self.eq(message("POST", "/v1/sessions", b'{"model":"char\\u0000lm"}', J),
                (400, "line 1, column 23: a string holds \\u0000 (NUL), which is not allowed"),
                "a \\u0000 in a string: the message names no jansson flag")
        self.eq(message("POST", "/v1/models/vec/infer",
                     json.dumps({"inputs": [[[0, 0, 0, 0]]] * 9}).encode(), J),
                (413, "inputs: 9 sequences, more than max_sequences (8)"),
                "too many sequences: the message names the setting")
        self.eq(message("POST", step, b"inputs=1", {"Content-Type": "text/plain; charset=x"}),
                (415, 'the request body must be Content-Type: application/json, not '
                   '"text/plain; charset=x"'), "415 says what Content-Type came")
        self.eq(message("POST", step, b"{}", {"Content-Type": None}),
                (415, "the request body must be Content-Type: application/json; the request has "
                   "no Content-Type"), "415 says no Content-Type came")


    def test_raw_sockets(self):
        d, step = self.d, self.step
        # HTTP-level garbage and truncation, on raw sockets
        out = raw_exchange(d.port, b"GARBAGE\r\n\r\n")
        self.check(out.startswith(b"HTTP/1.1 400") or out == b"",
                   "garbage request line: %r" % out[:30])
        # a client that leaves in the middle of its body (a half-close together with the data
        # can go unnoticed by libmicrohttpd's edge-triggered epoll until request_timeout_s, so
        # this client closes a moment later, as a real one does)
        out = raw_exchange(d.port, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                           b"\r\nContent-Length: 100\r\n\r\n{\"inputs\": [[1," % step.encode(),
                           timeout=0.3)
        self.check(not out.startswith(b"HTTP/1.1 2"),
                   "truncated body is not answered with success")
        out = raw_exchange(d.port, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                           b"\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n" % step.encode(),
                           shut=True, timeout=2)
        self.check(not out.startswith(b"HTTP/1.1 2"),
                   "bad chunk header is not answered with success")
        out = raw_exchange(d.port, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                           b"\r\nTransfer-Encoding: chunked\r\n\r\n" % step.encode()
                           + b"8000\r\n" + b"0" * 0x8000 + b"\r\n" + b"8000\r\n" + b"0" * 0x8000
                           + b"\r\n" + b"10\r\n" + b"0" * 16 + b"\r\n0\r\n\r\n", timeout=5)
        self.check(out.startswith(b"HTTP/1.1 413") and b'"limit_exceeded"' in out,
                   "chunked body over the limit: 413 (%r)" % out[:30])
        # an absolute-form target (RFC 9112 3.2.2: a server must accept it) is routed on its
        # path; it got 404 before
        for target, want in ((b"http://127.0.0.1:%d/v1/models" % d.port, b"HTTP/1.1 200"),
                             (b"HTTPS://rnnd.example/v1/models", b"HTTP/1.1 200"),
                             (b"http://rnnd.example/v1/nowhere", b"HTTP/1.1 404")):
            out = raw_exchange(d.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               b"\r\n" % target)
            self.check(out.startswith(want), "GET %s: %r, want %r" % (target, out[:20], want))
        self.check(d.alive() and d.request("GET", "/healthz")[0] == 200,
                   "daemon serves after raw-socket abuse")
        st, _, _ = d.request("GET", "/metrics")
        text = d.request("GET", "/metrics")[2]
        fivexx = [l for l in text.splitlines()
                  if l.startswith('rnnd_http_responses_total{code="5')]
        self.check(not fivexx, "no 5xx was ever sent: %s" % fivexx)


    def test_input_size_one(self):
        """A flat list [x1, x2, ...] sent to a model of input size 1 (issue 14, user trial
        6): the message says how steps are written, for infer and a session step alike; the
        steps written [[x1], [x2], ...] are served."""
        d = self.d
        sid = d.request("POST", "/v1/sessions", {"model": "one"})[2]["id"]
        why = ("expected a list of 1 number, got a number: a model with input size 1 takes "
               "each step as [x], a sequence as [[x1], [x2], ...]")
        for name, path, body, at in (
                ("infer", "/v1/models/one/infer", {"inputs": [[0.5, 1.5]]}, "inputs[0][0]"),
                ("step", "/v1/sessions/%s/step" % sid, {"inputs": [0.5, 1.5]}, "inputs[0]")):
            st, _, got = d.request("POST", path, body)
            msg = got.get("error", {}).get("message") if isinstance(got, dict) else got
            self.eq((st, msg), (400, "%s: %s" % (at, why)), "%s of a flat list: message" % name)
        st, _, got = d.request("POST", "/v1/models/one/infer", {"inputs": [[[0.5], [1.5]]]})
        self.eq((st, len(got.get("outputs", [[]])[0])), (200, 2), "infer of [[x1], [x2]]")
        st, _, got = d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": [[0.5], [1.5]]})
        self.eq((st, got.get("steps")), (200, 2), "step of [[x1], [x2]]")
        d.request("DELETE", "/v1/sessions/%s" % sid)

    def test_token_id_wording(self):
        d, tstep = self.d, self.tstep
        # one wording for a bad token id wherever ids come in (issue 12): infer, step, a
        # generate prompt, v2 infer
        where = [("infer", "/v1/models/tok/infer", lambda ids: {"inputs": [ids]},
                  lambda i: "inputs[0][%d]" % i),
                 ("step", tstep, lambda ids: {"inputs": ids}, lambda i: "inputs[%d]" % i),
                 ("generate prompt", "/v1/models/tok/generate", lambda ids: {"prompt": ids},
                  lambda i: "prompt[%d]" % i)]
        for bad, why in ((30, "token id 30 out of range [0, 30)"),
                         (-1, "token id -1 out of range [0, 30)"),
                         (1.5, "expected an integer token id in [0, 30), got 1.5"),
                         (2.0, "expected an integer token id in [0, 30), got 2.0: write token "
                               "ids as plain integers (2), without a fraction or exponent"),
                         ("a", "expected an integer token id in [0, 30), got a string")):
            for name, path, body, at in where:
                st, _, got = d.request("POST", path, body([3, bad]))
                msg = got.get("error", {}).get("message") if isinstance(got, dict) else got
                self.eq((st, msg), (400, "%s: %s" % (at(1), why)),
                        "%s, token %r: message" % (name, bad))
            v2 = {"inputs": [{"name": "INPUT", "shape": [1, 2], "datatype": "INT32",
                              "data": [3, bad]}]}
            st, _, got = d.request("POST", "/v2/models/tok/infer", v2)
            self.eq((st, got), (400, {"error": "input 'INPUT' element 1 (sequence 0, step 1): "
                                            + why}), "v2 infer, token %r: message" % (bad,))


if __name__ == "__main__":
    unittest.main()
