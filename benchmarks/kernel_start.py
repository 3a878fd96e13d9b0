"""Packed kernels: start to first executed cell, per engine, against the same Python natively.

    python benchmarks/kernel_start.py ROOT [--rounds N] [--engines userns,fakechroot,...]

ROOT is a pack of the Python environment running this script (e.g. the pack
``run_quickstart.py`` leaves in its work directory).  For each kernel -- the
environment's own ``ipykernel`` ("native") and the packed one through each
engine, started by the provisioner as a front end would -- it measures the time
from ``KernelManager.start_kernel()`` to the reply of a first ``execute_request``,
interleaving the kernels round by round, after one warm-up round.  Kernelspecs go
to a private temporary Jupyter data directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


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
    args = parser.parse_args(argv)

    data = Path(tempfile.mkdtemp(prefix="nbsandbox-bench-"))
    os.environ["JUPYTER_PATH"] = os.environ["JUPYTER_DATA_DIR"] = str(data)
    from jupyter_client.manager import KernelManager

    specs = kernel_specs(args.root, args.engines.split(","))
    for name, spec in specs.items():
        (data / "kernels" / f"bench-{name}").mkdir(parents=True)
        (data / "kernels" / f"bench-{name}" / "kernel.json").write_text(json.dumps(spec))

    def once(name: str) -> float:
        started = time.perf_counter()
        km = KernelManager(kernel_name=f"bench-{name}")
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=120)
            reply = kc.execute_interactive("x = 1 + 1", timeout=60)
            elapsed = time.perf_counter() - started
            assert reply["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        return elapsed

    times: dict[str, list[float]] = {name: [] for name in specs}
    try:
        for name in specs:
            once(name)  # warm-up: caches, engine probes
        for _ in range(args.rounds):
            for name in specs:
                times[name].append(once(name))
    finally:
        shutil.rmtree(data)
    native = statistics.median(times["native"])
    print(f"{'kernel':<11} {'median s':>9} {'min s':>7} {'median / native':>16}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<11} {median:9.3f} {min(values):7.3f} {median / native:16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
