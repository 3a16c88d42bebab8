"""Files that are not .rnnd models (issue 12, items 4 and 5), all made here with torch.

rnnd (item 4): `inspect`, `infer --model`, `serve --model NAME=FILE`, `serve --models DIR` at
start and on reload (SIGHUP) refuse an ONNX export, TorchScript (scripted and traced), a
torch.save checkpoint of a state_dict, of a whole module, in the legacy format, a safetensors
file and a NumPy .npz with one line that names the file, what it is and how to convert it.
The suggested rnnd-convert command and the Python line are run as printed, and the model they
make computes what the torch model does.

rnnd-convert (item 5): a state_dict, whole-module, legacy or dict checkpoint, a safetensors
file and a pickle are named, never "PytorchStreamReader failed locating file constants.pkl",
and the Python lines it prints run (with this test's model class where they say MyModel) and
make the same model. A numpy, onnx or torch that the interpreter cannot import (a module
folder first on PYTHONPATH that raises ModuleNotFoundError) is one line naming the Debian
package, a non-zero exit, no traceback and no output file.

Prints what it checked. Each group is a test (FileType.test_*), runnable alone, by the file's
path (`python3 tests/test_filetype.py FileType.test_models_folder`): the messages it expects
name the model class __main__.Net, as a script defines it.
"""
import contextlib
import io
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import struct
import subprocess
import textwrap
import time
import unittest
import warnings

import numpy as np
import torch

from daemon_util import PYTHON3, RNND_BIN, Case, Daemon, tmpdir  # first: it finds tools/
from daemon_util import RUNNING as C
import rnnd_convert
from rnnd_convert import cli

warnings.filterwarnings("ignore")
shutil.rmtree(tmpdir("filetype"))
WORK = tmpdir("filetype")
SRCDIR = os.environ["RNND_SRCDIR"]
CHARLM = os.path.join(SRCDIR, "models", "charlm.rnnd")
# the launcher make builds next to rnnd; it finds the package through PYTHONPATH (= tools)
CONVERT = os.path.join(os.path.dirname(RNND_BIN), "rnnd-convert")
TOKENS = [1, 5, 2, 7, 3]


class Net(torch.nn.Module):
    """At module level, so torch.save(model) pickles it as __main__.Net."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 4)
        self.rnn = torch.nn.LSTM(4, 6, batch_first=True)
        self.head = torch.nn.Linear(6, 11)

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.head(y)


def make_files(net):
    """Every kind of file, in WORK, by the name the tests use."""
    x = torch.tensor([TOKENS])
    torch.onnx.export(net, (x,), "model.onnx", input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b", 1: "t"}})
    torch.jit.script(net).save("script.pt")
    torch.jit.trace(net, (x,)).save("traced.pt")
    torch.save(net.state_dict(), "sd.pt")
    torch.save(net, "whole.pt")
    torch.save(net.state_dict(), "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "model": net.state_dict()}, "train.pt")
    with open("plain.pkl", "wb") as f:
        pickle.dump({"a": 1}, f, protocol=4)
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    np.savez("weights.npz", **sd)
    # safetensors as HuggingFace writes it: {"format": "pt"} metadata, no architecture
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for k, v in sd.items():
        b = np.ascontiguousarray(v, np.float32).tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape),
                     "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open("weights.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def convert_inproc(args):
    """(status, stderr) of rnnd-convert ARGS, run in this process: what the launcher runs,
    without importing torch again."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(list(args))
    return rc, err.getvalue()


def run(cmd, env=None, stdin=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, input=stdin)
    return p.returncode, p.stdout, p.stderr


def outputs_match(path, net, what):
    """PATH, served by `rnnd infer`, computes what NET does."""
    rc, out, err = run([RNND_BIN, "infer", "--model", path],
                       stdin=json.dumps({"inputs": [TOKENS]}))
    if not C.check(rc == 0, "%s: rnnd infer loads %s: %s" % (what, path, err.strip())):
        return
    got = np.array(json.loads(out)["outputs"][0])
    with torch.no_grad():
        want = net(torch.tensor([TOKENS]))[0].numpy()
    C.check(got.shape == want.shape and np.allclose(got, want, atol=1e-5, rtol=1e-4),
            "%s: %s computes what the torch model does (max diff %s)"
            % (what, path, np.max(np.abs(got - want)) if got.shape == want.shape else "shape"))


# ---- item 4: rnnd names the file ---------------------------------------------------------

# file -> what rnnd says it is, and how the advice is checked: "command" runs the printed
# rnnd-convert command, "python" runs the printed Python line
RNND_CASES = {
    "model.onnx": ("an ONNX model, not an .rnnd file; convert it: "
                   "rnnd-convert model.onnx -o model.rnnd", "command"),
    "script.pt": ("a TorchScript model (torch.jit.save), not an .rnnd file; loading it runs "
                  "code from the file, so if you trust it, convert it: "
                  "rnnd-convert script.pt -o script.rnnd", "command"),
    "traced.pt": ("a TorchScript model (torch.jit.save)", "command"),
    "sd.pt": ("a PyTorch checkpoint of a state_dict (torch.save(model.state_dict())), not an "
              ".rnnd file", "python"),
    "whole.pt": ("a PyTorch checkpoint of a whole module (torch.save(model), class "
                 "__main__.Net), not an .rnnd file", "python"),
    "legacy.pt": ("a PyTorch checkpoint (torch.save, format before PyTorch 1.6)", None),
    "train.pt": ("a PyTorch checkpoint (torch.save), not an .rnnd file", None),
    "plain.pkl": ("a Python pickle, not an .rnnd file", None),
    "weights.safetensors": ("a safetensors file without rnnd's metadata (weights, no "
                            "architecture; format \"pt\"), not an .rnnd file; in Python: "
                            "model.load_state_dict(safetensors.torch.load_file("
                            "\"weights.safetensors\")); rnnd_convert.from_module(model, "
                            "\"weights.rnnd\")", None),
    "weights.npz": ("a NumPy .npz archive, not an .rnnd file; as the weights of a native "
                    "spec: rnnd-convert SPEC.json --weights weights.npz -o weights.rnnd", None),
}


def one_line(what, text, prefix, needle):
    lines = text.splitlines()
    ok = len(lines) == 1 and lines[0].startswith(prefix) and needle in lines[0]
    C.check(ok, "%s: one line starting %r holding %r: got %r" % (what, prefix, needle, text))
    return lines[0] if lines else ""


def follow_advice(name, line, how, net):
    """Do what LINE says, then check the model it makes."""
    out = os.path.splitext(name)[0] + ".rnnd"
    marker = "convert it: " if how == "command" else "in Python: "
    if not C.check(marker in line, "%s: the message holds %r" % (name, marker)):
        return
    if how == "command":
        cmd = shlex.split(line.split("convert it: ", 1)[1])
        C.eq(cmd[:2] + cmd[-2:], ["rnnd-convert", name, "-o", out], "%s: the command" % name)
        rc, err = convert_inproc(cmd[1:])
        C.check(rc == 0, "%s: the printed command converts it: %s" % (name, err.strip()))
    else:
        code = line.split("in Python: ", 1)[1].rsplit(" (docs/convert.md)", 1)[0]
        C.check(out in code, "%s: the Python writes %s: %s" % (name, out, code))
        exec(code, {"torch": torch, "rnnd_convert": rnnd_convert, "model": Net()})
    outputs_match(out, net, "%s, converted as advised" % name)


def check_rnnd_commands(net):
    request = os.path.join(WORK, "request.json")
    with open(request, "w") as f:
        json.dump({"inputs": [TOKENS]}, f)
    for name, (needle, how) in RNND_CASES.items():
        prefix = name + ": file: "
        rc, out, err = run([RNND_BIN, "inspect", name])
        C.check(rc == 1 and out == "", "inspect %s: exit 1 (got %d)" % (name, rc))
        line = one_line("inspect " + name, err, prefix, needle)
        C.check("header_length" not in err, "inspect %s: no header_length" % name)

        rc, out, err = run([RNND_BIN, "infer", "--model", name, "--input", request])
        try:
            e = json.loads(err)["error"]
        except (ValueError, KeyError, TypeError):
            e = {}
        C.check(rc == 1 and out == "" and len(err.splitlines()) == 1 and
                e.get("code") == "model_error" and e.get("message") == line,
                "infer --model %s: one JSON line, model_error, the same message: %r"
                % (name, err))

        rc, _, err = run([RNND_BIN, "serve", "--listen", "127.0.0.1:0", "--model",
                          "x=" + name])
        last = (err.strip().splitlines() or [""])[-1]
        C.check(rc != 0 and "event=startup" in last and line.replace('"', '\\"') in last,
                "serve --model x=%s: does not start, logs the message: %r" % (name, last))
        if how:
            follow_advice(name, line, how, net)


def check_models_folder(net):
    """A foreign file named *.rnnd in the models folder, at start and on reload."""
    models = os.path.join(WORK, "models")
    shutil.rmtree(models, ignore_errors=True)
    os.makedirs(models)
    shutil.copyfile(CHARLM, os.path.join(models, "a.rnnd"))
    shutil.copyfile("model.onnx", os.path.join(models, "b.rnnd"))
    rc, _, err = run([RNND_BIN, "serve", "--listen", "127.0.0.1:0", "--models", models])
    last = (err.strip().splitlines() or [""])[-1]
    bad = os.path.join(models, "b.rnnd")
    cmd = "rnnd-convert %s -o %s" % (bad, bad)
    C.check(rc != 0 and bad + ": file: an ONNX model, not an .rnnd file; convert it: " + cmd
            in last, "serve --models with an ONNX file as b.rnnd: %r" % last)
    # the advice converts the file in place
    rc, err = convert_inproc(shlex.split(cmd)[1:])
    C.check(rc == 0, "converting b.rnnd onto itself: %s" % err.strip())
    outputs_match(bad, net, "b.rnnd converted in place")

    with Daemon({}, "--models", models) as d:
        status, _, body = d.request("GET", "/v1/models")
        C.eq(sorted(m["name"] for m in body["models"]), ["a", "b"], "both served")
        shutil.copyfile("sd.pt", os.path.join(models, "c.rnnd"))
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("event=reloaded" in l for l in d.log):
            time.sleep(0.05)
        C.check(any("c.rnnd: file: a PyTorch checkpoint of a state_dict" in l for l in d.log),
                "the reload names c.rnnd a state_dict checkpoint: %s" % d.log[-3:])
        status, _, body = d.request("GET", "/v1/models")
        C.eq(sorted(m["name"] for m in body["models"]), ["a", "b"], "c is not served")
        C.eq(d.stop()[0], 0, "exit status")


# ---- item 5: rnnd-convert and checkpoints --------------------------------------------------

CONVERT_CASES = {
    "sd.pt": "a PyTorch checkpoint of a state_dict (torch.save(model.state_dict())): weights "
             "without the model",
    "whole.pt": "a PyTorch checkpoint of a whole module (torch.save(model), class "
                "__main__.Net), not TorchScript; loading it runs code from the file, so only "
                "if you trust it, in Python, where the script that loads it defines or imports "
                "Net",
    "legacy.pt": "a PyTorch checkpoint of a state_dict (torch.save(model.state_dict()), in the "
                 "format before PyTorch 1.6)",
    "train.pt": "a PyTorch checkpoint of a dict (torch.save): a state_dict, or a training "
                "checkpoint holding one",
    "weights.safetensors": "a safetensors file of weights without rnnd's metadata (no "
                           "architecture; format 'pt')",
}


def check_convert_checkpoints(net):
    for name, needle in CONVERT_CASES.items():
        out = "out-" + os.path.splitext(name)[0] + ".rnnd"
        rc, stdout, err = run([CONVERT, name, "-o", out])
        lines = err.splitlines()
        C.check(rc == 1 and lines and lines[0].startswith("rnnd-convert: %s: " % name) and
                needle in lines[0], "rnnd-convert %s: says what it is: %r" % (name, err))
        C.check("PytorchStreamReader" not in err and "Traceback" not in err,
                "rnnd-convert %s: no torch.jit.load error, no traceback" % name)
        C.check(not os.path.exists(out), "rnnd-convert %s: nothing written" % name)
        code = textwrap.dedent("\n".join(l for l in lines[1:] if l.startswith("    ")))
        alt = [l for l in lines[1:] if l.startswith("  or, for rnnd-convert: ")]
        if not C.check(len(lines) >= 4 and code and len(alt) == 1,
                       "rnnd-convert %s: the Python lines, and the TorchScript way: %r"
                       % (name, err)):
            continue
        if name == "weights.safetensors":
            C.check("model.load_state_dict(load_file('weights.safetensors'))" in code,
                    "the safetensors lines load the file: %r" % code)
            continue        # the safetensors module is not a dependency of the suite
        # run them as a user would: their model class where they say MyModel; for a
        # training checkpoint, the key that holds the state_dict, as the comment says
        code = code.replace("MyModel()", "Net()")
        if name == "train.pt":
            code = code.replace("model.load_state_dict(state)", "model.load_state_dict("
                                "state['model'])")
        ns = {"Net": Net}    # the user's own class, in their script
        try:
            exec(code, ns)
        except Exception as e:
            C.check(False, "rnnd-convert %s: the printed Python runs: %s: %s\n%s"
                    % (name, type(e).__name__, e, code))
            continue
        outputs_match(out, net, "%s, through the printed from_module lines" % name)
        # the other way: save as TorchScript, then the printed rnnd-convert command
        m = re.match(r"  or, for rnnd-convert: (.*), then (rnnd-convert .*)$", alt[0])
        if not C.check(m is not None, "the TorchScript line: %r" % alt[0]):
            continue
        os.unlink(out)
        exec(m.group(1), ns)
        rc, err = convert_inproc(shlex.split(m.group(2))[1:])
        C.check(rc == 0, "%s: the printed rnnd-convert command converts: %s" % (name, err))
        outputs_match(out, net, "%s, through TorchScript as printed" % name)

    rc, _, err = run([CONVERT, "plain.pkl", "-o", "x.rnnd"])
    C.check(rc == 1 and err.startswith("rnnd-convert: plain.pkl: a Python pickle, not a model "
                                       "file") and len(err.splitlines()) == 1,
            "a plain pickle: one line: %r" % err)
    rc, _, err = run([CONVERT, "weights.npz", "-o", "x.rnnd"])
    C.check(rc == 1 and err == "rnnd-convert: weights.npz: a NumPy .npz archive of tensors, not "
            "a model; give it as the weights of a native spec (docs/convert.md): rnnd-convert "
            "SPEC.json --weights weights.npz -o OUT.rnnd\n",
            "a NumPy .npz: one line naming the native spec: %r" % err)


def fake_missing(module):
    """A folder holding a MODULE that fails to import as a missing one does."""
    d = os.path.join(WORK, "without-" + module)
    os.makedirs(os.path.join(d, module), exist_ok=True)
    with open(os.path.join(d, module, "__init__.py"), "w") as f:
        f.write("raise ModuleNotFoundError(%r, name=%r)\n" % ("No module named " + module,
                                                              module))
    return d


def check_missing_modules():
    tools = os.path.join(SRCDIR, "tools")
    for module, name in (("numpy", "model.onnx"), ("onnx", "model.onnx"),
                         ("torch", "script.pt"), ("numpy", "script.pt")):
        env = dict(os.environ, PYTHONPATH=fake_missing(module) + os.pathsep + tools)
        for how, cmd in (("python3 -m rnnd_convert", [PYTHON3, "-m", "rnnd_convert"]),
                         ("the launcher", [CONVERT])):
            if os.path.exists("missing.rnnd"):
                os.unlink("missing.rnnd")
            rc, _, err = run(cmd + [name, "-o", "missing.rnnd"], env=env)
            # ", which INTERPRETER cannot import" names the python3 that ran
            ok = (rc == 1 and len(err.splitlines()) == 1 and "Traceback" not in err and
                  err.startswith("rnnd-convert: %s: needs the Python module %s, which "
                                 % (name, module)) and
                  err.endswith(" cannot import: install the Debian package python3-%s and "
                               "run it with Debian's /usr/bin/python3 (the rnnd-convert "
                               "launcher does)\n" % module))
            C.check(ok, "%s without %s, on %s: one line naming python3-%s: %r"
                    % (how, module, name, module, err))
            C.check(not os.path.exists("missing.rnnd"), "without %s: nothing written" % module)


class FileType(Case):
    """The files are made once, in WORK (the tests' working folder), from one seeded Net."""

    @classmethod
    def setUpClass(cls):
        cls.addClassCleanup(os.chdir, os.getcwd())
        os.chdir(WORK)
        torch.manual_seed(12)
        cls.net = Net().eval()
        make_files(cls.net)

    def test_rnnd_commands(self):
        check_rnnd_commands(self.net)

    def test_models_folder(self):
        check_models_folder(self.net)

    def test_convert_checkpoints(self):
        check_convert_checkpoints(self.net)

    def test_missing_modules(self):
        check_missing_modules()


if __name__ == "__main__":
    unittest.main()
