"""A reference PyTorch Clockwork RNN (Koutnik et al. 2014) with rnnd's "clockwork" layer
equations (docs/model-format.md), to train models that rnnd serves:

    from rnnd_modules.clockwork import Clockwork
    net = Clockwork(input_size=7, hidden_size=12, periods=[1, 4, 16], num_layers=2)
    y, (h, t) = net(x)                      # x [B, T, input_size], batch first
    rnnd_convert.from_module(net, "clock.rnnd")

Per layer, with the layer's step counter t (0 at the start) and m = len(periods) modules of
H/m units each:

    module k is active when t mod T_k == 0
    active rows:   h_k = f(W_k x + Wb_k + R_k h_prev + Rb_k)
    other rows:    h_k = h_prev_k;   then t = t + 1

Module k reads only modules j >= k: R is multiplied by a fixed block-upper-triangular mask,
so what lies below the block diagonal never takes part (nor gets a gradient) and the
converter writes R * mask, exactly the weights used here. Parameters per layer l, named as
rnnd's tensors of layer l: W{l} [H, in], R{l} [H, H], Wb{l} [H], Rb{l} [H].
"""
import math

import torch
from torch import nn

ACTIVATIONS = {"tanh": (torch.tanh, "Tanh"), "relu": (torch.relu, "Relu"),
               "softsign": (nn.functional.softsign, "Softsign")}


class Clockwork(nn.Module):
    """num_layers stacked clockwork layers, each of hidden_size units in len(periods)
    modules. forward(x, state=None) -> (y [B, T, H], (h [L, B, H], t [L, B] int64)); STATE
    is such an (h, t) pair to continue from (each batch row may have its own counter)."""

    rnnd_type = "clockwork"     # what rnnd_convert.from_module recognises

    def __init__(self, input_size, hidden_size, periods, num_layers=1, activation="tanh"):
        super().__init__()
        periods = [int(p) for p in periods]
        if not periods or any(p < 1 for p in periods) or \
                any(b <= a for a, b in zip(periods, periods[1:])):
            raise ValueError("periods must be strictly increasing positive integers")
        if hidden_size % len(periods):
            raise ValueError("%d modules do not divide hidden_size %d"
                             % (len(periods), hidden_size))
        if activation not in ACTIVATIONS:
            raise ValueError("activation must be one of %s" % ", ".join(ACTIVATIONS))
        self.input_size, self.hidden_size = input_size, hidden_size
        self.periods, self.num_layers, self.activation = periods, num_layers, activation
        hm = hidden_size // len(periods)
        module = torch.arange(hidden_size) // hm
        # row i (module i // hm) reads column j when j's module is not below i's
        self.register_buffer("mask", (module[None, :] >= module[:, None]).float())
        self.register_buffer("period_of_unit", torch.tensor(periods).repeat_interleave(hm))
        bound = 1.0 / math.sqrt(hidden_size)
        for l in range(num_layers):
            ind = input_size if l == 0 else hidden_size
            for name, shape in (("W", (hidden_size, ind)), ("R", (hidden_size, hidden_size)),
                                ("Wb", (hidden_size,)), ("Rb", (hidden_size,))):
                p = nn.Parameter(torch.empty(shape))
                nn.init.uniform_(p, -bound, bound)
                self.register_parameter("%s%d" % (name, l), p)

    def weights(self, l):
        """Layer L's (W, R masked, Wb, Rb): what it computes with, and what rnnd reads."""
        return (getattr(self, "W%d" % l), getattr(self, "R%d" % l) * self.mask,
                getattr(self, "Wb%d" % l), getattr(self, "Rb%d" % l))

    def forward(self, x, state=None):
        B, T = x.shape[0], x.shape[1]
        f = ACTIVATIONS[self.activation][0]
        if state is None:
            h0 = x.new_zeros(self.num_layers, B, self.hidden_size)
            t0 = torch.zeros(self.num_layers, B, dtype=torch.int64, device=x.device)
        else:
            h0, t0 = state
        hs, ts = [], []
        for l in range(self.num_layers):
            W, R, Wb, Rb = self.weights(l)
            h, t = h0[l], t0[l].clone()
            ys = []
            for s in range(T):
                new = f(x[:, s] @ W.T + Wb + h @ R.T + Rb)
                active = (t[:, None] % self.period_of_unit[None, :]) == 0
                h = torch.where(active, new, h)
                t = t + 1
                ys.append(h)
            x = torch.stack(ys, dim=1)
            hs.append(h)
            ts.append(t)
        return x, (torch.stack(hs), torch.stack(ts))
