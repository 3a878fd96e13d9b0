"""The glibc item: loader, C library, its sibling libraries and gconv modules.

The whole of glibc goes into one item, not only the libraries that
``DT_NEEDED`` names: glibc loads some of its parts itself at run time (NSS
modules such as ``libnss_dns.so.2``, gconv modules for ``iconv``), and
every part must come from the same build as ``libc.so.6``.
"""

from __future__ import annotations

import os
import re

from nbsandbox.errors import PackError
from nbsandbox.pack.collect import walk_tree
from nbsandbox.pack.layout import Item, Layout, Location

GLIBC = "glibc"

#: Shared libraries that glibc itself provides (2.17 to 2.40); the loader is
#: added by name from ``PT_INTERP``.
SONAMES = frozenset({
    "libc.so.6", "libm.so.6", "libmvec.so.1", "libpthread.so.0", "libdl.so.2",
    "librt.so.1", "libutil.so.1", "libresolv.so.2", "libanl.so.1",
    "libBrokenLocale.so.1", "libnsl.so.1", "libcidn.so.1", "libthread_db.so.1",
    "libc_malloc_debug.so.0", "libmemusage.so", "libpcprofile.so", "libSegFault.so",
    "libnss_files.so.2", "libnss_dns.so.2", "libnss_compat.so.2", "libnss_hesiod.so.2",
    "libnss_db.so.2", "libnss_nis.so.2", "libnss_nisplus.so.2",
})

_VERSION = re.compile(rb"release version (\d+\.\d+(?:\.\d+)?)")
_SYMVER = re.compile(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?\b")


def is_glibc_library(name: str, loader_name: str) -> bool:
    return name in SONAMES or name == loader_name


def glibc_version(libc: str) -> str:
    """The version of the ``libc.so.6`` at ``libc`` (from its banner or symbol versions)."""
    with open(libc, "rb") as f:
        data = f.read()
    m = _VERSION.search(data)
    if m:
        return m.group(1).decode()
    versions = {tuple(int(x or 0) for x in v) for v in _SYMVER.findall(data)}
    if not versions:
        raise PackError(f"{libc} does not look like glibc's libc.so.6; cannot pack it")
    best = max(versions)
    return ".".join(str(x) for x in (best if best[2] else best[:2]))


def add_glibc(layout: Layout, host_interpreter: str) -> tuple[Item, Location]:
    """Fill the glibc item from the host loader ``host_interpreter``'s directory.

    Returns the item and the location of the loader in it.
    """
    loader_real = os.path.realpath(host_interpreter)
    if not os.path.isfile(loader_real):
        raise PackError(f"the dynamic loader {host_interpreter} is missing on this host")
    lib_dir = os.path.dirname(loader_real)
    libc = os.path.join(lib_dir, "libc.so.6")
    if not os.path.exists(libc):
        raise PackError(f"no libc.so.6 next to the loader {loader_real}; cannot find glibc")
    item = layout.item(GLIBC, "glibc", glibc_version(libc))
    loader_name = os.path.basename(host_interpreter)
    loader = item.add_file(f"lib/{loader_name}", loader_real, executable=True)
    loader.loaded_from = loader_real
    for name in sorted(SONAMES):
        path = os.path.join(lib_dir, name)
        if os.path.exists(path):
            item.add_file(f"lib/{name}", os.path.realpath(path)).loaded_from = path
    gconv = os.path.join(lib_dir, "gconv")
    if os.path.isdir(gconv):
        for rel, source, link in walk_tree(gconv):
            if link is not None:
                item.add_symlink(f"lib/gconv/{rel}", link)
            else:
                entry = item.add_file(f"lib/gconv/{rel}", source)
                entry.loaded_from = os.path.join(gconv, rel)
    return item, Location(GLIBC, f"lib/{loader_name}")
