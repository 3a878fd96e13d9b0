#!/usr/bin/env bash
# Benchmarks: every engine that works here, side by side with the native
# program at the store's prefix (the floor), the host's program and the peer
# tools, in one run.  Raw results in benchmarks/results/; the published page
# is docs/benchmarks.md with its chart docs/benchmarks.png.
#   1. benchmarks/run.py: start-up, metadata walk, CPU loop, stat() per call;
#   2. benchmarks/kernel_start.py: packed kernel start to first executed cell;
#   3. benchmarks/kernel_interrupt.py: interrupt of a packed kernel's cell to its
#      reply (median and worst of 20 per engine);
#   4. benchmarks/publish.py: docs/benchmarks.md from all three.
#
#   bash tools/bench.sh [--quick]    (--quick: fewer rounds and repetitions)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=7 kernels=4 interrupts=5
for arg in "$@"; do
    if [ "$arg" = --quick ]; then rounds=3 kernels=2 interrupts=3; fi
done
bash tools/bootstrap.sh
.venv/bin/python benchmarks/run.py "$@"
.venv/bin/python benchmarks/kernel_start.py benchmarks/results/pack --rounds "$rounds" \
    | tee benchmarks/results/kernel_start.txt
.venv/bin/python benchmarks/kernel_interrupt.py benchmarks/results/pack \
    --kernels "$kernels" --interrupts "$interrupts" \
    | tee benchmarks/results/kernel_interrupt.txt
.venv/bin/python benchmarks/publish.py --command "bash tools/bench.sh${*:+ $*}"
