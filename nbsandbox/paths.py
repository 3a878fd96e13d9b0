"""Path helpers shared by the plan, the policy, the engines and the front ends."""

from __future__ import annotations

import os


def is_under(path: str, top: str) -> bool:
    """Whether ``path`` is ``top`` or inside it, by name (normalized, no file system
    access): ``/a/b`` is under ``/a`` and ``/a/``, ``/ab`` is not."""
    path, top = os.path.normpath(path), os.path.normpath(top)
    return path == top or path.startswith(top.rstrip("/") + "/")
