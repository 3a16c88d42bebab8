"""The reference modules of tools/rnnd_modules (one per layer type or option the format has
but PyTorch lacks: MinGRU, MinLSTM, Clockwork, the depth-gated LSTM) in a live
torch.nn.Module: recognised by their `rnnd_type` class attribute and read parameter for
parameter, since their parameters are already in the format's layout.

A module converts here when it holds at least one of them: then, in registration order, at
most one nn.Embedding, the reference modules (each contributing its num_layers layers), at
most one nn.Linear (the head) and at most one nn.Softmax / nn.LogSoftmax; nothing else with
parameters. The modules' own forward() (Python loops) is not analysed: verification at
conversion (verify.py) runs it and refuses a module that computes anything else; the
forward() around them must be a plain chain of submodule calls (check_chain, which
from_module runs after verification, for this door and torch_slstm.py's).
"""
import ast

import numpy as np

from .arch import ConvertError, Layer, Model, f32, fill_biases, make_act


def _min_layers(m, label):
    """The layers of an rnnd_modules MinGRU / MinLSTM."""
    kind = m.rnnd_type
    G = 2 if kind == "mingru" else 3
    H = int(m.hidden_size)
    cand = getattr(m, "candidate", "identity")
    if cand not in ("identity", "tanh"):
        raise ConvertError("%s: candidate %r is not one the format takes here" % (label, cand))
    params = dict(m.named_parameters(recurse=False))
    layers = []
    for k in range(int(m.num_layers)):
        W = params.get("weight_l%d" % k)
        if W is None or W.dim() != 2 or W.shape[0] != G * H:
            raise ConvertError("%s: weight_l%d must be [%d, in]" % (label, k, G * H))
        L = Layer(kind, H, "forward")
        if cand == "tanh":
            L.activations = [[make_act("Sigmoid"), make_act("Tanh")]]
        b = params.get("bias_l%d" % k)
        L.weights.append({"W": f32(_np(W)), "Wb": None if b is None else f32(_np(b))})
        fill_biases(L)
        layers.append(L)
    extra = sorted(set(params) - {"weight_l%d" % k for k in range(len(layers))}
                   - {"bias_l%d" % k for k in range(len(layers))})
    if extra:
        raise ConvertError("%s: parameter %s is not understood" % (label, extra[0]))
    return layers


def _clock_layers(m, label):
    """The layers of an rnnd_modules Clockwork: its equations are the layer's own (its loop, a
    mask per step, is no pattern torch_graph.py allows, nor need be); R is written times the
    module's block mask, exactly the weights its forward() uses."""
    op = {"tanh": "Tanh", "relu": "Relu", "softsign": "Softsign"}.get(m.activation)
    if op is None:
        raise ConvertError("%s: activation %r has no rnnd equivalent" % (label, m.activation))
    layers = []
    for k in range(int(m.num_layers)):
        L = Layer("clockwork", int(m.hidden_size), periods=[int(p) for p in m.periods],
                  activations=[[make_act(op)]])
        W, R, Wb, Rb = m.weights(k)
        L.weights = [{"W": f32(_np(W)), "R": f32(_np(R)), "Wb": f32(_np(Wb)),
                      "Rb": f32(_np(Rb))}]
        layers.append(L)
    return layers


def _dglstm_layers(m, label):
    """The lstm layers of an rnnd_modules DGLSTM: layer 0 plain, the others depth-gated (their
    D, Dc, Dl, Db beside W, R, Wb, Rb)."""
    params = dict(m.named_parameters(recurse=False))
    H, K = int(m.hidden_size), int(m.num_layers)
    layers, used = [], set()
    for k in range(K):
        names = ("W", "R", "Wb", "Rb") + (("D", "Dc", "Dl", "Db") if k else ())
        w = {}
        for n in names:
            key = "%s_l%d" % (n, k)
            if key not in params:
                raise ConvertError("%s: parameter %s missing" % (label, key))
            w[n] = f32(_np(params[key]))
            used.add(key)
        if w["W"].shape[0] != 4 * H:
            raise ConvertError("%s: W_l%d must have %d rows" % (label, k, 4 * H))
        L = Layer("lstm", H, "forward", depth_gate=k >= 1)
        L.weights.append(w)
        layers.append(L)
    extra = sorted(set(params) - used)
    if extra:
        raise ConvertError("%s: parameter %s is not understood" % (label, extra[0]))
    return layers


# rnnd_type -> function(module, label) -> [Layer]
READERS = {"mingru": _min_layers, "minlstm": _min_layers, "clockwork": _clock_layers,
           "dglstm": _dglstm_layers}


def _np(t):
    return t.detach().to("cpu").double().numpy()


def is_reference(m):
    return getattr(type(m), "rnnd_type", None) in READERS


def model_from_reference(module, input=None, head=None, norm=None):
    """A Model when MODULE is or holds reference modules (above), else None. INPUT, HEAD and
    NORM as for from_module (the names of submodules are not taken here)."""
    import torch
    nn = torch.nn
    # anything else (not a module at all included) is model_from_module's to judge
    if not isinstance(module, nn.Module) or not any(is_reference(m) for m in module.modules()):
        return None
    embs, refs, lins, norms = [], [], [], []
    for n, m in module.named_modules():
        label = "module '%s' (%s)" % (n or "<top>", type(m).__name__)
        if is_reference(m):
            refs.append((label, m))
        elif any(True for _ in m.named_parameters(recurse=False)) and \
                not isinstance(m, (nn.Embedding, nn.Linear)):
            raise ConvertError("%s: rnnd_modules layers convert with nn.Embedding, nn.Linear "
                               "and a softmax around them, nothing else that has parameters"
                               % label)
        elif isinstance(m, nn.Embedding):
            embs.append((label, m))
        elif isinstance(m, nn.Linear):
            lins.append((label, m))
        elif isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            norms.append((label, m))
    model = Model()
    for label, m in refs:
        layers = READERS[type(m).rnnd_type](m, label)
        in_dim = layers[0].weights[0]["W"].shape[1]
        if model.layers:
            if in_dim != model.layers[-1].out_dim:
                raise ConvertError("%s takes %d inputs but the layer before it outputs %d"
                                   % (label, in_dim, model.layers[-1].out_dim))
        else:
            model.input_dim = int(in_dim)
        model.layers += layers
    if len(model.layers) > 64:
        raise ConvertError("%d recurrent layers; rnnd takes at most 64" % len(model.layers))

    if len(embs) > 1:
        raise ConvertError("%d Embedding modules; rnnd takes one" % len(embs))
    if embs and input == "vectors":
        raise ConvertError("input='vectors' but the module has an Embedding")
    if not embs and input == "tokens":
        raise ConvertError("input='tokens' but the module has no nn.Embedding")
    if isinstance(input, int) and not isinstance(input, bool) and input != model.input_dim:
        raise ConvertError("input=%d but the first layer takes %d inputs"
                           % (input, model.input_dim))
    if embs:
        label, m = embs[0]
        if m.max_norm is not None:
            raise ConvertError("%s: max_norm renormalises rows at lookup; not supported"
                               % label)
        W = _np(m.weight)
        if W.shape[1] != model.input_dim:
            raise ConvertError("%s: embedding_dim %d but the first layer takes %d inputs"
                               % (label, W.shape[1], model.input_dim))
        model.input_kind, model.embedding, model.vocab_size = "tokens", f32(W), int(W.shape[0])

    lin = None
    if head is not False:
        if isinstance(head, nn.Linear):
            lin = head
        elif len(lins) > 1:
            raise ConvertError("%d Linear modules: an MLP head is not read around this module "
                               "(its forward() is not analysed): pass head= to choose one"
                               % len(lins))
        elif lins:
            lin = lins[0][1]
    if lin is not None:
        model.head_W = f32(_np(lin.weight))
        model.head_b = (f32(_np(lin.bias)) if lin.bias is not None
                        else np.zeros(model.head_W.shape[0], np.float32))
    if norm is None:
        if len(norms) > 1:
            raise ConvertError("%d softmax modules; pass norm=" % len(norms))
        if norms:
            label, m = norms[0]
            if m.dim not in (-1, 2):
                raise ConvertError("%s: normalises over dim %r; rnnd normalises the features "
                                   "(dim -1)" % (label, m.dim))
            norm = "softmax" if isinstance(m, nn.Softmax) else "log_softmax"
    if norm not in (None, "none"):
        if model.head_W is None:
            k = model.layers[-1].out_dim
            model.head_W, model.head_b = np.eye(k, dtype=np.float32), np.zeros(k, np.float32)
        model.head_norm = norm
    return model


def reference_runner(module):
    """x ([B, T] token ids or [B, T, dim] vectors, NumPy) -> MODULE's output [B, T, out] as
    float64, computed by torch in eval mode without gradients; the reference modules are
    batch first, and a tuple's first element is the output. Each call runs under
    watchdog.bounded (a forked child, within RNND_CONVERT_VERIFY_SECONDS)."""
    import torch
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)

    def run(x):
        t = torch.from_numpy(np.ascontiguousarray(x))
        if t.is_floating_point() and dtype is not None:
            t = t.to(dtype)
        was = module.training
        module.eval()
        try:
            with torch.no_grad():
                y = module(t)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConvertError("verification: running the source's forward() failed (%s: "
                               "%s); make forward(x) run on one batch-first input, or skip "
                               "the check (from_module(..., verify=False))"
                               % (type(e).__name__, first))
        finally:
            module.train(was)
        if isinstance(y, (tuple, list)) and y:
            y = y[0]
        if not isinstance(y, torch.Tensor):
            raise ConvertError("verification: the source's forward() returns %s, not a tensor"
                               % type(y).__name__)
        return y.detach().to("cpu").double().numpy()
    # forward() is the user's code: under verification's time limit, as in the other torch
    # doors, so that one that never returns is refused (issue 14, sixth round, M1)
    from .watchdog import bounded
    return bounded(run)


# softmax / log_softmax as functions of torch, torch.nn.functional (F) or a tensor's method
_NORMS = ("softmax", "log_softmax")
_CHAIN = ("around a reference module of tools/rnnd_modules (whose loops are Python, not "
          "analysed) forward() must be a plain chain of submodule calls (y = self.rnn(x, h), "
          "y[0], a constant subscript, softmax / log_softmax, return); rnnd computes that "
          "chain for every length, batch and call, and verification cannot try them all: "
          "compute anything else before or after calling the model")


def check_chain(module):
    """Refuse MODULE (the top of a reference-module conversion) unless its forward() is a
    plain chain, as _CHAIN says, and so is that of every submodule it calls whose class is
    neither torch's nor a reference module: a branch on the length, the values or a call
    count, a computed scale, converted where verification did not meet it (issue 14,
    adversary 7, H5). The source is read with inspect and walked with ast, as
    torch_import's checks of the source lines; TorchScript cannot compile these modules."""
    import torch
    if is_reference(module) or _is_slstm(module) or \
            (type(module).__module__ or "").split(".")[0] == "torch":
        return      # the reference module itself, or torch's own (nn.Sequential): known code
    _check_forward(module, "", torch.nn.Module, 0)


def _check_forward(m, name, Module, depth):
    import inspect
    import textwrap
    fn = getattr(type(m).forward, "__func__", type(m).forward)
    label = "forward() of module '%s' (%s)" % (name or "<top>", type(m).__name__)
    try:
        lines, first = inspect.getsourcelines(fn)
        path = inspect.getsourcefile(fn) or "?"
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        raise ConvertError("%s: its source cannot be read, so it cannot be checked; %s"
                           % (label, _CHAIN))
    func = tree.body[0]
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) or func.decorator_list:
        raise ConvertError("%s: not a plain function; %s" % (label, _CHAIN))
    a = func.args
    names = {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs}
    names |= {p.arg for p in (a.vararg, a.kwarg) if p is not None}
    this = a.args[0].arg if a.args else "self"
    names.discard(this)

    def refuse(node, what):
        line = first + node.lineno - 1
        code = lines[node.lineno - 1].strip().rstrip(":")
        raise ConvertError("%s at %s:%d: %s: %s; %s" % (label, path, line, code, what,
                                                        _CHAIN))

    def const(e):
        if isinstance(e, ast.Constant):
            return True
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
            return const(e.operand)
        if isinstance(e, ast.Slice):
            return all(p is None or const(p) for p in (e.lower, e.upper, e.step))
        if isinstance(e, ast.Tuple):
            return all(const(p) for p in e.elts)
        return False

    def submodule(e):
        """The submodule self.a.b names, or None."""
        parts = []
        while isinstance(e, ast.Attribute):
            parts.append(e.attr)
            e = e.value
        if not (isinstance(e, ast.Name) and e.id == this and parts):
            return None
        obj = m
        for p in reversed(parts):
            obj = getattr(obj, p, None)
        return (".".join(reversed(parts)), obj) if isinstance(obj, Module) else None

    def is_norm(f):
        """F.softmax, torch.log_softmax, nn.functional.softmax, ... (not a tensor's)."""
        if not (isinstance(f, ast.Attribute) and f.attr in _NORMS):
            return False
        base = []
        e = f.value
        while isinstance(e, ast.Attribute):
            base.append(e.attr)
            e = e.value
        return isinstance(e, ast.Name) and (e.id, tuple(reversed(base))) in (
            ("F", ()), ("torch", ()), ("nn", ("functional",)), ("torch", ("nn", "functional")),
            ("functional", ()))

    def expr(e):
        if isinstance(e, ast.Name):
            if e.id not in names:
                refuse(e, "it reads %r, neither an argument of forward() nor a value the "
                       "chain computed" % e.id)
            return
        if const(e):
            return
        if isinstance(e, ast.Subscript):
            expr(e.value)
            if not const(e.slice):
                refuse(e, "a subscript that is not constant")
            return
        if isinstance(e, ast.Tuple):
            for p in e.elts:
                expr(p)
            return
        if isinstance(e, ast.IfExp) and _isinstance_test(e.test, names):
            # y[0] if isinstance(y, tuple) else y: the type of a submodule's output, fixed
            expr(e.body)
            expr(e.orelse)
            return
        if isinstance(e, ast.Call):
            f = e.func
            sub = submodule(f)
            if sub is not None:
                for p in e.args + [k.value for k in e.keywords]:
                    expr(p)
                child, obj = sub
                if not is_reference(obj) and not _is_slstm(obj) and \
                        (type(obj).__module__ or "").split(".")[0] != "torch":
                    if depth > 8:
                        refuse(e, "submodules nested too deep")
                    _check_forward(obj, (name + "." if name else "") + child, Module,
                                   depth + 1)
                return
            if is_norm(f) or (isinstance(f, ast.Attribute) and f.attr in _NORMS):
                args = list(e.args)
                if not is_norm(f):
                    args = [f.value] + args        # y.softmax(-1)
                if not args:
                    refuse(e, "a softmax of nothing")
                expr(args[0])
                for p in args[1:] + [k.value for k in e.keywords]:
                    if not const(p):
                        refuse(e, "a softmax with an argument that is not constant")
                return
            refuse(e, "it calls %s, not a submodule" % ast.unparse(f))
        text = ast.unparse(e)
        refuse(e, "it computes %s" % (text if len(text) <= 60 else text[:57] + "..."))

    def target(t, node):
        if isinstance(t, ast.Name):
            names.add(t.id)
        elif isinstance(t, (ast.Tuple, ast.List)):
            for p in t.elts:
                target(p, node)
        else:
            refuse(node, "it assigns to %s" % ast.unparse(t))

    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]     # the docstring
    for st in body:
        if isinstance(st, ast.Assign):
            expr(st.value)
            for t in st.targets:
                target(t, st)
        elif isinstance(st, ast.AnnAssign) and st.value is not None:
            expr(st.value)
            target(st.target, st)
        elif isinstance(st, ast.Return):
            if st.value is not None:
                expr(st.value)
        elif isinstance(st, ast.Pass):
            pass
        else:
            refuse(st, "a statement of its own (%s)" % type(st).__name__)


def _isinstance_test(e, names):
    """isinstance(y, tuple) (or list, or a tuple of those) of a value of the chain."""
    return isinstance(e, ast.Call) and getattr(e.func, "id", None) == "isinstance" \
        and len(e.args) == 2 and getattr(e.args[0], "id", None) in names and \
        all(getattr(t, "id", None) in ("tuple", "list") for t in (
            e.args[1].elts if isinstance(e.args[1], ast.Tuple) else [e.args[1]]))


def _is_slstm(m):
    return getattr(type(m), "rnnd_type", None) == "slstm"
