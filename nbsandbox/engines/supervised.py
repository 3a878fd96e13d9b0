"""Shared by engines whose tool cannot exec the program in place (PRoot, bubblewrap).

Such a tool stays the program's parent.  ``nbs-launch supervise`` runs the
tool and ``nbs-launch report`` runs inside it, so that the process the caller
sees forwards signals to the program and ends with the program's own exit
status or signal (see docs/architecture.md).
"""

from __future__ import annotations

import os
import secrets
import tempfile

from nbsandbox.native import native_path
from nbsandbox.plan import LaunchPlan

STATUS_FD = "@NBS_STATUS_FD@"


def scratch_dir() -> str:
    """A fresh path for the supervisor's scratch directory (created and removed by it).

    It holds ``tmp`` (the tool's temporary files), ``empty`` (an empty
    directory to hide others with) and ``home`` (an isolated home).
    """
    return os.path.join(tempfile.gettempdir(), f"nbsandbox-{os.getuid()}-{secrets.token_hex(6)}")


def supervise(tool_argv: list[str], *, tmpdir: str | None = None,
              leftovers: tuple[str, ...] = (), glue: tuple[str, ...] = (),
              one_cpu: bool = False) -> list[str]:
    """``leftovers``: files the tool leaves outside ``tmpdir`` when killed, named
    ``<prefix><tool pid>-*`` for each prefix; removed with ``tmpdir``, even after SIGKILL.
    ``glue``: directories the tool may make in the host's tree (empty, mode 000)
    and leave there when killed; removed then if they are still such.
    ``one_cpu``: the tool and the program start on one CPU (the program must
    widen it again: see :mod:`nbsandbox.ipython_startup`)."""
    argv = [str(native_path("nbs-launch")), "supervise"]
    if one_cpu:
        argv.append("--one-cpu")
    if tmpdir is not None:
        argv += ["--tmpdir", tmpdir]
        for prefix in leftovers:
            argv += ["--leftovers", prefix]
        for path in glue:
            argv += ["--glue", path]
    return [*argv, "--", *tool_argv]


def report(plan: LaunchPlan, *, unset: tuple[str, ...] = (),
           deny_untranslated: bool = False) -> list[str]:
    """The argv that runs inside the tool: the reporter, then the program.

    ``deny_untranslated``: the system calls PRoot passes through untranslated
    fail with ENOSYS in the program (see native/launch/seccomp.c).
    """
    argv = [str(native_path("nbs-launch")), "report", "--fd", STATUS_FD, "--argv0", plan.argv[0]]
    for name in unset:
        argv += ["--unsetenv", name]
    if deny_untranslated:
        argv.append("--deny-untranslated")
    return [*argv, "--", plan.program, *plan.argv[1:]]
