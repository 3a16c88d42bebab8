"""The golden cases of tests/golden are what their generator writes, and right.

1. `generate.py --check tests/golden`: the NumPy reference of the ONNX operators recomputes
   every case's `expected` and `final_h` from its model.onnx (PyTorch computed the torch
   cases, so this also checks the reference against PyTorch).
2. `generate.py --out TMP`: regenerating gives the same cases: the same files, every
   model.onnx byte for byte, every case.json field equal (the computed numbers within 2e-6
   relative: PyTorch's kernels may differ in the last bit between CPUs).
3. A case edited by hand (one expected number nudged by 1e-4) fails the check: the check can
   fail.

Env: PYTHON3, RNND_SRCDIR, RNND_TEST_TMP. 1-3 are tests (GoldenData.test_*), runnable alone;
2 has a subTest per case.
"""
import json
import os
import shutil
import subprocess
import sys
import unittest

from daemon_util import close

SRCDIR = os.environ.get("RNND_SRCDIR") or os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))
GOLDEN = os.path.join(SRCDIR, "tests", "golden")
GEN = os.path.join(GOLDEN, "generate.py")
PY = os.environ.get("PYTHON3", sys.executable)
TMP = os.path.join(os.environ.get("RNND_TEST_TMP", "/tmp"), "golden_data")
TOL = 2e-6

def run(*args):
    p = subprocess.run([PY, GEN] + list(args), capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def cases(root):
    return sorted(d for d in os.listdir(root)
                  if os.path.isfile(os.path.join(root, d, "case.json")))


def same(a, b):
    """Equal, or numbers (nested lists of them) within TOL * (1 + |b|)."""
    return a == b or close(a, b, TOL, TOL)


class GoldenData(unittest.TestCase):
    """The committed cases, their regeneration, and a check that can fail."""

    def test_check_committed(self):
        rc, out = run("--check", GOLDEN)
        print(out, end="")
        self.assertEqual(rc, 0, "generate.py --check tests/golden")
        self.assertEqual(len(cases(GOLDEN)), 12, "cases in tests/golden")
        print("%d cases checked" % len(cases(GOLDEN)))

    def test_regenerate(self):
        out_dir = os.path.join(TMP, "regen")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
        rc, out = run("--out", out_dir)
        self.assertEqual(rc, 0, "generate.py --out runs (%s)" % out.strip()[-300:])
        self.assertEqual(cases(out_dir), cases(GOLDEN), "the same case names")
        for name in cases(GOLDEN):
            with self.subTest(case=name):
                with open(os.path.join(GOLDEN, name, "model.onnx"), "rb") as f:
                    want = f.read()
                with open(os.path.join(out_dir, name, "model.onnx"), "rb") as f:
                    got = f.read()
                self.assertTrue(got == want, "%s: model.onnx regenerates byte for byte" % name)
                with open(os.path.join(GOLDEN, name, "case.json")) as f:
                    want = json.load(f)
                with open(os.path.join(out_dir, name, "case.json")) as f:
                    got = json.load(f)
                self.assertEqual(sorted(got), sorted(want), "%s: case.json fields" % name)
                differ = [k for k in want if not same(got.get(k), want[k])]
                self.assertEqual(differ, [], "%s: case.json fields that do not regenerate" % name)
        print("%d cases regenerated" % len(cases(GOLDEN)))

    def test_check_can_fail(self):
        bad = os.path.join(TMP, "edited")
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(GOLDEN, bad)
        path = os.path.join(bad, "lstm_vectors", "case.json")
        with open(path) as f:
            case = json.load(f)
        case["expected"][2][5][3] += 1e-4
        with open(path, "w") as f:
            json.dump(case, f)
        rc, out = run("--check", bad)
        self.assertNotEqual(rc, 0, "a nudged expected number fails the check")
        self.assertIn("lstm_vectors", out)
        self.assertIn("FAIL", out)


if __name__ == "__main__":
    unittest.main()
