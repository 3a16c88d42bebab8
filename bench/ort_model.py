#!/usr/bin/python3
"""bench/ort_model.py: the ONNX model bench/ort_rnn.js times, written to stdout.

One ONNX LSTM or GRU node (opset 14), one direction, fp32, the layouts of the ONNX operator:
W [1, G*H, I], R [1, G*H, H], B [1, 2*G*H] (G = 4 for LSTM, 3 for GRU); GRU with
linear_before_reset = 1, as PyTorch runs it. Weights and biases are constant initializers
(so ONNX Runtime may pre-pack them), uniform in +-1/sqrt(H) from a fixed seed: PyTorch's
default init, the range the oneDNN and PyTorch harnesses use.

  inputs:  X [T, B, I] (T and B symbolic), initial_h [1, B, H] (and initial_c for LSTM)
  outputs: Y [T, 1, B, H], Y_h [1, B, H] (and Y_c)

Needs the onnx package (Debian's python3-onnx, or pip). Usage:
  ort_model.py --cell lstm|gru --hidden H --input I [--seed N] > model.onnx
"""
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


def main():
    p = argparse.ArgumentParser(prog="ort_model.py", description=__doc__.split("\n")[0])
    p.add_argument("--cell", choices=["lstm", "gru"], required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--input", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    o = p.parse_args()
    if not (1 <= o.hidden <= 16384 and 1 <= o.input <= 16384):
        p.error("--hidden and --input must be 1..16384")
    sys.stdout.buffer.write(build(o.cell, o.hidden, o.input, o.seed).SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
