"""The host matrix: every engine and meta-engine on every simulated host.

The scenarios live in ``tools/host_matrix.py`` (which also prints the table
of docs/host-matrix.md); each is a real kernel mechanism, not a mock:

- *user namespaces disabled*: inside a user namespace of its own the command
  sets ``max_user_namespaces`` to 0 (``tests/unpriv.py``), so every further
  ``unshare(CLONE_NEWUSER)`` fails with ENOSPC, as on such hosts.
- *map write denied*: the closest real mechanism we have without AppArmor.  A
  seccomp filter makes ``write(2)`` of exactly the launcher's uid map line
  (``"65534 65534 1\\n"``) to a descriptor above 2 fail with EPERM.  So
  ``unshare`` succeeds and the map write fails with the errno Ubuntu's
  AppArmor gives, at the same step; what differs is the mechanism (AppArmor
  takes the namespace's capabilities away; seccomp cannot see paths, so it
  matches the length of the write).
- *mount denied*, *ptrace denied*: seccomp filters that make the mount system
  calls (mount, umount2, pivot_root, open_tree, move_mount, fsopen, fsconfig,
  fsmount, fspick, mount_setattr) or ``ptrace(2)`` fail with EPERM.
- *PRoot absent*: ``PATH`` without ``proot``; *misconfigured*: ``NBSANDBOX_PROOT``
  names a missing file.
- *nested*: the whole command runs as uid 0 of a user + mount namespace.
- *prefix shadowed*: a pack built for a prefix under a host directory that
  exists and holds a decoy file.
- *odd path*: the root lives at ``…/Données de test/pack root``.
- *store glibc older / newer than the host's*: stores nbsandbox did not make
  (tools/glibc_stores.py: Debian 11's glibc 2.31; Debian 13's 2.41 at
  ``/nix/store`` without ``libdl.so.2``); their shell reports any shared
  object of the host's library directories mapped into it.  Skipped, with the
  reason, when they cannot be built here.

Everything runs as uid 65534 when the suite runs as root.  Each cell must be a
working run or exactly one line of diagnosis that names a fix, and
``nbsandbox doctor --json`` on the same simulated host must agree.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import unpriv

TOOL = Path(__file__).resolve().parent.parent / "tools" / "host_matrix.py"
_spec = importlib.util.spec_from_file_location("host_matrix", TOOL)
assert _spec and _spec.loader
hm = importlib.util.module_from_spec(_spec)
sys.modules["host_matrix"] = hm
_spec.loader.exec_module(hm)

pytestmark = pytest.mark.skipif(
    not unpriv.seccomp_supported() or not shutil.which("proot") or not shutil.which("bwrap")
    or not shutil.which("cc"),
    reason="the host matrix needs x86_64/aarch64 seccomp numbers, proot, bwrap and cc",
)

#: Words that show a diagnosis names what to do.
FIX = re.compile(r"\b(use|install|set|unset|point it|ask|see|reinstall|remove)\b")

WORKS = {"userns", "fakechroot", "bwrap", "proot"}
#: scenario -> (engines that work, {meta-engine: engine it picks or None},
#:              {engine: text its diagnosis must contain})
EXPECTED: dict[str, tuple[set[str], dict[str, str | None], dict[str, str]]] = {
    "userns-ok": (WORKS, {"default": "userns", "performance": "userns", "auto": "userns"}, {
        "host": "not present at /gnu/store"}),
    "userns-disabled": ({"fakechroot", "proot"},
                        {"default": "proot", "performance": "fakechroot", "auto": "fakechroot"},
                        {"userns": "max_user_namespaces is 0", "bwrap": "max_*_namespaces"}),
    "map-denied": ({"fakechroot", "proot"},
                   {"default": "proot", "performance": "fakechroot", "auto": "fakechroot"},
                   {"userns": "writing /proc/self/uid_map: Operation not permitted",
                    "bwrap": "uid map"}),
    "mount-denied": ({"fakechroot", "proot"},
                     {"default": "proot", "performance": "fakechroot", "auto": "fakechroot"},
                     {"userns": "forbids mounts", "bwrap": "forbids mounts"}),
    "proot-absent": (WORKS - {"proot"},
                     {"default": "userns", "performance": "userns", "auto": "userns"},
                     {"proot": "proot is not installed"}),
    "proot-misconfigured": (WORKS - {"proot"},
                            {"default": "userns", "performance": "userns", "auto": "userns"},
                            {"proot": "NBSANDBOX_PROOT=/nonexistent/proot"}),
    "ptrace-denied": (WORKS - {"proot"},
                      {"default": "userns", "performance": "userns", "auto": "userns"},
                      {"proot": "ptrace is not permitted"}),
    "no-userns-no-ptrace": ({"fakechroot"},
                            {"default": None, "performance": "fakechroot", "auto": "fakechroot"},
                            {"default": "no engine of 'default'", "proot": "ptrace"}),
    "nested": (WORKS, {"default": "userns", "performance": "userns", "auto": "userns"}, {}),
    "prefix-shadowed": (WORKS, {"default": "userns", "performance": "userns", "auto": "userns"},
                        {"host": "the store is not present at"}),
    "odd-path": (WORKS, {"default": "userns", "performance": "userns", "auto": "userns"}, {}),
    "glibc-older": (WORKS, {"default": "userns", "performance": "userns", "auto": "userns"},
                    {"host": "not present at /gnu/store"}),
    "glibc-newer": (WORKS, {"default": "userns", "performance": "userns", "auto": "userns"},
                    {"host": "not present at /nix/store"}),
}


def test_every_scenario_has_expectations():
    assert {s.name for s in hm.SCENARIOS} == set(EXPECTED)


@pytest.fixture(scope="module")
def matrix() -> Iterator[dict[str, Any]]:
    """Every scenario, run once (about 15 s on two cores).

    The packs live in a directory of their own under $TMPDIR, not under
    pytest's (another pytest session starting meanwhile makes that 0700 again,
    which would lock the unprivileged user out).
    """
    base = Path(tempfile.mkdtemp(prefix="nbs-host-matrix-"))
    try:
        roots = hm.build_roots(base / "m")
        rows = {s.name: hm.run_scenario(s, roots) for s in hm.SCENARIOS
                if s.root not in roots.glibc_missing}
        yield {"roots": roots, "rows": rows}
    finally:
        hm._remove(base)
    assert not base.exists()


def _row(matrix, scenario: str):
    if scenario not in matrix["rows"]:
        kind = next(s.root for s in hm.SCENARIOS if s.name == scenario)
        pytest.skip(f"{scenario}: {matrix['roots'].glibc_missing[kind]}")
    return matrix["rows"][scenario]


@pytest.mark.parametrize("scenario", [s.name for s in hm.SCENARIOS])
def test_scenario(matrix, scenario):
    row = _row(matrix, scenario)
    works, picks, reasons = EXPECTED[scenario]
    for engine in hm.ENGINES:
        cell = row.cells[engine]
        assert cell.works == (engine in works), (engine, cell.text(), cell.stderr)
    for meta, picked in picks.items():
        cell = row.cells[meta]
        assert (cell.picked if cell.works else None) == picked, (meta, cell.text(), cell.stderr)
    for engine, text in reasons.items():
        assert text in row.cells[engine].reason, (engine, row.cells[engine].reason)
    for name, cell in row.cells.items():
        if cell.works:
            assert cell.stdout == hm.expected_output(row.scenario)
            continue
        # A diagnosis: non-zero exit, exactly one line on stderr, naming a fix.
        assert cell.returncode != 0
        assert cell.stderr.count("\n") == 1 and cell.stderr.startswith("nbsandbox: error: "), \
            (name, cell.stderr)
        assert not cell.reason.startswith("FAILED"), (name, cell.reason)
        assert FIX.search(cell.reason), f"{name}: the diagnosis names no fix: {cell.reason}"


@pytest.mark.parametrize("scenario", [s.name for s in hm.SCENARIOS])
def test_doctor_reports_the_matrix(matrix, scenario):
    """``nbsandbox doctor --json`` on the simulated host: same availability, same picks."""
    row = _row(matrix, scenario)
    assert row.disagreements == []
    engines = {e["name"]: e for e in row.doctor["engines"]}
    for name in ("userns", "fakechroot", "bwrap", "proot"):
        e = engines[name]
        if not e["available"]:
            # The probe's reason is what an explicit --engine NAME prints.
            assert e["detail"] in row.cells[name].reason
            assert "\n" not in e["detail"]


def test_mount_denied_probe_names_the_mount(matrix):
    detail = {e["name"]: e["detail"] for e in matrix["rows"]["mount-denied"].doctor["engines"]}
    assert "mount" in detail["userns"] and "fakechroot or proot" in detail["userns"]


def test_shadowed_prefix_leaves_the_host_alone(matrix):
    """The pack's store hides the host's directory at its prefix; the host is unchanged."""
    row = matrix["rows"]["prefix-shadowed"]
    assert row.host_before == row.host_after == {"decoy": hm.DECOY_TEXT}
    for engine in ("userns", "fakechroot", "bwrap", "proot"):
        assert row.cells[engine].stdout == "present\nabsent (No such file or directory)\n"


def test_markdown_table_lists_every_scenario(matrix):
    text = hm.markdown(list(matrix["rows"].values()))
    for scenario in hm.SCENARIOS:
        if scenario.name in matrix["rows"]:
            assert f"| {scenario.title} |" in text
    assert "agrees with every cell" in text
