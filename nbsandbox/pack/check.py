"""Is a store root complete and hermetic?

:func:`check_root` looks at every file of the store as the sandbox will see
it (the store at its prefix) and reports each reference that leaves the
store or finds nothing:

- an ELF interpreter (``PT_INTERP``) outside the prefix or missing;
- a ``DT_RUNPATH``/``DT_RPATH`` entry outside the prefix (``$ORIGIN``
  entries must land inside it);
- a program (an ELF file with an interpreter) that needs a library the store
  lacks, directly or through its libraries, searched as the loader would
  (nbsandbox.hermetic): under engines that let the loader see the host's
  directories, the host's copy would be loaded;
- a ``DT_NEEDED`` library of a shared library that its own search path does
  not find in the store (nor, when it has no ``DT_RUNPATH``, the ``DT_RPATH``
  of any program of the store, which the loader applies to what a program
  loads).  Libraries of glibc that sit next to the store's loader count as
  found: every program loads ``libc.so.6`` first, and the loader reuses a
  library already loaded under the same name;
- an executable script whose ``#!`` interpreter is outside the prefix;
- a symlink whose target leaves the prefix.

ELF files of another machine than the store's loader (a wheel's helper for
another architecture) and object files are not loadable here and are skipped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from nbsandbox import hermetic
from nbsandbox.elf import ElfInfo, is_elf, read_elf, read_shebang
from nbsandbox.errors import ElfError, StoreError
from nbsandbox.pack.closure import Resolver, expand_tokens
from nbsandbox.pack.glibc import SONAMES
from nbsandbox.store import StoreRoot


def _walk(top: str) -> Iterator[tuple[str, os.stat_result]]:
    for dirpath, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            try:
                yield path, os.lstat(path)
            except OSError:
                continue


class _Checker:
    def __init__(self, root: StoreRoot) -> None:
        self.root = root
        self.prefix = root.prefix
        self.problems: list[str] = []
        self._host_resolver: Resolver | None = None
        self.libraries = hermetic.StoreLibraries(root)
        self.program_rpath: list[str] = []  # DT_RPATH of the store's programs

    def problem(self, sandbox_path: str, text: str) -> None:
        self.problems.append(f"{sandbox_path}: {text}")

    def exists(self, sandbox_path: str) -> bool:
        """Whether a sandbox path exists inside the root, following links as the sandbox does."""
        if not self.root.in_store(sandbox_path):
            return False
        try:
            resolved = self.root.resolve(sandbox_path)
        except StoreError:
            return False
        return self.root.in_store(resolved) and os.path.exists(self.root.to_host(resolved))

    def in_prefix(self, path: str) -> bool:
        return self.root.in_store(os.path.normpath(path))

    def host_find(self, name: str, machine: str, elf_class: int) -> str | None:
        if self._host_resolver is None or (self._host_resolver.machine, self._host_resolver.
                                           elf_class) != (machine, elf_class):
            self._host_resolver = Resolver(machine, elf_class)
        return self._host_resolver.find(name, [])

    def run(self) -> list[str]:
        elves: dict[str, ElfInfo] = {}
        for host, st in _walk(os.fspath(self.root.store_dir)):
            sandbox = self.root.to_sandbox(host)
            if stat.S_ISLNK(st.st_mode):
                self.check_link(sandbox, os.readlink(host))
            elif stat.S_ISREG(st.st_mode):
                if is_elf(host):
                    try:
                        elves[sandbox] = read_elf(host)
                    except ElfError as exc:
                        self.problem(sandbox, f"unreadable ELF file ({exc})")
                elif st.st_mode & 0o111:
                    self.check_script(sandbox, host)
        loaders = {info.interpreter for info in elves.values() if info.interpreter}
        kinds = self.store_kinds(elves, loaders)
        glibc_dirs = {os.path.dirname(loader) for loader in loaders}
        loader_names = {os.path.basename(loader) for loader in loaders}
        for sandbox, info in elves.items():
            if info.interpreter and not info.runpath:
                for entry in info.rpath:
                    expanded = os.path.normpath(
                        expand_tokens(entry, os.path.dirname(sandbox), "lib", info.machine))
                    if self.in_prefix(expanded) and expanded not in self.program_rpath:
                        self.program_rpath.append(expanded)
        for sandbox in sorted(elves):
            info = elves[sandbox]
            if info.kind not in ("executable", "shared"):
                continue
            if kinds and (info.machine, info.elf_class) not in kinds:
                continue  # not loadable by this store's loader
            self.check_elf(sandbox, info, glibc_dirs, loader_names)
        return self.problems

    def store_kinds(self, elves: dict[str, ElfInfo], loaders: set[str]) -> set[tuple[str, int]]:
        kinds = set()
        for loader in loaders:
            try:
                info = elves.get(self.root.resolve(loader))
            except StoreError:
                info = None
            if info is not None:
                kinds.add((info.machine, info.elf_class))
        return kinds

    def check_link(self, sandbox: str, target: str) -> None:
        full = target if target.startswith("/") else os.path.join(os.path.dirname(sandbox), target)
        if not self.in_prefix(full):
            self.problem(sandbox, f"symlink to {target}, outside {self.prefix}")

    def check_script(self, sandbox: str, host: str) -> None:
        shebang = read_shebang(host)
        if shebang is None:
            return
        if not self.in_prefix(shebang.interpreter):
            self.problem(sandbox, f"#! interpreter {shebang.interpreter} is outside {self.prefix}")
        elif not self.exists(shebang.interpreter):
            self.problem(sandbox, f"#! interpreter {shebang.interpreter} is missing from the store")

    def check_elf(self, sandbox: str, info: ElfInfo, glibc_dirs: set[str],
                  loader_names: set[str]) -> None:
        if info.interpreter is not None:
            interp = info.interpreter
            if not self.in_prefix(interp):
                self.problem(sandbox, f"ELF interpreter {interp} is outside {self.prefix}")
            elif not self.exists(interp):
                self.problem(sandbox, f"ELF interpreter {interp} is missing from the store")
        origin = os.path.dirname(sandbox)
        search = info.runpath or info.rpath
        dirs: list[str] = []
        for entry in search:
            expanded = os.path.normpath(expand_tokens(entry, origin, "lib", info.machine))
            kind = "RUNPATH" if info.runpath else "RPATH"
            if not expanded.startswith("/"):
                self.problem(sandbox, f"{kind} entry {entry} is relative to the working directory")
            elif not self.in_prefix(expanded):
                self.problem(sandbox, f"{kind} entry {entry} is outside {self.prefix}")
            else:
                dirs.append(expanded)
        if info.interpreter is not None:
            if self.in_prefix(info.interpreter):
                self.check_program(sandbox)
                return
        elif not info.runpath:
            dirs += self.program_rpath
        for name in info.needed:
            if any(self.exists(f"{d}/{name}") for d in dirs):
                continue
            if name in loader_names:
                continue  # the loader itself, always loaded first
            if name in SONAMES and any(self.exists(f"{d}/{name}") for d in glibc_dirs):
                continue
            host = self.host_find(name, info.machine, info.elf_class)
            if host is not None:
                self.problem(sandbox, f"needs {name}, found only on the host ({host})")
            else:
                self.problem(sandbox, f"needs {name}, which is not in the store")


    def check_program(self, sandbox: str) -> None:
        for m in self.libraries.missing(sandbox):
            via = "" if m.needer == sandbox else f" (for {m.needer})"
            if m.host is not None:
                self.problem(sandbox, f"needs {m.name}{via}, found only on the host ({m.host})")
            else:
                self.problem(sandbox, f"needs {m.name}{via}, which is not in the store")


def check_root(root: StoreRoot) -> list[str]:
    """Problems that make ``root`` incomplete or not hermetic; empty when it is both."""
    return _Checker(root).run()
