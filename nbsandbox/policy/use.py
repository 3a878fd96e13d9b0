"""What a folded policy is used for: engines, roots, environments and plans.

:class:`PolicyUse` holds the methods of :class:`~nbsandbox.policy.fold.Policy`
that front ends call to launch under the policy; it reads the fields that
the fold sets.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from typing import Any

from nbsandbox import engines
from nbsandbox import gpu as host_gpu
from nbsandbox.errors import PolicyError, UsageError
from nbsandbox.paths import is_under

#: Environment variable naming the store root to use when none is given.
ROOT_ENV = "NBSANDBOX_ROOT"
#: Host variables that every sandbox gets, whatever the allow-list says.
ALWAYS_PASSED = ("PATH", "HOME")


class PolicyUse:
    """The launch helpers of :class:`~nbsandbox.policy.fold.Policy` (a mixin)."""

    def _where(self, name: str) -> str:
        """Where setting ``name`` was set, for messages."""
        return self.origins.get(name, "the defaults")

    # -- Landlock ----------------------------------------------------------------------------

    def restrictions(self, *, kernel: bool = False, cwd: str = "",
                     env: Mapping[str, str] | None = None, home: str = "",
                     runtime_dirs: Iterable[str] = ()) -> Any:
        """The :class:`~nbsandbox.landlock.Restrictions` in force (``None``: none).

        For a kernel (``kernel``), ``restrict_kernels`` without allowed paths gives
        the default kernel profile, and the kernel may always read ``runtime_dirs``
        (its connection file); ``env`` and ``home`` are the kernel's."""
        from nbsandbox.landlock import Restrictions, kernel_profile

        runtime = tuple(os.path.abspath(d) for d in runtime_dirs)
        if self.allowed_read is None and self.allowed_write is None:
            if kernel and self.restrict_kernels:
                profile = kernel_profile(cwd or os.getcwd(), env or {},
                                         home or os.path.expanduser("~"), runtime)
                return Restrictions(read=profile.read, write=profile.write,
                                    network=self.network, best_effort=self.landlock_best_effort)
            if self.network:
                return None
        read = self.allowed_read
        if read is not None and kernel:
            read = (*read, *runtime)
        return Restrictions(read=read, write=self.allowed_write or (), network=self.network,
                            best_effort=self.landlock_best_effort)

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
        from_env = None if explicit else engines.env_engine()
        if explicit:
            name = explicit
        elif from_env:
            name, source = from_env, f"${engines.ENV_VAR}"
        else:
            name, source = self.engine, f"SandboxPolicy.engine ({self._where('engine')})"
        self.check_engine(name, source)
        return name, source

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

    # -- environment and binds ----------------------------------------------------------------

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
                if is_under(bind.source, h) or is_under(bind.dest, h):
                    raise PolicyError(
                        f"bind {bind.source}:{bind.dest} would expose {h}, which is hidden "
                        f"(SandboxPolicy.hide in {self._where('hide')})")
        return binds

    def hidden_paths(self) -> list[str]:
        return [os.path.normpath(os.path.abspath(os.path.expanduser(p))) for p in self.hide]

    def gpu_view(self) -> Any:
        """The host GPU driver a plan under this policy gets (``None``: none); raises
        :class:`~nbsandbox.gpu.GpuError` when ``gpu`` is "on" and it cannot be had.
        Called by :func:`nbsandbox.launch.request`."""
        return host_gpu.select(self.gpu, self.gpu_driver_paths, self.gpu_devices,
                               hidden=self.hidden_paths())

    def summary(self) -> dict[str, Any]:
        """What the policy allows, for ``doctor``-like displays."""
        return {
            "engine": self.engine,
            "allowed_engines": list(self.allowed_engines) if self.allowed_engines else None,
            "roots": dict(self.roots),
            "default_root": self.default_root or None,
            "isolate_home": self.isolate_home,
            "gpu": self.gpu,
            "origins": dict(self.origins),
        }
