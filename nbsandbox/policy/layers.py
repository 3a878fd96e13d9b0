"""Policy layers: where settings come from.

Each :class:`Layer` is the settings given in one place (an administrator's
file, the application's configuration, a request), once validated by the
traits of :class:`~nbsandbox.policy.traits.SandboxPolicy`.  This module reads
the configuration files: the administrator's (:func:`admin_configs`) and the
command line's (:func:`user_config`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets.config import Config
from traitlets.config.loader import (
    ConfigFileNotFound,
    JSONFileConfigLoader,
    PyFileConfigLoader,
)

from nbsandbox.errors import PolicyError

#: Names the administrator's policy files have in the system-wide config directories.
ADMIN_BASENAME = "nbsandbox_admin_config"
#: Environment variable naming more administrator's policy (a file or a directory).
ADMIN_ENV = "NBSANDBOX_ADMIN_CONFIG"

#: File names of the command line's own configuration, in Jupyter's config directories.
USER_CONFIG_BASENAME = "nbsandbox_config"

_FALLBACK_SYSTEM_CONFIG_PATH = ("/usr/local/etc/jupyter", "/etc/jupyter")


@dataclass(frozen=True)
class Layer:
    """Settings given in one place: ``kind`` is administrator, configuration or request."""

    kind: str
    source: str
    settings: dict[str, Any]


def system_config_dirs() -> list[str]:
    """Jupyter's system-wide configuration directories, highest priority first."""
    try:
        from jupyter_core.paths import SYSTEM_CONFIG_PATH
    except ImportError:  # nbsandbox itself does not need jupyter_core
        return list(_FALLBACK_SYSTEM_CONFIG_PATH)
    return list(SYSTEM_CONFIG_PATH)


def load_config_files(paths: Iterable[str | os.PathLike[str]]) -> Config:
    """Merge traitlets config files (``.py`` or ``.json``), later ones overriding.

    A file that exists but cannot be read is a :class:`PolicyError`: a policy
    must not be skipped because of a typo.
    """
    config = Config()
    for path in map(Path, paths):
        if not path.is_file():
            continue
        loader_cls = JSONFileConfigLoader if path.suffix == ".json" else PyFileConfigLoader
        loader = loader_cls(path.name, path=str(path.parent))
        try:
            config.merge(loader.load_config())
        except ConfigFileNotFound:
            continue
        except Exception as exc:
            raise PolicyError(f"cannot read configuration file {path}: {exc}") from None
    return config


def _policy_files(directory: str | os.PathLike[str], basename: str) -> list[Path]:
    return [Path(directory, basename + ext) for ext in (".json", ".py")]


def admin_configs() -> list[tuple[str, Config]]:
    """The administrator's configurations, each with where it comes from: the
    system-wide files, then ``$NBSANDBOX_ADMIN_CONFIG``."""
    configs = []
    files = [f for d in reversed(system_config_dirs())
             for f in _policy_files(d, ADMIN_BASENAME) if f.is_file()]
    if files:
        configs.append(("the administrator's " + " and ".join(map(str, files)),
                        load_config_files(files)))
    extra = os.environ.get(ADMIN_ENV)
    if extra:
        path = Path(extra)
        found = [f for f in _policy_files(path, ADMIN_BASENAME) if f.is_file()] if path.is_dir() \
            else [path]
        if not found or not found[0].is_file():
            raise PolicyError(f"${ADMIN_ENV} names {extra}, which is not a readable "
                              f"{ADMIN_BASENAME}.json/.py file or a directory holding one")
        configs.append((f"the administrator's {found[0]} (${ADMIN_ENV})",
                        load_config_files(found)))
    return configs


def user_config() -> Config:
    """The command line's configuration (``nbsandbox run``, ``doctor``, ``kernel ...``):
    ``nbsandbox_config.{json,py}`` in Jupyter's config path (lowest priority first, so
    nearer files override)."""
    try:
        from jupyter_core.paths import jupyter_config_path
        dirs = jupyter_config_path()
    except ImportError:
        dirs = [os.path.expanduser("~/.jupyter")]
    files = [Path(d, USER_CONFIG_BASENAME + ext) for d in reversed(dirs)
             for ext in (".json", ".py")]
    return load_config_files(files)
