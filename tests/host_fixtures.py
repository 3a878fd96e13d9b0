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
