"""Packed kernels: interrupt latency per engine, against the same Python natively.

    python benchmarks/kernel_interrupt.py ROOT [--kernels 4] [--interrupts 5] [--engines E,...] \
        [--hog]

ROOT is a pack of the Python environment running this script (as for
``kernel_start.py``).  For each kernel -- the environment's own ``ipykernel``
("native") and the packed one through each engine that works here, started by the
provisioner as a front end would, in signal mode -- it starts ``--kernels`` kernels
one after the other and interrupts ``--interrupts`` cells sleeping 30 s in each, the
first one as soon as the kernel answers (as a user who interrupts their first cell),
and measures the seconds from ``KernelManager.interrupt_kernel()`` to the
interrupted cell's reply.  It prints the median and the worst of all the interrupts
(4 x 5 = 20 by default) and the median of the first ones.

Run as root, the kernels run as ``nobody`` (engines are meant for users without
root; PRoot run by root would make the store prefix's parents in the host's tree).
ROOT must then be readable by ``nobody``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the suite's helpers for kernels run as nobody

from jupyter_fixtures import interrupt_sleeping_cell  # noqa: E402
from kernel_start import (  # noqa: E402
    as_nobody,
    cpu_hog,
    kernel_specs,
    running_kernel,
    write_specs,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--kernels", type=int, default=4, help="kernels started per engine")
    parser.add_argument("--interrupts", type=int, default=5, help="interrupts per kernel")
    parser.add_argument("--engines", default="userns,fakechroot,bwrap,proot")
    parser.add_argument("--hog", action="store_true",
                        help="keep a CPU-bound process running during the measure")
    args = parser.parse_args(argv)

    data = Path(tempfile.mkdtemp(prefix="nbsandbox-bench-"))
    os.environ["JUPYTER_PATH"] = os.environ["JUPYTER_DATA_DIR"] = str(data)
    nobody = as_nobody(data)
    specs = kernel_specs(args.root, args.engines.split(","))
    write_specs(data, specs, nobody=nobody, interrupt_mode="signal")

    times: dict[str, list[float]] = {name: [] for name in specs}
    first: dict[str, list[float]] = {name: [] for name in specs}
    with cpu_hog(args.hog):
        try:
            for _ in range(args.kernels):
                for name in specs:
                    with running_kernel(name) as (km, kc):
                        for i in range(args.interrupts):
                            elapsed = interrupt_sleeping_cell(km, kc)
                            times[name].append(elapsed)
                            if i == 0:
                                first[name].append(elapsed)
        finally:
            shutil.rmtree(data)
    n = args.kernels * args.interrupts
    if args.hog:
        print("with a CPU-bound process running")
    print(f"interrupt to reply, seconds ({args.kernels} kernels x {args.interrupts} "
          f"interrupts = {n} per kernel type; 'first': the first interrupt of each kernel)")
    print(f"{'kernel':<11} {'median':>7} {'worst':>7} {'first, median':>14}")
    for name, values in times.items():
        print(f"{name:<11} {statistics.median(values):7.3f} {max(values):7.3f} "
              f"{statistics.median(first[name]):14.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
