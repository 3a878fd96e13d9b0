"""The ``execute``, ``record``, ``bundle`` and ``verify`` sub-commands of ``nbsandbox``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nbsandbox.errors import UsageError


def register(subparsers) -> None:
    """Add ``execute``, ``record``, ``bundle`` and ``verify`` to the ``nbsandbox`` command."""
    p = subparsers.add_parser(
        "execute", help="run a notebook in a packed kernel and record the packs it ran from",
        description="Execute NOTEBOOK with nbclient in a packed kernel and write it with its "
                    "record (metadata.nbsandbox): the digests of the packs of the kernel and "
                    "of every %%sandbox cell, the engines chosen and why, and host facts.")
    p.add_argument("notebook", metavar="NOTEBOOK")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--kernel", "-k", metavar="NAME",
                       help="an installed nbsandbox kernelspec (default: the notebook's)")
    which.add_argument("--root", "-r", metavar="ROOT",
                       help="run the kernel of this store root (its Python needs ipykernel)")
    p.add_argument("--engine", "-e", help="with --root: engine or meta-engine for the kernel")
    p.add_argument("-o", "--output", metavar="OUT", help="write here (default: in place)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"),
                   help="papermill-style parameter, injected after the cell tagged "
                        "'parameters' (VALUE is read as a Python literal, else as text)")
    p.add_argument("--timeout", type=int, default=600, metavar="SECONDS",
                   help="longest a cell may run (default: 600)")
    p.add_argument("--allow-errors", action="store_true",
                   help="keep going after a cell raises and store the error")
    p.set_defaults(func=run_execute)

    p = subparsers.add_parser(
        "record", help="record the packs of a notebook run interactively with a packed kernel",
        description="Add metadata.nbsandbox to NOTEBOOK, executed interactively (JupyterLab, "
                    "VS Code) with the nbsandbox kernel named in its metadata.kernelspec.")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("-o", "--output", metavar="OUT", help="write here (default: in place)")
    p.set_defaults(func=run_record)

    p = subparsers.add_parser(
        "bundle", help="write a recorded notebook and its packs into one deterministic file",
        description="Write NOTEBOOK and every pack its record names (each once, by digest) "
                    "into one tar file; the same notebook and packs give the same bytes.")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("-o", "--output", required=True, metavar="BUNDLE",
                   help="the bundle to write (e.g. NB.bundle.tar)")
    p.add_argument("--packs", action="append", default=[], metavar="DIR",
                   help="also look for packs here (a root, or a directory of roots)")
    p.set_defaults(func=run_bundle)

    p = subparsers.add_parser(
        "verify", help="re-run a recorded notebook (or bundle) from its packs and compare",
        description="Find the packs of NOTEBOOK (or of a bundle) by digest, check them, re-run "
                    "the notebook under the best engine here and compare every cell's outputs "
                    "with the stored ones.  Exit 0: identical; 1: a cell differs; 2: it could "
                    "not be run (the reason on one line).")
    p.add_argument("notebook", metavar="NOTEBOOK_OR_BUNDLE")
    p.add_argument("--engine", "-e", help="engine or meta-engine (default: the policy's)")
    p.add_argument("--packs", action="append", default=[], metavar="DIR",
                   help="also look for packs here (a root, or a directory of roots)")
    p.add_argument("--report", metavar="FILE.json", help="also write the report as JSON")
    p.add_argument("--timeout", type=int, default=600, metavar="SECONDS",
                   help="longest a cell may run (default: 600)")
    p.set_defaults(func=run_verify)


def _path(raw: str) -> Path:
    return Path(os.path.expanduser(raw))


def run_execute(args: argparse.Namespace) -> int:
    from nbsandbox.notebook import params
    from nbsandbox.notebook.execute import execute

    if args.engine and not args.root:
        raise UsageError("--engine goes with --root; an installed kernel has its own engine")
    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    values = params.parse(args.parameter)
    out, record = execute(_path(args.notebook), kernel=args.kernel, root=args.root,
                          engine=args.engine,
                          output=_path(args.output) if args.output else None,
                          parameters=values, timeout=args.timeout,
                          allow_errors=args.allow_errors)
    _summary(out, record)
    return 0


def run_record(args: argparse.Namespace) -> int:
    from nbsandbox.notebook.execute import record

    out, data = record(_path(args.notebook), _path(args.output) if args.output else None)
    _summary(out, data)
    return 0


def _summary(out: Path, record: dict) -> None:
    kernel = record["kernel"]
    print(f"recorded {out}")
    print(f"  kernel: {kernel['digest']} (engine {kernel.get('engine') or '?'})")
    for cell in record["sandbox_cells"]:
        print(f"  cell {cell['cell']}: {cell['digest']} (engine {cell.get('engine') or '?'})")


def run_bundle(args: argparse.Namespace) -> int:
    from nbsandbox.notebook import bundle
    from nbsandbox.notebook import record as records
    from nbsandbox.notebook.execute import load

    path = _path(args.notebook)
    output = _path(args.output)
    if output.exists() and output.is_dir():
        raise UsageError(f"{output} is a directory; give the bundle's file name")
    if not output.absolute().parent.is_dir():
        raise UsageError(f"the directory of {output} does not exist")
    record = records.read(load(path), os.fspath(path))
    digests = bundle.write(path, output, record, args.packs)
    size = output.stat().st_size
    print(f"bundled {output}: {path.name} and {len(digests)} pack"
          f"{'' if len(digests) == 1 else 's'} ({size / 1e6:.1f} MB)")
    for digest in digests:
        print(f"  {digest} ({', '.join(record.packs[digest].get('used_by', []))})")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from nbsandbox.notebook.verify import verify

    report = verify(_path(args.notebook), engine=args.engine, packs=args.packs,
                    timeout=args.timeout)
    if args.report:
        try:
            Path(args.report).write_text(report.to_json(), encoding="utf-8")
        except OSError as exc:
            print(f"nbsandbox: error: cannot write {args.report}: {exc.strerror}",
                  file=sys.stderr)
            return 2
    if report.exit_code == 2:
        print(f"nbsandbox: error: {report.reason}", file=sys.stderr)
        return 2
    print(report.text())
    return report.exit_code
