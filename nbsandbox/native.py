"""Where the compiled native components are.

They are built by ``pip install`` (see ``native/build.py``) into
``nbsandbox/_native/``.  ``NBSANDBOX_NATIVE_DIR`` points elsewhere, e.g. to a
sanitizer build made by the tests.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from nbsandbox.errors import NbsandboxError

PACKAGE_DIR = Path(__file__).resolve().parent


def native_dir() -> Path:
    override = os.environ.get("NBSANDBOX_NATIVE_DIR")
    return Path(override) if override else PACKAGE_DIR / "_native"


def native_path(name: str) -> Path:
    """Absolute path of native component ``name`` (e.g. ``nbs-launch``)."""
    path = native_dir() / name
    if not path.exists():
        raise NbsandboxError(
            f"native component {name} is missing from {path.parent}; "
            "reinstall nbsandbox with pip (it compiles them; needs a C compiler)"
        )
    _warn_if_stale(path.parent)
    return path


@lru_cache(maxsize=4)
def _warn_if_stale(directory: Path) -> None:
    """In a checkout (``native/`` next to the package, an editable install): warn once
    when the package's own build is older than the sources, which would run the old
    code (e.g. an access report that records nothing)."""
    sources = PACKAGE_DIR.parent / "native"
    if directory != PACKAGE_DIR / "_native" or not sources.is_dir():
        return
    try:
        built = min(p.stat().st_mtime for p in directory.iterdir() if p.is_file())
        newest = max(p.stat().st_mtime for p in sources.rglob("*.[ch]"))
    except (OSError, ValueError):
        return
    if newest > built:
        print(f"nbsandbox: warning: the native components in {directory} are older than "
              f"the sources in {sources}; rebuild them (pip install -e . or python "
              f"native/build.py --out {directory})", file=sys.stderr, flush=True)
