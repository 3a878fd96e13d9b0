"""The site directory: where a site keeps its nbsandbox policy and packed kernelspecs.

A site directory lives on the shared file system next to the packs::

    SITE/etc/jupyter/nbsandbox_admin_config.json   the administrator's policy (SandboxPolicy)
    SITE/etc/jupyter/nbsandbox_site.json           how single-user servers start (SiteSettings)
    SITE/share/jupyter/kernels/NAME/kernel.json    one packed kernel per named root

Compute nodes need nothing in ``/etc``: ``nbsandbox site singleuser`` points Jupyter
(``JUPYTER_PATH``) and nbsandbox (``$NBSANDBOX_ADMIN_CONFIG``) at this directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from nbsandbox.errors import UsageError

#: Environment variable naming the site directory (default of ``--site``).
SITE_ENV = "NBSANDBOX_SITE"
#: Environment variable set for a single-user server: the engine it runs under and why.
SERVER_ENGINE_ENV = "NBSANDBOX_SERVER_ENGINE"
SETTINGS_BASENAME = "nbsandbox_site.json"
WRITABLE_PACK_CHOICES = ("refuse", "warn")

#: The batch script of :class:`nbsandbox.site.spawner.PackSlurmSpawner` (batchspawner's
#: template syntax: its req_xyz settings as {{xyz}}).
BATCH_SCRIPT = """#!/bin/bash
#SBATCH --job-name=jupyterhub-{{username}}
#SBATCH --chdir={{homedir}}
#SBATCH --output={{homedir}}/.jupyterhub-slurm-%j.log
#SBATCH --export={{keepvars}}
{% if partition %}#SBATCH --partition={{partition}}
{% endif %}{% if runtime %}#SBATCH --time={{runtime}}
{% endif %}{% if memory %}#SBATCH --mem={{memory}}
{% endif %}{% if nprocs %}#SBATCH --cpus-per-task={{nprocs}}
{% endif %}{% if options %}#SBATCH {{options}}
{% endif %}
exec {{nbsandbox}} site singleuser --site {{site}} -- {{cmd}}
"""


def config_dir(site: Path) -> Path:
    return site / "etc" / "jupyter"


def data_dir(site: Path) -> Path:
    return site / "share" / "jupyter"


def policy_file(site: Path) -> Path:
    return config_dir(site) / "nbsandbox_admin_config.json"


def settings_file(site: Path) -> Path:
    return config_dir(site) / SETTINGS_BASENAME


@dataclass
class SiteSettings:
    """How ``nbsandbox site singleuser`` starts a server: from which root (a name in the
    policy's ``roots``), and what to do when the user can write into a pack
    (``refuse`` to start, or ``warn`` in the job's log)."""

    server_root: str
    writable_pack: str = "refuse"

    def write(self, site: Path) -> None:
        path = settings_file(site)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, site: Path) -> SiteSettings:
        path = settings_file(site)
        try:
            data = json.loads(path.read_text())
            settings = cls(**data)
        except FileNotFoundError:
            raise UsageError(f"{site} is not a site directory: {path} is missing; "
                             "make one with nbsandbox site install") from None
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read the site settings {path}: {exc}") from None
        if settings.writable_pack not in WRITABLE_PACK_CHOICES:
            raise UsageError(f"{path}: writable_pack must be one of "
                             f"{', '.join(WRITABLE_PACK_CHOICES)}, not {settings.writable_pack!r}")
        return settings


def site_dir(given: str | None) -> Path:
    """The site directory from ``--site`` or ``$NBSANDBOX_SITE``."""
    value = given or os.environ.get(SITE_ENV)
    if not value:
        raise UsageError(f"no site directory given: pass --site DIR or set ${SITE_ENV}")
    return Path(os.path.abspath(os.path.expanduser(value)))
