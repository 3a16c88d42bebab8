"""Nothing the project builds, tests or benchmarks with reads a path outside the checkout.

A user's clone has nothing beside it. This test reads every text file under tests/, bench/,
tools/, docs/, man/, conf/, systemd/, debian/, deploy/, clients/ and .ci/, plus Makefile.am,
configure.ac and README.md, and fails on:
- a mention of the development folder that sits beside our own checkouts, or of absolute
  paths of the machines we develop on;
- a relative path whose `..` components climb above the checkout from the file's own folder
  (e.g. `../../x` in tests/), unless it is listed in ALLOWED with the reason it is never
  opened as a path;
- `os.path.dirname` applied to `__file__` more times than the file is deep.
.ci/run proves the same from the other side: its first step runs in a fresh clone in a new
temporary folder.

Env: RNND_SRCDIR. Two tests: the rules' self-test and the tree; each finding is a failed
check.
"""
import os
import posixpath
import re
import unittest


SRCDIR = os.environ.get("RNND_SRCDIR") or os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))
TREES = ["tests", "bench", "tools", "docs", "man", "conf", "systemd", "debian", "deploy",
         "clients", ".ci"]
FILES = ["Makefile.am", "configure.ac", "README.md"]
# node_modules: what `npm ci --prefix bench/ort` installs for bench/compare, third parties'
# files (their READMEs name /home/...), not the project's
SKIP_DIRS = {".deps", ".libs", "tmp", "__pycache__", "corpus", "autom4te.cache", ".git",
             "node_modules"}
# built from pieces so that this file does not match itself
FORBIDDEN = ["../" + "shared", "shared" + "/golden", "/" + "work/", "/" + "home/"]
# (file, text on the line): relative paths that are data, never opened
ALLOWED = {
    ("tests/check_session.c", '"../../etc/passwd"'):
        "an id that rnnd_id_valid must refuse; no file is opened",
    ("tests/test_convert.py", '"data/../../secret.bin"'):
        "an ONNX external-data location the converter must refuse; rnnd-convert opens nothing",
    ("README.md", "../rnnd_0.1.0_amd64.deb"):
        "run after `cd rnnd-0.1.0`, the tree make dist unpacks in the checkout",
}
TOKEN = re.compile(r"(?<![\w.])((?:[\w${}()\"'-]*/)*\.\.(?!\.)(?:/[\w.${}-]*)*)")
BUILT = (".log", ".trs", ".o", ".a", ".Po", ".pyc", "Makefile", "Makefile.in")

def text_files():
    for tree in TREES:
        top = os.path.join(SRCDIR, tree)
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            for f in files:
                if f.endswith(BUILT):
                    continue
                yield os.path.join(root, f)
    for f in FILES:
        yield os.path.join(SRCDIR, f)


def read_text(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def escapes(token, depth):
    """How far a relative path climbs above the checkout from a folder DEPTH deep."""
    parts = [p for p in token.split("/") if p]
    if not parts or token.startswith("/"):
        return 0
    # an anchor such as $(dirname "$0") or "$here" stands for the file's own folder
    parts = [p for p in parts if not re.search(r"[$\"'()]", p)]
    norm = posixpath.normpath("/".join(parts)) if parts else "."
    up = 0
    for p in norm.split("/"):
        if p != "..":
            break
        up += 1
    return max(0, up - depth)


def scan(path):
    """The findings in the file at PATH (a list of messages)."""
    found = []
    rel = os.path.relpath(path, SRCDIR)
    if rel == os.path.join("tests", "test_self_contained.py"):
        return found
    text = read_text(path)
    if text is None:
        return found
    depth = rel.count(os.sep)
    for n, line in enumerate(text.splitlines(), 1):
        where = "%s:%d" % (rel, n)
        for bad in FORBIDDEN:
            if bad in line:
                found.append("%s mentions %r: %s" % (where, bad, line.strip()[:120]))
        for m in TOKEN.finditer(line):
            if escapes(m.group(1), depth) and not any(
                    rel == f and t in line for f, t in ALLOWED):
                found.append("%s: %r climbs above the checkout: %s"
                             % (where, m.group(1), line.strip()[:120]))
        if "__file__" in line:
            ups = line.count("dirname(") - 1
            if ups > depth:
                found.append("%s: dirname of __file__ climbs %d levels from a file %d deep"
                             % (where, ups, depth))
    return found


def self_test():
    """Whether each rule catches what it is for (so that this test can fail): a list of
    booleans."""
    ok = [escapes("../../x", 1) == 1, escapes("../x", 1) == 0,
          escapes('$(dirname "$0")/../..', 2) == 0, escapes("a/b/../../../x", 1) == 0,
          escapes("../../../shared/golden", 2) == 1, escapes("/v1/sessions/../models", 0) == 0,
          TOKEN.search("from_module(m, ...)") is None]
    m = TOKEN.search('GOLDEN = os.path.join(SRCDIR, "../../data")')
    ok.append(m is not None and escapes(m.group(1), 1) == 1)
    return ok


class SelfContained(unittest.TestCase):
    def test_rules(self):
        ok = self_test()
        self.assertTrue(all(ok), "self-test of the path rules failed: %s" % ok)

    def test_tree(self):
        n, findings = 0, []
        for path in text_files():
            if os.path.isfile(path):
                findings += scan(path)
                n += 1
        print("%d files read, %d finding(s)" % (n, len(findings)))
        self.assertGreater(n, 0, "no files read")
        self.assertEqual(findings, [], "files that reach outside the checkout")


if __name__ == "__main__":
    unittest.main()
