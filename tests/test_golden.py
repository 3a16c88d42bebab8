"""Golden conformance through the command line: every case in $RNND_GOLDEN_DIR (and the
minGRU / minLSTM cases of tests/data/golden_min) is converted from ONNX (or its native spec)
with `$PYTHON3 -m rnnd_convert`, then run with `$RNND_BIN infer` on every SIMD path
this CPU supports (RNND_ISA=scalar|avx2|avx512). Each response must match the case's
`expected` outputs and `final_h` within |got - exp| <= atol + rtol * |exp|, and a request for
"outputs": "last" must give the last step of each sequence. `rnnd inspect --json` must agree
with the case on whether the model is stateful.

Prints the number of cases and paths, then one line per case per path with the largest
errors. Each case is a test (Golden.test_CASE, runnable alone) with a subTest per path; a
mismatch, a missing case, or a path that should run on this CPU but does not is a failure.
"""
import json
import os
import subprocess
import unittest

from daemon_util import GOLDEN_DIR, ISAS, PYTHON3, RNND_BIN, available_isas

# The minGRU / minLSTM cases: native specs (model.json + weights.npz), since ONNX has no such
# cells (tests/data/golden_min/generate.py).
MIN_DIR = os.path.join(os.path.dirname(os.path.abspath(GOLDEN_DIR)), "data", "golden_min")
TMP = os.path.join(os.environ.get("RNND_TEST_TMP", "/tmp"), "golden")

def run_infer(model, request, isa):
    """(exit status, parsed stdout or None, parsed stderr or raw text)."""
    env = dict(os.environ, RNND_ISA=isa)
    p = subprocess.run([RNND_BIN, "infer", "--model", model], input=json.dumps(request),
                       capture_output=True, text=True, env=env, timeout=120)
    out = json.loads(p.stdout) if p.returncode == 0 else None
    try:
        err = json.loads(p.stderr) if p.stderr.strip() else None
    except ValueError:
        err = p.stderr
    return p.returncode, out, err


def max_violation(got, exp, atol, rtol, where, bad):
    """Largest |got-exp| over two equally shaped nested lists; appends each shape or tolerance
    failure to BAD. Returns (max abs error, number of elements compared)."""
    if isinstance(exp, list):
        if not isinstance(got, list) or len(got) != len(exp):
            bad.append("%s: shape: expected %d values, got %s" % (
                where, len(exp), len(got) if isinstance(got, list) else type(got).__name__))
            return float("inf"), 0
        worst, n = 0.0, 0
        for i, (g, e) in enumerate(zip(got, exp)):
            w, k = max_violation(g, e, atol, rtol, "%s[%d]" % (where, i), bad)
            worst, n = max(worst, w), n + k
        return worst, n
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        bad.append("%s: expected a number, got %r" % (where, got))
        return float("inf"), 0
    err = abs(got - exp)
    if not err <= atol + rtol * abs(exp):
        bad.append("%s: got %.9g, expected %.9g (|diff| %.3g > %.3g)" % (
            where, got, exp, err, atol + rtol * abs(exp)))
    return err, 1


def flat_h(state):
    """A STATE's h vectors in the order of final_h: layer 0 fwd, layer 0 bwd, layer 1 ..."""
    return [h for layer in state["layers"] for h in layer["h"]]


def case_dirs():
    """[(name, folder)] of every case, golden and golden_min, by name in each."""
    out = []
    for root in (GOLDEN_DIR, MIN_DIR):
        found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) \
            if os.path.isdir(root) else []
        out += [(d, os.path.join(root, d)) for d in found]
    return out


class Golden(unittest.TestCase):
    """A test per case (made from the case folders below), and the paths this CPU lacks."""

    @classmethod
    def setUpClass(cls):
        os.makedirs(TMP, exist_ok=True)
        cls.isas = available_isas()
        print("%d golden cases, paths %s" % (len(case_dirs()), ", ".join(cls.isas)))

    def test_case_folders(self):
        self.assertTrue(os.path.isdir(GOLDEN_DIR), "no golden directory %s" % GOLDEN_DIR)
        for root in (GOLDEN_DIR, MIN_DIR):
            with self.subTest(root=root):
                self.assertTrue(os.path.isdir(root) and any(
                    os.path.isdir(os.path.join(root, d)) for d in os.listdir(root)),
                    "no golden cases in %s" % root)

    def test_unsupported_paths(self):
        # Every path the CPU supports must actually run (the case tests); the others must be
        # refused cleanly.
        for isa in ISAS:
            if isa in self.isas:
                continue
            with self.subTest(isa=isa):
                # Not supported by this CPU: rnnd must say so with code "unsupported".
                rc, _, err = run_infer("/nonexistent.rnnd", {"inputs": [[0]]}, isa)
                code = err.get("error", {}).get("code") if isinstance(err, dict) else None
                self.assertEqual((rc, code), (1, "unsupported"),
                                 "RNND_ISA=%s on a CPU without it: %r" % (isa, err))
                print("path %s: not supported by this CPU, refused as expected" % isa)

    def one_case(self, name, case_dir):
        path = os.path.join(case_dir, "case.json")
        self.assertTrue(os.path.isfile(path), "%s: missing case.json" % name)
        with open(path) as f:
            case = json.load(f)
        onnx = os.path.join(case_dir, case.get("model", "model.onnx"))
        model = os.path.join(TMP, name + ".rnnd")
        p = subprocess.run([PYTHON3, "-m", "rnnd_convert", onnx, "-o", model],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, "%s: conversion failed: %s" % (
            name, (p.stderr or p.stdout).strip()))

        with self.subTest("inspect"):
            p = subprocess.run([RNND_BIN, "inspect", "--json", model], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(p.returncode, 0, "%s: rnnd inspect failed: %s" % (
                name, p.stderr.strip()))
            self.assertEqual(json.loads(p.stdout)["stateful"], case["stateful"],
                             "%s: inspect and the case disagree on stateful" % name)

        for isa in self.isas:
            with self.subTest(isa=isa):
                self.one_path(name, model, case, isa)

    def one_path(self, name, model, case, isa):
        atol, rtol = case["atol"], case["rtol"]
        seqs = case["sequences"]
        rc, resp, err = run_infer(model, {"inputs": seqs, "return_state": True}, isa)
        self.assertEqual(rc, 0, "%s [%s]: rnnd infer: %s" % (name, isa, err))
        self.assertEqual(resp.get("model"), name, "%s [%s]: the model named" % (name, isa))
        bad = []
        e_out, n_out = max_violation(resp["outputs"], case["expected"], atol, rtol,
                                     "%s [%s] outputs" % (name, isa), bad)
        states = resp.get("states")
        self.assertTrue(isinstance(states, list) and len(states) == len(seqs),
                        "%s [%s]: expected %d states" % (name, isa, len(seqs)))
        e_h, n_h = max_violation([flat_h(s) for s in states], case["final_h"], atol, rtol,
                                 "%s [%s] final_h" % (name, isa), bad)

        rc, last, err = run_infer(model, {"inputs": seqs, "outputs": "last"}, isa)
        self.assertEqual(rc, 0, "%s [%s]: \"last\" request: %s" % (name, isa, err))
        self.assertEqual(last["outputs"], [o[-1] for o in resp["outputs"]],
                         "%s [%s]: \"outputs\": \"last\" differs from the last step of "
                         "\"all\"" % (name, isa))
        self.assertNotIn("states", last, "%s [%s]: states without return_state" % (name, isa))
        # The "last" answer must match the expectation too, not just our own "all".
        max_violation(last["outputs"], [e[-1] for e in case["expected"]], atol, rtol,
                      "%s [%s] last" % (name, isa), bad)
        print("case %-28s %-7s max|err| outputs %.3g (%d values), final_h %.3g (%d values)" % (
            name, isa, e_out, n_out, e_h, n_h))
        self.assertEqual(bad, [], "%d values out of tolerance" % len(bad))


for _name, _dir in case_dirs():
    assert not hasattr(Golden, "test_" + _name), "two cases named " + _name
    setattr(Golden, "test_" + _name,
            lambda self, n=_name, d=_dir: self.one_case(n, d))


if __name__ == "__main__":
    unittest.main()
