"""The %%sandbox magics: in an IPython InteractiveShell, and through a real kernel run as nobody.

The in-process shell runs the engines as the test's own user; the kernel tests
run a plain ipykernel as nobody with ``%load_ext nbsandbox``, so the engines run
unprivileged there.
"""

from __future__ import annotations

import _thread
import json
import os
import re
import subprocess
import threading
import time

import ipython_shell
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from jupyter_client.manager import KernelManager

from nbsandbox.jupyter_runs import session_members
from nbsandbox.policy import ADMIN_ENV

pytest.register_assert_rewrite("jupyter_fixtures")
pytest_plugins = ("jupyter_fixtures",)

from jupyter_fixtures import (  # noqa: E402
    doc_blocks,
    leftover_processes,
    matches_doc,
    native_spec,
)

TIMEOUT = 60


@pytest.fixture
def ip(shell_root, monkeypatch, tmp_path):
    """An InteractiveShell with the extension loaded and the shell pack as default root."""
    monkeypatch.setattr("nbsandbox.policy.layers.system_config_dirs",
                        lambda: [str(tmp_path / "etc")])
    monkeypatch.setenv("NBSANDBOX_ROOT", str(shell_root.path))
    monkeypatch.delenv("NBSANDBOX_ENGINE", raising=False)
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    shell = ipython_shell.shell()
    shell.run_line_magic("load_ext", "nbsandbox")
    yield shell
    shell.run_line_magic("unload_ext", "nbsandbox")
    shell.user_ns.pop("o", None)


def cell(ip, line: str, body: str) -> None:
    """Run ``%%sandbox line`` with ``body``; exceptions propagate."""
    ip.run_cell_magic("sandbox", line, body)


def test_cell_streams_output_and_decodes_split_multibyte_characters(ip, capsys):
    # 'é' is two bytes; the second comes 0.2 s after the first
    cell(ip, "userns", r"printf 'caf\xc3'; sleep 0.2; printf '\xa9 \xe2\x9c'; sleep 0.1; "
                       r"printf '\x93\n'; echo to-stderr >&2")
    out, err = capsys.readouterr()
    assert out == "café ✓\n"
    assert err == "to-stderr\n"


def test_cell_sees_the_store_at_its_prefix(ip, shell_root, capsys):
    cell(ip, "", 'echo "$BASH"; test -d /gnu/store && echo store-visible')
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("/gnu/store/") and out[0].endswith("/bin/bash")
    assert out[1] == "store-visible"


def test_out_and_err_are_captured_in_variables(ip, capsys):
    cell(ip, "--out o --err e", "echo out; echo err >&2")
    assert (ip.user_ns["o"], ip.user_ns["e"]) == ("out\n", "err\n")
    assert capsys.readouterr() == ("", "")


def test_nonzero_exit_raises_unless_told_not_to(ip):
    with pytest.raises(subprocess.CalledProcessError) as info:
        cell(ip, "", "exit 3")
    assert info.value.returncode == 3
    cell(ip, "--no-raise-error", "exit 3")


def test_line_magic_runs_one_command_from_the_root(ip, capsys):
    ip.run_line_magic("sandbox", "userns bash -c 'echo $0 \"$1\"' one 'two words'")
    assert capsys.readouterr().out == "one two words\n"
    ip.run_line_magic("sandbox", "-- cat /proc/self/comm")
    assert capsys.readouterr().out == "cat\n"


def test_python_cell_runs_in_the_roots_interpreter(ip, kernel_root, capsys):
    cell(ip, f"--python --root {kernel_root.path}",
         "import sys\nprint(sys.executable.startswith('/gnu/store/'), sys.prefix[:11])")
    assert capsys.readouterr().out == "True /gnu/store/\n"


def test_env_flag_and_allow_list(ip, tmp_path, monkeypatch, capsys):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nbsandbox_admin_config.json").write_text(
        json.dumps({"SandboxPolicy": {"env_allow": ["LANG", "LC_*"]}}))
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    cell(ip, "--env GREETING=hi", 'echo "${GREETING}-${SECRET_TOKEN:-unset}"')
    assert capsys.readouterr().out == "hi-unset\n"


def test_bad_flags_unknown_root_and_forbidden_engine_are_usage_errors(ip, tmp_path):
    with pytest.raises(UsageError, match=r"unrecognized arguments: --bogus.*%sandbox \[--root"):
        cell(ip, "--bogus", "true")
    with pytest.raises(UsageError, match="unknown root 'nope': named roots are none"):
        cell(ip, "--root nope", "true")
    with pytest.raises(UsageError, match="unknown engine 'warp'; valid: default, performance"):
        cell(ip, "warp", "true")
    with pytest.raises(UsageError, match="--env 'x' is malformed"):
        cell(ip, "--env x", "true")
    with pytest.raises(UsageError, match="no program given"):
        ip.run_line_magic("sandbox", "--root x")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nbsandbox_admin_config.json").write_text(
        json.dumps({"SandboxPolicy": {"allowed_engines": ["userns"]}}))
    with pytest.raises(UsageError, match="this cell asks for engine 'proot', which is "
                                         "not allowed: allowed engines are userns"):
        cell(ip, "proot", "true")


def test_an_admin_lock_holds_on_the_command_line_as_in_cells(ip, shell_root, tmp_path, capsys,
                                                             monkeypatch):
    """`nbsandbox run` obeys the administrator's policy, with the magic's one-line message,
    and `nbsandbox doctor` does not offer the engine it forbids."""
    from nbsandbox.cli import main

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nbsandbox_admin_config.json").write_text(
        json.dumps({"SandboxPolicy": {"allowed_engines": ["userns"]}}))
    with pytest.raises(UsageError) as in_cell:
        cell(ip, "proot", "true")
    run = ["run", "--root", str(shell_root.path), "--engine", "proot", "sh", "-c", "true"]
    assert main(run) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    shown = err.strip().removeprefix("nbsandbox: error: ")
    assert shown.replace("the command line", "this cell") == str(in_cell.value)
    monkeypatch.setenv("NBSANDBOX_ENGINE", "proot")  # the variable is a request too
    assert main(run[:3] + run[5:]) == 2
    assert "asks for engine 'proot', which is not allowed" in capsys.readouterr().err
    monkeypatch.delenv("NBSANDBOX_ENGINE")
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {e["name"]: e["allowed"] for e in report["engines"]}["proot"] is False
    assert all(m["picks"] in (None, "userns") for m in report["meta"].values())
    assert main(["doctor"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "not allowed" in rows["proot"] and "not allowed" not in rows["userns"]


def test_python_flag_needs_a_python_and_shell_cells_need_a_shell(ip, kernel_root, shell_root):
    with pytest.raises(UsageError, match="has no python"):
        cell(ip, "--python", "print(1)")


def test_named_roots_from_configuration(shell_root, monkeypatch, tmp_path, capsys):
    from traitlets.config import Config

    from nbsandbox.magics import SandboxMagics

    monkeypatch.setattr("nbsandbox.policy.layers.system_config_dirs",
                        lambda: [str(tmp_path / "etc")])
    monkeypatch.delenv("NBSANDBOX_ROOT", raising=False)
    config = Config()
    config.SandboxMagics.roots = {"tools": str(shell_root.path)}
    config.SandboxMagics.default_root = "tools"
    shell = ipython_shell.shell()
    magics = SandboxMagics(shell=shell, config=config)
    try:
        magics.sandbox("", "echo default-root")
        magics.sandbox("--root tools", "echo named-root")
        assert capsys.readouterr().out == "default-root\nnamed-root\n"
    finally:
        magics.close()


def _interrupt_when(ip, var: str, pattern: str) -> threading.Thread:
    def watch():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if re.search(pattern, ip.user_ns.get(var, "")):
                _thread.interrupt_main()
                return
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_interrupt_stops_the_whole_tree_promptly(ip, capsys):
    # bash ignores SIGINT in its background job: SIGTERM must follow
    _interrupt_when(ip, "o", r"^\d+\n")
    with pytest.raises(KeyboardInterrupt):
        cell(ip, "userns --out o", "echo $$; sleep 300 & sleep 30")
    pid = int(ip.user_ns["o"].split()[0])
    assert session_members(pid) == []
    assert "nbsandbox: interrupted; its processes ended after SIGTERM" in capsys.readouterr().err


def test_timeout_stops_the_tree(ip, capsys):
    with pytest.raises(subprocess.TimeoutExpired):
        cell(ip, "--timeout 0.5 --out o", "echo $$; sleep 30")
    assert session_members(int(ip.user_ns["o"])) == []
    cell(ip, "--timeout 0.5 --no-raise-error", "sleep 30")
    assert "timed out after 0.5 s" in capsys.readouterr().err


def test_a_cells_leftover_background_jobs_end_with_it(ip):
    cell(ip, "--out o", "echo $$; sleep 300 &")
    assert session_members(int(ip.user_ns["o"])) == []


def test_background_runs_are_tracked_and_stopped_on_unload(ip):
    cell(ip, "--bg --proc p --out o", "echo started; exec sleep 300")
    proc = ip.user_ns["p"]
    assert ip.user_ns["o"].readline() == b"started\n"
    assert proc.poll() is None
    ip.run_line_magic("unload_ext", "nbsandbox")
    assert proc.wait(timeout=10) != 0
    assert session_members(proc.pid) == []
    ip.run_line_magic("load_ext", "nbsandbox")
    with pytest.raises(UsageError, match="--proc only applies to background runs"):
        cell(ip, "--proc p", "true")


def test_doctor_shows_html_in_notebooks_and_text_in_terminals(ip):
    with capture_output() as captured:
        ip.run_line_magic("sandbox_doctor", "")
    [output] = captured.outputs
    assert "<table>" in output.data["text/html"]
    assert "engine" in output.data["text/plain"] and "userns" in output.data["text/plain"]
    assert "policy: engine default; allowed: every engine" in output.data["text/plain"]


@pytest.mark.parametrize("engine", ["userns", "proot", "fakechroot", "bwrap"])
def test_each_available_engine_runs_a_cell(ip, engine, capsys):
    from nbsandbox.engines import get_engine
    from nbsandbox.errors import NbsandboxError

    try:
        probe = get_engine(engine).probe()
    except NbsandboxError as exc:
        pytest.skip(str(exc))
    if not probe.available:
        pytest.skip(probe.reason)
    cell(ip, engine, 'echo "$BASH"; exit 0')
    assert capsys.readouterr().out.startswith("/gnu/store/")


# -- the examples of docs/user-guide.md and docs/admin-guide.md ---------------------------------


def test_user_guide_examples(ip, shell_root, kernel_root, capsys):
    from traitlets.config import Config

    from nbsandbox.magics import SandboxMagics, unload_ipython_extension

    blocks = doc_blocks("user-guide.md")
    config = Config()
    exec(blocks["example:magics-config"], {"c": config})
    assert config.InteractiveShellApp.extensions == ["nbsandbox"]
    policy = SandboxMagics(shell=ip, config=config).effective_policy()
    assert policy.default_root == "tools" and set(policy.roots) == {"tools", "py"}

    # the same names, pointing at the test's packs
    ip.run_line_magic("unload_ext", "nbsandbox")
    config.SandboxMagics.roots = {"tools": str(shell_root.path), "py": str(kernel_root.path)}
    ip.register_magics(SandboxMagics(shell=ip, config=config))
    try:
        for name in ("hello", "engine", "engine-check", "line", "bg", "bg-check"):
            ip.run_cell(blocks[f"example:{name}"]).raise_error()
            out = capsys.readouterr().out
            if f"output:{name}" in blocks:
                assert matches_doc(blocks[f"output:{name}"], out), (name, out)
    finally:
        unload_ipython_extension(ip)
        ip.run_line_magic("load_ext", "nbsandbox")


def test_admin_guide_root_refusal(ip, tmp_path):
    blocks = doc_blocks("admin-guide.md")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nbsandbox_admin_config.json").write_text(blocks["example:admin-json"])
    with pytest.raises(UsageError) as info:
        cell(ip, "--root ~/mypack", "true")
    message = "UsageError: " + str(info.value).replace(str(tmp_path / "etc"), "/etc/jupyter")
    assert message == blocks["output:admin-root-refusal"].strip()


# -- through a real kernel, as nobody ------------------------------------------------------------


def _start_native(jupyter_dirs, shell_root, mode: str):
    name = jupyter_dirs.write_spec(f"native-{mode}", native_spec(mode))
    km = KernelManager(kernel_name=name)
    km.start_kernel(env={**os.environ, "NBSANDBOX_ROOT": str(shell_root.path),
                         "PYTEST_CURRENT_TEST": "must be stripped"})
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=TIMEOUT)
    reply = kc.execute_interactive("%load_ext nbsandbox", timeout=TIMEOUT)
    assert reply["content"]["status"] == "ok"
    return km, kc


@pytest.fixture(params=["signal", "message"])
def native_kernel(request, jupyter_dirs, shell_root, engines_for_nobody):
    if engines_for_nobody.get("userns"):
        pytest.skip(f"userns does not work here: {engines_for_nobody['userns']}")
    km, kc = _start_native(jupyter_dirs, shell_root, request.param)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    assert leftover_processes([km.provisioner.pid] if km.provisioner.pid else []) == []


def test_background_runs_end_when_the_kernel_exits(jupyter_dirs, shell_root,
                                                   engines_for_nobody):
    if engines_for_nobody.get("userns"):
        pytest.skip(f"userns does not work here: {engines_for_nobody['userns']}")
    km, kc = _start_native(jupyter_dirs, shell_root, "signal")
    out: list[str] = []
    # the background sleep is not the run's top process: only the exit hook stops it
    kc.execute_interactive("%%sandbox userns --bg --out o\necho $$; sleep 300 & wait",
                           timeout=TIMEOUT)
    kc.execute_interactive("print(o.readline().decode().strip())", timeout=TIMEOUT,
                           output_hook=lambda m: out.append(m["content"].get("text", "")))
    pid = int("".join(out))
    assert session_members(pid)
    kc.stop_channels()
    km.shutdown_kernel(now=False)  # a graceful exit runs the extension's exit hook
    assert session_members(pid) == []


def test_magic_in_a_kernel_streams_output_and_stops_the_tree_on_interrupt(native_kernel):
    km, kc = native_kernel
    out: list[str] = []
    reply = kc.execute_interactive("%%sandbox userns\necho from-the-sandbox; id -u",
                                   timeout=TIMEOUT,
                                   output_hook=lambda m: out.append(m["content"].get("text", "")))
    assert reply["content"]["status"] == "ok"
    expected_uid = "65534" if os.getuid() == 0 else str(os.getuid())
    assert "".join(out) == f"from-the-sandbox\n{expected_uid}\n"

    msg_id = kc.execute("%%sandbox userns\necho $$; sleep 300 & sleep 30")
    pid = None
    while pid is None:
        msg = kc.get_iopub_msg(timeout=TIMEOUT)
        if msg["msg_type"] == "stream" and msg["parent_header"].get("msg_id") == msg_id:
            pid = int(msg["content"]["text"].split()[0])
    started = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=10)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=10)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - started < 2.0  # SIGINT, 1 s of grace, SIGTERM
    assert session_members(pid) == []
    reply = kc.execute_interactive("print('kernel alive')", timeout=TIMEOUT)
    assert reply["content"]["status"] in ("ok", "aborted")


def test_cell_under_landlock_writes_only_where_allowed(ip, tmp_path, capsys):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    cell(ip, f"userns --allow-write {allowed} --no-network",
         f"echo x > {allowed}/ok && echo wrote; (echo x > {other}/no) 2>/dev/null || echo denied")
    assert capsys.readouterr().out.split() == ["wrote", "denied"]
    assert (allowed / "ok").exists() and not (other / "no").exists()
