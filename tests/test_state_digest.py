"""State digests mean the same everywhere (docs/state.md, "The digest"; issue 12, item 8).

1. The digest is the one docs/state.md defines: computed here from that text alone (a second
   implementation) for every golden case, the bundled model, a bf16 model and rewritten
   copies, it equals GET /v1/models' and `rnnd inspect --json`'s. Names, the vocabulary's
   text and how the tensors are stored do not count; one flipped weight bit or another clip
   does. The file digest stays the SHA-256 of the file.
2. The same weights converted under two names exchange states on every path that accepts
   one: import (PUT .../state), create (POST /v1/sessions), reset, and infer's initial state;
   the receiving model then continues bit for bit like the one the state came from.
3. A state whose digest differs is refused on every path with the same status, code and
   message, and changes nothing: no session is created, a session keeps its state and step
   count. A state without a digest is refused by create, reset and import alike.

Prints what it checked. Each numbered check is a test (Digest.test_*), runnable alone.
"""
import hashlib
import json
import os
import struct
import subprocess
import unittest

import numpy as np

from daemon_util import PYTHON3, RNND_BIN, Case, golden_cases, golden_model, tmpdir
from daemon_util import RUNNING as C
from rnnd_convert import reference
from rnnd_convert.digest import file_digest as converter_digest

WORK = tmpdir("state_digest")
SRC = os.environ["RNND_SRCDIR"]
CHARLM = os.path.join(SRC, "models", "charlm.rnnd")
CASES = {name: (case, onnx) for name, case, onnx in golden_cases()}
VEC = "lstm_vectors"
DIM = CASES[VEC][0]["input"]["dim"]
SEQ = CASES[VEC][0]["sequences"][0]

# ---- docs/state.md, "The digest", written out a second time --------------------------------

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


def doc_digest(path):
    arch, tensors = reference.read(path)    # the values the model computes with
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
    return hashlib.sha256(b"".join(out)).hexdigest()


# ---- model files ------------------------------------------------------------------------------

def convert(onnx, out, *extra):
    subprocess.run([PYTHON3, "-m", "rnnd_convert", onnx, "-o", out, "-q"] + list(extra),
                   check=True, capture_output=True, timeout=120)
    return out


def split(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join(path, header, data):
    text = json.dumps(header).encode()
    text += b" " * ((-(8 + len(text))) % 8)     # the data buffer stays aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    return path


def rewrite_arch(src, dst, change):
    """DST: SRC with its architecture passed through CHANGE (the tensors untouched)."""
    header, data = split(src)
    arch = json.loads(header["__metadata__"]["architecture"])
    change(arch)
    header["__metadata__"]["architecture"] = json.dumps(arch)
    return join(dst, header, data)


def flip_weight(src, dst):
    """DST: SRC with the lowest bit of layers.0.0.W's first element flipped."""
    header, data = split(src)
    b = header["layers.0.0.W"]["data_offsets"][0]
    data = data[:b] + bytes([data[b] ^ 1]) + data[b + 1:]
    return join(dst, header, data)


def as_f32(src, dst):
    """DST: a half-weight SRC stored as a plain f32 model holding the same values."""
    arch, tensors = reference.read(src)
    arch.pop("weights", None)
    header = {"__metadata__": {"format": "rnnd", "format_version": "1",
                               "architecture": json.dumps(arch)}}
    data = b""
    for name, a in tensors.items():
        blob = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    return join(dst, header, data)


def with_mlp_head(src, dst):
    """DST: SRC's layers under an MLP head (docs/model-format.md, "The head") of every op."""
    arch, tensors = reference.read(src)
    if arch.get("head"):
        i, o = arch["head"]["in_dim"], arch["head"]["out_dim"]
        del tensors["head.weight"], tensors["head.bias"]
    else:
        i, o = inspect_json(src)["output_dim"], 3
    arch["head"] = {"in_dim": i, "out_dim": o, "norm": "log_softmax"}
    rng = np.random.default_rng(5)
    arch["head"]["layers"] = [
        {"op": "layernorm", "eps": 0.001}, {"op": "linear", "in_dim": i, "out_dim": 5},
        {"op": "gelu"}, {"op": "layernorm", "affine": False}, {"op": "tanh"},
        {"op": "sigmoid"}, {"op": "relu"}, {"op": "gelu_tanh"},
        {"op": "linear", "in_dim": 5, "out_dim": o}]
    for name, shape in (("head.0.weight", (i,)), ("head.0.bias", (i,)),
                        ("head.1.weight", (5, i)), ("head.1.bias", (5,)),
                        ("head.8.weight", (o, 5)), ("head.8.bias", (o,))):
        tensors[name] = rng.uniform(-1, 1, shape)
    header = {"__metadata__": {"format": "rnnd", "format_version": "1",
                               "architecture": json.dumps(arch)}}
    data = b""
    for name, a in tensors.items():
        blob = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    return join(dst, header, data)


def inspect_json(path):
    p = subprocess.run([RNND_BIN, "inspect", "--json", path], capture_output=True, text=True,
                       timeout=60)
    return json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr}


# ---- 1. the documented digest ---------------------------------------------------------------

def check_definition(files, served):
    """FILES: {name: path}; SERVED: GET /v1/models' entries by name."""
    for name, path in sorted(files.items()):
        want = doc_digest(path)
        C.eq(served[name]["digest"], want, "%s: /v1/models digest is docs/state.md's" % name)
        info = inspect_json(path)
        C.eq(info.get("digest"), want, "%s: rnnd inspect --json digest" % name)
        C.eq(converter_digest(path), want, "%s: the converter's digest (its verification "
             "record's)" % name)
        sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
        C.eq((served[name].get("file_digest"), info.get("file_digest")), (sha, sha),
             "%s: file_digest is the SHA-256 of the file" % name)


def check_what_counts(served):
    d = {n: m["digest"] for n, m in served.items()}
    C.check(d["alpha"] == d["beta"] and served["alpha"]["file_digest"] !=
            served["beta"]["file_digest"], "two names, one weights: the same digest, "
            "different files")
    C.eq(d["charlm_renamed"], d["charlm"], "a new name and vocabulary text: the same digest")
    C.eq(d["bf16_as_f32"], d["bf16"], "bf16-stored weights and f32 ones of the same values: "
         "the same digest")
    C.check(d["flipped"] != d["alpha"], "one weight bit flipped: another digest")
    C.check(d["clipped"] != d["alpha"], "another clip, the same weights: another digest")
    C.check(len({d["alpha"], d["pooled_mean"], d["pooled_max"]}) == 3,
            "another pool, the same weights: another digest")
    C.check(d["mlp"] != d["alpha"], "an MLP head: another digest")
    C.check(d["clock_periods"] != d["golden_clock3_vectors"],
            "another clockwork period, the same weights: another digest")
    C.check(d["slstm_exp"] != d["golden_slstm3_vectors"],
            "an slstm's other forget mode, the same weights: another digest")


def check_mlp(d, files):
    """An MLP head: rnnd inspect shows its layers; a session's steps are bitwise infer's rows."""
    p = subprocess.run([RNND_BIN, "inspect", files["mlp"]], capture_output=True, text=True,
                       timeout=60)
    C.check("-> layernorm (eps 0.001, affine) -> linear 5 -> gelu -> layernorm (eps 1e-05) "
            "-> tanh -> sigmoid -> relu -> gelu_tanh -> linear" in p.stdout,
            "rnnd inspect: the head's layers (%s)" % p.stdout)
    layers = (inspect_json(files["mlp"]).get("head") or {}).get("layers") or []
    C.eq([h["op"] for h in layers], ["layernorm", "linear", "gelu", "layernorm", "tanh",
                                     "sigmoid", "relu", "gelu_tanh", "linear"],
         "rnnd inspect --json: head.layers")
    st, _, inf = d.request("POST", "/v1/models/mlp/infer", {"inputs": [SEQ[:5]]})
    C.eq(st, 200, "infer on an MLP head")
    sid = new_session(d, "mlp")
    got = step(d, sid, SEQ[:2]) + step(d, sid, SEQ[2:5])
    C.eq(got, inf.get("outputs", [None])[0], "an MLP head: session steps equal infer's rows")


# ---- 2. exchange between two names -----------------------------------------------------------

def new_session(d, model, **extra):
    st, _, b = d.request("POST", "/v1/sessions", dict(model=model, **extra))
    assert st == 201, (st, b)
    return b["id"]


def step(d, sid, inputs):
    st, _, b = d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": inputs})
    assert st == 200, (st, b)
    return b["outputs"]


def export(d, sid):
    st, _, b = d.request("GET", "/v1/sessions/%s/state" % sid)
    assert st == 200, (st, b)
    return b


def check_pooled(d, served, files):
    """A pooled rewrite of alpha (docs/model-format.md, "Pooling"): /v1/models says its pool;
    infer answers one row per sequence, for "last" the last step's row of alpha; a session
    keeps per-step outputs, bitwise alpha's."""
    C.eq((served["alpha"]["pool"], served["pooled_last"]["pool"]), ("none", "last"),
         "/v1/models: pool")
    C.eq((inspect_json(files["alpha"]).get("pool"),
          inspect_json(files["pooled_max"]).get("pool")), ("none", "max"),
         "rnnd inspect --json: pool")
    p = subprocess.run([RNND_BIN, "inspect", files["pooled_mean"]], capture_output=True,
                       text=True, timeout=60)
    C.check("pool:        mean (infer: one output row per sequence)" in p.stdout,
            "rnnd inspect: a pool line")
    body = {"inputs": [SEQ[:4], SEQ[:1]]}
    st, _, plain = d.request("POST", "/v1/models/alpha/infer", body)
    st2, _, pooled = d.request("POST", "/v1/models/pooled_last/infer", body)
    C.eq((st, st2), (200, 200), "infer on alpha and pooled_last")
    if st == st2 == 200:
        C.eq(pooled["outputs"], [plain["outputs"][0][-1], plain["outputs"][1][-1]],
             "pool last: one row per sequence, the last step's")
    st, _, mean = d.request("POST", "/v1/models/pooled_mean/infer", body)
    C.eq((st, len(mean.get("outputs", [])), len(mean.get("outputs", [[]])[0])),
         (200, 2, served["alpha"]["output_dim"]), "pool mean: one row per sequence")
    # v2: no step axis in a pooled model's stateless OUTPUT, nor in its metadata
    K = served["alpha"]["output_dim"]
    st, _, meta = d.request("GET", "/v2/models/pooled_last")
    C.eq((st, meta.get("outputs", [{}])[0].get("shape")), (200, [-1, K]),
         "v2 metadata of a pooled model: OUTPUT [-1, O]")
    flat = [v for row in SEQ[:4] for v in row]
    st, _, r = d.request("POST", "/v2/models/pooled_last/infer", {"inputs": [
        {"name": "INPUT", "datatype": "FP32", "shape": [1, 4, DIM], "data": flat}]})
    out = r.get("outputs", [{}])[0]
    C.eq((st, out.get("shape"), out.get("data")),
         (200, [1, K], plain["outputs"][0][-1] if plain else None),
         "v2 infer of a pooled model: OUTPUT [B, O], v1's row")
    a, p = new_session(d, "alpha"), new_session(d, "pooled_mean")
    C.eq(step(d, p, SEQ[:3]), step(d, a, SEQ[:3]),
         "a pooled model's session step returns every step's output, bitwise the unpooled")


def check_exchange(d):
    src = new_session(d, "alpha")
    step(d, src, SEQ[:3])
    exp = export(d, src)
    want = step(d, src, SEQ[3:6])

    dst = new_session(d, "beta")
    st, _, b = d.request("PUT", "/v1/sessions/%s/state" % dst, exp)
    C.eq((st, b.get("steps")), (200, 3), "import: alpha's state into a beta session")
    C.eq(step(d, dst, SEQ[3:6]), want, "import: beta continues bit for bit like alpha")

    st, _, b = d.request("POST", "/v1/sessions",
                         {"model": "beta", "state": exp["state"], "digest": exp["digest"]})
    C.eq(st, 201, "create: a beta session from alpha's state")
    if st == 201:
        C.eq(step(d, b["id"], SEQ[3:6]), want, "create: it continues bit for bit like alpha")

    other = new_session(d, "beta")
    st, _, b = d.request("POST", "/v1/sessions/%s/reset" % other,
                         {"state": exp["state"], "digest": exp["digest"]})
    C.eq(st, 200, "reset: a beta session to alpha's state")
    C.eq(step(d, other, SEQ[3:6]), want, "reset: it continues bit for bit like alpha")

    body = {"inputs": [SEQ[3:6]], "initial_state": [exp["state"]], "return_state": True}
    st_a, _, ia = d.request("POST", "/v1/models/alpha/infer", body)
    st, _, ib = d.request("POST", "/v1/models/beta/infer", dict(body, digest=exp["digest"]))
    C.eq((st_a, st), (200, 200), "infer: alpha's state on beta, with its digest")
    C.eq(ib.get("outputs"), ia.get("outputs"), "infer: beta computes what alpha computes")
    C.eq(ib.get("digest"), exp["digest"], "infer's states come with the digest")


# ---- 3. refusals -----------------------------------------------------------------------------

def session_ids(d):
    return sorted(s["id"] for s in d.request("GET", "/v1/sessions?limit=1000")[2]["sessions"])


def refusals(d, target, state, digest):
    """The four paths' answers to STATE with DIGEST, DIGEST None: left out."""
    extra = {} if digest is None else {"digest": digest}
    return [
        ("create", d.request("POST", "/v1/sessions", dict(model="alpha", state=state,
                                                          **extra))),
        ("reset", d.request("POST", "/v1/sessions/%s/reset" % target,
                            dict(state=state, **extra))),
        ("import", d.request("PUT", "/v1/sessions/%s/state" % target,
                             dict(state=state, steps=7, **extra))),
        ("infer", d.request("POST", "/v1/models/alpha/infer",
                            dict(inputs=[SEQ[:1]], initial_state=[state], **extra))),
    ]


def check_refusals(st, code, what, answers):
    msgs = set()
    for path, resp in answers:
        C.error(resp, st, code, "%s: %s" % (what, path))
        if isinstance(resp[2], dict) and isinstance(resp[2].get("error"), dict):
            msgs.add(resp[2]["error"].get("message"))
    C.eq(len(msgs), 1, "%s: one message on every path (%s)" % (what, sorted(map(str, msgs))))
    return msgs


def check_refused(d):
    target = new_session(d, "alpha")
    step(d, target, SEQ[:2])
    before = export(d, target)
    foreign = new_session(d, "flipped")
    step(d, foreign, SEQ[:2])
    fexp = export(d, foreign)
    ids = session_ids(d)
    msgs = check_refusals(409, "conflict", "another model's digest",
                          refusals(d, target, fexp["state"], fexp["digest"]))
    msg = next(iter(msgs), "") or ""
    C.check(fexp["digest"] in msg and before["digest"] in msg,
            "the message names both digests: %s" % msg)

    check_refusals(400, "invalid_request", "a digest that is not a string",
                   refusals(d, target, fexp["state"], 12))
    answers = refusals(d, target, before["state"], None)
    check_refusals(400, "invalid_request", "a state without its digest", answers[:3])
    C.eq(answers[3][1][0], 200, "infer: a state without a digest is still taken (docs/api.md)")

    C.eq(session_ids(d), ids, "no refused create made a session")
    after = export(d, target)
    C.eq((after["steps"], after["state"]), (before["steps"], before["state"]),
         "no refused reset or import changed the session")


def make_files():
    """{name: path} of every model the tests serve."""
    onnx = CASES[VEC][1]
    files = {
        "alpha": convert(onnx, os.path.join(WORK, "alpha.rnnd"), "--name", "alpha"),
        "beta": convert(onnx, os.path.join(WORK, "beta.rnnd"), "--name", "the same, renamed"),
        "bf16": convert(onnx, os.path.join(WORK, "bf16.rnnd"), "--weight-type", "bf16"),
        "charlm": CHARLM,
    }
    files["bf16_as_f32"] = as_f32(files["bf16"], os.path.join(WORK, "bf16_as_f32.rnnd"))
    files["flipped"] = flip_weight(files["alpha"], os.path.join(WORK, "flipped.rnnd"))
    files["clipped"] = rewrite_arch(files["alpha"], os.path.join(WORK, "clipped.rnnd"),
                                    lambda a: a["layers"][0].update(clip=50.0))
    for pool in ("mean", "max", "last"):
        files["pooled_" + pool] = rewrite_arch(files["alpha"],
                                               os.path.join(WORK, "pooled_%s.rnnd" % pool),
                                               lambda a, p=pool: a.update(pool=p))

    files["mlp"] = with_mlp_head(files["alpha"], os.path.join(WORK, "mlp.rnnd"))

    def rename_charlm(a):
        a["name"] = "another name"
        a["vocab"] = ["<%d>" % i for i in range(len(a["vocab"]))]
    files["charlm_renamed"] = rewrite_arch(CHARLM, os.path.join(WORK, "charlm_renamed.rnnd"),
                                           rename_charlm)
    for name in CASES:
        files["golden_" + name] = golden_model(name, WORK)
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    # mingru / minlstm, slstm, clockwork and the depth-gated lstm, from native specs
    for sub in ("golden_min", "golden_slstm", "golden_clock", "golden_dglstm"):
        min_dir = os.path.join(data, sub)
        for name in sorted(os.listdir(min_dir)):
            if os.path.isdir(os.path.join(min_dir, name)):
                files["golden_" + name] = convert(os.path.join(min_dir, name, "model.json"),
                                                  os.path.join(WORK, name + ".rnnd"))
    # layer 1 of slstm3_vectors has forget "sigmoid": the same weights read with "exp"
    files["slstm_exp"] = rewrite_arch(files["golden_slstm3_vectors"],
                                      os.path.join(WORK, "slstm_exp.rnnd"),
                                      lambda a: a["layers"][1].update(forget="exp"))
    # the same weights with one period changed: the modules run at other steps
    files["clock_periods"] = rewrite_arch(
        files["golden_clock3_vectors"], os.path.join(WORK, "clock_periods.rnnd"),
        lambda a: a["layers"][0].update(periods=[1, 3, 7, 17]))
    return files


class Digest(Case):
    """One daemon serving every model; each check of the docstring a test."""

    @classmethod
    def setUpClass(cls):
        cls.files = make_files()
        cls.d = cls.serve(cls.files)
        cls.served = {m["name"]: m for m in cls.d.request("GET", "/v1/models")[2]["models"]}

    def test_definition(self):
        check_definition(self.files, self.served)

    def test_what_counts(self):
        check_what_counts(self.served)

    def test_exchange(self):
        check_exchange(self.d)

    def test_pooled(self):
        check_pooled(self.d, self.served, self.files)

    def test_mlp(self):
        check_mlp(self.d, self.files)

    def test_refused(self):
        check_refused(self.d)


if __name__ == "__main__":
    unittest.main()
