"""Shared pytest fixtures.

Pack fixtures
-------------
``python_pack`` (session scope) packs the environment the tests run in
(``sys.executable``'s venv, which has ipykernel) with ``nbsandbox pack`` into
a world-readable directory and returns its :class:`~nbsandbox.store.StoreRoot`
(prefix ``/gnu/store``).  It is built once per session (about 15 s) and shared
by every test that asks for it, so treat it as read-only.  Its python is
``root.metadata.python``; the profile's ``bin/`` has ``python3``,
``ipython``, the venv's other console scripts; ``root.profile_programs()``
lists them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import unpriv

from nbsandbox.store import StoreRoot

unpriv.default_interrupt_signals()

#: The parametrized ``engine`` fixture of the end-to-end tests, and the
#: ``glibc_store`` fixture (stores of other Debian releases).
pytest_plugins = ["engine_params", "glibc_stores"]

_BASETEMP = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Give each session as root its own base directory for temporary files.

    Engines run as an unprivileged user, who must reach the tests' files; a
    concurrent pytest session resets the shared ``/tmp/pytest-of-root`` to
    0700, which would cut this session off.  Removed at the end.
    """
    if config.option.basetemp is None and os.getuid() == 0:
        base = tempfile.mkdtemp(prefix="pytest-nbs-")
        os.chmod(base, 0o755)
        config.option.basetemp = base
        config.stash[_BASETEMP] = base


def pytest_unconfigure(config: pytest.Config) -> None:
    base = config.stash.get(_BASETEMP, None)
    if base is not None:
        subprocess.run(["chmod", "-R", "u+w", base], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def python_pack(tmp_path_factory) -> StoreRoot:
    """A pack of the test venv, unpacked in a directory the unprivileged user can read."""
    from nbsandbox.pack import PackOptions, build_pack

    base = tmp_path_factory.mktemp("python-pack")
    unpriv.world_tmpdir(str(base))
    lines: list[str] = []
    result = build_pack(PackOptions(python=sys.executable, output=base / "root",
                                    progress=lines.append))
    root = StoreRoot.open(result.path)
    root.build_log = lines  # type: ignore[attr-defined]  # phase lines, for test reports
    return root
