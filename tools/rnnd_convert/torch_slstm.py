"""The sLSTM reference module of tools/rnnd_modules/slstm.py in a live torch.nn.Module:
recognised by its `rnnd_type` class attribute ("slstm") and read parameter for parameter,
since its parameters are already the format's tensors (W, R [4H, H/heads], Wb, Rb).

slstm_layers() is the reader of one such module; model_from_slstm() builds a whole Model when
MODULE holds at least one: in registration order at most one nn.Embedding, the SLSTM modules
(each contributing its num_layers layers), at most one nn.Linear (the head) and at most one
nn.Softmax / nn.LogSoftmax; nothing else with parameters. The SLSTM's forward() is not
analysed (its loop is Python): verification at conversion runs it (slstm_runner) and refuses
a module that computes anything else; the forward() around it must be a plain chain of
submodule calls (torch_reference.check_chain, run by from_module after verification).
"""
import numpy as np

from .arch import ConvertError, Layer, Model, f32, fill_biases


def _np(t):
    return t.detach().to("cpu").double().numpy()


def is_slstm(m):
    return getattr(type(m), "rnnd_type", None) == "slstm"


def slstm_layers(m, label):
    """The layers of one rnnd_modules SLSTM, in the format's layout."""
    H, K = int(m.hidden_size), int(m.heads)
    if K < 1 or H % K:
        raise ConvertError("%s: heads %d does not divide hidden_size %d" % (label, K, H))
    if m.forget not in ("exp", "sigmoid"):
        raise ConvertError("%s: forget %r is not exp or sigmoid" % (label, m.forget))
    params = dict(m.named_parameters(recurse=False))
    used, layers = set(), []
    for k in range(int(m.num_layers)):
        names = ["%s_l%d" % (n, k) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        W, R, bW, bR = (params.get(n) for n in names)
        if W is None or W.dim() != 2 or W.shape[0] != 4 * H:
            raise ConvertError("%s: %s must be [%d, in]" % (label, names[0], 4 * H))
        if R is None or tuple(R.shape) != (4 * H, H // K):
            raise ConvertError("%s: %s must be [%d, %d] (heads %d)"
                               % (label, names[1], 4 * H, H // K, K))
        used.update(n for n in names if n in params)
        L = Layer("slstm", H, "forward", heads=K, forget=m.forget)
        L.weights.append({"W": f32(_np(W)), "R": f32(_np(R)),
                          "Wb": None if bW is None else f32(_np(bW)),
                          "Rb": None if bR is None else f32(_np(bR))})
        fill_biases(L)
        layers.append(L)
    extra = sorted(set(params) - used)
    if extra:
        raise ConvertError("%s: parameter %s is not understood" % (label, extra[0]))
    return layers


def model_from_slstm(module, input=None, head=None, norm=None):
    """A Model when MODULE is or holds SLSTM modules, else None. INPUT, HEAD and NORM as for
    from_module (an nn.Linear for HEAD; submodule names are not taken here)."""
    import torch
    nn = torch.nn
    # anything else (not a module at all included) is model_from_module's to judge
    if not isinstance(module, nn.Module) or not any(is_slstm(m) for m in module.modules()):
        return None
    embs, recs, lins, norms = [], [], [], []
    for n, m in module.named_modules():
        label = "module '%s' (%s)" % (n or "<top>", type(m).__name__)
        if is_slstm(m):
            recs.append((label, m))
        elif isinstance(m, nn.Embedding):
            embs.append((label, m))
        elif isinstance(m, nn.Linear):
            lins.append((label, m))
        elif isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            norms.append((label, m))
        elif any(True for _ in m.named_parameters(recurse=False)):
            raise ConvertError("%s: SLSTM modules convert with nn.Embedding, nn.Linear and a "
                               "softmax around them, nothing else that has parameters" % label)
    model = Model()
    for label, m in recs:
        layers = slstm_layers(m, label)
        in_dim = layers[0].weights[0]["W"].shape[1]
        if model.layers and in_dim != model.layers[-1].out_dim:
            raise ConvertError("%s takes %d inputs but the layer before it outputs %d"
                               % (label, in_dim, model.layers[-1].out_dim))
        if not model.layers:
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
            raise ConvertError("%s: max_norm renormalises rows at lookup; not supported" % label)
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


def slstm_runner(module):
    """x ([B, T] ids or [B, T, dim], NumPy) -> MODULE's output [B, T, out] as float64, by
    torch in eval mode without gradients (batch first; a tuple's first element), each call
    under watchdog.bounded (a forked child, within RNND_CONVERT_VERIFY_SECONDS)."""
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
            raise ConvertError("verification: running the source's forward() failed (%s: %s);"
                               " make forward(x) run on one batch-first input, or skip the "
                               "check (from_module(..., verify=False))"
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
