"""The engine interface.

An engine makes the store of a root appear at its prefix for one program.
It answers two questions and does one thing:

* :meth:`Engine.probe` -- can it work on this host at all?  (cached per process)
* :meth:`Engine.refuses` -- can it run *this* program?  (e.g. a preload
  engine cannot run a static binary)
* :meth:`Engine.command` -- the argv and environment that start the program.

Engines never start processes themselves; see :mod:`nbsandbox.launch`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from nbsandbox.plan import LaunchPlan
from nbsandbox.program import ProgramInfo


@dataclass(frozen=True)
class Probe:
    """Whether an engine works here; when it does not, ``reason`` says why and what to do."""

    available: bool
    reason: str = ""

    @classmethod
    def ok(cls, detail: str = "") -> Probe:
        return cls(True, detail)

    @classmethod
    def fail(cls, reason: str) -> Probe:
        return cls(False, " ".join(reason.split()))


@dataclass
class Command:
    """What to execute.

    ``argv[0]`` is an absolute path to execute, unless ``executable`` is set,
    in which case ``argv[0]`` is only the name the program is given.  ``env``
    is the complete environment.  ``fds``: descriptors besides stdin, stdout
    and stderr that the process must inherit (e.g. the access report's).
    """

    argv: list[str]
    env: dict[str, str]
    engine: str = ""
    executable: str | None = None
    fds: tuple[int, ...] = ()

    @property
    def path(self) -> str:
        """The file that is executed."""
        return self.executable or self.argv[0]


class Engine(abc.ABC):
    """Base class of every engine.  Subclasses are registered by name.

    Subclasses set ``name``, ``summary`` and ``rank`` and implement
    :meth:`_probe` and :meth:`command`.  They do not need to call ``super()``
    in those methods.
    """

    #: Name users select the engine by (``--engine``, ``NBSANDBOX_ENGINE``).
    name: ClassVar[str]
    #: One line for ``nbsandbox doctor``.
    summary: ClassVar[str]
    #: Relative cost; ``auto`` prefers the lowest rank that works.
    rank: ClassVar[int] = 100
    #: Whether the engine can only be judged for a given program and root
    #: (``host``): chains skip it when asked without a program.
    situational: ClassVar[bool] = False
    #: Whether store programs' loaders search only the sandbox's directories
    #: (fakechroot's audit module): a library the store lacks is then not
    #: found, instead of taken from the host (see nbsandbox.hermetic).
    confines_libraries: ClassVar[bool] = False

    _probe_cache: Probe | None = None

    def probe(self) -> Probe:
        """Whether this engine can work on this host.

        Called by :func:`nbsandbox.engines.resolve` before every launch; the
        result is cached for the life of the engine object.
        """
        if self._probe_cache is None:
            self._probe_cache = self._probe()
        return self._probe_cache

    @abc.abstractmethod
    def _probe(self) -> Probe:
        """Do the actual probing (as the engine would work), uncached."""

    def refuses(self, program: ProgramInfo) -> str | None:
        """A one-line reason why this engine cannot run ``program``, or ``None``.

        The default accepts every program.
        """
        return None

    def cannot_honour(self, plan: LaunchPlan) -> str | None:
        """A one-line reason why this engine cannot give ``plan`` what it asks
        (binds, hidden paths, an isolated home), or ``None``.  The default
        accepts every plan.
        """
        return None

    @abc.abstractmethod
    def command(self, plan: LaunchPlan) -> Command:
        """The command that runs ``plan``; called only after a successful probe."""
