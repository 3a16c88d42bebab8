"""Cluster mode's sessions in Redis (issue 17; docs/cluster.md): two nodes and a redis-server
on loopback (tools/cluster), requests sent to the nodes directly.

- Takeover: sessions created and stepped on n1, then n1 SIGKILLed: after its lease lapses n2
  serves them from the stored state and step count, and its outputs are bitwise equal to a
  single-node replay of the inputs up to that count; right after the kill (lease not lapsed)
  n2 answers 503 at once (its log names n1, the reply no node): a dead holder has no
  hand-over listener. Sessions killed right after a step resume no later than they were,
  never ahead.
- Confirmation: n1 paused past its lease, n2 takes a session and steps it; n1 resumed and
  asked for a step: it checks the session against the record first (its lease lapsed),
  drops its stale copy and has n2 hand the session over, at n2's step count, bitwise; the
  record never goes back. (The fence refusing a stale write: acceptance 5,
  tests/test_cluster_accept.py.)
- Redis down: the nodes keep serving the sessions they hold, /readyz stays 200 with
  "store": "down", creations answer 503; once Redis is back the steps taken meanwhile reach
  the record.
- Redis restarted while n1 serves a session from memory, past every node lease: n2, asked for
  it the moment Redis is back, never takes it from its stale record (n1's lease key is gone,
  but n2 cannot know n1 is dead until Redis has answered it for lease_ms + 1 s): it has n1
  hand it over, with every step n1 answered during the outage.
- Redis loses its data (FLUSHALL): n1 keeps serving the sessions it holds and writes them
  anew, whole (the one stepped since and the one left alone), at their exact step counts;
  n2 then has them handed over, bitwise. Before: n1 dropped them and answered 404.
- Reset, import, delete and fork are written at once; a deleted session is gone on every
  node; a session created or forked on one node is taken by another at its first request.
- Ends (trial 22): a session expired or evicted on its node (held there; or free and never
  taken, past its ttl by the record's used_ms when a node takes it) has its record deleted, its tombstone written and its rnnd:idx entry dropped, so the
  other node answers 410 at once, also after the first one drained; an id whose record
  expired in Redis leaves rnnd:idx (the sweep); a step past 2^63-1 steps is refused and the
  record stays readable; a forged record is no Redis outage and the reply names no server;
  the first request after a Redis restart succeeds.
Bounded: about 40 s.
"""
import threading
import time
import unittest

from cluster_util import TwoNodes, create, replay, request, step, wait_for

LEASE_MS = 600
SYNC_MS = 50


class ClusterStore(TwoNodes):
    GROUP = "cluster_store"
    NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--store-sync-ms", str(SYNC_MS))

    def test_takeover_after_sigkill(self):
        fed = self.create_and_step(6)
        quiet = list(fed)[:4]  # written behind before the kill; the others just stepped
        time.sleep(4 * SYNC_MS / 1000)
        for sid in quiet:
            self.assertEqual(self.c.record_steps(sid), len(fed[sid]))
        for sid in fed:  # n1 holds them
            self.assertTrue(self.c.redis("HGET", "rnnd:{%s}:rec" % sid, "holder")
                            .startswith("n1 "))
        for sid in list(fed)[4:]:
            t = self.tokens(7)
            self.assertEqual(step(self.n1, sid, t)[0], 200)
            fed[sid] += t
        self.c.kill_dead_known("n1", LEASE_MS)
        killed = time.monotonic()
        # until the lease lapses n2 still sees a live holder, which cannot hand it over;
        # then it takes each session
        st, b = step(self.n2, quiet[1], [1])
        if time.monotonic() - killed < LEASE_MS / 1000 * 0.8:
            self.assertEqual(st, 503, b)
            # the reply names no node (the topology is not the client's); the log does
            self.assertIn("held by another node", b["error"]["message"])
            self.assertNotIn("n1", b["error"]["message"])
            self.assertIn("event=session_held node=n2 holder=n1", self.c.log("n2"))
        time.sleep(LEASE_MS / 1000 + 0.2)
        for sid, toks in fed.items():
            st, b = request(self.n2, "GET", "/v1/sessions/" + sid)
            self.assertEqual(st, 200, b)
            at = b["steps"]
            self.assertLessEqual(at, len(toks))
            if sid in quiet:
                self.assertEqual(at, len(toks))
            more = self.tokens(6)
            st, b = step(self.n2, sid, more)
            self.assertEqual(st, 200, b)
            self.assertEqual(b["steps"], at + len(more))
            ref = replay(self.n2, toks[:at] + more)
            self.assertEqual(b["outputs"], ref[at:], "session resumed bitwise")

    def test_stale_owner_is_fenced(self):
        sid = create(self.n1)
        toks = self.tokens(5)
        self.assertEqual(step(self.n1, sid, toks)[0], 200)
        wait_for("the write-behind", lambda: self.c.record_steps(sid) == 5, 2)
        self.c.tool("pause", "n1")
        try:
            time.sleep(LEASE_MS / 1000 + 0.3)
            more = self.tokens(4)
            st, b = step(self.n2, sid, more)
            self.assertEqual(st, 200, b)
            self.assertEqual(b["steps"], 9)
            wait_for("n2's write", lambda: self.c.record_steps(sid) == 9, 2)
        finally:
            self.c.tool("resume", "n1")
        # n1 still holds a copy at 5 steps, but its lease lapsed while paused: it confirms
        # the session against the record before serving it, finds n2 there, drops its copy
        # and has n2 hand the session back; never served from the stale copy
        more2 = self.tokens(2)
        st, b = step(self.n1, sid, more2)
        self.assertEqual(st, 200, b)
        self.assertEqual(b["steps"], 11)
        self.assertEqual(b["outputs"], replay(self.n1, toks + more + more2)[9:])
        self.assertIn("event=session_moved", self.c.log("n1"))
        self.assertIn("n1 ", self.c.redis("HGET", "rnnd:{%s}:rec" % sid, "holder"))
        wait_for("n1's write", lambda: self.c.record_steps(sid) == 11, 2)
        # and n2 has it back, bitwise
        more3 = self.tokens(3)
        st, b = step(self.n2, sid, more3)
        self.assertEqual(st, 200, b)
        self.assertEqual(b["steps"], 14)
        self.assertEqual(b["outputs"], replay(self.n2, toks + more + more2 + more3)[11:])
        wait_for("n2's write", lambda: self.c.record_steps(sid) == 14, 2)

    def test_redis_down_keeps_owned_sessions(self):
        sid = create(self.n1)
        toks = self.tokens(3)
        self.assertEqual(step(self.n1, sid, toks)[0], 200)
        wait_for("the write-behind", lambda: self.c.record_steps(sid) == 3, 2)
        self.c.tool("redis-stop")
        try:
            for _ in range(5):
                t = self.tokens(2)
                st, b = step(self.n1, sid, t)
                self.assertEqual(st, 200, b)
                toks += t
                time.sleep(0.1)
            st, b = request(self.n1, "GET", "/readyz")
            self.assertEqual(st, 200, b)
            self.assertEqual(b.get("store"), "down")
            st, b = request(self.n1, "POST", "/v1/sessions", {"model": "charlm"})
            self.assertEqual(st, 503, b)
            st2, b2 = request(self.n2, "GET", "/v1/sessions/" + sid)
            self.assertEqual(st2, 503, b2)
            # the replies say what is wrong, and name no server (trial 24 N3: "store
            # 127.0.0.1:PORT: ..."): the address is in the log (event=store_down)
            for b in (b, b2):
                msg = b["error"]["message"]
                self.assertIn("session store", msg)
                self.assertNotIn("127.0.0.1", msg)
                self.assertNotIn(str(self.c.redis_port), msg)
            self.assertIn("event=store_down node=n1 msg=\"store 127.0.0.1:%d: "
                          % self.c.redis_port, self.c.log("n1"))
        finally:
            self.c.tool("redis-start")
        wait_for("the retried write", lambda: self.c.record_steps(sid) == len(toks), 5)
        self.assertEqual(request(self.n1, "GET", "/readyz")[1].get("store"), "up")
        st, b = step(self.n1, sid, [5])
        self.assertEqual(st, 200, b)
        # n1's lease lapsed while Redis was down; it registers again at its next renewal
        # (lease_ms / 3), and until then a new session's step gets 503 "this node's lease
        # lapsed; retry" (a CI run under ASan): the reference waits for that
        wait_for("n1's lease again", lambda: step(self.n1, create(self.n1), [1])[0] == 200, 5)
        self.assertEqual(b["outputs"], replay(self.n1, toks + [5])[len(toks):])

    def test_flushall_keeps_held_sessions(self):
        sids = [create(self.n1) for _ in range(2)]
        fed = {}
        for sid in sids:
            fed[sid] = self.tokens(3)
            self.assertEqual(step(self.n1, sid, fed[sid])[0], 200)
        wait_for("the write-behind", lambda: all(self.c.record_steps(s) == 3 for s in sids), 2)
        self.c.redis("FLUSHALL")
        stepped, idle = sids
        for _ in range(4):  # past the lease: the renewal finds Redis emptied
            t = self.tokens(2)
            st, b = step(self.n1, stepped, t)
            self.assertEqual(st, 200, b)
            fed[stepped] += t
            self.assertEqual(b["steps"], len(fed[stepped]))
            time.sleep(0.2)
        wait_for("both written anew", lambda: (self.c.record_steps(stepped),
                                               self.c.record_steps(idle))
                 == (len(fed[stepped]), 3), 3)
        self.assertIn("event=store_data_lost", self.c.log("n1"))
        for sid in sids:
            self.assertTrue(self.c.redis("HGET", "rnnd:{%s}:rec" % sid, "holder")
                            .startswith("n1 "))
            more = self.tokens(2)
            st, b = step(self.n2, sid, more)
            self.assertEqual((st, b.get("steps")), (200, len(fed[sid]) + 2), b)
            self.assertEqual(b["outputs"], replay(self.n2, fed[sid] + more)[len(fed[sid]):])

    def test_reset_import_delete_written_at_once(self):
        sid = create(self.n1)
        self.assertEqual(step(self.n1, sid, self.tokens(4))[0], 200)
        st, b = request(self.n1, "POST", "/v1/sessions/%s/reset" % sid, {})
        self.assertEqual(st, 200, b)
        self.assertEqual(self.c.record_steps(sid), 0)
        st, exp = request(self.n1, "GET", "/v1/sessions/%s/state" % sid)
        self.assertEqual(st, 200, exp)
        exp["steps"] = 12
        st, b = request(self.n1, "PUT", "/v1/sessions/%s/state" % sid, exp)
        self.assertEqual(st, 200, b)
        self.assertEqual(self.c.record_steps(sid), 12)
        st, b = request(self.n1, "DELETE", "/v1/sessions/" + sid)
        self.assertEqual(st, 204, b)
        self.assertEqual(self.c.redis("EXISTS", "rnnd:{%s}:rec" % sid), "0")
        self.assertEqual(request(self.n2, "GET", "/v1/sessions/" + sid)[0], 404)
        # a session created on n1 is free until used: n2 takes it at once
        sid2 = create(self.n1)
        st, b = step(self.n2, sid2, [3, 4])
        self.assertEqual(st, 200, b)
        self.assertEqual(b["steps"], 2)
        # a fork is written at once, free: n1 takes it from n2's fork and continues bitwise
        st, b = request(self.n2, "POST", "/v1/sessions/%s/fork" % sid2, {})
        self.assertEqual(st, 201, b)
        child = b["id"]
        self.assertEqual(self.c.record_steps(child), 2)
        self.assertEqual(self.c.redis("HGET", "rnnd:{%s}:rec" % child, "holder"), "")
        st, b = step(self.n1, child, [5])
        self.assertEqual(st, 200, b)
        self.assertEqual(b["steps"], 3)
        self.assertEqual(b["outputs"], replay(self.n1, [3, 4, 5])[2:])


class ClusterEnds(TwoNodes):
    """How a session ends in cluster mode (issue 17's trial 22): expiry and eviction delete
    the record and write the tombstone, rnnd:idx loses what Redis loses, the step count
    stays in its range, Redis's errors and restarts."""
    GROUP = "cluster_store"
    NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--store-sync-ms", str(SYNC_MS),
                 "--max-sessions", "4", "--session-evict", "lru", "--tombstone-s", "30",
                 "--drain-grace-ms", "0")

    def rec(self, sid):
        return "rnnd:{%s}:rec" % sid

    def in_idx(self, sid):
        return self.c.redis("ZSCORE", "rnnd:idx", sid) != ""

    def test_expired_and_evicted_stay_gone(self):
        # evicted: held by n1 (stepped there), pushed out by creations on the full node
        evicted = create(self.n1)
        self.assertEqual(step(self.n1, evicted, self.tokens(3))[0], 200)
        # written behind first: a session whose write is in flight is busy, not evictable
        wait_for("the write-behind", lambda: self.c.record_steps(evicted) == 3, 2)
        time.sleep(0.1)
        for _ in range(4):  # taken by n1 (the creator keeps no copy): the 5th it holds
            filler = create(self.n1)  # evicts the oldest idle one
            self.assertEqual(request(self.n1, "GET", "/v1/sessions/" + filler)[0], 200)
        st, b = request(self.n1, "GET", "/v1/sessions/" + evicted)
        self.assertEqual(st, 410, b)
        self.assertIn("evicted", b["error"]["message"])
        # expired: held by n1; and one never taken, free in Redis (expired by the record's
        # used_ms when n1 takes it)
        st, b = request(self.n1, "POST", "/v1/sessions", {"model": "charlm", "ttl_s": 1})
        self.assertEqual(st, 201, b)
        expired = b["id"]
        self.assertEqual(step(self.n1, expired, [1])[0], 200)
        st, b = request(self.n1, "POST", "/v1/sessions", {"model": "charlm", "ttl_s": 1})
        free_expired = b["id"]
        time.sleep(1.1)
        for sid in (expired, free_expired):
            st, b = request(self.n1, "GET", "/v1/sessions/" + sid)
            self.assertEqual(st, 410, b)
            self.assertIn("expired", b["error"]["message"])
        # the records are deleted, the tombstones written, the index entries dropped
        for sid, why in ((evicted, "evicted"), (expired, "expired"), (free_expired, "expired")):
            wait_for("the record's deletion", lambda: self.c.redis("EXISTS", self.rec(sid))
                     == "0", 2)
            self.assertTrue(self.c.redis("GET", "rnnd:{%s}:gone" % sid).startswith(why))
            self.assertFalse(self.in_idx(sid))
        # so every node answers 410 at once (not a wait for n1's hand-over), also once n1
        # has drained and released its node lease: nothing comes back to life
        for phase in ("n1 up", "n1 drained"):
            for sid in (evicted, expired, free_expired):
                t0 = time.monotonic()
                st, b = request(self.n2, "GET", "/v1/sessions/" + sid)
                self.assertEqual(st, 410, (phase, b))
                self.assertLess(time.monotonic() - t0, 0.5)
                self.assertEqual(step(self.n2, sid, [1])[0], 410, phase)
            if phase == "n1 up":
                self.c.tool("stop", "n1")

    def test_index_follows_the_records(self):
        # a record that expires in Redis itself (a dead node's session nobody asked for
        # again) leaves rnnd:idx within a second or two: the write-behind thread's sweep
        sid = create(self.n1)
        self.assertTrue(self.in_idx(sid))
        self.c.redis("DEL", self.rec(sid))  # what the record's TTL does
        wait_for("the sweep", lambda: not self.in_idx(sid), 3)
        # 8 sessions of ttl_s 1 held by a node of 4: evicted or expired, all leave Redis
        for _ in range(8):
            st, b = request(self.n1, "POST", "/v1/sessions", {"model": "charlm", "ttl_s": 1})
            self.assertEqual(st, 201, b)
            self.assertEqual(request(self.n1, "GET", "/v1/sessions/" + b["id"])[0], 200)
        wait_for("every record and index entry gone",
                 lambda: self.c.redis("ZCARD", "rnnd:idx") == "0" and
                 self.c.redis("KEYS", "rnnd:{*}:rec") == "", 4)

    def test_steps_bound_errors_and_redis_restart(self):
        # the step count stays in 0..2^63-1: an import at the top, then a step is refused
        sid = create(self.n1)
        top = 2 ** 63 - 1
        st, exp = request(self.n1, "GET", "/v1/sessions/%s/state" % sid)
        exp["steps"] = top
        self.assertEqual(request(self.n1, "PUT", "/v1/sessions/%s/state" % sid, exp)[0], 200)
        st, b = step(self.n1, sid, [1])
        self.assertEqual(st, 409, b)
        self.assertIn("9223372036854775807", b["error"]["message"])
        self.assertEqual(self.c.record_steps(sid), top)
        # so the record stays readable: n2 takes it over at that count
        st, b = request(self.n2, "GET", "/v1/sessions/" + sid)
        self.assertEqual((st, b.get("steps")), (200, top), b)
        # a forged record (free: the acquisition's script fails on its epoch) is no Redis
        # outage, and the reply names no server
        forged = create(self.n1)
        self.c.redis("HSET", self.rec(forged), "epoch", "x")
        st, b = request(self.n2, "GET", "/v1/sessions/" + forged)
        self.assertEqual(st, 503, b)
        self.assertIn("malformed", b["error"]["message"])
        self.assertNotIn("127.0.0.1", b["error"]["message"])
        self.assertNotIn("event=store_down", self.c.log("n2"))
        # the first request after a Redis restart reconnects instead of failing
        self.c.tool("redis-stop")
        self.c.tool("redis-start")
        st, b = request(self.n2, "POST", "/v1/sessions", {"model": "charlm"})
        self.assertEqual(st, 201, b)
class ClusterRedisReturn(TwoNodes):
    """The write-behind round is long (1 s) so that n1's own write comes well after n2's
    first request once Redis is back: the race the adversary trial lost (issue 17, finding
    1)."""
    GROUP = "cluster_store"
    NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--store-sync-ms", "1000")

    def test_redis_return_keeps_outage_steps(self):
        sid = create(self.n1)
        toks = self.tokens(3)
        self.assertEqual(step(self.n1, sid, toks)[0], 200)
        wait_for("the write-behind", lambda: self.c.record_steps(sid) == 3, 3)
        self.c.tool("redis-stop")
        answers, stop = [], threading.Event()

        def ask_n2():  # from before Redis returns, as fast as n2 answers
            while not stop.is_set():
                st, b = request(self.n2, "GET", "/v1/sessions/" + sid, timeout=5)
                answers.append((st, b.get("steps") if isinstance(b, dict) else None))
                if st == 200:
                    return
                time.sleep(0.01)

        asker = threading.Thread(target=ask_n2)
        try:
            for _ in range(5):
                t = self.tokens(2)
                st, b = step(self.n1, sid, t)
                self.assertEqual(st, 200, b)
                toks += t
            time.sleep(LEASE_MS / 1000 + 0.3)  # every node lease lapses in Redis
            asker.start()
        finally:
            self.c.tool("redis-start")
        asker.join(6)
        stop.set()
        asker.join()
        self.assertEqual(answers[-1], (200, len(toks)), "n2 has the outage's steps")
        self.assertEqual({st for st, _ in answers[:-1]} - {503}, set())
        st, b = step(self.n2, sid, [5])
        self.assertEqual((st, b["steps"]), (200, len(toks) + 1), b)
        self.assertEqual(b["outputs"], replay(self.n2, toks + [5])[len(toks):])


if __name__ == "__main__":
    unittest.main()
