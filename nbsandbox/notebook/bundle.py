"""One file that holds a notebook and every pack it ran from: ``NB.bundle.tar``.

A plain tar (so ``tar tf`` lists it, and a changed byte in a pack is found and
named by the pack's identity check rather than lost in a decompression
error), with, in this order:

``nbsandbox-bundle.json``  format, the notebook's file name, and for each pack its
                           digest, file and manifest (:class:`~nbsandbox.identity.Manifest`)
``notebook.ipynb``         the notebook's bytes, as they are on disk
``packs/<digest>.tar``     each pack once, as a deterministic tar of its root

Everything is written deterministically (sorted, fixed times, owners and
modes: :mod:`nbsandbox.pack.archive`), so bundling twice gives the same bytes.
Compress it for transfer if you like; :func:`read` accepts ``.tar.gz`` too.

Reading trusts nothing: any other entry name, type or order (a ``../``
entry, a link, a device) or a truncated file is a one-line error, and packs
are unpacked only into the pack cache, by :func:`nbsandbox.pack.unpack.unpack`.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbsandbox import identity
from nbsandbox.errors import NbsandboxError
from nbsandbox.identity import Manifest, is_digest
from nbsandbox.notebook import cache as pack_cache
from nbsandbox.notebook.record import Record
from nbsandbox.pack.archive import source_date_epoch, write_tar
from nbsandbox.store import StoreRoot

FORMAT = 1
INDEX = "nbsandbox-bundle.json"
NOTEBOOK = "notebook.ipynb"
_PACK = re.compile(r"^packs/([0-9a-f]{64})\.tar$")


class BundleError(NbsandboxError):
    """A bundle cannot be written or is not a sound bundle."""

    exit_code = 2


# -- writing ----------------------------------------------------------------------------------


def locate(record: Record, digest: str, packs: Iterable[str] = (),
           cache: pack_cache.PackCache | None = None) -> StoreRoot:
    """The root of pack ``digest``: where the notebook ran it (if still there and the same),
    ``packs`` directories, or the cache.  Checked against ``digest``."""
    hints = [record.kernel.get("root")] if record.kernel["digest"] == digest else []
    hints += [c.get("path") for c in record.cells if c["digest"] == digest]
    for hint in hints:
        if isinstance(hint, str) and os.path.isdir(hint):
            try:
                root = StoreRoot.open(hint)
                identity.check(root, digest)
                return root
            except NbsandboxError:
                continue
    cache = cache or pack_cache.from_config()
    root = cache.find(digest, packs)
    used_by = ", ".join(record.packs[digest].get("used_by", []))
    if root is None:
        raise BundleError(f"pack {digest} ({used_by}) is not where the notebook ran it, nor in "
                          "the pack cache; give its directory with --packs DIR")
    identity.check(root, digest, what=f"pack {digest[:16]}... ({used_by}) at {root.path}")
    return root


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = source_date_epoch()
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write(notebook: Path, output: Path, record: Record, packs: Iterable[str] = ()) -> list[str]:
    """Write the bundle of ``notebook`` (whose validated record is ``record``) to
    ``output``, atomically; returns the digests bundled."""
    roots = {d: locate(record, d, packs) for d in sorted(record.packs)}
    index = {
        "format": FORMAT,
        "notebook": notebook.name,
        "packs": {d: {"file": f"packs/{d}.tar", "manifest": identity.compute(r)[0].to_dict()}
                  for d, r in roots.items()},
    }
    for digest, entry in index["packs"].items():
        if Manifest.from_dict(entry["manifest"]).digest != digest:  # type: ignore[union-attr]
            raise BundleError(f"pack {digest} changed while it was being bundled; try again")
    output = output.absolute()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    except OSError as exc:
        raise BundleError(f"cannot write in {output.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w",
                                                     format=tarfile.PAX_FORMAT) as tar:
            data = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
            tar.addfile(_info(INDEX, len(data)), io.BytesIO(data))
            data = notebook.read_bytes()
            tar.addfile(_info(NOTEBOOK, len(data)), io.BytesIO(data))
            for digest, root in roots.items():
                with tempfile.TemporaryFile(dir=output.parent) as part:
                    write_tar(root.path, part)
                    size = part.tell()
                    part.seek(0)
                    tar.addfile(_info(f"packs/{digest}.tar", size), part)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return list(roots)


# -- reading -----------------------------------------------------------------------------------


@dataclass
class Opened:
    """What a bundle held: the notebook's bytes and name, and its packs (digest -> root)."""

    name: str
    notebook: bytes
    roots: dict[str, StoreRoot] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)


def read(path: Path, cache: pack_cache.PackCache) -> Opened:
    """Check ``path`` entry by entry and move its packs into the cache (those already there
    are used as they are, once checked).  Raises :class:`BundleError` (one line)."""
    what = f"bundle {path}"
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 -- closed below
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{what} is not a readable tar file ({exc}); bundle the notebook "
                          "again with 'nbsandbox bundle'") from None
    try:
        with tar:
            return _read(tar, what, cache)
    except (tarfile.TarError, EOFError, zlib.error, ValueError) as exc:
        detail = str(exc) or type(exc).__name__
        raise BundleError(f"{what} is truncated or damaged ({detail}); copy or bundle it "
                          "again") from None


def _read(tar: tarfile.TarFile, what: str, cache: pack_cache.PackCache) -> Opened:
    index: dict[str, Any] | None = None
    opened: Opened | None = None
    for member in tar:
        name = member.name
        if not member.isreg():
            raise BundleError(f"{what} has an unexpected entry {name!r} (not a regular file); "
                              "it is not an nbsandbox bundle or it was tampered with")
        if index is None:
            if name != INDEX:
                raise BundleError(f"{what} does not start with {INDEX} (found {name!r}); it is "
                                  "not an nbsandbox bundle")
            index = _index(_bytes(tar, member), what)
            continue
        if name == NOTEBOOK and opened is None:
            opened = Opened(index["notebook"], _bytes(tar, member))
            opened.manifests = {d: Manifest.from_dict(e["manifest"])  # type: ignore[misc]
                                for d, e in index["packs"].items()}
            continue
        match = _PACK.match(name)
        if opened is None or match is None or match.group(1) not in index["packs"] \
                or match.group(1) in opened.roots:
            raise BundleError(f"{what} has an unexpected entry {name!r}; it is not an nbsandbox "
                              "bundle or it was tampered with")
        digest = match.group(1)
        opened.roots[digest] = _pack(tar, member, digest, opened.manifests[digest], cache, what)
    if index is None or opened is None:
        raise BundleError(f"{what} is empty or truncated (no {INDEX if index is None else NOTEBOOK}"
                          "); copy or bundle it again")
    missing = sorted(set(index["packs"]) - set(opened.roots))
    if missing:
        raise BundleError(f"{what} is truncated: pack {missing[0]} is missing; copy or bundle "
                          "it again")
    return opened


def _bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int = 64 << 20) -> bytes:
    if member.size > limit:
        raise BundleError(f"entry {member.name!r} is implausibly large ({member.size} bytes)")
    f = tar.extractfile(member)
    assert f is not None
    data = f.read()
    if len(data) != member.size:
        raise EOFError("unexpected end of data")
    return data


def _index(data: bytes, what: str) -> dict[str, Any]:
    try:
        index = json.loads(data)
        if index.get("format") != FORMAT:
            raise ValueError(f"format {index.get('format')!r}")
        if not isinstance(index.get("notebook"), str) or not isinstance(index.get("packs"), dict):
            raise ValueError("no notebook or packs")
        for digest, entry in index["packs"].items():
            manifest = Manifest.from_dict(entry.get("manifest")) if isinstance(entry, dict) \
                else None
            if not is_digest(digest) or manifest is None or manifest.digest != digest:
                raise ValueError(f"pack {digest[:16]} has no matching manifest")
    except (ValueError, AttributeError) as exc:
        raise BundleError(f"{what}: {INDEX} is not valid ({exc}); bundle the notebook "
                          "again") from None
    return index


def _pack(tar: tarfile.TarFile, member: tarfile.TarInfo, digest: str, manifest: Manifest,
          cache: pack_cache.PackCache, what: str) -> StoreRoot:
    label = f"pack {digest[:16]}... in {what}"
    root = cache.find(digest)
    if root is None:
        data = tar.extractfile(member)
        assert data is not None
        try:
            root = cache.add(digest, data, member.size)
        except NbsandboxError as exc:
            raise BundleError(f"{label}: {exc}") from None
    identity.check(root, digest, reference=manifest, what=label)
    return root
