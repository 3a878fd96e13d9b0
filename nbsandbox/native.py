"""Where the compiled native components are.

They are built by ``pip install`` (see ``native/build.py``) into
``nbsandbox/_native/``.  ``NBSANDBOX_NATIVE_DIR`` points elsewhere, e.g. to a
sanitizer build made by the tests.
"""

from __future__ import annotations

import os
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
    return path
