"""Connection and load limits (docs/security.md), each hit on purpose:
- max_connections_per_ip: connections over the limit from one address are closed at once,
  while the ones within it keep working; over max_connections (all addresses) they wait in
  the listen backlog until a connection closes;
- request_timeout_s: a client that stalls mid-request (slowloris) is disconnected;
- max_header_bytes: a request whose headers do not fit is refused (4xx), the daemon serves on;
- max_pending_requests: compute requests over the limit get 429 overloaded with Retry-After
  while the admitted ones finish normally;
- max_sessions_per_key: a key at its limit gets 429, another key still creates sessions, and
  closing a session makes room again.
Each check is a unittest case; a failing case fails the run.
"""
import os
import socket
import threading
import time
import unittest

from daemon_util import Case, Daemon, tmpdir

WORK = tmpdir("limits")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")


def raw(port, data, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and out.startswith(b"HTTP/1.1"):
                head, _, body = out.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        if len(body) >= int(line.split(b":")[1]):
                            return out
        return out
    finally:
        s.close()


class Limits(Case):
    """Each limit on its own daemon."""

    def test_per_ip(self):
        with Daemon({"charlm": CHARLM}, "--max-connections-per-ip", "4") as d:
            held = [socket.create_connection(("127.0.0.1", d.port), timeout=5) for _ in range(4)]
            time.sleep(0.2)
            extra = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            try:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                got = extra.recv(100)
            except OSError:
                got = b""
            extra.close()
            self.eq(got, b"", "a 5th connection from the same address is closed without an answer")
            held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.check(held[0].recv(100).startswith(b"HTTP/1.1 200"),
                       "a connection within the limit is served")
            for s in held:
                s.close()
            time.sleep(0.3)
            self.eq(d.request("GET", "/healthz")[0], 200, "after they close, new connections work")
            d.stop()

    def test_total_and_idle(self):
        """max_connections over all addresses, and request_timeout_s against slowloris."""
        # one request thread: libmicrohttpd splits max_connections evenly over its threads
        with Daemon({"charlm": CHARLM}, "--max-connections", "3", "--request-timeout-s", "2",
                    "--max-connections-per-ip", "100", "--http-threads", "1") as d:
            held = [socket.create_connection(("127.0.0.1", d.port), timeout=5) for _ in range(3)]
            time.sleep(0.2)
            extra = socket.create_connection(("127.0.0.1", d.port), timeout=0.5)
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                got = extra.recv(100)
            except socket.timeout:
                got = None
            self.eq(got, None, "a connection over max_connections is not served while the others "
                    "are open (it waits in the listen backlog)")
            # slowloris: request lines that never end; the idle timeout closes them
            t0 = time.monotonic()
            for s in held:
                s.sendall(b"GET /heal")
            closed = 0
            for s in held:
                try:
                    closed += s.recv(100) == b""
                except OSError:
                    closed += 1
            waited = time.monotonic() - t0
            self.check(closed == 3 and waited < 5, "stalled requests are closed after "
                       "request_timeout_s (%d closed after %.1f s)" % (closed, waited))
            extra.settimeout(5)
            try:
                got = extra.recv(100)
            except OSError:
                got = b""
            self.check(got.startswith(b"HTTP/1.1 200"), "then the waiting connection is served")
            extra.close()
            for s in held:
                s.close()
            self.eq(d.request("GET", "/healthz")[0], 200, "the daemon serves on after both")
            d.stop()

    def test_header_bytes(self):
        with Daemon({"charlm": CHARLM}, "--max-header-bytes", "8K") as d:
            big = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 12000 + b"\r\n\r\n"
            out = raw(d.port, big)
            status = out[9:12]
            self.check(out.startswith(b"HTTP/1.1 4") or out == b"",
                       "headers over max_header_bytes are refused (%r)" % out[:40])
            long_url = b"GET /v1/models/" + b"m" * 12000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            out = raw(d.port, long_url)
            self.check(out.startswith(b"HTTP/1.1 4") or out == b"",
                       "a URL over max_header_bytes is refused (%r)" % out[:40])
            ok = raw(d.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Small: " + b"a" * 2000 +
                     b"\r\nConnection: close\r\n\r\n")
            self.check(ok.startswith(b"HTTP/1.1 200"), "headers within the limit are served")
            print("header limit answered: %r" % status)
            d.stop()

    def test_pending(self):
        with Daemon({"charlm": CHARLM}, "--max-pending-requests", "2", "--workers", "1") as d:
            results = []

            def long_generate():
                results.append(d.request("POST", "/v1/models/charlm/generate",
                                         {"prompt": "The ", "max_tokens": 4000}))
            threads = [threading.Thread(target=long_generate) for _ in range(2)]
            for t in threads:
                t.start()
            time.sleep(0.05)
            st, h, b = d.request("POST", "/v1/models/charlm/generate",
                                 {"prompt": "x", "max_tokens": 1})
            for t in threads:
                t.join(120)
            self.check(st == 429 and b["error"]["code"] == "overloaded" and "retry-after" in h,
                       "a third compute request over max_pending_requests: 429 with Retry-After "
                       "(got %s)" % st)
            self.check(len(results) == 2 and all(r[0] == 200 for r in results),
                       "the admitted requests finish normally")
            self.eq(d.request("POST", "/v1/models/charlm/generate",
                           {"prompt": "x", "max_tokens": 1})[0], 200,
                    "once they are done, requests are admitted again")
            self.eq(d.request("GET", "/v1/models")[0], 200,
                    "non-compute requests are never held back")
            d.stop()

    def test_per_key(self):
        keys = os.path.join(WORK, "keys")
        ka, kb = "limit-key-a-0123456789", "limit-key-b-0123456789"
        with open(keys, "w") as f:
            f.write("%s a\n%s b\n" % (ka, kb))
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys,
                    "--max-sessions-per-key", "2") as d:
            ha, hb = {"Authorization": "Bearer " + ka}, {"Authorization": "Bearer " + kb}
            made = [d.request("POST", "/v1/sessions", {"model": "charlm"}, headers=ha)
                    for _ in range(3)]
            self.eq([m[0] for m in made], [201, 201, 429], "key a: 2 sessions, the 3rd gets 429")
            self.check(made[2][2]["error"]["code"] == "overloaded" and
                       "max_sessions_per_key" in made[2][2]["error"]["message"],
                       "the 429 names max_sessions_per_key")
            self.eq(d.request("POST", "/v1/sessions", {"model": "charlm"}, headers=hb)[0], 201,
                    "key b still creates sessions")
            self.eq(d.request("POST", "/v1/models/charlm/generate",
                              {"prompt": "x", "max_tokens": 1}, headers=ha)[0], 429,
                    "key a's temporary generation session counts too")
            d.request("DELETE", "/v1/sessions/%s" % made[0][2]["id"], headers=ha)
            self.eq(d.request("POST", "/v1/sessions", {"model": "charlm"}, headers=ha)[0], 201,
                    "closing a session makes room for key a again")
            d.stop()


if __name__ == "__main__":
    unittest.main()
