"""Drain in cluster mode (issue 17; docs/cluster.md, "Failure, drain, Redis trouble"): two
nodes and a redis-server on loopback (tools/cluster), requests sent to the nodes directly.

The write-behind period is long (5 s) and the lease long (5 s), so that a drain that did not
write the sessions itself, or did not release them, shows: the steps would be missing from
the record, or n2 would wait for the lease to lapse (a live holder that does not answer).

- POST /v1/admin/drain on n1: for drain_grace_ms n1 answers /readyz 503 and creations 503
  while it still steps the sessions it holds; then 200 with the counts, n1 exits cleanly, and n2 at once continues
  every session n1 held at its exact step count (0 steps lost), bitwise equal to a one-node
  replay of the same inputs.
- SIGTERM of n1 (tools/cluster stop): the same.
- Without session_store the endpoint answers 409 and the daemon stays up; a key of scope
  infer gets 403.
Bounded: about 10 s.
"""
import os
import threading
import time
import unittest

from cluster_util import SRCDIR, TwoNodes, replay, request, step
from daemon_util import Daemon, bearer, tmpdir, write_secret

LEASE_MS = 5000
SYNC_MS = 5000
SESSIONS = 6
GRACE_MS = 1500


def wait_gone(pid, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie of tools/cluster's (already reaped or not) counts as gone
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


class ClusterDrain(TwoNodes):
    GROUP = "cluster_drain"
    NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--store-sync-ms", str(SYNC_MS),
                 "--drain-grace-ms", str(GRACE_MS))

    def stepped_on_n1(self):
        """SESSIONS sessions taken and stepped on n1, none written behind yet."""
        fed = self.create_and_step(SESSIONS)
        for sid in fed:  # the record holds the creation's 0 steps: only a drain writes more
            self.assertEqual(self.c.record_steps(sid), 0)
        # n1 holds them (a request on n2 would have one handed over: not here)
        for sid in fed:
            self.assertTrue(self.c.redis("HGET", "rnnd:{%s}:rec" % sid, "holder")
                            .startswith("n1 "))
        return fed

    def continue_on_n2(self, fed, drained_at):
        for sid, toks in fed.items():
            self.assertEqual(self.c.record_steps(sid), len(toks), "written exactly")
            more = self.tokens(6)
            st, b = step(self.n2, sid, more)
            self.assertEqual(st, 200, b)
            self.assertEqual(b["steps"], len(toks) + len(more), "0 steps lost")
            ref = replay(self.n2, toks + more)
            self.assertEqual(b["outputs"], ref[len(toks):], "session continued bitwise")
        # released, not expired: n2 took them well before n1's lease could lapse
        self.assertLess(time.monotonic() - drained_at, LEASE_MS / 1000 * 0.8)

    def test_drain_endpoint(self):
        fed = self.stepped_on_n1()
        answer = []
        t = threading.Thread(target=lambda: answer.append(
            request(self.n1, "POST", "/v1/admin/drain", {}, timeout=20)))
        t.start()
        # the grace: not ready, no new session, the sessions held still served
        time.sleep(GRACE_MS / 1000 / 4)
        st, b = request(self.n1)
        self.assertEqual(st, 503, b)
        self.assertIn("draining", b["error"]["message"])
        st, b = request(self.n1, "POST", "/v1/sessions", {"model": "charlm"})
        self.assertEqual(st, 503, b)
        self.assertIn("draining", b["error"]["message"])
        sid = next(iter(fed))
        t0 = self.tokens(3)
        st, b = step(self.n1, sid, t0)
        self.assertEqual(st, 200, b)
        fed[sid] += t0
        self.assertEqual(b["steps"], len(fed[sid]))
        t.join(20)
        st, b = answer[0]
        drained_at = time.monotonic()
        self.assertEqual(st, 200, b)
        self.assertEqual(b["status"], "drained")
        self.assertEqual(b["node"], "n1")
        self.assertEqual(b["sessions_written"], SESSIONS)
        self.assertEqual(b["sessions_unwritten"], 0)
        self.assertEqual(b["leases_released"], SESSIONS)
        self.assertTrue(b["node_lease_released"])
        self.assertTrue(b["exiting"])
        self.assertTrue(wait_gone(self.c.pid["n1"], 10), "n1 exits after the drain")
        self.continue_on_n2(fed, drained_at)
        log = self.c.log("n1")
        self.assertIn("event=drain_requested", log)
        self.assertIn("clean=1", log)

    def test_sigterm_drains(self):
        fed = self.stepped_on_n1()
        self.c.tool("stop", "n1")
        drained_at = time.monotonic()
        self.continue_on_n2(fed, drained_at)
        log = self.c.log("n1")
        self.assertIn("written=%d unwritten=0" % SESSIONS, log)
        self.assertIn("clean=1", log)


class EmbeddedDrain(unittest.TestCase):
    def test_drain_needs_cluster_mode(self):
        work = tmpdir("cluster_drain_embedded")
        keys = os.path.join(work, "keys")
        write_secret(keys, "admin-key-0123456789 ops admin\ninfer-key-0123456789 app infer\n")
        models = {"charlm": os.path.join(SRCDIR, "models", "charlm.rnnd")}
        with Daemon(models, "--api-keys-file", keys) as d:
            st, _, b = d.request("POST", "/v1/admin/drain", {},
                                 headers=bearer("infer-key-0123456789"))
            self.assertEqual(st, 403, b)
            st, _, b = d.request("POST", "/v1/admin/drain", {},
                                 headers=bearer("admin-key-0123456789"))
            self.assertEqual(st, 409, b)
            self.assertEqual(b["error"]["code"], "conflict")
            self.assertIn("session_store", b["error"]["message"])
            st, _, b = d.request("GET", "/readyz", headers=bearer("admin-key-0123456789"))
            self.assertEqual(st, 200, "still up and ready")


if __name__ == "__main__":
    unittest.main()
