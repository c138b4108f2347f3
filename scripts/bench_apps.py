#!/usr/bin/env python3
"""Application benchmarks of issue 15, strata against the native disk (called by
scripts/bench, part `apps`):

  bench_apps.py STRATA_BIN WORKDIR OUT_JSON

1. tree: BENCH_TREE_FILES (100,000) files of 100 B in directories of 1,000, written once
   per target; then `ls -lR` and `find` of the tree, cold (sync + drop_caches, and a
   remount for strata) and warm (at once again), each timed as a whole process.
2. pgbench: PostgreSQL from Debian (/usr/lib/postgresql/*/bin; `apt-get install
   postgresql`), a cluster made by initdb on the target, `pgbench -i -s
   BENCH_PGBENCH_SCALE` (5), then `pgbench -c 4 -j 2 -T BENCH_PGBENCH_SECS` (40); tps
   (excluding connections). Run as the user postgres, socket in the cluster's directory.
The targets alternate (native, strata, native, ...) BENCH_APPS_REPEAT (1) times; the
report takes medians. Every mount is unmounted and every server stopped on exit.
"""
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from benchlib import mount, run, umount, unmount_all

STRATA, WORK, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
TREE_FILES = int(os.environ.get("BENCH_TREE_FILES", "100000"))
PER_DIR = 1000
PG_SCALE = int(os.environ.get("BENCH_PGBENCH_SCALE", "5"))
PG_SECS = int(os.environ.get("BENCH_PGBENCH_SECS", "40"))
REPEAT = int(os.environ.get("BENCH_APPS_REPEAT", "1"))
PARTS = os.environ.get("BENCH_APPS_PARTS", "tree,pgbench").split(",")
SERVERS = []


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class Target:
    def __init__(self, name):
        self.name = name
        self.base = os.path.join(WORK, name)
        self.store = os.path.join(self.base, "store")
        self.dir = os.path.join(self.base, "mnt") if name == "strata" else os.path.join(self.base, "dir")

    def setup(self):
        os.makedirs(self.base, exist_ok=True)
        if self.name == "strata":
            run("init", self.store)
            mount(self.store, self.dir)
        else:
            os.makedirs(self.dir, exist_ok=True)

    def cold(self):
        if self.name == "strata":
            umount(self.dir)
            drop_caches()
            mount(self.store, self.dir)
        else:
            drop_caches()

    def teardown(self):
        if self.name == "strata":
            umount(self.dir)
        subprocess.run(["rm", "-rf", "--one-file-system", self.base])


def timed(cmd, **kw):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def tree(t):
    root = os.path.join(t.dir, "tree")
    payload = b"x" * 100
    t0 = time.perf_counter()
    for i in range(TREE_FILES):
        if i % PER_DIR == 0:
            d = os.path.join(root, f"d{i // PER_DIR:04d}")
            os.makedirs(d)
        fd = os.open(os.path.join(d, f"f{i:07d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    made = time.perf_counter() - t0
    out = {"files": TREE_FILES, "create_s": made}
    for tool, cmd in (("ls -lR", ["ls", "-lR", root]), ("find", ["find", root])):
        t.cold()
        out[f"{tool} cold"] = timed(cmd)
        out[f"{tool} warm"] = timed(cmd)
    return out


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise SystemExit("pgbench part: PostgreSQL server not found (apt-get install postgresql)")
    return os.path.dirname(found[-1])


def as_postgres(args, **kw):
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, **kw)


def pgbench(t):
    bindir = pg_bin()
    data = os.path.join(t.dir, "pg")
    sock = os.path.join(t.base, "sock")
    os.makedirs(data)
    os.makedirs(sock, exist_ok=True)
    shutil.chown(data, "postgres", "postgres")
    shutil.chown(sock, "postgres", "postgres")
    os.chmod(data, 0o700)
    as_postgres([f"{bindir}/initdb", "-D", data, "--no-instructions", "-A", "trust"], stdout=subprocess.DEVNULL)
    opts = f"-k {sock} -c listen_addresses='' -p 5439"
    as_postgres([f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(sock, "pg.log"), "-w", "start"],
                stdout=subprocess.DEVNULL)
    SERVERS.append((bindir, data))
    try:
        conn = ["-h", sock, "-p", "5439"]
        as_postgres(["/usr/bin/pgbench", *conn, "-i", "-s", str(PG_SCALE), "-q", "postgres"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p = as_postgres(["/usr/bin/pgbench", *conn, "-c", "4", "-j", "2", "-T", str(PG_SECS), "postgres"],
                        capture_output=True, text=True)
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout)
        if not m:
            raise SystemExit(f"pgbench: no tps in its output:\n{p.stdout}\n{p.stderr}")
        return {"scale": PG_SCALE, "clients": 4, "seconds": PG_SECS, "tps": float(m.group(1))}
    finally:
        stop(bindir, data)


def stop(bindir, data):
    if (bindir, data) in SERVERS:
        SERVERS.remove((bindir, data))
        subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    os.makedirs(WORK, exist_ok=True)
    os.chmod(WORK, 0o755)
    runs = {"native": [], "strata": []}
    try:
        for rep in range(REPEAT):
            for name in ("native", "strata"):
                t = Target(name)
                t.setup()
                row = {}
                try:
                    if "tree" in PARTS:
                        row["tree"] = tree(t)
                        print(f"apps: {name} tree (rep {rep + 1}): {row['tree']}", flush=True)
                    if "pgbench" in PARTS:
                        row["pgbench"] = pgbench(t)
                        print(f"apps: {name} pgbench (rep {rep + 1}): {row['pgbench']}", flush=True)
                finally:
                    t.teardown()
                runs[name].append(row)
    finally:
        for bindir, data in list(SERVERS):
            stop(bindir, data)
        unmount_all()
    median = {}
    for name, rows in runs.items():
        m = {}
        for part in ("tree", "pgbench"):
            vals = [r[part] for r in rows if part in r]
            if vals:
                m[part] = {k: statistics.median(v[k] for v in vals) for k in vals[0]}
        median[name] = m
    with open(OUT, "w") as f:
        json.dump({"runs": runs, "median": median}, f, indent=1)


if __name__ == "__main__":
    main()
