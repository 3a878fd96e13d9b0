"""The engines the end-to-end tests run under, as a parametrized fixture.

Registered for the whole suite by ``conftest.py``: a test that asks for
``engine`` runs once per engine that works on this host; engines that do not
are skipped with their probe's reason.  A module may define its own
``engine`` fixture instead.
"""

from __future__ import annotations

import pytest

from nbsandbox.engines import get_engine

ENGINES = ["userns", "fakechroot", "bwrap", "proot"]


def available(name: str) -> bool:
    """Whether engine ``name`` works on this host (as the test process sees it)."""
    try:
        return get_engine(name).probe().available
    except Exception:
        return False


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    if not available(request.param):
        pytest.skip(f"{request.param}: {get_engine(request.param).probe().reason}")
    return request.param
