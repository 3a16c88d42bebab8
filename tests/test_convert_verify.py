#!/usr/bin/env python3
"""Verification at conversion (issue 14 item 2, docs/convert.md "Verification").

rnnd-convert runs the source and the file it wrote on the same random inputs and refuses,
writing nothing, when they differ by more than 1e-5 * max(1, |source|):
- a correct conversion (from_module, TorchScript, ONNX) records its figures in
  __metadata__.verification, outside the digest;
- a broken converter path (a weight perturbed inside the importer, for torch and ONNX)
  exits 1 with the error and where, and leaves no file, not even a temporary one; models
  the converter used to write wrongly (relu after the head via from_module, a scaled output
  in TorchScript, a mean over steps after the head) are refused by the analysis of
  forward() first;
- --no-verify / verify=False write them anyway, without a record;
- `rnnd inspect` prints a `verified:` line and --json a `verification` object; the loader
  refuses a malformed record, naming the key.

Each topic is a test class, runnable alone (README.md, "Developers"); Correct, Record and
Loader share the first conversions (converted(), made once per run).

Env: PYTHON3, PYTHONPATH (= tools), RNND_BIN, RNND_TEST_TMP.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import unittest
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from daemon_util import RUNNING, Case, main_inproc  # first: it finds tools/ for rnnd_convert
import rnnd_convert
from rnnd_convert import onnx_import, torch_import, verify
from rnnd_convert.arch import ConvertError

warnings.filterwarnings("ignore")
RNND = os.environ.get("RNND_BIN", "rnnd")
TMP = os.path.join(os.environ.get("RNND_TEST_TMP") or "/tmp/rnnd-test-tmp", "convert_verify")
shutil.rmtree(TMP, ignore_errors=True)
os.makedirs(TMP)

# a check of the test running now (daemon_util.RUNNING): counted, and a failure of that test
check = RUNNING.check


def tmp(name):
    return os.path.join(TMP, name)


def metadata(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])["__metadata__"]


def inspect(*args):
    p = subprocess.run([RNND, "inspect"] + list(args), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def leftovers():
    """Temporary files the converter left in TMP."""
    return [n for n in os.listdir(TMP) if n.startswith(".rnnd-")]


class Net(nn.Module):
    """Embedding -> LSTM -> Linear; the subclasses add an operation after the head that
    rnnd's chain cannot express (the old converter dropped it silently). Subclasses, not a
    flag, so that a scripted graph holds only the operation of its own class (and base(), as
    TorchScript has no super())."""

    def __init__(self, batch_first=True):
        super().__init__()
        self.emb = nn.Embedding(23, 6)
        self.rnn = nn.LSTM(6, 10, num_layers=2, batch_first=batch_first)
        self.fc = nn.Linear(10, 5)

    def base(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.fc(y)

    def forward(self, x):
        return self.base(x)


class Exp(Net):
    def forward(self, x):
        return torch.exp(self.base(x))


class Scale(Net):
    def forward(self, x):
        return self.base(x) * 2.0


class Mean(Net):
    def forward(self, x):
        return self.base(x).mean(dim=1)


def check_figures(path, source, what):
    if not os.path.exists(path):
        check(False, "%s: written" % what)
        return None
    meta = metadata(path)
    v = json.loads(meta.get("verification", "null") or "null")
    check(isinstance(v, dict), "%s: __metadata__.verification written" % what)
    if not isinstance(v, dict):
        return None
    check(v["source"] == source and v["tolerance"] == 1e-5 and v["lengths"] == [1, 7, 19, 64] and
          v["batch"] == 3, "%s: source %s, tolerance, lengths, batch: %r" % (what, source, v))
    check(0 <= v["max_rel_error"] <= 1e-5 and 0 <= v["max_abs_error"] < 1e-4,
          "%s: the recorded errors are within the tolerance: %r" % (what, v))
    return v


_CONVERTED = {}


def converted():
    """The first conversions of test_correct, from its seed and in its order (from_module,
    scripted time-major, traced, ONNX export): made once, as Record and Loader read the ONNX
    export and its .rnnd too. {net, m (from_module's model), tm, tr, onnx ((rc, stderr) of
    each TorchScript and ONNX conversion)}."""
    if not _CONVERTED:
        torch.manual_seed(1)
        net = Net()
        m = rnnd_convert.from_module(net, tmp("mod.rnnd"))
        # TorchScript, time-major (batch_first=False): the check follows the module's layout
        net2 = Net(batch_first=False)
        torch.jit.script(net2).save(tmp("tm.pt"))
        tm = main_inproc(tmp("tm.pt"), "-o", tmp("tm.rnnd"))
        # traced: the traced graph keeps batch_first as the recurrent operator's argument
        x = torch.randint(0, 23, (3, 5))
        torch.jit.trace(Net().eval(), (x,)).save(tmp("tr.pt"))
        tr = main_inproc(tmp("tr.pt"), "-o", tmp("tr.rnnd"))
        # ONNX, run by onnx_run
        net3 = Net().eval()
        torch.onnx.export(net3, (x,), tmp("m.onnx"), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b", 1: "t"}}, opset_version=14)
        onnx_conv = main_inproc(tmp("m.onnx"), "-o", tmp("onnx.rnnd"))
        _CONVERTED.update(net=net, m=m, tm=tm, tr=tr, onnx=onnx_conv)
    return _CONVERTED


class Correct(Case):
    def test_correct(self):
        c = converted()
        check(c["m"].head_W is not None, "from_module converts the plain model")
        check_figures(tmp("mod.rnnd"), "module", "from_module")
        check(c["net"].training, "from_module leaves the module's training flag as it was")
        rc, err = c["tm"]
        check(rc == 0, "scripted time-major model converts: %s" % err)
        check_figures(tmp("tm.rnnd"), "torchscript", "torchscript time-major")
        rc, err = c["tr"]
        check(rc == 0, "traced model converts: %s" % err)
        check_figures(tmp("tr.rnnd"), "torchscript", "traced")
        rc, err = c["onnx"]
        check(rc == 0, "ONNX export converts: %s" % err)
        check_figures(tmp("onnx.rnnd"), "onnx", "onnx")

        # the record is outside the digest: the same model without it has the same digest
        rc, err = main_inproc(tmp("m.onnx"), "-o", tmp("onnx_nv.rnnd"), "--no-verify")
        check(rc == 0 and "verification" not in metadata(tmp("onnx_nv.rnnd")),
              "--no-verify writes no record: %s" % err)
        r1, o1, e1 = inspect("--json", tmp("onnx.rnnd"))
        r2, o2, e2 = inspect("--json", tmp("onnx_nv.rnnd"))
        check(r1 == 0 and r2 == 0, "rnnd inspect reads both: %s %s" % (e1, e2))
        if r1 == 0 and r2 == 0:
            j1, j2 = json.loads(o1), json.loads(o2)
            check(j1["digest"] == j2["digest"] and j1["file_digest"] != j2["file_digest"],
                  "the verification record changes the file digest, not the model digest")
            rec = json.loads(metadata(tmp("onnx.rnnd"))["verification"])
            v = j1["verification"]
            check(v is not None and v["source"] == "onnx" and v["lengths"] == [1, 7, 19, 64] and
                  v["batch"] == 3 and v["tolerance"] == 1e-5 and
                  abs(v["max_rel_error"] - rec["max_rel_error"])
                  <= 1e-9 * (1 + rec["max_rel_error"]),
                  "inspect --json: the verification object: %r" % (v,))
            check(j2["verification"] is None, "inspect --json: verification null without a record")
        r, out, _ = inspect(tmp("onnx.rnnd"))
        line = [l for l in out.splitlines() if l.startswith("verified:")]
        check(len(line) == 1 and "yes, against the onnx source" in line[0] and
              "max rel error" in line[0] and "tolerance 1e-05" in line[0] and
              "lengths 1, 7, 19, 64, batch 3" in line[0],
              "inspect prints the verified line: %r" % line)
        r, out, _ = inspect(tmp("onnx_nv.rnnd"))
        check("verified:    no (" in out, "inspect says an unverified file is unverified")

        # a float64 module is fed float64 inputs (and float64 zero states)
        rnnd_convert.from_module(nn.GRU(3, 5, batch_first=True).double(), tmp("f64.rnnd"))
        check_figures(tmp("f64.rnnd"), "module", "a float64 nn.GRU")

        # bf16 weights: the check runs on the float32 reading, then the matrices are rounded
        rnnd_convert.from_module(Net(), tmp("bf16.rnnd"), weights="bf16")
        v = check_figures(tmp("bf16.rnnd"), "module", "from_module bf16")
        check(v is not None and v.get("weights_checked") == "f32",
              "a bf16 file records that float32 weights were checked")
        check(not leftovers(), "no temporary files left after successful conversions: %s"
              % leftovers())


def expect_refusal(what, rc_err, out, needles):
    rc, err = rc_err
    check(rc == 1, "%s: exit 1 (got %s): %s" % (what, rc, err))
    check(all(n in err for n in needles), "%s: message names %s: %r" % (what, needles, err))
    check(not os.path.exists(out), "%s: no output file" % what)
    check(not leftovers(), "%s: no temporary file left: %s" % (what, leftovers()))


def api(fn):
    """(1, message) when FN raises ConvertError, else (0, '')."""
    try:
        fn()
    except ConvertError as e:
        return 1, str(e)
    return 0, ""


class Refused(Case):
    def test_refused(self):
        torch.manual_seed(2)
        figures = ("verification failed", "max abs error", "max rel error", "at length",
                   "batch row", "step", "output")
        # models the old converter wrote silently wrong (issue 14) are now refused before the
        # check, by the analysis of forward() (torch_graph.py), naming the operator
        out = tmp("exp.rnnd")
        expect_refusal("from_module exp after the head",
                       api(lambda: rnnd_convert.from_module(Exp(), out)), out,
                       ("aten::exp", "test_convert_verify.py"))
        torch.jit.script(Scale()).save(tmp("scale.pt"))
        out = tmp("scale.rnnd")
        expect_refusal("TorchScript y * 2", main_inproc(tmp("scale.pt"), "-o", out), out,
                       ("rnnd-convert: ", "aten::mul"))
        torch.jit.script(Mean()).save(tmp("mean.pt"))
        out = tmp("mean.rnnd")
        expect_refusal("TorchScript mean over steps", main_inproc(tmp("mean.pt"), "-o", out), out,
                       ("aten::mean", "pools"))

        # a source with one output per sequence, not per step
        m = torch_import.model_from_module(Net())
        try:
            verify.verify(m, lambda x: np.zeros((x.shape[0], 5) if x.shape[1] > 1 else
                                                (x.shape[0], 1, 5)), "module", tmp("pool.rnnd"))
            check(False, "one output per sequence is refused")
        except ConvertError as e:
            check("the source gives outputs of shape [3, 5] for 3 sequences of 7 steps, the "
                  "converted model [3, 7, 5]" in str(e), "one output per sequence: %s" % e)
        check(not leftovers(), "no temporary file after a failed check")

        # a module whose forward() cannot run on one input: the error, and the way out
        class NoForward(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn, self.fc = nn.GRU(3, 4), nn.Linear(4, 2)
        out = tmp("nofwd.rnnd")
        expect_refusal("a module without forward()",
                       api(lambda: rnnd_convert.from_module(NoForward(), out)), out,
                       ("running the source's forward() failed", "NotImplementedError",
                        "verify=False"))

        # a broken importer: one weight perturbed while reading the torch module
        orig = torch_import._recurrent_layers

        def broken(*a, **kw):
            layers, n = orig(*a, **kw)
            layers[0].weights[0]["W"][0, 0] += 0.05
            return layers, n
        torch_import._recurrent_layers = broken
        try:
            out = tmp("broken_torch.rnnd")
            expect_refusal("perturbed weight (from_module)",
                           api(lambda: rnnd_convert.from_module(Net(), out)), out, figures)
            torch.jit.script(Net()).save(tmp("ok.pt"))
            out = tmp("broken_ts.rnnd")
            expect_refusal("perturbed weight (TorchScript)", main_inproc(tmp("ok.pt"), "-o", out),
                           out, figures + ("rnnd-convert: ", "--no-verify"))
            # --no-verify / verify=False write it anyway, without a record
            rc, err = main_inproc(tmp("ok.pt"), "-o", out, "--no-verify")
            check(rc == 0 and os.path.exists(out) and "verification" not in metadata(out),
                  "--no-verify writes it, without a record: %s" % err)
            r, o, _ = inspect(out)
            check(r == 0 and "verified:    no" in o,
                  "inspect: the --no-verify file is not verified")
            out = tmp("broken_mod.rnnd")
            rnnd_convert.from_module(Net(), out, verify=False)
            check(os.path.exists(out) and "verification" not in metadata(out),
                  "verify=False writes it, without a record")
        finally:
            torch_import._recurrent_layers = orig

        # a broken ONNX importer: the head's bias shifted
        orig_finish = onnx_import.Importer.finish

        def broken_finish(self):
            m = orig_finish(self)
            m.head_b = m.head_b + np.float32(0.01)
            return m
        onnx_import.Importer.finish = broken_finish
        try:
            x = torch.randint(0, 23, (3, 5))
            torch.onnx.export(Net().eval(), (x,), tmp("b.onnx"), input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "b", 1: "t"}},
                              opset_version=14)
            out = tmp("broken_onnx.rnnd")
            expect_refusal("shifted head bias (ONNX)", main_inproc(tmp("b.onnx"), "-o", out), out,
                           figures + ("onnx source",))
        finally:
            onnx_import.Importer.finish = orig_finish

        # the tolerance is relative above 1: an error of 0.5e-5 * |src| passes where |src| > 1
        check(verify.TOLERANCE == 1e-5, "the documented tolerance")


class Spin(nn.Module):
    """forward() never returns (issue 14, adversary 11): it passes the analysis, and only
    running it shows it."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        n = 0
        while n >= 0:
            n += 1
        y, _ = self.lstm(x)
        return self.fc(y), n


class TimeLimit(Case):
    def test_time_limit(self):
        """Verification of TorchScript runs forward() under a time limit: a forward() that never
        returns is refused "verification did not finish in N s", nothing is written, and the
        converter returns soon after the limit (the old one never returned)."""
        torch.jit.script(Spin()).save(tmp("spin.pt"))
        env = dict(os.environ, RNND_CONVERT_VERIFY_SECONDS="2")
        out = tmp("spin.rnnd")
        t0 = time.monotonic()
        try:
            p = subprocess.run([sys.executable, "-m", "rnnd_convert", tmp("spin.pt"), "-o", out],
                               capture_output=True, text=True, env=env, timeout=120)
            rc, err = p.returncode, p.stderr
        except subprocess.TimeoutExpired:
            rc, err = None, "(still running after 120 s)"
        dt = time.monotonic() - t0
        check(rc == 1 and len(err.splitlines()) == 1 and
              "spin.pt: verification did not finish in 2 s" in err,
              "a forward() that never returns is refused in one line: rc %s %r" % (rc, err))
        check(dt < 60, "refused soon after the limit: %.1f s" % dt)
        check(not os.path.exists(out) and not leftovers(), "nothing written, no temporary file")
        # a converter killed while it waits leaves no forward() running behind it
        env["RNND_CONVERT_VERIFY_SECONDS"] = "300"
        p = subprocess.Popen([sys.executable, "-m", "rnnd_convert", tmp("spin.pt"), "-o", out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        kids = []
        for _ in range(600):
            time.sleep(0.1)
            try:
                with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                break
            if kids:
                break
        time.sleep(0.5)
        p.kill()
        p.wait()
        time.sleep(1)
        alive = [k for k in kids if os.path.exists("/proc/%d" % k) and
                 open("/proc/%d/stat" % k).read().split(")")[-1].split()[0] != "Z"]
        check(kids and not alive, "the child running forward() dies with the converter: %r %r"
              % (kids, alive))
        for k in alive:             # a failure must not leave it spinning
            os.kill(k, 9)
        check(verify_seconds_documented(), "docs/convert.md states the limit and the variable")


def verify_seconds_documented():
    from rnnd_convert import watchdog
    top = os.environ.get("RNND_SRCDIR") or os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(top, "docs", "convert.md")
    with open(src) as f:
        doc = f.read()
    return ("RNND_CONVERT_VERIFY_SECONDS" in doc and
            "%d seconds" % watchdog.VERIFY_SECONDS in doc)


def with_record(src, dst, record):
    """Copy the .rnnd SRC to DST with __metadata__.verification = RECORD (a string)."""
    with open(src, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["verification"] = record
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-(8 + len(text))) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data[8 + n:])


def flip_first_weight(src, dst):
    """DST: SRC with the first data byte changed (a weight swapped after the check)."""
    with open(src, "rb") as f:
        data = bytearray(f.read())
    (n,) = struct.unpack("<Q", data[:8])
    data[8 + n] ^= 0x40
    with open(dst, "wb") as f:
        f.write(data)


def verified_line(path):
    r, out, _ = inspect(path)
    return [l for l in out.splitlines() if l.startswith("verified:")][0], out


class Record(Case):
    def test_record(self):
        """The record names the written model's digest (as `rnnd inspect` prints it) and the
        options applied after the check; inspect says "yes" only for a record of this very model
        whose error is within its tolerance (issue 14, adversary 9, user C13)."""
        converted()
        rec = json.loads(metadata(tmp("onnx.rnnd"))["verification"])
        r, o, e = inspect("--json", tmp("onnx.rnnd"))
        info = json.loads(o) if r == 0 else {}
        check(rec.get("digest") == info.get("digest") and info.get("digest"),
              "the record names the file's model digest: %r vs %r"
              % (rec.get("digest"), info.get("digest")))
        check((info.get("verification") or {}).get("verified") is True,
              "inspect --json: verified true for an intact file")
        flip_first_weight(tmp("onnx.rnnd"), tmp("swapped.rnnd"))
        line, _ = verified_line(tmp("swapped.rnnd"))
        check(line.startswith("verified:    no (the record is for the model with digest"),
              "weights changed after the check: no: %r" % line)
        with_record(tmp("onnx.rnnd"), tmp("failed.rnnd"),
                    json.dumps(dict(rec, max_rel_error=0.5, max_abs_error=0.5)))
        line, _ = verified_line(tmp("failed.rnnd"))
        check(line.startswith("verified:    no (the record's max rel error 0.5 is beyond its "
                              "tolerance 1e-05)"), "a record of a failed check: no: %r" % line)
        with_record(tmp("onnx.rnnd"), tmp("nodigest.rnnd"),
                    json.dumps({k: v for k, v in rec.items() if k != "digest"}))
        line, _ = verified_line(tmp("nodigest.rnnd"))
        check(line.startswith("verified:    no (the record names no model digest"),
              "a record naming no digest (by hand, older converter): no: %r" % line)
        r, o, e = inspect("--json", tmp("nodigest.rnnd"))
        v = json.loads(o)["verification"] if r == 0 else {}
        check(v.get("verified") is False and "no model digest" in v.get("why_not", ""),
              "inspect --json says why not: %r" % v)
        # the extra passes: shown by inspect (they were recorded but not shown before)
        extra = dict(rec, vocab_checked=12, initial_state_checked=True,
                     long_checked=[200, 5], scaled_checked=10)
        with_record(tmp("onnx.rnnd"), tmp("extra.rnnd"), json.dumps(extra))
        line, out = verified_line(tmp("extra.rnnd"))
        check("also checked: 12 distinct token ids, from random initial states, 5 sequences of "
              "200 steps, inputs scaled by 10" in out, "inspect shows the extra passes: %r" % out)
        r, o, e = inspect("--json", tmp("extra.rnnd"))
        v = json.loads(o)["verification"] if r == 0 else {}
        check(v.get("vocab_checked") == 12 and v.get("initial_state_checked") is True and
              v.get("long_checked") == [200, 5] and v.get("scaled_checked") == 10,
              "inspect --json shows the extra passes: %r" % v)
        with_record(tmp("onnx.rnnd"), tmp("badlong.rnnd"),
                    json.dumps(dict(rec, long_checked=[200])))
        r, o, e = inspect(tmp("badlong.rnnd"))
        check(r != 0 and "verification.long_checked" in e,
              "a malformed long_checked is refused naming the key: %r" % e)
        # --norm and --weight-type after the check: recorded and shown
        rc, err = main_inproc(tmp("m.onnx"), "-o", tmp("norm_bf16.rnnd"), "--norm", "log_softmax",
                              "--weight-type", "bf16")
        rec = json.loads(metadata(tmp("norm_bf16.rnnd"))["verification"]) if rc == 0 else {}
        check(rec.get("norm_checked") == "none" and rec.get("weights_checked") == "f32",
              "the record names the norm and weights checked: %r" % rec)
        line, out = verified_line(tmp("norm_bf16.rnnd"))
        check(line.startswith("verified:    yes") and
              "weights checked as f32, before rounding to the file's bf16" in out and
              "checked with head norm none; --norm changed it after the check" in out,
              "inspect shows weights_checked and the norm override: %r" % out)
        r, o, e = inspect("--json", tmp("norm_bf16.rnnd"))
        v = json.loads(o)["verification"] if r == 0 else {}
        check(v.get("verified") is True and v.get("weights_checked") == "f32" and
              v.get("norm_checked") == "none", "inspect --json shows them too: %r" % v)


def rnn_onnx(path, act, alpha=None, beta=None, head=None):
    """An ONNX RNN (2 -> 2) with ACTIVATION ACT and its alpha/beta lists when given, then
    optionally MatMul HEAD and Softmax."""
    import onnx
    from onnx import TensorProto as TP, helper as h, numpy_helper as nh
    I, H = 2, 2
    inits = [nh.from_array(np.full((1, H, I), 0.5, np.float32), "W"),
             nh.from_array(np.eye(H, dtype=np.float32)[None], "R")]
    attrs = dict(hidden_size=H, activations=[act])
    if alpha is not None:
        attrs["activation_alpha"] = [alpha]
    if beta is not None:
        attrs["activation_beta"] = [beta]
    nodes = [h.make_node("RNN", ["x", "W", "R"], ["Y"], name="rnn", **attrs),
             h.make_node("Squeeze", ["Y"], ["Ys" if head is None else "Yq"], axes=[1])]
    if head is not None:
        inits.append(nh.from_array(np.asarray(head, np.float32), "Wo"))
        nodes += [h.make_node("MatMul", ["Yq", "Wo"], ["z"]),
                  h.make_node("Softmax", ["z"], ["Ys"], axis=2)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TP.FLOAT, ["T", "B", I])],
                     [h.make_tensor_value_info("Ys", TP.FLOAT, ["T", "B", H])], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 12)]), path)
    return path


class Float32(Case):
    def test_float32(self):
        """Verification also runs the written model in float32, as rnnd computes: a model whose
        state leaves float32's range (Affine alpha 200: logits ~1e40 by step 17) is refused,
        where the float64 check alone passed it and the daemon then answered numeric_error
        (issue 14, adversary 13)."""
        p = rnn_onnx(tmp("f32over.onnx"), "Affine", 200.0, 0.0, [[1.0, -1.0], [0.5, 0.25]])
        rc, err = main_inproc(p, "-o", tmp("f32over.rnnd"))
        check(rc == 1 and "verification failed: computed in float32, as rnnd computes, the "
              "converted model gives nan at length 19" in err and err.count("\n") == 1,
              "a model leaving float32's range is refused: %r" % err)
        check(not os.path.exists(tmp("f32over.rnnd")), "nothing written")
        p = rnn_onnx(tmp("f32ok.onnx"), "Affine", 2.0, 0.0, [[1.0, -1.0], [0.5, 0.25]])
        rc, err = main_inproc(p, "-o", tmp("f32ok.rnnd"))
        check(rc == 0, "the same model within float32's range converts: %r" % err)


class ActDefaults(Case):
    def test_act_defaults(self):
        """ONNX ThresholdedRelu / ScaledTanh / Affine without explicit alpha/beta are refused:
        ONNX Runtime takes 0 for them, rnnd 1 (issue 14, adversary 8); with both given they
        convert."""
        for act, alpha, beta, needle in (
                ("ThresholdedRelu", None, None, "activation_alpha"),
                ("ScaledTanh", 1.0, None, "activation_beta"),
                ("Affine", None, None, "activation_alpha")):
            p = rnn_onnx(tmp("act_%s.onnx" % act), act, alpha, beta)
            rc, err = main_inproc(p, "-o", tmp("act.rnnd"))
            check(rc == 1 and "node 'rnn' (RNN): %s without a value in %s: give %s explicitly: "
                  "ONNX Runtime and the spec disagree on its default"
                  % (act, needle, needle) in err,
                  "%s without %s is refused: %r" % (act, needle, err))
        p = rnn_onnx(tmp("act_ok.onnx"), "ScaledTanh", 1.5, 0.5)
        rc, err = main_inproc(p, "-o", tmp("act_ok.rnnd"))
        check(rc == 0, "ScaledTanh with alpha and beta converts: %r" % err)


class Loader(Case):
    def test_loader(self):
        """A malformed record is refused by the loader, naming the key."""
        converted()
        good = json.loads(metadata(tmp("onnx.rnnd"))["verification"])
        cases = (
            ("not JSON", "{", "__metadata__.verification: invalid JSON"),
            ("not an object", "[]", "__metadata__.verification: not a JSON object"),
            ("no source", dict(good, source=None), "__metadata__.verification.source"),
            ("negative error", dict(good, max_abs_error=-1), "__metadata__.verification.max_abs"),
            ("tolerance text", dict(good, tolerance="1e-5"), "__metadata__.verification.tolerance"),
            ("rel error", dict(good, max_rel_error=None), "__metadata__.verification.max_rel"),
            ("no lengths", dict(good, lengths=[]), "__metadata__.verification.lengths"),
            ("length 0", dict(good, lengths=[1, 0]), "__metadata__.verification.lengths"),
            ("batch 0", dict(good, batch=0), "__metadata__.verification.batch"),
        )
        for what, rec, needle in cases:
            text = rec if isinstance(rec, str) else json.dumps(rec)
            path = tmp("badrec.rnnd")
            with_record(tmp("onnx.rnnd"), path, text)
            r, o, e = inspect(path)
            check(r == 1 and needle in e and e.count("\n") == 1,
                  "a record with %s is refused naming %s: %r" % (what, needle, e))
        path = tmp("goodrec.rnnd")
        with_record(tmp("onnx.rnnd"), path, json.dumps(dict(good, extra="ignored")))
        r, o, e = inspect(path)
        check(r == 0 and "verified:    yes" in o, "an unknown key in the record is ignored: %s" % e)


def fails_where(model, path, run, cases):
    """For each (what, bad, needle) of CASES: a source that is RUN but off by 0.5 where bad(x)
    holds fails verification of MODEL (written to PATH) with NEEDLE in the message."""
    for what, bad, needle in cases:
        def source(x, bad=bad):
            y = run(x)
            return y + 0.5 if bad(x) else y
        try:
            verify.compare(model, path, source, "torch")
            check(False, "a source that differs only %s fails verification" % what)
        except ConvertError as e:
            check("verification failed" in str(e) and needle in str(e), "%s: %s" % (what, e))


class LengthsAndBatch(Case):
    def test_lengths_and_batch(self):
        """Adversary finding 2 (issue 14): behaviour past 32 steps or for one sequence alone
        escaped verification at lengths 1, 7, 19, batch 3. A source that differs from the file
        only above 32 steps, and one that differs only at batch 1, now fail the check."""
        torch.manual_seed(8)
        net = nn.LSTM(3, 4, batch_first=True).eval()
        model = rnnd_convert.from_module(net, tmp("lb.rnnd"), verify=False)
        run = torch_import.source_runner(net)
        fails_where(model, tmp("lb.rnnd"), run,
                    (("above 32 steps", lambda x: x.shape[1] > 32, ""),
                     ("at batch 1", lambda x: x.shape[0] == 1, "")))
        figures = verify.compare(model, tmp("lb.rnnd"), run, "torch")
        check(figures["lengths"] == [1, 7, 19, 64] and figures["max_rel_error"] <= 1e-5,
              "the faithful source passes at lengths 1, 7, 19, 64: %r" % figures)


class LongAndScaled(Case):
    def test_long_and_scaled(self):
        """Issue 14, V1: a source that differs from the file only after 100 steps, or only
        on large inputs (saturated gates), passed the lengths up to 64 of standard normal
        inputs. A long pass (length LONG_LENGTH, batch LONG_BATCH) and a pass on inputs
        scaled by SCALE now fail it, and the record says both ran."""
        torch.manual_seed(9)
        net = nn.GRU(3, 4, batch_first=True).eval()
        model = rnnd_convert.from_module(net, tmp("ls.rnnd"), verify=False)
        run = torch_import.source_runner(net)
        fails_where(model, tmp("ls.rnnd"), run, (
            # (below the backstop pass's length, which would report itself as the worst)
            ("after 100 steps", lambda x: 100 < x.shape[1] < verify.BACKSTOP_LENGTH,
             "(the long sequences, length"),
            ("on large inputs", lambda x: np.abs(x).max() > 8, "(the inputs scaled by 10)")))
        figures = verify.compare(model, tmp("ls.rnnd"), run, "torch")
        check(figures.get("long_checked") == [verify.LONG_LENGTH, verify.LONG_BATCH] and
              150 <= verify.LONG_LENGTH <= 300 and verify.LONG_BATCH == 5 and
              figures.get("scaled_checked") == verify.SCALE == 10 and
              figures["max_rel_error"] <= 1e-5,
              "the faithful source passes both, recorded: %r" % figures)
        # token ids cannot be scaled: the record holds the long pass alone
        c = converted()
        rec = json.loads(metadata(tmp("onnx.rnnd"))["verification"]) \
            if c["onnx"][0] == 0 else {}
        check(rec.get("long_checked") == [verify.LONG_LENGTH, verify.LONG_BATCH] and
              "scaled_checked" not in rec, "an ONNX token model's record: %r" % rec)


class TwoOptional(nn.Module):
    """Two recurrent modules; forward(x, h=None) gives the first its initial state."""

    def __init__(self):
        super().__init__()
        self.a = nn.GRU(3, 4, batch_first=True)
        self.b = nn.GRU(4, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x, h: Optional[torch.Tensor] = None):
        y, _ = self.a(x, h)
        y, _ = self.b(y)
        return self.fc(y)


class StateRecord(Case):
    def test_state_record(self):
        """V2: the pass from random initial states runs where the source's state maps to
        rnnd's (one nn.GRU's forward(x, h)); a torch module of several recurrent modules
        whose forward(x, h=None) gives the first alone its state is refused, verified or
        not (rnnd's state would start the second from a state the source never takes; user
        finding U3: tests/test_convert_user2.py TestSeveralStates)."""
        torch.manual_seed(10)
        one = nn.GRU(3, 4, batch_first=True)
        rnnd_convert.from_module(one, tmp("state_one.rnnd"))
        rec = json.loads(metadata(tmp("state_one.rnnd"))["verification"])
        check(rec.get("initial_state_checked") is True, "one nn.GRU: checked: %r" % rec)
        for checked in (True, False):
            try:
                rnnd_convert.from_module(TwoOptional(), tmp("state_two.rnnd"), verify=checked)
                check(False, "two modules, the first given h: refused (verify=%s)" % checked)
            except ConvertError as e:
                check("starts module 'b' (GRU) from zeros" in str(e),
                      "two modules, the first given h: refused naming 'b': %s" % e)


if __name__ == "__main__":
    unittest.main()
