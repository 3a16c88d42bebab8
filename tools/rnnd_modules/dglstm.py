"""The depth-gated LSTM (Yao et al. 2015, "Depth-Gated LSTM") exactly as rnnd serves it: a
stack of `lstm` layers of docs/model-format.md whose layers 1, 2, ... have "depth_gate": true,
so that a trained module converts to an .rnnd file with the same outputs
(rnnd_convert.from_module; docs/convert.md).

Per layer k, with x its input (layer k-1's h at this step), c_prev its own previous cell and
c_low layer k-1's new cell at this step (layers k >= 1):

    i, o, f = sigmoid(W_{i,o,f} x + Wb + R_{i,o,f} h_prev + Rb);  g = tanh(W_c x + ... + Rb_c)
    d = sigmoid(D x + Db + Dc * c_prev + Dl * c_low)             (k >= 1)
    c = f * c_prev + i * g  [+ d * c_low]                        h = o * tanh(c)

Parameters carry the format's tensor names and layouts: W_l{k} [4H, in] and R_l{k} [4H, H]
with gate rows i, o, f, c (ONNX's order, not nn.LSTM's i, f, g, o), Wb_l{k}, Rb_l{k} [4H];
for k >= 1 D_l{k} [H, H] and Dc_l{k}, Dl_l{k}, Db_l{k} [H]. Layer k reads layer k-1's cell
of the same step, so forward() steps all layers together.
"""
import math

import torch
from torch import nn


class DGLSTM(nn.Module):
    """NUM_LAYERS (at least 2) LSTM layers of HIDDEN_SIZE over batch-first input, every layer
    but the first depth-gated.

    forward(x, state=None): x [B, T, input_size]; state (h0, c0), each [num_layers, B, H], or
    None (zeros). Returns (output [B, T, H] of the last layer, (h_n, c_n))."""

    rnnd_type = "dglstm"        # what rnnd_convert.from_module recognises

    def __init__(self, input_size, hidden_size, num_layers=2):
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 2:
            raise ValueError("input_size and hidden_size must be positive, num_layers >= 2 "
                             "(the first layer has no layer below to gate)")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        H = hidden_size
        for k in range(num_layers):
            n_in = input_size if k == 0 else H
            shapes = {"W": (4 * H, n_in), "R": (4 * H, H), "Wb": (4 * H,), "Rb": (4 * H,)}
            if k >= 1:
                shapes.update(D=(H, H), Dc=(H,), Dl=(H,), Db=(H,))
            for name, shape in shapes.items():
                self.register_parameter("%s_l%d" % (name, k), nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self):
        # nn.LSTM's initialisation
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x, state=None):
        H, K = self.hidden_size, self.num_layers
        B, T = x.shape[0], x.shape[1]
        p = {n: v for n, v in self.named_parameters()}
        if state is None:
            h = [x.new_zeros(B, H) for _ in range(K)]
            c = [x.new_zeros(B, H) for _ in range(K)]
        else:
            h, c = list(state[0].unbind(0)), list(state[1].unbind(0))
        lin = nn.functional.linear
        out = []
        for t in range(T):
            inp = x[:, t]
            for k in range(K):
                pre = lin(inp, p["W_l%d" % k], p["Wb_l%d" % k]) + \
                    lin(h[k], p["R_l%d" % k], p["Rb_l%d" % k])
                i, o = torch.sigmoid(pre[:, :H]), torch.sigmoid(pre[:, H:2 * H])
                f, g = torch.sigmoid(pre[:, 2 * H:3 * H]), torch.tanh(pre[:, 3 * H:])
                cn = f * c[k] + i * g
                if k >= 1:
                    low = c[k - 1]          # already this step's: layer k-1 ran first
                    d = torch.sigmoid(lin(inp, p["D_l%d" % k], p["Db_l%d" % k]) +
                                      p["Dc_l%d" % k] * c[k] + p["Dl_l%d" % k] * low)
                    cn = cn + d * low
                c[k] = cn
                h[k] = o * torch.tanh(cn)
                inp = h[k]
            out.append(inp)
        return torch.stack(out, 1), (torch.stack(h, 0), torch.stack(c, 0))
