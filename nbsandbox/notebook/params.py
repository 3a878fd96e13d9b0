"""Papermill-style parameters: ``-p NAME VALUE`` becomes a cell after the ``parameters`` cell.

As papermill does, the values given on the command line are injected as a new
code cell tagged ``injected-parameters`` right after the cell tagged
``parameters`` (or first, when there is none), replacing an earlier injected
cell.  Values are read as Python literals where they are one (``10``,
``0.5``, ``True``, ``None``, ``'text'``, ``[1, 2]``), else kept as text.

Written here rather than taken from papermill: papermill brings its own
execution engine and I/O layer, while nbsandbox must run the notebook through
nbclient with its own kernel manager; the injection itself is a few lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Any

from nbsandbox.errors import UsageError

TAG = "parameters"
INJECTED = "injected-parameters"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``[(name, text)]`` -> ``{name: value}``; a bad name is a :class:`UsageError`."""
    values: dict[str, Any] = {}
    for name, text in pairs:
        if not _NAME.match(name) or name in ("True", "False", "None"):
            raise UsageError(f"parameter name {name!r} is not a Python identifier")
        try:
            values[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            values[name] = text
    return values


def inject(nb: Any, values: dict[str, Any]) -> None:
    """Add (or replace) the injected-parameters cell of ``nb``."""
    if not values:
        return
    import nbformat

    nb.cells = [c for c in nb.cells if INJECTED not in c.get("metadata", {}).get("tags", [])]
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED]})
    where = next((i + 1 for i, c in enumerate(nb.cells)
                  if TAG in c.get("metadata", {}).get("tags", [])), 0)
    nb.cells.insert(where, cell)
