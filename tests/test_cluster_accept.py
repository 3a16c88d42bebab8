"""Acceptance 1, 2 and 3 of issue 17 (docs/cluster.md, "Acceptance"), loopback only: 3 nodes,
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
   age at the kill (asserted at most store_sync_ms + lease_ms). lease_ms is 3000 here, above
   HAProxy's time to mark a node down (fall 2, inter 1s): with a shorter lease a session
   can be taken by the node a refused connection was redispatched to, which is not always
   the node the ring picks once the dead node is down, and then answers 503 from the ring's
   node until hand-over is built (docs/cluster.md).

N = 300 (the issue's number). On this project's 2-core build machine, shared with other
builds, each test takes about 5 to 8 s (the cluster's start, the lease wait, the reference
replay); the bound is 100 s each.
"""
import os
import random
import signal
import threading
import time
import unittest

from cluster_util import SRCDIR, VOCAB, Cluster
from daemon_util import Daemon, url_request

N = 300
ROUNDS = 4
THREADS = 16
BOUND_S = 100
DRAINED = "n2"
KILL_SYNC_MS = 50
KILL_LEASE_MS = 3000


def post(url, path, body):
    st, node, parsed = url_request(url, "POST", path, body, 10)
    return st, node, parsed


class Accept(unittest.TestCase):
    def setUp(self):
        self.t0 = time.monotonic()
        self.rng = random.Random(1717)

    def up(self, *args):
        c = Cluster("cluster_accept", self._testMethodName, 3, *args)
        self.addCleanup(c.close)
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
            st, _, b = post(self.lb, "/v1/sessions/%s/step" % sid,
                            {"inputs": toks, "outputs": "all", "if_steps": at})
            if st == 200:
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


if __name__ == "__main__":
    unittest.main()
