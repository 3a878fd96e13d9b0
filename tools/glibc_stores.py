#!/usr/bin/env python3
"""Stores that nbsandbox did not make, with a glibc older, equal or newer than the host's.

Each store is built from one Debian release's binary packages: apt fetches
them through a state directory of its own (the machine's apt configuration,
lists and cache are never read or written), ``dpkg-deb -x`` extracts each
package into a store item, and the items are relocated the way a
distribution-built store is: every executable gets the store's loader as its
ELF interpreter and a ``DT_RPATH`` that lists the library directories of all
items (libraries keep no search path of their own, so they are found through
the executable's).  The loader keeps the default directories and the
``ld.so.cache`` it was compiled with -- the host's, for a Debian glibc --,
which is what makes these stores a test of host-library leaks.

Item names are unconventional on purpose: no ``<hash>-`` part, dots, ``+``,
``~`` and ``=`` in them.  ``python tools/glibc_stores.py --list`` shows the
stores; the default builds all of them under ``build/glibc-stores/`` (or
``$NBSANDBOX_GLIBC_STORES``)::

    python tools/glibc_stores.py [--cache DIR] [--store NAME]... [--list]

A store is rebuilt only when its description changes (a stamp file records
it).  Building needs the Debian archive (deb.debian.org), apt-get, dpkg-deb,
patchelf and the Debian archive keyring; a missing one is named in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

#: Where stores are kept: ``$NBSANDBOX_GLIBC_STORES``, else build/glibc-stores of the checkout.
DEFAULT_CACHE = Path(os.environ.get("NBSANDBOX_GLIBC_STORES")
                     or HERE.parent / "build" / "glibc-stores")
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: Bump when the layout of a built store changes, so that caches are rebuilt.
LAYOUT_VERSION = 2

BASE_PACKAGES = ("bash", "coreutils", "zstd", "python3-minimal")


@dataclass(frozen=True)
class StoreSpec:
    """One store: which release, at which prefix, with which packages."""

    name: str
    suite: str
    glibc: str  # the release's glibc version, for people and test ids
    prefix: str
    packages: tuple[str, ...] = BASE_PACKAGES
    #: Files of the glibc item to leave out (``libdl.so.2``: stores without one).
    drop_glibc_files: tuple[str, ...] = ()
    #: Packages whose item is left out (a library the store lacks).
    drop_packages: tuple[str, ...] = ()
    description: str = ""
    profile: tuple[str, ...] = ("bash", "sh", "cat", "ls", "env", "id", "zstd", "python3")
    extra: dict[str, str] = field(default_factory=dict)


STORES: dict[str, StoreSpec] = {s.name: s for s in (
    StoreSpec("old", "bullseye", "2.31", "/gnu/store",
              description="Debian 11: glibc 2.31, older than the host's; has libdl.so.2"),
    StoreSpec("equal", "bookworm", "2.36", "/gnu/store",
              description="Debian 12: the host's glibc (2.36) from packages, not from the host"),
    StoreSpec("new", "trixie", "2.41", "/gnu/store",
              packages=(*BASE_PACKAGES, "python3-ipykernel"),
              description="Debian 13: glibc 2.41, newer than the host's; has libdl.so.2 "
                          "and ipykernel"),
    StoreSpec("new-nolibdl", "trixie", "2.41", "/nix/store", drop_glibc_files=("libdl.so.2",),
              description="Debian 13 at /nix/store, without libdl.so.2 in its glibc item"),
    StoreSpec("old-nolz4", "bullseye", "2.31", "/gnu/store", drop_packages=("liblz4-1",),
              description="Debian 11 without liblz4-1: zstd needs a library the store lacks"),
)}


class BuildError(Exception):
    """A store cannot be built here; the message says what is missing."""


# -- apt, through a state directory of our own ------------------------------------------


def _apt_options(state: Path) -> list[str]:
    return [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={state / 'sources'}",
        "-o", "Dir::Etc::Preferences=/dev/null",
        "-o", f"Dir::Etc::PreferencesParts={state / 'preferences'}",
        "-o", "Dir::Etc::Trusted=/dev/null",
        "-o", f"Dir::Etc::TrustedParts={state / 'trusted'}",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::State::status={state / 'status'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=" + _current_user(),
        "-o", "Acquire::Languages=none",
        "-o", "APT::Install-Recommends=false",
        "-o", "APT::Install-Suggests=false",
    ]


def _current_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "root"


def _run(argv: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} not found; install it (tools/bootstrap.sh)") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines()
                 if ln.startswith(("E:", "W:", "Err:", "dpkg-deb:", "patchelf:")) or "error" in ln]
        detail = (lines or (proc.stderr.strip().splitlines() or ["no message"]))[-1]
        raise BuildError(f"{what} failed: {detail}")
    return proc


def fetch_debs(spec: StoreSpec, cache: Path) -> list[Path]:
    """Download ``spec``'s packages and their dependencies; return the .deb files."""
    if not os.path.exists(KEYRING):
        raise BuildError(f"{KEYRING} is missing; apt-get install debian-archive-keyring")
    state = cache / "apt" / spec.suite
    for sub in ("sources", "preferences", "trusted", "lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    (state / "sources" / f"{spec.suite}.sources").write_text(
        f"Types: deb\nURIs: {MIRROR}\nSuites: {spec.suite}\nComponents: main\n"
        f"Signed-By: {KEYRING}\n")
    opts = _apt_options(state)
    if not any((state / "lists").glob("*_Packages*")):
        _run(["apt-get", *opts, "-q", "update"], f"apt-get update for Debian {spec.suite} "
             f"(is {MIRROR} reachable?)")
    proc = _run(["apt-get", *opts, "-q", "-y", "--simulate", "install", *spec.packages],
                f"resolving {', '.join(spec.packages)} in Debian {spec.suite}")
    names = [f"{pkg}_{version.replace(':', '%3a')}_{arch}.deb" for pkg, version, arch in
             re.findall(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)", proc.stdout, re.M)]
    _run(["apt-get", *opts, "-q", "-y", "--download-only", "install", *spec.packages],
         f"downloading packages of Debian {spec.suite} (is {MIRROR} reachable?)")
    archives = state / "cache" / "archives"
    debs = [archives / n for n in names]
    missing = [d.name for d in debs if not d.exists()]
    if missing:
        raise BuildError(f"apt did not download {', '.join(missing[:3])}")
    return debs


# -- from packages to a relocated store -----------------------------------------------


def _package_name(deb: Path) -> str:
    return deb.name.split("_", 1)[0]


def item_name(deb: Path) -> str:
    """An unconventional item name: ``<package>=<version>~<arch>``, no hash."""
    package, version, arch = deb.name[:-len(".deb")].split("_")
    version = version.replace("%3a", "!")  # an epoch's ':' would split RPATHs
    return re.sub(r"[^A-Za-z0-9.+~=!_-]", "_", f"{package}={version}~{arch}")


def _group(debs: list[Path], spec: StoreSpec) -> dict[str, list[Path]]:
    """Items and the packages in each: glibc alone, Python with everything Python, one
    item per other package (so that programs and their libraries sit in different items)."""
    groups: dict[str, list[Path]] = {}
    for deb in debs:
        package = _package_name(deb)
        if package in spec.drop_packages:
            continue
        if package == "libc6":
            name = f"glibc.{spec.glibc}+{spec.suite}"
        elif "python" in package:
            name = f"python.env+{spec.suite}"
        else:
            name = item_name(deb)
        groups.setdefault(name, []).append(deb)
    return groups


_PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
          "usr/share/lintian", "usr/share/bash-completion", "etc", "var")


def _extract(groups: dict[str, list[Path]], store: Path) -> None:
    for name, debs in groups.items():
        item = store / name
        item.mkdir()
        for deb in debs:
            _run(["dpkg-deb", "-x", os.fspath(deb), os.fspath(item)], f"extracting {deb.name}")
        for rel in _PRUNE:
            shutil.rmtree(item / rel, ignore_errors=True)
        os.chmod(item, 0o755)


def _fix_links(store: Path, prefix: str) -> None:
    """Absolute symlinks point into the store: to their own item, else to the item that has
    the target; links to nothing in the store are removed."""
    items = sorted(p.name for p in store.iterdir())
    for item in items:
        top = store / item
        for dirpath, dirs, files in os.walk(top):
            for name in files + dirs:
                path = Path(dirpath, name)
                if not path.is_symlink():
                    continue
                target = os.readlink(path)
                if not target.startswith("/"):
                    continue
                rel = target.lstrip("/")
                owner = next((i for i in [item, *items] if (store / i / rel).exists()), None)
                path.unlink()
                if owner == item:
                    path.symlink_to(os.path.relpath(top / rel, path.parent))
                elif owner is not None:
                    path.symlink_to(f"{prefix}/{owner}/{rel}")


def _glibc_dirs(item: Path) -> tuple[Path, Path]:
    """(the loader, the directory of libc.so.6) in the glibc item."""
    libcs = sorted(item.rglob("libc.so.6"))
    loaders = sorted(libcs[0].parent.glob("ld-linux*.so.[0-9]")) if libcs else []
    if not loaders:
        raise BuildError(f"no libc.so.6 with a loader next to it in {item}")
    return loaders[0], libcs[0].parent


def _library_dirs(store: Path) -> list[Path]:
    """Directories that hold versioned shared libraries (``*.so.N``), sorted by item."""
    found: set[Path] = set()
    for path in store.rglob("lib*.so*"):
        if re.fullmatch(r"lib.*\.so(\.\d.*)?", path.name) and "gconv" not in path.parts \
                and not path.is_symlink() and path.is_file():
            found.add(path.parent)
    return sorted(found)


def _relocate(store: Path, prefix: str, glibc_item: str) -> None:
    """Interpreter and DT_RPATH for programs; a library with a search path of its own
    gets the store's library directories as its DT_RUNPATH instead; ``#!`` lines
    that name a program the store has point to it."""
    from nbsandbox.elf import is_elf, read_elf, read_shebang
    from nbsandbox.pack.relocate import find_patchelf, rewrite_shebang

    patchelf = find_patchelf()
    loader, _ = _glibc_dirs(store / glibc_item)
    interp = f"{prefix}/{loader.relative_to(store)}"
    libdirs = ":".join(f"{prefix}/{d.relative_to(store)}" for d in _library_dirs(store))
    items = sorted(p.name for p in store.iterdir())
    for path in sorted(store.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        in_glibc = path.is_relative_to(store / glibc_item)
        if not is_elf(path):
            shebang = read_shebang(path) if os.access(path, os.X_OK) else None
            if shebang and shebang.interpreter.startswith("/") and \
                    not shebang.interpreter.startswith(prefix + "/"):
                rel = shebang.interpreter.lstrip("/")
                owner = next((i for i in items if (store / i / rel).is_file()), None)
                if owner is None and rel == "bin/sh":
                    owner, rel = next(((i, "bin/bash") for i in items
                                       if (store / i / "bin/bash").is_file()), (None, rel))
                if owner is not None:
                    rewrite_shebang(path, f"{prefix}/{owner}/{rel}", shebang.argument)
            continue
        info = read_elf(path)
        args: list[str] = []
        if info.interpreter is not None:
            args += ["--set-interpreter", interp]
            if not in_glibc:
                args += ["--force-rpath", "--set-rpath", libdirs]
        elif (info.runpath or info.rpath) and not in_glibc:
            args += ["--set-rpath", libdirs]
        if args:
            _run([patchelf, *args, os.fspath(path)], f"patchelf on {path.relative_to(store)}")


def _profile(store: Path, root: Path, prefix: str, spec: StoreSpec, glibc_item: str) -> None:
    """A profile item whose bin/ links to the programs of ``spec.profile``, and ``R/bin``."""
    found: dict[str, str] = {}
    for item in sorted(p.name for p in store.iterdir()):
        for sub in ("usr/bin", "bin"):
            d = store / item / sub
            if not d.is_dir():
                continue
            for name in spec.profile:
                if name not in found and (d / name).exists():
                    found[name] = f"{prefix}/{item}/{sub}/{name}"
    if "sh" not in found and "bash" in found:
        found["sh"] = found["bash"]
    profile = store / "profile=default"
    (profile / "bin").mkdir(parents=True)
    for name, target in sorted(found.items()):
        (profile / "bin" / name).symlink_to(target)
    (root / "bin").symlink_to(f"{prefix.lstrip('/')}/profile=default/bin")


def _make_readable(top: Path) -> None:
    for dirpath, dirs, files in os.walk(top):
        for name in dirs:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, (mode | 0o444) & ~0o6022)


def _stamp(spec: StoreSpec) -> str:
    return json.dumps({"layout": LAYOUT_VERSION, **asdict(spec)}, sort_keys=True)


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_store(spec: StoreSpec, cache: Path = DEFAULT_CACHE) -> Path:
    """The root of ``spec``'s store under ``cache``, built unless it is up to date."""
    root = cache / spec.name
    stamp = _stamp(spec)
    with _locked(cache):
        stamp_file = root / ".glibc-store.json"
        if stamp_file.exists() and stamp_file.read_text() == stamp:
            return root
        debs = fetch_debs(spec, cache)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=cache))
        try:
            store = tmp / spec.prefix.lstrip("/")
            store.mkdir(parents=True)
            groups = _group(debs, spec)
            glibc_item = next(n for n in groups if n.startswith("glibc."))
            _extract(groups, store)
            for name in spec.drop_glibc_files:
                for path in list((store / glibc_item).rglob(name)):
                    path.unlink()
            _fix_links(store, spec.prefix)
            _relocate(store, spec.prefix, glibc_item)
            _profile(store, tmp, spec.prefix, spec, glibc_item)
            _make_readable(tmp)
            (tmp / ".glibc-store.json").write_text(stamp)
            if root.exists():
                shutil.rmtree(root)
            os.rename(tmp, root)
            os.chmod(root, 0o755)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help=f"where stores and apt's state are kept (default {DEFAULT_CACHE})")
    ap.add_argument("--store", action="append", choices=sorted(STORES),
                    help="build only this store (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the stores and exit")
    args = ap.parse_args(argv)
    if args.list:
        for spec in STORES.values():
            print(f"{spec.name:14} {spec.prefix:11} {spec.description}")
        return 0
    for name in args.store or list(STORES):
        try:
            root = build_store(STORES[name], args.cache.resolve())
        except BuildError as exc:
            print(f"glibc_stores: {name}: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
