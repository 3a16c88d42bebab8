#!/usr/bin/env python3
"""Tests of rnnd-convert (tools/rnnd_convert): the files it writes and what it refuses.

- every golden case: converted through the command line; header layout (alignment, padding,
  offsets), metadata, tensor names and shapes, architecture keys, and weights against the
  ONNX initializers they come from;
- hand-built ONNX graphs using the operator's attributes (activations with alpha/beta consumed
  as ONNX Runtime does, clip, reverse, layout=1, peepholes, zero initial states);
- fresh torch.onnx.export graphs, TorchScript (script and trace) and from_module() round
  trips, checked against PyTorch's own output through tools/rnnd_convert/reference.py;
- native specs (Jordan, forget_gate false), vocabularies, the installed launcher;
- tools/rnnd_modules' reference MinGRU / MinLSTM (and a wrapped Clockwork) through
  from_module();
- refusals: exit status and a single line `rnnd-convert: FILE: reason`.

Each part is a test class, runnable alone (README.md, "Developers"); each seeds its own
random numbers.

Env: PYTHON3, PYTHONPATH (= tools), RNND_GOLDEN_DIR, RNND_TEST_TMP, RNND_SRCDIR (optional).
"""
import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import unittest
import warnings
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from daemon_util import RUNNING, Case, main_inproc  # first: it finds tools/ for rnnd_convert
import rnnd_convert
from rnnd_convert import reference
from rnnd_convert.arch import ConvertError

warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("RNND_SRCDIR", os.path.dirname(HERE))
GOLDEN = os.environ.get("RNND_GOLDEN_DIR") or os.path.join(SRCDIR, "tests", "golden")
TMP = os.path.join(os.environ.get("RNND_TEST_TMP") or "/tmp/rnnd-test-tmp", "convert")
PY = os.environ.get("PYTHON3") or sys.executable
shutil.rmtree(TMP, ignore_errors=True)
os.makedirs(TMP)

# a check of the test running now (daemon_util.RUNNING): counted, and a failure of that test
check = RUNNING.check


def tmp(name):
    return os.path.join(TMP, name)


def run_cli(*args):
    """(rc, stdout, stderr) of `python3 -m rnnd_convert ARGS` in a child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(SRCDIR, "tools") + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([PY, "-m", "rnnd_convert"] + list(args), capture_output=True, text=True,
                       env=env)
    return p.returncode, p.stdout, p.stderr


def parse_file(path):
    """Parse an .rnnd file by hand and check the container rules of docs/model-format.md."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    raw = data[8:8 + n]
    text = raw.decode("utf-8")
    check((8 + n) % 4 == 0, "%s: data buffer starts 4-byte aligned" % path)
    check(text == text.rstrip(" ") + " " * (len(text) - len(text.rstrip(" "))),
          "%s: header padded with spaces only" % path)
    header = json.loads(text)
    meta = header.pop("__metadata__")
    check(all(isinstance(v, str) for v in meta.values()), "%s: metadata are strings" % path)
    check(meta.get("format") == "rnnd" and meta.get("format_version") == "1",
          "%s: format rnnd version 1" % path)
    arch = json.loads(meta["architecture"])
    spans = []
    for name, t in header.items():
        check(set(t) == {"dtype", "shape", "data_offsets"}, "%s: %s entry keys" % (path, name))
        check(t["dtype"] == "F32", "%s: %s is F32" % (path, name))
        b, e = t["data_offsets"]
        check(b % 4 == 0, "%s: %s begins 4-byte aligned" % (path, name))
        check(e - b == 4 * int(np.prod(t["shape"], dtype=np.int64)),
              "%s: %s byte count matches its shape" % (path, name))
        spans.append((b, e))
    spans.sort()
    check(all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)),
          "%s: no two tensors overlap" % path)
    check(8 + n + (spans[-1][1] if spans else 0) == len(data), "%s: file size" % path)
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        tensors[name] = np.frombuffer(data, "<f4", (e - b) // 4, 8 + n + b).reshape(t["shape"])
    shapes = {k: list(v["shape"]) for k, v in header.items()}
    return arch, shapes, tensors


LAYER_KEYS = {
    "rnn": {"type", "hidden_size", "direction", "activations", "clip"},
    "lstm": {"type", "hidden_size", "direction", "activations", "clip", "input_forget",
             "peepholes", "forget_gate", "proj_size"},
    "gru": {"type", "hidden_size", "direction", "activations", "clip", "linear_before_reset"},
    "jordan": {"type", "hidden_size", "direction", "activations", "clip", "output_size"},
    "mingru": {"type", "hidden_size", "direction", "activations", "clip"},
    "minlstm": {"type", "hidden_size", "direction", "activations", "clip"},
    "clockwork": {"type", "hidden_size", "direction", "activations", "clip", "periods"},
    "slstm": {"type", "hidden_size", "direction", "heads", "forget"},    # the cell fixes its
}
N_ACT = {"rnn": 1, "lstm": 3, "gru": 2, "jordan": 2, "mingru": 2, "minlstm": 2, "clockwork": 1}


def check_arch_complete(arch, path):
    check(set(arch) == {"format_version", "name", "input", "layers", "head", "vocab",
                        "tokenizer"}, "%s: architecture top-level keys" % path)
    for L in arch["layers"]:
        # depth_gate is written only when true (other lstm files stay byte-identical)
        keys = LAYER_KEYS[L["type"]] | ({"depth_gate"} if L.get("depth_gate") else set())
        check(set(L) == keys, "%s: every %s key written" % (path, L["type"]))
        nd = 2 if L["direction"] == "bidirectional" else 1
        if L["type"] == "slstm":    # exp, tanh, sigmoid: no activations, no clip
            continue
        acts = L["activations"]
        check(len(acts) == nd and all(len(a) == N_ACT[L["type"]] for a in acts),
              "%s: activations explicit per direction" % path)
        check(all(set(a) == {"op", "alpha", "beta"} for d in acts for a in d),
              "%s: activations carry op, alpha and beta" % path)


def expected_names(arch):
    """{tensor name: shape} that the architecture requires, computed from the format doc."""
    out = {}
    inp = arch["input"]
    if inp["kind"] == "tokens":
        out["embedding.weight"] = [inp["vocab_size"], inp["embedding_dim"]]
        in_dim = inp["embedding_dim"]
    else:
        in_dim = inp["dim"]
    for l, L in enumerate(arch["layers"]):
        H = L["hidden_size"]
        G = {"rnn": 1, "gru": 3, "jordan": 1, "mingru": 2, "minlstm": 3, "clockwork": 1}.get(
            L["type"], 4 if L.get("forget_gate", True) else 3)
        od = (L["output_size"] if L["type"] == "jordan" else
              (L.get("proj_size") or H) if L["type"] == "lstm" else H)
        nd = 2 if L["direction"] == "bidirectional" else 1
        for d in range(nd):
            p = "layers.%d.%d." % (l, d)
            out[p + "W"], out[p + "Wb"] = [G * H, in_dim], [G * H]
            if L["type"] == "slstm":       # block-diagonal: H / heads columns
                out[p + "R"], out[p + "Rb"] = [G * H, H // L["heads"]], [G * H]
            elif L["type"] not in ("mingru", "minlstm"):     # those have no R, Rb
                out[p + "R"], out[p + "Rb"] = [G * H, od], [G * H]
            if L.get("peepholes"):
                out[p + "P"] = [3 * H]
            if L.get("proj_size"):
                out[p + "proj"] = [L["proj_size"], H]
            if L["type"] == "jordan":
                out[p + "V"], out[p + "Vb"] = [od, H], [od]
            if L.get("depth_gate"):
                out[p + "D"] = [H, in_dim]
                out[p + "Dc"] = out[p + "Dl"] = out[p + "Db"] = [H]
        in_dim = od * nd
    if arch["head"]:
        out["head.weight"] = [arch["head"]["out_dim"], arch["head"]["in_dim"]]
        out["head.bias"] = [arch["head"]["out_dim"]]
    return out


# ---- 1. the golden cases ----------------------------------------------------------------
# What each case is, from its description in case.json (not from our output).
GOLDEN_EXPECT = {
    "gru2_tokens_head": dict(input=("tokens", 30, 8), layers=[("gru", 16, "forward")] * 2,
                             head=(30, 16), extra={"linear_before_reset": 1}),
    "gru_vectors": dict(input=("vectors", 4), layers=[("gru", 8, "forward")],
                        extra={"linear_before_reset": 1}),
    "lstm2_tokens_head": dict(input=("tokens", 30, 8), layers=[("lstm", 16, "forward")] * 2,
                              head=(30, 16)),
    "lstm_bidir_vectors": dict(input=("vectors", 4), layers=[("lstm", 6, "bidirectional")]),
    "lstm_vectors": dict(input=("vectors", 4), layers=[("lstm", 8, "forward")]),
    "onnx_gru_reset_before": dict(input=("vectors", 3), layers=[("gru", 5, "forward")],
                                  extra={"linear_before_reset": 0}),
    "onnx_lstm_cifg": dict(input=("vectors", 3), layers=[("lstm", 5, "forward")],
                           extra={"input_forget": True, "peepholes": False}),
    "onnx_lstm_clip_hardsigmoid": dict(
        input=("vectors", 3), layers=[("lstm", 5, "forward")],
        extra={"clip": 0.7, "activations": [[{"op": "HardSigmoid", "alpha": 0.2, "beta": 0.5},
                                             {"op": "Tanh", "alpha": 0.0, "beta": 0.0},
                                             {"op": "Tanh", "alpha": 0.0, "beta": 0.0}]]}),
    "onnx_lstm_peephole": dict(input=("vectors", 3), layers=[("lstm", 5, "forward")],
                               extra={"peepholes": True, "input_forget": False}),
    "onnx_lstm_reverse": dict(input=("vectors", 3), layers=[("lstm", 5, "reverse")]),
    "rnn_relu_vectors": dict(input=("vectors", 3), layers=[("rnn", 5, "forward")],
                             extra={"activations": [[{"op": "Relu", "alpha": 0.0,
                                                      "beta": 0.0}]]}),
    "rnn_tanh_vectors": dict(input=("vectors", 3), layers=[("rnn", 5, "forward")],
                             extra={"activations": [[{"op": "Tanh", "alpha": 0.0,
                                                      "beta": 0.0}]]}),
}


class Golden(Case):
    def test_golden(self):
        cases = sorted(d for d in os.listdir(GOLDEN) if os.path.isdir(os.path.join(GOLDEN, d)))
        check(set(GOLDEN_EXPECT) <= set(cases), "all 12 golden cases present in %s" % GOLDEN)
        for c in cases:
            src = os.path.join(GOLDEN, c, "model.onnx")
            out = tmp(c + ".rnnd")
            rc, so, se = run_cli(src, "-o", out, "--name", c)
            check(rc == 0 and se == "", "golden %s converts (rc %d, stderr %r)" % (c, rc, se))
            if rc != 0:
                continue
            arch, shapes, tensors = parse_file(out)
            check_arch_complete(arch, c)
            check(arch["name"] == c, "%s: --name written" % c)
            check(shapes == expected_names(arch), "%s: tensor names and shapes %s" % (c, shapes))
            exp = GOLDEN_EXPECT.get(c)
            if exp is None:
                continue
            inp = arch["input"]
            if exp["input"][0] == "tokens":
                check(inp == {"kind": "tokens", "vocab_size": exp["input"][1],
                              "embedding_dim": exp["input"][2]}, "%s: input %s" % (c, inp))
            else:
                check(inp == {"kind": "vectors", "dim": exp["input"][1]}, "%s: input %s" % (c, inp))
            got = [(L["type"], L["hidden_size"], L["direction"]) for L in arch["layers"]]
            check(got == exp["layers"], "%s: layers %s" % (c, got))
            head = arch["head"]
            if "head" in exp:
                check(head == {"out_dim": exp["head"][0], "in_dim": exp["head"][1], "norm": "none"},
                      "%s: head %s" % (c, head))
            else:
                check(head is None, "%s: no head" % c)
            for k, v in exp.get("extra", {}).items():
                for L in arch["layers"]:
                    got = L[k]
                    if k == "clip":
                        got = round(got, 6)
                    check(got == v, "%s: %s = %r, expected %r" % (c, k, got, v))
            check_golden_weights(c, src, tensors, arch)


def check_golden_weights(c, src, tensors, arch):
    """The written weights are the ONNX initializers, split as the format says."""
    g = onnx.load(src).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes = [n for n in g.node if n.op_type in ("LSTM", "GRU", "RNN")]
    for l, node in enumerate(nodes):
        W, R = inits[node.input[1]], inits[node.input[2]]
        B = inits[node.input[3]] if len(node.input) > 3 and node.input[3] else None
        GH = W.shape[1]
        for d in range(W.shape[0]):
            p = "layers.%d.%d." % (l, d)
            check(np.array_equal(tensors[p + "W"], W[d]), "%s: %sW = W[%d]" % (c, p, d))
            check(np.array_equal(tensors[p + "R"], R[d]), "%s: %sR = R[%d]" % (c, p, d))
            if B is not None:
                check(np.array_equal(tensors[p + "Wb"], B[d, :GH]) and
                      np.array_equal(tensors[p + "Rb"], B[d, GH:]), "%s: %sWb/Rb split B" % (c, p))
        if len(node.input) > 7 and node.input[7]:
            P = inits[node.input[7]]
            check(np.array_equal(tensors["layers.%d.0.P" % l], P[0]), "%s: P" % c)
    if "embedding.weight" in tensors:
        emb = [n for n in g.node if n.op_type == "Gather" and n.input[0] in inits][0]
        check(np.array_equal(tensors["embedding.weight"], inits[emb.input[0]]),
              "%s: embedding.weight" % c)
    if "head.weight" in tensors:
        mm = [n for n in g.node if n.op_type == "MatMul"][0]
        check(np.array_equal(tensors["head.weight"], inits[mm.input[1]].T),
              "%s: head.weight is the MatMul weight transposed" % c)


# ---- 2. hand-built ONNX graphs ----------------------------------------------------------
def f32(a):
    return np.asarray(a, dtype=np.float32)


def save_graph(path, nodes, inits, inputs, outputs, opset=14):
    g = helper.make_graph(nodes, "g", inputs, outputs,
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def vin(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def rec_graph(path, op="LSTM", H=4, I=3, nd=1, attrs=None, P=None, B=True, h0=None,
              extra_inputs=(), seqlens=None, outputs=("Y",), layout=0, Wshape=None, rng=None):
    """A single recurrent node X -> Y (plus optional pieces)."""
    rng = rng or np.random.default_rng(1)
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    inits = {"W": f32(rng.normal(size=Wshape or (nd, G * H, I))),
             "R": f32(rng.normal(size=(nd, G * H, H)))}
    ins = ["X", "W", "R"]
    ins.append("B" if B else "")
    if B:
        inits["B"] = f32(rng.normal(size=(nd, 2 * G * H)))
    ins.append(seqlens or "")
    ins.append(h0 if isinstance(h0, str) else "h0" if h0 is not None else "")
    if h0 is not None and not isinstance(h0, str):
        inits["h0"] = f32(h0)
    if op == "LSTM":
        ins.append("")
        if P is not None:
            inits["P"] = f32(P)
            ins.append("P")
    while ins and ins[-1] == "":
        ins.pop()
    a = dict(hidden_size=H)
    a.update(attrs or {})
    if layout:
        a["layout"] = 1
    outs = [o if o in outputs else "" for o in ("Y", "Y_h", "Y_c")[:3 if op == "LSTM" else 2]]
    node = helper.make_node(op, ins, outs, name="rec", **a)
    xs = ["T", "N", I] if not layout else ["N", "T", I]
    gin = [vin("X", xs)] + [vin(n, None, t) for n, t in extra_inputs]
    gout = [vin(o, None) for o in outputs]
    save_graph(path, [node], inits, gin, gout)
    return inits


class HandBuilt(Case):
    def test_hand_built(self):
        # activations with alpha/beta consumed in order by the activations that take them
        acts = ["HardSigmoid", "LeakyRelu", "ScaledTanh", "sigmoid", "Affine", "Elu"]
        path = tmp("acts.onnx")
        inits = rec_graph(path, "LSTM", H=3, I=2, nd=2, P=np.ones((2, 9)), attrs=dict(
            direction="bidirectional", activations=acts,
            activation_alpha=[0.3, 0.05, 1.5, 0.7, 0.9],
            activation_beta=[0.6, 0.8, 0.1], clip=2.5, input_forget=1))
        rc, err = main_inproc(path, "-o", tmp("acts.rnnd"))
        check(rc == 0, "LSTM with every attribute converts: %s" % err)
        arch, shapes, t = parse_file(tmp("acts.rnnd"))
        L = arch["layers"][0]
        want = [[{"op": "HardSigmoid", "alpha": 0.3, "beta": 0.6},
                 {"op": "LeakyRelu", "alpha": 0.05, "beta": 0.0},
                 {"op": "ScaledTanh", "alpha": 1.5, "beta": 0.8}],
                [{"op": "Sigmoid", "alpha": 0.0, "beta": 0.0},
                 {"op": "Affine", "alpha": 0.7, "beta": 0.1},
                 {"op": "Elu", "alpha": 0.9, "beta": 0.0}]]
        check(L["activations"] == want, "alpha/beta consumed in ONNX Runtime order: %s"
              % L["activations"])
        check(L["clip"] == 2.5 and L["input_forget"] is True and L["peepholes"] is True and
              L["direction"] == "bidirectional", "clip, input_forget, peepholes, bidirectional")
        check(np.array_equal(t["layers.0.1.P"], np.ones(9, np.float32)) and
              np.array_equal(t["layers.0.1.W"], inits["W"][1]), "backward direction weights")

        # one set of activations for two directions is used for both; a default fills in alpha
        rec_graph(path, "GRU", H=3, I=2, nd=2, attrs=dict(
            direction="bidirectional", activations=["HardSigmoid", "Tanh"], linear_before_reset=1))
        rc, err = main_inproc(path, "-o", tmp("g.rnnd"))
        arch = parse_file(tmp("g.rnnd"))[0]
        a = arch["layers"][0]["activations"]
        check(rc == 0 and a[0] == a[1] and a[0][0] == {"op": "HardSigmoid", "alpha": 0.2,
                                                       "beta": 0.5},
              "bidirectional GRU with one activation list: %s %s" % (err, a))
        check(arch["layers"][0]["linear_before_reset"] == 1, "linear_before_reset 1 kept")

        # reverse RNN without bias, zero initial_h initializer, RNN's two-activation default
        rec_graph(path, "RNN", H=4, I=3, B=False, h0=np.zeros((1, 1, 4)),
                  attrs=dict(direction="reverse", activations=["Relu", "Tanh"]))
        rc, err = main_inproc(path, "-o", tmp("r.rnnd"))
        arch, shapes, t = parse_file(tmp("r.rnnd"))
        L = arch["layers"][0]
        check(rc == 0 and L["direction"] == "reverse" and L["activations"][0][0]["op"] == "Relu",
              "reverse RNN, zero initial_h accepted: %s" % err)
        check(not t["layers.0.0.Wb"].any() and not t["layers.0.0.Rb"].any() and
              shapes["layers.0.0.Wb"] == [4], "Wb and Rb written as zeros without a bias")

        # layout=1 (batch-first X and Y)
        rec_graph(path, "LSTM", H=4, I=3, layout=1)
        rc, err = main_inproc(path, "-o", tmp("l.rnnd"))
        check(rc == 0, "layout=1 accepted: %s" % err)

        # an all-zero P is no peephole at all
        rec_graph(path, "LSTM", H=4, I=3, P=np.zeros((1, 12)))
        rc, err = main_inproc(path, "-o", tmp("p0.rnnd"))
        arch, shapes, _ = parse_file(tmp("p0.rnnd"))
        check(rc == 0 and arch["layers"][0]["peepholes"] is False and
              "layers.0.0.P" not in shapes, "an all-zero P becomes peepholes false")

        # the converted hand-built LSTM computes what the ONNX equations say (checked in float64
        # by a literal transcription of the ONNX LSTM spec, for one direction)
        rng = np.random.default_rng(5)
        inits = rec_graph(path, "LSTM", H=3, I=2, P=rng.normal(size=(1, 9)),
                          attrs=dict(activations=["Sigmoid", "Softsign", "Softplus"], clip=1.2))
        rc, err = main_inproc(path, "-o", tmp("s.rnnd"))
        xs = rng.normal(size=(7, 2))
        got = reference.run(tmp("s.rnnd"), [xs])[0][0]
        want = onnx_lstm_spec(xs, inits["W"][0], inits["R"][0], inits["B"][0], inits["P"][0], 1.2)
        check(rc == 0 and np.allclose(got, want, atol=1e-5),
              "hand-built LSTM (Softsign, Softplus, clip, peepholes) computes the ONNX equations")


def onnx_lstm_spec(xs, W, R, B, P, clip):
    """ONNX LSTM, forward, activations Sigmoid/Softsign/Softplus, written from the ONNX doc."""
    H = R.shape[1]
    Wi, Wo, Wf, Wc = np.split(W.astype(np.float64), 4)
    Ri, Ro, Rf, Rc = np.split(R.astype(np.float64), 4)
    Wbi, Wbo, Wbf, Wbc, Rbi, Rbo, Rbf, Rbc = np.split(B.astype(np.float64), 8)
    Pi, Po, Pf = np.split(P.astype(np.float64), 3)
    h, c = np.zeros(H), np.zeros(H)
    sig = lambda v: 1 / (1 + np.exp(-v))            # noqa: E731
    g = lambda v: v / (1 + np.abs(v))               # noqa: E731
    hh = lambda v: np.log(1 + np.exp(v))            # noqa: E731
    cl = lambda v: np.clip(v, -clip, clip)          # noqa: E731
    out = []
    for x in xs:
        it = sig(cl(Wi @ x + Ri @ h + Pi * c + Wbi + Rbi))
        ft = sig(cl(Wf @ x + Rf @ h + Pf * c + Wbf + Rbf))
        ct = g(cl(Wc @ x + Rc @ h + Wbc + Rbc))
        c = ft * c + it * ct
        ot = sig(cl(Wo @ x + Ro @ h + Po * c + Wbo + Rbo))
        h = ot * hh(c)
        out.append(h)
    return np.array(out)


# ---- 3. PyTorch: export, TorchScript, from_module ---------------------------------------
class Torch(Case):
    def test_torch(self):
        import torch
        import torch.nn as nn
        torch.manual_seed(0)

        class Net(nn.Module):
            def __init__(self, cell, tokens=True, head=True, soft=None, I=13, H=37, flat=False,
                         **kw):
                super().__init__()
                self.tokens, self.flat = tokens, flat
                # a module, so that a scripted forward holds one normalisation, not both branches
                self.out = {None: nn.Identity(), "softmax": nn.Softmax(dim=-1),
                            "log_softmax": nn.LogSoftmax(dim=-1)}[soft]
                self.batch_first = kw.get("batch_first", False)
                if tokens:
                    self.emb = nn.Embedding(29, I)
                self.rnn = cell(I, H, **kw)
                nd = 2 if kw.get("bidirectional") else 1
                self.fc = nn.Linear((kw.get("proj_size") or H) * nd, 7) if head else None

            def forward(self, x):
                if self.tokens:
                    x = self.emb(x)
                y, _ = self.rnn(x)
                if self.fc is not None:
                    if self.flat:
                        s = y.shape
                        y = self.fc(y.reshape(-1, s[-1])).reshape(s[0], s[1], -1)
                    else:
                        y = self.fc(y)
                return self.out(y)

        class FNet(Net):
            """Functional log_softmax: found in a traced graph, not among the submodules."""
            def forward(self, x):
                return torch.log_softmax(super().forward(x), -1)

        def compare(what, path, net, x):
            with torch.no_grad():
                y = net(x).numpy()
            if not net.batch_first:
                x, y = x.transpose(0, 1), y.transpose(1, 0, 2)
            seqs = [s.tolist() if net.tokens else s.numpy() for s in x]
            got = reference.run(path, seqs)[0]
            err = max(float(np.abs(got[b] - y[b]).max()) for b in range(len(seqs)))
            check(err < 1e-5, "%s: matches PyTorch (max error %.2g)" % (what, err))

        # ONNX as torch.onnx.export writes it: bidirectional 2-layer LSTM, time-major, softmax;
        # a GRU with a Linear on flattened rows (Gemm + Reshape) at opset 11
        for what, net, opset, bf in (
                ("onnx export lstm bidir x2 softmax",
                 Net(nn.LSTM, soft="softmax", num_layers=2, bidirectional=True), 14, False),
                ("onnx export gru flat Gemm head opset 11",
                 Net(nn.GRU, tokens=False, flat=True, batch_first=True, num_layers=2), 11, True)):
            net.eval()
            x = torch.randint(0, 29, (3, 8)) if net.tokens else torch.randn(3, 8, 13)
            path = tmp("export.onnx")
            torch.onnx.export(net, (x,), path, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "a", 1: "b"}}, opset_version=opset)
            rc, err = main_inproc(path, "-o", tmp("export.rnnd"))
            check(rc == 0, "%s converts: %s" % (what, err))
            if rc == 0:
                arch = parse_file(tmp("export.rnnd"))[0]
                check(arch["head"] is not None, "%s: head found" % what)
                compare(what, tmp("export.rnnd"), net, x)

        # TorchScript (scripted and traced) and from_module
        cases = (
            ("lstm proj bidir x2 + log_softmax", "script",
             Net(nn.LSTM, soft="log_softmax", num_layers=2, bidirectional=True, proj_size=5,
                 batch_first=True), "log_softmax"),
            ("gru x2, functional log_softmax", "trace",
             FNet(nn.GRU, num_layers=2, batch_first=True), "log_softmax"),
            ("rnn relu bidir", "script",
             Net(nn.RNN, nonlinearity="relu", bidirectional=True, batch_first=True), "none"),
            ("rnn relu traced", "trace", Net(nn.RNN, nonlinearity="relu", batch_first=True),
             "none"),
            ("lstm module", "module", Net(nn.LSTM, num_layers=3, proj_size=4, batch_first=True),
             "none"),
            ("gru bidir module, vectors", "module",
             Net(nn.GRU, tokens=False, bidirectional=True, batch_first=True), "none"),
        )
        for what, how, net, norm in cases:
            net.eval()
            x = torch.randint(0, 29, (3, 9)) if net.tokens else torch.randn(3, 9, 13)
            out = tmp("torch.rnnd")
            if how == "module":
                m = rnnd_convert.from_module(net, out)
                check(m.head_W is not None, "%s: from_module found the head" % what)
            else:
                sm = torch.jit.script(net) if how == "script" else torch.jit.trace(net, (x,))
                sm.save(tmp("m.pt"))
                rc, err = main_inproc(tmp("m.pt"), "-o", out)
                check(rc == 0, "%s (%s) converts: %s" % (what, how, err))
                if rc != 0:
                    continue
            arch, shapes, t = parse_file(out)
            check_arch_complete(arch, what)
            check(arch["head"]["norm"] == norm, "%s: head norm %s" % (what, arch["head"]["norm"]))
            check(shapes == expected_names(arch), "%s: tensor names and shapes" % what)
            compare("%s (%s)" % (what, how), out, net, x)

        # gate reordering, checked on the tensors themselves
        lstm = nn.LSTM(3, 2)
        rnnd_convert.from_module(lstm, tmp("bare.rnnd"))
        arch, shapes, t = parse_file(tmp("bare.rnnd"))
        wi = lstm.weight_ih_l0.detach().numpy()
        check(np.array_equal(t["layers.0.0.W"], np.concatenate([wi[0:2], wi[6:8], wi[2:4],
                                                                wi[4:6]])),
              "LSTM gates i,f,g,o become i,o,f,c")
        check(arch["input"] == {"kind": "vectors", "dim": 3} and arch["head"] is None,
              "a bare nn.LSTM is a vectors model without head")
        gru = nn.GRU(3, 2)
        rnnd_convert.from_module(gru, tmp("bare.rnnd"))
        t = parse_file(tmp("bare.rnnd"))[2]
        wh = gru.bias_hh_l0.detach().numpy()
        check(np.array_equal(t["layers.0.0.Rb"], np.concatenate([wh[2:4], wh[0:2], wh[4:6]])),
              "GRU gates r,z,n become z,r,h")

        # refusals on the torch side
        class Bad(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.LSTM(3, 4)
                self.act = nn.ELU()
                self.b = nn.LSTM(4, 4)

            def forward(self, x):
                return self.b(self.act(self.a(x)[0]))[0]
        torch.jit.script(Bad()).save(tmp("bad.pt"))
        rc, err = main_inproc(tmp("bad.pt"), "-o", tmp("bad.rnnd"))
        one_line_error("TorchScript with an ELU module", rc, err, tmp("bad.pt"), "'act' (ELU)")

        class TwoHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn, self.f1, self.f2 = nn.GRU(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        try:
            rnnd_convert.from_module(TwoHeads(), tmp("two.rnnd"))
            check(False, "from_module refuses two Linear modules")
        except ConvertError as e:
            check("2 Linear modules" in str(e), "from_module refuses two Linear modules: %s" % e)
        # TwoHeads has no forward(): nothing to run, so the check at conversion is skipped
        m = rnnd_convert.from_module(TwoHeads(), tmp("two.rnnd"), head="f2", norm="softmax",
                                     verify=False)
        check(m.head_W.shape == (2, 4) and parse_file(tmp("two.rnnd"))[0]["head"]["norm"] ==
              "softmax", "from_module head= and norm= choose the head")


# ---- 4. native specs and vocabularies ---------------------------------------------------
def write_native(name, arch, tensors, weights_key=True):
    npz = tmp(name + ".npz")
    np.savez(npz, **tensors)
    if weights_key:
        arch = dict(arch, weights=name + ".npz")
    with open(tmp(name + ".json"), "w") as f:
        json.dump(arch, f)
    return tmp(name + ".json")


class Native(Case):
    def test_npz_bounds(self):
        """A weights .npz is checked from its zip directory and .npy headers before any array is
        read (issue 14, adversary 12: a 2 MB bomb cost 2.1 GB): a member declaring more than
        1 GiB, or an .npy header declaring more than its member holds, is refused naming it."""
        arch = {"input": {"kind": "vectors", "dim": 2}, "layers": [{"type": "rnn",
                                                                    "hidden_size": 2}]}
        spec = write_native("npzbomb", arch, {"layers.0.0.W": np.ones((2, 2)),
                                              "layers.0.0.R": np.ones((2, 2))})
        npz = tmp("npzbomb.npz")
        # an .npy header declaring 2^28 float32 (1 GiB) with no data behind it
        hdr = io.BytesIO()
        np.lib.format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False,
                                                   "shape": (1 << 28,)})
        with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("layers.0.0.W.npy", hdr.getvalue())
        t0 = time.time()
        refuse("an .npy header declaring 1 GiB", [spec], npz,
               "layers.0.0.W.npy: its header declares [268435456] float32 (1073741824 bytes) but "
               "the member holds 0")
        check(time.time() - t0 < 2, "refused without reading: %.1f s" % (time.time() - t0))
        # a member whose directory entry declares 2 GiB uncompressed
        with zipfile.ZipFile(npz, "w", zipfile.ZIP_STORED) as z:
            z.writestr("layers.0.0.W.npy", b"\0" * 16)
        with open(npz, "r+b") as f:
            data = bytearray(f.read())
            k = data.index(b"PK\x01\x02")
            data[k + 24:k + 28] = struct.pack("<I", 2 << 30)
            f.seek(0)
            f.write(data)
        refuse("a member declaring 2 GiB", [spec], npz,
               "layers.0.0.W.npy declares 2147483648 bytes uncompressed (2147483648 in all); "
               "rnnd-convert reads at most 1024 MiB per array")

    def test_native(self):
        rng = np.random.default_rng(3)
        arch = {"name": "jordan-1997", "input": {"kind": "vectors", "dim": 3},
                "layers": [{"type": "jordan", "hidden_size": 5, "output_size": 2},
                           {"type": "lstm", "hidden_size": 4, "forget_gate": False,
                            "peepholes": True, "direction": "reverse"}],
                "head": {"out_dim": 3, "in_dim": 4, "norm": "softmax"}}
        t = {"layers.0.0.W": rng.normal(size=(5, 3)), "layers.0.0.R": rng.normal(size=(5, 2)),
             "layers.0.0.Wb": rng.normal(size=5), "layers.0.0.V": rng.normal(size=(2, 5)),
             "layers.1.0.W": rng.normal(size=(12, 2)), "layers.1.0.R": rng.normal(size=(12, 4)),
             "layers.1.0.P": rng.normal(size=12), "head.weight": rng.normal(size=(3, 4)),
             "head.bias": rng.normal(size=3)}
        path = write_native("jordan", arch, t)
        rc, so, se = run_cli(path, "-o", tmp("jordan.rnnd"))
        check(rc == 0 and se == "", "native Jordan + 1997 LSTM converts: %s" % se)
        a, shapes, got = parse_file(tmp("jordan.rnnd"))
        check_arch_complete(a, "native")
        check(shapes == expected_names(a), "native: tensor names and shapes")
        J, L = a["layers"]
        check(J["activations"] == [[{"op": "Tanh", "alpha": 0.0, "beta": 0.0},
                                    {"op": "Affine", "alpha": 1.0, "beta": 0.0}]],
              "jordan default activations written explicitly: %s" % J["activations"])
        check(L["forget_gate"] is False and L["peepholes"] is True and shapes["layers.1.0.W"] ==
              [12, 2], "forget_gate false: 3 gate blocks")
        check(not got["layers.0.0.Rb"].any() and not got["layers.0.0.Vb"].any() and
              np.allclose(got["layers.0.0.Wb"], t["layers.0.0.Wb"]),
              "absent biases become zeros, present ones are kept")
        check(np.allclose(got["layers.1.0.P"], t["layers.1.0.P"]) and a["name"] == "jordan-1997",
              "native weights and name carried over")

        # --weights instead of a "weights" key; vocabulary from lines and from a JSON list
        arch = {"input": {"kind": "tokens", "vocab_size": 4, "embedding_dim": 2},
                "layers": [{"type": "gru", "hidden_size": 3, "linear_before_reset": 1}],
                "head": None}
        t = {"embedding.weight": rng.normal(size=(4, 2)), "layers.0.0.W": rng.normal(size=(9, 2)),
             "layers.0.0.R": rng.normal(size=(9, 3))}
        path = write_native("tok", arch, t, weights_key=False)
        with open(tmp("vocab.txt"), "w") as f:
            f.write("a\n \nb\nc\n")
        rc, err = main_inproc(path, "--weights", tmp("tok.npz"), "-o", tmp("tok.rnnd"),
                              "--vocab", tmp("vocab.txt"), "--tokenizer", "char")
        a = parse_file(tmp("tok.rnnd"))[0]
        check(rc == 0 and a["vocab"] == ["a", " ", "b", "c"] and a["tokenizer"] == "char",
              "--weights, --vocab (lines, a space token) and --tokenizer: %s %s"
              % (err, a["vocab"]))
        check(a["name"] == "tok", "the default name is the output's base name")
        with open(tmp("vocab.json"), "w") as f:
            json.dump(["\n", "x", "y", "z"], f)
        rc, err = main_inproc(path, "--weights", tmp("tok.npz"), "-o", tmp("tok.rnnd"),
                              "--vocab", tmp("vocab.json"))
        check(rc == 0 and parse_file(tmp("tok.rnnd"))[0]["vocab"][0] == "\n",
              "--vocab as a JSON list: %s" % err)

    def test_native_min(self):
        """mingru / minlstm from a native spec: W and Wb only (absent Wb zeros), defaults Sigmoid
        and the identity written out; R, Rb or clip refused with a message naming them."""
        rng = np.random.default_rng(16)
        arch = {"input": {"kind": "vectors", "dim": 3},
                "layers": [{"type": "mingru", "hidden_size": 5},
                           {"type": "minlstm", "hidden_size": 4, "direction": "bidirectional",
                            "activations": [[{"op": "Sigmoid"}, {"op": "Tanh"}]] * 2}],
                "head": None}
        t = {"layers.0.0.W": rng.normal(size=(10, 3)), "layers.0.0.Wb": rng.normal(size=10),
             "layers.1.0.W": rng.normal(size=(12, 5)), "layers.1.1.W": rng.normal(size=(12, 5))}
        path = write_native("min", arch, t)
        rc, so, se = run_cli(path, "-o", tmp("min.rnnd"))
        check(rc == 0 and se == "", "native mingru + minlstm converts: %s" % se)
        a, shapes, got = parse_file(tmp("min.rnnd"))
        check_arch_complete(a, "native min")
        check(shapes == expected_names(a), "native min: tensor names and shapes %s" % shapes)
        check(a["layers"][0]["activations"] == [[{"op": "Sigmoid", "alpha": 0.0, "beta": 0.0},
                                                 {"op": "Affine", "alpha": 1.0, "beta": 0.0}]],
              "mingru default activations written explicitly: %s" % a["layers"][0]["activations"])
        check(not got["layers.1.1.Wb"].any() and np.allclose(got["layers.0.0.Wb"],
                                                             t["layers.0.0.Wb"]),
              "absent Wb become zeros, present ones are kept")
        bad = dict(t, **{"layers.0.0.R": rng.normal(size=(10, 5))})
        rc, so, se = run_cli(write_native("min_R", arch, bad), "-o", tmp("min_R.rnnd"))
        check(rc != 0 and "layers.0.0.R" in se, "a mingru R is refused by name: %s" % se)
        clipped = json.loads(json.dumps(arch))
        clipped["layers"][0]["clip"] = 2.0
        rc, so, se = run_cli(write_native("min_clip", clipped, t), "-o", tmp("min_clip.rnnd"))
        check(rc != 0 and "clip" in se, "a mingru clip is refused: %s" % se)

    def test_native_dglstm(self):
        """A depth-gated lstm from a native spec: D, Dc, Dl, Db (absent Db zeros), the flag
        written only where true; every rule of rnnd's loader refused by the converter too."""
        rng = np.random.default_rng(161)
        arch = {"input": {"kind": "vectors", "dim": 3},
                "layers": [{"type": "lstm", "hidden_size": 5},
                           {"type": "lstm", "hidden_size": 5, "depth_gate": True,
                            "peepholes": True}],
                "head": None}
        t = {"layers.0.0.W": rng.normal(size=(20, 3)), "layers.0.0.R": rng.normal(size=(20, 5)),
             "layers.1.0.W": rng.normal(size=(20, 5)), "layers.1.0.R": rng.normal(size=(20, 5)),
             "layers.1.0.P": rng.normal(size=15), "layers.1.0.D": rng.normal(size=(5, 5)),
             "layers.1.0.Dc": rng.normal(size=5), "layers.1.0.Dl": rng.normal(size=5)}
        path = write_native("dg", arch, t)
        rc, so, se = run_cli(path, "-o", tmp("dg.rnnd"))
        check(rc == 0 and se == "", "native depth-gated lstm converts: %s" % se)
        a, shapes, got = parse_file(tmp("dg.rnnd"))
        check_arch_complete(a, "native dglstm")
        check(shapes == expected_names(a), "native dglstm: tensor names and shapes %s" % shapes)
        check("depth_gate" not in a["layers"][0] and a["layers"][1]["depth_gate"] is True,
              "depth_gate written only where true: %s" % a["layers"])
        check(not got["layers.1.0.Db"].any() and np.allclose(got["layers.1.0.D"],
                                                             t["layers.1.0.D"]),
              "an absent Db becomes zeros, D is kept")
        missing = {k: v for k, v in t.items() if k != "layers.1.0.Dl"}
        rc, so, se = run_cli(write_native("dg_noDl", arch, missing), "-o", tmp("dg_noDl.rnnd"))
        check(rc != 0 and "layers.1.0.Dl" in se, "a missing Dl is refused by name: %s" % se)
        stray = dict(t, **{"layers.0.0.D": rng.normal(size=(5, 3))})
        rc, so, se = run_cli(write_native("dg_stray", arch, stray), "-o", tmp("dg_stray.rnnd"))
        check(rc != 0 and "layers.0.0.D" in se, "D on an ungated layer is refused: %s" % se)
        bads = [
            ("first", lambda a: a["layers"][0].update(depth_gate=True), "first layer"),
            ("H", lambda a: a["layers"][1].update(hidden_size=6), "hidden_size 5, this layer 6"),
            ("bidir", lambda a: a["layers"][1].update(direction="bidirectional"), "forward"),
            ("below_proj", lambda a: a["layers"][0].update(proj_size=5), "layer below"),
            ("gru", lambda a: a["layers"][1].update(type="gru", peepholes=None), "depth_gate"),
        ]
        for tag, change, want in bads:
            b = json.loads(json.dumps(arch))
            change(b)
            rc, so, se = run_cli(write_native("dg_" + tag, b, t), "-o", tmp("dg_%s.rnnd" % tag))
            check(rc != 0 and want in se, "depth gate %s refused: %s" % (tag, se))

    def test_dglstm_module(self):
        """tools/rnnd_modules/dglstm.py's DGLSTM behind an embedding, with a linear head and a
        log-softmax, converts through from_module (verification included) and rnnd computes what
        the module does."""
        import torch
        sys.path.insert(0, os.path.join(SRCDIR, "tools"))
        from rnnd_modules.dglstm import DGLSTM
        nn = torch.nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(17, 6)
                self.rnn = DGLSTM(6, 9, num_layers=3)
                self.fc = nn.Linear(9, 17)
                self.out = nn.LogSoftmax(dim=-1)

            def forward(self, x):
                return self.out(self.fc(self.rnn(self.emb(x))[0]))

        torch.manual_seed(16)
        net = Net()
        m = rnnd_convert.from_module(net, tmp("dglstm_module.rnnd"))
        check([(L.type, L.depth_gate) for L in m.layers] ==
              [("lstm", False), ("lstm", True), ("lstm", True)] and m.head_norm == "log_softmax"
              and m.input_kind == "tokens", "DGLSTM: three lstm layers, the upper two gated")
        ids = np.random.default_rng(3).integers(0, 17, size=(2, 40))
        with torch.no_grad():
            want = net(torch.from_numpy(ids)).double().numpy()
        got = np.stack(reference.run(tmp("dglstm_module.rnnd"), [r.tolist() for r in ids])[0])
        err = float(np.abs(got - want).max())
        check(err < 1e-5, "DGLSTM: reference.py of the file vs the module, max |err| %.3g" % err)
        rnnd = os.environ.get("RNND_BIN")
        if rnnd:
            p = subprocess.run([rnnd, "infer", "--model", tmp("dglstm_module.rnnd")],
                               input=json.dumps({"inputs": ids.tolist()}), capture_output=True,
                               text=True, timeout=120)
            err = (float(np.abs(np.array(json.loads(p.stdout)["outputs"]) - want).max())
                   if p.returncode == 0 else float("inf"))
            check(err < 1e-5, "DGLSTM: rnnd infer vs the module, max |err| %.3g (%s)"
                  % (err, p.stderr.strip()))
        # the rnnd_modules reader (tried first) leaves what is not a module to the usual message
        try:
            rnnd_convert.from_module(42, tmp("not_a_module.rnnd"))
            check(False, "from_module(42) converts")
        except ConvertError as e:
            check("expected a torch.nn.Module" in str(e), "from_module(42): %s" % e)
        # a parameter the reader does not know is refused, not dropped
        net.rnn.register_parameter("extra", nn.Parameter(torch.zeros(3)))
        try:
            rnnd_convert.from_module(net, tmp("dglstm_extra.rnnd"))
            check(False, "DGLSTM with an unknown parameter converts")
        except ConvertError as e:
            check("extra" in str(e), "DGLSTM with an unknown parameter refused: %s" % e)

    def test_native_clock(self):
        """clockwork from a native spec: periods written, Tanh by default, absent biases zeros; R
        below the block diagonal, bad periods, periods on another type and clip refused with a
        message naming them; rnnd loads what it writes."""
        rng = np.random.default_rng(16)
        arch = {"input": {"kind": "vectors", "dim": 3},
                "layers": [{"type": "clockwork", "hidden_size": 6, "periods": [1, 2, 8]}],
                "head": None}
        R = rng.normal(size=(6, 6))
        for i in range(6):
            R[i, :(i // 2) * 2] = 0.0
        t = {"layers.0.0.W": rng.normal(size=(6, 3)), "layers.0.0.R": R}
        path = write_native("clock", arch, t)
        rc, so, se = run_cli(path, "-o", tmp("clock.rnnd"))
        check(rc == 0 and se == "", "native clockwork converts: %s" % se)
        a, shapes, got = parse_file(tmp("clock.rnnd"))
        check_arch_complete(a, "native clock")
        check(shapes == expected_names(a), "native clock: tensor names and shapes %s" % shapes)
        check(a["layers"][0]["periods"] == [1, 2, 8], "periods written: %s" % a["layers"][0])
        check(a["layers"][0]["activations"] == [[{"op": "Tanh", "alpha": 0.0, "beta": 0.0}]],
              "clockwork default activation written: %s" % a["layers"][0]["activations"])
        check(not got["layers.0.0.Wb"].any() and not got["layers.0.0.Rb"].any(),
              "absent biases become zeros")
        p = subprocess.run([os.environ["RNND_BIN"], "inspect", tmp("clock.rnnd")],
                           capture_output=True, text=True)
        check(p.returncode == 0 and "periods=1,2,8" in p.stdout, "rnnd loads it: %s" % p.stderr)
        below = R.copy()
        below[3, 1] = 0.25
        rc, so, se = run_cli(write_native("clock_R", arch, dict(t, **{"layers.0.0.R": below})),
                             "-o", tmp("clock_R.rnnd"))
        check(rc != 0 and "layers.0.0.R: element [3, 1] is 0.25, but a clockwork module reads "
              "only itself and the modules after it" in se, "R below the diagonal: %s" % se)
        for what, change, msg in (
                ("missing", {"periods": None}, "periods: missing"),
                ("order", {"periods": [1, 8, 2]}, "periods[2]: 2 is not above 8"),
                ("zero", {"periods": [0, 1, 2]}, "periods[0]: expected an integer 1 to"),
                ("real", {"periods": [1, 2.5, 3]}, "periods[1]: expected an integer"),
                ("divide", {"periods": [1, 2, 3, 4]}, "4 modules do not divide hidden_size 6"),
                ("clip", {"clip": 2.0}, "clip: a clockwork layer has no clip")):
            bad = json.loads(json.dumps(arch))
            bad["layers"][0].update(change)
            rc, so, se = run_cli(write_native("clock_" + what, bad, t), "-o",
                                 tmp("clock_%s.rnnd" % what))
            check(rc != 0 and msg in se, "clockwork %s refused: %s" % (what, se))
        rnn = {"input": {"kind": "vectors", "dim": 3},
               "layers": [{"type": "rnn", "hidden_size": 6, "periods": [1, 2]}], "head": None}
        rc, so, se = run_cli(write_native("rnn_periods", rnn, t), "-o", tmp("rnn_periods.rnnd"))
        check(rc != 0 and "periods: a rnn layer does not use it" in se,
              "periods on an rnn layer refused: %s" % se)

    def test_native_slstm(self):
        """slstm from a native spec: heads and forget written, R [4H, H/heads], absent biases
        zeros; a missing or wrong heads / forget, activations, clip and a dense R refused."""
        rng = np.random.default_rng(17)
        arch = {"input": {"kind": "vectors", "dim": 3},
                "layers": [{"type": "slstm", "hidden_size": 6, "heads": 3, "forget": "exp"},
                           {"type": "slstm", "hidden_size": 5, "heads": 1, "forget": "sigmoid",
                            "direction": "bidirectional"}],
                "head": None}
        t = {"layers.0.0.W": rng.normal(size=(24, 3)), "layers.0.0.R": rng.normal(size=(24, 2)),
             "layers.0.0.Wb": rng.normal(size=24)}
        for d in range(2):
            t["layers.1.%d.W" % d] = rng.normal(size=(20, 6))
            t["layers.1.%d.R" % d] = rng.normal(size=(20, 5))
        path = write_native("sl", arch, t)
        rc, so, se = run_cli(path, "-o", tmp("sl.rnnd"))
        check(rc == 0 and se == "", "native slstm converts: %s" % se)
        a, shapes, got = parse_file(tmp("sl.rnnd"))
        check_arch_complete(a, "native slstm")
        check(shapes == expected_names(a), "native slstm: tensor names and shapes %s" % shapes)
        check([(L["heads"], L["forget"]) for L in a["layers"]] == [(3, "exp"), (1, "sigmoid")],
              "heads and forget written: %s" % a["layers"])
        check(not got["layers.0.0.Rb"].any() and np.allclose(got["layers.0.0.R"],
                                                             t["layers.0.0.R"]),
              "absent Rb become zeros, R is kept")
        for what, change, tensors, want in (
                ("no heads", lambda L: L.pop("heads"), t, "heads"),
                ("heads 4 of 6", lambda L: L.update(heads=4), t, "does not divide"),
                ("no forget", lambda L: L.pop("forget"), t, "forget"),
                ("forget tanh", lambda L: L.update(forget="tanh"), t, "forget"),
                ("activations", lambda L: L.update(activations=[[{"op": "Tanh"}]]), t,
                 "activations"),
                ("clip", lambda L: L.update(clip=2.0), t, "clip"),
                ("dense R", lambda L: None, dict(t, **{"layers.0.0.R": rng.normal(size=(24, 6))}),
                 "layers.0.0.R")):
            bad = json.loads(json.dumps(arch))
            change(bad["layers"][0])
            rc, so, se = run_cli(write_native("sl_bad", bad, tensors), "-o", tmp("sl_bad.rnnd"))
            check(rc != 0 and want in se, "native slstm, %s: refused: %s" % (what, se))


class ReferenceModules(Case):
    def test_reference_modules(self):
        """tools/rnnd_modules' MinGRU / MinLSTM through from_module: recognised, their
        parameters written as they are (bitwise), outputs equal to PyTorch's within 1e-5 (the
        verification at conversion and reference.py here); a forward() that computes something
        else, or a module mixed with nn.LSTM, is refused."""
        import torch
        import torch.nn as nn
        from rnnd_modules.mingru import MinGRU
        from rnnd_modules.minlstm import MinLSTM
        torch.manual_seed(16)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(29, 7)
                self.a = MinGRU(7, 11, num_layers=2, candidate="tanh")
                self.b = MinLSTM(11, 9, bias=False)
                self.head = nn.Linear(9, 5)
                self.out = nn.LogSoftmax(dim=-1)

            def forward(self, x):
                y, _ = self.a(self.emb(x))
                y, _ = self.b(y)
                return self.out(self.head(y))

        def compare(what, path, net, x):
            with torch.no_grad():
                y = net(x)
                y = (y[0] if isinstance(y, tuple) else y).numpy()
            seqs = [s.tolist() if x.dtype == torch.int64 else s.numpy() for s in x]
            got = reference.run(path, seqs)[0]
            err = max(float(np.abs(got[b] - y[b]).max()) for b in range(len(seqs)))
            check(err < 1e-5, "%s: matches PyTorch (max error %.2g)" % (what, err))

        net = Net()
        try:
            m = rnnd_convert.from_module(net, tmp("refmod.rnnd"))
            check([(L.type, L.hidden_size) for L in m.layers] ==
                  [("mingru", 11), ("mingru", 11), ("minlstm", 9)],
                  "reference modules: layers %s" % [(L.type, L.hidden_size) for L in m.layers])
            a, shapes, got = parse_file(tmp("refmod.rnnd"))
            check(a["head"]["norm"] == "log_softmax" and a["input"]["kind"] == "tokens",
                  "reference modules: tokens in, log_softmax head: %s %s" % (a["input"], a["head"]))
            check(a["layers"][0]["activations"][0][1]["op"] == "Tanh" and
                  a["layers"][2]["activations"][0][1]["op"] == "Affine",
                  "reference modules: candidate activations %s" % a["layers"])
            want = {"layers.0.0.W": net.a.weight_l0, "layers.1.0.W": net.a.weight_l1,
                    "layers.1.0.Wb": net.a.bias_l1, "layers.2.0.W": net.b.weight_l0}
            for k, v in want.items():
                check(np.array_equal(got[k], v.detach().numpy()), "reference modules: %s as is" % k)
            check(not got["layers.2.0.Wb"].any(), "MinLSTM(bias=False): Wb zeros")
            compare("reference modules", tmp("refmod.rnnd"), net, torch.randint(0, 29, (3, 41)))
        except ConvertError as e:
            check(False, "reference modules: %s" % e)
        bare = MinLSTM(5, 6, num_layers=3)
        try:
            rnnd_convert.from_module(bare, tmp("refbare.rnnd"))
            compare("bare MinLSTM, 3 layers", tmp("refbare.rnnd"), bare, torch.randn(2, 23, 5))
        except ConvertError as e:
            check(False, "bare MinLSTM: %s" % e)
        # an initial state continues a sequence: two halves equal the whole
        g = MinGRU(4, 6, num_layers=2)
        x = torch.randn(2, 20, 4)
        with torch.no_grad():
            y, h = g(x)
            y1, h1 = g(x[:, :8])
            y2, h2 = g(x[:, 8:], h1)
        check(torch.allclose(torch.cat([y1, y2], 1), y, atol=1e-6) and
              torch.allclose(h2, h, atol=1e-6), "MinGRU h0: two halves equal the whole")

        class Doubled(Net):
            def forward(self, x):
                return 2 * super().forward(x)

        class Mixed(Net):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(9, 9)

        for what, mod, needle in (("a forward() computing more", Doubled(), "verification failed"),
                                  ("nn.LSTM beside them", Mixed(), "nothing else that has")):
            try:
                rnnd_convert.from_module(mod, tmp("refbad.rnnd"))
                check(False, "reference modules, %s: converted" % what)
            except ConvertError as e:
                check(needle in str(e), "reference modules, %s: %s" % (what, e))

        # a Clockwork is one of the READERS too: with an Embedding, a head and a log-softmax
        from rnnd_modules.clockwork import Clockwork

        class ClockLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(23, 6)
                self.rnn = Clockwork(6, 12, periods=[1, 3, 8], num_layers=2)
                self.head = nn.Linear(12, 23)
                self.out = nn.LogSoftmax(dim=-1)

            def forward(self, x):
                y, _ = self.rnn(self.emb(x))
                return self.out(self.head(y))

        net = ClockLM()
        try:
            m = rnnd_convert.from_module(net, tmp("refclock.rnnd"))
            check([(L.type, L.periods) for L in m.layers] == [("clockwork", [1, 3, 8])] * 2 and
                  m.input_kind == "tokens" and m.head_norm == "log_softmax",
                  "wrapped Clockwork: %s" % [(L.type, L.periods) for L in m.layers])
            compare("wrapped Clockwork", tmp("refclock.rnnd"), net, torch.randint(0, 23, (3, 37)))
        except ConvertError as e:
            check(False, "wrapped Clockwork: %s" % e)


class Launcher(Case):
    def test_launcher(self):
        """The installed launcher (tools/rnnd-convert.in as make installs it) runs cli.main()."""
        src = os.path.join(SRCDIR, "tools", "rnnd-convert.in")
        share = tmp("share")
        os.makedirs(os.path.join(share, "python"))
        os.symlink(os.path.join(SRCDIR, "tools", "rnnd_convert"),
                   os.path.join(share, "python", "rnnd_convert"))
        bindir = tmp("bin")
        os.makedirs(bindir)
        with open(src) as f:
            text = f.read().replace("@PYTHON3@", PY).replace("@pkgdatadir@", share)
        launcher = os.path.join(bindir, "rnnd-convert")
        with open(launcher, "w") as f:
            f.write(text)
        os.chmod(launcher, 0o755)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        p = subprocess.run([launcher, os.path.join(GOLDEN, "lstm_vectors", "model.onnx"), "-o",
                            tmp("launch.rnnd")], capture_output=True, text=True, env=env)
        check(p.returncode == 0 and os.path.exists(tmp("launch.rnnd")),
              "installed launcher converts: %s" % p.stderr)
        p = subprocess.run([launcher, tmp("nope.onnx"), "-o", tmp("x.rnnd")], capture_output=True,
                           text=True, env=env)
        check(p.returncode != 0 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr,
              "installed launcher: one-line error: %r" % p.stderr)


# ---- 5. refusals ------------------------------------------------------------------------
def one_line_error(what, rc, err, path, needle):
    lines = err.splitlines()
    prefix = "rnnd-convert: %s: " % path
    ok = (rc not in (0, None) and len(lines) == 1 and lines[0].startswith(prefix) and
          needle in lines[0])
    check(ok, "refused %s: rc %s, stderr %r (want one line with %r)" % (what, rc, err, needle))


def refuse(what, args, path, needle, child=False):
    out = tmp("refused.rnnd")
    if os.path.exists(out):
        os.unlink(out)
    if child:
        rc, _, err = run_cli(*(list(args) + ["-o", out]))
    else:
        rc, err = main_inproc(*(list(args) + ["-o", out]))
    one_line_error(what, rc, err, path, needle)
    check(not os.path.exists(out), "refused %s: no output file left behind" % what)


class ExternalData(Case):
    def test_external_data(self):
        """ONNX external data is read only from files in the model's own directory: a location
        that leaves it (.., absolute) or a symlink is refused naming the tensor and the path
        (issue 14, adversary 7: data/../../etc/passwd landed in the weights)."""
        d = tmp("extdata")
        os.makedirs(os.path.join(d, "data"))
        rec_graph(tmp("ext_inline.onnx"), "GRU", H=4, I=3)
        m = onnx.load(tmp("ext_inline.onnx"))
        onnx.save(m, os.path.join(d, "model.onnx"), save_as_external_data=True,
                  all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
        rc, err = main_inproc(os.path.join(d, "model.onnx"), "-o", tmp("ext_ok.rnnd"))
        check(rc == 0, "external data beside the model converts: %r" % err)
        if rc == 0:
            rc2, err2 = main_inproc(tmp("ext_inline.onnx"), "-o", tmp("ext_inline.rnnd"))
            a, b = read_any(tmp("ext_ok.rnnd")), read_any(tmp("ext_inline.rnnd"))
            check(rc2 == 0 and sorted(a[1]) == sorted(b[1]) and
                  all(np.array_equal(a[1][k][1], b[1][k][1]) for k in a[1]),
                  "external data: the same weights as the file with them inline")
        with open(tmp("secret.bin"), "wb") as f:
            f.write(np.arange(64, dtype=np.float32).tobytes() * 8)
        os.symlink(tmp("secret.bin"), os.path.join(d, "link.bin"))
        for what, loc in (("leaving the directory", "data/../../secret.bin"),
                          ("absolute", tmp("secret.bin")), ("a symlink", "link.bin")):
            m2 = onnx.load(os.path.join(d, "model.onnx"), load_external_data=False)
            t = next(t for t in m2.graph.initializer if t.name == "W")
            next(e for e in t.external_data if e.key == "location").value = loc
            path = os.path.join(d, "evil.onnx")
            with open(path, "wb") as f:
                f.write(m2.SerializeToString())
            refuse("external data " + what, [path], path,
                   "tensor 'W': external data %r is not a file in the model's directory" % loc)


def fold_graph(path, N, K, live):
    """An LSTM graph beside ConstantOfShape([N, N]) and K chained MatMuls of it (issue 14,
    adversary 10); LIVE: the chain's result is added to the output, else nothing reads it."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["m0"], name="fill",
                              value=numpy_helper.from_array(np.ones(1, np.float32)))]
    for k in range(K):
        nodes.append(helper.make_node("MatMul", ["m%d" % k, "m0"], ["m%d" % (k + 1)],
                                      name="mm%d" % k))
    nodes += [helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=4),
              helper.make_node("Squeeze", ["Y"], ["Ys" if not live else "Yq"], axes=[1])]
    if live:
        nodes.append(helper.make_node("Add", ["Yq", "m%d" % K], ["Ys"], name="add"))
    save_graph(path, nodes, {"shape": np.array([N, N], np.int64),
                             "W": f32(rng.normal(size=(1, 16, 3))),
                             "R": f32(rng.normal(size=(1, 16, 4)))},
               [vin("X", ["T", "N", 3])], [vin("Ys", None)], opset=12)
    return path


class FoldBounds(Case):
    def test_fold_bounds(self):
        """Constant folding is bounded: nodes no output reads are not folded, and a fold beyond
        the bounds is refused naming the node, both in well under a second (the old importer
        spent ~10 s on each of these 800-byte files)."""
        t0 = time.time()
        rc, err = main_inproc(fold_graph(tmp("fold_dead.onnx"), 2000, 4, False), "-o",
                              tmp("fold_dead.rnnd"))
        dt = time.time() - t0
        check(rc == 0 and dt < 5, "unused constant nodes are not folded: rc %d in %.1f s: %r"
              % (rc, dt, err))
        t0 = time.time()
        p = fold_graph(tmp("fold_live.onnx"), 2000, 4, True)
        # the cap on what folding makes (docs/convert.md) or the bound on element operations,
        # whichever the node meets first: today the cap
        refuse("a MatMul of two 2000x2000 constants", [p], p, "node 'mm0' (MatMul): folding")
        dt = time.time() - t0
        check(dt < 5, "the refusal comes at once: %.1f s" % dt)
        p = fold_graph(tmp("fold_big.onnx"), 1 << 17, 0, True)
        refuse("ConstantOfShape of 2^34 elements", [p], p,
               "node 'fill' (ConstantOfShape): folding it on constants would make a tensor of "
               "17179869184 elements")


class Messages(Case):
    def test_messages(self):
        """Issue 14, user C9, C10, C15: a file under another format's name is named for what it
        is, with --format; an .rnnd input is one already; several Linear modules point to --head,
        which chooses one; the summary line shows proj and pool."""
        import torch
        torch.jit.script(torch.nn.GRU(3, 4)).save(tmp("ts_named.onnx"))
        p = tmp("ts_named.onnx")
        refuse("TorchScript named .onnx", [p], p, "this is a TorchScript archive, not ONNX "
               "(rename it to .pt or pass --format torchscript)")
        shutil.copy(os.path.join(GOLDEN, "lstm_vectors", "model.onnx"), tmp("onnx_named.pt"))
        p = tmp("onnx_named.pt")
        refuse("ONNX named .pt", [p], p, "this is an ONNX model, not TorchScript (rename it to "
               ".onnx or pass --format onnx)")
        rc, _ = main_inproc(p, "--format", "onnx", "-o", tmp("onnx_named.rnnd"))
        check(rc == 0, "ONNX named .pt converts with --format onnx")
        p = tmp("onnx_named.rnnd")
        refuse("an .rnnd input", [p], p, "this is already an rnnd model, nothing to convert "
               "(rnnd inspect onnx_named.rnnd describes it)")

        class TwoHeads(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = torch.nn.LSTM(3, 4, batch_first=True, proj_size=2)
                self.aux = torch.nn.Linear(2, 3)
                self.fc = torch.nn.Linear(2, 5)

            def forward(self, x):
                return self.fc(self.lstm(x)[0])
        torch.manual_seed(0)
        torch.jit.script(TwoHeads()).save(tmp("two_heads.pt"))
        p = tmp("two_heads.pt")
        # forward() places the head: the unused aux changes nothing and is left out
        rc, out, err = run_cli(p, "-o", tmp("two_heads_auto.rnnd"))
        check(rc == 0 and "layers lstm(H=4, proj 2), head 5" in out,
              "two Linear modules, forward() uses fc: converts with fc's head: %r %r" % (out, err))
        rc, out, err = run_cli(p, "--head", "fc", "-o", tmp("two_heads.rnnd"))
        check(rc == 0 and "layers lstm(H=4, proj 2), head 5" in out,
              "--head fc converts; the summary shows proj: %r %r" % (out, err))
        p = os.path.join(GOLDEN, "lstm_vectors", "model.onnx")
        refuse("--head on ONNX", [p, "--head", "fc"], p, "--head is only for TorchScript input")

        class Pooled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.gru = torch.nn.GRU(3, 4, batch_first=True)
                self.fc = torch.nn.Linear(4, 2)

            def forward(self, x):
                return self.fc(self.gru(x)[0].mean(dim=1))
        torch.jit.script(Pooled()).save(tmp("pooled.pt"))
        rc, out, err = run_cli(tmp("pooled.pt"), "-o", tmp("pooled.rnnd"))
        check(rc == 0 and "layers gru(H=4), pool mean, head 2" in out,
              "the summary shows the pool: %r %r" % (out, err))


class Refusals(Case):
    def test_refusals(self):
        rng = np.random.default_rng(7)
        # a Conv on the data path
        W, R = f32(rng.normal(size=(1, 16, 3))), f32(rng.normal(size=(1, 16, 4)))
        conv = helper.make_node("Conv", ["X3", "K"], ["C"], name="the_conv")
        tr = helper.make_node("Transpose", ["C"], ["X"], perm=[2, 0, 1])
        tr0 = helper.make_node("Transpose", ["Xin"], ["X3"], perm=[1, 2, 0])
        lstm = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=4)
        p = save_graph(tmp("conv.onnx"), [tr0, conv, tr, lstm],
                       {"W": W, "R": R, "K": f32(rng.normal(size=(3, 3, 1)))},
                       [vin("Xin", ["T", "N", 3])], [vin("Y", None)])
        refuse("a Conv", [p], p, "node 'the_conv' (Conv)", child=True)

        # residual: the data added to itself
        lstm = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=4, name="l")
        sq = helper.make_node("Squeeze", ["Y", "one"], ["Ys"], name="sq")
        add = helper.make_node("Add", ["Ys", "Ys"], ["Z"], name="res")
        p = save_graph(tmp("res.onnx"), [lstm, sq, add],
                       {"W": f32(rng.normal(size=(1, 16, 4))), "R": R,
                        "one": np.array([1], np.int64)},
                       [vin("X", ["T", "N", 4])], [vin("Z", None)])
        refuse("a residual Add", [p], p, "node 'res' (Add): combines the data with itself")

        p = tmp("h0.onnx")
        rec_graph(p, "LSTM", h0=np.ones((1, 1, 4)))
        refuse("a non-zero initial_h", [p], p, "node 'rec' (LSTM): initial_h is not zero")

        rec_graph(p, "GRU", seqlens="lens", extra_inputs=[("lens", TensorProto.INT32)])
        refuse("sequence_lens as a graph input", [p], p,
               "sequence_lens comes from graph input 'lens'")

        # an initial state as a graph input is rnnd's initial state (zeros or a session's)
        # (a GRU: an LSTM's initial_c must then come from the inputs too,
        # tests/test_convert_onnx_hostile.py `StateInputs`)
        rec_graph(p, "GRU", h0="h0in", extra_inputs=[("h0in", TensorProto.FLOAT)])
        rc, err = main_inproc(p, "-o", tmp("h0in.rnnd"))
        check(rc == 0, "initial_h as a graph input converts (the initial state): %s" % err)
        rec_graph(p, "LSTM", extra_inputs=[("other", TensorProto.FLOAT)])
        g = onnx.load(p)
        g.graph.node.insert(0, helper.make_node("Relu", ["other"], ["o2"], name="r2"))
        g.graph.output.append(helper.make_tensor_value_info("o2", TensorProto.FLOAT, None))
        onnx.save(g, p)
        refuse("a second graph input used otherwise", [p], p,
               "node 'r2' (Relu): reads graph input 'other'")

        rec_graph(p, "RNN", attrs=dict(activations=["Swish"]))
        refuse("an unknown activation", [p], p, "node 'rec' (RNN): unknown activation 'Swish'")

        rec_graph(p, "LSTM", H=4, I=3, Wshape=(1, 17, 3))
        refuse("a W of the wrong shape", [p], p, "W has shape [1, 17, 3], expected [1, 16, 3]")

        rec_graph(p, "LSTM", outputs=("Y_h",))
        refuse("a final-state output", [p], p, "graph output 'Y_h' is a final state")

        rec_graph(p, "LSTM", attrs=dict(clip=-1.0))
        refuse("a negative clip", [p], p, "clip must be positive")

        with open(tmp("junk.onnx"), "wb") as f:
            f.write(b"\x00not a model at all" * 10)
        refuse("a file that is not ONNX", [tmp("junk.onnx")], tmp("junk.onnx"),
               "not a readable ONNX model")
        refuse("a missing input", [tmp("missing.onnx")], tmp("missing.onnx"), "file not found",
               child=True)

        # native
        arch = {"input": {"kind": "vectors", "dim": 3},
                "layers": [{"type": "rnn", "hidden_size": 4}], "head": None}
        t = {"layers.0.0.W": rng.normal(size=(4, 3)), "layers.0.0.R": rng.normal(size=(4, 4))}
        p = write_native("nat", dict(arch, weights="gone.npz"), t, weights_key=False)
        refuse("a missing weights file", [p], tmp("gone.npz"), "weights file not found",
               child=True)
        # "weights" names the .npz, not the weight type (trials 30 and 31): the message says so
        p = write_native("nat", dict(arch, weights="int8"), t, weights_key=False)
        refuse("a weight type as the weights file", [p], tmp("int8"),
               "weights file not found: \"weights\" names the .npz of the weights, not their "
               "type (rnnd-convert --weight-type int8)", child=True)
        # a weight that is not finite is named (trial 30)
        p = write_native("nat", arch, dict(t, **{"layers.0.0.R": np.where(
            np.arange(16).reshape(4, 4) == 7, np.inf, rng.normal(size=(4, 4)))}))
        refuse("an infinite weight", [p], p, "layers.0.0.R: element 7 is inf (NaN or Inf: "
               "the weights must be finite)")
        p = write_native("nat", arch, dict(t, **{"layers.0.0.R": rng.normal(size=(4, 5))}))
        refuse("a bad tensor shape", [p], p, "layers.0.0.R: shape [4, 5], expected [4, 4]")
        p = write_native("nat", arch, dict(t, extra=np.zeros(2)))
        refuse("an unused tensor", [p], p, "extra is not used by the architecture")
        p = write_native("nat", dict(arch, layers=[{"type": "rnn", "hidden_size": 4,
                                                    "colour": "red"}]), t)
        refuse("an unknown layer key", [p], p, "layers[0].colour: unknown key")
        p = write_native("nat", dict(arch, layers=[{"type": "rnn", "hidden_size": 4,
                                                    "activations": [["Gelu"]]}]), t)
        refuse("an unknown native activation", [p], p, "unknown activation \"Gelu\"")
        p = write_native("nat", dict(arch, layers=[{"type": "gru", "hidden_size": 4,
                                                    "proj_size": 3}]), t)
        refuse("an lstm key on a gru", [p], p, "layers[0].proj_size: a gru layer does not use it")
        p = write_native("nat", dict(arch, layers=[{"type": "lstm", "hidden_size": 1,
                                                    "forget_gate": False, "input_forget": True}]),
                         {"layers.0.0.W": np.zeros((3, 3)), "layers.0.0.R": np.zeros((3, 1))})
        refuse("input_forget without a forget gate", [p], p, "input_forget needs the forget gate")

        # vocabulary problems
        g = os.path.join(GOLDEN, "lstm2_tokens_head", "model.onnx")
        with open(tmp("v3.txt"), "w") as f:
            f.write("a\nb\nc\n")
        refuse("a vocabulary of the wrong size", [g, "--vocab", tmp("v3.txt")], g,
               "vocab: 3 tokens but the embedding has 30 rows")
        v = os.path.join(GOLDEN, "lstm_vectors", "model.onnx")
        with open(tmp("v30.txt"), "w") as f:
            f.write("".join("t%d\n" % i for i in range(30)))
        refuse("a vocabulary on a vectors model", [v, "--vocab", tmp("v30.txt")], v,
               "vocab: a vocabulary needs token input")
        refuse("the byte tokenizer with 30 tokens", [g, "--tokenizer", "byte"], g,
               "byte needs vocab_size >= 256")
        with open(tmp("vnul.json"), "w") as f:
            json.dump(["a\u0000"] + ["t%d" % i for i in range(29)], f)
        refuse("a NUL in a token", [g, "--vocab", tmp("vnul.json")], g,
               "vocab: token 0 contains a NUL character")
        p = write_native("nat", dict(arch, layers=[{"type": "rnn", "hidden_size": 4, "activations":
                                                    [[{"op": "Affine", "alpha": 1e39}]]}]), t)
        refuse("an alpha beyond float range", [p], p, "Affine alpha must be a finite float")
        rc, _, err = run_cli(g)
        check(rc != 0 and len(err.splitlines()) == 1 and "-o" in err,
              "a missing -o is a one-line usage error: %r" % err)


# ---- 5b. Casts on the data path (issue 14, adversary findings 3 and 6) -------------------
def cast_graph(path, casts, tokens):
    """ids -> CASTS... -> Gather -> LSTM -> MatMul (TOKENS, vocabulary 261), or vectors ->
    LSTM -> CASTS... -> MatMul -> Add(1e6): a Cast that wraps ids above 255 or truncates
    floats to integers changes the output where verification may not look."""
    rng = np.random.default_rng(3)
    V, E, H, O = 261, 3, 4, 5
    nodes, inits, prev = [], {}, "x"
    if tokens:
        for k, to in enumerate(casts):
            nodes.append(helper.make_node("Cast", [prev], ["c%d" % k], to=to, name="cast%d" % k))
            prev = "c%d" % k
        inits["table"] = f32(rng.normal(size=(V, E)))
        nodes += [helper.make_node("Gather", ["table", prev], ["e"], axis=0),
                  helper.make_node("Transpose", ["e"], ["eT"], perm=[1, 0, 2])]
        prev = "eT"
    else:
        E = 3
    inits.update({"W": f32(rng.normal(size=(1, 4 * H, E))),
                  "R": f32(rng.normal(size=(1, 4 * H, H))),
                  "Wo": f32(rng.normal(size=(H, O))), "one": np.array([1], np.int64),
                  "bo": f32(np.full(O, 1e6))})
    nodes += [helper.make_node("LSTM", [prev, "W", "R"], ["Y"], hidden_size=H),
              helper.make_node("Squeeze", ["Y", "one"], ["Ys"])]
    prev = "Ys"
    if not tokens:
        for k, to in enumerate(casts):
            nodes.append(helper.make_node("Cast", [prev], ["c%d" % k], to=to, name="cast%d" % k))
            prev = "c%d" % k
    nodes += [helper.make_node("MatMul", [prev, "Wo"], ["z"]),
              helper.make_node("Add", ["z", "bo"], ["out"])]
    x = vin("x", ["N", "T"], TensorProto.INT64) if tokens else vin("x", ["T", "N", E])
    return save_graph(path, nodes, inits, [x], [vin("out", None)])


class Casts(Case):
    def test_casts(self):
        T = TensorProto
        p = cast_graph(tmp("cast_ids_u8.onnx"), [T.UINT8, T.INT64], True)
        refuse("ids cast to uint8 (wraps ids above 255)", [p], p,
               "node 'cast0' (Cast): casts the token ids to UINT8")
        p = cast_graph(tmp("cast_ids_f.onnx"), [T.FLOAT, T.INT64], True)
        refuse("ids cast to float", [p], p, "node 'cast0' (Cast): casts the token ids to FLOAT")
        p = cast_graph(tmp("cast_f_i32.onnx"), [T.INT32, T.FLOAT], False)
        refuse("floats cast to int32 (truncates)", [p], p,
               "node 'cast0' (Cast): casts the float data to INT32")
        p = cast_graph(tmp("cast_f_f16.onnx"), [T.FLOAT16, T.FLOAT], False)
        refuse("floats cast to float16 (rounds)", [p], p,
               "node 'cast0' (Cast): casts the float data to FLOAT16")
        # the casts that change no value still convert, verified
        for name, casts, tokens in (("cast_ids_ok", [T.INT32, T.INT64], True),
                                    ("cast_f_ok", [T.DOUBLE, T.FLOAT], False)):
            p = cast_graph(tmp(name + ".onnx"), casts, tokens)
            rc, err = main_inproc(p, "-o", tmp(name + ".rnnd"))
            check(rc == 0, "%s converts: %s" % (name, err))


class StaticAxes(Case):
    def test_static_axes(self):
        """User B7 (issue 14): an ONNX file exported without dynamic axes from a batch-2 example
        bakes the batch into its zero states; verification at batch 3 crashed with an internal
        error. It is refused naming the fixed sizes and the re-export; a batch-1 export, which
        runs at any batch, still converts."""
        import torch
        import torch.nn as nn

        class Tagger(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(300, 12)
                self.lstm = nn.LSTM(12, 10, batch_first=True)
                self.fc = nn.Linear(10, 7)

            def forward(self, x):
                y, _ = self.lstm(self.emb(x))
                return self.fc(y)

        torch.manual_seed(0)
        net = Tagger().eval()
        for B in (2, 1):
            p = tmp("static_b%d.onnx" % B)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                    io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(net, (torch.randint(0, 300, (B, 5)),), p, opset_version=17)
            if B == 2:
                refuse("a fixed batch of 2", [p], p, "the graph has a fixed batch of 2 and "
                       "sequence length of 5 (input 'input.1', exported without dynamic axes)")
                refuse("a fixed batch of 2 (the way out)", [p], p,
                       "dynamic_axes={'x': {0: 'batch', 1: 'time'}}")
            else:
                rc, err = main_inproc(p, "-o", tmp("static_b1.rnnd"))
                check(rc == 0, "a static batch-1 export converts: %s" % err)


# ---- 6. half-size weights -----------------------------------------------------------------
def bf16_nearest(x):
    """x rounded to bfloat16, nearest, ties to even: of the two bfloat16 neighbours (the
    float truncated to its top 16 bits, and the next one up in magnitude) the closer, in
    float64; on a tie the one with an even last bit."""
    x = np.asarray(x, dtype=np.float32).ravel()
    u = x.view(np.uint32)
    lo = (u & np.uint32(0xFFFF0000)).view(np.float32).astype(np.float64)
    hi = ((u & np.uint32(0xFFFF0000)) + np.uint32(0x10000)).view(np.float32).astype(np.float64)
    d_lo, d_hi = np.abs(x - lo), np.abs(hi - x)
    even_lo = ((u >> 16) & 1) == 0
    return np.where((d_lo < d_hi) | ((d_lo == d_hi) & even_lo), lo, hi)


def read_any(path):
    """(architecture, {name: (dtype, float64 values)}, data bytes) of an .rnnd file, half
    dtypes widened; checks that every tensor begins 4-byte aligned and none overlaps."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    arch = json.loads(header.pop("__metadata__")["architecture"])
    out, spans = {}, []
    for name, t in header.items():
        b, e = t["data_offsets"]
        raw = data[8 + n + b:8 + n + e]
        if t["dtype"] == "F32":
            v = np.frombuffer(raw, "<f4").astype(np.float64)
        elif t["dtype"] == "F16":
            v = np.frombuffer(raw, "<f2").astype(np.float64)
        else:
            v = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            v = v.astype(np.float64)
        check(v.size == int(np.prod(t["shape"])) and b % 4 == 0,
              "%s: %s %s: size and 4-byte aligned begin" % (path, name, t["dtype"]))
        out[name] = (t["dtype"], v)
        spans.append((b, e))
    spans.sort()
    check(all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)),
          "%s: tensors do not overlap" % path)
    return arch, out, len(data) - 8 - n     # the data buffer's size


class HalfWeights(Case):
    def test_half_weights(self):
        rng = np.random.default_rng(5)
        arch = {"input": {"kind": "tokens", "vocab_size": 7, "embedding_dim": 3},
                "layers": [{"type": "jordan", "hidden_size": 5, "output_size": 3},
                           {"type": "lstm", "hidden_size": 4, "proj_size": 2, "peepholes": True}],
                "head": {"out_dim": 3, "in_dim": 2}}
        shapes = {"embedding.weight": (7, 3), "layers.0.0.W": (5, 3), "layers.0.0.R": (5, 3),
                  "layers.0.0.Wb": (5,), "layers.0.0.V": (3, 5), "layers.0.0.Vb": (3,),
                  "layers.1.0.W": (16, 3), "layers.1.0.R": (16, 2), "layers.1.0.Wb": (16,),
                  "layers.1.0.P": (12,), "layers.1.0.proj": (2, 4), "head.weight": (3, 2),
                  "head.bias": (3,)}
        t = {k: rng.normal(size=s).astype(np.float32) * 3 for k, s in shapes.items()}
        t["layers.0.0.W"][0, 0] = 1.0 + 2.0 ** -8        # a bf16 tie: rounds to even, 1.0
        t["layers.0.0.R"][0, 0] = 65519.0                # f16: 65504; bf16: 65536
        matrices = {"layers.0.0.W", "layers.0.0.R", "layers.0.0.V", "layers.1.0.W",
                    "layers.1.0.R", "layers.1.0.proj", "head.weight"}
        src = write_native("half", arch, t)
        rc, _, err = run_cli(src, "-o", tmp("half.f32.rnnd"))
        check(rc == 0, "half: f32 conversion: %s" % err)
        a32, t32, size32 = read_any(tmp("half.f32.rnnd"))
        check("weights" not in a32 and all(d == "F32" for d, _ in t32.values()),
              "f32 (the default) writes no \"weights\" key and only F32 tensors")
        seqs = [[1, 2, 3, 4, 5, 6, 0], [3, 3]]
        for wt, dt in (("bf16", "BF16"), ("f16", "F16")):
            out = tmp("half.%s.rnnd" % wt)
            rc, so, err = run_cli(src, "-o", out, "--weight-type", wt)
            check(rc == 0 and ("%s weight matrices" % wt) in so,
                  "--weight-type %s converts and says so: %s%s" % (wt, so.strip(), err))
            a, got, size = read_any(out)
            check(a.get("weights") == wt, "%s: architecture weights %r" % (wt, a.get("weights")))
            for name, x in t.items():
                dtype, v = got[name]
                if name in matrices:
                    want = bf16_nearest(x) if wt == "bf16" else \
                        x.astype(np.float16).astype(np.float64).ravel()
                    check(dtype == dt and np.array_equal(v, want),
                          "%s: %s stored as %s, rounded to nearest even" % (wt, name, dtype))
                else:
                    check(dtype == "F32" and np.array_equal(v, x.astype(np.float64).ravel()),
                          "%s: %s stays F32, unchanged" % (wt, name))
            nmat = sum(int(np.prod(shapes[m])) for m in matrices)
            # 2 bytes saved per matrix element, less at most 2 bytes of padding per matrix
            check(2 * nmat - 2 * len(matrices) <= size32 - size <= 2 * nmat,
                  "%s: data %d bytes, f32 %d: %d matrix elements at 2 bytes" % (
                      wt, size, size32, nmat))
            # the reference reads the half file as the float model of the rounded matrices
            rt = {k: (got[k][1].reshape(shapes[k]).astype(np.float32)) for k in t}
            rsrc = write_native("half_rounded_" + wt, arch, rt)
            rc, _, err = run_cli(rsrc, "-o", tmp("half_rounded_%s.rnnd" % wt))
            o1, f1 = reference.run(out, seqs)
            o2, f2 = reference.run(tmp("half_rounded_%s.rnnd" % wt), seqs)
            check(rc == 0 and all(np.array_equal(x, y) for x, y in zip(o1 + f1, o2 + f2)),
                  "%s: reference on the half file = reference on the float file of the rounded "
                  "values" % wt)
        check(got["layers.0.0.R"][1][0] == 65504.0, "f16: 65519 rounds to 65504")
        # refusals: beyond float16, an unknown type
        big = dict(t)
        big["head.weight"] = t["head.weight"].copy()
        big["head.weight"][1, 1] = -1e5
        p = write_native("half_big", arch, big)
        rc, err = main_inproc(p, "-o", tmp("half_big.rnnd"), "--weight-type", "f16")
        check(rc == 1 and "head.weight: value -100000 out of float16 range" in err and
              not os.path.exists(tmp("half_big.rnnd")),
              "f16 overflow refused, nothing written: %s" % err.strip())
        rc, err = main_inproc(p, "-o", tmp("half_big.rnnd"), "--weight-type", "bf16")
        check(rc == 0, "the same weight fits bfloat16: %s" % err.strip())
        rc, _, err = run_cli(src, "-o", tmp("half_x.rnnd"), "--weight-type", "fp8")
        check(rc == 2 and "--weight-type" in err, "an unknown --weight-type is a usage error")
        # the Python API
        import torch
        torch.manual_seed(0)
        m = rnnd_convert.from_module(torch.nn.LSTM(3, 4), tmp("half_mod.rnnd"), input=3,
                                     weights="f16")
        a, got, _ = read_any(tmp("half_mod.rnnd"))
        check(m.weights == "f16" and a["weights"] == "f16" and got["layers.0.0.W"][0] == "F16" and
              got["layers.0.0.Wb"][0] == "F32", "from_module(weights=\"f16\") writes F16 matrices")


class OnnxHeadFusion(Case):
    def test_onnx_head_fusion(self):
        """GELU and LayerNorm as torch exports them become head layers only where nothing else
        reads their intermediate results; head ops before or between recurrent nodes are
        refused by name."""
        rng = np.random.default_rng(11)
        W, R = f32(rng.normal(size=(1, 16, 3))), f32(rng.normal(size=(1, 16, 4)))
        inits = {"W": W, "R": R, "one": np.array([1], np.int64), "s2": f32(2 ** 0.5),
                 "c1": f32(1.0), "c05": f32(0.5), "two": f32(2.0), "eps": f32(1e-3)}
        lstm = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=4, name="l")
        sq = helper.make_node("Squeeze", ["Y", "one"], ["x"], name="sq")
        gelu = [helper.make_node("Div", ["x", "s2"], ["d"], name="div"),
                helper.make_node("Erf", ["d"], ["e"], name="erf"),
                helper.make_node("Add", ["e", "c1"], ["a"], name="add"),
                helper.make_node("Mul", ["x", "a"], ["m"], name="mul"),
                helper.make_node("Mul", ["m", "c05"], ["Z"], name="half")]
        p = save_graph(tmp("gelu.onnx"), [lstm, sq] + gelu, inits, [vin("X", ["T", "N", 3])],
                       [vin("Z", None)])
        out = tmp("gelu.rnnd")
        rc, err = main_inproc(p, "-o", out)
        head = parse_file(out)[0].get("head") if rc == 0 else None
        check(rc == 0 and head["layers"] == [{"op": "gelu"}],
              "ONNX GELU as torch exports it: a gelu head layer (%s %s)" % (err, head))
        p = save_graph(tmp("gelu2.onnx"), [lstm, sq] + gelu, inits, [vin("X", ["T", "N", 3])],
                       [vin("Z", None), vin("e", None)])
        refuse("GELU's Erf read elsewhere", [p], p, "node 'erf' (Erf): operator not supported")

        ln = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1], name="mean"),
              helper.make_node("Sub", ["x", "mu"], ["c"], name="sub"),
              helper.make_node("Pow", ["c", "two"], ["c2"], name="pow"),
              helper.make_node("ReduceMean", ["c2"], ["var"], axes=[-1], name="var"),
              helper.make_node("Add", ["var", "eps"], ["ve"], name="addeps"),
              helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
              helper.make_node("Div", ["c", "sd"], ["Z"], name="norm")]
        p = save_graph(tmp("ln.onnx"), [lstm, sq] + ln, inits, [vin("X", ["T", "N", 3])],
                       [vin("Z", None)])
        out = tmp("ln.rnnd")
        rc, err = main_inproc(p, "-o", out)
        head = parse_file(out)[0].get("head") if rc == 0 else None
        check(rc == 0 and head["layers"] == [{"op": "layernorm", "eps": 0.001, "affine": False}],
              "ONNX LayerNorm as torch exports it before opset 17: a layernorm head layer (%s %s)"
              % (err, head))
        ln_bad = ln[:-1] + [helper.make_node("Div", ["c", "sd"], ["Z"], name="norm"),
                            helper.make_node("Add", ["Z", "c"], ["Z2"], name="again")]
        p = save_graph(tmp("ln2.onnx"), [lstm, sq] + ln_bad, inits, [vin("X", ["T", "N", 3])],
                       [vin("Z2", None)])
        refuse("a centred value read twice", [p], p, "node 'mean' (ReduceMean)")

        # a head op before a recurrent node, and a recurrent node after one
        relu0 = helper.make_node("Relu", ["X"], ["Xr"], name="early")
        lstm0 = helper.make_node("LSTM", ["Xr", "W", "R"], ["Y"], hidden_size=4, name="l")
        p = save_graph(tmp("relu0.onnx"), [relu0, lstm0, sq], inits, [vin("X", ["T", "N", 3])],
                       [vin("x", None)])
        refuse("a Relu before the recurrent node", [p], p,
               "node 'early' (Relu): Relu before the recurrent layers")
        relu1 = helper.make_node("Relu", ["x"], ["xr"], name="mid")
        un = helper.make_node("Unsqueeze", ["xr", "one"], ["x4"], name="un")
        lstm2 = helper.make_node("LSTM", ["x4", "W2", "R"], ["Y2"], hidden_size=4, name="l2")
        p = save_graph(tmp("relu1.onnx"), [lstm, sq, relu1, un, lstm2],
                       dict(inits, W2=f32(rng.normal(size=(1, 16, 4)))),
                       [vin("X", ["T", "N", 3])], [vin("Y2", None)])
        refuse("a recurrent node after a head op", [p], p,
               "node 'l2' (LSTM): reads the output of head layers (relu)")


class ReferenceMlpHead(Case):
    def test_reference_mlp_head_refused(self):
        """An MLP head around a reference module (MinGRU, SLSTM, Clockwork) is refused with a
        message that says so: their forward() is Python loops, not analysed, so the head's order
        of layers cannot be read (failed before: the message said rnnd has one head)."""
        import torch
        import torch.nn as nn
        from rnnd_modules.mingru import MinGRU
        from rnnd_modules.slstm import SLSTM
        from rnnd_modules.clockwork import Clockwork

        class Net(nn.Module):
            def __init__(self, rnn, h):
                super().__init__()
                self.rnn, self.a, self.b = rnn, nn.Linear(h, 8), nn.Linear(8, 3)

            def forward(self, x):
                return self.b(torch.relu(self.a(self.rnn(x)[0])))

        for what, rnn, h in (("MinGRU", MinGRU(4, 6), 6), ("SLSTM", SLSTM(4, 8, heads=2), 8),
                             ("Clockwork", Clockwork(4, 8, [1, 2]), 8)):
            try:
                rnnd_convert.from_module(Net(rnn, h), tmp("refmlp.rnnd"))
                check(False, "%s with an MLP head: converted" % what)
            except ConvertError as e:
                check("an MLP head is not read around this module" in str(e),
                      "%s with an MLP head: %s" % (what, e))


if __name__ == "__main__":
    unittest.main()
