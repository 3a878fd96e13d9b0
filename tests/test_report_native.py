"""The access recorders of nbs-preload.so and nbs-audit.so (issue #12).

A test program (native/fakechroot/test/report_probe.c) makes one access of
each kind.  It runs

* with ``LD_PRELOAD``/``LD_AUDIT`` set by hand and only the two report
  variables: the libraries as pure recorders, as under the userns, bwrap,
  proot and host engines;
* as a store program under the fakechroot engine (``nbsandbox.launch.prepare``),
  where the same libraries also translate paths;

each time with the plain and the AddressSanitizer build of the preload
library, as the unprivileged user, with the record descriptor inherited.
The record must hold one line per access, in the contract's format
(docs/access.md), and nothing under the skip prefixes (the store).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import unpriv
from test_fakechroot import (
    ASAN_OPTIONS,
    HOST_LIB,
    AsanEngine,
    MiniStore,
    P,
    _asan_runtime,
    _patch,
    build_mini_store,
    item,
)

from nbsandbox.engines.fakechroot import FakechrootEngine
from nbsandbox.launch import make_plan, prepare
from nbsandbox.native import native_path
from nbsandbox.store import StoreRoot

REPO = Path(__file__).resolve().parent.parent
PROBE_SRC = REPO / "native" / "fakechroot" / "test" / "report_probe.c"
RPROBE = item("report-probe-1", 9)
#: a host library the test program does not link
HOST_EXTRA_LIB = HOST_LIB / "libpcre2-8.so.0"


@dataclass
class Native:
    """Where the libraries under test are, and what to preload before them."""

    kind: str
    dir: str
    first: tuple[str, ...]

    def env(self) -> dict[str, str]:
        return {"ASAN_OPTIONS": ASAN_OPTIONS} if self.first else {}


@pytest.fixture(scope="module", params=["plain", "asan"])
def native(request, tmp_path_factory) -> Native:
    plain = os.path.dirname(native_path("nbs-preload.so"))
    if request.param == "plain":
        return Native("plain", plain, ())
    runtime = _asan_runtime()
    if not runtime:
        pytest.skip("no AddressSanitizer runtime (cc -print-file-name=libasan.so)")
    out = tmp_path_factory.mktemp("asan-native")
    subprocess.run([sys.executable, str(REPO / "native" / "build.py"), "--sanitize", "address",
                    "--out", str(out), "--target", "nbs-audit", "--target", "nbs-preload"],
                   check=True, capture_output=True)
    unpriv.world_tmpdir(str(out))
    return Native("asan", str(out), (runtime,))


@pytest.fixture(scope="module")
def host_probe(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("report-probe")
    unpriv.world_tmpdir(str(base))
    exe = base / "report_probe"
    subprocess.run(["cc", "-O1", "-o", str(exe), str(PROBE_SRC), "-ldl"], check=True)
    return str(exe)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> MiniStore:
    """The fakechroot tests' mini store, with the test program as a store program."""
    base = tmp_path_factory.mktemp("report-store")
    unpriv.world_tmpdir(str(base))
    ms = build_mini_store(base)
    probe = ms.path / "gnu" / "store" / RPROBE / "bin" / "report_probe"
    probe.parent.mkdir(parents=True)
    subprocess.run(["cc", "-O1", "-o", str(probe), str(PROBE_SRC), "-ldl"], check=True)
    _patch(probe, rpath=f"{P}/{item('glibc-2.36', 1)}/lib")
    for d in (probe.parent, probe.parent.parent):
        os.chmod(d, 0o755)
    return MiniStore(StoreRoot.open(ms.path), ms.path)


@dataclass
class Servers:
    port: int
    unix: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("report-sock")
    unpriv.world_tmpdir(str(base))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    path = str(base / "sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    os.chmod(path, 0o777)
    unix.listen(16)
    yield Servers(tcp.getsockname()[1], path)
    tcp.close()
    unix.close()


@dataclass
class Record:
    path: Path
    fd: int

    def lines(self) -> list[list[str]]:
        text = self.path.read_text()
        assert text == "" or text.endswith("\n"), text[-200:]
        rows = [ln.split("\t") for ln in text.splitlines()]
        for row in rows:
            assert len(row) == 6, row
            mech, op, result, pid, program, _ = row
            assert mech in ("preload", "audit"), row
            assert op in ("open", "write", "list", "stat", "readlink", "exec", "dlopen",
                          "connect"), row
            assert result == "-" or result.isdigit(), row
            assert pid.isdigit() and program, row
        return rows

    def has(self, mech: str, op: str, path: str, result: str | None = "0",
            program: str | None = None) -> bool:
        return any(r[0] == mech and r[1] == op and r[5] == path
                   and (result is None or r[2] == result)
                   and (program is None or r[4] == program) for r in self.lines())


@pytest.fixture
def record(tmp_path) -> Iterator[Record]:
    path = tmp_path / "record"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.set_inheritable(fd, True)
    yield Record(path, fd)
    os.close(fd)


@pytest.fixture
def work(tmp_path) -> Path:
    """A directory the unprivileged user may write to."""
    d = tmp_path / "work"
    d.mkdir()
    unpriv.world_tmpdir(str(d))
    os.chmod(d, 0o777)
    return d


def accesses(work: Path, servers: Servers, rec: Record, *run: str) -> list[str]:
    """The test program's commands: one access of each kind, then the
    descriptors closed and RUN started."""
    odd = str(work / "tab\there\nnewline\\x")
    return [
        "open", "/etc/hostname", ",", "stat", "/etc/passwd", ",", "list", str(work), ",",
        "write", str(work / "out.txt"), ",", "write", odd, ",", "tcp", str(servers.port), ",",
        "unix", servers.unix, ",", "dlopen", str(HOST_EXTRA_LIB), ",", "chdir", "/etc", ",",
        "open", "./hosts", ",", "stat", "missing-file", ",", "closerange", ",", "closefrom",
        ",", "closeall", ",", "dup2", str(rec.fd), ",", "run", *run,
    ]


def check_accesses(rec: Record, work: Path, servers: Servers, *, dlopen_result: str) -> None:
    assert rec.has("preload", "open", "/etc/hostname")
    assert rec.has("preload", "stat", "/etc/passwd")
    assert rec.has("preload", "list", str(work))
    assert rec.has("preload", "write", str(work / "out.txt"))
    escaped = str(work).replace("\\", "\\\\") + "/tab\\there\\nnewline\\\\x"
    assert rec.has("preload", "write", escaped)
    assert rec.has("preload", "connect", f"tcp:127.0.0.1:{servers.port}")
    assert rec.has("preload", "connect", f"unix:{servers.unix}")
    assert rec.has("audit", "dlopen", str(HOST_EXTRA_LIB), dlopen_result)
    # relative paths are joined to the working directory
    assert rec.has("preload", "open", "/etc/hosts")
    assert rec.has("preload", "stat", "/etc/missing-file", "2")
    # an exec, and the child records too after close_range, closefrom, a
    # close of every descriptor and a dup2 onto the record's
    assert rec.has("preload", "exec", "/bin/cat", program="report_probe")
    assert rec.has("preload", "open", "/etc/hostname", program="cat")


def run_host(native: Native, rec: Record, probe: str, args: list[str],
             extra: dict[str, str] | None = None,
             skip: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin", "LC_ALL": "C",
        "LD_PRELOAD": ":".join([*native.first, os.path.join(native.dir, "nbs-preload.so")]),
        "LD_AUDIT": os.path.join(native.dir, "nbs-audit.so"),
        "NBSANDBOX_REPORT_FD": str(rec.fd),
        "NBSANDBOX_REPORT_SKIP": skip if skip is not None else native.dir,
        **native.env(), **(extra or {}),
    }
    return unpriv.run([probe, *args], env=env, pass_fds=(rec.fd,), timeout=60, cwd=cwd)


# ---------------------------------------------------------------------------
# recording only (the userns, bwrap, proot and host engines)


def test_record_only(native, host_probe, record, work, servers):
    proc = run_host(native, record, host_probe,
                    accesses(work, servers, record, "/bin/cat", "/etc/hostname"))
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stdout and proc.stderr == "", (proc.stdout, proc.stderr)
    check_accesses(record, work, servers, dlopen_result="0")
    assert record.has("audit", "dlopen", str(HOST_EXTRA_LIB), "-")
    # nothing of the skipped native directory (the preload library itself)
    assert not [r for r in record.lines() if r[5].startswith(native.dir)]


def test_relative_paths_after_a_child_changed_directory(native, record, work):
    """A vfork child (CPython's subprocess) that changes directory and execs a
    relative path does not leave its working directory to its parent."""
    other = work / "other"
    other.mkdir()
    shutil.copy("/bin/true", other / "tool")
    os.chmod(other, 0o777)
    script = ("import os, subprocess, sys\n"
              "subprocess.run(['./tool'], cwd=sys.argv[1], check=True)\n"
              "os.stat('here.txt') if os.path.exists('here.txt') else None\n"
              "open('here.txt', 'w').close()\n")
    (work / "script.py").write_text(script)
    proc = run_host(native, record, sys.executable, [str(work / "script.py"), str(other)],
                    extra={"PYTHONDONTWRITEBYTECODE": "1"}, cwd=work)
    proc_cwd = work
    assert proc.returncode == 0, proc.stderr
    assert record.has("preload", "exec", str(other / "tool"))
    assert record.has("preload", "write", str(proc_cwd / "here.txt"))
    assert not [r for r in record.lines() if r[5] == str(other / "here.txt")]


def test_skip_prefixes_are_whole_components(native, host_probe, record, work):
    (work / "skipped").mkdir()
    (work / "skipped-not").mkdir()
    skip = f"{native.dir}:{work}/skipped"
    proc = run_host(native, record, host_probe,
                    ["stat", f"{work}/skipped", ",", "stat", f"{work}/skipped/x", ",",
                     "stat", f"{work}/skipped-not", ",", "stat", f"{work}/skipped/../other", ",",
                     "stat", f"{work}//skipped/./y"], skip=skip)
    assert proc.returncode == 0, proc.stderr
    paths = [r[5] for r in record.lines() if r[1] == "stat"]
    assert paths == [f"{work}/skipped-not", f"{work}/other"]


def test_long_paths_are_cut(native, host_probe, record):
    long = "/tmp/" + "\t" * 2100  # 2105 bytes, 4205 escaped
    proc = run_host(native, record, host_probe, ["stat", long])
    assert proc.returncode == 0, proc.stderr
    raw = record.path.read_bytes().splitlines(keepends=True)
    cut = [ln for ln in raw if b"\tstat\t" in ln]
    assert len(cut) == 1 and len(cut[0]) <= 4096 and cut[0].endswith(b"\\...\n"), cut


def test_off_without_a_usable_descriptor(native, host_probe, record, work):
    # a descriptor that is not open, and one that is read-only: nothing recorded
    ro = os.open("/etc/hostname", os.O_RDONLY)
    try:
        for fd in ("987", str(ro), "x"):
            proc = unpriv.run(
                [host_probe, "open", "/etc/hostname", ",", "write", str(work / "f")],
                env={"LD_PRELOAD": ":".join([*native.first,
                                             os.path.join(native.dir, "nbs-preload.so")]),
                     "LD_AUDIT": os.path.join(native.dir, "nbs-audit.so"),
                     "NBSANDBOX_REPORT_FD": fd, **native.env()},
                pass_fds=(ro,), timeout=60)
            assert proc.returncode == 0 and proc.stderr == "", proc.stderr
            assert proc.stdout == "open: ok\nwrite: ok\n"
    finally:
        os.close(ro)
    assert record.lines() == []


# ---------------------------------------------------------------------------
# the fakechroot engine: translation and recording


def fakechroot_engine(native: Native) -> FakechrootEngine:
    if native.first:
        return AsanEngine(native.dir, native.first[0])
    return FakechrootEngine()


def run_fakechroot(native: Native, store: MiniStore, rec: Record, work: Path,
                   args: list[str]) -> subprocess.CompletedProcess:
    env = {"PATH": f"{P}/{item('profile', 7)}/bin:/usr/bin:/bin", "LC_ALL": "C",
           "NBSANDBOX_REPORT_FD": str(rec.fd),
           "NBSANDBOX_REPORT_SKIP": f"{P}:{store.path}{P}:{native.dir}", **native.env()}
    plan = make_plan(store.root, f"{P}/{RPROBE}/bin/report_probe", args, env=env,
                     cwd=str(work))
    if native.first:  # the AddressSanitizer build: an engine of the tests
        command = fakechroot_engine(native).command(plan)
    else:
        command = prepare(plan, "fakechroot").command
    return unpriv.run(command.argv, env=command.env, pass_fds=(rec.fd,), timeout=60)


def test_fakechroot_engine(native, store, record, work, servers):
    ls = f"{P}/{item('coreutils-9', 4)}/bin/ls"
    args = accesses(work, servers, record, ls, "/etc/ssl")
    proc = run_fakechroot(native, store, record, work, args)
    assert proc.returncode == 0, proc.stderr
    # the audit module keeps host libraries out of store programs: only the attempt
    assert record.has("audit", "dlopen", str(HOST_EXTRA_LIB), "-")
    assert record.has("preload", "open", "/etc/hostname")
    assert record.has("preload", "stat", "/etc/passwd")
    assert record.has("preload", "list", str(work))
    assert record.has("preload", "write", str(work / "out.txt"))
    assert record.has("preload", "connect", f"tcp:127.0.0.1:{servers.port}")
    assert record.has("preload", "connect", f"unix:{servers.unix}")
    assert record.has("preload", "open", "/etc/hosts")
    # a store program started after close_range/closefrom records its own accesses
    assert record.has("preload", "list", "/etc/ssl", None, program="ls")
    rows = record.lines()
    store_host = f"{store.path}{P}"
    assert not [r for r in rows if r[5].startswith((P + "/", store_host, native.dir))
                or r[5] in (P, store_host)], rows
    assert {r[4] for r in rows} >= {"report_probe", "ls"}


def test_fakechroot_host_program_records(native, store, record, work):
    """A host program started by a store program keeps the preload library, as
    a pure recorder, while the report is on."""
    proc = run_fakechroot(native, store, record, work,
                          ["closerange", ",", "run", "/bin/cat", "/etc/hostname"])
    assert proc.returncode == 0, proc.stderr
    assert record.has("preload", "exec", "/bin/cat", program="report_probe")
    assert record.has("preload", "open", "/etc/hostname", program="cat")


def test_fakechroot_engine_unchanged_without_report(native, store, work, tmp_path):
    plan = make_plan(store.root, f"{P}/{RPROBE}/bin/report_probe",
                     ["open", "/etc/hostname", ",", "run", "/bin/true"],
                     env={"PATH": "/usr/bin:/bin", **native.env()}, cwd=str(work))
    engine = fakechroot_engine(native)
    command = engine.command(plan)
    proc = unpriv.run(command.argv, env=command.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "open: ok\nrun: ok\n"



def test_the_preload_library_guards_the_descriptor_and_records_connect():
    from test_fakechroot_native import symbols

    exported = symbols(native_path("nbs-preload.so"), defined=True)
    assert {"close", "close_range", "closefrom", "dup2", "dup3", "fchdir",
            "connect"} <= exported
    assert not [s for s in exported if s.startswith("rec_")]


# ---------------------------------------------------------------------------
# the pure core (record.c)


def test_record_core_under_asan_and_ubsan(tmp_path):
    cc = shutil.which("clang") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler")
    src = REPO / "native" / "fakechroot"
    exe = tmp_path / "test_record"
    subprocess.run(
        [cc, "-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
         "-I", str(src), str(src / "test" / "test_record.c"), str(src / "record.c"),
         str(src / "pathmap.c"), "-o", str(exe)],
        check=True,
    )
    env = {"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"\d+ checks, 0 failures\n", proc.stdout), proc.stdout
