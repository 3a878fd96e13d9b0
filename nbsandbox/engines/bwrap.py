"""The ``bwrap`` engine: the same view as ``userns``, built by bubblewrap.

Useful where bubblewrap is installed setuid and unprivileged user namespaces
are off.  bubblewrap stays the program's parent, so the launch goes through
``nbs-launch supervise`` (see :mod:`nbsandbox.engines.supervised`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import ClassVar

from nbsandbox.engines.base import Command, Engine, Probe
from nbsandbox.engines.supervised import report, supervise
from nbsandbox.engines.userns import MOUNT_DENIED_HINT, mount_denied
from nbsandbox.engines.views import MountOp, mirror_entries, mount_ops, synthetic_dirs
from nbsandbox.native import native_dir
from nbsandbox.plan import LaunchPlan


def find_bwrap() -> str | None:
    return os.environ.get("NBSANDBOX_BWRAP") or shutil.which("bwrap")


class BwrapEngine(Engine):
    name: ClassVar[str] = "bwrap"
    summary: ClassVar[str] = "bubblewrap; also where it is setuid and user namespaces are off"
    rank: ClassVar[int] = 30

    def _probe(self) -> Probe:
        bwrap = find_bwrap()
        if bwrap is None:
            return Probe.fail("bwrap is not installed; install bubblewrap (apt-get install "
                              "bubblewrap) or use another engine")
        # A user namespace (unless setuid) and a read-only bind mount.  The
        # mount points of a real launch are made in bubblewrap's own tmpfs.
        native = str(native_dir())
        argv = [bwrap, "--dev-bind", "/", "/", "--ro-bind", native, native, "--", "/bin/true"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Probe.fail(f"cannot run {bwrap}: {exc}")
        if proc.returncode == 0:
            setuid = os.stat(bwrap).st_mode & 0o4000
            return Probe.ok(f"{bwrap} works" + (" (setuid)" if setuid else ""))
        lines = proc.stderr.strip().splitlines()
        why = lines[-1].removeprefix("bwrap: ") if lines else f"exit status {proc.returncode}"
        if mount_denied(why):
            hint = MOUNT_DENIED_HINT
        elif "uid map" in why or "gid map" in why or "setgroups" in why:
            hint = ("the host's security policy (e.g. AppArmor) forbids user namespace maps; "
                    "use the fakechroot or proot engine, or a setuid bwrap")
        else:
            hint = ("it needs user namespaces or a setuid bwrap: use the fakechroot or proot "
                    "engine, or ask the administrator for a setuid bwrap")
        return Probe.fail(f"{bwrap} cannot create its sandbox: {why} ({hint})")

    def command(self, plan: LaunchPlan) -> Command:
        bwrap = find_bwrap()
        assert bwrap is not None, "probe() first"
        args = [bwrap, "--die-with-parent",
                *view_args(mount_ops(plan, store_visible=plan.root.present_on_host())),
                "--remount-ro", "/", "--chdir", plan.cwd, "--", *report(plan)]
        env = plan.gpu.library_search_env(plan.env) if plan.gpu else dict(plan.env)
        return Command(supervise(args), env, self.name)


def view_args(ops: list[MountOp]) -> list[str]:
    """bubblewrap options that build the view of ``ops`` on its own tmpfs root.

    Nothing is made on the host: a destination whose parent the host lacks
    (``/gnu/store`` where there is no ``/gnu``) gets its ancestors as
    directories of the tmpfs, and the host's other entries are bound next to them.
    """
    dests = [op.dest for op in ops]
    synthetic = synthetic_dirs(dests)
    args: list[str] = []
    for directory in synthetic[1:]:  # "/" is bubblewrap's own tmpfs
        args += ["--dir", directory]
    for kind, path in mirror_entries(synthetic, set(dests)):
        if kind == "symlink":
            args += ["--symlink", os.readlink(path), path]
        elif path == "/dev":
            args += ["--dev-bind", path, path]
        else:
            args += ["--bind", path, path]
    for op in ops:
        if op.kind in ("store", "ro-bind", "driver"):
            args += ["--ro-bind", op.source, op.dest]
        elif op.kind == "bind":
            args += ["--bind", op.source, op.dest]
        elif op.kind == "dev":
            args += ["--dev-bind", op.source, op.dest]
        elif op.kind == "tmpfs":
            args += ["--tmpfs", op.dest]
        elif op.kind == "hide":
            if os.path.isdir(op.dest):
                args += ["--tmpfs", op.dest, "--remount-ro", op.dest]
            else:  # a device bind: bubblewrap's plain binds are nodev
                args += ["--dev-bind", "/dev/null", op.dest]
    return args
