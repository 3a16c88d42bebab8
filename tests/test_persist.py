"""Sessions survive restarts (docs/state.md; issue 5, acceptance 2).

- 100 sessions of two models (the bundled text model and a vector golden model), each fed a
  random number of random steps, some with generation defaults; SIGTERM; restart on the same
  state_dir: every session is back with its id, step count, ttl and defaults, and continues
  bit for bit like the same session in a second daemon that was never interrupted.
- A truncated or corrupted snapshot is skipped with a log line, and the daemon serves.
- A session whose model changed (same name, other weights) or disappeared is dropped with a
  log line, never restored onto other weights.
- Periodic snapshots (snapshot_interval_s): after SIGKILL the sessions come back as of the last
  snapshot.
- Records hold the model's state digest: a model file rewritten with the same weights under
  another name keeps its sessions. A version 2 snapshot (from before state digests: records
  hold the model file's SHA-256) restores its sessions onto the same files, and drops with a
  log line those whose file changed.
- Every restored field is checked as the API checks it (issue 13.7): crafted max_tokens and
  NaN ttl_s / temperature lose their record, the listing stays JSON; so do a creation time
  before 1970 or over an hour ahead, steps above 2^63-1, and NaN or Inf in a state.
- Names planted in state_dir (a symlink or FIFO at sessions.snap or sessions.snap.tmp) are
  never followed and never block the start or the shutdown.
- An older signed snapshot put back (a replay) is refused: its serial is below the last one
  written, kept beside the key.
- A snapshot above the cap (max_sessions, max_state_bytes) or of another uid is refused
  before it is read: no stall, no SIGBUS.
- A save that fails (a folder swapped in at sessions.snap) leaves no older snapshot that is
  accepted: the serial is raised before the rename; a folder at sessions.snap.tmp does not
  make saves fail (the temporary name is random).
Each check is a unittest case; a failing case fails the run.
"""
import hashlib
import hmac
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import time
import unittest

from daemon_util import Case, Daemon, golden_cases, golden_model, tmpdir

WORK = tmpdir("persist")
STATE = os.path.join(WORK, "state")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
CASES = {name: case for name, case, _ in golden_cases()}
VEC = next(n for n, c in sorted(CASES.items())
           if c["input"]["kind"] == "vectors" and c["stateful"])
VEC_DIM = CASES[VEC]["input"]["dim"]
RNG = random.Random(5)


def rand_steps(model, n):
    if model == "charlm":
        return {"text": "".join(RNG.choice("abcdefghij klmnop") for _ in range(n))}
    return {"inputs": [[RNG.uniform(-1, 1) for _ in range(VEC_DIM)] for _ in range(n)]}


def step(d, sid, body):
    st, _, b = d.request("POST", "/v1/sessions/%s/step" % sid, body)
    assert st == 200, (st, b)
    return b


def log_has(d, *words):
    return any(all(w in line for w in words) for line in d.log)


def temp_files():
    """The snapshot writer's temporary files left in state_dir."""
    return [n for n in os.listdir(STATE) if n.startswith("sessions.snap.tmp-")]


def snapshot_path():
    return os.path.join(STATE, "sessions.snap")


def key_path():
    """The snapshot key's default place: beside state_dir, not in it."""
    return STATE + ".key"


def trailer(body, version, key=None):
    """BODY (header, records, "RNNDEND1", count) with its SHA-256, and from version 4 the
    HMAC-SHA256 of all that with KEY (default: the key file's)."""
    body = bytes(body) + hashlib.sha256(bytes(body)).digest()
    if version >= 4:
        if key is None:
            key = open(key_path(), "rb").read()
        body += hmac.new(key, body, hashlib.sha256).digest()
    return body


def split(raw):
    """A snapshot's (version, end of its records): version 4 ends in a 32-byte MAC."""
    version = struct.unpack_from("=I", raw, 8)[0]
    return version, len(raw) - 48 - (32 if version >= 4 else 0)


def rewrite_snapshot(version, digests):
    """Rewrite the snapshot (docs/state.md, "File format") as VERSION with each record's digest
    replaced by DIGESTS[model name], and a new trailer hash."""
    raw = open(snapshot_path(), "rb").read()
    head = bytearray(raw[:24])
    struct.pack_into("=I", head, 8, version)
    body, (off, end) = bytearray(head), (24, split(raw)[1])
    while off < end:
        (n,) = struct.unpack_from("=I", raw, off)
        rec = bytearray(raw[off:off + 4 + n])
        nl = rec[4 + 32]
        name = rec[4 + 33:4 + 33 + nl].decode()
        rec[4 + 33 + nl:4 + 33 + nl + 64] = digests[name].encode()
        body += rec
        off += 4 + n
    body += raw[end:end + 16]
    with open(snapshot_path(), "wb") as f:
        f.write(trailer(body, version))


def edit_records(edit):
    """Rewrite the snapshot with EDIT(record id, record bytearray, offset of its owner field)
    applied to each record, and a new trailer hash and MAC (the key file's)."""
    raw = open(snapshot_path(), "rb").read()
    version, end = split(raw)
    body, off = bytearray(raw[:24]), 24
    while off < end:
        (n,) = struct.unpack_from("=I", raw, off)
        rec = bytearray(raw[off:off + 4 + n])
        nl = rec[4 + 32]
        edit(rec[4:4 + 32].decode(), rec, 4 + 33 + nl + 64)
        body += rec
        off += 4 + n
    body += raw[end:end + 16]
    with open(snapshot_path(), "wb") as f:
        f.write(trailer(body, version))


def serve_fails(*args):
    """`rnnd serve ARGS` that must not start: (exit status, its stderr)."""
    try:
        p = subprocess.run([os.environ["RNND_BIN"], "serve", "--listen", "127.0.0.1:0"]
                           + [str(a) for a in args], capture_output=True, text=True,
                           timeout=30)
    except subprocess.TimeoutExpired:
        return None, "it started and served"
    return p.returncode, p.stderr


def file_sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class Persist(Case):
    """Sessions kept across restarts in a state_dir (one folder, reset by each test)."""

    @classmethod
    def setUpClass(cls):
        shutil.rmtree(STATE, ignore_errors=True)
        os.makedirs(STATE)
        for p in (key_path(), key_path() + ".serial"):
            if os.path.lexists(p):
                os.unlink(p)    # a run of an older build may have left a clobbered one
        cls.models = {"charlm": CHARLM, "vec": golden_model(VEC, WORK)}

    def setUp(self):
        RNG.seed(5)     # each test's random inputs, whichever ran before it

    def test_restart(self):
        """100 sessions, SIGTERM, restart: bitwise continuation; then that snapshot truncated or
        corrupted, and restored onto changed or missing models."""
        models = self.models
        shutil.rmtree(STATE, ignore_errors=True)
        os.makedirs(STATE)

        # ---- 100 sessions, SIGTERM, restart: bitwise continuation ----
        plan = []       # (model, ttl, defaults, [bodies before], [bodies after])
        for i in range(100):
            model = "charlm" if i % 2 == 0 else "vec"
            defaults = {"temperature": 0, "max_tokens": 7} if model == "charlm" and i % 4 == 0 \
                else None
            before = [rand_steps(model, RNG.randint(1, 20)) for _ in range(RNG.randint(1, 3))]
            after = [rand_steps(model, RNG.randint(1, 10)) for _ in range(2)]
            plan.append((model, 100 + i, defaults, before, after))

        ids = []
        with Daemon(models, "--state-dir", STATE) as a, Daemon(models) as twin:
            twin_ids = []
            for model, ttl, defaults, before, _ in plan:
                body = {"model": model, "ttl_s": ttl}
                if defaults:
                    body["generate"] = defaults
                sid = a.request("POST", "/v1/sessions", body)[2]["id"]
                tid = twin.request("POST", "/v1/sessions", body)[2]["id"]
                for b in before:
                    x, y = step(a, sid, b), step(twin, tid, b)
                    assert x == y
                ids.append(sid)
                twin_ids.append(tid)
            _, _, listed = a.request("GET", "/v1/sessions?limit=1000")
            steps_before = {s["id"]: s["steps"] for s in listed["sessions"]}
            rc, secs = a.stop()
            self.eq(rc, 0, "SIGTERM: exit status 0")
            self.check(log_has(a, "event=snapshot", "sessions=100"),
                       "shutdown logs a snapshot of 100")
            self.check(os.path.exists(snapshot_path()), "the snapshot file exists")
            self.check(not temp_files(), "no temporary file is left")

            with Daemon(models, "--state-dir", STATE) as b:
                self.check(log_has(b, "event=restore", "sessions=100", "dropped=0"),
                           "restart logs 100 sessions restored")
                _, _, listed = b.request("GET", "/v1/sessions?limit=1000")
                got = {s["id"]: s for s in listed["sessions"]}
                self.eq(sorted(got), sorted(ids), "every session id is back")
                self.check(all(got[i]["steps"] == steps_before[i] for i in ids if i in got),
                           "every session has its step count")
                self.check(all(got[i]["ttl_s"] == p[1] for i, p in zip(ids, plan) if i in got),
                           "every session keeps its ttl")
                same = True
                for sid, tid, (model, _, defaults, _, after) in zip(ids, twin_ids, plan):
                    for body in after:
                        same &= step(b, sid, body) == step(twin, tid, body)
                    if defaults:
                        g1 = b.request("POST", "/v1/sessions/%s/generate" % sid, {"prompt": "a"})
                        g2 = twin.request("POST", "/v1/sessions/%s/generate" % tid,
                                          {"prompt": "a"})
                        same &= g1[2]["tokens"] == g2[2]["tokens"] and len(g1[2]["tokens"]) == 7
                self.check(same, "every restored session continues bit for bit like the "
                           "uninterrupted twin (steps and generation defaults)")
                rc, _ = b.stop()
                self.eq(rc, 0, "second stop: exit status 0")
            twin.stop()

        # ---- a truncated or corrupted snapshot is refused (its MAC) or skipped ----
        good = open(snapshot_path(), "rb").read()
        for what, data, event in (
                ("truncated", good[:len(good) // 2], "event=snapshot_refused"),
                ("one byte flipped", good[:1000] + bytes([good[1000] ^ 1]) + good[1001:],
                 "event=snapshot_refused"),
                ("empty", b"", "event=snapshot_skipped"),
                ("not a snapshot", b"hello" * 100, "event=snapshot_skipped")):
            with open(snapshot_path(), "wb") as f:
                f.write(data)
            with Daemon(models, "--state-dir", STATE) as d:
                self.check(log_has(d, event), "%s snapshot: %s" % (what, event))
                st, _, listed = d.request("GET", "/v1/sessions")
                self.eq((st, len(listed["sessions"])), (200, 0),
                        "%s snapshot: serving, no sessions"
                        % what)
                self.eq(d.request("GET", "/readyz")[0], 200, "%s snapshot: ready" % what)
                d.kill()    # no shutdown snapshot: keep the corrupt file for the next case

        # ---- changed or missing models: sessions dropped, never restored onto other weights ----
        with open(snapshot_path(), "wb") as f:
            f.write(good)
        other = golden_model(next(n for n, c in sorted(CASES.items())
                                  if n != VEC and c["input"]["kind"] == "vectors" and c["stateful"]
                                  and c["input"]["dim"] == VEC_DIM), WORK)
        with Daemon({"charlm": CHARLM, "vec": other}, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=session_dropped", "reason=model_changed"),
                       "a session of a changed model is dropped with a log line")
            self.check(log_has(d, "event=restore", "sessions=50", "dropped=50"),
                       "the 50 sessions of the unchanged model are restored")
            d.kill()
        with Daemon({"charlm": CHARLM}, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=session_dropped", "reason=model_gone"),
                       "a session of a removed model is dropped with a log line")
            d.kill()

    def test_periodic(self):
        """Periodic snapshots bound what SIGKILL loses."""
        models = self.models
        shutil.rmtree(STATE)
        os.makedirs(STATE)
        with Daemon(models, "--state-dir", STATE, "--snapshot-interval-s", "1") as d:
            sid = d.request("POST", "/v1/sessions", {"model": "charlm"})[2]["id"]
            step(d, sid, {"text": "abc"})
            time.sleep(2.5)     # at least one snapshot after the steps
            state = d.request("GET", "/v1/sessions/%s/state" % sid)[2]
            metrics = d.metrics()
            self.check(any(line.startswith("rnnd_snapshots_total ") and float(line.split()[1]) >= 1
                           for line in metrics.splitlines()),
                       "rnnd_snapshots_total counts snapshots")
            d.kill()
        with Daemon(models, "--state-dir", STATE) as d:
            got = d.request("GET", "/v1/sessions/%s/state" % sid)
            self.eq(got[0], 200, "after SIGKILL the session is back from the periodic snapshot")
            self.eq(json.dumps(got[2]), json.dumps(state), "with the state of the last snapshot")
            d.stop()

    def test_digests(self):
        """Snapshots keep what a state means: the state digest, and version 2's file digest."""
        models = self.models
        shutil.rmtree(STATE)
        os.makedirs(STATE)
        renamed = os.path.join(WORK, "vec_renamed.rnnd")
        subprocess.run([os.environ.get("PYTHON3", "python3"), "-m", "rnnd_convert",
                        os.path.join(os.environ["RNND_GOLDEN_DIR"], VEC, "model.onnx"), "-o",
                        renamed, "-q", "--name", "the same weights, renamed"], check=True,
                       timeout=120)
        with Daemon(models, "--state-dir", STATE) as d:
            sids = [d.request("POST", "/v1/sessions", {"model": m})[2]["id"]
                    for m in ("charlm", "vec")]
            step(d, sids[0], rand_steps("charlm", 5))
            step(d, sids[1], rand_steps("vec", 5))
            states = [d.request("GET", "/v1/sessions/%s/state" % s)[2] for s in sids]
            d.stop()
        saved = open(snapshot_path(), "rb").read()
        self.eq(struct.unpack_from("=I", saved, 8)[0], 4, "snapshots are written as version 4")

        def back(d, what):
            got = [d.request("GET", "/v1/sessions/%s/state" % s) for s in sids]
            self.eq([(g[0], g[2].get("steps"), g[2].get("state")) for g in got],
                    [(200, s["steps"], s["state"]) for s in states], what)

        with Daemon({"charlm": CHARLM, "vec": renamed}, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=restore", "sessions=2", "dropped=0",
                               "snapshot_version=4"),
                       "a model rewritten under another name keeps its sessions (same state "
                       "digest)")
            back(d, "and their states")
            d.kill()

        with open(snapshot_path(), "wb") as f:
            f.write(saved)
        rewrite_snapshot(2, {"charlm": file_sha(CHARLM), "vec": file_sha(models["vec"])})
        os.unlink(key_path())   # an upgrade: unsigned snapshots restore at the key's creation
        with Daemon(models, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=restore", "sessions=2", "dropped=0",
                               "snapshot_version=2"),
                       "a version 2 snapshot restores onto the files it was written with")
            back(d, "with their states")
            d.kill()
        rewrite_snapshot(2, {"charlm": file_sha(CHARLM), "vec": file_sha(renamed)})
        os.unlink(key_path())
        with Daemon(models, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=session_dropped", 'model="vec"', "reason=model_changed")
                       and log_has(d, "event=restore", "sessions=1", "dropped=1")
                       and not any(sids[1] in line for line in d.log),
                       "a version 2 record of another file is dropped with a log line (without "
                       "its id)")
            self.eq(d.request("GET", "/v1/sessions/%s/state" % sids[0])[2].get("state"),
                    states[0]["state"], "and the other session is restored")
            d.kill()

    def test_restored_fields(self):
        """Issue 13.7: every restored field is checked as the API checks it. A snapshot whose
        generation defaults say max_tokens 0 or -1, or whose ttl_s or temperature is NaN, loses
        that record (reason=invalid, the field named); max_tokens 2^62 is only above the setting,
        so it is lowered to max_generate_tokens; the listing stays JSON."""
        models = self.models
        shutil.rmtree(STATE)
        os.makedirs(STATE)
        with Daemon(models, "--state-dir", STATE) as d:
            body = {"model": "charlm", "ttl_s": 600, "generate": {"max_tokens": 5}}
            sids = [d.request("POST", "/v1/sessions", body)[2]["id"] for _ in range(6)]
            d.stop()
        # owner, steps, created, ttl_s, idle_s, has_gen, then max_tokens and temperature
        edits = {0: ("=q", 41, 0), 1: ("=q", 41, -1), 2: ("=q", 41, 2 ** 62),
                 3: ("=d", 24, float("nan")), 4: ("=d", 49, float("nan"))}

        order = []     # record number in the file of each session: logs name records, not ids

        def edit(rid, rec, at):
            i = sids.index(rid)
            order.append(i)
            if i in edits:
                fmt, delta, value = edits[i]
                struct.pack_into(fmt, rec, at + delta, value)
        edit_records(edit)
        with Daemon(models, "--state-dir", STATE, "--max-generate-tokens", "7") as d:
            for i, field in ((0, "max_tokens"), (1, "max_tokens"), (3, "ttl_s"),
                             (4, "temperature")):
                self.check(log_has(d, "event=session_dropped", "record=%d " % order.index(i),
                                   "reason=invalid",
                                   "msg=\"" + field),
                           "record %d (%s) is dropped as invalid, naming the field" % (i, field))
            self.check(log_has(d, "event=restore", "sessions=2", "dropped=4"),
                       "the two valid records are restored")
            try:
                st, _, body = d.request("GET", "/v1/sessions")
                listed = sorted(s["id"] for s in body["sessions"])
            except ValueError as e:
                st, listed = "not JSON: %s" % e, None
            self.eq((st, listed), (200, sorted([sids[2], sids[5]])),
                    "the listing is JSON and holds "
                    "the restored sessions only")
            st, _, got = d.request("POST", "/v1/sessions/%s/generate" % sids[2],
                                   {"prompt": "ab", "temperature": 0})
            self.eq((st, got.get("usage", {}).get("completion_tokens") if st == 200 else got),
                    (200, 7), "max_tokens 2^62 was lowered to max_generate_tokens")
            st, _, got = d.request("POST", "/v1/sessions/%s/generate" % sids[5],
                                   {"prompt": "ab", "temperature": 0})
            self.eq((st, got.get("usage", {}).get("completion_tokens") if st == 200 else got),
                    (200, 5), "an untouched record keeps its defaults")
            d.kill()

    def test_restored_numbers(self):
        """Issue 13.7: restored numbers are checked as the state import checks them. A record
        created at 2^63-1 or before 1970, with 2^64-1 steps, or with NaN or Inf in its state is
        dropped (reason=invalid, the field named); one created half an hour ahead (a clock stepped
        back) is restored with its values."""
        models = self.models
        shutil.rmtree(STATE)
        os.makedirs(STATE)
        with Daemon(models, "--state-dir", STATE) as d:
            sids = [d.request("POST", "/v1/sessions", {"model": "charlm"})[2]["id"]
                    for _ in range(7)]
            for sid in sids:
                step(d, sid, {"text": "abc"})
            d.stop()
        ahead = int(time.time()) + 1800
        # owner +0, steps +8, created +16; the state is the record's last bytes
        edits = {0: ("created", lambda rec, at: struct.pack_into("=q", rec, at + 16, 2 ** 63 - 1)),
                 1: ("created", lambda rec, at: struct.pack_into("=q", rec, at + 16, -1)),
                 2: ("steps", lambda rec, at: struct.pack_into("=Q", rec, at + 8, 2 ** 64 - 1)),
                 3: ("state", lambda rec, at: struct.pack_into("=f", rec, len(rec) - 4,
                                                               float("nan"))),
                 4: ("state", lambda rec, at: struct.pack_into("=f", rec, len(rec) - 8,
                                                               float("-inf"))),
                 5: (None, lambda rec, at: struct.pack_into("=qQ", rec, at + 8, 2 ** 63 - 1,
                                                            ahead))}
        order = []

        def edit(rid, rec, at):
            i = sids.index(rid)
            order.append(i)
            if i in edits:
                edits[i][1](rec, at)
        edit_records(edit)
        with Daemon(models, "--state-dir", STATE) as d:
            for i, (field, _) in edits.items():
                if field:
                    self.check(log_has(d, "event=session_dropped", "record=%d " % order.index(i),
                                       "reason=invalid", "msg=\"" + field),
                               "record %d (%s) is dropped as invalid, naming the field" % (i,
                                                                                           field))
            self.check(log_has(d, "event=restore", "sessions=2", "dropped=5"),
                       "the two valid records are restored")
            st, _, body = d.request("GET", "/v1/sessions")
            self.eq((st, sorted(s["id"] for s in body.get("sessions", []))),
                    (200, sorted([sids[5], sids[6]])), "the listing holds the valid records only")
            got = d.request("GET", "/v1/sessions/%s" % sids[5])[2]
            self.eq((got.get("steps"), got.get("created")), (2 ** 63 - 1, ahead),
                    "the largest steps and a creation half an hour ahead are kept")
            d.kill()

    def test_authentication(self):
        """Issue 13.7: snapshots are signed (version 4, HMAC-SHA256) with a key kept beside
        state_dir. The first start creates the key (0600, 32 bytes); a snapshot with a flipped
        byte, a cut trailer, or signed with another key is refused whole (reason=bad_mac, no
        session, the file renamed aside to sessions.snap.refused); an unsigned version 3 file is
        refused once the key exists (reason=unsigned) and restored at the start that creates the
        key; a bad key file (wrong size or mode, a symlink, inside state_dir) stops the start
        with FILE: reason and exit 1."""
        models = self.models
        shutil.rmtree(STATE)
        os.makedirs(STATE)
        if os.path.exists(key_path()):
            os.unlink(key_path())
        with Daemon(models, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=snapshot_key_created", key_path()),
                       "the first start creates the key and says where")
            sids = [d.request("POST", "/v1/sessions", {"model": "charlm"})[2]["id"]
                    for _ in range(3)]
            for sid in sids:
                step(d, sid, {"text": "abc"})
            d.stop()
        st = os.lstat(key_path())
        self.eq((oct(st.st_mode), st.st_size), (oct(0o100600), 32),
                "the key is a regular file of 32 bytes, mode 0600")
        self.eq(sorted(os.listdir(STATE)), ["sessions.snap"], "the key is not in state_dir")
        good = open(snapshot_path(), "rb").read()
        key = open(key_path(), "rb").read()
        version, end = split(good)
        self.eq(version, 4, "the snapshot is version 4")
        self.eq(good[-32:], hmac.new(key, good[:-32], hashlib.sha256).digest(),
                "its last 32 bytes are the HMAC-SHA256 of the rest with the key")
        body = good[:end + 16]
        v3 = bytearray(body)
        struct.pack_into("=I", v3, 8, 3)
        cases = (("a flipped byte", good[:200] + bytes([good[200] ^ 4]) + good[201:], "bad_mac"),
                 ("a truncated trailer", good[:-10], "bad_mac"),
                 ("another key", trailer(body, 4, os.urandom(32)), "bad_mac"),
                 ("an unsigned version 3 after the key exists", trailer(v3, 3), "unsigned"))
        for what, data, reason in cases:
            with open(snapshot_path(), "wb") as f:
                f.write(data)
            with Daemon(models, "--state-dir", STATE) as d:
                self.check(log_has(d, "event=snapshot_refused", "reason=" + reason),
                           "%s: refused whole (reason=%s)" % (what, reason))
                st_, _, listed = d.request("GET", "/v1/sessions")
                self.eq((st_, len(listed.get("sessions", [])), d.request("GET", "/readyz")[0]),
                        (200, 0, 200), "%s: ready, with no sessions" % what)
                d.kill()
            self.eq((os.path.exists(snapshot_path()),
                     open(snapshot_path() + ".refused", "rb").read() == data),
                    (False, True), "%s: the file is renamed aside, unchanged" % what)
            os.unlink(snapshot_path() + ".refused")
        # the upgrade: an unsigned version 3 restores at the start that creates the key
        os.unlink(key_path())
        with open(snapshot_path(), "wb") as f:
            f.write(trailer(v3, 3))
        with Daemon(models, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=snapshot_key_created") and
                       log_has(d, "event=restore", "sessions=3", "snapshot_version=3"),
                       "an unsigned version 3 is restored at the key's creation")
            d.stop()
        new = open(snapshot_path(), "rb").read()
        self.eq((split(new)[0], new[-32:]),
                (4, hmac.new(open(key_path(), "rb").read(), new[:-32], hashlib.sha256).digest()),
                "and the next snapshot is version 4, signed with the new key")
        # an explicit key file; bad ones stop the start
        other = os.path.join(WORK, "other.key")
        for p in (other, other + ".link"):
            if os.path.lexists(p):
                os.unlink(p)
        with Daemon(models, "--state-dir", STATE, "--snapshot-key-file", other) as d:
            self.check(log_has(d, "event=snapshot_key_created", other) and
                       log_has(d, "event=snapshot_refused", "reason=bad_mac"),
                       "snapshot_key_file: that key is made and used (the old snapshot is "
                       "refused)")
            d.kill()
        os.symlink(key_path(), other + ".link")
        with open(other, "wb") as f:
            f.write(b"x" * 31)
        for what, path, mode, want in (("wrong size", other, 0o600, "31 bytes"),
                                       ("wrong mode", key_path(), 0o644, "mode 0644"),
                                       ("a symlink", other + ".link", None, "symbolic link"),
                                       ("a place inside state_dir",
                                        os.path.join(STATE, "snap.key"), None,
                                        "inside state_dir")):
            if mode is not None:
                os.chmod(path, mode)
            rc, err = serve_fails(*sum((["--model", "%s=%s" % kv] for kv in models.items()), []),
                                  "--state-dir", STATE, "--snapshot-key-file", path)
            self.check(rc == 1 and ("msg=\"%s: " % path) in err and want in err,
                       "a key file of %s stops the start: exit 1, FILE: reason (%s)"
                       % (what, err.strip().splitlines()[-1:] if err else rc))
        os.chmod(key_path(), 0o600)
        self.check(not os.path.exists(os.path.join(STATE, "snap.key")), "and none is made in it")

    def test_state_dir_at_start(self):
        """Issue 13 follow-up: a state_dir that is missing or not a folder stops the start
        ("PATH: reason", exit 1) before the snapshot key is made beside it, instead of failing
        at shutdown; a final snapshot that fails (the folder removed while serving) makes the
        stop unclean: exit 1 and `event=stopped clean=0`, never clean=1."""
        models = self.models
        flags = sum((["--model", "%s=%s" % kv] for kv in models.items()), [])
        missing = os.path.join(WORK, "nostate")
        shutil.rmtree(missing, ignore_errors=True)
        if os.path.exists(missing + ".key"):
            os.remove(missing + ".key")
        rc, err = serve_fails(*flags, "--state-dir", missing)
        self.check(rc == 1 and missing + ": No such file or directory" in err,
                   "a missing state_dir stops the start with PATH: reason (got %s %r)"
                   % (rc, err[-300:]))
        self.check(not os.path.exists(missing + ".key"), "and no snapshot key is made beside it")
        afile = os.path.join(WORK, "statefile")
        with open(afile, "w") as f:
            f.write("x")
        rc, err = serve_fails(*flags, "--state-dir", afile)
        self.check(rc == 1 and afile + ": not a directory" in err,
                   "a state_dir that is a file stops the start (got %s %r)" % (rc, err[-300:]))
        gone = os.path.join(WORK, "vanishing")
        shutil.rmtree(gone, ignore_errors=True)
        os.makedirs(gone)
        with Daemon(models, "--state-dir", gone, exit_status=1) as d:
            self.eq(d.request("POST", "/v1/sessions", {"model": "charlm"})[0], 201, "a session")
            shutil.rmtree(gone)
            rc, _ = d.stop()
            self.check(rc == 1 and log_has(d, "event=snapshot_failed") and
                       log_has(d, "event=stopped", "clean=0") and not log_has(d, "clean=1"),
                       "a failed final snapshot: exit 1 and clean=0 (got %s %r)" % (rc,
                                                                                    d.log[-3:]))
        # the same failure left to the context's exit is not missed: it stops the daemon and
        # requires status 0 (tests/daemon_util.py), so a bad shutdown fails the test
        os.makedirs(gone)
        with self.assertRaisesRegex(AssertionError, "daemon exit status 1, want 0"):
            with Daemon(models, "--state-dir", gone) as d:
                self.eq(d.request("POST", "/v1/sessions", {"model": "charlm"})[0], 201,
                        "a session")
                shutil.rmtree(gone)

    def test_hostile_names(self):
        """Adversary findings on 13.7: names planted in state_dir are never followed and never
        block. A symlink at sessions.snap.tmp pointing at the key: the shutdown snapshot replaces
        the link, the key is untouched and the next start restores. A FIFO at sessions.snap: the
        start does not block, refuses it (reason=not_regular, renamed aside) and serves; a FIFO at
        sessions.snap.tmp does not stall the shutdown snapshot; a symlink at sessions.snap is
        refused (reason=symlink)."""
        models = self.models
        shutil.rmtree(STATE)
        os.makedirs(STATE)
        with Daemon(models, "--state-dir", STATE) as d:
            d.request("POST", "/v1/sessions", {"model": "charlm"})
            d.stop()
        key = open(key_path(), "rb").read()
        tmp = snapshot_path() + ".tmp"
        os.symlink(key_path(), tmp)
        with Daemon(models, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=restore", "sessions=1"), "planted .tmp link: restored")
            rc, _ = d.stop()
        self.eq((rc, open(key_path(), "rb").read() == key, os.path.islink(tmp),
                 os.path.islink(snapshot_path()), temp_files()), (0, True, True, False, []),
                "a symlink at sessions.snap.tmp to the key: exit 0, the key untouched, the link "
                "never used (the writer's temporary name is random), no temporary file left")
        os.unlink(tmp)
        with Daemon(models, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=restore", "sessions=1"), "and the next start restores")
            d.kill()
        good = open(snapshot_path(), "rb").read()
        os.unlink(snapshot_path())
        os.mkfifo(snapshot_path())
        os.mkfifo(tmp)
        with Daemon(models, "--state-dir", STATE, ready_timeout=15) as d:
            self.check(log_has(d, "event=snapshot_refused", "reason=not_regular"),
                       "a FIFO at sessions.snap: refused (reason=not_regular), the start not "
                       "blocked")
            self.eq(d.request("GET", "/readyz")[0], 200, "a FIFO at sessions.snap: ready")
            rc, secs = d.stop()
        self.check(rc == 0 and secs < 10 and os.path.isfile(snapshot_path()) and
                   not temp_files() and
                   stat.S_ISFIFO(os.lstat(snapshot_path() + ".refused").st_mode),
                   "a FIFO at sessions.snap.tmp: the shutdown snapshot is written (exit %s, "
                   "%.1f s), "
                   "the refused FIFO kept aside" % (rc, secs))
        os.unlink(snapshot_path() + ".refused")
        os.unlink(tmp)
        other = os.path.join(WORK, "elsewhere.snap")
        with open(other, "wb") as f:
            f.write(good)
        os.unlink(snapshot_path())
        os.symlink(other, snapshot_path())
        with Daemon(models, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=snapshot_refused", "reason=symlink"),
                       "a symlink at sessions.snap (to a good snapshot): refused (reason=symlink)")
            d.kill()
        os.unlink(snapshot_path() + ".refused")

    def test_rollback(self):
        """Adversary finding on 13.7: a replayed older signed snapshot must not bring deleted
        sessions back. Every snapshot's header holds a serial that only rises, and the last one
        written is kept beside the key (KEY.serial, 0600); a signed snapshot below it is refused
        (reason=rolled_back, renamed aside, no sessions), the latest one restores, and a serial
        file of another user stops the start."""
        models = self.models
        shutil.rmtree(STATE)
        os.makedirs(STATE)
        serial = key_path() + ".serial"
        for p in (key_path(), serial):
            if os.path.lexists(p):
                os.unlink(p)
        with Daemon(models, "--state-dir", STATE) as d:
            sids = [d.request("POST", "/v1/sessions", {"model": "charlm"})[2]["id"]
                    for _ in range(2)]
            d.stop()
        old = open(snapshot_path(), "rb").read()
        first = struct.unpack_from("=q", old, 16)[0]
        st = os.lstat(serial)
        self.eq((open(serial).read(), oct(st.st_mode)), ("%d\n" % first, oct(0o100600)),
                "the shutdown snapshot's serial is recorded beside the key, mode 0600")
        with Daemon(models, "--state-dir", STATE) as d:
            self.eq(d.request("DELETE", "/v1/sessions/%s" % sids[0])[0], 204, "a session deleted")
            d.stop()
        new = open(snapshot_path(), "rb").read()
        second = struct.unpack_from("=q", new, 16)[0]
        self.check(second > first and open(serial).read() == "%d\n" % second,
                   "the next snapshot's serial is above (%d > %d, even within a second) and "
                   "recorded"
                   % (second, first))
        with open(snapshot_path(), "wb") as f:
            f.write(old)
        with Daemon(models, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=snapshot_refused", "reason=rolled_back"),
                       "the older signed snapshot put back: refused (reason=rolled_back)")
            st_, _, listed = d.request("GET", "/v1/sessions")
            self.eq((st_, len(listed.get("sessions", [])), d.request("GET", "/readyz")[0]),
                    (200, 0, 200), "rolled back: ready, the deleted session not resurrected")
            d.kill()
        self.eq(open(snapshot_path() + ".refused", "rb").read() == old, True,
                "the replayed file is renamed aside")
        os.unlink(snapshot_path() + ".refused")
        with open(snapshot_path(), "wb") as f:
            f.write(new)
        with Daemon(models, "--state-dir", STATE) as d:
            _, _, listed = d.request("GET", "/v1/sessions")
            self.eq([x["id"] for x in listed.get("sessions", [])], [sids[1]],
                    "the latest snapshot restores (the remaining session only)")
            d.kill()
        os.chown(serial, 4242, 4242)
        rc, err = serve_fails(*sum((["--model", "%s=%s" % kv] for kv in models.items()), []),
                              "--state-dir", STATE)
        self.check(rc == 1 and ("%s: owned by uid 4242" % serial) in err,
                   "a serial file of another user stops the start (%s)"
                   % (err.strip().splitlines()[-1:] if err else rc))
        os.chown(serial, os.geteuid(), os.getegid())

    def test_failed_save(self):
        """Adversary findings round 3: a save that fails must not leave an older snapshot that is
        still accepted. A non-empty folder at sessions.snap.tmp (which the old writer could not
        remove, so every snapshot failed and a deleted session came back): the snapshot is
        written and the deleted session stays deleted. sessions.snap swapped for a folder while
        the daemon runs, and put back before the next start: the shutdown snapshot fails, but the
        guard (KEY.serial) was raised before the rename, so the old file is refused
        (reason=rolled_back) and the deleted session does not come back. A crashed writer's
        temporary file (its random name) is removed at the next start, nothing else."""
        models = self.models
        shutil.rmtree(STATE)
        os.makedirs(STATE)
        with Daemon(models, "--state-dir", STATE) as d:
            sids = [d.request("POST", "/v1/sessions", {"model": "charlm"})[2]["id"]
                    for _ in range(2)]
            d.stop()
        os.makedirs(os.path.join(snapshot_path() + ".tmp", "x"))
        with Daemon(models, "--state-dir", STATE) as d:
            self.eq(d.request("DELETE", "/v1/sessions/%s" % sids[0])[0], 204, "a session deleted")
            rc, _ = d.stop()
            self.check(rc == 0 and log_has(d, "event=snapshot ", "sessions=1") and
                       not log_has(d, "event=snapshot_failed"),
                       "a folder at sessions.snap.tmp: the shutdown snapshot is written")
        # its shutdown snapshot fails on purpose (a folder swapped in): exit 1
        with Daemon(models, "--state-dir", STATE, exit_status=1) as d:
            _, _, listed = d.request("GET", "/v1/sessions")
            self.eq([x["id"] for x in listed.get("sessions", [])], [sids[1]],
                    "a folder at sessions.snap.tmp: the deleted session stays deleted")
            keep = os.path.join(WORK, "keep.snap")
            os.rename(snapshot_path(), keep)
            os.mkdir(snapshot_path())
            self.eq(d.request("DELETE", "/v1/sessions/%s" % sids[1])[0], 204, "the other deleted")
            d.stop()
            self.check(log_has(d, "event=snapshot_failed"),
                       "a folder swapped in at sessions.snap: the shutdown snapshot fails "
                       "(logged)")
        os.rmdir(snapshot_path())
        os.rename(keep, snapshot_path())
        with Daemon(models, "--state-dir", STATE) as d:
            _, _, listed = d.request("GET", "/v1/sessions")
            self.check(log_has(d, "event=snapshot_refused", "reason=rolled_back") and
                       listed.get("sessions") == [],
                       "the older snapshot put back after the failed save: refused "
                       "(reason=rolled_back), the deleted session not resurrected")
            d.kill()
        self.eq(temp_files(), [], "no temporary file is left after the failed save")
        os.unlink(snapshot_path() + ".refused")
        # a crashed writer's leftovers (its random names) are removed at the next start; a
        # folder of such a name stays, and another name is never touched
        stale = os.path.join(STATE, "sessions.snap.tmp-0123456789abcdef")
        open(stale, "wb").write(b"x" * 100)
        os.makedirs(os.path.join(STATE, "sessions.snap.tmp-fedcba9876543210", "x"))
        open(os.path.join(STATE, "sessions.snap.tmp-other"), "wb").close()
        with Daemon(models, "--state-dir", STATE) as d:
            self.check(log_has(d, "event=snapshot_stale_removed", "files=1"),
                       "a crashed writer's temporary file: removed at start (logged)")
            d.kill()
        self.eq(sorted(n for n in os.listdir(STATE) if n.startswith("sessions.snap.tmp-")),
                ["sessions.snap.tmp-fedcba9876543210",
                 "sessions.snap.tmp-other"], "only the stale temporary file went")
        shutil.rmtree(os.path.join(STATE, "sessions.snap.tmp-fedcba9876543210"))
        os.unlink(os.path.join(STATE, "sessions.snap.tmp-other"))

    def test_planted_snapshot(self):
        """Adversary findings round 3: a planted huge snapshot stalled the start (the whole file
        was mapped and hashed before the daemon listened: a 4 GiB sparse file took 24 s) and one
        truncated during the restore killed the daemon (SIGBUS). A snapshot above the cap
        (max_sessions records + max_state_bytes of states) is refused at once (reason=too_large,
        renamed aside) and the daemon serves; so is a good signed snapshot owned by another uid
        (reason=not_owner), which this daemon did not write."""
        models = self.models
        shutil.rmtree(STATE)
        os.makedirs(STATE)
        with Daemon(models, "--state-dir", STATE) as d:
            d.request("POST", "/v1/sessions", {"model": "charlm"})
            d.stop()
        good = open(snapshot_path(), "rb").read()
        with open(snapshot_path(), "r+b") as f:
            f.truncate(4 << 30)     # sparse: no disk used
        t0 = time.monotonic()
        with Daemon(models, "--state-dir", STATE, ready_timeout=60) as d:
            secs = time.monotonic() - t0
            self.check(log_has(d, "event=snapshot_refused", "reason=too_large") and secs < 10 and
                       d.request("GET", "/readyz")[0] == 200,
                       "a 4 GiB snapshot (default limits): refused (reason=too_large), ready in "
                       "%.1f s" % secs)
            d.kill()
        self.eq(os.path.getsize(snapshot_path() + ".refused"), 4 << 30, "and renamed aside")
        os.unlink(snapshot_path() + ".refused")
        with open(snapshot_path(), "wb") as f:
            f.write(good)
        os.chown(snapshot_path(), 4242, 4242)
        with Daemon(models, "--state-dir", STATE) as d:
            _, _, listed = d.request("GET", "/v1/sessions")
            self.check(log_has(d, "event=snapshot_refused", "reason=not_owner",
                               "owned by uid 4242") and listed.get("sessions") == [],
                       "a signed snapshot owned by another uid: refused (reason=not_owner)")
            d.kill()
        os.unlink(snapshot_path() + ".refused")


if __name__ == "__main__":
    unittest.main()
