"""Sessions through `rnnd serve` under load, over real sockets.

1. Every golden case through HTTP: `infer` matches the case's expectation for every case; for
   stateful cases a session fed one step per request matches it too, a session fed in random
   chunks (1..n steps per request) gives bitwise the same outputs as one step per request, and
   the exported state's h equals the case's final_h.
2. 64 sessions stepped concurrently from 64 client threads (random chunks) give outputs
   bitwise equal to the same sessions replayed one at a time afterwards, and the batch-size
   histogram of GET /metrics shows batches of more than one session.

Expected values come from the golden cases or from replays, never from constants. Each check
is a unittest case; a failing case fails the run.
"""
import random
import threading
import unittest

from daemon_util import Case, batch_histogram, close, golden_cases, golden_model, tmpdir

WORK = tmpdir("http_sessions")
CASES = golden_cases()


def step(d, conn, sid, inputs):
    st, _, body = d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": inputs},
                            conn=conn)
    if st != 200:
        raise AssertionError("step %s: %d %r" % (sid, st, body))
    return body


def new_session(d, model, conn=None):
    st, _, body = d.request("POST", "/v1/sessions", {"model": model}, conn=conn)
    if st != 201:
        raise AssertionError("create on %s: %d %r" % (model, st, body))
    return body["id"]


class Golden(Case):
    """A daemon serving every golden case."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.serve({name: golden_model(name, WORK) for name, _, _ in CASES})

    def test_golden(self):
        d = self.d
        rng = random.Random(20240611)
        conn = d.conn()
        for name, case, _ in CASES:
            tol = (case["atol"], case["rtol"])
            st, _, body = d.request("POST", "/v1/models/%s/infer" % name,
                                    {"inputs": case["sequences"]}, conn=conn)
            self.check(st == 200 and close(body["outputs"], case["expected"], *tol),
                       "%s: infer over HTTP matches the case" % name)
            if not case["stateful"]:
                continue
            for i, seq in enumerate(case["sequences"]):
                one = new_session(d, name, conn)
                outs = []
                for x in seq:
                    outs += step(d, conn, one, [x])["outputs"]
                self.check(close(outs, case["expected"][i], *tol),
                           "%s[%d]: one step per request matches the case" % (name, i))
                for trial in range(2):
                    ch = new_session(d, name, conn)
                    got, pos, sizes = [], 0, []
                    while pos < len(seq):
                        n = rng.randint(1, len(seq) - pos)
                        sizes.append(n)
                        got += step(d, conn, ch, seq[pos:pos + n])["outputs"]
                        pos += n
                    self.check(got == outs,
                               "%s[%d]: chunks %s bitwise equal to one step per request"
                               % (name, i, sizes))
                st, _, exp = d.request("GET", "/v1/sessions/%s/state" % one, conn=conn)
                hs = [h for layer in exp["state"]["layers"] for h in layer["h"]]
                self.check(close(hs, case["final_h"][i], *tol),
                           "%s[%d]: exported state's h is the case's final_h" % (name, i))
        conn.close()


class Concurrency(Case):
    """64 sessions of the token model stepped from many threads at once."""

    @classmethod
    def setUpClass(cls):
        tok = "gru2_tokens_head"
        cls.d = cls.serve({tok: golden_model(tok, WORK)}, "--http-threads", 8)

    def concurrent_replays(self, d, model, vocab, rng):
        n_sessions, length = 64, 40
        seqs = [[rng.randrange(vocab) for _ in range(length)] for _ in range(n_sessions)]
        chunkings = []
        for _ in range(n_sessions):
            sizes, left = [], length
            while left:
                sizes.append(min(left, rng.randint(1, 8)))
                left -= sizes[-1]
            chunkings.append(sizes)
        ids = [new_session(d, model) for _ in range(n_sessions)]
        results = [None] * n_sessions
        errors = []
        start = threading.Barrier(n_sessions)

        def client(k):
            try:
                conn = d.conn()
                start.wait(30)
                outs, pos = [], 0
                for n in chunkings[k]:
                    body = step(d, conn, ids[k], seqs[k][pos:pos + n])
                    outs += body["outputs"]
                    pos += n
                    if body["steps"] != pos:
                        raise AssertionError("steps %d, want %d" % (body["steps"], pos))
                conn.close()
                results[k] = outs
            except Exception as e:      # reported below, in the main thread
                errors.append("client %d: %r" % (k, e))

        before = batch_histogram(d.metrics(), model)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(n_sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.check(not errors and not any(t.is_alive() for t in threads),
                   "64 concurrent clients: %s" % (errors[:3] or "ok"))
        after = batch_histogram(d.metrics(), model)
        batches = after["count"] - before["count"]
        multi = batches - (after["1"] - before["1"])
        steps = after["sum"] - before["sum"]
        print("concurrent phase: %d steps in %d batches, %d of them with more than one session"
              % (steps, batches, multi))
        self.eq(steps, n_sessions * length, "every step counted once in the batch histogram")

        # replay each session alone, one at a time (all its steps in one request)
        conn = d.conn()
        for k in range(n_sessions):
            ref = new_session(d, model, conn)
            want = step(d, conn, ref, seqs[k])["outputs"]
            if results[k] != want:
                self.check(False, "session %d: concurrent outputs differ from the replay" % k)
                break
        else:
            self.check(True, "64 concurrent sessions bitwise equal to their one-at-a-time replays")
        conn.close()
        return multi

    def test_batches(self):
        d = self.d
        tok = next((n, c) for n, c, _ in CASES if n == "gru2_tokens_head")
        rng = random.Random(20240612)
        multi = 0
        for attempt in range(3):    # batching depends on timing: a few bounded tries
            multi += self.concurrent_replays(d, tok[0], tok[1]["input"]["vocab"], rng)
            if multi:
                break
        self.check(multi > 0, "the batcher ran batches of more than one session")


if __name__ == "__main__":
    unittest.main()
