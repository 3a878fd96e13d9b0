#!/usr/bin/env python3
"""The host matrix: what every engine does on every kind of host we know of.

Simulates, on this machine, hosts where nbsandbox is known to meet trouble --
user namespaces disabled, AppArmor that lets ``unshare`` succeed and then
denies the uid map or the mounts, ptrace blocked in a container, no PRoot, a
sandbox inside another user namespace, a host directory at the store's prefix,
a root on an awkward path -- and runs a small pack under each engine and
meta-engine there, as ``nbsandbox run`` would be run by a user.  Every cell
ends in a working run or a one-line diagnosis.  ``nbsandbox doctor --json`` is
run on each simulated host too, and must report the same availability.

    python tools/host_matrix.py            # print the table (Markdown)
    python tools/host_matrix.py --json     # every cell, with doctor's view

Run as root, the commands under test run as ``nobody`` (uid 65534); run as
a user, they run as you.  The simulations are real kernel mechanisms
(seccomp filters, user namespaces, sysctls inside a user namespace); see
``SCENARIOS`` for how each host is made.  tests/test_host_matrix.py runs the
same scenarios and asserts the behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

import unpriv  # noqa: E402  (tests/unpriv.py: run as nobody, simulate hosts)

ENGINES = ("userns", "fakechroot", "bwrap", "proot", "host")
META_ENGINES = ("default", "performance", "auto")
COLUMNS = ENGINES + META_ENGINES

#: What the probe program prints for a path it can open, and for one it cannot.
CHECK_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* For each path: "present" or "absent (<errno>)". */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        if (fd >= 0) { printf("present\n"); close(fd); }
        else printf("absent (%s)\n", strerror(errno));
    }
    return 0;
}
"""

DECOY_TEXT = "a host directory at the store's prefix, with other content\n"

#: Scenario roots that are stores of tools/glibc_stores.py, by that tool's store names.
GLIBC_STORES = {"glibc-old": "old", "glibc-new": "new-nolibdl"}

#: What the store shell of a glibc store runs: its own store path must be there, and
#: no shared object from the host's library directories may be mapped into it.
GLIBC_CHECK = (
    '[ -e "$BASH" ] && echo present; mapfile -t m < /proc/self/maps; '
    'for l in "${m[@]}"; do case "$l" in *" /lib"*.so*|*" /usr/lib"*.so*|*" /usr/local/lib"*.so*) '
    'echo "host library: ${l##* }";; esac; done; echo checked'
)


@dataclass(frozen=True)
class Scenario:
    """A simulated host.  ``how`` says how it is simulated, and how faithfully."""

    name: str
    title: str
    how: str
    preexec: dict[str, object] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)
    #: which pack: plain, shadow (prefix exists on the host), odd (path), or a store of
    #: tools/glibc_stores.py: glibc-old (2.31), glibc-new (2.41, /nix/store, no libdl.so.2)
    root: str = "plain"

    @property
    def foreign(self) -> bool:
        """Whether the root is a store that nbsandbox did not make (Debian's packages)."""
        return self.root in GLIBC_STORES


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("userns-ok", "user namespaces work",
             "this machine as it is"),
    Scenario("userns-disabled", "user namespaces disabled (RHEL 7 era)",
             "inside a user namespace of its own, max_user_namespaces is set to 0: every "
             "further unshare(CLONE_NEWUSER) fails with ENOSPC, as on such hosts",
             preexec={"no_userns": True}),
    Scenario("map-denied", "unshare allowed, uid map write denied (Ubuntu >= 23.10 AppArmor)",
             "a seccomp filter makes write(2) of the launcher's uid_map line (\"UID UID 1\\n\") "
             "to any descriptor above 2 fail with EPERM: unshare succeeds and the map write "
             "fails with the errno AppArmor gives (approximation: AppArmor takes the "
             "capabilities away, seccomp cannot see paths)",
             preexec={"deny_map_write": True}),
    Scenario("mount-denied", "unshare and maps allowed, mounts denied",
             "a seccomp filter makes mount, umount2, pivot_root, open_tree, move_mount, "
             "fsopen, fsconfig, fsmount, fspick and mount_setattr fail with EPERM",
             preexec={"deny": unpriv.MOUNT_SYSCALLS}),
    Scenario("proot-absent", "PRoot not installed",
             "PATH is a directory of links to every program of /usr/bin but proot, and "
             "NBSANDBOX_PROOT is unset",
             env={"PATH": "@NOPROOT@", "NBSANDBOX_PROOT": None}),
    Scenario("proot-misconfigured", "NBSANDBOX_PROOT names a missing file",
             "NBSANDBOX_PROOT=/nonexistent/proot",
             env={"NBSANDBOX_PROOT": "/nonexistent/proot"}),
    Scenario("ptrace-denied", "ptrace blocked (containers)",
             "a seccomp filter makes ptrace(2) fail with EPERM, as Docker's default profile "
             "does on older kernels",
             preexec={"deny": ("ptrace",)}),
    Scenario("no-userns-no-ptrace", "user namespaces disabled and ptrace blocked",
             "both of the above: max_user_namespaces is 0 and ptrace(2) fails with EPERM",
             preexec={"no_userns": True, "deny": ("ptrace",)}),
    Scenario("nested", "inside another user namespace (rootless container)",
             "the whole command runs in a user + mount namespace where it is uid 0, "
             "as `unshare -Urm` or a rootless container",
             preexec={"nested": True}),
    Scenario("prefix-shadowed", "store prefix present on the host with other content",
             "a pack built for a prefix under a host directory that exists and holds a decoy "
             "file; the program must see the pack's store and not the decoy, and the host "
             "directory must be unchanged afterwards",
             root="shadow"),
    Scenario("odd-path", "root on a path with spaces and non-ASCII characters",
             "the pack is copied to \"…/Données de test/pack root\"",
             root="odd"),
    Scenario("glibc-older", "store glibc older than the host's (2.31)",
             "a store nbsandbox did not make: Debian 11's bash and glibc 2.31, relocated into "
             "items without hashes (tools/glibc_stores.py); its shell checks that no shared "
             "object of the host's library directories is mapped into it",
             root="glibc-old"),
    Scenario("glibc-newer", "store glibc newer than the host's (2.41, no libdl.so.2)",
             "the same with Debian 13's bash and glibc 2.41 at /nix/store, without "
             "libdl.so.2 in its glibc item",
             root="glibc-new"),
)


@dataclass
class Roots:
    """The packs the matrix runs, built once."""

    base: Path
    plain: Path
    shadow: Path
    odd: Path
    shadow_prefix: str
    noproot_path: str
    #: glibc store roots (GLIBC_STORES keys); a missing one could not be built: why
    glibc: dict[str, Path] = field(default_factory=dict)
    glibc_missing: dict[str, str] = field(default_factory=dict)

    def path(self, kind: str) -> Path:
        if kind in GLIBC_STORES:
            return self.glibc[kind]
        return {"plain": self.plain, "shadow": self.shadow, "odd": self.odd}[kind]


def _world_readable(path: Path) -> None:
    unpriv.world_tmpdir(str(path))


def build_roots(base: Path, progress: Callable[[str], None] = lambda _: None) -> Roots:
    """Build the small packs (``/bin/sh`` and a tiny C program) under ``base``."""
    from nbsandbox.pack import PackOptions, build_pack

    base.mkdir(parents=True, exist_ok=True)
    _world_readable(base)
    src = base / "hm-check.c"
    src.write_text(CHECK_C)
    exe = base / "hm-check"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    progress("building the packs")
    plain = build_pack(PackOptions(with_python=False, output=base / "plain",
                                   programs=["/bin/sh", str(exe)])).path
    hostdir = base / "host-prefix"
    prefix = hostdir / "store"
    prefix.mkdir(parents=True)
    (prefix / "decoy").write_text(DECOY_TEXT)
    for p in (hostdir, prefix):
        os.chmod(p, 0o755)
    shadow = build_pack(PackOptions(with_python=False, output=base / "shadow",
                                    programs=["/bin/sh", str(exe)], prefix=str(prefix))).path
    odd_parent = base / "Données de test"
    odd_parent.mkdir()
    odd = odd_parent / "pack root"
    shutil.copytree(plain, odd, symlinks=True)
    os.chmod(odd_parent, 0o755)
    noproot = base / "path-without-proot"
    noproot.mkdir()
    for name in os.listdir("/usr/bin"):
        if name != "proot":
            os.symlink(os.path.join("/usr/bin", name), noproot / name)
    _world_readable(noproot)
    roots = Roots(base, Path(plain), Path(shadow), odd, str(prefix), str(noproot))
    progress("building (or finding) the glibc stores")
    for kind, name in GLIBC_STORES.items():
        try:
            roots.glibc[kind] = glibc_store(name)
        except Exception as exc:  # the tool's BuildError: no network, apt-get, ...
            roots.glibc_missing[kind] = str(exc)
    return roots


def glibc_store(name: str) -> Path:
    """The root of tools/glibc_stores.py's store ``name`` (built once, cached)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("glibc_stores_tool", HERE / "glibc_stores.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("glibc_stores_tool", tool)
    spec.loader.exec_module(tool)
    return tool.build_store(tool.STORES[name])


def host_snapshot(roots: Roots) -> dict[str, str]:
    """The host directory at the shadowed prefix: name -> content."""
    prefix = Path(roots.shadow_prefix)
    return {p.name: p.read_text() if p.is_file() else "<dir>" for p in prefix.iterdir()}


@dataclass
class Cell:
    """What one engine did on one simulated host."""

    scenario: str
    engine: str
    works: bool
    picked: str | None = None  # the engine a meta-engine chose (works) or None
    reason: str = ""  # the diagnosis (one line) when it does not work
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""

    def text(self) -> str:
        if self.works:
            return "works" + (f" ({self.picked})" if self.picked and
                              self.picked != self.engine else "")
        return self.reason


def _env(scenario: Scenario, roots: Roots) -> dict[str, str]:
    env = unpriv.unprivileged_env()
    for name, value in scenario.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value.replace("@NOPROOT@", roots.noproot_path)
    env.pop("NBSANDBOX_ENGINE", None)
    env.pop("NBSANDBOX_ADMIN_CONFIG", None)
    return env


def _run(argv: list[str], scenario: Scenario, roots: Roots) -> subprocess.CompletedProcess:
    return subprocess.run(argv, preexec_fn=unpriv.host_preexec(**scenario.preexec),  # type: ignore[arg-type]
                          env=_env(scenario, roots), capture_output=True, text=True,
                          timeout=120, cwd=str(roots.base))


def expected_output(scenario: Scenario) -> str:
    if scenario.foreign:
        return "present\nchecked\n"
    if scenario.root == "shadow":
        return "present\nabsent (No such file or directory)\n"
    return "present\n"


def check_args(scenario: Scenario, roots: Roots) -> list[str]:
    """``hm-check`` arguments: its own store path (must be present), and under a
    shadowed prefix, the host's decoy (must be absent)."""
    from nbsandbox.store import StoreRoot

    root = StoreRoot.open(roots.path(scenario.root))
    args = [root.resolve(root.find_program("hm-check"))]
    if scenario.root == "shadow":
        args.append(f"{root.prefix}/decoy")
    return args


def program(scenario: Scenario) -> str:
    """The program each cell runs: the tiny C program, or a glibc store's shell."""
    return "bash" if scenario.foreign else "hm-check"


def run_cell(scenario: Scenario, engine: str, roots: Roots) -> Cell:
    root = roots.path(scenario.root)
    args = ["-c", GLIBC_CHECK] if scenario.foreign else check_args(scenario, roots)
    argv = [sys.executable, "-m", "nbsandbox", "run", "--root", str(root), "--engine", engine,
            "--explain", "--", program(scenario), *args]
    proc = _run(argv, scenario, roots)
    cell = Cell(scenario.name, engine, False, returncode=proc.returncode, stdout=proc.stdout,
                stderr=proc.stderr)
    lines = proc.stderr.strip().splitlines()
    if proc.returncode == 0 and proc.stdout == expected_output(scenario):
        cell.works = True
        for line in lines:
            if line.startswith("engine: "):
                cell.picked = line.split()[1]
        return cell
    errors = [line for line in lines if line.startswith("nbsandbox: error: ")]
    if proc.returncode != 0 and len(lines) == 1 and errors:
        cell.reason = errors[0].removeprefix("nbsandbox: error: ")
    else:
        cell.reason = (f"FAILED (exit {proc.returncode}): stdout {proc.stdout!r}, "
                       f"stderr {proc.stderr.strip()!r}")
    return cell


def run_doctor(scenario: Scenario, roots: Roots) -> dict:
    argv = [sys.executable, "-m", "nbsandbox", "doctor", "--json", "--root",
            str(roots.path(scenario.root))]
    proc = _run(argv, scenario, roots)
    if proc.returncode != 0:
        raise RuntimeError(f"doctor failed on {scenario.name}: {proc.stderr}")
    return json.loads(proc.stdout)


def doctor_disagreements(cells: dict[str, Cell], doctor: dict) -> list[str]:
    """Where doctor's report and the runs disagree (empty: the matrix IS doctor's report)."""
    out = []
    available = {e["name"]: e for e in doctor["engines"]}
    for name in ENGINES:
        if name == "host":  # situational: judged per root, see below
            continue
        if available[name]["available"] != cells[name].works:
            out.append(f"{name}: doctor says available={available[name]['available']} "
                       f"({available[name]['detail']}), the run {cells[name].text()!r}")
    for name in ("default", "performance"):
        picks = doctor["meta"][name]["picks"]
        ran = cells[name].picked if cells[name].works else None
        if picks != ran:
            out.append(f"{name}: doctor picks {picks}, the run used {ran}")
    programs = {p["name"]: p for p in doctor["root"]["programs"]}
    name = next(iter(cells.values())).scenario
    prog = program(next(s for s in SCENARIOS if s.name == name))
    auto = programs[prog]["auto"] if prog in programs else None
    ran = cells["auto"].picked if cells["auto"].works else None
    if auto != ran:
        out.append(f"auto for {prog}: doctor picks {auto}, the run used {ran}")
    return out


@dataclass
class Row:
    scenario: Scenario
    cells: dict[str, Cell]
    doctor: dict
    disagreements: list[str]
    host_before: dict[str, str]
    host_after: dict[str, str]


def run_scenario(scenario: Scenario, roots: Roots, workers: int = 4) -> Row:
    before = host_snapshot(roots)
    with ThreadPoolExecutor(workers) as pool:
        futures = {e: pool.submit(run_cell, scenario, e, roots) for e in COLUMNS}
        doctor_future = pool.submit(run_doctor, scenario, roots)
        cells = {e: f.result() for e, f in futures.items()}
        doctor = doctor_future.result()
    return Row(scenario, cells, doctor, doctor_disagreements(cells, doctor), before,
               host_snapshot(roots))


def markdown(rows: list[Row]) -> str:
    """The matrix as Markdown: a table of works/short reasons, then the reasons in full."""
    reasons: dict[str, int] = {}
    table = ["| host | " + " | ".join(f"`{c}`" for c in COLUMNS) + " |",
             "| --- |" + " --- |" * len(COLUMNS)]
    for row in rows:
        out = []
        for c in COLUMNS:
            cell = row.cells[c]
            if cell.works:
                out.append("✔" + (f" → {cell.picked}" if cell.picked and cell.picked != c
                                  else ""))
            else:
                n = reasons.setdefault(cell.reason, len(reasons) + 1)
                out.append(f"✘ [{n}](#r{n})")
        table.append(f"| {row.scenario.title} | " + " | ".join(out) + " |")
    notes = ["", "Diagnoses (exactly what `nbsandbox run` prints after `nbsandbox: error: `):", ""]
    for text, n in reasons.items():
        notes.append(f"{n}. <a id=\"r{n}\"></a>{text}")
    agree = [f"- {row.scenario.name}: {d}" for row in rows for d in row.disagreements]
    notes += ["", "`nbsandbox doctor --json` on each simulated host: "
              + ("agrees with every cell." if not agree else "DISAGREES:")]
    notes += agree
    return "\n".join(table + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="every cell as JSON")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                        help="only these scenarios (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the packs (prints where)")
    args = parser.parse_args(argv)
    if not unpriv.seccomp_supported():
        print("host_matrix: seccomp simulations support x86_64 and aarch64 only",
              file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="nbs-host-matrix-"))
    try:
        roots = build_roots(base, lambda m: print(m, file=sys.stderr))
        rows = []
        for scenario in SCENARIOS:
            if args.scenario and scenario.name not in args.scenario:
                continue
            if scenario.root in roots.glibc_missing:
                print(f"scenario {scenario.name} skipped: {roots.glibc_missing[scenario.root]}",
                      file=sys.stderr)
                continue
            print(f"scenario {scenario.name}", file=sys.stderr)
            rows.append(run_scenario(scenario, roots))
        if args.json:
            print(json.dumps([{
                "scenario": r.scenario.name, "title": r.scenario.title, "how": r.scenario.how,
                "cells": {c: {"works": x.works, "picked": x.picked, "reason": x.reason}
                          for c, x in r.cells.items()},
                "doctor_disagrees": r.disagreements,
                "host_prefix_unchanged": r.host_before == r.host_after,
            } for r in rows], indent=2, ensure_ascii=False))
        else:
            print(markdown(rows))
        return 0 if all(not r.disagreements for r in rows) else 1
    finally:
        if args.keep:
            print(f"packs kept in {base}", file=sys.stderr)
        else:
            _remove(base)


def _remove(path: Path) -> None:
    """Remove a tree whose packs are read-only on disk."""
    def retry(func, p, _exc):  # type: ignore[no-untyped-def]
        os.chmod(os.path.dirname(p), 0o700)
        func(p)
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
    shutil.rmtree(path, onexc=retry) if sys.version_info >= (3, 12) else shutil.rmtree(
        path, onerror=retry)


if __name__ == "__main__":
    sys.exit(main())
