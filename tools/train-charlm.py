#!/usr/bin/python3
"""Train rnnd's bundled character-level LSTM language model (models/charlm.rnnd).

Model: nn.Embedding(V, 64) -> nn.LSTM(64, 256, num_layers=2) -> nn.Linear(256, V), trained
with PyTorch on the CPU. V is the number of distinct characters in the corpus.

Data: the fortune cookie database of Debian 12 ("bookworm"), packages `fortunes-min` and
`fortunes` version 1:1.99.1-7.3 (Debian main; the copyright file states the BSD licence of
the University of California). Install them with

    apt-get install -y fortunes-min=1:1.99.1-7.3 fortunes=1:1.99.1-7.3

The corpus is every data file under /usr/share/games/fortunes/ (the files without a `.dat`
or `.u8` suffix) except `ascii-art` (pictures, not English), read in sorted file-name order
and concatenated. Fortunes stay separated by lines holding only `%`, as in the files, so the
model learns to end a fortune with "\\n%\\n" (a useful stop string). Each file is cleaned so
that only printable ASCII (0x20-0x7e) and newline remain (see clean_text): overstrike
sequences "x\\b" (the files' underlining and bold) are deleted, in each line every run of
blanks (spaces, tabs) becomes one space and leading and trailing blanks are removed (the
indentation and column layout of the files is lost; long blank runs made the model emit
endless blanks), typographic quotes, dashes and the ellipsis become their ASCII spelling,
accented letters lose their accent (Unicode NFKD, combining marks dropped), and any other
character is deleted. The vocabulary is the sorted set of the characters that remain;
nothing else (no padding, unknown or end-of-text token).

The last 5% of the corpus is held out for a validation loss. Training is truncated
back-propagation through time: the training text is cut into BATCH parallel streams, each
read in consecutive windows of SEQ_LEN characters, the LSTM state carried (detached) from
one window to the next, so the model learns to run for long spans as rnnd's sessions do.
Each epoch starts the streams at a new offset drawn from the seeded generator. Seeds are
fixed (random, numpy, torch), torch uses one thread and deterministic algorithms, so the
same command on the same torch build gives the same weights.

The command that produced models/charlm.rnnd (from the repository root):

    /usr/bin/python3 tools/train-charlm.py --checkpoint /tmp/charlm/charlm.pt \\
        --output models/charlm.rnnd

It saves the trained module (state_dict, hyper-parameters and vocabulary) to --checkpoint,
then writes the .rnnd with tools/rnnd_convert (architecture name "charlm", vocabulary
embedded, tokenizer "char") and checks the file against the module. To redo only the
conversion from a saved checkpoint:

    /usr/bin/python3 tools/train-charlm.py --checkpoint /tmp/charlm/charlm.pt \\
        --output models/charlm.rnnd --convert-only

tools/sample-charlm.py samples text from the checkpoint. See docs/models.md.
"""
import argparse
import math
import os
import random
import sys
import time
import unicodedata

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
FORTUNES = "/usr/share/games/fortunes"
EXCLUDED = {"ascii-art"}

# Typographic characters that have an obvious ASCII spelling (others are decomposed or dropped).
ASCII_SPELLING = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "--", "\u2015": "--",
    "\u2212": "-", "\u2026": "...", "\u00a0": " ", "\u00d7": "x", "\u00df": "ss",
    "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe", "\u0152": "OE", "\u00f8": "o", "\u00d8": "O",
}


class CharLM(nn.Module):
    """Embedding -> 2-layer LSTM -> Linear, registered in the order rnnd_convert reads."""

    def __init__(self, vocab_size, embed=64, hidden=256, layers=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.embedding(ids), state)
        return self.head(out), state


def clean_text(raw):
    """Reduce RAW (str) to printable ASCII and newline, as the module docstring says."""
    text = raw.replace("\r\n", "\n")
    while True:                                  # "_\bA" and "A\bA" both read as "A"
        i = text.find("\b")
        if i < 0:
            break
        text = text[:max(i - 1, 0)] + text[i + 1:]
    # Blank runs only teach a small model to emit more blanks (greedy output would end in an
    # endless run of indentation): keep words, not layout.
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    out = []
    for ch in text:
        if ch == "\n" or " " <= ch <= "~":
            out.append(ch)
            continue
        if ch in ASCII_SPELLING:
            out.append(ASCII_SPELLING[ch])
            continue
        for part in unicodedata.normalize("NFKD", ch):
            if " " <= part <= "~":
                out.append(part)
    return "".join(out)


def read_corpus(directory):
    """The cleaned corpus text and the list of files read, in the order read."""
    names = sorted(n for n in os.listdir(directory)
                   if "." not in n and n not in EXCLUDED
                   and os.path.isfile(os.path.join(directory, n))
                   and not os.path.islink(os.path.join(directory, n)))
    if not names:
        raise SystemExit("train-charlm: no fortune files in %s (apt-get install fortunes)"
                         % directory)
    parts = []
    for n in names:
        with open(os.path.join(directory, n), "rb") as f:
            text = clean_text(f.read().decode("utf-8", errors="replace"))
        if not text.endswith("\n"):
            text += "\n"
        if not text.endswith("%\n"):             # every file ends its last fortune
            text += "%\n"
        parts.append(text)
    return "".join(parts), names


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def evaluate(model, ids, seq_len, batch):
    """Mean cross-entropy (nats per character) of MODEL over IDS, read as BATCH streams."""
    n = (len(ids) - 1) // batch
    xs = ids[:n * batch].view(batch, n)
    ys = ids[1:n * batch + 1].view(batch, n)
    total, count, state = 0.0, 0, None
    model.eval()
    with torch.no_grad():
        for t in range(0, n, seq_len):
            logits, state = model(xs[:, t:t + seq_len], state)
            y = ys[:, t:t + seq_len]
            total += nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    model.train()
    return total / count


def train(args):
    seed_everything(args.seed)
    text, names = read_corpus(args.corpus)
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    n_val = len(ids) // 20
    train_ids, val_ids = ids[:-n_val], ids[-n_val:]
    print("corpus: %d files, %d characters (%d train, %d validation), vocabulary %d"
          % (len(names), len(ids), len(train_ids), len(val_ids), len(vocab)), flush=True)

    model = CharLM(len(vocab), args.embed, args.hidden, args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    print("model: embed %d, lstm %d x %d, %d parameters (%.1f MB float32)"
          % (args.embed, args.layers, args.hidden, n_params, n_params * 4 / 1e6), flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # Cosine decay to lr/10 over the run: a smoother end than a constant rate.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)

    stream_len = (len(train_ids) - 1) // args.batch - args.seq_len
    windows = stream_len // args.seq_len
    step, epoch, t0, running = 0, 0, time.time(), None
    while step < args.steps:
        offset = int(torch.randint(0, args.seq_len, (1,), generator=gen))
        n = windows * args.seq_len
        starts = offset + torch.arange(args.batch) * (stream_len + args.seq_len)
        cols = starts[:, None] + torch.arange(n)[None, :]
        xs, ys = train_ids[cols], train_ids[cols + 1]
        state = None
        for w in range(windows):
            if step >= args.steps:
                break
            x = xs[:, w * args.seq_len:(w + 1) * args.seq_len]
            y = ys[:, w * args.seq_len:(w + 1) * args.seq_len]
            if state is not None:
                state = tuple(s.detach() for s in state)
            logits, state = model(x, state)
            loss = nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            sched.step()
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            if step % args.log_every == 0 or step == args.steps:
                print("step %5d  epoch %d  loss %.4f  (%.3f bits/char)  lr %.2e  %.0f s"
                      % (step, epoch, running, running / math.log(2),
                         sched.get_last_lr()[0], time.time() - t0), flush=True)
        epoch += 1
    train_s = time.time() - t0
    val = evaluate(model, val_ids, args.seq_len, 16)
    print("done: %d steps in %.0f s; last training loss %.4f; validation loss %.4f nats/char "
          "(%.3f bits/char)" % (step, train_s, running, val, val / math.log(2)), flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.checkpoint)), exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "vocab": vocab,
                "config": {"embed": args.embed, "hidden": args.hidden, "layers": args.layers},
                "train": {"steps": step, "seconds": round(train_s, 1), "loss": running,
                          "val_loss": val, "seed": args.seed, "batch": args.batch,
                          "seq_len": args.seq_len, "lr": args.lr, "files": names,
                          "characters": len(ids)}},
               args.checkpoint)
    print("saved %s" % args.checkpoint, flush=True)
    return model, vocab


def load_checkpoint(path):
    """The CharLM and vocabulary saved by train(); also used by tools/sample-charlm.py."""
    ck = torch.load(path, map_location="cpu")
    cfg = ck["config"]
    model = CharLM(len(ck["vocab"]), cfg["embed"], cfg["hidden"], cfg["layers"])
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return model, ck["vocab"], ck


def convert(model, vocab, output):
    """Write OUTPUT with rnnd_convert and check it computes what MODEL computes."""
    sys.path.insert(0, HERE)
    import rnnd_convert
    from rnnd_convert import reference
    rnnd_convert.from_module(model, output, name="charlm", vocab=vocab, tokenizer="char")
    probe = "Q: What is the meaning of life?\nA: "
    index = {ch: i for i, ch in enumerate(vocab)}
    seq = [index[ch] for ch in probe]
    with torch.no_grad():
        want = model(torch.tensor([seq]))[0][0].double().numpy()
    got = reference.run(output, [seq])[0][0]
    diff = float(np.max(np.abs(got - want)))
    print("wrote %s (%d bytes); max |logit difference| vs torch over %d steps: %.2e"
          % (output, os.path.getsize(output), len(seq), diff), flush=True)
    if not diff < 1e-3:
        raise SystemExit("train-charlm: %s does not reproduce the module" % output)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default=FORTUNES, help="fortune files directory")
    p.add_argument("--checkpoint", required=True,
                   help="the .pt to save the trained module to (or read, --convert-only)")
    p.add_argument("--output", help="the .rnnd to write (e.g. models/charlm.rnnd)")
    p.add_argument("--convert-only", action="store_true",
                   help="do not train: convert --checkpoint to --output")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    p.add_argument("--log-every", type=int, default=100)
    args = p.parse_args()

    if args.convert_only:
        if not args.output:
            p.error("--convert-only needs --output")
        model, vocab, _ = load_checkpoint(args.checkpoint)
    else:
        model, vocab = train(args)
    if args.output:
        convert(model.eval(), vocab, args.output)


if __name__ == "__main__":
    main()
