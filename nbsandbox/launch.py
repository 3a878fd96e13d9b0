"""From a request to a running process: plan -> engine -> command -> process.

Front ends call :func:`make_plan`, then :func:`prepare` (which inspects the
program and resolves the engine), then either :func:`exec_in_place` or
:func:`spawn`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nbsandbox.engines import Command, Resolution, requested_engine, resolve
from nbsandbox.errors import EngineUnavailable
from nbsandbox.hermetic import host_library_warning
from nbsandbox.plan import Bind, LaunchPlan
from nbsandbox.program import ProgramInfo, host_machine, inspect_program
from nbsandbox.store import StoreRoot

#: Variables that point tools at the user's own configuration; an isolated
#: home drops them so that, e.g., git and gpg read nothing of the user's.
HOME_CONFIG_VARS = (
    "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME",
    "GNUPGHOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
)


def make_plan(
    root: StoreRoot,
    program: str,
    args: Iterable[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    binds: Iterable[Bind] = (),
    hide: Iterable[str] = (),
    isolate_home: bool = False,
    keep_cwd: bool = True,
) -> LaunchPlan:
    """A plan to run ``program`` (a store path or a profile ``bin/`` name) with ``args``.

    The program's environment is ``env`` (default: ours) with the root's
    profile ``bin/`` first on ``PATH``.
    """
    root.validate()
    path = root.find_program(program)
    environ = dict(os.environ if env is None else env)
    bin_dir = root.profile_bin()
    if bin_dir:
        rest = environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        environ["PATH"] = bin_dir + (":" + rest if rest else "")
    home = environ.get("HOME") or os.path.expanduser("~")
    if isolate_home:
        for name in HOME_CONFIG_VARS:
            environ.pop(name, None)
    hidden = [os.path.normpath(os.path.abspath(p)) for p in hide]
    return LaunchPlan(
        root=root,
        program=path,
        argv=[path, *args],
        env=environ,
        cwd=os.path.abspath(cwd) if cwd else os.getcwd(),
        binds=list(binds),
        hide=hidden,
        isolate_home=isolate_home,
        keep_cwd=keep_cwd,
        home=home,
    )


@dataclass
class Launch:
    """A prepared launch: the command to run and how it was chosen."""

    plan: LaunchPlan
    program: ProgramInfo
    resolution: Resolution
    command: Command


def prepare(plan: LaunchPlan, engine: str | None = None) -> Launch:
    """Inspect the program, choose the engine (``engine``, else ``$NBSANDBOX_ENGINE``,
    else ``default``) and build the command."""
    program = inspect_program(plan.root, plan.program)
    machine = host_machine()
    if program.elf.machine != machine:
        raise EngineUnavailable(
            f"{plan.program} is built for {program.elf.machine}, but this host is {machine}; "
            "use a pack built for this machine"
        )
    resolution = resolve(requested_engine(engine), program, plan)
    launch = Launch(plan, program, resolution, resolution.engine.command(plan))
    _report_host_libraries(launch)
    return launch


def _report_host_libraries(launch: Launch) -> None:
    """One line on stderr when the program needs libraries that the store lacks and the
    engine lets the loader take the host's (see nbsandbox.hermetic)."""
    engine = launch.resolution.engine
    if engine.confines_libraries:
        return  # the loader fails and names the library itself
    program = launch.program
    elf = program.chain[-1] if program.chain else program.path
    root = launch.plan.root
    if not root.in_store(elf):
        return
    warning = host_library_warning(root, elf, engine.name)
    if warning:
        print(warning, file=sys.stderr, flush=True)


def exec_in_place(command: Command) -> None:
    """Replace this process with the command (never returns)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command.path, command.argv, command.env)


def spawn(command: Command, **popen_kwargs) -> subprocess.Popen:
    """Start the command as a child; the child behaves like the program itself."""
    return subprocess.Popen(command.argv, executable=command.executable, env=command.env,
                            **popen_kwargs)
