"""``nbsandbox verify``: re-run a recorded notebook from its packs and compare its outputs.

1. Read the notebook (or a bundle: :mod:`nbsandbox.notebook.bundle`) and its record
   (:mod:`nbsandbox.notebook.record`).
2. Find every pack by digest (the bundle, ``--packs`` directories, the caches) and
   check it (:mod:`nbsandbox.identity`; cheap for a pack checked before).
3. Re-execute a copy in the kernel's pack, under the best engine here (or
   ``--engine``); ``%%sandbox --root`` arguments are mapped to the packs found.
4. Compare each code cell's outputs (:mod:`nbsandbox.notebook.compare`).

Exit status: 0 every compared cell identical, 1 some cell differs (or now
raises), 2 it could not be verified (one line saying why).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Dict, Unicode
from traitlets.config import Configurable

from nbsandbox import identity
from nbsandbox.errors import NbsandboxError
from nbsandbox.notebook import bundle, cellrun, compare, hostfacts
from nbsandbox.notebook import cache as pack_cache
from nbsandbox.notebook import record as records
from nbsandbox.notebook.execute import KernelChoice, clear_outputs, load, loads, run
from nbsandbox.store import StoreRoot

IDENTICAL, DIFFERS, ERROR, SKIPPED = "identical", "differs", "error", "skipped"


class CannotVerify(NbsandboxError):
    """The notebook could not be re-run here (exit status 2)."""

    exit_code = 2


class NotebookVerifier(Configurable):
    """How ``nbsandbox verify`` and ``pytest --nbsandbox-verify`` compare outputs."""

    normalize = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="""Extra normalization rules, {regular expression: replacement}, applied to
        text outputs after the built-in ones (memory addresses, timestamps, temporary
        paths) and before comparing: {"took \\\\d+ ms": "took <n> ms"}.  A cell may add its
        own with the tag 'nbsandbox-normalize=REGEX' or metadata.nbsandbox.normalize.""",
    ).tag(config=True)


@dataclass
class CellResult:
    cell: int
    id: str | None
    status: str
    detail: str = ""
    diff: str = ""


@dataclass
class Report:
    notebook: str
    exit_code: int = 0
    reason: str = ""
    engine: str | None = None
    why: str | None = None
    packs: dict[str, str] = field(default_factory=dict)
    cells: list[CellResult] = field(default_factory=list)
    host_differences: list[str] = field(default_factory=list)
    recorded_host: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return {0: IDENTICAL, 1: DIFFERS}.get(self.exit_code, "could not run")

    def to_json(self) -> str:
        data = asdict(self)
        data["status"] = self.status
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    def text(self) -> str:
        lines = []
        for c in self.cells:
            label = f"cell {c.cell}" + (f" ({c.id})" if c.id else "")
            lines.append(f"{label}: {c.status}" + (f" -- {c.detail}" if c.detail else ""))
            if c.diff:
                lines += ["    " + line for line in c.diff.splitlines()]
        if self.engine:
            lines.append(f"kernel engine here: {self.engine}")
        if self.exit_code == 1 and self.host_differences:
            lines.append("host differences from the recorded run: "
                         + "; ".join(self.host_differences))
        differing = [c for c in self.cells if c.status in (DIFFERS, ERROR)]
        if self.exit_code == 0:
            compared = sum(c.status == IDENTICAL for c in self.cells)
            lines.append(f"identical: {compared} cells compared, "
                         f"{sum(c.status == SKIPPED for c in self.cells)} skipped")
        elif self.exit_code == 1:
            names = ", ".join(f"cell {c.cell}" for c in differing)
            lines.append(f"differs: {names}")
        return "\n".join(lines)


def _is_bundle(path: Path) -> bool:
    if path.name.endswith((".tar", ".tar.gz", ".tgz")):
        return True
    try:
        return path.is_file() and tarfile.is_tarfile(path)
    except OSError:
        return False


def _packs(rec: records.Record, found: dict[str, StoreRoot], dirs: list[str],
           cache: pack_cache.PackCache, manifests: dict[str, identity.Manifest]
           ) -> dict[str, StoreRoot]:
    roots = {}
    for digest, info in rec.packs.items():
        used_by = ", ".join(info.get("used_by", [])) or "?"
        root = found.get(digest) or cache.find(digest, dirs) or _where_it_ran(rec, digest)
        if root is None:
            raise CannotVerify(f"pack {digest} ({used_by}) is missing: verify the bundle, or "
                               "give the directory that holds it with --packs DIR")
        identity.check(root, digest, reference=manifests.get(digest),
                       what=f"pack {digest[:16]}... ({used_by}) at {root.path}")
        roots[digest] = root
    return roots


def _where_it_ran(rec: records.Record, digest: str) -> StoreRoot | None:
    """The pack at the path the notebook ran it from, when that is still this pack."""
    paths = [rec.kernel.get("root")] if rec.kernel["digest"] == digest else []
    paths += [c.get("path") for c in rec.cells if c["digest"] == digest]
    for path in paths:
        if not isinstance(path, str) or not os.path.isdir(path):
            continue
        try:
            root = StoreRoot.open(path)
        except NbsandboxError:
            continue
        if root.metadata is None or root.metadata.digest in (None, digest):
            return root
    return None


def verify(source: Path, *, engine: str | None = None, packs: list[str] | None = None,
           timeout: int | None = 600, verifier: NotebookVerifier | None = None,
           cache: pack_cache.PackCache | None = None) -> Report:
    """Verify ``source`` (a notebook or a bundle); never raises for a bad input: the report
    says why (exit code 2)."""
    report = Report(notebook=os.fspath(source))
    try:
        _verify(source, report, engine, packs or [], timeout, verifier or _verifier(),
                cache or pack_cache.from_config())
    except NbsandboxError as exc:
        report.exit_code = 2
        report.reason = str(exc)
    return report


def _verifier() -> NotebookVerifier:
    from nbsandbox.kernelspec import user_config

    return NotebookVerifier(config=user_config())


def _verify(source: Path, report: Report, engine: str | None, dirs: list[str],
            timeout: int | None, verifier: NotebookVerifier, cache: pack_cache.PackCache) -> None:
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        raise CannotVerify(f"--packs {missing[0]} is not a directory")
    if not source.exists():
        raise CannotVerify(f"{source} does not exist")
    workdir = None
    found: dict[str, StoreRoot] = {}
    manifests: dict[str, identity.Manifest] = {}
    if _is_bundle(source):
        opened = bundle.read(source, cache)
        nb = loads(opened.notebook, f"the notebook in {source}")
        found, manifests = opened.roots, opened.manifests
        where = f"{opened.name} in {source}"
    else:
        nb = load(source)
        where = os.fspath(source)
    rec = records.read(nb, where)
    roots = _packs(rec, found, dirs, cache, manifests)
    report.packs = {d: os.fspath(r.path) for d, r in roots.items()}
    paths = {d: os.fspath(r.path) for d, r in roots.items()}
    root_map = rec.root_map(paths)
    env = {cellrun.MAP_ENV: json.dumps(root_map, sort_keys=True)}
    if engine:
        env["NBSANDBOX_ENGINE"] = engine
    try:
        rules = compare.rules_from_config(verifier.normalize)
    except Exception as exc:
        raise CannotVerify(f"NotebookVerifier.normalize has a bad regular expression ({exc})") \
            from None
    fresh = copy.deepcopy(nb)
    clear_outputs(fresh)
    if _is_bundle(source):
        workdir = tempfile.mkdtemp(prefix="nbsandbox-verify-")
    try:
        cwd = workdir or os.fspath(source.absolute().parent)
        choice = KernelChoice(root=roots[rec.kernel["digest"]], engine=engine)
        started = run(fresh, choice, cwd=cwd, timeout=timeout, allow_errors=True, env=env)
    except NbsandboxError as exc:
        raise CannotVerify(f"{where} could not be run here: {exc}") from None
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    report.engine, report.why = started.engine, started.why
    report.recorded_host = rec.host
    report.host = hostfacts.collect(host_engine=True)
    report.host_differences = hostfacts.differences(rec.host, report.host)
    report.cells = _compare(nb, fresh, rules, rec)
    report.exit_code = 1 if any(c.status in (DIFFERS, ERROR) for c in report.cells) else 0


def _compare(stored: Any, fresh: Any, rules: compare.Rules,
             rec: records.Record) -> list[CellResult]:
    results = []
    for index, (old, new) in enumerate(zip(stored.cells, fresh.cells, strict=True)):
        if old.get("cell_type") != "code":
            continue
        cid = old.get("id")
        tag = compare.skipped(old)
        if tag:
            results.append(CellResult(index, cid, SKIPPED, f"tagged {tag}"))
            continue
        try:
            cell_rules = rules.extended(compare.cell_rules(old))
        except Exception as exc:
            results.append(CellResult(index, cid, ERROR, f"bad normalization rule: {exc}"))
            continue
        want = compare.comparable(old.get("outputs", []), cell_rules)
        got = compare.comparable(new.get("outputs", []), cell_rules)
        runs_then = [r.get("digest") for r in cellrun.records_in(old.get("outputs", []))]
        runs_now = [r.get("digest") for r in cellrun.records_in(new.get("outputs", []))]
        new_errors = [v for k, v in got if k == "error"]
        if runs_then != runs_now:
            results.append(CellResult(index, cid, DIFFERS,
                                      "its %%sandbox runs used other packs than recorded"))
        elif want == got:
            results.append(CellResult(index, cid, IDENTICAL))
        elif new_errors and not any(k == "error" for k, _ in want):
            results.append(CellResult(index, cid, ERROR, f"now raises {new_errors[0]}",
                                      compare.short_diff(want, got)))
        else:
            results.append(CellResult(index, cid, DIFFERS, "outputs differ",
                                      compare.short_diff(want, got)))
    return results
