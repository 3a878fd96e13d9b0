"""Recording a launch's host accesses: the launch core's side of the access report.

:func:`check_target` checks where the report goes before anything runs;
:func:`start` (called by :func:`nbsandbox.launch.request`) opens the raw record
file, puts the recorders' variables into the command's environment, the
recorders into dynamic programs under the engines other than fakechroot (whose
preload library and audit module are already there) and ``--report-seccomp``
into the launcher step for static programs.  The front end runs the command
(its descriptors include the raw file's) and calls :meth:`Recording.finish` with
the exit status.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbsandbox.engines.base import Command
from nbsandbox.errors import UsageError
from nbsandbox.native import native_dir, native_path
from nbsandbox.report import document
from nbsandbox.report.aggregate import aggregate
from nbsandbox.report.groups import Places
from nbsandbox.report.records import read_raw

if TYPE_CHECKING:
    from nbsandbox.launch import Launch

#: The recorders' variables (REPORT-CONTRACT: the descriptor, the prefixes never recorded).
FD_VAR = "NBSANDBOX_REPORT_FD"
SKIP_VAR = "NBSANDBOX_REPORT_SKIP"
#: The launcher option that records a static program's system calls.
SECCOMP_OPTION = "--report-seccomp"
#: Launcher steps that take options before the program (as for Landlock).
LAUNCHER_STEPS = ("userns", "report", "restrict")
#: PRoot's switch for its seccomp acceleration.
PROOT_NO_SECCOMP = "PROOT_NO_SECCOMP"
#: Engines whose dynamic programs already load the recorders.
PRELOADED_ENGINES = ("fakechroot",)


def check_target(path: str, source: str = "the request") -> str:
    """``path`` made absolute, or a one-line :class:`UsageError` when no report can be
    written there (a missing or unwritable directory, a directory in its place)."""
    target = os.path.abspath(os.path.expanduser(path))
    directory = os.path.dirname(target)
    if os.path.isdir(target):
        raise UsageError(f"{source}: the report {path!r} is a directory; name a file "
                         "(e.g. report.json)")
    if not os.path.isdir(directory):
        raise UsageError(f"{source}: cannot write the report {path!r}: directory {directory} "
                         "does not exist; create it first")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{source}: cannot write the report {path!r}: directory {directory} "
                         "is not writable; choose another place")
    return target


def check_ignore(paths: Iterable[str], source: str = "the request") -> tuple[str, ...]:
    out = []
    for raw in paths:
        path = os.path.expanduser(raw)
        if not os.path.isabs(path):
            raise UsageError(f"{source}: report_ignore {raw!r} is relative; give an absolute "
                             "path")
        out.append(os.path.normpath(path))
    return tuple(out)


@dataclass
class Recording:
    """A launch being recorded: finish it once the program has ended."""

    #: Where the report goes (``None``: only returned by :meth:`finish`).
    target: str | None
    raw: str
    fd: int
    run: dict[str, Any]
    places: Places
    #: Programs whose events are the engine's tool's, not the sandbox's.
    tool_programs: tuple[str, ...] = ()
    #: A private directory holding ``raw``, removed with it.
    private_dir: str | None = None
    report: dict[str, Any] | None = field(default=None, repr=False)

    def finish(self, returncode: int | None) -> dict[str, Any]:
        """Aggregate the records, write the report (atomically) and remove the raw file.

        ``returncode`` as :class:`subprocess.Popen` gives it (negative: killed by that
        signal; ``None``: unknown).  Idempotent: a second call returns the same report."""
        if self.report is not None:
            return self.report
        self._close()
        try:
            records, bad = read_raw(self.raw)
        except OSError:
            records, bad = [], 0
        self.run["ended"] = _now()
        self.run["exit"] = _exit(returncode)
        accesses = aggregate(records, ignore_programs=self.tool_programs)
        report = document.build(accesses, self.run, self.places, malformed=bad)
        try:
            if self.target is not None:
                document.write(self.target, report)
        finally:
            self._remove()
        self.report = report
        return report

    def abandon(self) -> None:
        """Drop the recording (the program did not start)."""
        self._close()
        self._remove()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.raw)
        if self.private_dir:
            shutil.rmtree(self.private_dir, ignore_errors=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime())


def _exit(returncode: int | None) -> dict[str, Any]:
    if returncode is None:
        return {"status": None, "signal": None}
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return {"status": None, "signal": name}
    return {"status": returncode, "signal": None}


def _open_raw(target: str | None) -> tuple[str, int, str | None]:
    """The raw file (next to the report, else in a private directory) and its descriptor:
    write-only, appending, inherited by the program."""
    private = None
    if target is not None:
        directory, name = os.path.dirname(target), f".{os.path.basename(target)}."
    else:
        private = tempfile.mkdtemp(prefix="nbsandbox-report-")
        directory, name = private, "records."
    fd, raw = tempfile.mkstemp(dir=directory, prefix=name, suffix=".raw")
    os.close(fd)
    fd = os.open(raw, os.O_WRONLY | os.O_APPEND)
    os.set_inheritable(fd, True)
    return raw, fd, private


def skip_prefixes(launch: Launch, ignore: Iterable[str]) -> list[str]:
    """What the recorders never record: the store (at its prefix, then where it is on
    the host), nbsandbox's native components, PRoot's scratch directory, then
    ``ignore``."""
    view = launch.plan.view
    prefixes = [view.prefix, view.store_dir, str(native_dir())]
    scratch = launch.command.env.get("PROOT_TMP_DIR")
    if scratch:  # PRoot's loader, which it executes in place of each program
        prefixes.append(scratch)
    prefixes += ignore
    return list(dict.fromkeys(os.path.normpath(p) for p in prefixes))


def _tool_programs(command: Command) -> tuple[str, ...]:
    """The names of the tool ``nbs-launch supervise`` runs (PRoot, bubblewrap): the
    preload library and audit module load into it too, but it is not the program."""
    argv = command.argv
    if len(argv) > 2 and argv[1] == "supervise" and "--" in argv:
        i = argv.index("--")
        if i + 1 < len(argv):
            return (os.path.basename(argv[i + 1]),)
    return ()


def _with_seccomp(command: Command) -> Command:
    """``command`` with the launcher step recording system calls (for a static program).

    PRoot must then run without its own seccomp acceleration, whose verdicts the
    recording filter's would override (PRoot would not translate those calls); the
    program does not see the variable."""
    launcher = str(native_path("nbs-launch"))
    argv = list(command.argv)
    env = command.env
    for i in range(len(argv) - 1):
        if argv[i] == launcher and argv[i + 1] in LAUNCHER_STEPS:
            options = [SECCOMP_OPTION]
            if command.engine == "proot" and PROOT_NO_SECCOMP not in env:
                env = {**env, PROOT_NO_SECCOMP: "1"}
                options += ["--unsetenv", PROOT_NO_SECCOMP]
            argv[i + 2:i + 2] = options
            return Command(argv, env, command.engine, command.executable, command.fds)
    argv = [launcher, "restrict", SECCOMP_OPTION, "--argv0", command.argv[0], "--",
            command.path, *command.argv[1:]]
    return Command(argv, command.env, command.engine, None, command.fds)


def _prepend(env: dict[str, str], name: str, value: str) -> None:
    old = env.get(name)
    env[name] = value + (":" + old if old else "")


def start(launch: Launch, target: str | None, ignore: Iterable[str] = ()) -> Recording:
    """Set ``launch.command`` up to record, and return the recording.

    ``target``: the checked report path (:func:`check_target`), ``None`` to keep the
    report in memory only; ``ignore``: more absolute prefixes never recorded.  What
    can fail (a missing native component) fails before the raw file is made."""
    preload, audit = str(native_path("nbs-preload.so")), str(native_path("nbs-audit.so"))
    if launch.program.is_static:
        native_path("nbs-launch")
    command = launch.command
    engine = command.engine
    plan = launch.plan
    raw, fd, private = _open_raw(target)
    env = dict(command.env)
    env[FD_VAR] = str(fd)
    env[SKIP_VAR] = ":".join(skip_prefixes(launch, ignore))
    mechanisms = ["preload", "audit"]
    if engine not in PRELOADED_ENGINES:
        _prepend(env, "LD_PRELOAD", preload)
        _prepend(env, "LD_AUDIT", audit)
    command = Command(command.argv, env, engine, command.executable, (*command.fds, fd))
    if launch.program.is_static:
        command = _with_seccomp(command)
        mechanisms.append("seccomp")
    launch.command = command
    places = Places.of(plan.home, plan.cwd, plan.env,
                       extra_homes=(plan.view.home,) if plan.view.home else ())
    run = {
        "engine": engine,
        "root": str(plan.root.path),
        "store_prefix": plan.view.prefix,
        "program": plan.program,
        "program_name": os.path.basename(plan.argv[0]),
        "program_kind": launch.program.describe(),
        "argv": list(plan.argv),
        "cwd": plan.cwd,
        "started": _now(),
        "ended": None,
        "exit": None,
        "mechanisms": {m: document.MECHANISM_SCOPE[m] for m in mechanisms},
        "not_recorded": skip_prefixes(launch, ignore),
    }
    return Recording(target, raw, fd, run, places, _tool_programs(command), private)
