"""``build_pack``: a Python environment and host programs -> a relocatable pack.

The phases, each reported by one progress line:

1. *collect*: the interpreter, stdlib, site-packages and console scripts
   (:mod:`~nbsandbox.pack.collect`), the ``--program`` programs and the
   interpreters of every ``#!`` script that is packed;
2. *closure*: every ELF file's shared libraries, found as the loader would
   (:mod:`~nbsandbox.pack.closure`), placed in the glibc, libs or python item
   (:mod:`~nbsandbox.pack.layout`, :mod:`~nbsandbox.pack.glibc`);
3. *stage*: files copied into a temporary directory beside the output and
   hashed; items named from their inputs;
4. *relocate*: ELF interpreters, RUNPATHs and ``#!`` lines pointed at the
   store (:mod:`~nbsandbox.pack.relocate`);
5. *compile*: ``.pyc`` files with store paths (:mod:`~nbsandbox.pack.bytecode`);
6. *write*: profile, metadata, the wrappers of ``bin/``
   (:mod:`~nbsandbox.pack.wrappers`), then the directory is renamed to the output,
   or a deterministic ``.tar.gz`` (:mod:`~nbsandbox.pack.archive`) is written
   beside the output and renamed to it.

Nothing is left half-written: on any error or interrupt the temporary
directory is removed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nbsandbox import identity
from nbsandbox.elf import Shebang, is_elf, read_elf, read_shebang, require_machine
from nbsandbox.errors import PackError, StoreError, UsageError
from nbsandbox.pack import archive, bytecode, relocate, wrappers
from nbsandbox.pack.closure import Resolver
from nbsandbox.pack.collect import (
    PROGRAM,
    PYTHON,
    PythonCollection,
    add_program,
    add_python,
    inspect_python,
)
from nbsandbox.pack.glibc import GLIBC, add_glibc, is_glibc_library
from nbsandbox.pack.layout import Entry, Item, Layout, Location, ShebangRewrite, remove_tree
from nbsandbox.store import METADATA, PackMetadata, StoreRoot, normalize_prefix

DEFAULT_PREFIX = "/gnu/store"
LIBS = "libs"
PROFILE = "profile"
TARBALL_SUFFIX = ".tar.gz"

#: Interpreters of ``#!`` scripts found in the packed trees that are packed on
#: their own: shells need nothing but their binary and libraries.
SHELLS = frozenset({"sh", "bash", "dash", "ksh", "mksh", "zsh"})


@dataclass
class PackOptions:
    """What ``nbsandbox pack`` builds.

    ``python`` is an interpreter path or a venv directory (``None``: the
    environment of the running interpreter); ``programs`` are extra host
    programs; ``output`` is a directory or a file ending in ``.tar.gz``;
    ``progress`` receives one line per phase.  ``with_python=False`` packs
    only the programs.
    """

    python: str | None = None
    programs: Sequence[str] = ()
    prefix: str = DEFAULT_PREFIX
    output: Path | None = None
    progress: Callable[[str], None] | None = None
    with_python: bool = True
    wrappers: bool = True
    """Make ``bin/`` programs runnable without nbsandbox (:mod:`~nbsandbox.pack.wrappers`)."""


@dataclass(frozen=True)
class PackResult:
    path: Path
    """The pack: the ``.tar.gz`` file or the store root directory."""
    items: tuple[str, ...]
    size_bytes: int
    """Size of the tarball, or of the files of the directory."""
    seconds: float
    unpacked_bytes: int = 0
    notes: tuple[str, ...] = ()
    """Things the user should know (left-out editable installs, missing libraries)."""
    digest: str = ""
    """The pack's identity (:mod:`nbsandbox.identity`), also in its ``pack.json``."""


def _check_output(output: Path) -> bool:
    """Validate the output path; True when it is a tarball."""
    is_tar = output.name.endswith(TARBALL_SUFFIX)
    if not is_tar and output.name.endswith((".tar", ".tgz", ".xz", ".bz2", ".zip", ".gz")):
        raise UsageError(f"output {output} must be a directory or end in {TARBALL_SUFFIX}")
    if not output.parent.is_dir():
        raise UsageError(f"the directory of the output, {output.parent}, does not exist")
    if is_tar:
        if output.is_dir():
            raise UsageError(f"output {output} is a directory; remove it or choose another name")
    elif output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(f"output {output} exists and is not an empty directory; "
                         "remove it or choose another name")
    return is_tar


class _Builder:
    def __init__(self, options: PackOptions, output: Path, prefix: str) -> None:
        self.options = options
        self.output = output
        self.layout = Layout(prefix)
        self.say = options.progress or (lambda _line: None)
        self.notes: list[str] = []
        self.python: PythonCollection | None = None
        self.programs: list[tuple[str, Location]] = []
        self.loader: Location | None = None
        self.tools = ""
        self.meta: PackMetadata | None = None

    # -- collect -----------------------------------------------------------------

    def collect(self) -> None:
        if self.options.with_python:
            env = inspect_python(self.options.python)
            self.python = add_python(self.layout, env)
            self.notes += self.python.notes
            sites = len(env.site_dirs)
            self.say(f"collect: python {env.version} from {env.prefix}: "
                     f"{len(self.python.item.entries)} files, {sites} site-packages "
                     f"director{'y' if sites == 1 else 'ies'}, {len(self.python.scripts)} scripts")
        for spec in self.options.programs:
            loc = add_program(self.layout, spec, self.python)
            self.programs.append((os.path.basename(loc.rel), loc))
        if self.python is None and not self.programs:
            raise UsageError("nothing to pack: give --program PATH or pack a Python environment")
        if self.programs:
            self.say(f"collect: {len(self.programs)} programs "
                     f"({', '.join(name for name, _ in self.programs)})")
        self._script_interpreters()
        self._check_machines()

    def _check_machines(self) -> None:
        """Programs must run on the machine of the packed python (or of this host)."""
        reference = read_elf(self.python.env.binary if self.python is not None
                             else os.path.realpath(sys.executable))
        for item in self.layout.items.values():
            if not item.key.startswith(PROGRAM):
                continue
            for entry in item.entries.values():
                if entry.source is not None and entry.shebang is None and is_elf(entry.source):
                    require_machine(read_elf(entry.source), reference.machine,
                                    reference.elf_class, what=f"program {entry.source}")

    def _script_interpreters(self) -> None:
        """Point executable ``#!`` files of the trees at packed interpreters."""
        for item in list(self.layout.items.values()):
            for entry in list(item.entries.values()):
                if entry.source is None or not entry.executable or entry.shebang is not None:
                    continue
                shebang = read_shebang(entry.source)
                if shebang is None:
                    continue
                rewrite = self._interpreter_for(shebang, f"{item.key}/{entry.rel}")
                if rewrite is None:
                    entry.executable = False
                else:
                    entry.shebang = rewrite
                    item.refs.add(rewrite.interpreter.item)

    def _interpreter_for(self, shebang: Shebang, what: str) -> ShebangRewrite | None:
        interp, argument = shebang.interpreter, shebang.argument
        base = os.path.basename(interp)
        if base == "env" and argument:
            words = argument.split(None, 1)
            if words[0].startswith("python") and self.python is not None:
                return ShebangRewrite(self.python.binary, words[1] if len(words) > 1 else None)
        elif base.startswith("python") and self.python is not None:
            return ShebangRewrite(self.python.binary, argument)
        if base == "env" and argument and " " not in argument:
            name, argument = argument, None
        elif interp.startswith("/"):
            name = interp
        else:
            self.notes.append(f"{what}: made non-executable, its #! line {interp} is relative")
            return None
        # A shell is complete as one binary; other interpreters (perl, node...) need
        # files of their own, so they are packed only when asked for with --program.
        wanted = os.path.basename(name) in SHELLS or any(
            os.path.basename(name) == program for program, _loc in self.programs)
        if not wanted:
            self.notes.append(f"{what}: made non-executable, its interpreter {name} is not "
                              f"packed (add --program {name} to pack it)")
            return None
        try:
            return ShebangRewrite(add_program(self.layout, name, self.python), argument)
        except PackError as exc:
            self.notes.append(f"{what}: made non-executable, its interpreter cannot be packed "
                              f"({exc})")
            return None

    # -- closure -------------------------------------------------------------------

    def closure(self) -> None:
        resolver: Resolver | None = None
        queue: deque[tuple[Item, Entry]] = deque()
        first = self._first_dynamic()
        if first is None:
            self.say("closure: only static programs, no libraries needed")
            return
        info, multiarch = first
        assert info.interpreter is not None
        resolver = Resolver(info.machine, info.elf_class, multiarch)
        glibc, self.loader = add_glibc(self.layout, info.interpreter)
        loader_name = os.path.basename(self.loader.rel)
        dir_map: dict[str, tuple[str, str]] = {}
        for item in self.layout.items.values():
            for entry in item.entries.values():
                if entry.source is not None:
                    queue.append((item, entry))
                    self._map_dir(dir_map, item, entry)
        host_libs = 0
        elves = 0
        while queue:
            item, entry = queue.popleft()
            assert entry.source is not None
            info = resolver.info(entry.source)
            if info is None or info.kind not in ("executable", "shared"):
                continue
            if (info.machine, info.elf_class) != (resolver.machine, resolver.elf_class):
                self.notes.append(f"{item.key}/{entry.rel}: left as is, it is a "
                                  f"{info.elf_class}-bit {info.machine} file")
                continue
            entry.elf = info
            elves += 1
            if info.interpreter is not None:
                if os.path.basename(info.interpreter) != loader_name:
                    raise PackError(f"{entry.source} uses the loader {info.interpreter}, not "
                                    f"{loader_name} like the rest; it cannot share this pack")
                item.refs.add(GLIBC)
            if entry.rel == self.loader.rel and item.key == GLIBC:
                continue
            loaded_from = entry.loaded_from or entry.source
            deps = resolver.dependencies(info, loaded_from, entry.inherited_rpath)
            inherited = entry.inherited_rpath + resolver.own_rpath(info, loaded_from)
            for found in deps:
                loc, new = self._place(glibc, found.needed, found.path, dir_map, loader_name)
                if loc is None:
                    self.notes.append(f"{item.key}/{entry.rel}: needs {found.needed}, which "
                                      "is not on this host either; left unresolved")
                entry.needs.append((found.needed, loc))
                if loc is not None:
                    item.refs.add(loc.item)
                if new is not None:
                    host_libs += 1
                    new.loaded_from = found.path
                    new.inherited_rpath = inherited
                    queue.append((self.layout.items[loc.item], new))  # type: ignore[union-attr]
        self.say(f"closure: {elves} ELF files, {host_libs} host libraries, "
                 f"glibc {glibc.version}")

    def _first_dynamic(self):
        """ELF facts of the first dynamic program (the python binary first) and multiarch."""
        multiarch = self.python.env.multiarch if self.python is not None else ""
        candidates = []
        if self.python is not None:
            candidates.append(self.python.env.binary)
        for item in self.layout.items.values():
            if item.key.startswith(PROGRAM):
                candidates += [e.source for e in item.entries.values() if e.source]
        for source in candidates:
            if not is_elf(source):
                continue
            info = read_elf(source)
            if info.interpreter is not None:
                return info, multiarch
        return None

    @staticmethod
    def _map_dir(dir_map: dict[str, tuple[str, str]], item: Item, entry: Entry) -> None:
        if entry.loaded_from and os.path.basename(entry.loaded_from) == os.path.basename(entry.rel):
            host_dir = os.path.realpath(os.path.dirname(entry.loaded_from))
            dir_map.setdefault(host_dir, (item.key, os.path.dirname(entry.rel)))

    def _place(self, glibc: Item, needed: str, path: str | None,
               dir_map: dict[str, tuple[str, str]], loader_name: str
               ) -> tuple[Location | None, Entry | None]:
        """Where a needed library is in the pack; a new entry when it had to be added."""
        rel = f"lib/{needed}"
        if is_glibc_library(needed, loader_name) and rel in glibc.entries:
            return Location(GLIBC, rel), None
        if path is None or "/" in needed:
            return None, None
        real = os.path.realpath(path)
        key = PYTHON if needed.startswith("libpython") and self.python is not None else LIBS
        item = self.layout.item(key, "libs") if key == LIBS else self.layout.items[PYTHON]
        existing = item.entries.get(rel)
        if existing is not None and existing.source == real:
            return Location(key, rel), None
        mapped = dir_map.get(os.path.realpath(os.path.dirname(path)))
        if mapped is not None:
            tree_item, tree_dir = mapped
            tree_rel = f"{tree_dir}/{needed}" if tree_dir else needed
            if tree_rel in self.layout.items[tree_item].entries:
                return Location(tree_item, tree_rel), None
        if existing is not None:
            raise PackError(f"two different libraries are named {needed} ({existing.source} and "
                            f"{real}); cannot pack both")
        entry = item.add_file(rel, real)
        return Location(key, rel), entry

    # -- stage, name, relocate ---------------------------------------------------------

    def stage(self, store: Path) -> int:
        total = 0
        files = 0
        for key in sorted(self.layout.items):
            total += self.layout.stage(key, store / _temp_name(key))
            files += len(self.layout.items[key].entries)
        self.say(f"stage: {len(self.layout.items)} items, {files} files, {total / 1e6:.1f} MB")
        return total

    def name(self, store: Path, tools: str) -> None:
        self.tools = tools
        self.layout.name_items(tools)
        for key, item in self.layout.items.items():
            assert item.store_name is not None
            os.rename(store / _temp_name(key), store / item.store_name)

    def relocate(self, store: Path, patchelf: str) -> None:
        jobs: list[tuple[Path, list[str]]] = []
        scripts = 0
        for item in self.layout.items.values():
            assert item.store_name is not None
            for entry in item.entries.values():
                path = store / item.store_name / entry.rel
                if entry.elf is not None and self.loader is not None:
                    if item.key == GLIBC and entry.rel == self.loader.rel:
                        continue
                    args = relocate.patch_args(self.layout, item, entry, self.loader)
                    if args:
                        jobs.append((path, args))
                if entry.shebang is not None:
                    interpreter = self.layout.store_path(entry.shebang.interpreter)
                    relocate.rewrite_shebang(path, interpreter, entry.shebang.argument,
                                             entry.shebang.skip_lines)
                    scripts += 1
        relocate.patch_elves(jobs, patchelf)
        self.say(f"relocate: {len(jobs)} ELF files patched, {scripts} #! lines rewritten")

    def compile(self, store: Path) -> None:
        if self.python is None:
            return
        item = self.python.item
        assert item.store_name is not None
        binary = self.python.env.binary
        tag = bytecode.cache_tag(binary)
        sources, failed = bytecode.compile_tree(binary, tag, store / item.store_name,
                                                self.layout.store_dir(PYTHON))
        extra = f", {failed} could not be compiled (left as source)" if failed else ""
        self.say(f"compile: {sources - failed} modules{extra}")

    # -- profile and metadata --------------------------------------------------------------

    def profile(self, store: Path) -> Item:
        profile = self.layout.item(PROFILE, "profile")
        links: dict[str, Location] = {}
        if self.python is not None:
            for rel in sorted(self.python.item.entries):
                if rel.startswith("bin/") and "/" not in rel[4:]:
                    links[rel[4:]] = Location(PYTHON, rel)
        for name, loc in self.programs:
            links[name] = loc
        if GLIBC in self.layout.items and self.layout.items[GLIBC].has_dir("lib/gconv"):
            # The packed glibc looks for gconv modules where the build host keeps
            # them (a path compiled into libc.so.6); GCONV_PATH points it at its own.
            gconv = self.layout.store_path(Location(GLIBC, "lib/gconv"))
            profile.add_data("etc/profile", (
                "# Environment for programs of this pack (written by nbsandbox pack).\n"
                f'export GCONV_PATH="{gconv}"\n').encode())
            profile.refs.add(GLIBC)
        for name in sorted(links):
            # Absolute targets, as in Guix profiles: a relative one would be
            # misread by programs that resolve their own path lexically
            # (Python's getpath does) when reached through the root's bin link.
            loc = links[name]
            profile.add_symlink(f"bin/{name}", self.layout.store_path(loc), absolute=True)
            profile.refs.add(loc.item)
        self.layout.stage(PROFILE, store / _temp_name(PROFILE))
        self.layout.name_items(self.tools)
        assert profile.store_name is not None
        os.rename(store / _temp_name(PROFILE), store / profile.store_name)
        return profile

    def metadata(self, root: Path, profile: Item) -> None:
        prefix = self.layout.prefix
        meta = PackMetadata(
            prefix=prefix,
            profile=self.layout.store_dir(PROFILE),
            python=self.layout.store_path(self.python.binary) if self.python else None,
            programs=tuple(self.layout.store_path(loc) for _name, loc in self.programs),
        )
        (root / ".nbsandbox").mkdir(mode=0o755)
        (root / METADATA).write_text(meta.to_json(), encoding="utf-8")
        self.meta = meta
        os.symlink(f"{prefix.lstrip('/')}/{profile.store_name}/bin", root / "bin")


def _temp_name(key: str) -> str:
    return ".staging-" + key.replace(":", "-").replace("/", "-")


def build_pack(options: PackOptions) -> PackResult:
    """Build a relocatable pack as ``options`` say; see the module's docstring."""
    start = time.monotonic()
    if options.output is None:
        raise UsageError("no output given: pass -o DIR or -o FILE.tar.gz")
    try:
        prefix = normalize_prefix(options.prefix)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    if any(c.isspace() for c in prefix):
        raise UsageError(f"store prefix {prefix!r} must not contain blanks (#! lines break)")
    output = Path(os.path.abspath(os.path.expanduser(os.fspath(options.output))))
    is_tar = _check_output(output)
    builder = _Builder(options, output, prefix)
    patchelf = relocate.find_patchelf()
    tools = relocate.patchelf_version(patchelf)

    builder.collect()
    builder.closure()
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.build-", dir=output.parent))
    except OSError as exc:
        raise PackError(f"cannot create a directory in {output.parent}: {exc.strerror}; "
                        "choose an output where you can write") from None
    try:
        size, unpacked, digest = _write(builder, staging, output, is_tar, tools, patchelf)
    except OSError as exc:
        where = exc.filename or output.parent
        raise PackError(f"writing the pack failed at {where}: {exc.strerror or exc}; "
                        f"check free space and permissions in {output.parent}") from None
    finally:
        remove_tree(staging)
    items = tuple(sorted(i.store_name or "" for i in builder.layout.items.values()))
    return PackResult(
        path=output,
        items=items,
        size_bytes=size,
        seconds=time.monotonic() - start,
        unpacked_bytes=unpacked,
        notes=tuple(builder.notes),
        digest=digest,
    )


def _write(builder: _Builder, staging: Path, output: Path, is_tar: bool, tools: str,
           patchelf: str) -> tuple[int, int, str]:
    """Stage, name, relocate, compile, then move the result to ``output``; (size, unpacked,
    digest)."""
    prefix = builder.layout.prefix
    root = staging / "root"
    store = root / prefix.lstrip("/")
    store.mkdir(parents=True)
    builder.stage(store)
    builder.name(store, tools)
    builder.relocate(store, patchelf)
    builder.compile(store)
    profile = builder.profile(store)
    builder.metadata(root, profile)
    if builder.options.wrappers:
        names = wrappers.install_wrappers(root, prefix)
        builder.say(f"wrappers: {len(names)} programs in bin/ run without nbsandbox, and "
                    f"bin/{wrappers.KERNEL_INSTALL}")
    files, unpacked = archive.normalize_tree(root)
    # The identity covers the final tree, so it is computed last and kept in pack.json.
    assert builder.meta is not None
    manifest, _ = identity.compute(StoreRoot(root, prefix, builder.meta))
    meta = dataclasses.replace(builder.meta, manifest=manifest)
    unpacked -= (root / METADATA).stat().st_size
    (root / METADATA).write_text(meta.to_json(), encoding="utf-8")
    unpacked += (root / METADATA).stat().st_size
    if is_tar:
        tmp_tar = staging / "pack.tar.gz"
        size = archive.write_tarball(root, tmp_tar)
        os.chmod(tmp_tar, 0o644)
        os.replace(tmp_tar, output)
        builder.say(f"write: {output} ({size / 1e6:.1f} MB, {files} files)")
    else:
        os.chmod(root, 0o755)
        os.rename(root, output)
        size = unpacked
        builder.say(f"write: {output} ({files} files, {size / 1e6:.1f} MB)")
    return size, unpacked, manifest.digest
