"""docs/openapi.yaml, the machine-readable contract of /v1 (issue 18 item 5), against itself
and against the daemon's sources.

- Shape: an OpenAPI 3.1 document: openapi 3.1.x, info, paths of operations whose responses
  are statuses with a description; every $ref resolves; every schema (components, media
  types, parameters, headers, stream events) is valid Draft 2020-12; every {param} of a
  template has its required path parameter.
- Routes: the routes of src/route_list.h outside /v2 are the document's paths, and nothing
  else is (a route's `*` is a template's {param}), each with the methods whose handler is
  not NULL.
- docs/api.md: its table of endpoints (section 4) has the same operations, with the same
  success status.
- Errors: the ErrorCode enum is RNND_ERRCODES's names (include/rnnd/errcode.h), no more, no
  fewer; each per-status error schema (Error400, ...) allows exactly the codes of its
  status in that list.
- The check can fail: responses with a wrong field, a wrong type, an unknown code, a status
  the operation lacks, a wrong Content-Type, a missing header (Cache-Control on any reply,
  Location, Retry-After) or a bad stream event are violations, and the
  response hook of tests/daemon_util.py turns one into a failure of the test that got it.

Needs no daemon.
"""
import json
import os
import re
import unittest

from jsonschema import Draft202012Validator

from daemon_util import RUNNING, Case, contract_check
from openapi_util import Contract

SRCDIR = os.environ["RNND_SRCDIR"]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
JSON = {"content-type": "application/json", "cache-control": "no-store"}


def read(rel):
    with open(os.path.join(SRCDIR, rel), encoding="utf-8") as f:
        return f.read()


def route_table():
    """{pattern: set of methods} of src/route_list.h's X(...) lines (NULL: no method)."""
    text = read("src/route_list.h").replace("\\\n", " ")
    out = {}
    for m in re.finditer(r'X\(\s*"([^"]+)"\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,',
                         text):
        out[m.group(1)] = {meth for meth, h in zip(("get", "post", "put", "delete"),
                                                   m.groups()[1:]) if h != "NULL"}
    return out


def error_codes():
    """[(name, HTTP status)] of RNND_ERRCODES, in order."""
    return [(n, int(s)) for n, s in re.findall(r'X\(\s*\w+\s*,\s*"(\w+)"\s*,\s*(\d+)\s*,',
                                               read("include/rnnd/errcode.h"))]


def walk(node, where="#"):
    """(node, where) of every dict and list in NODE, depth first."""
    yield node, where
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, "%s/%s" % (where, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, "%s/%d" % (where, i))


def as_pattern(template):
    return re.sub(r"\{[^/}]+\}", "*", template)


class Document(Case):
    @classmethod
    def setUpClass(cls):
        cls.c = Contract()
        cls.doc = cls.c.doc

    def operations(self):
        for path, item in self.doc["paths"].items():
            for meth in METHODS:
                if meth in item:
                    yield path, meth, item[meth]

    def test_shape(self):
        self.check(str(self.doc.get("openapi", "")).startswith("3.1."),
                   "openapi: %r, want 3.1.x" % self.doc.get("openapi"))
        info = self.doc.get("info", {})
        self.check(bool(info.get("title")) and bool(info.get("version")), "info: title, version")
        self.check(len(self.doc.get("paths", {})) > 0, "paths")
        n = 0
        for path, item in self.doc["paths"].items():
            self.check(path.startswith("/"), "%s: a path starts with /" % path)
            for key in item:
                self.check(key in METHODS or key in ("parameters", "summary", "description"),
                           "%s: %r is no field of a path item" % (path, key))
            params = [self.c.deref(p) for p in item.get("parameters", [])]
            for meth in METHODS:
                if meth not in item:
                    continue
                op = item[meth]
                n += 1
                allp = params + [self.c.deref(p) for p in op.get("parameters", [])]
                for name in re.findall(r"\{([^/}]+)\}", path):
                    self.check(any(p.get("in") == "path" and p.get("name") == name
                                   and p.get("required") is True for p in allp),
                               "%s %s: {%s} has a required path parameter" % (meth, path, name))
                self.check(bool(op.get("operationId")), "%s %s: an operationId" % (meth, path))
                responses = op.get("responses", {})
                self.check(len(responses) > 0, "%s %s: responses" % (meth, path))
                for status, resp in responses.items():
                    self.check(re.fullmatch(r"[1-5][0-9][0-9]", status) is not None,
                               "%s %s: status %r" % (meth, path, status))
                    resp = self.c.deref(resp)
                    self.check(bool(resp.get("description")),
                               "%s %s %s: a description" % (meth, path, status))
                    for media, mt in resp.get("content", {}).items():
                        self.check("schema" in mt, "%s %s %s %s: a schema"
                                   % (meth, path, status, media))
        ids = [op.get("operationId") for _, _, op in self.operations()]
        self.eq(len(ids), len(set(ids)), "operationIds are unique")
        print("%d paths, %d operations" % (len(self.doc["paths"]), n))

    def test_refs_resolve(self):
        n = 0
        for node, where in walk(self.doc):
            if isinstance(node, dict) and "$ref" in node:
                n += 1
                try:
                    self.c.pointer(node["$ref"])
                except (KeyError, IndexError, TypeError, ValueError) as e:
                    self.fail_check("%s: $ref %r resolves to nothing (%r)"
                                    % (where, node["$ref"], e))
        self.check(n > 0, "the document has references")
        print("%d references resolve" % n)

    def test_schemas_compile(self):
        schemas = [("#/components/schemas/" + k, v)
                   for k, v in self.doc["components"]["schemas"].items()]
        for node, where in walk(self.doc["paths"]):
            if isinstance(node, dict) and isinstance(node.get("schema"), dict):
                schemas.append((where + "/schema", node["schema"]))
            if isinstance(node, dict) and isinstance(node.get("x-rnnd-events"), dict):
                schemas += [(where + "/x-rnnd-events/" + k, v)
                            for k, v in node["x-rnnd-events"].items()]
        for k, h in self.doc["components"].get("headers", {}).items():
            schemas.append(("#/components/headers/%s/schema" % k, h["schema"]))
        for k, p in self.doc["components"].get("parameters", {}).items():
            schemas.append(("#/components/parameters/%s/schema" % k, p["schema"]))
        for where, schema in schemas:
            errs = list(Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(
                schema))
            self.check(not errs, "%s: not a Draft 2020-12 schema: %s"
                       % (where, "; ".join(e.message for e in errs[:3])))
            # and it can be used: every $ref inside resolves while validating
            try:
                self.c.validator(schema).is_valid({})
                self.c.validator(schema).is_valid([])
            except Exception as e:  # noqa: BLE001 -- any failure to evaluate is the finding
                self.fail_check("%s: does not evaluate: %r" % (where, e))
        print("%d schemas compile" % len(schemas))

    def test_routes_are_the_route_table(self):
        table = {p: m for p, m in route_table().items()
                 if not (p == "/v2" or p.startswith("/v2/"))}
        self.check(len(table) >= 15, "route_list.h parsed: %d routes outside /v2" % len(table))
        doc = {as_pattern(p): {m for m in METHODS if m in item}
               for p, item in self.doc["paths"].items()}
        for p in sorted(set(table) - set(doc)):
            self.fail_check("route %s (src/route_list.h) is not in docs/openapi.yaml" % p)
        for p in sorted(set(doc) - set(table)):
            self.fail_check("docs/openapi.yaml has %s, which src/route_list.h lacks" % p)
        for p in sorted(set(table) & set(doc)):
            self.eq(sorted(doc[p]), sorted(table[p]), "%s: methods" % p)
        print("%d routes, the same in both" % len(set(table) & set(doc)))

    def test_api_md_table(self):
        """docs/api.md section 4's table of endpoints lists the document's operations, with
        the same success status."""
        rows = re.findall(r"^\| (GET|POST|PUT|DELETE) \| `([^`]+)` \| [^\n]*\| ([0-9][^|]*) \|$",
                          read("docs/api.md"), re.M)
        self.check(len(rows) >= 15, "docs/api.md's table parsed: %d rows" % len(rows))
        table = {(m.lower(), p): int(st.split()[0]) for m, p, st in rows}
        ops = {(meth, path): min([int(s) for s in op["responses"] if s[0] in "12"] or [0])
               for path, meth, op in self.operations()}
        for k in sorted(set(ops) - set(table)):
            self.fail_check("%s %s is not in docs/api.md's table" % (k[0].upper(), k[1]))
        for k in sorted(set(table) - set(ops)):
            self.fail_check("docs/api.md's table has %s %s, docs/openapi.yaml does not"
                            % (k[0].upper(), k[1]))
        for k in sorted(set(table) & set(ops)):
            self.eq(ops[k], table[k], "%s %s: the success status" % (k[0].upper(), k[1]))

    def test_error_codes(self):
        codes = error_codes()
        self.check(len(codes) >= 18, "RNND_ERRCODES parsed: %d codes" % len(codes))
        enum = self.doc["components"]["schemas"]["ErrorCode"]["enum"]
        self.eq(len(enum), len(set(enum)), "ErrorCode: no code twice")
        self.eq(sorted(enum), sorted(n for n, _ in codes), "ErrorCode is RNND_ERRCODES")
        schemas = self.doc["components"]["schemas"]
        seen = set()
        for name, schema in schemas.items():
            m = re.fullmatch(r"Error(\d{3})", name)
            if not m:
                continue
            code = schema["allOf"][1]["properties"]["error"]["properties"]["code"]
            allowed = set(code["enum"]) if "enum" in code else {code["const"]}
            want = {n for n, s in codes if s == int(m.group(1))}
            self.eq(sorted(allowed), sorted(want), "%s: the codes of status %s" % (name,
                                                                                  m.group(1)))
            seen.add(int(m.group(1)))
        self.eq(sorted(seen), sorted({s for _, s in codes}),
                "an error schema for every status of RNND_ERRCODES")


class CanFail(Case):
    """The checker and the hook catch what breaks the contract."""

    @classmethod
    def setUpClass(cls):
        cls.c = Contract()

    def bad(self, method, path, status, headers, body, what):
        got = self.c.violations(method, path, status, headers, body)
        self.check(len(got) > 0, "%s: caught" % what)
        return got

    def good(self, method, path, status, headers, body, what):
        got = self.c.violations(method, path, status, headers, body)
        self.eq(got, [], "%s: keeps the contract" % what)

    def test_violations(self):
        sid = "c76ad6ab9335f30a6eb95002c34e7bc3"
        step = "/v1/sessions/%s/step" % sid
        ok = {"outputs": [[0.5, -1.0]], "steps": 1}
        self.good("POST", step, 200, JSON, json.dumps(ok).encode(), "a step reply")
        self.good("GET", "/healthz", 200, JSON, b'{"status":"ok"}', "healthz")
        self.good("GET", "/v1/models?x=1", 200, JSON, b'{"models":[]}', "a query string")
        self.bad("POST", step, 200, JSON, json.dumps(dict(ok, extra=1)).encode(),
                 "an unknown field")
        self.bad("POST", step, 200, JSON, b'{"outputs":[[0.5,-1.0]]}', "a missing field")
        self.bad("POST", step, 200, JSON, b'{"outputs":"x","steps":1}', "a wrong type")
        self.bad("POST", step, 200, JSON, b'{"outputs":[[0.5]],"steps":-1}', "out of range")
        self.bad("POST", step, 400, JSON, b'{"error":{"code":"teapot","message":"m"}}',
                 "an unknown code")
        self.bad("POST", step, 400, JSON, b'{"error":{"code":"gone","message":"m"}}',
                 "a code of another status")
        self.bad("POST", step, 400, JSON, b'{"error":{"code":"invalid_request"}}',
                 "an error without message")
        self.bad("POST", step, 418, JSON, b'{"error":{"code":"internal","message":"m"}}',
                 "a status the operation lacks")
        self.bad("POST", step, 200, dict(JSON, **{"content-type": "text/plain"}),
                 json.dumps(ok).encode(), "a wrong Content-Type")
        self.bad("POST", step, 200, {"content-type": "application/json"},
                 json.dumps(ok).encode(), "no Cache-Control")
        self.bad("POST", step, 200, dict(JSON, **{"cache-control": "max-age=60"}),
                 json.dumps(ok).encode(), "a Cache-Control other than no-store")
        self.bad("POST", "/v1/sessions", 201, JSON, json.dumps(
            {"id": sid, "model": "m", "expires_in": 1, "ttl_s": 1, "steps": 0}).encode(),
            "a 201 without Location")
        self.bad("DELETE", "/v1/sessions/" + sid, 204, {"cache-control": "no-store"}, b"{}",
                 "a body on a 204")
        self.bad("GET", "/v1/models", 503, JSON,
                 b'{"error":{"code":"unavailable","message":"m"}}', "a 503 without Retry-After")
        gen = "/v1/sessions/%s/generate" % sid
        sse = dict(JSON, **{"content-type": "text/event-stream"})
        self.good("POST", gen, 200, sse, b'data: {"token":1,"text":"a","index":0,"step":3}\n\n'
                  b'data: [DONE]\n\n', "a stream")
        self.bad("POST", gen, 200, sse, b'data: {"token":1,"text":"a","index":0}\n\n'
                 b'data: [DONE]\n\n', "a session stream's token event without step")
        self.bad("POST", gen, 200, sse, b'data: {"token":1,"text":"a","index":0,"step":3}\n\n',
                 "a stream without [DONE]")

    def test_hook_fails_the_test(self):
        """A violation received through daemon_util's hook fails the test that received it."""
        class Probe(Case):
            def runTest(self):
                contract_check("GET", "/healthz", 200, JSON, b'{"status":"ok","extra":1}')

        result = unittest.TestResult()
        Probe().run(result)
        RUNNING.test = self     # Probe's own cleanup cleared it
        self.check(len(result.failures) + len(result.errors) > 0,
                   "the hook failed the test (failures %r)" % (result.failures,))


if __name__ == "__main__":
    unittest.main(verbosity=2)
