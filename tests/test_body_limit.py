"""Bodies over max_body_bytes reach every client as 413 (docs/security.md, "Lingering close"):
- http.client and requests, which write the whole body before reading, send 24 MB to the
  default 16 MB limit (Content-Length) and read the 413 with its JSON error, Connection: close;
- a chunked body that grows past the limit gets the same 413, and the connection closes after
  it (no keep-alive);
- the rest of a refused body is read and dropped within bounds: a client that keeps sending
  past 64 MiB is disconnected (Content-Length and chunked), one that stops sending is closed
  after 5 s, and the daemon's memory does not grow with the bytes it drops;
- the daemon serves normally afterwards.
Each check is a unittest case; a failing case fails the run.
"""
import http.client
import os
import socket
import threading
import time
import unittest

import requests

from daemon_util import Case, contract_check, status_kib

CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
INFER = "/v1/models/charlm/infer"
MIB = 1 << 20
LINGER_BYTES = 64 * MIB     # what the daemon drops at most (max_body_bytes is smaller here)
LINGER_IDLE_S = 5


def request_head(chunked, length=0):
    """The request line and headers of an infer request with a chunked or LENGTH-byte body."""
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            % INFER.encode() + (b"Transfer-Encoding: chunked\r\n\r\n" if chunked
                                else b"Content-Length: %d\r\n\r\n" % length))


def flood(port, head, piece, cap):
    """Send HEAD, then PIECE over and over, up to CAP bytes, without reading. Returns (bytes
    sent, whether the daemon cut the connection, seconds)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    t0 = time.monotonic()
    sent = 0
    cut = False
    try:
        s.sendall(head)
        while sent < cap:
            s.sendall(piece)
            sent += len(piece)
    except OSError:
        cut = True
    finally:
        s.close()
    return sent, cut, time.monotonic() - t0


def still_open(s):
    """Send a little on S, whose read side has seen the daemon's reply and end of stream: the
    daemon still reading it drops the bytes; a closed socket answers them with a reset."""
    try:
        s.sendall(b"0" * 1000)
        time.sleep(0.3)
        s.sendall(b"0" * 1000)
        time.sleep(0.3)
        return s.recv(1) == b""
    except OSError:
        return False


def idle_over(port, out, chunked):
    """A body over the limit, declared by Content-Length or in a chunk past it (issue 13.5):
    the 413 comes at once with the end of the stream, and the daemon goes on reading (and
    dropping) until the client is silent for the idle bound."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        if chunked:
            s.sendall(request_head(True) + b"%x\r\n" % (2 * MIB) + b"0" * (2 * MIB))
        else:
            s.sendall(request_head(False, 64 * MIB) + b"0" * 1000)
        reply = b""
        while True:
            k = s.recv(65536)
            if not k:
                break
            reply += k
        out.append(reply.startswith(b"HTTP/1.1 413"))
        time.sleep(2)
        out.append(still_open(s))       # 2 s of silence: still lingering
        time.sleep(LINGER_IDLE_S + 2)
        out.append(still_open(s))       # the idle bound passed: closed
    except OSError:
        out.append(None)
    finally:
        s.close()


class DefaultLimit(Case):
    """The default max_body_bytes (16 MB)."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.serve({"charlm": CHARLM})

    def is_413(self, status, headers, body, what):
        if isinstance(status, int) and status:      # a reply came: it keeps the contract
            contract_check("POST", INFER, status, headers, body)
        ok = (status == 413 and body.startswith(b"{") and b'"code":"limit_exceeded"' in body
              and b'"message":"' in body)
        self.check(ok, "%s: want 413 limit_exceeded, got %s %r" % (what, status, body[:100]))
        self.eq(headers.get("connection", "").lower(), "close", "%s: Connection header" % what)

    def test_write_then_read(self):
        """The acceptance case: write 24 MB, then read."""
        d = self.d
        body = b"x" * (24 * 1000 * 1000)
        for attempt in range(3):    # three times: a lucky race must not pass for a fix
            c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
            try:
                c.request("POST", INFER, body=body, headers={"Content-Type": "application/json"})
                r = c.getresponse()
                got = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
            except OSError as e:
                got = (repr(e), {}, b"")
            finally:
                c.close()
            self.is_413(*got, what="http.client, 24 MB with Content-Length (try %d)"
                        % (attempt + 1))
        try:
            r = requests.post("http://127.0.0.1:%d%s" % (d.port, INFER), data=body,
                              headers={"Content-Type": "application/json"}, timeout=30)
            got = (r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
        except requests.RequestException as e:
            got = (repr(e), {}, b"")
        self.is_413(*got, what="requests, 24 MB with Content-Length")

    def test_chunked(self):
        """A chunked body passes the limit: 413, and the connection is not kept."""
        d = self.d
        s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
        s.sendall(request_head(True))
        chunk = b"%x\r\n" % MIB + b"x" * MIB + b"\r\n"
        for _ in range(24):
            s.sendall(chunk)
        s.sendall(b"0\r\n\r\n")
        out = b""
        closed = False
        s.settimeout(10)
        try:
            while True:
                k = s.recv(65536)
                if not k:
                    closed = True
                    break
                out += k
        except OSError:
            pass
        s.close()
        head, _, body = out.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1]) if lines[0].startswith(b"HTTP/1.1 ") else 0
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        self.is_413(status, headers, body, "chunked, 24 MB")
        self.check(closed, "chunked, 24 MB: the daemon closes the connection after the 413")


class Linger(Case):
    """max_body_bytes 1M: what happens to the rest of a refused body."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.serve({"charlm": CHARLM}, "--max-body-bytes", "1M")

    def test_idle(self):
        """Clients that stop sending: closed after the idle bound, not request_timeout_s (30 s)."""
        d = self.d
        declared, chunked = [], []
        threads = [threading.Thread(target=idle_over, args=(d.port, declared, False)),
                   threading.Thread(target=idle_over, args=(d.port, chunked, True))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        for what, got in (("Content-Length", declared), ("chunked", chunked)):
            print("%s over the limit, then silence: 413 read, open at 2 s, open after the idle "
                  "bound: %s" % (what, got))
            self.eq(got, [True, True, False], "%s over the limit, then silence: the 413 at "
                    "once, then the socket lingers until %d s of silence"
                    % (what, LINGER_IDLE_S))

    def test_bounded(self):
        """Clients that never stop: cut off after the byte bound; memory stays flat."""
        d = self.d
        before = status_kib(d.proc.pid, "VmRSS")
        cap = 4 * LINGER_BYTES
        sent, cut, secs = flood(d.port, request_head(False, 1 << 40), b"0" * MIB, cap)
        print("Content-Length 1 TiB: %d MiB sent in %.2f s, cut=%s" % (sent // MIB, secs, cut))
        self.check(cut, "Content-Length flood: the daemon cuts the connection")
        self.check(LINGER_BYTES <= sent < 2 * LINGER_BYTES,
                   "Content-Length flood: cut after the %d MiB bound, not before (sent %d MiB)"
                   % (LINGER_BYTES // MIB, sent // MIB))
        piece = b"%x\r\n" % MIB + b"0" * MIB + b"\r\n"
        sent, cut, secs = flood(d.port, request_head(True), piece, cap)
        print("chunked: %d MiB sent in %.2f s, cut=%s" % (sent // MIB, secs, cut))
        self.check(cut, "chunked flood: the daemon cuts the connection")
        self.check(LINGER_BYTES <= sent < 2 * LINGER_BYTES,
                   "chunked flood: cut after the limit and the %d MiB bound (sent %d MiB)"
                   % (LINGER_BYTES // MIB, sent // MIB))
        grown = status_kib(d.proc.pid, "VmRSS") - before
        print("daemon RSS grew by %d KiB" % grown)
        self.check(grown < 16 * 1024,
                   "the dropped bytes are not kept (RSS grew by %d KiB)" % grown)
        self.check(d.alive() and d.request("GET", "/healthz")[0] == 200,
                   "the daemon serves after the floods")
        st, _, body = d.request("POST", INFER, {"inputs": ["ab"]})
        self.check(st == 200, "an ordinary request after the floods: %s %r" % (st, body))


if __name__ == "__main__":
    unittest.main()
