#!/usr/bin/env python3
"""SIGTERM while connections arrive: the daemon stops accepting and exits 0, every time.

CI once saw the daemon abort at SIGTERM (status -6, "Fatal error in GNU libmicrohttpd
daemon.c:5531: Failed to remove listen FD from epoll set."). libmicrohttpd 0.9.75 races with
itself when MHD_quiesce_daemon() stops an epoll thread pool: the quiescing thread and a request
thread both remove the listening socket from the request thread's epoll set, and whichever
comes second aborts. tests/data/shims/slow_epoll_del.c, preloaded, holds the quiescing call
back 300 ms so that a request thread woken by a new connection always comes first. rnnd's
request threads therefore run on poll(), whose quiescing is a wake-up and nothing else
(src/http.c); with them, the shim has nothing to delay and the stop is clean.
"""
import http.client
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import Case, Daemon, tmpdir  # noqa: E402

SRC = os.environ["RNND_SRCDIR"]
MODEL = os.path.join(SRC, "models", "charlm.rnnd")


def build_shim():
    out = os.path.join(tmpdir("shutdown_race"), "slow_epoll_del.so")
    subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O1", "-o", out,
                    os.path.join(SRC, "tests", "data", "shims", "slow_epoll_del.c"), "-ldl"],
                   check=True, timeout=120)
    return out


class ShutdownRace(Case):
    def test_sigterm_while_connecting(self):
        shim = build_shim()
        env = dict(os.environ, LD_PRELOAD=shim)
        # a sanitizer's runtime wants to be first in the list of libraries: the shim is not
        # instrumented and intercepts one call, so the order does not matter here
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                               ":verify_asan_link_order=0").lstrip(":")
        for attempt in range(3):
            d = Daemon({"charlm": MODEL}, "--http-threads", "2", env=env, exit_status=None)
            stop = threading.Event()
            served = [0]

            def churn():
                # a new connection per request: each one wakes every request thread that
                # still watches the listening socket
                while not stop.is_set():
                    try:
                        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=2)
                        c.request("GET", "/healthz", headers={"Connection": "close"})
                        c.getresponse().read()
                        c.close()
                        served[0] += 1
                    except OSError:
                        time.sleep(0.01)
                    except http.client.HTTPException:
                        time.sleep(0.01)

            threads = [threading.Thread(target=churn) for _ in range(4)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while served[0] < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.check(served[0] >= 20, "requests served before SIGTERM: %d" % served[0])
            rc, _ = d.stop()
            stop.set()
            for t in threads:
                t.join(10)
            fatal = [line for line in d.log if "Fatal error" in line]
            self.eq(rc, 0, "exit status after SIGTERM during connection churn (run %d; %s)"
                    % (attempt + 1, fatal[:1]))
            if rc != 0:
                break


if __name__ == "__main__":
    unittest.main()
