"""GET /metrics and the access log (issue 5, acceptance 4).

- Every line of /metrics parses under a strict reader of the Prometheus text exposition format
  0.0.4 written here from the format's documentation: HELP/TYPE comments before a family's
  samples, metric and label names, quoted label values with escapes, float values; no
  duplicate series; counters named *_total; histograms with cumulative buckets, an le="+Inf"
  bucket equal to _count, and _sum.
- Counters move exactly as the test drives traffic: requests by endpoint/method/status,
  latency histogram counts, session steps, sessions created/deleted, generated tokens,
  worker busy time; the gauges of models, build and queue depth are there.
- The access log has one line per request with the route pattern and never a session id;
  access_log = off silences it.
Each check is a unittest case; a failing case fails the run.
"""
import math
import os
import re
import unittest

from daemon_util import Case, Daemon

CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_value(text):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    return float(text)      # raises on anything else


def parse_labels(text, where):
    """'a="x",b="y\\"z"' -> dict; raises ValueError on bad syntax."""
    labels, i = {}, 0
    while i < len(text):
        eq = text.index("=", i)
        name = text[i:eq]
        if not LABEL.match(name) or name in labels:
            raise ValueError("%s: bad or repeated label name %r" % (where, name))
        if text[eq + 1] != '"':
            raise ValueError("%s: label value not quoted" % where)
        j, val = eq + 2, []
        while text[j] != '"':
            if text[j] == "\\":
                nxt = text[j + 1]
                if nxt not in '\\"n':
                    raise ValueError("%s: bad escape \\%s" % (where, nxt))
                val.append("\n" if nxt == "n" else nxt)
                j += 2
            else:
                val.append(text[j])
                j += 1
        labels[name] = "".join(val)
        i = j + 1
        if i < len(text):
            if text[i] != ",":
                raise ValueError("%s: expected ',' between labels" % where)
            i += 1
    return labels


def parse_exposition(text):
    """{family: {"type":..., "samples": [(name, labels, value)]}}; raises ValueError."""
    fams, current, seen = {}, None, set()
    if not text.endswith("\n"):
        raise ValueError("the exposition must end with a newline")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d" % n
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            if len(parts) < 4 or not NAME.match(parts[2]):
                raise ValueError("%s: bad comment %r" % (where, line))
            fam = fams.setdefault(parts[2], {"type": "untyped", "samples": [], "typed": False})
            if line.startswith("# TYPE "):
                if parts[3] not in TYPES or fam["typed"] or fam["samples"]:
                    raise ValueError("%s: bad or late TYPE %r" % (where, line))
                fam["type"], fam["typed"] = parts[3], True
            current = parts[2]
            continue
        if not line or line.startswith("#"):
            raise ValueError("%s: empty or unknown comment line %r" % (where, line))
        m = re.match(r"([^{ ]+)(\{(.*)\})? (\S+)$", line)
        if not m or not NAME.match(m.group(1)):
            raise ValueError("%s: bad sample %r" % (where, line))
        name, labels = m.group(1), parse_labels(m.group(3) or "", where)
        value = parse_value(m.group(4))
        base = current
        if base is None or not (name == base or (fams[base]["type"] == "histogram" and
                                                 name in (base + "_bucket", base + "_sum",
                                                          base + "_count"))):
            raise ValueError("%s: sample %s outside its family (%s)" % (where, name, base))
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ValueError("%s: duplicate series %r" % (where, key))
        seen.add(key)
        fams[base]["samples"].append((name, labels, value))
    return fams


def value(fams, name, **labels):
    base = name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[:-len(suffix)] in fams:
            base = name[:-len(suffix)]
    for n, lab, v in fams.get(base, {}).get("samples", []):
        if n == name and all(lab.get(k) == x for k, x in labels.items()):
            return v
    return 0.0


class Metrics(Case):
    """One daemon with charlm: /metrics before and after some traffic."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.serve({"charlm": CHARLM})

    def families_ok(self, fams):
        for fam, f in fams.items():
            self.check(fam.startswith("rnnd_"), "%s: the rnnd_ prefix" % fam)
            if f["type"] == "counter":
                self.check(fam.endswith("_total"), "counter %s ends in _total" % fam)
                self.check(all(v >= 0 for _, _, v in f["samples"]),
                           "counter %s is not negative" % fam)
            if f["type"] == "histogram":
                series = {}
                for name, labels, v in f["samples"]:
                    key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
                    series.setdefault(key, {"buckets": [], "sum": None, "count": None})
                    if name.endswith("_bucket"):
                        series[key]["buckets"].append((parse_value(labels["le"]), v))
                    elif name.endswith("_sum"):
                        series[key]["sum"] = v
                    else:
                        series[key]["count"] = v
                for key, s in series.items():
                    b = s["buckets"]
                    ok = (b and b[-1][0] == math.inf and s["count"] == b[-1][1] and
                          s["sum"] is not None and
                          all(b[i][0] < b[i + 1][0] and b[i][1] <= b[i + 1][1]
                              for i in range(len(b) - 1)))
                    self.check(ok, "histogram %s%s: cumulative buckets, +Inf == _count, _sum" %
                               (fam, dict(key)))

    def scrape(self, d):
        st, _, text = d.request("GET", "/metrics")
        assert st == 200
        try:
            fams = parse_exposition(text)
        except ValueError as e:
            self.check(False, "/metrics parses: %s" % e)
            return {}
        return fams

    def test_counters(self):
        d = self.d
        a = self.scrape(d)
        self.check(bool(a), "/metrics parses as Prometheus text format")
        self.families_ok(a)
        sid = d.request("POST", "/v1/sessions", {"model": "charlm"})[2]["id"]
        for _ in range(5):
            d.request("POST", "/v1/sessions/%s/step" % sid, {"text": "abc"})
        d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": [999]})     # 400
        d.request("POST", "/v1/sessions/%s/generate" % sid, {"prompt": "x", "max_tokens": 7})
        d.request("DELETE", "/v1/sessions/%s" % sid)
        d.request("GET", "/nowhere")
        b = self.scrape(d)
        self.families_ok(b)
        step = "/v1/sessions/*/step"

        def delta(name, **labels):
            return value(b, name, **labels) - value(a, name, **labels)

        self.eq(delta("rnnd_http_requests_total", endpoint=step, method="POST", code="200"), 5,
                "requests_total counts the 5 steps")
        self.eq(delta("rnnd_http_requests_total", endpoint=step, method="POST", code="400"), 1,
                "and the refused one by its status")
        self.eq(delta("rnnd_http_requests_total", endpoint="other", method="GET", code="404"), 1,
                "an unknown path counts under endpoint=\"other\"")
        self.eq(delta("rnnd_http_request_duration_seconds_count", endpoint=step), 6,
                "the latency histogram counts every step request")
        self.check(delta("rnnd_http_request_duration_seconds_sum", endpoint=step) > 0,
                   "and sums their time")
        self.eq(delta("rnnd_session_steps_total", model="charlm"), 15 + 1 + 7,
                "session steps: 15 stepped + 1 prompt + 7 generated")
        self.eq(delta("rnnd_sessions_total", event="created"), 1, "sessions created")
        self.eq(delta("rnnd_sessions_total", event="deleted"), 1, "sessions deleted")
        self.eq(delta("rnnd_generated_tokens_total"), 7, "generated tokens")
        self.eq(delta("rnnd_generations_total", finish_reason="length"), 1, "generations ended")
        self.check(delta("rnnd_worker_busy_seconds_total") > 0, "worker busy time grows")
        self.eq(value(b, "rnnd_models"), 1, "rnnd_models")
        self.eq(value(b, "rnnd_model_info", model="charlm", version="1"), 1, "rnnd_model_info")
        self.check(any(n == "rnnd_build_info" for n, _, _ in b["rnnd_build_info"]["samples"]),
                   "rnnd_build_info")
        self.check("rnnd_queue_depth" in b and "rnnd_snapshots_total" in b and
                   "rnnd_session_state_bytes" in b, "queue depth, snapshot and state gauges")
        self.check(any("event=access" in l and "endpoint=/v1/sessions/*/step" in l and
                    "status=200" in l for l in d.log), "the access log names the endpoint")
        self.check(not any(sid in l for l in d.log), "no log line holds a session id")


class AccessLogOff(Case):
    def test_access_log_off(self):
        with Daemon({"charlm": CHARLM}, "--access-log", "off") as d:
            d.request("GET", "/v1/models")
            d.stop()
            self.check(not any("event=access" in l for l in d.log),
                       "access_log = off: no access lines")


if __name__ == "__main__":
    unittest.main()
