"""WebSocket sessions (docs/websocket.md) through `rnnd serve`, over real sockets.

A small client of our own (RawWS: the handshake, masked frames, the close handshake) drives
the socket, so that it can also send what a well-behaved library refuses to (unmasked or
oversize frames, frames after a close); python3-websockets' asyncio client checks that a real
library interoperates.

1. Steps over the socket (JSON text frames and binary frames, vector and token models) give
   outputs bitwise equal to the same steps over HTTP, also interleaved with HTTP requests to
   the same session; if_steps, seq and the order of replies.
2. The other operations (state, put_state, reset, generate) answer as their HTTP routes do.
3. Refusals: an unauthenticated upgrade (401 before upgrading), another key's session, bad
   handshakes, an unknown session, max_websockets (503).
4. Bad frames, each with its documented error or close code, changing nothing: invalid JSON,
   an unknown op, a binary frame of another layout (1003), a wrong width, an unmasked frame
   (1002), text that is not UTF-8 (1007), an oversize message (1009, also at the header of a
   frame that declares one), frames after the client's close, a deleted session (1008); the
   idle timeout (1001), ping/pong, ws_max_in_flight, a draining server (1001), a ping flood
   that never reads its pongs (memory stays bounded).

Expected values come from the same steps over HTTP, never from constants.
"""
import asyncio
import base64
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import threading
import time
import unittest

from daemon_util import (ASAN, PYTHON3, Case, Daemon, asan_env, batch_histogram, bearer,
                         golden_cases, golden_model, status_kib, tmpdir, write_secret)

WORK = tmpdir("websocket")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
CASES = {name: case for name, case, _ in golden_cases()}
VEC = next(n for n, c in sorted(CASES.items()) if c["input"]["kind"] == "vectors"
           and c.get("stateful", True) and "bidir" not in n and "reverse" not in n)
TOK = next(n for n, c in sorted(CASES.items()) if c["input"]["kind"] == "tokens")
DIM = CASES[VEC]["input"]["dim"]
VOCAB = CASES[TOK]["input"]["vocab"]
rng = random.Random(1806)


# A client (its own process) that opens ARGV[4] sockets to ARGV[2] on port ARGV[1], sends empty
# pings on each for ARGV[3] seconds and reads what comes back meanwhile; prints the pings
# sent and the pongs read.


PONG_FLOOD = r"""
import base64, os, socket, struct, sys, threading, time
port, path, secs, n = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
stop = time.monotonic() + secs
batch = (struct.pack("!BB", 0x89, 0x80) + b"\0\0\0\0") * 10000
sent, got = [0], [0]
def reader(s, buf):
    got[0] += len(buf)
    while True:
        b = s.recv(1 << 16)
        if not b:
            return
        got[0] += len(b)
def flood():
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert buf.split()[1] == b"101", buf
    threading.Thread(target=reader, args=(s, buf.partition(b"\r\n\r\n")[2]),
                     daemon=True).start()
    while time.monotonic() < stop:
        s.sendall(batch)
        sent[0] += 10000
ts = [threading.Thread(target=flood) for _ in range(n)]
for t in ts:
    t.start()
for t in ts:
    t.join()
time.sleep(0.5)
print(sent[0], got[0] // 2)
"""


# N sockets each sending text messages of about 800 KB (400,000 numbers: a step of the wrong
# width, answered 400) for SECS seconds, reading the replies; prints the messages sent.
BIG_JSON_FLOOD = r"""
import base64, os, socket, struct, sys, threading, time
port, path, secs, n = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
kind = sys.argv[5] if len(sys.argv) > 5 else "numbers"
stop = time.monotonic() + secs
if kind == "numbers":
    body = b'{"op":"step","inputs":[[' + b"0," * 400000 + b"0]]}"
elif kind.startswith("objects:"):  # N empty objects in an unknown field: 400 (trial 32)
    objs = int(kind.split(":")[1])
    body = b'{"op":"step","seq":1,"x":[' + b",".join([b"{}"] * objs) + b"]}"
elif kind.startswith("zeros:"):  # N zeros in an unknown field, 2 bytes a value (trial 33)
    body = b'{"op":"step","seq":1,"x":[' + b",".join([b"0"] * int(kind.split(":")[1])) + b"]}"
elif kind.startswith("text_all:"):  # a step of N characters, every step's outputs (trial 34)
    body = (b'{"op":"step","seq":1,"text":"' + b"a" * int(kind.split(":")[1]) +
            b'","outputs":"all"}')
elif kind.startswith("digits:"):  # a number of N digits in an unknown field (trial 34)
    body = b'{"op":"step","seq":1,"x":0.' + b"1" * int(kind.split(":")[1]) + b"}"
else:
    body = b""
frame = (struct.pack("!BBQ", 0x81, 0x80 | 127, len(body)) if len(body) > 65535 else
         struct.pack("!BBH", 0x81, 0x80 | 126, len(body))) + b"\0\0\0\0" + body
if kind == "fragments":  # 20 KB sent a byte a frame, an empty ping every 50 (trial 32)
    body = b'{"op":"step","seq":1,"x":1' + b" " * 20000 + b"}"
    frame = b"".join(struct.pack("!BB", (0x80 if i == len(body) - 1 else 0) | (0 if i else 1),
                                 0x81) + b"\0\0\0\0" + body[i:i + 1] +
                     (b"\x89\x80\0\0\0\0" if i % 50 == 0 else b"") for i in range(len(body)))
sent = [0]
def reader(s):
    try:
        while s.recv(1 << 16):
            pass
    except OSError:
        pass
paths = path.split(",")  # socket i floods paths[i % len(paths)]
def flood(i):
    path = paths[i % len(paths)]
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert buf.split()[1] == b"101", buf
    threading.Thread(target=reader, args=(s,), daemon=True).start()
    while time.monotonic() < stop:
        s.sendall(frame)
        sent[0] += 1
ts = [threading.Thread(target=flood, args=(i,)) for i in range(n)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(sent[0])
"""

class Closed(Exception):
    """The server's close frame: CODE and REASON."""

    def __init__(self, code, reason):
        super().__init__("closed %s %r" % (code, reason))
        self.code, self.reason = code, reason


class RawWS:
    """A WebSocket client on a plain socket."""

    def __init__(self, port, path, headers=None, timeout=20, ctx=None, source=None, rcvbuf=None):
        if rcvbuf:  # before the connection, so that the window stays small
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                                 source_address=(source, 0) if source else None)
        if ctx:
            self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: " + key,
                 "Sec-WebSocket-Version: 13"]
        for k, v in (headers or {}).items():
            lines = [x for x in lines if not x.lower().startswith(k.lower() + ":")]
            if v is not None:
                lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        first, *rest = head.decode().split("\r\n")
        self.status = int(first.split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in rest)}
        self.body = None
        if self.status != 101:
            n = int(self.headers.get("content-length", "0"))
            while len(self.buf) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
            self.body = json.loads(self.buf[:n]) if n else None
        self.key = key

    def frame(self, opcode, payload, fin=True, mask=True, rsv=0):
        """Send one frame."""
        self.sock.sendall(self.encode(opcode, payload, fin, mask, rsv))

    @staticmethod
    def encode(opcode, payload, fin=True, mask=True, rsv=0):
        """One frame's bytes, as a client sends it."""
        b0 = (0x80 if fin else 0) | rsv << 4 | opcode
        n = len(payload)
        m = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, m | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, m | 126, n)
        else:
            head = struct.pack("!BBQ", b0, m | 127, n)
        if mask:
            k = os.urandom(4)
            payload = bytes(c ^ k[i % 4] for i, c in enumerate(payload)) if n < 65536 else \
                _mask_big(payload, k)
            head += k
        return head + payload

    def send_json(self, obj):
        self.frame(1, json.dumps(obj).encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the TCP connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        """(opcode, payload) of the next frame (the server's are never masked); self.fin
        says whether it ends its message."""
        b0, b1 = self._read(2)
        if b1 & 0x80:
            raise AssertionError("the server masked a frame")
        n = b1 & 0x7f
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        self.fin = bool(b0 & 0x80)
        return b0 & 0x0f, self._read(n)

    def recv_message(self):
        """(opcode, payload, frames) of the next message, its fragments joined; control
        frames come whole, as their own messages (pongs between fragments are skipped, as
        RFC 6455 5.4 allows them there)."""
        op, data = self.recv_frame()
        frames = 1
        if op in (1, 2):
            while not self.fin:
                cop, more = self.recv_frame()
                if cop in (9, 10):
                    self.fin = False
                    continue
                if cop != 0:
                    raise AssertionError("opcode %d inside a fragmented message" % cop)
                data += more
                frames += 1
        return op, data, frames

    def recv(self):
        """The next data message (text: parsed JSON; binary: bytes); a close raises Closed."""
        while True:
            op, data, _ = self.recv_message()
            if op == 1:
                return json.loads(data)
            if op == 2:
                return data
            if op == 8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                raise Closed(code, data[2:].decode(errors="replace"))
            # pongs and anything else: skip

    def request(self, obj):
        self.send_json(obj)
        return self.recv()

    def expect_close(self, test, code, what):
        """The next frames end with the server's close CODE (replies before it are read)."""
        try:
            while True:
                self.recv()
        except Closed as c:
            test.eq(c.code, code, what + ": close code")
            try:
                self.frame(8, struct.pack("!H", 1000))
            except OSError:
                pass
            return c
        except (EOFError, OSError) as e:
            test.fail_check("%s: want close %d, got %r" % (what, code, e))

    def close(self):
        try:
            self.frame(8, struct.pack("!H", 1000))
            while True:
                self.recv()
        except (Closed, EOFError, OSError):
            pass
        self.sock.close()


def _frame(opcode, payload):
    """A small masked frame's bytes."""
    k = os.urandom(4)
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + k + \
        bytes(c ^ k[i % 4] for i, c in enumerate(payload))


def _mask_big(payload, k):
    import numpy as np
    a = np.frombuffer(payload, dtype=np.uint8)
    kk = np.resize(np.frombuffer(k, dtype=np.uint8), len(a))
    return (a ^ kk).tobytes()


def bin_step(seq, rows, kind=1, last=False, if_steps=None):
    """A binary step frame (ws_codec.h): float32 rows (kind 1) or int32 ids (kind 2)."""
    flags = (1 if last else 0) | (2 if if_steps is not None else 0)
    head = b"RW" + bytes([1, kind]) + struct.pack("<IIIq", seq, len(rows), flags,
                                                    if_steps or 0)
    if kind == 1:
        body = b"".join(struct.pack("<%df" % len(r), *r) for r in rows)
    else:
        body = struct.pack("<%di" % len(rows), *rows)
    return head + body


def bin_reply(data):
    """(seq, rows, width, steps, floats as a list of rows) of a binary reply."""
    magic, ver, kind = data[:2], data[2], data[3]
    assert magic == b"RW" and ver == 1 and kind == 3, data[:4]
    seq, rows, width, steps = struct.unpack("<IIIQ", data[4:24])
    vals = struct.unpack("<%df" % (rows * width), data[24:])
    return seq, rows, width, steps, [list(vals[i * width:(i + 1) * width]) for i in range(rows)]


def f32(x):
    """X rounded to float32, as the daemon reads it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bits(rows):
    return [struct.pack("<%df" % len(r), *r) for r in rows]


class WS(Case):
    """One daemon serving a vector model, a token model and charlm."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.serve({"vec": golden_model(VEC, WORK), "tok": golden_model(TOK, WORK),
                           "charlm": CHARLM}, "--ws-max-message-bytes", "64K",
                          "--max-websockets", "8", "--max-generate-tokens", "100000",
                          "--cors-origins", "https://ok.example")

    def new(self, model="vec"):
        st, _, b = self.d.request("POST", "/v1/sessions", {"model": model})
        self.eq(st, 201, "create a %s session" % model)
        return b["id"]

    def http_step(self, sid, inputs, **kw):
        st, _, b = self.d.request("POST", "/v1/sessions/%s/step" % sid,
                                  dict({"inputs": inputs}, **kw))
        return st, b

    def open(self, sid, **kw):
        w = RawWS(self.d.port, "/v1/sessions/%s/ws" % sid, **kw)
        self.eq(w.status, 101, "upgrade")
        self.addCleanup(w.close)
        return w

    def steps(self, sid):
        return self.d.request("GET", "/v1/sessions/" + sid)[2]["steps"]

    def state(self, sid):
        return self.d.request("GET", "/v1/sessions/%s/state" % sid)[2]["state"]

    # ---- 1. steps ----------------------------------------------------------------------

    def test_json_and_binary_steps_equal_http(self):
        chunks = [[[f32(rng.uniform(-2, 2)) for _ in range(DIM)] for _ in range(rng.randint(1, 5))]
                  for _ in range(12)]
        ref, a, b = self.new(), self.new(), self.new()
        wa, wb = self.open(a), self.open(b)
        for i, ch in enumerate(chunks):
            st, want = self.http_step(ref, ch)
            self.eq(st, 200, "HTTP step %d" % i)
            got = wa.request({"op": "step", "seq": i, "inputs": ch})
            self.eq((got["status"], got["op"], got["seq"], got["steps"]),
                    (200, "step", i, want["steps"]), "JSON step %d: envelope" % i)
            self.check(bits(got["outputs"]) == bits(want["outputs"]),
                       "JSON step %d: outputs bitwise equal to HTTP's" % i)
            wb.frame(2, bin_step(1000 + i, ch))
            seq, rows, width, steps, outs = bin_reply(wb.recv())
            self.eq((seq, rows, steps), (1000 + i, len(ch), want["steps"]),
                    "binary step %d: header" % i)
            self.check(bits(outs) == bits(want["outputs"]),
                       "binary step %d: outputs bitwise equal to HTTP's" % i)
        self.eq(self.state(a), self.state(ref), "JSON socket's state = HTTP's")
        self.eq(self.state(b), self.state(ref), "binary socket's state = HTTP's")

    def test_scanned_frames_reply_as_decoded(self):
        """Step frames of the common shape ("op" and "seq" first) take the step scanner
        (src/ws_bridge.c): their replies are byte for byte those of the same requests in
        another key order (decoded by jansson), and frames the scanner declines get the
        decoded path's errors."""
        ref, a, b = self.new(), self.new(), self.new()
        wa, wb = self.open(a), self.open(b)

        def raw(w, text):
            w.frame(1, text.encode())
            op, data, _ = w.recv_message()
            self.eq(op, 1, "a text reply")
            return data

        n = 0
        for i, (fast, slow, kw) in enumerate((
                ('{"op":"step","seq":7,"inputs":%s}', '{"inputs":%s,"seq":7,"op":"step"}', {}),
                (' { "seq" : 0 ,\n "op" : "step" , "inputs" : %s , "outputs" : "last" } ',
                 '{"outputs":"last","inputs":%s,"op":"step","seq":0}', {"outputs": "last"}),
                ('{"op":"step","inputs":%%s,"if_steps":%d}', '{"if_steps":%d,"inputs":%%s,"op":"step"}',
                 {}))):
            rows = [[f32(rng.uniform(-2, 2)) for _ in range(DIM)] for _ in range(i + 1)]
            if "if_steps" in fast:
                fast, slow = fast % n, slow % n
            text = json.dumps(rows)
            st, want = self.http_step(ref, rows, **kw)
            self.eq(st, 200, "HTTP step %d" % i)
            n += len(rows)
            ga, gb = raw(wa, fast % text), raw(wb, slow % text)
            self.eq(ga, gb, "step %d: the scanned frame's reply, byte for byte" % i)
            got = json.loads(ga)
            self.eq((got["status"], got["steps"]), (200, want["steps"]), "step %d: status" % i)
            last = kw.get("outputs") == "last"  # then one row, not a list of rows
            self.check(bits([got["outputs"]] if last else got["outputs"])
                       == bits([want["outputs"]] if last else want["outputs"]),
                       "step %d: outputs bitwise equal to HTTP's" % i)
        row = json.dumps([[0.5] * DIM])
        for what, text, want in (
                ("seq with a leading zero", '{"op":"step","seq":01,"inputs":%s}' % row,
                 {"status": 400, "code": "invalid_json"}),
                ("seq past int64", '{"op":"step","seq":99999999999999999999,"inputs":%s}' % row,
                 {"status": 400, "code": "invalid_json"}),
                ("seq not an integer", '{"op":"step","seq":2.0,"inputs":%s}' % row,
                 {"status": 400, "code": "invalid_request"}),
                ("an unknown field", '{"op":"step","seq":3,"inputs":%s,"x":1}' % row,
                 {"status": 400, "code": "invalid_request", "op": "step", "seq": 3}),
                ("wrong width", '{"op":"step","seq":4,"inputs":[[0.5]]}',
                 {"status": 400, "code": "invalid_request", "op": "step", "seq": 4}),
                ("no inputs", '{"op":"step","seq":5}',
                 {"status": 400, "code": "invalid_request", "op": "step", "seq": 5})):
            got = json.loads(raw(wa, text))
            self.eq({k: got["error"]["code"] if k == "code" else got.get(k) for k in want},
                    want, what)
            self.eq(set(got) - {"status", "op", "seq", "error"}, set(), what + ": no more")
        self.eq(self.steps(a), n, "the declined frames ran nothing")

    def test_bad_inputs_worded_as_http_in_any_key_order(self):
        """A step frame the scanner reads whose inputs do not fit the model (a token id out of
        range, a vector of the wrong width, vectors for a token model) gets the HTTP route's
        error message, whichever order its keys come in (they said "inputs: expected a list
        of steps, got nothing" when "seq" came first)."""
        for model, bad in (("tok", [[VOCAB]]), ("tok", [[1, VOCAB]]), ("tok", [[[0.5]]]),
                           ("vec", [[[0.5] * (DIM - 1)]]), ("vec", [[[0.5] * DIM, [0.5]]]),
                           ("vec", [[1]])):
            s = self.new(model)
            w = self.open(s)
            inputs = bad[0]
            st, want = self.http_step(s, inputs)
            self.eq(st, 400, "%s %s over HTTP" % (model, inputs))
            for k, text in enumerate((
                    '{"op":"step","seq":%d,"inputs":%s}', '{"seq":%d,"op":"step","inputs":%s}',
                    '{"op":"step","inputs":%s,"seq":%d}', '{"inputs":%s,"op":"step","seq":%d}',
                    '{"op":"step","seq":%d,"inputs":%s,"outputs":"last"}')):
                args = (k, json.dumps(inputs)) if text.index("seq") < text.index("inputs") \
                    else (json.dumps(inputs), k)
                w.frame(1, (text % args).encode())
                got = w.recv()
                self.eq((got["status"], got.get("seq"), got["error"]),
                        (400, k, want["error"]), "%s %s, frame %s" % (model, inputs, text))
            self.eq(self.steps(s), 0, "%s: the bad frames ran nothing" % model)

    def test_tokens_binary_and_last(self):
        ref, s = self.new("tok"), self.new("tok")
        w = self.open(s)
        for i in range(6):
            ids = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 6))]
            last = i % 2 == 1
            st, want = self.http_step(ref, ids, outputs="last" if last else "all")
            self.eq(st, 200, "HTTP token step %d" % i)
            w.frame(2, bin_step(i, ids, kind=2, last=last))
            seq, rows, width, steps, outs = bin_reply(w.recv())
            wrows = [want["outputs"]] if last else want["outputs"]
            self.eq((seq, rows, steps), (i, len(wrows), want["steps"]), "token step %d" % i)
            self.check(bits(outs) == bits(wrows), "token step %d: bitwise equal" % i)

    def test_long_replies_in_frames(self):
        """A reply over 16 KiB (WS_REPLY_INPLACE_BYTES) is sent from the request's own reply
        as frames of at most 4 KiB, a text or binary frame and then continuations (trial 34:
        4 MB replies copied twice on the event loop held every socket); its message is that of
        the same step over HTTP, bitwise. A single step's reply stays one frame."""
        text = "".join(rng.choice("abcdefgh ") for _ in range(200))
        ref, s = self.new("charlm"), self.new("charlm")
        w = self.open(s)
        st, _, want = self.d.request("POST", "/v1/sessions/%s/step" % ref,
                                     {"text": text, "outputs": "all"})
        self.eq(st, 200, "HTTP step of 200 characters")
        w.send_json({"op": "step", "seq": 1, "text": text, "outputs": "all"})
        op, data, frames = w.recv_message()
        got = json.loads(data)
        self.eq((op, got["status"], got["seq"]), (1, 200, 1), "a text reply")
        self.check(len(data) > 16384 and frames >= len(data) // 4096,
                   "a %d-byte reply came as %d frames of at most 4 KiB" % (len(data), frames))
        self.check(bits(got["outputs"]) == bits(want["outputs"]),
                   "200 steps' outputs over the socket equal HTTP's, bitwise")
        ids = [rng.randrange(96) for _ in range(200)]
        st, want = self.http_step(ref, ids, outputs="all")
        self.eq(st, 200, "HTTP token step")
        w.frame(2, bin_step(2, ids, kind=2))
        op, data, frames = w.recv_message()
        seq, rows, width, steps, outs = bin_reply(data)
        self.eq((op, seq, rows, steps), (2, 2, 200, want["steps"]), "a binary reply")
        self.check(frames >= len(data) // 4096,
                   "a %d-byte binary reply came as %d frames" % (len(data), frames))
        self.check(bits(outs) == bits(want["outputs"]), "binary outputs equal HTTP's, bitwise")
        w.send_json({"op": "step", "seq": 3, "text": "a"})
        op, data, frames = w.recv_message()
        self.eq((op, frames, json.loads(data)["status"]), (1, 1, 200), "a short reply, one frame")
        # the 16 KiB are the whole message's, its envelope included (trial 36: the body's)
        for n in range(10, 17):
            w.send_json({"op": "step", "seq": 100 + n, "text": "e" * n, "outputs": "all"})
            op, data, frames = w.recv_message()
            self.check((len(data) <= 16384) == (frames == 1) and frames <= len(data) // 4096 + 1,
                       "a %d-byte reply: %d frames" % (len(data), frames))

    def test_binary_token_errors_worded_as_http(self):
        """A binary frame's token id out of range gets the words of the HTTP route's error
        (docs/api.md: the same words wherever token ids come in)."""
        s = self.new("tok")
        w = self.open(s)
        for ids in ([VOCAB], [1, -1], [2, 3, VOCAB + 7]):
            st, want = self.http_step(s, ids)
            self.eq(st, 400, "HTTP %s" % ids)
            w.frame(2, bin_step(5, ids, kind=2))
            got = w.recv()
            self.eq((got["status"], got["seq"], got["error"]), (400, 5, want["error"]),
                    "binary %s: HTTP's error" % ids)
        self.eq(self.steps(s), 0, "the bad frames ran nothing")

    def test_interleaved_with_http(self):
        ref, s = self.new(), self.new()
        w = self.open(s)
        for i in range(10):
            ch = [[f32(rng.uniform(-1, 1)) for _ in range(DIM)] for _ in range(2)]
            st, want = self.http_step(ref, ch)
            if i % 3 == 0:
                st, got = self.http_step(s, ch, if_steps=2 * i)
                self.eq(st, 200, "HTTP step %d on the socket's session" % i)
            elif i % 3 == 1:
                got = w.request({"op": "step", "inputs": ch, "if_steps": 2 * i})
            else:
                w.frame(2, bin_step(i, ch, if_steps=2 * i))
                _, _, _, steps, outs = bin_reply(w.recv())
                got = {"outputs": outs, "steps": steps}
            self.eq(got["steps"], want["steps"], "interleaved %d: steps" % i)
            self.check(bits(got["outputs"]) == bits(want["outputs"]),
                       "interleaved %d: bitwise equal to HTTP only" % i)
        self.eq(self.state(s), self.state(ref), "interleaved: final state")

    def test_pipelined_order_and_if_steps(self):
        s = self.new()
        w = self.open(s)
        row = [[0.25] * DIM]
        for i in range(20):  # sent before any reply is read
            w.send_json({"op": "step", "seq": i, "inputs": row, "if_steps": i})
        got = [w.recv() for _ in range(20)]
        self.eq([g["seq"] for g in got], list(range(20)), "replies in request order")
        self.eq([g["steps"] for g in got], list(range(1, 21)), "each ran once, in order")
        c = w.request({"op": "step", "seq": 99, "inputs": row, "if_steps": 3})
        self.eq((c["status"], c["error"]["code"], c["error"]["steps"], c["seq"]),
                (409, "conflict", 20, 99), "if_steps conflict: HTTP's 409 body")
        w.frame(2, bin_step(5, row, if_steps=4))
        c = w.recv()
        self.eq((c["status"], c["error"]["code"], c["seq"]), (409, "conflict", 5),
                "binary if_steps conflict: a text error with the frame's seq")
        self.eq(self.steps(s), 20, "conflicts ran nothing")

    # ---- 2. the other operations -------------------------------------------------------

    def test_state_reset_put_state(self):
        s = self.new()
        w = self.open(s)
        w.request({"op": "step", "inputs": [[0.5] * DIM] * 3})
        got = w.request({"op": "state", "seq": 1})
        http = self.d.request("GET", "/v1/sessions/%s/state" % s)[2]
        self.eq((got["status"], got["seq"], got["state"], got["steps"]),
                (200, 1, http["state"], http["steps"]), "state op = GET state")
        other = self.new()
        st, _, want = self.d.request("POST", "/v1/sessions/%s/reset" % other)
        r = w.request({"op": "reset", "seq": 2})
        self.eq(r.pop("seq"), 2, "reset op: seq")
        self.eq(r.pop("op"), "reset", "reset op: op")
        want["id"] = s
        self.eq((r.pop("status"), r), (st, want), "reset op = POST .../reset")
        self.eq(self.steps(s), 0, "reset op reset the session")
        p = w.request({"op": "put_state", "state": http["state"], "steps": http["steps"],
                       "digest": http["digest"]})
        self.eq(p["status"] // 100, 2, "put_state op: %r" % p)
        self.eq(self.state(s), http["state"], "put_state op restored the state")
        bad = w.request({"op": "state", "extra": 1})
        self.eq((bad["status"], bad["error"]["code"]), (400, "invalid_request"),
                "state op with fields")

    def test_generate(self):
        s = self.new("charlm")
        t = self.new("charlm")
        w = self.open(s)
        body = {"prompt": "Hello", "max_tokens": 8, "seed": 3, "temperature": 0.7}
        got = w.request(dict(body, op="generate", seq=4))
        st, _, want = self.d.request("POST", "/v1/sessions/%s/generate" % t, body)
        self.eq(st, 200, "HTTP generate")
        got.pop("op"), got.pop("seq")
        self.eq(got.pop("status"), 200, "generate op: status")
        self.eq(got, want, "generate op = POST .../generate")
        # streamed: one message per server-sent event of the HTTP stream, then "done"
        u, v = self.new("charlm"), self.new("charlm")
        st, hdrs, text = self.d.request("POST", "/v1/sessions/%s/generate" % u,
                                        dict(body, stream=True))
        self.eq(st, 200, "HTTP streamed generate")
        events = []
        for ev in text.split("\n\n"):
            name = [ln[7:] for ln in ev.split("\n") if ln.startswith("event: ")]
            data = [ln[6:] for ln in ev.split("\n") if ln.startswith("data: ")]
            if data:
                events.append((name[0] if name else None, data[0]))
        wv = self.open(v)
        wv.send_json(dict(body, op="generate", seq=9, stream=True))
        msgs = []
        while not msgs or not msgs[-1].get("done"):
            msgs.append(wv.recv())
        self.eq({(m["status"], m["op"], m["seq"]) for m in msgs}, {(200, "generate", 9)},
                "streamed generate: every message's envelope")
        got = [(m.get("event"), json.dumps(m["data"], sort_keys=True)) for m in msgs[:-1]]
        want = [(n, json.dumps(json.loads(d), sort_keys=True)) for n, d in events
                if d != "[DONE]"]
        for m in (got, want):  # the sessions' ids differ; everything else must not
            for i, (n, d) in enumerate(m):
                m[i] = (n, d.replace(u, "ID").replace(v, "ID"))
        self.eq(got, want, "streamed generate: the HTTP stream's events, in order")
        self.check(len(want) >= 3, "the stream had tokens (%d events)" % len(want))
        self.eq(wv.request({"op": "step", "text": "a"})["status"], 200,
                "the socket serves on after a stream")
        # a socket that closes mid-stream stops its generation at the next token
        x = self.new("charlm")
        wx = RawWS(self.d.port, "/v1/sessions/%s/ws" % x)
        wx.send_json({"op": "generate", "prompt": "a", "max_tokens": 100000, "stream": True})
        wx.recv()
        wx.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        wx.sock.close()
        deadline = time.monotonic() + 20
        while self.d.request("GET", "/v1/sessions/" + x)[2]["busy"] and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        steps = self.steps(x)
        self.check(steps < 50000, "a closed socket's stream stopped early (%d of 100,000 "
                   "steps)" % steps)

    def test_origin_of_another_site_refused(self):
        """Browsers apply no CORS to WebSockets, so the upgrade itself checks Origin: only the
        origins of cors_origins (https://ok.example here) may open a socket; any other gets
        403 (trial 26: a page of any origin could read a session's replies), the daemon's
        "own" origin by its Host too (trial 27: a rebound DNS name sends a matching Host and
        Origin). Two Origin fields get 400: only the first was checked, so a listed one
        followed by any other opened the socket (trial 32); so do two versions."""
        s = self.new()
        for origin, host in (("https://evil.example", None),
                             ("http://evil.example:%d" % self.d.port,
                              "evil.example:%d" % self.d.port),
                             ("http://127.0.0.1:%d" % self.d.port, None)):
            hdrs = {"Origin": origin}
            if host:
                hdrs["Host"] = host
            w = RawWS(self.d.port, "/v1/sessions/%s/ws" % s, headers=hdrs)
            self.eq(w.status, 403, "an upgrade from %s (Host %s)" % (origin, host))
            w.sock.close()
        path = "/v1/sessions/%s/ws" % s
        w = RawWS(self.d.port, path, headers={"Origin": "https://ok.example"})
        self.eq(w.status, 101, "an upgrade from a listed origin")
        w.close()
        for what, extra in (("two Origin", "Origin: https://ok.example\r\n"
                                          "Origin: https://evil.example\r\n"),
                            ("two Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n")):
            with socket.create_connection(("127.0.0.1", self.d.port), timeout=10) as c:
                c.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n%s\r\n"
                           % (path, base64.b64encode(os.urandom(16)).decode(), extra)).encode())
                got = b""
                while b"\r\n\r\n" not in got:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            line = got.split(b"\r\n")[0]
            self.check(line.split(b" ")[1:2] == [b"400"], "%s: 400, got %r" % (what, line))
        self.eq(self.steps(s), 0, "nothing ran")
        w = self.open(s)
        self.eq(w.request({"op": "step", "inputs": [[0.0] * DIM]})["status"], 200,
                "without an Origin (not a browser) the upgrade is served")

    def ws_duration(self):
        """(count, sum) of the /ws route's request duration histogram."""
        text = self.d.request("GET", "/metrics")[2]
        text = text.decode() if isinstance(text, bytes) else text
        got = {}
        for ln in text.splitlines():
            for part in ("count", "sum"):
                if ln.startswith('rnnd_http_request_duration_seconds_%s{endpoint='
                                 '"/v1/sessions/*/ws"}' % part):
                    got[part] = float(ln.rsplit(" ", 1)[1])
        return got.get("count", 0.0), got.get("sum", 0.0)

    def test_upgrade_duration_ends_at_the_handshake(self):
        """The request duration histogram (docs/api.md, metrics) times an upgrade until its
        101 went out, not for as long as the socket stayed open (trial 26: a socket open 12 s
        was recorded as a 12 s request)."""
        n0, s0 = self.ws_duration()
        w = RawWS(self.d.port, "/v1/sessions/%s/ws" % self.new())
        self.eq(w.status, 101, "upgrade")
        time.sleep(1.5)
        w.close()
        deadline = time.monotonic() + 10
        n1, s1 = self.ws_duration()
        while n1 <= n0 and time.monotonic() < deadline:
            time.sleep(0.05)
            n1, s1 = self.ws_duration()
        self.check(n1 > n0, "the upgrade was counted once its socket closed")
        self.check(s1 - s0 < 1.0, "the upgrade's duration is its handshake: %.3f s recorded "
                   "for a socket open 1.5 s" % (s1 - s0))

    def cancelled_generations(self):
        text = self.d.request("GET", "/metrics")[2]
        text = text.decode() if isinstance(text, bytes) else text
        return sum(int(float(ln.rsplit(" ", 1)[1])) for ln in text.splitlines()
                   if ln.startswith('rnnd_generations_total{finish_reason="cancelled"}'))

    def test_close_frame_cancels_stream(self):
        """A client's close frame (the normal end of a socket) stops a streamed generation at
        its next token, as a closed HTTP stream does: finish_reason "cancelled", and the close
        handshake does not wait for max_tokens (it ran them all before)."""
        before = self.cancelled_generations()
        x = self.new("charlm")
        w = RawWS(self.d.port, "/v1/sessions/%s/ws" % x)
        self.eq(w.status, 101, "upgrade")
        w.send_json({"op": "generate", "prompt": "a", "max_tokens": 100000, "stream": True})
        w.recv()
        t = time.monotonic()
        w.close()
        took = time.monotonic() - t
        deadline = time.monotonic() + 20
        while self.d.request("GET", "/v1/sessions/" + x)[2]["busy"] and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        steps = self.steps(x)
        self.check(steps < 50000, "the closed socket's stream stopped early (%d of 100,000 "
                   "steps)" % steps)
        self.check(took < 5, "the close handshake took %.2f s" % took)
        self.eq(self.cancelled_generations() - before, 1,
                'rnnd_generations_total{finish_reason="cancelled"} went up by one')

    def test_close_frame_cancels_plain_generate(self):
        """A non-streamed generate stops at a close as a streamed one does (docs/api.md 4.4 and
        4.10: a generation stops when its client leaves, streamed or plain): it does not run
        its max_tokens to the end for a reply nobody reads."""
        before = self.cancelled_generations()
        x = self.new("charlm")
        w = RawWS(self.d.port, "/v1/sessions/%s/ws" % x)
        self.eq(w.status, 101, "upgrade")
        w.send_json({"op": "generate", "prompt": "a", "max_tokens": 100000})
        deadline = time.monotonic() + 10
        while not self.d.request("GET", "/v1/sessions/" + x)[2]["busy"] and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        w.close()
        deadline = time.monotonic() + 20
        while self.d.request("GET", "/v1/sessions/" + x)[2]["busy"] and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        steps = self.steps(x)
        self.check(steps < 50000, "the closed socket's plain generate stopped early (%d of "
                   "100,000 steps)" % steps)
        self.eq(self.cancelled_generations() - before, 1,
                'rnnd_generations_total{finish_reason="cancelled"} went up by one')

    def test_websockets_library(self):
        import websockets
        s, ref = self.new(), self.new()
        ch = [[0.1 * k for k in range(DIM)]]
        want = self.http_step(ref, ch)[1]

        async def go():
            url = "ws://127.0.0.1:%d/v1/sessions/%s/ws" % (self.d.port, s)
            async with websockets.connect(url) as ws:
                await ws.ping()
                await ws.send(json.dumps({"op": "step", "inputs": ch}))
                a = json.loads(await ws.recv())
                await ws.send(bin_step(1, ch))
                b = await ws.recv()
            return a, b, ws.close_code
        a, b, code = asyncio.run(asyncio.wait_for(go(), 30))
        self.check(bits(a["outputs"]) == bits(want["outputs"]), "websockets: JSON step")
        self.eq(bin_reply(b)[3], 2, "websockets: binary step")
        self.eq(code, 1000, "websockets: a normal close")

    # ---- 3. refusals before the upgrade ------------------------------------------------

    def test_handshake_refusals(self):
        s = self.new()
        path = "/v1/sessions/%s/ws" % s
        for what, hdrs, status in (
                ("no Upgrade", {"Upgrade": None}, 400),
                ("version 8", {"Sec-WebSocket-Version": "8"}, 400),
                ("a short key", {"Sec-WebSocket-Key": "abc"}, 400)):
            w = RawWS(self.d.port, path, headers=hdrs)
            self.eq((w.status, (w.body or {}).get("error", {}).get("code")),
                    (status, "invalid_request"), what)
            w.sock.close()
        def raw_upgrade(version, keys):
            """The status line and error of an upgrade with KEYS Sec-WebSocket-Key lines."""
            with socket.create_connection(("127.0.0.1", self.d.port), timeout=10) as c:
                c.sendall(("GET %s %s\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           "Connection: %sUpgrade\r\n%sSec-WebSocket-Version: 13\r\n\r\n"
                           % (path, version, "close, " if version.endswith("1") else "",
                              "".join("Sec-WebSocket-Key: %s\r\n"
                                      % base64.b64encode(os.urandom(16)).decode()
                                      for _ in range(keys)))).encode())
                got = b""
                while True:  # the head, then Content-Length bytes (none after a 101)
                    head, sep, body = got.partition(b"\r\n\r\n")
                    n = [int(h.split(b":")[1]) for h in head.split(b"\r\n")
                         if h.lower().startswith(b"content-length:")]
                    if sep and len(body) >= sum(n):
                        break
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            try:
                err = json.loads(body).get("error", {})
            except ValueError:
                err = {}
            return head.split(b"\r\n")[0], err

        # RFC 6455 4.1: the upgrade needs HTTP/1.1; an HTTP/1.0 one got no reply at all
        line, err = raw_upgrade("HTTP/1.0", 1)
        self.check(line.startswith(b"HTTP/1.") and line.split(b" ")[1] == b"400",
                   "an HTTP/1.0 upgrade: 400, got %r" % line)
        self.check(err.get("code") == "invalid_request" and "HTTP/1.1" in err.get("message", ""),
                   "an HTTP/1.0 upgrade: invalid_request naming HTTP/1.1: %r" % err)
        # RFC 6455 4.2.1: exactly one Sec-WebSocket-Key
        line, err = raw_upgrade("HTTP/1.1", 2)
        self.check(line.split(b" ")[1:2] == [b"400"], "two Sec-WebSocket-Key: 400, got %r" % line)
        self.check(err.get("code") == "invalid_request" and "Sec-WebSocket-Key" in
                   err.get("message", ""), "two Sec-WebSocket-Key: invalid_request naming it: %r"
                   % err)
        w = RawWS(self.d.port, "/v1/sessions/%s/ws" % ("0" * 32))
        self.eq((w.status, w.body["error"]["code"]), (404, "not_found"), "unknown session")
        w.sock.close()
        w = RawWS(self.d.port, path)
        self.eq(w.status, 101, "a good handshake")
        import hashlib
        want = base64.b64encode(hashlib.sha1(
            (w.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.eq(w.headers.get("sec-websocket-accept"), want, "Sec-WebSocket-Accept")
        w.close()

    def test_max_websockets(self):
        s = self.new()
        socks = []
        for i in range(8):
            w = RawWS(self.d.port, "/v1/sessions/%s/ws" % s)
            socks.append(w)
        self.eq([w.status for w in socks], [101] * 8, "8 sockets under max_websockets 8")
        w = RawWS(self.d.port, "/v1/sessions/%s/ws" % s)
        self.eq((w.status, w.body["error"]["code"]), (503, "unavailable"), "the 9th: 503")
        w.sock.close()
        for w in socks:
            w.close()
        deadline = time.monotonic() + 5
        while True:  # the slots come back once the sockets' threads end
            w = RawWS(self.d.port, "/v1/sessions/%s/ws" % s)
            if w.status == 101 or time.monotonic() > deadline:
                break
            w.sock.close()
            time.sleep(0.05)
        self.eq(w.status, 101, "a slot is free again after a close")
        w.close()

    # ---- 4. bad frames -----------------------------------------------------------------

    def test_bad_text_frames(self):
        s = self.new()
        w = self.open(s)
        for what, payload, code in (("not JSON", b"{nope", "invalid_json"),
                                    ("an array", b"[1]", "invalid_request"),
                                    ("no op", b'{"inputs": [[0]]}', "invalid_request"),
                                    ("bad seq", b'{"op": "step", "seq": "x"}', "invalid_request"),
                                    ("wrong width", json.dumps(
                                        {"op": "step", "inputs": [[0.0] * (DIM + 1)]}).encode(),
                                     "invalid_request"),
                                    ("unknown field", b'{"op": "step", "inputs": [[0]], "x": 1}',
                                     "invalid_request")):
            w.frame(1, payload)
            got = w.recv()
            self.eq((got["status"], got["error"]["code"]), (400, code), what)
        # a bad seq's error still names the op it was for (trial 26: no "op" in it)
        for seq in (-1, "x", 1.5):
            got = w.request({"op": "step", "seq": seq})
            self.eq((got["status"], got.get("op")), (400, "step"),
                    "seq %r: the error names the op" % (seq,))
        # nesting over max_json_depth (32), checked in one pass with the decoding cost: on the
        # loop, and behind a cost that sends the message to the slow path
        for what, payload, code in (
                ("33 levels", b'{"op":"step","x":' + b"[" * 32 + b"]" * 32 + b"}", "invalid_json"),
                ("32 levels", b'{"op":"step","x":' + b"[" * 31 + b"]" * 31 + b"}",
                 "invalid_request"),
                ("3,000 commas, then 33 levels", b'{"op":"step","y":[' + b"0," * 3000 +
                 b'0],"x":' + b"[" * 32 + b"]" * 32 + b"}", "invalid_json"),
                ("33 levels in a string", b'{"op":"step","x":"' + b"[" * 40 + b'"}',
                 "invalid_request")):
            w.frame(1, payload)
            got = w.recv()
            self.eq((got["status"], got["error"]["code"]), (400, code), what)
            self.check((code == "invalid_json") == ("max_json_depth" in got["error"]["message"]),
                       "%s: %r" % (what, got["error"]["message"]))
        for what, payload in (("an empty text frame", b""), ("only spaces", b" \r\n ")):
            w.frame(1, payload)
            got = w.recv()
            self.eq((got["status"], got["error"]["code"]), (400, "invalid_json"), what)
            self.check("empty text frame: a request is a JSON object" in got["error"]["message"],
                       "%s: the message says what is wrong: %r" % (what, got["error"]["message"]))
        w.frame(2, bin_step(3, [[0.0] * (DIM + 1)]))
        got = w.recv()
        self.eq((got["status"], got["error"]["code"], got["seq"]), (400, "invalid_request", 3),
                "binary: wrong width")
        # the message names the bytes expected and received, for any width of payload
        for what, frame, want, have in (
                ("a step too wide", bin_step(5, [[0.0] * (DIM + 1)] * 2), 8 * DIM, 8 * DIM + 8),
                ("2 bytes too many", bin_step(6, [[0.0] * DIM]) + b"\0\0", 4 * DIM, 4 * DIM + 2),
                ("3 bytes", bin_step(7, [[0.0]])[:-1], 4 * DIM, 3)):
            w.frame(2, frame)
            got = w.recv()
            msg = got["error"]["message"]
            self.check(got["status"] == 400 and "%d payload bytes" % want in msg
                       and "has %d" % have in msg,
                       "binary, %s: the message names %d bytes expected, %d received: %r"
                       % (what, want, have, msg))
        w.frame(2, bin_step(4, [VOCAB + 5], kind=2))
        got = w.recv()
        self.eq((got["status"], got["error"]["code"]), (400, "invalid_request"),
                "binary: token ids for a vector model")
        w.frame(2, bin_step(4, [[float("nan")] * DIM]))
        got = w.recv()
        self.eq((got["status"], got["error"]["code"]), (400, "invalid_request"), "binary: NaN")
        self.eq(self.steps(s), 0, "bad frames ran nothing")
        ok = w.request({"op": "step", "inputs": [[0.0] * DIM]})
        self.eq(ok["status"], 200, "the socket still serves after errors")

    def test_empty_message_behind_the_slow_path(self):
        """Empty text messages sent behind one that goes to the slow path (200 steps: costly to
        decode) follow it there, in order, and get their 400 (UBSan: the slow path copied the
        empty message from wslay's null pointer, which aborted the sanitizer build's daemon;
        found when test_bad_text_frames' empty frame met its socket's last slow message)."""
        s = self.new()
        w = self.open(s)
        big = json.dumps({"op": "step", "seq": 1, "inputs": [[0.0] * DIM] * 200}).encode()
        w.sock.sendall(w.encode(1, big) + w.encode(1, b"") + w.encode(1, b"") +
                       w.encode(1, json.dumps({"op": "step", "seq": 2,
                                               "inputs": [[0.0] * DIM]}).encode()))
        got = [w.recv() for _ in range(4)]
        self.eq([(g["status"], g.get("seq")) for g in got],
                [(200, 1), (400, None), (400, None), (200, 2)], "in order")
        self.eq([g["error"]["code"] for g in got[1:3]], ["invalid_json"] * 2, "the empty ones")
        self.eq(self.steps(s), 201, "both steps ran")

    def close_case(self, send, code, what):
        """A fresh session's socket; SEND(w) must make the server close with CODE, the session
        unchanged."""
        s = self.new()
        w = self.open(s)
        n = len(self.d.log)
        send(w)
        w.expect_close(self, code, what)
        self.eq(self.steps(s), 0, what + ": the session did not step")
        want = "code=%d by=server" % code
        self.check(self.d.wait_log(lambda ln: "event=ws_closed" in ln and want in ln
                                   and ln in self.d.log[n:]),
                   "%s: the close is logged with %s" % (what, want))

    def test_close_codes(self):
        self.close_case(lambda w: w.frame(2, b"XX" + bytes(40)), 1003, "a binary frame of "
                        "another layout")
        self.close_case(lambda w: w.frame(2, b"RW\x02\x01" + bytes(20)), 1003,
                        "binary version 2")
        self.close_case(lambda w: w.frame(1, json.dumps(
            {"op": "step", "inputs": [[0.0] * DIM]}).encode(), mask=False), 1002,
            "an unmasked frame")
        self.close_case(lambda w: w.frame(1, b'{"op": "step", "pad": "' + b"x" * 70000 + b'"}'),
                        1009, "a message over ws_max_message_bytes")
        self.close_case(lambda w: w.frame(1, b"{}", rsv=2), 1002, "a reserved bit")
        self.close_case(lambda w: w.frame(1, b'{"op": "step", "x": "\xff\xfe"}'), 1007,
                        "a text frame that is not UTF-8")
        self.close_case(lambda w: w.frame(9, b"x", fin=False), 1002, "a fragmented ping")
        self.close_case(lambda w: w.frame(9, b"x" * 200), 1002, "a ping over 125 bytes")
        self.close_case(lambda w: w.frame(10, b"x" * 126), 1002, "a pong over 125 bytes")
        self.close_case(lambda w: w.sock.sendall(b"\x81\xfe\x00\x05" + bytes(4) + b"{  }\n"),
                        1002, "a length in 16 bits that fits 7")
        # a bad frame after a good one: the reply to the good one comes first
        self.close_case(lambda w: w.sock.sendall(
            _frame(1, json.dumps({"op": "state"}).encode()) + b"\x09\x81\x00\x00\x00\x00x"),
            1002, "a fragmented ping after a request")

    def test_declared_length(self):
        """A frame header that declares more than ws_max_message_bytes (64K here) closes with
        1009 at once, with no payload sent (not at the idle timeout); so does a continuation
        that takes its message over; a 64-bit length with its top bit set closes with 1002."""
        def header(b0, n):
            def send(w):
                w.sock.settimeout(3)  # the idle timeout is 300 s: a close must come at once
                w.sock.sendall(struct.pack("!BBQ", b0, 0xff, n) + os.urandom(4))
            return send
        for n in (64 * 1024 + 1, 1 << 40, (1 << 63) - 1):
            self.close_case(header(0x82, n), 1009, "a binary frame declaring %d bytes" % n)
        self.close_case(header(0x81, 1 << 40), 1009, "a text frame declaring 2^40 bytes")

        def fragments(w):
            w.sock.settimeout(3)
            w.frame(1, b" " * 40000, fin=False)
            w.sock.sendall(struct.pack("!BBH", 0x80, 0xfe, 30000) + os.urandom(4))
        self.close_case(fragments, 1009, "a continuation taking its message to 70,000 bytes")
        self.close_case(header(0x82, (1 << 63) | 5), 1002, "a 64-bit length with its top bit "
                        "set")

    def test_frames_after_close(self):
        s = self.new()
        w = self.open(s)
        # all in one write: the server reads the step frames after the close
        w.sock.sendall(b"".join(_frame(op, p) for op, p in (
            (8, struct.pack("!H", 1000)),
            (1, json.dumps({"op": "step", "inputs": [[0.0] * DIM]}).encode()),
            (2, bin_step(1, [[0.0] * DIM])))))
        try:
            while True:
                w.recv()
        except Closed as c:
            self.eq(c.code, 1000, "the server answers the close with 1000")
        except (EOFError, OSError):
            pass
        time.sleep(0.2)
        self.eq(self.steps(s), 0, "frames after the close ran nothing")

    def test_session_deleted(self):
        s = self.new()
        w = self.open(s)
        self.eq(w.request({"op": "step", "inputs": [[0.0] * DIM]})["status"], 200, "a step")
        self.eq(self.d.request("DELETE", "/v1/sessions/" + s)[0], 204, "DELETE the session")
        got = w.request({"op": "step", "inputs": [[0.0] * DIM]})
        self.eq((got["status"], got["error"]["code"]), (404, "not_found"),
                "a step on the deleted session: HTTP's 404")
        w.expect_close(self, 1008, "a deleted session's socket")

    def test_round_trip_latency(self):
        """A reply is not held back by Nagle's algorithm waiting for the client's delayed ACK
        (40 ms a round trip before TCP_NODELAY and MSG_MORE)."""
        s = self.new()
        w = self.open(s)
        fr = bin_step(0, [[0.5] * DIM])
        times = []
        for _ in range(60):
            t = time.monotonic()
            w.frame(2, fr)
            w.recv()
            times.append(time.monotonic() - t)
            w.request({"op": "step", "inputs": [[0.5] * DIM]})
        times.sort()
        self.check(times[len(times) // 2] < 0.02, "median binary round trip %.1f ms < 20 ms"
                   % (times[len(times) // 2] * 1e3))

    def test_ping(self):
        s = self.new()
        w = self.open(s)
        w.frame(9, b"hi")
        op, data = w.recv_frame()
        self.eq((op, data), (10, b"hi"), "a ping gets its pong")


class Limits(Case):
    """A daemon with small limits: the idle timeout, ws_max_in_flight, auth."""

    def test_idle_timeout_and_drain(self):
        with Daemon({"vec": golden_model(VEC, WORK)}, "--ws-idle-timeout-s", "1",
                    "--request-timeout-s", "1") as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            w = RawWS(d.port, "/v1/sessions/%s/ws" % s)
            t0 = time.monotonic()
            for _ in range(4):  # pings keep it open past the timeout
                time.sleep(0.4)
                w.frame(9, b"")
                self.eq(w.recv_frame()[0], 10, "pong")
            c = w.expect_close(self, 1001, "idle socket")
            took = time.monotonic() - t0
            self.check(1.5 <= took < 5, "closed after ~1 s idle (took %.1f s)" % took)
            self.check("idle" in c.reason, "reason names the idle timeout: %r" % c.reason)
            w.sock.close()
            self.check(d.wait_log(lambda l: "event=ws_closed" in l and "code=1001" in l
                                  and "by=server" in l and "requests=0" in l),
                       "the close is logged (event=ws_closed code=1001 by=server)")
            self.check(not [l for l in d.log if s in l], "no log line holds the session id")
            w = RawWS(d.port, "/v1/sessions/%s/ws" % s)
            self.eq(w.request({"op": "step", "inputs": [[0.0] * DIM]})["status"], 200, "step")
            rc, took = d.stop()
            self.eq(rc, 0, "stops cleanly with a socket open")
            try:
                while True:
                    w.recv()
            except Closed as c:
                self.eq(c.code, 1001, "a draining server closes with 1001")
            except (EOFError, OSError) as e:
                self.fail_check("want close 1001 on drain, got %r" % e)

    def long_reply_begun(self, d):
        """A charlm session of D, a socket to it with a 4 KiB receive buffer, and the first
        frame of a 4.9 MB reply on it (4,096 steps, "outputs": "all"): (id, socket, frame)."""
        s = d.request("POST", "/v1/sessions", {"model": "charlm"})[2]["id"]
        w = RawWS(d.port, "/v1/sessions/%s/ws" % s, rcvbuf=4096)
        self.eq(w.status, 101, "upgrade")
        w.send_json({"op": "step", "seq": 1, "text": "ab" * 2048, "outputs": "all"})
        op, first = w.recv_frame()
        self.eq((op, w.fin), (1, False), "the 4.9 MB reply's first frame")
        return s, w, first

    def test_unread_long_reply(self):
        """A client that stops reading a long reply (4.9 MB, sent in 4 KiB frames) is closed
        once nothing has been written to it for ws_idle_timeout_s, as an idle one; while it
        reads, each write counts as activity. The step was applied."""
        with Daemon({"charlm": CHARLM}, "--ws-idle-timeout-s", "1") as d:
            s, w, _ = self.long_reply_begun(d)
            t0 = time.monotonic()
            ok = d.wait_log(lambda ln: "event=ws_closed" in ln, timeout=10)
            took = time.monotonic() - t0
            self.check(ok and took < 6, "the socket ended %.1f s after the client stopped "
                       "reading" % took)
            self.eq(d.request("GET", "/v1/sessions/" + s)[2]["steps"], 4096, "the step ran")
            w.sock.close()

    def test_sockets_share_an_event_loop(self):
        """64 open sockets, each with a step answered, cost the daemon at most two threads
        (an event loop's), not one a socket (/proc/PID/task)."""
        with Daemon({"vec": golden_model(VEC, WORK)}, "--max-websockets", "64",
                    "--max-websockets-per-ip", "64") as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            tasks = "/proc/%d/task" % d.proc.pid
            before = len(os.listdir(tasks))
            socks = [RawWS(d.port, "/v1/sessions/%s/ws" % s) for _ in range(64)]
            self.eq([w.status for w in socks], [101] * 64, "64 sockets open")
            for i, w in enumerate(socks):  # every socket taken up by its loop and answered
                w.frame(2, bin_step(i, [[0.0] * DIM]))
            self.eq([bin_reply(w.recv())[0] for w in socks], list(range(64)),
                    "each socket's step answered on it")
            during = len(os.listdir(tasks))
            self.check(during - before <= 2, "threads with 64 sockets open: %d, before %d"
                       % (during, before))
            for w in socks:
                w.close()

    def test_flood_does_not_starve_others(self):
        """One socket flooding frames that need no reply (empty unsolicited pongs) for 3 s:
        another socket's steps are still answered within a second each, as the event loop
        reads at most READ_PER_TURN bytes of a socket before it serves the others (trial 25
        F1: the old loop read the flood for as long as it came, a step 4,011 ms late)."""
        import threading
        with Daemon({"vec": golden_model(VEC, WORK)}, env=asan_env()) as d:
            s1 = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            s2 = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            victim = RawWS(d.port, "/v1/sessions/%s/ws" % s1)
            flooder = RawWS(d.port, "/v1/sessions/%s/ws" % s2)
            self.eq(victim.request({"op": "step", "inputs": [[0.0] * DIM]})["status"], 200,
                    "the victim's first step")
            batch = _frame(10, b"") * 10000
            stop = time.monotonic() + 3
            sent = [0]

            def flood():
                while time.monotonic() < stop:
                    flooder.sock.sendall(batch)
                    sent[0] += 10000

            t = threading.Thread(target=flood)
            t.start()
            worst, n = 0.0, 0
            time.sleep(0.2)
            while time.monotonic() < stop - 0.3:
                t0 = time.monotonic()
                rep = victim.request({"op": "step", "inputs": [[0.0] * DIM]})
                worst = max(worst, time.monotonic() - t0)
                n += 1
                self.eq(rep["status"], 200, "a victim's step during the flood")
                time.sleep(0.05)
            t.join()
            print("flood: %d empty pongs in 3 s; the victim's %d steps meanwhile, the slowest "
                  "%.0f ms" % (sent[0], n, worst * 1000))
            self.check(sent[0] >= 100000, "the flood was one (%d frames)" % sent[0])
            self.check(worst < 1.0, "the slowest of the victim's steps took %.0f ms, under "
                       "1 s while another socket floods" % (worst * 1000))
            self.eq(flooder.request({"op": "step", "inputs": [[0.0] * DIM]})["status"], 200,
                    "the flooder's socket serves after its flood")
            victim.close()
            flooder.close()

    def test_pong_flood_does_not_starve_others(self):
        """Two sockets flooding empty pings and reading their pongs as fast as they come
        (another process, so that the GIL does not time the victim): a third socket's steps,
        one every 20 ms, keep their latency, as the loop writes at most WRITE_PER_TURN of a
        socket's frames (a pong a frame) before it serves the others (trial 25 F3: the
        victim's p50 5.3-6.6 ms, p99 34-35 ms, against 0.4-0.7 ms without the flood). Measured
        here (2 cores shared, load ~7): before, p50 17-25 ms, p90 42-56 ms, p99 60-161 ms;
        after, p50 1.4-5.8 ms, p90 5.9-42 ms, p99 15-329 ms (load ~10). The tail is the
        machine's (other processes at a higher priority), not the loop's: the median is
        asserted, which the old loop exceeds in every run."""
        with Daemon({"vec": golden_model(VEC, WORK)}, env=asan_env()) as d:
            lat, out = self.victim_during_flood(d, PONG_FLOOD, 3, 2)
            pings, pongs = (int(x) for x in out.split())
            p50, p90, p99 = (lat[int(len(lat) * q)] * 1000 for q in (0.5, 0.9, 0.99))
            print("pong flood: %d pings, %d pongs read in 2.5 s; the victim's %d steps: p50 "
                  "%.1f ms, p90 %.1f ms, p99 %.1f ms" % (pings, pongs, len(lat), p50, p90, p99))
            self.check(pongs >= 100000, "the flood was one (%d pongs read)" % pongs)
            self.check(len(lat) >= 50, "the victim stepped through the flood (%d)" % len(lat))
            bound = 36 if ASAN else 12
            self.check(p50 < bound, "the victim's median step took %.1f ms, under %d ms while "
                       "two sockets flood pings" % (p50, bound))

    def victim_during_flood(self, d, script, *args, victim_msg=None, status=200,
                            flood_model=None, victim_model="vec"):
        """A victim socket's step latencies (one every 20 ms), sorted, while SCRIPT floods
        another session's socket from its own process (so that the GIL does not time the
        victim), run with the daemon's port, that socket's path and ARGS; and what the script
        printed. The flood's session must not step. VICTIM_MSG (default a step) must get
        STATUS. With FLOOD_MODEL, the path is 32 sessions' of that model, comma-separated,
        which may step. The victim's session is of VICTIM_MODEL."""
        msg = victim_msg or {"op": "step", "inputs": [[0.0] * DIM]}
        s1 = d.request("POST", "/v1/sessions", {"model": victim_model})[2]["id"]
        s2 = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
        path = "/v1/sessions/%s/ws" % s2
        if flood_model:
            path = ",".join("/v1/sessions/%s/ws" % d.request(
                "POST", "/v1/sessions", {"model": flood_model})[2]["id"] for _ in range(32))
        victim = RawWS(d.port, "/v1/sessions/%s/ws" % s1)
        self.eq(victim.request(msg)["status"], status, "the victim's first request")
        flood = subprocess.Popen([PYTHON3, "-c", script, str(d.port), path]
                                 + [str(a) for a in args], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        lat = []
        while flood.poll() is None and len(lat) < 200:
            t0 = time.monotonic()
            rep = victim.request(msg)
            lat.append(time.monotonic() - t0)
            self.eq(rep["status"], status, "a victim's request during the flood")
            time.sleep(0.02)
        out, _ = flood.communicate(timeout=60)
        victim.close()
        self.eq(d.request("GET", "/v1/sessions/" + s2)[2]["steps"], 0,
                "the flood's session did not step")
        lat.sort()
        return lat, out

    def test_costly_json_does_not_starve_others(self):
        """Text messages cheap to send and costly to decode, each answered 400 (an unknown
        field): ~990 KB of 330,000 empty objects (trial 32: decoded on the slow path, but their
        tree freed by the event loop with the reply, the loop busy 3-6 s in 10, a victim's p99
        266 ms with 4 sockets), and 65,400 bytes of 21,800 (under 64 KiB, so decoded on the
        loop: p50 146 ms with 16 sockets; 12 here). The tree is freed by the worker, and a
        message whose decoding costs more than WS_SLOW_TEXT_COST is decoded there whatever its
        length."""
        for kind, n in (("objects:330000", 4), ("objects:21800", 12)):
            with Daemon({"vec": golden_model(VEC, WORK)}, env=asan_env()) as d:
                lat, out = self.victim_during_flood(d, BIG_JSON_FLOOD, 3, n, kind)
                sent = int(out)
                p50, p90, p99 = (lat[int(len(lat) * q)] * 1000 for q in (0.5, 0.9, 0.99))
                print("%s flood, %d sockets: %d messages; the victim's %d steps: p50 %.1f ms, "
                      "p90 %.1f ms, p99 %.1f ms, max %.1f ms"
                      % (kind, n, sent, len(lat), p50, p90, p99, lat[-1] * 1000))
                self.check(sent >= 8, "the flood was one (%d messages)" % sent)
                self.check(len(lat) >= 20, "the victim stepped through the flood (%d)" % len(lat))
                # the median: decoded on the loop, 21,800 objects on 12 sockets gave 29 ms
                # (p90 60), 1 ms after; the p90 moves with the machine's load (53 ms once in a
                # whole suite on 2 cores beside other tests)
                bound = 45 if ASAN else 15
                self.check(p50 < bound, "the victim's median step took %.1f ms, under %d ms "
                           "while %d sockets send %s messages" % (p50, bound, n, kind))
                # Not asserted: the tails. The loop freeing what the workers allocated, and
                # waiting for their malloc arena (trial 33), gave 12 sockets of 21,800 objects
                # a max of 298 and 677 ms, 6 and 15 ms after the frees moved to the workers,
                # on a quiet machine; a loaded one gives such tails too.

    def test_dense_json_does_not_starve_others(self):
        """32 sockets sending 16 KB messages of 8,150 zeros, each answered 400 (trial 33: under
        the first bounds, 8,192 commas and 64 brackets, they were decoded on the loop, ~1 ms
        each; a victim's p50 205 ms with 64 sockets): their decoding costs more than
        WS_SLOW_TEXT_COST, so they go to the slow path; and a message under it takes its
        socket's read share for the turn."""
        with Daemon({"vec": golden_model(VEC, WORK)}, "--max-websockets-per-ip", "64",
                    env=asan_env()) as d:
            lat, out = self.victim_during_flood(d, BIG_JSON_FLOOD, 3, 32, "zeros:8150")
            p50, p90 = (lat[int(len(lat) * q)] * 1000 for q in (0.5, 0.9))
            print("zeros flood, 32 sockets: %s messages; the victim's %d steps: p50 %.1f ms, "
                  "p90 %.1f ms, max %.1f ms" % (out.strip(), len(lat), p50, p90, lat[-1] * 1000))
            self.check(int(out) >= 32, "the flood was one (%s messages)" % out.strip())
            # the median: here 131 ms before, 3 ms after (p90 206 and 45: the flood's own
            # process shares the 2 cores)
            bound = 120 if ASAN else 40
            self.check(p50 < bound, "the victim's median step took %.1f ms, under %d ms while "
                       "32 sockets send dense 16 KB messages" % (p50, bound))

    def test_long_numbers_do_not_starve_others(self):
        """32 sockets sending 60 KB messages of one number, each answered 400 (trial 34: a
        number's digits cost nothing in the decoding cost, so each was decoded on the loop,
        ~0.6 ms; here the victim's p50 22-41 ms before, 0.5 after, on a quiet machine): every
        16 bytes cost 1, a number's as a string's, so they go to the slow path."""
        with Daemon({"vec": golden_model(VEC, WORK)}, "--max-websockets-per-ip", "64",
                    env=asan_env()) as d:
            lat, out = self.victim_during_flood(d, BIG_JSON_FLOOD, 3, 32, "digits:60000")
            p50, p90 = (lat[int(len(lat) * q)] * 1000 for q in (0.5, 0.9))
            print("long numbers, 32 sockets: %s messages; the victim's %d steps: p50 %.1f ms, "
                  "p90 %.1f ms, max %.1f ms" % (out.strip(), len(lat), p50, p90, lat[-1] * 1000))
            self.check(int(out) >= 32, "the flood was one (%s messages)" % out.strip())
            bound = 45 if ASAN else 15
            self.check(p50 < bound, "the victim's median step took %.1f ms, under %d ms while "
                       "32 sockets send 60 KB numbers" % (p50, bound))

    def test_long_replies_do_not_starve_others(self):
        """32 sockets, each its own charlm session, sending steps of 4,000 characters with
        "outputs": "all" (trial 34: 4 KB in, ~4 MB out; a victim's p50 / p99 27-32 / 294-311
        ms): each reply was copied twice on the event loop (~2,000 page faults a copy), and
        the thousands a second that the memory budget refused 429 were each tokenized there
        first. Replies over 16 KiB now go from the request's own reply in 4 KiB frames, the
        text's fewest tokens are charged before it is encoded, and the tokenizer finds a
        token's first byte in a table (trial 34's harness, 32 sockets, 6 s: p50 / p99 52.6 /
        173.8 ms before, 17.5 / 53.0 after). Here the flood's own process shares the two
        cores and limits it: the old code gave p50 2-20 ms too, so the bound catches gross
        starvation only; test_long_replies_in_frames and test_memory.py's
        test_refused_before_tokenizing assert the mechanisms."""
        with Daemon({"vec": golden_model(VEC, WORK), "charlm": CHARLM},
                    "--max-websockets-per-ip", "64", env=asan_env()) as d:
            lat, out = self.victim_during_flood(
                d, BIG_JSON_FLOOD, 3, 32, "text_all:4000", flood_model="charlm",
                victim_model="charlm", victim_msg={"op": "step", "text": "a", "outputs": "last"})
            p50, p90 = (lat[int(len(lat) * q)] * 1000 for q in (0.5, 0.9))
            print("long replies, 32 sockets: %s messages; the victim's %d steps: p50 %.1f ms, "
                  "p90 %.1f ms, max %.1f ms" % (out.strip(), len(lat), p50, p90, lat[-1] * 1000))
            self.check(int(out) >= 32, "the flood was one (%s messages)" % out.strip())
            bound = 240 if ASAN else 80
            self.check(p50 < bound, "the victim's median step took %.1f ms, under %d ms while "
                       "32 sockets ask for 4 MB replies" % (p50, bound))

    def test_brackets_in_strings_stay_on_the_loop(self):
        """A small message whose string holds 100 '{' is cheap to decode and starts on the
        loop (trial 33: brackets were counted inside strings too, so such a prompt went to the
        slow path and waited behind four sockets' 990 KB messages: p50 46 ms, max 951 ms)."""
        with Daemon({"vec": golden_model(VEC, WORK)}, env=asan_env()) as d:
            lat, out = self.victim_during_flood(
                d, BIG_JSON_FLOOD, 3, 4, "objects:330000", status=400,
                victim_msg={"op": "step", "inputs": [[0.0] * DIM], "x": "{" * 100})
            p50, p90 = (lat[int(len(lat) * q)] * 1000 for q in (0.5, 0.9))
            print("brackets in a string beside a 990 KB flood: the victim's %d requests: p50 "
                  "%.1f ms, p90 %.1f ms, max %.1f ms" % (len(lat), p50, p90, lat[-1] * 1000))
            self.check(len(lat) >= 20, "the victim went on through the flood (%d)" % len(lat))
            # on the slow path behind the flood it was p50 242 ms (6 requests in 3 s)
            bound = 45 if ASAN else 15
            self.check(p50 < bound, "the victim's median took %.1f ms, under %d ms" % (p50, bound))

    def test_fragment_flood_does_not_starve_others(self):
        """Twelve sockets sending messages a byte a frame, with pings between (trial 32: the
        16 KiB read share counted bytes, 2,300 such frames a turn; a victim's p99 160-327 ms
        with 16 sockets): a frame now counts FRAME_READ_COST bytes more, at most one read of
        them a turn. Here (2 cores, load ~3) the victim's p50 / p90 went 12.9-13.1 / 29-32 ms
        -> 7.7-8.4 / 17-18 ms; the bound asserted catches a loop held by the flood, not that
        difference, which the old code passes too."""
        with Daemon({"vec": golden_model(VEC, WORK)}, env=asan_env()) as d:
            lat, out = self.victim_during_flood(d, BIG_JSON_FLOOD, 3, 12, "fragments")
            sent = int(out)
            p50, p90 = (lat[int(len(lat) * q)] * 1000 for q in (0.5, 0.9))
            print("fragment flood, 12 sockets: %d messages; the victim's %d steps: p50 %.1f ms, "
                  "p90 %.1f ms, max %.1f ms" % (sent, len(lat), p50, p90, lat[-1] * 1000))
            self.check(sent >= 4, "the flood was one (%d messages)" % sent)
            self.check(len(lat) >= 20, "the victim stepped through the flood (%d)" % len(lat))
            bound = 200 if ASAN else 100
            self.check(p90 < bound, "the victim's p90 step took %.1f ms, under %d ms while "
                       "12 sockets send a byte a frame" % (p90, bound))

    def test_big_json_does_not_starve_others(self):
        """Four sockets sending text messages of 800 KB (400,000 numbers, each answered 400),
        cheap to send and costly to decode (trial 27: decoded on the event loop they held
        every socket, the victim's slowest step 92-741 ms with 4 such sockets, 1.4-5.2 s with
        60): a text message over 64 KiB is decoded on a slow-path worker, and a fifth
        socket's steps, one every 20 ms, keep their latency."""
        with Daemon({"vec": golden_model(VEC, WORK)}, env=asan_env()) as d:
            lat, out = self.victim_during_flood(d, BIG_JSON_FLOOD, 3, 4)
            p50, p90 = (lat[int(len(lat) * q)] * 1000 for q in (0.5, 0.9))
            print("big JSON flood: %s messages; the victim's %d steps: p50 %.1f ms, p90 %.1f "
                  "ms, max %.1f ms" % (out.strip(), len(lat), p50, p90, lat[-1] * 1000))
            self.check(int(out) >= 8, "the flood was one (%s messages)" % out.strip())
            self.check(len(lat) >= 20, "the victim stepped through the flood (%d)" % len(lat))
            # the median: p90 616 ms before the slow path; the p90 moves with the machine's
            # load (57 ms once in a whole suite beside other tests)
            bound = 45 if ASAN else 15
            self.check(p50 < bound, "the victim's median step took %.1f ms, under %d ms while "
                       "four sockets send 800 KB JSON messages" % (p50, bound))

    def test_shutdown_during_big_json(self):
        """SIGTERM while four sockets send 800 KB JSON messages: the messages still waiting
        for a slow-path worker are answered 503 without being decoded, so the daemon exits
        at once (before: 15-18 s here, each queued message decoded first)."""
        with Daemon({"vec": golden_model(VEC, WORK)}, env=asan_env()) as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            flood = subprocess.Popen([PYTHON3, "-c", BIG_JSON_FLOOD, str(d.port),
                                      "/v1/sessions/%s/ws" % s, "4", "4"],
                                     stdout=subprocess.PIPE, text=True)
            time.sleep(1.5)
            rc, took = d.stop()
            flood.kill()
            flood.communicate(timeout=30)
            self.eq(rc, 0, "the daemon exits cleanly")
            bound = 15 if ASAN else 5
            self.check(took < bound, "exited %.1f s after SIGTERM, under %d s" % (took, bound))

    def test_shutdown_lets_slow_readers_finish(self):
        """SIGTERM while a client reads a 4.9 MB reply slowly (a 4 KiB frame every 4 ms): the
        reply arrives whole and then the 1001 close, as HTTP replies get shutdown_timeout_s
        (trial 35: the socket was dropped 2 s after the drain began, mid-message, with no
        close frame, and the log said 1001)."""
        with Daemon({"charlm": CHARLM}, "--shutdown-timeout-s", "30") as d:
            _, w, first = self.long_reply_begun(d)
            got = {"data": first, "end": None}

            def reader():
                try:
                    while True:
                        op, data = w.recv_frame()
                        if op == 8:
                            got["end"] = struct.unpack("!H", data[:2])[0]
                            return
                        got["data"] += data
                        time.sleep(0.004)
                except (OSError, EOFError) as e:
                    got["end"] = repr(e)
            t = threading.Thread(target=reader)
            t.start()
            time.sleep(0.3)
            rc, took = d.stop()
            t.join(30)
            w.sock.close()
            self.eq((rc, got["end"]), (0, 1001), "the daemon exits 0; the socket's end")
            reply = json.loads(got["data"]) if got["end"] == 1001 else {}
            self.eq((reply.get("status"), len(reply.get("outputs", []))), (200, 4096),
                    "the whole reply, %d bytes, read in %.1f s" % (len(got["data"]), took))

    def test_per_address_limit(self):
        """max_websockets_per_ip: one address cannot hold every slot (pinging keeps a socket
        open for good); another address still gets one, and a closed socket frees its slot."""
        with Daemon({"vec": golden_model(VEC, WORK)}, "--max-websockets", "8",
                    "--max-websockets-per-ip", "3") as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            path = "/v1/sessions/%s/ws" % s
            mine = [RawWS(d.port, path) for _ in range(3)]
            self.eq([w.status for w in mine], [101] * 3, "3 sockets under the per-address cap")
            w = RawWS(d.port, path)
            self.eq((w.status, (w.body or {}).get("error", {}).get("code")),
                    (503, "unavailable"), "the 4th from one address: 503")
            self.check("max_websockets_per_ip" in (w.body or {}).get("error", {}).get(
                "message", ""), "the message names max_websockets_per_ip: %r" % w.body)
            w.sock.close()
            other = RawWS(d.port, path, source="127.0.0.2")
            self.eq(other.status, 101, "another address gets a socket")
            other.close()
            mine.pop().close()
            deadline = time.monotonic() + 5
            while True:  # the slot comes back once the socket has ended
                w = RawWS(d.port, path)
                if w.status == 101 or time.monotonic() > deadline:
                    break
                w.sock.close()
                time.sleep(0.05)
            self.eq(w.status, 101, "a slot of the address is free again after a close")
            for x in mine + [w]:
                x.close()

    def test_metrics(self):
        """/metrics tells the sockets apart (trial 26): rnnd_websockets_open counts the open
        ones, rnnd_websocket_upgrades_refused_total the 503s by the limit that refused them,
        rnnd_websocket_closes_total a socket's close by its code (the client's 1000 here),
        rnnd_websocket_messages_total the data messages each way, text and binary."""
        def scrape():
            st, _, text = d.request("GET", "/metrics")
            self.eq(st, 200, "GET /metrics")
            return {k: float(v) for k, _, v in (l.rpartition(" ") for l in text.split("\n")
                                                 if l and not l.startswith("#"))}

        def delta(b, a, series):
            return b.get(series, 0) - a.get(series, 0)

        opened = "rnnd_websockets_open"
        refused = 'rnnd_websocket_upgrades_refused_total{reason="%s"}'
        closes = 'rnnd_websocket_closes_total{code="%s"}'
        msgs = 'rnnd_websocket_messages_total{direction="%s",kind="%s"}'
        with Daemon({"vec": golden_model(VEC, WORK)}, "--max-websockets", "3",
                    "--max-websockets-per-ip", "2") as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            path = "/v1/sessions/%s/ws" % s
            a = scrape()
            self.eq(a.get(opened), 0, "no socket open at first")
            mine = [RawWS(d.port, path) for _ in range(2)]
            self.eq([w.status for w in mine], [101] * 2, "2 sockets")
            b = scrape()
            self.eq(b.get(opened), 2, "2 sockets open")
            w = RawWS(d.port, path)
            self.eq(w.status, 503, "the 3rd from one address: 503")
            w.sock.close()
            other = RawWS(d.port, path, source="127.0.0.2")
            self.eq(other.status, 101, "another address takes the last slot")
            w = RawWS(d.port, path, source="127.0.0.2")
            self.eq(w.status, 503, "a 4th socket: 503 (max_websockets)")
            w.sock.close()
            c = scrape()
            self.eq(c.get(opened), 3, "3 sockets open")
            self.eq(delta(c, a, refused % "max_websockets_per_ip"), 1,
                    "the 503 of max_websockets_per_ip counted under its reason")
            self.eq(delta(c, a, refused % "max_websockets"), 1,
                    "the 503 of max_websockets counted under its reason")
            self.eq(delta(c, a, refused % "draining"), 0, "none refused for draining")
            x = mine[0]
            self.eq(x.request({"op": "step", "inputs": [[0.0] * DIM]})["status"], 200,
                    "a text step")
            x.frame(2, bin_step(1, [[0.0] * DIM]))
            self.eq(bin_reply(x.recv())[0], 1, "a binary step")
            x.close()  # the client's 1000
            deadline = time.monotonic() + 5
            while True:  # the socket is counted closed once its connection is gone
                e = scrape()
                if e.get(opened) == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.eq(e.get(opened), 2, "2 sockets open after a close")
            self.eq(delta(e, a, closes % "1000"), 1, "the client's close counted as 1000")
            self.eq(sum(delta(e, a, closes % k) for k in
                        ("1000", "1001", "1002", "1003", "1007", "1008", "1009", "1011",
                         "other")), 1, "one close in all")
            self.eq([delta(e, a, msgs % (way, kind)) for way in ("in", "out")
                     for kind in ("text", "binary")], [1, 1, 1, 1],
                    "messages in and out, text and binary")
            for y in mine[1:] + [other]:
                y.close()

    def test_in_flight_limit(self):
        with Daemon({"vec": golden_model(VEC, WORK)}, "--ws-max-in-flight", "1") as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            ref = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            w = RawWS(d.port, "/v1/sessions/%s/ws" % s)
            rows = [[[f32(rng.uniform(-1, 1)) for _ in range(DIM)]] for _ in range(40)]
            for i, r in enumerate(rows):  # all sent at once: the server reads one at a time
                if i % 2:
                    w.frame(2, bin_step(i, r))
                else:
                    w.send_json({"op": "step", "seq": i, "inputs": r})
            got = [w.recv() for _ in rows]
            for i, r in enumerate(rows):
                want = d.request("POST", "/v1/sessions/%s/step" % ref, {"inputs": r})[2]
                g = got[i]
                outs = bin_reply(g)[4] if i % 2 else g["outputs"]
                seq = bin_reply(g)[0] if i % 2 else g["seq"]
                self.check(seq == i and bits(outs) == bits(want["outputs"]),
                           "in-flight 1: request %d answered in order, bitwise" % i)
            # empty text messages read while one is in flight wait their turn (UBSan: the
            # parked copy was made from wslay's null pointer, which aborted the daemon)
            w.sock.sendall(RawWS.encode(2, bin_step(100, [[0.5] * DIM] * 500)) +
                           RawWS.encode(1, b"") + RawWS.encode(1, b"") +
                           RawWS.encode(1, json.dumps({"op": "step", "seq": 101,
                                                       "inputs": [[0.5] * DIM]}).encode()))
            got = [w.recv() for _ in range(4)]
            self.eq(bin_reply(got[0])[0], 100, "the binary step first")
            self.eq([(g["status"], g.get("seq"), g.get("error", {}).get("code"))
                     for g in got[1:]], [(400, None, "invalid_json")] * 2 + [(200, 101, None)],
                    "then the empty ones, then the last step")
            w.close()

    def test_backpressure(self):
        """A client that sends and never reads: the daemon stops reading its socket once a
        message's worth of replies waits, so the client's sends block rather than the daemon
        buffering without bound."""
        with Daemon({"vec": golden_model(VEC, WORK)}, "--ws-max-message-bytes", "64K") as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            w = RawWS(d.port, "/v1/sessions/%s/ws" % s)
            frame = bin_step(0, [[0.5] * DIM] * 1000)     # 1,000 steps: a 32 KB reply
            w.sock.settimeout(3)
            sent, blocked = 0, False
            try:
                while sent < 2000:                        # 2,000 frames: 2,000,000 steps
                    w.frame(2, frame)
                    sent += 1
            except socket.timeout:
                blocked = True
            self.check(blocked, "sends block once the daemon stops reading (%d frames sent)"
                       % sent)
            steps = d.request("GET", "/v1/sessions/" + s)[2]["steps"]
            self.check(steps < sent * 1000, "the daemon ran %d of the %d steps sent: it "
                       "stopped reading" % (steps, sent * 1000))
            w.sock.close()
            st, _, b = d.request("POST", "/v1/sessions", {"model": "vec"})
            self.eq(st, 201, "the daemon serves on after the client left")

    def test_ping_flood(self):
        """A client that pings as fast as it can and never reads its pongs: the daemon stops
        reading once a message's worth of pongs waits (as for other replies), so its memory
        stays flat; when the client reads again, every ping has its pong and the socket
        serves."""
        import threading
        with Daemon({"vec": golden_model(VEC, WORK)}, env=asan_env()) as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            w = RawWS(d.port, "/v1/sessions/%s/ws" % s)
            self.eq(w.request({"op": "step", "inputs": [[0.0] * DIM]})["status"], 200, "a step")
            ping = _frame(9, b"p" * 125)
            batch = ping * 1000
            before = status_kib(d.proc.pid, "VmRSS")
            w.sock.settimeout(0.2)
            sent, pending, blocked = 0, b"", 0
            t_end = time.monotonic() + 2
            while time.monotonic() < t_end:
                if not pending:
                    pending = batch
                try:
                    n = w.sock.send(pending)
                except socket.timeout:
                    blocked += 1
                    continue
                sent += n
                pending = pending[n:]
            grown = status_kib(d.proc.pid, "VmRSS") - before
            pings = (sent + len(pending)) // len(ping)
            print("ping flood: %d pings in 2 s, sends blocked %d times, daemon RSS grew by "
                  "%d KiB" % (pings, blocked, grown))
            self.check(blocked > 0, "the client's sends block: the daemon stopped reading")
            bound = (48 if ASAN else 6) * 1024
            self.check(grown < bound, "daemon RSS grew by %d KiB < %d KiB while flooded"
                       % (grown, bound))
            # the client reads again: every ping's pong, then a request's reply
            got = {"pongs": 0, "reply": None}

            def reader():
                try:
                    while True:
                        op, data = w.recv_frame()
                        if op == 10:
                            got["pongs"] += 1
                        elif op == 1:
                            got["reply"] = json.loads(data)
                            return
                except Exception as e:  # reported below, in the main thread
                    got["reply"] = repr(e)
            w.sock.settimeout(30)
            t = threading.Thread(target=reader)
            t.start()
            w.sock.sendall(pending)
            w.send_json({"op": "step", "inputs": [[0.0] * DIM]})
            t.join(60)
            self.eq(got["pongs"], pings, "every ping got its pong once the client read")
            self.check(isinstance(got["reply"], dict) and got["reply"]["status"] == 200,
                       "the socket serves after the flood: %r" % (got["reply"],))
            w.close()

    def test_sockets_batch_together(self):
        """16 sockets stepping at once: their steps share batch rounds with each other's and
        with HTTP steps, and every output equals a replay of the same session over HTTP."""
        import threading
        with Daemon({"vec": golden_model(VEC, WORK)}, "--max-batch-wait-us", "2000") as d:
            n, length = 16, 40
            sids = [d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
                    for _ in range(n + 1)]
            data = [[[f32(rng.uniform(-1, 1)) for _ in range(DIM)] for _ in range(length)]
                    for _ in range(n + 1)]
            outs, errors = [None] * (n + 1), []

            def client(k):
                try:
                    if k == n:  # one HTTP client among the sockets
                        c = d.conn()
                        outs[k] = [d.request("POST", "/v1/sessions/%s/step" % sids[k],
                                             {"inputs": [row]}, conn=c)[2]["outputs"][0]
                                   for row in data[k]]
                        return
                    w = RawWS(d.port, "/v1/sessions/%s/ws" % sids[k])
                    got = []
                    for i, row in enumerate(data[k]):
                        if i % 2:
                            w.frame(2, bin_step(i, [row]))
                            got.append(bin_reply(w.recv())[4][0])
                        else:
                            got.append(w.request({"op": "step", "inputs": [row]})["outputs"][0])
                    outs[k] = got
                    w.close()
                except Exception as e:  # reported below, in the main thread
                    errors.append("client %d: %r" % (k, e))
            before = batch_histogram(d.metrics(), "vec")
            threads = [threading.Thread(target=client, args=(k,)) for k in range(n + 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            self.check(not errors, "17 concurrent clients: %s" % (errors[:3] or "ok"))
            after = batch_histogram(d.metrics(), "vec")
            batches = after["count"] - before["count"]
            multi = batches - (after["1"] - before["1"])
            self.eq(after["sum"] - before["sum"], (n + 1) * length, "every step batched once")
            self.check(multi > 0, "rounds of more than one session: %d of %d" % (multi, batches))
            for k in range(n + 1):
                ref = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
                want = d.request("POST", "/v1/sessions/%s/step" % ref,
                                 {"inputs": data[k]})[2]["outputs"]
                self.check(outs[k] is not None and bits(outs[k]) == bits(want),
                           "client %d: bitwise equal to a replay over HTTP" % k)

    def test_abrupt_and_garbage(self):
        """Clients that vanish with requests in flight, or send random bytes as frames: the
        daemon serves on and stops cleanly (exit 0, checked by the context)."""
        with Daemon({"vec": golden_model(VEC, WORK)}) as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            w = RawWS(d.port, "/v1/sessions/%s/ws" % s)
            for i in range(16):
                w.frame(2, bin_step(i, [[0.5] * DIM] * 2000))
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.sock.close()  # a reset, sixteen requests of 2,000 steps in flight
            g = random.Random(5)
            for i in range(30):
                w = RawWS(d.port, "/v1/sessions/%s/ws" % s)
                try:
                    if i % 3 == 0:
                        w.sock.sendall(bytes(g.randrange(256) for _ in range(g.randrange(1, 300))))
                    else:  # well-formed frames of random opcodes, flags and contents
                        for _ in range(5):
                            w.frame(g.randrange(16), bytes(g.randrange(256)
                                                           for _ in range(g.randrange(0, 200))),
                                    fin=g.random() < 0.8, rsv=g.choice([0, 0, 0, 1]))
                    w.sock.settimeout(2)
                    while True:
                        w.recv_frame()
                except (OSError, EOFError, AssertionError):
                    pass
                w.sock.close()
            deadline = time.monotonic() + 30
            while d.request("GET", "/v1/sessions/" + s)[2]["busy"] and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            steps = d.request("GET", "/v1/sessions/" + s)[2]["steps"]
            self.check(steps % 2000 == 0 and steps <= 32000,
                       "the vanished client's requests ran whole or not at all (%d)" % steps)
            w = RawWS(d.port, "/v1/sessions/%s/ws" % s)
            got = w.request({"op": "step", "inputs": [[0.0] * DIM]})
            self.eq((got["status"], got["steps"]), (200, steps + 1), "the daemon serves on")
            w.close()

    def test_tls(self):
        cert, key = os.path.join(WORK, "cert.pem"), os.path.join(WORK, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        ctx = ssl.create_default_context(cafile=cert)
        with Daemon({"vec": golden_model(VEC, WORK)}, "--tls-cert", cert, "--tls-key",
                    key) as d:
            sids = []
            import http.client
            for _ in range(2):
                h = http.client.HTTPSConnection("127.0.0.1", d.port, timeout=30, context=ctx)
                h.request("POST", "/v1/sessions", body=b'{"model": "vec"}',
                          headers={"Content-Type": "application/json"})
                sids.append(json.loads(h.getresponse().read())["id"])
                h.close()
            rows = [[f32(rng.uniform(-1, 1)) for _ in range(DIM)] for _ in range(5)]
            a = RawWS(d.port, "/v1/sessions/%s/ws" % sids[0], ctx=ctx)
            b = RawWS(d.port, "/v1/sessions/%s/ws" % sids[1], ctx=ctx)
            self.eq((a.status, b.status), (101, 101), "wss: upgrades over TLS")
            ja = a.request({"op": "step", "inputs": rows})
            b.frame(2, bin_step(1, rows))
            jb = bin_reply(b.recv())
            self.check(bits(ja["outputs"]) == bits(jb[4]), "wss: JSON and binary steps agree")
            a.close()
            b.close()

    def test_auth(self):
        ka, kb = "alice-0123456789abcdef", "bob-fedcba9876543210xyz"
        keys = write_secret(os.path.join(WORK, "keys"), "%s alice\n%s bob\n" % (ka, kb))
        with Daemon({"vec": golden_model(VEC, WORK)}, "--api-keys-file", keys) as d:
            s = d.request("POST", "/v1/sessions", {"model": "vec"}, headers=bearer(ka))[2]["id"]
            path = "/v1/sessions/%s/ws" % s
            w = RawWS(d.port, path)
            self.eq((w.status, w.body["error"]["code"]), (401, "unauthorized"),
                    "no key: 401 before upgrading")
            w.sock.close()
            w = RawWS(d.port, path, headers=bearer(kb))
            self.eq((w.status, w.body["error"]["code"]), (404, "not_found"),
                    "another key's session: 404")
            w.sock.close()
            w = RawWS(d.port, path, headers=bearer(ka))
            self.eq(w.status, 101, "the owner's key upgrades")
            got = w.request({"op": "step", "inputs": [[0.0] * DIM]})
            self.eq((got["status"], got["steps"]), (200, 1), "steps with the upgrade's key")
            w.close()


if __name__ == "__main__":
    unittest.main()
