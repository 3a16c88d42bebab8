"""The documents say what the code does (issue 12, item 7).

- docs/convert.md gives `from_module`'s signature exactly as tools/rnnd_convert defines it.

Prints what it checked; exits 1 on any failure.
"""
import inspect
import os
import re

import rnnd_convert
from daemon_util import Checker

C = Checker()
SRCDIR = os.environ["RNND_SRCDIR"]


def check_from_module_signature():
    with open(os.path.join(SRCDIR, "docs", "convert.md"), encoding="utf-8") as f:
        doc = f.read()
    shown = re.findall(r"`(from_module\(module\b[^`]*\))`", doc)
    want = "from_module" + str(inspect.signature(rnnd_convert.from_module))
    C.check(len(shown) == 1, "docs/convert.md gives from_module's signature once (%d)"
            % len(shown))
    if shown:
        C.eq(" ".join(shown[0].split()), want, "docs/convert.md's from_module signature")


def main():
    check_from_module_signature()
    C.exit()


if __name__ == "__main__":
    main()
