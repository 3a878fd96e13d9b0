#!/usr/bin/env bash
# Run nbsandbox's whole test suite: set-up (tools/bootstrap.sh), lint, then
# pytest (Python tests, native tests under AddressSanitizer, a short fuzz run).
# Engine tests run as the unprivileged user 'nobody' when this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Engines are tested as an unprivileged user, who must be able to read the
# checkout and its virtual environment.  If this checkout lives somewhere
# private (e.g. under /root), test a world-readable copy of it instead.
if [[ $(id -u) -eq 0 ]] && ! runuser -u nobody -- test -r "$PWD/pyproject.toml" 2>/dev/null; then
    copy=$(mktemp -d /tmp/nbsandbox-test.XXXXXX)
    chmod 755 "$copy"
    trap 'rm -rf "$copy"' EXIT
    echo "test: $PWD is not readable by unprivileged users; testing a copy in $copy" >&2
    git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$copy"
    (cd "$copy" && bash tools/test.sh "$@")
    exit $?
fi

bash tools/bootstrap.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
