"""int8 weights end to end: converter, loader, `rnnd inspect`, `rnnd infer`.

1. Every golden case ($RNND_GOLDEN_DIR, the clockwork cases of tests/data/golden_clock, the
   depth-gated lstm cases of tests/data/golden_dglstm and two sLSTM cases of
   tests/data/golden_slstm) is converted with `--weight-type int8`. The file stores exactly
   the weight matrices (W, R, proj, V, D, head.weight) as I8, each followed by NAME.scale
   (F32, one per row), everything else F32; `rnnd inspect --json` reports the type.
2. Accuracy: `rnnd infer` on every SIMD path this CPU runs against the case's fp32 golden
   `expected`, |got - exp| <= TOL * (1 + |exp|): the price of 8-bit weights and of the
   inputs quantized per step. The worst error per case is printed (docs/performance.md,
   "int8 weights", has the table) and the bound asserted. avx2 and avx512 give the same bits.
3. The case's f32 file with "weights": "int8" written into its architecture (so rnnd
   quantizes the F32 matrices at load) gives bitwise the outputs, and the same digest, as
   the converter's I8 file: the converter (NumPy) and the loader (C) quantize alike.
4. Refusals: the converter refuses a matrix that is not finite, naming the tensor.
5. Served: the daemon reports the weight type in /v1/models, and a session of an int8 model
   fed step by step gives bitwise the outputs of `rnnd infer` on the same file, on the path
   it runs.

Each case is a test (Int8.test_CASE); only failures are counted, as checks that failed.
"""
import json
import os
import struct
import subprocess
import sys
import unittest

import numpy as np

from daemon_util import Case, Daemon
from daemon_util import RUNNING as C

PYTHON3 = os.environ.get("PYTHON3", sys.executable)
RNND_BIN = os.environ["RNND_BIN"]
GOLDEN_DIR = os.environ["RNND_GOLDEN_DIR"]
HERE = os.path.dirname(os.path.abspath(__file__))
CLOCK_DIR = os.path.join(HERE, "data", "golden_clock")
DG_DIR = os.path.join(HERE, "data", "golden_dglstm")
SL_DIR = os.path.join(HERE, "data", "golden_slstm")
TMP = os.path.join(os.environ.get("RNND_TEST_TMP", "/tmp"), "int8")

# Bound on |got - expected| / (1 + |expected|) against the fp32 golden outputs: about twice
# the worst measured over the cases (7.2e-3, clock3_vectors; docs/performance.md, "int8
# weights", has them all). It describes these small models: bigger or longer-running ones
# can accumulate more.
TOL = 1.5e-2
MATRICES = ("W", "R", "proj", "V", "D")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def convert(src, out, wtype):
    cmd = [PYTHON3, "-m", "rnnd_convert", src, "-o", out, "-q"]
    if wtype != "f32":
        cmd += ["--weight-type", wtype]
    return run(cmd)


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data, 8 + n


def is_matrix(name, entry):
    if name.startswith("head.") and name.endswith(".weight"):
        return len(entry["shape"]) == 2
    return name.startswith("layers.") and name.split(".")[-1] in MATRICES


def infer(model, seqs, isa):
    p = run([RNND_BIN, "infer", "--model", model], input=json.dumps({"inputs": seqs}),
            env=dict(os.environ, RNND_ISA=isa))
    if p.returncode != 0:
        return None, p.stderr.strip()
    return json.loads(p.stdout)["outputs"], None


def inspect(path):
    p = run([RNND_BIN, "inspect", "--json", path])
    return json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr.strip()}


def isas():
    out = []
    for isa in ("scalar", "avx2", "avx512"):
        p = run([RNND_BIN, "infer", "--model", "/nonexistent.rnnd"], input="{}",
                env=dict(os.environ, RNND_ISA=isa))
        if "unsupported" not in p.stderr:
            out.append(isa)
    return out


def rel_err(got, exp):
    g = np.asarray(got, dtype=np.float64)
    e = np.asarray(exp, dtype=np.float64)
    return float(np.max(np.abs(g - e) / (1.0 + np.abs(e))))


def check_file(name, path, f32_path):
    """The int8 file's layout against the f32 file's."""
    h, _, _ = read(path)
    h32, _, _ = read(f32_path)
    if json.loads(h["__metadata__"]["architecture"]).get("weights") != "int8":
        C.fail_check("%s: architecture weights is not int8" % name)
    for t, e in h32.items():
        if t == "__metadata__":
            continue
        if is_matrix(t, e):
            rows = e["shape"][0]
            s = h.get(t + ".scale", {})
            if h[t]["dtype"] != "I8" or h[t]["shape"] != e["shape"] or \
                    s.get("dtype") != "F32" or s.get("shape") != [rows]:
                C.fail_check("%s: %s stored as %s %s with scale %s" % (
                    name, t, h[t]["dtype"], h[t]["shape"], s))
        elif h[t] != dict(h[t], dtype="F32", shape=e["shape"]):
            C.fail_check("%s: %s stored as %s" % (name, t, h[t]["dtype"]))
    extra = set(h) - set(h32) - {t + ".scale" for t in h32}
    if extra:
        C.fail_check("%s: unexpected tensors %s" % (name, sorted(extra)))
    if inspect(path).get("weights") != "int8":
        C.fail_check("%s: rnnd inspect: %s" % (name, inspect(path)))


def with_int8_arch(src, dst):
    """SRC (an f32 file) with "weights": "int8" in its architecture: rnnd quantizes its F32
    matrices at load."""
    h, data, base = read(src)
    a = json.loads(h["__metadata__"]["architecture"])
    a["weights"] = "int8"
    h["__metadata__"]["architecture"] = json.dumps(a)
    h["__metadata__"].pop("verification", None)
    text = json.dumps(h).encode()
    text += b" " * ((-(8 + len(text))) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data[base:])


def check_case(name, case_dir, paths, worst, tol):
    with open(os.path.join(case_dir, "case.json")) as f:
        case = json.load(f)
    src = os.path.join(case_dir, case.get("model", "model.onnx"))
    seqs = case["sequences"]
    f32 = os.path.join(TMP, name + ".f32.rnnd")
    q8 = os.path.join(TMP, name + ".int8.rnnd")
    for path, wtype in ((f32, "f32"), (q8, "int8")):
        p = convert(src, path, wtype)
        if p.returncode != 0:
            C.fail_check("%s %s: conversion: %s" % (name, wtype, p.stderr.strip()))
            return
    check_file(name, q8, f32)
    outs = {}
    for isa in paths:
        got, err = infer(q8, seqs, isa)
        if got is None:
            C.fail_check("%s [%s]: rnnd infer: %s" % (name, isa, err))
            continue
        outs[isa] = got
        e = max(rel_err(g, x) for g, x in zip(got, case["expected"]))
        worst[name] = max(worst.get(name, 0.0), e)
        if not e <= tol:
            C.fail_check("%s [%s]: error %.3g against the fp32 golden outputs > %.3g" % (
                name, isa, e, tol))
    if "avx2" in outs and "avx512" in outs and outs["avx2"] != outs["avx512"]:
        C.fail_check("%s: avx2 and avx512 differ" % name)
    alt = os.path.join(TMP, name + ".int8-at-load.rnnd")
    with_int8_arch(f32, alt)
    isa = paths[-1]
    got, err = infer(alt, seqs, isa)
    if got is None or got != outs.get(isa):
        C.fail_check("%s: F32 file quantized at load: %s" % (
            name, err or "outputs differ from the converter's I8 file"))
    if inspect(alt).get("digest") != inspect(q8).get("digest"):
        C.fail_check("%s: F32 file quantized at load: digest differs from the I8 file's" % name)
    print("case %-28s int8 max |err|/(1+|exp|) vs fp32 golden %.3g on %s; F32 quantized at "
          "load: same bits and digest" % (name, worst.get(name, float("nan")), ", ".join(paths)))


def check_refusals():
    spec = {"format_version": 1, "input": {"kind": "vectors", "dim": 2},
            "layers": [{"type": "rnn", "hidden_size": 2}], "weights": "q.npz"}
    W = np.array([[1.0, 2.0], [3.0, np.inf]], np.float32)
    np.savez(os.path.join(TMP, "q.npz"), **{"layers.0.0.W": W,
                                            "layers.0.0.R": np.eye(2, dtype=np.float32)})
    with open(os.path.join(TMP, "q.json"), "w") as f:
        json.dump(spec, f)
    p = convert(os.path.join(TMP, "q.json"), os.path.join(TMP, "q.rnnd"), "int8")
    if p.returncode != 1 or "layers.0.0.W" not in p.stderr or "\n" in p.stderr.strip():
        C.fail_check("int8 of inf: converter exit %d: %s" % (p.returncode, p.stderr.strip()))
    else:
        print("converter refuses a matrix that is not finite: " + p.stderr.strip())


def check_served():
    name = "lstm_vectors"
    case_dir = os.path.join(GOLDEN_DIR, name)
    with open(os.path.join(case_dir, "case.json")) as f:
        case = json.load(f)
    seq = case["sequences"][0]
    models = {}
    for w in ("f32", "int8"):
        models[w] = os.path.join(TMP, "served.%s.rnnd" % w)
        p = convert(os.path.join(case_dir, case.get("model", "model.onnx")), models[w], w)
        if p.returncode != 0:
            C.fail_check("served %s: conversion: %s" % (w, p.stderr.strip()))
            return
    want, err = infer(models["int8"], [seq], "auto")
    with Daemon(models) as d:
        listed = {m["name"]: m["weights"] for m in d.request("GET", "/v1/models")[2]["models"]}
        if listed != {"f32": "f32", "int8": "int8"}:
            C.fail_check("served: /v1/models weights %r" % listed)
        sid = d.request("POST", "/v1/sessions", {"model": "int8"})[2]["id"]
        got = [d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": [x]})[2]
               ["outputs"][0] for x in seq]
        if want is None or got != want[0]:
            C.fail_check("served %s int8: session steps differ from rnnd infer (%s)"
                         % (name, err))
        d.stop()
    print("served: %s in f32/int8, weights reported, session steps == rnnd infer" % name)


def listed(folder):
    return sorted(d for d in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, d, "case.json")))


os.makedirs(TMP, exist_ok=True)
ALL = ([(n, os.path.join(GOLDEN_DIR, n), TOL) for n in listed(GOLDEN_DIR)] +
       [(n, os.path.join(SL_DIR, n), TOL) for n in ("slstm3_vectors", "slstm2_tokens_head")] +
       [(n, os.path.join(CLOCK_DIR, n), TOL) for n in listed(CLOCK_DIR)] +
       [(n, os.path.join(DG_DIR, n), TOL) for n in listed(DG_DIR)])


class Int8(Case):
    """A test per case (test_NAME, made below) and one for the refusals; the table of worst
    errors is printed for the cases that ran."""

    worst = {}

    @classmethod
    def setUpClass(cls):
        cls.paths = isas()
        print("paths: %s" % ", ".join(cls.paths))
        cls.addClassCleanup(cls.print_table)

    @classmethod
    def print_table(cls):
        print("| case | int8 |")
        print("|---|---:|")
        for name, _, _ in ALL:
            if name in cls.worst:
                print("| %s | %.2e |" % (name, cls.worst[name]))

    def test_refusals(self):
        check_refusals()

    def test_served(self):
        check_served()


for _name, _dir, _tol in ALL:
    assert not hasattr(Int8, "test_" + _name), "two cases named " + _name
    setattr(Int8, "test_" + _name, lambda self, n=_name, d=_dir, t=_tol: check_case(
        n, d, self.paths, self.worst, t))


if __name__ == "__main__":
    unittest.main()
