"""`rnnd serve` end to end over real sockets: every endpoint, every error status with its JSON
body, session semantics (step, reset, fork, export/import, if_steps, TTL and 410, max_sessions
with 429 and with LRU eviction), and graceful shutdown on SIGTERM (503 while draining,
in-flight requests finish, exit 0 in time).

Models are golden cases converted with rnnd_convert; expected values come from the cases
(PyTorch / the ONNX reference), never from rnnd itself.
Each check is a unittest case; a failing case fails the run.
"""
import json
import re
import socket
import time
import unittest

from daemon_util import Case, Daemon, close, golden_cases, golden_model, require, tmpdir

WORK = tmpdir("http_api")
CASES = {name: (case, onnx) for name, case, onnx in golden_cases()}
MODELS = {n: golden_model(n, WORK) for n in ("lstm_vectors", "gru2_tokens_head",
                                             "lstm_bidir_vectors")}


def state_floats_from_arch(arch):
    """Session state size from the architecture (docs/model-format.md), independently."""
    n = 0
    for layer in arch["layers"]:
        dirs = 2 if layer["direction"] == "bidirectional" else 1
        h = layer["hidden_size"]
        out = layer.get("proj_size") or h
        if layer["type"] == "jordan":
            out = layer["output_size"]
        n += dirs * (out + (h if layer["type"] == "lstm" else 0))
    return n


def step(d, sid, inputs, **extra):
    return d.request("POST", "/v1/sessions/%s/step" % sid, dict(inputs=inputs, **extra))


class ApiCase(Case):
    """What the tests below share."""

    def new_session(self, d, model, **extra):
        st, hdrs, body = d.request("POST", "/v1/sessions", dict(model=model, **extra))
        self.eq(st, 201, "create session on " + model)
        self.check(re.fullmatch(r"[0-9a-f]{32}", body.get("id", "")) is not None, "session id")
        self.eq(hdrs.get("location"), "/v1/sessions/" + body["id"], "Location header")
        return body["id"]


class Api(ApiCase):
    """One daemon serving the golden models of MODELS."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(MODELS)
        cls.addClassCleanup(cls.stop_logged)

    @classmethod
    def stop_logged(cls):
        rc, took = cls.d.stop()
        require(rc == 0, "exit status after SIGTERM: got %r" % rc)
        require(any("event=stopped" in line for line in cls.d.log), "logged event=stopped")

    def test_models(self):
        d = self.d
        st, _, body = d.request("GET", "/healthz")
        self.eq(st, 200, "GET /healthz")
        st, _, body = d.request("GET", "/readyz")
        self.eq(st, 200, "GET /readyz")
        st, _, body = d.request("GET", "/v1/models")
        self.eq(st, 200, "GET /v1/models")
        names = sorted(m["name"] for m in body["models"])
        self.eq(names, sorted(MODELS), "model names")
        for m in body["models"]:
            case = CASES[m["name"]][0]
            self.eq(m["input_kind"], case["input"]["kind"], m["name"] + " input_kind")
            if case["input"]["kind"] == "tokens":
                self.eq(m["vocab_size"], case["input"]["vocab"], m["name"] + " vocab_size")
            else:
                self.eq(m["input_dim"], case["input"]["dim"], m["name"] + " input_dim")
            self.eq(m["output_dim"], len(case["expected"][0][0]), m["name"] + " output_dim")
            self.eq(m["stateful"], case["stateful"], m["name"] + " stateful")
            self.check(re.fullmatch(r"[0-9a-f]{64}", m["digest"]) is not None,
                       m["name"] + " digest")
            st, _, detail = d.request("GET", "/v1/models/" + m["name"])
            self.eq(st, 200, "GET /v1/models/" + m["name"])
            want = state_floats_from_arch(detail["architecture"])
            self.eq(detail["state_bytes"], 4 * want, m["name"] + " state_bytes")
            self.eq(detail["digest"], m["digest"], m["name"] + " digest in detail")
            self.eq(m["weights"], detail["architecture"].get("weights", "f32"),
                    m["name"] + " weights")
            self.eq(len(detail["layer_types"]), len(detail["architecture"]["layers"]),
                    m["name"] + " layers")
        self.error(d.request("GET", "/v1/models/nope"), 404, "not_found", "unknown model")
        self.error(d.request("POST", "/v1/models/nope/infer", {"inputs": [[1]]}), 404, "not_found",
                   "infer on unknown model")

    def test_infer(self):
        d = self.d
        for name in MODELS:
            case = CASES[name][0]
            st, _, body = d.request("POST", "/v1/models/%s/infer" % name,
                                    {"inputs": case["sequences"]})
            self.eq(st, 200, "infer " + name)
            self.check(close(body["outputs"], case["expected"], case["atol"], case["rtol"]),
                       "infer %s matches the golden expectation" % name)
            st, _, last = d.request("POST", "/v1/models/%s/infer" % name,
                                    {"inputs": case["sequences"], "outputs": "last",
                                     "return_state": True})
            self.eq(st, 200, "infer last " + name)
            self.eq(last["outputs"], [o[-1] for o in body["outputs"]], "infer last = last of all")
            self.eq(len(last["states"]), len(case["sequences"]), "infer states")

    def test_sessions(self):
        d = self.d
        case = CASES["lstm_vectors"][0]
        seq = case["sequences"][2]     # 11 steps
        exp_out = case["expected"][2]
        sid = self.new_session(d, "lstm_vectors", ttl_s=120)
        st, _, info = d.request("GET", "/v1/sessions/" + sid)
        self.eq(st, 200, "GET session")
        self.eq((info["id"], info["model"], info["steps"], info["ttl_s"]),
                (sid, "lstm_vectors", 0, 120),
                "session info")
        self.check(0 <= info["idle_s"] < 60 and 60 < info["expires_in"] <= 120, "idle/expires_in")

        # stepping matches the golden expectation; "last" gives only the last output
        st, _, r1 = step(d, sid, seq[:3])
        self.eq(st, 200, "step 3")
        self.eq(r1["steps"], 3, "steps after 3")
        self.check(close(r1["outputs"], exp_out[:3], case["atol"], case["rtol"]),
                   "session outputs match golden")
        st, _, r2 = step(d, sid, seq[3:5], outputs="last")
        self.eq(r2["steps"], 5, "steps after 5")
        self.check(close(r2["outputs"], exp_out[4], case["atol"], case["rtol"]),
                   "outputs=last is the last step's vector")

        # if_steps: a mismatch is refused with the current count and changes nothing
        resp = step(d, sid, seq[5:6], if_steps=3)
        self.error(resp, 409, "conflict", "if_steps mismatch")
        self.eq(resp[2]["error"].get("steps"), 5, "409 carries the current step count")
        st, _, r3 = step(d, sid, seq[5:6], if_steps=5)
        self.eq((st, r3["steps"]), (200, 6), "if_steps match")
        self.check(close(r3["outputs"], exp_out[5:6], case["atol"], case["rtol"]),
                   "state untouched by the refused request")

        # export -> import into a new session continues bit-exactly
        st, _, exp = d.request("GET", "/v1/sessions/%s/state" % sid)
        self.eq(st, 200, "export state")
        self.eq((exp["model"], exp["steps"], exp["id"]), ("lstm_vectors", 6, sid), "export fields")
        sid2 = self.new_session(d, "lstm_vectors")
        st, _, imp = d.request("PUT", "/v1/sessions/%s/state" % sid2, exp)
        self.eq((st, imp["steps"]), (200, 6), "import state")
        st, _, a = step(d, sid, seq[6:8])
        st, _, b = step(d, sid2, seq[6:8])
        self.eq(a["outputs"], b["outputs"], "imported session continues bitwise")
        self.eq(b["steps"], 8, "imported step count continues")

        # digest mismatch is refused
        other = self.new_session(d, "gru2_tokens_head")
        self.error(d.request("PUT", "/v1/sessions/%s/state" % other, exp), 409, "conflict",
                   "import with another model's digest")
        bad = dict(exp, digest="0" * 64)
        self.error(d.request("PUT", "/v1/sessions/%s/state" % sid2, bad), 409, "conflict",
                   "import with a wrong digest")

        # a fork keeps its parent's ttl_s unless it gives its own
        st, _, p = d.request("POST", "/v1/sessions", {"model": "lstm_vectors", "ttl_s": 120})
        st, _, f1 = d.request("POST", "/v1/sessions/%s/fork" % p["id"])
        st2, _, f2 = d.request("POST", "/v1/sessions/%s/fork" % p["id"], {"ttl_s": 30})
        self.eq((st, f1.get("ttl_s"), st2, f2.get("ttl_s")), (201, 120, 201, 30),
                "a fork inherits the parent's ttl_s (120), or takes its own (30)")
        for x in (p, f1, f2):
            d.request("DELETE", "/v1/sessions/" + x["id"])
        # fork: two independent sessions from one state
        st, hdrs, fk = d.request("POST", "/v1/sessions/%s/fork" % sid)
        self.eq((st, fk["steps"], fk["parent"]), (201, 8, sid), "fork")
        st, _, ref = d.request("POST", "/v1/models/lstm_vectors/infer",
                               {"inputs": [seq[:8] + [seq[8]], seq[:8] + [seq[0]]]})
        st, _, fa = step(d, sid, [seq[8]])
        st, _, fb = step(d, fk["id"], [seq[0]])
        self.check(close(fa["outputs"][0], ref["outputs"][0][8], 1e-6, 1e-5),
                   "fork parent continues")
        self.check(close(fb["outputs"][0], ref["outputs"][1][8], 1e-6, 1e-5),
                   "fork child independent")
        self.check(fa["outputs"] != fb["outputs"], "fork outputs differ for different inputs")

        # reset: zero state, steps 0; the same inputs then give the first outputs again
        st, _, rs = d.request("POST", "/v1/sessions/%s/reset" % sid)
        self.eq((st, rs["steps"]), (200, 0), "reset")
        st, _, again = step(d, sid, seq[:3])
        self.eq(again["outputs"], r1["outputs"], "after reset the outputs repeat bitwise")
        # reset to a given state (the export) then the continuation matches the import
        st, _, rs = d.request("POST", "/v1/sessions/%s/reset" % sid,
                              {"state": exp["state"], "digest": exp["digest"]})
        self.eq(st, 200, "reset to a state")
        st, _, c2 = step(d, sid, seq[6:8])
        self.eq(c2["outputs"], a["outputs"], "reset to exported state continues bitwise")

        # create with an initial state
        sid3 = self.new_session(d, "lstm_vectors", state=exp["state"], digest=exp["digest"])
        st, _, c3 = step(d, sid3, seq[6:8])
        self.eq(c3["outputs"], a["outputs"], "create with state continues bitwise")

        # tokens model
        gcase = CASES["gru2_tokens_head"][0]
        gsid = self.new_session(d, "gru2_tokens_head")
        st, _, g = step(d, gsid, gcase["sequences"][0])
        self.check(st == 200 and close(g["outputs"], gcase["expected"][0], gcase["atol"],
                                    gcase["rtol"]), "token session matches golden")

        # a model with bidirectional layers cannot have sessions
        self.error(d.request("POST", "/v1/sessions", {"model": "lstm_bidir_vectors"}), 409,
                   "unsupported", "session on a bidirectional model")

        # list, paged
        st, _, lst = d.request("GET", "/v1/sessions?limit=2")
        self.eq(st, 200, "list sessions")
        ids, pages = [], 0
        after = ""
        while pages < 20:
            st, _, page = d.request("GET", "/v1/sessions?limit=2" + ("&after=" + after if after
                                                                       else ""))
            pages += 1
            ids += [s["id"] for s in page["sessions"]]
            self.check(len(page["sessions"]) <= 2, "page size")
            if not page["next"]:
                break
            after = page["next"]
        created = {sid, sid2, other, fk["id"], sid3, gsid}
        self.eq(set(ids), created, "paging lists every session once")
        self.eq(len(ids), len(created), "no session listed twice")
        self.eq(ids, sorted(ids), "sessions listed in id order")
        st, _, only = d.request("GET", "/v1/sessions?model=gru2_tokens_head")
        self.eq(sorted(s["id"] for s in only["sessions"]), sorted([other, gsid]), "list by model")

        # delete
        st, _, _ = d.request("DELETE", "/v1/sessions/" + sid3)
        self.eq(st, 204, "DELETE session")
        self.error(d.request("GET", "/v1/sessions/" + sid3), 404, "not_found", "deleted session")
        self.error(d.request("DELETE", "/v1/sessions/" + sid3), 404, "not_found", "delete twice")
        self.error(step(d, sid3, seq[:1]), 404, "not_found", "step a deleted session")

    def test_steps_bound(self):
        # a session counts at most 2^63-1 steps (the range import, if_steps and every reply
        # use): a step that would pass it is refused and changes nothing (trial 22, 5)
        d = self.d
        seq = CASES["lstm_vectors"][0]["sequences"][2]
        sid = self.new_session(d, "lstm_vectors")
        st, _, exp = d.request("GET", "/v1/sessions/%s/state" % sid)
        self.eq(st, 200, "export")
        exp["steps"] = 2 ** 63 - 2
        self.eq(d.request("PUT", "/v1/sessions/%s/state" % sid, exp)[0], 200, "import")
        self.error(step(d, sid, seq[:2]), 409, "conflict", "two steps past the top")
        st, _, r = step(d, sid, seq[:1])
        self.eq((st, r["steps"]), (200, 2 ** 63 - 1), "the last step that fits")
        st, _, b = step(d, sid, seq[:1])
        self.error((st, _, b), 409, "conflict", "one step past the top")
        self.check("9223372036854775807" in b["error"]["message"], "the message names the top")
        self.eq(d.request("GET", "/v1/sessions/" + sid)[2]["steps"], 2 ** 63 - 1, "unchanged")

    def test_http_errors(self):
        d = self.d
        st, hdrs, body = d.request("PATCH", "/v1/sessions")
        self.error((st, hdrs, body), 405, "method_not_allowed", "PATCH /v1/sessions")
        self.eq(hdrs.get("allow"), "GET, HEAD, POST", "Allow header")
        st, hdrs, _ = d.request("DELETE", "/v1/models")
        self.eq((st, hdrs.get("allow")), (405, "GET, HEAD"), "DELETE /v1/models")
        self.error(d.request("GET", "/v1/sessions/x/step"), 405, "method_not_allowed", "GET step")
        self.error(d.request("GET", "/nope"), 404, "not_found", "unknown path")
        self.error(d.request("POST", "/v1/sessions", raw=b'{"model":"lstm_vectors"}',
                          headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type",
                   "text/plain body")
        st, hdrs, body = d.request("HEAD", "/v1/models")
        self.eq((st, body), (200, None), "HEAD has no body")


class OwnDaemon(ApiCase):
    """Settings and behaviours that need a daemon of their own."""

    def test_cli(self):
        """`rnnd serve --help`, --print-config, and start-up failures."""
        import os
        import subprocess
        from daemon_util import RNND_BIN
        p = subprocess.run([RNND_BIN, "serve", "--help"], capture_output=True, text=True,
                           timeout=30)
        self.eq(p.returncode, 0, "serve --help exit status")
        conf = os.path.join(os.environ["RNND_SRCDIR"], "conf", "rnnd.conf")
        keys = re.findall(r"^# (\w+) =", open(conf).read(), re.M)
        self.check(len(keys) >= 20, "conf/rnnd.conf documents the settings")
        for k in keys:
            self.check("--" + k.replace("_", "-") + " " in p.stdout, "--help lists " + k)
        # docs/api.md's settings table lists every key with the default the conf file gives
        conf_defaults = dict(re.findall(r"^# (\w+) = ?(.*)$", open(conf).read(), re.M))
        api = open(os.path.join(os.environ["RNND_SRCDIR"], "docs", "api.md")).read()
        table = api.split("### 4.9 Settings", 1)[1]
        doc = {k: ("" if v in ("(empty)", "(none)") else v.strip("`"))
               for k, v in re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", table, re.M)}
        self.eq(doc, conf_defaults, "docs/api.md settings table = conf/rnnd.conf defaults")
        p = subprocess.run([RNND_BIN, "serve", "--print-config", "--max-batch", "7"],
                           capture_output=True, text=True, timeout=30)
        self.check(p.returncode == 0 and "max_batch = 7\n" in p.stdout, "--print-config")
        p = subprocess.run([RNND_BIN, "serve", "--max-batch", "0"], capture_output=True,
                           text=True, timeout=30)
        self.check(p.returncode == 2 and "max_batch" in p.stderr, "bad setting: exit 2 naming it")
        p = subprocess.run([RNND_BIN, "serve", "--listen", "127.0.0.1:0", "--model",
                            "x=/nonexistent/x.rnnd"], capture_output=True, text=True, timeout=30)
        self.check(p.returncode == 1 and "/nonexistent/x.rnnd" in p.stderr,
                   "missing model file: exit 1 naming it")
        # --models DIR loads every *.rnnd by its stem; a name given twice stops start-up
        with Daemon({}, "--models", WORK) as d:
            st, _, body = d.request("GET", "/v1/models")
            self.eq(sorted(m["name"] for m in body["models"]), sorted(MODELS),
                    "--models DIR names")
            d.stop()
        p = subprocess.run([RNND_BIN, "serve", "--listen", "127.0.0.1:0", "--models", WORK,
                            "--model", "lstm_vectors=" + MODELS["lstm_vectors"]],
                           capture_output=True, text=True, timeout=30)
        self.check(p.returncode == 1 and "already used" in p.stderr,
                   "duplicate model name: exit 1")
        # --config FILE, and a flag overriding it
        cfg = os.path.join(WORK, "test.conf")
        with open(cfg, "w") as f:
            f.write("# test\nmax_sessions = 1\nretry_after_s = 9\n")
        with Daemon({"m": MODELS["lstm_vectors"]}, "--config", cfg, "--retry-after-s", 4) as d:
            self.eq(d.request("POST", "/v1/sessions", {"model": "m"})[0], 201, "--config: first")
            st, hdrs, _ = d.request("POST", "/v1/sessions", {"model": "m"})
            self.eq((st, hdrs.get("retry-after")), (429, "4"), "--config max_sessions, flag wins")
            d.stop()
        with Daemon({"m": MODELS["lstm_vectors"]}) as d:
            p = subprocess.run([RNND_BIN, "serve", "--listen", "127.0.0.1:%d" % d.port],
                               capture_output=True, text=True, timeout=30)
            self.check(p.returncode == 1 and "cannot listen" in p.stderr, "port in use: exit 1")
            d.stop()

    def test_limits(self):
        with Daemon({"m": MODELS["lstm_vectors"]}, "--max-body-bytes", "2K", "--max-sessions", 3,
                    "--max-steps-per-request", 4, "--retry-after-s", 7) as d:
            big = {"inputs": [[0.0, 0.0, 0.0, 0.0]] * 200}
            self.error(d.request("POST", "/v1/models/m/infer", big), 413, "limit_exceeded",
                       "body over max_body_bytes")
            sids = [self.new_session(d, "m") for _ in range(3)]
            st, hdrs, body = d.request("POST", "/v1/sessions", {"model": "m"})
            self.error((st, hdrs, body), 429, "overloaded", "max_sessions reached")
            self.eq(hdrs.get("retry-after"), "7", "Retry-After")
            self.error(step(d, sids[0], [[0, 0, 0, 0]] * 5), 413, "limit_exceeded",
                       "max_steps_per_request")
            d.request("DELETE", "/v1/sessions/" + sids[1])
            st, _, _ = d.request("POST", "/v1/sessions", {"model": "m"})
            self.eq(st, 201, "room again after a delete")
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")

    def test_lru(self):
        with Daemon({"m": MODELS["lstm_vectors"]}, "--max-sessions", 2, "--session-evict",
                    "lru") as d:
            a = self.new_session(d, "m")
            b = self.new_session(d, "m")
            time.sleep(0.01)
            step(d, a, [[1, 2, 3, 4]])      # a is now more recently used than b
            c = self.new_session(d, "m")
            self.error(d.request("GET", "/v1/sessions/" + b), 410, "gone",
                       "evicted session is gone")
            self.error(step(d, b, [[1, 2, 3, 4]]), 410, "gone", "step an evicted session")
            self.eq(d.request("GET", "/v1/sessions/" + a)[0], 200, "recently used session kept")
            self.eq(d.request("GET", "/v1/sessions/" + c)[0], 200, "new session there")
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")

    def test_ttl(self):
        with Daemon({"m": MODELS["lstm_vectors"]}, "--tombstone-s", 1, "--session-ttl-max-s",
                    100, "--session-ttl-s", 60) as d:
            self.error(d.request("POST", "/v1/sessions", {"model": "m", "ttl_s": 101}), 400,
                       "invalid_request", "ttl_s above session_ttl_max_s")
            sid = self.new_session(d, "m", ttl_s=1)
            keep = self.new_session(d, "m")
            self.eq(step(d, sid, [[1, 2, 3, 4]])[0], 200, "step before expiry")
            time.sleep(1.2)
            self.error(d.request("GET", "/v1/sessions/" + sid), 410, "gone",
                       "expired session: 410")
            self.error(step(d, sid, [[1, 2, 3, 4]]), 410, "gone", "step an expired session: 410")
            self.eq(d.request("GET", "/v1/sessions/" + keep)[0], 200, "default ttl still alive")
            time.sleep(1.2)
            self.error(d.request("GET", "/v1/sessions/" + sid), 404, "not_found",
                       "after tombstone_s: 404")
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")

    def test_shutdown(self):
        with Daemon({"m": MODELS["lstm_vectors"]}, "--shutdown-timeout-s", 5) as d:
            keep = d.conn()
            self.eq(d.request("GET", "/readyz", conn=keep)[0], 200, "ready before")
            # a request in flight: headers and half the body sent
            body = json.dumps({"model": "m"}).encode()
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
            time.sleep(0.3)
            t0 = time.monotonic()
            d.proc.send_signal(15)
            time.sleep(0.3)
            self.check(d.alive(), "still running while a request is in flight")
            self.error(d.request("GET", "/readyz", conn=keep), 503, "unavailable",
                       "readyz while draining")
            s.sendall(body[5:])
            resp = b""
            while b"\r\n\r\n" not in resp or not resp.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                resp += chunk
            s.close()
            self.check(resp.startswith(b"HTTP/1.1 201"),
                       "in-flight request finished: %r" % resp[:40])
            try:
                rc = d.proc.wait(10)
            except Exception:
                rc = None
            self.eq(rc, 0, "exit status after SIGTERM")
            self.check(time.monotonic() - t0 < 5, "exited before shutdown_timeout_s")
            keep.close()
        # a request that never completes does not hold the daemon past shutdown_timeout_s
        with Daemon({"m": MODELS["lstm_vectors"]}, "--shutdown-timeout-s", 1) as d:
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.2)
            rc, took = d.stop()
            self.eq(rc, 0, "exit status with a stuck request")
            self.check(took < 4, "stuck request: exited in %.1f s" % took)
            s.close()


if __name__ == "__main__":
    unittest.main()
