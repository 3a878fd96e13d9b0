#!/usr/bin/env bash
# Benchmarks: every engine that works here, side by side with the native
# program and the peer tools, in one run.  Results in benchmarks/results/.
#   1. benchmarks/run.py: start-up, metadata walk, CPU loop, stat() per call;
#   2. benchmarks/kernel_start.py: packed kernel start to first executed cell;
#   3. benchmarks/kernel_interrupt.py: interrupt of a packed kernel's cell to its
#      reply (median and worst of 20 per engine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh
.venv/bin/python benchmarks/run.py "$@"
.venv/bin/python benchmarks/kernel_start.py benchmarks/results/pack \
    | tee benchmarks/results/kernel_start.txt
.venv/bin/python benchmarks/kernel_interrupt.py benchmarks/results/pack \
    | tee benchmarks/results/kernel_interrupt.txt
