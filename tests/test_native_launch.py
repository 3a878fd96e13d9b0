"""nbs-launch, run directly: ``userns`` (exec in place), ``supervise`` + ``report``.

Everything an engine relies on is run as the unprivileged user (see
``unpriv``).  The launcher under test is built from the sources into a
temporary directory (and once more with AddressSanitizer).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import unpriv

from nbsandbox.engines.bwrap import view_args
from nbsandbox.engines.views import MountOp

REPO = Path(__file__).resolve().parent.parent
ITEM = "0123456789abcdfghijklmnpqrsvwxyz-hello-1.0"
NOBODY = unpriv.NOBODY


def build(out: Path, *args: str) -> Path:
    """Build nbs-launch from the sources into OUT (world-readable)."""
    subprocess.run([sys.executable, str(REPO / "native" / "build.py"), "--target", "nbs-launch",
                    "--out", str(out), *args], check=True, capture_output=True, text=True)
    return out / "nbs-launch"


@pytest.fixture(scope="session")
def world() -> Path:
    """A directory tree the unprivileged user can traverse, outside pytest's
    basetemp (a concurrent pytest session makes /tmp/pytest-of-<user> 0700 again)."""
    path = Path(tempfile.mkdtemp(prefix="nbs-launch-tests-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def launcher(world) -> str:
    return str(build(world / "native"))


def asan_available(tmp: Path) -> bool:
    src = tmp / "probe.c"
    src.write_text("int main(void) { return 0; }\n")
    cc = os.environ.get("CC", "cc")
    proc = subprocess.run([cc, "-fsanitize=address", str(src), "-o", str(tmp / "probe")],
                          capture_output=True)
    return proc.returncode == 0


@pytest.fixture(scope="session")
def asan_launcher(world) -> str:
    out = world / "native-asan"
    out.mkdir()
    if not asan_available(out):
        pytest.skip("the C compiler cannot build with AddressSanitizer")
    return str(build(out, "--sanitize", "address"))


@pytest.fixture(scope="session")
def store(world) -> Path:
    """A tiny relocated store: <root>/gnu/store/<item>/{bin/hello,share/data}."""
    root = world / "storeroot"
    item = root / "gnu" / "store" / ITEM
    (item / "bin").mkdir(parents=True)
    (item / "share").mkdir()
    hello = item / "bin" / "hello"
    hello.write_text('#!/bin/sh\necho "hello from the store: $*"\n')
    hello.chmod(0o755)
    (item / "share" / "data").write_text("store data\n")
    # The store belongs to the user who unpacked it, as it would: so only the
    # read-only mount can stop writes to it.
    for path in (root / "gnu", root / "gnu" / "store", *item.rglob("*"), item):
        if path.is_dir():
            path.chmod(0o755)
        os.chown(path, NOBODY, NOBODY)
    return root / "gnu" / "store"


@pytest.fixture
def work(world) -> Path:
    """A fresh directory the unprivileged user may write to."""
    path = Path(tempfile.mkdtemp(prefix="work-", dir=world))
    path.chmod(0o777)
    return path


def userns(launcher: str, store: Path, *args: str, prefix: str = "/gnu/store") -> list[str]:
    return [launcher, "userns", "--store", f"{store}:{prefix}", *args]


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def watch(argv: list[str], **kw) -> subprocess.Popen:
    """Start ARGV as the unprivileged user with an unbuffered stdout pipe."""
    return unpriv.popen(argv, stdout=subprocess.PIPE, bufsize=0, **kw)


def read_line(proc: subprocess.Popen, timeout: float = 10) -> str:
    """One line of PROC's output (stdout is raw: readline takes no more than the line)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output from the program in time"
    return proc.stdout.readline().decode()


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=10)
    return out.decode()


def gone(pid: int) -> bool:
    """True if PID has exited (a zombie that nobody reaped yet counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_until(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --- userns -------------------------------------------------------------------


def test_userns_sees_store_host_and_cwd(launcher, store, work):
    prog = sh(f"/gnu/store/{ITEM}/bin/hello a b; cat /gnu/store/{ITEM}/share/data; "
              "head -n1 /etc/os-release; pwd; id -u")
    proc = unpriv.run(userns(launcher, store, "--", *prog), cwd=work)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "hello from the store: a b"
    assert lines[1] == "store data"
    assert lines[2] == Path("/etc/os-release").read_text().splitlines()[0]
    assert lines[3] == str(work)
    assert lines[4] == str(NOBODY)


def test_userns_store_is_read_only(launcher, store):
    target = f"/gnu/store/{ITEM}/share/data"
    prog = [sys.executable, "-c",
            "import errno, sys\nfor path in sys.argv[1:]:\n try:\n  open(path, 'a')\n"
            " except OSError as e:\n  print(errno.errorcode[e.errno])",
            target, f"/gnu/store/{ITEM}/new-file"]
    proc = unpriv.run(userns(launcher, store, "--", *prog))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["EROFS", "EROFS"]
    assert (store / ITEM / "share" / "data").read_text() == "store data\n"
    assert not (store / ITEM / "new-file").exists()


@pytest.mark.parametrize(("script", "status"), [("exit 7", 7), ("kill -TERM $$", -15)])
def test_userns_status_is_the_programs(launcher, store, script, status):
    proc = unpriv.run(userns(launcher, store, "--", *sh(script)))
    assert proc.returncode == status, proc.stderr


def test_userns_program_keeps_the_pid(launcher, store):
    proc = unpriv.popen(userns(launcher, store, "--", *sh("echo $$")),
                        stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert int(out) == proc.pid


@pytest.mark.skipif(not (shutil.which("unshare") and shutil.which("bwrap")),
                    reason="needs unshare and bwrap")
def test_userns_nested_sandboxes_work(launcher, store):
    script = ("unshare -Ur true && echo unshare-ok; "
              "unshare -Urpf --mount-proc true && echo mount-proc-ok; "
              "bwrap --dev-bind / / true && echo bwrap-ok")
    proc = unpriv.run(userns(launcher, store, "--", *sh(script)))
    assert proc.stdout.split() == ["unshare-ok", "mount-proc-ok", "bwrap-ok"], proc.stderr


def test_userns_hide_tmpfs_and_bind(launcher, store, work):
    secret_dir = work / "secret-dir"
    secret_dir.mkdir()
    (secret_dir / "key").write_text("k")
    secret_file = work / "secret-file"
    secret_file.write_text("password")
    home = work / "home"
    home.mkdir()
    (home / "dotfile").write_text("host")
    project = work / "project"
    project.mkdir()
    project.chmod(0o777)
    (project / "notes").write_text("notes\n")
    iso = home / "isolated"          # does not exist on the host
    inner = iso / "project"
    script = (f"ls -A {secret_dir} | wc -l; wc -c < {secret_file}; "
              f"touch {secret_dir}/x 2>/dev/null || echo hidden-ro; "
              f"ls -A {iso}; cat {inner}/notes; "
              f"echo made > {iso}/new && cat {iso}/new; "
              f"echo from-inside > {inner}/out; echo tmp-write > {work}/tmpfile")
    argv = userns(launcher, store, "--hide", str(secret_dir), "--hide", str(secret_file),
                  "--tmpfs", str(iso), "--bind", f"{project}:{inner}",
                  "--", *sh(script))
    proc = unpriv.run(argv, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "0", "hidden-ro", "project", "notes", "made"]
    # The read-write bind and the host's /tmp write through; the rest left no trace.
    assert (project / "out").read_text() == "from-inside\n"
    assert (work / "tmpfile").read_text() == "tmp-write\n"
    assert not iso.exists()
    assert sorted(os.listdir(home)) == ["dotfile"]
    assert (secret_dir / "key").read_text() == "k"
    assert secret_file.read_text() == "password"


def test_userns_ro_bind_of_a_file(launcher, store, work):
    config = work / "config"
    config.write_text("from the host\n")
    config.chmod(0o666)  # so that only the read-only mount can refuse the write
    prog = sh("cat /etc/hostname; echo x >> /etc/hostname")
    proc = unpriv.run(userns(launcher, store, "--ro-bind", f"{config}:/etc/hostname", "--", *prog))
    assert proc.stdout == "from the host\n"
    assert "Read-only file system" in proc.stderr
    assert config.read_text() == "from the host\n"


def mount_points_under(top: str, mountinfo: str) -> dict[str, list[str]]:
    """Mount point -> per-mount options, for ``top`` and every mount below it."""
    found = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        point = fields[4].replace("\\040", " ")
        if point == top or point.startswith(top + "/"):
            found[point] = fields[5].split(",")
    return found


def test_userns_ro_bind_makes_submounts_read_only(launcher, store):
    """A read-only bind of a tree with mounts in it is read-only all the way down."""
    host = mount_points_under("/dev", Path("/proc/self/mountinfo").read_text())
    if len(host) < 2:
        pytest.skip("the host's /dev has no mounts below it to bind")
    prog = ["/bin/cat", "/proc/self/mountinfo"]
    proc = unpriv.run(userns(launcher, store, "--ro-bind", "/dev:/nbs-ro-dev", "--", *prog))
    assert proc.returncode == 0, proc.stderr
    inside = mount_points_under("/nbs-ro-dev", proc.stdout)
    assert len(inside) == len(host), (host, inside)
    assert all("ro" in options for options in inside.values()), inside


def test_userns_store_shadows_existing_host_directories(launcher, store, work):
    # The prefix exists on the host with other content ...
    taken = work / "taken" / "store"
    taken.mkdir(parents=True)
    (taken / "other").write_text("x")
    # ... or only its parent exists, with siblings that must stay visible.
    parent = work / "parent"
    parent.mkdir()
    (parent / "sibling").write_text("s")
    fresh = parent / "store"
    script = f"ls {taken}; echo --; ls {parent}; echo --; ls {fresh}; cat {parent}/sibling"
    argv = [launcher, "userns", "--store", f"{store}:{taken}", "--store", f"{store}:{fresh}",
            "--", *sh(script)]
    proc = unpriv.run(argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [ITEM, "--", "sibling", "store", "--", ITEM, "s"]
    assert os.listdir(taken) == ["other"]
    assert os.listdir(parent) == ["sibling"]


def test_userns_without_user_namespaces_fails_in_one_line(launcher, store):
    proc = unpriv.run(userns(launcher, store, "--", "/bin/true"), no_userns=True)
    assert proc.returncode == 125
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nbs-launch: unshare(CLONE_NEWUSER): ")
    assert "user namespaces" in lines[0]


def nobody_entries(directory: str) -> set[str]:
    # Other test suites' PRoot and scratch directories come and go meanwhile.
    return {e.name for e in os.scandir(directory)
            if e.stat(follow_symlinks=False).st_uid == NOBODY
            and not e.name.startswith(("proot-", "prooted-", "nbsandbox-"))}


def test_userns_leaves_nothing_on_the_host(launcher, store, work):
    before_tmp, before_work = nobody_entries("/tmp"), sorted(os.listdir(work))
    argv = userns(launcher, store, "--tmpfs", f"{work}/a/b/home", "--hide", "/etc/hostname",
                  "--", "/bin/true")
    assert unpriv.run(argv, cwd=work).returncode == 0
    assert unpriv.run([*argv[:-2], "--probe"]).returncode == 0
    assert nobody_entries("/tmp") == before_tmp
    assert sorted(os.listdir(work)) == before_work


@pytest.mark.parametrize(("program", "status"), [
    ("/nonexistent/program", 127),
    ("no-such-command-on-path", 127),
    (f"/gnu/store/{ITEM}/share/data", 126),
])
def test_userns_exec_failures_are_shell_statuses(launcher, store, program, status):
    proc = unpriv.run(userns(launcher, store, "--", program))
    assert proc.returncode == status
    assert proc.stderr.startswith(f"nbs-launch: cannot execute {program}: ")


@pytest.mark.parametrize("args", [
    ["--bind", "/nonexistent/source:/x"],
    ["--store", "no-colon"],
    ["--tmpfs", "relative/path"],
    ["--chdir", "/nonexistent/dir"],
    ["--tmpfs", "/" + "x" * 5000],
    ["--tmpfs", "/a" * 2048],  # PATH_MAX bytes: one too many with the terminating NUL
])
def test_userns_setup_failures_are_125_and_one_line(launcher, args):
    proc = unpriv.run([launcher, "userns", *args, "--", "/bin/true"])
    assert proc.returncode == 125
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("nbs-launch: ")


def test_userns_argv0_path_search_chdir_and_probe(launcher, store):
    proc = unpriv.run(userns(launcher, store, "--argv0", "renamed", "--chdir", "/etc",
                             "--", "cat", "/proc/self/cmdline", "hostname"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\0")[:3] == ["renamed", "/proc/self/cmdline", "hostname"]
    proc = unpriv.run(userns(launcher, store, "--probe", "--", "/bin/echo", "ran"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_userns_works_as_root(launcher, store):
    script = f"/gnu/store/{ITEM}/bin/hello root; id -u; touch /gnu/store/x 2>&1 || true"
    proc = subprocess.run(userns(launcher, store, "--", *sh(script)),
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["hello from the store: root", str(os.getuid())]
    assert "Read-only file system" in lines[2]
    assert not (store / "x").exists()


# --- supervise + report ---------------------------------------------------------

WRAPPERS = [w for w in ("proot", "bwrap") if shutil.which(w)]


def supervised(launcher: str, store: Path, wrapper: str, script: str,
               tmpdir: Path | None = None, prefix: str = "/gnu/store",
               report_options: tuple[str, ...] = ()) -> list[str]:
    """The store at PREFIX, whose parent need not exist on the host: bubblewrap
    gets the view the bwrap engine builds (on its own tmpfs, nothing made on the host).
    PRoot always gets a scratch directory and the janitor, as the proot engine gives
    it (TMPDIR, default: a new one in /tmp), so that no run leaves PRoot's files behind."""
    report = [launcher, "report", "--fd", "@NBS_STATUS_FD@", *report_options, "--", *sh(script)]
    if wrapper == "proot":
        tool = ["proot", "-b", f"{store}:{prefix}", *report]
    else:
        view = view_args([MountOp("store", prefix, str(store))])
        tool = ["bwrap", "--die-with-parent", *view, "--", *report]
    sup = [launcher, "supervise"]
    if tmpdir is None and wrapper == "proot":
        tmpdir = Path(f"/tmp/nbsandbox-test-{secrets.token_hex(6)}")
    if tmpdir is not None:
        sup += ["--tmpdir", str(tmpdir)]
        if wrapper == "proot":  # where PRoot releases without PROOT_TMP_DIR put files
            for prefix in PROOT_FILES:
                sup += ["--leftovers", prefix]
    return [*sup, "--", *tool]


#: PRoot's extracted loader and its glue directories for bindings to missing paths.
PROOT_FILES = ("/tmp/prooted-", "/tmp/proot-")


def proot_files(pids: set[int] | None = None) -> set[str]:
    """PRoot's files in /tmp (of the PRoot processes ``pids`` when given: other
    programs on the machine may be running PRoot meanwhile)."""
    found = {path for prefix in PROOT_FILES for path in glob.glob(prefix + "*")}
    if pids is None:
        return found
    return {p for p in found if any(os.path.basename(p).split("-")[1] == str(pid)
                                    for pid in pids)}


def wrapper_pids(supervisor: int) -> set[int]:
    """The supervisor's children (the wrapper, and the janitor when there is one)."""
    pids: set[int] = set()
    for task in glob.glob(f"/proc/{supervisor}/task/*/children"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in Path(task).read_text().split())
    return pids


def proot_env(tmpdir: Path) -> dict[str, str]:
    return {**os.environ, "PROOT_TMP_DIR": str(tmpdir)}


@pytest.fixture(params=WRAPPERS)
def wrapper(request) -> str:
    return request.param


def test_supervised_exit_status_and_store(launcher, store, wrapper):
    script = f"/gnu/store/{ITEM}/bin/hello {wrapper}; exit 7"
    proc = unpriv.run(supervised(launcher, store, wrapper, script))
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout == f"hello from the store: {wrapper}\n"


def test_supervised_store_whose_parent_is_missing_on_the_host(launcher, store, wrapper):
    # A prefix no host has: the wrapper must not need (nor make) its parents.
    top = f"/nbsandbox-absent-{uuid.uuid4().hex[:12]}"
    prefix = f"{top}/gnu/store"
    assert not os.path.lexists(top)
    script = f"{prefix}/{ITEM}/bin/hello {wrapper}; cat {prefix}/{ITEM}/share/data"
    proc = unpriv.run(supervised(launcher, store, wrapper, script, prefix=prefix))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"hello from the store: {wrapper}\nstore data\n"
    assert not os.path.lexists(top)


def test_supervised_death_by_signal_is_reproduced(launcher, store, wrapper):
    proc = unpriv.run(supervised(launcher, store, wrapper, "kill -KILL $$"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr


LOOP = 'echo ready; while :; do sleep 0.05; done'


def test_supervised_sigterm_reaches_the_program(launcher, store, wrapper):
    script = f"trap 'echo got-term; exit 3' TERM; {LOOP}"
    proc = watch(supervised(launcher, store, wrapper, script))
    try:
        assert read_line(proc) == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out = finish(proc)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (3, "got-term\n")


def test_supervised_sigint_to_the_group_reaches_the_program_once(launcher, store, wrapper):
    # The foreground child is in the program's process group: a ^C kills it
    # (status 130) at once; the shell counts the ^Cs it sees.
    script = ("n=0; trap 'n=$((n+1))' INT; trap 'echo ints=$n; exit 3' TERM; "
              "sh -c 'echo ready; exec sleep 5'; echo child=$?; while :; do sleep 0.05; done")
    proc = watch(supervised(launcher, store, wrapper, script), start_new_session=True)
    try:
        assert read_line(proc) == "ready\n"
        os.killpg(proc.pid, signal.SIGINT)
        assert read_line(proc) == "child=130\n"
        proc.send_signal(signal.SIGTERM)
        out = finish(proc)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (3, "ints=1\n")


def test_supervise_queues_signals_until_the_program_is_known(launcher):
    # A wrapper that takes its time before it starts the reporter.
    wrapper = ["/bin/sh", "-c", "trap 'echo wrapper-got-term' TERM; sleep 0.5; exec \"$@\"", "sh"]
    report = [launcher, "report", "--fd", "@NBS_STATUS_FD@", "--",
              *sh(f"trap 'echo got-term; exit 3' TERM; {LOOP}")]
    proc = watch([launcher, "supervise", "--", *wrapper, *report])
    try:
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out = finish(proc)
    finally:
        proc.kill()
    # Delivered once the program's pid is known: before its trap is set
    # (death by SIGTERM) or after (exit 3); never to the wrapper.
    assert "wrapper-got-term" not in out
    assert proc.returncode in (3, -signal.SIGTERM)


def test_supervised_program_gets_the_terminal(launcher, store, wrapper):
    script = ("echo ask; read answer; echo \"got $answer\"; "
              f"trap 'echo got-int; exit 9' INT; {LOOP}")
    argv = supervised(launcher, store, wrapper, script)
    out, code = unpriv.terminal_dialogue(argv, unpriv.unprivileged_env(), timeout=10)
    assert b"got yes" in out
    assert code == 9


def test_supervised_sigkill_leaves_no_process_and_no_tmpdir(launcher, store, wrapper, work):
    scratch = work / "scratch"
    script = f"echo $$; test -d {scratch} && echo tmpdir-ok; exec sleep 60"
    proc = watch(supervised(launcher, store, wrapper, script, tmpdir=scratch),
                 env=proot_env(scratch))
    try:
        pid = int(read_line(proc))
        assert read_line(proc) == "tmpdir-ok\n"
        assert not gone(pid)
        ours = wrapper_pids(proc.pid)
        # (PRoot releases that honour PROOT_TMP_DIR keep their files in scratch)
        assert wrapper != "proot" or proot_files(ours) or any(scratch.iterdir())
        proc.kill()
        proc.wait(timeout=10)
        assert wait_until(lambda: gone(pid)), "the program outlived the supervisor"
        assert wait_until(lambda: not scratch.exists()), os.listdir(scratch)
        assert wait_until(lambda: not proot_files(ours)), proot_files(ours)
    finally:
        proc.kill()


def test_supervised_sigkill_also_ends_detached_descendants(launcher, store, wrapper):
    script = ("setsid sh -c 'trap \"\" TERM; exec sleep 60' </dev/null >/dev/null 2>&1 & "
              "echo $!; exec sleep 60")
    proc = watch(supervised(launcher, store, wrapper, script))
    try:
        detached = int(read_line(proc))
        assert not gone(detached)
        proc.kill()
        proc.wait(timeout=10)
        assert wait_until(lambda: gone(detached), timeout=10), "a detached child outlived the run"
    finally:
        proc.kill()
        if not gone(detached):
            os.kill(detached, signal.SIGKILL)


def test_killing_the_supervisors_whole_session_leaves_no_tmpdir(launcher, store, wrapper, work):
    # As a kernel provisioner ends a kernel: SIGKILL to every process of its session.
    from nbsandbox.jupyter_runs import session_members, signal_session

    scratch = work / "scratch"
    proc = watch(supervised(launcher, store, wrapper, "echo $$; exec sleep 60", tmpdir=scratch),
                 env=proot_env(scratch), start_new_session=True)
    try:
        pid = int(read_line(proc))
        ours = wrapper_pids(proc.pid)
        signal_session(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_until(lambda: gone(pid) and not session_members(proc.pid))
        assert wait_until(lambda: not scratch.exists()), os.listdir(scratch)
        assert wait_until(lambda: not proot_files(ours)), proot_files(ours)
    finally:
        proc.kill()


def test_supervised_tmpdir_is_removed_at_exit(launcher, store, wrapper, work):
    scratch = work / "scratch"
    script = f"touch {scratch}/file && mkdir -p {scratch}/d/e && chmod 500 {scratch}/d; exit 5"
    proc = unpriv.run(supervised(launcher, store, wrapper, script, tmpdir=scratch),
                      env=proot_env(scratch))
    assert proc.returncode == 5, proc.stderr
    assert not scratch.exists()


@pytest.mark.parametrize(("wrapper_argv", "status"), [
    (sh("exit 4"), 4),
    (sh("kill -TERM $$"), -15),
    (["/nonexistent/wrapper"], 127),
])
def test_supervise_without_report_gives_the_wrappers_status(launcher, wrapper_argv, status):
    proc = unpriv.run([launcher, "supervise", "--", *wrapper_argv])
    assert proc.returncode == status


def test_supervise_replaces_the_status_fd_placeholder(launcher):
    proc = unpriv.run([launcher, "supervise", "--", "/bin/echo", "x@NBS_STATUS_FD@",
                       "@NBS_STATUS_FD@"])
    assert proc.returncode == 0
    word, fd = proc.stdout.split()
    assert word == "x@NBS_STATUS_FD@"
    assert int(fd) > 2


def test_report_protocol(launcher):
    proc = unpriv.run([launcher, "report", "--fd", "1", "--argv0", "named", "--", "/bin/sh",
                       "-c", 'echo "$0"; exit 3'])
    assert proc.returncode == 3
    # The program's output and the reporter's "P" line may come in any order.
    lines = proc.stdout.splitlines()
    pid_lines = [line for line in lines if line.startswith("P ")]
    assert len(pid_lines) == 1 and int(pid_lines[0][2:]) > 0
    assert lines[-1] == "S 768"  # 768 == 3 << 8: exit status 3
    assert sorted(lines) == sorted([pid_lines[0], "named", "S 768"])


# Raw system calls, no C library fallback: what PRoot leaves untranslated.
RAW_CALLS = f"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
path = b"/gnu/store/{ITEM}/bin/hello"
def say(name, r):
    print(name, "ok" if r == 0 else errno.errorcode[ctypes.get_errno()])
say("statx", libc.syscall(332, -100, path, 0, 0x7ff, ctypes.create_string_buffer(256)))
say("faccessat2", libc.syscall(439, -100, path, os.X_OK, 0x200))
say("faccessat", libc.syscall(269, -100, path, os.X_OK))
print("eaccess", os.access(path, os.X_OK, effective_ids=True))
"""


@pytest.mark.skipif(not shutil.which("proot"), reason="needs proot")
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="raw x86_64 system call numbers")
@pytest.mark.parametrize("accelerated", [True, False], ids=["seccomp", "no-seccomp"])
def test_report_deny_untranslated_under_proot(launcher, store, accelerated):
    env = {k: v for k, v in os.environ.items() if k != "PROOT_NO_SECCOMP"}
    if not accelerated:
        env["PROOT_NO_SECCOMP"] = "1"
    script = f"exec {sys.executable} -c '{RAW_CALLS}'"
    without = unpriv.run(supervised(launcher, store, "proot", script), env=env)
    # The kernel looks for the path on the host: ENOENT (EACCES if the host
    # has an unreadable /gnu/store).
    calls = dict(line.split() for line in without.stdout.splitlines())
    assert calls["statx"] in ("ENOENT", "EACCES") and calls["faccessat2"] == calls["statx"], \
        without.stderr
    proc = unpriv.run(supervised(launcher, store, "proot", script,
                                 report_options=("--deny-untranslated",)), env=env)
    assert proc.stdout.splitlines() == ["statx ENOSYS", "faccessat2 ENOSYS", "faccessat ok",
                                        "eaccess True"], proc.stderr


LEAVE_CHILDREN = ("(trap '' TERM; exec sleep 600) & echo $!; "
                  "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!; exit 3")


def test_supervised_program_leaves_no_descendant(launcher, store, wrapper):
    proc = unpriv.run(supervised(launcher, store, wrapper, LEAVE_CHILDREN), timeout=60)
    assert proc.returncode == 3, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2 and all(gone(p) for p in pids)


# --- AddressSanitizer builds --------------------------------------------------------


def test_asan_userns(asan_launcher, store, work):
    script = f"/gnu/store/{ITEM}/bin/hello asan; ls {work}/parent"
    (work / "parent").mkdir()
    (work / "parent" / "sibling").write_text("")
    argv = [asan_launcher, "userns", "--store", f"{store}:/gnu/store",
            "--store", f"{store}:{work}/parent/store", "--hide", "/etc/hostname",
            "--tmpfs", f"{work}/home", "--"]
    proc = unpriv.run([*argv, *sh(script)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hello", "from", "the", "store:", "asan", "sibling", "store"]
    proc = unpriv.run([*argv[:-1], "--probe"])
    assert (proc.returncode, proc.stderr) == (0, "")
    proc = unpriv.run([*argv, "/nonexistent/program"])
    assert proc.returncode == 127
    assert proc.stderr.startswith("nbs-launch: cannot execute /nonexistent/program: ")


@pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bwrap")
def test_asan_supervise_and_report(asan_launcher, store, work):
    scratch = work / "scratch"
    proc = unpriv.run(supervised(asan_launcher, store, "bwrap", "exit 7", tmpdir=scratch))
    assert (proc.returncode, proc.stderr) == (7, "")
    proc = unpriv.run(supervised(asan_launcher, store, "bwrap", "kill -TERM $$", tmpdir=scratch))
    assert (proc.returncode, proc.stderr) == (-15, "")
    proc = unpriv.run(supervised(asan_launcher, store, "bwrap", LEAVE_CHILDREN, tmpdir=scratch,
                                 report_options=("--deny-untranslated",)), timeout=60)
    assert (proc.returncode, proc.stderr) == (3, "")
    assert all(gone(int(p)) for p in proc.stdout.split())
    assert not scratch.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("proot"),
                    reason="needs root (PRoot makes its glue in the host's tree only as root) "
                           "and proot")
def test_supervised_proot_as_root_leaves_no_glue_on_the_host(launcher, store, work):
    """Run by root, PRoot makes /<top>/... for a binding to a missing path on the
    host itself (mode 000) and leaves it when killed; the janitor removes it."""
    top = f"/nbsandbox-glue-{os.getpid()}"
    assert not os.path.lexists(top)
    scratch = work / "scratch"
    argv = supervised(launcher, store, "proot", "echo $$; exec sleep 60", tmpdir=scratch,
                      prefix=f"{top}/store")
    argv[argv.index("--"):argv.index("--")] = ["--glue", top]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, bufsize=0, env=proot_env(scratch))
    try:
        pid = int(read_line(proc))
        assert oct(os.stat(f"{top}/store").st_mode & 0o7777) == "0o0", "PRoot makes no glue"
        proc.kill()
        proc.wait(timeout=10)
        assert wait_until(lambda: gone(pid)), "the program outlived the supervisor"
        assert wait_until(lambda: not os.path.lexists(top), timeout=5), os.listdir(top)
    finally:
        proc.kill()
        subprocess.run(["rm", "-rf", top], check=False)


def test_supervise_glue_keeps_what_is_not_glue(launcher, work):
    """A --glue path that holds anything but glue (directories ending in empty
    mode-000 ones) stays; so does an empty directory of another mode."""
    kept = work / "kept"
    (kept / "sub").mkdir(parents=True)
    (kept / "sub" / "file").write_text("x")
    os.chmod(kept / "sub", 0)
    os.chmod(kept, 0)
    try:
        proc = subprocess.run([launcher, "supervise", "--tmpdir", str(work / "scr"),
                               "--glue", str(kept), "--", "true"],
                              capture_output=True, text=True, timeout=20)
        assert proc.returncode == 0, proc.stderr
        assert kept.exists()
        empty = work / "empty"
        empty.mkdir()
        proc = subprocess.run([launcher, "supervise", "--tmpdir", str(work / "scr"),
                               "--glue", str(empty), "--", "true"],
                              capture_output=True, text=True, timeout=20)
        assert (proc.returncode, empty.exists()) == (0, True), proc.stderr
    finally:
        os.chmod(kept, 0o755)
        os.chmod(kept / "sub", 0o755)



SLEEPER = """
import os, threading, time
r, w = os.pipe()
threading.Thread(target=os.read, args=(r, 1), daemon=True).start()  # a thread asleep in read()
print(os.getpid(), flush=True)
while True:
    started = time.monotonic()
    try:
        time.sleep(3)
    except KeyboardInterrupt:
        print(round(time.monotonic() - started, 1), flush=True)
"""


def _thread_state(pid: int) -> tuple[str, str]:
    """(state letter, system call number) of PID's main thread."""
    try:
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
        call = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return "?", "?"
    return stat.rsplit(")", 1)[1].split()[0], call


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("proot") or (os.cpu_count() or 1) < 2,
                    reason="needs root (to hold PRoot still), proot and two CPUs")
def test_supervised_sigint_reaches_a_main_thread_that_proot_holds(launcher, store):
    """A ^C that comes while the tracer holds the program's main thread at a system
    call: the kernel gives a process-wide signal to another thread then (Python's
    handler there only sets a flag) and the main thread slept its next sleep to the
    end; the supervisor sends it to the main thread.  PRoot is slowed down (a busy
    process on its CPU, lowest priority), then held still (SIGSTOP) when the main
    thread waits for it at clock_nanosleep, where each 3 s sleep ends."""
    script = f"exec {sys.executable} -c '{SLEEPER}'"
    proc = watch(supervised(launcher, store, "proot", script), start_new_session=True)
    cpu = max(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    tracer = 0
    try:
        pid = int(read_line(proc, timeout=60))
        status = Path(f"/proc/{pid}/status").read_text()
        tracer = int(status.split("TracerPid:")[1].split()[0])
        # The program's threads, PRoot and the busy process share one CPU.
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        for p in (tracer, hog.pid, *tasks):
            os.sched_setaffinity(p, {cpu})
        os.setpriority(os.PRIO_PROCESS, tracer, 19)
        held = False
        for _ in range(20):
            deadline = time.monotonic() + 5
            while _thread_state(pid)[0] != "t" and time.monotonic() < deadline:
                pass
            os.kill(tracer, signal.SIGSTOP)
            time.sleep(0.05)
            if _thread_state(pid) == ("t", "230"):
                held = True
                break
            os.kill(tracer, signal.SIGCONT)
        assert held, "the main thread was never caught waiting for PRoot"
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)  # the supervisor forwards it meanwhile
        os.kill(tracer, signal.SIGCONT)
        # The seconds the interrupted sleep lasted: 3 when the ^C waited for its end.
        assert float(read_line(proc, timeout=30)) < 2, "the next sleep went on to its end"
    finally:
        if tracer:
            with contextlib.suppress(OSError):
                os.kill(tracer, signal.SIGCONT)
        hog.kill()
        hog.wait()
        proc.kill()
        proc.wait()
