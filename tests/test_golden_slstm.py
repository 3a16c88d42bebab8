"""The sLSTM golden cases (tests/data/golden_slstm, issue 16): their stored numbers recomputed by
the case generator's own float64 reference (`generate.py --check`), then on every SIMD path
this CPU runs (daemon_util.available_isas): `rnnd infer` against each case's expectation and
final h, c, n, m within its tolerance; and each sequence fed to a daemon session in random
chunks, concurrently with sessions of the other cases and of noise, its state exported part
way, the session closed and a new one opened from the export (and the export PUT back). Every
session output must equal `rnnd infer`'s for that step bit for bit (sessions step, infer runs
whole sequences) and be within the case's tolerance. Also `rnnd bench --cell slstm` runs, with
its options checked.
"""
import json
import os
import random
import subprocess
import threading
import unittest

import daemon_util
from daemon_util import (RNND_BIN, Case, Daemon, available_isas, check_generator, close,
                         convert_case, data_cases, drive_session, infer_on, run_concurrently,
                         tmpdir)
from daemon_util import RUNNING as C

HERE = os.path.dirname(os.path.abspath(__file__))
SL_DIR = os.path.join(HERE, "data", "golden_slstm")
WORK = tmpdir("golden_slstm")
rng = random.Random(1716)


def cases():
    return data_cases(SL_DIR)


def convert(name, case):
    return convert_case(SL_DIR, name, case, WORK, "-q")


def infer(model, seqs, isa):
    """(outputs, final states) of `rnnd infer` on path ISA."""
    r = infer_on(model, {"inputs": seqs, "return_state": True}, isa)
    if r is None:
        return None, None
    return r["outputs"], r["states"]


def drive(d, model, seq, what, got, errors):
    """Feed SEQ to a session of MODEL in random chunks, exporting the state part way and
    continuing in a new session opened from it; outputs into GOT."""
    drive_session(d, model, seq, what, got, errors)



def noise(d, model, case, steps, errors):
    """A session of MODEL fed random inputs: batch company for the others."""
    daemon_util.noise(d, model, case, steps, errors, seed=steps)


def check_final(name, c, states, isa):
    """infer's final h, c, n, m against the case's final_h and final_cnm."""
    for b, st in enumerate(states):
        for l, lay in enumerate(st["layers"]):
            want = [c["final_h"][b][l]] + c["final_cnm"][b][l]
            for i, key in enumerate("hcnm"):
                C.check(close(lay[key][0], want[i], c["atol"], c["rtol"]),
                        "%s seq %d [%s]: final %s of layer %d" % (name, b, isa, key, l))


class GoldenSlstm(Case):
    """The sLSTM cases and bench."""

    def test_bench(self):
        """`rnnd bench --cell slstm` runs both modes with its heads and forget in the line; flops
        count R's H / heads columns; wrong options are refused."""
        for mode in ("stream", "seq"):
            for extra, K, forget in (([], 4, "exp"), (["--heads", "2", "--forget", "sigmoid"], 2,
                                                       "sigmoid")):
                p = subprocess.run([RNND_BIN, "bench", "--cell", "slstm", "--hidden", "12",
                                    "--input", "7", "--mode", mode, "--steps", "9",
                                    "--seconds", "0.05"] + extra,
                                   capture_output=True, text=True, timeout=60)
                ok = p.returncode == 0
                if ok:
                    r = json.loads(p.stdout)
                    want = 2.0 * 4 * 12 * (7 + 12 // K) * r["steps_per_s"] * 1e-9
                    ok = (r["cell"] == "slstm" and r["mode"] == mode and r["heads"] == K and
                          r["forget"] == forget and r["steps_per_s"] > 0 and
                          abs(r["gflops"] - want) <= 0.011 + 0.01 * want)
                self.check(ok, "bench --cell slstm %s --mode %s: %s %s" % (extra, mode, p.stdout,
                                                                          p.stderr))
        for args, msg in ((["--heads", "5"], "--heads must be a positive divisor of --hidden"),
                          (["--heads", "0"], "--heads must be a positive divisor of --hidden"),
                          (["--forget", "tanh"], "--forget must be exp or sigmoid")):
            p = subprocess.run([RNND_BIN, "bench", "--cell", "slstm", "--hidden", "12"] + args,
                               capture_output=True, text=True, timeout=60)
            self.check(p.returncode == 2 and msg in p.stderr, "bench slstm %s: %d %s"
                       % (args, p.returncode, p.stderr))
        p = subprocess.run([RNND_BIN, "bench", "--cell", "lstm", "--heads", "2"],
                           capture_output=True, text=True, timeout=60)
        self.check(p.returncode == 2 and "for --cell slstm only" in p.stderr,
                   "bench --cell lstm --heads 2: %d %s" % (p.returncode, p.stderr))

    def test_generator(self):
        check_generator(SL_DIR, timeout=600)

    def test_sessions(self):
        cs = cases()
        self.check(len(cs) >= 3, "golden_slstm cases: %s" % sorted(cs))
        self.check(any(c["max_abs_pre"] >= 30 for c in cs.values()),
                   "a case drives the pre-activations to +-30")
        models = {name: convert(name, c) for name, c in cs.items()}
        for isa in available_isas():
            want = {}
            for name, c in cs.items():
                want[name], states = infer(models[name], c["sequences"], isa)
                if want[name] is None:
                    continue
                for b, exp in enumerate(c["expected"]):
                    self.check(close(want[name][b], exp, c["atol"], c["rtol"]),
                               "%s seq %d [%s]: infer outside the tolerance" % (name, b, isa))
                check_final(name, c, states, isa)
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
                    exp = c["expected"][b]
                    self.eq(len(outs), len(exp), what + ": steps")
                    if want[name] is not None:
                        self.check(outs == want[name][b],
                                   what + ": session outputs differ bitwise from rnnd infer's")
                    self.check(close(outs, exp, c["atol"], c["rtol"]),
                               what + ": outside the tolerance of the expectation")
                rc, _ = d.stop()
                self.check(rc == 0, "daemon [%s] exit status %s" % (isa, rc))
            print("path %s: %d sequences in random chunks with an export/import each, beside "
                  "%d noise sessions" % (isa, len(got), len(cs)))


if __name__ == "__main__":
    unittest.main()
