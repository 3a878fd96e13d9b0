"""The fakechroot engine with a real packed Python (the ``python_pack`` fixture).

The store's Python runs store scripts and store programs through
``subprocess`` (lists and ``shell=True``), re-runs ``sys.executable``,
imports C extensions and uses ctypes and iconv, and sees store paths in
``getcwd()``, ``/proc/self/exe`` and ``realpath``; host programs it starts
see none of the engine's variables.  All as an unprivileged user, also on a
host without user namespaces.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap

import pytest
import unpriv

from nbsandbox.engines.fakechroot import FakechrootEngine
from nbsandbox.plan import LaunchPlan
from nbsandbox.store import StoreRoot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine() -> FakechrootEngine:
    eng = FakechrootEngine()
    assert eng.probe().available, eng.probe().reason
    return eng


def run_python(engine: FakechrootEngine, root: StoreRoot, code: str, *, cwd: str = "/",
               no_userns: bool = False, name: str = "python3"):
    bin_dir = root.profile_bin()
    assert bin_dir
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    plan = LaunchPlan(root, f"{bin_dir}/{name}", [name, "-c", textwrap.dedent(code)], env,
                      cwd=cwd)
    cmd = engine.command(plan)
    return unpriv.run(cmd.argv, env=cmd.env, no_userns=no_userns, timeout=120)


CHECKS = r"""
import ctypes, ctypes.util, json, os, subprocess, sys
out = {}
out["executable"] = sys.executable
out["exe"] = os.readlink("/proc/self/exe")
out["realpath"] = os.path.realpath(sys.executable)
out["prefix"] = sys.prefix
import _ctypes, _json, math, numpy  # C extensions from the store
out["numpy"] = [numpy.__file__, int(numpy.arange(4).sum())]
libc = ctypes.CDLL("libc.so.6")
out["libc"] = ctypes.util.find_library("c") is not None and libc.getpid() == os.getpid()
# iconv needs the store glibc's gconv modules (GCONV_PATH)
libc.iconv_open.restype = ctypes.c_void_p
cd = libc.iconv_open(b"UTF-16LE", b"ISO-8859-1")
out["iconv"] = cd not in (None, ctypes.c_void_p(-1).value)
out["codec"] = "h\u00e9".encode("cp1252").hex()
def run(args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, **kw)
    return [p.returncode, p.stdout.strip(), p.stderr.strip()[-300:]]
out["rerun"] = run([sys.executable, "-c",
                    "import sys, os; print(sys.executable, os.readlink('/proc/self/exe'))"])
script = os.path.join(os.path.dirname(sys.executable), "pygmentize")
out["script"] = run([script, "-V"])
out["shell"] = run("pygmentize -V && " + sys.executable + " -c 'print(40+2)'", shell=True)
out["bash"] = run(["bash", "-c", "echo $BASH_VERSION; type python3"])
out["spawn"] = os.waitstatus_to_exitcode(os.waitpid(os.posix_spawnp(
    "python3", ["python3", "-c", "raise SystemExit(5)"], os.environ), 0)[1])
out["env"] = run(["/usr/bin/env"])
out["ls"] = run(["/bin/ls", "-d", "/etc"])
# NSS: glibc dlopen()s its modules itself ("files" is built into libc since
# 2.34, so ask for "compat"); the audit module finds them in the store
import pwd
libc.__nss_configure_lookup(b"passwd", b"compat")
out["pwd"] = pwd.getpwuid(0).pw_name
with open("/proc/self/maps") as f:
    out["nss"] = sorted({line.split()[-1] for line in f if "libnss_compat" in line})
fd = os.open(sys.prefix + "/lib/python3.11/os.py", os.O_RDONLY)
out["fdlink"] = os.readlink(f"/proc/self/fd/{fd}")
os.close(fd)
# threads: translation and spawning are thread-safe
from concurrent.futures import ThreadPoolExecutor
def work(i):
    for _ in range(50):
        os.stat(sys.executable)
    p = subprocess.run([sys.executable, "-c", f"print({i})"], capture_output=True, text=True)
    return p.stdout.strip()
with ThreadPoolExecutor(8) as pool:
    out["threads"] = list(pool.map(work, range(16)))
os.chdir(sys.prefix + "/lib")
out["cwd"] = os.getcwd()
out["relative"] = os.path.exists("python3.11/os.py")
out["popen"] = os.popen("pwd").read().strip()
out["environ"] = sorted(k for k in os.environ)
try:
    open(sys.prefix + "/new-file", "w")
except OSError as exc:
    out["write"] = exc.errno
import shutil
try:
    shutil.rmtree(sys.prefix + "/lib/python3.11/json")  # unlinkat relative to a dir_fd
except OSError as exc:
    out["rmtree"] = exc.errno
out["json"] = os.path.exists(sys.prefix + "/lib/python3.11/json/__init__.py")
print(json.dumps(out))
"""


@pytest.mark.parametrize("no_userns", [False, True], ids=["userns", "no-userns"])
def test_packed_python(engine, python_pack, no_userns):
    proc = run_python(engine, python_pack, CHECKS, no_userns=no_userns)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    root = python_pack
    python = root.metadata.python
    prefix = python.rsplit("/bin/", 1)[0]
    assert out["executable"] == f"{root.profile_bin()}/python3"
    assert out["exe"] == python
    assert out["realpath"] == python
    assert out["prefix"] == prefix
    assert out["numpy"] == [f"{prefix}/lib/python3/dist-packages/numpy/__init__.py", 6] or (
        out["numpy"][0].startswith(root.prefix + "/") and out["numpy"][1] == 6)
    assert out["libc"] is True
    assert out["iconv"] is True
    assert out["codec"] == "68e9"
    # sys.executable again: through the store's ld.so, same view
    assert out["rerun"][0] == 0, out["rerun"]
    assert out["rerun"][1] == f"{root.profile_bin()}/python3 {python}"
    # a store script (#! store python), by path and by name through the shell
    assert out["script"][0] == 0 and out["script"][1].startswith("Pygments version"), out["script"]
    assert out["shell"][0] == 0 and out["shell"][1].splitlines()[-1] == "42", out["shell"]
    assert out["bash"][0] == 0 and out["bash"][1].splitlines()[1].endswith(
        f"{root.profile_bin()}/python3"), out["bash"]
    assert out["spawn"] == 5
    # host programs: nothing of the engine
    env_lines = out["env"][1].splitlines()
    assert "LC_ALL=C.UTF-8" in env_lines
    assert not [e for e in env_lines if e.startswith(("NBS_FC_", "LD_", "GCONV_PATH="))]
    assert out["ls"][:2] == [0, "/etc"]
    assert out["cwd"] == f"{prefix}/lib"
    assert out["relative"] is True
    assert out["popen"] == f"{prefix}/lib"
    assert not [k for k in out["environ"] if k.startswith(("NBS_FC_", "LD_"))]
    assert out["write"] == 30  # EROFS
    assert out["rmtree"] == 30 and out["json"] is True
    assert out["pwd"] == "root"
    assert out["nss"] and all(p.startswith(os.fspath(root.store_dir)) for p in out["nss"])
    assert out["fdlink"] == f"{prefix}/lib/python3.11/os.py"
    assert out["threads"] == [str(i) for i in range(16)]


ICONV = r"""
import ctypes, json
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.iconv_open.restype = ctypes.c_void_p
libc.iconv_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.iconv.argtypes = [ctypes.c_void_p] + [ctypes.c_void_p] * 4
def convert(charset, data):
    cd = libc.iconv_open(b"UTF-8", charset.encode())
    if cd in (None, ctypes.c_void_p(-1).value):
        return "iconv_open: errno %d" % ctypes.get_errno()
    src = ctypes.create_string_buffer(data, len(data))
    dst = ctypes.create_string_buffer(64)
    pin, pout = ctypes.c_char_p(ctypes.addressof(src)), ctypes.c_char_p(ctypes.addressof(dst))
    nin, nout = ctypes.c_size_t(len(data)), ctypes.c_size_t(64)
    libc.iconv(cd, ctypes.byref(pin), ctypes.byref(nin), ctypes.byref(pout), ctypes.byref(nout))
    return dst.raw[:64 - nout.value].decode()
out = {"euc-jp": convert("EUC-JP", b"\xa4\xa2"), "latin-9": convert("ISO-8859-15", b"\xa4")}
with open("/proc/self/maps") as f:
    out["modules"] = sorted({line.split()[-1] for line in f if "/gconv/" in line})
print(json.dumps(out))
"""


def test_iconv_loads_the_stores_gconv_modules(engine, python_pack):
    """iconv for charsets glibc does not build in (EUC-JP, ISO-8859-15) finds
    their modules in the store glibc's gconv directory, not the host's."""
    proc = run_python(engine, python_pack, ICONV)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["euc-jp"] == "\u3042" and out["latin-9"] == "\u20ac", out
    names = sorted(os.path.basename(p) for p in out["modules"])
    assert names == ["EUC-JP.so", "ISO8859-15.so", "libJIS.so"], out["modules"]
    store = os.fspath(python_pack.store_dir)
    assert all(p.startswith(store + "/") for p in out["modules"]), out["modules"]


def test_exit_codes_and_signals_are_pythons(engine, python_pack):
    proc = run_python(engine, python_pack, "import os; os._exit(3)")
    assert proc.returncode == 3
    proc = run_python(engine, python_pack,
                      "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert proc.returncode == -signal.SIGTERM
    proc = run_python(engine, python_pack, "import sys; print(sys.argv[0]); sys.exit(0)",
                      name="python")
    assert proc.returncode == 0 and proc.stdout.strip() == "-c"
