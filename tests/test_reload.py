"""Hot model reload on SIGHUP (issue 5, acceptance 3; docs/api.md 4.8).

A daemon serves a folder with two models while client threads keep sending infer requests,
steps to open sessions, and session creations. The test then, each time with SIGHUP:
- replaces a model file with other weights (same sizes): /v1/models shows version 2 with the
  new digest; sessions opened before keep stepping on the old weights and sessions opened
  after get the new ones, both checked bit for bit against daemons serving each file alone;
- replaces it with a corrupt file: logged naming the file, the old version stays;
- adds a model file: it appears; removes one: it disappears from /v1/models and new sessions
  of it get 404, while its open sessions keep working until they end;
and no request of the client threads fails at any point.
Each check is a unittest case; a failing case fails the run.
"""
import os
import random
import shutil
import signal
import threading
import time
import unittest

from daemon_util import Case, Daemon, golden_cases, golden_model, tmpdir

WORK = tmpdir("reload")
MODELS = os.path.join(WORK, "models")
CASES = {name: case for name, case, _ in golden_cases()}
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")

# two stateful vector models with the same input and output sizes: "old" and "new" weights
VEC = sorted(n for n, c in CASES.items() if c["input"]["kind"] == "vectors" and c["stateful"])
PAIR = next((a, b) for a in VEC for b in VEC if a < b
            and CASES[a]["input"]["dim"] == CASES[b]["input"]["dim"])
DIM = CASES[PAIR[0]]["input"]["dim"]
RNG = random.Random(3)


def vec_steps(n):
    return [[RNG.uniform(-1, 1) for _ in range(DIM)] for _ in range(n)]


def install(src, name):
    """Put SRC into the models folder as NAME.rnnd the way deployments do: copy, rename."""
    tmp = os.path.join(MODELS, ".%s.tmp" % name)
    shutil.copyfile(src, tmp)
    os.rename(tmp, os.path.join(MODELS, name + ".rnnd"))


def sighup(d, count_before):
    """SIGHUP and wait for the reload's log line (the COUNT_BEFORE+1-th)."""
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sum("event=reloaded" in line for line in d.log) > count_before:
            return True
        time.sleep(0.05)
    return False


class Load:
    """Client threads sending requests that must all succeed, until stopped."""

    def __init__(self, d):
        self.d = d
        self.stop = False
        self.failures = []
        self.count = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(3)]
        for t in self.threads:
            t.start()

    def run(self, i):
        rng = random.Random(i)
        sid = None
        while not self.stop:
            try:
                if i == 0:
                    st, _, b = self.d.request("POST", "/v1/models/vec/infer",
                                              {"inputs": [vec_steps(rng.randint(1, 5))]})
                elif i == 1:
                    if sid is None:
                        st, _, b = self.d.request("POST", "/v1/sessions", {"model": "vec"})
                        sid = b.get("id") if st == 201 else None
                        st = 200 if st == 201 else st
                    else:
                        st, _, b = self.d.request("POST", "/v1/sessions/%s/step" % sid,
                                                  {"inputs": vec_steps(2)})
                else:
                    st, _, b = self.d.request("POST", "/v1/models/charlm/generate",
                                              {"prompt": "a", "max_tokens": 5})
            except Exception as e:   # a broken connection is a failure too
                st, b = None, repr(e)
            with self.lock:
                self.count += 1
                if st != 200:
                    self.failures.append((i, st, b))

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join(60)
        return self.count, self.failures


def session_outputs(d, model, steps):
    sid = d.request("POST", "/v1/sessions", {"model": model})[2]["id"]
    return [d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": s})[2]["outputs"]
            for s in steps]


class Reload(Case):
    """A folder of models reloaded three times on SIGHUP under load."""

    def test_reload_under_load(self):
        shutil.rmtree(MODELS, ignore_errors=True)
        os.makedirs(MODELS)
        old_path, new_path = (golden_model(n, WORK) for n in PAIR)
        install(old_path, "vec")
        install(CHARLM, "charlm")
        before_steps = [vec_steps(3) for _ in range(2)]
        after_steps = [vec_steps(4) for _ in range(3)]

        with Daemon({}, "--models", MODELS) as d, \
                Daemon({"old": old_path, "new": new_path}) as ref:
            load = Load(d)
            time.sleep(0.3)
            # a session opened on the old version, fed some steps
            sid_old = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            for s in before_steps:
                d.request("POST", "/v1/sessions/%s/step" % sid_old, {"inputs": s})
            v1 = d.request("GET", "/v1/models/vec")[2]

            # 1. a changed file becomes version 2
            install(new_path, "vec")
            self.check(sighup(d, 0), "reload 1 logged event=reloaded")
            v2 = d.request("GET", "/v1/models/vec")[2]
            self.eq((v1["version"], v2["version"]), (1, 2), "the replaced file is version 2")
            self.check(v1["digest"] != v2["digest"], "with the new file's digest")
            self.check(any("event=model_loaded" in l and "model=vec" in l and "version=2" in l
                        for l in d.log), "the new version is logged")
            got_old = [d.request("POST", "/v1/sessions/%s/step" % sid_old, {"inputs": s})[2]
                       ["outputs"] for s in after_steps]
            want_old = session_outputs(ref, "old", before_steps + after_steps)[len(before_steps):]
            self.eq(got_old, want_old, "a session opened before the reload keeps the old weights")
            self.eq(d.request("GET", "/v1/sessions/%s" % sid_old)[2]["model_version"], 1,
                    "and says so (model_version 1)")
            got_new = session_outputs(d, "vec", after_steps)
            self.eq(got_new, session_outputs(ref, "new", after_steps),
                    "a session opened after the reload gets the new weights")
            inf = d.request("POST", "/v1/models/vec/infer", {"inputs": [after_steps[0]]})[2]
            inf_ref = ref.request("POST", "/v1/models/new/infer", {"inputs": [after_steps[0]]})[2]
            self.eq(inf["outputs"], inf_ref["outputs"], "infer uses the new version")

            # 2. a corrupt replacement: reported, the old version stays
            bad = os.path.join(WORK, "bad.rnnd")
            with open(new_path, "rb") as f:
                data = f.read()
            with open(bad, "wb") as f:
                f.write(data[:len(data) // 2])
            install(bad, "vec")
            self.check(sighup(d, 1), "reload 2 logged event=reloaded")
            self.check(any("event=model_not_loaded" in l and "vec.rnnd" in l for l in d.log),
                       "the corrupt file is logged with its name")
            v = d.request("GET", "/v1/models/vec")[2]
            self.eq((v["version"], v["digest"]), (2, v2["digest"]), "the previous version stays")
            self.eq(session_outputs(d, "vec", after_steps), got_new, "and serves as before")

            # 3. add a model, remove one
            install(old_path, "extra")
            os.unlink(os.path.join(MODELS, "vec.rnnd"))
            sid_v2 = d.request("POST", "/v1/sessions", {"model": "vec"})[2]["id"]
            load_count, load_failures = load.finish()   # the load uses "vec": stop it first
            self.check(sighup(d, 2), "reload 3 logged event=reloaded")
            names = sorted(m["name"] for m in d.request("GET", "/v1/models")[2]["models"])
            self.eq(names, ["charlm", "extra"], "an added file appears, a removed one disappears")
            self.eq(d.request("POST", "/v1/sessions", {"model": "vec"})[0], 404,
                    "a removed model takes no new sessions")
            for sid in (sid_old, sid_v2):
                st, _, b = d.request("POST", "/v1/sessions/%s/step" % sid,
                                     {"inputs": vec_steps(1)})
                self.eq(st, 200, "an open session of a removed model keeps working")
            self.eq(d.request("DELETE", "/v1/sessions/%s" % sid_old)[0], 204, "and can be closed")
            self.eq(session_outputs(d, "extra", after_steps),
                    session_outputs(ref, "old", after_steps), "the added model serves its weights")

            print("client requests during the reloads: %d, failed: %d" % (load_count,
                                                                           len(load_failures)))
            self.check(load_count > 50,
                       "the clients kept sending during the reloads (%d)" % load_count)
            self.eq(load_failures[:5], [], "no client request failed because of a reload")
            rc, _ = d.stop()
            self.eq(rc, 0, "exit status 0")
            ref.stop()


if __name__ == "__main__":
    unittest.main()
