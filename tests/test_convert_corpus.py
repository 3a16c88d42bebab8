#!/usr/bin/env python3
"""The differential corpus (issue 14 item 4, docs/convert.md "The corpus").

Small PyTorch modules built here, each through every door that can export it: ONNX at
opsets 9, 14 and 17 with dynamic batch and time axes, torch.jit.script, torch.jit.trace and
rnnd_convert.from_module. For every (module, door) pair the test asserts the outcome written
in CASES, so that a change of outcome fails:
- "ok": converted, and `rnnd infer` (the built binary) equals PyTorch within
  1e-5 * max(1, |PyTorch|) on sequences of lengths 1, 5 and 13;
- "refused: NEEDLE": the converter refused, with a message containing NEEDLE (the part it
  cannot serve);
- "no export": torch itself cannot export the module through that door.
The outcome table in docs/convert.md is rendered from CASES and compared with the doc;
RNND_UPDATE_DOCS=1 rewrites it.

Each module is a test, Corpus.test_NAME, runnable alone (README.md, "Developers"), seeded by
its place in CASES; Corpus.test_doc_table compares the table alone, in a second
(`RNND_UPDATE_DOCS=1 python3 tests/test_convert_corpus.py Corpus.test_doc_table`).
CORPUS_ONLY=name,name runs those modules' tests only; CORPUS_VERBOSE=1 prints every outcome.
Run whole (no test named), the modules are split over CORPUS_JOBS processes (default 2; each
torch runs one thread): this process runs every CORPUS_JOBS-th module and the doc table, a
child per other share runs the rest (CORPUS_SHARD=K/N selects share K), and the run fails when
any share does. The whole corpus takes minutes, most of it torch's exports; CI's make check is
serial, so a second process halves the wall time on its two cores.

Env: PYTHON3, PYTHONPATH (= tools), RNND_BIN, RNND_TEST_TMP.
"""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import unittest
import warnings
from typing import List, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from daemon_util import RUNNING, Case  # first: it finds tools/ for rnnd_convert
import rnnd_convert
from rnnd_convert import cli, reference, torch_import
from rnnd_convert.arch import ConvertError

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
RNND = os.environ.get("RNND_BIN", "rnnd")
SHARD = os.environ.get("CORPUS_SHARD", "")
TMP = os.path.join(os.environ.get("RNND_TEST_TMP") or "/tmp/rnnd-test-tmp",
                   "convert_corpus" + SHARD.replace("/", "of"))
DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "convert.md")
shutil.rmtree(TMP, ignore_errors=True)
os.makedirs(TMP)

DOORS = ("onnx9", "onnx14", "onnx17", "script", "trace", "module")
LENGTHS = (1, 5, 13)
TOL = 1e-5
V, D, H = 17, 4, 6          # vocabulary, vector size, hidden size: small, so the test is quick

# a check of the test running now (daemon_util.RUNNING): counted, and a failure of that test
check = RUNNING.check


def tmp(name):
    return os.path.join(TMP, name)


# ---- the modules ------------------------------------------------------------------------
CASES = []


def case(name, expect, tokens=False, note=""):
    """Register a module class under NAME. EXPECT: one outcome for every door, or a dict by
    door, where "onnx" stands for the three opsets and "torch" for script, trace, module."""
    def deco(cls):
        CASES.append((name, cls, tokens, expect, " ".join((note or cls.__doc__ or "").split())))
        return cls
    return deco


def expected(exp, door):
    if isinstance(exp, str):
        return exp
    if door in exp:
        return exp[door]
    fam = "onnx" if door.startswith("onnx") else "torch"
    return exp.get(fam, exp.get("*"))


class Rec(nn.Module):
    """A recurrent module and a Linear head; subclasses vary the pieces."""
    kind, layers, bidir, bf, bias, proj, head, extra = "LSTM", 1, False, False, True, 0, 3, {}

    def __init__(self):
        super().__init__()
        cls = getattr(nn, self.kind)
        kw = dict(num_layers=self.layers, bidirectional=self.bidir, batch_first=self.bf,
                  bias=self.bias)
        if self.proj:
            kw["proj_size"] = self.proj
        kw.update(self.extra)
        self.rnn = cls(D, H, **kw)
        out = (self.proj or H) * (2 if self.bidir else 1)
        self.fc = nn.Linear(out, self.head)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y)


@case("lstm", "ok")
class Lstm(Rec):
    """nn.LSTM, time-major, Linear head"""


@case("lstm_bf", "ok")
class LstmBf(Rec):
    """nn.LSTM, batch_first"""
    bf = True


@case("transpose_in", "ok", tokens=True)
class TransposeIn(nn.Module):
    """batch-first ids, a time-major LSTM inside: forward() transposes (user B5)"""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.lstm = nn.LSTM(D, H)
        self.fc = nn.Linear(H, V)

    def forward(self, x):
        y, _ = self.lstm(self.emb(x).transpose(0, 1))
        return F.log_softmax(self.fc(y.transpose(0, 1)), dim=-1)


@case("transpose_tm", "ok")
class TransposeTm(nn.Module):
    """time-major vectors, a batch_first LSTM inside: forward() transposes (user B5)"""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(D, H, batch_first=True)
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        y, _ = self.lstm(x.transpose(0, 1))
        return self.fc(y).transpose(0, 1)


@case("emb_scaled", "ok", tokens=True)
class EmbScaled(nn.Module):
    """emb(x) * sqrt(d) before the GRU: folded into the embedding table (user C12)"""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.rnn = nn.GRU(D, H, batch_first=True)
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        y, _ = self.rnn(self.emb(x) * 2.0)
        return self.fc(y)


@case("standardised", "ok")
class Standardised(nn.Module):
    """(x - mu) / sd with buffers before a bidirectional LSTM: folded into W, Wb (C12)"""

    def __init__(self):
        super().__init__()
        self.register_buffer("mu", torch.randn(D))
        self.register_buffer("sd", torch.rand(D) + 0.5)
        self.rnn = nn.LSTM(D, H, bidirectional=True)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x):
        y, _ = self.rnn((x - self.mu) / self.sd)
        return self.fc(y)


@case("gru", "ok")
class Gru(Rec):
    """nn.GRU, time-major"""
    kind = "GRU"


@case("gru_bf", "ok")
class GruBf(Rec):
    """nn.GRU, batch_first"""
    kind, bf = "GRU", True


@case("rnn_tanh", "ok")
class RnnTanh(Rec):
    """nn.RNN, tanh"""
    kind = "RNN"


@case("rnn_relu", "ok")
class RnnRelu(Rec):
    """nn.RNN, relu, batch_first"""
    kind, bf, extra = "RNN", True, {"nonlinearity": "relu"}


@case("lstm_2", "ok")
class Lstm2(Rec):
    """2-layer LSTM"""
    layers = 2


@case("gru_3_bf", "ok")
class Gru3(Rec):
    """3-layer GRU, batch_first"""
    kind, layers, bf = "GRU", 3, True


@case("rnn_relu_2", "ok")
class RnnRelu2(Rec):
    """2-layer RNN, relu"""
    kind, layers, extra = "RNN", 2, {"nonlinearity": "relu"}


@case("lstm_bi", "ok")
class LstmBi(Rec):
    """bidirectional LSTM"""
    bidir = True


@case("lstm_bi_2_bf", "ok")
class LstmBi2(Rec):
    """2-layer bidirectional LSTM, batch_first"""
    bidir, layers, bf = True, 2, True


@case("gru_bi_2", "ok")
class GruBi2(Rec):
    """2-layer bidirectional GRU"""
    kind, bidir, layers = "GRU", True, 2


@case("rnn_tanh_bi", "ok")
class RnnBi(Rec):
    """bidirectional RNN, tanh, batch_first"""
    kind, bidir, bf = "RNN", True, True


@case("lstm_nobias", "ok")
class LstmNoBias(Rec):
    """LSTM, bias=False"""
    bias = False


@case("gru_nobias_2", "ok")
class GruNoBias(Rec):
    """2-layer GRU, bias=False"""
    kind, bias, layers = "GRU", False, 2


@case("rnn_relu_nobias", "ok")
class RnnNoBias(Rec):
    """RNN relu, bias=False"""
    kind, bias, extra = "RNN", False, {"nonlinearity": "relu"}


@case("lstm_proj", {"onnx": "no export", "torch": "ok"})
class LstmProj(Rec):
    """LSTM, proj_size=3 (ONNX has no projection)"""
    proj = 3


@case("lstm_proj_bi_2", {"onnx": "no export", "torch": "ok"})
class LstmProjBi(Rec):
    """2-layer bidirectional LSTM, proj_size=3"""
    proj, bidir, layers, bf = 3, True, 2, True


@case("lstm_dropout", "ok")
class LstmDropout(Rec):
    """2-layer LSTM, dropout=0.3 between layers and nn.Dropout on the output (eval mode)"""
    layers, extra = 2, {"dropout": 0.3}

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        y, _ = self.rnn(self.drop(x))
        return self.fc(self.drop(y))


@case("lstm_nohead", "ok")
class LstmNoHead(nn.Module):
    """LSTM, no head"""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(D, H)

    def forward(self, x):
        y, _ = self.rnn(x)
        return y


@case("lstm_returns_state", "ok")
class LstmState(Rec):
    """forward() returns (output, (h_n, c_n))"""

    def forward(self, x):
        y, hc = self.rnn(x)
        return self.fc(y), hc


@case("lstm_then_gru", "ok")
class LstmGru(nn.Module):
    """an LSTM module then a GRU module"""

    def __init__(self):
        super().__init__()
        self.a = nn.LSTM(D, H, batch_first=True)
        self.b = nn.GRU(H, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        y, _ = self.a(x)
        y, _ = self.b(y)
        return self.fc(y)


class Tok(nn.Module):
    """Embedding -> recurrent -> Linear, token ids; subclasses vary the end."""
    kind, bf, tie = "LSTM", True, False

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, H)
        self.rnn = getattr(nn, self.kind)(H, H, batch_first=self.bf)
        self.fc = nn.Linear(H, V)
        if self.tie:
            self.fc.weight = self.emb.weight

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.fc(y)


@case("emb_lstm", "ok", tokens=True)
class EmbLstm(Tok):
    """Embedding -> LSTM -> Linear"""


@case("emb_gru_tm", "ok", tokens=True)
class EmbGru(Tok):
    """Embedding -> GRU (time-major) -> Linear"""
    kind, bf = "GRU", False


@case("tied", "ok", tokens=True)
class Tied(Tok):
    """tied embedding and head"""
    tie = True


@case("log_softmax_f", "ok", tokens=True)
class LogSoftmaxF(Tok):
    """F.log_softmax(dim=-1) after the head"""

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return F.log_softmax(self.fc(y), dim=-1)


@case("softmax_f", "ok", tokens=True)
class SoftmaxF(Tok):
    """torch.softmax(dim=2) after the head"""
    kind = "GRU"

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return torch.softmax(self.fc(y), dim=2)


@case("log_softmax_m", "ok", tokens=True)
class LogSoftmaxM(Tok):
    """nn.LogSoftmax(dim=-1) module after the head"""

    def __init__(self):
        super().__init__()
        self.norm = nn.LogSoftmax(dim=-1)

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.norm(self.fc(y))


@case("softmax_m", "ok")
class SoftmaxM(Rec):
    """nn.Softmax(dim=-1) module after the head, vectors"""
    kind = "GRU"

    def __init__(self):
        super().__init__()
        self.norm = nn.Softmax(dim=-1)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.norm(self.fc(y))


class WordLanguageModel(nn.Module):
    """PyTorch's word_language_model: LSTM, tied, F.log_softmax over a view, forward(input,
    hidden)"""
    state = 2

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(V, H)
        self.rnn = nn.LSTM(H, H, 2, dropout=0.2)
        self.decoder = nn.Linear(H, V)
        self.decoder.weight = self.encoder.weight
        self.ntoken = V

    def forward(self, input: Tensor, hidden: Tuple[Tensor, Tensor]):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden


case("word_language_model", "ok", tokens=True)(WordLanguageModel)


@case("wlm_gru", "ok", tokens=True)
class WlmGru(nn.Module):
    """word_language_model with a GRU, untied"""
    state = 1

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(V, 5)
        self.rnn = nn.GRU(5, H, 1)
        self.decoder = nn.Linear(H, V)
        self.ntoken = V

    def forward(self, input: Tensor, hidden: Tensor):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden


# ---- models that must be refused (today) ------------------------------------------------
@case("relu_after_head", "ok")
class ReluHead(Rec):
    """torch.relu after the head (a head of Linear, ReLU since MLP heads)"""

    def forward(self, x):
        y, _ = self.rnn(x)
        return torch.relu(self.fc(y))


@case("scaled_output", {"onnx": "ok", "torch": "refused: aten::mul"})
class Scaled(Rec):
    """the output times 2 (the ONNX importer folds the constant into the head)"""

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y) * 2.0


@case("custom_activation", {"onnx": "refused: a SiLU (swish) activation",
                             "torch": "refused: aten::mul"})
class Swish(Rec):
    """a custom activation (x * sigmoid(x)) between the layer and the head"""

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y * torch.sigmoid(y))


@case("residual", {"onnx": "refused: Add", "torch": "refused: aten::add"})
class Residual(nn.Module):
    """the input added to the layer's output"""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(D, D)

    def forward(self, x):
        y, _ = self.rnn(x)
        return y + x


@case("mlp_head", "ok")
class MlpHead(Rec):
    """an MLP head: Linear, ReLU, Linear"""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(H, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.mlp(y)


@case("layernorm", "ok")
class LayerNormed(Rec):
    """LayerNorm between the layer and the head"""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(H)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(self.ln(y))


@case("mlp_tanh", "ok")
class MlpTanh(Rec):
    """an MLP head with Tanh and Dropout (functional form)"""
    kind = "GRU"

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(H, 8), nn.Linear(8, 3)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc2(self.drop(torch.tanh(self.fc1(y))))


@case("mlp_sigmoid", "ok")
class MlpSigmoid(Rec):
    """an MLP head with Sigmoid"""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(H, 8), nn.Sigmoid(), nn.Linear(8, 3))

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.mlp(y)


@case("mlp_gelu", "ok")
class MlpGelu(Rec):
    """an MLP head with GELU (exact, PyTorch's default)"""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(H, 8), nn.GELU(), nn.Dropout(0.1), nn.Linear(8, 3))

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.mlp(y)


@case("mlp_gelu_tanh", "ok")
class MlpGeluTanh(Rec):
    """an MLP head with GELU(approximate="tanh")"""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(H, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 3))

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.mlp(y)


@case("centered", {"onnx": "refused: ReduceMean", "torch": "refused: aten::mean"})
class Centered(Rec):
    """the features minus their mean, not a LayerNorm (no division by the deviation)"""

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y - y.mean(-1, keepdim=True))


@case("mlp_ln_between", {"onnx17": "no export", "*": "ok"},
       note="LayerNorm between head layers, without elementwise affine (torch cannot "
       "export that LayerNorm at opset 17)")
class MlpLnBetween(Rec):
    """LayerNorm between head layers, without elementwise affine"""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(H, 8), nn.ReLU(),
                                 nn.LayerNorm(8, elementwise_affine=False, eps=1e-3),
                                 nn.Linear(8, 3))

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.mlp(y)


@case("mlp_log_softmax", "ok", tokens=True)
class MlpLogSoftmax(nn.Module):
    """tokens, LayerNorm after the stack, an MLP head, F.log_softmax"""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 5)
        self.rnn = nn.LSTM(5, H)
        self.ln = nn.LayerNorm(H)
        self.fc1, self.fc2 = nn.Linear(H, 8), nn.Linear(8, V)

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return F.log_softmax(self.fc2(F.relu(self.fc1(self.ln(y)))), dim=-1)


@case("mlp_pooled", "ok")
class MlpPooled(Rec):
    """a pooled classifier: mean over the steps, then an MLP head and softmax"""
    bf = True

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(H, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(-1))

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.mlp(y.mean(dim=1))


# ---- pooled classifiers: refused before the format's "pool", converted since -------------
@case("mean_steps", "ok")
class MeanSteps(Rec):
    """mean over the steps, then the head"""
    bf = True

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y.mean(dim=1))


@case("max_steps", "ok")
class MaxSteps(Rec):
    """max over the steps, then the head"""
    bf, kind = True, "GRU"

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y.max(dim=1)[0])


@case("last_step", "ok")
class LastStep(Rec):
    """fc(y[:, -1]), the last step"""
    bf = True

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


@case("h_n_last", "ok")
class HnLast(Rec):
    """fc(h_n[-1])"""
    kind, layers = "GRU", 2

    def forward(self, x):
        _, h = self.rnn(x)
        return self.fc(h[-1])


@case("h_n_bidir_cat", "ok")
class HnCat(Rec):
    """fc(cat(h_n[-2], h_n[-1])) of a bidirectional GRU"""
    kind, bidir = "GRU", True

    def forward(self, x):
        _, h = self.rnn(x)
        return self.fc(torch.cat((h[-2], h[-1]), dim=1))


# ---- models that must be refused (today), continued --------------------------------------
@case("attention", {"onnx": "refused: MatMul", "torch": "refused: aten::transpose(1, 2)"})
class Attention(Rec):
    """dot-product self-attention over the LSTM's outputs"""
    bf = True

    def forward(self, x):
        y, _ = self.rnn(x)
        a = torch.softmax(torch.bmm(y, y.transpose(1, 2)), dim=-1)
        return self.fc(torch.bmm(a, y))


@case("conv_before", {"onnx": "refused: Conv", "torch": "refused: Conv1d"})
class ConvBefore(nn.Module):
    """a Conv1d before the LSTM"""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(D, D, 3, padding=1)
        self.rnn = nn.LSTM(D, H, batch_first=True)

    def forward(self, x):
        y, _ = self.rnn(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return y


@case("seq2seq", {"onnx": "refused: reads graph input", "torch": "refused: second input"},
      tokens=True)
class Seq2Seq(nn.Module):
    """encoder / decoder: the decoder starts from the encoder's state (two inputs)"""
    second = "tokens"

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, H)
        self.enc = nn.GRU(H, H, batch_first=True)
        self.dec = nn.GRU(H, H, batch_first=True)
        self.fc = nn.Linear(H, V)

    def forward(self, src, tgt):
        _, h = self.enc(self.emb(src))
        y, _ = self.dec(self.emb(tgt), h)
        return self.fc(y)


@case("two_inputs", {"onnx": "refused: reads graph input", "torch": "refused: second input"})
class TwoInputs(nn.Module):
    """two input sequences concatenated before the LSTM"""
    second = "vectors"

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(2 * D, H, batch_first=True)

    def forward(self, a, b):
        y, _ = self.rnn(torch.cat((a, b), dim=2))
        return y


@case("packed", {"onnx": "refused: (LSTM): sequence_lens is computed from the input's shape "
                          "(as the sequence lengths of pack_padded_sequence export",
                  "torch": "refused: aten::_pack_padded_sequence"})
# (the advice after either: "call the recurrent module without pack_padded_sequence")
class Packed(nn.Module):
    """pack_padded_sequence / pad_packed_sequence around the LSTM"""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(D, H, batch_first=True)

    def forward(self, x):
        n = torch.full((x.size(0),), x.size(1), dtype=torch.long)
        p = nn.utils.rnn.pack_padded_sequence(x, n, batch_first=True)
        y, _ = self.rnn(p)
        return nn.utils.rnn.pad_packed_sequence(y, batch_first=True)[0]


class CellLoop(nn.Module):
    """a loop over a cell, batch_first: same cell, same weights every step"""
    cell_type = "LSTMCell"

    def __init__(self):
        super().__init__()
        self.cell = getattr(nn, self.cell_type)(D, H)
        self.fc = nn.Linear(H, 3)
        self.hidden = H

    def forward(self, x):
        h = torch.zeros(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


CELL_ONNX = "refused: unrolled"
CELL_TRACE = "refused: torch.jit.trace unrolls"
CELL = {"onnx": CELL_ONNX, "trace": CELL_TRACE, "torch": "ok"}


@case("lstmcell_loop", CELL)
class LstmCellLoop(CellLoop):
    """a loop over nn.LSTMCell, batch_first"""

    def forward(self, x):
        h = torch.zeros(x.size(0), self.hidden)
        c = torch.zeros(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(1)):
            h, c = self.cell(x[:, t], (h, c))
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


@case("grucell_loop", CELL)
class GruCellLoop(CellLoop):
    """a loop over nn.GRUCell, batch_first"""
    cell_type = "GRUCell"


@case("rnncell_loop", CELL)
class RnnCellLoop(CellLoop):
    """a loop over nn.RNNCell (tanh), batch_first"""
    cell_type = "RNNCell"


@case("rnncell_relu_tm", CELL)
class RnnCellReluTm(nn.Module):
    """a loop over nn.RNNCell (relu), time-major x[t], no head"""

    def __init__(self):
        super().__init__()
        self.cell = nn.RNNCell(D, H, nonlinearity="relu")
        self.hidden = H

    def forward(self, x):
        h = torch.zeros(x.size(1), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(0)):
            h = self.cell(x[t], h)
            ys.append(h)
        return torch.stack(ys, 0)


@case("emb_lstmcell_logsoftmax", {"onnx": "refused: unrolled", "trace": CELL_TRACE,
                                  "torch": "ok"}, tokens=True)
class EmbCellLoop(nn.Module):
    """Embedding, a loop over nn.LSTMCell, Linear, log_softmax (a decoder written by hand)"""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 5)
        self.cell = nn.LSTMCell(5, H)
        self.fc = nn.Linear(H, V)
        self.hidden = H

    def forward(self, x):
        e = self.emb(x)
        h = torch.zeros(x.size(0), self.hidden)
        c = torch.zeros(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(1)):
            h, c = self.cell(e[:, t], (h, c))
            ys.append(h)
        return F.log_softmax(self.fc(torch.stack(ys, 1)), dim=-1)


@case("stacked_grucells", CELL)
class StackedCells(nn.Module):
    """two nn.GRUCells stacked in one loop: two layers"""

    def __init__(self):
        super().__init__()
        self.c1 = nn.GRUCell(D, H)
        self.c2 = nn.GRUCell(H, 5)
        self.fc = nn.Linear(5, 3)
        self.sizes = (H, 5)

    def forward(self, x):
        h1 = torch.zeros(x.size(0), self.sizes[0])
        h2 = torch.zeros(x.size(0), self.sizes[1])
        ys: List[Tensor] = []
        for t in range(x.size(1)):
            h1 = self.c1(x[:, t], h1)
            h2 = self.c2(h1, h2)
            ys.append(h2)
        return self.fc(torch.stack(ys, 1))


@case("cell_loop_slice3", CELL)
class CellSlice3(CellLoop):
    """a loop over nn.GRUCell reading the step as x[:, t, :] (user B6)"""
    cell_type = "GRUCell"

    def forward(self, x):
        h = torch.zeros(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t, :], h)
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


@case("cell_loop_last", CELL)
class CellLast(CellLoop):
    """a loop over nn.GRUCell, a classifier on torch.stack(ys, 1)[:, -1] (user B6)"""
    cell_type = "GRUCell"

    def forward(self, x):
        h = torch.zeros(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            ys.append(h)
        return self.fc(torch.stack(ys, 1)[:, -1])


@case("cell_loop_new_zeros", CELL)
class CellNewZeros(CellLoop):
    """a loop over nn.LSTMCell from x.new_zeros states (user C11)"""

    def forward(self, x):
        h = x.new_zeros(x.size(0), self.hidden)
        c = x.new_zeros(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(1)):
            h, c = self.cell(x[:, t], (h, c))
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


CELL_HINT = "a loop over cells converts when written as"


@case("cell_loop_unbind", {"onnx": CELL_ONNX, "trace": CELL_TRACE,
                           "torch": "refused: " + CELL_HINT})
class CellUnbind(CellLoop):
    """a loop over nn.GRUCell on x.unbind(1): refused with how a cell loop must look (C11)"""
    cell_type = "GRUCell"

    def forward(self, x):
        h = torch.zeros(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for xt in x.unbind(1):
            h = self.cell(xt, h)
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


@case("cell_loop_prealloc", {"onnx": CELL_ONNX, "onnx9": "no export", "trace": CELL_TRACE,
                             "torch": "refused: " + CELL_HINT})
class CellPrealloc(CellLoop):
    """a loop over nn.GRUCell writing out[:, t] = h: refused with how a cell loop must look"""
    cell_type = "GRUCell"

    def forward(self, x):
        h = torch.zeros(x.size(0), self.hidden)
        out = torch.zeros(x.size(0), x.size(1), self.hidden)
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            out[:, t] = h
        return self.fc(out)


@case("cell_loop_ones", {"onnx": CELL_ONNX, "trace": CELL_TRACE,
                         "torch": "refused: not zeros"})
class CellOnes(CellLoop):
    """a loop over nn.GRUCell starting from ones"""
    cell_type = "GRUCell"

    def forward(self, x):
        h = torch.ones(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


@case("cell_loop_reversed", {"onnx": CELL_ONNX, "trace": CELL_TRACE,
                             "torch": "refused: trip count"})
class CellReversed(CellLoop):
    """a loop over nn.GRUCell from the last step back"""
    cell_type = "GRUCell"

    def forward(self, x):
        h = torch.zeros(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(1) - 1, -1, -1):
            h = self.cell(x[:, t], h)
            ys.append(h)
        return self.fc(torch.stack(ys, 1))


@case("cell_loop_transposed", {"onnx": CELL_ONNX, "trace": CELL_TRACE,
                               "torch": "refused: transposed input"})
class CellTransposed(CellLoop):
    """a loop over nn.GRUCell on x.transpose(0, 1)"""
    cell_type = "GRUCell"

    def forward(self, x):
        x = x.transpose(0, 1)
        h = torch.zeros(x.size(1), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(0)):
            h = self.cell(x[t], h)
            ys.append(h)
        return self.fc(torch.stack(ys, 0)).transpose(0, 1)


@case("cell_loop_final_state", {"onnx": CELL_ONNX, "trace": CELL_TRACE,
                                "torch": "refused: does not append"})
class CellFinal(CellLoop):
    """a loop over nn.GRUCell, a classifier on the final state"""
    cell_type = "GRUCell"

    def forward(self, x):
        h = torch.zeros(x.size(0), self.hidden)
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
        return self.fc(h)


@case("cell_loop_stale", {"onnx": CELL_ONNX, "trace": CELL_TRACE,
                          "torch": "refused: aten::append"})
class CellStale(CellLoop):
    """a loop over nn.GRUCell that appends the state before the step"""
    cell_type = "GRUCell"

    def forward(self, x):
        h = torch.zeros(x.size(0), self.hidden)
        ys: List[Tensor] = []
        for t in range(x.size(1)):
            ys.append(h)
            h = self.cell(x[:, t], h)
        return self.fc(torch.stack(ys, 1))


# ---- running a pair ---------------------------------------------------------------------
def layout_bf(net):
    return torch_import._batch_first(net)


def example(net, tokens, B=2, T=5):
    """forward()'s arguments for export: the data in the module's layout, and a zero state or
    a second sequence where forward() takes one."""
    bf = layout_bf(net)
    shape = (B, T) if bf else (T, B)
    x = torch.randint(0, V, shape) if tokens else torch.randn(shape + (D,))
    args = [x]
    st = getattr(net, "state", 0)
    if st:
        z = torch.zeros(2 if st == 2 else 1, B, H)
        args.append((z, z.clone()) if st == 2 else z)
    second = getattr(net, "second", None)
    if second == "tokens":
        args.append(torch.randint(0, V, shape))
    elif second == "vectors":
        args.append(torch.randn(shape + (D,)))
    return tuple(args), bf


def quiet(fn, *a, **kw):
    """(fn(...), captured stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw), err.getvalue()


def export(net, tokens, door, path):
    """Write NET through DOOR to PATH (a model file for the command line) or return None for
    from_module; raises when torch cannot export it."""
    args, bf = example(net, tokens)
    if door.startswith("onnx"):
        names = ["x"]
        axes = {"x": {0: "b", 1: "t"} if bf else {0: "t", 1: "b"}}
        st = getattr(net, "state", 0)
        for k in range(st):
            names.append("s%d" % k)
            axes["s%d" % k] = {1: "b"}
        for k in range(len(args) - 1 - (1 if st else 0)):
            names.append("in%d" % (k + 2))
            axes["in%d" % (k + 2)] = axes["x"]
        with torch.no_grad():
            y = net(*args)
        y = y[0] if isinstance(y, (tuple, list)) else y
        axes["y"] = {i: "y%d" % i for i in range(min(y.dim(), 2))}
        quiet(torch.onnx.export, net, args, path, input_names=names, output_names=["y"],
              dynamic_axes=axes, opset_version=int(door[4:]))
    elif door == "script":
        quiet(lambda: torch.jit.script(net).save(path))
    elif door == "trace":
        quiet(lambda: torch.jit.trace(net, args, check_trace=False).save(path))


def convert(net, door, src, out):
    """None when converted, else the refusal message."""
    if door == "module":
        try:
            quiet(rnnd_convert.from_module, net, out)
            return None
        except ConvertError as e:
            return str(e)
    rc, err = quiet(cli.main, [src, "-o", out, "-q"])
    return None if rc == 0 else (err.strip() or "exit %d" % rc)


def inputs(tokens, rng):
    if tokens:
        return [rng.integers(0, V, n).astype(np.int64) for n in LENGTHS]
    return [rng.uniform(-2, 2, (n, D)).astype(np.float32) for n in LENGTHS]


def compare(net, out, seqs, what):
    """Max relative error of `rnnd infer` OUT against NET on SEQS, or None on failure."""
    req = {"inputs": [s.tolist() for s in seqs]}
    p = subprocess.run([RNND, "infer", "--model", out], input=json.dumps(req),
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        check(False, "%s: rnnd infer failed: %s" % (what, p.stderr.strip()))
        return None
    got = json.loads(p.stdout)["outputs"]
    pooled = (reference.read(out)[0].get("pool") or "none") != "none"
    run = torch_import.source_runner(net, pooled)     # pooled: one row per sequence
    worst = 0.0
    for s, g in zip(seqs, got):
        exp = run(s[None])[0]
        g = np.asarray(g, dtype=np.float64)
        if g.shape != exp.shape:
            check(False, "%s: length %d: rnnd gives %s, PyTorch %s" % (what, len(s), g.shape,
                                                                       exp.shape))
            return None
        worst = max(worst, float((np.abs(g - exp) / np.maximum(1.0, np.abs(exp))).max()))
    check(worst <= TOL, "%s: rnnd infer equals PyTorch within %g relative on lengths %s "
          "(max %.3g)" % (what, TOL, LENGTHS, worst))
    return worst


def outcome_ok(exp, got, msg):
    if exp == "ok" or exp == "no export":
        return got == exp
    needle = exp[len("refused: "):]
    return got == "refused" and needle in msg


def render(rows):
    """The doc's table from the expected outcomes."""
    short = {"ok": "converts", "no export": "(no export)"}
    lines = ["| module | | ONNX 9 | ONNX 14 | ONNX 17 | script | trace | from_module |",
             "|---|---|---|---|---|---|---|---|"]
    for name, note, exps in rows:
        cells = [short.get(e) or "refused: `%s`" % e[len("refused: "):] for e in exps]
        lines.append("| `%s` | %s | %s |" % (name, note, " | ".join(cells)))
    return "\n".join(lines) + "\n"


BEGIN = "<!-- corpus table: generated by tests/test_convert_corpus.py -->\n"
END = "<!-- end of corpus table -->\n"


def check_doc(table):
    with open(DOC) as f:
        text = f.read()
    if BEGIN in text and END in text:
        a = text.index(BEGIN) + len(BEGIN)
        b = text.index(END)
        if text[a:b] == table:
            check(True, "doc table")
            return
        if os.environ.get("RNND_UPDATE_DOCS"):
            with open(DOC, "w") as f:
                f.write(text[:a] + table + text[b:])
            print("docs/convert.md: corpus table rewritten")
            return
    check(False, "docs/convert.md holds the corpus table as the test renders it "
          "(RNND_UPDATE_DOCS=1 rewrites it):\n" + table)


def run_doors(i, counts):
    """CASES[I] through every door: the outcome CASES expects, and where it converted, the
    file and `rnnd infer` against PyTorch. Returns the worst relative error; COUNTS the
    outcomes."""
    name, cls, tokens, exp, _ = CASES[i]
    worst = 0.0
    for door in DOORS:
        torch.manual_seed(i)
        net = cls().eval()
        src = tmp("%s.%s" % (name, "onnx" if door.startswith("onnx") else "pt"))
        if door.startswith("onnx"):
            src = tmp("%s.%s.onnx" % (name, door))
        out = tmp("%s.%s.rnnd" % (name, door))
        msg = ""
        try:
            export(net, tokens, door, src)
            msg = convert(net, door, src, out)
            got = "ok" if msg is None else "refused"
        except Exception as e:
            got, msg = "no export", "%s: %s" % (type(e).__name__,
                                                 str(e).strip().split("\n")[0])
        want = expected(exp, door)
        counts[got] = counts.get(got, 0) + 1
        what = "%s via %s" % (name, door)
        check(outcome_ok(want, got, msg or ""),
              "%s: expected %s, got %s: %s" % (what, want, got, msg))
        if os.environ.get("CORPUS_VERBOSE"):
            print("%-22s %-7s %-9s %s" % (name, door, got, (msg or "")[:200]))
        if got == "ok":
            check(os.path.exists(out), "%s: file written" % what)
            w = compare(net, out, inputs(tokens, np.random.default_rng(i)), what)
            if w is not None:
                worst = max(worst, w)
        else:
            check(not os.path.exists(out), "%s: refused and no file written" % what)
    return worst


class Corpus(Case):
    """test_NAME for each module of CASES (added below), and the doc's table."""

    @classmethod
    def setUpClass(cls):
        cls.t0 = time.time()
        cls.ran, cls.worst = 0, 0.0
        cls.counts = {"ok": 0, "refused": 0, "no export": 0}

    @classmethod
    def tearDownClass(cls):
        print("test_convert_corpus: %d of %d modules, %s, max relative error %.3g, %.0f s"
              % (cls.ran, len(CASES), cls.counts, cls.worst, time.time() - cls.t0))

    def run_module(self, i):
        type(self).worst = max(self.worst, run_doors(i, self.counts))
        type(self).ran += 1

    def test_doc_table(self):
        check(len(CASES) >= 40, "at least 40 modules (%d)" % len(CASES))
        check_doc(render([(name, note, [expected(exp, d) for d in DOORS])
                          for name, _, _, exp, note in CASES]))


def _module_test(i):
    def test(self):
        self.run_module(i)
    test.__doc__ = "%s through every door (CASES[%d])" % (CASES[i][0], i)
    return test


def in_shard(i):
    """Whether CASES[I] belongs to this process's share (all of them without CORPUS_SHARD)."""
    if not SHARD:
        return True
    k, n = (int(v) for v in SHARD.split("/"))
    return i % n == k


for _i, _case in enumerate(CASES):
    if in_shard(_i):
        setattr(Corpus, "test_" + _case[0], _module_test(_i))
if SHARD and not SHARD.startswith("0/"):
    del Corpus.test_doc_table     # share 0 checks the table once


def start_shares():
    """Children running shares 1..N-1 of a whole run; [] when the run is not split."""
    jobs = int(os.environ.get("CORPUS_JOBS", "2"))
    if SHARD or jobs < 2 or len(sys.argv) > 1 or os.environ.get("CORPUS_ONLY"):
        return []
    children = []
    for k in range(1, jobs):
        env = dict(os.environ, CORPUS_SHARD="%d/%d" % (k, jobs))
        children.append(subprocess.Popen([sys.executable] + sys.argv, env=env))
    os.environ["CORPUS_SHARD"] = "0/%d" % jobs
    return children


if __name__ == "__main__":
    if os.environ.get("CORPUS_ONLY"):
        sys.argv += ["Corpus.test_" + n for n in os.environ["CORPUS_ONLY"].split(",")]
    kids = start_shares()
    if kids:
        # this process is share 0: run it again as such (the module's tests were set up
        # before the split), then collect the children
        rcs = [subprocess.call([sys.executable] + sys.argv)] + [kid.wait() for kid in kids]
        sys.exit(next((rc for rc in rcs if rc), 0))
    unittest.main()
