"""The reference modules of tools/rnnd_modules (one per layer type or option the format has
but PyTorch lacks: MinGRU, MinLSTM, Clockwork, the depth-gated LSTM) in a live
torch.nn.Module: recognised by their `rnnd_type` class attribute and read parameter for
parameter, since their parameters are already in the format's layout.

A module converts here when it holds at least one of them: then, in registration order, at
most one nn.Embedding, the reference modules (each contributing its num_layers layers), at
most one nn.Linear (the head) and at most one nn.Softmax / nn.LogSoftmax; nothing else with
parameters. forward() is not analysed (the modules' loops are Python): verification at
conversion (verify.py) runs it and refuses a module that computes anything else.
"""
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
