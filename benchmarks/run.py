"""Engines side by side with the native program and the peer tools, in one run.

    python benchmarks/run.py [--root ROOT] [--out DIR] [--quick] [--rounds N]
                             [--engines NAMES] [--core] [--native-dir NAME=DIR]...

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
them, when the kernel has Landlock ABI 4 or later, and with its host accesses
recorded for an access report (``ENGINE + report``: the stat loop's host file
is recorded on every call; the store's never is).

The floor every ratio reads against is ``native at the prefix``: the pack's
own programs run natively at the store's prefix (its store bind-mounted there
in a private mount namespace, as root, during the bench only; nothing is
created at the prefix on the host).  Without root it is skipped and ratios read
against ``native`` (the host's Python).  Every sample is kept: the tables give
medians with their ratios, and min / median / max with the number of samples.

Other yardsticks beside nbsandbox's engines: PRoot with and without seccomp
acceleration and, when installed, Debian's libfakechroot run the way Guix's
fakechroot engine runs it (store ld.so --preload libfakechroot.so).

To compare builds of the native libraries side by side (before and after a
change), ``--native-dir NAME=DIR`` adds a row ``ENGINE [NAME]`` per engine
whose commands use the libraries in DIR (``NBSANDBOX_NATIVE_DIR``), in the
same interleaved rounds; ``--engines`` and ``--core`` (the plain engine rows
only) keep such a run short.

Writes ``results.json``, ``results.md`` and ``results.png`` into ``--out``
(default ``benchmarks/results/``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
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
from nbsandbox.report.recording import Recording  # noqa: E402
from nbsandbox.report.recording import start as start_recording  # noqa: E402
from nbsandbox.store import StoreRoot  # noqa: E402

ENGINES = ("userns", "fakechroot", "bwrap", "proot")
#: Engines whose start-up through a pack's bin/ wrapper is measured too.
WRAPPED = ("userns", "fakechroot")
DEBIAN_FAKECHROOT = Path("/usr/lib/x86_64-linux-gnu/fakechroot/libfakechroot.so")

METADATA_SCRIPT = r"""
import os, sys, time
top = sys.argv[1]
times = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); n = 0
    for d, dirs, files in os.walk(top):
        for f in files:
            os.lstat(os.path.join(d, f)); n += 1
    times.append(time.perf_counter() - t0)
print(*times)
"""

CPU_SCRIPT = r"""
import sys, time
times = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter(); s = 0
    for i in range(2_000_000):
        s += i * i
    times.append(time.perf_counter() - t0)
print(*times)
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
    report: bool = False  # record host accesses (the raw records are dropped)
    recording: Recording | None = None
    native_dir: str | None = None  # NBSANDBOX_NATIVE_DIR while the command is built

    def argv(self, root: StoreRoot, program: str, args: list[str]) -> tuple[list[str], dict]:
        if self.wrapper:
            return [str(root.path / "bin" / program), *args], self.env
        if self.prefix_argv is not None:
            return [*self.prefix_argv, program, *args], self.env
        plan = make_plan(root, program, args, env=self.env)
        saved = os.environ.get("NBSANDBOX_NATIVE_DIR")
        if self.native_dir:
            os.environ["NBSANDBOX_NATIVE_DIR"] = self.native_dir
        try:
            launch = prepare(plan, self.engine)
        finally:
            if self.native_dir:
                if saved is None:
                    del os.environ["NBSANDBOX_NATIVE_DIR"]
                else:
                    os.environ["NBSANDBOX_NATIVE_DIR"] = saved
        launch.command = landlock.restrict(launch.command, self.restrictions, plan)
        if self.report:
            self.drop_recording()  # the previous command has ended
            self.recording = start_recording(launch, None)
        cmd = launch.command
        if cmd.executable:
            return [cmd.executable, *cmd.argv[1:]], cmd.env
        return cmd.argv, cmd.env

    def drop_recording(self) -> None:
        if self.recording is not None:
            self.recording.abandon()
            self.recording = None


#: Engines run as this user when the bench runs as root: PRoot run by root makes
#: the store prefix's missing parents (/gnu) in the host's own tree for the time
#: of a run, which other users' sandboxes at the same prefix would see (and their
#: store mounts are detached when it removes them again).
NOBODY = 65534


_PROOT_USER: dict[str, object] = {}


def others_can_read(path: Path) -> bool:
    """Whether a user other than the owner can reach ``path`` and read it."""
    parents = [path, *path.parents]
    return bool(path.stat().st_mode & stat.S_IROTH) and all(
        p.stat().st_mode & stat.S_IXOTH for p in parents)


def choose_proot_user(root: StoreRoot) -> None:
    """Run the proot rows as nobody when the bench runs as root (see NOBODY), if
    nobody can read the pack; else as root, with a warning."""
    if os.geteuid() != 0:
        return
    if others_can_read(Path(root.path)):
        _PROOT_USER.update(user=NOBODY, group=NOBODY, extra_groups=[])
    else:
        print(f"warning: nobody cannot read {root.path}: the proot rows run as root, "
              "which makes the store prefix's parents in the host's tree while they run",
              file=sys.stderr)


def as_user(runner: Runner) -> dict[str, object]:
    """subprocess arguments that run ``runner``'s commands as nobody where needed."""
    return dict(_PROOT_USER) if runner.engine == "proot" else {}


def run_out(argv: list[str], env: dict[str, str], cwd: Path | None = None,
            **user: object) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=cwd,
                          close_fds=False,  # the access report's descriptor is inheritable
                          **user)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = proc.stderr.strip()[-300:]
        raise RuntimeError(f"{argv[:3]}... failed ({proc.returncode}): {tail}")
    return proc.stdout


def wall(argv: list[str], env: dict[str, str], repeat: int, **user: object) -> list[float]:
    """Wall times of ``repeat`` runs, in seconds (after one warm-up)."""
    run_out(argv, env, **user)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True, close_fds=False,
                       **user)  # type: ignore[call-overload]
        times.append(time.perf_counter() - t0)
    return times


def seconds(text: str) -> list[float]:
    """The times a workload script printed, in milliseconds."""
    return [float(t) * 1e3 for t in text.split()]


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


#: The yardstick every ratio reads against: the pack's own programs at the
#: store's prefix, natively (no engine), in a private mount namespace.
FLOOR = "native at the prefix"

Samples = dict[str, list[float]]


@dataclass
class StorePaths:
    """The pack's files the workloads use, as store paths."""

    python: str
    statbench: str
    stdlib: str
    file: str

    @classmethod
    def of(cls, root: StoreRoot) -> StorePaths:
        python = root.resolve(root.find_program("python3"))
        item = os.path.dirname(os.path.dirname(python))
        stdlib = next(p for p in (f"{item}/lib/python3.{v}" for v in range(8, 20))
                      if root.to_host(p).is_dir())
        return cls(python, root.resolve(root.find_program("statbench")), stdlib,
                   f"{stdlib}/os.py")


def floor_argv(root: StoreRoot, reps: int, stat_n: int, host_file: str,
               where: Path) -> list[str] | None:
    """The command measuring the floor row, or None where it cannot run here.

    It needs root (a private mount namespace and mounts) and unshare(1); the
    store appears at its prefix only inside that namespace, never on the host.
    """
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return None
    return ["unshare", "--mount", "--propagation", "private", sys.executable, __file__,
            "--floor-worker", str(where), "--root", str(root.path), "--reps", str(reps),
            "--stat-n", str(stat_n), "--host-file", host_file]


def mount(*args: str | os.PathLike[str]) -> None:
    subprocess.run(["mount", *map(str, args)], check=True)


def enter_prefix_view(root: StoreRoot, where: Path) -> None:
    """Make ``where`` a new / holding the host's top-level entries and the
    store at its prefix, and chroot into it.  Run only in a private mount
    namespace: every mount here disappears with it."""
    mount("-t", "tmpfs", "nbsandbox-floor", where)
    for entry in sorted(os.listdir("/")):
        src, dst = Path("/", entry), where / entry
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_dir():
            dst.mkdir()
            mount("--rbind", src, dst)
        elif src.is_file():
            dst.touch()
            mount("--bind", src, dst)
    store = where / root.prefix.lstrip("/")
    store.mkdir(parents=True, exist_ok=True)
    mount("--bind", root.to_host(root.prefix), store)
    os.chroot(where)
    os.chdir("/")


def floor_worker(args: argparse.Namespace) -> int:
    """One round of the floor row: the store's programs run at their prefix."""
    root = StoreRoot.open(args.root)
    paths = StorePaths.of(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSANDBOX_")}
    enter_prefix_view(root, Path(args.floor_worker))
    row: Samples = {
        "startup_ms": [t * 1e3 for t in wall([paths.python, "-S", "-c", "pass"], env,
                                             args.reps)],
        "metadata_ms": seconds(run_out([paths.python, "-c", METADATA_SCRIPT, paths.stdlib,
                                        "3"], env)),
        "cpu_ms": seconds(run_out([paths.python, "-c", CPU_SCRIPT, "3"], env)),
    }
    out = run_out([paths.statbench, str(args.stat_n), paths.file, args.host_file],
                  env).split()
    row["stat_store_ns"], row["stat_host_ns"] = [float(out[1])], [float(out[3])]
    print(json.dumps(row))
    return 0


def machine() -> dict[str, object]:
    """What the run ran on, for the published results."""
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[-1].split("=", 1)[-1].strip().strip('"')
        except OSError:
            pass
        return "unknown"

    mem_kb = first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu": first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kb) / 2**20, 1) if mem_kb.isdigit() else None,
        "kernel": os.uname().release,
        "distro": first("/etc/os-release", "PRETTY_NAME"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="an unpacked pack with python3 and statbench (built if absent)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3 quick, else 5)")
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help="comma-separated engines to run (default: all)")
    ap.add_argument("--core", action="store_true",
                    help="only the plain engine rows (no wrappers, Landlock, report)")
    ap.add_argument("--native-dir", action="append", default=[], metavar="NAME=DIR",
                    help="also run each engine with the native libraries in DIR, "
                    "as row 'ENGINE [NAME]'")
    ap.add_argument("--floor-worker", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stat-n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--host-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor_worker:
        return floor_worker(args)
    meta = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    reps = 5 if args.quick else 20
    rounds = args.rounds or (3 if args.quick else 5)
    variants = []
    for spec in args.native_dir:
        name, sep, where = spec.partition("=")
        if not sep or not name or not os.path.isdir(where):
            ap.error(f"--native-dir {spec!r}: expected NAME=DIR with an existing DIR")
        variants.append((name, os.path.abspath(where)))
    wanted = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(wanted) - set(ENGINES))
    if unknown:
        ap.error(f"unknown engines: {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    stat_n = 50_000 if args.quick else 300_000

    root = StoreRoot.open(args.root) if args.root else build_root(args.out)
    paths = StorePaths.of(root)
    choose_proot_user(root)
    stdlib_store, store_file = paths.stdlib, paths.file
    statbench_host = str(build_statbench(args.out))
    host_python = os.path.realpath(sys.executable)
    host_file = "/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd"

    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSANDBOX_")}
    env.pop(NO_SECCOMP, None)
    # "native at the prefix" is the floor: the pack's programs at the store's
    # prefix.  "native" is the host's Python, reaching the pack's files
    # through as many path components as the store path has; "native, host
    # path" through their full host path, which is what the kernel walks
    # under fakechroot.
    floor_dir = Path(tempfile.mkdtemp(prefix="nbsandbox-floor-"))
    floor = floor_argv(root, reps, stat_n, host_file, floor_dir)
    runners = []
    if floor:
        runners.append(Runner(FLOOR, floor, env))
    else:
        print(f"skipping {FLOOR!r}: it needs root and unshare(1); ratios read against "
              "the host's Python", file=sys.stderr)
    runners += [Runner("native", [], env), Runner("native, host path", [], env, absolute=True)]
    for name in ENGINES:
        if name not in wanted:
            continue
        engine = get_engine(name)
        probe = engine.probe()
        if not probe.available:
            print(f"skipping {name}: {probe.reason}", file=sys.stderr)
            continue
        runners.append(Runner(name, None, env, engine=name))
        runners += [Runner(f"{name} [{label}]", None, env, engine=name, native_dir=where)
                    for label, where in variants]
        if args.core:
            continue
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
        runners.append(Runner(f"{name} + report", None, env, engine=name, report=True))
        if name == "proot" and engine.seccomp:  # type: ignore[attr-defined]
            runners.append(Runner("proot (no seccomp)", None, {**env, NO_SECCOMP: "1"},
                                  engine=name))
    # The native runs use paths relative to the root, from the root: the same
    # files through the same number of path components as "/gnu/store/...".
    rel = root.prefix.lstrip("/")
    native_stdlib = rel + stdlib_store[len(root.prefix):]
    native_store_file = rel + store_file[len(root.prefix):]

    def measure(r: Runner) -> Samples:
        row: Samples = {}
        if r.name == FLOOR:
            return json.loads(run_out(r.prefix_argv or [], r.env))
        if r.engine is None:
            py = [host_python]
            stdlib, store_path = native_stdlib, native_store_file
            if r.absolute:
                stdlib, store_path = str(root.path / stdlib), str(root.path / store_path)
            else:
                row["startup_ms"] = [t * 1e3 for t in wall([*py, "-S", "-c", "pass"], r.env,
                                                           reps)]
                row["cpu_ms"] = seconds(run_out([*py, "-c", CPU_SCRIPT, "3"], r.env))
            row["metadata_ms"] = seconds(run_out([*py, "-c", METADATA_SCRIPT, stdlib, "3"],
                                                 r.env, cwd=root.path))
            out = run_out([statbench_host, str(stat_n), store_path, host_file], r.env,
                          cwd=root.path).split()
        else:
            start, senv = r.argv(root, "python3", ["-S", "-c", "pass"])
            user = as_user(r)
            row["startup_ms"] = [t * 1e3 for t in wall(start, senv, reps, **user)]
            m_argv, m_env = r.argv(root, "python3", ["-c", METADATA_SCRIPT, stdlib_store, "3"])
            row["metadata_ms"] = seconds(run_out(m_argv, m_env, **user))
            c_argv, c_env = r.argv(root, "python3", ["-c", CPU_SCRIPT, "3"])
            row["cpu_ms"] = seconds(run_out(c_argv, c_env, **user))
            s_argv, s_env = r.argv(root, "statbench", [str(stat_n), store_file, host_file])
            out = run_out(s_argv, s_env, **user).split()
        row["stat_store_ns"], row["stat_host_ns"] = [float(out[1])], [float(out[3])]
        return row

    # Rounds interleave the runners so that a noisy moment hits them all;
    # every sample of every round is kept (medians and spreads below).
    results: dict[str, Samples] = {}
    failed: set[str] = set()
    try:
        for k in range(rounds):
            for r in runners:
                if r.name in failed:
                    continue
                print(f"round {k + 1}/{rounds}: {r.name} ...", file=sys.stderr)
                try:
                    row = measure(r)
                except (RuntimeError, subprocess.CalledProcessError, ValueError) as exc:
                    print(f"  {r.name} failed: {exc}", file=sys.stderr)
                    failed.add(r.name)
                    results.pop(r.name, None)
                    continue
                samples = results.setdefault(r.name, {})
                for key, values in row.items():
                    samples.setdefault(key, []).extend(values)
    finally:
        floor_dir.rmdir()
        for r in runners:
            r.drop_recording()

    guix_way = debian_fakechroot_argv(root, "statbench")
    if guix_way:
        print("running libfakechroot (Debian, the Guix way) ...", file=sys.stderr)
        # Paths outside the store's top directory stay the host's.
        top = root.prefix.strip("/").split("/")[0]
        exclude = ":".join(f"/{e}" for e in sorted(os.listdir("/")) if e != top)
        fenv = {**env, "FAKECHROOT_BASE": str(root.path), "FAKECHROOT_EXCLUDE_PATH": exclude}
        try:
            store_ns, host_ns = [], []
            for _ in range(rounds):
                out = run_out([*guix_way, str(stat_n), store_file, host_file], fenv).split()
                store_ns.append(float(out[1]))
                host_ns.append(float(out[3]))
            results["libfakechroot (Debian)"] = {"stat_store_ns": store_ns,
                                                 "stat_host_ns": host_ns}
        except RuntimeError as exc:
            print(f"  libfakechroot failed: {exc}", file=sys.stderr)

    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["rounds"], meta["startup_runs_per_round"] = rounds, reps
    meta["stat_calls_per_run"] = stat_n
    meta["quick"] = args.quick
    write_results(results, meta, args.out)
    return 0


COLUMNS = [
    ("startup_ms", "start-up (ms)"),
    ("metadata_ms", "walk+lstat stdlib (ms)"),
    ("cpu_ms", "CPU loop (ms)"),
    ("stat_store_ns", "stat() store path (ns)"),
    ("stat_host_ns", "stat() host path (ns)"),
]


@dataclass
class Spread:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))


def summarize(results: dict[str, Samples]) -> dict[str, dict[str, Spread]]:
    return {name: {key: Spread.of(v) for key, v in row.items() if v}
            for name, row in results.items()}


def yardstick(results: dict[str, Samples]) -> str:
    return FLOOR if FLOOR in results else "native"


def num(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def table(results: dict[str, Samples]) -> str:
    """Medians, each with its ratio to the yardstick's median."""
    summary = summarize(results)
    base_name = yardstick(results)
    base = summary.get(base_name, {})
    head = "| runner | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 1)]
    for name, row in summary.items():
        cells = []
        for key, _ in COLUMNS:
            if key not in row:
                cells.append("-")
                continue
            cell = num(row[key].median)
            if name != base_name and key in base:
                cell += f" ({row[key].median / base[key].median:.2f}x)"
            cells.append(cell)
        label = f"**{name}** (yardstick)" if name == base_name else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_table(results: dict[str, Samples]) -> str:
    """min / median / max and the number of samples, per cell."""
    head = "| runner | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 1)]
    for name, row in summarize(results).items():
        cells = [f"{num(row[k].low)} / {num(row[k].median)} / {num(row[k].high)} "
                 f"(n={row[k].n})" if k in row else "-" for k, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(results: dict[str, Samples], meta: dict[str, object], out: Path) -> None:
    summary = summarize(results)
    doc = {"machine": meta, "yardstick": yardstick(results),
           "rows": {name: {key: {**vars(s), "samples": results[name][key]}
                           for key, s in row.items()} for name, row in summary.items()}}
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = table(results)
    spreads = spread_table(results)
    (out / "results.md").write_text(f"{text}\n\nmin / median / max (samples):\n\n{spreads}\n")
    print(text)
    print()
    print(spreads)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
        return
    base_name = yardstick(results)
    base = summary.get(base_name, {})
    from matplotlib.ticker import NullFormatter

    names = list(summary)
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(3.2 * len(COLUMNS) + 2.5, 6.0),
                             sharey=True)
    for ax, (key, label) in zip(axes, COLUMNS, strict=True):
        # Every panel has a place for every row (a row without this figure
        # stays empty), so that the rows line up across the panels.
        ref = base[key].median if key in base else 1.0
        ys = [y for y, n in enumerate(names) if key in summary[n] and key in base]
        cells = [summary[names[y]][key] for y in ys]
        ratios = [c.median / ref for c in cells]
        # Bars grow from 1 (= the yardstick) to the median's ratio, on a log
        # axis; the whiskers span the fastest and slowest sample.
        lows = [r - c.low / ref for r, c in zip(ratios, cells, strict=True)]
        highs = [c.high / ref - r for r, c in zip(ratios, cells, strict=True)]
        ax.barh(ys, [r - 1 for r in ratios], left=1, color="#4c72b0",
                xerr=[lows, highs], error_kw={"elinewidth": 0.8, "capsize": 2})
        ax.axvline(1, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        top = max([c.high / ref for c in cells] or [2.0])
        ax.set_xlim(0.3, max(10.0, top * 2.5))
        for y, cell, ratio in zip(ys, cells, ratios, strict=True):
            ax.text(max(cell.high / ref, ratio, 1) * 1.08, y, num(cell.median), va="center",
                    fontsize=7)
        ax.set_title(f"{label}\n(x {base_name}, log)", fontsize=9)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"nbsandbox engines vs {base_name} (median; whiskers: min-max; "
                 "lower is better; labels: absolute median)")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=100)
    print(f"chart: {out / 'results.png'}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
