#!/usr/bin/env python3
"""What an outside adversary found against the converter in its sixth round (issue 14):

- H4: the ONNX importer fused the tanh form of GELU without reading the number the cube is
  multiplied by (0.044715): a graph with another number there converted as GELU. Now it must
  be 0.044715 (within its type's rounding), else the graph is refused at that Mul.
- L1: a Flatten with a negative axis was read as [B*H, 1] and refused, blaming the graph;
  ONNX counts it from the end (axis + rank), in the importer, its constant folding and
  verification's interpreter (onnx_run), axis == rank included. A Slice with a negative step
  and a start below -dim took nothing in onnx_run and in folding; ONNX clamps it to 0.
- H2: a traced forward() that branches on a tensor's is_inference() converted: no check ran
  under torch.inference_mode(). The backstop pass now calls the source a fourth time under
  it, and the probe of forward() refuses a call of is_inference() as of the other mode
  readers.
- M1: the doors of the reference modules (tools/rnnd_modules: MinGRU, ..., SLSTM) ran the
  user's forward() without the time limit verification's other doors keep: one that never
  returned hung from_module. Now it is refused when RNND_CONVERT_VERIFY_SECONDS is spent.

Found in the seventh round (redone after a lost branch):

- H3: a head weight or bias computed in forward() (self.fc.weight * float(x.size(0) <= 8),
  a bias times a count made by torch.zeros_like) converted: verification's batches took
  one side. Now a head op's weight and bias must be parameters read from the module, the
  head is read from the graph with one nn.Linear too, and *_like / new_* of the data are
  sizes (a branch on a count of them is a branch on the size).
- H5: around a reference module (MinGRU, SLSTM) the user's forward() was not analysed: a
  branch on the length (T=301), the values or a call count converted. Now it must be a plain
  chain of submodule calls (torch_reference.check_chain).

Env: PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import os
import threading
import time
import unittest
import warnings
import zipfile

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import rnnd_convert
from daemon_util import Case, main_inproc, scratch
from rnnd_convert import onnx_run, reference, torch_import, verify
from rnnd_convert.errors import ConvertError
from rnnd_modules.mingru import MinGRU
from rnnd_modules.slstm import SLSTM

warnings.filterwarnings("ignore")
path = scratch("convert_adv6")
I, H = 3, 4


def lstm_graph(name, extra=(), out="Y2", opset=14, inits=()):
    """An LSTM over x [T, B, 3], its output squeezed to Y2 [T, B, 4], then the nodes EXTRA
    (their initializers INITS), the graph's output OUT."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((1, 4 * H, I)).astype(np.float32)
    R = rng.standard_normal((1, 4 * H, H)).astype(np.float32)
    B = rng.standard_normal((1, 8 * H)).astype(np.float32)
    tensors = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
               numpy_helper.from_array(B, "B"),
               numpy_helper.from_array(np.array([1], np.int64), "ax1")] + list(inits)
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["Y", "Yh", "Yc"], hidden_size=H),
             helper.make_node("Squeeze", ["Y", "ax1"], ["Y2"])] + list(extra)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["T", "B", I])], [helper.make_tensor_value_info(
            out, TensorProto.FLOAT, None)], tensors)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    p = path(name + ".onnx")
    onnx.save(m, p)
    return p


def f32(v, name):
    return numpy_helper.from_array(np.array(v, np.float32), name)


def tanh_gelu_graph(name, k, cube_first=True):
    """The LSTM's output through torch's export of F.gelu(y, approximate='tanh'), with K
    where the cube is multiplied by 0.044715."""
    cube = ["cube", "k"] if cube_first else ["k", "cube"]
    return lstm_graph(name, [
        helper.make_node("Mul", ["Y2", "Y2"], ["sq"], name="square"),
        helper.make_node("Mul", ["sq", "Y2"], ["cube"], name="cube"),
        helper.make_node("Mul", cube, ["kc"], name="times_k"),
        helper.make_node("Add", ["Y2", "kc"], ["a0"], name="plus_x"),
        helper.make_node("Mul", ["a0", "s"], ["m3"], name="times_s"),
        helper.make_node("Tanh", ["m3"], ["t"], name="tanh"),
        helper.make_node("Add", ["t", "one"], ["a1"], name="plus_1"),
        helper.make_node("Mul", ["a1", "Y2"], ["m4"], name="times_x"),
        helper.make_node("Mul", ["m4", "half"], ["G"], name="half")], out="G", inits=[
            f32(k, "k"), f32((2 / np.pi) ** 0.5, "s"), f32(1.0, "one"), f32(0.5, "half")])


class Base(Case):
    def refused(self, p, *words):
        out = p[:-5] + ".rnnd"
        if os.path.exists(out):
            os.remove(out)
        rc, err = main_inproc(p, "-o", out)
        self.check(rc != 0 and not os.path.exists(out), "%s: rnnd-convert exits %d"
                   % (os.path.basename(p), rc))
        self.check(len(err.splitlines()) == 1 and "internal error" not in err,
                   "%s: one-line refusal: %s" % (os.path.basename(p), err))
        for w in words:
            self.check(w in err, "%s: the refusal says %r: %s" % (os.path.basename(p), w, err))
        return err

    def converts(self, p):
        out = p[:-5] + ".rnnd"
        rc, err = main_inproc(p, "-o", out)
        self.check(rc == 0 and os.path.exists(out), "%s converts: %s"
                   % (os.path.basename(p), err))
        return out


class TanhGelu(Base):
    """H4."""

    def test_other_constant_refused(self):
        # 0.0447: within verification's tolerance on its inputs, a GELU it is not
        for k, first in ((0.0447, True), (0.0447, False), (0.5, True)):
            self.refused(tanh_gelu_graph("gelu_k%g_%d" % (k, first), k, first),
                         "node 'times_k' (Mul)", "%g" % k, "0.044715")

    def test_gelu_converts(self):
        for first in (True, False):
            out = self.converts(tanh_gelu_graph("gelu_ok_%d" % first, 0.044715, first))
            with open(out, "rb") as f:
                self.check(b"gelu_tanh" in f.read(), "the tanh GELU is fused into gelu_tanh")


INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


def i64(v, name):
    return numpy_helper.from_array(np.array(v, np.int64), name)


def run_one(node, x, inits=()):
    """NODE run by onnx_run on X (its first input, 'x'); its output 'out'."""
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, list(x.shape))], [helper.make_tensor_value_info(
            "out", TensorProto.FLOAT, None)], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    return onnx_run._Graph(m).run({"x": x})["out"]


class NegativeAxes(Base):
    """L1."""

    def test_flatten_negative_axis_converts(self):
        # the final state h_n[0] [B, 4] flattened at axis -1 (= 1), [B, 4] as it is, and the
        # per-step output [T, B, 4] at axis -1 (= 2), [T*B, 4], each before a Gemm that
        # reads its 4 features
        w = f32(np.random.default_rng(3).standard_normal((2, 4)), "w")
        for name, first, axis in (("flatten_h-1", "h", -1), ("flatten_h1", "h", 1),
                                  ("flatten_y-1", "Y2", -1), ("flatten_y2", "Y2", 2)):
            self.converts(lstm_graph(name, [
                helper.make_node("Squeeze", ["Yh", "ax0"], ["h"], name="h_n0"),
                helper.make_node("Flatten", [first], ["F"], name="flat", axis=axis),
                helper.make_node("Gemm", ["F", "w"], ["O"], name="fc", transB=1)], out="O",
                inits=[i64([0], "ax0"), w]))

    def test_flatten_axis_out_of_range_refused(self):
        for axis in (-4, 4):
            self.refused(lstm_graph("flatten_bad%d" % axis, [helper.make_node(
                "Flatten", ["Y2"], ["F"], name="flat", axis=axis)], out="F"),
                "node 'flat' (Flatten)", "axis %d is out of range" % axis)

    def test_flatten_folded(self):
        # a constant flattened before the MatMul that reads it: [4] at axis 1 (= its rank)
        # is [4, 1]; [4, 1, 2] at axis -2 is [4, 2]
        rng = np.random.default_rng(1)
        for name, w, axis in (("fold_rank", rng.standard_normal(4), 1),
                              ("fold_neg", rng.standard_normal((4, 1, 2)), -2)):
            self.converts(lstm_graph(name, [
                helper.make_node("Flatten", ["w"], ["wf"], name="flat", axis=axis),
                helper.make_node("MatMul", ["Y2", "wf"], ["O"], name="mm")], out="O",
                inits=[f32(w, "w")]))

    def test_slice_negative_step_folded(self):
        # column 0 of a [4, 5] constant, taken backwards from a start below -5
        w = np.random.default_rng(2).standard_normal((4, 5))
        self.converts(lstm_graph("slice_fold", [
            helper.make_node("Slice", ["w", "s", "e", "ax", "st"], ["ws"], name="cut"),
            helper.make_node("MatMul", ["Y2", "ws"], ["O"], name="mm")], out="O", inits=[
                f32(w, "w"), i64([-10], "s"), i64([INT64_MIN], "e"), i64([1], "ax"),
                i64([-1], "st")]))

    def test_onnx_run_flatten(self):
        x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        for axis, shape in ((-1, (6, 4)), (-3, (1, 24)), (0, (1, 24)), (3, (24, 1)),
                            (1, (2, 12))):
            y = run_one(helper.make_node("Flatten", ["x"], ["out"], axis=axis), x)
            self.eq(y.shape, shape, "onnx_run Flatten axis %d of [2, 3, 4]" % axis)
        try:
            run_one(helper.make_node("Flatten", ["x"], ["out"], name="flat", axis=-4), x)
            self.fail_check("onnx_run Flatten axis -4 of a rank-3 input runs")
        except ConvertError as e:
            self.check("out of range" in str(e), "onnx_run refuses axis -4: %s" % e)

    def test_onnx_run_slice_negative_step(self):
        x = np.arange(5, dtype=np.float32)
        # (start, end, step) -> ONNX's result on [0, 1, 2, 3, 4]
        for s, e, st, want in ((-10, INT64_MIN, -1, [0]), (INT64_MAX, INT64_MIN, -1,
                                                           [4, 3, 2, 1, 0]),
                               (-1, -10, -1, [4, 3, 2, 1, 0]), (-10, -7, -1, [0]),
                               (-6, 3, 1, [0, 1, 2]), (2, INT64_MAX, 1, [2, 3, 4]),
                               (10, 0, -2, [4, 2]), (-10, 10, 2, [0, 2, 4])):
            y = run_one(helper.make_node("Slice", ["x", "s", "e", "ax", "st"], ["out"]), x,
                        [i64([s], "s"), i64([e], "e"), i64([0], "ax"), i64([st], "st")])
            self.eq(y.tolist(), want, "onnx_run Slice %d:%d:%d of range(5)" % (s, e, st))


class Gru(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y)


class InferenceBranch(Gru):
    """**kw: TorchScript cannot compile it, so it is traced, and the trace keeps the side
    the example took."""

    def forward(self, x, **kw):
        y, _ = self.rnn(x)
        if y.is_inference():
            y = y * 2
        return self.fc(y)


class InferenceFunction(Gru):
    def forward(self, x, **kw):
        y, _ = self.rnn(x)
        if torch.is_inference(y):
            y = y * 2
        return self.fc(y)


class InferenceMode(Case):
    """H2."""

    def test_refused(self):
        for cls in (InferenceBranch, InferenceFunction):
            torch.manual_seed(5)
            try:
                rnnd_convert.from_module(cls().eval(), path(cls.__name__ + ".rnnd"))
                self.fail_check("%s: converted, though it computes otherwise under "
                                "torch.inference_mode()" % cls.__name__)
            except ConvertError as e:
                self.check("is_inference" in str(e) and "forward()" in str(e),
                           "%s: the refusal names the call: %s" % (cls.__name__, e))

    def test_backstop_under_inference_mode(self):
        # the source against the model of its other side: the backstop's fourth call alone
        # tells them apart
        torch.manual_seed(5)
        src = InferenceBranch().eval()
        plain = Gru().eval()
        plain.load_state_dict(src.state_dict())
        p = path("inference_plain.rnnd")
        model = rnnd_convert.from_module(plain, p, verify=False)
        run = torch_import.source_runner(src)
        try:
            verify.compare(model, p, run, "torch")
            self.fail_check("a source that differs under torch.inference_mode() passes "
                            "verification")
        except ConvertError as e:
            self.check("backstop pass" in str(e) and "inference_mode" in str(e),
                       "refused by the backstop's call under inference mode: %s" % e)
        figures = verify.compare(model, p, torch_import.source_runner(plain), "torch")
        self.check(figures["max_rel_error"] <= 1e-5, "the faithful source passes: %r"
                   % figures)


class Hangs(nn.Module):
    """A reference module, then a Linear, whose forward() never returns."""

    def __init__(self, rec):
        super().__init__()
        self.rec = rec
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        while True:
            time.sleep(1)


class Returns(Hangs):
    def forward(self, x):
        y = self.rec(x)
        return self.fc(y[0] if isinstance(y, tuple) else y)


class ReferenceWatchdog(Case):
    """M1."""

    def test_hanging_forward_refused_in_time(self):
        os.environ["RNND_CONVERT_VERIFY_SECONDS"] = "2"
        try:
            for name, rec in (("mingru", lambda: MinGRU(3, 4)),
                              ("slstm", lambda: SLSTM(3, 4, heads=2))):
                torch.manual_seed(5)
                t0 = time.monotonic()
                box = {}

                def convert(m=Hangs(rec()).eval(), out=path(name + "_hang.rnnd")):
                    try:
                        rnnd_convert.from_module(m, out)
                        box["done"] = "converted"
                    except ConvertError as e:
                        box["done"] = str(e)
                # in a thread, so that a conversion that hangs fails this test, not hangs it
                t = threading.Thread(target=convert, daemon=True)
                t.start()
                t.join(60)
                took = time.monotonic() - t0
                self.check(not t.is_alive(), "%s: from_module returns (still running after "
                           "%.0f s with a 2 s limit)" % (name, took))
                self.check("did not finish in 2 s" in box.get("done", ""),
                           "%s: refused at the limit: %s" % (name, box.get("done")))
                self.check(took < 30, "%s: refused after %.1f s, near the 2 s limit"
                           % (name, took))
                # a generous limit for the one that returns: under a loaded machine's load a
                # normal conversion can take longer than the 2 s the hang test needs
                os.environ["RNND_CONVERT_VERIFY_SECONDS"] = "60"
                torch.manual_seed(5)
                rnnd_convert.from_module(Returns(rec()).eval(), path(name + "_ok.rnnd"))
                os.environ["RNND_CONVERT_VERIFY_SECONDS"] = "2"
                self.check(os.path.exists(path(name + "_ok.rnnd")),
                           "%s: one that returns still converts under the limit" % name)
        finally:
            del os.environ["RNND_CONVERT_VERIFY_SECONDS"]


# H1: state kept between calls that the probe's snapshot of the module did not see
_SERVED = [0]
_CALLS = 0


def _bump():
    global _CALLS
    _CALLS += 1
    return _CALLS


class _Box:
    """A value deepcopy cannot copy (it holds a lock) that keeps a counter."""

    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0


class ArrayCounter(Gru):
    def __init__(self):
        super().__init__()
        self.calls = np.zeros(2)

    def forward(self, x, **kw):
        self.calls += 1
        y, _ = self.rnn(x)
        if self.calls[0] > 24:
            y = y * 1.1
        return self.fc(y)


class HookNamed(Gru):
    def __init__(self):
        super().__init__()
        self.hook_calls = 0

    def forward(self, x, **kw):
        self.hook_calls += 1
        y, _ = self.rnn(x)
        if self.hook_calls > 24:
            y = y * 1.1
        return self.fc(y)


class HelperGlobal(Gru):
    def forward(self, x, **kw):
        y, _ = self.rnn(x)
        if _bump() > 24:
            y = y * 1.1
        return self.fc(y)


class MethodGlobal(Gru):
    def count(self):
        _SERVED[0] += 1
        return _SERVED[0]

    def forward(self, x, **kw):
        y, _ = self.rnn(x)
        if self.count() > 24:
            y = y * 1.1
        return self.fc(y)


class LockedCounter(Gru):
    def __init__(self):
        super().__init__()
        self.box = _Box()

    def forward(self, x, **kw):
        with self.box.lock:
            self.box.n += 1
        y, _ = self.rnn(x)
        if self.box.n > 24:
            y = y * 1.1
        return self.fc(y)


class Settings:
    """A plain object (no __eq__ of its own) that forward() only reads."""

    def __init__(self):
        self.scale = 1.0


class ReadsSettings(Gru):
    def __init__(self):
        super().__init__()
        self.settings = Settings()
        self.table = np.arange(4.0)
        self.lock = threading.Lock()

    def forward(self, x, **kw):
        y, _ = self.rnn(x)
        with self.lock:
            if self.settings.scale > 2 or self.table[1] > 5:
                y = y * 2
        return self.fc(y)


class TestH1State(Case):
    """H1: state kept between calls in a numpy array, an attribute whose name holds "hook",
    a global changed by a helper function or method, and a value deepcopy cannot copy; each
    converted silently (call 25 differed by 0.081). The probe now sees each."""

    def refused(self, cls, *words):
        torch.manual_seed(5)
        try:
            rnnd_convert.from_module(cls().eval(), path(cls.__name__ + ".rnnd"))
        except ConvertError as e:
            for w in words:
                self.check(w in str(e), "%s: the refusal names %r: %s" % (cls.__name__, w, e))
            return
        self.fail_check("%s: converted, though forward() keeps state between calls"
                        % cls.__name__)

    def test_numpy_array_attribute(self):
        self.refused(ArrayCounter, "'calls'", "between calls")

    def test_attribute_named_hook(self):
        self.refused(HookNamed, "'hook_calls'")

    def test_global_changed_by_helper(self):
        self.refused(HelperGlobal, "global '_CALLS'")

    def test_global_changed_by_method(self):
        self.refused(MethodGlobal, "global '_SERVED'")

    def test_value_deepcopy_cannot_copy(self):
        self.refused(LockedCounter, "'box")

    def test_read_only_state_converts(self):
        torch.manual_seed(5)
        out = path("reads_settings.rnnd")
        rnnd_convert.from_module(ReadsSettings().eval(), out)
        self.check(os.path.exists(out), "a forward() that only reads an object, an array "
                   "and a lock converts")


def made_graph(name, hidden):
    """An LSTM of HIDDEN units over x [T, B, 3] whose weights the file does not hold: W, R
    and B are ConstantOfShape of 0.01, folded on conversion (a file of a few hundred
    bytes)."""
    shapes = {"W": [1, 4 * hidden, I], "R": [1, 4 * hidden, hidden], "B": [1, 8 * hidden]}
    nodes, tensors = [], [numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    for k, shape in shapes.items():
        tensors.append(numpy_helper.from_array(np.array(shape, np.int64), k + "_shape"))
        nodes.append(helper.make_node(
            "ConstantOfShape", [k + "_shape"], [k], name="make_" + k,
            value=numpy_helper.from_array(np.array([0.01], np.float32))))
    nodes += [helper.make_node("LSTM", ["x", "W", "R", "B"], ["Y", "Yh", "Yc"],
                               hidden_size=hidden),
              helper.make_node("Squeeze", ["Y", "ax1"], ["Y2"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["T", "B", I])], [helper.make_tensor_value_info(
            "Y2", TensorProto.FLOAT, None)], tensors)
    p = path(name + ".onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), p)
    return p


class TestM2Resources(Base):
    """M2: a 484-byte file folded ConstantOfShape into 67 MB of weights (no cap on what
    folding makes in all), and running the graph in verification had no time limit."""

    def test_folded_weights_capped(self):
        p = made_graph("made_big", 2048)        # R alone: 2048 x 8192 floats, 64 MiB
        self.check(os.path.getsize(p) < 1000, "the file is small: %d bytes"
                   % os.path.getsize(p))
        out = p[:-5] + ".rnnd"
        if os.path.exists(out):
            os.remove(out)
        t0 = time.monotonic()
        rc, err = main_inproc(p, "-o", out, "--no-verify")
        self.check(rc != 0 and not os.path.exists(out), "refused: rc %d, %s" % (rc, err))
        self.check(len(err.splitlines()) == 1 and "make_R" in err and "MiB" in err,
                   "one line naming the node and the cap: %s" % err)
        self.check(time.monotonic() - t0 < 20, "refused before the weights are written")

    def test_small_folded_weights_convert(self):
        # a few made weights (torch writes its zero biases so) stay under the 16 MiB slack
        out = self.converts(made_graph("made_small", 8))
        self.check(os.path.getsize(out) > 0, "written")

    def test_verification_time_bounded(self):
        p = made_graph("made_slow", 8)
        was = onnx_run._Graph.run

        def hangs(self, feeds):
            while True:
                time.sleep(0.5)
        os.environ["RNND_CONVERT_VERIFY_SECONDS"] = "2"
        onnx_run._Graph.run = hangs
        box = {}

        def convert():
            box["r"] = main_inproc(p, "-o", p[:-5] + ".rnnd")
        try:
            t0 = time.monotonic()
            t = threading.Thread(target=convert, daemon=True)
            t.start()
            t.join(60)
            took = time.monotonic() - t0
        finally:
            onnx_run._Graph.run = was
            del os.environ["RNND_CONVERT_VERIFY_SECONDS"]
        self.check(not t.is_alive(), "the conversion returns (still running after %.0f s "
                   "with a 2 s limit)" % took)
        rc, err = box.get("r", (None, ""))
        self.check(rc not in (0, None) and "did not finish in 2 s" in err and
                   len(err.splitlines()) == 1, "refused at the limit in one line: %s" % err)
        self.check(took < 30, "refused after %.1f s, near the 2 s limit" % took)
        self.converts(p)        # the real interpreter, under the default limit


class WeightBySize(Gru):
    """A head whose weight forward() computes from the batch size: 1 up to batch 8, else 0."""

    def forward(self, x):
        y, _ = self.rnn(x)
        return F.linear(y, self.fc.weight * float(x.size(0) <= 8), self.fc.bias)


class BiasByCount(Gru):
    """The head's bias times a count of the input's elements, made by torch.zeros_like (not
    x.size()): 1 up to 6000 elements (every input verification makes), else 0."""

    def forward(self, x):
        y, _ = self.rnn(x)
        n = (torch.zeros_like(x) + 1).sum()
        return F.linear(y, self.fc.weight, self.fc.bias * (n <= 6000).float())


class RaiseByCount(Gru):
    """A raise on a count of the input's elements, made by torch.zeros_like."""

    def forward(self, x):
        y, _ = self.rnn(x)
        if (torch.zeros_like(x) + 1).sum() > 6000:
            raise ValueError("too long")
        return self.fc(y)


class FunctionalHead(Gru):
    """The head's parameters read straight from the module: converts."""

    def forward(self, x):
        y, _ = self.rnn(x)
        return F.linear(y, self.fc.weight, self.fc.bias)


class TestH3ComputedHead(Base):
    """H3: a head weight or bias computed in forward() (from the batch size, from a count
    made by zeros_like) passed verification (batch 3) and differed at batch 12."""

    def test_computed_weight_refused(self):
        for cls, op, code in ((WeightBySize, "aten::mul", "self.fc.weight * float"),
                              (BiasByCount, "aten::mul", "self.fc.bias * (n <= 6000)")):
            torch.manual_seed(5)
            try:
                rnnd_convert.from_module(cls().eval(), path(cls.__name__ + ".rnnd"))
                self.fail_check("%s: converted, though its head differs at batch 12"
                                % cls.__name__)
            except ConvertError as e:
                for w in (op, code, "aten::linear", "parameter"):
                    self.check(w in str(e), "%s: the refusal says %r: %s"
                               % (cls.__name__, w, e))

    def test_torchscript_cli_refused(self):
        for cls in (WeightBySize, BiasByCount):
            torch.manual_seed(5)
            p = path(cls.__name__ + "_ts.pt")
            torch.jit.script(cls().eval()).save(p)
            out = p[:-3] + ".rnnd"
            if os.path.exists(out):
                os.remove(out)
            rc, err = main_inproc(p, "-o", out)
            self.check(rc != 0 and not os.path.exists(out), "%s (TorchScript): refused, rc %d"
                       % (cls.__name__, rc))
            self.check("aten::mul" in err and "aten::linear" in err,
                       "%s (TorchScript): names the op: %s" % (cls.__name__, err))

    def test_like_count_is_a_size(self):
        torch.manual_seed(5)
        try:
            rnnd_convert.from_module(RaiseByCount().eval(), path("raise_count.rnnd"))
            self.fail_check("RaiseByCount: converted, though it raises above 6000 elements")
        except ConvertError as e:
            self.check("raises for some input sizes" in str(e) and "zeros_like" in str(e),
                       "RaiseByCount: refused as a check of the size: %s" % e)

    def test_parameters_read_straight_convert(self):
        torch.manual_seed(5)
        src = FunctionalHead().eval()
        p = path("functional_head.rnnd")
        rnnd_convert.from_module(src, p)
        x = torch.randn(12, 5, 3)
        with torch.no_grad():
            want = src(x).numpy()
        got = np.stack(reference.run(p, [s.numpy() for s in x])[0])
        self.check(np.abs(got - want).max() < 1e-5, "batch 12 matches the module")


class RefTop(nn.Module):
    """A reference module, then a Linear; forward() as the subclasses write it."""

    def __init__(self, rec):
        super().__init__()
        self.rec = rec
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y, _ = self.rec(x)
        return self.fc(y)


class RefByLength(RefTop):
    def forward(self, x):
        y = self.rec(x)[0]
        if x.size(1) > 300:
            y = y * 0.5
        return self.fc(y)


class RefByValue(RefTop):
    def forward(self, x):
        y = self.rec(x)[0]
        return self.fc(y * 0.5 if float(x.abs().max()) > 100 else y)


class RefByCalls(RefTop):
    def forward(self, x):
        self.calls = getattr(self, "calls", 0) + 1
        y = self.rec(x)[0]
        return self.fc(y) * (1.0 if self.calls < 100 else 0.5)


class RefPlain(RefTop):
    """A plain chain: h passed through, [0], a constant subscript, a softmax."""

    def forward(self, x, h=None):
        out = self.rec(x, h)
        y = out[0]
        return F.log_softmax(self.fc(y[:, :, :]), dim=-1), out[1]


class TestH5ReferenceChain(Base):
    """H5: around a reference module, forward() was not analysed: a branch on the length
    (T=301 differed 0.41), the values or the call count converted."""

    def recs(self):
        return (("mingru", lambda: MinGRU(3, 4)), ("slstm", lambda: SLSTM(3, 4, heads=2)))

    def test_branches_refused(self):
        for name, rec in self.recs():
            for cls, what in ((RefByLength, "if x.size(1) > 300"),
                              (RefByValue, "float(x.abs().max()) > 100"),
                              (RefByCalls, "self.calls = getattr")):
                torch.manual_seed(5)
                try:
                    # the check runs without verification too; the length's branch with it,
                    # which it passes (T=301 is past every length it runs)
                    rnnd_convert.from_module(cls(rec()).eval(),
                                             path("%s_%s.rnnd" % (name, cls.__name__)),
                                             verify=cls is RefByLength)
                    self.fail_check("%s around %s: converted" % (cls.__name__, name))
                except ConvertError as e:
                    self.check(what in str(e) and "plain chain" in str(e),
                               "%s around %s: refused naming %r: %s"
                               % (cls.__name__, name, what, e))

    def test_plain_chain_converts(self):
        for name, rec in self.recs():
            torch.manual_seed(5)
            p = path("%s_plain.rnnd" % name)
            rnnd_convert.from_module(RefPlain(rec()).eval(), p, norm="log_softmax")
            self.check(os.path.exists(p), "%s: a plain chain converts" % name)


# Found in the eighth round (trial20, adversary: C1, C2, M1).

class DeepLstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4)

    def forward(self, x):
        y, _ = self.lstm(x)
        return y


def repacked(name, code=None, extra=None, compression=zipfile.ZIP_DEFLATED, module=None):
    """A scripted model (MODULE, else DeepLstm) saved, then every entry written again with
    COMPRESSION; CODE(text) rewrites the top code/__torch__.py, EXTRA is (name, bytes) added."""
    torch.manual_seed(0)
    src = path(name + "_orig.pt")
    torch.jit.script((module or DeepLstm()).eval()).save(src)
    dst = path(name + ".pt")
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", compression) as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            if code and info.filename.endswith("code/__torch__.py"):
                data = code(data.decode()).encode()
            if code and info.filename.endswith(".debug_pkl"):
                continue
            zo.writestr(info.filename, data)
        if extra:
            zo.writestr(os.path.dirname(zi.namelist()[0]) + "/" + extra[0], extra[1])
    os.remove(src)
    return dst


class TsBase(Base):
    def run_cli(self, p, *args):
        out = p[:-3] + ".rnnd"
        if os.path.exists(out):
            os.remove(out)
        rc, err = main_inproc(p, "-o", out, *args)
        return rc, err, out

    def refused_ts(self, p, *words):
        rc, err, out = self.run_cli(p)
        name = os.path.basename(p)
        self.check(rc != 0 and not os.path.exists(out), "%s: rnnd-convert exits %d" % (name, rc))
        self.check(len(err.splitlines()) == 1 and "internal error" not in err,
                   "%s: one-line refusal: %s" % (name, err))
        for w in words:
            self.check(w in err, "%s: the refusal says %r: %s" % (name, w, err))
        return err


class TestC1DeepCode(TsBase):
    """C1: code/ nesting brackets 20 000 deep made torch's TorchScript parser recurse until
    the converter died of SIGSEGV, printing nothing."""

    def test_deep_brackets_refused(self):
        p = repacked("deep_brackets", code=lambda s: s.replace(
            "return y", "return " + "(" * 20000 + "y" + ")" * 20000, 1))
        self.refused_ts(p, "nests brackets", "deeper than 200", "__torch__.py")

    def test_loader_crash_is_one_line(self):
        # unary minus 50 000 deep: no bracket, and the parser recurses all the same
        p = repacked("deep_unary", code=lambda s: s.replace("return y", "return " +
                                                            "-" * 50000 + "y", 1))
        self.refused_ts(p, "torch's loader crashed (signal 11")

    def test_moderate_nesting_converts(self):
        p = repacked("nest_150", code=lambda s: s.replace(
            "return y", "return " + "(" * 150 + "y" + ")" * 150, 1))
        rc, err, out = self.run_cli(p, "--no-verify")
        self.check(rc == 0 and os.path.exists(out), "150 deep converts: %s" % err)


class TestC2CompressedStorage(TsBase):
    """C2: TorchScript storages compressed with deflate had no cap: a 1 MB file made torch
    allocate 1.3 GB, and converted."""

    def test_deflated_storage_refused(self):
        class Padded(DeepLstm):
            def __init__(self):
                super().__init__()
                self.register_buffer("pad", torch.zeros(17 << 20))     # 68 MiB of zeros
        p = repacked("deflated_pad", module=Padded())
        self.check(os.path.getsize(p) < (1 << 20), "the archive is small")
        self.refused_ts(p, "inflate", "64 MiB")

    def test_declared_size_capped(self):
        p = repacked("declared_big", extra=("extra", b"x" * 100))
        with open(p, "rb") as f:
            data = bytearray(f.read())
        # the central directory entry of "extra": its uncompressed size says 2 GiB
        at = data.rfind(b"PK\x01\x02")
        self.eq(data[at + 46:at + 46 + int.from_bytes(data[at + 28:at + 30], "little")]
                .decode().rsplit("/", 1)[-1], "extra", "the last entry")
        data[at + 24:at + 28] = (2 << 30).to_bytes(4, "little")
        with open(p, "wb") as f:
            f.write(data)
        self.refused_ts(p, "extra", "1024 MiB")

    def test_repacked_model_converts(self):
        p = repacked("repacked_plain")
        rc, err, out = self.run_cli(p, "--no-verify")
        self.check(rc == 0 and os.path.exists(out), "a model packed again with deflate "
                   "converts: %s" % err)


class TestM1MessageLines(Base):
    """M1: names from the file were printed raw (a newline and a terminal escape made a
    second line), and numpy's RuntimeWarnings reached stderr beside the one-line refusal."""

    def test_control_characters_escaped(self):
        name = "evil\nrnnd-convert: m.onnx: converted OK\x1b[2K"
        p = lstm_graph("ctl_name", [helper.make_node("Erf", ["Y2"], ["O"], name=name)],
                       out="O")
        err = self.refused(p)
        self.check("\x1b" not in err and "\\x1b" in err and "evil\\n" in err,
                   "the name is escaped: %r" % err)

    def test_numpy_warnings_silent(self):
        p = lstm_graph("cast_inf", [
            helper.make_node("Cast", ["big"], ["ch"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", ["ch"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["Y2", "c"], ["O"])], out="O",
            inits=[f32(1e10, "big")])
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            self.refused(p, "NaN or Inf")


class TestC4LoadBounded(TsBase):
    """C4 (trial21): code/ of 400 000 lines of `y = torch.contiguous(y)` (11 MB, under the
    16 MiB cap; a 31 KB file) took torch.jit.load 225 s and 2.6 GB: the load had no time or
    memory limit. Now code/ is capped at 1 MiB, and the load in the child runs within
    RNND_CONVERT_VERIFY_SECONDS and under RNND_CONVERT_LOAD_GIB more address space."""

    @staticmethod
    def chain(n):
        return lambda s: s.replace("return y", "y = torch.contiguous(y)\n    " * n +
                                   "return y", 1)

    def test_long_code_refused(self):
        p = repacked("c4_long", code=self.chain(40000))
        self.check(os.path.getsize(p) < (64 << 10), "the archive is small")
        t = time.monotonic()
        self.refused_ts(p, "1 MiB", "code")
        self.check(time.monotonic() - t < 5, "refused before torch reads it")

    def test_slow_load_refused(self):
        p = repacked("c4_slow", code=self.chain(30000))
        os.environ["RNND_CONVERT_VERIFY_SECONDS"] = "0.3"
        try:
            t = time.monotonic()
            self.refused_ts(p, "torch's loader did not finish in 0.3 s")
            self.check(time.monotonic() - t < 10, "the load is stopped at the limit")
        finally:
            del os.environ["RNND_CONVERT_VERIFY_SECONDS"]

    def test_load_memory_capped(self):
        p = repacked("c4_big", code=self.chain(30000))
        os.environ["RNND_CONVERT_LOAD_GIB"] = "0.05"
        try:
            self.refused_ts(p, "torch's loader needed more than 0.05 GiB")
        finally:
            del os.environ["RNND_CONVERT_LOAD_GIB"]

    def test_setting_checked(self):
        os.environ["RNND_CONVERT_LOAD_GIB"] = "lots"
        try:
            self.refused_ts(repacked("c4_setting"), "RNND_CONVERT_LOAD_GIB")
        finally:
            del os.environ["RNND_CONVERT_LOAD_GIB"]

    def test_plain_model_converts(self):
        p = repacked("c4_plain", code=self.chain(100))
        rc, err, out = self.run_cli(p)
        self.check(rc == 0 and os.path.exists(out), "100 no-op lines convert: %s" % err)


if __name__ == "__main__":
    unittest.main()
