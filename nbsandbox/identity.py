"""The identity of a store root: a digest of what programs can observe.

A root's *digest* depends only on what a program run from it can see: the
store prefix, the top-level profile links (name and target) and, for every
entry of the store directory, the names, kinds, contents, executable bits and
symlink targets of everything below it -- as Nix's NAR hash does.  Not on
timestamps, owners, other mode bits, hard links, tar metadata or where the
root is unpacked.  ``.nbsandbox/`` (where the digest itself is kept) is not
part of it.

It is computed in two levels: each store item gets its own digest, and the
root's digest covers the prefix, the links and the (name, item digest) list,
its :class:`Manifest`.  ``nbsandbox pack`` keeps the manifest in
``.nbsandbox/pack.json``, so that a root that no longer matches can be told
apart item by item: a mismatch names the first item that differs.

Digesting reads every byte (about a second for 500 MB here); a *stamp*
remembers, per root path, the digest together with a fingerprint of the
tree's metadata (inode, size, mode, mtime and ctime of every entry; the kernel
updates ctime on any change and nobody can set it back), so that checking an
unchanged root again only costs a walk of its directories.  Stamps live in
``$XDG_CACHE_HOME/nbsandbox/verified`` (``~/.cache``); when that is not
writable, nothing is remembered.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbsandbox.errors import StoreError

if TYPE_CHECKING:
    from nbsandbox.store import StoreRoot

#: Tag of the digest's encoding; changes if the encoding ever does.
FORMAT = "nbsandbox-root-v2"
DIGEST_LEN = 64
_CHUNK = 1 << 20


class IdentityMismatch(StoreError):
    """A root's content is not the one its digest says."""


def is_digest(value: object) -> bool:
    """Whether ``value`` looks like a root digest (64 lowercase hex digits)."""
    return (isinstance(value, str) and len(value) == DIGEST_LEN
            and all(c in "0123456789abcdef" for c in value))


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


@dataclass(frozen=True)
class Manifest:
    """What a root's digest covers: prefix, profile links, and each store item's digest."""

    prefix: str
    links: dict[str, str] = field(default_factory=dict)
    items: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        h = hashlib.sha256(_frame(FORMAT.encode()) + _frame(self.prefix.encode()))
        for name in sorted(self.links, key=os.fsencode):
            h.update(_frame(b"link") + _frame(os.fsencode(name))
                     + _frame(os.fsencode(self.links[name])))
        for name in sorted(self.items, key=os.fsencode):
            h.update(_frame(b"item") + _frame(os.fsencode(name))
                     + _frame(self.items[name].encode()))
        return h.hexdigest()

    def to_dict(self) -> dict[str, object]:
        return {"prefix": self.prefix, "links": dict(sorted(self.links.items())),
                "items": dict(sorted(self.items.items()))}

    @classmethod
    def from_dict(cls, data: object) -> Manifest | None:
        """The manifest in ``data`` (as :meth:`to_dict` wrote it), or None when malformed."""
        if not isinstance(data, dict):
            return None
        prefix, links, items = data.get("prefix"), data.get("links"), data.get("items")
        if not (isinstance(prefix, str) and isinstance(links, dict) and isinstance(items, dict)):
            return None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in links.items()):
            return None
        if not all(isinstance(k, str) and is_digest(v) for k, v in items.items()):
            return None
        return cls(prefix, dict(links), dict(items))

    def first_difference(self, actual: Manifest) -> str | None:
        """How ``actual`` first differs from this (expected) manifest, in a few words."""
        if actual.prefix != self.prefix:
            return f"the store prefix is {actual.prefix}, not {self.prefix}"
        for name in sorted(set(self.links) | set(actual.links), key=os.fsencode):
            want, got = self.links.get(name), actual.links.get(name)
            if want != got:
                if got is None:
                    return f"profile link {name!r} is missing"
                if want is None:
                    return f"profile link {name!r} is not in the recorded pack"
                return f"profile link {name!r} points to {got}, not {want}"
        for name in sorted(set(self.items) | set(actual.items), key=os.fsencode):
            want, got = self.items.get(name), actual.items.get(name)
            if want != got:
                if got is None:
                    return f"item {name} is missing"
                if want is None:
                    return f"item {name} is not in the recorded pack"
                return f"item {name} has different content"
        return None


# -- computing ------------------------------------------------------------------------------


@dataclass
class _Walk:
    """Every entry of a store directory, in order, with what the digest needs."""

    entries: list[tuple[bytes, bytes, int, os.stat_result]] = field(default_factory=list)
    # (item name, path relative to the store, kind, stat); kind: d f x l ?
    files: list[bytes] = field(default_factory=list)  # absolute paths of regular files


_KIND_DIR, _KIND_FILE, _KIND_EXE, _KIND_LINK, _KIND_OTHER = b"d", b"f", b"x", b"l", b"?"


def _kind(st: os.stat_result) -> bytes:
    if stat.S_ISDIR(st.st_mode):
        return _KIND_DIR
    if stat.S_ISLNK(st.st_mode):
        return _KIND_LINK
    if stat.S_ISREG(st.st_mode):
        return _KIND_EXE if st.st_mode & 0o111 else _KIND_FILE
    return _KIND_OTHER


def _walk(store: bytes) -> list[tuple[bytes, bytes, os.stat_result]]:
    """(item, relative path, lstat) of everything under ``store``, sorted by path bytes."""
    out: list[tuple[bytes, bytes, os.stat_result]] = []

    def walk(rel_dir: bytes, item: bytes) -> None:
        with os.scandir(os.path.join(store, rel_dir)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = os.path.join(rel_dir, entry.name)
            st = entry.stat(follow_symlinks=False)
            out.append((item, rel, st))
            if stat.S_ISDIR(st.st_mode):
                walk(rel, item)

    with os.scandir(store) as it:
        top = sorted(it, key=lambda e: e.name)
    for entry in top:
        st = entry.stat(follow_symlinks=False)
        out.append((entry.name, entry.name, st))
        if stat.S_ISDIR(st.st_mode):
            walk(entry.name, entry.name)
    return out


def _file_sha256(path: bytes) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def _fingerprint(root: StoreRoot, walked: Iterable[tuple[bytes, bytes, os.stat_result]],
                 links: dict[str, str]) -> str:
    h = hashlib.sha256(_frame(os.fsencode(root.prefix)))
    for name, target in links.items():
        h.update(_frame(os.fsencode(name)) + _frame(os.fsencode(target)))
    for _item, rel, st in walked:
        h.update(_frame(rel) + b"%d %d %o %d %d %d\0" % (
            st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return h.hexdigest()


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def compute(root: StoreRoot) -> tuple[Manifest, str]:
    """The root's manifest (every byte read) and a fingerprint of its tree's metadata."""
    store = os.fsencode(root.store_dir)
    try:
        links = dict(root.profile_links)
        walked = _walk(store)
        files = [os.path.join(store, rel) for _item, rel, st in walked
                 if stat.S_ISREG(st.st_mode)]
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            hashes = dict(zip(files, pool.map(_file_sha256, files, chunksize=16), strict=True))
        per_item: dict[bytes, Any] = {}
        for item, rel, st in walked:
            kind = _kind(st)
            if kind == _KIND_LINK:
                payload = os.readlink(os.path.join(store, rel))
            elif kind in (_KIND_FILE, _KIND_EXE):
                payload = hashes[os.path.join(store, rel)]
            else:
                payload = b""
            h = per_item.get(item)
            if h is None:
                h = per_item[item] = hashlib.sha256(_frame(FORMAT.encode()))
            h.update(_frame(rel) + _frame(kind) + _frame(payload))
    except OSError as exc:
        raise StoreError(f"cannot read {exc.filename or root.store_dir} to compute the "
                         f"digest of {root.path}: {exc.strerror or exc}") from None
    items = {os.fsdecode(name): h.hexdigest() for name, h in per_item.items()}
    return Manifest(root.prefix, links, items), _fingerprint(root, walked, links)


def fingerprint(root: StoreRoot) -> str:
    """A digest of the tree's metadata only (no file is read): cheap, changes on any change."""
    try:
        return _fingerprint(root, _walk(os.fsencode(root.store_dir)), dict(root.profile_links))
    except OSError as exc:
        raise StoreError(f"cannot read {exc.filename or root.store_dir}: "
                         f"{exc.strerror or exc}") from None


# -- stamps -----------------------------------------------------------------------------------


def _stamp_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nbsandbox", "verified")


def _stamp_path(root: StoreRoot) -> str:
    key = hashlib.sha256(os.fsencode(root.path)).hexdigest()[:40]
    return os.path.join(_stamp_dir(), key + ".json")


def _read_stamp(root: StoreRoot) -> dict[str, str] | None:
    try:
        with open(_stamp_path(root), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("root") == os.fspath(root.path) else None


def _write_stamp(root: StoreRoot, digest: str, print_: str) -> None:
    path = _stamp_path(root)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".stamp-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"root": os.fspath(root.path), "digest": digest, "fingerprint": print_}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # no writable cache: nothing is remembered, every check digests again


def remember(root: StoreRoot, digest: str, print_: str) -> None:
    """Record that ``root``, whose tree has fingerprint ``print_``, has ``digest``."""
    _write_stamp(root, digest, print_)


def current_digest(root: StoreRoot) -> str:
    """The root's digest: from its stamp when the tree is unchanged, else computed (and
    stamped)."""
    stamp = _read_stamp(root)
    if stamp is not None and is_digest(stamp.get("digest")) \
            and fingerprint(root) == stamp.get("fingerprint"):
        return stamp["digest"]
    manifest, print_ = compute(root)
    digest = manifest.digest
    _write_stamp(root, digest, print_)
    return digest


def check(root: StoreRoot, expected: str, *, reference: Manifest | None = None,
          what: str | None = None) -> None:
    """Raise :class:`IdentityMismatch` unless ``root``'s content has digest ``expected``.

    Cheap when the root was checked before and has not changed since (a stamp).
    The error names the first item that differs, from ``reference`` or the manifest in
    the root's ``pack.json`` when either belongs to ``expected``.
    """
    stamp = _read_stamp(root)
    if stamp is not None and stamp.get("digest") == expected \
            and fingerprint(root) == stamp.get("fingerprint"):
        return
    manifest, print_ = compute(root)
    if manifest.digest == expected:
        _write_stamp(root, expected, print_)
        return
    raise IdentityMismatch(mismatch_message(root, expected, manifest, reference, what))


def mismatch_message(root: StoreRoot, expected: str, actual: Manifest,
                     reference: Manifest | None = None, what: str | None = None) -> str:
    """One line: which root, which digest was expected, and what differs first."""
    candidates = [reference]
    if root.metadata is not None and root.metadata.manifest is not None:
        candidates.append(root.metadata.manifest)
    detail = None
    for candidate in candidates:
        if candidate is not None and candidate.digest == expected:
            detail = candidate.first_difference(actual)
            break
    if detail is None:
        detail = "no manifest of the expected content is at hand to name the item"
    name = what or f"the pack at {root.path}"
    return (f"{name} does not match its digest {expected[:16]}... (it has "
            f"{actual.digest[:16]}...): {detail}; the pack was changed or damaged, get it "
            "again")
