#!/usr/bin/env python3
"""Silent mismatches an outside adversary found in the converter (issue 14, adversary report
findings 1-3) and the torch side of user finding 1: each model here converted with
`verified: yes` while computing something else than its source. Now:

- EmbeddingTable: forward() looking tokens up in a table it computes (a modified copy of the
  Embedding's weight) is refused naming the line, in from_module and a TorchScript file; a
  table that is another tensor than the Embedding's weight is refused naming it; verification
  runs a batch of every token id, so a source that differs in one row no random id reaches
  fails it.
- Hooks: a forward hook or pre-hook on the top module or a submodule, in a live module or a
  scripted file, and torch's global hooks, are refused naming the module.
- InitialState: (c, h) passed crosswise and index_select over the layers are refused by the
  analysis; an ONNX graph wiring h0 / c0 crosswise or reading another layer's rows is
  refused; verification runs once more from random initial states (a source that
  rearranges its state fails it, a faithful one records initial_state_checked).
- MaxNorm: nn.Embedding(max_norm=...) is refused in from_module, a scripted and a traced file;
  F.embedding(..., max_norm=...) in from_module.

Env: PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import os
import unittest
import warnings
from typing import Tuple

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import rnnd_convert
from daemon_util import Case, main_inproc, scratch, verification_record
from rnnd_convert import reference, torch_import, verify
from rnnd_convert.errors import ConvertError

warnings.filterwarnings("ignore")
path = scratch("convert_adversary")
V = 5000            # large enough that the random ids of verification miss some rows


def unsampled_id(vocab):
    """A token id that the random inputs of verification never hold."""
    seen = set()
    for T, B in [(T, verify.BATCH) for T in verify.LENGTHS + (verify.ALONE,)] + [
            (verify.LONG_LENGTH, verify.LONG_BATCH),
            (verify.BACKSTOP_LENGTH, verify.BACKSTOP_BATCH)]:
        seen.update(np.random.default_rng(verify.SEED + T).integers(
            0, vocab, size=(B, T)).ravel().tolist())
    return min(set(range(vocab)) - seen)


class Base(nn.Module):
    def __init__(self, vocab=V):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 10)


class ModifiedCopy(Base):
    """The adversary's a_emb.py: forward() looks up in a copy with one row changed."""

    def forward(self, x):
        w = self.emb.weight.clone()
        w[0] = w[0] * 0.0 + 3.0
        y, _ = self.lstm(F.embedding(x, w))
        return self.fc(y)


class OtherTable(Base):
    """forward() looks up in a buffer that differs from the Embedding's weight in one row."""

    def __init__(self, row):
        super().__init__()
        t = self.emb.weight.detach().clone()
        t[row] += 1.0
        self.register_buffer("table", t)

    def forward(self, x):
        y, _ = self.lstm(F.embedding(x, self.table))
        return self.fc(y)


class Plain(Base):
    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return self.fc(y)


class EmbeddingTable(Case):
    def test_modified_copy_refused(self):
        torch.manual_seed(1)
        m = ModifiedCopy().eval()
        out = path("copy.rnnd")
        try:
            rnnd_convert.from_module(m, out)
            self.check(False, "from_module converts a lookup in a modified copy of the table")
        except ConvertError as e:
            self.check("table it computes" in str(e) and "test_convert_adversary.py" in str(e),
                       "from_module refuses it, naming the line: %s" % e)
        self.check(not os.path.exists(out), "no file written")
        torch.jit.script(m).save(path("copy.pt"))
        rc, err = main_inproc(path("copy.pt"), "-o", out)
        self.check(rc == 1 and "table it computes" in err,
                   "a TorchScript file of it is refused: %s" % err.strip())
        self.check(not os.path.exists(out), "no file written from the TorchScript file")

    def test_other_tensor_refused(self):
        torch.manual_seed(2)
        row = unsampled_id(V)
        m = OtherTable(row).eval()
        try:
            rnnd_convert.from_module(m, path("other.rnnd"))
            self.check(False, "from_module converts a lookup in another tensor than the "
                       "Embedding's weight (row %d differs)" % row)
        except ConvertError as e:
            self.check("'table'" in str(e) and "module 'emb'" in str(e),
                       "refused, naming the table and the Embedding: %s" % e)

    def test_every_row_verified(self):
        """The batch of every token id: a source differing in one row that the random ids
        never reach fails verification, and the record says how many ids were checked."""
        torch.manual_seed(3)
        m = Plain().eval()
        out = path("rows.rnnd")
        model = rnnd_convert.from_module(m, out, verify=False)
        run = torch_import.source_runner(m)
        row = unsampled_id(V)

        def source(x):
            y = run(x)
            hit = np.asarray(x) == row
            return y + 0.25 * hit[..., None]
        try:
            verify.compare(model, out, source, "module")
            self.check(False, "a source that differs only at token %d passes verification"
                       % row)
        except ConvertError as e:
            self.check("every token id" in str(e), "refused at the batch of every id: %s" % e)
        figures = verify.compare(model, out, run, "module")
        self.eq(figures.get("vocab_checked"), V, "the faithful source: every id checked")
        rnnd_convert.from_module(m, out)
        self.eq(verification_record(out).get("vocab_checked"), V, "the record holds vocab_checked")


def scaling_hook(mod, inp: Tuple[torch.Tensor], out: torch.Tensor):
    if out.size(1) > 100:          # a branch on the length, outside forward()
        return out * 0.0
    return out


def identity_pre_hook(mod, inp: Tuple[torch.Tensor]):
    return inp


class Hooks(Case):
    def refused(self, m, needle, what):
        try:
            rnnd_convert.from_module(m, path("hook.rnnd"))
            self.check(False, "%s: converts" % what)
        except ConvertError as e:
            self.check(needle in str(e) and "remove the hook" in str(e),
                       "%s: refused naming it: %s" % (what, e))

    def test_top_module_hook(self):
        torch.manual_seed(4)
        m = Plain(50).eval()
        m.register_forward_hook(scaling_hook)
        self.refused(m, "module '<top>' (Plain) has a forward hook", "a hook on the top module")
        torch.jit.script(m).save(path("hook.pt"))
        rc, err = main_inproc(path("hook.pt"), "-o", path("hook_ts.rnnd"))
        self.check(rc == 1 and "module '<top>'" in err and "forward hook" in err,
                   "a scripted file keeps the hook and is refused: %s" % err.strip())
        self.check(not os.path.exists(path("hook_ts.rnnd")), "no file from the scripted file")

    def test_submodule_pre_hook(self):
        torch.manual_seed(5)
        m = Plain(50).eval()
        m.fc.register_forward_pre_hook(identity_pre_hook)
        self.refused(m, "module 'fc' (Linear) has a forward pre-hook", "a pre-hook on fc")
        m2 = Plain(50).eval()
        m2.lstm.register_forward_hook(lambda mod, i, o: o)
        self.refused(m2, "module 'lstm' (LSTM) has a forward hook", "a lambda hook on lstm")

    def test_global_hook(self):
        torch.manual_seed(6)
        m = Plain(50).eval()
        handle = nn.modules.module.register_module_forward_hook(lambda mod, i, o: o)
        try:
            try:
                rnnd_convert.from_module(m, path("ghook.rnnd"))
                self.check(False, "a global forward hook: converts")
            except ConvertError as e:
                self.check("global forward hook" in str(e), "a global hook is refused: %s" % e)
        finally:
            handle.remove()
        rnnd_convert.from_module(m, path("ghook.rnnd"))
        self.check(os.path.exists(path("ghook.rnnd")), "without hooks the same module converts")


class StateModel(nn.Module):
    def __init__(self, how="plain"):
        super().__init__()
        self.how = how
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True)
        self.fc = nn.Linear(6, 3)


class Crosswise(StateModel):
    def forward(self, x, hidden: Tuple[torch.Tensor, torch.Tensor]):
        h, c = hidden
        y, hn = self.lstm(x, (c, h))
        return self.fc(y), hn


class LayersSwapped(StateModel):
    def forward(self, x, hidden: Tuple[torch.Tensor, torch.Tensor]):
        h, c = hidden
        idx = torch.tensor([1, 0])
        y, hn = self.lstm(x, (h.index_select(0, idx), c.index_select(0, idx)))
        return self.fc(y), hn


class Faithful(StateModel):
    def forward(self, x, hidden: Tuple[torch.Tensor, torch.Tensor]):
        y, hn = self.lstm(x, hidden)
        return self.fc(y), hn


def lstm_onnx(p, h_rows, c_rows, names=("h0", "c0"), swap=False):
    """A 2-layer LSTM as two ONNX LSTM nodes reading rows H_ROWS[l] / C_ROWS[l] of the graph
    inputs NAMES (h first); SWAP wires the first input to initial_c."""
    rng = np.random.default_rng(0)
    I, H = 4, 5
    nodes, inits = [], []
    x = "x"
    for l in range(2):
        W = rng.standard_normal((1, 4 * H, I if l == 0 else H)).astype(np.float32) * 0.5
        R = rng.standard_normal((1, 4 * H, H)).astype(np.float32) * 0.5
        B = rng.standard_normal((1, 8 * H)).astype(np.float32) * 0.5
        inits += [numpy_helper.from_array(W, "W%d" % l), numpy_helper.from_array(R, "R%d" % l),
                  numpy_helper.from_array(B, "B%d" % l)]
        for name, rows, tag in ((names[0], h_rows, "h"), (names[1], c_rows, "c")):
            for k, v in (("s", [rows[l]]), ("e", [rows[l] + 1]), ("a", [0])):
                inits.append(numpy_helper.from_array(np.array(v, np.int64),
                                                     "%s%s%d" % (tag, k, l)))
            nodes.append(helper.make_node("Slice", [name, "%ss%d" % (tag, l), "%se%d" % (tag, l),
                                                    "%sa%d" % (tag, l)], ["s%s%d" % (tag, l)]))
        h, c = ("sc%d" % l, "sh%d" % l) if swap else ("sh%d" % l, "sc%d" % l)
        nodes.append(helper.make_node("LSTM", [x, "W%d" % l, "R%d" % l, "B%d" % l, "", h, c],
                                      ["Y%d" % l], hidden_size=H, name="lstm%d" % l))
        nodes.append(helper.make_node("Squeeze", ["Y%d" % l, "ax"], ["y%d" % l]))
        x = "y%d" % l
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax"))
    g = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", I]),
        helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [2, "N", H]),
        helper.make_tensor_value_info(names[1], TensorProto.FLOAT, [2, "N", H])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["T", "N", H])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(m)
    onnx.save(m, p)


class InitialState(Case):
    def test_torch_crosswise_refused(self):
        torch.manual_seed(7)
        for cls, needle in ((Crosswise, "hidden[1] as h and hidden[0] as c"),
                            (LayersSwapped, "aten::index_select of its initial state")):
            try:
                rnnd_convert.from_module(cls().eval(), path("state.rnnd"))
                self.check(False, "%s converts" % cls.__name__)
            except ConvertError as e:
                self.check(needle in str(e), "%s refused by name: %s" % (cls.__name__, e))

    def test_torch_state_verified(self):
        """A faithful forward(x, hidden) converts with initial_state_checked, and a source
        that rearranges its state fails the pass from random initial states."""
        torch.manual_seed(8)
        m = Faithful().eval()
        out = path("faithful.rnnd")
        model = rnnd_convert.from_module(m, out)
        self.eq(verification_record(out).get("initial_state_checked"), True,
                "the record says the initial state was checked")
        run = torch_import.source_runner(m)

        def swapped(x):
            return run(x)
        # the state's layers swapped on the way in, as index_select would
        swapped.with_state = lambda x, states: run.with_state(x, [
            np.concatenate([s[12:], s[:12]]) for s in states])
        try:
            verify.compare(model, out, swapped, "module")
            self.check(False, "a source whose state's layers are swapped passes verification")
        except ConvertError as e:
            self.check("random initial states" in str(e), "it fails from random states: %s" % e)
        # and the converted file continues a sequence as the module does from its state
        x1, x2 = torch.randn(1, 5, 4), torch.randn(1, 4, 4)
        z = (torch.zeros(2, 1, 6), torch.zeros(2, 1, 6))
        with torch.no_grad():
            _, st = m(x1, z)
            want, _ = m(x2, st)
        _, fin = reference.run(out, [x1[0].numpy()])
        got, _ = reference.run(out, [x2[0].numpy()], initial_states=fin)
        self.check(np.abs(got[0] - want[0].numpy()).max() < 1e-5,
                   "continuing from the final state equals the module's")

    def test_onnx_wiring(self):
        p = path("state.onnx")
        for what, kw, needle in (
                ("h0 and c0 crosswise", dict(swap=True), ("(crosswise)", "would swap them")),
                ("layer rows swapped", dict(h_rows=[1, 0], c_rows=[1, 0]),
                 ("rows [1] of graph input 'h0'",)),
                ("c0 rows swapped", dict(c_rows=[1, 0]), ("rows [1] of graph input 'c0'",))):
            args = dict(h_rows=[0, 1], c_rows=[0, 1])
            args.update(kw)
            lstm_onnx(p, **args)
            out = path("state_onnx.rnnd")
            rc, err = main_inproc(p, "-o", out)
            # onnx_import's row check (the ONNX door's own) or onnx_state's wiring check,
            # whichever sees it first
            self.check(rc == 1 and any(n in err for n in needle),
                       "%s: refused: %s" % (what, err.strip()))
            self.check(not os.path.exists(out), "%s: no file written" % what)
            rc, err = main_inproc(p, "-o", out, "--no-verify")
            self.check(rc == 1 and any(n in err for n in needle),
                       "%s: refused with --no-verify too" % what)

    def test_onnx_gather_directions(self):
        """A Gather with constant indices passes onnx_import's state path: the wiring check
        computes which rows it reads (here a bidirectional node's directions swapped)."""
        rng = np.random.default_rng(1)
        I, H = 3, 4
        W = rng.standard_normal((2, 4 * H, I)).astype(np.float32)
        R = rng.standard_normal((2, 4 * H, H)).astype(np.float32)
        p = path("gather.onnx")
        for idx, ok in (([1, 0], False), ([0, 1], True)):
            nodes = [helper.make_node("Gather", ["h0", "idx"], ["hg"], axis=0),
                     helper.make_node("LSTM", ["x", "W", "R", "", "", "hg", "c0"], ["Y"],
                                      hidden_size=H, direction="bidirectional", name="bi"),
                     helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
                     helper.make_node("Reshape", ["Yt", "shape"], ["out"])]
            g = helper.make_graph(nodes, "g", [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", I]),
                helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, "N", H]),
                helper.make_tensor_value_info("c0", TensorProto.FLOAT, [2, "N", H])],
                [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["T", "N", 2 * H])],
                [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
                 numpy_helper.from_array(np.array(idx, np.int64), "idx"),
                 numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape")])
            onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), p)
            rc, err = main_inproc(p, "-o", path("gather.rnnd"))
            if ok:
                self.check(rc == 0, "Gather of rows [0, 1] converts: %s" % err.strip())
            else:
                self.check(rc == 1 and "rows [1, 0] of graph input 'h0'" in err,
                           "Gather of rows [1, 0] refused: %s" % err.strip())

    def test_onnx_state_verified(self):
        p = path("state_ok.onnx")
        lstm_onnx(p, [0, 1], [0, 1])
        out = path("state_ok.rnnd")
        rc, err = main_inproc(p, "-o", out)
        self.check(rc == 0, "the faithful wiring converts: %s" % err)
        if rc == 0:
            self.eq(verification_record(out).get("initial_state_checked"), True,
                    "ONNX: the record says the initial state was checked")


class MaxNormEmbedding(Base):
    def __init__(self):
        super().__init__(40)
        self.emb = nn.Embedding(40, 8, max_norm=1.0)

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return self.fc(y)


class FunctionalMaxNorm(Base):
    def __init__(self):
        super().__init__(40)

    def forward(self, x):
        y, _ = self.lstm(F.embedding(x, self.emb.weight, max_norm=1.0))
        return self.fc(y)


class MaxNorm(Case):
    def test_torch_doors(self):
        torch.manual_seed(9)
        m = MaxNormEmbedding().eval()
        x = torch.randint(0, 40, (2, 5))
        torch.jit.script(m).save(path("mn_script.pt"))
        w = m.emb.weight.detach().clone()
        torch.jit.trace(m, x).save(path("mn_trace.pt"))
        with torch.no_grad():
            m.emb.weight.copy_(w)       # tracing renormed the example's rows in place
        try:
            rnnd_convert.from_module(m, path("mn.rnnd"))
            self.check(False, "from_module converts an Embedding with max_norm")
        except ConvertError as e:
            self.check("max_norm" in str(e) and "renormalise the weight once" in str(e),
                       "from_module refuses max_norm: %s" % e)
        for f in ("mn_script.pt", "mn_trace.pt"):
            rc, err = main_inproc(path(f), "-o", path("mn.rnnd"))
            self.check(rc == 1 and "max_norm" in err, "%s refused: %s" % (f, err.strip()))
        try:
            rnnd_convert.from_module(FunctionalMaxNorm().eval(), path("mn.rnnd"))
            self.check(False, "from_module converts F.embedding(..., max_norm=1.0)")
        except ConvertError as e:
            self.check("max_norm=1.0" in str(e) and "test_convert_adversary.py" in str(e),
                       "F.embedding with max_norm refused naming the line: %s" % e)
        self.check(not os.path.exists(path("mn.rnnd")), "no file written")


if __name__ == "__main__":
    unittest.main()
