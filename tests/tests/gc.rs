//! `strata gc` end to end, through the built binary and real FUSE mounts:
//! - after every snapshot is deleted, gc brings the store (packs + meta, as `du` counts)
//!   within 10% of a fresh store into which the same live tree was copied;
//! - `snapshot delete --dry-run` and the EXCLUSIVE column say what gc then frees;
//! - kill -9 of the daemon in the middle of a gc (several runs at random moments): the
//!   store verifies clean, every snapshot kept reads back as recorded, and the next gc
//!   removes what the killed one left behind. `STRATA_GC_CRASH_RUNS` (default 6) and
//!   `STRATA_CRASH_SEED` as in the crash test;
//! - file operations go on while the daemon runs a gc (a writer rewrites files, some with
//!   contents the gc is dropping, and reads them back): every file reads back what was
//!   last written, and the store verifies clean.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_tests::cli::{env_u64, ok, s};
use strata_tests::data::{checksum, compressible_bytes, random_bytes, write_synced, Rng};
use strata_tests::trees::{all_sums, copy_tree, tree_sums};
use strata_tests::{strata_bin, TestStore};

#[track_caller]
fn gc_json(store: &str) -> Value {
    let out = ok(&["gc", store, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("gc --json is not JSON ({err}):\n{out}"))
}

/// Bytes the files under `dir` take on the disk (st_blocks, as `du`).
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// Sum of the sizes of STORE/packs/*.pack, and their number.
fn pack_files(store: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut count = 0;
    for entry in fs::read_dir(store.join("packs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pack") {
            bytes += fs::metadata(&path).unwrap().len();
            count += 1;
        }
    }
    (bytes, count)
}

/// Data of file `i` in version `v`: a mix of incompressible and compressible blocks.
fn version(i: u64, v: u64, len: usize) -> Vec<u8> {
    let seed = i * 1000 + v;
    let mut data = random_bytes(seed, len * 3 / 4);
    data.extend_from_slice(&compressible_bytes(seed, len - len * 3 / 4));
    data
}

#[test]
fn after_deleting_every_snapshot_gc_comes_within_10_percent_of_a_fresh_store() {
    const FILES: u64 = 16;
    const LEN: usize = 2 << 20; // 32 MiB of live data
    const SNAPSHOTS: u64 = 3;
    let ts = TestStore::new();
    let store = s(&ts.store);
    let m = ts.mount();
    fs::create_dir(m.path("d")).unwrap();
    // Versions 0..SNAPSHOTS, each snapshotted, then overwritten: files wholly, or only
    // their first half (so old and new blocks share packs and trees).
    for v in 0..=SNAPSHOTS {
        for i in 0..FILES {
            let path = m.path(format!("d/f{i}"));
            if v > 0 && i % 2 == 1 {
                let mut data = fs::read(&path).unwrap();
                data[..LEN / 2].copy_from_slice(&version(i, v, LEN)[..LEN / 2]);
                fs::write(&path, data).unwrap();
            } else {
                fs::write(&path, version(i, v, LEN)).unwrap();
            }
        }
        if v < SNAPSHOTS {
            ok(&["snapshot", "create", store, &format!("v{v}")]);
        }
    }
    let live = tree_sums(&m.path(""));
    for v in 0..SNAPSHOTS {
        ok(&["snapshot", "delete", store, &format!("v{v}")]);
    }
    let (before, _) = pack_files(&ts.store);
    let out = ok(&["gc", s(&ts.mnt)]);
    assert!(
        out.starts_with("gc: ")
            && out.contains(" examined, ")
            && out.contains(" freed (store packs "),
        "{out}"
    );
    m.unmount();
    let (after, _) = pack_files(&ts.store);
    assert!(after < before / 3, "packs {before} -> {after}: {out}");
    // gc found meta/ much larger than what it holds (sled keeps its file as large as the
    // history made it) and asked for a compaction: the next open of the store does it.
    assert!(
        out.contains("compacted at the next mount"),
        "gc did not ask for a metadata compaction: {out}"
    );
    ts.assert_verify_clean();

    // The same live tree, written into a fresh store.
    let fresh = TestStore::new();
    let fm = fresh.mount();
    fs::create_dir(fm.path("d")).unwrap();
    for i in 0..FILES {
        let mut data = version(i, 0, LEN);
        for v in 1..=SNAPSHOTS {
            if i % 2 == 1 {
                data[..LEN / 2].copy_from_slice(&version(i, v, LEN)[..LEN / 2]);
            } else {
                data = version(i, v, LEN);
            }
        }
        fs::write(fm.path(format!("d/f{i}")), data).unwrap();
    }
    assert_eq!(
        tree_sums(&fm.path("")),
        live,
        "the fresh store holds the same tree"
    );
    fm.unmount();

    let used = |store: &Path| disk_usage(&store.join("packs")) + disk_usage(&store.join("meta"));
    let (gc_packs, gc_meta) = (
        disk_usage(&ts.store.join("packs")),
        disk_usage(&ts.store.join("meta")),
    );
    let (fresh_packs, fresh_meta) = (
        disk_usage(&fresh.store.join("packs")),
        disk_usage(&fresh.store.join("meta")),
    );
    eprintln!(
        "10% test: after gc packs {gc_packs} + meta {gc_meta} = {}; fresh packs {fresh_packs} + \
         meta {fresh_meta} = {}; ratio {:.3}",
        used(&ts.store),
        used(&fresh.store),
        used(&ts.store) as f64 / used(&fresh.store) as f64
    );
    assert!(
        used(&ts.store) as f64 <= 1.10 * used(&fresh.store) as f64,
        "after gc {} bytes, a fresh store {} bytes",
        used(&ts.store),
        used(&fresh.store)
    );
    // The packs themselves: what gc controls, within 1% (the rest is sled's meta/).
    assert!(
        gc_packs as f64 <= 1.01 * fresh_packs as f64,
        "packs after gc {gc_packs}, fresh {fresh_packs}"
    );
    ts.assert_verify_clean();
    let m = ts.mount();
    assert_eq!(tree_sums(&m.path("")), live);
    m.unmount();
}

#[test]
fn dry_run_and_exclusive_column_say_what_gc_frees() {
    let ts = TestStore::new();
    let store = s(&ts.store);
    let m = ts.mount();
    fs::write(m.path("live"), version(1, 0, 6 << 20)).unwrap();
    fs::write(m.path("big"), version(2, 0, 8 << 20)).unwrap();
    ok(&["snapshot", "create", store, "old"]);
    fs::write(m.path("big"), version(2, 1, 8 << 20)).unwrap();
    fs::write(m.path("more"), version(3, 0, 1 << 20)).unwrap();
    ok(&["snapshot", "create", store, "kept"]);
    // Whatever garbage the writes left (blocks committed and overwritten within one
    // generation) goes first, so the next gc frees only what the deletion frees.
    gc_json(store);

    let rows: Value = serde_json::from_str(&ok(&["snapshot", "list", store, "--json"])).unwrap();
    let exclusive = rows[0]["exclusive_bytes"].as_u64().unwrap();
    assert_eq!(rows[0]["name"], "old");
    let out = ok(&["snapshot", "delete", store, "old", "--dry-run"]);
    assert_eq!(
        out,
        format!("would free {} ({exclusive} bytes)\n", human(exclusive))
    );
    assert!(exclusive >= 6 << 20, "{rows}");
    let (before, packs_before) = pack_files(&ts.store);
    let out = ok(&["snapshot", "delete", store, "old"]);
    assert!(
        out.contains("returns to the disk at the next `strata gc`"),
        "{out}"
    );
    let report = gc_json(s(&ts.mnt));
    let (after, packs_after) = pack_files(&ts.store);
    let freed = before - after;
    assert_eq!(report["freed_bytes"].as_u64().unwrap(), freed, "{report}");
    // Slack: a pack header (16 bytes) and footer (24) per pack file on either side (gc
    // seals the active pack, deletes or rewrites old packs, starts a new one).
    let slack = 40 * (packs_before + packs_after) as u64;
    eprintln!(
        "dry-run test: exclusive {exclusive}, freed {freed} (difference {}, slack allowed \
         {slack}; packs {packs_before} -> {packs_after})",
        freed as i64 - exclusive as i64
    );
    assert!(
        freed.abs_diff(exclusive) <= slack,
        "dry-run said {exclusive}, gc freed {freed}: {report}"
    );
    assert_eq!(fs::read(m.path("big")).unwrap(), version(2, 1, 8 << 20));
    assert_eq!(
        fs::read(m.path(".snapshots/kept/big")).unwrap(),
        version(2, 1, 8 << 20)
    );
    m.unmount();
    ts.assert_verify_clean();
}

fn human(bytes: u64) -> String {
    // The CLI's format_human (binary units, one decimal, no ".0").
    let units = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let (mut value, mut unit) = (bytes as f64 / 1024.0, 0);
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    let r = format!("{value:.1}");
    format!("{} {}", r.strip_suffix(".0").unwrap_or(&r), units[unit])
}

/// A store left unmounted with SESSIONS packs (one per mount session). Session `i`
/// writes files `keep{i}/*` (never changed again) and overwrites `tmp/*`, then takes
/// snapshot `s{i}`. All snapshots but the first and the last are then deleted: every
/// pack in between is about half garbage (its `tmp` version), so gc rewrites them all,
/// copying their `keep` halves, in several groups.
struct Template {
    ts: TestStore,
    kept: Vec<String>,
}

const SESSIONS: u64 = 6;
const PER_SESSION_FILES: u64 = 6;
const FILE_LEN: usize = 4 << 20;

fn template() -> Template {
    let ts = TestStore::new();
    let store = s(&ts.store);
    for i in 0..SESSIONS {
        let m = ts.mount();
        fs::create_dir_all(m.path(format!("keep{i}"))).unwrap();
        fs::create_dir_all(m.path("tmp")).unwrap();
        for f in 0..PER_SESSION_FILES {
            fs::write(
                m.path(format!("keep{i}/{f}")),
                random_bytes(i * 100 + f, FILE_LEN),
            )
            .unwrap();
            fs::write(
                m.path(format!("tmp/{f}")),
                random_bytes(5000 + i * 100 + f, FILE_LEN),
            )
            .unwrap();
        }
        ok(&["snapshot", "create", store, &format!("s{i}")]);
        m.unmount();
    }
    for i in 1..SESSIONS - 1 {
        ok(&["snapshot", "delete", store, &format!("s{i}")]);
    }
    Template {
        ts,
        kept: vec!["s0".into(), format!("s{}", SESSIONS - 1)],
    }
}

/// A new TestStore holding a copy of the template's store.
fn copy_of(template: &Template) -> TestStore {
    let ts = TestStore::uninitialized();
    copy_tree(&template.ts.store, &ts.store);
    ts
}

#[test]
fn kill_9_during_gc_loses_nothing() {
    let runs = env_u64("STRATA_GC_CRASH_RUNS").unwrap_or(6);
    let seed = env_u64("STRATA_CRASH_SEED").unwrap_or_else(Rng::seed_from_time);
    eprintln!("gc crash test: {runs} runs, STRATA_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let template = template();
    let expected = all_sums(&template.ts, &template.kept);
    let (template_packs, template_count) = pack_files(&template.ts.store);

    // Calibration: an uninterrupted gc of a copy (how long it takes, where it ends).
    let cal = copy_of(&template);
    let m = cal.mount();
    let started = Instant::now();
    let report = gc_json(s(&cal.mnt));
    let took = started.elapsed();
    m.unmount();
    let (clean_packs, clean_count) = pack_files(&cal.store);
    eprintln!(
        "gc of the template: {took:?}, packs {template_packs} bytes in {template_count} files \
         -> {clean_packs} in {clean_count}; {report}"
    );
    assert!(report["packs_rewritten"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(all_sums(&cal, &template.kept), expected);
    drop(cal);

    for run in 0..runs {
        let ts = copy_of(&template);
        let mut m = ts.mount();
        let mut gc = Command::new(strata_bin())
            .args(["gc".as_ref(), ts.mnt.as_os_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start strata gc");
        let delay = Duration::from_micros(rng.range(0, took.as_micros() as u64 * 5 / 4 + 1));
        std::thread::sleep(delay);
        let pid = m.crash();
        let status = gc.wait().expect("wait for strata gc");
        let (packs, count) = pack_files(&ts.store);
        // Where the kill landed: from the packs left, and the daemon's log (a group of
        // copies whose index change was committed, its old packs not all deleted yet).
        let log = fs::read_to_string(ts.store.join("daemon.log")).unwrap_or_default();
        let committed = log.matches("gc: moves committed").count();
        let phase = if (packs, count) == (clean_packs, clean_count) {
            "after the gc was done".to_string()
        } else if count == template_count && packs <= template_packs + 24 {
            "before it changed anything".to_string()
        } else if count > template_count {
            format!(
                "while copying or committing, {committed} group(s) committed, no old pack deleted"
            )
        } else {
            format!("{committed} group(s) committed, some old packs deleted")
        };
        eprintln!(
            "run {run}: daemon {pid} killed {delay:?} into the gc, {phase} (gc exited \
             {status}); packs on disk: {packs} bytes in {count} files"
        );
        m.unmount(); // clears the dead mount
        let verify = ts.verify();
        assert!(
            verify.success(),
            "run {run} (seed {seed}): strata verify after kill -9 during gc:\n{}{}",
            verify.stdout,
            verify.stderr
        );
        assert_eq!(
            all_sums(&ts, &template.kept),
            expected,
            "run {run} (seed {seed}): snapshots after kill -9 during gc"
        );
        // The next gc finishes the job, leftovers included. It need not reach the very
        // layout of an uninterrupted gc (the packs a crash left are cut differently), but
        // its policy leaves at most 5% of the pack bytes unused: allow 10%.
        let report = gc_json(s(&ts.store));
        let (packs, _) = pack_files(&ts.store);
        assert!(
            packs <= clean_packs + clean_packs / 10 + 40 * clean_count as u64,
            "run {run} (seed {seed}): after a second gc {packs} bytes of packs, an \
             uninterrupted gc leaves {clean_packs}: {report}"
        );
        ts.assert_verify_clean();
    }
}

#[test]
fn file_operations_go_on_during_gc() {
    // 64 MiB in 16 files, snapshotted, rewritten (odd files half), the snapshot deleted:
    // the gc drops the old versions and rewrites the pack holding them. Meanwhile a
    // writer on the mount reads those files back, writes files (every other one with an
    // old, dead-at-the-mark version, whose blocks its commit deduplicates against
    // entries the gc may be dropping) and fsyncs them. No timing is asserted.
    const FILES: u64 = 16;
    const LEN: usize = 4 << 20;
    let ts = TestStore::new();
    let store = s(&ts.store);
    let m = ts.mount();
    let old: Vec<Vec<u8>> = (0..FILES).map(|i| version(i, 0, LEN)).collect();
    for (i, data) in old.iter().enumerate() {
        fs::write(m.path(format!("f{i}")), data).unwrap();
    }
    ok(&["snapshot", "create", store, "old"]);
    let mut expected = BTreeMap::new();
    for i in 0..FILES {
        let mut data = version(i, 1, LEN);
        if i % 2 == 1 {
            data[LEN / 2..].copy_from_slice(&old[i as usize][LEN / 2..]);
        }
        fs::write(m.path(format!("f{i}")), &data).unwrap();
        expected.insert(format!("f{i}"), checksum(&data));
    }
    ok(&["snapshot", "delete", store, "old"]);

    let expected = Mutex::new(expected);
    let stop = AtomicBool::new(false);
    let (report, rounds) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut n = 0u64;
            while n < 4 || !stop.load(Ordering::Relaxed) {
                let i = n % FILES;
                let name = format!("f{i}");
                let want = expected.lock().unwrap()[&name].clone();
                let got = fs::read(m.path(&name)).unwrap();
                assert_eq!(checksum(&got), want, "round {n}: {name}");
                let (name, data) = if n.is_multiple_of(2) {
                    (name, old[i as usize].clone())
                } else {
                    (format!("w{}", n % 5), random_bytes(9000 + n, 1 << 20))
                };
                write_synced(&m.path(&name), &data).unwrap();
                let got = fs::read(m.path(&name)).unwrap();
                assert_eq!(checksum(&got), checksum(&data), "round {n}: {name}");
                expected.lock().unwrap().insert(name, checksum(&data));
                n += 1;
            }
            n
        });
        let report = gc_json(s(&ts.mnt));
        stop.store(true, Ordering::Relaxed);
        (report, writer.join().unwrap())
    });
    eprintln!(
        "gc beside {rounds} rounds of a writer: took {} ms, state lock held {:.1} ms, longest \
         lock hold {:.1} ms; {report}",
        report["took_ms"], report["state_lock_ms"], report["max_lock_ms"]
    );
    assert!(report["blocks_freed"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let expected = expected.into_inner().unwrap();
    let check = |root: &Path| {
        for (name, want) in &expected {
            let got = fs::read(root.join(name)).unwrap();
            assert_eq!(&checksum(&got), want, "{name} after the gc");
        }
    };
    check(&m.path(""));
    m.unmount();
    ts.assert_verify_clean();
    let m = ts.mount();
    check(&m.path(""));
    // The next gc, with nothing beside it, finds the store consistent too.
    let again = gc_json(s(&ts.mnt));
    assert!(again["problems"].as_array().unwrap().is_empty(), "{again}");
    check(&m.path(""));
    m.unmount();
    ts.assert_verify_clean();
}
