"""A plain NumPy (float64) interpreter of exactly the ONNX operators onnx_import accepts, so
the check at conversion (verify.py) can run an ONNX graph without ONNX Runtime.

It follows the ONNX operator specification, not onnx_import: the LSTM / GRU / RNN operators
are computed from the spec's equations in the spec's gate orders (iofc, zrh), so a mistake in
the importer's rearrangement shows up as a difference. Only the activation alpha / beta
lists are read the way ONNX Runtime reads them (in order, by the activations that take
parameters), as the importer documents.
"""
import math

import numpy as np

from .arch import ACTIVATIONS, DEFAULT_ACTS, ConvertError, canonical_activation
from .onnx_import import (MAX_FOLD_ELEMENTS, MAX_HELD_BYTES, _attrs, _last_reads, _live_nodes,
                          _np_dtype, _tensor)
from .reference import activation


# the operators that make a tensor of a size their operands' values give (_bound)
_MAKERS = ("ConstantOfShape", "Expand", "Tile", "Range")


class _Graph:
    def __init__(self, proto):
        self.graph = proto.graph
        self.opset = 1
        for o in proto.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = o.version
        self.node = None
        self.held = 0           # bytes of the tensors made from shapes held now
        self.held_by = {}

    def run(self, feeds):
        # the source's own float overflow (exp of a large input in a Sigmoid) is IEEE's
        # inf, as in any runtime: not a warning on stderr, where the converter promises one
        # line (docs/convert.md)
        with np.errstate(all="ignore"):
            return self._run(feeds)

    def _run(self, feeds):
        env = {t.name: _tensor(t) for t in self.graph.initializer}
        env.update(feeds)
        # as the importer: what no output reads is not run
        live = _live_nodes(self.graph.node, self.graph.output)
        last = _last_reads(self.graph.node, live, self.graph.output)
        self.held, self.held_by = 0, {}
        for k, node in enumerate(self.graph.node):
            if k not in live:
                continue
            self.node = node
            fn = getattr(self, "op_" + node.op_type, None)
            if fn is None:
                raise ConvertError("verification: onnx_run has no operator %s (node '%s')"
                                   % (node.op_type, node.name))
            ins = [env[n] if n else None for n in node.input]
            if node.input and node.input[0] and ins[0] is None:
                # an absent initial state, sliced per layer on its way: still absent
                outs = [None] * len(node.output)
            else:
                outs = fn(ins, _attrs(node), len(node.output))
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for name, v in zip(node.output, outs):
                if name:
                    env[name] = v
                    if node.op_type in _MAKERS and v is not None:
                        self.held_by[name] = int(np.asarray(v).nbytes)
                        self.held += self.held_by[name]
            # what no later node reads is let go (the graph's outputs stay)
            for name in last.get(k, ()):
                env.pop(name, None)
                self.held -= self.held_by.pop(name, 0)
        return env

    # ---- data movement ------------------------------------------------------------------
    def op_Constant(self, ins, a, n):
        for k in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if k in a:
                return np.asarray(a[k])
        raise ConvertError("verification: Constant without a value")

    def op_Identity(self, ins, a, n):
        return ins[0]

    def op_Dropout(self, ins, a, n):
        return [ins[0], np.ones(ins[0].shape, bool)][:n]

    def op_Cast(self, ins, a, n):
        return ins[0].astype(_np_dtype(a["to"]))

    def _axes(self, ins, a, k=1):
        if len(ins) > k and ins[k] is not None:
            return [int(v) for v in np.asarray(ins[k]).ravel()]
        return list(a.get("axes", []))

    def op_Unsqueeze(self, ins, a, n):
        x = ins[0]
        axes = self._axes(ins, a)
        r = x.ndim + len(axes)
        for ax in sorted(v % r for v in axes):
            x = np.expand_dims(x, ax)
        return x

    def op_Squeeze(self, ins, a, n):
        axes = self._axes(ins, a)
        if not axes:
            return np.squeeze(ins[0])
        return np.squeeze(ins[0], axis=tuple(v % ins[0].ndim for v in axes))

    def op_Concat(self, ins, a, n):
        return np.concatenate([x for x in ins if x is not None], axis=a["axis"])

    def op_Reshape(self, ins, a, n):
        x, shape = ins[0], [int(v) for v in ins[1]]
        if not a.get("allowzero", 0):
            shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return x.reshape(shape)

    def op_Transpose(self, ins, a, n):
        return np.transpose(ins[0], a.get("perm"))

    def op_Flatten(self, ins, a, n):
        # the spec: axis in [-r, r], a negative one counted from the end (axis + r)
        x = ins[0]
        ax = int(a.get("axis", 1)) if x.ndim else 0
        if not -x.ndim <= ax <= x.ndim:
            raise ConvertError("verification: node '%s' (Flatten): axis %d is out of range "
                               "for a rank-%d input" % (self.node.name, ax, x.ndim))
        if ax < 0:
            ax += x.ndim
        return x.reshape(int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:])))

    def op_Slice(self, ins, a, n):
        x = ins[0]
        if self.opset < 10:
            starts, ends = a["starts"], a["ends"]
            axes = a.get("axes", list(range(len(starts))))
            steps = [1] * len(starts)
        else:
            starts, ends = list(ins[1].ravel()), list(ins[2].ravel())
            axes = list(ins[3].ravel()) if len(ins) > 3 and ins[3] is not None else \
                list(range(len(starts)))
            steps = list(ins[4].ravel()) if len(ins) > 4 and ins[4] is not None else \
                [1] * len(starts)
        sl = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            ax = int(ax) % x.ndim
            dim = x.shape[ax]
            s, e, st = int(s), int(e), int(st)
            if st == 0:
                raise ConvertError("verification: node '%s' (Slice): a step of 0"
                                   % self.node.name)
            # the spec: a negative bound counts from the end, then both are clamped, to
            # [0, dim] for a positive step, to [0, dim - 1] (start) and [-1, dim - 1] (end)
            # for a negative one (INT64_MAX / MIN mean "to the end"); end -1 is "through
            # index 0", which a Python slice says with None
            s, e = (s + dim if s < 0 else s), (e + dim if e < 0 else e)
            if st > 0:
                s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            else:
                s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            sl[ax] = slice(s, None if e < 0 else e, st)
        return x[tuple(sl)]

    def _reduce(self, ins, a, f):
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(k) for k in np.asarray(ins[1]).ravel()]
        axes = tuple(axes) if axes is not None else None
        return f(ins[0], axis=axes, keepdims=bool(a.get("keepdims", 1)))

    def op_ReduceMean(self, ins, a, n):
        return self._reduce(ins, a, np.mean)

    def op_ReduceMax(self, ins, a, n):
        return self._reduce(ins, a, np.max)

    def op_Gather(self, ins, a, n):
        x, idx = ins[0], np.asarray(ins[1]).astype(np.int64)
        return np.take(x, idx, axis=a.get("axis", 0))

    def op_Shape(self, ins, a, n):
        s = np.array(ins[0].shape, dtype=np.int64)
        return s[a.get("start", 0):a.get("end", None)]

    def _bound(self, shape, dtype):
        """SHAPE (ints) of a tensor of DTYPE an operator is about to make from its operands'
        values: refused beyond the importer's folding bounds (elements, and bytes held with
        the other tensors made so; issue 14, adversary 5 and outside trial A5), before
        anything is allocated (a shape computed from the input's may be any size)."""
        n = 1
        for d in shape:
            n *= max(int(d), 0)
        if n > MAX_FOLD_ELEMENTS:
            raise ConvertError("verification: node '%s' (%s) would make a tensor of %d "
                               "elements (shape %s); rnnd-convert makes at most %d"
                               % (self.node.name, self.node.op_type, n,
                                  [int(d) for d in shape], MAX_FOLD_ELEMENTS))
        size = n * np.dtype(dtype).itemsize
        if self.held + size > MAX_HELD_BYTES:
            raise ConvertError("verification: node '%s' (%s) would make %d bytes while %d "
                               "bytes of made tensors are held; rnnd-convert holds at most "
                               "%d MiB of them at once" % (self.node.name, self.node.op_type,
                                                          size, self.held,
                                                          MAX_HELD_BYTES >> 20))
        return shape

    def op_ConstantOfShape(self, ins, a, n):
        v = a.get("value", np.zeros(1, np.float32))
        return np.full(self._bound([int(d) for d in np.asarray(ins[0]).ravel()],
                                   np.asarray(v).dtype),
                       np.asarray(v).ravel()[0], dtype=np.asarray(v).dtype)

    def op_Expand(self, ins, a, n):
        shape = [int(v) for v in np.asarray(ins[1]).ravel()]
        x = np.asarray(ins[0])
        self._bound(np.broadcast_shapes(x.shape, tuple(max(d, 1) for d in shape)), x.dtype)
        return x * np.ones(shape, dtype=x.dtype)

    def op_Tile(self, ins, a, n):
        reps = [int(v) for v in np.asarray(ins[1]).ravel()]
        x = np.asarray(ins[0])
        self._bound(list(x.shape) + reps, x.dtype)
        return np.tile(x, reps)

    def op_Range(self, ins, a, n):
        start, limit, delta = (np.asarray(v).item() for v in ins[:3])
        self._bound([max(math.ceil((limit - start) / delta), 0) if delta else 0],
                    np.asarray(ins[0]).dtype)
        return np.arange(start, limit, delta).astype(ins[0].dtype)

    def op_Split(self, ins, a, n):
        x, ax = ins[0], a.get("axis", 0)
        split = list(ins[1]) if len(ins) > 1 and ins[1] is not None else a.get("split")
        if not split:
            split = [x.shape[ax] // n] * n
        return np.split(x, np.cumsum(split)[:-1], axis=ax)

    def op_Where(self, ins, a, n):
        return np.where(ins[0], ins[1], ins[2])

    # ---- arithmetic ---------------------------------------------------------------------
    def _bin(f):
        return lambda self, ins, a, n: f(ins[0], ins[1])

    op_Add = _bin(np.add)
    op_Sub = _bin(np.subtract)
    op_Mul = _bin(np.multiply)
    op_Pow = _bin(np.power)
    op_Equal = _bin(np.equal)
    op_Greater = _bin(np.greater)
    op_Less = _bin(np.less)
    op_Mod = _bin(np.mod)

    def op_Div(self, ins, a, n):
        x, y = ins
        if np.issubdtype(np.asarray(x).dtype, np.integer):
            return np.asarray(np.trunc(x / y)).astype(np.asarray(x).dtype)
        return x / y

    def op_Max(self, ins, a, n):
        return np.maximum.reduce(ins)

    def op_Min(self, ins, a, n):
        return np.minimum.reduce(ins)

    def _un(f):
        return lambda self, ins, a, n: f(ins[0])

    op_Neg = _un(np.negative)
    op_Sqrt = _un(np.sqrt)
    op_Exp = _un(np.exp)
    op_Abs = _un(np.abs)
    op_Reciprocal = _un(np.reciprocal)
    op_Ceil = _un(np.ceil)
    op_Floor = _un(np.floor)
    op_Not = _un(np.logical_not)

    op_Relu = _un(lambda x: np.maximum(x, 0))
    op_Tanh = _un(np.tanh)
    op_Sigmoid = _un(lambda x: 1.0 / (1.0 + np.exp(-x)))
    op_Erf = _un(lambda x: np.vectorize(math.erf, otypes=[np.float64])(x).astype(
        np.asarray(x).dtype))

    def op_Gelu(self, ins, a, n):
        x = np.asarray(ins[0], np.float64)
        approx = a.get("approximate", "none")
        if isinstance(approx, bytes):
            approx = approx.decode()
        if approx == "tanh":
            return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / 2 ** 0.5))

    def op_LayerNormalization(self, ins, a, n):
        x = np.asarray(ins[0], np.float64)
        ax = a.get("axis", -1) % x.ndim
        axes = tuple(range(ax, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + a.get("epsilon", 1e-5))
        if len(ins) > 1 and ins[1] is not None:
            y = y * ins[1]
        if len(ins) > 2 and ins[2] is not None:
            y = y + ins[2]
        return [y] + [None] * (n - 1)

    def op_MatMul(self, ins, a, n):
        return np.matmul(ins[0], ins[1])

    def op_Gemm(self, ins, a, n):
        A, B = ins[0], ins[1]
        if a.get("transA", 0):
            A = A.T
        if a.get("transB", 0):
            B = B.T
        y = a.get("alpha", 1.0) * (A @ B)
        if len(ins) > 2 and ins[2] is not None:
            y = y + a.get("beta", 1.0) * ins[2]
        return y

    def _norm(self, x, a, log):
        x = np.asarray(x, np.float64)
        if self.opset < 13:
            # coerced to 2-D at AXIS (default 1), normalised over the second dimension
            ax = a.get("axis", 1) % x.ndim
            shape = x.shape
            x2 = x.reshape(int(np.prod(shape[:ax])), -1)
            return self._norm_last(x2, log).reshape(shape)
        ax = a.get("axis", -1) % x.ndim
        return np.moveaxis(self._norm_last(np.moveaxis(x, ax, -1), log), -1, ax)

    @staticmethod
    def _norm_last(x, log):
        m = x.max(axis=-1, keepdims=True)
        lse = m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
        return x - lse if log else np.exp(x - lse)

    def op_Softmax(self, ins, a, n):
        return self._norm(ins[0], a, False)

    def op_LogSoftmax(self, ins, a, n):
        return self._norm(ins[0], a, True)

    # ---- recurrent operators (ONNX spec equations) --------------------------------------
    def _acts(self, kind, a, nd):
        names = a.get("activations") or DEFAULT_ACTS[kind]
        if isinstance(names, str):
            names = [names]
        per = len(DEFAULT_ACTS[kind])
        if kind == "rnn" and nd == 1 and len(names) == 2:
            names = names[:1]
        alphas = list(a.get("activation_alpha", []))
        betas = list(a.get("activation_beta", []))
        out = []
        for nm in names:
            op = canonical_activation(nm)
            takes_a, takes_b = ACTIVATIONS[op][:2]
            al = alphas.pop(0) if takes_a and alphas else None
            be = betas.pop(0) if takes_b and betas else None
            out.append((op, al, be))
        if len(out) == per:
            out = out * nd
        return [out[d * per:(d + 1) * per] for d in range(nd)]

    def _recurrent(self, kind, G, ins, a, n):
        X, W, R = (np.asarray(v, np.float64) for v in ins[:3])
        layout = a.get("layout", 0)
        if layout:
            X = np.swapaxes(X, 0, 1)
        T, Bsz = X.shape[0], X.shape[1]
        nd = W.shape[0]
        H = R.shape[-1]
        Bias = ins[3] if len(ins) > 3 and ins[3] is not None else np.zeros((nd, 2 * G * H))
        seq_lens = ins[4] if len(ins) > 4 and ins[4] is not None else None
        if seq_lens is not None and np.any(np.asarray(seq_lens) != T):
            raise ConvertError("verification: sequence_lens shorter than the input")
        h0 = ins[5] if len(ins) > 5 and ins[5] is not None else np.zeros((nd, Bsz, H))
        c0 = ins[6] if kind == "lstm" and len(ins) > 6 and ins[6] is not None else \
            np.zeros((nd, Bsz, H))
        P = ins[7] if kind == "lstm" and len(ins) > 7 and ins[7] is not None else None
        clip = a.get("clip")
        acts = self._acts(kind, a, nd)
        direction = a.get("direction", "forward")
        Y = np.zeros((T, nd, Bsz, H))
        Yh = np.zeros((nd, Bsz, H))
        Yc = np.zeros((nd, Bsz, H))

        def cl(v):
            return v if clip is None else np.clip(v, -clip, clip)

        for d in range(nd):
            rev = direction == "reverse" or d == 1
            f = [lambda v, s=s: activation(s[0], v, s[1], s[2]) for s in acts[d]]
            Wd, Rd = W[d], R[d]
            Wb, Rb = np.asarray(Bias[d][:G * H], np.float64), np.asarray(Bias[d][G * H:],
                                                                          np.float64)
            h = np.asarray(h0[d], np.float64)
            c = np.asarray(c0[d], np.float64)
            for t in (range(T - 1, -1, -1) if rev else range(T)):
                x = X[t]
                if kind == "rnn":
                    h = f[0](cl(x @ Wd.T + h @ Rd.T + Wb + Rb))
                elif kind == "gru":
                    gx = x @ Wd.T + Wb
                    z = f[0](cl(gx[:, :H] + h @ Rd[:H].T + Rb[:H]))
                    r = f[0](cl(gx[:, H:2 * H] + h @ Rd[H:2 * H].T + Rb[H:2 * H]))
                    if a.get("linear_before_reset", 0):
                        hh = f[1](cl(gx[:, 2 * H:] + r * (h @ Rd[2 * H:].T + Rb[2 * H:])))
                    else:
                        hh = f[1](cl(gx[:, 2 * H:] + (r * h) @ Rd[2 * H:].T + Rb[2 * H:]))
                    h = (1 - z) * hh + z * h
                else:
                    g = x @ Wd.T + h @ Rd.T + Wb + Rb          # i, o, f, c
                    pi, po, pf, pc = (g[:, k * H:(k + 1) * H] for k in range(4))
                    if P is not None:
                        pi = pi + P[d][:H] * c
                        pf = pf + P[d][2 * H:] * c
                    i = f[0](cl(pi))
                    fg = 1 - i if a.get("input_forget", 0) else f[0](cl(pf))
                    c = fg * c + i * f[1](cl(pc))
                    if P is not None:
                        po = po + P[d][H:2 * H] * c
                    h = f[0](cl(po)) * f[2](c)
                Y[t, d] = h
            Yh[d], Yc[d] = h, c
        if layout:
            Y = np.transpose(Y, (2, 0, 1, 3))
            Yh, Yc = np.swapaxes(Yh, 0, 1), np.swapaxes(Yc, 0, 1)
        return [Y, Yh, Yc][:n]

    def op_LSTM(self, ins, a, n):
        return self._recurrent("lstm", 4, ins, a, n)

    def op_GRU(self, ins, a, n):
        return self._recurrent("gru", 3, ins, a, n)

    def op_RNN(self, ins, a, n):
        return self._recurrent("rnn", 1, ins, a, n)


def _fixed_axes(importer, vi, in_atoms):
    """The ConvertError for a graph exported without dynamic axes (its input declares a fixed
    batch or length, and torch baked that size into constants, so it cannot run at other
    sizes), or None when the input's batch and time axes are not fixed."""
    fixed = [(role, atom.size, k) for k, atom in enumerate(in_atoms)
             for role, want in (("batch", importer.batch), ("sequence length", importer.seq))
             if atom is want and atom.size is not None]
    if not fixed:
        return None
    axes = ", ".join("%d: %r" % (k, "batch" if atom is importer.batch else "time")
                     for k, atom in enumerate(in_atoms)
                     if atom is importer.batch or atom is importer.seq)
    return ConvertError("the graph has a fixed %s (input '%s', exported without dynamic axes), "
                        "so it cannot run at the batches and lengths rnnd serves: re-export "
                        "with torch.onnx.export(..., input_names=['x'], dynamic_axes={'x': "
                        "{%s}})" % (" and ".join("%s of %d" % (r, n) for r, n, _ in fixed),
                                    vi.name, axes))


def source_runner(proto, importer, wires=None):
    """x ([B, T] ids or [B, T, dim] vectors) -> the graph's output as [B, T, out], using the
    axes IMPORTER (an onnx_import.Importer that has run) found for time, batch and features
    of the graph's input and of the output it chose. A graph with initial-state inputs
    (WIRES, onnx_state.wiring()) also gets a with_state(x, states) that feeds them from rnnd
    states (verify.py)."""
    from . import onnx_state
    g = _Graph(proto)
    if wires is None:
        wires = onnx_state.wiring(proto, importer)
    in_atoms = [ax[0] for ax in importer.vals[importer.input_name].axes]
    in_name = importer.input_name
    out_name, out_axes = importer.out_name, importer.out_axes
    vi = [i for i in proto.graph.input if i.name == in_name][0]
    dtype = _np_dtype(vi.type.tensor_type.elem_type)
    state_types = {i.name: _np_dtype(i.type.tensor_type.elem_type) for i in proto.graph.input
                   if i.name in importer.state_inputs}

    def run(x, states=None):
        B, T = x.shape[0], x.shape[1]
        # put the sample's (batch, time, features) where the graph's input has them
        order = []
        for atom in in_atoms:
            if atom is importer.batch:
                order.append(0)
            elif atom is importer.seq:
                order.append(1)
            else:
                order.append(2)
        if x.ndim == 3 and 2 not in order:
            # a graph input of [batch, time] floats (one feature per step, unsqueezed in the
            # graph): fed at the rank it takes
            if x.shape[2] != 1:
                raise ConvertError("verification: the graph input '%s' has no feature axis, "
                                   "but the model takes %d features" % (in_name, x.shape[2]))
            x = x[:, :, 0]
        if x.ndim == 2:
            order = [k for k in order if k != 2]
            if len(order) != 2:
                raise ConvertError("verification: the input's token axes are not [batch, "
                                   "time] in some order")
        xin = np.transpose(x, order).astype(dtype)
        # a graph input of initial states is fed "absent": zeros, as rnnd starts
        feeds = {in_name: xin}
        feeds.update({name: None for name in importer.state_inputs})
        if states is not None:
            feeds.update(onnx_state.feeds(wires, importer.model, states, state_types))
        try:
            y = np.asarray(g.run(feeds)[out_name], np.float64)
        except ConvertError:
            raise
        except Exception as e:
            raise _fixed_axes(importer, vi, in_atoms) or e
        sizes, roles = [], []
        for ax in out_axes:
            for atom in ax:
                roles.append(atom)
                sizes.append(B if atom is importer.batch else T if atom is importer.seq
                             else (atom.size if atom.size is not None else -1))
        y = y.reshape(sizes)
        b = roles.index(importer.batch)
        if getattr(importer, "pooled", None):
            rest = [k for k in range(len(roles)) if k != b]
            return np.transpose(y, [b] + rest).reshape(B, -1)     # one row per sequence
        # only the batch moves: the steps and features stay in the order the graph gives
        # them, so an output the importer mis-read as [time, features] (a permute of the
        # output) differs here instead of being rearranged to match (user finding 15)
        rest = [k for k in range(len(roles)) if k != b]
        return np.transpose(y, [b] + rest).reshape(B, T, -1)

    from .watchdog import bounded
    # the graph is the file's: under verification's time limit, in a forked child (M2)
    limited = bounded(run, what="the ONNX graph (run by onnx_run)")

    def source(x, states=None):
        return limited(x, states)
    if wires and onnx_state.feeds(wires, importer.model, [np.zeros(_state_size(importer.model))]) \
            is not None:
        source.with_state = limited
        source.state_mask = onnx_state.mask(wires, importer.model)
    return source


def _state_size(model):
    """Floats of MODEL's state per sequence (LSTM / GRU / RNN layers)."""
    return sum(L.num_directions * (L.out_dim + (L.hidden_size if L.type == "lstm" else 0))
               for L in model.layers)
