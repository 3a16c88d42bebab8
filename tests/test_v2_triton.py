"""What a Triton client asks of the KServe v2 face besides infer (docs/v2.md, issue 18 item 3):
the model configuration (`/v2/models/{m}/config`), the statistics extension
(`/v2/models[/{m}[/versions/{v}]]/stats`), the model repository index
(`POST /v2/repository/index`), metadata that lists the BYTES input of a text model and says
whether a model takes sequences, and a 400 for sequence fields given outside `parameters`
(a Triton client that puts them at the top level would otherwise run stateless unawares).
And (issue 18 item 2) Triton's binary tensor data extension on infer: binary requests and
replies carry bitwise the numbers of JSON ones; every bad size or header is a 400.

The expected sizes come from v1's `GET /v1/models/{m}` (a separate code path), the expected
counts from the requests this test makes; none are constants. Formats follow Triton's
documents: model_config.proto (as JSON), extension_statistics.md,
extension_model_repository.md.
"""
import json
import math
import os
import random
import struct
import unittest

from daemon_util import Case, golden_model, tmpdir

WORK = tmpdir("v2_triton")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
MODELS = ("lstm_vectors", "lstm_bidir_vectors", "gru2_tokens_head")
# settings the configuration must report back, not the defaults
MAX_SEQUENCES = 17
TTL_S = 123


def is_v2_error(status, body, want):
    return (status == want and isinstance(body, dict) and list(body) == ["error"]
            and isinstance(body["error"], str) and body["error"] != "")


class Triton(Case):
    """One daemon with a vector, a bidirectional, a token and a text model."""

    @classmethod
    def setUpClass(cls):
        models = {name: golden_model(name, WORK) for name in MODELS}
        models["charlm"] = CHARLM
        # a second daemon would be slower than a fresh model: the stats test uses its own
        models["statsmodel"] = golden_model("lstm_vectors", WORK)
        cls.d = cls.serve(models, "--max-sequences", MAX_SEQUENCES, "--session-ttl-s", TTL_S)
        st, _, body = cls.d.request("GET", "/v1/models")
        assert st == 200, (st, body)
        cls.v1 = {m["name"]: m for m in body["models"]}

    def get(self, path):
        return self.d.request("GET", path)

    def post(self, path, body=None, raw=None):
        return self.d.request("POST", path, body, raw=raw)

    # ---- V1: the model configuration --------------------------------------------------------

    def test_config(self):
        for name, m in sorted(self.v1.items()):
            for path in ("/v2/models/%s/config" % name, "/v2/models/%s/versions/1/config" % name):
                st, _, c = self.get(path)
                self.eq(st, 200, "GET " + path)
                if st != 200:
                    continue
                self.eq(c.get("name"), name, path + ": name")
                self.eq(c.get("backend"), "rnnd", path + ": backend")
                self.eq(c.get("platform"), "rnnd", path + ": platform (as the metadata says)")
                self.eq(c.get("max_batch_size"), MAX_SEQUENCES, path + ": max_batch_size")
                ins = {i.get("name"): i for i in c.get("input", [])}
                tokens = m["input_kind"] == "tokens"
                want_in = {"INPUT": ("TYPE_INT32", [-1]) if tokens
                           else ("TYPE_FP32", [-1, m["input_dim"]])}
                st2, _, full = self.get("/v1/models/%s" % name)
                if full.get("tokenizer"):
                    want_in["TEXT"] = ("TYPE_STRING", [1])
                self.eq({k: (v.get("data_type"), v.get("dims")) for k, v in ins.items()},
                        want_in, path + ": inputs, without the batch dimension")
                if "TEXT" in want_in:
                    self.check(all(i.get("optional") is True for i in ins.values()),
                               path + ": INPUT and TEXT are each optional (one is sent)")
                outs = c.get("output", [])
                self.eq([(o.get("name"), o.get("data_type"), o.get("dims")) for o in outs],
                        [("OUTPUT", "TYPE_FP32",
                          [-1, m["output_dim"]] if m["pool"] == "none" else [m["output_dim"]])],
                        path + ": output")
                sb = c.get("sequence_batching")
                if m["stateful"]:
                    self.check(isinstance(sb, dict), path + ": sequence_batching for a "
                               "stateful model: %r" % c)
                    self.eq((sb or {}).get("max_sequence_idle_microseconds"),
                            TTL_S * 1000000, path + ": idle limit is session_ttl_s")
                else:
                    self.check(sb is None, path + ": no sequence_batching for a model with "
                               "reverse layers: %r" % c)
        for path in ("/v2/models/nosuch/config", "/v2/models/lstm_vectors/versions/2/config"):
            st, _, body = self.get(path)
            self.check(is_v2_error(st, body, 400), "GET %s: 400 {\"error\"}: %d %r"
                       % (path, st, body))

    # ---- compressed bodies: refused with a message naming Content-Encoding --------------------

    def test_content_encoding_refused(self):
        """tritonclient can compress a request (gzip or deflate); rnnd does not decode them
        (docs/v2.md, Not supported): such a body gets 415 with a message naming its
        Content-Encoding, not a JSON parser's error about its first byte; identity is served."""
        import gzip
        import zlib
        body = {"inputs": [{"name": "INPUT", "shape": [1, 2], "datatype": "INT32",
                            "data": [3, 4]}]}
        raw = json.dumps(body).encode()
        st, _, want = self.post("/v2/models/charlm/infer", body)
        self.eq(st, 200, "the plain request")
        for enc, data in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw)),
                          ("GZIP", gzip.compress(raw)), ("br", raw)):
            for path in ("/v2/models/charlm/infer", "/v2/models/charlm/generate"):
                st, _, reply = self.d.request("POST", path, raw=data,
                                              headers={"Content-Encoding": enc})
                self.check(is_v2_error(st, reply, 415) and isinstance(reply, dict) and
                           "Content-Encoding %s is not supported" % enc in reply["error"],
                           "%s with Content-Encoding %s: 415 naming it: %d %r"
                           % (path, enc, st, reply))
        st, _, reply = self.d.request("POST", "/v1/models/charlm/infer",
                                      raw=gzip.compress(b'{"inputs": [[3, 4]]}'),
                                      headers={"Content-Encoding": "gzip"})
        self.check(st == 415 and reply["error"]["code"] == "unsupported_media_type" and
                   "Content-Encoding gzip" in reply["error"]["message"],
                   "v1 with Content-Encoding gzip: 415 naming it: %d %r" % (st, reply))
        st, _, got = self.d.request("POST", "/v2/models/charlm/infer", raw=raw,
                                    headers={"Content-Encoding": "identity"})
        self.eq((st, got), (200, want), "Content-Encoding identity: served")

    # ---- V2: a refused request leaves its sequence as it was ----------------------------------

    def test_refused_request_keeps_sequence(self):
        """A request refused before its steps run (here a token id out of range) changes
        nothing, its sequence flags included (docs/v2.md): sequence_end does not end the
        sequence and sequence_start does not restart it; the next request continues it, its
        outputs those of a sequence that never saw the refused requests."""
        name = "charlm"  # not gru2_tokens_head: test_stats wants it untouched
        vocab = self.v1[name]["vocab_size"]
        path = "/v2/models/%s/infer" % name

        def req(sid, ids, **flags):
            body = {"inputs": [{"name": "INPUT", "shape": [1, len(ids)], "datatype": "INT32",
                                "data": ids}],
                    "parameters": dict({"sequence_id": sid}, **flags)}
            return self.post(path, body)

        for sid in ("kept", "ref"):
            st, _, reply = req(sid, [1, 2], sequence_start=True)
            self.eq(st, 200, "%s: start: %r" % (sid, reply))
        for flags in ({"sequence_end": True}, {"sequence_start": True},
                      {"sequence_start": True, "sequence_end": True}):
            st, _, reply = req("kept", [1, vocab], **flags)
            self.eq(st, 400, "a token id out of range with %s: %r" % (flags, reply))
            self.check("token id %d out of range" % vocab in (reply or {}).get("error", ""),
                       "the refusal names the token id: %r" % (reply,))
        st, _, got = req("kept", [3], sequence_end=True)
        self.eq(st, 200, "the sequence goes on after the refusals: %r" % (got,))
        st, _, want = req("ref", [3], sequence_end=True)
        self.eq(st, 200, "the reference sequence: %r" % (want,))
        self.eq(got["outputs"][0]["data"], want["outputs"][0]["data"],
                "the refused requests changed nothing: outputs equal the reference's")
        st, _, reply = req("kept", [3])
        self.check(st == 400 and "START" in (reply or {}).get("error", ""),
                   "the sequence_end of a request that ran ended it: %d %r" % (st, reply))

    # ---- V2: sequence fields outside parameters ----------------------------------------------

    def test_sequence_fields_outside_parameters(self):
        tensor = {"name": "INPUT", "shape": [1, 2, 4], "datatype": "FP32",
                  "data": [0.5, -1, 0.25, 2, 0, 0, 1, 0]}
        for field, value in (("sequence_id", 77), ("sequence_id", "s-1"),
                             ("sequence_start", True), ("sequence_end", False)):
            body = {"inputs": [tensor], field: value}
            st, _, reply = self.post("/v2/models/lstm_vectors/infer", body)
            self.check(is_v2_error(st, reply, 400) and "parameters" in reply["error"]
                       and field in reply["error"],
                       "top-level %s: 400 saying it belongs in parameters: %d %r"
                       % (field, st, reply))
        # the same fields where the protocol puts them are accepted
        body = {"inputs": [tensor],
                "parameters": {"sequence_id": 77, "sequence_start": True, "sequence_end": True}}
        st, _, reply = self.post("/v2/models/lstm_vectors/infer", body)
        self.eq(st, 200, "sequence fields inside parameters: %r" % (reply,))

    # ---- V3: metadata -----------------------------------------------------------------------

    def test_metadata(self):
        for name, m in sorted(self.v1.items()):
            st, _, meta = self.get("/v2/models/%s" % name)
            self.eq(st, 200, "GET /v2/models/%s" % name)
            _, _, full = self.get("/v1/models/%s" % name)
            ins = {i["name"]: (i["datatype"], i["shape"]) for i in meta.get("inputs", [])}
            if full.get("tokenizer"):
                self.eq(ins.get("TEXT"), ("BYTES", [-1]),
                        "%s: the metadata lists the BYTES input of a text model" % name)
            else:
                self.check("TEXT" not in ins, "%s: no BYTES input without a tokenizer" % name)
            self.eq(meta.get("parameters", {}).get("sequence"), m["stateful"],
                    "%s: metadata says whether the model takes sequences" % name)

    def test_text_input_named_in_metadata(self):
        """A client that sends the BYTES input under the name the metadata lists gets what
        the same text under INPUT gives, bitwise."""
        outs = []
        for iname in ("TEXT", "INPUT"):
            body = {"inputs": [{"name": iname, "shape": [2], "datatype": "BYTES",
                                "data": ["It was", "A dark"]}]}
            st, _, reply = self.post("/v2/models/charlm/infer", body)
            self.eq(st, 200, "BYTES under %s: %r" % (iname, reply))
            outs.append(reply.get("outputs") if isinstance(reply, dict) else None)
        self.check(outs[0] is not None and outs[0] == outs[1],
                   "TEXT and INPUT give the same output")
        body = {"inputs": [{"name": "TEXT", "shape": [1, 2], "datatype": "INT32",
                            "data": [3, 4]}]}
        st, _, reply = self.post("/v2/models/charlm/infer", body)
        self.check(is_v2_error(st, reply, 400) and "TEXT" in reply["error"],
                   "TEXT takes only BYTES: %d %r" % (st, reply))
        body = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES",
                            "data": ["abc"]}]}
        st, _, reply = self.post("/v2/models/gru2_tokens_head/infer", body)
        self.check(is_v2_error(st, reply, 400), "TEXT on a model without a tokenizer: %d %r"
                   % (st, reply))

    def test_server_extensions(self):
        st, _, meta = self.get("/v2")
        for ext in ("statistics", "model_repository", "model_configuration",
                    "binary_tensor_data"):
            self.check(ext in meta.get("extensions", []), "GET /v2 lists %s" % ext)

    # ---- V4: statistics ---------------------------------------------------------------------

    def stats(self, path):
        st, _, body = self.get(path)
        self.eq(st, 200, "GET " + path)
        return body.get("model_stats", []) if isinstance(body, dict) else []

    def test_stats(self):
        name = "statsmodel"
        before = self.stats("/v2/models/%s/stats" % name)
        self.eq([s.get("name") for s in before], [name], "stats of one model")
        self.eq(before[0].get("version"), "1", "its version")
        for k in ("inference_count", "execution_count", "last_inference"):
            self.check(isinstance(before[0].get(k), int), "%s is a number" % k)
        stats = before[0].get("inference_stats", {})
        for k in ("success", "fail", "queue", "compute_input", "compute_infer",
                  "compute_output"):
            v = stats.get(k, {})
            self.check(isinstance(v.get("count"), int) and isinstance(v.get("ns"), int),
                       "inference_stats.%s is {count, ns}: %r" % (k, v))
        base = before[0].get("inference_count", 0)

        # three stateless requests of 2 sequences, one sequence of 3 steps in 2 requests
        tensor = {"name": "INPUT", "shape": [2, 3, 4], "datatype": "FP32",
                  "data": [0.125 * i for i in range(24)]}
        for _ in range(3):
            st, _, reply = self.post("/v2/models/%s/infer" % name, {"inputs": [tensor]})
            self.eq(st, 200, "stateless infer: %r" % (reply,))
        for k, steps in enumerate((2, 1)):
            body = {"inputs": [{"name": "INPUT", "shape": [1, steps, 4], "datatype": "FP32",
                                "data": [0.5] * (4 * steps)}],
                    "parameters": {"sequence_id": "stats", "sequence_start": k == 0,
                                   "sequence_end": k == 1}}
            st, _, reply = self.post("/v2/models/%s/infer" % name, body)
            self.eq(st, 200, "sequence request: %r" % (reply,))
        after = self.stats("/v2/models/%s/versions/1/stats" % name)
        a = after[0] if after else {}
        self.eq(a.get("inference_count", 0) - base, 3 + 3,
                "inference_count: 3 infer requests and 3 session steps more")
        self.eq(a.get("inference_stats", {}).get("success", {}).get("count", 0) - base, 6,
                "success.count follows inference_count")
        execs = a.get("execution_count", 0) - before[0].get("execution_count", 0)
        self.check(2 <= execs <= 6, "execution_count: between 2 and 6 more, got %d" % execs)
        batch = a.get("batch_stats", [])
        self.check(all(isinstance(b.get("batch_size"), int) and
                       isinstance(b.get("compute_infer", {}).get("count"), int)
                       for b in batch) and batch,
                   "batch_stats: {batch_size, compute_infer {count, ns}}: %r" % batch)
        # other models are not touched
        other = self.stats("/v2/models/gru2_tokens_head/stats")
        self.eq(other[0].get("inference_count") if other else None, 0,
                "a model without requests has inference_count 0")

        every = self.stats("/v2/models/stats")
        self.eq(sorted(s.get("name") for s in every), sorted(self.v1),
                "GET /v2/models/stats: every loaded model")
        for path in ("/v2/models/nosuch/stats", "/v2/models/%s/versions/9/stats" % name):
            st, _, body = self.get(path)
            self.check(is_v2_error(st, body, 400), "GET %s: 400 {\"error\"}" % path)

    # ---- V5: the repository index -----------------------------------------------------------

    def test_repository_index(self):
        for body, raw in ((None, None), ({}, None), ({"ready": True}, None),
                          ({"ready": False}, None), (None, b"")):
            st, _, index = self.post("/v2/repository/index", body, raw=raw)
            self.eq(st, 200, "POST /v2/repository/index %r" % (body,))
            if st != 200:
                continue
            self.check(isinstance(index, list), "the index is a list: %r" % (index,))
            self.eq(sorted((m.get("name"), m.get("version"), m.get("state"), m.get("reason"))
                           for m in index),
                    sorted((n, str(m["version"]), "READY", "") for n, m in self.v1.items()),
                    "index: each loaded model READY")
        st, _, body = self.post("/v2/repository/index", {"ready": "yes"})
        self.check(is_v2_error(st, body, 400), "ready must be a boolean: %d %r" % (st, body))
        st, _, body = self.post("/v2/repository/index", raw=b"[1")
        self.check(is_v2_error(st, body, 400), "a body that is not JSON: %d %r" % (st, body))


# ---- V6: binary tensor data ------------------------------------------------------------------

HL = "Inference-Header-Content-Length"


def binary_request(header, blobs):
    """(body bytes, headers) of a request whose JSON HEADER is followed by BLOBS."""
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"Content-Type": "application/octet-stream", HL: str(len(head))}


def send_raw(d, path, body, headers):
    """(status, headers lower-cased, body bytes) of POST PATH with raw BODY."""
    c = d.conn()
    try:
        c.request("POST", path, body=body, headers=headers)
        resp = c.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        c.close()


def split_reply(hdrs, body):
    """(JSON header, binary tail) of a binary reply; (JSON, b"") of a JSON one."""
    n = int(hdrs.get(HL.lower(), len(body)))
    return json.loads(body[:n]), body[n:]


def f32_bytes(values):
    return struct.pack("<%df" % len(values), *values)


class Binary(Case):
    """Binary tensor data against JSON on the same daemon."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.serve({name: golden_model(name, WORK)
                           for name in ("lstm_vectors", "gru2_tokens_head")})

    def json_infer(self, model, tensor, params=None):
        body = {"inputs": [tensor], "outputs": [{"name": "OUTPUT"}]}
        if params:
            body["parameters"] = params
        st, _, reply = self.d.request("POST", "/v2/models/%s/infer" % model, body)
        self.eq(st, 200, "JSON infer on %s: %r" % (model, reply))
        return reply["outputs"][0]

    def bin_infer(self, model, tensor, blob, bin_out, params=None):
        t = dict(tensor)
        if blob is not None:
            t.pop("data")
            t["parameters"] = {"binary_data_size": len(blob)}
        header = {"inputs": [t], "outputs": [{"name": "OUTPUT",
                                              "parameters": {"binary_data": bin_out}}]}
        if params:
            header["parameters"] = params
        body, hdrs = binary_request(header, [blob] if blob is not None else [])
        st, rh, raw = send_raw(self.d, "/v2/models/%s/infer" % model, body, hdrs)
        self.eq(st, 200, "binary infer on %s: %r" % (model, raw[:300]))
        head, tail = split_reply(rh, raw)
        out = head["outputs"][0]
        if bin_out:
            self.eq(rh.get("content-type"), "application/octet-stream", "binary reply type")
            self.check("data" not in out, "a binary output has no data")
            self.eq(out.get("parameters", {}).get("binary_data_size"), len(tail),
                    "binary_data_size is the bytes after the JSON header")
        return out, tail

    def test_vectors_round_trip(self):
        rng = random.Random(18)
        B, T, D = 3, 5, 4
        vals = [struct.unpack("<f", struct.pack("<f", rng.uniform(-3, 3)))[0]
                for _ in range(B * T * D)]
        tensor = {"name": "INPUT", "shape": [B, T, D], "datatype": "FP32", "data": vals}
        want = self.json_infer("lstm_vectors", tensor)
        blob = f32_bytes(vals)
        for bin_in in (True, False):
            for bin_out in (True, False):
                out, tail = self.bin_infer("lstm_vectors", tensor, blob if bin_in else None,
                                           bin_out)
                what = "binary input %s, binary output %s" % (bin_in, bin_out)
                self.eq(out["shape"], want["shape"], what + ": shape")
                got = tail if bin_out else f32_bytes(out["data"])
                self.check(got == f32_bytes(want["data"]),
                           what + ": bitwise the numbers of JSON v2")

    def test_tokens_and_sequences(self):
        ids = [3, 0, 29, 7, 11, 5]
        tensor = {"name": "INPUT", "shape": [2, 3], "datatype": "INT32", "data": ids}
        want = self.json_infer("gru2_tokens_head", tensor)
        for dtype, fmt in (("INT32", "<%di"), ("INT64", "<%dq")):
            t = dict(tensor, datatype=dtype)
            _, tail = self.bin_infer("gru2_tokens_head", t, struct.pack(fmt % len(ids), *ids),
                                     True)
            self.check(tail == f32_bytes(want["data"]), "%s ids in binary: bitwise JSON's"
                       % dtype)
        # a sequence in two binary requests equals the same sequence in JSON
        vals = [0.25 * i - 1 for i in range(12)]
        outs = {}
        for mode in ("json", "binary"):
            sid = "seq-" + mode
            got = b""
            for k, (a, b) in enumerate(((0, 2), (2, 3))):
                chunk = vals[4 * a:4 * b]
                t = {"name": "INPUT", "shape": [1, b - a, 4], "datatype": "FP32", "data": chunk}
                params = {"sequence_id": sid, "sequence_start": k == 0, "sequence_end": k == 1}
                if mode == "json":
                    got += f32_bytes(self.json_infer("lstm_vectors", t, params)["data"])
                else:
                    got += self.bin_infer("lstm_vectors", t, f32_bytes(chunk), True, params)[1]
            outs[mode] = got
        self.check(outs["json"] == outs["binary"] and len(outs["json"]) == 3 * 8 * 4,
                   "a sequence in binary requests: bitwise the JSON sequence's outputs")

    def refused(self, what, body, headers, model="lstm_vectors"):
        st, _, raw = send_raw(self.d, "/v2/models/%s/infer" % model, body, headers)
        try:
            j = json.loads(raw)
        except ValueError:
            j = None
        self.check(is_v2_error(st, j, 400), "%s: 400 {\"error\"}: %d %r" % (what, st, raw[:200]))
        return (j or {}).get("error", "")

    def test_refusals(self):
        vals = [0.5] * 8
        blob = f32_bytes(vals)
        good = {"name": "INPUT", "shape": [1, 2, 4], "datatype": "FP32",
                "parameters": {"binary_data_size": len(blob)}}

        def req(tensor, blobs, outputs=None):
            h = {"inputs": [tensor]}
            if outputs is not None:
                h["outputs"] = outputs
            return binary_request(h, blobs)

        body, hdrs = req(good, [blob])
        for value in ("abc", "-5", "", "12x", "99999999999999999999999"):
            self.refused("%s: %r" % (HL, value), body, dict(hdrs, **{HL: value}))
        self.refused("%s past the body" % HL, body, dict(hdrs, **{HL: str(len(body) + 1)}))
        self.refused("%s of 0" % HL, body, dict(hdrs, **{HL: "0"}))
        self.refused("%s cutting the JSON short" % HL, body,
                     dict(hdrs, **{HL: str(int(hdrs[HL]) - 2)}))
        self.refused("binary_data_size above the bytes sent", *req(good, [blob[:-4]]))
        self.refused("binary_data_size below the bytes sent", *req(good, [blob + blob[:4]]))
        self.refused("shape and binary_data_size disagree",
                     *req(dict(good, shape=[1, 3, 4]), [blob]))
        self.refused("INT64 size for an FP32 shape",
                     *req(dict(good, parameters={"binary_data_size": 64}), [blob + blob]))
        self.refused("binary_data_size not an integer",
                     *req(dict(good, parameters={"binary_data_size": "32"}), [blob]))
        self.refused("both data and binary_data_size", *req(dict(good, data=vals), [blob]))
        h = json.dumps({"inputs": [good]}).encode()
        msg = self.refused("binary_data_size without the header", h + blob,
                           {"Content-Type": "application/json"})
        self.check(HL in msg and "binary" in msg,
                   "binary data without %s: the message names the header: %r" % (HL, msg))
        msg = self.refused("binary_data_size without the header nor the bytes", h,
                           {"Content-Type": "application/json"})
        self.check(HL in msg, "binary_data_size without %s nor bytes: the message names the "
                   "header: %r" % (HL, msg))
        plain = {"name": "INPUT", "shape": [1, 2, 4], "datatype": "FP32", "data": vals}
        self.refused("bytes after the JSON but no binary_data_size", *req(plain, [blob]))
        self.refused("a NaN in binary floats",
                     *req(good, [f32_bytes([0.5] * 7) + struct.pack("<f", math.nan)]))
        self.refused("binary_data not a boolean",
                     *req(good, [blob], [{"name": "OUTPUT", "parameters": {"binary_data": 1}}]))
        tok = {"name": "INPUT", "shape": [1, 2], "datatype": "INT32",
               "parameters": {"binary_data_size": 8}}
        self.refused("a token id out of range", *req(tok, [struct.pack("<2i", 3, 30)]),
                     model="gru2_tokens_head")
        self.refused("a negative token id", *req(tok, [struct.pack("<2i", -1, 3)]),
                     model="gru2_tokens_head")
        # the daemon is unharmed
        self.json_infer("lstm_vectors", plain)


if __name__ == "__main__":
    unittest.main()
