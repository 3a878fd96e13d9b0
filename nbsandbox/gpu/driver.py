"""The NVIDIA driver's user-space half as data: its names, and what was found of it.

No host access here, apart from :meth:`Driver.files` resolving links.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from nbsandbox.errors import UsageError

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

#: The libraries without which there is no usable driver (one is enough).
KEY_LIBRARIES = ("libcuda.so.1", "libnvidia-ml.so.1")

_NAME = re.compile(r"^(?P<stem>lib[A-Za-z0-9_+-]+?)\.so(?P<suffix>(\.[0-9]+)*)$")


class GpuError(UsageError):
    """The GPU driver cannot be passed through as asked (one line, says what to do)."""


def is_driver_library(name: str) -> bool:
    """Whether file name ``name`` is one of the driver's libraries (any version suffix)."""
    m = _NAME.match(name)
    return bool(m) and m.group("stem") in DRIVER_LIBRARIES


def is_stub_path(path: str) -> bool:
    """Whether ``path`` is in (or is) a ``stubs`` directory: the CUDA toolkit's
    link-time stand-ins for the driver, which cannot talk to a GPU."""
    return "stubs" in os.path.normpath(path).split("/")


def version_of(path: str) -> str | None:
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
    #: Where the libraries came from: the policy, the linker cache, ld.so.conf.
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
