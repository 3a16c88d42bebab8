"""POST /v1/sessions/{id}/step through the daemon: the direct body scanner (src/step_scan.c)
against the jansson path, end to end.

A body of the common shape ({"inputs", "outputs", "if_steps"}) takes the scanner; the same
body with `"logits": true` added (the default, so it asks for the same thing) takes the
jansson path. Each pair goes to two sessions forked from one state, and the two replies must
be byte for byte the same: same status, same outputs text, same error message. Bodies use
many number spellings (repr, %.17g, exponents, integers, -0, many digits, whitespace), and
errors the handler finds only once it knows the model (wrong width, token id out of range,
too many steps, if_steps conflict) must read the same on both paths. Each check is a unittest
case; a failing case fails the run.
"""
import random
import unittest

from daemon_util import Case, Daemon, contract_check, golden_cases, golden_model, tmpdir

WORK = tmpdir("step_scan_http")
rng = random.Random(77)
MAX_STEPS = 6


def spell(x):
    """One of many JSON spellings of the float X."""
    k = rng.randrange(8)
    if k == 0:
        return repr(x)
    if k == 1:
        return "%.17g" % x
    if k == 2:
        return ("%%.%de" % rng.randrange(12)) % x
    if k == 3:
        return ("%.9E" % x).replace("E+0", "E+").replace("E-0", "E-")
    if k == 4:
        return str(int(x * 100))
    if k == 5:
        return rng.choice(["0", "-0", "-0.0", "0e3", "1e-50"])
    if k == 6:
        return "%.25f" % x
    return "%.6f" % x


def ws():
    return rng.choice(["", "", " ", "\n", "\t", " \r\n "])


def body(inputs_text, extra):
    parts = ['"inputs":' + ws() + inputs_text] + extra
    rng.shuffle(parts)
    return ws() + "{" + ws() + ("," + ws()).join(parts) + ws() + "}" + ws()


def post(d, sid, text):
    c = d.conn()
    try:
        c.request("POST", "/v1/sessions/%s/step" % sid, body=text.encode(),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        payload = r.read()
        contract_check("POST", "/v1/sessions/%s/step" % sid, r.status,
                       {k.lower(): v for k, v in r.getheaders()}, payload)
        return r.status, payload
    finally:
        c.close()


def vec_inputs(steps, width):
    rows = ["[" + ",".join(ws() + spell(rng.uniform(-3, 3)) + ws() for _ in range(width)) + "]"
            for _ in range(steps)]
    return "[" + ("," + ws()).join(rows) + "]"


class StepScan(Case):
    def req(self, d, method, path, obj=None):
        st, _, b = d.request(method, path, obj)
        self.check(st in (200, 201), "%s %s: %d %r" % (method, path, st, b))
        return b

    def pair(self, d, model, inputs_text, extra, what):
        """Step two forks of a fresh, warmed-up session: the scanner's body and the jansson
        one; the replies must be identical."""
        sid = self.req(d, "POST", "/v1/sessions", {"model": model})["id"]
        fork = self.req(d, "POST", "/v1/sessions/%s/fork" % sid)["id"]
        fast = body(inputs_text, extra)
        slow = body(inputs_text, extra + ['"logits"' + ws() + ":" + ws() + "true"])
        a, b = post(d, sid, fast), post(d, fork, slow)
        self.check(a == b, "%s: scanner path %r, jansson path %r (body %s)" % (what, a, b, fast))
        for s in (sid, fork):
            d.request("DELETE", "/v1/sessions/" + s)
        return a

    def test_fast_path_equals_json(self):
        cases = {name: case for name, case, _ in golden_cases()}
        vec_name = next(n for n, c in sorted(cases.items()) if c["input"]["kind"] == "vectors"
                        and c.get("stateful", True) and "bidir" not in n)
        tok_name = next(n for n, c in sorted(cases.items()) if c["input"]["kind"] == "tokens")
        dim, vocab = cases[vec_name]["input"]["dim"], cases[tok_name]["input"]["vocab"]
        models = {"vec": golden_model(vec_name, WORK), "tok": golden_model(tok_name, WORK)}
        print("models: vec = %s (dim %d), tok = %s (vocab %d)" % (vec_name, dim, tok_name, vocab))
        counts = {}
        with Daemon(models, "--max-steps-per-request", MAX_STEPS) as d:
            for i in range(40):
                opts = []
                if rng.random() < 0.5:
                    opts.append('"outputs":' + ws() + rng.choice(['"all"', '"last"']))
                if rng.random() < 0.3:
                    opts.append('"if_steps":' + ws() + rng.choice(["0", "-0"]))
                st, _ = self.pair(d, "vec", vec_inputs(rng.randint(1, MAX_STEPS), dim), opts,
                             "vec %d" % i)
                self.check(st == 200, "vec %d: status %d" % (i, st))
                ids = [str(rng.randrange(vocab)) for _ in range(rng.randint(1, MAX_STEPS))]
                st, _ = self.pair(d, "tok", "[" + ",".join(ids) + "]", opts, "tok %d" % i)
                self.check(st == 200, "tok %d: status %d" % (i, st))
                counts["ok"] = counts.get("ok", 0) + 2
            # the scanner takes these; only the model says they are wrong
            errors = [
                ("vec", vec_inputs(2, dim + 1), [], 400, "width + 1"),
                ("vec", vec_inputs(1, max(dim - 1, 1)) if dim > 1 else "[1,2]", [], 400,
                 "width - 1"),
                ("vec", "[1, 2]", [], 400, "ids for a vector model"),
                ("tok", vec_inputs(1, 2), [], 400, "vectors for a token model"),
                ("tok", "[%d]" % vocab, [], 400, "id = vocab"),
                ("tok", "[-1]", [], 400, "id -1"),
                ("vec", vec_inputs(MAX_STEPS + 1, dim), [], 413, "too many steps"),
                ("tok", "[1]", ['"if_steps": 5'], 409, "if_steps conflict"),
            ]
            for model, text, extra, want, what in errors:
                st, reply = self.pair(d, model, text, extra, what)
                self.check(st == want, "%s: status %d, expected %d: %r" % (what, st, want, reply))
                counts["errors"] = counts.get("errors", 0) + 1
            rc, _ = d.stop()
            self.check(rc == 0, "daemon exit status %s" % rc)
        print("compared %d successful step pairs and %d error pairs byte for byte"
              % (counts.get("ok", 0), counts.get("errors", 0)))


if __name__ == "__main__":
    unittest.main()
