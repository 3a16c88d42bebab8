"""`rnnd serve` batches waiting whole-sequence infer requests of a model into one call to the
core: 16 client threads send infer requests of different sizes and options at once; every
response must be byte for byte the response the same request gets when sent alone, and
/metrics must show at least one infer call that ran more than one request.

One compute worker, so requests that arrive while it computes wait and are taken together.
Each check is a unittest case; a failing case fails the run.
"""
import json
import random
import threading
import unittest

from daemon_util import Case, Daemon, contract_check, golden_cases, golden_model, tmpdir

WORK = tmpdir("http_infer_batch")
CASES = {name: case for name, case, _ in golden_cases()}
MODELS = {n: golden_model(n, WORK) for n in ("lstm_vectors", "gru2_tokens_head")}
N_THREADS = 16
PER_THREAD = 4


def random_request(rng, case):
    """An infer body with 1-3 sequences of 20-300 steps, random options."""
    inp = case["input"]
    seqs = []
    for _ in range(rng.randint(1, 3)):
        n = rng.randint(20, 300)
        if inp["kind"] == "tokens":
            seqs.append([rng.randrange(inp["vocab"]) for _ in range(n)])
        else:
            seqs.append([[rng.uniform(-2, 2) for _ in range(inp["dim"])] for _ in range(n)])
    body = {"inputs": seqs}
    if rng.random() < 0.5:
        body["outputs"] = "last"
    if rng.random() < 0.5:
        body["return_state"] = True
    return json.dumps(body).encode()


def post_raw(d, model, data):
    """(status, raw response bytes): compared as bytes, so every number must match exactly."""
    c = d.conn()
    try:
        c.request("POST", "/v1/models/%s/infer" % model, body=data,
                  headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        payload = resp.read()
        contract_check("POST", "/v1/models/%s/infer" % model, resp.status,
                       {k.lower(): v for k, v in resp.getheaders()}, payload)
        return resp.status, payload
    finally:
        c.close()


def infer_batches(metrics_text, model):
    """(count, sum, count in le="1") of rnnd_infer_batch_requests for MODEL."""
    count = total = ones = None
    for line in metrics_text.splitlines():
        if line.startswith("#") or 'model="%s"' % model not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("rnnd_infer_batch_requests_count"):
            count = int(value)
        elif name.startswith("rnnd_infer_batch_requests_sum"):
            total = int(value)
        elif name.startswith("rnnd_infer_batch_requests_bucket") and 'le="1"' in name:
            ones = int(value)
    return count, total, ones


class InferBatch(Case):
    def test_batches_equal_alone(self):
        rng = random.Random(7)
        jobs = []   # (model, body)
        for k in range(N_THREADS * PER_THREAD):
            model = sorted(MODELS)[k % len(MODELS)]
            jobs.append((model, random_request(rng, CASES[model])))

        with Daemon(MODELS, "--workers", 1) as d:
            # alone: one at a time, so every call holds one request
            alone = [post_raw(d, m, body) for m, body in jobs]
            for i, (st, raw) in enumerate(alone):
                self.eq(st, 200, "request %d alone: status" % i)
            for m in MODELS:
                count, total, ones = infer_batches(d.metrics(), m)
                self.check(count is not None and count == total == ones,
                           "%s: sequential requests ran one per call (count %r, sum %r, le=1 %r)"
                           % (m, count, total, ones))

            # together: 16 threads released at once
            got = [None] * len(jobs)
            start = threading.Barrier(N_THREADS)

            def client(t):
                start.wait(30)
                for i in range(t, len(jobs), N_THREADS):
                    got[i] = post_raw(d, jobs[i][0], jobs[i][1])

            threads = [threading.Thread(target=client, args=(t,)) for t in range(N_THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            same = sum(1 for a, b in zip(alone, got) if a == b)
            self.eq(same, len(jobs), "concurrent responses byte-identical to alone")
            for i, (a, b) in enumerate(zip(alone, got)):
                if a != b:
                    print("  request %d differs: %r vs %r" % (i, a[1][:120], b and b[1][:120]))
                    break

            multi = 0
            for m in MODELS:
                count, total, ones = infer_batches(d.metrics(), m)
                self.eq(total, 2 * len(jobs) // len(MODELS),
                        m + ": requests counted in the histogram")
                multi += count - ones
                print("%s: %d infer calls for %d requests, %d with more than one"
                      % (m, count, total, count - ones))
            self.check(multi >= 1, "at least one infer call ran more than one request")
            rc, _ = d.stop()
            self.eq(rc, 0, "daemon exit status")


if __name__ == "__main__":
    unittest.main()
