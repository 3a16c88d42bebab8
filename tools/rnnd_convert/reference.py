"""A plain NumPy (float64) forward pass of an .rnnd file, written straight from the equations
of docs/model-format.md. It shares no code with the converter or with rnnd, so tests can hold
either against it.

    outputs, finals = run("model.rnnd", sequences, initial_states=None)

SEQUENCES: one entry per sequence: a list of token ids (token models) or a [T, dim] array.
INITIAL_STATES: None, or one entry per sequence: None (zeros) or a flat array in the state
layout of include/rnnd/rnn.h (per layer, per direction: h [out_dim], then c [hidden] for lstm; c, n, m [hidden]
each for slstm; for clockwork the step counter t as two floats, t mod 2^24 and t // 2^24).
Returns outputs[b] as a [T, output_dim] array and finals[b] as a flat array in that layout
(a reverse direction's final state is its state after reading the first step).
"""
import json
import math
import struct

import numpy as np

_DEFAULT_ALPHA_BETA = {
    "HardSigmoid": (0.2, 0.5), "LeakyRelu": (0.01, 0.0), "ThresholdedRelu": (1.0, 0.0),
    "ScaledTanh": (1.0, 1.0), "Affine": (1.0, 0.0), "Elu": (1.0, 0.0),
}
_DEFAULT_ACTS = {"rnn": ["Tanh"], "lstm": ["Sigmoid", "Tanh", "Tanh"],
                 "gru": ["Sigmoid", "Tanh"], "jordan": ["Tanh", "Affine"],
                 "mingru": ["Sigmoid", "Affine"], "minlstm": ["Sigmoid", "Affine"],
                 "slstm": [], "clockwork": ["Tanh"]}


def activation(op, x, alpha=None, beta=None):
    """f(x) for an ONNX recurrent activation, element-wise in float64 (float32 for a float32
    X: Model(..., dtype=np.float32))."""
    da, db = _DEFAULT_ALPHA_BETA.get(op, (0.0, 0.0))
    a = da if alpha is None else float(alpha)
    b = db if beta is None else float(beta)
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    if op == "Sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * x))          # = 1/(1+e^-x), without overflow
    if op == "Tanh":
        return np.tanh(x)
    if op == "Relu":
        return np.maximum(x, 0.0)
    if op == "HardSigmoid":
        return np.minimum(1.0, np.maximum(0.0, a * x + b))
    if op == "LeakyRelu":
        return np.where(x >= 0, x, a * x)
    if op == "ThresholdedRelu":
        return np.where(x > a, x, 0.0)
    if op == "ScaledTanh":
        return a * np.tanh(b * x)
    if op == "Affine":
        return a * x + b
    if op == "Elu":
        return np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0.0)))
    if op == "Softsign":
        return x / (1.0 + np.abs(x))
    if op == "Softplus":
        return np.logaddexp(0.0, x)
    raise ValueError("unknown activation %r" % op)


def read(path, q8=False):
    """(architecture dict, {tensor name: float64 array}) of an .rnnd file. An int8 model's
    matrices are q * scale (what its products approximate: the reference does not quantize
    the inputs), or with Q8 the integers q, and NAME.scale its row scales (I8 or F32 stored
    alike: an F32 matrix quantized as rnnd does at load)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    if base % 4:
        raise ValueError("%s: data buffer not 4-byte aligned" % path)
    meta = header.pop("__metadata__")
    if meta.get("format") != "rnnd" or meta.get("format_version") != "1":
        raise ValueError("%s: not an rnnd format 1 file" % path)
    arch = json.loads(meta["architecture"])
    weights = arch.get("weights") or "f32"
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        if t["dtype"] == "F32":
            if b % 4:
                raise ValueError("%s: %s: begin offset not aligned" % (path, name))
            a = np.frombuffer(data, dtype="<f4", count=(e - b) // 4, offset=base + b)
            a = a.astype(np.float64)
            if weights == "int8" and _is_matrix(name, t["shape"]):
                from .writer import quantize_rows
                q, s = quantize_rows(a.astype(np.float32).reshape(t["shape"]), name)
                tensors[name + ".scale"] = s.astype(np.float64)
                a = q.astype(np.float64) if q8 else \
                    (q.astype(np.float64) * s.astype(np.float64)[:, None]).ravel()
            elif weights != "f32" and _is_matrix(name, t["shape"]):
                a = _round_half(a, weights, name)
        elif t["dtype"] == "I8" and weights == "int8":
            a = np.frombuffer(data, dtype="i1", count=e - b, offset=base + b).astype(np.float64)
            if not q8:      # the scale is read below: multiply once every tensor is in
                a = a.reshape(t["shape"])
                tensors[name] = a
                continue
        elif t["dtype"] in ("BF16", "F16") and t["dtype"].lower() == weights:
            u = np.frombuffer(data, dtype="<u2", count=(e - b) // 2, offset=base + b)
            if weights == "bf16":
                a = (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
            else:
                a = u.view("<f2").astype(np.float64)
        else:
            raise ValueError("%s: %s: dtype %s" % (path, name, t["dtype"]))
        if name.endswith(".scale") and weights == "int8" and name in tensors:
            continue    # an F32 matrix's own scale, computed above, wins over nothing
        tensors[name] = a.reshape(t["shape"])
    if weights == "int8" and not q8:
        for name, t in header.items():
            if t["dtype"] == "I8":
                tensors[name] = tensors[name] * tensors[name + ".scale"][:, None]
    return arch, tensors


def _is_matrix(name, shape):
    """The weight matrices the format lets a bf16 / f16 model store half-size (a head
    linear's weight is 2-D, a head layernorm's 1-D)."""
    if name.startswith("head.") and name.endswith(".weight"):
        return len(shape) == 2
    return name.split(".")[-1] in ("W", "R", "proj", "V", "D")


def _round_half(a, weights, name):
    """A rounded to nearest, ties to even, to bfloat16 (8 significant bits, exponent range
    of float) or float16 (11 bits, normal from 2^-14, largest 65504), in float64:
    a / quantum is exact and np.rint rounds half to even."""
    mant, emin, top = (7, -126, 3.3895313892515355e38) if weights == "bf16" else \
        (10, -14, 65504.0)
    _, e = np.frexp(a)                      # |a| = m 2^e, m in [0.5, 1)
    q = np.where(e - 1 < emin, emin - mant, e - 1 - mant)
    r = np.ldexp(np.rint(np.ldexp(a, -q)), q)
    if np.any(np.abs(r) > top):
        raise ValueError("%s: a value is out of %s range" % (name, weights))
    return r


class Model:
    def __init__(self, path, dtype=np.float64):
        """DTYPE np.float32 computes in float32, as rnnd does, to see where the model leaves
        float32's range (verify.py); the default float64 is the reference."""
        self.arch, self.t = read(path)
        self.dtype = dtype
        if dtype != np.float64:
            self.t = {k: v.astype(dtype) for k, v in self.t.items()}
        self.layers = self.arch["layers"]

    def ndir(self, L):
        return 2 if L["direction"] == "bidirectional" else 1

    def out_dim(self, L):
        if L["type"] == "jordan":
            return L["output_size"]
        if L["type"] == "lstm" and L.get("proj_size", 0) > 0:
            return L["proj_size"]
        return L["hidden_size"]

    def state_size(self):
        n = 0
        for L in self.layers:
            per = self.out_dim(L) + self.cell_size(L) + (2 if L["type"] == "clockwork" else 0)
            n += per * self.ndir(L)
        return n

    def cell_size(self, L):
        """State after h: lstm c [H]; slstm c, n, m [H] each."""
        return {"lstm": 1, "slstm": 3}.get(L["type"], 0) * L["hidden_size"]

    def acts(self, L, d):
        lst = L.get("activations")
        if lst is None:
            return [(op, None, None) for op in _DEFAULT_ACTS[L["type"]]]
        return [(a["op"], a.get("alpha"), a.get("beta")) for a in lst[d]]

    def pool(self, y):
        """The last layer's rows [T, W] pooled to [1, W] (docs/model-format.md, "Pooling"), or
        Y unchanged without a pool."""
        pool = self.arch.get("pool") or "none"
        if pool == "none":
            return y
        if pool == "last":
            return y[-1:]
        if pool == "mean":
            return y.mean(axis=0, keepdims=True)
        if pool == "max":
            return y.max(axis=0, keepdims=True)
        L = self.layers[-1]
        O = self.out_dim(L)
        parts = []
        for d in range(self.ndir(L)):
            reverse = L["direction"] == "reverse" or d == 1
            parts.append(y[0 if reverse else -1, d * O:(d + 1) * O])
        return np.concatenate(parts)[None, :]

    def run_one(self, seq, init):
        inp = self.arch["input"]
        if inp["kind"] == "tokens":
            ids = [int(i) for i in seq]
            if not ids or min(ids) < 0 or max(ids) >= inp["vocab_size"]:
                raise ValueError("token id out of range or empty sequence")
            x = self.t["embedding.weight"][ids]
        else:
            x = np.asarray(seq, dtype=self.dtype).reshape(-1, inp["dim"])
            if len(x) == 0:
                raise ValueError("empty sequence")
        state = np.zeros(self.state_size(), self.dtype) if init is None else \
            np.asarray(init, dtype=self.dtype).ravel()
        if state.size != self.state_size():
            raise ValueError("initial state has %d floats, expected %d"
                             % (state.size, self.state_size()))
        final = []
        pos = 0
        cells = None        # the layer below's c of every step (a depth gate reads it)
        for l, L in enumerate(self.layers):
            O = self.out_dim(L)
            outs = []
            for d in range(self.ndir(L)):
                h0 = state[pos:pos + O]
                pos += O
                c0 = None
                if self.cell_size(L):
                    c0 = state[pos:pos + self.cell_size(L)]
                    pos += self.cell_size(L)
                elif L["type"] == "clockwork":     # the counter: an integer, not a vector
                    c0 = int(state[pos]) + int(state[pos + 1]) * 2 ** 24
                    pos += 2
                reverse = L["direction"] == "reverse" or d == 1
                w = {k[len("layers.%d.%d." % (l, d)):]: v for k, v in self.t.items()
                     if k.startswith("layers.%d.%d." % (l, d))}
                ys, h, c, cs = run_direction(L, self.acts(L, d), w, x, h0, c0, reverse,
                                             cells if L.get("depth_gate") else None)
                outs.append(ys)
                final.append(h)
                if L["type"] == "clockwork":
                    final.append(np.array([c % 2 ** 24, (c // 2 ** 24) % 2 ** 24], float))
                elif c is not None:
                    final.append(c)
            x = np.concatenate(outs, axis=1)
            cells = cs
        x = self.pool(x)
        head = self.arch.get("head")
        if head is not None:
            x = head_forward(head, self.t, x)
            norm = head.get("norm", "none")
            if norm in ("softmax", "log_softmax"):
                m = x.max(axis=1, keepdims=True)
                lse = m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))
                x = np.exp(x - lse) if norm == "softmax" else x - lse
        return x, np.concatenate(final)


def head_forward(head, t, x):
    """The head's layers (docs/model-format.md, "The head") over rows X [N, in_dim], before
    the norm."""
    layers = head.get("layers")
    if layers is None:
        return x @ t["head.weight"].T + t["head.bias"]
    for k, h in enumerate(layers):
        op = h["op"]
        if op == "linear":
            x = x @ t["head.%d.weight" % k].T + t["head.%d.bias" % k]
        elif op == "relu":
            x = np.maximum(x, 0.0)
        elif op == "tanh":
            x = np.tanh(x)
        elif op == "sigmoid":
            x = 0.5 * (1.0 + np.tanh(0.5 * x))
        elif op == "gelu":
            x = 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
        elif op == "gelu_tanh":
            x = 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
        elif op == "layernorm":
            mean = x.mean(axis=1, keepdims=True)
            var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
            x = (x - mean) / np.sqrt(var + h.get("eps", 1e-5))
            if h.get("affine", True):
                x = x * t["head.%d.weight" % k] + t["head.%d.bias" % k]
        else:
            raise ValueError("unknown head op %r" % op)
    return x


def run_direction(L, acts, w, xs, h, c, reverse, c_low=None):
    """One direction of one layer over XS [T, in]; returns (ys [T, out], h, c, cs [T, H] an
    lstm's c of every step, else None). C_LOW [T, H]: the layer below's c of every step (depth
    gate). For clockwork, C is the step counter t (an int) before and after."""
    typ, H = L["type"], L["hidden_size"]
    clipv = L.get("clip")

    def clip(v):
        return v if clipv is None else np.clip(v, -clipv, clipv)

    def f(k, v):
        op, a, b = acts[k]
        return activation(op, v, a, b)

    W, Wb = w["W"], w["Wb"]
    R, Rb = w.get("R"), w.get("Rb")     # mingru / minlstm have none
    T = len(xs)
    ys = np.zeros((T, len(h)), h.dtype)
    cs = np.zeros((T, H), h.dtype) if typ == "lstm" and c is not None else None
    h = h.copy()
    c = None if c is None else (c if typ == "clockwork" else c.copy())
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        x = xs[t]
        if typ == "rnn":
            h = f(0, clip(W @ x + Wb + R @ h + Rb))
        elif typ == "jordan":
            u = f(0, clip(W @ x + Wb + R @ h + Rb))
            h = f(1, w["V"] @ u + w["Vb"])
        elif typ == "gru":
            gx = W @ x + Wb
            z = f(0, clip(gx[:H] + R[:H] @ h + Rb[:H]))
            r = f(0, clip(gx[H:2 * H] + R[H:2 * H] @ h + Rb[H:2 * H]))
            Rh, Rbh = R[2 * H:], Rb[2 * H:]
            if L.get("linear_before_reset", 0):
                n = f(1, clip(gx[2 * H:] + r * (Rh @ h + Rbh)))
            else:
                n = f(1, clip(gx[2 * H:] + Rh @ (r * h) + Rbh))
            h = (1.0 - z) * n + z * h
        elif typ == "lstm":
            pre = W @ x + Wb + R @ h + Rb
            fg = L.get("forget_gate", True)
            pi, po = pre[:H], pre[H:2 * H]
            pf = pre[2 * H:3 * H] if fg else None
            pc = pre[3 * H:] if fg else pre[2 * H:]
            P = w.get("P") if L.get("peepholes", False) else None
            if P is not None:
                pi = pi + P[:H] * c
                if fg:
                    pf = pf + P[2 * H:] * c
            i = f(0, clip(pi))
            if not fg:
                fv = 1.0
            elif L.get("input_forget", False):
                fv = 1.0 - i
            else:
                fv = f(0, clip(pf))
            g = f(1, clip(pc))
            cp, c = c, fv * c + i * g
            if L.get("depth_gate", False):      # Yao et al. 2015: c_low is the new c below
                dg = f(0, clip(w["D"] @ x + w["Db"] + w["Dc"] * cp + w["Dl"] * c_low[t]))
                c = c + dg * c_low[t]
            if P is not None:
                po = po + P[H:2 * H] * c
            o = f(0, clip(po))
            h = o * f(2, c)
            if L.get("proj_size", 0) > 0:
                h = w["proj"] @ h
        elif typ == "mingru":           # rows z, h; the gates read only x
            gx = W @ x + Wb
            z = f(0, gx[:H])
            h = (1.0 - z) * h + z * f(1, gx[H:])
        elif typ == "clockwork":        # module k runs when t mod T_k == 0
            periods = L["periods"]
            hm = H // len(periods)
            run = np.repeat([c % p == 0 for p in periods], hm)
            h = np.where(run, f(0, W @ x + Wb + R @ h + Rb), h)
            c += 1
        elif typ == "minlstm":          # rows f, i, h
            gx = W @ x + Wb
            fv, i = f(0, gx[:H]), f(0, gx[H:2 * H])
            h = (fv / (fv + i)) * h + (i / (fv + i)) * f(1, gx[2 * H:])
        elif typ == "slstm":            # rows i, f, z, o; R block-diagonal; c holds c, n, m
            K = L["heads"]
            d = H // K
            rh = np.einsum("gkuj,kj->gku", R.reshape(4, K, d, d), h.reshape(K, d)).ravel()
            pre = W @ x + Wb + rh + Rb
            pi, pf, pz, po = pre[:H], pre[H:2 * H], pre[2 * H:3 * H], pre[3 * H:]
            cp, n_prev, m_prev = c[:H], c[H:2 * H], c[2 * H:]
            lf = pf if L["forget"] == "exp" else -np.logaddexp(0.0, -pf)
            m = np.maximum(lf + m_prev, pi)
            ig, fv = np.exp(pi - m), np.exp(lf + m_prev - m)
            cn = fv * cp + ig * np.tanh(pz)
            n = fv * n_prev + ig
            h = 1.0 / (1.0 + np.exp(-po)) * cn / n
            c = np.concatenate([cn, n, m])
        else:
            raise ValueError("unknown layer type %r" % typ)
        ys[t] = h
        if cs is not None:
            cs[t] = c
    return ys, h, c, cs


def load(path):
    return Model(path)


def run(path, sequences, initial_states=None):
    """See the module docstring. PATH may also be a loaded Model."""
    m = path if isinstance(path, Model) else Model(path)
    outputs, finals = [], []
    for b, seq in enumerate(sequences):
        init = None if initial_states is None else initial_states[b]
        y, s = m.run_one(seq, init)
        outputs.append(y)
        finals.append(s)
    return outputs, finals
