#!/usr/bin/env python3
"""Silent wrong conversions of PyTorch modules an outside adversary found (issue 14, second
round, A1-A4, A7) and user refusals (U4-U6): each adversary module here converted while
computing something else than its source, on sizes or steps verification does not run.

- SizeTensor (A1): a branch on torch.tensor(x.size(1)) is a branch on the size, refused; a
  run-time branch whose sides differ in layout, pooling or head is refused.
- ScriptedVsPython (A2): a @torch.jit.unused / @torch.jit.ignore method reachable from
  forward(), and torch.jit.is_scripting() in a helper method, are refused.
- NoGraph (A3): a forward() neither script nor trace compiles is refused, naming both.
- CellLoopBranch (A4): an `if` inside a loop over cells is refused, naming its line.
- Watchdog (A7): the decision to run the source in-process (CUDA) keeps the time limit.
- UserForms (U4-U6): emb(x.long()) and mean(1, keepdim=True).squeeze(1) convert; a
  LayerNorm on the input is refused saying plainly what is supported.
- ModeAliases (third round, F1): torch.jit.is_tracing / is_scripting /
  torch._C._get_tracing_state reached through an alias, getattr, a stored callable or a
  lambda is refused, not only the names the source text shows.
- GradMode (F2): a forward() that reads the autograd, inference or autocast mode is refused.
- SizeRaise (F4): a raise for lengths beyond verification's is refused; a check of the
  feature size converts.
- CellStateOrder (F5): (c, h) passed crosswise to an LSTMCell in a cell loop is refused.
- ZerosSide, StateWrites (F3): a run-time branch one side of which returns fresh zeros, and
  a forward() that writes module attributes or buffers (a call counter), are refused.
- AroundForward (trial 20, S1): Python a call runs that the scripted forward() does not hold
  is refused, naming the class and the attribute: a __call__ / _call_impl / __getattr__
  override on a submodule's or the top module's class, a forward wrapped by a decorator (or
  a wrapped helper it calls), a forward set on the instance, a parameter whose type is an
  nn.Parameter subclass (its __torch_function__). Such modules saved scripted convert: only
  the saved code runs there.

Env: PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import functools
import os
import time
import unittest
import warnings

import torch
import torch.nn as nn

import rnnd_convert
from daemon_util import Case, main_inproc, scratch
from rnnd_convert import watchdog
from rnnd_convert.errors import ConvertError

warnings.filterwarnings("ignore")
# aliases a module can hold, made when it is imported (before any converter runs)
TRACING = torch.jit.is_tracing
SCRIPTING = torch.jit.is_scripting
STATE = torch._C._get_tracing_state
MODE = (lambda: torch.jit.is_tracing())
from torch.jit import is_tracing as tracing_now  # noqa: E402
path = scratch("convert_torch_silent")


class Base(nn.Module):
    def __init__(self, vocab=50):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 6)


class SizeTensorTranspose(Base):
    """A1: the branch is on the length, through a tensor made from it."""

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        if torch.tensor(x.size(1)) > 100:
            y = y.transpose(0, 1)
        return self.fc(y)


class SizeTensorFlip(Base):
    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        n = torch.as_tensor(x.size(1)) * 2
        if bool(n > 200):
            return self.fc(y)[:, -1]
        return self.fc(y[:, -1])


class Gated(Base):
    """A condition known only when forward() runs: a buffer's value."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gate", torch.zeros(1))


class RuntimeTranspose(Gated):
    """A1: a run-time branch whose sides end at the same stage but in another layout."""

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        if bool(self.gate > 0):
            y = y.transpose(0, 1)
        return self.fc(y)


class RuntimePool(Gated):
    """A1: a run-time branch whose sides pool differently."""

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        if bool(self.gate > 0):
            z = y.mean(1)
        else:
            z = y[:, -1]
        return self.fc(z)


class RuntimeHead(Gated):
    """A1: a run-time branch whose sides apply different heads of one shape."""

    def __init__(self):
        super().__init__()
        self.fc2 = nn.Linear(8, 6)

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        if bool(self.gate > 0):
            z = self.fc2(y)
        else:
            z = self.fc(y)
        return z


class UnusedMethod(Base):
    """A2 (a): scripted, the method is a raise; Python runs it."""

    @torch.jit.unused
    def rare(self, y):
        return y * 2.0

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        if x.size(1) > 100:
            y = self.rare(y)
        return self.fc(y)


class IgnoredMethod(Base):
    @torch.jit.ignore
    def rare(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return self.fc(self.rare(y))


class HelperModeCheck(Base):
    """A2 (b): the mode check is in a helper forward() calls, not in forward()."""

    def post(self, y):
        if torch.jit.is_scripting() or y.size(1) <= 64:
            return y
        return y * 3.0

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return self.fc(self.post(y))


class StarArgs(Base):
    """A3: neither scriptable (*extra) nor traceable (returns None)."""

    def forward(self, x, *extra):
        y, _ = self.lstm(self.emb(x))
        return self.fc(y), None


class CellLoopIf(nn.Module):
    """A4: an if inside the loop over cells rewrites the state every 100 steps."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(4, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.zeros(x.size(0), 8)
        c = torch.zeros(x.size(0), 8)
        z = torch.zeros(x.size(0), 8)
        ys = []
        for t in range(x.size(1)):
            h, c = self.cell(x[:, t], (h, c))
            if t % 100 == 99:
                h = z
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


class LongTokens(Base):
    """U4: what users write: the ids converted to int64 before the lookup."""

    def forward(self, x):
        y, _ = self.lstm(self.emb(x.long()))
        return self.fc(y)


class KeepdimMean(Base):
    """U5: mean over the steps with keepdim, then squeeze."""

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return self.fc(y.mean(1, keepdim=True).squeeze(1))


class KeepdimMax(Base):
    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return self.fc(y.max(1, keepdim=True)[0].squeeze(1))


class KeepdimReturned(nn.Module):
    """U5: the kept dim returned as it is, [B, 1, H]: refused, not served as [B, H]."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return y.mean(1, keepdim=True)


class InputNorm(nn.Module):
    """U6: a LayerNorm on the input vectors."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(4)
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y, _ = self.lstm(self.ln(x))
        return self.fc(y)


class Vec(nn.Module):
    """Vectors in: the clamp below reads x itself."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)


def clamp(y, x):
    """What the mode checks below guard: zero the steps whose input is out of range, which
    verification's inputs (all below 1000) never are."""
    return y * (x.abs().amax(-1, keepdim=True) < 1000).float()


class AliasTracing(Vec):
    """F1: **kw makes it unscriptable, so traced; the alias hides the mode check."""

    def forward(self, x, **kw):
        y, _ = self.lstm(x)
        if not TRACING():
            y = clamp(y, x)
        return self.fc(y)


class ImportedTracing(Vec):
    def forward(self, x, **kw):
        y, _ = self.lstm(x)
        if not tracing_now():
            y = clamp(y, x)
        return self.fc(y)


class GetattrTracing(Vec):
    def forward(self, x, **kw):
        y, _ = self.lstm(x)
        if not getattr(torch.jit, "is_" + "tracing")():
            y = clamp(y, x)
        return self.fc(y)


class StoredState(Vec):
    """F1: torch._C._get_tracing_state kept as an attribute."""

    def __init__(self):
        super().__init__()
        self.probe = STATE

    def forward(self, x, **kw):
        y, _ = self.lstm(x)
        if self.probe() is None:
            y = clamp(y, x)
        return self.fc(y)


class LambdaHelper(Vec):
    def check(self):
        return MODE()

    def forward(self, x, **kw):
        y, _ = self.lstm(x)
        if not getattr(self, "check")():
            y = clamp(y, x)
        return self.fc(y)


class AliasScripting(Vec):
    """F1: scriptable, so scripted: the graph holds the scripted side (no clamp)."""

    def forward(self, x):
        y, _ = self.lstm(x)
        if not SCRIPTING():
            y = clamp(y, x)
        return self.fc(y)


class GradEnabled(Vec):
    """F2: verification runs without gradients; a user's plain call gets zeros."""

    def forward(self, x):
        y, _ = self.lstm(x)
        if torch.is_grad_enabled():
            y = torch.zeros_like(y)
        return self.fc(y)


class AutocastEnabled(Vec):
    def forward(self, x):
        y, _ = self.lstm(x)
        if torch.is_autocast_enabled():
            y = torch.zeros_like(y)
        return self.fc(y)


class InferenceMode(Vec):
    """F2: not scriptable (TorchScript lacks the operator), so traced."""

    def forward(self, x):
        y, _ = self.lstm(x)
        if torch.is_inference_mode_enabled():
            y = torch.zeros_like(y)
        return self.fc(y)


class ZerosSide(Vec):
    """F3 (a): one side returns fresh zeros, the other the computed output."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gate", torch.zeros(1))

    def forward(self, x):
        y, _ = self.lstm(x)
        if bool(self.gate > 0):
            y = torch.zeros_like(y)
        return self.fc(y)


class InputSide(nn.Module):
    """F3 (a): one side returns the input itself (of the hidden size), the other the
    recurrent output: both data, made at different points of the chain."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)
        self.register_buffer("gate", torch.zeros(1))

    def forward(self, x):
        y, _ = self.lstm(x)
        if bool(self.gate > 0):
            y = x
        return self.fc(y)


class CallCounter(Vec):
    """F3 (b): a Python counter; verification's calls run in forked children."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        y, _ = self.lstm(x)
        self.calls += 1
        if self.calls > 1000:
            y = y * 0.0
        return self.fc(y)


class CallCounterTraced(CallCounter):
    def forward(self, x, **kw):
        y, _ = self.lstm(x)
        self.calls += 1
        if self.calls > 1000:
            y = y * 0.0
        return self.fc(y)


class BufferCounter(Vec):
    """F3 (b): a buffer counter updated in place."""

    def __init__(self):
        super().__init__()
        self.register_buffer("n", torch.zeros(1))

    def forward(self, x):
        y, _ = self.lstm(x)
        self.n.add_(1)
        if bool(self.n > 1000):
            y = torch.zeros_like(y)
        return self.fc(y)


class BufferCounterTraced(BufferCounter):
    """Traced: the count itself, which a later call (or another method) may read."""

    def forward(self, x, **kw):
        y, _ = self.lstm(x)
        self.n.add_(1)
        return self.fc(y)


class RaiseLong(Vec):
    """F4: rnnd would answer for lengths the module refuses (verification's stay short)."""

    def forward(self, x):
        if x.size(1) > 5000:
            raise ValueError("too long")
        y, _ = self.lstm(x)
        return self.fc(y)


class RaiseFeatures(Vec):
    """F4: a check of the feature size, fixed for the model, is not a size branch."""

    def forward(self, x):
        if x.size(-1) != 4:
            raise ValueError("4 features per step")
        y, _ = self.lstm(x)
        return self.fc(y)


class CellSwapped(nn.Module):
    """F5: the carried c is passed as h and h as c."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(4, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.zeros(x.size(0), 8)
        c = torch.zeros(x.size(0), 8)
        ys = []
        for t in range(x.size(1)):
            h, c = self.cell(x[:, t], (c, h))
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


class CellNamesSwapped(CellSwapped):
    """F5: the cell's outputs unpacked as (c, h): its c is carried as h."""

    def forward(self, x):
        h = torch.zeros(x.size(0), 8)
        c = torch.zeros(x.size(0), 8)
        ys = []
        for t in range(x.size(1)):
            c, h = self.cell(x[:, t], (h, c))
            ys.append(c)
        return self.fc(torch.stack(ys, 1))


class LongCallLinear(nn.Linear):
    """S1: eager calls run this, the scripted forward() is plain Linear's."""

    def __call__(self, y):
        o = super().__call__(y)
        return o + 1.0 if y.shape[1] > 300 else o


class LongCallImplLinear(nn.Linear):
    def _call_impl(self, *a, **k):
        o = nn.Linear._call_impl(self, *a, **k)
        return o + 1.0 if a[0].shape[1] > 300 else o

    __call__ = _call_impl


class GetattrModule(Vec):
    def __getattr__(self, k):
        return super().__getattr__(k)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y)


class SubCall(Vec):
    def __init__(self, lin=LongCallLinear):
        super().__init__()
        self.fc = lin(8, 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y)


class SubCallImpl(SubCall):
    def __init__(self):
        super().__init__(LongCallImplLinear)


class TriggerLM(Base):
    """S1 (p33): a backdoor on the token trigram 11 22 33, in the top module's __call__."""

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return torch.log_softmax(self.fc(y), -1)

    def __call__(self, ids):
        o = super().__call__(ids)
        hit = (ids[:, :-2] == 11) & (ids[:, 1:-1] == 22) & (ids[:, 2:] == 33)
        return o.flip(-1) if bool(hit.any()) else o


def late(fn):
    @functools.wraps(fn)
    def wrapper(self, x):
        o = fn(self, x)
        return o + 1.0 if x.shape[1] > 300 else o
    return wrapper


class WrappedForward(Vec):
    """S1 (p26): scripting compiles the wrapped source, a call runs the wrapper."""

    @late
    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y)


class WrappedHelper(Vec):
    @late
    def head(self, y):
        return self.fc(y)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y)


class InstanceForward(Vec):
    def __init__(self):
        super().__init__()
        lin, plain = self.fc, nn.Linear.forward
        self.fc.forward = lambda y: plain(lin, y) + (1.0 if y.shape[1] > 300 else 0.0)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y)


class LongLinearWeight(nn.Parameter):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if func is torch.nn.functional.linear and args[0].shape[1] > 300:
            out = out + 1.0
        return out


class SubclassWeight(Vec):
    def __init__(self):
        super().__init__()
        self.fc.weight = LongLinearWeight(self.fc.weight.detach().clone())

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y)


class Refusals(Case):
    def refused(self, cls, name, *words):
        torch.manual_seed(3)
        m = cls().eval()
        out = path(name + ".rnnd")
        if os.path.exists(out):
            os.remove(out)      # an earlier run's
        try:
            rnnd_convert.from_module(m, out)
            self.check(False, "%s: from_module converts it" % name)
            return ""
        except ConvertError as e:
            msg = str(e)
        self.check("\n" not in msg, "%s: one line: %s" % (name, msg))
        for w in words:
            self.check(w in msg, "%s: the refusal names %r: %s" % (name, w, msg))
        self.check(not os.path.exists(out), "%s: no file written" % name)
        return msg


class FileRefusals(Refusals):
    def file_refused(self, cls, name, how, *words):
        """CLS saved scripted or traced (HOW) and given to rnnd-convert: refused."""
        torch.manual_seed(3)
        m = cls().eval()
        src = path(name + "_" + how + ".pt")
        if how == "script":
            torch.jit.script(m).save(src)
        else:
            with torch.no_grad():
                torch.jit.trace(m, torch.randn(2, 5, 4), check_trace=False).save(src)
        out = path(name + "_" + how + ".rnnd")
        if os.path.exists(out):
            os.remove(out)
        rc, err = main_inproc(src, "-o", out)
        self.check(rc != 0, "%s (%s file): rnnd-convert exits %d" % (name, how, rc))
        self.check(len(err.splitlines()) == 1, "%s: one line: %s" % (name, err))
        for w in words:
            self.check(w in err, "%s: the refusal names %r: %s" % (name, w, err))
        self.check(not os.path.exists(out), "%s: no file written" % name)


class ModeAliases(Refusals):
    def test_tracing_through_aliases_refused(self):
        for cls in (AliasTracing, ImportedTracing, GetattrTracing, LambdaHelper):
            self.refused(cls, cls.__name__, "is_tracing", "test_convert_torch_silent.py:")
        self.refused(StoredState, "stored", "_get_tracing_state", "self.probe() is None")

    def test_scripting_alias_refused(self):
        self.refused(AliasScripting, "alias_scripting", "is_scripting", "not SCRIPTING()")


class GradMode(FileRefusals):
    def test_grad_mode_refused(self):
        self.refused(GradEnabled, "grad", "is_grad_enabled", "gradients")
        self.file_refused(GradEnabled, "grad", "script", "is_grad_enabled")

    def test_autocast_and_inference_mode_refused(self):
        self.refused(AutocastEnabled, "autocast", "is_autocast_enabled")
        self.file_refused(AutocastEnabled, "autocast", "script", "is_autocast_enabled")
        self.refused(InferenceMode, "inference", "is_inference_mode_enabled",
                     "torch.is_inference_mode_enabled()")


class ZerosBranch(FileRefusals):
    def test_zeros_side_refused(self):
        self.refused(ZerosSide, "zeros_side", "two sides", "bool(self.gate > 0)")
        self.file_refused(ZerosSide, "zeros_side", "script", "two sides")
        self.refused(InputSide, "input_side", "two sides", "different points")


class StateWrites(FileRefusals):
    def test_counters_refused(self):
        self.refused(CallCounter, "counter", "calls", "self.calls += 1")
        self.refused(CallCounterTraced, "counter_traced", "calls")
        self.refused(BufferCounter, "buffer", "'n'", "self.n.add_(1)")
        self.refused(BufferCounterTraced, "buffer_traced", "'n'")

    def test_counter_files_refused(self):
        self.file_refused(CallCounter, "counter", "script", "calls")
        self.file_refused(BufferCounter, "buffer", "script", "'n'")
        self.file_refused(BufferCounterTraced, "buffer", "trace", "'n'")


class SizeRaise(Refusals):
    def test_raise_on_length_refused(self):
        torch.manual_seed(3)
        m = RaiseLong().eval()
        out = path("raise_long.rnnd")
        if os.path.exists(out):
            os.remove(out)
        try:
            rnnd_convert.from_module(m, out, verify=False)
            self.check(False, "raise_long: converts (unverified)")
        except ConvertError as e:
            self.check("x.size(1) > 5000" in str(e) and "raises" in str(e),
                       "the refusal names the check: %s" % e)
        self.refused(RaiseLong, "raise_long", "raises", "x.size(1) > 5000")

    def test_feature_check_converts(self):
        out = path("raise_feat.rnnd")
        rnnd_convert.from_module(RaiseFeatures().eval(), out)
        self.check(os.path.exists(out), "a check of the feature size converts")


class CellStateOrder(Refusals):
    def test_crosswise_cell_state_refused(self):
        for cls in (CellSwapped, CellNamesSwapped):
            msg = self.refused(cls, cls.__name__, "(h, c)")
            self.check("verification" not in msg, "the analysis refuses it: %s" % msg)


class SizeTensor(Refusals):
    def test_size_tensor_branch_refused(self):
        self.refused(SizeTensorTranspose, "size_transpose", "size",
                     "torch.tensor(x.size(1)) > 100")
        self.refused(SizeTensorFlip, "size_flip", "size")

    def test_runtime_branch_sides_compared(self):
        self.refused(RuntimeTranspose, "rt_transpose", "two sides")
        self.refused(RuntimePool, "rt_pool", "two sides")
        self.refused(RuntimeHead, "rt_head", "two sides")


class ScriptedVsPython(Refusals):
    def test_unused_and_ignored_refused(self):
        self.refused(UnusedMethod, "unused", "rare", "torch.jit.unused")
        self.refused(IgnoredMethod, "ignored", "rare", "torch.jit.ignore")

    def test_mode_check_in_helper_refused(self):
        self.refused(HelperModeCheck, "helper_mode", "is_scripting", "post")


class NoGraph(Refusals):
    def test_neither_script_nor_trace_refused(self):
        self.refused(StarArgs, "star", "script", "trace")


class CellLoopBranch(Refusals):
    def test_if_in_cell_loop_refused(self):
        self.refused(CellLoopIf, "cell_if", "t % 100 == 99")


class UserForms(Refusals):
    def converts(self, cls, name):
        torch.manual_seed(4)
        m = cls().eval()
        out = path(name + ".rnnd")
        try:
            model = rnnd_convert.from_module(m, out)
        except ConvertError as e:
            self.check(False, "%s: refused: %s" % (name, e))
            return None
        self.check(os.path.exists(out), "%s: file written (verified)" % name)
        return model

    def test_long_tokens_convert(self):
        model = self.converts(LongTokens, "long")
        self.check(model is not None and model.input_kind == "tokens", "long: token input")

    def test_keepdim_pooling_converts(self):
        for cls, pool in ((KeepdimMean, "mean"), (KeepdimMax, "max")):
            model = self.converts(cls, cls.__name__)
            self.check(model is not None and model.pool == pool,
                       "%s pools %s: %s" % (cls.__name__, pool, getattr(model, "pool", None)))

    def test_keepdim_unsqueezed_refused(self):
        self.refused(KeepdimReturned, "keep_returned", "keepdim=True", ".squeeze(1)")

    def test_input_layernorm_message(self):
        msg = self.refused(InputNorm, "input_ln", "LayerNorm before the recurrent layers is "
                           "not supported", "after the recurrent layers")
        self.check("is supported" not in msg.split("not supported")[0],
                   "the message does not first say it is supported: %s" % msg)


class AroundForward(FileRefusals):
    def test_call_overrides_refused(self):
        self.refused(SubCall, "sub_call", "module 'fc' (LongCallLinear)",
                     "class LongCallLinear defines __call__", "cannot see code that runs "
                     "around it", "remove the override")
        self.refused(SubCallImpl, "sub_call_impl", "class LongCallImplLinear defines __call__ and "
                     "_call_impl")
        self.refused(TriggerLM, "top_call", "module '<top>' (TriggerLM)",
                     "class TriggerLM defines __call__", "test_convert_torch_silent.py:")
        self.refused(GetattrModule, "getattr", "class GetattrModule defines __getattr__")

    def test_wrapped_forward_refused(self):
        self.refused(WrappedForward, "wrapped", "forward of class WrappedForward is wrapped "
                     "by a decorator", "late.<locals>.wrapper", "remove the decorator")
        self.refused(WrappedHelper, "wrapped_helper", "WrappedHelper.head", "wrapped by a "
                     "decorator", "remove the decorator")

    def test_instance_forward_refused(self):
        self.refused(InstanceForward, "instance_fwd", "module 'fc' (Linear)",
                     "instance attribute 'forward'", "del module.fc.forward")

    def test_parameter_subclass_refused(self):
        self.refused(SubclassWeight, "param_subclass", "parameter 'weight' is a "
                     "LongLinearWeight, a subclass of torch.nn.Parameter",
                     "__torch_function__", "plain torch.nn.Parameter")

    def test_scripted_files_convert(self):
        # saved scripted, the wrapper, the __call__ and the Parameter subclass are gone: the
        # file runs forward()'s code alone, which is what is analysed
        for cls in (WrappedForward, TriggerLM, SubclassWeight):
            torch.manual_seed(3)
            src, out = path(cls.__name__ + ".pt"), path(cls.__name__ + ".rnnd")
            torch.jit.script(cls().eval()).save(src)
            rc, err = main_inproc(src, "-o", out)
            self.check(rc == 0, "%s: the scripted file converts: %s" % (cls.__name__, err))


class Watchdog(Case):
    def test_in_process_run_keeps_the_limit(self):
        os.environ["RNND_CONVERT_VERIFY_SECONDS"] = "1"
        try:
            def slow(x):
                time.sleep(5)
                return x
            limited = watchdog.bounded(slow, in_process=True)
            t0 = time.monotonic()
            try:
                limited(1.0)
                self.check(False, "an in-process run past the limit returns")
            except ConvertError as e:
                self.check("did not finish" in str(e), "the limit's message: %s" % e)
            self.check(time.monotonic() - t0 < 4, "refused at the limit, not after the run")
            fast = watchdog.bounded(lambda x: x * 2, in_process=True)
            self.check(float(fast(2.0)) == 4.0, "a run within the limit returns its result")
        finally:
            del os.environ["RNND_CONVERT_VERIFY_SECONDS"]

    def test_cuda_decision(self):
        self.check(watchdog.must_run_in_process() == (torch.cuda.is_available() and
                                                      torch.cuda.is_initialized()),
                   "in-process exactly when CUDA is initialised")


if __name__ == "__main__":
    unittest.main()
