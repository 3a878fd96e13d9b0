"""The policy's settings: :class:`SandboxPolicy` declares every one as a trait.

The classes that do the work (the ``%%sandbox`` magics, the kernel
provisioner, ``nbsandbox kernel launch``) inherit from it, so a setting can be
given for all of them (``c.SandboxPolicy.isolate_home = True``) or for one
(``c.SandboxProvisioner.engine = "userns"``).  The ``help=`` strings are the
documentation of each setting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from traitlets import Bool, CaselessStrEnum, Dict, Float, List, TraitError, Unicode, validate
from traitlets.config import Config, Configurable
from traitlets.config.loader import LazyConfigValue

from nbsandbox import gpu as host_gpu
from nbsandbox.errors import PolicyError, UsageError
from nbsandbox.policy.fold import _ORDER, SETTINGS, Policy
from nbsandbox.policy.layers import Layer, admin_configs

__all__ = ["POLICY_TRAITS", "PolicyError", "SandboxPolicy", "admin_layers",
           "explicit_settings", "validated"]


class SandboxPolicy(Configurable):
    """Engine policy shared by every nbsandbox front end."""

    engine = Unicode(
        "default",
        help="""Engine used when a request names none: an engine (userns, fakechroot, bwrap,
        proot, host), a meta-engine (default, performance, auto) or a chain from `chains`.
        $NBSANDBOX_ENGINE, when set, comes before this; an explicit request (a cell's ENGINE,
        a kernel's `engine`) before both.  Every choice must be allowed by `allowed_engines`.""",
    ).tag(config=True)

    allowed_engines = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="""Engines that may be used at all; None (the default) allows every engine.
        Meta-engines and chains skip engines not listed here.  A later layer may only
        remove engines from the administrator's list.""",
    ).tag(config=True)

    chains = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        help="""Fallback chains, by name: {"default": ["userns", "fakechroot"]} makes
        `default` try userns, then fakechroot.  A chain may replace a built-in meta-engine
        (default, performance, auto) or add a new name; engines not in `allowed_engines`
        are skipped.""",
    ).tag(config=True)

    roots = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="""Named store roots: {"py311": "~/packs/py311"}.  A request may name a root
        instead of giving its path.  A later layer may add names but not point an
        administrator's name elsewhere.""",
    ).tag(config=True)

    default_root = Unicode(
        "",
        help="""Root used when a request gives none: a name from `roots` or a path.
        When empty, $NBSANDBOX_ROOT is used.""",
    ).tag(config=True)

    allow_other_roots = Bool(
        True,
        help="""Whether requests may use roots other than those named in `roots` (any path).
        An administrator who sets this to False limits everybody to the named roots.""",
    ).tag(config=True)

    env_allow = List(
        Unicode(),
        default_value=["*"],
        help="""Host environment variables passed into the sandbox, as shell-style patterns
        (["LANG", "LC_*", "TERM"]).  A variable passes only if every layer that set this
        list allows it; PATH and HOME always pass.  A later layer may only narrow it:
        each of its patterns must lie within one of the administrator's.""",
    ).tag(config=True)

    env = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="""Variables set in every sandbox (after the allow-list is applied).  A later
        layer may add variables but not change one the administrator set.""",
    ).tag(config=True)

    isolate_home = Bool(
        False,
        help="""Give sandboxed programs an empty private home instead of the user's (so that
        git, gpg, pip... read none of the user's files); the working directory stays
        visible.  Once the administrator turns it on, it cannot be turned off.""",
    ).tag(config=True)

    binds = List(
        Unicode(),
        help="""Host paths made visible read-write in the sandbox, as "SRC" or "SRC:DST".
        Added to those of earlier layers.""",
    ).tag(config=True)

    ro_binds = List(
        Unicode(),
        help="""Host paths made visible read-only in the sandbox, as "SRC" or "SRC:DST".
        Added to those of earlier layers.""",
    ).tag(config=True)

    hide = List(
        Unicode(),
        help="""Paths that appear empty in the sandbox (e.g. "/etc/ssh", "~/.aws").  Added to
        those of earlier layers; no bind may expose a hidden path again.""",
    ).tag(config=True)

    allow_user_binds = Bool(
        True,
        help="""Whether layers after the administrator's may add `binds` and `ro_binds`.""",
    ).tag(config=True)

    interrupt_timeout = Float(
        1.0,
        help="""Seconds a sandboxed process tree gets to end after SIGINT (an interrupted
        cell, a --timeout) before it is sent SIGTERM.  An administrator's value is a
        maximum.  Processes that ignore or block SIGINT are common (e.g. some servers):
        keep this short.""",
    ).tag(config=True)

    terminate_timeout = Float(
        2.0,
        help="""Seconds a sandboxed process tree gets to end after SIGTERM before it is sent
        SIGKILL.  An administrator's value is a maximum.""",
    ).tag(config=True)

    kill_timeout = Float(
        2.0,
        help="""Seconds to wait for a process to disappear after SIGKILL before giving up with
        a warning (a process in uninterruptible sleep, e.g. on a hung network file system,
        cannot be killed).  An administrator's value is a maximum.""",
    ).tag(config=True)

    allowed_read = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="""Landlock: the only host paths (absolute, existing) sandboxed programs may read
        and execute beneath, besides the store and the system paths every process needs
        (docs/access.md).  None (the default): reading is not restricted.  A later layer's
        list must lie within the administrator's (each path beneath one of its paths):
        what both allow is what is allowed.""",
    ).tag(config=True)

    allowed_write = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="""Landlock: the only host paths sandboxed programs may write, create or remove
        beneath.  None (the default): no restriction, unless `allowed_read` or `network`
        restricts, in which case nothing may be written but /dev/null and the terminal.
        "/" is refused (it allows the whole host).  A later layer's list must lie within
        the administrator's.""",
    ).tag(config=True)

    network = Bool(
        True,
        help="""Landlock: whether sandboxed programs may bind and connect TCP sockets (False
        needs Landlock ABI 4, Linux 6.7).  Once the administrator turns it off, it stays
        off.""",
    ).tag(config=True)

    restrict_kernels = Bool(
        False,
        help="""Run kernels under the default Landlock profile (when neither `allowed_read`
        nor `allowed_write` is set): write only to the working directory, the temporary
        directory and Jupyter's runtime directory; read the store and the system files a
        kernel needs.  Once the administrator turns it on, it cannot be turned off.""",
    ).tag(config=True)

    landlock_best_effort = Bool(
        False,
        help="""When the kernel cannot enforce the Landlock restrictions (no Landlock, or an
        ABI too old for `network`), run unrestricted with a warning instead of refusing.
        A later layer may turn it off, not on, once the administrator set it False.""",
    ).tag(config=True)

    report_dir = Unicode(
        "",
        help="""Access reports of kernels: a directory (absolute, existing, writable) where each
        kernel started by the provisioner writes <kernel_id>.json, the host paths it used
        (docs/access.md), when it shuts down.  Empty (the default): no reports.  Once the
        administrator sets it, later layers cannot change or unset it.""",
    ).tag(config=True)

    report_ignore = List(
        Unicode(),
        help="""Access reports: absolute path prefixes never recorded (besides the store and
        nbsandbox's own files), e.g. ["/usr/share/zoneinfo"].  Added to those of earlier
        layers.""",
    ).tag(config=True)

    gpu = CaselessStrEnum(
        host_gpu.MODES,
        default_value="auto",
        help="""Whether sandboxed programs get the host's GPU driver (its libraries, programs
        and device nodes; nothing else of the host's libraries): "auto" when this host has
        a usable driver, "on" (an error where there is none), or "off".  Once the
        administrator sets "off", no later layer can turn it on.""",
    ).tag(config=True)

    gpu_driver_paths = List(
        Unicode(),
        help="""Files and directories that hold the GPU driver's libraries and programs where
        the linker cache does not name them (e.g. ["/opt/nvidia/driver/lib64"]).  Paths that
        do not exist are skipped, so one list can serve GPU and CPU nodes.  Added to those of
        earlier layers; later layers may add only when `allow_user_binds` is on.""",
    ).tag(config=True)

    gpu_devices = List(
        Unicode(),
        default_value=list(host_gpu.DEFAULT_DEVICES),
        help="""Shell patterns of the GPU driver's device nodes passed with it.  /dev/dri nodes
        count only when the NVIDIA driver drives them.  Layers after the administrator's may
        change it only when `allow_user_binds` is on.""",
    ).tag(config=True)

    locked = List(
        Unicode(),
        help="""Names of settings of this class that later layers may not change at all,
        not even to tighten them (e.g. ["engine", "roots"]).""",
    ).tag(config=True)

    @validate("interrupt_timeout", "terminate_timeout", "kill_timeout")
    def _non_negative(self, proposal: Any) -> float:
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} must be >= 0 seconds")
        return proposal["value"]

    def effective_policy(
        self, request: Mapping[str, Any] | None = None, source: str = "the request"
    ) -> Policy:
        """The policy in force: administrator's files, then this object's configuration,
        then ``request`` (settings named like the traits, from ``source``), each layer
        only tightening the ones before it.

        Called by the front ends before every launch (the files are read each time, so
        an administrator's change applies to the next launch).  Raises
        :class:`PolicyError` for a loosening attempt.
        """
        layers = [*admin_layers(), Layer("configuration", "the configuration",
                                         explicit_settings(self.config, self.section_names()))]
        if request:
            layers.append(Layer("request", source, validated(request, source)))
        return Policy.fold(layers)


POLICY_TRAITS: tuple[str, ...] = tuple(SandboxPolicy.class_own_traits(config=True))


def validated(settings: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Settings checked and coerced by the traits of :class:`SandboxPolicy`."""
    probe = SandboxPolicy()
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if name not in POLICY_TRAITS:
            continue
        if isinstance(value, LazyConfigValue):
            value = value.get_value(getattr(probe, name))
        try:
            setattr(probe, name, value)
        except TraitError as exc:
            raise UsageError(f"{source}: bad value for {name}: {exc}") from None
        out[name] = getattr(probe, name)
    return out


def explicit_settings(config: Config, section_names: Iterable[str]) -> dict[str, Any]:
    """The policy settings a config gives explicitly for classes ``section_names``
    (base classes first, so subclasses override)."""
    merged: dict[str, Any] = {}
    for name in section_names:
        if name in config:
            section = config[name]
            merged.update({k: v for k, v in section.items() if k in POLICY_TRAITS})
    return validated(merged, "configuration")


def admin_layers() -> list[Layer]:
    """The administrator's layers: system-wide files, then ``$NBSANDBOX_ADMIN_CONFIG``."""
    return [Layer("administrator", source, explicit_settings(config, ["SandboxPolicy"]))
            for source, config in admin_configs()]


def _as_folded(name: str, value: Any) -> Any:
    if name == "env_allow":
        return (tuple(value),)
    if name == "locked":
        return frozenset(value)
    return tuple(value) if isinstance(value, list) else value


# The fold (nbsandbox.policy.fold) starts from Policy's own defaults: they must be the traits'.
assert set(_ORDER) == set(POLICY_TRAITS), "every policy trait needs a place in the fold's _ORDER"
assert SETTINGS == POLICY_TRAITS, "Policy's fields are the traits"
assert all(getattr(Policy(), n) == _as_folded(n, getattr(SandboxPolicy(), n))
           for n in POLICY_TRAITS), "Policy's defaults are the traits' defaults"
