"""Regenerate the JSON and HTTP seeds of tests/fuzz/corpus (infer, state, generate, http).

Usage: mkseeds.py CORPUS_DIR. The bodies follow docs/api.md, docs/v2.md and the HTTP tests;
the models they address are the harness models of fuzz_common.h (tok: 10 ids, char
tokenizer, GRU 6 + head; vec: dim 3, LSTM 4 + RNN 5; bidi: see fuzz_state.c).
"""
import json
import os
import sys

C = sys.argv[1]
def put(d, name, data):
    if isinstance(data, str): data = data.encode()
    with open(os.path.join(C, d, name), "wb") as f: f.write(data)
J = lambda o: json.dumps(o)
tok_state = {"layers": [{"h": [[0.1, -0.2, 0.3, 0, 1e-3, -0.0]]}]}
vec_state = {"layers": [{"h": [[0.5, -1, 0.25, 2]], "c": [[0, 0, 1, 0]]}, {"h": [[1, 2, 3, 4, 5]]}]}
bidi_state = {"layers": [{"h": [[0.5, -1], [1, 2]], "c": [[1, 2, 3], [4, 5, 6]]}, {"h": [[1e-38, 3.4e38, -7]]}]}
# infer
inf = {
 "tok_ids": {"inputs": [[5, 2, 0, 7], [3]], "outputs": "last"},
 "tok_text": {"inputs": ["ab c\u00e9", [1, 2], "xyz\u20ac\n"], "return_state": True},
 "tok_state": {"inputs": [[1, 2]], "initial_state": [tok_state], "return_state": True, "outputs": "all"},
 "vec": {"inputs": [[[0.5, -1, 0.25], [0, 0, 1]], [[1e30, -1e30, 3]]], "return_state": True},
 "vec_state": {"inputs": [[[0.5, -1, 0.25]], [[1, 2, 3]]], "initial_state": [vec_state, None]},
 "bad_unknown": {"inputs": [[1]], "batch": 2},
 "bad_types": {"inputs": [[1.5, True, None, "x"]], "outputs": "first", "return_state": "yes"},
 "limits": {"inputs": [[0] * 70] * 9},
}
for k, v in inf.items(): put("infer", k + ".json", J(v))
put("infer", "dup_key.json", '{"inputs": [[1]], "inputs": [[2]]}')
put("infer", "deep.json", "[" * 40 + "]" * 40)
put("infer", "escapes.json", '{"inputs": ["a\\u0000b", "\\ud800", [1e39, -0.0, 1E-50]]}')
# state
for k, v in {"tok": tok_state, "vec": vec_state, "bidi": bidi_state}.items(): put("state", k + ".json", J(v))
put("state", "extra.json", J({"layers": [{"h": [[1]], "c": [[1]], "x": 1}], "y": 2}))
put("state", "floats.json", "[1, 2.5, -3e38, 4]")
put("state", "subnormal.json", J({"layers": [{"h": [[1.4e-45, -1.17549435e-38, 3.40282347e38, 1e-46, 0.1, 2]]}]}))
# generate: params objects and texts
gen = {
 "full": {"prompt": "ab", "max_tokens": 5, "temperature": 0.8, "top_k": 3, "top_p": 0.9, "seed": 42, "stop": ["\n", "ab"], "stream": False},
 "stop_str": {"stop": "x", "temperature": 0, "seed": 18446744073709551615},
 "bad": {"max_tokens": 0, "top_p": 0, "top_k": -1, "temperature": -1, "stop": ["", "a" * 65, 1, "b", "c", "d"]},
 "limit": {"max_tokens": 101},
}
for k, v in gen.items(): put("generate", k + ".json", J(v))
put("generate", "text_utf8.txt", "ab c\u00e9\u20acxyz\n abab")
put("generate", "text_invalid.bin", b"ab\xc3(\xe2\x82\xf0\x9f\x98\x80\xed\xa0\x80\xff\xc0\xaf")
put("generate", "text_split.bin", "\u00e9\u20ac\U0001F600".encode() * 3)
# http
KI, KA = "fuzz-infer-key-0123456789", "fuzz-admin-key-0123456789"
def req(method, path, body=None, extra="", key=KI):
    b = J(body) if isinstance(body, (dict, list)) else (body or "")
    h = "%s %s HTTP/1.1\r\nHost: localhost\r\n" % (method, path)
    if key:
        h += "Authorization: Bearer %s\r\n" % key
    if body is not None:
        h += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(b.encode())
    return h + extra + "Connection: close\r\n\r\n" + b
T, V = "SID_TOK_" + "_" * 24, "SID_VEC_" + "_" * 24
assert len(T) == 32
v2in = lambda shape, dt, data, **kw: dict({"inputs": [{"name": "INPUT", "shape": shape, "datatype": dt, "data": data}], "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": False}}]}, **kw)
H = {
 "healthz": req("GET", "/healthz", key=None), "readyz": req("HEAD", "/readyz"), "metrics": req("GET", "/metrics", key=KA), "metrics_401": req("GET", "/metrics"),
 "no_key": req("POST", "/v1/models/vec/infer", inf["vec"], key=None),
 "bad_key": req("GET", "/v1/sessions", key="fuzz-infer-key-0123456780"),
 "admin_sessions": req("GET", "/v1/sessions/" + T, key=KA),
 "models": req("GET", "/v1/models"), "model": req("GET", "/v1/models/tok"), "model_404": req("GET", "/v1/models/nope"),
 "infer_tok": req("POST", "/v1/models/tok/infer", inf["tok_text"]),
 "infer_vec": req("POST", "/v1/models/vec/infer", inf["vec_state"]),
 "infer_badjson": req("POST", "/v1/models/vec/infer", "{\"inputs\": [[1,"),
 "model_generate": req("POST", "/v1/models/tok/generate", {"prompt": "ab", "max_tokens": 4, "seed": 1, "stop": "c"}),
 "model_generate_sse": req("POST", "/v1/models/tok/generate", {"prompt": [1, 2], "max_tokens": 3, "stream": True}),
 "sessions_create": req("POST", "/v1/sessions", {"model": "vec", "ttl_s": 30, "state": vec_state}),
 "sessions_create_gen": req("POST", "/v1/sessions", {"model": "tok", "generate": {"temperature": 0, "max_tokens": 2}}),
 "sessions_list": req("GET", "/v1/sessions?limit=2&model=tok&after=00000000000000000000000000000000"),
 "session_get": req("GET", "/v1/sessions/" + T),
 "session_delete": req("DELETE", "/v1/sessions/" + V),
 "session_step_tok": req("POST", "/v1/sessions/%s/step" % T, {"text": "abc", "top_k": 3, "logits": False, "outputs": "last"}),
 "session_step_vec": req("POST", "/v1/sessions/%s/step" % V, {"inputs": [[1, 2, 3], [0, 0, 0]], "if_steps": 0}),
 "session_reset": req("POST", "/v1/sessions/%s/reset" % V, {"state": vec_state, "if_steps": 0}),
 "session_fork": req("POST", "/v1/sessions/%s/fork" % T, {"ttl_s": 5}),
 "session_generate": req("POST", "/v1/sessions/%s/generate" % T, {"prompt": "a", "max_tokens": 3, "temperature": 0.5, "top_p": 0.5, "seed": 3}),
 "session_state_get": req("GET", "/v1/sessions/%s/state" % V),
 "session_state_put": req("PUT", "/v1/sessions/%s/state" % T, {"digest": "0" * 64, "state": tok_state, "steps": 3}),
 "v2": req("GET", "/v2"), "v2_live": req("GET", "/v2/health/live"), "v2_ready": req("GET", "/v2/health/ready"),
 "v2_meta": req("GET", "/v2/models/vec"), "v2_meta_ver": req("GET", "/v2/models/tok/versions/1"),
 "v2_model_ready": req("GET", "/v2/models/vec/versions/1/ready"),
 "v2_infer_vec": req("POST", "/v2/models/vec/infer", v2in([1, 2, 3], "FP32", [1, 2, 3, 4, 5, 6], id="r1")),
 "v2_infer_tok": req("POST", "/v2/models/tok/versions/1/infer", v2in([2, 2], "INT64", [1, 2, 3, 4])),
 "v2_infer_seq": req("POST", "/v2/models/vec/infer", v2in([1, 1, 3], "FP32", [1, 2, 3], parameters={"sequence_id": 7, "sequence_start": True, "sequence_end": False})),
 "v2_infer_seq_str": req("POST", "/v2/models/tok/infer", v2in([1, 2], "INT32", [1, 2], parameters={"sequence_id": "abc", "sequence_start": True, "sequence_end": True})),
 "v2_generate": req("POST", "/v2/models/tok/generate", {"text_input": "ab", "parameters": {"max_tokens": 3, "seed": 2}}),
 "v2_generate_stream": req("POST", "/v2/models/tok/versions/1/generate_stream", {"text_input": "c", "parameters": {"max_tokens": 2}}),
 "method_405": req("PATCH", "/v1/sessions"),
 "wrong_type": req("POST", "/v1/models/vec/infer", None, "Content-Type: text/plain\r\nContent-Length: 2\r\n") + "{}",
 "chunked": "POST /v1/models/vec/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KI + "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + "".join("%x\r\n%s\r\n" % (len(c), c) for c in ['{"inp', 'uts": [[[1, 2, 3]]]} ']) + "0\r\n\r\n",
 "too_big": "POST /v1/models/vec/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KI + "\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n{",
 "pipelined": req("GET", "/healthz").replace("Connection: close\r\n", "") + req("GET", "/v1/models"),
 "http10": "GET /readyz HTTP/1.0\r\n\r\n",
 "garbage": "\x00\xff GET / HTTP/9.9\r\n\r\n",
}
for k, v in H.items(): put("http", k + ".http", v)
