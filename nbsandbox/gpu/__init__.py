"""The host's GPU driver: find it, check it, and describe what a sandbox needs of it.

A pack is hermetic (its own glibc and libraries), but the user-space half of
the NVIDIA driver (``libcuda.so.1``, ``libnvidia-ml.so.1``, ...) must be the
host's, matching its kernel module, and the device nodes (``/dev/nvidia*``)
must be visible.  One module per concept:

* :mod:`~nbsandbox.gpu.driver`: the driver's names (libraries, programs) and
  :class:`Driver`, what was found of it;
* :mod:`~nbsandbox.gpu.ldcache`: where the host's loader finds it (``ldconfig -p``,
  ``/etc/ld.so.conf`` and its includes);
* :mod:`~nbsandbox.gpu.devices`: its device nodes;
* :mod:`~nbsandbox.gpu.discovery`: :func:`discover`, putting those together with
  ``SandboxPolicy.gpu_driver_paths``, the programs and the versions;
* :mod:`~nbsandbox.gpu.view`: :func:`select`, the policy's ``gpu`` mode turned into
  a :class:`GpuView`, the plain data engines pass through;
* :mod:`~nbsandbox.gpu.passthrough`: how each engine does it, for ``doctor``.
"""

from __future__ import annotations

from nbsandbox.gpu.devices import DEFAULT_DEVICES, find_devices
from nbsandbox.gpu.discovery import (
    PROC_GPUS,
    PROC_VERSION,
    configured_libraries,
    discover,
    find_programs,
    module_version,
    query_gpus,
)
from nbsandbox.gpu.driver import (
    DRIVER_LIBRARIES,
    DRIVER_PROGRAMS,
    KEY_LIBRARIES,
    Driver,
    GpuError,
    is_driver_library,
)
from nbsandbox.gpu.ldcache import (
    LD_SO_CONF,
    conf_directories,
    conf_libraries,
    find_ldconfig,
    linker_cache,
    parse_cache,
)
from nbsandbox.gpu.passthrough import PASSTHROUGH
from nbsandbox.gpu.view import MODES, GpuView, check_mode, link_dirs, select, view_of

__all__ = [
    "DEFAULT_DEVICES", "DRIVER_LIBRARIES", "DRIVER_PROGRAMS", "KEY_LIBRARIES", "LD_SO_CONF",
    "MODES", "PASSTHROUGH", "PROC_GPUS", "PROC_VERSION", "Driver", "GpuError", "GpuView",
    "check_mode", "conf_directories", "conf_libraries", "configured_libraries", "discover",
    "find_devices", "find_ldconfig", "find_programs", "is_driver_library", "link_dirs",
    "linker_cache", "module_version", "parse_cache", "query_gpus", "select", "view_of",
]
