"""Where the host's loader finds the driver: the linker cache, and ``ld.so.conf``.

* The linker cache, as ``ldconfig -p`` prints it.  Each line names a library,
  its ABI and annotations, and its path::

      libcuda.so.1 (libc6,x86-64, OS ABI: Linux 3.2.0) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
      libcuda.so.1 (libc6, hwcap: 0x0008000000000000) => /usr/lib32/libcuda.so.1

  Only this machine's own ABI is taken (``libc6,x86-64`` on x86-64, not the
  ``libc6`` of i386 nor the ``libc6,x32`` of x32); annotations (``hwcap:``,
  ``OS ABI:``) are not part of the ABI.  ``ldconfig`` is looked for on
  ``PATH``, then in ``/sbin`` and ``/usr/sbin`` (often not on a user's ``PATH``).
* The directories named by ``/etc/ld.so.conf``, the files it includes
  (``include`` lines, shell patterns relative to the including file) and
  ``/etc/ld.so.conf.d/*.conf``: a fallback for hosts whose cache was not
  rebuilt after the driver was installed (containers, images where a driver
  installer dropped an ``nvidia-*.conf``).  A file found there is taken only if
  its ELF header is this machine's (a 32-bit driver often sits next to the
  64-bit one).

Neither source looks into a toolkit's ``stubs`` directory.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

from nbsandbox.gpu.driver import is_driver_library, is_stub_path

LD_SO_CONF = "/etc/ld.so.conf"

#: Where ``ldconfig`` is looked for after ``PATH``.
LDCONFIG_DIRS = ("/sbin", "/usr/sbin")

#: The ABI ``ldconfig -p`` prints for this machine's own libraries, by ``uname -m``.
CACHE_ABIS: dict[str, tuple[str, ...]] = {
    "x86_64": ("libc6", "x86-64"),
    "aarch64": ("libc6", "AArch64"),
    "ppc64le": ("libc6", "64bit"),
    "ppc64": ("libc6", "64bit"),
    "s390x": ("libc6", "64bit"),
    "riscv64": ("libc6", "double-float"),
    **{f"i{n}86": ("libc6",) for n in (3, 4, 5, 6)},
}

#: (ELF class, data encoding, ``e_machine``) of this machine's own libraries.
ELF_ABIS: dict[str, tuple[int, int, int]] = {
    "x86_64": (2, 1, 62),
    "aarch64": (2, 1, 183),
    "ppc64le": (2, 1, 21),
    "ppc64": (2, 2, 21),
    "s390x": (2, 2, 22),
    "riscv64": (2, 1, 243),
    **{f"i{n}86": (1, 1, 3) for n in (3, 4, 5, 6)},
}

_CACHE_LINE = re.compile(r"^\s+(?P<name>\S+) \((?P<fields>[^)]*)\) => (?P<path>/.+)$")


# -- the linker cache ----------------------------------------------------------------------


def find_ldconfig() -> str | None:
    """``ldconfig``: on ``PATH``, else in :data:`LDCONFIG_DIRS`."""
    search = [os.environ.get("PATH", os.defpath), *LDCONFIG_DIRS]
    return shutil.which("ldconfig", path=os.pathsep.join(search))


def parse_cache(text: str, machine: str | None = None) -> list[tuple[str, str]]:
    """(name, path) of the driver libraries in ``ldconfig -p`` output ``text``, for
    ``machine`` (``uname -m``; default this one), in the cache's order.  On a machine
    not in :data:`CACHE_ABIS`, every ABI is taken."""
    want = CACHE_ABIS.get(machine or os.uname().machine)
    found = []
    for line in text.splitlines():
        m = _CACHE_LINE.match(line)
        if not m or not is_driver_library(m.group("name")) or is_stub_path(m.group("path")):
            continue
        abi = tuple(f.strip() for f in m.group("fields").split(",")
                    if f.strip() and ":" not in f)
        if want is not None and abi != want:
            continue
        found.append((m.group("name"), m.group("path").rstrip()))
    return found


def linker_cache(cache: str | None = None, machine: str | None = None) -> list[tuple[str, str]]:
    """(name, path) of the driver libraries in the linker cache (``ldconfig -p``; with
    ``cache``, that cache file instead), as :func:`parse_cache` reads them.  Nothing
    when there is no ``ldconfig`` or it fails (no cache, an unreadable one)."""
    ldconfig = find_ldconfig()
    if ldconfig is None:
        return []
    argv = [ldconfig, "-p"] + (["-C", cache] if cache else [])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=20, env={"PATH": os.defpath, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_cache(proc.stdout, machine)


# -- ld.so.conf ----------------------------------------------------------------------------


def conf_directories(conf: str = LD_SO_CONF) -> list[str]:
    """The directories named in ``conf`` and in the files it includes, in order, then
    those of ``conf``'s ``.d/*.conf`` files that it did not include.  Unreadable
    files are skipped, as the loader's ``ldconfig`` skips them."""
    dirs: list[str] = []
    seen: set[str] = set()
    _read_conf(conf, dirs, seen)
    for path in sorted(glob.glob(os.path.join(glob.escape(conf + ".d"), "*.conf"))):
        _read_conf(path, dirs, seen)
    return dirs


def _read_conf(path: str, dirs: list[str], seen: set[str]) -> None:
    key = os.path.realpath(path)
    if key in seen:  # each file once, so that an include loop ends
        return
    seen.add(key)
    try:
        text = Path(path).read_text(errors="replace")
    except (OSError, ValueError):
        return
    here = os.path.dirname(path)
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        words = line.split()
        if not words:
            continue
        if words[0] == "include" and len(words) > 1:
            for pattern in words[1:]:
                for included in sorted(glob.glob(os.path.join(here, pattern))):
                    _read_conf(included, dirs, seen)
            continue
        if words[0].lower() == "hwcap" and len(words) > 1:
            continue  # an obsolete directive, ignored by ldconfig too
        directory = line.split("=", 1)[0].strip()  # "DIR=TYPE": an old library type
        directory = os.path.normpath(directory) if directory.startswith("/") else ""
        if directory and directory not in dirs:
            dirs.append(directory)


def elf_abi(path: str) -> tuple[int, int, int] | None:
    """(class, data encoding, ``e_machine``) of the regular file ``path`` (through
    links), or ``None`` if it is not an ELF file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[5] not in (1, 2):
        return None
    order = "little" if head[5] == 1 else "big"
    return head[4], head[5], int.from_bytes(head[18:20], order)


def host_elf_abi(machine: str | None = None) -> tuple[int, int, int] | None:
    """This machine's :func:`elf_abi` (by ``uname -m``, else this process's own)."""
    return ELF_ABIS.get(machine or os.uname().machine) or elf_abi("/proc/self/exe")


def conf_libraries(conf: str = LD_SO_CONF,
                   machine: str | None = None) -> list[tuple[str, str]]:
    """(name, path) of the driver libraries in :func:`conf_directories` (not
    recursively), for this machine's ABI: the fallback for a cache without them."""
    want = host_elf_abi(machine)
    found = []
    for directory in conf_directories(conf):
        if is_stub_path(directory):
            continue
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if not is_driver_library(name):
                continue
            abi = elf_abi(path)
            if abi is not None and (want is None or abi == want):
                found.append((name, path))
    return found
