"""Safe extraction of packs (nbsandbox.pack.unpack) and the archive writer."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zlib
from pathlib import Path

import pytest

from nbsandbox.errors import PackError
from nbsandbox.pack import unpack
from nbsandbox.pack.archive import BLOCK_SIZE, ParallelGzip, write_tarball
from nbsandbox.store import StoreRoot

H = "a" * 32
HP = "p" * 32
TOOL = f"gnu/store/{H}-hello-1.0"
PROFILE = f"gnu/store/{HP}-profile"


def entry(name: str, kind: str = "file", data: bytes = b"", *, target: str = "",
          mode: int | None = None, mtime: int = 1) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                 "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
                 "fifo": tarfile.FIFOTYPE}[kind]
    if kind in ("sym", "hard"):
        info.linkname = target
    info.size = len(data) if kind == "file" else 0
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    return info, data


def make_tar(path: Path, entries, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def guix_like_entries():
    """What a `guix pack -RR -S /bin=bin` tarball looks like: ./ names, read-only modes,
    mtime 1, absolute links into the store, hard links between identical files."""
    return [
        entry("./", "dir", mode=0o755),
        entry("./gnu", "dir", mode=0o555),
        entry("./gnu/store", "dir", mode=0o555),
        entry(f"./{TOOL}", "dir", mode=0o555),
        entry(f"./{TOOL}/bin", "dir", mode=0o555),
        entry(f"./{TOOL}/bin/hello", data=b"#!/gnu/store/x-bash/bin/sh\necho hi\n", mode=0o555),
        entry(f"./{TOOL}/share", "dir", mode=0o555),
        entry(f"./{TOOL}/share/a.txt", data=b"same\n", mode=0o444),
        entry(f"./{TOOL}/share/b.txt", "hard", target=f"./{TOOL}/share/a.txt", mode=0o444),
        entry(f"./{TOOL}/lib/setuid-tool", data=b"x", mode=0o4755),  # parent dir implicit
        entry(f"./{PROFILE}", "dir", mode=0o555),
        entry(f"./{PROFILE}/bin", "dir", mode=0o555),
        entry(f"./{PROFILE}/bin/hello", "sym", target=f"/{TOOL}/bin/hello"),
        entry("./bin", "sym", target=f"{PROFILE}/bin"),
    ]


@pytest.fixture
def site(tmp_path) -> Path:
    """tmp_path/{packs,dest-parent,outside}: the archive, the destination's parent, a bystander."""
    for name in ("packs", "parent", "outside"):
        (tmp_path / name).mkdir()
    (tmp_path / "outside" / "victim").write_text("untouched")
    return tmp_path


def snapshot(path: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, path)
            if os.path.islink(p):
                out[rel] = "-> " + os.readlink(p)
            elif os.path.isfile(p):
                out[rel] = Path(p).read_bytes()
            else:
                out[rel] = "dir"
    return out


@pytest.mark.parametrize("mode", ["w:gz", "w:xz", "w:bz2", "w"])
def test_guix_like_tarball_unpacks(site, mode):
    pack = make_tar(site / "packs" / "guix.tar", guix_like_entries(), mode)
    dest = site / "parent" / "root"
    root = unpack(pack, dest)
    assert isinstance(root, StoreRoot) and root.path == dest and root.prefix == "/gnu/store"
    assert root.items() == [f"{H}-hello-1.0", f"{HP}-profile"]
    tool = dest / TOOL
    # Symlinks are kept verbatim, absolute targets included; they resolve in the sandbox view.
    assert os.readlink(dest / PROFILE / "bin" / "hello") == f"/{TOOL}/bin/hello"
    assert root.find_program("hello") == f"/{PROFILE}/bin/hello"
    assert root.resolve(root.find_program("hello")) == f"/{TOOL}/bin/hello"
    # Hard links stay hard links; modes are normalized and, as in a real
    # store, read-only (engines without a read-only mount rely on it); mtimes
    # are kept.
    assert os.stat(tool / "share" / "a.txt").st_ino == os.stat(tool / "share" / "b.txt").st_ino
    assert stat.S_IMODE(os.stat(tool / "bin" / "hello").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(tool / "share" / "a.txt").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(tool / "lib" / "setuid-tool").st_mode) == 0o555  # no setuid
    assert stat.S_IMODE(os.stat(tool / "lib").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(dest / "gnu" / "store").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755
    assert os.stat(tool / "share" / "a.txt").st_mtime == 1
    assert os.stat(tool).st_mtime == 1
    assert os.listdir(site / "parent") == ["root"]


def test_empty_existing_destination_is_used(site):
    pack = make_tar(site / "packs" / "p.tar.gz", guix_like_entries())
    dest = site / "parent" / "root"
    dest.mkdir()
    unpack(pack, dest)
    assert (dest / TOOL / "bin" / "hello").is_file()
    assert os.listdir(site / "parent") == ["root"]


def test_non_empty_destination_is_refused(site):
    pack = make_tar(site / "packs" / "p.tar.gz", guix_like_entries())
    dest = site / "parent" / "root"
    dest.mkdir()
    (dest / "mine").write_text("keep")
    with pytest.raises(PackError) as err:
        unpack(pack, dest)
    assert "not empty" in str(err.value)
    assert os.listdir(dest) == ["mine"]


EVIL = {
    "dotdot": [entry("../evil", data=b"x")],
    "dotdot-inside": [entry(f"{TOOL}/../../../../evil", data=b"x")],
    "absolute": [entry("/tmp/evil-absolute", data=b"x")],
    "symlink-then-write": [
        entry(f"{TOOL}/escape", "sym", target="../../../../outside"),
        entry(f"{TOOL}/escape/victim", data=b"owned"),
    ],
    "absolute-symlink-then-write": [
        entry(f"{TOOL}/escape", "sym", target="/"),
        entry(f"{TOOL}/escape/tmp/evil", data=b"owned"),
    ],
    "symlinked-dir-then-dir": [
        entry("gnu", "sym", target="../outside"),
        entry("gnu/store", "dir"),
    ],
    "device": [entry(f"{TOOL}/null", "chr")],
    "block-device": [entry(f"{TOOL}/sda", "blk")],
    "fifo": [entry(f"{TOOL}/pipe", "fifo")],
    "hardlink-outside": [entry(f"{TOOL}/passwd", "hard", target="../../../../outside/victim")],
    "hardlink-absolute": [entry(f"{TOOL}/passwd", "hard", target="/etc/passwd")],
    "hardlink-not-in-archive": [entry(f"{TOOL}/x", "hard", target=f"{TOOL}/nothing")],
    "hardlink-to-directory": [entry(f"{TOOL}/x", "hard", target=TOOL)],
    "hardlink-through-symlink": [
        entry(f"{TOOL}/out", "sym", target="../../../../outside"),
        entry(f"{TOOL}/x", "hard", target=f"{TOOL}/out/victim"),
    ],
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_unsafe_archives_are_refused_and_leave_nothing(site, case):
    entries = [*EVIL[case], entry(f"{TOOL}/bin/hello", data=b"ok")]
    pack = make_tar(site / "packs" / "evil.tar.gz", entries)
    before = {name: snapshot(site / name) for name in ("parent", "outside")}
    dest = site / "parent" / "root"
    with pytest.raises(PackError) as err:
        unpack(pack, dest)
    message = str(err.value)
    assert "\n" not in message and message.startswith("refusing to unpack")
    assert "unsafe" in message
    assert not dest.exists()
    assert {name: snapshot(site / name) for name in ("parent", "outside")} == before
    assert not Path("/tmp/evil-absolute").exists()


def test_later_file_replaces_a_symlink_without_following_it(site):
    entries = [
        entry(f"{TOOL}/bin/hello", data=b"ok"),
        entry(f"{TOOL}/bin/f", "sym", target=str(site / "outside" / "victim")),
        entry(f"{TOOL}/bin/f", data=b"new content"),
    ]
    root = unpack(make_tar(site / "packs" / "p.tar.gz", entries), site / "parent" / "root")
    f = root.path / TOOL / "bin" / "f"
    assert not f.is_symlink() and f.read_bytes() == b"new content"
    assert (site / "outside" / "victim").read_text() == "untouched"


@pytest.mark.parametrize("mode", ["w:gz", "w:xz", "w:bz2", "w"])
@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_damaged_archive_is_a_one_line_error_and_leaves_nothing(site, mode, damage):
    if mode == "w" and damage == "flipped":
        pytest.skip("a plain tar has no checksum over file data")
    data = [entry(f"{TOOL}/bin/hello", data=os.urandom(200_000) + b"a" * 200_000)]
    pack = make_tar(site / "packs" / "p.tar", data, mode)
    raw = bytearray(pack.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF  # the compressed stream's checksum no longer matches
    pack.write_bytes(bytes(raw))
    with pytest.raises(PackError) as err:
        unpack(pack, site / "parent" / "root")
    assert "\n" not in str(err.value)
    assert "damaged" in str(err.value) or "cannot unpack" in str(err.value)
    assert os.listdir(site / "parent") == []


def test_not_a_tarball(site):
    bogus = site / "packs" / "notes.txt"
    bogus.write_text("hello\n" * 100)
    with pytest.raises(PackError):
        unpack(bogus, site / "parent" / "root")
    with pytest.raises(PackError):
        unpack(site / "packs" / "missing.tar.gz", site / "parent" / "root")
    assert os.listdir(site / "parent") == []


def test_tarball_without_a_store_is_refused(site):
    pack = make_tar(site / "packs" / "p.tar.gz", [entry("README", data=b"hi")])
    with pytest.raises(PackError) as err:
        unpack(pack, site / "parent" / "root")
    assert "not a usable pack" in str(err.value)
    assert str(site / "parent" / ".root") not in str(err.value)  # no temporary names
    assert os.listdir(site / "parent") == []


def test_interrupt_during_extraction_leaves_nothing(site, monkeypatch):
    from nbsandbox.pack.unpack import _Extractor

    entries = [entry(f"{TOOL}/f{i}", data=b"x" * 100) for i in range(10)]
    pack = make_tar(site / "packs" / "p.tar.gz", entries)
    real = _Extractor._write
    calls = []

    def interrupted(self, path, member, tar):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        real(self, path, member, tar)

    monkeypatch.setattr(_Extractor, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        unpack(pack, site / "parent" / "root")
    assert os.listdir(site / "parent") == []


def test_parent_of_destination_must_exist(site):
    pack = make_tar(site / "packs" / "p.tar.gz", guix_like_entries())
    with pytest.raises(PackError) as err:
        unpack(pack, site / "parent" / "missing" / "root")
    assert "create" in str(err.value)
    assert os.listdir(site / "parent") == []


# -- the deterministic archive writer --------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1,
                                  3 * BLOCK_SIZE + 12345])
def test_parallel_gzip_is_plain_gzip_and_independent_of_workers(size):
    data = (os.urandom(4096) + b"abc" * 5000) * (size // 19096 + 1)
    data = data[:size]
    outputs = []
    for workers in (1, 3):
        raw = io.BytesIO()
        gz = ParallelGzip(raw, workers=workers)
        for i in range(0, len(data), 70_000):
            gz.write(data[i:i + 70_000])
        gz.close()
        outputs.append(raw.getvalue())
    assert outputs[0] == outputs[1]
    assert gzip.decompress(outputs[0]) == data
    assert zlib.decompress(outputs[0], 31) == data


def test_write_tarball_is_deterministic_and_round_trips(site):
    src = site / "tree"
    (src / "gnu" / "store" / f"{H}-x" / "bin").mkdir(parents=True)
    exe = src / "gnu" / "store" / f"{H}-x" / "bin" / "x"
    exe.write_bytes(b"#!/gnu/store/y/bin/sh\n")
    exe.chmod(0o4750)
    os.symlink(f"gnu/store/{H}-x/bin", src / "bin")
    first = write_tarball(src, site / "packs" / "a.tar.gz")
    os.utime(exe, (12345, 12345))
    assert write_tarball(src, site / "packs" / "b.tar.gz") == first
    assert (site / "packs" / "a.tar.gz").read_bytes() == (site / "packs" / "b.tar.gz").read_bytes()
    root = unpack(site / "packs" / "a.tar.gz", site / "parent" / "root")
    copy = root.path / "gnu" / "store" / f"{H}-x" / "bin" / "x"
    assert copy.read_bytes() == exe.read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o555  # setuid dropped, others may read
    assert os.readlink(root.path / "bin") == f"gnu/store/{H}-x/bin"


def test_cli_unpack_errors_are_one_line(site, capsys):
    from nbsandbox.cli import main

    pack = make_tar(site / "packs" / "evil.tar.gz", EVIL["dotdot"])
    assert main(["unpack", str(pack), str(site / "parent" / "root")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nbsandbox: error: refusing to unpack") and err.count("\n") == 1
    good = make_tar(site / "packs" / "good.tar.gz", guix_like_entries())
    assert main(["unpack", str(good), str(site / "parent" / "root")]) == 0
    out = capsys.readouterr().out
    assert f"unpacked {site / 'parent' / 'root'}: 2 items, prefix /gnu/store" in out
