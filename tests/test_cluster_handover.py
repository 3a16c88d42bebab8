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
- A session that expired on n1 (410 there) answers 410 on n2 at once, not 503 after a wait
  for a hand-over that cannot come: asked for it, n1 deletes the record that still names it
  and leaves the tombstone.
- A node that cannot load a session leaves it where it is: a full n1 (max_sessions,
  session_evict = reject) answers 429 before asking n2 for it; a record of a model n1 has not
  loaded answers 409 before any hand-over; and a record taken and then refused (it does not
  decode) is given back free. Before: each of them left the record held by n1, and n2
  answered 503 "held by node n1" after lease_ms + 1 s.
- A generate queued on the holder behind a hand-over (a long step runs there, a step on n2
  asks for the session, then the generate arrives on n1) does not run on the copy n1 gave
  away: 503 `unavailable` ("the session moved ..."), streamed or not (a stream: 200, then an
  error event and no token), and every 200 reply's step count adds up to the session's
  count (before: 200 with tokens and a step count the session never had, a fork).
- The creating node keeps no copy of a session it created (issue 17 trial S1-b, S4): with
  `max_sessions` 2 and LRU eviction, sessions created on n1 and used on n2 are not listed
  on n1, do not count in its `rnnd_sessions`, are not evicted there by later creations, and
  do not expire there while n2 uses them; a request that later reaches n1 (a drain, a death,
  a ring change) has the session handed over from n2, at its true step count. Before: n1
  listed a stale copy at 0 steps, and answered 410 "was evicted" / "expired; its state is
  lost" for sessions alive on n2.
- A WebSocket frame for a session that moved away does not hold the node's event loop: n1
  holds socket S1 on session X and S2 on Y; a step for X on n2 takes X there, and n2 is
  paused, so that n1 must wait for n2's lease to lapse to take X back. A step sent on S1 (a
  binary step behind it) then waits on a worker of the slow path (docs/websocket.md), while S2's steps, sent every 20 ms,
  are answered within 300 ms each (8-17 ms measured); S1's replies come once X is back,
  right and in order. Before: every socket of n1 waited for the take-back (S2's slowest
  step 925 ms).
Bounded: about 115 s on the 2-core build machine (twelve clusters of two nodes).
"""
import http.client
import json
import os
import threading
import time
import unittest

from cluster_util import TwoNodes, create, replay, request, step, wait_for
from daemon_util import bearer, tmpdir, write_secret
from test_cluster_metrics import metrics
from test_websocket import RawWS, bin_reply, bin_step, bits

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

    CAL = 64  # the calibration step's tokens

    def long_tokens(self, sid):
        """How many tokens make a step on n1 last about 0.6 s (16 to 4096): long enough that
        the ask and the generate queue behind it, short enough that the ask's wait for the
        hand-over (lease_ms + 1 s) outlasts it, on a fast machine and under a sanitizer."""
        t0 = time.monotonic()
        st, b = request(self.n1, "POST", "/v1/sessions/%s/step" % sid,
                        {"inputs": [5] * self.CAL, "outputs": "last"}, timeout=30)
        self.assertEqual(st, 200, b)
        per_step = (time.monotonic() - t0) / self.CAL
        return max(16, min(4096, int(0.6 / per_step)))

    def sse(self, url, path, body):
        """(status, [(event, data)]) of a streamed request."""
        host, port = url.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = conn.getresponse()
            text = r.read().decode()
        finally:
            conn.close()
        events = []
        for block in text.split("\n\n"):
            ev, data = None, None
            for line in block.splitlines():
                if line.startswith("event: "):
                    ev = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
            if data is not None and data != "[DONE]":
                events.append((ev, json.loads(data)))
        return r.status, events

    def generate_behind_handover(self, stream, scale=1):
        """The scenario once; False when the generate reached n1 only after the hand-over
        (a loaded machine delayed its thread past the long step): it then took the session
        back, rightly, and ran, which tests nothing here; False too when the ask came first."""
        sid = create(self.n1)
        self.assertEqual(step(self.n1, sid, [1])[0], 200)
        n = min(4096, self.long_tokens(sid) * scale)
        base = 1 + self.CAL
        path = "/v1/sessions/%s/" % sid
        gen = {"prompt": "ab", "max_tokens": 5, "seed": 1, "stream": stream}
        res = {}

        def long_step():
            res["long"] = request(self.n1, "POST", path + "step",
                                  {"inputs": [5] * n, "outputs": "last"}, timeout=30)

        def ask():
            res["ask"] = step(self.n2, sid, [7])

        def generate():
            if stream:
                res["gen"] = self.sse(self.n1, path + "generate", gen)
            else:
                res["gen"] = request(self.n1, "POST", path + "generate", gen, timeout=30)

        threads = [threading.Thread(target=f) for f in (long_step, ask, generate)]
        for i, t in enumerate(threads):
            t.start()
            time.sleep(0.03 if i < 2 else 0)
        for t in threads:
            t.join(60)
        self.assertEqual(res["long"][0], 200, res["long"])
        if (res["ask"][0] == 200 and res["ask"][1]["steps"] == base + 1 and
                res["long"][1]["steps"] == base + n + 1):
            return False  # the ask reached n2 before the long step reached n1 (a CI run under
            # TSan): the session went to n2 and back, each step once, and nothing was behind
        self.assertEqual(res["long"][1]["steps"], base + n)
        st, got = res["gen"]
        if (st == 200 and not stream) or (stream and got and got[0][0] != "error"):
            return False
        self.assertEqual(res["ask"][0], 200, res["ask"])
        self.assertEqual(res["ask"][1]["steps"], base + n + 1, "the ask ran after the long step")
        st, b = request(self.n2, "GET", "/v1/sessions/" + sid)
        self.assertEqual((st, b["steps"]), (200, base + n + 1), "nothing else was kept")
        if stream:
            st, events = res["gen"]
            self.assertEqual(st, 200)
            self.assertEqual([e for e, _ in events], ["error"], events)
            err = events[0][1]
        else:
            st, err = res["gen"]
            self.assertEqual(st, 503, err)
        self.assertEqual(err["error"]["code"], "unavailable", err)
        self.assertIn("moved to another node", err["error"]["message"])
        self.assertNotIn("steps", err, "this copy's count is no session's")
        self.assertEqual(self.holder(sid), "n2")
        return True

    def test_generate_behind_handover(self):
        for stream in (False, True):
            # at most 3 tries, the later with a step twice as long (1.2 s, still within the
            # ask's wait of lease_ms + 1 s): a rehearsal at load 4 once missed
            self.assertTrue(any(self.generate_behind_handover(stream, scale)
                                for scale in (1, 2, 2)), "the generate never queued behind")


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
            # n1 keeps no copy of what it creates: a step there makes it hold each one
            self.assertEqual(step(self.n1, create(self.n1), [0])[0], 200)
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


class CreatorKeepsNoCopy(TwoNodes):
    GROUP = "cluster_nocopy"
    NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--store-sync-ms", str(SYNC_MS),
                 "--max-sessions", "2", "--session-evict", "lru")

    def create_ttl(self, url, ttl_s):
        st, b = request(url, "POST", "/v1/sessions", {"model": "charlm", "ttl_s": ttl_s})
        self.assertEqual(st, 201, b)
        return b["id"]

    def test_creator_keeps_no_copy(self):
        self.maxDiff = None
        got, want = {}, {}
        # created on n1, used on n2 only
        s1 = create(self.n1)
        self.assertEqual(step(self.n2, s1, [1, 2, 3])[0], 200)
        st, b = request(self.n1, "GET", "/v1/sessions")
        got["listed on n1"], want["listed on n1"] = [x["id"] for x in b["sessions"]], []
        m, _ = metrics(self.n1)
        got["n1 rnnd_sessions"] = (m["rnnd_sessions"], m["rnnd_sessions_owned"])
        want["n1 rnnd_sessions"] = (0, 0)
        # two more creations on n1 (max_sessions 2, lru): nothing of s1 is evicted there
        create(self.n1)
        create(self.n1)
        st, b = step(self.n1, s1, [4])
        got["s1 on n1 after 2 creations"] = (st, b.get("steps"), b.get("error"))
        want["s1 on n1 after 2 creations"] = (200, 4, None)
        # created on n1 with ttl_s 1, kept alive on n2 past it: not expired on n1
        s2 = self.create_ttl(self.n1, 1)
        for i in range(4):
            self.assertEqual(step(self.n2, s2, [i])[0], 200)
            time.sleep(0.35)
        st, b = step(self.n1, s2, [9])
        got["s2 on n1 past its ttl"] = (st, b.get("steps"), b.get("error"))
        want["s2 on n1 past its ttl"] = (200, 5, None)
        self.assertEqual(got, want)


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
        # its tombstone is alice's: bob gets 404 on every node, as for an id that never
        # existed (trial 24 N2: 410 on the node that did not hold it)
        wait_for("the record's deletion", lambda: self.c.redis(
            "EXISTS", "rnnd:{%s}:rec" % sid) == "0", 2)
        for url in (self.n1, self.n2):
            st, b = keyed(url, "GET", "/v1/sessions/" + sid, BOB)
            self.assertEqual(st, 404, (url, b))
            st, b = keyed(url, "POST", "/v1/sessions/%s/step" % sid, BOB, {"inputs": [1]})
            self.assertEqual(st, 404, (url, b))
            st, b = keyed(url, "GET", "/v1/sessions/" + sid, ALICE)
            self.assertEqual(st, 410, (url, b))


class ClusterWebSocket(TwoNodes):
    GROUP = "cluster_ws"
    NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--store-sync-ms", str(SYNC_MS))

    def ws(self, sid):
        port = int(self.n1.rsplit(":", 1)[1].split("/")[0])
        w = RawWS(port, "/v1/sessions/%s/ws" % sid, timeout=10)
        self.assertEqual(w.status, 101, w.body)
        self.addCleanup(w.sock.close)
        return w

    def test_moved_session_does_not_hold_the_loop(self):
        x, y = create(self.n1), create(self.n1)
        tx = self.tokens(3)
        self.assertEqual(step(self.n1, x, tx)[0], 200)
        s1, s2 = self.ws(x), self.ws(y)
        self.assertEqual(s2.request({"op": "step", "inputs": self.tokens(1)})["status"], 200)
        # X moves to n2, which then stops answering: taking it back waits for n2's lease
        t2 = self.tokens(2)
        st, b = step(self.n2, x, t2)
        self.assertEqual((st, b["steps"]), (200, 5), b)
        wait_for("the write-behind", lambda: self.c.record_steps(x) == 5, 2)
        self.c.tool("pause", "n2")
        try:
            t3, t4 = self.tokens(2), self.tokens(1)
            t0 = time.monotonic()
            s1.send_json({"op": "step", "seq": 1, "inputs": t3, "outputs": "all"})
            s1.frame(2, bin_step(2, t4, kind=2))  # a binary step behind it
            worst, n = 0.0, 0
            while time.monotonic() - t0 < LEASE_MS / 1000 + 0.6:
                t = time.monotonic()
                rep = s2.request({"op": "step", "seq": n, "inputs": self.tokens(1)})
                worst = max(worst, time.monotonic() - t)
                self.assertEqual((rep["status"], rep["seq"]), (200, n), rep)
                n += 1
                time.sleep(0.02)
            r1, r2 = s1.recv(), s1.recv()
            took = time.monotonic() - t0
        finally:
            self.c.tool("resume", "n2")
        print("moved session over a socket: %d steps on S2 meanwhile, the slowest %.0f ms; "
              "S1's replies after %.0f ms" % (n, worst * 1000, took * 1000))
        # before: ~925 ms (the take-back's wait); after: 8-17 ms, bounded for a busy machine
        self.assertLess(worst, 0.3, "S2's slowest step while S1's session is taken back")
        self.assertGreaterEqual(n, 10)
        seq2, _, _, steps2, out2 = bin_reply(r2)
        self.assertEqual([(r1["status"], r1["seq"], r1["steps"]), (seq2, steps2)],
                         [(200, 1, 7), (2, 8)], "S1's replies, in order")
        self.assertEqual(bits(r1["outputs"] + out2),
                         bits(replay(self.n1, tx + t2 + t3 + t4)[5:]), "bitwise")
        self.assertEqual(self.holder(x), "n1")

    holder = ClusterHandover.holder


if __name__ == "__main__":
    unittest.main()
