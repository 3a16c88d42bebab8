#!/usr/bin/python3
"""Generate or check the golden cases of the Clockwork RNN layer (issue 16).

    generate.py --out DIR      write every case (DIR/NAME/model.json, weights.npz, case.json)
    generate.py --check DIR    recompute every case of DIR from its model.json and weights.npz
                               with this file's reference and compare with its case.json

Neither ONNX nor PyTorch has the cell, so each case is a native spec (docs/model-format.md)
that rnnd-convert turns into an .rnnd file. `expected`, `final_h` and `final_t` come from the
float64 NumPy reference below, written from the equations of the issue (Koutnik et al. 2014)
for this file alone: it shares no code with tools/rnnd_convert (reference.py), with
tools/rnnd_modules or with rnnd. Per step, with the layer's counter t (0 at the start):

    module k (units k*H/m .. (k+1)*H/m - 1) is active when t mod T_k == 0
    active rows:   h_k = f(W_k x + Wb_k + R_k h_prev + Rb_k)
    other rows:    h_k = h_prev_k;   then t = t + 1

R is random on and above its block diagonal and zero below it (module k reads modules
j >= k only). The reference multiplies the whole of R anyway: the zeros change nothing, so
it does not share the kernels' skipping either. Sizes are odd (H = 15 in 3 modules of 5,
...), models have 2-3 layers, and the longest sequences have 300 steps, so every counter
crosses every period many times (the largest period is 16). Everything is seeded, so --out
writes the same files on every machine. case.json has the fields of tests/golden/README.md
plus `final_t` (per sequence, per layer: the counter after the sequence; null for a layer
that has none). Run with Debian's
/usr/bin/python3 (python3-numpy).
"""
import argparse
import json
import os
import sys

import numpy as np

ATOL, RTOL = 1e-4, 1e-3           # the tolerance a conformant implementation is held to
CHECK_TOL = 2e-6                  # how closely --check must reproduce the stored numbers

CASES = [
    dict(name="clock3_vectors", dim=7, lengths=[300, 57, 1],
         layers=[dict(type="clockwork", hidden_size=12, periods=[1, 3, 7, 16]),
                 dict(type="clockwork", hidden_size=15, periods=[1, 2, 5],
                      activations=[[{"op": "Softsign"}]]),
                 dict(type="clockwork", hidden_size=9, periods=[2, 5, 11])],
         description="clockwork 3-layer I=7 H=12 [1,3,7,16], H=15 [1,2,5] softsign, "
                     "H=9 [2,5,11]"),
    dict(name="clock2_tokens_head", vocab=23, dim=7, lengths=[300, 129],
         layers=[dict(type="clockwork", hidden_size=20, periods=[1, 3, 7, 16]),
                 dict(type="clockwork", hidden_size=7, periods=[4])],
         head=dict(out_dim=23, norm="log_softmax"),
         description="embedding(23) + clockwork H=20 [1,3,7,16], H=7 [4] (one module) + "
                     "linear(23) log-softmax"),
    dict(name="clock_mixed_vectors", dim=5, lengths=[301, 160],
         layers=[dict(type="rnn", hidden_size=11),
                 dict(type="clockwork", hidden_size=16, periods=[1, 3, 7, 16]),
                 dict(type="clockwork", hidden_size=6, periods=[1, 2],
                      activations=[[{"op": "Affine", "alpha": 0.5, "beta": 0.125}]])],
         head=dict(out_dim=3, norm="none"),
         description="rnn H=11, clockwork H=16 [1,3,7,16], clockwork H=6 [1,2] (affine), "
                     "head 3"),
]


def seed_of(name):
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name)) % (2 ** 31)


# ---- the reference (float64) ------------------------------------------------------------

def act(a, x):
    op = a["op"]
    if op == "Tanh":
        return np.tanh(x)
    if op == "Softsign":
        return x / (1.0 + np.abs(x))
    if op == "Affine":
        return a.get("alpha", 1.0) * x + a.get("beta", 0.0)
    raise ValueError("the reference has no %s" % op)


def run_layer(L, W, R, Wb, Rb, xs, h0=None, t0=0):
    """One forward layer over XS [T, in] from h0 (zeros) and counter t0: (outputs [T, H],
    final h, final t)."""
    H = L["hidden_size"]
    f = L.get("activations", [[{"op": "Tanh"}]])[0][0]
    h = np.zeros(H) if h0 is None else np.asarray(h0, dtype=np.float64)
    t = t0
    ys = []
    if L["type"] == "rnn":
        for x in xs:
            h = act(f, W @ x + Wb + R @ h + Rb)
            ys.append(h)
        return np.array(ys), h, None
    periods = L["periods"]
    hm = H // len(periods)
    for x in xs:
        new = act(f, W @ x + Wb + R @ h + Rb)
        active = np.repeat([t % T == 0 for T in periods], hm)
        h = np.where(active, new, h)
        t += 1
        ys.append(h)
    return np.array(ys), h, t


def reference(arch, t, seq):
    """(outputs [T, out], [final h of each layer], [final t of each layer]) of one sequence,
    from zeros."""
    if arch["input"]["kind"] == "tokens":
        x = t["embedding.weight"][np.asarray(seq, dtype=np.int64)]
    else:
        x = np.asarray(seq, dtype=np.float64)
    finals, counters = [], []
    for l, L in enumerate(arch["layers"]):
        p = "layers.%d.0." % l
        x, h, c = run_layer(L, t[p + "W"], t[p + "R"], t[p + "Wb"], t[p + "Rb"], x)
        finals.append(h)
        counters.append(c)
    head = arch.get("head")
    if head is not None:
        x = x @ t["head.weight"].T + t["head.bias"]
        if head.get("norm") == "log_softmax":
            m = x.max(axis=1, keepdims=True)
            x = x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))
    return x, finals, counters


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
        H = L["hidden_size"]
        p = "layers.%d.0." % l
        t[p + "W"] = rng.uniform(-1, 1, (H, ind)) / np.sqrt(ind) * 1.5
        R = rng.uniform(-1, 1, (H, H)) / np.sqrt(H) * 1.2
        if L["type"] == "clockwork":
            hm = H // len(L["periods"])
            for i in range(H):
                R[i, :(i // hm) * hm] = 0.0
        t[p + "R"] = R
        t[p + "Wb"] = rng.uniform(-0.5, 0.5, H)
        t[p + "Rb"] = rng.uniform(-0.5, 0.5, H)
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
    expected, final_h, final_t = [], [], []
    for s in seqs:
        y, finals, counters = reference(arch, t64, s)
        expected.append(f32list(y))
        final_h.append([f32list(h) for h in finals])
        final_t.append(counters)
    return expected, final_h, final_t


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
    expected, final_h, final_t = compute(arch, t, seqs)
    case = {
        "name": spec["name"], "description": spec["description"],
        "source": "tests/data/golden_clock/generate.py: float64 NumPy reference of the "
                  "issue 16 equations",
        "model": "model.json", "sequences": seqs,
        "input": ({"kind": "tokens", "vocab": spec["vocab"]} if "vocab" in spec
                  else {"kind": "vectors", "dim": spec["dim"]}),
        "expected": expected, "final_h": final_h, "final_t": final_t, "stateful": True,
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
        expected, final_h, final_t = compute(arch, t, case["sequences"])
        worst = 0.0
        for got, want in ((expected, case["expected"]), (final_h, case["final_h"])):
            for g, w in zip(got, want):
                g = np.concatenate([np.ravel(v) for v in g])
                w = np.concatenate([np.ravel(v) for v in w])
                if g.shape != w.shape:
                    worst = np.inf
                    continue
                worst = max(worst, float(np.max(np.abs(g - w) / (1.0 + np.abs(w)))))
        ok = worst <= CHECK_TOL and final_t == case["final_t"]
        bad += not ok
        print("%s %s: worst relative difference %.3g, counters %s" % (
            "ok" if ok else "FAIL", name, worst,
            "equal" if final_t == case["final_t"] else "DIFFER"))
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
