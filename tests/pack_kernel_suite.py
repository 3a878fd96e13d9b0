"""Run as a program, as the unprivileged user: a kernel registered by a pack's
``bin/nbsandbox-kernel-install`` against jupyter_kernel_test, then interrupt,
restart and shutdown through jupyter_client's KernelManager.

    python pack_kernel_suite.py KERNEL_NAME

Used by tests/test_pack_wrappers.py with JUPYTER_PATH pointing at the
installed kernelspec; the launch goes through the kernelspec's argv only
(the pack's wrapper), never through nbsandbox.
"""

from __future__ import annotations

import os
import sys
import time
import unittest

import jupyter_kernel_test
from jupyter_client.manager import start_new_kernel

KERNEL = sys.argv[1]


class PackKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise"
    code_execute_result = [{"code": "1+2+3", "result": "6"}, {"code": "[n*n for n in range(1, 4)]",
                                                               "result": "[1, 4, 9]"}]
    code_display_data = [{"code": "from IPython.display import HTML; display(HTML('<b>t</b>'))",
                          "mime": "text/html"}]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"


def lifecycle() -> None:
    """Interrupt a busy kernel, restart it, shut it down: as with a plain local kernel."""
    km, kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=120)
    try:
        pid = km.provisioner.pid
        msg_id = kc.execute("import os, time; print(os.getpid()); time.sleep(60)")
        time.sleep(2)
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:  # start_new_kernel's replies
            reply = kc.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "error", reply["content"]
        assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=120)
        assert km.provisioner.pid != pid
        reply = kc.execute_interactive("x = 41 + 1", timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
        pids = [pid, km.provisioner.pid]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert not km.is_alive()
    left = [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert not left, f"kernel processes left after shutdown: {left}"
    print("lifecycle ok")


if __name__ == "__main__":
    program = unittest.main(argv=[sys.argv[0]], exit=False, verbosity=1)
    if not program.result.wasSuccessful():
        sys.exit(1)
    lifecycle()
