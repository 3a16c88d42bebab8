"""What tests/test_memory.py and tests/test_memory_sessions.py share: the sanitizer build's
looser bounds, random native-spec models, and the peak-RSS (VmHWM) measure of an attack."""
import json
import os
import subprocess
import time

import numpy as np

from daemon_util import PYTHON3

MIB = 1 << 20


def asan_build():
    out = subprocess.run(["ldd", os.environ["RNND_BIN"]], capture_output=True, text=True).stdout
    return "libasan" in out


ASAN = asan_build()
# Under ASan each block carries redzones, shadow memory and a quarantine: bounds are looser.
SLACK = (160 if ASAN else 24) * MIB
FACTOR = 3 if ASAN else 1


def env():
    e = dict(os.environ)
    if ASAN:
        e["ASAN_OPTIONS"] = (e.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=16").lstrip(":")
    return e


def write_model(work, name, arch, seed=1):
    """A native spec with random weights, converted by the project's converter."""
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


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def code_of(j):
    return j.get("error", {}).get("code") if isinstance(j, dict) else None


def attack(C, d, name, fn, bound):
    """Run FN against D; check the peak RSS growth stays under BOUND bytes."""
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
    C.check(grew <= bound, "%s: peak RSS growth %d MiB within %d MiB"
            % (name, grew // MIB, bound // MIB))
    s, _, _ = d.request("GET", "/healthz")
    C.eq(s, 200, "%s: the daemon serves on" % name)
