"""Listing sessions while a reload retires their model and a DELETE frees it (issue 13.1).

A session keeps the model version it was opened on; after a reload replaced the file, that
session holds the last reference to the old version, and deleting it frees the version. A
listing (GET /v1/sessions) or an inspection (GET /v1/sessions/{id}) running at that moment
used to print the model's name from freed memory: under ASan a heap-use-after-free, in the
normal build "model" fields of raw bytes. This test runs that interleaving in a loop for a
bounded time (RNND_RACE_S seconds, default 6): a daemon serves vec0..vec7 from a models
folder plus 200 sessions of charlm (long listings widen the window); each round opens a
session on every vec, replaces every vec file, reloads (SIGHUP), and deletes the sessions (so
each round retires 8 versions) while lister threads hammer both GETs. Every answer must be JSON whose "model" is a served name with an integer version,
and the daemon must stay up (tests/Makefile.am runs this under ASan in the sanitizer build).
Each check is a unittest case; a failing case fails the run.
"""
import os
import shutil
import signal
import threading
import time
import unittest

from daemon_util import Case, Daemon, golden_cases, golden_model, tmpdir

WORK = tmpdir("session_race")
MODELS = os.path.join(WORK, "models")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
SECONDS = float(os.environ.get("RNND_RACE_S", "6"))
N_VEC = 8
NAMES = {"charlm"} | {"vec%d" % i for i in range(N_VEC)}

CASES = {name: case for name, case, _ in golden_cases()}
VEC = sorted(n for n, c in CASES.items() if c["input"]["kind"] == "vectors" and c["stateful"])


def install(src, name):
    tmp = os.path.join(MODELS, ".%s.tmp" % name)
    shutil.copyfile(src, tmp)
    os.rename(tmp, os.path.join(MODELS, name + ".rnnd"))


def summary_bad(s):
    """Why one session summary is wrong, or None."""
    if not isinstance(s, dict):
        return "not an object: %r" % (s,)
    if s.get("model") not in NAMES:
        return "model %r is not a served name" % (s.get("model"),)
    if not isinstance(s.get("model_version"), int):
        return "model_version %r" % (s.get("model_version"),)
    return None


class Listers:
    """Threads sending GET /v1/sessions (and GET of the current id) until stopped."""

    def __init__(self, d, n=6):
        self.d = d
        self.stop = False
        self.sids = []
        self.count = 0
        self.bad = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def one(self, i, conn):
        sids = self.sids
        if i % 3 == 2 and sids:
            st, _, b = self.d.request("GET", "/v1/sessions/" + sids[self.count % len(sids)],
                                      conn=conn)
            if st == 404:
                return None         # deleted meanwhile: fine
            return "GET one: %s %r" % (st, b) if st != 200 else summary_bad(b)
        st, _, b = self.d.request("GET", "/v1/sessions?limit=1000", conn=conn)
        if st != 200 or not isinstance(b, dict) or not isinstance(b.get("sessions"), list):
            return "list: %s %r" % (st, b)
        for s in b["sessions"]:
            why = summary_bad(s)
            if why:
                return "list: " + why
        return None

    def run(self, i):
        conn = self.d.conn()            # keep-alive: more requests in flight per second
        while not self.stop:
            try:
                why = self.one(i, conn)
            except Exception as e:      # invalid JSON or a dead daemon
                why = repr(e)
                conn.close()
                conn = self.d.conn()
            with self.lock:
                self.count += 1
                if why:
                    self.bad.append(why)
            if why and not self.d.alive():
                return

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join(60)


class SessionRace(Case):
    def open_sessions(self, d, rounds):
        sids = []
        for i in range(N_VEC):
            try:
                st, _, b = d.request("POST", "/v1/sessions", {"model": "vec%d" % i})
            except OSError as e:            # the daemon died
                st = repr(e)
            if not self.eq(st, 201, "round %d: a session on vec%d" % (rounds, i)):
                return None
            sids.append(b["id"])
        return sids

    def test_race(self):
        shutil.rmtree(MODELS, ignore_errors=True)
        os.makedirs(MODELS)
        files = [golden_model(n, WORK) for n in VEC[:2]]
        for i in range(N_VEC):
            install(files[0], "vec%d" % i)
        with Daemon({"charlm": CHARLM}, "--models", MODELS, "--max-sessions", "1000",
                    "--http-threads", "4") as d:
            for _ in range(200):
                d.request("POST", "/v1/sessions", {"model": "charlm"})
            listers = Listers(d)
            rounds = reloads = 0
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline and d.alive() and not listers.bad:
                sids = self.open_sessions(d, rounds)
                if not sids:
                    break
                listers.sids = sids
                # changed files: each session now holds the last reference to its version
                for i in range(N_VEC):
                    install(files[(rounds + 1) % 2], "vec%d" % i)
                before = sum("event=reloaded" in l for l in d.log)
                d.proc.send_signal(signal.SIGHUP)
                t_end = time.monotonic() + 30
                while sum("event=reloaded" in l for l in d.log) == before and d.alive() \
                        and time.monotonic() < t_end:
                    time.sleep(0.002)
                reloads += sum("event=reloaded" in l for l in d.log) > before
                for sid in sids:
                    try:
                        st = d.request("DELETE", "/v1/sessions/" + sid)[0]
                    except OSError as e:    # the daemon died
                        st = repr(e)
                    self.eq(st, 204, "round %d: DELETE" % rounds)
                rounds += 1
            listers.finish()
            print("%d rounds (%d reloads), %d GETs in %.0f s" % (rounds, reloads, listers.count,
                                                                 SECONDS))
            self.check(rounds >= 3 and reloads == rounds, "rounds ran, each with a reload")
            self.check(not listers.bad,
                       "every listing is JSON naming served models: %d bad, first "
                       "%r" % (len(listers.bad), listers.bad[:3]))
            alive = d.alive()
            self.check(alive, "the daemon is still up")
            if not alive or listers.bad:
                d.kill()
                d._reader.join(10)          # the rest of a sanitizer's report
                report = [i for i, l in enumerate(d.log) if "ERROR: AddressSanitizer" in l]
                tail = d.log[report[0]:report[0] + 20] if report else d.log[-40:]
                print("daemon log:\n  " + "\n  ".join(tail))
            if alive:
                self.eq(d.stop()[0], 0, "clean exit")


if __name__ == "__main__":
    unittest.main()
