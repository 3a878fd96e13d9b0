"""The ``nbsandbox`` command.

Sub-commands are registered by the modules that do the work; this file only
wires them together and turns :class:`~nbsandbox.errors.NbsandboxError` into a
one-line message and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from nbsandbox import __version__
from nbsandbox.errors import NbsandboxError, UsageError
from nbsandbox.policy import ROOT_ENV

#: Who asks, in the one-line errors of ``nbsandbox run`` and ``doctor``.
_SOURCE = "the command line"

#: Modules that add sub-commands with a ``register(subparsers)`` function.
COMMAND_MODULES = ("nbsandbox.pack.commands", "nbsandbox.kernelspec",
                   "nbsandbox.notebook.commands", "nbsandbox.site.commands",
                   "nbsandbox.report.commands")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, says what to do
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _add_root_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", "-r",
                   help="store root: a name from SandboxPolicy.roots or a path (default: "
                        f"SandboxPolicy.default_root, else ${ROOT_ENV})")
    p.add_argument("--prefix",
                   help="the store's prefix, if the root does not say (e.g. /gnu/store)")


def add_gpu_options(p: argparse.ArgumentParser, *, sources: bool = False) -> None:
    """``--gpu``/``--no-gpu`` (and, with ``sources``, where the driver is) for a front end."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gpu", dest="gpu", action="store_const", const="on",
                   help="give the program the host's GPU driver and devices (an error where "
                        "there is none; default: when this host has a usable driver)")
    g.add_argument("--no-gpu", dest="gpu", action="store_const", const="off",
                   help="do not give the program the host's GPU driver")
    if sources:
        p.add_argument("--gpu-driver", action="append", default=[], metavar="PATH",
                       help="a file or directory of the GPU driver's libraries the linker "
                            "cache does not name (repeatable)")
        p.add_argument("--gpu-device", action="append", default=[], metavar="PATTERN",
                       help="device nodes of the GPU driver, as shell patterns, instead of "
                            "/dev/nvidia* (repeatable)")


def _policy(settings: dict | None = None) -> Any:
    """The effective policy of the command line: the administrator's, then
    ``nbsandbox_config.{json,py}``, then ``settings`` from the command line."""
    from nbsandbox.policy import SandboxPolicy, user_config

    return SandboxPolicy(config=user_config()).effective_policy(settings, _SOURCE)


def _open_root(args: argparse.Namespace, policy: Any, *, required: bool = True) -> Any:
    from nbsandbox.store import StoreRoot

    if not (args.root or policy.default_root or os.environ.get(ROOT_ENV)):
        if required:
            raise UsageError(f"no store root given: pass --root DIR or set ${ROOT_ENV} "
                             "(or SandboxPolicy.default_root)")
        return None
    return StoreRoot.open(policy.root_path(args.root, _SOURCE), prefix=args.prefix)


def _engine_help() -> str:
    from nbsandbox.engines import ENV_VAR, META, engine_names

    return (f"engine or meta-engine: {', '.join([*META, *engine_names()])}, or a chain "
            f"from SandboxPolicy.chains (default: ${ENV_VAR}, else SandboxPolicy.engine); "
            "the policy must allow it")


def _register_run(sub) -> None:
    p = sub.add_parser(
        "run", help="run a program from a store root",
        description="Run PROGRAM (a store path, or a name in the root's bin/) so that it sees "
                    "the store at its prefix, within the policy (as %%sandbox and packed "
                    "kernels do).",
    )
    _add_root_options(p)
    p.add_argument("--engine", "-e", help=_engine_help())
    p.add_argument("--bind", action="append", default=[], metavar="SRC[:DST]",
                   help="make host SRC visible at DST (read-write)")
    p.add_argument("--ro-bind", action="append", default=[], metavar="SRC[:DST]",
                   help="make host SRC visible at DST, read-only")
    p.add_argument("--hide", action="append", default=[], metavar="PATH",
                   help="make PATH appear empty")
    p.add_argument("--isolate-home", action="store_true",
                   help="give the program an empty private home (git, gpg read nothing of yours)")
    p.add_argument("--no-keep-cwd", dest="keep_cwd", action="store_false",
                   help="with --isolate-home, hide the working directory too when it is in home")
    _add_restriction_options(p)
    add_gpu_options(p, sources=True)
    p.add_argument("--explain", action="store_true",
                   help="say on stderr which engine runs, which policy layer asked for it, "
                        "and why others were skipped")
    p.add_argument("--dry-run", action="store_true",
                   help="print a shell command that runs what would run (with the "
                        "variables the engine sets or removes), do not run it")
    p.add_argument("--report", metavar="FILE.json",
                   help="record the host paths the program uses (outside the store) and "
                        "write them to FILE.json when it ends (see 'nbsandbox report')")
    p.add_argument("--report-ignore", action="append", default=[], metavar="PATH",
                   help="with --report: never record beneath PATH (absolute; repeatable)")
    p.add_argument("program", metavar="PROGRAM")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    p.set_defaults(func=run_run)


def _add_restriction_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-read", action="append", default=[], metavar="PATH",
                   help="Landlock: the program may read only beneath these paths (and the "
                        "store, and what every process needs); repeatable")
    p.add_argument("--allow-write", action="append", default=[], metavar="PATH",
                   help="Landlock: the program may write only beneath these paths; repeatable")
    p.add_argument("--no-network", action="store_true",
                   help="Landlock: no TCP bind or connect (Linux 6.7+)")


def restriction_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The policy settings (a request layer) of --allow-read, --allow-write, --no-network."""
    settings: dict[str, Any] = {}
    if args.allow_read:
        settings["allowed_read"] = list(args.allow_read)
    if args.allow_write:
        settings["allowed_write"] = list(args.allow_write)
    if args.no_network:
        settings["network"] = False
    return settings


def run_run(args: argparse.Namespace) -> int:
    from nbsandbox.launch import RequestOptions, exec_in_place, request, shell_line

    program_args = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not args.isolate_home and not args.keep_cwd:
        raise UsageError("--no-keep-cwd only makes sense with --isolate-home")
    settings: dict[str, Any] = {}
    for name, value in (("binds", args.bind), ("ro_binds", args.ro_bind),
                        ("hide", args.hide), ("isolate_home", args.isolate_home),
                        ("gpu", args.gpu), ("gpu_driver_paths", args.gpu_driver),
                        ("gpu_devices", args.gpu_device)):
        if value:
            settings[name] = value
    settings.update(restriction_settings(args))
    if args.report_ignore:
        if not args.report:
            raise UsageError("--report-ignore only makes sense with --report")
        settings["report_ignore"] = list(args.report_ignore)
    if args.report is not None and not args.report:
        raise UsageError("--report needs a file name (e.g. --report report.json)")
    if args.report and args.dry_run:
        raise UsageError("--report and --dry-run do not go together (nothing would run)")
    policy = _policy(settings)
    if args.engine:  # the flags first, before the root is opened
        policy.check_engine(args.engine, _SOURCE)
    root = _open_root(args, policy)
    launch = request(policy, root, args.program, program_args, engine=args.engine,
                     source=_SOURCE, options=RequestOptions(keep_cwd=args.keep_cwd,
                                                            report=args.report))
    if args.explain:
        print(launch.resolution.explain(), file=sys.stderr)
    if args.dry_run:
        print(shell_line(launch.command))
        return 0
    if launch.recording is None:
        exec_in_place(launch.command)
        return 127  # not reached
    return _run_recorded(launch)


def _run_recorded(launch: Any) -> int:
    """Run a recorded launch as a child, write its report, end as the program ended."""
    from nbsandbox import foreground

    recording = launch.recording
    try:
        returncode = foreground.run(launch.command)
    except OSError as exc:
        recording.abandon()
        raise UsageError(f"cannot start {launch.command.path}: {exc.strerror}") from None
    try:
        recording.finish(returncode)
    except OSError as exc:
        print(f"nbsandbox: error: cannot write the report {recording.target}: {exc.strerror}",
              file=sys.stderr)
        return returncode if returncode > 0 else 1
    return foreground.die_like(returncode)


def _register_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="show which engines work here and what they would pick")
    _add_root_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--gpu-driver", action="append", default=[], metavar="PATH",
                   help="also look for the GPU driver's libraries here (repeatable)")
    p.add_argument("--gpu-device", action="append", default=[], metavar="PATTERN",
                   help="the GPU driver's device nodes, as shell patterns (repeatable)")
    p.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from nbsandbox import doctor

    settings: dict[str, Any] = {}
    if args.gpu_driver:
        settings["gpu_driver_paths"] = args.gpu_driver
    if args.gpu_device:
        settings["gpu_devices"] = args.gpu_device
    policy = _policy(settings)
    root = _open_root(args, policy, required=False)
    data = doctor.report(root, policy)
    print(json.dumps(data, indent=2) if args.json else doctor.format_text(data))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nbsandbox", description="Run programs and Jupyter kernels from "
                     "relocatable software stores, without root.")
    parser.add_argument("--version", action="version", version=f"nbsandbox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _register_run(sub)
    _register_doctor(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except NbsandboxError as exc:
        print(f"nbsandbox: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
