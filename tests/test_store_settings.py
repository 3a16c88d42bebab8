"""The cluster settings at start (issue 17, docs/cluster.md "Settings"): known and checked, and
a good configuration used (the node lease taken in a real redis-server, with the password).

- Among themselves (exit 2, one line naming the setting): a password in session_store's URL
  (the password never printed), a user in it without a password file, a bad URL, state_dir beside session_store, a password file
  without session_store, a bad node_name, lease_ms and store_sync_ms out of range.
- Against the system (exit 1, the log line names the file and the reason): a password file
  that others may read, that the group may write, a symbolic link, a missing one; a host name
  that is no node name when node_name is empty is not tested (the host's name is the host's).
- A good configuration starts (a password file of mode 0440 and one of 0600). With Redis
  down it is not ready (/readyz 503: no lease yet) and logs event=store_down naming the node
  (the host name when node_name is empty); with a redis-server that requires the password it
  takes its lease (event=lease_taken naming the node; /readyz 200, "store": "up"). No log line
  holds the password; the embedded default logs no store line.

Env: RNND_BIN, RNND_SRCDIR. Each part above is a unittest case (StoreSettings.test_*); a
failing check fails its case.
"""
import os
import socket
import subprocess
import time
import unittest

from daemon_util import RNND_BIN, Case, Daemon, tmpdir
from daemon_util import RUNNING as C

SRCDIR = os.environ["RNND_SRCDIR"]
MODEL = {"charlm": os.path.join(SRCDIR, "models", "charlm.rnnd")}
URL = "redis://127.0.0.1:6399/2"
SECRET = "s3cret-pw-never-logged"


def serve(*args):
    return subprocess.run([RNND_BIN, "serve", "--listen", "127.0.0.1:0"] + list(args),
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def refused(args, status, words, what):
    p = serve(*args)
    out = p.stdout + p.stderr
    C.eq(p.returncode, status, "%s: exit status" % what)
    C.check(all(w in out for w in words), "%s: the message names %r: %r" % (what, words,
                                                                             out[-400:]))
    C.check(SECRET not in out, "%s: the password is not printed" % what)


def password_file(d, name, mode, text=SECRET + "\n"):
    path = os.path.join(d, name)
    if os.path.lexists(path):
        os.unlink(path)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=10):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("redis-server did not listen on %d" % port)


class StoreSettings(Case):
    @classmethod
    def setUpClass(cls):
        cls.dir = tmpdir("store_settings")

    def test_print_config(self):
        p = subprocess.run([RNND_BIN, "serve", "--print-config"], capture_output=True,
                           text=True, timeout=30)
        for line in ("session_store = ", "session_store_password_file = ",
                     "store_sync_ms = 100", "lease_ms = 2000", "node_name = "):
            self.check(line + "\n" in p.stdout, "--print-config lists %r" % line)

    def test_refused_among_themselves(self):
        # exit 2 before anything starts
        d = self.dir
        refused(["--session-store", "redis://u:%s@127.0.0.1:6399/0" % SECRET], 2,
                ["session_store", "password in the URL"], "a password in the URL")
        refused(["--session-store", "redis://alice@127.0.0.1:6399"], 2,
                ["session_store", "session_store_password_file"],
                "a user without a password file")
        refused(["--session-store", "http://127.0.0.1:6399"], 2, ["session_store", "redis://"],
                "not a redis URL")
        refused(["--session-store", URL, "--state-dir", d], 2, ["state_dir", "session_store"],
                "state_dir with session_store")
        refused(["--session-store-password-file", "/nonexistent"], 2,
                ["session_store_password_file", "without session_store"],
                "a password file alone")
        refused(["--session-store", URL, "--node-name", "a/b"], 2, ["node_name"],
                "a bad node_name")
        refused(["--session-store", URL, "--node-name", "n" * 65], 2, ["node_name"],
                "a node_name of 65 bytes")
        refused(["--lease-ms", "499"], 2, ["lease_ms", "500..60000"], "lease_ms below 500")
        refused(["--store-sync-ms", "10001"], 2, ["store_sync_ms", "0..10000"],
                "store_sync_ms above 10000")

    def test_refused_against_system(self):
        # exit 1 naming the file and the reason
        d = self.dir
        base = ["--model", "charlm=" + MODEL["charlm"], "--session-store", URL, "--node-name",
                "n1"]
        pw = password_file(d, "pw", 0o644)
        refused(base + ["--session-store-password-file", pw], 1, [pw, "others may access it"],
                "a password file others may read")
        pw = password_file(d, "pw", 0o660)
        refused(base + ["--session-store-password-file", pw], 1, [pw, "the group may write it"],
                "a password file the group may write")
        link = os.path.join(d, "pw-link")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(password_file(d, "pw", 0o600), link)
        refused(base + ["--session-store-password-file", link], 1, [link, "symbolic link"],
                "a password file that is a link")
        missing = os.path.join(d, "missing")
        refused(base + ["--session-store-password-file", missing], 1, [missing, "No such file"],
                "a missing password file")

    def test_good_configuration(self):
        # with Redis down it waits for its lease (/readyz 503, one store_down line naming the
        # node); with Redis up (requirepass) it takes its lease with the password (lease_taken
        # naming the node; the host name when node_name is empty)
        for mode, extra in ((0o440, ["--node-name", "n1"]), (0o600, [])):
            with self.subTest(mode="%o" % mode):
                good_configuration(self.dir, mode, extra)

    def test_embedded_default(self):
        with Daemon(MODEL) as dm:
            dm.stop()
            self.check(not any("store_" in l or "lease" in l for l in dm.log),
                       "the embedded default logs no store line")


def good_configuration(d, mode, extra):
    pw = password_file(d, "pw", mode)
    name = "n1" if extra else socket.gethostname()
    with Daemon(MODEL, "--session-store", URL, "--session-store-password-file", pw,
                *extra) as dm:
        st, _, body = dm.request("GET", "/readyz")
        C.eq(st, 503, "mode %o, Redis down: not ready" % mode)
        C.check("lease" in str(body), "mode %o: /readyz says why: %r" % (mode, body))
        rc, _ = dm.stop()
        C.eq(rc, 0, "mode %o, Redis down: a clean stop" % mode)
        lines = [l for l in dm.log if "event=store_down" in l]
        C.check(len(lines) == 1 and ("node=%s " % name) in lines[0],
                "mode %o: one store_down line naming the node %s: %r" % (mode, name, lines))
        C.check(all(SECRET not in l for l in dm.log), "mode %o: no log line holds the "
                "password" % mode)
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--requirepass", SECRET],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        with Daemon(MODEL, "--session-store", "redis://127.0.0.1:%d/2" % port,
                    "--session-store-password-file", pw, *extra) as dm:
            st, _, body = dm.request("GET", "/readyz")
            C.check(st == 200 and body.get("store") == "up",
                    "mode %o, Redis up: ready, store up (%s %r)" % (mode, st, body))
            rc, _ = dm.stop()
            C.eq(rc, 0, "mode %o, Redis up: a clean stop" % mode)
            lines = [l for l in dm.log if "event=lease_taken" in l]
            C.check(len(lines) == 1 and ("node=%s " % name) in lines[0],
                    "mode %o: one lease_taken line naming the node %s: %r"
                    % (mode, name, lines))
            C.check(all(SECRET not in l for l in dm.log), "mode %o: no log line holds "
                    "the password" % mode)
    finally:
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    unittest.main()
