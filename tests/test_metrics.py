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
- test_status_labels (issue 15): every status the daemon answers has its own code label in
  rnnd_http_requests_total, none is counted as "other": a WebSocket upgrade (101), 200, 201,
  204, the 431 of an oversize head, and one request per error status a daemon with API keys
  and small limits answers easily (400, 401, 403, 404, 405, 409, 410, 413, 415, 429). The
  counts by code, the test's own scrapes of /metrics left out, are the statuses it saw.
Each check is a unittest case; a failing case fails the run.
"""
import asyncio
import collections
import json
import math
import os
import re
import socket
import time
import unittest

from daemon_util import (Case, Daemon, bearer, head_bytes, read_http_response, tmpdir,
                         write_secret)

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
        # A request is counted when libmicrohttpd reports it finished, which may come a moment
        # after its reply reached us (CI once scraped before the 404 was counted): wait for it.
        deadline = time.monotonic() + 5
        while True:
            b = self.scrape(d)
            if (value(b, "rnnd_http_requests_total", endpoint="other", method="GET",
                      code="404") > value(a, "rnnd_http_requests_total", endpoint="other",
                                          method="GET", code="404")
                    or time.monotonic() > deadline):
                break
            time.sleep(0.05)
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

    def test_families_documented(self):
        """Each metric family /metrics renders is a row of docs/api.md's GET /metrics table,
        and each metric of that table is rendered (trial 26: the WebSocket ones)."""
        fams = self.scrape(self.d)
        with open(os.path.join(os.environ["RNND_SRCDIR"], "docs", "api.md")) as f:
            text = f.read()
        table = text[text.index("- `GET /metrics`"):]
        table = table[:table.index("\n\n", table.index("| metric |"))]
        documented = set(re.findall(r"`(rnnd_[a-z0-9_]+)", table))
        self.check(len(documented) > 20, "the table found: %d metrics" % len(documented))
        self.eq(sorted(set(fams) - documented), [], "families rendered but not documented")
        self.eq(sorted(documented - set(fams)), [], "metrics documented but not rendered")


class StatusLabels(Case):
    """A daemon with API keys, one session per key, one session in all (the least recently
    used is evicted) and a 2K body limit."""

    USER, OTHER, ADMIN = "metrics-user-0123456789", "metrics-other-0123456789", \
        "metrics-admin-0123456789"

    def test_status_labels(self):
        keys = write_secret(os.path.join(tmpdir("metrics"), "keys"), "%s user\n%s other\n"
                            "%s ops admin\n" % (self.USER, self.OTHER, self.ADMIN))
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys, "--max-sessions", "1",
                    "--session-evict", "lru", "--max-sessions-per-key", "1",
                    "--max-body-bytes", "2K") as d:
            seen = collections.Counter()
            user, other = bearer(self.USER), bearer(self.OTHER)

            def req(want, method, path, body=None, headers=user, raw=None):
                st = d.request(method, path, body, headers=dict(headers), raw=raw)
                self.eq(st[0], want, "%s %s" % (method, path))
                seen[str(st[0])] += 1
                return st[2]

            req(200, "GET", "/v1/models")
            sid = req(201, "POST", "/v1/sessions", {"model": "charlm"})["id"]
            seen["101"] += self.websocket(d.port, sid)
            req(429, "POST", "/v1/sessions", {"model": "charlm"})      # one per key
            other_sid = req(201, "POST", "/v1/sessions", {"model": "charlm"}, other)["id"]
            req(410, "GET", "/v1/sessions/" + sid)                      # evicted by the other
            req(409, "POST", "/v1/sessions/%s/step" % other_sid,
                {"text": "a", "if_steps": 7}, other)
            req(204, "DELETE", "/v1/sessions/" + other_sid, headers=other)
            req(400, "POST", "/v1/sessions", raw=b'{"model": ')
            req(401, "GET", "/v1/models", headers={})
            req(403, "GET", "/metrics")
            req(404, "POST", "/v1/models/nosuch/infer", {"inputs": [[1]]})
            req(405, "PUT", "/v1/models")
            req(413, "POST", "/v1/sessions", raw=b" " * 4096)
            req(415, "POST", "/v1/sessions", raw=b'{"model": "charlm"}',
                headers=dict(user, **{"Content-Type": "text/plain"}))
            s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            try:
                s.sendall(head_bytes(0, 1, 40, 740))
                st = read_http_response(s, 5.0)[0]
            finally:
                s.close()
            self.eq(st, 431, "a head of 40 fields of 740 bytes")
            seen[str(st)] += 1
            # a request is counted when libmicrohttpd reports it finished: wait for the last
            counted = {}
            deadline = time.monotonic() + 10
            while counted != seen and time.monotonic() < deadline:
                counted = self.by_code(d)
                if counted != seen:
                    time.sleep(0.1)
            self.eq(counted.get("101"), 1, 'the WebSocket upgrade counts under code="101"')
            self.check("other" not in counted,
                       'no request counts under code="other" (%r)' % counted)
            self.eq(dict(sorted(counted.items())), dict(sorted(seen.items())),
                    "rnnd_http_requests_total by code is the statuses answered")
            self.check(len(seen) >= 15, "%d statuses driven" % len(seen))

    def websocket(self, port, sid):
        """Open SID's WebSocket with the user's key, take one step over it and close;
        returns 1 when it was upgraded (101)."""
        import websockets

        async def go():
            url = "ws://127.0.0.1:%d/v1/sessions/%s/ws" % (port, sid)
            async with websockets.connect(url, extra_headers=bearer(self.USER)) as ws:
                await ws.send(json.dumps({"op": "step", "text": "ab"}))
                return json.loads(await ws.recv())
        reply = asyncio.run(asyncio.wait_for(go(), 30))
        self.check("outputs" in reply or "steps" in reply, "a step over the WebSocket: %r"
                   % str(reply)[:200])
        return 1

    def by_code(self, d):
        """{code label: requests} of rnnd_http_requests_total, the admin's scrapes (200s of
        /metrics) left out."""
        st, _, text = d.request("GET", "/metrics", headers=bearer(self.ADMIN))
        self.eq(st, 200, "GET /metrics with the admin key")
        out = collections.Counter()
        for name, labels, v in parse_exposition(text)["rnnd_http_requests_total"]["samples"]:
            if (labels["endpoint"], labels["code"]) != ("/metrics", "200"):
                out[labels["code"]] += int(v)
        return out


class AccessLogOff(Case):
    def test_access_log_off(self):
        with Daemon({"charlm": CHARLM}, "--access-log", "off") as d:
            d.request("GET", "/v1/models")
            d.stop()
            self.check(not any("event=access" in l for l in d.log),
                       "access_log = off: no access lines")


if __name__ == "__main__":
    unittest.main()
