"""From a report to Landlock settings that allow what the recorded run did.

:func:`settings` turns a report's accesses into ``allowed_read``,
``allowed_write`` and ``network`` (the existing policy traits, docs/access.md);
:func:`config_text` writes them in the configuration file format
(``nbsandbox_config.json``).  Paths are collapsed so that the settings stay
short and survive small changes: beneath the home, the working directory and
the temporary directory, to their first component (a written file to its
directory, since creating it again needs the directory); beneath ``/etc``, to
its entry (``/etc/ssl``); libraries to their directory.  Each path given exists
(a missing one is replaced by its nearest existing directory).  Only accesses
that succeeded need a rule: Landlock does not restrict ``stat`` or ``readlink``,
and a missing file stays missing (``ENOENT``) under it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from nbsandbox.landlock import SYSTEM_READ, SYSTEM_WRITE
from nbsandbox.paths import is_under

#: Operations that need write access; the others need read access.
WRITE_OPS = ("write",)
#: Operations Landlock does not restrict (looking a file up, its status, a link's target).
UNRESTRICTED_OPS = ("stat", "readlink")


def _existing(path: str) -> str:
    while path != "/" and not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _collapse(path: str, top: str | None, *, write: bool) -> str:
    """``path`` shortened to ``top``'s first component beneath (``top`` itself for a
    file created directly in it), or to its directory for a write elsewhere."""
    if top is not None:
        if path == top:
            return top
        first = os.path.join(top, os.path.relpath(path, top).split(os.sep)[0])
        if write and (first == path and not os.path.isdir(path)):
            return top
        return first
    if write and not os.path.isdir(path):
        return os.path.dirname(path)
    return path


def _top(item: dict[str, Any], places: dict[str, Any]) -> str | None:
    """The directory the item's group collapses beneath (None: none)."""
    group = item.get("group")
    path = item["path"]
    if group == "home":
        candidates = places.get("homes", [])
    elif group == "cwd":
        candidates = [places.get("cwd", "")]
    elif group == "tmp":
        candidates = places.get("tmp", [])
    elif group == "etc":
        candidates = ["/etc"]
    else:
        return None
    found = [c for c in candidates if c and is_under(path, c)]
    return max(found, key=len) if found else None


def _minimal(paths: list[str], covered_by: list[str] = ()) -> list[str]:
    """``paths`` without those beneath another one (or beneath ``covered_by``)."""
    out: list[str] = []
    for p in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if not any(is_under(p, q) for q in [*out, *covered_by]):
            out.append(p)
    return sorted(out)


def settings(report: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The policy settings that allow what ``report``'s run did, and notes (one line each)
    about what could not be expressed."""
    places = report.get("places", {})
    read: list[str] = []
    write: list[str] = []
    notes: list[str] = []
    tcp = False
    for item in report["accesses"]:
        op, path = item["op"], item["path"]
        if op == "connect":
            tcp = tcp or path.startswith(("tcp:", "tcp6:"))
            continue
        if op in UNRESTRICTED_OPS or not item.get("ok"):
            continue  # a failed access (a missing file, a search candidate) needs no rule
        if not os.path.isabs(path) or path.endswith("\u2026"):
            continue
        is_write = op in WRITE_OPS
        top = _top(item, places)
        target = _existing(_collapse(path, top, write=is_write))
        if top is not None and not is_under(target, top):
            notes.append(f"{op} of {path}: {top} no longer exists; left out")
            continue
        if target == "/":
            notes.append(f"{op} of {path} would need all of /; left out")
            continue
        if item.get("group") == "libraries" and not is_write and not os.path.isdir(target):
            target = os.path.dirname(target)
        (write if is_write else read).append(target)
    system_read = [p for p in SYSTEM_READ if os.path.exists(p)]
    write = _minimal(write, [p for p in SYSTEM_WRITE if os.path.exists(p)])
    read = _minimal(read, [*write, *system_read])
    return {"allowed_read": read, "allowed_write": write, "network": tcp}, notes


def config_text(report: dict[str, Any]) -> tuple[str, list[str]]:
    """An ``nbsandbox_config.json`` that enforces :func:`settings`, and the notes."""
    values, notes = settings(report)
    return json.dumps({"SandboxPolicy": values}, indent=2) + "\n", notes
