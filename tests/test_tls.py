"""TLS (tls_cert / tls_key / tls_priorities) and CORS (cors_origins); docs/security.md.

- A certificate made here with openssl; the daemon serves HTTPS: models, a session step and a
  streamed generation over TLS, verified against that certificate; plain HTTP on the port
  fails; TLS 1.1 is refused by the default priorities; API keys work over TLS; bodies over
  max_body_bytes (declared, or chunked) get their 413 over TLS too, even from a client that
  writes the whole body before reading (the lingering close, docs/security.md); about 250
  request heads around the connection pool each end within 2 s, answered once or closed.
- Missing or bad certificate/key files, or one without the other, stop the start with a
  message.
- CORS: no headers without cors_origins; with it, an allowed origin gets Allow-Origin on
  replies and a preflight (OPTIONS, no credentials, even with API keys on) gets the methods
  and headers; another origin gets none.
Each check is a unittest case; a failing case fails the run.
"""
import http.client
import json
import os
import socket
import ssl
import subprocess
import time
import unittest

from concurrent.futures import ThreadPoolExecutor

from daemon_util import (ASAN, Case, Daemon, RNND_BIN, contract_check, head_bytes, head_shapes,
                         read_http_response, tmpdir)

WORK = tmpdir("tls")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
CERT = os.path.join(WORK, "cert.pem")
KEY = os.path.join(WORK, "key.pem")
API_KEY = "tls-test-key-0123456789"


def make_cert():
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", KEY, "-out", CERT,
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)


def https(port, method, path, body=None, headers=None, ctx=None):
    ctx = ctx or ssl.create_default_context(cafile=CERT)
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    try:
        c.request(method, path, body=data, headers=hdrs)
        r = c.getresponse()
        payload = r.read()
        rh = {k.lower(): v for k, v in r.getheaders()}
        contract_check(method, path, r.status, rh, payload)
        return r.status, rh, payload
    finally:
        c.close()


def https_raw(port, data, headers, chunked):
    """(status, headers, body) of POST infer with DATA, written whole before reading (as
    http.client does), sent with Content-Length or in 64 KiB chunks; status is the exception
    when the exchange fails."""
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                    context=ssl.create_default_context(cafile=CERT))
    hdrs = dict(headers, **{"Content-Type": "application/json"})
    body = data
    if chunked:
        body = (data[i:i + 65536] for i in range(0, len(data), 65536))
        hdrs["Transfer-Encoding"] = "chunked"
    try:
        c.request("POST", "/v1/models/charlm/infer", body=body, headers=hdrs,
                  encode_chunked=chunked)
        r = c.getresponse()
        got = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        contract_check("POST", "/v1/models/charlm/infer", *got)
        return got
    except OSError as e:
        return repr(e), {}, b""
    finally:
        c.close()


def probe_tls(port, ctx, shape):
    """SHAPE's request over a new TLS connection: (status, complete, extra bytes, seconds)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    except (ssl.SSLError, OSError):
        raw.close()
        return None, False, b"", 0.0
    try:
        t0 = time.monotonic()
        try:
            s.sendall(head_bytes(*shape))
        except OSError:
            pass
        st, complete, data = read_http_response(s, 2.0)
        took = time.monotonic() - t0
        extra = b""
        if complete:
            _, _, extra = read_http_response(s, 0.3)
        return st, complete, extra, took
    finally:
        s.close()


def uri_refused(nargs, alen, nh, hlen):
    """Whether the daemon refuses SHAPE's URI (src/frontdoor.h, max_header_bytes 32K): over
    TLS that refusal closes the connection without an answer."""
    uri = head_bytes(nargs, alen, 0, 0).split(b" ")[1]
    return nargs > 32768 // 256 or len(uri) + 64 * nargs > 32768 - 1024


class Tls(Case):
    """A self-signed certificate made once for the class."""

    @classmethod
    def setUpClass(cls):
        make_cert()

    def test_tls(self):
        keys = os.path.join(WORK, "keys")
        with open(keys, "w") as f:
            f.write(API_KEY + " tester\n")
        auth = {"Authorization": "Bearer " + API_KEY}
        with Daemon({"charlm": CHARLM}, "--tls-cert", CERT, "--tls-key", KEY,
                    "--api-keys-file", keys, "--max-body-bytes", "1M") as d:
            self.check(any("event=listening" in l and "tls=1" in l for l in d.log), "logs tls=1")
            st, _, b = https(d.port, "GET", "/v1/models", headers=auth)
            self.check(st == 200 and json.loads(b)["models"][0]["name"] == "charlm",
                       "GET /v1/models over HTTPS, verified against the test certificate")
            self.eq(https(d.port, "GET", "/v1/models")[0], 401, "API keys are checked over TLS")
            st, _, b = https(d.port, "POST", "/v1/sessions", {"model": "charlm"}, headers=auth)
            sid = json.loads(b)["id"]
            st, _, b = https(d.port, "POST", "/v1/sessions/%s/step" % sid,
                             {"text": "Hi", "outputs": "last"}, headers=auth)
            self.check(st == 200 and json.loads(b)["steps"] == 2, "a session step over HTTPS")
            st, h, b = https(d.port, "POST", "/v1/sessions/%s/generate" % sid,
                             {"prompt": "!", "max_tokens": 20, "stream": True, "seed": 1},
                             headers=auth)
            events = [l[6:] for l in b.decode().split("\n") if l.startswith("data: ")]
            self.check(st == 200 and h.get("content-type", "").startswith("text/event-stream") and
                       len(events) == 22 and events[-1] == "[DONE]",
                       "a streamed generation over HTTPS: 20 tokens, final event, [DONE]")
            for chunked in (False, True):
                what = "a %s body over max_body_bytes over HTTPS" % (
                    "chunked" if chunked else "4 MB")
                st, h, b = https_raw(d.port, b"x" * (4 << 20), auth, chunked)
                self.check(st == 413 and b'"code":"limit_exceeded"' in b and
                           h.get("connection") == "close",
                           "%s: 413 limit_exceeded, Connection: close (got %s %r)" % (what, st,
                                                                                      b[:80]))
            self.eq(https(d.port, "GET", "/healthz")[0], 200, "served after the refused bodies")
            # plain HTTP to the TLS port gets no HTTP answer
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                reply = s.recv(100)
            except OSError:
                reply = b""
            s.close()
            self.check(not reply.startswith(b"HTTP/1.1 200"),
                       "plain HTTP is not served on the TLS port")
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.load_verify_locations(CERT)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
            try:
                st = https(d.port, "GET", "/healthz", ctx=old)[0]
            except (ssl.SSLError, OSError):
                st = None
            self.eq(st, None, "TLS 1.1 is refused by the default priorities")
            strict = ssl.create_default_context()     # the system CAs: our cert is untrusted
            try:
                st = https(d.port, "GET", "/healthz", ctx=strict)[0]
            except ssl.SSLError:
                st = None
            self.eq(st, None, "a client that does not trust the certificate refuses it")
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")

        junk = os.path.join(WORK, "junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        for what, args, status, want in (
                ("cert without key", ["--tls-cert", CERT], 2, "tls_cert and tls_key go together"),
                ("missing key file", ["--tls-cert", CERT, "--tls-key", WORK + "/nope.pem"], 1,
                 "nope.pem"),
                ("junk certificate", ["--tls-cert", junk, "--tls-key", KEY], 1,
                 "cannot start HTTPS")):
            p = subprocess.run([RNND_BIN, "serve", "--model", "charlm=" + CHARLM, "--listen",
                                "127.0.0.1:0"] + args, capture_output=True, timeout=60)
            err = p.stderr.decode(errors="replace")
            self.check(p.returncode == status and want in err,
                       "%s: exit %d with %r: got %d %s" % (what, status, want, p.returncode,
                                                           err.strip()[-200:]))

    def test_tls_long_requests(self):
        """Re-test of issue 13.9 over TLS: every request head of tests/test_frontdoor.py's
        test_long_requests ends within 2 s: a whole answer (200 or 431), given once, or, for a
        URI too long for the pool, the close (no 414 can be written beside MHD's TLS session),
        or libmicrohttpd's own 414 when the request line overflows its read buffer."""
        ctx = ssl.create_default_context(cafile=CERT)
        with Daemon({"charlm": CHARLM}, "--tls-cert", CERT, "--tls-key", KEY) as d:
            shapes = head_shapes()
            with ThreadPoolExecutor(8) as ex:
                got = list(ex.map(lambda sh: probe_tls(d.port, ctx, sh), shapes))
            bad = []
            for sh, (st, complete, extra, took) in zip(shapes, got):
                if uri_refused(*sh):     # MHD answers 414 itself when the line overflows
                    ok = took < 2 and ((st is None and not complete) or
                                       (st == 414 and complete and not extra))
                else:
                    ok = complete and st in (200, 431) and not extra and took < 2
                if not ok:
                    bad.append((sh, st, complete, extra[:30], round(took, 2)))
            self.check(not bad, "%d request heads over TLS each end within 2 s, answered once or "
                       "(a URI too long) closed: %d do not, e.g. %s" % (len(shapes), len(bad),
                                                                        bad[:4]))
            self.check({None, 200, 431} <= {st for st, _, _, _ in got},
                       "the shapes span served, 431 and closed")
            self.eq(https(d.port, "GET", "/healthz")[0], 200, "served over TLS after them")
            d.stop()


class WssLatency(Case):
    """Issue 18 (trial 26): over wss:// a step round trip took ~44 ms (ws:// 0.1-0.4 ms) and a
    ~100 KB reply over a second, forwarded in 4-byte TLS records. 20 round trips: median under
    10 ms; a reply of ~100 KB arrives within 1 s."""

    @classmethod
    def setUpClass(cls):
        make_cert()

    def test_wss_round_trips(self):
        import asyncio
        import websockets
        ctx = ssl.create_default_context(cafile=CERT)
        with Daemon({"charlm": CHARLM}, "--tls-cert", CERT, "--tls-key", KEY) as d:
            st, _, b = https(d.port, "POST", "/v1/sessions", {"model": "charlm"})
            sid = json.loads(b)["id"]
            url = "wss://127.0.0.1:%d/v1/sessions/%s/ws" % (d.port, sid)

            async def go():
                async with websockets.connect(url, ssl=ctx, max_size=None,
                                              ping_interval=None) as ws:
                    lat = []
                    for q in range(20):
                        t = time.perf_counter()
                        await ws.send(json.dumps({"op": "step", "seq": q, "text": "a",
                                                  "outputs": "last"}))
                        r = json.loads(await ws.recv())
                        lat.append(time.perf_counter() - t)
                        if r["status"] != 200:
                            return r, lat, 0, 0.0
                    t = time.perf_counter()
                    await ws.send(json.dumps({"op": "step", "seq": 99, "text": "b" * 100,
                                              "outputs": "all"}))
                    big = await ws.recv()
                    return r, lat, len(big), time.perf_counter() - t
            r, lat, n, dt = asyncio.run(asyncio.wait_for(go(), 60))
            self.eq(r["status"], 200, "steps over wss")
            med = sorted(lat)[len(lat) // 2]
            # Under ASan the sanitizer's interceptors make libmicrohttpd's forwarding of
            # 4-byte records ~10x slower (48-51 ms a round trip with TCP_NODELAY set, strace
            # shows): there the bounds only catch a hang; the plain build (CI step 1) holds
            # the Nagle regression to 10 ms.
            rt, big_s = (0.200, 10.0) if ASAN else (0.010, 1.0)
            self.check(med < rt, "20 wss step round trips: median %.2f ms (< %d ms; was ~44 ms)"
                       % (med * 1e3, rt * 1e3))
            self.check(n > 90000 and dt < big_s,
                       "a %d-byte wss reply took %.3f s (> 90 KB within %d s; was over 1 s)"
                       % (n, dt, big_s))
            d.stop()


class Cors(Case):
    def test_cors(self):
        with Daemon({"charlm": CHARLM}) as d:
            st, h, _ = d.request("GET", "/v1/models", headers={"Origin": "https://a.example"})
            self.check(st == 200 and "access-control-allow-origin" not in h,
                       "no cors_origins: no CORS headers")
            d.stop()
        keys = os.path.join(WORK, "keys2")
        with open(keys, "w") as f:
            f.write(API_KEY + "\n")
        with Daemon({"charlm": CHARLM}, "--cors-origins", "https://a.example, https://b.example",
                    "--api-keys-file", keys) as d:
            pre = {"Origin": "https://b.example", "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "authorization, content-type"}
            st, h, _ = d.request("OPTIONS", "/v1/sessions", headers=pre)
            self.check(st == 204
                       and h.get("access-control-allow-origin") == "https://b.example" and
                       "POST" in h.get("access-control-allow-methods", "") and
                       "Authorization" in h.get("access-control-allow-headers", ""),
                       "a preflight from an allowed origin, without credentials: 204 with methods "
                       "and headers (got %s %r)" % (st, h))
            st, h, _ = d.request("OPTIONS", "/v1/sessions",
                                 headers=dict(pre, Origin="https://x.ex"))
            self.check("access-control-allow-origin" not in h,
                       "a preflight from another origin gets no CORS headers")
            st, h, _ = d.request("GET", "/v1/models",
                                 headers={"Origin": "https://a.example",
                                          "Authorization": "Bearer " + API_KEY})
            self.check(st == 200
                       and h.get("access-control-allow-origin") == "https://a.example" and
                       h.get("vary") == "Origin",
                       "an allowed origin's request: Allow-Origin, Vary")
            st, h, _ = d.request("GET", "/v1/models", headers={"Origin": "https://a.example"})
            self.check(st == 401 and h.get("access-control-allow-origin") == "https://a.example",
                       "a refused request from an allowed origin is readable by the page (401)")
            st, h, _ = d.request("GET", "/v1/models",
                                 headers={"Origin": "https://evil.example",
                                          "Authorization": "Bearer " + API_KEY})
            self.check("access-control-allow-origin" not in h, "another origin: no CORS headers")
            # a WebSocket upgrade checks Origin itself (browsers apply no CORS to sockets)
            sid = d.request("POST", "/v1/sessions", {"model": "charlm"},
                            headers={"Authorization": "Bearer " + API_KEY})[2]["id"]

            def upgrade(origin):
                with socket.create_connection(("127.0.0.1", d.port), timeout=10) as c:
                    c.sendall(("GET /v1/sessions/%s/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\nOrigin: %s\r\n"
                               "Authorization: Bearer %s\r\n\r\n"
                               % (sid, origin, API_KEY)).encode())
                    return int(c.recv(4096).split()[1])
            self.eq(upgrade("https://a.example"), 101, "a socket for an allowed origin")
            self.eq(upgrade("https://evil.example"), 403, "no socket for another origin")
            d.stop()


if __name__ == "__main__":
    unittest.main()
