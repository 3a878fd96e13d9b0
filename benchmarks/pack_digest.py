"""Cost of a pack's identity: digesting a root, and checking it again once stamped.

    python benchmarks/pack_digest.py [--mb 500] [--files 20000] [--json]

Builds a store root of about ``--mb`` megabytes in ``--files`` files (a few
large files and many small ones, as in a Python environment: pseudo-random
content, so nothing is sparse) in a temporary directory, then times:

* ``digest cold``   -- the first full digest after dropping the files from the page
                       cache where that is allowed (root only), else same as warm;
* ``digest warm``   -- a full digest with the files in the page cache;
* ``check stamped`` -- :func:`nbsandbox.identity.check` of the unchanged root once its
                       stamp exists (a walk of the tree's metadata, no file read);
* ``fingerprint``   -- that walk alone.

Each timed step runs ``--repeat`` times; the best is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbsandbox import identity
from nbsandbox.store import StoreRoot


def make_root(top: Path, megabytes: int, files: int) -> StoreRoot:
    store = top / "gnu" / "store"
    rng = random.Random(1)
    big = 4
    small = max(1, files - big)
    small_bytes = min(megabytes * 10**6 // 5, small * 16_000)
    big_each = (megabytes * 10**6 - small_bytes) // big
    block = rng.randbytes(1 << 20)
    for i in range(big):
        item = store / f"{i:032d}-lib-{i}"
        item.mkdir(parents=True)
        with open(item / "libbig.so", "wb") as f:
            left = big_each
            while left > 0:
                chunk = block[: min(left, len(block))]
                f.write(bytes([i]) + chunk[1:])
                left -= len(chunk)
    each = max(1, small_bytes // small)
    per_dir = 200
    py = store / ("9" * 32 + "-python-env")
    for i in range(small):
        d = py / "lib" / f"pkg{i // per_dir}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"mod{i}.py").write_bytes(rng.randbytes(each))
    return StoreRoot.open(top, prefix="/gnu/store")


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    top = Path(tempfile.mkdtemp(prefix="nbs-digest-bench-"))
    cache = Path(tempfile.mkdtemp(prefix="nbs-digest-cache-"))
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        root = make_root(top, args.mb, args.files)
        size = sum(f.stat().st_size for f in top.rglob("*") if f.is_file())
        cold = None
        if drop_caches():
            start = time.perf_counter()
            identity.compute(root)
            cold = time.perf_counter() - start
        digest = identity.compute(root)[0].digest
        warm = best(lambda: identity.compute(root), args.repeat)
        identity.check(root, digest)  # writes the stamp
        stamped = best(lambda: identity.check(root, digest), args.repeat)
        walk = best(lambda: identity.fingerprint(root), args.repeat)
        result = {"bytes": size, "files": args.files, "cpus": os.cpu_count(),
                  "digest_cold_s": cold, "digest_warm_s": warm,
                  "check_stamped_s": stamped, "fingerprint_s": walk}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"root: {size / 1e6:.0f} MB in {args.files} files, {os.cpu_count()} CPUs")
            if cold is not None:
                print(f"digest cold:   {cold:.2f} s")
            print(f"digest warm:   {warm:.2f} s")
            print(f"check stamped: {stamped:.3f} s")
            print(f"fingerprint:   {walk:.3f} s")
    finally:
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
