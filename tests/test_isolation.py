"""What one API key can learn about another's sessions, and about the routes without a key
(issue 13.8; docs/security.md).

- Another key's expired or evicted session answers 404, exactly as an id that never existed;
  its own key (and an admin key) get 410 `gone`. Both orders: the other key asks first (the
  lookup itself expires the session) or second (the tombstone answers).
- OPTIONS needs a key like every other request (401 without); with a key it answers 204 with
  Allow on a route and 404 elsewhere. A CORS preflight (no credentials) gets the same answer on
  every path, known or not, and no Allow.
- session_evict = lru: a key's creations evict its own sessions, or those of a key holding
  more than its fair share (max_sessions / keys with sessions open), never the sessions of a
  key within its share.
- No log line holds a session id, including `event=session_dropped` at a restore (which names
  the record and the key instead), nor an API key nor a v2 sequence id, even at
  `--log-level debug` over every session route (whose `event=request` lines name the path
  with the id replaced by `{id}`), nor anything shaped like an id (32 hex digits) in a path
  or a model name, wherever it stands (`/v1/Sessions/ID`, `/ID`, `GET /v1/models/ID`), nor
  16 digits of an id in a row.
Each check is a unittest case; a failing case fails the run.
"""
import os
import time
import unittest

from daemon_util import Case, Daemon, bearer, tmpdir, write_secret

WORK = tmpdir("isolation")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
KEY_A = "alice-0123456789abcdef"
KEY_B = "bob-fedcba9876543210xyz"
KEY_ADMIN = "root-AAAAAAAAAAAAAAAAAAAA"
SIDS = []       # every session id made here: none may appear in a log


def keys_file():
    return write_secret(os.path.join(WORK, "keys"),
                        "%s alice\n%s bob\n%s ops admin\n" % (KEY_A, KEY_B, KEY_ADMIN))


def status(d, sid, key):
    return d.request("GET", "/v1/sessions/" + sid, headers=bearer(key))[0]


class Isolation(Case):
    """Each test on its own daemon, with the same keys file."""

    @classmethod
    def setUpClass(cls):
        cls.keys = keys_file()

    def create(self, d, key, **body):
        st, _, b = d.request("POST", "/v1/sessions", dict(body, model="charlm"),
                             headers=bearer(key))
        self.eq(st, 201, "create a session")
        SIDS.append(b["id"])
        return b["id"]

    def no_ids_logged(self, d, what):
        # any 16 digits of an id in a row: a path cut to fit the log's buffer once ended inside one
        parts = {sid[i:i + 16] for sid in SIDS for i in range(len(sid) - 15)}
        parts |= {p.upper() for p in parts}
        leaked = [l for l in d.log if any(p in l for p in parts)]
        self.check(not leaked, "%s: no log line holds a session id (got %r)" % (what, leaked[:2]))

    def test_debug_log(self):
        keys = self.keys
        seq = "seq-secret-5f3a9c"
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys, "--log-level", "debug",
                    "--access-log", "on") as d:
            sid = self.create(d, KEY_A)
            base = "/v1/sessions/" + sid
            calls = [("GET", "/v1/sessions", None, 200), ("GET", base, None, 200),
                     ("POST", base + "/step", {"text": "ab"}, 200),
                     ("POST", base + "/generate", {"prompt": "a", "max_tokens": 2}, 200),
                     ("GET", base + "/state", None, 200),
                     ("POST", base + "/reset", {}, 200),
                     ("POST", base + "/fork", {}, 201),
                     ("GET", base + "/nowhere", None, 404),
                     ("POST", base + "x/nowhere", {}, 404),
                     ("DELETE", base, None, 204)]
            for method, path, body, want in calls:
                st, _, b = d.request(method, path, body, headers=bearer(KEY_A))
                self.eq(st, want, "%s %s" % (method, path.replace(sid, "{id}")))
                if path.endswith("/fork") and st == 201:
                    SIDS.append(b["id"])
                    d.request("DELETE", "/v1/sessions/" + b["id"], headers=bearer(KEY_A))
            # Issue 13, round 4, item 2: only the segment after a literal "sessions" was redacted,
            # so each of these logged the id whole (or, cut to fit, 17 of its digits)
            for path in ("/v1/Sessions/" + sid, "/v1/sessionsX/" + sid, "/" + sid,
                         base + "/../" + sid, "/v1/models/" + sid, "/v1/models/" + sid.upper(),
                         "/v1/models/" + sid + "/infer", "/v2/models/" + sid,
                         "/v1/models/x" + sid + "y", "/" + "z" * 140 + "/" + sid):
                method = "POST" if path.endswith("/infer") else "GET"
                st, _, _ = d.request(method, path, {} if method == "POST" else None,
                                     headers=bearer(KEY_A))
                self.check(st in (400, 404), "%s %s: refused (%d)"
                           % (method, path.replace(sid, "{id}"), st))
            # the log is read by a thread: a request's line may come in after its reply
            self.check(all(d.wait_log(lambda l, p=p: p in l)
                           for p in ('path="/v1/Sessions/{id}"', 'path="/v1/sessionsX/{id}"',
                                     'path="/v1/sessions/{id}/../{id}"',
                                     'path="/' + "z" * 140 + '/{id}"')),
                       "the debug log names those paths with {id} (got %r)"
                       % [l for l in d.log if "event=request " in l and "Sessions" in l][:2])
            self.check(d.wait_log(lambda l: "event=access" in l and 'model="{id}"' in l) and
                       d.wait_log(lambda l: "event=access" in l and 'model="x{id}y"' in l),
                       "the access log names a model that looks like an id as {id} (got %r)"
                       % [l for l in d.log if "event=access" in l and "models/*" in l][:2])
            v2 = {"inputs": [{"name": "INPUT", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                  "parameters": {"sequence_id": seq, "sequence_start": True}}
            self.eq(d.request("POST", "/v2/models/charlm/infer", v2,
                              headers=bearer(KEY_A))[0], 200,
                    "v2 infer in a string sequence")
            self.check(d.wait_log(lambda l: "event=request" in l and
                                  "/v1/sessions/{id}/step" in l),
                       "debug logging names the step route with {id} (got %r)"
                       % [l for l in d.log if "event=request" in l][:3])
            self.no_ids_logged(d, "debug log")
            secrets = [KEY_A, KEY_B, KEY_ADMIN, seq]
            leaked = [l for l in d.log if any(s in l for s in secrets)]
            self.check(not leaked, "debug log: no key or sequence id (got %r)" % leaked[:2])
            self.eq(d.stop()[0], 0, "clean exit")

    def test_tombstones(self):
        keys = self.keys
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys) as d:
            first_other, first_own = self.create(d, KEY_A, ttl_s=1), self.create(d, KEY_A, ttl_s=1)
            time.sleep(1.3)
            self.eq(status(d, first_other, KEY_B), 404, "expired, asked first by another key: 404")
            self.eq(status(d, first_other, KEY_A), 410, "then by its own key: 410")
            self.eq(status(d, first_own, KEY_A), 410, "expired, asked first by its own key: 410")
            self.eq(status(d, first_own, KEY_B), 404, "then by another key: 404 (the tombstone)")
            self.eq(status(d, first_own, KEY_ADMIN), 410, "and by an admin key: 410")
            for method, path in (("DELETE", ""), ("POST", "/step"), ("GET", "/state")):
                body = {"text": "a"} if method == "POST" else None
                st = d.request(method, "/v1/sessions/" + first_own + path, body,
                               headers=bearer(KEY_B))[0]
                self.eq(st, 404, "another key's expired session, %s %s: 404" % (method, path))
            self.no_ids_logged(d, "tombstones")
            self.eq(d.stop()[0], 0, "clean exit")

    def test_options(self):
        keys = self.keys
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys,
                    "--cors-origins", "https://app.example") as d:
            for path in ("/v1/sessions", "/v1/models/charlm/infer", "/metrics", "/nowhere"):
                st, h, b = d.request("OPTIONS", path)
                self.check(st == 401 and "allow" not in h and "www-authenticate" in h,
                           "OPTIONS %s without a key: 401, no Allow (got %s %r)" % (path, st, h))
            st, h, _ = d.request("OPTIONS", "/v1/sessions", headers=bearer(KEY_A))
            self.check(st == 204 and "POST" in h.get("allow", ""),
                       "OPTIONS with a key: 204 with Allow (got %s %r)" % (st, h.get("allow")))
            self.eq(d.request("OPTIONS", "/nowhere", headers=bearer(KEY_A))[0], 404,
                    "OPTIONS on an unknown path with a key: 404")
            pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
            answers = []
            for path in ("/v1/sessions", "/v1/models/charlm/infer", "/nowhere", "/v9/x/y"):
                st, h, b = d.request("OPTIONS", path, headers=pre)
                h.pop("date", None)
                answers.append((st, sorted(h.items()), b))
                self.check(st == 204 and "allow" not in h and
                           "POST" in h.get("access-control-allow-methods", ""),
                           "preflight on %s: 204 with the CORS methods, no Allow (got %s %r)"
                           % (path, st, h))
            self.check(all(a == answers[0] for a in answers),
                       "a preflight answers the same on every path (got %r)" % answers)
            self.eq(d.stop()[0], 0, "clean exit")

    def test_fair_eviction(self):
        keys = self.keys
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys, "--max-sessions", "4",
                    "--session-evict", "lru") as d:
            b1 = self.create(d, KEY_B)
            time.sleep(0.02)
            b2 = self.create(d, KEY_B)
            time.sleep(0.02)
            b3 = self.create(d, KEY_B)
            time.sleep(0.02)
            a1 = self.create(d, KEY_A)
            time.sleep(0.02)
            # full; bob holds 3 of 4, over his share of 2: his least recently used goes
            a2 = self.create(d, KEY_A)
            self.eq(status(d, b1, KEY_B), 410, "a key over its fair share loses its LRU session")
            self.eq(status(d, b1, KEY_A), 404, "which another key is told never existed")
            time.sleep(0.02)
            # full; bob holds 2, his share: alice's creation evicts her own oldest, not his
            self.create(d, KEY_A)
            self.eq([status(d, s, KEY_B) for s in (b2, b3)], [200, 200],
                    "a key within its fair share keeps its sessions (LRU among the creator's)")
            self.eq(status(d, a1, KEY_A), 410, "the creator's own LRU session was evicted")
            self.eq(status(d, a2, KEY_A), 200, "and only that one")
            time.sleep(0.02)
            # bob within his share may evict his own
            self.create(d, KEY_B)
            self.eq(status(d, b2, KEY_B), 410, "bob's creation evicts his own LRU session")
            self.eq(status(d, a2, KEY_A), 200, "not alice's (within her share)")
            self.no_ids_logged(d, "eviction")
            self.eq(d.stop()[0], 0, "clean exit")

    def test_dropped_log(self):
        keys = self.keys
        state = os.path.join(WORK, "state")
        os.makedirs(state, exist_ok=True)
        for n in os.listdir(state):
            os.remove(os.path.join(state, n))
        with Daemon({"charlm": CHARLM, "other": CHARLM}, "--api-keys-file", keys,
                    "--state-dir", state) as d:
            st, _, b = d.request("POST", "/v1/sessions", {"model": "other"}, headers=bearer(KEY_A))
            self.eq(st, 201, "a session of model other")
            SIDS.append(b["id"])
            self.eq(d.stop()[0], 0, "clean exit (writes the snapshot)")
        with Daemon({"charlm": CHARLM}, "--api-keys-file", keys, "--state-dir", state) as d:
            lines = [l for l in d.log if "event=session_dropped" in l]
            self.check(len(lines) == 1 and "record=0" in lines[0] and "key=alice" in lines[0] and
                       "reason=model_gone" in lines[0],
                       "a dropped session is logged by record and key (got %r)" % lines)
            self.no_ids_logged(d, "restore")
            self.eq(d.stop()[0], 0, "clean exit")


if __name__ == "__main__":
    unittest.main()
