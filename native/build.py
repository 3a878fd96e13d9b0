"""Build nbsandbox's native components.

Used by ``setup.py`` during ``pip install`` and, directly, by the tests and
fuzzers that need sanitizer builds::

    python native/build.py --out DIR [--sanitize address] [--cc CC]

Every target is listed in ``TARGETS``.  A target is an executable (``exe``)
or a shared library (``shared``) built from sources under ``native/``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

COMMON_CFLAGS = [
    "-std=gnu11",
    "-O2",
    "-g",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-D_GNU_SOURCE",
    "-fno-strict-aliasing",
]


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "exe" or "shared"
    sources: tuple[str, ...]
    cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    libs: tuple[str, ...] = field(default=())


TARGETS: list[Target] = [
    Target("nbs-launch", "exe", (
        "launch/main.c", "launch/util.c", "launch/userns.c", "launch/userns_view.c",
        "launch/supervise.c", "launch/report.c", "launch/janitor.c", "launch/seccomp.c",
        "launch/reap.c", "launch/landlock.c", "common/execpath.c",
        "launch/notify.c", "launch/notify_calls.c", "launch/notify_record.c", "launch/notify_run.c",
        # A pack's programs are hard links to this very binary (launch/wrap.h):
        # static, so that it runs on any host, from any pack.
        "launch/wrap.c", "launch/wrap_conf.c", "launch/wrap_fakechroot.c",
        "launch/kernel_install.c",
    ), ldflags=("-static",)),
    # The fakechroot engine: both libraries are loaded into store programs of
    # any glibc since 2.17 (see fakechroot/compat.h).  The audit module links
    # no libc at all; its trailing -fno-sanitize=all wins over --sanitize.
    Target(
        "nbs-audit",
        "shared",
        ("fakechroot/audit.c", "fakechroot/pathmap.c", "fakechroot/record.c"),
        cflags=("-U_FORTIFY_SOURCE", "-fno-stack-protector", "-fvisibility=hidden",
                "-ffreestanding", "-fno-builtin", "-fno-tree-loop-distribute-patterns"),
        ldflags=("-nostdlib", "-Wl,-z,defs", "-Wl,-z,noexecstack", "-fno-sanitize=all"),
    ),
    Target(
        "nbs-preload",
        "shared",
        ("fakechroot/preload.c", "fakechroot/preload_fs.c", "fakechroot/preload_exec.c",
         "fakechroot/preload_report.c", "fakechroot/preload_fds.c", "fakechroot/record.c",
         "fakechroot/nextsym.c", "fakechroot/pathmap.c", "common/execpath.c"),
        cflags=("-U_FORTIFY_SOURCE", "-fno-stack-protector", "-fvisibility=hidden",
                "-fno-plt", "-DPM_USE_LIBC"),
        # libc.so.6 is its only dependency: no libdl (see fakechroot/nextsym.h).
        ldflags=("-Wl,-z,noexecstack", "-Wl,--no-as-needed"),
    ),
]


def compiler() -> list[str]:
    cc = os.environ.get("CC") or "cc"
    return shlex.split(cc)


def build_target(target: Target, out: Path, *, sanitize: str | None = None,
                 verbose: bool = False) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".so" if target.kind == "shared" else ""
    dest = out / (target.name + suffix)
    tmp = out / (".tmp-" + target.name + suffix)
    cmd = [*compiler(), *COMMON_CFLAGS, *target.cflags]
    if target.kind == "shared":
        cmd += ["-fPIC", "-shared"]
    if sanitize:
        cmd += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-O1"]
    cmd += [str(HERE / s) for s in target.sources]
    # Sanitizer runtimes cannot be linked statically: a sanitizer build is dynamic.
    ldflags = [f for f in target.ldflags if not (sanitize and f == "-static")]
    cmd += ["-I", str(HERE / "include"), "-o", str(tmp), *ldflags, *target.libs]
    if verbose:
        print(" ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError:
        raise SystemExit(
            f"nbsandbox: cannot build native component {target.name}: C compiler "
            f"{cmd[0]!r} not found; install gcc (apt-get install gcc) or set CC"
        ) from None
    except subprocess.CalledProcessError as exc:
        tmp.unlink(missing_ok=True)
        raise SystemExit(
            f"nbsandbox: building native component {target.name} failed "
            f"(exit {exc.returncode}); see the compiler output above"
        ) from None
    os.replace(tmp, dest)
    return dest


def build_all(out: Path, *, sanitize: str | None = None, verbose: bool = False) -> list[Path]:
    return [build_target(t, out, sanitize=sanitize, verbose=verbose) for t in TARGETS]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--sanitize", help="e.g. address or address,undefined")
    ap.add_argument("--target", action="append", help="build only these targets")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    wanted = [t for t in TARGETS if not args.target or t.name in args.target]
    unknown = set(args.target or ()) - {t.name for t in TARGETS}
    if unknown:
        ap.error(f"unknown target(s): {', '.join(sorted(unknown))}; "
                 f"known: {', '.join(t.name for t in TARGETS)}")
    for t in wanted:
        print(build_target(t, args.out, sanitize=args.sanitize, verbose=args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
