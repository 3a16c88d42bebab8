"""Files people have that rnnd-convert cannot read as they are: a torch.save checkpoint (a
state_dict, or a whole pickled module), a pickle, a safetensors file of weights. Each lacks
the model's code or architecture, so the error says what the file is and prints the few lines
of Python that make it convertible (docs/convert.md, "Common mistakes").

Standard library only, and nothing is unpickled: the pickle's opcodes (its first PREFIX
bytes) are followed on a symbolic stack, so this works without torch and runs no code from
the file. A pickle that calls more than a checkpoint does is named for that call, and a
TorchScript file whose code runs when loaded is refused without --trust-code.
"""
import io
import json
import os
import pickletools
import re
import struct
import zipfile

from .errors import ConvertError

# torch.save before PyTorch 1.6 opens with a pickled magic number (LONG1 0x1950a86a20f9469cfc6c)
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
MAX_HEADER = 64 << 20       # rnnd's limit for a safetensors header (docs/model-format.md)
# Every read is bounded: a zip member inflates without limit, and a pickle string can declare
# any length. The root object and the calls that build a checkpoint come first.
PREFIX = 64 << 10
MAX_CODE = 16 << 20         # TorchScript source read to look for code that runs at load
# A TorchScript archive before torch.jit.load reads it (check_archive, trial20 C1 / C2).
# torch.jit.save stores tensor storages uncompressed and deflates only code/ text: entries
# stored compressed may inflate to MAX_INFLATED together (code, its debug_pkl); each entry
# and all of them are capped as a native spec's .npz is (native.MAX_NPZ_MEMBER / _TOTAL).
MAX_INFLATED = 64 << 20
# Brackets ( [ { open in TorchScript source at once: torch's parser recurses on each, in
# this process; 20 000 exhaust its stack (SIGSEGV). Generated code nests a few deep.
MAX_NESTING = 200
# TorchScript source torch.jit.load parses, debug_pkl aside (trial21 C4): parsing takes
# about 190 bytes of memory per byte and more than linear time (40 000 one-line statements,
# 1.1 MB: 4 s; 400 000: minutes and 2.6 GB). A scripted LSTM language model has 11 KB of
# code, a GRU with LayerNorm 9 KB, a whole nn.TransformerEncoderLayer 51 KB (PyTorch 2):
# 1 MiB is 20 times the largest.
MAX_LOADED_CODE = 1 << 20
_BRACKETS = bytes(range(256)).translate(None, b"()[]{}")      # everything else, deleted
_STRINGS = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8")    # STACK_GLOBAL's operands
_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")
_GETS = ("GET", "BINGET", "LONG_BINGET")
# What a checkpoint of tensors calls while it is unpickled (torch's own weights_only list,
# less what it only instantiates). Calling anything else is not a checkpoint.
SAFE_CALLS = {
    "collections.OrderedDict", "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor",
    "torch._tensor._rebuild_from_type_v2", "torch.nn.parameter.Parameter", "torch.Size",
    "torch.device", "torch.serialization._get_layout", "builtins.set", "builtins.frozenset",
    "builtins.complex", "builtins.slice", "builtins.bytearray", "__builtin__.set",
    "__builtin__.frozenset", "__builtin__.complex", "__builtin__.slice", "__builtin__.bytearray"}
# TorchScript that torch.jit.load runs, or that reads and writes files
_CODE_RISKS = (("__setstate__", "defines __setstate__, which torch.jit.load runs"),
               ("from_file", "calls from_file, which maps a file"))


def safe_call(name):
    return name in SAFE_CALLS or (name.startswith("torch.") and name.endswith("Storage") and
                                  name.count(".") == 1)


class _Scan:
    """What a pickle's first opcodes do, from a symbolic stack: no object is built.
    Values are None (anything), "mark", "dict", ("str", TEXT), ("global", NAME),
    ("new", NAME) for an instance made with NEWOBJ, ("call", NAME) for a call's result.
    src/model_sniff.c (pickle_scan) reads pickles the same way."""

    def __init__(self):
        self.stack, self.memo = [], {}
        self.call = None        # the first call of something outside SAFE_CALLS
        self.root = None        # the bottom of the stack: the object pickled

    def _pop_mark(self):
        while self.stack and self.stack.pop() != "mark":
            pass

    def _called(self, f, result):
        name = f[1] if isinstance(f, tuple) and f[0] == "global" else "an unknown callable"
        if result == "call" and not safe_call(name) and self.call is None:
            self.call = name
        self.stack.append((result, name))

    def step(self, op, arg):
        n, st = op.name, self.stack
        if n in _STRINGS:
            st.append(("str", arg))
        elif n == "MARK":
            st.append("mark")
        elif n == "GLOBAL":
            st.append(("global", arg.replace(" ", ".", 1)))
        elif n == "INST":
            self._pop_mark()
            self._called(("global", arg.replace(" ", ".", 1)), "call")
        elif n == "STACK_GLOBAL":
            mod, name = ([None, None] + st[-2:])[-2:]
            del st[-2:]
            ok = all(isinstance(v, tuple) and v[0] == "str" for v in (mod, name))
            st.append(("global", "%s.%s" % (mod[1], name[1]) if ok else "an unknown callable"))
        elif n.startswith("EXT"):
            st.append(("global", "an extension-registry callable"))
        elif n in ("REDUCE", "NEWOBJ"):
            f = st[-2] if len(st) >= 2 else None
            del st[-2:]
            self._called(f, "call" if n == "REDUCE" else "new")
        elif n == "NEWOBJ_EX":
            f = st[-3] if len(st) >= 3 else None
            del st[-3:]
            self._called(f, "new")
        elif n == "OBJ":
            i = len(st) - 1 - st[::-1].index("mark") if "mark" in st else 0
            f = st[i + 1] if i + 1 < len(st) else None
            del st[i:]
            self._called(f, "call")
        elif n in _PUTS or n == "MEMOIZE":
            self.memo[len(self.memo) if n == "MEMOIZE" else arg] = st[-1] if st else None
        elif n in _GETS:
            st.append(self.memo.get(arg, ("global", "an unknown callable")))
        elif n == "DUP":
            st.append(st[-1] if st else None)
        elif n == "EMPTY_DICT":
            st.append("dict")
        else:
            self._generic(op)
        if st and st[0] != "mark":
            self.root = st[0]

    def _generic(self, op):
        """Any other opcode, by its documented stack effect; one that returns its first
        operand (APPEND, SETITEMS, BUILD, ...) keeps it, so the root stays known."""
        before, after, st = op.stack_before, op.stack_after, self.stack
        keep = None
        if pickletools.markobject in before:
            self._pop_mark()
            k = before.index(pickletools.markobject)
        else:
            k = len(before)
        if k and after and after[0] is before[0] and len(st) >= k:
            keep = st[-k]
        del st[max(0, len(st) - k):]
        st.extend([keep] + [None] * (len(after) - 1) if after else [])


def _scan(data):
    """A _Scan of the pickle that opens DATA (bytes; at most PREFIX of them are read)."""
    s = _Scan()
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data[:PREFIX])):
            if op.name == "STOP":
                break
            s.step(op, arg)
    except Exception:       # damaged, or cut at PREFIX: what was read stands
        pass
    return s


def _root(s):
    """("dict", None), ("class", NAME), ("state_dict", None) or (None, None) for a _Scan."""
    r = s.root
    if r == "dict":
        return "dict", None
    if isinstance(r, tuple) and r[0] == "call" and r[1] == "collections.OrderedDict":
        return "state_dict", None
    if isinstance(r, tuple) and r[0] == "new":
        return "class", r[1]
    return None, None


def _calls(path, s):
    if s.call is not None:
        raise ConvertError("a pickle that calls %s (not a PyTorch checkpoint); loading it "
                           "would run code" % s.call)


def _read(f, limit):
    """At most LIMIT bytes from F, read in pieces."""
    out = bytearray()
    while len(out) < limit:
        b = f.read(min(1 << 16, limit - len(out)))
        if not b:
            break
        out += b
    return bytes(out)


def _name_clash(names):
    """Two entries torch.jit.load cannot tell apart, or None. Its zip reader (miniz) finds a
    name case-insensitively and takes the FIRST of equal names; Python's zipfile takes the
    LAST and is case-sensitive: with either kind of pair, what is scanned here need not be
    what torch loads."""
    seen = {}
    for n in names:
        key = n.replace("\\", "/").lower()
        if key in seen:
            return seen[key], n
        seen[key] = n
    return None


def _is_code(name):
    """Whether torch.jit.load may read NAME as TorchScript source: compared as miniz does,
    ignoring case."""
    n = name.replace("\\", "/").lower()
    return "/code/" in n or n.startswith("code/") or n.endswith(".py")


def _code_risk(z, names):
    """Why a TorchScript archive's code would run or touch files when loaded, or None.
    Every entry that can be code is read (names are unique here: _name_clash)."""
    left = MAX_CODE
    for n in names:
        if not _is_code(n):
            continue
        with z.open(n) as f:
            text = _read(f, left + 1)
        left -= len(text)
        if left < 0:
            return "has more code than rnnd-convert checks (%d MiB)" % (MAX_CODE >> 20)
        for needle, why in _CODE_RISKS:
            if re.search(br"\b" + needle.encode() + br"\b", text):
                return why
    return None


def _nesting(f):
    """The deepest bracket nesting in the text read from F, counted over ( [ { and their
    closers alike, string literals and comments included (a refusal there errs safe)."""
    depth = top = size = 0
    while True:
        b = f.read(1 << 20)
        if not b:
            return top, size
        size += len(b)
        for c in b.translate(None, _BRACKETS):
            if c in b"([{":
                depth += 1
                if depth > top:
                    top = depth
            elif depth:
                depth -= 1


def check_archive(path):
    """Refuse a TorchScript archive that torch.jit.load would inflate past the caps, or
    whose code nests brackets deeper than MAX_NESTING or holds more than MAX_LOADED_CODE
    bytes (ConvertError). Returns the bytes its entries declare uncompressed (0 for a file
    that is no zip: the loader reports it). Only the zip's directory and the code entries
    are read."""
    from .native import MAX_NPZ_MEMBER, MAX_NPZ_TOTAL
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            total = inflated = 0
            for i in infos:
                total += i.file_size
                if i.file_size > MAX_NPZ_MEMBER or total > MAX_NPZ_TOTAL:
                    raise ConvertError(
                        "entry %r of the archive declares %d MiB (%d MiB with those before "
                        "it): more than rnnd-convert lets torch.jit.load read, %d MiB an entry "
                        "and %d MiB in all (as for an .npz or ONNX external data)"
                        % (i.filename, i.file_size >> 20, total >> 20, MAX_NPZ_MEMBER >> 20,
                           MAX_NPZ_TOTAL >> 20))
                if i.compress_type == zipfile.ZIP_STORED:
                    if i.file_size != i.compress_size:
                        raise ConvertError("entry %r of the archive is stored uncompressed "
                                           "with two sizes, %d and %d bytes: a damaged or "
                                           "forged zip, refused" % (i.filename, i.file_size,
                                                                    i.compress_size))
                    continue
                inflated += i.file_size
                if inflated > MAX_INFLATED:
                    raise ConvertError(
                        "the archive's compressed entries inflate to more than %d MiB (entry "
                        "%r: %d KiB from %d KiB): torch.jit.save stores tensors uncompressed, "
                        "so this archive was packed again, or is a zip bomb; save the module "
                        "again with torch.jit.save" % (MAX_INFLATED >> 20, i.filename,
                                                         i.file_size >> 10,
                                                         i.compress_size >> 10))
            code = 0
            for i in infos:
                if not _is_code(i.filename) or i.filename.lower().endswith(".debug_pkl"):
                    continue
                with z.open(i) as f:
                    depth, size = _nesting(f)
                code += size
                if code > MAX_LOADED_CODE:
                    raise ConvertError(
                        "its code holds more than %d MiB of TorchScript source (%d KiB up to "
                        "%r): torch's loader would take minutes and gigabytes to parse it, "
                        "and a model's code is kilobytes; rnnd-convert refuses it"
                        % (MAX_LOADED_CODE >> 20, code >> 10, i.filename))
                if depth > MAX_NESTING:
                    raise ConvertError(
                        "its code %r nests brackets %d deep, deeper than %d: torch's "
                        "TorchScript parser would recurse until it crashed; rnnd-convert "
                        "refuses it" % (i.filename, depth, MAX_NESTING))
            return total
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, ValueError,
            EOFError):
        return 0                # not a zip, or one torch's loader reports


def _torch_root(path, head, trust_code):
    """(kind, class) of a torch.save file, or None if PATH is no such file (TorchScript is
    not: it has code, and torch.jit.load reads it)."""
    # zipfile.is_zipfile: torch's reader, like Python's, finds the archive from its end, so
    # one behind other bytes (with offsets that count them) loads all the same
    if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                clash = _name_clash(names)
                if clash:
                    raise ConvertError(
                        "a zip archive with two entries named %r and %r: torch's loader "
                        "would read one and this check the other, so it is refused (save it "
                        "again with torch.jit.save or torch.save)" % clash)
                if any(n.lower().endswith("constants.pkl") or _is_code(n) for n in names):
                    why = None if trust_code else _code_risk(z, names)
                    if why:
                        raise ConvertError(
                            "a TorchScript file whose code %s; loading TorchScript runs code "
                            "from the file: convert it with --trust-code only if you trust it"
                            % why)
                    return None
                data = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
                if names and all(n.endswith(".npy") for n in names):
                    raise ConvertError(
                        "a NumPy .npz archive of tensors, not a model; give it as the weights "
                        "of a native spec (docs/convert.md): rnnd-convert SPEC.json --weights "
                        "%s -o OUT.rnnd" % path)
                if not data:
                    return None
                with z.open(data[0]) as f:
                    s = _scan(_read(f, PREFIX))
        except zipfile.BadZipFile as e:
            raise ConvertError("a damaged zip archive (%s); rnnd-convert refuses what it "
                               "cannot check" % (str(e).splitlines() or ["BadZipFile"])[0])
        except (OSError, RuntimeError, NotImplementedError, ValueError, EOFError) as e:
            # encrypted, an unknown compression method, a damaged stream
            raise ConvertError("a zip archive rnnd-convert cannot read: %s"
                               % (str(e).splitlines() or [type(e).__name__])[0])
        _calls(path, s)
        return _root(s)
    if head.startswith(LEGACY_MAGIC):
        with open(path, "rb") as f:
            data = f.read(PREFIX)
        try:
            f = io.BytesIO(data)
            for _ in range(3):      # the magic number, the protocol version, sys_info
                for op, _, _ in pickletools.genops(f):
                    pass
        except Exception:
            return None, None
        s = _scan(data[f.tell():])
        _calls(path, s)
        return _root(s)
    return None


def _safetensors(path, head):
    """The "format" of a safetensors file holding tensors without rnnd's architecture ("" if
    it has none), else None. A header over PREFIX is not parsed (a JSON tree takes many
    times its size): its opening is searched for the keys instead."""
    if len(head) < 10 or head[8:9] != b"{":
        return None
    n = struct.unpack("<Q", head[:8])[0]
    if n > MAX_HEADER or n > os.path.getsize(path) - 8:
        return None
    with open(path, "rb") as f:
        f.seek(8)
        text = f.read(min(n, PREFIX))
    if n > PREFIX:
        if b'"dtype"' not in text or b'"data_offsets"' not in text or \
                b'"architecture"' in text or re.search(rb'"format"\s*:\s*"rnnd"', text):
            return None
        m = re.search(rb'"format"\s*:\s*"([^"\\]{0,60})"', text)
        return m.group(1).decode("utf-8", "replace") if m else ""
    try:
        h = json.loads(text)
    except (ValueError, RecursionError):
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


def check(path, output, trust_code=False):
    """Raise ConvertError, with the Python that makes it convertible, if PATH is one of the
    files above, or TorchScript whose code runs when loaded (unless TRUST_CODE); return None
    otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None             # the importer reports it
    new_model = "    model = MyModel()    # your model's class, built as in training"
    root = _torch_root(path, head, trust_code)
    if root is not None:
        kind, cls = root
        old = ", in the format before PyTorch 1.6" if head.startswith(LEGACY_MAGIC) else ""
        # weights_only=True: torch's unpickler that builds tensors and calls nothing else
        load = "torch.load(%r, map_location='cpu', weights_only=True)" % path
        if kind == "state_dict":
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
                "TorchScript; loading it runs code from the file, so only if you trust it, "
                "in Python, where %s:" % (cls, old, where),
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
                         "    model.load_state_dict(load_file(%r))" % path], path, output))
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        with open(path, "rb") as f:
            s = _scan(f.read(PREFIX))
        _calls(path, s)
        kind, cls = _root(s)
        if kind == "class":
            raise ConvertError(
                "a Python pickle of %s, not a model file rnnd-convert reads; if it is a "
                "torch.nn.Module, and you trust the file (pickle.load runs code from the "
                "file), in Python, where %s can be imported:" % (cls, cls),
                hint=_lines(["    import pickle", "    with open(%r, 'rb') as f:" % path,
                             "        model = pickle.load(f)"], path, output))
        if s.root is not None:
            raise ConvertError("a Python pickle, not a model file: rnnd-convert reads ONNX, "
                               "TorchScript and JSON + .npz (docs/convert.md)")
    return None


def _is_rnnd(head, path):
    """Whether the file opens as an .rnnd model (a safetensors header naming format rnnd)."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    with open(path, "rb") as f:
        f.seek(8)
        text = f.read(PREFIX)
    return re.search(rb'"format"\s*:\s*"rnnd"', text) is not None


def wrong_format(path, fmt):
    """A ConvertError for a file that is plainly not FMT ("onnx", "torchscript", "native"):
    what it is, and how to convert it. None when it may be FMT (the importer decides)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    name = os.path.basename(path)
    if _is_rnnd(head, path):
        return ConvertError("this is already an rnnd model, nothing to convert (rnnd inspect "
                            "%s describes it)" % name)
    if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                if not any(_is_code(n) for n in z.namelist()):
                    return None     # a checkpoint or .npz: check() says what it is
        except (zipfile.BadZipFile, OSError):
            return None
        is_, to, flag = "a TorchScript archive", ".pt", "torchscript"
    elif head.lstrip().startswith(b"{"):
        is_, to, flag = "a JSON file (a native spec?)", ".json", "native"
    elif head[:1] == b"\x08":      # a protobuf opening with field 1 (ir_version): ONNX
        is_, to, flag = "an ONNX model", ".onnx", "onnx"
    else:
        return None
    if flag == fmt:
        return None
    return ConvertError("this is %s, not %s (rename it to %s or pass --format %s)"
                        % (is_, {"onnx": "ONNX", "torchscript": "TorchScript",
                                 "native": "a native spec"}[fmt], to, flag))
