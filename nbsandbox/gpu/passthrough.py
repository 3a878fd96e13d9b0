"""How each engine passes the driver through, in words (``doctor`` shows them)."""

from __future__ import annotations

_BINDS = ("binds the driver's files and device nodes; its libraries are found through a "
          "directory of links to them only")

#: Engine name -> how it passes the driver; an engine not named here is unknown.
PASSTHROUGH = {
    "userns": _BINDS,
    "bwrap": _BINDS,
    "proot": _BINDS,
    "fakechroot": "the audit module resolves exactly the driver's library names to the host's "
                  "files; device nodes are the host's",
    "host": "the program sees the host as it is (nothing is added)",
}
