"""Facts about the host that can change a notebook's results.

Programs from a pack bring their own libraries, but still run on this
kernel and this CPU: numerical libraries pick code paths by CPU features
(AVX2, AVX-512, FMA change floating-point results in the last bits), and the
``host`` engine runs with the host's own glibc.  These facts are recorded
with the notebook and shown next to a difference, not compared.
"""

from __future__ import annotations

import hashlib
import os
import platform

#: CPU features worth naming in the summary (they select numerical code paths).
NOTABLE_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                 "avx512_bf16", "amx_tile", "sha_ni", "aes", "asimd", "sve", "sve2", "atomics")

# x86-64 micro-architecture levels (psABI), by the flags /proc/cpuinfo shows.
_X86_LEVELS = (
    ("x86-64-v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
    ("x86-64-v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)


def _cpuinfo() -> tuple[str, set[str]]:
    names: dict[str, str] = {}
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model", "hardware", "cpu part"):
                    names.setdefault(key, value.strip())
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
                elif not line.strip() and names and flags:
                    break  # the first processor is enough
    except OSError:
        pass
    model = next((names[k] for k in ("model name", "cpu model", "hardware", "cpu part")
                  if names.get(k)), "")
    return model or platform.processor() or "unknown", flags


def x86_level(flags: set[str]) -> str | None:
    """The highest x86-64 level whose flags are all present (None when not x86-64)."""
    if platform.machine() != "x86_64":
        return None
    level = "x86-64"
    for name, needed in _X86_LEVELS:
        if not needed <= flags:
            break
        level = name
    return level


def host_glibc() -> str | None:
    """The host's glibc version (``2.36``), or None when the host's C library is another."""
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return None
    return value.split()[-1] if value and value.startswith("glibc") else None


def collect(*, host_engine: bool = False) -> dict[str, object]:
    """The host facts, as recorded under ``metadata.nbsandbox.host``.

    ``host_engine``: the ``host`` engine ran something, so the host's glibc
    mattered and is recorded too.
    """
    model, flags = _cpuinfo()
    facts: dict[str, object] = {
        "system": platform.system(),
        "kernel_release": platform.release(),
        "machine": platform.machine(),
        "cpu_model": model,
        "cpu_count": os.cpu_count() or 1,
        "cpu_flags": {
            "level": x86_level(flags),
            "notable": [f for f in NOTABLE_FLAGS if f in flags],
            "count": len(flags),
            "sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
        },
    }
    if host_engine:
        facts["glibc"] = host_glibc()
    return facts


def differences(recorded: dict[str, object], here: dict[str, object]) -> list[str]:
    """Short lines naming the facts that differ between the recorded host and this one."""
    out = []
    for key in ("kernel_release", "machine", "cpu_model", "cpu_count", "glibc"):
        if key in recorded and key in here and recorded[key] != here[key]:
            out.append(f"{key}: {recorded[key]} then, {here[key]} here")
    a, b = recorded.get("cpu_flags"), here.get("cpu_flags")
    if isinstance(a, dict) and isinstance(b, dict):
        for key in ("level", "notable"):
            if a.get(key) != b.get(key):
                out.append(f"cpu {key}: {a.get(key)} then, {b.get(key)} here")
    return out
