"""Acceptance 1 to 6 of issue 17 (docs/cluster.md, "Acceptance"), loopback only: 3 nodes,
HAProxy and Redis from tools/cluster.

1. N sessions created through the load balancer and stepped in random chunks (1 to 6 steps)
   by 16 client threads, in rounds (every session's next chunk, shuffled): the outputs of
   every chunk are bitwise equal to those of one embedded node (no session_store) fed each
   session's whole input in one request.
3. In the middle of a round one node is drained (POST /v1/admin/drain, sent to it directly):
   its reply counts the sessions it wrote and released; it exits; the clients' requests
   that meet the drain (503, or 502 when HAProxy loses its connection to the exiting node)
   are retried through the balancer with `if_steps`, so none is applied twice; afterwards every
   session's step count is exactly what its client fed (0 steps lost) and its outputs stay
   bitwise equal.

2. (second test, a new cluster) In the middle of a round one node is SIGKILLed: sessions it
   held answer 503 (a live holder) until its lease lapses, then are taken from their last
   write; a client whose `if_steps` is refused with a lower count continues from there. 0
   sessions lost, none advanced twice (if_steps), none forked: at the end every count is
   what its client fed since the loss, and every chunk since is bitwise equal to one node.
   The loss is printed: the most steps one session went back, and the oldest lost reply's
   age at the kill (asserted at most store_sync_ms + lease_ms). lease_ms is 1000 here, below
   HAProxy's time to mark a node down (fall 2, inter 1s), on purpose: a session can then be
   taken by the node a refused connection was redispatched to, which is not always the node
   the ring picks once the dead node is down; the ring's node has it handed over (before
   hand-over it answered 503 for as long as that node lived: a session stuck, which this
   test would report as "still refused after 20 s"; docs/cluster.md).

4. (third test, a new cluster) In the middle of a round a 4th node is added (tools/cluster
   add: the node starts, HAProxy reloads with it): the sessions whose ids now hash to it
   are handed over by their live holders at their next request. At most 1/4 + 5% of the
   ids change node: measured on PROBES random ids (GET, 404, X-Rnnd-Node) before and after
   the add, since 300 sessions alone would put a binomial spread of 2.5% around the ring's
   share; the sessions themselves (the node answering a session's last request before the
   add against after it) move only to the new node, which counts a hand-over taken for
   each; none loses a step and every chunk stays bitwise equal.

5. (fourth test, a new cluster, 30 sessions) A stale owner: the node holding most sessions
   gets a step on one of them and is SIGSTOPped at once (its write still to come; when the
   write-behind's tick fell before the stop, the node goes on and another session is tried),
   past its lease and HAProxy's time to mark it down; every session is stepped through the balancer
   meanwhile; SIGCONT: its pending write is refused by the fence, a client that still
   reaches it directly (if_steps at the true count) gets 200 at that count (its stale copy
   is confirmed against the record, dropped, and the session handed back), and no record's
   step count goes back in time; every chunk bitwise equal to one node.
6. (fifth test, a new cluster) Redis stopped (tools/cluster redis-stop) in the middle of
   round 2 and started again 5 s later, the rounds going on meanwhile: not one request is
   refused or retried (every session's owner lives and serves it from memory), and once
   Redis is back every record catches up with its client's count; every chunk bitwise.

N = 300 (the issue's number). On this project's 2-core build machine, shared with other
builds, tests 1 to 3 take about 5 to 10 s each and tests 4, 5 and 6 about 20, 30 and 15 to 45 s (the cluster's start,
the lease wait, the add, the probes, the reference replay); the bound is 100 s each.
"""
import json
import os
import random
import signal
import threading
import time
import unittest

from cluster_util import SRCDIR, VOCAB, Cluster, wait_for
from daemon_util import Daemon, url_request
from test_cluster_metrics import metrics

N = 300
ROUNDS = 4
THREADS = 16
BOUND_S = 100
DRAINED = "n2"
KILL_SYNC_MS = 50
KILL_LEASE_MS = 1000
PROBES = 1000
STALE_N = 30
STALE_SYNC_MS = 300
STALE_LEASE_MS = 1000
OUTAGE_S = 5


def post(url, path, body):
    st, node, parsed = url_request(url, "POST", path, body, 10)
    return st, node, parsed


class Accept(unittest.TestCase):
    def setUp(self):
        self.t0 = time.monotonic()
        self.rng = random.Random(1717)
        self.where = {}  # sid: [(round, the node that answered), ...]
        self.round = 0

    def up(self, *args):
        c = Cluster("cluster_accept", self._testMethodName, 3, *args)
        self.addCleanup(c.close)
        self.c = c
        self.lb = c.lb
        self.nodes = c.nodes

    def step(self, sid, sess, toks, errors, retries, losses):
        """One chunk through the balancer; retried (with if_steps) while a node drains or
        its sessions wait for a dead node's lease. LOSSES: where a session that went back
        is recorded (None: a loss is an error)."""
        fed, got, times = sess
        end = time.monotonic() + 20
        while time.monotonic() < end:
            at = len(fed)
            st, node, b = post(self.lb, "/v1/sessions/%s/step" % sid,
                            {"inputs": toks, "outputs": "all", "if_steps": at})
            if st == 200:
                self.where.setdefault(sid, []).append((self.round, node))
                if b["steps"] != at + len(toks):
                    errors.append("%s: %d steps after %d + %d" % (sid[:8], b["steps"], at,
                                                                   len(toks)))
                got.append((at, b["outputs"]))
                fed += toks
                times.append((len(fed), time.monotonic()))
                return
            now = b["error"].get("steps") if st == 409 and b else None
            if now == at + len(toks):
                fed += toks  # applied, its reply lost to the drain: no outputs to compare
                retries.append("applied")
                return
            if now is not None and now < at and losses is not None:
                # taken from its last write after its node died: continue from there
                first_lost = min(t for n, t in times if n > now)
                losses.append((at - now, first_lost))
                del fed[now:]
                got[:] = [(a, o) for a, o in got if a + len(o) <= now]
                times[:] = [(n, t) for n, t in times if n <= now]
                continue
            # 503: the node drains, or a dead node's lease has not lapsed yet; 502 or no
            # answer: the balancer lost its connection to the node as it exited (the outcome
            # unknown: if_steps makes the retry safe)
            if st not in (None, 502, 503):
                errors.append("%s: %s %s" % (sid[:8], st, b))
                return
            retries.append(st)
            time.sleep(0.05)
        errors.append("%s: still refused after 20 s" % sid[:8])

    def run_round(self, plan, sessions, errors, retries, midway=None, losses=None):
        lock = threading.Lock()
        todo = list(plan)
        done = [0]

        def worker():
            while True:
                with lock:
                    if not todo:
                        return
                    sid, toks = todo.pop()
                    done[0] += 1
                    fire = midway is not None and done[0] == len(plan) // 2
                if fire:
                    midway()
                self.step(sid, sessions[sid], toks, errors, retries, losses)

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND_S)

    def drive(self, midway, losses=None):
        """N sessions created, then ROUNDS rounds; MIDWAY called halfway through round 2.
        Returns {sid: (fed, got, times)}."""
        errors, retries = [], []
        ids = []
        lock = threading.Lock()

        def creator(k):
            for _ in range(N // THREADS + (k < N % THREADS)):
                st, _, b = post(self.lb, "/v1/sessions", {"model": "charlm"})
                with lock:
                    if st == 201:
                        ids.append(b["id"])
                    else:
                        errors.append("create: %s %s" % (st, b))

        threads = [threading.Thread(target=creator, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND_S)
        self.assertEqual(errors, [])
        self.assertEqual(len(ids), N)
        sessions = {sid: ([], [], []) for sid in ids}
        for r in range(ROUNDS):
            self.round = r
            plan = [(sid, [self.rng.randrange(VOCAB) for _ in range(self.rng.randint(1, 6))])
                    for sid in ids]
            self.rng.shuffle(plan)
            self.run_round(plan, sessions, errors, retries, midway if r == 2 else None, losses)
            self.assertEqual(errors, [], "round %d" % r)
        self.retries = retries
        return sessions

    def check_sessions(self, sessions):
        """0 steps lost or added since the last loss, and bitwise equal to one node."""
        for sid, (fed, _, _) in sessions.items():
            st, _, b = url_request(self.lb, "GET", "/v1/sessions/" + sid, None, 10)
            self.assertEqual(st, 200, b)
            self.assertEqual(b["steps"], len(fed), "%s: steps lost or added" % sid[:8])
        models = {"charlm": os.path.join(SRCDIR, "models", "charlm.rnnd")}
        with Daemon(models) as ref:
            for sid, (fed, got, _) in sessions.items():
                st, _, b = ref.request("POST", "/v1/sessions", {"model": "charlm"})
                self.assertEqual(st, 201, b)
                st, _, want = ref.request("POST", "/v1/sessions/%s/step" % b["id"],
                                          {"inputs": fed, "outputs": "all"})
                self.assertEqual(st, 200, want)
                ref.request("DELETE", "/v1/sessions/" + b["id"])
                for at, outs in got:
                    self.assertEqual(outs, want["outputs"][at:at + len(outs)],
                                     "%s: chunk at step %d differs from one node" % (sid[:8], at))

    def test_300_sessions_bitwise_then_drain(self):
        self.up("--store-sync-ms", "50")
        drained = []

        def drain():
            st, _, b = post(self.nodes[DRAINED]["url"], "/v1/admin/drain", {})
            drained.append((st, b))

        sessions = self.drive(drain)
        # 3: the drain answered with its counts and the node is gone
        self.assertEqual(len(drained), 1)
        st, b = drained[0]
        self.assertEqual(st, 200, b)
        self.assertGreater(b["sessions_written"], 0, "the drained node held sessions")
        self.assertEqual(b["sessions_unwritten"], 0)
        self.assertEqual(b["leases_released"], b["sessions_written"])
        self.assertTrue(b["node_lease_released"])
        st, _, _ = url_request(self.nodes[DRAINED]["url"], "GET", "/healthz", None, 2)
        self.assertIsNone(st, "the drained node exited")

        # 1, and 0 steps lost: every session's count, read through the balancer, is what was
        # fed, and every chunk is bitwise equal to one node's
        self.check_sessions(sessions)
        took = time.monotonic() - self.t0
        print("acceptance: N=%d rounds=%d threads=%d retries=%d (503: %d, 502: %d, applied with the reply lost: %d) drained=%s in %.1f s"
              % (N, ROUNDS, THREADS, len(self.retries), self.retries.count(503),
                 self.retries.count(502), self.retries.count("applied"), drained[0][1], took))
        self.assertLess(took, BOUND_S)

    def test_sigkill(self):
        self.up("--store-sync-ms", str(KILL_SYNC_MS), "--lease-ms", str(KILL_LEASE_MS))
        killed = []

        def kill():  # at once, not through tools/cluster's own start-up time
            os.killpg(self.nodes[DRAINED]["pid"], signal.SIGKILL)
            killed.append(time.monotonic())

        losses = []
        sessions = self.drive(kill, losses)
        self.assertEqual(len(killed), 1)
        self.check_sessions(sessions)
        # each session resumed at a step count at most store_sync_ms + lease_ms old
        worst_steps = max([n for n, _ in losses], default=0)
        worst_ms = max([(killed[0] - t) * 1000 for _, t in losses], default=0)
        self.assertLessEqual(worst_ms, KILL_SYNC_MS + KILL_LEASE_MS)
        took = time.monotonic() - self.t0
        print("acceptance 2: N=%d, %s killed: %d sessions went back, worst %d steps and %.0f ms "
              "(store_sync_ms %d, lease_ms %d); retries=%d in %.1f s"
              % (N, DRAINED, len(losses), worst_steps, worst_ms, KILL_SYNC_MS, KILL_LEASE_MS,
                 len(self.retries), took))
        self.assertLess(took, BOUND_S)

    def ring(self, ids):
        """{id: the node HAProxy sends it to} for IDS (unknown ids: each answers 404)."""
        out, lock, todo = {}, threading.Lock(), list(ids)

        def worker():
            while True:
                with lock:
                    if not todo:
                        return
                    sid = todo.pop()
                st, node, _ = url_request(self.lb, "GET", "/v1/sessions/" + sid, None, 10)
                with lock:
                    out[sid] = node if st == 404 else "%s answered %s" % (node, st)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND_S)
        return out

    def test_add_node(self):
        self.up("--store-sync-ms", "50")
        added = []
        probes = ["%032x" % self.rng.getrandbits(128) for _ in range(PROBES)]
        ring3 = self.ring(probes)

        def add():
            out = self.c.tool("add")
            added.append(json.loads(out.strip().splitlines()[-1]))

        sessions = self.drive(add)
        ring4 = self.ring(probes)
        self.assertEqual(set(ring3.values()), set(self.nodes), "every probe 404")
        share = sum(ring3[p] != ring4[p] for p in probes) / PROBES
        self.assertEqual(len(added), 1)
        new = [n for n in added[0]["nodes"] if n["name"] not in self.nodes]
        self.assertEqual(len(new), 1, added[0])
        new = new[0]
        # 4: the node of each session's last answer before the round of the add, and after
        moved = []
        for sid in sessions:
            before = [n for r, n in self.where[sid] if r < 2][-1]
            after = [n for r, n in self.where[sid] if r > 2][-1]
            self.assertIsNotNone(before)
            if after != before:
                moved.append((sid, after))
        print("acceptance 4: N=%d, %s added: %.1f%% of %d ids and %d sessions (%.1f%%) changed "
              "node; retries=%d" % (N, new["name"], 100.0 * share, PROBES, len(moved),
                                    100.0 * len(moved) / N, len(self.retries)))
        self.assertEqual({ring4[p] for p in probes if ring3[p] != ring4[p]}, {new["name"]})
        self.assertLessEqual(share, 1 / 4 + 0.05, "at most 1/4 + 5% of the ids move")
        self.assertGreater(len(moved), 0, "the new node took its share")
        self.assertEqual({a for _, a in moved}, {new["name"]}, "only to the new node")
        m, _ = metrics(new["url"])
        self.assertGreaterEqual(m['rnnd_session_handovers_total{direction="taken"}'],
                                len(moved), "handed over by live holders")
        # none loses a step: every count is what its client fed, every chunk bitwise
        self.check_sessions(sessions)
        took = time.monotonic() - self.t0
        self.assertLess(took, BOUND_S)

    def test_stale_owner(self):
        """5: a node paused past its lease through HAProxy; the others take and step its
        sessions; resumed, it writes nothing over them and serves none from its stale copy."""
        self.up("--store-sync-ms", str(STALE_SYNC_MS), "--lease-ms", str(STALE_LEASE_MS))
        errors, retries, losses = [], [], []
        ids = []
        for _ in range(STALE_N):
            st, _, b = post(self.lb, "/v1/sessions", {"model": "charlm"})
            self.assertEqual(st, 201, b)
            ids.append(b["id"])
        sessions = {sid: ([], [], []) for sid in ids}

        def chunk():
            return [self.rng.randrange(VOCAB) for _ in range(self.rng.randint(1, 6))]

        for sid in ids:
            self.step(sid, sessions[sid], chunk(), errors, retries, None)
        self.assertEqual(errors, [])
        holder = {sid: self.where[sid][-1][1] for sid in ids}
        stale = max(self.nodes, key=lambda n: sum(h == n for h in holder.values()))
        mine = [sid for sid in ids if holder[sid] == stale]
        wait_for("the write-behind", lambda: all(
            self.c.record_steps(sid) == len(sessions[sid][0]) for sid in ids), 5)
        url = self.nodes[stale]["url"]
        pid = self.nodes[stale]["pid"]
        self.pause_with_write_pending(url, pid, mine, sessions, chunk)
        try:
            # past its lease and HAProxy's time to mark it down (fall 2, inter 1 s)
            time.sleep(STALE_LEASE_MS / 1000 + 3.5)
            for sid in ids:
                self.step(sid, sessions[sid], chunk(), errors, retries, losses)
            self.assertEqual(errors, [])
            self.assertLessEqual(len(losses), 1, "only the session stepped unwritten went back")
            wait_for("the write-behind", lambda: all(
                self.c.record_steps(sid) == len(sessions[sid][0]) for sid in ids), 5)
            taken = {sid: self.c.record_steps(sid) for sid in ids}
            self.assertTrue(all(not self.c.redis("HGET", "rnnd:{%s}:rec" % sid, "holder")
                                .startswith(stale + " ") for sid in mine), "all taken")
        finally:
            os.killpg(pid, signal.SIGCONT)
        # its pending write is refused by the fence
        wait_for("the stale write refused", lambda: metrics(url)[0][
            'rnnd_store_write_failures_total{reason="refused"}'] >= 1, 5)
        # a client that still reaches it (a stale route) is served from the record, never
        # from the stale copy: the session is handed back at its true step count
        for sid in mine:
            fed, got, _ = sessions[sid]
            at, toks = len(fed), chunk()
            st, _, b = post(url, "/v1/sessions/%s/step" % sid,
                            {"inputs": toks, "outputs": "all", "if_steps": at})
            self.assertEqual(st, 200, b)
            self.assertEqual(b["steps"], at + len(toks))
            got.append((at, b["outputs"]))
            fed += toks
        wait_for("the write-behind", lambda: all(
            self.c.record_steps(sid) == len(sessions[sid][0]) for sid in ids), 5)
        for sid in ids:
            self.assertGreaterEqual(self.c.record_steps(sid), taken[sid], "never back in time")
        self.check_sessions(sessions)
        print("acceptance 5: %d sessions, %s paused %.1f s holding %d: %d went back, "
              "retries=%d" % (STALE_N, stale, STALE_LEASE_MS / 1000 + 3.5, len(mine),
                              len(losses), len(retries)))

    def pause_with_write_pending(self, url, pid, mine, sessions, chunk):
        """One of MINE stepped on URL just before its node PID is SIGSTOPped, its write still
        to come: a chunk whose reply its client is taken to have lost (not counted in fed).
        The write-behind ticks every STALE_SYNC_MS whatever the step's time, so the tick can
        fall between the reply and the SIGSTOP (a few ms, more under ThreadSanitizer): when
        the record already holds the chunk, the node goes on (SIGCONT, well within its
        lease), the chunk counts as fed, and the next session is tried."""
        for sid in mine[:5]:
            fed, got, _ = sessions[sid]
            at, toks = len(fed), chunk()
            st, _, b = post(url, "/v1/sessions/%s/step" % sid,
                            {"inputs": toks, "outputs": "all", "if_steps": at})
            self.assertEqual(st, 200, b)
            os.killpg(pid, signal.SIGSTOP)
            time.sleep(0.2)  # a write sent before the stop reaches Redis
            if self.c.record_steps(sid) == at:
                return
            self.assertEqual(self.c.record_steps(sid), at + len(toks))
            os.killpg(pid, signal.SIGCONT)
            got.append((at, b["outputs"]))
            fed += toks
        self.fail("the write-behind landed before the pause 5 times")

    def test_redis_outage(self):
        """6: Redis stopped for OUTAGE_S mid-run, then started again."""
        self.up("--store-sync-ms", "50")
        outage = []

        def redis_up():
            time.sleep(OUTAGE_S)
            self.c.tool("redis-start")
            outage.append(time.monotonic())

        t = threading.Thread(target=redis_up)

        def redis_down():  # stopped before the round goes on; started again OUTAGE_S later
            self.c.tool("redis-stop")
            outage.append(time.monotonic())
            t.start()

        sessions = self.drive(redis_down)
        t.join(BOUND_S)
        self.assertEqual(len(outage), 2)
        # 0 errors for sessions whose owner lives (all of them): not one request retried
        self.assertEqual(self.retries, [], "no request refused during the outage")
        stepped = sum(1 for _, _, times in sessions.values() for _, when in times
                      if outage[0] < when < outage[1])
        # nothing lost: every record catches up, every count and chunk exact
        wait_for("the records written after the outage", lambda: all(
            self.c.record_steps(sid) == len(sessions[sid][0]) for sid in sessions), 10)
        self.check_sessions(sessions)
        print("acceptance 6: N=%d, Redis stopped %.1f s: %d steps answered meanwhile, 0 "
              "retries" % (N, outage[1] - outage[0], stepped))
        self.assertGreater(stepped, 0, "requests ran during the outage")
        self.assertLess(time.monotonic() - self.t0, BOUND_S)


if __name__ == "__main__":
    unittest.main()
