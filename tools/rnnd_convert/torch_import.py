"""PyTorch input: a TorchScript file (torch.jit.save) or a live torch.nn.Module.

The model is read from its submodules: at most one nn.Embedding, then nn.RNN / nn.LSTM /
nn.GRU modules in the order forward() calls them (each contributing num_layers layers), then
at most one nn.Linear (the head) and at most one nn.Softmax / nn.LogSoftmax. PyTorch's gate orders are
rearranged to the format's: LSTM i,f,g,o -> i,o,f,c and GRU r,z,n -> z,r,h (PyTorch's GRU is
linear_before_reset=1). torch is imported only here, only when needed.
"""
import os
import re
import sys

import numpy as np

from .arch import (ConvertError, Layer, Model, check_input_fold, f32, fill_biases,
                   make_act)
from .errors import missing_module, printable

_KINDS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn", "Embedding": "embedding",
          "LSTMCell": "lstm", "GRUCell": "gru", "RNNCell": "rnn",
          "Linear": "linear", "Softmax": "softmax", "LogSoftmax": "log_softmax",
          "Dropout": "dropout", "Identity": "identity",
          # head layers: placed by forward()'s graph (torch_graph.py), not by the module tree
          "ReLU": "head_op", "Tanh": "head_op", "Sigmoid": "head_op", "GELU": "head_op",
          "LayerNorm": "head_op", "Sequential": "identity",
          # a reshape: forward()'s graph takes one that changes no shape, or refuses it
          "Flatten": "head_op"}
# Parameterless modules that compute something rnnd cannot place in its chain.
_REFUSED = {"ReLU6", "ELU", "SELU", "CELU", "LeakyReLU",
            "SiLU", "Mish", "Softplus", "Softsign", "Hardtanh", "Hardsigmoid", "Hardswish",
            "Tanhshrink", "Threshold", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d",
            "AdaptiveMaxPool1d", "Unflatten", "Softmin", "Softmax2d", "GLU",
            "MultiheadAttention", "Transformer"}
# Of _REFUSED, the activations (the head has others); the reference modules of
# tools/rnnd_modules by class name, as a TorchScript file names them
_ACTIVATIONS = {"ReLU6", "ELU", "SELU", "CELU", "LeakyReLU", "SiLU", "Mish", "Softplus",
                "Softsign", "Hardtanh", "Hardsigmoid", "Hardswish", "Tanhshrink", "Threshold",
                "GLU"}
_REFERENCE = {"MinGRU", "MinLSTM", "SLSTM", "Clockwork", "DGLSTM"}


def _chain_text():
    from .torch_graph import CHAIN
    return CHAIN


def _held_state_error(module, embs):
    """The analysis's refusal of a learned initial state (a parameter of the module fed to
    a recurrent module as its state), or None."""
    e = _analysis_error(module, "tokens" if embs else "vectors")
    return e if e is not None and "a state the module holds" in str(e) else None


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ConvertError(missing_module(e))
    return torch


def _type_name(mod):
    torch = _torch()
    if isinstance(mod, torch.jit.ScriptModule):
        return getattr(mod, "original_name", type(mod).__name__)
    nn = torch.nn
    for cls, name in ((nn.LSTM, "LSTM"), (nn.GRU, "GRU"), (nn.RNN, "RNN"),
                      (nn.Embedding, "Embedding"), (nn.Linear, "Linear"),
                      (nn.Softmax, "Softmax"), (nn.LogSoftmax, "LogSoftmax"),
                      (nn.Dropout, "Dropout"), (nn.Identity, "Identity")):
        if isinstance(mod, cls):
            return name
    return type(mod).__name__


def _np(t):
    return t.detach().to("cpu").double().numpy()


def _graph_kinds(mod):
    """Operator kinds of a TorchScript module's forward, or None for a plain module."""
    torch = _torch()
    if not isinstance(mod, torch.jit.ScriptModule):
        return None
    try:
        return [n for n in mod.inlined_graph.nodes()]
    except Exception:
        return None


def _all_nodes(graph_nodes):
    out = []
    for n in graph_nodes:
        out.append(n)
        for b in n.blocks():
            out += _all_nodes(b.nodes())
    return out


def _referenced_paths(module):
    """The attribute paths ("enc.fc", "act") forward()'s scripted graph reads from the
    module, or None where it cannot be scripted (then every submodule counts as used)."""
    torch = _torch()
    try:
        sm = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
        graph = sm.inlined_graph
        me = list(graph.inputs())[0]
        nodes = _all_nodes(graph.nodes())
    except Exception:
        return None
    paths = set()
    for n in nodes:
        if n.kind() != "prim::GetAttr":
            continue
        path, v = [n.s("name")], n.input()
        while v.node().kind() == "prim::GetAttr":
            path.append(v.node().s("name"))
            v = v.node().input()
        if v is me:
            paths.add(".".join(reversed(path)))
    return paths


def _unused(name, paths):
    """Whether submodule NAME is one forward() never reads (PATHS: _referenced_paths): no
    path reaches it, its parts or a module holding it."""
    if paths is None or not name:
        return False
    return not any(p == name or p.startswith(name + ".") or name.startswith(p + ".")
                   for p in paths)


def _rnn_nonlinearity(mod, label, root=None):
    v = getattr(mod, "nonlinearity", None)
    if v in ("tanh", "relu"):
        return v
    nodes = _graph_kinds(mod)
    if root is not None and _type_name(mod).endswith("Cell"):
        nodes = _graph_kinds(root)     # a traced cell's calls are inlined in its caller
    if nodes is not None:
        kinds = {n.kind() for n in _all_nodes(nodes)}
        relu = {"aten::rnn_relu", "aten::rnn_relu_cell"} & kinds
        tanh = {"aten::rnn_tanh", "aten::rnn_tanh_cell"} & kinds
        if relu and not tanh:
            return "relu"
        if tanh and not relu:
            return "tanh"
    raise ConvertError("%s: cannot tell whether the RNN uses tanh or relu" % label)


def _recurrent_layers(mod, kind, label, root=None):
    p = {k: _np(v) for k, v in mod.named_parameters(recurse=False)}
    if _type_name(mod).endswith("Cell"):
        # a cell called in a loop over the steps is one layer: its weights under the layer's
        # names (the loop itself is checked by torch_graph.py)
        p = {k + "_l0": v for k, v in p.items()}
    normed = sorted(k for k in p if k.endswith(("_g", "_v", "_orig")))
    if normed:
        name = normed[0].rsplit("_", 1)[0]
        raise ConvertError("%s: parameter %s: the module computes %s in forward() "
                           "(torch.nn.utils.weight_norm / spectral_norm); rnnd reads a "
                           "recurrent module's own weights: apply "
                           "torch.nn.utils.remove_weight_norm / remove_spectral_norm(module, "
                           "%r) before converting" % (label, normed[0], name, name))
    if "weight_ih_l0" not in p:
        raise ConvertError("%s: no weight_ih_l0 parameter" % label)
    nd = 2 if "weight_ih_l0_reverse" in p else 1
    nonlin = _rnn_nonlinearity(mod, label, root) if kind == "rnn" else None
    G = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    layers = []
    k = 0
    used = set()
    while "weight_ih_l%d" % k in p:
        L = None
        for d, sfx in enumerate(("", "_reverse")[:nd]):
            names = {n: "%s_l%d%s" % (n, k, sfx)
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
            if names["weight_hh"] not in p:
                raise ConvertError("%s: %s missing" % (label, names["weight_hh"]))
            used.update(n for n in names.values() if n in p)
            Wih, Whh = p[names["weight_ih"]], p[names["weight_hh"]]
            Whr = p.get(names["weight_hr"])
            H = Whr.shape[1] if Whr is not None else Whh.shape[1]
            if Whr is not None and kind != "lstm":
                raise ConvertError("%s: %s on a %s" % (label, names["weight_hr"], kind))
            if Wih.shape[0] != G * H or Whh.shape[0] != G * H:
                raise ConvertError("%s: %s has %d rows, expected %d (%d gates x hidden %d)"
                                   % (label, names["weight_ih"], Wih.shape[0], G * H, G, H))
            bih = p.get(names["bias_ih"], np.zeros(G * H))
            bhh = p.get(names["bias_hh"], np.zeros(G * H))
            if kind == "lstm":
                order = np.r_[0:H, 3 * H:4 * H, H:2 * H, 2 * H:3 * H]        # i,f,g,o -> i,o,f,c
            elif kind == "gru":
                order = np.r_[H:2 * H, 0:H, 2 * H:3 * H]                     # r,z,n -> z,r,h
            else:
                order = np.arange(H)
            if L is None:
                L = Layer(kind, int(H), "bidirectional" if nd == 2 else "forward")
                if kind == "gru":
                    L.linear_before_reset = 1
                if kind == "lstm" and Whr is not None:
                    L.proj_size = int(Whr.shape[0])
                if kind == "rnn":
                    L.activations = [[make_act("Relu" if nonlin == "relu" else "Tanh")]
                                     for _ in range(nd)]
            w = {"W": f32(Wih[order]), "R": f32(Whh[order]), "Wb": f32(bih[order]),
                 "Rb": f32(bhh[order])}
            if Whr is not None:
                w["proj"] = f32(Whr)
            L.weights.append(w)
        fill_biases(L)
        layers.append(L)
        k += 1
    extra = sorted(set(p) - used)
    if extra:
        raise ConvertError("%s: parameter %s is not understood" % (label, extra[0]))
    return layers, p["weight_ih_l0"].shape[1]


def weight_norm_np(v, g, dim=None):
    """torch.nn.utils.weight_norm's weight, g * v / ||v||, the norm over every axis of V but
    DIM (None: the axes where G has size 1; -1 or a scalar G: all of them), in float64."""
    v, g = (np.asarray(a, np.float64) if isinstance(a, np.ndarray) else _np(a) for a in (v, g))
    if dim is None:
        axes = tuple(d for d in range(v.ndim) if g.ndim != v.ndim or g.shape[d] == 1)
    else:
        axes = tuple(d for d in range(v.ndim) if dim == -1 or d != dim % v.ndim)
    return g * v / np.sqrt((v * v).sum(axis=axes, keepdims=True))


def weight_hook(m, hook):
    """Whether HOOK, a forward pre-hook of module M, is an old-style weight_norm /
    spectral_norm of the weight of an nn.Linear or nn.Embedding: what it computes before each
    forward() is what module_weight() reads, so the converted model holds it (a check that
    refuses hooks lets these pass)."""
    torch = _torch()
    return type(hook).__name__ in ("WeightNorm", "SpectralNorm") and \
        getattr(hook, "name", None) == "weight" and \
        isinstance(m, (torch.nn.Linear, torch.nn.Embedding))


def module_weight(m, label):
    """The weight module M (an nn.Linear, nn.Embedding) computes with: its `weight`, or the
    one its weight_norm / spectral_norm hook computes before each forward() (the `weight`
    attribute such a hook sets is stale until a forward() runs, and a traced module keeps
    only weight_g and weight_v)."""
    torch = _torch()
    for hook in getattr(m, "_forward_pre_hooks", {}).values():
        kind = type(hook).__name__
        if weight_hook(m, hook):
            with torch.no_grad():
                if kind == "WeightNorm":
                    return weight_norm_np(getattr(m, "weight_v"), getattr(m, "weight_g"),
                                          hook.dim)
                return _np(hook.compute_weight(m, do_power_iteration=False))
    own = dict(m.named_parameters(recurse=False))
    if "weight" not in own and "weight_g" in own and "weight_v" in own:
        return weight_norm_np(own["weight_v"], own["weight_g"])
    w = getattr(m, "weight", None)
    if w is None:
        raise ConvertError("%s: no weight parameter (%s): a weight computed in forward(), as "
                           "torch.nn.utils.spectral_norm's, is read only from the module "
                           "itself: convert it with from_module, or apply "
                           "torch.nn.utils.remove_spectral_norm(module) before saving"
                           % (label, ", ".join(own) or "none"))
    return _np(w)


def _find(module, what, label_of):
    """(name, module) of WHAT: a submodule, or its name in MODULE."""
    if isinstance(what, str):
        for n, m in module.named_modules():
            if n == what:
                return n, m
        raise ConvertError("no submodule named %r" % what)
    for n, m in module.named_modules():
        if m is what:
            return n, m
    return label_of(what), what


def model_from_module(module, input=None, head=None, norm=None):
    """A Model from MODULE (an nn.Module or a loaded TorchScript module).

    input: None (an nn.Embedding means tokens, else vectors), "tokens", "vectors", an int
    (vectors of that size, checked), or the nn.Embedding (or its name) to use.
    head: None (the head forward() applies, one nn.Linear or an MLP; the one nn.Linear when
    forward() cannot be analysed), an nn.Linear or its name, or False (no head:
    Linear submodules are left out). norm: None (from an nn.Softmax/nn.LogSoftmax submodule or
    a softmax in a TorchScript graph), "none", "softmax" or "log_softmax"."""
    torch = _torch()
    if isinstance(module, type) and issubclass(module, torch.nn.Module):
        # from_module(Net, ...): the class itself (user trial 6)
        raise ConvertError("expected a torch.nn.Module instance, got the class %s: pass an "
                           "instance: from_module(%s(...))"
                           % (module.__name__, module.__name__))
    if not isinstance(module, torch.nn.Module):
        raise ConvertError("expected a torch.nn.Module, got %s" % type(module).__name__)
    refuse_hooks(module)
    refuse_python_around(module)

    def label(n, m=None):
        return "module '%s' (%s)" % (n or "<top>", _type_name(m) if m is not None else "?")

    embs, recs, lins, norms = [], [], [], []
    paths = []      # forward()'s references, read only where a submodule would be refused
    for n, m in module.named_modules():
        t = _type_name(m)
        kind = _KINDS.get(t)
        own = [k for k, _ in m.named_parameters(recurse=False)]
        if n and kind not in ("lstm", "gru", "rnn", "embedding", "linear", "softmax",
                              "log_softmax", "head_op") and (
                t in _ACTIVATIONS or t in _REFUSED or t in _REFERENCE or own or
                t == "ParametrizationList" or t.startswith("Parametrized")):
            if paths == []:
                paths = _referenced_paths(module)
            if _unused(n, paths):
                continue    # a leftover forward() never reads, as an unused Linear
        if kind in ("lstm", "gru", "rnn"):
            recs.append((n, m, kind))
        elif kind == "embedding":
            embs.append((n, m))
        elif kind == "linear":
            lins.append((n, m))
        elif kind in ("softmax", "log_softmax"):
            norms.append((n, m, kind))
        elif kind == "head_op":
            pass        # forward()'s graph places it in the head, or refuses it
        elif t == "ParametrizationList" or t.startswith("Parametrized"):
            owner = n.split(".parametrizations.")[0] if ".parametrizations." in n else n
            raise ConvertError("%s: a parametrization (torch.nn.utils.parametrize: "
                               "parametrizations.weight_norm, spectral_norm, ...) computes "
                               "the weights of module '%s' in forward(); apply "
                               "torch.nn.utils.parametrize.remove_parametrizations(module, "
                               "'weight') to it (that keeps the computed weight) before "
                               "converting" % (label(n, m), owner))
        elif t in _ACTIVATIONS:
            raise ConvertError("%s: not supported: rnnd's head activations are ReLU, Tanh, "
                               "Sigmoid and GELU (module or functional form), between the "
                               "head's Linear and LayerNorm layers after the recurrent layers; "
                               "use one of those" % label(n, m))
        elif t in _REFUSED:
            raise ConvertError("%s: not supported: rnnd computes %s"
                               % (label(n, m), _chain_text()))
        elif t in _REFERENCE:
            raise ConvertError("%s: a reference module of tools/rnnd_modules, whose forward() "
                               "is Python loops that a TorchScript file or an ONNX export does "
                               "not keep as one layer: convert the module itself, "
                               "rnnd_convert.from_module(net, 'model.rnnd')" % label(n, m))
        elif own:
            raise _held_state_error(module, embs) or ConvertError(
                "%s: parameter '%s' is not understood (rnnd reads Embedding, RNN, LSTM, GRU "
                "and Linear modules)" % (label(n, m), own[0]))
    if not recs:
        raise ConvertError("no nn.RNN, nn.LSTM or nn.GRU module found")
    cells = [(n, m) for n, m, _ in recs if _type_name(m).endswith("Cell")]
    if cells and isinstance(module, torch.jit.ScriptModule):
        _check_cell_loop(module, cells, label)

    model = Model()
    recs = _scripted_call_order(module, recs) or recs
    try:
        _chain(model, recs, label, module)
    except ConvertError as e:
        # sizes that do not chain: what forward() does with them says more (an encoder /
        # decoder) where torch can script it
        raise _analysis_error(module, "tokens" if embs else "vectors") or e
    if len(model.layers) > 64:
        raise ConvertError("%d recurrent layers; rnnd takes at most 64" % len(model.layers))

    # the input
    emb = None
    if input is not None and not isinstance(input, (str, int)) or (
            isinstance(input, str) and input not in ("tokens", "vectors")):
        emb = _find(module, input, lambda m: "embedding")
    elif isinstance(input, int) and not isinstance(input, bool):
        if embs:
            raise ConvertError("input=%d (vectors) but the module has an Embedding %r"
                               % (input, embs[0][0]))
        if input != model.input_dim:
            raise ConvertError("input=%d but the first layer takes %d inputs"
                               % (input, model.input_dim))
    elif input == "vectors":
        if embs:
            raise ConvertError("input='vectors' but the module has an Embedding %r"
                               % embs[0][0])
    else:
        if len(embs) > 1:
            raise ConvertError("%d Embedding modules (%s); pass input= to choose"
                               % (len(embs), ", ".join(n for n, _ in embs)))
        if embs:
            emb = embs[0]
        elif input == "tokens":
            raise ConvertError("input='tokens' but the module has no nn.Embedding")
    if emb is not None:
        n, m = emb
        if getattr(m, "max_norm", None) is not None:
            raise ConvertError("%s: %s" % (label(n, m), _MAX_NORM))
        W = module_weight(m, label(n, m))
        if W.shape[1] != model.input_dim:
            raise ConvertError("%s: embedding_dim %d but the first layer takes %d inputs"
                               % (label(n, m), W.shape[1], model.input_dim))
        model.input_kind = "tokens"
        model.embedding = f32(W)
        model.vocab_size = int(W.shape[0])

    # the head
    if head is False:
        lin = None
    elif head is not None:
        lin = _find(module, head, lambda m: "head")
    else:
        # several Linear modules: an MLP head, placed by forward()'s graph below
        lin = lins[0] if len(lins) == 1 else None
    if lin is not None:
        n, m = lin
        model.head_W = f32(module_weight(m, label(n, m)))
        b = getattr(m, "bias", None)
        model.head_b = f32(_np(b)) if b is not None else np.zeros(model.head_W.shape[0],
                                                                  np.float32)

    # forward() itself: one allowlist analysis of its graph (torch_graph.py)
    from .torch_graph import analyse
    _refuse_python_only(module)
    _refuse_mode_checks(module)
    _refuse_functional_max_norm(module)
    gm = _graph_module(module, model)
    _refuse_renorm(gm)
    if cells and gm is not None and gm is not module:
        _check_cell_loop(gm, cells, label)
    analysis = analyse(gm, model.input_kind, gm is not module) if gm is not None else None
    _probe_forward(module, model)   # after the graph's refusals, which name the line
    if cells and analysis is None:
        n, m = cells[0]
        t = _type_name(m)
        raise ConvertError("%s: a cell converts only in a loop over the steps of a forward() "
                           "that torch.jit.script can compile; else use nn.%s(%d, %d) with the "
                           "cell's weights as weight_ih_l0, weight_hh_l0, bias_ih_l0, "
                           "bias_hh_l0, called on the whole sequence"
                           % (label(n, m), t[:-4], m.weight_ih.shape[1], m.weight_hh.shape[1]))
    if analysis is not None and analysis.embedding_path is not None and emb is not None:
        _check_table(gm, analysis.embedding_path, emb, label)
    if analysis is not None and _call_order(analysis, recs) is not None:
        # forward() calls them in another order than they are registered: its order counts
        recs = _call_order(analysis, recs)
        model.layers = []
        _chain(model, recs, label, module)
    if head is None and analysis is not None and analysis.head_ops:
        # the head forward() applies, read from the parameters its graph reads (the one
        # Linear module included: F.linear may read another's weight; issue 14, adversary 7)
        layers = analysis.head_layers()
        if len(layers) == 1 and layers[0]["op"] == "linear":
            # one Linear of several modules: the plain head, the same computation
            model.head_W, model.head_b = layers[0]["W"], layers[0]["b"]
        else:
            model.head_W = model.head_b = None
            model.head_layers = layers
    elif head is not None and head is not False and analysis is not None and \
            len(analysis.head_ops) > 1:
        raise ConvertError("forward() applies a head of %d layers (%s); head= picks one "
                           "nn.Linear: leave head=None to convert the whole head"
                           % (len(analysis.head_ops),
                              ", ".join(op for op, _, _ in analysis.head_ops)))
    elif head is None and len(lins) > 1:
        raise ConvertError("%d Linear modules (%s), and forward() could not be analysed to "
                           "place them: choose the head with --head NAME (head=NAME in "
                           "from_module)"
                           % (len(lins), ", ".join(n for n, _ in lins)))
    if analysis is not None and analysis.counts["recurrent"] != len(recs):
        raise ConvertError("forward() runs %d recurrent module call(s), but the module holds "
                           "%d (%s); rnnd chains every one it holds"
                           % (analysis.counts["recurrent"], len(recs),
                              ", ".join(n or "<top>" for n, _, _ in recs)))

    if gm is not None and analysis is not None:
        model.source_states = _state_plan(gm, recs, label)
    if analysis is not None and analysis.pre is not None:
        _fold_pre(model, *analysis.pre)
    if analysis is not None and analysis.features_added:
        model.source_features = False

    # normalisation: a softmax on forward()'s data path, else a softmax submodule
    if norm is None and analysis is None:
        if len(norms) > 1:
            raise ConvertError("%d softmax modules; pass norm=" % len(norms))
        if norms:
            n, m, kind = norms[0]
            dim = getattr(m, "dim", -1)
            if dim not in (-1, 2):
                raise ConvertError("%s: normalises over dim %r; rnnd normalises the features "
                                   "(dim -1)" % (label(n, m), dim))
            norm = kind
    if norm is None and analysis is not None:
        norm = analysis.norm
    if analysis is not None and analysis.pool is not None:
        model.pool = analysis.pool
    if norm not in (None, "none"):
        if not model.has_head():
            last = model.layers[-1]
            k = last.out_dim * last.num_directions
            model.head_W, model.head_b = np.eye(k, dtype=np.float32), np.zeros(k, np.float32)
        model.head_norm = norm
    return model


def _check_table(gm, path, emb, label):
    """Refuse when the table forward() looks tokens up in (PATH, an attribute of GM) is not
    the weight of EMB ((name, module)), the table the file gets."""
    torch = _torch()
    obj = gm
    try:
        for part in path.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        obj = None
    n, m = emb
    if not (isinstance(obj, torch.Tensor) and (obj is m.weight or (
            obj.shape == m.weight.shape and torch.equal(obj.detach().cpu(),
                                                        m.weight.detach().cpu())))):
        raise ConvertError("forward() looks up the tokens in '%s', not in the weight of %s, "
                           "the table rnnd would serve: look up with that module, or choose "
                           "the Embedding with input=" % (path, label(n, m)))


def _chain(model, recs, label, root):
    """Append the layers of RECS ((name, module, kind), in call order) to MODEL."""
    for n, m, kind in recs:
        layers, in_dim = _recurrent_layers(m, kind, label(n, m), root)
        if model.layers:
            prev = model.layers[-1]
            if in_dim != prev.out_dim * prev.num_directions:
                raise ConvertError("%s takes %d inputs but the layer before it outputs %d"
                                   % (label(n, m), in_dim, prev.out_dim * prev.num_directions))
        else:
            model.input_dim = int(in_dim)
        model.layers += layers


def _fold_pre(model, a, b):
    """Fold x -> a * x + b (per feature, before the first layer) into the embedding table or
    the first layer's input weights, exactly as ONNX's affine folding does."""
    n = model.embedding.shape[1] if model.embedding is not None else model.input_dim
    a = np.broadcast_to(np.asarray(a, np.float64), (n,))
    b = np.broadcast_to(np.asarray(b, np.float64), (n,))
    if model.embedding is not None:
        model.embedding = f32(model.embedding.astype(np.float64) * a + b)
        return
    check_input_fold(model.layers[0].weights, a, b)
    model.input_map = (a, b)    # verification also runs inputs around -b / a
    for w in model.layers[0].weights:
        W = w["W"].astype(np.float64)
        w["Wb"] = f32(w["Wb"].astype(np.float64) + W @ b)
        w["W"] = f32(W * a)


def _analysis_error(module, input_kind):
    """The analysis's refusal of MODULE's scripted forward(), or None."""
    torch = _torch()
    from .torch_graph import analyse
    try:
        sm = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    except Exception:
        return None
    try:
        analyse(sm, input_kind, sm is not module)
    except ConvertError as e:
        return e
    except Exception:
        return None
    return None


def _scripted_call_order(module, recs):
    """RECS in the order forward()'s scripted graph calls them, where scripting works and
    that differs from registration order, else None (the analysis checks the rest)."""
    torch = _torch()
    from .torch_graph import RECURRENT_OPS, _module_path
    if len(recs) < 2:
        return None
    try:
        sm = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
        nodes = _all_nodes(sm.inlined_graph.nodes())
    except Exception:
        return None

    class Calls:
        calls = [_module_path(list(n.inputs())[2]) for n in nodes
                 if n.kind() in RECURRENT_OPS and n.inputsSize() > 2]
    return _call_order(Calls, recs)


def _call_order(analysis, recs):
    """RECS reordered as forward() calls them (ANALYSIS.calls, the submodule of each
    recurrent operator), or None when that is their registration order or not known."""
    names = [n for n, _, _ in recs]
    calls = list(getattr(analysis, "calls", ()))
    if calls == names or sorted(calls) != sorted(names) or len(set(calls)) != len(calls):
        return None
    return [recs[names.index(c)] for c in calls]


# the hook tables of an nn.Module across torch versions (the *_with_kwargs ones since 2.0)
_HOOK_TABLES = (("_forward_hooks", "forward hook"), ("_forward_pre_hooks", "forward pre-hook"),
                ("_forward_hooks_with_kwargs", "forward hook"),
                ("_forward_pre_hooks_with_kwargs", "forward pre-hook"))


def refuse_hooks(module):
    """Refuse MODULE when it or a submodule has a forward hook or pre-hook, or torch has a
    global one: `module(x)` runs them, but the graph analysed is forward()'s alone (a hook on
    the top module is not in it), so what a hook computes would be served without it (issue
    14, adversary finding 2). A TorchScript file keeps its hooks in the compiled module."""
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        return          # model_from_module says what it is
    mm = torch.nn.modules.module
    for table, what in (("_global_forward_hooks", "global forward hook"),
                        ("_global_forward_pre_hooks", "global forward pre-hook")):
        if getattr(mm, table, None):
            raise ConvertError("torch has a %s (torch.nn.modules.module.register_module_%s): "
                               "it runs on every module's forward(), which rnnd does not "
                               "compute; remove it before converting"
                               % (what, "forward_hook" if "pre" not in what
                                  else "forward_pre_hook"))
    for name, m in module.named_modules():
        found = None
        if isinstance(m, torch.jit.ScriptModule):
            for get, what in (("_get_forward_hooks", "forward hook"),
                              ("_get_forward_pre_hooks", "forward pre-hook")):
                try:
                    if getattr(m._c, get)():
                        found = what
                        break
                except Exception:
                    pass
        for hook in (getattr(m, "_forward_pre_hooks", None) or {}).values():
            kind = type(hook).__name__
            if kind in ("WeightNorm", "SpectralNorm") and not weight_hook(m, hook):
                fix = "remove_weight_norm" if kind == "WeightNorm" else "remove_spectral_norm"
                raise ConvertError("module '%s' (%s): %s on '%s': rnnd reads a plain weight "
                                   "there; call torch.nn.utils.%s(module%s, %r) before "
                                   "converting (it keeps the weight the hook computes)"
                                   % (name or "<top>", _type_name(m), kind.lower().replace(
                                       "norm", "_norm"), getattr(hook, "name", "?"), fix,
                                      "." + name if name else "",
                                      getattr(hook, "name", "weight")))
        for table, what in _HOOK_TABLES:
            hooks = getattr(m, table, None) or {}
            if found is None and any(not (table == "_forward_pre_hooks" and weight_hook(m, h))
                                     for h in hooks.values()):
                found = what
        if found is not None:
            raise ConvertError("module '%s' (%s) has a %s: calling the module runs it after "
                               "or before forward(), and rnnd converts forward() alone; "
                               "remove the hook or fold what it computes into forward()"
                               % (name or "<top>", _type_name(m), found))


# what calling a module runs around forward() (or instead of it, or what changes what torch's
# functions do on its tensors) where a class of the user's defines it (trial 20, S1)
_AROUND = ("__call__", "_call_impl", "_wrapped_call_impl", "_slow_forward", "__getattr__",
           "__getattribute__", "__torch_function__", "__torch_dispatch__")
# the same, set on a module instance: Python finds these there before the class's
_INSTANCE = ("forward", "_call_impl", "_wrapped_call_impl", "_slow_forward")
_AROUND_WHY = ("rnnd analyses forward() and cannot see code that runs around it (calling the "
               "module, as verification and your code do, runs it)")


def _where(obj):
    """' (at path:line)' for a function OBJ (or its __func__), '' when unknown."""
    code = getattr(getattr(obj, "__func__", obj), "__code__", None)
    return " (at %s:%d)" % (code.co_filename, code.co_firstlineno) if code else ""


def refuse_python_around(module):
    """Refuse MODULE when calling it (or a submodule) runs Python that forward() does not
    hold, so that the graph analysed is not what verification and the user run: a class of
    the user's in a module's MRO defining __call__, _call_impl, __getattr__,
    __getattribute__, __torch_function__ or __torch_dispatch__; a forward set on the instance
    or one that is not a plain function of its class (a decorator's wrapper: scripting
    compiles the function __wrapped__ names, the call runs the wrapper), a wrapped function
    forward() calls; a parameter or buffer whose type is a subclass (its __torch_function__
    can change what torch's functions compute on it). A ScriptModule runs its compiled code
    alone: its own instances and tensors are not checked."""
    import types
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        return
    for name, m in module.named_modules():
        label = "module '%s' (%s)" % (name or "<top>", type(m).__name__)
        script = isinstance(m, torch.jit.ScriptModule)
        for k in () if script else _INSTANCE:
            if k in vars(m):
                raise ConvertError("%s has an instance attribute '%s' (set on the module, not "
                                   "defined in its class): calling the module runs it, while "
                                   "%s; delete it (del module%s.%s)"
                                   % (label, k, _AROUND_WHY.split(" (")[0],
                                      "." + name if name else "", k))
        mro = [c for c in type(m).__mro__ if c is not object and not _from_torch(c)]
        for cls in mro:
            found = [(k, vars(cls)[k]) for k in _AROUND if k in vars(cls) and
                     not _from_torch(getattr(vars(cls)[k], "__func__", vars(cls)[k]))]
            if found:
                raise ConvertError("%s: class %s defines %s%s: %s; remove the override"
                                   % (label, cls.__name__, " and ".join(k for k, _ in found),
                                      _where(found[0][1]), _AROUND_WHY))
        owner = next((c for c in type(m).__mro__ if "forward" in vars(c)), None)
        fwd = vars(owner)["forward"] if owner is not None and owner in mro else None
        if fwd is not None and (not isinstance(fwd, types.FunctionType) or
                                hasattr(fwd, "__wrapped__")):
            code = getattr(fwd, "__code__", None)
            what = ("is %s, not a function" % type(fwd).__name__
                    if not isinstance(fwd, types.FunctionType) else
                    "is wrapped by a decorator (its wrapper %s%s sets __wrapped__: scripting "
                    "compiles the wrapped function, calling the module runs the wrapper)"
                    % (getattr(code, "co_qualname", code.co_name), _where(fwd)))
            raise ConvertError("%s: forward of class %s %s: %s; remove the decorator"
                               % (label, owner.__name__, what, _AROUND_WHY))
        tables = () if script else (("parameter", m._parameters), ("buffer", m._buffers))
        for kind, table in tables:
            for k, t in table.items():
                if t is None or type(t) in (torch.nn.Parameter, torch.Tensor):
                    continue
                raise ConvertError("%s: %s '%s' is a %s, a subclass of %s: a tensor subclass "
                                   "can change what torch's functions compute on it "
                                   "(__torch_function__), and %s; store it as a plain "
                                   "torch.nn.Parameter (or tensor) holding its values"
                                   % (label, kind, k, type(t).__name__, "torch.nn.Parameter"
                                      if isinstance(t, torch.nn.Parameter) else "torch.Tensor",
                                      _AROUND_WHY.split(" (")[0]))
    if not isinstance(module, torch.jit.ScriptModule):
        for name, cls, fn in _reached(module):
            if hasattr(fn, "__wrapped__") and not _from_torch(fn):
                raise ConvertError("forward() of module '%s' (%s) calls %s, wrapped by a "
                                   "decorator%s: scripting compiles the wrapped function, "
                                   "calling it runs the wrapper; %s; remove the decorator"
                                   % (name or "<top>", (cls or type(module)).__name__,
                                      getattr(fn, "__qualname__", "a function"), _where(fn),
                                      _AROUND_WHY.split(" (")[0]))


def warn_train_mode(module):
    """Say on stderr, in one line, that MODULE (or a submodule) is in train mode: it is
    converted (and verified) as in eval mode, dropout off, which is what rnnd serves, where
    calling it as it stands would apply dropout (user finding U5)."""
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        return
    name = next((n for n, m in module.named_modules() if m.training), None)
    if name is None:
        return
    import sys
    sub = dict(module.named_modules())[name]
    sys.stderr.write("rnnd-convert: warning: module '%s' (%s) is in train mode; it is "
                     "converted as in eval mode (dropout off), which is what rnnd serves "
                     "and what verification runs: call model.eval() before converting\n"
                     % (printable(name or "<top>"), printable(_type_name(sub))))


_MAX_NORM = ("an nn.Embedding with max_norm (or F.embedding(..., max_norm=...)) renormalises "
             "the rows it looks up, changing its weight as it runs; rnnd looks rows up as "
             "they are: renormalise the weight once (with torch.no_grad(): "
             "emb.weight.copy_(torch.renorm(emb.weight, 2, 0, max_norm))), set "
             "emb.max_norm = None, then convert")


def _refuse_renorm(gm):
    """Refuse a graph that renormalises embedding rows (a traced max_norm keeps the
    operator; nn.Embedding's own attribute is checked where the module keeps it)."""
    try:
        nodes = _all_nodes(gm.inlined_graph.nodes()) if gm is not None else []
    except Exception:
        return
    from .torch_graph import where
    for n in nodes:
        if n.kind().startswith("aten::embedding_renorm"):
            raise ConvertError("forward() computes %s%s: %s" % (n.kind(), where(n), _MAX_NORM))


def _not_torch(obj):
    return (getattr(obj, "__module__", None) or "").split(".")[0] != "torch"


def _reached(module):
    """(name, class, function) for the forward() of MODULE and of its submodules not
    defined by torch, and every method or function their source calls, transitively
    (self.helper(y), self.sub.helper(y), helper(y) of the module's globals): what
    torch.jit.script compiles into forward(), where Python runs the source as it is."""
    import inspect
    torch = _torch()
    seen, out = set(), []
    todo = [(name, m, type(m).forward) for name, m in module.named_modules()
            if _not_torch(type(m))]
    call = re.compile(r"\bself((?:\.\w+)+)\s*\(|(?<![.\w])(\w+)\s*\(")
    while todo:
        name, obj, fn = todo.pop(0)
        fn = getattr(fn, "__func__", fn)
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        out.append((name, type(obj) if obj is not None else None, fn))
        try:
            src = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        for line in src.splitlines():
            for attrs, bare in call.findall(line.split("#")[0]):
                target, owner = None, obj
                if attrs and obj is not None:
                    target = obj
                    try:
                        for part in attrs.split(".")[1:]:
                            owner, target = target, getattr(target, part)
                    except Exception:
                        continue
                elif bare:
                    target = getattr(fn, "__globals__", {}).get(bare)
                    owner = None
                if isinstance(target, torch.nn.Module):
                    continue        # a submodule: named_modules() has it
                if inspect.ismethod(target):
                    owner, target = target.__self__, target.__func__
                if inspect.isfunction(target) and _not_torch(target):
                    todo.append((name, owner if isinstance(owner, torch.nn.Module) else None,
                                 target))
    return out


def _forward_lines(module):
    """(name, class, path, line number, line, function) for every source line of the
    forward() of MODULE and of its submodules not defined by torch, and of the methods and
    functions they call (_reached); nothing for a ScriptModule (its source is compiled, not
    Python that runs)."""
    import inspect
    torch = _torch()
    if isinstance(module, torch.jit.ScriptModule):
        return
    for name, cls, fn in _reached(module):
        try:
            lines, first = inspect.getsourcelines(fn)
            path = inspect.getsourcefile(fn)
        except (OSError, TypeError):
            continue
        for k, line in enumerate(lines):
            yield name, cls or type(module), path, first + k, line, fn.__qualname__


def _refuse_python_only(module):
    """Refuse a module whose forward() reaches a method marked @torch.jit.unused or
    @torch.jit.ignore: scripted, an unused one is a raise and an ignored one a call out of
    the graph, so the graph analysed is not what Python runs when verification or the
    user calls the module (issue 14 A2)."""
    torch = _torch()
    if isinstance(module, torch.jit.ScriptModule):
        return
    try:
        from torch._jit_internal import FunctionModifiers, is_ignored_fn
    except ImportError:
        return
    for name, cls, fn in _reached(module):
        try:
            ignored = is_ignored_fn(fn)
        except Exception:
            ignored = getattr(fn, "_torchscript_modifier", None) is not None
        if not ignored:
            continue
        unused = getattr(fn, "_torchscript_modifier", None) == FunctionModifiers.UNUSED
        raise ConvertError("forward() of module '%s' (%s) calls %s, marked @torch.jit.%s: "
                           "scripted, it is %s, while the module runs it in Python, so rnnd "
                           "cannot check what it computes; remove the decorator (or the call)"
                           % (name or "<top>", (cls or type(module)).__name__,
                              getattr(fn, "__qualname__", "a function"),
                              "unused" if unused else "ignore",
                              "a raise" if unused else "a call outside the graph"))


def _refuse_functional_max_norm(module):
    """Refuse a forward() that passes max_norm to F.embedding: TorchScript drops the renorm
    (torch 1.13), so the scripted graph looks plain while the module renormalises."""
    for name, cls, path, lineno, line, _ in _forward_lines(module):
        if "max_norm" in line.split("#")[0]:
            raise ConvertError("forward() of module '%s' (%s) at %s:%d: %s: %s"
                               % (name or "<top>", cls.__name__, path, lineno, line.strip(),
                                  _MAX_NORM))


_MODE_CHECKS = ("is_scripting", "is_tracing", "is_compiling", "is_exporting",
                "_get_tracing_state")


def _refuse_mode_checks(module):
    """Refuse a forward() (or a method or function it calls) that asks torch whether it is
    being scripted or traced: the analysed graph then differs from what the module computes
    when the user runs it."""
    for name, cls, path, lineno, line, fn in _forward_lines(module):
        if any(w in line.split("#")[0] for w in _MODE_CHECKS):
            raise ConvertError(
                "forward() of module '%s' (%s) asks torch how it runs at %s:%d (in %s): %s: "
                "the graph rnnd analyses (scripted or traced) differs from what the "
                "module computes when you run it; remove the check"
                % (name or "<top>", cls.__name__, path, lineno, fn,
                   line.strip().rstrip(":")))


# torch's functions that tell code how it runs (traced, scripted, with gradients, ...),
# by their path from torch; those missing from this torch are left out
_MODE_READERS = ("jit.is_tracing", "jit.is_scripting", "_jit_internal.is_scripting",
                 "jit._trace.is_tracing", "_C._get_tracing_state", "_C._is_tracing",
                 "onnx.is_in_onnx_export", "compiler.is_compiling", "is_grad_enabled",
                 "is_inference_mode_enabled", "is_autocast_enabled",
                 "is_autocast_cpu_enabled", "is_inference", "Tensor.is_inference")
# a tensor's methods that tell the mode: y.is_inference() is a call of a method bound to y,
# another object than torch.Tensor.is_inference, so it is known by its name and its tensor
# (issue 14, sixth round, H2)
_TENSOR_MODE_METHODS = {"is_inference": "torch.Tensor.is_inference"}


class _ModeWatch:
    """A profiler (sys.setprofile) that records the first call of a _MODE_READERS function
    from outside torch while it is set: a mode check the source text does not show (an
    alias made at import, getattr, a stored callable, a lambda) is still a call of the same
    function object (issue 14 F1)."""

    def __init__(self):
        torch = _torch()
        self.codes, self.builtins, self.found = {}, {}, None
        self.tensor = torch.Tensor
        for path in _MODE_READERS:
            obj = torch
            try:
                for part in path.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                continue
            code = getattr(obj, "__code__", None)
            # the first path of an object names it (torch.jit.is_tracing, not the private
            # module it is defined in)
            if code is not None:
                self.codes.setdefault(code, "torch." + path)
            else:
                self.builtins.setdefault(id(obj), (obj, "torch." + path))
        self.own = os.path.dirname(os.path.abspath(__file__)) + os.sep

    def hook(self, frame, event, arg):
        if self.found is not None:
            return
        if event == "call":
            what, caller = self.codes.get(frame.f_code), frame.f_back
        elif event == "c_call":
            found = self.builtins.get(id(arg))
            what, caller = (found[1] if found and found[0] is arg else None), frame
            if what is None and isinstance(getattr(arg, "__self__", None), self.tensor):
                what = _TENSOR_MODE_METHODS.get(getattr(arg, "__name__", None))
        else:
            return
        if what is None or caller is None:
            return
        from .torch_graph import _in_torch
        path = caller.f_code.co_filename
        if not _in_torch(path) and not os.path.abspath(path).startswith(self.own):
            self.found = (what, path, caller.f_lineno, caller.f_code.co_name)

    def __enter__(self):
        self.was = sys.getprofile()
        sys.setprofile(self.hook)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self.was)
        return False

    def refuse(self):
        """Refuse what was found, naming the function, the line and why."""
        if self.found is None:
            return
        import linecache
        what, path, line, fn = self.found
        code = linecache.getline(path, line).strip().rstrip(":")
        if what.startswith("torch.is_") or what.startswith("torch.Tensor.is_"):
            why = ("rnnd verifies and serves the module without gradients, outside inference "
                   "and autocast mode, and a module that computes otherwise in another mode "
                   "cannot be checked")
        else:
            why = ("the graph rnnd analyses (scripted or traced) differs from what the module "
                   "computes when you run it")
        raise ConvertError("forward() calls %s at %s:%d (in %s)%s: %s; remove the check"
                           % (what, path, line, fn, ": " + code if code else "", why))


def _module_state(module):
    """{(submodule, attribute): a snapshot (_snap)} of MODULE's attributes, parameters and
    buffers and of the state its forward() can keep outside it (_outside_state), to compare
    after a call of forward(). Only torch's own hook tables are left out (issue 14, sixth
    round, H1: an attribute `hook_calls` is the user's)."""
    out = {}
    for name, m in module.named_modules():
        items = [(k, v) for k, v in vars(m).items()
                 if k not in ("_parameters", "_buffers", "_modules") and k not in _hook_tables()]
        items += list(m._parameters.items()) + list(m._buffers.items())
        items += [(k, ("module", id(v))) for k, v in m._modules.items()]
        items += _outside_state(m)
        for k, v in items:
            out[(name, k)] = _snap(v)
    return out


def _hook_tables():
    """The names of the hook tables torch keeps in every nn.Module (_forward_hooks, ...)."""
    global _HOOKS
    if _HOOKS is None:
        _HOOKS = frozenset(k for k in vars(_torch().nn.Module()) if "hook" in k)
    return _HOOKS


_HOOKS = None


def _snap(v, depth=0):
    """A copy of V to compare later (_same): ("tensor", a clone), ("value", a deepcopy), or,
    for a value deepcopy cannot copy (one holding a lock, a file), ("attrs", its type, a
    snapshot of each attribute), down to a depth; ("id", id) past that."""
    import copy
    torch = _torch()
    if isinstance(v, torch.Tensor):
        return ("tensor", v.detach().clone())
    try:
        return ("value", copy.deepcopy(v))
    except Exception:
        pass
    d = getattr(v, "__dict__", None)
    if depth < 4 and isinstance(d, dict):
        return ("attrs", type(v), {k: _snap(x, depth + 1) for k, x in list(d.items())})
    return ("id", id(v))


_PLAIN = (bool, int, float, complex, str, bytes, list, tuple, dict, set, np.ndarray)
_FOLLOW = 200   # functions and methods followed from one forward() for the globals they name


def _outside_state(m):
    """[(name, value)] of the plain values (numbers, strings, containers, arrays) M's
    forward() can keep between calls outside the module: the attributes of its classes other
    than torch's ("Class.name", issue 14 H5: a class counter) and the module globals that
    forward() names, or any function or method of the user's that it calls names (sixth
    round, H1: a helper that counts calls in a global), as "global name". Methods,
    descriptors, modules and classes are left out."""
    import types
    found = []
    for cls in type(m).__mro__:
        if cls is object or _from_torch(cls):
            continue
        for k, v in list(vars(cls).items()):
            if not k.startswith("__") and isinstance(v, _PLAIN):
                found.append(("%s.%s" % (cls.__name__, k), v))
    fwd = getattr(type(m), "forward", None)
    if not isinstance(fwd, types.FunctionType):
        return found
    seen, todo, names = set(), [(fwd.__code__, fwd.__globals__)], set()
    while todo and len(seen) < _FOLLOW:
        code, glob = todo.pop()
        if id(code) in seen:
            continue
        seen.add(id(code))
        todo.extend((c, glob) for c in code.co_consts if isinstance(c, types.CodeType))
        for k in code.co_names:
            # a global, or a method of M's class: self.count() names `count`
            for v in (glob.get(k), getattr(type(m), k, None)):
                if isinstance(v, (staticmethod, classmethod)):
                    v = v.__func__
                if isinstance(v, types.MethodType):
                    v = v.__func__
                if isinstance(v, types.FunctionType) and not _from_torch(v):
                    todo.append((v.__code__, v.__globals__))
            v = glob.get(k)
            key = "global %s" % k if glob is fwd.__globals__ else "global %s.%s" % (
                glob.get("__name__", "?"), k)
            if isinstance(v, _PLAIN) and key not in names:
                names.add(key)
                found.append((key, v))
    return found


def _from_torch(obj):
    """Whether OBJ (a class or function) is torch's (or NumPy's) own."""
    mod = getattr(obj, "__module__", "") or ""
    return mod.split(".")[0] in ("torch", "numpy")


def _same(a, b):
    """Whether two _snap snapshots hold the same: tensors and arrays element by element (NaN
    equal to NaN), containers item by item, an object deepcopy cannot copy attribute by
    attribute; a value whose == raises counts as changed."""
    if a[0] != b[0]:
        return False
    if a[0] == "id":
        return a[1] == b[1]
    if a[0] == "attrs":
        return a[1] is b[1] and a[2].keys() == b[2].keys() and all(
            _same(a[2][k], b[2][k]) for k in a[2])
    return _same_value(a[1], b[1])


def _same_value(x, y, depth=0):
    torch = _torch()
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            return False
        x, y = x.detach(), y.detach()
        return x.shape == y.shape and x.dtype == y.dtype and bool(
            torch.equal(x, y) or (x.is_floating_point() and
                                  torch.isclose(x, y, 0, 0, equal_nan=True).all()))
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)) or \
                x.shape != y.shape or x.dtype != y.dtype:
            return False
        try:
            return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))
        except Exception:
            return False
    if depth < 8 and isinstance(x, (list, tuple)) and type(x) is type(y):
        return len(x) == len(y) and all(_same_value(a, b, depth + 1) for a, b in zip(x, y))
    if depth < 8 and isinstance(x, dict) and type(x) is type(y):
        return x.keys() == y.keys() and all(_same_value(x[k], y[k], depth + 1) for k in x)
    if depth < 8 and type(x) is type(y) and type(x).__eq__ is object.__eq__ and \
            isinstance(getattr(x, "__dict__", None), dict):
        # two copies of an object without an == of its own: attribute by attribute (by
        # identity, two copies always differ)
        return _same_value(vars(x), vars(y), depth + 1)
    try:
        return bool(x == y)
    except Exception:
        return False


def _probe_forward(module, model):
    """Call MODULE's forward() once in this process, as verification does (eval mode, no
    gradients), and refuse a call of a torch mode reader from outside torch (_ModeWatch) or
    a forward() that changes the module's attributes, parameters or buffers: verification
    runs each call in a forked child, so state kept between calls (a counter, a cache)
    never shows there, while the user's later calls compute with it (issue 14 F3). A
    ScriptModule's graph holds both (torch_graph.py)."""
    torch = _torch()
    if isinstance(module, torch.jit.ScriptModule):
        return
    examples = [_example(module, model)]
    if model.input_kind == "vectors" and model.input_dim == 1:
        examples.append((examples[0][0][..., 0],) + tuple(examples[0][1:]))
    before = _module_state(module)
    was = module.training
    watch = _ModeWatch()

    def once(ex):
        # in a thread of this process (the state to compare is here), under verification's
        # time limit: a forward() that never returns is refused, not waited for
        module.eval()
        try:
            with watch, torch.no_grad():
                module(*ex)
            return 1.0
        except Exception:
            return 0.0          # verification reports a forward() that cannot run
        finally:
            module.train(was)
    from .watchdog import bounded
    limited = bounded(once, in_process=True)
    for ex in examples:
        if limited(ex):
            break
    watch.refuse()
    after = _module_state(module)
    for key in sorted(set(before) | set(after), key=str):
        if key in before and key in after and _same(before[key], after[key]):
            continue
        name, attr = key
        if attr.startswith("global ") or "." in attr:
            what = ("the global '%s'" % attr[7:] if attr.startswith("global ")
                    else "the class attribute '%s'" % attr)
            raise ConvertError("forward() of module '%s' (%s) changes %s when it runs: "
                               "state kept between calls outside the module, which rnnd's "
                               "model does not hold and verification, which runs each call "
                               "afresh, does not see change; keep forward() free of writes "
                               "to globals and class attributes"
                               % (name or "<top>", _type_name(module.get_submodule(name)),
                                  what))
        raise ConvertError("forward() of module '%s' (%s) %s its attribute '%s' when it runs: "
                           "state kept between calls (a counter, a cache) that rnnd's model "
                           "does not hold and verification, which runs each call afresh, "
                           "does not see change; keep forward() free of writes to the module"
                           % (name or "<top>", _type_name(module.get_submodule(name)),
                              "sets" if key in after else "deletes", attr))


def _check_cell_loop(gm, cells, label):
    """Refuse cells that GM's graph does not call in a loop: a traced loop over the steps
    is unrolled into one call per step of the example (a fixed length), and torch.jit.trace
    inlines each call as its arithmetic, so no cell is left to convert."""
    from .torch_graph import CELL_OPS
    try:
        nodes = _all_nodes(gm.inlined_graph.nodes())
    except Exception:
        return
    if any(n.kind() in CELL_OPS for n in nodes):
        return          # torch_graph.py checks the loop
    n, m = cells[0]
    raise ConvertError("%s: forward()'s graph calls the cell outside a loop over the steps "
                       "(torch.jit.trace unrolls such a loop into one call per step of the "
                       "example); script the module (torch.jit.script, or from_module, which "
                       "scripts first) so that the loop stays a loop: rnnd converts it to one "
                       "layer" % label(n, m))


def _zero_state(module, batch):
    """Zeros in the layout of the initial state its single recurrent module takes, for a
    forward(input, hidden) without a default: (h0, c0) for an LSTM, else h0."""
    recs = [m for _, m in module.named_modules()
            if _KINDS.get(_type_name(m)) in ("lstm", "gru", "rnn")]
    if len(recs) != 1:
        return None
    return _module_zero_state(recs[0], batch)


def _module_zero_state(m, batch):
    """Zeros in the layout of the initial state the recurrent module M takes: (h0, c0) for
    an LSTM, else h0."""
    torch = _torch()
    # from the parameters: a traced module keeps them but not num_layers, hidden_size, ...
    p = dict(m.named_parameters(recurse=False))
    nd = 2 if "weight_ih_l0_reverse" in p else 1
    L = sum(1 for k in p if k.startswith("weight_ih_l") and not k.endswith("_reverse"))
    G = {"LSTM": 4, "GRU": 3}.get(_type_name(m), 1)
    H, P = p["weight_hh_l0"].shape[0] // G, p["weight_hh_l0"].shape[1]
    dt = p["weight_ih_l0"].dtype
    h = torch.zeros(L * nd, batch, P, dtype=dt)
    if _type_name(m) == "LSTM":
        return (h, torch.zeros(L * nd, batch, H, dtype=dt))
    return h


def _takes_state(module):
    """Whether forward() takes a second argument (required or not): the initial state."""
    torch = _torch()
    try:
        if isinstance(module, torch.jit.ScriptModule):
            return len(module.forward.schema.arguments) == 3     # self, input, hidden
        import inspect
        sig = inspect.signature(module.forward)
        return len([p for p in sig.parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) == 2
    except Exception:
        return False


def _state_from_flat(module, states):
    """STATES (one flat initial state per sequence, in rnnd's layout: per layer, per
    direction, h then an LSTM's c) as the state MODULE's single recurrent module takes:
    h [layers * directions, batch, out] and, for an LSTM, c [layers * directions, batch,
    hidden]; a tuple (h, c) for an LSTM, else h."""
    return _flat_to_module(_zero_state(module, len(states)), states)


def _state_floats(z):
    """Floats per sequence of the zero state Z (h, or (h, c)) in rnnd's flat layout."""
    h = z[0] if isinstance(z, tuple) else z
    c = z[1] if isinstance(z, tuple) else None
    return h.shape[0] * (h.shape[2] + (c.shape[2] if c is not None else 0))


def _flat_to_module(z, states):
    """STATES (one flat state per sequence, rnnd's layout) in the layout of Z, a recurrent
    module's zero state (h, or (h, c) for an LSTM)."""
    torch = _torch()
    h = z[0] if isinstance(z, tuple) else z
    c = z[1] if isinstance(z, tuple) else None
    n, P = h.shape[0], h.shape[2]
    H = c.shape[2] if c is not None else 0
    flat = np.asarray(states, dtype=np.float64)
    if flat.shape != (len(states), n * (P + H)):
        raise ConvertError("verification: the converted model's state has %d floats per "
                           "sequence, the source's recurrent module %d"
                           % (flat.shape[-1], n * (P + H)))
    per = flat.reshape(len(states), n, P + H)
    h = torch.from_numpy(np.ascontiguousarray(per[:, :, :P].transpose(1, 0, 2))).to(h.dtype)
    if c is None:
        return h
    c = torch.from_numpy(np.ascontiguousarray(per[:, :, P:].transpose(1, 0, 2))).to(c.dtype)
    return (h, c)


def _state_plan(gm, recs, label):
    """How forward()'s arguments after the input feed the recurrent modules' initial states:
    [(module, h origin, c origin)] for RECS ((name, module, kind), in call order), an origin
    being (argument position, tuple indices) as torch_graph's _state_origin gives it; None
    when no module takes its state from an argument. Refused when some modules do and
    others start from zeros, or an argument cannot be given from rnnd's state: rnnd's
    initial state (infer's initial_state, a session's state) gives every layer's, so such a
    model would start a layer from a state its source never takes (user finding U3)."""
    from .torch_graph import RECURRENT_OPS, _module_path, _state_origin
    try:
        graph = gm.inlined_graph
        nodes = _all_nodes(graph.nodes())
    except Exception:
        return None
    inputs = list(graph.inputs())
    found = {}
    for n in nodes:
        if n.kind() not in RECURRENT_OPS or n.inputsSize() < 3:
            continue
        hx = list(n.inputs())[1]
        parts = list(hx.node().inputs()) if hx.node().kind() == "prim::ListConstruct" \
            else [hx]
        origins = tuple(_state_origin(p, inputs) for p in parts) + (None,)
        found.setdefault(_module_path(list(n.inputs())[2]), set()).add(origins[:2])
    plan, fed, zeros = [], False, []
    for name, m, kind in recs:
        seen = found.get(name, {(None, None)})
        # `if h is None: rnn(x) else: rnn(x, h)`: the zeros side is the state rnnd starts
        # from without one
        given = {o for o in seen if o != (None, None)}
        if len(given) > 1:
            raise ConvertError("%s: forward() gives it its initial state from different "
                               "arguments on different paths; rnnd maps one state to it"
                               % label(name, m))
        h, c = given.pop() if given else (None, None)
        lstm = _type_name(m) == "LSTM"
        if h is None or (lstm and c is None):
            zeros.append(label(name, m))
        else:
            fed = True
        plan.append((m, h, c if lstm else None))
    if not fed:
        return None
    if zeros:
        raise ConvertError(
            "forward() passes its state argument to some recurrent modules but starts %s "
            "from zeros: rnnd's initial state (infer's initial_state, a session's state) "
            "gives every layer's state, so the converted model would start it from a state "
            "the source never takes; give forward() every module's state (forward(x, h1=None, "
            "h2=None), each passed to its module, h then c for an LSTM) or drop the argument"
            % ", ".join(zeros))
    used = [o for _, h, c in plan for o in (h, c) if o is not None]
    if len(set(used)) != len(used):
        raise ConvertError("forward() passes one state argument to two recurrent modules (or "
                           "as both h and c); rnnd gives each layer its own state")
    if _state_args(plan, [None] * len(plan)) is None:
        raise ConvertError("forward()'s state arguments hold more than the recurrent "
                           "modules' states; rnnd gives only those: pass each module its "
                           "state (h, or (h, c) for an LSTM) and nothing else")
    return plan


def _state_args(plan, states):
    """forward()'s arguments after the input, built from STATES (per module of PLAN, its
    state h or (h, c) as it takes it; None: a placeholder), or None where the arguments
    hold anything else (an element no module reads)."""
    parts = {}
    for (m, h, c), st in zip(plan, states):
        hs, cs = (st if isinstance(st, tuple) else (st, None))
        for origin, t in ((h, hs), (c, cs)):
            if origin is not None:
                parts.setdefault(origin[0], {})[origin[1]] = t
    if not parts or sorted(parts) != list(range(2, 2 + len(parts))):
        return None

    def nest(items):
        if () in items:
            return items[()] if len(items) == 1 else _MISSING
        n = max(p[0] for p in items) + 1
        out = []
        for i in range(n):
            sub = {p[1:]: t for p, t in items.items() if p[0] == i}
            out.append(nest(sub) if sub else _MISSING)
        return _MISSING if any(o is _MISSING for o in out) else tuple(out)
    args = tuple(nest(parts[k]) for k in sorted(parts))
    return None if any(a is _MISSING for a in args) else args


_MISSING = object()


def _plan_args(plan, states):
    """forward()'s state arguments for PLAN from STATES, one flat rnnd state per sequence:
    each module's slice of it, in call order, in the layout that module takes."""
    flat = np.asarray(states, dtype=np.float64)
    o, per = 0, []
    for m, _, _ in plan:
        z = _module_zero_state(m, len(states))
        n = _state_floats(z)
        per.append(_flat_to_module(z, flat[:, o:o + n]))
        o += n
    if flat.shape[1] != o:
        raise ConvertError("verification: the converted model's state has %d floats per "
                           "sequence, the source's recurrent modules %d" % (flat.shape[1], o))
    return _state_args(plan, per)


def _plan_floats(plan):
    return sum(_state_floats(_module_zero_state(m, 1)) for m, _, _ in plan)


def _required_args(module):
    """How many arguments forward() needs beyond self (None when unknown)."""
    torch = _torch()
    try:
        if isinstance(module, torch.jit.ScriptModule):
            args = module.forward.schema.arguments[1:]
            return sum(1 for a in args if a.default_value is None and
                       not str(a.type).startswith("Optional"))
        import inspect
        sig = inspect.signature(module.forward)
        return sum(1 for p in sig.parameters.values()
                   if p.default is inspect.Parameter.empty and
                   p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    except Exception:
        return None


def _example(module, model):
    """Arguments to trace MODULE with: a small batch in its layout, and zero initial states
    when forward() requires them."""
    torch = _torch()
    B, T = 2, 5
    if model.input_kind == "tokens":
        x = torch.randint(0, model.vocab_size, (B, T))
    else:
        x = torch.randn(B, T, model.input_dim)
    if not _batch_first(module):
        x = x.transpose(0, 1).contiguous()
    if _required_args(module) == 2:
        h = _zero_state(module, B)
        if h is not None:
            return (x, h)
    return (x,)


def _graph_module(module, model):
    """MODULE as a ScriptModule whose forward() graph can be analysed: itself, its
    torch.jit.script, or failing that its torch.jit.trace. Refused when torch can do
    neither: converting from the submodules alone would serve whatever forward() does with
    them unchecked (issue 14 A3)."""
    torch = _torch()
    if isinstance(module, torch.jit.ScriptModule):
        return module
    try:
        return torch.jit.script(module)
    except Exception as e:
        why_script = _first_line(e)
    import warnings
    was = module.training
    module.eval()
    example = _example(module, model)
    if model.input_kind == "vectors" and model.input_dim == 1:
        # a univariate series: forward() may take [B, T] and unsqueeze the features itself
        example = [example, (example[0][..., 0],) + tuple(example[1:])]
    else:
        example = [example]
    traced, why_trace = None, "no example input"
    watch = _ModeWatch()
    try:
        for ex in example:
            try:
                with torch.no_grad(), warnings.catch_warnings(record=True) as caught, watch:
                    warnings.simplefilter("always")
                    traced = torch.jit.trace(module, ex, check_trace=False)
                break
            except Exception as e:
                why_trace = _first_line(e)
                continue
    finally:
        module.train(was)
    if traced is None:
        raise ConvertError("forward() can be neither scripted (torch.jit.script: %s) nor "
                           "traced (torch.jit.trace: %s), and rnnd converts a module only "
                           "after checking forward()'s graph: make forward() scriptable, or "
                           "traceable (tensors in, a tensor or a tuple of tensors out)"
                           % (why_script, why_trace))
    watch.refuse()
    _refuse_tracer_warnings(caught)
    return traced


def _first_line(e):
    """The first line of an exception's message (torch's run over many), or its type."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__).rstrip(":")[:200]


def _refuse_tracer_warnings(caught):
    """Refuse a trace during which forward() turned a tensor into a Python value (a branch
    on x.size(1), a loop over x.shape[0]): the trace holds the example's side only, and the
    module computes something else at other lengths or batches. PyTorch's own modules warn
    too (nn.LSTM checks its input's size): only warnings from outside torch count."""
    import linecache
    import os
    torch = _torch()
    own = os.path.dirname(os.path.abspath(torch.__file__))
    for w in caught:
        if type(w.message).__name__ != "TracerWarning" or \
                os.path.abspath(w.filename).startswith(own + os.sep):
            continue
        code = linecache.getline(w.filename, w.lineno).strip().rstrip(":")
        raise ConvertError("forward() branches on the input's size at %s:%d%s (torch.jit.trace "
                           "records the side the example takes): rnnd computes one graph for "
                           "every length and batch; remove the branch"
                           % (w.filename, w.lineno, ": " + code if code else ""))


def load_torchscript(path, head=None):
    """(Model, module) of the TorchScript file PATH. Before torch.jit.load: the archive's
    sizes, its code's size and nesting are checked (sniff.check_archive), and the load is
    tried in a forked child first, so that a crash in torch's loader is a one-line refusal
    (trial20 C1), as is a load past the time or memory limit (trial21 C4)."""
    from .sniff import check_archive
    from .watchdog import survives
    torch = _torch()
    size = check_archive(path)
    survives(lambda: torch.jit.load(path, map_location="cpu"), "torch's loader", size)
    try:
        mod = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConvertError("not a TorchScript file (torch.jit.load: %s)" % first)
    return model_from_module(mod, head=head), mod


def _batch_first(module):
    """Whether MODULE's forward takes [batch, time, ...]: the batch_first of its first
    recurrent operator (in a TorchScript graph, the operator's last argument; a traced module
    keeps no attribute) or module; PyTorch's default, time first, when there is none."""
    torch = _torch()
    from .torch_graph import loop_time_dim, transposed_before
    if not isinstance(module, torch.jit.ScriptModule):
        # forward()'s layout is in its code (a loop over cells, a transpose before the
        # recurrent module): read it from the scripted graph where torch can script it
        try:
            module = torch.jit.script(module)
        except Exception:
            pass
    if isinstance(module, torch.jit.ScriptModule):
        nodes = _graph_kinds(module) or []
        for n in _all_nodes(nodes):
            if n.kind() in ("aten::lstm", "aten::gru", "aten::rnn_tanh", "aten::rnn_relu"):
                src = list(n.inputs())[-1].node()
                if src.kind() == "prim::Constant":
                    try:
                        # x.transpose(0, 1) in forward() before it: the other layout
                        return bool(src.i("value")) != transposed_before(n)
                    except Exception:
                        pass
                break
        else:
            try:
                d = loop_time_dim(module.inlined_graph)
            except Exception:
                d = None
            if d is not None:
                return d == 1
    for _, m in module.named_modules():
        if _KINDS.get(_type_name(m)) in ("lstm", "gru", "rnn") and \
                not _type_name(m).endswith("Cell"):
            try:
                return bool(getattr(m, "batch_first"))
            except Exception:
                return False
    return False


def source_runner(module, pooled=False, features=True, states=None):
    """x ([B, T] token ids or [B, T, dim] vectors, NumPy) -> MODULE's output as a [B, T, out]
    float64 array, computed by torch in eval mode without gradients. The forward may return
    a tuple (its first element is the output), time- or batch-major per the recurrent
    module's batch_first, or the steps flattened to rows ([T*B, out] or [B*T, out]). POOLED
    (the model pools over the steps): the output is [B, out], one row per sequence, as is.
    FEATURES False (model.source_features): forward() takes [B, T] and adds the feature axis
    of one itself (x.unsqueeze(-1)), so it is given x[..., 0]. STATES (model.source_states,
    _state_plan): how forward()'s arguments after the input feed the recurrent modules'
    initial states, or None."""
    torch = _torch()
    bf = _batch_first(module)
    plan = states
    calls = [module]
    if isinstance(module, torch.jit.ScriptModule) and not hasattr(module, "forward"):
        # a scripted nn.LSTM / GRU / RNN keeps only its overloads (tensor, PackedSequence)
        try:
            calls = [getattr(module, n) for n in module._c._method_names()
                     if n.startswith("forward__")] or calls
        except Exception:
            pass

    needs_state = _required_args(module) == 2
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)

    def call(t, state=None):
        args = (t,)
        if state is not None:
            args = (t,) + state
        elif plan is not None and _required_args(module) not in (None, 1):
            # required state arguments: zeros, the state rnnd starts from
            args = (t,) + _plan_args(plan, np.zeros((t.shape[0 if bf else 1],
                                                     _plan_floats(plan))))
        elif needs_state:
            # forward(input, hidden): the initial state rnnd starts from, zeros
            h = _zero_state(module, t.shape[0 if bf else 1])
            if h is not None:
                args = (t, h)
        first = None
        for f in calls:
            try:
                return f(*args)
            except Exception as e:
                first = first or e
        raise first

    def run(x, states=None, stress=False):
        """STRESS: a [4, ...] array of four calls in this process, the third with gradients
        enabled, the fourth under torch.inference_mode() (verify.py's backstop)."""
        B, T = x.shape[0], x.shape[1]
        if not features and x.ndim == 3 and x.shape[2] == 1:
            x = x[:, :, 0]
        t = torch.from_numpy(np.ascontiguousarray(x if bf else np.swapaxes(x, 0, 1)))
        if t.is_floating_point() and dtype is not None:
            t = t.to(dtype)         # a float64 (or half) module takes its own type
        was = module.training
        module.eval()
        st = None if states is None else _plan_args(plan, states) if plan is not None \
            else (_state_from_flat(module, states),)
        try:
            if not stress:
                with torch.no_grad():
                    return shaped(call(t, st), B, T)
            ys = []
            for mode in (torch.no_grad, torch.no_grad, torch.enable_grad,
                         torch.inference_mode):
                with mode():
                    ys.append(shaped(call(t, st), B, T))
        except ConvertError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConvertError("verification: running the source's forward() failed (%s: "
                               "%s); make forward(x) run on one input, or skip the check "
                               "(--no-verify, from_module(..., verify=False))"
                               % (type(e).__name__, first))
        finally:
            module.train(was)
        if any(y.shape != ys[0].shape for y in ys):
            raise ConvertError("verification failed: the source's outputs change shape from "
                               "one call to the next (%s): forward() keeps state between "
                               "calls or reads the grad or inference mode"
                               % [list(y.shape) for y in ys])
        return np.stack(ys)

    def shaped(y, B, T):
        if isinstance(y, (tuple, list)) and y:
            y = y[0]
        if not isinstance(y, torch.Tensor):
            raise ConvertError("verification: the source's forward() returns %s, not a tensor"
                               % type(y).__name__)
        y = y.detach().to("cpu").double().numpy()
        if pooled:
            if y.ndim < 2 and y.size == B:
                # fc(y[:, -1]).squeeze(-1), .view(-1) of a head of one output: [B], the
                # pooled [B, 1] squeezed, as the ONNX door reads it (user finding U1)
                y = y.reshape(B, 1)
            return y            # [B, out]; with T == 1 it would pass for [B*T, out] below
        if y.ndim == 2 and y.shape[0] == B * T:
            y = y.reshape((B, T, -1) if bf else (T, B, -1))
        elif y.ndim == 3 and y.shape[:2] == ((B, T) if bf else (T, B)):
            pass
        else:
            return y            # compare() reports the shape
        return y if bf else np.swapaxes(y, 0, 1)
    from .watchdog import bounded
    limited = bounded(run)      # forward() is the file's code: under a time limit

    def source(x):
        return limited(x)
    source.stress = lambda x: list(limited(x, None, True))
    if plan is not None or (_takes_state(module) and _zero_state(module, 1) is not None):
        # forward(input, hidden): verify.py feeds random initial states too, in PyTorch's
        # layout, so that a state rearranged on its way in shows (issue 14, adversary 3)
        source.with_state = lambda x, states: limited(x, states)
    return source
