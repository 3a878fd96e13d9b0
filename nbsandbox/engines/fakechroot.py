"""The ``fakechroot`` engine: the store's own ld.so, an audit module and a preload library.

No namespaces, no root, no helper process: the program is started as::

    <root><prefix>/...-glibc/lib/ld-linux-*.so.2 --argv0 NAME \\
        --audit nbs-audit.so --preload nbs-preload.so <root><prefix>/.../program ARG...

``nbs-audit.so`` (an ``la_objsearch`` audit module) makes the loader find the
store's libraries under the root; ``nbs-preload.so`` makes the program see
the store at its prefix (open, stat, exec, getcwd, readlink... translate
paths) and starts store programs that it executes the same way.  Both are
nbsandbox's own (``native/fakechroot/``) and load into programs of any glibc
since 2.17.  See ``docs/fakechroot.md`` for what this covers and what it
cannot (static and Go programs, raw system calls).

Configuration travels in ``NBS_FC_*`` variables, which the preload library
removes from ``environ`` before the program's ``main`` and restores only for
the store programs it executes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import ClassVar

from nbsandbox.elf import read_elf, read_shebang
from nbsandbox.engines.base import Command, Engine, Probe
from nbsandbox.errors import ElfError, EngineUnavailable, NbsandboxError, StoreError
from nbsandbox.native import native_path
from nbsandbox.paths import is_under
from nbsandbox.plan import LaunchPlan
from nbsandbox.program import ProgramInfo, host_machine, inspect_program
from nbsandbox.store import StoreRoot

#: Machines the native libraries are built for (raw system calls in sys.h).
SUPPORTED_MACHINES = ("x86_64", "aarch64")

#: Every variable of the engine starts with this; the preload library removes them.
ENV_PREFIX = "NBS_FC_"

#: Host programs that get the preload library when a store program runs them,
#: because they run other programs by name: shells (``system()``, ``popen()``,
#: ``subprocess(shell=True)``, scripts with ``#!/bin/sh``) and ``env``.
DEFAULT_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "env")

#: ld.so options, by the glibc version that introduced them.
LDSO_ARGV0 = 1  # --argv0, glibc 2.33
LDSO_PRELOAD = 2  # --preload, glibc 2.30

_MAX_INTERPRETER_DEPTH = 4  # Linux's BINPRM_MAX_RECURSION
_CONFIG_MAX = 65536  # native/fakechroot/pathmap.h: PM_CONFIG_MAX
_MAX_MAPS = 32  # PM_MAX_MAPS
_MAX_LIBS = 64  # PM_MAX_LIBS
_ldso_cache: dict[tuple[str, int, int], int] = {}


class FakechrootEngine(Engine):
    """Run store programs through the store's ld.so with nbsandbox's audit and preload libraries."""

    name: ClassVar[str] = "fakechroot"
    summary: ClassVar[str] = (
        "store's ld.so + audit module + preload library: no namespaces needed; "
        "dynamically linked programs only"
    )
    rank: ClassVar[int] = 20
    confines_libraries: ClassVar[bool] = True

    def __init__(self, *, shells: tuple[str, ...] = DEFAULT_SHELLS, compat: bool = False,
                 preload_first: tuple[str, ...] = ()) -> None:
        """``shells``: host programs given the preload library when a store program runs them.
        ``compat``: use ``LD_PRELOAD`` and an argv[0] fix-up instead of ld.so's
        ``--preload``/``--argv0`` even where ld.so has them (what the engine
        does for glibc < 2.30/2.33; for tests).
        ``preload_first``: libraries to preload before nbsandbox's own, in every
        store program and shell (the tests put a sanitizer runtime there).
        """
        self.shells = tuple(shells)
        self.compat = compat
        self.preload_first = tuple(preload_first)

    # -- probing -----------------------------------------------------------------

    def _probe(self) -> Probe:
        machine = host_machine()
        if machine not in SUPPORTED_MACHINES:
            return Probe.fail(
                f"the fakechroot engine supports {' and '.join(SUPPORTED_MACHINES)} hosts; "
                f"this one is {machine}"
            )
        try:
            audit, preload = _libraries()
        except NbsandboxError as exc:
            return Probe.fail(str(exc))
        for lib in (audit, preload):
            try:
                info = read_elf(lib)
            except ElfError as exc:
                return Probe.fail(f"{exc}; reinstall nbsandbox with pip")
            if info.machine != machine:
                return Probe.fail(
                    f"{lib} is built for {info.machine}, this host is {machine}; "
                    "reinstall nbsandbox with pip on this machine"
                )
        # Load both into a small host program, as ld.so will into store programs.
        program = next((p for p in ("/bin/true", "/usr/bin/true") if os.path.exists(p)),
                       sys.executable)
        argv = [program] if program != sys.executable else [program, "-c", "pass"]
        preload = ":".join([*self.preload_first, preload])
        config = _config_text([], audit, preload, (), {}, [], compat=False)
        env = {"PATH": os.defpath, "LD_AUDIT": audit, "LD_PRELOAD": preload,
               ENV_PREFIX + "CONFIG": config}
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Probe.fail(f"cannot run {program} to test the native libraries: {exc}")
        err = proc.stderr.decode(errors="replace").strip()
        if proc.returncode != 0 or err:
            first = err.splitlines()[0] if err else f"exit status {proc.returncode}"
            return Probe.fail(f"the native libraries do not load: {first}; reinstall nbsandbox")
        return Probe.ok("audit module and preload library load")

    # -- programs ------------------------------------------------------------------

    def refuses(self, program: ProgramInfo) -> str | None:
        """Why a program cannot be interposed: static, Go, foreign, or no loader in the store."""
        machine = host_machine()
        if program.elf.machine != machine:
            return f"{program.path} is a {program.elf.machine} program; this host is {machine}"
        if program.is_go:
            return (f"{program.path} is a Go program: it makes system calls directly, "
                    "which a preload library cannot translate")
        if program.is_static:
            return (f"{program.path} is statically linked: there is no dynamic loader "
                    "to give it the audit module and preload library")
        interp = program.interpreter
        if not interp:
            return f"{program.path} has no ELF interpreter (ld.so)"
        if os.path.commonpath([program.path, interp]) == "/":
            return (f"{program.path} runs with {interp}, a loader outside the store; "
                    "the fakechroot engine starts programs with the store's own ld.so")
        return None

    # -- the command ---------------------------------------------------------------

    def command(self, plan: LaunchPlan) -> Command:
        root = plan.root
        info = inspect_program(root, plan.program)
        reason = self.refuses(info)
        if reason:
            raise EngineUnavailable(reason)
        audit, preload = _libraries()
        parts = [*self.preload_first, preload]
        if ":" in audit or any(c in part for part in parts for c in ": "):
            # ld.so splits --audit on ':', and --preload and LD_PRELOAD on ':' and ' '
            raise EngineUnavailable(
                f"the native libraries' path {os.path.dirname(preload)!r} contains ':' or a "
                "space, which ld.so cannot take; install nbsandbox in a path without them"
            )
        preload = ":".join(parts)

        argv0, pre, elf_path = _exec_chain(root, plan.program, plan.argv, plan.env)
        elf_sbx = root.resolve(elf_path)
        elf_host = root.to_host(elf_sbx)
        elf = read_elf(elf_host)
        if not elf.interpreter or not root.in_store(elf.interpreter):
            raise EngineUnavailable(
                f"{elf_sbx} runs with {elf.interpreter or 'no loader'}, not a loader in the "
                f"store {root.prefix}; the fakechroot engine needs the store's own ld.so"
            )
        ldso_sbx = root.resolve(elf.interpreter)
        ldso_host = root.to_host(ldso_sbx)
        if not ldso_host.is_file():
            raise StoreError(f"the loader {elf.interpreter} of {elf_sbx} is missing from the "
                             f"root ({ldso_host}); the pack is incomplete")
        features = 0 if self.compat else ldso_features(os.fspath(ldso_host))

        env = {k: v for k, v in plan.env.items() if not k.startswith(ENV_PREFIX)}
        added = _glibc_env(root, ldso_sbx, env)
        env.update(added)

        maps = _mappings(plan)
        libs = plan.gpu.libraries if plan.gpu else ()
        if plan.gpu:  # the driver's programs (nvidia-smi) last on PATH
            env["PATH"] = plan.gpu.library_search_env({"PATH": env.get("PATH", "")})["PATH"]
        config = _config_text(maps, audit, preload, self.shells, added,
                              [(os.fspath(ldso_host), features)], compat=self.compat, libs=libs)
        env[ENV_PREFIX + "CONFIG"] = config
        env[ENV_PREFIX + "EXE"] = elf_sbx
        env[ENV_PREFIX + "CWD"] = plan.cwd

        argv = [os.fspath(ldso_host)]
        if features & LDSO_ARGV0:
            argv += ["--argv0", argv0]
        else:
            env[ENV_PREFIX + "ARGV0"] = argv0
        argv += ["--audit", audit]
        if features & LDSO_PRELOAD:
            argv += ["--preload", preload]
        else:
            old = env.get("LD_PRELOAD")
            env["LD_PRELOAD"] = preload + (":" + old if old else "")
        argv += [os.fspath(elf_host), *pre, *plan.argv[1:]]
        return Command(argv, env, self.name)


# ---------------------------------------------------------------------------------
# helpers


def _libraries() -> tuple[str, str]:
    return os.fspath(native_path("nbs-audit.so")), os.fspath(native_path("nbs-preload.so"))


def ldso_features(path: str) -> int:
    """Which of ``--argv0``/``--preload`` the ld.so at host ``path`` understands (cached).

    Those option names appear in ld.so's usage text and option parser from
    the glibc version that added them; the preload library decides the same
    way for the store programs it executes.
    """
    st = os.stat(path)
    key = (path, st.st_ino, st.st_mtime_ns)
    if key not in _ldso_cache:
        data = Path(path).read_bytes()
        features = (LDSO_ARGV0 if b"--argv0" in data else 0) | (
            LDSO_PRELOAD if b"--preload" in data else 0)
        _ldso_cache[key] = features
    return _ldso_cache[key]


def _escape(text: str) -> str:
    """Percent-escape a configuration token (pathmap.c decodes it)."""
    out = []
    for b in os.fsencode(text):
        out.append(f"%{b:02X}" if b <= 0x20 or b == 0x25 or b >= 0x7F else chr(b))
    return "".join(out)


def _config_text(maps: list[tuple[str, str, str]], audit: str, preload: str,
                 shells: tuple[str, ...], added: dict[str, str],
                 ldsos: list[tuple[str, int]], *, compat: bool,
                 libs: tuple[tuple[str, str], ...] = ()) -> str:
    """NBS_FC_CONFIG: what native/fakechroot/pathmap.c's pm_config_parse reads.

    ``libs``: (name, host path) of libraries the audit module resolves by exactly
    that name to the host's file (the GPU driver's)."""
    lines = ["nbs-fc 1"]
    for flags, sandbox, host in maps:
        lines.append(f"map {flags or '-'} {_escape(sandbox)} {_escape(host)}")
    lines.append(f"audit {_escape(audit)}")
    lines.append(f"preload {_escape(preload)}")
    lines += [f"shell {_escape(s)}" for s in shells[:16]]
    lines += [f"env {_escape(k + '=' + v)}" for k, v in added.items()]
    lines += [f"ldso {features} {_escape(path)}" for path, features in ldsos]
    lines += [f"lib {_escape(name)} {_escape(path)}" for name, path in libs]
    if compat:
        lines.append("compat")
    text = "\n".join(lines) + "\n"
    if len(text) > _CONFIG_MAX or len(maps) > _MAX_MAPS or len(libs) > _MAX_LIBS:
        raise EngineUnavailable(
            "the fakechroot engine's configuration is too large (too many binds or hidden "
            "paths, or paths too long); use fewer"
        )
    return text


def _mappings(plan: LaunchPlan) -> list[tuple[str, str, str]]:
    """The plan's view (``plan.view``) as (flags, sandbox dir, host dir) mappings.

    Flags: ``r`` read-only, ``s`` programs whose loader is here are store
    programs, ``a`` missing ancestors of the sandbox dir come from the root.
    The native code picks the longest matching sandbox dir, so a bind inside the
    private home shows through it.  Host paths are real paths (the preload
    library compares them with what the kernel reports).
    """
    view = plan.view
    maps = []
    for entry in view.entries:
        if entry.kind == "store":
            maps.append(("rsa", entry.dest, entry.source))
        elif entry.kind == "tmpfs":
            maps.append(("r", entry.dest, empty_dir()))
        elif entry.kind in ("bind", "ro-bind"):
            read_only = entry.kind == "ro-bind"
            source = os.path.realpath(entry.source)
            if "/" in (source, entry.dest):
                raise EngineUnavailable(
                    f"the fakechroot engine cannot bind {entry.source} at {entry.dest}: "
                    "neither may be /"
                )
            if entry.dest == view.home and source == entry.dest:
                continue  # the working directory is the home itself: it stays private
            hidden_by_home = view.home is not None and is_under(entry.dest, view.home)
            if source == entry.dest and not read_only and not hidden_by_home:
                continue  # already visible, and writable
            maps.append(("r" if read_only else "-", entry.dest, source))
        # "driver" and "dev" entries (the GPU driver's) are host paths the program
        # sees as they are; the audit module resolves the driver's library names.
        elif entry.kind == "hide":
            if os.path.isdir(entry.dest):
                maps.append(("r", entry.dest, empty_dir()))
            elif os.path.lexists(entry.dest):
                maps.append(("r", entry.dest, empty_file()))
    return maps


def _glibc_env(root: StoreRoot, ldso_sbx: str, env: dict[str, str]) -> dict[str, str]:
    """GCONV_PATH and LOCPATH for the store's glibc.

    glibc opens its gconv modules' configuration and its locales with
    internal calls no preload library sees, so these must be host paths: the
    store glibc's own directories when the plan does not set them, else the
    plan's values with store paths translated.  They are given to store
    programs only (the preload library removes them for host programs).
    """
    added: dict[str, str] = {}
    lib = os.path.dirname(ldso_sbx)
    # A distribution's glibc keeps its gconv modules under usr/lib/<multiarch>
    # of its item even when the loader is in lib/<multiarch>.
    item = root.prefix + "/" + ldso_sbx[len(root.prefix) + 1:].split("/", 1)[0]
    defaults = {"GCONV_PATH": [lib + "/gconv", f"{item}/usr/lib/{os.path.basename(lib)}/gconv"],
                "LOCPATH": [lib + "/locale"]}
    for name in ("GCONV_PATH", "LOCPATH", "GUIX_LOCPATH"):
        value = env.get(name)
        if value is None:
            for default in defaults.get(name, ()):
                if root.to_host(default).is_dir():
                    added[name] = os.fspath(root.to_host(default))
                    break
            continue
        parts = [os.fspath(root.to_host(p)) if root.in_store(os.path.normpath(p)) else p
                 for p in value.split(":")]
        translated = ":".join(parts)
        if translated != value:
            added[name] = translated
    return added


def _simple_word(text: str) -> bool:
    return bool(text) and not text.startswith("-") and not any(c in text for c in " \t=/")


def _exec_chain(root: StoreRoot, program: str, argv: list[str],
                env: dict[str, str]) -> tuple[str, list[str], str]:
    """Follow ``#!`` lines as execve would: (argv[0] for the ELF, arguments
    before ``argv[1:]``, sandbox path of the ELF file that runs).

    ``#!/usr/bin/env NAME`` with a host ``env`` is followed to NAME on the
    plan's ``PATH`` (then the root's profile ``bin/``) when it is found in
    the store, as the preload library does for children.
    """
    levels: list[tuple[str, str | None]] = []
    current = program
    for _ in range(_MAX_INTERPRETER_DEPTH + 1):
        host = root.to_host(root.resolve(current))
        shebang = read_shebang(host)
        if shebang is None:
            break
        if len(levels) == _MAX_INTERPRETER_DEPTH:
            raise ElfError(f"{program}: too many levels of script interpreters")
        name, arg = shebang.interpreter, shebang.argument
        following = name
        if (not root.in_store(os.path.normpath(name)) and os.path.basename(name) == "env"
                and arg and _simple_word(arg)):
            found = _which_in_store(root, arg, env.get("PATH", os.defpath))
            if found is not None:
                name, arg, following = arg, None, found
        levels.append((name, arg))
        current = following
    if not levels:
        return (argv[0] if argv else program), [], current
    argv0 = levels[-1][0]
    pre: list[str] = []
    for j in range(len(levels) - 1, -1, -1):
        name, arg = levels[j]
        if j != len(levels) - 1:
            pre.append(name)
        if arg is not None:
            pre.append(arg)
    pre.append(program)
    return argv0, pre, current


def _which_in_store(root: StoreRoot, name: str, path: str) -> str | None:
    """The first ``name`` on ``path`` (then the profile's bin/), if it is a store program."""
    dirs = path.split(":")
    profile = root.profile_bin()
    if profile:
        dirs.append(profile)
    for d in dirs:
        if not d.startswith("/"):
            continue  # relative to a working directory the program does not have yet
        candidate = os.path.join(d, name)
        try:
            resolved = root.resolve(candidate)
        except StoreError:
            continue
        host = root.to_host(resolved)
        if host.is_file() and os.access(host, os.X_OK):
            return candidate if root.in_store(resolved) else None
    return None


def _private_base() -> Path:
    """``$TMPDIR/nbsandbox-<uid>-empty``: an empty directory and an empty file, made once."""
    base = Path(tempfile.gettempdir()) / f"nbsandbox-{os.getuid()}-empty"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o755)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise EngineUnavailable(
            f"{base} is not a directory of yours that only you can write; remove it"
        )
    return base


def empty_dir() -> str:
    """An empty, read-only directory that isolated homes and hidden directories map to.

    Shared by every launch of this user and never written to (the engine maps
    it read-only): nothing is left behind per launch.
    """
    path = _private_base() / "dir"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o555)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or os.listdir(path):
        raise EngineUnavailable(f"{path} should be an empty directory of yours; remove it")
    os.chmod(path, 0o555)
    return os.fspath(path)


def empty_file() -> str:
    """An empty, read-only file that hidden files map to."""
    path = _private_base() / "file"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        os.close(fd)
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size:
        raise EngineUnavailable(f"{path} should be an empty file of yours; remove it")
    return os.fspath(path)
