"""Write a validated Model as an .rnnd file (a safetensors container, docs/model-format.md)."""
import json
import os
import struct
import tempfile

import numpy as np

from .arch import ConvertError, FORMAT_VERSION, HALF_DTYPES, half_bits, is_matrix_tensor, validate

# The data buffer must start 4-byte aligned; 8 also suits safetensors readers that want it.
ALIGN = 8


def build_header(model, verification=None):
    """(header bytes padded with spaces, [(name, array)] in data order). The arrays are
    little-endian float32, or for a bf16 / f16 model's weight matrices uint16 patterns of
    the rounded values (stored as BF16 / F16: half the bytes). VERIFICATION, when given, is
    the __metadata__.verification string (verify.py); the digest does not cover it."""
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
        dtype = "F32"
        if model.weights != "f32" and is_matrix_tensor(name, a):
            shape = a.shape
            a = half_bits(a, model.weights, name).astype("<u2").reshape(shape)
            dtype = HALF_DTYPES[model.weights]
        n = a.size * a.itemsize
        header[name] = {"dtype": dtype, "shape": [int(s) for s in a.shape],
                        "data_offsets": [offset, offset + n]}
        items.append((name, a))
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
