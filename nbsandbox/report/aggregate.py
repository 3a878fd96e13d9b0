"""Raw records folded into accesses: one per (path, operation)."""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from nbsandbox.report.records import OPS, Record


def errno_name(number: int) -> str:
    """``ENOENT`` for 2; the number itself for one this system does not name."""
    return errno.errorcode.get(number, str(number))


@dataclass
class Access:
    """Every event on one path with one operation."""

    path: str
    op: str
    count: int = 0
    ok: int = 0
    #: Unknown outcomes (library search candidates).
    unknown: int = 0
    #: Failures by errno name.
    failed: Counter[str] = field(default_factory=Counter)
    programs: set[str] = field(default_factory=set)
    mechanisms: set[str] = field(default_factory=set)

    def add(self, record: Record) -> None:
        self.count += 1
        if record.result is None:
            self.unknown += 1
        elif record.result == 0:
            self.ok += 1
        else:
            self.failed[errno_name(record.result)] += 1
        self.programs.add(record.program)
        self.mechanisms.add(record.mech)


def aggregate(records: Iterable[Record], *, ignore_programs: Iterable[str] = ()) -> list[Access]:
    """The accesses of ``records``, sorted by path then operation.

    ``ignore_programs``: names of programs whose events are not the sandboxed
    program's (an engine's own tool, which the recorders also see)."""
    skip = set(ignore_programs)
    table: dict[tuple[str, str], Access] = {}
    for record in records:
        if record.program in skip:
            continue
        key = (record.path, record.op)
        access = table.get(key)
        if access is None:
            access = table[key] = Access(record.path, record.op)
        access.add(record)
    order = {op: i for i, op in enumerate(OPS)}
    return sorted(table.values(), key=lambda a: (a.path, order.get(a.op, len(order))))
