"""The minGRU / minLSTM golden cases (tests/data/golden_min) beyond `rnnd infer`
(test_golden.py runs them there): their stored numbers recomputed by the case generator's
own float64 reference, and, on every SIMD path this CPU runs, each sequence fed to a daemon
session in random chunks, concurrently with sessions of the other cases and of noise, its
state exported part way, the session closed and a new one opened from the export. Chunks of
1-7 steps step; chunks of 8+ scan (docs/api.md 4.7), and the metrics show both happened;
each case's first sequence is also fed one step per request. The paths are
daemon_util.available_isas()'s: every one this CPU runs (avx512 where it has AVX-512). Every
output must equal `rnnd infer`'s for that step bit for bit (stepping, scanning and infer's
whole sequences agree) and the case's expectation within its tolerance. Also: the documented
0/0 of minlstm is a numeric_error, and `rnnd bench --cell` runs both types.
"""
import json
import os
import random
import subprocess
import threading
import unittest

import daemon_util
from daemon_util import (PYTHON3, RNND_BIN, Case, Daemon, available_isas, check_generator, close,
                         convert_case, data_cases, drive_session, infer_on, run_concurrently,
                         tmpdir)

HERE = os.path.dirname(os.path.abspath(__file__))
MIN_DIR = os.path.join(HERE, "data", "golden_min")
WORK = tmpdir("golden_min")
rng = random.Random(1616)


def cases():
    return data_cases(MIN_DIR)


def convert(name, case):
    return convert_case(MIN_DIR, name, case, WORK)


def infer(model, seqs, isa):
    r = infer_on(model, {"inputs": seqs}, isa)
    return r["outputs"] if r is not None else None


def short_or_long(r):
    """Short chunks step, chunks of 8+ steps scan (docs/api.md 4.7): both, interleaved."""
    return r.choice((r.randint(1, 7), r.randint(8, 60)))


def drive(d, model, seq, what, got, errors, one_by_one=False):
    """Feed SEQ to a session of MODEL in random chunks (ONE_BY_ONE: one step per request,
    after the same random draws), exporting the state part way and continuing in a new
    session opened from it; outputs into GOT."""
    chunk = (lambda r: (short_or_long(r), 1)[1]) if one_by_one else short_or_long
    drive_session(d, model, seq, what, got, errors, chunk=chunk)



def noise(d, model, case, steps, errors):
    """A session of MODEL fed random inputs: batch company for the others."""
    daemon_util.noise(d, model, case, steps, errors, seed=steps)


class GoldenMin(Case):
    """The minGRU / minLSTM cases and their tools."""

    def test_nan(self):
        """minlstm's h = (f / (f + i)) h_prev + ...: gates both exactly 0 (HardSigmoid) make 0/0,
        and the answer is numeric_error, as docs/model-format.md says, not a NaN in the output."""
        import numpy as np
        spec = os.path.join(WORK, "nan.json")
        with open(spec, "w") as f:
            json.dump({"format_version": 1, "input": {"kind": "vectors", "dim": 2},
                       "layers": [{"type": "minlstm", "hidden_size": 3, "activations": [
                           [{"op": "HardSigmoid"}, {"op": "Affine"}]]}],
                       "weights": "nan.npz"}, f)
        np.savez(os.path.join(WORK, "nan.npz"), **{
            "layers.0.0.W": np.zeros((9, 2), np.float32),
            "layers.0.0.Wb": np.full(9, -10.0, np.float32)})
        model = os.path.join(WORK, "nan.rnnd")
        p = subprocess.run([PYTHON3, "-m", "rnnd_convert", spec, "-o", model, "-q"],
                           capture_output=True, text=True, timeout=120)
        self.check(p.returncode == 0, "nan model: conversion: %s" % p.stderr.strip())
        p = subprocess.run([RNND_BIN, "infer", "--model", model], input='{"inputs": [[[1, 2]]]}',
                           capture_output=True, text=True, timeout=60)
        code = json.loads(p.stderr)["error"]["code"] if p.stderr.strip().startswith("{") else None
        self.check(p.returncode == 1 and code == "numeric_error",
                   "minlstm 0/0: exit %d, %s" % (p.returncode, p.stderr.strip()))
        # a session: a short request steps, a long one scans; both name the first bad step
        with Daemon({"nan": model}) as d:
            st, _, body = d.request("POST", "/v1/sessions", {"model": "nan"})
            sid = body["id"] if st == 201 else None
            for n, before in ((3, 0), (12, 3)):
                st, _, body = d.request("POST", "/v1/sessions/%s/step" % sid,
                                        {"inputs": [[1, 2]] * n})
                err = body.get("error", {}) if isinstance(body, dict) else {}
                self.check(st == 400 and err.get("code") == "numeric_error" and
                           "inputs[0]" in err.get("message", "") and
                           "advanced to %d steps" % (before + n) in err.get("message", ""),
                           "minlstm 0/0 in a session, %d steps: %d %r" % (n, st, body))
            text = d.metrics()
            self.check('rnnd_session_scan_steps_total{model="nan"} 12' in text,
                       "the 12-step request was scanned")
            d.stop()

    def test_bench(self):
        """`rnnd bench --cell mingru|minlstm` runs both modes; flops count W alone (no R);
        --sgemm adds one core's sgemm peak and the ratio to it."""
        for cell, G in (("mingru", 2), ("minlstm", 3)):
            for mode in ("stream", "seq"):
                p = subprocess.run([RNND_BIN, "bench", "--cell", cell, "--hidden", "13", "--input",
                                    "7", "--mode", mode, "--steps", "9", "--seconds", "0.05"],
                                   capture_output=True, text=True, timeout=60)
                ok = p.returncode == 0
                if ok:
                    r = json.loads(p.stdout)
                    # gflops = 2 G H I steps_per_s / 1e9
                    want = 2.0 * G * 13 * 7 * r["steps_per_s"] * 1e-9
                    ok = (r["cell"] == cell and r["mode"] == mode and r["steps_per_s"] > 0
                          and abs(r["gflops"] - want) <= 0.011 + 0.01 * want)
                self.check(ok, "bench --cell %s --mode %s: %s %s"
                           % (cell, mode, p.stdout, p.stderr))
        # --sgemm N: one core's OpenBLAS sgemm peak beside the cell's figure, and their ratio
        p = subprocess.run([RNND_BIN, "bench", "--cell", "minlstm", "--hidden", "32", "--mode",
                            "seq", "--steps", "20", "--seconds", "0.05", "--sgemm", "96"],
                           capture_output=True, text=True, timeout=60)
        ok = p.returncode == 0
        if ok:
            r = json.loads(p.stdout)
            ok = (r["sgemm_n"] == 96 and r["sgemm_gflops"] > 0 and r["blas_core"] != "" and
                  abs(r["of_sgemm"] - r["gflops"] / r["sgemm_gflops"]) <= 0.002 + 0.01 *
                  r["of_sgemm"] and r["best_gflops"] >= 0.99 * r["gflops"] and
                  abs(r["of_sgemm_best"] - r["best_gflops"] / r["sgemm_gflops"]) <= 0.002 +
                  0.01 * r["of_sgemm_best"])
        self.check(ok, "bench --sgemm 96: %s %s" % (p.stdout, p.stderr))
        p = subprocess.run([RNND_BIN, "bench", "--sgemm", "-1"], capture_output=True, text=True,
                           timeout=60)
        self.check(p.returncode == 2 and "--sgemm" in p.stderr, "bench --sgemm -1: %d %s"
                   % (p.returncode, p.stderr))
        p = subprocess.run([RNND_BIN, "bench", "--cell", "mingru2"], capture_output=True,
                           text=True, timeout=60)
        self.check(p.returncode == 2 and "--cell must be" in p.stderr and "minlstm" in p.stderr and
                   "clockwork" in p.stderr,
                   "bench --cell mingru2: %d %s" % (p.returncode, p.stderr))

    def test_generator(self):
        check_generator(MIN_DIR)

    def test_sessions(self):
        cs = cases()
        self.check(len(cs) >= 3, "golden_min cases: %s" % sorted(cs))
        models = {name: convert(name, c) for name, c in cs.items()}
        for isa in available_isas():
            want = {name: infer(models[name], c["sequences"], isa) for name, c in cs.items()}
            env = dict(os.environ, RNND_ISA=isa)
            with Daemon(models, env=env) as d:
                jobs, errors, got = [], [], {}
                for name, c in cs.items():
                    for b, seq in enumerate(c["sequences"]):
                        got[(name, b)] = []
                        jobs.append(threading.Thread(target=drive, args=(
                            d, name, seq, "%s[%d] %s" % (name, b, isa), got[(name, b)], errors)))
                    # the first sequence once more, one step per request: stepping alone
                    got[(name, "1x1")] = []
                    jobs.append(threading.Thread(target=drive, args=(
                        d, name, c["sequences"][0], "%s[0] one by one %s" % (name, isa),
                        got[(name, "1x1")], errors, True)))
                    jobs.append(threading.Thread(target=noise, args=(d, name, c, 25, errors)))
                run_concurrently(jobs, rng, errors)
                for (name, b), outs in sorted(got.items(), key=str):
                    c = cs[name]
                    what = "%s seq %s [%s]" % (name, b, isa)
                    b = 0 if b == "1x1" else b
                    exp = c["expected"][b]
                    self.eq(len(outs), len(exp), what + ": steps")
                    if want[name] is not None:
                        self.check(outs == want[name][b],
                                   what + ": session outputs differ bitwise from rnnd infer's")
                    self.check(close(outs, exp, c["atol"], c["rtol"]),
                               what + ": outside the tolerance of the expectation")
                text = d.metrics()
                for name in cs:
                    def metric(m):
                        for line in text.splitlines():
                            if line.startswith('%s{model="%s"} ' % (m, name)):
                                return int(line.rsplit(" ", 1)[1])
                        return None
                    scanned = metric("rnnd_session_scan_steps_total")
                    steps = metric("rnnd_session_steps_total")
                    self.check(scanned is not None and steps is not None and 0 < scanned < steps,
                               "%s [%s]: %s of %s session steps scanned, want some but not all"
                               % (name, isa, scanned, steps))
                rc, _ = d.stop()
                self.check(rc == 0, "daemon [%s] exit status %s" % (isa, rc))
            print("path %s: %d sequences in random chunks with an export/import each, beside "
                  "%d noise sessions" % (isa, len(got), len(cs)))


if __name__ == "__main__":
    unittest.main()
