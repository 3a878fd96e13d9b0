#!/usr/bin/env python3
"""Which path-taking system calls PRoot passes to the kernel untranslated.

    python tools/proot_syscalls.py             # the calls PRoot gets wrong here
    python tools/proot_syscalls.py --all       # every call, side by side
    python tools/proot_syscalls.py --filter    # also under nbs-launch's seccomp filter

Each system call is made, raw (no C library wrapper, so no fallback), on a
directory twice: once at its real path, natively, and once at a path that
exists only through a PRoot binding (``proot -b DIR:/nbs-proot-probe``).  A
call PRoot translates gives the same result both times; one it passes through
fails under PRoot with ENOENT, since the kernel looks for the binding's path
on the host.  Both runs happen inside ``unshare -Urm`` where that works, so
that the mount API calls get past their permission checks.  The result is
recorded in docs/engines.md; run this again for another PRoot release.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile

GUEST = "/nbs-proot-probe"
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000

# x86_64 numbers (from 424 on the same everywhere).
NR = dict(
    open=2, stat=4, lstat=6, access=21, execve=59, truncate=76, chdir=80, rename=82, mkdir=83,
    rmdir=84, creat=85, link=86, unlink=87, symlink=88, readlink=89, chmod=90, chown=92,
    lchown=94, utime=132, mknod=133, statfs=137, chroot=161, mount=165, umount2=166,
    setxattr=188, lsetxattr=189, getxattr=191, lgetxattr=192, listxattr=194, llistxattr=195,
    removexattr=197, lremovexattr=198, utimes=235, inotify_add_watch=254, openat=257,
    mkdirat=258, mknodat=259, fchownat=260, futimesat=261, newfstatat=262, unlinkat=263,
    renameat=264, linkat=265, symlinkat=266, readlinkat=267, fchmodat=268, faccessat=269,
    utimensat=280, fanotify_mark=301, name_to_handle_at=303, renameat2=316, execveat=322,
    statx=332, open_tree=428, move_mount=429, fspick=433, openat2=437, faccessat2=439,
    mount_setattr=442, fchmodat2=452, setxattrat=463, getxattrat=464, listxattrat=465,
    removexattrat=466, open_tree_attr=467, file_getattr=468, file_setattr=469,
)


def make_tree(path: str) -> None:
    """The directory the calls work on: f (executable), link -> f, true, w/ (scratch)."""
    os.makedirs(os.path.join(path, "w"))
    shutil.copy("/bin/true", os.path.join(path, "true"))
    with open(os.path.join(path, "f"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(os.path.join(path, "f"), 0o755)
    os.symlink("f", os.path.join(path, "link"))


def calls(root: str) -> list[tuple[str, str]]:
    """Make every call on ROOT; (name, "ok" or the errno's name)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def p(rel: str) -> ctypes.c_char_p:
        return ctypes.c_char_p(os.path.join(root, rel).encode())

    def sc(name: str, *args) -> str:
        conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
        if libc.syscall(ctypes.c_long(NR[name]), *conv) < 0:
            err = ctypes.get_errno()
            return errno.errorcode.get(err, str(err))
        return "ok"

    def in_child(fn) -> str:
        pid = os.fork()
        if pid == 0:
            r = fn()
            os._exit(0 if r == "ok" else 100 + ctypes.get_errno())
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        return "ok" if code == 0 else errno.errorcode.get(code - 100, f"exit {code}")

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                    ("resolve", ctypes.c_uint64)]

    class XattrArgs(ctypes.Structure):
        _fields_ = [("value", ctypes.c_uint64), ("size", ctypes.c_uint32),
                    ("flags", ctypes.c_uint32)]

    buf = ctypes.create_string_buffer(4096)
    val = ctypes.create_string_buffer(b"v")
    how = OpenHow(os.O_RDONLY, 0, 0)
    xset = XattrArgs(ctypes.cast(val, ctypes.c_void_p).value, 1, 0)
    xget = XattrArgs(ctypes.cast(buf, ctypes.c_void_p).value, 256, 0)
    attr = ctypes.create_string_buffer(24)  # struct file_attr, all zero
    handle = ctypes.create_string_buffer(256)
    ctypes.c_uint32.from_buffer(handle).value = 128
    mnt_id = ctypes.c_int()
    ms_private = (ctypes.c_uint64 * 4)(0, 0, 1 << 18, 0)
    argv = (ctypes.c_char_p * 2)(b"true", None)
    envp = (ctypes.c_char_p * 1)(None)
    inotify = libc.inotify_init1(os.O_CLOEXEC)
    fanotify = libc.fanotify_init(0x200, 0)  # FAN_REPORT_FID: allowed unprivileged
    name = ctypes.c_char_p
    w = "w/creat"

    def exec_fd() -> str:
        fd = os.open(os.path.join(root, "true"), os.O_RDONLY)
        return sc("execveat", fd, name(b""), argv, envp, AT_EMPTY_PATH)

    def unix_bind() -> str:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.bind(os.path.join(root, "w/sock"))
            except OSError as e:
                return errno.errorcode[e.errno]
        return "ok"

    tests = [
        ("open", lambda: sc("open", p("f"), 0)),
        ("creat", lambda: sc("creat", p(w), 0o644)),
        ("openat", lambda: sc("openat", AT_FDCWD, p("f"), 0)),
        ("openat2", lambda: sc("openat2", AT_FDCWD, p("f"), ctypes.byref(how), 24)),
        ("stat", lambda: sc("stat", p("f"), buf)),
        ("lstat", lambda: sc("lstat", p("f"), buf)),
        ("newfstatat", lambda: sc("newfstatat", AT_FDCWD, p("f"), buf, 0)),
        ("statx", lambda: sc("statx", AT_FDCWD, p("f"), 0, 0x7FF, buf)),
        ("statfs", lambda: sc("statfs", p("f"), buf)),
        ("access", lambda: sc("access", p("f"), os.X_OK)),
        ("faccessat", lambda: sc("faccessat", AT_FDCWD, p("f"), os.X_OK)),
        ("faccessat2", lambda: sc("faccessat2", AT_FDCWD, p("f"), os.X_OK, 0x200)),
        ("readlink", lambda: sc("readlink", p("link"), buf, 4096)),
        ("readlinkat", lambda: sc("readlinkat", AT_FDCWD, p("link"), buf, 4096)),
        ("chdir", lambda: in_child(lambda: sc("chdir", p("")))),
        ("execve", lambda: in_child(lambda: sc("execve", p("true"), argv, envp))),
        ("execveat", lambda: in_child(
            lambda: sc("execveat", AT_FDCWD, p("true"), argv, envp, 0))),
        ("execveat(fd, AT_EMPTY_PATH)", lambda: in_child(exec_fd)),
        ("mkdir", lambda: sc("mkdir", p("w/d1"), 0o755)),
        ("mkdirat", lambda: sc("mkdirat", AT_FDCWD, p("w/d2"), 0o755)),
        ("rmdir", lambda: sc("rmdir", p("w/d1"))),
        ("symlink", lambda: sc("symlink", name(b"x"), p("w/s1"))),
        ("symlinkat", lambda: sc("symlinkat", name(b"x"), AT_FDCWD, p("w/s2"))),
        ("link", lambda: sc("link", p(w), p("w/l1"))),
        ("linkat", lambda: sc("linkat", AT_FDCWD, p(w), AT_FDCWD, p("w/l2"), 0)),
        ("rename", lambda: sc("rename", p("w/l1"), p("w/l3"))),
        ("renameat", lambda: sc("renameat", AT_FDCWD, p("w/l3"), AT_FDCWD, p("w/l4"))),
        ("renameat2", lambda: sc("renameat2", AT_FDCWD, p("w/l4"), AT_FDCWD, p("w/l5"), 0)),
        ("unlink", lambda: sc("unlink", p("w/l5"))),
        ("unlinkat", lambda: sc("unlinkat", AT_FDCWD, p("w/d2"), 0x200)),
        ("chmod", lambda: sc("chmod", p(w), 0o600)),
        ("fchmodat", lambda: sc("fchmodat", AT_FDCWD, p(w), 0o640)),
        ("fchmodat2", lambda: sc("fchmodat2", AT_FDCWD, p(w), 0o644, 0)),
        ("chown", lambda: sc("chown", p(w), -1, -1)),
        ("lchown", lambda: sc("lchown", p(w), -1, -1)),
        ("fchownat", lambda: sc("fchownat", AT_FDCWD, p(w), -1, -1, 0)),
        ("utime", lambda: sc("utime", p(w), None)),
        ("utimes", lambda: sc("utimes", p(w), None)),
        ("utimensat", lambda: sc("utimensat", AT_FDCWD, p(w), None, 0)),
        ("futimesat", lambda: sc("futimesat", AT_FDCWD, p(w), None)),
        ("truncate", lambda: sc("truncate", p(w), 0)),
        ("mknod", lambda: sc("mknod", p("w/fifo1"), 0o10644, 0)),
        ("mknodat", lambda: sc("mknodat", AT_FDCWD, p("w/fifo2"), 0o10644, 0)),
        ("setxattr", lambda: sc("setxattr", p(w), name(b"user.a"), val, 1, 0)),
        ("lsetxattr", lambda: sc("lsetxattr", p(w), name(b"user.b"), val, 1, 0)),
        ("getxattr", lambda: sc("getxattr", p(w), name(b"user.a"), buf, 256)),
        ("lgetxattr", lambda: sc("lgetxattr", p(w), name(b"user.a"), buf, 256)),
        ("listxattr", lambda: sc("listxattr", p(w), buf, 256)),
        ("llistxattr", lambda: sc("llistxattr", p(w), buf, 256)),
        ("removexattr", lambda: sc("removexattr", p(w), name(b"user.a"))),
        ("lremovexattr", lambda: sc("lremovexattr", p(w), name(b"user.b"))),
        ("setxattrat", lambda: sc("setxattrat", AT_FDCWD, p(w), 0, name(b"user.c"),
                                  ctypes.byref(xset), 16)),
        ("getxattrat", lambda: sc("getxattrat", AT_FDCWD, p(w), 0, name(b"user.c"),
                                  ctypes.byref(xget), 16)),
        ("listxattrat", lambda: sc("listxattrat", AT_FDCWD, p(w), 0, buf, 256)),
        ("removexattrat", lambda: sc("removexattrat", AT_FDCWD, p(w), 0, name(b"user.c"))),
        ("inotify_add_watch", lambda: sc("inotify_add_watch", inotify, p("f"), 0x20)),
        ("fanotify_mark", lambda: sc("fanotify_mark", fanotify, 1, 0x20, AT_FDCWD, p("f"))),
        ("name_to_handle_at", lambda: sc("name_to_handle_at", AT_FDCWD, p("f"), handle,
                                         ctypes.byref(mnt_id), 0)),
        ("open_tree", lambda: sc("open_tree", AT_FDCWD, p("f"), os.O_CLOEXEC)),
        ("open_tree_attr", lambda: sc("open_tree_attr", AT_FDCWD, p("f"), os.O_CLOEXEC,
                                      None, 0)),
        ("move_mount", lambda: sc("move_mount", AT_FDCWD, p("f"), AT_FDCWD, p("w"), 0)),
        ("mount_setattr", lambda: sc("mount_setattr", AT_FDCWD, p("f"), 0, ms_private, 32)),
        ("fspick", lambda: sc("fspick", AT_FDCWD, p("f"), 1)),
        ("file_getattr", lambda: sc("file_getattr", AT_FDCWD, p("f"), buf, 24, 0)),
        ("file_setattr", lambda: sc("file_setattr", AT_FDCWD, p("f"), attr, 24, 0)),
        ("mount", lambda: sc("mount", None, p("f"), None, 1 << 18, None)),
        ("umount2", lambda: sc("umount2", p("f"), 0)),
        ("chroot", lambda: in_child(lambda: sc("chroot", p("")))),
        ("bind(AF_UNIX)", unix_bind),
    ]
    return [(label, fn()) for label, fn in tests]


def run_calls(prefix: list[str], root: str) -> dict[str, str]:
    argv = [*prefix, sys.executable, os.path.abspath(__file__), "--calls", root]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"proot_syscalls: {' '.join(argv[:3])}... failed: {proc.stderr.strip()}")
    return dict(line.split("\t") for line in proc.stdout.splitlines())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="show every call, not only differences")
    ap.add_argument("--filter", action="store_true",
                    help="add a column: under PRoot with nbs-launch report --deny-untranslated")
    ap.add_argument("--calls", metavar="ROOT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.calls:
        for label, result in calls(args.calls):
            print(f"{label}\t{result}")
        return 0
    proot = os.environ.get("NBSANDBOX_PROOT") or shutil.which("proot")
    if not proot:
        raise SystemExit("proot_syscalls: proot is not installed (apt-get install proot)")
    ns = ["unshare", "-Urm"]
    if subprocess.run([*ns, "true"], capture_output=True).returncode != 0:
        ns = []
        print("(no user namespace here: the mount API calls stop at EPERM both ways)")
    columns = [("native", None), ("proot", [])]
    if args.filter:
        from nbsandbox.native import native_path

        report = [str(native_path("nbs-launch")), "report", "--fd", "2", "--deny-untranslated",
                  "--"]
        columns.append(("proot+filter", report))
    results = []
    with tempfile.TemporaryDirectory(prefix="nbs-proot-probe-") as tmp:
        for i, (_label, inner) in enumerate(columns):
            tree = os.path.join(tmp, str(i))
            make_tree(tree)
            if inner is None:
                results.append(run_calls(ns, tree))
            else:
                results.append(run_calls([*ns, proot, "-b", f"{tree}:{GUEST}", *inner], GUEST))
    width = max(len(k) for k in results[0])
    print(f"{'system call':{width}}  " + "  ".join(f"{c:14}" for c, _ in columns))
    for call, native in results[0].items():
        row = [r.get(call, "?") for r in results]
        if args.all or row[1] != native:
            print(f"{call:{width}}  " + "  ".join(f"{v:14}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
