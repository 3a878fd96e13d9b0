#!/usr/bin/env bash
# The README's test command on a machine as fresh as this one can be made,
# several times in a row; fails on any failure, flake, traceback or leftover.
#
#   bash tools/fresh_check.sh [RUNS]      # RUNS: default 3
#
# What "fresh" means here, and how it is checked or made:
#   * no store prefix directories on the host: fails if /gnu or /nix exist
#     (it never creates or removes them);
#   * an empty temporary directory: as root, the runs see a new, empty /tmp
#     (a directory under /var/tmp bound over /tmp in a private mount
#     namespace: other programs' files are out of sight, and whatever the runs
#     leave there is seen); otherwise it fails if /tmp already has the
#     project's files (nbsandbox-*, proot-*, prooted-*, pytest-nbs-*,
#     nbs-launch-tests-*);
#   * a new clone of this checkout's HEAD in a new directory, with a fresh
#     virtual environment made by tools/bootstrap.sh (pip without its cache);
#   * an empty home directory, and none of nbsandbox's, Jupyter's, IPython's
#     or pytest's variables from the caller's environment.
# System packages are whatever tools/bootstrap.sh installs (as root).
#
# Each run is `bash tools/test.sh` in the clone, its output in WORK/run-N.log.
# A run counts as failed when its exit status is not 0, its output has a
# Python traceback or an sqlite error, or it leaves behind the project's files
# in /tmp, processes running from the clone, or mounts.  The work directory is
# removed at the end when every run passed (kept otherwise, for the logs).
set -uo pipefail

if [[ ${1:-} == --inner ]]; then  # in the private mount namespace (see below)
    inner=1 work=$2 runs=$3
    mount --bind "$work/tmp" /tmp || { echo "fresh_check: cannot bind $work/tmp over /tmp" >&2; exit 1; }
else
    inner=0
fi
fail() { echo "fresh_check: $*" >&2; exit 1; }

leftovers() {  # the project's entries in /tmp, one a line
    # Not counted: nbsandbox-<uid>-empty, the fakechroot engine's one shared,
    # read-only, empty directory per user, kept on purpose (docs/fakechroot.md).
    find /tmp -mindepth 1 -maxdepth 1 \( -name 'nbsandbox-*' -o -name 'proot-*' \
        -o -name 'prooted-*' -o -name 'pytest-nbs-*' -o -name 'nbs-launch-tests-*' \) \
        -not -regex '/tmp/nbsandbox-[0-9]+-empty' -printf '%f\n' 2>/dev/null | sort
}

if ((!inner)); then
    runs=${1:-3}
    if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
        echo "fresh_check: RUNS must be a positive number, not '$runs' (usage: bash tools/fresh_check.sh [RUNS])" >&2
        exit 2
    fi
    src=$(cd "$(dirname "$0")/.." && pwd)
    for prefix in /gnu /nix; do
        [[ -e $prefix || -L $prefix ]] && fail "$prefix exists on this host: a fresh machine has no store prefix directory (remove it, or check on another machine)"
    done
    head=$(git -C "$src" rev-parse HEAD) || fail "$src is not a git checkout"
    private_tmp=0
    [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null && private_tmp=1
    if ((!private_tmp)); then
        before=$(leftovers)
        [[ -z $before ]] || fail "/tmp already has the project's files (not a fresh machine): $(echo $before | head -c 300)"
    fi
    # Not under /tmp: the runs get an empty /tmp of their own.
    work=$(mktemp -d /var/tmp/fresh-check.XXXXXX) || fail "cannot make a work directory in /var/tmp"
    chmod 755 "$work"  # the tests run engines as 'nobody', who must read the clone
    git clone -q --no-hardlinks "$src" "$work/nbsandbox" && git -C "$work/nbsandbox" checkout -q "$head" \
        || fail "cannot clone $src into $work/nbsandbox"
    mkdir -m 755 "$work/home"  # an empty home; the tests read it as nobody too
    mkdir -m 1777 "$work/tmp"
    echo "fresh_check: commit $head, clone in $work/nbsandbox; $runs run(s) of bash tools/test.sh" \
         "($( ((private_tmp)) && echo "an empty private /tmp" || echo "the host's /tmp"))" >&2
    if ((private_tmp)); then
        unshare --mount --propagation private -- bash "$0" --inner "$work" "$runs"
        status=$?
        ((status == 0)) && rm -rf "$work"
        exit $status
    fi
fi
clone=$work/nbsandbox
before=$(leftovers)

mounts() { awk '{print $4, $5}' /proc/self/mountinfo | sort; }
mounts_before=$(mounts)

# Processes running from the clone (its venv, its native launcher, kernels).
cmdline() { tr '\0' ' ' <"$1/cmdline"; } 2>/dev/null
strays() {
    local p
    for p in /proc/[0-9]*; do
        [[ ${p#/proc/} == "$$" ]] && continue
        if cmdline "$p" | grep -qF "$clone/" || [[ $(readlink "$p/exe" 2>/dev/null) == "$clone/"* ]]; then
            echo "${p#/proc/} $(cmdline "$p" | head -c 200)"
        fi
    done
}

failed=0
for ((i = 1; i <= runs; i++)); do
    log=$work/run-$i.log
    start=$SECONDS
    (cd "$clone" && env -u NBSANDBOX_ENGINE -u NBSANDBOX_ROOT -u NBSANDBOX_ADMIN_CONFIG \
        -u NBSANDBOX_PROOT -u NBSANDBOX_BWRAP -u IPYTHONDIR -u JUPYTER_PATH \
        -u JUPYTER_DATA_DIR -u JUPYTER_CONFIG_DIR -u JUPYTER_RUNTIME_DIR \
        -u PYTEST_ADDOPTS -u PYTEST_CURRENT_TEST -u VIRTUAL_ENV \
        HOME="$work/home" PIP_NO_CACHE_DIR=1 bash tools/test.sh) >"$log" 2>&1
    status=$?
    problems=()
    ((status == 0)) || problems+=("exit status $status")
    if grep -qE '^Traceback \(most recent call last\)|sqlite3\.[A-Za-z]*Error|Exception ignored in' "$log"; then
        problems+=("a traceback or error in the output: $(grep -m1 -nE '^Traceback|sqlite3\.[A-Za-z]*Error|Exception ignored in' "$log")")
    fi
    sleep 5  # janitors
    new=$(comm -13 <(echo "$before") <(leftovers) | tr '\n' ' ')
    [[ -z $new ]] || problems+=("left in /tmp: $new")
    procs=$(strays)
    [[ -z $procs ]] || problems+=("processes left: $(echo "$procs" | head -5 | tr '\n' ';')")
    new_mounts=$(comm -13 <(echo "$mounts_before") <(mounts) | tr '\n' ';')
    [[ -z $new_mounts ]] || problems+=("new mounts: $new_mounts")
    summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|[0-9]+ (passed|failed|error)' "$log" | tail -1)
    if ((${#problems[@]})); then
        failed=$((failed + 1))
        echo "fresh_check: run $i/$runs FAILED after $((SECONDS - start)) s: ${summary:-no pytest summary}" >&2
        printf 'fresh_check:   %s\n' "${problems[@]}" >&2
        echo "fresh_check:   log: $log" >&2
        for pid in $(echo "$procs" | awk '{print $1}'); do kill -KILL "$pid" 2>/dev/null; done
    else
        echo "fresh_check: run $i/$runs passed in $((SECONDS - start)) s: $summary" >&2
    fi
done

if ((failed)); then
    echo "fresh_check: $failed of $runs run(s) failed; the clone and logs are in $work" >&2
    exit 1
fi
((inner)) || rm -rf "$work"
echo "fresh_check: all $runs run(s) passed: no failure, traceback or leftover" >&2
