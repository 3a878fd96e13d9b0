"""Find the host's driver: libraries, programs, devices, versions, and why it is unusable.

The libraries come from, in order: ``SandboxPolicy.gpu_driver_paths``, the
linker cache, and (only when neither has a key library) the directories of
``/etc/ld.so.conf`` (:mod:`nbsandbox.gpu.ldcache`).  The versions come from
``/proc/driver/nvidia/version`` (the kernel module) and the libraries' file
names; the GPUs' names from ``nvidia-smi``, only when asked (it can take
seconds).
"""

from __future__ import annotations

import glob
import os
import re
import stat
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from nbsandbox.gpu.devices import DEFAULT_DEVICES, find_devices
from nbsandbox.gpu.driver import (
    DRIVER_PROGRAMS,
    KEY_LIBRARIES,
    Driver,
    GpuError,
    is_driver_library,
    is_stub_path,
    version_of,
)
from nbsandbox.gpu.ldcache import LD_SO_CONF, conf_libraries, linker_cache

PROC_VERSION = "/proc/driver/nvidia/version"
PROC_GPUS = "/proc/driver/nvidia/gpus"


def _soname(path: str) -> str | None:
    from nbsandbox.elf import read_elf

    try:
        return read_elf(path).soname or None
    except Exception:
        return None


def configured_libraries(paths: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, path) of the driver libraries in configured files and directories, and
    the directories given (for programs).  A directory is searched for the driver's
    library names (not recursively); a file is taken under its own name and its
    ``DT_SONAME``.  A path that does not exist is skipped (sites share one policy
    between GPU and CPU nodes); one that exists but cannot be read is a
    :class:`GpuError`."""
    found: list[tuple[str, str]] = []
    dirs: list[str] = []
    for given in paths:
        path = os.path.abspath(os.path.expanduser(given))
        if not os.path.lexists(path):
            continue
        if is_stub_path(path):
            raise GpuError(
                f"{path} holds the CUDA toolkit's link-time stubs, which cannot talk to a GPU; "
                "name the driver's own directory in SandboxPolicy.gpu_driver_paths instead")
        if os.path.isdir(path):
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                raise GpuError(
                    f"cannot read the GPU driver directory {path}: {exc.strerror}; make it "
                    "readable or remove it from SandboxPolicy.gpu_driver_paths") from None
            dirs.append(path)
            found += [(n, os.path.join(path, n)) for n in names if is_driver_library(n)]
            continue
        if not os.access(path, os.R_OK):
            raise GpuError(f"cannot read the GPU driver file {path}; make it readable or remove "
                           "it from SandboxPolicy.gpu_driver_paths")
        name = os.path.basename(path)
        found.append((name, path))
        soname = _soname(path)
        if soname and soname != name:
            found.append((soname, path))
    return found, dirs


def _usable_file(path: str) -> bool:
    """A readable regular file, through any chain of links (a dangling or looping
    chain is not usable)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode) and os.access(path, os.R_OK)
    except OSError:
        return False


def find_programs(dirs: Sequence[str]) -> dict[str, str]:
    """The driver's programs, in configured directories (and their ``bin/`` and
    ``../bin``), then on ``PATH``."""
    search = []
    for d in dirs:
        search += [d, os.path.join(d, "bin"), os.path.join(os.path.dirname(d), "bin")]
    search += os.environ.get("PATH", os.defpath).split(os.pathsep)
    found: dict[str, str] = {}
    for name in DRIVER_PROGRAMS:
        for d in search:
            candidate = os.path.join(d, name)
            if d.startswith("/") and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                found[name] = os.path.abspath(candidate)
                break
    return found


def module_version(proc_version: str = PROC_VERSION) -> str | None:
    """The kernel module's version, from ``/proc/driver/nvidia/version``."""
    try:
        with open(proc_version) as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?: for [^ ]+)?\s+([0-9]+(?:\.[0-9]+)+)", text)
    return m.group(1) if m else None


def query_gpus(driver: Driver) -> list[str]:
    """The GPUs' names: ``nvidia-smi`` when it works, else ``/proc/driver/nvidia/gpus``."""
    smi = driver.programs.get("nvidia-smi")
    if smi:
        try:
            proc = subprocess.run(
                [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0 and proc.stdout.strip():
            rows = [[c.strip() for c in line.split(",")] for line in proc.stdout.splitlines()
                    if line.strip()]
            if rows and len(rows[0]) > 1 and not driver.module_version:
                driver.module_version = rows[0][1]
            return [row[0] for row in rows]
    names = []
    for info in sorted(glob.glob(os.path.join(PROC_GPUS, "*", "information"))):
        try:
            text = Path(info).read_text()
        except OSError:
            continue
        m = re.search(r"^Model:\s*(.+)$", text, re.M)
        names.append(m.group(1).strip() if m else os.path.basename(os.path.dirname(info)))
    return names


def _has_key_library(found: Iterable[tuple[str, str]]) -> bool:
    return any(name in KEY_LIBRARIES and _usable_file(path) for name, path in found)


def discover(
    driver_paths: Iterable[str] = (),
    device_patterns: Iterable[str] = DEFAULT_DEVICES,
    *,
    cache: str | None = None,
    conf: str = LD_SO_CONF,
    proc_version: str = PROC_VERSION,
    use_linker_cache: bool = True,
    gpus: bool = False,
) -> Driver:
    """Find the driver: configured paths first, then the linker cache (``cache``: another
    cache file), then, if neither has a key library, the directories of ``conf``.

    ``use_linker_cache=False``: neither the cache nor ``conf``.  ``gpus``: also ask
    ``nvidia-smi`` for the GPUs (slow; ``doctor`` does).  Raises :class:`GpuError`
    only for a configured path that exists but cannot be read; every other reason
    the driver cannot be used is in ``Driver.problem``.
    """
    driver = Driver()
    configured, dirs = configured_libraries(driver_paths)
    if configured:
        driver.sources.append("SandboxPolicy.gpu_driver_paths")
    found = list(configured)
    if use_linker_cache:
        cached = linker_cache(cache)
        if cached:
            driver.sources.append(f"the linker cache ({cache or '/etc/ld.so.cache'})")
        found += cached
        if not _has_key_library(found):
            listed = conf_libraries(conf)
            if listed:
                driver.sources.append(f"the directories named in {conf}")
            found += listed
    for name, path in found:
        if name not in driver.libraries and _usable_file(path):
            driver.libraries[name] = path
    driver.programs = find_programs(dirs)
    driver.devices = find_devices(device_patterns)
    driver.module_version = module_version(proc_version)
    versions = {v for v in (version_of(os.path.realpath(p)) for n, p in driver.libraries.items()
                            if n in KEY_LIBRARIES) if v}
    driver.library_version = min(versions) if len(versions) == 1 else (
        ", ".join(sorted(versions)) if versions else None)
    if gpus and driver.libraries:
        driver.gpus = query_gpus(driver)
    driver.problem = _problem(driver, versions)
    return driver


def _problem(driver: Driver, versions: set[str]) -> str | None:
    if not any(name in driver.libraries for name in KEY_LIBRARIES):
        return ("no NVIDIA driver here: neither libcuda.so.1 nor libnvidia-ml.so.1 is in the "
                "linker cache, the directories of /etc/ld.so.conf or "
                "SandboxPolicy.gpu_driver_paths (name the driver's directory there if it is "
                "installed elsewhere)")
    if not driver.devices:
        return ("the NVIDIA driver's libraries are here but no device node is (/dev/nvidia*): "
                "the kernel module is not loaded, or this is not a GPU node")
    if len(versions) > 1:
        found = ", ".join(sorted(versions))
        return (f"the NVIDIA driver's libraries disagree on their version ({found}); "
                "SandboxPolicy.gpu_driver_paths and the linker cache name different drivers")
    lib = next(iter(versions), None)
    if lib and driver.module_version and lib != driver.module_version:
        return (f"the NVIDIA driver's libraries are version {lib} but the kernel module is "
                f"{driver.module_version}; point SandboxPolicy.gpu_driver_paths at the libraries "
                "of the loaded driver (or reboot after a driver update)")
    return None
