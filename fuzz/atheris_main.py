"""Run one reader's fuzz target under atheris (coverage-guided, libFuzzer's engine).

    python fuzz/atheris_main.py TARGET WORKDIR [libFuzzer options] [CORPUS_DIR]

TARGET is ``tar-bytes``, ``tar-struct`` or ``elf`` (see :mod:`readers`).  The
corpus directory is seeded from :func:`readers.seeds` when empty.  Use
``tools/fuzz.py``, which runs this for each target.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["nbsandbox", "tarfile", "gzip", "lzma", "bz2",
                                         "elftools", "readers"]):
    import readers


def main() -> None:
    name, work = sys.argv[1], Path(sys.argv[2])
    target = readers.make_target(name, work / name)
    corpus = [a for a in sys.argv[3:] if not a.startswith("-")]
    for directory in map(Path, corpus):
        directory.mkdir(parents=True, exist_ok=True)
        if not any(directory.iterdir()):
            for i, data in enumerate(readers.seeds(name)):
                (directory / f"seed-{i}").write_bytes(data)
    atheris.Setup([sys.argv[0], *sys.argv[3:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
