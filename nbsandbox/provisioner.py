"""The kernel provisioner: a whole kernel process run from a store root, through an engine.

Registered under the entry-point group ``jupyter_client.kernel_provisioners``
as ``nbsandbox-provisioner``.  A kernelspec selects it with::

    "metadata": {"kernel_provisioner": {
        "provisioner_name": "nbsandbox-provisioner",
        "config": {"root": "~/packs/py311", "engine": "userns", "isolate_home": true}}}

Every key of ``config`` is a trait of :class:`SandboxProvisioner` (the policy
traits of :class:`~nbsandbox.policy.SandboxPolicy`, plus ``root``).  jupyter_client
passes them as constructor arguments, which override the server's configuration;
so they are checked here, against the administrator's policy: a kernel.json may
only tighten it.

The provisioner is :class:`~jupyter_client.provisioning.LocalProvisioner` with one
change: :meth:`pre_launch` replaces the kernel command by the engine's command for
the same program inside the root.  Engines exec the program in place or forward
signals and exit statuses to it, so the process jupyter_client manages (its
process group, its signals, its exit) behaves as a plain local kernel would.
After the kernel ends, whatever is left of its session is killed (:meth:`cleanup`).
With ``SandboxPolicy.report_dir`` set, the kernel's host accesses are recorded
and written to ``<report_dir>/<kernel_id>.json`` then (docs/access.md).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Unicode

from nbsandbox.errors import NbsandboxError, UsageError
from nbsandbox.jupyter_runs import session_members, signal_session
from nbsandbox.kernels import kernel_request
from nbsandbox.kernelspec import PROVISIONER_NAME
from nbsandbox.policy import POLICY_TRAITS, SandboxPolicy, validated

__all__ = ["PROVISIONER_NAME", "SandboxProvisioner", "inner_command"]


def inner_command(cmd: list[str], spec_argv: list[str]) -> list[str]:
    """The kernel's own command line inside the root.

    A kernelspec written by ``nbsandbox kernel install`` runs
    ``... -m nbsandbox kernel launch [options] -- PROGRAM ARGS`` (so that front ends
    without provisioners work too): the provisioner takes ``PROGRAM ARGS``.  Any
    other argv is the program's own, its first word a name from the root's ``bin/``
    or a store path (jupyter_client replaces a leading ``python3`` by its own
    interpreter: the kernelspec's word is used instead).
    """
    if "--" in cmd:
        head = cmd[:cmd.index("--")]
        if "kernel" in head and "launch" in head:
            return cmd[cmd.index("--") + 1:]
    if cmd and spec_argv and cmd[0] == sys.executable and spec_argv[0] != cmd[0]:
        return [spec_argv[0], *cmd[1:]]
    return list(cmd)


class SandboxProvisioner(LocalProvisioner, SandboxPolicy):  # type: ignore[misc]
    """Starts a kernel from a store root through an nbsandbox engine."""

    root = Unicode(
        "",
        help="""Store root the kernel runs from: a name from `roots` or a path (kernel.json:
        metadata.kernel_provisioner.config.root).  Empty: `default_root`.""",
    ).tag(config=True)

    #: The engine chosen at the last launch, and why others were skipped (for logs, info).
    engine_used: str | None = None
    explanation: str = ""
    _sid: int | None = None
    _recording: Any = None

    def __init__(self, **kwargs: Any) -> None:
        """Called by jupyter_client's provisioner factory with the kernel.json config as
        keyword arguments (next to ``kernel_id``, ``kernel_spec`` and ``parent``)."""
        own = {"root", *POLICY_TRAITS}
        framework = {"kernel_id", "kernel_spec", "parent", "config", "log", "connection_info"}
        unknown = sorted(k for k in kwargs if k not in own | framework)
        if unknown:
            raise UsageError(
                f"kernel.json metadata.kernel_provisioner.config has unknown key(s) "
                f"{', '.join(unknown)}; valid keys: {', '.join(sorted(own))}")
        # Wrong types (isolate_home: "yes", engine: 3) are one-line errors that name
        # kernel.json, not tracebacks from traitlets.
        if "root" in kwargs and not isinstance(kwargs["root"], str):
            raise UsageError(f"{self._source}: bad value for root: expected a string (a root "
                             f"name or path), not {kwargs['root']!r}")
        validated({k: v for k, v in kwargs.items() if k in POLICY_TRAITS}, self._source)
        self._requested = {k: v for k, v in kwargs.items() if k in POLICY_TRAITS}
        super().__init__(**kwargs)

    #: Who asks, in policy errors about this kernel's settings.
    _source = "kernel.json metadata.kernel_provisioner.config"

    @property
    def _label(self) -> str:
        return f"kernel {getattr(self.parent, 'kernel_name', '') or '?'!r}"

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Build the kernel command, then wrap it in the engine's command.

        Called by ``KernelManager.pre_start_kernel`` at every start and restart (the
        same provisioner object is reused on restart).  Raises a one-line
        :class:`~nbsandbox.errors.NbsandboxError` when the policy forbids the request,
        the root is not usable or no allowed engine works here; the front end shows it.
        """
        kwargs = await super().pre_launch(**kwargs)
        try:
            self._wrap(kwargs)
        except NbsandboxError as exc:
            self.log.error("nbsandbox: %s", exc)
            # LocalProvisioner.pre_launch wrote the connection file; no kernel will use it
            cleanup = getattr(self.parent, "cleanup_connection_file", None)
            if cleanup is not None:
                cleanup()
            raise type(exc)(f"cannot start {self._label}: {exc}") from None
        return kwargs

    def _wrap(self, kwargs: dict[str, Any]) -> None:
        source = self._source
        policy = self.effective_policy(self._requested, source)
        spec_argv = list(self.kernel_spec.argv) if self.kernel_spec else []
        connection_file = getattr(self.parent, "connection_file", "")
        report = None
        if policy.report_dir:
            report = os.path.join(policy.report_dir, f"{self.kernel_id or 'kernel'}.json")
        self._finish_report(None)  # a restart: the report of the run before
        launch = kernel_request(
            policy, self.root or None, inner_command(kwargs["cmd"], spec_argv),
            env=kwargs["env"], engine=self._requested.get("engine"), source=source,
            cwd=kwargs.get("cwd") or os.getcwd(),
            connection_dirs=[os.path.dirname(os.path.abspath(connection_file))]
            if connection_file else [],
            keep_env=list(self.kernel_spec.env) if self.kernel_spec else [],
            report=report)
        command = launch.command
        self._recording = launch.recording
        if command.fds:
            kwargs["pass_fds"] = command.fds
        kwargs["cmd"] = command.argv
        kwargs["env"] = command.env
        if command.executable:
            kwargs["executable"] = command.executable
        self.engine_used = launch.resolution.engine.name
        self.explanation = launch.resolution.explain()
        self._root, self._plan = launch.plan.root, launch.plan
        self.log.info("nbsandbox: %s runs from %s; %s", self._label, launch.plan.root.path,
                      self.explanation.replace("\n", ";"))

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        """Start the engine's command as :class:`LocalProvisioner` starts a kernel (in a
        new session).  Called by ``KernelManager`` right after :meth:`pre_launch`."""
        info = await super().launch_kernel(cmd, **kwargs)
        self._sid = self.pid
        return info

    async def kill(self, restart: bool = False) -> None:
        """SIGKILL to the kernel's process group (as :class:`LocalProvisioner`), then to
        every other process of its session (an engine's program may have a process
        group of its own)."""
        await super().kill(restart=restart)
        if self._sid is not None:
            signal_session(self._sid, signal.SIGKILL)

    async def cleanup(self, restart: bool = False) -> None:
        """Kill what is left of the kernel's session, then clean up as
        :class:`LocalProvisioner` does.  Called by ``KernelManager`` after every
        shutdown, with ``restart=True`` when a restart follows; this is the one hook
        that reliably sees restarts."""
        if self._sid is not None and session_members(self._sid):
            self.log.debug("nbsandbox: killing what is left of kernel session %s", self._sid)
            signal_session(self._sid, signal.SIGKILL)
        self._sid = None
        process = getattr(self, "process", None)
        self._finish_report(process.poll() if process is not None else None)
        await super().cleanup(restart=restart)

    def _finish_report(self, returncode: int | None) -> None:
        """Write the access report of the kernel that ended (``SandboxPolicy.report_dir``)."""
        recording, self._recording = self._recording, None
        if recording is None:
            return
        try:
            recording.finish(returncode)
            self.log.info("nbsandbox: %s: access report in %s", self._label, recording.target)
        except OSError as exc:
            self.log.error("nbsandbox: %s: cannot write the access report %s: %s",
                           self._label, recording.target, exc.strerror)

    def resolve_path(self, path_str: str) -> str | None:
        """A path of the kernel's view, as a host path (``None`` if the kernel sees no
        such file): store paths map into the root, a private home hides the user's
        (the plan's :attr:`~nbsandbox.plan.LaunchPlan.view` decides)."""
        plan = getattr(self, "_plan", None)
        if plan is None:
            return super().resolve_path(path_str)
        path = path_str
        if path.startswith("~"):
            if plan.isolate_home:
                return None
            path = os.path.expanduser(path)
        if not os.path.isabs(path):
            path = os.path.join(plan.cwd, path)
        host = plan.view.host_path(path)
        return host if host is not None and os.path.exists(host) else None

    async def get_provisioner_info(self) -> dict[str, Any]:
        """:class:`LocalProvisioner`'s information, plus the engine used."""
        info = await super().get_provisioner_info()
        info["nbsandbox"] = {"engine": self.engine_used, "root": self.root}
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Inverse of :meth:`get_provisioner_info`."""
        await super().load_provisioner_info(provisioner_info)
        self.engine_used = (provisioner_info.get("nbsandbox") or {}).get("engine")
