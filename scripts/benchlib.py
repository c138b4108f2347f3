"""Helpers shared by the strata-only benchmark parts (bench_snapshots.py,
bench_generations.py): running the strata binary, mounts that are unmounted on exit
(`unmount_all` in a `finally`), disk usage and percentiles."""
import os
import subprocess
import sys

STRATA = sys.argv[1]
MOUNTS = []


def run(*args, check=True):
    p = subprocess.run([STRATA, *args], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise SystemExit(f"strata {' '.join(args)} failed: {p.stderr.strip()}")
    return p


def mount(store, mnt):
    os.makedirs(mnt, exist_ok=True)
    run("mount", store, mnt)
    MOUNTS.append(mnt)


def umount(mnt):
    run("umount", mnt, check=False)
    if mnt in MOUNTS:
        MOUNTS.remove(mnt)


def unmount_all():
    for m in list(MOUNTS):
        umount(m)


def dir_bytes(path):
    """Bytes the files under `path` take on disk (allocated blocks, as du)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]
