"""ELF facts and shebang parsing (nbsandbox.elf)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from nbsandbox.elf import (
    BINPRM_BUF_SIZE,
    ElfInfo,
    Shebang,
    is_elf,
    parse_shebang,
    read_elf,
    read_shebang,
    require_machine,
    reusing_reads,
)
from nbsandbox.errors import ElfError

PYTHON = os.path.realpath(sys.executable)
HOST = read_elf(PYTHON)
GCC = shutil.which("gcc") or shutil.which("cc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="no C compiler")


def elf_header(*, machine: int, elf_class: int, e_type: int = 2, little: bool = True) -> bytes:
    """A minimal, valid ELF header without program or section headers."""
    order = "<" if little else ">"
    ident = b"\x7fELF" + bytes([2 if elf_class == 64 else 1, 1 if little else 2, 1]) + b"\0" * 9
    if elf_class == 64:
        rest = struct.pack(order + "HHIQQQIHHHHHH", e_type, machine, 1, 0, 0, 0, 0, 64, 0, 0,
                           0, 0, 0)
    else:
        rest = struct.pack(order + "HHIIIIIHHHHHH", e_type, machine, 1, 0, 0, 0, 0, 52, 0, 0,
                           0, 0, 0)
    return ident + rest


def compile_c(tmp: Path, source: str, *flags: str, name: str = "prog") -> Path:
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / name
    subprocess.run([GCC, "-o", str(out), str(src), *flags], check=True, capture_output=True)
    return out


def assert_one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text
    assert "Traceback" not in text


# -- read_elf on real files ------------------------------------------------------


def test_host_python_is_a_dynamic_executable():
    assert isinstance(HOST, ElfInfo)
    assert HOST.elf_class in (32, 64)
    assert HOST.interpreter and os.path.isabs(HOST.interpreter)
    assert os.path.exists(HOST.interpreter)
    assert "libc.so.6" in HOST.needed
    assert not HOST.is_static and not HOST.is_go
    assert HOST.soname is None
    assert HOST.kind in ("executable", "shared")  # a PIE is ET_DYN


def test_machine_name_is_friendly():
    import platform

    expected = {"amd64": "x86_64", "arm64": "aarch64", "i686": "i386"}.get(
        platform.machine(), platform.machine())
    assert HOST.machine == expected


def test_loader_is_static_and_libc_has_soname():
    loader = read_elf(os.path.realpath(HOST.interpreter))
    assert loader.interpreter is None and loader.needed == ()
    assert loader.is_static
    assert loader.kind == "shared"
    libc_dir = os.path.dirname(os.path.realpath(HOST.interpreter))
    libc = read_elf(os.path.join(libc_dir, "libc.so.6"))
    assert libc.soname == "libc.so.6"
    assert libc.kind == "shared"


@needs_gcc
def test_runpath_and_rpath_are_split_on_colons(tmp_path):
    new = compile_c(tmp_path, "int main(void){return 0;}\n", "-Wl,-rpath,/opt/a:$ORIGIN/../lib",
                    "-Wl,--enable-new-dtags", name="new")
    old = compile_c(tmp_path, "int main(void){return 0;}\n", "-Wl,-rpath,/opt/b:/opt/c",
                    "-Wl,--disable-new-dtags", name="old")
    assert read_elf(new).runpath == ("/opt/a", "$ORIGIN/../lib")
    assert read_elf(new).rpath == ()
    assert read_elf(old).rpath == ("/opt/b", "/opt/c")
    assert read_elf(old).runpath == ()


@needs_gcc
@pytest.mark.parametrize("flags", [("-static",), ("-static-pie",)])
def test_static_executables(tmp_path, flags):
    try:
        exe = compile_c(tmp_path, "int main(void){return 0;}\n", *flags)
    except subprocess.CalledProcessError:
        pytest.skip(f"cannot link with {flags[0]} here")
    info = read_elf(exe)
    assert info.is_static
    assert info.interpreter is None and info.needed == ()
    assert info.kind == ("executable" if flags == ("-static",) else "shared")


@needs_gcc
@pytest.mark.parametrize("section", [".go.buildinfo", ".note.go.buildid", ".gopclntab"])
def test_go_binaries_are_recognised_by_their_sections(tmp_path, section):
    source = (f'__attribute__((section("{section}"), used)) static const char go[16] = "x";\n'
              "int main(void){return 0;}\n")
    go = compile_c(tmp_path, source, name="go")
    plain = compile_c(tmp_path, "int main(void){return 0;}\n", name="plain")
    assert read_elf(go).is_go
    assert not read_elf(plain).is_go


def test_setuid_and_setgid_come_from_the_mode(tmp_path):
    copy = tmp_path / "suid"
    shutil.copyfile(PYTHON, copy)
    copy.chmod(0o4755)
    assert read_elf(copy).setuid and not read_elf(copy).setgid
    copy.chmod(0o2755)
    assert read_elf(copy).setgid and not read_elf(copy).setuid
    copy.chmod(0o755)
    assert not read_elf(copy).setuid and not read_elf(copy).setgid


def test_reads_are_reused_within_a_block_only(tmp_path):
    copy = tmp_path / "prog"
    shutil.copyfile(PYTHON, copy)
    assert read_elf(copy) is not read_elf(copy)
    with reusing_reads():
        first = read_elf(copy)
        assert read_elf(copy) is first
        assert read_elf(str(copy)) is first
        copy.chmod(0o4755)  # the mode is part of the facts
        assert read_elf(copy).setuid
        with copy.open("ab") as f:  # so is the content
            f.write(b"\0")
        assert read_elf(copy) is not first
    assert read_elf(copy) is not read_elf(copy)


@pytest.mark.parametrize(("machine", "elf_class", "name"), [
    (183, 64, "aarch64"),
    (3, 32, "i386"),
    (62, 64, "x86_64"),
    (40, 32, "arm"),
])
def test_hand_made_headers_of_other_machines(tmp_path, machine, elf_class, name):
    path = tmp_path / "foreign"
    path.write_bytes(elf_header(machine=machine, elf_class=elf_class))
    info = read_elf(path)
    assert (info.machine, info.elf_class) == (name, elf_class)
    assert info.kind == "executable" and info.is_static
    assert info.needed == () and info.interpreter is None


def test_wrong_architecture_is_refused_in_one_line(tmp_path):
    path = tmp_path / "arm64-tool"
    path.write_bytes(elf_header(machine=183, elf_class=64))
    info = read_elf(path)
    with pytest.raises(ElfError) as err:
        require_machine(info, "x86_64", 64)
    assert_one_line(err.value)
    assert "aarch64" in str(err.value) and "x86_64" in str(err.value)
    require_machine(info, "aarch64", 64)  # no error for the right machine


# -- read_elf errors -----------------------------------------------------------------


def test_non_elf_is_a_one_line_error(tmp_path):
    path = tmp_path / "script"
    path.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ElfError) as err:
        read_elf(path)
    assert_one_line(err.value)
    assert "not an ELF file" in str(err.value)


@pytest.mark.parametrize("length", [3, 10, 30, 63, 200, 3000])
def test_truncated_elf_is_a_one_line_error(tmp_path, length):
    path = tmp_path / "truncated"
    path.write_bytes(Path(PYTHON).read_bytes()[:length])
    with pytest.raises(ElfError) as err:
        read_elf(path)
    assert_one_line(err.value)
    if length >= 4:
        assert "truncated" in str(err.value) or "corrupt" in str(err.value)


def test_corrupt_program_headers_are_a_one_line_error(tmp_path):
    data = bytearray(Path(PYTHON).read_bytes())
    phoff = struct.unpack_from("<Q", data, 32)[0] if data[4] == 2 else None
    if phoff is None:
        pytest.skip("64-bit host expected")
    struct.pack_into("<Q", data, 32, len(data) + 4096)  # program headers beyond the end
    path = tmp_path / "corrupt"
    path.write_bytes(bytes(data))
    with pytest.raises(ElfError) as err:
        read_elf(path)
    assert_one_line(err.value)


def test_bad_elf_class_is_a_one_line_error(tmp_path):
    header = bytearray(elf_header(machine=62, elf_class=64))
    header[4] = 7  # neither ELFCLASS32 nor ELFCLASS64
    path = tmp_path / "badclass"
    path.write_bytes(bytes(header))
    with pytest.raises(ElfError) as err:
        read_elf(path)
    assert_one_line(err.value)


def test_unreadable_paths_are_one_line_errors(tmp_path):
    for path in (tmp_path / "missing", tmp_path):
        with pytest.raises(ElfError) as err:
            read_elf(path)
        assert_one_line(err.value)


def test_is_elf_never_raises(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(b"\x7fEL")
    assert is_elf(PYTHON)
    assert not is_elf(short)
    assert not is_elf(tmp_path)
    assert not is_elf(tmp_path / "missing")
    assert not is_elf(__file__)


# -- shebangs ----------------------------------------------------------------------------

SHEBANGS = [
    (b"#!/bin/sh\n", Shebang("/bin/sh")),
    (b"#!/bin/sh", Shebang("/bin/sh")),
    (b"#! /usr/bin/env python3\n", Shebang("/usr/bin/env", "python3")),
    (b"#!/usr/bin/env  python3 -u -X dev  \nprint()\n",
     Shebang("/usr/bin/env", "python3 -u -X dev")),
    (b"#!\t/bin/sh\t-e\t\n", Shebang("/bin/sh", "-e")),
    (b"#!/bin/sh   \t\n", Shebang("/bin/sh")),
    (b"#!/bin/sh\r\n", Shebang("/bin/sh\r")),
    (b"#!/bin/sh\n#!/bin/bash -x\n", Shebang("/bin/sh")),
    (b"#!/bin/sh -e" + b" " * 300 + b"\n", Shebang("/bin/sh", "-e")),
    (b"#!/bin/sh " + b"a" * 300, Shebang("/bin/sh", "a" * (BINPRM_BUF_SIZE - 1 - 10))),
    (b"#!" + b"/x" * 200, None),  # the interpreter's name does not fit: execve fails
    (b"#!\n", None),
    (b"#!   \t \n", None),
    (b"#!", None),
    (b"", None),
    (b"#/bin/sh\n", None),
    (b" #!/bin/sh\n", None),
    (b"\x7fELF\x02\x01", None),
]


@pytest.mark.parametrize(("data", "expected"), SHEBANGS)
def test_parse_shebang(data, expected):
    assert parse_shebang(data) == expected


def test_read_shebang(tmp_path):
    path = tmp_path / "s"
    path.write_bytes(b"#!/usr/bin/perl -w\nprint 1;\n")
    assert read_shebang(path) == Shebang("/usr/bin/perl", "-w")
    assert read_shebang(tmp_path / "missing") is None
    assert read_shebang(PYTHON) is None


KERNEL_CASES = [
    b"#!{I}\n",
    b"#!{I} one\n",
    b"#! {I}  one two  three \n",
    b"#!\t{I}\tone\ttwo\t\n",
    b"#!{I} " + b"z" * 300 + b"\n",
    b"#!{I} -x" + b" " * 300 + b"\n",
]


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's execve rules")
@pytest.mark.parametrize("template", KERNEL_CASES)
def test_parse_shebang_agrees_with_the_kernel(tmp_path, template):
    """Run scripts through execve and compare what the kernel passed with what we parse."""
    show = tmp_path / "show"
    show.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done\n")
    show.chmod(0o755)
    script = tmp_path / "script"
    data = template.replace(b"{I}", os.fsencode(show))
    script.write_bytes(data)
    script.chmod(0o755)
    out = subprocess.run([str(script)], capture_output=True, check=True).stdout
    argv = out.split(b"\0")[:-1]
    parsed = parse_shebang(data)
    assert parsed is not None and parsed.interpreter == os.fspath(show)
    expected = ([os.fsencode(parsed.argument)] if parsed.argument else []) + [bytes(script)]
    assert argv == expected
