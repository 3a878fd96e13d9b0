"""Relocatable packs: build them (``nbsandbox pack``), unpack them safely, check them.

A pack is laid out like a ``guix pack -RR -S /bin=bin`` tarball: store items
under ``gnu/store/`` (or the chosen prefix), a top-level ``bin`` link into
the profile, and ``.nbsandbox/pack.json``.  Modules, one concept each:

``collect``   what to pack from a Python environment and from host programs
``closure``   shared libraries, found as the dynamic loader finds them
``glibc``     the glibc item (loader, C library, gconv modules)
``layout``    items, their names and staging
``relocate``  ELF interpreters, RUNPATHs and ``#!`` lines into the store
``bytecode``  ``.pyc`` files with store paths
``archive``   deterministic ``.tar.gz``
``build``     the phases of :func:`build_pack`
``unpack``    safe extraction
``check``     completeness and hermeticity of a root
``commands``  the ``pack``, ``unpack`` and ``check`` sub-commands
"""

from nbsandbox.pack.build import PackOptions, PackResult, build_pack
from nbsandbox.pack.check import check_root
from nbsandbox.pack.unpack import unpack

__all__ = ["PackOptions", "PackResult", "build_pack", "check_root", "unpack"]
