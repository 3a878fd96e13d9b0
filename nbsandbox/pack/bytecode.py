"""Byte-compile the packed Python files as the store will see them.

The packed interpreter compiles its own ``.py`` files (only it knows its
magic number), with the store path of each file as the recorded source path
so that tracebacks show store paths.  The ``.pyc`` files are
*unchecked-hash* ones: the interpreter never looks at the source again, so
it never tries to recompile (the store is read-only) and the files do not
depend on timestamps, which keeps packs reproducible.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from nbsandbox.errors import PackError

_COMPILE = r"""
import compileall, json, py_compile, sys
job = json.loads(sys.stdin.read())
for directory, ddir in job["dirs"]:
    compileall.compile_dir(
        directory, ddir=ddir, maxlevels=1000, quiet=2, workers=job["workers"],
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
"""


def count_sources(directory: Path) -> int:
    return sum(1 for _ in _sources(directory))


def _sources(directory: Path):
    for dirpath, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def compile_tree(python: str, tag: str, directory: Path, store_dir: str) -> tuple[int, int]:
    """Compile every ``.py`` under ``directory`` as if it were at ``store_dir``.

    ``python`` is the host interpreter of the packed version; ``tag`` its
    ``sys.implementation.cache_tag``.  Returns (sources, not compiled).
    """
    sources = list(_sources(directory))
    if not sources:
        return 0, 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    job = {"dirs": [[os.fspath(directory), store_dir]], "workers": 0 if len(sources) > 200 else 1}
    try:
        proc = subprocess.run([python, "-I", "-S", "-c", _COMPILE], input=json.dumps(job),
                              capture_output=True, text=True, env=env, timeout=3600,
                              check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PackError(f"cannot byte-compile with {python}: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise PackError(f"byte-compiling with {python} failed: {last}")
    missing = 0
    for source in sources:
        head, name = os.path.split(source)
        pyc = os.path.join(head, "__pycache__", f"{name[:-3]}.{tag}.pyc")
        if not os.path.exists(pyc):
            missing += 1
    return len(sources), missing


def cache_tag(python: str) -> str:
    try:
        proc = subprocess.run([python, "-I", "-S", "-c",
                               "import sys; print(sys.implementation.cache_tag)"],
                              capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PackError(f"cannot run {python}: {exc}") from None
    return proc.stdout.strip()
