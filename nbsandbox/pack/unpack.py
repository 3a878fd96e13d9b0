"""Safe extraction of packs (ours and ``guix pack`` tarballs).

Nothing is ever written outside DEST, whatever the archive holds:

- entries with absolute names or ``..`` components are refused;
- device files and fifos are refused;
- a hard link must point to a regular file extracted earlier;
- symlinks are created as they are (Guix uses absolute targets such as
  ``/gnu/store/...``: they resolve in the sandbox, not on the host) but never
  followed: an entry whose path goes through a symlink is refused, and files
  are opened with ``O_NOFOLLOW | O_EXCL``.

Extraction happens in a temporary directory beside DEST, which is renamed to
DEST at the end; on any error or interrupt it is removed, so DEST is either
complete or absent.  Modes are normalized (0755 for directories and
executables, 0644 otherwise: no setuid, setgid or sticky bit) and mtimes
kept, which keeps the timestamp-checked ``.pyc`` files of Guix packs valid.
"""

from __future__ import annotations

import errno
import lzma
import os
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

from nbsandbox import identity
from nbsandbox.errors import PackError, StoreError
from nbsandbox.pack.archive import normal_mode
from nbsandbox.pack.layout import remove_tree
from nbsandbox.store import StoreRoot

_CHUNK = 1 << 20


class _Refused(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"entry {name!r} {reason}")


def _clean_name(raw: str) -> list[str]:
    """Path components of an archive name; refuse absolute and ``..`` names."""
    if raw.startswith("/"):
        raise _Refused(raw, "has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Refused(raw, "has a '..' component and would leave the destination")
    if any("\0" in p for p in parts):
        raise _Refused(raw, "has a NUL byte in its name")
    return parts


class _Extractor:
    def __init__(self, top: Path) -> None:
        self.top = os.fspath(top)
        self.dirs: dict[str, float] = {}
        self.files = 0
        self.bytes = 0

    def _parent(self, name: str, parts: list[str], *, create: bool = True) -> str:
        """Host path of the entry's parent, creating real directories; never through a link."""
        current = self.top
        for i, part in enumerate(parts[:-1]):
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                if not create:
                    raise _Refused(name, "points to a path that is not in the archive") from None
                os.mkdir(current, 0o700)
                self.dirs.setdefault("/".join(parts[: i + 1]), 0.0)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise _Refused(name, f"goes through the symlink {'/'.join(parts[: i + 1])!r}")
            if not stat.S_ISDIR(st.st_mode):
                raise _Refused(name, f"goes through the non-directory {'/'.join(parts[: i + 1])!r}")
        return current

    def _make_room(self, name: str, path: str, is_dir: bool) -> bool:
        """Remove an earlier non-directory at ``path``; True if a directory is already there."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if not is_dir:
                raise _Refused(name, "would replace a directory")
            return True
        if is_dir:
            raise _Refused(name, "is a directory where a file was extracted")
        os.unlink(path)
        return False

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = member.name
        parts = _clean_name(name)
        if not parts:
            if member.isdir():
                return
            raise _Refused(name, "has an empty name")
        if member.ischr() or member.isblk():
            raise _Refused(name, "is a device file")
        if member.isfifo():
            raise _Refused(name, "is a fifo")
        parent = self._parent(name, parts)
        path = os.path.join(parent, parts[-1])
        rel = "/".join(parts)
        mtime = _mtime(member)
        if member.isdir():
            if not self._make_room(name, path, True):
                os.mkdir(path, 0o700)
            self.dirs[rel] = mtime
        elif member.isreg():
            self._make_room(name, path, False)
            self._write(path, member, tar)
            os.utime(path, (mtime, mtime))
            self.files += 1
        elif member.issym():
            self._make_room(name, path, False)
            os.symlink(member.linkname, path)
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        elif member.islnk():
            try:
                target_parts = _clean_name(member.linkname)
            except _Refused:
                raise _Refused(name, f"is a hard link to {member.linkname!r}, outside the "
                               "destination") from None
            if not target_parts:
                raise _Refused(name, "is a hard link without a target")
            target = os.path.join(self._parent(name, target_parts, create=False),
                                  target_parts[-1])
            try:
                st = os.lstat(target)
            except FileNotFoundError:
                raise _Refused(name, f"is a hard link to {member.linkname!r}, which is not in "
                               "the archive before it") from None
            if not stat.S_ISREG(st.st_mode):
                raise _Refused(name, f"is a hard link to the non-file {member.linkname!r}")
            self._make_room(name, path, False)
            os.link(target, path, follow_symlinks=False)
            self.files += 1
        else:
            raise _Refused(name, f"has an unsupported type {member.type!r}")

    def _write(self, path: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        src = tar.extractfile(member)
        if src is None:
            raise _Refused(member.name, "has no data")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    self.bytes += len(chunk)
            os.fchmod(fd, normal_mode(member.mode | stat.S_IFREG))
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Give directories their final mode and mtime, deepest first."""
        for rel in sorted(self.dirs, key=lambda r: r.count("/"), reverse=True):
            path = os.path.join(self.top, rel)
            os.chmod(path, 0o755)
            if self.dirs[rel]:
                os.utime(path, (self.dirs[rel], self.dirs[rel]))


def _mtime(member: tarfile.TarInfo) -> float:
    try:
        value = float(member.mtime)
    except (TypeError, ValueError):
        return 0.0
    return value if 0 <= value < 2**33 else 0.0


def _check_dest(dest: Path) -> None:
    if dest.is_symlink():
        raise PackError(f"{dest} is a symlink; give a new directory as the destination")
    if dest.exists():
        if not dest.is_dir():
            raise PackError(f"{dest} exists and is not a directory; give a new directory")
        if any(dest.iterdir()):
            raise PackError(f"{dest} is not empty; give a new or empty directory")
    elif not dest.parent.is_dir():
        raise PackError(f"the parent of {dest} does not exist; create {dest.parent} first")


def _refuse_linked_store(pack: Path, top: Path, store: Path) -> None:
    """Refuse a store directory reached through a symlink (``gnu/store -> /home/me``):
    making it read-only would change files outside the destination."""
    current = top
    for part in store.relative_to(top).parts:
        current = current / part
        if current.is_symlink() or not current.is_dir():
            rel = current.relative_to(top).as_posix()
            raise PackError(f"refusing to unpack {pack}: its store directory goes through the "
                            f"symlink {rel!r}; the archive is unsafe, do not use it")


def make_read_only(top: Path) -> None:
    """Take away write permission below ``top``, as on a real store.

    Engines that cannot mount the store read-only (``proot``, ``fakechroot``)
    then still refuse writes into it.  ``chmod -R u+w`` undoes it.
    """
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o222)
        os.chmod(dirpath, 0o555)


def unpack(pack: str | os.PathLike[str], dest: str | os.PathLike[str],
           progress: Callable[[str], None] | None = None) -> StoreRoot:
    """Extract the pack tarball ``pack`` into ``dest`` (new or empty) and open it.

    Accepts ``.tar.gz``, ``.tar.xz``, ``.tar.bz2`` and plain ``.tar``.
    Raises :class:`PackError` (one line) for unsafe, damaged or foreign
    archives; then nothing is left behind.
    """
    pack = Path(os.path.expanduser(os.fspath(pack))).absolute()
    dest = Path(os.path.abspath(os.path.expanduser(os.fspath(dest))))
    if not pack.is_file():
        raise PackError(f"{pack} is not a file; give a pack tarball (.tar.gz, .tar.xz or .tar)")
    _check_dest(dest)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
    except OSError as exc:
        raise PackError(f"cannot create a directory in {dest.parent}: {exc.strerror}; "
                        "choose a destination where you can write") from None
    try:
        extractor = _Extractor(tmp)
        try:
            try:
                tar = tarfile.open(pack, "r:*")  # noqa: SIM115 -- closed just below
            except tarfile.ReadError:
                raise PackError(f"{pack} is not a .tar, .tar.gz, .tar.xz or .tar.bz2 archive, or "
                                "it is damaged; download or build it again") from None
            with tar:
                for member in tar:
                    extractor.add(member, tar)
                # Read the compressed stream to its end, so that its checksum is verified.
                while tar.fileobj is not None and tar.fileobj.read(_CHUNK):
                    pass
        except _Refused as exc:
            raise PackError(f"refusing to unpack {pack}: {exc}; the archive is unsafe, "
                            "do not use it") from None
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the destination's file system, not the archive
            detail = str(exc) or type(exc).__name__
            raise PackError(f"cannot unpack {pack}: {detail}; is it a complete .tar, .tar.gz "
                            "or .tar.xz file? Download or build it again") from None
        extractor.finish()
        try:
            root = StoreRoot.open(tmp)
            root.validate()
        except StoreError as exc:
            detail = str(exc).replace(os.fspath(tmp), os.fspath(dest))
            raise PackError(f"{pack} is not a usable pack: {detail}") from None
        _refuse_linked_store(pack, tmp, root.store_dir)
        make_read_only(root.store_dir)
        stamp = _check_identity(pack, root, dest)
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    except OSError as exc:
        remove_tree(tmp)
        hint = (f"check free space and permissions in {dest.parent}"
                if exc.errno != errno.ENAMETOOLONG else
                "a name or path in the archive is longer than this system allows, so it "
                "cannot be unpacked here")
        raise PackError(f"cannot unpack {pack} into {dest}: {exc.strerror or exc}; "
                        f"{hint}") from None
    except BaseException:
        remove_tree(tmp)
        raise
    unpacked = StoreRoot.open(dest)
    if stamp is not None:
        identity.remember(unpacked, *stamp)
    if progress is not None:
        progress(f"unpack: {extractor.files} files, {extractor.bytes / 1e6:.1f} MB into {dest}")
    return unpacked


def _check_identity(pack: Path, root: StoreRoot, dest: Path) -> tuple[str, str] | None:
    """Check the unpacked tree against the digest its ``pack.json`` records;
    (digest, fingerprint) to remember, or None when the pack records none."""
    recorded = root.metadata.digest if root.metadata is not None else None
    if recorded is None:
        return None
    manifest, fingerprint = identity.compute(root)
    if manifest.digest != recorded:
        detail = identity.mismatch_message(root, recorded, manifest, what=str(pack))
        raise PackError(detail.replace(os.fspath(root.path), os.fspath(dest)))
    return recorded, fingerprint
