"""``nbsandbox site install``: a site directory with the policy locked and packed kernels.

The administrator names the packs (unpacked, read-only, on the shared file system) and
the policy; users, their ``kernel.json`` files and notebooks may then only tighten it
(see the administrator's guide).  Nothing is half-written: the directory is built
beside its destination and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbsandbox import engines
from nbsandbox.errors import StoreError, UsageError
from nbsandbox.kernelspec import find_package, kernel_json
from nbsandbox.site.layout import (
    SiteSettings,
    data_dir,
    policy_file,
    settings_file,
)
from nbsandbox.store import StoreRoot

#: What a single-user server needs in its root, and the pip name that provides it.
SERVER_PACKAGES = {"jupyterhub": "jupyterhub", "jupyter_server": "jupyter_server",
                   "nbsandbox": "nbsandbox", "ipykernel": "ipykernel"}


def site_policy(
    roots: Mapping[str, str],
    *,
    server_root: str,
    allowed_engines: Sequence[str] | None,
    engine: str,
    isolate_home: bool,
    binds: Sequence[str] = (),
    ro_binds: Sequence[str] = (),
    locked: Sequence[str] = (),
) -> dict[str, Any]:
    """The administrator's ``SandboxPolicy`` settings of a site."""
    policy: dict[str, Any] = {
        "engine": engine,
        "roots": dict(roots),
        "default_root": server_root,
        "allow_other_roots": False,
        "isolate_home": isolate_home,
    }
    if allowed_engines is not None:
        policy["allowed_engines"] = list(allowed_engines)
    if binds:
        policy["binds"] = list(binds)
    if ro_binds:
        policy["ro_binds"] = list(ro_binds)
    if locked:
        policy["locked"] = list(locked)
    return {"SandboxPolicy": policy}


def _check_engines(allowed: Sequence[str] | None, engine: str) -> None:
    names = engines.engine_names()
    for name in allowed or ():
        if name not in names:
            raise UsageError(f"--engines: unknown engine {name!r}; engines are {', '.join(names)}")
    chain = engines.chain_of(engine)
    members = (engine,) if chain is None else chain
    if allowed is not None and not any(m in allowed for m in members):
        raise UsageError(f"--engine {engine} uses none of the allowed engines "
                         f"({', '.join(allowed)}); allow one of {', '.join(members)}")


def _open(name: str, path: str) -> StoreRoot:
    if not os.path.isabs(path):
        raise UsageError(f"root {name}={path}: give an absolute path (as the nodes see it)")
    root = StoreRoot.open(path)
    root.validate()
    return root


def install_site(
    site: Path,
    roots: Mapping[str, str],
    *,
    server_root: str | None = None,
    allowed_engines: Sequence[str] | None = None,
    engine: str = "performance",
    isolate_home: bool = False,
    binds: Sequence[str] = (),
    ro_binds: Sequence[str] = (),
    locked: Sequence[str] = (),
    writable_pack: str = "refuse",
) -> list[str]:
    """Write the site directory ``site``; returns the names of the kernels installed."""
    if not roots:
        raise UsageError("give at least one --root NAME=PATH")
    server_root = server_root or next(iter(roots))
    if server_root not in roots:
        raise UsageError(f"--server-root {server_root!r} is not one of the roots: "
                         f"{', '.join(roots)}")
    _check_engines(allowed_engines, engine)
    opened = {name: _open(name, path) for name, path in roots.items()}
    server = opened[server_root]
    missing = [pip for pkg, pip in SERVER_PACKAGES.items() if find_package(server, pkg) is None]
    if missing:
        raise StoreError(f"root {server_root} ({server.path}) cannot run a single-user server: "
                         f"its Python lacks {', '.join(missing)}; pip install them into the "
                         "environment, then pack it again")
    if site.exists() and any(site.iterdir()) and not settings_file(site).is_file():
        raise UsageError(f"{site} exists and is not a site directory; give a new directory")
    policy = site_policy(roots, server_root=server_root, allowed_engines=allowed_engines,
                         engine=engine, isolate_home=isolate_home, binds=binds,
                         ro_binds=ro_binds, locked=locked)
    # Inside a server the store is at its prefix: kernels' own argv (for front ends
    # without provisioners) use the server root's Python.
    python = server.python()
    site.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{site.name}.", dir=site.parent))
    try:
        policy_file(tmp).parent.mkdir(parents=True)
        policy_file(tmp).write_text(json.dumps(policy, indent=1) + "\n")
        SiteSettings(server_root=server_root, writable_pack=writable_pack).write(tmp)
        kernels = data_dir(tmp) / "kernels"
        names = []
        for name, root in opened.items():
            if find_package(root, "ipykernel") is None:
                continue
            spec = kernel_json(root, display_name=f"Python ({name}, nbsandbox)",
                               isolate_home=isolate_home, host_python=python)
            spec["metadata"]["kernel_provisioner"]["config"]["root"] = name
            (kernels / name).mkdir(parents=True)
            (kernels / name / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
            names.append(name)
        for path in (tmp, *tmp.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        old = None
        if site.exists():
            old = site.with_name(f".{site.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            site.rename(old)
        tmp.rename(site)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names
