"""rnnd serve under a service manager, without one: the test plays systemd's part.

1. sd_notify: the daemon is started with NOTIFY_SOCKET naming a datagram socket this test
   opened and WATCHDOG_USEC=2 s. Expected, every datagram from the daemon's own pid: READY=1
   (with a STATUS= of its models and sessions) once it serves; a STATUS= update when the
   session count changes; WATCHDOG=1 about every second (half the interval) and never a gap
   the watchdog would kill for; RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC now)
   then READY=1 around a SIGHUP reload; STOPPING=1 on SIGTERM, then exit 0. In a build
   without libsystemd (config.h has no HAVE_LIBSYSTEMD) the daemon must send nothing and
   still serve and stop the same way.
2. Socket activation (with or without libsystemd): a listening TCP socket this test bound is
   passed as fd 3 with LISTEN_FDS=1 and LISTEN_PID = the daemon's pid; the daemon must serve
   on it (its own `listen`, an address it could not bind, is ignored), and a second daemon
   serves on the same socket after the first stopped (what systemd does on restart); the
   same with a UNIX stream socket.
   LISTEN_PID of another process: the socket is not ours, the daemon binds its own. Two
   sockets, a socket that is not listening, a datagram socket: start-up fails with exit
   status 1 and a message naming the problem.
3. The process name: rnnd re-executes itself once to fix OpenBLAS's environment; the daemon
   is still named `rnnd` afterwards (/proc/PID/comm), so `pgrep -x rnnd` finds it (it was
   `exe`, from /proc/self/exe).
"""
import http.client
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import Case, Daemon, RNND_BIN, tmpdir  # noqa: E402

SRCDIR = os.environ["RNND_SRCDIR"]
MODEL = os.path.join(SRCDIR, "models", "charlm.rnnd")
WATCHDOG_S = 2.0


def have_libsystemd():
    """Whether the rnnd under test was built with libsystemd (its build's config.h)."""
    path = os.path.join(os.path.dirname(os.path.abspath(RNND_BIN)), "config.h")
    with open(path) as f:
        return any(line.startswith("#define HAVE_LIBSYSTEMD 1") for line in f)


class NotifySocket:
    """An AF_UNIX datagram socket (abstract name) collecting (time, sender pid, fields)."""

    def __init__(self):
        self.name = "@rnnd-test-notify-%d" % os.getpid()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + self.name[1:])
        self.msgs = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:     # ancillary data: struct ucred (pid, uid, gid), 12 bytes
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except OSError:
                return
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = int.from_bytes(payload[:4], sys.byteorder)
            fields = {}
            for line in data.decode(errors="replace").split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            with self.cond:
                self.msgs.append((time.monotonic(), pid, fields, data))
                self.cond.notify_all()

    def wait_for(self, pred, start, timeout):
        """The first message from index START on that satisfies PRED: (index, message)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.msgs)):
                    if pred(self.msgs[i][2]):
                        return i, self.msgs[i]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, None
                self.cond.wait(left)

    def close(self):
        self.sock.close()


def readyz(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/readyz")
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


# ---- socket activation ---------------------------------------------------------------------

# Runs in the child: put the passed socket(s) at fd 3.., set LISTEN_PID to this pid (exec keeps
# it) and LISTEN_FDS, then become rnnd.
WRAPPER = r"""
import os, sys
n = int(sys.argv[1])
fds = [int(x) for x in sys.argv[2:2 + n]]
tmp = [os.dup(fd) for fd in fds]
for k, fd in enumerate(tmp):
    os.dup2(fd, 3 + k)
    os.set_inheritable(3 + k, True)     # dup() made it close-on-exec when it landed there
for fd in set(tmp + fds) - set(range(3, 3 + n)):
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(n)
argv = sys.argv[2 + n:]
os.execv(argv[0], argv)
"""


def activated(socks, *args):
    """Popen of `rnnd serve ARGS` given SOCKS as fd 3...; stderr piped."""
    fds = [s.fileno() for s in socks]
    cmd = [sys.executable, "-c", WRAPPER, str(len(fds))] + [str(f) for f in fds]
    cmd += [RNND_BIN, "serve", "--model", "charlm=" + MODEL] + list(args)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, pass_fds=fds)


def wait_line(proc, word, timeout=30):
    """Read stderr lines until one contains WORD; returns (found, text so far)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stderr], [], [], deadline - time.monotonic())
        if not r:
            break
        chunk = os.read(proc.stderr.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        if word.encode() in buf:
            return True, buf.decode(errors="replace")
    return False, buf.decode(errors="replace")


def stop(proc):
    proc.terminate()
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait(10)
    proc.stderr.close()
    return rc


class Notify(Case):
    @classmethod
    def setUpClass(cls):
        cls.with_sd = have_libsystemd()
        print("built with libsystemd: %s" % cls.with_sd)

    def test_notify(self):
        with_sd = self.with_sd
        ns = NotifySocket()
        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = ns.name
        env["WATCHDOG_USEC"] = str(int(WATCHDOG_S * 1e6))
        env.pop("WATCHDOG_PID", None)
        state = tmpdir("notify-state")
        for name in os.listdir(state):      # a fresh start: no sessions restored
            os.remove(os.path.join(state, name))
        with Daemon({"charlm": MODEL}, "--state-dir", state, env=env) as d:
            pid = d.proc.pid
            if not with_sd:
                time.sleep(2.5 * WATCHDOG_S)
                self.eq(readyz(d.port), 200, "no libsystemd: serves")
                d.proc.send_signal(signal.SIGHUP)
                time.sleep(1)
                rc, _ = d.stop()
                self.eq(rc, 0, "no libsystemd: exit status after SIGTERM")
                time.sleep(0.2)
                self.eq(len(ns.msgs), 0, "no libsystemd: datagrams sent (must be none) %r"
                        % [m[3] for m in ns.msgs[:3]])
                ns.close()
                return

            i, ready = ns.wait_for(lambda f: f.get("READY") == "1", 0, 30)
            if not self.check(ready is not None, "READY=1 received"):
                d.stop()
                ns.close()
                return
            # READY=1 means "serving": the port answers at once
            self.eq(readyz(d.port), 200, "GET /readyz right after READY=1")
            self.check(any("event=listening" in line for line in d.log),
                       "READY=1 came after event=listening")
            st = ready[2].get("STATUS", "")
            self.check("models=1" in st and "sessions=0" in st,
                       "READY=1 carries STATUS with models=1 sessions=0: %r" % st)
            self.eq(sum(1 for m in ns.msgs[:i] if m[2].get("READY") == "1"), 0,
                    "no READY=1 before the first")

            # STATUS follows the session count
            mark = len(ns.msgs)
            for _ in range(3):
                r = d.request("POST", "/v1/sessions", {"model": "charlm"})
                self.eq(r[0], 201, "open a session")
            _, upd = ns.wait_for(lambda f: "sessions=3" in f.get("STATUS", ""), mark, 10)
            self.check(upd is not None, "a STATUS= update shows sessions=3")

            # watchdog pings at about half the interval
            mark = len(ns.msgs)
            time.sleep(4 * WATCHDOG_S)
            pings = [m[0] for m in ns.msgs[mark:] if m[2].get("WATCHDOG") == "1"]
            self.check(len(pings) >= 5, "WATCHDOG=1 pings in %.0f s: %d (want >= 5)"
                       % (4 * WATCHDOG_S, len(pings)))
            if len(pings) >= 2:
                gaps = [b - a for a, b in zip(pings, pings[1:])]
                self.check(max(gaps) < 0.95 * WATCHDOG_S,
                           "largest gap between pings %.2f s < the watchdog's %.1f s"
                           % (max(gaps), WATCHDOG_S))
                mean = statistics.mean(gaps)
                self.check(0.3 * WATCHDOG_S <= mean <= 0.7 * WATCHDOG_S,
                           "mean ping interval %.2f s is about half of %.1f s" % (mean,
                                                                                  WATCHDOG_S))

            # reload: RELOADING=1 + MONOTONIC_USEC, then READY=1
            mark = len(ns.msgs)
            t0 = time.monotonic()
            d.proc.send_signal(signal.SIGHUP)
            j, rel = ns.wait_for(lambda f: f.get("RELOADING") == "1", mark, 15)
            if self.check(rel is not None, "RELOADING=1 on SIGHUP"):
                usec = rel[2].get("MONOTONIC_USEC", "")
                ok = usec.isdigit() and t0 - 0.5 <= int(usec) / 1e6 <= time.monotonic() + 0.5
                self.check(ok, "RELOADING=1 carries MONOTONIC_USEC of CLOCK_MONOTONIC now: %r"
                           % usec)
                _, again = ns.wait_for(lambda f: f.get("READY") == "1", j + 1, 15)
                self.check(again is not None, "READY=1 after the reload")
            self.eq(readyz(d.port), 200, "serves after the reload")

            # stop
            mark = len(ns.msgs)
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status after SIGTERM")
            _, stopping = ns.wait_for(lambda f: f.get("STOPPING") == "1", mark, 2)
            self.check(stopping is not None, "STOPPING=1 on SIGTERM")
            self.eq(sum(1 for m in ns.msgs[mark:] if m[2].get("READY") == "1"), 0,
                    "no READY=1 while stopping")
            senders = sorted({m[1] for m in ns.msgs})
            self.eq(senders, [pid], "every datagram comes from the daemon's main pid")
            for m in ns.msgs:
                bad = [k for k in m[2] if k not in ("READY", "STATUS", "RELOADING",
                                                     "MONOTONIC_USEC", "STOPPING", "WATCHDOG")]
                if bad or b"\n\n" in m[3] or not m[3]:
                    self.check(False, "malformed or unexpected datagram %r" % m[3])
                    break
            print("notify: %d datagrams" % len(ns.msgs))
        ns.close()

    def test_activation(self):
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        port = lsock.getsockname()[1]
        # 192.0.2.1 (TEST-NET-1) is no address of this machine: binding it would fail
        for round_ in (1, 2):
            p = activated([lsock], "--listen", "192.0.2.1:9")
            found, text = wait_line(p, "event=ready")
            if not self.check(found, "activated daemon %d starts (listen setting ignored): %s"
                              % (round_, text[-400:])):
                stop(p)
                break
            self.check("port=%d" % port in text,
                       "activated daemon %d logs the passed socket's port %d" % (round_, port))
            self.eq(readyz(port), 200, "activated daemon %d serves on the passed socket" % round_)
            self.eq(stop(p), 0, "activated daemon %d: exit status after SIGTERM" % round_)

        # a local (AF_UNIX) socket, as `ListenStream=/run/rnnd.sock` gives (abstract name here)
        usock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        usock.bind("\0rnnd-test-activation-%d" % os.getpid())
        usock.listen(16)
        p = activated([usock], "--listen", "192.0.2.1:9")
        found, text = wait_line(p, "event=ready")
        if self.check(found, "activated on a UNIX socket: starts: %s" % text[-300:]):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(10)
            c.connect("\0rnnd-test-activation-%d" % os.getpid())
            c.sendall(b"GET /readyz HTTP/1.1\r\nHost: rnnd\r\nConnection: close\r\n\r\n")
            reply = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                reply += chunk
            c.close()
            self.check(reply.startswith(b"HTTP/1.1 200 "), "activated on a UNIX socket: /readyz %r"
                       % reply[:60])
        self.eq(stop(p), 0, "activated on a UNIX socket: exit status after SIGTERM")
        usock.close()

        # LISTEN_PID of another process: not ours, bind --listen as usual
        env = dict(os.environ, LISTEN_PID="1", LISTEN_FDS="1")
        with Daemon({"charlm": MODEL}, env=env) as d:
            self.check(d.port != port, "LISTEN_PID of another process: the daemon binds its own")
            self.eq(readyz(d.port), 200, "LISTEN_PID of another process: serves")
            self.eq(d.stop()[0], 0, "LISTEN_PID of another process: exit status")

        # what start-up must refuse
        second = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        second.bind(("127.0.0.1", 0))
        second.listen(8)
        idle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        idle.bind(("127.0.0.1", 0))                     # bound, never listen()ed
        dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dgram.bind(("127.0.0.1", 0))
        for what, socks, want in (("two sockets", [lsock, second], "exactly one"),
                                  ("a socket that is not listening", [idle], "not listening"),
                                  ("a datagram socket", [dgram], "not a stream socket")):
            p = activated(socks, "--listen", "127.0.0.1:0")
            try:
                rc = p.wait(30)
            except subprocess.TimeoutExpired:
                rc = None
                stop(p)
            text = p.stderr.read().decode(errors="replace") if rc is not None else ""
            self.eq(rc, 1, "%s: exit status" % what)
            self.check(want in text, "%s: message says %r: %s" % (what, want, text[-300:]))
            if rc is not None:
                p.stderr.close()
        for s in (lsock, second, idle, dgram):
            s.close()

    def test_process_name(self):
        # OPENBLAS_CORETYPE set and OPENBLAS_NUM_THREADS unset: the daemon re-executes itself
        env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
        env.pop("OPENBLAS_NUM_THREADS", None)
        with Daemon({"charlm": MODEL}, env=env) as d:
            pid = d.proc.pid
            with open("/proc/%d/comm" % pid) as f:
                comm = f.read().strip()
            with open("/proc/%d/environ" % pid, "rb") as f:
                reexec = b"OPENBLAS_NUM_THREADS=1\0" in f.read() + b"\0"
            found = subprocess.run(["pgrep", "-x", "rnnd"], capture_output=True,
                                   text=True).stdout.split()
            self.check(reexec and comm == "rnnd" and str(pid) in found,
                       "after its re-exec the daemon is named rnnd and pgrep -x rnnd finds it "
                       "(re-executed %s, comm %r, pgrep %r)" % (reexec, comm, found))
            self.eq(d.stop()[0], 0, "clean exit")


if __name__ == "__main__":
    unittest.main()
