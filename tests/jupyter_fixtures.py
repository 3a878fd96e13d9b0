"""Fixtures for the Jupyter front ends: a store root with a kernel, kernels run as nobody.

Import the fixtures into a test module with ``from jupyter_fixtures import *``.

* ``kernel_root``: a store root whose Python has ipykernel -- the session's
  ``python_pack`` (a real pack of this checkout's .venv) when conftest provides
  it, else a small hand-made root (the host's python binary at a store path,
  its site-packages linked to .venv's).
* ``jupyter_dirs``: private, world-accessible Jupyter runtime/data/config dirs
  and a home for the unprivileged user, set in the environment for the session.
* Kernels started through :data:`TEST_PROVISIONER` (or :data:`NATIVE_PROVISIONER`
  for the plain local kernel) run as uid 65534 when the suite runs as root, with
  PYTEST_CURRENT_TEST stripped from their environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import unpriv
from jupyter_client.provisioning import KernelProvisionerFactory, LocalProvisioner

from nbsandbox.jupyter_runs import session_members
from nbsandbox.kernelspec import kernel_json
from nbsandbox.provisioner import SandboxProvisioner
from nbsandbox.store import StoreRoot

TEST_PROVISIONER = "nbsandbox-test-provisioner"
NATIVE_PROVISIONER = "nbsandbox-test-native-provisioner"
#: Every kernel session started by a test provisioner (to check nothing is left).
STARTED_SESSIONS: list[int] = []
_HOME: dict[str, str] = {}


def _unprivileged(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs["env"] = unpriv.unprivileged_env(kwargs.get("env"), home=_HOME.get("home"))
    return kwargs


def _drop_privileges(provisioner: Any, kwargs: dict[str, Any]) -> None:
    if os.getuid() == 0:
        os.chown(provisioner.parent.connection_file, unpriv.NOBODY, unpriv.NOBODY)
    kwargs["preexec_fn"] = unpriv.preexec()


class _KernelAsNobody:
    """Mixed into a provisioner: only the kernel process drops to nobody."""

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        return await super().pre_launch(**_unprivileged(kwargs))  # type: ignore[misc]

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        _drop_privileges(self, kwargs)
        info = await super().launch_kernel(cmd, **kwargs)  # type: ignore[misc]
        STARTED_SESSIONS.append(self.pid)  # type: ignore[attr-defined]
        return info


class UnprivilegedProvisioner(_KernelAsNobody, SandboxProvisioner):
    """The real provisioner; only the kernel process drops to nobody."""


class UnprivilegedLocalProvisioner(_KernelAsNobody, LocalProvisioner):
    """jupyter_client's own local provisioner, kernel as nobody (the baseline)."""


class _EntryPoint:
    """What jupyter_client's provisioner factory needs of an entry point."""

    def __init__(self, name: str, cls: type) -> None:
        self.name, self.value, self.group = name, f"{cls.__module__}:{cls.__name__}", \
            "jupyter_client.kernel_provisioners"
        self._cls = cls

    def load(self) -> type:
        return self._cls


def register_provisioner(name: str, cls: type) -> None:
    """Make ``cls`` the provisioner a kernelspec selects by ``name`` (in this process)."""
    KernelProvisionerFactory.instance().provisioners[name] = _EntryPoint(name, cls)


def register_test_provisioners() -> None:
    register_provisioner(TEST_PROVISIONER, UnprivilegedProvisioner)
    register_provisioner(NATIVE_PROVISIONER, UnprivilegedLocalProvisioner)


def execute(kc: Any, code: str, timeout: float = 60.0) -> tuple[dict[str, Any], str]:
    """Run ``code`` in the kernel of client ``kc``: (the reply's content, its stream
    output and error names).  A request that arrives while the kernel still aborts
    after an error is aborted: it is sent again."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append(msg["content"]["ename"])

    for _ in range(20):
        reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        if reply["content"]["status"] != "aborted":
            break
        time.sleep(0.1)
    return reply["content"], "".join(out)


def interrupt_sleeping_cell(km: Any, kc: Any, timeout: float = 60.0) -> float:
    """Interrupt a cell sleeping 30 s in the kernel of ``km``/``kc``: the seconds from
    ``interrupt_kernel()`` to the interrupted cell's reply.  Raises RuntimeError when the
    cell does not end in KeyboardInterrupt.  Afterwards the kernel takes requests again
    (the requests it aborts for a moment after an error are waited out).

    The one measure of interrupt latency: the tests, ``tools/soak.py`` and
    ``benchmarks/kernel_interrupt.py`` use it."""
    msg_id = kc.execute("import time; time.sleep(30)")
    while True:  # until the kernel is busy with that cell
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "busy" and \
                msg["parent_header"].get("msg_id") == msg_id:
            break
    time.sleep(0.2)  # into the sleep
    started = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:  # e.g. wait_for_ready's replies
        reply = kc.get_shell_msg(timeout=timeout)
    elapsed = time.monotonic() - started
    content = reply["content"]
    if (content.get("status"), content.get("ename")) != ("error", "KeyboardInterrupt"):
        raise RuntimeError(f"the interrupted cell replied {content.get('status')} "
                           f"{content.get('ename')}")
    for _ in range(50):
        if kc.execute_interactive("pass", timeout=timeout)["content"]["status"] != "aborted":
            break
        time.sleep(0.1)
    return elapsed


def engines_for(env: dict[str, str] | None = None) -> dict[str, str]:
    """Engine name -> "" if it works for the unprivileged user, else why not (doctor's
    view, as that user)."""
    proc = unpriv.run([sys.executable, "-c",
                       "import json; from nbsandbox import doctor; "
                       "print(json.dumps(doctor.report()['engines']))"], env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"doctor failed for the unprivileged user: {proc.stderr}")
    return {e["name"]: "" if e["available"] else e["detail"] for e in json.loads(proc.stdout)}


def leftover_processes(sessions: list[int] | None = None) -> list[int]:
    """Live processes of the given (default: every started) kernel session."""
    return [pid for sid in (STARTED_SESSIONS if sessions is None else sessions)
            for pid in session_members(sid)]


# -- examples in docs/ ----------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"<!-- (example|output): ([\w-]+) -->\n```[\w-]*\n(.*?)```", re.S)


def doc_blocks(name: str) -> dict[str, str]:
    """The blocks of docs/NAME marked ``<!-- example: X -->`` or ``<!-- output: X -->``
    (keys ``example:X``, ``output:X``)."""
    text = (DOCS / name).read_text()
    blocks = {f"{kind}:{key}": body for kind, key, body in _BLOCK.findall(text)}
    assert blocks, f"no examples in docs/{name}"
    return blocks


def matches_doc(expected: str, actual: str) -> bool:
    """Whether ``actual`` is the documented output, ``...`` standing for any text."""
    pattern = ".*?".join(re.escape(part) for part in expected.strip().split("..."))
    return re.fullmatch(pattern, actual.strip(), re.S) is not None


# -- directories ---------------------------------------------------------------------------


@dataclass
class JupyterDirs:
    base: Path
    runtime: Path
    data: Path
    config: Path
    home: Path

    @property
    def kernels(self) -> Path:
        return self.data / "kernels"

    @property
    def ipython(self) -> Path:
        """IPYTHONDIR of the kernels (writable by the unprivileged user)."""
        return self.base / "ipython"

    def write_spec(self, name: str, spec: dict[str, Any]) -> str:
        """Install kernelspec ``name`` (where jupyter_client will look)."""
        d = self.kernels / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "kernel.json").write_text(json.dumps(spec, indent=1))
        return name


@pytest.fixture(scope="session")
def jupyter_dirs(tmp_path_factory: pytest.TempPathFactory):
    base = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("jupyter"))))
    dirs = JupyterDirs(base, base / "runtime", base / "data", base / "config", base / "home")
    for d in (dirs.runtime, dirs.data, dirs.config, dirs.home, dirs.kernels, dirs.ipython):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    dirs.runtime.chmod(0o1777)
    if os.getuid() == 0:
        for d in (dirs.home, dirs.ipython):
            os.chown(d, unpriv.NOBODY, unpriv.NOBODY)
    _HOME["home"] = str(dirs.home)
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_RUNTIME_DIR", str(dirs.runtime))
    mp.setenv("JUPYTER_PATH", str(dirs.data))
    mp.setenv("JUPYTER_DATA_DIR", str(dirs.data))
    mp.setenv("JUPYTER_CONFIG_DIR", str(dirs.config))
    mp.setenv("IPYTHONDIR", str(dirs.ipython))
    for name in ("NBSANDBOX_ADMIN_CONFIG", "NBSANDBOX_ENGINE", "NBSANDBOX_ROOT"):
        mp.delenv(name, raising=False)
    register_test_provisioners()
    yield dirs
    mp.undo()


# -- a root with a kernel --------------------------------------------------------------------

_ITEM = "0123456789abcdfghijklmnpqrsvwxyz-python-test"


def make_mini_root(top: Path, *, with_site_packages: bool = True) -> StoreRoot:
    """A store root holding the host's python binary at a store path, with this
    checkout's site-packages (ipykernel, nbsandbox; or an empty one) and a store ``sh``."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    item = top / "gnu" / "store" / _ITEM
    (item / "bin").mkdir(parents=True)
    base_python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    shutil.copy2(base_python, item / "bin" / "python3")
    shutil.copy2("/bin/sh" if not os.path.islink("/bin/sh") else os.path.realpath("/bin/sh"),
                 item / "bin" / "sh")
    (item / "pyvenv.cfg").write_text(
        f"home = {os.path.dirname(base_python)}\ninclude-system-site-packages = false\n"
        f"version = {sys.version.split()[0]}\n")
    (item / "lib" / f"python{version}").mkdir(parents=True)
    if with_site_packages:
        os.symlink(sysconfig.get_paths()["purelib"],
                   item / "lib" / f"python{version}" / "site-packages")
    else:
        (item / "lib" / f"python{version}" / "site-packages").mkdir()
    os.symlink(f"gnu/store/{_ITEM}/bin", top / "bin")
    (top / ".nbsandbox").mkdir()
    (top / ".nbsandbox" / "pack.json").write_text(json.dumps({
        "format": 1, "prefix": "/gnu/store", "profile": None,
        "python": f"/gnu/store/{_ITEM}/bin/python3", "programs": []}))
    subprocess.run(["chmod", "-R", "a+rX", str(top)], check=True)
    return StoreRoot.open(top)


@pytest.fixture(scope="session")
def kernel_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                ) -> StoreRoot:
    try:
        root = request.getfixturevalue("python_pack")
    except pytest.FixtureLookupError:
        top = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("mini-root"))))
        return make_mini_root(top / "root")
    return root if isinstance(root, StoreRoot) else StoreRoot.open(root)


@pytest.fixture(scope="session")
def shell_root(tmp_path_factory: pytest.TempPathFactory) -> StoreRoot:
    """A small real pack without Python: bash, sleep and cat with their glibc."""
    from nbsandbox.pack import PackOptions, build_pack

    base = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("shell-pack"))))
    result = build_pack(PackOptions(programs=["/bin/bash", "/bin/sleep", "/bin/cat"],
                                    with_python=False, output=base / "root"))
    subprocess.run(["chmod", "-R", "a+rX", str(result.path)], check=True)
    return StoreRoot.open(result.path)


# -- engines as the unprivileged user sees them -------------------------------------------------


@pytest.fixture(scope="session")
def engines_for_nobody() -> dict[str, str]:
    """Engine name -> "" if it works for the unprivileged user, else why not."""
    return engines_for()


def packed_spec(root: StoreRoot, engine: str, *, provisioner: str = TEST_PROVISIONER,
                interrupt_mode: str = "signal", pythonpath: tuple[str, ...] | list[str] = (),
                **config: Any) -> dict[str, Any]:
    """A kernel.json like ``nbsandbox kernel install`` writes, run by ``provisioner``."""
    spec = kernel_json(root, engine=engine, interrupt_mode=interrupt_mode,
                       pythonpath=pythonpath)
    prov = spec["metadata"]["kernel_provisioner"]
    prov["provisioner_name"] = provisioner
    prov["config"].update(config)
    return spec


def native_spec(interrupt_mode: str = "signal") -> dict[str, Any]:
    """The same Python's plain kernel (no store, no engine), run as nobody."""
    return {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "native", "language": "python", "interrupt_mode": interrupt_mode,
            "metadata": {"kernel_provisioner": {"provisioner_name": NATIVE_PROVISIONER}}}


__all__ = [
    "NATIVE_PROVISIONER",
    "STARTED_SESSIONS",
    "TEST_PROVISIONER",
    "JupyterDirs",
    "doc_blocks",
    "engines_for_nobody",
    "jupyter_dirs",
    "kernel_root",
    "leftover_processes",
    "make_mini_root",
    "matches_doc",
    "native_spec",
    "packed_spec",
    "shell_root",
]
