"""The model digest of an .rnnd file, as docs/state.md "The digest" defines it and `rnnd
inspect` prints it: the SHA-256 of the architecture as computed and the weight values. The
verification record names it, so that a record belongs to one model (verify.py).
tests/test_state_digest.py writes the same definition out a second time, independently, and
holds both to `rnnd inspect`."""
import hashlib
import struct

import numpy as np

from . import reference

# the record's type codes: 6 is the clockwork layer's
TYPES = {"rnn": 0, "lstm": 1, "gru": 2, "jordan": 3, "mingru": 4, "minlstm": 5, "clockwork": 6,
         "slstm": 7}
DIRS = ["forward", "reverse", "bidirectional"]
NORMS = ["none", "softmax", "log_softmax"]
OPS = ["Sigmoid", "Tanh", "Relu", "HardSigmoid", "LeakyRelu", "ThresholdedRelu", "ScaledTanh",
       "Affine", "Elu", "Softsign", "Softplus"]
# the parameters each op has, with their defaults (docs/model-format.md)
PARAMS = {"HardSigmoid": (0.2, 0.5), "LeakyRelu": (0.01, None), "ThresholdedRelu": (1.0, None),
          "ScaledTanh": (1.0, 1.0), "Affine": (1.0, 0.0), "Elu": (1.0, None)}
DEFAULT_ACTS = {"rnn": ["Tanh"], "lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"],
                "jordan": ["Tanh", "Affine"], "mingru": ["Sigmoid", "Affine"],
                "minlstm": ["Sigmoid", "Affine"], "slstm": [], "clockwork": ["Tanh"]}


def opt(obj, key, default):
    v = obj.get(key)
    return default if v is None else v


def u32(*vals):
    return struct.pack("<%dI" % len(vals), *vals)


def f32(x):
    return struct.pack("<f", x)


def act_bytes(op, alpha, beta):
    has = PARAMS.get(op, (None, None))
    a = (has[0] if alpha is None else alpha) if has[0] is not None else 0.0
    b = (has[1] if beta is None else beta) if has[1] is not None else 0.0
    return u32(OPS.index(op)) + f32(a) + f32(b)


def layer_bytes(L, l):
    """(the layer's record, the names of its tensors in order)."""
    typ = L["type"]
    lstm, ndir = typ == "lstm", 2 if opt(L, "direction", "forward") == "bidirectional" else 1
    clip = L.get("clip")
    rec = u32(TYPES[typ], DIRS.index(opt(L, "direction", "forward")), L["hidden_size"])
    rec += u32(0 if clip is None else 1) + f32(0.0 if clip is None else clip)
    rec += u32(int(opt(L, "input_forget", False)) if lstm else 0,
               int(opt(L, "peepholes", False)) if lstm else 0,
               int(opt(L, "forget_gate", True)) if lstm else 0,
               opt(L, "proj_size", 0) if lstm else 0,
               opt(L, "linear_before_reset", 0) if typ == "gru" else 0,
               opt(L, "output_size", 0) if typ == "jordan" else 0)
    dg = lstm and opt(L, "depth_gate", False)
    if dg:      # only when set: every other layer's record stays as it was
        rec += b"depth_gate"
    if typ == "slstm":      # heads, then forget: 1 exp, 0 sigmoid
        rec += u32(L["heads"], 1 if L["forget"] == "exp" else 0)
    if typ == "clockwork":          # clockwork only: the number of periods, then each
        rec += u32(len(L["periods"]), *L["periods"])
    acts = L.get("activations")
    names = []
    for d in range(ndir):
        for a in acts[d] if acts else DEFAULT_ACTS[typ]:
            if isinstance(a, str):
                a = {"op": a}
            rec += act_bytes(a["op"], a.get("alpha"), a.get("beta"))
        mins = typ in ("mingru", "minlstm")
        names += ["layers.%d.%d.%s" % (l, d, k)
                  for k in (("W", "Wb") if mins else ("W", "R", "Wb", "Rb"))]
        if lstm and opt(L, "peepholes", False):
            names.append("layers.%d.%d.P" % (l, d))
        if lstm and opt(L, "proj_size", 0) > 0:
            names.append("layers.%d.%d.proj" % (l, d))
        if typ == "jordan":
            names += ["layers.%d.%d.V" % (l, d), "layers.%d.%d.Vb" % (l, d)]
        if dg:
            names += ["layers.%d.%d.%s" % (l, d, k) for k in ("D", "Dc", "Dl", "Db")]
    return rec, names


POOLS = ["none", "last", "final_state", "mean", "max"]
HEAD_OPS = ["linear", "relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "layernorm"]


def file_digest(path):
    """The lowercase hex model digest of the .rnnd file at PATH."""
    arch, tensors = reference.read(path, q8=True)   # the values the model computes with
    inp = arch["input"]
    out = [b"rnnd-state-1"]
    names = []
    if inp["kind"] == "tokens":
        out.append(u32(0, inp["vocab_size"], inp["embedding_dim"]))
        names.append("embedding.weight")
    else:
        out.append(u32(1, 0, inp["dim"]))
    out.append(u32(len(arch["layers"])))
    for l, L in enumerate(arch["layers"]):
        rec, n = layer_bytes(L, l)
        out.append(rec)
        names += n
    head = arch.get("head")
    if head:
        out.append(u32(1, head["out_dim"], NORMS.index(opt(head, "norm", "none"))))
    else:
        out.append(u32(0, 0, 0))
    pool = arch.get("pool") or "none"
    if pool != "none":      # only when set: older digests stay as they were
        out.append(b"pool" + u32(POOLS.index(pool)))
    layers = (head or {}).get("layers")
    if head and layers is None:
        names += ["head.weight", "head.bias"]
    elif head:
        # "headlayers" only for more than one linear: such a head keeps its digest
        if not (len(layers) == 1 and layers[0]["op"] == "linear"):
            rec, w = [b"headlayers", u32(len(layers))], head["in_dim"]
            for h in layers:
                ln = h["op"] == "layernorm"
                o = h["out_dim"] if h["op"] == "linear" else w
                rec.append(u32(HEAD_OPS.index(h["op"]), w, o,
                               int(opt(h, "affine", True)) if ln else 0) +
                           f32(opt(h, "eps", 1e-5) if ln else 0.0))
                w = o
            out += rec
        for k, h in enumerate(layers):
            if h["op"] == "linear" or (h["op"] == "layernorm" and opt(h, "affine", True)):
                names += ["head.%d.weight" % k, "head.%d.bias" % k]
    for n in names:
        out.append(np.ascontiguousarray(tensors[n], dtype="<f4").tobytes())
    if arch.get("weights") == "int8":   # only then: every other digest stays as it was
        out.append(b"int8")
        for n in names:
            if n + ".scale" in tensors:
                out.append(np.ascontiguousarray(tensors[n + ".scale"], dtype="<f4").tobytes())
    return hashlib.sha256(b"".join(out)).hexdigest()
