"""The short fuzzing campaign CI runs (``tools/fuzz.py --short``), and the regressions the
long campaigns found.

* the native path translation under AddressSanitizer and UBSan: 20k inputs per libFuzzer
  target (skipped without clang);
* the pack tarball reader and the ELF reader: 2k inputs per target from the seeded
  mutation fuzzer of ``fuzz/readers.py`` (deterministic, in this process): only
  PackError/ElfError or success, nothing written outside the destination.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "fuzz"))

import readers  # noqa: E402

from nbsandbox.elf import read_elf  # noqa: E402
from nbsandbox.errors import ElfError  # noqa: E402

PY_RUNS = 2000


@pytest.mark.parametrize("target", readers.TARGETS)
def test_python_reader_short_campaign(target: str, tmp_path: Path) -> None:
    report = readers.run_campaign(target, PY_RUNS, tmp_path, seed=1,
                                  crashes=tmp_path / "crashes")
    assert report.finding is None, f"{report.finding} (input saved in {report.crash_file})"
    assert report.inputs == PY_RUNS
    # the campaign reaches both outcomes, or it tests nothing
    assert report.stats["ok"] > 0 and report.stats["refused"] > 0, report.stats


def test_tool_runs_the_short_native_campaign(tmp_path: Path) -> None:
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "fuzz.py"), "--short",
                           "--only", "native", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "total: 40000 native inputs" in proc.stdout, proc.stdout


def test_regression_pyelftools_assertion_is_an_elf_error(tmp_path: Path) -> None:
    """Found by atheris: a PT_DYNAMIC whose string table is not one made pyelftools raise
    AssertionError out of read_elf (a traceback from ``nbsandbox run``)."""
    data = gzip.decompress((REPO / "fuzz" / "regressions" /
                            "elf-strtab-assertion.bin.gz").read_bytes())
    path = tmp_path / "prog"
    path.write_bytes(data)
    with pytest.raises(ElfError, match="is a corrupt ELF file"):
        read_elf(path)


def test_regression_store_symlink_is_refused_and_nothing_outside_changes(tmp_path: Path,
                                                                          ) -> None:
    """Found by atheris (tar-struct): ``gnu/store -> /some/host/dir`` was unpacked, and
    making the store read-only chmodded every file of the host directory."""
    data = (REPO / "fuzz" / "regressions" / "tar-struct-store-symlink.bin").read_bytes()
    target = readers.StructuredTarTarget(tmp_path)
    target(data)  # raises Finding if a file outside the destination changes
    assert target.stats == {"ok": 0, "refused": 1}
