"""The fakechroot engine's native libraries: portability, sanitizers, fuzzing.

* The built libraries must load into programs of any glibc since 2.17: no
  symbol version newer than that may be required (read from
  ``.gnu.version_r`` with pyelftools), the audit module needs no library at
  all, the preload library only ``libc.so.6`` (never ``libdl.so.2``, which a
  store's loader would look for in the host's directories when the store has
  none), and neither uses fortify or stack-protector symbols.
* The pure path code (pathmap.c) passes its C test harness under
  AddressSanitizer and UndefinedBehaviorSanitizer.
* A short libFuzzer run (20000 inputs) of pathmap.c finds nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from nbsandbox.native import native_path

REPO = Path(__file__).resolve().parent.parent
FAKECHROOT = REPO / "native" / "fakechroot"
BASELINE = (2, 17)  # the oldest glibc the libraries must load into


def version_needs(path: Path) -> dict[str, set[str]]:
    """{library: {version names}} from .gnu.version_r."""
    needs: dict[str, set[str]] = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for section in elf.iter_sections():
            if isinstance(section, GNUVerNeedSection):
                for verneed, aux in section.iter_versions():
                    needs.setdefault(verneed.name, set()).update(a.name for a in aux)
    return needs


def needed(path: Path) -> list[str]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                return [t.needed for t in section.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    return []


def symbols(path: Path, *, defined: bool) -> set[str]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        dynsym = elf.get_section_by_name(".dynsym")
        return {
            s.name for s in dynsym.iter_symbols()
            if s.name and (s["st_shndx"] != "SHN_UNDEF") == defined
        }


def glibc_version(name: str) -> tuple[int, ...]:
    m = re.fullmatch(r"GLIBC_(\d+(?:\.\d+)*)", name)
    assert m, f"unexpected version name {name}"
    return tuple(int(x) for x in m.group(1).split("."))


@pytest.mark.parametrize("lib", ["nbs-preload.so", "nbs-audit.so"])
def test_no_symbol_version_newer_than_glibc_2_17(lib):
    path = native_path(lib)
    needs = version_needs(path)
    for library, versions in needs.items():
        assert library == "libc.so.6", (library, versions)
        for v in versions:
            assert glibc_version(v) <= BASELINE, f"{lib} needs {v} from {library}"
    undefined = symbols(path, defined=False)
    assert not [s for s in undefined if s.startswith("__") and s.endswith("_chk")
                and s != "__chk_fail"], undefined
    assert "__stack_chk_fail" not in undefined


def test_audit_module_needs_no_library():
    path = native_path("nbs-audit.so")
    assert needed(path) == []
    assert version_needs(path) == {}
    assert symbols(path, defined=False) == set()
    assert {"la_version", "la_objsearch", "la_objopen"} <= symbols(path, defined=True)


def test_preload_library_interposes_the_path_functions():
    path = native_path("nbs-preload.so")
    assert needed(path) == ["libc.so.6"]
    assert "dlsym" not in symbols(path, defined=False)
    exported = symbols(path, defined=True)
    expected = {
        "open", "open64", "openat", "__open_2", "fopen", "stat", "lstat", "fstatat", "statx",
        "__xstat", "__lxstat", "__fxstatat", "__xstat64", "access", "faccessat", "readlink",
        "readlinkat", "realpath", "__realpath_chk", "getcwd", "chdir", "opendir", "scandir",
        "mkdir", "unlink", "rename", "symlink", "chmod", "utimensat", "execve", "execvp",
        "execvpe", "execl", "fexecve", "posix_spawn", "posix_spawnp", "system", "popen",
        "pclose", "mkstemp", "truncate", "getxattr",
    }
    assert expected <= exported, expected - exported
    # nothing of pathmap.c leaks into the programs' namespace
    assert not [s for s in exported if s.startswith("pm_")]


def _cc() -> str:
    for cc in ("clang", "gcc", "cc"):
        if shutil.which(cc):
            return cc
    pytest.skip("no C compiler")


def test_pathmap_harness_under_asan_and_ubsan(tmp_path):
    exe = tmp_path / "test_pathmap"
    subprocess.run(
        [_cc(), "-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
         "-I", str(FAKECHROOT), str(FAKECHROOT / "test" / "test_pathmap.c"),
         str(FAKECHROOT / "pathmap.c"), "-o", str(exe)],
        check=True,
    )
    env = {"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"\d+ checks, 0 failures\n", proc.stdout), proc.stdout


@pytest.mark.skipif(not shutil.which("clang"), reason="libFuzzer needs clang")
def test_short_fuzz_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "native" / "fuzz" / "run.py"), "--runs", "20000",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # pathmap.c's libc and freestanding builds, and record.c
    assert proc.stderr.count("Done 20000 runs") == 3
    assert not list((tmp_path / "crashes").iterdir())
