#!/usr/bin/env python3
"""What an outside adversary found against the converter in its sixth round (issue 14):

- H4: the ONNX importer fused the tanh form of GELU without reading the number the cube is
  multiplied by (0.044715): a graph with another number there converted as GELU. Now it must
  be 0.044715 (within its type's rounding), else the graph is refused at that Mul.

Env: PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import contextlib
import io
import os
import unittest
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from daemon_util import Case, tmpdir
from rnnd_convert import cli

warnings.filterwarnings("ignore")
WORK = tmpdir("convert_adv6")
I, H = 3, 4


def path(name):
    return os.path.join(WORK, name)


def cli_run(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(list(args))
    return rc, err.getvalue().strip()


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
        rc, err = cli_run(p, "-o", out)
        self.check(rc != 0 and not os.path.exists(out), "%s: rnnd-convert exits %d"
                   % (os.path.basename(p), rc))
        self.check(len(err.splitlines()) == 1 and "internal error" not in err,
                   "%s: one-line refusal: %s" % (os.path.basename(p), err))
        for w in words:
            self.check(w in err, "%s: the refusal says %r: %s" % (os.path.basename(p), w, err))
        return err

    def converts(self, p):
        out = p[:-5] + ".rnnd"
        rc, err = cli_run(p, "-o", out)
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


if __name__ == "__main__":
    unittest.main()
