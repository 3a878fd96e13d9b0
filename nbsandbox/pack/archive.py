"""Deterministic ``.tar.gz`` files and normalized trees.

The same tree gives the same bytes: entries sorted by name, directories
before what they hold, every mtime the same (``SOURCE_DATE_EPOCH`` or 1, as
Guix does), owner and group 0 with empty names, modes reduced to 0755 for
directories and executables and 0644 for other files (so no setuid, setgid
or sticky bit survives), symlinks 0777, no hard links; the gzip header has
mtime 0 and no file name.

Compression runs on every CPU: the stream is cut into blocks that are
deflated independently (each primed with the 32 KiB before it, so the ratio
barely changes) and joined with sync flushes into one ordinary gzip member,
as ``pigz`` does.  The bytes depend only on the input and zlib's version, not
on the number of CPUs.
"""

from __future__ import annotations

import os
import stat
import struct
import tarfile
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

DEFAULT_MTIME = 1
COMPRESS_LEVEL = 6
BLOCK_SIZE = 1 << 20
_WINDOW = 32 * 1024


def _deflate_block(data: bytes, dictionary: bytes, level: int) -> bytes:
    if dictionary:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)


class ParallelGzip:
    """A write-only file object producing one deterministic gzip member on ``raw``."""

    def __init__(self, raw: BinaryIO, level: int = COMPRESS_LEVEL,
                 workers: int | None = None) -> None:
        self.raw = raw
        self.level = level
        self.workers = workers or min(32, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=self.workers)
        self.pending: deque[Future[bytes]] = deque()
        self.buffer = bytearray()
        self.previous = b""
        self.crc = 0
        self.size = 0
        # gzip header: magic, deflate, no flags, mtime 0, xfl 0, OS "unknown".
        self.raw.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        while len(self.buffer) >= BLOCK_SIZE:
            self._submit(bytes(self.buffer[:BLOCK_SIZE]))
            del self.buffer[:BLOCK_SIZE]
        return len(data)

    def tell(self) -> int:
        return self.size

    def _submit(self, block: bytes) -> None:
        self.pending.append(self.pool.submit(_deflate_block, block, self.previous, self.level))
        self.previous = block[-_WINDOW:]
        while len(self.pending) > 2 * self.workers:
            self.raw.write(self.pending.popleft().result())

    def close(self) -> None:
        if self.buffer:
            self._submit(bytes(self.buffer))
            self.buffer.clear()
        while self.pending:
            self.raw.write(self.pending.popleft().result())
        self.pool.shutdown()
        self.raw.write(b"\x03\x00")  # an empty final block
        self.raw.write(struct.pack("<II", self.crc & 0xFFFFFFFF, self.size & 0xFFFFFFFF))

    def abort(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown()


def source_date_epoch() -> int:
    """``SOURCE_DATE_EPOCH`` when set to a valid time, else 1."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "")
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_MTIME
    return value if value >= 0 else DEFAULT_MTIME


def normal_mode(st_mode: int) -> int:
    if stat.S_ISDIR(st_mode):
        return 0o755
    if stat.S_ISLNK(st_mode):
        return 0o777
    return 0o755 if st_mode & 0o111 else 0o644


def walk_sorted(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under ``root``, in archive order."""

    def walk(rel_dir: str) -> Iterator[tuple[str, os.stat_result]]:
        directory = os.path.join(root, rel_dir) if rel_dir else os.fspath(root)
        for name in sorted(os.listdir(directory)):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.lstat(os.path.join(root, rel))
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                yield from walk(rel)

    yield from walk("")


def normalize_tree(root: Path, mtime: int | None = None) -> tuple[int, int]:
    """Give everything under ``root`` its normal mode (and ``mtime``); (files, bytes)."""
    files = size = 0
    for rel, st in walk_sorted(root):
        path = os.path.join(root, rel)
        if not stat.S_ISLNK(st.st_mode):
            mode = normal_mode(st.st_mode)
            if stat.S_IMODE(st.st_mode) != mode:
                os.chmod(path, mode)
        if stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
    if mtime is not None:
        # Children first, so setting a directory's time is not undone by its children.
        for rel, _st in sorted(walk_sorted(root), key=lambda e: e[0].count("/"), reverse=True):
            os.utime(os.path.join(root, rel), (mtime, mtime), follow_symlinks=False)
    return files, size


def write_tarball(root: Path, out: Path, mtime: int | None = None) -> int:
    """Write ``root``'s content as a deterministic gzip-compressed tar to ``out``.

    ``out`` is created (it must not exist).  Returns its size.
    """
    when = source_date_epoch() if mtime is None else mtime
    with open(out, "xb") as raw:
        gz = ParallelGzip(raw)
        try:
            _write_tar(root, gz, when)
        except BaseException:
            gz.abort()
            raise
        gz.close()
        raw.flush()
        os.fsync(raw.fileno())
    return out.stat().st_size


def write_tar(root: Path, out: BinaryIO, mtime: int | None = None) -> None:
    """Write ``root``'s content as a deterministic, uncompressed tar to ``out``."""
    _write_tar(root, out, source_date_epoch() if mtime is None else mtime)  # type: ignore[arg-type]


def _write_tar(root: Path, gz: ParallelGzip, when: int) -> None:
    with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[arg-type]
                      encoding="utf-8", errors="surrogateescape") as tar:
        first_link: dict[tuple[int, int], str] = {}
        for rel, st in walk_sorted(root):
            info = tarfile.TarInfo(rel)
            info.mtime = when
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = normal_mode(st.st_mode)
            path = os.path.join(root, rel)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) in first_link:
                info.type = tarfile.LNKTYPE  # the wrappers of bin/ are hard links
                info.linkname = first_link[(st.st_dev, st.st_ino)]
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    first_link[(st.st_dev, st.st_ino)] = rel
                info.type = tarfile.REGTYPE
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            # Anything else (sockets, fifos) never gets into a staging tree.
