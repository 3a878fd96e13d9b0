"""Pack this machine's Python, install it as a kernel, and execute the quickstart through it.

    python notebooks/run_quickstart.py [--python ENV] [--work DIR] [--engine ENGINE] [--verify]

1. ``nbsandbox pack`` the Python environment ENV (default: the running one, which
   has ipykernel) with ``bash`` and ``sleep``, into WORK/pack;
2. ``nbsandbox kernel install`` it as the kernel ``nbsandbox-quickstart`` in a
   private Jupyter data directory (WORK/jupyter: nothing of yours is touched),
   with ENGINE (default ``auto``: the fastest engine that works here);
3. execute ``quickstart.ipynb`` through that kernel with ``nbsandbox execute`` (nbclient)
   and write the executed notebook, with its record of the pack and engines, to
   WORK/quickstart.executed.ipynb, whose path it prints;
4. with ``--verify``, re-run it from its recorded pack and compare the outputs
   (``nbsandbox verify``).

Exits non-zero if any step fails (a cell's error included).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
KERNEL = "nbsandbox-quickstart"


def step(what: str) -> None:
    print(f"quickstart: {what}", file=sys.stderr, flush=True)


def nbsandbox(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "nbsandbox", *args], check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.prefix,
                        help="Python environment to pack (default: this one)")
    parser.add_argument("--work", help="working directory (default: a new temporary one)")
    parser.add_argument("--engine", default="auto", help="engine of the kernel (default: auto)")
    parser.add_argument("--verify", action="store_true",
                        help="then verify the executed notebook (nbsandbox verify)")
    args = parser.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="nbsandbox-quickstart-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JUPYTER_DATA_DIR": str(work / "jupyter"),
           "JUPYTER_PATH": str(work / "jupyter")}
    env.pop("PYTEST_CURRENT_TEST", None)
    pack = work / "pack"
    if not (pack / ".nbsandbox" / "pack.json").exists():
        step(f"packing {args.python} with bash and sleep into {pack}")
        nbsandbox("pack", "--python", args.python, "--program", "/bin/bash",
                  "--program", "/bin/sleep", "-o", str(pack), env=env)
    step(f"installing the kernel {KERNEL} (engine {args.engine})")
    install = ["kernel", "install", str(pack), "--name", KERNEL, "--engine", args.engine]
    import nbsandbox as nbs

    if Path(nbs.__file__).resolve().parent.parent == CHECKOUT:
        # a development checkout (an editable install, which packs leave out): let the
        # kernel import nbsandbox from it, for %load_ext nbsandbox
        install += ["--pythonpath", str(CHECKOUT)]
    nbsandbox(*install, env=env)

    step("executing quickstart.ipynb through the packed kernel (nbsandbox execute)")
    out = work / "quickstart.executed.ipynb"
    nbsandbox("execute", str(HERE / "quickstart.ipynb"), "--kernel", KERNEL, "-o", str(out),
              "--timeout", "300", env=env)
    if args.verify:
        step("re-running it from its recorded pack and comparing (nbsandbox verify)")
        nbsandbox("verify", str(out), "--packs", str(pack), env=env)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
