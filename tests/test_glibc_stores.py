"""Stores whose glibc differs from the host's: check, a packed kernel, ``%%sandbox``.

The stores come from Debian's archive (``tests/glibc_stores.py``); the
conformance checks every engine runs on them (no host library in
``/proc/self/maps``, a missing library named in one line) are in
``tests/test_engines.py``.
"""

from __future__ import annotations

import os

import pytest
from glibc_stores import COMPLETE
from jupyter_client.manager import KernelManager

from nbsandbox.hermetic import StoreLibraries, host_library_warning
from nbsandbox.pack.check import check_root

pytest.register_assert_rewrite("jupyter_fixtures")
pytest_plugins = ("jupyter_fixtures",)

from jupyter_fixtures import leftover_processes, packed_spec  # noqa: E402

TIMEOUT = 120  # seconds for a kernel to answer (proot is slow)


def _needs(problems: list[str]) -> list[str]:
    return [p for p in problems if ": needs " in p]


@pytest.mark.parametrize("store", COMPLETE)
def test_check_finds_every_library_of_a_complete_store(glibc_store, store):
    """Programs find their libraries through their own DT_RPATH, libraries through the
    RPATH of the programs that load them: nothing is reported missing."""
    assert _needs(check_root(glibc_store(store))) == []


def test_check_names_the_programs_that_need_a_library_the_store_lacks(glibc_store):
    root = glibc_store("old-nolz4")
    needs = _needs(check_root(root))
    assert needs, "liblz4.so.1 is missing from the store"
    assert all("liblz4.so.1" in p for p in needs), needs
    zstd = root.resolve(root.find_program("zstd"))
    line = next(p for p in needs if p.startswith(zstd + ":"))
    assert "needs liblz4.so.1" in line
    if os.path.exists("/lib/x86_64-linux-gnu/liblz4.so.1"):
        assert "found only on the host" in line


def test_the_launch_warning_names_the_library_and_the_host_copy(glibc_store):
    root = glibc_store("old-nolz4")
    zstd = root.resolve(root.find_program("zstd"))
    missing = StoreLibraries(root).missing(zstd)
    assert [m.name for m in missing] == ["liblz4.so.1"]
    warning = host_library_warning(root, zstd, "userns")
    assert warning and "\n" not in warning
    assert warning.startswith("nbsandbox: warning: zstd needs liblz4.so.1, which is not in")
    python = root.resolve(root.find_program("python3"))
    assert host_library_warning(root, python, "userns") is None


@pytest.fixture
def new_store(glibc_store):
    """glibc 2.41 (newer than the host's), with Debian's ipykernel."""
    return glibc_store("new")


def test_a_packed_kernel_of_a_newer_glibc_store(new_store, jupyter_dirs, engine):
    """Debian 13's ipykernel, on its glibc 2.41, started by the provisioner under each
    engine: it runs from the store and maps no library of the host."""
    name = jupyter_dirs.write_spec(f"glibc-new-{engine}", packed_spec(new_store, engine))
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        out: list[str] = []
        code = ("import sys, os; print(sys.version_info[:2], sys.executable); "
                "print(os.confstr('CS_GNU_LIBC_VERSION')); "
                "print(*sorted({l.split()[-1] for l in open('/proc/self/maps') "
                "if '.so' in l}), sep='\\n')")
        reply = kc.execute_interactive(
            code, timeout=TIMEOUT,
            output_hook=lambda m: out.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok"
        lines = "".join(out).splitlines()
        assert lines[0] == "(3, 13) /gnu/store/profile=default/bin/python3"
        assert lines[1] == "glibc 2.41"
        store = os.fspath(new_store.store_dir) + "/"
        foreign = [p for p in lines[2:] if not p.startswith(("/gnu/store/", store))
                   and "/nbsandbox/_native/" not in p]
        assert foreign == []
    finally:
        kc.stop_channels()
        pid = km.provisioner.pid if km.provisioner else None
        km.shutdown_kernel()
        if pid:
            assert leftover_processes([pid]) == []


def test_sandbox_magic_on_an_older_glibc_store(glibc_store, engine, capsys, monkeypatch,
                                                tmp_path):
    """``%%sandbox ENGINE --root`` a glibc 2.31 store: the cell's shell is the store's."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    root = glibc_store("old")
    monkeypatch.setattr("nbsandbox.policy.layers.system_config_dirs",
                        lambda: [str(tmp_path / "etc")])
    monkeypatch.delenv("NBSANDBOX_ENGINE", raising=False)
    config = Config()
    config.HistoryManager.enabled = False  # the session's directories go before atexit
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "nbsandbox")
    try:
        shell.run_cell_magic("sandbox", f"{engine} --root {root.path}",
                             'echo "$BASH_VERSION"; python3 -c "import os; '
                             "print(os.confstr('CS_GNU_LIBC_VERSION'))\"")
    finally:
        shell.run_line_magic("unload_ext", "nbsandbox")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("5.1.")
    assert out[1] == "glibc 2.31"
