"""Running a notebook in a packed kernel with nbclient, and writing its record.

:func:`run` executes a notebook in the packed kernel of a root (or of an
installed kernelspec) and says which engine the kernel got.  :func:`execute`
(``nbsandbox execute``) adds parameters, runs, checks the packs used against
their digests and writes the notebook with its record.  :func:`record`
(``nbsandbox record``) writes the record of a notebook run interactively.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbsandbox import identity
from nbsandbox.errors import NbsandboxError, StoreError, UsageError
from nbsandbox.notebook import hostfacts
from nbsandbox.notebook import record as records
from nbsandbox.notebook.kernel import Started, kernel_manager, watch
from nbsandbox.store import StoreRoot


class ExecutionFailed(NbsandboxError):
    """The notebook could not be executed (a cell raised, the kernel died or timed out)."""


def load(path: Path) -> Any:
    """The notebook at ``path`` (nbformat 4); a one-line :class:`UsageError` if it is not one."""
    import nbformat

    try:
        return nbformat.read(os.fspath(path), as_version=4)
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # nbformat raises JSON, validation and version errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path} is not a Jupyter notebook ({first})") from None


def loads(data: bytes, where: str) -> Any:
    import nbformat

    try:
        return nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{where} is not a Jupyter notebook ({first})") from None


def save(nb: Any, path: Path) -> None:
    """Write ``nb`` to ``path`` atomically (never a half-written notebook)."""
    import nbformat

    path = path.absolute()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def clear_outputs(nb: Any) -> None:
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell.outputs = []
            cell.execution_count = None


@dataclass
class KernelChoice:
    """Which kernel runs the notebook: an installed kernelspec, or a root's own."""

    name: str | None = None
    root: StoreRoot | None = None
    engine: str | None = None


def run(nb: Any, choice: KernelChoice, *, cwd: str, timeout: int | None,
        allow_errors: bool, env: dict[str, str] | None = None) -> Started:
    """Execute ``nb`` in place with nbclient; what the provisioner chose."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    started = Started()
    top = tempfile.mkdtemp(prefix="nbsandbox-kernel-")
    km = None
    try:
        # A kernel from a pack may start slowly (PRoot, a loaded machine): give it as long as
        # a cell.
        kwargs: dict[str, Any] = {"timeout": timeout, "allow_errors": allow_errors,
                                  "startup_timeout": max(60, timeout or 0),
                                  "resources": {"metadata": {"path": cwd}}}
        if choice.root is not None:
            km = kwargs["km"] = kernel_manager(choice.root, top, engine=choice.engine, env=env)
        else:
            kwargs["kernel_name"] = choice.name
        client = NotebookClient(nb, **kwargs)
        watch(client, started)
        try:
            client.execute()
        except CellExecutionError as exc:
            raise ExecutionFailed(_cell_failure(nb, exc)) from None
        except CellTimeoutError as exc:
            raise ExecutionFailed(f"a cell ran longer than {timeout} s ({_first(exc)}); "
                                  "raise --timeout") from None
        except DeadKernelError as exc:
            raise ExecutionFailed(f"the kernel died ({_first(exc)})") from None
        except (RuntimeError, TimeoutError) as exc:
            raise ExecutionFailed(f"the kernel did not start or answer: {_first(exc)}") from None
    finally:
        # nbclient shuts down only the kernels whose manager it made itself.
        if km is not None and km.has_kernel:
            km.shutdown_kernel(now=False)
        shutil.rmtree(top, ignore_errors=True)
    return started


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cell_failure(nb: Any, exc: Any) -> str:
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return (f"cell {index} raised {out.get('ename')}: {out.get('evalue')}; the "
                        "notebook was not written (--allow-errors keeps errors as outputs)")
    return f"a cell failed: {_first(exc)}"


def kernel_entry(root: StoreRoot, name: str | None, engine: str | None,
                 why: str | None) -> dict[str, Any]:
    """The record's ``kernel``: the root's digest (checked against its pack.json when it has
    one), where it was, and the engine."""
    recorded = root.metadata.digest if root.metadata is not None else None
    if recorded is not None:
        identity.check(root, recorded, what=f"the kernel's pack at {root.path}")
        digest = recorded
    else:
        digest = identity.current_digest(root)
    return {"name": name, "digest": digest, "prefix": root.prefix, "root": os.fspath(root.path),
            "engine": engine, "why": why}


def checked_cells(nb: Any) -> list[dict[str, Any]]:
    """The notebook's ``%%sandbox`` runs, each root checked against its digest where it is
    still at the path it ran from."""
    cells = records.sandbox_cells(nb)
    for cell in cells:
        path = cell.get("path")
        if isinstance(path, str) and os.path.isdir(path) and identity.is_digest(cell["digest"]):
            identity.check(StoreRoot.open(path), cell["digest"],
                           what=f"the pack of cell {cell['cell']} at {path}")
    return cells


def make_record(nb: Any, kernel: dict[str, Any], made_by: str,
                parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    cells = checked_cells(nb)
    host_engine = kernel.get("engine") == "host" or any(c.get("engine") == "host" for c in cells)
    return records.build(kernel=kernel, cells=cells, host=hostfacts.collect(
        host_engine=host_engine), made_by=made_by, parameters=parameters)


def spec_root(name: str) -> tuple[StoreRoot, str | None]:
    """The root and requested engine of the installed nbsandbox kernelspec ``name``."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    from nbsandbox.kernelspec import METADATA_KEY, PROVISIONER_NAME, KernelLauncher, user_config

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise UsageError(f"no kernelspec named {name!r} (see 'jupyter kernelspec list')") \
            from None
    metadata = spec.metadata or {}
    provisioner = metadata.get("kernel_provisioner", {})
    ours = metadata.get(METADATA_KEY) or {}
    if provisioner.get("provisioner_name") != PROVISIONER_NAME and not ours:
        raise UsageError(f"kernel {name!r} is not an nbsandbox kernel, so the pack it runs from "
                         "cannot be recorded; install one with 'nbsandbox kernel install ROOT'")
    config = provisioner.get("config", {})
    where = config.get("root") or ours.get("root")
    policy = KernelLauncher(config=user_config()).effective_policy()
    root = policy.open_root(where or None, f"kernelspec {name}")
    return root, config.get("engine")


def execute(path: Path, *, kernel: str | None = None, root: str | None = None,
            engine: str | None = None, output: Path | None = None,
            parameters: dict[str, Any] | None = None, timeout: int | None = 600,
            allow_errors: bool = False) -> tuple[Path, dict[str, Any]]:
    """``nbsandbox execute``: run the notebook and write it, with its record, to ``output``
    (default: in place)."""
    from nbsandbox.notebook import params

    nb = load(path)
    if root is not None:
        store_root = StoreRoot.open(root)
        store_root.validate()
        choice = KernelChoice(root=store_root, engine=engine)
    else:
        name = kernel or nb.get("metadata", {}).get("kernelspec", {}).get("name")
        if not name:
            raise UsageError(f"{path} names no kernel: pass --kernel NAME or --root ROOT")
        if engine:
            raise UsageError("--engine goes with --root; an installed kernel has its own")
        store_root, _ = spec_root(name)
        choice = KernelChoice(name=name)
    params.inject(nb, parameters or {})
    clear_outputs(nb)
    started = run(nb, choice, cwd=os.fspath(path.absolute().parent), timeout=timeout,
                  allow_errors=allow_errors)
    entry = kernel_entry(store_root, choice.name, started.engine, started.why)
    nb.metadata[records.KEY] = make_record(nb, entry, "nbsandbox execute", parameters)
    out = output or path
    save(nb, out)
    return out, nb.metadata[records.KEY]


def record(path: Path, output: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """``nbsandbox record``: the record of a notebook executed interactively with an
    nbsandbox kernel (named in ``metadata.kernelspec``)."""
    nb = load(path)
    name = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if not name:
        raise UsageError(f"{path} has no metadata.kernelspec; run it with an nbsandbox kernel "
                         "first, or use 'nbsandbox execute'")
    if not any(c.get("outputs") for c in nb.cells if c.get("cell_type") == "code"):
        raise UsageError(f"{path} has no outputs to record; run it first")
    try:
        root, engine = spec_root(name)
    except StoreError as exc:
        raise UsageError(f"kernel {name!r}: {exc}") from None
    why = ("executed interactively: front ends do not save which engine ran the kernel; "
           f"this is the engine its kernelspec requests ({engine or 'the policy default'})")
    entry = kernel_entry(root, name, engine, why)
    nb.metadata[records.KEY] = make_record(nb, entry, "nbsandbox record")
    out = output or path
    save(nb, out)
    return out, nb.metadata[records.KEY]
