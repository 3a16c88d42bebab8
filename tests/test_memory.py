"""The memory budget (docs/security.md, "Memory"): issue 13's amplification attacks, each run
against a daemon with small settings, measuring the daemon's peak RSS (VmHWM, reset through
/proc/PID/clear_refs before each attack) and asserting it stays within the budget:
- a body of empty objects {"inputs":[{},{},...]}, which jansson turns into ~80x its size,
  alone and two at once (the parse is metered: it stops at max_request_memory);
- 65,536 steps on charlm (a 400 MB work space) and 1,024 steps on a model with 16,384 hidden
  units and proj_size 1 (256 MB): refused with 413 before anything is allocated;
- 30 keep-alive clients that never read their 11 MB responses: the requests in flight hold
  at most memory_budget, the others get 429 with Retry-After;
and that a long infer round stops at shutdown_timeout_s instead of running to its end.
Prints each peak. Each attack is a test, runnable alone.
"""
import json
import os
import socket
import threading
import time
import unittest

import daemon_util
from daemon_util import ASAN, FACTOR, MIB, SLACK, Case, Daemon, code_of, tmpdir
from daemon_util import asan_env as env

WORK = tmpdir("memory")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
PER_REQUEST = 48 * MIB
BUDGET = 128 * MIB
SETTINGS = ["--max-request-memory", "48M", "--memory-budget", "128M", "--max-body-bytes", "4M",
            "--workers", "2", "--http-threads", "4"]


def write_model(name, arch, seed=1):
    return daemon_util.write_model(WORK, name, arch, seed)


attack = daemon_util.attack


def layer(kind, hidden, **kw):
    return dict({"type": kind, "hidden_size": hidden, "direction": "forward"}, **kw)


def vec(dim):
    return {"kind": "vectors", "dim": dim}


def raw_request(port, path, body, rcvbuf=None):
    """Send a POST without reading; returns the socket."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body)
    return s


def read_status(s):
    """The status code of the reply on S (reads the head only)."""
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else 0


def empty_objects():
    n = (4 * MIB - 16) // 3
    return b'{"inputs":[' + b",".join([b"{}"] * n) + b"]}"


class Memory(Case):
    """Each attack against its own daemon with small settings."""

    def test_bodies_arriving(self):
        """Issue 13 adversary: bodies still arriving were outside the budget. 40 connections each
        sending all but the last byte of a 15,000,000-byte body held +574 MiB at
        memory_budget = 128M. A body is now charged as it is buffered: those that do not fit
        beside the others get 429 and the close."""
        n = 15000000
        chunk = b" " * (1 << 20)
        head = (b"POST /v1/models/charlm/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % n)
        with Daemon({"charlm": CHARLM}, *(SETTINGS + ["--max-body-bytes", "16M",
                                                      "--request-timeout-s", "60"]),
                    env=env()) as d:
            socks = []

            def flood():
                for _ in range(20):
                    s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
                    socks.append(s)
                    try:
                        s.sendall(head)
                        left = n - 1
                        while left:
                            k = min(left, len(chunk))
                            s.sendall(chunk[:k])
                            left -= k
                    except OSError:
                        pass
                time.sleep(1)
            attack(d, "20 bodies of 15 MB arriving", flood, FACTOR * BUDGET + SLACK)
            codes = []
            for s in socks:
                s.settimeout(0.5)
                try:
                    codes.append(read_status(s))
                except OSError:
                    codes.append(0)
                s.close()
            print("statuses: %s" % sorted(codes))
            self.check(codes.count(429) >= 10, "most bodies got 429 (%s)" % sorted(codes))
            self.check(codes.count(0) >= 5, "some are still arriving, unanswered (%s)"
                       % sorted(codes))

    def test_step_scan_wide(self):
        """Issue 13 adversary: one row of 7.5 million zeros {"inputs":[[0,0,...]]} to a session
        step on charlm (a token model). The step scanner filled 30 MB of floats before it knew
        the model, outside the budget, and the JSON path then decoded the body again."""
        body = b'{"inputs":[[' + b",".join([b"0"] * 7500000) + b']]}'
        with Daemon({"charlm": CHARLM}, *(SETTINGS + ["--max-body-bytes", "16M"]), env=env()) as d:
            s, _, j = d.request("POST", "/v1/sessions", {"model": "charlm"})
            self.eq(s, 201, "a session (%s)" % str(j)[:200])
            path = "/v1/sessions/%s/step" % j["id"]

            def one():
                s, _, j = d.request("POST", path, raw=body)
                print("a 15 MB wide row: %d" % s)
                self.check(s in (413, 429), "a 15 MB wide row: refused (%d %s)"
                           % (s, str(j)[:200]))
            # the body (15 MB) and its metered decoding: fixed, +44 MiB; before, +72 MiB
            attack(d, "step scanner, one 15 MB row", one,
                   FACTOR * PER_REQUEST + (SLACK if ASAN else 8 * MIB))
            s, _, j = d.request("POST", path, {"inputs": [1, 2, 3]})
            self.eq(s, 200, "a small step still answers 200 (%s)" % str(j)[:200])

    def test_v2_text(self):
        """Issue 13 adversary: one 15 MB BYTES string on charlm without sequence_id was encoded
        whole and copied into one jansson integer per token (~48 B) before the step limit
        (max_infer_steps) refused it: +644 MiB for one, +1292 MiB for three at once."""
        text = json.dumps({"inputs": [{"name": "INPUT", "shape": [1], "datatype": "BYTES",
                                       "data": ["a" * 15000000]}]}).encode()
        with Daemon({"charlm": CHARLM}, *(SETTINGS + ["--max-body-bytes", "16M"]), env=env()) as d:
            def one():
                s, _, j = d.request("POST", "/v2/models/charlm/infer", raw=text)
                print("a 15 MB BYTES string: %d %s" % (s, str(j)[:120]))
                self.check(s in (400, 429, 503), "a 15 MB BYTES string: 400, 429 or 503 (%d %s)"
                           % (s, str(j)[:200]))
            attack(d, "v2 BYTES 15 MB (one)", one, FACTOR * PER_REQUEST + SLACK)

            def three():
                got = []

                def run():
                    s, _, j = d.request("POST", "/v2/models/charlm/infer", raw=text)
                    got.append(s)
                ts = [threading.Thread(target=run) for _ in range(3)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(60)
                print("three 15 MB BYTES strings: %s" % sorted(got))
                self.check(len(got) == 3 and all(g in (400, 429, 503) for g in got),
                           "three 15 MB BYTES strings: 400, 429 or 503 (%s)" % got)
            attack(d, "v2 BYTES 15 MB (three at once)", three, FACTOR * BUDGET + SLACK)
            v1 = json.dumps({"inputs": ["a" * 15000000], "outputs": "last"}).encode()

            def v1_text():
                s, _, j = d.request("POST", "/v1/models/charlm/infer", raw=v1)
                self.eq((s, code_of(j)), (413, "limit_exceeded"), "v1: a 15 MB text: 413 (%s)"
                        % str(j)[:200])
            # the body, its string, and ids for at most max_infer_steps tokens: +44 MiB; before,
            # 4 bytes of ids a byte of text: +101 MiB
            attack(d, "v1 text 15 MB (one)", v1_text,
                   FACTOR * PER_REQUEST + (SLACK if ASAN else 8 * MIB))
            s, _, j = d.request("POST", "/v2/models/charlm/infer", {"inputs": [
                {"name": "INPUT", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]})
            self.eq(s, 200, "a short text still answers 200 (%s)" % str(j)[:200])

    def test_json_amplification(self):
        body = empty_objects()
        with Daemon({"charlm": CHARLM}, *SETTINGS, env=env()) as d:
            def one():
                s, h, j = d.request("POST", "/v1/models/charlm/infer", raw=body)
                self.eq((s, code_of(j)), (413, "limit_exceeded"),
                        "empty objects: 413 limit_exceeded")
                self.check("max_request_memory" in str(j), "the message names "
                           "max_request_memory: %s" % str(j)[:200])
            attack(d, "4 MB of {} (one)", one, FACTOR * PER_REQUEST + SLACK)

            def two():
                got = []

                def run():
                    s, _, j = d.request("POST", "/v1/models/charlm/infer", raw=body)
                    got.append((s, code_of(j)))
                ts = [threading.Thread(target=run) for _ in range(2)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(60)
                self.check(len(got) == 2 and all(
                    g in ((413, "limit_exceeded"), (429, "overloaded")) for g in got),
                    "two at once: 413 or 429 (%s)" % got)
            attack(d, "4 MB of {} (two at once)", two, FACTOR * 2 * PER_REQUEST + SLACK)

    def test_refused_before_tokenizing(self):
        """A text step whose reply the memory limits refuse is refused before its text is
        encoded: the fewest tokens the text can make are charged first (trial 34: 4,000
        characters a step, refused 429 thousands of times a second, were each tokenized on
        the WebSocket event loop first). Seen here as which error comes first: a text over
        the limit with a character not in the vocabulary at its end gets the memory's 413,
        not the vocabulary's 400; under the limit, the 400."""
        with Daemon({"charlm": CHARLM}, "--max-request-memory", "1M", env=env()) as d:
            sid = d.request("POST", "/v1/sessions", {"model": "charlm"})[2]["id"]
            step = "/v1/sessions/%s/step" % sid
            s, _, j = d.request("POST", step, {"text": "a" * 4000 + "\u20ac", "outputs": "all"})
            self.eq((s, code_of(j)), (413, "limit_exceeded"), "4,001 characters: 413")
            self.check("max_request_memory" in str(j), "it names max_request_memory: %s" % j)
            s, _, j = d.request("POST", step, {"text": "a" * 40 + "\u20ac", "outputs": "all"})
            self.eq((s, code_of(j)), (400, "invalid_request"), "41 characters: 400")
            self.check("U+20AC" in str(j), "it names the character: %s" % j)
            s, _, j = d.request("POST", step, {"text": "a" * 40, "outputs": "all"})
            self.eq((s, len(j["outputs"])), (200, 40), "40 characters: 200")
            self.eq(d.request("GET", "/v1/sessions/" + sid)[2]["steps"], 40,
                    "only the last stepped")

    def test_work_space(self):
        wide = write_model("wide", {"input": vec(1),
                                    "layers": [layer("lstm", 16384, proj_size=1)]})
        with Daemon({"charlm": CHARLM, "wide": wide}, *SETTINGS, env=env()) as d:
            def long_charlm():
                body = json.dumps({"inputs": [[1] * 65536], "outputs": "last"}).encode()
                s, _, j = d.request("POST", "/v1/models/charlm/infer", raw=body)
                self.eq((s, code_of(j)), (413, "limit_exceeded"), "65,536 steps: 413")
            attack(d, "65,536 steps on charlm", long_charlm, FACTOR * PER_REQUEST + SLACK)

            def wide_model():
                body = json.dumps({"inputs": [[[0.5]] * 1024], "outputs": "last"}).encode()
                s, _, j = d.request("POST", "/v1/models/wide/infer", raw=body)
                self.eq((s, code_of(j)), (413, "limit_exceeded"), "H = 16384: 413")
            attack(d, "1,024 steps, H = 16384, proj 1", wide_model, FACTOR * PER_REQUEST + SLACK)

            s, _, j = d.request("POST", "/v1/models/charlm/infer", {"inputs": [[1, 2, 3]]})
            self.eq(s, 200, "a small infer still answers 200")
            s, _, j = d.request("POST", "/v1/models/wide/infer", {"inputs": [[[0.5]] * 8]})
            self.eq(s, 200, "a short sequence on the wide model answers 200")

    def test_unread_responses(self):
        fat = write_model("fat", {"input": vec(1), "layers": [layer("rnn", 4)],
                                  "head": {"out_dim": 1024, "norm": "none"}})
        body = json.dumps({"inputs": [[[0.5]] * 1000]}).encode()
        with Daemon({"fat": fat}, *SETTINGS, env=env()) as d:
            s, _, j = d.request("POST", "/v1/models/fat/infer", raw=body)
            self.eq(s, 200, "one 1,000-step infer with 1,024 outputs a step answers 200")
            size = len(json.dumps(j))
            print("a response is %.1f MiB" % (size / MIB))
            socks = []

            def flood():
                for _ in range(30):
                    socks.append(raw_request(d.port, "/v1/models/fat/infer", body, rcvbuf=4096))
                time.sleep(3)       # every request parsed, computed or refused by now
            attack(d, "30 clients not reading 11 MB responses", flood, FACTOR * BUDGET + SLACK)
            codes = []
            for s in socks:
                s.settimeout(1)
                try:
                    codes.append(read_status(s))
                except OSError:
                    codes.append(0)
                s.close()
            print("statuses: %s" % sorted(codes))
            self.check(codes.count(429) >= 20, "most of them got 429 (%d)" % codes.count(429))
            self.check(codes.count(200) >= 1, "some got 200 (%d)" % codes.count(200))

    def test_shutdown(self):
        slow = write_model("slow", {"input": vec(1), "layers": [layer("lstm", 1024)]})
        with Daemon({"slow": slow}, "--shutdown-timeout-s", "1", "--max-infer-steps", "1000000",
                    "--max-request-memory", "1G", env=env()) as d:
            # calibrate: a round of STEPS steps that lasts at least 4 s on this machine
            t0 = time.monotonic()
            s, _, _ = d.request("POST", "/v1/models/slow/infer",
                                {"inputs": [[[0.5]] * 200], "outputs": "last"})
            per_step = (time.monotonic() - t0) / 200
            steps = min(200000, max(2000, int(6.0 / max(per_step, 1e-6))))
            body = json.dumps({"inputs": [[[0.5]] * steps], "outputs": "last"}).encode()
            print("shutdown: %.3f ms a step, a round of %d steps (~%.1f s)"
                  % (per_step * 1e3, steps, per_step * steps))
            sock = raw_request(d.port, "/v1/models/slow/infer", body)
            time.sleep(0.5)
            rc, took = d.stop(timeout=30)
            try:
                code = read_status(sock)
            except OSError:
                code = 0
            sock.close()
            print("shutdown took %.1f s, the infer got %d" % (took, code))
            self.eq(rc, 0, "clean exit")
            self.check(took < 3.0, "stopped within shutdown_timeout_s + 2 s (%.1f s)" % took)
            self.eq(code, 503, "the interrupted infer got 503")


if __name__ == "__main__":
    unittest.main()
