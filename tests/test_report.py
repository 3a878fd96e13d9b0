"""The access report (docs/access.md): raw records to a grouped, versioned JSON report, and
the front ends that record a run (``nbsandbox run --report``, ``%%sandbox --report``,
``nbsandbox report``, ``--as-policy``), end to end under every engine as an unprivileged
user."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import unpriv
from host_fixtures import ACCESS_PROGRAM, unprivileged_host

from nbsandbox.native import native_dir
from nbsandbox.report import as_policy, document, render
from nbsandbox.report.aggregate import aggregate
from nbsandbox.report.groups import Places, group_of
from nbsandbox.report.records import CUT_MARK, parse_line, parse_lines, unescape

pytest.register_assert_rewrite("jupyter_fixtures")
pytest_plugins = ("jupyter_fixtures",)


def _native_has(name: str, marker: bytes) -> bool:
    try:
        return marker in (native_dir() / name).read_bytes()
    except OSError:
        return False


#: The native recorders write records (REPORT-CONTRACT.md).
RECORDERS = _native_has("nbs-preload.so", b"NBSANDBOX_REPORT_FD") and \
    _native_has("nbs-audit.so", b"NBSANDBOX_REPORT_FD")
#: The launcher records static programs' system calls.
SECCOMP = _native_has("nbs-launch", b"--report-seccomp")
needs_recorders = pytest.mark.skipif(not RECORDERS, reason="the native recorders "
                                     "(nbs-preload.so/nbs-audit.so with NBSANDBOX_REPORT_FD) "
                                     "are not built")

# -- records, accesses, groups ---------------------------------------------------------------


def test_unescape_and_parse():
    assert unescape(r"a\\b\tc\nd") == "a\\b\tc\nd"
    assert unescape("/very/long\\...") == "/very/long" + CUT_MARK
    r = parse_line("preload\topen\t2\t42\tgit\t/home/u/with\\ttab\n")
    assert r is not None and (r.mech, r.op, r.result, r.pid, r.program, r.path) == \
        ("preload", "open", 2, 42, "git", "/home/u/with\ttab")
    assert parse_line("audit\tdlopen\t-\t1\tpy\t/usr/lib/libz.so").result is None
    for bad in ("preload\topen\t0\t1\tx", "magic\topen\t0\t1\tx\t/a", "preload\tfly\t0\t1\tx\t/a",
                "preload\topen\tE\t1\tx\t/a", "preload\topen\t0\tpid\tx\t/a"):
        assert parse_line(bad) is None, bad
    records, bad_count = parse_lines(["preload\topen\t0\t1\tx\t/a\n", "cut-off line", "\n"])
    assert len(records) == 1 and bad_count == 1


def test_aggregate_counts_outcomes_programs_mechanisms():
    records, _ = parse_lines([
        "preload\topen\t0\t1\tgit\t/etc/gitconfig",
        "preload\topen\t2\t2\tgit\t/etc/gitconfig",
        "seccomp\topen\t2\t3\tgo\t/etc/gitconfig",
        "preload\tstat\t0\t1\tgit\t/etc/gitconfig",
        "preload\topen\t0\t9\tproot\t/tmp/prooted-1",
    ])
    accesses = aggregate(records, ignore_programs=["proot"])
    assert [(a.path, a.op) for a in accesses] == [("/etc/gitconfig", "open"),
                                                  ("/etc/gitconfig", "stat")]
    opened = accesses[0]
    assert (opened.count, opened.ok, dict(opened.failed)) == (3, 1, {"ENOENT": 2})
    assert opened.programs == {"git", "go"} and opened.mechanisms == {"preload", "seccomp"}


@pytest.mark.parametrize("path, op, group", [
    ("/home/u/.gitconfig", "open", "home"),
    ("/real/home/.bashrc", "stat", "home"),
    ("/home/u/project/x.c", "open", "cwd"),  # the working directory is in home
    ("/tmp/x", "write", "tmp"),
    ("/etc/hostname", "open", "etc"),
    ("/usr/lib/x86_64-linux-gnu/libz.so.1", "open", "libraries"),
    ("/opt/lib/libfoo.so", "dlopen", "libraries"),
    ("/usr/bin/git", "exec", "programs"),
    ("/proc/self/status", "open", "system"),
    ("/dev/null", "write", "system"),
    ("tcp:127.0.0.1:80", "connect", "network"),
    ("/srv/data", "list", "other"),
])
def test_groups(path, op, group):
    places = Places(("/home/u", "/real/home"), "/home/u/project", ("/tmp",))
    assert group_of(path, op, places) == group


def _report(lines: list[str], places: Places) -> dict:
    records, bad = parse_lines(lines)
    run = {"engine": "userns", "program": "/gnu/store/x-py/bin/python3", "program_name": "python3",
           "exit": {"status": 0, "signal": None}}
    return document.build(aggregate(records), run, places, malformed=bad)


def test_document_round_trip_and_rendering(tmp_path):
    places = Places((str(tmp_path),), str(tmp_path / "w"), ("/tmp",))
    report = _report([f"preload\topen\t0\t1\tpython3\t{tmp_path}/.gitconfig",
                      "preload\tconnect\t111\t1\tpython3\ttcp:127.0.0.1:9"], places)
    target = tmp_path / "r.json"
    document.write(str(target), report)
    assert document.load(str(target)) == report
    assert report["format"] == document.FORMAT and report["version"] == document.VERSION
    assert report["summary"]["groups"] == {"home": 1, "network": 1}
    text = render.text(report)
    assert "your home's config files:" in text and "ECONNREFUSED" in text
    assert "<table>" in render.html_table(report) and "| open | ok |" in render.markdown(report)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


@pytest.mark.parametrize("content, message", [
    ("not json", "not JSON"),
    ('{"a": 1}', "is not an access report"),
    ('{"format": "nbsandbox-access-report", "version": 99, "run": {}, "accesses": []}',
     "version 99"),
])
def test_load_refuses_what_is_not_a_report(tmp_path, content, message):
    from nbsandbox.errors import UsageError

    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        document.load(str(path))


def test_as_policy_collapses_and_keeps_existing_paths(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".gitconfig").write_text("")
    (work / "src").mkdir(parents=True)
    places = Places((str(home),), str(work), ("/nonexistent-tmp",))
    report = _report([
        f"preload\topen\t0\t1\tgit\t{home}/.gitconfig",
        f"preload\topen\t2\t1\tgit\t{home}/.config/git/attributes",
        f"preload\tstat\t2\t1\tgit\t{home}/.missing/deeper",
        f"preload\twrite\t0\t1\tgit\t{work}/src/new.o",
        f"preload\twrite\t0\t1\tgit\t{work}/out.txt",
        "preload\topen\t0\t1\tgit\t/etc/hostname",
        "preload\topen\t0\t1\tgit\t/proc/self/maps",
        "audit\tdlopen\t-\t1\tgit\t/usr/lib/nowhere/libx.so",
        "preload\tconnect\t0\t1\tgit\tunix:/run/x.sock",
    ], places)
    values, notes = as_policy.settings(report)
    assert values["allowed_write"] == [str(work)]
    # failed opens, stat and the library search candidate need no rule
    assert values["allowed_read"] == sorted(["/etc/hostname", str(home / ".gitconfig")])
    assert values["network"] is False  # a Unix socket is not TCP
    assert all(os.path.exists(p) for p in values["allowed_read"] + values["allowed_write"])
    text, _ = as_policy.config_text(report)
    assert json.loads(text)["SandboxPolicy"] == values
    assert notes == []


def test_recording_finish_writes_atomically_and_removes_the_raw_file(tmp_path):
    from nbsandbox.report.recording import Recording, _open_raw

    target = str(tmp_path / "r.json")
    raw, fd, private = _open_raw(target)
    os.write(fd, b"preload\topen\t0\t1\tcat\t/etc/hostname\n")
    recording = Recording(target, raw, fd, {"engine": "host", "program": "cat"},
                          Places(("/h",), "/w", ("/tmp",)))
    report = recording.finish(-15)
    assert report["run"]["exit"] == {"status": None, "signal": "SIGTERM"}
    assert document.load(target)["accesses"][0]["path"] == "/etc/hostname"
    assert os.listdir(tmp_path) == ["r.json"] and private is None
    assert recording.finish(0) is report


def test_seccomp_option_goes_into_the_launcher_step():
    """As Landlock's options: into the launcher's own step (PRoot then without its seccomp
    acceleration, unseen by the program), else through ``nbs-launch restrict``."""
    from nbsandbox.engines.base import Command
    from nbsandbox.native import native_path
    from nbsandbox.report.recording import _tool_programs, _with_seccomp

    launcher = str(native_path("nbs-launch"))
    proot = Command([launcher, "supervise", "--", "/usr/bin/proot", "-w", "/", launcher,
                     "report", "--fd", "3", "--", "/gnu/store/x/bin/p"], {"A": "1"}, "proot",
                    fds=(7,))
    out = _with_seccomp(proot)
    i = out.argv.index("report")
    assert out.argv[i + 1:i + 4] == ["--report-seccomp", "--unsetenv", "PROOT_NO_SECCOMP"]
    assert out.env == {"A": "1", "PROOT_NO_SECCOMP": "1"} and out.fds == (7,)
    assert _tool_programs(out) == ("proot",)
    host = Command(["p", "arg"], {}, "host", executable="/gnu/store/x/bin/p")
    assert _with_seccomp(host).argv == [launcher, "restrict", "--report-seccomp", "--argv0",
                                        "p", "--", "/gnu/store/x/bin/p", "arg"]
    assert _tool_programs(host) == ()


def test_policy_report_settings(tmp_path):
    from nbsandbox.errors import PolicyError, UsageError
    from nbsandbox.policy.fold import Policy
    from nbsandbox.policy.layers import Layer

    admin = Layer("administrator", "admin.json", {"report_dir": str(tmp_path),
                                                  "report_ignore": ["/usr/share"]})
    policy = Policy.fold([admin, Layer("request", "the request", {"report_ignore": ["/opt"]})])
    assert policy.report_dir == str(tmp_path) and policy.report_ignore == ("/usr/share", "/opt")
    with pytest.raises(PolicyError, match="report_dir"):
        Policy.fold([admin, Layer("request", "the request", {"report_dir": ""})])
    with pytest.raises(UsageError, match="relative"):
        Policy.fold([Layer("request", "the request", {"report_ignore": ["rel/path"]})])


# -- end to end --------------------------------------------------------------------------------

#: See host_fixtures.ACCESS_PROGRAM.
PROGRAM = ACCESS_PROGRAM

@pytest.fixture
def host(tmp_path) -> dict:
    with unprivileged_host(tmp_path) as h:
        yield h


def nbsandbox(host: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "nbsandbox", *args]
    return unpriv.run(argv, cwd=host["work"],
                      env={**os.environ, "HOME": str(host["home"]), **(env or {})})


def run(root, engine: str, host: dict, *options: str, extra: tuple[str, ...] = (),
        env: dict | None = None) -> subprocess.CompletedProcess:
    return nbsandbox(host, "run", "--root", str(root.path), "--engine", engine, *options,
                     "--", "python3", "-c", PROGRAM, str(host["port"]), *extra, env=env)


def by_key(report: dict) -> dict[tuple[str, str], dict]:
    return {(a["path"], a["op"]): a for a in report["accesses"]}


#: Writes a record of its own to the report's descriptor, prints the recorders' variables.
SELF_RECORDING = r"""
import json, os
fd = int(os.environ["NBSANDBOX_REPORT_FD"])
os.write(fd, b"preload\topen\t0\t1\tself\t/self/recorded\n")
print(json.dumps({k: os.environ.get(k, "") for k in ("NBSANDBOX_REPORT_SKIP", "LD_PRELOAD")}))
"""


def test_the_descriptor_and_variables_reach_the_program(python_pack, engine, host):
    """The launch plumbing under each engine, whatever the recorders do: the program
    inherits the descriptor (through bubblewrap, PRoot, the launcher) and the skip list."""
    target = host["work"] / "r.json"
    proc = nbsandbox(host, "run", "--root", str(python_pack.path), "--engine", engine,
                     "--report", str(target), "--", "python3", "-c", SELF_RECORDING)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    skip = seen["NBSANDBOX_REPORT_SKIP"].split(":")
    assert skip[0] == "/gnu/store" and str(python_pack.path / "gnu" / "store") in skip[:3]
    if engine != "fakechroot":  # there the preload library is loaded already, unseen
        assert "nbs-preload.so" in seen["LD_PRELOAD"]
    report = document.load(str(target))
    assert by_key(report)[("/self/recorded", "open")]["programs"] == ["self"]
    assert report["run"]["engine"] == engine
    assert sorted(p.name for p in host["work"].iterdir()) == ["r.json"]  # raw file removed


@needs_recorders
def test_report_names_the_host_paths_and_no_store_path(python_pack, engine, host):
    target = host["work"] / "report.json"
    proc = run(python_pack, engine, host, "--report", str(target))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == dict.fromkeys(results, 0)
    report = document.load(str(target))
    seen = by_key(report)
    home, work = str(host["home"]), str(host["work"])
    assert seen[(f"{home}/.gitconfig", "open")]["ok"] >= 1
    assert seen[(f"{home}/.gitconfig", "open")]["group"] == "home"
    assert ("/etc/hostname", "open") in seen
    assert (home, "list") in seen
    assert seen[(f"{home}/written", "write")]["group"] == "home"
    assert seen[(f"{work}/written", "write")]["group"] == "cwd"
    # a connect with a timeout is non-blocking: EINPROGRESS, then it completes
    assert (f"tcp:127.0.0.1:{host['port']}", "connect") in seen
    store_dir = str(python_pack.path)
    for access in report["accesses"]:
        assert not access["path"].startswith(("/gnu/store", store_dir)), access
        assert "python3" in access["programs"] or access["group"] != "home", access
    run_info = report["run"]
    assert run_info["engine"] == engine and run_info["exit"] == {"status": 0, "signal": None}
    assert set(run_info["mechanisms"]) >= {"preload", "audit"}
    assert sorted(p.name for p in host["work"].iterdir()) == ["report.json", "written"]


def test_exit_status_and_signal_pass_through(python_pack, host):
    target = host["work"] / "r.json"
    proc = nbsandbox(host, "run", "--root", str(python_pack.path), "--engine", "userns",
                     "--report", str(target), "--", "python3", "-c", "raise SystemExit(7)")
    assert proc.returncode == 7 and document.load(str(target))["run"]["exit"]["status"] == 7
    proc = nbsandbox(host, "run", "--root", str(python_pack.path), "--engine", "userns",
                     "--report", str(target), "--", "python3", "-c",
                     "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert proc.returncode == -15, proc.stderr
    assert document.load(str(target))["run"]["exit"]["signal"] == "SIGTERM"


def test_signals_sent_to_nbsandbox_reach_the_program(python_pack, host):
    target = host["work"] / "r.json"
    argv = [sys.executable, "-m", "nbsandbox", "run", "--root", str(python_pack.path),
            "--engine", "userns", "--report", str(target), "--", "python3", "-c",
            "import signal, sys, time\n"
            "signal.signal(signal.SIGUSR1, lambda *a: (print('usr1', flush=True), sys.exit(5)))\n"
            "print('ready', flush=True)\ntime.sleep(60)"]
    proc = unpriv.popen(argv, cwd=host["work"], env={**os.environ, "HOME": str(host["home"])},
                        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=60) == 5 and proc.stdout.read() == "usr1\n"
    finally:
        proc.kill()
    assert document.load(str(target))["run"]["exit"]["status"] == 5


@pytest.mark.parametrize("options, message", [
    (["--report", "/nonexistent-nbsandbox/r.json"], "does not exist"),
    (["--report", "/proc/r.json"], "not writable"),
    (["--report", "/tmp"], "is a directory"),
    (["--report", "r.json", "--report-ignore", "relative/dir"], "is relative"),
    (["--report-ignore", "/usr"], "only makes sense with --report"),
])
def test_bad_input_is_one_line_and_nothing_runs(python_pack, host, options, message):
    proc = run(python_pack, "userns", host, *options)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert list(host["work"].iterdir()) == []  # the program did not write; no partial JSON


@needs_recorders
def test_report_command_and_as_policy_compose_loop(python_pack, host):
    """Learn (a recorded run) -> --as-policy -> configuration -> an enforcing run: the same
    program passes, a new access fails."""
    from nbsandbox import landlock

    if landlock.abi() < landlock.NETWORK_ABI:
        pytest.skip("needs Landlock ABI 4 (Linux 6.7) in this kernel")
    target = host["work"] / "learned.json"
    assert run(python_pack, "userns", host, "--report", str(target)).returncode == 0
    shown = nbsandbox(host, "report", str(target))
    assert shown.returncode == 0 and "your home's config files:" in shown.stdout
    assert f"{host['home']}/.gitconfig" in shown.stdout and "/etc/hostname" in shown.stdout
    policy = nbsandbox(host, "report", str(target), "--as-policy")
    assert policy.returncode == 0, policy.stderr
    values = json.loads(policy.stdout)["SandboxPolicy"]
    assert values["network"] is True and str(host["home"]) in values["allowed_write"]
    config = host["base"] / "jupyter"
    config.mkdir(mode=0o755)
    (config / "nbsandbox_config.json").write_text(policy.stdout)
    os.chmod(config / "nbsandbox_config.json", 0o644)
    env = {"JUPYTER_CONFIG_DIR": str(config)}
    (host["work"] / "written").unlink()
    (host["home"] / "written").unlink()
    target.unlink()
    proc = run(python_pack, "userns", host, env=env)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == dict.fromkeys(results, 0), results  # what it learned, it may do
    proc = run(python_pack, "userns", host, extra=("/etc/passwd",), env=env)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["extra"] in (1, 13), results  # what it did not, it may not
    assert results["read_hostname"] == 0


def test_report_command_bad_file_is_one_line(host):
    bad = host["work"] / "bad.json"
    bad.write_text("{}")
    os.chmod(bad, 0o644)
    for args in (["report", str(bad)], ["report", str(host["work"] / "missing.json")]):
        proc = nbsandbox(host, *args)
        assert proc.returncode == 2 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


#: A static C program: reads /etc/hostname, tests for a missing file, lists $HOME.
STATIC = r"""
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(void)
{
    char buf[64];
    int fd = open("/etc/hostname", O_RDONLY);
    if (fd >= 0) { (void)!read(fd, buf, sizeof buf); close(fd); }
    DIR *d = opendir(getenv("HOME"));
    if (d) closedir(d);
    return access("/nonexistent-static", F_OK) == 0;
}
"""


@pytest.fixture(scope="module")
def static_root(tmp_path_factory):
    """<root>/gnu/store/<item>/bin/static-probe, a static program, readable by everyone."""
    import shutil

    from nbsandbox.store import StoreRoot

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build a static program")
    base = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("static-report"))))
    (base / "probe.c").write_text(STATIC)
    exe = base / "root" / "gnu" / "store" / "0123456789abcdfghijklmnpqrsvwxyz-static-1" / \
        "bin" / "static-probe"
    exe.parent.mkdir(parents=True)
    built = subprocess.run([cc, "-static", "-O1", "-o", str(exe), str(base / "probe.c")],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot link a static program (install libc6-dev): "
                    f"{built.stderr.strip()[-200:]}")
    for path in base.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path == exe else 0o644)
    return StoreRoot.open(base / "root"), str(exe)[len(str(base / "root")):]


@pytest.mark.skipif(not SECCOMP, reason="the launcher's --report-seccomp has not been built")
def test_static_program_accesses_are_recorded(static_root, engine, host):
    """A static program loads no preload library: the launcher's seccomp recorder sees it."""
    if engine == "fakechroot":
        pytest.skip("fakechroot cannot run static programs")
    root, program = static_root
    target = host["work"] / "r.json"
    proc = nbsandbox(host, "run", "--root", str(root.path), "--engine", engine,
                     "--report", str(target), "--", program)
    assert proc.returncode == 0, proc.stderr
    report = document.load(str(target))
    seen = by_key(report)
    assert "seccomp" in report["run"]["mechanisms"], report["run"]
    assert ("/etc/hostname", "open") in seen and (str(host["home"]), "list") in seen, seen
    assert seen[("/nonexistent-static", "stat")]["failed"] == {"ENOENT": 1}
    assert not any(a["path"].startswith(("/gnu/store", str(root.path)))
                   for a in report["accesses"])


# -- the magic -------------------------------------------------------------------------------


def test_magic_shows_the_grouped_report_under_the_output(shell_root, tmp_path, monkeypatch):
    import ipython_shell
    from IPython.utils.capture import capture_output

    from nbsandbox.engines import get_engine

    if not get_engine("userns").probe().available:
        pytest.skip("userns does not work here")
    monkeypatch.setattr("nbsandbox.policy.layers.system_config_dirs",
                        lambda: [str(tmp_path / "etc")])
    monkeypatch.delenv("NBSANDBOX_ENGINE", raising=False)
    monkeypatch.chdir(tmp_path)
    ip = ipython_shell.shell()
    ip.run_line_magic("load_ext", "nbsandbox")
    target = tmp_path / "cell.json"
    try:
        with capture_output() as captured:
            ip.run_cell_magic("sandbox", f"userns --root {shell_root.path} --report={target}",
                              "cat /etc/hostname >/dev/null; echo done >written; echo hi")
    finally:
        ip.run_line_magic("unload_ext", "nbsandbox")
    assert captured.stdout == "hi\n"
    shown = [o.data for o in captured.outputs]
    assert len(shown) == 1 and "access report: bash under userns, exit status 0" in \
        shown[0]["text/plain"] and "<table>" in shown[0]["text/html"]
    report = document.load(str(target))
    if RECORDERS:
        assert "/etc/hostname" in shown[0]["text/plain"]
        assert by_key(report)[(str(tmp_path / "written"), "write")]["group"] == "cwd"
    with capture_output() as captured:  # "--report ENGINE": the engine, not a file name
        ip.run_line_magic("load_ext", "nbsandbox")
        try:
            ip.run_cell_magic("sandbox", f"--root {shell_root.path} --report userns", "true")
        finally:
            ip.run_line_magic("unload_ext", "nbsandbox")
    assert "under userns" in captured.outputs[0].data["text/plain"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.json", "written"]
    with pytest.raises(Exception, match="not --bg"):
        ip.run_line_magic("load_ext", "nbsandbox")
        try:
            ip.run_cell_magic("sandbox", f"userns --root {shell_root.path} --bg --report",
                              "true")
        finally:
            ip.run_line_magic("unload_ext", "nbsandbox")


# -- kernels -----------------------------------------------------------------------------------


@needs_recorders
def test_kernel_writes_its_report_at_shutdown(jupyter_dirs, kernel_root, engines_for_nobody,
                                              tmp_path):
    """SandboxPolicy.report_dir: a kernel the provisioner starts writes <kernel_id>.json."""
    from jupyter_client.manager import KernelManager
    from jupyter_fixtures import execute, packed_spec

    if engines_for_nobody.get("userns", "not built"):
        pytest.skip(f"userns: {engines_for_nobody.get('userns', 'not built')}")
    reports = Path(unpriv.world_tmpdir(str(tmp_path))) / "reports"
    reports.mkdir()
    name = jupyter_dirs.write_spec("reported", packed_spec(kernel_root, "userns",
                                                           report_dir=str(reports)))
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        reply, out = execute(kc, "print(len(open('/etc/hostname').read()) > 0)")
        assert reply["status"] == "ok" and out.strip() == "True", out
        assert [p.suffix for p in reports.iterdir()] == [".raw"]  # recording, no report yet
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert [p.name for p in reports.iterdir()] == [f"{km.kernel_id}.json"]
    report = document.load(str(reports / f"{km.kernel_id}.json"))
    assert ("/etc/hostname", "open") in by_key(report)
    assert report["run"]["engine"] == "userns"
