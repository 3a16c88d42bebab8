#!/usr/bin/python3
"""Generate or check the golden cases of the minGRU and minLSTM layers (issue 16).

    generate.py --out DIR      write every case (DIR/NAME/model.json, weights.npz, case.json)
    generate.py --check DIR    recompute every case of DIR from its model.json and weights.npz
                               with this file's reference and compare with its case.json

Neither ONNX nor PyTorch has these cells, so each case is a native spec (docs/model-format.md:
the architecture JSON plus an .npz of tensors in the format's names) that rnnd-convert turns
into an .rnnd file. `expected` and `final_h` come from the float64 NumPy reference below,
written from the equations of the issue (Feng et al. 2024, "Were RNNs All We Needed?") for
this file alone: it shares no code with tools/rnnd_convert (reference.py) or with rnnd.

    mingru:  z = f(W_z x + Wb_z);  n = g(W_h x + Wb_h);  h = (1 - z) * h_prev + z * n
    minlstm: f = f(W_f x + Wb_f);  i = f(W_i x + Wb_i);  n = g(W_h x + Wb_h)
             h = (f / (f + i)) * h_prev + (i / (f + i)) * n

Sizes are odd on purpose (H = 13, in_dim 7, ...), models have 2-3 layers, and the longest
sequences have about 200 steps. Everything is seeded, so --out writes the same files on
every machine. case.json has the fields of tests/golden/README.md. Run with Debian's
/usr/bin/python3 (python3-numpy).
"""
import argparse
import json
import os
import sys

import numpy as np

ATOL, RTOL = 1e-4, 1e-3           # the tolerance a conformant implementation is held to
CHECK_TOL = 2e-6                  # how closely --check must reproduce the stored numbers

SIG = {"op": "Sigmoid"}
IDENT = {"op": "Affine", "alpha": 1.0, "beta": 0.0}

CASES = [
    dict(name="mingru3_vectors", dim=7, lengths=[200, 37, 1],
         layers=[dict(type="mingru", hidden_size=13),
                 dict(type="mingru", hidden_size=9, activations=[[SIG, {"op": "Tanh"}]]),
                 dict(type="mingru", hidden_size=13)],
         description="mingru 3-layer I=7 H=13,9,13 (candidates: identity, tanh, identity)"),
    dict(name="minlstm2_tokens_head", vocab=23, dim=7, lengths=[200, 64],
         layers=[dict(type="minlstm", hidden_size=13),
                 dict(type="minlstm", hidden_size=11,
                      activations=[[SIG, {"op": "Tanh"}]])],
         head=dict(out_dim=23, norm="log_softmax"),
         description="embedding(23) + minlstm 2-layer I=7 H=13,11 + linear(23) log-softmax"),
    dict(name="min_mixed_vectors", dim=5, lengths=[201, 150],
         layers=[dict(type="minlstm", hidden_size=13),
                 dict(type="mingru", hidden_size=17,
                      activations=[[SIG, {"op": "Softsign"}]]),
                 dict(type="minlstm", hidden_size=7,
                      activations=[[SIG, {"op": "Affine", "alpha": 0.5, "beta": 0.25}]])],
         head=dict(out_dim=3, norm="none"),
         description="minlstm H=13, mingru H=17 (softsign), minlstm H=7 (affine), head 3"),
]


def seed_of(name):
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name)) % (2 ** 31)


def gates(typ):
    return 2 if typ == "mingru" else 3


# ---- the reference (float64) ------------------------------------------------------------

def act(a, x):
    op = a["op"]
    if op == "Sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if op == "Tanh":
        return np.tanh(x)
    if op == "Softsign":
        return x / (1.0 + np.abs(x))
    if op == "Affine":
        return a.get("alpha", 1.0) * x + a.get("beta", 0.0)
    raise ValueError("the reference has no %s" % op)


def layer_acts(L):
    return L.get("activations", [[SIG, IDENT]])[0]


def run_layer(L, W, Wb, xs):
    """One forward layer over XS [T, in]: (outputs [T, H], final h)."""
    H = L["hidden_size"]
    f, g = layer_acts(L)
    h = np.zeros(H)
    ys = []
    for x in xs:
        pre = W @ x + Wb
        if L["type"] == "mingru":
            z = act(f, pre[:H])
            n = act(g, pre[H:])
            h = (1.0 - z) * h + z * n
        else:
            fg = act(f, pre[:H])
            i = act(f, pre[H:2 * H])
            n = act(g, pre[2 * H:])
            h = (fg / (fg + i)) * h + (i / (fg + i)) * n
        ys.append(h)
    return np.array(ys), h


def reference(arch, t, seq):
    """(outputs [T, out], [final h of each layer]) of one sequence, from zeros."""
    if arch["input"]["kind"] == "tokens":
        x = t["embedding.weight"][np.asarray(seq, dtype=np.int64)]
    else:
        x = np.asarray(seq, dtype=np.float64)
    finals = []
    for l, L in enumerate(arch["layers"]):
        x, h = run_layer(L, t["layers.%d.0.W" % l], t["layers.%d.0.Wb" % l], x)
        finals.append(h)
    head = arch.get("head")
    if head is not None:
        x = x @ t["head.weight"].T + t["head.bias"]
        if head.get("norm") == "log_softmax":
            m = x.max(axis=1, keepdims=True)
            x = x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))
    return x, finals


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
        G, H = gates(L["type"]), L["hidden_size"]
        t["layers.%d.0.W" % l] = rng.uniform(-1, 1, (G * H, ind)) / np.sqrt(ind) * 1.5
        t["layers.%d.0.Wb" % l] = rng.uniform(-0.5, 0.5, G * H)
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
    expected, final_h = [], []
    for s in seqs:
        y, finals = reference(arch, t64, s)
        expected.append(f32list(y))
        final_h.append([f32list(h) for h in finals])
    return expected, final_h


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
    expected, final_h = compute(arch, t, seqs)
    case = {
        "name": spec["name"], "description": spec["description"],
        "source": "tests/data/golden_min/generate.py: float64 NumPy reference of the "
                  "issue 16 equations",
        "model": "model.json", "sequences": seqs,
        "input": ({"kind": "tokens", "vocab": spec["vocab"]} if "vocab" in spec
                  else {"kind": "vectors", "dim": spec["dim"]}),
        "expected": expected, "final_h": final_h, "stateful": True,
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
        expected, final_h = compute(arch, t, case["sequences"])
        worst = 0.0
        for got, want in ((expected, case["expected"]), (final_h, case["final_h"])):
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
