"""Engine policy: which engines, roots, host variables and host paths a sandbox gets.

The policy is traitlets configuration.  :class:`SandboxPolicy` declares every
setting; the classes that do the work (the ``%%sandbox`` magics, the kernel
provisioner, ``nbsandbox kernel launch``) inherit from it, so a setting can be
given for all of them (``c.SandboxPolicy.isolate_home = True``) or for one
(``c.SandboxProvisioner.engine = "userns"``), in the usual files.

Settings come in *layers*, each of which may only tighten what the layers
before it allow:

1. the administrator's: ``nbsandbox_admin_config.{json,py}`` in the system-wide
   Jupyter configuration directories (``/usr/local/etc/jupyter``,
   ``/etc/jupyter``);
2. more administrator's settings in the file (or directory) named by
   ``$NBSANDBOX_ADMIN_CONFIG``; since anyone can set a variable, this layer too
   may only tighten the system-wide one;
3. the application's configuration (``ipython_config.py``,
   ``ipython_kernel_config.py``, ``jupyter_server_config.py``,
   ``nbsandbox_config.py``...);
4. the request: a kernel.json's ``metadata.kernel_provisioner.config`` or a
   cell's flags.

A layer that tries to loosen (allow an engine the administrator does not, turn
off an isolated home the administrator turned on...) is a :class:`PolicyError`
naming the setting and the file that forbids it; it is never silently ignored.
:meth:`SandboxPolicy.effective_policy` folds the layers into a plain
:class:`Policy`, which then opens roots, filters environments, builds plans
and picks engines.

The package, each module building only on those before it:

* :mod:`~nbsandbox.policy.layers`: where settings come from (configuration files);
* :mod:`~nbsandbox.policy.use`: what a policy is used for (engines, roots,
  environments, binds);
* :mod:`~nbsandbox.policy.fold`: the tighten-only fold into a :class:`Policy`;
* :mod:`~nbsandbox.policy.traits`: the settings as traits (:class:`SandboxPolicy`,
  which the front ends inherit) and their validation.
"""

from nbsandbox.errors import PolicyError
from nbsandbox.policy.fold import Policy
from nbsandbox.policy.layers import (
    ADMIN_BASENAME,
    ADMIN_ENV,
    USER_CONFIG_BASENAME,
    Layer,
    load_config_files,
    system_config_dirs,
    user_config,
)
from nbsandbox.policy.traits import (
    POLICY_TRAITS,
    SandboxPolicy,
    admin_layers,
    explicit_settings,
    validated,
)
from nbsandbox.policy.use import ALWAYS_PASSED, ROOT_ENV

__all__ = [
    "ADMIN_BASENAME",
    "ADMIN_ENV",
    "ALWAYS_PASSED",
    "POLICY_TRAITS",
    "ROOT_ENV",
    "USER_CONFIG_BASENAME",
    "Layer",
    "Policy",
    "PolicyError",
    "SandboxPolicy",
    "admin_layers",
    "explicit_settings",
    "load_config_files",
    "system_config_dirs",
    "user_config",
    "validated",
]
