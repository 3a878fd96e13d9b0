"""Stores that nbsandbox did not make, whose glibc is older, equal or newer than the host's.

Registered for the whole suite by ``conftest.py``.  ``glibc_store(name)``
(session scope, a factory) returns the :class:`~nbsandbox.store.StoreRoot`
of one of ``tools/glibc_stores.py``'s stores, building it the first time
(from Debian's archive, cached under ``build/glibc-stores/``; tools/bootstrap.sh
builds them on a fresh machine).  A test that needs one is skipped, with the
reason, when it cannot be built here (no network to deb.debian.org, no
apt-get, dpkg-deb or patchelf).

The stores (``python tools/glibc_stores.py --list``):

- ``old``: Debian 11, glibc 2.31, has ``libdl.so.2``;
- ``equal``: Debian 12, glibc 2.36 (the host's version, from packages);
- ``new``: Debian 13, glibc 2.41, has ``libdl.so.2`` and ipykernel;
- ``new-nolibdl``: Debian 13 at ``/nix/store``, no ``libdl.so.2``;
- ``old-nolz4``: Debian 11 whose ``zstd`` needs ``liblz4.so.1``, which the
  store lacks.

Their items have no ``<hash>-`` in their names.  Each root has a profile
``bin/`` with ``bash``, ``sh``, ``cat``, ``ls``, ``env``, ``id``, ``zstd``
and ``python3`` (Debian's ``python3-minimal``: no ``json``, no ``ssl``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nbsandbox.store import StoreRoot

TOOL = Path(__file__).resolve().parent.parent / "tools" / "glibc_stores.py"


def _tool():
    if "glibc_stores_tool" not in sys.modules:
        spec = importlib.util.spec_from_file_location("glibc_stores_tool", TOOL)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["glibc_stores_tool"] = module
        spec.loader.exec_module(module)
    return sys.modules["glibc_stores_tool"]


#: name -> (glibc version, has libdl.so.2), for test ids and expectations.
STORES = {name: (spec.glibc, "libdl.so.2" not in spec.drop_glibc_files)
          for name, spec in _tool().STORES.items()}
#: The complete stores (every program's libraries are in the store).
COMPLETE = ["old", "equal", "new", "new-nolibdl"]

_failures: dict[str, str] = {}


@pytest.fixture(scope="session")
def glibc_store() -> Callable[[str], StoreRoot]:
    """``glibc_store(name)``: the root of that store, or a skip saying why it cannot be had."""
    tool = _tool()

    def get(name: str) -> StoreRoot:
        if name in _failures:
            pytest.skip(_failures[name])
        try:
            root = tool.build_store(tool.STORES[name])
        except tool.BuildError as exc:
            _failures[name] = f"glibc store {name!r} cannot be built here: {exc}"
            pytest.skip(_failures[name])
        blocked = _unreachable(root)
        if blocked:
            _failures[name] = (f"{blocked} is not readable by the unprivileged user the engine "
                               "tests run as; set NBSANDBOX_GLIBC_STORES to a directory "
                               "everyone can read")
            pytest.skip(_failures[name])
        return StoreRoot.open(root)

    return get


def _unreachable(path: Path) -> Path | None:
    """The first directory above ``path`` that others cannot enter, when we are root."""
    if os.getuid() != 0:
        return None
    for d in [*reversed(path.parents), path]:
        if not os.stat(d).st_mode & 0o001:
            return d
    return None
