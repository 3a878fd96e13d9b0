"""Packed kernels: start to first executed cell, per engine, against the same Python natively.

    python benchmarks/kernel_start.py ROOT [--rounds N] [--engines userns,fakechroot,...] [--hog]

ROOT is a pack of the Python environment running this script (e.g. the pack
``run_quickstart.py`` leaves in its work directory).  For each kernel -- the
environment's own ``ipykernel`` ("native") and the packed one through each
engine, started by the provisioner as a front end would -- it measures the time
from ``KernelManager.start_kernel()`` to the reply of a first ``execute_request``,
interleaving the kernels round by round, after one warm-up round.  Kernelspecs go
to a private temporary Jupyter data directory.  ``--hog``: with a CPU-bound process
(``while 1: pass``) running all along, as on a shared machine.

Run as root, the kernels run as ``nobody`` (see ``as_nobody``); ROOT must then be
readable by ``nobody``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the suite's helpers for kernels run as nobody

import unpriv  # noqa: E402
from jupyter_fixtures import (  # noqa: E402
    NATIVE_PROVISIONER,
    TEST_PROVISIONER,
    register_test_provisioners,
)


def as_nobody(data: Path) -> bool:
    """When run by root: make the kernels run as ``nobody`` (engines are meant for
    users without root; PRoot run by root makes the store prefix's parents in the
    host's tree, see docs/engines.md), with a runtime directory and a home in DATA
    (the private Jupyter data directory).  Whether it did; call before
    ``write_specs``."""
    if os.getuid() != 0:
        return False
    data.chmod(0o755)
    for sub, mode in (("runtime", 0o1777), ("home", 0o755)):
        (data / sub).mkdir(mode=mode)
        (data / sub).chmod(mode)
    os.chown(data / "home", unpriv.NOBODY, unpriv.NOBODY)
    os.environ["JUPYTER_RUNTIME_DIR"] = str(data / "runtime")
    os.environ["HOME"] = os.environ["IPYTHONDIR"] = str(data / "home")
    register_test_provisioners()
    return True


def write_specs(data: Path, specs: dict[str, dict], *, nobody: bool,
                interrupt_mode: str | None = None) -> None:
    """Install SPECS as ``bench-<name>`` kernelspecs in DATA; with NOBODY, through
    the test provisioners that run the kernel process as ``nobody``."""
    for name, spec in specs.items():
        if interrupt_mode:
            spec["interrupt_mode"] = interrupt_mode
        if nobody:
            spec.setdefault("metadata", {}).setdefault("kernel_provisioner", {})[
                "provisioner_name"] = TEST_PROVISIONER if name != "native" else NATIVE_PROVISIONER
        (data / "kernels" / f"bench-{name}").mkdir(parents=True)
        (data / "kernels" / f"bench-{name}" / "kernel.json").write_text(json.dumps(spec))


def kernel_specs(root_path: str, engines: list[str]) -> dict[str, dict]:
    """Kernelspecs by name: "native" (this Python's own ipykernel), then the
    packed kernel of ROOT_PATH through each of ENGINES that works here."""
    from nbsandbox.engines import get_engine
    from nbsandbox.kernelspec import kernel_json
    from nbsandbox.store import StoreRoot

    root = StoreRoot.open(root_path)
    specs = {"native": {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                 "{connection_file}"],
                        "display_name": "native", "language": "python"}}
    for engine in engines:
        probe = get_engine(engine).probe()
        if not probe.available:
            print(f"{engine}: skipped ({probe.reason})", file=sys.stderr)
            continue
        specs[engine] = kernel_json(root, engine=engine)
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--engines", default="userns,fakechroot,bwrap,proot")
    parser.add_argument("--hog", action="store_true",
                        help="keep a CPU-bound process running during the measure")
    args = parser.parse_args(argv)

    data = Path(tempfile.mkdtemp(prefix="nbsandbox-bench-"))
    os.environ["JUPYTER_PATH"] = os.environ["JUPYTER_DATA_DIR"] = str(data)
    nobody = as_nobody(data)
    specs = kernel_specs(args.root, args.engines.split(","))
    write_specs(data, specs, nobody=nobody)

    def once(name: str) -> float:
        started = time.perf_counter()
        with running_kernel(name) as (_, kc):
            reply = kc.execute_interactive("x = 1 + 1", timeout=60)
            elapsed = time.perf_counter() - started
            assert reply["content"]["status"] == "ok"
        return elapsed

    times: dict[str, list[float]] = {name: [] for name in specs}
    with cpu_hog(args.hog):
        try:
            for name in specs:
                once(name)  # warm-up: caches, engine probes
            for _ in range(args.rounds):
                for name in specs:
                    times[name].append(once(name))
        finally:
            shutil.rmtree(data)
    if args.hog:
        print("with a CPU-bound process running")
    native, native_worst = statistics.median(times["native"]), max(times["native"])
    print(f"{'kernel':<11} {'median s':>9} {'min s':>7} {'worst s':>8} {'median / native':>16} "
          f"{'worst / native':>15}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<11} {median:9.3f} {min(values):7.3f} {max(values):8.3f} "
              f"{median / native:16.3f} {max(values) / native_worst:15.3f}")
    return 0


@contextlib.contextmanager
def running_kernel(name: str) -> Iterator[tuple[object, object]]:
    """The bench kernel ``bench-NAME`` started and ready: ``(manager, client)``;
    shut down on leaving."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=f"bench-{name}")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@contextlib.contextmanager
def cpu_hog(on: bool) -> Iterator[None]:
    """With ON, a process spinning on the CPU for the time of the block."""
    if not on:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


if __name__ == "__main__":
    sys.exit(main())
