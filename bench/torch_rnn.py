#!/usr/bin/python3
"""bench/torch_rnn.py: the PyTorch side of bench/compare.

One fp32 nn.LSTM / nn.GRU / nn.RNN layer under torch.inference_mode(), timed the way
`rnnd bench` times rnnd, printing the same JSON line plus "impl":"torch".

  stream: B sessions advance one step per module call (input shape (1, B, I)); the returned
          (h, c) is passed to the next call.
  seq:    B sequences of T steps in one module call, starting from the zero state.

Run with Debian's /usr/bin/python3 (python3-torch). --serve reads one set of options per line
on stdin and answers each with one JSON line, so bench/compare pays for `import torch` once.
"""
import argparse
import ctypes
import json
import shlex
import sys
import time

import torch


def parse(argv):
    p = argparse.ArgumentParser(prog="torch_rnn.py", description=__doc__.split("\n")[2])
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--input", type=int, default=0, help="input size (default: H)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--mode", choices=["stream", "seq"], default="stream")
    p.add_argument("--steps", type=int, default=100, help="sequence length in seq mode")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--seconds", type=float, default=2.0, help="after a warm-up of S/5")
    p.add_argument("--weights", choices=["f32"], default="f32")
    p.add_argument("--serve", action="store_true",
                   help="read option lines from stdin, one JSON line out per line")
    o = p.parse_args(argv)
    o.input = o.input or o.hidden
    for name, lo, hi in (("hidden", 1, 16384), ("input", 1, 16384), ("batch", 1, 4096),
                         ("steps", 1, 100000), ("threads", 1, 1024)):
        if not lo <= getattr(o, name) <= hi:
            p.error("--%s must be %d..%d" % (name, lo, hi))
    if not 0 < o.seconds < 3600:
        p.error("--seconds must be in (0, 3600)")
    return o


def openblas():
    """The OpenBLAS that torch's BLAS calls land in (Debian builds torch with BLAS=generic,
    i.e. libblas.so.3 -> OpenBLAS), or None. torch.set_num_threads does not reach it, and
    its pthread pool starts with one thread per core."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib
    except (OSError, AttributeError):
        return None


def run(o):
    torch.set_num_threads(o.threads)
    blas = openblas()
    if blas:
        blas.openblas_set_num_threads(o.threads)
    torch.manual_seed(1)
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[o.cell]
    G = {"lstm": 4, "gru": 3, "rnn": 1}[o.cell]
    H, I, B = o.hidden, o.input, o.batch
    T = o.steps if o.mode == "seq" else 1
    # default init: U(-1/sqrt(H), 1/sqrt(H)), the same range as the oneDNN harness
    net = kind(I, H, num_layers=1).eval()
    # the same input values as `rnnd bench`
    idx = torch.arange(T * B * I, dtype=torch.int64)
    x = (((idx * 2654435761) % 2001).to(torch.float32) / 1000.0 - 1.0).reshape(T, B, I)
    zero = torch.zeros(1, B, H)
    state = (zero, zero.clone()) if o.cell == "lstm" else zero

    with torch.inference_mode():
        calls, elapsed = 0, 0.0
        for phase in (0, 1):                 # 0: warm-up (a fifth of the time)
            limit = o.seconds if phase else o.seconds / 5
            calls = 0
            t0 = time.perf_counter()
            while True:
                if o.mode == "stream":
                    _, state = net(x, state)
                else:
                    net(x)
                calls += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= limit:
                    break
    steps = calls * B * T
    flops = 2.0 * G * H * (I + H) * steps
    # the kernels that do the work: OpenBLAS's core type (OPENBLAS_CORETYPE or detected)
    cap = "openblas-" + blas.openblas_get_corename().decode() if blas else "unknown"
    return {"impl": "torch", "cell": o.cell, "mode": o.mode, "H": H, "I": I, "B": B, "T": T,
            "threads": o.threads, "weights": o.weights, "isa": cap,
            "steps_per_s": round(steps / elapsed, 1),
            "us_per_step": round(elapsed / calls * 1e6, 3),
            "gflops": round(flops / elapsed * 1e-9, 2)}


def main():
    o = parse(sys.argv[1:])
    if not o.serve:
        print(json.dumps(run(o), separators=(",", ":")), flush=True)
        return 0
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            res = run(parse(shlex.split(line)))
        except SystemExit:                   # argparse already printed why on stderr
            res = {"impl": "torch", "error": "bad options: " + line.strip()}
        except Exception as e:               # keep serving: one bad point is not fatal
            res = {"impl": "torch", "error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(res, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
