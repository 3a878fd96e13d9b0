"""What a kernel launch adds to the one request (:func:`nbsandbox.launch.request`).

Both ways a packed kernel starts use :func:`kernel_request`: the kernel
provisioner (:meth:`nbsandbox.provisioner.SandboxProvisioner.pre_launch`) and
``nbsandbox kernel launch`` (a kernelspec's ``argv``, for front ends without
provisioners).  A kernel needs, beyond any program:

* the kernel protocol's variables (:data:`KERNEL_VARS`), whatever the policy's
  environment allow-list says;
* its connection file visible, also when an isolated home hides the runtime
  directory it is in;
* ``$NBSANDBOX_ROOT`` set to its own root, so that ``%%sandbox`` in the kernel
  runs from it unless told otherwise;
* for an IPython kernel, its history kept in memory when its home is isolated,
  and a warm-up of traceback formatting (see :mod:`nbsandbox.ipython_kernel`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from nbsandbox.ipython_kernel import ipython_kernel_additions
from nbsandbox.launch import Launch, RequestOptions, request
from nbsandbox.paths import is_under
from nbsandbox.plan import Bind
from nbsandbox.policy import ROOT_ENV
from nbsandbox.store import StoreRoot

if TYPE_CHECKING:
    from nbsandbox.policy import Policy

#: Variables of the kernel protocol that pass whatever the environment allow-list says.
KERNEL_VARS = ("JPY_PARENT_PID", "JPY_SESSION_NAME", "JPY_INTERRUPT_EVENT")


def connection_file_dirs(argv: list[str]) -> list[str]:
    """Directories of the connection file named in a kernel's argv (``-f PATH``)."""
    dirs = []
    for i, word in enumerate(argv):
        path = None
        if word == "-f" and i + 1 < len(argv):
            path = argv[i + 1]
        elif word.startswith(("--f=", "--ConnectionFileMixin.connection_file=")):
            path = word.split("=", 1)[1]
        if path and os.path.isabs(path) and os.path.isdir(os.path.dirname(path)):
            dirs.append(os.path.dirname(path))
    return dirs


def kernel_request(
    policy: Policy,
    root: StoreRoot | str | None,
    argv: list[str],
    *,
    env: Mapping[str, str],
    engine: str | None = None,
    source: str = "the request",
    cwd: str | None = None,
    connection_dirs: Iterable[str] = (),
    keep_env: Iterable[str] = (),
    report: str | None = None,
) -> Launch:
    """The launch of the kernel command ``argv`` (its program, then its arguments) from
    ``root`` under ``policy``: :func:`~nbsandbox.launch.request` with the kernel's
    additions.

    ``env`` is the kernel's environment before the policy filters it;
    ``connection_dirs`` are the directories of its connection file, bound into the
    sandbox when an isolated home would hide them; ``keep_env`` names more variables
    that pass the allow-list (e.g. a kernelspec's own ``env``); ``report``: record the
    kernel's host accesses into this file (see :class:`RequestOptions`).  Called by the
    provisioner and by ``nbsandbox kernel launch``.
    """
    if not isinstance(root, StoreRoot):
        root = policy.open_root(root, source)
    connection_dirs = tuple(connection_dirs)
    binds: list[Bind] = []
    home = env.get("HOME") or os.path.expanduser("~")
    if policy.isolate_home:
        # The private home hides the runtime directory; the kernel must see it.
        binds = [Bind.parse(d) for d in connection_dirs
                 if is_under(os.path.abspath(d), home)]
    argv, env, ipython_vars = ipython_kernel_additions(
        argv, env, isolate_home=policy.isolate_home, home=home, hidden=policy.hide)
    options = RequestOptions(
        env={**env, ROOT_ENV: str(root.path)},
        keep_env=(*KERNEL_VARS, ROOT_ENV, *ipython_vars, *keep_env),
        cwd=cwd,
        binds=tuple(binds),
        kernel=True,
        runtime_dirs=tuple(connection_dirs),
        report=report,
    )
    return request(policy, root, argv[0], argv[1:], engine=engine, source=source,
                   options=options)
