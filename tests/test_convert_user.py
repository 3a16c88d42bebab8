#!/usr/bin/env python3
"""What a PyTorch user's own models meet at the torch doors (issue 14, trial 14 user report).

- The final state of a one-layer, one-direction GRU / LSTM taken as the tutorials do,
  fc(h.squeeze(0)), fc(h.view(-1, H)), fc(h.view(x.size(0), -1)), fc(h[0]), converts to pool
  final_state through from_module and a scripted file and equals PyTorch; the same forms on
  a two-layer module are refused, naming h_n[-1], and never calling the layer bidirectional
  (finding 2).
- A univariate forecaster, forward(x: [B, T]) with x.unsqueeze(-1) before the LSTM, converts
  (input dim 1) and is verified on the [B, T] input its forward() takes (finding 4).
- An old-style weight_norm head converts on the first from_module call, and traced;
  weight_norm on a recurrent module's weights and a torch.nn.utils.parametrize
  parametrization are refused naming the call that removes them (finding 5).
- Refusals say what is wrong and what makes the model convertible, at the user's line
  (findings 6 to 11, 13): LeakyReLU, cat(h_n[-1], h_n[-2]), an encoder / decoder with two
  inputs, pack_padded_sequence with a lengths argument, a learned initial state, a traced
  reference module, a reference module with F.log_softmax or a pooling in forward(), a
  LayerNorm before the pooling.
- rnnd inspect of a mean / max pooled model says a session step is that step's head output,
  not the pooled row (finding 14).

Env: PYTHONPATH (= tools), RNND_BIN, RNND_TEST_TMP.
"""
import os
import shutil
import subprocess
import unittest
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from daemon_util import Case, RNND_BIN, TMP_ROOT

import rnnd_convert
from rnnd_convert import reference
from rnnd_convert.arch import ConvertError
from rnnd_modules.mingru import MinGRU

warnings.filterwarnings("ignore")
TMP = os.path.join(TMP_ROOT, "convert_user")
HERE = os.path.basename(__file__)


def setUpModule():
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)


def tmp(name):
    return os.path.join(TMP, name)


class UserCase(Case):
    def converts(self, what, fn):
        """FN() (a conversion) returns its Model; None and a failed check when refused."""
        try:
            return fn()
        except ConvertError as e:
            self.check(False, "%s converts: %s" % (what, e))
            return None

    def refused(self, what, fn, needles, absent=()):
        """FN() raises ConvertError whose message holds every NEEDLE and no ABSENT text."""
        try:
            fn()
        except ConvertError as e:
            msg = str(e)
            self.check(all(n in msg for n in needles) and not any(a in msg for a in absent),
                       "%s: refused naming %s%s: %r" % (
                           what, needles, " without %s" % (absent,) if absent else "", msg))
            return msg
        self.check(False, "%s is refused" % what)
        return None

    def matches(self, what, path, net, x, seqs):
        """The file at PATH equals NET(x) (one row per sequence or per step)."""
        with torch.no_grad():
            want = net(x).numpy()
        got = np.stack(reference.run(path, seqs)[0])
        if want.ndim == 2:
            got = got[:, 0]
        err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        self.check(err < 1e-5, "%s: the file equals PyTorch (shapes %s %s, max error %.2g)"
                   % (what, got.shape, want.shape, err))


# ---- finding 2: the final state of one layer, as the tutorials take it -------------------
class StateHead(nn.Module):
    def __init__(self, cell, layers, form):
        super().__init__()
        self.form = form
        self.rnn = cell(5, 8, layers, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        _, h = self.rnn(x)
        if isinstance(h, tuple):
            h = h[0]
        if self.form == "squeeze":
            return self.fc(h.squeeze(0))
        if self.form == "view":
            return self.fc(h.view(-1, 8))
        if self.form == "view_batch":
            return self.fc(h.view(x.size(0), -1))
        return self.fc(h[0])


class TestOneLayerState(UserCase):
    def test_converts(self):
        """h.squeeze(0), h.view(-1, H), h.view(B, -1), h[0] of a one-layer, one-direction
        GRU / LSTM: pool final_state, equal to PyTorch, through from_module and a scripted
        file (the old analysis refused them all, calling the layer bidirectional)."""
        torch.manual_seed(1)
        x = torch.randn(3, 7, 5)
        for cell in (nn.GRU, nn.LSTM):
            for form in ("squeeze", "view", "view_batch", "index0"):
                net = StateHead(cell, 1, form).eval()
                what = "%s %s" % (cell.__name__, form)
                m = self.converts(what + " (from_module)",
                                  lambda: rnnd_convert.from_module(net, tmp("state.rnnd")))
                if m is not None:
                    self.eq(m.pool, "final_state", what + ": pool")
                    self.matches(what + " (from_module)", tmp("state.rnnd"), net, x, list(x))
                torch.jit.script(net).save(tmp("state.pt"))
                m = self.converts(what + " (script)", lambda: rnnd_convert.convert(
                    tmp("state.pt"), tmp("state_ts.rnnd")))
                if m is not None:
                    self.matches(what + " (script)", tmp("state_ts.rnnd"), net, x, list(x))

    def test_two_layers_refused(self):
        """The same forms on two layers are not h_n[-1]: refused naming h_n[-1], without
        'bidirectional'."""
        for form in ("squeeze", "view"):
            self.refused("a two-layer GRU's h.%s" % form,
                         lambda: rnnd_convert.from_module(StateHead(nn.GRU, 2, form),
                                                          tmp("x.rnnd")),
                         ("h_n itself", "take h_n[-1]"), ("of a bidirectional last layer",))
        self.refused("h[0] of a two-layer GRU",
                     lambda: rnnd_convert.from_module(StateHead(nn.GRU, 2, "index0"),
                                                      tmp("x.rnnd")),
                     ("h_n[0] of a one-direction layer", "h_n[-1]"),
                     ("of a bidirectional last layer",))

    def test_location_is_the_users(self):
        """The refusal of fc(h_n) names this file's line, not nn.Linear's inside torch
        (finding 13), through from_module (scripted) and a trace."""
        msg = self.refused("fc on a two-layer h_n",
                           lambda: rnnd_convert.from_module(StateHead(nn.LSTM, 2, "squeeze"),
                                                            tmp("x.rnnd")),
                           (HERE, "h.squeeze(0)"), ("torch/nn/modules",))
        net = StateHead(nn.LSTM, 2, "view").eval()
        torch.jit.trace(net, torch.randn(2, 4, 5)).save(tmp("trace.pt"))
        self.refused("fc on a two-layer h_n (traced)",
                     lambda: rnnd_convert.convert(tmp("trace.pt"), tmp("x.rnnd")),
                     (HERE, "h.view(-1, 8)"), ("torch/nn/modules",))
        self.check(msg is None or "at " in msg, "the location is given")


# ---- finding 4: a univariate series, forward(x: [B, T]) --------------------------------
class Univariate(nn.Module):
    def __init__(self, batch_first=True):
        super().__init__()
        self.lstm = nn.LSTM(1, 6, batch_first=batch_first)
        self.fc = nn.Linear(6, 1)

    def forward(self, x):
        y, _ = self.lstm(x.unsqueeze(-1))
        return self.fc(y[:, -1, :])


class UnivariateSteps(Univariate):
    """time-major, per-step output, unscriptable (*unused): from_module traces it"""

    def __init__(self):
        super().__init__(batch_first=False)

    def forward(self, x, *unused):
        y, _ = self.lstm(x.unsqueeze(2))
        return self.fc(y)


class TestUnivariate(UserCase):
    def test_converts(self):
        """Converted with input dim 1, verified on [B, T], equal to PyTorch (the old
        verification fed [B, T, 1] and failed: 'input must have 3 dimensions, got 4')."""
        torch.manual_seed(2)
        net = Univariate().eval()
        x = torch.randn(3, 9)
        seqs = [x[b].numpy()[:, None] for b in range(3)]
        m = self.converts("a univariate forecaster",
                          lambda: rnnd_convert.from_module(net, tmp("uni.rnnd")))
        if m is not None:
            self.check(m.input_dim == 1 and m.pool == "last", "input dim 1, pool last")
            self.matches("a univariate forecaster", tmp("uni.rnnd"), net, x, seqs)
        torch.jit.script(net).save(tmp("uni.pt"))
        if self.converts("a univariate forecaster (script)", lambda: rnnd_convert.convert(
                tmp("uni.pt"), tmp("uni_ts.rnnd"))) is not None:
            self.matches("a univariate forecaster (script)", tmp("uni_ts.rnnd"), net, x, seqs)
        net2 = UnivariateSteps().eval()
        xt = torch.randn(9, 3)
        if self.converts("a time-major univariate model (traced)", lambda: rnnd_convert.
                         from_module(net2, tmp("uni2.rnnd"))) is not None:
            with torch.no_grad():
                want = net2(xt).numpy()
            got = reference.run(tmp("uni2.rnnd"), [xt[:, b].numpy()[:, None]
                                                   for b in range(3)])[0]
            err = max(float(np.abs(got[b] - want[:, b]).max()) for b in range(3))
            self.check(err < 1e-5, "a time-major univariate model equals PyTorch (%.2g)" % err)


# ---- finding 5: weight_norm -----------------------------------------------------------
class NormHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, 8, batch_first=True)
        self.fc = torch.nn.utils.weight_norm(nn.Linear(8, 3))

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


class NormMlp(NormHead):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.utils.weight_norm(nn.Linear(8, 6))
        self.out = torch.nn.utils.weight_norm(nn.Linear(6, 3), dim=None)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(self.rnn(x)[0])))


class NormRecurrent(NormHead):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.rnn = torch.nn.utils.weight_norm(nn.GRU(5, 8, batch_first=True), "weight_hh_l0")


class Parametrized(NormHead):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.utils.parametrizations.spectral_norm(nn.Linear(8, 3))


def loaded(cls):
    """CLS's model whose state was loaded from another (weight attributes stale until a
    forward() runs, as after load_state_dict in a user's serving script)."""
    torch.manual_seed(3)
    a = cls()
    torch.manual_seed(4)
    b = cls()
    b.load_state_dict(a.state_dict())
    return b.eval()


class TestWeightNorm(UserCase):
    def test_first_call_converts(self):
        """The first from_module call converts, verified, and the file equals PyTorch; a
        traced file converts (it was 'internal error: AttributeError')."""
        x = torch.randn(3, 6, 5)
        for cls in (NormHead, NormMlp):
            net = loaded(cls)
            what = cls.__name__
            if self.converts(what + " (first call)", lambda: rnnd_convert.from_module(
                    net, tmp("wn.rnnd"))) is not None:
                self.matches(what, tmp("wn.rnnd"), net, x, list(x))
            net = loaded(cls)
            torch.jit.trace(net, torch.randn(2, 4, 5)).save(tmp("wn.pt"))
            if self.converts(what + " (traced)", lambda: rnnd_convert.convert(
                    tmp("wn.pt"), tmp("wn_tr.rnnd"))) is not None:
                self.matches(what + " (traced)", tmp("wn_tr.rnnd"), net, x, list(x))

    def test_refused_with_the_way_out(self):
        self.refused("weight_norm on a GRU's weight_hh_l0",
                     lambda: rnnd_convert.from_module(NormRecurrent(), tmp("x.rnnd")),
                     ("weight_hh_l0", "remove_weight_norm"))
        self.refused("a parametrized spectral_norm head",
                     lambda: rnnd_convert.from_module(Parametrized(), tmp("x.rnnd")),
                     ("parametrization", "remove_parametrizations"), ("not understood",))


# ---- findings 6 to 11: what each refusal says -----------------------------------------
class LeakyHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 8, batch_first=True)
        self.head = nn.Sequential(nn.Linear(8, 8), nn.LeakyReLU(0.1), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.gru(x)[0])


class BackwardFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 8, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        _, (h, c) = self.lstm(x)
        return self.fc(torch.cat([h[-1], h[-2]], dim=1))


class EncDec(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.GRU(5, 8, batch_first=True)
        self.dec = nn.GRU(5, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x, y):
        _, h = self.enc(x)
        o, _ = self.dec(y, h)
        return self.fc(o)


class PackedLengths(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                              enforce_sorted=False)
        o, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(p)[0], batch_first=True)
        return self.fc(o)


class LearnedH0(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 8, batch_first=True)
        self.h0 = nn.Parameter(torch.randn(1, 1, 8))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.gru(x, self.h0.expand(1, x.size(0), 8).contiguous())[0])


class BufferH0(nn.Module):
    """a learned state kept as a buffer: no parameter for the module walk to stop at"""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 8, batch_first=True)
        self.register_buffer("h0", torch.randn(1, 1, 8))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = self.h0.expand(1, x.size(0), 8).contiguous()
        return self.fc(self.lstm(x, (h, torch.zeros_like(h)))[0])


class NormThenMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 8, batch_first=True)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.ln(self.gru(x)[0]).mean(dim=1))


class RefLogSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.rnn = MinGRU(6, 8)
        self.head = nn.Linear(8, 20)

    def forward(self, x):
        return F.log_softmax(self.head(self.rnn(self.emb(x))[0]), dim=-1)


class RefLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = MinGRU(5, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class TestMessages(UserCase):
    def test_torch_doors(self):
        cases = (
            ("LeakyReLU in the head", LeakyHead,
             ("'head.1' (LeakyReLU)", "ReLU, Tanh, Sigmoid and GELU"), ("nothing between",)),
            ("cat(h_n[-1], h_n[-2])", BackwardFirst,
             ("backward direction first", "cat((h_n[-2], h_n[-1]), 1)", "swap", HERE),
             ("runs one chain",)),
            ("an encoder / decoder on two inputs", EncDec,
             ("second input", "encoder / decoder", "two models", HERE, "self.dec(y, h)"),
             ("whose input is not the data", "torch/nn/modules")),
            ("pack_padded_sequence with lengths", PackedLengths,
             ("aten::_pack_padded_sequence", "without pack_padded_sequence", HERE),
             ("second input",)),
            ("a learned h0 (parameter)", LearnedH0,
             ("learned initial state", "'h0'", "initial_state"), ("not understood",)),
            ("a learned h0 (buffer)", BufferH0, ("learned initial state", "'h0'"), ()),
            ("a LayerNorm before the mean", NormThenMean,
             ("aten::mean", "after aten::layer_norm", "pool before it", HERE),
             ("after the head",)),
        )
        for what, cls, needles, absent in cases:
            self.refused(what + " (from_module, verify=False)", lambda: rnnd_convert.
                         from_module(cls(), tmp("msg.rnnd"), verify=False), needles, absent)
            self.check(not os.path.exists(tmp("msg.rnnd")), "%s: nothing written" % what)

    def test_reference_modules(self):
        """A traced reference module points to from_module; F.log_softmax in a reference
        module's forward() asks for norm=; a pooling there names the ways out."""
        torch.jit.trace(RefLast().eval(), torch.randn(2, 4, 5)).save(tmp("ref.pt"))
        self.refused("a traced MinGRU", lambda: rnnd_convert.convert(tmp("ref.pt"),
                                                                     tmp("x.rnnd")),
                     ("'rnn' (MinGRU)", "rnnd_convert.from_module"), ("not understood",))
        self.refused("F.log_softmax in a MinGRU model's forward()",
                     lambda: rnnd_convert.from_module(RefLogSoftmax(), tmp("x.rnnd")),
                     ("log-probability", "norm='log_softmax'"))
        net = RefLogSoftmax().eval()
        if self.converts("the same with norm='log_softmax'", lambda: rnnd_convert.from_module(
                net, tmp("ref.rnnd"), norm="log_softmax")) is not None:
            x = torch.randint(0, 20, (3, 6))
            self.matches("the same with norm='log_softmax'", tmp("ref.rnnd"), net, x,
                         x.tolist())
        self.refused("a MinGRU classifier on the last step",
                     lambda: rnnd_convert.from_module(RefLast(), tmp("x.rnnd")),
                     ("one output per sequence", '"outputs": "last"', '"pool"'))


# ---- finding 14: a session on a mean / max pooled classifier ---------------------------
class MeanClassifier(nn.Module):
    def __init__(self, pool):
        super().__init__()
        self.pool = pool
        self.gru = nn.GRU(5, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y, _ = self.gru(x)
        if self.pool == "mean":
            return self.fc(y.mean(dim=1))
        if self.pool == "max":
            return self.fc(y.max(dim=1).values)
        return self.fc(y[:, -1])


class TestPooledSessions(UserCase):
    def test_inspect_warns(self):
        """rnnd inspect says that a session on a mean / max pooled model returns each
        step's head output, not the pooled row; not for the last step, whose session
        output is the pooled row of the prefix."""
        for pool in ("mean", "max", "last"):
            out = tmp("pooled_%s.rnnd" % pool)
            if self.converts("a %s-pooled classifier" % pool, lambda: rnnd_convert.from_module(
                    MeanClassifier(pool), out)) is None:
                continue
            p = subprocess.run([RNND_BIN, "inspect", out], capture_output=True, text=True,
                               timeout=60)
            said = "sessions: each step's head output, not the pooled row" in p.stdout
            self.check(p.returncode == 0 and said == (pool != "last"),
                       "rnnd inspect of a %s-pooled model %s the session caveat: %r"
                       % (pool, "gives" if pool != "last" else "omits", p.stdout))


if __name__ == "__main__":
    unittest.main()
