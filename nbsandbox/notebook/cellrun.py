"""What a ``%%sandbox`` cell records about its run, and how a re-run finds its root again.

Front ends save cell outputs, not what a kernel knows, so the magic publishes
one ``display_data`` output per run whose only data is :data:`MIME` (front ends
that do not know the type show nothing) and whose metadata holds the record::

    {"nbsandbox": {"root": "ARG AS GIVEN", "digest": "...", "prefix": "/gnu/store",
                   "engine": "userns", "why": "engine: userns (requested: default)"}}

When a notebook is re-run elsewhere, ``--root`` arguments name paths of the
first host.  :func:`redirect` maps them to the packs found by digest: the
verifier passes ``{argument: path}`` in :data:`MAP_ENV` to the kernel.
"""

from __future__ import annotations

import json
import os
from typing import Any

#: The MIME type of a run record in a cell's outputs.
MIME = "application/vnd.nbsandbox.run+json"
#: Key of nbsandbox's metadata (in outputs, cells and the notebook).
KEY = "nbsandbox"
#: Variable holding {"--root argument": "path"} for re-runs.
MAP_ENV = "NBSANDBOX_ROOT_MAP"
#: What stands for "no --root given" (the kernel's own root) in records and maps.
DEFAULT = ""


def redirect(root_arg: str | None) -> str | None:
    """The root to open for a ``--root`` argument: as given, unless a re-run maps it."""
    raw = os.environ.get(MAP_ENV)
    if not raw:
        return root_arg
    try:
        mapping = json.loads(raw)
    except ValueError:
        return root_arg
    if not isinstance(mapping, dict):
        return root_arg
    target = mapping.get(root_arg or DEFAULT)
    return target if isinstance(target, str) and target else root_arg


def run_record(root: Any, root_arg: str | None, resolution: Any) -> dict[str, Any]:
    """The record of one sandboxed run (``root``: the StoreRoot; ``resolution``: the
    engine choice)."""
    from nbsandbox import identity

    digest = root.metadata.digest if root.metadata is not None else None
    if digest is None:
        digest = identity.current_digest(root)
    return {
        "root": root_arg or DEFAULT,
        "path": os.fspath(root.path),
        "digest": digest,
        "prefix": root.prefix,
        "engine": resolution.engine.name,
        "why": resolution.explain(),
    }


def publish(shell: Any, root: Any, root_arg: str | None, resolution: Any) -> None:
    """Add the run record to the running cell's outputs (only in a kernel, where outputs
    are saved; a terminal IPython shows nothing)."""
    if getattr(shell, "kernel", None) is None:
        return
    from IPython.display import publish_display_data

    record = run_record(root, root_arg, resolution)
    publish_display_data({MIME: {"digest": record["digest"]}}, metadata={KEY: record})


def records_in(outputs: list[Any]) -> list[dict[str, Any]]:
    """The run records among a cell's outputs."""
    found = []
    for out in outputs:
        if out.get("output_type") == "display_data" and MIME in out.get("data", {}):
            meta = out.get("metadata", {}).get(KEY)
            if isinstance(meta, dict):
                found.append(meta)
    return found


def is_record(output: Any) -> bool:
    return output.get("output_type") == "display_data" and MIME in output.get("data", {})
