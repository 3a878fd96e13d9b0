"""Build and run nbsandbox's libFuzzer targets.

    python native/fuzz/run.py --runs 20000            # a short CI run (each target)
    python native/fuzz/run.py --runs 1000000 --jobs 4 # a longer campaign
    python native/fuzz/run.py --seconds 3600          # by time

The target is built with ``clang -fsanitize=fuzzer,address,undefined`` into
``--workdir`` (default ``build/fuzz``), seeded with generated inputs the
first time, and run on the corpus kept there; crashes are written to
``<workdir>/crashes``.  The exit status is libFuzzer's (0: nothing found).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NATIVE = HERE.parent
# name: (sources, extra flags).  pathmap.c is built as the preload library
# uses it (libc's string functions, SSE2 scan) and as the audit module does.
TARGETS = {
    "pathmap": ([HERE / "fuzz_pathmap.c", NATIVE / "fakechroot" / "pathmap.c"],
                ["-DPM_USE_LIBC"]),
    "pathmap-freestanding": ([HERE / "fuzz_pathmap.c", NATIVE / "fakechroot" / "pathmap.c"],
                             []),
    # the access recorders' core, as both libraries use it (no libc inside)
    "record": ([HERE / "fuzz_record.c", NATIVE / "fakechroot" / "record.c",
                NATIVE / "fakechroot" / "pathmap.c"], []),
}

STORE = "/gnu/store"
CONFIG = (
    "nbs-fc 1\n"
    f"map rsa {STORE} /home/u/packs/py{STORE}\n"
    "map r /home/u /tmp/nbsandbox-1000-empty/dir\n"
    "map - /home/u/work /home/u/work\n"
    "map - /data%20dir /srv/d%25x\n"
    "audit /opt/nbs/nbs-audit.so\n"
    "preload /opt/nbs/nbs-preload.so\n"
    "shell sh\nshell env\n"
    "env GCONV_PATH=/home/u/packs/py/gnu/store/g-glibc/lib/gconv\n"
    "ldso 3 /home/u/packs/py/gnu/store/g-glibc/lib/ld-linux-x86-64.so.2\n"
)
ROOT = "/home/u/packs/py"
FS = (
    f"{ROOT}{STORE}/p-profile/bin/python3\t{STORE}/p-python/bin/python3.11\n"
    f"{ROOT}{STORE}/p-python/bin/python3.11\n"
    f"{ROOT}{STORE}/p-profile/lib\t../p-python/lib\n"
    f"{ROOT}{STORE}/p-loop/a\t{STORE}/p-loop/b\n"
    f"{ROOT}{STORE}/p-loop/b\ta\n"
    f"{ROOT}{STORE}/p-out/etc\t/etc\n"
    "/proc/self\t4242\n"
    f"/proc/4242/exe\t{ROOT}{STORE}/g-glibc/lib/ld-linux-x86-64.so.2\n"
)
SEEDS = {
    "profile-python": (CONFIG, f"{STORE}/p-profile/bin/python3", FS, "#!/bin/sh -e\n"),
    "dotdot": (CONFIG, f"{STORE}/p-python/../../../etc/passwd", FS, "#!/usr/bin/env python3"),
    "loop": (CONFIG, f"{STORE}/p-loop/a/x", FS, "\x7fELF\x02\x01"),
    "home": (CONFIG, "/home/u/work/../x/./y//z/", FS, "--argv0 --preload"),
    "ancestor": (CONFIG, "/gnu", FS, "#!\t/gnu/store/x/bin/sh\targ  \t\n"),
    "proc": (CONFIG, "/proc/self/exe", FS, ""),
    "relative": (CONFIG, "../gnu/store",
                 FS + "PATH=/bin LD_PRELOAD=/opt/nbs/nbs-preload.so:/x\n", ""),
    "bad-config": ("nbs-fc 1\nmap r / /x\n", f"{STORE}/x", "", ""),
}
#: fuzz_record.c: skip list, base directory, path
RECORD_SEEDS = {
    "store": (f"{STORE}:{ROOT}{STORE}:/opt/nbs", "/home/u", f"{STORE}/x/../../etc/passwd"),
    "relative": (f"{STORE}:/", "/home/u/work", "../.././a//b/./c\t\n\\"),
    "root": ("/:relative::/a//b/", "/", "/a/b/.."),
}


def build(target: str, workdir: Path, cc: str) -> Path:
    exe = workdir / f"fuzz_{target}"
    sources, flags = TARGETS[target]
    if exe.exists() and all(exe.stat().st_mtime > s.stat().st_mtime for s in sources):
        return exe
    cmd = [*shlex.split(cc), "-g", "-O1", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
           "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
           "-fno-omit-frame-pointer", *flags, "-I", str(NATIVE / "fakechroot"),
           *map(str, sources), "-o", str(exe)]
    print("+", " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return exe


def seed(corpus: Path, target: str) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for name, parts in (RECORD_SEEDS if target == "record" else SEEDS).items():
        (corpus / name).write_bytes(b"\0".join(p.encode("latin-1") for p in parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=sorted(TARGETS),
                    help="one target (default: each in turn)")
    ap.add_argument("--runs", type=int, default=20000, help="inputs to try (per job)")
    ap.add_argument("--seconds", type=int, help="stop after this long instead")
    ap.add_argument("--jobs", type=int, default=1, help="parallel fuzzing processes")
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--workdir", type=Path, default=NATIVE.parent / "build" / "fuzz")
    ap.add_argument("--cc", default=os.environ.get("FUZZ_CC", "clang"))
    args = ap.parse_args(argv)

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    status = 0
    for target in [args.target] if args.target else sorted(TARGETS):
        status = status or run_target(target, workdir, args)
    return status


def run_target(target: str, workdir: Path, args: argparse.Namespace) -> int:
    exe = build(target, workdir, args.cc)
    corpus = workdir / f"corpus-{target}"
    seed(corpus, target)
    crashes = workdir / "crashes"
    crashes.mkdir(exist_ok=True)
    cmd = [str(exe), f"-max_len={args.max_len}", f"-artifact_prefix={crashes}/",
           "-print_final_stats=1"]
    if args.seconds:
        cmd.append(f"-max_total_time={args.seconds}")
    else:
        cmd.append(f"-runs={args.runs}")
    if args.jobs > 1:
        cmd += [f"-jobs={args.jobs}", f"-workers={args.jobs}"]
    cmd.append(str(corpus))
    print("+", " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    return subprocess.run(cmd, cwd=workdir, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
