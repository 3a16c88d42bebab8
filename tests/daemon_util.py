"""What the Python tests share, in one module. Chiefly the daemon: start the real `rnnd
serve` on 127.0.0.1 port 0, read the port it logs, talk to it over real sockets with the
standard library only, and stop it with SIGTERM (checking it exits 0 in time). Also: the
golden cases and their folders, the SIMD paths this CPU must run, API keys, the sanitizer
build and the peak-RSS measure of the memory tests.

Not a test itself. Every wait is bounded.

The tests are unittest cases (README.md, "Developers"): `Case` gives them the checks (check,
eq, error) that go on after a failure, each a subTest, counted and the count printed at exit.
Module-level helpers check through RUNNING, which hands each check to the test running now.
Run outside `make check`, the environment make sets is filled in for an in-tree build.
"""
import atexit
import contextlib
import http.client
import io
import json
import os
import platform
import random
import select
import signal
import subprocess
import sys
import threading
import time
import unittest
import zlib

# what Makefile.am's AM_TESTS_ENVIRONMENT sets, for `python3 -m unittest` by hand in a tree
# built in place
_TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("RNND_SRCDIR", _TOP)
os.environ.setdefault("RNND_BIN", os.path.join(_TOP, "rnnd"))
os.environ.setdefault("RNND_GOLDEN_DIR", os.path.join(_TOP, "tests", "golden"))
os.environ.setdefault("RNND_TEST_TMP", os.path.join(_TOP, "tests", "tmp"))
if "PYTHONPATH" not in os.environ:
    os.environ["PYTHONPATH"] = os.path.join(_TOP, "tools")
for _p in os.environ["PYTHONPATH"].split(os.pathsep):
    if _p and _p not in sys.path:
        sys.path.append(_p)

PYTHON3 = os.environ.get("PYTHON3", sys.executable)
RNND_BIN = os.environ["RNND_BIN"]
GOLDEN_DIR = os.environ.get("RNND_GOLDEN_DIR", "")
TMP_ROOT = os.environ.get("RNND_TEST_TMP", "/tmp")
# A command the daemon runs under, e.g. valgrind (tests/test_valgrind.sh sets it).
WRAPPER = os.environ.get("RNND_DAEMON_WRAPPER", "").split()


def tmpdir(name):
    d = os.path.join(TMP_ROOT, name)
    os.makedirs(d, exist_ok=True)
    return d


def scratch(name):
    """path(FILE) for files in the test's scratch folder NAME (created): `path = scratch(...)`."""
    d = tmpdir(name)
    return lambda file: os.path.join(d, file)


def verification_record(p):
    """The verification record rnnd-convert wrote into the metadata of the .rnnd at P (a
    dict; docs/convert.md, "Verified at conversion")."""
    with open(p, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    return json.loads(json.loads(data[8:8 + n])["__metadata__"]["verification"])


def convert(onnx_path, out_path):
    """Convert an ONNX file with the project's converter (once per output path)."""
    if not os.path.exists(out_path):
        subprocess.run([PYTHON3, "-m", "rnnd_convert", onnx_path, "-o", out_path],
                       check=True, capture_output=True, timeout=120)
    return out_path


def main_inproc(*args):
    """(rc, stderr) of rnnd-convert ARGS run in this process (cli.main): quicker than a child
    that imports torch again."""
    from rnnd_convert import cli  # here: most users of this module never convert
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(list(args))
    return rc, err.getvalue()


def golden_cases():
    """[(name, case dict, onnx path)] of every golden case, sorted by name."""
    out = []
    for name in sorted(os.listdir(GOLDEN_DIR)):
        case_path = os.path.join(GOLDEN_DIR, name, "case.json")
        if os.path.exists(case_path):
            with open(case_path) as f:
                out.append((name, json.load(f), os.path.join(GOLDEN_DIR, name, "model.onnx")))
    return out


def golden_model(name, workdir):
    """The converted .rnnd of golden case NAME."""
    return convert(os.path.join(GOLDEN_DIR, name, "model.onnx"),
                   os.path.join(workdir, name + ".rnnd"))


class Daemon:
    """`rnnd serve` on an ephemeral port. Use as a context manager: always stopped, with
    SIGTERM, and its exit status checked, so that a crash or a race at shutdown (a sanitizer's
    report makes the status nonzero) fails the test that ran it."""

    def __init__(self, models, *args, ready_timeout=30, env=None, preexec_fn=None,
                 exit_status=0):
        """ENV: the daemon's whole environment (default: this process's). PREEXEC_FN runs in
        the child before rnnd starts (e.g. to lower its resource limits). EXIT_STATUS: the
        status the context's exit requires (a test that expects a failing exit says which);
        a test that kills the daemon on purpose calls kill(), which waives the check."""
        self.exit_status = exit_status
        cmd = WRAPPER + [RNND_BIN, "serve", "--listen", "127.0.0.1:0"]
        for name, path in models.items():
            cmd += ["--model", "%s=%s" % (name, path)]
        cmd += [str(a) for a in args]
        self.cmd = cmd
        self.log = []
        if WRAPPER:
            # rnnd re-executes itself through /proc/self/exe to fix OpenBLAS's environment
            # (src/main.c); under valgrind that path is valgrind's own tool binary, so hand
            # it the environment it would have set and no re-exec happens.
            env = dict(env if env is not None else os.environ)
            env.pop("OPENBLAS_CORETYPE", None)
            env["OPENBLAS_NUM_THREADS"] = "1"
            ready_timeout = max(ready_timeout, 120)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, preexec_fn=preexec_fn)
        self.port = None
        deadline = time.monotonic() + ready_timeout
        buf = b""
        try:
            while self.port is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("daemon did not log its port in time")
                r, _, _ = select.select([self.proc.stderr], [], [], left)
                if not r:
                    continue
                chunk = os.read(self.proc.stderr.fileno(), 65536)
                if not chunk:
                    raise RuntimeError("daemon exited early (status %s): %s"
                                       % (self.proc.wait(5), buf.decode(errors="replace")))
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._line(line.decode(errors="replace"))
        except BaseException:
            self._sigkill()
            raise
        # keep draining stderr so the daemon never blocks on a full pipe
        self._reader = threading.Thread(target=self._drain, args=(buf,), daemon=True)
        self._reader.start()

    def _line(self, line):
        self.log.append(line)
        if self.port is None and "event=listening" in line:
            for field in line.split():
                if field.startswith("port="):
                    self.port = int(field[5:])

    def _drain(self, buf):
        while True:
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._line(line.decode(errors="replace"))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        rc = self.proc.poll()
        if rc is None:
            rc, _ = self.stop()
        elif rc != 0:  # gone by itself (a sanitizer's abort): its report is in the log
            self.print_tail(rc)
        # after a failure inside the block, its own exception is the one to see
        if exc_type is None and self.exit_status is not None:
            require(rc == self.exit_status, "daemon exit status %r, want %r (Daemon's context "
                    "exit: stopped with SIGTERM unless already gone)" % (rc, self.exit_status))
        return False

    def alive(self):
        return self.proc.poll() is None

    def wait_log(self, pred, timeout=5):
        """Whether a log line satisfies PRED within TIMEOUT seconds: the log is read by a
        thread, so a line about a request may come in after its reply."""
        deadline = time.monotonic() + timeout
        while True:
            if any(pred(line) for line in list(self.log)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def kill(self):
        """SIGKILL, on purpose: the context's exit then checks no exit status."""
        self.exit_status = None
        self._sigkill()

    def _sigkill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout=20):
        """SIGTERM; returns (exit status, seconds taken)."""
        t0 = time.monotonic()
        if WRAPPER:
            timeout = max(timeout, 120)   # valgrind's leak check runs at exit
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._sigkill()
            rc = None
        if getattr(self, "_reader", None):
            self._reader.join(5)
            if not self._reader.is_alive():
                self.proc.stderr.close()
        if rc != 0:
            self.print_tail(rc)
        return rc, time.monotonic() - t0

    def print_tail(self, rc):
        if getattr(self, "_reader", None):
            self._reader.join(5)  # the last lines, a sanitizer's report among them
        print("daemon exit status %s; its last log lines:" % rc)
        for line in self.log[-30:]:
            print("  " + line)

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None, raw=None):
        """(status, headers dict (lowercase names), parsed JSON body or text or None).
        BODY is encoded as JSON unless RAW (bytes) is given."""
        hdrs = {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}  # None: leave the header out
        own = conn is None
        c = conn or self.conn()
        try:
            c.request(method, path, body=data, headers=hdrs)
            resp = c.getresponse()
            payload = resp.read()
            rh = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            if own:
                c.close()
        contract_check(method, path, resp.status, rh, payload)
        parsed = None
        if payload:
            if rh.get("content-type", "").startswith("application/json"):
                parsed = json.loads(payload)
            else:
                parsed = payload.decode(errors="replace")
        return resp.status, rh, parsed

    def metrics(self):
        status, _, text = self.request("GET", "/metrics")
        assert status == 200, status
        return text


# ---- the API contract: every response a test receives is checked against docs/openapi.yaml
_CONTRACT_PENDING = []      # violations seen on other threads, for the test's end
_CONTRACT_LOCK = threading.Lock()


def contract_check(method, path, status, headers, body):
    """The response hook: the reply to METHOD PATH (STATUS, HEADERS with lowercase names,
    BODY bytes, or None for a stream read elsewhere) against docs/openapi.yaml
    (tests/openapi_util.py). Each violation fails the test that received it: at once on the
    main thread (a failed check, or an AssertionError outside a test); from another thread
    when the running test ends (contract_flush), or at exit."""
    import openapi_util     # here: yaml and jsonschema only for tests that talk to a daemon
    found = openapi_util.violations(method, path, status, headers, body)
    contract_report(found)


def contract_report(found):
    """Violations FOUND (one-line strings), reported as contract_check says."""
    if threading.current_thread() is not threading.main_thread():
        with _CONTRACT_LOCK:
            _CONTRACT_PENDING.extend(found)
        return
    contract_flush()
    for v in found:
        RUNNING.check(False, "contract (docs/openapi.yaml): " + v)


def contract_flush():
    with _CONTRACT_LOCK:
        found = _CONTRACT_PENDING[:]
        del _CONTRACT_PENDING[:]
    for v in found:
        RUNNING.check(False, "contract (docs/openapi.yaml): " + v)


@atexit.register
def _contract_left():
    if _CONTRACT_PENDING:
        for v in _CONTRACT_PENDING:
            print("FAIL contract (docs/openapi.yaml): " + v, flush=True)
        os._exit(1)


def batch_histogram(metrics_text, model):
    """{le: cumulative count} of rnnd_batch_size for MODEL, plus 'count' and 'sum'."""
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith("#") or 'model="%s"' % model not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("rnnd_batch_size_bucket"):
            le = name.split('le="', 1)[1].split('"', 1)[0]
            out[le] = int(value)
        elif name.startswith("rnnd_batch_size_count"):
            out["count"] = int(value)
        elif name.startswith("rnnd_batch_size_sum"):
            out["sum"] = int(value)
    return out


_CHECKS = [0]


@atexit.register
def _print_checks():
    if _CHECKS[0]:
        print("%d checks made" % _CHECKS[0], flush=True)


def require(cond, what):
    """A check outside a test method (setUpClass, a class cleanup): counted, and an
    AssertionError, which unittest reports as an error of the class, when COND is false."""
    _CHECKS[0] += 1
    if not cond:
        raise AssertionError(what)
    return cond


def stop_ok(d, what="exit status"):
    """Stop daemon D with SIGTERM and require exit status 0 (a class cleanup's check)."""
    rc, _ = d.stop()
    return require(rc == 0, "%s: got %r, want 0" % (what, rc))


class Case(unittest.TestCase):
    """A test's checks (check, eq, fail_check, error): each is a subTest, so a failed one is
    reported and the test goes on to make the rest; all are counted (the count is printed at
    exit)."""

    maxDiff = None

    def check(self, cond, what):
        _CHECKS[0] += 1
        if not cond:
            print("FAIL " + what, flush=True)
            with self.subTest(what):
                self.fail(what)
        return cond

    def eq(self, got, want, what):
        return self.check(got == want, "%s: got %r, want %r" % (what, got, want))

    def fail_check(self, what):
        """A check that failed: WHAT, as a failed subTest."""
        return self.check(False, what)

    def error(self, resp, status, code, what):
        """RESP (status, headers, body) is STATUS with {"error":{"code":CODE,...}}."""
        st, hdrs, body = resp
        ok = (st == status and isinstance(body, dict) and isinstance(body.get("error"), dict)
              and body["error"].get("code") == code
              and isinstance(body["error"].get("message"), str)
              and len(body["error"]["message"]) > 0)
        return self.check(ok, "%s: want %d %s, got %d %r" % (what, status, code, st, body))

    def setUp(self):
        RUNNING.test = self
        self.addCleanup(setattr, RUNNING, "test", None)
        self.addCleanup(contract_flush)

    @classmethod
    def serve(cls, models, *args, **kw):
        """A Daemon for the whole class: stopped after its last test, with exit status 0
        required."""
        d = Daemon(models, *args, **kw)
        cls.addClassCleanup(stop_ok, d)
        return d


class _Running:
    """The checks of the test running now, for module-level helpers that check as they go
    (`from daemon_util import RUNNING as C`; C.check, C.eq): each lands in the test that
    called the helper. Outside a test (setUpClass) a failed check is a `require`."""

    test = None

    def check(self, cond, what):
        return self.test.check(cond, what) if self.test else require(cond, what)

    eq = Case.eq
    fail_check = Case.fail_check
    error = Case.error


RUNNING = _Running()


def close(a, b, atol, rtol):
    """Element-wise |a - b| <= atol + rtol * |b| over nested lists."""
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(
            close(x, y, atol, rtol) for x, y in zip(a, b))
    return isinstance(a, (int, float)) and abs(a - b) <= atol + rtol * abs(b)


def read_http_response(sock, seconds):
    """One whole HTTP response read from SOCK within SECONDS, by its Content-Length.
    Returns (status, complete, data); status is None when no status line came."""
    data = b""
    deadline = time.monotonic() + seconds
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            lines = data[:end].decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
            n = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    n = int(v.strip())
            if len(data) - end - 4 >= n:
                return status, True, data
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # a TLS socket may hold decrypted bytes that select() cannot see
        pending = getattr(sock, "pending", lambda: 0)()
        if not pending and not select.select([sock], [], [], left)[0]:
            break
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    parts = data.split(b"\r\n", 1)[0].split(b" ")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None), False, data


def head_shapes():
    """About 250 request heads (nargs, arg_len, nfields, field_len) around libmicrohttpd's
    per-connection pool at max_header_bytes 32K: query arguments and header fields, few or
    many, short or long."""
    out = []
    for nargs in (0, 1, 32, 100, 128, 129, 400):
        for alen in (1, 60, 150, 200, 1000):
            for nh in (0, 8, 40):
                for hlen in ((20,) if nh == 0 else (20, 300, 900)):
                    out.append((nargs, alen, nh, hlen))
    return out


def head_bytes(nargs, alen, nh, hlen, path=b"/v1/models"):
    """The request a head_shapes() entry stands for."""
    q = b"&".join(b"a%d=%s" % (i, b"v" * alen) for i in range(nargs))
    line = b"GET " + path + (b"?" + q if q else b"") + b" HTTP/1.1\r\nHost: x\r\n"
    return line + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"h" * hlen) for i in range(nh)) + b"\r\n"


def bearer(key):
    """The Authorization header of API key KEY."""
    return {"Authorization": "Bearer " + key}


def write_secret(path, text, mode=0o600):
    """A file (a keys file, a key) with TEXT and MODE; its path."""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def status_kib(pid, field):
    """A kB field (VmRSS, VmHWM) of /proc/PID/status; 0 where there is none."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def asan_build():
    """Is the daemon built with AddressSanitizer? Its quarantine of freed memory, its redzones
    and its allocator caches make RSS grow by design, so RSS bounds have to allow for them."""
    out = subprocess.run(["ldd", RNND_BIN], capture_output=True, text=True).stdout
    return "libasan" in out


# The SIMD paths a test runs: those this CPU must run, from its flags (what src/kernels.c
# checks through CPUID). A path the CPU lacks cannot be run here and is named as not run; one
# it has must pass, so a kernel-selection bug cannot hide as a missing feature.
ISAS = ("scalar", "avx2", "avx512")
ISA_FLAGS = {
    "scalar": set(),
    "avx2": {"avx2", "fma", "f16c"},
    "avx512": {"avx512f", "avx512vl", "avx512bw", "avx512dq", "fma", "f16c"},
}


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def available_isas():
    flags = cpu_flags()
    x86 = platform.machine() in ("x86_64", "AMD64", "amd64")
    required = [i for i in ISAS if i == "scalar" or (x86 and ISA_FLAGS[i] <= flags)]
    missing = [i for i in ISAS if i not in required]
    print("cpu: %s; paths this CPU must run: %s%s" % (
        platform.machine(), ", ".join(required),
        "; not run here (the CPU lacks them): " + ", ".join(missing) if missing else ""))
    return required


def data_cases(folder):
    """{name: case dict} of the cases in FOLDER (tests/data/golden_*), by name."""
    out = {}
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name, "case.json")
        if os.path.isfile(p):
            with open(p) as f:
                out[name] = json.load(f)
    return out


def convert_case(folder, name, case, workdir, *extra):
    """Case NAME of FOLDER converted into WORKDIR (a check of the running test); the path."""
    out = os.path.join(workdir, name + ".rnnd")
    p = subprocess.run([PYTHON3, "-m", "rnnd_convert", os.path.join(folder, name,
                        case["model"]), "-o", out] + list(extra), capture_output=True,
                       text=True, timeout=120)
    RUNNING.check(p.returncode == 0, "%s: conversion: %s" % (name, p.stderr.strip()))
    return out


def infer_on(model, req, isa):
    """`rnnd infer` of request REQ on path ISA (a check of the running test): the reply, or
    None."""
    env = dict(os.environ, RNND_ISA=isa)
    p = subprocess.run([RNND_BIN, "infer", "--model", model], input=json.dumps(req),
                       capture_output=True, text=True, env=env, timeout=120)
    RUNNING.check(p.returncode == 0, "infer [%s]: %s" % (isa, p.stderr.strip()))
    return json.loads(p.stdout) if p.returncode == 0 else None


def noise(d, model, case, steps, errors, seed):
    """A session of MODEL fed STEPS requests of random inputs (from SEED): batch company for
    the sessions a test checks. What goes wrong is appended to ERRORS."""
    r = random.Random(seed)
    st, _, body = d.request("POST", "/v1/sessions", {"model": model})
    if st != 201:
        errors.append("noise %s: %d" % (model, st))
        return
    sid = body["id"]
    inp = case["input"]
    for _ in range(steps):
        n = r.randint(1, 9)
        if inp["kind"] == "tokens":
            x = [r.randrange(inp["vocab"]) for _ in range(n)]
        else:
            x = [[r.uniform(-3, 3) for _ in range(inp["dim"])] for _ in range(n)]
        st, _, reply = d.request("POST", "/v1/sessions/%s/step" % sid, {"inputs": x})
        if st != 200:
            errors.append("noise %s: step %d %r" % (model, st, reply))
            return


# What tests/test_memory.py and tests/test_memory_sessions.py share: the sanitizer build's
# looser bounds, random native-spec models, and the peak-RSS (VmHWM) measure of an attack.
MIB = 1 << 20
ASAN = asan_build()
# Under ASan each block carries redzones, shadow memory and a quarantine: bounds are looser.
SLACK = (160 if ASAN else 24) * MIB
FACTOR = 3 if ASAN else 1


def asan_env():
    """This process's environment, with a smaller ASan quarantine in a sanitizer build."""
    e = dict(os.environ)
    if ASAN:
        e["ASAN_OPTIONS"] = (e.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=16").lstrip(":")
    return e


def write_model(work, name, arch, seed=1):
    """A native spec with random weights, converted by the project's converter."""
    import numpy as np      # here: the daemon tests need the standard library only
    out = os.path.join(work, name + ".rnnd")
    if os.path.exists(out):
        return out
    rng = np.random.default_rng(seed)
    t, in_dim = {}, arch["input"]["dim"]
    for li, L in enumerate(arch["layers"]):
        H, G = L["hidden_size"], {"rnn": 1, "lstm": 4}[L["type"]]
        o = L.get("proj_size", 0) or H
        p = "layers.%d.0." % li
        t[p + "W"] = rng.uniform(-0.5, 0.5, (G * H, in_dim))
        t[p + "R"] = rng.uniform(-0.5, 0.5, (G * H, o))
        t[p + "Wb"] = rng.uniform(-0.5, 0.5, (G * H,))
        t[p + "Rb"] = rng.uniform(-0.5, 0.5, (G * H,))
        if L.get("proj_size"):
            t[p + "proj"] = rng.uniform(-0.01, 0.01, (o, H))
        in_dim = o
    if arch.get("head"):
        arch["head"]["in_dim"] = in_dim
        t["head.weight"] = rng.uniform(-0.5, 0.5, (arch["head"]["out_dim"], in_dim))
        t["head.bias"] = rng.uniform(-0.5, 0.5, (arch["head"]["out_dim"],))
    npz = os.path.join(work, name + ".npz")
    np.savez(npz, **{k: v.astype(np.float32) for k, v in t.items()})
    arch = dict(arch, format_version=1, weights=os.path.basename(npz))
    spec = os.path.join(work, name + ".json")
    with open(spec, "w") as f:
        json.dump(arch, f)
    subprocess.run([PYTHON3, "-m", "rnnd_convert", spec, "-o", out], check=True,
                   capture_output=True, timeout=120)
    return out


def hwm_reset(pid):
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")    # resets VmHWM to the current RSS


def code_of(j):
    return j.get("error", {}).get("code") if isinstance(j, dict) else None


def attack(d, name, fn, bound):
    """Run FN against D; check (in the running test) the peak RSS growth stays under BOUND
    bytes and the daemon serves on."""
    pid = d.proc.pid
    time.sleep(0.3)
    base = status_kib(pid, "VmRSS")
    hwm_reset(pid)
    t0 = time.monotonic()
    fn()
    peak = status_kib(pid, "VmHWM")
    grew = (peak - base) * 1024
    print("%s: RSS %d MiB before, peak %d MiB (+%d MiB) in %.1f s; bound +%d MiB"
          % (name, base // 1024, peak // 1024, grew // MIB, time.monotonic() - t0,
             bound // MIB))
    RUNNING.check(grew <= bound, "%s: peak RSS growth %d MiB within %d MiB"
                  % (name, grew // MIB, bound // MIB))
    s, _, _ = d.request("GET", "/healthz")
    RUNNING.eq(s, 200, "%s: the daemon serves on" % name)


def check_generator(folder, timeout=300):
    """`generate.py --check FOLDER` of a golden data folder passes (a check of the running
    test): the case generator's own reference recomputes the stored numbers."""
    p = subprocess.run([PYTHON3, os.path.join(folder, "generate.py"), "--check", folder],
                       capture_output=True, text=True, timeout=timeout)
    print(p.stdout, end="")
    RUNNING.check(p.returncode == 0, "generate.py --check: %s" % p.stderr.strip())


def run_concurrently(jobs, rng, errors):
    """Start the threads JOBS in the order RNG shuffles them into, wait for each (300 s at
    most), then report each of the ERRORS they appended as a failed check of the running
    test."""
    rng.shuffle(jobs)
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(300)
    for e in errors:
        RUNNING.check(False, e)


def drive_session(d, model, seq, what, got, errors, chunk=lambda r: r.randint(1, 17),
                  final=None):
    """Feed SEQ to a session of MODEL in chunks of CHUNK(r) steps (r: a random.Random seeded
    from WHAT), exporting the state part way and continuing in a new session opened from the
    export (and the export PUT back); outputs into GOT, and with FINAL the state exported at
    the end into FINAL. What goes wrong is appended to ERRORS (the thread stops there)."""
    r = random.Random(zlib.crc32(what.encode()))
    st, _, body = d.request("POST", "/v1/sessions", {"model": model})
    if st != 201:
        errors.append("%s: open: %d %r" % (what, st, body))
        return
    sid = body["id"]
    cut = r.randint(1, max(1, len(seq) - 1))    # export once this many steps are done
    i = 0
    while i < len(seq):
        n = min(chunk(r), len(seq) - i)
        if i < cut < i + n:
            n = cut - i
        st, _, body = d.request("POST", "/v1/sessions/%s/step" % sid,
                                {"inputs": seq[i:i + n], "if_steps": i})
        if st != 200:
            errors.append("%s: step at %d: %d %r" % (what, i, st, body))
            return
        got.extend(body["outputs"])
        i += n
        if i == cut:
            st, _, exp = d.request("GET", "/v1/sessions/%s/state" % sid)
            if st != 200 or exp.get("steps") != i:
                errors.append("%s: export: %d %r" % (what, st, exp))
                return
            d.request("DELETE", "/v1/sessions/%s" % sid)
            st, _, body = d.request("POST", "/v1/sessions", {
                "model": model, "state": exp["state"], "digest": exp["digest"]})
            if st != 201:
                errors.append("%s: reopen from export: %d %r" % (what, st, body))
                return
            sid = body["id"]
            st, _, body = d.request("PUT", "/v1/sessions/%s/state" % sid, exp)
            if st != 200 or body.get("steps") != i:    # the step count comes back too
                errors.append("%s: import: %d %r" % (what, st, body))
                return
    if final is not None:
        st, _, exp = d.request("GET", "/v1/sessions/%s/state" % sid)
        if st == 200:
            final.append(exp["state"])
        else:
            errors.append("%s: final export: %d %r" % (what, st, exp))
    d.request("DELETE", "/v1/sessions/%s" % sid)


def url_request(url, method="GET", path="/v1/models", body=None, timeout=5):
    """One request to the daemon or load balancer at URL ("http://HOST:PORT"): (status, the
    X-Rnnd-Node header or None, parsed JSON body or None); all None when the connection
    failed."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, None if body is None else json.dumps(body), hdrs)
        r = conn.getresponse()
        data = r.read()
        rh = {k.lower(): v for k, v in r.getheaders()}
        if "x-rnnd-node" in rh or rh.get("cache-control") == "no-store":  # rnnd's, not the LB's
            contract_check(method, path, r.status, rh, data)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return r.status, r.getheader("X-Rnnd-Node"), parsed
    except (OSError, http.client.HTTPException):
        return None, None, None
    finally:
        conn.close()
