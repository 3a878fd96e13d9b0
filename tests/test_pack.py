"""Building packs: layout, hermeticity, runs under an independent tool, determinism."""

from __future__ import annotations

import json
import marshal
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
import unpriv
from elftools.elf.elffile import ELFFile

from nbsandbox.errors import ElfError, PackError, UsageError
from nbsandbox.pack import PackOptions, build_pack, check_root, unpack
from nbsandbox.pack.layout import NIX_BASE32, nix_base32
from nbsandbox.store import ITEM_RE, StoreRoot

PROOT = shutil.which("proot")
needs_proot = pytest.mark.skipif(PROOT is None, reason="proot is not installed")
GIT = shutil.which("git")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "packs.md"
OTHER_PYTHONS = sorted(Path("/root/.pyenv/versions").glob("3.1[0-9]*/bin/python3.1[0-9]"))


def in_proot(root: StoreRoot, *argv: str, binds: tuple[str, ...] = ()) -> list[str]:
    """argv that runs a store program with the store visible at its prefix (PRoot)."""
    extra = [a for b in binds for a in ("-b", b)]
    return [PROOT, "-b", f"{root.store_dir}:{root.prefix}", *extra, *argv]


def run_in_proot(root: StoreRoot, *argv: str, env: dict[str, str] | None = None,
                 binds: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    proc = unpriv.run(in_proot(root, *argv, binds=binds), env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def store_items(root: StoreRoot) -> dict[str, str]:
    """Item label (name-version) -> sandbox path."""
    return {name.split("-", 1)[1]: f"{root.prefix}/{name}" for name in root.items()}


def item(root: StoreRoot, label_prefix: str) -> str:
    matches = [path for label, path in store_items(root).items() if label.startswith(label_prefix)]
    assert len(matches) == 1, (label_prefix, root.items())
    return matches[0]


def elf_files(root: StoreRoot):
    for dirpath, _dirs, files in os.walk(root.store_dir):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    yield path


def elf_dynamic(path: str) -> tuple[str | None, list[str], list[str], str, int]:
    """(interpreter, needed, runpath+rpath, machine, class) read with pyelftools directly."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        interp = None
        needed: list[str] = []
        search: list[str] = []
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                interp = seg.get_interp_name()
            elif seg["p_type"] == "PT_DYNAMIC":
                for tag in seg.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag == "DT_RUNPATH":
                        search += tag.runpath.split(":")
                    elif tag.entry.d_tag == "DT_RPATH":
                        search += tag.rpath.split(":")
        return interp, needed, search, elf["e_machine"], elf.elfclass


# -- the pack of the test venv -------------------------------------------------------------


def test_python_pack_layout(python_pack):
    root = python_pack
    assert root.prefix == "/gnu/store"
    labels = store_items(root)
    assert all(ITEM_RE.match(name) for name in root.items())
    assert {"libs", "profile"} <= set(labels)
    assert any(label.startswith("glibc-2.") for label in labels)
    assert f"python-{'.'.join(map(str, sys.version_info[:3]))}" in labels
    # Top-level bin holds the profile's programs as wrappers that run without nbsandbox
    # (tests/test_pack_wrappers.py); --no-wrappers makes it a link as guix pack -S /bin=bin.
    profile = item(root, "profile")
    assert (root.path / "bin").is_dir() and not (root.path / "bin").is_symlink()
    assert os.path.samefile(root.path / "bin" / "python3", root.path / ".nbsandbox/nbs-launch")
    meta = root.metadata
    assert meta is not None and meta.prefix == "/gnu/store" and meta.profile == profile
    python = item(root, "python-")
    assert meta.python == f"{python}/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    assert root.to_host(meta.python).is_file()
    assert {"python3", "python", "ipython"} <= set(root.profile_programs())
    assert root.find_program("python3").startswith(profile)
    assert root.resolve(root.find_program("python3")) == meta.python
    # The phases reported progress.
    phases = [line.split(":", 1)[0] for line in root.build_log]
    assert phases[:2] == ["collect", "closure"] and phases[-1] == "write"


def test_python_pack_is_hermetic_per_pyelftools(python_pack):
    root = python_pack
    glibc = item(root, "glibc-")
    host_interp = elf_dynamic(os.path.realpath(sys.executable))[0]
    assert host_interp is not None  # the host python is dynamic
    loader = f"{glibc}/lib/{os.path.basename(host_interp)}"
    checked = 0
    for path in elf_files(root):
        interp, needed, search, _machine, _elf_class = elf_dynamic(path)
        sandbox = root.to_sandbox(path)
        if interp is not None:
            assert interp == loader, sandbox
        dirs = []
        for entry in search:
            if entry.startswith("$ORIGIN"):
                entry = os.path.normpath(os.path.dirname(sandbox) + entry[len("$ORIGIN"):])
            assert root.in_store(entry), (sandbox, entry)
            dirs.append(entry)
        for name in needed:
            found = [d for d in dirs if root.to_host(root.resolve(f"{d}/{name}")).exists()]
            assert found or name == os.path.basename(loader), (sandbox, name, dirs)
        checked += 1
    assert checked > 300  # python, lib-dynload, wheels, glibc with gconv, libs


def test_check_root_finds_the_python_pack_complete(python_pack, capsys):
    from nbsandbox.pack.commands import run_check

    assert check_root(python_pack) == []
    args = type("Args", (), {"root": str(python_pack.path), "prefix": None})()
    assert run_check(args) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [
        f"digest: {python_pack.metadata.digest}",
        f"complete: {len(python_pack.items())} items, no reference outside /gnu/store"]


def test_modes_are_normalized_and_setuid_never_copied(python_pack):
    for dirpath, dirs, files in os.walk(python_pack.path):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                continue
            assert stat.S_IMODE(st.st_mode) in (0o755, 0o644), os.path.join(dirpath, name)


def test_glibc_item_has_gconv_and_profile_points_at_it(python_pack):
    glibc = python_pack.to_host(item(python_pack, "glibc-"))
    gconv = glibc / "lib" / "gconv"
    assert (gconv / "UTF-16.so").is_file() and (gconv / "ISO8859-15.so").is_file()
    assert (gconv / "gconv-modules").is_file() or (gconv / "gconv-modules.d").is_dir()
    profile = python_pack.to_host(item(python_pack, "profile"))
    text = (profile / "etc" / "profile").read_text()
    assert f'export GCONV_PATH="{item(python_pack, "glibc-")}/lib/gconv"' in text


def test_bytecode_is_unchecked_hash_with_store_paths(python_pack):
    python = item(python_pack, "python-")
    host = python_pack.to_host(python)
    tag = sys.implementation.cache_tag
    sources = list(host.glob("lib/python3*/json/*.py")) + list(host.glob("lib/*/*/ipykernel/*.py"))
    assert len(sources) > 10
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        data = pyc.read_bytes()
        flags = int.from_bytes(data[4:8], "little")
        assert flags == 0b01, pyc  # hash-based, not checked against the source
        code = marshal.loads(data[16:])
        assert code.co_filename == python_pack.to_sandbox(source)


def test_console_scripts_point_at_the_packed_python(python_pack):
    python = python_pack.metadata.python
    scripts = python_pack.to_host(item(python_pack, "python-")) / "bin"
    ipython = (scripts / "ipython").read_bytes()
    assert ipython.startswith(f"#!{python}\n".encode())


def test_packed_python_cannot_run_on_the_host_directly(python_pack):
    with pytest.raises(FileNotFoundError):  # its ELF interpreter is a store path
        subprocess.run([str(python_pack.to_host(python_pack.metadata.python)), "-c", "1"],
                       check=False)


PROBE = textwrap.dedent("""
    import json, sys
    import ipykernel, ssl, sqlite3, ctypes, encodings.idna, zmq
    sqlite3.connect(":memory:").execute("select 1")
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if ".so" in line.split()[-1]})
    print(json.dumps({"prefix": sys.prefix, "executable": sys.executable,
                      "base_prefix": sys.base_prefix, "path": sys.path, "libs": libs,
                      "ssl": ssl.OPENSSL_VERSION}))
""")


@needs_proot
def test_packed_python_runs_under_proot_from_the_store_only(python_pack):
    root = python_pack
    python = root.metadata.python
    proc = run_in_proot(root, python, "-c", PROBE)
    data = json.loads(proc.stdout)
    item_dir = item(root, "python-")
    assert data["prefix"] == data["base_prefix"] == item_dir
    assert data["executable"] == python
    assert data["path"][0] == ""
    assert all(p.startswith("/gnu/store/") for p in data["path"][1:]), data["path"]
    assert any(p.endswith(("site-packages", "dist-packages")) for p in data["path"])
    # Every shared object in the process (libc, libssl, the wheels' libs) is from the store
    # (PRoot shows mappings with host paths in /proc/self/maps).
    store = (f"{root.prefix}/", f"{root.store_dir}/")
    assert len(data["libs"]) > 20
    assert [lib for lib in data["libs"] if not lib.startswith(store)] == []


@needs_proot
def test_profile_console_script_runs_under_proot(python_pack):
    proc = run_in_proot(python_pack, f"{python_pack.profile_bin()}/pygmentize", "-V")
    assert "Pygments" in proc.stdout


ICONV = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.iconv_open.restype = ctypes.c_void_p
    libc.iconv_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    cd = libc.iconv_open(b"UTF-16LE", b"ISO-8859-15")
    if cd in (None, ctypes.c_void_p(-1).value):
        sys.exit("iconv_open failed: errno %d" % ctypes.get_errno())
    src = ctypes.create_string_buffer(b"\\xa4", 1)  # the euro sign in ISO-8859-15
    out = ctypes.create_string_buffer(8)
    pin, pout = ctypes.c_char_p(ctypes.addressof(src)), ctypes.c_char_p(ctypes.addressof(out))
    nin, nout = ctypes.c_size_t(1), ctypes.c_size_t(8)
    libc.iconv.argtypes = [ctypes.c_void_p] + [ctypes.c_void_p] * 4
    libc.iconv(cd, ctypes.byref(pin), ctypes.byref(nin), ctypes.byref(pout), ctypes.byref(nout))
    mods = sorted({l.split()[-1] for l in open("/proc/self/maps") if "gconv/" in l})
    print(out.raw[:2].hex(), " ".join(mods))
""")


@needs_proot
def test_iconv_uses_the_packs_gconv_modules(python_pack, tmp_path):
    """With the host's gconv directory hidden, GCONV_PATH from etc/profile makes iconv work."""
    root = python_pack
    glibc = item(root, "glibc-")
    # Where the packed glibc looks by default: the host's gconv directory.
    host_gconv = next(Path(os.path.realpath(sys.executable)).parent.parent.glob("lib/*/gconv"),
                      Path("/usr/lib/x86_64-linux-gnu/gconv"))
    empty = unpriv.world_tmpdir(str(tmp_path))
    env = dict(os.environ, GCONV_PATH=f"{glibc}/lib/gconv")
    proc = run_in_proot(root, root.metadata.python, "-c", ICONV, env=env,
                        binds=(f"{empty}:{host_gconv}",))
    euro, _, modules = proc.stdout.strip().partition(" ")
    assert euro == "ac20"  # U+20AC in UTF-16LE
    gconv = (f"{glibc}/lib/gconv/", f"{root.to_host(glibc)}/lib/gconv/")
    assert modules and all(m.startswith(gconv) for m in modules.split()), modules


@needs_proot
def test_packed_python_writes_nothing_into_the_store(python_pack):
    start = time.time() - 1
    run_in_proot(python_pack, python_pack.metadata.python, "-c",
                 "import ipykernel.kernelapp, numpy, json, asyncio")
    newer = [os.path.join(d, n) for d, _, files in os.walk(python_pack.path) for n in files
             if os.lstat(os.path.join(d, n)).st_mtime > start]
    assert newer == []


# -- the documented example (also: tarballs, unpack, --program, determinism) -----------------


def documented_commands() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of the tested block of docs/packs.md."""
    text = DOCS.read_text()
    marker = "<!-- tested by tests/test_pack.py::test_documented_example -->"
    block = text.split(marker, 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    commands: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif line.strip():
            commands[-1][1].append(line)
    return commands


def run_documented(command: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    if argv[0] == "nbsandbox":
        return subprocess.run([sys.executable, "-m", "nbsandbox", *argv[1:]], cwd=cwd,
                              capture_output=True, text=True, timeout=600, check=False)
    if argv[0] == "proot" or argv[0].startswith("demo/bin/"):
        return unpriv.run(argv, cwd=cwd)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def matches(expected: str, output: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return any(re.fullmatch(pattern, line) for line in output.splitlines())


@pytest.fixture(scope="module")
def documented_example(tmp_path_factory) -> Path:
    if PROOT is None or GIT is None or shutil.which("python3") is None:
        pytest.skip("the documented example needs proot, git and python3")
    cwd = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("docs-example"))))
    for command, expected in documented_commands():
        proc = run_documented(command, cwd)
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
        for line in expected:
            assert matches(line, proc.stdout), f"{command}: {line!r} not in {proc.stdout!r}"
    return cwd


def test_documented_example(documented_example):
    root = StoreRoot.open(documented_example / "demo")
    assert check_root(root) == []
    assert "git" in root.profile_programs()


def test_same_input_gives_byte_identical_tarballs(documented_example, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = documented_example / "demo.tar.gz"
    again = documented_example / "again.tar.gz"
    result = build_pack(PackOptions(python=str(documented_example / "demo-env"),
                                    programs=["git"], output=again))
    assert again.read_bytes() == first.read_bytes()
    assert result.size_bytes == again.stat().st_size
    again.unlink()


def test_tarball_is_normalized(documented_example):
    path = documented_example / "demo.tar.gz"
    raw = path.read_bytes()
    assert raw[3] & 0x08 == 0  # no file name in the gzip header
    assert raw[4:8] == b"\0\0\0\0"  # no time either
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == ".nbsandbox" and "bin" in names
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert {m.mtime for m in members} == {1}
    assert not any(m.ischr() or m.isblk() or m.isfifo() for m in members)
    # The only hard links: the wrappers of bin/, to the pack's launcher.
    links = [m for m in members if m.islnk()]
    assert links and all(m.name.startswith("bin/") and m.linkname == ".nbsandbox/nbs-launch"
                         for m in links)
    for m in members:
        expected = {0o755, 0o777} if (m.isdir() or m.issym()) else {0o755, 0o644}
        assert m.mode in expected, (m.name, oct(m.mode))
    # Directories come before their content, siblings in name order.
    assert names == sorted(names, key=lambda n: n.split("/"))


# -- another Python, another prefix -------------------------------------------------------


@pytest.fixture(scope="module")
def nix_pack(tmp_path_factory) -> StoreRoot:
    """A venv of a non-Debian CPython (if there is one here) with a module and a console
    script, plus git, packed for /nix/store and unpacked."""
    base_python = str(OTHER_PYTHONS[-1]) if OTHER_PYTHONS else shutil.which("python3")
    if base_python is None or GIT is None:
        pytest.skip("needs python3 and git")
    work = Path(unpriv.world_tmpdir(str(tmp_path_factory.mktemp("nix-pack"))))
    env = work / "env"
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(env.glob("lib/python3.*/site-packages"))
    (site / "nbs_probe.py").write_text("def main():\n    print('probe', __file__)\n")
    script = env / "bin" / "nbs-probe"
    script.write_text(f"#!{env}/bin/python\nimport nbs_probe\nnbs_probe.main()\n")
    script.chmod(0o755)
    result = build_pack(PackOptions(python=str(env), programs=[GIT], prefix="/nix/store",
                                    output=work / "pack.tar.gz"))
    root = unpack(result.path, work / "root")
    root.base_python = base_python  # type: ignore[attr-defined]
    return root


def test_nix_prefix_layout(nix_pack):
    assert nix_pack.prefix == "/nix/store"
    assert (nix_pack.path / "nix" / "store").is_dir()
    assert not (nix_pack.path / "gnu").exists()
    assert all(ITEM_RE.match(name) for name in nix_pack.items())
    assert check_root(nix_pack) == []


@needs_proot
def test_nix_prefix_pack_runs_python_script_and_git(nix_pack):
    bin_dir = nix_pack.profile_bin()
    proc = run_in_proot(nix_pack, f"{bin_dir}/python3", "-c",
                        "import sys, ssl, sqlite3, ctypes; print(sys.prefix); print(sys.path)")
    prefix, path = proc.stdout.splitlines()
    assert prefix == item(nix_pack, "python-")
    assert all(p == "" or p.startswith("/nix/store/") for p in eval(path))
    probe = run_in_proot(nix_pack, f"{bin_dir}/nbs-probe")
    assert probe.stdout.startswith(f"probe {prefix}/lib/python3")
    assert "site-packages/nbs_probe.py" in probe.stdout or "dist-packages" in probe.stdout
    git = run_in_proot(nix_pack, f"{bin_dir}/git", "--version")
    assert git.stdout.startswith("git version")


@pytest.mark.skipif(not OTHER_PYTHONS, reason="no non-Debian CPython (pyenv) here")
def test_upstream_cpython_keeps_its_site_packages_layout(nix_pack):
    python = nix_pack.to_host(item(nix_pack, "python-"))
    assert list(python.glob("lib/python3.*/site-packages/nbs_probe.py"))
    # A shared-libpython build brings its libpython into the python item.
    if list(Path(nix_pack.base_python).parent.parent.glob("lib/libpython3*.so.1.0")):
        assert list(python.glob("lib/libpython3*.so.1.0"))


# -- options, errors, interrupts --------------------------------------------------------


def test_nix_base32():
    assert len(nix_base32(bytes(20))) == 32 and set(nix_base32(b"\xff" * 20)) <= set(NIX_BASE32)
    assert nix_base32(bytes(20)) == "0" * 32
    assert nix_base32(b"\0" * 19 + b"\x01") == "0" * 31 + "1"


@pytest.mark.parametrize("output", ["x.tar.xz", "x.tgz", "x.zip"])
def test_unsupported_output_names_are_usage_errors(tmp_path, output):
    with pytest.raises(UsageError):
        build_pack(PackOptions(output=tmp_path / output))


def test_non_empty_output_directory_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(UsageError) as err:
        build_pack(PackOptions(output=tmp_path / "out"))
    assert "not an empty directory" in str(err.value)
    assert (tmp_path / "out" / "keep").read_text() == "mine"


@pytest.mark.parametrize("prefix", ["relative/store", "/", "/gnu/../store", "/gnu store"])
def test_bad_prefixes_are_usage_errors(tmp_path, prefix):
    with pytest.raises(UsageError):
        build_pack(PackOptions(prefix=prefix, output=tmp_path / "x.tar.gz"))


def test_missing_program_is_a_one_line_error_and_leaves_nothing(tmp_path):
    with pytest.raises(PackError) as err:
        build_pack(PackOptions(with_python=False, programs=[str(tmp_path / "nope")],
                               output=tmp_path / "x.tar.gz"))
    assert "\n" not in str(err.value)
    assert os.listdir(tmp_path) == []


def test_program_of_another_architecture_is_refused(tmp_path):
    from test_elf import elf_header

    tool = tmp_path / "arm64-tool"
    tool.write_bytes(elf_header(machine=183, elf_class=64))
    tool.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ElfError) as err:
        build_pack(PackOptions(with_python=False, programs=[str(tool)], output=out / "x.tar.gz"))
    assert "aarch64" in str(err.value) and "\n" not in str(err.value)
    assert os.listdir(out) == []


@pytest.mark.skipif(GIT is None, reason="needs git")
@pytest.mark.parametrize("phase", ["stage", "relocate"])
@pytest.mark.parametrize("suffix", [".tar.gz", ""])
def test_interrupt_leaves_nothing_half_written(tmp_path, phase, suffix):
    """Ctrl-C after a phase leaves neither the output nor temporary files."""

    def progress(line: str) -> None:
        if line.startswith(phase):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_pack(PackOptions(with_python=False, programs=[GIT],
                               output=tmp_path / f"out{suffix}", progress=progress))
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(GIT is None, reason="needs git")
def test_interrupt_while_writing_the_tarball_keeps_the_old_one(tmp_path, monkeypatch):
    from nbsandbox.pack import archive

    out = tmp_path / "out.tar.gz"
    out.write_bytes(b"previous pack")
    real = archive.write_tarball

    def interrupted(root, dest, mtime=None):
        real(root, dest, mtime)
        assert dest.exists() and dest != out
        raise KeyboardInterrupt

    monkeypatch.setattr(archive, "write_tarball", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_pack(PackOptions(with_python=False, programs=[GIT], output=out))
    assert os.listdir(tmp_path) == ["out.tar.gz"]
    assert out.read_bytes() == b"previous pack"


@pytest.mark.skipif(GIT is None, reason="needs git")
def test_program_only_directory_pack(tmp_path):
    result = build_pack(PackOptions(with_python=False, programs=[GIT], output=tmp_path / "g"))
    root = StoreRoot.open(result.path)
    assert root.profile_programs() == ["git"]
    assert root.metadata.python is None
    assert root.metadata.programs == (f"{item(root, 'git')}/bin/git",)
    assert check_root(root) == []
    assert result.size_bytes == sum(f.stat().st_size for f in result.path.rglob("*")
                                    if f.is_file() and not f.is_symlink())
    assert sorted(os.listdir(tmp_path)) == ["g"]


def test_check_root_reports_references_outside(tmp_path):
    """A store with host references: each kind is reported, in one line each."""
    store = tmp_path / "gnu" / "store"
    tool = store / f"{'a' * 32}-tool"
    (tool / "bin").mkdir(parents=True)
    shutil.copyfile(os.path.realpath(sys.executable), tool / "bin" / "python")
    (tool / "bin" / "python").chmod(0o755)
    script = tool / "bin" / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    os.symlink("/etc/passwd", tool / "passwd")
    os.symlink("../../../../outside", tool / "escape")
    problems = check_root(StoreRoot.open(tmp_path))
    text = "\n".join(problems)
    assert "bin/python: ELF interpreter /" in text and "outside /gnu/store" in text
    assert "needs libc.so.6, found only on the host" in text
    assert "bin/script: #! interpreter /bin/sh is outside /gnu/store" in text
    assert "passwd: symlink to /etc/passwd, outside /gnu/store" in text
    assert "escape: symlink to ../../../../outside" in text
    assert all("\n" not in p for p in problems)


def test_cli_check_exits_1_and_lists_problems(tmp_path, capsys):
    from nbsandbox.cli import main

    tool = tmp_path / "gnu" / "store" / f"{'a' * 32}-tool"
    tool.mkdir(parents=True)
    os.symlink("/etc/passwd", tool / "passwd")
    assert main(["check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"/gnu/store/{'a' * 32}-tool/passwd: symlink to /etc/passwd, " \
                           "outside /gnu/store\n"
    assert f"incomplete: 1 problem in {tmp_path}" in captured.err
