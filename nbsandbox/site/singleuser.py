"""``nbsandbox site singleuser``: start a Jupyter single-user server from the site's pack.

What a batch job runs on a compute node that has nothing installed but the shared
directory::

    nbsandbox site singleuser --site /shared/site -- batchspawner-singleuser jupyterhub-singleuser

On the node it opens the server's root (refusing a missing pack, and one the user can
write into unless the site says ``warn``), chooses the engine there within the site's
policy, says which and why on the job's standard error (and in
``$NBSANDBOX_SERVER_ENGINE`` for the server and its kernels), points Jupyter and
nbsandbox at the site directory, and runs the server with a private ``$TMPDIR``,
passing on Slurm's signals; when the server ends, that directory goes with it (what
kernels, engines and libraries wrote there: nothing is left on the node).

A failure is one line on standard error and, inside a Slurm job, the job's comment,
which :class:`nbsandbox.site.spawner.PackSlurmSpawner` shows in the Hub.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nbsandbox.errors import NbsandboxError, StoreError
from nbsandbox.native import native_dir
from nbsandbox.policy import ADMIN_ENV, SandboxPolicy
from nbsandbox.site.layout import (
    SERVER_ENGINE_ENV,
    SiteSettings,
    config_dir,
    data_dir,
)
from nbsandbox.store import StoreRoot

SOURCE = "nbsandbox site singleuser"
NATIVE_ENV = "NBSANDBOX_NATIVE_DIR"


def writable_parts(root: StoreRoot) -> list[str]:
    """Directories of the root that this user may write into (the root, the store, an item)."""
    candidates = [root.path, root.store_dir]
    candidates += [root.store_dir / name for name in root.items()]
    return [str(p) for p in candidates if os.access(p, os.W_OK)]


def site_environment(site: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` pointed at the site: its kernelspecs first on ``JUPYTER_PATH``, its policy as
    the administrator's (``$NBSANDBOX_ADMIN_CONFIG``)."""
    out = dict(env)
    share = str(data_dir(site))
    out["JUPYTER_PATH"] = share + (":" + env["JUPYTER_PATH"] if env.get("JUPYTER_PATH") else "")
    out[ADMIN_ENV] = str(config_dir(site))
    return out


def record_failure(message: str) -> None:
    """Inside a Slurm job, make ``message`` the job's comment, where the Hub reads it."""
    job = os.environ.get("SLURM_JOB_ID")
    scontrol = shutil.which("scontrol")
    if not job or not scontrol:
        return
    comment = f"nbsandbox: {message}"[:500]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([scontrol, "update", f"JobId={job}", f"Comment={comment}"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=15, check=False)


def prepare_server(site: Path, program: str, args: Sequence[str],
                   engine: str | None = None, root_spec: str | None = None):
    """The launch of the server (a :class:`nbsandbox.launch.Launch`) and warnings to show."""
    from nbsandbox.launch import make_plan, prepare

    settings = SiteSettings.read(site)
    os.environ[ADMIN_ENV] = str(config_dir(site))
    policy = SandboxPolicy().effective_policy(None, SOURCE)
    spec = root_spec or settings.server_root
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    path = policy.root_path(spec, SOURCE)
    if not os.path.isdir(path):
        raise StoreError(f"the site's pack {spec} is missing on node {node}: {path} does not "
                         "exist there; mount the shared pack directory on this node")
    root = StoreRoot.open(path)
    root.validate()
    warnings = []
    writable = writable_parts(root)
    if writable:
        what = (f"the pack {root.path} is writable by {_user()} ({writable[0]}), so a program "
                "could change what every kernel runs; make it read-only (chmod -R a-w)")
        if settings.writable_pack == "refuse":
            raise StoreError(what + " (writable_pack is 'refuse' in the site settings)")
        warnings.append("warning: " + what)
    env = site_environment(site, dict(os.environ))
    # nbsandbox inside the server (the provisioner) uses these native components, which
    # are at a host path: under an interposing engine (fakechroot) the pack's own copy
    # has a store path that a nested loader cannot open.
    env.setdefault(NATIVE_ENV, os.fspath(native_dir()))
    plan = make_plan(root, program, args, env=env)
    launch = prepare(plan, engine, policy=policy, source=SOURCE)
    resolution = launch.resolution
    skipped = "; ".join(f"{n}: {r}" for n, r in resolution.skipped)
    reason = f"engine {resolution.engine.name} (requested {resolution.requested}" + \
        (f"; skipped {skipped})" if skipped else ")")
    launch.command.env[SERVER_ENGINE_ENV] = f"{node}: {reason}"
    warnings.append(f"nbsandbox: node {node}: the single-user server runs from {root.path} "
                    f"with {reason}")
    return launch, warnings


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def run_singleuser(site: Path, command: Sequence[str], *, engine: str | None = None,
                   root_spec: str | None = None) -> int:
    """Run the server until it exits, then remove the job's scratch directory; on a
    failure to start, say why in one line (and in the Slurm job's comment).

    The server gets a private ``$TMPDIR`` (what kernels, engines and libraries write
    there goes with the job) and every signal this process gets (Slurm's SIGTERM on
    ``scancel`` or a stop from the Hub), so it shuts its kernels down as usual.
    """
    from nbsandbox.launch import spawn

    job = os.environ.get("SLURM_JOB_ID") or str(os.getpid())
    scratch = tempfile.mkdtemp(prefix=f"nbsandbox-job-{job}-")
    try:
        try:
            os.environ["TMPDIR"] = scratch
            launch, lines = prepare_server(site, command[0], command[1:], engine, root_spec)
        except NbsandboxError as exc:
            record_failure(str(exc))
            raise
        for line in lines:
            print(line, file=sys.stderr, flush=True)
        try:
            proc = spawn(launch.command)
        except OSError as exc:
            message = f"cannot start {command[0]} from the site's pack: {exc.strerror}"
            record_failure(message)
            raise NbsandboxError(message) from None
        for sig in FORWARDED:
            signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
        status = proc.wait()
        return 128 - status if status < 0 else status
    finally:
        _remove(scratch)


#: Signals passed on to the server (Slurm sends SIGTERM, then SIGKILL after KillWait).
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _remove(path: str) -> None:
    """Remove a scratch tree, read-only directories in it too."""
    def writable_again(func, name, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o700)
            os.chmod(name, 0o700)
            func(name)

    shutil.rmtree(path, onerror=writable_again)
