"""The SIMD paths a test runs: those this CPU must run, from its flags (what src/kernels.c
checks through CPUID). A path the CPU lacks cannot be run here and is named as not run; one it
has must pass, so a kernel-selection bug cannot hide as a missing feature."""

import platform

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
