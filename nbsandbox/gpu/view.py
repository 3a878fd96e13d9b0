"""The driver as a sandbox gets it: the ``gpu`` mode, :class:`GpuView`, the link directories.

:func:`select` turns a policy's ``gpu`` mode into a :class:`GpuView` (or
``None``): the plain data engines use to pass the driver through.  Only the
driver's own files are in it; nothing else of the host crosses.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nbsandbox.errors import UsageError
from nbsandbox.gpu.devices import DEFAULT_DEVICES, find_devices
from nbsandbox.gpu.discovery import discover
from nbsandbox.gpu.driver import Driver, GpuError
from nbsandbox.gpu.ldcache import LD_SO_CONF
from nbsandbox.paths import is_under

#: Values of ``SandboxPolicy.gpu`` and ``--gpu``.
MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class GpuView:
    """The driver as a launch passes it: plain data for the plan and the engines.

    ``libraries`` maps library names to host paths (the fakechroot engine's audit
    module resolves exactly these names); ``lib_dir`` is a directory holding one
    symbolic link per name, and nothing else (namespace engines and PRoot add it
    to the program's library search); ``bin_dir`` the same for the driver's
    programs; ``files`` every host file of the driver; ``devices`` the device nodes.
    """

    libraries: tuple[tuple[str, str], ...]
    files: tuple[str, ...]
    devices: tuple[str, ...]
    lib_dir: str
    bin_dir: str
    version: str | None = None

    def library_search_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with ``lib_dir`` last on ``LD_LIBRARY_PATH`` (the store's own
        libraries still come first) and ``bin_dir`` last on ``PATH``."""
        out = dict(env)
        for name, directory in (("LD_LIBRARY_PATH", self.lib_dir), ("PATH", self.bin_dir)):
            parts = [p for p in out.get(name, "").split(":") if p]
            if directory not in parts:
                parts.append(directory)
            out[name] = ":".join(parts)
        return out

    def visible_paths(self) -> list[str]:
        """Every host path the sandbox must show: files, devices, the link directories."""
        return [*self.files, *self.devices, self.lib_dir, self.bin_dir]


def _private_dir() -> Path:
    base = Path(tempfile.gettempdir()) / f"nbsandbox-{os.getuid()}-gpu"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o755)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise GpuError(f"{base} is not a directory of yours that only you can write; remove it")
    return base


def link_dirs(driver: Driver) -> tuple[str, str]:
    """(lib dir, bin dir): directories of symbolic links to the driver's files, named
    after their content and made once (atomically) per user; nothing else is in them."""
    links = sorted([("lib/" + n, os.path.realpath(p)) for n, p in driver.libraries.items()]
                   + [("bin/" + n, os.path.realpath(p)) for n, p in driver.programs.items()])
    digest = hashlib.sha256(repr(links).encode()).hexdigest()[:16]
    base = Path(os.path.realpath(_private_dir()))  # a bind destination: no symlinks
    final = base / digest
    if not final.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))
        try:
            (tmp / "lib").mkdir()
            (tmp / "bin").mkdir()
            for name, target in links:
                os.symlink(target, tmp / name)
            for d in (tmp, tmp / "lib", tmp / "bin"):
                os.chmod(d, 0o555)
            try:
                os.rename(tmp, final)
            except OSError:  # made meanwhile by another launch
                if not final.is_dir():
                    raise
        finally:
            if tmp.exists():
                for d in (tmp, tmp / "lib", tmp / "bin"):
                    with contextlib.suppress(OSError):
                        os.chmod(d, 0o755)
                shutil.rmtree(tmp, ignore_errors=True)
    st = os.lstat(final)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o222:
        raise GpuError(f"{final} is not a read-only directory of yours; remove it")
    return os.fspath(final / "lib"), os.fspath(final / "bin")


def view_of(driver: Driver) -> GpuView:
    """The :class:`GpuView` of a usable driver."""
    lib_dir, bin_dir = link_dirs(driver)
    return GpuView(
        libraries=tuple(sorted(driver.libraries.items())),
        files=tuple(driver.files()),
        devices=tuple(driver.devices),
        lib_dir=lib_dir,
        bin_dir=bin_dir,
        version=driver.version,
    )


def check_mode(mode: str, source: str = "the request") -> str:
    """``mode`` if it is one of :data:`MODES`, else a one-line :class:`UsageError`."""
    if mode not in MODES:
        raise UsageError(f"{source}: gpu must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def select(
    mode: str,
    driver_paths: Iterable[str] = (),
    device_patterns: Iterable[str] = DEFAULT_DEVICES,
    *,
    hidden: Iterable[str] = (),
    cache: str | None = None,
    conf: str = LD_SO_CONF,
) -> GpuView | None:
    """The driver to pass to a launch under ``mode``: ``off`` -> ``None``; ``auto`` ->
    the driver if one is usable here, else ``None`` (silently); ``on`` -> the driver,
    or a :class:`GpuError` saying why not.  Nothing is made unless a view is returned.

    ``hidden``: the plan's hidden paths; a driver file under one is an error (``on``)
    or no GPU (``auto``).  ``cache``, ``conf``: as for :func:`discover`.
    """
    check_mode(mode)
    if mode == "off":
        return None
    device_patterns = tuple(device_patterns)
    if mode == "auto" and not find_devices(device_patterns):
        return None  # not a GPU node: spare the linker cache query
    try:
        driver = discover(driver_paths, device_patterns, cache=cache, conf=conf)
    except GpuError:
        if mode == "auto":
            return None
        raise
    if driver.problem is None:
        covered = _hidden_conflict([*driver.files(), *driver.devices], hidden)
        if covered:
            driver.problem = (f"the GPU driver's {covered[0]} is under the hidden path "
                              f"{covered[1]}; remove it from SandboxPolicy.hide or use --no-gpu")
    if driver.problem is not None:
        if mode == "auto":
            return None
        raise GpuError(f"cannot give the program the host's GPU: {driver.problem}")
    return view_of(driver)


def _hidden_conflict(paths: Iterable[str], hidden: Iterable[str]) -> tuple[str, str] | None:
    """The first (path, hidden path) with the path under the hidden one."""
    hidden = [os.path.normpath(h) for h in hidden]
    for path in paths:
        for h in hidden:
            if is_under(path, h):
                return path, h
    return None
