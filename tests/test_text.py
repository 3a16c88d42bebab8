"""Text inputs over HTTP (docs/text.md): `rnnd serve` with the bundled char model
(models/charlm.rnnd), a small random byte-tokenizer LSTM built here with PyTorch and the
converter, and a golden token model without tokenizer.

Checked:
- a sequence given as a string answers exactly (byte for byte) what its token ids answer,
  the ids computed here from the vocabulary that GET /v1/models/{m} returns (greedy longest
  match, written here) or from the UTF-8 bytes; strings and id lists mix in one batch;
- the byte model's outputs for multi-byte UTF-8 text equal PyTorch's for the bytes;
- refusals: a character without token (the message names sequence, byte offset and code
  point), a model without tokenizer, an empty string, a vector model, the steps limit;
- `rnnd inspect` still describes both text models.
Exits 1 on any failure.
"""
import json
import os
import subprocess
import unittest

import torch
from torch import nn

import rnnd_convert
from daemon_util import Case, RNND_BIN, close, contract_check, golden_model, tmpdir

WORK = tmpdir("text")
SRCDIR = os.environ.get("RNND_SRCDIR", ".")
CHARLM = os.path.join(SRCDIR, "models", "charlm.rnnd")


class ByteLM(nn.Module):
    """Embedding(256) -> LSTM(8, 16) -> Linear(16, 256): a random byte-level model."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(256, 8)
        self.rnn = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 256)

    def forward(self, x):
        return self.head(self.rnn(self.emb(x))[0])


def make_byte_model():
    torch.manual_seed(1234)
    net = ByteLM().eval()
    path = os.path.join(WORK, "bytelm.rnnd")
    rnnd_convert.from_module(net, path, name="bytelm", tokenizer="byte")
    return net, path


def greedy_ids(vocab, text):
    """Greedy longest match of TEXT over VOCAB (lowest id among equal strings), as ids; the
    UTF-8 bytes are compared, as rnnd does."""
    data = text.encode("utf-8")
    pieces = {}
    for i, s in enumerate(vocab):
        b = s.encode("utf-8")
        if b and b not in pieces:
            pieces[b] = i
    longest = max(len(b) for b in pieces)
    ids, i = [], 0
    while i < len(data):
        for n in range(min(longest, len(data) - i), 0, -1):
            if data[i:i + n] in pieces:
                ids.append(pieces[data[i:i + n]])
                i += n
                break
        else:
            raise ValueError("no token at byte %d" % i)
    return ids


def post(d, model, body):
    """(status, raw bytes) of an infer request."""
    c = d.conn()
    try:
        c.request("POST", "/v1/models/%s/infer" % model, body=json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        payload = r.read()
        contract_check("POST", "/v1/models/%s/infer" % model, r.status,
                       {k.lower(): v for k, v in r.getheaders()}, payload)
        return r.status, payload
    finally:
        c.close()


class Text(Case):
    """One daemon: charlm, the byte model, a token model without tokenizer, a vector model."""

    @classmethod
    def setUpClass(cls):
        cls.bnet, bpath = make_byte_model()
        plain = golden_model("gru2_tokens_head", WORK)     # tokens, no tokenizer
        vectors = golden_model("gru_vectors", WORK)
        models = {"charlm": CHARLM, "bytelm": bpath, "plain": plain, "vec": vectors}
        cls.d = cls.serve(models, "--max-infer-steps", 200)

    def same_as_ids(self, model, text_body, ids_body, what):
        st1, a = post(self.d, model, text_body)
        st2, b = post(self.d, model, ids_body)
        self.check(st1 == 200 and st2 == 200 and a == b,
                   "%s: text %d %.200r vs ids %d %.200r" % (what, st1, a, st2, b))

    def refused(self, model, body, status, code, message, what):
        st, raw = post(self.d, model, body)
        try:
            err = json.loads(raw)["error"]
        except (ValueError, KeyError, TypeError):
            err = {}
        self.check(st == status and err.get("code") == code and err.get("message") == message,
                   "%s: want %d %s %r, got %d %r" % (what, status, code, message, st, raw[:300]))

    def test_charlm_text_is_ids(self):
        """charlm: text == ids from the vocabulary GET /v1/models/charlm returns."""
        d = self.d
        st, _, info = d.request("GET", "/v1/models/charlm")
        self.eq(st, 200, "GET /v1/models/charlm")
        vocab = info["vocab"]
        self.eq(info["tokenizer"], "char", "charlm tokenizer")
        self.eq(len(vocab), info["vocab_size"], "charlm vocab size")
        texts = ["To be, or not to be: that is the question.",
                 "%\nQ: Why did the chicken cross the road?\nA: ~{[|]}~ \"quoted\" \\ done",
                 "x", " " * 7]
        for t in texts:
            ids = greedy_ids(vocab, t)
            self.eq(len(ids), len(t), "charlm: one token per character of %r" % t[:20])
            self.same_as_ids("charlm", {"inputs": [t]}, {"inputs": [ids]}, "charlm %r" % t[:20])
        body_t = {"inputs": ["To be", [53, 73], "or not"], "outputs": "last",
                  "return_state": True}
        body_i = {"inputs": [greedy_ids(vocab, "To be"), [53, 73], greedy_ids(vocab, "or not")],
                  "outputs": "last", "return_state": True}
        self.same_as_ids("charlm", body_t, body_i, "charlm mixed batch")
        print("charlm: %d texts and a mixed batch answer what their ids answer" % len(texts))

    def test_bytelm_utf8(self):
        """bytelm: UTF-8 bytes are the ids, multi-byte characters included; equal to torch."""
        d = self.d
        st, _, binfo = d.request("GET", "/v1/models/bytelm")
        self.eq((binfo["tokenizer"], binfo["vocab_size"]), ("byte", 256), "bytelm tokenizer")
        utf = ["h\u00e9llo w\u00f6rld \u2014 \u20ac5 \U0001F600!", "\u65e5\u672c\u8a9e",
               "plain ascii", "\U0001F600" * 3]
        for t in utf:
            ids = list(t.encode("utf-8"))
            self.same_as_ids("bytelm", {"inputs": [t]}, {"inputs": [ids]}, "bytelm %r" % t)
        st, raw = post(d, "bytelm", {"inputs": utf})
        self.eq(st, 200, "bytelm batch of texts")
        if st == 200:
            outs = json.loads(raw)["outputs"]
            for t, got in zip(utf, outs):
                x = torch.tensor([list(t.encode("utf-8"))])
                with torch.no_grad():
                    want = self.bnet(x)[0].tolist()
                self.check(close(got, want, 1e-5, 1e-4), "bytelm %r equals torch" % t)
        print("bytelm: %d UTF-8 texts answer what their bytes answer, and equal torch" % len(utf))

    def test_refusals(self):
        self.refused("charlm", {"inputs": [[1, 2], "caf\u00e9 au lait"]}, 400, "invalid_request",
                     'inputs[1]: byte 3: no token for "\u00e9" (U+00E9)', "charlm: no token")
        self.refused("charlm", {"inputs": ["tab\there"]}, 400, "invalid_request",
                     "inputs[0]: byte 3: no token for U+0009", "charlm: no token for a tab")
        self.refused("charlm", {"inputs": [""]}, 400, "invalid_request",
                     "inputs[0]: expected at least one step", "charlm: empty string")
        self.refused("charlm", {"inputs": ["a" * 201]}, 413, "limit_exceeded",
                     "inputs[0]: more than max_infer_steps (200) steps per sequence",
                     "charlm: steps limit")
        self.refused("plain", {"inputs": ["abc"]}, 400, "invalid_request",
                     "inputs[0]: model has no tokenizer: give token ids", "no tokenizer")
        self.refused("vec", {"inputs": ["abc"]}, 400, "invalid_request",
                     "inputs[0]: expected a list of steps, got a string", "vector model")
        print("refusals: no token, tab, empty, limit, no tokenizer, vector model")
        self.check(self.d.alive(), "daemon alive")


class Inspect(Case):
    def test_inspect_text_models(self):
        """rnnd inspect still describes both text models (it prints no vocabulary line for a
        byte model without vocabulary strings)."""
        _, bpath = make_byte_model()
        for path, want in ((CHARLM, "vocab:       96 strings, tokenizer char"),
                           (bpath, "input:       tokens, vocab_size 256, embedding_dim 8")):
            r = subprocess.run([RNND_BIN, "inspect", path], capture_output=True, text=True,
                               timeout=60)
            self.check(r.returncode == 0 and want in r.stdout,
                       "rnnd inspect %s: rc %d, %r" % (os.path.basename(path), r.returncode,
                                                       r.stdout[-400:] + r.stderr[-200:]))
        print("rnnd inspect: charlm and bytelm")


if __name__ == "__main__":
    unittest.main()
