"""API keys and per-key session isolation (issue 7; docs/security.md).

- Without a valid `Authorization: Bearer KEY` every endpoint but the health checks answers
  401 with WWW-Authenticate; wrong, short, malformed and other-scheme headers too.
- Sessions belong to the key that made them: another (infer) key gets 404 on every session
  route, sees none of them in the list, cannot delete, fork, step, export or generate on them;
  an admin key sees and reaches all. /metrics needs an admin key (403 otherwise).
- v2 sequence ids are per key: the same sequence_id under two keys are two sequences.
- Snapshots keep the owners across a restart.
- Bad key files stop the start with a message naming the file and line.
- The access log names the key by its name, never the key.
Each check is a unittest case; a failing case fails the run.
"""
import os
import subprocess
import unittest

from daemon_util import RNND_BIN, Case, Daemon, bearer, tmpdir, write_secret

WORK = tmpdir("auth")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
KEY_A = "alice-0123456789abcdef"
KEY_B = "bob-fedcba9876543210xyz"
KEY_ADMIN = "root-AAAAAAAAAAAAAAAAAAAA"


def keys_file(text, name="keys"):
    return write_secret(os.path.join(WORK, name), text)


def good_keys():
    return keys_file("# test keys\n%s alice\n%s bob infer\n\n%s ops admin\n"
                     % (KEY_A, KEY_B, KEY_ADMIN))


def empty_dir(path):
    os.makedirs(path, exist_ok=True)
    for n in os.listdir(path):
        os.remove(os.path.join(path, n))
    return path


class Keys(Case):
    """One daemon with three keys (alice, bob infer, ops admin)."""

    @classmethod
    def setUpClass(cls):
        state = empty_dir(os.path.join(WORK, "state"))
        cls.d = cls.serve({"charlm": CHARLM}, "--api-keys-file", good_keys(),
                          "--state-dir", state)

    def test_who_gets_in(self):
        d = self.d
        for route in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
            self.eq(d.request("GET", route)[0], 200, "%s needs no key" % route)
        for what, hdr in (("no header", None), ("wrong key", "Bearer " + "x" * 20),
                          ("short key", "Bearer abc"), ("Basic scheme", "Basic " + KEY_A),
                          ("key without scheme", KEY_A), ("empty bearer", "Bearer ")):
            for method, route, body in (("GET", "/v1/models", None),
                                        ("POST", "/v1/sessions", {"model": "charlm"}),
                                        ("GET", "/metrics", None),
                                        ("GET", "/v2/models/charlm", None),
                                        ("GET", "/nowhere", None)):
                st, h, b = d.request(method, route, body,
                                     headers={"Authorization": hdr} if hdr else None)
                err = b.get("error") if isinstance(b, dict) else None
                code = err.get("code") if isinstance(err, dict) else \
                    ("unauthorized" if route.startswith("/v2") and isinstance(err, str) else None)
                self.check(st == 401 and code == "unauthorized" and
                           h.get("www-authenticate", "").startswith("Bearer"),
                           "%s: %s %s -> 401 unauthorized with WWW-Authenticate (got %s)"
                           % (what, method, route, st))
        self.eq(d.request("GET", "/v1/models", headers=bearer(KEY_A))[0], 200, "a valid key")
        self.eq(d.request("GET", "/v1/models", headers={"Authorization": "bearer  %s " % KEY_A}
                          )[0], 200, "the scheme is case-insensitive, spaces around the key")

    def test_sessions_belong_to_their_key(self):
        d = self.d
        st, _, a = d.request("POST", "/v1/sessions", {"model": "charlm"}, headers=bearer(KEY_A))
        self.eq(st, 201, "alice opens a session")
        sid = a["id"]
        d.request("POST", "/v1/sessions/%s/step" % sid, {"text": "hi"}, headers=bearer(KEY_A))
        other = [("GET", "", None), ("POST", "/step", {"text": "x"}),
                 ("POST", "/generate", {"prompt": "x", "max_tokens": 2}),
                 ("POST", "/reset", None), ("POST", "/fork", None), ("GET", "/state", None),
                 ("PUT", "/state", {"digest": "0" * 64, "state": {}}), ("DELETE", "", None)]
        for method, suffix, body in other:
            r = d.request(method, "/v1/sessions/%s%s" % (sid, suffix), body,
                          headers=bearer(KEY_B))
            self.error(r, 404, "not_found", "bob: %s .../%s of alice's session" % (method, suffix))
        st, _, info = d.request("GET", "/v1/sessions/%s" % sid, headers=bearer(KEY_A))
        self.eq((st, info["steps"]), (200, 2), "alice's session is untouched by bob's attempts")
        st, _, lst = d.request("GET", "/v1/sessions", headers=bearer(KEY_B))
        self.eq(lst["sessions"], [], "bob's list does not show alice's session")
        st, _, lst = d.request("GET", "/v1/sessions", headers=bearer(KEY_A))
        self.eq([s["id"] for s in lst["sessions"]], [sid], "alice's list shows hers")
        st, _, lst = d.request("GET", "/v1/sessions", headers=bearer(KEY_ADMIN))
        self.check(sid in [s["id"] for s in lst["sessions"]], "the admin key lists every session")
        self.eq(d.request("GET", "/v1/sessions/%s" % sid, headers=bearer(KEY_ADMIN))[0], 200,
                "the admin key reaches any session")
        st, _, fk = d.request("POST", "/v1/sessions/%s/fork" % sid, headers=bearer(KEY_A))
        self.eq(d.request("GET", "/v1/sessions/%s" % fk["id"], headers=bearer(KEY_B))[0], 404,
                "a fork belongs to the key that made it")

    def test_metrics_needs_admin(self):
        d = self.d
        self.error(d.request("GET", "/metrics", headers=bearer(KEY_A)), 403, "forbidden",
                   "/metrics with an infer key")
        self.eq(d.request("GET", "/metrics", headers=bearer(KEY_ADMIN))[0], 200,
                "/metrics with an admin key")

    def test_v2_sequences_per_key(self):
        d = self.d

        def v2(key, start, end):
            body = {"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "INT32",
                                "data": [5]}],
                    "parameters": {"sequence_id": 42, "sequence_start": start,
                                   "sequence_end": end}}
            return d.request("POST", "/v2/models/charlm/infer", body, headers=bearer(key))
        self.eq(v2(KEY_A, True, False)[0], 200, "alice starts sequence 42")
        self.eq(v2(KEY_B, False, False)[0], 400, "bob cannot continue alice's sequence 42")
        self.eq(v2(KEY_B, True, True)[0], 200, "bob's own sequence 42 is another sequence")
        self.eq(v2(KEY_A, False, True)[0], 200, "alice's sequence 42 continues")

    def test_log_names_key_not_key(self):
        d = self.d
        st, _, a = d.request("POST", "/v1/sessions", {"model": "charlm"}, headers=bearer(KEY_A))
        # test_sessions_belong_to_their_key counts alice's sessions
        self.addCleanup(d.request, "DELETE", "/v1/sessions/%s" % a["id"], headers=bearer(KEY_A))
        d.request("POST", "/v1/sessions/%s/step" % a["id"], {"text": "!"}, headers=bearer(KEY_A))
        d.request("GET", "/v1/sessions", headers=bearer(KEY_B))
        d.request("GET", "/metrics", headers=bearer(KEY_ADMIN))
        # the access lines come in after the replies (a thread reads the log): wait for
        # alice's before looking at them all
        named = d.wait_log(lambda l: "event=access" in l and "key=alice" in l)
        self.check(not any(k in line for line in d.log for k in (KEY_A, KEY_B, KEY_ADMIN)),
                   "no log line holds a key")
        self.check(named, "the access log names the key")


class Restart(Case):
    def test_owners_survive_a_restart(self):
        path = good_keys()
        state = empty_dir(os.path.join(WORK, "state-restart"))
        with Daemon({"charlm": CHARLM}, "--api-keys-file", path, "--state-dir", state) as d:
            st, _, a = d.request("POST", "/v1/sessions", {"model": "charlm"},
                                 headers=bearer(KEY_A))
            sid = a["id"]
            d.request("POST", "/v1/sessions/%s/step" % sid, {"text": "hi"},
                      headers=bearer(KEY_A))
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status")
        with Daemon({"charlm": CHARLM}, "--api-keys-file", path, "--state-dir", state) as d:
            self.eq(d.request("GET", "/v1/sessions/%s" % sid, headers=bearer(KEY_A))[0], 200,
                    "after a restart alice still has her session")
            self.eq(d.request("GET", "/v1/sessions/%s" % sid, headers=bearer(KEY_B))[0], 404,
                    "and bob still does not")
            d.stop()


class BadKeyFiles(Case):
    def test_bad_key_files(self):
        for what, text, want in (("short key", "abc\n", ":1: a key must be"),
                                 ("unknown scope", KEY_A + " a root\n", ":1: scope must be"),
                                 ("repeated key", KEY_A + "\n" + KEY_A + " x\n",
                                  ":2: the same key"),
                                 ("no key", "# nothing\n\n", "no key in the file"),
                                 ("too many fields", KEY_A + " a infer extra\n", ":1: expected")):
            bad = keys_file(text, "bad")
            p = subprocess.run([RNND_BIN, "serve", "--model", "charlm=" + CHARLM,
                                "--listen", "127.0.0.1:0", "--api-keys-file", bad],
                               capture_output=True, timeout=60)
            err = p.stderr.decode(errors="replace")
            self.check(p.returncode == 1 and bad in err and want in err,
                       "%s: exit 1 naming the file and the line: %s" % (what, err.strip()[-200:]))

    def test_missing_key_file(self):
        p = subprocess.run([RNND_BIN, "serve", "--model", "charlm=" + CHARLM, "--listen",
                            "127.0.0.1:0", "--api-keys-file", os.path.join(WORK, "missing")],
                           capture_output=True, timeout=60)
        self.check(p.returncode == 1 and b"missing" in p.stderr,
                   "a missing key file stops the start")


if __name__ == "__main__":
    unittest.main()
