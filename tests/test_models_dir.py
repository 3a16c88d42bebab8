"""The models folder is the only place model files come from (issue 7, Security): a file in
it that is a symbolic link leading out of the folder is refused, at start (the daemon does
not start, and says which file and why) and on reload (reported, not served), while a link
to another file of the folder (a name without '/') is served. A FIFO named *.rnnd is refused
without blocking the reload (issue 13.6; the race of swapping a file for a link is
tests/check_registry.c). Settings that name a file (`--model N=FILE`)
are the operator's own choice and are not restricted.
An empty models folder (issue 12): the daemon starts, logs a warning naming the folder and the
pattern it looked for, and /readyz answers 503 no_models until a reload finds a model; a
reload that empties the folder again warns again and makes /readyz 503 again.
A file of another format there (issue 14, user trial 6: *.onnx, *.pt, *.pth, *.ptl,
*.safetensors, *.npz, *.ckpt) is named in a warning, event=models_not_rnnd, at start and on
each reload, by its name only.
Each check is a unittest case; a failing case fails the run.
"""
import os
import shutil
import signal
import subprocess
import time
import unittest

from daemon_util import Case, Daemon, RNND_BIN, tmpdir

WORK = tmpdir("models-dir")
MODELS = os.path.join(WORK, "models")
OUTSIDE = os.path.join(WORK, "outside")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")


def reset():
    for d in (MODELS, OUTSIDE):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    shutil.copyfile(CHARLM, os.path.join(MODELS, "a.rnnd"))
    shutil.copyfile(CHARLM, os.path.join(OUTSIDE, "secret.rnnd"))


def served(d):
    status, _, body = d.request("GET", "/v1/models")
    assert status == 200, status
    return sorted(m["name"] for m in body["models"])


def reload_and_wait(d):
    """SIGHUP, then wait for this reload's event=reloaded."""
    before = sum("event=reloaded" in l for l in d.log)
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sum("event=reloaded" in l for l in d.log) > before:
            return True
        time.sleep(0.05)
    return False


def empty_warnings(d):
    return [l for l in d.log if "level=warn" in l and "event=no_models" in l]


class ModelsDir(Case):
    def test_empty_folder(self):
        shutil.rmtree(MODELS, ignore_errors=True)
        os.makedirs(MODELS)
        with open(os.path.join(MODELS, "notes.txt"), "w") as f:
            f.write("not a model\n")       # a file that does not match the pattern
        with Daemon({}, "--models", MODELS) as d:
            warned = empty_warnings(d)
            self.check(len(warned) == 1 and 'dir="%s"' % MODELS in warned[0]
                       and 'pattern="*.rnnd"' in warned[0],
                       "start: one warning naming the folder and the pattern: %r" % warned)
            st, hdrs, body = d.request("GET", "/readyz")
            self.error((st, hdrs, body), 503, "no_models", "/readyz with no model")
            self.check("retry-after" in hdrs, "/readyz 503 carries Retry-After")
            self.eq(d.request("GET", "/healthz")[0], 200, "/healthz is 200 all the same")

            shutil.copyfile(CHARLM, os.path.join(MODELS, "a.rnnd"))
            self.check(reload_and_wait(d), "reload after adding a model")
            st, _, body = d.request("GET", "/readyz")
            self.eq((st, body), (200, {"status": "ready", "models": 1}),
                    "/readyz once a model loaded")
            self.eq(len(empty_warnings(d)), 1, "a reload that finds a model does not warn")

            os.remove(os.path.join(MODELS, "a.rnnd"))
            self.check(reload_and_wait(d), "reload after removing it")
            self.error(d.request("GET", "/readyz"), 503, "no_models",
                       "/readyz after the folder emptied")
            warned = empty_warnings(d)
            self.check(len(warned) == 2 and 'dir="%s"' % MODELS in warned[1],
                       "the reload that empties the folder warns again: %r" % warned)
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")

    def test_links(self):
        # a link inside the folder is fine; a relative link that climbs out is not
        reset()
        os.symlink("a.rnnd", os.path.join(MODELS, "alias.rnnd"))
        with Daemon({}, "--models", MODELS) as d:
            self.eq(served(d), ["a", "alias"], "a link to a file inside the folder is served")
            d.stop()

        reset()
        os.symlink("../outside/secret.rnnd", os.path.join(MODELS, "b.rnnd"))
        p = subprocess.run([RNND_BIN, "serve", "--listen", "127.0.0.1:0", "--models", MODELS],
                           capture_output=True, text=True, timeout=60)
        last = (p.stderr.strip().splitlines() or [""])[-1]
        self.check(p.returncode != 0,
                   "start with an escaping link fails (status %d)" % p.returncode)
        self.check("b.rnnd" in last and "not a file of the models folder itself" in last
                   and "secret.rnnd" in last, "the log names the file, the reason and the target: "
                   + last)

        # absolute link to an outside file, added while serving, then SIGHUP
        reset()
        with Daemon({}, "--models", MODELS) as d:
            os.symlink(os.path.join(OUTSIDE, "secret.rnnd"), os.path.join(MODELS, "c.rnnd"))
            d.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any("event=reloaded" in l for l in d.log):
                time.sleep(0.05)
            self.check(any("event=reloaded" in l for l in d.log), "the reload finished")
            self.check(any("c.rnnd" in l and "not a file of the models folder itself" in l
                           for l in d.log), "the reload reports the escaping link")
            self.eq(served(d), ["a"], "the escaping link is not served after the reload")
            status, _, body = d.request("POST", "/v1/models/c/infer", {"inputs": [[1]]})
            self.eq(status, 404, "infer on it: 404")
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")

        # a FIFO named *.rnnd (issue 13.6): refused at once, the reload does not wait for a
        # writer, and SIGTERM is still obeyed
        reset()
        with Daemon({}, "--models", MODELS) as d:
            os.mkfifo(os.path.join(MODELS, "f.rnnd"))
            self.check(reload_and_wait(d), "a reload with a FIFO in the folder finishes")
            self.check(any("f.rnnd" in l and "not a regular file" in l for l in d.log),
                       "the reload reports the FIFO")
            self.eq(served(d), ["a"], "the FIFO is not served")
            rc, _ = d.stop()
            self.eq(rc, 0, "SIGTERM after that reload: exit status")

        # the operator may name any file explicitly
        with Daemon({"x": os.path.join(OUTSIDE, "secret.rnnd")}) as d:
            self.eq(served(d), ["x"], "--model NAME=FILE outside any folder is served")
            d.stop()

    def test_other_formats(self):
        """Files of other formats in the models folder (issue 14, user trial 6: a .onnx
        copied there was skipped without a word): one warning line per file, naming it, at
        start and again on each reload; names only, so a FIFO named *.onnx does not block;
        .rnnd files, hidden files and other names get no line."""
        reset()
        others = ["Net.ONNX", "a.pt", "b.pth", "c.ptl", "d.safetensors", "e.npz", "f.ckpt",
                  "model.onnx"]
        for n in others[:-1] + [".hidden.onnx", "notes.txt", "onnx", "x.onnx.txt"]:
            with open(os.path.join(MODELS, n), "wb") as f:
                f.write(b"\x08\x07\x12\x04not a model")
        os.mkfifo(os.path.join(MODELS, "model.onnx"))

        def lines(d):
            return [l for l in d.log if "event=models_not_rnnd" in l]

        def named(ls):
            return sorted(l.split(" file=")[1].split(" ")[0].strip('"') for l in ls
                          if " file=" in l)

        with Daemon({}, "--models", MODELS) as d:
            first = lines(d)
            self.eq(named(first), sorted(others), "start: one line per file of another format")
            self.check(all("level=warn" in l and 'dir="%s"' % MODELS in l
                           and "rnnd-convert" in l for l in first),
                       "warnings naming the folder and rnnd-convert: %r" % first)
            self.check(any("Net.ONNX" in l and "an ONNX model" in l for l in first),
                       "the line says what the file is: %r" % first)
            self.eq(served(d), ["a"], "the .rnnd file is served")
            with open(os.path.join(MODELS, "g.pt"), "wb") as f:
                f.write(b"PK")
            self.check(reload_and_wait(d), "the reload finished")
            again = lines(d)[len(first):]
            self.eq(named(again), sorted(others + ["g.pt"]), "reload: one line per file again")
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")

        # many: the first 32 by name, then one line counting the rest
        reset()
        for i in range(40):
            open(os.path.join(MODELS, "w%02d.npz" % i), "wb").close()
        with Daemon({}, "--models", MODELS) as d:
            ls = lines(d)
            self.eq(named(ls), ["w%02d.npz" % i for i in range(32)], "40 files: the first 32")
            self.check(len(ls) == 33 and "more=8" in ls[-1], "then one line of 8 more: %r"
                       % ls[-1:])
            d.stop()


if __name__ == "__main__":
    unittest.main()
