"""The ``pack``, ``unpack`` and ``check`` sub-commands of ``nbsandbox``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from nbsandbox.errors import UsageError


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def register(subparsers) -> None:
    """Add ``pack``, ``unpack`` and ``check`` to the ``nbsandbox`` command."""
    from nbsandbox.pack.build import DEFAULT_PREFIX

    p = subparsers.add_parser(
        "pack", help="pack a Python environment (and programs) into a relocatable store",
        description="Pack a Python interpreter or venv, its shared libraries down to glibc, and "
                    "extra host programs into a store laid out like 'guix pack -RR -S /bin=bin': "
                    "a directory, or a FILE.tar.gz.",
    )
    p.add_argument("--python", metavar="INTERPRETER_OR_VENV",
                   help="interpreter or venv directory to pack (default: this nbsandbox's own)")
    p.add_argument("--no-python", dest="with_python", action="store_false",
                   help="pack only the --program programs")
    p.add_argument("--program", action="append", default=[], metavar="PATH",
                   help="also pack this host program (ELF or #! script); repeatable")
    p.add_argument("--prefix", default=DEFAULT_PREFIX,
                   help=f"store prefix the pack is built for (default: {DEFAULT_PREFIX})")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="a new directory, or a file ending in .tar.gz")
    p.add_argument("--no-wrappers", dest="wrappers", action="store_false",
                   help="leave bin/ a link to the profile, as guix pack does, instead of "
                        "programs that run without nbsandbox")
    p.set_defaults(func=run_pack)

    p = subparsers.add_parser(
        "unpack", help="safely extract a pack tarball (ours or guix pack's) into a new directory",
    )
    p.add_argument("pack", metavar="PACK", help="a .tar.gz, .tar.xz or .tar pack")
    p.add_argument("dest", metavar="DEST", help="a new or empty directory")
    p.set_defaults(func=run_unpack)

    p = subparsers.add_parser(
        "check", help="check that a store root is complete and refers to nothing outside it",
    )
    p.add_argument("root", metavar="ROOT", help="an unpacked pack")
    p.add_argument("--prefix", help="the store's prefix, if the root does not say")
    p.set_defaults(func=run_check)


def run_pack(args: argparse.Namespace) -> int:
    from nbsandbox.pack.build import PackOptions, build_pack

    options = PackOptions(
        python=args.python,
        programs=list(args.program),
        prefix=args.prefix,
        output=Path(args.output),
        progress=_progress,
        with_python=args.with_python,
        wrappers=args.wrappers,
    )
    if not args.with_python and args.python:
        raise UsageError("--python and --no-python contradict each other")
    result = build_pack(options)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    names = ", ".join(sorted(name.split("-", 1)[1] for name in result.items))
    print(f"packed {result.path}")
    print(f"  items: {len(result.items)} ({names})")
    if result.path.is_dir():
        print(f"  size: {_size(result.size_bytes)}")
    else:
        print(f"  size: {_size(result.size_bytes)} ({_size(result.unpacked_bytes)} unpacked)")
    print(f"  time: {result.seconds:.1f} s")
    print(f"  digest: {result.digest}")
    quoted = shlex.quote(os.fspath(result.path))
    if result.path.is_dir():
        print(f"next: nbsandbox check {quoted} && nbsandbox run --root {quoted} python3")
    else:
        print(f"next: nbsandbox unpack {quoted} DEST && nbsandbox check DEST")
    return 0


def run_unpack(args: argparse.Namespace) -> int:
    from nbsandbox.pack.unpack import unpack

    root = unpack(args.pack, args.dest, progress=_progress)
    print(f"unpacked {root.path}: {len(root.items())} items, prefix {root.prefix}")
    quoted = shlex.quote(os.fspath(root.path))
    print(f"next: nbsandbox check {quoted}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from nbsandbox import identity
    from nbsandbox.pack.check import check_root
    from nbsandbox.pack.wrappers import check_wrappers
    from nbsandbox.store import StoreRoot

    root = StoreRoot.open(args.root, prefix=args.prefix)
    root.validate()
    manifest, fingerprint = identity.compute(root)
    recorded = root.metadata.digest if root.metadata else None
    if recorded is not None and manifest.digest != recorded:
        print(identity.mismatch_message(root, recorded, manifest), file=sys.stderr)
        print(f"digest: {manifest.digest} (recorded: {recorded})")
        return 1
    identity.remember(root, manifest.digest, fingerprint)
    problems = check_root(root) + check_wrappers(root)
    if problems:
        for line in problems:
            print(line)
        n = len(problems)
        print(f"incomplete: {n} problem{'' if n == 1 else 's'} in {root.path}", file=sys.stderr)
        print(f"digest: {manifest.digest}", file=sys.stderr)
        return 1
    print(f"digest: {manifest.digest}")
    print(f"complete: {len(root.items())} items, no reference outside {root.prefix}")
    return 0
