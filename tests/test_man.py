"""The man pages man/rnnd.8 and man/rnnd-convert.1.

- `groff -man -Tutf8 -ww -z` (every warning on) prints nothing for either page (Debian package
  groff-base, installed by tools/setup);
- they agree with the programs: every command of `rnnd --help` has its section; every flag of
  `rnnd serve --help` is documented, with the default the daemon prints (rendered on one
  long line, so nothing is hyphenated or broken); every option of `rnnd infer --help`,
  `rnnd inspect --help`, `rnnd bench --help` and `rnnd-convert --help` appears.
"""
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import Case, PYTHON3, RNND_BIN, require  # noqa: E402

SRCDIR = os.environ["RNND_SRCDIR"]
PAGES = {"rnnd": os.path.join(SRCDIR, "man", "rnnd.8"),
         "rnnd-convert": os.path.join(SRCDIR, "man", "rnnd-convert.1")}


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


def render(path):
    """Plain text, no hyphenation, paragraphs on one line, '-' for \\-."""
    r = run(["groff", "-man", "-Tascii", "-P-cbou", "-rLL=2000n", "-rHY=0", path])
    return r.stdout


def options(help_text):
    """Every --long option named at the start of a help line (and -x short ones)."""
    found = set()
    for line in help_text.splitlines():
        m = re.match(r"\s+((?:-[a-zA-Z], )?--[a-z][a-z0-9-]*)", line)
        if m:
            found.add(m.group(1).split(", ")[-1])
    return found


class ManPages(Case):
    """The man pages against the programs' own --help."""

    @classmethod
    def setUpClass(cls):
        require(shutil.which("groff") is not None,
                "groff is installed (Debian package groff-base; tools/setup)")
        cls.man = render(PAGES["rnnd"])
        cls.flat = re.sub(r"\s+", " ", cls.man)

    def test_groff_clean(self):
        for name, path in PAGES.items():
            r = run(["groff", "-man", "-Tutf8", "-ww", "-z", path])
            self.check(r.returncode == 0 and r.stderr == "",
                       "groff -ww %s: clean (status %d) %s" % (name, r.returncode, r.stderr[:500]))

    def test_commands(self):
        man = self.man
        top = run([RNND_BIN, "--help"]).stdout
        commands = re.findall(r"^\s{2}([a-z]+)\s{2,}", top, re.M)
        self.check(len(commands) >= 4, "rnnd --help lists commands: %r" % commands)
        for c in commands:
            self.check(re.search(r"^\s+rnnd %s$" % c, man, re.M) is not None,
                       "rnnd.8 has a section for `rnnd %s`" % c)

    def test_serve_settings(self):
        """serve: every setting with its default."""
        man, flat = self.man, self.flat
        serve = run([RNND_BIN, "serve", "--help"]).stdout
        entries = re.findall(r"^\s{2}(--[a-z-]+)( [^\n]*)?\n((?:\s{8}.*\n)+)", serve, re.M)
        self.check(len(entries) >= 25, "rnnd serve --help: %d settings parsed" % len(entries))
        # the man page's entries: a line "       --flag ARG" then its paragraph on one line
        paras = {}
        for m in re.finditer(r"^ {7}(--[a-z-]+)[^\n]*\n {14}([^\n]*)", man, re.M):
            paras.setdefault(m.group(1), m.group(2))
        for flag, _, text in entries:
            text = re.sub(r"\s+", " ", text)
            d = re.search(r'default "([^"]*)"', text)
            para = paras.get(flag)
            if not self.check(para is not None, "rnnd.8 documents %s" % flag):
                continue
            if d:
                want = d.group(1)
                if want == "":
                    ok = "Default empty" in para or "Default none" in para
                else:
                    ok = ("Default %s." % want) in para
                self.check(ok, "rnnd.8 gives %s's default %r: %r" % (flag, want, para[-120:]))
            b = re.search(r"(\d+)\.\.(\d+)\)", text)
            if b and flag not in ("--max-body-bytes", "--max-state-bytes", "--max-header-bytes",
                                  "--max-request-memory", "--memory-budget"):
                self.check("(%s..%s" % b.groups() in para or "%s..%s)" % b.groups() in para,
                           "rnnd.8 gives %s's bounds %s..%s" % ((flag,) + b.groups()))
        for flag in ("--config", "--print-config", "--help"):
            self.check(flag in paras or (flag + " ") in flat, "rnnd.8 documents %s" % flag)

    def test_other_commands(self):
        """The other commands' options."""
        flat = self.flat
        for sub in ("infer", "inspect", "bench"):
            h = run([RNND_BIN, sub, "--help"])
            opts = options(h.stdout + h.stderr)
            self.check(len(opts) >= 1, "rnnd %s --help lists options: %r" % (sub, sorted(opts)))
            for o in sorted(opts - {"--help"}):
                self.check(o in flat, "rnnd.8 mentions `rnnd %s %s`" % (sub, o))

    def test_rnnd_convert(self):
        conv = render(PAGES["rnnd-convert"])
        h = run([PYTHON3, "-m", "rnnd_convert", "--help"])
        opts = options(h.stdout)
        self.check(len(opts) >= 7, "rnnd-convert --help lists options: %r" % sorted(opts))
        for o in sorted(opts):
            self.check(re.search(r"^ {7}(-[a-z], )?%s\b" % re.escape(o), conv, re.M) is not None,
                       "rnnd-convert.1 documents %s" % o)
        for choice in re.findall(r"\{([a-z_,]+)\}", h.stdout):
            for c in choice.split(","):
                self.check(c in conv, "rnnd-convert.1 names the choice %r" % c)


if __name__ == "__main__":
    unittest.main()
