"""Claims of docs/security.md that no other test asserted (issue 13):

- check_key_file_errors: each bad key file stops the start with exit 1 and one line
  `FILE:LINE: reason` (a short key, a long one, a control character in it, an unknown scope,
  the same key twice; `FILE: reason` when the file holds no key at all); a space ends a key.
- check_unknown_paths: without a key an unknown path answers 401 with exactly
  `WWW-Authenticate: Bearer realm="rnnd"`, in the v1 error form or, under /v2, the v2 form,
  the same as a known route; with a key it is a 404.
- check_keys_read_at_start: a reload (SIGHUP) does not reread the key file: the old key
  still works and a new one does not, until a restart.
- check_default_name: a key without NAME is logged as key<LINE>, and never the key.
- check_state_dir_only: the first start creates the snapshot key beside `state_dir` (0600)
  and nothing else; then with sessions, snapshots every second, a reload and a shutdown, the
  daemon writes nothing outside `state_dir` but the last snapshot's serial beside the key
  (KEY.serial, 0600; its working folder, TMPDIR, HOME, the models folder are unchanged), and
  a missing `state_dir` stops the start and is not created (nor a key beside it).
- check_nul_in_header: libmicrohttpd ends a header value at its first NUL; rnnd refuses
  such a value (400) before the key is looked at, so `Bearer KEY<NUL>junk` no longer
  authenticates as `Bearer KEY` (docs/security.md's front door, issue 13.4).
- check_model_regular_file: `model = NAME=FILE` refuses a folder, a device and a FIFO with
  `FILE: file: not a regular file`, without waiting on the FIFO.
Each check is a unittest case; a failing case fails the run.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
import unittest

from daemon_util import RNND_BIN, Case, Daemon, bearer, tmpdir, write_secret

WORK = tmpdir("security-claims")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
KEY_A = "alice-0123456789abcdef"
KEY_B = "bob-fedcba9876543210xyz"
REALM = 'Bearer realm="rnnd"'


def serve(*args):
    """Run `rnnd serve` that is expected not to start: (status, last stderr line); one that
    starts after all is killed after 30 s."""
    try:
        p = subprocess.run([RNND_BIN, "serve", "--listen", "127.0.0.1:0"] + list(args),
                           capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None, "it started and served"
    lines = p.stderr.strip().splitlines()
    return p.returncode, lines[-1] if lines else ""


def reload_and_wait(d):
    before = sum("event=reloaded" in l for l in d.log)
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sum("event=reloaded" in l for l in d.log) > before:
            return True
        time.sleep(0.05)
    return False


def tree(root, skip):
    """{path: (size, mtime_ns)} of everything under ROOT except under SKIP."""
    out = {}
    for top, dirs, files in os.walk(root):
        if top == skip or top.startswith(skip + os.sep):
            continue
        for n in dirs + files:
            p = os.path.join(top, n)
            if p == skip:
                continue
            st = os.lstat(p)
            out[p] = (st.st_size if not os.path.isdir(p) else 0, st.st_mtime_ns)
    return out


def raw_status(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sk:
        sk.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sk.recv(4096)
            if not chunk:
                break
            data += chunk
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class SecurityClaims(Case):
    """docs/security.md's claims, each on its own daemon or rnnd run."""

    def test_key_file_errors(self):
        bad = os.path.join(WORK, "bad-keys")
        for what, text, want in (
                ("short key", "# keys\n\nabc\n", "%s:3: a key must be 16 to 256" % bad),
                ("long key", KEY_A + "\n" + "k" * 257 + " long\n", "%s:2: a key must be" % bad),
                ("control character", "alice-0123\x01456789abcdef\n", "%s:1: a key must be" % bad),
                ("DEL", "alice-0123\x7f456789abcdef\n", "%s:1: a key must be" % bad),
                ("unknown scope", KEY_A + " a root\n", "%s:1: scope must be infer or admin" % bad),
                ("the same key twice", KEY_A + " a\n" + KEY_B + "\n" + KEY_A + " c admin\n",
                 "%s:3: the same key as a" % bad),
                ("no key at all", "# nothing\n\n", "%s: no key in the file" % bad)):
            write_secret(bad, text)
            rc, last = serve("--model", "charlm=" + CHARLM, "--api-keys-file", bad)
            self.check(rc == 1 and want in last,
                       "%s: exit 1 with %r (got %s: %s)" % (what, want, rc, last))
        # a 256-character key is the longest allowed; a space ends a key, what follows is NAME
        write_secret(bad, "k" * 256 + " longest\n" + "abcdefghijklmnop qrst\n")
        with Daemon({"charlm": CHARLM}, "--api-keys-file", bad) as d:
            self.eq(d.request("GET", "/v1/models", headers=bearer("k" * 256))[0], 200,
                    "a 256-character key")
            self.eq(d.request("GET", "/v1/models", headers=bearer("abcdefghijklmnop"))[0], 200,
                    "a space ends the key")
            self.eq(d.request("GET", "/v1/models", headers=bearer("abcdefghijklmnop qrst"))[0],
                    401,
                    "the key and its name together are not a key")
            d.stop()

    def test_unknown_paths(self):
        keys = write_secret(os.path.join(WORK, "keys"), "%s alice\n" % KEY_A)
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys) as d:
            for method, path in (("GET", "/nowhere"), ("GET", "/v1/nowhere"),
                                 ("POST", "/v1/models/nosuch/infer"), ("DELETE", "/v1"),
                                 ("GET", "/v1/models")):
                st, h, b = d.request(method, path, {} if method == "POST" else None)
                self.check(st == 401 and isinstance(b, dict) and isinstance(b.get("error"), dict)
                           and b["error"].get("code") == "unauthorized"
                           and h.get("www-authenticate") == REALM,
                           "%s %s without a key: 401, v1 form, %s (got %s %r %r)"
                           % (method, path, REALM, st, h.get("www-authenticate"), b))
            for method, path in (("GET", "/v2/nowhere"), ("POST", "/v2/models/nosuch/infer"),
                                 ("GET", "/v2/models/charlm")):
                st, h, b = d.request(method, path, {} if method == "POST" else None)
                self.check(st == 401 and isinstance(b, dict) and isinstance(b.get("error"), str)
                           and h.get("www-authenticate") == REALM,
                           "%s %s without a key: 401, v2 form, %s (got %s %r %r)"
                           % (method, path, REALM, st, h.get("www-authenticate"), b))
            self.error(d.request("GET", "/v1/nowhere", headers=bearer(KEY_A)), 404, "not_found",
                       "an unknown path with a key")
            st, _, b = d.request("GET", "/v2/nowhere", headers=bearer(KEY_A))
            self.check(st == 404 and isinstance(b, dict) and isinstance(b.get("error"), str),
                       "an unknown /v2 path with a key: 404 (got %s %r)" % (st, b))
            d.stop()

    def test_keys_read_at_start(self):
        keys = write_secret(os.path.join(WORK, "keys-reload"), "%s alice\n" % KEY_A)
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys) as d:
            self.eq(d.request("GET", "/v1/models", headers=bearer(KEY_A))[0], 200, "alice's key")
            write_secret(keys, "%s bob\n" % KEY_B)
            self.check(reload_and_wait(d), "a reload after the key file changed")
            self.eq(d.request("GET", "/v1/models", headers=bearer(KEY_A))[0], 200,
                    "after the reload the removed key still works")
            self.eq(d.request("GET", "/v1/models", headers=bearer(KEY_B))[0], 401,
                    "after the reload the added key does not")
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys) as d:
            self.eq(d.request("GET", "/v1/models", headers=bearer(KEY_B))[0], 200,
                    "after a restart the added key works")
            self.eq(d.request("GET", "/v1/models", headers=bearer(KEY_A))[0], 401,
                    "and the removed one does not")
            d.stop()

    def test_default_name(self):
        keys = write_secret(os.path.join(WORK, "keys-names"),
                            "# a comment\n%s alice\n\n%s\n" % (KEY_A, KEY_B))
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys) as d:
            self.eq(d.request("GET", "/v1/models", headers=bearer(KEY_B))[0], 200, "bob's key")
            d.stop()
        self.check(any("event=access" in l and "key=key4" in l for l in d.log),
                   "a key without NAME on line 4 is logged as key4")
        self.check(not any(KEY_B in l or KEY_A in l for l in d.log), "no log line holds a key")

    def test_state_dir_only(self):
        root = os.path.join(WORK, "files")
        shutil.rmtree(root, ignore_errors=True)
        dirs = {n: os.path.join(root, n) for n in ("cwd", "tmp", "home", "models", "var")}
        for p in dirs.values():
            os.makedirs(p)
        state = os.path.join(dirs["var"], "state")
        os.makedirs(state)
        shutil.copyfile(CHARLM, os.path.join(dirs["models"], "charlm.rnnd"))
        keys = write_secret(os.path.join(root, "keys"), "%s alice\n" % KEY_A)
        env = dict(os.environ, TMPDIR=dirs["tmp"], HOME=dirs["home"])
        # the first start with a state_dir creates the snapshot key beside it, its one file
        # outside state_dir (docs/state.md); from then on nothing outside is written
        before = tree(root, state)
        with Daemon({}, "--models", dirs["models"], "--state-dir", state, env=env,
                    preexec_fn=lambda: os.chdir(dirs["cwd"])) as d:
            d.kill()
        made = tree(root, state)
        key = state + ".key"
        self.eq((sorted(set(made) - set(before)), oct(os.lstat(key).st_mode), made[key][0]),
                ([key], oct(0o100600),
                 32), "the first start makes the key beside state_dir (0600)")
        self.eq({p: v for p, v in made.items() if p not in (key, dirs["var"])},
                {p: v for p, v in before.items() if p != dirs["var"]}, "and changes nothing else")
        before = made
        with Daemon({}, "--models", dirs["models"], "--api-keys-file", keys, "--state-dir", state,
                    "--snapshot-interval-s", "1", env=env,
                    preexec_fn=lambda: os.chdir(dirs["cwd"])) as d:
            for _ in range(3):
                st, _, s = d.request("POST", "/v1/sessions", {"model": "charlm"},
                                     headers=bearer(KEY_A))
                self.eq(st, 201, "a session")
                d.request("POST", "/v1/sessions/%s/step" % s["id"], {"text": "hi"},
                          headers=bearer(KEY_A))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not os.listdir(state):
                time.sleep(0.1)
            self.check(bool(os.listdir(state)), "a snapshot was written while serving")
            self.check(reload_and_wait(d), "a reload")
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")
        self.check(any("event=snapshot" in l for l in d.log) and
                   not any("snapshot_failed" in l for l in d.log), "snapshots written")
        after, serial = tree(root, state), key + ".serial"
        self.eq((sorted(set(after) - set(before)), oct(os.lstat(serial).st_mode)),
                ([serial],
                 oct(0o100600)), "the snapshots record their serial beside the key (0600)")
        self.eq({p: v for p, v in after.items() if p not in (serial, dirs["var"])},
                {p: v for p, v in before.items() if p != dirs["var"]},
                "nothing else outside state_dir was created or changed")
        self.eq(sorted(os.listdir(state)), ["sessions.snap"], "state_dir holds the snapshot only")
        # a state_dir that does not exist stops the start and is not created, nor its key
        missing = os.path.join(dirs["var"], "missing")
        p = subprocess.run([RNND_BIN, "serve", "--listen", "127.0.0.1:0", "--model",
                            "charlm=" + CHARLM, "--state-dir", missing], capture_output=True,
                           text=True, timeout=30)
        self.check(p.returncode == 1 and missing + ": No such file or directory" in p.stderr,
                   "a missing state_dir stops the start (got %s %r)" % (p.returncode,
                                                                        p.stderr[-200:]))
        self.check(not os.path.exists(missing) and not os.path.exists(missing + ".key"),
                   "a missing state_dir is not created, nor a key beside it")

    def test_nul_in_header(self):
        keys = write_secret(os.path.join(WORK, "keys-nul"), "%s alice\n" % KEY_A)
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys) as d:
            def get(auth):
                return raw_status(d.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: "
                                  + auth + b"\r\nConnection: close\r\n\r\n")
            self.eq(get(b"Bearer " + KEY_A.encode()), 200, "the key")
            self.eq(get(b"Bearer " + KEY_A.encode() + b"\x00junk"), 400,
                    "Bearer KEY<NUL>junk is refused, not taken as Bearer KEY")
            self.eq(get(b"Bearer " + b"x" * 20 + b"\x00" + KEY_A.encode()), 400,
                    "a wrong key before a NUL is refused")
            d.stop()

    def test_model_regular_file(self):
        fifo = os.path.join(WORK, "fifo.rnnd")
        if os.path.exists(fifo):
            os.remove(fifo)
        os.mkfifo(fifo)
        for what, path in (("a folder", WORK), ("a device", "/dev/null"), ("a FIFO", fifo)):
            rc, last = serve("--model", "x=" + path)
            self.check(rc == 1 and ("%s: file: not a regular file" % path) in last,
                       "model = x=%s (%s): exit 1, not a regular file (got %s: %s)"
                       % (path, what, rc, last))


if __name__ == "__main__":
    unittest.main()
