"""GPU driver passthrough, with a simulated driver (this machine has no GPU).

A stub ``libcuda.so.1`` and ``libnvidia-ml.so.1`` are built here with the C
compiler, in a fake host driver directory next to a host library that is not
the driver's; "device nodes" are regular files in a fake ``/dev`` (a real
``/dev/nvidia*`` cannot be made without root and a kernel module, and the
engines bind a device node as they bind any file).  The stub's ``cuInit``
opens the simulated ``nvidiactl``, so it fails where the device is not
visible.  The driver is found through the same discovery as a real one
(``--gpu-driver``, ``--gpu-device``, or a linker cache built with ``ldconfig``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import unpriv

from nbsandbox import gpu
from nbsandbox.errors import UsageError

VERSION = "999.99.99"

CUDA_C = r"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
int cuInit(unsigned flags) {
    (void)flags;
    int fd = open(NBS_DEVICE, O_RDWR);
    if (fd < 0) return 100; /* CUDA_ERROR_NO_DEVICE */
    close(fd);
    return 0;
}
int cuDriverGetVersion(int *v) { *v = 99099; return 0; }
int cuDeviceGetCount(int *n) { *n = 1; return 0; }
int cuDeviceGetName(char *name, int len, int dev) {
    if (dev != 0 || len < 1) return 101;
    strncpy(name, "nbsandbox stub GPU", (size_t)len - 1);
    name[len - 1] = 0;
    return 0;
}
"""

NVML_C = r"""
#include <string.h>
int nvmlInit_v2(void) { return 0; }
int nvmlSystemGetDriverVersion(char *v, unsigned n) {
    if (n < sizeof NBS_VERSION) return 7;
    memcpy(v, NBS_VERSION, sizeof NBS_VERSION);
    return 0;
}
"""

DECOY_C = "int nbs_decoy(void) { return 42; }\n"

#: What the program in the sandbox reports (store python, ctypes).
PROBE = r"""
import ctypes, json, sys
out = {}
if sys.argv[1:] != ["baseline"]:
    cuda = ctypes.CDLL("libcuda.so.1")
    nvml = ctypes.CDLL("libnvidia-ml.so.1")
    out["init"] = cuda.cuInit(0)
    n = ctypes.c_int()
    cuda.cuDeviceGetCount(ctypes.byref(n))
    out["count"] = n.value
    name = ctypes.create_string_buffer(64)
    cuda.cuDeviceGetName(name, 64, 0)
    out["name"] = name.value.decode()
    nvml.nvmlInit_v2()
    v = ctypes.create_string_buffer(80)
    nvml.nvmlSystemGetDriverVersion(v, 80)
    out["version"] = v.value.decode()
    try:
        ctypes.CDLL("libnbsdecoy.so.1")
        out["decoy"] = "loaded"
    except OSError:
        out["decoy"] = "not found"
try:  # a real character device passed as a driver device node stays usable (not nodev)
    with open("/dev/full", "wb", buffering=0) as f:
        f.write(b"x")
except OSError as e:
    out["chardev"] = e.errno
maps = set()
with open("/proc/self/maps") as f:
    for line in f:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            maps.add(parts[5].strip().removesuffix(" (deleted)"))
out["maps"] = sorted(maps)
print(json.dumps(out))
"""


def _cc(source: str, out: Path, soname: str, *defines: str) -> None:
    """A shared library; like the real driver's, it needs libm, libdl, libpthread and
    librt besides libc (the store's must be used, not the host's)."""
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", *defines,
                    f"-Wl,-soname,{soname}", "-o", str(out), str(src),
                    "-Wl,--no-as-needed", "-lm", "-ldl", "-lpthread", "-lrt"], check=True)
    src.unlink()


class FakeDriver:
    """A simulated host driver: ``lib/`` (driver libraries and one that is not the
    driver's), ``bin/nvidia-smi``, ``dev/`` (device nodes as files)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.lib = base / "lib"
        self.dev = base / "dev"
        self.bin = base / "bin"
        for d in (self.lib, self.dev, self.bin):
            d.mkdir(parents=True)
        for name in ("nvidiactl", "nvidia0", "nvidia-uvm"):
            (self.dev / name).write_text("")
            os.chmod(self.dev / name, 0o666)
        device = f'-DNBS_DEVICE="{self.dev / "nvidiactl"}"'
        _cc(CUDA_C, self.lib / f"libcuda.so.{VERSION}", "libcuda.so.1", device)
        _cc(NVML_C, self.lib / f"libnvidia-ml.so.{VERSION}", "libnvidia-ml.so.1",
            f'-DNBS_VERSION="{VERSION}"')
        _cc(DECOY_C, self.lib / "libnbsdecoy.so.1", "libnbsdecoy.so.1")
        for stem in ("libcuda", "libnvidia-ml"):
            os.symlink(f"{stem}.so.{VERSION}", self.lib / f"{stem}.so.1")
        smi = self.bin / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\necho 'nbsandbox stub GPU, {VERSION}'\n")
        smi.chmod(0o755)

    @property
    def devices(self) -> list[str]:
        return [str(self.dev / "nvidia*")]

    def options(self) -> list[str]:
        """``--gpu-driver``, ``--gpu-device``: the fake driver, plus a real character
        device (``/dev/full``) bound as a device node of the driver."""
        return ["--gpu-driver", str(self.lib), "--gpu-device", self.devices[0],
                "--gpu-device", "/dev/full"]

    def files(self) -> set[str]:
        return {str(self.lib / f"libcuda.so.{VERSION}"),
                str(self.lib / f"libnvidia-ml.so.{VERSION}")}


@pytest.fixture(scope="module")
def fake_driver(tmp_path_factory) -> FakeDriver:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build the stub driver")
    base = tmp_path_factory.mktemp("fake-driver")
    unpriv.world_tmpdir(str(base))
    return FakeDriver(base / "host")


@pytest.fixture
def nobody_tmp(tmp_path) -> dict[str, str]:
    """An environment whose TMPDIR is the test's own (the link directories go there)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    unpriv.world_tmpdir(str(tmp))
    os.chmod(tmp, 0o1777)
    return {**os.environ, "TMPDIR": str(tmp)}


def nbs_run(root, engine: str, *args: str, options=()) -> list[str]:
    return [sys.executable, "-m", "nbsandbox", "run", "--root", str(root.path),
            "--engine", engine, *options, "--", *args]


# -- discovery -------------------------------------------------------------------------------


def test_driver_library_names():
    assert gpu.is_driver_library("libcuda.so.1")
    assert gpu.is_driver_library("libcuda.so.535.104.05")
    assert gpu.is_driver_library("libnvidia-ptxjitcompiler.so.1")
    assert gpu.is_driver_library("libEGL_nvidia.so.0")
    assert not gpu.is_driver_library("libEGL.so.1")  # glvnd, not the driver
    assert not gpu.is_driver_library("libcudart.so.12")  # the CUDA toolkit, not the driver
    assert not gpu.is_driver_library("libc.so.6")


def test_configured_directory_is_discovered(fake_driver):
    driver = gpu.discover([str(fake_driver.lib)], fake_driver.devices, use_linker_cache=False)
    assert driver.problem is None, driver.problem
    assert set(driver.libraries) == {"libcuda.so.1", "libcuda.so.999.99.99",
                                     "libnvidia-ml.so.1", "libnvidia-ml.so.999.99.99"}
    assert driver.library_version == VERSION
    assert set(driver.files()) >= fake_driver.files()
    assert not any("decoy" in f for f in driver.files())
    assert driver.programs["nvidia-smi"] == str(fake_driver.bin / "nvidia-smi")
    assert sorted(driver.devices) == sorted(str(p) for p in fake_driver.dev.iterdir())


def test_linker_cache_is_discovered(fake_driver, tmp_path):
    ldconfig = gpu.find_ldconfig()
    if ldconfig is None:
        pytest.skip("no ldconfig")
    conf, cache = tmp_path / "ld.so.conf", tmp_path / "ld.so.cache"
    conf.write_text(f"{fake_driver.lib}\n")
    subprocess.run([ldconfig, "-X", "-C", str(cache), "-f", str(conf)], check=True,
                   capture_output=True)
    found = dict(gpu.linker_cache(str(cache)))
    assert found["libcuda.so.1"] == str(fake_driver.lib / "libcuda.so.1")
    assert "libnbsdecoy.so.1" not in found
    driver = gpu.discover([], fake_driver.devices, cache=str(cache), gpus=True)
    assert driver.problem is None and "libnvidia-ml.so.1" in driver.libraries
    assert any("linker cache" in s for s in driver.sources)


def test_no_driver_here():
    driver = gpu.discover([], ["/nonexistent/nvidia*"], use_linker_cache=False)
    assert "no NVIDIA driver" in driver.problem
    assert gpu.select("auto", [], ["/nonexistent/nvidia*"]) is None
    assert gpu.select("off", [], []) is None
    with pytest.raises(gpu.GpuError) as e:
        gpu.select("on", ["/nonexistent/driver"], ["/nonexistent/nvidia*"], cache="/dev/null")
    assert "\n" not in str(e.value)


def test_toolkit_stubs_are_not_a_driver(fake_driver, tmp_path):
    stubs = tmp_path / "cuda" / "lib64" / "stubs"
    stubs.mkdir(parents=True)
    shutil.copy(fake_driver.lib / f"libcuda.so.{VERSION}", stubs / "libcuda.so")
    with pytest.raises(gpu.GpuError, match="link-time stubs") as e:
        gpu.select("on", [str(stubs)], fake_driver.devices, cache="/dev/null")
    assert "\n" not in str(e.value)
    assert gpu.select("auto", [str(stubs)], fake_driver.devices, cache="/dev/null") is None


def test_libraries_without_devices(fake_driver):
    driver = gpu.discover([str(fake_driver.lib)], [str(fake_driver.dev / "none*")],
                          use_linker_cache=False)
    assert "no device node" in driver.problem


def test_module_and_libraries_disagree(fake_driver, tmp_path):
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 "
                       "01:15:15 UTC 2023\nGCC version:  gcc version 12.2.0\n")
    assert gpu.module_version(str(version)) == "535.104.05"
    driver = gpu.discover([str(fake_driver.lib)], fake_driver.devices, proc_version=str(version),
                          use_linker_cache=False)
    assert driver.problem and "999.99.99" in driver.problem and "535.104.05" in driver.problem


def test_hidden_driver_is_refused(fake_driver):
    with pytest.raises(gpu.GpuError, match="hidden"):
        gpu.select("on", [str(fake_driver.lib)], fake_driver.devices,
                   hidden=[str(fake_driver.base)], cache="/dev/null")
    assert gpu.select("auto", [str(fake_driver.lib)], fake_driver.devices,
                      hidden=[str(fake_driver.base)], cache="/dev/null") is None


def test_link_directory_holds_only_the_driver(fake_driver, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    view = gpu.select("on", [str(fake_driver.lib)], fake_driver.devices, cache="/dev/null")
    assert view is not None
    assert sorted(os.listdir(view.lib_dir)) == sorted(name for name, _ in view.libraries)
    assert os.listdir(view.bin_dir) == ["nvidia-smi"]
    assert os.path.realpath(os.path.join(view.lib_dir, "libcuda.so.1")) == \
        str(fake_driver.lib / f"libcuda.so.{VERSION}")
    again = gpu.select("on", [str(fake_driver.lib)], fake_driver.devices, cache="/dev/null")
    assert again == view  # made once
    env = view.library_search_env({"PATH": "/a", "LD_LIBRARY_PATH": "/store/lib"})
    assert env["LD_LIBRARY_PATH"] == f"/store/lib:{view.lib_dir}"
    assert env["PATH"] == f"/a:{view.bin_dir}"


def test_policy_gpu_settings(fake_driver):
    from nbsandbox.policy import Layer, Policy, PolicyError

    admin = Layer("administrator", "the administrator's file", {"gpu": "off"})
    with pytest.raises(PolicyError, match="GPUs are turned off"):
        Policy.fold([admin, Layer("request", "this cell", {"gpu": "on"})])
    assert Policy.fold([admin, Layer("request", "this cell", {"gpu": "off"})]).gpu == "off"
    no_binds = Layer("administrator", "the administrator's file", {"allow_user_binds": False})
    with pytest.raises(PolicyError, match="allow_user_binds"):
        Policy.fold([no_binds, Layer("request", "this cell",
                                     {"gpu_driver_paths": [str(fake_driver.lib)]})])
    p = Policy.fold([Layer("configuration", "the configuration",
                           {"gpu": "on", "gpu_driver_paths": [str(fake_driver.lib)],
                            "gpu_devices": fake_driver.devices})])
    assert p.gpu == "on" and p.gpu_driver_paths == (str(fake_driver.lib),)


def test_policy_gpu_mode_is_validated():
    from nbsandbox.policy import validated

    with pytest.raises(UsageError, match="gpu"):
        validated({"gpu": "yes"}, "kernel.json")


# -- the command line ---------------------------------------------------------------------------


def test_gpu_on_without_driver_is_one_line(python_pack, nobody_tmp, tmp_path):
    r = unpriv.run(nbs_run(python_pack, "userns", "python3", "-c", "pass",
                           options=["--gpu", "--gpu-device", "/nonexistent/nvidia*"]),
                   env=nobody_tmp, cwd=tmp_path)
    if gpu.linker_cache() or gpu.conf_libraries():
        pytest.skip("this host has a GPU driver in its linker cache or ld.so.conf")
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and "no NVIDIA driver" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not any(n.startswith("nbsandbox-") for n in os.listdir(nobody_tmp["TMPDIR"]))


def test_unreadable_driver_directory_is_one_line(python_pack, fake_driver, nobody_tmp, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o311)  # nobody may enter but not list it
    unpriv.world_tmpdir(str(tmp_path))
    argv = nbs_run(python_pack, "userns", "python3", "-c", "pass",
                   options=["--gpu", "--gpu-driver", str(locked),
                            "--gpu-device", fake_driver.devices[0]])
    r = unpriv.run(argv, env=nobody_tmp, cwd=tmp_path)
    if os.getuid() != 0:
        pytest.skip("the directory is readable by its owner (run as root to test as nobody)")
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and "cannot read the GPU driver directory" in r.stderr
    assert not any(n.startswith("nbsandbox-") for n in os.listdir(nobody_tmp["TMPDIR"]))


def test_dry_run_binds_only_the_driver(python_pack, fake_driver, nobody_tmp, tmp_path):
    r = unpriv.run(nbs_run(python_pack, "bwrap", "python3", options=[
        "--dry-run", "--gpu", *fake_driver.options()]), env=nobody_tmp, cwd=tmp_path)
    if r.returncode and "bwrap" in r.stderr:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    assert f"--ro-bind {fake_driver.lib}/libcuda.so.{VERSION}" in r.stdout
    assert f"--dev-bind {fake_driver.dev}/nvidiactl {fake_driver.dev}/nvidiactl" in r.stdout
    assert "--dev-bind /dev/full /dev/full" in r.stdout
    assert "decoy" not in r.stdout


def test_doctor_shows_the_driver(fake_driver):
    r = subprocess.run([sys.executable, "-m", "nbsandbox", "doctor", "--json",
                        *fake_driver.options()[:2], "--gpu-device", fake_driver.devices[0]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout)["gpu"]
    assert g["usable"] and g["version"] == VERSION
    assert g["gpus"] == ["nbsandbox stub GPU"]
    assert set(g["engines"]) >= {"userns", "fakechroot", "proot", "bwrap", "host"}
    from nbsandbox import doctor
    from nbsandbox.policy import Layer, Policy

    policy = Policy.fold([Layer("configuration", "the configuration",
                                {"gpu_driver_paths": [str(fake_driver.lib)],
                                 "gpu_devices": fake_driver.devices})])
    data = doctor.report(None, policy)
    text = doctor.format_text(data)
    assert "GPU: nbsandbox stub GPU; driver 999.99.99" in text
    assert "nbsandbox stub GPU" in doctor.format_html(data)


# -- under every engine -------------------------------------------------------------------------


def _probe(root, engine: str, env: dict[str, str], cwd: Path, options, *args: str) -> dict:
    r = unpriv.run(nbs_run(root, engine, "python3", "-c", PROBE, *args, options=options),
                   env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_store_program_gets_the_host_driver(python_pack, fake_driver, engine, nobody_tmp,
                                            tmp_path):
    out = _probe(python_pack, engine, nobody_tmp, tmp_path, ["--gpu", *fake_driver.options()])
    assert (out["init"], out["count"], out["name"], out["version"]) == \
        (0, 1, "nbsandbox stub GPU", VERSION)
    assert out["decoy"] == "not found"  # a host library next to the driver's stays out
    assert out["chardev"] == errno.ENOSPC  # /dev/full bound as a device: still a device
    # The host files mapped into the program with the driver are those mapped without
    # it (data files of the host such as locales, and whatever the engine itself loads)
    # plus the driver's own: no other host library comes with it.
    from nbsandbox.native import native_dir

    # (PRoot's loader, a copy under /tmp/prooted-*, has another name at each run.)
    store = ("/gnu/store/", str(python_pack.store_dir) + "/", str(native_dir()) + "/",
             "/tmp/prooted-")
    baseline = _probe(python_pack, engine, nobody_tmp, tmp_path, ["--no-gpu"], "baseline")
    added = {m for m in out["maps"] if not m.startswith(store)} - set(baseline["maps"])
    assert added == fake_driver.files(), added
    assert fake_driver.files() <= set(out["maps"])


def test_without_gpu_the_store_has_no_driver(python_pack, fake_driver, engine, nobody_tmp,
                                             tmp_path):
    code = ("import ctypes\ntry:\n    ctypes.CDLL('libcuda.so.1')\n    print('loaded')\n"
            "except OSError:\n    print('not found')\n")
    r = unpriv.run(nbs_run(python_pack, engine, "python3", "-c", code,
                           options=["--no-gpu", *fake_driver.options()]),
                   env=nobody_tmp, cwd=tmp_path)
    assert (r.returncode, r.stdout.strip()) == (0, "not found"), r.stderr


# -- the other front ends ---------------------------------------------------------------------


@pytest.fixture
def ip(python_pack, monkeypatch, tmp_path):
    """An InteractiveShell with the extension, no administrator's policy, TMPDIR private."""
    import ipython_shell

    from nbsandbox.policy import ADMIN_ENV

    monkeypatch.setattr("nbsandbox.policy.layers.system_config_dirs",
                        lambda: [str(tmp_path / "etc")])
    monkeypatch.setenv("NBSANDBOX_ROOT", str(python_pack.path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.delenv("NBSANDBOX_ENGINE", raising=False)
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    shell = ipython_shell.shell()
    shell.run_line_magic("load_ext", "nbsandbox")
    yield shell
    shell.run_line_magic("unload_ext", "nbsandbox")
    shell.user_ns.pop("o", None)


def test_magic_gpu_flag(ip, fake_driver, capsys):
    from IPython.core.error import UsageError as IPythonUsageError

    from nbsandbox.engines import get_engine

    engine = next((e for e in ("userns", "fakechroot", "bwrap", "proot")
                   if get_engine(e).probe().available), None)
    if engine is None:
        pytest.skip("no engine works here")
    from traitlets.config import Config

    magics = ip.magics_manager.registry["SandboxMagics"]
    magics.update_config(Config({"SandboxMagics": {"gpu_devices": ["/nonexistent/nvidia*"]}}))
    with pytest.raises(IPythonUsageError, match="cannot give the program the host's GPU") as e:
        ip.run_cell_magic("sandbox", f"{engine} --python --gpu", "print(1)\n")
    assert "\n" not in str(e.value)
    magics.update_config(Config({"SandboxMagics": {"gpu_driver_paths": [str(fake_driver.lib)],
                                                   "gpu_devices": fake_driver.devices}}))
    body = ("import ctypes\nc = ctypes.CDLL('libcuda.so.1')\nb = ctypes.create_string_buffer(64)\n"
            "c.cuDeviceGetName(b, 64, 0)\nprint(c.cuInit(0), b.value.decode())\n")
    ip.run_cell_magic("sandbox", f"{engine} --python --gpu --out o", body)
    assert ip.user_ns["o"].strip() == "0 nbsandbox stub GPU"
    ip.run_cell_magic("sandbox", f"{engine} --python --no-gpu --out o",
                      "import ctypes\ntry:\n    ctypes.CDLL('libcuda.so.1')\n    print('loaded')\n"
                      "except OSError:\n    print('not found')\n")
    assert ip.user_ns["o"].strip() == "not found"


def test_kernelspec_carries_the_gpu_setting(python_pack):
    from nbsandbox.kernelspec import kernel_json

    spec = kernel_json(python_pack, gpu="on")
    assert "--gpu" in spec["argv"][:spec["argv"].index("--")]
    assert spec["metadata"]["kernel_provisioner"]["config"]["gpu"] == "on"
    assert "--no-gpu" in kernel_json(python_pack, gpu="off")["argv"]
    assert "gpu" not in kernel_json(python_pack)["metadata"]["kernel_provisioner"]["config"]


def test_driver_passes_landlock_restrictions(python_pack, fake_driver, engine, nobody_tmp,
                                             tmp_path):
    """With --allow-read/--allow-write, the driver's files stay readable and its device
    nodes openable for writing (the stub's cuInit opens nvidiactl read-write)."""
    from nbsandbox import landlock

    if landlock.abi() < 1:
        pytest.skip("Landlock is not available here")
    out = _probe(python_pack, engine, nobody_tmp, tmp_path,
                 ["--gpu", *fake_driver.options(), "--allow-write", str(tmp_path),
                  "--allow-read", str(tmp_path)])
    assert (out["init"], out["name"]) == (0, "nbsandbox stub GPU")
