"""The identity of a store root: digest, manifest, stamps, checks on unpack and in ``check``."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from test_store import H1, H2, make_root

from nbsandbox import identity
from nbsandbox.errors import PackError
from nbsandbox.identity import IdentityMismatch, Manifest
from nbsandbox.pack.archive import write_tarball
from nbsandbox.pack.unpack import unpack
from nbsandbox.store import METADATA, PackMetadata, StoreRoot

TOOL = Path("gnu/store") / f"{H1}-tool-1.0" / "bin" / "tool"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def with_metadata(path: Path) -> StoreRoot:
    """Give a hand-made root a pack.json that records its identity, as ``nbsandbox pack`` does."""
    root = StoreRoot.open(path)
    manifest, _ = identity.compute(root)
    (path / ".nbsandbox").mkdir(exist_ok=True)
    meta = PackMetadata(prefix=root.prefix, manifest=manifest)
    (path / METADATA).write_text(meta.to_json())
    return StoreRoot.open(path)


def test_digest_ignores_location_times_owner_write_bits_and_pack_json(tmp_path):
    a = make_root(tmp_path / "a")
    digest = StoreRoot.open(a).digest()
    b = tmp_path / "b"
    shutil.copytree(a, b, symlinks=True)
    os.utime(b / TOOL, (5, 5))
    (b / TOOL).chmod(0o555)
    os.chown(b / TOOL, 1234, 1234)
    with_metadata(b)
    assert StoreRoot.open(b).digest() == digest
    assert identity.is_digest(digest)


@pytest.mark.parametrize("change", ["content", "exec-bit", "link-target", "name", "new-file"])
def test_digest_changes_with_what_programs_observe(tmp_path, change):
    path = make_root(tmp_path / "r")
    before = identity.compute(StoreRoot.open(path))[0]
    tool = path / TOOL
    link = path / "gnu/store" / f"{H2}-profile" / "bin" / "tool"
    if change == "content":
        tool.write_text("#!/bin/sh\necho tooL\n")
    elif change == "exec-bit":
        tool.chmod(0o644)
    elif change == "link-target":
        link.unlink()
        link.symlink_to("/gnu/store/elsewhere")
    elif change == "name":
        tool.rename(tool.with_name("tool2"))
    else:
        (tool.parent / "extra").write_text("")
    after = identity.compute(StoreRoot.open(path))[0]
    assert after.digest != before.digest
    changed = H1 + "-tool-1.0" if change != "link-target" else H2 + "-profile"
    assert before.first_difference(after) == f"item {changed} has different content"


def test_manifest_round_trips_and_rejects_junk():
    m = Manifest("/gnu/store", {"bin": "/gnu/store/x/bin"}, {"x": "0" * 64})
    assert Manifest.from_dict(m.to_dict()) == m
    assert Manifest.from_dict({"prefix": "/p", "links": {}, "items": {"x": "nothex"}}) is None
    assert Manifest.from_dict([]) is None


def test_pack_json_with_a_forged_digest_is_refused(tmp_path):
    from nbsandbox.errors import StoreError

    path = make_root(tmp_path / "r")
    root = with_metadata(path)
    text = (path / METADATA).read_text().replace(root.metadata.digest, "f" * 64)
    (path / METADATA).write_text(text)
    with pytest.raises(StoreError, match="digest and manifest do not agree"):
        StoreRoot.open(path)


def test_check_names_the_first_differing_item(tmp_path):
    path = make_root(tmp_path / "r")
    root = with_metadata(path)
    expected = root.metadata.digest
    identity.check(root, expected)
    (path / TOOL).write_text("#!/bin/sh\necho changed\n")
    with pytest.raises(IdentityMismatch, match=rf"item {H1}-tool-1.0 has different content"):
        identity.check(StoreRoot.open(path), expected)


def test_a_stamp_spares_reading_an_unchanged_root_again(tmp_path, monkeypatch):
    path = make_root(tmp_path / "r")
    root = with_metadata(path)
    expected = root.metadata.digest
    identity.check(root, expected)  # computes and stamps
    read = []
    real = identity._file_sha256
    monkeypatch.setattr(identity, "_file_sha256", lambda p: read.append(p) or real(p))
    identity.check(root, expected)
    assert identity.current_digest(root) == expected
    assert read == []
    # Same size, same mtime, other content: the ctime still gives it away.
    st = os.stat(path / TOOL)
    text = (path / TOOL).read_text()
    (path / TOOL).write_text(text.replace("tool", "TOOL"))
    os.utime(path / TOOL, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(IdentityMismatch):
        identity.check(root, expected)
    assert read


def _tarball(tmp_path: Path, tree: Path) -> Path:
    out = tmp_path / "pack.tar.gz"
    write_tarball(tree, out)
    return out


def test_unpack_checks_the_recorded_digest(tmp_path):
    path = make_root(tmp_path / "r")
    with_metadata(path)
    root = unpack(_tarball(tmp_path, path), tmp_path / "ok")
    assert identity.current_digest(root) == root.metadata.digest

    (path / TOOL).write_text("#!/bin/sh\necho tampered\n")
    pack = tmp_path / "bad.tar.gz"
    write_tarball(path, pack)
    with pytest.raises(PackError, match=rf"item {H1}-tool-1.0 has different content"):
        unpack(pack, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bad")] == []


def test_unpack_of_a_tar_with_one_byte_changed_names_the_item(tmp_path):
    path = make_root(tmp_path / "r")
    with_metadata(path)
    plain = tmp_path / "pack.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(path, arcname=".")
    data = bytearray(plain.read_bytes())
    where = data.index(b"echo tool")
    data[where] ^= 0x20
    plain.write_bytes(bytes(data))
    with pytest.raises(PackError, match=rf"item {H1}-tool-1.0 has different content"):
        unpack(plain, tmp_path / "out")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbsandbox", *args], capture_output=True,
                          text=True, timeout=60)


def test_check_command_prints_the_digest_and_refuses_a_changed_root(tmp_path):
    path = make_root(tmp_path / "r")
    root = with_metadata(path)
    proc = _cli("check", str(path))
    assert f"digest: {root.metadata.digest}" in proc.stdout + proc.stderr
    (path / TOOL).write_text("#!/bin/sh\necho changed\n")
    proc = _cli("check", str(path))
    assert proc.returncode == 1
    assert f"item {H1}-tool-1.0 has different content" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_packmetadata_without_identity_is_still_read(tmp_path):
    path = make_root(tmp_path / "r")
    (path / ".nbsandbox").mkdir()
    (path / METADATA).write_text(PackMetadata(prefix="/gnu/store").to_json())
    meta = StoreRoot.open(path).metadata
    assert meta is not None and meta.digest is None
    assert dataclasses.replace(meta, manifest=None) == meta
