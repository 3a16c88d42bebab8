#!/usr/bin/python3
"""bench/ort_model.py: the ONNX model bench/ort_rnn.js times, written to stdout.

One ONNX LSTM or GRU node (opset 14), one direction, fp32, the layouts of the ONNX operator:
W [1, G*H, I], R [1, G*H, H], B [1, 2*G*H] (G = 4 for LSTM, 3 for GRU); GRU with
linear_before_reset = 1, as PyTorch runs it. Weights and biases are constant initializers
(so ONNX Runtime may pre-pack them), uniform in +-1/sqrt(H) from a fixed seed: PyTorch's
default init, the range the oneDNN and PyTorch harnesses use.

  inputs:  X [T, B, I] (T and B symbolic), initial_h [1, B, H] (and initial_c for LSTM)
  outputs: Y [T, 1, B, H], Y_h [1, B, H] (and Y_c)

--reference prints instead, as one JSON list, the Y [T, 1, B, H] a plain numpy version of the
cell computes from the zero state for T steps of bench's inputs (ort_rnn.js --check compares
ORT's output with it).

Needs the onnx package (Debian's python3-onnx, or pip). Usage:
  ort_model.py --cell lstm|gru --hidden H --input I [--seed N] > model.onnx
  ort_model.py --cell lstm|gru --hidden H --input I --reference --batch B --steps T
"""
import json
import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(cell, H, I, seed):
    G = {"lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(np.float32)

    inits = [numpy_helper.from_array(u(1, G * H, I), "W"),
             numpy_helper.from_array(u(1, G * H, H), "R"),
             numpy_helper.from_array(u(1, 2 * G * H), "B")]
    fl = TensorProto.FLOAT
    ins = [helper.make_tensor_value_info("X", fl, ["T", "batch", I]),
           helper.make_tensor_value_info("initial_h", fl, [1, "batch", H])]
    outs = [helper.make_tensor_value_info("Y", fl, ["T", 1, "batch", H]),
            helper.make_tensor_value_info("Y_h", fl, [1, "batch", H])]
    # inputs by position: X, W, R, B, sequence_lens (none), initial_h[, initial_c]
    node_in = ["X", "W", "R", "B", "", "initial_h"]
    node_out = ["Y", "Y_h"]
    attrs = {"hidden_size": H}
    if cell == "lstm":
        ins.append(helper.make_tensor_value_info("initial_c", fl, [1, "batch", H]))
        outs.append(helper.make_tensor_value_info("Y_c", fl, [1, "batch", H]))
        node_in.append("initial_c")
        node_out.append("Y_c")
    else:
        attrs["linear_before_reset"] = 1
    node = helper.make_node(cell.upper(), node_in, node_out, **attrs)
    graph = helper.make_graph([node], "rnnd_bench_" + cell, ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              producer_name="rnnd bench/ort_model.py")
    model.ir_version = 8        # ONNX Runtime 1.30 reads IR <= 10; 8 is plenty for opset 14
    onnx.checker.check_model(model)
    return model


def inputs(n):
    """The input values of `rnnd bench`, torch_rnn.py and ort_rnn.js."""
    idx = np.arange(n, dtype=np.int64)
    return ((idx * 2654435761) % 2001).astype(np.float32) / 1000.0 - 1.0


def reference(model, cell, H, I, B, T):
    """Y of the ONNX cell by the operator's definition (LSTM gates i, o, f, c; GRU z, r, h
    with linear_before_reset), in float64."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64)
         for t in model.graph.initializer}
    W, R, Bias = w["W"][0], w["R"][0], w["B"][0]
    G = W.shape[0] // H
    Wb, Rb = Bias[:G * H], Bias[G * H:]
    x = inputs(T * B * I).astype(np.float64).reshape(T, B, I)
    h, c, ys = np.zeros((B, H)), np.zeros((B, H)), []

    def sig(v):
        return 1.0 / (1.0 + np.exp(-v))
    for t in range(T):
        xw = x[t] @ W.T + Wb
        hr = h @ R.T + Rb
        if cell == "lstm":
            g = xw + hr
            i, o, f, cc = (g[:, k * H:(k + 1) * H] for k in range(4))
            c = sig(f) * c + sig(i) * np.tanh(cc)
            h = sig(o) * np.tanh(c)
        else:
            z = sig(xw[:, :H] + hr[:, :H])
            r = sig(xw[:, H:2 * H] + hr[:, H:2 * H])
            hh = np.tanh(xw[:, 2 * H:] + r * hr[:, 2 * H:])
            h = (1.0 - z) * hh + z * h
        ys.append(h.copy())
    return np.stack(ys).reshape(-1)


def main():
    p = argparse.ArgumentParser(prog="ort_model.py", description=__doc__.split("\n")[0])
    p.add_argument("--cell", choices=["lstm", "gru"], required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--input", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reference", action="store_true", help="print numpy's Y as JSON")
    p.add_argument("--batch", type=int, default=1, help="with --reference")
    p.add_argument("--steps", type=int, default=3, help="with --reference")
    o = p.parse_args()
    if not (1 <= o.hidden <= 16384 and 1 <= o.input <= 16384):
        p.error("--hidden and --input must be 1..16384")
    model = build(o.cell, o.hidden, o.input, o.seed)
    if o.reference:
        y = reference(model, o.cell, o.hidden, o.input, o.batch, o.steps)
        print(json.dumps([round(float(v), 8) for v in y]))
        return 0
    sys.stdout.buffer.write(model.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
