"""``nbsandbox kernel install|list|launch``: packed kernelspecs."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from nbsandbox.cli import main
from nbsandbox.kernelspec import PROVISIONER_NAME, connection_file_dirs

pytest.register_assert_rewrite("jupyter_fixtures")
pytest_plugins = ("jupyter_fixtures",)

from jupyter_fixtures import (  # noqa: E402
    NATIVE_PROVISIONER,
    doc_blocks,
    leftover_processes,
    make_mini_root,
    matches_doc,
)

CHECKOUT = str(Path(__file__).resolve().parents[1])


def test_install_writes_a_spec_that_names_the_provisioner_and_has_a_usable_argv(
        jupyter_dirs, kernel_root, capsys):
    assert main(["kernel", "install", str(kernel_root.path), "--name", "packed-py",
                 "--engine", "userns", "--display-name", "Packed Python"]) == 0
    assert "Installed kernelspec packed-py" in capsys.readouterr().out
    spec_dir = jupyter_dirs.kernels / "packed-py"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    argv = spec["argv"]
    python = kernel_root.metadata.python
    assert argv[argv.index("--") + 1:] == [python, "-m", "ipykernel_launcher", "-f",
                                           "{connection_file}"]
    assert argv[1:5] == ["-m", "nbsandbox", "kernel", "launch"]
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)
    assert argv[argv.index("--root") + 1] == str(kernel_root.path)
    assert argv[argv.index("--engine") + 1] == "userns"
    provisioner = spec["metadata"]["kernel_provisioner"]
    assert provisioner == {"provisioner_name": PROVISIONER_NAME,
                           "config": {"root": str(kernel_root.path), "engine": "userns"}}
    assert spec["display_name"] == "Packed Python" and spec["language"] == "python"
    assert (spec_dir / "logo-64x64.png").is_file()

    assert main(["kernel", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("packed-py"))
    assert "ok" in line and str(kernel_root.path) in line


def test_user_guide_install_example(jupyter_dirs, kernel_root, capsys):
    """The console session of docs/user-guide.md, with its paths mapped to the test's."""
    import shlex

    session = doc_blocks("user-guide.md")["example:install"].splitlines()
    to_test = {"~/packs/py": str(kernel_root.path)}
    to_doc = {str(kernel_root.path): "/home/me/packs/py",
              str(jupyter_dirs.data): "~/.local/share/jupyter"}
    i = 0
    while i < len(session):
        command = session[i].removeprefix("$ ")
        for doc, real in to_test.items():
            command = command.replace(doc, real)
        expected = []
        i += 1
        while i < len(session) and not session[i].startswith("$ "):
            expected.append(session[i])
            i += 1
        argv = shlex.split(command)
        assert argv[0] == "nbsandbox"
        main(argv[1:])
        out = capsys.readouterr().out
        for real, doc in to_doc.items():
            out = out.replace(real, doc)
        for line in expected:  # each documented line is in the output (spacing aside)
            assert any(" ".join(line.split()) == " ".join(got.split())
                       for got in out.splitlines()), (line, out)
    assert matches_doc("...", "")


def test_a_root_without_ipykernel_is_refused(jupyter_dirs, shell_root, tmp_path, capsys):
    bare = make_mini_root(tmp_path / "bare", with_site_packages=False)
    assert main(["kernel", "install", str(bare.path), "--name", "no-kernel"]) == 1
    err = capsys.readouterr().err
    assert "has no ipykernel in its Python's site-packages" in err and "pip install" in err
    assert err.count("\n") == 1
    assert main(["kernel", "install", str(shell_root.path), "--name", "no-kernel"]) == 1
    assert "has no Python" in capsys.readouterr().err
    assert not (jupyter_dirs.kernels / "no-kernel").exists()


def test_install_refuses_a_forbidden_engine(jupyter_dirs, kernel_root, tmp_path, monkeypatch,
                                            capsys):
    admin = tmp_path / "nbsandbox_admin_config.json"
    admin.write_text(json.dumps({"SandboxPolicy": {"allowed_engines": ["userns"]}}))
    monkeypatch.setenv("NBSANDBOX_ADMIN_CONFIG", str(admin))
    assert main(["kernel", "install", str(kernel_root.path), "--engine", "proot"]) == 2
    assert "'proot', which is not allowed: allowed engines are userns" in \
        capsys.readouterr().err


def test_list_reports_kernels_whose_root_is_gone(jupyter_dirs, shell_root, tmp_path, capsys):
    copy = tmp_path / "gone"
    shutil.copytree(shell_root.path, copy, symlinks=True)
    spec = {"argv": ["true"], "display_name": "gone", "language": "python",
            "metadata": {"kernel_provisioner": {"provisioner_name": PROVISIONER_NAME,
                                                "config": {"root": str(copy)}}}}
    jupyter_dirs.write_spec("gone-kernel", spec)
    shutil.rmtree(copy)
    try:
        assert main(["kernel", "list"]) == 1
        line = next(x for x in capsys.readouterr().out.splitlines()
                    if x.startswith("gone-kernel"))
        assert "broken: store root" in line and "does not exist" in line
    finally:
        shutil.rmtree(jupyter_dirs.kernels / "gone-kernel")


def test_connection_file_dirs():
    assert connection_file_dirs(["-m", "ipykernel_launcher", "-f", "/tmp/k.json"]) == ["/tmp"]
    assert connection_file_dirs(["--f=/tmp/k.json"]) == ["/tmp"]
    assert connection_file_dirs(["-f", "relative.json"]) == []


def test_the_argv_alone_runs_the_packed_kernel(jupyter_dirs, kernel_root, engines_for_nobody):
    """A front end that ignores provisioners starts the kernel from argv: it still runs
    from the store, as the launched process itself, and signal interrupts work."""
    if engines_for_nobody.get("userns"):
        pytest.skip(f"userns does not work here: {engines_for_nobody['userns']}")
    from nbsandbox.kernelspec import kernel_json

    spec = kernel_json(kernel_root, engine="userns", pythonpath=[CHECKOUT])
    spec["metadata"]["kernel_provisioner"] = {"provisioner_name": NATIVE_PROVISIONER}
    name = jupyter_dirs.write_spec("argv-only", spec)
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        reply = kc.execute_interactive(
            "import os, sys, nbsandbox; print(sys.executable, os.getpid(), "
            "os.environ['NBSANDBOX_ROOT'])",
            timeout=30, output_hook=lambda m: out.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok"
        executable, pid, root = "".join(out).split()
        assert executable == kernel_root.metadata.python
        assert int(pid) == km.provisioner.pid  # exec'd in place: the launched process
        assert root == str(kernel_root.path)
        msg_id = kc.execute("import time; time.sleep(30)")
        time.sleep(1)
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=10)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=10)
        assert reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        kc.stop_channels()
        sid = km.provisioner.pid
        km.shutdown_kernel()
        assert leftover_processes([sid]) == []
