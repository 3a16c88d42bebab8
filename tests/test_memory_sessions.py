"""The memory budget on the routes besides infer (docs/security.md, "Memory"): session steps
(the scanned and the JSON body), v2 infer in a sequence, generation (v1 on a model and on a
session, v2, streamed or not) and state export each charge what they will hold before they
allocate it, and keep it until their reply is sent. Each attack runs against a daemon with
small settings and measures the daemon's peak RSS (VmHWM) as tests/test_memory.py does:
- one step request of 4,096 steps whose reply would be ~170 MB (4,096 outputs a step);
- the same steps as a v2 infer in a sequence (sequence_id), refused as stateless infer is;
- 20 keep-alive clients that never read the replies of 1,000-step requests (~48 MB each):
  RSS stays near memory_budget, the rest get 429 (and a v2 sequence request 503);
- generations of 5,000,000 tokens (max_generate_tokens raised to allow them);
- a state export whose text (131,074 floats) passes max_request_memory (1M).
Prints each peak. Each attack is a test, runnable alone.
"""
import http.client
import json
import os
import socket
import time
import unittest

import daemon_util
from daemon_util import FACTOR, MIB, SLACK, Case, Daemon, code_of, contract_check, tmpdir
from daemon_util import RUNNING as C
from daemon_util import asan_env as env

WORK = tmpdir("memory_sessions")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
PER_REQUEST = 48 * MIB
SMALL = ["--max-request-memory", "48M", "--memory-budget", "128M", "--max-body-bytes", "4M",
         "--workers", "2", "--http-threads", "4"]


def write_model(name, arch, seed=1):
    return daemon_util.write_model(WORK, name, arch, seed)


attack = daemon_util.attack


def wide_out():
    """4,096 outputs a step from a cheap cell: the reply, not the compute, is the cost."""
    return write_model("wide_out", {"input": {"kind": "vectors", "dim": 1},
                                    "layers": [{"type": "rnn", "hidden_size": 4,
                                                "direction": "forward"}],
                                    "head": {"out_dim": 4096, "norm": "none"}})


def request(d, method, path, body=None, timeout=20, raw=None):
    """A request with a deadline for the whole reply, a stream's included: (status, headers,
    parsed body), or (0, {}, why) when no reply came, or (status, headers, why) when the
    reply was still coming at the deadline (the connection is then closed)."""
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    try:
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        payload = b""
        while True:
            if time.monotonic() > deadline:
                return resp.status, hdrs, "still sending after %d s" % timeout
            chunk = resp.read1(65536)
            if not chunk:
                break
            payload += chunk
    except (OSError, http.client.HTTPException) as exc:
        return 0, {}, "no answer in %d s (%s)" % (timeout, type(exc).__name__)
    finally:
        conn.close()
    contract_check(method, path, resp.status, hdrs, payload)
    if hdrs.get("content-type", "").startswith("application/json") and payload:
        return resp.status, hdrs, json.loads(payload)
    return resp.status, hdrs, payload.decode(errors="replace")


def post_raw(d, path, body, timeout=20):
    return request(d, "POST", path, raw=body, timeout=timeout)


def refused(got, v2, what):
    """GOT is the budget's refusal: 413 limit_exceeded (v1) or Triton's 400 (v2), naming
    max_request_memory."""
    s, _, j = got
    if v2:
        C.check(s == 400 and "max_request_memory" in str(j),
                "%s: 400 naming max_request_memory (%s %s)" % (what, s, str(j)[:160]))
    else:
        C.check((s, code_of(j)) == (413, "limit_exceeded") and "max_request_memory" in str(j),
                "%s: 413 limit_exceeded naming max_request_memory (%s %s)"
                % (what, s, str(j)[:160]))


def new_session(d, model):
    s, _, j = d.request("POST", "/v1/sessions", {"model": model})
    C.eq(s, 201, "session on %s created" % model)
    return j["id"]


def v2_body(steps, seq=None):
    b = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, steps, 1],
                     "data": [0.5] * steps}]}
    if seq is not None:
        b["parameters"] = {"sequence_id": seq, "sequence_start": True}
    return b


class MemorySessions(Case):
    """Each attack against its own daemon with small settings."""

    def test_one_step_request(self):
        with Daemon({"wide": wide_out()}, *SMALL, env=env()) as d:
            sid = new_session(d, "wide")
            steps = [[0.5]] * 4096
            scanned = json.dumps({"inputs": steps}).encode()    # the scanner's shape
            print("a 4,096-step body is %.1f KB" % (len(scanned) / 1024))

            def scan():
                refused(post_raw(d, "/v1/sessions/%s/step" % sid, scanned), False,
                        "4,096 steps, scanned body")
            attack(d, "4,096 steps x 4,096 outputs (scanned)", scan, FACTOR * PER_REQUEST + SLACK)

            def decoded():
                refused(request(d, "POST", "/v1/sessions/%s/step" % sid,
                                {"inputs": steps, "logits": True}), False,
                        "4,096 steps, decoded body")
            attack(d, "4,096 steps x 4,096 outputs (JSON)", decoded, FACTOR * PER_REQUEST + SLACK)

            s, _, j = request(d, "GET", "/v1/sessions/%s" % sid)
            self.eq((s, j.get("steps") if isinstance(j, dict) else None), (200, 0),
                    "the refused steps changed nothing")

            def last_only():
                s, _, j = request(d, "POST", "/v1/sessions/%s/step" % sid,
                                  {"inputs": steps, "outputs": "last"})
                self.eq((s, j.get("steps") if isinstance(j, dict) else None), (200, 4096),
                        "4,096 steps with outputs last: 200 (%s)" % str(j)[:160])
            attack(d, "4,096 steps, outputs last", last_only, FACTOR * PER_REQUEST + SLACK)

            s, _, j = request(d, "POST", "/v1/sessions/%s/step" % sid, {"inputs": [[0.5]] * 8})
            self.eq(s, 200, "8 steps answer 200")

    def test_v2_sequence(self):
        with Daemon({"wide": wide_out()}, *SMALL, env=env()) as d:
            def stateless():
                refused(request(d, "POST", "/v2/models/wide/infer", v2_body(4096)), True,
                        "v2 stateless 4,096 steps")
            attack(d, "v2 infer 4,096 steps x 4,096 outputs", stateless,
                   FACTOR * PER_REQUEST + SLACK)

            def sequence():
                refused(request(d, "POST", "/v2/models/wide/infer", v2_body(4096, seq=7)), True,
                        "v2 sequence 4,096 steps")
            attack(d, "v2 sequence 4,096 steps x 4,096 outputs", sequence,
                   FACTOR * PER_REQUEST + SLACK)

            s, _, j = request(d, "POST", "/v2/models/wide/infer", v2_body(8, seq=8))
            self.eq(s, 200, "a short sequence request answers 200 (%s)" % str(j)[:120])

    def test_unread_steps(self):
        body = json.dumps({"inputs": [[0.5]] * 1000}).encode()
        budget = 256 * MIB
        with Daemon({"wide": wide_out()}, "--max-request-memory", "96M", "--memory-budget", "256M",
                    "--workers", "2", "--http-threads", "4", env=env()) as d:
            sids = [new_session(d, "wide") for _ in range(20)]
            s, _, j = post_raw(d, "/v1/sessions/%s/step" % sids[0], body)
            self.eq(s, 200, "one 1,000-step request answers 200")
            print("a reply is %.1f MiB" % (len(json.dumps(j)) / MIB))
            socks = []

            def flood():
                for sid in sids:
                    sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    sk.settimeout(30)
                    sk.connect(("127.0.0.1", d.port))
                    sk.sendall(b"POST /v1/sessions/%s/step HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                               % (sid.encode(), len(body)) + body)
                    socks.append(sk)
                time.sleep(4)       # every request parsed, computed or refused by now
            attack(d, "20 clients not reading 1,000-step replies", flood,
                   FACTOR * budget + SLACK)
            # the unread replies hold the budget: more of the same waits, on v1 and on v2
            s, h, j = post_raw(d, "/v1/sessions/%s/step" % new_session(d, "wide"), body)
            self.check((s, code_of(j)) == (429, "overloaded") and "retry-after" in h,
                       "a step while the budget is held: 429 overloaded with Retry-After (%s %s)"
                       % (s, str(j)[:120]))
            s, h, j = request(d, "POST", "/v2/models/wide/infer", v2_body(1000, seq=9))
            self.check(s == 503 and "retry-after" in h and "memory_budget" in str(j),
                       "a v2 sequence request while the budget is held: 503 with Retry-After "
                       "(%s %s)" % (s, str(j)[:120]))
            codes = []
            for sk in socks:
                sk.settimeout(2)
                data = b""
                try:
                    while b"\r\n" not in data:
                        chunk = sk.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                codes.append(int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else 0)
                sk.close()
            print("statuses: %s" % sorted(codes))
            self.check(codes.count(429) >= 10, "most of them got 429 (%d)" % codes.count(429))
            self.check(codes.count(200) >= 1, "some got 200 (%d)" % codes.count(200))

    def test_generate(self):
        huge = 5000000
        with Daemon({"charlm": CHARLM}, *SMALL, "--max-generate-tokens", str(huge),
                    env=env()) as d:
            sid = new_session(d, "charlm")
            cases = [
                ("v1 model generate", "/v1/models/charlm/generate",
                 {"prompt": "hello", "max_tokens": huge}, False),
                ("v1 model generate, stream", "/v1/models/charlm/generate",
                 {"prompt": "hello", "max_tokens": huge, "stream": True}, False),
                ("session generate", "/v1/sessions/%s/generate" % sid,
                 {"prompt": "hello", "max_tokens": huge}, False),
                ("session generate, stream", "/v1/sessions/%s/generate" % sid,
                 {"prompt": "hello", "max_tokens": huge, "stream": True}, False),
                ("v2 generate", "/v2/models/charlm/generate",
                 {"text_input": "hello", "max_tokens": huge}, True),
                ("v2 generate_stream", "/v2/models/charlm/generate_stream",
                 {"text_input": "hello", "max_tokens": huge}, True),
            ]
            for name, path, body, v2 in cases:
                def one():
                    refused(request(d, "POST", path, body, timeout=8), v2, name)
                attack(d, "%s of %d tokens" % (name, huge), one, FACTOR * PER_REQUEST + SLACK)
            s, _, j = request(d, "GET", "/v1/sessions/%s" % sid)
            self.eq((s, j.get("steps") if isinstance(j, dict) else None), (200, 0),
                    "the refused generations fed nothing")
            s, _, j = request(d, "POST", "/v1/sessions/%s/generate" % sid,
                              {"prompt": "hello", "max_tokens": 16, "seed": 1})
            self.eq((s, j.get("usage", {}).get("completion_tokens")
                     if isinstance(j, dict) else None),
                    (200, 16), "a 16-token generation answers 200")

    def test_export(self):
        big = write_model("big_state", {"input": {"kind": "vectors", "dim": 1},
                                        "layers": [{"type": "lstm", "hidden_size": 65536,
                                                    "proj_size": 1, "direction": "forward"}] * 2})
        with Daemon({"big": big}, "--max-request-memory", "1M", "--memory-budget", "128M",
                    env=env()) as d:
            sid = new_session(d, "big")
            s, _, j = request(d, "POST", "/v1/sessions/%s/step" % sid, {"inputs": [[0.5]]})
            self.eq(s, 200, "a step of the 131,074-float state answers 200 (%s)" % str(j)[:120])

            def export():
                refused(request(d, "GET", "/v1/sessions/%s/state" % sid), False,
                        "export of 131,074 floats at max_request_memory 1M")
            attack(d, "state export of 131,074 floats", export, FACTOR * 1 * MIB + SLACK)
        with Daemon({"big": big}, "--max-request-memory", "8M", env=env()) as d:
            sid = new_session(d, "big")
            s, _, j = request(d, "GET", "/v1/sessions/%s/state" % sid)
            self.eq(s, 200, "the same export at max_request_memory 8M answers 200")


if __name__ == "__main__":
    unittest.main()
