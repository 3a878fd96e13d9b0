"""A corpus of malformed inputs, across the command line, the magics, kernel.json and packs.

Every case is a :class:`Case` in :data:`CASES` (one test per case, so the count is
visible in the test ids): an *action* that feeds nbsandbox one malformed input and
returns what the user sees, and a regular expression the message must match.  Each
case must end in

* a clear error: exactly one line, no traceback, matching the case's regex (which
  names the problem and, where there is one, what to do);
* a non-zero exit status, where there is one (command-line cases; exit 2 for bad
  usage);
* nothing written outside its target: the case's site directory (a pack's unpack
  destination's parent, roots, outputs), the kernelspec directories, the Jupyter
  runtime directory (connection files) and a private ``$TMPDIR`` (where nbsandbox's
  ``nbsandbox-*`` scratch goes) are snapshotted before and after and must not change
  (except for what the case says it may write); nor may the case's processes (found by
  an environment token) leave PRoot's ``/tmp/proot-PID-*`` or ``/tmp/prooted-PID-*``.

To add a case, write an action ``def _xxx(site: Site) -> Outcome`` and append a
``Case`` to :data:`CASES`.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.register_assert_rewrite("jupyter_fixtures")
pytest_plugins = ("jupyter_fixtures",)

H = "a" * 32
ITEM = f"{H}-tool-1.0"
PREFIX = "/gnu/store"
PATH_MAX = 4096
NAME_MAX = 255
CASE_TOKEN = "NBS_MALFORMED_CASE"


# -- the site a case works in ---------------------------------------------------------------


@dataclass
class Site:
    """Where a case may write: ``base`` (its own directory), with ``packs/`` for inputs and
    ``parent/`` as the parent of any destination; ``tmp`` is the ``$TMPDIR`` of the
    commands it runs."""

    base: Path
    tmp: Path
    jupyter: object = None
    shell: object = None
    #: Paths under ``base`` the case is allowed to create (e.g. a successful output).
    allowed: list[Path] = field(default_factory=list)
    #: Put in the environment of everything the case runs (to find its processes).
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def packs(self) -> Path:
        return self.base / "packs"

    @property
    def parent(self) -> Path:
        return self.base / "parent"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTEST_CURRENT_TEST", "NBSANDBOX_ROOT", "NBSANDBOX_ENGINE",
                            "NBSANDBOX_ADMIN_CONFIG")}
        env["TMPDIR"] = str(self.tmp)
        env[CASE_TOKEN] = self.token
        return env


@dataclass
class Outcome:
    """What the user saw: the message (stderr, or an exception's text) and the exit status
    (``None`` where there is none, e.g. an exception in a notebook)."""

    message: str
    exit_code: int | None = None
    stdout: str = ""


@dataclass
class Case:
    name: str
    action: Callable[[Site], Outcome]
    expect: str
    """Regex the one-line message must match (``re.search``)."""
    exit_code: int | None = None
    """Expected exit status, when a specific one is required (any non-zero otherwise)."""
    needs: tuple[str, ...] = ()
    """Fixtures the case needs: ``jupyter`` (private Jupyter dirs), ``shell`` (IPython)."""


def nbs(site: Site, *args: str, cwd: Path | None = None) -> Outcome:
    """``python -m nbsandbox ARGS`` with the site's ``$TMPDIR``."""
    proc = subprocess.run([sys.executable, "-m", "nbsandbox", *args], capture_output=True,
                          env=site.env(), cwd=cwd or site.base, timeout=120)
    return Outcome(proc.stderr.decode("utf-8", "replace"), proc.returncode,
                   proc.stdout.decode("utf-8", "replace"))


# -- inputs: tarballs, ELF files, roots -------------------------------------------------------


def tar_entry(name: str | bytes, kind: str = "file", data: bytes = b"", *, target: str = "",
              mode: int | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(os.fsdecode(name))
    info.mtime = 1
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                 "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    if kind in ("sym", "hard"):
        info.linkname = target
    info.size = len(data) if kind == "file" else 0
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    return info, data


def store_entries() -> list[tuple[tarfile.TarInfo, bytes]]:
    """A valid little store: one item with one script, a profile ``bin`` link."""
    return [
        tar_entry("gnu/store", "dir"),
        tar_entry(f"gnu/store/{ITEM}/bin", "dir"),
        tar_entry(f"gnu/store/{ITEM}/bin/tool", data=b"#!/gnu/store/x/bin/sh\n", mode=0o755),
        tar_entry("bin", "sym", target=f"gnu/store/{ITEM}/bin"),
    ]


def write_tar(path: Path, entries, mode: str = "w:gz", fmt: int = tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, mode, format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def elf_header(machine: int = 62, *, elf_class: int = 2, phnum: int = 0,
               phoff: int = 0) -> bytes:
    """A bare ELF header (no segments): e_machine 62 is x86_64, 183 aarch64."""
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x400000, phoff, 0, 0, 64,
                               56, phnum, 64, 0, 0)


def make_root(top: Path, programs: dict[str | bytes, bytes] | None = None, *,
              mode: int = 0o755, profile: bool = True) -> Path:
    """A hand-made store root ``top`` with ``programs`` in one item's ``bin/``."""
    item = top / "gnu" / "store" / ITEM / "bin"
    item.mkdir(parents=True)
    for name, data in (programs or {}).items():
        path = os.path.join(os.fsencode(item), os.fsencode(name))
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
    if profile:
        os.symlink(f"gnu/store/{ITEM}/bin", top / "bin")
    return top


def run_in(site: Site, root: Path, program: str, *options: str) -> Outcome:
    return nbs(site, "run", "--root", str(root), *options, "--", program)


# -- command line: unpack ---------------------------------------------------------------------


def _unpack(site: Site, entries, mode: str = "w:gz") -> Outcome:
    pack = write_tar(site.packs / "p.tar.gz", entries, mode)
    return nbs(site, "unpack", str(pack), str(site.parent / "root"))


def unpack_traversal(site: Site) -> Outcome:
    return _unpack(site, [*store_entries(), tar_entry("gnu/../../escaped", data=b"x")])


def unpack_absolute(site: Site) -> Outcome:
    return _unpack(site, [*store_entries(), tar_entry(str(site.base / "escaped"), data=b"x")])


def unpack_symlink_escape_absolute(site: Site) -> Outcome:
    # a link to a host directory, then a file "through" it
    return _unpack(site, [*store_entries(), tar_entry("gnu/out", "sym", target=str(site.base)),
                          tar_entry("gnu/out/escaped", data=b"x")])


def unpack_symlink_escape_relative(site: Site) -> Outcome:
    return _unpack(site, [*store_entries(), tar_entry("up", "sym", target="../.."),
                          tar_entry("up/escaped", data=b"x")])


def unpack_symlink_then_directory(site: Site) -> Outcome:
    # a directory entry through an escaping link: must not be created on the host
    return _unpack(site, [tar_entry("gnu", "sym", target=str(site.base)),
                          tar_entry("gnu/store", "dir")])


def unpack_store_is_a_symlink(site: Site) -> Outcome:
    """``gnu/store -> a host directory``: making the store read-only must not chmod it."""
    victim = site.packs / "victim"
    (victim / "dir").mkdir(parents=True)
    (victim / "file").write_text("x")
    modes = {p: p.stat().st_mode for p in (victim, victim / "dir", victim / "file")}
    out = _unpack(site, [tar_entry("gnu", "dir"), tar_entry("gnu/store", "sym",
                                                            target=str(victim))])
    assert {p: p.stat().st_mode for p in modes} == modes, "modes outside DEST changed"
    return out


def unpack_hardlink_outside(site: Site) -> Outcome:
    return _unpack(site, [*store_entries(), tar_entry("passwd", "hard", target="/etc/passwd")])


def unpack_hardlink_dotdot(site: Site) -> Outcome:
    return _unpack(site, [*store_entries(), tar_entry("x", "hard", target="../packs/p.tar.gz")])


def unpack_device(site: Site) -> Outcome:
    return _unpack(site, [*store_entries(), tar_entry("gnu/null", "chr")])


def unpack_fifo(site: Site) -> Outcome:
    return _unpack(site, [*store_entries(), tar_entry("gnu/pipe", "fifo")])


def unpack_truncated(site: Site) -> Outcome:
    big = tar_entry(f"gnu/store/{ITEM}/data", data=os.urandom(200_000))
    pack = write_tar(site.packs / "full.tar.gz", [*store_entries(), big])
    cut = site.packs / "p.tar.gz"
    cut.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    return nbs(site, "unpack", str(cut), str(site.parent / "root"))


def unpack_garbage(site: Site) -> Outcome:
    pack = site.packs / "p.tar.gz"
    pack.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 8)
    return nbs(site, "unpack", str(pack), str(site.parent / "root"))


def unpack_empty_file(site: Site) -> Outcome:
    pack = site.packs / "p.tar"
    pack.write_bytes(b"")
    return nbs(site, "unpack", str(pack), str(site.parent / "root"))


def unpack_no_store(site: Site) -> Outcome:
    return _unpack(site, [tar_entry("README", data=b"not a pack\n")])


def unpack_empty_store(site: Site) -> Outcome:
    return _unpack(site, [tar_entry("gnu/store", "dir")])


def unpack_dangling_profile(site: Site) -> Outcome:
    return _unpack(site, [*store_entries()[:1],
                          tar_entry("bin", "sym", target=f"gnu/store/{H}-gone/bin"),
                          tar_entry(f"gnu/store/{'b' * 32}-other", "dir")])


def unpack_name_too_long(site: Site) -> Outcome:
    long_name = "n" * (NAME_MAX + 1)
    return _unpack(site, [*store_entries(), tar_entry(f"gnu/store/{ITEM}/{long_name}",
                                                      data=b"x")], "w")


def unpack_path_too_long(site: Site) -> Outcome:
    deep = "/".join(["d" * 200] * (PATH_MAX // 200 + 2))
    return _unpack(site, [*store_entries(), tar_entry(f"gnu/store/{ITEM}/{deep}/f",
                                                      data=b"x")], "w")


def unpack_dest_not_empty(site: Site) -> Outcome:
    pack = write_tar(site.packs / "p.tar.gz", store_entries())
    (site.parent / "root").mkdir()
    (site.parent / "root" / "precious").write_text("keep")
    site.allowed.append(site.parent / "root")  # made by the case; must stay as it was
    return nbs(site, "unpack", str(pack), str(site.parent / "root"))


def unpack_dest_parent_missing(site: Site) -> Outcome:
    pack = write_tar(site.packs / "p.tar.gz", store_entries())
    return nbs(site, "unpack", str(pack), str(site.parent / "no" / "such" / "root"))


def unpack_non_utf8_names(site: Site) -> Outcome:
    """Not an error: a non-UTF-8 name is extracted byte for byte, inside DEST only."""
    name = os.fsdecode(f"gnu/store/{ITEM}/caf".encode() + b"\xe9")
    out = _unpack(site, [*store_entries(), tar_entry(name, data=b"x")], "w")
    dest = site.parent / "root"
    site.allowed.append(dest)
    if out.exit_code == 0:
        found = os.listdir(os.fsencode(dest / "gnu" / "store" / ITEM))
        assert b"caf\xe9" in found, found
        return Outcome("extracted caf\\xe9 byte for byte", 1)  # a pass for this case
    return out


# -- command line: run ------------------------------------------------------------------------


def run_missing_root(site: Site) -> Outcome:
    return run_in(site, site.base / "nowhere", "tool")


def run_root_is_a_file(site: Site) -> Outcome:
    (site.base / "file").write_text("x")
    return run_in(site, site.base / "file", "tool")


def run_empty_root(site: Site) -> Outcome:
    (site.base / "root").mkdir()
    return run_in(site, site.base / "root", "tool")


def run_empty_store(site: Site) -> Outcome:
    (site.base / "root" / "gnu" / "store").mkdir(parents=True)
    return run_in(site, site.base / "root", "tool")


def run_dangling_profile(site: Site) -> Outcome:
    root = make_root(site.base / "root", profile=False)
    os.symlink(f"gnu/store/{'b' * 32}-gone/bin", root / "bin")
    return run_in(site, root, "tool")


def run_aarch64_program(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": elf_header(183)})
    return run_in(site, root, "tool")


def run_truncated_elf(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": Path("/bin/true").read_bytes()[:40]})
    return run_in(site, root, "tool")


def run_elf_headers_beyond_end(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": elf_header(62, phnum=9, phoff=4096)})
    return run_in(site, root, "tool")


def run_not_a_program(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"just some text\n"})
    return run_in(site, root, "tool")


def run_missing_interpreter(site: Site) -> Outcome:
    root = make_root(site.base / "root",
                     {"tool": f"#!{PREFIX}/{'c' * 32}-bash-5/bin/sh\necho hi\n".encode()})
    return run_in(site, root, "tool")


def run_interpreter_loop(site: Site) -> Outcome:
    root = make_root(site.base / "root",
                     {"tool": f"#!{PREFIX}/{ITEM}/bin/tool\n".encode()})
    return run_in(site, root, "tool")


def run_unknown_engine(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return run_in(site, root, "tool", "--engine", "chroot")


def run_no_keep_cwd_without_isolate_home(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return run_in(site, root, "tool", "--no-keep-cwd")


def run_no_root(site: Site) -> Outcome:
    return nbs(site, "run", "tool")


def run_program_outside_store(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return run_in(site, root, "/bin/sh")


def run_program_with_dotdot(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return run_in(site, root, "../../bin/sh")


def run_missing_program(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return run_in(site, root, "nosuch")


def run_root_path_too_long(site: Site) -> Outcome:
    long_root = site.base / "/".join(["r" * 250] * (PATH_MAX // 250 + 1))
    return run_in(site, long_root, "tool")


def run_program_name_too_long(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return run_in(site, root, "p" * (NAME_MAX + 1))


def run_store_path_too_long(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return run_in(site, root, f"{PREFIX}/{ITEM}/" + "/".join(["q" * 200] * 22))


def run_non_utf8_program_name(site: Site) -> Outcome:
    """A non-UTF-8 program (a foreign ELF, so it is refused after being found by name)."""
    root = make_root(site.base / "root", {b"t\xe9l\xe9": elf_header(183)})
    return nbs(site, "run", "--root", str(root), "--", os.fsdecode(b"t\xe9l\xe9"))


def run_non_utf8_root_path(site: Site) -> Outcome:
    top = os.path.join(os.fsencode(site.base), b"r\xf6\xf6t")
    root = make_root(Path(os.fsdecode(top)), {"tool": elf_header(183)})
    return run_in(site, root, "tool")


def run_bad_prefix(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return nbs(site, "run", "--root", str(root), "--prefix", "gnu/../store", "tool")


def run_corrupt_pack_metadata(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    (root / ".nbsandbox").mkdir()
    (root / ".nbsandbox" / "pack.json").write_text('{"format": 1, "prefix": ')
    return run_in(site, root, "tool")


def run_unknown_option(site: Site) -> Outcome:
    return nbs(site, "run", "--frobnicate", "--root", str(site.base), "tool")


# -- command line: pack, check, kernel ----------------------------------------------------------


def pack_strips_setuid(site: Site) -> Outcome:
    """Not an error: the packed copy of a setuid program has no setuid bit."""
    prog = site.base / "suid-tool"
    shutil.copy("/bin/true", prog)
    os.chmod(prog, 0o6755)
    out = site.parent / "packed"
    site.allowed.append(out)
    result = nbs(site, "pack", "--no-python", "--program", str(prog), "-o", str(out))
    assert result.exit_code == 0, result.message
    modes = [os.lstat(os.path.join(d, f)).st_mode for d, _, fs in os.walk(out) for f in fs]
    assert modes and not any(m & (stat.S_ISUID | stat.S_ISGID) for m in modes
                             if stat.S_ISREG(m))
    unpacked = nbs(site, "run", "--root", str(out), "--dry-run", "suid-tool")
    assert unpacked.exit_code == 0, unpacked.message
    return Outcome("packed suid-tool without its setuid bit", 1)


def pack_missing_program(site: Site) -> Outcome:
    return nbs(site, "pack", "--no-python", "--program", str(site.base / "nosuch"),
               "-o", str(site.parent / "out"))


def pack_python_and_no_python(site: Site) -> Outcome:
    return nbs(site, "pack", "--no-python", "--python", sys.executable,
               "-o", str(site.parent / "out"))


def check_half_unpacked(site: Site) -> Outcome:
    root = make_root(site.base / "root", profile=False)
    shutil.rmtree(root / "gnu" / "store" / ITEM)
    return nbs(site, "check", str(root))


def kernel_install_user_and_sys_prefix(site: Site) -> Outcome:
    return nbs(site, "kernel", "install", str(site.base), "--user", "--sys-prefix")


def kernel_install_without_ipykernel(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"python3": elf_header(62)})
    return nbs(site, "kernel", "install", str(root), "--name", "broken")


def kernel_install_bad_name(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"python3": elf_header(62)})
    return nbs(site, "kernel", "install", str(root), "--name", "a b/../c")


def kernel_launch_without_command(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return nbs(site, "kernel", "launch", "--root", str(root))


def kernel_launch_bad_env(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"tool": b"#!/bin/sh\n"})
    return nbs(site, "kernel", "launch", "--root", str(root), "--env", "NOVALUE", "--",
               "tool")


# -- kernel.json through jupyter_client's KernelManager ------------------------------------------


def _kernel(site: Site, config: dict, name: str = "malformed") -> Outcome:
    from jupyter_client.manager import KernelManager

    root = make_root(site.base / "root", {"python3": elf_header(62)})
    spec = {
        "argv": [f"{PREFIX}/{ITEM}/bin/python3", "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": "malformed", "language": "python",
        "metadata": {"kernel_provisioner": {"provisioner_name": "nbsandbox-provisioner",
                                            "config": {"root": str(root), **config}}},
    }
    site.jupyter.write_spec(name, spec)  # type: ignore[attr-defined]
    km = KernelManager(kernel_name=name)
    try:
        km.start_kernel()
    except Exception as exc:
        return Outcome(f"{type(exc).__name__}: {exc}")
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        shutil.rmtree(site.jupyter.kernels / name)  # type: ignore[attr-defined]
    return Outcome("the kernel started", 0)


def kernel_json_isolate_home_string(site: Site) -> Outcome:
    return _kernel(site, {"isolate_home": "yes"})


def kernel_json_engine_number(site: Site) -> Outcome:
    return _kernel(site, {"engine": 3})


def kernel_json_env_list(site: Site) -> Outcome:
    return _kernel(site, {"env": ["A=B"]})


def kernel_json_root_number(site: Site) -> Outcome:
    return _kernel(site, {"root": 7})


def kernel_json_unknown_engine(site: Site) -> Outcome:
    return _kernel(site, {"engine": "chroot"})


def kernel_json_aarch64_python(site: Site) -> Outcome:
    from jupyter_client.manager import KernelManager

    root = make_root(site.base / "root", {"python3": elf_header(183)})
    spec = {"argv": [f"{PREFIX}/{ITEM}/bin/python3", "-f", "{connection_file}"],
            "display_name": "x", "language": "python",
            "metadata": {"kernel_provisioner": {"provisioner_name": "nbsandbox-provisioner",
                                                "config": {"root": str(root)}}}}
    site.jupyter.write_spec("aarch64", spec)  # type: ignore[attr-defined]
    try:
        KernelManager(kernel_name="aarch64").start_kernel()
    except Exception as exc:
        return Outcome(f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(site.jupyter.kernels / "aarch64")  # type: ignore[attr-defined]
    return Outcome("the kernel started", 0)


# -- the magics in an IPython InteractiveShell ----------------------------------------------------


def _magic(site: Site, line: str, cell: str | None = "echo hi\n") -> Outcome:
    shell = site.shell
    try:
        if cell is None:
            shell.run_line_magic("sandbox", line)  # type: ignore[attr-defined]
        else:
            shell.run_cell_magic("sandbox", line, cell)  # type: ignore[attr-defined]
    except Exception as exc:
        return Outcome(f"{type(exc).__name__}: {exc}")
    return Outcome("the cell ran", 0)


def magic_unknown_flag(site: Site) -> Outcome:
    return _magic(site, "--frobnicate")


def magic_unknown_engine(site: Site) -> Outcome:
    return _magic(site, "chroot")


def magic_bad_timeout(site: Site) -> Outcome:
    return _magic(site, "--timeout soon")


def magic_negative_timeout(site: Site) -> Outcome:
    return _magic(site, "--timeout -1")


def magic_proc_without_bg(site: Site) -> Outcome:
    return _magic(site, "--proc p")


def magic_bad_env(site: Site) -> Outcome:
    return _magic(site, "--env NOVALUE")


def magic_line_python(site: Site) -> Outcome:
    return _magic(site, "--python python3", cell=None)


def magic_line_no_program(site: Site) -> Outcome:
    return _magic(site, "--isolate-home", cell=None)


def magic_missing_root(site: Site) -> Outcome:
    return _magic(site, f"--root {site.base / 'nowhere'}")


def magic_unknown_named_root(site: Site) -> Outcome:
    return _magic(site, "--root py311")


def magic_aarch64_shell(site: Site) -> Outcome:
    root = make_root(site.base / "root", {"sh": elf_header(183)})
    return _magic(site, f"--root {root}")


# -- the corpus ---------------------------------------------------------------------------------

U = 2  # exit status of bad usage
J = ("jupyter",)
S = ("shell",)
CASES = [
    # packs: unsafe and damaged tarballs
    Case("unpack-traversal", unpack_traversal, r"refusing to unpack .*'\.\.' component", 1),
    Case("unpack-absolute-name", unpack_absolute, r"refusing to unpack .*absolute path"),
    Case("unpack-symlink-escape-abs", unpack_symlink_escape_absolute,
         r"refusing to unpack .*goes through the symlink 'gnu/out'"),
    Case("unpack-symlink-escape-rel", unpack_symlink_escape_relative,
         r"refusing to unpack .*goes through the symlink 'up'"),
    Case("unpack-symlink-then-dir", unpack_symlink_then_directory,
         r"refusing to unpack .*goes through the symlink 'gnu'"),
    Case("unpack-store-is-a-symlink", unpack_store_is_a_symlink,
         r"refusing to unpack .*store directory goes through the symlink 'gnu/store'"),
    Case("unpack-hardlink-outside", unpack_hardlink_outside,
         r"hard link to '/etc/passwd', outside the destination"),
    Case("unpack-hardlink-dotdot", unpack_hardlink_dotdot, r"hard link to .*outside"),
    Case("unpack-device", unpack_device, r"is a device file; the archive is unsafe"),
    Case("unpack-fifo", unpack_fifo, r"is a fifo; the archive is unsafe"),
    Case("unpack-truncated", unpack_truncated, r"cannot unpack .*[Dd]ownload or build it again"),
    Case("unpack-garbage", unpack_garbage, r"(damaged|cannot unpack).*(again)"),
    Case("unpack-empty-file", unpack_empty_file, r"(damaged|cannot unpack|not a usable).*"),
    Case("unpack-no-store", unpack_no_store, r"not a usable pack: no store found"),
    Case("unpack-empty-store", unpack_empty_store, r"not a usable pack: the store .* is empty"),
    Case("unpack-dangling-profile", unpack_dangling_profile,
         r"not a usable pack: profile link .* is missing .* unpack it again"),
    Case("unpack-name-too-long", unpack_name_too_long,
         r"File name too long; a name or path in the archive is longer than this system"),
    Case("unpack-path-too-long", unpack_path_too_long,
         r"File name too long; a name or path in the archive is longer than this system"),
    Case("unpack-dest-not-empty", unpack_dest_not_empty, r"is not empty; give a new or empty"),
    Case("unpack-dest-parent-missing", unpack_dest_parent_missing,
         r"the parent of .* does not exist; create"),
    Case("unpack-non-utf8-names", unpack_non_utf8_names, r"extracted caf\\xe9 byte for byte"),
    # store roots: empty, half-unpacked, foreign or broken programs
    Case("run-missing-root", run_missing_root, r"store root .* does not exist; unpack"),
    Case("run-root-is-a-file", run_root_is_a_file, r"is not a directory"),
    Case("run-empty-root", run_empty_root, r"no store found under .*pass the store's prefix"),
    Case("run-empty-store", run_empty_store, r"the store .* is empty; the pack was not"),
    Case("run-dangling-profile", run_dangling_profile,
         r"profile link .* missing from the store; .*unpack it again"),
    Case("run-aarch64-elf", run_aarch64_program,
         r"built for aarch64, but this host is \w+; use a pack built for this machine"),
    Case("run-truncated-elf", run_truncated_elf, r"truncated ELF file"),
    Case("run-elf-headers-beyond-end", run_elf_headers_beyond_end,
         r"truncated ELF file: its program header table"),
    Case("run-not-a-program", run_not_a_program, r"is not an ELF file"),
    Case("run-missing-interpreter", run_missing_interpreter,
         r"interpreter /gnu/store/c+-bash-5/bin/sh does not exist"),
    Case("run-interpreter-loop", run_interpreter_loop, r"too many levels of script interp"),
    Case("run-unknown-engine", run_unknown_engine, r"unknown engine 'chroot'; valid", U),
    Case("run-no-keep-cwd-alone", run_no_keep_cwd_without_isolate_home,
         r"--no-keep-cwd only makes sense with --isolate-home", U),
    Case("run-no-root", run_no_root, r"no store root given: pass --root", U),
    Case("run-program-outside-store", run_program_outside_store,
         r"not under the store prefix /gnu/store; give a store path"),
    Case("run-program-dotdot", run_program_with_dotdot, r"must be a store path or a bare name"),
    Case("run-missing-program", run_missing_program, r"no program 'nosuch' in .*available"),
    Case("run-root-path-too-long", run_root_path_too_long, r"(too long|does not exist)"),
    Case("run-program-name-too-long", run_program_name_too_long, r"(too long|no program)"),
    Case("run-store-path-too-long", run_store_path_too_long, r"(too long|does not exist)"),
    Case("run-non-utf8-program-name", run_non_utf8_program_name, r"built for aarch64"),
    Case("run-non-utf8-root-path", run_non_utf8_root_path, r"built for aarch64"),
    Case("run-bad-prefix", run_bad_prefix, r"prefix"),
    Case("run-corrupt-pack-json", run_corrupt_pack_metadata, r"pack\.json"),
    Case("run-unknown-option", run_unknown_option, r"unrecognized arguments.*--help", U),
    # pack, check, kernel commands
    Case("pack-strips-setuid", pack_strips_setuid, r"without its setuid bit"),
    Case("pack-missing-program", pack_missing_program, r"nosuch"),
    Case("pack-python-and-no-python", pack_python_and_no_python, r"contradict", U),
    Case("check-half-unpacked", check_half_unpacked, r"the store .* is empty"),
    Case("kernel-install-user-and-sys-prefix", kernel_install_user_and_sys_prefix,
         r"not allowed with argument --user", U),
    Case("kernel-install-no-ipykernel", kernel_install_without_ipykernel,
         r"has no ipykernel .*pack a Python environment that has it"),
    Case("kernel-install-bad-name", kernel_install_bad_name,
         r"kernel name .* may only contain", U),
    Case("kernel-launch-no-command", kernel_launch_without_command,
         r"no kernel command given", U),
    Case("kernel-launch-bad-env", kernel_launch_bad_env, r"--env 'NOVALUE' is malformed", U),
    # kernel.json through KernelManager and the nbsandbox provisioner
    Case("kernel-json-isolate-home-str", kernel_json_isolate_home_string,
         r"kernel.json .*bad value for isolate_home: .*expected a boolean, not the str 'yes'",
         needs=J),
    Case("kernel-json-engine-int", kernel_json_engine_number,
         r"kernel.json .*bad value for engine: .*expected a unicode string, not the int 3",
         needs=J),
    Case("kernel-json-env-list", kernel_json_env_list,
         r"kernel.json .*bad value for env: .*expected a dict", needs=J),
    Case("kernel-json-root-int", kernel_json_root_number,
         r"kernel.json .*bad value for root: expected a string", needs=J),
    Case("kernel-json-unknown-engine", kernel_json_unknown_engine,
         r"unknown engine 'chroot'; valid", needs=J),
    Case("kernel-json-aarch64-python", kernel_json_aarch64_python,
         r"cannot start kernel 'aarch64': .*built for aarch64", needs=J),
    # %%sandbox / %sandbox in an InteractiveShell
    Case("magic-unknown-flag", magic_unknown_flag,
         r"UsageError: unrecognized arguments: --frobnicate; %sandbox \[--root ROOT\]", needs=S),
    Case("magic-unknown-engine", magic_unknown_engine,
         r"UsageError: unknown engine 'chroot'; valid", needs=S),
    Case("magic-bad-timeout", magic_bad_timeout,
         r"UsageError: .*--timeout.*invalid float value: 'soon'; %sandbox \[--root", needs=S),
    Case("magic-negative-timeout", magic_negative_timeout,
         r"UsageError: --timeout must be a positive number", needs=S),
    Case("magic-proc-without-bg", magic_proc_without_bg,
         r"UsageError: --proc only applies to background runs", needs=S),
    Case("magic-bad-env", magic_bad_env, r"UsageError: --env 'NOVALUE' is malformed", needs=S),
    Case("magic-line-python", magic_line_python,
         r"UsageError: --python applies to %%sandbox cells", needs=S),
    Case("magic-line-no-program", magic_line_no_program, r"UsageError: no program given",
         needs=S),
    Case("magic-missing-root", magic_missing_root, r"UsageError: store root .* does not exist",
         needs=S),
    Case("magic-unknown-named-root", magic_unknown_named_root,
         r"UsageError: unknown root 'py311': named roots are", needs=S),
    Case("magic-aarch64-shell", magic_aarch64_shell, r"UsageError: .*built for aarch64",
         needs=S),
]


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


# -- running one case ---------------------------------------------------------------------------


def _tree(path: Path) -> dict[bytes, tuple[int, int, bytes]]:
    """Everything under ``path``: relative name -> (mode, size, link target)."""
    out: dict[bytes, tuple[int, int, bytes]] = {}
    top = os.fsencode(path)
    if not os.path.lexists(top):
        return out
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else b""
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_size, link)
    return out


def _tmp_entries() -> set[str]:
    """PRoot's entries in /tmp (``proot-PID-*``, ``prooted-PID-*``: PRoot puts its loader
    there whatever the temporary directory is).  nbsandbox's own ``nbsandbox-*`` go to
    ``$TMPDIR``, which is the site's and checked exactly."""
    return {n for n in os.listdir("/tmp") if n.startswith(("proot-", "prooted-"))}


def _case_pids(token: str) -> set[int]:
    """PIDs of the live processes that carry the case's token in their environment."""
    needle = f"{CASE_TOKEN}={token}".encode()
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read():
                        pids.add(int(entry))
            except OSError:
                continue
    return pids


class _PidWatcher:
    """Samples the case's PIDs while it runs, to tell its PRoot files in /tmp from those
    of other programs running on the machine meanwhile."""

    def __init__(self, token: str) -> None:
        self.token, self.seen = token, {os.getpid()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.seen |= _case_pids(self.token)
            if self._stop.wait(0.05):
                return

    def stop(self) -> set[int]:
        self._stop.set()
        self._thread.join()
        return self.seen


def _pid_of(entry: str) -> int | None:
    parts = entry.split("-")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None


def _watched(site: Site) -> dict[str, Path]:
    from jupyter_client.kernelspec import KernelSpecManager

    dirs = {"site": site.base, "tmpdir": site.tmp}
    for i, d in enumerate(KernelSpecManager().kernel_dirs):
        dirs[f"kernels{i}"] = Path(d)
    if site.jupyter is not None:
        dirs["runtime"] = site.jupyter.runtime  # type: ignore[attr-defined]
        dirs["kernels"] = site.jupyter.kernels  # type: ignore[attr-defined]
    return dirs


def _snapshot(site: Site) -> dict[str, object]:
    snap: dict[str, object] = {name: _tree(d) for name, d in _watched(site).items()}
    snap["/tmp"] = _tmp_entries()
    return snap


def _allowed_changes(site: Site, before: dict[str, object], after: dict[str, object],
                     pids: set[int]) -> dict:
    allowed = [os.fsencode(p.relative_to(site.base)) for p in site.allowed]
    diff = {}
    for key in before:
        b, a = before[key], after[key]
        if key == "site":
            b, a = ({k: v for k, v in t.items()  # type: ignore[union-attr]
                     if not any(k == p or k.startswith(p + b"/") for p in allowed)}
                    for t in (b, a))
        if b != a:
            if isinstance(b, dict):
                diff[key] = sorted({*b} ^ {*a} | {k for k in b if k in a and b[k] != a[k]})
            else:
                # new PRoot files of the case's processes (a janitor of an earlier test may
                # remove its own meanwhile; other programs may add theirs)
                new = [e for e in a - b if _pid_of(e) in pids]  # type: ignore[operator]
                if new:
                    diff[key] = sorted(new)
    return diff


@pytest.fixture
def site(tmp_path: Path) -> Site:
    base = tmp_path / "site"
    for d in ("packs", "parent"):
        (base / d).mkdir(parents=True)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return Site(base, tmp)


@pytest.fixture
def shell(monkeypatch, tmp_path):
    """An InteractiveShell with the extension loaded (no default root, no admin policy)."""
    import ipython_shell

    monkeypatch.setattr("nbsandbox.policy.layers.system_config_dirs",
                        lambda: [str(tmp_path / "etc")])
    for name in ("NBSANDBOX_ROOT", "NBSANDBOX_ENGINE", "NBSANDBOX_ADMIN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    ip = ipython_shell.shell()
    ip.run_line_magic("load_ext", "nbsandbox")
    yield ip
    ip.run_line_magic("unload_ext", "nbsandbox")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_is_refused_cleanly(case: Case, site: Site, request,
                                            monkeypatch) -> None:
    if "jupyter" in case.needs:
        site.jupyter = request.getfixturevalue("jupyter_dirs")
    if "shell" in case.needs:
        site.shell = request.getfixturevalue("shell")
    # in-process cases: temporary files of the process go to the site's $TMPDIR too
    monkeypatch.setenv("TMPDIR", str(site.tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(site.tmp))
    monkeypatch.setenv(CASE_TOKEN, site.token)
    before = _snapshot(site)
    watcher = _PidWatcher(site.token)
    try:
        outcome = case.action(site)
    finally:
        pids = watcher.stop()
    after = _snapshot(site)

    message = outcome.message.rstrip("\n")
    assert "Traceback" not in message, message
    assert "\n" not in message, f"not one line:\n{message}"
    assert re.search(case.expect, message), f"{message!r} does not match {case.expect!r}"
    if outcome.exit_code is not None:
        assert outcome.exit_code != 0, f"exit status 0: {message}"
        if case.exit_code is not None:
            assert outcome.exit_code == case.exit_code, message
        if message.startswith("nbsandbox:"):
            assert message.startswith("nbsandbox: error: "), message

    # nothing outside the target: the inputs the action made are in packs/ and root*/,
    # which it may create; any other change (a destination, a temporary directory beside
    # it, a kernelspec, a connection file, a scratch directory) is a leak
    inputs = [p for p in site.base.iterdir() if p.name not in ("parent",)]
    site.allowed.extend(inputs)
    diff = _allowed_changes(site, before, after, pids)
    assert diff == {}, f"written outside the target: {diff}"
    assert os.listdir(site.parent) == [p.name for p in site.allowed
                                       if p.parent == site.parent], os.listdir(site.parent)


@pytest.fixture(autouse=True)
def _writable_cleanup(tmp_path: Path):
    """Unpacked stores are read-only; let pytest remove them."""
    yield
    subprocess.run(["chmod", "-R", "u+rwX", str(tmp_path)], check=False,
                   stderr=subprocess.DEVNULL)
