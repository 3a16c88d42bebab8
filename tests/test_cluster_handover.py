"""Hand-over of a session held by a live node (issue 17; docs/cluster.md, "Takeover,
hand-over, redirect"): two nodes and a redis-server on loopback (tools/cluster), requests
sent to the nodes directly.

- A step on n2 for a session n1 holds while n1 lives: n1 writes the exact state and releases
  it, n2 takes it and answers 200 (before hand-over: 503 naming n1); the outputs are bitwise
  those of one session fed every input on one node, n1 no longer holds it (the record names
  n2), and n1's next request for it is itself handed back. Each node counts one hand-over
  given and one taken (rnnd_session_handovers_total).
- A session whose steps alternate between n1 and n2 at every request stays bitwise right, and
  its record ends at the step count its client fed.
- A paused holder (SIGSTOP) answers no hand-over: the request waits until its lease lapses
  and then takes the session, at most lease_ms + 1 s after it began.
- With API keys: another key's request for a session through another node answers 404 and
  neither moves the session nor refreshes it; its owner's request through that node moves
  it with its idle time (the record's used_ms, in Redis's clock): a lookup refreshes nothing,
  and the session expires on the new node when its ttl has passed since its last use.
Bounded: about 35 s (four clusters of two nodes).
"""
import http.client
import json
import os
import time
import unittest

from cluster_util import TwoNodes, create, replay, request, step, wait_for
from daemon_util import bearer, tmpdir, write_secret
from test_cluster_metrics import metrics

LEASE_MS = 800
SYNC_MS = 50


class ClusterHandover(TwoNodes):
    GROUP = "cluster_handover"
    NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--store-sync-ms", str(SYNC_MS))

    def holder(self, sid):
        return self.c.redis("HGET", "rnnd:{%s}:rec" % sid, "holder").split(" ")[0]

    def handovers(self, url):
        m, _ = metrics(url)
        return (m.get('rnnd_session_handovers_total{direction="given"}'),
                m.get('rnnd_session_handovers_total{direction="taken"}'))

    def test_handover_from_live_node(self):
        sid = create(self.n1)
        t1 = self.tokens(5)
        st, b = step(self.n1, sid, t1)
        self.assertEqual(st, 200, b)
        self.assertEqual(self.holder(sid), "n1")
        # n1 holds it and lives: n2 asks for it and gets it
        t2 = self.tokens(4)
        st, b = step(self.n2, sid, t2)
        self.assertEqual(st, 200, b)
        self.assertEqual(b["steps"], 9)
        self.assertEqual(b["outputs"], replay(self.n1, t1 + t2)[5:], "handed over bitwise")
        self.assertEqual(self.holder(sid), "n2", "n1 no longer holds it")
        self.assertEqual(self.handovers(self.n1), (1, 0))
        self.assertEqual(self.handovers(self.n2), (0, 1))
        # n1's next request has it handed back
        t3 = self.tokens(3)
        st, b = step(self.n1, sid, t3)
        self.assertEqual(st, 200, b)
        self.assertEqual(b["steps"], 12)
        self.assertEqual(b["outputs"], replay(self.n2, t1 + t2 + t3)[9:], "handed back bitwise")
        self.assertEqual(self.holder(sid), "n1")
        self.assertEqual(self.handovers(self.n1), (1, 1))
        self.assertEqual(self.handovers(self.n2), (1, 1))
        wait_for("the write-behind", lambda: self.c.record_steps(sid) == 12, 2)

    def test_alternating_nodes_stay_bitwise(self):
        sid = create(self.n1)
        fed, outs = [], []
        for i in range(40):
            url = (self.n1, self.n2)[i % 2]
            t = self.tokens(self.rng.randint(1, 4))
            st, b = step(url, sid, t)
            self.assertEqual(st, 200, b)
            fed += t
            outs += b["outputs"]
            self.assertEqual(b["steps"], len(fed))
        self.assertEqual(outs, replay(self.n1, fed), "every step bitwise")
        wait_for("the write-behind", lambda: self.c.record_steps(sid) == len(fed), 2)
        st, b = request(self.n1, "GET", "/v1/sessions/" + sid)
        self.assertEqual((st, b["steps"]), (200, len(fed)))

    def test_paused_holder_lease_lapses(self):
        sid = create(self.n1)
        toks = self.tokens(4)
        self.assertEqual(step(self.n1, sid, toks)[0], 200)
        wait_for("the write-behind", lambda: self.c.record_steps(sid) == 4, 2)
        self.c.tool("pause", "n1")
        try:
            t0 = time.monotonic()
            more = self.tokens(3)
            st, b = step(self.n2, sid, more)
            took = time.monotonic() - t0
        finally:
            self.c.tool("resume", "n1")
        self.assertEqual(st, 200, b)
        self.assertLess(took, LEASE_MS / 1000 + 1.5)
        self.assertEqual(b["steps"], 7)
        self.assertEqual(b["outputs"], replay(self.n2, toks + more)[4:])
        self.assertEqual(self.holder(sid), "n2")


KEYS = write_secret(os.path.join(tmpdir("cluster_handover"), "keys"),
                    "alice-key-0123456789 alice infer\nbob-key-0123456789 bob infer\n")
ALICE, BOB = bearer("alice-key-0123456789"), bearer("bob-key-0123456789")


def keyed(url, method, path, key, body=None):
    """(status, parsed body) of one request with API key header KEY."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path, None if body is None else json.dumps(body),
                     dict(key, **({"Content-Type": "application/json"} if body else {})))
        r = conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None
    finally:
        conn.close()


class ClusterHandoverKeys(TwoNodes):
    GROUP = "cluster_handover"
    NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--store-sync-ms", str(SYNC_MS),
                 "--api-keys-file", KEYS)

    def holder(self, sid):
        return self.c.redis("HGET", "rnnd:{%s}:rec" % sid, "holder").split(" ")[0]

    def test_other_key_moves_nothing_and_idle_moves_along(self):
        st, b = keyed(self.n1, "POST", "/v1/sessions", ALICE, {"model": "charlm", "ttl_s": 3})
        self.assertEqual(st, 201, b)
        sid = b["id"]
        self.assertEqual(keyed(self.n1, "POST", "/v1/sessions/%s/step" % sid, ALICE,
                               {"inputs": [1, 2]})[0], 200)
        wait_for("the write-behind", lambda: self.c.record_steps(sid) == 2, 2)
        time.sleep(1.5)
        # bob's refused request through n2 leaves the session where it is
        st, b = keyed(self.n2, "GET", "/v1/sessions/" + sid, BOB)
        self.assertEqual(st, 404, b)
        self.assertEqual(self.holder(sid), "n1", "another key's request moved it")
        # alice's lookup through n2 moves it, with the idle time it had on n1
        st, b = keyed(self.n2, "GET", "/v1/sessions/" + sid, ALICE)
        self.assertEqual(st, 200, b)
        self.assertEqual(self.holder(sid), "n2")
        self.assertGreater(b["idle_s"], 1.2, b)
        self.assertLess(b["expires_in"], 1.8, b)
        # and it expires on n2 three seconds after its last use on n1
        time.sleep(1.8)
        st, b = keyed(self.n2, "GET", "/v1/sessions/" + sid, ALICE)
        self.assertEqual(st, 410, b)


if __name__ == "__main__":
    unittest.main()
