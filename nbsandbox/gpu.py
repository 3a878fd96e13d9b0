"""The host's GPU driver: find it, check it, and describe what a sandbox needs of it.

A pack is hermetic (its own glibc and libraries), but the user-space half of
the NVIDIA driver (``libcuda.so.1``, ``libnvidia-ml.so.1``, ...) must be the
host's, matching its kernel module, and the device nodes (``/dev/nvidia*``)
must be visible.  This module finds those from the host's own facts:

* the linker cache (``ldconfig -p``), for the driver's libraries;
* ``SandboxPolicy.gpu_driver_paths``, files or directories of sites that
  install the driver where the linker cache does not look;
* ``PATH`` and those directories, for ``nvidia-smi`` and its siblings;
* the device nodes matching ``SandboxPolicy.gpu_devices``;
* ``/proc/driver/nvidia/version`` (the kernel module) and the libraries'
  file names (``libcuda.so.535.104.05``) for the versions, and ``nvidia-smi``
  for the GPUs' names (only when asked: it can take seconds).

:func:`select` turns a policy's ``gpu`` mode into a :class:`GpuView` (or
``None``): the plain data engines use to pass the driver through.  Only the
driver's own files are in it; nothing else of the host crosses.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nbsandbox.errors import UsageError

#: Values of ``SandboxPolicy.gpu`` and ``--gpu``.
MODES = ("auto", "on", "off")

#: Library name stems of the NVIDIA driver's user-space half (what the driver
#: installs next to its kernel module, as listed by the container runtimes'
#: driver lists): utility (NVML), compute (CUDA, OpenCL, PTX JIT, NVVM,
#: debugger), video, and the vendor-specific graphics libraries.  Vendor-neutral
#: libraries (libGL, libEGL, libvulkan: glvnd and the loaders) are not the
#: driver and are not passed.
DRIVER_LIBRARIES = (
    # utility
    "libnvidia-ml", "libnvidia-cfg", "libnvidia-nscq",
    # compute
    "libcuda", "libcudadebugger", "libnvidia-ptxjitcompiler", "libnvidia-nvvm",
    "libnvidia-opencl", "libnvidia-gpucomp", "libnvidia-allocator",
    "libnvidia-fatbinaryloader", "libnvidia-compiler", "libnvidia-pkcs11",
    "libnvidia-pkcs11-openssl3",
    # video
    "libnvcuvid", "libnvidia-encode", "libnvidia-opticalflow", "libvdpau_nvidia",
    # graphics (vendor libraries behind glvnd and the Vulkan loader)
    "libEGL_nvidia", "libGLX_nvidia", "libGLESv2_nvidia", "libGLESv1_CM_nvidia",
    "libnvidia-eglcore", "libnvidia-glcore", "libnvidia-glsi", "libnvidia-tls",
    "libnvidia-glvkspirv", "libnvidia-rtcore", "libnvoptix", "libnvidia-fbc",
    "libnvidia-ifr", "libnvidia-cbl",
)

#: The driver's programs, looked for on ``PATH`` and in ``gpu_driver_paths``.
DRIVER_PROGRAMS = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced",
                   "nvidia-cuda-mps-control", "nvidia-cuda-mps-server")

#: Device nodes of the driver (shell patterns).  ``/dev/dri`` nodes count only
#: when the NVIDIA driver drives them (``/sys/class/drm/NAME/device/driver``).
DEFAULT_DEVICES = (
    "/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset", "/dev/nvidia-caps/nvidia-cap[0-9]*",
    "/dev/dri/card[0-9]*", "/dev/dri/renderD[0-9]*",
)

#: The libraries without which there is no usable driver (one is enough).
KEY_LIBRARIES = ("libcuda.so.1", "libnvidia-ml.so.1")

PROC_VERSION = "/proc/driver/nvidia/version"
PROC_GPUS = "/proc/driver/nvidia/gpus"

_NAME = re.compile(r"^(?P<stem>lib[A-Za-z0-9_+-]+?)\.so(?P<suffix>(\.[0-9]+)*)$")
_CACHE_LINE = re.compile(r"^\s+(?P<name>\S+) \((?P<flags>[^)]*)\) => (?P<path>/.+)$")
#: ``ldconfig -p`` flags of this machine's native libraries, by ``uname -m``.
_CACHE_FLAGS = {"x86_64": "x86-64", "aarch64": "AArch64", "ppc64le": "64bit",
                "riscv64": "64bit", "s390x": "64bit"}


class GpuError(UsageError):
    """The GPU driver cannot be passed through as asked (one line, says what to do)."""


def is_driver_library(name: str) -> bool:
    """Whether file name ``name`` is one of the driver's libraries (any version suffix)."""
    m = _NAME.match(name)
    return bool(m) and m.group("stem") in DRIVER_LIBRARIES


def _version_of(path: str) -> str | None:
    """``535.104.05`` for ``.../libcuda.so.535.104.05`` (a dotted suffix of 2+ numbers)."""
    m = _NAME.match(os.path.basename(path))
    if not m:
        return None
    suffix = m.group("suffix").lstrip(".")
    return suffix if suffix.count(".") >= 1 else None


@dataclass
class Driver:
    """What was found of the driver on this host.

    ``libraries`` maps each library name a program may ask the loader for
    (``libcuda.so.1``, and ``libcuda.so`` where it exists) to the host path
    found for it.  ``problem`` says, in one line, why it cannot be used.
    """

    libraries: dict[str, str] = field(default_factory=dict)
    programs: dict[str, str] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    module_version: str | None = None
    library_version: str | None = None
    gpus: list[str] = field(default_factory=list)
    #: Where the libraries came from: "linker cache", or a configured path.
    sources: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def version(self) -> str | None:
        return self.module_version or self.library_version

    def files(self) -> list[str]:
        """The host files that make up the driver: libraries (real files) and programs."""
        paths = {os.path.realpath(p) for p in [*self.libraries.values(), *self.programs.values()]}
        return sorted(paths)

    def summary(self) -> dict[str, object]:
        """Plain data for ``doctor``."""
        return {
            "usable": self.usable,
            "problem": self.problem,
            "version": self.version,
            "module_version": self.module_version,
            "library_version": self.library_version,
            "gpus": list(self.gpus),
            "libraries": dict(sorted(self.libraries.items())),
            "programs": dict(self.programs),
            "devices": list(self.devices),
            "sources": list(self.sources),
        }


# -- discovery ---------------------------------------------------------------------------


def _ldconfig() -> str | None:
    return shutil.which("ldconfig", path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/sbin", "/usr/sbin"]))


def linker_cache(cache: str | None = None, machine: str | None = None) -> list[tuple[str, str]]:
    """(name, path) of the driver libraries in the linker cache (``ldconfig -p``), for
    this machine's word size, in the cache's order; ``cache``: another cache file."""
    ldconfig = _ldconfig()
    if ldconfig is None:
        return []
    argv = [ldconfig, "-p"] + (["-C", cache] if cache else [])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                              env={"PATH": os.defpath, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return []
    want = _CACHE_FLAGS.get(machine or os.uname().machine)
    found = []
    for line in proc.stdout.splitlines():
        m = _CACHE_LINE.match(line)
        if not m or not is_driver_library(m.group("name")):
            continue
        flags = m.group("flags").split(",")
        if want is not None and want not in flags:
            continue
        found.append((m.group("name"), m.group("path")))
    return found


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
        if os.path.basename(path.rstrip("/")) == "stubs" or "/stubs/" in path:
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


def _drm_is_nvidia(path: str) -> bool:
    link = f"/sys/class/drm/{os.path.basename(path)}/device/driver"
    try:
        return os.path.basename(os.readlink(link)) == "nvidia"
    except OSError:
        return False


def find_devices(patterns: Iterable[str]) -> list[str]:
    """Device nodes matching ``patterns`` (``/dev/dri`` ones only if NVIDIA's)."""
    found: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if os.path.isdir(path) or path in found:
                continue
            if path.startswith("/dev/dri/") and not _drm_is_nvidia(path):
                continue
            found.append(path)
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


def discover(
    driver_paths: Iterable[str] = (),
    device_patterns: Iterable[str] = DEFAULT_DEVICES,
    *,
    cache: str | None = None,
    proc_version: str = PROC_VERSION,
    use_linker_cache: bool = True,
    gpus: bool = False,
) -> Driver:
    """Find the driver: configured paths first, then the linker cache.

    ``gpus``: also ask ``nvidia-smi`` for the GPUs (slow; ``doctor`` does).  Raises
    :class:`GpuError` only for a configured path that exists but cannot be read;
    every other reason the driver cannot be used is in ``Driver.problem``.
    """
    driver = Driver()
    configured, dirs = configured_libraries(driver_paths)
    if configured:
        driver.sources.append("SandboxPolicy.gpu_driver_paths")
    cached = linker_cache(cache) if use_linker_cache else []
    if cached:
        driver.sources.append(f"the linker cache ({cache or '/etc/ld.so.cache'})")
    for name, path in [*configured, *cached]:
        if name not in driver.libraries and _usable_file(path):
            driver.libraries[name] = path
    driver.programs = find_programs(dirs)
    driver.devices = find_devices(device_patterns)
    driver.module_version = module_version(proc_version)
    versions = {v for v in (_version_of(os.path.realpath(p)) for n, p in driver.libraries.items()
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
                "linker cache or in SandboxPolicy.gpu_driver_paths (name the driver's directory "
                "there if it is installed elsewhere)")
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


# -- what a sandbox gets ----------------------------------------------------------------------


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
) -> GpuView | None:
    """The driver to pass to a launch under ``mode``: ``off`` -> ``None``; ``auto`` ->
    the driver if one is usable here, else ``None`` (silently); ``on`` -> the driver,
    or a :class:`GpuError` saying why not.  Nothing is made unless a view is returned.

    ``hidden``: the plan's hidden paths; a driver file under one is an error (``on``)
    or no GPU (``auto``).
    """
    check_mode(mode)
    if mode == "off":
        return None
    device_patterns = tuple(device_patterns)
    if mode == "auto" and not find_devices(device_patterns):
        return None  # not a GPU node: spare the linker cache query
    try:
        driver = discover(driver_paths, device_patterns, cache=cache)
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
    hidden = [os.path.normpath(h) for h in hidden]
    for path in paths:
        for h in hidden:
            if path == h or path.startswith(h.rstrip("/") + "/"):
                return path, h
    return None


#: How each engine passes the driver through (for ``doctor``).
PASSTHROUGH = {
    "userns": "binds the driver's files and device nodes; its libraries are found through a "
              "directory of links to them only",
    "bwrap": "binds the driver's files and device nodes; its libraries are found through a "
             "directory of links to them only",
    "proot": "binds the driver's files and device nodes; its libraries are found through a "
             "directory of links to them only",
    "fakechroot": "the audit module resolves exactly the driver's library names to the host's "
                  "files; device nodes are the host's",
    "host": "the program sees the host as it is (nothing is added)",
}
