"""Choosing an engine: explicit engines, meta-engines as chains, NBSANDBOX_ENGINE."""

from __future__ import annotations

from typing import ClassVar

import pytest

from nbsandbox import engines
from nbsandbox.engines.base import Command, Engine, Probe
from nbsandbox.errors import EngineUnavailable, UsageError


class Fake(Engine):
    summary: ClassVar[str] = "fake"

    def __init__(self, name: str, rank: int, available: bool, refuse: str | None = None):
        self.name = name  # type: ignore[misc]
        self.rank = rank  # type: ignore[misc]
        self._available = available
        self._refuse = refuse
        self.probes = 0

    def _probe(self) -> Probe:
        self.probes += 1
        return Probe.ok() if self._available else Probe.fail(f"{self.name} is off; turn it on")

    def refuses(self, program):
        return self._refuse

    def command(self, plan):
        return Command(["/bin/true"], {}, self.name)


@pytest.fixture
def registry(monkeypatch):
    fakes = {
        "host": Fake("host", 0, True, refuse="the store is not present at /gnu/store"),
        "userns": Fake("userns", 10, False),
        "fakechroot": Fake("fakechroot", 20, True, refuse="static binary"),
        "bwrap": Fake("bwrap", 30, True),
        "proot": Fake("proot", 50, True),
    }
    monkeypatch.setattr(engines, "_instances", dict(fakes))
    monkeypatch.setattr(engines, "_third_party", {})
    monkeypatch.delenv(engines.ENV_VAR, raising=False)
    return fakes


PROGRAM = object()  # engines under test only look at it through refuses()


def test_default_falls_back_to_proot_and_says_why(registry):
    r = engines.resolve("default", PROGRAM)
    assert r.engine.name == "proot"
    assert r.skipped == [("userns", "userns is off; turn it on")]
    assert "skipped userns: userns is off" in r.explain()


def test_explicit_unavailable_engine_is_an_error_with_its_reason(registry):
    with pytest.raises(EngineUnavailable, match="engine userns cannot be used: userns is off"):
        engines.resolve("userns", PROGRAM)


def test_explicit_engine_that_refuses_the_program(registry):
    with pytest.raises(EngineUnavailable, match="fakechroot cannot be used: static binary"):
        engines.resolve("fakechroot", PROGRAM)


def test_performance_with_nothing_usable_lists_every_reason(registry):
    with pytest.raises(EngineUnavailable) as info:
        engines.resolve("performance", PROGRAM)
    msg = str(info.value)
    assert "userns: userns is off" in msg and "fakechroot: static binary" in msg
    assert "\n" not in msg


def test_auto_takes_the_fastest_that_works_for_the_program(registry):
    r = engines.resolve("auto", PROGRAM)
    assert r.engine.name == "bwrap"
    assert [n for n, _ in r.skipped] == ["host", "userns", "fakechroot"]


def test_probes_are_cached(registry):
    engines.resolve("default", PROGRAM)
    engines.resolve("default", PROGRAM)
    assert registry["userns"].probes == 1


def test_unknown_engine_lists_valid_names(registry):
    with pytest.raises(UsageError, match=r"unknown engine 'fast'.*default, performance, auto"):
        engines.resolve("fast")


def test_env_var_selects_engine(registry, monkeypatch):
    monkeypatch.setenv(engines.ENV_VAR, "proot")
    assert engines.requested_engine(None) == "proot"
    assert engines.requested_engine("bwrap") == "bwrap"
    monkeypatch.delenv(engines.ENV_VAR)
    assert engines.requested_engine(None) == "default"


def test_builtin_engines_are_registered():
    assert {"host", "userns", "fakechroot", "bwrap", "proot"} <= set(engines.engine_names())


def test_third_party_engine_registers_through_entry_points(monkeypatch):
    from importlib.metadata import EntryPoint

    ep = EntryPoint("toy", "tests_toy_engine:ToyEngine", engines.ENTRY_POINT_GROUP)
    monkeypatch.setattr(engines, "entry_points", lambda group: [ep] if group == ep.group else [])
    monkeypatch.setattr(engines, "_third_party", None)
    monkeypatch.setattr(engines, "_instances", {})
    import sys
    import types

    module = types.ModuleType("tests_toy_engine")

    class ToyEngine(Fake):
        def __init__(self):
            super().__init__("toy", 5, True)

    module.ToyEngine = ToyEngine
    monkeypatch.setitem(sys.modules, "tests_toy_engine", module)
    assert "toy" in engines.engine_names()
    assert engines.resolve("toy").engine.name == "toy"
    # auto considers it by rank: it is faster than every built-in but host.
    assert engines.chain_of("auto")[:2] == ("host", "toy")
