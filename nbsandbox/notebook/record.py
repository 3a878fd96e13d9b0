"""A notebook's record of the runtime it ran in: ``metadata.nbsandbox``.

::

    {"format": 1, "nbsandbox_version": "0.1.0", "made_by": "nbsandbox execute",
     "kernel": {"name": "...", "digest": "...", "prefix": "/gnu/store", "root": "/path/then",
                "engine": "userns", "why": "engine: userns (requested: default)"},
     "sandbox_cells": [{"cell": 3, "id": "...", "root": "--root argument", "digest": "...",
                        "prefix": "/gnu/store", "engine": "bwrap", "why": "..."}],
     "packs": {"<digest>": {"prefix": "/gnu/store", "used_by": ["kernel", "cell 3"]}},
     "parameters": {"n": 10},
     "host": {"kernel_release": "...", "cpu_model": "...", "cpu_flags": {...}, ...},
     "checksum": "<sha256 of the rest>"}

``checksum`` seals the record: a record edited by hand (a digest changed to
point at another pack) no longer matches it and is refused.  It is a check
against mistakes and casual edits, not a signature.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from nbsandbox import __version__
from nbsandbox.errors import NbsandboxError
from nbsandbox.identity import is_digest
from nbsandbox.notebook import cellrun

FORMAT = 1
KEY = cellrun.KEY
_RUN_KEYS = ("root", "path", "digest", "prefix", "engine", "why")


class RecordError(NbsandboxError):
    """A notebook's record is missing, malformed or edited: it cannot be re-run."""

    exit_code = 2


def _checksum(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def build(*, kernel: dict[str, Any], cells: list[dict[str, Any]], host: dict[str, Any],
          made_by: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """A sealed record (see the module's docstring)."""
    packs: dict[str, dict[str, Any]] = {}

    def use(entry: dict[str, Any], who: str) -> None:
        pack = packs.setdefault(entry["digest"], {"prefix": entry["prefix"], "used_by": []})
        pack["used_by"].append(who)

    use(kernel, "kernel")
    for cell in cells:
        use(cell, f"cell {cell['cell']}")
    record: dict[str, Any] = {
        "format": FORMAT,
        "nbsandbox_version": __version__,
        "made_by": made_by,
        "kernel": kernel,
        "sandbox_cells": cells,
        "packs": dict(sorted(packs.items())),
        "host": host,
    }
    if parameters:
        record["parameters"] = parameters
    record["checksum"] = _checksum(record)
    return record


def sandbox_cells(nb: Any) -> list[dict[str, Any]]:
    """The ``%%sandbox`` runs recorded in the notebook's outputs, one entry per run."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        for run in cellrun.records_in(cell.get("outputs", [])):
            entry = {"cell": index, "id": cell.get("id")}
            entry.update({k: run.get(k) for k in _RUN_KEYS})
            found.append(entry)
    return found


@dataclass(frozen=True)
class Record:
    """A validated record."""

    data: dict[str, Any]

    @property
    def kernel(self) -> dict[str, Any]:
        return self.data["kernel"]

    @property
    def cells(self) -> list[dict[str, Any]]:
        return self.data["sandbox_cells"]

    @property
    def packs(self) -> dict[str, dict[str, Any]]:
        return self.data["packs"]

    @property
    def host(self) -> dict[str, Any]:
        return self.data.get("host") or {}

    def root_map(self, paths: dict[str, str]) -> dict[str, str]:
        """{``--root`` argument: path} for the cells, given {digest: path}."""
        return {cell["root"]: paths[cell["digest"]] for cell in self.cells}


def read(nb: Any, where: str) -> Record:
    """The notebook's validated record; :class:`RecordError` (one line) when it has none,
    or one that is malformed, edited, or disagrees with the cells' own run records."""
    data = nb.get("metadata", {}).get(KEY)
    if data is None:
        raise RecordError(f"{where} has no nbsandbox record (metadata.nbsandbox); run it "
                          "with 'nbsandbox execute' or add one with 'nbsandbox record'")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RecordError(f"{where}: metadata.nbsandbox is not a record of format {FORMAT}; "
                          "execute the notebook again with this nbsandbox")
    if data.get("checksum") != _checksum(data):
        raise RecordError(f"{where}: metadata.nbsandbox was edited by hand (its checksum "
                          "does not match); execute the notebook again to record it anew")
    problem = _problem(data)
    if problem:
        raise RecordError(f"{where}: metadata.nbsandbox is malformed ({problem}); execute the "
                          "notebook again")
    in_outputs = [(c["cell"], c["digest"]) for c in sandbox_cells(nb)]
    recorded = [(c["cell"], c["digest"]) for c in data["sandbox_cells"]]
    if in_outputs != recorded:
        raise RecordError(f"{where}: the %%sandbox runs recorded in the cells' outputs do not "
                          "match metadata.nbsandbox (outputs edited by hand?); execute the "
                          "notebook again")
    return Record(data)


def _problem(data: dict[str, Any]) -> str | None:
    kernel = data.get("kernel")
    if not isinstance(kernel, dict) or not is_digest(kernel.get("digest")):
        return "no kernel digest"
    cells = data.get("sandbox_cells")
    if not isinstance(cells, list):
        return "sandbox_cells is not a list"
    for cell in cells:
        if not isinstance(cell, dict) or not is_digest(cell.get("digest")) \
                or not isinstance(cell.get("cell"), int) or not isinstance(cell.get("root"), str):
            return "a sandbox cell entry lacks its cell, root or digest"
    packs = data.get("packs")
    if not isinstance(packs, dict) or not all(is_digest(d) for d in packs):
        return "packs is not a map of digests"
    used = {kernel["digest"], *(c["digest"] for c in cells)}
    if used != set(packs):
        return "packs does not list exactly the digests used"
    for digest, pack in packs.items():
        if not isinstance(pack, dict) or not isinstance(pack.get("prefix"), str):
            return f"pack {digest[:12]} has no prefix"
    targets: dict[str, str] = {}
    for cell in cells:
        if targets.setdefault(cell["root"], cell["digest"]) != cell["digest"]:
            return f"--root {cell['root']!r} ran from two different packs"
    return None
