"""What the cluster tests (tests/test_cluster_*.py) share: a local cluster from tools/cluster
(redis-server, rnnd nodes and HAProxy on loopback), brought up with each test's node count
and node arguments and brought down by close(), and the session requests they drive it with.

close() fails the test when a node's log holds a sanitizer report: a sanitizer build's
report goes to the node's log, not to the test's. Not a test itself; every wait is bounded.
"""
import json
import os
import random
import subprocess
import time
import unittest

from daemon_util import PYTHON3, tmpdir, url_request

SRCDIR = os.environ["RNND_SRCDIR"]
TOOL = os.path.join(SRCDIR, "tools", "cluster")
VOCAB = 96          # charlm's vocabulary: every token below it is valid
SANITIZER = ("Sanitizer", "runtime error:")


def request(url, method="GET", path="/readyz", body=None, timeout=5):
    """(status, parsed body); status None when the connection failed."""
    st, _, parsed = url_request(url, method, path, body, timeout)
    return st, parsed


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


def wait_for(what, cond, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class Cluster:
    """tools/cluster with NODES nodes in tmpdir(GROUP)/NAME, NODE_ARGS given to every node;
    brought down by close(). url, pid and nodes are keyed by node name (n1 ... nN); lb is
    HAProxy's url."""

    def __init__(self, group, name, nodes, *node_args):
        self.dir = os.path.join(tmpdir(group), name)
        subprocess.run(["rm", "-rf", self.dir], check=True)
        out = self.tool("up", "--nodes", str(nodes), "--dir", self.dir, "--", *node_args)
        info = json.loads(out.strip().splitlines()[-1])
        self.lb = info["url"]
        self.nodes = {n["name"]: n for n in info["nodes"]}
        self.url = {n["name"]: n["url"] for n in info["nodes"]}
        self.pid = {n["name"]: n["pid"] for n in info["nodes"]}
        self.redis_port = int(info["redis"].split(":")[2].split("/")[0])
        self.up_at = time.monotonic()

    def kill_dead_known(self, name, lease_ms):
        """SIGKILL node NAME once the others may take its sessions: a node takes a session
        from a holder whose lease key is missing only after Redis has answered it for
        lease_ms + 1 s, its own start included (docs/cluster.md, "Redis trouble"); a test
        that killed a node within that time of `up` got 503 "held by another node, which is
        alive" on a quiet machine (CI, stop 31)."""
        wait = self.up_at + lease_ms / 1000 + 1.2 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.tool("kill", name)

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
        """`down`, then every node's log checked, those of nodes added later included; the
        logs are checked even when `down` failed, and its failure raised after them."""
        p = subprocess.run([PYTHON3, TOOL, "down"], capture_output=True, text=True,
                           timeout=40, env=dict(os.environ, RNND_CLUSTER_DIR=self.dir))
        added = {f[:-4] for f in os.listdir(self.dir)
                 if f.startswith("n") and f.endswith(".log")}
        for name in sorted(set(self.url) | added):
            log = self.log(name)
            for bad in SANITIZER:
                if bad in log:
                    raise AssertionError("%s's log holds a %s report" % (name, bad))
        if p.returncode:
            raise AssertionError("tools/cluster down: %s" % p.stderr)

    def redis(self, *args):
        p = subprocess.run(["redis-cli", "-p", str(self.redis_port)] + list(args),
                           capture_output=True, text=True, timeout=10)
        return p.stdout.strip()

    def record_steps(self, sid):
        """The steps of SID's record in Redis, None when it has none."""
        v = self.redis("HGET", "rnnd:{%s}:rec" % sid, "steps")
        return int(v) if v else None


class TwoNodes(unittest.TestCase):
    """Each test on a cluster of its own: two nodes (self.n1, self.n2: their urls; self.c:
    the Cluster) in tmpdir(GROUP)/<test name>, given NODE_ARGS; and seeded random tokens.
    Has no test itself."""
    GROUP = "cluster"
    NODE_ARGS = ()

    def setUp(self):
        self.c = Cluster(self.GROUP, self._testMethodName, 2, *self.NODE_ARGS)
        self.addCleanup(self.c.close)
        self.n1, self.n2 = self.c.url["n1"], self.c.url["n2"]
        self.rng = random.Random(17)

    def tokens(self, n):
        return [self.rng.randrange(VOCAB) for _ in range(n)]

    def create_and_step(self, sessions):
        """{id: tokens fed} of SESSIONS sessions created on n1, each stepped there in 3 random
        chunks of 1 to 5 tokens, every reply's step count checked."""
        fed = {}
        for _ in range(sessions):
            sid = create(self.n1)
            fed[sid] = []
            for _ in range(3):
                t = self.tokens(self.rng.randint(1, 5))
                st, b = step(self.n1, sid, t)
                self.assertEqual(st, 200, b)
                fed[sid] += t
                self.assertEqual(b["steps"], len(fed[sid]))
        return fed
