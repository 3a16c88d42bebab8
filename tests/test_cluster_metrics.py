"""Cluster mode's metrics in /metrics (issue 17; docs/cluster.md, "Metrics"): two nodes and a
redis-server on loopback (tools/cluster). Each metric is read before and after the thing it
counts, and must move by what happened: a create, a takeover of a free record, the write
behind of a step, a reset written at once, a delete, a takeover from a killed node, lease
renewals, and with Redis stopped: store_up 0, an unreachable write, failed renewals and a
pending session. The embedded default shows none of them.
Bounded: about 8 s.
"""
import http.client
import os
import time
import unittest

from cluster_util import SRCDIR, Cluster, request, wait_for
from daemon_util import Daemon

LEASE_MS = 600
SYNC_MS = 50
NAMES = ("rnnd_store_up", "rnnd_store_writes_total", "rnnd_store_write_failures_total",
         "rnnd_store_write_duration_seconds", "rnnd_store_pending_sessions",
         "rnnd_session_takeovers_total", "rnnd_lease_renewals_total",
         "rnnd_lease_renewal_failures_total", "rnnd_sessions_owned")


def metrics(url):
    """{'name{labels}': value} of URL's /metrics."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out, text


class ClusterMetrics(unittest.TestCase):
    def setUp(self):
        self.c = Cluster("cluster_metrics", "c", 2, "--lease-ms", str(LEASE_MS),
                         "--store-sync-ms", str(SYNC_MS))
        self.addCleanup(self.c.close)
        self.n1, self.n2 = self.c.url["n1"], self.c.url["n2"]

    def moved(self, url, before, key, by):
        now, _ = metrics(url)
        self.assertEqual(now[key] - before.get(key, 0), by, key)
        return now

    def test_metrics_move(self):
        m, text = metrics(self.n1)
        for name in NAMES:
            self.assertIn("# TYPE %s " % name, text)
        self.assertEqual(m["rnnd_store_up"], 1)
        self.assertEqual(m["rnnd_sessions_owned"], 0)
        wait_for("lease renewals", lambda: metrics(self.n1)[0]["rnnd_lease_renewals_total"]
                 >= m["rnnd_lease_renewals_total"] + 2, 3)

        st, b = request(self.n1, "POST", "/v1/sessions", {"model": "charlm"})
        self.assertEqual(st, 201, b)
        sid = b["id"]
        m = self.moved(self.n1, m, 'rnnd_store_writes_total{kind="create"}', 1)
        self.assertEqual(m["rnnd_sessions_owned"], 0, "created free")
        before = m  # the write behind may land before the next scrape (store_sync_ms = 50)
        st, b = request(self.n1, "POST", "/v1/sessions/%s/step" % sid, {"inputs": [1, 2, 3]})
        self.assertEqual(st, 200, b)
        m = self.moved(self.n1, m, 'rnnd_session_takeovers_total{from="free"}', 1)
        self.assertEqual(m["rnnd_sessions_owned"], 1)
        rounds = before["rnnd_store_write_duration_seconds_count"]
        wait_for("the step written behind", lambda: metrics(self.n1)[0][
            'rnnd_store_writes_total{kind="step"}'] == before[
                'rnnd_store_writes_total{kind="step"}'] + 1, 15)  # a bound, not a latency claim
        m, _ = metrics(self.n1)
        self.assertGreater(m["rnnd_store_write_duration_seconds_count"], rounds)
        self.assertGreater(m["rnnd_store_write_duration_seconds_sum"], 0)
        self.assertEqual(m['rnnd_store_write_duration_seconds_bucket{le="+Inf"}'],
                         m["rnnd_store_write_duration_seconds_count"])
        self.assertEqual(m["rnnd_store_pending_sessions"], 0)
        st, b = request(self.n1, "POST", "/v1/sessions/%s/reset" % sid, {})
        self.assertEqual(st, 200, b)
        m = self.moved(self.n1, m, 'rnnd_store_writes_total{kind="now"}', 1)

        # a second session, taken by n1, then taken by n2 once n1 is killed
        st, b = request(self.n1, "POST", "/v1/sessions", {"model": "charlm"})
        other = b["id"]
        st, b = request(self.n1, "POST", "/v1/sessions/%s/step" % other, {"inputs": [4]})
        self.assertEqual(st, 200, b)
        st, b = request(self.n1, "DELETE", "/v1/sessions/" + sid)
        self.assertEqual(st, 204, b)
        m = self.moved(self.n1, m, 'rnnd_store_writes_total{kind="delete"}', 1)
        self.assertEqual(m["rnnd_sessions_owned"], 1)
        time.sleep(4 * SYNC_MS / 1000)
        self.c.kill_dead_known("n1", LEASE_MS)
        time.sleep(LEASE_MS / 1000 + 0.2)
        m2, _ = metrics(self.n2)
        st, b = request(self.n2, "POST", "/v1/sessions/%s/step" % other, {"inputs": [5]})
        self.assertEqual(st, 200, b)
        m2 = self.moved(self.n2, m2, 'rnnd_session_takeovers_total{from="dead"}', 1)
        self.assertEqual(m2["rnnd_sessions_owned"], 1)
        wait_for("the step written behind", lambda: metrics(self.n2)[0][
            "rnnd_store_pending_sessions"] == 0, 3)

        # Redis down: the store is reported down, writes and renewals fail, a step waits
        self.c.tool("redis-stop")
        m2, _ = metrics(self.n2)
        st, _ = request(self.n2, "POST", "/v1/sessions", {"model": "charlm"})
        self.assertEqual(st, 503)
        m2 = self.moved(self.n2, m2, 'rnnd_store_write_failures_total{reason="unreachable"}', 1)
        self.assertEqual(m2["rnnd_store_up"], 0)
        self.assertEqual(request(self.n2, "POST", "/v1/sessions/%s/step" % other,
                                 {"inputs": [6]})[0], 200)
        wait_for("a failed renewal", lambda: metrics(self.n2)[0][
            "rnnd_lease_renewal_failures_total"] > m2["rnnd_lease_renewal_failures_total"], 3)
        wait_for("a pending write", lambda: metrics(self.n2)[0][
            "rnnd_store_pending_sessions"] >= 1, 3)
        self.c.tool("redis-start")
        wait_for("the pending write done", lambda: metrics(self.n2)[0][
            "rnnd_store_pending_sessions"] == 0, 5)
        # store_up follows the last Redis command of any of the node's connections: the lease
        # thread's may still fail once after the writer's succeeded (seen under load: 0)
        wait_for("the store reported up", lambda: metrics(self.n2)[0]["rnnd_store_up"] == 1, 5)

    def test_embedded_has_none(self):
        models = {"charlm": os.path.join(SRCDIR, "models", "charlm.rnnd")}
        with Daemon(models) as d:
            st, _, text = d.request("GET", "/metrics")
            self.assertEqual(st, 200)
            self.assertIn("rnnd_http_requests_total", text)
            for name in NAMES:
                self.assertNotIn(name, text)


if __name__ == "__main__":
    unittest.main()
