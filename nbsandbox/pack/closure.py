"""Find shared libraries the way the dynamic loader does, without running it.

For each ``DT_NEEDED`` of an object, glibc's ``ld.so`` looks (``man 8 ld.so``):

1. in the object's ``DT_RPATH`` and in those of the objects that loaded it,
   unless the object has a ``DT_RUNPATH``;
2. in ``LD_LIBRARY_PATH`` (ignored here: a pack must not depend on it);
3. in the object's ``DT_RUNPATH``;
4. in ``/etc/ld.so.cache``;
5. in the default directories (``/lib``, ``/usr/lib`` and their 64-bit or
   multiarch forms).

``$ORIGIN`` (the object's directory), ``$LIB`` and ``$PLATFORM`` are expanded.
A candidate counts only if it is an ELF file of the same machine and class,
as the loader skips the others.  Libraries in ``glibc-hwcaps`` directories
are skipped so that a pack does not require the build host's CPU level.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from nbsandbox.elf import ElfInfo, is_elf, read_elf
from nbsandbox.errors import ElfError

_CACHE_LINE = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S.*)$")
_TOKEN = re.compile(r"\$(ORIGIN|LIB|PLATFORM)\b|\$\{(ORIGIN|LIB|PLATFORM)\}")

_MULTIARCH = {
    ("x86_64", 64): "x86_64-linux-gnu",
    ("i386", 32): "i386-linux-gnu",
    ("aarch64", 64): "aarch64-linux-gnu",
    ("arm", 32): "arm-linux-gnueabihf",
    ("ppc64le", 64): "powerpc64le-linux-gnu",
    ("s390x", 64): "s390x-linux-gnu",
    ("riscv64", 64): "riscv64-linux-gnu",
}


@dataclass(frozen=True)
class Found:
    needed: str
    path: str | None
    """Host path the loader would open, or None when it finds nothing."""


def expand_tokens(entry: str, origin: str, lib: str, platform: str) -> str:
    def sub(m: re.Match[str]) -> str:
        token = m.group(1) or m.group(2)
        return {"ORIGIN": origin, "LIB": lib, "PLATFORM": platform}[token]

    return _TOKEN.sub(sub, entry)


def read_ld_so_cache() -> dict[str, list[str]]:
    """Library name -> paths, from ``ldconfig -p`` (empty when there is no ldconfig)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/sbin", "/usr/sbin"])
    ldconfig = shutil.which("ldconfig", path=search)
    if ldconfig is None:
        return {}
    try:
        proc = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=60,
                              check=False, errors="surrogateescape")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    cache: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        m = _CACHE_LINE.match(line)
        if m:
            cache.setdefault(m.group(1), []).append(m.group(3).strip())
    return cache


class Resolver:
    """Resolve ``DT_NEEDED`` entries for objects of one machine and class."""

    def __init__(self, machine: str, elf_class: int, multiarch: str = "",
                 cache: dict[str, list[str]] | None = None) -> None:
        self.machine = machine
        self.elf_class = elf_class
        self.multiarch = multiarch or _MULTIARCH.get((machine, elf_class), "")
        self.cache = read_ld_so_cache() if cache is None else cache
        self._elf: dict[str, ElfInfo | None] = {}
        dirs: list[str] = []
        if self.multiarch:
            dirs += [f"/lib/{self.multiarch}", f"/usr/lib/{self.multiarch}"]
        if elf_class == 64:
            dirs += ["/lib64", "/usr/lib64"]
        else:
            dirs += ["/lib32", "/usr/lib32"]
        dirs += ["/lib", "/usr/lib"]
        self.default_dirs = tuple(dirs)
        if self.multiarch and os.path.isdir(f"/usr/lib/{self.multiarch}"):
            self.lib_token = f"lib/{self.multiarch}"
        else:
            self.lib_token = "lib64" if elf_class == 64 else "lib"

    def info(self, path: str) -> ElfInfo | None:
        """ELF facts of a host file (cached); None if it is not a readable ELF file."""
        real = os.path.realpath(path)
        if real not in self._elf:
            try:
                self._elf[real] = read_elf(real) if is_elf(real) else None
            except ElfError:
                self._elf[real] = None
        return self._elf[real]

    def compatible(self, path: str) -> bool:
        info = self.info(path)
        return (info is not None and info.machine == self.machine
                and info.elf_class == self.elf_class and info.kind == "shared")

    def expand(self, entries: tuple[str, ...], origin: str) -> list[str]:
        return [os.path.normpath(expand_tokens(e, origin, self.lib_token, self.machine))
                for e in entries]

    def own_rpath(self, info: ElfInfo, loaded_from: str) -> tuple[str, ...]:
        """The RPATH directories an object passes on to what it loads (none with RUNPATH)."""
        if info.runpath:
            return ()
        return tuple(self.expand(info.rpath, os.path.dirname(loaded_from)))

    def dependencies(self, info: ElfInfo, loaded_from: str,
                     inherited_rpath: tuple[str, ...] = ()) -> list[Found]:
        """Where each ``DT_NEEDED`` of the object ``loaded_from`` is found on this host."""
        origin = os.path.dirname(loaded_from)
        if info.runpath:
            dirs = self.expand(info.runpath, origin)
        else:
            dirs = self.expand(info.rpath, origin) + list(inherited_rpath)
        return [Found(name, self.find(name, dirs)) for name in info.needed]

    def find(self, name: str, dirs: list[str]) -> str | None:
        if "/" in name:
            return name if self.compatible(name) else None
        for d in dirs:
            candidate = os.path.join(d, name)
            if os.path.exists(candidate) and self.compatible(candidate):
                return candidate
        for candidate in self.cache.get(name, ()):
            if "/glibc-hwcaps/" in candidate:
                continue
            if os.path.exists(candidate) and self.compatible(candidate):
                return candidate
        for d in self.default_dirs:
            candidate = os.path.join(d, name)
            if os.path.exists(candidate) and self.compatible(candidate):
                return candidate
        return None
