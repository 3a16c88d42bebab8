#!/usr/bin/env python3
"""What a second outside user trial met at the converter's doors (issue 14, user findings
U1 to U6; docs/convert.md):

- U1: fc(y[:, -1]).squeeze(-1) and fc(y[:, -1]).view(-1), a last-step classifier with one
  output squeezed to [B], convert through from_module, a scripted and a traced file, as
  through ONNX: pool last, verified, equal to PyTorch;
- U2: x.permute(1, 0, 2) into a time-major GRU / LSTM (and back) converts through the
  torch doors as ONNX converts it; a permute that moves other axes is refused saying what
  to write;
- U3: a module of several recurrent modules whose forward() takes their initial states
  converts with the pass from random initial states (initial_state_checked), each module
  given its part of rnnd's state; forward(x, h=None) handing h to the first module alone is
  refused, since rnnd's initial state would start the second from a state the source never
  takes;
- U4: the ONNX door reads h.view(-1, H) and h.view(x.size(0), -1) of a one-layer,
  one-direction GRU / LSTM as h_n[-1], as the torch doors do;
- U5: from_module of a module in train mode says on stderr, in one line, that it is
  converted as in eval mode;
- U6: a LayerNorm exported at opsets 9 and 14 (decomposed, its weight and bias a Mul and an
  Add before the next Linear) gives the model opset 17 gives: same parameters, same digest.

Env: PYTHONPATH (= tools), RNND_BIN, RNND_TEST_TMP.
"""
import contextlib
import io
import json
import subprocess
import unittest
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from daemon_util import RNND_BIN, Case, scratch, verification_record

import rnnd_convert
from rnnd_convert import reference
from rnnd_convert.arch import ConvertError

warnings.filterwarnings("ignore")
path = scratch("convert_user2")
OPSETS = (9, 14, 17)


def export(net, name, opset, x):
    p = path("%s_%d.onnx" % (name, opset))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (x,), p, input_names=["x"], opset_version=opset,
                          dynamic_axes={"x": {0: "batch", 1: "time"}})
    return p


class UserCase(Case):
    def converts(self, what, fn):
        """FN() (a conversion) returns its Model; None and a failed check when refused."""
        try:
            return fn()
        except ConvertError as e:
            self.check(False, "%s converts: %s" % (what, e))
            return None

    def refused(self, what, fn, needles):
        try:
            fn()
        except ConvertError as e:
            self.check(all(n in str(e) for n in needles),
                       "%s: refused naming %s: %r" % (what, needles, str(e)))
            return str(e)
        self.check(False, "%s is refused" % what)
        return None

    def matches(self, what, p, want, seqs, states=None):
        """The file at P gives WANT ([B, out] one row per sequence, [B] squeezed, or
        [B, T, out]) on SEQS, from STATES where given."""
        got = np.stack(reference.run(p, seqs, initial_states=states)[0])
        if want.ndim == 1:
            got = got[:, 0, 0]
        elif want.ndim == 2:
            got = got[:, 0]
        err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        self.check(err < 1e-5, "%s: the file equals PyTorch (shapes %s %s, max error %.2g)"
                   % (what, got.shape, want.shape, err))

    def doors(self, what, net, example, seqs, x):
        """NET converts through from_module, a scripted and a traced file, and each file
        gives NET(X) on SEQS; the Models."""
        with torch.no_grad():
            want = net(x).numpy()
        out = []
        for door in ("from_module", "script", "trace"):
            p = path("door.rnnd")
            if door == "from_module":
                def fn():
                    return rnnd_convert.from_module(net, p)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")     # torch's own TracerWarnings
                    mod = torch.jit.script(net) if door == "script" else \
                        torch.jit.trace(net, example)
                mod.save(path("door.pt"))

                def fn():
                    return rnnd_convert.convert(path("door.pt"), p)
            m = self.converts("%s (%s)" % (what, door), fn)
            if m is not None:
                self.check("max_rel_error" in verification_record(p), "%s (%s): verified" % (what, door))
                self.matches("%s (%s)" % (what, door), p, want, seqs)
            out.append(m)
        return out


# ---- U1: a last-step head of one output, squeezed ----------------------------------------
class LastSqueezed(nn.Module):
    def __init__(self, form, batch_first=True):
        super().__init__()
        self.form = form
        self.bf = batch_first
        self.rnn = nn.GRU(4, 6, batch_first=batch_first)
        self.fc = nn.Linear(6, 1)

    def forward(self, x):
        y, _ = self.rnn(x)
        last = y[:, -1] if self.bf else y[-1]
        if self.form == "squeeze":
            return self.fc(last).squeeze(-1)
        return self.fc(last).view(-1)


class TestLastSqueezed(UserCase):
    def test_converts(self):
        """fc(y[:, -1]).squeeze(-1) / .view(-1) (y[-1] time-major): pool last, verified
        against the source's [B] output, equal to PyTorch through every torch door (the old
        verification compared [B] with [B, 1] and refused, hinting at --no-verify)."""
        torch.manual_seed(2)
        x = torch.randn(3, 7, 4)
        for form in ("squeeze", "view"):
            for bf in (True, False):
                net = LastSqueezed(form, bf).eval()
                xin = x if bf else x.transpose(0, 1).contiguous()
                for m in self.doors("%s, batch_first=%s" % (form, bf), net, xin, list(x),
                                    xin):
                    if m is not None:
                        self.eq(m.pool, "last", "%s: pool" % form)

    def test_onnx_agrees(self):
        """The ONNX door converts the same module to the same pooling."""
        net = LastSqueezed("squeeze").eval()
        m = self.converts("ONNX squeeze", lambda: rnnd_convert.convert(
            export(net, "last_sq", 17, torch.randn(2, 5, 4)), path("last_sq.rnnd")))
        if m is not None:
            self.eq(m.pool, "last", "ONNX: pool")


# ---- U2: permute(1, 0, 2) around a time-major module -------------------------------------
class Permuted(nn.Module):
    def __init__(self, cell, out="permute"):
        super().__init__()
        self.out = out
        self.rnn = cell(4, 6)           # time-major
        self.fc = nn.Linear(6, 3)

    def forward(self, x):                           # x: [B, T, 4]
        y, _ = self.rnn(x.permute(1, 0, 2))
        if self.out == "permute":
            return self.fc(y.permute(1, 0, 2))
        if self.out == "transpose":
            return self.fc(y.transpose(0, 1))
        if self.out == "last":
            return self.fc(y[-1])
        return self.fc(y).permute(1, 2, 0)          # [B, classes, T]


class TestPermute(UserCase):
    def test_converts(self):
        """x.permute(1, 0, 2) into a time-major GRU / LSTM, and back with permute or
        transpose, or the last step: converts through every torch door (refused before,
        naming aten::permute), as ONNX converts it."""
        torch.manual_seed(3)
        x = torch.randn(3, 7, 4)
        for cell in (nn.GRU, nn.LSTM):
            for out in ("permute", "transpose", "last"):
                net = Permuted(cell, out).eval()
                ms = self.doors("%s, permute in, %s out" % (cell.__name__, out), net, x,
                                list(x), x)
                for m in ms:
                    if m is not None:
                        self.eq(m.pool, "last" if out == "last" else "none", "pool")
            m = self.converts("ONNX of %s" % cell.__name__, lambda: rnnd_convert.convert(
                export(Permuted(cell), "perm", 17, x), path("perm.rnnd")))

    def test_other_permute_refused(self):
        """A permute that moves the features ([B, classes, T]) is refused, naming the
        permutes rnnd takes."""
        self.refused("permute(1, 2, 0) of the output",
                     lambda: rnnd_convert.from_module(Permuted(nn.GRU, "classes"),
                                                      path("x.rnnd")),
                     ("aten::permute([1, 2, 0])", "x.permute(1, 0, 2)"))


# ---- U3: several recurrent modules and their initial states ------------------------------
class GruLstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.GRU(4, 6, batch_first=True)
        self.b = nn.LSTM(6, 5, num_layers=2, batch_first=True)
        self.fc = nn.Linear(5, 3)


class PerModule(GruLstm):
    """forward(x, h1=None, h2=None): each module its own state."""

    def forward(self, x, h1: Optional[Tensor] = None,
                h2: Optional[Tuple[Tensor, Tensor]] = None):
        y, _ = self.a(x, h1)
        y, _ = self.b(y, h2)
        return self.fc(y)


class Nested(GruLstm):
    """forward(x, state=None), state = (h of a, (h, c) of b)."""

    def forward(self, x, state: Optional[Tuple[Tensor, Tuple[Tensor, Tensor]]] = None):
        if state is None:
            y, _ = self.a(x)
            y, _ = self.b(y)
        else:
            y, _ = self.a(x, state[0])
            y, _ = self.b(y, state[1])
        return self.fc(y)


class FirstOnly(GruLstm):
    """forward(x, h=None) handing h to the first module alone."""

    def forward(self, x, h: Optional[Tensor] = None):
        y, _ = self.a(x, h)
        y, _ = self.b(y)
        return self.fc(y)


class LastOnly(GruLstm):
    """forward(x, h=None) handing (h, c) to the second module alone."""

    def forward(self, x, h: Optional[Tuple[Tensor, Tensor]] = None):
        y, _ = self.a(x)
        y, _ = self.b(y, h)
        return self.fc(y)


def torch_states(flat):
    """rnnd's flat states (per sequence: a's h [6], b's layer 0 h [5] c [5], layer 1 h c) as
    PyTorch's: h of a [1, B, 6], (h, c) of b [2, B, 5]."""
    flat = torch.from_numpy(np.asarray(flat, np.float32))
    ha = flat[:, :6][None]
    rest = flat[:, 6:].reshape(len(flat), 2, 10).transpose(0, 1)
    return ha.contiguous(), (rest[:, :, :5].contiguous(), rest[:, :, 5:].contiguous())


class TestSeveralStates(UserCase):
    def test_per_module_states(self):
        """forward(x, h1, h2) and forward(x, (h1, (h2, c2))): converted with the pass from
        random initial states (initial_state_checked), and the file started from a random
        state of every layer equals the module given it (before, no such pass ran)."""
        torch.manual_seed(4)
        x = torch.randn(3, 7, 4)
        rng = np.random.default_rng(4)
        flat = rng.standard_normal((3, 6 + 2 * 10)) * 0.5
        ha, (hb, cb) = torch_states(flat)
        for cls in (PerModule, Nested):
            net = cls().eval()
            with torch.no_grad():
                want = (net(x, ha, (hb, cb)) if cls is PerModule else
                        net(x, (ha, (hb, cb)))).numpy()
            for door in ("from_module", "script"):
                p = path("states.rnnd")
                if door == "script":
                    torch.jit.script(net).save(path("states.pt"))
                m = self.converts("%s (%s)" % (cls.__name__, door), lambda: (
                    rnnd_convert.from_module(net, p) if door == "from_module" else
                    rnnd_convert.convert(path("states.pt"), p)))
                if m is None:
                    continue
                self.check(verification_record(p).get("initial_state_checked") is True,
                           "%s (%s): initial_state_checked: %r"
                           % (cls.__name__, door, verification_record(p)))
                self.matches("%s (%s) from random states" % (cls.__name__, door), p, want,
                             list(x.numpy()), list(flat))

    def test_one_module_fed_refused(self):
        """forward(x, h=None) giving h to one module and starting the other from zeros is
        refused, verified or not, naming the module started from zeros (it converted, and a
        request's initial_state started that module from a state the source never takes)."""
        for cls, zero in ((FirstOnly, "module 'b' (LSTM)"), (LastOnly, "module 'a' (GRU)")):
            for verify in (True, False):
                self.refused("%s, verify=%s" % (cls.__name__, verify),
                             lambda: rnnd_convert.from_module(cls(), path("x.rnnd"),
                                                              verify=verify),
                             ("starts %s from zeros" % zero, "forward(x, h1=None, h2=None)"))


# ---- U4: h.view(-1, H) of one layer through ONNX -----------------------------------------
class ViewState(nn.Module):
    def __init__(self, cell, form, layers=1):
        super().__init__()
        self.form = form
        self.lstm = cell is nn.LSTM
        self.rnn = cell(4, 5, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        _, h = self.rnn(x)
        if self.lstm:
            h = h[0]
        if self.form == "view":
            return self.fc(h.view(-1, 5))
        if self.form == "view_batch":
            return self.fc(h.view(x.size(0), -1))
        return self.fc(h.reshape(-1, 5))


class TestOnnxViewState(UserCase):
    def test_converts(self):
        """h.view(-1, H), h.view(x.size(0), -1), h.reshape(-1, H) of a one-layer GRU / LSTM
        exported at opsets 9, 14, 17: pool final_state, equal to PyTorch (refused before:
        'computes on the final state')."""
        torch.manual_seed(5)
        x = torch.randn(3, 7, 4)
        for cell in (nn.GRU, nn.LSTM):
            for form in ("view", "view_batch", "reshape"):
                net = ViewState(cell, form).eval()
                with torch.no_grad():
                    want = net(x).numpy()
                for opset in OPSETS:
                    what = "%s %s opset %d" % (cell.__name__, form, opset)
                    p = path("view.rnnd")
                    m = self.converts(what, lambda: rnnd_convert.convert(
                        export(net, "view", opset, x[:2, :5]), p))
                    if m is not None:
                        self.eq(m.pool, "final_state", what + ": pool")
                        self.matches(what, p, want, list(x.numpy()))

    def test_two_layers_refused(self):
        """The same view of two layers' h_n is [2B, H], not h_n[-1]: still refused."""
        net = ViewState(nn.GRU, "view", layers=2).eval()
        self.refused("h.view(-1, H) of two layers", lambda: rnnd_convert.convert(
            export(net, "view2", 17, torch.randn(2, 5, 4)), path("x.rnnd")),
            ("final state",))


# ---- U5: train mode ----------------------------------------------------------------------
class Dropped(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 6, batch_first=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(self.drop(y))


class TestTrainMode(UserCase):
    def test_warns(self):
        """from_module of a module in train mode converts it as in eval mode and says so
        in one line on stderr; the module is left in train mode; one in eval mode gets no
        warning."""
        for train in (True, False):
            net = Dropped().train(train)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                m = self.converts("train=%s" % train,
                                  lambda: rnnd_convert.from_module(net, path("train.rnnd")))
            lines = err.getvalue().splitlines()
            if train:
                self.check(len(lines) == 1 and lines[0].startswith("rnnd-convert: warning: ")
                           and "train mode" in lines[0] and "model.eval()" in lines[0],
                           "one warning line on stderr: %r" % lines)
            else:
                self.eq(lines, [], "no warning in eval mode")
            self.eq(net.training, train, "the module's mode is left as it was")
            self.check(m is not None, "converted")


# ---- U6: LayerNorm's parameters at every opset -------------------------------------------
class NormHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 32, batch_first=True)
        self.ln = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(self.ln(y))


class TestLayerNormOpsets(UserCase):
    def test_same_model(self):
        """Opsets 9 and 14 (LayerNorm decomposed, weight and bias a Mul and an Add) give
        the model opset 17 gives: the same parameter count in rnnd inspect (3810 against
        3874 before: the weight and bias were composed into the next Linear) and the same
        digest."""
        torch.manual_seed(6)
        net = NormHead().eval()
        with torch.no_grad():
            net.ln.weight.uniform_(0.5, 1.5)
            net.ln.bias.uniform_(-0.5, 0.5)
        seen = {}
        for opset in OPSETS:
            p = path("ln_%d.rnnd" % opset)
            if self.converts("opset %d" % opset, lambda: rnnd_convert.convert(
                    export(net, "ln", opset, torch.randn(2, 5, 4)), p)) is None:
                continue
            r = subprocess.run([RNND_BIN, "inspect", "--json", p], capture_output=True,
                               text=True, timeout=60)
            info = json.loads(r.stdout) if r.returncode == 0 else {}
            seen[opset] = (info.get("parameters"), info.get("digest"))
        self.check(len(set(seen.values())) == 1 and len(seen) == len(OPSETS),
                   "every opset gives one parameter count and digest: %r" % seen)



# ---- fifth user trial: the sentiment tutorial's hidden[-2, :, :] -------------------------
class BiFullSlices(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        _, (hidden, _) = self.lstm(x)
        return self.fc(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1))


class TestFullSlicesOfHn(UserCase):
    def test_converts(self):
        """cat((hidden[-2, :, :], hidden[-1, :, :]), 1), the widely copied form of
        cat((h_n[-2], h_n[-1]), 1): full slices keep the final state; the torch doors used
        to refuse it, asking for what the user wrote."""
        torch.manual_seed(5)
        x = torch.randn(3, 7, 4)
        for m in self.doors("hidden[-2, :, :]", BiFullSlices().eval(), x, list(x), x):
            if m is not None:
                self.eq(m.pool, "final_state", "hidden[-2, :, :]: pool")


# ---- fifth user trial: F.dropout without training= at opset 9 ----------------------------
class AlwaysOnDropout(nn.Module):
    def __init__(self, functional):
        super().__init__()
        self.functional = functional
        self.rnn = nn.GRU(4, 6, batch_first=True)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        y = F.dropout(y, 0.3) if self.functional else self.drop(y)
        return self.fc(y)


class TestOpset9Dropout(UserCase):
    def test_always_on_refused(self):
        """F.dropout(y, 0.3) stays on after eval(); at opset 9 and 11 its Dropout has no
        training flag, and the ONNX door used to convert it without the dropout (0.17-0.25
        off PyTorch). nn.Dropout in eval() is left out by the exporter and converts."""
        x = torch.randn(2, 5, 4)
        for opset in (9, 11):
            f = export(AlwaysOnDropout(True).eval(), "drop_on%d" % opset, opset, x)
            self.refused("F.dropout without training=, opset %d" % opset,
                         lambda: rnnd_convert.convert(f, path("drop_on.rnnd")),
                         ["training=self.training"])
            f = export(AlwaysOnDropout(False).eval(), "drop_off%d" % opset, opset, x)
            self.converts("nn.Dropout in eval(), opset %d" % opset,
                          lambda: rnnd_convert.convert(f, path("drop_off.rnnd")))


# ---- fifth user trial: the source's float overflow is not a warning on stderr ------------
class Overflowing(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(4, 6, nonlinearity="relu", batch_first=True)
        self.fc = nn.Linear(6, 1)
        with torch.no_grad():
            self.fc.weight.fill_(-400.0)    # sigmoid(-large): exp overflows in float32

    def forward(self, x):
        y, _ = self.rnn(x)
        return torch.sigmoid(self.fc(y))


class TestOverflowQuiet(UserCase):
    def test_one_line(self):
        """The ONNX interpreter ran the source's Sigmoid with numpy's overflow warning on
        (two lines of RuntimeWarning on stderr); a conversion prints its one summary line."""
        torch.manual_seed(1)
        f = export(Overflowing().eval(), "overflow", 14, torch.randn(2, 5, 4))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda m, c, fn, ln, file=None, line=None: err.write(
                warnings.formatwarning(m, c, fn, ln, line))     # restored on exit
            self.converts("overflowing sigmoid", lambda: rnnd_convert.convert(
                f, path("overflow.rnnd")))
        self.check("RuntimeWarning" not in err.getvalue(),
                   "no numpy warning on stderr: %r" % err.getvalue())

if __name__ == "__main__":
    unittest.main()
