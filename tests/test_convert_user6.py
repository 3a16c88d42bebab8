#!/usr/bin/env python3
"""What a sixth outside user trial met at the converter's Python door (issue 14):

- TestNormAdded: from_module(module, ..., norm="softmax" or "log_softmax") of a module whose
  forward() applies no softmax, docs/convert.md's own Python API example, was refused by
  verification (the norm changes what the model computes); it converts as the command
  line's --norm does: checked without the norm, the norm added after the check and recorded
  as "norm_checked", and the file gives the norm of the module's outputs. norm="none" of a
  module that applies a softmax drops it the same way.
- TestDropoutDefault: F.dropout(y, p) without training= in a module in eval mode is refused
  for what it is (F.dropout defaults training=True), not as "traced in train mode".
- TestImplicitSoftmax: nn.Softmax() without dim converts where PyTorch's implicit dim is the
  features (a pooled [B, C] output); on [B, T, C] (implicit dim 0) it is refused, "pass dim=-1".
- TestFloatNoop: x.float() of the float input converts (a no-op).
- TestFlatten: an nn.Flatten that changes no shape converts; one that merges dims is refused
  with advice.
- TestClassGiven: from_module(SomeClass) says "pass an instance: from_module(SomeClass(...))".
- TestOnnxAdvice: an ONNX If, a ReduceSum and a LayerNormalization on the input are refused
  with what to change in the model or its export.
- TestOnnxUnivariate: a univariate [B, T] input scaled and shifted by numbers before its
  unsqueeze(-1) converts (folded into the input size 1) and computes what torch does; one
  normalised by its own mean is refused with a clear message.
- TestFoldPrecision (outside trial 20, S2): a standardisation (x - mu) / sd before the first
  layer, folded into W and Wb, cancels in float32 (rnnd computes W' x + (Wb - W mu / sd)
  where the source subtracts first) when |mu| / sd is large: from_module and the ONNX door
  refuse it, naming the feature and the way out; a modest one (mu ~ 3, sd ~ 2) converts and
  matches torch on data around mu; verification also runs inputs at the data's own scale
  (mu + sd * N(0, 1)), which a source that differs only there fails.
- TestFoldDense (outside trial 21, s2b): the same standardisation followed by a dense map
  (an ONNX MatMul / Add, a learned Linear(3, 3)) is checked at the data's centre (mu, or
  the least-squares zero of a dense map with a bias alone): a far one is refused, a modest
  one converts, matches the graph around mu and is verified at the data's scale.

From the twentieth outside user trial:

- TestTutorialZeroState: the PyTorch tutorial LSTM's zero h0 / c0 (sized from attributes,
  .requires_grad_(), .detach()ed; or .type_as(x)) converts in from_module and script; a
  state whose values depend on requires_grad is still refused.
- TestNoTrackerWords: no message string names an issue, a round or a finding id.
- TestTransposeT: x.t() of the 2-D ids converts as transpose(0, 1); of an unknown rank it
  is refused.
- TestUnusedModules: submodules forward() never reads (an nn.SiLU, a pooling module, one
  with parameters) are left out in every torch door; a used SiLU is refused.
- TestMessagesTrial20: 1 - torch.sigmoid(z) located at the user's line; ONNX
  GlobalAveragePool and SiLU named with advice; y[:, x.size(1) - 1] named an index from
  the input's size, y[:, -1] suggested.

Env: PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import os
import unittest
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from daemon_util import Case, main_inproc, scratch, verification_record

import rnnd_convert
from rnnd_convert import reference
from rnnd_convert.arch import ConvertError
from rnnd_modules.mingru import MinGRU

warnings.filterwarnings("ignore")
path = scratch("convert_user6")


class Logits(nn.Module):
    """An LSTM and a Linear head; forward() gives logits, no softmax."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 16, batch_first=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y)


class Probs(Logits):
    """The same with a softmax in forward()."""

    def forward(self, x):
        return torch.softmax(super().forward(x), dim=-1)


class Doubled(nn.Module):
    """A MinGRU (its forward() is not analysed) whose head's outputs are doubled."""

    def __init__(self):
        super().__init__()
        self.rnn = MinGRU(3, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return 2.0 * self.fc(self.rnn(x)[0])


NORMS = {"softmax": lambda y: torch.softmax(y, dim=-1),
         "log_softmax": lambda y: torch.log_softmax(y, dim=-1),
         "none": lambda y: y}


class TestNormAdded(Case):
    def converted(self, net, norm, name):
        """from_module(NET, norm=NORM) written to NAME; the path, or None when refused."""
        p = path(name)
        try:
            m = rnnd_convert.from_module(net, p, norm=norm)
        except ConvertError as e:
            self.check(False, "norm=%r converts: %s" % (norm, e))
            return None
        self.eq(m.head_norm, norm, "norm=%r: the Model's head norm" % norm)
        return p

    def same(self, p, want, x, what):
        got = np.stack(reference.run(p, list(x.numpy()))[0])
        err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        self.check(err < 1e-5, "%s: the file gives the norm of the module's outputs (shapes "
                   "%s %s, max error %.2g)" % (what, got.shape, want.shape, err))

    def test_added(self):
        """norm="softmax" / "log_softmax" on a module whose forward() gives logits converts;
        the file gives torch's softmax / log_softmax of the module's outputs; the record says
        the check ran without the norm."""
        torch.manual_seed(14)
        net = Logits().eval()
        x = torch.randn(2, 7, 3)
        with torch.no_grad():
            y = net(x)
        for norm in ("softmax", "log_softmax"):
            p = self.converted(net, norm, "added_%s.rnnd" % norm)
            if p is None:
                continue
            self.same(p, NORMS[norm](y).double().numpy(), x, "norm=%r" % norm)
            self.eq(verification_record(p).get("norm_checked"), "none", "norm=%r: norm_checked" % norm)

    def test_applied(self):
        """A module that applies the softmax itself, given norm="softmax": checked with the
        norm, nothing recorded beside the figures; given norm="none": the softmax left out,
        the file gives the logits, norm_checked "softmax"."""
        torch.manual_seed(15)
        net = Probs().eval()
        x = torch.randn(2, 6, 3)
        with torch.no_grad():
            logits = Logits.forward(net, x)
        p = self.converted(net, "softmax", "applied_softmax.rnnd")
        if p is not None:
            self.same(p, NORMS["softmax"](logits).double().numpy(), x, "norm='softmax'")
            self.check("norm_checked" not in verification_record(p), "checked with the norm: %r"
                       % verification_record(p))
        p = self.converted(net, "none", "applied_none.rnnd")
        if p is not None:
            self.same(p, logits.double().numpy(), x, "norm='none'")
            self.eq(verification_record(p).get("norm_checked"), "softmax", "norm='none': norm_checked")

    def test_still_refused(self):
        """A module that differs from the file for another reason (a reference module's
        forward() doubles the head's outputs, which the converter does not read) is still
        refused with a norm given, by the check with that norm, and nothing is written."""
        torch.manual_seed(16)
        p = path("doubled.rnnd")
        try:
            rnnd_convert.from_module(Doubled().eval(), p, norm="softmax")
        except ConvertError as e:
            self.check(str(e).startswith("verification failed"), "refused by the check: %s"
                       % e)
        else:
            self.check(False, "a doubled head is refused")
        self.check(not os.path.exists(p), "nothing written")


def refusal(net, name, **kw):
    """from_module(NET)'s refusal message, or None when it converts."""
    try:
        rnnd_convert.from_module(net, path(name), **kw)
    except ConvertError as e:
        return str(e)
    return None


class DropoutDefault(Logits):
    """F.dropout without training=: on in eval mode too."""

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(F.dropout(y, 0.2))


class TestDropoutDefault(Case):
    def test_message(self):
        """The refusal names F.dropout's default and the way out, not a train-mode trace
        (from_module scripts the module in eval mode)."""
        e = refusal(DropoutDefault().eval(), "dropout_default.rnnd")
        self.check(e is not None and "training=self.training" in e and "defaults" in e
                   and "nn.Dropout" in e and "traced or exported in train mode" not in e,
                   "F.dropout without training= refused for what it is: %s" % e)


class ImplicitSoftmax(Logits):
    """nn.Softmax() without dim, on the last step (POOLED) or on every step."""

    def __init__(self, pooled):
        super().__init__()
        self.sm = nn.Softmax()
        self.pooled = pooled

    def forward(self, x):
        y, _ = self.rnn(x)
        if self.pooled:
            y = y[:, -1]
        return self.sm(self.fc(y))


class TestImplicitSoftmax(Case):
    def test_pooled(self):
        """[B, C]: PyTorch's implicit dim is 1, the features: converts, softmax norm, the
        file gives the module's outputs."""
        torch.manual_seed(21)
        net = ImplicitSoftmax(True).eval()
        try:
            m = rnnd_convert.from_module(net, path("implicit_pooled.rnnd"))
        except ConvertError as e:
            self.check(False, "nn.Softmax() of [B, C] converts: %s" % e)
            return
        self.eq(m.head_norm, "softmax", "the norm")
        x = torch.randn(1, 5, 3)
        with torch.no_grad():
            want = net(x).double().numpy()
        got = np.asarray(reference.run(path("implicit_pooled.rnnd"), [x[0].numpy()])[0][0])
        self.check(np.allclose(got.reshape(-1), want.reshape(-1), atol=1e-5),
                   "rnnd equals torch: %s %s" % (got, want))

    def test_per_step(self):
        """[B, T, C]: the implicit dim is 0, the batch: refused, saying to pass dim=-1."""
        e = refusal(ImplicitSoftmax(False).eval(), "implicit_steps.rnnd")
        self.check(e is not None and "dim=-1" in e and "implicit" in e,
                   "nn.Softmax() of [B, T, C] refused with dim=-1: %s" % e)


class FloatInput(Logits):
    def forward(self, x):
        y, _ = self.rnn(x.float())
        return self.fc(y)


class TestFloatNoop(Case):
    def test_converts(self):
        """x.float() of the float input is a no-op: converts."""
        e = refusal(FloatInput().eval(), "float_input.rnnd")
        self.check(e is None, "x.float() converts: %s" % e)


class Flattened(Logits):
    """nn.Flatten() on the last step ([B, H]: no change) or on every step ([B, T, H] ->
    [B, T * H], MERGE)."""

    def __init__(self, merge):
        super().__init__()
        self.flat = nn.Flatten()
        self.merge = merge
        if merge:
            self.fc = nn.Linear(16 * 6, 5)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(self.flat(y if self.merge else y[:, -1]))


class TestFlatten(Case):
    def test_noop(self):
        """nn.Flatten() of [B, H] changes no shape: converts."""
        e = refusal(Flattened(False).eval(), "flatten_noop.rnnd")
        self.check(e is None, "a Flatten that changes nothing converts: %s" % e)

    def test_merge(self):
        """nn.Flatten() of [B, T, H] merges the steps into the features: refused with
        advice."""
        e = refusal(Flattened(True).eval(), "flatten_merge.rnnd")
        self.check(e is not None and "flatten" in e.lower() and "merges" in e
                   and "y[:, -1]" in e, "a merging Flatten refused with advice: %s" % e)


class TestClassGiven(Case):
    def test_message(self):
        """from_module(Logits): the class, not an instance."""
        e = refusal(Logits, "class.rnnd")
        self.check(e is not None and "pass an instance: from_module(Logits(...))" in e,
                   "a class given is named so: %s" % e)


def onnx_export(net, name, x):
    p = path(name + ".onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (x,), p, input_names=["x"], opset_version=17,
                          dynamic_axes={"x": {0: "batch", 1: "time"}})
    return p


def onnx_convert(p):
    """(rc, stderr) of rnnd-convert P."""
    return main_inproc(p, "-o", p[:-5] + ".rnnd")


class InputLayerNorm(Logits):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(3)

    def forward(self, x):
        y, _ = self.rnn(self.ln(x))
        return self.fc(y)


class InputSum(Logits):
    def forward(self, x):
        y, _ = self.rnn(x - x.sum(-1, keepdim=True))
        return self.fc(y)


class Branch(Logits):
    def forward(self, x):
        if bool(x.max() > 10.0):
            x = x / 10.0
        y, _ = self.rnn(x)
        return self.fc(y)


class TestOnnxAdvice(Case):
    def test_layernorm(self):
        """A LayerNormalization on the input: says where a LayerNorm may go."""
        rc, err = onnx_convert(onnx_export(InputLayerNorm(), "input_ln", torch.randn(2, 6, 3)))
        self.check(rc == 1 and "LayerNormalization" in err and "after the recurrent layers"
                   in err and "export again" in err, "LayerNorm on the input: %s" % err)

    def test_reduce_sum(self):
        """A ReduceSum on the input: says what rnnd folds there and what to do."""
        rc, err = onnx_convert(onnx_export(InputSum(), "input_sum", torch.randn(2, 6, 3)))
        self.check(rc == 1 and "ReduceSum" in err and "before the recurrent layers" in err
                   and "export again" in err, "ReduceSum on the input: %s" % err)

    def test_if(self):
        """A branch on the data's values (a scripted module's If): leads with the branch."""
        net = torch.jit.script(Branch().eval())
        rc, err = onnx_convert(onnx_export(net, "branch", torch.randn(2, 6, 3)))
        self.check(rc == 1 and "(If)" in err and "branch" in err and "export again" in err,
                   "an If: %s" % err)


class Univariate(nn.Module):
    """forward(x: [B, T]): normalised, then unsqueeze(-1), an LSTM, a Linear per step.
    HOW: "numbers" ((x - 0.5) / 2.0), "mean" (x - x.mean(1))."""

    def __init__(self, how):
        super().__init__()
        self.rnn = nn.LSTM(1, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)
        self.how = how

    def forward(self, x):
        if self.how == "numbers":
            x = (x - 0.5) / 2.0
        else:
            x = x - x.mean(1, keepdim=True)
        y, _ = self.rnn(x.unsqueeze(-1))
        return self.fc(y)


class TestOnnxUnivariate(Case):
    def test_numbers(self):
        """(x - 0.5) / 2.0 before unsqueeze(-1): folded into the input of size 1; rnnd
        computes what torch does."""
        torch.manual_seed(22)
        net = Univariate("numbers").eval()
        p = onnx_export(net, "uni_numbers", torch.randn(2, 6))
        rc, err = onnx_convert(p)
        if not self.check(rc == 0, "converts: %s" % err):
            return
        m = reference.load(p[:-5] + ".rnnd")
        self.eq((m.arch["input"]["kind"], m.arch["input"]["dim"]), ("vectors", 1), "input")
        x = np.random.default_rng(5).standard_normal(9).astype(np.float32)
        got = np.asarray(reference.run(m, [x[:, None]])[0][0])
        with torch.no_grad():
            want = net(torch.from_numpy(x)[None])[0].numpy()
        self.check(np.allclose(got.reshape(-1), want.reshape(-1), atol=1e-5),
                   "rnnd equals torch: max error %.3g"
                   % float(np.max(np.abs(got.reshape(-1) - want.reshape(-1)))))

    def test_mean(self):
        """x - x.mean(1) before unsqueeze(-1): refused, saying what folds."""
        rc, err = onnx_convert(onnx_export(Univariate("mean"), "uni_mean", torch.randn(2, 6)))
        self.check(rc == 1 and "[batch, time]" in err and "numbers" in err,
                   "the mean of the series: %s" % err)


def script_convert(net, name):
    """(rc, stderr) of rnnd-convert of torch.jit.script(NET) saved as NAME.pt."""
    p = path(name + ".pt")
    torch.jit.script(net.eval()).save(p)
    return main_inproc(p, "-o", p[:-3] + ".rnnd")


class TutorialLSTM(nn.Module):
    """The PyTorch tutorial classifier (user trial 20): zero h0 / c0 sized from module
    attributes, .requires_grad_(), passed .detach()ed."""

    def __init__(self):
        super().__init__()
        self.hidden_dim = 10
        self.layer_dim = 2
        self.lstm = nn.LSTM(4, 10, 2, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        h0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).requires_grad_()
        c0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).requires_grad_()
        out, (hn, cn) = self.lstm(x, (h0.detach(), c0.detach()))
        return self.fc(out[:, -1, :])


class TypeAsLSTM(TutorialLSTM):
    """The zero state made with torch.zeros(...).type_as(x)."""

    def forward(self, x):
        h0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).type_as(x)
        c0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).type_as(x)
        out, (hn, cn) = self.lstm(x, (h0, c0))
        return self.fc(out[:, -1, :])


class GradStateLSTM(TutorialLSTM):
    """A state whose values depend on requires_grad (so on grad mode): not a zero state."""

    def forward(self, x):
        h0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).requires_grad_()
        c0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim)
        if h0.requires_grad:
            h0 = h0 + 1.0
        out, (hn, cn) = self.lstm(x, (h0.detach(), c0))
        return self.fc(out[:, -1, :])


class TestTutorialZeroState(Case):
    def converts(self, cls, how):
        torch.manual_seed(20)
        net = cls().eval()
        e = refusal(net, "tut_%s.rnnd" % how)
        self.check(e is None, "from_module converts %s: %s" % (how, e))
        if e is None:
            m = reference.load(path("tut_%s.rnnd" % how))
            x = np.random.default_rng(3).standard_normal((7, 4)).astype(np.float32)
            got = np.asarray(reference.run(m, [x])[0]).reshape(-1)
            with torch.no_grad():
                want = net(torch.from_numpy(x)[None])[0].numpy().reshape(-1)
            self.check(np.allclose(got, want, atol=1e-5), "rnnd equals torch (%s)" % how)
        rc, err = script_convert(net, "tut_script_%s" % how)
        self.check(rc == 0, "script converts %s: %s" % (how, err))

    def test_tutorial(self):
        """Zeros sized from attributes, requires_grad_(), detach(): a zero state, converts."""
        self.converts(TutorialLSTM, "tutorial")

    def test_type_as(self):
        """torch.zeros(...).type_as(x): zeros of the data's type, converts."""
        self.converts(TypeAsLSTM, "type_as")

    def test_grad_values(self):
        """A state whose values depend on requires_grad is still refused."""
        e = refusal(GradStateLSTM().eval(), "tut_grad.rnnd")
        self.check(e is not None and "requires_grad" in e, "refused: %s" % e)
        rc, err = script_convert(GradStateLSTM(), "tut_script_grad")
        self.check(rc == 1 and "requires_grad" in err, "script refuses: %s" % err)


class TestNoTrackerWords(Case):
    def test_strings(self):
        """No string in tools/rnnd_convert (a message) names an issue, a round or a finding
        id: they mean nothing to a user."""
        import ast
        import re
        top = os.path.dirname(rnnd_convert.__file__)
        pat = re.compile(r"[Ii]ssue \d+|\b[Rr]ound\b|\b[A-Z]\d\b|[Aa]dversary|user trial|"
                         r"[Ff]inding")
        bad = []
        for f in sorted(os.listdir(top)):
            if not f.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(top, f)).read())
            docs = set()
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and \
                        node.body and isinstance(node.body[0], ast.Expr):
                    docs.add(id(node.body[0].value))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                        id(node) not in docs and len(node.value) > 3 and pat.search(node.value):
                    bad.append("%s:%d" % (f, node.lineno))
        self.eq(bad, [], "strings naming a tracker")
        e = refusal(TutorialLSTM().eval(), "tut_words.rnnd")
        self.check(e is None or "issue" not in e, "message: %s" % e)


class TimeMajorT(nn.Module):
    """Batch-first token ids made time-major with x.t() (the sentiment tutorial's
    self.embedding(text.t()))."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(25, 8)
        self.rnn = nn.LSTM(8, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.rnn(self.emb(x.t()))[0][-1])


class SqueezedT(TimeMajorT):
    """x.squeeze().t(): of a rank not known at conversion."""

    def forward(self, x):
        return self.fc(self.rnn(self.emb(x.squeeze().t()))[0][-1])


class TestTransposeT(Case):
    def test_t(self):
        """x.t() of the [batch, time] ids is x.transpose(0, 1): converts in from_module and
        script, and rnnd computes what torch does."""
        torch.manual_seed(21)
        net = TimeMajorT().eval()
        e = refusal(net, "t.rnnd")
        if not self.check(e is None, "from_module converts: %s" % e):
            return
        m = reference.load(path("t.rnnd"))
        ids = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.int64)
        got = np.asarray(reference.run(m, [ids])[0]).reshape(-1)
        with torch.no_grad():
            want = net(torch.from_numpy(ids)[None])[0].numpy().reshape(-1)
        self.check(np.allclose(got, want, atol=1e-5), "rnnd equals torch: %s %s" % (got, want))
        rc, err = script_convert(net, "t_script")
        self.check(rc == 0, "script converts: %s" % err)

    def test_unknown_rank(self):
        """x.squeeze().t(), a rank not known at conversion: refused, naming aten::t."""
        e = refusal(SqueezedT().eval(), "t_sq.rnnd")
        self.check(e is not None and "aten::t " in e, "refused: %s" % e)


class UnusedModules(Logits):
    """Submodules forward() never calls (leftovers): an activation rnnd's head has not, a
    pooling module, a module holding parameters of its own, and an unused Linear."""

    def __init__(self):
        super().__init__()
        self.act = nn.SiLU()
        self.leaky = nn.LeakyReLU()
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.prelu = nn.PReLU()
        self.unused_fc = nn.Linear(16, 7)


class UsedSiLU(Logits):
    """The same activation called in the head: refused."""

    def __init__(self):
        super().__init__()
        self.act = nn.SiLU()

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(self.act(y))


class TestUnusedModules(Case):
    def test_ignored(self):
        """Unused submodules of any kind are left out in every torch door (from_module,
        script and trace files), as an unused Linear is; the model computes torch's."""
        torch.manual_seed(23)
        net = UnusedModules().eval()
        e = refusal(net, "unused.rnnd")
        if self.check(e is None, "from_module converts: %s" % e):
            m = reference.load(path("unused.rnnd"))
            x = np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
            got = np.asarray(reference.run(m, [x])[0]).reshape(-1)
            with torch.no_grad():
                want = net(torch.from_numpy(x)[None])[0].numpy().reshape(-1)
            self.check(np.allclose(got, want, atol=1e-5), "rnnd equals torch")
        rc, err = script_convert(net, "unused_script")
        self.check(rc == 0, "script converts: %s" % err)
        p = path("unused_trace.pt")
        torch.jit.trace(net, (torch.randn(2, 5, 3),)).save(p)
        rc, err = main_inproc(p, "-o", path("unused_trace.rnnd"))
        self.check(rc == 0, "trace converts: %s" % err)

    def test_used(self):
        """An nn.SiLU forward() calls is still refused, naming the head's activations."""
        e = refusal(UsedSiLU().eval(), "used_silu.rnnd")
        self.check(e is not None and "SiLU" in e and "ReLU, Tanh" in e, "refused: %s" % e)


class OneMinusSigmoid(Logits):
    """1 - torch.sigmoid(...): TorchScript computes it in its own builtin ("<string>")."""

    def forward(self, x):
        y, _ = self.rnn(x)
        return 1 - torch.sigmoid(self.fc(y))


class AvgPoolOverTime(Logits):
    """A mean over time by F.adaptive_avg_pool1d (GlobalAveragePool in ONNX)."""

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(F.adaptive_avg_pool1d(y.transpose(1, 2), 1).squeeze(-1))


class SizeIndexLast(Logits):
    """y[:, x.size(1) - 1]: the last step through an index computed from the input size."""

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, x.size(1) - 1])


class TestMessagesTrial20(Case):
    def test_rsub_location(self):
        """1 - torch.sigmoid(z): the refusal points at the user's line, not TorchScript's
        internal <string>."""
        e = refusal(OneMinusSigmoid().eval(), "rsub.rnnd")
        self.check(e is not None and "<string>" not in e and
                   "test_convert_user6.py" in e and "1 - torch.sigmoid" in e, "message: %s" % e)

    def test_onnx_global_pool(self):
        """ONNX GlobalAveragePool over the steps: says it is a pooling and what converts."""
        rc, err = onnx_convert(onnx_export(AvgPoolOverTime(), "gap", torch.randn(2, 6, 3)))
        self.check(rc == 1 and "GlobalAveragePool" in err and "y.mean(1)" in err and
                   "export again" in err, "GlobalAveragePool: %s" % err)

    def test_onnx_silu(self):
        """ONNX SiLU (x * sigmoid(x)) in the head: named an activation, not a branch."""
        rc, err = onnx_convert(onnx_export(UsedSiLU(), "silu", torch.randn(2, 6, 3)))
        self.check(rc == 1 and "SiLU" in err and "ReLU, Tanh, Sigmoid" in err and
                   "branch" not in err, "SiLU: %s" % err)

    def test_size_index(self):
        """y[:, x.size(1) - 1]: named an index computed from the input's size, y[:, -1]
        suggested (not 'index None')."""
        e = refusal(SizeIndexLast().eval(), "size_index.rnnd")
        self.check(e is not None and "index None" not in e and "input's size" in e and
                   "y[:, -1]" in e, "message: %s" % e)


class Standardised(nn.Module):
    """(x - mu) / sd with buffers, an LSTM, a Linear per step (outside trial 20, p1)."""

    def __init__(self, mu, sd):
        super().__init__()
        self.register_buffer("mu", torch.tensor(mu))
        self.register_buffer("sd", torch.tensor(sd))
        self.lstm = nn.LSTM(3, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y, _ = self.lstm((x - self.mu) / self.sd)
        return self.fc(y)


FAR_MU, FAR_SD = [1.0e6, 2.0e6, 5.0e5], [0.125, 0.25, 0.125]
FOLD_MSG = "cannot be folded into the first layer without losing float32 precision"


def onnx_lstm(name, seed, arrays, nodes, x):
    """Save an ONNX graph: NODES on the input x [T, B, 3] (constants ARRAYS, [(name, array)])
    whose output X feeds an LSTM of 4 (weights from SEED), squeezed to O; returns its path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    I, H = 3, 4
    arrays = [("W", 0.5 * rng.standard_normal((1, 4 * H, I))),
              ("R", 0.5 * rng.standard_normal((1, 4 * H, H))),
              ("B", 0.5 * rng.standard_normal((1, 8 * H)))] + list(arrays)
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in arrays]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    nodes = list(nodes) + [helper.make_node("LSTM", [x, "W", "R", "B"], ["Y"], hidden_size=H),
                           helper.make_node("Squeeze", ["Y", "one"], ["O"])]
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["T", "B", I])], [helper.make_tensor_value_info(
            "O", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    p = path(name + ".onnx")
    onnx.save(m, p)
    return p


def onnx_standardised(name, mu, sd):
    """An ONNX Sub(x, mu) -> Div(sd) -> LSTM -> Squeeze graph (outside trial 20, p29)."""
    from onnx import helper
    return onnx_lstm(name, 29, [("mu", np.asarray(mu)), ("sd", np.asarray(sd))],
                     [helper.make_node("Sub", ["x", "mu"], ["xc"]),
                      helper.make_node("Div", ["xc", "sd"], ["xn"])], "xn")


class TestFoldPrecision(Case):
    def test_module_refused(self):
        """from_module of p1 (|mu| / sd up to 8e6): refused, naming the feature and the way
        out, nothing written (served, it differed from torch by 0.048)."""
        torch.manual_seed(0)
        if os.path.exists(path("fold_far.rnnd")):
            os.unlink(path("fold_far.rnnd"))
        e = refusal(Standardised(FAR_MU, FAR_SD).eval(), "fold_far.rnnd")
        self.check(e is not None and FOLD_MSG in e and "(x - mu) / sd" in e and "feature "
                   in e and "normalise the input in the client" in e and "\n" not in e,
                   "a far standardisation refused: %s" % e)
        self.check(not os.path.exists(path("fold_far.rnnd")), "nothing written")

    def test_onnx_refused(self):
        """The ONNX door, p29 (served, it differed by 0.215 with a record of error 0)."""
        p = onnx_standardised("fold_far_onnx", FAR_MU, FAR_SD)
        if os.path.exists(p[:-5] + ".rnnd"):
            os.unlink(p[:-5] + ".rnnd")
        rc, err = onnx_convert(p)
        self.check(rc == 1 and FOLD_MSG in err and "feature " in err and
                   "normalise the input in the client" in err and err.count("\n") <= 1,
                   "a far standardisation refused: %s" % err)
        self.check(not os.path.exists(p[:-5] + ".rnnd"), "nothing written")

    def test_modest_converts(self):
        """mu ~ 3, sd ~ 2: converts; computed in float32 as rnnd does, on data around mu,
        it matches torch; the record says the data's scale was checked."""
        torch.manual_seed(3)
        mu, sd = [3.0, -2.5, 4.0], [2.0, 1.5, 2.5]
        net = Standardised(mu, sd).eval()
        p = path("fold_modest.rnnd")
        rnnd_convert.from_module(net, p)
        x = (torch.tensor(mu) + torch.tensor(sd) * torch.randn(2, 30, 3)).float()
        with torch.no_grad():
            want = net(x).numpy()
        m = reference.Model(p, np.float32)
        got = np.stack(reference.run(m, list(x.numpy()))[0])
        err = float(np.max(np.abs(got - want)))
        self.check(err < 1e-5, "rnnd (float32) equals torch on data around mu: %.3g" % err)
        rec = verification_record(p)
        self.check(rec.get("data_scale_checked") is True, "the record: %r" % rec)
        q = onnx_standardised("fold_modest_onnx", mu, sd)
        rc, err = onnx_convert(q)
        self.check(rc == 0, "the ONNX door converts it: %s" % err)

    def test_data_scale_pass(self):
        """Verification runs inputs at the data's scale (mu + sd * N(0, 1)): a source that
        equals the converted model near 0 but not around mu = 100 is refused there, and the
        message names the standardisation."""
        from rnnd_convert import verify
        torch.manual_seed(4)
        p = path("fold_scale.rnnd")
        model = rnnd_convert.from_module(Standardised([100.0] * 3, [1.0] * 3).eval(), p)
        ref = reference.load(p)

        def run_source(x):
            y = np.stack(reference.run(ref, list(x))[0])
            return y + (1.0 if np.abs(x).max() > 50 else 0.0)
        try:
            verify.compare(model, p, run_source, "module")
        except ConvertError as e:
            self.check("data's own scale" in str(e) and "(x - mu) / sd" in str(e),
                       "refused at the data's scale: %s" % e)
        else:
            self.check(False, "a source that differs around mu is refused")


def onnx_dense(name, mu=None, sd=None, P=None, c=None):
    """An ONNX [Sub(x, mu) -> Div(sd) ->] MatMul(P^T) [-> Add(c)] -> LSTM -> Squeeze graph:
    a standardisation followed by a learned Linear(3, 3) (outside trial 21, s2b); without
    mu, a dense map with a bias alone."""
    from onnx import helper
    arrays, nodes, x = [("Pt", np.asarray(P).T)], [], "x"
    if mu is not None:
        arrays += [("mu", np.asarray(mu)), ("sd", np.asarray(sd))]
        nodes += [helper.make_node("Sub", ["x", "mu"], ["xc"]),
                  helper.make_node("Div", ["xc", "sd"], ["xn"])]
        x = "xn"
    nodes.append(helper.make_node("MatMul", [x, "Pt"], ["xp"]))
    x = "xp"
    if c is not None:
        arrays.append(("c", np.asarray(c)))
        nodes.append(helper.make_node("Add", [x, "c"], ["xb"]))
        x = "xb"
    p = onnx_lstm(name, 21, arrays, nodes, x)
    if os.path.exists(p[:-5] + ".rnnd"):
        os.unlink(p[:-5] + ".rnnd")
    return p


PROJ = np.array([[0.5, -0.3, 0.2], [0.1, 0.4, -0.5], [-0.2, 0.3, 0.6]])
PROJ_B = np.array([0.1, -0.2, 0.3])


class TestFoldDense(Case):
    """(x - mu) / sd then a dense map (MatMul / Add of a Linear(3, 3)) before the first
    layer (outside trial 21, s2b): it converted with a record of error 0 and no pass at the
    data's scale, and served outputs differed from the source by 0.05 on data around mu."""

    def refused(self, p, what):
        rc, err = onnx_convert(p)
        self.check(rc == 1 and "cannot be folded into the first layer without losing "
                   "float32 precision" in err and "normalise the input in the client" in err
                   and err.count("\n") <= 1, "%s refused: %s" % (what, err))
        self.check(not os.path.exists(p[:-5] + ".rnnd"), "%s: nothing written" % what)

    def test_far_refused(self):
        """The s2b graph (mu about 1e6, sd 0.2), with and without the Linear's bias."""
        mu, sd = [1.0e6, 2.0e6, 5.0e5], [0.2] * 3
        self.refused(onnx_dense("dense_far", mu, sd, PROJ, PROJ_B), "with bias")
        self.refused(onnx_dense("dense_far_nob", mu, sd, PROJ), "without bias")

    def test_bias_only_refused(self):
        """A dense map with a bias alone, whose zero (A x0 + c = 0, found by least squares)
        lies at about 1e6: refused; with a singular map and a large bias, refused too."""
        x0 = np.array([1.0e6, 2.0e6, 5.0e5])
        self.refused(onnx_dense("dense_bias_far", P=PROJ / 0.2, c=-(PROJ / 0.2) @ x0),
                     "a dense map with a far zero")
        sing = PROJ.copy()
        sing[2] = sing[0] + sing[1]
        self.refused(onnx_dense("dense_bias_sing", P=sing, c=[3.0e5, -2.0e5, 1.0e5]),
                     "a singular map with a large bias")

    def test_modest_converts(self):
        """mu ~ 3, sd ~ 2, the same Linear: converts; computed in float32 as rnnd does, on
        data around mu, it matches the graph (onnx_run, float64); the record says the data's
        scale was checked."""
        import onnx
        from rnnd_convert.onnx_run import _Graph
        mu, sd = [3.0, -2.5, 4.0], [2.0, 1.5, 2.5]
        p = onnx_dense("dense_modest", mu, sd, PROJ, PROJ_B)
        rc, err = onnx_convert(p)
        self.check(rc == 0, "converts: %s" % err)
        x = (np.array(mu) + np.array(sd) * np.random.default_rng(5).standard_normal(
            (2, 30, 3))).astype(np.float32)
        want = _Graph(onnx.load(p)).run({"x": x.transpose(1, 0, 2)})["O"]
        want = np.asarray(want, np.float64).transpose(1, 0, 2)
        m = reference.Model(p[:-5] + ".rnnd", np.float32)
        got = np.stack(reference.run(m, list(x))[0])
        e = float(np.max(np.abs(got - want)))
        self.check(e < 1e-5, "rnnd (float32) equals the graph on data around mu: %.3g" % e)
        rec = verification_record(p[:-5] + ".rnnd")
        self.check(rec.get("data_scale_checked") is True, "the record: %r" % rec)


if __name__ == "__main__":
    unittest.main()
