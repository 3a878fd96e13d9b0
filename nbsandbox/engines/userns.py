"""The ``userns`` engine: an unprivileged user + mount namespace.

``nbs-launch userns`` (native/launch) unshares, maps the caller's uid/gid to
themselves, mirrors the host's ``/`` on a private tmpfs, binds the store
read-only at its prefix, ``pivot_root``s and execs the program in place: the
program keeps the launcher's PID, its signals and its exit status.  Native
speed; needs unprivileged user namespaces.
"""

from __future__ import annotations

import subprocess
from typing import ClassVar

from nbsandbox.engines.base import Command, Engine, Probe
from nbsandbox.engines.views import MountOp, mount_ops
from nbsandbox.native import native_dir, native_path
from nbsandbox.plan import LaunchPlan

PROBE_PREFIX = "/nbsandbox-probe/store"

#: Added to a failed probe's reason when the namespace was made but a mount was refused.
MOUNT_DENIED_HINT = (
    "the host lets user namespaces be created but forbids mounts in them, e.g. by a seccomp "
    "filter or an AppArmor/SELinux policy; use the fakechroot or proot engine: "
    "--engine performance or auto picks one"
)


def mount_denied(reason: str) -> bool:
    """Whether a namespace tool's error says that a mount operation was refused."""
    text = reason.lower()
    denied = "operation not permitted" in text or "permission denied" in text
    return denied and any(word in text for word in (
        "mount", "pivot_root", "slave", "propagation"))

_OPTION = {"store": "--store", "bind": "--bind", "ro-bind": "--ro-bind", "driver": "--ro-bind",
           "dev": "--bind"}


def launcher_options(ops: list[MountOp]) -> list[str]:
    """``nbs-launch userns`` options for a list of mount operations."""
    args: list[str] = []
    for op in ops:
        if op.kind in _OPTION:
            args += [_OPTION[op.kind], f"{op.source}:{op.dest}"]
        elif op.kind == "hide":
            args += ["--hide", op.dest]
        elif op.kind == "tmpfs":
            args += ["--tmpfs", op.dest]
        else:  # pragma: no cover - mount_ops only makes the kinds above
            raise ValueError(op.kind)
    return args


class UsernsEngine(Engine):
    name: ClassVar[str] = "userns"
    summary: ClassVar[str] = "unprivileged user + mount namespace; native speed"
    rank: ClassVar[int] = 10

    def _probe(self) -> Probe:
        try:
            launcher = native_path("nbs-launch")
        except Exception as exc:  # missing native build
            return Probe.fail(str(exc))
        # Do what a launch does -- unshare, write the maps, mirror /, bind a
        # store at a prefix that does not exist, pivot_root -- but not exec.
        argv = [
            str(launcher), "userns", "--probe",
            "--store", f"{native_dir()}:{PROBE_PREFIX}", "--", "/bin/true",
        ]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Probe.fail(f"cannot run {launcher}: {exc}")
        if proc.returncode == 0:
            return Probe.ok("user namespaces work (unshare, uid map, bind mount, pivot_root)")
        lines = proc.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"nbs-launch exited with {proc.returncode}"
        reason = reason.removeprefix("nbs-launch: ")
        if mount_denied(reason) and "(" not in reason:
            reason += f" ({MOUNT_DENIED_HINT})"
        elif "use another engine" not in reason and "unshare" in reason:
            reason += ("; use the fakechroot or proot engine (--engine performance or auto "
                       "picks one), or ask the administrator to allow user namespaces")
        return Probe.fail(reason)

    def command(self, plan: LaunchPlan) -> Command:
        store_visible = plan.root.present_on_host()
        ops = mount_ops(plan, store_visible=store_visible)
        if not ops:  # the store is already here and nothing else is asked
            return Command(list(plan.argv), dict(plan.env), self.name, executable=plan.program)
        argv = [
            str(native_path("nbs-launch")), "userns",
            *launcher_options(ops),
            "--chdir", plan.cwd,
            "--argv0", plan.argv[0],
            "--", plan.program, *plan.argv[1:],
        ]
        env = plan.gpu.library_search_env(plan.env) if plan.gpu else dict(plan.env)
        return Command(argv, env, self.name)
