"""The raw access records the native recorders write (see docs/access.md).

One line per event, written by the recorder with one ``write(2)``::

    <mech>\\t<op>\\t<result>\\t<pid>\\t<program>\\t<path>\\n

``program`` and ``path`` escape ``\\`` as ``\\\\``, TAB as ``\\t`` and newline
as ``\\n``; a path cut to fit the line limit ends in ``\\...``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

#: The recorders: the preload library, the audit module, the launcher's seccomp supervisor.
MECHANISMS = ("preload", "audit", "seccomp")
#: The operations, in the order reports list them.
OPS = ("open", "list", "stat", "readlink", "exec", "dlopen", "write", "connect")
#: What a cut path ends with once unescaped.
CUT_MARK = "\u2026"

_ESCAPES = {"\\": "\\", "t": "\t", "n": "\n"}


@dataclass(frozen=True)
class Record:
    """One event: ``result`` is 0 (success), an errno number, or ``None`` (unknown)."""

    mech: str
    op: str
    result: int | None
    pid: int
    program: str
    path: str


def unescape(text: str) -> str:
    """``text`` with the recorders' escapes undone; ``\\...`` at the end becomes ``…``."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 == len(text):
            out.append(c)
            i += 1
            continue
        if text[i + 1:] == "...":
            out.append(CUT_MARK)
            break
        nxt = text[i + 1]
        out.append(_ESCAPES.get(nxt, "\\" + nxt))
        i += 2
    return "".join(out)


def parse_line(line: str) -> Record | None:
    """The record of one raw line (without or with its newline); ``None`` when malformed."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) != 6:
        return None
    mech, op, result, pid, program, path = fields
    if mech not in MECHANISMS or op not in OPS or not pid.isdigit():
        return None
    if result == "-":
        code: int | None = None
    elif result.isdigit():
        code = int(result)
    else:
        return None
    path = unescape(path)
    if not path:
        return None
    return Record(mech, op, code, int(pid), unescape(program), path)


def parse_lines(lines: Iterable[str]) -> tuple[list[Record], int]:
    """The records of ``lines`` and how many lines were malformed (e.g. cut by a crash)."""
    records: list[Record] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        record = parse_line(line)
        if record is None:
            bad += 1
        else:
            records.append(record)
    return records, bad


def read_raw(path: str | os.PathLike[str]) -> tuple[list[Record], int]:
    """The records in the raw file at ``path`` (bytes that are not UTF-8 are replaced)."""
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        return parse_lines(f)
