"""Hostile foreign files (issue 12, items 4-5, after an adversarial audit).

1. A TorchScript file whose code defines __setstate__ (which torch.jit.load runs) or calls
   torch.from_file is refused by rnnd-convert unless --trust-code is given, and nothing it
   would write is written; the project's scripted nn.LSTM/GRU/RNN still convert without it;
   docs/convert.md, the man page and rnnd's TorchScript hint say that loading runs code.
2. A state_dict's hint loads it with weights_only=True; a whole module's hint says it runs
   code from the file. A pickle that calls something outside torch's rebuild functions
   (posix.system) is "a pickle that calls posix.system", in rnnd and rnnd-convert, with no
   Python to run.
3. rnnd-convert's sniff of deflated zip bombs (10^7 MEMOIZE opcodes; one 100 MB string)
   stays fast and small.
4. `rnnd inspect` on a 16 MB JSON header of empty objects stays under 64 MB (VmHWM); so does
   rnnd-convert's sniff of an 8 MB one.
5. An encrypted data.pkl, compression method 99 and a deeply nested JSON header give one
   line naming the file, never "internal error".

Each part is a test class, runnable alone (README.md, "Developers"); they run in the work
folder, which setUpModule enters, torch seeded once.
"""
import os
import pickle
import re
import shutil
import struct
import subprocess
import time
import unittest
import warnings
import zipfile
from typing import List, Tuple

import torch

from daemon_util import PYTHON3, RNND_BIN, Case, tmpdir  # first: it finds tools/
from daemon_util import RUNNING as C
from rnnd_convert import sniff
from rnnd_convert.errors import ConvertError

shutil.rmtree(tmpdir("sniff_hostile"))
WORK = tmpdir("sniff_hostile")
SRCDIR = os.environ["RNND_SRCDIR"]
CONVERT = os.path.join(os.path.dirname(RNND_BIN), "rnnd-convert")
VICTIM = os.path.join(WORK, "victim.txt")
PAYLOAD = [ord(c) for c in "PWNED"]


def run(cmd, timeout=120):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


# A child's ru_maxrss counts what it shared with its parent when forked, and this process
# holds torch: a small interpreter starts CMD and reports its peak.
_PEAK = ("import os, subprocess, sys\n"
         "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
         "_, status, ru = os.wait4(p.pid, 0)\n"
         "print(os.waitstatus_to_exitcode(status), ru.ru_maxrss)\n")


def peak_kib(cmd):
    """(status, stderr, peak RSS in KiB) of CMD."""
    p = subprocess.run([PYTHON3, "-c", _PEAK] + cmd, capture_output=True, text=True,
                       timeout=300)
    rc, kib = (p.stdout.split() + ["-1", "-1"])[:2]
    return int(rc), p.stderr, int(kib)


def one_line(what, err, needle):
    lines = err.splitlines()
    return C.check(len(lines) == 1 and needle in lines[0] and "internal error" not in err,
                   "%s: one line holding %r: %r" % (what, needle, err))


# ---- 1: TorchScript that runs code when loaded ---------------------------------------------

class SetState(torch.nn.Module):
    """A model whose __setstate__ writes into VICTIM through torch.from_file."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.p: List[int] = PAYLOAD
        self.path: str = VICTIM

    def forward(self, x):
        return x * self.w

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool, List[int], str]:
        return (self.w, self.training, self.p, self.path)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool, List[int], str]) -> None:
        self.w = state[0]
        self.training = state[1]
        self.p = state[2]
        self.path = state[3]
        t = torch.from_file(self.path, True, len(self.p), dtype=torch.uint8)
        for i in range(len(self.p)):
            t[i] = self.p[i]
        self.w = self.w + t[:2].float() * 0     # keeps the writes from being optimised away


class FromFile(torch.nn.Module):
    """No __setstate__, but its forward reads a file."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.GRU(3, 4)
        self.path: str = VICTIM

    def forward(self, x):
        t = torch.from_file(self.path, False, 2, dtype=torch.uint8)
        return self.rnn(x)[0] + t[0].float() * 0


class TorchScript(Case):
    def test_torchscript(self):
        with open(VICTIM, "w") as f:
            f.write("intact\n")
        torch.jit.script(SetState()).save("setstate.pt")
        with open(VICTIM, "w") as f:        # saving does not run __setstate__, but be sure
            f.write("intact\n")
        rc, out, err = run([CONVERT, "setstate.pt", "-o", "setstate.rnnd"])
        C.check(rc == 1, "setstate.pt: refused without --trust-code (%d)" % rc)
        one_line("setstate.pt", err, "rnnd-convert: setstate.pt: a TorchScript file whose code "
                 "defines __setstate__")
        C.check("--trust-code" in err, "setstate.pt: names --trust-code: %r" % err)
        with open(VICTIM) as f:
            C.eq(f.read(), "intact\n", "setstate.pt: the victim file is unchanged")
        C.check(not os.path.exists("setstate.rnnd"), "setstate.pt: nothing written")
        # the flag is what the user says it is: the file is loaded and its code runs (the model
        # itself is then refused for its parameter w)
        rc, out, err = run([CONVERT, "setstate.pt", "-o", "setstate.rnnd", "--trust-code"])
        C.check(rc == 1 and "parameter 'w'" in err, "setstate.pt --trust-code: loaded: %r" % err)
        with open(VICTIM) as f:
            C.check(f.read().startswith("PWNED"), "--trust-code: __setstate__ ran, as documented")

        torch.jit.script(FromFile()).save("fromfile.pt")
        rc, out, err = run([CONVERT, "fromfile.pt", "-o", "fromfile.rnnd"])
        C.check(rc == 1, "fromfile.pt: refused without --trust-code")
        one_line("fromfile.pt", err, "calls from_file")

        # the project's own scripted models need no flag
        for name, m in (("lstm", torch.nn.LSTM(3, 4, 2)), ("gru", torch.nn.GRU(3, 4)),
                        ("rnn", torch.nn.RNN(3, 4, nonlinearity="relu", bidirectional=True))):
            torch.jit.script(m).save(name + ".pt")
            rc, out, err = run([CONVERT, name + ".pt", "-o", name + ".rnnd", "-q"])
            C.check(rc == 0 and err == "",
                    "scripted %s converts without the flag: %r" % (name, err))

        rc, out, err = run([RNND_BIN, "inspect", "lstm.pt"])
        C.check(rc == 1 and "runs code from the file" in err and "trust" in err,
                "rnnd inspect of TorchScript says converting runs code: %r" % err)
        with open(os.path.join(SRCDIR, "docs", "convert.md")) as f:
            doc = f.read()
        with open(os.path.join(SRCDIR, "man", "rnnd-convert.1")) as f:
            man = f.read()
        C.check("--trust-code" in doc and "runs code from the file" in doc,
                "docs/convert.md documents --trust-code and that loading runs code")
        C.check("\\-\\-trust\\-code" in man and "runs code from the file" in man,
                "man/rnnd-convert.1 documents --trust-code and that loading runs code")


class WritesFile(torch.nn.Module):
    """forward() maps VICTIM shared and overwrites it, and is otherwise a model rnnd
    converts (issue 14, adversary 1: verification runs forward())."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 8, batch_first=True)
        self.fc = torch.nn.Linear(8, 5)
        self.path: str = VICTIM

    def forward(self, x):
        t = torch.from_file(self.path, True, 5, dtype=torch.uint8)
        t.fill_(88)
        y, _ = self.lstm(x)
        return self.fc(y), t


def rewrite_zip(src, dst, edit, prefix=b""):
    """DST: SRC's entries through EDIT(name, data) -> [(name, data), ...], stored, after
    PREFIX (offsets count it, as zipfile's append mode writes them)."""
    with open(dst, "wb") as f:
        f.write(prefix)
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "a", zipfile.ZIP_STORED) as out:
        for info in z.infolist():
            for name, data in edit(info.filename, z.read(info.filename)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")     # "Duplicate name"
                    out.writestr(name, data)


class ArchiveTricks(Case):
    def test_archive_tricks(self):
        """The --trust-code guard reads what torch.jit.load reads: an archive with two entries
        of one name (torch takes the first, zipfile the last), a code entry whose name differs
        in case (torch's lookup ignores case), and an archive behind other bytes are refused,
        and the file forward() would overwrite stays intact."""
        torch.jit.script(WritesFile()).save("writes.pt")
        # the code of WritesFile.forward: code/__torch__.py when the test runs as a script,
        # code/__torch__/MODULE/PATH.py when unittest imports it as a module
        code = lambda n, d: "/code/__torch__" in n and n.endswith(".py") and b"from_file" in d
        harmless = lambda d: re.sub(rb"torch\.from_file\([^)]*\)", b"torch.zeros([5], dtype=0)", d)
        # one order fools a guard that reads the other copy than torch does
        rewrite_zip("writes.pt", "dup.pt",
                    lambda n, d: [(n, d), (n, harmless(d))] if code(n, d) else [(n, d)])
        rewrite_zip("writes.pt", "dup2.pt",
                    lambda n, d: [(n, harmless(d)), (n, d)] if code(n, d) else [(n, d)])
        rewrite_zip("writes.pt", "case.pt",
                    lambda n, d: [(n[:-3] + ".PY" if code(n, d) else n, d)])
        rewrite_zip("writes.pt", "behind.pt", lambda n, d: [(n, d)], prefix=b"X" * 1000)
        for name, needle in (("dup.pt", "two entries named"), ("dup2.pt", "two entries named"),
                             ("case.pt", "calls from_file"),
                             ("behind.pt", "calls from_file")):
            with open(VICTIM, "w") as f:
                f.write("intact\n")
            out = name[:-3] + ".rnnd"
            rc, _, err = run([CONVERT, name, "-o", out])
            C.check(rc == 1, "%s: refused (%d)" % (name, rc))
            one_line(name, err, needle)
            with open(VICTIM) as f:
                C.eq(f.read(), "intact\n", "%s: the victim file is unchanged" % name)
            C.check(not os.path.exists(out), "%s: nothing written" % name)


# ---- 2: hints that would unpickle an attacker's file ---------------------------------------

class Call:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, ("echo PWNED > %s" % self.path,))


class Plain:
    """A class instance: pickled with NEWOBJ, as torch.save pickles a module."""

    def __init__(self):
        self.x = 1


def make_pickles():
    # opens as a state_dict (GLOBAL collections OrderedDict), then calls os.system
    evil = (b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01" +
            pickle.dumps(Call(os.path.join(WORK, "pwned-sd")), protocol=2)[2:-1] + b"0.")
    with zipfile.ZipFile("evil_sd.pt", "w") as z:
        z.writestr("archive/data.pkl", evil)
        z.writestr("archive/version", "3\n")
    with zipfile.ZipFile("evil_module.pt", "w") as z:
        z.writestr("archive/data.pkl",
                   pickle.dumps(Call(os.path.join(WORK, "pwned-mod")), protocol=2))
        z.writestr("archive/version", "3\n")
    # the same call hidden behind the memo: the global is stored, later fetched and called
    hidden = (b"\x80\x02cposix\nsystem\nq\x07(X\x04\x00\x00\x00trueq\x08tq\x09" +
              b"0ccollections\nOrderedDict\n)Rh\x07X\x04\x00\x00\x00true\x85R0.")
    with zipfile.ZipFile("memo_call.pt", "w") as z:
        z.writestr("archive/data.pkl", hidden)
        z.writestr("archive/version", "3\n")
    with open("evil.pkl", "wb") as f:
        pickle.dump(Call(os.path.join(WORK, "pwned-pkl")), f, protocol=4)
    with open("plain.pkl", "wb") as f:
        pickle.dump(Plain(), f, protocol=4)
    net = torch.nn.Sequential(torch.nn.LSTM(3, 4))
    torch.save(net.state_dict(), "sd.pt")
    torch.save(net, "whole.pt")


def convert_lines(name):
    rc, out, err = run([CONVERT, name, "-o", "x.rnnd"])
    C.check(rc == 1 and not os.path.exists("x.rnnd"), "rnnd-convert %s: refused" % name)
    return err.splitlines()


class Hints(Case):
    def test_hints(self):
        make_pickles()
        for name in ("evil_sd.pt", "evil_module.pt", "memo_call.pt", "evil.pkl"):
            lines = convert_lines(name)
            C.check(len(lines) == 1 and lines[0] == "rnnd-convert: %s: a pickle that calls "
                    "posix.system (not a PyTorch checkpoint); loading it would run code" % name,
                    "rnnd-convert %s: one line, names the call: %r" % (name, lines))
            rc, out, err = run([RNND_BIN, "inspect", name])
            C.check(rc == 1 and len(err.splitlines()) == 1 and
                    "a pickle that calls posix.system (not a PyTorch checkpoint); loading it "
                    "would run code" in err and "torch.load" not in err and "state_dict" not in err,
                    "rnnd inspect %s: names the call, no Python to run: %r" % (name, err))
        C.check(not any(os.path.exists(os.path.join(WORK, "pwned-" + s))
                        for s in ("sd", "mod", "pkl")), "nothing was unpickled")

        lines = convert_lines("sd.pt")
        C.check(any("torch.load('sd.pt', map_location='cpu', weights_only=True)" in l
                    for l in lines), "rnnd-convert sd.pt: weights_only=True: %r" % lines)
        rc, _, err = run([RNND_BIN, "inspect", "sd.pt"])
        C.check('torch.load("sd.pt", weights_only=True)' in err,
                "rnnd inspect sd.pt: weights_only=True: %r" % err)
        lines = convert_lines("whole.pt")
        C.check(lines and "runs code from the file" in lines[0] and "trust" in lines[0] and
                any("weights_only=False" in l for l in lines),
                "rnnd-convert whole.pt: says loading runs code: %r" % lines)
        rc, _, err = run([RNND_BIN, "inspect", "whole.pt"])
        C.check("runs code from the file" in err and "trust" in err and
                "torch.nn.modules.container.Sequential" in err,
                "rnnd inspect whole.pt: says loading runs code: %r" % err)
        lines = convert_lines("plain.pkl")
        # the class as pickled: __main__.Plain from make check, the test's module under unittest
        C.check(lines and "runs code from the file" in lines[0] and
                "%s.Plain" % Plain.__module__ in lines[0],
                "rnnd-convert plain.pkl: says pickle.load runs code: %r" % lines)


# ---- 3: zip bombs for the Python sniff -----------------------------------------------------

def deflated_pickle(name, chunks):
    with zipfile.ZipFile(name, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            for c in chunks:
                f.write(c)
        z.writestr("archive/version", "3\n")


def sniff_child(name):
    """(status, stderr, peak KiB) of sniff.check on NAME in a fresh interpreter."""
    code = ("import sys; from rnnd_convert import sniff, errors\n"
            "try:\n    sniff.check(sys.argv[1], 'x.rnnd')\n"
            "except errors.ConvertError as e:\n    print(e, file=sys.stderr)\n")
    return peak_kib([PYTHON3, "-c", code, name])


class ZipBombs(Case):
    def test_zip_bombs(self):
        block = b"\x94" * (1 << 20)
        deflated_pickle("memo.pt", [b"\x80\x02"] + [block] * 30 + [b"."])
        t = time.process_time()
        try:
            sniff.check("memo.pt", "x.rnnd")
        except ConvertError:
            pass
        spent = time.process_time() - t
        C.check(spent < 3, "30 million MEMOIZE opcodes: the sniff takes %.1f s CPU (< 3)" % spent)

        size = 100 << 20
        deflated_pickle("str8.pt", [b"\x80\x04\x8d" + struct.pack("<Q", size)] +
                        [b"a" * (1 << 20)] * (size >> 20) + [b"."])
        rc, err, peak = sniff_child("str8.pt")
        C.check(rc == 0 and peak < 64 << 10,
                "a 100 MB string: the sniff peaks at %d KiB (< 64 MiB): %r" % (peak, err))


# ---- 4: JSON header bombs ------------------------------------------------------------------

def json_bomb(size, out, pad):
    n = (size - 8) // 3
    body = b'{"a":[' + b"{}," * n + b'{}]}'
    while (8 + len(body)) % 4 == 0 or len(body) % 8 != pad % 8:
        body += b" "
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body)


class JsonBombs(Case):
    def test_json_bombs(self):
        json_bomb(16 << 20, "mis16.rnnd", 1)
        rc, err, peak = peak_kib([RNND_BIN, "inspect", "mis16.rnnd"])
        C.check(rc == 1 and len(err.splitlines()) == 1,
                "rnnd inspect mis16.rnnd: refused in one line: %r" % err)
        C.check(peak < 64 << 10, "rnnd inspect of a 16 MB JSON header: %d KiB (< 64 MiB)" % peak)
        json_bomb(8 << 20, "bomb8.onnx", 1)
        rc, err, peak = sniff_child("bomb8.onnx")
        C.check(peak < 64 << 10, "rnnd-convert's sniff of an 8 MB JSON header peaks at "
                "%d KiB (< 64 MiB): %r" % (peak, err))


# ---- 5: odd zips and JSON: one line, never "internal error" --------------------------------

def patch_zip(path, flag=None, method=None):
    with open(path, "rb") as f:
        b = bytearray(f.read())
    for sig, fo, mo in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        i = b.find(sig)
        while i >= 0:
            if flag is not None:
                b[i + fo:i + fo + 2] = struct.pack("<H", flag)
            if method is not None:
                b[i + mo:i + mo + 2] = struct.pack("<H", method)
            i = b.find(sig, i + 4)
    with open(path, "wb") as f:
        f.write(b)


class OddFiles(Case):
    def test_odd_files(self):
        for name, kw in (("enc.pt", dict(flag=1)), ("method99.pt", dict(method=99))):
            with zipfile.ZipFile(name, "w") as z:
                z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
            patch_zip(name, **kw)
            rc, _, err = run([CONVERT, name, "-o", "x.rnnd"])
            C.check(rc == 1, "%s: refused" % name)
            one_line(name, err, "rnnd-convert: %s: a zip archive rnnd-convert cannot read: " % name)
        body = b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}"
        body += b" " * (-len(body) % 8)
        with open("deep.safetensors", "wb") as f:
            f.write(struct.pack("<Q", len(body)) + body)
        rc, _, err = run([CONVERT, "deep.safetensors", "-o", "x.rnnd"])
        C.check(rc == 1, "deep.safetensors: refused")
        one_line("deep.safetensors", err, "rnnd-convert: deep.safetensors: ")


def setUpModule():
    unittest.addModuleCleanup(os.chdir, os.getcwd())
    os.chdir(WORK)
    torch.manual_seed(12)


if __name__ == "__main__":
    unittest.main()
