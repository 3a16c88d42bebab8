"""src/ keeps its shape: no include or call cycle between files, no repeated blocks.

Issue 15's acceptance, checked on every `make check`:
- Include cycles: the graph of `#include "..."` between the files of src/ and include/rnnd/.
  A module is one node: x.c, x.h, include/rnnd/x.h and x_internal.h, and every .c file that
  includes x_internal.h (the module's private header: model_arch.c, model_digest.c, ... are
  parts of the model module, kernels_avx2.c of the kernels module). And file by file: every
  file its own node (model_internal.h and include/rnnd/model.h are two), so that the headers
  of one module do not include each other either.
- Call cycles: from the object files of the build (nm), per file: every .c file of src/ is its
  own node, the parts of one module included. File A calls (or takes the address of) a
  function or object that file B defines, and B, directly or through others, calls A.
  Handlers reached through a table handed over at run time (routes.c to http.c) are calls
  through pointers, not references by name.
- Repeated blocks: no run of BLOCK or more normalized lines of src/ occurs twice (in one file
  or two), other than between the per-ISA variants of one file (x_scalar.c, x_avx2.c,
  x_avx512.c). Normalized: comments and blank lines dropped, whitespace collapsed, and lines
  that are only #include, braces or `} else {` dropped (they repeat without being code).

Env: RNND_SRCDIR (the sources), RNND_BIN (the built rnnd; its folder holds src/*.o).
"""
import collections
import glob
import os
import re
import subprocess
import unittest

SRCDIR = os.environ.get("RNND_SRCDIR") or os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))
BUILDDIR = os.path.dirname(os.environ["RNND_BIN"]) if os.environ.get("RNND_BIN") else SRCDIR
BLOCK = 6
ISA = re.compile(r"_(scalar|avx2|avx512)$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def base(path):
    return re.sub(r"\.[ch]$", "", os.path.basename(path))


def sources():
    return sorted(glob.glob(os.path.join(SRCDIR, "src", "*.[ch]")) +
                  glob.glob(os.path.join(SRCDIR, "include", "rnnd", "*.h")))


def module_map():
    """File base name -> module name."""
    owner = {}
    for path in sources():
        b = base(path)
        owner.setdefault(b, re.sub(r"_internal$", "", b))
        if path.endswith(".c"):
            for inc in INCLUDE.findall(read(path)):
                m = re.fullmatch(r"(\w+)_internal\.h", os.path.basename(inc))
                if m:
                    owner[b] = m.group(1)
    return owner


def cycles(graph):
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in list(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def describe(comps, graph):
    lines = []
    for comp in comps:
        edges = ["%s -> %s" % (a, b) for a in comp for b in sorted(graph[a]) if b in comp]
        lines.append("cycle among %s: %s" % (", ".join(comp), "; ".join(edges)))
    return "\n".join(lines)


def normalized(path):
    text = read(path)
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        line = re.sub(r"\s+", " ", line).strip()
        if not line or re.fullmatch(r"[{}();, ]*|\} else \{|#\s*include .*", line):
            continue
        out.append((line, number))
    return out


class Structure(unittest.TestCase):
    def test_no_include_cycle(self):
        owner = module_map()
        graph = collections.defaultdict(set)
        for path in sources():
            a = owner[base(path)]
            for inc in INCLUDE.findall(read(path)):
                b = owner.get(base(inc))
                if b and b != a:
                    graph[a].add(b)
        self.assertGreater(len(graph), 20, "the include graph of src/ looks empty")
        comps = cycles(graph)
        self.assertEqual(comps, [], "include cycles between src/ files:\n" +
                         describe(comps, graph))

    def test_no_include_cycle_between_files(self):
        paths = set(sources())
        graph = collections.defaultdict(set)
        for path in sorted(paths):
            a = os.path.relpath(path, SRCDIR)
            for inc in INCLUDE.findall(read(path)):
                # where the compiler looks: the file's folder, then -I src and -I include
                for d in (os.path.dirname(path), os.path.join(SRCDIR, "src"),
                          os.path.join(SRCDIR, "include")):
                    target = os.path.normpath(os.path.join(d, inc))
                    if target in paths:
                        graph[a].add(os.path.relpath(target, SRCDIR))
                        break
        self.assertGreater(len(graph), 20, "the include graph of src/ looks empty")
        comps = cycles(graph)
        self.assertEqual(comps, [], "include cycles between src/ files:\n" +
                         describe(comps, graph))

    def test_no_call_cycle(self):
        objects = glob.glob(os.path.join(BUILDDIR, "src", "*.o"))
        self.assertTrue(objects, "no object files under %s/src: build first" % BUILDDIR)
        defined, used = {}, collections.defaultdict(set)
        for obj in objects:
            name = re.sub(r"^lib\w+_a-", "", os.path.basename(obj)[:-2])
            self.assertTrue(os.path.exists(os.path.join(SRCDIR, "src", name + ".c")),
                            "%s: no source file src/%s.c" % (obj, name))
            node = name
            nm = subprocess.run(["nm", "-P", obj], capture_output=True, text=True, check=True)
            for line in nm.stdout.splitlines():
                fields = line.split()
                if len(fields) < 2:
                    continue
                if fields[1] == "U":
                    used[node].add(fields[0])
                elif fields[1] in "TDBRCV":
                    defined[fields[0]] = node
        graph = collections.defaultdict(set)
        for node, syms in used.items():
            for sym in syms:
                if sym in defined and defined[sym] != node:
                    graph[node].add(defined[sym])
        self.assertGreater(len(graph), 20, "the call graph of src/ looks empty")
        comps = cycles(graph)
        self.assertEqual(comps, [], "call cycles between src/ files (nm):\n" +
                         describe(comps, graph))

    def test_no_repeated_block(self):
        windows = collections.defaultdict(list)
        for path in sorted(glob.glob(os.path.join(SRCDIR, "src", "*.[ch]"))):
            lines = normalized(path)
            for i in range(len(lines) - BLOCK + 1):
                key = tuple(text for text, _ in lines[i:i + BLOCK])
                windows[key].append((os.path.relpath(path, SRCDIR), lines[i][1]))
        found = []
        for key, places in windows.items():
            for i, (fa, la) in enumerate(places):
                for fb, lb in places[i + 1:]:
                    ba, bb = base(fa), base(fb)
                    if fa != fb and ISA.search(ba) and ISA.search(bb) and \
                            ISA.sub("", ba) == ISA.sub("", bb):
                        continue
                    found.append("%s:%d and %s:%d: %s" % (fa, la, fb, lb, key[0]))
        self.assertEqual(found, [], "blocks of %d or more lines repeated in src/ (each run of "
                         "the block listed by its first line):\n%s" % (BLOCK, "\n".join(found)))


if __name__ == "__main__":
    unittest.main()
