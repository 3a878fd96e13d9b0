"""Engines: the registry, and meta-engines as chains.

Built-in engines are listed in :data:`BUILTIN`; third-party engines register
under the entry-point group ``nbsandbox.engines`` (name -> ``module:Class``
of an :class:`~nbsandbox.engines.base.Engine` subclass).

A *meta-engine* is a chain of engine names.  :func:`resolve` is the one place
that walks a chain: it returns the first engine that the policy allows, that
is available on this host and that accepts the program, with the reason every
engine before it was skipped.  The policy supplies its own chains and the
engines it allows; :func:`env_engine` is the one place that reads
``$NBSANDBOX_ENGINE``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from nbsandbox.engines.base import Command, Engine, Probe
from nbsandbox.errors import EngineUnavailable, UsageError
from nbsandbox.plan import LaunchPlan
from nbsandbox.program import ProgramInfo

__all__ = [
    "BUILTIN",
    "ENV_VAR",
    "META",
    "Command",
    "Engine",
    "Probe",
    "Resolution",
    "all_engines",
    "engine_names",
    "env_engine",
    "get_engine",
    "resolve",
]

ENTRY_POINT_GROUP = "nbsandbox.engines"

#: Environment variable that selects the engine, like Guix's GUIX_EXECUTION_ENGINE.
ENV_VAR = "NBSANDBOX_ENGINE"

BUILTIN: dict[str, str] = {
    "host": "nbsandbox.engines.host:HostEngine",
    "userns": "nbsandbox.engines.userns:UsernsEngine",
    "fakechroot": "nbsandbox.engines.fakechroot:FakechrootEngine",
    "bwrap": "nbsandbox.engines.bwrap:BwrapEngine",
    "proot": "nbsandbox.engines.proot:ProotEngine",
}

#: Meta-engines.  ``None`` means every registered engine, fastest first.
META: dict[str, tuple[str, ...] | None] = {
    "default": ("userns", "proot"),
    "performance": ("userns", "fakechroot"),
    "auto": None,
}

_instances: dict[str, Engine] = {}
_third_party: dict[str, str] | None = None


def _plugin_specs() -> dict[str, str]:
    global _third_party
    if _third_party is None:
        _third_party = {
            ep.name: ep.value
            for ep in entry_points(group=ENTRY_POINT_GROUP)
            if ep.name not in BUILTIN and ep.name not in META
        }
    return _third_party


def _spec(name: str) -> str | None:
    return BUILTIN.get(name) or _plugin_specs().get(name)


def engine_names() -> list[str]:
    """Names of all concrete engines, built-in first."""
    return [*BUILTIN, *sorted(_plugin_specs())]


def get_engine(name: str) -> Engine:
    """The engine registered as ``name`` (one instance per process)."""
    engine = _instances.get(name)
    if engine is not None:
        return engine
    spec = _spec(name)
    if spec is None:
        valid = ", ".join([*META, *engine_names()])
        raise UsageError(f"unknown engine {name!r}; valid engines: {valid}")
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise EngineUnavailable(f"engine {name} cannot be loaded from {spec}: {exc}") from None
    engine = cls()
    _instances[name] = engine
    return engine


def all_engines() -> list[Engine]:
    """Every loadable engine, fastest (lowest rank) first."""
    engines = []
    for name in engine_names():
        try:
            engines.append(get_engine(name))
        except EngineUnavailable:
            continue
    return sorted(engines, key=lambda e: (e.rank, e.name))


def chain_of(name: str) -> tuple[str, ...] | None:
    """The chain of a meta-engine name, ``None`` for a concrete engine."""
    if name not in META:
        if _spec(name) is None:
            valid = ", ".join([*META, *engine_names()])
            raise UsageError(f"unknown engine {name!r}; valid engines: {valid}")
        return None
    chain = META[name]
    return chain if chain is not None else tuple(e.name for e in all_engines())


#: Why :func:`resolve` skips an engine the policy does not allow.
NOT_ALLOWED = "not allowed by SandboxPolicy.allowed_engines"


@dataclass
class Resolution:
    """The engine chosen for a launch and why the others were not.

    ``asked_by`` says who asked for ``requested`` (a request, ``$NBSANDBOX_ENGINE``,
    or the policy layer that set ``SandboxPolicy.engine``), when known.
    """

    requested: str
    engine: Engine
    skipped: list[tuple[str, str]] = field(default_factory=list)
    asked_by: str = ""

    def explain(self) -> str:
        by = f", by {self.asked_by}" if self.asked_by else ""
        lines = [f"engine: {self.engine.name} (requested: {self.requested}{by})"]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def env_engine() -> str | None:
    """The engine ``$NBSANDBOX_ENGINE`` asks for, if any (the only reader of the variable)."""
    return os.environ.get(ENV_VAR) or None


def requested_engine(explicit: str | None, default: str = "default") -> str:
    """The engine asked for: an explicit choice, else ``$NBSANDBOX_ENGINE``, else ``default``."""
    return explicit or env_engine() or default


def _why_not(engine: Engine, program: ProgramInfo | None, plan: LaunchPlan | None) -> str | None:
    probe = engine.probe()
    if not probe.available:
        return probe.reason
    if program is not None:
        reason = engine.refuses(program)
        if reason is not None:
            return reason
    if plan is not None:
        return engine.cannot_honour(plan)
    return None


def resolve(
    name: str,
    program: ProgramInfo | None = None,
    plan: LaunchPlan | None = None,
    *,
    chains: Mapping[str, Sequence[str]] | None = None,
    allowed: Collection[str] | None = None,
) -> Resolution:
    """Choose the engine for ``name`` (an engine, a meta-engine or one of ``chains``).

    ``chains`` are the policy's named chains (which may replace a meta-engine);
    ``allowed`` the engines the policy allows (``None``: every engine).  A concrete
    engine that cannot work is an :class:`EngineUnavailable` error with its reason;
    a chain falls back along its engines, skipping those not allowed.  Called by
    :func:`nbsandbox.launch.prepare` for every launch and by ``nbsandbox doctor``.
    """
    chain = tuple(chains[name]) if chains and name in chains else chain_of(name)
    if chain is None:
        engine = get_engine(name)
        reason = NOT_ALLOWED if allowed is not None and name not in allowed else \
            _why_not(engine, program, plan)
        if reason is not None:
            raise EngineUnavailable(f"engine {name} cannot be used: {reason}")
        return Resolution(name, engine)
    skipped: list[tuple[str, str]] = []
    for candidate in chain:
        if allowed is not None and candidate not in allowed:
            skipped.append((candidate, NOT_ALLOWED))
            continue
        try:
            engine = get_engine(candidate)
        except EngineUnavailable as exc:
            skipped.append((candidate, str(exc)))
            continue
        if program is None and engine.situational:
            continue
        reason = _why_not(engine, program, plan)
        if reason is None:
            return Resolution(name, engine, skipped)
        skipped.append((candidate, reason))
    detail = "; ".join(f"{n}: {r}" for n, r in skipped)
    hint = "; another engine may: see nbsandbox doctor" if name != "auto" else ""
    raise EngineUnavailable(
        f"no engine of {name!r} ({', '.join(chain)}) works here: {detail}{hint}")
