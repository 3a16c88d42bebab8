"""sLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory") exactly as rnnd serves
it: the `slstm` layer type of docs/model-format.md, so that a trained module converts to an
.rnnd file with the same outputs (rnnd_convert.from_module; docs/convert.md).

Per layer, with x the layer's input, H the hidden size, K heads of d = H / K units:

    pre = W x + Wb + R_blockdiag h_prev + Rb        (rows i, f, z, o; unit u of head k = u / d
                                                     reads only h_prev[k*d : (k+1)*d])
    lf  = pre_f  (forget "exp")   or   log(sigmoid(pre_f))  (forget "sigmoid")
    m   = max(lf + m_prev, pre_i)
    i'  = exp(pre_i - m);   f' = exp(lf + m_prev - m)
    c   = f' * c_prev + i' * tanh(pre_z);   n = f' * n_prev + i'
    h   = sigmoid(pre_o) * c / n

with h, c, n, m all zero at the start. The parameters are the format's tensors: weight_ih_l{k}
is W [4H, in], weight_hh_l{k} is R [4H, d] (row r = g*H + u holds the d weights unit u of gate
g gives its own head's h), bias_ih_l{k} is Wb and bias_hh_l{k} Rb [4H].
"""
import math

import torch
from torch import nn

FORGET = ("exp", "sigmoid")


class SLSTM(nn.Module):
    """A stack of NUM_LAYERS sLSTM layers over batch-first input.

    forward(x, state=None): x [B, T, input_size]; state None (zeros) or a tuple (h, c, n, m)
    of [num_layers, B, hidden_size] tensors. Returns (output [B, T, hidden_size] of the last
    layer, (h, c, n, m) at the last step, each [num_layers, B, hidden_size])."""

    rnnd_type = "slstm"         # what rnnd_convert.from_module recognises

    def __init__(self, input_size, hidden_size, num_layers=1, heads=4, forget="exp",
                 bias=True):
        super().__init__()
        if forget not in FORGET:
            raise ValueError("forget must be one of %s" % ", ".join(FORGET))
        if input_size < 1 or hidden_size < 1 or num_layers < 1 or heads < 1:
            raise ValueError("input_size, hidden_size, num_layers and heads must be positive")
        if hidden_size % heads:
            raise ValueError("heads (%d) must divide hidden_size (%d)" % (heads, hidden_size))
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.heads, self.forget, self.bias = heads, forget, bias
        H, d = hidden_size, hidden_size // heads
        for k in range(num_layers):
            n_in = input_size if k == 0 else H
            self.register_parameter("weight_ih_l%d" % k, nn.Parameter(torch.empty(4 * H, n_in)))
            self.register_parameter("weight_hh_l%d" % k, nn.Parameter(torch.empty(4 * H, d)))
            for b in ("bias_ih_l%d" % k, "bias_hh_l%d" % k):
                self.register_parameter(b, nn.Parameter(torch.empty(4 * H)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)      # nn.LSTM's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _step(self, k, gx, h, c, n, m):
        H, K = self.hidden_size, self.heads
        d = H // K
        R = getattr(self, "weight_hh_l%d" % k).view(4, K, d, d)
        rh = torch.einsum("gkuj,bkj->bgku", R, h.view(-1, K, d)).reshape(-1, 4 * H)
        Rb = getattr(self, "bias_hh_l%d" % k)
        pre = gx + rh + (Rb if Rb is not None else 0.0)
        pi, pf, pz, po = pre[:, :H], pre[:, H:2 * H], pre[:, 2 * H:3 * H], pre[:, 3 * H:]
        lf = pf if self.forget == "exp" else nn.functional.logsigmoid(pf)
        m_new = torch.maximum(lf + m, pi)
        i = torch.exp(pi - m_new)
        f = torch.exp(lf + m - m_new)
        c = f * c + i * torch.tanh(pz)
        n = f * n + i
        h = torch.sigmoid(po) * c / n
        return h, c, n, m_new

    def forward(self, x, state=None):
        B, H = x.shape[0], self.hidden_size
        finals = []
        for k in range(self.num_layers):
            gx = nn.functional.linear(x, getattr(self, "weight_ih_l%d" % k),
                                      getattr(self, "bias_ih_l%d" % k))
            if state is None:
                s = [x.new_zeros(B, H) for _ in range(4)]
            else:
                s = [t[k] for t in state]
            out = []
            for t in range(x.shape[1]):
                s = list(self._step(k, gx[:, t], *s))
                out.append(s[0])
            x = torch.stack(out, 1)
            finals.append(s)
        return x, tuple(torch.stack([f[i] for f in finals], 0) for i in range(4))
