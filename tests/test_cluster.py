"""Packed kernels on a cluster's JupyterHub, end to end (marker ``cluster``).

Starts the test cluster with ``tools/cluster.sh up`` (Slurm with a node that has user
namespaces and one that has none, JupyterHub with batchspawner, the site pack on a
"shared file system"), runs ``tools/cluster.sh check`` (tools/cluster_check.py: the
Hub's and the single-user server's public APIs only), then ``down``, and checks that
nothing of the cluster is left.  About 3-5 minutes, most of it the first ``install``
(pip, npm, packing the site environment).  Run alone with ``pytest -m cluster``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
CLUSTER = TOP / "tools" / "cluster.sh"
RUN = TOP / "build" / "cluster" / "run"
USERS = ("nbsc-alice", "nbsc-bob")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]


def _missing() -> str | None:
    if os.getuid() != 0:
        return "needs root: tools/cluster.sh starts Slurm's daemons and creates users"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "needs Slurm (slurm-wlm) or apt-get to install it"
    if os.environ.get("NBSANDBOX_CLUSTER_DIR"):
        return "NBSANDBOX_CLUSTER_DIR is set: this test uses the checkout's build/cluster"
    return None


def _cluster(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    up = _cluster("up")
    if up.returncode != 0:
        _cluster("down")
        pytest.fail(f"tools/cluster.sh up failed:\n{up.stderr[-3000:]}")
    yield
    down = _cluster("down")
    assert down.returncode == 0, down.stderr[-2000:]
    assert not RUN.exists(), f"{RUN} is left after down"
    for user in USERS:
        assert not _user_exists(user), f"user {user} is left after down"
    daemons = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    ours = [line for line in daemons.splitlines() if str(RUN) in line]
    assert not ours, f"processes left after down: {ours}"


def test_hub_spawns_packed_kernels_on_slurm(cluster, tmp_path):
    summary_file = tmp_path / "summary.json"
    check = _cluster("check", "--measure", "2", "--json", str(summary_file), timeout=900)
    print(check.stdout)
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if check.returncode != 0:  # the cluster's logs go with down: show their ends now
        jobs = sorted(RUN.glob("home/*/.jupyterhub-slurm-*.log"))[-2:]
        for log in [*jobs, RUN / "log" / "jupyterhub.log"]:
            print(f"==> {log}\n" + "\n".join(log.read_text(errors="replace")
                                              .splitlines()[-40:]))
    assert check.returncode == 0, f"{check.stdout[-3000:]}\n{check.stderr[-3000:]}"
    assert summary["ok"]
    assert "userns" in summary["node1"]["facts"]["server_engine"]
    assert "fakechroot" in summary["node2"]["facts"]["server_engine"]
    assert summary["node2"]["facts"]["host"] == "node2"
    for case, message in summary["bad_inputs"].items():
        assert "\n" not in message.strip(), case


def _example(name: str) -> str:
    text = (TOP / "docs" / "jupyterhub-slurm.md").read_text()
    start = text.index(f"<!-- example: {name} -->")
    body = text[text.index("\n", text.index("```", start)) + 1:]
    return body[:body.index("```")]


def test_the_chapter_shows_the_configuration_the_cluster_runs():
    """docs/jupyterhub-slurm.md's spawner settings and site install are the test
    cluster's, with the shared directory's paths (no cluster needed)."""
    config = (TOP / "tools" / "cluster" / "jupyterhub_config.py").read_text()
    config = config.replace("@NBSANDBOX@", "/shared/nbsandbox/bin/nbsandbox")
    config = config.replace("@SITE@", "/shared/site")
    lines = {line.split("#")[0].strip() for line in config.splitlines()}
    for line in _example("spawner-config").splitlines():
        assert line.strip() in lines, line
    script = (TOP / "tools" / "cluster.sh").read_text()
    install = script[script.index("/bin/nbsandbox\" site install"):].split("\n\n")[0]
    documented = _example("site-install").split("\n")[0:2]
    for flag in ("--engines userns,fakechroot", "--engine performance", "--isolate-home",
                 "--lock engine"):
        assert flag in install and flag in " ".join(documented), flag
    from nbsandbox.site.layout import BATCH_SCRIPT

    shown = _example("batch-script").splitlines()
    assert shown[-1] in BATCH_SCRIPT.splitlines()
