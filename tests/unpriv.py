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
import pty
import select
import signal
import subprocess
import time
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


def default_interrupt_signals() -> None:
    """Give this process, and so the programs it starts, SIGINT and SIGQUIT back when
    they were inherited ignored: a run started in the background of a non-interactive
    shell (`cmd &`, nohup, some CI runners) has them ignored, and every program it
    starts would too, so ^C tests would see programs that cannot be interrupted.  (A
    handled signal goes back to its default in the programs this process starts.)"""
    for sig, handler in ((signal.SIGINT, signal.default_int_handler),
                         (signal.SIGQUIT, signal.SIG_DFL)):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, handler)


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


def processes_with(needle: str) -> list[int]:
    """Live processes (not this one) whose environment contains ``needle``."""
    data = needle.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if data in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def world_tmpdir(base: str) -> str:
    """Make ``base`` traversable by the unprivileged user (pytest's tmp dirs are 0700)."""
    path = base
    while path not in ("/", ""):
        st = os.stat(path)
        if st.st_uid == os.getuid() and not st.st_mode & 0o001:
            os.chmod(path, st.st_mode | 0o755)
        path = os.path.dirname(path)
    return base


# -- simulated hosts (tests/test_host_matrix.py, tools/host_matrix.py) --------------
#
# Real kernel mechanisms, installed in a ``preexec_fn`` and inherited by
# everything the command starts: seccomp filters (denied system calls return
# EPERM, as under a container's or a security module's policy) and user
# namespaces.

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
_BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_BPF_RET_K = 0x06  # BPF_RET | BPF_K

#: (AUDIT_ARCH_*, {name: number}) of the system calls the simulations deny.
_SYSCALLS: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {
        "write": 1, "ptrace": 101, "pivot_root": 155, "mount": 165, "umount2": 166,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "landlock_create_ruleset": 444,
    }),
    "aarch64": (0xC00000B7, {
        "write": 64, "ptrace": 117, "pivot_root": 41, "mount": 40, "umount2": 39,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "landlock_create_ruleset": 444,
    }),
}

#: The system calls that create or change mounts.
MOUNT_SYSCALLS = ("mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen",
                  "fsconfig", "fsmount", "fspick", "mount_setattr")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_supported() -> bool:
    """Whether :func:`seccomp_program` knows this machine's system call numbers."""
    import platform

    return platform.machine() in _SYSCALLS


def seccomp_program(deny: Sequence[str] = (), *, deny_write_of: int | None = None
                    ) -> list[tuple[int, int, int, int]]:
    """A classic BPF seccomp program: the system calls ``deny`` fail with EPERM.

    ``deny_write_of``: ``write(2)`` of exactly that many bytes to a descriptor
    other than 0, 1 and 2 fails with EPERM too (see :func:`map_write_denied`).
    Other architectures' system calls (a 32-bit program) are allowed.
    """
    import platform

    arch, numbers = _SYSCALLS[platform.machine()]
    eperm = SECCOMP_RET_ERRNO | 1
    prog: list[tuple[int, int, int, int]] = [(_BPF_LD_W_ABS, 0, 0, 4)]  # seccomp_data.arch
    checks = [numbers[name] for name in deny]
    # arch != ours -> allow (jump to the final ALLOW)
    tail = len(checks) * 2 + (6 if deny_write_of is not None else 0)
    prog.append((_BPF_JEQ_K, 0, 1 + tail, arch))
    prog.append((_BPF_LD_W_ABS, 0, 0, 0))  # seccomp_data.nr
    for nr in checks:
        prog.append((_BPF_JEQ_K, 0, 1, nr))
        prog.append((_BPF_RET_K, 0, 0, eperm))
    if deny_write_of is not None:
        prog += [
            (_BPF_JEQ_K, 0, 5, numbers["write"]),
            (_BPF_LD_W_ABS, 0, 0, 16),  # args[0] (fd), low word
            (_BPF_JGE_K, 0, 3, 3),
            (_BPF_LD_W_ABS, 0, 0, 32),  # args[2] (count), low word
            (_BPF_JEQ_K, 0, 1, deny_write_of),
            (_BPF_RET_K, 0, 0, eperm),
        ]
    prog.append((_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return prog


def install_seccomp(program: list[tuple[int, int, int, int]]) -> None:
    """Install a seccomp filter on the calling thread (and all it will exec)."""
    filters = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
    fprog = _SockFprog(len(program), filters)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")


def map_write_length(uid: int = NOBODY) -> int:
    """Length of the ``uid_map`` line an unprivileged launcher writes: ``"UID UID 1\\n"``."""
    return len(f"{uid} {uid} 1\n")


def enter_user_namespace(*, as_root: bool = True) -> None:
    """Enter a new user namespace (and mount namespace), as ``unshare -Ur`` does.

    ``as_root``: map uid/gid 0 inside to ours (a rootless container); else
    map ours to itself.  Nested user namespaces stay possible.
    """
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | 0x00020000) != 0:  # | CLONE_NEWNS
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWUSER): {os.strerror(err)}")
    _write("/proc/self/setgroups", "deny")
    inner_uid, inner_gid = (0, 0) if as_root else (uid, gid)
    _write("/proc/self/uid_map", f"{inner_uid} {uid} 1")
    _write("/proc/self/gid_map", f"{inner_gid} {gid} 1")


def host_preexec(*, no_userns: bool = False, deny: Sequence[str] = (),
                 deny_map_write: bool = False, nested: bool = False,
                 uid: int = NOBODY) -> Callable[[], None]:
    """A ``preexec_fn`` that simulates a host: see :data:`MOUNT_SYSCALLS` and
    :func:`seccomp_program` for ``deny``/``deny_map_write``; ``nested`` runs the
    command inside a user namespace of its own (uid 0 there), like a rootless
    container.  Drops root first, like :func:`preexec`.
    """
    drop = preexec(no_userns=no_userns, uid=uid)

    def fn() -> None:
        drop()
        if nested:
            enter_user_namespace(as_root=True)
        if deny or deny_map_write:
            length = map_write_length(os.getuid()) if deny_map_write else None
            install_seccomp(seccomp_program(deny, deny_write_of=length))

    return fn


def terminal_dialogue(argv: Sequence[str], env: dict[str, str],
                      timeout: float = 10) -> tuple[bytes, int]:
    """Run ``argv`` as the unprivileged user in a session whose terminal is a new pty
    and talk to it as a person would: wait for "ask", answer "yes", wait for "ready",
    type ^C (the terminal sends SIGINT to the foreground group), wait for "got-int".
    Returns everything the terminal showed and the exit code (``waitstatus_to_exitcode``).
    The program is SIGKILLed if the dialogue fails."""
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child: a session with the pty as terminal
        try:
            preexec()()
            os.execve(argv[0], list(argv), env)
        finally:
            os._exit(126)
    out = b""

    def expect(marker: bytes) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while marker not in out and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                out += os.read(master, 1024)
        assert marker in out, out

    status = None
    try:
        # Reading the terminal from a background process group would stop the program.
        expect(b"ask")
        os.write(master, b"yes\n")
        expect(b"ready")
        os.write(master, b"\x03")
        expect(b"got-int")
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)
    return out, os.waitstatus_to_exitcode(status)
