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
- A session that expired on n1 (410 there) answers 410 on n2 at once, not 503 after a wait
  for a hand-over that cannot come: asked for it, n1 deletes the record that still names it
  and leaves the tombstone.
- A node that cannot load a session leaves it where it is: a full n1 (max_sessions,
  session_evict = reject) answers 429 before asking n2 for it; a record of a model n1 has not
  loaded answers 409 before any hand-over; and a record taken and then refused (it does not
  decode) is given back free. Before: each of them left the record held by n1, and n2
  answered 503 "held by node n1" after lease_ms + 1 s.
Bounded: about 45 s on the 2-core build machine (six clusters of two nodes).
"""
import time
import unittest

from cluster_util import TwoNodes, create, replay, request, step, wait_for
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

    def test_expired_elsewhere_answers_gone_at_once(self):
        st, b = request(self.n1, "POST", "/v1/sessions", {"model": "charlm", "ttl_s": 1})
        self.assertEqual(st, 201, b)
        sid = b["id"]
        self.assertEqual(step(self.n1, sid, self.tokens(3))[0], 200)
        self.assertEqual(self.holder(sid), "n1")
        time.sleep(1.3)
        self.assertEqual(request(self.n1, "GET", "/v1/sessions/" + sid)[0], 410)
        for _ in range(2):
            t0 = time.monotonic()
            st, b = request(self.n2, "GET", "/v1/sessions/" + sid)
            self.assertEqual(st, 410, b)
            self.assertLess(time.monotonic() - t0, 0.5)
        self.assertEqual(self.c.redis("EXISTS", "rnnd:{%s}:rec" % sid), "0")


class ClusterCannotLoad(TwoNodes):
    GROUP = "cluster_handover"
    NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--store-sync-ms", str(SYNC_MS),
                 "--max-sessions", "3")

    def holder(self, sid):
        return self.c.redis("HGET", "rnnd:{%s}:rec" % sid, "holder").split(" ")[0]

    def test_full_node_leaves_session(self):
        sid = create(self.n2)
        self.assertEqual(step(self.n2, sid, [1, 2])[0], 200)
        for _ in range(3):
            create(self.n1)
        self.assertEqual(request(self.n1, "POST", "/v1/sessions", {"model": "charlm"})[0], 429)
        st, b = step(self.n1, sid, [3])
        self.assertEqual(st, 429, b)
        self.assertEqual(self.holder(sid), "n2")
        t0 = time.monotonic()
        st, b = step(self.n2, sid, [4])
        self.assertEqual((st, b.get("steps")), (200, 3), b)
        self.assertLess(time.monotonic() - t0, 0.5)

    def test_unloadable_record_left_or_given_back(self):
        sid = create(self.n1)
        self.assertEqual(step(self.n1, sid, [1, 2])[0], 200)
        self.c.redis("HSET", "rnnd:{%s}:rec" % sid, "model", "elsewhere")
        st, b = step(self.n2, sid, [3])
        self.assertEqual(st, 409, b)
        self.assertIn("has not loaded", b["error"]["message"])
        self.assertEqual(self.holder(sid), "n1")
        self.assertEqual(step(self.n1, sid, [3])[0], 200, "n1 still serves it")
        # taken, then refused (it does not decode): given back free, not kept
        sid = create(self.n1)  # free: nobody took it yet
        self.c.redis("HSET", "rnnd:{%s}:rec" % sid, "v", "9")
        st, b = request(self.n2, "GET", "/v1/sessions/" + sid)
        self.assertEqual(st, 503, b)
        self.assertEqual(self.c.redis("HGET", "rnnd:{%s}:rec" % sid, "holder"), "")
        self.c.redis("HSET", "rnnd:{%s}:rec" % sid, "v", "1")
        t0 = time.monotonic()
        st, b = step(self.n2, sid, [1])
        self.assertEqual((st, b.get("steps")), (200, 1), b)
        self.assertLess(time.monotonic() - t0, 0.5)


if __name__ == "__main__":
    unittest.main()
