"""The short soak CI runs: ``tools/soak.py`` with 3 packed-kernel cycles on userns and
fakechroot (the engines among them that work here for the unprivileged user) and 20
concurrent ``nbsandbox run`` cells per engine; nothing may be left behind.  The full
run (1000 cycles per engine) is ``python tools/soak.py``, see README's Hardening."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.register_assert_rewrite("jupyter_fixtures")
pytest_plugins = ("jupyter_fixtures",)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import soak  # noqa: E402


def test_leftover_processes_are_found_by_their_token() -> None:
    token = uuid.uuid4().hex
    watcher = soak.PidWatcher(token)
    p = subprocess.Popen(["sleep", "60"], env={**os.environ, soak.TOKEN_VAR: token})
    try:
        assert soak.processes_with(token) == [p.pid]
        deadline = time.monotonic() + 10
        while p.pid not in watcher.seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait()
    assert soak.processes_with(token) == []
    assert p.pid in watcher.stop()
    # PRoot's files in /tmp are ours by the PID in their name; nbsandbox's always
    assert soak.ours(f"prooted-{p.pid}-AbC123", {p.pid})
    assert not soak.ours("prooted-1-AbC123", {p.pid})
    assert soak.ours("nbsandbox-0-0123456789ab", set(), soak.kernel_uid())
    assert not soak.ours("nbsandbox-0-0123456789ab", set(), soak.kernel_uid() + 1)


def test_short_soak_leaves_nothing_behind(kernel_root, engines_for_nobody, tmp_path) -> None:
    engines = [e for e in ("userns", "fakechroot") if engines_for_nobody.get(e) == ""]
    if not engines:
        pytest.skip("neither userns nor fakechroot works here for the unprivileged user")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "soak.py"), "--cycles", "3", "--concurrent",
         "20", "--root", str(kernel_root.path), "--json", str(tmp_path / "soak.json"),
         "--engines", *engines],
        capture_output=True, text=True, timeout=600, env=env)
    report = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert f"total: {3 * len(engines)} cycles, {20 * len(engines)} cells, 0 leftovers, " \
           "0 engines with errors" in proc.stdout, report
    results = json.loads((tmp_path / "soak.json").read_text())
    assert results["leftovers_total"] == 0
    for engine in results["engines"]:
        assert engine["cycles"] == 3 and engine["errors"] == []
        assert set(engine["times"]) == set(soak.PHASES)
        assert all(0 < t["median"] <= t["worst"] for t in engine["times"].values())
