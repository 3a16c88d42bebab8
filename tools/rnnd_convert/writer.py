"""Write a validated Model as an .rnnd file (a safetensors container, docs/model-format.md)."""
import json
import os
import struct
import tempfile

import numpy as np

from .arch import ConvertError, FORMAT_VERSION, HALF_DTYPES, half_bits, is_matrix_tensor, validate

# The data buffer must start 4-byte aligned; 8 also suits safetensors readers that want it.
ALIGN = 8


def quantize_rows(a, name="tensor"):
    """(int8 q, float32 scales) of matrix A by docs/model-format.md's "int8 weights", the rule
    rnnd applies to an F32 matrix at load, bit for bit: per row s = max|row| / 127 and
    q = clamp(rne(row / s), -127, 127), each operation in float32; s = 0 gives q = 0. A
    matrix that is not finite is an error."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    rows = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
    bad = ~np.isfinite(rows)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ConvertError("%s: element %d: %.9g (an int8 matrix must be finite to be "
                           "quantized)" % (name, i, float(rows.ravel()[i])))
    m = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0], np.float32)
    s = (m.astype(np.float32) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = rows / s[:, None]       # float32 / float32: one rounding, as in C
    v = np.rint(np.clip(v, np.float32(-127), np.float32(127)))    # rint: ties to even
    v[~(s > 0)] = 0
    return v.astype(np.int8).reshape(a.shape), s


def build_header(model, verification=None):
    """(header bytes padded with spaces, [(name, array)] in data order). The arrays are
    little-endian float32, or for a bf16 / f16 model's weight matrices uint16 patterns of
    the rounded values (stored as BF16 / F16: half the bytes), or for an int8 model's
    weight matrices int8 (I8) each followed by NAME.scale (F32, one per row).
    VERIFICATION, when given, is the __metadata__.verification string (verify.py); the
    digest does not cover it."""
    arch = json.dumps(model.arch_json(), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    tensors = model.tensors()
    order = [name for name, _ in model.expected_tensors()]
    header = {"__metadata__": {"format": "rnnd", "format_version": str(FORMAT_VERSION),
                               "architecture": arch}}
    if verification is not None:
        header["__metadata__"]["verification"] = verification
    offset = 0
    items = []
    for name in order:
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        out = [(name, "F32", a)]
        if model.weights == "int8" and is_matrix_tensor(name, a):
            q, s = quantize_rows(a, name)
            out = [(name, "I8", q), (name + ".scale", "F32", s.astype("<f4"))]
        elif model.weights != "f32" and is_matrix_tensor(name, a):
            shape = a.shape
            a = half_bits(a, model.weights, name).astype("<u2").reshape(shape)
            out = [(name, HALF_DTYPES[model.weights], a)]
        for tname, dtype, a in out:
            n = a.size * a.itemsize
            header[tname] = {"dtype": dtype, "shape": [int(s) for s in a.shape],
                             "data_offsets": [offset, offset + n]}
            items.append((tname, a))
            # the next tensor begins 4-byte aligned (F32 needs it); the gap is unused bytes
            pad = (-n) % 4
            if pad:
                items.append((None, np.zeros(pad, np.uint8)))
            offset += n + pad
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    pad = (-(8 + len(text))) % ALIGN
    return text + b" " * pad, items


def _write_body(f, header, items):
    f.write(struct.pack("<Q", len(header)))
    f.write(header)
    for _, a in items:
        f.write(a.tobytes())


def write(model, path, verification=None):
    """Validate MODEL and write it to PATH atomically (a temporary file renamed into place),
    so a failure never leaves a truncated model where rnnd might load it. VERIFICATION (the
    record's JSON text, verify.metadata_value) gets the written model's "digest" added."""
    validate(model)
    header, items = build_header(model, verification)
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rnnd-convert-", dir=d)
    except OSError as e:
        raise ConvertError("cannot write: %s" % e.strerror, path=path)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_body(f, header, items)
        if verification is not None:
            # the record names the digest of the model as written (docs/model-format.md):
            # computed from the file itself, which the record does not change
            from .digest import file_digest
            record = dict(json.loads(verification), digest=file_digest(tmp))
            header, items = build_header(model, json.dumps(record, separators=(",", ":"),
                                                           allow_nan=False))
            with open(tmp, "wb") as f:
                _write_body(f, header, items)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)      # mkstemp makes 0600; give it a normal file's mode
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConvertError("cannot write: %s" % e.strerror, path=path)
