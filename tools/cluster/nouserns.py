"""Run a command as a node without user namespaces (tools/cluster.sh's node2).

    python3 nouserns.py HOSTNAME COMMAND [ARGS...]

The command runs in a new user namespace that maps every uid and gid to itself (so a
root daemon keeps its power over files and users), where
/proc/sys/user/max_user_namespaces is 0 (no process in it can make another user
namespace: what a host with them disabled looks like), and in its own UTS namespace
named HOSTNAME.  Needs root.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
FULL_RANGE = "0 0 4294967295\n"


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    hostname, command = sys.argv[1], sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(mapped_w)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWUTS) != 0:
            print(f"nouserns: unshare: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            os._exit(1)
        os.write(ready_w, b"x")
        if os.read(mapped_r, 1) != b"x":
            os._exit(1)
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0\n")
        name = hostname.encode()
        if libc.sethostname(name, len(name)) != 0:
            print(f"nouserns: sethostname: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            os._exit(1)
        os.execvp(command[0], command)
    os.close(ready_w)
    os.close(mapped_r)
    if os.read(ready_r, 1) != b"x":
        os.waitpid(pid, 0)
        return 1
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(FULL_RANGE)
    os.write(mapped_w, b"x")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
