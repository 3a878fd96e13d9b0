#!/usr/bin/env python3
"""Soak test: many packed-kernel life cycles and concurrent sandboxed cells, then count
what is left behind.

    python tools/soak.py                          # 1000 cycles per engine (the full run)
    python tools/soak.py --cycles 50 --engines userns proot
    python tools/soak.py --cycles 3 --engines userns fakechroot --root ~/packs/py
    python tools/soak.py --cycles 100 --engines userns proot --json docs/soak-100.json

For each engine (default: every engine among userns, fakechroot, bwrap and proot that
works here for the user the kernels run as):

1. ``--cycles`` kernel life cycles through jupyter_client's ``KernelManager`` and the
   nbsandbox provisioner, with a kernelspec for the packed root (as ``nbsandbox kernel
   install`` writes it): start, execute, interrupt a sleeping cell (signal mode),
   execute again, restart, execute, shut down; each cycle's start, interrupt, restart
   and (graceful) shutdown are timed, and the summary gives median and worst;
2. ``--concurrent`` sandboxed cells at a time (``nbsandbox run ... python3 -c ...``), half
   of them interrupted with SIGINT to their process group while they run.

Every kernel and cell carries a unique environment token.  Afterwards it counts, after
a grace period for janitors: live processes carrying the token, new ``/tmp`` entries
named ``nbsandbox-*``, ``proot-*`` or ``prooted-*`` (PRoot's by the PID in their name,
when it is one of the PIDs seen carrying the token; nbsandbox's when owned by the uid the
kernels run as; other programs' are listed but not counted), connection files left in the
(private) Jupyter runtime directory, and host mounts (``/proc/self/mountinfo``) that
were not there before.  The expected count is zero everywhere; the exit status is 1
otherwise (or when a cycle failed), after a summary table.  ``--json FILE`` writes the
same results (and the per-phase times) as JSON, for docs/soak.md.

When run as root, kernels and cells run as ``nobody`` (uid 65534), as engines are meant
for users without root.  Without ``--root``, the Python running this script (which
must have ipykernel) is packed into a temporary root first (about 15 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the suite's helpers for unprivileged kernels

import unpriv  # noqa: E402
from jupyter_fixtures import (  # noqa: E402
    UnprivilegedProvisioner,
    engines_for,
    execute,
    interrupt_sleeping_cell,
    register_provisioner,
)

ENGINES = ("userns", "fakechroot", "bwrap", "proot")
TMP_PREFIXES = ("nbsandbox-", "proot-", "prooted-")
TOKEN_VAR = "NBS_SOAK_TOKEN"
NOBODY = unpriv.NOBODY
TIMEOUT = 60.0
PROVISIONER = "nbsandbox-soak-provisioner"
VERBOSE = False


# -- running as the unprivileged user: the test suite's own helpers ---------------------------


class SoakProvisioner(UnprivilegedProvisioner):
    """The test suite's provisioner (the real one; only the kernel drops to nobody when
    we are root), with the kernels' warnings discarded unless --verbose."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        if not VERBOSE:
            kwargs.setdefault("stderr", subprocess.DEVNULL)
        return await super().launch_kernel(cmd, **kwargs)


def _user_env(home: Path, token: str) -> dict[str, str]:
    return {**unpriv.unprivileged_env(home=str(home)), TOKEN_VAR: token}


# -- what is left behind ---------------------------------------------------------------------


def processes_with(token: str) -> list[int]:
    return unpriv.processes_with(f"{TOKEN_VAR}={token}")


def tmp_entries() -> set[str]:
    return {n for n in os.listdir("/tmp") if n.startswith(TMP_PREFIXES)}


class PidWatcher:
    """Remembers every PID that carried the token (sampled every 0.1 s), so that PRoot's
    ``/tmp/proot-<pid>-*`` and ``/tmp/prooted-<pid>-*`` are told apart from those of other
    programs running on the machine meanwhile."""

    def __init__(self, token: str) -> None:
        self.token, self.seen = token, set()  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.seen.update(processes_with(self.token))
            if self._stop.wait(0.1):
                return

    def stop(self) -> set[int]:
        self._stop.set()
        self._thread.join()
        return self.seen


def kernel_uid() -> int:
    """The uid the soak's kernels and cells run as."""
    return NOBODY if os.getuid() == 0 else os.getuid()


def ours(entry: str, pids: set[int], owner: int | None = None) -> bool:
    """Whether a new /tmp entry was made by the soak's processes: ``proot-PID-*`` and
    ``prooted-PID-*`` by PID; ``nbsandbox-*`` (made by the sandboxed processes themselves)
    when owned by the uid they run as."""
    if entry.startswith("nbsandbox-"):
        return owner is None or owner == kernel_uid()
    parts = entry.split("-")
    return len(parts) > 1 and parts[1].isdigit() and int(parts[1]) in pids


def _owner(entry: str) -> int | None:
    try:
        return os.lstat(os.path.join("/tmp", entry)).st_uid
    except FileNotFoundError:
        return -1  # gone meanwhile


def mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {" ".join(line.split()[3:5]) for line in f}


@dataclass
class Leftovers:
    processes: list[int] = field(default_factory=list)
    tmp: list[str] = field(default_factory=list)
    connection_files: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    #: new /tmp entries of other programs (not the soak's PIDs): reported, not counted
    foreign_tmp: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.processes) + len(self.tmp) + len(self.connection_files) + \
            len(self.mounts)


def count_leftovers(token: str, runtime: Path, tmp_before: set[str], mounts_before: set[str],
                    pids: set[int], grace: float = 10.0) -> Leftovers:
    """What is left, after waiting up to ``grace`` seconds for it to go away."""
    deadline = time.monotonic() + grace
    while True:
        new_tmp = sorted(tmp_entries() - tmp_before)
        owners = {e: _owner(e) for e in new_tmp}
        new_tmp = [e for e in new_tmp if owners[e] != -1]
        found = Leftovers(processes_with(token),
                          [e for e in new_tmp if ours(e, pids, owners[e])],
                          sorted(p.name for p in runtime.glob("kernel-*.json")),
                          sorted(mounts() - mounts_before),
                          [e for e in new_tmp if not ours(e, pids, owners[e])])
        if found.total == 0 or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


# -- kernels ------------------------------------------------------------------------------------


def _execute(kc: Any, code: str) -> tuple[str, str]:
    reply, out = execute(kc, code, TIMEOUT)
    return reply["status"], out


#: What a kernel cycle times, in seconds (see kernel_cycle).
PHASES = ("start", "interrupt", "restart", "shutdown")


def kernel_cycle(name: str) -> dict[str, float]:
    """start, execute, interrupt, execute, restart, execute, shutdown; the seconds of
    each of PHASES: start and restart up to the kernel's first reply, interrupt up to
    the interrupted cell's reply, shutdown (graceful) up to the kernel's end."""
    from jupyter_client.manager import KernelManager

    times: dict[str, float] = {}
    started = time.monotonic()
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=TIMEOUT)
        times["start"] = time.monotonic() - started
        status, out = _execute(kc, "print(6 * 7)")
        if (status, out.strip()) != ("ok", "42"):
            raise RuntimeError(f"execute: {status} {out!r}")
        times["interrupt"] = interrupt_sleeping_cell(km, kc, TIMEOUT)
        status, out = _execute(kc, "print('alive')")
        if (status, out.strip()) != ("ok", "alive"):
            raise RuntimeError(f"execute after interrupt: {status} {out!r}")
        started = time.monotonic()
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=TIMEOUT)
        times["restart"] = time.monotonic() - started
        status, out = _execute(kc, "import sys; print(sys.executable.startswith('/gnu/'))")
        if (status, out.strip()) != ("ok", "True"):
            raise RuntimeError(f"execute after restart: {status} {out!r}")
    finally:
        kc.stop_channels()
        if km.has_kernel:
            started = time.monotonic()
            km.shutdown_kernel(now=False)
            times["shutdown"] = time.monotonic() - started
    return times


# -- concurrent cells -----------------------------------------------------------------------------


def concurrent_cells(root: Path, engine: str, n: int, env: dict[str, str], cwd: Path,
                     ) -> tuple[int, list[str]]:
    """``n`` cells at once; the odd ones are interrupted.  Returns (cells, errors)."""
    code = "import time, sys; time.sleep(%s); print('done'); sys.stdout.flush()"
    procs = []
    for i in range(n):
        interrupted = i % 2 == 1
        argv = [sys.executable, "-m", "nbsandbox", "run", "--root", str(root), "--engine",
                engine, "--", "python3", "-c", code % ("30" if interrupted else "0.5")]
        procs.append((interrupted, subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=unpriv.preexec(), start_new_session=True)))
    time.sleep(3.0)  # let the interrupted ones reach their sleep
    for interrupted, p in procs:
        if interrupted and p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
    errors = []
    for interrupted, p in procs:
        try:
            out, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            errors.append(f"cell {p.pid} did not end")
            continue
        if interrupted:
            if p.returncode == 0:
                errors.append(f"interrupted cell {p.pid} exited 0")
        elif p.returncode != 0 or out.strip() != b"done":
            errors.append(f"cell {p.pid} exited {p.returncode}: "
                          f"{err.decode(errors='replace').strip()[-200:]}")
        try:
            os.killpg(p.pid, 0)  # the cell's process group must be gone with it
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        errors.append(f"process group {p.pid} outlived its cell")
    return n, errors


# -- one engine -----------------------------------------------------------------------------------


@dataclass
class EngineResult:
    engine: str
    cycles: int = 0
    cells: int = 0
    seconds: float = 0.0
    cycle_seconds: float = 0.0
    leftovers: Leftovers = field(default_factory=Leftovers)
    errors: list[str] = field(default_factory=list)
    skipped: str = ""
    #: phase -> seconds of each cycle that completed it (see PHASES)
    times: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})

    def stats(self) -> dict[str, dict[str, float]]:
        """phase -> {"median", "worst"} seconds, for the phases measured."""
        return {p: {"median": round(statistics.median(v), 3), "worst": round(max(v), 3)}
                for p, v in self.times.items() if v}

    def as_json(self) -> dict[str, Any]:
        left = self.leftovers
        return {"engine": self.engine, "skipped": self.skipped, "cycles": self.cycles,
                "cells": self.cells, "seconds": round(self.seconds, 1),
                "seconds_per_cycle": round(self.cycle_seconds, 2), "times": self.stats(),
                "leftovers": {"processes": left.processes, "tmp": left.tmp,
                              "connection_files": left.connection_files,
                              "mounts": left.mounts, "total": left.total},
                "not_counted_tmp": left.foreign_tmp, "errors": self.errors}


def soak_engine(engine: str, root: Any, args: argparse.Namespace, dirs: dict[str, Path],
                base_env: dict[str, str]) -> EngineResult:
    from nbsandbox.kernelspec import kernel_json

    result = EngineResult(engine)
    token = uuid.uuid4().hex
    env = {**base_env, TOKEN_VAR: token}
    spec = kernel_json(root, engine=engine)
    spec["metadata"]["kernel_provisioner"]["provisioner_name"] = PROVISIONER
    spec["env"] = {TOKEN_VAR: token, "HOME": str(dirs["home"]),
                   "IPYTHONDIR": str(dirs["ipython"])}
    name = f"soak-{engine}"
    kdir = dirs["kernels"] / name
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "kernel.json").write_text(json.dumps(spec, indent=1))

    tmp_before, mounts_before = tmp_entries(), mounts()
    watcher = PidWatcher(token)
    started = time.monotonic()
    for i in range(args.cycles):
        try:
            times = kernel_cycle(name)
            result.cycles += 1
            for phase, seconds in times.items():
                result.times[phase].append(seconds)
        except Exception as exc:
            result.errors.append(f"cycle {i}: {type(exc).__name__}: {exc}")
            if len(result.errors) >= 3:
                result.errors.append("stopped after 3 failed cycles")
                break
        if args.progress and (i + 1) % args.progress == 0:
            rate = (time.monotonic() - started) / (i + 1)
            print(f"soak: {engine}: {i + 1}/{args.cycles} cycles, {rate:.2f} s/cycle",
                  file=sys.stderr, flush=True)
    result.cycle_seconds = (time.monotonic() - started) / max(1, args.cycles)
    if args.concurrent:
        cells, errors = concurrent_cells(root.path, engine, args.concurrent, env,
                                         dirs["work"])
        result.cells, result.errors = cells, result.errors + errors
    result.seconds = time.monotonic() - started
    pids = watcher.stop()
    result.leftovers = count_leftovers(token, dirs["runtime"], tmp_before, mounts_before, pids)
    for pid in result.leftovers.processes:  # leave the machine clean for the next engine
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return result


def summary(results: list[EngineResult]) -> str:
    head = (f"{'engine':<11} {'cycles':>6} {'cells':>5} {'s/cycle':>7} {'seconds':>8} "
            f"{'procs':>5} {'tmp':>4} {'conn':>4} {'mounts':>6} {'errors':>6}")
    lines = [head]
    for r in results:
        if r.skipped:
            lines.append(f"{r.engine:<11} skipped: {r.skipped}")
            continue
        left = r.leftovers
        lines.append(f"{r.engine:<11} {r.cycles:>6} {r.cells:>5} {r.cycle_seconds:>7.2f} "
                     f"{r.seconds:>8.1f} {len(left.processes):>5} {len(left.tmp):>4} "
                     f"{len(left.connection_files):>4} {len(left.mounts):>6} "
                     f"{len(r.errors):>6}")
    timed = [r for r in results if not r.skipped and r.stats()]
    if timed:
        lines.append("seconds (median / worst of the cycles): "
                     + ", ".join(f"{p}" for p in PHASES))
        for r in timed:
            st = r.stats()
            lines.append(f"{r.engine:<11} " + "  ".join(
                f"{p} {st[p]['median']:.2f} / {st[p]['worst']:.2f}" for p in PHASES if p in st))
    for r in results:
        for e in r.errors[:5]:
            lines.append(f"  {r.engine}: {e}")
        left = r.leftovers
        for what, items in (("process", left.processes), ("tmp", left.tmp),
                            ("connection file", left.connection_files),
                            ("mount", left.mounts),
                            ("(not counted: another program's) tmp", left.foreign_tmp)):
            for item in items[:5]:
                lines.append(f"  {r.engine}: leftover {what}: {item}")
    ran = [r for r in results if not r.skipped]
    leftovers = sum(r.leftovers.total for r in ran)
    failed = sum(bool(r.errors) for r in ran)
    lines.append(f"total: {sum(r.cycles for r in ran)} cycles, {sum(r.cells for r in ran)} "
                 f"cells, {leftovers} leftovers, {failed} engines with errors")
    return "\n".join(lines)


def results_json(results: list[EngineResult], args: argparse.Namespace) -> dict[str, Any]:
    ran = [r for r in results if not r.skipped]
    return {"cycles_asked": args.cycles, "concurrent_cells": args.concurrent,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                     "load_at_end": [round(x, 2) for x in os.getloadavg()]},
            "leftovers_total": sum(r.leftovers.total for r in ran),
            "engines": [r.as_json() for r in results]}


def _pack_this_python(base: Path) -> Path:
    from nbsandbox.pack import PackOptions, build_pack

    print("soak: packing this Python into a temporary root...", file=sys.stderr, flush=True)
    result = build_pack(PackOptions(python=sys.executable, output=base / "root"))
    return Path(result.path)


def _world_readable(path: Path) -> None:
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=False)
    p = path
    while str(p) not in ("/", ""):
        st = p.stat()
        if st.st_uid == os.getuid() and not st.st_mode & 0o001:
            p.chmod(st.st_mode | 0o755)
        p = p.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=1000, help="kernel cycles per engine")
    ap.add_argument("--engines", nargs="+", choices=ENGINES, metavar="ENGINE",
                    help=f"engines to soak (default: those of {', '.join(ENGINES)} that work)")
    ap.add_argument("--concurrent", type=int, default=20,
                    help="sandboxed cells run at once per engine (0: none)")
    ap.add_argument("--root", type=Path, help="a packed root whose Python has ipykernel "
                    "(default: pack this Python into a temporary root)")
    ap.add_argument("--progress", type=int, default=0, metavar="N",
                    help="report every N cycles on stderr")
    ap.add_argument("--verbose", action="store_true", help="show the kernels' stderr")
    ap.add_argument("--json", type=Path, metavar="FILE",
                    help="also write the results (per engine: cycles, median and worst "
                    "seconds of each phase, leftovers, errors) to FILE as JSON")
    args = ap.parse_args(argv)
    unpriv.default_interrupt_signals()  # the cells' ^C must reach them
    global VERBOSE
    VERBOSE = args.verbose

    sys.path.insert(0, str(REPO))
    from nbsandbox.store import StoreRoot

    base = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        dirs = {name: base / name for name in ("runtime", "data", "config", "home", "ipython",
                                               "work")}
        dirs["kernels"] = dirs["data"] / "kernels"
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        dirs["runtime"].chmod(0o1777)
        dirs["work"].chmod(0o777)
        if os.getuid() == 0:
            for d in (dirs["home"], dirs["ipython"]):
                os.chown(d, NOBODY, NOBODY)
        root = StoreRoot.open(args.root) if args.root else StoreRoot.open(
            _pack_this_python(base))
        _world_readable(base)
        if args.root:
            _world_readable(Path(root.path))
        os.environ.update({"JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
                           "JUPYTER_PATH": str(dirs["data"]),
                           "JUPYTER_DATA_DIR": str(dirs["data"]),
                           "JUPYTER_CONFIG_DIR": str(dirs["config"]),
                           "IPYTHONDIR": str(dirs["ipython"])})
        for name in ("NBSANDBOX_ADMIN_CONFIG", "NBSANDBOX_ENGINE", "NBSANDBOX_ROOT",
                     "PYTEST_CURRENT_TEST"):
            os.environ.pop(name, None)
        os.environ["HOME"] = str(dirs["home"])
        register_provisioner(PROVISIONER, SoakProvisioner)
        base_env = _user_env(dirs["home"], "")
        base_env.pop(TOKEN_VAR)
        available = engines_for(base_env)
        results = []
        for engine in args.engines or ENGINES:
            why = available.get(engine, "not built here")
            if why:
                results.append(EngineResult(engine, skipped=why[:100]))
                continue
            print(f"soak: {engine}: {args.cycles} kernel cycles, {args.concurrent} concurrent "
                  "cells...", file=sys.stderr, flush=True)
            results.append(soak_engine(engine, root, args, dirs, base_env))
        print(summary(results))
        if args.json:
            args.json.write_text(json.dumps(results_json(results, args), indent=1) + "\n")
        ran = [r for r in results if not r.skipped]
        if args.engines and len(ran) < len(args.engines):
            return 1  # an engine asked for by name could not be soaked
        return 1 if any(r.errors or r.leftovers.total for r in ran) else 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
