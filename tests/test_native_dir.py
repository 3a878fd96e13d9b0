"""Where the native components are, and the warning for a stale build in a checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbsandbox import native


def _tree(top: Path, built_at: float, source_at: float) -> Path:
    package = top / "nbsandbox"
    (package / "_native").mkdir(parents=True)
    (top / "native" / "launch").mkdir(parents=True)
    built = package / "_native" / "nbs-launch"
    built.write_text("")
    source = top / "native" / "launch" / "main.c"
    source.write_text("")
    os.utime(built, (built_at, built_at))
    os.utime(source, (source_at, source_at))
    return package


@pytest.mark.parametrize(("built_at", "source_at", "warned"), [
    (2_000_000, 1_000_000, False),  # built after the sources changed
    (1_000_000, 2_000_000, True),   # sources changed since the build
])
def test_a_build_older_than_its_sources_is_reported_once(tmp_path, monkeypatch, capsys,
                                                         built_at, source_at, warned):
    package = _tree(tmp_path, built_at, source_at)
    monkeypatch.setattr(native, "PACKAGE_DIR", package)
    monkeypatch.delenv("NBSANDBOX_NATIVE_DIR", raising=False)
    native._warn_if_stale.cache_clear()
    try:
        assert native.native_path("nbs-launch") == package / "_native" / "nbs-launch"
        native.native_path("nbs-launch")
    finally:
        native._warn_if_stale.cache_clear()
    err = capsys.readouterr().err
    assert err.count("older than the sources") == (1 if warned else 0), err
