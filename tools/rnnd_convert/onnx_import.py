"""ONNX input: trace the data path of a graph from its input to its output.

Every tensor gets an abstract value (Val): a constant (initializers, Constant nodes and what
folds from them), a shape computed from the data (Shape, Gather, Concat, ...), an all-zero
tensor (ConstantOfShape 0, the initial states torch writes), a final state (Y_h, Y_c), or the
DATA itself. DATA carries its axes as lists of symbolic atoms, so transposes, squeezes and
reshapes between layers are followed exactly, and every op that reads DATA must be one rnnd
can compute: Gather on an embedding, LSTM/GRU/RNN, affine maps (MatMul, Gemm, Add, Sub, Mul,
Div: folded into a head or the next layer), Softmax/LogSoftmax. Anything else is refused with
the node's name and op_type, never dropped.
"""
import numpy as np

from .arch import (ConvertError, DEFAULT_ACTS, Layer, Model, N_ACT, canonical_activation,
                   check_dense_input_fold, check_input_fold, f32, fill_biases, make_act)
from .errors import printable

# Kinds of abstract values.
CONST, SHAPE, ZERO, FILL, DATA, STATE, EXTRA = ("const", "shape", "zero", "fill", "data",
                                                "state", "extra")

RECURRENT = {"LSTM": ("lstm", 4), "GRU": ("gru", 3), "RNN": ("rnn", 1)}
RECURRENT_ATTRS = {"activations", "activation_alpha", "activation_beta", "clip", "direction",
                   "hidden_size", "input_forget", "linear_before_reset", "layout",
                   "output_sequence"}
# what may carry an initial state from a graph input to a recurrent node
EXTRA_PASS = ("Identity", "Slice", "Gather", "Squeeze", "Unsqueeze", "Reshape", "Transpose",
              "Cast")
LAYOUT_OPS = ("Identity", "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Cast",
              "Dropout")
# Constant folding runs what the file describes: bounded, so that a small file cannot make it
# allocate or compute without end (docs/convert.md "ONNX"). Elements of one folded tensor, and
# element operations (a MatMul counts m*k*n) of all folding in one file.
MAX_FOLD_ELEMENTS = 1 << 26
MAX_FOLD_WORK = 1 << 31
# Bytes of folded values held at once (a value is let go after the last node that reads
# it): 2^26 elements of float64 are 512 MiB, and a file that keeps several alive must not
# hold them all (issue 14, outside trial A5). Verification's interpreter (onnx_run) holds
# the tensors it makes from shapes to the same bound.
MAX_HELD_BYTES = 1 << 30
# Bytes folding may make in all (each new value it computes, a view of another left out):
# FOLD_SLACK more than FOLD_FACTOR times the file's own constants (initializers and Constant
# nodes). Torch's exports fold little besides a weight's reordering and casting, and zero
# biases; a file of a few hundred bytes whose ConstantOfShape makes 67 MB of weights is
# refused at that node (issue 14, sixth round, M2).
FOLD_FACTOR = 2
FOLD_SLACK = 16 << 20
# what folding computes as a view of its operand (counted as made only where it is not)
_VIEW_OPS = ("Identity", "Dropout", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
             "Transpose", "Slice", "Split")
# rows of an embedding table at one norm, the largest, that look renormalised by max_norm
MAX_NORM_ROWS = 3
# why attention over the recurrent outputs cannot be converted, and the way out
ATTENTION = ("attention is not expressible in rnnd's format, which runs recurrent layers, "
             "then pools the last layer's output once (its last step, or mean or max over the "
             "steps), then the head: pool with one of those (y[:, -1], y.mean(1), "
             "y.max(1).values) instead, or serve the model outside rnnd")
# why an initial state computed in the graph cannot be converted, and the way out
LEARNED_STATE = ("rnnd starts every sequence from zeros or from the state a request gives "
                 "(infer's \"initial_state\", a session's state), so an initial state the "
                 "graph computes (a learned h0, e.g. self.h0.expand(...), or zeros plus a "
                 "parameter) cannot be part of the model: drop it from forward() and send it "
                 "as initial_state; the torch doors (rnnd_convert.from_module, "
                 "torch.jit.script) refuse it too")


class Atom:
    """One symbolic dimension (time, batch, features, directions). Compared by identity."""
    __slots__ = ("name", "size", "unit")

    def __init__(self, name, size, unit=False):
        self.name, self.size, self.unit = name, size, unit

    def __repr__(self):
        return "%s=%s" % (self.name, "?" if self.size is None else self.size)


def _unit():
    return (Atom("1", 1, unit=True),)


def nonunit(axis):
    return tuple(a for a in axis if not a.unit)


def axis_size(axis):
    n = 1
    for a in axis:
        if a.size is None:
            return None
        n *= a.size
    return n


class Val:
    def __init__(self, kind, **kw):
        self.kind = kind
        self.value = None       # CONST
        self.entries = None     # SHAPE: list of int | axis | None; None = unknown length;
        #                         ZERO / FILL: their shape, the same way
        self.scalar = False     # SHAPE
        self.axes = None        # DATA: list of axes (tuples of atoms)
        self.tokens = False     # DATA: raw token ids
        self.stage = 0
        self.feat = None        # DATA: the non-unit atoms of the feature axis
        self.affine = None      # DATA: pending (A, a) over the stage's features
        self.prefix = None      # DATA: the per-feature (a, b) that started a pending affine
        #                         map before it turned dense (MatMul / Gemm): its centre
        self.norm = None        # DATA: "softmax" / "log_softmax" applied
        self.pooled = None      # DATA: "last" / "mean" / "max": the steps pooled
        self.head = None        # DATA: head layers done (arch.Model.head_layers entries)
        self.rows = None        # STATE of Y_h (or a Concat of them): [(stage, direction)]
        self.origin = None      # EXTRA / STATE: where it comes from
        for k, v in kw.items():
            setattr(self, k, v)

    def but(self, **kw):
        v = Val(self.kind)
        v.__dict__.update(self.__dict__)
        for k, x in kw.items():
            setattr(v, k, x)
        return v


def _attrs(node):
    import onnx
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode("utf-8", "replace") for x in v]
        elif isinstance(v, onnx.TensorProto):
            v = _tensor(v)
        out[a.name] = v
    return out


def _tensor(t):
    from onnx import numpy_helper
    if t.data_type in _COMPLEX:
        raise ConvertError("tensor '%s': %s" % (t.name, _complex_why(t.data_type)))
    try:
        return numpy_helper.to_array(t)
    except Exception as e:      # raw_data of another length than the dims say, ...
        raise ConvertError("tensor '%s': its data do not match its dims %s and data_type %d "
                           "(%s)" % (t.name, list(t.dims), t.data_type,
                                     (str(e).splitlines() or [type(e).__name__])[0]))


def _constant_bytes(g):
    """Bytes of the values G's Constant nodes hold, from their dims (nothing is made)."""
    from onnx import helper
    n = 0
    for node in g.node:
        if node.op_type != "Constant":
            continue
        for a in node.attribute:
            if a.HasField("t"):
                try:
                    size = np.dtype(helper.tensor_dtype_to_np_dtype(a.t.data_type)).itemsize
                except Exception:
                    size = 8
                n += int(np.prod(a.t.dims, dtype=np.float64)) * size
            n += 8 * (len(a.floats) + len(a.ints))
            n += 8 * (a.HasField("f") or a.HasField("i"))
    return n


# onnx.TensorProto.COMPLEX64, COMPLEX128
_COMPLEX = (14, 15)


def _complex_why(onnx_type):
    return ("element type %s: complex numbers; rnnd computes in real numbers, so "
            "rnnd-convert reads no complex tensor" % ("COMPLEX64" if onnx_type == 14
                                                      else "COMPLEX128"))


def _np_dtype(onnx_type):
    import onnx
    if onnx_type in _COMPLEX:
        raise ConvertError(_complex_why(onnx_type))
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(onnx_type)
    except AttributeError:
        return onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[onnx_type]


class Importer:
    def __init__(self, model_proto):
        self.proto = model_proto
        self.graph = model_proto.graph
        self.opset = 1
        for o in model_proto.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = o.version
        self.vals = {}
        self.stage = 0              # the latest stage: every new stage must read it
        self.seq = self.batch = None
        self.in_feat = None         # the input's feature atoms (a tuple), bound by its first
        #                             reader: () for an input without a feature axis
        self.input_name = None
        self.state_inputs = set()   # graph inputs that only feed initial states
        self.state_claims = {}      # such an input: [(layer, rows it gives that layer)]
        self.state_roles = {}       # such an input: "initial_h" or "initial_c"
        self.layer_states = {}      # layer index: the initial states it takes from inputs
        self.extra_order = []
        self.model = Model()
        self.node = None
        self.idx = 0
        self.fold_work = 0          # element operations folding has cost (MAX_FOLD_WORK)
        self.held = 0               # bytes of folded values held now (MAX_HELD_BYTES)
        self.held_by = {}           # a folded value's name: its bytes
        self.made = 0               # bytes folding has made in all (FOLD_SLACK)
        self.made_cap = None        # set in run(), from the file's own constants

    # ---- errors -------------------------------------------------------------------------
    def label(self, node=None):
        node = node or self.node
        name = node.name or "#%d" % self.idx
        return "node '%s' (%s)" % (name, node.op_type)

    def fail(self, msg):
        raise ConvertError("%s: %s" % (self.label(), msg))

    def silu(self, node):
        """Whether NODE (a Mul of the data by the data) is x * Sigmoid(x), a SiLU."""
        made = {o: n for n in self.graph.node for o in n.output}
        for a, b in ((0, 1), (1, 0)):
            m = made.get(node.input[a])
            if m is not None and m.op_type == "Sigmoid" and list(m.input) == [node.input[b]]:
                return True
        return False

    # ---- set-up -------------------------------------------------------------------------
    def run(self):
        g = self.graph
        for t in g.initializer:
            self.vals[t.name] = Val(CONST, value=_tensor(t))
        for t in getattr(g, "sparse_initializer", []):
            raise ConvertError("sparse initializer '%s': not supported" % t.values.name)
        self.own = sum(int(v.value.nbytes) for v in self.vals.values()) + _constant_bytes(g)
        self.made_cap = FOLD_SLACK + FOLD_FACTOR * self.own
        inputs = [i for i in g.input if i.name not in self.vals]
        if not inputs:
            raise ConvertError("the graph has no input")
        self.setup_input(inputs[0])
        for i in inputs[1:]:
            dims = i.type.tensor_type.shape.dim if i.type.HasField("tensor_type") else []
            n0 = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
            # rows: which rows of the input's first axis the value holds (None: all of them,
            # a number not fixed); exact: nothing else of it is rearranged (adversary 3)
            self.vals[i.name] = Val(EXTRA, origin=i.name, rank=len(dims) or None,
                                    rows=list(range(n0)) if n0 else None, exact=True,
                                    squeezed=False)
        self.extra_order = [i.name for i in inputs[1:]]
        nodes = fuse_head_ops(g)
        live = _live_nodes(nodes, g.output)
        last = _last_reads(nodes, live, g.output)
        try:
            for self.idx, node in enumerate(nodes):
                if self.idx not in live:
                    continue        # computes nothing the outputs read
                self.node = node
                self.visit(node)
                for name in last.get(self.idx, ()):
                    self.let_go(name)
            return self.finish()
        except ConvertError as e:
            # a construct rnnd has no layer for leads, with its way out, as the torch doors
            # say it (user findings U7, U8); the node that failed follows
            lead = self.loop_node(nodes, live) or self.branch_node(nodes, live) or \
                self.packed(nodes, live, e)
            if lead is not None:
                raise ConvertError("%s (the first node rnnd-convert cannot read: %s)"
                                   % (lead, e))
            unrolled = self.unrolled_loop()
            if unrolled is None:
                raise
            if unrolled.startswith("the graph is"):
                raise ConvertError("%s (the first node rnnd-convert cannot read: %s)"
                                   % (unrolled, e))
            raise ConvertError("%s; %s" % (e, unrolled))

    def loop_node(self, nodes, live):
        """The message for a graph that runs a Loop or Scan (a loop in forward() the export
        kept as a loop: a scripted module), else None."""
        loop = next((n for k, n in enumerate(nodes) if k in live and
                     n.op_type in ("Loop", "Scan")), None)
        if loop is None:
            return None
        return ("the graph runs a Loop (node '%s' (%s)): a loop in forward() over the steps, "
                "as over an nn.LSTMCell / GRUCell / RNNCell, which rnnd-convert does not read "
                "from ONNX: use nn.LSTM / nn.GRU / nn.RNN in forward() (with the cell's "
                "weights), or convert the PyTorch module with rnnd_convert.from_module (or "
                "torch.jit.script and rnnd-convert), which reads a loop over a cell as one "
                "layer" % (loop.name or loop.output[0], loop.op_type))

    def branch_node(self, nodes, live):
        """The message for a graph that runs an If (a branch in forward() the export kept:
        a scripted module, or a condition on the data's values), else None (user trial 6)."""
        n = next((n for k, n in enumerate(nodes) if k in live and n.op_type == "If"), None)
        if n is None:
            return None
        return ("the graph branches (node '%s' (If)): an if in forward() that the export kept "
                "as a branch (a scripted module, or a condition on the data's values); rnnd "
                "runs one fixed chain of layers: take the branch out of forward() (decide it "
                "in the client, or by a module attribute set before exporting), or export the "
                "module unscripted so that the export traces the branch taken, and export "
                "again" % (n.name or n.output[0]))

    def packed(self, nodes, live, err):
        """The message for a graph exported with pack_padded_sequence (a recurrent node
        given sequence_lens) that fails before that node says so itself (enforce_sorted=
        False sorts the lengths first, with TopK), else None."""
        rec = [n for k, n in enumerate(nodes) if k in live and n.op_type in RECURRENT and
               len(n.input) > 4 and n.input[4]]
        if not rec or "sequence_lens" in str(err):
            return None
        sort = next((n for k, n in enumerate(nodes) if k in live and
                     n.op_type in ("TopK", "ArgMax", "ArgMin")), None)
        return ("the graph packs its sequences (pack_padded_sequence%s: node '%s' (%s) "
                "takes sequence_lens%s): packed sequences are not supported; rnnd's infer "
                "takes a batch of sequences of different lengths and runs each at its own "
                "length, unpadded (docs/api.md), so packing is not needed: export the model "
                "calling the recurrent module without pack_padded_sequence / "
                "pad_packed_sequence"
                % (", enforce_sorted=False" if sort is not None else "",
                   rec[0].name or rec[0].output[0], rec[0].op_type,
                   ", node '%s' (%s) sorts the lengths" % (sort.name or sort.output[0],
                                                            sort.op_type)
                   if sort is not None else ""))

    def unrolled_loop(self):
        """Advice when the graph looks like a loop over a cell unrolled by the export (the
        same weight matrix multiplied in at several places and no recurrent node), else
        None: an exported loop runs as many steps as the example had, and rnnd cannot tell
        the steps apart. The cell loop's advice starts "the graph is": it leads the
        message."""
        g = self.graph
        if any(n.op_type in ("LSTM", "GRU", "RNN") for n in g.node):
            return None
        inits = {t.name for t in g.initializer}
        uses = {}
        for n in g.node:
            if n.op_type in ("Gemm", "MatMul"):
                for name in n.input[:2]:
                    if name in inits:
                        uses[name] = uses.get(name, 0) + 1
        name, count = max(uses.items(), key=lambda kv: kv[1], default=(None, 0))
        if count < 2:
            # the torch doors read these modules by their class (docs/convert.md)
            return ("the graph holds no LSTM / GRU / RNN node: if the model is made of "
                    "tools/rnnd_modules' modules (MinGRU, MinLSTM, SLSTM, Clockwork, DGLSTM), "
                    "convert the PyTorch module with rnnd_convert.from_module, which reads "
                    "them")
        return ("the graph is a loop over an nn.LSTMCell / GRUCell / RNNCell (or a module of "
                "tools/rnnd_modules: Clockwork, DGLSTM, ...) that the export unrolled for "
                "the example's length (it multiplies by '%s' at %d places and holds no "
                "LSTM / GRU / RNN node), so it runs only as many steps as the example had: "
                "use nn.LSTM / nn.GRU / nn.RNN in forward() (with the cell's weights), or "
                "convert the PyTorch module instead (rnnd_convert.from_module, or "
                "torch.jit.script and rnnd-convert), where the loop becomes one layer"
                % (name, count))

    def setup_input(self, vi):
        import onnx
        self.input_name = vi.name
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            raise ConvertError("graph input '%s': no tensor shape; rnnd needs [batch, time, ...]"
                               % vi.name)
        axes = []
        for k, d in enumerate(tt.shape.dim):
            size = d.dim_value if d.HasField("dim_value") else None
            axes.append((Atom("%s[%d]" % (vi.name, k), size),))
        ints = (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16,
                onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
                onnx.TensorProto.UINT32, onnx.TensorProto.UINT64)
        floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                  onnx.TensorProto.BFLOAT16)
        if tt.elem_type in ints:
            tokens = True
            self.model.input_kind = "tokens"
        elif tt.elem_type in floats:
            tokens = False
        else:
            raise ConvertError("graph input '%s': element type %d is neither ids nor floats"
                               % (vi.name, tt.elem_type))
        self.vals[vi.name] = Val(DATA, axes=axes, tokens=tokens, stage=0)

    # ---- dispatch -----------------------------------------------------------------------
    def get(self, name):
        if name == "":
            return None
        v = self.vals.get(name)
        if v is None:
            self.fail("input '%s' is not produced by any earlier node or initializer" % name)
        return v

    def let_go(self, name):
        """Forget the folded value NAME, which no later node reads (MAX_HELD_BYTES)."""
        n = self.held_by.pop(name, None)
        if n is not None:
            self.held -= n
            del self.vals[name]

    def visit(self, node):
        if node.domain not in ("", "ai.onnx"):
            self.fail("operator domain '%s' is not supported by rnnd" % node.domain)
        op = node.op_type
        try:
            a = _attrs(node)        # a complex tensor attribute is refused here, by node
            if op == "Cast" and "to" in a:
                _np_dtype(a["to"])
        except ConvertError as e:
            self.fail(str(e))
        ins = [self.get(n) for n in node.input]
        present = [v for v in ins if v is not None]
        extra = [v for v in present if v.kind == EXTRA]
        if extra and op not in RECURRENT:
            # an initial state given as a graph input (word_language_model's `hidden`): torch
            # slices it per layer; it may only reach a recurrent node's initial_h / initial_c
            if op in EXTRA_PASS and len(extra) == 1 and ins[0] is extra[0] and all(
                    v.kind == CONST for v in present[1:]):
                out = onnx_state.pass_value(self, node, extra[0], ins)
                for name in node.output:
                    if name:
                        self.vals[name] = out
                return
            self.fail("reads graph input '%s'; rnnd's only input is '%s' (a second input may "
                      "only be a recurrent node's initial state)" % (extra[0].origin,
                                                                      self.input_name))
        if op == "Constant":
            outs = [Val(CONST, value=self.constant_value(node))]
        elif all(v.kind == CONST for v in present) and op not in RECURRENT:
            outs = [Val(CONST, value=x) for x in self.fold(node, [None if v is None else v.value
                                                                  for v in ins])]
            self.count_made(outs, present)
            for name, v in zip(node.output, outs):
                if name:
                    n = int(np.asarray(v.value).nbytes)
                    self.held += n - self.held_by.get(name, 0)
                    self.held_by[name] = n
        elif any(v.kind == DATA for v in present) or op in RECURRENT:
            outs = self.visit_data(node, ins)
        elif any(v.kind == STATE for v in present):
            outs = self.visit_state(node, ins)
        elif any(v.kind in (ZERO, FILL) for v in present) and op != "Shape":
            outs = self.visit_zero(node, ins)
        else:
            outs = self.visit_shape(node, ins)
        for name, v in zip(node.output, outs):
            if name:
                self.vals[name] = v

    def count_made(self, outs, ins):
        """Add the bytes of the folded values OUTS that are new (not a view of one of INS,
        a Reshape or Slice of a weight) to self.made (FOLD_SLACK; fold_budget refuses
        before computing, this counts what was made)."""
        srcs = [np.asarray(v.value) for v in ins]
        for v in outs:
            x = np.asarray(v.value)
            if any(x.nbytes <= y.nbytes and np.may_share_memory(x, y) for y in srcs):
                continue
            self.made += int(x.nbytes)
            if self.made_cap is not None and self.made > self.made_cap:
                self.refuse_made(int(x.nbytes), self.made)

    def refuse_made(self, size, total):
        self.fail("folding it on constants makes %.1f MiB of values the file does not hold "
                  "(%.1f MiB in all); rnnd-convert makes at most %d MiB more than %d times "
                  "the file's own constants (%d bytes)" % (size / 2.0 ** 20, total / 2.0 ** 20,
                                                           FOLD_SLACK >> 20, FOLD_FACTOR,
                                                           self.own))

    def constant_value(self, node):
        a = _attrs(node)
        for k in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if k in a:
                v = a[k]
                return np.asarray(v, dtype=np.float32 if "float" in k else
                                  (np.int64 if "int" in k else None))
        self.fail("a Constant without a numeric value (%s)" % (", ".join(a) or "none"))

    # ---- constant folding ---------------------------------------------------------------
    def axes_arg(self, node, a, vals, pos):
        if "axes" in a:
            return list(a["axes"])
        if len(vals) > pos and vals[pos] is not None:
            return [int(x) for x in np.asarray(vals[pos]).ravel()]
        return None

    def fold(self, node, vals):
        op, a = node.op_type, _attrs(node)
        x = vals[0] if vals else None
        self.fold_budget(op, a, vals)
        try:
            if op in ("Identity", "Dropout"):
                return [x]
            if op == "Cast":
                return [x.astype(_np_dtype(a["to"]))]
            if op == "Unsqueeze":
                axes = self.axes_arg(node, a, vals, 1)
                r = x.ndim + len(axes)
                for ax in sorted(k % r for k in axes):
                    x = np.expand_dims(x, ax)
                return [x]
            if op == "Squeeze":
                axes = self.axes_arg(node, a, vals, 1)
                if axes is None:
                    return [np.squeeze(x)]
                return [np.squeeze(x, axis=tuple(k % x.ndim for k in axes))]
            if op == "Concat":
                return [np.concatenate([v for v in vals if v is not None], axis=a["axis"])]
            if op == "Reshape":
                shape = [int(s) for s in vals[1]]
                if not a.get("allowzero", 0):
                    shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
                return [x.reshape(shape)]
            if op == "Transpose":
                return [np.transpose(x, a.get("perm"))]
            if op == "Flatten":
                k = self.flatten_axis(a, x.ndim) if x.ndim else 0
                return [x.reshape(int(np.prod(x.shape[:k])), int(np.prod(x.shape[k:])))]
            if op == "Slice":
                return [self.fold_slice(a, vals)]
            if op == "Gather":
                return [np.take(x, vals[1], axis=a.get("axis", 0))]
            if op in ("Add", "Sub", "Mul", "Div", "Equal", "Pow"):
                f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal,
                     "Pow": np.power}.get(op)
                if op == "Div":
                    if np.issubdtype(x.dtype, np.integer):
                        return [(x // vals[1]).astype(x.dtype)]
                    return [x / vals[1]]
                # astype without a copy: folding holds no value twice (MAX_HELD_BYTES)
                return [f(x, vals[1]).astype(np.result_type(x, vals[1]) if op != "Equal"
                                             else bool, copy=False)]
            if op in ("Neg", "Sqrt", "Exp", "Abs", "Reciprocal"):
                return [{"Neg": np.negative, "Sqrt": np.sqrt, "Exp": np.exp, "Abs": np.abs,
                         "Reciprocal": np.reciprocal}[op](x)]
            if op == "Where":
                return [np.where(vals[0], vals[1], vals[2])]
            if op == "Shape":
                s = np.array(x.shape, dtype=np.int64)
                return [s[a.get("start", 0):a.get("end", None)]]
            if op == "ConstantOfShape":
                fill = a.get("value", np.zeros(1, np.float32))
                return [np.full([int(s) for s in x], fill.ravel()[0], dtype=fill.dtype)]
            if op == "Expand":
                return [x * np.ones([int(s) for s in vals[1]], dtype=x.dtype)]
            if op == "MatMul":
                return [np.matmul(x, vals[1])]
            if op == "Range":
                return [np.arange(vals[0], vals[1], vals[2])]
            if op == "Split":
                axis = a.get("axis", 0)
                split = a.get("split")
                if split is None and len(vals) > 1 and vals[1] is not None:
                    split = [int(s) for s in vals[1]]
                if split is None:
                    return np.split(x, len(node.output), axis=axis)
                return np.split(x, np.cumsum(split)[:-1], axis=axis)
        except ConvertError:
            raise
        except Exception as e:      # a malformed constant expression
            self.fail("cannot evaluate on constants: %s" % e)
        self.fail("operator not supported by rnnd")

    def fold_budget(self, op, a, vals):
        """Refuse folding OP on VALS when its result or the file's folding as a whole would
        exceed MAX_FOLD_ELEMENTS / MAX_FOLD_WORK; estimated before anything is computed."""
        try:
            elems, work = _fold_cost(op, a, vals)
        except Exception:
            return          # a malformed operand: fold() reports it
        self.fold_work += work
        if elems > MAX_FOLD_ELEMENTS:
            self.fail("folding it on constants would make a tensor of %d elements; rnnd-convert "
                      "folds at most %d" % (elems, MAX_FOLD_ELEMENTS))
        size = elems * _fold_itemsize(op, a, vals)
        if op not in _VIEW_OPS and self.made_cap is not None and \
                self.made + size > self.made_cap:
            self.refuse_made(size, self.made + size)
        if self.held + size > MAX_HELD_BYTES:
            self.fail("folding it on constants would make %d bytes while %d bytes of folded "
                      "values are held; rnnd-convert holds at most %d MiB of them at once"
                      % (size, self.held, MAX_HELD_BYTES >> 20))
        if self.fold_work > MAX_FOLD_WORK:
            self.fail("folding the graph's constants takes more than %d element operations; "
                      "rnnd-convert refuses it" % MAX_FOLD_WORK)

    def fold_slice(self, a, vals):
        x = vals[0]
        if "starts" in a:
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        else:
            starts, ends = [int(v) for v in vals[1]], [int(v) for v in vals[2]]
            axes = [int(v) for v in vals[3]] if len(vals) > 3 and vals[3] is not None else None
            steps = [int(v) for v in vals[4]] if len(vals) > 4 and vals[4] is not None else None
        axes = axes if axes is not None else list(range(len(starts)))
        steps = steps if steps is not None else [1] * len(starts)
        sl = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            sl[ax % x.ndim] = _spec_slice(s, e, st, x.shape[ax % x.ndim])
        return x[tuple(sl)]

    # ---- shapes (values computed from the data's shape) ---------------------------------
    def entries(self, v):
        """(entries, scalar) of a shape-like value (CONST ints or SHAPE)."""
        if v.kind == CONST:
            arr = np.asarray(v.value)
            if not np.issubdtype(arr.dtype, np.integer):
                return None, False
            return [int(x) for x in arr.ravel()], arr.ndim == 0
        if v.kind == SHAPE:
            return v.entries, v.scalar
        return None, False

    def visit_shape(self, node, ins):
        op, a = node.op_type, _attrs(node)
        x = ins[0]
        if op == "Shape":
            if x.kind == DATA:
                ent = list(x.axes)
            else:
                ent = None
            if ent is not None:
                ent = ent[a.get("start", 0):a.get("end", None)]
            return [Val(SHAPE, entries=ent)]
        if x is None or x.kind not in (SHAPE, CONST):
            self.fail("operator not supported by rnnd")
        ent, scalar = self.entries(x)
        if op in ("Identity", "Cast"):
            return [x.but()]
        if op in ("Expand", "Tile") and x.kind == CONST:
            # a constant broadcast to a shape from the data: torch's zero initial states
            if op == "Tile":
                return [self.made_tensor(x.value, None)]
            tgt, _ = self.entries(ins[1])
            return [self.made_tensor(x.value, _broadcast(list(np.shape(x.value)), tgt))]
        if op == "ConstantOfShape":
            return [self.made_tensor(a.get("value", np.zeros(1, np.float32)), ent)]
        if op == "Gather":
            idx = ins[1]
            if idx.kind != CONST or ent is None:
                return [Val(SHAPE, entries=None)]
            ix = np.asarray(idx.value)
            picked = [ent[int(k)] for k in ix.ravel()]
            return [Val(SHAPE, entries=picked, scalar=ix.ndim == 0)]
        if op == "Unsqueeze":
            return [Val(SHAPE, entries=ent if not scalar else ent, scalar=False)]
        if op == "Squeeze":
            return [Val(SHAPE, entries=ent, scalar=ent is not None and len(ent) == 1)]
        if op == "Concat":
            out = []
            for v in ins:
                e, _ = self.entries(v)
                if e is None:
                    return [Val(SHAPE, entries=None)]
                out += e
            return [Val(SHAPE, entries=out)]
        if op == "Slice":
            if ent is None or any(v is not None and v.kind != CONST for v in ins[1:]):
                return [Val(SHAPE, entries=None)]
            vals = [np.arange(len(ent))] + [None if v is None else v.value for v in ins[1:]]
            picked = self.fold_slice(a, vals)
            return [Val(SHAPE, entries=[ent[int(k)] for k in picked])]
        if op in ("Add", "Sub", "Mul", "Div", "Equal", "Where", "Expand", "Neg", "Range",
                  "Max", "Min", "Abs", "Not", "Less", "Greater", "Reshape",
                  "Floor", "Ceil", "Mod", "Sqrt"):
            # Arithmetic on sizes: fine as long as nothing needs the result (Reshape refuses
            # an unknown target with a clear message).
            return [Val(SHAPE, entries=None) for _ in node.output]
        self.fail("operator not supported by rnnd")

    # ---- zero tensors and final states --------------------------------------------------
    def made_tensor(self, fill, entries):
        """The value of a tensor filled with FILL (a constant broadcast to a shape computed
        from the data: ConstantOfShape, Expand, Tile) whose shape has ENTRIES (None:
        unknown). Integer fills are shape arithmetic (torch's expand(-1) and the sequence
        lengths of pack_padded_sequence): SHAPE. Float fills are initial states, bounded
        like folding before anything is made (verification's onnx_run makes them)."""
        fill = np.asarray(fill)
        if not np.issubdtype(fill.dtype, np.floating):
            return Val(SHAPE, entries=None)
        self.bound_made(entries)
        return Val(FILL if np.any(fill) else ZERO, entries=entries)

    def bound_made(self, entries):
        """Refuse a made tensor whose known sizes alone exceed MAX_FOLD_ELEMENTS."""
        if entries is None:
            return
        n = 1
        for e in entries:
            if isinstance(e, (int, np.integer)):
                n *= max(int(e), 0)
            elif isinstance(e, tuple) and axis_size(e) is not None:
                n *= axis_size(e)
        self.fold_work += n
        if n > MAX_FOLD_ELEMENTS:
            self.fail("makes a tensor of at least %d elements from the input's shape; "
                      "rnnd-convert folds at most %d" % (n, MAX_FOLD_ELEMENTS))
        if self.fold_work > MAX_FOLD_WORK:
            self.fail("folding the graph's constants takes more than %d element operations; "
                      "rnnd-convert refuses it" % MAX_FOLD_WORK)

    def visit_zero(self, node, ins):
        op = node.op_type
        kinds = {v.kind for v in ins if v is not None}
        if op in LAYOUT_OPS + ("Slice", "Gather", "Concat", "Expand", "Tile"):
            zero = all(v.kind == ZERO or (v.kind == CONST and not np.any(v.value))
                       for v in ins[:1 if op != "Concat" else len(ins)] if v is not None)
            ent = self.zero_entries(node, ins)
            self.bound_made(ent)
            return [Val(ZERO if zero else FILL, entries=ent)]
        if op == "Mul" and ZERO in kinds:
            return [Val(ZERO, entries=self.zero_entries(node, ins))]
        self.fail("operator not supported by rnnd on an initial-state tensor: %s"
                  % LEARNED_STATE)

    def zero_entries(self, node, ins):
        """The shape entries (int | axis | None each, or None) of what NODE makes of a zero
        or filled tensor ins[0]: followed through the ops torch writes between the zeros
        and a recurrent node (Slice per layer, Gather, Squeeze, Unsqueeze, Transpose,
        Concat, Expand, Reshape); None where it cannot be told."""
        op, a = node.op_type, _attrs(node)
        x = ins[0]

        def ent_of(v):
            if v is None:
                return None
            if v.kind == CONST:
                return list(np.shape(v.value))
            return getattr(v, "entries", None)
        e = ent_of(x)
        try:
            if op in ("Identity", "Cast", "Dropout"):
                return e
            if op == "Mul":
                other = ent_of(ins[1]) if len(ins) > 1 else None
                return _broadcast(e, other) if e is not None and other is not None else None
            if e is None:
                return None
            r = len(e)
            if op == "Expand":
                tgt, _ = self.entries(ins[1])
                return _broadcast(e, tgt)
            if op == "Transpose":
                perm = a.get("perm", list(range(r))[::-1])
                return [e[p] for p in perm]
            if op == "Unsqueeze":
                axes = self.data_axes(node, a, ins, 1)
                out = list(e)
                for k in sorted(k % (r + len(axes)) for k in axes):
                    out.insert(k, 1)
                return out
            if op == "Squeeze":
                axes = self.data_axes(node, a, ins, 1)
                if axes is None:
                    if any(not isinstance(v, int) for v in e):
                        return None
                    return [v for v in e if v != 1]
                rm = {k % r for k in axes}
                if any(e[k] != 1 for k in rm):
                    return None
                return [v for k, v in enumerate(e) if k not in rm]
            if op == "Gather":
                idx = ins[1]
                if idx is None or idx.kind != CONST:
                    return None
                k = a.get("axis", 0) % r
                iv = np.asarray(idx.value)
                if isinstance(e[k], int):
                    if np.any(iv >= e[k]) or np.any(iv < -e[k]):
                        return None
                elif iv.size:
                    return None
                return e[:k] + list(iv.shape) + e[k + 1:]
            if op == "Slice":
                if self.opset < 10:
                    starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
                else:
                    vals = [ins[i] if len(ins) > i else None for i in range(1, 5)]
                    if any(v is not None and v.kind != CONST for v in vals):
                        return None
                    starts, ends, axes, steps = [None if v is None else
                                                 [int(q) for q in np.asarray(v.value).ravel()]
                                                 for v in vals]
                axes = axes if axes is not None else list(range(len(starts)))
                steps = steps if steps is not None else [1] * len(starts)
                out = list(e)
                for s0, e0, ax, st in zip(starts, ends, axes, steps):
                    k = int(ax) % r
                    if isinstance(e[k], int):
                        out[k] = len(range(*_spec_slice(s0, e0, st, e[k]).indices(e[k])))
                    elif not (int(s0) == 0 and int(e0) >= 2 ** 31 - 1 and int(st) == 1):
                        return None
                return out
            if op == "Concat":
                parts = [ent_of(v) for v in ins if v is not None]
                if any(p is None or len(p) != r for p in parts):
                    return None
                k = a["axis"] % r
                if not all(isinstance(p[k], int) for p in parts):
                    return None
                out = list(e)
                out[k] = sum(p[k] for p in parts)
                return out
            if op == "Reshape":
                tgt, _ = self.entries(ins[1])
                if tgt is None or any(v is None for v in tgt):
                    return None
                out = [e[j] if isinstance(v, int) and v == 0 and not a.get("allowzero", 0)
                       and j < r else v for j, v in enumerate(tgt)]
                if any(isinstance(v, int) and v < 0 for v in out):
                    known = [v for v in e if isinstance(v, int)]
                    if len(known) != r or sum(1 for v in out if v == -1) != 1 or \
                            any(not isinstance(v, int) for v in out):
                        return None
                    rest = int(np.prod([v for v in out if v != -1]))
                    total = int(np.prod(known))
                    if rest <= 0 or total % rest:
                        return None
                    out = [total // rest if v == -1 else v for v in out]
                return out
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        return None

    def final_state(self, node, ins):
        """h_n[-1] of a one-direction last layer (Gather -1 of Y_h, or of the Concat of every
        layer's Y_h), cat((h_n[-2], h_n[-1]), 1) of a bidirectional one: pool final_state.
        None where NODE is not one of those steps."""
        op, a = node.op_type, _attrs(node)
        last = [(self.rec_stage, d) for d in range(self.rec_nd)] if \
            getattr(self, "rec_stage", None) else []
        if op == "Concat" and a.get("axis") == 0 and all(
                v is not None and v.kind == STATE and v.rows for v in ins):
            return Val(STATE, origin=ins[0].origin, rows=[r for v in ins for r in v.rows])
        if op == "Slice" and ins[0].rows and self.opset < 10 and a.get("axes") == [0]:
            s, e = a["starts"][0], a["ends"][0]     # opset 9's h_n[-1]: Slice -1:, Squeeze
            rows = ins[0].rows[s:e if e < 2 ** 31 - 1 else None]
            return Val(STATE, origin=ins[0].origin, rows=rows, sliced=True) if rows else None
        one = None
        if op == "Gather" and a.get("axis", 0) == 0 and ins[0].rows and ins[1] is not None \
                and ins[1].kind == CONST and np.asarray(ins[1].value).ndim == 0:
            one = ins[0].rows[int(ins[1].value) % len(ins[0].rows)]
        if op == "Squeeze" and len(ins[0].rows) == 1 and \
                (self.data_axes(node, a, ins, 1) or [0]) == [0]:
            # h_n[-1] sliced at opset 9, or h.squeeze(0) of a one-direction layer's Y_h
            # (the torch door takes it too: user finding U2)
            one = ins[0].rows[0]
        if op == "Reshape" and len(ins[0].rows) == 1 and self.rec_nd == 1 and \
                self.one_row_reshape(ins[1]):
            # h.view(-1, H), h.view(x.size(0), -1) of a one-layer, one-direction Y_h
            # [1, B, H]: its one row, as the torch door reads it (user finding U4)
            one = ins[0].rows[0]
        if one is not None:
            row = one
            if row not in last:
                return None
            if self.rec_nd == 1:
                return self.final_data()
            return Val(STATE, origin=ins[0].origin, rows=[row], sel=True)
        if op == "Concat" and a.get("axis") in (1, -1) and len(ins) == 2 and all(
                v is not None and v.kind == STATE and getattr(v, "sel", False) for v in ins) \
                and [v.rows[0] for v in ins] == last:
            return self.final_data()
        return None

    def one_row_reshape(self, target):
        """Whether TARGET, a Reshape's shape, makes [batch, hidden] of one row of Y_h
        ([1, batch, hidden]): [-1, H], or [batch, -1] / [batch, H] with the batch taken from
        the data's shape. [0, -1] copies the row axis, 1, and is not it."""
        if target is None:
            return False
        ent, _ = self.entries(target)
        H = getattr(self.rec_atoms[1], "size", None)
        if ent is None or len(ent) != 2 or H is None:
            return False
        first, second = ent

        def is_int(e, v):
            return isinstance(e, (int, np.integer)) and int(e) == v
        if is_int(first, -1):
            return is_int(second, H)
        batch = first is self.batch or (isinstance(first, tuple) and first == (self.batch,))
        return batch and (is_int(second, -1) or is_int(second, H))

    def final_data(self):
        dat, hat = self.rec_atoms
        return Val(DATA, axes=[(self.batch,), (dat, hat)], stage=self.rec_stage,
                   feat=nonunit((dat, hat)), pooled="final_state")

    def visit_state(self, node, ins):
        op = node.op_type
        if any(v is not None and v.rows for v in ins):
            v = self.final_state(node, ins)
            if v is not None:
                return [v]
        src = next(v.origin for v in ins if v is not None and v.kind == STATE)
        if op in LAYOUT_OPS + ("Slice", "Gather", "Concat"):
            return [Val(STATE, origin=src)]
        self.fail("computes on the final state of %s; rnnd serves the per-step output Y, or "
                  "pools the last layer's final state only as h_n[-1] (Gather -1 of Y_h) or, "
                  "bidirectional, cat((h_n[-2], h_n[-1]), 1)" % src)

    # ---- the data path ------------------------------------------------------------------
    def visit_data(self, node, ins):
        op = node.op_type
        if op in RECURRENT:
            return self.recurrent(node, ins)
        d = [v for v in ins if v is not None and v.kind == DATA]
        if len(d) > 1 and op == "MatMul":
            self.fail("multiplies the data by the data (torch.bmm / matmul of the outputs "
                      "over the time axis, as y @ y.transpose(1, 2) or weights @ y); %s"
                      % ATTENTION)
        if len(d) > 1 and op == "Mul" and self.silu(node):
            self.fail("x * sigmoid(x), a SiLU (swish) activation (nn.SiLU, F.silu): not "
                      "supported: rnnd's head activations are ReLU, Tanh, Sigmoid and GELU, "
                      "between the head's Linear and LayerNorm layers after the recurrent "
                      "layers; use one of those, and export again")
        if len(d) > 1:
            self.fail("combines the data with itself (a branch or residual connection); "
                      "rnnd runs one chain of layers")
        x = ins[0]
        if op == "Cast":
            self.data_cast(node, x)
        if op in ("Identity", "Dropout", "Cast"):
            if op == "Dropout" and self.opset < 12 and self.proto.producer_name == "pytorch":
                # before opset 12 a Dropout has no training flag, but torch.onnx.export
                # leaves out every dropout that is off: this one PyTorch applies in eval()
                self.fail("dropout that PyTorch applies even after model.eval() (torch's "
                          "exporter leaves out dropout that is off, so this one is on: "
                          "F.dropout(y, p) without training=self.training); write "
                          "F.dropout(y, p, training=self.training) or nn.Dropout(p), and "
                          "export again")
            if op == "Dropout" and len(ins) > 2 and ins[2] is not None and (
                    ins[2].kind != CONST or bool(np.asarray(ins[2].value))):
                self.fail("dropout in training mode")
            return [x] + [Val(FILL) for _ in node.output[1:]]
        if op == "Shape":
            return self.visit_shape(node, ins)
        if x is None or x.kind != DATA:
            if op in ("Add", "Mul") and ins[1] is not None and ins[1].kind == DATA:
                ins = [ins[1], ins[0]]
                x = ins[0]
            elif op == "Sub" and ins[1] is not None and ins[1].kind == DATA:
                return [self.affine_op(node, ins[1], ins[0], "rsub")]
            elif op == "Gather" and ins[1] is not None and ins[1].kind == DATA:
                return [self.embedding(node, ins[0], ins[1])]
            else:
                self.fail("operator not supported by rnnd on the data path")
        a = _attrs(node)
        if op == "Transpose":
            perm = a.get("perm", list(range(len(x.axes)))[::-1])
            return [x.but(axes=[x.axes[p] for p in perm])]
        if op == "Squeeze":
            axes = self.data_axes(node, a, ins, 1)
            if axes is None:
                keep = [ax for ax in x.axes if axis_size(ax) != 1]
            else:
                rm = {k % len(x.axes) for k in axes}
                for k in rm:
                    if axis_size(x.axes[k]) != 1:
                        self.fail("squeezes axis %d, which is not known to be of size 1" % k)
                keep = [ax for k, ax in enumerate(x.axes) if k not in rm]
            return [x.but(axes=keep)]
        if op == "Unsqueeze":
            axes = self.data_axes(node, a, ins, 1)
            if axes is None:
                self.fail("Unsqueeze without axes")
            out = list(x.axes)
            r = len(out) + len(axes)
            for k in sorted(k % r for k in axes):
                out.insert(k, _unit())
            return [x.but(axes=out)]
        if op == "Flatten":
            k = self.flatten_axis(a, len(x.axes))
            return [x.but(axes=[_merge(x.axes[:k]), _merge(x.axes[k:])])]
        if op == "Reshape":
            tgt = ins[1]
            ent, _ = self.entries(tgt)
            if ent is None:
                self.fail("reshapes the data to a shape computed in a way rnnd cannot follow")
            return [x.but(axes=self.reshape(x.axes, ent, a.get("allowzero", 0)))]
        if op in ("MatMul", "Gemm", "Add", "Sub", "Mul", "Div"):
            other = ins[1] if len(ins) > 1 else None
            if other is None or other.kind != CONST:
                self.fail("the second operand is not a constant (only affine maps with "
                          "constant weights fold into rnnd's layers and head)")
            if op in ("Gemm", "MatMul"):
                x = self.layernorm_affine(x)
            if op == "Gemm":
                return [self.gemm(node, x, ins)]
            return [self.affine_op(node, x, other, op.lower())]
        if op in ("Softmax", "LogSoftmax"):
            return [self.softmax(node, x, a)]
        if op in HEAD_OPS:
            return [self.head_layer(node, x, ins, a)]
        if op.startswith("Reduce") and not self.model.layers and not x.tokens:
            self.fail("%s of the input, before the recurrent layers (a normalisation by the "
                      "data's own sum, mean or norm); %s" % (op, self.input_norm_advice(x)))
        if op in ("ReduceMean", "ReduceMax", "Gather", "Slice"):
            return [self.pool(node, op, x, ins, a)]
        if op in ("GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool",
                  "GlobalLpPool", "LpPool"):
            self.fail("%s, a pooling over the last axis (F.adaptive_avg_pool1d, avg_pool1d or "
                      "max_pool1d of y.transpose(1, 2): over the steps); rnnd pools the last "
                      "recurrent layer's output once, over the time axis, with mean or max "
                      "(y.mean(1), y.max(1).values) or takes the last step (y[:, -1]): "
                      "write one of those, and export again" % op)
        if op.startswith("Reduce"):
            self.fail("%s of the outputs; rnnd pools the last recurrent layer's output once, "
                      "over the time axis, with mean or max (ReduceMean / ReduceMax: y.mean(1), "
                      "y.max(1).values) or takes the last step (y[:, -1]): use one of those, "
                      "and export again" % op)
        self.fail("operator not supported by rnnd on the data path")

    def series(self, x):
        """Whether X is the univariate [batch, time] graph input (floats, one feature per
        step once an Unsqueeze adds it), with at most numbers folded into it so far."""
        inp = self.vals[self.input_name].axes
        return not x.tokens and x.stage == 0 and x.feat is None and self.in_feat is None and \
            not self.model.layers and len(inp) == 2 and len(x.axes) == 2 and \
            [id(a) for ax in x.axes for a in ax] == [id(a) for ax in inp for a in ax]

    def input_norm_advice(self, x):
        """What rnnd folds before the first recurrent layer, and what to do instead."""
        if self.series(x):
            return ("the input is a univariate series [batch, time], and rnnd folds only "
                    "numbers into it before its unsqueeze(-1): (x - c) / s with c and s "
                    "numbers (the training data's mean and std); normalise that way, or in "
                    "the client before the series reaches the model, and export again")
        return ("rnnd folds only a constant scale or offset into the first layer there (x * c, "
                "x / c, x + c, x - c with c a number or a per-feature constant: (x - mean) / "
                "std with the training data's mean and std); normalise that way, or in the "
                "client before the data reaches the model, and export again")

    def data_cast(self, node, x):
        """A Cast on the data path is the identity only when it changes no value: float data
        to float32 / float64, token ids to int32 / int64 (a vocabulary fits). Any other Cast
        (ids to uint8 wrap above 255, floats to an integer truncate) computes something."""
        import onnx
        to = _attrs(node).get("to")
        P = onnx.TensorProto
        ok = (P.INT32, P.INT64) if x.tokens else (P.FLOAT, P.DOUBLE)
        if to not in ok:
            name = P.DataType.Name(to) if to in P.DataType.values() else str(to)
            self.fail("casts the %s to %s, which can change their values (rnnd casts only "
                      "token ids to int32 / int64 and float data to float32 / float64): remove "
                      "the cast" % ("token ids" if x.tokens else "float data", name))

    def pool(self, node, op, x, ins, a):
        """The last recurrent layer's output pooled over its time axis: ReduceMean /
        ReduceMax, or the last step (Gather index -1, Slice -1:), before the head."""
        if x.stage != getattr(self, "rec_stage", None) or x.affine is not None or x.norm or \
                x.pooled or x.head:
            self.fail("%s over the data other than of the last recurrent layer's output "
                      "before the head; rnnd pools that once (last step, mean or max over "
                      "the time axis)" % op)
        time = [k for k, ax in enumerate(x.axes) if nonunit(ax) == (self.seq,)]
        if op.startswith("Reduce"):
            axes = self.data_axes(node, a, ins, 1)
            keep = a.get("keepdims", 1)
            if axes is None or len(axes) != 1 or [k % len(x.axes) for k in axes] != time:
                self.fail("%s over axes %s, not the time axis alone" % (op, axes))
            pooled = "mean" if op == "ReduceMean" else "max"
        elif op == "Gather":
            idx = ins[1]
            k = a.get("axis", 0) % len(x.axes)
            if idx is None or idx.kind != CONST or [k] != time or \
                    np.asarray(idx.value).size != 1 or int(np.asarray(idx.value).ravel()[0]) != -1:
                self.fail("selects steps or items of the data; rnnd takes only the last step "
                          "(index -1 of the time axis)")
            keep = np.asarray(idx.value).ndim == 1
            pooled = "last"
        else:
            if self.opset < 10:
                starts, ends, axes = a.get("starts"), a.get("ends"), a.get("axes")
                steps = None
            else:
                vals = [ins[i] if len(ins) > i else None for i in range(1, 5)]
                if any(v is not None and v.kind != CONST for v in vals):
                    self.fail("slices the data with bounds that are not constants")
                starts, ends, axes, steps = [None if v is None else
                                             [int(e) for e in np.asarray(v.value).ravel()]
                                             for v in vals]
            axes = axes if axes is not None else list(range(len(starts or [])))
            if starts != [-1] or not ends or ends[0] < 2 ** 31 - 1 or \
                    [k % len(x.axes) for k in axes] != time or steps not in (None, [1]):
                self.fail("slices the data; rnnd takes only the last step (a slice -1: of "
                          "the time axis)")
            keep, pooled = True, "last"
        out = [ax for k, ax in enumerate(x.axes) if k != time[0]] if not keep else \
            [(_unit() if k == time[0] else ax) for k, ax in enumerate(x.axes)]
        return x.but(axes=out, pooled=pooled)

    def flatten_axis(self, a, rank):
        """The axis of a Flatten (attributes A) of a rank-RANK input, 0..RANK: ONNX takes
        -RANK..RANK, a negative one counted from the end (axis + rank; issue 14, sixth
        round, L1)."""
        axis = int(a.get("axis", 1))
        if not -rank <= axis <= rank:
            self.fail("axis %d is out of range for a rank-%d input (ONNX: -%d..%d)"
                      % (axis, rank, rank, rank))
        return axis + rank if axis < 0 else axis

    def data_axes(self, node, a, ins, pos):
        if "axes" in a:
            return list(a["axes"])
        if len(ins) > pos and ins[pos] is not None:
            if ins[pos].kind != CONST:
                self.fail("axes are not a constant")
            return [int(k) for k in np.asarray(ins[pos].value).ravel()]
        return None

    def reshape(self, axes, target, allowzero):
        """Follow a Reshape of the data: each target entry takes a run of the input's atoms
        (so merged axes can be split again where the entries say where)."""
        flat, starts = [], []
        for ax in axes:
            starts.append(len(flat))
            flat.extend(ax)
        ent = []
        for j, e in enumerate(target):
            if isinstance(e, int) and e == 0 and not allowzero:
                if j >= len(axes):
                    self.fail("Reshape copies dimension %d of a rank-%d tensor" % (j, len(axes)))
                ent.append(("copy", j))
            elif e is None or (isinstance(e, int) and e < -1):
                self.fail("reshapes the data to a shape rnnd cannot follow")
            else:
                ent.append(e)
        if sum(1 for e in ent if isinstance(e, int) and e == -1) > 1:
            self.fail("Reshape with more than one -1")
        k = next((j for j, e in enumerate(ent) if isinstance(e, int) and e == -1), None)
        pre, suf = (ent, []) if k is None else (ent[:k], ent[k + 1:])
        out, i = [], 0
        for e in pre:
            n = self._run(flat, starts, axes, i, e, True)
            out.append(tuple(flat[i:i + n]) or _unit())
            i += n
        tail, r = [], len(flat)
        for e in reversed(suf):
            n = self._run(flat, starts, axes, r, e, False)
            tail.insert(0, tuple(flat[r - n:r]) or _unit())
            r -= n
        if r < i:
            self.fail("reshapes the data to a shape rnnd cannot follow")
        if k is None:
            if any(a.size != 1 for a in flat[i:r]):
                self.fail("reshapes the data to a shape rnnd cannot follow")
            return out + tail
        return out + [tuple(flat[i:r]) or _unit()] + tail

    def _run(self, flat, starts, axes, pos, e, fwd):
        """How many atoms target entry E takes from POS on (FWD) or back from POS."""
        seq = flat[pos:] if fwd else flat[:pos][::-1]
        bad = "reshapes the data to a shape rnnd cannot follow"
        if isinstance(e, tuple) and e and e[0] == "copy":
            j = e[1]
            if (pos != starts[j]) if fwd else (pos != starts[j] + len(axes[j])):
                self.fail(bad)
            return len(axes[j])
        if isinstance(e, tuple):            # an axis read back through Shape
            want = list(nonunit(e))
            if not fwd:
                want.reverse()
            if not want:
                return 1 if seq and seq[0].size == 1 else 0
            got = []
            for cnt, atom in enumerate(seq):
                if not atom.unit:
                    got.append(atom)
                    if got != want[:len(got)]:
                        break
                    if len(got) == len(want):
                        return cnt + 1
            self.fail(bad)
        if e == 1:
            return 1 if seq and seq[0].size == 1 else 0
        prod = 1
        for cnt, atom in enumerate(seq):
            if atom.size is None:
                break
            prod *= atom.size
            if prod == e:
                return cnt + 1
            if prod > e:
                break
        self.fail("%s (size %d)" % (bad, e))

    # ---- stages -------------------------------------------------------------------------
    def new_stage(self, x):
        if x.stage != self.stage:
            self.fail("reads an earlier stage of the data than the latest one (a branch); "
                      "rnnd runs one chain of layers")
        self.stage += 1
        return self.stage

    def feature_atoms(self, x, axis):
        """Check that AXIS of X holds exactly the data's features; bind the input's."""
        got = nonunit(x.axes[axis])
        if x.feat is None and self.in_feat is None and not x.tokens and x.stage == 0:
            if not got and self.scalar_steps(x, axis):
                self.in_feat = ()
            elif len(got) != 1 or got[0] in (self.seq, self.batch):
                self.fail("cannot tell which axis of the input holds its features (rnnd "
                          "reads [batch, time, features], or [batch, time] unsqueezed to "
                          "one feature per step)")
            else:
                self.in_feat = got[0:1]
        want = x.feat if x.feat is not None else self.in_feat
        if got != want:
            self.fail("the feature axis is not where this operator reads it (layout %s)"
                      % ([list(ax) for ax in x.axes],))
        return int(np.prod([a.size for a in want])) if all(a.size for a in want) else None

    def scalar_steps(self, x, axis):
        """Whether X, read with its features on AXIS (of size 1: an Unsqueeze added it), is
        a graph input of rank 2 ([batch, time] of floats, a univariate series,
        x.unsqueeze(-1) in forward()) whose two axes are X's others: one feature per step."""
        inp = self.vals[self.input_name].axes
        if len(inp) != 2 or axis_size(x.axes[axis]) != 1:
            return False
        rest = [a for k, ax in enumerate(x.axes) if k != axis for a in nonunit(ax)]
        return len(rest) == 2 and set(map(id, rest)) == {id(ax[0]) for ax in inp}

    def embedding(self, node, table, ids):
        a = _attrs(node)
        if table.kind != CONST or np.asarray(table.value).ndim != 2 or a.get("axis", 0) != 0:
            self.fail("only an embedding lookup (Gather of a constant 2-D table, axis 0) may "
                      "read the token ids")
        if not ids.tokens or ids.stage != 0:
            self.fail("a table lookup on data that is not the input's token ids")
        self.new_stage(ids)
        emb = np.asarray(table.value)
        self.warn_max_norm(node, emb)
        self.model.embedding = f32(emb)
        self.model.vocab_size, self.model.input_dim = int(emb.shape[0]), int(emb.shape[1])
        e = Atom("embedding", int(emb.shape[1]))
        return Val(DATA, axes=list(ids.axes) + [(e,)], stage=self.stage, feat=(e,))

    def warn_max_norm(self, node, emb):
        """Warn on stderr when MAX_NORM_ROWS or more rows of the table EMB share one norm,
        the largest: rows renormalised in place by nn.Embedding(max_norm=...), which the
        export writes as a plain Gather (user finding U1; docs/convert.md "ONNX"). Random
        or trained rows have no two norms alike to 1e-5."""
        if emb.ndim != 2 or not emb.size:
            return
        norms = np.linalg.norm(emb.astype(np.float64), axis=1)
        top = float(norms.max())
        n = int(np.sum(np.abs(norms - top) <= 1e-5 * top)) if top > 0 else 0
        if n < MAX_NORM_ROWS:
            return
        import sys
        sys.stderr.write(
            "rnnd-convert: warning: %s: %d rows of the embedding table '%s' have the same norm "
            "%.6g, the largest of any row, as rows renormalised by nn.Embedding(max_norm=%.6g) "
            "have (renormalised in place where the module ran): the graph cannot tell, and "
            "the converted model uses the table as it is, where the PyTorch module "
            "renormalises every row it looks up that is longer than max_norm; if the module "
            "has max_norm, "
            "renormalise its weight once and set max_norm = None before exporting\n"
            % (printable(self.label(node)), n, printable(node.input[0]), top, top))

    def _affine_start(self, x):
        if x.tokens:
            self.fail("arithmetic on token ids")
        if x.norm:
            self.fail("an affine map after %s; rnnd's head normalises last" % x.norm)
        n = self.feature_atoms(x, len(x.axes) - 1)
        if n is None:
            self.fail("the feature size is unknown")
        if x.affine is None:
            return np.eye(n), np.zeros(n), n
        A, b = x.affine
        return A, b, n

    def _feature_vector(self, c, n, rank):
        c = np.asarray(c, dtype=np.float64)
        if c.ndim > rank or any(s != 1 for s in c.shape[:-1]) or (
                c.ndim and c.shape[-1] not in (1, n)):
            self.fail("the constant operand (shape %s) does not act on the features alone"
                      % list(c.shape))
        return np.broadcast_to(c.reshape(-1) if c.ndim else c, (n,)).astype(np.float64)

    def affine_op(self, node, x, other, op):
        c = np.asarray(other.value, dtype=np.float64)
        if self.series(x):
            # (x - mu) / sd of a [batch, time] series before its unsqueeze(-1): numbers on
            # its one feature, folded into the first layer as any input map (user trial 6)
            if op == "matmul" or c.size != 1:
                self.fail("%s of the input by a constant of shape %s; %s"
                          % (node.op_type, list(c.shape), self.input_norm_advice(x)))
            A, b = x.affine if x.affine is not None else (np.eye(1), np.zeros(1))
            A, b = self._affine_apply(A, b, c.reshape(1), op)
            return x.but(affine=(A, b))
        A, b, n = self._affine_start(x)
        if op == "matmul":
            if c.ndim != 2 or c.shape[0] != n:
                self.fail("MatMul weight of shape %s does not take %d features"
                          % (list(c.shape), n))
            x = self._dense_prefix(x)
            A, b = c.T @ A, c.T @ b
        else:
            A, b = self._affine_apply(A, b, self._feature_vector(c, n, len(x.axes)), op)
        return self._affine_out(x, A, b)

    def _dense_prefix(self, x):
        """X, recording its pending per-feature map as the prefix of the dense map that
        follows: the data's centre -b / a for the first layer's fold check (s2b)."""
        if x.prefix is not None or x.affine is None:
            return x
        A, b = x.affine
        if A.shape[0] != A.shape[1] or np.any(A - np.diag(np.diag(A))):
            return x
        return x.but(prefix=(np.diag(A).copy(), np.asarray(b, np.float64).copy()))

    def _affine_apply(self, A, b, v, op):
        """(A, b) followed by OP ("add", "sub", "rsub", "mul", "div") with the vector V."""
        if op == "add":
            b = b + v
        elif op == "sub":
            b = b - v
        elif op == "rsub":
            A, b = -A, v - b
        elif op == "mul":
            A, b = v[:, None] * A, v * b
        elif op == "div":
            if np.any(v == 0):
                self.fail("division by zero")
            A, b = A / v[:, None], b / v
        return A, b

    def gemm(self, node, x, ins):
        a = _attrs(node)
        if len(x.axes) != 2 or a.get("transA", 0):
            self.fail("Gemm on the data needs a 2-D [rows, features] input without transA")
        A, b, n = self._affine_start(x)
        x = self._dense_prefix(x)
        B = np.asarray(ins[1].value, dtype=np.float64)
        if a.get("transB", 0):
            B = B.T
        if B.ndim != 2 or B.shape[0] != n:
            self.fail("Gemm weight of shape %s does not take %d features" % (list(B.shape), n))
        alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
        A, b = alpha * (B.T @ A), alpha * (B.T @ b)
        if len(ins) > 2 and ins[2] is not None:
            if ins[2].kind != CONST:
                self.fail("Gemm bias is not a constant")
            b = b + beta * self._feature_vector(ins[2].value, B.shape[1], 2)
        return self._affine_out(x, A, b)

    def _affine_out(self, x, A, b):
        st = self.new_stage(x)
        o = Atom("affine%d" % st, int(A.shape[0]))
        return x.but(axes=list(x.axes[:-1]) + [(o,)], stage=st, feat=(o,), affine=(A, b))

    def head_layer(self, node, x, ins, a):
        """An activation or a LayerNorm: a head layer (docs/model-format.md, "The head"),
        after the last recurrent layer; a pending affine map before it becomes a linear."""
        op = node.op_type
        if x.tokens or not self.model.layers:
            if op == "LayerNormalization":
                self.fail("LayerNormalization on the input, before the recurrent layers: the "
                          "rnnd format has a LayerNorm only after the recurrent layers (after "
                          "any pooling, between head layers); remove it from forward() "
                          "(normalise the data in the client instead) or move it after the "
                          "recurrent layers, and export again")
            self.fail("%s before the recurrent layers; rnnd's head comes after them: move it "
                      "there or remove it, and export again" % op)
        if x.norm:
            self.fail("%s after %s; rnnd's head normalises last" % (op, x.norm))
        n = self.feature_atoms(x, len(x.axes) - 1)
        if n is None:
            self.fail("the feature size is unknown")
        head = list(x.head or [])
        if x.affine is not None:
            self._flush_affine(head, x.affine)
        if op == "LayerNormalization":
            if a.get("axis", -1) % len(x.axes) != len(x.axes) - 1:
                self.fail("LayerNormalization over axis %s, not the features alone"
                          % a.get("axis"))
            layer = {"op": "layernorm", "eps": float(a.get("epsilon", 1e-5)), "affine": False}
            scale = self.const_input(ins, 1, "Scale", required=False)
            bias = self.const_input(ins, 2, "B", required=False)
            if scale is not None:
                layer.update(affine=True, W=f32(self._feature_vector(scale, n, 1)),
                             b=f32(self._feature_vector(bias, n, 1)) if bias is not None
                             else np.zeros(n, np.float32))
            elif bias is not None:
                self.fail("LayerNormalization with a bias but no scale")
        elif op == "Gelu":
            approx = a.get("approximate", "none")
            if isinstance(approx, bytes):
                approx = approx.decode()
            if approx not in ("none", "tanh"):
                self.fail("Gelu approximate=%r" % approx)
            layer = {"op": "gelu" if approx == "none" else "gelu_tanh"}
        else:
            layer = {"op": HEAD_OPS[op]}
        head.append(layer)
        st = self.new_stage(x)
        return x.but(stage=st, affine=None, prefix=None, head=head)

    def layernorm_affine(self, x):
        """X with a pending diagonal affine map (the Mul and Add torch exports after a
        LayerNorm before opset 17, its weight and bias) moved into the layernorm it follows,
        before a MatMul / Gemm composes with it: the model is then the one opset 17's
        LayerNormalization gives, the same weights and parameter count (user finding U6)."""
        head = list(x.head or [])
        last = head[-1] if head else None
        if x.affine is None or last is None or last["op"] != "layernorm" or last["affine"]:
            return x
        A, b = x.affine
        if A.shape[0] != A.shape[1] or np.any(A - np.diag(np.diag(A))):
            return x
        head[-1] = dict(last, affine=True, W=f32(np.diag(A)), b=f32(b))
        return x.but(affine=None, prefix=None, head=head)

    def _flush_affine(self, head, affine):
        """Append the affine map (A, b) to HEAD: into a layernorm just before it when A is
        diagonal (the decomposed LayerNorm's own weight and bias), else as a linear."""
        A, b = affine
        last = head[-1] if head else None
        diag = A.shape[0] == A.shape[1] and not np.any(A - np.diag(np.diag(A)))
        if last is not None and last["op"] == "layernorm" and not last["affine"] and diag:
            last.update(affine=True, W=f32(np.diag(A)), b=f32(b))
        else:
            head.append({"op": "linear", "W": f32(A), "b": f32(b)})

    def softmax(self, node, x, a):
        if x.tokens or x.norm:
            self.fail("a second normalisation" if x.norm else "softmax of token ids")
        r = len(x.axes)
        if self.opset >= 13:
            k = a.get("axis", -1) % r
            covered = [k]
        else:
            k = a.get("axis", 1) % r
            covered = list(range(k, r))
        atoms = nonunit(_merge([x.axes[i] for i in covered]))
        want = x.feat if x.feat is not None else self.in_feat
        if self.seq is not None and self.seq in atoms:
            self.fail("a softmax over the time axis (axis %d): attention weights over the "
                      "steps, as softmax(score(y), dim=1); %s" % (k, ATTENTION))
        if atoms != want:
            self.fail("normalises over axis %d, which is not the feature axis" % k)
        st = self.new_stage(x)
        return x.but(stage=st, norm="softmax" if node.op_type == "Softmax" else "log_softmax")

    # ---- recurrent nodes ----------------------------------------------------------------
    def const_input(self, ins, k, what, required=True):
        v = ins[k] if len(ins) > k else None
        if v is None:
            if required:
                self.fail("input %s is missing" % what)
            return None
        if v.kind == EXTRA:
            self.fail("%s comes from graph input '%s'; weights must be initializers or "
                      "constants" % (what, v.origin))
        if v.kind != CONST:
            self.fail("%s is not a constant (initializer or Constant node)" % what)
        return np.asarray(v.value, dtype=np.float64)

    def zero_input(self, ins, k, what, nd, H, layout):
        v = ins[k] if len(ins) > k else None
        if v is None:
            return
        if v.kind == ZERO or (v.kind == CONST and not np.any(v.value)):
            self.zero_shape(v, what, nd, H, layout)
            return
        if v.kind == EXTRA and what in ("initial_h", "initial_c"):
            # the graph's state input is rnnd's initial state: zeros, or a session's state
            onnx_state.claim(self, v, what, nd, layout)
            self.state_inputs.add(v.origin)
            return
        if v.kind == EXTRA:
            self.fail("%s comes from graph input '%s'; rnnd takes each sequence whole"
                      % (what, v.origin))
        if v.kind == STATE:
            self.fail("%s is the final state of %s (an encoder-decoder); rnnd starts from "
                      "zeros" % (what, v.origin))
        self.fail("%s is not zero: %s" % (what, LEARNED_STATE))

    def zero_shape(self, v, what, nd, H, layout):
        """Refuse a zero initial state whose shape is not the node's [directions, batch,
        hidden_size] ([batch, directions, hidden_size] for layout 1): ONNX Runtime refuses
        such a graph, and the shape must be known to bound what verification makes. A batch
        of 1 broadcasts (a constant zero state, or an export at batch 1)."""
        want = [nd, "batch", H] if layout == 0 else ["batch", nd, H]
        ent = list(np.shape(v.value)) if v.kind == CONST else getattr(v, "entries", None)

        def show(entries):
            out = []
            for e in entries:
                if isinstance(e, (int, np.integer)):
                    out.append(str(int(e)))
                elif isinstance(e, tuple):
                    n = nonunit(e)
                    out.append("batch" if n == (self.batch,) else "time" if n == (self.seq,)
                               else "x".join(a.name for a in n) or "1")
                else:
                    out.append(str(e))
            return "[%s]" % ", ".join(out)
        takes = "this node takes %s ([%s, hidden_size])" % (
            show(want), "directions, batch" if layout == 0 else "batch, directions")
        if ent is None or any(e is None for e in ent):
            self.fail("%s is zeros of a shape computed in a way rnnd-convert cannot follow; "
                      "%s" % (what, takes))
        ok = len(ent) == 3
        for e, w in zip(ent, want):
            if w == "batch":
                if isinstance(e, tuple):
                    ok = ok and nonunit(e) == (self.batch,)
                else:
                    ok = ok and int(e) in (1, self.batch.size)
            else:
                ok = ok and isinstance(e, (int, np.integer)) and int(e) == w
        if not ok:
            self.fail("%s is zeros of shape %s, but %s: the source graph cannot run"
                      % (what, show(ent), takes))

    def recurrent(self, node, ins):
        kind, G = RECURRENT[node.op_type]
        a = _attrs(node)
        for k in a:
            if k not in RECURRENT_ATTRS or (k == "input_forget" and kind != "lstm") or (
                    k == "linear_before_reset" and kind != "gru"):
                self.fail("attribute '%s' is not supported" % k)
        x = ins[0] if ins else None
        if x is None or x.kind != DATA:
            self.fail("input X is not the data path from the graph input")
        if x.tokens:
            self.fail("reads token ids directly; an embedding (Gather) must come first")
        if x.norm:
            self.fail("reads the output of a %s; rnnd cannot normalise between layers" % x.norm)
        if x.pooled:
            self.fail("reads the steps pooled (%s); rnnd pools after the last layer" % x.pooled)
        if x.head:
            self.fail("reads the output of head layers (%s); rnnd runs its head after the last "
                      "recurrent layer" % ", ".join(h["op"] for h in x.head))
        seqlen = ins[4] if len(ins) > 4 else None
        if seqlen is not None:
            if seqlen.kind == EXTRA:
                self.fail("sequence_lens comes from graph input '%s'; rnnd takes each sequence "
                          "whole, so sequence_lens must be absent" % seqlen.origin)
            if seqlen.kind in (SHAPE, ZERO, FILL):
                self.fail("sequence_lens is computed from the input's shape (as the sequence "
                          "lengths of pack_padded_sequence export); rnnd runs every sequence "
                          "at its own length, unpadded: call the recurrent module without "
                          "pack_padded_sequence / pad_packed_sequence")
            self.fail("sequence_lens is given; rnnd takes each sequence whole, so it must be "
                      "absent")
        direction = a.get("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            self.fail("unknown direction '%s'" % direction)
        nd = 2 if direction == "bidirectional" else 1
        layout = a.get("layout", 0)
        if layout not in (0, 1):
            self.fail("unknown layout %r" % layout)
        if len(x.axes) != 3:
            self.fail("X has rank %d, expected 3" % len(x.axes))
        sa, ba = (0, 1) if layout == 0 else (1, 0)
        for ax, role in ((sa, "seq"), (ba, "batch")):
            atoms = nonunit(x.axes[ax])
            bound = getattr(self, role)
            if len(atoms) != 1 or (bound is not None and atoms[0] is not bound):
                self.fail("X's %s axis is not the input's %s axis (layout %s)"
                          % ("time" if role == "seq" else "batch",
                             "time" if role == "seq" else "batch",
                             [list(a_) for a_ in x.axes]))
            setattr(self, role, atoms[0])
        if self.seq is self.batch:
            self.fail("X's time and batch axes are the same")
        W = self.const_input(ins, 1, "W")
        R = self.const_input(ins, 2, "R")
        B = self.const_input(ins, 3, "B", required=False)
        P = None
        if kind == "lstm":
            P = self.const_input(ins, 7, "P", required=False)
        if W.ndim != 3 or R.ndim != 3:
            self.fail("W and R must be 3-D, got %s and %s" % (list(W.shape), list(R.shape)))
        H = int(a.get("hidden_size", R.shape[2]))
        I = W.shape[2]
        want = {"W": (nd, G * H, I), "R": (nd, G * H, H)}
        if B is not None:
            want["B"] = (nd, 2 * G * H)
        if P is not None:
            want["P"] = (nd, 3 * H)
        for nm, arr in (("W", W), ("R", R), ("B", B), ("P", P)):
            if arr is not None and tuple(arr.shape) != want[nm]:
                self.fail("%s has shape %s, expected %s (direction %s, hidden_size %d)"
                          % (nm, list(arr.shape), list(want[nm]), direction, H))
        self.zero_input(ins, 5, "initial_h", nd, H, layout)
        if kind == "lstm":
            self.zero_input(ins, 6, "initial_c", nd, H, layout)
        nfeat = self.feature_atoms(x, 2)
        first = not self.model.layers
        A = b = None
        if x.affine is not None:
            A, b = x.affine
        if nfeat is not None and nfeat != I:
            self.fail("W takes %d inputs but X has %d features" % (I, nfeat))
        if first and self.model.input_kind == "vectors":
            self.model.input_dim = int(I if A is None else A.shape[1])
            n_in = axis_size(self.in_feat) if self.in_feat is not None else None
            if n_in not in (None, self.model.input_dim):
                self.fail("W takes %d inputs but the graph input has %d features"
                          % (self.model.input_dim, n_in))

        L = Layer(kind, H, direction)
        L.activations = self.activations(kind, a, nd)
        if "clip" in a:
            if not a["clip"] > 0:
                self.fail("clip must be positive, got %r" % a["clip"])
            L.clip = float(a["clip"])
        if kind == "lstm":
            L.input_forget = bool(a.get("input_forget", 0))
            L.peepholes = P is not None and bool(np.any(P))
        if kind == "gru":
            L.linear_before_reset = int(a.get("linear_before_reset", 0))
            if L.linear_before_reset not in (0, 1):
                self.fail("linear_before_reset must be 0 or 1")
        if A is not None and first and self.model.input_kind == "vectors" and \
                A.shape[0] == A.shape[1] and not np.any(A - np.diag(np.diag(A))):
            # a per-feature (x - mu) / sd: refused where the fold loses float32 precision,
            # and verification also runs inputs around mu (outside trial 20, S2)
            try:
                check_input_fold([{"W": W[d]} for d in range(nd)], np.diag(A), b)
            except ConvertError as e:
                self.fail(str(e))
            self.model.input_map = (np.diag(A).copy(), np.asarray(b, np.float64))
        elif A is not None and first and self.model.input_kind == "vectors":
            # a dense map: checked at the data's centre, mu of a (x - mu) / sd that starts
            # it, else the least-squares zero of A x + b (outside trial 21, s2b)
            try:
                centre = check_dense_input_fold([{"W": W[d]} for d in range(nd)], A, b,
                                                x.prefix)
            except ConvertError as e:
                self.fail(str(e))
            if centre is not None:
                self.model.input_centre = centre
        for d in range(nd):
            w = {"W": W[d], "R": R[d]}
            if B is not None:
                w["Wb"], w["Rb"] = B[d, :G * H], B[d, G * H:]
            else:
                w["Wb"], w["Rb"] = np.zeros(G * H), np.zeros(G * H)
            if A is not None:
                if first and self.model.input_kind == "tokens":
                    pass            # folded into the embedding below
                else:
                    w["Wb"] = w["Wb"] + w["W"] @ b
                    w["W"] = w["W"] @ A
            if L.peepholes:
                w["P"] = P[d]
            L.weights.append({k: f32(v) for k, v in w.items()})
        if A is not None and first and self.model.input_kind == "tokens":
            emb = self.model.embedding.astype(np.float64) @ A.T + b
            self.model.embedding = f32(emb)
            self.model.input_dim = int(A.shape[0])
        fill_biases(L)
        self.model.layers.append(L)
        st = self.new_stage(x)
        dat = Atom("dir%d" % st, nd, unit=(nd == 1))
        hat = Atom("hidden%d" % st, H)
        axes = [None, None, (dat,), (hat,)]
        if layout == 0:
            axes[0], axes[2], axes[1] = x.axes[0], x.axes[1], (dat,)
        else:
            axes[0], axes[1] = x.axes[0], x.axes[1]
        feat = nonunit((dat, hat))
        y = Val(DATA, axes=axes, stage=st, feat=feat)
        self.rec_stage, self.rec_nd, self.rec_atoms = st, nd, (dat, hat)
        src = self.label()
        states = [Val(STATE, origin=src) for _ in node.output[1:]]
        if states:
            states[0].rows = [(st, d) for d in range(nd)]   # Y_h: h_n of this layer
        return [y] + states

    def activations(self, kind, a, nd):
        n = N_ACT[kind]
        names = a.get("activations")
        if names is None:
            names = DEFAULT_ACTS[kind]
        if isinstance(names, str):
            names = [names]
        if kind == "rnn" and nd == 1 and len(names) == 2:
            names = names[:1]       # ONNX's RNN default lists Tanh twice; ONNX Runtime too
        if len(names) not in (n, n * nd):
            self.fail("%d activations given; a %s takes %d per direction"
                      % (len(names), kind, n))
        alphas = list(a.get("activation_alpha", []))
        betas = list(a.get("activation_beta", []))
        resolved = []
        for nm in names:
            op = canonical_activation(nm)
            if op is None:
                self.fail("unknown activation '%s'" % nm)
            from .arch import ACTIVATIONS
            takes_a, takes_b = ACTIVATIONS[op][:2]
            # ONNX Runtime: the lists are consumed in order by the activations that take them
            al = alphas.pop(0) if takes_a and alphas else None
            be = betas.pop(0) if takes_b and betas else None
            self.explicit_params(op, al, be, takes_a, takes_b)
            resolved.append(make_act(op, al, be))
        if len(resolved) == n and nd == 2:
            resolved = resolved + [dict(r) for r in resolved]
        return [resolved[d * n:(d + 1) * n] for d in range(nd)]

    def explicit_params(self, op, alpha, beta, takes_a, takes_b):
        """Refuse ThresholdedRelu / ScaledTanh / Affine without their parameters: ONNX Runtime
        takes 0 where the lists run out, rnnd the defaults of docs/model-format.md (1, ...),
        and the ONNX specification names none (docs/convert.md "ONNX")."""
        if op not in ("ThresholdedRelu", "ScaledTanh", "Affine"):
            return
        for name, v, takes in (("activation_alpha", alpha, takes_a),
                               ("activation_beta", beta, takes_b)):
            if takes and v is None:
                self.fail("%s without a value in %s: give %s explicitly: ONNX Runtime and "
                          "the spec disagree on its default" % (op, name, name))

    # ---- the end ------------------------------------------------------------------------
    def finish(self):
        outs = [(o.name, self.vals.get(o.name)) for o in self.graph.output]
        data = [(n, v) for n, v in outs if v is not None and v.kind == DATA]
        if not self.model.layers:
            raise ConvertError("no recurrent node (LSTM, GRU or RNN) on the path from the "
                               "graph input to its output")
        main = [(n, v) for n, v in data if v.stage == self.stage]
        if not main:
            states = [n for n, v in outs if v is not None and v.kind == STATE]
            if states:
                raise ConvertError("graph output '%s' is a final state; rnnd serves the "
                                   "per-step output Y of the last layer" % states[0])
            raise ConvertError("no graph output carries the result of the last stage of the "
                               "data path")
        name, y = main[0]
        self.out_name, self.out_axes = name, y.axes     # for onnx_run (the check)
        present = set()
        for ax in y.axes:
            present.update(nonunit(ax))
        self.pooled = y.pooled
        for atom, role in ((self.seq, "time"), (self.batch, "batch")):
            if atom is self.seq and y.pooled:
                continue        # pooled: one row per sequence
            if atom not in present:
                raise ConvertError("graph output '%s' has no %s axis" % (name, role))
        self.check_output_order(name, y)
        onnx_state.check_complete(self)
        m = self.model
        if y.head:
            head = list(y.head)
            if y.affine is not None:
                self._flush_affine(head, y.affine)
            m.head_layers = head
            m.head_norm = y.norm or "none"
        elif y.affine is not None or y.norm:
            if y.affine is not None:
                A, b = y.affine
            else:
                n = m.layers[-1].out_dim * m.layers[-1].num_directions
                A, b = np.eye(n), np.zeros(n)
            m.head_W, m.head_b = f32(A), f32(b)
            m.head_norm = y.norm or "none"
        if y.pooled:
            m.pool = y.pooled
        return m


    def check_output_order(self, name, y):
        """Refuse an output whose steps and features are not in rnnd's order, time then the
        features as the last stage made them (the batch may be anywhere: rnnd answers per
        sequence): rnnd answers one row of features per step, so a Transpose of the output
        ([batch, classes, time] for CrossEntropyLoss) would change what it serves."""
        order = [a for ax in y.axes for a in nonunit(ax) if a is not self.batch]
        feat = list(y.feat) if y.feat is not None else list(self.in_feat or ())
        want = ([] if y.pooled else [self.seq]) + feat
        if order != want and order == want[:len(want) - len(feat)] and \
                axis_size(tuple(feat)) == 1:
            # one output per step squeezed away, fc(y).squeeze(-1) of [B, T, 1]: rnnd's
            # outputs of size 1 per step (user finding U3)
            return
        if order != want:
            def role(a):
                return "time" if a is self.seq else "features"
            raise ConvertError(
                "graph output '%s' puts its axes in the order %s (a Transpose or permute of "
                "the output, e.g. permute(0, 2, 1) for CrossEntropyLoss); rnnd answers one "
                "row of features per step, [time, features], so it cannot serve this layout: "
                "export the model without the permute (and transpose on the client)"
                % (name, "[%s]" % ", ".join(
                    "batch" if a is self.batch else role(a)
                    for ax in y.axes for a in nonunit(ax))))


HEAD_OPS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Gelu": "gelu",
            "LayerNormalization": "layernorm"}


def fuse_head_ops(g):
    """G's nodes with the decompositions torch exports for GELU (Div by sqrt 2, Erf, Add 1,
    Mul by the input, Mul by 0.5), for its tanh form (x x x, times 0.044715, plus x, times
    sqrt(2/pi), Tanh, plus 1, times x, times 0.5) and, before opset 17, for LayerNorm
    (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div) each replaced by one node
    (Gelu, LayerNormalization without scale) where every intermediate result is read by the
    pattern alone. onnx_run runs the graph as it is, node by node."""
    from onnx import helper
    nodes = list(g.node)
    consts = {t.name: _tensor(t) for t in g.initializer}
    for n in nodes:
        if n.op_type == "Constant":
            for at in n.attribute:
                if at.name == "value":
                    consts[n.output[0]] = _tensor(at.t)
    producer, readers = {}, {}
    for n in nodes:
        for o in n.output:
            producer[o] = n
        for i in n.input:
            readers.setdefault(i, []).append(n)
    for o in g.output:
        readers.setdefault(o.name, []).append(None)

    def const(name, want):
        v = consts.get(name)
        return v is not None and np.asarray(v).size == 1 and \
            abs(float(np.asarray(v).ravel()[0]) - want) <= 1e-6 * max(1.0, abs(want))

    def rounded(name, want):
        # a one-element float constant that is WANT rounded to its type (float32 or finer:
        # within one float32 spacing; float16 / bfloat16: within that type's)
        v = consts.get(name)
        if v is None or np.asarray(v).size != 1 or \
                not np.issubdtype(np.asarray(v).dtype, np.floating):
            return False
        v = np.asarray(v)
        tol = float(np.spacing(np.float32(want)))
        if v.dtype.itemsize < 4:
            tol = max(tol, float(np.spacing(np.asarray(want, v.dtype))))
        return abs(float(v.ravel()[0]) - want) <= tol

    def only(name, op):
        r = readers.get(name, [])
        return r[0] if len(r) == 1 and r[0] is not None and r[0].op_type == op else None

    def other(n, name):
        rest = [i for i in n.input if i != name]
        return rest[0] if len(rest) == 1 and len(n.input) == 2 else None

    def axes_last(n):
        for at in n.attribute:
            if at.name == "axes":
                return list(at.ints) == [-1]
        return len(n.input) > 1 and n.input[1] in consts and \
            [int(v) for v in np.asarray(consts[n.input[1]]).ravel()] == [-1]

    drop, put = set(), {}
    for e in nodes:
        if e.op_type != "Erf":
            continue
        d = producer.get(e.input[0])
        if d is None or d.op_type != "Div" or not const(d.input[1], 2 ** 0.5) or \
                only(d.output[0], "Erf") is not e:
            continue
        x = d.input[0]
        a = only(e.output[0], "Add")
        m1 = a and only(a.output[0], "Mul")
        m2 = m1 and only(m1.output[0], "Mul")
        if not (a and m1 and m2) or not const(other(a, e.output[0]), 1.0) or \
                other(m1, a.output[0]) != x or not const(other(m2, m1.output[0]), 0.5):
            continue
        drop.update(id(k) for k in (d, e, a, m1, m2))
        put[id(m2)] = helper.make_node("Gelu", [x], [m2.output[0]], name=e.name or "Gelu")
    for t in nodes:
        # tanh GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x x x)))
        if t.op_type != "Tanh":
            continue
        m3 = producer.get(t.input[0])
        if m3 is None or m3.op_type != "Mul" or only(m3.output[0], "Tanh") is not t:
            continue
        add0_name = [i for i in m3.input if not const(i, (2 / np.pi) ** 0.5)]
        if len(add0_name) != 1 or len(m3.input) != 2:
            continue
        add0 = producer.get(add0_name[0])
        if add0 is None or add0.op_type != "Add" or only(add0.output[0], "Mul") is not m3:
            continue
        chain = None
        for x in add0.input:
            m2 = producer.get(other(add0, x) or "")
            if m2 is None or m2.op_type != "Mul" or only(m2.output[0], "Add") is not add0 or \
                    len(m2.input) != 2:
                continue
            for j in (0, 1):
                # the cube on one side, the 0.044715 on the other (checked below)
                m1 = producer.get(m2.input[j])
                if m1 is None or m1.op_type != "Mul" or only(m1.output[0], "Mul") is not m2 \
                        or x not in m1.input:
                    continue
                sq = producer.get(other(m1, x) or "")
                if sq is None or sq.op_type != "Mul" or list(sq.input) != [x, x] or \
                        only(sq.output[0], "Mul") is not m1:
                    continue
                chain = (x, sq, m1, m2, m2.input[1 - j])
        if chain is None:
            continue
        x, sq, m1, m2, cube_k = chain
        a1 = only(t.output[0], "Add")
        m4 = a1 and only(a1.output[0], "Mul")
        m5 = m4 and only(m4.output[0], "Mul")
        if not (a1 and m4 and m5) or not const(other(a1, t.output[0]), 1.0) or \
                other(m4, a1.output[0]) != x or not const(other(m5, m4.output[0]), 0.5):
            continue
        if not rounded(cube_k, 0.044715):
            # every other operation of the tanh GELU is there: one that multiplies the cube
            # by another number is a function rnnd has no layer for, not a GELU to fuse
            # (issue 14, sixth round, H4)
            v = consts.get(cube_k)
            raise ConvertError(
                "node '%s' (Mul): multiplies x*x*x by %s in what is otherwise the tanh form "
                "of GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); rnnd's gelu_tanh "
                "computes with 0.044715 alone, so it cannot serve this function"
                % (m2.name or "#%d" % nodes.index(m2),
                   "%.9g" % float(np.asarray(v).ravel()[0])
                   if v is not None and np.asarray(v).size == 1
                   else "'%s', not a constant" % cube_k))
        drop.update(id(k) for k in (sq, m1, m2, add0, m3, t, a1, m4, m5))
        put[id(m5)] = helper.make_node("Gelu", [x], [m5.output[0]], name=t.name or "Gelu",
                                       approximate="tanh")
    for r1 in nodes:
        if r1.op_type != "ReduceMean" or not axes_last(r1):
            continue
        x = r1.input[0]
        sub = only(r1.output[0], "Sub")
        if sub is None or list(sub.input) != [x, r1.output[0]]:
            continue
        rs = readers.get(sub.output[0], [])
        pw = [k for k in rs if k is not None and k.op_type == "Pow"]
        dv = [k for k in rs if k is not None and k.op_type == "Div"]
        if len(rs) != 2 or len(pw) != 1 or len(dv) != 1 or not const(pw[0].input[1], 2.0):
            continue
        r2 = only(pw[0].output[0], "ReduceMean")
        ad = r2 and axes_last(r2) and only(r2.output[0], "Add")
        sq = ad and only(ad.output[0], "Sqrt")
        eps = ad and consts.get(other(ad, r2.output[0]))
        if not sq or eps is None or np.asarray(eps).size != 1 or \
                only(sq.output[0], "Div") is not dv[0] or \
                list(dv[0].input) != [sub.output[0], sq.output[0]]:
            continue
        drop.update(id(k) for k in (r1, sub, pw[0], r2, ad, sq, dv[0]))
        put[id(dv[0])] = helper.make_node(
            "LayerNormalization", [x], [dv[0].output[0]], name=r1.name or "LayerNorm",
            axis=-1, epsilon=float(np.asarray(eps).ravel()[0]))
    out = []
    for n in nodes:
        if id(n) in put:
            out.append(put[id(n)])
        elif id(n) not in drop:
            out.append(n)
    return out


def _live_nodes(nodes, outputs):
    """Indices of NODES (a graph's, in order) whose outputs the graph's OUTPUTS depend on."""
    need = {o.name for o in outputs}
    live = set()
    for k in range(len(nodes) - 1, -1, -1):
        n = nodes[k]
        if any(o and o in need for o in n.output):
            live.add(k)
            need.update(i for i in n.input if i)
    return live


def _last_reads(nodes, live, outputs):
    """{node index: [names it is the last live reader of]}, graph outputs left out."""
    keep = {o.name for o in outputs}
    last = {}
    for k in sorted(live):
        for i in nodes[k].input:
            if i and i not in keep:
                last[i] = k
    out = {}
    for name, k in last.items():
        out.setdefault(k, []).append(name)
    return out


def _fold_itemsize(op, a, vals):
    """Bytes per element of what folding OP makes: the fill's or the target type's, else the
    widest operand's."""
    if op == "Cast" and "to" in a:
        return np.dtype(_np_dtype(a["to"])).itemsize
    if op == "ConstantOfShape":
        return np.asarray(a.get("value", np.zeros(1, np.float32))).dtype.itemsize
    return max([np.asarray(v).dtype.itemsize for v in vals if v is not None] or [8])


def _size(shape):
    out = 1
    for d in shape:
        out *= max(int(d), 0)
    return out


def _fold_cost(op, a, vals):
    """(elements of the result, element operations) of folding OP: from the operands' shapes
    and the shapes they name, without computing it. Python ints: no overflow."""
    vs = [np.asarray(v) for v in vals if v is not None]
    size_in = sum(v.size for v in vs)
    if op == "ConstantOfShape":
        n = _size(vs[0].ravel())
        return n, n
    if op == "Expand":
        shape = np.broadcast_shapes(vs[0].shape, tuple(1 if int(d) < 1 else int(d)
                                                         for d in vs[1].ravel()))
        return _size(shape), _size(shape)
    if op == "Range":
        start, limit, delta = (float(v) for v in vs[:3])
        n = max(int(np.ceil((limit - start) / delta)), 0) if delta else 0
        return n, n
    if op == "MatMul":
        A, B = vs[0].shape or (1,), vs[1].shape or (1,)
        m = A[-2] if len(A) > 1 else 1
        n = B[-1] if len(B) > 1 else 1
        batch = _size(np.broadcast_shapes(A[:-2], B[:-2]))
        return batch * m * n, batch * m * n * A[-1]
    if op in ("Add", "Sub", "Mul", "Div", "Equal", "Pow", "Where"):
        n = _size(np.broadcast_shapes(*(v.shape for v in vs)))
        return n, n
    if op == "Gather":
        axis = a.get("axis", 0) % max(vs[0].ndim, 1)
        n = _size(vs[0].shape[:axis] + vs[1].shape + vs[0].shape[axis + 1:])
        return n, n
    return size_in, size_in


def _broadcast(a, b):
    """Numpy broadcasting of two shape-entry lists (int | axis | None each); None where
    either is unknown or the result cannot be told."""
    if a is None or b is None:
        return None
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + list(a)
    b = [1] * (n - len(b)) + list(b)
    out = []
    for x, y in zip(a, b):
        if x is None or y is None:
            return None
        if isinstance(x, (int, np.integer)) and int(x) == 1:
            out.append(y if not isinstance(y, (int, np.integer)) else int(y))
        elif isinstance(y, (int, np.integer)) and int(y) == 1:
            out.append(x if not isinstance(x, (int, np.integer)) else int(x))
        elif isinstance(x, (int, np.integer)) and isinstance(y, (int, np.integer)):
            if int(x) != int(y):
                return None
            out.append(int(x))
        elif isinstance(x, tuple) and isinstance(y, tuple) and nonunit(x) == nonunit(y):
            out.append(x)
        elif isinstance(x, tuple) != isinstance(y, tuple) and \
                axis_size(x if isinstance(x, tuple) else y) == int(
                    y if isinstance(x, tuple) else x):
            out.append(x if isinstance(x, tuple) else y)     # a fixed axis, baked in
        else:
            return None
    return out


def _merge(axes):
    out = ()
    for ax in axes:
        out = out + tuple(ax)
    return out if out else _unit()


def _spec_slice(start, end, step, dim):
    """The Python slice of one axis of size DIM that ONNX's Slice takes from START, END and
    STEP: negative bounds counted from the end, then clamped to [0, dim] (a positive step)
    or to [0, dim - 1] and [-1, dim - 1] (a negative one; end -1: through index 0). Python
    alone differs for a negative step whose start is below -dim: it takes nothing, ONNX
    starts at index 0 (issue 14, sixth round, L1). onnx_run.py has its own, as it follows
    the spec apart from this module."""
    start, end, step = int(start), int(end), int(step)
    if step == 0:
        raise ConvertError("Slice with a step of 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    end = min(max(end, -1), dim - 1)
    return slice(min(max(start, 0), dim - 1), None if end < 0 else end, step)


def load(path):
    proto = read(path)
    why = spec_error(proto)
    model = Importer(proto).run()
    if why is not None:
        # after the importer, whose refusals name the node and say what rnnd supports
        raise ConvertError(why)
    return model


def read(path):
    """The ModelProto at PATH, or ConvertError."""
    import warnings
    import onnx
    try:
        # protobuf warns on stderr about a file that is not one; the error below says it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = onnx.load(path, load_external_data=False)
    except FileNotFoundError:
        raise ConvertError("file not found")
    except Exception as e:
        raise ConvertError("not a readable ONNX model: %s" % (str(e).splitlines() or [e])[0])
    _load_external_data(proto, path)
    return proto


def spec_error(proto):
    """Why the ONNX specification rejects PROTO, or None (issue 14, fifth round, L1 / L2: an
    axis out of range, a float Gather index, weights of another type than X, an unknown
    opset): a conformant runtime does not run such a graph, so it has no computation to
    convert. Shapes are inferred strictly, with type checks, then the checker runs on the
    inferred model, where a graph output whose shape nothing tells (exporters leave some
    out; the checker wants one) is given an empty one: its shape is not what it checks."""
    import onnx
    known = onnx.defs.onnx_opset_version()
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > known:
            return ("not a valid ONNX model: opset %d is newer than any the installed onnx "
                    "package knows (%d), so the graph cannot be checked against the "
                    "specification: install a newer onnx, or export at opset %d or below"
                    % (imp.version, known, known))
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True,
                                                     strict_mode=True)
        for v in list(inferred.graph.input) + list(inferred.graph.output):
            t = v.type.tensor_type
            if v.type.HasField("tensor_type") and not t.HasField("shape"):
                t.shape.SetInParent()
        onnx.checker.check_model(inferred)
    except Exception as e:
        text = " ".join(str(e).split())
        return "not a valid ONNX model (onnx.checker): %s" % (text[:300] or type(e).__name__)
    return None


def _external_file(base, location):
    """The file an external-data LOCATION names, if it lies in directory BASE (a realpath)
    and no part of the path below BASE is a symlink; else None. A model read from someone
    else must not pull the converting user's other files into the weights."""
    import os
    if not location or os.path.isabs(location) or "\0" in location:
        return None
    target = os.path.normpath(os.path.join(base, location))
    if not target.startswith(base + os.sep) or os.path.realpath(target) != target:
        return None
    return target if os.path.isfile(target) else None


# External data is bounded like a native spec's .npz (native.MAX_NPZ_*): a few bytes of
# ONNX can point at a sparse file of any size, and what is read is held in memory twice over
# (the raw bytes, then the array).
MAX_EXTERNAL_TENSOR = 1 << 30
MAX_EXTERNAL_TOTAL = 4 << 30


def _declared_bytes(t):
    """The bytes tensor T's dims and data_type take, or a reason (str) it has none."""
    from onnx import TensorProto
    if t.data_type in (TensorProto.UNDEFINED, TensorProto.STRING):
        return "its data_type %s cannot be stored as raw bytes" % (
            TensorProto.DataType.Name(t.data_type) if t.data_type in
            TensorProto.DataType.values() else t.data_type)
    try:
        itemsize = np.dtype(_np_dtype(t.data_type)).itemsize
    except Exception:
        return "unknown data_type %d" % t.data_type
    n = 1
    for d in t.dims:
        if d < 0:
            return "a negative dimension in dims %s" % list(t.dims)
        n *= int(d)
    return n * itemsize


def _load_external_data(proto, path):
    """Read the tensors stored beside the model (data_location EXTERNAL), from files in the
    model's own directory only, each exactly the bytes its dims and data_type take, checked
    against the declared offset and length and the file's size, and at most
    MAX_EXTERNAL_TENSOR / MAX_EXTERNAL_TOTAL, all before anything is read; ConvertError
    names the tensor and location otherwise."""
    import os
    from onnx import TensorProto, external_data_helper as ext
    tensors = [t for t in ext._get_all_tensors(proto)
               if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL]
    if not tensors:
        return
    base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    total, plan = 0, []
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")

        def bad(msg):
            return ConvertError("tensor '%s': external data %r: %s" % (t.name, location, msg))
        target = _external_file(base, location)
        if target is None:
            raise ConvertError("tensor '%s': external data %r is not a file in the model's "
                               "directory (a symlink, absolute, or leaving it with ..); "
                               "rnnd-convert reads external data only from beside the model"
                               % (t.name, location))
        need = _declared_bytes(t)
        if isinstance(need, str):
            raise bad(need)
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise bad("offset %r and length %r are not integers"
                      % (info.get("offset"), info.get("length")))
        if need > MAX_EXTERNAL_TENSOR:
            raise bad("its dims %s take %d bytes; rnnd-convert reads at most %d MiB per "
                      "tensor" % (list(t.dims), need, MAX_EXTERNAL_TENSOR >> 20))
        total += need
        if total > MAX_EXTERNAL_TOTAL:
            raise bad("the model's external data take more than %d MiB in all; rnnd-convert "
                      "reads at most that" % (MAX_EXTERNAL_TOTAL >> 20))
        try:
            size = os.path.getsize(target)
        except OSError as e:
            raise bad(e.strerror or str(e))
        if offset < 0 or offset > size:
            raise bad("offset %d is outside the file's %d bytes" % (offset, size))
        if length is not None and (length < 0 or length > size - offset):
            raise bad("offset %d and length %d reach beyond the file's %d bytes"
                      % (offset, length, size))
        # without a length the tensor is the rest of the file (as onnx's own reader)
        have = size - offset if length is None else length
        if have != need:
            raise bad("%s %d bytes from offset %d, but its dims %s take %d"
                      % ("the file holds" if length is None else "length is", have, offset,
                         list(t.dims), need))
        plan.append((t, location, target, offset, need))
    for t, location, target, offset, need in plan:
        try:
            with open(target, "rb") as f:
                f.seek(offset)
                raw = f.read(need)
        except OSError as e:
            raise ConvertError("tensor '%s': external data %r: %s"
                               % (t.name, location, e.strerror or e))
        if len(raw) != need:
            raise ConvertError("tensor '%s': external data %r: read %d bytes of %d (the file "
                               "changed)" % (t.name, location, len(raw), need))
        t.raw_data = raw
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


# last: onnx_state reads this module's names (the checks of state inputs live there)
from . import onnx_state  # noqa: E402
