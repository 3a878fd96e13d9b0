"""Fuzz targets for nbsandbox's readers of untrusted bytes, usable with or without atheris.

* ``tar-bytes``: arbitrary bytes (and mutated real tarballs) given to
  :func:`nbsandbox.pack.unpack.unpack`;
* ``tar-struct``: the bytes drive the building of a tarball (entry types, names made of
  ``..``, ``/``, store-like and non-UTF-8 components, link targets inside and outside),
  which is then unpacked -- this reaches the traversal checks far more often than
  mutated compressed bytes do;
* ``elf``: arbitrary bytes (and mutated real ELF files) given to
  :func:`nbsandbox.elf.read_elf` and :func:`nbsandbox.elf.parse_shebang`.

The contract each target checks (a violation raises :class:`Finding`, any other
exception escapes as itself -- both are crashes for the fuzzer):

* the tarball reader ends in a :class:`~nbsandbox.errors.PackError` of one line, and
  then the destination and its temporary directory are gone; or it succeeds, and
  everything it wrote is inside the destination;  nothing outside it (a sentinel
  directory beside it, the destination's parent) ever changes;
* the ELF reader returns an :class:`~nbsandbox.elf.ElfInfo` or raises an
  :class:`~nbsandbox.errors.ElfError` of one line; ``parse_shebang`` returns a
  :class:`~nbsandbox.elf.Shebang` or ``None``.

:func:`mutate` and :func:`run_campaign` are a small seeded mutation fuzzer, used in CI
(deterministic, no dependency) and when atheris is not installed.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nbsandbox.elf import ElfInfo, Shebang, parse_shebang, read_elf
from nbsandbox.errors import ElfError, PackError
from nbsandbox.pack.unpack import unpack

TARGETS = ("tar-bytes", "tar-struct", "elf")
H = "a" * 32


class Finding(AssertionError):
    """A reader broke its contract (a write outside DEST, a multi-line error...)."""


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise Finding(what)


# -- tarballs ----------------------------------------------------------------------------------


def _snapshot(top: Path) -> dict[bytes, tuple[int, int, bytes]]:
    out: dict[bytes, tuple[int, int, bytes]] = {}
    for dirpath, dirs, files in os.walk(os.fsencode(top)):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else b""
            out[p] = (st.st_mode, st.st_size, link)
    return out


def _remove(path: Path) -> None:
    if not os.path.lexists(path):
        return
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path)


class TarTarget:
    """Unpack one input into ``work/parent/dest``, beside a sentinel ``work/outside``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.parent = work / "parent"
        self.outside = work / "outside"
        self.pack = work / "input.tar"
        for d in (self.parent, self.outside, self.outside / "dir"):
            d.mkdir(parents=True, exist_ok=True)
        (self.outside / "victim").write_text("untouched\n")
        self.dest = self.parent / "dest"
        self.expected_outside = _snapshot(self.outside)
        self.stats = {"ok": 0, "refused": 0}

    def __call__(self, data: bytes) -> None:
        self.pack.write_bytes(data)
        try:
            unpack(self.pack, self.dest)
            outcome = "ok"
        except PackError as exc:
            outcome = "refused"
            _check("\n" not in str(exc), f"multi-line PackError: {exc!r}")
        try:
            listing = sorted(os.listdir(self.parent))
            expected = ["dest"] if outcome == "ok" else []
            _check(listing == expected, f"{outcome}: the destination's parent holds {listing}")
            _check(_snapshot(self.outside) == self.expected_outside,
                   "a file outside the destination changed")
            _check(sorted(os.listdir(self.work)) == ["input.tar", "outside", "parent"],
                   f"written beside the destination: {sorted(os.listdir(self.work))}")
        finally:
            _remove(self.dest)
            for name in os.listdir(self.parent):  # leftovers of a broken run: clean for the next
                _remove(self.parent / name)
        self.stats[outcome] += 1


def tar_entries_seed() -> list[tuple[tarfile.TarInfo, bytes]]:
    """A guix-pack-like little store: directories, a script, a hard link, profile links."""
    item = f"gnu/store/{H}-hello-1.0"
    profile = f"gnu/store/{'p' * 32}-profile"

    def e(name: str, kind: str = "file", data: bytes = b"", target: str = "",
          mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
        info = tarfile.TarInfo(name)
        info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                     "hard": tarfile.LNKTYPE}[kind]
        info.mode, info.mtime, info.linkname = mode, 1, target
        info.size = len(data) if kind == "file" else 0
        return info, data

    return [
        e("./", "dir", mode=0o755), e("./gnu/store", "dir", mode=0o555),
        e(f"./{item}/bin/hello", data=b"#!/gnu/store/x-bash/bin/sh\necho hi\n", mode=0o4555),
        e(f"./{item}/share/a", data=b"same\n"), e(f"./{item}/share/b", "hard",
                                                  target=f"./{item}/share/a"),
        e(f"./{profile}/bin/hello", "sym", target=f"/{item}/bin/hello"),
        e("./bin", "sym", target=f"{profile}/bin"),
    ]


def write_tar(entries: Iterable[tuple[tarfile.TarInfo, bytes]], mode: str = "w",
              fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def tar_seeds() -> list[bytes]:
    entries = tar_entries_seed()
    return [write_tar(entries), write_tar(entries, fmt=tarfile.PAX_FORMAT),
            write_tar(entries, fmt=tarfile.USTAR_FORMAT), write_tar(entries, "w:gz"),
            write_tar(entries, "w:xz"), write_tar(entries[:3], "w:bz2")]


class Bytes:
    """Consumes an input's bytes as small choices (zeros when exhausted)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def pick(self, options):  # type: ignore[no-untyped-def]
        return options[self.byte() % len(options)]

    def blob(self, limit: int) -> bytes:
        n = self.byte() % (limit + 1)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    @property
    def left(self) -> bool:
        return self.pos < len(self.data)


def structured_tar(data: bytes, outside: Path) -> bytes | None:
    """A tarball built from ``data``'s choices; ``None`` when tarfile refuses to write it."""
    src = Bytes(data)
    parts = ["gnu", "store", f"{H}-x", "bin", "..", ".", "", "dest", "outside", "l",
             "d" * 100, os.fsdecode(b"caf\xe9"), "a\nb", "-", "~", "x\\y", "dest.unpack-x"]
    targets = ["..", "../..", "../outside", "../../outside/victim", str(outside),
               str(outside / "victim"), "/etc/passwd", "/", f"/gnu/store/{H}-x/bin",
               "gnu/store", "l", "l/x", ".", ""]
    kinds = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
             tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"x"]
    entries = []
    for _ in range(1 + src.byte() % 12):
        name = "/".join(src.pick(parts) for _ in range(1 + src.byte() % 5))
        if src.byte() % 8 == 0:
            name = "/" + name
        info = tarfile.TarInfo(name)
        info.type = src.pick(kinds)
        info.mode = src.pick([0o644, 0o755, 0o4755, 0o000, 0o7777, 0o555])
        info.mtime = src.pick([1, 0, -1, 2**40])
        body = b""
        if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            info.linkname = "/".join(src.pick(targets) for _ in range(1 + src.byte() % 2))
        elif info.type in (tarfile.REGTYPE, tarfile.CONTTYPE):
            body = src.blob(64)
        info.size = len(body)
        entries.append((info, body))
        if not src.left:
            break
    fmt = src.pick([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
    try:
        return write_tar(entries, fmt=fmt)
    except (ValueError, OverflowError, tarfile.TarError, UnicodeError):
        return None


class StructuredTarTarget(TarTarget):
    def __call__(self, data: bytes) -> None:
        built = structured_tar(data, self.outside)
        if built is not None:
            super().__call__(built)


# -- ELF files ---------------------------------------------------------------------------------


class ElfTarget:
    def __init__(self, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.path = work / "input.elf"
        self.stats = {"ok": 0, "refused": 0}

    def __call__(self, data: bytes) -> None:
        shebang = parse_shebang(data)
        _check(shebang is None or isinstance(shebang, Shebang), f"parse_shebang: {shebang!r}")
        self.path.write_bytes(data)
        try:
            info = read_elf(self.path)
        except ElfError as exc:
            _check("\n" not in str(exc), f"multi-line ElfError: {exc!r}")
            self.stats["refused"] += 1
            return
        _check(isinstance(info, ElfInfo), f"read_elf returned {info!r}")
        self.stats["ok"] += 1


def elf_seeds() -> list[bytes]:
    seeds = [b"#!/gnu/store/x-bash/bin/sh -e\n", b"#! /usr/bin/env python3\n", b"\x7fELF"]
    for path in ("/bin/true", "/bin/sh"):
        try:
            seeds.append(Path(os.path.realpath(path)).read_bytes()[:65536])
        except OSError:
            continue
    return seeds


def make_target(name: str, work: Path) -> Callable[[bytes], None]:
    if name == "tar-bytes":
        return TarTarget(work)
    if name == "tar-struct":
        return StructuredTarTarget(work)
    if name == "elf":
        return ElfTarget(work)
    raise ValueError(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")


def seeds(name: str) -> list[bytes]:
    if name == "tar-bytes":
        return tar_seeds()
    if name == "tar-struct":
        rng = random.Random(0)
        return [bytes(rng.randrange(256) for _ in range(64)) for _ in range(8)]
    return elf_seeds()


# -- a small mutation fuzzer (CI, and when atheris is missing) ----------------------------------

_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                b"..", b"/", b"../", b"\x7fELF", b"#!", b"ustar", b"ustar  \x00", b"\n"]


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """One to four random edits of ``data`` (bit flips, byte sets, inserts, deletions,
    interesting values, splices with another seed, truncation)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3 and buf:
            del buf[pos:pos + rng.randint(1, 64)]
        elif op == 4:
            value = rng.choice(_INTERESTING)
            buf[pos:pos + len(value)] = value
        elif op == 5 and pool:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            buf[pos:] = other[start:start + rng.randint(1, 512)]
        elif op == 6:
            del buf[pos:]
        elif op == 7 and len(buf) > 8:  # 512-byte tar headers: hit a header field
            block = rng.randrange(max(1, len(buf) // 512)) * 512
            i = min(len(buf) - 1, block + rng.randrange(512))
            buf[i] = rng.choice([0, 0x30, 0x37, 0xff, rng.randrange(256)])
    return bytes(buf)


@dataclass
class Report:
    target: str
    inputs: int
    seconds: float
    stats: dict[str, int]
    finding: str | None = None
    crash_file: Path | None = None


def run_campaign(name: str, runs: int, work: Path, *, seed: int = 0,
                 crashes: Path | None = None) -> Report:
    """``runs`` inputs for target ``name``: the seeds, then mutations of seeds and of
    earlier inputs.  Stops at the first finding (saved in ``crashes``)."""
    target = make_target(name, work / name)
    rng = random.Random(seed)
    pool = seeds(name)
    started = time.monotonic()
    done = 0
    for i in range(runs):
        data = pool[i] if i < len(pool) else mutate(rng.choice(pool), rng, pool)
        try:
            target(data)
        except Exception as exc:  # every other exception is a finding
            crash = None
            if crashes is not None:
                crashes.mkdir(parents=True, exist_ok=True)
                crash = crashes / f"{name}-{i}"
                crash.write_bytes(data)
            return Report(name, done + 1, time.monotonic() - started,
                          dict(target.stats),  # type: ignore[attr-defined]
                          f"{type(exc).__name__}: {exc}", crash)
        done += 1
        if len(pool) < 256 and rng.random() < 0.05:
            pool.append(data)
    return Report(name, done, time.monotonic() - started,
                  dict(target.stats))  # type: ignore[attr-defined]
