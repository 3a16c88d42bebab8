# The rnnd command line: `rnnd inspect` (text and --json) on a converted golden model, checked
# against an independent reading of the file; `--help`; `rnnd infer` from a file and stdin;
# and the error exits (missing file, malformed model, bad JSON, wrong dimensions, unknown
# fields, usage errors), each with its exit status and error JSON on stderr.
# Run by `make check` (POSIX sh; needs RNND_BIN, PYTHON3, PYTHONPATH, RNND_GOLDEN_DIR and
# RNND_TEST_TMP from the test environment).

set -u
: "${RNND_BIN:?}" "${PYTHON3:?}" "${RNND_GOLDEN_DIR:?}" "${RNND_TEST_TMP:?}"

T="$RNND_TEST_TMP/cli.$$"
mkdir -p "$T" || exit 1
trap 'rm -rf "$T"' EXIT
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

ok() {
    echo "ok: $*"
}

# run NAME EXPECTED_STATUS CMD... : runs CMD with stdout in $T/out, stderr in $T/err.
run() {
    name=$1
    want=$2
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    got=$?
    if [ "$got" -ne "$want" ]; then
        fail "$name: exit status $got, expected $want; stderr: $(head -c 400 "$T/err")"
        return 1
    fi
    return 0
}

# py NAME SCRIPT [ARGS]: a Python check that exits non-zero (printing why) on failure.
py() {
    name=$1
    shift
    if msg=$("$PYTHON3" -c "$@" 2>&1); then
        ok "$name${msg:+: $msg}"
    else
        fail "$name: $msg"
    fi
}

# error_is NAME CODE SUBSTRING: stderr is exactly one error JSON with CODE and a message
# containing SUBSTRING; stdout is empty.
error_is() {
    [ -s "$T/out" ] && fail "$1: unexpected stdout: $(head -c 200 "$T/out")"
    py "$1" '
import json, sys
text = open(sys.argv[1]).read()
e = json.loads(text)["error"]
assert set(e) == {"code", "message"}, e
assert e["code"] == sys.argv[2], "code %r, want %r (%s)" % (e["code"], sys.argv[2], e["message"])
assert sys.argv[3] in e["message"], "message %r lacks %r" % (e["message"], sys.argv[3])
assert text.count("\n") == 1 and text.endswith("\n"), "not one line"
print(e["message"])
' "$T/err" "$2" "$3"
}

# ---- a golden model, converted ---------------------------------------------------------------
CASE="$RNND_GOLDEN_DIR/lstm2_tokens_head"        # embedding(30) + lstm 2x16 + linear(30)
BIDIR="$RNND_GOLDEN_DIR/lstm_bidir_vectors"      # lstm 1-layer bidirectional I=4 H=6
M="$T/lstm2.rnnd"
MB="$T/bidir.rnnd"
for pair in "$CASE:$M" "$BIDIR:$MB"; do
    src=${pair%%:*}
    dst=${pair#*:}
    if ! "$PYTHON3" -m rnnd_convert "$src/model.onnx" -o "$dst" >"$T/conv" 2>&1; then
        fail "converting $src: $(cat "$T/conv")"
        echo "$failures failure(s)"
        exit 1
    fi
done
ok "converted $CASE and $BIDIR"

# ---- inspect ---------------------------------------------------------------------------------
if run "inspect text" 0 "$RNND_BIN" inspect "$M"; then
    for field in "input:" "tokens" "vocab_size 30" "embedding_dim 8" "layers:" "layer 0:" \
                 "layer 1:" "lstm forward" "hidden 16" "in 8" "out 16" "activations:" \
                 "Sigmoid, Tanh, Tanh" "options:" "forget_gate=yes" "head:" "16 -> 30" \
                 "parameters:" "output dim:  30" "state:       64 floats (256 bytes)" \
                 "stateful:    yes" "digest:" "file digest:"; do
        grep -qF -- "$field" "$T/out" || fail "inspect text lacks \"$field\""
    done
    ok "inspect text has every field"
fi

# The JSON version, checked against a second reading of the file: the parameter count is the
# sum of the tensor sizes in the safetensors header, the file digest is SHA-256 of the bytes, and
# the sizes follow docs/model-format.md for this architecture.
if run "inspect --json" 0 "$RNND_BIN" inspect --json "$M"; then
    py "inspect --json lstm2" '
import hashlib, json, struct, sys
info = json.load(open(sys.argv[1]))
raw = open(sys.argv[2], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
params = 0
for k, v in header.items():
    if k != "__metadata__":
        size = 1
        for d in v["shape"]:
            size *= d
        params += size
assert info["parameters"] == params, (info["parameters"], params)
assert info["file_digest"] == hashlib.sha256(raw).hexdigest()
assert len(info["digest"]) == 64 and info["digest"] != info["file_digest"]
assert info["input"] == {"kind": "tokens", "vocab_size": 30, "embedding_dim": 8}, info["input"]
assert [l["type"] for l in info["layers"]] == ["lstm", "lstm"]
assert [l["hidden_size"] for l in info["layers"]] == [16, 16]
assert [l["in_dim"] for l in info["layers"]] == [8, 16]
assert all(l["direction"] == "forward" and l["gates"] == 4 for l in info["layers"])
assert info["layers"][0]["activations"] == [[{"op": "Sigmoid"}, {"op": "Tanh"}, {"op": "Tanh"}]]
assert info["head"] == {"in_dim": 16, "out_dim": 30, "norm": "none"}, info["head"]
# lstm state: h [16] and c [16] per layer and direction
assert info["state_floats"] == 2 * (16 + 16) and info["state_bytes"] == 4 * 64
assert info["output_dim"] == 30 and info["stateful"] is True
print("%d parameters" % params)
' "$T/out" "$M"
fi
if run "inspect --json bidir" 0 "$RNND_BIN" inspect --json "$MB"; then
    py "inspect --json bidir" '
import json, sys
info = json.load(open(sys.argv[1]))
l = info["layers"][0]
assert l["direction"] == "bidirectional" and l["num_directions"] == 2, l
assert info["state_floats"] == 2 * (6 + 6), info["state_floats"]
assert info["output_dim"] == 12 and info["stateful"] is False and info["head"] is None
' "$T/out"
fi

if run "inspect --help" 0 "$RNND_BIN" inspect --help; then
    grep -q -- "--json" "$T/out" && ok "inspect --help" ||
        fail "inspect --help does not document --json"
fi

run "inspect missing file" 1 "$RNND_BIN" inspect "$T/nope.rnnd" &&
    if [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "$T/nope.rnnd" "$T/err"; then
        ok "inspect missing file: $(cat "$T/err")"
    else
        fail "inspect missing file: stderr $(cat "$T/err")"
    fi
printf 'this is not a model file at all' >"$T/bad.rnnd"
run "inspect malformed file" 1 "$RNND_BIN" inspect "$T/bad.rnnd" &&
    if [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "bad.rnnd" "$T/err"; then
        ok "inspect malformed file: $(cat "$T/err")"
    else
        fail "inspect malformed file: stderr $(cat "$T/err")"
    fi
run "inspect without FILE" 2 "$RNND_BIN" inspect && ok "inspect without FILE: usage, exit 2"

# ---- infer: success --------------------------------------------------------------------------
printf '{"inputs": [[1, 2, 3], [4]], "return_state": true}' >"$T/req.json"
if run "infer --input" 0 "$RNND_BIN" infer --model "$M" --input "$T/req.json"; then
    cp "$T/out" "$T/resp1"
    py "infer --input" '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["model"] == "lstm2", r["model"]
assert [len(s) for s in r["outputs"]] == [3, 1]
assert all(len(step) == 30 for s in r["outputs"] for step in s)
assert len(r["states"]) == 2
for st in r["states"]:
    assert len(st["layers"]) == 2
    for layer in st["layers"]:
        assert sorted(layer) == ["c", "h"] and [len(x) for x in layer["h"]] == [16]
' "$T/out"
fi
if run "infer stdin" 0 "$RNND_BIN" infer --model "$M" <"$T/req.json"; then
    cmp -s "$T/out" "$T/resp1" && ok "infer from stdin equals --input" ||
        fail "infer from stdin differs from --input"
fi
if run "infer --help" 0 "$RNND_BIN" infer --help; then
    grep -q -- "--model" "$T/out" && grep -q -- "--input" "$T/out" &&
        grep -q RNND_ISA "$T/out" && ok "infer --help" ||
        fail "infer --help does not document --model, --input, RNND_ISA"
fi

# ---- infer: errors ---------------------------------------------------------------------------
run "infer missing model" 1 "$RNND_BIN" infer --model "$T/nope.rnnd" --input "$T/req.json" &&
    error_is "infer missing model" model_error "nope.rnnd"
run "infer malformed model" 1 "$RNND_BIN" infer --model "$T/bad.rnnd" --input "$T/req.json" &&
    error_is "infer malformed model" model_error "bad.rnnd"
# a real model file cut short
head -c 1000 "$M" >"$T/short.rnnd"
run "infer truncated model" 1 "$RNND_BIN" infer --model "$T/short.rnnd" --input "$T/req.json" &&
    error_is "infer truncated model" model_error "short.rnnd"
run "infer missing input" 1 "$RNND_BIN" infer --model "$M" --input "$T/none.json" &&
    error_is "infer missing input" not_found "none.json"

printf '{"inputs": [[1, 2,\n  3]' >"$T/badjson.json"
run "infer bad JSON" 1 "$RNND_BIN" infer --model "$M" --input "$T/badjson.json" &&
    error_is "infer bad JSON" invalid_json "line 2"
printf '{"inputs": [[1]], "inputs": [[2]]}' >"$T/dup.json"
run "infer duplicate key" 1 "$RNND_BIN" infer --model "$M" --input "$T/dup.json" &&
    error_is "infer duplicate key" invalid_json "duplicate"
run "infer empty input" 1 "$RNND_BIN" infer --model "$M" --input /dev/null &&
    error_is "infer empty input" invalid_json "line"

echo '{"inputs": [[[1, 2, 3, 4], [1, 2, 3]]]}' >"$T/dims.json"
run "infer wrong dims" 1 "$RNND_BIN" infer --model "$MB" --input "$T/dims.json" &&
    error_is "infer wrong dims" invalid_request "inputs[0][1]: expected a list of 4 numbers, got 3"
echo '{"inputs": [[1, 2, 30]]}' >"$T/tok.json"
run "infer token range" 1 "$RNND_BIN" infer --model "$M" --input "$T/tok.json" &&
    error_is "infer token range" invalid_request "inputs[0][2]: token id 30 out of range [0, 30)"
echo '{"inputs": [[1]], "batch": 3}' >"$T/unk.json"
run "infer unknown field" 1 "$RNND_BIN" infer --model "$M" --input "$T/unk.json" &&
    error_is "infer unknown field" invalid_request "unknown field \"batch\""
echo '{"inputs": [[1]], "initial_state": [{"layers": [{"h": [[0]]}]}]}' >"$T/st.json"
run "infer bad state" 1 "$RNND_BIN" infer --model "$M" --input "$T/st.json" &&
    error_is "infer bad state" invalid_request "initial_state[0].layers: expected 2 layers, got 1"
run "infer unknown ISA" 1 env RNND_ISA=mmx "$RNND_BIN" infer --model "$M" \
    --input "$T/req.json" && error_is "infer unknown ISA" unsupported "RNND_ISA=mmx"

run "infer without --model" 2 "$RNND_BIN" infer --input "$T/req.json" &&
    ok "infer without --model: usage, exit 2"
run "infer unknown option" 2 "$RNND_BIN" infer --model "$M" --frobnicate &&
    ok "infer unknown option: usage, exit 2"

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all CLI checks passed"
exit 0
