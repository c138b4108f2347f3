#!/usr/bin/env python3
"""Snapshot benchmarks of DESIGN §6 (strata only; called by scripts/bench).

  bench_snapshots.py STRATA_BIN WORKDIR OUT_JSON [SIZES_GIB]

1. snapshot create latency at each data size (default 0.1,1,10 GiB): a fresh store,
   SIZE of 50%-compressible data written and flushed, then BENCH_SNAPSHOT_ROUNDS (100)
   rounds of: append one 4 KiB record to a small file, fsync it (the flush), time
   `strata snapshot create`
   end to end (process start, control socket, the commit) and the store-side time
   that the CLI reports in --json (`took_us`, when present). p50/p99/max per size.
2. snapshot create latency with dirty data in the page cache (BENCH_SNAPSHOT_DIRTY_MIB,
   default 0,64,1024): a fresh store, a file held open; each round writes that many MiB
   of 50%-compressible data buffered (no fsync: it sits in the kernel's page cache under
   the writeback cache), times `snapshot create` (what the write-back costs), then times
   a second one at once (nothing dirty: what a snapshot costs after the flush).
   BENCH_SNAPSHOT_DIRTY_ROUNDS (default 40,20,5 for the sizes) rounds per size.
3. store growth per snapshot: a 1 GiB file of incompressible data, snapshot, rewrite
   N random whole blocks, syncfs, snapshot; growth of the pack files and of the
   metadata directory, against N x the block's stored size.
Every mount is unmounted on exit, also on error.
"""
import json
import os
import random
import statistics
import subprocess
import sys
import time

from benchlib import dir_bytes, mount, pct, run, umount, unmount_all

STRATA, WORK, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
SIZES = [float(s) for s in (sys.argv[4] if len(sys.argv) > 4 else "0.1,1,10").split(",")]
ROUNDS = int(os.environ.get("BENCH_SNAPSHOT_ROUNDS", "100"))
DIRTY_MIB = [int(x) for x in os.environ.get("BENCH_SNAPSHOT_DIRTY_MIB", "0,64,1024").split(",") if x]
DIRTY_ROUNDS = [int(x) for x in os.environ.get("BENCH_SNAPSHOT_DIRTY_ROUNDS", "40,20,5").split(",") if x]


def syncfs(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.syncfs(fd) if hasattr(os, "syncfs") else subprocess.run(["sync", "-f", path], check=True)
    finally:
        os.close(fd)


def fill(path, size, compressible):
    """Writes `size` bytes: random, or half random half zeros per 4 KiB (50% compressible)."""
    chunk = 1 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            if compressible:
                parts = []
                for _ in range(n // 4096):
                    parts.append(os.urandom(2048))
                    parts.append(bytes(2048))
                buf = b"".join(parts)[:n]
            else:
                buf = os.urandom(n)
            f.write(buf)
            left -= n
        f.flush()
        os.fsync(f.fileno())


def latency(size_gib):
    base = os.path.join(WORK, f"lat-{size_gib}")
    store, mnt = base + "/store", base + "/mnt"
    os.makedirs(base, exist_ok=True)
    run("init", store)
    mount(store, mnt)
    t0 = time.time()
    size = int(size_gib * (1 << 30))
    per_file = 1 << 30
    i = 0
    while size > 0:
        n = min(per_file, size)
        fill(f"{mnt}/data-{i}", n, compressible=True)
        size -= n
        i += 1
    write_s = time.time() - t0
    e2e, store_side = [], []
    for r in range(ROUNDS):
        with open(f"{mnt}/log", "ab") as f:
            f.write(os.urandom(4096))
            f.flush()
            os.fsync(f.fileno())  # the flush: the snapshot itself commits only its records
        t = time.perf_counter()
        p = run("snapshot", "create", mnt, f"s{r:03}", "--json")
        e2e.append((time.perf_counter() - t) * 1000)
        try:
            took = json.loads(p.stdout).get("took_us")
            if took is not None:
                store_side.append(took / 1000)
        except ValueError:
            pass
    umount(mnt)
    out = {
        "size_gib": size_gib,
        "write_seconds": round(write_s, 1),
        "rounds": ROUNDS,
        "e2e_ms": {"p50": pct(e2e, 0.5), "p99": pct(e2e, 0.99), "max": max(e2e)},
    }
    if store_side:
        out["store_ms"] = {
            "p50": pct(store_side, 0.5),
            "p99": pct(store_side, 0.99),
            "max": max(store_side),
        }
    subprocess.run(["rm", "-rf", base])
    return out


def meminfo_dirty_mib():
    """Dirty + Writeback of /proc/meminfo, in MiB (what the page cache holds unwritten)."""
    total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Dirty", "Writeback"):
                total += int(rest.split()[0])
    return total / 1024


def half_compressible(n):
    parts = []
    for _ in range(n // 4096):
        parts.append(os.urandom(2048))
        parts.append(bytes(2048))
    return b"".join(parts)


def timed_snapshot(mnt, name):
    t = time.perf_counter()
    p = run("snapshot", "create", mnt, name, "--json")
    e2e = (time.perf_counter() - t) * 1000
    try:
        took = json.loads(p.stdout).get("took_us")
    except ValueError:
        took = None
    return e2e, (took / 1000 if took is not None else None)


def dirty(mib, rounds):
    base = os.path.join(WORK, f"dirty-{mib}")
    store, mnt = base + "/store", base + "/mnt"
    os.makedirs(base, exist_ok=True)
    run("init", store)
    mount(store, mnt)
    with_dirty, after, dirty_seen = [], [], []
    f = open(f"{mnt}/data", "wb", buffering=0)
    try:
        for r in range(rounds):
            # Rewrites the same span each round (the store does not grow without end).
            f.seek(0)
            for _ in range(mib):
                f.write(half_compressible(1 << 20))  # fresh data: no dedup
            dirty_seen.append(meminfo_dirty_mib())
            e2e, _ = timed_snapshot(mnt, f"d{r:03}")
            with_dirty.append(e2e)
            e2e, store_side = timed_snapshot(mnt, f"a{r:03}")
            after.append(store_side if store_side is not None else e2e)
    finally:
        f.close()
    umount(mnt)
    subprocess.run(["rm", "-rf", base])
    return {
        "dirty_mib": mib,
        "rounds": rounds,
        "page_cache_dirty_mib_p50": pct(dirty_seen, 0.5),
        "with_dirty_e2e_ms": {"p50": pct(with_dirty, 0.5), "p99": pct(with_dirty, 0.99), "max": max(with_dirty)},
        "after_flush_ms": {"p50": pct(after, 0.5), "p99": pct(after, 0.99), "max": max(after)},
    }


def growth(rewrites=(1, 10, 100, 1000)):
    base = os.path.join(WORK, "growth")
    store, mnt = base + "/store", base + "/mnt"
    os.makedirs(base, exist_ok=True)
    run("init", store)
    with open(f"{store}/strata.toml") as f:
        bs = next(int(l.split("=")[1]) for l in f if l.strip().startswith("block_size"))
    mount(store, mnt)
    fill(f"{mnt}/big", 1 << 30, compressible=False)
    syncfs(mnt)
    run("snapshot", "create", mnt, "base")
    rows = []
    rng = random.Random(1)
    nblocks = (1 << 30) // bs
    for n in rewrites:
        syncfs(mnt)
        packs0, meta0 = dir_bytes(f"{store}/packs"), dir_bytes(f"{store}/meta")
        with open(f"{mnt}/big", "r+b") as f:
            for idx in rng.sample(range(nblocks), n):
                f.seek(idx * bs)
                f.write(os.urandom(bs))
            f.flush()
            os.fsync(f.fileno())
        run("snapshot", "create", mnt, f"after-{n}")
        syncfs(mnt)
        packs1, meta1 = dir_bytes(f"{store}/packs"), dir_bytes(f"{store}/meta")
        rows.append({
            "blocks_rewritten": n,
            "block_size": bs,
            "expected_bytes": n * bs,
            "pack_growth": packs1 - packs0,
            "meta_growth": meta1 - meta0,
            "pack_growth_per_block": (packs1 - packs0) / n,
        })
    umount(mnt)
    subprocess.run(["rm", "-rf", base])
    return rows


def main():
    os.makedirs(WORK, exist_ok=True)
    result = {"latency": [], "dirty": [], "growth": []}
    try:
        for s in SIZES:
            result["latency"].append(latency(s))
            print(f"snapshot create at {s} GiB: {result['latency'][-1]}", flush=True)
        for i, mib in enumerate(DIRTY_MIB):
            rounds = DIRTY_ROUNDS[i] if i < len(DIRTY_ROUNDS) else DIRTY_ROUNDS[-1]
            result["dirty"].append(dirty(mib, rounds))
            print(f"snapshot create with {mib} MiB dirty: {result['dirty'][-1]}", flush=True)
        result["growth"] = growth()
        for row in result["growth"]:
            print(f"growth: {row}", flush=True)
    finally:
        unmount_all()
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
