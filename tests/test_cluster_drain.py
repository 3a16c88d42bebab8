"""Drain in cluster mode (issue 17; docs/cluster.md, "Failure, drain, Redis trouble"): two
nodes and a redis-server on loopback (tools/cluster), requests sent to the nodes directly.

The write-behind period is long (5 s) and the lease long (5 s), so that a drain that did not
write the sessions itself, or did not release them, shows: the steps would be missing from
the record, or n2 would answer 503 (a live holder) until the lease lapsed.

- POST /v1/admin/drain on n1: for drain_grace_ms n1 answers /readyz 503 and creations 503
  while it still steps the sessions it holds; then 200 with the counts, n1 exits cleanly, and n2 at once continues
  every session n1 held at its exact step count (0 steps lost), bitwise equal to a one-node
  replay of the same inputs.
- SIGTERM of n1 (tools/cluster stop): the same.
- Without session_store the endpoint answers 409 and the daemon stays up; a key of scope
  infer gets 403.
Bounded: about 10 s.
"""
import json
import os
import random
import subprocess
import threading
import time
import unittest

from daemon_util import PYTHON3, Daemon, bearer, tmpdir, url_request, write_secret

SRCDIR = os.environ["RNND_SRCDIR"]
TOOL = os.path.join(SRCDIR, "tools", "cluster")
LEASE_MS = 5000
SYNC_MS = 5000
VOCAB = 96
SESSIONS = 6
GRACE_MS = 1500


def request(url, method="GET", path="/readyz", body=None, timeout=5):
    st, _, parsed = url_request(url, method, path, body, timeout)
    return st, parsed


class Cluster:
    """tools/cluster with two nodes, brought down by close()."""

    def __init__(self, name):
        self.dir = os.path.join(tmpdir("cluster_drain"), name)
        subprocess.run(["rm", "-rf", self.dir], check=True)
        out = self.tool("up", "--nodes", "2", "--dir", self.dir, "--",
                        "--lease-ms", str(LEASE_MS), "--store-sync-ms", str(SYNC_MS),
                        "--drain-grace-ms", str(GRACE_MS))
        self.info = json.loads(out.strip().splitlines()[-1])
        self.url = {n["name"]: n["url"] for n in self.info["nodes"]}
        self.pid = {n["name"]: n["pid"] for n in self.info["nodes"]}
        self.redis_port = int(self.info["redis"].split(":")[2].split("/")[0])

    def tool(self, *args):
        p = subprocess.run([PYTHON3, TOOL] + list(args), capture_output=True, text=True,
                           timeout=40, env=dict(os.environ, RNND_CLUSTER_DIR=self.dir))
        if p.returncode:
            raise AssertionError("tools/cluster %s: %s" % (" ".join(args), p.stderr))
        return p.stdout

    def log(self, name):
        with open(os.path.join(self.dir, name + ".log"), errors="replace") as f:
            return f.read()

    def close(self):
        subprocess.run([PYTHON3, TOOL, "down"], capture_output=True, timeout=40,
                       env=dict(os.environ, RNND_CLUSTER_DIR=self.dir))
        for name in self.url:
            log = self.log(name)
            for bad in ("Sanitizer", "runtime error:"):
                if bad in log:
                    raise AssertionError("%s's log holds a %s report" % (name, bad))

    def record_steps(self, sid):
        p = subprocess.run(["redis-cli", "-p", str(self.redis_port), "HGET",
                            "rnnd:{%s}:rec" % sid, "steps"],
                           capture_output=True, text=True, timeout=10)
        v = p.stdout.strip()
        return int(v) if v else None


def create(url):
    st, b = request(url, "POST", "/v1/sessions", {"model": "charlm"})
    assert st == 201, (st, b)
    return b["id"]


def step(url, sid, tokens):
    return request(url, "POST", "/v1/sessions/%s/step" % sid,
                   {"inputs": tokens, "outputs": "all"})


def replay(url, tokens):
    """The outputs of one fresh session fed TOKENS on node URL (the single-node reference)."""
    sid = create(url)
    st, b = step(url, sid, tokens)
    assert st == 200, (st, b)
    request(url, "DELETE", "/v1/sessions/" + sid)
    return b["outputs"]


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


class ClusterDrain(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(self._testMethodName)
        self.addCleanup(self.c.close)
        self.n1, self.n2 = self.c.url["n1"], self.c.url["n2"]
        self.rng = random.Random(17)

    def tokens(self, n):
        return [self.rng.randrange(VOCAB) for _ in range(n)]

    def stepped_on_n1(self):
        """SESSIONS sessions taken and stepped on n1, none written behind yet."""
        fed = {}
        for _ in range(SESSIONS):
            sid = create(self.n1)
            fed[sid] = []
            for _ in range(3):
                t = self.tokens(self.rng.randint(1, 5))
                st, b = step(self.n1, sid, t)
                self.assertEqual(st, 200, b)
                fed[sid] += t
                self.assertEqual(b["steps"], len(fed[sid]))
        for sid in fed:  # the record holds the creation's 0 steps: only a drain writes more
            self.assertEqual(self.c.record_steps(sid), 0)
        # n1 holds them and lives: n2 names it
        st, b = step(self.n2, next(iter(fed)), [1])
        self.assertEqual(st, 503, b)
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
