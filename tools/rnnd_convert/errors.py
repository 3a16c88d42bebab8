"""The error rnnd-convert reports, and the line for a Python module the interpreter lacks.

Standard library only: the command line imports this before numpy, onnx or torch, so that
their absence is reported in one line instead of a traceback."""
import sys
import unicodedata

# The Debian packages of the modules rnnd-convert imports (README.md, tools/setup).
DEBIAN_PACKAGES = {"numpy": "python3-numpy", "onnx": "python3-onnx", "torch": "python3-torch"}


class ConvertError(Exception):
    """A reason the input cannot be converted: printed as one line, `rnnd-convert: FILE: msg`.

    PATH, when set, names the file at fault if it is not the input (e.g. a weights file).
    HINT, when set, is printed after that line: the few lines of Python that make a file
    convertible (a torch.save checkpoint, docs/convert.md "Common mistakes")."""

    def __init__(self, msg, path=None, hint=None):
        # names and strings quoted from the file may hold a newline or a terminal escape,
        # which would fake a second line (trial20 M1): escaped here, where every message
        # passes
        super().__init__(printable(msg) if isinstance(msg, str) else msg)
        self.path = path
        self.hint = hint


def printable(text):
    """TEXT with its control and format characters (newlines, ESC, bidi overrides, line and
    paragraph separators) written as Python escapes, \\n, \\x1b, \\u202e: a message
    quoting the model file stays one line and cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " or
                   unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")
                   else repr(c)[1:-1] for c in text)


def missing_module(e):
    """The reason for ImportError E, naming the module and the Debian package that has it."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    if not name:
        return "a Python module failed to import: %s" % (str(e).splitlines() or [""])[0]
    package = DEBIAN_PACKAGES.get(name, "python3-" + name.replace("_", "-").lower())
    return ("needs the Python module %s, which %s cannot import: install the Debian package %s"
            " and run it with Debian's /usr/bin/python3 (the rnnd-convert launcher does)"
            % (name, sys.executable, package))
