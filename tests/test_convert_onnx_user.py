#!/usr/bin/env python3
"""The ONNX door of rnnd-convert on models written as users write them (issue 14, outside
trial, user findings U1-U3, U7-U9; docs/convert.md "ONNX"), each exported by torch at
opsets 9, 14 and 17:

- U2: fc(h.squeeze(0)), the final hidden state of a one-layer one-direction LSTM / GRU
  squeezed into the head, converts as final-state pooling and computes what torch does;
- U3: fc(y).squeeze(-1), one output per step squeezed to [B, T], converts with outputs of
  size 1 per step;
- U7: an unrolled loop over an nn.LSTMCell leads with the construct and the way out
  (nn.LSTM, or convert the module), as the torch door does; so does an ONNX Loop;
- U8: pack_padded_sequence(..., enforce_sorted=False) is named as packed sequences (not
  "TopK not supported");
- U9: attention over the RNN outputs (a softmax over the steps, a bmm over the time axis)
  is named as attention;
- U1: an embedding table whose largest rows all have one norm (rows renormalised by
  nn.Embedding(max_norm=...)) converts with a warning on stderr.

Env: PYTHON3, PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import unittest
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from daemon_util import Case, main_inproc, scratch
import rnnd_convert
from rnnd_convert import reference
from rnnd_convert.arch import ConvertError

warnings.filterwarnings("ignore")
path = scratch("convert_onnx_user")
OPSETS = (9, 14, 17)


def export(net, name, opset, x=None):
    p = path("%s_%d.onnx" % (name, opset))
    x = torch.randn(2, 6, 4) if x is None else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (x,), p, input_names=["x"], opset_version=opset,
                          dynamic_axes={"x": {0: "batch", 1: "time"}})
    return p


class FinalState(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.rnn = getattr(nn, kind)(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)
        self.lstm = kind == "LSTM"

    def forward(self, x):
        _, h = self.rnn(x)
        if self.lstm:
            h = h[0]
        return self.fc(h.squeeze(0))


class PerStepScalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 1)

    def forward(self, x):
        return self.fc(self.rnn(x)[0]).squeeze(-1)


class CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(4, 5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.zeros(x.size(0), 5)
        c = torch.zeros(x.size(0), 5)
        out = []
        for t in range(x.size(1)):
            h, c = self.cell(x[:, t], (h, c))
            out.append(self.fc(h))
        return torch.stack(out, 1)


class PackedUnsorted(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 5, batch_first=True)

    def forward(self, x):
        n = torch.full((x.size(0),), x.size(1), dtype=torch.long)
        p = nn.utils.rnn.pack_padded_sequence(x, n, batch_first=True, enforce_sorted=False)
        return nn.utils.rnn.pad_packed_sequence(self.rnn(p)[0], batch_first=True)[0]


class AttentionPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True)
        self.att = nn.Linear(5, 1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        w = torch.softmax(self.att(y), dim=1)
        return self.fc((w * y).sum(1))


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        a = torch.softmax(torch.bmm(y, y.transpose(1, 2)), dim=-1)
        return self.fc(torch.bmm(a, y))


class MaxNorm(nn.Module):
    def __init__(self, max_norm):
        super().__init__()
        self.emb = nn.Embedding(40, 6, max_norm=max_norm)
        self.rnn = nn.GRU(6, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.rnn(self.emb(x))[0])


class Accepted(Case):
    def agrees(self, net, out, what, pooled):
        """Check OUT computes what NET does on a few random sequences."""
        rng = np.random.default_rng(4)
        m = reference.load(out)
        worst = 0.0
        for T in (1, 5, 33):
            x = rng.standard_normal((T, 4)).astype(np.float32)
            got = np.asarray(reference.run(m, [x])[0][0], dtype=np.float64)
            with torch.no_grad():
                want = net(torch.from_numpy(x)[None])[0].numpy().astype(np.float64)
            got = got[-1] if pooled else got.reshape(want.shape)
            worst = max(worst, float(np.max(np.abs(got - want))))
        self.check(worst < 1e-5, "%s: rnnd equals torch (max error %.3g)" % (what, worst))

    def test_final_state_squeezed(self):
        """U2: fc(h.squeeze(0)) was refused ("computes on the final state"); the torch door
        took it. It is h_n[-1] of the only layer: final-state pooling."""
        for kind in ("LSTM", "GRU"):
            torch.manual_seed(1)
            net = FinalState(kind).eval()
            for opset in OPSETS:
                what = "fc(h.squeeze(0)) of an nn.%s at opset %d" % (kind, opset)
                p = export(net, "final_%s" % kind, opset)
                out = p[:-5] + ".rnnd"
                rc, err = main_inproc(p, "-o", out)
                if not self.check(rc == 0, "%s converts: %r" % (what, err)):
                    continue
                self.eq(reference.load(out).arch.get("pool"), "final_state", what + ": pool")
                self.agrees(net, out, what, True)

    def test_per_step_scalar(self):
        """U3: fc(y).squeeze(-1), [B, T], was refused as a permuted output; it is one output
        of size 1 per step."""
        torch.manual_seed(2)
        net = PerStepScalar().eval()
        for opset in OPSETS:
            what = "fc(y).squeeze(-1) at opset %d" % opset
            p = export(net, "squeezed", opset)
            out = p[:-5] + ".rnnd"
            rc, err = main_inproc(p, "-o", out)
            if not self.check(rc == 0, "%s converts: %r" % (what, err)):
                continue
            y = reference.run(reference.load(out), [np.zeros((3, 4), np.float32)])[0][0]
            self.eq(np.asarray(y).shape, (3, 1), what + ": one output of size 1 per step")
            self.agrees(net, out, what, False)
        # the torch door: its verification compared [B, T] with [B, T, 1] and said the
        # source pools over the steps (from_module, scripted and traced alike)
        out = path("squeezed_module.rnnd")
        try:
            rnnd_convert.from_module(net, out)
            self.agrees(net, out, "fc(y).squeeze(-1) through from_module", False)
        except ConvertError as e:
            self.check(False, "fc(y).squeeze(-1) through from_module converts: %s" % e)


class Messages(Case):
    def refused(self, p, what, lead, needles):
        rc, err = main_inproc(p, "-o", path("refused.rnnd"))
        msg = err.split(": ", 2)[-1] if err.startswith("rnnd-convert:") else err
        self.check(rc == 1 and err.count("\n") == 1 and msg.startswith(lead) and
                   all(n in err for n in needles),
                   "%s: leads with %r and names %s: rc %d %r" % (what, lead, needles, rc, err))

    def test_cell_loop(self):
        """U7: the message led with the first node that failed (a Gather), then the loop;
        it leads with the construct and the way out, as the torch door does."""
        torch.manual_seed(3)
        for opset in OPSETS:
            p = export(CellLoop(), "cell_loop", opset)
            self.refused(p, "an unrolled LSTMCell loop at opset %d" % opset,
                         "the graph is a loop over an nn.LSTMCell / GRUCell / RNNCell",
                         ["use nn.LSTM / nn.GRU / nn.RNN", "rnnd_convert.from_module",
                          "'cell.weight_hh' at", "(the first node rnnd-convert cannot read: "
                          "node '"])
        # an ONNX Loop (a scripted loop over a cell, or any Loop): named the same way
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Identity", ["h_in"], ["h_out"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("h_in", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None)])
        g = helper.make_graph(
            [helper.make_node("Loop", ["n", "", "x"], ["out"], name="loop", body=body)], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 4])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array(3), "n")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
        m.ir_version = 8
        onnx.save(m, path("loop.onnx"))
        self.refused(path("loop.onnx"), "an ONNX Loop", "the graph runs a Loop",
                     ["use nn.LSTM / nn.GRU / nn.RNN", "node 'loop' (Loop)"])

    def test_packed_unsorted(self):
        """U8: pack_padded_sequence(..., enforce_sorted=False) said "TopK not supported"."""
        for opset in (14, 17):      # torch cannot export the sort at opset 9
            p = export(PackedUnsorted(), "packed_unsorted", opset)
            self.refused(p, "enforce_sorted=False at opset %d" % opset,
                         "the graph packs its sequences (pack_padded_sequence",
                         ["packed sequences are not supported", "enforce_sorted=False",
                          "different lengths", "without pack_padded_sequence",
                          "node '/TopK' (TopK)"])

    def test_attention(self):
        """U9: attention over the outputs said "normalises over axis 1, which is not the
        feature axis" or "combines the data with itself"; it is named."""
        for opset in OPSETS:
            for net, what, needle in (
                    (AttentionPool(), "attention pooling", "a softmax over the time axis"),
                    (SelfAttention(), "self-attention", "multiplies the data by the data")):
                p = export(net, "attention", opset)
                self.refused(p, "%s at opset %d" % (what, opset), "node '",
                             [needle, "attention", "not expressible in rnnd's format"])


class MaxNormWarning(Case):
    def test_max_norm(self):
        """U1: a table whose rows nn.Embedding(max_norm=...) renormalised in place (here by
        one forward pass, as by training) converts, with a warning; a table without such
        rows converts without one."""
        for max_norm, warned in ((1.0, True), (None, False)):
            torch.manual_seed(5)
            net = MaxNorm(max_norm).eval()
            with torch.no_grad():
                # a forward pass renormalises, in place, the rows it looks up, as training
                # does (the export itself leaves the table as it is)
                net(torch.arange(40).reshape(4, 10))
            for opset in OPSETS:
                what = "max_norm=%s at opset %d" % (max_norm, opset)
                p = export(net, "maxnorm", opset, torch.randint(0, 40, (3, 8)))
                rc, err = main_inproc(p, "-o", path("maxnorm.rnnd"))
                self.check(rc == 0, "%s converts: %r" % (what, err))
                says = "warning" in err and "max_norm" in err and "same norm" in err
                self.check(says == warned, "%s: %s: %r" % (
                    what, "a warning naming max_norm" if warned else "no warning", err))


if __name__ == "__main__":
    unittest.main()
