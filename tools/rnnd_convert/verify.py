"""Verification at conversion: run the source and the written .rnnd on the same random inputs
and refuse to finish when they differ (docs/convert.md "Verification").

The source is run by what made it (torch for a module or TorchScript, onnx_run for an ONNX
graph); the .rnnd by reference.py, the project's own NumPy forward, which shares no code with
the importers. A converter that mis-reads a model therefore cannot write it silently.
"""
import json
import os

import numpy as np

from . import reference
from .errors import ConvertError

# a length above 32 (a context window, a branch at a round length) and one sequence alone
# (a branch on the batch): issue 14's outside trials hid behaviour where these were missing
LENGTHS = (1, 7, 19, 64)
BATCH = 3
ALONE = 19      # the length also run as one sequence, batch 1
VOCAB_ROW = 16  # steps per row of the batch that holds every token id
STATE_LENGTH = 7  # the length run from random initial states
# a long sequence: drift, a state that blows up or decays only after ~100 steps, a context
# window of 128 (issue 14, V1); and vectors scaled so that the gates saturate, where a
# mis-read activation or clip shows (a slope near zero hides it)
LONG_LENGTH = 200
LONG_BATCH = 5
SCALE = 10.0
# the backstop (issue 14, fifth round): one sequence past 256 steps (a context window, a flag
# or a state computed from a length above LONG_LENGTH), a batch above 5, steps that are
# exact zeros (a reset at a separator), and, where the source allows it, a second call in the
# same process (a forward() that changes its module), a call with gradients enabled (a
# forward() that reads grad mode) and one under torch.inference_mode() (one that reads a
# tensor's is_inference(); sixth round, H2); a fixed set of inputs can still be targeted, so the
# analysis is the fix and this is what catches the forms it misses
BACKSTOP_LENGTH = 300
BACKSTOP_BATCH = 6
ZERO_STEPS = (0, 150, 280)
SCALE_LENGTH = 19
VOCAB_CHUNK = 1 << 22  # output elements per chunk of the batch of every token id
VOCAB_WORK = 1 << 31    # multiply-adds the batch of every token id may cost, about 2-5 s
SEED = 20240514
# |rnnd - source| <= TOLERANCE * max(1, |source|), element by element
TOLERANCE = 1e-5
_POOLED = ("the source gives one output per sequence (its forward() pools over the steps) "
           "where the converted model gives one per step: the converter read no pooling from "
           "forward() (the reference modules of tools/rnnd_modules are not analysed): return "
           "the per-step output and ask infer for \"outputs\": \"last\", or write a native "
           "spec with \"pool\" (docs/model-format.md, \"Pooling\"); --no-verify "
           "(verify=False in from_module) writes the per-step model anyway")
_WAY_OUT = ("the source computes something the converted model does not (an operation "
            "outside Embedding -> recurrent layers -> Linear -> softmax), or the converter "
            "mis-read it; --no-verify (verify=False in from_module) writes it anyway")


def sample_inputs(model, T, B=BATCH):
    """[B, T] int64 token ids or [B, T, dim] float32 vectors, the same for a given model, T
    and B (a fixed seed)."""
    rng = np.random.default_rng(SEED + T)
    if model.input_kind == "tokens":
        return rng.integers(0, model.vocab_size, size=(B, T), dtype=np.int64)
    return rng.standard_normal((B, T, model.input_dim)).astype(np.float32)


def vocab_inputs(model):
    """[rows, VOCAB_ROW] token ids that hold every id of the vocabulary once (the last row
    wrapped around to the start), or None for a vector model: the random ids of
    sample_inputs() read only a few hundred rows of a large table (issue 14, adversary 1).
    Where every id would cost more than VOCAB_WORK multiply-adds (a step costs about the
    model's weights other than the table), a fixed sample of as many ids as that pays for,
    the first and the last included."""
    if model.input_kind != "tokens":
        return None
    V = int(model.vocab_size)
    per_step = max(1, sum(int(a.size) for k, a in model.tensors().items()
                          if not k.startswith("embedding")))
    n = max(2, min(V, VOCAB_WORK // per_step))
    ids = np.arange(V, dtype=np.int64)
    if n < V:
        rng = np.random.default_rng(SEED)
        ids = np.concatenate([[0, V - 1], np.sort(rng.choice(np.arange(1, V - 1), n - 2,
                                                             replace=False))])
    T = min(VOCAB_ROW, len(ids))
    rows = -(-len(ids) // T)
    return ids[np.arange(rows * T) % len(ids)].reshape(rows, T)


def sample_states(ref, B, T):
    """B random initial states in rnnd's flat layout (reference.py) for a model whose layers
    are all LSTM / GRU / RNN, else None; the same for a given model and T."""
    if any(L["type"] not in ("lstm", "gru", "rnn") for L in ref.layers):
        return None
    rng = np.random.default_rng(SEED + 1000 + T)
    return list(0.5 * rng.standard_normal((B, ref.state_size())))


def compare(model, rnnd_path, run_source, source_kind):
    """Run RUN_SOURCE(x) (-> [BATCH, T, out] array, batch-major; [BATCH, out] for a pooled
    model) and the .rnnd at RNND_PATH on the inputs of every length, on LONG_BATCH sequences
    of LONG_LENGTH steps, on vectors scaled by SCALE (a vector model), then on a batch of every
    token id, and, where RUN_SOURCE has a `with_state(x, states)` (a source whose forward()
    takes an initial state), from random initial states; return the figures (a dict) or
    raise ConvertError naming the worst element when the two differ beyond TOLERANCE."""
    ref = reference.load(rnnd_path)
    worst = {"abs": 0.0, "rel": 0.0, "where": None, "hint": None}
    for T, B in [(T, BATCH) for T in LENGTHS] + [(ALONE, 1)]:
        x = sample_inputs(model, T)[:B]
        seqs = _seqs(model, x)
        _check_float32(rnnd_path, seqs, T)
        _measure(model, worst, run_source(x), reference.run(ref, seqs)[0], T, B, "")
    # LONG_BATCH sequences of LONG_LENGTH steps, then (vectors) inputs times SCALE: a source
    # whose outputs are not finite there (an unbounded layer that grows, an exp in its
    # head) is not compared on them, and the record leaves the pass out. Not checked in
    # float32 either: a model made for short sequences may leave float32's range only late
    # (rnnd answers numeric_error then), which is no mis-reading
    long_ok = _extra_pass(model, worst, ref, run_source, sample_inputs(
        model, LONG_LENGTH, LONG_BATCH), " (the long sequences, length %d, batch %d)"
        % (LONG_LENGTH, LONG_BATCH))
    _backstop(model, worst, ref, run_source)
    scaled = None
    if model.input_kind != "tokens":
        x = (SCALE * sample_inputs(model, SCALE_LENGTH)).astype(np.float32)
        if _extra_pass(model, worst, ref, run_source, x, " (the inputs scaled by %g)" % SCALE):
            scaled = SCALE
    data_scale = _data_scale_pass(model, worst, rnnd_path, run_source)
    ids = vocab_inputs(model)
    if ids is not None:
        # every row of the embedding table, once; in chunks that keep the outputs (float64,
        # one per step and output) near VOCAB_CHUNK elements
        per_row = ids.shape[1] * max(1, int(model.output_dim()))
        step = max(1, VOCAB_CHUNK // per_row)
        for r in range(0, ids.shape[0], step):
            part = ids[r:r + step]
            _measure(model, worst, run_source(part), reference.run(ref, _seqs(model, part))[0],
                     part.shape[1], part.shape[0], " (the batch of every token id, rows %d.."
                     "%d)" % (r, r + part.shape[0] - 1))
    with_state = getattr(run_source, "with_state", None)
    states = sample_states(ref, BATCH, STATE_LENGTH) if with_state is not None else None
    if states is not None:
        # the parts of rnnd's state the source takes no input for (c where a graph has only
        # initial_h) start from zeros on both sides
        keep = getattr(run_source, "state_mask", None)
        if keep is not None:
            states = [np.where(keep, s, 0.0) for s in states]
        x = sample_inputs(model, STATE_LENGTH)
        _measure(model, worst, with_state(x, states),
                 reference.run(ref, _seqs(model, x), initial_states=states)[0],
                 STATE_LENGTH, BATCH, " (from random initial states in PyTorch's layout)")
    figures = {"source": source_kind, "tolerance": TOLERANCE, "max_abs_error": worst["abs"],
               "max_rel_error": worst["rel"], "lengths": list(LENGTHS), "batch": BATCH,
               "seed": SEED}
    if long_ok:
        figures["long_checked"] = [LONG_LENGTH, LONG_BATCH]
    if scaled is not None:
        figures["scaled_checked"] = scaled
    if data_scale:
        figures["data_scale_checked"] = True
    if ids is not None:
        figures["vocab_checked"] = int(len(np.unique(ids)))
    if states is not None:
        figures["initial_state_checked"] = True
    if worst["rel"] > TOLERANCE:
        T, b, t, k, s, g, how = worst["where"]
        raise ConvertError(
            "verification failed: the converted model differs from the %s source: max abs "
            "error %.3g, max rel error %.3g (tolerance %g) at length %d, batch row %d, step %d, "
            "output %d%s (source %.6g, converted %.6g): %s"
            % (source_kind, worst["abs"], worst["rel"], TOLERANCE, T, b, t, k, how, s, g,
               worst["hint"] or _WAY_OUT))
    return figures


def backstop_inputs(model):
    """BACKSTOP_BATCH sequences of BACKSTOP_LENGTH steps; for vectors, the steps ZERO_STEPS
    are zeros in every sequence."""
    x = sample_inputs(model, BACKSTOP_LENGTH, BACKSTOP_BATCH)
    if model.input_kind != "tokens":
        x[:, list(ZERO_STEPS)] = 0.0
    return x


def _backstop(model, worst, ref, run_source):
    """Fold the backstop pass into WORST: the source's calls on backstop_inputs() (through
    RUN_SOURCE.stress where it has one: four calls in one process, the third with gradients
    enabled, the fourth under torch.inference_mode()) each against the .rnnd; skipped, as
    the long pass, where the source's first outputs are not all finite."""
    x = backstop_inputs(model)
    stress = getattr(run_source, "stress", None)
    srcs = stress(x) if stress is not None else [run_source(x)]
    with np.errstate(all="ignore"):
        if not np.all(np.isfinite(np.asarray(srcs[0], dtype=np.float64))):
            return False
    with np.errstate(over="ignore", invalid="ignore"):
        outs = reference.run(ref, _seqs(model, x))[0]
    zeros = "" if model.input_kind == "tokens" else ", steps %s zeros" % ", ".join(
        str(t) for t in ZERO_STEPS)
    whats = ("", ", the second call of the source in one process (forward() changes what "
             "it computes from call to call)", ", the third call, with gradients enabled "
             "(forward() reads the grad mode)", ", the fourth call, under "
             "torch.inference_mode() (forward() reads the inference mode)")
    for src, what in zip(srcs, whats):
        _measure(model, worst, src, outs, x.shape[1], x.shape[0],
                 " (the backstop pass: length %d, batch %d%s%s)"
                 % (BACKSTOP_LENGTH, BACKSTOP_BATCH, zeros, what))
    return True


def _extra_pass(model, worst, ref, run_source, x, how):
    """Fold the difference on X into WORST where the source's outputs are all finite;
    whether it was compared."""
    src = run_source(x)
    with np.errstate(all="ignore"):
        if not np.all(np.isfinite(np.asarray(src, dtype=np.float64))):
            return False
    with np.errstate(over="ignore", invalid="ignore"):
        outs = reference.run(ref, _seqs(model, x))[0]
    _measure(model, worst, src, outs, x.shape[1], x.shape[0], how)
    return True


def data_scale_inputs(model):
    """[BATCH, SCALE_LENGTH, dim] float32 inputs at the data's own scale for a model whose
    importer folded a per-feature map x -> a * x + b ((x - mu) / sd) into its first layer
    (model.input_map): -b / a + N(0, 1) / |a| per feature, where the source's normalised
    input is standard normal; for a dense map (model.input_centre, outside trial 21, s2b)
    its centre x0 + scale * N(0, 1); None for any other model."""
    if model.input_kind == "tokens":
        return None
    amap = getattr(model, "input_map", None)
    if amap is not None:
        a, b = (np.asarray(v, np.float64) for v in amap)
        live = a != 0
        centre = np.where(live, -b / np.where(live, a, 1.0), 0.0)
        scale = np.where(live, 1.0 / np.abs(np.where(live, a, 1.0)), 1.0)
    elif getattr(model, "input_centre", None) is not None:
        centre, scale = (np.asarray(v, np.float64) for v in model.input_centre)
    else:
        return None
    z = sample_inputs(model, SCALE_LENGTH).astype(np.float64)
    return (centre + scale * z).astype(np.float32)


def _data_scale_pass(model, worst, rnnd_path, run_source):
    """Fold the difference on data_scale_inputs() into WORST, the .rnnd computed in float32
    as rnnd computes it (a folded (x - mu) / sd cancels there: outside trial 20, S2);
    whether it ran. A difference beyond TOLERANCE is explained by the fold."""
    x = data_scale_inputs(model)
    if x is None:
        return False
    src = run_source(x)
    with np.errstate(all="ignore"):
        if not np.all(np.isfinite(np.asarray(src, dtype=np.float64))):
            return False
        outs = reference.run(reference.Model(rnnd_path, np.float32), _seqs(model, x))[0]
    here = {"abs": 0.0, "rel": 0.0, "where": None, "hint": None}
    _measure(model, here, src, [np.asarray(o, np.float64) for o in outs], x.shape[1],
             x.shape[0], " (inputs at the data's own scale, mu + sd * N(0, 1) of the folded "
             "(x - mu) / sd)")
    if here["rel"] > TOLERANCE and worst["rel"] <= TOLERANCE:
        worst["hint"] = ("the input's standardisation (x - mu) / sd, folded into the first "
                         "layer, loses float32 precision at the data's own scale: normalise "
                         "the input in the client and take the standardisation out of the "
                         "model, or subtract the offset in the client and keep only the "
                         "scale in the model; --no-verify (verify=False in "
                         "from_module) writes it anyway")
    worst["abs"] = max(worst["abs"], here["abs"])
    if worst["where"] is None or here["rel"] > worst["rel"]:
        worst["rel"], worst["where"] = here["rel"], here["where"]
    return True


def _seqs(model, x):
    return [row.tolist() for row in x] if model.input_kind == "tokens" else list(x)


def _measure(model, worst, src, outs, T, B, how):
    """Fold the difference between SRC (the source's outputs) and OUTS (the .rnnd's, one
    [T, out] array per sequence) into WORST; HOW says which check it was."""
    src = np.asarray(src, dtype=np.float64)
    if getattr(model, "pool", "none") != "none" and src.ndim == 2:
        src = src[:, None, :]   # a pooled model: one row per sequence, as step 0
    got = np.stack(outs)
    if got.ndim == 3 and got.shape[-1] == 1 and src.shape == got.shape[:-1]:
        # one output per step squeezed away, fc(y).squeeze(-1) of [B, T, 1] (user finding
        # U3): the same numbers; a pooled source of T outputs matches at one length only
        src = src[..., None]
    if src.shape != got.shape:
        pooled = src.ndim == 2 and src.shape[0] == B and got.ndim == 3
        raise ConvertError(
            "verification failed: the source gives outputs of shape %s for %d sequences "
            "of %d steps%s, the converted model %s (one output of %d per step): %s"
            % (list(src.shape), B, T, how, list(got.shape), got.shape[-1],
               _POOLED if pooled else _WAY_OUT))
    if not np.all(np.isfinite(src)):
        raise ConvertError("verification failed: the source's outputs are not all finite "
                           "(length %d%s); nothing to compare" % (T, how))
    diff = np.abs(got - src)
    rel = diff / np.maximum(1.0, np.abs(src))
    bad = ~np.isfinite(got)
    if bad.any():
        rel = np.where(bad, np.inf, rel)
        diff = np.where(bad, np.inf, diff)
    i = np.unravel_index(int(np.argmax(rel)), rel.shape)
    if rel[i] > TOLERANCE and worst["hint"] is None:
        worst["hint"] = _norm_hint(model, src, got)
    worst["abs"] = max(worst["abs"], float(diff.max()))
    if worst["where"] is None or rel[i] > worst["rel"]:
        worst["rel"] = float(rel[i])
        worst["where"] = (T,) + tuple(int(k) for k in i) + (float(src[i]), float(got[i]), how)


def _norm_hint(model, src, got):
    """The way out when the source's rows are (log-)probabilities and the converted
    model's, without a norm, are not: forward() applies a softmax the converter did not read
    (as a function in a forward() it does not analyse, the reference modules'), or None."""
    if getattr(model, "head_norm", "none") not in (None, "none") or src.shape != got.shape:
        return None
    with np.errstate(all="ignore"):
        m = src.max(axis=-1, keepdims=True)
        lse = (m + np.log(np.exp(src - m).sum(axis=-1, keepdims=True)))[..., 0]
        sums = src.sum(axis=-1)
    if np.all(np.abs(lse) < 1e-4) and np.all(src <= 1e-6):
        norm = "log_softmax"
    elif np.all(src >= 0) and np.all(np.abs(sums - 1) < 1e-4):
        norm = "softmax"
    else:
        return None
    return ("the source's outputs are %s rows (forward() applies a %s the converter did not "
            "read: a function in a forward() it does not analyse, as the reference modules' of "
            "tools/rnnd_modules) and the converted model's are not: pass norm=%r to "
            "from_module (--norm %s), or apply it through an nn.%s module"
            % ("log-probability" if norm == "log_softmax" else "probability", norm, norm, norm,
               "LogSoftmax(dim=-1)" if norm == "log_softmax" else "Softmax(dim=-1)"))


def _check_float32(rnnd_path, seqs, T):
    """Refuse a model that leaves float32's range on SEQS (the source's outputs being
    finite): rnnd computes in float32, so the daemon would answer numeric_error where the
    float64 check saw nothing (issue 14, adversary 13)."""
    with np.errstate(all="ignore"):
        y = np.stack(reference.run(reference.Model(rnnd_path, np.float32), seqs)[0])
    bad = ~np.isfinite(y)
    if bad.any():
        b, t, k = (int(i) for i in np.argwhere(bad)[0])
        raise ConvertError(
            "verification failed: computed in float32, as rnnd computes, the converted model "
            "gives %s at length %d, batch row %d, step %d, output %d, where the source's "
            "outputs are finite: its values leave float32's range (weights or activation "
            "parameters too large); --no-verify (verify=False in from_module) writes it anyway"
            % (y[b, t, k], T, b, t, k))


def metadata_value(figures, model, norm_checked=None):
    """The __metadata__.verification string for FIGURES (None: no check, no record) as
    written with MODEL (docs/model-format.md); a bf16 / f16 MODEL says its weights were
    checked as float32, before rounding, and a head normalisation changed after the check
    (--norm) says which one was checked (NORM_CHECKED). The writer adds the digest."""
    if figures is None:
        return None
    figures = dict(figures)
    if model.weights != "f32":
        figures["weights_checked"] = "f32"
    if norm_checked is not None and norm_checked != model.head_norm:
        figures["norm_checked"] = norm_checked
    return json.dumps(figures, separators=(",", ":"), allow_nan=False)


def verify(model, run_source, source_kind, near):
    """Check MODEL, as the importer read it, against RUN_SOURCE; return the figures or raise
    ConvertError. It is written as float32 to a temporary file in NEAR's directory (removed
    afterwards), so the caller writes the real output only once the check has passed; options
    applied after the importer (--norm, bf16 / f16 rounding) are not part of the check."""
    import copy
    import tempfile
    from .writer import write
    d = os.path.dirname(os.path.abspath(near))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rnnd-verify-", suffix=".rnnd", dir=d)
        os.close(fd)
    except OSError as e:
        raise ConvertError("cannot write: %s" % e.strerror, path=near)
    try:
        plain = copy.copy(model)
        plain.weights = "f32"
        write(plain, tmp)
        return compare(plain, tmp, run_source, source_kind)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
