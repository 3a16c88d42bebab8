"""The built-in web page at / (docs/api.md 4.12, issue 18 item 7) in a real browser.

Headless Chromium (Debian's chromium; tools/setup installs it) loads the page from a live
daemon serving the bundled text model (models/charlm.rnnd), driven over the DevTools protocol
with python3-websockets. It checks the rendered page:
- the models table lists the model with the shape GET /v1/models/{m} gives;
- a generation with a seed, streamed into the page (server-sent events), is the text the API
  generates itself for that seed and those parameters;
- Stop cancels a long generation: the page stops early and the daemon's generation ends
  (its temporary session is gone and the step counter stops);
- the charts are drawn from /metrics: the steps/s chart shows the generations' steps;
- no console error or exception, and every request the page made went to the daemon itself;
- with API keys on, the files need no key, the page asks for one (401) and then works, and
  with a key of scope infer it lists the models and says the charts need admin (403);
- the files' headers (Content-Security-Policy, Cache-Control no-cache, ETag and 304), and
  web_ui = off: / and /ui/ answer 404 while the API still answers.
"""
import asyncio
import http.client
import json
import os
import shutil
import subprocess
import time
import unittest

import websockets

from daemon_util import Case, Daemon, stop_ok, tmpdir, write_secret

WORK = tmpdir("web_ui")
CHARLM = os.path.join(os.environ["RNND_SRCDIR"], "models", "charlm.rnnd")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = "web-ui-test-key-0123456789abcdef"
INFER_KEY = "web-ui-infer-key-0123456789abcdef"


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol: every console
    message, exception and request of the page is recorded."""

    def __init__(self, name):
        profile = os.path.join(WORK, "profile-" + name)
        shutil.rmtree(profile, ignore_errors=True)
        os.makedirs(profile)
        cmd = [CHROMIUM, "--headless", "--disable-gpu", "--remote-debugging-port=0",
               "--user-data-dir=" + profile, "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--disable-background-networking", "--no-zygote",
               "--disable-dev-shm-usage", "--disable-component-update", "--disable-sync",
               "--disable-breakpad", "about:blank"]
        if os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")   # Chromium refuses root without it
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.loop = None
        try:
            self._attach(profile)
        except BaseException:
            self.close()        # no browser left behind
            raise

    def _attach(self, profile):
        """Connect to the DevTools server of the browser just started on PROFILE."""
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 20
        port = None
        while port is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools server")
            try:
                with open(port_file) as f:
                    port = int(f.readline())
            except (OSError, ValueError):
                time.sleep(0.05)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/json/list")
        pages = [t for t in json.loads(c.getresponse().read()) if t["type"] == "page"]
        c.close()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

        async def connect():
            return await websockets.connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self.ws = self.run(connect())
        self.next_id = 0
        self.pending = {}
        self.events = []
        self.reader = self.loop.create_task(self._read())
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(domain + ".enable")

    def run(self, coro, timeout=30):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    async def _read(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            fut = self.pending.pop(msg.get("id"), None)
            if fut is not None:
                fut.set_result(msg)
            elif "method" in msg:
                self.events.append(msg)

    def send(self, method, **params):
        self.next_id += 1
        fut = self.loop.create_future()
        self.pending[self.next_id] = fut

        async def go():
            await self.ws.send(json.dumps({"id": self.next_id, "method": method,
                                           "params": params}))
            return await fut
        msg = self.run(go())
        if "error" in msg:
            raise RuntimeError("%s: %s" % (method, msg["error"]))
        return msg["result"]

    def js(self, expr, timeout=30):
        """The value of the JavaScript EXPR in the page (awaited if it is a promise)."""
        res = self.send("Runtime.evaluate", expression=expr, awaitPromise=True,
                        returnByValue=True, timeout=timeout * 1000)
        if "exceptionDetails" in res:
            raise RuntimeError("%s: %s" % (expr[:80], res["exceptionDetails"]))
        return res["result"].get("value")

    def wait(self, expr, timeout=10):
        """Wait until EXPR is truthy in the page; its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.js(expr)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(0.05)

    def goto(self, url):
        """Load URL; events_at_load: where its events begin."""
        self.events_at_load = len(self.events)
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", self.events_at_load)

    def wait_event(self, method, since, timeout=10):
        """The first event METHOD from index SINCE of the events, once it came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events[since:]:
                if e["method"] == method:
                    return e
            self.run(asyncio.sleep(0.02))
        raise RuntimeError("no %s within %s s" % (method, timeout))

    def close(self):
        if self.loop:
            try:
                self.reader.cancel()
                self.run(self.ws.close(), 5)
            except Exception:       # the browser may be gone already, or never attached
                pass
            self.loop.close()
            self.loop = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_BROWSER = []


def browser():
    """The one browser of the module (its start takes seconds): closed after the last test."""
    if not _BROWSER:
        _BROWSER.append(Browser("web_ui"))
        unittest.addModuleCleanup(_BROWSER[0].close)
    return _BROWSER[0]


def metric(text, name):
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


# JavaScript: start the playground's generation and click Stop as soon as N characters of it
# are on the page (in the page itself: the model generates 4096 tokens in well under a second)
START_THEN_STOP = """new Promise((done) => {
  const out = document.getElementById("p-out");
  const obs = new MutationObserver(() => {
    const t = document.getElementById("p-text");
    if (t && t.textContent.length >= %d) {
      obs.disconnect();
      document.getElementById("p-stop").click();
      done(t.textContent.length);
    }
  });
  obs.observe(out, {childList: true, subtree: true, characterData: true});
  document.getElementById("p-start").click();
})"""


class Page(Case):
    """The page in Chromium against a daemon with the text model (tests run in name order:
    the charts and the console are checked after the generations)."""

    @classmethod
    def setUpClass(cls):
        cls.d = cls.serve({"charlm": CHARLM}, "--max-generate-tokens", "4096")
        cls.origin = "http://127.0.0.1:%d" % cls.d.port
        cls.b = browser()
        cls.b.goto(cls.origin + "/")
        del cls.b.events[:cls.b.events_at_load]     # only this page's own

    def test_1_models(self):
        b = self.b
        rows = b.wait("""(() => { const r = [...document.querySelectorAll('#models tbody tr')];
            return r.length ? r.map((tr) => [...tr.cells].map((c) => c.textContent)) : null;
            })()""")
        st, _, m = self.d.request("GET", "/v1/models/charlm")
        self.eq(st, 200, "GET /v1/models/charlm")
        types = m["layer_types"]
        want = ["charlm", ", ".join(dict.fromkeys(t["type"] for t in types)), str(m["layers"]),
                ", ".join(dict.fromkeys(str(t["hidden_size"]) for t in types)),
                "tokens (%d)" % m["vocab_size"], m["weights"]]
        self.eq(rows, [want], "the models table")
        self.eq(b.js("[...document.getElementById('p-model').options].map((o) => o.value)"),
                ["charlm"], "the playground's text models")

    def test_2_generate_streams_api_text(self):
        b = self.b
        # a seed above 2^53, which a JavaScript Number cannot hold: the page keeps its digits
        params = {"prompt": "The cat ", "max_tokens": 120, "temperature": 0.8,
                  "seed": 2 ** 53 + 1}
        b.js("""(() => { const s = (id, v) => { document.getElementById(id).value = v; };
            s('p-model', 'charlm'); s('p-prompt', %s); s('p-max', '%d'); s('p-temp', '%s');
            s('p-seed', '%d'); })()""" % (json.dumps(params["prompt"]), params["max_tokens"],
                                          params["temperature"], params["seed"]))
        # count the updates of the text: a stream shows it piece by piece
        b.js("""window.updates = 0; new MutationObserver((r) => window.updates += r.length).observe(
            document.getElementById('p-out'), {childList: true, subtree: true,
            characterData: true}); document.getElementById('p-start').click()""")
        state = b.wait("document.getElementById('p-out').dataset.state === 'done' || "
                       "document.getElementById('p-out').dataset.state === 'error'")
        self.check(state, "the generation ended in the page")
        text = b.js("document.getElementById('p-text').textContent")
        st, _, ref = self.d.request("POST", "/v1/models/charlm/generate", params)
        self.eq(st, 200, "the API's own generation")
        self.eq(text, ref["text"], "the page's streamed text is the API's text for its seed")
        self.check(b.js("window.updates") >= params["max_tokens"],
                   "the text arrived token by token (%s updates)" % b.js("window.updates"))
        info = b.js("document.getElementById('p-info').textContent")
        self.check("120 tokens" in info and "seed %d)" % params["seed"] in info,
                   "the summary names the seed: %r" % info)

    def test_3_stop_cancels(self):
        b = self.b
        b.js("""(() => { document.getElementById('p-max').value = '4096';
            document.getElementById('p-seed').value = ''; })()""")
        shown = b.js(START_THEN_STOP % 5)
        self.check(shown >= 5, "Stop clicked once the text began (%r chars)" % shown)
        state = b.wait("document.getElementById('p-out').dataset.state !== 'running' && "
                       "document.getElementById('p-out').dataset.state")
        self.eq(state, "stopped", "the page's generation state after Stop")
        n = len(b.js("document.getElementById('p-text').textContent"))
        self.check(n < 4096, "stopped early: %d of 4096 characters" % n)
        self.check("stopped" in b.js("document.getElementById('p-info').textContent"),
                   "the page says it stopped")
        # the daemon saw the client leave: its temporary session goes and no step follows
        deadline = time.monotonic() + 5
        while metric(self.d.metrics(), "rnnd_sessions") and time.monotonic() < deadline:
            time.sleep(0.05)
        before = metric(self.d.metrics(), "rnnd_session_steps_total")
        time.sleep(0.3)
        after = metric(self.d.metrics(), "rnnd_session_steps_total")
        self.eq(metric(self.d.metrics(), "rnnd_sessions"), 0, "open sessions after Stop")
        self.eq(after, before, "no step after Stop")

    def test_4_charts(self):
        b = self.b
        # the steps/s chart's largest value, once a poll has seen the generations' steps
        peak = b.wait("Number(document.getElementById('c-steps').dataset.max) > 1 && "
                      "Number(document.getElementById('c-steps').dataset.max)", timeout=5)
        self.check(peak and peak > 1, "the steps/s chart saw the generations: %r" % peak)
        # the batch and latency charts have a value once a poll saw a batch and a request
        b.wait("charts.batch.values.some((v) => v !== null) && "
               "charts.latency.values.some((v) => v !== null)", timeout=5)
        for name in ("steps", "batch", "latency", "sessions"):
            drawn = b.js("""(() => { const c = document.getElementById('c-%s');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let line = 0;   // pixels of the data line (#2563eb)
                for (let i = 0; i < d.length; i += 4)
                  if (d[i + 3] > 200 && d[i + 2] > 180 && d[i] < 90) line++;
                return line; })()""" % name)
            self.check(drawn >= 12, "the %s chart has its data drawn (%d pixels)" % (name, drawn))
        self.check(b.js("document.getElementById('v-steps').textContent") != "",
                   "the steps/s figure is shown")

    def test_5_console_and_origin(self):
        b = self.b
        errors = []
        for e in b.events:
            m, p = e["method"], e["params"]
            if m == "Runtime.exceptionThrown":
                errors.append(p["exceptionDetails"].get("text"))
            elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                errors.append(p["args"])
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(p["entry"]["text"])
        self.eq(errors, [], "console errors and exceptions")
        urls = [e["params"]["request"]["url"] for e in b.events
                if e["method"] == "Network.requestWillBeSent"]
        self.check(len(urls) >= 6, "requests recorded (%d)" % len(urls))
        self.eq([u for u in urls if not u.startswith(self.origin + "/")], [],
                "requests to anywhere but the daemon")


class Keys(Case):
    """API keys on: the page's files need none; the page asks for one, then works."""

    @classmethod
    def setUpClass(cls):
        keys = os.path.join(WORK, "keys")
        write_secret(keys, "%s page admin\n%s user infer\n" % (KEY, INFER_KEY))
        cls.d = cls.serve({"charlm": CHARLM}, "--api-keys-file", keys)
        cls.b = browser()

    def use_key(self, key):
        self.b.js("""(() => { document.getElementById('key').value = %s;
            document.getElementById('keyform').requestSubmit(); })()""" % json.dumps(key))

    def test_options_without_key(self):
        """OPTIONS follows its route's GET (docs/security.md, "Browsers"): the page's files,
        open to all, answer it without a key (204, Allow: GET, HEAD); an API route needs one."""
        for path in ("/", "/ui/app.js", "/ui/app.css"):
            st, h, _ = self.d.request("OPTIONS", path)
            self.check(st == 204 and "GET" in h.get("allow", "") and "www-authenticate" not in h,
                       "OPTIONS %s without a key: 204 with Allow (got %s %r)" % (path, st, h))
        st, h, _ = self.d.request("OPTIONS", "/v1/models")
        self.check(st == 401 and "allow" not in h,
                   "OPTIONS /v1/models without a key: 401, no Allow (got %s %r)" % (st, h))

    def test_infer_key_no_charts(self):
        """A key of scope infer lists the models; the page says the charts need admin."""
        b = self.b
        b.goto("http://127.0.0.1:%d/" % self.d.port)
        b.js("sessionStorage.clear()")
        b.goto("http://127.0.0.1:%d/" % self.d.port)
        self.check(b.wait("!document.getElementById('keyform').hidden"),
                   "the page asks for a key")
        self.use_key(INFER_KEY)
        self.eq(b.wait("document.querySelectorAll('#models tbody tr').length"), 1,
                "the models listed with an infer key")
        note = b.wait("document.getElementById('notice').textContent.includes('403') && "
                      "document.getElementById('notice').textContent")
        self.check("403" in note and "/metrics" in note and "admin" in note,
                   "the page says /metrics needs an admin key: %r" % note)
        b.js("clearInterval(metricsTimer)")

    def test_key_asked_then_used(self):
        d, b = self.d, self.b
        for path in ("/", "/ui/app.js", "/ui/app.css"):
            self.eq(d.request("GET", path)[0], 200, "GET %s without a key" % path)
        self.eq(d.request("GET", "/v1/models")[0], 401, "GET /v1/models without a key")
        b.goto("http://127.0.0.1:%d/" % d.port)
        b.js("sessionStorage.clear()")
        b.goto("http://127.0.0.1:%d/" % d.port)
        self.check(b.wait("!document.getElementById('keyform').hidden"),
                   "the page asks for a key")
        self.check("API key" in b.js("document.getElementById('notice').textContent"),
                   "the page says a key is needed")
        self.use_key(KEY)
        self.eq(b.wait("document.querySelectorAll('#models tbody tr').length"), 1,
                "the models listed with the key")
        self.check(b.js("document.getElementById('notice').hidden"), "the notice is gone")
        b.js("clearInterval(metricsTimer)")     # its polls end before the daemon does


class Files(Case):
    """The files' headers, and web_ui = off."""

    def test_headers(self):
        d = self.serve({"charlm": CHARLM})
        for path, ctype in (("/", "text/html"), ("/ui/app.js", "text/javascript"),
                            ("/ui/app.css", "text/css")):
            st, h, body = d.request("GET", path)
            self.eq(st, 200, "GET " + path)
            self.eq(h.get("content-type", "").split(";")[0], ctype, path + " Content-Type")
            self.check(h.get("content-security-policy", "").startswith("default-src 'self'"),
                       path + " Content-Security-Policy: %r" % h.get("content-security-policy"))
            self.eq(h.get("cache-control"), "no-cache", path + " Cache-Control")
            self.eq(h.get("x-content-type-options"), "nosniff", path + " nosniff")
            st, h2, body2 = d.request("GET", path, headers={"If-None-Match": h["etag"]})
            self.eq((st, body2), (304, None), path + " with its ETag: 304, no body")
            # RFC 9110 13.1.2: "*" matches any current representation
            st, _, body2 = d.request("GET", path, headers={"If-None-Match": "*"})
            self.eq((st, body2 is None), (304, True), path + " with If-None-Match: *: 304, no body")
            st, _, body2 = d.request("GET", path, headers={"If-None-Match": '"other"'})
            self.eq(st, 200, path + " with another tag: 200")
            self.eq(d.request("HEAD", path)[0], 200, "HEAD " + path)
            # a body on a GET of a file has no meaning (RFC 9110 9.3.1): it is ignored
            for ct in (None, "application/json"):
                st, _, got = d.request("GET", path, raw=b"hello", headers={"Content-Type": ct})
                self.check(st == 200 and got == body, "GET %s with a body (Content-Type %s): "
                           "the file, got %d %.200r" % (path, ct, st, got))

    def test_off(self):
        d = Daemon({"charlm": CHARLM}, "--web-ui", "off")
        try:
            for path in ("/", "/ui/app.js", "/ui/app.css"):
                self.error(d.request("GET", path), 404, "not_found", "web_ui off: GET " + path)
            self.eq(d.request("GET", "/v1/models")[0], 200, "web_ui off: the API answers")
        finally:
            stop_ok(d)


if not CHROMIUM:
    raise SystemExit("test_web_ui: chromium is not installed (tools/setup installs it)")

if __name__ == "__main__":
    unittest.main()
