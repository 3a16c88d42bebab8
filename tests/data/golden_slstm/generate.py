#!/usr/bin/python3
"""Generate or check the golden cases of the sLSTM layer (issue 16).

    generate.py --out DIR      write every case (DIR/NAME/model.json, weights.npz, case.json)
    generate.py --check DIR    recompute every case of DIR from its model.json and weights.npz
                               with this file's reference and compare with its case.json

Neither ONNX nor PyTorch has this cell, so each case is a native spec (docs/model-format.md:
the architecture JSON plus an .npz of tensors in the format's names) that rnnd-convert turns
into an .rnnd file. `expected` and `final_h` come from the float64 NumPy reference below,
written from the equations of the issue (Beck et al. 2024, xLSTM) for this file alone: it
shares no code with tools/rnnd_convert (reference.py), tools/rnnd_modules or rnnd.

    pre = W x + Wb + R_blockdiag h_prev + Rb    rows i, f, z, o; unit u of head k = u // d
                                                reads h_prev[k*d:(k+1)*d] through R[row, :]
    lf  = pre_f ("exp")  or  log(sigmoid(pre_f)) ("sigmoid")
    m   = max(lf + m_prev, pre_i);  i' = exp(pre_i - m);  f' = exp(lf + m_prev - m)
    c   = f' c_prev + i' tanh(pre_z);  n = f' n_prev + i';  h = sigmoid(pre_o) c / n

Sizes are odd on purpose (d = 3, 5, 13, ...), models have 2-3 layers, the longest sequences
250 steps, both forget modes, and one case scales its weights so that pre-activations reach
about +-30 (the stabiliser's m then carries the scale, and i', f' underflow to 0 for some
units). Everything is seeded, so --out writes the same files on every machine. case.json has
the fields of tests/golden/README.md plus `final_cnm` (per sequence, per layer: the final c,
n and m) and `max_abs_pre` (the largest |pre| the reference met).
Run with Debian's /usr/bin/python3 (python3-numpy).
"""
import argparse
import json
import os
import sys

import numpy as np

ATOL, RTOL = 1e-4, 1e-3           # the tolerance a conformant implementation is held to
CHECK_TOL = 2e-6                  # how closely --check must reproduce the stored numbers

CASES = [
    dict(name="slstm3_vectors", dim=7, lengths=[200, 37, 1], scale=1.5,
         layers=[dict(hidden_size=15, heads=5, forget="exp"),
                 dict(hidden_size=9, heads=3, forget="sigmoid"),
                 dict(hidden_size=13, heads=1, forget="exp")],
         description="slstm 3-layer I=7 H=15/K=5 exp, H=9/K=3 sigmoid, H=13/K=1 exp"),
    dict(name="slstm2_tokens_head", vocab=23, dim=7, lengths=[200, 64], scale=1.5,
         layers=[dict(hidden_size=13, heads=1, forget="sigmoid"),
                 dict(hidden_size=12, heads=4, forget="sigmoid")],
         head=dict(out_dim=23, norm="log_softmax"),
         description="embedding(23) + slstm H=13/K=1, H=12/K=4 sigmoid + linear(23) "
                     "log-softmax"),
    dict(name="slstm_large_gates", dim=5, lengths=[250, 120], scale=12.0,
         layers=[dict(hidden_size=10, heads=2, forget="sigmoid"),
                 dict(hidden_size=15, heads=3, forget="exp")],
         head=dict(out_dim=3, norm="none"),
         description="slstm H=10/K=2 sigmoid, H=15/K=3 exp, weights x12 (|pre| up to ~37), "
                     "head 3"),
]


def seed_of(name):
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name)) % (2 ** 31)


# ---- the reference (float64) ------------------------------------------------------------

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def run_layer(L, W, R, Wb, Rb, xs, stats):
    """One forward layer over XS [T, in]: (outputs [T, H], final (h, c, n, m))."""
    H, K = L["hidden_size"], L["heads"]
    d = H // K
    h, c, n, m = np.zeros(H), np.zeros(H), np.zeros(H), np.zeros(H)
    ys = []
    for x in xs:
        pre = W @ x + Wb + Rb
        for g in range(4):
            for u in range(H):
                k = u // d
                pre[g * H + u] += R[g * H + u] @ h[k * d:(k + 1) * d]
        stats[0] = max(stats[0], float(np.max(np.abs(pre))))
        pi, pf, pz, po = pre[:H], pre[H:2 * H], pre[2 * H:3 * H], pre[3 * H:]
        if L["forget"] == "exp":
            lf = pf
        else:
            lf = np.log(sigmoid(pf))
        m_new = np.maximum(lf + m, pi)
        i = np.exp(pi - m_new)
        f = np.exp(lf + m - m_new)
        c = f * c + i * np.tanh(pz)
        n = f * n + i
        m = m_new
        h = sigmoid(po) * c / n
        ys.append(h)
    return np.array(ys), (h, c, n, m)


def reference(arch, t, seq, stats):
    """(outputs [T, out], [final h, c, n, m of each layer]) of one sequence, from zeros."""
    if arch["input"]["kind"] == "tokens":
        x = t["embedding.weight"][np.asarray(seq, dtype=np.int64)]
    else:
        x = np.asarray(seq, dtype=np.float64)
    finals = []
    for l, L in enumerate(arch["layers"]):
        p = "layers.%d.0." % l
        x, st = run_layer(L, t[p + "W"], t[p + "R"], t[p + "Wb"], t[p + "Rb"], x, stats)
        finals.append(list(st))
    head = arch.get("head")
    if head is not None:
        x = x @ t["head.weight"].T + t["head.bias"]
        if head.get("norm") == "log_softmax":
            mx = x.max(axis=1, keepdims=True)
            x = x - (mx + np.log(np.exp(x - mx).sum(axis=1, keepdims=True)))
    return x, finals


# ---- writing and checking ------------------------------------------------------------------

def f32list(a):
    """Values as float32, written exactly (every JSON parser reads back the same float32)."""
    return np.asarray(a, dtype=np.float32).astype(np.float64).tolist()


def make_case(spec):
    rng = np.random.default_rng(seed_of(spec["name"]))
    dim, s = spec["dim"], spec["scale"]
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
        L = dict(L, type="slstm", direction="forward")
        arch["layers"].append(L)
        H, d = L["hidden_size"], L["hidden_size"] // L["heads"]
        t["layers.%d.0.W" % l] = rng.uniform(-1, 1, (4 * H, ind)) / np.sqrt(ind) * s
        t["layers.%d.0.R" % l] = rng.uniform(-1, 1, (4 * H, d)) / np.sqrt(d) * s
        t["layers.%d.0.Wb" % l] = rng.uniform(-0.5, 0.5, 4 * H) * s
        t["layers.%d.0.Rb" % l] = rng.uniform(-0.5, 0.5, 4 * H) * s
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
    expected, final_h, final_cnm, stats = [], [], [], [0.0]
    for s in seqs:
        y, finals = reference(arch, t64, s, stats)
        expected.append(f32list(y))
        final_h.append([f32list(st[0]) for st in finals])
        final_cnm.append([[f32list(v) for v in st[1:]] for st in finals])
    return expected, final_h, final_cnm, stats[0]


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
    expected, final_h, final_cnm, max_pre = compute(arch, t, seqs)
    case = {
        "name": spec["name"], "description": spec["description"],
        "source": "tests/data/golden_slstm/generate.py: float64 NumPy reference of the "
                  "issue 16 sLSTM equations",
        "model": "model.json", "sequences": seqs,
        "input": ({"kind": "tokens", "vocab": spec["vocab"]} if "vocab" in spec
                  else {"kind": "vectors", "dim": spec["dim"]}),
        "expected": expected, "final_h": final_h,
        # per sequence, per layer: the rest of the state, [c, n, m]
        "final_cnm": final_cnm, "stateful": True,
        "atol": ATOL, "rtol": RTOL, "max_abs_pre": round(max_pre, 3),
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, separators=(",", ":"))
        f.write("\n")
    print("%s: max |pre| %.1f" % (spec["name"], max_pre))


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
        expected, final_h, final_cnm, _ = compute(arch, t, case["sequences"])
        worst = 0.0
        for got, want in ((expected, case["expected"]), (final_h, case["final_h"]),
                          (final_cnm, case["final_cnm"])):
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
