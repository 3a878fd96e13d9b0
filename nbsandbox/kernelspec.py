"""Packed kernels: kernelspecs for a store root's Python, and ``nbsandbox kernel ...``.

``nbsandbox kernel install ROOT`` writes a kernelspec whose kernel runs from the
root.  It names the provisioner (:mod:`nbsandbox.provisioner`) for front ends that
use provisioners (JupyterLab, Notebook 7, JupyterHub, nbclient), and its ``argv``
works on its own for those that do not (VS Code...)::

    [HOST_PYTHON, "-m", "nbsandbox", "kernel", "launch", "--root", ROOT, ...,
     "--", STORE_PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"]

``nbsandbox kernel launch`` makes the same request as the provisioner
(:func:`nbsandbox.kernels.kernel_request`) and then *execs* the engine command,
so the process a front end started is the kernel
(or a wrapper that forwards its signals and exit status).
``nbsandbox kernel list`` shows installed packed kernels and whether their roots
are still usable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbsandbox.errors import NbsandboxError, StoreError, UsageError
from nbsandbox.kernels import connection_file_dirs, kernel_request
from nbsandbox.policy import ROOT_ENV, SandboxPolicy, user_config
from nbsandbox.store import StoreRoot

#: Key of nbsandbox's own metadata in kernel.json and notebooks.
METADATA_KEY = "nbsandbox"
#: The name a kernelspec gives to select :class:`nbsandbox.provisioner.SandboxProvisioner`.
PROVISIONER_NAME = "nbsandbox-provisioner"


class KernelLauncher(SandboxPolicy):
    """Runs a packed kernel in place (``nbsandbox kernel launch``), for front ends that
    start kernels from their kernelspec's ``argv``.  Configured by
    ``nbsandbox_config.py``/``.json`` in Jupyter's configuration directories."""


# -- facts about a root's Python ---------------------------------------------------------


def find_package(root: StoreRoot, package: str) -> Path | None:
    """Host path of ``package`` in a site-packages directory of the root, if any."""
    for pattern in (f"*/lib/python3*/site-packages/{package}/__init__.py",
                    f"*/lib/python3*/dist-packages/{package}/__init__.py",
                    f"*/usr/lib/python3*/dist-packages/{package}/__init__.py"):
        for found in sorted(root.store_dir.glob(pattern)):
            return found.parent
    return None


def python_version(package_dir: Path) -> str | None:
    """``3.11`` from ``.../lib/python3.11/site-packages/PKG``."""
    match = re.search(r"/lib/python(\d+\.\d+)/", package_dir.as_posix())
    return match.group(1) if match else None


def require_ipykernel(root: StoreRoot) -> Path:
    found = find_package(root, "ipykernel")
    if found is None:
        raise StoreError(
            f"store root {root.path} has no ipykernel in its Python's site-packages, so it "
            "cannot run a kernel; pack a Python environment that has it (pip install "
            "ipykernel, then nbsandbox pack --python ENV)")
    return found


def default_name(root: StoreRoot) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", root.path.name.lower()).strip("-._") or "root"
    return f"nbsandbox-{base}"


def kernel_json(
    root: StoreRoot,
    *,
    display_name: str | None = None,
    engine: str | None = None,
    isolate_home: bool = False,
    gpu: str | None = None,
    interrupt_mode: str = "signal",
    host_python: str | None = None,
    pythonpath: Sequence[str] = (),
) -> dict[str, Any]:
    """The kernel.json of a packed kernel for ``root`` (see the module's docstring).

    ``pythonpath``: host directories put on the kernel's ``PYTHONPATH`` (e.g. a source
    checkout of nbsandbox, so that ``%load_ext nbsandbox`` works in a kernel whose
    pack does not have it).
    """
    python = root.python()
    ipykernel_dir = require_ipykernel(root)
    version = python_version(ipykernel_dir) or "3"
    launch_opts = ["--root", str(root.path)]
    config: dict[str, Any] = {"root": str(root.path)}
    if engine:
        launch_opts += ["--engine", engine]
        config["engine"] = engine
    if isolate_home:
        launch_opts.append("--isolate-home")
        config["isolate_home"] = True
    if gpu:
        launch_opts.append("--gpu" if gpu == "on" else "--no-gpu")
        config["gpu"] = gpu
    spec: dict[str, Any] = {
        "argv": [host_python or sys.executable, "-m", "nbsandbox", "kernel", "launch",
                 *launch_opts, "--", python, "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": display_name or f"Python {version} (nbsandbox: {root.path.name})",
        "language": "python",
        "interrupt_mode": interrupt_mode,
        "metadata": {
            "debugger": True,
            "kernel_provisioner": {"provisioner_name": PROVISIONER_NAME, "config": config},
            METADATA_KEY: {"root": str(root.path), "prefix": root.prefix, "python": python},
        },
    }
    if pythonpath:
        spec["env"] = {"PYTHONPATH": ":".join(os.path.abspath(p) for p in pythonpath)}
    return spec


def install(
    root_path: str,
    *,
    name: str | None = None,
    display_name: str | None = None,
    engine: str | None = None,
    isolate_home: bool = False,
    gpu: str | None = None,
    user: bool = True,
    prefix: str | None = None,
    pythonpath: Sequence[str] = (),
) -> tuple[str, str]:
    """Install a packed kernel for the root at ``root_path``; returns (name, directory)."""
    from jupyter_client.kernelspec import KernelSpecManager

    request: dict[str, Any] = {}
    if isolate_home:
        request["isolate_home"] = True
    if gpu:
        request["gpu"] = gpu
    policy = KernelLauncher(config=user_config()).effective_policy(
        request or None, "nbsandbox kernel install")
    if engine:
        policy.check_engine(engine, "nbsandbox kernel install --engine")
    root = policy.open_root(root_path, "nbsandbox kernel install")
    root.validate()
    name = name or default_name(root)
    if not re.fullmatch(r"[a-zA-Z0-9._-]+", name):
        raise UsageError(f"kernel name {name!r} may only contain letters, digits, '.', '_', '-'")
    missing = [p for p in pythonpath if not os.path.isdir(p)]
    if missing:
        raise UsageError(f"--pythonpath {missing[0]} is not a directory")
    spec = kernel_json(root, display_name=display_name, engine=engine,
                       isolate_home=isolate_home, gpu=gpu, pythonpath=pythonpath)
    resources = require_ipykernel(root) / "resources"
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(spec, f, indent=1)
            f.write("\n")
        for logo in ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg"):
            if (resources / logo).is_file():
                shutil.copy(resources / logo, os.path.join(tmp, logo))
        try:
            dest = KernelSpecManager().install_kernel_spec(
                tmp, name, user=user and prefix is None, prefix=prefix)
        except OSError as exc:
            raise NbsandboxError(f"cannot install kernelspec {name}: {exc}; try --user") \
                from None
    return name, dest


def packed_kernels() -> list[dict[str, Any]]:
    """Installed kernelspecs that run from a store root, with the state of their root."""
    from jupyter_client.kernelspec import KernelSpecManager

    found = []
    for name, entry in sorted(KernelSpecManager().get_all_specs().items()):
        spec = entry.get("spec", {})
        metadata = spec.get("metadata", {})
        provisioner = metadata.get("kernel_provisioner", {})
        ours = metadata.get(METADATA_KEY)
        if not ours and provisioner.get("provisioner_name") != PROVISIONER_NAME:
            continue
        config = provisioner.get("config", {})
        root = (ours or {}).get("root") or config.get("root", "")
        status = "ok"
        try:
            if not root:
                raise UsageError("no root in kernel.json")
            store_root = SandboxPolicy().effective_policy().open_root(root)
            store_root.validate()
            python = (ours or {}).get("python") or store_root.python()
            store_root.find_program(python)
            require_ipykernel(store_root)
        except NbsandboxError as exc:
            status = f"broken: {exc}"
        found.append({"name": name, "display_name": spec.get("display_name", ""),
                      "root": root, "engine": config.get("engine") or "(policy)",
                      "resource_dir": entry.get("resource_dir", ""), "status": status})
    return found


# -- the command line ---------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``nbsandbox kernel install|list|launch``."""
    from nbsandbox.cli import add_gpu_options

    p = subparsers.add_parser("kernel", help="packed kernels: install, list, launch",
                              description="Jupyter kernels that run from a store root.")
    sub = p.add_subparsers(dest="kernel_command", metavar="ACTION")
    sub.required = True

    i = sub.add_parser("install", help="install a kernelspec for a root's Python",
                       description="Write a kernelspec for the Python of ROOT (which must "
                                   "have ipykernel).")
    i.add_argument("root", metavar="ROOT", help="store root (a path or a named root)")
    i.add_argument("--name", help="kernelspec name (default: nbsandbox-<root directory>)")
    i.add_argument("--display-name", help="name shown in front ends")
    i.add_argument("--engine", "-e", help="engine or meta-engine (default: the policy's)")
    i.add_argument("--isolate-home", action="store_true",
                   help="the kernel gets an empty private home")
    add_gpu_options(i)
    i.add_argument("--pythonpath", action="append", default=[], metavar="DIR",
                   help="put host DIR on the kernel's PYTHONPATH (e.g. a source checkout of "
                        "nbsandbox when the pack lacks it, for %%load_ext nbsandbox)")
    where = i.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", default=True,
                       help="install for the current user (the default)")
    where.add_argument("--sys-prefix", action="store_true",
                       help=f"install into this Python's prefix ({sys.prefix})")
    where.add_argument("--prefix", help="install into PREFIX/share/jupyter/kernels")
    i.set_defaults(func=run_kernel_install)

    ls = sub.add_parser("list", help="list installed packed kernels and check their roots")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_kernel_list)

    la = sub.add_parser(
        "launch", help="run a kernel from a root in place (used by kernelspecs' argv)",
        description="Run COMMAND from ROOT through the policy's engine, replacing this "
                    "process (for front ends that start kernels from argv).")
    la.add_argument("--root", "-r", default=os.environ.get(ROOT_ENV),
                    help=f"store root: a name or a path (default: ${ROOT_ENV})")
    la.add_argument("--engine", "-e", help="engine or meta-engine")
    la.add_argument("--isolate-home", action="store_true", help="empty private home")
    add_gpu_options(la)
    la.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set a variable for the kernel")
    la.add_argument("--bind", action="append", default=[], metavar="SRC[:DST]",
                    help="make host SRC visible at DST")
    la.add_argument("--ro-bind", action="append", default=[], metavar="SRC[:DST]",
                    help="the same, read-only")
    la.add_argument("--explain", action="store_true", help="say on stderr which engine runs")
    la.add_argument("command", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS]")
    la.set_defaults(func=run_kernel_launch)


def run_kernel_install(args: argparse.Namespace) -> int:
    prefix = sys.prefix if args.sys_prefix else args.prefix
    name, dest = install(args.root, name=args.name, display_name=args.display_name,
                         engine=args.engine, isolate_home=args.isolate_home, gpu=args.gpu,
                         user=prefix is None, prefix=prefix, pythonpath=args.pythonpath)
    print(f"Installed kernelspec {name} in {dest}")
    root = StoreRoot.open(args.root) if os.path.isdir(args.root) else None
    if root is not None and find_package(root, "nbsandbox") is None and not args.pythonpath:
        print("note: the pack has no nbsandbox, so %load_ext nbsandbox will not work in this "
              "kernel; pack an environment that has it, or pass --pythonpath", file=sys.stderr)
    return 0


def run_kernel_list(args: argparse.Namespace) -> int:
    kernels = packed_kernels()
    if args.json:
        print(json.dumps(kernels, indent=2))
        return 0
    if not kernels:
        print("no packed kernels installed (nbsandbox kernel install ROOT)")
        return 0
    width = max(len(k["name"]) for k in kernels)
    for k in kernels:
        print(f"{k['name']:<{width}}  {k['status']:<6}  engine {k['engine']:<11} root {k['root']}")
    return 0 if all(k["status"] == "ok" for k in kernels) else 1


def run_kernel_launch(args: argparse.Namespace) -> int:
    from nbsandbox.launch import exec_in_place
    from nbsandbox.plan import parse_env

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("no kernel command given: nbsandbox kernel launch [options] -- "
                         "PROGRAM [ARGS...]")
    env = parse_env(args.env)
    request: dict[str, Any] = {}
    if args.isolate_home:
        request["isolate_home"] = True
    if args.gpu:
        request["gpu"] = args.gpu
    if args.bind:
        request["binds"] = args.bind
    if args.ro_bind:
        request["ro_binds"] = args.ro_bind
    if env:
        request["env"] = env
    source = "the kernel's argv (nbsandbox kernel launch)"
    policy = KernelLauncher(config=user_config()).effective_policy(request, source)
    launch = kernel_request(policy, args.root, command, env=os.environ, engine=args.engine,
                            source=source, connection_dirs=connection_file_dirs(command))
    if args.explain:
        print(launch.resolution.explain(), file=sys.stderr)
    exec_in_place(launch.command)
    return 127  # not reached
