"""Half-size weights (bf16 / f16) end to end: converter, loader, `rnnd inspect`, `rnnd infer`.

1. Every golden case ($RNND_GOLDEN_DIR, the clockwork cases of tests/data/golden_clock and the
   depth-gated lstm cases of tests/data/golden_dglstm) is converted from ONNX (or its native
   spec) with `--weight-type bf16` and `--weight-type f16`. The file stores exactly the weight
   matrices (W, R, proj, V, D,
   head.weight) as BF16 / F16, everything else F32, and is smaller than the f32 file by
   2 bytes per matrix element; `rnnd inspect --json` reports the type.
2. Correctness: `rnnd infer` on every SIMD path this CPU runs matches the float64 NumPy
   reference (tools/rnnd_convert/reference.py, which reads the half tensors itself) within the
   case's own float tolerance: the half model is computed right. avx2 and avx512 give the
   same bits.
3. Accuracy: the same outputs against the case's fp32 golden `expected` within
   |got - exp| <= TOL * (1 + |exp|), TOL per type below: the price of rounding the weights.
   The worst error per case is printed (docs/performance.md, "Half-size weights", has the
   table) and the bound is asserted.
4. The same model stored as F32 with "weights" set in the architecture (rounded at load)
   gives bitwise the outputs of the BF16 / F16 file.
   The sLSTM golden cases of tests/data/golden_slstm (but the large-gates one) go through
   1-4 too.
5. Refusals: the converter refuses a weight beyond float16's range naming the tensor, and
   rnnd refuses a file whose architecture names an unknown weight type.

6. The bf16 compute mode (docs/kernels.md, "bf16 compute"; class Bf16Compute): every case's
   bf16 file run with `rnnd infer --compute bf16` on every path stays within TOL_C[case] of
   the fp32 golden outputs (|got - exp| <= TOL_C * (1 + |exp|); docs/performance.md, "bf16
   compute", has the measured table), avx2 (the scalar statement of VDPBF16PS) and avx512
   (the instruction, where the CPU has AVX512-BF16) give the same bits, and the mode's
   outputs are not the default mode's. `--compute bf16` on an f32 file is refused. Served
   with `--compute bf16`: a session of the bf16 model stepped one input at a time gives
   bitwise `rnnd infer --compute bf16`, while the f32 model in the same daemon keeps the
   bits of `rnnd infer`.

Prints what it checked. Each case is a test (Half.test_CASE, Bf16Compute.test_CASE), and so
is each of 5 and the served model; only failures are counted, as checks that failed.
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
from rnnd_convert import reference

PYTHON3 = os.environ.get("PYTHON3", sys.executable)
RNND_BIN = os.environ["RNND_BIN"]
GOLDEN_DIR = os.environ["RNND_GOLDEN_DIR"]
CLOCK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden_clock")
TMP = os.path.join(os.environ.get("RNND_TEST_TMP", "/tmp"), "half")

# Bounds on |got - expected| / (1 + |expected|) against the fp32 golden outputs: about twice
# the worst measured over the cases (bf16 2.2e-3, f16 2.6e-4, both rnn_*_vectors; bf16 keeps
# 8 significant bits, f16 11). They describe these small models: bigger or longer-running
# ones can accumulate more.
TOL = {"bf16": 5e-3, "f16": 5e-4}
# The depth-gated lstm cases run 250-401 steps through 2-4 layers: about twice their worst
# measured (bf16 7.4e-3, f16 2.7e-4, both dglstm_mixed_vectors).
TOL_DG = {"bf16": 1.5e-2, "f16": 6e-4}
MATRICES = ("W", "R", "proj", "V", "D")
DG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden_dglstm")

def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def convert(onnx, out, wtype):
    cmd = [PYTHON3, "-m", "rnnd_convert", onnx, "-o", out, "-q"]
    if wtype != "f32":
        cmd += ["--weight-type", wtype]
    return run(cmd)


def header(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), len(data)


def is_matrix(name):
    return name == "head.weight" or (name.startswith("layers.")
                                     and name.split(".")[-1] in MATRICES)


def infer(model, seqs, isa, compute="f32"):
    p = run([RNND_BIN, "infer", "--model", model, "--compute", compute],
            input=json.dumps({"inputs": seqs}), env=dict(os.environ, RNND_ISA=isa))
    if p.returncode != 0:
        return None, p.stderr.strip()
    return json.loads(p.stdout)["outputs"], None


def isas():
    out = []
    for isa in ("scalar", "avx2", "avx512"):
        p = run([RNND_BIN, "infer", "--model", "/nonexistent.rnnd"], input="{}",
                env=dict(os.environ, RNND_ISA=isa))
        if "unsupported" not in p.stderr:
            out.append(isa)
    return out


def check_file(name, path, f32_path, wtype):
    """The half file's layout against the f32 file's."""
    h, size = header(path)
    h32, size32 = header(f32_path)
    arch = json.loads(h["__metadata__"]["architecture"])
    if arch.get("weights") != wtype:
        C.fail_check("%s %s: architecture weights %r" % (name, wtype, arch.get("weights")))
    saved = 0
    for t, e in h.items():
        if t == "__metadata__":
            continue
        want = {"bf16": "BF16", "f16": "F16"}[wtype] if is_matrix(t) else "F32"
        if e["dtype"] != want:
            C.fail_check("%s %s: %s stored as %s, want %s" % (name, wtype, t, e["dtype"], want))
        if e["shape"] != h32[t]["shape"]:
            C.fail_check("%s %s: %s shape %s" % (name, wtype, t, e["shape"]))
        if is_matrix(t):
            saved += 2 * int(np.prod(e["shape"]))
    # the headers differ a little (dtype strings, padding): allow 64 bytes either way
    if not abs((size32 - size) - saved) <= 64 or saved == 0:
        C.fail_check("%s %s: file %d bytes, f32 %d: expected about %d bytes less" % (
            name, wtype, size, size32, saved))
    p = run([RNND_BIN, "inspect", "--json", path])
    if p.returncode != 0 or json.loads(p.stdout).get("weights") != wtype:
        C.fail_check("%s %s: rnnd inspect: %s" % (name, wtype, p.stdout or p.stderr))


def rel_err(got, exp):
    g = np.asarray(got, dtype=np.float64)
    e = np.asarray(exp, dtype=np.float64)
    return float(np.max(np.abs(g - e) / (1.0 + np.abs(e))))


def as_float32_file(src, dst):
    """SRC (a half file) rewritten with every tensor F32 (the half values widened, exactly),
    the architecture still naming the half type: the loader rounds them at load."""
    with open(src, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    h = json.loads(data[8:8 + n])
    base = 8 + n
    wtype = json.loads(h["__metadata__"]["architecture"])["weights"]
    out = {"__metadata__": h["__metadata__"]}
    blobs, off = [], 0
    for t, e in h.items():
        if t == "__metadata__":
            continue
        b, end = e["data_offsets"]
        if e["dtype"] == "F32":
            a = np.frombuffer(data[base + b:base + end], dtype="<f4")
        else:
            u = np.frombuffer(data[base + b:base + end], dtype="<u2")
            a = (u.astype(np.uint32) << 16).view(np.float32) if wtype == "bf16" else \
                u.view("<f2").astype(np.float32)
        raw = a.astype("<f4").tobytes()
        out[t] = {"dtype": "F32", "shape": e["shape"], "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(out).encode()
    text += b" " * ((-(8 + len(text))) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def check_case(name, case_dir, paths, worst, tol=TOL):
    with open(os.path.join(case_dir, "case.json")) as f:
        case = json.load(f)
    onnx = os.path.join(case_dir, case.get("model", "model.onnx"))
    seqs = case["sequences"]
    f32 = os.path.join(TMP, name + ".f32.rnnd")
    p = convert(onnx, f32, "f32")
    if p.returncode != 0:
        C.fail_check("%s: f32 conversion: %s" % (name, p.stderr.strip()))
        return
    for wtype in ("bf16", "f16"):
        path = os.path.join(TMP, "%s.%s.rnnd" % (name, wtype))
        p = convert(onnx, path, wtype)
        if p.returncode != 0:
            C.fail_check("%s %s: conversion: %s" % (name, wtype, p.stderr.strip()))
            continue
        check_file(name, path, f32, wtype)
        ref, _ = reference.run(path, [np.asarray(s) if case["input"]["kind"] == "vectors"
                                      else s for s in seqs])
        outs = {}
        for isa in paths:
            got, err = infer(path, seqs, isa)
            if got is None:
                C.fail_check("%s %s [%s]: rnnd infer: %s" % (name, wtype, isa, err))
                continue
            outs[isa] = got
            # computed right: the float64 reference of the same half weights
            for b, (g, r) in enumerate(zip(got, ref)):
                g = np.asarray(g)
                if g.shape != r.shape or not np.all(
                        np.abs(g - r) <= case["atol"] + case["rtol"] * np.abs(r)):
                    C.fail_check("%s %s [%s]: sequence %d differs from the reference of the half "
                         "model (max %.3g)" % (name, wtype, isa, b, float(np.max(np.abs(
                             g - r))) if g.shape == r.shape else float("inf")))
            # accurate: against the fp32 golden outputs
            e = max(rel_err(g, x) for g, x in zip(got, case["expected"]))
            worst[wtype][name] = max(worst[wtype].get(name, 0.0), e)
            if not e <= tol[wtype]:
                C.fail_check("%s %s [%s]: error %.3g against the fp32 golden outputs > %.3g" % (
                    name, wtype, isa, e, tol[wtype]))
        if "avx2" in outs and "avx512" in outs and outs["avx2"] != outs["avx512"]:
            C.fail_check("%s %s: avx2 and avx512 differ" % (name, wtype))
        # the same weights stored F32, rounded at load: the same bits
        alt = os.path.join(TMP, "%s.%s.asf32.rnnd" % (name, wtype))
        as_float32_file(path, alt)
        isa = paths[-1]
        got, err = infer(alt, seqs, isa)
        if got is None or got != outs.get(isa):
            C.fail_check("%s %s: F32-stored file with weights=%s: %s" % (
                name, wtype, wtype, err or "outputs differ from the half file"))
        print("case %-28s %-4s max |err|/(1+|exp|) vs fp32 golden %.3g; reference and "
              "F32-stored copy match on %s" % (name, wtype, worst[wtype][name],
                                               ", ".join(paths)))


def check_refusals():
    # a native model with one weight beyond float16's range
    spec = {"format_version": 1, "input": {"kind": "vectors", "dim": 2},
            "layers": [{"type": "rnn", "hidden_size": 2}], "weights": "w.npz"}
    W = np.array([[1.0, 2.0], [3.0, 70000.0]], np.float32)
    np.savez(os.path.join(TMP, "w.npz"), **{"layers.0.0.W": W,
                                            "layers.0.0.R": np.eye(2, dtype=np.float32)})
    with open(os.path.join(TMP, "big.json"), "w") as f:
        json.dump(spec, f)
    out = os.path.join(TMP, "big.rnnd")
    p = convert(os.path.join(TMP, "big.json"), out, "f16")
    if p.returncode != 1 or "layers.0.0.W: value 70000 out of float16 range" not in p.stderr:
        C.fail_check("f16 overflow: converter exit %d: %s" % (p.returncode, p.stderr.strip()))
    else:
        print("converter refuses f16 overflow: " + p.stderr.strip())
    p = convert(os.path.join(TMP, "big.json"), out, "bf16")     # in bfloat16's range
    if p.returncode != 0:
        C.fail_check("bf16 of 70000: %s" % p.stderr.strip())
    else:
        got, err = infer(out, [[[1.0, 1.0]]], "auto")
        # W rounds to [[1, 2], [3, 70144]]: h = tanh(W x + R h0) with zero biases
        want = np.tanh(np.array([3.0, 70147.0]))
        if got is None or not np.allclose(got[0][0], want, rtol=1e-6):
            C.fail_check("bf16 native model: %s" % (err or got))
    # an unknown weight type in the architecture
    src = ensure_converted("lstm_vectors", "f32")
    if src and os.path.exists(src):
        with open(src, "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        h = json.loads(data[8:8 + n])
        a = json.loads(h["__metadata__"]["architecture"])
        a["weights"] = "fp8"
        h["__metadata__"]["architecture"] = json.dumps(a)
        text = json.dumps(h).encode()
        text += b" " * ((-(8 + len(text))) % 8)
        path = os.path.join(TMP, "fp8.rnnd")
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + data[8 + n:])
        p = run([RNND_BIN, "inspect", path])
        if p.returncode != 1 or "architecture.weights: unknown value \"fp8\"" not in p.stderr:
            C.fail_check("unknown weights: inspect exit %d: %s" % (p.returncode, p.stderr.strip()))
        else:
            print("rnnd refuses an unknown weight type: " + p.stderr.strip())
    else:
        C.fail_check("no lstm_vectors golden case to edit")


def check_mlp_head(paths):
    """An MLP head (docs/model-format.md, "The head"): its linear weights are matrices, stored
    half-size; a layernorm's weight and every bias stay F32. The half model computes what the
    reference computes over the rounded values, on every path."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
    from rnnd_convert import reference
    rng = np.random.default_rng(9)
    spec = {"format_version": 1, "input": {"kind": "vectors", "dim": 3},
            "layers": [{"type": "gru", "hidden_size": 6}],
            "head": {"in_dim": 6, "out_dim": 4, "norm": "softmax", "layers": [
                {"op": "layernorm"}, {"op": "linear", "in_dim": 6, "out_dim": 7},
                {"op": "gelu"}, {"op": "linear", "in_dim": 7, "out_dim": 4}]},
            "weights": "mlp.npz"}
    t = {"layers.0.0.W": (18, 3), "layers.0.0.R": (18, 6), "head.0.weight": (6,),
         "head.0.bias": (6,), "head.1.weight": (7, 6), "head.1.bias": (7,),
         "head.3.weight": (4, 7), "head.3.bias": (4,)}
    np.savez(os.path.join(TMP, "mlp.npz"),
             **{k: rng.uniform(-1, 1, v).astype(np.float32) for k, v in t.items()})
    with open(os.path.join(TMP, "mlp.json"), "w") as f:
        json.dump(spec, f)
    seqs = [rng.uniform(-2, 2, (n, 3)).tolist() for n in (1, 6)]
    for wtype in ("bf16", "f16"):
        out = os.path.join(TMP, "mlp.%s.rnnd" % wtype)
        p = convert(os.path.join(TMP, "mlp.json"), out, wtype)
        if p.returncode != 0:
            C.fail_check("mlp %s: %s" % (wtype, p.stderr.strip()))
            continue
        h, _ = header(out)
        half = {"bf16": "BF16", "f16": "F16"}[wtype]
        got = {k: e["dtype"] for k, e in h.items() if k.startswith("head.")}
        want = {k: half if k in ("head.1.weight", "head.3.weight") else "F32" for k in got}
        if got != want or len(got) != 6:
            C.fail_check("mlp %s: head dtypes %s, want %s" % (wtype, got, want))
        exp = reference.run(reference.load(out), [np.asarray(s) for s in seqs])[0]
        for isa in paths:
            outs, err = infer(out, seqs, isa)
            if outs is None or max(rel_err(g, e) for g, e in zip(outs, exp)) > 1e-5:
                C.fail_check("mlp %s [%s]: rnnd infer vs the reference of the rounded values: "
                             "%s" % (wtype, isa,
                                     err or max(rel_err(g, e) for g, e in zip(outs, exp))))
    print("mlp head: linear weights half-size, layernorm and biases F32, outputs match the "
          "reference on %s" % ", ".join(paths))


def check_served(cases):
    """The daemon serves a half model: /v1/models reports its weight type, and a session fed
    step by step gives bitwise the outputs of `rnnd infer` on the same file."""
    name = next(n for n in cases if json.load(open(os.path.join(GOLDEN_DIR, n, "case.json")))
                ["stateful"])
    case = json.load(open(os.path.join(GOLDEN_DIR, name, "case.json")))
    seq = case["sequences"][0]
    models = {w: ensure_converted(name, w) for w in ("f32", "bf16", "f16")}
    with Daemon(models) as d:
        listed = {m["name"]: m["weights"] for m in d.request("GET", "/v1/models")[2]["models"]}
        if listed != {"f32": "f32", "bf16": "bf16", "f16": "f16"}:
            C.fail_check("served: /v1/models weights %r" % listed)
        for w in ("bf16", "f16"):
            want, err = infer(models[w], [seq], "avx2")
            sid = d.request("POST", "/v1/sessions", {"model": w})[2]["id"]
            got = [d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": [x]})[2]
                   ["outputs"][0] for x in seq]
            if want is None or got != want[0]:
                C.fail_check("served %s %s: session steps differ from rnnd infer (%s)"
                             % (name, w, err))
        d.stop()
    print("served: %s in f32/bf16/f16, weights reported, session steps == rnnd infer" % name)


def listed(folder):
    return sorted(d for d in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, d, "case.json")))


def ensure_converted(name, wtype):
    """The WTYPE file of golden case NAME as check_case converts it, converted here when
    that case's test has not run (a test run alone); None when there is no such case."""
    path = os.path.join(TMP, "%s.%s.rnnd" % (name, wtype))
    case_dir = os.path.join(GOLDEN_DIR, name)
    if not os.path.exists(path) and os.path.isfile(os.path.join(case_dir, "case.json")):
        with open(os.path.join(case_dir, "case.json")) as f:
            case = json.load(f)
        convert(os.path.join(case_dir, case.get("model", "model.onnx")), path, wtype)
    return path if os.path.exists(path) else None


os.makedirs(TMP, exist_ok=True)
SL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden_slstm")
GOLDEN = listed(GOLDEN_DIR)
# sLSTM from native specs (its block-diagonal R is a matrix like any other); not the
# large-gates case, whose x12 weights are there to saturate, not to be rounded
SLSTMS = ["slstm3_vectors", "slstm2_tokens_head"]
CLOCKS = listed(CLOCK_DIR)
DGS = listed(DG_DIR)
# (name, folder, tolerance) of every case, in the order of the printed table
ALL = ([(n, os.path.join(GOLDEN_DIR, n), TOL) for n in GOLDEN] +
       [(n, os.path.join(SL_DIR, n), TOL) for n in SLSTMS] +
       [(n, os.path.join(CLOCK_DIR, n), TOL) for n in CLOCKS] +
       [(n, os.path.join(DG_DIR, n), TOL_DG) for n in DGS])


class Half(Case):
    """A test per case (test_NAME, made below) and one per other part; the table of worst
    errors is printed for the cases that ran."""

    worst = {"bf16": {}, "f16": {}}

    @classmethod
    def setUpClass(cls):
        cls.paths = isas()
        print("paths: %s" % ", ".join(cls.paths))
        cls.addClassCleanup(cls.print_table)

    @classmethod
    def print_table(cls):
        print("| case | bf16 | f16 |")
        print("|---|---:|---:|")
        for name, _, _ in ALL:
            if name in cls.worst["bf16"] or name in cls.worst["f16"]:
                print("| %s | %.2e | %.2e |" % (name, cls.worst["bf16"].get(name, float("nan")),
                                                cls.worst["f16"].get(name, float("nan"))))

    def test_case_lists(self):
        if not GOLDEN:
            C.fail_check("no golden cases in %s" % GOLDEN_DIR)
        if len(CLOCKS) < 3:
            C.fail_check("clockwork cases in %s: %s" % (CLOCK_DIR, CLOCKS))
        if not DGS:
            C.fail_check("no depth-gated lstm cases in %s" % DG_DIR)

    def test_refusals(self):
        check_refusals()

    def test_mlp_head(self):
        check_mlp_head(self.paths)

    def test_served(self):
        check_served(GOLDEN)


for _name, _dir, _tol in ALL:
    assert not hasattr(Half, "test_" + _name), "two cases named " + _name
    setattr(Half, "test_" + _name, lambda self, n=_name, d=_dir, t=_tol: check_case(
        n, d, self.paths, self.worst, t))


# The bf16 compute mode against the fp32 golden outputs, |got - exp| / (1 + |exp|): about twice
# the worst measured per case on this CPU family (docs/performance.md, "bf16 compute"), at
# least 5e-3 (the default mode's bound). Rounding every input of every product to bf16 costs
# more than rounding the weights alone: the recurrent state is rounded each step.
TOL_C_DEFAULT = 5e-3
TOL_C = {"rnn_relu_vectors": 6e-3, "clock3_vectors": 1e-2, "dglstm3_vectors": 1e-2,
         "dglstm_mixed_vectors": 1.5e-2}


def bf16_file(name, case_dir):
    """The bf16 file of case NAME as check_case converts it (converted here if missing)."""
    path = os.path.join(TMP, "%s.bf16.rnnd" % name)
    with open(os.path.join(case_dir, "case.json")) as f:
        case = json.load(f)
    if not os.path.exists(path):
        p = convert(os.path.join(case_dir, case.get("model", "model.onnx")), path, "bf16")
        if p.returncode != 0:
            C.fail_check("%s bf16: conversion: %s" % (name, p.stderr.strip()))
            return None, case
    return path, case


def check_compute_case(name, case_dir, paths, worst):
    path, case = bf16_file(name, case_dir)
    if path is None:
        return
    seqs = case["sequences"]
    tol = TOL_C.get(name, TOL_C_DEFAULT)
    outs = {}
    for isa in paths:
        got, err = infer(path, seqs, isa, "bf16")
        if got is None:
            C.fail_check("%s bf16 compute [%s]: rnnd infer: %s" % (name, isa, err))
            continue
        outs[isa] = got
        e = max(rel_err(g, x) for g, x in zip(got, case["expected"]))
        worst[name] = max(worst.get(name, 0.0), e)
        if not e <= tol:
            C.fail_check("%s bf16 compute [%s]: error %.3g against the fp32 golden outputs > "
                         "%.3g" % (name, isa, e, tol))
    if "avx2" in outs and "avx512" in outs and outs["avx2"] != outs["avx512"]:
        C.fail_check("%s bf16 compute: avx2 and avx512 differ" % name)
    isa = paths[-1]
    default, err = infer(path, seqs, isa)
    if default is None or default == outs.get(isa):
        C.fail_check("%s bf16 compute [%s]: the same outputs as the default mode (%s)"
                     % (name, isa, err))
    print("case %-28s bf16 compute max |err|/(1+|exp|) vs fp32 golden %.3g on %s"
          % (name, worst.get(name, float("nan")), ", ".join(paths)))


def check_compute_served():
    """`rnnd serve --compute bf16`: the bf16 model's session steps are `rnnd infer --compute
    bf16`'s bits, the f32 model's are `rnnd infer`'s; and infer refuses the mode for f32."""
    def load(n):
        with open(os.path.join(GOLDEN_DIR, n, "case.json")) as f:
            return json.load(f)
    name = next(n for n in GOLDEN if load(n)["stateful"])
    seq = load(name)["sequences"][0]
    models = {w: ensure_converted(name, w) for w in ("f32", "bf16")}
    p = run([RNND_BIN, "infer", "--model", models["f32"], "--compute", "bf16"],
            input=json.dumps({"inputs": [seq]}))
    # the message names the file (trial 31, F3)
    if p.returncode != 1 or "%s: --compute bf16: the model's weights are f32, not bf16" % (
            models["f32"]) not in p.stderr:
        C.fail_check("infer --compute bf16 of an f32 model: exit %d: %s"
                     % (p.returncode, p.stderr.strip()))
    want = {"bf16": infer(models["bf16"], [seq], "auto", "bf16")[0],
            "f32": infer(models["f32"], [seq], "auto")[0]}
    with Daemon(models, "--compute", "bf16") as d:
        for w in ("bf16", "f32"):
            sid = d.request("POST", "/v1/sessions", {"model": w})[2]["id"]
            got = [d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": [x]})[2]
                   ["outputs"][0] for x in seq]
            if want[w] is None or got != want[w][0]:
                C.fail_check("served --compute bf16 %s %s: session steps differ from rnnd infer"
                             % (name, w))
        d.stop()
    print("served --compute bf16: %s bf16 session == rnnd infer --compute bf16, f32 model "
          "unaffected; infer refuses the mode for f32" % name)


class Bf16Compute(Case):
    """A test per case (test_NAME) and one for the daemon; the table of worst errors is
    printed for the cases that ran."""

    worst = {}

    @classmethod
    def setUpClass(cls):
        cls.paths = isas()
        cls.addClassCleanup(cls.print_table)

    @classmethod
    def print_table(cls):
        print("| case | bf16 compute | bound |")
        print("|---|---:|---:|")
        for name, _, _ in ALL:
            if name in cls.worst:
                print("| %s | %.2e | %.2g |" % (name, cls.worst[name],
                                                TOL_C.get(name, TOL_C_DEFAULT)))

    def test_served(self):
        check_compute_served()

    def test_emulated_warning(self):
        """`rnnd serve --compute bf16` warns (event=compute_emulated) where the kernels take
        the mode's products with the scalar statement (RNND_ISA=avx2), and not where they use
        vdpbf16ps (avx512 on a CPU with avx512_bf16)."""
        with open("/proc/cpuinfo") as f:
            native = "avx512_bf16" in f.read()
        for isa, want in (("avx2", True), ("auto", not native)):
            p = subprocess.Popen([RNND_BIN, "serve", "--listen", "127.0.0.1:0", "--compute",
                                  "bf16"], stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, RNND_ISA=isa))
            lines = []
            for line in p.stderr:
                lines.append(line)
                if "event=ready" in line or len(lines) > 50:
                    break
            p.terminate()
            p.communicate(timeout=30)
            got = any("event=compute_emulated" in x for x in lines)
            C.check(got == want, "RNND_ISA=%s: compute_emulated logged %s, want %s: %s"
                    % (isa, got, want, "".join(lines)))

    def test_bench(self):
        """`rnnd bench --weights bf16 --compute bf16` runs the mode and says so; the mode with
        other weights, or an unknown mode, is a usage error naming the option."""
        for cell, B in (("lstm", 9), ("gru", 1)):
            p = run([RNND_BIN, "bench", "--cell", cell, "--hidden", "24", "--batch", str(B),
                     "--weights", "bf16", "--compute", "bf16", "--seconds", "0.05"])
            ok = p.returncode == 0 and json.loads(p.stdout).get("compute") == "bf16" and \
                json.loads(p.stdout)["steps_per_s"] > 0
            C.check(ok, "bench %s --compute bf16: %s %s" % (cell, p.stdout, p.stderr))
        p = run([RNND_BIN, "bench", "--hidden", "16", "--seconds", "0.05"])
        C.check(p.returncode == 0 and json.loads(p.stdout).get("compute") == "f32",
                "bench: compute f32 by default: %s" % p.stdout)
        for args, want in ((["--compute", "bf16"], "--compute bf16 needs --weights bf16"),
                           (["--weights", "int8", "--compute", "bf16"], "needs --weights bf16"),
                           (["--weights", "bf16", "--compute", "f16"], "--compute must be")):
            p = run([RNND_BIN, "bench"] + args)
            C.check(p.returncode == 2 and want in p.stderr,
                    "bench %s: %d %s" % (" ".join(args), p.returncode, p.stderr))


for _name, _dir, _tol in ALL:
    setattr(Bf16Compute, "test_" + _name, lambda self, n=_name, d=_dir: check_compute_case(
        n, d, self.paths, self.worst))


if __name__ == "__main__":
    unittest.main()
