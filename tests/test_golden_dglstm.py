"""The depth-gated LSTM's golden cases (tests/data/golden_dglstm, issue 16): their stored numbers
recomputed by the case generator's own float64 reference (not reference.py); then, on every
SIMD path this CPU runs (daemon_util.available_isas), `rnnd infer` against the expectation
(outputs, every layer's final h and c), and each sequence fed to a daemon session in random
chunks, concurrently with the other sequences and noise sessions of every case, its state
exported part way, the session closed and a new one opened from the export. Every session
output must equal `rnnd infer`'s bit for bit and its final state infer's final state bit for
bit. Also: `rnnd bench --cell dglstm` runs both modes and `rnnd inspect` shows the gate.
"""
import functools
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
DG_DIR = os.path.join(HERE, "data", "golden_dglstm")
WORK = tmpdir("golden_dglstm")
rng = random.Random(1617)


def infer(model, seqs, isa):
    """(outputs, states) of `rnnd infer` on path ISA, or (None, None)."""
    r = infer_on(model, {"inputs": seqs, "return_state": True}, isa)
    if r is None:
        return None, None
    return r["outputs"], r["states"]


@functools.lru_cache(maxsize=None)
def fixtures():
    """(cases, converted models), made once (in setUpClass, where a failed check is the
    class's error)."""
    cs = data_cases(DG_DIR)
    C.check(len(cs) >= 3, "golden_dglstm cases: %s" % sorted(cs))
    return cs, {name: convert_case(DG_DIR, name, c, WORK) for name, c in cs.items()}


def check_infer(name, c, outs, states, isa):
    """Outputs and every layer's final h and c against the case, within its tolerance."""
    what = "%s [%s] infer" % (name, isa)
    C.check(close(outs, c["expected"], c["atol"], c["rtol"]),
            what + ": outputs outside the tolerance of the expectation")
    for b, st in enumerate(states):
        hs = [layer["h"][0] for layer in st["layers"]]
        cs = [layer["c"][0] for layer in st["layers"]]
        C.check(close(hs, c["final_h"][b], c["atol"], c["rtol"]),
                "%s seq %d: final h outside the tolerance" % (what, b))
        C.check(close(cs, c["final_c"][b], c["atol"], c["rtol"]),
                "%s seq %d: final c outside the tolerance" % (what, b))


def drive(d, model, seq, what, got, final, errors):
    """Feed SEQ to a session of MODEL in random chunks, exporting the state part way and
    continuing in a new session opened from it; outputs into GOT, the last state into FINAL."""
    drive_session(d, model, seq, what, got, errors, final=final)



def noise(d, model, case, steps, errors):
    """A session of MODEL fed random inputs: batch company for the others."""
    daemon_util.noise(d, model, case, steps, errors, seed=steps + len(model))


class GoldenDglstm(Case):
    """The depth-gated LSTM's cases and tools; the models are converted once."""

    @classmethod
    def setUpClass(cls):
        fixtures()

    def test_bench(self):
        """`rnnd bench --cell dglstm`: both modes; flops count both layers and D."""
        H, I = 13, 7
        for mode in ("stream", "seq"):
            p = subprocess.run([RNND_BIN, "bench", "--cell", "dglstm", "--hidden", str(H),
                                "--input", str(I), "--mode", mode, "--steps", "9", "--seconds",
                                "0.05"], capture_output=True, text=True, timeout=60)
            ok = p.returncode == 0
            if ok:
                r = json.loads(p.stdout)
                # layer 0: 2 * 4H (I + H); layer 1: 2 * (4H (H + H) + H H) per step
                per_step = 2.0 * 4 * H * (I + H) + 2.0 * (4 * H * 2 * H + H * H)
                want = per_step * r["steps_per_s"] * 1e-9
                ok = (r["cell"] == "dglstm" and r["mode"] == mode and r["steps_per_s"] > 0
                      and abs(r["gflops"] - want) <= 0.011 + 0.01 * want)
            self.check(ok, "bench --cell dglstm --mode %s: %s %s" % (mode, p.stdout, p.stderr))
        p = subprocess.run([RNND_BIN, "bench", "--cell", "dglstm2"], capture_output=True,
                           text=True, timeout=60)
        self.check(p.returncode == 2 and "dglstm, mingru, minlstm, slstm or clockwork" in p.stderr,
                   "bench --cell dglstm2: %d %s" % (p.returncode, p.stderr))

    def test_generator(self):
        check_generator(DG_DIR)

    def test_inspect(self):
        """`rnnd inspect` shows which layers are depth-gated, in text and --json."""
        model = fixtures()[1]["dglstm3_vectors"]
        p = subprocess.run([RNND_BIN, "inspect", model], capture_output=True, text=True,
                           timeout=60)
        lines = [ln for ln in p.stdout.splitlines() if "depth_gate=" in ln]
        self.check(p.returncode == 0 and len(lines) == 3 and "depth_gate=no" in lines[0] and
                   all("depth_gate=yes" in ln for ln in lines[1:]), "inspect text: %s" % p.stdout)
        p = subprocess.run([RNND_BIN, "inspect", "--json", model], capture_output=True, text=True,
                           timeout=60)
        try:
            layers = json.loads(p.stdout)["layers"]
            gates = [L.get("depth_gate") for L in layers]
        except (ValueError, KeyError) as e:
            gates = repr(e)
        self.eq(gates, [False, True, True], "inspect --json: depth_gate per layer")

    def test_sessions(self):
        cs, models = fixtures()
        for isa in available_isas():
            want = {}
            for name, c in cs.items():
                outs, states = infer(models[name], c["sequences"], isa)
                want[name] = (outs, states)
                if outs is not None:
                    check_infer(name, c, outs, states, isa)
            env = dict(os.environ, RNND_ISA=isa)
            with Daemon(models, env=env) as d:
                jobs, errors, got, final = [], [], {}, {}
                for name, c in cs.items():
                    for b, seq in enumerate(c["sequences"]):
                        got[(name, b)], final[(name, b)] = [], []
                        jobs.append(threading.Thread(target=drive, args=(
                            d, name, seq, "%s[%d] %s" % (name, b, isa), got[(name, b)],
                            final[(name, b)], errors)))
                    jobs.append(threading.Thread(target=noise, args=(d, name, c, 25, errors)))
                run_concurrently(jobs, rng, errors)
                for (name, b), outs in sorted(got.items()):
                    c = cs[name]
                    what = "%s seq %d [%s]" % (name, b, isa)
                    self.eq(len(outs), len(c["expected"][b]), what + ": steps")
                    w_outs, w_states = want[name]
                    if w_outs is not None:
                        self.check(outs == w_outs[b],
                                   what + ": session outputs differ bitwise from rnnd infer's")
                        self.check(final[(name, b)][:1] == [w_states[b]],
                                   what + ": the session's final state differs bitwise from "
                                   "infer's")
                    self.check(close(outs, c["expected"][b], c["atol"], c["rtol"]),
                               what + ": outside the tolerance of the expectation")
                rc, _ = d.stop()
                self.check(rc == 0, "daemon [%s] exit status %s" % (isa, rc))
            print("path %s: %d sequences in random chunks with an export/import each, beside "
                  "%d noise sessions" % (isa, len(got), len(cs)))


if __name__ == "__main__":
    unittest.main()
