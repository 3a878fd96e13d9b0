#!/usr/bin/env python3
"""Fuzzing campaigns: the native path translation and the Python readers of untrusted bytes.

    python tools/fuzz.py --short   # CI: 20k inputs per native target, 2k per Python target
    python tools/fuzz.py --long    # 10^6 inputs per native target, 50k per Python target

Targets:

* native (libFuzzer, AddressSanitizer + UBSan; ``native/fuzz/run.py``): ``pathmap`` and
  ``pathmap-freestanding``, the fakechroot engine's path translation, configuration and
  ``#!``/ELF parsing;
* Python (``fuzz/readers.py``): ``tar-bytes`` and ``tar-struct`` (the pack tarball reader,
  :func:`nbsandbox.pack.unpack.unpack`: ``PackError`` or success inside DEST, never
  another exception, never a write outside DEST) and ``elf``
  (:func:`nbsandbox.elf.read_elf` and :func:`~nbsandbox.elf.parse_shebang`: ``ElfInfo``,
  ``Shebang``/``None`` or ``ElfError``, never another exception).  They run under atheris
  (coverage-guided) when it is installed (``pip install -e '.[fuzz]'``), else under a
  seeded mutation fuzzer (``--engine mutate``, also what ``--short`` uses: deterministic).

Crashing inputs are saved in ``WORKDIR/crashes`` (native: ``build/fuzz/crashes``).  Exits 0
when nothing was found, 1 otherwise, after a summary table.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "fuzz"))

NATIVE_TARGETS = ("pathmap", "pathmap-freestanding")
PY_TARGETS = ("elf", "tar-bytes", "tar-struct")
_UNITS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")


@dataclass
class Result:
    target: str
    engine: str
    inputs: int
    seconds: float
    findings: int
    detail: str = ""


def run_native(target: str, runs: int, workdir: Path, jobs: int, log_dir: Path) -> Result:
    cmd = [sys.executable, str(REPO / "native" / "fuzz" / "run.py"), "--target", target,
           "--runs", str(runs), "--workdir", str(workdir)]
    if jobs > 1:
        cmd += ["--jobs", str(jobs)]
    log = log_dir / f"native-{target}.log"
    started = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False,
                            cwd=workdir).returncode
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    if jobs > 1:  # each worker logs to fuzz-N.log in the workdir
        text += "".join(p.read_text(errors="replace") for p in workdir.glob("fuzz-*.log"))
    inputs = sum(int(n) for n in _UNITS.findall(text))
    return Result(target, "libFuzzer+ASan+UBSan", inputs, seconds, int(rc != 0),
                  "" if rc == 0 else f"exit {rc}; see {log}")


def run_python_mutate(target: str, runs: int, workdir: Path, seed: int) -> Result:
    import readers

    report = readers.run_campaign(target, runs, workdir, seed=seed,
                                  crashes=workdir / "crashes")
    detail = ""
    if report.finding:
        detail = f"{report.finding[:300]} (input: {report.crash_file})"
    return Result(target, "mutate", report.inputs, report.seconds, int(bool(report.finding)),
                  detail)


def run_python_atheris(target: str, runs: int, workdir: Path, log_dir: Path) -> Result:
    crashes = workdir / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    max_len = 65536 if target == "elf" else (256 if target == "tar-struct" else 16384)
    cmd = [sys.executable, str(REPO / "fuzz" / "atheris_main.py"), target, str(workdir),
           f"-runs={runs}", f"-max_len={max_len}", f"-artifact_prefix={crashes}/{target}-",
           "-print_final_stats=1", str(workdir / f"corpus-{target}")]
    log = log_dir / f"python-{target}.log"
    started = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False,
                            cwd=workdir).returncode
    text = log.read_text(errors="replace")
    inputs = sum(int(n) for n in _UNITS.findall(text))
    detail = ""
    if rc != 0:
        uncaught = re.search(r"Uncaught Python exception: ===\n(.*?)\n", text)
        detail = f"exit {rc}: {uncaught.group(1) if uncaught else ''}; see {log}"
    return Result(target, "atheris", inputs, time.monotonic() - started, int(rc != 0), detail)


def summary(results: list[Result]) -> str:
    lines = [f"{'target':<22} {'engine':<22} {'inputs':>10} {'seconds':>8} {'findings':>8}"]
    for r in results:
        lines.append(f"{r.target:<22} {r.engine:<22} {r.inputs:>10} {r.seconds:>8.1f} "
                     f"{r.findings:>8}" + (f"  {r.detail}" if r.detail else ""))
    native = sum(r.inputs for r in results if r.target in NATIVE_TARGETS)
    python = sum(r.inputs for r in results if r.target in PY_TARGETS)
    found = sum(r.findings for r in results)
    lines.append(f"total: {native} native inputs, {python} Python inputs, {found} findings")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true",
                      help="the CI campaign (default): 20k native, 2k Python inputs per target")
    size.add_argument("--long", action="store_true",
                      help="10^6 inputs per native target, 50k per Python target")
    ap.add_argument("--native-runs", type=int, help="inputs per native target")
    ap.add_argument("--py-runs", type=int, help="inputs per Python target")
    ap.add_argument("--jobs", type=int, default=1, help="parallel native fuzzing processes")
    ap.add_argument("--engine", choices=("auto", "atheris", "mutate"), default=None,
                    help="Python fuzzing engine (default: mutate for --short, else atheris "
                         "if installed)")
    ap.add_argument("--only", choices=("native", "python"), help="run only these targets")
    ap.add_argument("--target", action="append", choices=(*NATIVE_TARGETS, *PY_TARGETS),
                    help="run only this target (repeatable)")
    ap.add_argument("--workdir", type=Path, default=REPO / "build",
                    help="where corpora, logs and crashes go (default: build/)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the mutation fuzzer")
    args = ap.parse_args(argv)

    native_runs = args.native_runs or (1_000_000 if args.long else 20_000)
    py_runs = args.py_runs or (50_000 if args.long else 2_000)
    engine = args.engine or ("mutate" if not args.long else "auto")
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") else "mutate"
    if engine == "atheris" and not importlib.util.find_spec("atheris"):
        ap.error("atheris is not installed: pip install -e '.[fuzz]' (or --engine mutate)")

    workdir = args.workdir.resolve()
    native_dir, py_dir, logs = workdir / "fuzz", workdir / "fuzz-py", workdir / "fuzz-logs"
    for d in (native_dir, py_dir, logs):
        d.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    if args.only != "python":
        if shutil.which("clang") is None:
            print("fuzz: clang is not installed; skipping the native targets", file=sys.stderr)
        else:
            for target in [t for t in NATIVE_TARGETS if not args.target or t in args.target]:
                print(f"fuzz: native {target}, {native_runs} inputs...", file=sys.stderr)
                results.append(run_native(target, native_runs, native_dir, args.jobs, logs))
    if args.only != "native":
        for target in [t for t in PY_TARGETS if not args.target or t in args.target]:
            print(f"fuzz: python {target} ({engine}), {py_runs} inputs...", file=sys.stderr)
            if engine == "atheris":
                results.append(run_python_atheris(target, py_runs, py_dir, logs))
            else:
                results.append(run_python_mutate(target, py_runs, py_dir, args.seed))
    print(summary(results))
    return 1 if any(r.findings for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
