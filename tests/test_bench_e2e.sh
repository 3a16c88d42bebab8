#!/bin/sh
# Smoke test of bench/e2e: `bench/e2e --quick` runs every part end to end (the daemon under
# wrk, the Python baseline, rnnd bench, streamed generation, the memory fill) and its JSON
# summary has every field, with counts that add up. Times nothing: the figures of a --quick
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
check(set(t) == {"e2e_vs_bench", "e2e_vs_baseline", "memory"}, "all three targets reported")
check(abs(t["e2e_vs_bench"]["ratio"] - s["rnnd"]["steps_per_s"] / b["steps_per_s"]) < 0.01,
      "e2e/bench ratio")
print("%d failures" % len(fails))
sys.exit(1 if fails else 0)
EOF
