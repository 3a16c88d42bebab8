"""The documents say what the code does (issue 12, item 7).

- Every generated example of docs/api.md and docs/v2.md (the blocks between
  `<!-- example: NAME -->` and `<!-- /example -->`) is what rnnd answers now: tools/doc-examples
  sends each example's requests to a real `rnnd serve` (the bundled charlm, two golden vector
  models) or runs `rnnd infer` / `rnnd inspect`, and prints a diff and exits 1 when a block
  differs. `make doc-examples` rewrites them.
- docs/convert.md gives `from_module`'s signature exactly as tools/rnnd_convert defines it.

Prints what it checked; exits 1 on any failure.
"""
import inspect
import os
import re
import subprocess

import rnnd_convert
from daemon_util import PYTHON3, RNND_BIN, Checker

C = Checker()
SRCDIR = os.environ["RNND_SRCDIR"]


def check_examples():
    p = subprocess.run([PYTHON3, os.path.join(SRCDIR, "tools", "doc-examples"), "--rnnd",
                        RNND_BIN], capture_output=True, text=True, timeout=300)
    print(p.stdout + p.stderr)
    C.eq(p.returncode, 0, "docs/api.md and docs/v2.md examples are what rnnd answers")
    C.check("the documents agree with rnnd" in p.stdout, "every example was run and agrees")


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
    check_examples()
    check_from_module_signature()
    C.exit()


if __name__ == "__main__":
    main()
