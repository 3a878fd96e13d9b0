"""ELF facts and shebang lines.

:func:`read_elf` reads what a launcher or a packer needs to know about an
executable or a shared library (machine, interpreter, needed libraries,
search paths, static or Go) with pyelftools.  It never lets a parser
exception through: anything that is not a well-formed ELF file, including a
truncated one, gives an :class:`~nbsandbox.errors.ElfError` of one line.

:func:`parse_shebang` applies the Linux kernel's rules for ``#!`` lines
(``fs/binfmt_script.c``), so that what it returns is what ``execve`` would run.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from elftools.common.exceptions import ELFError, ELFParseError
from elftools.construct.core import ConstructError
from elftools.elf.elffile import ELFFile

from nbsandbox.errors import ElfError

ELF_MAGIC = b"\x7fELF"

#: Linux's ``BINPRM_BUF_SIZE``: how much of a script ``execve`` looks at.
BINPRM_BUF_SIZE = 256

#: Sections that only the Go toolchain writes.
GO_SECTIONS = (".go.buildinfo", ".note.go.buildid", ".gopclntab")

_KINDS = {
    "ET_EXEC": "executable",
    "ET_DYN": "shared",
    "ET_REL": "relocatable",
    "ET_CORE": "core",
}

_MACHINES = {
    "EM_X86_64": "x86_64",
    "EM_386": "i386",
    "EM_AARCH64": "aarch64",
    "EM_ARM": "arm",
    "EM_PPC": "ppc",
    "EM_MIPS": "mips",
    "EM_SPARCV9": "sparc64",
    "EM_LOONGARCH": "loongarch",
}

# Errors a malformed file can make pyelftools (or our own reads) raise.
_PARSE_ERRORS = (
    ELFError,
    ELFParseError,
    ConstructError,
    struct.error,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    UnicodeError,
    OverflowError,
    EOFError,
    AssertionError,  # pyelftools asserts, e.g. on a DT_STRTAB that is not a string table
)


@dataclass(frozen=True)
class ElfInfo:
    """What one ELF file says about itself."""

    path: str
    machine: str
    """Friendly machine name: ``x86_64``, ``aarch64``, ``i386``, ``ppc64le``..."""
    elf_class: int
    """32 or 64."""
    kind: str
    """``executable``, ``shared``, ``relocatable``, ``core`` or ``other`` (from ``e_type``).

    Position-independent executables are ``shared``, as the ELF header says."""
    interpreter: str | None
    """``PT_INTERP``: the dynamic loader the kernel starts for this file."""
    needed: tuple[str, ...]
    runpath: tuple[str, ...]
    rpath: tuple[str, ...]
    soname: str | None
    is_static: bool
    """No ``PT_INTERP`` and no ``DT_NEEDED``: static and static-pie executables."""
    is_go: bool
    setuid: bool
    setgid: bool

    @property
    def is_dynamic(self) -> bool:
        return not self.is_static


@dataclass(frozen=True)
class Shebang:
    """A ``#!`` line as Linux reads it: one interpreter, at most one argument."""

    interpreter: str
    argument: str | None = None


def is_elf(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts with the ELF magic; ``False`` for anything unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except (OSError, ValueError):
        return False


#: Facts read within :func:`reusing_reads`, by path and the file's identity.
_reads: contextvars.ContextVar[dict[tuple, ElfInfo] | None] = contextvars.ContextVar(
    "nbsandbox_elf_reads", default=None)


@contextlib.contextmanager
def reusing_reads() -> Iterator[None]:
    """Within the block, :func:`read_elf` parses each file once: a second read of
    the same path, same inode, mode, size and times returns the first one's facts.

    For one launch's inspection (the program, the engine's command, the
    libraries' check look at the same files); nothing is kept after the block.
    """
    token = _reads.set({} if _reads.get() is None else _reads.get())
    try:
        yield
    finally:
        _reads.reset(token)


def read_elf(path: str | os.PathLike[str]) -> ElfInfo:
    """Read the ELF facts of ``path``.

    Raises :class:`ElfError` (one line) for a file that cannot be read, is
    not ELF, is truncated or is corrupt.  See :func:`reusing_reads`.
    """
    spath = os.fspath(path)
    try:
        f = open(spath, "rb")  # noqa: SIM115 -- closed below
    except OSError as exc:
        raise ElfError(f"cannot read {spath}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ElfError(f"{spath} is not a regular file, so not an ELF file")
        reads = _reads.get()
        key = (spath, st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns,
               st.st_ctime_ns)
        if reads is not None and key in reads:
            return reads[key]
        magic = f.read(4)
        if magic != ELF_MAGIC:
            raise ElfError(f"{spath} is not an ELF file (it starts with {magic!r})")
        ident = magic + f.read(12)
        if len(ident) < 16:
            raise ElfError(f"{spath} is a truncated ELF file ({st.st_size} bytes)")
        ehsize = 64 if ident[4] == 2 else 52
        if st.st_size < ehsize:
            raise ElfError(
                f"{spath} is a truncated ELF file: {st.st_size} bytes, shorter than its header"
            )
        f.seek(0)
        try:
            info = _parse(spath, f, st)
            if reads is not None:
                reads[key] = info
            return info
        except ElfError:
            raise
        except _PARSE_ERRORS as exc:
            raise ElfError(f"{spath} is a corrupt ELF file ({_describe(exc)})") from None
        except OSError as exc:
            raise ElfError(f"cannot read {spath}: {exc.strerror or exc}") from None
    finally:
        f.close()


def require_machine(info: ElfInfo, machine: str, elf_class: int, *, what: str = "") -> None:
    """Raise :class:`ElfError` unless ``info`` is for ``machine``/``elf_class``."""
    if info.machine != machine or info.elf_class != elf_class:
        name = what or info.path
        raise ElfError(
            f"{name} is a {info.elf_class}-bit {info.machine} ELF file, but this needs "
            f"{elf_class}-bit {machine}; use a build of it for {machine}"
        )


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _machine_name(header, elf_class: int, little_endian: bool) -> str:
    raw = header["e_machine"]
    if not isinstance(raw, str):
        return f"machine-{raw}"
    if raw == "EM_PPC64":
        return "ppc64le" if little_endian else "ppc64"
    if raw == "EM_RISCV":
        return f"riscv{elf_class}"
    if raw == "EM_S390":
        return "s390x" if elf_class == 64 else "s390"
    return _MACHINES.get(raw, raw.removeprefix("EM_").lower())


def _check_range(path: str, what: str, offset: int, size: int, file_size: int) -> None:
    if offset < 0 or size < 0 or offset + size > file_size:
        raise ElfError(
            f"{path} is a truncated ELF file: its {what} (bytes {offset}..{offset + size}) "
            f"lies beyond its end ({file_size} bytes)"
        )


def _parse(path: str, f, st: os.stat_result) -> ElfInfo:
    size = st.st_size
    elf = ELFFile(f)
    header = elf.header
    elf_class = elf.elfclass
    if header["e_phnum"]:
        _check_range(path, "program header table", header["e_phoff"],
                     header["e_phnum"] * header["e_phentsize"], size)
    if header["e_shoff"] and header["e_shnum"]:
        _check_range(path, "section header table", header["e_shoff"],
                     header["e_shnum"] * header["e_shentsize"], size)

    interpreter: str | None = None
    needed: list[str] = []
    runpath: list[str] = []
    rpath: list[str] = []
    soname: str | None = None
    has_go_note = False
    for segment in elf.iter_segments():
        ptype = segment["p_type"]
        if ptype in ("PT_INTERP", "PT_DYNAMIC", "PT_NOTE"):
            _check_range(path, ptype, segment["p_offset"], segment["p_filesz"], size)
        if ptype == "PT_INTERP":
            interpreter = segment.get_interp_name().rstrip("\0") or None
        elif ptype == "PT_DYNAMIC":
            for tag in segment.iter_tags():
                d_tag = tag.entry.d_tag
                if d_tag == "DT_NEEDED":
                    needed.append(tag.needed)
                elif d_tag == "DT_RUNPATH":
                    runpath.extend(_split_path(tag.runpath))
                elif d_tag == "DT_RPATH":
                    rpath.extend(_split_path(tag.rpath))
                elif d_tag == "DT_SONAME":
                    soname = tag.soname
        elif ptype == "PT_NOTE" and not has_go_note:
            try:
                has_go_note = any(note["n_name"] == "Go" for note in segment.iter_notes())
            except _PARSE_ERRORS:
                has_go_note = False

    is_go = has_go_note
    if not is_go and header["e_shnum"]:
        is_go = any(elf.get_section_by_name(name) is not None for name in GO_SECTIONS)

    return ElfInfo(
        path=path,
        machine=_machine_name(header, elf_class, elf.little_endian),
        elf_class=elf_class,
        kind=_KINDS.get(header["e_type"], "other"),
        interpreter=interpreter,
        needed=tuple(needed),
        runpath=tuple(runpath),
        rpath=tuple(rpath),
        soname=soname,
        is_static=interpreter is None and not needed,
        is_go=is_go,
        setuid=bool(st.st_mode & stat.S_ISUID),
        setgid=bool(st.st_mode & stat.S_ISGID),
    )


def _split_path(value: str) -> list[str]:
    return [entry for entry in value.split(":") if entry]


# -- shebangs -----------------------------------------------------------------

_SPACE_TAB = b" \t"


def parse_shebang(data: bytes) -> Shebang | None:
    """Parse a ``#!`` line the way Linux's ``execve`` does.

    Only the first :data:`BINPRM_BUF_SIZE` bytes count.  After ``#!`` and
    optional spaces or tabs comes the interpreter, up to the first space or
    tab; everything after it on the line, with surrounding spaces and tabs
    trimmed, is *one* optional argument (inner spaces are kept).  When the
    first line does not end within those bytes, the line is cut there, unless
    the interpreter's name itself runs to the end (then ``execve`` fails and
    this returns ``None``).  ``None`` also when there is no ``#!`` or no
    interpreter.
    """
    buf = bytes(data[:BINPRM_BUF_SIZE])
    if not buf.startswith(b"#!"):
        return None
    # The kernel's buffer is zero-filled past the end of a short file.
    buf = buf.ljust(BINPRM_BUF_SIZE, b"\0")
    last = BINPRM_BUF_SIZE - 1
    end = buf.find(b"\n")
    if end < 0:
        start = _next_non_space_tab(buf, 2, last)
        if start is None:
            return None  # only spaces and tabs
        if _next_terminator(buf, start, last) is None:
            return None  # the interpreter's path does not fit: truncated
        end = last
    while end > 2 and buf[end - 1] in _SPACE_TAB:
        end -= 1
    line = buf[:end]
    name_start = _next_non_space_tab(line, 2, len(line) - 1)
    if name_start is None or line[name_start] == 0:
        return None
    sep = _next_terminator(line, name_start, len(line) - 1)
    if sep is None:
        interpreter, argument = line[name_start:], None
    else:
        interpreter = line[name_start:sep]
        argument = None
        if line[sep] != 0:
            arg_start = _next_non_space_tab(line, sep, len(line) - 1)
            if arg_start is not None:
                argument = line[arg_start:].split(b"\0", 1)[0] or None
    if not interpreter:
        return None
    return Shebang(os.fsdecode(interpreter), os.fsdecode(argument) if argument else None)


def _next_non_space_tab(buf: bytes, first: int, last: int) -> int | None:
    for i in range(first, last + 1):
        if buf[i] not in _SPACE_TAB:
            return i
    return None


def _next_terminator(buf: bytes, first: int, last: int) -> int | None:
    for i in range(first, last + 1):
        if buf[i] in _SPACE_TAB or buf[i] == 0:
            return i
    return None


def read_shebang(path: str | os.PathLike[str]) -> Shebang | None:
    """The shebang of the file at ``path``; ``None`` if it has none or cannot be read."""
    try:
        with open(path, "rb") as f:
            return parse_shebang(f.read(BINPRM_BUF_SIZE))
    except OSError:
        return None
