"""Engines side by side with the native program and the peer tools, in one run.

    python benchmarks/run.py [--root ROOT] [--out DIR] [--quick]

Workloads (each run natively, then under every engine that works here):

* ``startup``   -- ``python3 -S -c pass``: the packed Python through the
  engine's command vs the same host Python directly (wall time per run).
* ``metadata``  -- walk + ``lstat`` over the pack's standard library, timed
  inside the process (the native run walks the same files through their
  host paths).
* ``cpu``       -- a pure-Python loop, timed inside the process.
* ``stat``      -- ``stat()`` in a C loop (benchmarks/statbench.c, packed as a
  store program): on a store path and on a host path (ns per call).

For userns and fakechroot, two more rows: the pack's own ``bin/`` program
(the static wrapper, ``NBSANDBOX_ENGINE=<engine>``, no nbsandbox involved)
and ``nbsandbox run --engine <engine>`` (Python start-up included).

Each engine also runs under Landlock restrictions (``ENGINE + landlock``:
writes only to the temporary directory, no TCP), beside the same run without
them, when the kernel has Landlock ABI 4 or later.

Yardsticks beside nbsandbox's engines: PRoot with and without seccomp
acceleration and, when installed, Debian's libfakechroot run the way Guix's
fakechroot engine runs it (store ld.so --preload libfakechroot.so).

Writes ``results.json``, ``results.md`` and ``results.png`` into ``--out``
(default ``benchmarks/results/``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nbsandbox import landlock  # noqa: E402
from nbsandbox.engines import get_engine  # noqa: E402
from nbsandbox.engines.proot import NO_SECCOMP  # noqa: E402
from nbsandbox.launch import make_plan, prepare  # noqa: E402
from nbsandbox.store import StoreRoot  # noqa: E402

ENGINES = ("userns", "fakechroot", "bwrap", "proot")
#: Engines whose start-up through a pack's bin/ wrapper is measured too.
WRAPPED = ("userns", "fakechroot")
DEBIAN_FAKECHROOT = Path("/usr/lib/x86_64-linux-gnu/fakechroot/libfakechroot.so")

METADATA_SCRIPT = r"""
import os, sys, time
top = sys.argv[1]
best = None
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); n = 0
    for d, dirs, files in os.walk(top):
        for f in files:
            os.lstat(os.path.join(d, f)); n += 1
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
print(best, n)
"""

CPU_SCRIPT = r"""
import sys, time
best = None
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter(); s = 0
    for i in range(2_000_000):
        s += i * i
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
print(best)
"""


@dataclass
class Runner:
    """How to start a program natively or under one engine."""

    name: str
    prefix_argv: list[str] | None  # None: build the command through nbsandbox
    env: dict[str, str]
    engine: str | None = None
    absolute: bool = False  # native only: reach the files by their absolute host paths
    wrapper: bool = False  # the pack's own bin/ program, with NBSANDBOX_ENGINE=engine
    restrictions: landlock.Restrictions | None = None

    def argv(self, root: StoreRoot, program: str, args: list[str]) -> tuple[list[str], dict]:
        if self.wrapper:
            return [str(root.path / "bin" / program), *args], self.env
        if self.prefix_argv is not None:
            return [*self.prefix_argv, program, *args], self.env
        plan = make_plan(root, program, args, env=self.env)
        cmd = landlock.restrict(prepare(plan, self.engine).command, self.restrictions, plan)
        if cmd.executable:
            return [cmd.executable, *cmd.argv[1:]], cmd.env
        return cmd.argv, cmd.env


def run_out(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)
    if proc.returncode != 0:
        tail = proc.stderr.strip()[-300:]
        raise RuntimeError(f"{argv[:3]}... failed ({proc.returncode}): {tail}")
    return proc.stdout


def wall(argv: list[str], env: dict[str, str], repeat: int) -> float:
    """Median wall time of ``repeat`` runs, in seconds (after one warm-up)."""
    run_out(argv, env)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_statbench(out: Path) -> Path:
    """The host build of statbench (the native run uses it; the pack has a copy)."""
    bench = out / "statbench"
    subprocess.run(["cc", "-O2", "-o", str(bench), str(HERE / "statbench.c")], check=True)
    return bench


def build_root(out: Path) -> StoreRoot:
    pack = out / "pack"
    if not (pack / ".nbsandbox" / "pack.json").exists():
        bench = build_statbench(out)
        if pack.exists():
            shutil.rmtree(pack)
        subprocess.run([sys.executable, "-m", "nbsandbox", "pack", "--program", str(bench),
                        "-o", str(pack)], check=True)
    return StoreRoot.open(pack)


def debian_fakechroot_argv(root: StoreRoot, program: str) -> list[str] | None:
    """The Guix way: the store's ld.so, preloading Debian's libfakechroot."""
    if not DEBIAN_FAKECHROOT.exists():
        return None
    from nbsandbox.program import inspect_program

    info = inspect_program(root, root.find_program(program))
    ld_so = root.to_host(root.resolve(info.interpreter or ""))
    libdir = ld_so.parent
    return [str(ld_so), "--library-path", f"{libdir}:{DEBIAN_FAKECHROOT.parent}",
            "--preload", str(DEBIAN_FAKECHROOT), info.host_path]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="an unpacked pack with python3 and statbench (built if absent)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reps = 5 if args.quick else 20
    rounds = 2 if args.quick else 5
    stat_n = 50_000 if args.quick else 300_000

    root = StoreRoot.open(args.root) if args.root else build_root(args.out)
    py_store = root.resolve(root.find_program("python3"))
    py_item = os.path.dirname(os.path.dirname(py_store))
    stdlib_store = next(p for p in (f"{py_item}/lib/python3.{v}" for v in range(8, 20))
                        if root.to_host(p).is_dir())
    statbench_host = str(build_statbench(args.out))
    host_python = os.path.realpath(sys.executable)
    host_file = "/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd"
    store_file = f"{stdlib_store}/os.py"

    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSANDBOX_")}
    env.pop(NO_SECCOMP, None)
    # "native" reaches the pack's files through as many path components as
    # the store path has; "native, host path" through their full host path,
    # which is what the kernel walks under fakechroot.
    runners = [Runner("native", [], env), Runner("native, host path", [], env, absolute=True)]
    for name in ENGINES:
        engine = get_engine(name)
        probe = engine.probe()
        if not probe.available:
            print(f"skipping {name}: {probe.reason}", file=sys.stderr)
            continue
        runners.append(Runner(name, None, env, engine=name))
        if name in WRAPPED and (root.path / "bin" / "python3").is_file() and \
                not (root.path / "bin").is_symlink():
            # The pack's own bin/ program (no nbsandbox), and nbsandbox run, the same engine.
            runners.append(Runner(f"{name}: pack's bin/ wrapper", None,
                                  {**env, "NBSANDBOX_ENGINE": name}, engine=name, wrapper=True))
            runners.append(Runner(f"{name}: nbsandbox run", [
                sys.executable, "-m", "nbsandbox", "run", "--root", str(root.path),
                "--engine", name, "--"], env, engine=name))
        if landlock.abi() >= landlock.NETWORK_ABI:
            confined = landlock.Restrictions(write=(tempfile.gettempdir(),), network=False)
            runners.append(Runner(f"{name} + landlock", None, env, engine=name,
                                  restrictions=confined))
        if name == "proot" and engine.seccomp:  # type: ignore[attr-defined]
            runners.append(Runner("proot (no seccomp)", None, {**env, NO_SECCOMP: "1"},
                                  engine=name))
    # The native runs use paths relative to the root, from the root: the same
    # files through the same number of path components as "/gnu/store/...".
    rel = root.prefix.lstrip("/")
    native_stdlib = rel + stdlib_store[len(root.prefix):]
    native_store_file = rel + store_file[len(root.prefix):]

    def measure(r: Runner) -> dict[str, float]:
        row: dict[str, float] = {}
        if r.engine is None:
            py = [host_python]
            stdlib, store_path = native_stdlib, native_store_file
            if r.absolute:
                stdlib, store_path = str(root.path / stdlib), str(root.path / store_path)
            else:
                row["startup_ms"] = wall([*py, "-S", "-c", "pass"], r.env, reps) * 1e3
                row["cpu_ms"] = float(run_out([*py, "-c", CPU_SCRIPT, "3"], r.env)) * 1e3
            meta = run_out([*py, "-c", METADATA_SCRIPT, stdlib, "3"], r.env, cwd=root.path)
            row["metadata_ms"] = float(meta.split()[0]) * 1e3
            out = run_out([statbench_host, str(stat_n), store_path, host_file], r.env,
                          cwd=root.path).split()
        else:
            start, senv = r.argv(root, "python3", ["-S", "-c", "pass"])
            row["startup_ms"] = wall(start, senv, reps) * 1e3
            m_argv, m_env = r.argv(root, "python3", ["-c", METADATA_SCRIPT, stdlib_store, "3"])
            row["metadata_ms"] = float(run_out(m_argv, m_env).split()[0]) * 1e3
            c_argv, c_env = r.argv(root, "python3", ["-c", CPU_SCRIPT, "3"])
            row["cpu_ms"] = float(run_out(c_argv, c_env)) * 1e3
            s_argv, s_env = r.argv(root, "statbench", [str(stat_n), store_file, host_file])
            out = run_out(s_argv, s_env).split()
        row["stat_store_ns"], row["stat_host_ns"] = float(out[1]), float(out[3])
        return row

    # Rounds interleave the runners so that a noisy moment hits them all;
    # each figure is the best of the rounds.
    results: dict[str, dict[str, float]] = {}
    failed: set[str] = set()
    for k in range(rounds):
        for r in runners:
            if r.name in failed:
                continue
            print(f"round {k + 1}/{rounds}: {r.name} ...", file=sys.stderr)
            try:
                row = measure(r)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"  {r.name} failed: {exc}", file=sys.stderr)
                failed.add(r.name)
                results.pop(r.name, None)
                continue
            best = results.setdefault(r.name, row)
            for key, value in row.items():
                best[key] = min(best[key], value)

    guix_way = debian_fakechroot_argv(root, "statbench")
    if guix_way:
        print("running libfakechroot (Debian, the Guix way) ...", file=sys.stderr)
        # Paths outside the store's top directory stay the host's.
        top = root.prefix.strip("/").split("/")[0]
        exclude = ":".join(f"/{e}" for e in sorted(os.listdir("/")) if e != top)
        fenv = {**env, "FAKECHROOT_BASE": str(root.path), "FAKECHROOT_EXCLUDE_PATH": exclude}
        try:
            out = run_out([*guix_way, str(stat_n), store_file, host_file], fenv).split()
            results["libfakechroot (Debian)"] = {"stat_store_ns": float(out[1]),
                                                 "stat_host_ns": float(out[3])}
        except RuntimeError as exc:
            print(f"  libfakechroot failed: {exc}", file=sys.stderr)

    write_results(results, args.out)
    return 0


COLUMNS = [
    ("startup_ms", "start-up (ms)"),
    ("metadata_ms", "walk+lstat stdlib (ms)"),
    ("cpu_ms", "CPU loop (ms)"),
    ("stat_store_ns", "stat() store path (ns)"),
    ("stat_host_ns", "stat() host path (ns)"),
]


def table(results: dict[str, dict[str, float]]) -> str:
    native = results.get("native", {})
    head = "| runner | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 1)]
    for name, row in results.items():
        cells = []
        for key, _ in COLUMNS:
            if key not in row:
                cells.append("-")
                continue
            cell = f"{row[key]:.1f}" if row[key] >= 10 else f"{row[key]:.2f}"
            if name != "native" and native.get(key):
                ratio = row[key] / native[key]
                cell += f" ({ratio:.2f}x)"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(results: dict[str, dict[str, float]], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out / "results.md").write_text(text + "\n")
    print(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
        return
    native = results.get("native", {})
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4.2 * len(COLUMNS), 4.2))
    for ax, (key, label) in zip(axes, COLUMNS, strict=True):
        names = [n for n in results if key in results[n] and native.get(key)]
        ratios = [results[n][key] / native[key] for n in names]
        # Bars grow from 1 (= native) to the ratio, on a log axis.
        ax.barh(names, [r - 1 for r in ratios], left=1, color="#4c72b0")
        ax.axvline(1, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlim(0.5, max(2.0, max(ratios) * 2))
        for y, (name, ratio) in enumerate(zip(names, ratios, strict=True)):
            ax.text(max(ratio, 1) * 1.05, y, f"{results[name][key]:.3g}", va="center",
                    fontsize=7)
        ax.set_title(f"{label}\n(x native, log)", fontsize=9)
        ax.invert_yaxis()
    fig.suptitle("nbsandbox engines vs the native program (lower is better; labels: absolute)")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=100)
    print(f"chart: {out / 'results.png'}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
