"""Landlock restrictions: which host paths a sandboxed program may read or write,
and whether it may use the network.

The launcher applies them just before it executes the program (``nbs-launch
userns``, ``report`` inside PRoot and bubblewrap, ``restrict`` for the engines
that otherwise start the program directly), so they hold under every engine and
nothing the program does can lift them.  See docs/access.md.

A rule names a path as the process that applies it sees it: inside the
sandbox's mount tree for userns and bubblewrap (the store at its prefix), as on
the host for fakechroot, host and PRoot (the store where it is unpacked).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from nbsandbox.engines.base import Command
from nbsandbox.errors import UsageError
from nbsandbox.native import native_dir, native_path
from nbsandbox.paths import is_under

if TYPE_CHECKING:
    from nbsandbox.plan import LaunchPlan

#: Network rules need this ABI (Linux 6.7).
NETWORK_ABI = 4
#: Engines whose launcher sees the sandbox's own mount tree (the store at its prefix).
SANDBOX_VIEW_ENGINES = ("userns", "bwrap")
#: Paths every restricted program may read (when they exist): what any process needs.
SYSTEM_READ = ("/proc", "/sys/devices/system/cpu", "/dev")
#: Devices every restricted program may write.
SYSTEM_WRITE = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts", "/dev/shm")
#: What the kernel profile lets a kernel read besides the store (see kernel_profile()).
KERNEL_READ = ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime",
               "/etc/hosts", "/etc/resolv.conf", "/etc/ssl", "/usr/share/zoneinfo")


class LandlockError(UsageError):
    """Restrictions that cannot be enforced, or malformed allowed paths (one line)."""


@dataclass(frozen=True)
class Restrictions:
    """What a restricted program may touch.  ``read is None``: reading is not
    restricted (only writing is); ``write`` lists the only writable paths."""

    read: tuple[str, ...] | None = None
    write: tuple[str, ...] = ()
    network: bool = True
    #: Run unrestricted, with a warning, when the kernel cannot enforce them.
    best_effort: bool = False
    active: bool = field(default=True)


@lru_cache(maxsize=1)
def abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    try:
        proc = subprocess.run([str(native_path("nbs-launch")), "landlock-abi"],
                              capture_output=True, text=True, timeout=10, check=False)
        return int(proc.stdout.strip() or 0)
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def enforceable(version: int) -> str:
    """One line for ``nbsandbox doctor``: what ABI ``version`` can restrict."""
    if version == 0:
        return "Landlock: not available (restrictions are refused unless best effort)"
    what = "files" + (", TCP bind/connect" if version >= NETWORK_ABI else "")
    return f"Landlock: ABI {version}; enforceable: {what}"


def check_paths(paths: list[str] | tuple[str, ...], setting: str, source: str) -> tuple[str, ...]:
    """``paths`` with ``~`` expanded; a one-line error for a relative or missing one."""
    out = []
    for raw in paths:
        path = os.path.expanduser(raw)
        if not os.path.isabs(path):
            raise LandlockError(f"{source}: {setting} {raw!r} is relative; give an absolute path")
        if not os.path.exists(path):
            raise LandlockError(f"{source}: {setting} {raw!r} does not exist; create it or "
                                "leave it out")
        out.append(os.path.normpath(path))
    return tuple(out)


def kernel_profile(cwd: str, env: Mapping[str, str], home: str,
                   runtime_dirs: tuple[str, ...]) -> Restrictions:
    """The default profile for kernels: write only to the working directory, the
    temporary directory (the kernel's ``$TMPDIR``, else ``/tmp``), Jupyter's runtime
    directory and IPython's (``$IPYTHONDIR``, else ``~/.ipython``, if it exists: IPython
    cannot start without it); read the store, those and the system files a kernel
    needs."""
    tmpdir = env.get("TMPDIR") or "/tmp"
    ipython = env.get("IPYTHONDIR") or os.path.join(home, ".ipython")
    write = tuple(dict.fromkeys(p for p in (cwd, tmpdir, *runtime_dirs, ipython)
                                if os.path.isdir(p)))
    read = tuple(p for p in KERNEL_READ if os.path.exists(p))
    return Restrictions(read=read, write=write)


def _view(path: str, plan: LaunchPlan, engine: str) -> str:
    """``path`` (as the host sees it) as the launcher under ``engine`` sees it."""
    view = plan.view
    if engine in SANDBOX_VIEW_ENGINES and is_under(path, view.store_dir):
        return os.path.normpath(view.prefix + path[len(view.store_dir):])
    return path


def options(restrictions: Restrictions, plan: LaunchPlan, command: Command) -> list[str]:
    """The launcher options for ``restrictions`` under the engine of ``command``."""
    engine = command.engine
    store = plan.view.prefix if engine in SANDBOX_VIEW_ENGINES else plan.view.store_dir
    read = [store, str(native_dir()), *(p for p in SYSTEM_READ if os.path.exists(p))]
    loader: list[str] = []
    if engine == "proot":
        # PRoot executes its loader in place of each program: from the scratch
        # directory, or (releases that ignore PROOT_TMP_DIR) /tmp/prooted-<its pid>-*.
        argv = command.argv
        if "--tmpdir" in argv:
            read.append(argv[argv.index("--tmpdir") + 1] + "/tmp")
        loader = ["--allow-loader", "/tmp/prooted-"]
    read += ["/"] if restrictions.read is None else restrictions.read
    write = [p for p in SYSTEM_WRITE if os.path.exists(p)]
    write += [_view(p, plan, engine) for p in restrictions.write]
    if plan.gpu is not None:  # the host GPU driver: its files read, its device nodes opened
        read += [*plan.gpu.files, plan.gpu.lib_dir, plan.gpu.bin_dir]
        write += list(plan.gpu.devices)
    args: list[str] = [*loader]
    for path in dict.fromkeys(_view(p, plan, engine) for p in read):
        args += ["--allow-read", path]
    for path in dict.fromkeys(write):
        args += ["--allow-write", path]
    if not restrictions.network:
        args.append("--no-network")
    return args


def restrict(command: Command, restrictions: Restrictions | None, plan: LaunchPlan) -> Command:
    """``command`` with the launcher applying ``restrictions`` before the program starts.

    The launcher's own ``userns`` or ``report`` step takes the options; a command
    that starts the program directly (fakechroot, host) goes through ``nbs-launch
    restrict``.  Raises :class:`LandlockError` when the kernel cannot enforce them
    (unless best effort, which warns and returns ``command`` unchanged).
    """
    if restrictions is None or not restrictions.active:
        return command
    version = abi()
    why = ""
    if version == 0:
        why = "this kernel has no Landlock (Linux 5.13+, with landlock in lsm=)"
    elif not restrictions.network and version < NETWORK_ABI:
        why = f"this kernel's Landlock (ABI {version}) cannot restrict the network (needs ABI 4)"
    if why:
        if restrictions.best_effort:
            print(f"nbsandbox: warning: running unrestricted: {why} "
                  "(SandboxPolicy.landlock_best_effort)", file=sys.stderr, flush=True)
            return command
        raise LandlockError(f"cannot restrict the program: {why}; drop the restriction, or "
                            "set SandboxPolicy.landlock_best_effort = True to run unrestricted")
    args = options(restrictions, plan, command)
    launcher = str(native_path("nbs-launch"))
    argv = list(command.argv)
    for i in range(len(argv) - 1):
        if argv[i] == launcher and argv[i + 1] in ("userns", "report"):
            argv[i + 2:i + 2] = args
            return Command(argv, command.env, command.engine, command.executable, command.fds)
    argv = [launcher, "restrict", *args, "--argv0", command.argv[0], "--", command.path,
            *command.argv[1:]]
    return Command(argv, command.env, command.engine, fds=command.fds)
