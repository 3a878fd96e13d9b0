"""A launch plan: what to run, from which store root, and how the sandbox looks.

A plan is plain data.  Front ends build it (see :func:`nbsandbox.launch.request`),
engines turn it into a :class:`~nbsandbox.engines.base.Command`, each translating
the same :attr:`LaunchPlan.view` into its own mechanism.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from nbsandbox.paths import is_under
from nbsandbox.store import StoreRoot
from nbsandbox.view import View, ViewEntry

if TYPE_CHECKING:
    from nbsandbox.gpu import GpuView


@dataclass(frozen=True)
class Bind:
    """Make host path ``source`` visible at ``dest`` inside the sandbox."""

    source: str
    dest: str
    read_only: bool = False

    @classmethod
    def parse(cls, spec: str, *, read_only: bool = False) -> Bind:
        """Parse ``SRC[:DST]`` (DST defaults to SRC); both must be absolute."""
        from nbsandbox.errors import UsageError

        src, sep, dst = spec.partition(":")
        dst = dst if sep else src
        if not src or not dst:
            raise UsageError(
                f"bind {spec!r} is malformed; write SRC or SRC:DST with absolute paths"
            )
        src = os.path.abspath(os.path.expanduser(src))
        if not dst.startswith("/"):
            raise UsageError(f"bind destination {dst!r} must be an absolute path")
        if not os.path.exists(src):
            raise UsageError(f"bind source {src} does not exist; create it or fix the path")
        return cls(src, os.path.normpath(dst), read_only)


def parse_env(items: list[str]) -> dict[str, str]:
    """Parse ``NAME=VALUE`` assignments (``--env`` flags of the front ends)."""
    from nbsandbox.errors import UsageError

    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--env {item!r} is malformed; write --env NAME=VALUE")
        env[name] = value
    return env


@dataclass
class LaunchPlan:
    """Everything an engine needs to start one program from a store root.

    ``program`` is the path of the executable *as the sandbox sees it* (e.g.
    ``/gnu/store/...-python-3.11/bin/python3``); ``argv[0]`` is what the program
    is told its name is.  ``env`` is the complete environment of the program.
    """

    root: StoreRoot
    program: str
    argv: list[str]
    env: dict[str, str]
    cwd: str = field(default_factory=os.getcwd)
    binds: list[Bind] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)
    isolate_home: bool = False
    keep_cwd: bool = True
    home: str = field(default_factory=lambda: os.path.expanduser("~"))
    #: The host's GPU driver, when the program gets it (see :mod:`nbsandbox.gpu`).
    gpu: GpuView | None = None

    @cached_property
    def view(self) -> View:
        """What the sandbox sees where, computed once, for every engine to translate:
        the store, the private home (with the working directory kept visible in it),
        the binds, the GPU driver, then the hidden paths."""
        root = self.root
        entries = [ViewEntry("store", root.prefix, os.fspath(root.store_dir))]
        if self.isolate_home:
            home, cwd = os.path.normpath(self.home), os.path.normpath(self.cwd)
            entries.append(ViewEntry("tmpfs", home))
            if self.keep_cwd and is_under(cwd, home):
                entries.append(ViewEntry("bind", cwd, cwd))
        for bind in self.binds:
            entries.append(ViewEntry("ro-bind" if bind.read_only else "bind",
                                     os.path.normpath(bind.dest), bind.source))
        gpu = self.gpu
        if gpu is not None:  # the host GPU driver's files and device nodes, at their paths
            entries += [ViewEntry("driver", p, p) for p in (*gpu.files, gpu.lib_dir, gpu.bin_dir)]
            entries += [ViewEntry("dev", p, p) for p in gpu.devices]
        entries += [ViewEntry("hide", os.path.normpath(p)) for p in self.hide]
        return View(tuple(entries), root.prefix, os.fspath(root.store_dir))

    def host_path(self, path: str) -> Path:
        """Where a path of the sandbox's view lives on the host (store paths only)."""
        return self.root.to_host(path)
