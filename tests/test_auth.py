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
Prints what it checked; exits 1 on any failure.
"""
import os
import subprocess

from daemon_util import Checker, Daemon, RNND_BIN, tmpdir

C = Checker()
WORK = tmpdir("auth")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
KEY_A = "alice-0123456789abcdef"
KEY_B = "bob-fedcba9876543210xyz"
KEY_ADMIN = "root-AAAAAAAAAAAAAAAAAAAA"


def keys_file(text, name="keys"):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def bearer(key):
    return {"Authorization": "Bearer " + key}


def main():
    path = keys_file("# test keys\n%s alice\n%s bob infer\n\n%s ops admin\n"
                     % (KEY_A, KEY_B, KEY_ADMIN))
    state = os.path.join(WORK, "state")
    os.makedirs(state, exist_ok=True)
    for n in os.listdir(state):
        os.remove(os.path.join(state, n))
    with Daemon({"charlm": CHARLM}, "--api-keys-file", path, "--state-dir", state) as d:
        # ---- who gets in ----
        for route in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
            C.eq(d.request("GET", route)[0], 200, "%s needs no key" % route)
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
                C.check(st == 401 and code == "unauthorized" and
                        h.get("www-authenticate", "").startswith("Bearer"),
                        "%s: %s %s -> 401 unauthorized with WWW-Authenticate (got %s)"
                        % (what, method, route, st))
        C.eq(d.request("GET", "/v1/models", headers=bearer(KEY_A))[0], 200, "a valid key")
        C.eq(d.request("GET", "/v1/models", headers={"Authorization": "bearer  %s " % KEY_A}
                       )[0], 200, "the scheme is case-insensitive, spaces around the key")

        # ---- sessions belong to their key ----
        st, _, a = d.request("POST", "/v1/sessions", {"model": "charlm"}, headers=bearer(KEY_A))
        C.eq(st, 201, "alice opens a session")
        sid = a["id"]
        d.request("POST", "/v1/sessions/%s/step" % sid, {"text": "hi"}, headers=bearer(KEY_A))
        other = [("GET", "", None), ("POST", "/step", {"text": "x"}),
                 ("POST", "/generate", {"prompt": "x", "max_tokens": 2}),
                 ("POST", "/reset", None), ("POST", "/fork", None), ("GET", "/state", None),
                 ("PUT", "/state", {"digest": "0" * 64, "state": {}}), ("DELETE", "", None)]
        for method, suffix, body in other:
            r = d.request(method, "/v1/sessions/%s%s" % (sid, suffix), body,
                          headers=bearer(KEY_B))
            C.error(r, 404, "not_found", "bob: %s .../%s of alice's session" % (method, suffix))
        st, _, info = d.request("GET", "/v1/sessions/%s" % sid, headers=bearer(KEY_A))
        C.eq((st, info["steps"]), (200, 2), "alice's session is untouched by bob's attempts")
        st, _, lst = d.request("GET", "/v1/sessions", headers=bearer(KEY_B))
        C.eq(lst["sessions"], [], "bob's list does not show alice's session")
        st, _, lst = d.request("GET", "/v1/sessions", headers=bearer(KEY_A))
        C.eq([s["id"] for s in lst["sessions"]], [sid], "alice's list shows hers")
        st, _, lst = d.request("GET", "/v1/sessions", headers=bearer(KEY_ADMIN))
        C.check(sid in [s["id"] for s in lst["sessions"]], "the admin key lists every session")
        C.eq(d.request("GET", "/v1/sessions/%s" % sid, headers=bearer(KEY_ADMIN))[0], 200,
             "the admin key reaches any session")
        st, _, fk = d.request("POST", "/v1/sessions/%s/fork" % sid, headers=bearer(KEY_A))
        C.eq(d.request("GET", "/v1/sessions/%s" % fk["id"], headers=bearer(KEY_B))[0], 404,
             "a fork belongs to the key that made it")

        # ---- /metrics ----
        C.error(d.request("GET", "/metrics", headers=bearer(KEY_A)), 403, "forbidden",
                "/metrics with an infer key")
        C.eq(d.request("GET", "/metrics", headers=bearer(KEY_ADMIN))[0], 200,
             "/metrics with an admin key")

        # ---- v2 sequence ids are per key ----
        def v2(key, start, end):
            body = {"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "INT32",
                                "data": [5]}],
                    "parameters": {"sequence_id": 42, "sequence_start": start,
                                   "sequence_end": end}}
            return d.request("POST", "/v2/models/charlm/infer", body, headers=bearer(key))
        C.eq(v2(KEY_A, True, False)[0], 200, "alice starts sequence 42")
        C.eq(v2(KEY_B, False, False)[0], 400, "bob cannot continue alice's sequence 42")
        C.eq(v2(KEY_B, True, True)[0], 200, "bob's own sequence 42 is another sequence")
        C.eq(v2(KEY_A, False, True)[0], 200, "alice's sequence 42 continues")

        d.request("POST", "/v1/sessions/%s/step" % sid, {"text": "!"}, headers=bearer(KEY_A))
        C.check(not any(k in line for line in d.log for k in (KEY_A, KEY_B, KEY_ADMIN)),
                "no log line holds a key")
        C.check(any("event=access" in l and "key=alice" in l for l in d.log),
                "the access log names the key")
        rc, _ = d.stop()
        C.eq(rc, 0, "exit status")

    # ---- owners survive a restart ----
    with Daemon({"charlm": CHARLM}, "--api-keys-file", path, "--state-dir", state) as d:
        C.eq(d.request("GET", "/v1/sessions/%s" % sid, headers=bearer(KEY_A))[0], 200,
             "after a restart alice still has her session")
        C.eq(d.request("GET", "/v1/sessions/%s" % sid, headers=bearer(KEY_B))[0], 404,
             "and bob still does not")
        d.stop()

    # ---- bad key files ----
    for what, text, want in (("short key", "abc\n", ":1: a key must be"),
                             ("unknown scope", KEY_A + " a root\n", ":1: scope must be"),
                             ("repeated key", KEY_A + "\n" + KEY_A + " x\n", ":2: the same key"),
                             ("no key", "# nothing\n\n", "no key in the file"),
                             ("too many fields", KEY_A + " a infer extra\n", ":1: expected")):
        bad = keys_file(text, "bad")
        p = subprocess.run([RNND_BIN, "serve", "--model", "charlm=" + CHARLM,
                            "--listen", "127.0.0.1:0", "--api-keys-file", bad],
                           capture_output=True, timeout=60)
        err = p.stderr.decode(errors="replace")
        C.check(p.returncode == 1 and bad in err and want in err,
                "%s: exit 1 naming the file and the line: %s" % (what, err.strip()[-200:]))
    p = subprocess.run([RNND_BIN, "serve", "--model", "charlm=" + CHARLM, "--listen",
                        "127.0.0.1:0", "--api-keys-file", os.path.join(WORK, "missing")],
                       capture_output=True, timeout=60)
    C.check(p.returncode == 1 and b"missing" in p.stderr, "a missing key file stops the start")
    C.exit()


if __name__ == "__main__":
    main()
