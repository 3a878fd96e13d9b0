"""A kernel for a store root, as nbclient needs it.

``nbsandbox execute --root`` and ``nbsandbox verify`` run notebooks in a kernel
from a pack that need not be installed as a kernelspec: :func:`kernel_manager`
writes the packed kernel's kernelspec (:func:`nbsandbox.kernelspec.kernel_json`,
so the kernel starts through the provisioner like any packed kernel) into a
private temporary directory and gives nbclient a manager that finds it there.

The ``%%sandbox`` magic runs in the kernel; when the pack has no nbsandbox of
its own, the kernel gets this one's package (and only it) on its
``PYTHONPATH``, so that ``%load_ext nbsandbox`` works.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbsandbox.store import StoreRoot

NAME = "nbsandbox-notebook"


@dataclass
class Started:
    """What the provisioner chose when the kernel started (filled in by :func:`watch`)."""

    engine: str | None = None
    why: str | None = None
    root: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def magics_path(root: StoreRoot, top: str) -> list[str]:
    """``PYTHONPATH`` entries that give the kernel this nbsandbox, when ``root`` lacks it."""
    from nbsandbox.kernelspec import find_package

    if find_package(root, "nbsandbox") is not None:
        return []
    import nbsandbox

    shim = os.path.join(top, "pythonpath")
    os.makedirs(shim, exist_ok=True)
    os.symlink(os.path.dirname(os.path.abspath(nbsandbox.__file__)),
               os.path.join(shim, "nbsandbox"))
    return [shim]


def kernel_manager(root: StoreRoot, top: str, *, engine: str | None = None,
                   env: Mapping[str, str] | None = None) -> Any:
    """A ``KernelManager`` for the packed kernel of ``root``; its spec lives under ``top``
    (a private directory the caller removes)."""
    import json

    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    from nbsandbox.kernelspec import kernel_json

    spec = kernel_json(root, engine=engine, pythonpath=magics_path(root, top))
    if env:
        spec.setdefault("env", {}).update(env)
    kernels = os.path.join(top, "kernels")
    os.makedirs(os.path.join(kernels, NAME))
    with open(os.path.join(kernels, NAME, "kernel.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    ksm = KernelSpecManager(kernel_dirs=[kernels], ensure_native_kernel=False)
    return KernelManager(kernel_name=NAME, kernel_spec_manager=ksm)


def watch(client: Any, started: Started) -> None:
    """Fill ``started`` from the provisioner as soon as nbclient has started the kernel."""

    def on_start(**_kwargs: Any) -> None:
        provisioner = getattr(client.km, "provisioner", None)
        started.engine = getattr(provisioner, "engine_used", None)
        started.why = getattr(provisioner, "explanation", None)
        started.root = getattr(provisioner, "root", None)

    client.on_notebook_start = on_start


def private_dir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix)
