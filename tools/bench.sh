#!/usr/bin/env bash
# Benchmarks: every engine that works here, side by side with the native
# program and the peer tools, in one run.  Results in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh
exec .venv/bin/python benchmarks/run.py "$@"
