"""The one analysis of a PyTorch model's forward(): an allowlist over its TorchScript graph.

from_module() scripts the module (or traces it when scripting fails) and a TorchScript file
is loaded; either way the inlined graph of forward() is walked here. Every node that reads
the model's input data, directly or through earlier such nodes, must belong to a pattern
rnnd's chain can express: an embedding lookup, the recurrent operators, dropout (identity in
eval mode), one pooling of the last layer over the steps (y[:, -1], h_n[-1],
cat(h_n[-2], h_n[-1]) of a bidirectional layer, mean or max over the time axis), a head of
Linear, ReLU, Tanh, Sigmoid, GELU and LayerNorm layers (docs/model-format.md, "The head"),
one softmax / log_softmax over the features, reshapes and views, transposes of the batch
and time axes (batch_first), and tuple plumbing. Nodes that only compute on shapes,
constants and parameters (the checks inlined from nn.LSTM, say) are not data and pass. A
branch whose condition is known (`dim is None` with a constant dim, as in an inlined
F.log_softmax) is followed on its taken side only. Anything else on the data path is
refused, naming the operator, its source line and what would make the model convertible.
"""
import linecache
import os
import re

import numpy as np

from .arch import ConvertError, f32

RECURRENT_OPS = ("aten::lstm", "aten::gru", "aten::rnn_tanh", "aten::rnn_relu")
CELL_OPS = ("aten::lstm_cell", "aten::gru_cell", "aten::rnn_tanh_cell", "aten::rnn_relu_cell")
ZERO_OPS = ("aten::zeros", "aten::zeros_like", "aten::new_zeros")
DROPOUT_OPS = ("aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
               "aten::feature_alpha_dropout")
LAYOUT_OPS = ("aten::view", "aten::reshape", "aten::contiguous", "aten::unsqueeze",
              "aten::squeeze")
PLUMBING = ("prim::TupleConstruct", "prim::TupleUnpack", "prim::TupleIndex",
            "prim::ListConstruct", "prim::ListUnpack", "prim::unchecked_cast")
# reading the data for its shape, type or device yields no data
SHAPE_OPS = ("aten::size", "aten::dim", "prim::dtype", "prim::device", "aten::len",
             "aten::__is__", "aten::__isnot__", "prim::shape", "aten::numel")
PRE_AFFINE = ("aten::mul", "aten::div", "aten::add", "aten::sub")
# the sizes of a tensor (its rank, aten::dim, is fixed by the input kind)
SIZE_OPS = ("aten::size", "aten::len", "prim::shape", "aten::numel", "aten::sym_size")
# tensors made from a size's value (torch.tensor(x.size(1)), traced int(x.size(1)))
SIZE_TENSORS = ("aten::tensor", "aten::as_tensor", "aten::scalar_tensor", "prim::NumToTensor",
                "aten::full")
HEAD_ACTS = {"aten::relu": "relu", "aten::relu_": "relu", "aten::tanh": "tanh",
             "aten::tanh_": "tanh", "aten::sigmoid": "sigmoid", "aten::sigmoid_": "sigmoid",
             "aten::gelu": "gelu"}
# operators that read how torch runs: verification (and the trace) run without gradients,
# outside inference and autocast, while a user's plain call runs with gradients on
MODE_OPS = {"aten::is_grad_enabled": "torch.is_grad_enabled()",
            "prim::is_grad_enabled": "torch.is_grad_enabled()",
            "aten::is_autocast_enabled": "torch.is_autocast_enabled()",
            "aten::is_autocast_cpu_enabled": "torch.is_autocast_cpu_enabled()",
            "aten::is_inference_mode_enabled": "torch.is_inference_mode_enabled()",
            "aten::_is_tracing": "torch.jit.is_tracing()",
            # whether a tensor requires grad tells grad mode too (issue 14, fifth round, H6)
            "prim::requires_grad": "a tensor's requires_grad",
            "aten::is_inference": "a tensor's is_inference()",
            "prim::is_inference": "a tensor's is_inference()"}
# ops whose output shares its input's memory: an in-place write to it writes the base
VIEW_OPS = ("aten::slice", "aten::select", "aten::view", "aten::reshape", "aten::expand",
            "aten::narrow", "aten::as_strided", "aten::t", "aten::transpose", "aten::permute",
            "aten::unsqueeze", "aten::squeeze", "aten::detach", "aten::__getitem__",
            "aten::alias", "aten::view_as", "aten::expand_as", "aten::diagonal",
            "aten::unfold", "aten::flatten", "aten::numpy_T", "aten::unbind",
            "prim::unchecked_cast")
# what a loop over cells may do to the list its outputs are appended to, after the loop
LIST_MUTATIONS = ("aten::pop", "aten::insert", "aten::remove", "aten::clear",
                  "aten::_set_item", "aten::__setitem__", "aten::extend", "aten::reverse",
                  "aten::sort", "aten::__delitem__", "aten::delete")
CHAIN = ("Embedding -> LSTM/GRU/RNN layers -> (a pooling over the steps: y[:, -1], h_n[-1], "
         "cat(h_n[-2], h_n[-1]), mean or max) -> a head of Linear, ReLU, Tanh, Sigmoid, GELU, "
         "LayerNorm -> softmax / log_softmax")

# what would make it convertible, by the kind of operator refused
_ADVICE = (
    (("aten::select", "aten::slice", "aten::index", "aten::gather", "aten::narrow"),
     "it takes part of the steps or of a state; rnnd pools the last recurrent layer's output "
     "as y[:, -1] (y[-1] time-major), h_n[-1] or cat((h_n[-2], h_n[-1]), 1) of a "
     "bidirectional layer, before the head: take one of those, or return the per-step "
     "output"),
    (("aten::mean", "aten::sum", "aten::max", "aten::amax", "aten::min", "aten::amin",
      "aten::avg_pool", "aten::max_pool", "aten::adaptive_"),
     "it pools over steps or features; rnnd pools once, the last recurrent layer's output "
     "over the time axis with mean or max (y.mean(dim=t), y.max(dim=t).values, amax), "
     "before the head: use one of those, or return the per-step output"),
    (("aten::cat", "aten::stack", "aten::hstack", "aten::vstack"),
     "it joins tensors; rnnd runs one chain, and joins only the two directions' final "
     "states of a bidirectional last layer, as cat((h_n[-2], h_n[-1]), 1)"),
    (("aten::relu", "aten::tanh", "aten::sigmoid", "aten::gelu", "aten::elu", "aten::silu",
      "aten::leaky_relu", "aten::hardtanh", "aten::softplus", "aten::layer_norm",
      "aten::batch_norm", "aten::mul", "aten::add", "aten::sub", "aten::div"),
     "it computes on the outputs between or after the layers; rnnd's head is a chain of "
     "Linear, ReLU, Tanh, Sigmoid, GELU and LayerNorm after the recurrent layers (and any "
     "pooling), then a softmax: drop it from forward() or express it with those"),
    (("prim::Loop",),
     "a loop over steps: rnnd converts a loop over the steps that calls nn.LSTMCell / "
     "GRUCell / RNNCell on x[:, t] (or x[t]) from zero states and stacks the cells' outputs; "
     "else use nn.LSTM / nn.GRU / nn.RNN with the cell's weights"),
    (("aten::_pack_padded_sequence", "aten::_pad_packed_sequence"),
     "packed sequences: rnnd runs every sequence at its own length, unpadded, so packing is "
     "not needed: call the recurrent module without pack_padded_sequence / "
     "pad_packed_sequence"),
    (CELL_OPS,
     "script the module (torch.jit.script, or from_module, which scripts first) so that the "
     "loop stays a loop; rnnd converts it to one layer"),
)


CELL_LOOP = ("a loop over cells converts when written as: h = torch.zeros(x.size(0), H); "
             "ys = []; for t in range(x.size(1)): h = cell(x[:, t], h); ys.append(h); then "
             "y = torch.stack(ys, 1) (docs/convert.md, 'Loops over cells')")


def _walk(nodes):
    for n in nodes:
        yield n
        for b in n.blocks():
            yield from _walk(b.nodes())


def _advice(kind):
    for kinds, text in _ADVICE:
        if any(kind == k or kind.startswith(k) for k in kinds):
            return text
    return "rnnd computes %s" % CHAIN


def _torch_dir():
    try:
        import torch
        return os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    except Exception:
        return None


def _in_torch(path):
    """Whether PATH is PyTorch's own code (its installed files, or the __torch__/torch/ of a
    TorchScript file's serialized code), not the user's."""
    top = _torch_dir()
    return bool(top and os.path.abspath(path).startswith(top)) or "__torch__/torch/" in path


def _traced_frame(text):
    """' at FILE:LINE: CODE' of the first frame outside torch in a traced node's source range
    (its Python stack, 'FILE(LINE): FUNCTION' per line), or None when TEXT is not one."""
    frames = []
    for ln in text.splitlines():      # a loaded file's serialized code may follow
        m = re.match(r"^(.+)\((\d+)\): \S+$", ln.strip())
        if not m:
            break
        frames.append(m)
    for m in frames:
        path, line = m.group(1), int(m.group(2))
        if not _in_torch(path):
            code = linecache.getline(path, line).strip()
            return " at %s:%d%s" % (path, line, ": " + code if code else "")
    return None


def _dropout_cause(node):
    """Of a dropout whose training flag is the constant True, what its trace's Python stack
    shows: "module" where it ran inside an nn.Dropout (traced in train mode), "functional"
    where F.dropout was called outside one; None where NODE has no such stack (a scripted
    graph, whose source is code)."""
    try:
        lines = [ln.strip() for ln in node.sourceRange().splitlines()]
    except Exception:
        return None
    stack = re.compile(r"^(.+)\((\d+)\): \S+$")
    if not lines or not stack.match(lines[0]):
        return None
    for ln in lines:
        m = stack.match(ln)
        if not m:
            break
        if re.search(r"nn[/\\]modules[/\\]dropout\.py$", m.group(1)):
            return "module"
    return "functional"


def _call_site(node, root):
    """where() of the user's own call that NODE, inlined from PyTorch's code (nn.Linear's
    forward, F.softmax), came from: the deepest call of a submodule's forward() or of a
    function in a forward() outside torch, found through NODE's module hierarchy in the
    graphs before inlining; None when not found."""
    try:
        steps = [p for p in node.getModuleHierarchy().split(".") if p]
    except Exception:
        return None
    mod, found = root, None
    op = node.kind().split("::")[-1].strip("_")
    for step in steps + [None]:
        name = step.split("(")[0] if step else None
        try:
            graph = mod.graph
        except Exception:
            break
        calls = []
        for n in _walk(graph.nodes()):
            if name and name != "UNKNOWN_INSTANCE" and n.kind() == "prim::CallMethod":
                src = list(n.inputs())[0].node()
                if src.kind() == "prim::GetAttr" and src.s("name") == name:
                    calls.append(n)
            elif (name is None or name == "UNKNOWN_INSTANCE") and \
                    n.kind() == "prim::CallFunction":
                f = list(n.inputs())[0].node()
                fname = f.s("name") if f.hasAttribute("name") else ""
                if fname.strip("_") == op or fname.endswith("_" + op):
                    calls.append(n)
        if len(calls) > 1 and mod is root and step is not None:
            # several calls of the submodule in forward(): the one whose inlined body NODE is
            k = _instance(node, root, step)
            calls = [calls[k]] if k is not None and k < len(calls) else calls
        if len(calls) == 1:
            w = where(calls[0])
            loc = w[4:].split(":")[0] if w.startswith(" at ") else ""
            if loc and not _in_torch(loc):
                found = w
        if not name or name == "UNKNOWN_INSTANCE":
            break
        try:
            mod = getattr(mod, name)
        except Exception:
            break
    return found


def _instance(node, root, step):
    """Which call (0, 1, ...) of ROOT's submodule STEP ('fc(Linear)') in forward()'s order
    NODE was inlined from: the bodies of the calls are runs of nodes of that module hierarchy
    in the inlined graph, in the order of the calls (constants aside, which are hoisted);
    None when NODE is not found."""
    try:
        key = node.outputsAt(0).debugName()
        runs, inside = 0, False
        for n in _walk(root.inlined_graph.nodes()):
            if n.kind() == "prim::Constant":
                continue
            h = n.getModuleHierarchy()
            if h == step or h.startswith(step + "."):
                if not inside:
                    runs, inside = runs + 1, True
                if n.outputsSize() and n.outputsAt(0).debugName() == key:
                    return runs - 1
            else:
                inside = False
    except Exception:
        return None
    return None


def where(node, root=None):
    """' at FILE:LINE: CODE' from NODE's source range, or '' where the graph has none. Where
    that line is inside PyTorch (an operator inlined from nn.Linear, F.softmax) and ROOT (the
    ScriptModule analysed) shows the user's call of it, that call's line instead."""
    try:
        text = node.sourceRange()
    except Exception:
        return ""
    if not isinstance(text, str) or not text.strip():
        return ""
    traced = _traced_frame(text)
    if traced is not None:
        return traced
    out = _where_text(text)
    if root is not None and out.startswith(" at ") and _in_torch(out[4:].split(":")[0]):
        return _call_site(node, root) or out
    if out.startswith(" at <"):
        # TorchScript's own builtins ("<string>": `1 - t` is `torch.neg(t) + 1` there): the
        # nearest node of the user's file, an input or a use of this one
        return _near_user(node) or out
    return out


def _from_size(v):
    """Whether the int V is computed from a tensor's size (x.size(1) - 1, len(x))."""
    seen, todo = set(), [v]
    while todo and len(seen) < 50:
        u = todo.pop()
        if u in seen:
            continue
        seen.add(u)
        k = u.node().kind()
        if k in ("aten::size", "aten::len", "aten::numel", "aten::dim"):
            return True
        if k.startswith(("aten::", "prim::NumToTensor", "prim::ImplicitTensorToNum")) or \
                k in ("prim::Int", "prim::TupleIndex", "prim::ListUnpack"):
            todo.extend(u.node().inputs())
    return False


def _near_user(node):
    """where() of the nearest node to NODE (through the values it reads and the nodes that
    read its outputs, a few steps) whose source is a file of the user's, or None."""
    seen, todo = {node}, [node]
    for _ in range(4):
        nxt = []
        for m in todo:
            near = [u.node() for u in m.inputs()] + [
                use.user for o in m.outputs() for use in o.uses()]
            for k in near:
                if k in seen:
                    continue
                seen.add(k)
                nxt.append(k)
                try:
                    w = _where_text(k.sourceRange())
                except Exception:
                    continue
                if w.startswith(" at ") and not w.startswith(" at <") and \
                        not _in_torch(w[4:].split(":")[0]):
                    return w
        todo = nxt
    return None


def _where_text(text):
    lines = text.splitlines()
    head = lines[0].strip()
    code = ""
    for k, line in enumerate(lines):
        if "<--- HERE" in line and k > 0:
            code = lines[k - 1].strip()
            break
    loc = ""
    if head.startswith("File "):
        parts = head.split('"')
        if len(parts) >= 3:
            loc = "%s:%s" % (parts[1], parts[2].replace(", line", "").strip())
    out = " at %s" % loc if loc else ""
    return out + (": %s" % code if code else "")


def where_first(node):
    """' at FILE:LINE: CODE' of the first line of NODE's source range (an If's condition;
    where() gives the last), or where(NODE) when that cannot be read."""
    try:
        lines = node.sourceRange().splitlines()
        parts = lines[0].strip().split('"')
        path, line = parts[1], int(parts[2].replace(", line", "").strip())
    except Exception:
        return where(node)
    src = 0
    for k in range(1, len(lines) - 1):
        if lines[k + 1].strip().startswith("~"):
            code = lines[k].split(" #")[0].strip().rstrip(":")     # without its comment
            return " at %s:%d: %s" % (path, line + src, code)
        if not lines[k].strip().startswith("~"):
            src += 1
    return where(node)


def _made_like(k):
    """Whether operator K makes a tensor of its first input's shape or type, not its values:
    zeros_like, ones_like, full_like, empty_like, rand*_like, new_zeros, new_ones, ..."""
    return k.startswith("aten::") and (k.endswith("_like") or k.startswith("aten::new_"))


def _const(v):
    """(True, value) for a constant Value (prim::Constant, None included), else (False, None)."""
    n = v.node()
    if n.kind() != "prim::Constant":
        return False, None
    try:
        return True, n.output().toIValue()
    except Exception:
        pass
    if not n.attributeNames():
        return True, None
    try:
        return True, n.i("value")
    except Exception:
        return False, None


def _static_cond(v, const=_const):
    """The value of an If condition when it is known without running: a constant bool, or
    `x is None` / `x is not None` with x a constant (CONST resolves a Value)."""
    ok, val = const(v)
    if ok and isinstance(val, bool):
        return val
    n = v.node()
    if n.kind() in ("aten::__is__", "aten::__isnot__"):
        a, b = list(n.inputs())
        (oka, va), (okb, vb) = const(a), const(b)
        if oka and okb and (va is None or vb is None):
            same = va is None and vb is None
            return same if n.kind() == "aten::__is__" else not same
    if n.kind() == "aten::__not__":
        inner = _static_cond(list(n.inputs())[0], const)
        return None if inner is None else not inner
    if n.kind() in _COMPARE and len(list(n.inputs())) == 2:
        # a configuration attribute compared with a constant (`if self.pool == "mean"`)
        (oka, va), (okb, vb) = (const(x) for x in n.inputs())
        scalar = (bool, int, float, str)
        if oka and okb and isinstance(va, scalar) and isinstance(vb, scalar) and \
                isinstance(va, str) == isinstance(vb, str):
            if isinstance(va, float) != isinstance(vb, float):
                # TorchScript compares an int with a float as two doubles, where Python's
                # == is exact (2**53 + 1 == 2.0**53: Python False, TorchScript True; issue
                # 14, fifth round, H7)
                try:
                    va, vb = float(va), float(vb)
                except OverflowError:
                    return None
            return bool(_COMPARE[n.kind()](va, vb))
    return None


_COMPARE = {"aten::eq": lambda a, b: a == b, "aten::ne": lambda a, b: a != b,
            "aten::lt": lambda a, b: a < b, "aten::le": lambda a, b: a <= b,
            "aten::gt": lambda a, b: a > b, "aten::ge": lambda a, b: a >= b}


class Analysis:
    """Walk GRAPH (forward()'s inlined graph). INPUT_RANK: 2 for token ids, 3 for vectors.
    After run(): norm ("softmax" / "log_softmax" / None), heads, embeddings, recurrent."""

    def __init__(self, graph, input_rank, module=None, eval_made=False):
        self.graph = graph
        self.module = module    # resolves self.flag attributes in conditions
        # the graph was scripted or traced here, in eval mode (from_module), not loaded
        self.eval_made = eval_made
        self.taint = {}         # Value -> "data" | "state" | "hidden"
        self.rank = {}          # data Value -> its rank where known
        self.elems = {}         # tuple / list Value -> the Values it holds
        self.norm = None
        self.stage = 0          # 0 input, 1 embedded, 2 recurrent, 3 head, 4 normalised
        self.counts = {"embedding": 0, "recurrent": 0, "head": 0}
        self.input_rank = input_rank
        self.steps = {}         # list Value of a cell loop's per-step outputs -> time dim
        self.time_dim = None    # of a cell loop: 0 time-major, 1 batch-first
        self.transposed = False  # the data's batch and time axes are swapped
        self.pool = None        # "last" / "final_state" / "mean" / "max" once pooled
        self.y_time = None      # the time axis of the recurrent output where known
        self.bidir = False      # the last recurrent op is bidirectional
        self.sized = set()      # Values computed from the data's sizes (tensors made of them)
        self.calls = []         # the submodule of each recurrent operator, in call order
        self.pre = None         # (a, b): x -> a * x + b before the first layer
        self.cells = any(m.kind() in CELL_OPS for m in _walk(graph.nodes()))
        self.head_ops = []      # (op, node, extra): the head's layers in order
        self.embedding_path = None  # the attribute path of the table looked up ("emb.weight")
        self.hn_rows = None     # num_layers * directions of the last recurrent op
        self.features_added = False     # forward() takes [B, T] and unsqueezes the features
        self.hn_width = None    # the width of its h_n rows, where the module says
        self.keepdim = {}       # a pooling with keepdim=True -> its time dim, to squeeze
        self.made = {}          # data Value -> the walk's progress when it was computed

    def refuse(self, node, what=None, advice=None):
        advice = advice or _advice(node.kind())
        if self.cells and node.kind() not in ("prim::Loop",) + CELL_OPS:
            advice += "; " + CELL_LOOP      # the cell loop's own shape, as docs/convert.md
        raise ConvertError("forward() computes %s%s, which rnnd cannot serve: %s"
                           % (what or node.kind(), where(node, self.module), advice))

    def run(self):
        ins = list(self.graph.inputs())[1:]         # the first is self
        if not ins:
            raise ConvertError("forward() takes no input")
        self.taint[ins[0]] = "data"
        self.made[ins[0]] = self.progress()
        self.rank[ins[0]] = self.input_rank
        packed = [n for n in _walk(self.graph.nodes())
                  if n.kind() == "aten::_pack_padded_sequence"]
        if packed:
            # before its lengths argument (a second input) or sorting is refused as such
            self.refuse(packed[0])
        unrolled = [n for n in self.graph.nodes() if n.kind() in CELL_OPS]
        if unrolled:
            # a traced loop: one cell call per step of the example, a fixed length
            self.refuse(unrolled[0], "%s called %d times outside a loop (torch.jit.trace "
                        "unrolls a loop over the steps of the example into one call per step)"
                        % (unrolled[0].kind(), len(unrolled)))
        for v in ins[1:]:
            # a second input is the initial state (word_language_model's forward(input,
            # hidden)); rnnd starts a sequence from zeros or a session's state
            self.taint[v] = "hidden"
        self.block(self.graph.nodes())
        outs = list(self.graph.outputs())
        if len(outs) != 1:
            raise ConvertError("forward() has %d outputs" % len(outs))
        self.check_output(outs[0])
        if self.counts["recurrent"] == 0:
            raise ConvertError("forward() runs no LSTM / GRU / RNN on its input")
        return self

    def is_plain_hidden(self, v):
        """V (a tuple such as (h0, c0)) holds no layer's final state."""
        return all(self.is_plain_hidden(p) if p in self.elems else
                   self.taint.get(p) in (None, "hidden") for p in self.elems[v])

    def is_state(self, v):
        """V is a state, or a tuple of states ((h_n, c_n) of an LSTM), or not data at all."""
        if v in self.elems:
            return all(self.is_state(p) for p in self.elems[v])
        return self.taint.get(v) in ("state", "hidden", None) or \
            isinstance(self.taint.get(v), tuple)

    def check_output(self, v):
        if v in self.keepdim or any(p in self.keepdim for p in self.elems.get(v, ())):
            raise ConvertError("forward() returns a pooling over the steps kept as a dim "
                               "(keepdim=True, [batch, 1, out]); rnnd answers one row per "
                               "sequence: squeeze it over that dim (.squeeze(%d))"
                               % self.keepdim.get(v, 1))
        t = self.taint.get(v)
        if t == "data":
            return
        parts = self.elems.get(v)
        if parts is not None:
            if parts and self.taint.get(parts[0]) == "data" and all(
                    self.is_state(p) for p in parts[1:]):
                return
        raise ConvertError("forward() does not return the per-step output (or a tuple whose "
                           "first element is it, as (output, hidden)); rnnd computes %s" % CHAIN)

    def block(self, nodes):
        for n in nodes:
            self.node(n)

    def track_sizes(self, n, k, ins):
        """Mark the outputs of N computed from the sizes of the data (x.size(1), len(x),
        x.shape[0] > 19, and tensors made from them: torch.tensor(x.size(1)) > 100,
        NumToTensor, int(...)): a branch on them computes another graph for other lengths or
        batches. A tensor that also reads the data (y / x.size(1)) is the data, not a size."""
        if k in ("aten::__is__", "aten::__isnot__"):
            return      # `h is None` says nothing of a size, whatever h is made from
        if _made_like(k) and any(self.taint.get(v) == "data" for v in ins[:1]):
            # zeros_like(x), x.new_ones(...): a tensor of the data's shape, not its values, so
            # a count of it (zeros_like(x).sum()) is a size (issue 14, adversary 7, H3)
            self.sized.update(n.outputs())
            return
        if k in SIZE_OPS and any(v in self.taint for v in ins) or \
                any(v in self.sized for v in ins):
            tensors = [v for v in ins if str(v.type()).startswith("Tensor")]
            # a tensor holds a size when made from one, or computed from such tensors alone
            # (zeros(x.size(0), H) holds zeros; h0.expand(1, B, H) holds h0)
            valued = k in SIZE_TENSORS or (tensors and all(v in self.sized for v in tensors))
            for o in n.outputs():
                if not str(o.type()).startswith("Tensor") or valued:
                    self.sized.add(o)

    # what a walk has found so far: both sides of a run-time branch must end with the same
    _WALK_STATE = ("stage", "counts", "norm", "transposed", "pool", "y_time", "bidir",
                   "hn_rows", "hn_width", "head_ops", "calls", "pre", "features_added",
                   "embedding_path", "time_dim")

    def snapshot(self):
        import copy
        return {a: copy.copy(getattr(self, a)) for a in self._WALK_STATE}

    def restore(self, snap):
        import copy
        for a, v in snap.items():
            setattr(self, a, copy.copy(v))

    def signature(self):
        """The walk's state in comparable form: the stage and counts, and also the layout
        (transposes), the pooling, the head's layers and the weights they read, the modules
        called and the affine folded before them (issue 14 A1: two sides that reach the
        same stage can still compute different things)."""
        out = []
        for a in self._WALK_STATE:
            v = getattr(self, a)
            if a == "head_ops":
                v = [(op, self.op_weights(n), repr(extra)) for op, n, extra in v]
            elif a == "pre":
                v = None if v is None else repr([np.asarray(x).tolist() for x in v])
            elif a == "counts":
                v = sorted(v.items())
            out.append((a, v))
        return out

    def op_weights(self, n):
        """The attribute paths (or constants) a head layer's node reads besides its input."""
        keys = []
        for v in list(n.inputs())[1:]:
            path, u = [], v
            while u.node().kind() == "prim::GetAttr":
                path.append(u.node().s("name"))
                u = u.node().input()
            if path:
                keys.append(".".join(reversed(path)))
            elif u.node().kind() == "prim::ListConstruct":
                keys.append(repr([_const(x) for x in u.node().inputs()]))
            else:
                ok, c = _const(v)
                keys.append(repr(c) if ok else "?")
        return tuple(keys)

    def size_branch(self, n, blocks):
        """Refuse an If on the data's sizes, unless one side only raises and the check is
        PyTorch's own (the argument checks inlined from nn.LSTM) or reads only the feature
        size, fixed for the model (`if x.size(-1) != 4: raise ...`). A raise of the user's
        on the length or batch is refused: rnnd would answer where the module raises, at
        sizes verification need not reach (issue 14 F4)."""
        if list(n.inputs())[0] not in self.sized:
            return
        if any(m.kind() == "prim::RaiseException" for b in blocks for m in b.nodes()):
            w = where_first(n)
            if not (w.startswith(" at ") and _in_torch(w[4:].split(":")[0])) and \
                    not self.feature_sizes(list(n.inputs())[0]):
                raise ConvertError("forward() raises for some input sizes%s: rnnd serves "
                                   "every length and batch, and would answer where the "
                                   "module raises; remove the check (or make it before "
                                   "calling the model)" % w)
            return
        raise ConvertError("forward() branches on the input's size%s: rnnd computes one graph "
                           "for every length and batch; remove the branch" % where_first(n))

    def feature_sizes(self, v):
        """Whether the condition V reads the data's sizes only as its last dim (the features,
        fixed for the model): every aten::size it is computed from takes dim -1 (or the last
        dim of a tensor of known rank), and no other size operator."""
        seen, todo, sizes = set(), [v], 0
        while todo:
            u = todo.pop()
            if u in seen or len(seen) > 200:
                continue
            seen.add(u)
            m = u.node()
            k = m.kind()
            ins = list(m.inputs())
            if k == "aten::size" and ins and self.taint.get(ins[0]) == "data":
                ok, d = self.const(ins[1]) if len(ins) > 1 else (False, None)
                r = self.rank.get(ins[0])
                if not ok or not isinstance(d, int) or not (d == -1 or (r and d == r - 1)):
                    return False
                sizes += 1
                continue
            if k in SIZE_OPS and any(self.taint.get(x) == "data" for x in ins):
                return False
            todo.extend(ins)
        return sizes > 0

    def node(self, n):
        k = n.kind()
        ins = list(n.inputs())
        kinds = {self.taint[v] for v in ins if v in self.taint}
        self.writes_state(n, k, ins)
        if k != "prim::If" and k != "prim::Loop":
            self.track_sizes(n, k, ins)
        if k == "prim::If":
            cond = _static_cond(ins[0], self.const)
            blocks = list(n.blocks())
            if cond is None:
                self.size_branch(n, blocks)
            if cond is not None:
                taken = [blocks[0] if cond else blocks[1]]
                self.block(taken[0].nodes())
            else:
                # both sides may run: each must be convertible and reach the same point
                taken = blocks
                start = self.snapshot()
                ends = []
                for b in blocks:
                    self.restore(start)
                    self.block(b.nodes())
                    ends.append(self.signature())
                if ends[0] != ends[1]:
                    raise ConvertError(
                        "forward() branches on a value known only when it runs%s, and its "
                        "two sides compute different things; rnnd computes %s: make the "
                        "condition a constant (a torch.jit.Final attribute) or remove the "
                        "branch" % (where_first(n), CHAIN))
                self.side_outputs(n, blocks)
            for i, out in enumerate(n.outputs()):
                for b in taken:
                    self.copy(out, list(b.outputs())[i])
            return
        if k == "aten::stack" and ins[0] in self.steps:
            return self.stack_steps(n, ins)
        if any(v in self.steps for v in ins):
            # the list of the loop's outputs trimmed, read or changed before its stack (a
            # context window, `while len(ys) > 250: ys.pop(0)`; issue 14, fifth round, H1)
            self.refuse(n, "%s of the list of the loop's outputs; rnnd reads that list only "
                        "through torch.stack(ys, dim)" % k)
        if not kinds:
            if k == "prim::Loop":
                if _cells_in(n):
                    return self.cell_loop(n)
                # a loop that never touches the data (none in practice): look inside anyway
                for b in n.blocks():
                    self.block(b.nodes())
            return
        if k == "prim::Loop" and _cells_in(n):
            return self.cell_loop(n)
        if k in CELL_OPS:
            self.refuse(n, "%s outside a loop over the steps (torch.jit.trace unrolls such a "
                        "loop into one call per step of the example)" % k)
        if k in SHAPE_OPS or k in ("prim::RaiseException", "aten::format", "aten::warn"):
            return
        if k not in PLUMBING and any(v in self.keepdim for v in ins):
            return self.squeeze_pooled(n, k, ins)
        if k in ("aten::new_zeros", "aten::zeros_like") and not any(
                self.taint.get(v) in ("state", "hidden") for v in ins):
            return      # x.new_zeros(B, H): zeros of the data's type, not the data
        if k == "aten::type_as" and ins and ins[0] not in self.taint:
            # torch.zeros(...).type_as(x): the values of the first in the data's type, not
            # the data (an initial state so made is checked by computed_state)
            return
        if k in PLUMBING:
            return self.plumbing(n, k, ins, kinds)
        if k in ("aten::select", "aten::cat") and ins and (
                isinstance(self.taint.get(ins[0]), tuple) or any(
                    isinstance(self.taint.get(p), tuple) for p in self.elems.get(ins[0], ()))):
            return self.final_state(n, k, ins)
        if k in RECURRENT_OPS:
            return self.recurrent(n, ins)
        if k == "aten::index_select" and "hidden" in kinds:
            raise ConvertError("forward() computes aten::index_select of its initial state%s, "
                               "rearranging its layers or directions on the way in; rnnd's "
                               "state follows PyTorch's layout: pass the state to the "
                               "recurrent module as it comes" % where(n))
        if "data" not in kinds and k == "aten::slice" and self.full_slice(ins) and \
                isinstance(self.taint.get(ins[0]), tuple):
            # h_n[-2, :, :]: a full slice keeps every element, the same final state
            self.taint[n.output()] = self.taint[ins[0]]
            return
        if "data" not in kinds and k in LAYOUT_OPS + ("aten::index_select",):
            # nn.LSTM's own handling of its states (unbatched input, sorted batches)
            t = "state" if "state" in kinds else "hidden"
            tags = [t for t in kinds if isinstance(t, tuple)]
            if tags == [("hn",)] and self.one_row_view(k, ins):
                # h_n.squeeze(0), h_n.view(-1, H) of one layer, one direction: h_n[-1]
                return self.set_pool(n, "final_state", n.output())
            if tags:
                t = tags[0]     # h_n through nn.LSTM's own reordering keeps its meaning
            for out in n.outputs():
                self.taint[out] = t
            return
        if "data" not in kinds:
            tags = [t for t in kinds if isinstance(t, tuple)]
            if tags and (len(tags[0]) > 1 or self.bidir):
                self.refuse(n, "%s on %s of a bidirectional last layer (one direction's final "
                            "state, or h_n itself); rnnd takes both directions as "
                            "cat((h_n[-2], h_n[-1]), dim=1)"
                            % (k, "h_n[%d]" % tags[0][1] if len(tags[0]) > 1 else "h_n"))
            if tags:
                self.refuse(n, "%s on h_n itself, the final states of every layer ([num_layers, "
                            "batch, hidden]); rnnd pools the last layer's: take h_n[-1] first "
                            "(fc(h_n[-1]); for one layer h_n.squeeze(0) or h_n.view(-1, "
                            "hidden) are the same)" % k)
            if "state" in kinds:
                self.refuse(n, "%s on the final state (h_n / c_n)" % k)
            self.refuse(n, "%s on a second input of forward() (rnnd takes one input "
                        "sequence; a second argument may only be the recurrent module's "
                        "initial state, as in forward(input, hidden))" % k)
        if any(self.taint.get(v) in ("state", "hidden") for v in ins):
            self.refuse(n, "%s mixing the data with a state" % k)
        if k in PRE_AFFINE and self.stage < 2 and not self.counts["recurrent"]:
            return self.pre_affine(n, k, ins)
        x = ins[1] if k == "aten::embedding" else ins[0]    # embedding(weight, ids, ...)
        if self.taint.get(x) != "data" or sum(self.taint.get(v) == "data" for v in ins) > 1:
            self.refuse(n)
        r = self.rank.get(x)
        out = n.output() if n.outputsSize() == 1 else None
        if k == "aten::embedding":
            if self.stage != 0 or self.counts["embedding"]:
                self.refuse(n, "a second embedding lookup")
            self.counts["embedding"] += 1
            self.embedding_table(n, ins[0])
            self.stage = 1
            self.mark(out, None if r is None else r + 1)
        elif k in DROPOUT_OPS:
            self.active_dropout(n, ins)
            self.mark(out, r)
        elif k == "aten::to" and self.token_ids(ins):
            self.mark(out, r)       # x.long(), x.to(torch.int32): the same ids
        elif k == "aten::to" and self.float32(ins):
            self.mark(out, r)       # x.float() of float32 data: the same values
        elif k == "aten::flatten":
            self.flatten(n, ins, r)
            self.mark(out, r)
        elif k in LAYOUT_OPS:
            nr = r
            if k in ("aten::view", "aten::reshape"):
                shape = ins[1].node()
                nr = len(list(shape.inputs())) if shape.kind() == "prim::ListConstruct" \
                    else None
            elif k == "aten::unsqueeze":
                nr = None if r is None else r + 1
                if self.stage == 0 and self.input_rank == 3 and \
                        self.const(ins[1]) in ((True, -1), (True, 2)):
                    # x.unsqueeze(-1) before the first layer: forward() takes [B, T], one
                    # feature per step (a univariate series), which rnnd reads as [T, 1]
                    self.features_added = True
                    nr = 3
            elif k == "aten::squeeze":
                nr = None
            if k in ("aten::view", "aten::reshape"):
                self.y_time = None  # a reshape: which axis is time is no longer known
            self.mark(out, nr)
        elif k in ("aten::transpose", "aten::t"):
            if k == "aten::t" and r != 2:
                self.refuse(n)      # x.t() is transpose(0, 1) of a rank-2 tensor alone
            ok0, d0 = self.const(ins[1]) if k == "aten::transpose" else (True, 0)
            ok1, d1 = self.const(ins[2]) if k == "aten::transpose" else (True, 1)
            if not (ok0 and ok1) or {d0, d1} != {0, 1}:
                self.refuse(n, "aten::transpose(%s, %s)" % (d0, d1))
            self.transposed = not self.transposed
            if self.y_time is not None:
                self.y_time = 1 - self.y_time
            self.mark(out, r)
        elif k == "aten::permute":
            if not _swaps_batch_time(ins[1], r):
                self.refuse(n, "aten::permute(%s)" % (_permute_dims(ins[1]),),
                            advice="rnnd's layout changes are the swap of the batch and "
                            "time axes alone, x.permute(1, 0, 2) or x.transpose(0, 1) (a "
                            "time-major RNN's input and output): write that, or return the "
                            "per-step output as [batch, time, features]")
            self.transposed = not self.transposed
            if self.y_time is not None:
                self.y_time = 1 - self.y_time
            self.mark(out, r)
        elif k == "aten::slice" and self.full_slice(ins):
            self.mark(out, r)       # x[:, ...]: every element, the same tensor
        elif k in ("aten::select", "aten::mean", "aten::max", "aten::amax"):
            self.pool_steps(n, k, ins, r)
        elif k == "aten::linear":
            if self.stage not in (2, 3):
                self.refuse(n, "a Linear %s" % ("before the recurrent layers" if self.stage < 2
                                                else "after the softmax"))
            self.head_op(n, "linear", None)
            self.mark(out, r)
        elif k in HEAD_ACTS:
            if self.stage not in (2, 3):
                self.refuse(n, "%s %s" % (k, "before the recurrent layers" if self.stage < 2
                                          else "after the softmax"))
            op = HEAD_ACTS[k]
            if k == "aten::gelu" and len(ins) > 1:
                ok, a = self.const(ins[1])
                if not ok or a not in ("none", "tanh"):
                    self.refuse(n, "aten::gelu with approximate=%r" % (a,))
                op = "gelu" if a == "none" else "gelu_tanh"
            self.head_op(n, op, None)
            self.mark(out, r)
        elif k == "aten::layer_norm":
            if self.stage < 2:
                raise ConvertError(
                    "forward() computes a LayerNorm on the input%s: a LayerNorm before the "
                    "recurrent layers is not supported by the rnnd format; a LayerNorm is "
                    "supported only after the recurrent layers (after the stack and any "
                    "pooling) or between head layers: remove it or move it there"
                    % where(n, self.module))
            if self.stage != 3 and self.stage != 2:
                self.refuse(n, "aten::layer_norm after the softmax")
            ok, shape = self.shape_list(ins[1])
            oke, eps = self.const(ins[4])
            if not oke or not isinstance(eps, float):
                try:
                    eps, oke = float(self.attr(ins[4], "LayerNorm eps")), True
                except (ConvertError, TypeError, ValueError):
                    oke = False
            if not ok or not isinstance(shape, (list, tuple)) or len(shape) != 1 or not oke:
                self.refuse(n, "aten::layer_norm over %r (rnnd normalises the features, the "
                            "last dim)" % (shape,))
            self.head_op(n, "layernorm", {"eps": float(eps), "width": int(shape[0])})
            self.mark(out, r)
        elif k in ("aten::softmax", "aten::log_softmax"):
            ok, d = self.const(ins[1])
            if self.stage < 2 or self.norm is not None:
                self.refuse(n, "%s %s" % (k[6:], "before the recurrent layers"
                                          if self.stage < 2 else "twice"))
            if not ok:
                # nn.Softmax() / F.softmax(y) without dim: PyTorch picks it from the rank
                # (_get_softmax_dim: 0 for rank 0, 1 or 3, else 1) (user trial 6)
                ok, d = self.ranked_const(ins[1], x, r)
                if ok and isinstance(d, int) and r is not None and d != r - 1:
                    raise ConvertError(
                        "forward() computes %s without dim%s: PyTorch's implicit dim (its "
                        "choice for a %s without dim=, deprecated) is %d for a rank-%d tensor, "
                        "not the features, the last dim, which rnnd normalises: pass dim=-1 "
                        "(nn.%s(dim=-1))" % (k[6:], where(n, self.module), k[6:], d, r,
                                             "Softmax" if k == "aten::softmax"
                                             else "LogSoftmax"))
            if not ok or not (d == -1 or (r is not None and d == r - 1)):
                self.refuse(n, "%s over dim %s of a rank-%s tensor (rnnd normalises the "
                            "features, the last dim)" % (k[6:], d, r))
            if len(ins) > 2 and not self.const(ins[2]) == (True, None):
                self.refuse(n, "%s with a dtype" % k[6:])
            self.norm = "softmax" if k == "aten::softmax" else "log_softmax"
            self.stage = 4
            self.mark(out, r)
        else:
            self.refuse(n)
        if out is not None and x in self.made and k in LAYOUT_OPS + DROPOUT_OPS + (
                "aten::to", "aten::transpose", "aten::t", "aten::slice", "aten::flatten"):
            # the same values in another shape: made where its input was (nn.LSTM's own
            # unsqueeze of an unbatched input, in a branch after an encoder, included)
            self.made[out] = self.made[x]

    def token_ids(self, ins):
        """Whether K(INS) converts the token ids, before the lookup, to int64 or int32 (which
        hold every id exactly): x.long(), x.int(), x.to(torch.long)."""
        if self.input_rank != 2 or self.stage != 0 or self.counts["embedding"]:
            return False
        ok, dt = self.const(ins[1]) if len(ins) > 1 else (False, None)
        if not ok:
            return False
        try:
            import torch
            return dt in (torch.int64, torch.int32, 4, 3)
        except ImportError:
            return dt in (4, 3)

    def float32(self, ins):
        """Whether aten::to(INS) makes float32 of float data (x.float(), x.to(torch.float32)
        on vectors or on what a layer computed), which is what it was: rnnd computes in
        float32 (user trial 6)."""
        if self.stage == 0 and self.input_rank == 2:
            return False        # token ids made floats: not ids any more
        ok, dt = self.const(ins[1]) if len(ins) > 1 else (False, None)
        if not ok:
            return False
        try:
            import torch
            return dt in (torch.float32, 6)
        except ImportError:
            return dt == 6

    def flatten(self, n, ins, r):
        """aten::flatten(x, start, end) (nn.Flatten, torch.flatten): taken where it changes no
        shape (start and end the same dim: nn.Flatten() of a pooled [batch, features]);
        one that merges dims is refused (user trial 6)."""
        oks, a = self.const(ins[1]) if len(ins) > 1 else (True, 0)
        oke, b = self.const(ins[2]) if len(ins) > 2 else (True, -1)
        if r is not None and oks and oke and isinstance(a, int) and isinstance(b, int) and \
                -r <= a < r and -r <= b < r and a % r >= b % r:
            return
        if r is not None and oks and oke and isinstance(a, int) and isinstance(b, int):
            what = "aten::flatten(start_dim=%d, end_dim=%d), which merges dims %d..%d of a " \
                   "rank-%d tensor" % (a, b, a % r if -r <= a < r else a,
                                       b % r if -r <= b < r else b, r)
        else:
            what = "aten::flatten over dims rnnd cannot tell"
        self.refuse(n, what, advice="rnnd's head reads the features of each step, or of the "
                    "one pooled step: an nn.Flatten that changes no shape (of [batch, "
                    "features], after y[:, -1] or h_n[-1]) converts; to feed the head one "
                    "vector per sequence, pool the steps first (y[:, -1], y.mean(1)) instead "
                    "of flattening them")

    def embedding_table(self, n, v):
        """Record the attribute path of the table aten::embedding reads (the importer checks
        it holds the table it writes); refuse a table forward() computes, which the importer
        would not see (F.embedding(x, w) with w a modified copy: issue 14, adversary 1)."""
        path = []
        while v.node().kind() == "prim::GetAttr":
            path.append(v.node().s("name"))
            v = v.node().input()
        if not path or v is not list(self.graph.inputs())[0]:
            raise ConvertError("forward() looks up the tokens in a table it computes%s, not in "
                               "an nn.Embedding's weight: rnnd serves the weight of the "
                               "Embedding module; look up with the module (self.emb(x)), or "
                               "store the table you want in its weight before converting"
                               % (where(v.node()) or where(n)))
        self.embedding_path = ".".join(reversed(path))

    def state_order(self, n, hx):
        """Refuse a recurrent operator whose initial state (h, c) reads forward()'s state
        argument crosswise (c as h) or one tensor as both: rnnd maps the state as PyTorch's
        (h, c) (issue 14, adversary 3)."""
        if hx.node().kind() != "prim::ListConstruct":
            return
        parts = list(hx.node().inputs())
        if len(parts) != 2:
            return
        inputs = list(self.graph.inputs())
        o = [_state_origin(p, inputs) for p in parts]
        if None in o or o[0] < o[1]:
            return
        def name(origin):
            i, path = origin
            return inputs[i].debugName().split(".")[0] + "".join("[%d]" % j for j in path)
        raise ConvertError("forward() passes %s as h and %s as c to %s (%s): rnnd's state is "
                           "PyTorch's (h, c), in that order; pass the state to the recurrent "
                           "module as it comes"
                           % (name(o[0]), name(o[1]), n.kind(), "the same tensor as both"
                              if o[0] == o[1] else "crosswise"))

    def pre_affine(self, n, k, ins):
        """x * c, x / c, x + c, x - c (c * x, c + x) with c a constant scalar or feature
        vector, before the first layer (emb(x) * sqrt(d), (x - mu) / sd): composed into
        self.pre = (a, b), x -> a * x + b per feature, which the importer folds exactly into
        the embedding table or the first layer's W and Wb. Anything else is refused, saying
        where it is and how."""
        import numpy as np
        how = ("%s before the first recurrent layer; rnnd folds a constant scale or offset "
               "there (x * c, x / c, x + c, x - c with c a number or a per-feature constant) "
               "into the embedding or the first layer's W: make it one of those, or fold it "
               "into the weights yourself" % k)
        data = [i for i, v in enumerate(ins) if self.taint.get(v) == "data"]
        if len(data) != 1 or (self.stage == 0 and self.input_rank == 2):
            self.refuse(n, how if self.stage else "%s on the token ids" % k)
        i = data[0]
        other = [v for j, v in enumerate(ins[:2]) if j != i]
        ok, c = self.const(other[0]) if other else (False, None)
        if len(ins) > 2:
            oka, alpha = self.const(ins[2])
            if not (oka and alpha == 1):
                self.refuse(n, how)
        if not ok or isinstance(c, bool) or (i == 1 and k in ("aten::sub", "aten::div")):
            self.refuse(n, how)
        try:
            c = np.asarray(c.detach().cpu().double().numpy() if hasattr(c, "detach") else c,
                           dtype=np.float64)
        except Exception:
            self.refuse(n, how)
        if c.ndim > 1 and any(d != 1 for d in c.shape[:-1]):
            self.refuse(n, how)
        c = c.reshape(-1) if c.ndim else c
        a, b = self.pre if self.pre is not None else (np.float64(1.0), np.float64(0.0))
        if k == "aten::mul":
            a, b = a * c, b * c
        elif k == "aten::div":
            a, b = a / c, b / c
        elif k == "aten::add":
            b = b + c
        else:
            b = b - c
        self.pre = (a, b)
        self.mark(n.output(), self.rank.get(ins[i]))

    def train_flag(self, v):
        """(True, value) for a dropout's train flag known when converting: a constant, or a
        module's `training`, False since the module is converted and verified in eval mode
        (docs/convert.md); else (False, None)."""
        if v.node().kind() == "prim::GetAttr" and v.node().s("name") == "training":
            return True, False
        return self.const(v)

    def active_dropout(self, n, ins):
        """Refuse a dropout whose train flag is the constant True: a module traced in train
        mode keeps it, and the file then drops random elements at every call."""
        okp, p = self.const(ins[1]) if len(ins) > 2 else (False, None)
        okt, train = self.train_flag(ins[2]) if len(ins) > 2 else (False, None)
        if (okp and p == 0) or (okt and train is False) or len(ins) <= 2:
            return
        if not okt:
            # a flag computed when it runs, from a length, a step counter, the data or the
            # grad mode, drops at inputs verification need not meet (issue 14, fifth
            # round, H2, H3, H6)
            raise ConvertError("forward() computes %s%s with a training flag computed when it "
                               "runs (%s), not a constant: the dropout may be active for some "
                               "inputs only, which rnnd does not compute; pass "
                               "training=self.training and convert in eval mode"
                               % (n.kind(), where(n, self.module), ins[2].node().kind()))
        if okt and train is True and not (okp and p == 0):
            # the constant True: an nn.Dropout traced in train mode, or F.dropout(y, p)
            # without training=, whose default True the module's eval() does not reach
            # (user trial 6)
            default = ("F.dropout(y, p) defaults to training=True, so it drops even after "
                       "model.eval(): pass training=self.training, or use nn.Dropout(p)")
            cause = _dropout_cause(n)
            if cause == "module" or (cause is None and not self.eval_made):
                raise ConvertError("forward() computes %s%s in training mode (dropout active: "
                                   "the module was traced or exported in train mode); call "
                                   "model.eval() before tracing%s"
                                   % (n.kind(), where(n, self.module), "" if cause else
                                      " (or, for F.dropout: %s)" % default))
            raise ConvertError("forward() computes %s%s with its training flag the constant "
                               "True (dropout active in eval mode too): %s"
                               % (n.kind(), where(n, self.module), default))

    def head_op(self, n, op, extra):
        """A head layer (docs/model-format.md, "The head"): after the recurrent layers and
        any pooling, before the softmax. Its weight and bias must be parameters read from the
        module as they are: the file holds those, and a weight forward() computes (from the
        batch size, a count, the mode) may differ at inputs verification never meets
        (issue 14, adversary 7, H3)."""
        operands = {"linear": ((1, "weight"), (2, "bias")),
                    "layernorm": ((2, "weight"), (3, "bias"))}.get(op, ())
        ins = list(n.inputs())
        for i, what in operands:
            if i < len(ins):
                self.read_param(n, ins[i], what)
        self.counts["head"] += 1
        self.stage = 3
        self.head_ops.append((op, n, extra))

    def read_param(self, n, v, what):
        """Refuse V, the WHAT operand of head node N, unless it is None, a parameter read
        through prim::GetAttr from the module, or a traced weight_norm of such parameters."""
        if self.const(v) == (True, None):
            return
        src = v.node()
        if src.kind() == "aten::_weight_norm":
            for u in list(src.inputs())[:2]:
                self.read_param(n, u, what)
            return
        u = v
        while u.node().kind() == "prim::GetAttr":
            u = u.node().input()
        if v.node().kind() == "prim::GetAttr" and u is list(self.graph.inputs())[0]:
            return
        at = where(src, self.module) or where(n, self.module)
        raise ConvertError("forward() computes the %s of %s (%s) with %s%s, not a parameter "
                           "read from the module: rnnd writes the module's parameters as they "
                           "are, and a weight computed when forward() runs (from a size, a "
                           "count, a flag) may differ at inputs verification does not meet; "
                           "pass the module's parameter as it is (self.fc(y), "
                           "F.linear(y, self.fc.weight, self.fc.bias)), storing the weight "
                           "you want in it before converting"
                           % (what, n.kind(), "Linear" if n.kind() == "aten::linear"
                              else "LayerNorm", src.kind(), at))

    def shape_list(self, v):
        """(ok, list) of a normalized_shape: a list of constants, or a module attribute."""
        node = v.node()
        if node.kind() == "prim::ListConstruct":
            vals = [self.const(x) for x in node.inputs()]
            if all(ok for ok, _ in vals):
                return True, [x for _, x in vals]
            return False, None
        try:
            x = self.attr(v, "normalized_shape")
            return isinstance(x, (list, tuple)), list(x) if isinstance(x, (list, tuple)) \
                else None
        except ConvertError:
            return self.const(v)

    def attr(self, v, what):
        """The module attribute V reads through a prim::GetAttr chain from self."""
        path = []
        node = v.node()
        while node.kind() == "prim::GetAttr":
            path.append(node.s("name"))
            src = list(node.inputs())[0]
            node = src.node()
            if src in list(self.graph.inputs())[:1]:
                break
        else:
            path = None
        if not path or self.module is None:
            raise ConvertError("forward()'s %s is not an attribute of the module%s"
                               % (what, where(v.node())))
        obj = self.module
        for name in reversed(path):
            obj = getattr(obj, name)
        return obj

    def param(self, v, what):
        """The tensor V is: a parameter read through prim::GetAttr from self, or None for a
        None constant."""
        ok, c = self.const(v)
        if ok and c is None:
            return None
        if v.node().kind() == "aten::_weight_norm":
            # a traced weight_norm head: weight_v, weight_g and the dim, as the trace computes
            from .torch_import import weight_norm_np
            wv, wg, d = list(v.node().inputs())
            okd, dim = self.const(d)
            return weight_norm_np(self.param(wv, what), self.param(wg, what),
                                  dim if okd else None)
        path = []
        node = v.node()
        while node.kind() == "prim::GetAttr":
            path.append(node.s("name"))
            src = list(node.inputs())[0]
            node = src.node()
            if src in list(self.graph.inputs())[:1]:
                break
        else:
            path = None
        if not path or self.module is None:
            raise ConvertError("forward()'s %s is not a parameter of the module%s; rnnd reads "
                               "a head's weights from its modules" % (what, where(v.node())))
        obj = self.module
        for name in reversed(path[1:]):
            obj = getattr(obj, name)
        from .torch_import import module_weight
        if path[0] == "weight":
            return module_weight(obj, "module '%s'" % ".".join(reversed(path[1:])))
        return getattr(obj, path[0]).detach().cpu().numpy()

    def head_layers(self):
        """The head as arch.Model.head_layers, weights read from the module."""
        out = []
        for op, n, extra in self.head_ops:
            ins = list(n.inputs())
            if op == "linear":
                W = self.param(ins[1], "Linear weight")
                b = self.param(ins[2], "Linear bias")
                out.append({"op": "linear", "W": f32(W),
                            "b": f32(b) if b is not None else np.zeros(W.shape[0], np.float32)})
            elif op == "layernorm":
                w = self.param(ins[2], "LayerNorm weight")
                b = self.param(ins[3], "LayerNorm bias")
                h = {"op": "layernorm", "eps": extra["eps"], "affine": w is not None}
                if w is not None:
                    h["W"] = f32(w)
                    h["b"] = f32(b) if b is not None else np.zeros(w.shape[0], np.float32)
                out.append(h)
            else:
                out.append({"op": op})
        return out

    def full_slice(self, ins):
        """aten::slice(x, dim, start, end, step) that keeps every element (x[:, ...])."""
        vals = [self.const(v) for v in ins[2:5]]
        if not all(ok for ok, _ in vals):
            return False
        start, end, step = (v for _, v in vals)
        return start in (None, 0) and (end is None or end >= 2 ** 62) and step == 1

    def state_width(self, path):
        """The width of the h_n rows of submodule PATH (its weight_hh_l0's columns: the
        hidden or projection size), or None."""
        if path is None or self.module is None:
            return None
        try:
            obj = self.module
            for name in path.split("."):
                obj = getattr(obj, name)
            return int(dict(obj.named_parameters())["weight_hh_l0"].shape[1])
        except Exception:
            return None

    def one_row_view(self, k, ins):
        """Whether K(INS) on the h_n of a last recurrent op with one row (one layer, one
        direction) gives its row per sequence, [B, H]: squeeze(0), or a view / reshape to
        (-1, H), (B, -1) or (B, H) with B read from the data's sizes."""
        if self.hn_rows != 1:
            return False
        if k == "aten::squeeze":
            return len(ins) == 2 and self.const(ins[1]) in ((True, 0), (True, -3))
        if k not in ("aten::view", "aten::reshape") or \
                ins[1].node().kind() != "prim::ListConstruct":
            return False
        dims = list(ins[1].node().inputs())
        if len(dims) != 2:
            return False
        (ok0, a), (ok1, b) = self.const(dims[0]), self.const(dims[1])
        width = ok1 and self.hn_width is not None and b == self.hn_width
        if ok0 and a == -1:
            return width
        return self.from_sizes(dims[0]) and not ok0 and (width or (ok1 and b == -1))

    def from_sizes(self, v):
        """V is computed from the data's sizes (x.size(0); traced: int(x.size(0)) through
        prim::NumToTensor)."""
        for _ in range(4):
            if v in self.sized:
                return True
            if v.node().kind() not in ("aten::Int", "prim::NumToTensor", "aten::ScalarImplicit"):
                return False
            v = v.node().input()
        return False

    def set_pool(self, n, pool, out):
        if self.stage == 3 and self.pool is None and self.head_ops and \
                self.head_ops[-1][0] != "linear":
            # a LayerNorm or an activation on the steps, then the pooling
            op = self.head_ops[-1][1].kind()
            self.refuse(n, "%s, a pooling over the steps after %s on every step: rnnd "
                        "pools the last recurrent layer's output first and applies the head "
                        "(Linear, activations, LayerNorm) to the pooled row, and %s does not "
                        "commute with the pooling: pool before it" % (n.kind(), op, op))
        if self.stage != 2 or self.pool is not None:
            self.refuse(n, "%s, a pooling over the steps %s" % (n.kind(),
                "after another" if self.pool else "before the recurrent layers"
                if self.stage < 2 else "after the head"))
        self.pool = pool
        self.mark(out, 2)

    def is_time_axis(self, n, d, r):
        """Whether D (a constant dim of a rank-R tensor) is the recurrent output's time axis;
        refuses when that axis is not known."""
        if self.y_time is None or r not in (None, 3):
            self.refuse(n, "%s over the steps of an output whose time axis is not known (a "
                        "reshape or an unbatched input between the layer and it)" % n.kind())
        return isinstance(d, int) and not isinstance(d, bool) and d % 3 == self.y_time

    def pool_steps(self, n, k, ins, r):
        """y[:, -1] / y[-1] (last), y.mean(dim=t), y.max(dim=t).values, y.amax(t)."""
        out = list(n.outputs())[0]
        if k == "aten::select":
            ok_d, d = self.const(ins[1])
            ok_i, i = self.const(ins[2])
            if ok_d and not ok_i and _from_size(ins[2]):
                # y[:, x.size(1) - 1]: the last step, if the index is what it looks like
                self.refuse(n, "aten::select(dim %s) at an index computed from the input's "
                            "size (rnnd takes the last step, index -1 of the time axis, and "
                            "does not compute indices from sizes)" % d,
                            advice="write the last step as y[:, -1] (y[-1] time-major), or "
                            "pool with y.mean(1) or y.max(1).values")
            if not (ok_d and ok_i) or not self.is_time_axis(n, d, r) or i != -1:
                self.refuse(n, "aten::select(dim %s, index %s) of the output (rnnd takes the "
                            "last step, index -1 of the time axis)" % (d, i))
            return self.set_pool(n, "last", out)
        ok_d, d = self.const(ins[1])
        if k in ("aten::mean", "aten::amax") and ins[1].node().kind() == "prim::ListConstruct":
            items = [self.const(v) for v in ins[1].node().inputs()]
            ok_d = all(ok for ok, _ in items)
            d = [v for _, v in items]
        if isinstance(d, (list, tuple)):
            d = d[0] if len(d) == 1 else None
        ok_k, keep = self.const(ins[2]) if len(ins) > 2 else (True, False)
        extra = k == "aten::mean" and len(ins) > 3 and self.const(ins[3]) != (True, None)
        if k == "aten::max" and n.outputsSize() != 2:
            self.refuse(n, "aten::max of two tensors or of all elements (rnnd pools the steps "
                        "with y.max(dim=t).values)")
        if not ok_d or not self.is_time_axis(n, d, r) or not ok_k or extra:
            self.refuse(n, "%s over dim %s (keepdim %s) of the output (rnnd pools over the "
                        "time axis)" % (k, d, keep))
        self.set_pool(n, "mean" if k == "aten::mean" else "max", out)
        if keep:
            self.keepdim[out] = self.y_time     # squeezed over it next, or refused

    def squeeze_pooled(self, n, k, ins):
        """y.mean(t, keepdim=True).squeeze(t) (max likewise): the pooled row, [B, out]; any
        other use of the kept [B, 1, out] is refused."""
        d = self.keepdim[ins[0]] if ins and ins[0] in self.keepdim else None
        ok, sd = self.const(ins[1]) if k == "aten::squeeze" and len(ins) == 2 else (False, None)
        if d is None or not ok or not isinstance(sd, int) or sd % 3 != d:
            self.refuse(n, "%s of a pooling over the steps kept as a dim (keepdim=True); rnnd "
                        "takes it squeezed over that dim: .squeeze(%s)" % (k, d))
        self.mark(n.output(), 2)

    def final_state(self, n, k, ins):
        """h_n[-1] of a one-direction last layer, cat((h_n[-2], h_n[-1]), 1) of a
        bidirectional one: the final states of the last layer, i.e. pool final_state."""
        out = n.output()
        if k == "aten::select":
            ok_d, d = self.const(ins[1])
            ok_i, i = self.const(ins[2])
            i0 = i
            if ok_i and isinstance(i, int) and self.hn_rows and 0 <= i < self.hn_rows:
                i -= self.hn_rows       # h_n[0] of one layer is h_n[-1]
            if not (ok_d and ok_i and d == 0 and i in (-1, -2)) or \
                    self.taint[ins[0]] != ("hn",):
                self.refuse(n, "aten::select(dim %s, index %s) of h_n (rnnd takes the last "
                            "layer's: h_n[-1], or h_n[-2] and h_n[-1] of a bidirectional one)"
                            % (d, i0))
            if not self.bidir:
                if i != -1:
                    self.refuse(n, "h_n[%d] of a one-direction layer (another layer's final "
                                "state; rnnd takes the last layer's, h_n[-1])" % i0)
                return self.set_pool(n, "final_state", out)
            self.taint[out] = ("hn", i)     # one direction of a bidirectional last layer
            return
        parts = self.elems.get(ins[0], ())
        ok_d, d = self.const(ins[1])
        tags = [self.taint.get(p) for p in parts]
        if tags == [("hn", -1), ("hn", -2)] and ok_d and d in (1, -1):
            raise ConvertError(
                "forward() computes cat((h_n[-1], h_n[-2]), 1)%s, the backward direction "
                "first, which rnnd cannot serve: its final_state pooling joins the two "
                "directions forward first, cat((h_n[-2], h_n[-1]), 1); write that, and swap "
                "the halves of the first Linear's input columns to match (W[:, :H] and "
                "W[:, H:], H the hidden size), which computes the same"
                % where(n, self.module))
        if tags != [("hn", -2), ("hn", -1)] or not ok_d or d not in (1, -1):
            self.refuse(n, "aten::cat of %s (rnnd joins the final states of a bidirectional "
                        "last layer as cat((h_n[-2], h_n[-1]), dim=1))"
                        % ", ".join(str(t) for t in tags))
        self.set_pool(n, "final_state", out)

    def cell_loop(self, n):
        """A loop over the steps calling cells (nn.LSTMCell / GRUCell / RNNCell), as
        `for t in range(x.size(1)): h = cell(x[:, t], h); ys.append(h)`: one layer per cell,
        in the order the loop calls them, each fed the step or the previous cell's output.
        Anything else the loop computes on the data is refused."""
        ins = list(n.inputs())
        body = list(n.blocks())[0]
        if self.stage > 2:
            self.refuse(n, "a loop over cells after the head")
        self._appends = []
        # the trip count: the number of steps of the data
        size = ins[0].node()
        ok, d = (False, None)
        if size.kind() == "aten::size" and self.taint.get(list(size.inputs())[0]) == "data":
            ok, d = self.const(list(size.inputs())[1])
        if not ok or d not in (0, 1):
            self.refuse(n, "a loop whose trip count is not the number of steps (x.size(0) or "
                        "x.size(1))")
        if self.transposed:
            # the layout is read from d (loop_time_dim): it must be the input's own
            self.refuse(n, "a loop over cells on a transposed input; loop over x.size(1) with "
                        "x[:, t] for batch-first data instead")
        # the carried values: cells' states, from zeros
        carried_in, carried = ins[2:], list(body.inputs())[1:]
        for v in carried_in:
            ok0, val = self.const(v)
            if (ok0 and val is None) or v.node().kind() in ZERO_OPS:
                continue
            if self.taint.get(v) is not None or str(v.type()).startswith("Tensor"):
                self.refuse(n, "a loop over cells starting from %s, not zeros (rnnd starts "
                            "every sequence from zeros or a session's state)"
                            % v.node().kind())
        counter = list(body.inputs())[0]
        inner = {v: "state" for v in carried}
        cells = []
        self.loop_walk(body.nodes(), inner, counter, d, cells)
        if not cells:
            self.refuse(n, "a loop that calls no cell on the step")
        # the list the last cell's output is appended to, read after the loop by stack
        appended = [lst for lst, who in self._appends if who is cells[-1]]
        if len(appended) != 1 or len(self._appends) != 1:
            self.refuse(n, "a loop over cells that does not append the last cell's output to "
                        "one list")
        for b_out in list(body.outputs())[1:]:
            if str(b_out.type()).startswith(("Tensor", "Optional[Tensor]")) and \
                    b_out not in inner and b_out not in carried:
                self.refuse(n, "a loop over cells that sets a state it carries to %s%s, not "
                            "a cell's output" % (b_out.node().kind(), where(b_out.node())))
        self.cell_state_order(body, carried, cells)
        self.steps[appended[0]] = d
        self.time_dim = d
        self.counts["recurrent"] += len(cells)
        for o, b in zip(n.outputs(), list(body.outputs())[1:]):
            self.taint[o] = "state" if inner.get(b) else None
            if self.taint[o] is None:
                del self.taint[o]

    def cell_state_order(self, body, carried, cells):
        """Refuse an LSTM cell in the loop whose state (h, c) is fed crosswise: the h it is
        given carried from its c output or the other way round (`h, c = cell(x_t, (c, h))`,
        `c, h = cell(x_t, (h, c))`); rnnd's LSTM layer carries (h, c) as PyTorch's cell
        returns them (issue 14 F5)."""
        carried_set = set(carried)
        outs_of = list(body.outputs())[1:]
        for m in cells:
            if m.kind() != "aten::lstm_cell":
                continue
            hx, outs = list(m.inputs())[1], list(m.outputs())
            for pos, name in ((0, "h"), (1, "c")):
                p = _element_source(hx, pos, lambda v: v in carried_set)
                if p is None:
                    continue
                nxt = _source(outs_of[carried.index(p)], lambda v: v in outs)
                if nxt is not None and outs.index(nxt) != pos:
                    raise ConvertError(
                        "forward() passes the cell's %s output as its %s in the loop over "
                        "cells%s: an LSTM cell takes and returns its state as (h, c), and "
                        "rnnd carries it so; write h, c = cell(x[:, t], (h, c))"
                        % ("c" if pos == 0 else "h", name, where(m, self.module)))

    def loop_walk(self, nodes, inner, counter, d, cells):
        """Taint the loop body: INNER maps Values to "step" (the step x[:, t], and what
        the previous cell output), "state" or ("cell", node). Collects CELLS in order and
        the appends in self._appends."""
        if not hasattr(self, "_appends"):
            self._appends = []
        for m in nodes:
            k = m.kind()
            mins = list(m.inputs())
            self.writes_state(m, k, mins)
            data_in = [v for v in mins if self.taint.get(v) == "data"]
            tin = [v for v in mins if v in inner]
            if k == "prim::If":
                cond = _static_cond(mins[0], self.const)
                if cond is not None:
                    taken = list(m.blocks())[0 if cond else 1]
                    self.loop_walk(taken.nodes(), inner, counter, d, cells)
                    for i, o in enumerate(m.outputs()):
                        src = list(taken.outputs())[i]
                        if src in inner:
                            inner[o] = inner[src]
                    continue
                w = where(m)
                if not (w.startswith(" at ") and _in_torch(w[4:].split(":")[0])):
                    # the cell's own input checks (inlined from torch) decide nothing of the
                    # data; the user's branch may change the state at some steps only, which
                    # verification's lengths need not reach (issue 14 A4)
                    raise ConvertError(
                        "forward() branches inside its loop over cells%s: rnnd runs the cells "
                        "the same way at every step; remove the branch (a state reset or "
                        "change at some steps is not something rnnd can serve)"
                        % where_first(m))
                for b in m.blocks():
                    self.loop_walk(b.nodes(), inner, counter, d, cells)
                for i, o in enumerate(m.outputs()):
                    for b in m.blocks():
                        src = list(b.outputs())[i]
                        if src in inner:
                            inner[o] = inner[src]
                continue
            name = k.split("::")[-1]
            if k.startswith("aten::") and name.endswith("_") and not name.endswith("__"):
                # whatever it writes (a state reached through the list of outputs, ys[-1]):
                # rnnd's cells change no value in place (issue 14, fifth round, H4)
                self.refuse(m, "%s, an in-place write, inside a loop over cells" % k)
            if k in LIST_MUTATIONS:
                self.refuse(m, "%s inside a loop over cells" % k)
            if not data_in and not tin:
                if k in CELL_OPS:
                    self.refuse(m, "%s on something other than the step" % k)
                continue
            if k in SHAPE_OPS or k in ("prim::RaiseException", "aten::format", "aten::warn"):
                continue
            if k in ("aten::__contains__", "aten::eq", "aten::__not__", "aten::ne"):
                # a comparison of the step's values (an all-zero separator, a token id): what
                # reads it decides something from the data, refused below (issue 14, fifth
                # round, H3)
                for o in m.outputs():
                    inner[o] = "value"
                continue
            if k == "aten::slice" and data_in and mins[0] in data_in:
                okd, dim = self.const(mins[1])
                bounds = [self.const(v) for v in mins[2:4]]
                if d == 1 and okd and dim == 0 and all(b == (True, None) for b in bounds):
                    inner[m.output()] = "view"      # x[:, ...]: all of the batch
                    continue
                self.refuse(m, "aten::slice of the data inside a loop over cells")
            if k == "aten::slice" and inner.get(mins[0]) in ("step", "view") and \
                    self.full_slice(mins):
                inner[m.output()] = inner[mins[0]]      # x[:, t, :]: the trailing full ':'
                continue
            if k == "aten::select" and (mins[0] in data_in or inner.get(mins[0]) == "view"):
                okd, dim = self.const(mins[1])
                if okd and dim == d and mins[2] is counter:
                    inner[m.output()] = "step"
                    continue
                self.refuse(m, "aten::select of the data other than step t of the loop")
            if k in CELL_OPS:
                x = mins[0]
                want = "step" if not cells else ("cell", cells[-1])
                if inner.get(x) != want:
                    self.refuse(m, "%s whose input is not %s" % (
                        k, "the loop's step x[:, t] / x[t]" if not cells
                        else "the previous cell's output"))
                for v in mins[1:]:
                    if inner.get(v) in ("step", "view") or isinstance(inner.get(v), tuple):
                        self.refuse(m, "%s reading the data as its state" % k)
                cells.append(m)
                outs = list(m.outputs())
                inner[outs[0]] = ("cell", m)
                for o in outs[1:]:
                    inner[o] = "state"
                continue
            if k == "aten::append":
                lst, v = mins[0], mins[1]
                if isinstance(inner.get(v), tuple) and lst.node().kind() == \
                        "prim::ListConstruct" and not list(lst.node().inputs()):
                    self._appends.append((lst, inner[v][1]))
                    continue
                self.refuse(m, "aten::append of something other than a cell's output to an "
                            "empty list")
            if k in DROPOUT_OPS:
                self.active_dropout(m, mins)
            if k in PLUMBING or k in DROPOUT_OPS or k in ("aten::unsqueeze", "aten::squeeze"):
                if k in ("prim::TupleIndex", "prim::TupleUnpack", "prim::ListUnpack") and \
                        isinstance(inner.get(mins[0]), tuple):
                    # (h, c) of an LSTM cell: its first element is the output
                    outs = list(m.outputs())
                    src = inner[mins[0]]
                    for i, o in enumerate(outs):
                        inner[o] = src if i == 0 else "state"
                    continue
                t = [inner.get(v) for v in mins if v in inner]
                kind = t[0] if t else "step"
                for o in m.outputs():
                    inner[o] = kind
                continue
            self.refuse(m, "%s inside a loop over cells" % k)

    def stack_steps(self, n, ins):
        d = self.steps[ins[0]]
        ok, dim = self.const(ins[1])
        if not ok or dim != d:
            self.refuse(n, "aten::stack of the loop's outputs over dim %s, not the loop's "
                        "time dim %d" % (dim, d))
        self.stage = 2
        self.y_time = d         # so that torch.stack(ys, 1)[:, -1] pools the last step
        self.mark(n.output(), 3)

    def const(self, v):
        """(True, value) for a constant or an attribute of the module (self.flag), else
        (False, None)."""
        ok, val = _const(v)
        if ok:
            return ok, val
        n = v.node()
        if n.kind() == "prim::unchecked_cast":     # Optional[int] refined to int
            return self.const(n.input())
        if n.kind() == "prim::If":
            # a value chosen by a known condition (F.log_softmax's `if dim is None`)
            cond = _static_cond(list(n.inputs())[0], self.const)
            if cond is not None:
                i = list(n.outputs()).index(v)
                return self.const(list(list(n.blocks())[0 if cond else 1].outputs())[i])
            return False, None
        if self.module is None:
            return False, None
        path = []
        while v.node().kind() == "prim::GetAttr":
            path.append(v.node().s("name"))
            v = v.node().input()
        if not path or v is not list(self.graph.inputs())[0]:
            return False, None
        obj = self.module
        try:
            for name in reversed(path):
                obj = getattr(obj, name)
        except Exception:
            return False, None
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return True, obj
        return True, obj        # a submodule: not None

    def ranked_const(self, v, x, r):
        """self.const(V), where V may also be computed from aten::dim(X), R when known
        (F.softmax's implicit dim: prim::If on comparisons of the rank)."""
        def const(u):
            n = u.node()
            if n.kind() == "aten::dim" and n.input() is x and r is not None:
                return True, r
            if n.kind() == "prim::If":
                cond = _static_cond(list(n.inputs())[0], const)
                if cond is not None:
                    i = list(n.outputs()).index(u)
                    return const(list(list(n.blocks())[0 if cond else 1].outputs())[i])
                return False, None
            if n.kind() in _COMPARE and len(list(n.inputs())) == 2:
                (oka, a), (okb, b) = (const(w) for w in n.inputs())
                if oka and okb and isinstance(a, int) and isinstance(b, int):
                    return True, bool(_COMPARE[n.kind()](a, b))
                return False, None
            return self.const(u)
        return const(v)

    def copy(self, dst, src):
        """DST carries what SRC carries (taint, rank, tuple elements)."""
        if src in self.taint:
            self.taint[dst] = self.taint[src]
        if src in self.rank:
            self.rank[dst] = self.rank[src]
        if src in self.elems:
            self.elems[dst] = self.elems[src]
        if src in self.keepdim:
            self.keepdim[dst] = self.keepdim[src]
        if src in self.made:
            self.made[dst] = self.made[src]

    def plumbing(self, n, k, ins, kinds):
        """Tuples and lists: elements keep their own meaning where the graph says which is
        which, so (output, hidden) = rnn(x) separates the data from the state."""
        outs = list(n.outputs())
        if k in ("prim::TupleConstruct", "prim::ListConstruct"):
            self.elems[outs[0]] = ins
            self.taint[outs[0]] = "tuple"
            return
        if k == "prim::unchecked_cast":
            return self.copy(outs[0], ins[0])
        parts = self.elems.get(ins[0])
        if k in ("prim::TupleUnpack", "prim::ListUnpack") and parts is not None and \
                len(parts) == len(outs):
            for o, p in zip(outs, parts):
                self.copy(o, p)
            return
        if k == "prim::TupleIndex" and parts is not None:
            ok, i = self.const(ins[1])
            if ok and isinstance(i, int) and -len(parts) <= i < len(parts):
                return self.copy(outs[0], parts[i])
        # a mix the graph does not resolve: each element may be any of them
        t = "state" if kinds - {"data", "tuple", "hidden"} else \
            "hidden" if "hidden" in kinds else "data"   # forward(input, hidden)'s parts
        if "data" in kinds and t != "data":
            self.refuse(n, "%s mixing the data with a state" % k)
        for o in outs:
            self.taint[o] = t

    def mark(self, v, rank):
        self.taint[v] = "data"
        if rank is not None:
            self.rank[v] = rank
        self.made[v] = self.progress()

    def progress(self):
        """How far the walk is along the chain, in comparable form: two data Values made
        at different points (the input and the recurrent output) differ here."""
        return (self.stage, tuple(sorted(self.counts.items())), self.pool, self.transposed,
                self.norm, len(self.head_ops), self.pre is not None)

    def side_outputs(self, n, blocks):
        """Refuse a run-time branch whose sides return different data for one output: the
        computed output on one side and fresh zeros (torch.zeros_like(y), a constant) on
        the other, or two tensors made at different points of the chain (issue 14 F3)."""
        for i in range(n.outputsSize()):
            sides = [list(b.outputs())[i] for b in blocks]
            data = [self.taint.get(v) == "data" for v in sides]
            if not any(data):
                continue
            made = {self.made.get(v) for v in sides}
            if all(data) and (len(made) == 1 or None in made):
                continue
            what = ("the data on one side and a tensor made from no data (zeros, a "
                    "constant) on the other" if not all(data) else
                    "tensors computed at different points of the chain")
            raise ConvertError(
                "forward() branches on a value known only when it runs%s, and its two sides "
                "compute different things (they return %s); rnnd computes %s: make the "
                "condition a constant (a torch.jit.Final attribute) or remove the branch"
                % (where_first(n), what, CHAIN))

    def writes_state(self, n, k, ins):
        """Refuse a node that reads torch's run mode, or writes an attribute, parameter or
        buffer of the module (issue 14 F2, F3): verification runs each call in a forked
        child without gradients, so a later call, or a user's call with gradients on, can
        compute what was never checked."""
        if k in MODE_OPS:
            raise ConvertError("forward() reads %s%s: rnnd verifies and serves the module "
                               "without gradients, outside inference and autocast mode, and a "
                               "module that computes otherwise in another mode cannot be "
                               "checked; remove the check"
                               % (MODE_OPS[k], where(n, self.module).rstrip(":")))
        if k == "prim::SetAttr":
            raise ConvertError("forward() sets the module's attribute '%s'%s: state kept "
                               "between calls (a counter, a cache) that rnnd's model does not "
                               "hold and verification does not see change; keep forward() "
                               "free of writes to the module"
                               % (n.s("name"), where(n, self.module) or
                                  where(ins[-1].node(), self.module)))
        name = k.split("::")[-1]
        if k.startswith("aten::") and name.endswith("_") and not name.endswith("__") and ins:
            path, v = [], ins[0]
            for _ in range(64):
                # through views of it (self.fc.bias[:] += d): the write reaches the base
                # (issue 14, fifth round, H4)
                if v.node().kind() not in VIEW_OPS or not list(v.node().inputs()):
                    break
                v = list(v.node().inputs())[0]
            while v.node().kind() == "prim::GetAttr":
                path.append(v.node().s("name"))
                v = v.node().input()
            if path and v is list(self.graph.inputs())[0]:
                raise ConvertError("forward() changes the module's tensor '%s' in place (%s)"
                                   "%s: state kept between calls that rnnd's model does not "
                                   "hold and verification does not see change; keep forward() "
                                   "free of writes to the module"
                                   % (".".join(reversed(path)), k, where(n, self.module)))

    def recurrent(self, n, ins):
        if self.taint.get(ins[0]) == "hidden":
            self.refuse(n, "%s on a second input of forward() as its input sequence (an "
                        "encoder / decoder, or two input sequences): rnnd takes one input "
                        "sequence, and a second argument may only be the initial state; "
                        "convert the encoder and the decoder as two models" % n.kind())
        if self.taint.get(ins[0]) != "data":
            self.refuse(n, "%s whose input is not the data" % n.kind())
        if self.stage > 2:
            self.refuse(n, "%s after the head" % n.kind())
        for v in ins[1:]:
            if self.taint.get(v) == "data":
                self.refuse(n, "%s reading the data as its state" % n.kind())
            t = self.taint.get(v)
            if t == "state" or isinstance(t, tuple) or (
                    v in self.elems and not self.is_plain_hidden(v)):
                self.refuse(n, "%s starting from another layer's final state (an encoder / "
                            "decoder): rnnd starts every layer from zeros or a session's "
                            "state; convert the encoder and the decoder as two models, or "
                            "start the decoder from zeros" % n.kind())
        held = self.held_state(ins[1]) if len(ins) > 1 else None
        if held:
            self.refuse(n, "%s starting from a state the module holds ('%s', a learned "
                        "initial state): rnnd starts every sequence from zeros or from a "
                        "state given per request: call the module without it, and pass the "
                        "state as infer's initial_state or a session's state" % (n.kind(), held))
        made = self.computed_state(ins[1]) if len(ins) > 1 else None
        if made:
            self.refuse(n, "%s starting from a state computed by %s" % (n.kind(), made),
                        advice="rnnd starts every sequence from zeros or from a state given "
                        "per request, and a state computed from the length, the batch or a "
                        "loop differs for inputs verification need not meet; start from "
                        "zeros (torch.zeros(...)) or from forward()'s state argument")
        if len(ins) == 9:
            okp, p = self.const(ins[5])
            okt, train = self.train_flag(ins[6])
            if not ((okp and p == 0) or (okt and train is False)):
                self.refuse(n, "%s whose dropout between layers may be active (its train flag "
                            "%s): convert the module in eval mode"
                            % (n.kind(), "is True" if okt else "is computed when it runs"))
        if self.pool is not None:
            self.refuse(n, "%s after a pooling over the steps" % n.kind())
        if len(ins) > 1:
            self.state_order(n, ins[1])
        self.counts["recurrent"] += 1
        self.calls.append(_module_path(ins[2]) if len(ins) > 2 else None)
        self.stage = 2
        outs = list(n.outputs())
        self.mark(outs[0], 3)
        # aten::lstm / gru / rnn_*(input, hx, params, has_biases, num_layers, dropout, train,
        # bidirectional, batch_first): the output's time axis and its directions
        okb, bf = self.const(ins[-1]) if len(ins) == 9 else (False, None)
        okd, bd = self.const(ins[-2]) if len(ins) == 9 else (False, None)
        self.y_time = (1 if bf else 0) if okb and isinstance(bf, bool) else None
        self.bidir = bool(bd) if okd else None
        okl, nl = self.const(ins[4]) if len(ins) == 9 else (False, None)
        # the rows of h_n, num_layers * directions: with one row, h_n[0], h_n.squeeze(0) and
        # h_n.view(-1, H) are h_n[-1]
        self.hn_rows = nl * (2 if bd else 1) if okl and okd and isinstance(nl, int) else None
        self.hn_width = self.state_width(self.calls[-1])
        for v, t in list(self.taint.items()):
            if isinstance(t, tuple):
                self.taint[v] = "state"     # an earlier layer's h_n: not the last layer's
        for o in outs[1:]:
            self.taint[o] = "state"
        self.taint[outs[1]] = ("hn",)       # h_n (c_n of an lstm stays a plain state)


    def computed_state(self, v, depth=0):
        """The op that computes the untainted initial state V otherwise than as zeros (a
        torch.full of a value from the length, a side of a branch), or None: None, zeros,
        forward()'s state argument and what the taint follows pass."""
        if depth > 12 or v in self.taint:
            return None
        node = v.node()
        k = node.kind()
        if k in ZERO_OPS + ("aten::zero_", "prim::GetAttr", "prim::Uninitialized"):
            # a parameter or buffer: held_state names it; Uninitialized: a side that raises
            return None
        if k == "prim::Constant":
            ok, val = self.const(v)
            return None if not ok or val is None or not hasattr(val, "any") or \
                not bool(val.any()) else "a constant tensor other than zeros"
        if k in ("aten::full", "aten::full_like", "aten::new_full"):
            ok, val = self.const(list(node.inputs())[2 if k == "aten::new_full" else 1])
            return None if ok and val == 0 else k
        if k in ("prim::TupleConstruct", "prim::ListConstruct"):
            for u in node.inputs():
                why = self.computed_state(u, depth + 1)
                if why:
                    return why
            return None
        if k in ("prim::TupleUnpack", "prim::TupleIndex", "prim::ListUnpack",
                 "aten::__getitem__", "aten::select", "aten::index_select"):
            # an element of a tuple or list, a row: checked as the whole
            return self.computed_state(list(node.inputs())[0], depth + 1)
        if k in LAYOUT_OPS + ("prim::unchecked_cast", "aten::to", "aten::detach",
                              "aten::expand", "aten::repeat", "aten::type_as",
                              "aten::clone", "aten::cuda", "aten::cpu", "aten::float",
                              "aten::requires_grad_"):
            # the same values: zeros(...).requires_grad_() then detach() are zeros (a
            # branch on requires_grad is refused as reading grad mode)
            return self.computed_state(list(node.inputs())[0], depth + 1)
        if k == "prim::If":
            i = list(node.outputs()).index(v)
            cond = _static_cond(list(node.inputs())[0], self.const)
            blocks = list(node.blocks())
            if cond is not None:
                blocks = [blocks[0] if cond else blocks[1]]     # known at conversion
            mine = not _in_torch(where(node).split(":")[0][4:])
            for b in blocks:
                why = self.computed_state(list(b.outputs())[i], depth + 1)
                if why and (why.endswith(" in a branch") or len(blocks) == 1 or not mine):
                    return why      # nn.LSTM's own `if hx is None`: no branch of the user's
                if why:
                    return "%s in a branch" % why
            return None
        return k

    def held_state(self, v, depth=0):
        """The name of the parameter or buffer of the module that the initial state V (not
        the data) is computed from (self.h0.expand(...), a tuple of them), or None."""
        if depth > 12 or self.taint.get(v) in ("data", "hidden", "state") or \
                isinstance(self.taint.get(v), tuple):
            return None
        node = v.node()
        if node.kind() in ZERO_OPS + ("prim::Constant", "aten::zero_"):
            return None     # weight.new(...).zero_(): zeros of a parameter's type
        if node.kind() == "prim::GetAttr":
            return node.s("name") if str(v.type()).startswith(("Tensor", "Optional[Tensor]")) \
                else None
        if node.kind() == "prim::Loop":
            return None
        if node.kind() == "prim::If":
            i = list(node.outputs()).index(v)
            for b in node.blocks():
                name = self.held_state(list(b.outputs())[i], depth + 1)
                if name:
                    return name
            return None
        for u in node.inputs():
            if str(u.type()).startswith(("Tensor", "List[Tensor]", "(Tensor", "Tuple",
                                         "Optional[Tensor]")) or \
                    u.node().kind() in ("prim::ListConstruct", "prim::TupleConstruct"):
                name = self.held_state(u, depth + 1)
                if name:
                    return name
        return None


def _state_origin(v, inputs, depth=0):
    """(position of forward()'s input, (tuple indices...)) that V is, through tuple plumbing
    and branches, or None when V is anything else (zeros, a computed tensor)."""
    if depth > 50:
        return None
    if v in inputs:
        return (inputs.index(v), ())
    n = v.node()
    k = n.kind()
    ins = list(n.inputs())
    if k == "prim::unchecked_cast":
        return _state_origin(ins[0], inputs, depth + 1)
    if k in ("prim::TupleUnpack", "prim::ListUnpack", "prim::TupleIndex"):
        if k == "prim::TupleIndex":
            ok, i = _const(ins[1])
            if not ok or not isinstance(i, int):
                return None
        else:
            i = list(n.outputs()).index(v)
        return _element_origin(ins[0], i, inputs, depth + 1)
    if k == "prim::If":
        return _merge_origins(_state_origin(list(b.outputs())[list(n.outputs()).index(v)],
                                            inputs, depth + 1) for b in n.blocks())
    return None


def _merge_origins(found):
    """The one origin the sides of a branch agree on (a side that makes its own state, the
    zeros of `hx is None`, does not count), else None."""
    found = set(found)
    found.discard(None)
    return found.pop() if len(found) == 1 else None


def _source(v, stop, depth=0):
    """The Value V comes from through casts, squeezes, tuple plumbing and branches (the
    sides that agree; a side that makes its own, zeros, does not count) where STOP(Value)
    holds, or None."""
    if depth > 60:
        return None
    if stop(v):
        return v
    n = v.node()
    k = n.kind()
    ins = list(n.inputs())
    if k in ("prim::unchecked_cast", "aten::squeeze", "aten::unsqueeze") and ins:
        return _source(ins[0], stop, depth + 1)
    if k in ("prim::TupleUnpack", "prim::ListUnpack"):
        return _element_source(ins[0], list(n.outputs()).index(v), stop, depth + 1)
    if k == "prim::TupleIndex":
        ok, i = _const(ins[1])
        return _element_source(ins[0], i, stop, depth + 1) if ok and isinstance(i, int) \
            else None
    if k == "prim::If":
        i = list(n.outputs()).index(v)
        return _merge_origins(_source(list(b.outputs())[i], stop, depth + 1)
                              for b in n.blocks())
    return None


def _element(t, i, part, depth, limit, whole=None):
    """Element I of the tuple or list T followed through TupleConstruct / ListConstruct,
    unchecked_cast and branches (the sides that agree, _merge_origins): PART(element,
    depth) of the element found; where T is none of those, WHOLE(T, depth) (None: None).
    DEPTH beyond LIMIT gives None."""
    if depth > limit:
        return None
    n = t.node()
    k = n.kind()
    if k in ("prim::TupleConstruct", "prim::ListConstruct"):
        parts = list(n.inputs())
        return part(parts[i], depth + 1) if -len(parts) <= i < len(parts) else None
    if k == "prim::unchecked_cast":
        return _element(n.input(), i, part, depth + 1, limit, whole)
    if k == "prim::If":
        j = list(n.outputs()).index(t)
        return _merge_origins(_element(list(b.outputs())[j], i, part, depth + 1, limit, whole)
                              for b in n.blocks())
    return whole(t, depth) if whole is not None else None


def _element_origin(t, i, inputs, depth):
    """_state_origin of element I of the tuple or list T: of the element, or of T itself
    with I added to its path."""
    def whole(t, depth):
        o = _state_origin(t, inputs, depth + 1)
        return None if o is None else (o[0], o[1] + (i,))
    return _element(t, i, lambda v, d: _state_origin(v, inputs, d), depth, 50, whole)


def _element_source(t, i, stop, depth=0):
    """_source of element I of the tuple or list T."""
    return _element(t, i, lambda v, d: _source(v, stop, d), depth, 60)


def _module_path(params):
    """The submodule name ("rnn", "enc.gru") whose weights PARAMS (a recurrent operator's
    weight list: self.rnn._flat_weights, or a list of self.rnn.weight_ih_l0, ...) are, or
    None."""
    v = params
    if v.node().kind() == "prim::ListConstruct":
        ins = list(v.node().inputs())
        if not ins:
            return None
        v = ins[0]
    path = []
    while v.node().kind() == "prim::GetAttr":
        path.append(v.node().s("name"))
        v = v.node().input()
    if len(path) < 2:
        return None
    return ".".join(reversed(path[1:]))


def _cells_in(loop):
    """Whether a prim::Loop calls a cell anywhere in its body."""
    def walk(nodes):
        for m in nodes:
            if m.kind() in CELL_OPS:
                return True
            if any(walk(b.nodes()) for b in m.blocks()):
                return True
        return False
    return any(walk(b.nodes()) for b in loop.blocks())


def _permute_dims(v):
    """The constant dims of a permute (a list of constants, or one constant list), or
    None."""
    n = v.node()
    if n.kind() == "prim::ListConstruct":
        vals = [_const(d) for d in n.inputs()]
        p = [d for ok, d in vals] if all(ok for ok, _ in vals) else None
    else:
        ok, p = _const(v)
    if not isinstance(p, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in p):
        return None
    return list(p)


def _swaps_batch_time(dims, rank):
    """Whether DIMS, a permute's dims for a tensor of RANK (None: unknown, then the list's
    length), swaps axes 0 and 1 and keeps the rest: x.permute(1, 0, 2), the transpose(0, 1)
    a time-major RNN needs (user finding U2)."""
    p = _permute_dims(dims)
    if p is None:
        return False
    r = len(p) if rank is None else rank
    if len(p) != r or r < 2 or any(not -r <= d < r for d in p):
        return False
    return [d % r for d in p] == [1, 0] + list(range(2, r))


def transposed_before(rec):
    """Whether the input of REC (a recurrent operator) is forward()'s input with its batch
    and time axes swapped: an odd number of transpose(0, 1) on the way from the graph input
    (through embedding, dropout, views)."""
    swapped = False
    v = list(rec.inputs())[0]
    for _ in range(1000):
        n = v.node()
        k = n.kind()
        ins = list(n.inputs())
        if k == "prim::Param" or not ins:
            break
        if k == "aten::transpose":
            dims = {_const(ins[1])[1], _const(ins[2])[1]}
            if dims == {0, 1} or dims == {-3, 1} or dims == {0, -2}:
                swapped = not swapped
        if k == "aten::permute" and _swaps_batch_time(ins[1], None):
            swapped = not swapped
        if k == "aten::t":
            swapped = not swapped       # the analysis took it on a rank-2 tensor alone
        v = ins[1] if k == "aten::embedding" else ins[0]
    return swapped


def loop_time_dim(graph):
    """The time dim (0 or 1) of the first cell loop in GRAPH, read from its trip count
    (x.size(d)), or None."""
    for n in graph.nodes():
        if n.kind() == "prim::Loop" and _cells_in(n):
            size = list(n.inputs())[0].node()
            if size.kind() == "aten::size":
                ok, d = _const(list(size.inputs())[1])
                if ok and d in (0, 1):
                    return d
    return None


def analyse(module, input_kind, eval_made=False):
    """The Analysis of MODULE's forward() (a ScriptModule), or None for a scripted bare
    recurrent module, which has no forward() of its own (its overloads are PyTorch's).
    EVAL_MADE: MODULE was scripted or traced by the converter, in eval mode."""
    try:
        graph = module.inlined_graph
    except Exception:
        graph = None
    if graph is None:
        # only torch's own recurrent modules may go unanalysed: any other module without a
        # forward() would be verified through a method of its own, never analysed (issue 14,
        # fifth round, H8: a forward__0 that branches on the length)
        try:
            qual = module._c._type().qualified_name()
            names = sorted(module._c._method_names())
        except Exception:
            qual, names = "", []
        if not names or (qual.split(".")[-1] in ("LSTM", "GRU", "RNN") and
                         ".torch.nn.modules.rnn." in qual):
            return None     # no method at all runs: nothing for verification to run
        raise ConvertError("the TorchScript module (%s) has no forward(), only the methods "
                           "%s: rnnd-convert converts what forward() computes; script a "
                           "module whose forward() runs the model"
                           % (qual or "?", ", ".join(names) or "(none)"))
    return Analysis(graph, 2 if input_kind == "tokens" else 3, module, eval_made).run()
