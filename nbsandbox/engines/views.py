"""The file-system view an engine must build, as a list of mount operations.

Namespace engines mirror the host: the program sees the host's ``/`` as it
is, plus the store at its prefix and the plan's binds, hidden paths and
private home.  :func:`mount_ops` lists those operations in order; each engine
translates them to its tool's options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nbsandbox.paths import is_under
from nbsandbox.plan import LaunchPlan


@dataclass(frozen=True)
class MountOp:
    """``kind`` is ``store`` (read-only bind), ``bind``, ``ro-bind``, ``hide`` or ``tmpfs``."""

    kind: str
    dest: str
    source: str = ""


def mount_ops(plan: LaunchPlan, *, store_visible: bool = False) -> list[MountOp]:
    """The operations that turn a mirror of the host into the plan's view, in order.

    ``store_visible``: the host already has the store at its prefix, so it is
    not bound again.
    """
    ops: list[MountOp] = []
    if not store_visible:
        ops.append(MountOp("store", plan.root.prefix, os.fspath(plan.root.store_dir)))
    if plan.isolate_home:
        ops.append(MountOp("tmpfs", plan.home))
        if plan.keep_cwd and is_under(plan.cwd, plan.home):
            ops.append(MountOp("bind", plan.cwd, plan.cwd))
    for bind in plan.binds:
        ops.append(MountOp("ro-bind" if bind.read_only else "bind", bind.dest, bind.source))
    for path in plan.hide:
        ops.append(MountOp("hide", path))
    return ops


def synthetic_dirs(dests: list[str]) -> list[str]:
    """Directories that must be built (not bound from the host) so that every
    destination in ``dests`` can become a mount point.

    A destination that exists on the host needs nothing: it is mounted over.
    One that does not needs each of its ancestors synthesized, so that the
    missing directories can be created without touching the host.  Sorted
    parents first; ``/`` is always synthetic.
    """
    result = {"/"}
    for dest in dests:
        if os.path.lexists(dest):
            continue
        parent = os.path.dirname(dest)
        while parent != "/":
            result.add(parent)
            parent = os.path.dirname(parent)
    return sorted(result, key=lambda p: (p.count("/") if p != "/" else 0, p))


def mirror_entries(synthetic: list[str], mount_points: set[str]) -> list[tuple[str, str]]:
    """(kind, path) of the host entries to bind or re-create inside synthetic dirs.

    ``kind`` is ``symlink`` or ``bind``; entries that are synthetic themselves
    or will be mount points are left out.
    """
    skip = set(synthetic) | mount_points
    entries: list[tuple[str, str]] = []
    for directory in synthetic:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if path in skip:
                continue
            entries.append(("symlink" if os.path.islink(path) else "bind", path))
    return entries
