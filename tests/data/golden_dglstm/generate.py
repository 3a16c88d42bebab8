#!/usr/bin/python3
"""Generate or check the golden cases of the depth-gated LSTM (issue 16).

    generate.py --out DIR      write every case (DIR/NAME/model.json, weights.npz, case.json)
    generate.py --check DIR    recompute every case of DIR from its model.json and weights.npz
                               with this file's reference and compare with its case.json

ONNX and PyTorch have no depth gate, so each case is a native spec (docs/model-format.md: the
architecture JSON plus an .npz of tensors in the format's names) that rnnd-convert turns into
an .rnnd file. `expected`, `final_h` and `final_c` come from the float64 NumPy reference
below, written from the equations of the issue (Yao et al. 2015) and ONNX's LSTM for this
file alone: it shares no code with tools/rnnd_convert (reference.py) or with rnnd. Per step,
layer l (gate rows i, o, f, c of W, R; f, g, h the three activations; c_low the new c of
layer l - 1 at this step):

    i = f(W_i x + Wb_i + R_i h + Rb_i [+ P_i c_prev])      (clip first, when set)
    fg = f(... [+ P_f c_prev]), or 1 - i (input_forget), or 1 (no forget gate)
    g = g(W_c x + Wb_c + R_c h + Rb_c)
    d = f(D x + Db + Dc * c_prev + Dl * c_low)             (depth_gate)
    c = fg * c_prev + i * g + d * c_low
    o = f(W_o x + ... [+ P_o c]);  h = o * h(c)

Sizes are odd on purpose, models have 3-4 layers (two of them depth-gated), and the longest
sequences have 300-400 steps. Everything is seeded, so --out writes the same files on every
machine. case.json has the fields of tests/golden/README.md plus `final_c` (per sequence,
every layer's final c). Run with Debian's /usr/bin/python3 (python3-numpy).
"""
import argparse
import json
import os
import sys

import numpy as np

ATOL, RTOL = 1e-4, 1e-3           # the tolerance a conformant implementation is held to
CHECK_TOL = 2e-6                  # how closely --check must reproduce the stored numbers

CASES = [
    dict(name="dglstm3_vectors", dim=7, lengths=[300, 57, 1],
         layers=[dict(type="lstm", hidden_size=13),
                 dict(type="lstm", hidden_size=13, depth_gate=True),
                 dict(type="lstm", hidden_size=13, depth_gate=True)],
         description="lstm I=7 H=13, then two depth-gated lstm layers of 13"),
    dict(name="dglstm2_tokens_head", vocab=23, dim=9, lengths=[250, 64],
         layers=[dict(type="lstm", hidden_size=11),
                 dict(type="lstm", hidden_size=11, depth_gate=True, peepholes=True,
                      clip=2.5)],
         head=dict(out_dim=23, norm="log_softmax"),
         description="embedding(23, 9) + lstm H=11 + depth-gated lstm H=11 with peepholes "
                     "and clip 2.5 + linear(23) log-softmax"),
    dict(name="dglstm_mixed_vectors", dim=5, lengths=[401, 150, 2],
         layers=[dict(type="lstm", hidden_size=17),
                 dict(type="lstm", hidden_size=9),
                 dict(type="lstm", hidden_size=9, depth_gate=True, input_forget=True,
                      activations=[[{"op": "HardSigmoid", "alpha": 0.25, "beta": 0.5},
                                    {"op": "Tanh"}, {"op": "Softsign"}]]),
                 dict(type="lstm", hidden_size=9, depth_gate=True, forget_gate=False)],
         head=dict(out_dim=3, norm="none"),
         description="lstm H=17, lstm H=9, depth-gated coupled lstm H=9 (HardSigmoid, "
                     "Softsign), depth-gated lstm H=9 without a forget gate, head 3"),
]


def seed_of(name):
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name)) % (2 ** 31)


def gates(L):
    return 4 if L.get("forget_gate", True) else 3


# ---- the reference (float64) ------------------------------------------------------------

def act(a, x):
    op = a["op"]
    if op == "Sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if op == "Tanh":
        return np.tanh(x)
    if op == "Softsign":
        return x / (1.0 + np.abs(x))
    if op == "HardSigmoid":
        return np.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0)
    raise ValueError("the reference has no %s" % op)


DEFAULT_ACTS = [{"op": "Sigmoid"}, {"op": "Tanh"}, {"op": "Tanh"}]


def run_layer(L, t, l, xs, c_low):
    """One forward layer over XS [T, in]; C_LOW [T, H] the layer below's cells (or None).
    Returns (h of every step [T, H], c of every step [T, H])."""
    H = L["hidden_size"]
    p = "layers.%d.0." % l
    W, R, Wb, Rb = t[p + "W"], t[p + "R"], t[p + "Wb"], t[p + "Rb"]
    f, g, hf = L.get("activations", [DEFAULT_ACTS])[0]
    has_fg = L.get("forget_gate", True)
    P = t[p + "P"] if L.get("peepholes") else np.zeros(3 * H)
    cl = L.get("clip")

    def clip(v):
        return v if cl is None else np.clip(v, -cl, cl)

    h, c = np.zeros(H), np.zeros(H)
    hs, cs = [], []
    for k, x in enumerate(xs):
        pre = W @ x + Wb + R @ h + Rb
        i = act(f, clip(pre[:H] + P[:H] * c))
        if not has_fg:
            fg = 1.0
        elif L.get("input_forget"):
            fg = 1.0 - i
        else:
            fg = act(f, clip(pre[2 * H:3 * H] + P[2 * H:] * c))
        gg = act(g, clip(pre[(3 if has_fg else 2) * H:]))
        c_new = fg * c + i * gg
        if L.get("depth_gate"):
            d = act(f, clip(t[p + "D"] @ x + t[p + "Db"] + t[p + "Dc"] * c +
                            t[p + "Dl"] * c_low[k]))
            c_new = c_new + d * c_low[k]
        c = c_new
        o = act(f, clip(pre[H:2 * H] + P[H:2 * H] * c))
        h = o * act(hf, c)
        hs.append(h)
        cs.append(c)
    return np.array(hs), np.array(cs)


def reference(arch, t, seq):
    """(outputs [T, out], [final h of each layer], [final c of each layer]) from zeros."""
    if arch["input"]["kind"] == "tokens":
        x = t["embedding.weight"][np.asarray(seq, dtype=np.int64)]
    else:
        x = np.asarray(seq, dtype=np.float64)
    fh, fc, cells = [], [], None
    for l, L in enumerate(arch["layers"]):
        x, cells = run_layer(L, t, l, x, cells)
        fh.append(x[-1])
        fc.append(cells[-1])
    head = arch.get("head")
    if head is not None:
        x = x @ t["head.weight"].T + t["head.bias"]
        if head.get("norm") == "log_softmax":
            m = x.max(axis=1, keepdims=True)
            x = x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))
    return x, fh, fc


# ---- writing and checking ------------------------------------------------------------------

def f32list(a):
    """Values as float32, written exactly (every JSON parser reads back the same float32)."""
    return np.asarray(a, dtype=np.float32).astype(np.float64).tolist()


def make_case(spec):
    rng = np.random.default_rng(seed_of(spec["name"]))
    dim = spec["dim"]
    arch = {"format_version": 1, "name": spec["name"]}
    if "vocab" in spec:
        arch["input"] = {"kind": "tokens", "vocab_size": spec["vocab"], "embedding_dim": dim}
    else:
        arch["input"] = {"kind": "vectors", "dim": dim}
    arch["layers"] = []
    t = {}
    if "vocab" in spec:
        t["embedding.weight"] = rng.uniform(-1, 1, (spec["vocab"], dim))
    ind = dim
    for l, L in enumerate(spec["layers"]):
        L = dict(L, direction="forward")
        arch["layers"].append(L)
        G, H = gates(L), L["hidden_size"]
        p = "layers.%d.0." % l
        t[p + "W"] = rng.uniform(-1, 1, (G * H, ind)) / np.sqrt(ind) * 1.5
        t[p + "R"] = rng.uniform(-1, 1, (G * H, H)) / np.sqrt(H) * 1.5
        t[p + "Wb"] = rng.uniform(-0.5, 0.5, G * H)
        t[p + "Rb"] = rng.uniform(-0.5, 0.5, G * H)
        if L.get("peepholes"):
            t[p + "P"] = rng.uniform(-1, 1, 3 * H)
        if L.get("depth_gate"):
            t[p + "D"] = rng.uniform(-1, 1, (H, ind)) / np.sqrt(ind) * 1.5
            t[p + "Dc"] = rng.uniform(-1, 1, H)
            t[p + "Dl"] = rng.uniform(-1, 1, H)
            t[p + "Db"] = rng.uniform(-0.5, 0.5, H)
        ind = H
    if "head" in spec:
        hd = spec["head"]
        arch["head"] = {"out_dim": hd["out_dim"], "in_dim": ind, "norm": hd["norm"]}
        t["head.weight"] = rng.uniform(-1, 1, (hd["out_dim"], ind)) / np.sqrt(ind)
        t["head.bias"] = rng.uniform(-0.1, 0.1, hd["out_dim"])
    t = {k: v.astype(np.float32) for k, v in t.items()}
    seqs = []
    for n in spec["lengths"]:
        if "vocab" in spec:
            seqs.append(rng.integers(0, spec["vocab"], n).tolist())
        else:
            x = np.round(rng.uniform(-2, 2, (n, dim)), 7).astype(np.float32)
            seqs.append(f32list(x))
    return arch, t, seqs


def compute(arch, t, seqs):
    t64 = {k: np.asarray(v, dtype=np.float64) for k, v in t.items()}
    expected, final_h, final_c = [], [], []
    for s in seqs:
        y, fh, fc = reference(arch, t64, s)
        expected.append(f32list(y))
        final_h.append([f32list(h) for h in fh])
        final_c.append([f32list(c) for c in fc])
    return expected, final_h, final_c


def write(out, spec):
    arch, t, seqs = make_case(spec)
    d = os.path.join(out, spec["name"])
    os.makedirs(d, exist_ok=True)
    native = dict(arch, weights="weights.npz")
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(native, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(d, "weights.npz"), "wb") as f:
        np.savez(f, **{k: t[k] for k in sorted(t)})
    expected, final_h, final_c = compute(arch, t, seqs)
    case = {
        "name": spec["name"], "description": spec["description"],
        "source": "tests/data/golden_dglstm/generate.py: float64 NumPy reference of the "
                  "issue 16 equations",
        "model": "model.json", "sequences": seqs,
        "input": ({"kind": "tokens", "vocab": spec["vocab"]} if "vocab" in spec
                  else {"kind": "vectors", "dim": spec["dim"]}),
        "expected": expected, "final_h": final_h, "final_c": final_c, "stateful": True,
        "atol": ATOL, "rtol": RTOL,
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, separators=(",", ":"))
        f.write("\n")


def check(root):
    """Recompute every case of ROOT from its model.json and weights.npz; 0 when all match."""
    bad = 0
    names = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    if sorted(c["name"] for c in CASES) != names:
        print("FAIL cases in %s: %s, expected %s" % (root, names, [c["name"] for c in CASES]))
        bad += 1
    for name in names:
        d = os.path.join(root, name)
        with open(os.path.join(d, "model.json")) as f:
            arch = json.load(f)
        with open(os.path.join(d, "case.json")) as f:
            case = json.load(f)
        with np.load(os.path.join(d, "weights.npz")) as z:
            t = {k: z[k] for k in z.files}
        got_all = compute(arch, t, case["sequences"])
        worst = 0.0
        for got, want in zip(got_all, (case["expected"], case["final_h"], case["final_c"])):
            for g, w in zip(got, want):
                g = np.concatenate([np.ravel(v) for v in g])
                w = np.concatenate([np.ravel(v) for v in w])
                if g.shape != w.shape:
                    worst = np.inf
                    continue
                worst = max(worst, float(np.max(np.abs(g - w) / (1.0 + np.abs(w)))))
        ok = worst <= CHECK_TOL
        bad += not ok
        print("%s %s: worst relative difference %.3g" % ("ok" if ok else "FAIL", name, worst))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--out")
    g.add_argument("--check")
    a = ap.parse_args()
    if a.check:
        return check(a.check)
    for spec in CASES:
        write(a.out, spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
