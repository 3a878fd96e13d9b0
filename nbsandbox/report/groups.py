"""Accesses grouped for a person: home, working directory, /etc, host libraries..."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nbsandbox.paths import is_under

#: The groups, in the order reports show them: (key, title).
GROUPS = (
    ("home", "your home's config files"),
    ("cwd", "working directory"),
    ("tmp", "temporary directory"),
    ("etc", "/etc"),
    ("libraries", "host libraries"),
    ("programs", "host programs"),
    ("system", "devices and /proc"),
    ("network", "network"),
    ("other", "other"),
)
TITLES = dict(GROUPS)
#: Where host libraries are.
LIBRARY_DIRS = ("/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64",
                "/usr/libx32", "/usr/local/lib")
#: Devices and kernel interfaces.
SYSTEM_DIRS = ("/dev", "/proc", "/sys")


@dataclass(frozen=True)
class Places:
    """The directories that name groups: the homes (the real home of the user who
    launched, and the sandbox's), the working directory, the temporary directories."""

    homes: tuple[str, ...]
    cwd: str
    tmp: tuple[str, ...]

    @classmethod
    def of(cls, home: str, cwd: str, env: Mapping[str, str] | None = None,
           extra_homes: Iterable[str] = ()) -> Places:
        homes = [home, *extra_homes]
        real = _passwd_home()
        if real:
            homes.append(real)
        tmp = [(env or {}).get("TMPDIR") or "/tmp", "/tmp", "/var/tmp"]
        return cls(tuple(dict.fromkeys(os.path.normpath(h) for h in homes if h)),
                   os.path.normpath(cwd),
                   tuple(dict.fromkeys(os.path.normpath(t) for t in tmp)))

    def to_json(self) -> dict:
        return {"homes": list(self.homes), "cwd": self.cwd, "tmp": list(self.tmp)}


def _passwd_home() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return ""


def _anchor(path: str, places: Places) -> str | None:
    """The group of the deepest of home, working directory and temporary directory
    that holds ``path`` (the working directory may be in home or in /tmp)."""
    best: tuple[int, str] | None = None
    candidates = [(h, "home") for h in places.homes] + [(places.cwd, "cwd")] + \
        [(t, "tmp") for t in places.tmp]
    for top, key in candidates:
        if top and top != "/" and is_under(path, top) and (best is None or len(top) > best[0]):
            best = (len(top), key)
    return best[1] if best else None


def group_of(path: str, op: str, places: Places) -> str:
    """The key (see :data:`GROUPS`) of an access to ``path`` with ``op``."""
    if op == "connect":
        return "network"
    if op == "dlopen":
        return "libraries"
    if op == "exec":
        return "programs"
    anchored = _anchor(path, places)
    if anchored:
        return anchored
    if is_under(path, "/etc"):
        return "etc"
    if _under_any(path, LIBRARY_DIRS):
        return "libraries"
    if _under_any(path, SYSTEM_DIRS):
        return "system"
    return "other"


def _under_any(path: str, tops: Iterable[str]) -> bool:
    return any(is_under(path, top) for top in tops)
