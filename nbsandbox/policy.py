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
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, List, TraitError, Unicode, validate
from traitlets.config import Config, Configurable
from traitlets.config.loader import (
    ConfigFileNotFound,
    JSONFileConfigLoader,
    LazyConfigValue,
    PyFileConfigLoader,
)

from nbsandbox import engines
from nbsandbox.errors import EngineUnavailable, UsageError

#: Names the administrator's policy files have in the system-wide config directories.
ADMIN_BASENAME = "nbsandbox_admin_config"
#: Environment variable naming more administrator's policy (a file or a directory).
ADMIN_ENV = "NBSANDBOX_ADMIN_CONFIG"
#: Environment variable naming the store root to use when none is given.
ROOT_ENV = "NBSANDBOX_ROOT"
#: Host variables that every sandbox gets, whatever the allow-list says.
ALWAYS_PASSED = ("PATH", "HOME")

_FALLBACK_SYSTEM_CONFIG_PATH = ("/usr/local/etc/jupyter", "/etc/jupyter")


class PolicyError(UsageError):
    """A setting or a request that the policy forbids (one line, names the setting)."""


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


# -- layers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """Settings given in one place: ``kind`` is administrator, configuration or request."""

    kind: str
    source: str
    settings: dict[str, Any]


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


def admin_layers() -> list[Layer]:
    """The administrator's layers: system-wide files, then ``$NBSANDBOX_ADMIN_CONFIG``."""
    layers = []
    files = [f for d in reversed(system_config_dirs())
             for f in _policy_files(d, ADMIN_BASENAME) if f.is_file()]
    if files:
        config = load_config_files(files)
        layers.append(Layer("administrator",
                            "the administrator's " + " and ".join(map(str, files)),
                            explicit_settings(config, ["SandboxPolicy"])))
    extra = os.environ.get(ADMIN_ENV)
    if extra:
        path = Path(extra)
        found = [f for f in _policy_files(path, ADMIN_BASENAME) if f.is_file()] if path.is_dir() \
            else [path]
        if not found or not found[0].is_file():
            raise PolicyError(f"${ADMIN_ENV} names {extra}, which is not a readable "
                              f"{ADMIN_BASENAME}.json/.py file or a directory holding one")
        config = load_config_files(found)
        layers.append(Layer("administrator",
                            f"the administrator's {found[0]} (${ADMIN_ENV})",
                            explicit_settings(config, ["SandboxPolicy"])))
    return layers


# -- the folded policy -------------------------------------------------------------------

#: The order in which one layer's settings are applied: restrictions first, so that a
#: layer's own requests are checked against its own restrictions too.
_ORDER = ("locked", "allowed_engines", "allow_other_roots", "allow_user_binds", "env_allow",
          "isolate_home", "interrupt_timeout", "terminate_timeout", "kill_timeout", "hide",
          "roots", "default_root", "chains", "engine", "env", "binds", "ro_binds")
assert set(_ORDER) == set(POLICY_TRAITS), "every policy trait needs a place in _ORDER"


def _defaults() -> dict[str, Any]:
    probe = SandboxPolicy()
    return {name: getattr(probe, name) for name in POLICY_TRAITS}


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(repr, value)) + "]"
    return repr(value)


def _under(path: str, top: str) -> bool:
    path, top = os.path.normpath(path), os.path.normpath(top)
    return path == top or path.startswith(top.rstrip("/") + "/")


@dataclass
class Policy:
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
    locked: frozenset[str] = frozenset()
    #: For each setting, where its value (the restriction in force) was set.
    origins: dict[str, str] = field(default_factory=dict)

    # -- building ---------------------------------------------------------------------

    @classmethod
    def fold(cls, layers: Sequence[Layer]) -> Policy:
        """Apply ``layers`` in order over the defaults; raise :class:`PolicyError` when a
        layer loosens what an earlier one set."""
        d = _defaults()
        policy = cls(
            engine=d["engine"], allowed_engines=None, env_allow=(tuple(d["env_allow"]),),
            interrupt_timeout=d["interrupt_timeout"], terminate_timeout=d["terminate_timeout"],
            kill_timeout=d["kill_timeout"],
        )
        admin = policy
        for layer in layers:
            if layer.kind == "administrator":
                policy = admin = policy._apply(layer, policy)
            else:
                policy = policy._apply(layer, admin)
        return policy

    def _where(self, name: str) -> str:
        return self.origins.get(name, "the defaults")

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
        unknown = sorted(set(value) - set(POLICY_TRAITS))
        if unknown:
            raise UsageError(f"{layer.source}: locked names unknown settings {unknown}; "
                             f"valid: {', '.join(POLICY_TRAITS)}")
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

    # -- engines ---------------------------------------------------------------------------

    def engine_choices(self) -> list[str]:
        """Every name a request may give: meta-engines, chains and engines."""
        return list(dict.fromkeys([*engines.META, *self.chains, *engines.engine_names()]))

    def chain(self, name: str) -> tuple[str, ...] | None:
        """The engines a meta-engine or chain tries, in order; ``None`` for an engine."""
        if name in self.chains:
            return self.chains[name]
        try:
            return engines.chain_of(name)
        except UsageError:
            raise UsageError(f"unknown engine {name!r}; valid: "
                             f"{', '.join(self.engine_choices())}") from None

    def allowed(self, engine: str) -> bool:
        return self.allowed_engines is None or engine in self.allowed_engines

    def check_engine(self, name: str, source: str = "the request", *, lock: bool = True) -> None:
        """Raise :class:`UsageError` for an unknown name, :class:`PolicyError` for one the
        policy does not allow (a chain none of whose engines is allowed, or another
        engine than a locked one)."""
        if lock and "engine" in self.locked and name != self.engine:
            raise PolicyError(
                f"{source} asks for engine {name!r}, but engine is locked to {self.engine!r} "
                f"(SandboxPolicy.locked in {self._where('locked')})")
        chain = self.chain(name)
        members = (name,) if chain is None else chain
        if not any(self.allowed(m) for m in members):
            what = f"engine {name!r}" if chain is None else \
                f"{name!r} (which tries {', '.join(chain)})"
            allowed = ", ".join(self.allowed_engines or ()) or "none"
            raise PolicyError(
                f"{source} asks for {what}, which is not allowed: allowed engines are "
                f"{allowed} (SandboxPolicy.allowed_engines in {self._where('allowed_engines')})")

    def requested(self, explicit: str | None = None,
                  source: str = "the request") -> tuple[str, str]:
        """The engine name to use and who asked for it: ``explicit`` (from ``source``),
        else ``$NBSANDBOX_ENGINE``, else the policy's ``engine``; checked."""
        if explicit:
            name = explicit
        elif os.environ.get(engines.ENV_VAR):
            name, source = os.environ[engines.ENV_VAR], f"${engines.ENV_VAR}"
        else:
            name, source = self.engine, f"SandboxPolicy.engine ({self._where('engine')})"
        self.check_engine(name, source)
        return name, source

    def prepare(self, plan: Any, engine: str | None = None, source: str = "the request") -> Any:
        """Choose the engine for ``plan`` within the policy and build the command.

        Returns a :class:`nbsandbox.launch.Launch`; raises :class:`PolicyError` for a
        forbidden engine and :class:`EngineUnavailable` (with every reason) when no
        allowed engine works.
        """
        from nbsandbox.engines import Resolution
        from nbsandbox.launch import prepare

        name, source = self.requested(engine, source)
        chain = self.chain(name)
        if chain is None:
            return prepare(plan, name)
        skipped: list[tuple[str, str]] = []
        for candidate in chain:
            if not self.allowed(candidate):
                skipped.append((candidate, "not allowed by SandboxPolicy.allowed_engines"))
                continue
            try:
                launch = prepare(plan, candidate)
            except EngineUnavailable as exc:
                reason = str(exc).removeprefix(f"engine {candidate} cannot be used: ")
                skipped.append((candidate, reason))
                continue
            launch.resolution = Resolution(name, launch.resolution.engine, skipped)
            return launch
        detail = "; ".join(f"{n}: {r}" for n, r in skipped)
        raise EngineUnavailable(f"no engine of {name!r} ({', '.join(chain)}) works here: "
                                f"{detail}")

    # -- roots -----------------------------------------------------------------------------

    def root_path(self, spec: str | None = None, source: str = "the request") -> str:
        """The host path of the root ``spec`` (a name from ``roots`` or a path), else of the
        default root; raises :class:`UsageError` saying what is valid."""
        named = ", ".join(self.roots) or "none"
        if not spec:
            spec = self.default_root or os.environ.get(ROOT_ENV, "")
            if not spec:
                raise UsageError(
                    f"no store root given: give one (named roots: {named}), or set "
                    f"SandboxPolicy.default_root or ${ROOT_ENV}")
        if spec in self.roots:
            return os.path.expanduser(self.roots[spec])
        looks_like_path = "/" in spec or spec.startswith(("~", ".")) or os.path.isdir(spec)
        if not self.allow_other_roots:
            path = os.path.realpath(os.path.expanduser(spec)) if looks_like_path else None
            for known in self.roots.values():
                if path is not None and os.path.realpath(os.path.expanduser(known)) == path:
                    return path
            raise PolicyError(
                f"{source} asks for root {spec!r}, but only the named roots may be used: "
                f"{named} (SandboxPolicy.allow_other_roots in "
                f"{self._where('allow_other_roots')})")
        if not looks_like_path:
            raise UsageError(f"unknown root {spec!r}: named roots are {named}; "
                             "or give a path (containing '/')")
        return os.path.expanduser(spec)

    def open_root(self, spec: str | None = None, source: str = "the request") -> Any:
        """The :class:`~nbsandbox.store.StoreRoot` for ``spec`` (see :meth:`root_path`)."""
        from nbsandbox.store import StoreRoot

        return StoreRoot.open(self.root_path(spec, source))

    # -- environment and plans ----------------------------------------------------------------

    def env_allowed(self, name: str) -> bool:
        return name in ALWAYS_PASSED or all(
            any(fnmatch.fnmatchcase(name, p) for p in patterns) for patterns in self.env_allow)

    def filter_env(self, env: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
        """``env`` without the variables the allow-list keeps out (``keep`` always passes),
        plus the policy's own ``env``."""
        keep = set(keep)
        out = {k: v for k, v in env.items() if k in keep or self.env_allowed(k)}
        out.update(self.env)
        return out

    def bind_list(self, extra: Iterable[Any] = ()) -> list[Any]:
        """The policy's binds as :class:`~nbsandbox.plan.Bind` objects, then ``extra``;
        refuses a bind that would expose a hidden path."""
        from nbsandbox.plan import Bind

        binds = [Bind.parse(b) for b in self.binds]
        binds += [Bind.parse(b, read_only=True) for b in self.ro_binds]
        binds += list(extra)
        hidden = self.hidden_paths()
        for bind in binds:
            for h in hidden:
                if _under(bind.source, h) or _under(bind.dest, h):
                    raise PolicyError(
                        f"bind {bind.source}:{bind.dest} would expose {h}, which is hidden "
                        f"(SandboxPolicy.hide in {self._where('hide')})")
        return binds

    def hidden_paths(self) -> list[str]:
        return [os.path.normpath(os.path.abspath(os.path.expanduser(p))) for p in self.hide]

    def make_plan(
        self,
        root: Any,
        program: str,
        args: Iterable[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        keep_env: Iterable[str] = (),
        cwd: str | None = None,
        extra_binds: Iterable[Any] = (),
    ) -> Any:
        """A :class:`~nbsandbox.plan.LaunchPlan` under this policy: the environment
        filtered, the policy's binds, hidden paths and home isolation applied.

        ``extra_binds`` are binds the front end itself needs (e.g. the kernel's
        connection file directory); they are not subject to ``allow_user_binds``.
        """
        from nbsandbox.launch import make_plan

        environ = self.filter_env(os.environ if env is None else env, keep_env)
        return make_plan(root, program, args, env=environ, cwd=cwd,
                         binds=self.bind_list(extra_binds), hide=self.hidden_paths(),
                         isolate_home=self.isolate_home, keep_cwd=True)

    def summary(self) -> dict[str, Any]:
        """What the policy allows, for ``doctor``-like displays."""
        return {
            "engine": self.engine,
            "allowed_engines": list(self.allowed_engines) if self.allowed_engines else None,
            "roots": dict(self.roots),
            "default_root": self.default_root or None,
            "isolate_home": self.isolate_home,
            "origins": dict(self.origins),
        }


def _normal(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value
