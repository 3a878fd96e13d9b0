#!/usr/bin/env bash
# GPU passthrough on a real NVIDIA host, in one command:
#
#     bash tools/gpu_check.sh [--engines "userns fakechroot bwrap proot"] [--keep]
#
# It sets nbsandbox up (tools/bootstrap.sh: Debian packages and .venv), makes
# a small environment from PyPI (nvidia-ml-py), packs it with `nbsandbox pack`,
# and runs one program natively and then under each engine with --gpu.  The
# program talks to the driver through NVML (nvidia-ml-py) and through the CUDA
# driver API (ctypes: cuInit, cuDeviceGetCount, cuDeviceGetName, a PTX module
# JIT-compiled by the driver, cuMemAlloc and host<->device copies), and runs
# the driver's nvidia-smi.  The table shows, side by side: device count, first
# device's name, driver version (NVML), CUDA driver API version, whether
# nvidia-smi works inside, and the median time of two device operations (a
# 16 MiB host->device->host copy, 1000 empty kernel launches) with its ratio
# to native.  Takes a few minutes; needs network access to PyPI (and Debian
# when bootstrap must install packages).  Exits non-zero when an engine that
# works here does not see the same devices as native.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

ENGINES="userns fakechroot bwrap proot"
KEEP=0
while (($#)); do
    case $1 in
        --engines) ENGINES=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 ' && ! [[ -e /dev/nvidiactl ]]; then
    echo "gpu_check: no NVIDIA driver on this host (no libcuda.so.1 in the linker cache, no" \
         "/dev/nvidiactl); run it on a GPU node" >&2
    exit 2
fi

bash tools/bootstrap.sh >&2
NBS="$REPO/.venv/bin/python -m nbsandbox"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nbsandbox-gpu-check.XXXXXX")
chmod 755 "$WORK"
cleanup() { if ((KEEP)); then echo "gpu_check: kept $WORK" >&2; else chmod -R u+w "$WORK"; rm -rf "$WORK"; fi; }
trap cleanup EXIT

echo "gpu_check: making an environment with nvidia-ml-py (PyPI) and packing it" >&2
/usr/bin/python3 -m venv "$WORK/env"
"$WORK/env/bin/python" -m pip install -q --disable-pip-version-check nvidia-ml-py
$NBS pack --python "$WORK/env" -o "$WORK/root" >&2

cat > "$WORK/probe.py" <<'EOF'
"""Talk to the GPU driver: NVML, the CUDA driver API (ctypes), nvidia-smi."""
import ctypes
import json
import shutil
import statistics
import subprocess
import time

out = {}
import pynvml  # noqa: E402  (nvidia-ml-py)

pynvml.nvmlInit()
out["nvml_driver"] = pynvml.nvmlSystemGetDriverVersion()
out["nvml_count"] = pynvml.nvmlDeviceGetCount()
name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
out["nvml_name"] = name.decode() if isinstance(name, bytes) else name

cuda = ctypes.CDLL("libcuda.so.1")


def check(result, what):
    if result != 0:
        raise SystemExit(f"{what} failed with CUDA error {result}")


check(cuda.cuInit(0), "cuInit")
count = ctypes.c_int()
check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
version = ctypes.c_int()
check(cuda.cuDriverGetVersion(ctypes.byref(version)), "cuDriverGetVersion")
dev = ctypes.c_int()
check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
buf = ctypes.create_string_buffer(256)
check(cuda.cuDeviceGetName(buf, 256, dev), "cuDeviceGetName")
out.update(count=count.value, name=buf.value.decode(), cuda_version=version.value)

ctx = ctypes.c_void_p()
check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

# The driver's PTX JIT compiler (libnvidia-ptxjitcompiler) compiles this.
PTX = b""".version 6.0
.target sm_50
.address_size 64
.visible .entry noop()
{
    ret;
}
"""
module, func = ctypes.c_void_p(), ctypes.c_void_p()
check(cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(PTX)), "cuModuleLoadData")
check(cuda.cuModuleGetFunction(ctypes.byref(func), module, b"noop"), "cuModuleGetFunction")

size = 16 << 20
dptr = ctypes.c_uint64()
check(cuda.cuMemAlloc_v2(ctypes.byref(dptr), ctypes.c_size_t(size)), "cuMemAlloc")
host = ctypes.create_string_buffer(size)
cuda.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
cuda.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
cuda.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 6 + [
    ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]


def copy():
    check(cuda.cuMemcpyHtoD_v2(dptr.value, host, size), "cuMemcpyHtoD")
    check(cuda.cuMemcpyDtoH_v2(host, dptr.value, size), "cuMemcpyDtoH")


def launches():
    for _ in range(1000):
        check(cuda.cuLaunchKernel(func, 1, 1, 1, 1, 1, 1, 0, None, None, None), "cuLaunchKernel")
    check(cuda.cuCtxSynchronize(), "cuCtxSynchronize")


for name, op in (("copy_ms", copy), ("launch_ms", launches)):
    op()  # warm up
    times = []
    for _ in range(25):
        t = time.perf_counter()
        op()
        times.append((time.perf_counter() - t) * 1000)
    out[name] = statistics.median(times)
check(cuda.cuMemFree_v2(ctypes.c_uint64(dptr.value)), "cuMemFree")
check(cuda.cuDevicePrimaryCtxRelease(dev), "cuDevicePrimaryCtxRelease")

smi = shutil.which("nvidia-smi")
out["smi"] = "no nvidia-smi"
if smi:
    r = subprocess.run([smi, "-L"], capture_output=True, text=True)
    out["smi"] = f"{len(r.stdout.splitlines())} GPU(s)" if r.returncode == 0 else \
        f"exit {r.returncode}"
print("NBS-GPU-RESULT " + json.dumps(out))
EOF

run_one() {  # NAME COMMAND...: one row's JSON (or the error) in $WORK/NAME.json
    local name=$1; shift
    echo "gpu_check: $name" >&2
    if "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"; then
        grep '^NBS-GPU-RESULT ' "$WORK/$name.out" | tail -1 | cut -d' ' -f2- > "$WORK/$name.json"
    fi
    [[ -s $WORK/$name.json ]] || { tail -1 "$WORK/$name.err" > "$WORK/$name.error"; }
}

run_one native "$WORK/env/bin/python" "$WORK/probe.py"
for engine in $ENGINES; do
    run_one "$engine" $NBS run --root "$WORK/root" --engine "$engine" --gpu -- \
        python3 "$WORK/probe.py"
done

$NBS doctor | sed -n '/^GPU:/,/^$/p' >&2 || true
"$REPO/.venv/bin/python" - "$WORK" native $ENGINES <<'EOF'
import json
import sys
from pathlib import Path

work, names = Path(sys.argv[1]), sys.argv[2:]
rows, failed = {}, False
for name in names:
    result = work / f"{name}.json"
    if result.is_file() and result.read_text().strip():
        rows[name] = json.loads(result.read_text())
    else:
        error = work / f"{name}.error"
        rows[name] = {"error": error.read_text().strip() if error.is_file() else "no output"}
native = rows["native"]
head = (f"{'':<11} {'devices':>7}  {'name':<28} {'driver':<12} {'CUDA':>6}  "
        f"{'nvidia-smi':<12} {'copy 16MiB':>11} {'x':>5} {'1000 launches':>14} {'x':>5}")
print(head)
print("-" * len(head))
for name, r in rows.items():
    if "error" in r:
        print(f"{name:<11} error: {r['error']}")
        failed = failed or name == "native" or "cannot be used" not in r["error"]
        continue
    same = "error" not in native and (r["count"], r["name"]) == (native["count"], native["name"])
    failed = failed or not same
    ratio = {k: (r[k] / native[k] if "error" not in native and native[k] else float("nan"))
             for k in ("copy_ms", "launch_ms")}
    print(f"{name:<11} {r['count']:>7}  {r['name'][:28]:<28} {r['nvml_driver']:<12} "
          f"{r['cuda_version']:>6}  {r['smi']:<12} {r['copy_ms']:>9.3f}ms {ratio['copy_ms']:>5.2f} "
          f"{r['launch_ms']:>12.3f}ms {ratio['launch_ms']:>5.2f}"
          + ("" if same else "  <- differs from native"))
print("\n(x: time relative to native; median of 25 runs each)")
sys.exit(1 if failed else 0)
EOF
