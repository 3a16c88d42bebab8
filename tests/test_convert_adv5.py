#!/usr/bin/env python3
"""Silent wrong conversions an outside adversary found in its fifth round (issue 14,
the adversary's H1-H8, L1, L2): each module here converted with `verified: yes` while it
computes something else than its source on inputs verification did not run, or (L1, L2) an
invalid ONNX graph converted or crashed.

- Backstop: a context window of 250 steps on a cell loop's output list (H1), a dropout flag,
  an initial state or a branch computed from the length (H2), a reset every 256 steps in a
  cell loop (H3 f7 A, H4 f7 B), a reset at an all-zero step (H3 f6), a dropout flag read
  from requires_grad (H6) and a forward() that changes a parameter through a view (H4 f9)
  are refused, by verification's longer, larger, zero-step, grad-mode and repeated passes.
- State: a class attribute forward() changes (H5) is refused by the probe.
- TorchScript files: a condition TorchScript decides otherwise than Python (H7) and a module
  without forward() (H8) are refused.
- ONNX: ReduceMean axes out of range give a one-line refusal (L1); graphs the ONNX checker
  rejects (Softmax axis 5 of rank 3, a float Gather index, an int32 W, opset 99) are
  refused with its message (L2).

Env: PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import os
import unittest
import warnings
from unittest import mock
from typing import List

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import rnnd_convert
from daemon_util import Case, main_inproc, scratch
from rnnd_convert import torch_import, verify
from rnnd_convert.errors import ConvertError

warnings.filterwarnings("ignore")
path = scratch("convert_adv5")


class Gru(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)


class Cell(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(3, 4)
        self.fc = nn.Linear(4, 2)


class Window(Cell):                       # H1
    def forward(self, x):
        h = torch.zeros(x.size(0), 4)
        ys: List[torch.Tensor] = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            ys.append(h)
        while len(ys) > 250:
            ys.pop(0)
        return self.fc(torch.stack(ys, 1).mean(1))


class DropoutFlag(Gru):                   # H2 f2
    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(F.dropout(y, p=1.0, training=x.size(1) > 256))


class StateFromSize(Gru):                 # H2 f3
    def forward(self, x):
        h0 = torch.full((1, x.size(0), 4), float(x.size(1) // 256))
        y, _ = self.rnn(x, h0)
        return self.fc(y)


class LoopCount(Gru):                     # H2 f4
    def forward(self, x):
        n = 0
        for _ in range(x.size(1)):
            n += 1
        if n > 256:
            h0 = torch.ones(1, x.size(0), 4)
        else:
            h0 = torch.zeros(1, x.size(0), 4)
        y, _ = self.rnn(x, h0)
        return self.fc(y)


class BatchFlag(Gru):                     # H2, the batch
    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(F.dropout(y, p=1.0, training=x.size(0) > 5))


class ZeroStepReset(Cell):                # H3 f6
    def forward(self, x):
        h = torch.zeros(x.size(0), 4)
        ys: List[torch.Tensor] = []
        for t in range(x.size(1)):
            sep = bool((x[:, t] == 0.0).all())
            h = F.dropout(self.cell(x[:, t], h), p=1.0, training=sep)
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


class StepReset(Cell):                    # H3 f7 A
    def forward(self, x):
        h = torch.zeros(x.size(0), 4)
        ys: List[torch.Tensor] = []
        for t in range(x.size(1)):
            h = F.dropout(self.cell(x[:, t], h), p=1.0, training=t % 256 == 255)
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


class AliasReset(Cell):                   # H4 f7 B
    def forward(self, x):
        h = torch.zeros(x.size(0), 4)
        ys: List[torch.Tensor] = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            ys.append(h)
            ys[-1].mul_(float(t % 256 != 255))
        return self.fc(torch.stack(ys, 1))


class GradFlag(Gru):                      # H6
    def forward(self, x):
        y, _ = self.rnn(x)
        grad_on = (self.fc.bias * 1.0).requires_grad
        return self.fc(F.dropout(y, p=1.0, training=grad_on))


class ClassCounter(Gru):                  # H5
    served = 0

    def forward(self, x):
        ClassCounter.served += 1
        y, _ = self.rnn(x)
        if ClassCounter.served > 100:
            y = y * 2
        return self.fc(y)


class AliasWrite(Gru):                    # H4 f9
    def forward(self, x):
        y, _ = self.rnn(x)
        out = self.fc(y)
        self.fc.bias[:] += 0.01
        return out


class CondSemantics(Gru):                 # H7
    def __init__(self):
        super().__init__()
        self.a = 2 ** 53 + 1
        self.b = 2.0 ** 53

    def forward(self, x):
        y, _ = self.rnn(x)
        if self.a == self.b:              # Python: False; TorchScript: True
            if x.size(1) > 256:
                y = torch.zeros_like(y)
        return self.fc(y)


class NoForward(Gru):                     # H8
    @torch.jit.export
    def forward__0(self, x):
        y, _ = self.rnn(x)
        if x.size(1) > 256:
            y = torch.zeros_like(y)
        return self.fc(y)


class Bigram(nn.Module):                 # H3 f10: a reset after the ids 7, 3
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(1000, 4)
        self.cell = nn.GRUCell(4, 4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        e = self.emb(x)
        h = torch.zeros(x.size(0), 4)
        ys: List[torch.Tensor] = []
        prev = False
        for t in range(x.size(1)):
            now = bool((e[:, t] == self.emb.weight[3]).all())
            h = F.dropout(self.cell(e[:, t], h), p=1.0, training=(prev == True) & now)  # noqa
            prev = bool((e[:, t] == self.emb.weight[7]).all())
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


class Plain(Gru):
    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y)


class Modules(Case):
    def refused(self, cls, name):
        torch.manual_seed(5)
        out = path(name + ".rnnd")
        try:
            rnnd_convert.from_module(cls().eval(), out)
        except ConvertError as e:
            return str(e)
        self.fail_check("%s: converted, though it computes otherwise than its source on "
                        "some inputs" % name)
        return ""

    def test_window_after_cell_loop(self):
        self.refused(Window, "window")

    def test_dropout_flag_from_length(self):
        self.refused(DropoutFlag, "dropout_flag")

    def test_state_from_length(self):
        self.refused(StateFromSize, "state_from_size")

    def test_branch_on_loop_count(self):
        self.refused(LoopCount, "loop_count")

    def test_dropout_flag_from_batch(self):
        self.refused(BatchFlag, "batch_flag")

    def test_reset_at_zero_step(self):
        self.refused(ZeroStepReset, "zero_step")

    def test_reset_every_256_steps(self):
        self.refused(StepReset, "step_reset")

    def test_reset_through_alias(self):
        self.refused(AliasReset, "alias_reset")

    def test_grad_mode_through_requires_grad(self):
        self.refused(GradFlag, "grad_flag")

    def test_class_attribute_counter(self):
        msg = self.refused(ClassCounter, "class_counter")
        self.check("served" in msg, "the refusal names the class attribute: %s" % msg)

    def test_plain_converts_and_records_the_passes(self):
        torch.manual_seed(5)
        out = path("plain.rnnd")
        rnnd_convert.from_module(Plain().eval(), out)
        self.check(os.path.exists(out), "a plain GRU converts")


class Analysis(Modules):
    """The same modules with verification's backstop pass left out: the analysis of
    forward() alone refuses each (the backstop is a second line, and any fixed set of
    inputs can be targeted: a limit of 1000 steps would pass it)."""

    def refused(self, cls, name):
        with mock.patch.object(verify, "_backstop", lambda *a: False):
            return Modules.refused(self, cls, name)

    def test_reset_after_bigram(self):
        self.refused(Bigram, "bigram")

    def test_plain_converts_and_records_the_passes(self):
        with mock.patch.object(verify, "_backstop", lambda *a: False):
            Modules.test_plain_converts_and_records_the_passes(self)

    def test_class_attribute_counter(self):
        Modules.test_class_attribute_counter(self)


class Backstop(Case):
    """Verification's backstop pass on its own: a source off by 0.5 only past 256 steps, only
    above 5 sequences, only where a step is all zeros, only at its second call in one
    process, or only with gradients enabled, fails verification naming the pass; the
    faithful source passes."""

    def test_backstop(self):
        torch.manual_seed(8)
        net = nn.GRU(3, 4, batch_first=True).eval()
        p = path("backstop.rnnd")
        model = rnnd_convert.from_module(net, p, verify=False)
        run = torch_import.source_runner(net)

        def zero_step(x):
            return bool((x == 0).all(axis=2).all(axis=0).any())
        cases = (("past 256 steps", lambda x: x.shape[1] > 256, None),
                 ("above 5 sequences", lambda x: x.shape[0] > 5, None),
                 ("at an all-zero step", zero_step, None),
                 ("at a second call", None, 1),
                 ("with gradients enabled", None, 2))
        for what, bad, call in cases:
            def source(x, bad=bad):
                y = run(x)
                return y + 0.5 if bad is not None and bad(x) else y

            def stress(x, call=call, bad=bad):
                ys = run.stress(x)
                if call is not None:
                    ys[call] = ys[call] + 0.5
                elif bad(x):
                    ys = [y + 0.5 for y in ys]
                return ys
            source.stress = stress
            try:
                verify.compare(model, p, source, "torch")
                self.fail_check("a source that differs only %s passes verification" % what)
            except ConvertError as e:
                self.check("verification failed" in str(e) and "backstop pass" in str(e),
                           "%s: refused by the backstop pass: %s" % (what, e))
        figures = verify.compare(model, p, run, "torch")
        self.check(figures["max_rel_error"] <= 1e-5, "the faithful source passes: %r" % figures)


class Files(Case):
    def file_refused(self, cls, name):
        torch.manual_seed(5)
        src = path(name + ".pt")
        torch.jit.script(cls().eval()).save(src)
        out = path(name + ".rnnd")
        if os.path.exists(out):
            os.remove(out)
        rc, err = main_inproc(src, "-o", out)
        self.check(rc != 0 and not os.path.exists(out),
                   "%s (TorchScript file): rnnd-convert exits %d" % (name, rc))
        self.check(len(err.splitlines()) == 1 and "internal error" not in err,
                   "%s: one-line refusal: %s" % (name, err))
        return err

    def test_files_refused_by_the_analysis(self):
        with mock.patch.object(verify, "_backstop", lambda *a: False):
            self.file_refused(Window, "window_file_a")
            self.file_refused(AliasWrite, "alias_write_file_a")
            err = self.file_refused(CondSemantics, "cond_file_a")
            self.check("x.size(1) > 256" in err, "the side TorchScript takes is analysed "
                       "and its branch on the length refused: %s" % err)

    def test_window_file(self):
        self.file_refused(Window, "window_file")

    def test_alias_write_file(self):
        self.file_refused(AliasWrite, "alias_write_file")

    def test_condition_semantics_file(self):
        self.file_refused(CondSemantics, "cond_file")

    def test_no_forward_file(self):
        err = self.file_refused(NoForward, "no_forward_file")
        self.check("forward__0" in err, "the refusal names the methods found: %s" % err)


I, H = 3, 4


def lstm_graph(name, extra=(), out="Y2", W=None, opset=14, inits=()):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((1, 4 * H, I)).astype(np.float32) if W is None else W
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


class Onnx(Case):
    def onnx_refused(self, p, *words):
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

    def test_reducemean_axis_out_of_range(self):
        self.onnx_refused(lstm_graph("reducemean9", [helper.make_node(
            "ReduceMean", ["Y2"], ["S"], axes=[9])], out="S"), "axis must be in")

    def test_softmax_axis_out_of_range(self):
        self.onnx_refused(lstm_graph("softmax5", [helper.make_node(
            "Softmax", ["Y2"], ["S"], axis=5)], out="S"), "'axis' must be in")

    def test_gather_float_index(self):
        self.onnx_refused(lstm_graph("gather_float", [helper.make_node(
            "Gather", ["Y2", "fi"], ["S"], axis=0)], out="S", inits=[
                numpy_helper.from_array(np.array([0.0], np.float32), "fi")]))

    def test_int_weights(self):
        self.onnx_refused(lstm_graph("w_int", W=np.ones((1, 4 * H, I), np.int32)))

    def test_unknown_opset(self):
        self.onnx_refused(lstm_graph("opset99", opset=99), "opset 99")

    def test_valid_graph_converts(self):
        p = lstm_graph("valid")
        rc, err = main_inproc(p, "-o", path("valid.rnnd"))
        self.check(rc == 0, "a valid LSTM graph converts: %s" % err)


if __name__ == "__main__":
    unittest.main()
