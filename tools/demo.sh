#!/usr/bin/env bash
# The main job on a built-in example: pack this machine's Python (the
# project's virtual environment, which has ipykernel) into a relocatable
# pack, unpack it as a user would, check that it is complete, and run the
# packed Python through the best engine this host has.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh

out=${NBSANDBOX_DEMO_DIR:-$PWD/demo}
[[ -e "$out" ]] && chmod -R u+w "$out" && rm -rf "$out"
mkdir -p "$out"
nbs=.venv/bin/nbsandbox

echo "== pack this machine's Python into $out/python.tar.gz"
"$nbs" pack --python .venv -o "$out/python.tar.gz"
echo
echo "== unpack it, as a user would on a cluster"
"$nbs" unpack "$out/python.tar.gz" "$out/root"
echo
echo "== check that the pack is complete (nothing refers outside its store)"
"$nbs" check "$out/root"
echo
echo "== engines on this host"
"$nbs" doctor --root "$out/root"
echo
echo "== run the packed Python (engine: performance)"
"$nbs" run --root "$out/root" --engine performance --explain -- python3 -c '
import sys, ssl, sqlite3, ctypes, ipykernel
print("sys.prefix     ", sys.prefix)
print("sys.executable ", sys.executable)
print("ipykernel      ", ipykernel.__version__, "from", ipykernel.__file__)
'
echo
echo "demo: the pack is in $out/python.tar.gz, unpacked in $out/root"
