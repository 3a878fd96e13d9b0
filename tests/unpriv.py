"""Run commands as an unprivileged user, optionally on a host without user namespaces.

Engines are meant for users without root.  When the test suite runs as root
(as CI does), the commands under test are started as ``nobody`` (uid 65534).

``no_userns=True`` simulates a host where user namespaces are disabled: the
child first enters a user namespace of its own (mapping its uid to itself),
writes 0 to ``/proc/sys/user/max_user_namespaces`` there -- so every further
``unshare(CLONE_NEWUSER)`` fails, as on such hosts -- and then execs the
command, which loses the namespace capabilities at exec since its uid is not 0.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Callable, Sequence

NOBODY = 65534
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE = 4

_libc = ctypes.CDLL(None, use_errno=True)


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _enter_userns_without_nesting() -> None:
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWUSER): {os.strerror(err)}")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _write("/proc/sys/user/max_user_namespaces", "0")


def preexec(*, no_userns: bool = False, uid: int = NOBODY) -> Callable[[], None]:
    """A ``preexec_fn`` that drops root (if we are root) and optionally disables userns."""

    def fn() -> None:
        if os.getuid() == 0:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            # Changing uid makes the process non-dumpable, which makes its
            # /proc/self files root's; a user namespace needs them writable.
            _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        if no_userns:
            _enter_userns_without_nesting()

    return fn


def unprivileged_env(env: dict[str, str] | None = None, home: str | None = None) -> dict[str, str]:
    """An environment fit for the unprivileged user (its own HOME, no pytest leftovers)."""
    base = dict(os.environ if env is None else env)
    base.pop("PYTEST_CURRENT_TEST", None)
    if home:
        base["HOME"] = home
    if os.getuid() == 0:
        if base.get("HOME") in (None, "", "/root"):  # root's home is not nobody's
            base["HOME"] = "/nonexistent"
        base["USER"] = base["LOGNAME"] = "nobody"
    return base


def run(argv: Sequence[str], *, no_userns: bool = False, env: dict[str, str] | None = None,
        **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` as the unprivileged user; output captured as text by default."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(list(argv), preexec_fn=preexec(no_userns=no_userns),
                          env=unprivileged_env(env), **kw)


def popen(argv: Sequence[str], *, no_userns: bool = False, env: dict[str, str] | None = None,
          **kw) -> subprocess.Popen:
    return subprocess.Popen(list(argv), preexec_fn=preexec(no_userns=no_userns),
                            env=unprivileged_env(env), **kw)


def world_tmpdir(base: str) -> str:
    """Make ``base`` traversable by the unprivileged user (pytest's tmp dirs are 0700)."""
    path = base
    while path not in ("/", ""):
        st = os.stat(path)
        if st.st_uid == os.getuid() and not st.st_mode & 0o001:
            os.chmod(path, st.st_mode | 0o755)
        path = os.path.dirname(path)
    return base
