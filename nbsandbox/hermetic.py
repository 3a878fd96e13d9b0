"""Which libraries a store program would have to take from outside its store.

:class:`StoreLibraries` follows a store program's ``DT_NEEDED`` entries
through the store the way glibc's loader does (``DT_RPATH`` of the object
and of the objects that loaded it unless it has a ``DT_RUNPATH``; then its
``DT_RUNPATH``), looking only inside the store.  glibc's own libraries next
to the store's loader count as found, as the loader's default directory in a
store.  What it does not find is a library the store lacks: depending on the
engine, the loader either fails to start the program or takes the host's
copy, through the host's ``ld.so.cache`` or its default directories.

``nbsandbox check ROOT`` names every store program with such a library, and
a launch under an engine that lets the loader see the host's directories
says so in one line (:func:`host_library_warning`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from nbsandbox.elf import ElfInfo, is_elf, read_elf
from nbsandbox.errors import ElfError, StoreError
from nbsandbox.pack.closure import Resolver, expand_tokens
from nbsandbox.pack.glibc import SONAMES
from nbsandbox.store import StoreRoot


@dataclass(frozen=True)
class Missing:
    """A library that a store object needs and the store does not have."""

    needer: str
    """Sandbox path of the object whose ``DT_NEEDED`` it is."""
    name: str
    host: str | None
    """The host file the loader would take instead, if the host has one."""


class StoreLibraries:
    """Look up store programs' libraries inside one root (ELF facts are cached)."""

    def __init__(self, root: StoreRoot) -> None:
        self.root = root
        self._info: dict[str, ElfInfo | None] = {}
        self._host: dict[tuple[str, int], Resolver] = {}

    def info(self, sandbox_path: str) -> ElfInfo | None:
        """ELF facts of a store file (its sandbox path), or None when it is not one."""
        if sandbox_path not in self._info:
            try:
                resolved = self.root.resolve(sandbox_path)
                host = self.root.to_host(resolved)
                ok = self.root.in_store(resolved) and host.is_file() and is_elf(host)
                self._info[sandbox_path] = read_elf(host) if ok else None
            except (OSError, StoreError, ElfError):
                self._info[sandbox_path] = None
        return self._info[sandbox_path]

    def find(self, name: str, dirs: list[str], machine: str, elf_class: int) -> str | None:
        """The first ``DIR/name`` in the store that the loader would take."""
        candidates = [name] if "/" in name else [f"{d}/{name}" for d in dirs]
        for candidate in candidates:
            candidate = os.path.normpath(candidate)
            if not self.root.in_store(candidate):
                continue
            info = self.info(candidate)
            if info is not None and (info.machine, info.elf_class) == (machine, elf_class):
                return candidate
        return None

    def host_copy(self, name: str, machine: str, elf_class: int) -> str | None:
        """Where the host's loader cache or default directories have ``name``."""
        key = (machine, elf_class)
        if key not in self._host:
            self._host[key] = Resolver(machine, elf_class)
        return self._host[key].find(name, [])

    def _dirs(self, entries: tuple[str, ...], origin: str, machine: str) -> list[str]:
        return [os.path.normpath(expand_tokens(e, origin, "lib", machine)) for e in entries]

    def missing(self, program: str) -> list[Missing]:
        """Libraries the store program at sandbox path ``program`` (an ELF file) needs
        and the store lacks, in the order the loader meets them."""
        exe = self.info(program)
        if exe is None or not exe.interpreter:
            return []
        machine, elf_class = exe.machine, exe.elf_class
        loader = os.path.basename(exe.interpreter)
        try:
            glibc_dir = os.path.dirname(self.root.resolve(exe.interpreter))
        except StoreError:
            glibc_dir = os.path.dirname(exe.interpreter)
        seen = {loader}
        found: list[Missing] = []
        # (object, its info, RPATH directories of the objects that loaded it)
        queue: list[tuple[str, ElfInfo, list[str]]] = [(program, exe, [])]
        while queue:
            path, info, inherited = queue.pop(0)
            origin = os.path.dirname(path)
            if info.runpath:
                dirs = self._dirs(info.runpath, origin, machine)
                passed_on = inherited
            else:
                own = self._dirs(info.rpath, origin, machine)
                dirs = own + inherited
                passed_on = dirs
            for name in info.needed:
                if name in seen:
                    continue
                seen.add(name)
                where = self.find(name, dirs, machine, elf_class)
                if where is None and name in SONAMES:
                    where = self.find(name, [glibc_dir], machine, elf_class)
                if where is None:
                    found.append(Missing(path, name, self.host_copy(name, machine, elf_class)))
                    continue
                dep = self.info(where)
                if dep is not None:
                    queue.append((where, dep, passed_on))
        return found


@functools.lru_cache(maxsize=64)
def _missing(root_path: str, prefix: str, program: str, store_mtime: int) -> tuple[Missing, ...]:
    """StoreLibraries.missing, remembered while the store's items stay the same
    (front ends that launch often, such as %%sandbox in a kernel, ask again and again)."""
    return tuple(StoreLibraries(StoreRoot(Path(root_path), prefix)).missing(program))


def host_library_warning(root: StoreRoot, program: str, engine: str) -> str | None:
    """One line for a launch whose program needs libraries the store lacks, or None.

    ``program`` is the sandbox path of the ELF file that runs (a script's
    interpreter).  For engines under which the loader sees the host's
    directories: the host's copies would be loaded without a word otherwise.
    """
    try:
        store_mtime = root.store_dir.stat().st_mtime_ns
    except OSError:
        return None
    missing = _missing(str(root.path), root.prefix, program, store_mtime)
    if not missing:
        return None
    names = sorted({m.name for m in missing})
    hosts = [m.host for m in missing if m.host]
    listed = ", ".join(names)
    what = "is" if len(names) == 1 else "are"
    if hosts:
        taken = (f"the host's {hosts[0]} will be loaded" if len(hosts) == 1 else
                 f"the host's copies ({', '.join(hosts)}) will be loaded")
    else:
        taken = "the program will not start"
    return (f"nbsandbox: warning: {os.path.basename(program)} needs {listed}, which {what} not "
            f"in the store; under {engine} {taken} (nbsandbox check {root.path} lists every "
            "such program)")
