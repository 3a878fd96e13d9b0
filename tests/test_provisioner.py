"""The kernel provisioner with real jupyter_client and real kernels, run as nobody.

* jupyter_kernel_test's KernelTests against a packed kernel under each engine
  that works here for the unprivileged user;
* interrupts in signal and message mode (a 30 s sleep ends within 2 s, the
  kernel survives), restart, graceful and immediate shutdown, leaving no process;
* policy: a kernel.json asking for a forbidden engine is refused, an unavailable
  engine fails the start with its reason.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time
import unittest

import jupyter_kernel_test
import pytest
from jupyter_client.manager import KernelManager
from jupyter_kernel_test.msgspec_v5 import validate_message

from nbsandbox.errors import EngineUnavailable
from nbsandbox.policy import PolicyError
from nbsandbox.provisioner import inner_command

pytest.register_assert_rewrite("jupyter_fixtures")
pytest_plugins = ("jupyter_fixtures",)

from jupyter_fixtures import (  # noqa: E402
    doc_blocks,
    execute,
    interrupt_sleeping_cell,
    leftover_processes,
    packed_spec,
)

ENGINES = ("userns", "fakechroot", "proot")
TIMEOUT = 60  # seconds for a kernel to answer (proot is slow)


def _engine_or_skip(engines_for_nobody: dict[str, str], engine: str) -> None:
    if engine not in engines_for_nobody:
        pytest.skip(f"engine {engine} is not built here")
    if engines_for_nobody[engine]:
        pytest.skip(f"engine {engine} does not work here: {engines_for_nobody[engine]}")


def _start(name: str, connection_file: str = "") -> tuple[KernelManager, object]:
    km = KernelManager(kernel_name=name, connection_file=connection_file)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=TIMEOUT)
    return km, kc


def _run(kc, code: str, timeout: float = TIMEOUT) -> tuple[dict, str]:
    return execute(kc, code, timeout)


# -- jupyter_kernel_test, per engine ---------------------------------------------------------


class PackedKernelTests(jupyter_kernel_test.KernelTests):
    """jupyter_kernel_test's protocol checks; subclassed once per engine below."""

    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('this is an error')"
    code_execute_result = [{"code": "1+2+3", "result": "6"}]
    code_display_data = [
        {"code": "from IPython.display import display, HTML; display(HTML('<b>x</b>'))",
         "mime": "text/html"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    __test__ = False  # collected through the subclasses below
    engine = ""
    #: How long to wait for each output message after the reply.  The library
    #: waits 0.1 s, less than a traceback takes to format under PRoot.
    iopub_timeout = 0.1

    def execute_helper(self, code: str, timeout: int = jupyter_kernel_test.TIMEOUT,
                       silent: bool = False, store_history: bool = True,
                       stop_on_error: bool = True):
        """The library's helper, with :attr:`iopub_timeout` between output messages."""
        msg_id = self.kc.execute(code=code, silent=silent, store_history=store_history,
                                 stop_on_error=stop_on_error)
        reply = self.get_non_kernel_info_reply(timeout=timeout)
        assert reply is not None
        validate_message(reply, "execute_reply", msg_id)
        busy = self.kc.iopub_channel.get_msg(timeout=max(1.0, self.iopub_timeout))
        validate_message(busy, "status", msg_id)
        self.assertEqual(busy["content"]["execution_state"], "busy")
        outputs = []
        while True:
            msg = self.kc.iopub_channel.get_msg(timeout=self.iopub_timeout)
            validate_message(msg, msg["msg_type"], msg_id)
            if msg["msg_type"] == "status":
                self.assertEqual(msg["content"]["execution_state"], "idle")
                return reply, outputs
            if msg["msg_type"] == "execute_input":
                self.assertEqual(msg["content"]["code"], code)
                continue
            outputs.append(msg)

    @classmethod
    def setUpClass(cls) -> None:
        why = _SPECS.get(cls.engine)
        if why:
            raise unittest.SkipTest(why)
        cls.kernel_name = f"packed-{cls.engine}"
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        sid = cls.km.provisioner.pid
        super().tearDownClass()
        assert leftover_processes([sid]) == []

    def test_runs_from_the_store_through_the_engine(self) -> None:
        self.assertEqual(self.km.provisioner.engine_used, self.engine)
        reply, out = _run(self.kc, "import sys, os; print(sys.executable); print(os.getuid())")
        self.assertEqual(reply["status"], "ok")
        executable, uid = out.split()
        self.assertTrue(executable.startswith("/gnu/store/"), executable)
        if os.getuid() == 0:
            self.assertEqual(int(uid), 65534)


#: engine -> "" when its kernelspec "packed-ENGINE" is installed, else why it is skipped
_SPECS: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def _packed_specs(jupyter_dirs, kernel_root, engines_for_nobody):
    """Install a packed kernelspec per engine (before unittest's setUpClass runs)."""
    for engine in ENGINES:
        if engine not in engines_for_nobody:
            _SPECS[engine] = f"engine {engine} is not built here"
        elif engines_for_nobody[engine]:
            _SPECS[engine] = f"engine {engine} does not work here: {engines_for_nobody[engine]}"
        else:
            jupyter_dirs.write_spec(f"packed-{engine}", packed_spec(kernel_root, engine))
            _SPECS[engine] = ""


class TestUserns(PackedKernelTests):
    __test__ = True
    engine = "userns"


class TestFakechroot(PackedKernelTests):
    __test__ = True
    engine = "fakechroot"


class TestProot(PackedKernelTests):
    __test__ = True
    engine = "proot"
    iopub_timeout = 5.0
    # IPython writes history from a background thread and does not flush it before a
    # search; under PRoot's slow system calls the search often runs first.
    supported_history_operations = ("tail",)


# -- life cycle ---------------------------------------------------------------------------------


@pytest.fixture
def packed_kernel(request, jupyter_dirs, kernel_root, engines_for_nobody):
    """Start a packed kernel: request.param = (engine, interrupt_mode)."""
    engine, mode = request.param
    _engine_or_skip(engines_for_nobody, engine)
    name = jupyter_dirs.write_spec(f"packed-{engine}-{mode}",
                                   packed_spec(kernel_root, engine, interrupt_mode=mode))
    km, kc = _start(name)
    yield km, kc
    kc.stop_channels()
    if km.has_kernel:
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("packed_kernel", [("userns", "signal"), ("userns", "message"),
                                           ("proot", "signal")],
                         indirect=True, ids=["userns-signal", "userns-message", "proot-signal"])
def test_interrupt_stops_the_cell_and_the_kernel_survives(packed_kernel):
    km, kc = packed_kernel
    pid_before = km.provisioner.pid
    # Returns once the cell has ended in KeyboardInterrupt (the latency itself is
    # measured by benchmarks/kernel_interrupt.py, not asserted here).
    interrupt_sleeping_cell(km, kc, timeout=20)
    reply, out = _run(kc, "print('still here')")
    assert (reply["status"], out.strip()) == ("ok", "still here")
    assert km.is_alive() and km.provisioner.pid == pid_before


@pytest.mark.parametrize("packed_kernel", [("userns", "signal")], indirect=True)
def test_restart_then_shutdown_leave_no_process(packed_kernel):
    km, kc = packed_kernel
    # a child of the kernel that would outlive it if nobody cleaned up
    _run(kc, "import subprocess; p = subprocess.Popen(['sleep', '300'])")
    first = km.provisioner.pid
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=TIMEOUT)
    second = km.provisioner.pid
    assert second != first
    assert leftover_processes([first]) == []
    _, out = _run(kc, "import sys; print(sys.executable.startswith('/gnu/store/'))")
    assert out.strip() == "True"
    km.restart_kernel(now=True)
    kc.wait_for_ready(timeout=TIMEOUT)
    assert leftover_processes([second]) == []
    _run(kc, "import subprocess; p = subprocess.Popen(['sleep', '300'])")
    third = km.provisioner.pid
    connection_file = km.connection_file
    kc.stop_channels()
    km.shutdown_kernel(now=False)
    assert leftover_processes([third]) == []
    assert not os.path.exists(connection_file)


def _scratch_dirs() -> set[str]:
    """Scratch directories of supervised engines (PRoot's temporary files)."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"nbsandbox-{os.getuid()}-*")))


@pytest.fixture
def no_scratch_left():
    before = _scratch_dirs()
    yield
    deadline = time.monotonic() + 5  # the janitor removes them once the engine is gone
    while _scratch_dirs() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _scratch_dirs() - before == set()


@pytest.mark.parametrize("packed_kernel", [("userns", "signal"), ("proot", "signal")],
                         indirect=True, ids=["userns", "proot"])
def test_immediate_shutdown_leaves_no_process_and_no_file(no_scratch_left, packed_kernel):
    km, kc = packed_kernel
    sid = km.provisioner.pid
    kc.execute("import subprocess; p = subprocess.Popen(['sleep', '300']); "
               "import time; time.sleep(60)")
    time.sleep(1)
    km.shutdown_kernel(now=True)
    assert leftover_processes([sid]) == []


@pytest.mark.parametrize("packed_kernel", [("proot", "signal")], indirect=True)
def test_graceful_shutdown_under_proot_leaves_no_file(no_scratch_left, packed_kernel):
    km, kc = packed_kernel
    sid = km.provisioner.pid
    kc.stop_channels()
    km.shutdown_kernel(now=False)
    assert leftover_processes([sid]) == []


@pytest.mark.parametrize("packed_kernel", [("proot", "signal")], indirect=True)
def test_graceful_shutdown_under_proot_ends_a_detached_child(packed_kernel):
    """PRoot waits for every process it traces; the kernel still ends by itself
    (status 0, not the manager's SIGKILL), and its detached child with it."""
    km, kc = packed_kernel
    _, out = _run(kc, "import subprocess; p = subprocess.Popen(['sh', '-c', "
                      "'trap \"\" TERM; exec sleep 300'], start_new_session=True); print(p.pid)")
    child = int(out.strip())
    process = km.provisioner.process
    kc.stop_channels()
    km.shutdown_kernel(now=False)
    assert process.returncode == 0
    assert not os.path.exists(f"/proc/{child}")


# -- policy and failures --------------------------------------------------------------------------


def test_kernel_json_asking_for_a_forbidden_engine_is_refused(
        jupyter_dirs, kernel_root, tmp_path, monkeypatch):
    admin = tmp_path / "nbsandbox_admin_config.json"
    admin.write_text(json.dumps({"SandboxPolicy": {"allowed_engines": ["userns"]}}))
    monkeypatch.setenv("NBSANDBOX_ADMIN_CONFIG", str(admin))
    name = jupyter_dirs.write_spec("forbidden", packed_spec(kernel_root, "proot"))
    km = KernelManager(kernel_name=name)
    with pytest.raises(PolicyError) as info:
        km.start_kernel()
    message = str(info.value)
    assert "'proot'" in message and "allowed engines are userns" in message
    assert str(admin) in message and "kernel.json" in message
    assert not km.has_kernel


def test_admin_guide_refusal_is_what_the_front_end_shows(jupyter_dirs, kernel_root, tmp_path,
                                                         monkeypatch):
    blocks = doc_blocks("admin-guide.md")
    etc = tmp_path / "etc" / "jupyter"
    etc.mkdir(parents=True)
    policy = json.loads(blocks["example:admin-json"])
    policy["SandboxPolicy"]["roots"]["py311"] = str(kernel_root.path)
    (etc / "nbsandbox_admin_config.json").write_text(json.dumps(policy))
    monkeypatch.setattr("nbsandbox.policy.layers.system_config_dirs", lambda: [str(etc)])
    name = jupyter_dirs.write_spec("py-proot", packed_spec(kernel_root, "proot"))
    with pytest.raises(PolicyError) as info:
        KernelManager(kernel_name=name).start_kernel()
    shown = str(info.value).replace(str(etc), "/etc/jupyter")
    assert shown == blocks["output:admin-refusal"].strip()


def test_kernel_json_may_not_turn_off_the_administrators_isolated_home(
        jupyter_dirs, kernel_root, tmp_path, monkeypatch):
    admin = tmp_path / "nbsandbox_admin_config.py"
    admin.write_text("c.SandboxPolicy.isolate_home = True\n")
    monkeypatch.setenv("NBSANDBOX_ADMIN_CONFIG", str(admin))
    name = jupyter_dirs.write_spec("loosen", packed_spec(kernel_root, "userns",
                                                         isolate_home=False))
    with pytest.raises(PolicyError, match="isolate_home = False, but sandboxes must have an "
                                          "isolated home"):
        KernelManager(kernel_name=name).start_kernel()


def test_unknown_config_key_is_named(jupyter_dirs, kernel_root):
    name = jupyter_dirs.write_spec("typo", packed_spec(kernel_root, "userns", isolate_hom=True))
    with pytest.raises(Exception, match=r"unknown key.*isolate_hom; valid keys:"):
        KernelManager(kernel_name=name).start_kernel()


def test_unavailable_engine_fails_the_start_with_its_reason(jupyter_dirs, kernel_root,
                                                             monkeypatch):
    monkeypatch.setenv("NBSANDBOX_PROOT", "/nonexistent/proot")
    from nbsandbox import engines

    monkeypatch.setattr(engines, "_instances", {})  # probe again with the missing binary
    name = jupyter_dirs.write_spec("unavailable", packed_spec(kernel_root, "proot"))
    with pytest.raises(EngineUnavailable) as info:
        KernelManager(kernel_name=name).start_kernel()
    message = str(info.value)
    assert message.startswith("cannot start kernel 'unavailable'")
    assert "engine proot cannot be used" in message and "\n" not in message


def test_isolated_home_kernel_sees_an_empty_home_but_its_connection_file(
        jupyter_dirs, kernel_root, engines_for_nobody, monkeypatch):
    _engine_or_skip(engines_for_nobody, "userns")
    # the runtime dir inside the (unprivileged) home: it must stay visible
    runtime = jupyter_dirs.home / "runtime"
    runtime.mkdir(exist_ok=True)
    if os.getuid() == 0:
        os.chown(runtime, 65534, 65534)
    (jupyter_dirs.home / "secret.txt").write_text("do not read")
    name = jupyter_dirs.write_spec("isolated", packed_spec(kernel_root, "userns",
                                                           isolate_home=True))
    km, kc = _start(name, str(runtime / "kernel-isolated.json"))
    try:
        reply, out = _run(kc, "import os; print(sorted(os.listdir(os.path.expanduser('~'))))")
        assert reply["status"] == "ok"
        assert "secret.txt" not in out and "runtime" in out
        assert km.provisioner.resolve_path("~/secret.txt") is None
        assert km.provisioner.resolve_path(km.provisioner._plan.program) is not None
        # IPython's history stays in memory: the home is thrown away at exit
        reply, out = _run(kc, "print(get_ipython().history_manager.hist_file)")
        assert (reply["status"], out.strip()) == ("ok", ":memory:")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        (jupyter_dirs.home / "secret.txt").unlink()


def test_inner_command_of_our_argv_and_of_a_plain_one():
    ours = ["/usr/bin/python3", "-m", "nbsandbox", "kernel", "launch", "--root", "/r", "--",
            "/gnu/store/x-python/bin/python3", "-m", "ipykernel_launcher", "-f", "c.json"]
    assert inner_command(ours, ours) == ours[8:]
    import sys

    plain = [sys.executable, "-m", "ipykernel_launcher", "-f", "c.json"]
    assert inner_command(plain, ["python3", "-m", "ipykernel_launcher"])[0] == "python3"


def test_kernel_under_the_landlock_profile_writes_only_where_allowed(
        jupyter_dirs, kernel_root, engines_for_nobody, monkeypatch):
    from nbsandbox import landlock

    _engine_or_skip(engines_for_nobody, "userns")
    if landlock.abi() < 1:
        pytest.skip("this kernel has no Landlock")
    # The kernel's own temporary directory, so that the home (also under /tmp) is not in it.
    tmpdir = jupyter_dirs.base / "tmp"
    tmpdir.mkdir(exist_ok=True)
    tmpdir.chmod(0o1777)
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    name = jupyter_dirs.write_spec("restricted", packed_spec(kernel_root, "userns",
                                                             restrict_kernels=True))
    km, kc = _start(name, str(jupyter_dirs.runtime / "kernel-restricted.json"))
    code = ("import os, tempfile\n"
            "def attempt(path):\n"
            "    try:\n"
            "        open(path, 'w').close(); return 'ok'\n"
            "    except OSError as exc:\n"
            "        return exc.errno\n"
            "print(attempt(os.path.expanduser('~/landlocked')),"
            " attempt(os.path.join(tempfile.gettempdir(), 'nbs-landlock-%d' % os.getpid())))")
    try:
        reply, out = _run(kc, code)
        assert reply["status"] == "ok", out
        assert out.split() == ["13", "ok"]
        assert not (jupyter_dirs.home / "landlocked").exists()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
