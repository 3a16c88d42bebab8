"""The in-memory model every importer builds, and its checks (docs/model-format.md).

An importer fills a Model (architecture plus float32 weights); validate() checks it the way
rnnd's loader will, so a file that the converter writes is one that rnnd accepts.
"""
import math

import numpy as np

from .errors import ConvertError

FORMAT_VERSION = 1
MAX_DIM = 65536
MAX_LAYERS = 64
# the architecture's "weights": the element type of the weight matrices (docs/model-format.md)
WEIGHT_TYPES = ("f32", "bf16", "f16", "int8")   # int8: writer.quantize_rows
HALF_DTYPES = {"bf16": "BF16", "f16": "F16"}


# name -> (takes alpha, takes beta, default alpha, default beta)
ACTIVATIONS = {
    "Sigmoid": (False, False, 0.0, 0.0),
    "Tanh": (False, False, 0.0, 0.0),
    "Relu": (False, False, 0.0, 0.0),
    "HardSigmoid": (True, True, 0.2, 0.5),
    "LeakyRelu": (True, False, 0.01, 0.0),
    "ThresholdedRelu": (True, False, 1.0, 0.0),
    "ScaledTanh": (True, True, 1.0, 1.0),
    "Affine": (True, True, 1.0, 0.0),
    "Elu": (True, False, 1.0, 0.0),
    "Softsign": (False, False, 0.0, 0.0),
    "Softplus": (False, False, 0.0, 0.0),
}
_ACT_BY_LOWER = {k.lower(): k for k in ACTIVATIONS}

CELL_TYPES = ("rnn", "lstm", "gru", "jordan", "mingru", "minlstm", "slstm", "clockwork")
# the minGRU / minLSTM of Feng et al. 2024: gates read only the input, so W, Wb and no R, Rb
MIN_TYPES = ("mingru", "minlstm")
DIRECTIONS = ("forward", "reverse", "bidirectional")
NORMS = ("none", "softmax", "log_softmax")
POOLS = ("none", "last", "final_state", "mean", "max")
TOKENIZERS = ("char", "byte")

# slstm: exp, tanh and sigmoid are part of the cell, so it takes no "activations"
N_ACT = {"rnn": 1, "lstm": 3, "gru": 2, "jordan": 2, "mingru": 2, "minlstm": 2, "slstm": 0,
         "clockwork": 1}
SLSTM_FORGET = ("exp", "sigmoid")
DEFAULT_ACTS = {
    "rnn": ["Tanh"],
    "lstm": ["Sigmoid", "Tanh", "Tanh"],
    "gru": ["Sigmoid", "Tanh"],
    "jordan": ["Tanh", "Affine"],
    "mingru": ["Sigmoid", "Affine"],
    "minlstm": ["Sigmoid", "Affine"],
    "clockwork": ["Tanh"],
    "slstm": [],
}

COMMON_KEYS = ("type", "hidden_size", "direction", "activations", "clip")
TYPE_KEYS = {
    "rnn": (),
    "lstm": ("input_forget", "peepholes", "forget_gate", "proj_size"),
    "gru": ("linear_before_reset",),
    "jordan": ("output_size",),
    "mingru": (),
    "minlstm": (),
    "clockwork": ("periods",),
    "slstm": ("heads", "forget"),
}
# The neutral value of every type-specific key (what it must be on a type that ignores it).
NEUTRAL = {"input_forget": False, "peepholes": False, "forget_gate": True, "proj_size": 0,
           "linear_before_reset": 0, "output_size": 0, "heads": None, "forget": None,
           "periods": None, "depth_gate": False}
MAX_PERIODS = 64                        # modules of a clockwork layer (RNND_MAX_PERIODS)
# lstm's depth_gate (Yao et al. 2015) is written only when true, so files of every other
# lstm stay byte-identical; it is not in TYPE_KEYS for that reason.
DEPTH_GATE_TENSORS = ("D", "Dc", "Dl", "Db")
# forget_gate's neutral value is true, but on a non-lstm layer false/absent is also accepted.


def canonical_activation(name):
    """The canonical spelling of an activation name (ONNX names are case-insensitive in ONNX
    Runtime), or None if unknown."""
    if not isinstance(name, str):
        return None
    return _ACT_BY_LOWER.get(name.lower())


def make_act(op, alpha=None, beta=None):
    """An activation dict with alpha and beta always filled in (0 where the op takes none)."""
    takes_a, takes_b, da, db = ACTIVATIONS[op]
    return {"op": op,
            "alpha": float(alpha if (takes_a and alpha is not None) else (da if takes_a else 0.0)),
            "beta": float(beta if (takes_b and beta is not None) else (db if takes_b else 0.0))}


class Layer:
    """One recurrent layer: architecture fields plus weights[d] = {tensor suffix: array}."""

    def __init__(self, type, hidden_size, direction="forward", activations=None, clip=None,
                 input_forget=False, peepholes=False, forget_gate=True, proj_size=0,
                 linear_before_reset=0, output_size=0, heads=1, forget="exp", periods=None,
                 depth_gate=False):
        self.type = type
        self.hidden_size = hidden_size
        self.direction = direction
        self.activations = activations     # None = defaults; else one list per direction
        self.clip = clip
        self.input_forget = input_forget
        self.peepholes = peepholes
        self.forget_gate = forget_gate
        self.proj_size = proj_size
        self.linear_before_reset = linear_before_reset
        self.output_size = output_size
        self.periods = periods              # clockwork: [T_1 < ... < T_m]
        self.heads = heads                  # slstm: R is block-diagonal, [4H, H / heads]
        self.forget = forget                # slstm: "exp" or "sigmoid"
        self.depth_gate = depth_gate        # lstm: reads the new c of the lstm below
        self.weights = []       # per direction: dict W, R, Wb, Rb, P, proj, V, Vb, D, Dc, Dl, Db

    @property
    def num_directions(self):
        return 2 if self.direction == "bidirectional" else 1

    @property
    def gates(self):
        if self.type == "lstm":
            return 4 if self.forget_gate else 3
        if self.type == "slstm":
            return 4
        if self.type == "mingru":
            return 2
        return 3 if self.type in ("gru", "minlstm") else 1

    @property
    def out_dim(self):
        if self.type == "jordan":
            return self.output_size
        if self.type == "lstm" and self.proj_size > 0:
            return self.proj_size
        return self.hidden_size

    def resolved_activations(self):
        if self.activations is None:
            return [[make_act(op) for op in DEFAULT_ACTS[self.type]]
                    for _ in range(self.num_directions)]
        return self.activations

    @property
    def r_cols(self):
        """Columns of R: slstm's block-diagonal R keeps only each head's d = H / K."""
        return self.hidden_size // self.heads if self.type == "slstm" else self.out_dim

    def to_json(self):
        if self.type == "slstm":
            return {"type": "slstm", "hidden_size": int(self.hidden_size),
                    "direction": self.direction, "heads": int(self.heads),
                    "forget": self.forget}
        d = {"type": self.type, "hidden_size": int(self.hidden_size),
             "direction": self.direction,
             "activations": [[_json_act(a) for a in acts]
                             for acts in self.resolved_activations()],
             "clip": None if self.clip is None else _short_float(self.clip)}
        for k in TYPE_KEYS[self.type]:
            v = getattr(self, k)
            if k == "periods":
                d[k] = [int(p) for p in v]
                continue
            d[k] = bool(v) if isinstance(NEUTRAL[k], bool) else int(v)
        if self.type == "lstm" and self.depth_gate:
            d["depth_gate"] = True
        return d


class Model:
    """A whole model: input, layers, optional head, optional vocabulary."""

    def __init__(self):
        self.name = ""
        self.input_kind = "vectors"         # or "tokens"
        self.vocab_size = 0
        self.input_dim = 0                  # embedding_dim or dim
        self.embedding = None               # [vocab_size, embedding_dim]
        self.layers = []
        self.head_W = None                  # [out_dim, in_dim] or None
        self.head_b = None
        self.head_norm = "none"
        # An MLP head (docs/model-format.md, "The head"), instead of head_W / head_b: a list
        # of {"op": HEAD_OPS, "W": ..., "b": ...} (linear; layernorm with affine), "eps" and
        # "affine" for layernorm. A head of one linear is written as head_W / head_b.
        self.head_layers = None
        self.pool = "none"                  # POOLS: whole-sequence pooling before the head
        self.vocab = None
        self.tokenizer = None
        self.weights = "f32"                # or "bf16" / "f16": matrices stored half-size
        # not written: the source's forward() takes [B, T] and adds the feature axis itself
        # (x.unsqueeze(-1) of a univariate series), so verification feeds it that rank
        self.source_features = True

    def layer_in_dim(self, l):
        if l == 0:
            return self.input_dim
        p = self.layers[l - 1]
        return p.out_dim * p.num_directions

    def has_head(self):
        return self.head_W is not None or bool(self.head_layers)

    def head_widths(self):
        """(in_dim, out_dim) of the head."""
        if self.head_W is not None:
            return int(self.head_W.shape[1]), int(self.head_W.shape[0])
        last = self.layers[-1]
        w = i = last.out_dim * last.num_directions
        for h in self.head_layers:
            if h["op"] == "linear":
                w = int(h["W"].shape[0])
        return i, w

    def output_dim(self):
        if self.has_head():
            return self.head_widths()[1]
        last = self.layers[-1]
        return last.out_dim * last.num_directions

    def arch_json(self):
        if self.input_kind == "tokens":
            inp = {"kind": "tokens", "vocab_size": int(self.vocab_size),
                   "embedding_dim": int(self.input_dim)}
        else:
            inp = {"kind": "vectors", "dim": int(self.input_dim)}
        head = None
        if self.has_head():
            i, o = self.head_widths()
            head = {"out_dim": o, "in_dim": i, "norm": self.head_norm}
        if self.head_layers:
            head["layers"] = [_head_layer_json(h) for h in self.head_layers]
        d = {"format_version": FORMAT_VERSION, "name": self.name, "input": inp,
             "layers": [L.to_json() for L in self.layers], "head": head,
             "vocab": None if self.vocab is None else list(self.vocab),
             "tokenizer": self.tokenizer}
        if self.weights != "f32":       # absent means f32: float files stay byte-identical
            d["weights"] = self.weights
        if self.pool != "none":         # likewise: files without pooling are unchanged
            d["pool"] = self.pool
        return d

    def expected_tensors(self):
        """[(name, shape)] of every tensor the architecture needs, in file order."""
        out = []
        if self.input_kind == "tokens":
            out.append(("embedding.weight", (self.vocab_size, self.input_dim)))
        for l, L in enumerate(self.layers):
            ind, H, G = self.layer_in_dim(l), L.hidden_size, L.gates
            for d in range(L.num_directions):
                p = "layers.%d.%d." % (l, d)
                if L.type in MIN_TYPES:
                    out += [(p + "W", (G * H, ind)), (p + "Wb", (G * H,))]
                else:
                    out += [(p + "W", (G * H, ind)), (p + "R", (G * H, L.r_cols)),
                            (p + "Wb", (G * H,)), (p + "Rb", (G * H,))]
                if L.type == "lstm" and L.peepholes:
                    out.append((p + "P", (3 * H,)))
                if L.type == "lstm" and L.proj_size > 0:
                    out.append((p + "proj", (L.proj_size, H)))
                if L.type == "jordan":
                    out += [(p + "V", (L.output_size, H)), (p + "Vb", (L.output_size,))]
                if L.type == "lstm" and L.depth_gate:
                    out += [(p + "D", (H, ind)), (p + "Dc", (H,)), (p + "Dl", (H,)),
                            (p + "Db", (H,))]
        if self.head_W is not None:
            o, i = self.head_W.shape
            out += [("head.weight", (o, i)), ("head.bias", (o,))]
        w = self.head_widths()[0] if self.head_layers else 0
        for k, h in enumerate(self.head_layers or []):
            if h["op"] == "linear":
                o = int(h["W"].shape[0])
                out += [("head.%d.weight" % k, (o, w)), ("head.%d.bias" % k, (o,))]
                w = o
            elif h["op"] == "layernorm" and h.get("affine", True):
                out += [("head.%d.weight" % k, (w,)), ("head.%d.bias" % k, (w,))]
        return out

    def tensors(self):
        """{name: float32 array} as they will be written."""
        t = {}
        if self.embedding is not None:
            t["embedding.weight"] = self.embedding
        for l, L in enumerate(self.layers):
            for d, w in enumerate(L.weights):
                for k, v in w.items():
                    if v is not None:
                        t["layers.%d.%d.%s" % (l, d, k)] = v
        if self.head_W is not None:
            t["head.weight"] = self.head_W
            if self.head_b is not None:
                t["head.bias"] = self.head_b
        for k, h in enumerate(self.head_layers or []):
            for key, suffix in (("W", "weight"), ("b", "bias")):
                if h.get(key) is not None:
                    t["head.%d.%s" % (k, suffix)] = h[key]
        return t


HEAD_OPS = ("linear", "relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "layernorm")


def _head_layer_json(h):
    if h["op"] == "linear":
        return {"op": "linear", "in_dim": int(h["W"].shape[1]), "out_dim": int(h["W"].shape[0])}
    if h["op"] == "layernorm":
        return {"op": "layernorm", "eps": _short_float(h.get("eps", 1e-5)),
                "affine": bool(h.get("affine", True))}
    return {"op": h["op"]}


def _json_act(a):
    m = make_act(a["op"], a.get("alpha"), a.get("beta"))
    m["alpha"] = _short_float(m["alpha"])
    m["beta"] = _short_float(m["beta"])
    return m


def _short_float(x):
    """The shortest decimal that reads back as the same float32 (rnnd stores floats)."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="0"))


def _dim_ok(v):
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_DIM


FLT_MAX = 3.4028234663852886e38


def _is_num(v):
    """A finite number that fits a float (rnnd stores alpha, beta and clip as floats)."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and abs(v) <= FLT_MAX)


def validate(model):
    """Raise ConvertError unless MODEL is something rnnd will load and serve."""
    if not isinstance(model.name, str) or len(model.name.encode("utf-8")) > 127:
        raise ConvertError("name: must be a string of at most 127 bytes")
    if model.input_kind not in ("tokens", "vectors"):
        raise ConvertError("input.kind: must be tokens or vectors")
    if not _dim_ok(model.input_dim):
        raise ConvertError("input: dimension %r out of range 1..%d" % (model.input_dim, MAX_DIM))
    if model.input_kind == "tokens" and not _dim_ok(model.vocab_size):
        raise ConvertError("input.vocab_size: %r out of range 1..%d"
                           % (model.vocab_size, MAX_DIM))
    if not 1 <= len(model.layers) <= MAX_LAYERS:
        raise ConvertError("layers: %d layers; rnnd takes 1 to %d"
                           % (len(model.layers), MAX_LAYERS))
    for l, L in enumerate(model.layers):
        _validate_layer("layers[%d]" % l, L)
        _validate_depth_gate(model, l)
    if model.head_W is not None:
        if model.head_W.ndim != 2:
            raise ConvertError("head.weight: must be 2-D")
        o, i = model.head_W.shape
        if not _dim_ok(int(o)) or not _dim_ok(int(i)):
            raise ConvertError("head: sizes %dx%d out of range" % (o, i))
        last = model.layers[-1]
        if i != last.out_dim * last.num_directions:
            raise ConvertError("head: in_dim %d but the last layer outputs %d"
                               % (i, last.out_dim * last.num_directions))
        if model.head_norm not in NORMS:
            raise ConvertError("head.norm: %r is not one of %s" % (model.head_norm, NORMS))
    elif model.head_layers:
        _validate_head_layers(model)
        if model.head_norm not in NORMS:
            raise ConvertError("head.norm: %r is not one of %s" % (model.head_norm, NORMS))
    elif model.head_norm != "none":
        raise ConvertError("head.norm: a normalisation needs a head")
    if model.pool not in POOLS:
        raise ConvertError("pool: %r is not one of %s" % (model.pool, ", ".join(POOLS)))
    if model.weights not in WEIGHT_TYPES:
        raise ConvertError("weights: %r is not one of %s" % (model.weights,
                                                             ", ".join(WEIGHT_TYPES)))
    _validate_vocab(model)
    _validate_tensors(model)
    _validate_clock_blocks(model)


def _validate_periods(where, L):
    """A clockwork layer's periods: 1..64 strictly increasing positive ints dividing H."""
    p = L.periods
    if not isinstance(p, (list, tuple)) or not 1 <= len(p) <= MAX_PERIODS:
        raise ConvertError("%s.periods: expected a list of 1 to %d integers, got %r"
                           % (where, MAX_PERIODS, p))
    for k, v in enumerate(p):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or \
                not 1 <= v <= 2 ** 31 - 1:
            raise ConvertError("%s.periods[%d]: expected an integer 1 to 2147483647, got %r"
                               % (where, k, v))
        if k and v <= p[k - 1]:
            raise ConvertError("%s.periods[%d]: %d is not above %d: the periods must be "
                               "strictly increasing" % (where, k, v, p[k - 1]))
    if L.hidden_size % len(p):
        raise ConvertError("%s.periods: %d modules do not divide hidden_size %d evenly"
                           % (where, len(p), L.hidden_size))


def _validate_clock_blocks(model):
    """A clockwork module reads only itself and the modules after it: R's blocks below the
    block diagonal must be zero (rnnd refuses the file otherwise)."""
    for l, L in enumerate(model.layers):
        if L.type != "clockwork":
            continue
        H = L.hidden_size
        hm = H // len(L.periods)
        below = np.arange(H)[None, :] < (np.arange(H) // hm * hm)[:, None]
        for d, w in enumerate(L.weights):
            bad = np.argwhere(below & (np.asarray(w["R"]) != 0))
            if len(bad):
                i, j = (int(v) for v in bad[0])
                raise ConvertError("layers.%d.%d.R: element [%d, %d] is %r, but a clockwork "
                                   "module reads only itself and the modules after it: R[i, j] "
                                   "must be 0 when j // %d < i // %d"
                                   % (l, d, i, j, float(w["R"][i, j]), hm, hm))


def _validate_head_layers(model):
    if len(model.head_layers) > 16:
        raise ConvertError("head: %d layers; rnnd takes 1 to 16" % len(model.head_layers))
    last = model.layers[-1]
    w = last.out_dim * last.num_directions
    for k, h in enumerate(model.head_layers):
        where = "head.layers[%d]" % k
        if h.get("op") not in HEAD_OPS:
            raise ConvertError("%s.op: %r is not one of %s" % (where, h.get("op"),
                                                              ", ".join(HEAD_OPS)))
        if h["op"] == "linear":
            W = h.get("W")
            if W is None or W.ndim != 2 or W.shape[1] != w or not _dim_ok(int(W.shape[0])):
                raise ConvertError("%s: a linear of shape %s after width %d"
                                   % (where, None if W is None else list(W.shape), w))
            w = int(W.shape[0])
            if h.get("b") is None:
                h["b"] = np.zeros(w, np.float32)
        elif h["op"] == "layernorm":
            eps = h.get("eps", 1e-5)
            if not _is_num(eps) or not np.float32(eps) > 0:
                raise ConvertError("%s.eps: %r must be a positive number" % (where, eps))


def _validate_layer(where, L):
    if L.type not in CELL_TYPES:
        raise ConvertError("%s.type: %r is not one of %s" % (where, L.type, CELL_TYPES))
    if not _dim_ok(L.hidden_size):
        raise ConvertError("%s.hidden_size: %r out of range 1..%d"
                           % (where, L.hidden_size, MAX_DIM))
    if L.direction not in DIRECTIONS:
        raise ConvertError("%s.direction: %r is not one of %s" % (where, L.direction, DIRECTIONS))
    if L.type == "slstm":
        if isinstance(L.heads, bool) or not isinstance(L.heads, int) or \
                not 1 <= L.heads <= MAX_DIM or L.hidden_size % L.heads:
            raise ConvertError("%s.heads: %r must be a positive divisor of hidden_size %d"
                               % (where, L.heads, L.hidden_size))
        if L.forget not in SLSTM_FORGET:
            raise ConvertError("%s.forget: %r is not one of %s"
                               % (where, L.forget, ", ".join(SLSTM_FORGET)))
        if L.clip is not None:
            raise ConvertError("%s.clip: a slstm layer has no clip" % where)
    if L.type == "clockwork":
        _validate_periods(where, L)
    if L.clip is not None and (L.type in MIN_TYPES or L.type == "clockwork"):
        raise ConvertError("%s.clip: a %s layer has no clip" % (where, L.type))
    if L.clip is not None and not (_is_num(L.clip) and L.clip > 0):
        raise ConvertError("%s.clip: must be a positive number, got %r" % (where, L.clip))
    acts = L.resolved_activations()
    if len(acts) != L.num_directions:
        raise ConvertError("%s.activations: %d lists for %d directions"
                           % (where, len(acts), L.num_directions))
    for d, lst in enumerate(acts):
        if len(lst) != N_ACT[L.type]:
            raise ConvertError("%s.activations[%d]: %s takes %d activations, got %d"
                               % (where, d, L.type, N_ACT[L.type], len(lst)))
        for a in lst:
            if a.get("op") not in ACTIVATIONS:
                raise ConvertError("%s.activations[%d]: unknown activation %r"
                                   % (where, d, a.get("op")))
            for k in ("alpha", "beta"):
                if a.get(k) is not None and not _is_num(a[k]):
                    raise ConvertError("%s.activations[%d]: %s %s must be a finite float"
                                       % (where, d, a["op"], k))
    if L.type == "lstm":
        if not isinstance(L.proj_size, int) or not 0 <= L.proj_size <= MAX_DIM:
            raise ConvertError("%s.proj_size: %r out of range 0..%d"
                           % (where, L.proj_size, MAX_DIM))
        if L.input_forget and not L.forget_gate:
            raise ConvertError("%s: input_forget needs the forget gate (forget_gate is false)"
                               % where)
    if L.type == "gru" and L.linear_before_reset not in (0, 1):
        raise ConvertError("%s.linear_before_reset: must be 0 or 1" % where)
    if L.type == "jordan" and not _dim_ok(L.output_size):
        raise ConvertError("%s.output_size: %r out of range 1..%d"
                           % (where, L.output_size, MAX_DIM))
    if len(L.weights) != L.num_directions:
        raise ConvertError("%s: weights for %d directions, expected %d"
                           % (where, len(L.weights), L.num_directions))


def _validate_depth_gate(model, l):
    """rnnd's rules for a depth gate (src/model_arch.c, check_depth_gate)."""
    L = model.layers[l]
    if not getattr(L, "depth_gate", False):
        return
    where = "layers[%d].depth_gate" % l
    if L.type != "lstm":
        raise ConvertError("%s: only an lstm layer has a depth gate" % where)
    if l == 0:
        raise ConvertError("%s: the first layer has no layer below whose cell it could gate"
                           % where)
    B = model.layers[l - 1]
    if L.direction != "forward":
        raise ConvertError("%s: a depth-gated layer runs forward only" % where)
    if L.proj_size > 0:
        raise ConvertError("%s: a depth-gated layer has no projection" % where)
    if B.type != "lstm" or B.direction != "forward" or B.proj_size > 0:
        raise ConvertError("%s: the layer below must be a forward lstm without projection"
                           % where)
    if B.hidden_size != L.hidden_size:
        raise ConvertError("%s: layers[%d] has hidden_size %d, this layer %d: they must be "
                           "equal" % (where, l - 1, B.hidden_size, L.hidden_size))


def _validate_vocab(model):
    if model.vocab is not None:
        if model.input_kind != "tokens":
            raise ConvertError("vocab: a vocabulary needs token input (this model reads vectors)")
        if not all(isinstance(s, str) for s in model.vocab):
            raise ConvertError("vocab: every token must be a string")
        for i, s in enumerate(model.vocab):
            if "\0" in s:
                raise ConvertError("vocab: token %d contains a NUL character" % i)
        if len(model.vocab) != model.vocab_size:
            raise ConvertError("vocab: %d tokens but the embedding has %d rows"
                               % (len(model.vocab), model.vocab_size))
    if model.tokenizer is not None:
        if model.tokenizer not in TOKENIZERS:
            raise ConvertError("tokenizer: %r is not one of %s" % (model.tokenizer, TOKENIZERS))
        if model.input_kind != "tokens":
            raise ConvertError("tokenizer: a tokenizer needs token input")
        if model.tokenizer == "char":
            if model.vocab is None:
                raise ConvertError("tokenizer: char needs a vocabulary (--vocab)")
            if len(set(model.vocab)) != len(model.vocab):
                raise ConvertError("vocab: duplicate tokens; the char tokenizer needs unique ones")
        if model.tokenizer == "byte" and model.vocab_size < 256:
            raise ConvertError("tokenizer: byte needs vocab_size >= 256, got %d"
                               % model.vocab_size)


def _validate_tensors(model):
    have = model.tensors()
    want = model.expected_tensors()
    for name, shape in want:
        if name not in have:
            raise ConvertError("%s: missing" % name)
        a = have[name]
        if tuple(a.shape) != tuple(shape):
            raise ConvertError("%s: shape %s, expected %s" % (name, list(a.shape), list(shape)))
        if a.dtype != np.float32:
            raise ConvertError("%s: dtype %s, expected float32" % (name, a.dtype))
        if not np.all(np.isfinite(a)):
            bad = int(np.flatnonzero(~np.isfinite(a))[0])
            raise ConvertError("%s: element %d is %s (NaN or Inf: the weights must be finite)"
                               % (name, bad, a.flat[bad]))
    extra = sorted(set(have) - {n for n, _ in want})
    if extra:
        raise ConvertError("%s: not used by the architecture" % extra[0])


def is_matrix(name):
    """Whether tensor NAME is a weight matrix the kernels read (W, R, proj, V, D, head.weight):
    the tensors a bf16 / f16 model stores half-size. Embedding, biases, peepholes stay F32."""
    if name == "head.weight":
        return True
    if name.startswith("head.") and name.endswith(".weight"):
        return None     # a linear's (2-D) but not a layernorm's: is_matrix_tensor decides
    return name.startswith("layers.") and name.rsplit(".", 1)[1] in ("W", "R", "proj", "V", "D")


def is_matrix_tensor(name, a):
    """is_matrix, with the tensor to tell a head linear's weight (2-D) from a layernorm's."""
    m = is_matrix(name)
    return (np.ndim(a) == 2) if m is None else m


def half_bits(a, weights, name="tensor"):
    """The uint16 bit patterns of float32 array A rounded to nearest even to WEIGHTS ("bf16" or
    "f16"), as rnnd rounds at load. A finite value beyond the type's range is an error."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if weights == "f16":
        with np.errstate(over="ignore"):
            h = a.astype(np.float16)
        bad = np.isinf(h) & np.isfinite(a)
        kind, top = "float16", 65504.0
        bits = h.view(np.uint16)
    elif weights == "bf16":
        u = a.view(np.uint32).astype(np.uint64)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        nan = np.isnan(a)
        r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)     # stays NaN, quiet
        bits = r
        back = (bits.astype(np.uint32) << 16).view(np.float32)
        bad = np.isinf(back) & np.isfinite(a)
        kind, top = "bfloat16", 3.3895313892515355e38
    else:
        raise ConvertError("weights: %r is not a half type" % (weights,))
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ConvertError("%s: value %.9g out of %s range (largest finite %.9g)"
                           % (name, float(a.ravel()[i]), kind, top))
    return bits


def half_to_f32(bits, weights):
    """float32 values of uint16 patterns BITS of type WEIGHTS (exact)."""
    bits = np.asarray(bits, dtype=np.uint16)
    if weights == "f16":
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


# A per-feature map x -> a * x + b before the first layer folds into W' = W * a and
# Wb' = Wb + W b, exact in float64; rnnd computes W' x + Wb' in float32, where, on data
# around the centre -b / a, the two terms are W b large and cancel (the source subtracts
# first, which is exact). Refused when float32's rounding of that cancelling term,
# eps32 * sum_j |W_ij b_j| for some row, can reach FOLD_LIMIT (ten times verification's
# tolerance; below that verification's pass at the data's own scale measures it: outside
# trial 20, S2)
FOLD_LIMIT = 1e-4


def check_input_fold(weights, a, b, where="first layer"):
    """Refuse folding x -> A * x + B (per feature, float64) into WEIGHTS (the layer's [{"W":
    ...}], before the fold) when the folded layer loses float32 precision on data around
    -B / A (FOLD_LIMIT), naming the feature whose |mu| / sd (= |B|) contributes most."""
    a = np.asarray(a, np.float64)
    b = np.where(a != 0, np.asarray(b, np.float64), 0.0)   # an unused feature cancels nothing
    eps = float(np.finfo(np.float32).eps)
    worst, feature = 0.0, 0
    for w in weights:
        terms = np.abs(np.asarray(w["W"], np.float64)) * np.abs(b)[None, :]
        rows = terms.sum(axis=1)
        i = int(np.argmax(rows))
        if rows[i] > worst:
            worst, feature = float(rows[i]), int(np.argmax(terms[i]))
    if eps * worst <= FOLD_LIMIT:
        return
    raise ConvertError(
        "the input's standardisation (x - mu) / sd, with |mu| / sd up to %.3g (feature %d: "
        "%.3g), cannot be folded into the %s without losing float32 "
        "precision: rnnd would compute W x / sd + (Wb - W mu / sd), two terms of about %.3g "
        "that cancel, where the source subtracts mu first (float32 error up to %.2g, limit "
        "%g): normalise the input in the client and take the standardisation out of the "
        "model, or subtract the offset in the client and keep only the scale in the model"
        % (float(np.max(np.abs(b))), feature, abs(float(b[feature])), where, worst,
           eps * worst, FOLD_LIMIT))


# a dense input map A x + c whose singular values span more than this ratio has no
# well-defined centre (the x0 with A x0 + c = 0) to check its fold at
FOLD_COND_LIMIT = 1e6


def check_dense_input_fold(weights, A, c, prefix=None, where="first layer"):
    """Refuse folding a dense input map x -> A x + c (float64; A is [out, in]) into WEIGHTS
    (the layer's [{"W": ...}], before the fold) when the folded layer loses float32 precision
    on data around the map's centre x0: eps32 * sum_j |(W A)_ij| |x0_j| against FOLD_LIMIT,
    as check_input_fold does for a per-feature map (outside trial 21, s2b). The centre is
    -b / a of PREFIX, the per-feature (a, b) that starts the chain ((x - mu) / sd before a
    MatMul), when it has an offset; else the least-squares zero of A x0 + c where A is well
    conditioned; a map with no offset at all is not checked. Returns (x0, scale): the data's
    centre and per-feature spread for verification's pass at the data's scale, or None."""
    A = np.asarray(A, np.float64)
    c = np.asarray(c, np.float64)
    eps = float(np.finfo(np.float32).eps)
    how, first, what = "a dense map A x + c", "A x and c cancel in it too", "map"
    x0 = scale = None
    if prefix is not None:
        a, b = (np.asarray(v, np.float64) for v in prefix)
        live = a != 0
        if np.any(b[live] != 0):
            safe = np.where(live, a, 1.0)
            x0 = np.where(live, -b / safe, 0.0)
            scale = np.where(live, 1.0 / np.abs(safe), 1.0)
            how = "a per-feature (x - mu) / sd followed by a dense map"
            first, what = "the source subtracts mu first", "standardisation"
    if x0 is None:
        if not np.any(c):
            return None
        s = np.linalg.svd(A, compute_uv=False)
        if s.size and s[-1] > 0 and s[0] / s[-1] <= FOLD_COND_LIMIT:
            x0 = np.linalg.lstsq(A, -c, rcond=None)[0]
            scale = np.ones(A.shape[1])
        else:
            # no centre to find: a large offset cancels against A x wherever the data
            # reach it, so the fold is refused where that could lose precision
            worst = max(float((np.abs(np.asarray(w["W"], np.float64)) @ np.abs(c)).max())
                        for w in weights)
            if eps * worst <= FOLD_LIMIT:
                return None
            raise ConvertError(
                "the input map before the %s, a dense map A x + c whose singular values span "
                "%.3g to %.3g, has an offset c up to %.3g: rnnd-convert cannot find the "
                "data's centre (the x with A x + c = 0), and it cannot be folded into the %s "
                "without losing float32 precision: rnnd would compute (W A) x + (Wb + W c), "
                "terms of about %.3g that cancel where A x is near -c (float32 error up to "
                "%.2g, limit %g): normalise the input in the client and take the map out of "
                "the model, or subtract the offset in the client"
                % (where, float(s[0]) if s.size else 0.0, float(s[-1]) if s.size else 0.0,
                   float(np.max(np.abs(c))), where, worst, eps * worst, FOLD_LIMIT))
    worst, feature = 0.0, 0
    for w in weights:
        terms = np.abs(np.asarray(w["W"], np.float64) @ A) * np.abs(x0)[None, :]
        rows = terms.sum(axis=1)
        i = int(np.argmax(rows))
        if rows[i] > worst:
            worst, feature = float(rows[i]), int(np.argmax(terms[i]))
    if eps * worst > FOLD_LIMIT:
        raise ConvertError(
            "the input map before the %s, %s, is centred at data with |x| up to %.3g "
            "(feature %d: %.3g), and cannot be folded into the %s without losing float32 "
            "precision: rnnd would compute (W A) x + (Wb + W c), two terms of about %.3g "
            "that cancel, where %s (float32 error up to %.2g, limit %g): normalise the input "
            "in the client and take the %s out of the model, or subtract the offset in the "
            "client"
            % (where, how, float(np.max(np.abs(x0))), feature, abs(float(x0[feature])), where,
               worst, first, eps * worst, FOLD_LIMIT, what))
    return x0, scale


def f32(a):
    """A C-contiguous float32 copy of A."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def fill_biases(layer):
    """Zeros for absent biases, so the file always has Wb, Rb (and Vb for jordan; mingru and
    minlstm have Wb alone)."""
    gh = layer.gates * layer.hidden_size
    for w in layer.weights:
        for k in (("Wb",) if layer.type in MIN_TYPES else ("Wb", "Rb")):
            if w.get(k) is None:
                w[k] = np.zeros(gh, np.float32)
        if layer.type == "jordan" and w.get("Vb") is None:
            w["Vb"] = np.zeros(layer.output_size, np.float32)
        if getattr(layer, "depth_gate", False) and w.get("Db") is None:
            w["Db"] = np.zeros(layer.hidden_size, np.float32)


def apply_options(model, name=None, vocab=None, tokenizer=None, norm=None, weights=None):
    """Settings given on the command line or to from_module() override the source's."""
    if weights is not None:
        if weights not in WEIGHT_TYPES:
            raise ConvertError("weights: %r is not one of %s" % (weights,
                                                                 ", ".join(WEIGHT_TYPES)))
        model.weights = weights
    if name is not None:
        model.name = name
    if vocab is not None:
        model.vocab = list(vocab)
    if tokenizer is not None:
        model.tokenizer = tokenizer
    if norm is not None:
        if norm not in NORMS:
            raise ConvertError("norm: %r is not one of %s" % (norm, ", ".join(NORMS)))
        if not model.has_head() and norm != "none":
            # softmax straight over the last layer: an identity head is exact
            last = model.layers[-1]
            n = last.out_dim * last.num_directions
            model.head_W = np.eye(n, dtype=np.float32)
            model.head_b = np.zeros(n, np.float32)
        model.head_norm = norm


def read_vocab(path):
    """Tokens from PATH: a JSON list of strings, or one token per line (a line's text without
    its newline, so a line holding one space is the space token)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConvertError("vocabulary file not found", path=path)
    except OSError as e:
        raise ConvertError("cannot read vocabulary: %s" % e.strerror, path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConvertError("vocabulary is not UTF-8", path=path)
    if text.lstrip().startswith("["):
        import json
        try:
            v = json.loads(text)
        except ValueError as e:
            raise ConvertError("vocabulary is not a valid JSON list: %s" % e, path=path)
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise ConvertError("vocabulary JSON must be a list of strings", path=path)
        return v
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [s[:-1] if s.endswith("\r") else s for s in lines]
    for i, s in enumerate(lines):
        if s == "":
            raise ConvertError("vocabulary line %d is empty (use a JSON list for such tokens)"
                               % (i + 1), path=path)
    return lines
