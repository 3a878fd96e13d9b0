"""What an IPython kernel from a root gets beyond its own argv (nbsandbox.ipython_kernel)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
import unpriv

from nbsandbox.ipython_kernel import (
    HISTORY_IN_MEMORY,
    STARTUP_FILE,
    STARTUP_VAR,
    ipython_kernel_additions,
    is_ipython_kernel,
)

KERNEL = ["/gnu/store/x-python/bin/python3", "-m", "ipykernel_launcher", "-f", "/run/k.json"]


def test_what_counts_as_an_ipython_kernel():
    assert is_ipython_kernel(KERNEL)
    assert is_ipython_kernel(["python3", "-X", "dev", "-m", "ipykernel", "-f", "k.json"])
    assert is_ipython_kernel(["python3", "/site/ipykernel_launcher.py", "-f", "k.json"])
    assert not is_ipython_kernel(["python3", "-m", "other_kernel", "-f", "k.json"])
    assert not is_ipython_kernel(["python3", "script.py", "-m", "ipykernel_launcher"])
    assert not is_ipython_kernel(["R", "--slave"])


def test_an_isolated_home_keeps_history_in_memory():
    argv, env, keep = ipython_kernel_additions(KERNEL, {}, isolate_home=True, home="/home/u")
    assert argv == [*KERNEL, HISTORY_IN_MEMORY]
    assert (env, keep) == ({STARTUP_VAR: STARTUP_FILE}, (STARTUP_VAR,))
    argv, _, _ = ipython_kernel_additions(KERNEL, {}, isolate_home=False, home="/home/u")
    assert argv == KERNEL
    own = [*KERNEL, "--HistoryManager.hist_file=/data/h.sqlite"]
    assert ipython_kernel_additions(own, {}, isolate_home=True, home="/h")[0] == own


def test_the_warm_up_only_where_the_sandbox_sees_it_and_no_own_startup_file():
    home = os.path.dirname(os.path.dirname(STARTUP_FILE))
    for kw in ({"isolate_home": True, "home": home},
               {"isolate_home": False, "home": "/h", "hidden": [os.path.dirname(STARTUP_FILE)]}):
        _, env, keep = ipython_kernel_additions(KERNEL, {}, **kw)
        assert (env, keep) == ({}, ())
    _, env, keep = ipython_kernel_additions(KERNEL, {STARTUP_VAR: "/mine.py"},
                                            isolate_home=False, home="/h")
    assert (env, keep) == ({STARTUP_VAR: "/mine.py"}, ())
    argv, env, keep = ipython_kernel_additions(["R"], {"A": "1"}, isolate_home=True, home="/h")
    assert (argv, env, keep) == (["R"], {"A": "1"}, ())


def _run_startup_file(*wrapper: str) -> list[str]:
    """Execute the startup file as IPython does (in the user's namespace); what it left."""
    code = (f"ns = {{}}; exec(open({STARTUP_FILE!r}).read(), ns); import sys, threading; "
            "print(sorted(ns), threading.active_count(), 'IPython.core.ultratb' in sys.modules)")
    proc = unpriv.run([*wrapper, sys.executable, "-c", code], timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "")
    return proc.stdout.split()


def test_the_startup_file_binds_no_name_and_does_nothing_untraced():
    assert _run_startup_file() == ["['__builtins__']", "1", "False"]


@pytest.mark.skipif(not shutil.which("proot"), reason="needs proot (apt-get install proot)")
def test_the_startup_file_warms_up_under_proot():
    assert _run_startup_file("proot") == ["['__builtins__']", "1", "True"]


@pytest.mark.skipif(not shutil.which("proot") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs proot (apt-get install proot) and two CPUs")
def test_a_kernel_started_on_one_cpu_gets_its_cpus_back():
    """``nbs-launch supervise --one-cpu`` starts PRoot and the kernel on one CPU; the
    start-up file gives them the supervisor's CPUs back (threads started before too)."""
    from nbsandbox.native import native_path

    code = (f"import os, threading; threading.Thread(target=input, daemon=True).start(); "
            f"before = len(os.sched_getaffinity(0)); "
            f"exec(open({STARTUP_FILE!r}).read(), {{}}); "
            "tracer = [l.split()[1] for l in open('/proc/self/status') "
            "if l.startswith('TracerPid:')][0]; "
            "print(before, *sorted({len(os.sched_getaffinity(int(t))) for t in "
            "[*os.listdir('/proc/self/task'), tracer]}))")
    proc = unpriv.run([str(native_path("nbs-launch")), "supervise", "--one-cpu", "--",
                       "proot", sys.executable, "-c", code], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", str(len(os.sched_getaffinity(0)))]
