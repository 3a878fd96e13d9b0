"""The access report's ``seccomp`` mechanism (``nbs-launch ... --report-seccomp``), end to end.

A STATIC program (no preload library can see it) runs from a small store root under
each engine whose launcher step takes the option -- ``userns``, ``report`` inside
bubblewrap and PRoot, ``restrict`` for the host -- as the unprivileged user, through
the real launch core (:func:`nbsandbox.launch.make_plan`, :func:`~nbsandbox.launch.prepare`)
with the option inserted the way :func:`nbsandbox.landlock.restrict` inserts its own.
The raw records must show what it did (read /etc/hostname, stat, list $HOME, write a
file there, look up a missing relative path, connect to a local port) and nothing
under a skip prefix (the store).  Contract: docs/access.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import unpriv
from engine_params import available
from host_fixtures import unprivileged_host

from nbsandbox.engines import Command
from nbsandbox.engines.proot import NO_SECCOMP
from nbsandbox.launch import make_plan, prepare
from nbsandbox.native import native_dir, native_path
from nbsandbox.store import StoreRoot

REPO = Path(__file__).resolve().parent.parent
ITEM = "0123456789abcdfghijklmnpqrsvwxyz-probe-1"
PREFIX = "/gnu/store"

#: The static program: what it does, in order; exits with 3 (the run's status).
PROBE = r"""
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    const char *home = getenv("HOME");
    char buf[256], path[4096];
    int fd = open("/etc/hostname", O_RDONLY);
    if (fd >= 0) { (void)!read(fd, buf, sizeof buf); close(fd); }
    struct stat st;
    printf("stat=%d\n", stat("/etc/passwd", &st));
    DIR *d = opendir(home);
    if (d) { while (readdir(d)) ; closedir(d); }
    snprintf(path, sizeof path, "%s/written", home);
    FILE *f = fopen(path, "w");
    if (f) { fputs("x", f); fclose(f); }
    (void)!access("missing-relative", F_OK);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(0x7f000001);
    printf("connect=%d\n", connect(s, (struct sockaddr *)&a, sizeof a));
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    a.sin_port = htons(53);
    (void)!connect(u, (struct sockaddr *)&a, sizeof a);
    int x = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    memcpy(un.sun_path, "\0nbs-abstract", 13);
    (void)!connect(x, (struct sockaddr *)&un, offsetof(struct sockaddr_un, sun_path) + 13);
    if (argc > 2) { /* a stat loop, for the cost per call */
        long n = atol(argv[2]);
        for (long i = 0; i < n; i++) stat("/etc/passwd", &st);
    }
    return 3;
}
"""


def static_cc() -> str | None:
    """A C compiler that links static programs here, or None."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.c"
        src.write_text("int main(void) { return 0; }\n")
        ok = subprocess.run([cc, "-static", str(src), "-o", str(Path(tmp) / "t")],
                            capture_output=True).returncode == 0
    return cc if ok else None


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> StoreRoot:
    """<root>/gnu/store/<item>/bin/probe, a static program, readable by everyone."""
    cc = static_cc()
    if cc is None:
        pytest.skip("no static C library here (cc -static fails): install libc6-dev")
    base = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("report-seccomp"))))
    src = base / "probe.c"
    src.write_text(PROBE)
    probe = base / "root" / PREFIX.lstrip("/") / ITEM / "bin" / "probe"
    probe.parent.mkdir(parents=True)
    subprocess.run([cc, "-static", "-O1", "-o", str(probe), str(src)], check=True)
    for path in base.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path == probe else 0o644)
    return StoreRoot.open(base / "root")


@pytest.fixture
def host(tmp_path) -> dict:
    """The access tests' host (see host_fixtures), and a record file."""
    with unprivileged_host(tmp_path) as h:
        records = h["base"] / "records"
        fd = os.open(records, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            yield {**h, "records": records, "fd": fd}
        finally:
            os.close(fd)


def with_report(command: Command, root: StoreRoot) -> Command:
    """``command`` with ``--report-seccomp``, as the launch core adds it: in the launcher's
    own userns/report step, else through ``nbs-launch restrict``; PRoot without its
    seccomp acceleration (a USER_NOTIF verdict would win over its SECCOMP_RET_TRACE)."""
    launcher = str(native_path("nbs-launch"))
    argv, env = list(command.argv), dict(command.env)
    for i in range(len(argv) - 1):
        if argv[i] == launcher and argv[i + 1] in ("userns", "report"):
            extra = ["--report-seccomp"]
            if command.engine == "proot":
                env[NO_SECCOMP] = "1"
                extra += ["--unsetenv", NO_SECCOMP]
            argv[i + 2:i + 2] = extra
            return Command(argv, env, command.engine, command.executable)
    argv = [launcher, "restrict", "--report-seccomp", "--argv0", command.argv[0], "--",
            command.path, *command.argv[1:]]
    return Command(argv, env, command.engine)


def skip_list(root: StoreRoot) -> list[str]:
    return [root.prefix, str(root.store_dir), str(native_dir())]


def launch(root: StoreRoot, engine: str, host: dict, *args: str) -> subprocess.CompletedProcess:
    env = unpriv.unprivileged_env(dict(os.environ), home=str(host["home"]))
    plan = make_plan(root, f"{PREFIX}/{ITEM}/bin/probe", [str(host["port"]), *args], env=env,
                     cwd=str(host["work"]))
    if engine == "host":  # the store is not at its prefix here: the program's host path
        command = Command([str(root.to_host(plan.program)), *plan.argv[1:]], dict(plan.env),
                          "host")
    else:
        command = prepare(plan, engine).command
    command = with_report(command, root)
    env = {**command.env, "NBSANDBOX_REPORT_FD": str(host["fd"]),
           "NBSANDBOX_REPORT_SKIP": ":".join(skip_list(root))}
    return subprocess.run(command.argv, executable=command.executable, env=env,
                          cwd=host["work"], pass_fds=[host["fd"]],
                          preexec_fn=unpriv.preexec(), capture_output=True, text=True,
                          timeout=120)


def records(host: dict) -> list[list[str]]:
    lines = host["records"].read_text().splitlines()
    rows = [line.split("\t") for line in lines]
    assert all(len(r) == 6 and r[0] == "seccomp" for r in rows), lines
    return rows


ENGINES = ["userns", "bwrap", "proot", "host"]


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    name = request.param
    if name != "host" and not available(name):
        pytest.skip(f"{name} does not work on this host")
    return name


def test_static_program_is_recorded(static_root, engine, host):
    proc = launch(static_root, engine, host)
    assert proc.returncode == 3, proc.stderr  # the program's status is the run's
    assert "stat=0" in proc.stdout and "connect=0" in proc.stdout, proc.stdout
    rows = records(host)
    if os.environ.get("NBS_SHOW_RECORDS"):
        print(engine, host["records"].read_text())
    seen = {(r[1], r[5]) for r in rows if r[4] == "probe"}
    home, work = str(host["home"]), str(host["work"])
    expected = {("open", "/etc/hostname"), ("stat", "/etc/passwd"), ("list", home),
                ("write", f"{home}/written"), ("stat", f"{work}/missing-relative"),
                ("connect", f"tcp:127.0.0.1:{host['port']}"), ("connect", "udp:127.0.0.1:53"),
                ("connect", "unix:@nbs-abstract")}
    assert expected <= seen, rows
    missing = [r for r in rows if r[5] == f"{work}/missing-relative"]
    assert missing[0][2] == "2", missing
    for r in rows:
        for prefix in skip_list(static_root):
            assert r[5] != prefix and not r[5].startswith(prefix + "/"), r
    assert (host["home"] / "written").exists()


def test_records_are_whole_lines_and_escaped(static_root, host):
    """A path with a tab and a newline in it: one line, escaped."""
    odd = host["home"] / "a\tb\nc"
    odd.mkdir()
    odd.chmod(0o777)
    host["home"] = odd
    proc = launch(static_root, "host", host)
    assert proc.returncode == 3, proc.stderr
    text = host["records"].read_text()
    assert "\tlist\t0\t" in text and str(odd).replace("\t", "\\t").replace("\n", "\\n") in text


def test_missing_record_fd_is_one_line():
    launcher = str(native_path("nbs-launch"))
    proc = subprocess.run([launcher, "restrict", "--report-seccomp", "--", "/bin/true"],
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 125
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "NBSANDBOX_REPORT_FD" in lines[0], proc.stderr


def test_signal_reaches_the_program_and_is_the_runs(host):
    """restrict/userns stay as the program's parent: a SIGTERM to the launcher ends the
    program, and the run ends by that signal."""
    launcher = str(native_path("nbs-launch"))
    env = unpriv.unprivileged_env(home=str(host["home"]))
    env["NBSANDBOX_REPORT_FD"] = str(host["fd"])
    env["NBS_TEST_MARK"] = mark = f"report-seccomp-{os.getpid()}-{host['port']}"
    proc = subprocess.Popen([launcher, "restrict", "--report-seccomp", "--", "/bin/sh", "-c",
                             "echo started; exec sleep 60"], env=env, pass_fds=[host["fd"]],
                            preexec_fn=unpriv.preexec(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    proc.terminate()
    assert proc.wait(timeout=30) == -15
    assert not unpriv.processes_with(f"NBS_TEST_MARK={mark}")  # nothing left behind


@pytest.fixture(scope="module")
def asan_native(tmp_path_factory) -> Path:
    out = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("asan"))))
    src = out / "t.c"
    src.write_text("int main(void) { return 0; }\n")
    if subprocess.run([os.environ.get("CC", "cc"), "-fsanitize=address", str(src), "-o",
                       str(out / "t")], capture_output=True).returncode != 0:
        pytest.skip("the C compiler cannot build with AddressSanitizer")
    subprocess.run([sys.executable, str(REPO / "native" / "build.py"), "--target", "nbs-launch",
                    "--out", str(out), "--sanitize", "address"], check=True,
                   capture_output=True, text=True)
    out.chmod(0o755)
    return out


@pytest.mark.parametrize("asan_engine", ["userns", "proot"])
def test_asan(static_root, host, asan_native, monkeypatch, asan_engine):
    """The supervisor under AddressSanitizer: userns (the launcher serves), proot
    (``supervise`` serves the listener the program sent on the status socket)."""
    if not available(asan_engine):
        pytest.skip(f"{asan_engine} does not work on this host")
    monkeypatch.setenv("NBSANDBOX_NATIVE_DIR", str(asan_native))
    proc = launch(static_root, asan_engine, host)
    assert "AddressSanitizer" not in proc.stderr, proc.stderr
    assert proc.returncode == 3, proc.stderr
    assert ("list", str(host["home"])) in {(r[1], r[5]) for r in records(host)}


def restrict_run(host: dict, script: str, **kw) -> subprocess.Popen:
    """``sh -c SCRIPT`` (dynamic programs: recorded all the same) under ``restrict
    --report-seccomp`` as the unprivileged user, with a marker in its environment."""
    env = unpriv.unprivileged_env(home=str(host["home"]))
    env["NBSANDBOX_REPORT_FD"] = str(host["fd"])
    env["NBS_TEST_MARK"] = f"report-seccomp-{os.getpid()}-{host['port']}"
    return subprocess.Popen([str(native_path("nbs-launch")), "restrict", "--report-seccomp", "--",
                             "/bin/sh", "-c", script], env=env, pass_fds=[host["fd"]],
                            cwd=host["work"], preexec_fn=unpriv.preexec(),
                            stdout=subprocess.PIPE, text=True, **kw)


def test_exec_renames_and_children_are_recorded(host):
    """The name follows an exec; a child's calls are the child's; what the program left
    running is ended with the run."""
    proc = restrict_run(host, "sleep 60 & echo $!; (cat /etc/hostname >/dev/null); "
                              "exec ls -d /etc/hostname >/dev/null")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    left = int(out.split()[0])
    assert not os.path.exists(f"/proc/{left}"), "a process the program started outlived the run"
    rows = records(host)
    seen = {(r[4], r[1], r[5]) for r in rows}
    assert ("cat", "open", "/etc/hostname") in seen, rows
    assert ("ls", "stat", "/etc/hostname") in seen or ("ls", "open", "/etc/hostname") in seen, rows
    execs = {(r[4], r[5]) for r in rows if r[1] == "exec"}
    assert ("sh", "/usr/bin/ls") in execs or ("sh", "/bin/ls") in execs, execs
    main = {r[3] for r in rows if r[1] == "exec" and r[5].endswith("/ls")}
    cat = {r[3] for r in rows if r[4] == "cat"}
    assert main and cat and not main & cat  # the subshell's calls are its own


def test_terminal_and_ctrl_c_reach_the_program(host):
    """In a terminal the program reads it (its group has the foreground) and ^C reaches it;
    the launcher ends as the program did."""
    script = ("echo ask; read answer; echo \"got $answer\"; "
              "trap 'echo got-int; exit 9' INT; echo ready; while :; do sleep 0.05; done")
    argv = [str(native_path("nbs-launch")), "restrict", "--report-seccomp", "--", "/bin/sh",
            "-c", script]
    env = unpriv.unprivileged_env(home=str(host["home"]))
    env["NBSANDBOX_REPORT_FD"] = str(host["fd"])
    os.set_inheritable(host["fd"], True)
    out, code = unpriv.terminal_dialogue(argv, env, timeout=20)
    assert b"got yes" in out
    assert code == 9


THREADS = r"""
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
static void *work(void *arg)
{
    struct stat st;
    for (int i = 0; i < 200; i++)
        stat((const char *)arg, &st);
    return NULL;
}
int main(void)
{
    pthread_t t[4];
    const char *paths[4] = {"/etc/hostname", "/etc/passwd", "/etc/group", "/nonexistent-t"};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, work, (void *)paths[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    printf("%d\n", (int)getpid());
    return 0;
}
"""


def test_threads_are_their_process(host, tmp_path):
    """A static multi-threaded program (as Go programs are): every call recorded, each
    under the process's pid, not the thread's."""
    cc = static_cc()
    if cc is None:
        pytest.skip("no static C library here (cc -static fails)")
    base = Path(unpriv.world_tmpdir(str(tmp_path)))
    (base / "t.c").write_text(THREADS)
    exe = base / "threads"
    subprocess.run([cc, "-static", "-O1", "-pthread", "-o", str(exe), str(base / "t.c")],
                   check=True)
    exe.chmod(0o755)
    env = unpriv.unprivileged_env(home=str(host["home"]))
    env["NBSANDBOX_REPORT_FD"] = str(host["fd"])
    proc = subprocess.run([str(native_path("nbs-launch")), "restrict", "--report-seccomp", "--",
                           str(exe)], env=env, pass_fds=[host["fd"]], preexec_fn=unpriv.preexec(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pid = proc.stdout.strip()
    stats = [r for r in records(host) if r[1] == "stat"]
    counts = {p: sum(1 for r in stats if r[5] == p) for p in
              ("/etc/hostname", "/etc/passwd", "/etc/group", "/nonexistent-t")}
    assert counts == dict.fromkeys(counts, 200), counts
    assert {r[3] for r in stats} == {pid} and {r[4] for r in stats} == {"threads"}
    assert {r[2] for r in stats if r[5] == "/nonexistent-t"} == {"2"}
