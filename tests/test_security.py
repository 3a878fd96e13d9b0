"""Every claim of docs/security.md, as a test.

Commands under test run as ``nobody`` (uid 65534) when the suite runs as root,
from a pack that nobody unpacked with ``nbsandbox unpack`` (so nobody owns the
store, as a user owns the packs they unpack: a write that fails, fails because
of nbsandbox, not because of file ownership).  Tests that need to make a
setuid-root file need root and are skipped otherwise.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import unpriv
from engine_params import ENGINES, available
from unpriv import NOBODY

from nbsandbox.errors import NbsandboxError
from nbsandbox.store import StoreRoot

#: Engines that make the store read-only themselves (proot relies on the on-disk modes).
READ_ONLY = {"userns", "bwrap", "fakechroot"}
IS_ROOT = os.getuid() == 0
SECRET = "Secret Person"


def _chown_nobody(path: Path) -> None:
    if IS_ROOT:
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.lchown(name, unpriv.NOBODY, unpriv.NOBODY)


@dataclass
class World:
    """A user's world: a home with secrets, a work directory, an unpacked pack."""

    base: Path
    home: Path
    work: Path
    outside: Path  # a file outside the home that the user can read
    root: StoreRoot
    scratch_root: StoreRoot  # a second unpack, for the test that modifies it
    setuid_id: str | None  # sandbox path of a setuid-root copy of the store's id
    tarball: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = unpriv.unprivileged_env(home=str(self.home))
        env.pop("NBSANDBOX_ENGINE", None)
        env.pop("NBSANDBOX_ADMIN_CONFIG", None)
        env.update({"GNUPGHOME": str(self.home / ".gnupg"),
                    "GIT_CONFIG_GLOBAL": str(self.home / ".gitconfig"),
                    "NBS_SECURITY_TOKEN": "passed-through", **extra})
        return env


def nbs_run(world: World, engine: str, *args: str, options: tuple[str, ...] = (),
            root: StoreRoot | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "nbsandbox", "run", "--root", str((root or world.root).path),
            "--engine", engine, *options, "--", *args]
    return unpriv.run(argv, cwd=world.work, env=env or world.env())


def _unpack_as_user(tarball: Path, dest: Path, env: dict[str, str]) -> StoreRoot:
    r = unpriv.run([sys.executable, "-m", "nbsandbox", "unpack", str(tarball), str(dest)],
                   env=env)
    assert r.returncode == 0, r.stderr
    return StoreRoot.open(dest)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    from nbsandbox.pack import PackOptions, build_pack

    # Not under pytest's basetemp: another pytest session starting meanwhile
    # makes that 0700 again, which would lock the unprivileged user out.
    base = Path(tempfile.mkdtemp(prefix="nbs-security-"))
    os.chmod(base, 0o755)
    try:
        tarball = base / "sec.tar.gz"
        build_pack(PackOptions(with_python=False, output=tarball,
                               programs=["/usr/bin/id", "/bin/sh", "/usr/bin/cat"]))
        os.chmod(tarball, 0o644)
        user = base / "user"
        home = user / "home"
        work = home / "work"
        work.mkdir(parents=True)
        (home / ".gitconfig").write_text(f"[user]\n\tname = {SECRET}\n")
        (home / ".gnupg").mkdir(mode=0o700)
        (home / ".gnupg" / "private-keys").write_text("secret key\n")
        outside = user / "outside.txt"
        outside.write_text("outside the home\n")
        _chown_nobody(user)
        env = unpriv.unprivileged_env(home=str(home))
        root = _unpack_as_user(tarball, user / "root", env)
        scratch = _unpack_as_user(tarball, user / "scratch-root", env)
        setuid_id = None
        if IS_ROOT:
            # A setuid-root copy of the store's id, in an item of its own.
            packed_id = root.to_host(root.resolve(root.find_program("id")))
            item = root.store_dir / ("s" * 32 + "-setuid-id")
            (item / "bin").mkdir(parents=True)
            shutil.copy(packed_id, item / "bin" / "id")
            os.chown(item / "bin" / "id", 0, 0)
            os.chmod(item / "bin" / "id", 0o4755)
            setuid_id = f"{root.prefix}/{item.name}/bin/id"
        yield World(base, home, work, outside, StoreRoot.open(root.path),
                    scratch, setuid_id, tarball)
    finally:
        _remove(base)


def _remove(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
    shutil.rmtree(path)


def _tree(path: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry under ``path``: (mode, size, mtime_ns, uid)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(name)
            out[name] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_uid)
    return out


# -- never runs setuid programs with privileges; never needs root ----------------------


@pytest.mark.skipif(not IS_ROOT, reason="making a setuid-root file needs root")
def test_the_setuid_control_gains_root(world):
    """The control: on this file system a setuid-root id run directly *does* get euid 0,
    so the engine tests below are not vacuous."""
    control = world.base / "control-id"
    shutil.copy("/usr/bin/id", control)
    os.chmod(control, 0o4755)
    r = unpriv.run([str(control)], env=world.env())
    assert "euid=0(root)" in r.stdout, r.stdout


@pytest.mark.skipif(not IS_ROOT, reason="making a setuid-root file needs root")
def test_a_setuid_program_in_the_store_gains_nothing(world, engine):
    assert world.setuid_id is not None
    host = world.root.to_host(world.setuid_id)
    assert os.stat(host).st_mode & stat.S_ISUID and os.stat(host).st_uid == 0
    r = nbs_run(world, engine, world.setuid_id)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"uid={unpriv.NOBODY}(")
    assert "euid=" not in r.stdout  # id shows euid only when it differs from uid


def test_programs_run_without_privileges(world, engine):
    """Same uid as the caller, no capabilities: nbsandbox needs no root and grants none."""
    r = nbs_run(world, engine, "cat", "/proc/self/status")
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    uid = str(os.getuid() if not IS_ROOT else unpriv.NOBODY)
    assert fields["Uid"].split() == [uid] * 4
    for cap in ("CapEff", "CapPrm", "CapAmb"):
        assert int(fields[cap], 16) == 0, (cap, fields[cap])
    if engine == "bwrap":
        assert fields["NoNewPrivs"].strip() == "1"


# -- never writes to a store ------------------------------------------------------------


def test_writes_to_the_store_fail(world, engine):
    item = f"{world.root.prefix}/{world.root.items()[0]}"
    r = nbs_run(world, engine, "sh", "-c", f": > {item}/new-file")
    assert r.returncode != 0
    expected = "Read-only file system" if engine in READ_ONLY else "Permission denied"
    assert expected in r.stderr, r.stderr
    if engine in ("userns", "bwrap"):  # not even its owner can make it writable
        r = nbs_run(world, engine, "sh", "-c", f"chmod u+w {item}")
        assert r.returncode != 0 and "Read-only file system" in r.stderr, r.stderr


def test_under_proot_only_the_on_disk_modes_protect_the_store(world):
    """The limit: PRoot has no read-only bind; the store's owner can chmod it and write."""
    if not available("proot"):
        pytest.skip("proot is not available")
    root = world.scratch_root
    item = f"{root.prefix}/{root.items()[0]}"
    r = nbs_run(world, "proot", "sh", "-c", f"chmod u+w {item} && : > {item}/new-file",
                root=root)
    assert r.returncode == 0, r.stderr
    assert (root.store_dir / root.items()[0] / "new-file").exists()


@pytest.mark.parametrize("engine_name", ["userns", "fakechroot"])
def test_the_store_stays_writable_through_its_host_path_by_its_owner(world, engine_name):
    """The limit: the root's own host directory is part of the view, with its on-disk
    modes; its owner can chmod it and write there (unpack it as another user, or on a
    read-only mount, to prevent that)."""
    if not available(engine_name):
        pytest.skip(f"{engine_name} is not available")
    root = world.scratch_root
    item = root.store_dir / root.items()[0]
    new = item / f"new-{engine_name}"
    r = nbs_run(world, engine_name, "sh", "-c", f"chmod u+w {item} && : > {new}", root=root)
    assert r.returncode == 0, r.stderr
    assert new.exists()


def test_runs_leave_the_root_unchanged(world):
    """nbsandbox itself writes nothing into a root: not at unpack's end, not at a run."""
    before = _tree(world.root.path)
    digest = world.root.digest()
    for engine in ENGINES:
        if available(engine):
            r = nbs_run(world, engine, "sh", "-c", "echo ok", options=("--isolate-home",))
            assert r.stdout == "ok\n", r.stderr
    assert _tree(world.root.path) == before
    assert StoreRoot.open(world.root.path).digest() == digest


# -- isolate_home ---------------------------------------------------------------------


def test_isolate_home_hides_the_users_configuration(world, engine):
    gnupg, gitconfig = world.home / ".gnupg", world.home / ".gitconfig"
    script = (f'cat {gitconfig}; for f in {gnupg}/*; do echo "gnupg: $f"; done; '
              'echo "GNUPGHOME=${GNUPGHOME-unset} GIT_CONFIG_GLOBAL=${GIT_CONFIG_GLOBAL-unset}"')
    seen = nbs_run(world, engine, "sh", "-c", script)
    assert SECRET in seen.stdout and "private-keys" in seen.stdout, seen.stderr  # the control
    hidden = nbs_run(world, engine, "sh", "-c", script, options=("--isolate-home",))
    assert SECRET not in hidden.stdout + hidden.stderr
    assert "private-keys" not in hidden.stdout
    assert "GNUPGHOME=unset GIT_CONFIG_GLOBAL=unset" in hidden.stdout
    # What the program writes to its home never reaches yours.
    nbs_run(world, engine, "sh", "-c", 'echo x > "$HOME/created-inside"',
            options=("--isolate-home",))
    assert not (world.home / "created-inside").exists()


def test_isolate_home_does_not_hide_other_variables_or_directories(world, engine):
    """What it does not do: other variables pass, paths outside the home stay visible,
    and so does the working directory inside the home (unless --no-keep-cwd)."""
    r = nbs_run(world, engine, "sh", "-c",
                f'echo "$NBS_SECURITY_TOKEN"; cat {world.outside}; pwd',
                options=("--isolate-home",))
    assert r.stdout.splitlines() == ["passed-through", "outside the home", str(world.work)], \
        r.stderr


# -- what engines isolate: nothing but the view of the store ---------------------------


NAMESPACES = ("pid", "net", "ipc", "uts")


def test_the_program_sees_and_can_change_the_host(world, engine):
    """A view, not a sandbox: host files are readable and writable as the user's, and
    the program shares the host's PID, network, IPC and UTS namespaces."""
    target = world.work / f"written-by-{engine}"
    links = " ".join(f"/proc/self/ns/{n}" for n in NAMESPACES)
    r = nbs_run(world, engine, "sh", "-c",
                f"cat /etc/passwd > /dev/null && echo hi > {target} && readlink {links}")
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "hi\n"
    assert r.stdout.split() == [os.readlink(f"/proc/self/ns/{n}") for n in NAMESPACES]


def test_fakechroot_is_not_a_security_boundary(world):
    """Under the preload engine a program that is not interposed -- here the host's
    cat, started by the store's shell -- sees the real home and not the store."""
    if not available("fakechroot"):
        pytest.skip("fakechroot is not available")
    gitconfig = world.home / ".gitconfig"
    store_file = world.root.resolve(world.root.find_program("id"))
    r = nbs_run(world, "fakechroot", "sh", "-c",
                f"/usr/bin/cat {gitconfig}; /usr/bin/cat {store_file} > /dev/null",
                options=("--isolate-home",))
    assert SECRET in r.stdout
    assert r.returncode != 0 and f"/usr/bin/cat: {store_file}: " in r.stderr  # not found
    if available("userns"):  # a mount namespace hides it from every program
        r = nbs_run(world, "userns", "sh", "-c", f"/usr/bin/cat {gitconfig}",
                    options=("--isolate-home",))
        assert SECRET not in r.stdout


# -- never leaves temporary files ---------------------------------------------------------


def test_no_temporary_files_are_left(world, engine):
    tmp = world.base / f"tmp-{engine}"
    tmp.mkdir()
    _chown_nobody(tmp)
    r = nbs_run(world, engine, "sh", "-c", "echo ok",
                options=("--isolate-home", "--hide", str(world.outside)),
                env=world.env(TMPDIR=str(tmp)))
    assert r.stdout == "ok\n", r.stderr
    left = set(os.listdir(tmp))
    # fakechroot's one shared, read-only empty directory and file (not per launch)
    allowed = {f"nbsandbox-{unpriv.NOBODY if IS_ROOT else os.getuid()}-empty"}
    assert left <= (allowed if engine == "fakechroot" else set()), left
    if left:
        r = nbs_run(world, engine, "sh", "-c", "echo ok", options=("--isolate-home",),
                    env=world.env(TMPDIR=str(tmp)))
        assert set(os.listdir(tmp)) == left  # a second launch adds nothing


# -- pack and unpack strip setuid bits ------------------------------------------------------


def _special_bits(path: Path) -> list[str]:
    return [p for p, (mode, *_rest) in _tree(path).items()
            if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)]


@pytest.mark.skipif(not IS_ROOT, reason="making a setuid-root file needs root")
def test_pack_strips_setuid(tmp_path):
    from nbsandbox.pack import PackOptions, build_pack

    program = tmp_path / "suid-id"
    shutil.copy("/usr/bin/id", program)
    os.chmod(program, 0o6755)
    out = build_pack(PackOptions(with_python=False, output=tmp_path / "p.tar.gz",
                                 programs=[str(program)])).path
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    assert members and not [m.name for m in members if m.mode & 0o7000]
    root = build_pack(PackOptions(with_python=False, output=tmp_path / "dir",
                                  programs=[str(program)])).path
    assert _special_bits(Path(root)) == []


def test_unpack_never_creates_setuid_files(tmp_path):
    """A tarball with setuid, setgid and sticky entries: refused, or extracted without them."""
    from nbsandbox.pack.unpack import unpack

    data = b"#!/bin/sh\necho hi\n"
    tarball = tmp_path / "evil.tar"
    with tarfile.open(tarball, "w") as tar:
        for name, mode, kind in [("gnu", 0o1777, tarfile.DIRTYPE),
                                 ("gnu/store", 0o2755, tarfile.DIRTYPE),
                                 ("gnu/store/" + "a" * 32 + "-x", 0o755, tarfile.DIRTYPE),
                                 ("gnu/store/" + "a" * 32 + "-x/suid", 0o4755, tarfile.REGTYPE)]:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid = kind, mode, 0
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    dest = tmp_path / "out"
    try:
        unpack(tarball, dest)
    except NbsandboxError as exc:
        assert "\n" not in str(exc)
        assert not dest.exists()
        return
    assert (dest / "gnu/store" / ("a" * 32 + "-x") / "suid").is_file()
    assert _special_bits(dest) == []


# -- policy locking ------------------------------------------------------------------------


def _admin_file(world: World, name: str, settings: dict) -> str:
    path = world.base / f"{name}.json"
    path.write_text(json.dumps({"SandboxPolicy": settings}))
    os.chmod(path, 0o644)
    return str(path)


def _kernel_launch(world: World, admin: str, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "nbsandbox", "kernel", "launch", "--root",
            str(world.root.path), *args]
    return unpriv.run(argv, cwd=world.work, env=world.env(NBSANDBOX_ADMIN_CONFIG=admin))


def test_a_forbidden_engine_is_refused(world):
    allowed = [e for e in ("userns", "fakechroot") if available(e)]
    if not allowed:
        pytest.skip("neither userns nor fakechroot works here")
    admin = _admin_file(world, "engines", {"allowed_engines": allowed})
    r = _kernel_launch(world, admin, "--engine", "proot", "--", "id", "-u")
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr
    assert "asks for engine 'proot', which is not allowed" in r.stderr
    assert admin in r.stderr
    for name in ("auto", "performance"):  # meta-engines only use allowed engines
        r = _kernel_launch(world, admin, "--engine", name, "--explain", "--", "id", "-u")
        assert r.returncode == 0, r.stderr
        used = next(line.split()[1] for line in r.stderr.splitlines()
                    if line.startswith("engine: "))
        assert used in allowed
    r = unpriv.run([sys.executable, "-m", "nbsandbox", "kernel", "launch", "--root",
                    str(world.root.path), "--", "id", "-u"], cwd=world.work,
                   env=world.env(NBSANDBOX_ADMIN_CONFIG=admin, NBSANDBOX_ENGINE="proot"))
    assert r.returncode != 0 and "not allowed" in r.stderr  # the variable is a request too


def test_a_locked_engine_cannot_be_changed(world):
    if not available("userns"):
        pytest.skip("userns does not work here")
    admin = _admin_file(world, "locked", {"engine": "userns", "locked": ["engine"]})
    r = _kernel_launch(world, admin, "--engine", "fakechroot", "--", "id", "-u")
    assert r.returncode != 0 and "engine is locked to 'userns'" in r.stderr, r.stderr
    r = _kernel_launch(world, admin, "--explain", "--", "id", "-u")
    assert r.returncode == 0 and "engine: userns" in r.stderr, r.stderr


def test_an_administrators_isolated_home_applies_without_asking(world):
    engine = next((e for e in ("userns", "fakechroot") if available(e)), None)
    if engine is None:
        pytest.skip("neither userns nor fakechroot works here")
    admin = _admin_file(world, "home", {"isolate_home": True})
    r = _kernel_launch(world, admin, "--engine", engine, "--", "cat",
                       str(world.home / ".gitconfig"))
    assert r.returncode != 0 and SECRET not in r.stdout


def test_nbsandbox_run_obeys_the_policy_which_is_no_boundary(world):
    """``nbsandbox run`` launches through the same request as the Jupyter front ends, so
    an administrator's engine list holds on the command line too; the policy is still no
    security boundary: PRoot itself is the user's own tool."""
    if not available("proot"):
        pytest.skip("proot is not available")
    admin = _admin_file(world, "no-proot", {"allowed_engines": ["userns"]})
    r = nbs_run(world, "proot", "id", "-u", env=world.env(NBSANDBOX_ADMIN_CONFIG=admin))
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert "the command line asks for engine 'proot', which is not allowed" in r.stderr
    assert admin in r.stderr
    r = unpriv.run(["proot", "-r", "/", "id", "-u"], cwd=world.work,
                   env=world.env(NBSANDBOX_ADMIN_CONFIG=admin))
    assert r.returncode == 0 and r.stdout.strip() == str(NOBODY if os.getuid() == 0 else
                                                         os.getuid()), r.stderr
