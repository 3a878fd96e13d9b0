"""The notebooks in notebooks/ run in a packed kernel (as nobody) and give their stored outputs.

Like nbval: every code cell's stdout, stderr, results and errors are compared with
the outputs stored in the notebook, except in cells tagged ``nbval-ignore-output``
(their code still has to run without error, unless tagged ``raises-exception``)
or ``nbval-skip``.  The notebooks can also be checked with nbval itself:
``pytest --nbval notebooks/ --nbval-kernel-name NAME`` with an installed packed kernel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import unpriv
from nbclient import NotebookClient

pytest.register_assert_rewrite("jupyter_fixtures")
pytest_plugins = ("jupyter_fixtures",)

from jupyter_fixtures import STARTED_SESSIONS, leftover_processes, packed_spec  # noqa: E402

from nbsandbox.notebook import cellrun  # noqa: E402
from nbsandbox.store import StoreRoot  # noqa: E402

CHECKOUT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((CHECKOUT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="session")
def notebook_root(tmp_path_factory) -> StoreRoot:
    """A pack of the test venv's Python with bash and sleep (the quickstart's needs)."""
    from nbsandbox.pack import PackOptions, build_pack

    base = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("notebook-pack"))))
    result = build_pack(PackOptions(python=sys.executable, programs=["/bin/bash", "/bin/sleep"],
                                    output=base / "root"))
    subprocess.run(["chmod", "-R", "a+rX", str(result.path)], check=True)
    return StoreRoot.open(result.path)


def comparable(outputs: list[Any]) -> list[tuple[str, str]]:
    """A cell's outputs as (kind, text), consecutive stream chunks joined."""
    result: list[tuple[str, str]] = []
    for out in outputs:
        if cellrun.is_record(out):
            continue  # which pack a %%sandbox run used, not what it printed
        if out.output_type == "stream":
            if result and result[-1][0] == out.name:
                result[-1] = (out.name, result[-1][1] + out.text)
            else:
                result.append((out.name, out.text))
        elif out.output_type in ("execute_result", "display_data"):
            result.append((out.output_type, out.data.get("text/plain", "")))
        elif out.output_type == "error":
            result.append(("error", out.ename))
    return result


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_a_packed_kernel_with_its_stored_outputs(
        path, notebook_root, jupyter_dirs, engines_for_nobody, tmp_path):
    if engines_for_nobody.get("userns") and engines_for_nobody.get("proot"):
        pytest.skip("neither userns nor proot works here for the unprivileged user")
    expected = nbformat.read(path, as_version=4)
    name = jupyter_dirs.write_spec("notebook-kernel", packed_spec(
        notebook_root, "auto", pythonpath=[str(CHECKOUT)]))
    workdir = Path(unpriv.world_tmpdir(str(tmp_path)))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    before = len(STARTED_SESSIONS)
    client = NotebookClient(nb, kernel_name=name, timeout=120, allow_errors=True,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    sessions = STARTED_SESSIONS[before:]
    assert sessions, "the notebook did not run in the packed kernel"
    assert leftover_processes(sessions) == []

    problems = []
    for index, (ran, stored) in enumerate(zip(nb.cells, expected.cells, strict=True)):
        if ran.cell_type != "code":
            continue
        tags = set(stored.metadata.get("tags", []))
        got, want = comparable(ran.outputs), comparable(stored.outputs)
        errors = [o for o in ran.outputs if o.output_type == "error"]
        if "nbval-skip" in tags:
            continue
        if errors and "raises-exception" not in tags:
            problems.append(f"cell {index} raised {errors[0].ename}: {errors[0].evalue}\n"
                            f"{stored.source}")
        elif "nbval-ignore-output" not in tags and got != want:
            problems.append(f"cell {index} gave {got!r}, stored {want!r}\n{stored.source}")
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executed_by_one_user_verifies_for_another(path, notebook_root, tmp_path):
    """``nbsandbox execute`` records the notebook; a second user with a fresh home and no
    configuration re-runs it from the same pack with ``nbsandbox verify``: identical."""
    from test_reproducible import AUTHOR, VERIFIER, nbsandbox, private_dir

    base = Path(unpriv.world_tmpdir(str(tmp_path)))
    author, work = private_dir(base / "a-home", AUTHOR), private_dir(base / "a-work", AUTHOR)
    shutil.copy(path, work / path.name)
    os.chown(work / path.name, AUTHOR, AUTHOR)
    proc = nbsandbox(AUTHOR, author, "execute", path.name, "--root", str(notebook_root.path),
                     "-o", "executed.ipynb", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    home = private_dir(base / "v-home", VERIFIER)
    check = private_dir(base / "v-work", VERIFIER)
    shutil.copy(work / "executed.ipynb", check / "executed.ipynb")
    proc = nbsandbox(VERIFIER, home, "verify", "executed.ipynb", "--packs",
                     str(notebook_root.path), cwd=check)
    assert proc.returncode == 0, proc.stdout + proc.stderr
