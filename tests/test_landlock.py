"""Landlock restrictions, end to end, as an unprivileged user: under every engine the
launcher restricts the program just before it starts (see docs/access.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import unpriv
from host_fixtures import ACCESS_PROGRAM, unprivileged_host

from nbsandbox import landlock
from nbsandbox.policy import ADMIN_ENV
from nbsandbox.store import StoreRoot

pytestmark = pytest.mark.skipif(landlock.abi() < landlock.NETWORK_ABI,
                                reason="needs Landlock ABI 4 (Linux 6.7) in this kernel")

#: See host_fixtures.ACCESS_PROGRAM.
PROGRAM = ACCESS_PROGRAM


@pytest.fixture
def host(tmp_path) -> dict:
    with unprivileged_host(tmp_path) as h:
        yield h


def run(root: StoreRoot, engine: str, host: dict, *options: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "nbsandbox", "run", "--root", str(root.path),
            "--engine", engine, *options, "--", "python3", "-c", PROGRAM, str(host["port"])]
    return unpriv.run(argv, cwd=host["work"], env={**os.environ, "HOME": str(host["home"])})


def results(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_unrestricted_all_succeed(python_pack, engine, host):
    r = results(run(python_pack, engine, host))
    assert r == dict.fromkeys(r, 0)


def test_write_and_network_restricted(python_pack, engine, host):
    r = results(run(python_pack, engine, host, "--allow-write", str(host["work"]),
                    "--no-network"))
    assert r["write_home"] in (13, 1) and r["connect"] in (13, 1), r
    assert r["write_cwd"] == 0 and r["read_gitconfig"] == 0 and r["list_home"] == 0, r
    assert not (host["home"] / "written").exists()
    assert (host["work"] / "written").exists()


def test_read_restricted(python_pack, engine, host):
    r = results(run(python_pack, engine, host, "--allow-read", str(host["work"]),
                    "--allow-write", str(host["work"])))
    assert r["read_gitconfig"] in (13, 1) and r["list_home"] in (13, 1), r
    assert r["read_hostname"] in (13, 1), r
    assert r["write_cwd"] == 0 and r["connect"] == 0, r


@pytest.mark.parametrize("options, message", [
    (["--allow-write", "relative/dir"], "is relative"),
    (["--allow-read", "/nonexistent/nbsandbox-test"], "does not exist"),
    (["--allow-write", "/"], "whole host"),
])
def test_bad_input_is_one_line(python_pack, host, options, message):
    proc = run(python_pack, "userns", host, *options)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert proc.stdout == ""


def test_policy_list_may_only_narrow(tmp_path):
    from nbsandbox.policy import PolicyError
    from nbsandbox.policy.fold import Policy
    from nbsandbox.policy.layers import Layer

    allowed, inner = tmp_path / "allowed", tmp_path / "allowed" / "inner"
    inner.mkdir(parents=True)
    admin = Layer("administrator", "admin.json", {"allowed_write": [str(allowed)],
                                                  "network": False})
    narrowed = Policy.fold([admin, Layer("request", "the request",
                                         {"allowed_write": [str(inner)]})])
    assert narrowed.allowed_write == (str(inner),)
    assert narrowed.restrictions().network is False
    for settings in ({"allowed_write": [str(tmp_path)]}, {"network": True},
                     {"allowed_write": None}):
        with pytest.raises(PolicyError):
            Policy.fold([admin, Layer("request", "the request", settings)])


def test_kernel_profile(tmp_path):
    from nbsandbox.policy.fold import Policy
    from nbsandbox.policy.layers import Layer

    policy = Policy.fold([Layer("administrator", "admin.json", {"restrict_kernels": True})])
    assert policy.restrictions() is None  # not a kernel
    r = policy.restrictions(kernel=True, cwd=str(tmp_path), runtime_dirs=[str(tmp_path)])
    assert str(tmp_path) in r.write and r.network
    assert all(not p.startswith(os.path.expanduser("~")) for p in r.read)


def test_doctor_shows_the_abi():
    proc = subprocess.run([sys.executable, "-m", "nbsandbox", "doctor"], capture_output=True,
                          text=True, timeout=120)
    assert f"Landlock: ABI {landlock.abi()}" in proc.stdout


def test_without_landlock_refused_in_one_line_or_run_with_a_warning(python_pack, host,
                                                                    tmp_path):
    """A kernel without Landlock (simulated: the system call fails): the restricted run
    is refused in one line, unless the policy says best effort."""
    if not unpriv.seccomp_supported():
        pytest.skip("no seccomp simulation for this machine")
    argv = [sys.executable, "-m", "nbsandbox", "run", "--root", str(python_pack.path),
            "--engine", "userns", "--allow-write", str(host["work"]), "--",
            "python3", "-c", "print('ran')"]
    env = unpriv.unprivileged_env({**os.environ, "HOME": str(host["home"])})
    preexec = unpriv.host_preexec(deny=["landlock_create_ruleset"])
    proc = subprocess.run(argv, cwd=host["work"], env=env, preexec_fn=preexec,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no Landlock" in lines[0], proc.stderr

    admin = Path(unpriv.world_tmpdir(str(tmp_path))) / "nbsandbox_admin_config.json"
    admin.write_text(json.dumps({"SandboxPolicy": {"landlock_best_effort": True}}))
    admin.chmod(0o644)
    proc = subprocess.run(argv, cwd=host["work"], env={**env, ADMIN_ENV: str(admin)},
                          preexec_fn=preexec, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "ran\n", proc.stderr
    assert "warning: running unrestricted" in proc.stderr
