"""Store roots: directories that hold a relocated store.

A *store root* R holds a store that was built for the absolute *prefix* P
(``/gnu/store``, ``/nix/store``, ...) at ``R/P``, for example
``~/packs/py/gnu/store/<hash>-python-3.11.7``.  It may also hold profile
links at its top (``R/bin -> gnu/store/<hash>-profile/bin``), as the tarballs
of ``guix pack -RR -S /bin=bin`` and of ``nbsandbox pack`` do.

:class:`StoreRoot` finds the prefix, lists items, validates the root, maps
paths between the sandbox's view and the host, and computes an identity
digest that depends on the content only, not on where R is.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from nbsandbox.errors import StoreError
from nbsandbox.identity import Manifest

#: Prefixes looked for, in order, when neither the user nor the pack says.
KNOWN_PREFIXES = ("/gnu/store", "/nix/store")

#: Metadata that ``nbsandbox pack`` records inside a root, relative to R.
METADATA = ".nbsandbox/pack.json"
METADATA_FORMAT = 1

#: A store item name: ``<hash>-<name>``; Guix and Nix use 32 base-32 characters.
ITEM_RE = re.compile(r"^[0-9a-z]{32}-[^/]+$")

_MAX_SYMLINKS = 40  # as Linux's path resolution


@dataclass(frozen=True)
class PackMetadata:
    """What a pack says about itself (all optional for foreign packs)."""

    prefix: str
    profile: str | None = None
    python: str | None = None
    programs: tuple[str, ...] = ()
    manifest: Manifest | None = None
    """What the pack's digest covers, item by item (see :mod:`nbsandbox.identity`)."""

    @property
    def digest(self) -> str | None:
        """The pack's recorded identity, if it has one."""
        return self.manifest.digest if self.manifest is not None else None

    def to_json(self) -> str:
        data: dict[str, object] = {
            "format": METADATA_FORMAT,
            "prefix": self.prefix,
            "profile": self.profile,
            "python": self.python,
            "programs": list(self.programs),
        }
        if self.manifest is not None:
            data["digest"] = self.manifest.digest
            data["manifest"] = self.manifest.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, root: Path) -> PackMetadata | None:
        path = root / METADATA
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            if data.get("format") != METADATA_FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            prefix = data["prefix"]
            if not isinstance(prefix, str) or not _is_clean_abs(prefix):
                raise ValueError("prefix")
            manifest = None
            if "manifest" in data or "digest" in data:
                manifest = Manifest.from_dict(data.get("manifest"))
                if manifest is None or manifest.digest != data.get("digest"):
                    raise ValueError("its digest and manifest do not agree")
            return cls(
                prefix=prefix,
                profile=data.get("profile") or None,
                python=data.get("python") or None,
                programs=tuple(data.get("programs") or ()),
                manifest=manifest,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(
                f"{path} is not valid pack metadata ({exc}); re-create the pack or delete that file"
            ) from None


def _is_clean_abs(prefix: str) -> bool:
    return prefix.startswith("/") and prefix != "/" and os.path.normpath(prefix) == prefix


def normalize_prefix(prefix: str) -> str:
    """Check a user-given prefix: absolute, normalized, not ``/``."""
    if not _is_clean_abs(prefix):
        raise StoreError(
            f"store prefix {prefix!r} must be an absolute, normalized path other than '/', "
            "e.g. /gnu/store"
        )
    return prefix


class StoreRoot:
    """A directory R that holds a store built for ``prefix`` at ``R/prefix``."""

    def __init__(self, path: Path, prefix: str, metadata: PackMetadata | None = None) -> None:
        self.path = path
        self.prefix = prefix
        self.metadata = metadata

    # -- construction ------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], prefix: str | None = None) -> StoreRoot:
        """Open the root at ``path``; find its prefix unless ``prefix`` is given.

        Raises :class:`StoreError` with a one-line fix when ``path`` is not a
        directory or holds no store.
        """
        raw = os.path.expanduser(os.fspath(path))
        root = Path(os.path.abspath(raw))
        try:
            if not root.exists():
                raise StoreError(f"store root {root} does not exist; unpack a pack there first")
            if not root.is_dir():
                raise StoreError(f"store root {root} is not a directory")
            root = root.resolve()
        except OSError as exc:  # e.g. a path longer than PATH_MAX
            raise StoreError(f"cannot use store root {root}: {exc.strerror or exc}; "
                             "give the path of an unpacked pack") from None
        metadata = PackMetadata.read(root)
        if prefix is not None:
            prefix = normalize_prefix(prefix)
        elif metadata is not None:
            prefix = metadata.prefix
        else:
            prefix = _guess_prefix(root)
        store = root / prefix.lstrip("/")
        if not store.is_dir():
            raise StoreError(
                f"no store at {store}: {root} does not hold a store for prefix {prefix}; "
                "check the root or pass --prefix"
            )
        return cls(root, prefix, metadata)

    def __repr__(self) -> str:
        return f"StoreRoot({str(self.path)!r}, prefix={self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, StoreRoot)
            and other.path == self.path
            and other.prefix == self.prefix
        )

    def __hash__(self) -> int:
        return hash((self.path, self.prefix))

    # -- layout --------------------------------------------------------------

    @property
    def store_dir(self) -> Path:
        """The host directory that is seen as ``prefix`` in the sandbox."""
        return self.path / self.prefix.lstrip("/")

    def items(self) -> list[str]:
        """Names of the store items, sorted."""
        try:
            return sorted(e.name for e in os.scandir(self.store_dir) if not e.name.startswith("."))
        except OSError as exc:
            raise StoreError(f"cannot list store {self.store_dir}: {exc.strerror}") from None

    def present_on_host(self) -> bool:
        """Whether the host already has this store's items at the prefix itself.

        True when the root *is* the host's store, or when every item of the
        root exists under the host's prefix (item names carry a digest of
        their content, so same name means same content).
        """
        host = Path(self.prefix)
        try:
            if os.path.samefile(host, self.store_dir):
                return True
        except OSError:
            return False
        items = self.items()
        return bool(items) and all(os.path.lexists(host / item) for item in items)

    def in_store(self, path: str) -> bool:
        """Whether a sandbox path lies under the store prefix."""
        return path == self.prefix or path.startswith(self.prefix + "/")

    def to_host(self, path: str) -> Path:
        """Host location of a sandbox path; store paths map into the root, others are as is."""
        path = os.path.normpath(path)
        if self.in_store(path):
            return self.path / path.lstrip("/")
        return Path(path)

    def to_sandbox(self, host_path: str | os.PathLike[str]) -> str:
        """Sandbox view of a host path: the inverse of :meth:`to_host`."""
        p = os.path.normpath(os.fspath(host_path))
        store = os.fspath(self.store_dir)
        if p == store or p.startswith(store + "/"):
            return self.prefix + p[len(store):]
        return p

    def resolve(self, path: str) -> str:
        """Resolve symlinks in a sandbox path as the sandbox would see them.

        Absolute link targets under the prefix stay inside the root; the
        result is a sandbox path.  Raises :class:`StoreError` on loops.
        """
        parts = [p for p in path.split("/") if p]
        resolved = "/"
        followed = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                resolved = os.path.dirname(resolved)
                continue
            candidate = os.path.join(resolved, part)
            host = self.to_host(candidate)
            try:
                is_link = stat.S_ISLNK(os.lstat(host).st_mode)
            except OSError:
                is_link = False
            if not is_link:
                resolved = candidate
                continue
            followed += 1
            if followed > _MAX_SYMLINKS:
                raise StoreError(f"too many levels of symbolic links resolving {path}")
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = "/"
            parts = [p for p in target.split("/") if p] + parts
        return resolved

    # -- profile and programs ------------------------------------------------

    @cached_property
    def profile_links(self) -> dict[str, str]:
        """Top-level profile links of the root (``bin`` -> sandbox path of its target)."""
        links: dict[str, str] = {}
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            raise StoreError(f"cannot list {self.path}: {exc.strerror}") from None
        for entry in entries:
            if entry.is_symlink():
                target = os.readlink(entry.path)
                if not target.startswith("/"):
                    target = self.to_sandbox(os.path.normpath(os.path.join(self.path, target)))
                links[entry.name] = target
        return dict(sorted(links.items()))

    def profile_bin(self) -> str | None:
        """Sandbox path of the profile's ``bin`` directory, if the root has one."""
        target = self.profile_links.get("bin")
        if target is not None:
            return target
        if self.metadata and self.metadata.profile:
            return self.metadata.profile.rstrip("/") + "/bin"
        return None

    def find_program(self, name: str) -> str:
        """Sandbox path of a program given as a store path or a profile ``bin/`` name.

        The result is the path the program is run by (profile links are kept
        so that programs that look at their own name still work); it is
        guaranteed to exist inside the root.
        """
        if name.startswith("/"):
            path = os.path.normpath(name)
            if not self.in_store(path):
                raise StoreError(
                    f"{name} is not under the store prefix {self.prefix}; "
                    "give a store path or a program name from the root's bin/"
                )
            if not os.path.lexists(self.to_host(path)):
                raise StoreError(f"{name} does not exist in store root {self.path}")
            return path
        if "/" in name or name in ("", ".", ".."):
            raise StoreError(f"program {name!r} must be a store path or a bare name from bin/")
        bin_dir = self.profile_bin()
        if bin_dir is None:
            raise StoreError(
                f"store root {self.path} has no profile bin/; give the program's full store path"
            )
        candidate = self.resolve(bin_dir) + "/" + name
        if not os.path.lexists(self.to_host(candidate)):
            available = ", ".join(self.profile_programs()[:8]) or "none"
            raise StoreError(
                f"no program {name!r} in {bin_dir} of {self.path} (available: {available})"
            )
        return candidate

    def python(self) -> str:
        """Sandbox path of the root's Python: the pack's recorded one, else ``python3`` or
        ``python`` from its ``bin/``.  Used by ``%%sandbox --python`` and packed kernels."""
        if self.metadata is not None and self.metadata.python:
            return self.find_program(self.metadata.python)
        for name in ("python3", "python"):
            try:
                return self.find_program(name)
            except StoreError:
                continue
        raise StoreError(f"store root {self.path} has no Python: it has no python recorded in "
                         "its pack metadata and no python3 or python in its bin/")

    def profile_programs(self) -> list[str]:
        """Names in the profile's ``bin/``, the pack's main programs first."""
        bin_dir = self.profile_bin()
        if bin_dir is None:
            return []
        try:
            names = sorted(os.listdir(self.to_host(self.resolve(bin_dir))))
        except (OSError, StoreError):
            return []
        main = []
        if self.metadata:
            main = [os.path.basename(p) for p in (self.metadata.python, *self.metadata.programs)
                    if p]
        main += [n for n in ("python3", "python") if n in names]
        first = [n for n in dict.fromkeys(main) if n in names]
        return first + [n for n in names if n not in first]

    # -- validation ------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`StoreError` for an empty store or dangling profile links."""
        items = self.items()
        if not items:
            raise StoreError(
                f"the store {self.store_dir} is empty; the pack was not (fully) unpacked there"
            )
        for name, target in self.profile_links.items():
            if self.in_store(target):
                resolved = self.resolve(target)
                if not self.to_host(resolved).exists():
                    raise StoreError(
                        f"profile link {self.path / name} points to {target}, which is missing "
                        "from the store; the pack is incomplete: unpack it again"
                    )

    # -- identity ----------------------------------------------------------------

    def digest(self) -> str:
        """The root's identity: a SHA-256 of what programs can observe in it.

        Independent of where the root is, of timestamps and of ownership; it
        changes when any file's content, executable bit, name or link target
        changes.  Reads every file; :func:`nbsandbox.identity.current_digest`
        remembers it for an unchanged root.
        """
        from nbsandbox.identity import compute

        return compute(self)[0].digest


def _guess_prefix(root: Path) -> str:
    for prefix in KNOWN_PREFIXES:
        if (root / prefix.lstrip("/")).is_dir():
            return prefix
    found = _search_store_dir(root, depth=4)
    if found is not None:
        return "/" + found.relative_to(root).as_posix()
    raise StoreError(
        f"no store found under {root} (looked for gnu/store, nix/store and directories of "
        "<hash>-name items); pass the store's prefix with --prefix"
    )


def _search_store_dir(top: Path, depth: int) -> Path | None:
    """The shallowest directory under ``top`` whose entries look like store items."""
    level = [top]
    for _ in range(depth):
        nxt: list[Path] = []
        for d in level:
            try:
                entries = [e for e in os.scandir(d) if not e.name.startswith(".")]
            except OSError:
                continue
            if d != top and entries and all(ITEM_RE.match(e.name) for e in entries):
                return d
            nxt.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        level = sorted(nxt)
    return None
