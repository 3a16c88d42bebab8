"""A time limit on running the source during verification (docs/convert.md
"Verification"): a torch forward() is the file's code, and one that never returns would hang
the converter; an ONNX graph run by onnx_run can be made to compute for hours. TorchScript
runs in C++, where no Python signal reaches it, so each run happens in a forked child that
the parent kills when the limit is spent. Once CUDA is initialised
in the process a fork cannot use it: the source then runs in a thread of this process, and
the converter refuses when the limit is spent (the thread is abandoned, and dies with the
process).

Standard library and NumPy only. The child sends its result back as an .npy (read with
allow_pickle=False) or an error message: nothing from the child is unpickled.
"""
import io
import os
import select
import signal
import sys
import threading
import time

import numpy as np

from .errors import ConvertError

# Seconds all runs of one source may take together; RNND_CONVERT_VERIFY_SECONDS overrides it
# (a slow machine, a large model, or a test).
VERIFY_SECONDS = 120.0


def _positive_setting(name, default, unit):
    """The environment setting NAME as a positive number, DEFAULT when unset."""
    v = os.environ.get(name)
    if not v:
        return default
    try:
        x = float(v)
        if x > 0:
            return x
    except ValueError:
        pass
    raise ConvertError("%s=%r: not a positive number of %s" % (name, v, unit))


def limit_seconds():
    return _positive_setting("RNND_CONVERT_VERIFY_SECONDS", VERIFY_SECONDS, "seconds")


def _child(run, args, w):
    try:
        y = np.asarray(run(*args), dtype=np.float64)
        buf = io.BytesIO()
        np.save(buf, y, allow_pickle=False)
        out = b"A" + buf.getvalue()
    except ConvertError as e:
        out = b"E" + str(e).encode("utf-8", "replace")
    except BaseException as e:      # noqa: B902 -- anything: the parent reports it
        out = b"E" + ("verification: running the source failed (%s: %s)"
                      % (type(e).__name__, (str(e).splitlines() or [""])[0])).encode()
    view = memoryview(out)
    while view:
        view = view[os.write(w, view):]


def _die_with(parent):
    """Have the kernel kill this child when its parent dies (Linux PR_SET_PDEATHSIG), so a
    converter killed while waiting leaves no forward() spinning behind it."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:      # the parent died before prctl
        os._exit(1)


def must_run_in_process():
    """Whether the source must run in this process: CUDA is initialised here, and does not
    survive fork()."""
    torch = sys.modules.get("torch")     # not imported: nothing initialised CUDA
    if torch is None:
        return False
    return bool(torch.cuda.is_available() and torch.cuda.is_initialized())


def _too_long(limit, what):
    return ConvertError("verification did not finish in %g s: %s runs too long or never "
                        "returns (RNND_CONVERT_VERIFY_SECONDS sets the limit; --no-verify, "
                        "verify=False in from_module, skips the check)" % (limit, what))


def _in_thread(run, args, deadline, limit, what):
    """RUN(*ARGS) in a daemon thread, waited for until DEADLINE (issue 14 A7: the limit
    holds where no child can be forked)."""
    box = {}

    def target():
        try:
            box["y"] = np.asarray(run(*args), dtype=np.float64)
        except ConvertError as e:
            box["e"] = e
        except BaseException as e:      # noqa: B902 -- anything: reported below
            box["e"] = ConvertError("verification: running the source failed (%s: %s)"
                                    % (type(e).__name__, (str(e).splitlines() or [""])[0]))
    t = threading.Thread(target=target, name="rnnd-verify-source", daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if t.is_alive():
        raise _too_long(limit, what)
    if "e" in box:
        raise box["e"]
    return box["y"]


def bounded(run, in_process=None, what="the source's forward()"):
    """RUN (x, ... -> array) run in a forked child per call, all calls within limit_seconds()
    from the first; raises ConvertError "verification did not finish in N s: WHAT runs too
    long" when the limit is spent (the child is killed). IN_PROCESS (None:
    must_run_in_process() at each call) runs it in a thread of this process instead, under
    the same limit. Used for torch sources and, without torch, for an ONNX graph run by
    onnx_run (issue 14, sixth round, M2)."""
    state = {}

    def call(*args):
        # an ONNX graph's run (onnx_run) is NumPy alone: torch is not imported for it
        # (seconds), and a child of a process without torch has no torch threads to limit
        torch = sys.modules.get("torch")
        limit = limit_seconds()
        deadline = state.setdefault("deadline", time.monotonic() + limit)
        if in_process or (in_process is None and must_run_in_process()):
            return _in_thread(run, args, deadline, limit, what)
        r, w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:            # the child: run, send, leave without the parent's clean-up
            code = 0
            try:
                os.close(r)
                _die_with(parent)
                if torch is not None:
                    torch.set_num_threads(1)
                _child(run, args, w)
            except BaseException:   # noqa: B902
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        data = bytearray()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    raise _too_long(limit, what)
                b = os.read(r, 1 << 20)
                if not b:
                    break
                data += b
        finally:
            os.close(r)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        if data[:1] == b"A":
            return np.load(io.BytesIO(bytes(data[1:])), allow_pickle=False)
        if data[:1] == b"E":
            raise ConvertError(bytes(data[1:]).decode("utf-8", "replace"))
        raise ConvertError("verification: running the source's forward() ended its process "
                           "without a result")
    return call


# GiB of address space torch's loader may take beyond what the converter maps already and the
# archive's declared size (trial21 C4: code made to parse for minutes took 2.6 GB; a scripted
# LSTM's load takes tens of MiB); RNND_CONVERT_LOAD_GIB overrides it.
LOAD_GIB = 4.0
_NO_MEMORY = 3          # the child's exit status when the load ran out of address space


def load_gib():
    return _positive_setting("RNND_CONVERT_LOAD_GIB", LOAD_GIB, "GiB")


def _cap_memory(limit):
    """Cap this process's address space at what it maps now plus LIMIT bytes."""
    import resource
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + limit, mapped + limit))


def _out_of_memory(e):
    return isinstance(e, MemoryError) or "alloc" in str(e).split("\n")[0].lower()


def survives(run, what, size=0):
    """Run RUN() once in a forked child, and raise ConvertError "WHAT crashed (signal N,
    NAME) ..." if the child dies of a signal: for torch's loader, which parses the file's
    code in C++, where a crash would end the converter without a word (trial20 C1). The
    child runs within limit_seconds() ("WHAT did not finish in N s") and with at most
    load_gib() GiB plus SIZE bytes (the archive's declared size) more address space than
    this process maps ("WHAT needed more than N GiB"; trial21 C4). Whatever else RUN
    returns or raises is dropped: the caller runs it again in this process, where its
    errors are reported. Skipped where CUDA is initialised (must_run_in_process)."""
    if must_run_in_process():
        return
    limit = limit_seconds()
    gib = load_gib()
    torch = sys.modules.get("torch")
    parent = os.getpid()
    r, w = os.pipe()            # closed by the child's exit: the parent waits on it
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            _die_with(parent)
            try:
                import resource
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))    # no core file
            except (ImportError, OSError, ValueError):
                pass
            if torch is not None:
                torch.set_num_threads(1)
            _cap_memory(int(gib * (1 << 30)) + size)
            try:
                run()
            except BaseException as e:     # noqa: B902 -- reported by the run in the parent
                code = _NO_MEMORY if _out_of_memory(e) else 1
        except BaseException:   # noqa: B902
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    try:
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise ConvertError("%s did not finish in %g s reading it: code made to take "
                                   "that long; rnnd-convert refuses it "
                                   "(RNND_CONVERT_VERIFY_SECONDS sets the limit)"
                                   % (what, limit))
            if not os.read(r, 1 << 10):
                break
        _, status = os.waitpid(pid, 0)
    except BaseException:       # noqa: B902 -- interrupted or refused: leave no child behind
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise
    finally:
        os.close(r)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _NO_MEMORY:
        raise ConvertError("%s needed more than %g GiB reading it (beyond the archive's %d MiB): "
                           "code made to exhaust memory; rnnd-convert refuses it "
                           "(RNND_CONVERT_LOAD_GIB sets the limit)" % (what, gib, size >> 20))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown"
        raise ConvertError("%s crashed (signal %d, %s) reading it: a damaged file, or one made "
                           "to crash it; rnnd-convert refuses it" % (what, sig, name))
