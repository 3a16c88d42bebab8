#!/bin/sh
# Smoke test of bench/e2e: `bench/e2e --quick` runs every part end to end (the daemon under
# wrk over HTTP and under bench/ws_load over WebSocket JSON and binary frames, the Python
# baseline, rnnd bench, streamed generation, the memory fill) and its JSON summary has every
# field, with counts that add up. Times nothing: the figures of a --quick
# run on a shared machine are not checked against any target.
set -eu
: "${PYTHON3:?}" "${RNND_BIN:?}" "${RNND_SRCDIR:?}" "${RNND_TEST_TMP:?}"
work="$RNND_TEST_TMP/bench-e2e"
mkdir -p "$work"
out="$work/summary.json"
rm -f "$out"

"$PYTHON3" "$RNND_SRCDIR/bench/e2e" --quick --rnnd "$RNND_BIN" --workdir "$work" \
    --json-out "$out" >/dev/null
echo "bench/e2e --quick exited 0"

"$PYTHON3" - "$out" <<'EOF'
import json, sys

s = json.load(open(sys.argv[1]))
fails = []

def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)

o = s["settings"]
check(s["errors"] == [], "no part reported an error: %r" % s["errors"])
for name in ("rnnd", "baseline"):
    r = s[name]
    check(r["requests"] > 0 and r["steps_per_s"] > 0, "%s: %d requests" % (name, r["requests"]))
    check(sum(r["errors"].values()) == 0, "%s: no failed requests" % name)
    check(0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], "%s: p50 <= p99 <= max" % name)
    check(abs(r["steps_per_s"] * r["seconds"] - r["requests"]) <= 1e-3 * r["requests"] + 1,
          "%s: steps/s x seconds = requests" % name)
tr = s["transports"]
check(set(tr) == {"http", "ws-json", "ws-binary"}, "all three transports: %s" % sorted(tr))
check(tr["http"] == s["rnnd"], "rnnd is the HTTP transport's result")
for name, r in tr.items():
    check(r["requests"] > 0 and sum(r["errors"].values()) == 0,
          "%s: %d requests, none failed" % (name, r["requests"]))
    check(0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], "%s: p50 <= p99 <= max" % name)
    check(abs(r["steps_per_s"] * r["seconds"] - r["requests"]) <= 1e-3 * r["requests"] + 1,
          "%s: steps/s x seconds = requests" % name)
    check(r["server_cpu_us_per_step"] > 0 and len(r["runs"]) == o["repeats"] == 1,
          "%s: server CPU per step, one run" % name)
# the binary frame: the 24-byte header and H float32
check(tr["ws-binary"]["frame_bytes"] == 24 + 4 * o["hidden"], "binary frame size")
check(tr["ws-json"]["frame_bytes"] == o["body_len"] + len('"op":"step",'), "JSON frame size")
check(s["baseline"]["max_abs_diff_vs_rnnd"] < 1e-4, "baseline computes the same model")
check(s["rnnd"]["state_bytes"] == 2 * 4 * o["hidden"], "1-layer LSTM state_bytes")
b = s["bench"]
check(b["cell"] == "lstm" and b["mode"] == "stream" and b["B"] == o["connections"]
      and b["H"] == b["I"] == o["hidden"] and b["steps_per_s"] > 0, "rnnd bench shape")
g = s["generate"]
check(g["tokens"] == o["streams"] * o["tokens"], "generation: %d tokens" % g["tokens"])
check(g["tokens_per_s"] > 0, "generation tokens/s")
m = s["memory"]
check(m["sessions"] == o["sessions"], "memory: %d sessions" % m["sessions"])
# fork mode (the default) steps one session per connection, then forks it
check(m["session_steps"] == (o["sessions"] if m["fill_mode"] == "step"
                             else m["fill_connections"]), "memory: session steps")
check(m["state_bytes"] == 2 * 2 * 4 * o["hidden"], "2-layer LSTM state_bytes")
check(m["state_total_bytes"] == m["sessions"] * m["state_bytes"], "state total")
# the written states must show in RSS, or the figure measures nothing
check(m["rss_growth_bytes"] > 0.5 * m["state_total_bytes"],
      "RSS grew by %d bytes for %d of state" % (m["rss_growth_bytes"], m["state_total_bytes"]))
t = s["targets"]
check(set(t) == {"e2e_vs_bench", "e2e_vs_baseline", "memory", "http_cpu", "ws_binary_cpu"},
      "all five targets reported")
k = b["kernel_us_per_step"]
check(k > 0 and b["cpu_s"] > 0, "the kernel's CPU per step: %.1f us" % k)
check(abs(t["ws_binary_cpu"]["over_kernel_us"]
          - (tr["ws-binary"]["server_cpu_us_per_step"] - k)) < 0.1, "ws-binary beyond the kernel")
check(t["http_cpu"]["us_per_step"] == tr["http"]["server_cpu_us_per_step"], "HTTP CPU target")
check(abs(t["e2e_vs_bench"]["ratio"] - s["rnnd"]["steps_per_s"] / b["steps_per_s"]) < 0.01,
      "e2e/bench ratio")
print("%d failures" % len(fails))
sys.exit(1 if fails else 0)
EOF
