"""The KServe v2 / Triton REST protocol on rnnd (docs/v2.md), driven by a client written from
the public protocol documents: the KServe "Predict Protocol - Version 2" (required_api.md),
Triton's sequence extension (extension_sequence.md) and generate extension
(extension_generate.md). Requests are what tritonclient.http builds with binary_data=False:
{"id"?, "inputs": [{"name", "shape", "datatype", "data": flat row-major list}],
"outputs": [{"name", "parameters": {"binary_data": false}}], "parameters": {"sequence_id",
"sequence_start", "sequence_end"} | {"binary_data_output": true}}, sent to
v2/models/{m}[/versions/{v}]/infer. (tritonclient itself sends no Content-Type; the protocol
documents' examples send application/json, and so does this client.)

What it checks:
- health (status only: 200 true), server metadata (name, version, extensions), model metadata
  (name, versions, platform, tensors with -1 for variable dimensions), model ready, with and
  without /versions/1, and Triton's 400 {"error": "..."} for unknown models and versions;
- stateless infer of every golden case equals POST /v1/models/{m}/infer bitwise and the
  case's expectation within its tolerance; INT32 and INT64 ids, nested and flat data, with and
  without the batch dimension, the "id" echo;
- acceptance 4 of issue 4: for every stateful golden case, infer with sequence_id /
  sequence_start / sequence_end (uint64 ids and string ids, random chunks, two sequences
  interleaved) equals a v1 session fed one step per request, bitwise, step by step;
  a sequence ended and then continued without sequence_start is refused; a sequence_start on
  a live id starts over from zeros;
- errors: unknown model/version, wrong input name, datatype, shape, element count, token id,
  batch > 1 in a sequence, a sequence on a bidirectional model, binary data: each a 4xx with
  exactly {"error": "<message>"};
- text: BYTES input on the bundled character model equals the same text as ids; generate and
  generate_stream (SSE) give the greedy text that stepping the model and taking the argmax
  gives, the same text as v1 generate with the same seed, and errors in Triton's form.
References come from the golden cases, from v1 (a separate code path) or from stepping the
model here; never from constants. Each check is a unittest case; a failing case fails the run.
"""
import json
import os
import random
import re
import signal
import socket
import time
import uuid
import unittest

import requests

from daemon_util import Case, Daemon, close, golden_cases, golden_model, tmpdir

WORK = tmpdir("v2")
CASES = golden_cases()
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
rng = random.Random(20261123)
JSON = {"Content-Type": "application/json"}


# ---- a client after the protocol documents ----------------------------------------------------

class V2Client:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d/" % port
        self.s = requests.Session()

    def get(self, uri):
        return self.s.get(self.base + uri, timeout=60)

    def post(self, uri, body, stream=False):
        return self.s.post(self.base + uri, data=json.dumps(body), headers=JSON,
                           timeout=120, stream=stream)

    @staticmethod
    def infer_body(name, shape, datatype, data, request_id="", outputs=None, sequence_id=0,
                   sequence_start=False, sequence_end=False):
        """The request tritonclient.http's _get_inference_request builds (JSON data)."""
        body, params = {}, {}
        if request_id != "":
            body["id"] = request_id
        if sequence_id != 0 and sequence_id != "":
            params["sequence_id"] = sequence_id
            params["sequence_start"] = sequence_start
            params["sequence_end"] = sequence_end
        body["inputs"] = [{"name": name, "shape": list(shape), "datatype": datatype,
                           "data": data}]
        if outputs:
            body["outputs"] = [{"name": o, "parameters": {"binary_data": False}}
                               for o in outputs]
        else:
            params["binary_data_output"] = True
        if params:
            body["parameters"] = params
        return body

    def infer(self, model, body, version=""):
        uri = ("v2/models/%s/versions/%s/infer" % (model, version) if version
               else "v2/models/%s/infer" % model)
        return self.post(uri, body)


def flat(x):
    if isinstance(x, list):
        return [y for e in x for y in flat(e)]
    return [x]


def is_v2_error(resp, status):
    """RESP is STATUS with exactly {"error": non-empty string}."""
    try:
        body = resp.json()
    except ValueError:
        return False
    return (resp.status_code == status and isinstance(body, dict) and list(body) == ["error"]
            and isinstance(body["error"], str) and body["error"] != "")


def input_of(case):
    """(datatype, per-step shape tail) of a golden case's input."""
    if case["input"]["kind"] == "tokens":
        return "INT32", []
    return "FP32", [case["input"]["dim"]]


def output(resp):
    body = resp.json()
    return body, body["outputs"][0]


# ---- health and metadata ----------------------------------------------------------------------


# ---- stateless infer --------------------------------------------------------------------------

def v1_infer(d, model, seqs):
    st, _, body = d.request("POST", "/v1/models/%s/infer" % model, {"inputs": seqs})
    if st != 200:
        raise AssertionError("v1 infer %s: %d %r" % (model, st, body))
    return body["outputs"]


# ---- sequences (acceptance 4) -----------------------------------------------------------------

def v1_session_steps(d, model, seq):
    """Per-step outputs of a fresh v1 session fed one step per request."""
    conn = d.conn()
    st, _, body = d.request("POST", "/v1/sessions", {"model": model}, conn=conn)
    assert st == 201, (st, body)
    sid, outs = body["id"], []
    for x in seq:
        st, _, body = d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": [x]},
                                conn=conn)
        assert st == 200, (st, body)
        outs += body["outputs"]
    d.request("DELETE", "/v1/sessions/%s" % sid, conn=conn)
    conn.close()
    return outs


def chunks(n):
    sizes, left = [], n
    while left:
        sizes.append(min(left, rng.randint(1, 3)))
        left -= sizes[-1]
    return sizes


def seq_request(cl, name, case, seq_id, steps, start, end, nobatch=False):
    dtype, tail = input_of(case)
    shape = ([] if nobatch else [1]) + [len(steps)] + tail
    body = cl.infer_body("INPUT", shape, dtype, flat(steps), outputs=["OUTPUT"],
                         sequence_id=seq_id, sequence_start=start, sequence_end=end)
    return cl.infer(name, body)


# ---- errors -----------------------------------------------------------------------------------


# ---- text: BYTES, generate, generate_stream ---------------------------------------------------

def sse_events(resp):
    """The JSON objects of the "data:" lines of an event stream."""
    out = []
    for line in resp.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            out.append(json.loads(line[5:].strip()))
    return out


def greedy_by_steps(cl, vocab, prompt, n):
    """Greedy continuation computed here: step the prompt as text in a sequence, then feed
    back the argmax of each step's logits as an id."""
    seq_id = "greedy-%d" % rng.getrandbits(32)
    body = cl.infer_body("INPUT", [1], "BYTES", [prompt], outputs=["OUTPUT"],
                         sequence_id=seq_id, sequence_start=True)
    r = cl.infer("charlm", body)
    if r.status_code != 200:
        return None
    out = output(r)[1]
    V = out["shape"][-1]
    logits = out["data"][-V:]
    text = ""
    for k in range(n):
        best = max(range(V), key=lambda i: (logits[i], -i))     # first of equal maxima
        text += vocab[best]
        body = cl.infer_body("INPUT", [1, 1], "INT32", [best], outputs=["OUTPUT"],
                             sequence_id=seq_id, sequence_end=(k == n - 1))
        r = cl.infer("charlm", body)
        if r.status_code != 200:
            return None
        logits = output(r)[1]["data"]
    return text


def read_reply(s):
    """(status, headers lower-cased, body) of one reply read from socket S."""
    out = b""
    while True:
        head, sep, body = out.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if sep and m and len(body) >= int(m.group(1)):
            break
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    lines = head.decode(errors="replace").split("\r\n")
    hdrs = dict((k.strip().lower(), v.strip()) for k, _, v in
                (l.partition(":") for l in lines[1:]))
    return int(lines[0].split()[1]) if lines[0] else 0, hdrs, body


def v2_error_body(status, body, want_status):
    try:
        j = json.loads(body)
    except ValueError:
        return False
    return (status == want_status and isinstance(j, dict) and list(j) == ["error"]
            and isinstance(j["error"], str) and j["error"] != "")


class Protocol(Case):
    """One daemon with every golden case and charlm; a client after the protocol documents."""

    @classmethod
    def setUpClass(cls):
        models = {name: golden_model(name, WORK) for name, _, _ in CASES}
        models["charlm"] = CHARLM
        cls.d = cls.serve(models)
        cls.cl = V2Client(cls.d.port)

    def setUp(self):
        rng.seed(20261123)  # each test's random inputs, whichever ran before it

    def test_metadata(self):
        cl = self.cl
        r = cl.get("v2/health/live")
        self.eq(r.status_code, 200, "GET v2/health/live")
        r = cl.get("v2/health/ready")
        self.eq(r.status_code, 200, "GET v2/health/ready")
        r = cl.get("v2")
        meta = r.json()
        self.check(r.status_code == 200 and meta.get("name") == "rnnd" and
                   isinstance(meta.get("version"), str) and meta["version"] and
                   isinstance(meta.get("extensions"), list) and
                   all(isinstance(x, str) for x in meta["extensions"]),
                   "GET v2: server metadata {name, version, extensions}: %r" % meta)
        for ext in ("sequence", "sequence(string_id)", "generate"):
            self.check(ext in meta.get("extensions", []), "GET v2 lists the %s extension" % ext)

        for name, case, _ in CASES:
            dtype, tail = input_of(case)
            odim = len(case["expected"][0][0])
            for uri in ("v2/models/%s" % name, "v2/models/%s/versions/1" % name):
                r = cl.get(uri)
                m = r.json()
                ok = (r.status_code == 200 and m.get("name") == name
                      and "1" in m.get("versions", [])
                      and isinstance(m.get("platform"), str) and len(m.get("inputs", [])) == 1
                      and len(m.get("outputs", [])) == 1)
                if ok:
                    i, o = m["inputs"][0], m["outputs"][0]
                    ok = (isinstance(i.get("name"), str) and i.get("datatype") == dtype
                          and i.get("shape") == [-1, -1] + tail and isinstance(o.get("name"), str)
                          and o.get("datatype") == "FP32" and o.get("shape") == [-1, -1, odim])
                self.check(ok, "GET %s: model metadata with the case's sizes: %r" % (uri, m))
            for uri in ("v2/models/%s/ready" % name, "v2/models/%s/versions/1/ready" % name):
                self.eq(cl.get(uri).status_code, 200, "GET " + uri)

        for uri in ("v2/models/nosuchmodel", "v2/models/nosuchmodel/ready",
                    "v2/models/%s/versions/2" % CASES[0][0],
                    "v2/models/%s/versions/2/ready" % CASES[0][0]):
            self.check(is_v2_error(cl.get(uri), 400), "GET %s: 400 {\"error\"}" % uri)

    def test_stateless(self):
        d = self.d
        cl = self.cl
        for name, case, _ in CASES:
            dtype, tail = input_of(case)
            meta = cl.get("v2/models/%s" % name).json()
            iname, oname = meta["inputs"][0]["name"], meta["outputs"][0]["name"]
            tol = (case["atol"], case["rtol"])
            odim = len(case["expected"][0][0])
            for i, seq in enumerate(case["sequences"]):
                want = v1_infer(d, name, [seq])[0]
                rid = "req-%s-%d" % (name, i)
                body = cl.infer_body(iname, [1, len(seq)] + tail, dtype, flat(seq), rid, [oname])
                r = cl.infer(name, body)
                ok = r.status_code == 200
                if ok:
                    b, o = output(r)
                    ok = (b.get("model_name") == name and b.get("id") == rid
                          and o.get("name") == oname and o.get("datatype") == "FP32"
                          and o.get("shape") == [1, len(seq), odim])
                    self.check(ok, "%s[%d]: v2 infer response fields: %r" % (name, i,
                                                                           {k: b[k] for k in b
                                                                            if k != "outputs"}))
                    self.check(o["data"] == flat(want), "%s[%d]: v2 infer bitwise equals v1 infer"
                               % (name, i))
                    self.check(close(o["data"], flat(case["expected"][i]), *tol),
                               "%s[%d]: v2 infer matches the golden expectation" % (name, i))
                else:
                    self.check(False, "%s[%d]: v2 infer: %d %s" % (name, i, r.status_code, r.text))
                    continue
                # the same sequence without the batch dimension, nested data, by version
                body = cl.infer_body(iname, [len(seq)] + tail, dtype, seq, outputs=[oname])
                r = cl.infer(name, body, version="1")
                self.check(r.status_code == 200 and output(r)[1]["shape"] == [len(seq), odim]
                           and output(r)[1]["data"] == flat(want),
                           "%s[%d]: no batch dimension, nested data, versions/1: same numbers, "
                           "shape "
                           "[T, O]" % (name, i))
                if dtype == "INT32":
                    body = cl.infer_body(iname, [1, len(seq)], "INT64", flat(seq))
                    r = cl.infer(name, body)
                    self.check(r.status_code == 200 and output(r)[1]["data"] == flat(want),
                               "%s[%d]: INT64 ids give the same numbers (no outputs requested)"
                               % (name, i))
            # a whole batch of equal-length sequences in one tensor
            lens = {len(s) for s in case["sequences"]}
            if len(lens) == 1 and len(case["sequences"]) > 1:
                seqs = case["sequences"]
                want = v1_infer(d, name, seqs)
                body = cl.infer_body(iname, [len(seqs), len(seqs[0])] + tail, dtype, flat(seqs))
                r = cl.infer(name, body)
                self.check(r.status_code == 200 and output(r)[1]["data"] == flat(want)
                           and output(r)[1]["shape"] == [len(seqs), len(seqs[0]), odim],
                           "%s: a batch of %d sequences bitwise equals v1 infer" % (name,
                                                                                    len(seqs)))

    def run_sequence(self, cl, name, case, seq_id, seq, odim):
        """Feed SEQ as sequence SEQ_ID in random chunks; the per-step outputs, or None."""
        outs, pos, sizes = [], 0, chunks(len(seq))
        for k, n in enumerate(sizes):
            r = seq_request(cl, name, case, seq_id, seq[pos:pos + n], k == 0,
                            k == len(sizes) - 1, nobatch=(k % 2 == 1))
            if r.status_code != 200:
                self.check(False,
                           "%s sequence %r chunk %d: %d %s" % (name, seq_id, k, r.status_code,
                                                                     r.text))
                return None
            data = output(r)[1]["data"]
            outs += [data[i * odim:(i + 1) * odim] for i in range(n)]
            pos += n
        return outs

    def test_sequences(self):
        d = self.d
        cl = self.cl
        next_id = 1000
        for name, case, _ in CASES:
            if not case["stateful"]:
                continue
            odim = len(case["expected"][0][0])
            refs = [v1_session_steps(d, name, seq) for seq in case["sequences"]]
            for i, seq in enumerate(case["sequences"]):
                for seq_id in (next_id, str(uuid.UUID(int=rng.getrandbits(128)))):
                    next_id += 1
                    got = self.run_sequence(cl, name, case, seq_id, seq, odim)
                    self.check(got == refs[i], "%s[%d]: sequence_id %r (%s) bitwise equals a v1 "
                               "session step by step" % (name, i, seq_id, type(seq_id).__name__))
                self.check(close(refs[i], case["expected"][i], case["atol"], case["rtol"]),
                           "%s[%d]: the v1 session matches the golden expectation" % (name, i))
            # two sequences of the case interleaved, one step per request
            if len(case["sequences"]) >= 2:
                a, b = case["sequences"][0], case["sequences"][1]
                ids = (next_id, "interleaved-%d" % next_id)
                next_id += 1
                outs = ([], [])
                for t in range(max(len(a), len(b))):
                    for k, s in enumerate((a, b)):
                        if t < len(s):
                            r = seq_request(cl, name, case, ids[k], [s[t]], t == 0,
                                            t == len(s) - 1)
                            outs[k].append(output(r)[1]["data"] if r.status_code == 200 else None)
                self.check(outs[0] == refs[0] and outs[1] == refs[1],
                           "%s: two interleaved sequences each bitwise equal their v1 session"
                           % name)

        # lifecycle on the first stateful case
        name, case = next((n, c) for n, c, _ in CASES if c["stateful"])
        seq = case["sequences"][0]
        ref = v1_session_steps(d, name, seq[:2])
        for seq_id in (7777, "lifecycle"):
            r = seq_request(cl, name, case, seq_id, seq[:1], True, True)
            self.check(r.status_code == 200 and output(r)[1]["data"] == ref[0],
                       "sequence %r: start and end in one request" % (seq_id,))
            r = seq_request(cl, name, case, seq_id, seq[1:2], False, False)
            self.check(is_v2_error(r, 400),
                       "sequence %r: continued after its end: 400 {\"error\"} "
                       "(%d %s)" % (seq_id, r.status_code, r.text))
            r = seq_request(cl, name, case, seq_id, seq[:1], True, False)
            self.check(r.status_code == 200 and output(r)[1]["data"] == ref[0],
                       "sequence %r: restarted after its end, from zeros" % (seq_id,))
            r = seq_request(cl, name, case, seq_id, seq[:1], True, False)
            self.check(r.status_code == 200 and output(r)[1]["data"] == ref[0],
                       "sequence %r: sequence_start on a live id starts over from zeros" % (seq_id,
                                                                                            ))
            r = seq_request(cl, name, case, seq_id, seq[1:2], False, True)
            self.check(r.status_code == 200 and output(r)[1]["data"] == ref[1],
                       "sequence %r: continues, then ends" % (seq_id,))
        r = seq_request(cl, name, case, 4242424242, seq[:1], False, False)
        self.check(is_v2_error(r, 400) and "START" in r.json()["error"],
                   "a sequence never started: 400 naming the START flag (%s)" % r.text)

    def test_errors(self):
        cl = self.cl
        vec = next((n, c) for n, c,
                   _ in CASES if c["input"]["kind"] == "vectors" and c["stateful"])
        tok = next((n, c) for n, c, _ in CASES if c["input"]["kind"] == "tokens")
        bidir = next(((n, c) for n, c, _ in CASES if not c["stateful"]), None)
        vname, vcase = vec
        dim = vcase["input"]["dim"]
        tname, tcase = tok
        vocab = tcase["input"]["vocab"]
        good = [0.5] * dim
        cases = [
            ("unknown model", "nosuchmodel", cl.infer_body("INPUT", [1, 1, dim], "FP32", good)),
            ("wrong input name", vname, cl.infer_body("input0", [1, 1, dim], "FP32", good)),
            ("FP64 datatype", vname, cl.infer_body("INPUT", [1, 1, dim], "FP64", good)),
            ("INT32 on a vector model", vname, cl.infer_body("INPUT", [1, 1, dim], "INT32",
                                                             [1] * dim)),
            ("wrong last dimension", vname, cl.infer_body("INPUT", [1, 1, dim + 1], "FP32",
                                                          good + [0.5])),
            ("shape and data disagree", vname, cl.infer_body("INPUT", [1, 2, dim], "FP32", good)),
            ("a string element", vname, cl.infer_body("INPUT", [1, 1, dim], "FP32",
                                                      good[:-1] + ["x"])),
            ("rank 4", vname, cl.infer_body("INPUT", [1, 1, 1, dim], "FP32", good)),
            ("zero steps", vname, cl.infer_body("INPUT", [1, 0, dim], "FP32", [])),
            ("token id out of range", tname, cl.infer_body("INPUT", [1, 2], "INT32", [0, vocab])),
            ("a float token id", tname, cl.infer_body("INPUT", [1, 1], "INT32", [1.5])),
            ("unknown output", vname, cl.infer_body("INPUT", [1, 1, dim], "FP32", good,
                                                    outputs=["output0"])),
            ("batch 2 in a sequence", vname, cl.infer_body("INPUT", [2, 1, dim], "FP32", good * 2,
                                                           sequence_id=5, sequence_start=True)),
            ("sequence_end without an id", vname, dict(cl.infer_body(
                "INPUT", [1, 1, dim], "FP32", good), parameters={"sequence_end": True})),
            ("a negative sequence_id", vname, dict(cl.infer_body(
                "INPUT", [1, 1, dim], "FP32", good), parameters={"sequence_id": -3})),
            ("no inputs", vname, {"inputs": []}),
            ("a numeric id", vname, dict(cl.infer_body("INPUT", [1, 1, dim], "FP32", good), id=7)),
        ]
        bin_body = cl.infer_body("INPUT", [1, 1, dim], "FP32", good)
        bin_body["inputs"][0]["parameters"] = {"binary_data_size": 4 * dim}
        cases.append(("binary data", vname, bin_body))
        if bidir:
            bd = bidir[1]["input"].get("dim", 1)
            cases.append(("a sequence on a bidirectional model", bidir[0], cl.infer_body(
                "INPUT", [1, 1, bd], "FP32", [0.5] * bd, sequence_id=9, sequence_start=True)))
        for what, model, body in cases:
            r = cl.infer(model, body)
            self.check(is_v2_error(r, 400), "%s: 400 {\"error\"}: %d %s" % (what, r.status_code,
                                                                          r.text[:200]))
        # Triton refuses an output asked for twice; the message names it
        r = cl.infer(vname, cl.infer_body("INPUT", [1, 1, dim], "FP32", good,
                                          outputs=["OUTPUT", "OUTPUT"]))
        self.check(is_v2_error(r, 400) and "'OUTPUT'" in r.json()["error"]
                   and "twice" in r.json()["error"],
                   "OUTPUT named twice: 400 naming it: %d %s" % (r.status_code, r.text[:200]))
        r = cl.infer(vname, cl.infer_body("INPUT", [1, 1, dim], "FP32", good), version="3")
        self.check(is_v2_error(r, 400), "infer on version 3: 400 {\"error\"}")
        r = cl.infer(vname, cl.infer_body("INPUT", [1, 1, dim], "FP32", good))
        self.eq(r.status_code, 200, "the server still answers after the errors")

    def test_client_headers(self):
        """What tritonclient.http sends: JSON with no Content-Type (geventhttpclient), or as
        application/octet-stream (the aio client); both are served. Refusals made by the HTTP
        layer on /v2 paths have the v2 error shape too."""
        cl = self.cl
        name, case = next((n, c) for n, c, _ in CASES if c["input"]["kind"] == "vectors")
        dim = case["input"]["dim"]
        body = json.dumps(cl.infer_body("INPUT", [1, 2, dim], "FP32", [0.25] * (2 * dim)))
        want = cl.post("v2/models/%s/infer" % name, json.loads(body))
        for what, headers in (("no Content-Type", {}),
                              ("application/octet-stream", {"Content-Type":
                                                            "application/octet-stream"})):
            r = cl.s.post(cl.base + "v2/models/%s/infer" % name, data=body.encode(),
                          headers=headers, timeout=60)
            self.eq((r.status_code, r.content), (200, want.content), "infer with %s" % what)
        self.check(is_v2_error(cl.get("v2/nosuch"), 404), "unknown /v2 path: 404 {\"error\": ...}")
        r = cl.s.delete(cl.base + "v2/health/live", timeout=60)
        self.check(is_v2_error(r, 405), "wrong method on a v2 route: 405 {\"error\": ...}")
        r = cl.s.post(cl.base + "v2/models/%s/infer" % name, data=b"{not json", timeout=60)
        self.check(is_v2_error(r, 400), "malformed JSON on a v2 route: 400 {\"error\": ...}")

    def test_text(self):
        d = self.d
        cl = self.cl
        st, _, meta = d.request("GET", "/v1/models/charlm")
        vocab = meta["vocab"]
        ids = {s: i for i, s in enumerate(vocab)}
        text = "The cat sat."
        r = cl.infer("charlm", cl.infer_body("INPUT", [1], "BYTES", [text], outputs=["OUTPUT"]))
        r2 = cl.infer("charlm", cl.infer_body("INPUT", [1, len(text)], "INT32",
                                              [ids[ch] for ch in text], outputs=["OUTPUT"]))
        self.check(r.status_code == 200 and r2.status_code == 200 and
                   output(r)[1]["data"] == output(r2)[1]["data"] and
                   output(r)[1]["shape"] == [1, len(text), len(vocab)],
                   "BYTES text equals the same text as ids, shape [1, T, vocab]")
        r = cl.infer("charlm", cl.infer_body("INPUT", [2], "BYTES", ["ab", "abc"]))
        self.check(is_v2_error(r, 400), "BYTES texts of different token counts: 400")

        prompt, n = "It was a dark and ", 40
        want = greedy_by_steps(cl, vocab, prompt, n)
        self.check(want is not None and len(want) == n, "greedy reference computed by stepping")
        r = cl.post("v2/models/charlm/generate",
                    {"text_input": prompt, "parameters": {"max_tokens": n, "temperature": 0}})
        g = r.json()
        self.check(r.status_code == 200 and g.get("model_name") == "charlm" and
                   isinstance(g.get("model_version"), str) and g.get("text_output") == want,
                   "generate (greedy) gives the argmax text computed by stepping: %r vs %r"
                   % (g.get("text_output"), want))
        r = cl.post("v2/models/charlm/versions/1/generate",
                    {"text_input": prompt, "max_tokens": n, "temperature": 0})
        self.check(r.status_code == 200 and r.json().get("text_output") == want,
                   "sampling fields at the top level, by version: same text")

        sampled = {"max_tokens": 60, "temperature": 0.9, "top_k": 20, "seed": 12345}
        r = cl.post("v2/models/charlm/generate", {"text_input": prompt, "parameters": sampled})
        st, _, v1 = d.request("POST", "/v1/models/charlm/generate", dict(sampled, prompt=prompt))
        self.check(r.status_code == 200 and st == 200 and r.json()["text_output"] == v1["text"],
                   "a seeded sampled generate equals v1 generate with the same seed")
        seeded = r.json()["text_output"] if r.status_code == 200 else None

        r = cl.post("v2/models/charlm/generate_stream",
                    {"text_input": prompt, "parameters": sampled}, stream=True)
        ctype = r.headers.get("Content-Type", "")
        events = sse_events(r) if r.status_code == 200 else []
        self.check(r.status_code == 200 and ctype.startswith("text/event-stream"),
                   "generate_stream: 200 text/event-stream (%d %s)" % (r.status_code, ctype))
        self.check(len(events) >= sampled["max_tokens"] and
                   all(e.get("model_name") == "charlm" and isinstance(e.get("text_output"), str)
                       for e in events),
                   "generate_stream: one {model_name, text_output} event per token (%d events)"
                   % len(events))
        self.check("".join(e.get("text_output", "") for e in events) == seeded,
                   "generate_stream: the events' text_output joined is the generate text")

        tok = next(n for n, c, _ in CASES if c["input"]["kind"] == "tokens")
        for what, model, body in [
                ("a model without a tokenizer", tok, {"text_input": "abc"}),
                ("no text_input", "charlm", {"parameters": {"max_tokens": 3}}),
                ("max_tokens 0", "charlm", {"text_input": "abc", "parameters": {"max_tokens": 0}}),
                ("unknown model", "nosuchmodel", {"text_input": "abc"})]:
            for ep in ("generate", "generate_stream"):
                r = cl.post("v2/models/%s/%s" % (model, ep), body)
                self.check(is_v2_error(r, 400), "%s %s: 400 {\"error\"}: %d %s"
                           % (ep, what, r.status_code, r.text[:200]))


class HttpLayer(Case):
    """The HTTP layer's answers on /v2: tight limits, and a drain at SIGTERM."""

    @classmethod
    def setUpClass(cls):
        cls.name = "charlm"
        cls.d = Daemon({"charlm": CHARLM}, "--max-body-bytes", "1K", "--shutdown-timeout-s", 5)
        cls.addClassCleanup(cls.d.kill)     # the test stops it itself (the drain)

    def test_http_layer(self):
        """The refusals the HTTP layer makes on /v2 paths are in the v2 form too, and no
        Content-Type is refused there (docs/v2.md, Errors): text/plain is served on /v2 and
        refused with v1's 415 on /v1; a body over max_body_bytes is 413 {"error": "..."}; while
        shutting down /v2 requests get 503 {"error": "..."} with Retry-After, and
        /v2/health/live stays 200 (liveness, like /healthz)."""
        d = self.d
        name = self.name
        cl = V2Client(d.port)
        body = json.dumps(cl.infer_body("INPUT", [1, 2], "INT32", [3, 4])).encode()
        want = cl.post("v2/models/%s/infer" % name, json.loads(body))
        r = cl.s.post(cl.base + "v2/models/%s/infer" % name, data=body,
                      headers={"Content-Type": "text/plain"}, timeout=60)
        self.eq((r.status_code, r.content), (200, want.content),
                "v2 infer sent as text/plain: served")
        st, _, v1 = d.request("POST", "/v1/models/%s/infer" % name, raw=b'{"inputs": [[3, 4]]}',
                              headers={"Content-Type": "text/plain"})
        self.error((st, {}, v1), 415, "unsupported_media_type", "v1 infer sent as text/plain: 415")

        # the headers alone announce the size, so nothing is left unread when the daemon closes
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        s.sendall(b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n"
                  b"\r\n" % name.encode())
        st, _, raw = read_reply(s)
        s.close()
        self.check(v2_error_body(st, raw, 413),
                   "v2 body over max_body_bytes: 413 {\"error\": ...} (%d %r)" % (st, raw))

        # shutting down: connections opened before stay, a request in flight finishes
        keep, live = d.conn(), d.conn()
        self.eq(d.request("GET", "/v2/health/ready", conn=keep)[0], 200, "ready before the drain")
        self.eq(d.request("GET", "/v2/health/live", conn=live)[0], 200, "live before the drain")
        half = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        half.sendall(b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                     b"\r\n" % (name.encode(), len(body)) + body[:5])
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        st, hdrs, j = d.request("GET", "/v2/models/%s" % name, conn=keep)
        self.check(st == 503 and isinstance(j, dict) and list(j) == ["error"]
                   and isinstance(j["error"], str) and "retry-after" in hdrs,
                   "v2 request while shutting down: 503 {\"error\": ...} with Retry-After (%d %r)"
                   % (st, j))
        self.eq(d.request("GET", "/v2/health/live", conn=live)[0], 200,
                "/v2/health/live while shutting down: still 200")
        keep.close()
        live.close()
        half.sendall(body[5:])
        st, _, raw = read_reply(half)
        half.close()
        self.eq((st, raw), (200, want.content),
                "the request in flight when the drain began finishes")
        self.eq(d.proc.wait(20), 0, "exit status after the drain")


class Capacity(Case):
    """Sequences and max_sessions 2."""

    @classmethod
    def setUpClass(cls):
        cls.name, cls.case = next((n, c) for n, c, _ in CASES
                                  if c["stateful"] and len(c["sequences"][0]) > 1)
        cls.d = cls.serve({cls.name: golden_model(cls.name, WORK)}, "--max-sessions", 2)
        cls.cl = V2Client(cls.d.port)

    def setUp(self):
        rng.seed(20261123)

    def test_capacity(self):
        """With max_sessions 2: a third sequence is refused with 503; a sequence whose session is
        deleted (here through v1) is unknown from then on, and its entry no longer takes room."""
        d = self.d
        cl = self.cl
        name = self.name
        case = self.case
        seq = case["sequences"][0]
        ref = v1_session_steps(d, name, seq[:1])
        for seq_id in (1, "b"):
            r = seq_request(cl, name, case, seq_id, seq[:1], True, False)
            self.check(r.status_code == 200 and output(r)[1]["data"] == ref[0],
                       "capacity: sequence %r started" % (seq_id,))
        r = seq_request(cl, name, case, "c", seq[:1], True, False)
        self.check(is_v2_error(r, 503) and r.headers.get("Retry-After"),
                   "capacity: a third sequence over max_sessions 2: 503 with Retry-After (%d %s)"
                   % (r.status_code, r.text))
        st, _, listed = d.request("GET", "/v1/sessions")
        self.check(st == 200 and len(listed["sessions"]) == 2,
                   "capacity: the sequences are v1 sessions")
        st, _, _ = d.request("DELETE", "/v1/sessions/%s" % listed["sessions"][0]["id"])
        self.eq(st, 204, "capacity: one sequence's session deleted through v1")
        answers = [seq_request(cl, name, case, seq_id, seq[1:2], False, False)
                   for seq_id in (1, "b")]
        self.check(sorted(a.status_code for a in answers) == [200, 400] and
                   any(is_v2_error(a, 400) and "START" in a.json()["error"] for a in answers),
                   "capacity: the sequence whose session went is unknown, the other goes on")
        r = seq_request(cl, name, case, "c", seq[:1], True, True)
        self.check(r.status_code == 200 and output(r)[1]["data"] == ref[0],
                   "capacity: a new sequence fits in the room the deleted one left")


if __name__ == "__main__":
    unittest.main()
