"""The access report as a document: a versioned JSON format (docs/access.md).

:func:`build` makes it from the accesses and the run's facts; :func:`write`
writes it atomically (a temporary file renamed into place); :func:`load` reads
one back, with a one-line error for a file that is not a report.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from typing import Any

from nbsandbox.errors import UsageError
from nbsandbox.report.aggregate import Access
from nbsandbox.report.groups import GROUPS, Places, group_of

#: The ``format`` field of every report.
FORMAT = "nbsandbox-access-report"
#: The version of the format; readers refuse a newer one.
VERSION = 1

#: What each recorder sees (the ``mechanisms`` of a run).
MECHANISM_SCOPE = {
    "preload": "file, directory, exec and connect calls made through libc by dynamic programs "
               "that keep their environment",
    "audit": "shared libraries the dynamic loader opens or searches for",
    "seccomp": "path-taking and connect system calls of a static program and its "
               "descendants, including direct system calls",
}


def access_json(access: Access, places: Places) -> dict[str, Any]:
    return {
        "path": access.path,
        "op": access.op,
        "group": group_of(access.path, access.op, places),
        "count": access.count,
        "ok": access.ok,
        "failed": dict(sorted(access.failed.items())),
        "unknown": access.unknown,
        "programs": sorted(access.programs),
        "mechanisms": sorted(access.mechanisms),
    }


def build(accesses: Iterable[Access], run: dict[str, Any], places: Places, *,
          malformed: int = 0) -> dict[str, Any]:
    """The report: ``run`` is the run's facts (see docs/access.md), ``places`` names
    the home, working and temporary directories of the grouping."""
    items = [access_json(a, places) for a in accesses]
    counts = {key: 0 for key, _ in GROUPS}
    for item in items:
        counts[item["group"]] += 1
    return {
        "format": FORMAT,
        "version": VERSION,
        "run": run,
        "places": places.to_json(),
        "summary": {
            "paths": len({i["path"] for i in items}),
            "accesses": len(items),
            "events": sum(i["count"] for i in items),
            "failed": sum(1 for i in items if i["failed"]),
            "groups": {k: n for k, n in counts.items() if n},
            "malformed_records": malformed,
        },
        "accesses": items,
    }


def write(path: str, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically: readers see the old file or the whole
    new one, never part of it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load(path: str) -> dict[str, Any]:
    """The report in ``path``; :class:`UsageError` (one line) when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"no report at {path}; make one with 'nbsandbox run --report "
                         f"{path} ...'") from None
    except OSError as exc:
        raise UsageError(f"cannot read the report {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not an access report (not JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path} is not an access report (no \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UsageError(f"{path} is an access report of version {version!r}; this nbsandbox "
                         f"reads version {VERSION} and older: upgrade nbsandbox")
    if not isinstance(data.get("accesses"), list) or not isinstance(data.get("run"), dict):
        raise UsageError(f"{path} is a damaged access report (no accesses or run)")
    return data
