"""The initial-state inputs of an ONNX graph (word_language_model's h0 and c0): which
recurrent node reads which rows of them, checked against PyTorch's layout, the one rnnd's
state maps to (issue 14, adversary finding 3).

PyTorch exports forward(x, (h0, c0)) with the state inputs after the data, h before c, each
[layers * directions, batch, hidden], and every LSTM / GRU / RNN node reads its own rows
(Slice or Gather of rows o .. o + directions, o the directions of the nodes before it)
as initial_h / initial_c. rnnd's state per sequence is, per layer and direction, h then an
LSTM's c (reference.py).

Every check of those rows lives here, in two steps. During onnx_import's walk,
pass_value() follows the rows a state input keeps on its way (Slice, Gather: symbolic row
lists), claim() checks each recurrent node's initial_h / initial_c against the rows its
layer owns and check_complete() that every layer got its states, h before c: these name the
node and fire first. After the walk, wiring() follows each node's initial states back to the graph
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


# ---- during the importer's walk (IMP: an onnx_import.Importer) --------------------------
def pass_value(imp, node, v, ins):
    """The EXTRA value NODE makes of a state input V: the rows of its first axis it
    keeps, as torch slices its `hidden` per layer (Slice, Gather), or not exact where it
    rearranges anything else (a Transpose, Reshape, a Cast to integers)."""
    import onnx
    op, a = node.op_type, _attrs(node)
    out = v.but()
    rows, rank = v.rows, v.rank
    if not v.exact:
        return out
    try:
        if op in ("Identity",):
            return out
        if op == "Cast":
            if a.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
                out.exact = False
            return out
        if op == "Slice":
            if imp.opset < 10:
                starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
            else:
                vals = [ins[i] if len(ins) > i else None for i in range(1, 5)]
                starts, ends, axes, steps = [None if q is None else
                                             [int(e) for e in np.asarray(q.value).ravel()]
                                             for q in vals]
            axes = axes if axes is not None else list(range(len(starts)))
            steps = steps if steps is not None else [1] * len(starts)
            for s0, e0, ax, st in zip(starts, ends, axes, steps):
                if rank is None or int(ax) % rank != 0 or v.squeezed:
                    if not (s0 == 0 and e0 >= 2 ** 31 - 1 and st == 1):
                        out.exact = False
                elif rows is not None:
                    out.rows = rows = rows[slice(int(s0), int(e0), int(st))]
                elif s0 >= 0 and st == 1 and e0 >= 2 ** 31 - 1 and s0 == 0:
                    pass
                elif s0 >= 0 and st == 1 and 0 <= e0 < 2 ** 31 - 1:
                    out.rows = rows = list(range(int(s0), int(e0)))
                else:
                    out.exact = False
            return out
        if op == "Gather":
            idx = np.asarray(ins[1].value).astype(np.int64)
            if rank is None or a.get("axis", 0) % rank != 0 or v.squeezed or idx.ndim > 1:
                out.exact = False
                return out
            if rows is None:
                if np.any(idx < 0):
                    out.exact = False
                    return out
                picked = [int(i) for i in idx.ravel()]
            else:
                picked = [rows[int(i)] for i in idx.ravel()]
            out.rows = picked
            if idx.ndim == 0:
                out.squeezed, out.rank = True, rank - 1
            return out
        if op == "Unsqueeze" and v.squeezed:
            axes = imp.data_axes(node, a, ins, 1)
            if axes is not None and [k % (rank + 1) for k in axes] == [0]:
                out.squeezed, out.rank = False, rank + 1
                return out
        if op == "Transpose" and rank is not None and \
                list(a.get("perm", range(rank)[::-1])) == list(range(rank)):
            return out
    except (IndexError, KeyError, TypeError, ValueError, AttributeError):
        pass
    out.exact = False
    return out

def claim(imp, v, what, nd, layout):
    """Check that the state input V feeding WHAT of the next layer holds exactly that
    layer's rows, as rnnd's initial state gives them (torch's `hidden`: [layers *
    directions, batch, hidden], h then c), and record it. An input read by several layers
    gives them its rows in their order; one module's input read by its layers alone (a
    forward(x, h1, h2) of two modules, sizes that differ) starts at its row 0 (V2)."""
    k = len(imp.model.layers)
    claims = imp.state_claims.setdefault(v.origin, [])
    o = sum(len(r) for _, r in claims if r is not None)
    want = list(range(o, o + nd))
    way = ("rnnd's initial state (infer's initial_state, a session's state) gives layer "
           "%d rows %s of torch's [layers * directions, batch, hidden]" % (k, want))
    if layout != 0:
        imp.fail("%s comes from graph input '%s' into a layout-1 node; rnnd-convert "
                  "follows a state input only into layout 0" % (what, v.origin))
    if not v.exact or v.squeezed or v.rank not in (3, None) or (
            v.rank is None and v.rows is not None):
        imp.fail("%s comes from graph input '%s' rearranged (not only sliced by rows of "
                  "its first axis); %s, so the converted model would start from another "
                  "state than the source" % (what, v.origin, way))
    if (v.rows is None and claims) or any(r is None for _, r in claims) or \
            (v.rows is not None and v.rows != want):
        imp.fail("%s of layer %d comes from rows %s of graph input '%s'; %s, so the "
                  "converted model would start from another state than the source"
                  % (what, k, "all" if v.rows is None else v.rows, v.origin, way))
    role = imp.state_roles.setdefault(v.origin, what)
    if role != what:
        imp.fail("graph input '%s' feeds %s here and %s of another layer" % (
            v.origin, what, role))
    claims.append((k, v.rows))
    imp.layer_states.setdefault(k, set()).add(what)

def check_complete(imp):
    """When a graph input gives initial states, it gives every layer's, h before c in the
    graph's inputs (rnnd's initial state: h then c of each layer; a layer started from
    zeros in the source would start from the request's state in rnnd)."""
    if not imp.state_inputs:
        return
    for k, L in enumerate(imp.model.layers):
        want = {"initial_h", "initial_c"} if L.type == "lstm" else {"initial_h"}
        got = imp.layer_states.get(k, set())
        if got != want:
            raise ConvertError(
                "the graph takes initial states as inputs, but layer %d starts its %s from "
                "zeros; rnnd's initial state gives every layer's h%s, so the converted "
                "model would start that layer from another state than the source"
                % (k, " and ".join(sorted(want - got)),
                   " and c" if L.type == "lstm" else ""))
    # each layer's h input before its c input, as torch's (h_0, c_0)
    fed = {}
    for n in imp.state_inputs:
        for k, _ in imp.state_claims.get(n, ()):
            fed.setdefault(k, {})[imp.state_roles[n]] = n
    for k in sorted(fed):
        roles = fed[k]
        if "initial_c" in roles and imp.extra_order.index(roles["initial_h"]) > \
                imp.extra_order.index(roles["initial_c"]):
            raise ConvertError(
                "graph input '%s' feeds initial_c and '%s', a later input, initial_h; rnnd's "
                "initial state is h then c (torch's (h_0, c_0)), so the converted model "
                "would swap them: give the inputs in the order (h_0, c_0)"
                % (roles["initial_c"], roles["initial_h"]))


# ---- after the walk: the wiring, computed on row labels ---------------------------------
def wiring(proto, importer):
    """[(input name, "h" | "c", [layers it feeds])] of the graph's state inputs in their
    order, or [] when it has none; raises ConvertError where a node reads them otherwise
    than PyTorch's layout (each input's rows given to the layers that read it, in their
    order). The rows are computed here on labels, by onnx_run's operators, where claim()
    followed them symbolically during the walk: a second reading, for an operator the two
    read apart."""
    from .onnx_run import _Graph
    graph = proto.graph
    names = [i.name for i in graph.input if i.name in importer.state_inputs]
    if not names:
        return []
    nodes = _recurrent_nodes(graph)
    rows = sum(nd for _, _, nd, _ in nodes)
    declared = {}
    for i in graph.input:
        dims = i.type.tensor_type.shape.dim if i.type.HasField("tensor_type") else []
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            declared[i.name] = int(dims[0].dim_value)
    consts = _constants(graph)
    run = _Graph(proto)
    roles, used = {}, {}

    def label(node):
        return "node '%s' (%s)" % (node.name or node.output[0], node.op_type)
    for node, _, nd, H in nodes:
        for slot, what in _SLOTS:
            if len(node.input) <= slot or not node.input[slot]:
                continue
            src, chain = _chain(graph, node.input[slot], set(names))
            if src is None:
                continue        # zeros, or nothing onnx_import let through
            roles.setdefault(src, set()).add(what)
            o = used.get(src, 0)
            used[src] = o + nd
            # the rows of SRC this node reads: a tensor whose every element is its row
            n = declared.get(src, rows)
            x = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None],
                                (n, _LABEL_BATCH, H or 1)).copy()
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
        out.append((n, "c" if r == {"initial_c"} else "h",
                    [k for k, _ in importer.state_claims.get(n, ())]))
    if [w[1] for w in out] == ["c", "h"]:
        raise ConvertError("graph input '%s', the first state input, is read as initial_c and "
                           "'%s' as initial_h (crosswise): PyTorch's state, which rnnd's "
                           "follows, is (h, c); export forward(x, (h, c)) in that order"
                           % (out[0][0], out[1][0]))
    return out


def _blocks(model):
    """{(layer, direction): (offset of h, its size, offset of c or None, its size)} in rnnd's
    flat state (per layer and direction h [out], then c [hidden] for an LSTM), and its
    size."""
    out, o = {}, 0
    for k, L in enumerate(model.layers):
        for d in range(L.num_directions):
            c = L.hidden_size if L.type == "lstm" else 0
            out[(k, d)] = (o, L.out_dim, o + L.out_dim if c else None, c)
            o += L.out_dim + c
    return out, o


def feeds(wires, model, states, types=None):
    """{input name: array} for the graph's state inputs (WIRES, wiring()) from STATES (one
    flat rnnd state per sequence), each in PyTorch's layout [its layers * directions, batch,
    size] for the layers it feeds, of the element type TYPES gives by name (float32 else);
    None when MODEL's state cannot be given that way (a layer other than LSTM / GRU / RNN,
    layers of unequal sizes read from one input, c of a layer without one)."""
    if not model.layers or any(L.type not in ("lstm", "gru", "rnn") for L in model.layers):
        return None
    blocks, size = _blocks(model)
    flat = np.asarray(states, dtype=np.float64).reshape(len(states), size)
    out = {}
    for name, role, layers in wires:
        parts = []
        for k in layers:
            for d in range(model.layers[k].num_directions):
                ho, hn, co, cn = blocks[(k, d)]
                if role == "c" and co is None:
                    return None
                o, n = (co, cn) if role == "c" else (ho, hn)
                parts.append(flat[:, o:o + n])
        if not parts or len({p.shape[1] for p in parts}) != 1:
            return None
        out[name] = np.ascontiguousarray(np.stack(parts)).astype(
            (types or {}).get(name, np.float32))
    return out


def mask(wires, model):
    """A bool per float of MODEL's state: True where the graph's state inputs (WIRES) carry
    it. A graph with initial_h alone starts c from zeros: rnnd's c is zero too in the check."""
    fed = {(k, role) for _, role, layers in wires for k in layers}
    out = []
    for k, L in enumerate(model.layers):
        for _ in range(L.num_directions):
            out += [(k, "h") in fed] * L.out_dim
            if L.type == "lstm":
                out += [(k, "c") in fed] * L.hidden_size
    return np.array(out, dtype=bool)
