"""The driver's device nodes (``/dev/nvidia*``, and the ``/dev/dri`` nodes it drives)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

#: Device nodes of the driver (shell patterns).  ``/dev/dri`` nodes count only
#: when the NVIDIA driver drives them (``/sys/class/drm/NAME/device/driver``).
DEFAULT_DEVICES = (
    "/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset", "/dev/nvidia-caps/nvidia-cap[0-9]*",
    "/dev/dri/card[0-9]*", "/dev/dri/renderD[0-9]*",
)


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
