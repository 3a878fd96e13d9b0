"""What an IPython kernel from a root gets beyond its own argv (nbsandbox.ipython_kernel)."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_the_startup_file_binds_no_name_and_warms_up_in_a_thread():
    # As IPython runs $PYTHONSTARTUP: executed in the user's namespace.
    code = (f"import threading; ns = {{}}; exec(open({STARTUP_FILE!r}).read(), ns); "
            "t = [t for t in threading.enumerate() if t.name == 'nbsandbox-warm-up']; "
            "[x.join(60) for x in t]; print(sorted(ns), len(t), "
            "'IPython.core.ultratb' in __import__('sys').modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.split() == ["['__builtins__']", "1", "True"]
