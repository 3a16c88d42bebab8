#!/usr/bin/env python3
"""The allowlist analysis of forward() (tools/rnnd_convert/torch_graph.py; issue 14 item 1).

Must convert exactly, through from_module, torch.jit.script and ONNX (opsets 9, 14, 17):
PyTorch's word_language_model RNNModel (a faithful copy below: tied weights, LSTM,
F.log_softmax over a view(-1, ntoken), forward(input, hidden)). Must refuse, naming the
operator and its source line: exp after the head (relu is a head layer since MLP heads), a
two-input encoder / decoder, a traced nn.LSTMCell loop, the first step y[:, 0], h_n[-1] of a
bidirectional layer alone, a mean over the features, a pooling after the head; an nn.LSTMCell
loop through from_module / torch.jit.script converts. Pooled classifiers convert exactly
(from_module and TorchScript) with the file's "pool": a mean and a max over steps, the last
step y[:, -1], h_n[-1], cat(h_n[-2], h_n[-1]) of a bidirectional GRU.

Each topic is a test class, runnable alone (README.md, "Developers"); each test seeds torch's
random numbers itself.

Env: PYTHON3, PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import os
import shutil
import unittest
import warnings
from typing import Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from daemon_util import RUNNING, Case  # first: it finds tools/ for rnnd_convert
import rnnd_convert
from rnnd_convert import cli, reference
from rnnd_convert.arch import ConvertError

warnings.filterwarnings("ignore")
TMP = os.path.join(os.environ.get("RNND_TEST_TMP") or "/tmp/rnnd-test-tmp", "torch_graph")
shutil.rmtree(TMP, ignore_errors=True)
os.makedirs(TMP)
HERE = os.path.basename(__file__)

# a check of the test running now (daemon_util.RUNNING): counted, and a failure of that test
check = RUNNING.check


def tmp(name):
    return os.path.join(TMP, name)


# ---- PyTorch's examples/word_language_model/model.py, RNNModel, as published -------------
class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder."""

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super(RNNModel, self).__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ['LSTM', 'GRU']:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        else:
            try:
                nonlinearity = {'RNN_TANH': 'tanh', 'RNN_RELU': 'relu'}[rnn_type]
            except KeyError as e:
                raise ValueError("""An invalid option for `--model` was supplied,
                                 options are ['LSTM', 'GRU', 'RNN_TANH' or 'RNN_RELU']""") from e
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)

        # "Using the Output Embedding to Improve Language Models" (Press & Wolf 2016)
        if tie_weights:
            if nhid != ninp:
                raise ValueError('When using the tied flag, nhid must be equal to emsize')
            self.decoder.weight = self.encoder.weight

        self.init_weights()

        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == 'LSTM':
            return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                    weight.new_zeros(self.nlayers, bsz, self.nhid))
        else:
            return weight.new_zeros(self.nlayers, bsz, self.nhid)


class ScriptableRNNModel(RNNModel):
    """The same, with the one change torch.jit.script needs: `hidden` typed (TorchScript
    takes an unannotated argument for a Tensor, and the LSTM's state is a tuple)."""

    def forward(self, input: Tensor, hidden: Tuple[Tensor, Tensor]):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden


def wlm_matches(path, net, what):
    """rnnd's reference forward of PATH equals NET (time-major, zero state) on 3 lengths."""
    net.eval()
    for T in (1, 6, 17):
        x = torch.randint(0, net.ntoken, (T, 3))
        with torch.no_grad():
            y = net(x, net.init_hidden(3))[0].view(T, 3, -1).numpy()
        got = reference.run(path, [x[:, b].tolist() for b in range(3)])[0]
        err = max(float(np.abs(got[b] - y[:, b]).max()) for b in range(3))
        check(err < 1e-5, "%s: equals PyTorch at length %d (max error %.2g)" % (what, T, err))


class WordLanguageModel(Case):
    def test_word_language_model(self):
        torch.manual_seed(0)
        net = RNNModel("LSTM", 40, 16, 16, 2, dropout=0.2, tie_weights=True)
        m = rnnd_convert.from_module(net, tmp("wlm.rnnd"))
        check(m.head_norm == "log_softmax" and m.input_kind == "tokens" and len(m.layers) == 2,
              "word_language_model via from_module: tokens, 2 LSTM layers, log_softmax head")
        check(np.array_equal(m.head_W, m.embedding), "tied weights: the head is the embedding")
        wlm_matches(tmp("wlm.rnnd"), net, "word_language_model (from_module)")

        net2 = ScriptableRNNModel("LSTM", 40, 16, 16, 2, dropout=0.2, tie_weights=True)
        torch.jit.script(net2).save(tmp("wlm.pt"))
        rc = cli.main([tmp("wlm.pt"), "-o", tmp("wlm_ts.rnnd"), "-q"])
        check(rc == 0, "word_language_model via torch.jit.script converts")
        if rc == 0:
            wlm_matches(tmp("wlm_ts.rnnd"), net2, "word_language_model (torch.jit.script)")
        # ONNX, as torch.onnx.export writes it: `hidden` becomes graph inputs, sliced per layer
        # into the LSTM's initial_h / initial_c; they are rnnd's initial state
        net.eval()
        x = torch.randint(0, 40, (7, 3))
        for opset in (9, 14, 17):
            path = tmp("wlm%d.onnx" % opset)
            torch.onnx.export(net, (x, net.init_hidden(3)), path, input_names=["input", "h0", "c0"],
                              output_names=["output", "hn", "cn"],
                              dynamic_axes={"input": {0: "time", 1: "batch"},
                                            "h0": {1: "batch"}, "c0": {1: "batch"}},
                              opset_version=opset)
            out = tmp("wlm_onnx%d.rnnd" % opset)
            rc = cli.main([path, "-o", out, "-q"])
            check(rc == 0, "word_language_model via ONNX opset %d converts" % opset)
            if rc == 0:
                wlm_matches(out, net, "word_language_model (ONNX opset %d)" % opset)

        for rnn_type in ("GRU", "RNN_TANH"):
            net3 = RNNModel(rnn_type, 30, 8, 12, 1)
            m = rnnd_convert.from_module(net3, tmp("wlm3.rnnd"))
            check(m.head_norm == "log_softmax", "word_language_model %s converts" % rnn_type)
            wlm_matches(tmp("wlm3.rnnd"), net3, "word_language_model %s" % rnn_type)


# ---- models that must be refused --------------------------------------------------------
class Base(nn.Module):
    def __init__(self, bidirectional=False, cell=nn.LSTM):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.rnn = cell(6, 8, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(16 if bidirectional else 8, 4)


class ExpHead(Base):
    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return torch.exp(self.fc(y))


class MeanSteps(Base):
    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.fc(y.mean(dim=1))


class LastStep(Base):
    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.fc(y[:, -1])


class BiGRUClassifier(Base):
    def __init__(self):
        super().__init__(bidirectional=True, cell=nn.GRU)

    def forward(self, x):
        _, h = self.rnn(self.emb(x))
        return self.fc(torch.cat((h[-2], h[-1]), dim=1))


class MaxSteps(Base):
    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return F.log_softmax(self.fc(y.max(dim=1).values), dim=-1)


class LastHidden(Base):
    def __init__(self):
        super().__init__(cell=nn.GRU)

    def forward(self, x):
        _, h = self.rnn(self.emb(x))
        return self.fc(h[-1])


class FirstStep(Base):
    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.fc(y[:, 0])


class BiOneDirection(Base):
    def __init__(self):
        super().__init__(bidirectional=True, cell=nn.GRU)
        self.fc = nn.Linear(8, 20)

    def forward(self, x):
        _, h = self.rnn(self.emb(x))
        return self.fc(h[-1])


class MeanFeatures(Base):
    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.fc(y).mean(dim=-1)


class PoolAfterHead(Base):
    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.fc(y).mean(dim=1)


class Seq2Seq(nn.Module):
    """Encoder / decoder: the decoder starts from the encoder's final state."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.enc = nn.GRU(8, 8, batch_first=True)
        self.dec = nn.GRU(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 20)

    def forward(self, src, tgt):
        _, h = self.enc(self.emb(src))
        y, _ = self.dec(self.emb(tgt), h)
        return self.fc(y)


class CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.cell = nn.LSTMCell(6, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        e = self.emb(x)
        h = torch.zeros(x.size(0), 8)
        c = torch.zeros(x.size(0), 8)
        ys = []
        for t in range(x.size(1)):
            h, c = self.cell(e[:, t], (h, c))
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


class Unused(Base):
    """A second LSTM that forward() never calls (the old converter stacked it)."""

    def __init__(self):
        super().__init__()
        self.spare = nn.LSTM(8, 8, batch_first=True)

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.fc(y)


def refused(what, fn, needles):
    try:
        fn()
        check(False, "%s is refused" % what)
    except ConvertError as e:
        msg = str(e)
        check(all(n in msg for n in needles), "%s: refused naming %s: %r" % (what, needles, msg))


def two_doors(net, x, name):
    """NET converted through from_module and through a TorchScript file (NAME.rnnd, NAME.pt):
    for each door (door, the model, the file's outputs on X, one row per sequence), or
    (door, the ConvertError, None) where it was refused."""
    for door in ("from_module", "TorchScript"):
        out = tmp(name + ".rnnd")
        if os.path.exists(out):
            os.unlink(out)
        try:
            if door == "from_module":
                m = rnnd_convert.from_module(net, out)
            else:
                torch.jit.script(net).save(tmp(name + ".pt"))
                m = rnnd_convert.convert(tmp(name + ".pt"), out)
        except ConvertError as e:
            yield door, e, None
            continue
        yield door, m, np.stack(reference.run(out, x.tolist())[0])[:, 0]


class Pooled(Case):
    def test_pooled(self):
        """Each pooled classifier converts through from_module and a TorchScript file, the file
        says its pool, and the reference equals PyTorch (one row per sequence)."""
        torch.manual_seed(3)
        cases = (("a mean over steps", MeanSteps, "mean"), ("a max over steps", MaxSteps, "max"),
                 ("the last step y[:, -1]", LastStep, "last"),
                 ("h_n[-1]", LastHidden, "final_state"),
                 ("cat(h_n[-2], h_n[-1])", BiGRUClassifier, "final_state"))
        x = torch.randint(0, 20, (3, 6))
        for what, cls, pool in cases:
            net = cls().eval()
            with torch.no_grad():
                want = net(x).numpy()
            for door, m, got in two_doors(net, x, "pooled"):
                if got is None:
                    check(False, "%s (%s) converts: %s" % (what, door, m))
                    continue
                check(m.pool == pool, "%s (%s): pool %s, want %s" % (what, door, m.pool, pool))
                err = float(np.abs(got - want).max())
                check(got.shape == want.shape and err < 1e-5,
                      "%s (%s): the file equals PyTorch (max error %.2g)" % (what, door, err))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 4)
        self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 2)
        self.ln = nn.LayerNorm(5)

    def forward(self, x):
        y, _ = self.rnn(x)
        return F.log_softmax(self.b(self.ln(torch.relu(self.a(y)))), dim=-1)


class MlpHead(Case):
    def test_mlp_head(self):
        """forward()'s head of several layers is read in the order it runs, each layer's weights
        from the module it reads them from; head= naming one of its Linears is refused."""
        torch.manual_seed(4)
        net = Mlp().eval()
        out = tmp("mlp.rnnd")
        m = rnnd_convert.from_module(net, out)
        check([h["op"] for h in m.head_layers] == ["linear", "relu", "layernorm", "linear"],
              "an MLP head: its layers in forward()'s order (%s)" % m.head_layers)
        check(np.array_equal(m.head_layers[0]["W"], net.a.weight.detach().numpy()) and
              np.array_equal(m.head_layers[2]["W"], net.ln.weight.detach().numpy()) and
              np.array_equal(m.head_layers[3]["b"], net.b.bias.detach().numpy()),
              "an MLP head: each layer's weights are its module's")
        check(m.head_norm == "log_softmax", "an MLP head: the log_softmax after it")
        x = torch.randn(6, 1, 3)
        with torch.no_grad():
            want = net(x).numpy()[:, 0]
        got = reference.run(out, [x[:, 0].numpy()])[0][0]
        check(float(np.abs(got - want).max()) < 1e-5, "an MLP head: the file equals PyTorch")
        refused("head= naming one Linear of an MLP head",
                lambda: rnnd_convert.from_module(net, tmp("mlp2.rnnd"), head="a"),
                ("a head of 4 layers (linear, relu, layernorm, linear)", "leave head=None"))


class Refusals(Case):
    def test_refusals(self):
        torch.manual_seed(1)
        cases = (
            ("exp after the head", ExpHead, ("aten::exp", HERE, "torch.exp(self.fc(y))",
                                             "a head of Linear, ReLU")),
            ("the first step", FirstStep, ("aten::select(dim 1, index 0)", HERE, "y[:, 0]",
                                           "y[:, -1]")),
            ("h_n[-1] of a bidirectional layer", BiOneDirection,
             ("h_n[-1] of a bidirectional last layer", "cat((h_n[-2], h_n[-1]), dim=1)")),
            ("a mean over the features", MeanFeatures, ("aten::mean", HERE, "mean(dim=-1)")),
            ("a mean after the head", PoolAfterHead, ("aten::mean", "after the head", HERE)),
            ("a two-input seq2seq", Seq2Seq, ("second input of forward()", "aten::embedding")),
        )
        for what, cls, needles in cases:
            refused(what + " (from_module)",
                    lambda: rnnd_convert.from_module(cls(), tmp("x.rnnd")), needles)
            path = tmp("x.pt")
            torch.jit.script(cls()).save(path)
            # a TorchScript file's source lines are its serialized code, not this file
            refused(what + " (TorchScript)",
                    lambda: rnnd_convert.convert(path, tmp("x.rnnd")), needles[:1])
            check(not os.path.exists(tmp("x.rnnd")), "%s: nothing written" % what)
        refused("an LSTM forward() never calls",
                lambda: rnnd_convert.from_module(Unused(), tmp("x.rnnd")),
                ("forward() runs 1 recurrent module call(s), but the module holds 2", "spare"))
        # an nn.LSTMCell loop (issue 14 item 3) converts to one LSTM layer through from_module
        # and torch.jit.script (verified at conversion); traced, the loop is unrolled and refused
        # with the advice to script it (tests/test_convert_corpus.py has the rest)
        net = CellLoop()
        m = rnnd_convert.from_module(net, tmp("cell.rnnd"))
        check(len(m.layers) == 1 and m.layers[0].type == "lstm" and m.input_kind == "tokens",
              "an nn.LSTMCell loop converts to one LSTM layer")
        net.eval()
        x = torch.randint(0, 20, (3, 9))
        with torch.no_grad():
            y = net(x).numpy()
        got = reference.run(tmp("cell.rnnd"), x.tolist())[0]
        err = max(float(np.abs(got[b] - y[b]).max()) for b in range(3))
        check(err < 1e-5, "the converted LSTMCell loop equals PyTorch (max error %.2g)" % err)
        torch.jit.script(CellLoop()).save(tmp("cell.pt"))
        try:
            m2 = rnnd_convert.convert(tmp("cell.pt"), tmp("cell_ts.rnnd"))
            check(len(m2.layers) == 1 and m2.layers[0].type == "lstm",
                  "a scripted nn.LSTMCell loop converts to one LSTM layer")
        except ConvertError as e:
            check(False, "a scripted nn.LSTMCell loop converts: %s" % e)
        torch.jit.trace(CellLoop().eval(), (x,)).save(tmp("cell_tr.pt"))
        refused("a traced nn.LSTMCell loop",
                lambda: rnnd_convert.convert(tmp("cell_tr.pt"), tmp("x.rnnd")),
                ("'cell' (LSTMCell)", "torch.jit.trace unrolls", "script the module"))


# ---- issue 14 outside trials: what the analysis cannot prove is refused --------------------
class BranchOnLength(nn.Module):
    """adversary f3: above 19 steps the LSTM runs over the batch axis"""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        if x.size(1) > 19:
            y, _ = self.lstm(x.transpose(0, 1))
            y = y.transpose(0, 1)
        else:
            y, _ = self.lstm(x)
        return self.fc(y)


class BranchOnBatch(BranchOnLength):
    """adversary f3b: a single sequence takes the other side"""

    def forward(self, x):
        if x.shape[0] == 1:
            y, _ = self.lstm(x.transpose(0, 1))
            y = y.transpose(0, 1)
        else:
            y, _ = self.lstm(x)
        return self.fc(y)


class PoolByLen(nn.Module):
    """user A2: mean-pools long sequences, the last step of short ones"""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x, *unused):      # *unused: torch.jit.script fails, from_module traces
        y, _ = self.gru(x)
        if x.size(1) > 30:
            p = y.mean(1)
        else:
            p = y[:, -1]
        return self.fc(p)


class TraceHides(nn.Module):
    """adversary f4: unscriptable, a context window and a ReLU above 32 / 19 steps"""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 50)

    def forward(self, x, *unused):
        if x.shape[1] > 32:
            x = x[:, -32:]
        y, _ = self.lstm(self.emb(x))
        out = self.fc(y)
        if x.shape[1] > 19:
            out = torch.relu(out)
        return out


class IsScripting(nn.Module):
    """adversary f5: code the scripted graph never holds"""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y, _ = self.lstm(x)
        out = self.fc(y)
        if not torch.jit.is_scripting():
            out = torch.relu(out) * 3.0
        return out


class EncDec(nn.Module):
    """user A3: the decoder starts from the encoder's final state, equal sizes"""

    def __init__(self):
        super().__init__()
        self.enc = nn.GRU(4, 4, batch_first=True)
        self.dec = nn.GRU(4, 4, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        _, h = self.enc(x)
        y, _ = self.dec(x, h)
        return self.fc(y)


class EncDecLstm(nn.Module):
    """user A3 with LSTMs: (h, c) of the encoder"""

    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(4, 4)
        self.dec = nn.LSTM(4, 4)

    def forward(self, x):
        y, hc = self.enc(x)
        y, _ = self.dec(y, hc)
        return y


class EncDecSizes(nn.Module):
    """user C11: an encoder / decoder whose sizes do not chain (GRU(4, 8) then GRU(4, 8))"""

    def __init__(self):
        super().__init__()
        self.enc = nn.GRU(4, 8, batch_first=True)
        self.dec = nn.GRU(4, 8, batch_first=True)

    def forward(self, x):
        _, h = self.enc(x)
        y, _ = self.dec(x, h)
        return y


class Unprovable(Case):
    def test_unprovable(self):
        """Issue 14 outside trials (adversary 2, 4, 5; user A2, A3): a branch on the input's
        size, a trace during which forward() branched on a Python value, a check of
        torch.jit.is_scripting, a layer started from another's final state: refused by the
        analysis itself (so also with verification off), naming the construct."""
        torch.manual_seed(5)
        size = ("branches on the input's size", "remove the branch")
        cases = (("a branch on the length", BranchOnLength, size + ("x.size(1) > 19",), True),
                 ("a branch on the batch", BranchOnBatch, size + ("x.shape[0] == 1",), True),
                 ("a pooling chosen by the length (traced)", PoolByLen,
                  size + (HERE, "x.size(1) > 30"), False),
                 ("a context window (traced)", TraceHides, size + (HERE, "x.shape[1] > 32"), False),
                 ("torch.jit.is_scripting", IsScripting,
                  ("asks torch how it runs", HERE, "is_scripting", "remove the check"), False),
                 ("an encoder / decoder", EncDec, ("aten::gru starting from another layer's final "
                                                   "state", "encoder"), True),
                 ("an LSTM encoder / decoder", EncDecLstm,
                  ("aten::lstm starting from another layer's final state",), True),
                 ("an encoder / decoder of sizes that do not chain", EncDecSizes,
                  ("aten::gru starting from another layer's final state", "encoder"), True))
        for what, cls, needles, scripted in cases:
            out = tmp("unprovable.rnnd")
            refused(what + " (from_module, verify=False)",
                    lambda: rnnd_convert.from_module(cls(), out, verify=False), needles)
            check(not os.path.exists(out), "%s: nothing written" % what)
            if scripted:
                torch.jit.script(cls()).save(tmp("unprovable.pt"))
                refused(what + " (TorchScript, --no-verify)",
                        lambda: rnnd_convert.convert(tmp("unprovable.pt"), out, verify=False),
                        needles[:2])
                check(not os.path.exists(out), "%s: nothing written" % what)


class RegOrder(nn.Module):
    """user A4: recurrent modules registered in another order than forward() calls them"""

    def __init__(self):
        super().__init__()
        self.top = nn.GRU(8, 6, batch_first=True)
        self.bottom = nn.GRU(4, 8, batch_first=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        y, _ = self.bottom(x)
        y, _ = self.top(y)
        return self.fc(y)


class RegOrderTraced(nn.Module):
    """the same, equal sizes, unscriptable (*unused): from_module traces"""

    def __init__(self):
        super().__init__()
        self.top = nn.GRU(4, 4, batch_first=True)
        self.bottom = nn.GRU(4, 4, batch_first=True)

    def forward(self, x, *unused):
        y, _ = self.bottom(x)
        y, _ = self.top(y)
        return y


class CallOrder(Case):
    def test_call_order(self):
        """User A4: layers are chained in forward()'s call order, not registration order, through
        from_module, a scripted and a traced TorchScript file, with verification off (so the
        analysis, not verification, gets it right)."""
        torch.manual_seed(6)
        x = torch.randn(2, 9, 4)
        for cls in (RegOrder, RegOrderTraced):
            net = cls().eval()
            with torch.no_grad():
                want = net(x).numpy()
            ts = torch.jit.script(net) if cls is RegOrder else torch.jit.trace(net, (x,))
            ts.save(tmp("order.pt"))
            for door, fn in (("from_module", lambda: rnnd_convert.from_module(
                    net, tmp("order.rnnd"), verify=False)),
                             ("TorchScript", lambda: rnnd_convert.convert(
                                 tmp("order.pt"), tmp("order.rnnd"), verify=False))):
                what = "%s via %s" % (cls.__name__, door)
                try:
                    fn()
                except ConvertError as e:
                    check(False, "%s converts: %s" % (what, e))
                    continue
                got = np.stack(reference.run(tmp("order.rnnd"), list(x.numpy()))[0])
                err = float(np.abs(got - want).max())
                check(err < 1e-5, "%s: chained in call order, equals PyTorch (max error %.2g)"
                      % (what, err))


class TrainLM(nn.Module):
    """user C8: traced in train mode, its dropout baked in active"""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.rnn = nn.LSTM(6, 6, batch_first=True)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(6, 20)

    def forward(self, x):
        h, _ = self.rnn(self.drop(self.emb(x)))
        return torch.log_softmax(self.out(self.drop(h)), -1)


class TrainModeTrace(Case):
    def test_train_mode_trace(self):
        """User C8: a trace made in train mode is refused naming dropout and model.eval(), not
        with the generic verification failure; the same module traced in eval mode converts."""
        torch.manual_seed(7)    # its own seed, to run alone
        x = torch.randint(0, 20, (2, 5))
        net = TrainLM()
        torch.jit.trace(net.train(), (x,), check_trace=False).save(tmp("train.pt"))
        refused("a train-mode trace", lambda: rnnd_convert.convert(tmp("train.pt"), tmp("x.rnnd")),
                ("aten::dropout", "training mode", "call model.eval() before tracing"))
        torch.jit.trace(net.eval(), (x,), check_trace=False).save(tmp("eval.pt"))
        try:
            rnnd_convert.convert(tmp("eval.pt"), tmp("eval.rnnd"))
            check(True, "an eval-mode trace converts")
        except ConvertError as e:
            check(False, "an eval-mode trace converts: %s" % e)


class ConfigPool(nn.Module):
    """A classifier whose pooling is chosen by a string and an int attribute, as configs do."""
    def __init__(self, pool, last):
        super().__init__()
        self.pool, self.last = pool, last
        self.emb, self.rnn, self.fc = nn.Embedding(20, 3), nn.GRU(3, 4, batch_first=True), \
            nn.Linear(4, 2)

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        if self.last == 1:
            return self.fc(y[:, -1])
        if self.pool == "mean":
            p = y.mean(dim=1)
        else:
            p = y.max(dim=1).values
        return self.fc(p)


class ConfigBranches(Case):
    def test_config_branches(self):
        """Trial 14 (user 3): a branch on an attribute compared with a constant (`self.pool ==
        "mean"`, `self.last == 1`) is followed on its taken side only, through from_module and
        a TorchScript file (the old analysis refused every value, naming the untaken side)."""
        torch.manual_seed(5)
        x = torch.randint(0, 20, (3, 6))
        for pool, last, want_pool in (("mean", 0, "mean"), ("max", 0, "max"), ("mean", 1, "last")):
            net = ConfigPool(pool, last).eval()
            with torch.no_grad():
                want = net(x).numpy()
            for door, m, got in two_doors(net, x, "config"):
                if got is None:
                    check(False, "pool=%s last=%d (%s) converts: %s" % (pool, last, door, m))
                    continue
                err = float(np.abs(got - want).max())
                check(m.pool == want_pool and err < 1e-5,
                      "pool=%s last=%d (%s): pool %s, error %.2g" % (pool, last, door, m.pool, err))


if __name__ == "__main__":
    unittest.main()
