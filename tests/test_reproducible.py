"""Reproducible notebooks end to end: execute, record, bundle, verify as another user.

One user (``nobody``) executes a notebook -- numpy, a ``%%sandbox --python``
cell, a matplotlib image, a memory address, a tagged volatile cell -- in the
session's packed kernel with ``nbsandbox execute`` and bundles it twice; a
different unprivileged user (uid 65533), with a fresh home and no
configuration, verifies the bundle under two engines.  Then the failure modes:
a changed stored output (exit 1 naming the cell), a changed byte in a bundled
pack (exit 2 naming the item), and bad inputs (exit 2, one line, nothing
written).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest
import unpriv
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from test_store import H1, make_root

from nbsandbox import identity
from nbsandbox.notebook import compare, params
from nbsandbox.notebook import record as records
from nbsandbox.store import METADATA, PackMetadata, StoreRoot

CHECKOUT = Path(__file__).resolve().parents[1]
AUTHOR = unpriv.NOBODY
VERIFIER = 65533  # a second unprivileged user, who shares nothing with the first
NUMPY_CELL, SANDBOX_CELL, IMAGE_CELL, ADDRESS_CELL, CLOCK_CELL = 2, 4, 5, 6, 7


def demo_notebook() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# A reproducible computation"),
        new_code_cell("n = 1000", metadata={"tags": ["parameters"]}),
        new_code_cell("import numpy as np\nrng = np.random.default_rng(7)\nx = rng.normal(size=n)\n"
                      "print(f'{x.mean():.6f} {x.std():.6f}')\n"
                      "print(np.linalg.eigvalsh(np.array([[2.0, 1.0], [1.0, 2.0]])))"),
        new_code_cell("%load_ext nbsandbox"),
        new_code_cell("%%sandbox --python\nimport sys\n"
                      "print('store python:', sys.executable.startswith('/gnu/store/'))\n"
                      "print(sum(i * i for i in range(100)))"),
        new_code_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 2), "
                      "dpi=40)\nax.plot(x[:50])\nplt.show()"),
        new_code_cell("object()"),
        new_code_cell("import time\nprint(time.time())",
                      metadata={"tags": ["nbsandbox-skip-compare"]}),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def private_dir(path: Path, uid: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    path.chmod(0o755)
    return path


def clean_env(home: Path) -> dict[str, str]:
    """A fresh user's environment: their own home, no Jupyter, XDG or nbsandbox settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER_", "NBSANDBOX_", "XDG_", "IPYTHONDIR", "MPLCONFIGDIR"))}
    return unpriv.unprivileged_env(env, home=str(home))


def as_user(uid: int, home: Path, *args: str, cwd: Path, timeout: int = 300
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=clean_env(home),
                          preexec_fn=unpriv.preexec(uid=uid), capture_output=True, text=True,
                          timeout=timeout)


def nbsandbox(uid: int, home: Path, *args: str, cwd: Path, timeout: int = 300
              ) -> subprocess.CompletedProcess:
    return as_user(uid, home, "nbsandbox", *args, cwd=cwd, timeout=timeout)


class Recorded:
    """The author's work: the executed notebook and its bundle."""

    def __init__(self, base: Path, root: StoreRoot) -> None:
        self.base, self.root = base, root
        self.home = private_dir(base / "author-home", AUTHOR)
        self.work = private_dir(base / "author-work", AUTHOR)
        self.notebook = self.work / "demo.ipynb"
        self.executed = self.work / "demo.out.ipynb"
        self.bundle = self.work / "demo.bundle.tar"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, python_pack) -> Recorded:
    base = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("repro"))))
    rec = Recorded(base, python_pack)
    nbformat.write(demo_notebook(), rec.notebook)
    os.chown(rec.notebook, AUTHOR, AUTHOR)
    proc = nbsandbox(AUTHOR, rec.home, "execute", rec.notebook.name, "--root",
                     str(python_pack.path), "-p", "n", "500", "-o", rec.executed.name,
                     cwd=rec.work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"recorded {rec.executed.name}")
    proc = nbsandbox(AUTHOR, rec.home, "bundle", rec.executed.name, "-o", rec.bundle.name,
                     cwd=rec.work)
    assert proc.returncode == 0, proc.stderr
    return rec


def verifier_dirs(base: Path, name: str) -> tuple[Path, Path]:
    home = private_dir(base / f"{name}-home", VERIFIER)
    work = private_dir(base / f"{name}-work", VERIFIER)
    return home, work


def usable_engines(base: Path) -> dict[str, bool]:
    home, work = verifier_dirs(base, "doctor")
    proc = nbsandbox(VERIFIER, home, "doctor", "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return {e["name"]: e["available"] for e in json.loads(proc.stdout)["engines"]}


# -- recording ------------------------------------------------------------------------------


def test_execute_records_packs_engines_and_host(recorded):
    nb = nbformat.read(recorded.executed, as_version=4)
    rec = records.read(nb, "demo")
    digest = recorded.root.metadata.digest
    assert rec.kernel["digest"] == digest
    assert rec.kernel["engine"] and rec.kernel["why"].startswith("engine: ")
    assert rec.data["parameters"] == {"n": 500}
    assert rec.packs == {digest: {"prefix": "/gnu/store",
                                  "used_by": ["kernel", f"cell {SANDBOX_CELL + 1}"]}}
    [cell] = rec.cells  # the injected parameters cell shifted the others by one
    assert cell["cell"] == SANDBOX_CELL + 1 and cell["digest"] == digest and cell["root"] == ""
    host = rec.host
    assert host["kernel_release"] == os.uname().release and host["cpu_flags"]["count"] > 0
    assert ("glibc" in host) == ("host" in (rec.kernel["engine"], cell["engine"]))
    outputs = nb.cells[IMAGE_CELL + 1].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in nb.cells[SANDBOX_CELL + 1].outputs)
    assert text == "store python: True\n328350\n"


def test_bundling_twice_gives_identical_files(recorded):
    again = recorded.work / "again.bundle.tar"
    proc = nbsandbox(AUTHOR, recorded.home, "bundle", recorded.executed.name, "-o", again.name,
                     cwd=recorded.work)
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == recorded.bundle.read_bytes()
    with tarfile.open(recorded.bundle) as tar:
        names = tar.getnames()
    assert names == ["nbsandbox-bundle.json", "notebook.ipynb",
                     f"packs/{recorded.root.metadata.digest}.tar"]
    again.unlink()


# -- verifying --------------------------------------------------------------------------------


@pytest.mark.timeout(900)  # unpacking 500 MB and a kernel under PRoot, on a busy machine
@pytest.mark.parametrize("engine", ["userns", "proot"])
def test_another_user_verifies_the_bundle(recorded, engine):
    if not usable_engines(recorded.base).get(engine):
        pytest.skip(f"{engine} does not work here for an unprivileged user")
    home, work = verifier_dirs(recorded.base, f"verify-{engine}")
    shutil.copy(recorded.bundle, work / "demo.bundle.tar")
    os.chown(work / "demo.bundle.tar", VERIFIER, VERIFIER)
    proc = nbsandbox(VERIFIER, home, "verify", "demo.bundle.tar", "--engine", engine,
                     "--report", "report.json", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "identical: 7 cells compared, 1 skipped"
    report = json.loads((work / "report.json").read_text())
    assert report["status"] == "identical" and report["engine"] == engine
    digest = recorded.root.metadata.digest
    assert report["packs"] == {digest: str(home / ".cache/nbsandbox/packs" / digest)}
    assert sorted(os.listdir(work)) == ["demo.bundle.tar", "report.json"]
    if engine != "userns":
        return
    # The pack is now in this user's cache: the notebook alone verifies, and the cached pack
    # is neither unpacked nor digested again (its stamp is not rewritten).
    stamps = list((home / ".cache/nbsandbox/verified").iterdir())
    before = [(p.name, p.stat().st_mtime_ns) for p in stamps]
    shutil.copy(recorded.executed, work / "demo.ipynb")
    os.chown(work / "demo.ipynb", VERIFIER, VERIFIER)
    proc = nbsandbox(VERIFIER, home, "verify", "demo.ipynb", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = [(p.name, p.stat().st_mtime_ns) for p in (home / ".cache/nbsandbox/verified")
             .iterdir()]
    assert after == before


def test_a_changed_stored_output_exits_1_naming_the_cell(recorded):
    home, work = verifier_dirs(recorded.base, "changed")
    nb = nbformat.read(recorded.executed, as_version=4)
    cell = nb.cells[NUMPY_CELL + 1]
    cell.outputs[0].text = cell.outputs[0].text.replace("0.", "1.", 1)
    nbformat.write(nb, work / "demo.ipynb")
    proc = nbsandbox(VERIFIER, home, "verify", "demo.ipynb", "--packs",
                     str(recorded.root.path), cwd=work)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert f"differs: cell {NUMPY_CELL + 1}" == lines[-1]
    assert any(line.startswith(f"cell {NUMPY_CELL + 1} (") and "differs" in line
               for line in lines)
    assert f"cell {SANDBOX_CELL + 1} (" in proc.stdout


@pytest.mark.timeout(900)
def test_pytest_plugin_verifies_notebooks(recorded):
    home, work = verifier_dirs(recorded.base, "plugin")
    notebooks = private_dir(work / "notebooks", VERIFIER)
    shutil.copy(recorded.executed, notebooks / "good.ipynb")
    nb = nbformat.read(recorded.executed, as_version=4)
    nb.cells[NUMPY_CELL + 1].outputs[0].text = "changed\n"
    nbformat.write(nb, notebooks / "changed.ipynb")
    for p in notebooks.iterdir():
        os.chown(p, VERIFIER, VERIFIER)
    proc = as_user(VERIFIER, home, "pytest", "-p", "no:cacheprovider", "-c", "/dev/null",
                   "--rootdir", str(work), "--nbsandbox-verify", "--nbsandbox-packs",
                   str(recorded.root.path), "notebooks", cwd=work, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in proc.stdout
    assert f"differs: cell {NUMPY_CELL + 1}" in proc.stdout
    assert "FAILED notebooks/changed.ipynb::nbsandbox-verify" in proc.stdout


def test_record_adds_the_record_of_an_interactive_run(recorded, tmp_path):
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "jd"),
           "JUPYTER_PATH": str(tmp_path / "jd"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-m", "nbsandbox", "kernel", "install",
                    str(recorded.root.path), "--name", "repro-kernel"], env=env, check=True,
                   capture_output=True)
    nb = nbformat.read(recorded.executed, as_version=4)
    del nb.metadata["nbsandbox"]
    nb.metadata["kernelspec"] = {"name": "repro-kernel", "display_name": "x",
                                 "language": "python"}
    path = tmp_path / "interactive.ipynb"
    nbformat.write(nb, path)
    proc = subprocess.run([sys.executable, "-m", "nbsandbox", "record", str(path)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rec = records.read(nbformat.read(path, as_version=4), "interactive")
    assert rec.kernel["name"] == "repro-kernel"
    assert rec.kernel["digest"] == recorded.root.metadata.digest
    assert "executed interactively" in rec.kernel["why"]
    assert [c["cell"] for c in rec.cells] == [SANDBOX_CELL + 1]


# -- bad input: small hand-made packs, no kernel ------------------------------------------------


def small_pack(base: Path) -> StoreRoot:
    path = make_root(base)
    root = StoreRoot.open(path)
    manifest, _ = identity.compute(root)
    (path / ".nbsandbox").mkdir()
    (path / METADATA).write_text(PackMetadata(prefix="/gnu/store", manifest=manifest).to_json())
    return StoreRoot.open(path)


def recorded_notebook(path: Path, root: StoreRoot, digest: str | None = None) -> Path:
    nb = new_notebook(cells=[new_code_cell("1 + 1")])
    kernel = {"name": None, "digest": digest or root.metadata.digest, "prefix": root.prefix,
              "root": str(root.path), "engine": "userns", "why": "engine: userns"}
    nb.metadata["nbsandbox"] = records.build(kernel=kernel, cells=[], host={},
                                             made_by="test")
    nbformat.write(nb, path)
    return path


def run_cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = clean_env(home)
    env["USER"] = "tester"
    return subprocess.run([sys.executable, "-m", "nbsandbox", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def small(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    root = small_pack(tmp_path / "pack")
    nb = recorded_notebook(work / "nb.ipynb", root)
    proc = run_cli("bundle", "nb.ipynb", "-o", "nb.bundle.tar", cwd=work, home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    return root, nb, work / "nb.bundle.tar", tmp_path


def test_small_bundles_are_deterministic(small):
    _root, nb, bundle, tmp = small
    proc = run_cli("bundle", "nb.ipynb", "-o", "again.tar", cwd=nb.parent, home=tmp / "h")
    assert proc.returncode == 0, proc.stderr
    assert (nb.parent / "again.tar").read_bytes() == bundle.read_bytes()


def test_a_changed_byte_in_a_bundled_pack_exits_2_naming_the_item(small):
    _root, nb, bundle, tmp = small
    data = bytearray(bundle.read_bytes())
    where = data.index(b"echo tool")
    data[where + 5] ^= 0x01
    bundle.write_bytes(bytes(data))
    proc = run_cli("verify", "nb.bundle.tar", cwd=nb.parent, home=tmp / "v")
    line = one_line_error(proc)
    assert f"item {H1}-tool-1.0 has different content" in line
    cache = tmp / "v" / ".cache" / "nbsandbox" / "packs"
    assert [p for p in cache.iterdir()] == []  # nothing half-unpacked is left


def test_a_traversal_entry_in_a_bundle_exits_2_and_writes_nothing(small):
    _root, nb, bundle, tmp = small
    evil = tmp / "evil.bundle.tar"
    with tarfile.open(bundle) as src, tarfile.open(evil, "w") as out:
        for member in src:
            if member.name.startswith("packs/"):
                data = b"owned\n"
                info = tarfile.TarInfo("../../escaped.txt")
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            else:
                out.addfile(member, src.extractfile(member))
    proc = run_cli("verify", str(evil), cwd=nb.parent, home=tmp / "v")
    line = one_line_error(proc)
    assert "unexpected entry '../../escaped.txt'" in line
    assert not any(p.name == "escaped.txt" for p in tmp.parent.rglob("escaped.txt"))


def test_a_truncated_bundle_exits_2(small):
    _root, nb, bundle, tmp = small
    data = bundle.read_bytes()
    bundle.write_bytes(data[: len(data) // 2 + 100])
    line = one_line_error(run_cli("verify", "nb.bundle.tar", cwd=nb.parent, home=tmp / "v"))
    assert "truncated" in line
    cache = tmp / "v" / ".cache" / "nbsandbox" / "packs"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_hand_edited_record_exits_2(small):
    _root, nb, _bundle, tmp = small
    data = json.loads(nb.read_text())
    data["metadata"]["nbsandbox"]["kernel"]["digest"] = "0" * 64
    nb.write_text(json.dumps(data))
    line = one_line_error(run_cli("verify", "nb.ipynb", cwd=nb.parent, home=tmp / "v"))
    assert "edited by hand" in line


def test_an_unknown_digest_exits_2(small):
    root, nb, _bundle, tmp = small
    recorded_notebook(nb, root, digest="f" * 64)
    line = one_line_error(run_cli("verify", "nb.ipynb", cwd=nb.parent, home=tmp / "v"))
    assert f"pack {'f' * 64} (kernel) is missing" in line


def test_a_notebook_without_record_exits_2(tmp_path):
    nbformat.write(new_notebook(cells=[new_code_cell("1")]), tmp_path / "plain.ipynb")
    line = one_line_error(run_cli("verify", "plain.ipynb", cwd=tmp_path, home=tmp_path / "h"))
    assert "has no nbsandbox record" in line
    (tmp_path / "junk.ipynb").write_text("{not json")
    line = one_line_error(run_cli("verify", "junk.ipynb", cwd=tmp_path, home=tmp_path / "h"))
    assert "is not a Jupyter notebook" in line


def test_a_changed_pack_in_the_cache_is_refused(small):
    root, nb, _bundle, tmp = small
    tool = root.path / "gnu/store" / f"{H1}-tool-1.0" / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho changed\n")
    line = one_line_error(run_cli("verify", "nb.ipynb", "--packs", str(root.path),
                                  cwd=nb.parent, home=tmp / "v"))
    assert f"item {H1}-tool-1.0 has different content" in line


# -- the guide ----------------------------------------------------------------------------------


def test_the_guides_commands_and_configuration_are_real(tmp_path, monkeypatch):
    """Every ``$ nbsandbox ...`` line of the guide parses with the real command line, and its
    configuration snippets configure what they say (the flows themselves run above)."""
    import re
    import shlex
    import textwrap

    from nbsandbox.cli import build_parser
    from nbsandbox.notebook.cache import PackCache, from_config
    from nbsandbox.notebook.verify import NotebookVerifier, _verifier

    text = (CHECKOUT / "docs" / "reproducible-notebooks.md").read_text()
    commands = [line[2:] for line in text.splitlines() if line.startswith("$ nbsandbox ")]
    assert {shlex.split(c)[1] for c in commands} >= {"pack", "check", "execute", "record",
                                                      "bundle", "verify", "kernel"}
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])
    snippets = [textwrap.dedent(s) for s in re.findall(r"```python\n(.*?)```", text, re.S)]
    (tmp_path / "nbsandbox_config.py").write_text("\n".join(snippets))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("JUPYTER_CONFIG_PATH", raising=False)
    cache = from_config()
    assert isinstance(cache, PackCache)
    assert cache.shared == ["/cluster/software/nbsandbox-packs"]
    verifier = _verifier()
    assert isinstance(verifier, NotebookVerifier)
    rules = compare.rules_from_config(verifier.normalize)
    assert rules.apply("took 31 ms") == "took N ms"


# -- comparing and parameters --------------------------------------------------------------------


def _png(pixels: bytes, text: str) -> str:
    from PIL import Image, PngImagePlugin

    im = Image.frombytes("L", (2, 2), pixels)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", text)
    out = io.BytesIO()
    im.save(out, "png", pnginfo=info)
    return base64.b64encode(out.getvalue()).decode()


def test_outputs_are_normalized_and_images_compared_by_content():
    pytest.importorskip("PIL")
    rules = compare.rules_from_config({r"took \d+ ms": "took N ms"})

    def out(text: str, png: str) -> list[dict]:
        return [{"output_type": "stream", "name": "stdout", "text": text},
                {"output_type": "display_data", "data": {"image/png": png}, "metadata": {}},
                {"output_type": "execute_result", "execution_count": 3, "metadata": {},
                 "data": {"text/plain": "<object object at 0x7f3a2b1c0d10>"}}]

    a = out("at 2026-12-03T10:00:01.123Z in /tmp/tmpab12/x.txt, took 31 ms\n",
            _png(b"\x00\x10\x20\x30", "one"))
    b = out("at 2025-01-01 09:59:59 in /tmp/other/x.txt, took 12 ms\n",
            _png(b"\x00\x10\x20\x30", "another"))
    assert compare.comparable(a, rules) == compare.comparable(b, rules)
    c = out("at 2025-01-01 09:59:59 in /tmp/other/x.txt, took 12 ms\n",
            _png(b"\x00\x10\x20\x31", "one"))
    assert compare.comparable(a, rules) != compare.comparable(c, rules)
    cell = {"metadata": {"tags": [r"nbsandbox-normalize=\d+ items"]}}
    assert compare.cell_rules(cell) == [(r"\d+ items", "<normalized>")]
    assert compare.skipped({"metadata": {"tags": ["nbval-skip"]}}) == "nbval-skip"


def test_parameters_are_injected_after_the_parameters_cell():
    nb = demo_notebook()
    values = params.parse([("n", "10"), ("label", "hello"), ("ratio", "0.5")])
    assert values == {"n": 10, "label": "hello", "ratio": 0.5}
    params.inject(nb, values)
    params.inject(nb, {"n": 11})
    assert nb.cells[2].metadata["tags"] == ["injected-parameters"]
    assert nb.cells[2].source == "# Parameters\nn = 11\n"
    assert len(nb.cells) == len(demo_notebook().cells) + 1
    from nbsandbox.errors import UsageError

    with pytest.raises(UsageError):
        params.parse([("not valid", "1")])
