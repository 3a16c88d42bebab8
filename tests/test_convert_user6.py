#!/usr/bin/env python3
"""What a sixth outside user trial met at the converter's Python door (issue 14):

- TestNormAdded: from_module(module, ..., norm="softmax" or "log_softmax") of a module whose
  forward() applies no softmax, docs/convert.md's own Python API example, was refused by
  verification (the norm changes what the model computes); it converts as the command
  line's --norm does: checked without the norm, the norm added after the check and recorded
  as "norm_checked", and the file gives the norm of the module's outputs. norm="none" of a
  module that applies a softmax drops it the same way.

Env: PYTHONPATH (= tools), RNND_TEST_TMP.
"""
import json
import os
import unittest
import warnings

import numpy as np
import torch
import torch.nn as nn

from daemon_util import Case, tmpdir

import rnnd_convert
from rnnd_convert import reference
from rnnd_convert.arch import ConvertError
from rnnd_modules.mingru import MinGRU

warnings.filterwarnings("ignore")
WORK = tmpdir("convert_user6")


def path(name):
    return os.path.join(WORK, name)


def record(p):
    """The verification record of the .rnnd at P."""
    with open(p, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    return json.loads(json.loads(data[8:8 + n])["__metadata__"]["verification"])


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
            self.eq(record(p).get("norm_checked"), "none", "norm=%r: norm_checked" % norm)

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
            self.check("norm_checked" not in record(p), "checked with the norm: %r"
                       % record(p))
        p = self.converted(net, "none", "applied_none.rnnd")
        if p is not None:
            self.same(p, logits.double().numpy(), x, "norm='none'")
            self.eq(record(p).get("norm_checked"), "softmax", "norm='none': norm_checked")

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


if __name__ == "__main__":
    unittest.main()
