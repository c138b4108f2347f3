#!/usr/bin/env python3
"""Reads after many generations (strata only; called by scripts/bench).

  bench_generations.py STRATA_BIN WORKDIR OUT_JSON

The claim measured: a read at any generation costs a bounded number of index reads,
independent of the number of generations; so after N generations, each rewriting 1% of a
file's blocks, cold sequential and random reads of the live file and of the oldest
snapshot's file run at least 0.9x as fast as after 1 generation.

1. A fresh store (`strata init STORE $STRATA_INIT_ARGS`), mounted; one file of
   BENCH_GEN_FILE_MIB MiB of incompressible data, fsynced; snapshot `g0000` (the oldest).
2. One generation: rewrite BENCH_GEN_REWRITE_PCT % of the file's blocks (the block size
   of the store's strata.toml) at random block-aligned offsets, fsync, `strata snapshot
   create MOUNT gNNNN`.
3. After generation 1, and again after generation BENCH_GEN_COUNT, four cold reads,
   each BENCH_GEN_REPEAT times (the median is reported); after generation COUNT (and in
   step 5) each read is also made, just before, on a copy of the store taken after
   generation 1, so the two figures of a ratio come from the same minutes (this shared
   disk drifts by tens of percent over a run). Each read comes after `strata umount`,
   `sync; echo 3 > /proc/sys/vm/drop_caches`, `strata mount` (BENCH_GEN_REMOUNT=0: the
   page cache is dropped but the daemon stays up) and with a fresh open:
     live-seq     the live file, read whole in 1 MiB reads
     oldest-seq   MOUNT/.snapshots/g0000/file, the same
     live-rand    BENCH_GEN_RANDOM_READS block-sized reads at random block-aligned offsets
                  (the same offsets every time, seed BENCH_GEN_SEED; POSIX_FADV_RANDOM)
     oldest-rand  the same on the oldest snapshot's file
   and the store's size (allocated bytes of packs/ and meta/, unmounted). The first
   live-seq run after COUNT generations finds the file scattered, so the daemon lays out
   what it read by the unmount that follows (docs/packs.md, "Defragmentation on read"):
   later runs read the result; every run is in the JSON and the report shows the first
   one apart. Each read also
   records the CPU time the daemon spent meanwhile (utime + stime of its /proc stat):
   the metadata work per read, which this disk's drift does not blur.
4. How long building generations 2..N took (rewrites, fsyncs and snapshot creates), and
   the snapshot-create latency over them; then how long `strata verify STORE` takes
   (unmounted: every pack scrubbed, every record version and every tree checked).
5. With BENCH_GEN_REMOUNT on: `strata gc STORE` (nothing to free; it compacts meta/ when
   sled's file is much larger than what it holds) and the four reads again; then
   `strata defrag STORE` (the live file laid out in file order again) and `strata gc
   STORE` (frees the old copies), and the four reads again.
6. Reclaiming (unmounted): every snapshot deleted (`snapshot prune --keep last=1 --all`,
   then the last one), `strata flatten STORE --json` and `strata gc STORE --json` (their
   reports: records and bytes handled, time), then the store's size against a fresh store
   holding a copy of the same live file.
Every mount is unmounted on exit, also on error.
"""
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time

from benchlib import dir_bytes, mount, pct, run, umount, unmount_all

STRATA, WORK, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
E = os.environ
FILE_MIB = int(E.get("BENCH_GEN_FILE_MIB", "256"))
COUNT = int(E.get("BENCH_GEN_COUNT", "1000"))
REWRITE_PCT = float(E.get("BENCH_GEN_REWRITE_PCT", "1"))
RANDOM_READS = int(E.get("BENCH_GEN_RANDOM_READS", "2000"))
REPEAT = int(E.get("BENCH_GEN_REPEAT", "5"))
SEED = int(E.get("BENCH_GEN_SEED", "1"))
REMOUNT = E.get("BENCH_GEN_REMOUNT", "1") != "0"
INIT_ARGS = shlex.split(E.get("STRATA_INIT_ARGS", ""))
MIB = 1 << 20


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] generations: {msg}", flush=True)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def block_size(store):
    with open(f"{store}/strata.toml") as f:
        for line in f:
            key, _, value = line.partition("=")
            if key.strip() == "block_size":
                return int(value)
    return 32 << 10


def seq_read(path, size):
    """Reads the whole file in 1 MiB reads; MiB/s."""
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        t = time.perf_counter()
        while True:
            n = len(os.read(fd, MIB))
            if n == 0:
                break
            done += n
        secs = time.perf_counter() - t
    finally:
        os.close(fd)
    if done != size:
        raise SystemExit(f"{path}: read {done} bytes, expected {size}")
    return {"mib_s": done / MIB / secs, "seconds": secs}


def daemon_cpu(store, pid=None):
    """(pid, CPU seconds used so far) of the daemon serving `store` (its pid is in the
    store's lock file). Its CPU per read measures the index work, which the disk's
    drift does not blur."""
    if pid is None:
        with open(f"{store}/lock") as f:
            pid = f.read().strip()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return pid, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rand_read(path, offsets, bs):
    """Block-sized reads at `offsets`; reads/s and MiB/s."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        t = time.perf_counter()
        for off in offsets:
            if len(os.pread(fd, bs, off)) != bs:
                raise SystemExit(f"{path}: short read at {off}")
        secs = time.perf_counter() - t
    finally:
        os.close(fd)
    return {"ops_s": len(offsets) / secs, "mib_s": len(offsets) * bs / MIB / secs, "seconds": secs}


def daemon_events(store):
    """The lines of STORE/daemon.log about background work: mounts, relocation of blocks
    read scattered, flattening, gc."""
    keep = ("serving ", "last mount ended", "laid out again", "flattened", "gc ")
    try:
        with open(f"{store}/daemon.log", errors="replace") as f:
            return [line.rstrip() for line in f if any(k in line for k in keep)]
    except OSError:
        return []


class Bench:
    def __init__(self):
        self.base = os.path.join(WORK, "generations")
        self.store, self.mnt = self.base + "/store", self.base + "/mnt"
        os.makedirs(self.base, exist_ok=True)
        run("init", self.store, *INIT_ARGS)
        self.bs = block_size(self.store)
        self.size = FILE_MIB * MIB // self.bs * self.bs
        self.nblocks = self.size // self.bs
        self.per_gen = max(1, round(self.nblocks * REWRITE_PCT / 100))
        self.rng = random.Random(SEED)
        offsets_rng = random.Random(SEED + 1)
        self.offsets = [offsets_rng.randrange(self.nblocks) * self.bs for _ in range(RANDOM_READS)]
        self.generation = 0
        self.create_ms = []
        mount(self.store, self.mnt)
        self.file = f"{self.mnt}/file"

    def write_file(self):
        t = time.perf_counter()
        with open(self.file, "wb") as f:
            left = self.size
            while left > 0:
                n = min(MIB, left)
                f.write(os.urandom(n))
                left -= n
            f.flush()
            os.fsync(f.fileno())
        run("snapshot", "create", self.mnt, "g0000")
        return time.perf_counter() - t

    def generations(self, upto):
        """Rewrites, fsyncs and snapshots until generation `upto`."""
        fd = os.open(self.file, os.O_WRONLY)
        try:
            while self.generation < upto:
                self.generation += 1
                for idx in self.rng.sample(range(self.nblocks), self.per_gen):
                    os.pwrite(fd, os.urandom(self.bs), idx * self.bs)
                os.fsync(fd)
                t = time.perf_counter()
                run("snapshot", "create", self.mnt, f"g{self.generation:04}")
                self.create_ms.append((time.perf_counter() - t) * 1000)
                if self.generation % 100 == 0:
                    log(f"generation {self.generation} of {upto}")
        finally:
            os.close(fd)

    def cold(self, store=None):
        if REMOUNT:
            umount(self.mnt)
        drop_caches()
        if REMOUNT:
            mount(store or self.store, self.mnt)

    def store_bytes(self):
        if REMOUNT:
            umount(self.mnt)
        else:
            os.sync()
        sizes = {"packs_bytes": dir_bytes(f"{self.store}/packs"), "meta_bytes": dir_bytes(f"{self.store}/meta")}
        if REMOUNT:
            mount(self.store, self.mnt)
        return sizes

    def reclaim(self):
        umount(self.mnt)
        t = time.perf_counter()
        run("snapshot", "prune", self.store, "--keep", "last=1", "--all")
        run("snapshot", "delete", self.store, f"g{self.generation:04}")
        delete_s = time.perf_counter() - t
        flatten = json.loads(run("flatten", self.store, "--json").stdout)
        gc = json.loads(run("gc", self.store, "--json").stdout)
        after = {"packs_bytes": dir_bytes(f"{self.store}/packs"), "meta_bytes": dir_bytes(f"{self.store}/meta")}
        fresh, fresh_mnt = self.base + "/fresh", self.base + "/fresh-mnt"
        run("init", fresh, *INIT_ARGS)
        mount(self.store, self.mnt)
        mount(fresh, fresh_mnt)
        with open(self.file, "rb") as src, open(f"{fresh_mnt}/file", "wb") as dst:
            while chunk := src.read(MIB):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        umount(fresh_mnt)
        umount(self.mnt)
        fresh_sizes = {"packs_bytes": dir_bytes(f"{fresh}/packs"), "meta_bytes": dir_bytes(f"{fresh}/meta")}
        total = after["packs_bytes"] + after["meta_bytes"]
        fresh_total = fresh_sizes["packs_bytes"] + fresh_sizes["meta_bytes"]
        log(
            f"reclaim: deleted {self.generation + 1} snapshots in {delete_s:.1f} s; flatten "
            f"{flatten['records_examined']} records in {flatten['took_ms']} ms; gc freed "
            f"{gc['freed_bytes'] / MIB:.1f} MiB, moved {gc['bytes_moved'] / MIB:.1f} MiB in {gc['took_ms']} ms; "
            f"store {total / MIB:.1f} MiB against a fresh one's {fresh_total / MIB:.1f} MiB"
        )
        return {
            "delete_seconds": round(delete_s, 2),
            "flatten": flatten,
            "gc": gc,
            "after": after,
            "fresh": fresh_sizes,
            "ratio": total / fresh_total,
        }

    def measure(self, baseline=None):
        """Each read REPEAT times, cold. With `baseline` (a copy of the store after
        generation 1), every read is also made on it just before or just after (each
        first in turn), on the same mount point, so both figures of a pair come from the
        same minute of this disk; the report's ratio is the median of the pairs' ratios."""
        paths = {"live": self.file, "oldest": f"{self.mnt}/.snapshots/g0000/file"}
        names = [f"{t}-{k}" for t in paths for k in ("seq", "rand")]
        stores = ([baseline] if baseline else []) + [self.store]
        runs = {(st, n): [] for st in stores for n in names}
        for rep in range(REPEAT):
            for name in names:
                target, kind = name.split("-")
                # Each store goes first every other time: the read just after the other
                # store's unmount may be slower or faster for it.
                for st in stores if rep % 2 == 0 else stores[::-1]:
                    self.cold(st)
                    pid, cpu0 = daemon_cpu(st)
                    if kind == "seq":
                        r = seq_read(paths[target], self.size)
                    else:
                        r = rand_read(paths[target], self.offsets, self.bs)
                    r["cpu_s"] = daemon_cpu(st, pid)[1] - cpu0
                    runs[(st, name)].append(r)
        if baseline:
            self.cold()  # this store mounted again

        def medians(st):
            reads = {}
            for name in names:
                rs = runs[(st, name)]
                row = {
                    "runs": rs,
                    "mib_s": statistics.median(r["mib_s"] for r in rs),
                    "cpu_s": statistics.median(r["cpu_s"] for r in rs),
                }
                if "ops_s" in rs[0]:
                    row["ops_s"] = statistics.median(r["ops_s"] for r in rs)
                reads[name] = row
            return reads

        reads = medians(self.store)
        out = {"generations": self.generation, "reads": reads, "store": self.store_bytes()}
        if baseline:
            out["baseline_reads"] = medians(baseline)
        log(
            f"after {self.generation} generation(s): "
            + ", ".join(
                f"{n} {r['mib_s']:.1f} MiB/s" + (f" ({r['ops_s']:.0f} reads/s)" if "ops_s" in r else "")
                for n, r in reads.items()
            )
            + f"; packs {out['store']['packs_bytes'] / MIB:.1f} MiB, meta {out['store']['meta_bytes'] / MIB:.1f} MiB"
        )
        return out


def main():
    if COUNT < 1:
        raise SystemExit("BENCH_GEN_COUNT must be at least 1")
    os.makedirs(WORK, exist_ok=True)
    try:
        b = Bench()
        log(
            f"{FILE_MIB} MiB file, {b.bs // 1024} KiB blocks ({b.nblocks}), {b.per_gen} blocks rewritten per "
            f"generation, {COUNT} generations, {RANDOM_READS} random reads, {REPEAT} runs per figure"
        )
        write_s = b.write_file()
        b.generations(1)
        first = b.measure()
        baseline = None
        if COUNT > 1 and REMOUNT:
            # A copy of the store after generation 1, read alternately with the store
            # after COUNT generations for every ratio below.
            baseline = b.base + "/store-g1"
            umount(b.mnt)
            subprocess.run(["cp", "-a", "--sparse=always", b.store, baseline], check=True)
            mount(b.store, b.mnt)
        t = time.perf_counter()
        b.generations(COUNT)
        build_s = time.perf_counter() - t
        last = b.measure(baseline) if COUNT > 1 else first
        compacted = defragged = None
        # `strata verify` of the whole store (every pack scrubbed, every record version
        # and every tree checked), unmounted; it does not change the store.
        umount(b.mnt)
        t = time.perf_counter()
        run("verify", b.store)
        verify_s = time.perf_counter() - t
        log(f"verify after {COUNT} generations: {verify_s:.1f} s")
        mount(b.store, b.mnt)
        if COUNT > 1 and REMOUNT:
            # `strata gc` with nothing to free still measures meta/ against what it holds
            # and compacts it (unmounted); the same reads again.
            umount(b.mnt)
            gc = json.loads(run("gc", b.store, "--json").stdout)
            log(f"gc before compacted reads: meta {gc['meta_bytes'] / MIB:.1f} MiB for {gc['meta_content_bytes'] / MIB:.1f} MiB of records")
            mount(b.store, b.mnt)
            compacted = b.measure(baseline)
            compacted["gc"] = gc
            # `strata defrag` lays the live file out in file order again (copy-on-write
            # scattered it), `strata gc` frees the old copies; the same reads again.
            umount(b.mnt)
            defrag = json.loads(run("defrag", b.store, "--json").stdout)
            defrag_gc = json.loads(run("gc", b.store, "--json").stdout)
            log(
                f"defrag: {defrag['files_defragmented']} file(s), {defrag['runs_before']} runs -> "
                f"{defrag['runs_after']}, {defrag['bytes_moved'] / MIB:.1f} MiB copied in {defrag['took_ms']} ms; "
                f"gc freed {defrag_gc['freed_bytes'] / MIB:.1f} MiB"
            )
            mount(b.store, b.mnt)
            defragged = b.measure(baseline)
            defragged["defrag"] = defrag
            defragged["gc"] = defrag_gc
        creates = b.create_ms[1:]  # generations 2..N, the ones timed in build_s
        reclaim = b.reclaim()
        result = {
            "file_mib": FILE_MIB,
            "file_bytes": b.size,
            "block_size": b.bs,
            "blocks": b.nblocks,
            "rewrite_pct": REWRITE_PCT,
            "blocks_per_generation": b.per_gen,
            "generations": COUNT,
            "random_reads": RANDOM_READS,
            "repeat": REPEAT,
            "remount": REMOUNT,
            "seed": SEED,
            "strata_init_args": E.get("STRATA_INIT_ARGS", ""),
            "write_seconds": round(write_s, 2),
            "build_seconds": round(build_s, 2),
            "verify_seconds": round(verify_s, 2),
            "snapshot_create_ms": (
                {"p50": pct(creates, 0.5), "p99": pct(creates, 0.99), "max": max(creates)} if creates else None
            ),
            "at": [first, last],
            "after_gc": compacted,
            "after_defrag": defragged,
            "reclaim": reclaim,
            # When the daemon did background work that reads may have met: its log's
            # lines about it (the store goes with the work directory).
            "daemon_events": daemon_events(b.store),
        }
        subprocess.run(["rm", "-rf", b.base])
    finally:
        unmount_all()
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
