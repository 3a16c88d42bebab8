"""Files people have that rnnd-convert cannot read as they are: a torch.save checkpoint (a
state_dict, or a whole pickled module), a pickle, a safetensors file of weights. Each lacks
the model's code or architecture, so the error says what the file is and prints the few lines
of Python that make it convertible (docs/convert.md, "Common mistakes").

Standard library only, and nothing is unpickled: the root object's class is read from the
pickle's opening opcodes, so this works without torch and runs no code from the file.
"""
import json
import os
import pickletools
import struct
import zipfile

from .errors import ConvertError

# torch.save before PyTorch 1.6 opens with a pickled magic number (LONG1 0x1950a86a20f9469cfc6c)
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
MAX_HEADER = 64 << 20       # rnnd's limit for a safetensors header (docs/model-format.md)
_STRINGS = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
            "BINSTRING", "STRING")
_NOOPS = ("PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT")


def _root(f):
    """What the pickle at F's position holds: ("dict", None), ("class", "module.Name") or
    (None, None), from the opcodes that build its root object."""
    strings = []
    try:
        for op, arg, _ in pickletools.genops(f):
            if op.name in _NOOPS:
                continue
            if op.name == "EMPTY_DICT":
                return "dict", None
            if op.name == "GLOBAL":
                return "class", arg.replace(" ", ".", 1)
            if op.name in _STRINGS and len(strings) < 2:
                strings.append(arg)
                continue
            if op.name == "STACK_GLOBAL" and len(strings) == 2:
                return "class", "%s.%s" % tuple(strings)
            break
    except Exception:       # a damaged pickle: say "checkpoint" without the details
        pass
    return None, None


def _skip_pickle(f):
    for _ in pickletools.genops(f):
        pass


def _torch_root(path, head):
    """(kind, class) of a torch.save file, or None if PATH is no such file (TorchScript is
    not: it has code, and torch.jit.load reads it)."""
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
                    return None
                data = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
                if not data:
                    return None
                with z.open(data[0]) as f:
                    return _root(f)
        except (OSError, zipfile.BadZipFile):
            return None
    if head.startswith(LEGACY_MAGIC):
        with open(path, "rb") as f:
            try:
                for _ in range(3):      # the magic number, the protocol version, sys_info
                    _skip_pickle(f)
            except Exception:
                return None, None
            return _root(f)
    return None


def _safetensors(path, head):
    """The "format" of a safetensors file holding tensors without rnnd's architecture ("" if
    it has none), else None."""
    if len(head) < 10 or head[8:9] != b"{":
        return None
    n = struct.unpack("<Q", head[:8])[0]
    if n > MAX_HEADER or n > os.path.getsize(path) - 8:
        return None
    with open(path, "rb") as f:
        f.seek(8)
        try:
            h = json.loads(f.read(n))
        except ValueError:
            return None
    if not isinstance(h, dict):
        return None
    meta = h.get("__metadata__")
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("format") == "rnnd" or "architecture" in meta:
        return None
    if not any(isinstance(v, dict) and "dtype" in v and "data_offsets" in v
               for k, v in h.items() if k != "__metadata__"):
        return None
    return str(meta.get("format", ""))


def _script_line(path, output):
    stem = os.path.splitext(os.path.basename(path))[0] + "-script.pt"
    return ("or, for rnnd-convert: torch.jit.script(model).save(%r), then "
            "rnnd-convert %s -o %s" % (stem, stem, output))


def _lines(load_lines, path, output):
    """The hint: LOAD_LINES build `model`; then the two ways to convert it."""
    return "\n".join(["    import torch, rnnd_convert"] + load_lines +
                     ["    rnnd_convert.from_module(model, %r)" % output,
                      "  " + _script_line(path, output)])


def check(path, output):
    """Raise ConvertError, with the Python that makes it convertible, if PATH is one of the
    files above; return None otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None             # the importer reports it
    new_model = "    model = MyModel()    # your model's class, built as in training"
    root = _torch_root(path, head)
    if root is not None:
        kind, cls = root
        old = ", in the format before PyTorch 1.6" if head.startswith(LEGACY_MAGIC) else ""
        load = "torch.load(%r, map_location='cpu')" % path
        if kind == "class" and cls == "collections.OrderedDict":
            raise ConvertError(
                "a PyTorch checkpoint of a state_dict (torch.save(model.state_dict())%s): "
                "weights without the model, which rnnd-convert cannot rebuild; in Python, "
                "with your model's class:" % old,
                hint=_lines([new_model, "    model.load_state_dict(%s)" % load], path, output))
        if kind == "dict":
            raise ConvertError(
                "a PyTorch checkpoint of a dict (torch.save%s): a state_dict, or a training "
                "checkpoint holding one, without the model; in Python, with your model's "
                "class:" % old,
                hint=_lines([new_model, "    state = %s" % load,
                             "    model.load_state_dict(state)    # or state[KEY], the key "
                             "that holds the state_dict"], path, output))
        if kind == "class":
            where = ("the script that loads it defines or imports %s (it was saved from a "
                     "script's __main__)" % cls.split(".", 1)[1] if cls.startswith("__main__.")
                     else "the module %s can be imported" % cls.rsplit(".", 1)[0])
            raise ConvertError(
                "a PyTorch checkpoint of a whole module (torch.save(model), class %s%s), not "
                "TorchScript; in Python, where %s:" % (cls, old, where),
                hint=_lines(["    model = torch.load(%r, map_location='cpu', "
                             "weights_only=False)" % path], path, output))
        raise ConvertError(
            "a PyTorch checkpoint (torch.save%s), not TorchScript; load it into its "
            "torch.nn.Module in Python:" % old,
            hint=_lines([new_model, "    ...    # load %r into it" % path], path, output))
    fmt = _safetensors(path, head)
    if fmt is not None:
        raise ConvertError(
            "a safetensors file of weights without rnnd's metadata (no architecture%s), which "
            "rnnd-convert cannot rebuild; in Python, with your model's class:"
            % ("; format %r" % fmt if fmt else ""),
            hint=_lines(["    from safetensors.torch import load_file", new_model,
                                "    model.load_state_dict(load_file(%r))" % path], path,
                               output))
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        with open(path, "rb") as f:
            kind, cls = _root(f)
        if kind == "class":
            raise ConvertError(
                "a Python pickle of %s, not a model file rnnd-convert reads; if it is a "
                "torch.nn.Module, in Python, where %s can be imported:" % (cls, cls),
                hint=_lines(["    import pickle", "    with open(%r, 'rb') as f:" % path,
                                    "        model = pickle.load(f)"], path, output))
        if kind is not None:
            raise ConvertError("a Python pickle, not a model file: rnnd-convert reads ONNX, "
                               "TorchScript and JSON + .npz (docs/convert.md)")
    return None
