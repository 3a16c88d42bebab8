"""The native spec: an architecture JSON (the format's own keys) plus an .npz of tensors named
as in the format (`layers.0.0.W`, ...). This is how to write what ONNX and PyTorch cannot
express: Jordan networks, the 1997 LSTM without a forget gate, any activation mix."""
import json
import os
import zipfile

import numpy as np

from .arch import (ACTIVATIONS, CELL_TYPES, COMMON_KEYS, ConvertError, DEPTH_GATE_TENSORS,
                   DIRECTIONS,
                   FORMAT_VERSION, Layer, MIN_TYPES, Model, NEUTRAL, N_ACT, NORMS, POOLS,
                   SLSTM_FORGET, TYPE_KEYS, HEAD_OPS,
                   canonical_activation, f32, fill_biases)

TOP_KEYS = ("format_version", "name", "input", "layers", "pool", "head", "vocab", "tokenizer",
            "weights")


def _int(where, v, lo=1, hi=65536):
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConvertError("%s: expected an integer %d..%d, got %s"
                           % (where, lo, hi, json.dumps(v)))
    return v


def _bool(where, v):
    if not isinstance(v, bool):
        raise ConvertError("%s: expected true or false, got %s" % (where, json.dumps(v)))
    return v


def _num(where, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConvertError("%s: expected a number, got %s" % (where, json.dumps(v)))
    return float(v)


def _obj(where, v, keys):
    if not isinstance(v, dict):
        raise ConvertError("%s: expected an object" % where)
    for k in v:
        if k not in keys:
            raise ConvertError("%s.%s: unknown key" % (where, k))
    return v


def parse_activation(where, a):
    if isinstance(a, str):
        a = {"op": a}
    _obj(where, a, ("op", "alpha", "beta"))
    op = canonical_activation(a.get("op"))
    if op is None:
        raise ConvertError("%s: unknown activation %s (known: %s)"
                           % (where, json.dumps(a.get("op")), ", ".join(ACTIVATIONS)))
    out = {"op": op}
    for k in ("alpha", "beta"):
        if a.get(k) is not None:
            out[k] = _num("%s.%s" % (where, k), a[k])
    return out


def parse_layer(where, j):
    if not isinstance(j, dict):
        raise ConvertError("%s: expected an object" % where)
    t = j.get("type")
    if t not in CELL_TYPES:
        raise ConvertError("%s.type: %s is not one of %s"
                           % (where, json.dumps(t), ", ".join(CELL_TYPES)))
    for k, v in j.items():
        if k in COMMON_KEYS or k in TYPE_KEYS[t] or (k == "depth_gate" and t == "lstm"):
            continue
        if k not in NEUTRAL:
            raise ConvertError("%s.%s: unknown key" % (where, k))
        if v is not None and v != NEUTRAL[k] and not (k == "forget_gate" and v is False):
            raise ConvertError("%s.%s: a %s layer does not use it (must be %s)"
                               % (where, k, t, json.dumps(NEUTRAL[k])))
    L = Layer(t, _int(where + ".hidden_size", j.get("hidden_size")))
    L.direction = j.get("direction", "forward")
    if L.direction not in DIRECTIONS:
        raise ConvertError("%s.direction: %s is not one of %s"
                           % (where, json.dumps(L.direction), ", ".join(DIRECTIONS)))
    if j.get("clip") is not None:
        L.clip = _num(where + ".clip", j["clip"])
        if not L.clip > 0:
            raise ConvertError("%s.clip: must be positive" % where)
    acts = j.get("activations")
    if acts is not None and t == "slstm":
        raise ConvertError("%s.activations: a slstm layer takes none (exp, tanh and sigmoid are "
                           "part of the cell)" % where)
    if acts is not None:
        if not isinstance(acts, list) or len(acts) != L.num_directions:
            raise ConvertError("%s.activations: expected %d list(s), one per direction"
                               % (where, L.num_directions))
        L.activations = []
        for d, lst in enumerate(acts):
            w = "%s.activations[%d]" % (where, d)
            if not isinstance(lst, list) or len(lst) != N_ACT[t]:
                raise ConvertError("%s: a %s layer takes %d activations" % (w, t, N_ACT[t]))
            L.activations.append([parse_activation("%s[%d]" % (w, i), a)
                                  for i, a in enumerate(lst)])
    if t == "lstm":
        L.input_forget = _bool(where + ".input_forget", j.get("input_forget", False))
        L.peepholes = _bool(where + ".peepholes", j.get("peepholes", False))
        L.forget_gate = _bool(where + ".forget_gate", j.get("forget_gate", True))
        L.proj_size = _int(where + ".proj_size", j.get("proj_size", 0), 0)
        L.depth_gate = _bool(where + ".depth_gate", j.get("depth_gate", False))
    elif t == "gru":
        lbr = j.get("linear_before_reset", 0)
        if lbr not in (0, 1) or isinstance(lbr, bool):
            raise ConvertError("%s.linear_before_reset: must be 0 or 1" % where)
        L.linear_before_reset = lbr
    elif t == "jordan":
        L.output_size = _int(where + ".output_size", j.get("output_size"))
    elif t == "clockwork":
        if j.get("periods") is None:
            raise ConvertError("%s.periods: missing (a clockwork layer needs a list of strictly "
                               "increasing positive integers, one period per module)" % where)
        L.periods = j["periods"]        # checked with the layer (arch._validate_periods)
    elif t == "slstm":
        L.heads = _int(where + ".heads", j.get("heads"))
        L.forget = j.get("forget")
        if L.forget not in SLSTM_FORGET:
            raise ConvertError("%s.forget: %s is not one of %s"
                               % (where, json.dumps(L.forget), ", ".join(SLSTM_FORGET)))
        if L.hidden_size % L.heads:
            raise ConvertError("%s.heads: %d does not divide hidden_size %d"
                               % (where, L.heads, L.hidden_size))
    return L


def model_from_arch(j):
    """A Model (no weights yet) from an architecture object."""
    _obj("architecture", j, TOP_KEYS)
    fv = j.get("format_version", FORMAT_VERSION)
    if fv != FORMAT_VERSION or isinstance(fv, bool):
        raise ConvertError("format_version: %s is not %d" % (json.dumps(fv), FORMAT_VERSION))
    m = Model()
    name = j.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise ConvertError("name: expected a string")
        m.name = name
    inp = j.get("input")
    if not isinstance(inp, dict):
        raise ConvertError("input: expected an object")
    if inp.get("kind") == "tokens":
        _obj("input", inp, ("kind", "vocab_size", "embedding_dim"))
        m.input_kind = "tokens"
        m.vocab_size = _int("input.vocab_size", inp.get("vocab_size"))
        m.input_dim = _int("input.embedding_dim", inp.get("embedding_dim"))
    elif inp.get("kind") == "vectors":
        _obj("input", inp, ("kind", "dim"))
        m.input_dim = _int("input.dim", inp.get("dim"))
    else:
        raise ConvertError("input.kind: must be \"tokens\" or \"vectors\"")
    layers = j.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConvertError("layers: expected a non-empty list")
    m.layers = [parse_layer("layers[%d]" % i, x) for i, x in enumerate(layers)]
    head = j.get("head")
    m.head_spec = None
    if head is not None:
        _obj("head", head, ("out_dim", "in_dim", "norm", "layers"))
        m.head_spec = (_int("head.out_dim", head.get("out_dim")),
                       _int("head.in_dim", head.get("in_dim")))
        m.head_layer_spec = None
        if head.get("layers") is not None:
            hl = head["layers"]
            if not isinstance(hl, list) or not 1 <= len(hl) <= 16:
                raise ConvertError("head.layers: expected a list of 1 to 16 layers")
            m.head_layer_spec = [_head_layer("head.layers[%d]" % k, x)
                                 for k, x in enumerate(hl)]
        m.head_norm = head.get("norm", "none")
        if m.head_norm not in NORMS:
            raise ConvertError("head.norm: %s is not one of %s"
                               % (json.dumps(m.head_norm), ", ".join(NORMS)))
    pool = j.get("pool")
    if pool is not None:
        if pool not in POOLS:
            raise ConvertError("pool: %s is not one of %s" % (json.dumps(pool), ", ".join(POOLS)))
        m.pool = pool
    if j.get("vocab") is not None:
        if not isinstance(j["vocab"], list):
            raise ConvertError("vocab: expected a list of strings")
        m.vocab = j["vocab"]
    m.tokenizer = j.get("tokenizer")
    return m


def _head_layer(where, h):
    if not isinstance(h, dict) or h.get("op") not in HEAD_OPS:
        raise ConvertError("%s.op: expected one of %s" % (where, ", ".join(HEAD_OPS)))
    op = h["op"]
    keys = {"linear": ("op", "in_dim", "out_dim"), "layernorm": ("op", "eps", "affine")}
    _obj(where, h, keys.get(op, ("op",)))
    out = {"op": op}
    if op == "linear":
        out["dims"] = (_int(where + ".out_dim", h.get("out_dim")),
                       _int(where + ".in_dim", h.get("in_dim"), hi=131072))
    elif op == "layernorm":
        out["eps"] = _num(where + ".eps", h.get("eps", 1e-5))
        if not out["eps"] > 0:
            raise ConvertError("%s.eps: must be a positive number" % where)
        out["affine"] = _bool(where + ".affine", h.get("affine", True))
    return out


# Bounds on a weights .npz, checked from the zip directory and each .npy header before any
# array is read (docs/convert.md "Native spec"): a small deflated member can declare gigabytes.
MAX_NPZ_MEMBER = 1 << 30
MAX_NPZ_TOTAL = 4 << 30


def _check_npz(path):
    """Refuse an .npz whose members declare more than the bounds, or an .npy header that
    declares more data than its member holds; nothing is decompressed beyond the headers."""
    with zipfile.ZipFile(path) as z:
        total = 0
        for info in z.infolist():
            total += info.file_size
            if info.file_size > MAX_NPZ_MEMBER or total > MAX_NPZ_TOTAL:
                raise ConvertError(
                    "%s declares %d bytes uncompressed (%d in all); rnnd-convert reads at most "
                    "%d MiB per array and %d MiB in all" % (info.filename, info.file_size, total,
                                                            MAX_NPZ_MEMBER >> 20,
                                                            MAX_NPZ_TOTAL >> 20), path=path)
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                shape, _, dtype = np.lib.format._read_array_header(f, version)
                need = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if need > info.file_size - f.tell():
                    raise ConvertError("%s: its header declares %s %s (%d bytes) but the "
                                       "member holds %d" % (info.filename, list(shape), dtype,
                                                            need, info.file_size - f.tell()),
                                       path=path)


def load_npz(path):
    try:
        _check_npz(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ConvertError("weights file not found", path=path)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConvertError("cannot read weights (.npz expected): %s" % e, path=path)


def attach_weights(m, tensors, label="weights"):
    """Move TENSORS (format names -> arrays) into M. Biases may be absent (zeros)."""
    t = dict(tensors)
    for name, a in t.items():
        if not np.issubdtype(np.asarray(a).dtype, np.floating):
            raise ConvertError("%s: %s has dtype %s, expected floats"
                               % (label, name, np.asarray(a).dtype))
    if m.input_kind == "tokens":
        m.embedding = _take(t, "embedding.weight")
    for l, L in enumerate(m.layers):
        L.weights = []
        for d in range(L.num_directions):
            p = "layers.%d.%d." % (l, d)
            names = ("W", "Wb") if L.type in MIN_TYPES else ("W", "R", "Wb", "Rb")
            w = {k: _take(t, p + k) for k in names}
            if L.type == "lstm" and L.peepholes:
                w["P"] = _take(t, p + "P")
            if L.type == "lstm" and L.proj_size > 0:
                w["proj"] = _take(t, p + "proj")
            if L.type == "jordan":
                w["V"] = _take(t, p + "V")
                w["Vb"] = _take(t, p + "Vb")
            if L.type == "lstm" and L.depth_gate:
                for k in DEPTH_GATE_TENSORS:
                    w[k] = _take(t, p + k)
            L.weights.append(w)
        fill_biases(L)
    if getattr(m, "head_layer_spec", None) is not None:
        m.head_layers = []
        for k, h in enumerate(m.head_layer_spec):
            h = dict(h)
            dims = h.pop("dims", None)
            if h["op"] == "linear" or (h["op"] == "layernorm" and h["affine"]):
                h["W"] = _take(t, "head.%d.weight" % k)
                h["b"] = _take(t, "head.%d.bias" % k)
                if h["W"] is None:
                    raise ConvertError("%s: head.%d.weight missing" % (label, k))
                if h["b"] is None:
                    h["b"] = np.zeros(h["W"].shape[0], np.float32)
                if dims is not None and tuple(h["W"].shape) != dims:
                    raise ConvertError("head.%d.weight: shape %s but the architecture says "
                                       "[%d, %d]" % (k, list(h["W"].shape), dims[0], dims[1]))
            m.head_layers.append(h)
        if m.head_widths() != (m.head_spec[1], m.head_spec[0]):
            raise ConvertError("head: the layers give %d -> %d but the architecture says "
                               "in_dim %d, out_dim %d" % (m.head_widths() + m.head_spec[::-1]))
    elif getattr(m, "head_spec", None) is not None:
        m.head_W = _take(t, "head.weight")
        if m.head_W is None:
            raise ConvertError("%s: head.weight missing (the architecture has a head)" % label)
        m.head_b = _take(t, "head.bias")
        if m.head_b is None:
            m.head_b = np.zeros(m.head_W.shape[0], np.float32)
        if tuple(m.head_W.shape) != m.head_spec:
            raise ConvertError("head.weight: shape %s but the architecture says [%d, %d]"
                               % (list(m.head_W.shape), m.head_spec[0], m.head_spec[1]))
    if t:
        raise ConvertError("%s: tensor %s is not used by the architecture"
                           % (label, sorted(t)[0]))


def _take(t, name):
    a = t.pop(name, None)
    return None if a is None else f32(a)


def load(path, weights=None):
    """Model from a native spec at PATH; WEIGHTS overrides the JSON's "weights" key."""
    try:
        with open(path, "rb") as f:
            j = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ConvertError("cannot read: %s" % e.strerror)
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("not valid JSON: %s" % e)
    if not isinstance(j, dict):
        raise ConvertError("expected a JSON object (the architecture)")
    m = model_from_arch(j)
    if weights is None:
        w = j.get("weights")
        if not isinstance(w, str) or not w:
            raise ConvertError("no weights: give a \"weights\" key (an .npz path) or --weights")
        weights = os.path.join(os.path.dirname(os.path.abspath(path)), w)
        if w in ("f32", "bf16", "f16", "int8") and not os.path.exists(weights):
            raise ConvertError("weights file not found: \"weights\" names the .npz of the "
                               "weights, not their type (rnnd-convert --weight-type %s)" % w,
                               path=weights)
    tensors = load_npz(weights)
    attach_weights(m, tensors, os.path.basename(weights))
    return m
