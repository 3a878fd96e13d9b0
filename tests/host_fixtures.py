"""A host for the access tests: what a program under test may read, write or
connect to, all usable by the unprivileged user."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import unpriv


@contextmanager
def unprivileged_host(tmp_path: Path) -> Iterator[dict]:
    """A home with a ``.gitconfig``, a working directory and a listening local
    port: ``{"home", "work", "port", "base"}`` (``base`` holds the first two)."""
    base = Path(unpriv.world_tmpdir(str(tmp_path)))
    home, work = base / "home", base / "work"
    for d in (home, work):
        d.mkdir()
        os.chmod(d, 0o777)
    (home / ".gitconfig").write_text("[user]\n\tname = someone\n")
    os.chmod(home / ".gitconfig", 0o644)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield {"home": home, "work": work, "port": server.getsockname()[1], "base": base}


#: Reads ~/.gitconfig and /etc/hostname, lists $HOME, writes into $HOME and the working
#: directory, connects to a local port; prints what each gave (0 or the errno), then any
#: extra file named after the port (an access a policy did not see).
ACCESS_PROGRAM = r"""
import json, os, socket, sys
home, port = os.environ["HOME"], int(sys.argv[1])
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = 0
    except OSError as exc:
        out[name] = exc.errno
attempt("read_gitconfig", lambda: open(os.path.join(home, ".gitconfig")).read())
attempt("read_hostname", lambda: open("/etc/hostname").read())
attempt("list_home", lambda: os.listdir(home))
attempt("write_home", lambda: open(os.path.join(home, "written"), "w").write("x"))
attempt("write_cwd", lambda: open("written", "w").write("x"))
attempt("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=5).close())
for extra in sys.argv[2:]:
    attempt("extra", lambda: open(extra).read())
print(json.dumps(out))
"""
