"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?") exactly as rnnd serves it: the
`mingru` layer type of docs/model-format.md, so that a trained module converts to an .rnnd
file with the same outputs (rnnd_convert.from_module; docs/convert.md).

Per layer, with x the layer's input and f, g the gate and candidate activations:

    z = f(W_z x + Wb_z);   n = g(W_h x + Wb_h);   h = (1 - z) * h_prev + z * n

weight_l{k} is W [2H, in] (rows z, then h) and bias_l{k} is Wb [2H], the format's own
layout. f is the sigmoid; g the identity (default) or tanh. The gates do not read h, so
forward() computes them for all steps in one product and then runs the recurrence step by
step, in the order written above.
"""
import math

import torch
from torch import nn

CANDIDATES = ("identity", "tanh")


class MinGRU(nn.Module):
    """A stack of NUM_LAYERS minGRU layers over batch-first input.

    forward(x, h0=None): x [B, T, input_size]; h0 [num_layers, B, hidden_size] or None
    (zeros). Returns (output [B, T, hidden_size] of the last layer, h_n [num_layers, B,
    hidden_size]), like nn.GRU(batch_first=True)."""

    rnnd_type = "mingru"        # what rnnd_convert.from_module recognises

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True,
                 candidate="identity"):
        super().__init__()
        if candidate not in CANDIDATES:
            raise ValueError("candidate must be one of %s" % ", ".join(CANDIDATES))
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be positive")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.bias, self.candidate = num_layers, bias, candidate
        for k in range(num_layers):
            n_in = input_size if k == 0 else hidden_size
            self.register_parameter("weight_l%d" % k,
                                    nn.Parameter(torch.empty(2 * hidden_size, n_in)))
            self.register_parameter("bias_l%d" % k, nn.Parameter(torch.empty(2 * hidden_size))
                                    if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        # nn.GRU's initialisation
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x, h0=None):
        H = self.hidden_size
        g = torch.tanh if self.candidate == "tanh" else (lambda v: v)
        finals = []
        for k in range(self.num_layers):
            gx = nn.functional.linear(x, getattr(self, "weight_l%d" % k),
                                      getattr(self, "bias_l%d" % k))
            z, n = torch.sigmoid(gx[..., :H]), g(gx[..., H:])
            h = h0[k] if h0 is not None else x.new_zeros(x.shape[0], H)
            out = []
            for t in range(x.shape[1]):
                h = (1 - z[:, t]) * h + z[:, t] * n[:, t]
                out.append(h)
            x = torch.stack(out, 1)
            finals.append(h)
        return x, torch.stack(finals, 0)
