#!/usr/bin/python3
"""Generate or check the golden conformance cases of tests/golden.

    generate.py --out DIR      write every case (DIR/NAME/model.onnx, DIR/NAME/case.json)
    generate.py --check DIR    recompute every case of DIR with this file's NumPy reference of
                               the ONNX operators and compare with its case.json

Where the expectation comes from:
- torch cases: PyTorch computes `expected` and `final_h` (nn.Embedding, nn.RNN / nn.LSTM /
  nn.GRU, nn.Linear), and torch.onnx.export writes the model, so the graphs are the ones
  PyTorch users export.
- onnx cases: one LSTM / GRU node built with onnx.helper, using what PyTorch cannot express
  (peepholes, input_forget, clip, other activations, linear_before_reset = 0, reverse);
  `expected` comes from the NumPy reference below, an implementation of the ONNX operator
  spec written for this file alone (it shares no code with tools/rnnd_convert).
--check runs that same reference over every case, the torch ones included, so the reference
is checked against PyTorch on every cell PyTorch has, and the stored numbers against both.

Everything is seeded: --out writes the same weights and inputs on every machine (the expected
values may differ in the last bit between CPUs, which is why comparisons use a tolerance).
Run with Debian's /usr/bin/python3 (python3-numpy, python3-onnx; python3-torch for --out).
"""
import argparse
import json
import os
import sys

import numpy as np

OPSET = 14
ATOL, RTOL = 1e-4, 1e-3           # the tolerance a conformant implementation is held to
CHECK_TOL = 2e-6                  # how closely the reference must reproduce stored numbers


# ---- the cases -------------------------------------------------------------------------------
# torch cases: (name, cell, input, layers, hidden, bidirectional, head vocab, lengths, extra)
TORCH_CASES = [
    dict(name="lstm_vectors", cell="LSTM", dim=4, hidden=8, lengths=[6, 1, 11],
         description="lstm 1-layer I=4 H=8"),
    dict(name="gru_vectors", cell="GRU", dim=4, hidden=8, lengths=[6, 11],
         description="gru 1-layer I=4 H=8"),
    dict(name="rnn_tanh_vectors", cell="RNN", dim=3, hidden=5, lengths=[8],
         description="rnn 1-layer I=3 H=5"),
    dict(name="rnn_relu_vectors", cell="RNN", dim=3, hidden=5, lengths=[8], nonlinearity="relu",
         description="rnn 1-layer I=3 H=5 relu"),
    dict(name="lstm_bidir_vectors", cell="LSTM", dim=4, hidden=6, lengths=[9, 4],
         bidirectional=True, description="lstm 1-layer bidirectional I=4 H=6"),
    dict(name="lstm2_tokens_head", cell="LSTM", vocab=30, dim=8, hidden=16, layers=2,
         lengths=[12, 5], description="embedding(30) + lstm 2-layer I=8 H=16 + linear(30)"),
    dict(name="gru2_tokens_head", cell="GRU", vocab=30, dim=8, hidden=16, layers=2,
         lengths=[12], description="embedding(30) + gru 2-layer I=8 H=16 + linear(30)"),
]

# onnx cases: one node, I = 3, H = 5, one sequence of 9 steps
ONNX_CASES = [
    dict(name="onnx_lstm_peephole", op="LSTM", attrs={"direction": "forward"}, peephole=True),
    dict(name="onnx_lstm_cifg", op="LSTM", attrs={"direction": "forward", "input_forget": 1}),
    dict(name="onnx_lstm_reverse", op="LSTM", attrs={"direction": "reverse"}),
    dict(name="onnx_lstm_clip_hardsigmoid", op="LSTM",
         attrs={"direction": "forward", "clip": 0.7,
                "activations": ["HardSigmoid", "Tanh", "Tanh"],
                "activation_alpha": [0.2], "activation_beta": [0.5]},
         description="LSTM with cell clip 0.7 and Keras-style hard sigmoid gates"),
    dict(name="onnx_gru_reset_before", op="GRU",
         attrs={"direction": "forward", "linear_before_reset": 0}),
]
ONNX_DIM, ONNX_HIDDEN, ONNX_STEPS = 3, 5, 9


def seed_of(name):
    """A seed per case from its name, so adding a case changes no other."""
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name)) % (2 ** 31)


def rounded(x):
    """Inputs with 7 decimals, as float32: short in JSON, exact in every parser."""
    return np.round(np.asarray(x, dtype=np.float64), 7).astype(np.float32)


def tolist(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


# ---- NumPy reference of the ONNX RNN, GRU and LSTM operators (float64) ----------------------
def _act(name, alpha=None, beta=None):
    name = name.lower()
    if name == "sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh
    if name == "relu":
        return lambda x: np.maximum(x, 0.0)
    if name == "hardsigmoid":
        a = 0.2 if alpha is None else alpha
        b = 0.5 if beta is None else beta
        return lambda x: np.clip(a * x + b, 0.0, 1.0)
    raise ValueError("activation %s is not in this reference" % name)


def _acts(attrs, per_dir, defaults):
    names = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    ndir = 2 if attrs.get("direction", "forward") == "bidirectional" else 1
    names = names or defaults * ndir
    if len(names) == per_dir:
        names = names * ndir
    alphas = list(attrs.get("activation_alpha", []))
    betas = list(attrs.get("activation_beta", []))
    fns = []
    for i, n in enumerate(names):
        # alpha/beta lists are consumed in order by the activations that take them
        if n.lower() == "hardsigmoid":
            fns.append(_act(n, alphas.pop(0) if alphas else None, betas.pop(0) if betas else None))
        else:
            fns.append(_act(n))
    return [fns[d * per_dir:(d + 1) * per_dir] for d in range(ndir)]


def ref_node(op, attrs, x, W, R, B=None, P=None):
    """One ONNX recurrent node on one sequence x [T, I] from zero state.
    Returns Y [T, dirs, H] and the final hidden state of each direction [dirs, H]."""
    H = int(attrs["hidden_size"])
    direction = attrs.get("direction", "forward")
    dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    per_dir = {"RNN": 1, "GRU": 2, "LSTM": 3}[op]
    defaults = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"],
                "LSTM": ["Sigmoid", "Tanh", "Tanh"]}[op]
    acts = _acts(attrs, per_dir, defaults)
    clip = attrs.get("clip")
    T = x.shape[0]
    Y = np.zeros((T, len(dirs), H))
    final = np.zeros((len(dirs), H))
    for d, dname in enumerate(dirs):
        Wd, Rd = W[d].astype(np.float64), R[d].astype(np.float64)
        Bd = (B[d].astype(np.float64) if B is not None else np.zeros(2 * gates * H))
        Wb, Rb = Bd[:gates * H], Bd[gates * H:]
        Pd = P[d].astype(np.float64) if P is not None else np.zeros(3 * H)
        h, c = np.zeros(H), np.zeros(H)
        order = range(T) if dname == "forward" else range(T - 1, -1, -1)
        for t in order:
            xw = Wd @ x[t].astype(np.float64) + Wb
            if op == "RNN":
                pre = xw + Rd @ h + Rb
                if clip is not None:
                    pre = np.clip(pre, -clip, clip)
                h = acts[d][0](pre)
            elif op == "GRU":
                f, g = acts[d]
                # gate order z, r, h
                hr = Rd @ h + Rb
                pz = xw[:H] + hr[:H]
                pr = xw[H:2 * H] + hr[H:2 * H]
                if clip is not None:
                    pz, pr = np.clip(pz, -clip, clip), np.clip(pr, -clip, clip)
                z, r = f(pz), f(pr)
                if int(attrs.get("linear_before_reset", 0)):
                    ph = xw[2 * H:] + r * (Rd[2 * H:] @ h + Rb[2 * H:])
                else:
                    ph = xw[2 * H:] + Rd[2 * H:] @ (r * h) + Rb[2 * H:]
                if clip is not None:
                    ph = np.clip(ph, -clip, clip)
                h = (1.0 - z) * g(ph) + z * h
            else:
                f, g, hact = acts[d]
                # gate order i, o, f, c; peepholes P = [pi, po, pf]
                pre = xw + Rd @ h + Rb
                pi, po, pf = Pd[:H], Pd[H:2 * H], Pd[2 * H:]
                a_i = pre[:H] + pi * c
                a_f = pre[2 * H:3 * H] + pf * c
                a_c = pre[3 * H:]
                if clip is not None:
                    a_i, a_f, a_c = (np.clip(a, -clip, clip) for a in (a_i, a_f, a_c))
                i = f(a_i)
                fg = 1.0 - i if int(attrs.get("input_forget", 0)) else f(a_f)
                c = fg * c + i * g(a_c)
                a_o = pre[H:2 * H] + po * c          # the output gate reads the new cell
                if clip is not None:
                    a_o = np.clip(a_o, -clip, clip)
                h = f(a_o) * hact(c)
            Y[t, d] = h
        final[d] = h
    return Y, final


def _attrs(node):
    import onnx
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def ref_model(path, case):
    """Every sequence of CASE through the ONNX model at PATH with the NumPy reference:
    (expected, final_h) as case.json stores them. Handles the graphs this file writes:
    optional Gather (embedding), recurrent nodes in order, optional MatMul + Add head."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    emb = head_w = head_b = None
    rec = []
    for n in m.graph.node:
        if n.op_type == "Gather" and n.input[0] in init:
            emb = init[n.input[0]]
        elif n.op_type in ("RNN", "GRU", "LSTM"):
            ins = [init.get(i) if i else None for i in n.input] + [None] * 8
            rec.append((n.op_type, _attrs(n), ins[1], ins[2], ins[3], ins[7]))
        elif n.op_type == "MatMul" and n.input[1] in init:
            head_w = init[n.input[1]]
        elif n.op_type == "Add" and head_w is not None:
            head_b = next(init[i] for i in n.input if i in init)
    if not rec:
        raise ValueError("%s: no recurrent node" % path)
    expected, final_h = [], []
    for seq in case["sequences"]:
        if case["input"]["kind"] == "tokens":
            x = emb[np.asarray(seq, dtype=np.int64)].astype(np.float64)
        else:
            x = np.asarray(seq, dtype=np.float32).astype(np.float64)
        finals = []
        for op, attrs, W, R, B, P in rec:
            Y, fin = ref_node(op, attrs, x, W, R, B, P)
            x = Y.reshape(Y.shape[0], -1)
            finals.extend(fin)
        if head_w is not None:
            x = x @ head_w.astype(np.float64)
            if head_b is not None:
                x = x + head_b
        expected.append([tolist(row) for row in x])
        final_h.append([tolist(h) for h in finals])
    return expected, final_h


# ---- writing the cases -----------------------------------------------------------------------
def torch_case(spec, out):
    import warnings

    import torch
    from torch import nn

    # torch.onnx.export warns that RNNs exported with batch 1 may not run at other batch
    # sizes in other runtimes; the converter reads the weights, not the shapes
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
    torch.manual_seed(seed_of(spec["name"]))
    rng = np.random.RandomState(seed_of(spec["name"]))
    cell = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}[spec["cell"]]
    kw = dict(num_layers=spec.get("layers", 1), batch_first=True,
              bidirectional=spec.get("bidirectional", False))
    if spec["cell"] == "RNN":
        kw["nonlinearity"] = spec.get("nonlinearity", "tanh")
    vocab = spec.get("vocab")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, spec["dim"]) if vocab else None
            self.rnn = cell(spec["dim"], spec["hidden"], **kw)
            self.fc = nn.Linear(spec["hidden"], vocab) if vocab else None

        def forward(self, x):
            if self.emb is not None:
                x = self.emb(x)
            y, h = self.rnn(x)
            if isinstance(h, tuple):
                h = h[0]
            if self.fc is not None:
                y = self.fc(y)
            return y, h

    net = Net().eval()
    if vocab:
        seqs = [rng.randint(0, vocab, size=n).tolist() for n in spec["lengths"]]
        example = torch.tensor([seqs[0]], dtype=torch.long)
        axes = {"input": {0: "batch", 1: "time"}}
    else:
        seqs = [rounded(rng.randn(n, spec["dim"])) for n in spec["lengths"]]
        example = torch.from_numpy(seqs[0][None])
        axes = {"input": {0: "batch", 1: "time"}}
    axes["output"] = {0: "batch", 1: "time"}
    expected, final_h = [], []
    with torch.no_grad():
        for s in seqs:
            x = (torch.tensor([s], dtype=torch.long) if vocab else torch.from_numpy(s[None]))
            y, h = net(x)
            expected.append([tolist(row) for row in y[0].numpy()])
            final_h.append([tolist(hh) for hh in h[:, 0].numpy()])
        os.makedirs(out, exist_ok=True)
        torch.onnx.export(net, example, os.path.join(out, "model.onnx"), opset_version=OPSET,
                          input_names=["input"], output_names=["output", "h_n"],
                          dynamic_axes=axes)
    case = {
        "name": spec["name"],
        "description": spec["description"],
        "source": "torch.onnx.export (PyTorch %s)" % torch.__version__.split("+")[0],
        "model": "model.onnx",
        "input": ({"kind": "tokens", "vocab": vocab} if vocab
                  else {"kind": "vectors", "dim": spec["dim"]}),
        "sequences": [s if vocab else [tolist(r) for r in s] for s in seqs],
        "expected": expected,
        "final_h": final_h,
        "stateful": not spec.get("bidirectional", False),
        "atol": ATOL, "rtol": RTOL,
    }
    return case


def onnx_case(spec, out):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(seed_of(spec["name"]))
    op, I, H, T = spec["op"], ONNX_DIM, ONNX_HIDDEN, ONNX_STEPS
    gates = {"GRU": 3, "LSTM": 4}[op]
    attrs = dict(spec["attrs"], hidden_size=H)
    W = rounded(rng.uniform(-0.6, 0.6, (1, gates * H, I)))
    R = rounded(rng.uniform(-0.6, 0.6, (1, gates * H, H)))
    B = rounded(rng.uniform(-0.3, 0.3, (1, 2 * gates * H)))
    P = rounded(rng.uniform(-0.5, 0.5, (1, 3 * H))) if spec.get("peephole") else None
    x = rounded(rng.randn(T, I))
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
             numpy_helper.from_array(B, "B")]
    inputs = ["X", "W", "R", "B"]
    if P is not None:
        inits.append(numpy_helper.from_array(P, "P"))
        inputs += ["", "", "", "P"]
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, inputs, outputs, **attrs)
    vi = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["time", "batch", I])]
    vo = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["time", 1, "batch", H]),
          helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "batch", H])]
    if op == "LSTM":
        vo.append(helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, "batch", H]))
    graph = helper.make_graph([node], spec["name"], vi, vo, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(out, exist_ok=True)
    onnx.save(model, os.path.join(out, "model.onnx"))
    shown = {"hidden_size": H}
    shown.update(spec["attrs"])
    case = {
        "name": spec["name"],
        "description": spec.get("description",
                                "%s %s I=%d H=%d %s" % (op, attrs["direction"], I, H, shown)),
        "source": "onnx.helper; expected from the NumPy reference of the ONNX %s spec "
                  "(tests/golden/generate.py)" % op,
        "model": "model.onnx",
        "input": {"kind": "vectors", "dim": I},
        "onnx_output": "Y of the %s node; each step's vector is the directions concatenated" % op,
        "sequences": [[tolist(r) for r in x]],
        "stateful": attrs["direction"] == "forward",
        "atol": ATOL, "rtol": RTOL,
    }
    case["expected"], case["final_h"] = ref_model(os.path.join(out, "model.onnx"), case)
    return case


def write_case(case, out):
    with open(os.path.join(out, "case.json"), "w") as f:
        json.dump(case, f)
        f.write("\n")


def generate(root):
    for spec in TORCH_CASES:
        out = os.path.join(root, spec["name"])
        write_case(torch_case(spec, out), out)
    for spec in ONNX_CASES:
        out = os.path.join(root, spec["name"])
        write_case(onnx_case(spec, out), out)
    return 0


# ---- checking --------------------------------------------------------------------------------
def worst_diff(got, want):
    worst = 0.0
    for g_seq, w_seq in zip(got, want):
        if len(g_seq) != len(w_seq):
            return float("inf")
        for g, w in zip(g_seq, w_seq):
            g, w = np.asarray(g), np.asarray(w)
            if g.shape != w.shape:
                return float("inf")
            worst = max(worst, float(np.max(np.abs(g - w) / (1.0 + np.abs(w)), initial=0.0)))
    return worst if len(got) == len(want) else float("inf")


def check(root):
    names = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "case.json")))
    want = sorted(s["name"] for s in TORCH_CASES + ONNX_CASES)
    bad = 0
    if names != want:
        print("check: %s holds cases %s, this generator writes %s" % (root, names, want))
        bad += 1
    for name in names:
        with open(os.path.join(root, name, "case.json")) as f:
            case = json.load(f)
        exp, fin = ref_model(os.path.join(root, name, case.get("model", "model.onnx")), case)
        de, df = worst_diff(exp, case["expected"]), worst_diff(fin, case["final_h"])
        ok = de <= CHECK_TOL and df <= CHECK_TOL
        bad += not ok
        print("check %-28s expected %.2g final_h %.2g %s" % (name, de, df, "ok" if ok else "FAIL"))
    return 1 if bad else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", help="write every case into this folder")
    g.add_argument("--check", help="recompute the cases of this folder and compare")
    a = p.parse_args(argv)
    try:
        import onnx  # noqa: F401
    except ImportError:
        sys.exit("generate.py: needs python3-onnx (run it with /usr/bin/python3)")
    return generate(a.out) if a.out else check(a.check)


if __name__ == "__main__":
    sys.exit(main())
