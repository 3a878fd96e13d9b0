"""The pack cache: unpacked packs found by digest, ``DIR/<digest>/``.

Packs taken out of a bundle go into the user's cache, so that verifying the
same notebook again (or another notebook that uses the same pack) neither
copies nor digests it again (an unchanged root is re-checked by its stamp,
see :mod:`nbsandbox.identity`).  Shared caches -- say, one that a cluster's
administrators fill on a shared file system -- are searched first and never
written to.

Configured by ``PackCache.path`` and ``PackCache.shared`` in
``nbsandbox_config.py``/``.json`` (Jupyter's configuration directories), or by
:data:`PATH_ENV` and :data:`SHARED_ENV`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from traitlets import List, Unicode
from traitlets.config import Configurable

from nbsandbox import identity
from nbsandbox.errors import NbsandboxError, StoreError
from nbsandbox.store import StoreRoot

PATH_ENV = "NBSANDBOX_PACK_CACHE"
SHARED_ENV = "NBSANDBOX_SHARED_PACKS"


class PackCache(Configurable):
    """Where packs are kept and looked up by digest."""

    path = Unicode(
        "",
        help="""Directory where packs taken out of bundles are unpacked, one per digest
        (DIR/<digest>/).  Empty: $NBSANDBOX_PACK_CACHE, else
        $XDG_CACHE_HOME/nbsandbox/packs (~/.cache/nbsandbox/packs).""",
    ).tag(config=True)

    shared = List(
        Unicode(),
        help="""Read-only directories of packs by digest, searched before `path` (e.g. one
        on a cluster's shared file system, filled with 'nbsandbox verify' by an
        administrator whose `path` points there).  Also $NBSANDBOX_SHARED_PACKS
        (colon-separated).""",
    ).tag(config=True)

    def writable_dir(self) -> Path:
        raw = os.environ.get(PATH_ENV) or self.path
        if not raw:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                os.path.expanduser("~"), ".cache")
            raw = os.path.join(base, "nbsandbox", "packs")
        return Path(os.path.abspath(os.path.expanduser(raw)))

    def shared_dirs(self) -> list[Path]:
        raw = [p for p in os.environ.get(SHARED_ENV, "").split(":") if p] + list(self.shared)
        return [Path(os.path.abspath(os.path.expanduser(p))) for p in raw]

    def find(self, digest: str, extra: Iterable[str | os.PathLike[str]] = ()) -> StoreRoot | None:
        """The root of the pack ``digest``: in ``extra`` directories (each a root, or a
        directory of roots named by digest or holding a pack.json that records it), then
        the shared caches, then the user's.  Not checked yet: see :func:`check`."""
        for top in extra:
            found = _search(Path(top), digest)
            if found is not None:
                return found
        for top in [*self.shared_dirs(), self.writable_dir()]:
            candidate = top / digest
            if candidate.is_dir():
                try:
                    return StoreRoot.open(candidate)
                except StoreError:
                    continue
        return None

    def add(self, digest: str, data: IO[bytes], size: int) -> StoreRoot:
        """Unpack the pack tarball read from ``data`` as ``DIR/<digest>`` (its recorded
        identity is checked by :func:`nbsandbox.pack.unpack.unpack`)."""
        from nbsandbox.pack.unpack import unpack

        top = self.writable_dir()
        try:
            top.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{digest[:12]}-", suffix=".tar", dir=top)
        except OSError as exc:
            raise NbsandboxError(f"cannot write to the pack cache {top}: "
                                 f"{exc.strerror or exc}; set ${PATH_ENV} to a directory of "
                                 "yours") from None
        try:
            with os.fdopen(fd, "wb") as out:
                left = size
                while left > 0:
                    chunk = data.read(min(left, 1 << 20))
                    if not chunk:
                        raise EOFError("unexpected end of data")
                    out.write(chunk)
                    left -= len(chunk)
            dest = top / digest
            if dest.is_dir():  # another verifier was quicker
                return StoreRoot.open(dest)
            return unpack(tmp, dest)
        finally:
            os.unlink(tmp)


def _search(top: Path, digest: str) -> StoreRoot | None:
    candidates = [top / digest, top]
    with contextlib.suppress(OSError):
        candidates += sorted(p for p in top.iterdir() if p.is_dir() and p.name != digest)
    for candidate in candidates:
        if not candidate.is_dir():
            continue
        try:
            root = StoreRoot.open(candidate)
        except StoreError:
            continue
        if candidate.name == digest or (root.metadata and root.metadata.digest == digest):
            return root
    return None


def check(root: StoreRoot, digest: str, reference: identity.Manifest | None = None,
          what: str | None = None) -> None:
    """Refuse a root whose content is not ``digest`` (cheap when stamped)."""
    identity.check(root, digest, reference=reference, what=what)


def from_config() -> PackCache:
    from nbsandbox.kernelspec import user_config

    return PackCache(config=user_config())
