"""Every architecture rnnd supports, through `rnnd infer` on every kernel path, against the
float64 NumPy reference (tools/rnnd_convert/reference.py), including what the golden cases do
not reach: odd sizes (SIMD tails), 500+ step sequences, 3+ layers, every activation,
proj_size, the 1997 LSTM, coupled gates, Jordan networks, minGRU / minLSTM and sLSTM (reverse
and bidirectional too), the Clockwork RNN (reverse and bidirectional too, from a state whose
counters are not zero), depth-gated LSTMs (with every lstm option that combines with the
gate), reverse and bidirectional stacks,
heads with softmax / log-softmax, and initial states.

Models are written as native specs (architecture JSON + .npz) with weights drawn here from a
fixed seed, converted with the project's converter, and run by the real binary. Each case is
a test (Arch.test_NAME), runnable alone: its seeds come from its place in CASES."""
import json
import os
import subprocess
import unittest

import numpy as np

from daemon_util import Case, available_isas
from rnnd_convert import reference

PATHS = available_isas()

PY = os.environ.get("PYTHON3", "/usr/bin/python3")
RNND = os.environ["RNND_BIN"]
TMP = os.path.join(os.environ.get("RNND_TEST_TMP", "/tmp/rnnd-test"), "arch")
os.makedirs(TMP, exist_ok=True)



def act(op, alpha=None, beta=None):
    a = {"op": op}
    if alpha is not None:
        a["alpha"] = alpha
    if beta is not None:
        a["beta"] = beta
    return a


def layer(kind, hidden, direction="forward", **kw):
    d = {"type": kind, "hidden_size": hidden, "direction": direction}
    d.update(kw)
    return d


def tensors_for(arch, rng, scale):
    """Every tensor the format requires, derived from docs/model-format.md."""
    t = {}
    inp = arch["input"]
    if inp["kind"] == "tokens":
        in_dim = inp["embedding_dim"]
        t["embedding.weight"] = rng.standard_normal((inp["vocab_size"], in_dim))
    else:
        in_dim = inp["dim"]
    for li, L in enumerate(arch["layers"]):
        H = L["hidden_size"]
        kind = L["type"]
        G = {"rnn": 1, "gru": 3, "jordan": 1, "mingru": 2, "minlstm": 3, "clockwork": 1}.get(
            kind, 4)
        recurrent = kind not in ("mingru", "minlstm")     # those have W and Wb only
        if kind == "lstm" and L.get("forget_gate", True) is False:
            G = 3
        out = H
        if kind == "lstm" and L.get("proj_size", 0):
            out = L["proj_size"]
        if kind == "jordan":
            out = L["output_size"]
        ndir = 2 if L["direction"] == "bidirectional" else 1
        for d in range(ndir):
            p = "layers.%d.%d." % (li, d)
            t[p + "W"] = rng.uniform(-scale, scale, (G * H, in_dim))
            t[p + "Wb"] = rng.uniform(-scale, scale, (G * H,))
            if recurrent:       # slstm: block-diagonal, H / heads columns
                cols = H // L["heads"] if kind == "slstm" else out
                t[p + "R"] = rng.uniform(-scale, scale, (G * H, cols))
                t[p + "Rb"] = rng.uniform(-scale, scale, (G * H,))
            if kind == "clockwork":     # zero below the block diagonal
                hm = H // len(L["periods"])
                for i in range(H):
                    t[p + "R"][i, :(i // hm) * hm] = 0.0
            if L.get("peepholes"):
                t[p + "P"] = rng.uniform(-scale, scale, (3 * H,))
            if kind == "lstm" and L.get("proj_size", 0):
                t[p + "proj"] = rng.uniform(-scale, scale, (out, H))
            if kind == "jordan":
                t[p + "V"] = rng.uniform(-scale, scale, (out, H))
                t[p + "Vb"] = rng.uniform(-scale, scale, (out,))
            if L.get("depth_gate"):
                t[p + "D"] = rng.uniform(-scale, scale, (H, in_dim))
                for k in ("Dc", "Dl", "Db"):
                    t[p + k] = rng.uniform(-scale, scale, (H,))
        in_dim = out * ndir
    if arch.get("head"):
        h = arch["head"]
        h["in_dim"] = in_dim
        t["head.weight"] = rng.uniform(-scale, scale, (h["out_dim"], in_dim))
        t["head.bias"] = rng.uniform(-scale, scale, (h["out_dim"],))
    return {k: v.astype(np.float32) for k, v in t.items()}


def vec_input(dim):
    return {"kind": "vectors", "dim": dim}


EVERY_ACT = [act("Sigmoid"), act("Tanh"), act("Relu"), act("HardSigmoid", 0.3, 0.4),
             act("LeakyRelu", 0.05), act("ThresholdedRelu", 0.1), act("ScaledTanh", 1.5, 0.7),
             act("Affine", 0.5, 0.1), act("Elu", 0.9), act("Softsign"), act("Softplus")]

CASES = [
    ("odd_lstm_3layers", {"input": vec_input(13), "layers": [
        layer("lstm", 37), layer("lstm", 37), layer("lstm", 19)]}, [600, 3, 41]),
    ("lstm_peephole_clip_head", {"input": {"kind": "tokens", "vocab_size": 41,
                                           "embedding_dim": 13},
                                 "layers": [layer("lstm", 37, peepholes=True, clip=2.0)],
                                 "head": {"out_dim": 41, "norm": "log_softmax"}}, [30, 7]),
    ("lstm_proj", {"input": vec_input(13), "layers": [
        layer("lstm", 37, proj_size=11), layer("lstm", 20, proj_size=7)]}, [25, 9]),
    ("lstm_1997_and_cifg", {"input": vec_input(5), "layers": [
        layer("lstm", 33, forget_gate=False), layer("lstm", 17, input_forget=True)]}, [20, 4]),
    ("lstm_activations", {"input": vec_input(7), "layers": [
        layer("lstm", 17, activations=[[act("HardSigmoid", 0.25, 0.5), act("Softsign"),
                                        act("ScaledTanh", 1.2, 0.9)]])]}, [15]),
    ("gru_both", {"input": vec_input(13), "layers": [
        layer("gru", 37, linear_before_reset=0),
        layer("gru", 29, linear_before_reset=1, clip=1.5)],
        "head": {"out_dim": 5, "norm": "softmax"}}, [23, 1, 8]),
    ("jordan", {"input": vec_input(13), "layers": [
        layer("jordan", 37, output_size=7, activations=[[act("Tanh"), act("Sigmoid")]]),
        layer("jordan", 9, output_size=5, activations=[[act("Relu"), act("Affine", 1.0, 0.0)]])]},
     [30, 12]),
    ("every_activation", {"input": vec_input(6), "layers": [
        layer("rnn", 17, activations=[[a]]) for a in EVERY_ACT]}, [12, 5]),
    ("min_cells", {"input": vec_input(13), "layers": [
        layer("mingru", 37), layer("minlstm", 21, "bidirectional"),
        layer("mingru", 9, "reverse", activations=[[act("Sigmoid"), act("Tanh")]]),
        layer("minlstm", 13, activations=[[act("HardSigmoid", 0.3, 0.6), act("Softsign")]])],
        "head": {"out_dim": 5, "norm": "log_softmax"}}, [530, 2, 17]),
    ("depth_gated", {"input": {"kind": "tokens", "vocab_size": 29, "embedding_dim": 13},
                     "layers": [
        layer("lstm", 37), layer("lstm", 37, depth_gate=True),
        layer("lstm", 37, depth_gate=True, peepholes=True, clip=1.5),
        layer("lstm", 37, depth_gate=True, input_forget=True,
              activations=[[act("HardSigmoid", 0.3, 0.5), act("Softsign"), act("Tanh")]]),
        layer("lstm", 37, depth_gate=True, forget_gate=False),
        layer("gru", 19, "bidirectional")],
        "head": {"out_dim": 29, "norm": "log_softmax"}}, [520, 1, 33]),
    ("clockwork", {"input": vec_input(13), "layers": [
        layer("clockwork", 36, periods=[1, 3, 7, 16]),
        layer("clockwork", 20, "bidirectional", periods=[2, 5]),
        layer("rnn", 9, "reverse"),
        layer("clockwork", 15, "reverse", periods=[1, 4, 9],
              activations=[[act("Softsign")]])],
        "head": {"out_dim": 5, "norm": "log_softmax"}}, [530, 2, 17]),
    ("slstm_cells", {"input": vec_input(13), "layers": [
        layer("slstm", 35, heads=5, forget="exp"),
        layer("slstm", 21, "bidirectional", heads=3, forget="sigmoid"),
        layer("slstm", 9, "reverse", heads=1, forget="exp"),
        layer("slstm", 12, heads=4, forget="sigmoid")],
        "head": {"out_dim": 5, "norm": "softmax"}}, [530, 2, 17]),
    ("bidir_reverse_stack", {"input": vec_input(13), "layers": [
        layer("lstm", 21, "bidirectional"), layer("gru", 11, "reverse"),
        layer("rnn", 9, "bidirectional")], "head": {"out_dim": 4, "norm": "none"}},
     [17, 2, 9]),
]


def write_spec(name, arch, seed):
    arch = json.loads(json.dumps(arch))
    arch["format_version"] = 1
    rng = np.random.default_rng(seed)
    scale = 0.5 if name != "every_activation" else 0.3
    tensors = tensors_for(arch, rng, scale)
    npz = os.path.join(TMP, name + ".npz")
    np.savez(npz, **tensors)
    arch["weights"] = os.path.basename(npz)
    spec = os.path.join(TMP, name + ".json")
    with open(spec, "w") as f:
        json.dump(arch, f)
    out = os.path.join(TMP, name + ".rnnd")
    r = subprocess.run([PY, "-m", "rnnd_convert", spec, "-o", out], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit("convert %s failed: %s" % (name, r.stderr.strip()))
    return arch, out


def make_inputs(arch, lens, rng):
    inp = arch["input"]
    if inp["kind"] == "tokens":
        return [[int(x) for x in rng.integers(0, inp["vocab_size"], n)] for n in lens]
    return [rng.uniform(-2, 2, (n, inp["dim"])).astype(np.float32).tolist() for n in lens]


def run_infer(path, req, isa):
    env = dict(os.environ, RNND_ISA=isa)
    r = subprocess.run([RNND, "infer", "--model", path], input=json.dumps(req), env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("rnnd infer (%s) failed: %s" % (isa, r.stderr.strip()))
    return json.loads(r.stdout)


def flatten_states(states):
    flat = []
    for st in states:
        v = []
        for L in st["layers"]:
            for d in range(len(L["h"])):
                v.extend(L["h"][d])
                for k in ("c", "n", "m"):   # lstm c; slstm c, n, m
                    if k in L:
                        v.extend(L[k][d])
                if "t" in L:            # the counter's two floats (include/rnnd/rnn.h)
                    v.extend([L["t"][d] % 2 ** 24, L["t"][d] // 2 ** 24])
        flat.append(np.array(v, dtype=np.float64))
    return flat


def unflatten_state(arch_path, flat):
    """STATE JSON from a flat state vector, for initial_state."""
    with open(arch_path) as f:
        arch = json.load(f)
    layers, i = [], 0
    for L in arch["layers"]:
        H = L["hidden_size"]
        out = L.get("proj_size") or L.get("output_size") or H
        ndir = 2 if L["direction"] == "bidirectional" else 1
        e = {"h": []}
        cell = {"lstm": "c", "slstm": "cnm"}.get(L["type"], "")
        for k in cell:
            e[k] = []
        if L["type"] == "clockwork":
            e["t"] = []
        for _ in range(ndir):
            e["h"].append([float(x) for x in flat[i:i + out]])
            i += out
            for k in cell:
                e[k].append([float(x) for x in flat[i:i + H]])
                i += H
            if L["type"] == "clockwork":
                e["t"].append(int(flat[i]) + int(flat[i + 1]) * 2 ** 24)
                i += 2
        layers.append(e)
    return {"layers": layers}


class Arch(Case):
    """A test per case of CASES (test_NAME, made below), each on every path."""

    def one_case(self, ci):
        name, arch, lens = CASES[ci]
        arch, path = write_spec(name, arch, 1000 + ci)
        rng = np.random.default_rng(2000 + ci)
        seqs = make_inputs(arch, lens, rng)
        # an initial state for the first sequence: the reference's state after a prefix
        prefix = make_inputs(arch, [3], rng)
        _, pre_states = reference.run(path, prefix)
        init = [unflatten_state(os.path.join(TMP, name + ".json"), pre_states[0])] + \
            [None] * (len(seqs) - 1)
        want_out, want_st = reference.run(
            path, seqs, initial_states=[pre_states[0]] + [None] * (len(seqs) - 1))
        long_seq = max(lens) >= 500
        atol, rtol = (5e-4, 5e-3) if long_seq else (1e-4, 1e-3)
        for isa in PATHS:
            got = run_infer(path, {"inputs": seqs, "return_state": True,
                                   "initial_state": init}, isa)
            worst = 0.0
            failures = []
            for b, seq_out in enumerate(got["outputs"]):
                g = np.array(seq_out, dtype=np.float64)
                w = np.asarray(want_out[b], dtype=np.float64)
                if g.shape != w.shape:
                    failures.append("seq %d: shape %s want %s" % (b, g.shape, w.shape))
                    continue
                err = np.abs(g - w) - (atol + rtol * np.abs(w))
                worst = max(worst, float(np.max(np.abs(g - w))))
                if np.any(err > 0) or not np.all(np.isfinite(g)):
                    i = np.unravel_index(np.argmax(err), err.shape)
                    failures.append("seq %d step %d elem %d: got %.9g want %.9g" % (
                        b, i[0], i[1], g[i], w[i]))
            for b, (g, w) in enumerate(zip(flatten_states(got["states"]), want_st)):
                w = np.asarray(w, dtype=np.float64)
                if g.shape != w.shape or np.any(np.abs(g - w) > atol + rtol * np.abs(w)):
                    failures.append("final state of seq %d" % b)
            # one check per case and path, as before; what failed is its message
            if self.check(not failures, "%s [%s]: %s" % (name, isa, "; ".join(failures))):
                print("ok   %-26s %-7s steps %-12s max |err| %.3g" % (
                    name, isa, ",".join(map(str, lens)), worst))


for _ci, (_name, _, _) in enumerate(CASES):
    setattr(Arch, "test_" + _name, lambda self, ci=_ci: self.one_case(ci))


if __name__ == "__main__":
    unittest.main()
