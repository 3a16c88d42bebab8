"""tools/cluster brings up a local cluster and its commands do what docs/cluster.md says.

Two nodes behind HAProxy (loopback only): requests through the balancer reach both; every
request of one session id reaches one node and different ids spread (the consistent hash on
the id in the path), and a Triton sequence id likewise; a session created through the
balancer answers on the node its id hashes to, whichever node created it (cluster mode:
tools/cluster gives the nodes its Redis). kill, start, pause, resume, redis-stop,
redis-start and add behave, add reloading HAProxy under a stream of requests with none
failing; after down nothing the cluster started is running, and the test brings the cluster
down in a finally, so a failing check leaves nothing behind either. Bounded: well under 60 s.

test_taken_ports: a port taken between its pick and its bind is picked again.

Env: RNND_BIN, RNND_SRCDIR, RNND_TEST_TMP. test_cluster is one test: each command acts on the
cluster the ones before it left, so the steps are not tests of their own.
"""
import contextlib
import importlib.machinery
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import types
import unittest

from daemon_util import PYTHON3, RNND_BIN, Case, tmpdir, url_request
from daemon_util import RUNNING as C
SRCDIR = os.environ["RNND_SRCDIR"]
TOOL = os.path.join(SRCDIR, "tools", "cluster")
DEADLINE = time.monotonic() + 55


def cluster(*args, check=True, timeout=40):
    p = subprocess.run([PYTHON3, TOOL] + list(args), capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, RNND_CLUSTER_DIR=DIR))
    if check:
        C.check(p.returncode == 0, "tools/cluster %s: exit 0 (%d %s)"
                % (" ".join(args), p.returncode, p.stderr.strip()))
    return p


def request(url, method="GET", path="/v1/models", body=None, timeout=5):
    """(status, node that answered or None, parsed body); status None when the connection
    failed."""
    return url_request(url, method, path, body, timeout)


def wait_for(what, cond, timeout=10):
    end = min(time.monotonic() + timeout, DEADLINE)
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return C.check(False, what)


def proc_alive(pid, start):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == start


def recorded_processes():
    try:
        with open(os.path.join(DIR, "cluster.json")) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return []
    return [(p["pid"], p["start"]) for p in [st["haproxy"], st["redis"]] + st["nodes"]
            if p.get("pid")]


def random_id():
    return "%032x" % random.getrandbits(128)


def check_routing(lb):
    seen = {request(lb)[1] for _ in range(12)}
    C.eq(seen, {"n1", "n2"}, "requests through the balancer reach both nodes")
    by_node = {}
    for _ in range(24):
        sid = random_id()
        nodes = {request(lb, path="/v1/sessions/" + sid)[1],
                 request(lb, "POST", "/v1/sessions/%s/step" % sid, {"inputs": [1]})[1],
                 request(lb, path="/v1/sessions/%s/state" % sid)[1]}
        C.check(len(nodes) == 1 and None not in nodes,
                "every request of one session id reaches one node (%s)" % nodes)
        by_node.setdefault(nodes.pop(), []).append(sid)
    C.eq(sorted(by_node), ["n1", "n2"], "session ids spread over both nodes")
    seqs = set()
    for k in range(1, 13):
        body = {"parameters": {"sequence_id": k}, "inputs": []}
        nodes = {request(lb, "POST", "/v2/models/charlm/infer", body)[1] for _ in range(3)}
        C.check(len(nodes) == 1 and None not in nodes,
                "a Triton sequence id reaches one node (%s)" % nodes)
        seqs |= nodes
    C.eq(seqs, {"n1", "n2"}, "sequence ids spread over both nodes")
    # cluster mode: a session is found wherever its id hashes, whichever node created it
    # (tests/test_cluster_store.py checks the sessions themselves)
    for _ in range(8):
        st, creator, body = request(lb, "POST", "/v1/sessions", {"model": "charlm"})
        C.eq(st, 201, "a session is created through the balancer")
        if st != 201:
            continue
        st2, node, out = request(lb, "POST", "/v1/sessions/%s/step" % body["id"],
                                 {"inputs": [1]})
        C.check(st2 == 200 and out["steps"] == 1,
                "created on %s, stepped on %s: found (%s %s)" % (creator, node, st2, out))
    return by_node


def check_kill_start(lb, nodes, by_node):
    cluster("kill", "n1")
    C.check(not proc_alive(*nodes["n1"]), "kill n1: its process is gone")
    status = json.loads(cluster("status").stdout or "{}")
    C.eq([n.get("state") for n in status.get("nodes", [])], ["down", "running"],
         "status after kill")
    sid = by_node["n1"][0]
    # a refused connection is retried on the other node at once; the checks drop n1 soon
    wait_for("after kill n1, n1's session ids reach n2",
             lambda: request(lb, path="/v1/sessions/" + sid)[:2] == (404, "n2"))
    C.check(all(request(lb)[:2] == (200, "n2") for _ in range(6)),
            "after kill n1, every request is answered by n2")
    cluster("start", "n1")
    status = json.loads(cluster("status").stdout or "{}")
    C.eq([n.get("state") for n in status.get("nodes", [])], ["running", "running"],
         "status after start")
    wait_for("after start n1, n1's session ids reach n1 again",
             lambda: request(lb, path="/v1/sessions/" + sid)[1] == "n1")


def check_pause_resume(urls):
    cluster("pause", "n2")
    status = json.loads(cluster("status").stdout or "{}")
    C.eq([n.get("state") for n in status.get("nodes", [])], ["running", "paused"],
         "status after pause")
    C.eq(request(urls["n2"], path="/healthz", timeout=1)[0], None,
         "a paused node does not answer")
    cluster("resume", "n2")
    C.eq(request(urls["n2"], path="/healthz", timeout=5)[0], 200, "a resumed node answers")


def check_redis(redis_url):
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])

    def ping():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False
    C.check(ping(), "redis answers PING")
    cluster("redis-stop")
    C.check(not ping(), "redis-stop: redis is down")
    cluster("redis-start")
    C.check(ping(), "redis-start: redis answers again on its port")
    C.check(os.path.exists(os.path.join(DIR, "redis", "appendonlydir")) or
            os.path.exists(os.path.join(DIR, "redis", "appendonly.aof")),
            "redis keeps an append-only file")


def check_add(lb):
    failures, done, count = [], threading.Event(), [0]

    def stream():
        while not done.is_set():
            st, _, _ = request(lb)
            count[0] += 1
            if st != 200:
                failures.append(st)
    t = threading.Thread(target=stream)
    t.start()
    try:
        time.sleep(0.3)
        p = cluster("add")
        time.sleep(0.5)
    finally:
        done.set()
        t.join(10)
    out = json.loads(p.stdout or "{}")
    C.eq([n["name"] for n in out.get("nodes", [])], ["n1", "n2", "n3"], "add: node n3")
    C.check(count[0] >= 10 and not failures,
            "add reloads HAProxy under %d requests with none failing (%s)"
            % (count[0], failures[:5]))
    wait_for("n3 takes requests through the balancer",
             lambda: any(request(lb)[1] == "n3" for _ in range(6)))


class ClusterTool(Case):
    """One cluster, up to down."""

    def test_cluster(self):
        global DIR
        root = tmpdir("cluster_tool")
        DIR = os.path.join(root, "c%d" % os.getpid())
        started = []
        try:
            p = cluster("up", "--nodes", "2", "--dir", DIR, "--rnnd", RNND_BIN, "--",
                        "--workers", "1", "--http-threads", "1")
            info = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {}
            started = recorded_processes()
            self.eq(len(p.stdout.strip().splitlines()), 1, "up prints one line")
            self.eq(sorted(info), ["dir", "nodes", "redis", "url"], "up's JSON fields")
            if not info:
                return
            self.eq([n["name"] for n in info["nodes"]], ["n1", "n2"], "up --nodes 2")
            lb = info["url"]
            urls = {n["name"]: n["url"] for n in info["nodes"]}
            self.check(lb.startswith("http://127.0.0.1:") and info["redis"].startswith(
                "redis://127.0.0.1:"), "loopback only")
            starts = dict(started)
            nodes = {n["name"]: (n["pid"], starts.get(n["pid"])) for n in info["nodes"]}
            by_node = check_routing(lb)
            check_kill_start(lb, nodes, by_node)
            check_pause_resume(urls)
            check_redis(info["redis"])
            check_add(lb)
            started = recorded_processes()
            cluster("down")
            self.check(not any(proc_alive(pid, s) for pid, s in started),
                       "down: nothing the cluster started is running")
            self.eq(request(lb)[0], None, "down: the balancer's port is closed")
            self.check(not os.path.exists(os.path.join(DIR, "cluster.json")),
                       "down: state removed")
            self.check(time.monotonic() < DEADLINE, "the test ran within its time bound")
        finally:
            started = started or recorded_processes()
            if os.path.exists(os.path.join(DIR, "cluster.json")):
                cluster("down", check=False)
            for pid, s in started:      # whatever down left: ours by pid and start time
                if proc_alive(pid, s):
                    self.check(False, "pid %d was still running after down" % pid)
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
            shutil.rmtree(DIR, ignore_errors=True)

    def test_taken_ports(self):
        """A port picked free and taken before its part bound it (CI: a node's "cannot listen
        on 127.0.0.1:56695 (address in use)", an outgoing connection beside the tests had it):
        up picks another, for Redis, HAProxy and a node alike. Here every first pick is a
        port this test holds listening."""
        loader = importlib.machinery.SourceFileLoader("cluster_tool", TOOL)
        tool = types.ModuleType(loader.name)
        tool.__file__ = TOOL
        loader.exec_module(tool)
        held = []
        for _ in range(3):  # redis, haproxy, n1: the order up picks them in
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            held.append(s)
        taken = [s.getsockname()[1] for s in held]
        real, picks = tool.free_port, list(taken)
        tool.free_port = lambda: picks.pop(0) if picks else real()
        d = os.path.join(tmpdir("cluster_tool"), "taken%d" % os.getpid())
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                tool.main(["up", "--nodes", "1", "--dir", d, "--rnnd", RNND_BIN, "--",
                           "--workers", "1", "--http-threads", "1"])
            info = json.loads(out.getvalue().strip().splitlines()[-1])
            ports = [int(u.rsplit(":", 1)[1].split("/")[0])
                     for u in [info["url"], info["redis"], info["nodes"][0]["url"]]]
            self.check(not set(ports) & set(taken), "other ports than the taken %s: %s"
                       % (taken, ports))
            self.eq(request(info["url"], path="/readyz")[0], 200, "the cluster serves")
        finally:
            if os.path.exists(os.path.join(d, "cluster.json")):
                tool.main(["down", "--dir", d])
            for s in held:
                s.close()
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
