#!/usr/bin/env bash
# The main job on a built-in example: pack this machine's Python (the
# project's virtual environment, which has ipykernel) into a relocatable
# pack, unpack it as a user would, check that it is complete, see what the
# engines can do here, run the packed Python, then install the pack as a
# Jupyter kernel and execute notebooks/quickstart.ipynb through it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh

out=${NBSANDBOX_DEMO_DIR:-$PWD/demo}
[[ -e "$out" ]] && chmod -R u+w "$out" && rm -rf "$out"
mkdir -p "$out"
nbs=.venv/bin/nbsandbox

echo "== pack this machine's Python (with bash and sleep) into $out/python.tar.gz"
"$nbs" pack --python .venv --program /bin/bash --program /bin/sleep -o "$out/python.tar.gz"
echo
echo "== unpack it, as a user would on a cluster"
"$nbs" unpack "$out/python.tar.gz" "$out/pack"
echo
echo "== check that the pack is complete (nothing refers outside its store)"
"$nbs" check "$out/pack"
echo
echo "== engines on this host"
"$nbs" doctor --root "$out/pack"
echo
echo "== run the packed Python (engine: performance)"
"$nbs" run --root "$out/pack" --engine performance --explain -- python3 -c '
import sys, ssl, sqlite3, ctypes, ipykernel
print("sys.prefix     ", sys.prefix)
print("sys.executable ", sys.executable)
print("ipykernel      ", ipykernel.__version__, "from", ipykernel.__file__)
'
echo
echo "== install the pack as a kernel and execute the quickstart notebook through it"
executed=$(.venv/bin/python notebooks/run_quickstart.py --work "$out" | tail -n 1)
echo
echo "demo: pack $out/python.tar.gz, unpacked in $out/pack"
echo "demo: executed notebook: $executed"
