#!/usr/bin/env bash
# Set up everything nbsandbox's demo, tests and benchmarks need on a fresh
# Debian/Ubuntu machine: system packages (when run as root), then a virtual
# environment in .venv with nbsandbox installed (its native parts compiled).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(gcc make libc6-dev python3 python3-venv python3-dev proot bubblewrap patchelf
              fakechroot git clang libclang-rt-14-dev debian-archive-keyring file)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "bootstrap: warning: missing system packages: ${missing[*]} (install them as root)" >&2
    fi
fi

# The virtual environment is made from the system's Python (readable by every
# user), so that tests can run engines as an unprivileged user.
PY=${NBSANDBOX_PYTHON:-/usr/bin/python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
# Always reinstall: cheap, and it rebuilds the native components from source.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench,fuzz]'

# Stores from other Debian releases (glibc older and newer than the host's) for
# the tests; they are skipped, with the reason, when this cannot be done.
if ! .venv/bin/python tools/glibc_stores.py >/dev/null; then
    echo "bootstrap: warning: the glibc test stores could not be built (see above);" \
         "their tests will be skipped" >&2
fi
