"""Engines, end to end, as an unprivileged user: `nbsandbox run` on real packs.

Every test runs ``python -m nbsandbox run`` as uid 65534 when the suite runs
as root.  The same behaviour is required of every engine that works here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import unpriv
from engine_params import available
from glibc_stores import COMPLETE, STORES

from nbsandbox.store import StoreRoot

IN_PLACE = {"userns", "fakechroot"}  # engines that exec the program in place (same PID)
READ_ONLY = {"userns", "bwrap", "fakechroot"}  # engines that make the store read-only
SUPERVISED = {"bwrap", "proot"}  # engines whose reporter ends what the program leaves behind

EXEC_CHILD_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2) { fputs("usage: exec-child PROGRAM [ARG...]\n", stderr); return 2; }
    execv(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
"""


@pytest.fixture(scope="session")
def tools_root(tmp_path_factory) -> StoreRoot:
    """A pack of git, sh, bash and a C program that execs its argument, plus store scripts.

    The store is read-only on disk, as ``nbsandbox unpack`` leaves it.
    """
    from nbsandbox.pack import PackOptions, build_pack
    from nbsandbox.pack.unpack import make_read_only

    base = tmp_path_factory.mktemp("tools-pack")
    unpriv.world_tmpdir(str(base))
    src = base / "exec-child.c"
    src.write_text(EXEC_CHILD_C)
    exe = base / "exec-child"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    result = build_pack(PackOptions(with_python=False, output=base / "root",
                                    programs=["/usr/bin/git", "/bin/sh", "/bin/bash",
                                                      str(exe)]))
    root = StoreRoot.open(result.path)
    sh = root.resolve(root.find_program("sh"))
    scripts = {
        "hello": 'echo "hello $*"; exit ${EXIT:-0}',
        "pid": "echo $$",
        "sigself": "kill -$1 $$; sleep 5",
        "run-cmd": 'exec "$@"',
        "traps": ("trap 'echo got TERM; exit 3' TERM\n"
                  "trap 'echo got INT' INT\n"
                  "echo ready\nwhile :; do sleep 0.05; done"),
    }
    item = root.store_dir / ("t" * 32 + "-test-scripts")
    (item / "bin").mkdir(parents=True)
    bin_dir = root.to_host(root.resolve(root.profile_bin()))
    os.chmod(bin_dir, 0o755)
    for name, body in scripts.items():
        path = item / "bin" / name
        path.write_text(f"#!{sh}\n{body}\n")
        path.chmod(0o755)
        os.symlink(f"{root.prefix}/{item.name}/bin/{name}", bin_dir / name)
    make_read_only(root.store_dir)
    return StoreRoot.open(result.path)


@pytest.fixture
def workdir(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    unpriv.world_tmpdir(str(d))
    os.chmod(d, 0o777)
    return d


def nbs(root: StoreRoot, engine: str, *args: str, options=(), **kw) -> list[str]:
    return [sys.executable, "-m", "nbsandbox", "run", "--root", str(root.path),
            "--engine", engine, *options, "--", *args]


def run(argv, **kw) -> subprocess.CompletedProcess:
    return unpriv.run(argv, **kw)


# -- what the program sees ----------------------------------------------------


def test_python_sees_its_store(python_pack, engine, workdir):
    code = "import sys, ssl, sqlite3, ctypes; print(sys.prefix); print(sys.executable)"
    r = run(nbs(python_pack, engine, "python3", "-c", code), cwd=workdir)
    assert r.returncode == 0, r.stderr
    prefix, executable = r.stdout.split()
    assert (prefix.startswith("/gnu/store/") and prefix.endswith("-python-3.11.2")) or \
        prefix.startswith("/gnu/store/")
    assert executable.startswith("/gnu/store/")


def test_store_script_and_store_child(tools_root, engine, workdir):
    r = run(nbs(tools_root, engine, "hello", "a b", "c"), cwd=workdir)
    assert (r.returncode, r.stdout) == (0, "hello a b c\n"), r.stderr
    hello = tools_root.find_program("hello")
    r = run(nbs(tools_root, engine, "exec-child", hello, "from", "child"), cwd=workdir)
    assert (r.returncode, r.stdout) == (0, "hello from child\n"), r.stderr


def test_working_directory_is_kept(tools_root, engine, workdir):
    r = run(nbs(tools_root, engine, "run-cmd", "pwd"), cwd=workdir)
    assert r.stdout.strip() == str(workdir), r.stderr


def test_exit_code_is_the_programs(tools_root, engine, workdir):
    r = run(nbs(tools_root, engine, "hello"), cwd=workdir, env={**os.environ, "EXIT": "7"})
    assert r.returncode == 7, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV])
def test_signal_death_is_the_programs(tools_root, engine, workdir, sig):
    r = run(nbs(tools_root, engine, "sigself", str(int(sig))), cwd=workdir)
    assert r.returncode == -sig, (r.returncode, r.stderr)


def test_shell_sees_128_plus_n(tools_root, engine, workdir):
    cmd = " ".join(nbs(tools_root, engine, "sigself", "15"))
    r = run(["/bin/sh", "-c", f"{cmd}; echo status=$?"], cwd=workdir)
    assert "status=143" in r.stdout, r.stderr


def test_in_place_engines_keep_the_pid(tools_root, engine, workdir):
    if engine not in IN_PLACE:
        pytest.skip(f"{engine} keeps its tool as the program's parent")
    p = unpriv.popen(nbs(tools_root, engine, "pid"), cwd=workdir, stdout=subprocess.PIPE,
                     text=True)
    out, _ = p.communicate(timeout=60)
    assert int(out) == p.pid


def _wait_for(stream, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if text in line:
            return
        if not line:
            break
    raise AssertionError(f"{text!r} never came")


def test_sigterm_reaches_the_program(tools_root, engine, workdir):
    p = unpriv.popen(nbs(tools_root, engine, "traps"), cwd=workdir, stdout=subprocess.PIPE,
                     text=True)
    _wait_for(p.stdout, "ready")
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert "got TERM" in out
    assert p.returncode == 3


def test_sigint_to_the_group_reaches_the_program_once(tools_root, engine, workdir):
    p = unpriv.popen(nbs(tools_root, engine, "traps"), cwd=workdir, stdout=subprocess.PIPE,
                     text=True, start_new_session=True)
    _wait_for(p.stdout, "ready")
    os.killpg(p.pid, signal.SIGINT)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert out.count("got INT") == 1, out
    assert p.returncode == 3


def _scratch_dirs() -> set[str]:
    import tempfile

    tmp = tempfile.gettempdir()
    return {n for n in os.listdir(tmp) if n.startswith(("nbsandbox-", "proot-", "prooted-"))}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _made_by(entries: set[str], pids: set[int], cmdlines: set[str]) -> set[str]:
    """The entries our processes made (others' may come and go on a shared machine): PRoot's
    by the PID in their name, the supervisor's scratch directory by its command line."""
    def ours(entry: str) -> bool:
        if entry.startswith("nbsandbox-"):
            return any(f"/{entry} " in c or c.endswith(f"/{entry}") for c in cmdlines)
        pid = entry.split("-")[1]
        return pid.isdigit() and int(pid) in pids
    return {e for e in entries if ours(e)}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killing_the_launcher_leaves_nothing_behind(tools_root, engine, workdir, sig):
    token = f"NBS_TEST_TOKEN={uuid.uuid4().hex}"
    before = _scratch_dirs()
    name, value = token.split("=")
    env = {**os.environ, name: value}
    p = unpriv.popen(nbs(tools_root, engine, "run-cmd", "sleep", "600"), cwd=workdir, env=env,
                     start_new_session=True)
    pids: set[int] = set()
    cmdlines: set[str] = set()
    deadline = time.monotonic() + 30
    while not any(_is_sleep(pid) for pid in pids):
        assert time.monotonic() < deadline, "the program never started"
        time.sleep(0.05)
        for pid in unpriv.processes_with(token):
            pids.add(pid)
            cmdlines.add(_cmdline(pid))
    p.send_signal(sig)
    p.wait(timeout=30)
    deadline = time.monotonic() + 5
    while unpriv.processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert unpriv.processes_with(token) == []
    assert _made_by(_scratch_dirs() - before, pids, cmdlines) == set()


def _is_sleep(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "sleep"
    except OSError:
        return False


# -- no host library in a store process ---------------------------------------------

#: The host's library directories (the loader's defaults and the usual ld.so.conf ones).
HOST_LIBRARY_DIRS = ("/lib/", "/lib32/", "/lib64/", "/libx32/", "/usr/lib/", "/usr/lib32/",
                     "/usr/lib64/", "/usr/libx32/", "/usr/local/lib/")

#: A store shell that prints its own mappings, then runs the store's Python,
#: which looks up a user (NSS) and prints its mappings too.
MAPS_SCRIPT = (
    'mapfile -t m < /proc/self/maps; printf "%s\\n" "${m[@]}"; '
    'exec python3 -c "import pwd; pwd.getpwuid(0); print(open(\'/proc/self/maps\').read())"'
)


def host_libraries(maps: str, root: StoreRoot) -> set[str]:
    """ELF files from the host's library directories among the mapped files."""
    found = set()
    store = os.fspath(root.store_dir) + "/"
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        path = fields[5].removesuffix(" (deleted)")
        if root.in_store(path) or path.startswith(store):
            continue
        if path.startswith(HOST_LIBRARY_DIRS) and _is_elf(path):
            found.add(path)
    return found


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


@pytest.mark.parametrize("store", COMPLETE)
def test_no_host_library_in_a_store_process(glibc_store, engine, workdir, store):
    """Stores nbsandbox did not make, with glibc older, equal and newer than the host's,
    with and without libdl.so.2, items without hashes: every library mapped into
    a store shell and the Python it runs comes from the store (or is nbsandbox's
    own preload library and audit module)."""
    root = glibc_store(store)
    r = run(nbs(root, engine, "bash", "-c", MAPS_SCRIPT), cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    assert "[stack]" in r.stdout
    glibc, _ = STORES[store]
    assert f"glibc.{glibc}+" in r.stdout  # the store's C library is what runs
    assert host_libraries(r.stdout, root) == set()


@pytest.mark.parametrize("store", ["old", "new-nolibdl"])
def test_a_store_of_another_glibc_behaves_like_the_program(glibc_store, engine, workdir, store):
    """Exit status, signal death and working directory with glibc 2.31 and 2.41."""
    root = glibc_store(store)
    r = run(nbs(root, engine, "bash", "-c", "pwd; exit 7"), cwd=workdir)
    assert (r.returncode, r.stdout) == (7, f"{workdir}\n"), r.stderr
    r = run(nbs(root, engine, "bash", "-c", "kill -TERM $$; sleep 5"), cwd=workdir)
    assert r.returncode == -signal.SIGTERM, r.stderr


#: Path-taking calls PRoot does not translate, as a store's own programs make them:
#: bash's [[ -x ]] (faccessat2), ls -l (statx), os.access with effective ids
#: (faccessat2) and os.execve of a descriptor (execveat).
STORE_PATH_CALLS = (
    'p=$(type -P python3); [[ -x $p ]] && echo x-ok; ls -lLd "$p" >/dev/null && echo ls-ok; '
    'exec python3 -c "import os, sys; x = sys.executable; '
    'print(os.access(x, os.X_OK, effective_ids=True)); fd = os.open(x, os.O_RDONLY); '
    "os.set_inheritable(fd, True); os.execve(fd, [x, '-c', 'print(42)'], dict(os.environ))\""
)


@pytest.mark.parametrize("store", ["old", "new-nolibdl"])
def test_a_store_of_another_glibc_sees_its_store_paths(glibc_store, engine, workdir, store):
    """The system call conformance checks above, with programs nbsandbox did not build."""
    root = glibc_store(store)
    r = run(nbs(root, engine, "bash", "-c", STORE_PATH_CALLS), cwd=workdir)
    assert (r.returncode, r.stdout) == (0, "x-ok\nls-ok\nTrue\n42\n"), r.stderr


def test_a_library_missing_from_the_store_is_named(glibc_store, engine, workdir):
    """zstd needs liblz4.so.1, which the store lacks: either the program does not
    start and the loader names the library, or it starts and nbsandbox warns, in
    one line that names it, that the host's copy is loaded."""
    root = glibc_store("old-nolz4")
    r = run(nbs(root, engine, "zstd", "-V"), cwd=workdir)
    lines = [line for line in r.stderr.splitlines() if "liblz4.so.1" in line]
    assert len(lines) == 1, r.stderr
    if r.returncode == 0:
        assert lines[0].startswith("nbsandbox: warning: zstd needs liblz4.so.1"), r.stderr
        assert "zstd" in r.stdout
    else:
        assert r.returncode == 127 and "cannot open shared object file" in lines[0]


# -- system calls that take a store path ------------------------------------------
# (PRoot passes faccessat2, statx and execveat through untranslated; C libraries
# fall back to translated calls when the engine's filter refuses them.)


def _store_python(python_pack, engine, workdir, code: str) -> str:
    r = run(nbs(python_pack, engine, "python3", "-c", code), cwd=workdir)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_access_with_effective_ids(python_pack, engine, workdir):
    code = "import os, sys; print(os.access(sys.executable, os.X_OK, effective_ids=True))"
    assert _store_python(python_pack, engine, workdir, code) == "True\n"


def test_statx_of_a_store_path(python_pack, engine, workdir):
    # glibc's statx(), as programs call it; its size must be fstatat's.
    code = ("import ctypes, os, sys\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "buf = ctypes.create_string_buffer(256)\n"
            "r = libc.statx(-100, sys.executable.encode(), 0, 0x7ff, buf)\n"
            "assert r == 0, os.strerror(ctypes.get_errno())\n"
            "size = int.from_bytes(buf.raw[40:48], sys.byteorder)\n"
            "print(size == os.stat(sys.executable).st_size)")
    assert _store_python(python_pack, engine, workdir, code) == "True\n"


@pytest.mark.parametrize("inheritable", [True, False], ids=["inheritable", "cloexec"])
def test_fexecve_of_a_store_program(python_pack, engine, workdir, inheritable, request):
    if engine == "proot" and not inheritable:
        why = ("under proot, fexecve of a close-on-exec descriptor cannot work: PRoot's loader "
               "reopens /proc/self/fd/N after the exec closed it (docs/engines.md)")
        request.applymarker(pytest.mark.xfail(strict=True, reason=why))
    code = ("import os, sys\n"
            "fd = os.open(sys.executable, os.O_RDONLY)\n"
            f"os.set_inheritable(fd, {inheritable})\n"
            "os.execve(fd, [sys.executable, '-c', 'print(\"fexecve ok\")'], dict(os.environ))")
    assert _store_python(python_pack, engine, workdir, code) == "fexecve ok\n"


def test_bash_x_test_on_a_store_program(tools_root, engine, workdir):
    hello = tools_root.find_program("hello")
    script = f"[[ -x {hello} ]] && echo executable; [[ -w {hello} ]] || echo read-only"
    r = run(nbs(tools_root, engine, "bash", "-c", script), cwd=workdir)
    assert (r.returncode, r.stdout) == (0, "executable\nread-only\n"), r.stderr


# -- descendants ----------------------------------------------------------------------


def test_detached_child_does_not_keep_the_run(tools_root, engine, workdir):
    """The run ends when the program ends.  What it leaves behind gets
    SIGTERM, then SIGKILL, from a supervised engine's reporter; in-place
    engines leave it running, as without nbsandbox (docs/engines.md)."""
    token = f"NBS_TEST_TOKEN={uuid.uuid4().hex}"
    name, value = token.split("=")
    quiet = "</dev/null >/dev/null 2>&1"
    script = (f"(trap '' TERM; exec sleep 600) {quiet} & setsid sleep 600 {quiet} & "
              "echo started")
    r = run(nbs(tools_root, engine, "run-cmd", "sh", "-c", script), cwd=workdir,
            env={**os.environ, name: value})
    assert (r.returncode, r.stdout) == (0, "started\n"), r.stderr
    def left() -> list[int]:
        return [pid for pid in unpriv.processes_with(token) if _is_sleep(pid)]

    if engine in SUPERVISED:
        assert left() == []  # the reporter has waited for them to end
        return
    # In place: both outlive the run (each may still be exec'ing sleep).
    deadline = time.monotonic() + 30
    while len(left()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = left()
    try:
        assert len(survivors) == 2
    finally:
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)


# -- plan options ---------------------------------------------------------------


def test_isolate_home_hides_the_users_git_config(tools_root, engine, tmp_path):
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / ".gitconfig").write_text("[user]\n\tname = Secret Person\n")
    unpriv.world_tmpdir(str(home / "work"))
    for p in (home, home / "work", home / ".gitconfig"):
        os.chown(p, unpriv.NOBODY, unpriv.NOBODY) if os.getuid() == 0 else None
    env = {**unpriv.unprivileged_env(home=str(home))}
    seen = run(nbs(tools_root, engine, "git", "config", "--global", "--list"),
               cwd=home / "work", env=env)
    assert "Secret Person" in seen.stdout, seen.stderr
    hidden = run(nbs(tools_root, engine, "git", "config", "--global", "--list",
                     options=["--isolate-home"]), cwd=home / "work", env=env)
    assert "Secret Person" not in hidden.stdout + hidden.stderr
    # The working directory inside the home stays visible (and writable).
    r = run(nbs(tools_root, engine, "run-cmd", "sh", "-c", "pwd; echo x > f && cat f",
                options=["--isolate-home"]), cwd=home / "work", env=env)
    assert r.stdout.split() == [str(home / "work"), "x"], r.stderr


def test_bind_and_hide(tools_root, engine, workdir):
    if engine == "fakechroot":
        pytest.skip("fakechroot maps paths; see test_fakechroot for its own bind tests")
    data = workdir / "data"
    data.mkdir()
    (data / "x").write_text("bound\n")
    r = run(nbs(tools_root, engine, "run-cmd", "cat", "/nbsandbox-test/x", "/etc/hostname",
                options=["--bind", f"{data}:/nbsandbox-test", "--hide", "/etc/hostname"]),
            cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "bound\n"


def test_write_into_the_store_fails(tools_root, engine, workdir):
    """EROFS where the engine mounts the store read-only; under proot the
    file modes decide (this store is read-only on disk: EACCES)."""
    target = f"{tools_root.prefix}/{tools_root.items()[0]}/new-file"
    # The store's own shell writes (under fakechroot, host programs do not see the store).
    r = run(nbs(tools_root, engine, "sh", "-c", f": > {target}"), cwd=workdir)
    assert r.returncode != 0
    expected = "Read-only file system" if engine in READ_ONLY else "Permission denied"
    assert expected in r.stderr, r.stderr


def test_dry_run_prints_a_command_that_runs_as_printed(tools_root, engine, workdir):
    r = run(nbs(tools_root, engine, "hello", "dry run", options=["--dry-run"]), cwd=workdir)
    assert r.returncode == 0 and r.stdout.startswith("env "), r.stderr
    printed = run(["sh", "-c", r.stdout], cwd=workdir)
    assert (printed.returncode, printed.stdout) == (0, "hello dry run\n"), printed.stderr


def test_nested_user_namespace_works_under_userns(tools_root, workdir):
    if not available("userns"):
        pytest.skip("no user namespaces here")
    r = run(nbs(tools_root, "userns", "run-cmd", "unshare", "-Ur", "id", "-u"), cwd=workdir)
    assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr


# -- hosts without user namespaces -------------------------------------------------


def test_without_user_namespaces_default_falls_back_to_proot(tools_root, workdir):
    r = run(nbs(tools_root, "userns", "hello"), cwd=workdir, no_userns=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "user namespace" in lines[0], r.stderr
    r = run(nbs(tools_root, "default", "hello", "there", options=["--explain"]), cwd=workdir,
            no_userns=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello there\n"
    assert "engine: proot" in r.stderr and "skipped userns:" in r.stderr


def test_doctor_without_user_namespaces(tools_root, workdir):
    r = run([sys.executable, "-m", "nbsandbox", "doctor", "--root", str(tools_root.path)],
            cwd=workdir, no_userns=True)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert "unavailable" in rows["userns"]
    assert "default      -> proot" in r.stdout
    assert "hello" in r.stdout


def test_explicit_unknown_engine_is_a_usage_error(tools_root, workdir):
    r = run(nbs(tools_root, "turbo", "hello"), cwd=workdir)
    assert r.returncode == 2
    assert r.stderr.startswith("nbsandbox: error: unknown engine 'turbo'")


def test_proot_leftovers_of_one_process_are_removed_and_no_others():
    from nbsandbox.engines.proot import remove_leftovers

    pid = 4_000_000 + os.getpid() % 100_000  # above pid_max: no live PRoot has it
    mine = [Path(f"/tmp/proot-{pid}-abc"), Path(f"/tmp/prooted-{pid}-def")]
    other = [Path(f"/tmp/proot-{pid}0-abc"), Path(f"/tmp/prooted-{pid + 1}-def")]
    try:
        mine[0].mkdir()
        (mine[0] / "glue").mkdir()
        for path in (mine[1], *other):
            path.write_text("x")
        remove_leftovers(pid)
        assert [p.exists() for p in mine] == [False, False]
        assert [p.exists() for p in other] == [True, True]
    finally:
        for path in other:
            path.unlink(missing_ok=True)
