"""Self-running packs: a pack's bin/ programs and its kernel without nbsandbox.

Everything runs as the unprivileged user with a PATH that has neither
nbsandbox nor a virtual environment (``/usr/bin:/bin``): the wrappers are
the pack's own static launcher (nbsandbox/pack/wrappers.py,
native/launch/wrap.c).  Hosts without user namespaces are simulated as in
tests/test_host_matrix.py (``unpriv.run(..., no_userns=True)``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import unpriv

from nbsandbox.pack import PackOptions, build_pack
from nbsandbox.pack.wrappers import CONF, KERNEL_INSTALL, LAUNCHER, check_wrappers
from nbsandbox.store import StoreRoot

HERE = Path(__file__).resolve().parent
HAVE_PROOT = shutil.which("proot") is not None
#: Neither nbsandbox nor the test venv: what a host without nbsandbox has.
BARE_PATH = "/usr/bin:/bin"
PRINT = "import os, sys; print(sys.prefix); print(os.getuid())"


def bare_env(**extra: str) -> dict[str, str]:
    env = {"PATH": BARE_PATH, "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory) -> Path:
    """A pack of ``ls`` only (fast to build), writable by the test."""
    base = tmp_path_factory.mktemp("small-pack")
    unpriv.world_tmpdir(str(base))
    result = build_pack(PackOptions(with_python=False, programs=["ls"], output=base / "root"))
    return result.path


def test_wrappers_are_static_hard_links(python_pack):
    top = python_pack.path
    launcher = top / LAUNCHER
    if shutil.which("file") is None:
        pytest.skip("file is not installed (tools/bootstrap.sh installs it)")
    out = subprocess.run(["file", "-L", str(top / "bin" / "python3")], capture_output=True,
                         text=True, check=True).stdout
    assert "statically linked" in out, out
    for name in ("python3", "pip", "ipython", KERNEL_INSTALL):
        assert os.path.samefile(top / "bin" / name, launcher)
    # The same binary as nbsandbox's own launcher: one way to launch.
    from nbsandbox.native import native_path
    assert launcher.read_bytes() == native_path("nbs-launch").read_bytes()
    assert check_wrappers(python_pack) == []


@pytest.mark.parametrize("engine, expected", [
    ("userns", "userns"), ("fakechroot", "fakechroot"), ("proot", "proot"),
    ("default", "userns"), ("performance", "userns"), ("auto", "userns"),
])
def test_python_runs_under_each_engine(python_pack, engine, expected):
    if "proot" in (engine, expected) and not HAVE_PROOT:
        pytest.skip("proot is not installed")
    proc = unpriv.run([str(python_pack.path / "bin" / "python3"), "-c", PRINT], cwd="/",
                      env=bare_env(NBSANDBOX_ENGINE=engine, NBSANDBOX_VERBOSE="1"))
    assert proc.returncode == 0, proc.stderr
    prefix, uid = proc.stdout.split()
    assert prefix.startswith("/gnu/store/") and prefix.endswith(f"-python-{sys.version.split()[0]}")
    assert int(uid) == (unpriv.NOBODY if os.getuid() == 0 else os.getuid())
    assert f"python3: engine: {expected} (requested: {engine})" in proc.stderr


@pytest.mark.parametrize("engine", ["userns", "fakechroot"])
def test_no_host_library_is_loaded(python_pack, engine):
    code = "print(open('/proc/self/maps').read())"
    proc = unpriv.run([str(python_pack.path / "bin" / "python3"), "-c", code],
                      env=bare_env(NBSANDBOX_ENGINE=engine))
    assert proc.returncode == 0, proc.stderr
    libs = {line.split()[-1] for line in proc.stdout.splitlines() if ".so" in line}
    assert any("/gnu/store/" in lib and "libc.so.6" in lib for lib in libs), libs
    assert not [lib for lib in libs if lib.startswith(("/lib/", "/usr/lib/"))], libs


@pytest.mark.parametrize("engine, expected", [
    ("default", "proot"), ("performance", "fakechroot"), ("auto", "fakechroot"),
])
def test_falls_back_without_user_namespaces(python_pack, engine, expected):
    if expected == "proot" and not HAVE_PROOT:
        pytest.skip("proot is not installed")
    proc = unpriv.run([str(python_pack.path / "bin" / "python3"), "-c", PRINT], no_userns=True,
                      env=bare_env(NBSANDBOX_ENGINE=engine, NBSANDBOX_VERBOSE="1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("/gnu/store/")
    assert "skipped userns: " in proc.stderr and "max_user_namespaces is 0" in proc.stderr
    assert f"engine: {expected} (requested: {engine})" in proc.stderr
    quiet = unpriv.run([str(python_pack.path / "bin" / "python3"), "-c", "pass"],
                       no_userns=True, env=bare_env(NBSANDBOX_ENGINE=engine))
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_explicit_userns_without_user_namespaces(python_pack):
    proc = unpriv.run([str(python_pack.path / "bin" / "python3"), "-c", "pass"], no_userns=True,
                      env=bare_env(NBSANDBOX_ENGINE="userns"))
    assert proc.returncode == 126
    line = one_line(proc.stderr)
    assert line.startswith("nbsandbox: python3: engine userns cannot be used: ")
    assert "max_user_namespaces is 0" in line and "use the fakechroot or proot engine" in line


def test_no_engine_works(python_pack, tmp_path):
    # No user namespaces and no PRoot on PATH: the default chain has nothing left.
    proc = unpriv.run([str(python_pack.path / "bin" / "python3"), "-c", "pass"], no_userns=True,
                      env=bare_env(NBSANDBOX_ENGINE="default", PATH=str(tmp_path)))
    assert proc.returncode == 126
    line = one_line(proc.stderr)
    assert "no engine of 'default' (userns, proot) works here" in line
    assert "proot is not installed" in line and "NBSANDBOX_ENGINE=auto" in line


def test_unknown_engine(python_pack):
    proc = unpriv.run([str(python_pack.path / "bin" / "python3"), "-c", "pass"],
                      env=bare_env(NBSANDBOX_ENGINE="chroot"))
    assert proc.returncode == 125
    assert "unknown engine 'chroot'; valid engines: default," in one_line(proc.stderr)


def test_scripts_and_symlinks_from_anywhere(python_pack, tmp_path):
    unpriv.world_tmpdir(str(tmp_path))
    # A chain of symbolic links from elsewhere, run from another directory.
    first = tmp_path / "py"
    first.symlink_to(tmp_path / "py-again")
    (tmp_path / "py-again").symlink_to(python_pack.path / "bin" / "python3")
    proc = unpriv.run([str(first), "-c", "import os; print(os.getcwd())"], cwd=str(tmp_path),
                      env=bare_env(NBSANDBOX_ENGINE="fakechroot"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path)
    # A console script: a #! script whose interpreter is the packed python.
    for engine in ("fakechroot", "userns"):
        proc = unpriv.run([str(python_pack.path / "bin" / "pip"), "--version"],
                          env=bare_env(NBSANDBOX_ENGINE=engine))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("pip ") and "/gnu/store/" in proc.stdout


def test_exit_status_and_signals_are_the_programs(python_pack):
    for engine in ("userns", "fakechroot"):
        env = bare_env(NBSANDBOX_ENGINE=engine)
        wrapper = str(python_pack.path / "bin" / "python3")
        assert unpriv.run([wrapper, "-c", "raise SystemExit(7)"], env=env).returncode == 7
        proc = unpriv.run([wrapper, "-c", "import os, signal; os.kill(os.getpid(), 15)"], env=env)
        assert proc.returncode == -15


def test_moved_pack_still_runs(small_pack, tmp_path):
    unpriv.world_tmpdir(str(tmp_path))
    moved = tmp_path / "elsewhere"
    os.rename(small_pack, moved)
    try:
        for engine in ("userns", "fakechroot"):
            proc = unpriv.run([str(moved / "bin" / "ls"), "/gnu/store"],
                              env=bare_env(NBSANDBOX_ENGINE=engine))
            assert proc.returncode == 0, proc.stderr
            assert "-profile" in proc.stdout.split()[-1] or "-profile" in proc.stdout
    finally:
        os.rename(moved, small_pack)


def test_copied_wrapper(small_pack, tmp_path):
    unpriv.world_tmpdir(str(tmp_path))
    copy = tmp_path / "ls"
    shutil.copy(small_pack / "bin" / "ls", copy)
    proc = unpriv.run([str(copy), "/"], env=bare_env())
    assert proc.returncode == 127
    line = one_line(proc.stderr)
    assert "is a program wrapper of a pack, but it is not in a pack's bin/" in line
    assert "symbolic link instead of copying it" in line
    assert proc.stdout == ""


def test_program_not_in_the_pack(small_pack):
    stray = small_pack / "bin" / "cat"
    os.link(small_pack / LAUNCHER, stray)
    try:
        proc = unpriv.run([str(stray)], env=bare_env())
    finally:
        stray.unlink()
    assert proc.returncode == 127
    assert "has no program cat" in one_line(proc.stderr)


def test_pack_on_a_noexec_mount(small_pack):
    if os.getuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to remount a directory noexec privately")
    store = small_pack / "gnu"
    script = (f'mount --bind "$1" "$1" && mount -o remount,bind,noexec "$1" && '
              f'exec setpriv --reuid {unpriv.NOBODY} --regid {unpriv.NOBODY} --clear-groups '
              f'"$2" /')
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                           str(store), str(small_pack / "bin" / "ls")],
                          capture_output=True, text=True, env=bare_env(), timeout=60)
    assert proc.returncode == 126, proc.stderr
    line = one_line(proc.stderr)
    assert "mounted noexec" in line and "unpack it on another file system" in line


def test_check_finds_damaged_wrappers(small_pack, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_pack, copy, symlinks=True)
    root = StoreRoot.open(copy)
    assert check_wrappers(root) == []
    (copy / "bin" / "ls").unlink()
    (copy / "bin" / "ls").write_bytes(b"#!/bin/sh\n")
    conf = copy / CONF
    conf.write_text(conf.read_text().replace("program ls ", "program ls2 "))
    problems = check_wrappers(root)
    assert any("bin/ls: not the pack's launcher" in p for p in problems), problems
    assert any("launch.conf: does not match" in p for p in problems), problems
    proc = subprocess.run([sys.executable, "-m", "nbsandbox", "check", str(copy)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "not the pack's launcher" in proc.stdout


def test_kernel_install_bad_input(python_pack, tmp_path):
    unpriv.world_tmpdir(str(tmp_path))
    install = str(python_pack.path / "bin" / KERNEL_INSTALL)
    for args, text in (
        (["--engine", "chroot"], "unknown engine 'chroot'"),
        (["--user", "--prefix", str(tmp_path)], "not both"),
        (["--name", "a b"], "may only contain"),
        (["--bogus"], "unknown argument --bogus"),
    ):
        proc = unpriv.run([install, *args], env=bare_env(JUPYTER_DATA_DIR=str(tmp_path / "d")))
        assert proc.returncode == 2, (args, proc.stderr)
        assert text in one_line(proc.stderr)
    assert not (tmp_path / "d").exists()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("engine", ["performance", "fakechroot"])
def test_installed_kernel_passes_kernel_tests(python_pack, tmp_path, engine):
    """The kernel of bin/nbsandbox-kernel-install, from Jupyter, without nbsandbox in the launch."""
    unpriv.world_tmpdir(str(tmp_path))
    for sub in ("prefix", "runtime", "home"):
        (tmp_path / sub).mkdir(mode=0o777)
        os.chmod(tmp_path / sub, 0o777)
    name = f"packed-wrapper-{engine}"
    proc = unpriv.run([str(python_pack.path / "bin" / KERNEL_INSTALL), "--prefix",
                       str(tmp_path / "prefix"), "--name", name, "--engine", engine],
                      env=bare_env())
    assert proc.returncode == 0, proc.stderr
    spec_dir = tmp_path / "prefix" / "share" / "jupyter" / "kernels" / name
    import json
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"][0] == str(python_pack.path / "bin" / "python3")
    assert spec["env"] == {"NBSANDBOX_ENGINE": engine}
    # Jupyter from the test venv, run by absolute path; the kernel's argv is the wrapper.
    env = bare_env(JUPYTER_PATH=str(tmp_path / "prefix" / "share" / "jupyter"),
                   JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), HOME=str(tmp_path / "home"),
                   JUPYTER_PLATFORM_DIRS="1")
    suite = unpriv.run([sys.executable, str(HERE / "pack_kernel_suite.py"), name],
                       env=env, timeout=500, cwd=str(tmp_path))
    assert suite.returncode == 0, suite.stdout + suite.stderr
    assert "lifecycle ok" in suite.stdout


@pytest.mark.parametrize("engine", ["userns", "fakechroot"])
def test_wrapper_starts_programs_as_nbsandbox_run_does(python_pack, engine):
    """What the program sees through the wrapper is what it sees through nbsandbox."""
    code = ("import json, os, sys; print(json.dumps([sys.executable, sys.argv, sys.prefix, "
            "os.environ['PATH'].split(':')[0], os.environ.get('GCONV_PATH'), "
            "os.environ.get('LOCPATH'), os.getcwd()]))")
    env = bare_env(NBSANDBOX_ENGINE=engine)
    wrapped = unpriv.run([str(python_pack.path / "bin" / "python3"), "-c", code], env=env,
                         cwd="/")
    assert wrapped.returncode == 0, wrapped.stderr
    run = unpriv.run([sys.executable, "-m", "nbsandbox", "run", "--root", str(python_pack.path),
                      "--engine", engine, "--", "python3", "-c", code], env=env, cwd="/")
    assert run.returncode == 0, run.stderr
    assert wrapped.stdout == run.stdout


@pytest.mark.skipif(not unpriv.seccomp_supported(), reason="needs this machine's seccomp numbers")
@pytest.mark.parametrize("scenario, preexec, engine, reason", [
    ("map-denied", {"deny_map_write": True}, "fakechroot",
     "writing /proc/self/uid_map: Operation not permitted"),
    ("mount-denied", {"deny": unpriv.MOUNT_SYSCALLS}, "fakechroot", "forbids mounts"),
    ("nested", {"nested": True}, "userns", None),
])
def test_simulated_hosts(python_pack, scenario, preexec, engine, reason):
    """The host matrix's hosts (tools/host_matrix.py): the wrapper falls back as nbsandbox does."""
    proc = subprocess.run([str(python_pack.path / "bin" / "python3"), "-c", PRINT],
                          preexec_fn=unpriv.host_preexec(**preexec), capture_output=True,
                          text=True, timeout=120, env=unpriv.unprivileged_env(
                              bare_env(NBSANDBOX_ENGINE="performance", NBSANDBOX_VERBOSE="1")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("/gnu/store/")
    assert f"engine: {engine} (requested: performance)" in proc.stderr
    if reason:
        assert "skipped userns: " in proc.stderr and reason in proc.stderr, proc.stderr


def test_symlink_loop_runs_nothing(python_pack, tmp_path):
    """A loop of links never reaches the wrapper: the kernel refuses it (ELOOP)."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError) as info:
        subprocess.run([str(tmp_path / "a")], env=bare_env(), check=False)
    assert info.value.errno == 40  # ELOOP
    # A long chain that ends at the wrapper is resolved by the kernel, up to its limit.
    target = python_pack.path / "bin" / "python3"
    for k in range(30):
        link = tmp_path / f"chain{k}"
        link.symlink_to(target)
        target = link
    proc = subprocess.run([str(target), "-c", "print('ok')"], capture_output=True, text=True,
                          env=bare_env(NBSANDBOX_ENGINE="fakechroot"))
    assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr
