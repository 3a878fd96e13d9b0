"""The plan's view as mount operations, for the namespace engines.

Namespace engines mirror the host: the program sees the host's ``/`` as it
is, plus the store at its prefix and the plan's binds, hidden paths and
private home (the plan's :class:`~nbsandbox.view.View`).  :func:`mount_ops`
lists those operations in order; each engine translates them to its tool's
options.  :func:`synthetic_dirs` and :func:`mirror_entries` say what must be
built so that every destination can become a mount point.
"""

from __future__ import annotations

import os

from nbsandbox.plan import LaunchPlan
from nbsandbox.view import ViewEntry

#: One mount operation: an entry of the plan's view (see :mod:`nbsandbox.view`).
MountOp = ViewEntry


def mount_ops(plan: LaunchPlan, *, store_visible: bool = False) -> list[MountOp]:
    """The operations that turn a mirror of the host into the plan's view, in order:
    the entries of ``plan.view``.

    ``store_visible``: the host already has the store at its prefix, so it is
    not bound again.
    """
    return [e for e in plan.view.entries if not (store_visible and e.kind == "store")]


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
