"""Store roots: prefix detection, validation, path mapping, identity."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nbsandbox.errors import StoreError
from nbsandbox.store import PackMetadata, StoreRoot

H1 = "a" * 32
H2 = "b" * 32


def make_root(tmp: Path, prefix: str = "/gnu/store") -> Path:
    store = tmp / prefix.lstrip("/")
    tool = store / f"{H1}-tool-1.0"
    (tool / "bin").mkdir(parents=True)
    exe = tool / "bin" / "tool"
    exe.write_text("#!/bin/sh\necho tool\n")
    exe.chmod(0o755)
    profile = store / f"{H2}-profile"
    (profile / "bin").mkdir(parents=True)
    os.symlink(f"{prefix}/{H1}-tool-1.0/bin/tool", profile / "bin" / "tool")
    os.symlink(f"{prefix.lstrip('/')}/{H2}-profile/bin", tmp / "bin")
    return tmp


@pytest.mark.parametrize("prefix", ["/gnu/store", "/nix/store"])
def test_known_prefixes_are_found(tmp_path, prefix):
    root = StoreRoot.open(make_root(tmp_path, prefix))
    assert root.prefix == prefix
    assert root.items() == [f"{H1}-tool-1.0", f"{H2}-profile"]


def test_unusual_prefix_found_from_item_names(tmp_path):
    root = StoreRoot.open(make_root(tmp_path, "/opt/sw/store"))
    assert root.prefix == "/opt/sw/store"


def test_prefix_recorded_in_pack_metadata_wins(tmp_path):
    make_root(tmp_path, "/opt/sw/store")
    (tmp_path / ".nbsandbox").mkdir()
    (tmp_path / ".nbsandbox" / "pack.json").write_text(PackMetadata("/opt/sw/store").to_json())
    assert StoreRoot.open(tmp_path).metadata.prefix == "/opt/sw/store"


def test_explicit_prefix_must_exist_in_root(tmp_path):
    make_root(tmp_path)
    with pytest.raises(StoreError, match=r"no store at .*nix/store.*pass --prefix"):
        StoreRoot.open(tmp_path, prefix="/nix/store")


@pytest.mark.parametrize("bad", ["gnu/store", "/", "/gnu/../store", "/gnu/store/"])
def test_malformed_prefix_is_refused(tmp_path, bad):
    make_root(tmp_path)
    with pytest.raises(StoreError, match="absolute, normalized"):
        StoreRoot.open(tmp_path, prefix=bad)


def test_missing_root_and_no_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        StoreRoot.open(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        StoreRoot.open(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"no store found .* --prefix"):
        StoreRoot.open(tmp_path / "empty")


def test_empty_store_fails_validation(tmp_path):
    (tmp_path / "gnu" / "store").mkdir(parents=True)
    root = StoreRoot.open(tmp_path)
    with pytest.raises(StoreError, match="is empty"):
        root.validate()


def test_dangling_profile_link_fails_validation(tmp_path):
    make_root(tmp_path)
    shutil.rmtree(tmp_path / "gnu" / "store" / f"{H2}-profile")
    root = StoreRoot.open(tmp_path)
    with pytest.raises(StoreError, match=r"profile link .*bin.* missing .* unpack it again"):
        root.validate()


def test_paths_map_between_sandbox_and_host(tmp_path):
    root = StoreRoot.open(make_root(tmp_path))
    store_path = f"/gnu/store/{H1}-tool-1.0/bin/tool"
    assert root.to_host(store_path) == tmp_path.resolve() / store_path.lstrip("/")
    assert root.to_sandbox(root.to_host(store_path)) == store_path
    assert root.to_host("/etc/passwd") == Path("/etc/passwd")
    assert not root.in_store("/gnu/storex/y")


def test_absolute_symlinks_resolve_inside_the_root(tmp_path):
    root = StoreRoot.open(make_root(tmp_path))
    assert root.resolve(f"/gnu/store/{H2}-profile/bin/tool") == f"/gnu/store/{H1}-tool-1.0/bin/tool"
    assert root.profile_bin() == f"/gnu/store/{H2}-profile/bin"


def test_symlink_loop_is_an_error(tmp_path):
    root = StoreRoot.open(make_root(tmp_path))
    loop = tmp_path / "gnu" / "store" / f"{H1}-tool-1.0" / "loop"
    os.symlink(f"/gnu/store/{H1}-tool-1.0/loop", loop)
    with pytest.raises(StoreError, match="too many levels"):
        root.resolve(f"/gnu/store/{H1}-tool-1.0/loop")


def test_find_program(tmp_path):
    root = StoreRoot.open(make_root(tmp_path))
    assert root.find_program("tool") == f"/gnu/store/{H2}-profile/bin/tool"
    assert root.find_program(f"/gnu/store/{H1}-tool-1.0/bin/tool").endswith("/bin/tool")
    with pytest.raises(StoreError, match=r"no program 'nope' .*available: tool"):
        root.find_program("nope")
    with pytest.raises(StoreError, match="not under the store prefix"):
        root.find_program("/usr/bin/env")
    with pytest.raises(StoreError, match="does not exist"):
        root.find_program(f"/gnu/store/{H1}-tool-1.0/bin/missing")


def test_digest_depends_on_content_not_location(tmp_path):
    a = make_root(tmp_path / "a")
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b, symlinks=True)
    os.utime(b / "gnu" / "store" / f"{H1}-tool-1.0" / "bin" / "tool", (1, 1))
    da = StoreRoot.open(a).digest()
    assert da == StoreRoot.open(b).digest()
    exe = b / "gnu" / "store" / f"{H1}-tool-1.0" / "bin" / "tool"
    exe.chmod(0o644)
    assert StoreRoot.open(b).digest() != da
    exe.chmod(0o755)
    exe.write_text("#!/bin/sh\necho other\n")
    assert StoreRoot.open(b).digest() != da


def test_present_on_host(tmp_path):
    root = StoreRoot.open(make_root(tmp_path))
    assert not root.present_on_host()
