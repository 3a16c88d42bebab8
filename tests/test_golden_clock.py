"""The Clockwork RNN golden cases (tests/data/golden_clock, issue 16), on every SIMD path this
CPU runs (daemon_util.available_isas):

- their stored numbers recomputed by the case generator's own float64 reference;
- `rnnd infer`: every output and final h within the case's tolerance, and each clockwork
  layer's final counter `t` exactly the sequence's length; a sequence cut in two, the second
  half started from the first half's returned state, gives bitwise the outputs of the whole
  (the counter carries over: the modules run at the same steps);
- sessions: each sequence fed in random chunks, concurrently with sessions of the other cases
  and of noise (so batched rows have different counters), its state exported part way and
  continued in a new session created from the export, then forked part way and continued in
  the fork; every output bitwise equal to `rnnd infer`'s and the export's `t` equal to the
  steps taken;
- a daemon stopped and restarted with a state_dir continues a session exactly;
- every bad counter in an imported state is refused with a clear 400 and changes nothing;
- `rnnd bench --cell clockwork` and `rnnd inspect --json` (the periods);
- the reference PyTorch module (tools/rnnd_modules/clockwork.py) converted by
  `rnnd_convert.from_module`: rnnd infer gives its outputs, final h and counters, also from a
  state whose rows have different counters; what it keeps below R's block diagonal is left
  out of the file.
"""
import functools
import hashlib
import hmac
import json
import os
import random
import shutil
import struct
import subprocess
import threading
import unittest
import zlib

import daemon_util
from daemon_util import (PYTHON3, RNND_BIN, Case, Daemon, available_isas, check_generator, close,
                         convert_case, data_cases, infer_on, run_concurrently, tmpdir)
from daemon_util import RUNNING as C

HERE = os.path.dirname(os.path.abspath(__file__))
CLOCK_DIR = os.path.join(HERE, "data", "golden_clock")
WORK = tmpdir("golden_clock")
rng = random.Random(1616)


def infer(model, req, isa):
    return infer_on(model, req, isa)


@functools.lru_cache(maxsize=None)
def fixtures():
    """(cases, converted models), made once (in setUpClass, where a failed check is the
    class's error)."""
    cs = data_cases(CLOCK_DIR)
    C.check(len(cs) >= 3, "golden_clock cases: %s" % sorted(cs))
    return cs, {name: convert_case(CLOCK_DIR, name, c, WORK, "-q") for name, c in cs.items()}


def check_infer(name, case, model, isa):
    """The case through `rnnd infer`; its outputs (for the sessions to equal), or None."""
    r = infer(model, {"inputs": case["sequences"], "return_state": True}, isa)
    if r is None:
        return None
    for b, seq in enumerate(case["sequences"]):
        what = "%s seq %d infer [%s]" % (name, b, isa)
        C.check(close(r["outputs"][b], case["expected"][b], case["atol"], case["rtol"]),
                what + ": outputs outside the tolerance of the expectation")
        layers = r["states"][b]["layers"]
        for l, L in enumerate(layers):
            C.check(close(L["h"][0], case["final_h"][b][l], case["atol"], case["rtol"]),
                    "%s: final h of layer %d" % (what, l))
            C.eq(L.get("t"), None if case["final_t"][b][l] is None else [len(seq)],
                 "%s: final t of layer %d" % (what, l))
    # the first sequence in two halves: the second from the first's state
    seq = case["sequences"][0]
    cut = len(seq) // 2 + 3     # not a multiple of any period
    a = infer(model, {"inputs": [seq[:cut]], "return_state": True}, isa)
    b = a and infer(model, {"inputs": [seq[cut:]], "initial_state": a["states"],
                            "digest": a["digest"]}, isa)
    if b:
        C.check(a["outputs"][0] + b["outputs"][0] == r["outputs"][0],
                "%s infer [%s]: cut at %d and continued from the returned state differs "
                "bitwise from the whole sequence" % (name, isa, cut))
    return r["outputs"]


def drive(d, model, seq, what, got, errors):
    """Feed SEQ to a session of MODEL in random chunks; export part way and continue in a
    new session created from the export, fork later and continue in the fork."""
    r = random.Random(zlib.crc32(what.encode()))
    st, _, body = d.request("POST", "/v1/sessions", {"model": model})
    if st != 201:
        errors.append("%s: open: %d %r" % (what, st, body))
        return
    sid = body["id"]
    cut = r.randint(1, max(1, len(seq) - 1))
    fork_at = r.randint(cut, max(cut, len(seq) - 1))
    i = 0
    while i < len(seq):
        n = min(r.randint(1, 17), len(seq) - i)
        for mark in (cut, fork_at):
            if i < mark < i + n:
                n = mark - i
        st, _, body = d.request("POST", "/v1/sessions/%s/step" % sid,
                                {"inputs": seq[i:i + n], "if_steps": i})
        if st != 200:
            errors.append("%s: step at %d: %d %r" % (what, i, st, body))
            return
        got.extend(body["outputs"])
        i += n
        if i == cut:
            st, _, exp = d.request("GET", "/v1/sessions/%s/state" % sid)
            if st != 200 or exp.get("steps") != i:
                errors.append("%s: export: %d %r" % (what, st, exp))
                return
            ts = [L["t"] for L in exp["state"]["layers"] if "t" in L]
            if not ts or any(t != [i] for t in ts):
                errors.append("%s: export after %d steps has counters %r" % (what, i, ts))
            d.request("DELETE", "/v1/sessions/%s" % sid)
            st, _, body = d.request("POST", "/v1/sessions", {
                "model": model, "state": exp["state"], "digest": exp["digest"]})
            if st != 201:
                errors.append("%s: reopen from export: %d %r" % (what, st, body))
                return
            sid = body["id"]
            st, _, body = d.request("PUT", "/v1/sessions/%s/state" % sid, exp)
            if st != 200 or body.get("steps") != i:
                errors.append("%s: import: %d %r" % (what, st, body))
                return
        if i == fork_at and i < len(seq):
            st, _, body = d.request("POST", "/v1/sessions/%s/fork" % sid, {})
            if st != 201:
                errors.append("%s: fork: %d %r" % (what, st, body))
                return
            d.request("DELETE", "/v1/sessions/%s" % sid)
            sid = body["id"]
    d.request("DELETE", "/v1/sessions/%s" % sid)


def noise(d, model, case, steps, errors):
    """A session of MODEL fed random inputs: batch company with other counters."""
    daemon_util.noise(d, model, case, steps, errors, seed=steps + len(model))


def check_sessions(cs, models, want, isa):
    env = dict(os.environ, RNND_ISA=isa)
    with Daemon(models, env=env) as d:
        jobs, errors, got = [], [], {}
        for name, c in cs.items():
            for b, seq in enumerate(c["sequences"]):
                got[(name, b)] = []
                jobs.append(threading.Thread(target=drive, args=(
                    d, name, seq, "%s[%d] %s" % (name, b, isa), got[(name, b)], errors)))
            jobs.append(threading.Thread(target=noise, args=(d, name, c, 25, errors)))
        run_concurrently(jobs, rng, errors)
        for (name, b), outs in sorted(got.items()):
            c = cs[name]
            what = "%s seq %d [%s]" % (name, b, isa)
            C.eq(len(outs), len(c["expected"][b]), what + ": steps")
            if want[name] is not None:
                C.check(outs == want[name][b],
                        what + ": session outputs differ bitwise from rnnd infer's")
            C.check(close(outs, c["expected"][b], c["atol"], c["rtol"]),
                    what + ": outside the tolerance of the expectation")
        rc, _ = d.stop()
        C.check(rc == 0, "daemon [%s] exit status %s" % (isa, rc))
    print("path %s: %d sequences in random chunks with an export/import and a fork each, "
          "beside %d noise sessions" % (isa, len(got), len(cs)))


def check_bad_counters(name, model, case):
    """Every wrong "t" in an imported state: 400 naming it, and the session unchanged."""
    seq = case["sequences"][0]
    with Daemon({name: model}) as d:
        st, _, body = d.request("POST", "/v1/sessions", {"model": name})
        sid = body["id"]
        d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": seq[:5]})
        st, _, good = d.request("GET", "/v1/sessions/%s/state" % sid)
        C.eq(st, 200, "export")
        ci = next(l for l, L in enumerate(good["state"]["layers"]) if "t" in L)
        bad = [("missing", None, "missing \"t\""),
               ("negative", [-1], "t[0]: -1 is out of range 0 to 2^48-1"),
               ("too big", [2 ** 48], "out of range 0 to 2^48-1"),
               ("real", [1.5], "t[0]: expected an integer step count"),
               ("string", ["7"], "expected an integer step count"),
               ("not a list", 7, "t: expected a list of 1 integer(s)"),
               ("two directions", [1, 2], "t: expected 1 direction(s), got 2")]
        for what, t, msg in bad:
            exp = json.loads(json.dumps(good))
            if t is None:
                del exp["state"]["layers"][ci]["t"]
            else:
                exp["state"]["layers"][ci]["t"] = t
            resp = d.request("PUT", "/v1/sessions/%s/state" % sid, exp)
            C.error(resp, 400, "invalid_request", "import with t %s" % what)
            m = resp[2].get("error", {}).get("message", "") if isinstance(resp[2], dict) else ""
            C.check(msg in m and "layers[%d]" % ci in m,
                    "import with t %s: message %r lacks %r" % (what, m, msg))
            st, _, now = d.request("GET", "/v1/sessions/%s/state" % sid)
            C.check(now == good, "import with t %s changed the session" % what)
        # "t" on a layer that has none
        other = [l for l, L in enumerate(good["state"]["layers"]) if "t" not in L]
        if other:
            exp = json.loads(json.dumps(good))
            exp["state"]["layers"][other[0]]["t"] = [5]
            resp = d.request("PUT", "/v1/sessions/%s/state" % sid, exp)
            C.error(resp, 400, "invalid_request", "t on an rnn layer")
            C.check("\"t\" is only for clockwork layers" in str(resp[2]),
                    "t on an rnn layer: %r" % (resp[2],))
        # a counter given back is the one used: t = 1 instead of 5 runs other modules
        exp = json.loads(json.dumps(good))
        exp["state"]["layers"][ci]["t"] = [1]
        C.eq(d.request("PUT", "/v1/sessions/%s/state" % sid, exp)[0], 200, "import t = 1")
        st, _, now = d.request("GET", "/v1/sessions/%s/state" % sid)
        C.eq(now["state"]["layers"][ci]["t"], [1], "the imported counter")
        d.stop()


def spoil_counter(sdir, victim):
    """Rewrite sdir's snapshot (docs/state.md, "File format") with the last float of VICTIM's
    state, the high half of the last layer's counter, set to 0.5, signed again with the key."""
    path = os.path.join(sdir, "sessions.snap")
    raw = open(path, "rb").read()
    end = len(raw) - 48 - 32                # version 4: SHA-256 and HMAC at the end
    body, off = bytearray(raw[:24]), 24
    while off < end:
        (n,) = struct.unpack_from("=I", raw, off)
        rec = bytearray(raw[off:off + 4 + n])
        if rec[4:36].decode() == victim:
            struct.pack_into("=f", rec, len(rec) - 4, 0.5)
        body += rec
        off += 4 + n
    body = bytes(body + raw[end:end + 16])
    body += hashlib.sha256(body).digest()
    body += hmac.new(open(sdir + ".key", "rb").read(), body, hashlib.sha256).digest()
    with open(path, "wb") as f:
        f.write(body)


def check_restart(name, model, case):
    """A session saved at a clean stop continues exactly after the restart (its counter is
    part of the state the snapshot copies); a record whose counter is not a whole number is
    dropped as invalid, naming it, as the state import would refuse it."""
    seq = case["sequences"][0]
    sdir = os.path.join(WORK, "state")
    shutil.rmtree(sdir, ignore_errors=True)
    os.makedirs(sdir)
    whole = infer(model, {"inputs": [seq[:60]]}, "auto")
    with Daemon({name: model}, "--state-dir", sdir) as d:
        sid, victim = (d.request("POST", "/v1/sessions", {"model": name})[2]["id"]
                       for _ in range(2))
        st, _, a = d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": seq[:23]})
        d.request("POST", "/v1/sessions/%s/step" % victim, {"inputs": seq[:23]})
        rc, _ = d.stop()
        C.eq(rc, 0, "stop with a state_dir")
    spoil_counter(sdir, victim)
    with Daemon({name: model}, "--state-dir", sdir) as d:
        st, _, b = d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": seq[23:60]})
        C.eq(st, 200, "step after the restart")
        if whole and st == 200:
            C.check(a["outputs"] + b["outputs"] == whole["outputs"][0],
                    "restarted session differs bitwise from one run")
        C.eq(d.request("GET", "/v1/sessions/%s" % victim)[0], 404,
             "a record with a spoilt counter is not restored")
        C.check(any("event=session_dropped" in line and "reason=invalid" in line and
                    "t[0]: 0.5 is not a step counter" in line for line in d.log),
                "the spoilt counter is named: %s" % [x for x in d.log if "dropped" in x])
        d.stop()


# the reference module converted and run, in a child (torch is imported there only)
FROM_MODULE = r"""
import json, subprocess, sys
import numpy as np, torch
import rnnd_convert
from rnnd_modules.clockwork import Clockwork
torch.manual_seed(16)
net = Clockwork(5, 12, [1, 3, 7], num_layers=2, activation="softsign")
with torch.no_grad():       # junk below the block diagonal: the mask keeps it out
    net.R0.add_(torch.tril(torch.ones(12, 12), -1) * 3.0)
path, out = sys.argv[1], {}
m = rnnd_convert.from_module(net, path)
R = np.asarray(m.layers[0].weights[0]["R"])
out["R_below_zero"] = bool(np.all(R[4:, :4] == 0) and np.all(R[8:, :8] == 0))
out["R_rest_kept"] = bool(np.array_equal(R, (net.R0 * net.mask).detach().numpy()))
x = torch.randn(3, 40, 5)
t0 = torch.tensor([[0, 5, 16777221], [0, 5, 16777221]])
h0 = torch.randn(2, 3, 12) * 0.5
with torch.no_grad():
    y, (h, t) = net(x, (h0, t0))
state = lambda b: {"layers": [{"h": [h0[l, b].tolist()], "t": [int(t0[l, b])]}
                              for l in range(2)]}
req = {"inputs": x.tolist(), "return_state": True,
       "initial_state": [state(b) for b in range(3)]}
p = subprocess.run([sys.argv[2], "infer", "--model", path], input=json.dumps(req),
                   capture_output=True, text=True)
r = json.loads(p.stdout)
out["max_err"] = float(np.abs(np.array(r["outputs"]) - y.numpy()).max())
out["h_err"] = max(float(np.abs(np.array(s["layers"][l]["h"][0]) - h[l, b].numpy()).max())
                   for b, s in enumerate(r["states"]) for l in range(2))
out["t"] = [[s["layers"][l]["t"][0] for l in range(2)] for s in r["states"]]
out["t_module"] = t.T.tolist()
try:
    rnnd_convert.from_module(net, path + ".x", head=torch.nn.Linear(12, 3))
    out["head_refused"] = ""
except rnnd_convert.ConvertError as e:
    out["head_refused"] = str(e)
print(json.dumps(out))
"""


class GoldenClock(Case):
    """The Clockwork cases, tools and module; the models are converted once."""

    @classmethod
    def setUpClass(cls):
        fixtures()

    def test_from_module(self):
        path = os.path.join(WORK, "module.rnnd")
        p = subprocess.run([PYTHON3, "-c", FROM_MODULE, path, RNND_BIN], capture_output=True,
                           text=True, timeout=300)
        self.check(p.returncode == 0, "from_module script: %s" % p.stderr.strip()[-2000:])
        if p.returncode != 0:
            return
        r = json.loads(p.stdout)
        self.check(r["R_below_zero"] and r["R_rest_kept"],
                   "from_module writes R * mask: %s" % p.stdout)
        self.check(r["max_err"] <= 1e-5 and r["h_err"] <= 1e-5,
                   "rnnd infer gives the module's outputs: %s" % p.stdout)
        self.eq(r["t"], r["t_module"], "counters after 40 steps, rows at different counters")
        self.eq(r["t"], [[40, 40], [45, 45], [16777261, 16777261]], "counters")
        # a head the module does not apply: the verification at conversion refuses it
        self.check("verification failed" in r["head_refused"],
                   "head= refused: %r" % r["head_refused"])
        p = subprocess.run([RNND_BIN, "inspect", "--json", path], capture_output=True, text=True)
        info = json.loads(p.stdout) if p.returncode == 0 else {}
        self.check(info.get("verification", {}).get("source") == "module",
                   "the module was verified at conversion: %s" % info.get("verification"))
        print("from_module: a 2-layer Clockwork, max |err| %.3g, counters %s" % (r["max_err"],
                                                                                r["t"]))

    def test_generator(self):
        check_generator(CLOCK_DIR)

    def test_bench_inspect(self):
        """`rnnd bench --cell clockwork`: both modes; gflops count W x and each module's blocks
        of R every T_k-th step. `rnnd inspect --json` shows the periods."""
        models = fixtures()[1]
        H, I, per = 12, 7, [1, 2, 4, 8]
        for mode in ("stream", "seq"):
            p = subprocess.run([RNND_BIN, "bench", "--cell", "clockwork", "--hidden", str(H),
                                "--input", str(I), "--mode", mode, "--steps", "9",
                                "--seconds", "0.05"], capture_output=True, text=True, timeout=60)
            ok = p.returncode == 0
            if ok:
                r = json.loads(p.stdout)
                hm = H / len(per)
                flops = 2 * H * I + sum(2 * hm * (H - k * hm) / T for k, T in enumerate(per))
                want = flops * r["steps_per_s"] * 1e-9
                ok = (r["cell"] == "clockwork" and r["steps_per_s"] > 0
                      and abs(r["gflops"] - want) <= 0.011 + 0.01 * want)
            self.check(ok, "bench --cell clockwork --mode %s: %s %s" % (mode, p.stdout, p.stderr))
        for args, msg in ((["--hidden", "10"], "needs --hidden divisible by 4"),
                          (["--periods", "1,3,2"], "strictly increasing"),
                          (["--periods", "1,0"], "strictly increasing positive"),
                          (["--hidden", "12", "--periods", "1,2,3,4,5"], "divide --hidden")):
            p = subprocess.run([RNND_BIN, "bench", "--cell", "clockwork"] + args,
                               capture_output=True, text=True, timeout=60)
            self.check(p.returncode == 2 and msg in p.stderr, "bench %s: %d %s" % (
                " ".join(args), p.returncode, p.stderr))
        p = subprocess.run([RNND_BIN, "bench", "--cell", "rnn", "--periods", "1,2"],
                           capture_output=True, text=True, timeout=60)
        self.check(p.returncode == 2 and "--periods is for --cell clockwork" in p.stderr,
                   "bench --cell rnn --periods: %s" % p.stderr)
        p = subprocess.run([RNND_BIN, "inspect", "--json", models["clock3_vectors"]],
                           capture_output=True, text=True, timeout=60)
        layers = json.loads(p.stdout)["layers"] if p.returncode == 0 else []
        self.eq([L.get("periods") for L in layers], [[1, 3, 7, 16], [1, 2, 5], [2, 5, 11]],
                "inspect --json periods")
        p = subprocess.run([RNND_BIN, "inspect", models["clock3_vectors"]], capture_output=True,
                           text=True, timeout=60)
        self.check("periods=1,3,7,16 (4 modules of 3 units)" in p.stdout, "inspect: %s" % p.stdout)

    def test_bad_counters(self):
        cs, models = fixtures()
        check_bad_counters("clock_mixed_vectors", models["clock_mixed_vectors"],
                           cs["clock_mixed_vectors"])

    def test_restart(self):
        cs, models = fixtures()
        check_restart("clock3_vectors", models["clock3_vectors"], cs["clock3_vectors"])

    def test_infer_and_sessions(self):
        cs, models = fixtures()
        for isa in available_isas():
            want = {name: check_infer(name, c, models[name], isa) for name, c in cs.items()}
            check_sessions(cs, models, want, isa)


if __name__ == "__main__":
    unittest.main()
