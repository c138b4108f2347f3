#!/usr/bin/env python3
"""Report of scripts/bench: reads the raw results of one run, prints the table, writes
OUTDIR/STAMP.json (everything, raw fio JSON included) and OUTDIR/STAMP.md (the table).

    bench_report.py RAW_ROOT OUTDIR STAMP      (metadata in BM_* environment variables)

RAW_ROOT/rN/ holds repetition N of the io part: TARGET.JOB.json (fio
--output-format=json) and TARGET.files-PHASE.json (small-file phases); RAW_ROOT/strata.*
holds the daemon's peak RSS, the store size and `strata stats --json`. With several
repetitions the table shows the median of each figure. RAW_ROOT/snapshots.json and
RAW_ROOT/generations.json are the results of the snapshots and generations parts
(bench_snapshots.py, bench_generations.py); BM_PARTS names the parts that ran.
"""
import glob
import json
import os
import statistics
import sys

raw_root, outdir, stamp = sys.argv[1:4]
E = os.environ
meta = {
    "date": stamp,
    "git": E.get("BM_GIT", ""),
    "kernel": E.get("BM_KERNEL", ""),
    "cpus": int(E.get("BM_CPUS", "0")),
    "memory": E.get("BM_MEM", ""),
    "fs": E.get("BM_FS", ""),
    "device": E.get("BM_DEVICE", ""),
    "rotational": E.get("BM_ROTA", ""),
    "strata_version": E.get("BM_STRATA_VERSION", ""),
    "strata_init_args": E.get("STRATA_INIT_ARGS", ""),
    "fio": os.popen("fio --version").read().strip(),
    "fuse_overlayfs": os.popen("fuse-overlayfs --version 2>&1 | grep -i 'fuse-overlayfs: version'").read().strip(),
    "sizes": {
        "seq": E.get("BM_SEQ", ""),
        "rand": E.get("BM_RAND", ""),
        "rand_runtime_s": int(E.get("BM_RAND_RUNTIME", "0")),
        "files": int(E.get("BM_FILES", "0")),
        "file_bytes": int(E.get("BM_FILE_BYTES", "0")),
    },
    "repeat": int(E.get("BM_REPEAT", "1")),
    "targets": E.get("BM_TARGETS", "").split(),
    "parts": E.get("BM_PARTS", "io snapshots generations").split(),
}
targets = meta["targets"]

FIO_JOBS = {  # job -> (direction, metric, unit)
    "seq-write": ("write", "bw", "MiB/s"),
    "seq-read-cold": ("read", "bw", "MiB/s"),
    "seq-read-warm": ("read", "bw", "MiB/s"),
    "rand-read-cold": ("read", "iops", "IOPS"),
    "rand-write-buf": ("write", "iops", "IOPS"),
    "rand-write-fsync": ("write", "iops", "IOPS"),
}
FILE_PHASES = ["create", "stat-cold", "stat-warm", "unlink"]
# DESIGN §6: row -> (reference target, factor, text)
TARGETS_S6 = {
    "seq-write": ("native", 0.8, "≥ 0.8× native"),
    "seq-read-cold": ("native", 0.8, "≥ 0.8× native"),
    "seq-read-warm": ("native", 0.9, "≥ 0.9× native"),
    "rand-read-cold": ("overlay", 1.0, "≥ 1.0× fuse-overlayfs"),
    "rand-write-buf": ("native", 0.2, "≥ 0.2× native"),
    "rand-write-fsync": ("native", 0.5, "≥ 0.5× native"),
    "files-create": ("overlay", 1.5, "≥ 1.5× fuse-overlayfs"),
    "files-stat-cold": ("overlay", 1.5, "≥ 1.5× fuse-overlayfs"),
    "files-stat-warm": ("overlay", 1.5, "≥ 1.5× fuse-overlayfs"),
    "files-unlink": ("overlay", 1.5, "≥ 1.5× fuse-overlayfs"),
    "files-total": ("overlay", 1.5, "≥ 1.5× fuse-overlayfs"),
}
UNITS = {**{k: v[2] for k, v in FIO_JOBS.items()}, **{"files-" + p: "files/s" for p in FILE_PHASES + ["total"]}}
ROWS = list(FIO_JOBS) + ["files-" + p for p in FILE_PHASES] + ["files-total"]
NAMES = {"native": "native", "overlay": "fuse-overlayfs", "strata": "strata"}

reps = sorted(glob.glob(os.path.join(raw_root, "r*")), key=lambda p: int(os.path.basename(p)[1:]))
values = {t: {row: [] for row in ROWS} for t in targets}
fio_raw = {}
for rep in reps:
    r = os.path.basename(rep)
    for t in targets:
        for job, (d, metric, _unit) in FIO_JOBS.items():
            p = os.path.join(rep, f"{t}.{job}.json")
            if not os.path.exists(p):
                continue
            j = json.load(open(p))
            fio_raw[f"{r}.{t}.{job}"] = j
            x = j["jobs"][0][d]
            values[t][job].append(x["bw_bytes"] / 2**20 if metric == "bw" else x["iops"])
        total, complete = 0.0, True
        for ph in FILE_PHASES:
            p = os.path.join(rep, f"{t}.files-{ph}.json")
            if not os.path.exists(p):
                complete = False
                continue
            j = json.load(open(p))
            values[t]["files-" + ph].append(j["ops_per_s"])
            total += j["seconds"]
        if complete and total > 0:
            values[t]["files-total"].append(len(FILE_PHASES) * meta["sizes"]["files"] / total)

results = {t: {row: (statistics.median(v) if v else None) for row, v in values[t].items()} for t in targets}
extra = {}
if "strata" in targets:

    def rd(name):
        p = os.path.join(raw_root, name)
        return open(p).read().strip() if os.path.exists(p) else None

    hwm = rd("strata.vmhwm-kib")
    extra["daemon_vmhwm_mib"] = int(hwm) / 1024 if hwm and hwm != "0" else None
    sb = rd("strata.store-bytes")
    extra["store_bytes_at_end"] = int(sb) if sb else None
    stats = rd("strata.stats.json")
    if stats:
        try:
            extra["stats"] = json.loads(stats)
        except ValueError:
            extra["stats_text"] = stats


def fmt(x):
    if x is None:
        return "–"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "–"


have = [t for t in targets if any(v is not None for v in results[t].values())]
pairs = [(a, b) for a, b in (("strata", "native"), ("strata", "overlay"), ("overlay", "native")) if a in have and b in have]
hdr = ["workload", "unit"] + [NAMES[t] for t in targets] + [f"{a}/{b}" for a, b in pairs] + ["§6 target", "met?"]
lines = []
if "io" in meta["parts"]:
    lines += ["| " + " | ".join(hdr) + " |", "|" + "|".join(["---"] * len(hdr)) + "|"]
    for row in ROWS:
        cells = [row, UNITS[row]] + [fmt(results[t][row]) for t in targets]
        cells += [ratio(results[a][row], results[b][row]) for a, b in pairs]
        ref, factor, text = TARGETS_S6[row]
        met = "–"
        if "strata" in have and ref in have and results["strata"][row] is not None and results[ref][row]:
            met = "yes" if results["strata"][row] >= factor * results[ref][row] else "**no**"
        lines.append("| " + " | ".join(cells + [text, met]) + " |")
    if "strata" in targets:
        lines.append("")
        lines.append(
            f"strata daemon peak RSS (VmHWM, max over its mounts): {fmt(extra.get('daemon_vmhwm_mib'))} MiB "
            "(§6: ≤ 256 MiB + the configured cache)"
        )
snap_path = os.path.join(raw_root, "snapshots.json")
if os.path.exists(snap_path):
    snaps = json.load(open(snap_path))
    extra["snapshots"] = snaps
    lines += ["", "| snapshot create | data | p50 | p99 | max | §6 target | met? |", "|---|---|---|---|---|---|---|"]
    p99s = []
    for r in snaps.get("latency", []):
        src = r.get("store_ms") or r["e2e_ms"]
        p99s.append(src["p99"])
        for label, d in (("store side", r.get("store_ms")), ("end to end (CLI)", r["e2e_ms"])):
            if d:
                lines.append(
                    f"| {label} | {r['size_gib']} GiB | {d['p50']:.2f} ms | {d['p99']:.2f} ms | {d['max']:.2f} ms | "
                    f"≤ 10 ms p99, ±20% across sizes | "
                    + ("yes" if label == "store side" and d["p99"] <= 10 else ("–" if label != "store side" else "**no**"))
                    + " |"
                )
    if len(p99s) > 1:
        spread = max(p99s) / min(p99s) if min(p99s) > 0 else float("inf")
        lines.append(f"\np99 spread across sizes (store side): {spread:.2f}× (target ≤ 1.2×, i.e. ±20%)")
    if snaps.get("dirty"):
        lines += [
            "",
            "| snapshot create with dirty data in the page cache | dirty (meminfo, p50) | rounds | with the write-back p50 | p99 | max | right after, p50 | p99 | target (after) | met? |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for d in snaps["dirty"]:
            w, a = d["with_dirty_e2e_ms"], d["after_flush_ms"]
            lines.append(
                f"| {d['dirty_mib']} MiB written | {d['page_cache_dirty_mib_p50']:,.0f} MiB | {d['rounds']} | "
                f"{w['p50']:.1f} ms | {w['p99']:.1f} ms | {w['max']:.1f} ms | {a['p50']:.2f} ms | {a['p99']:.2f} ms | "
                f"≤ 10 ms p99 | {'yes' if a['p99'] <= 10 else '**no**'} |"
            )
    if snaps.get("growth"):
        lines += ["", "| blocks rewritten after a snapshot | block size | pack growth | per block | metadata growth |", "|---|---|---|---|---|"]
        for g in snaps["growth"]:
            lines.append(
                f"| {g['blocks_rewritten']} | {g['block_size'] // 1024} KiB | {g['pack_growth'] / 1024:,.0f} KiB | "
                f"{g['pack_growth_per_block'] / 1024:.1f} KiB | {g['meta_growth'] / 1024:,.0f} KiB |"
            )
apps_path = os.path.join(raw_root, "apps.json")
if os.path.exists(apps_path):
    apps = json.load(open(apps_path))
    extra["apps"] = apps
    med = apps.get("median", {})
    nat, sta = med.get("native", {}), med.get("strata", {})
    if nat.get("tree") and sta.get("tree"):
        n = nat["tree"]["files"]
        lines += ["", f"| tree of {n:,} files of 100 B | native | strata | strata/native time | target | met? |", "|---|---|---|---|---|---|"]
        for key in ("ls -lR cold", "ls -lR warm", "find cold", "find warm", "create_s"):
            a, b = nat["tree"][key], sta["tree"][key]
            label = "create (python, one file at a time)" if key == "create_s" else f"`{key.split(' ')[0]}{' -lR' if 'ls' in key else ''}` {key.split(' ')[-1]}"
            target = "≤ 2× native time" if key != "create_s" else "–"
            met = ("yes" if b <= 2 * a else "**no**") if key != "create_s" else "–"
            lines.append(f"| {label} | {a:.2f} s | {b:.2f} s | {b / a:.2f}× | {target} | {met} |")
    if nat.get("pgbench") and sta.get("pgbench"):
        a, b = nat["pgbench"], sta["pgbench"]
        lines += ["", "| pgbench | native | strata | strata/native | target | met? |", "|---|---|---|---|---|---|",
                  f"| -c 4 -j 2 -T {a['seconds']}, scale {a['scale']} | {a['tps']:,.0f} tps | {b['tps']:,.0f} tps | {b['tps'] / a['tps']:.2f}× | ≥ 0.8× native | {'yes' if b['tps'] >= 0.8 * a['tps'] else '**no**'} |"]
gen_path = os.path.join(raw_root, "generations.json")
if os.path.exists(gen_path):
    gens = json.load(open(gen_path))
    extra["generations"] = gens
    first, last = gens["at"][0], gens["at"][-1]
    n = last["generations"]
    bs_kib = gens["block_size"] // 1024
    cold = "drop_caches + remount" if gens.get("remount", True) else "drop_caches, daemon kept up"
    if lines:
        lines.append("")
    lines += [
        f"Generations: one {gens['file_mib']} MiB incompressible file, {bs_kib} KiB blocks, each generation "
        f"rewrites {gens['blocks_per_generation']} random blocks ({gens['rewrite_pct']:g}%), fsync, snapshot; "
        f"cold reads ({cold}), median of {gens['repeat']}; {gens['random_reads']} random reads per run"
        + (
            "; the after-1 figures of each row were read alternately with it, from a copy of the store "
            "taken after generation 1, and the ratio is the median of the ratios of those pairs of reads."
            if last.get("baseline_reads")
            else "."
        ),
        "",
        f"| cold read | unit | after 1 generation | after {n} generations | {n}/1 | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    GEN_ROWS = [
        ("live-seq", "live file, sequential 1 MiB", "MiB/s", "mib_s"),
        ("live-rand", f"live file, random {bs_kib} KiB", "reads/s", "ops_s"),
        ("oldest-seq", "oldest snapshot's file, sequential 1 MiB", "MiB/s", "mib_s"),
        ("oldest-rand", f"oldest snapshot's file, random {bs_kib} KiB", "reads/s", "ops_s"),
    ]
    compacted = gens.get("after_gc")
    defragged = gens.get("after_defrag")
    def base(phase, key, metric):
        # The copy after generation 1 read alongside this phase, if it was.
        return (phase.get("baseline_reads") or first["reads"])[key][metric]

    def pair_ratio(phase, key, metric):
        # The median of the ratios of reads made side by side (run i of this phase and
        # of the copy after generation 1, one just after the other): the disk drifts by
        # tens of percent within minutes, a pair's two reads share its state. Without a
        # copy read alongside, the ratio of the medians.
        a_runs = (phase.get("baseline_reads") or {}).get(key, {}).get("runs", [])
        c_runs = phase["reads"][key].get("runs", [])
        if a_runs and len(a_runs) == len(c_runs) and all(r[metric] > 0 for r in a_runs):
            return statistics.median(c[metric] / a[metric] for a, c in zip(a_runs, c_runs))
        return phase["reads"][key][metric] / base(phase, key, metric)

    for key, label, unit, metric in GEN_ROWS:
        a, b = base(last, key, metric), last["reads"][key][metric]
        r = pair_ratio(last, key, metric)
        met = "yes" if r >= 0.9 else "**no**"
        lines.append(f"| {label} | {unit} | {fmt(a)} | {fmt(b)} | {r:.2f}× | ≥ 0.9× | {met} |")
        if key == "live-seq" and len(last["reads"][key].get("runs", [])) > 1:
            # The first cold read after the generations were built: one that finds the
            # file scattered has the daemon lay it out (defragmentation on read, by the
            # unmount that follows) and the later ones read the result. Shown apart, so
            # the median does not hide it.
            runs_a = (last.get("baseline_reads") or first["reads"])[key]["runs"]
            a, c = runs_a[0][metric], last["reads"][key]["runs"][0][metric]
            met = "yes" if c >= 0.9 * a else "**no**"
            lines.append(f"| … its first run alone | {unit} | {fmt(a)} | {fmt(c)} | {c / a:.2f}× | ≥ 0.9× | {met} |")
        for phase, what in ((compacted, "after `strata gc` (meta/ compacted)"), (defragged, "after `strata defrag` + `strata gc`")):
            if phase:
                a, c = base(phase, key, metric), phase["reads"][key][metric]
                r = pair_ratio(phase, key, metric)
                met = "yes" if r >= 0.9 else "**no**"
                lines.append(f"| … {what} | {unit} | {fmt(a)} | {fmt(c)} | {r:.2f}× | ≥ 0.9× | {met} |")
    if "cpu_s" in last["reads"]["live-seq"]:
        lines += [
            "",
            f"Daemon CPU per read (the same reads; CPU seconds of the daemon while each ran, median): "
            "the index work, which the disk's drift does not blur. Ratio = after 1 / after "
            f"{n}, so ≥ 0.9× means at most 11% more CPU.",
            "",
            f"| daemon CPU per read | after 1 generation | after {n} generations | 1/{n} |",
            "|---|---|---|---|",
        ]
        for key, label, _, _ in GEN_ROWS:
            for phase, what in ((last, ""), (compacted, "… after `strata gc`"), (defragged, "… after `strata defrag` + `strata gc`")):
                if phase and "cpu_s" in phase["reads"][key]:
                    a, c = base(phase, key, "cpu_s"), phase["reads"][key]["cpu_s"]
                    ratio = f"{a / c:.2f}×" if c > 0 else "–"
                    lines.append(f"| {what or label} | {a:.2f} s | {c:.2f} s | {ratio} |")
    mib = 1 << 20
    s1, sn = first["store"], last["store"]
    created = gens.get("snapshot_create_ms")
    lines += [
        "",
        f"Building generations 2–{n}: {gens['build_seconds']:,.1f} s"
        + (
            f" (snapshot create end to end p50 {created['p50']:.1f} ms, p99 {created['p99']:.1f} ms, "
            f"max {created['max']:.1f} ms)"
            if created
            else ""
        )
        + (f"; `strata verify` (unmounted) after {n}: {gens['verify_seconds']:,.1f} s" if "verify_seconds" in gens else "")
        + f"; store after 1 generation: packs {s1['packs_bytes'] / mib:,.1f} MiB, meta/ {s1['meta_bytes'] / mib:,.1f} MiB; "
        f"after {n}: packs {sn['packs_bytes'] / mib:,.1f} MiB, meta/ {sn['meta_bytes'] / mib:,.1f} MiB.",
    ]
    if defragged:
        df = defragged["defrag"]
        lines += [
            "",
            f"`strata defrag` (unmounted) after {n} generations: {df['files_defragmented']} file(s) laid out again, "
            f"{df['runs_before']:,} runs -> {df['runs_after']:,}, {df['bytes_moved'] / mib:,.1f} MiB copied in "
            f"{df['took_ms']:,} ms; the `strata gc` after it freed {defragged['gc']['freed_bytes'] / mib:,.1f} MiB.",
        ]
    rc = gens.get("reclaim")
    if rc:
        fl, gc = rc["flatten"], rc["gc"]
        secs = lambda ms: max(ms, 1) / 1000
        after_total = rc["after"]["packs_bytes"] + rc["after"]["meta_bytes"]
        fresh_total = rc["fresh"]["packs_bytes"] + rc["fresh"]["meta_bytes"]
        lines += [
            "",
            f"Reclaiming, unmounted: every snapshot deleted ({rc['delete_seconds']:.1f} s); `strata flatten`: "
            f"{fl['generations_removed']} generations removed, {fl['records_examined']:,} record versions in "
            f"{fl['took_ms']:,} ms ({fl['records_examined'] / secs(fl['took_ms']):,.0f}/s, longest batch "
            f"{fl['max_batch_ms']} ms); `strata gc`: {gc['freed_bytes'] / mib:,.1f} MiB freed, "
            f"{gc['bytes_moved'] / mib:,.1f} MiB copied in {gc['took_ms']:,} ms "
            f"({gc['bytes_moved'] / mib / secs(gc['took_ms']):,.0f} MiB/s copied). Store after: packs "
            f"{rc['after']['packs_bytes'] / mib:,.1f} MiB + meta/ {rc['after']['meta_bytes'] / mib:,.1f} MiB = "
            f"{after_total / mib:,.1f} MiB; a fresh store with the same live file: "
            f"{fresh_total / mib:,.1f} MiB ({rc['ratio']:.3f}×, target ≤ 1.10×: "
            f"{'yes' if rc['ratio'] <= 1.10 else '**no**'}).",
        ]
table = "\n".join(lines)
m = meta
header = (
    f"Run {m['date']} (git {m['git']}): {m['cpus']} CPUs, {m['memory']}, kernel {m['kernel']}, "
    f"{m['fs']} on {m['device']} (rotational={m['rotational']}); parts {', '.join(m['parts'])}"
    + (
        f"; seq {m['sizes']['seq']}, random {m['sizes']['rand']} (cap {m['sizes']['rand_runtime_s']} s), "
        f"{m['sizes']['files']} files of {m['sizes']['file_bytes']} B; "
        + (f"median of {m['repeat']} interleaved repetitions" if m["repeat"] > 1 else "1 repetition")
        if "io" in m["parts"]
        else ""
    )
    + (f"; strata init args: {m['strata_init_args']}" if m["strata_init_args"] else "")
)
print()
print(header)
print()
print(table)
os.makedirs(outdir, exist_ok=True)
with open(os.path.join(outdir, f"{stamp}.json"), "w") as f:
    json.dump({"meta": meta, "median": results, "all": values, "strata": extra, "fio": fio_raw}, f, indent=1)
with open(os.path.join(outdir, f"{stamp}.md"), "w") as f:
    f.write(header + "\n\n" + table + "\n")
print()
print(f"raw results: {os.path.join(outdir, stamp + '.json')}")
print(f"markdown:    {os.path.join(outdir, stamp + '.md')}")
