"""Store items: what goes where, and how items are named.

A pack holds a few store items, grouped like Guix groups packages:

``glibc``
    the dynamic loader, every glibc library next to the host's ``libc.so.6``
    (``libc``, ``libm``, ``libpthread``, the NSS modules, ...) and glibc's
    gconv modules under ``lib/gconv``.
``libs``
    every other host library the packed ELF files need, flat in ``lib/``.
    One item rather than one per library origin: which distribution package
    a library comes from is not visible without that distribution's package
    database, and one directory keeps every RUNPATH short (each RUNPATH
    directory costs the loader a failed ``open`` per library it looks for).
``python``
    ``bin/python3.X``, the standard library, ``lib-dynload``, the
    environment's site-packages and its console scripts.
one item per ``--program``
    ``bin/NAME``.
``profile``
    ``bin/`` with links to the programs above (absolute store paths, as Guix's)
    and ``etc/profile``, a shell snippet setting ``GCONV_PATH`` to the glibc
    item's gconv modules.

Names are ``<digest>-<name>[-<version>]`` where the digest is 32 characters
of Nix's base-32 alphabet, computed from the item's *inputs*: its files'
content and modes, the names of the items it refers to, the prefix and the
tools that rewrite files.  The same input gives the same names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nbsandbox.elf import ElfInfo
from nbsandbox.errors import PackError

#: Bumped whenever the way items are built changes their content.
LAYOUT_VERSION = "nbsandbox-pack-layout-1"

#: Nix's base-32 alphabet (no e, o, u, t).
NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz"

DIR_MODE = 0o755
FILE_MODE = 0o644
EXEC_MODE = 0o755


def nix_base32(data: bytes) -> str:
    """Encode ``data`` with Nix's alphabet, 5 bits per character (20 bytes -> 32 chars)."""
    value = int.from_bytes(data, "big")
    length = (len(data) * 8 + 4) // 5
    chars = []
    for _ in range(length):
        chars.append(NIX_BASE32[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


@dataclass(frozen=True)
class Location:
    """A file inside a (not yet named) item."""

    item: str
    rel: str


@dataclass
class ShebangRewrite:
    """Replace a script's ``#!`` line by one that runs ``interpreter``.

    ``skip_lines`` more lines after the first are dropped (pip's
    ``#!/bin/sh`` + ``'''exec' ...`` preamble is two lines).
    """

    interpreter: Location
    argument: str | None = None
    skip_lines: int = 0


@dataclass
class Entry:
    """One file or symlink of an item."""

    rel: str
    source: str | None = None
    """Host file the content comes from (regular files)."""
    target: str | None = None
    """Link target (symlinks): relative, or a store path."""
    data: bytes | None = None
    """Content of a file written by the packer itself."""
    executable: bool = False
    elf: ElfInfo | None = None
    loaded_from: str | None = None
    """The host path the loader sees this file at (``$ORIGIN`` is its directory)."""
    inherited_rpath: tuple[str, ...] = ()
    shebang: ShebangRewrite | None = None
    needs: list[tuple[str, Location | None]] = field(default_factory=list)
    """For ELF files: each ``DT_NEEDED`` and where it is in the pack (None: not found)."""
    sha256: str | None = None

    @property
    def is_link(self) -> bool:
        return self.target is not None


class Item:
    """A store item being assembled: ``key`` is how other items refer to it."""

    def __init__(self, key: str, name: str, version: str | None = None) -> None:
        self.key = key
        self.name = name
        self.version = version
        self.entries: dict[str, Entry] = {}
        self.refs: set[str] = set()
        self.store_name: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}" if self.version else self.name

    def __repr__(self) -> str:
        return f"Item({self.key!r}, {len(self.entries)} entries)"

    def add_file(self, rel: str, source: str, *, executable: bool | None = None) -> Entry:
        """Add a file copied from ``source``; a second add of the same ``rel`` keeps the first."""
        rel = _clean_rel(rel)
        existing = self.entries.get(rel)
        if existing is not None:
            return existing
        if executable is None:
            executable = bool(os.stat(source).st_mode & 0o111)
        entry = Entry(rel, source=source, executable=executable, loaded_from=source)
        self.entries[rel] = entry
        return entry

    def add_data(self, rel: str, data: bytes) -> Entry:
        """Add a file with the given content (written by the packer, not copied)."""
        rel = _clean_rel(rel)
        entry = Entry(rel, data=data)
        self.entries[rel] = entry
        return entry

    def add_symlink(self, rel: str, target: str, *, absolute: bool = False) -> Entry:
        """Add a symlink; absolute targets only when asked for (store paths)."""
        rel = _clean_rel(rel)
        if target.startswith("/") and not absolute:
            raise ValueError(f"absolute link target {target} in item {self.key}")
        existing = self.entries.get(rel)
        if existing is not None:
            return existing
        entry = Entry(rel, target=target)
        self.entries[rel] = entry
        return entry

    def has_dir(self, rel: str) -> bool:
        """Whether ``rel`` is a directory of this item (some entry lies below it)."""
        if rel in ("", "."):
            return True
        prefix = rel.rstrip("/") + "/"
        return any(r.startswith(prefix) for r in self.entries)


def _clean_rel(rel: str) -> str:
    norm = os.path.normpath(rel)
    if norm.startswith(("/", "..")) or norm == ".":
        raise ValueError(f"bad path {rel!r} inside an item")
    return norm


class Layout:
    """The items of one pack, by key, in the order they depend on each other."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: dict[str, Item] = {}

    def item(self, key: str, name: str | None = None, version: str | None = None) -> Item:
        if key not in self.items:
            self.items[key] = Item(key, name or key, version)
        return self.items[key]

    def store_path(self, loc: Location) -> str:
        """Sandbox path of a location (items must be named)."""
        name = self.items[loc.item].store_name
        if name is None:
            raise RuntimeError(f"item {loc.item} has no name yet")
        return f"{self.prefix}/{name}/{loc.rel}" if loc.rel else f"{self.prefix}/{name}"

    def store_dir(self, key: str) -> str:
        return self.store_path(Location(key, ""))

    # -- naming ----------------------------------------------------------------

    def name_items(self, tools: str) -> None:
        """Give every item its store name, dependencies first.

        Content hashes (``Entry.sha256``) must be filled in.  Items refer to
        each other through ``Item.refs``; a reference cycle between
        different items is a bug.
        """
        named: set[str] = set()
        visiting: set[str] = set()

        def visit(key: str) -> None:
            if key in named or self.items[key].store_name is not None:
                return
            if key in visiting:
                raise RuntimeError(f"items refer to each other in a cycle through {key}")
            visiting.add(key)
            item = self.items[key]
            for ref in sorted(item.refs - {key}):
                visit(ref)
            item.store_name = self._name(item, tools)
            visiting.discard(key)
            named.add(key)

        for key in sorted(self.items):
            visit(key)

    def _name(self, item: Item, tools: str) -> str:
        h = hashlib.sha256()

        def put(*parts: str) -> None:
            for part in parts:
                h.update(os.fsencode(part))
                h.update(b"\0")

        put(LAYOUT_VERSION, tools, self.prefix, item.label)
        for ref in sorted(item.refs - {item.key}):
            put("ref", self.items[ref].store_name or "")
        for rel in sorted(item.entries):
            e = item.entries[rel]
            if e.is_link:
                put("link", rel, e.target or "")
                continue
            if e.sha256 is None:
                raise RuntimeError(f"{item.key}/{rel} was not hashed")
            put("file", rel, "x" if e.executable else "-", e.sha256)
            if e.shebang is not None:
                put("shebang", e.shebang.interpreter.item, e.shebang.interpreter.rel,
                    e.shebang.argument or "", str(e.shebang.skip_lines))
        return f"{nix_base32(h.digest()[:20])}-{item.label}"

    # -- staging -------------------------------------------------------------------

    def stage(self, key: str, dest: Path) -> int:
        """Copy item ``key``'s files into ``dest`` (created), hashing them; bytes copied."""
        item = self.items[key]
        dest.mkdir(mode=DIR_MODE)
        total = 0
        made: set[str] = set()
        for rel in sorted(item.entries):
            entry = item.entries[rel]
            parent = os.path.dirname(rel)
            if parent and parent not in made:
                os.makedirs(dest / parent, mode=DIR_MODE, exist_ok=True)
                made.add(parent)
            path = dest / rel
            if entry.is_link:
                os.symlink(entry.target or "", path)
                continue
            if entry.data is not None:
                path.write_bytes(entry.data)
                entry.sha256, size = hashlib.sha256(entry.data).hexdigest(), len(entry.data)
            else:
                assert entry.source is not None
                entry.sha256, size = _copy_hashed(entry.source, path)
            os.chmod(path, EXEC_MODE if entry.executable else FILE_MODE)
            total += size
        return total


def _copy_hashed(source: str, dest: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as src, open(dest, "xb") as dst:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
                size += len(chunk)
    except OSError as exc:
        raise PackError(
            f"cannot copy {source}: {exc.strerror or exc}; check that it is readable"
        ) from None
    return h.hexdigest(), size


def remove_tree(path: Path) -> None:
    """Remove a staging tree, even with read-only directories in it."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return

    def retry(func, p, _exc):  # make the parent writable and retry once
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)
