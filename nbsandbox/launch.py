"""From a request to a running process: policy -> plan -> engine -> command -> process.

Every front end launches through one call, :func:`request`: the ``%%sandbox``
and ``%sandbox`` magics, the kernel provisioner and ``nbsandbox kernel launch``
(both through :func:`nbsandbox.kernels.kernel_request`), and ``nbsandbox run``.
It checks the engine against the policy, opens the root, builds the plan
(:func:`make_plan`, under the policy's environment filter, binds, hidden paths
and home isolation), inspects the program once and lets
:func:`nbsandbox.engines.resolve` choose the engine (:func:`prepare`), then has
the launcher apply the policy's Landlock restrictions (:mod:`nbsandbox.landlock`) and,
when asked, sets the launch up to record its host accesses
(:mod:`nbsandbox.report.recording`).  The front end then runs the command with
:func:`exec_in_place` or :func:`spawn` (a recorded launch: :func:`spawn`, then
``launch.recording.finish``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nbsandbox.elf import reusing_reads
from nbsandbox.engines import Command, Resolution, requested_engine, resolve
from nbsandbox.errors import EngineUnavailable
from nbsandbox.gpu import GpuView
from nbsandbox.hermetic import host_library_warning
from nbsandbox.landlock import restrict
from nbsandbox.plan import Bind, LaunchPlan
from nbsandbox.program import ProgramInfo, host_machine, inspect_program
from nbsandbox.report.recording import Recording, check_target
from nbsandbox.report.recording import start as start_recording
from nbsandbox.store import StoreRoot

if TYPE_CHECKING:
    from nbsandbox.policy import Policy

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
    gpu: GpuView | None = None,
) -> LaunchPlan:
    """A plan to run ``program`` (a store path or a profile ``bin/`` name) with ``args``.

    The program's environment is ``env`` (default: ours) with the root's
    profile ``bin/`` first on ``PATH``.  ``gpu``: the host's GPU driver to pass
    through (:func:`nbsandbox.gpu.select`).
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
        gpu=gpu,
    )


@dataclass
class Launch:
    """A prepared launch: the command to run and how it was chosen."""

    plan: LaunchPlan
    program: ProgramInfo
    resolution: Resolution
    command: Command
    #: Set when the request asked for an access report: finish it when the program ends.
    recording: Recording | None = None


@dataclass(frozen=True)
class RequestOptions:
    """What a front end may add to a :func:`request`, besides program and arguments.

    Every field has a neutral default, so that options can be added here without
    changing the front ends that do not use them.
    """

    #: The environment to start from (default: this process's); the policy's
    #: allow-list filters it and its ``env`` is added.
    env: Mapping[str, str] | None = None
    #: Variables that pass whatever the allow-list says (e.g. the kernel protocol's).
    keep_env: tuple[str, ...] = ()
    #: The working directory (default: the current one).
    cwd: str | None = None
    #: Binds the front end itself needs (e.g. the directory of a kernel's connection
    #: file); not subject to ``allow_user_binds``, but never into a hidden path.
    binds: tuple[Bind, ...] = ()
    #: With an isolated home: keep the working directory visible when it is in home.
    keep_cwd: bool = True
    #: A kernel: ``SandboxPolicy.restrict_kernels`` applies, and under Landlock
    #: restrictions it may read ``runtime_dirs`` (where its connection file is).
    kernel: bool = False
    runtime_dirs: tuple[str, ...] = ()
    #: Record the host paths the program uses (docs/access.md): the report's file, or
    #: ``""`` to keep the report in memory (``launch.recording.finish`` returns it).
    report: str | None = None


def request(
    policy: Policy,
    root: StoreRoot | str | None,
    program: str,
    args: Iterable[str] = (),
    *,
    engine: str | None = None,
    source: str = "the request",
    options: RequestOptions | None = None,
) -> Launch:
    """The launch of ``program`` (a store path or a name in the root's ``bin/``) with
    ``args`` from ``root``, under ``policy``: the one way every front end launches.

    ``root`` is a :class:`~nbsandbox.store.StoreRoot` the front end opened, or a
    name or path for :meth:`Policy.open_root` (``None``: the policy's default).
    ``engine`` is the engine the request names (``None``: ``$NBSANDBOX_ENGINE``, else
    the policy's); ``source`` says who asks, in one-line errors.

    Called by :meth:`nbsandbox.magics.SandboxMagics._run` (``%%sandbox``,
    ``%sandbox``), :func:`nbsandbox.kernels.kernel_request` (for the provisioner
    and ``nbsandbox kernel launch``) and :func:`nbsandbox.cli.run_run`
    (``nbsandbox run``).  Raises :class:`~nbsandbox.policy.PolicyError` for what
    the policy forbids, :class:`~nbsandbox.errors.StoreError` for an unusable root
    or program, :class:`EngineUnavailable` (with every reason) when no allowed
    engine works.  Starts nothing: run the returned command with
    :func:`exec_in_place` or :func:`spawn`.
    """
    options = options or RequestOptions()
    target = None
    if options.report:  # bad input first, before anything is opened
        target = check_target(options.report, source)
    name, asked_by = policy.requested(engine, source)
    if not isinstance(root, StoreRoot):
        root = policy.open_root(root, source)
    environ = policy.filter_env(os.environ if options.env is None else options.env,
                                options.keep_env)
    plan = make_plan(root, program, args, env=environ, cwd=options.cwd,
                     binds=policy.bind_list(options.binds), hide=policy.hidden_paths(),
                     isolate_home=policy.isolate_home, keep_cwd=options.keep_cwd,
                     gpu=policy.gpu_view())
    restrictions = policy.restrictions(kernel=options.kernel, cwd=plan.cwd,
                                       env=plan.env, home=plan.home,
                                       runtime_dirs=options.runtime_dirs)
    launch = _choose(plan, name, asked_by, policy)
    launch.command = restrict(launch.command, restrictions, plan)
    if options.report is not None:
        launch.recording = start_recording(launch, target, policy.report_ignore)
    return launch


def prepare(plan: LaunchPlan, engine: str | None = None, *, policy: Policy | None = None,
            source: str = "the request") -> Launch:
    """Inspect the program, choose the engine and build the command for ``plan``.

    The engine is ``engine``, else ``$NBSANDBOX_ENGINE``, else the policy's (or
    ``default`` without a policy), checked against ``policy`` when given.  For a
    plan built elsewhere (tests, benchmarks); front ends call :func:`request`.
    """
    if policy is None:
        return _choose(plan, requested_engine(engine), "", None)
    name, asked_by = policy.requested(engine, source)
    return _choose(plan, name, asked_by, policy)


def _choose(plan: LaunchPlan, name: str, asked_by: str, policy: Policy | None) -> Launch:
    # The program, the engine's command and the libraries' check read the
    # same ELF files: each is parsed once.
    with reusing_reads():
        return _choose_engine(plan, name, asked_by, policy)


def _choose_engine(plan: LaunchPlan, name: str, asked_by: str, policy: Policy | None) -> Launch:
    program = inspect_program(plan.root, plan.program)  # once, for every candidate
    machine = host_machine()
    if program.elf.machine != machine:
        raise EngineUnavailable(
            f"{plan.program} is built for {program.elf.machine}, but this host is {machine}; "
            "use a pack built for this machine"
        )
    if policy is None:
        resolution = resolve(name, program, plan)
    else:
        resolution = resolve(name, program, plan, chains=policy.chains,
                             allowed=policy.allowed_engines)
    resolution.asked_by = asked_by
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


def shell_line(command: Command, base: Mapping[str, str] | None = None) -> str:
    """One shell line that runs ``command`` as printed, from an environment like ``base``
    (default: this process's): ``env`` unsets and sets the variables that differ, and
    a program given another name than its file runs through ``bash -c 'exec -a'``.

    Used by ``nbsandbox run --dry-run``.
    """
    base = os.environ if base is None else base
    words = [f"-u {shlex.quote(name)}" for name in sorted(base) if name not in command.env]
    words += [shlex.quote(f"{name}={value}") for name, value in command.env.items()
              if base.get(name) != value]
    if command.executable:
        words += ["bash", "-c", shlex.quote('exec -a "$0" "$@"'),
                  shlex.quote(command.argv[0]), shlex.quote(command.executable)]
        words += map(shlex.quote, command.argv[1:])
    else:
        words += map(shlex.quote, command.argv)
    return " ".join(["env", *words])


def exec_in_place(command: Command) -> None:
    """Replace this process with the command (never returns)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command.path, command.argv, command.env)


def spawn(command: Command, **popen_kwargs) -> subprocess.Popen:
    """Start the command as a child (with the descriptors it needs); the child behaves
    like the program itself."""
    if command.fds:
        popen_kwargs["pass_fds"] = (*popen_kwargs.get("pass_fds", ()), *command.fds)
    return subprocess.Popen(command.argv, executable=command.executable, env=command.env,
                            **popen_kwargs)
