"""from_module for the depth-gated LSTM of tools/rnnd_modules/dglstm.py (rnnd_type "dglstm"):
its parameters already have the format's names and layouts, so each layer is read as is.

A module converts here when it is or holds one DGLSTM: then at most one nn.Embedding before
it, at most one nn.Linear (the head) and one nn.Softmax / nn.LogSoftmax; nothing else with
parameters. forward() is Python loops, not analysed: verification at conversion (verify.py)
runs it against the converted file and refuses a module that computes anything else.
"""
import numpy as np

from .arch import ConvertError, Layer, Model, f32

_DG = ("D", "Dc", "Dl", "Db")


def _np(t):
    return t.detach().to("cpu").double().numpy()


def is_dglstm(m):
    return getattr(type(m), "rnnd_type", None) == "dglstm"


def dglstm_layers(m, label):
    """The lstm layers of DGLSTM M: layer 0 plain, the others depth-gated."""
    params = dict(m.named_parameters(recurse=False))
    H, K = int(m.hidden_size), int(m.num_layers)
    layers, used = [], set()
    for k in range(K):
        names = ("W", "R", "Wb", "Rb") + (_DG if k else ())
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


def model_from_dglstm(module, input=None, head=None, norm=None):
    """A Model when MODULE is or holds a DGLSTM, else None. INPUT, HEAD and NORM as for
    from_module."""
    import torch
    nn = torch.nn
    # anything else (not a module at all included) is model_from_module's to judge
    if not isinstance(module, nn.Module) or not any(is_dglstm(m) for m in module.modules()):
        return None
    dgs, embs, lins, norms = [], [], [], []
    for n, m in module.named_modules():
        label = "module '%s' (%s)" % (n or "<top>", type(m).__name__)
        if is_dglstm(m):
            dgs.append((label, m))
        elif isinstance(m, nn.Embedding):
            embs.append((label, m))
        elif isinstance(m, nn.Linear):
            lins.append(m)
        elif isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            norms.append(m)
        elif any(True for _ in m.named_parameters(recurse=False)):
            raise ConvertError("%s: a DGLSTM converts with nn.Embedding, nn.Linear and a "
                               "softmax around it, nothing else that has parameters" % label)
    if len(dgs) != 1 or len(embs) > 1:
        raise ConvertError("%d DGLSTM and %d Embedding modules; rnnd takes one DGLSTM and at "
                           "most one Embedding" % (len(dgs), len(embs)))
    model = Model()
    model.layers = dglstm_layers(dgs[0][1], dgs[0][0])
    model.input_dim = int(model.layers[0].weights[0]["W"].shape[1])
    if embs and input == "vectors" or not embs and input == "tokens":
        raise ConvertError("input=%r, but the module %s an nn.Embedding"
                           % (input, "has" if embs else "has no"))
    if isinstance(input, int) and not isinstance(input, bool) and input != model.input_dim:
        raise ConvertError("input=%d but the first layer takes %d inputs"
                           % (input, model.input_dim))
    if embs:
        E = _np(embs[0][1].weight)
        if E.shape[1] != model.input_dim:
            raise ConvertError("%s: embedding_dim %d but the first layer takes %d inputs"
                               % (embs[0][0], E.shape[1], model.input_dim))
        model.input_kind, model.embedding, model.vocab_size = "tokens", f32(E), int(E.shape[0])
    lin = head if isinstance(head, nn.Linear) else None
    if head is None:
        if len(lins) > 1:
            raise ConvertError("%d Linear modules; rnnd has one head: pass head=" % len(lins))
        lin = lins[0] if lins else None
    if lin is not None:
        model.head_W = f32(_np(lin.weight))
        model.head_b = (f32(_np(lin.bias)) if lin.bias is not None
                        else np.zeros(model.head_W.shape[0], np.float32))
    if norm is None and norms:
        if len(norms) > 1:
            raise ConvertError("%d softmax modules; pass norm=" % len(norms))
        norm = "softmax" if isinstance(norms[0], nn.Softmax) else "log_softmax"
    if norm not in (None, "none"):
        if model.head_W is None:
            k = model.layers[-1].out_dim
            model.head_W, model.head_b = np.eye(k, dtype=np.float32), np.zeros(k, np.float32)
        model.head_norm = norm
    return model


def dglstm_runner(module):
    """x ([B, T] ids or [B, T, dim] vectors, NumPy) -> MODULE's output [B, T, out] (float64):
    torch in eval mode, no gradients; DGLSTM is batch first, a tuple's first element is the
    output."""
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
    return run
