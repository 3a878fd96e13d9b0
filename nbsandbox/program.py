"""What a program inside a store root is, as far as engines care.

Engines differ in what they can run: a preload engine needs a dynamically
linked program whose interpreter (ld.so) is in the store; nothing can run a
program whose ELF machine is foreign to the host.  :func:`inspect_program`
follows a script's shebang chain to the ELF file that will actually run.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

from nbsandbox.elf import ElfInfo, read_elf, read_shebang
from nbsandbox.errors import ElfError, StoreError
from nbsandbox.store import StoreRoot

_MAX_INTERPRETER_DEPTH = 4  # Linux allows a few levels of script interpreters


@dataclass(frozen=True)
class ProgramInfo:
    """Facts about the program a plan runs.

    ``path`` is the sandbox path; ``chain`` lists the scripts' interpreters
    followed to reach ``elf`` (empty for an ELF program).
    """

    path: str
    host_path: str
    elf: ElfInfo
    chain: tuple[str, ...] = field(default=())
    root: StoreRoot | None = field(default=None, compare=False)

    @property
    def is_script(self) -> bool:
        return bool(self.chain)

    @property
    def is_static(self) -> bool:
        return self.elf.is_static

    @property
    def is_go(self) -> bool:
        return self.elf.is_go

    @property
    def setuid(self) -> bool:
        return self.elf.setuid or self.elf.setgid

    @property
    def interpreter(self) -> str | None:
        """The ELF's dynamic loader (a sandbox path), or ``None`` for a static program."""
        return self.elf.interpreter

    def describe(self) -> str:
        kinds = []
        if self.is_script:
            kinds.append("script via " + " -> ".join(os.path.basename(c) for c in self.chain))
        kinds.append("Go" if self.is_go else ("static" if self.is_static else "dynamic"))
        kinds.append(f"{self.elf.machine} ELF")
        return ", ".join(kinds)


def host_machine() -> str:
    """The host's machine name as :mod:`nbsandbox.elf` spells it (``x86_64``, ``aarch64``...)."""
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64", "i686": "i386", "i586": "i386"}.get(
        machine, machine
    )


def inspect_program(root: StoreRoot, path: str) -> ProgramInfo:
    """Facts about the program at sandbox path ``path`` in ``root``.

    Raises :class:`StoreError` for a missing program or interpreter and
    :class:`ElfError` for a file that is neither ELF nor a script.
    """
    chain: list[str] = []
    current = path
    env_path = _store_path_dirs(root)
    for _ in range(_MAX_INTERPRETER_DEPTH + 1):
        resolved = root.resolve(current)
        host = root.to_host(resolved)
        if not host.exists():
            what = "interpreter" if chain else "program"
            raise StoreError(f"{what} {current} does not exist (looked at {host})")
        shebang = read_shebang(host)
        if shebang is None:
            try:
                elf = read_elf(host)
            except ElfError as exc:
                raise ElfError(f"{current}: {exc}") from None
            host_path = os.fspath(root.to_host(root.resolve(path)))
            return ProgramInfo(path, host_path, elf, tuple(chain), root)
        interpreter = shebang.interpreter
        if os.path.basename(interpreter) == "env" and shebang.argument:
            found = _which(root, shebang.argument.split()[0], env_path)
            if found is not None:
                chain.append(interpreter)
                interpreter = found
        chain.append(interpreter)
        current = interpreter
    raise ElfError(f"{path}: too many levels of script interpreters")


def _store_path_dirs(root: StoreRoot) -> list[str]:
    bin_dir = root.profile_bin()
    return [bin_dir] if bin_dir else []


def _which(root: StoreRoot, name: str, dirs: list[str]) -> str | None:
    for d in dirs:
        candidate = f"{d}/{name}"
        try:
            if root.to_host(root.resolve(candidate)).exists():
                return candidate
        except StoreError:
            continue
    return None
