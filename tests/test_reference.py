#!/usr/bin/env python3
"""Checks of tools/rnnd_convert/reference.py, the NumPy forward pass other tests trust.

(a) every golden case (and the mingru / minlstm and slstm ones of tests/data/golden_min and
    tests/data/golden_slstm, the clockwork ones of tests/data/golden_clock, the depth-gated
    lstm ones of tests/data/golden_dglstm): converted, run from zero states, compared with
    `expected`, `final_t` (clockwork counters, exactly), `final_h` and `final_c` (where the
    case has it) within the case's tolerance;
(b) PyTorch on random data: nn.LSTM (proj_size, multi-layer, bidirectional), nn.GRU, nn.RNN
    (tanh, relu), odd sizes (input 13, hidden 37), sequences of different lengths, random
    initial states, final states in the layout of include/rnnd/rnn.h;
(c) what PyTorch lacks, against scalar Python transcriptions of docs/model-format.md: all 11
    activations, Jordan, the 1997 LSTM without forget gate (with peepholes and clip), GRU
    linear_before_reset 0 with clip;
(d) splitting a sequence and carrying the final state gives the same result as one run;
(e) pooled models ("pool"): the reference and `rnnd infer` against PyTorch's y[-1], h_n,
    mean and max over the steps, with and without a softmax head.

Env: PYTHON3, PYTHONPATH (= tools), RNND_GOLDEN_DIR, RNND_TEST_TMP. Each part is a test
(Reference.test_*), runnable alone; each seeds its own random numbers.
"""
import json
import math
import os
import shutil
import unittest
import warnings

import numpy as np

from daemon_util import RUNNING, Case  # first: it finds tools/ for rnnd_convert
import rnnd_convert
from rnnd_convert import reference

warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("RNND_SRCDIR", os.path.dirname(HERE))
GOLDEN = os.environ.get("RNND_GOLDEN_DIR") or os.path.join(SRCDIR, "tests", "golden")
MIN_GOLDEN = os.path.join(SRCDIR, "tests", "data", "golden_min")    # native specs
CLOCK_GOLDEN = os.path.join(SRCDIR, "tests", "data", "golden_clock")
SL_GOLDEN = os.path.join(SRCDIR, "tests", "data", "golden_slstm")
DG_GOLDEN = os.path.join(SRCDIR, "tests", "data", "golden_dglstm")  # native specs
TMP = os.path.join(os.environ.get("RNND_TEST_TMP") or "/tmp/rnnd-test-tmp", "reference")
shutil.rmtree(TMP, ignore_errors=True)
os.makedirs(TMP)

# a check of the test running now (daemon_util.RUNNING): counted, and a failure of that test
check = RUNNING.check


def tmp(name):
    return os.path.join(TMP, name)


def split_state(m, flat):
    """[(h, c or None)] per layer and direction from a flat state (include/rnnd/rnn.h)."""
    out, pos = [], 0
    for L in m.layers:
        for _ in range(m.ndir(L)):
            O = m.out_dim(L)
            h = flat[pos:pos + O]
            pos += O
            c = None
            n = {"lstm": 1, "slstm": 3}.get(L["type"], 0) * L["hidden_size"]
            if n:
                c = flat[pos:pos + n]   # lstm c; slstm c, n, m
                pos += n
            elif L["type"] == "clockwork":    # the counter t: two floats, t mod 2^24, t / 2^24
                c = int(flat[pos]) + int(flat[pos + 1]) * 2 ** 24
                pos += 2
            out.append((h, c))
    assert pos == len(flat)
    return out


# ---- helpers of (e) pooling: the reference and rnnd's own forward against PyTorch ----------
def with_pool(src, dst, pool):
    """DST: the .rnnd SRC with "pool": POOL added to its architecture (tensors untouched)."""
    data = open(src, "rb").read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    arch = json.loads(header["__metadata__"]["architecture"])
    arch["pool"] = pool
    header["__metadata__"]["architecture"] = json.dumps(arch)
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(dst, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data[8 + n:])
    return dst


def rnnd_infer(path, seqs):
    """`rnnd infer` (the C forward) on SEQS: its "outputs"."""
    import subprocess
    body = json.dumps({"inputs": [np.asarray(x).tolist() for x in seqs]})
    p = subprocess.run([os.environ.get("RNND_BIN", os.path.join(SRCDIR, "rnnd")), "infer",
                        "--model", path], input=body, capture_output=True, text=True,
                       timeout=60)
    check(p.returncode == 0, "rnnd infer %s: %s" % (path, p.stderr.strip()))
    return np.array(json.loads(p.stdout)["outputs"]) if p.returncode == 0 else None


def pool_base():
    """The pooling tests' GRU and head (seeded), the GRU written to pool_base.rnnd."""
    import torch
    import torch.nn as nn
    torch.manual_seed(7)
    gru = nn.GRU(5, 6, num_layers=2, bidirectional=True).eval()
    fc = nn.Linear(12, 3).eval()
    rnnd_convert.from_module(gru, tmp("pool_base.rnnd"))
    return gru, fc


# ---- helpers of (c) scalar transcriptions of the format's equations ----------------------
def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


SCALAR_ACTS = {
    "Sigmoid": lambda x, a, b: sig(x),
    "Tanh": lambda x, a, b: math.tanh(x),
    "Relu": lambda x, a, b: max(0.0, x),
    "HardSigmoid": lambda x, a, b: min(1.0, max(0.0, a * x + b)),
    "LeakyRelu": lambda x, a, b: x if x >= 0 else a * x,
    "ThresholdedRelu": lambda x, a, b: x if x > a else 0.0,
    "ScaledTanh": lambda x, a, b: a * math.tanh(b * x),
    "Affine": lambda x, a, b: a * x + b,
    "Elu": lambda x, a, b: x if x >= 0 else a * (math.exp(x) - 1.0),
    "Softsign": lambda x, a, b: x / (1.0 + abs(x)),
    "Softplus": lambda x, a, b: math.log(1.0 + math.exp(x)),
}
DEFAULTS = {"HardSigmoid": (0.2, 0.5), "LeakyRelu": (0.01, 0.0), "ThresholdedRelu": (1.0, 0.0),
            "ScaledTanh": (1.0, 1.0), "Affine": (1.0, 0.0), "Elu": (1.0, 0.0)}


def native(name, arch, tensors):
    np.savez(tmp(name + ".npz"), **tensors)
    with open(tmp(name + ".json"), "w") as f:
        json.dump(dict(arch, weights=name + ".npz"), f)
    rnnd_convert.convert(tmp(name + ".json"), tmp(name + ".rnnd"))
    # what was written (float32) is what the scalar code must use
    _, t = reference.read(tmp(name + ".rnnd"))
    return tmp(name + ".rnnd"), {k: v.tolist() for k, v in t.items()}


def mv(M, v):
    return [sum(M[j][k] * v[k] for k in range(len(v))) for j in range(len(M))]


class Reference(Case):
    """The reference's checks, (a) to (e)."""

    # (a) golden
    def test_golden(self):
        cases = sorted((GOLDEN, d) for d in os.listdir(GOLDEN)
                       if os.path.isdir(os.path.join(GOLDEN, d)))
        check(len(cases) >= 12, "at least 12 golden cases in %s" % GOLDEN)
        mins = sorted((MIN_GOLDEN, d) for d in os.listdir(MIN_GOLDEN)
                      if os.path.isdir(os.path.join(MIN_GOLDEN, d)))
        check(len(mins) >= 3, "at least 3 mingru / minlstm cases in %s" % MIN_GOLDEN)
        sls = sorted((SL_GOLDEN, d) for d in os.listdir(SL_GOLDEN)
                     if os.path.isdir(os.path.join(SL_GOLDEN, d)))
        check(len(sls) >= 3, "at least 3 slstm cases in %s" % SL_GOLDEN)
        mins += sls
        clocks = sorted((CLOCK_GOLDEN, d) for d in os.listdir(CLOCK_GOLDEN)
                        if os.path.isdir(os.path.join(CLOCK_GOLDEN, d)))
        check(len(clocks) >= 3, "at least 3 clockwork cases in %s" % CLOCK_GOLDEN)
        dgs = sorted((DG_GOLDEN, d) for d in os.listdir(DG_GOLDEN)
                     if os.path.isdir(os.path.join(DG_GOLDEN, d)))
        check(len(dgs) >= 3, "at least 3 depth-gated lstm cases in %s" % DG_GOLDEN)
        for root, c in cases + mins + clocks + dgs:
            case = json.load(open(os.path.join(root, c, "case.json")))
            path = tmp(c + ".rnnd")
            rnnd_convert.convert(os.path.join(root, c, case.get("model", "model.onnx")), path)
            m = reference.load(path)
            outs, finals = reference.run(m, case["sequences"])
            atol, rtol = case["atol"], case["rtol"]
            worst = 0.0
            for b, seq in enumerate(case["sequences"]):
                e = np.array(case["expected"][b])
                check(outs[b].shape == e.shape, "%s[%d]: output shape %s" % (c, b, outs[b].shape))
                worst = max(worst, float(np.max(np.abs(outs[b] - e) / (atol + rtol * np.abs(e)))))
                # layers may differ in size: compare every layer's h, concatenated
                hs = np.concatenate([h for h, _ in split_state(m, finals[b])])
                fh = np.concatenate([np.asarray(h, dtype=np.float64) for h in case["final_h"][b]])
                check(hs.shape == fh.shape, "%s[%d]: final_h shape" % (c, b))
                worst = max(worst, float(np.max(np.abs(hs - fh) / (atol + rtol * np.abs(fh)))))
                if "final_c" in case:   # every layer is an lstm there
                    cs = np.concatenate([c_ for _, c_ in split_state(m, finals[b])])
                    fc = np.concatenate([np.asarray(x, dtype=np.float64)
                                         for x in case["final_c"][b]])
                    check(cs.shape == fc.shape, "%s[%d]: final_c shape" % (c, b))
                    worst = max(worst, float(np.max(np.abs(cs - fc) / (atol + rtol * np.abs(fc)))))
                if "final_t" in case:       # clockwork: each layer's counter, exactly
                    ts = [t if L["type"] == "clockwork" else None
                          for L, (_, t) in zip(m.layers, split_state(m, finals[b]))]
                    check(ts == case["final_t"][b], "%s[%d]: final_t %s, want %s"
                          % (c, b, ts, case["final_t"][b]))
            check(worst <= 1.0, "golden %s within tolerance (worst %.3g of it)" % (c, worst))

    # (c) scalar transcriptions of the format's equations
    def test_activations(self):
        xs = [-3.0, -1.25, -0.3, 0.0, 0.4, 0.9, 1.0, 1.3, 2.5]
        for op, f in SCALAR_ACTS.items():
            for a, b in ((None, None), (0.7, -0.2), (1.6, 0.3)):
                ea, eb = (a, b) if a is not None else DEFAULTS.get(op, (0.0, 0.0))
                got = reference.activation(op, np.array(xs), a, b)
                want = [f(x, ea, eb) for x in xs]
                check(np.allclose(got, want, rtol=1e-12, atol=1e-12),
                      "activation %s alpha=%s beta=%s" % (op, a, b))
        check(reference.activation("Sigmoid", np.array([-800.0]))[0] >= 0.0 and
              reference.activation("Softplus", np.array([800.0]))[0] == 800.0,
              "Sigmoid and Softplus do not overflow")

    def test_jordan(self):
        rng = np.random.default_rng(11)
        H, O, I = 3, 2, 4
        arch = {"input": {"kind": "vectors", "dim": I},
                "layers": [{"type": "jordan", "hidden_size": H, "output_size": O, "clip": 0.8,
                            "activations": [[{"op": "LeakyRelu", "alpha": 0.2},
                                             {"op": "Affine", "alpha": 2.0, "beta": 0.5}]]}],
                "head": None}
        t = {"layers.0.0.W": rng.normal(size=(H, I)), "layers.0.0.R": rng.normal(size=(H, O)),
             "layers.0.0.Wb": rng.normal(size=H), "layers.0.0.Rb": rng.normal(size=H),
             "layers.0.0.V": rng.normal(size=(O, H)), "layers.0.0.Vb": rng.normal(size=O)}
        path, w = native("jordan", arch, t)
        xs = rng.normal(size=(6, I))
        y = [0.0] * O
        want = []
        for x in xs.tolist():
            pre = [a + b + c + d for a, b, c, d in zip(mv(w["layers.0.0.W"], x),
                                                       w["layers.0.0.Wb"],
                                                       mv(w["layers.0.0.R"], y),
                                                       w["layers.0.0.Rb"])]
            u = [SCALAR_ACTS["LeakyRelu"](min(0.8, max(-0.8, p)), 0.2, 0) for p in pre]
            y = [2.0 * (v + vb) + 0.5
                 for v, vb in zip(mv(w["layers.0.0.V"], u), w["layers.0.0.Vb"])]
            want.append(y)
        outs, finals = reference.run(path, [xs])
        check(np.allclose(outs[0], want, atol=1e-12), "Jordan layer = scalar equations")
        check(np.allclose(finals[0], want[-1], atol=1e-12), "Jordan state is its output y")

    def test_lstm_1997(self):
        rng = np.random.default_rng(12)
        H, I = 3, 2
        arch = {"input": {"kind": "vectors", "dim": I},
                "layers": [{"type": "lstm", "hidden_size": H, "forget_gate": False,
                            "peepholes": True, "clip": 1.5, "direction": "reverse"}],
                "head": None}
        t = {"layers.0.0.W": rng.normal(size=(3 * H, I)),
             "layers.0.0.R": rng.normal(size=(3 * H, H)),
             "layers.0.0.Wb": rng.normal(size=3 * H), "layers.0.0.Rb": rng.normal(size=3 * H),
             "layers.0.0.P": rng.normal(size=3 * H)}
        path, w = native("lstm97", arch, t)
        xs = rng.normal(size=(5, I)).tolist()
        W, R, Wb, Rb, P = (w["layers.0.0." + k] for k in ("W", "R", "Wb", "Rb", "P"))
        h, c = [0.0] * H, [0.0] * H
        cl = lambda v: min(1.5, max(-1.5, v))      # noqa: E731
        want = [None] * len(xs)
        for t_ in reversed(range(len(xs))):        # reverse: last step first
            pre = [a + b + d + e for a, b, d, e in zip(mv(W, xs[t_]), Wb, mv(R, h), Rb)]
            i = [sig(cl(pre[j] + P[j] * c[j])) for j in range(H)]
            g = [math.tanh(cl(pre[2 * H + j])) for j in range(H)]     # blocks i, o, c
            c = [c[j] + i[j] * g[j] for j in range(H)]                # no forget gate
            o = [sig(cl(pre[H + j] + P[H + j] * c[j])) for j in range(H)]
            h = [o[j] * math.tanh(c[j]) for j in range(H)]
            want[t_] = h
        outs, finals = reference.run(path, [xs])
        check(np.allclose(outs[0], want, atol=1e-12), "1997 LSTM (reverse, peepholes, clip) = "
              "scalar equations")
        check(np.allclose(finals[0], h + c, atol=1e-12),
              "reverse LSTM final state is h then c after reading the first step")

    def test_gru_lbr0(self):
        rng = np.random.default_rng(13)
        H, I = 2, 3
        arch = {"input": {"kind": "vectors", "dim": I},
                "layers": [{"type": "gru", "hidden_size": H, "linear_before_reset": 0, "clip": 0.6,
                            "activations": [[{"op": "HardSigmoid"}, {"op": "Softsign"}]]}],
                "head": {"out_dim": 2, "in_dim": H, "norm": "softmax"}}
        t = {"layers.0.0.W": rng.normal(size=(3 * H, I)),
             "layers.0.0.R": rng.normal(size=(3 * H, H)),
             "layers.0.0.Wb": rng.normal(size=3 * H), "layers.0.0.Rb": rng.normal(size=3 * H),
             "head.weight": rng.normal(size=(2, H)), "head.bias": rng.normal(size=2)}
        path, w = native("gru0", arch, t)
        W, R, Wb, Rb = (w["layers.0.0." + k] for k in ("W", "R", "Wb", "Rb"))
        f = lambda v: SCALAR_ACTS["HardSigmoid"](min(0.6, max(-0.6, v)), 0.2, 0.5)   # noqa: E731
        g = lambda v: SCALAR_ACTS["Softsign"](min(0.6, max(-0.6, v)), 0, 0)         # noqa: E731
        xs = rng.normal(size=(4, I)).tolist()
        h = [0.0] * H
        want = []
        for x in xs:
            wx = mv(W, x)
            rh = mv(R, h)
            z = [f(wx[j] + Wb[j] + rh[j] + Rb[j]) for j in range(H)]
            r = [f(wx[H + j] + Wb[H + j] + rh[H + j] + Rb[H + j]) for j in range(H)]
            rrh = mv(R[2 * H:], [r[j] * h[j] for j in range(H)])
            n = [g(wx[2 * H + j] + Wb[2 * H + j] + rrh[j] + Rb[2 * H + j]) for j in range(H)]
            h = [(1 - z[j]) * n[j] + z[j] * h[j] for j in range(H)]
            logits = [a + b for a, b in zip(mv(w["head.weight"], h), w["head.bias"])]
            e = [math.exp(v) for v in logits]
            want.append([v / sum(e) for v in e])
        outs, _ = reference.run(path, [xs])
        check(np.allclose(outs[0], want, atol=1e-12),
              "GRU linear_before_reset 0, clip, HardSigmoid/Softsign, softmax head = scalar")

    # (d) state carry-over
    def test_chunks(self):
        rng = np.random.default_rng(14)
        arch = {"input": {"kind": "vectors", "dim": 3},
                "layers": [{"type": "lstm", "hidden_size": 4, "proj_size": 2},
                           {"type": "gru", "hidden_size": 3},
                           {"type": "jordan", "hidden_size": 3, "output_size": 2}],
                "head": None}
        t = {"layers.0.0.W": rng.normal(size=(16, 3)), "layers.0.0.R": rng.normal(size=(16, 2)),
             "layers.0.0.proj": rng.normal(size=(2, 4)),
             "layers.1.0.W": rng.normal(size=(9, 2)), "layers.1.0.R": rng.normal(size=(9, 3)),
             "layers.2.0.W": rng.normal(size=(3, 3)), "layers.2.0.R": rng.normal(size=(3, 2)),
             "layers.2.0.V": rng.normal(size=(2, 3))}
        path, _ = native("chunks", arch, t)
        m = reference.load(path)
        check(m.state_size() == (2 + 4) + 3 + 2,
              "state size: lstm h[proj] + c[H], gru h, jordan y")
        xs = rng.normal(size=(10, 3))
        whole, fw = reference.run(m, [xs])
        a, fa = reference.run(m, [xs[:4]])
        b, fb = reference.run(m, [xs[4:]], [fa[0]])
        check(np.allclose(np.concatenate([a[0], b[0]]), whole[0], atol=1e-12) and
              np.allclose(fb[0], fw[0], atol=1e-12),
              "a split sequence with its state carried over = one run")

    # (b) PyTorch
    def test_torch(self):
        import torch
        import torch.nn as nn
        torch.manual_seed(42)
        rng = np.random.default_rng(42)

        def flat_state(h, c):
            """torch h_n/c_n for one sequence -> the rnnd state layout."""
            parts = []
            for k in range(h.shape[0]):
                parts.append(h[k, 0].numpy())
                if c is not None:
                    parts.append(c[k, 0].numpy())
            return np.concatenate(parts).astype(np.float64)

        def to_torch_state(m, flat, kind):
            hs = split_state(m, flat)
            h = torch.tensor(np.array([x for x, _ in hs])[:, None, :], dtype=torch.float32)
            if kind != "lstm":
                return h
            c = torch.tensor(np.array([y for _, y in hs])[:, None, :], dtype=torch.float32)
            return (h, c)

        configs = [
            ("lstm proj=11 bidir x2", nn.LSTM(13, 37, num_layers=2, bidirectional=True,
                                              proj_size=11), "lstm"),
            ("lstm x3", nn.LSTM(13, 37, num_layers=3), "lstm"),
            ("gru bidir x2", nn.GRU(13, 37, num_layers=2, bidirectional=True), "gru"),
            ("rnn tanh bidir x2", nn.RNN(13, 37, num_layers=2, bidirectional=True), "rnn"),
            ("rnn relu", nn.RNN(13, 37, nonlinearity="relu"), "rnn"),
            ("rnn relu x2 proj-less odd", nn.RNN(13, 5, num_layers=2, nonlinearity="relu"), "rnn"),
        ]
        for what, mod, kind in configs:
            mod.eval()
            with torch.no_grad():         # larger weights than the default init: exercise relu
                for p in mod.parameters():
                    p.mul_(2.0)
            path = tmp("torch.rnnd")
            rnnd_convert.from_module(mod, path)
            m = reference.load(path)
            lens = [1, 7, 23]
            seqs = [rng.normal(size=(T, 13)) for T in lens]
            inits = [None, rng.normal(size=m.state_size()) * 0.5, rng.normal(size=m.state_size())]
            outs, finals = reference.run(m, seqs, inits)
            worst = 0.0
            for b, x in enumerate(seqs):
                xt = torch.tensor(x[:, None, :], dtype=torch.float32)
                with torch.no_grad():
                    if inits[b] is None:
                        y, hn = mod(xt)
                    else:
                        y, hn = mod(xt, to_torch_state(m, inits[b], kind))
                h, c = (hn if kind == "lstm" else (hn, None))
                worst = max(worst, float(np.abs(outs[b] - y[:, 0].numpy()).max()),
                            float(np.abs(finals[b] - flat_state(h, c)).max()))
                check(outs[b].shape == (lens[b], y.shape[2]), "%s: output shape" % what)
            check(worst < 2e-5, "%s: reference = PyTorch, outputs and final states (max %.2g)"
                  % (what, worst))

        # tokens + Linear head + log_softmax, batch_first
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(23, 13)
                self.rnn = nn.LSTM(13, 37, batch_first=True, bidirectional=True, proj_size=7)
                self.fc = nn.Linear(14, 19)
                self.out = nn.LogSoftmax(dim=-1)

            def forward(self, x):
                return self.out(self.fc(self.rnn(self.emb(x))[0]))
        net = Net().eval()
        rnnd_convert.from_module(net, tmp("tok.rnnd"))
        ids = [list(rng.integers(0, 23, size=T)) for T in (5, 12)]
        outs, _ = reference.run(tmp("tok.rnnd"), ids)
        worst = 0.0
        for b, s in enumerate(ids):
            with torch.no_grad():
                y = net(torch.tensor([s]))[0].numpy()
            worst = max(worst, float(np.abs(outs[b] - y).max()))
        check(worst < 2e-5, "embedding + bidir proj LSTM + head + log_softmax = PyTorch (%.2g)"
              % worst)

    # (e) pooling: the reference and rnnd's own forward against PyTorch
    def test_pooling(self):
        """A 2-layer bidirectional GRU pooled four ways: the reference and `rnnd infer` equal
        y[-1], cat(h_n[-2], h_n[-1]), y.mean(0) and y.max(0) of PyTorch (before the head,
        then through a softmax head), one row per sequence."""
        import torch
        import torch.nn as nn
        rng = np.random.default_rng(7)
        gru, fc = pool_base()

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn, self.fc = gru, fc

            def forward(self, x):
                return torch.softmax(self.fc(self.rnn(x)[0]), dim=-1)
        rnnd_convert.from_module(Head().eval(), tmp("pool_head.rnnd"))
        seqs = [rng.normal(size=(T, 5)).astype(np.float32) for T in (1, 6, 17)]
        pools = {
            "last": lambda y, h: y[-1],
            "final_state": lambda y, h: torch.cat((h[-2], h[-1]), dim=-1),
            "mean": lambda y, h: y.mean(dim=0),
            "max": lambda y, h: y.max(dim=0).values,
        }
        for pool, f in pools.items():
            bare = with_pool(tmp("pool_base.rnnd"), tmp("pool_%s.rnnd" % pool), pool)
            headed = with_pool(tmp("pool_head.rnnd"), tmp("pool_h_%s.rnnd" % pool), pool)
            want, want_h = [], []
            for x in seqs:
                with torch.no_grad():
                    y, h = gru(torch.tensor(x[:, None, :]))
                    p = f(y[:, 0], h[:, 0])
                    want.append(p.numpy())
                    want_h.append(torch.softmax(fc(p), dim=-1).numpy())
            want, want_h = np.array(want), np.array(want_h)
            ref = np.stack(reference.run(bare, seqs)[0])
            check(ref.shape == (3, 1, 12), "%s: the reference gives one row (%s)"
                  % (pool, ref.shape,))
            check(np.abs(ref[:, 0] - want).max() < 2e-5, "%s: reference = PyTorch (%.2g)"
                  % (pool, np.abs(ref[:, 0] - want).max()))
            # the same through a native spec (architecture JSON + weights)
            arch, tensors = reference.read(tmp("pool_base.rnnd"))
            arch = {k: v for k, v in arch.items() if v is not None}
            path, _ = native("pool_native_" + pool, dict(arch, pool=pool), tensors)
            check(reference.read(path)[0].get("pool") == pool, "%s: a native spec keeps the pool"
                  % pool)
            check(np.array_equal(np.stack(reference.run(path, seqs)[0]), ref),
                  "%s: the native spec's file computes the same" % pool)
            for path, w in ((bare, want), (headed, want_h)):
                got = rnnd_infer(path, seqs)
                if got is not None:
                    check(got.shape == w.shape and np.abs(got - w).max() < 2e-5,
                          "%s: rnnd infer %s = PyTorch (shape %s, want %s)"
                          % (pool, os.path.basename(path), got.shape, w.shape))

    def test_pool_refused(self):
        """A native spec with an unknown pool is refused, naming the key."""
        pool_base()
        arch, tensors = reference.read(tmp("pool_base.rnnd"))
        arch = {k: v for k, v in arch.items() if v is not None}
        try:
            native("pool_bad", dict(arch, pool="sum"), tensors)
            check(False, "pool \"sum\" is refused")
        except rnnd_convert.ConvertError as e:
            check("pool:" in str(e) and "sum" in str(e), "pool \"sum\" refused: %s" % e)


if __name__ == "__main__":
    unittest.main()
