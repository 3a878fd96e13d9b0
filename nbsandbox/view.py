"""The sandbox's view of the host: what a plan binds where, and what it hides.

A :class:`~nbsandbox.plan.LaunchPlan` computes its :class:`View` once
(:attr:`~nbsandbox.plan.LaunchPlan.view`); every engine translates the same entries into its own
mechanism (mount operations for the namespace engines, path mappings for the
fakechroot engine), and the kernel provisioner answers "where is this file?"
from it (:meth:`View.host_path`).  Nothing else works the view out again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nbsandbox.paths import is_under


@dataclass(frozen=True)
class ViewEntry:
    """One change to a mirror of the host, at sandbox path ``dest``.

    ``kind`` is ``store`` (the root's store at its prefix, read-only), ``tmpfs``
    (an empty private directory: the isolated home), ``bind`` or ``ro-bind``
    (host path ``source`` at ``dest``), ``hide`` (``dest`` appears empty), or, for
    the host's GPU driver, ``driver`` (one of its files, read-only at its host
    path) and ``dev`` (one of its device nodes, at its host path).
    """

    kind: str
    dest: str
    source: str = ""


@dataclass(frozen=True)
class View:
    """The entries that turn a mirror of the host into a plan's view, in the order
    they apply (a later entry may lie inside an earlier one)."""

    entries: tuple[ViewEntry, ...]
    #: The store's prefix and where the store is on the host.
    prefix: str
    store_dir: str

    @property
    def home(self) -> str | None:
        """The private home, if the view has one."""
        return next((e.dest for e in self.entries if e.kind == "tmpfs"), None)

    def host_path(self, path: str) -> str | None:
        """Where the sandbox path ``path`` (absolute) is on the host, by name: ``None``
        when the sandbox sees nothing there (a hidden path, the private home outside
        what is bound into it).  The file itself may not exist."""
        path = os.path.normpath(path)
        if any(is_under(path, e.dest) for e in self.entries if e.kind == "hide"):
            return None
        if is_under(path, self.prefix):
            return os.path.normpath(self.store_dir + path[len(self.prefix):])
        binds = [e for e in self.entries if e.kind in ("bind", "ro-bind")]
        home = self.home
        if home is not None and is_under(path, home) and \
                not any(is_under(path, e.dest) for e in binds):
            return None
        host = path
        for bind in binds:  # the last one that covers the path wins
            if is_under(path, bind.dest):
                host = os.path.normpath(bind.source + path[len(bind.dest):])
        return host
