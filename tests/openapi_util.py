"""docs/openapi.yaml as a checker of responses: what daemon_util's response hook asks about
every reply a test receives, and what tests/test_openapi.py checks the document with.

Not a test itself. `violations(method, path, status, headers, body)` looks the path up among
the document's path templates, takes the operation of the method (HEAD: GET's), finds the
status among its responses (an unknown path, or a method the route has no operation for:
among x-rnnd-refusals, what the HTTP layer answers before any handler), and checks the
response's headers, its Content-Type and its body (JSON against the schema, Draft 2020-12;
an event stream event by event against x-rnnd-events). It returns the violations as one-line
strings, empty when the response keeps the contract. /v2 is outside the document.
"""
import json
import os
import re

import yaml
from jsonschema import Draft202012Validator, RefResolver

SPEC = os.path.join(os.environ.get("RNND_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "docs", "openapi.yaml")
# how much of one violation's text is kept: a schema error may quote a whole output array
MAX_TEXT = 300
PARAM = re.compile(r"\{[^/}]+\}")


def short(text):
    text = str(text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


class Contract:
    """The document at PATH, its path templates as patterns, and a validator per schema."""

    def __init__(self, path=SPEC):
        with open(path, encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)
        self.validators = {}
        # a template's {param} is one path segment, as a route's * (src/route_list.h)
        self.templates = [(re.compile("^" + PARAM.sub("[^/]+", p) + "$"), p)
                          for p in self.doc.get("paths", {})]

    def pointer(self, ref):
        """The node a local $ref ("#/a/b") names; KeyError/ValueError when it names none."""
        if not ref.startswith("#/"):
            raise ValueError("not a local reference: %r" % ref)
        node = self.doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def deref(self, node):
        """NODE, or what its $ref chain ends at (responses, headers, parameters)."""
        for _ in range(32):
            if not (isinstance(node, dict) and "$ref" in node):
                return node
            node = self.pointer(node["$ref"])
        raise ValueError("a $ref loop")

    def validator(self, schema):
        v = self.validators.get(id(schema))
        if v is None:
            # the schema is kept beside its validator, so that its id stays unique
            v = (Draft202012Validator(schema, resolver=RefResolver("", self.doc)), schema)
            self.validators[id(schema)] = v
        return v[0]

    def schema_errors(self, schema, instance, limit=3):
        """Up to LIMIT one-line descriptions of how INSTANCE breaks SCHEMA."""
        v = self.validator(schema)
        if v.is_valid(instance):
            return []
        errs = sorted(v.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
        return ["%s: %s" % ("/".join(map(str, e.absolute_path)) or "(body)", short(e.message))
                for e in errs[:limit]]

    def template(self, path):
        for rx, tpl in self.templates:
            if rx.match(path):
                return tpl
        return None

    def responses(self, method, path):
        """(what the responses are of, {status: response}) for METHOD on PATH."""
        tpl = self.template(path)
        item = self.deref(self.doc["paths"][tpl]) if tpl else {}
        op = item.get("get" if method == "HEAD" else method.lower())
        if op is None:
            return ("refusals", self.doc.get("x-rnnd-refusals", {}))
        return ("%s %s" % (method, tpl), op.get("responses", {}))

    def violations(self, method, path, status, headers, body):
        """How the response breaks the contract (a list of one-line strings). HEADERS: a
        dict with lowercase names. BODY: bytes, or None when the caller did not read it (a
        stream read event by event: see event_violations)."""
        method = method.upper()
        path = path.split("?", 1)[0]
        if path == "/v2" or path.startswith("/v2/"):
            return []
        where = "%s %s -> %s" % (method, path, status)
        common = self.doc.get("x-rnnd-response-headers", {})
        if method == "OPTIONS" and status == 204:     # CORS preflight, or the Allow answer
            out = self.header_errors(where, common, headers)
            return out + ([where + ": a body on a 204"] if body else [])
        what, responses = self.responses(method, path)
        resp = responses.get(str(status))
        if resp is None:
            return (self.header_errors(where, common, headers)
                    + ["%s: status %s is not in the contract of %s (it has %s)"
                       % (where, status, what, ", ".join(sorted(responses)))])
        resp = self.deref(resp)
        # a response's own header replaces the common one of that name (the web page's files
        # carry Cache-Control no-cache, not no-store)
        own = {n.lower() for n in resp.get("headers", {})}
        out = self.header_errors(where, {n: h for n, h in common.items() if n.lower() not in own},
                                 headers)
        out += self.header_errors(where, resp.get("headers", {}), headers)
        if method == "HEAD":
            return out
        content = resp.get("content")
        if not content:
            if body:
                out.append("%s: a body (%s) where the contract has none" % (where, short(body)))
            return out
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        types = {k.split(";")[0].strip().lower(): v for k, v in content.items()}
        mt = types.get(media)
        if mt is None:
            out.append("%s: Content-Type %r, the contract has %s"
                       % (where, headers.get("content-type"), ", ".join(sorted(types))))
            return out
        if body is None:
            return out
        if media == "application/json":
            try:
                inst = json.loads(body)
            except ValueError as e:
                return out + ["%s: the body is not JSON (%s): %s" % (where, e, short(body))]
            out += ["%s: %s" % (where, e) for e in self.schema_errors(mt["schema"], inst)]
        elif "x-rnnd-events" in mt:
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            out += ["%s: %s" % (where, e) for e in self.stream_errors(mt["x-rnnd-events"], text)]
        else:
            try:
                text = body.decode("utf-8") if isinstance(body, bytes) else body
            except UnicodeDecodeError:
                return out + [where + ": the body is not UTF-8 text"]
            out += ["%s: %s" % (where, e) for e in self.schema_errors(mt["schema"], text)]
        return out

    def header_errors(self, where, spec, headers):
        """How HEADERS break SPEC ({name: header object}): a required one missing, a value
        its schema refuses."""
        out = []
        for name, h in spec.items():
            h = self.deref(h)
            val = headers.get(name.lower())
            if val is None:
                if h.get("required"):
                    out.append("%s: no %s header" % (where, name))
            else:
                out += ["%s: header %s: %s" % (where, name, e)
                        for e in self.schema_errors(h["schema"], val)]
        return out

    def event_schemas(self, path):
        """x-rnnd-events of the event stream POST PATH answers with (None: it has none)."""
        _, responses = self.responses("POST", path.split("?", 1)[0])
        ok = self.deref(responses.get("200", {}))
        return ok.get("content", {}).get("text/event-stream", {}).get("x-rnnd-events")

    def event_errors(self, events, name, data):
        """How one event (NAME: None for an unnamed one; DATA: its data text) breaks the
        EVENTS schemas; "[DONE]" is the stream's end."""
        if data == "[DONE]" and name is None:
            return []
        schema = events.get(name or "message")
        if schema is None:
            return ["event %r is not in the contract (it has %s)"
                    % (name, ", ".join(sorted(events)))]
        try:
            inst = json.loads(data)
        except ValueError:
            return ["event %r: its data is not JSON: %s" % (name, short(data))]
        return ["event %r: %s" % (name, e) for e in self.schema_errors(schema, inst)]

    def stream_errors(self, events, text):
        """A whole event stream's violations: each event, nothing after [DONE], [DONE] last."""
        out, done = [], False
        for block in text.split("\n\n"):
            name, data = None, None
            for line in block.split("\n"):
                if not line or line.startswith(":"):
                    continue
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                else:
                    out.append("stream: a line that is no field: %s" % short(line))
            if data is None:
                continue
            if done:
                out.append("stream: an event after [DONE]")
            done = done or (data == "[DONE]" and name is None)
            out += ["stream: " + e for e in self.event_errors(events, name, data)]
        if not done:
            out.append("stream: no [DONE] at its end")
        return out


_CONTRACT = []


def contract():
    """The document of this source tree, loaded once."""
    if not _CONTRACT:
        _CONTRACT.append(Contract())
    return _CONTRACT[0]


def violations(method, path, status, headers, body):
    return contract().violations(method, path, status, headers, body)


def event_violations(path, name, data):
    """One event of the stream of POST PATH, as event_errors judges it."""
    events = contract().event_schemas(path)
    if events is None:
        return ["POST %s: an event stream where the contract has none" % path]
    return ["POST %s: %s" % (path, e) for e in contract().event_errors(events, name, data)]
