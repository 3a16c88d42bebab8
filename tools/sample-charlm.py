#!/usr/bin/python3
"""Sample text from the character-level LSTM checkpoint saved by tools/train-charlm.py, with
PyTorch alone (no rnnd), to show what the bundled model (models/charlm.rnnd) writes.

    /usr/bin/python3 tools/sample-charlm.py /tmp/charlm/charlm.pt \\
        [--prompt TEXT] [--length 300] [--temperature 0.8] [--seed 1]

Prints a greedy continuation (temperature 0) and one sampled at --temperature. Prompt
characters outside the vocabulary are dropped (with a note on stderr).
"""
import argparse
import importlib.util
import os
import sys

import torch


def load_trainer():
    """tools/train-charlm.py as a module (its name has a hyphen)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train-charlm.py")
    spec = importlib.util.spec_from_file_location("train_charlm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sample(model, vocab, prompt, length, temperature, gen):
    """PROMPT followed by LENGTH generated characters; temperature 0 is greedy."""
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = [index[ch] for ch in prompt]
    out = []
    with torch.no_grad():
        logits, state = model(torch.tensor([ids]))
        last = logits[0, -1]
        for _ in range(length):
            if temperature == 0:
                nxt = int(torch.argmax(last))
            else:
                probs = torch.softmax(last.double() / temperature, dim=0)
                nxt = int(torch.multinomial(probs, 1, generator=gen))
            out.append(vocab[nxt])
            logits, state = model(torch.tensor([[nxt]]), state)
            last = logits[0, -1]
    return prompt + "".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="the .pt written by train-charlm.py --checkpoint")
    p.add_argument("--prompt", default="The meaning of life is ")
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    torch.set_num_threads(1)
    model, vocab, ck = load_trainer().load_checkpoint(args.checkpoint)
    prompt = "".join(ch for ch in args.prompt if ch in vocab)
    if prompt != args.prompt:
        print("sample-charlm: dropped prompt characters outside the vocabulary",
              file=sys.stderr)
    if not prompt:
        p.error("the prompt has no character of the vocabulary")
    info = ck.get("train", {})
    print("checkpoint: %s (vocabulary %d, %s steps, validation loss %s nats/char)"
          % (args.checkpoint, len(vocab), info.get("steps", "?"),
             "%.4f" % info["val_loss"] if "val_loss" in info else "?"))
    gen = torch.Generator().manual_seed(args.seed)
    print("\n--- greedy (temperature 0) ---")
    print(sample(model, vocab, prompt, args.length, 0.0, gen))
    print("\n--- temperature %g, seed %d ---" % (args.temperature, args.seed))
    print(sample(model, vocab, prompt, args.length, args.temperature, gen))


if __name__ == "__main__":
    main()
