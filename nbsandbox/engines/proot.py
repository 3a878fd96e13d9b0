"""The ``proot`` engine: path translation by ptrace, through a PRoot binary.

Works almost everywhere (no namespaces needed) at a high cost per system
call.  Seccomp acceleration is used when a probe shows it works here, and the
probe says when the PRoot found has none (Debian's).
PRoot stays the program's parent and mishandles signals and exit statuses
(any signal death becomes 255), so the launch goes through
``nbs-launch supervise`` and ``report`` (see :mod:`nbsandbox.engines.supervised`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from typing import ClassVar

from nbsandbox.engines.base import Command, Engine, Probe
from nbsandbox.engines.supervised import report, scratch_dir, supervise
from nbsandbox.engines.userns import PROBE_PREFIX
from nbsandbox.engines.views import mount_ops
from nbsandbox.ipython_kernel import STARTUP_FILE, STARTUP_VAR
from nbsandbox.native import native_dir
from nbsandbox.plan import LaunchPlan

NO_SECCOMP = "PROOT_NO_SECCOMP"
TMP_DIR = "PROOT_TMP_DIR"


def find_proot() -> str | None:
    return os.environ.get("NBSANDBOX_PROOT") or shutil.which("proot")


#: Where releases of PRoot without PROOT_TMP_DIR (Debian's 5.1) put their loader
#: (``prooted-<pid>-*``) and the directories that glue a binding to a missing path
#: (``proot-<pid>-*``), whatever TMPDIR says; they stay there when PRoot is killed.
LEFTOVERS = ("/tmp/prooted-", "/tmp/proot-")


def remove_leftovers(pid: int) -> None:
    """Remove what the PRoot process ``pid`` (ended) left in /tmp (see LEFTOVERS)."""
    for prefix in LEFTOVERS:
        directory, base = os.path.split(prefix)
        start = f"{base}{pid}-"
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                if not entry.name.startswith(start):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def accelerated(probe_output: str) -> bool:
    """Whether PRoot's seccomp acceleration was in force in the probe: the traced
    shell ran under a seccomp filter (``Seccomp: 2``).  Debian's PRoot 5.1 is
    built without it (it crashed programs on Linux >= 4.8): it traces every
    system call, whatever ``PROOT_NO_SECCOMP`` says."""
    for line in probe_output.splitlines():
        if line.startswith("Seccomp:"):
            return line.split()[1:2] == ["2"]
    return False


def first_missing(path: str) -> str | None:
    """The top directory of ``path`` that the host lacks (``/gnu`` for a
    ``/gnu/store`` on a host without ``/gnu``), or None when ``path`` exists."""
    missing = None
    while path not in ("/", "") and not os.path.lexists(path):
        missing, path = path, os.path.dirname(path)
    return missing


class ProotEngine(Engine):
    name: ClassVar[str] = "proot"
    summary: ClassVar[str] = "PRoot (ptrace); works without namespaces, slow system calls"
    rank: ClassVar[int] = 50

    seccomp: bool = True

    def _run_probe(self, proot: str, *, seccomp: bool) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.pop(TMP_DIR, None)
        if seccomp:
            env.pop(NO_SECCOMP, None)
        else:
            env[NO_SECCOMP] = "1"
        # Bind at a prefix that does not exist, then open a file through it.
        # (Not `test -x`: older PRoot releases do not translate faccessat2.)
        # The seccomp mode of the traced shell says whether PRoot installed its
        # filter (see ACCELERATED).
        argv = [proot, "-b", f"{native_dir()}:{PROBE_PREFIX}", "/bin/sh", "-c",
                f"cat {PROBE_PREFIX}/nbs-launch >/dev/null && echo nbsandbox-probe-ok && "
                "grep '^Seccomp:' /proc/self/status"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        finally:
            remove_leftovers(proc.pid)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _probe(self) -> Probe:
        proot = find_proot()
        if proot is None:
            return Probe.fail("proot is not installed; install it (apt-get install proot) or "
                              "put a static PRoot binary on PATH (or set NBSANDBOX_PROOT)")
        if os.environ.get("NBSANDBOX_PROOT") == proot and not (
                os.path.isfile(proot) and os.access(proot, os.X_OK)):
            return Probe.fail(f"NBSANDBOX_PROOT={proot} is not an executable file; point it at "
                              "a PRoot binary, or unset it to use proot from PATH")
        last = ""
        denied = ""
        for seccomp in (True, False):
            try:
                proc = self._run_probe(proot, seccomp=seccomp)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return Probe.fail(f"cannot run {proot}: {exc}")
            if proc.returncode == 0 and "nbsandbox-probe-ok" in proc.stdout:
                self.seccomp = seccomp and accelerated(proc.stdout)
                if self.seccomp:
                    mode = "on"
                elif seccomp:
                    mode = ("not built in (every system call stops for the tracer, "
                            "twice; Debian's PRoot 5.1 is built so)")
                else:
                    mode = "off (it does not work on this host)"
                return Probe.ok(f"{proot} works; seccomp acceleration {mode}")
            lines = proc.stderr.strip().splitlines()
            last = (lines or [f"exit status {proc.returncode}"])[-1]
            # PRoot says why ptrace failed first, then what went wrong after it.
            denied = denied or next((line for line in lines if "ptrace" in line.lower()
                                     and ("not permitted" in line.lower()
                                          or "denied" in line.lower())), "")
        if denied:
            return Probe.fail(f"ptrace is not permitted here ({denied}); a container or security "
                              "policy blocks it: use userns or fakechroot")
        return Probe.fail(f"{proot} does not work here: {last}")

    def command(self, plan: LaunchPlan) -> Command:
        proot = find_proot()
        assert proot is not None, "probe() first"
        scratch = scratch_dir()
        args = [proot]
        glue: list[str] = []
        for op in mount_ops(plan, store_visible=plan.root.present_on_host()):
            if op.kind in ("store", "ro-bind", "bind", "driver", "dev"):
                args += ["-b", f"{op.source}:{op.dest}"]
                top = first_missing(op.dest)
                if top and os.geteuid() == 0 and top not in glue:
                    glue.append(top)
            elif op.kind == "tmpfs":
                args += ["-b", f"{scratch}/home:{op.dest}"]
            elif op.kind == "hide":
                empty = f"{scratch}/empty" if os.path.isdir(op.dest) else "/dev/null"
                args += ["-b", f"{empty}:{op.dest}"]
        args += ["-w", plan.cwd]
        env = plan.gpu.library_search_env(plan.env) if plan.gpu else dict(plan.env)
        added = [TMP_DIR]
        env[TMP_DIR] = f"{scratch}/tmp"
        if not self.seccomp and NO_SECCOMP not in env:
            env[NO_SECCOMP] = "1"
            added.append(NO_SECCOMP)
        args += report(plan, unset=tuple(added), deny_untranslated=True)
        # PRoot's files in /tmp (LEFTOVERS) stay there when it is killed: the
        # supervisor's janitor removes them.
        leftovers = LEFTOVERS
        # Run by root, PRoot makes the missing directories above a binding's
        # destination in the host's own tree (e.g. /gnu for /gnu/store, mode
        # 000) for the time of the run, and leaves them when killed.
        # An IPython kernel with nbsandbox's start-up file starts on one CPU (a
        # tracer and its tracee on two CPUs wake each other at every system call;
        # docs/engines.md); the start-up file gives the kernel its CPUs back.
        one_cpu = env.get(STARTUP_VAR) == STARTUP_FILE
        return Command(supervise(args, tmpdir=scratch, leftovers=leftovers,
                                 glue=tuple(glue[:4]), one_cpu=one_cpu), env, self.name)
