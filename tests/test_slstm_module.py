"""tools/rnnd_modules/slstm.py (the reference PyTorch sLSTM) through rnnd_convert.from_module:
the written file, run by `rnnd infer` on every SIMD path, gives the module's outputs and final
h, c, n, m (within float32 rounding, 1e-5 relative), for both forget modes, several layers and
heads, with an Embedding and a log-softmax Linear head around it; verification at conversion
recorded its figures. Wrong modules are refused with a message: a parameter the format does
not have, R of the wrong shape, another layer type beside it.
"""
import json
import os
import subprocess
import sys
import unittest

import numpy as np
import torch

from daemon_util import RNND_BIN, Case, available_isas, tmpdir
from daemon_util import RUNNING as C

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
import rnnd_convert  # noqa: E402
from rnnd_convert.arch import ConvertError  # noqa: E402
from rnnd_modules.slstm import SLSTM  # noqa: E402

WORK = tmpdir("slstm_module")
ISAS = available_isas()


class Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(19, 7)
        self.rnn = SLSTM(7, 12, num_layers=2, heads=4, forget="sigmoid")
        self.lin = torch.nn.Linear(12, 19)
        self.norm = torch.nn.LogSoftmax(-1)    # forward() is not analysed: a module says it

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.norm(self.lin(y))


def infer(path, seqs, isa):
    p = subprocess.run([RNND_BIN, "infer", "--model", path],
                       input=json.dumps({"inputs": seqs, "return_state": True}),
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, RNND_ISA=isa))
    C.check(p.returncode == 0, "infer [%s]: %s" % (isa, p.stderr.strip()))
    return json.loads(p.stdout) if p.returncode == 0 else None


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def check_vectors(forget, heads, layers):
    """A bare SLSTM (vectors in, h out): outputs and every layer's final h, c, n, m."""
    what = "SLSTM(5, 15, %d, heads=%d, %s)" % (layers, heads, forget)
    net = SLSTM(5, 15, num_layers=layers, heads=heads, forget=forget)
    with torch.no_grad():   # larger weights than the default: the stabiliser has work to do
        for p in net.parameters():
            p.mul_(4.0)
    path = os.path.join(WORK, "vec_%s_%d_%d.rnnd" % (forget, heads, layers))
    m = rnnd_convert.from_module(net, path)
    C.check([L.type for L in m.layers] == ["slstm"] * layers and
            all(L.heads == heads and L.forget == forget for L in m.layers),
            what + ": layers read as slstm, heads and forget kept")
    x = torch.randn(2, 40, 5) * 2
    with torch.no_grad():
        y, st = net(x)
    for isa in ISAS:
        r = infer(path, x.numpy().astype(np.float64).tolist(), isa)
        if r is None:
            continue
        C.check(rel(r["outputs"], y.numpy()) <= 1e-5, "%s [%s]: outputs" % (what, isa))
        for b in range(2):
            for k, lay in enumerate(r["states"][b]["layers"]):
                for i, key in enumerate("hcnm"):
                    C.check(rel(lay[key][0], st[i][k, b].numpy()) <= 1e-5,
                            "%s [%s]: final %s of layer %d, sequence %d"
                            % (what, isa, key, k, b))


def check_tokens():
    net = Tokens()
    path = os.path.join(WORK, "tokens.rnnd")
    m = rnnd_convert.from_module(net, path)
    C.check(m.input_kind == "tokens" and m.head_norm == "log_softmax" and len(m.layers) == 2,
            "Tokens: embedding, two slstm layers and a log-softmax head")
    p = subprocess.run([RNND_BIN, "inspect", "--json", path], capture_output=True, text=True,
                       timeout=60)
    info = json.loads(p.stdout) if p.returncode == 0 else {}
    ver = info.get("verification") or {}
    C.check(ver.get("source") == "module" and ver.get("max_rel_error", 1) <= 1e-5,
            "Tokens: verification recorded: %r" % ver)
    lay = (info.get("layers") or [{}])[0]
    C.check(lay.get("type") == "slstm" and lay.get("heads") == 4 and
            lay.get("forget") == "sigmoid", "inspect --json shows heads, forget: %r" % lay)
    ids = torch.randint(0, 19, (3, 25))
    with torch.no_grad():
        y = net(ids)
    for isa in ISAS:
        r = infer(path, ids.tolist(), isa)
        if r is not None:
            C.check(rel(r["outputs"], y.numpy()) <= 1e-5, "Tokens [%s]: outputs" % isa)


def refused(module, want, what):
    try:
        rnnd_convert.from_module(module, os.path.join(WORK, "refused.rnnd"), verify=False)
        C.check(False, "%s: converted" % what)
    except ConvertError as e:
        C.check(want in str(e), "%s: %s" % (what, e))


def check_refusals():
    net = SLSTM(3, 4, heads=2)
    net.register_parameter("peephole_l0", torch.nn.Parameter(torch.zeros(4)))
    refused(net, "parameter peephole_l0 is not understood", "an extra parameter")
    net = SLSTM(3, 4, heads=2)
    net.weight_hh_l0 = torch.nn.Parameter(torch.zeros(16, 4))
    refused(net, "weight_hh_l0 must be [16, 2] (heads 2)", "a dense R")

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = SLSTM(3, 4, heads=2)
            self.b = torch.nn.LSTM(4, 4)
    refused(Mixed(), "nothing else that has parameters", "an nn.LSTM beside it")


class SlstmModule(Case):
    """Each test seeds torch itself (16), so that it draws the same weights run alone or in
    the suite; test_vectors draws what the whole script drew first before."""

    def setUp(self):
        super().setUp()
        torch.manual_seed(16)

    def test_vectors(self):
        for forget in ("exp", "sigmoid"):
            check_vectors(forget, 5, 2)         # d = 3, odd
        check_vectors("exp", 1, 1)              # one head: R is a full [4H, H]

    def test_tokens(self):
        check_tokens()

    def test_refusals(self):
        check_refusals()


if __name__ == "__main__":
    unittest.main()
