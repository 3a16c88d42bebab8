"""The initial-state inputs of an ONNX graph (word_language_model's h0 and c0): which
recurrent node reads which rows of them, checked against PyTorch's layout, the one rnnd's
state maps to (issue 14, adversary finding 3).

PyTorch exports forward(x, (h0, c0)) with the state inputs after the data, h before c, each
[layers * directions, batch, hidden], and every LSTM / GRU / RNN node reads its own rows
(Slice or Gather of rows o .. o + directions, o the directions of the nodes before it)
as initial_h / initial_c. rnnd's state per sequence is, per layer and direction, h then an
LSTM's c (reference.py). wiring() follows each node's initial states back to the graph
input through the operators onnx_import lets them pass (EXTRA_PASS), computes them on a
tensor of row labels, and refuses anything else by name: rows permuted or read twice, h and
c crosswise, one input read as both. feeds() builds the inputs from rnnd states for
verify.py, which runs the graph from random initial states.
"""
import numpy as np

from .errors import ConvertError
from .onnx_import import EXTRA_PASS, RECURRENT, _attrs, _live_nodes, _tensor

_SLOTS = ((5, "initial_h"), (6, "initial_c"))
_LABEL_BATCH = 2


def _recurrent_nodes(graph):
    """[(node, row offset, directions, hidden)] of the live LSTM / GRU / RNN nodes, in order."""
    inits = {t.name: t for t in graph.initializer}
    live = _live_nodes(graph.node, graph.output)
    out, row = [], 0
    for k, node in enumerate(graph.node):
        if k not in live or node.op_type not in RECURRENT:
            continue
        nd = 2 if _attrs(node).get("direction", "forward") == "bidirectional" else 1
        R = inits.get(node.input[2]) if len(node.input) > 2 else None
        H = int(R.dims[-1]) if R is not None and len(R.dims) == 3 else None
        out.append((node, row, nd, H))
        row += nd
    return out


def _chain(graph, name, state_names):
    """(graph input, [nodes from it to NAME]) when NAME is computed from one state input
    through EXTRA_PASS operators only, else (None, None)."""
    producer = {o: n for n in graph.node for o in n.output if o}
    chain = []
    while name not in state_names:
        node = producer.get(name)
        if node is None or node.op_type not in EXTRA_PASS or not node.input:
            return None, None
        chain.append(node)
        name = node.input[0]
    return name, chain[::-1]


def _constants(graph):
    """Initializers and Constant nodes' values by name."""
    out = {t.name: _tensor(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            a = _attrs(n)
            for k in ("value", "value_float", "value_floats", "value_int", "value_ints"):
                if k in a:
                    out[n.output[0]] = np.asarray(a[k])
    return out


def wiring(proto, importer):
    """[(input name, "h" | "c")] of the graph's state inputs in their order, or [] when it has
    none; raises ConvertError where a node reads them otherwise than PyTorch's layout."""
    from .onnx_run import _Graph
    graph = proto.graph
    names = [i.name for i in graph.input if i.name in importer.state_inputs]
    if not names:
        return []
    nodes = _recurrent_nodes(graph)
    rows = sum(nd for _, _, nd, _ in nodes)
    consts = _constants(graph)
    run = _Graph(proto)
    roles = {}

    def label(node):
        return "node '%s' (%s)" % (node.name or node.output[0], node.op_type)
    for node, o, nd, H in nodes:
        for slot, what in _SLOTS:
            if len(node.input) <= slot or not node.input[slot]:
                continue
            src, chain = _chain(graph, node.input[slot], set(names))
            if src is None:
                continue        # zeros, or nothing onnx_import let through
            roles.setdefault(src, set()).add(what)
            # the rows of SRC this node reads: a tensor whose every element is its row
            x = np.broadcast_to(np.arange(rows, dtype=np.float64)[:, None, None],
                                (rows, _LABEL_BATCH, H or 1)).copy()
            try:
                for c in chain:
                    ins = [x] + [consts.get(n) if n else None for n in c.input[1:]]
                    if any(n and consts.get(n) is None for n in c.input[1:]):
                        raise KeyError(c.input[1])
                    x = getattr(run, "op_" + c.op_type)(ins, _attrs(c), len(c.output))
                    x = x[0] if isinstance(x, (list, tuple)) else x
            except Exception:
                continue        # not computable on labels here: the verification run shows it
            want = np.arange(o, o + nd, dtype=np.float64)
            x = np.asarray(x, dtype=np.float64)
            if x.ndim == 2:
                x = x[None]
            if x.ndim != 3 or x.shape[0] != nd or not all(
                    np.all(x[d] == want[d]) for d in range(nd)):
                # per direction the row it reads, or the rows it mixes
                got = []
                for part in (x if x.ndim == 3 else [x]):
                    u = sorted({int(v) for v in np.unique(part)})
                    got.append(u[0] if len(u) == 1 else u)
                raise ConvertError(
                    "%s: %s reads rows %s of graph input '%s' (rearranged on its way in); in "
                    "PyTorch's layout, which rnnd's state follows, this node's %s is rows %s "
                    "(layers * directions first); feed the state in that order"
                    % (label(node), what, got, src,
                       "layer" if nd == 1 else "directions", list(range(o, o + nd))))
    both = [n for n in names if len(roles.get(n, ())) > 1]
    if both:
        raise ConvertError("graph input '%s' is read both as initial_h and as initial_c; "
                           "rnnd's state holds h and c apart" % both[0])
    out = []
    for n in names:
        r = roles.get(n)
        out.append((n, "c" if r == {"initial_c"} else "h"))
    if [r for _, r in out] == ["c", "h"]:
        raise ConvertError("graph input '%s', the first state input, is read as initial_c and "
                           "'%s' as initial_h (crosswise): PyTorch's state, which rnnd's "
                           "follows, is (h, c); export forward(x, (h, c)) in that order"
                           % (out[0][0], out[1][0]))
    return out


def feeds(wires, model, states, types=None):
    """{input name: array} for the graph's state inputs from STATES (one flat rnnd state per
    sequence: per layer and direction h [out], then c [hidden] for an LSTM), in PyTorch's
    layout [layers * directions, batch, size], of the element type TYPES gives by name
    (float32 else); None when MODEL's layers cannot be stacked that way (unequal sizes)."""
    layers = model.layers
    if not layers or any(L.type not in ("lstm", "gru", "rnn") for L in layers):
        return None
    P = {L.out_dim for L in layers}
    H = {L.hidden_size for L in layers}
    if len(P) != 1 or len(H) != 1:
        return None
    P, H = P.pop(), H.pop()
    lstm = layers[0].type == "lstm"
    if any((L.type == "lstm") != lstm for L in layers):
        return None
    per = P + (H if lstm else 0)
    n = sum(L.num_directions for L in layers)
    flat = np.asarray(states, dtype=np.float64).reshape(len(states), n, per)
    h = np.ascontiguousarray(flat[:, :, :P].transpose(1, 0, 2))
    c = np.ascontiguousarray(flat[:, :, P:].transpose(1, 0, 2)) if lstm else None
    out = {}
    for name, role in wires:
        if role == "c" and c is None:
            return None
        out[name] = (c if role == "c" else h).astype((types or {}).get(name, np.float32))
    return out


def mask(wires, model):
    """A bool per float of MODEL's state: True where the graph's state inputs (WIRES) carry
    it. A graph with initial_h alone starts c from zeros: rnnd's c is zero too in the check."""
    roles = {r for _, r in wires}
    out = []
    for L in model.layers:
        for _ in range(L.num_directions):
            out += [("h" in roles)] * L.out_dim
            if L.type == "lstm":
                out += [("c" in roles)] * L.hidden_size
    return np.array(out, dtype=bool)
