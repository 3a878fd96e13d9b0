"""Self-running packs: every program of a pack's ``bin/`` runs without nbsandbox.

A pack made by ``nbsandbox pack`` holds, beside its store::

    .nbsandbox/nbs-launch       nbsandbox's launcher, statically linked
    .nbsandbox/nbs-audit.so     the fakechroot engine's audit module
    .nbsandbox/nbs-preload.so   and preload library
    .nbsandbox/launch.conf      what the wrappers need to know (below)
    bin/NAME                    a hard link to .nbsandbox/nbs-launch for
                                every program of the profile, and
    bin/nbsandbox-kernel-install

Started as ``<root>/bin/NAME`` (directly or through a symbolic link: the
kernel resolves those, and the launcher reads its own path from
``/proc/self/exe``), the launcher finds the root two levels up and starts
``<profile>/bin/NAME`` through the engine ``NBSANDBOX_ENGINE`` names, with
the same chains and diagnoses as :mod:`nbsandbox.engines`
(``native/launch/wrap.c``).

``launch.conf`` records what does not depend on where the pack is: the
prefix, the profile and, per program, how the fakechroot engine starts it
(the ELF file behind its ``#!`` lines and symbolic links, that file's loader
and the loader's options), computed here with the fakechroot engine's own
functions.  Paths on the host are computed by the launcher at every start, so
a pack keeps working when it is moved.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from nbsandbox.elf import read_elf
from nbsandbox.engines.fakechroot import (
    FakechrootEngine,
    _escape,
    _exec_chain,
    _glibc_env,
    ldso_features,
)
from nbsandbox.errors import NbsandboxError
from nbsandbox.native import native_path
from nbsandbox.program import inspect_program
from nbsandbox.store import StoreRoot

LAUNCHER = ".nbsandbox/nbs-launch"
AUDIT = ".nbsandbox/nbs-audit.so"
PRELOAD = ".nbsandbox/nbs-preload.so"
CONF = ".nbsandbox/launch.conf"
CONF_HEADER = "nbs-launch-pack 1"
KERNEL_INSTALL = "nbsandbox-kernel-install"
#: Names the launcher keeps for itself (native/launch/wrap.c: wrap_invoked).
RESERVED = ("nbs-launch",)
KERNEL_FILES = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")


def _program_line(root: StoreRoot, name: str) -> tuple[list[str], str | None]:
    """``program`` (and ``refuse``) records for the profile program ``name``, and its
    loader (a sandbox path) when the fakechroot engine can start it."""
    program = root.find_program(name)
    refuse = None
    try:
        info = inspect_program(root, program)
        refuse = FakechrootEngine().refuses(info)
        argv0, pre, elf_path = _exec_chain(root, program, [program],
                                           {"PATH": root.profile_bin() or ""})
        elf_sbx = root.resolve(elf_path)
        interp = read_elf(root.to_host(elf_sbx)).interpreter
    except NbsandboxError as exc:
        return [f"program {_escape(name)} {_escape(program)} - - 0",
                f"refuse {_escape(name)} {_escape(str(exc))}"], None
    ldso = root.resolve(interp) if interp and root.in_store(interp) else None
    features = 0
    if ldso is not None and root.to_host(ldso).is_file():
        features = ldso_features(os.fspath(root.to_host(ldso)))
    elif refuse is None:
        refuse = f"{elf_sbx} has no loader in the store {root.prefix}"
    words = ["program", _escape(name), _escape(elf_sbx),
             "-" if argv0 == program else _escape(argv0),
             _escape(ldso) if ldso and refuse is None else "-", str(features),
             *(_escape(p) for p in pre)]
    lines = [" ".join(words)]
    if refuse is not None:
        lines.append(f"refuse {_escape(name)} {_escape(refuse)}")
    return lines, (ldso if refuse is None else None)


def _glibc_defaults(root: StoreRoot, ldsos: set[str]) -> list[str]:
    """``glibc-default`` records: the store glibc's own GCONV_PATH and LOCPATH, used
    when the caller sets none (as the fakechroot engine's ``_glibc_env``)."""
    lines = []
    for ldso in sorted(ldsos):
        for name, value in _glibc_env(root, ldso, {}).items():
            sandbox = root.to_sandbox(value)
            lines.append(f"glibc-default {_escape(ldso)} {name} {_escape(sandbox)}")
    return lines


def _kernel_lines(root: StoreRoot, names: list[str]) -> list[str]:
    from nbsandbox.kernelspec import find_package, python_version

    ipykernel = find_package(root, "ipykernel")
    python = next((n for n in ("python3", "python") if n in names), None)
    if ipykernel is None or python is None:
        return []
    version = python_version(ipykernel)
    binary = root.metadata.python if root.metadata else None
    found = re.search(r"python(\d+\.\d+)$", binary or "")
    version = version or (found.group(1) if found else "3")
    lines = [f"kernel {python} python {_escape(f'Python {version}')}"]
    for logo in KERNEL_FILES:
        if (ipykernel / "resources" / logo).is_file():
            lines.append(f"kernel-file {_escape(root.to_sandbox(ipykernel / 'resources' / logo))}")
    return lines


def wrapped_programs(root: StoreRoot) -> list[str]:
    """The profile programs that get a wrapper in ``bin/``."""
    return [n for n in root.profile_programs()
            if n not in RESERVED and not n.startswith("nbs-launch.") and n != KERNEL_INSTALL]


def launch_conf(root: StoreRoot) -> str:
    """The text of ``.nbsandbox/launch.conf`` for ``root``."""
    profile = root.metadata.profile if root.metadata else None
    if profile is None:
        raise NbsandboxError(f"{root.path} has no profile to make wrappers for")
    names = wrapped_programs(root)
    lines = [CONF_HEADER, f"prefix {_escape(root.prefix)}", f"profile {_escape(profile)}"]
    ldsos: set[str] = set()
    for name in names:
        records, ldso = _program_line(root, name)
        lines += records
        if ldso is not None:
            ldsos.add(ldso)
    lines += _glibc_defaults(root, ldsos)
    lines += _kernel_lines(root, names)
    return "\n".join(lines) + "\n"


def install_wrappers(top: Path, prefix: str) -> list[str]:
    """Turn the ``bin`` link of a freshly built root at ``top`` into wrappers; their names."""
    root = StoreRoot.open(top, prefix=prefix)
    conf = launch_conf(root)
    names = wrapped_programs(root)
    meta = top / ".nbsandbox"
    launcher = top / LAUNCHER
    shutil.copyfile(native_path("nbs-launch"), launcher)
    os.chmod(launcher, 0o755)
    for rel, name in ((AUDIT, "nbs-audit.so"), (PRELOAD, "nbs-preload.so")):
        shutil.copyfile(native_path(name), top / rel)
    (meta / "launch.conf").write_text(conf, encoding="utf-8")
    bin_dir = top / "bin"
    if bin_dir.is_symlink():
        bin_dir.unlink()
    bin_dir.mkdir(mode=0o755)
    for name in [*names, KERNEL_INSTALL]:
        os.link(launcher, bin_dir / name)
    return names


def check_wrappers(root: StoreRoot) -> list[str]:
    """Problems with a root's wrappers (none when it has none, as foreign packs)."""
    top = root.path
    if not (top / CONF).exists() and not (top / LAUNCHER).exists():
        return []
    problems: list[str] = []
    launcher = top / LAUNCHER
    for rel in (LAUNCHER, AUDIT, PRELOAD, CONF):
        if not (top / rel).is_file():
            problems.append(f"{top / rel}: missing; the wrappers in {top / 'bin'} cannot work "
                            "without it: unpack the pack again")
    if problems:
        return problems
    info = read_elf(launcher)
    if not info.is_static:
        problems.append(f"{launcher}: not statically linked; it would need the host's libraries")
    try:
        expected = launch_conf(root)
    except NbsandboxError as exc:
        return [*problems, f"{top / CONF}: cannot be checked: {exc}"]
    if (top / CONF).read_text(encoding="utf-8", errors="replace") != expected:
        problems.append(f"{top / CONF}: does not match the pack's programs; re-create the pack")
    for name in [*wrapped_programs(root), KERNEL_INSTALL]:
        wrapper = top / "bin" / name
        try:
            same = os.path.samefile(wrapper, launcher) or (
                wrapper.read_bytes() == launcher.read_bytes())
        except OSError:
            problems.append(f"{wrapper}: missing; {name} cannot be run without nbsandbox")
            continue
        if not same:
            problems.append(f"{wrapper}: not the pack's launcher ({launcher})")
    return problems
