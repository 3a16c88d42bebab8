"""store_sync_ms = 0 in cluster mode is write-through (issue 17; docs/cluster.md,
"Write-behind"): a step's reply is sent only once Redis holds its steps. One node and a
redis-server on loopback (tools/cluster); the record is read over a Redis connection kept
open, the moment each reply arrives: it must already hold the reply's step count, for every
reply of 4 clients stepping their own sessions at once. With writes behind (even in 1 ms
rounds) a read that quick finds the record behind.
Bounded: about 5 s.
"""
import socket
import threading
import unittest

from cluster_util import Cluster
from daemon_util import url_request

CLIENTS = 4
STEPS = 40


class Redis:
    """A minimal RESP client: one connection, HGET only."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def hget(self, key, field):
        parts = [b"HGET", key.encode(), field.encode()]
        msg = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.sock.sendall(msg)
        head = self._line()
        if head == b"$-1":
            return None
        n = int(head[1:])
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(65536)
        v, self.buf = self.buf[:n], self.buf[n + 2:]
        return v.decode()

    def close(self):
        self.sock.close()


class WriteThrough(unittest.TestCase):
    def setUp(self):
        c = Cluster("cluster_through", "c", 1, "--store-sync-ms", "0")
        self.addCleanup(c.close)
        self.node = c.url["n1"]
        self.redis_port = c.redis_port

    def client(self, k, behind, errors):
        r = Redis(self.redis_port)
        try:
            st, _, b = url_request(self.node, "POST", "/v1/sessions", {"model": "charlm"})
            if st != 201:
                errors.append("create: %s %s" % (st, b))
                return
            sid = b["id"]
            for i in range(STEPS):
                st, _, b = url_request(self.node, "POST", "/v1/sessions/%s/step" % sid,
                                       {"inputs": [(k * 7 + i) % 96] * (1 + i % 3)})
                if st != 200:
                    errors.append("step: %s %s" % (st, b))
                    return
                stored = r.hget("rnnd:{%s}:rec" % sid, "steps")
                if stored is None or int(stored) < b["steps"]:
                    behind.append((b["steps"], stored))
        finally:
            r.close()

    def test_reply_waits_for_redis(self):
        behind, errors = [], []
        threads = [threading.Thread(target=self.client, args=(k, behind, errors))
                   for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(behind, [], "replies sent before Redis held their steps")


if __name__ == "__main__":
    unittest.main()
