"""What to pack: a Python environment and extra host programs.

:func:`inspect_python` asks the interpreter itself where its pieces are
(interpreter binary, standard library, ``lib-dynload``, site-packages of a
venv or of the interpreter, console scripts), and where a *non-venv* install
of that interpreter looks for site-packages, which is where the packed
environment's packages must go (``lib/python3.X/site-packages`` for
upstream CPython, ``lib/python3/dist-packages`` for Debian's patched
``site.py``).

:func:`add_python` and :func:`add_program` turn those into item entries;
shared libraries come later, from the closure.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nbsandbox.elf import is_elf, read_shebang
from nbsandbox.errors import PackError
from nbsandbox.pack.layout import Item, Layout, Location, ShebangRewrite

PYTHON = "python"
PROGRAM = "program:"

#: Directories of the standard library that are left out: its own test
#: suites (the ``test`` package alone is over 100 MB in a full CPython build)
#: and what only concerns other site-packages layouts.
STDLIB_EXCLUDE_DIRS = frozenset({
    "site-packages",
    "dist-packages",
    "test",
    "idlelib/idle_test",
    "tkinter/test",
    "lib2to3/tests",
    "ctypes/test",
    "unittest/test",
    "sqlite3/test",
    "distutils/tests",
})

#: Files of ``config-3.X-<triplet>/`` that are only for linking programs
#: against libpython (a static ``libpython3.X.a`` is 25-45 MB).
CONFIG_EXCLUDE_SUFFIXES = (".a", ".o", ".so")

_INSPECT = r"""
import json, os, site, sys, sysconfig
print(json.dumps({
    "implementation": sys.implementation.name,
    "version": "%d.%d.%d" % sys.version_info[:3],
    "major_minor": "%d.%d" % sys.version_info[:2],
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "executable": sys.executable,
    "base_executable": getattr(sys, "_base_executable", None) or sys.executable,
    "platlibdir": getattr(sys, "platlibdir", "lib"),
    "stdlib": os.path.dirname(os.__file__),
    "path": sys.path,
    "site_packages": site.getsitepackages(),
    "multiarch": sysconfig.get_config_var("MULTIARCH") or "",
}))
"""

_SITE_LAYOUT = r"""
import json, site
print(json.dumps(site.getsitepackages(["/@P@"])))
"""

_MARK = "/@P@/"


@dataclass(frozen=True)
class PythonEnv:
    """Where the pieces of one Python environment are on the host."""

    interpreter: str
    """The interpreter as given (a venv's ``bin/python`` runs with the venv)."""
    binary: str
    """The real interpreter ELF file."""
    version: str
    major_minor: str
    prefix: str
    base_prefix: str
    platlibdir: str
    stdlib: str
    lib_dynload: str | None
    site_dirs: tuple[str, ...]
    site_target: str
    """Where the packed interpreter looks for site-packages, relative to its prefix."""
    multiarch: str
    unused_path: tuple[str, ...]
    """``sys.path`` entries that are not packed (editable installs, ``.pth`` additions)."""

    @property
    def is_venv(self) -> bool:
        return self.prefix != self.base_prefix

    @property
    def stdlib_target(self) -> str:
        return f"{self.platlibdir}/python{self.major_minor}"

    @property
    def binary_name(self) -> str:
        return f"python{self.major_minor}"


def find_interpreter(spec: str | None) -> str:
    """The interpreter for ``--python``: a venv or install dir, an interpreter path or name."""
    import sys

    if spec is None:
        return sys.executable
    path = os.path.abspath(os.path.expanduser(spec))
    if os.path.isdir(path):
        for name in ("bin/python3", "bin/python"):
            candidate = os.path.join(path, name)
            if os.access(candidate, os.X_OK):
                return candidate
        raise PackError(f"{path} has no bin/python3; give a venv directory or an interpreter")
    if os.path.exists(path):
        return path
    if "/" not in spec:
        found = shutil.which(spec)
        if found:
            return found
    raise PackError(f"Python interpreter {spec} not found; give a path to python3 or a venv")


def _run_json(argv: list[str], what: str) -> object:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                              check=False)
    except OSError as exc:
        raise PackError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise PackError(f"{argv[0]} did not answer within 120 s while {what}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PackError(f"{argv[0]} failed while {what}: {last}")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise PackError(f"{argv[0]} gave unexpected output while {what}") from None


def inspect_python(spec: str | None) -> PythonEnv:
    """Ask the interpreter ``spec`` (see :func:`find_interpreter`) about itself."""
    interpreter = find_interpreter(spec)
    info = _run_json([interpreter, "-I", "-c", _INSPECT], "describing itself")
    assert isinstance(info, dict)
    if info["implementation"] != "cpython":
        raise PackError(f"{interpreter} is {info['implementation']}; only CPython can be packed")
    major, minor = (int(x) for x in info["major_minor"].split("."))
    if (major, minor) < (3, 8):
        raise PackError(f"{interpreter} is Python {info['version']}; packing needs 3.8 or newer")
    binary = os.path.realpath(info["base_executable"])
    if not is_elf(binary):
        raise PackError(f"the interpreter {binary} is not an ELF executable; cannot pack it")
    layout = _run_json([binary, "-I", "-c", _SITE_LAYOUT], "listing its site directories")
    assert isinstance(layout, list)
    site_target = _choose_site_target(layout, info["major_minor"])

    stdlib = os.path.realpath(info["stdlib"])
    lib_dynload = None
    site_dirs: list[str] = []
    unused: list[str] = []
    site_set = {os.path.realpath(p) for p in info["site_packages"]}
    for entry in info["path"]:
        if not entry or not os.path.isabs(entry):
            continue
        real = os.path.realpath(entry)
        if os.path.basename(entry) == "lib-dynload" and lib_dynload is None:
            lib_dynload = real
        elif real == stdlib or entry.endswith(".zip"):
            continue
        elif real in site_set and os.path.isdir(real):
            if real not in site_dirs:
                site_dirs.append(real)
        elif os.path.exists(entry) or "__editable__" in entry:
            unused.append(entry)
    return PythonEnv(
        interpreter=interpreter,
        binary=binary,
        version=info["version"],
        major_minor=info["major_minor"],
        prefix=info["prefix"],
        base_prefix=info["base_prefix"],
        platlibdir=info["platlibdir"],
        stdlib=stdlib,
        lib_dynload=lib_dynload,
        site_dirs=tuple(site_dirs),
        site_target=site_target,
        multiarch=info["multiarch"],
        unused_path=tuple(unused),
    )


def _choose_site_target(candidates: list[str], major_minor: str) -> str:
    rels = [c[len(_MARK):] for c in candidates if c.startswith(_MARK)]
    for rel in rels:
        if rel.endswith("site-packages") and not rel.startswith("local/"):
            return rel
    for rel in rels:
        if not rel.startswith("local/"):
            return rel
    return f"lib/python{major_minor}/site-packages"


# -- walking trees ---------------------------------------------------------------


def walk_tree(top: str, *, exclude: Callable[[str, bool], bool] | None = None
              ) -> Iterator[tuple[str, str, str | None]]:
    """(relative path, source path, link target or None) of the files under ``top``.

    Symlinks that stay inside ``top`` are kept as relative links; others are
    followed (their content is copied).  ``__pycache__`` directories are
    skipped, and so is whatever ``exclude(rel, is_dir)`` says.  Sorted.
    """
    top = os.path.realpath(top)
    seen_dirs: set[str] = set()

    def walk(real_dir: str, rel_dir: str) -> Iterator[tuple[str, str, str | None]]:
        if real_dir in seen_dirs:
            return
        seen_dirs.add(real_dir)
        try:
            names = sorted(os.listdir(real_dir))
        except OSError as exc:
            raise PackError(f"cannot list {real_dir}: {exc.strerror}") from None
        for name in names:
            path = os.path.join(real_dir, name)
            rel = os.path.join(rel_dir, name) if rel_dir else name
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                link = os.readlink(path)
                real = os.path.realpath(path)
                if not os.path.exists(real):
                    continue  # dangling
                inside = real == top or real.startswith(top + "/")
                if not link.startswith("/") and inside and not os.path.isdir(real):
                    if exclude is None or not exclude(rel, False):
                        yield rel, path, link
                    continue
                if os.path.isdir(real):
                    if name == "__pycache__" or (exclude is not None and exclude(rel, True)):
                        continue
                    yield from walk(real, rel)
                elif os.path.isfile(real) and (exclude is None or not exclude(rel, False)):
                    yield rel, real, None
            elif stat.S_ISDIR(st.st_mode):
                if name == "__pycache__" or (exclude is not None and exclude(rel, True)):
                    continue
                yield from walk(path, rel)
            elif stat.S_ISREG(st.st_mode) and (exclude is None or not exclude(rel, False)):
                yield rel, path, None

    yield from walk(top, "")


def _add_tree(item: Item, top: str, dest: str,
              exclude: Callable[[str, bool], bool] | None = None) -> int:
    count = 0
    for rel, source, link in walk_tree(top, exclude=exclude):
        target_rel = f"{dest}/{rel}"
        if link is not None:
            item.add_symlink(target_rel, link)
        else:
            item.add_file(target_rel, source)
        count += 1
    return count


def _stdlib_exclude(rel: str, is_dir: bool) -> bool:
    if is_dir:
        return rel in STDLIB_EXCLUDE_DIRS or rel == "lib-dynload"
    first = rel.split("/", 1)[0]
    return first.startswith("config-") and rel.endswith(CONFIG_EXCLUDE_SUFFIXES)


def _site_exclude(rel: str, is_dir: bool) -> bool:
    # Editable installs point at source trees outside the environment.
    return not is_dir and "/" not in rel and rel.startswith("__editable__")


# -- the Python item ------------------------------------------------------------------


@dataclass
class PythonCollection:
    item: Item
    env: PythonEnv
    scripts: list[str]
    notes: list[str]

    @property
    def binary(self) -> Location:
        return Location(self.item.key, f"bin/{self.env.binary_name}")


def add_python(layout: Layout, env: PythonEnv) -> PythonCollection:
    """Add the interpreter, stdlib, site-packages and console scripts to the python item."""
    item = layout.item(PYTHON, "python", env.version)
    notes: list[str] = []
    binary = item.add_file(f"bin/{env.binary_name}", env.binary, executable=True)
    binary.loaded_from = env.binary
    for alias in ("python3", "python"):
        item.add_symlink(f"bin/{alias}", env.binary_name)

    _add_tree(item, env.stdlib, env.stdlib_target, exclude=_stdlib_exclude)
    if env.lib_dynload is not None:
        _add_tree(item, env.lib_dynload, f"{env.stdlib_target}/lib-dynload")
    for site_dir in env.site_dirs:
        # The first directory on sys.path wins, as it would for imports.
        _add_tree(item, site_dir, env.site_target, exclude=_site_exclude)
        for name in sorted(os.listdir(site_dir)):
            if name.startswith("__editable__"):
                notes.append(f"left out the editable install {name} of {site_dir} "
                             "(it points outside the environment)")
    for entry in env.unused_path:
        if "__editable__" not in entry:
            notes.append(f"left out {entry} from sys.path (not a site-packages directory)")

    scripts = _add_scripts(item, env, Location(item.key, f"bin/{env.binary_name}"))
    return PythonCollection(item, env, scripts, notes)


def _is_env_python(path: str, env: PythonEnv) -> bool:
    bin_dir = os.path.join(env.prefix, "bin")
    if os.path.dirname(path) == bin_dir and os.path.basename(path).startswith("python"):
        return True
    return os.path.realpath(path) == env.binary


def _pip_sh_preamble(source: str, env: PythonEnv) -> bool:
    """pip's form for long interpreter paths: ``#!/bin/sh`` then ``'''exec' PYTHON "$0" "$@"``."""
    try:
        with open(source, "rb") as f:
            lines = f.read(4096).split(b"\n", 3)
    except OSError:
        return False
    if len(lines) < 3 or not lines[1].startswith(b"'''exec' ") or lines[2] != b"' '''":
        return False
    words = lines[1][len(b"'''exec' "):].split(b'"')
    return len(words) > 1 and _is_env_python(os.fsdecode(words[1]), env)


def _add_scripts(item: Item, env: PythonEnv, python: Location) -> list[str]:
    """Console scripts of the environment's ``bin/`` (and ELF tools of a venv)."""
    bin_dir = os.path.join(env.prefix, "bin")
    added: list[str] = []
    try:
        names = sorted(os.listdir(bin_dir))
    except OSError:
        return added
    for name in names:
        if name.startswith(("python", "activate", "Activate")):
            continue
        path = os.path.join(bin_dir, name)
        real = os.path.realpath(path)
        if not os.path.isfile(real) or not os.access(real, os.X_OK):
            continue
        rel = f"bin/{name}"
        if is_elf(real):
            if env.is_venv:  # a system bin/ holds every program of the system
                item.add_file(rel, real, executable=True).loaded_from = real
                added.append(name)
            continue
        shebang = read_shebang(real)
        if shebang is None:
            continue
        if _is_env_python(shebang.interpreter, env):
            entry = item.add_file(rel, real, executable=True)
            entry.shebang = ShebangRewrite(python, shebang.argument)
            added.append(name)
        elif shebang.interpreter == "/bin/sh" and _pip_sh_preamble(real, env):
            entry = item.add_file(rel, real, executable=True)
            entry.shebang = ShebangRewrite(python, None, skip_lines=2)
            added.append(name)
    return added


# -- programs ---------------------------------------------------------------------------

_MAX_INTERPRETER_DEPTH = 4  # as Linux's BINPRM_MAX_RECURSION


def find_program(spec: str) -> str:
    if "/" not in spec:
        found = shutil.which(spec)
        if found is None:
            raise PackError(f"program {spec} not found on PATH; give its full path")
        return os.path.abspath(found)
    path = os.path.abspath(os.path.expanduser(spec))
    if not os.path.exists(path):
        raise PackError(f"program {path} does not exist")
    return path


def add_program(layout: Layout, spec: str, python: PythonCollection | None,
                *, _depth: int = 0) -> Location:
    """Add a host program (an ELF executable or a ``#!`` script) as its own item.

    A script's interpreter is packed too (or is the packed python) and its
    ``#!`` line is rewritten to the store.  Returns the program's location.
    """
    if _depth > _MAX_INTERPRETER_DEPTH:
        raise PackError(f"{spec}: too many levels of #! interpreters")
    path = find_program(spec)
    real = os.path.realpath(path)
    if not os.path.isfile(real) or not os.access(real, os.X_OK):
        raise PackError(f"program {path} is not an executable file")
    if python is not None and _is_env_python(path, python.env):
        return python.binary
    name = os.path.basename(path)
    key = PROGRAM + name
    rel = f"bin/{name}"
    existing = layout.items.get(key)
    if existing is not None:
        entry = existing.entries.get(rel)
        if entry is not None and entry.source == real:
            return Location(key, rel)
        raise PackError(f"two different programs are named {name}; pack only one of them")
    item = layout.item(key, name)
    if is_elf(real):
        item.add_file(rel, real, executable=True).loaded_from = real
        return Location(key, rel)
    shebang = read_shebang(real)
    if shebang is None:
        raise PackError(f"program {path} is neither an ELF executable nor a #! script")
    interpreter, argument = shebang.interpreter, shebang.argument
    if os.path.basename(interpreter) == "env" and argument and " " not in argument \
            and not argument.startswith("-"):
        interpreter, argument = argument, None  # "#!/usr/bin/env NAME": NAME from PATH
    elif not interpreter.startswith("/"):
        raise PackError(f"{path} has a relative #! interpreter {interpreter}; cannot pack it")
    target = add_program(layout, interpreter, python, _depth=_depth + 1)
    entry = item.add_file(rel, real, executable=True)
    entry.shebang = ShebangRewrite(target, argument)
    item.refs.add(target.item)
    return Location(key, rel)
