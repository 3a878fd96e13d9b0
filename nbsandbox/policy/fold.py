"""The tighten-only fold: layers of settings into one :class:`Policy`.

Each layer may only tighten what the layers before it allow; a layer that
tries to loosen is a :class:`~nbsandbox.policy.traits.PolicyError` naming the
setting and the file that forbids it.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from nbsandbox import engines
from nbsandbox import gpu as host_gpu
from nbsandbox.errors import PolicyError, UsageError
from nbsandbox.paths import is_under
from nbsandbox.policy.layers import Layer
from nbsandbox.policy.use import PolicyUse

#: The order in which one layer's settings are applied: restrictions first, so that a
#: layer's own requests are checked against its own restrictions too.
_ORDER = ("locked", "allowed_engines", "allow_other_roots", "allow_user_binds", "env_allow",
          "isolate_home", "interrupt_timeout", "terminate_timeout", "kill_timeout", "hide",
          "roots", "default_root", "chains", "engine", "env", "binds", "ro_binds",
          "landlock_best_effort", "network", "restrict_kernels", "allowed_read", "allowed_write",
          "gpu", "gpu_driver_paths", "gpu_devices", "report_dir", "report_ignore")


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(repr, value)) + "]"
    return repr(value)


def _normal(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value


@dataclass
class Policy(PolicyUse):
    """The policy in force for one launch: plain data, made by :meth:`fold`."""

    engine: str = "default"
    allowed_engines: tuple[str, ...] | None = None
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    roots: dict[str, str] = field(default_factory=dict)
    default_root: str = ""
    allow_other_roots: bool = True
    #: Every layer's allow-list; a variable must match one pattern of each.
    env_allow: tuple[tuple[str, ...], ...] = (("*",),)
    env: dict[str, str] = field(default_factory=dict)
    isolate_home: bool = False
    binds: tuple[str, ...] = ()
    ro_binds: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    allow_user_binds: bool = True
    interrupt_timeout: float = 1.0
    terminate_timeout: float = 2.0
    kill_timeout: float = 2.0
    allowed_read: tuple[str, ...] | None = None
    allowed_write: tuple[str, ...] | None = None
    network: bool = True
    restrict_kernels: bool = False
    landlock_best_effort: bool = False
    gpu: str = "auto"
    gpu_driver_paths: tuple[str, ...] = ()
    gpu_devices: tuple[str, ...] = host_gpu.DEFAULT_DEVICES
    report_dir: str = ""
    report_ignore: tuple[str, ...] = ()
    locked: frozenset[str] = frozenset()
    #: For each setting, where its value (the restriction in force) was set.
    origins: dict[str, str] = field(default_factory=dict)

    # -- building ---------------------------------------------------------------------

    @classmethod
    def fold(cls, layers: Sequence[Layer]) -> Policy:
        """Apply ``layers`` in order over the defaults (those of the traits: see
        :mod:`nbsandbox.policy.traits`, which checks that they agree); raise
        :class:`PolicyError` when a layer loosens what an earlier one set."""
        policy = cls()
        admin = policy
        for layer in layers:
            if layer.kind == "administrator":
                policy = admin = policy._apply(layer, policy)
            else:
                policy = policy._apply(layer, admin)
        return policy

    def _refuse(self, layer: Layer, name: str, value: Any, why: str, limit: Policy,
                setting: str | None = None) -> PolicyError:
        setting = setting or name
        return PolicyError(
            f"{layer.source} sets {name} = {_fmt(value)}, but {why} "
            f"(SandboxPolicy.{setting} in {limit._where(setting)})")

    def _apply(self, layer: Layer, limit: Policy) -> Policy:
        """This policy with ``layer`` applied; ``limit`` holds the restrictions it must
        respect (the administrator's policy, or for an administrator's layer, the policy
        so far)."""
        p = replace(self, chains=dict(self.chains), roots=dict(self.roots), env=dict(self.env),
                    origins=dict(self.origins))
        for name in _ORDER:
            if name not in layer.settings:
                continue
            value = layer.settings[name]
            if name in limit.locked and name != "locked" and \
                    _normal(value) != _normal(getattr(limit, name)):
                raise PolicyError(
                    f"{layer.source} sets {name} = {_fmt(value)}, but {name} is locked "
                    f"(SandboxPolicy.locked in {limit._where('locked')})")
            getattr(p, f"_set_{name}")(layer, value, limit)
            p.origins[name] = layer.source
        return p

    # One method per setting: how a layer's value combines with what is in force, and
    # what ``limit`` (see _apply) forbids.

    def _set_locked(self, layer: Layer, value: list[str], limit: Policy) -> None:
        unknown = sorted(set(value) - set(SETTINGS))
        if unknown:
            raise UsageError(f"{layer.source}: locked names unknown settings {unknown}; "
                             f"valid: {', '.join(SETTINGS)}")
        self.locked = self.locked | frozenset(value)

    def _set_allowed_engines(self, layer: Layer, value: list[str] | None, limit: Policy) -> None:
        if value is None:
            if limit.allowed_engines is not None:
                raise self._refuse(layer, "allowed_engines", value,
                                   f"only {', '.join(limit.allowed_engines)} are allowed", limit)
            self.allowed_engines = None
            return
        valid = engines.engine_names()
        unknown = [n for n in value if n not in valid]
        if unknown:
            raise UsageError(f"{layer.source}: allowed_engines names unknown engine(s) "
                             f"{', '.join(unknown)}; engines are: {', '.join(valid)}")
        if limit.allowed_engines is not None:
            extra = [n for n in value if n not in limit.allowed_engines]
            if extra:
                raise self._refuse(layer, "allowed_engines", value,
                                   f"{', '.join(extra)} is not allowed; allowed engines: "
                                   f"{', '.join(limit.allowed_engines)}", limit)
        self.allowed_engines = tuple(value)

    def _set_allow_other_roots(self, layer: Layer, value: bool, limit: Policy) -> None:
        if value and not limit.allow_other_roots:
            raise self._refuse(layer, "allow_other_roots", value,
                               "only the named roots may be used", limit)
        self.allow_other_roots = value

    def _set_allow_user_binds(self, layer: Layer, value: bool, limit: Policy) -> None:
        if value and not limit.allow_user_binds:
            raise self._refuse(layer, "allow_user_binds", value, "binds may not be added", limit)
        self.allow_user_binds = value

    def _set_env_allow(self, layer: Layer, value: list[str], limit: Policy) -> None:
        if "env_allow" in limit.origins:
            for pattern in value:
                for allowed in limit.env_allow:
                    if not any(fnmatch.fnmatchcase(pattern, a) for a in allowed):
                        raise self._refuse(
                            layer, "env_allow", value,
                            f"{pattern!r} is wider than the allowed variables {_fmt(allowed)}",
                            limit)
        self.env_allow = (*self.env_allow, tuple(value))

    def _set_isolate_home(self, layer: Layer, value: bool, limit: Policy) -> None:
        if not value and limit.isolate_home:
            raise self._refuse(layer, "isolate_home", value,
                               "sandboxes must have an isolated home", limit)
        self.isolate_home = value

    def _set_allowed_paths(self, name: str, layer: Layer, value: list[str] | None,
                           limit: Policy) -> None:
        from nbsandbox.landlock import check_paths

        bound = getattr(limit, name)
        if value is None:
            if bound is not None:
                raise self._refuse(layer, name, value, "the paths allowed are restricted",
                                   limit)
            setattr(self, name, None)
            return
        paths = check_paths(value, name, layer.source)
        if name == "allowed_write" and "/" in paths:
            raise self._refuse(layer, name, value, "/ would allow writing the whole host; "
                               "leave allowed_write unset instead", limit)
        if bound is not None:
            wider = [p for p in paths if not any(is_under(p, b) for b in bound)]
            if wider:
                raise self._refuse(layer, name, value,
                                   f"{wider[0]} is not within the allowed {_fmt(bound)}", limit)
        setattr(self, name, paths)

    def _set_allowed_read(self, layer: Layer, value: list[str] | None, limit: Policy) -> None:
        self._set_allowed_paths("allowed_read", layer, value, limit)

    def _set_allowed_write(self, layer: Layer, value: list[str] | None, limit: Policy) -> None:
        self._set_allowed_paths("allowed_write", layer, value, limit)

    def _set_network(self, layer: Layer, value: bool, limit: Policy) -> None:
        if value and not limit.network:
            raise self._refuse(layer, "network", value, "the network is denied", limit)
        self.network = value

    def _set_restrict_kernels(self, layer: Layer, value: bool, limit: Policy) -> None:
        if not value and limit.restrict_kernels:
            raise self._refuse(layer, "restrict_kernels", value,
                               "kernels must run restricted", limit)
        self.restrict_kernels = value

    def _set_landlock_best_effort(self, layer: Layer, value: bool, limit: Policy) -> None:
        if value and "landlock_best_effort" in limit.origins and \
                not limit.landlock_best_effort:
            raise self._refuse(layer, "landlock_best_effort", value,
                               "restrictions must be enforced", limit)
        self.landlock_best_effort = value

    def _set_timeout(self, name: str, layer: Layer, value: float, limit: Policy) -> None:
        if name in limit.origins and value > getattr(limit, name):
            raise self._refuse(layer, name, value,
                               f"the maximum is {getattr(limit, name)} seconds", limit)
        setattr(self, name, value)

    def _set_interrupt_timeout(self, layer: Layer, value: float, limit: Policy) -> None:
        self._set_timeout("interrupt_timeout", layer, value, limit)

    def _set_terminate_timeout(self, layer: Layer, value: float, limit: Policy) -> None:
        self._set_timeout("terminate_timeout", layer, value, limit)

    def _set_kill_timeout(self, layer: Layer, value: float, limit: Policy) -> None:
        self._set_timeout("kill_timeout", layer, value, limit)

    def _set_hide(self, layer: Layer, value: list[str], limit: Policy) -> None:
        self.hide = (*self.hide, *(p for p in value if p not in self.hide))

    def _set_roots(self, layer: Layer, value: dict[str, str], limit: Policy) -> None:
        for name, path in value.items():
            old = limit.roots.get(name)
            if old is not None and old != path:
                raise self._refuse(layer, "roots", {name: path}, f"root {name!r} is {old}",
                                   limit)
            if old is None and not limit.allow_other_roots:
                raise self._refuse(layer, "roots", {name: path},
                                   "no roots may be added", limit, "allow_other_roots")
        self.roots.update(value)

    def _set_default_root(self, layer: Layer, value: str, limit: Policy) -> None:
        if value and not limit.allow_other_roots and value not in limit.roots:
            raise self._refuse(layer, "default_root", value,
                               f"only the named roots may be used: {', '.join(limit.roots)}",
                               limit, "allow_other_roots")
        self.default_root = value

    def _set_chains(self, layer: Layer, value: dict[str, list[str]], limit: Policy) -> None:
        valid = engines.engine_names()
        for name, chain in value.items():
            if name in valid:
                raise UsageError(f"{layer.source}: chain {name!r} has the name of an engine; "
                                 "choose another name")
            unknown = [n for n in chain if n not in valid]
            if unknown:
                raise UsageError(f"{layer.source}: chain {name!r} names unknown engine(s) "
                                 f"{', '.join(unknown)}; engines are: {', '.join(valid)}")
            self.chains[name] = tuple(chain)

    def _set_engine(self, layer: Layer, value: str, limit: Policy) -> None:
        self.check_engine(value, source=layer.source, lock=False)  # _apply checks locks
        self.engine = value

    def _set_env(self, layer: Layer, value: dict[str, str], limit: Policy) -> None:
        changed = [k for k, v in value.items() if k in limit.env and limit.env[k] != v]
        if changed:
            raise self._refuse(layer, "env", {k: value[k] for k in changed},
                               f"{', '.join(changed)} is set by the administrator", limit)
        self.env.update(value)

    def _set_gpu(self, layer: Layer, value: str, limit: Policy) -> None:
        if value != "off" and limit.gpu == "off" and "gpu" in limit.origins:
            raise self._refuse(layer, "gpu", value, "GPUs are turned off", limit)
        self.gpu = value

    def _set_gpu_driver_paths(self, layer: Layer, value: list[str], limit: Policy) -> None:
        new = [p for p in value if p not in self.gpu_driver_paths]
        if new and layer.kind != "administrator" and not limit.allow_user_binds:
            raise self._refuse(layer, "gpu_driver_paths", new, "host paths may not be added",
                               limit, "allow_user_binds")
        self.gpu_driver_paths = (*self.gpu_driver_paths, *new)

    def _set_gpu_devices(self, layer: Layer, value: list[str], limit: Policy) -> None:
        if layer.kind != "administrator" and not limit.allow_user_binds and \
                tuple(value) != tuple(self.gpu_devices):
            raise self._refuse(layer, "gpu_devices", value, "host paths may not be added",
                               limit, "allow_user_binds")
        self.gpu_devices = tuple(value)

    def _set_report_dir(self, layer: Layer, value: str, limit: Policy) -> None:
        if "report_dir" in limit.origins and limit.report_dir and value != limit.report_dir:
            raise self._refuse(layer, "report_dir", value,
                               f"kernels' reports go to {limit.report_dir}", limit)
        if value:
            path = os.path.expanduser(value)
            if not os.path.isabs(path):
                raise UsageError(f"{layer.source}: report_dir {value!r} is relative; give an "
                                 "absolute path")
            value = os.path.normpath(path)
        self.report_dir = value

    def _set_report_ignore(self, layer: Layer, value: list[str], limit: Policy) -> None:
        from nbsandbox.report.recording import check_ignore

        paths = check_ignore(value, layer.source)
        self.report_ignore = (*self.report_ignore, *(p for p in paths
                                                     if p not in self.report_ignore))

    def _set_binds(self, layer: Layer, value: list[str], limit: Policy) -> None:
        self.binds = (*self.binds, *self._new_binds(layer, "binds", value, limit))

    def _set_ro_binds(self, layer: Layer, value: list[str], limit: Policy) -> None:
        self.ro_binds = (*self.ro_binds, *self._new_binds(layer, "ro_binds", value, limit))

    def _new_binds(self, layer: Layer, name: str, value: list[str], limit: Policy) -> list[str]:
        old = self.binds if name == "binds" else self.ro_binds
        new = [b for b in value if b not in old]
        if new and not limit.allow_user_binds:
            raise self._refuse(layer, name, new, "binds may not be added", limit,
                               "allow_user_binds")
        return new


#: The names of the settings a policy has (sorted, as traitlets lists traits).
SETTINGS: tuple[str, ...] = tuple(sorted(f.name for f in fields(Policy) if f.name != "origins"))
