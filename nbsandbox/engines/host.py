"""The ``host`` engine: no virtualisation at all.

For a store that is already at its prefix on this host (a machine with Guix
or Nix installed, or a pack unpacked at ``/``).  It runs the program as is.
"""

from __future__ import annotations

from typing import ClassVar

from nbsandbox.engines.base import Command, Engine, Probe
from nbsandbox.plan import LaunchPlan
from nbsandbox.program import ProgramInfo


class HostEngine(Engine):
    name: ClassVar[str] = "host"
    summary: ClassVar[str] = "run directly; only for a store already present at its prefix"
    rank: ClassVar[int] = 0
    situational: ClassVar[bool] = True

    def _probe(self) -> Probe:
        return Probe.ok("always available; used only when the store is at its prefix on this host")

    def refuses(self, program: ProgramInfo) -> str | None:
        root = program.root
        if root is not None and not root.present_on_host():
            return (f"the store is not present at {root.prefix} on this host; "
                    "use another engine (auto picks one that works here)")
        return None

    def cannot_honour(self, plan: LaunchPlan) -> str | None:
        wanted = [
            what
            for what, asked in (
                ("bind mounts", plan.binds),
                ("hidden paths", plan.hide),
                ("an isolated home", plan.isolate_home),
            )
            if asked
        ]
        if wanted:
            return f"it cannot provide {' and '.join(wanted)}"
        return None

    def command(self, plan: LaunchPlan) -> Command:
        return Command(argv=list(plan.argv), env=dict(plan.env), engine=self.name,
                       executable=plan.program)
