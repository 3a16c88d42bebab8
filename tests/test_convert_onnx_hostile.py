#!/usr/bin/env python3
"""The ONNX door of rnnd-convert against files that ask for too much, and forms issue 14's
outside trials found it got wrong (docs/convert.md "ONNX").

- External data (adversary 4): a tensor's declared offset, length and file size are compared
  with what its dims take before anything is read; a sparse file of 1 GiB is refused at
  once in one line naming the tensor, in little memory; a size beyond 1 GiB per tensor or
  4 GiB in all is refused before reading; inline data not matching its dims names the
  tensor.
- Zero tensors made from the input's shape (adversary 5): a zero initial state whose shape
  is computed in a way the converter cannot follow, or is not [dirs, batch, hidden], is
  refused; one too large is refused by the folding bound before anything is made, and
  verification's onnx_run refuses to make such a tensor.
- A univariate forecaster, forward(x: [B, T]) with x.unsqueeze(-1) (user 4): converts at
  opsets 9, 14, 17 and computes what torch does.
- A transposed output, permute(0, 2, 1) (user 15): refused; with that check disabled,
  verification catches it.
- State inputs (adversary 3): torch's (h_0, c_0) map to rnnd's initial state (checked with
  random states against torch); states wired crosswise, an LSTM given h alone, a transposed
  state and layers reordered by index_select are refused.
- Messages (user 9, 11, 12): a learned initial state names initial_state, packed sequences
  name pack_padded_sequence, a model of tools/rnnd_modules points to from_module.

Env: PYTHON3, PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import os
import subprocess
import time
import unittest
import warnings
from unittest import mock

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from daemon_util import PYTHON3, Case, main_inproc, scratch
from rnnd_convert import onnx_import, onnx_run, reference
from rnnd_convert.arch import ConvertError

warnings.filterwarnings("ignore")
path = scratch("convert_onnx_hostile")
I, H = 4, 5


def child(*args):
    """(rc, stderr, seconds, peak RSS in bytes) of `python3 -m rnnd_convert ARGS`."""
    t0 = time.time()
    p = subprocess.Popen([PYTHON3, "-m", "rnnd_convert"] + list(args),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, err, time.time() - t0, ru.ru_maxrss * 1024


def f32(a):
    return np.asarray(a, dtype=np.float32)


def lstm_weights(seed=0):
    rng = np.random.default_rng(seed)
    return f32(rng.standard_normal((1, 4 * H, I))), f32(rng.standard_normal((1, 4 * H, H)))


def save(name, nodes, inits, extra_tensors=(), in_shape=("T", "N", I), opset=14):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     list(in_shape))],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()] +
                          list(extra_tensors))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    p = path(name)
    with open(p, "wb") as f:
        f.write(m.SerializeToString())
    return p


def external(name, dims, location, **info):
    """A float tensor NAME of DIMS stored at LOCATION (offset / length from INFO)."""
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.FLOAT
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in [("location", location)] + sorted(info.items()):
        e = t.external_data.add()
        e.key, e.value = k, str(v)
    return t


def lstm_nodes(h0=""):
    return [helper.make_node("LSTM", ["x", "W", "R", "", "", h0], ["Y"], name="lstm",
                             hidden_size=H),
            helper.make_node("Squeeze", ["Y", "ax1"], ["out"], name="sq")]


def ext_model(name, r_tensor, extra=()):
    """An LSTM graph whose R is the external tensor R_TENSOR."""
    W, _ = lstm_weights()
    return save(name, lstm_nodes(), {"W": W, "ax1": np.array([1])},
                [r_tensor] + list(extra))


class ExternalData(Case):
    def refused(self, p, needle, what):
        out = path("refused.rnnd")
        rc, err = main_inproc(p, "-o", out)
        self.check(rc == 1 and err.count("\n") == 1 and
                   err.startswith("rnnd-convert: %s: " % p) and needle in err and
                   "internal error" not in err,
                   "%s: one line naming the file with %r: rc %d %r" % (what, needle, rc, err))
        self.check(not os.path.exists(out), "%s: nothing written" % what)

    def test_sparse_file_without_length(self):
        """The adversary's file: R declares [1, 20, 5] and no length; its data file is 1 GiB
        of holes. The old loader read it whole (1 GiB resident, twice over) and then failed
        with an internal error."""
        d = path("sparse")
        os.makedirs(d, exist_ok=True)
        p = ext_model("sparse/m.onnx", external("R", [1, 4 * H, H], "big.bin", offset=0))
        with open(os.path.join(d, "big.bin"), "wb") as f:
            f.truncate(1 << 30)
        rc, err, secs, rss = child(p, "-o", os.path.join(d, "m.rnnd"))
        want = ("rnnd-convert: %s: tensor 'R': external data 'big.bin': the file holds "
                "1073741824 bytes from offset 0, but its dims [1, 20, 5] take 400\n" % p)
        self.eq(err, want, "a 1 GiB sparse data file for a 400-byte tensor")
        self.eq(rc, 1, "exit status")
        self.check(rss < 400 << 20 and secs < 30, "refused before reading: %.1f s, peak RSS "
                   "%d MiB (the old loader held over 1 GiB)" % (secs, rss >> 20))

    def test_declared_sizes(self):
        d = path("declared")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "r.bin"), "wb") as f:
            f.write(f32(lstm_weights()[1]).tobytes() + b"\0" * 400)     # 800 bytes
        p = ext_model("declared/len.onnx", external("R", [1, 20, 5], "r.bin", offset=0,
                                                    length=800))
        self.refused(p, "tensor 'R': external data 'r.bin': length is 800 bytes from offset "
                     "0, but its dims [1, 20, 5] take 400", "a length other than the dims'")
        p = ext_model("declared/beyond.onnx", external("R", [1, 20, 5], "r.bin", offset=600,
                                                       length=400))
        self.refused(p, "tensor 'R': external data 'r.bin': offset 600 and length 400 reach "
                     "beyond the file's 800 bytes", "a length beyond the file")
        p = ext_model("declared/offset.onnx", external("R", [1, 20, 5], "r.bin", offset=900))
        self.refused(p, "tensor 'R': external data 'r.bin': offset 900 is outside the file's "
                     "800 bytes", "an offset beyond the file")
        # 5 GiB declared, in a file of 800 bytes: refused by its dims alone
        p = ext_model("declared/huge.onnx", external("R", [1, 20, 1 << 26], "r.bin"))
        self.refused(p, "tensor 'R': external data 'r.bin': its dims [1, 20, 67108864] take "
                     "5368709120 bytes; rnnd-convert reads at most 1024 MiB per tensor",
                     "a tensor of 5 GiB")
        # the right offset and length convert, and the weights are the file's
        p = ext_model("declared/ok.onnx", external("R", [1, 20, 5], "r.bin", offset=0,
                                                   length=400))
        rc, err = main_inproc(p, "-o", path("declared/ok.rnnd"))
        self.check(rc == 0, "offset 0, length 400 of an 800-byte file converts: %r" % err)

    def test_total_bound(self):
        """The total is checked over every external tensor before any is read (here with
        the bounds made small, so that the test reads little)."""
        d = path("total")
        os.makedirs(d, exist_ok=True)
        R = lstm_weights()[1]
        for k in range(3):
            with open(os.path.join(d, "r%d.bin" % k), "wb") as f:
                f.write(R.tobytes())
        p = ext_model("total/m.onnx", external("R", [1, 20, 5], "r0.bin"),
                      [external("U%d" % k, [1, 20, 5], "r%d.bin" % k) for k in (1, 2)])
        opened = []
        real_open = open

        def spy(name, *a, **kw):
            if str(name).endswith(".bin"):
                opened.append(name)
            return real_open(name, *a, **kw)
        with mock.patch.object(onnx_import, "MAX_EXTERNAL_TOTAL", 1000), \
                mock.patch("builtins.open", spy):
            self.refused(p, "tensor 'U2': external data 'r2.bin': the model's external data "
                         "take more than 0 MiB in all", "1200 bytes over a bound of 1000")
        self.eq(opened, [], "no data file opened before the bound is checked")
        with mock.patch.object(onnx_import, "MAX_EXTERNAL_TENSOR", 399):
            self.refused(p, "tensor 'R': external data 'r0.bin': its dims [1, 20, 5] take 400 "
                         "bytes", "a tensor over the bound per tensor")
        rc, err = main_inproc(p, "-o", path("total/m.rnnd"))
        self.check(rc == 0, "three external tensors within the bounds convert: %r" % err)

    def test_inline_data_mismatch(self):
        W, R = lstm_weights()
        bad = numpy_helper.from_array(R, "R")
        bad.raw_data = bad.raw_data[:7]
        p = save("inline.onnx", lstm_nodes(), {"W": W, "ax1": np.array([1])}, [bad])
        self.refused(p, "tensor 'R': its data do not match its dims [1, 20, 5]",
                     "raw_data of 7 bytes")


def zero_state_graph(name, shape_nodes, shape_name, inits, slice_first=None):
    """LSTM(x) whose initial_h is ConstantOfShape(SHAPE_NAME), SHAPE_NAME made by SHAPE_NODES
    from Shape(x); SLICE_FIRST: a Slice [0:n] of axis 0 between."""
    W, R = lstm_weights()
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "one"], ["b"], name="batch")] + shape_nodes
    nodes.append(helper.make_node("ConstantOfShape", [shape_name], ["h0"], name="zeros",
                                  value=numpy_helper.from_array(np.zeros(1, np.float32))))
    h0 = "h0"
    if slice_first is not None:
        nodes.append(helper.make_node("Slice", ["h0", "zero1", "n1", "zero1"], ["h0s"],
                                      name="slice"))
        inits = dict(inits, zero1=np.array([0]), n1=np.array([slice_first]))
        h0 = "h0s"
    nodes += lstm_nodes(h0)
    inits = dict(inits, W=W, R=R, ax1=np.array([1]), one=np.array([1]))
    return save(name, nodes, inits)


class ZeroStates(Case):
    def refused(self, p, needle, what):
        rc, err = main_inproc(p, "-o", path("zero_refused.rnnd"))
        self.check(rc == 1 and err.count("\n") == 1 and needle in err and
                   "internal error" not in err,
                   "%s: refused with %r: rc %d %r" % (what, needle, rc, err))

    def test_shape_from_arithmetic(self):
        """The adversary's e_zero.py: h0 = zeros([1, batch * 1000, H]) (the old converter
        ended in an internal error, or, with a larger factor, a MemoryError)."""
        p = zero_state_graph("zero_mul.onnx", [
            helper.make_node("Mul", ["b", "big"], ["bb"], name="mul"),
            helper.make_node("Concat", ["c1", "bb", "cH"], ["shp"], name="cat", axis=0)],
            "shp", {"big": np.array([1000]), "c1": np.array([1]), "cH": np.array([H])})
        self.refused(p, "node 'lstm' (LSTM): initial_h is zeros of a shape computed in a way "
                     "rnnd-convert cannot follow; this node takes [1, batch, 5]",
                     "zeros of [1, batch * 1000, H]")

    def test_wrong_shape(self):
        """zeros([2, batch, H]) for a one-direction node: ONNX Runtime refuses the graph;
        the old converter took it (its check read the first row only)."""
        p = zero_state_graph("zero_dirs.onnx", [
            helper.make_node("Concat", ["c2", "b", "cH"], ["shp"], name="cat", axis=0)],
            "shp", {"c2": np.array([2]), "cH": np.array([H])})
        self.refused(p, "node 'lstm' (LSTM): initial_h is zeros of shape [2, batch, 5], but "
                     "this node takes [1, batch, 5]", "zeros of [2, batch, H]")
        p = zero_state_graph("zero_hidden.onnx", [
            helper.make_node("Concat", ["c1", "b", "c7"], ["shp"], name="cat", axis=0)],
            "shp", {"c1": np.array([1]), "c7": np.array([7])})
        self.refused(p, "initial_h is zeros of shape [1, batch, 7], but this node takes "
                     "[1, batch, 5]", "zeros of [1, batch, 7]")
        # a constant zero state of the wrong shape likewise
        W, R = lstm_weights()
        p = save("zero_const.onnx", lstm_nodes("h0"), {"W": W, "R": R, "ax1": np.array([1]),
                                                       "h0": np.zeros((2, 1, H), np.float32)})
        self.refused(p, "initial_h is zeros of shape [2, 1, 5], but this node takes "
                     "[1, batch, 5]", "a constant zero state of [2, 1, H]")
        # the right shape converts (and is verified)
        p = zero_state_graph("zero_ok.onnx", [
            helper.make_node("Concat", ["c3", "b", "cH"], ["shp"], name="cat", axis=0)],
            "shp", {"c3": np.array([3]), "cH": np.array([H])}, slice_first=1)
        rc, err = main_inproc(p, "-o", path("zero_ok.rnnd"))
        self.check(rc == 0, "zeros([3, batch, H])[0:1] converts: %r" % err)

    def test_too_large(self):
        """zeros([2^24, batch, H])[0:1]: the right shape in the end, but 2^24 * 5 elements
        per sequence are beyond the folding bound (the old converter made 1 GiB of them for
        every verification run)."""
        p = zero_state_graph("zero_big.onnx", [
            helper.make_node("Concat", ["cN", "b", "cH"], ["shp"], name="cat", axis=0)],
            "shp", {"cN": np.array([1 << 24]), "cH": np.array([H])}, slice_first=1)
        t0 = time.time()
        self.refused(p, "node 'zeros' (ConstantOfShape): makes a tensor of at least 83886080 "
                     "elements from the input's shape; rnnd-convert folds at most 67108864",
                     "zeros of [2^24, batch, H]")
        self.check(time.time() - t0 < 10, "refused at once")

    def test_onnx_run_bounds(self):
        """Verification's interpreter refuses to make a tensor beyond the bound, naming the
        node, instead of allocating it (or raising MemoryError)."""
        for op, ins, inits in (
                ("ConstantOfShape", ["shp"], {}),
                ("Expand", ["one_f", "shp"], {"one_f": np.ones(1, np.float32)}),
                ("Tile", ["one_f", "shp"], {"one_f": np.ones(1, np.float32)})):
            nodes = [helper.make_node("Cast", ["x"], ["xi"], name="cast", to=TensorProto.INT64),
                     helper.make_node("Mul", ["xi", "big"], ["shp"], name="mul"),
                     helper.make_node(op, ins, ["out"], name="make")]
            g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info(
                    "out", TensorProto.FLOAT, None)],
                [numpy_helper.from_array(v, k) for k, v in
                 dict(inits, big=np.array([1 << 20])).items()])
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
            try:
                onnx_run._Graph(m).run({"x": np.array([1 << 20], np.float32)})
                got = "ran"
            except ConvertError as e:
                got = str(e)
            except MemoryError as e:
                got = "MemoryError %s" % e
            self.check(got.startswith("verification: node 'make' (%s) would make a tensor of "
                                      "1099511627776 elements" % op),
                       "onnx_run %s of 2^40 elements: %s" % (op, got))
        # bytes held at once (outside trial A5): two tensors of 800 bytes read by one last
        # node pass a budget of 1000 only when the first is let go before the second is made
        f64 = numpy_helper.from_array(np.ones(1, np.float64))
        for reads, ok in (("a", False), ("b", True)):
            nodes = [helper.make_node("ConstantOfShape", ["shp"], ["a"], name="one", value=f64),
                     helper.make_node("Neg", ["a"], ["b"], name="neg"),
                     helper.make_node("ConstantOfShape", ["shp"], ["c"], name="two", value=f64),
                     helper.make_node("Add", [reads, "c"], ["out"], name="add")]
            g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
                "shp", TensorProto.INT64, [1])], [helper.make_tensor_value_info(
                    "out", TensorProto.DOUBLE, None)])
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
            with mock.patch.object(onnx_run, "MAX_HELD_BYTES", 1000):
                try:
                    onnx_run._Graph(m).run({"shp": np.array([100])})
                    got = "ran"
                except ConvertError as e:
                    got = str(e)
            want = "ran" if ok else ("verification: node 'two' (ConstantOfShape) would make 800 "
                                     "bytes while 800 bytes of made tensors are held")
            self.check(got.startswith(want), "onnx_run, %s held at 'two': %s"
                       % ("nothing" if ok else "800 bytes", got))


def fold_graph(name, nodes, inits):
    """A graph x [B, T, I] -> `out` whose NODES fold on INITS before anything else."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["B", "T", I])], [helper.make_tensor_value_info(
            "out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.save(m, path(name))
    return path(name)


class FoldBytes(Case):
    """Folding is bounded in bytes held, not only in elements and work (issue 14, outside
    trial A5): five float64 tensors of 2^26 elements, each within the element bound, all
    read by one last node, made 2.5 GB before the old converter refused that node; a
    complex128 ConstantOfShape made 16 bytes an element."""

    def test_bytes_held(self):
        n = 1 << 26
        cos = helper.make_node("ConstantOfShape", ["shp"], ["c1"], name="cos",
                               value=numpy_helper.from_array(np.ones(1, np.float64)))
        nodes = [cos] + [helper.make_node("Add", ["c%d" % k, "c1"], ["c%d" % (k + 1)],
                                          name="add%d" % k) for k in range(1, 5)]
        nodes.append(helper.make_node("Max", ["c%d" % k for k in range(1, 6)], ["m"],
                                      name="max"))
        nodes.append(helper.make_node("Add", ["x", "m"], ["out"], name="use"))
        p = fold_graph("fold_bytes.onnx", nodes, {"shp": np.array([n])})
        rc, err, secs, rss = child(p, "-o", path("fold_bytes.rnnd"))
        budget = onnx_import.MAX_HELD_BYTES
        # since the sixth outside round (M2) what folding makes in all is bounded by the
        # file's own constants: this small file is refused at its first 512 MiB value,
        # before computing it (the bound on bytes held at once remains for large files)
        self.check(rc == 1 and err.count("\n") == 1 and "node 'cos'" in err and
                   "at most %d MiB more" % (onnx_import.FOLD_SLACK >> 20) in err and
                   "internal error" not in err,
                   "five tensors of 512 MiB held at once: refused on bytes: rc %d %r"
                   % (rc, err))
        self.check(rss < budget + (700 << 20),
                   "peak memory %d MiB stays near the budget of %d MiB"
                   % (rss >> 20, budget >> 20))
        # a chain that frees what no later node reads, within what folding may make:
        # refused only where the data path meets it, as before
        nodes = [cos] + [helper.make_node("Add", ["c%d" % k, "c%d" % k], ["c%d" % (k + 1)],
                                          name="add%d" % k) for k in range(1, 5)]
        nodes.append(helper.make_node("Add", ["x", "c5"], ["out"], name="use"))
        p = fold_graph("fold_chain.onnx", nodes, {"shp": np.array([1 << 18])})
        rc, err, secs, rss = child(p, "-o", path("fold_chain.rnnd"))
        self.check(rc == 1 and "node 'use' (Add)" in err and "does not act on the features"
                   in err, "a chain of 2 MiB tensors, each freed after its reader: %r"
                   % err)

    def test_complex(self):
        for what, nodes in (
                ("a complex128 ConstantOfShape", [helper.make_node(
                    "ConstantOfShape", ["shp"], ["c"], name="cos",
                    value=numpy_helper.from_array(np.ones(1, np.complex128)))]),
                ("a Cast to complex64", [
                    helper.make_node("ConstantOfShape", ["shp"], ["r"], name="cos"),
                    helper.make_node("Cast", ["r"], ["c"], name="cast",
                                     to=TensorProto.COMPLEX64)])):
            nodes = nodes + [helper.make_node("Add", ["x", "c"], ["out"], name="use")]
            p = fold_graph("complex.onnx", nodes, {"shp": np.array([I])})
            rc, err = main_inproc(p, "-o", path("complex.rnnd"))
            self.check(rc == 1 and err.count("\n") == 1 and "complex" in err and
                       "real numbers" in err and ("node 'cos'" in err or "node 'cast'" in err),
                       "%s: refused naming the node: %r" % (what, err))

# ---- models exported by torch -------------------------------------------------------------
class Forecast(nn.Module):
    """A univariate series [B, T] -> unsqueeze(-1) -> LSTM -> a Linear of every step, or of
    the last"""

    def __init__(self, layers, last):
        super().__init__()
        self.lstm = nn.LSTM(1, 8, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(8, 1)
        self.last = last

    def forward(self, x):
        out, _ = self.lstm(x.unsqueeze(-1))
        return self.fc(out[:, -1] if self.last else out)


class Permuted(nn.Module):
    """a per-step classifier returning [B, C, T] (CrossEntropyLoss's layout)"""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(6, 12, batch_first=True)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(self.gru(x)[0]).permute(0, 2, 1)


class TimeMajor(nn.Module):
    """[T, B, C] out of a time-major GRU: the batch may be anywhere"""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(6, 12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(self.gru(x)[0])


class LearnedH0(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(6, 10, batch_first=True)
        self.h0 = nn.Parameter(torch.randn(1, 1, 10))
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        return self.fc(self.gru(x, self.h0.expand(1, x.size(0), 10).contiguous())[0])


class ZerosTutorial(nn.Module):
    """explicit zero h0, c0 of [layers * 2, B, H], bidirectional, batch_first"""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 10, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(20, 3)

    def forward(self, x):
        h0 = torch.zeros(4, x.size(0), 10)
        c0 = torch.zeros(4, x.size(0), 10)
        return self.fc(self.lstm(x, (h0, c0))[0][:, -1, :])


class Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 5, batch_first=True)

    def forward(self, x):
        n = torch.full((x.size(0),), x.size(1), dtype=torch.long)
        p = nn.utils.rnn.pack_padded_sequence(x, n, batch_first=True)
        return nn.utils.rnn.pad_packed_sequence(self.rnn(p)[0], batch_first=True)[0]


def export(net, x, name, opset, batch_axis=0, time_axis=1):
    p = path("%s_%d.onnx" % (name, opset))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (x,), p, input_names=["x"], opset_version=opset,
                          dynamic_axes={"x": {batch_axis: "batch", time_axis: "time"}})
    return p


class TorchExports(Case):
    def test_univariate_forecaster(self):
        """forward(x: [B, T]) with x.unsqueeze(-1): one feature per step (user finding 4;
        the old importer said "cannot tell which axis")."""
        rng = np.random.default_rng(3)
        for layers, last in ((1, False), (2, True)):
            torch.manual_seed(layers)
            net = Forecast(layers, last).eval()
            for opset in (9, 14, 17):
                what = "forecaster (%d layers, %s) at opset %d" % (
                    layers, "last step" if last else "every step", opset)
                p = export(net, torch.randn(2, 5), "forecast%d%d" % (layers, last), opset)
                out = p[:-5] + ".rnnd"
                rc, err = main_inproc(p, "-o", out)
                if not self.check(rc == 0, "%s converts: %r" % (what, err)):
                    continue
                m = reference.load(out)
                self.eq((m.arch["input"]["kind"], m.arch["input"]["dim"]), ("vectors", 1),
                        what + ": input")
                xs = [f32(rng.standard_normal(T)) for T in (1, 9, 70)]
                got = reference.run(m, [x[:, None] for x in xs])[0]
                with torch.no_grad():
                    want = [net(torch.from_numpy(x)[None])[0].numpy() for x in xs]
                err_max = max(float(np.max(np.abs(np.asarray(g).reshape(-1) -
                                                  np.asarray(w).reshape(-1))))
                              for g, w in zip(got, want))
                self.check(err_max < 1e-5, "%s: rnnd equals torch (max error %.3g)"
                           % (what, err_max))

    def test_permuted_output(self):
        """fc(y).permute(0, 2, 1): refused (user finding 15: the old importer served
        [T, C] rows with verified: yes). With the check disabled, verification catches it:
        onnx_run no longer rearranges the source's output to match."""
        for opset in (9, 14, 17):
            p = export(Permuted(), torch.randn(2, 5, 6), "permuted", opset)
            rc, err = main_inproc(p, "-o", path("permuted.rnnd"))
            self.check(rc == 1 and "puts its axes in the order [batch, features, time]" in err
                       and "permute(0, 2, 1)" in err,
                       "permute(0, 2, 1) at opset %d refused: %r" % (opset, err))
        with mock.patch.object(onnx_import.Importer, "check_output_order",
                               lambda self, name, y: None):
            rc, err = main_inproc(p, "-o", path("permuted.rnnd"))
        self.check(rc == 1 and "verification failed" in err,
                   "without the importer's check, verification refuses it: %r" % err)
        p = export(TimeMajor(), torch.randn(5, 2, 6), "timemajor", 14, 1, 0)
        rc, err = main_inproc(p, "-o", path("timemajor.rnnd"))
        self.check(rc == 0, "a time-major [T, B, C] output converts: %r" % err)

    def test_zero_states_from_torch(self):
        """torch's own zero states (explicit zeros of [layers * 2, B, H], and the ones the
        export writes) pass the shape check at every opset."""
        for opset in (9, 14, 17):
            p = export(ZerosTutorial(), torch.randn(2, 5, 6), "zeros", opset)
            rc, err = main_inproc(p, "-o", path("zeros.rnnd"))
            self.check(rc == 0, "explicit zeros at opset %d convert: %r" % (opset, err))

    def test_messages(self):
        """A learned initial state names initial_state, not pack_padded_sequence (user
        finding 9); packed sequences are named at the LSTM; a model without recurrent
        nodes is pointed to from_module (user findings 11, 12)."""
        for opset in (9, 14, 17):
            p = export(LearnedH0(), torch.randn(2, 5, 6), "learned_h0", opset)
            rc, err = main_inproc(p, "-o", path("h0.rnnd"))
            self.check(rc == 1 and "initial_h is not zero" in err and "learned h0" in err and
                       "initial_state" in err and "pack_padded" not in err,
                       "learned h0 at opset %d: %r" % (opset, err))
            p = export(Packed(), torch.randn(2, 5, 4), "packed", opset)
            rc, err = main_inproc(p, "-o", path("packed.rnnd"))
            self.check(rc == 1 and "sequence_lens is computed from the input's shape" in err
                       and "pack_padded_sequence" in err, "packed at opset %d: %r"
                       % (opset, err))
        from rnnd_modules.mingru import MinGRU

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = MinGRU(6, 10)
                self.fc = nn.Linear(10, 3)

            def forward(self, x):
                return self.fc(self.rnn(x)[0])
        p = export(M(), torch.randn(2, 5, 6), "mingru", 14)
        rc, err = main_inproc(p, "-o", path("mingru.rnnd"))
        self.check(rc == 1 and "holds no LSTM / GRU / RNN node" in err and
                   "rnnd_convert.from_module" in err, "MinGRU through ONNX: %r" % err)


class StateNet(nn.Module):
    """forward(x, hidden) returning (out, hidden), as word_language_model; SWAP reorders the
    layers of the hidden state on its way in (adversary 3's index_select)"""

    def __init__(self, kind="LSTM", layers=2, bidir=True, swap=False):
        super().__init__()
        self.rnn = getattr(nn, kind)(4, 5, num_layers=layers, bidirectional=bidir)
        self.fc = nn.Linear(10 if bidir else 5, 3)
        self.lstm, self.swap = kind == "LSTM", swap

    def forward(self, x, hidden):
        if self.swap:
            idx = torch.tensor([1, 0])
            hidden = (hidden[0].index_select(0, idx), hidden[1].index_select(0, idx)) \
                if self.lstm else hidden.index_select(0, idx)
        y, hidden = self.rnn(x, hidden)
        return self.fc(y), hidden


class TwoModules(nn.Module):
    """Two recurrent modules of hidden sizes 8 and 5, each given its own initial state."""

    def __init__(self, kind):
        super().__init__()
        self.a = getattr(nn, kind)(4, 8)
        self.b = getattr(nn, kind)(8, 5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x, s1, s2):
        y, _ = self.a(x, s1)
        y, _ = self.b(y, s2)
        return self.fc(y)


def export_state(net, name, opset, lstm):
    p = path("%s_%d.onnx" % (name, opset))
    n = net.rnn.num_layers * (2 if net.rnn.bidirectional else 1)
    hid = (torch.zeros(n, 2, 5), torch.zeros(n, 2, 5)) if lstm else torch.zeros(n, 2, 5)
    names = ["x"] + (["h0", "c0"] if lstm else ["h0"])
    axes = {"x": {0: "t", 1: "b"}, "h0": {1: "b"}, "c0": {1: "b"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.randn(5, 2, 4), hid), p, input_names=names,
                          opset_version=opset,
                          dynamic_axes={k: v for k, v in axes.items() if k in names})
    return p


def state_graph(name, h_in, c_in, h_src="h0", c_src="c0", op="LSTM", pre=()):
    """One LSTM / GRU node whose initial_h / initial_c are H_SRC / C_SRC, graph inputs H_IN,
    C_IN ([1, N, H] each) in that order; PRE: nodes before it."""
    W, R = lstm_weights()
    G = 4 if op == "LSTM" else 3
    inits = {"W": W[:, :G * H], "R": R[:, :G * H], "ax1": np.array([1])}
    ins = ["x", "W", "R", "", "", h_src] + ([c_src] if op == "LSTM" and c_src else [])
    nodes = list(pre) + [helper.make_node(op, ins, ["Y"], name="rec", hidden_size=H),
                         helper.make_node("Squeeze", ["Y", "ax1"], ["out"], name="sq")]
    gin = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", I])] + [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "N", H])
        for n in (h_in, c_in) if n]
    g = helper.make_graph(nodes, "g", gin, [helper.make_tensor_value_info(
        "out", TensorProto.FLOAT, None)], [numpy_helper.from_array(v, k)
                                          for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    p = path(name)
    onnx.save(m, p)
    return p


class StateInputs(Case):
    """A graph input of initial states is rnnd's initial state (infer's initial_state, a
    session's state): h then c of each layer and direction, as torch's (h_0, c_0) rows
    [layers * directions]. Verification feeds zeros only, so a graph that rearranges the
    state on its way in used to convert with verified: yes (adversary 3)."""

    def refused(self, p, needle, what):
        rc, err = main_inproc(p, "-o", path("state_refused.rnnd"))
        self.check(rc == 1 and err.count("\n") == 1 and needle in err,
                   "%s: refused with %r: rc %d %r" % (what, needle, rc, err))

    def test_torch_hidden_maps_to_initial_state(self):
        rng = np.random.default_rng(5)
        for kind, layers, bidir in (("LSTM", 2, True), ("GRU", 2, False)):
            lstm = kind == "LSTM"
            torch.manual_seed(7)
            net = StateNet(kind, layers, bidir).eval()
            nd = 2 if bidir else 1
            for opset in (9, 14, 17):
                what = "%s %d layers%s at opset %d" % (kind, layers, ", bidirectional"
                                                      if bidir else "", opset)
                p = export_state(net, "state_%s" % kind, opset, lstm)
                out = p[:-5] + ".rnnd"
                rc, err = main_inproc(p, "-o", out)
                if not self.check(rc == 0, "%s converts: %r" % (what, err)):
                    continue
                x = f32(rng.standard_normal((7, 1, 4)))
                h0 = f32(rng.standard_normal((layers * nd, 1, 5)))
                c0 = f32(rng.standard_normal((layers * nd, 1, 5)))
                with torch.no_grad():
                    want = net(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(
                        c0)) if lstm else torch.from_numpy(h0))[0][:, 0].numpy()
                init = np.concatenate([np.concatenate([h0[r, 0], c0[r, 0]]) if lstm
                                       else h0[r, 0] for r in range(layers * nd)])
                got = reference.run(reference.load(out), [x[:, 0]], initial_states=[init])[0][0]
                e = float(np.max(np.abs(np.asarray(got) - want)))
                self.check(e < 1e-5, "%s: torch's (h_0, c_0) rows are rnnd's initial state, "
                           "h then c per layer and direction (max error %.3g)" % (what, e))
                # verification's runner of the ONNX graph feeds an rnnd state the same way
                imp = onnx_import.Importer(onnx_import.read(p))
                imp.run()
                src = onnx_run.source_runner(imp.proto, imp)(x.transpose(1, 0, 2), init[None])
                e = float(np.max(np.abs(src[0] - want)))
                self.check(e < 1e-5, "%s: onnx_run.source_runner from the same state (max "
                           "error %.3g)" % (what, e))

    def test_per_module_states(self):
        """forward(x, h1, h2) (or (h1, c1), (h2, c2)) of two modules whose hidden sizes
        differ (V2): each input is its module's [1, batch, H_k]; the old importer refused
        the second ("rows [0] of graph input 'h2'"), and its check fed one stacked tensor,
        so it could not run. Now it converts, checked from random initial states (the
        record says initial_state_checked), and rnnd from a state equals torch."""
        import json
        import struct
        rng = np.random.default_rng(6)
        for kind in ("GRU", "LSTM"):
            torch.manual_seed(8)
            net = TwoModules(kind).eval()
            lstm = kind == "LSTM"
            for opset in (9, 14, 17):
                what = "two nn.%s of 8 and 5 at opset %d" % (kind, opset)
                p = path("two_%s_%d.onnx" % (kind, opset))
                hid = [torch.zeros(1, 2, n) for n in (8, 5)]
                args = (torch.randn(6, 2, 4),) + (tuple((h, h.clone()) for h in hid) if lstm
                                                  else tuple(hid))
                names = ["x", "h1", "c1", "h2", "c2"] if lstm else ["x", "h1", "h2"]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(net, args, p, input_names=names, opset_version=opset,
                                      dynamic_axes=dict({"x": {0: "t", 1: "b"}}, **{
                                          n: {1: "b"} for n in names[1:]}))
                out = p[:-5] + ".rnnd"
                rc, err = main_inproc(p, "-o", out)
                if not self.check(rc == 0, "%s converts: %r" % (what, err)):
                    continue
                with open(out, "rb") as f:
                    data = f.read()
                (n,) = struct.unpack("<Q", data[:8])
                rec = json.loads(json.loads(data[8:8 + n])["__metadata__"]["verification"])
                self.check(rec.get("initial_state_checked") is True,
                           "%s: initial_state_checked: %r" % (what, rec))
                x = f32(rng.standard_normal((7, 1, 4)))
                st = [(f32(rng.standard_normal((1, 1, n))), f32(rng.standard_normal((1, 1, n))))
                      for n in (8, 5)]
                with torch.no_grad():
                    targs = [torch.from_numpy(x)] + [
                        (torch.from_numpy(h), torch.from_numpy(c)) if lstm else
                        torch.from_numpy(h) for h, c in st]
                    want = net(*targs)[:, 0].numpy()
                init = np.concatenate([np.concatenate([h[0, 0], c[0, 0]]) if lstm else h[0, 0]
                                       for h, c in st])
                got = reference.run(reference.load(out), [x[:, 0]], initial_states=[init])[0][0]
                e = float(np.max(np.abs(np.asarray(got) - want)))
                self.check(e < 1e-5, "%s: each module's state is its layer's in rnnd's state "
                           "(max error %.3g)" % (what, e))

    def test_rearranged_states(self):
        self.refused(state_graph("state_cross.onnx", "h0", "c0", h_src="c0", c_src="h0"),
                     "graph input 'h0' feeds initial_c and 'c0', a later input, initial_h",
                     "initial_h and initial_c wired crosswise (adversary's b_onnx.py)")
        self.refused(state_graph("state_h_only.onnx", "h0", None, c_src=None),
                     "layer 0 starts its initial_c from zeros",
                     "an LSTM given initial_h alone")
        self.refused(state_graph("state_t.onnx", "h", "c0", h_src="h0", pre=[
            helper.make_node("Transpose", ["h"], ["h0"], name="t", perm=[0, 2, 1])]),
            "initial_h comes from graph input 'h' rearranged", "a transposed state")
        rc, err = main_inproc(state_graph("state_ok.onnx", "h0", "c0"), "-o",
                              path("state_ok.rnnd"))
        self.check(rc == 0, "h0, c0 in order convert: %r" % err)
        for opset in (9, 14, 17):
            torch.manual_seed(7)
            p = export_state(StateNet("LSTM", 2, False, swap=True), "state_swap", opset, True)
            self.refused(p, "comes from rows [1] of graph input 'h0'; rnnd's initial state",
                         "layers swapped by index_select at opset %d" % opset)


if __name__ == "__main__":
    unittest.main()
