//! Chain flattening end to end (docs/generations.md, "Flattening"), on real mounts.
//!
//! The template: a store with FILES files whose blocks are rewritten a few at a time over
//! GENERATIONS snapshots (with small files made and removed along the way); then every
//! snapshot but every KEEP_EVERY-th and the last is deleted while unmounted, so nothing
//! is flattened yet.
//! - `strata flatten STORE` (unmounted) removes exactly the deleted generations; the kept
//!   snapshots and the live tree read back what they held; a second run has nothing to
//!   do; `strata verify` is clean.
//! - A mounted daemon flattens by itself (it resumes at start); kill -9 of the daemon at
//!   random moments of its pass (`STRATA_FLATTEN_CRASH_RUNS`, default 6; small batches
//!   through `STRATA_FLATTEN_BATCH`): `strata verify` clean, kept snapshots and the live
//!   tree intact, and the pass completes at the next mount / `strata flatten`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_tests::cli::{env_u64, json, ok, s, snapshot_names};
use strata_tests::data::{random_bytes, Rng};
use strata_tests::trees::{all_sums, copy_tree, tree_sums};
use strata_tests::TestStore;

const FILES: u64 = 8;
const BLOCK: u64 = 32 << 10;
const FILE_LEN: u64 = 32 * BLOCK;
const GENERATIONS: u64 = 40;
const REWRITES: u64 = 12;
const KEEP_EVERY: u64 = 8;
/// Record versions per batch in the runs that are interrupted.
const SMALL_BATCH: &str = "8";

struct Template {
    ts: TestStore,
    kept: Vec<String>,
    deleted: u64,
    expected: BTreeMap<String, BTreeMap<String, String>>,
}

fn template() -> Template {
    let ts = TestStore::new();
    let store = s(&ts.store);
    let mut rng = Rng::new(7);
    let m = ts.mount();
    for f in 0..FILES {
        fs::write(m.path(format!("f{f}")), random_bytes(f, FILE_LEN as usize)).unwrap();
    }
    for i in 0..GENERATIONS {
        for _ in 0..REWRITES {
            let f = rng.range(0, FILES);
            let b = rng.range(0, FILE_LEN / BLOCK);
            let file = OpenOptions::new()
                .write(true)
                .open(m.path(format!("f{f}")))
                .unwrap();
            file.write_all_at(&random_bytes(1000 + i * 100 + b, BLOCK as usize), b * BLOCK)
                .unwrap();
        }
        fs::write(m.path(format!("small{i}")), format!("generation {i}")).unwrap();
        if i >= 3 {
            fs::remove_file(m.path(format!("small{}", i - 3))).unwrap();
        }
        ok(&["snapshot", "create", store, &format!("s{i}")]);
    }
    let kept: Vec<String> = (0..GENERATIONS)
        .filter(|i| i % KEEP_EVERY == 0 || *i == GENERATIONS - 1)
        .map(|i| format!("s{i}"))
        .collect();
    let mut expected = BTreeMap::new();
    let mut live = tree_sums(&m.path(""));
    live.retain(|k, _| !k.starts_with(".snapshots"));
    expected.insert("(live)".to_string(), live);
    for name in &kept {
        expected.insert(
            name.clone(),
            tree_sums(&m.path(format!(".snapshots/{name}"))),
        );
    }
    m.unmount();
    let mut deleted = 0;
    for i in 0..GENERATIONS {
        let name = format!("s{i}");
        if !kept.contains(&name) {
            ok(&["snapshot", "delete", store, &name]);
            deleted += 1;
        }
    }
    Template {
        ts,
        kept,
        deleted,
        expected,
    }
}

fn copy_of(template: &Template) -> TestStore {
    let ts = TestStore::uninitialized();
    copy_tree(&template.ts.store, &ts.store);
    ts
}

#[track_caller]
fn flatten_json(store: &str) -> Value {
    json(&["flatten", store, "--json"])
}

/// Flattens until nothing is left, then checks that a further run has nothing to do.
#[track_caller]
fn finish(store: &str) -> Value {
    let report = flatten_json(store);
    let again = flatten_json(store);
    assert_eq!(
        again["batches"], 0,
        "a second flatten still found work: {again}"
    );
    report
}

/// Waits until the daemon's log says its flatten pass is done.
fn wait_for_pass(ts: &TestStore, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let log = fs::read_to_string(ts.store.join("daemon.log")).unwrap_or_default();
        if log.contains("flatten: pass done") {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn flatten_removes_deleted_generations_and_kill_9_mid_pass_loses_nothing() {
    let runs = env_u64("STRATA_FLATTEN_CRASH_RUNS").unwrap_or(6);
    let seed = env_u64("STRATA_CRASH_SEED").unwrap_or_else(Rng::seed_from_time);
    eprintln!("flatten crash test: {runs} runs, STRATA_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let template = template();
    let small: [(&str, &OsStr); 1] = [("STRATA_FLATTEN_BATCH", OsStr::new(SMALL_BATCH))];

    // Unmounted: the command does the whole pass, with progress, and says what it did.
    let cal = copy_of(&template);
    let report = finish(s(&cal.store));
    eprintln!("strata flatten of the template: {report}");
    assert_eq!(report["generations_removed"], template.deleted, "{report}");
    assert!(report["records_folded"].as_u64().unwrap() > 0, "{report}");
    cal.assert_verify_clean();
    assert_eq!(snapshot_names(s(&cal.store)), template.kept);
    assert_eq!(all_sums(&cal, &template.kept), template.expected);
    drop(cal);

    // Mounted: the daemon's own pass, timed to aim the kills.
    let cal = copy_of(&template);
    let m = cal.mount_env(&small);
    let took = wait_for_pass(&cal, Duration::from_secs(120))
        .expect("the daemon did not finish flattening within 120 s");
    m.unmount();
    eprintln!("the daemon flattened the template in {took:?} (batches of {SMALL_BATCH})");
    assert_eq!(finish(s(&cal.store))["batches"], 0);
    drop(cal);

    let mut mid_pass = 0;
    for run in 0..runs {
        let ts = copy_of(&template);
        let mut m = ts.mount_env(&small);
        let delay = Duration::from_micros(rng.range(0, took.as_micros() as u64 + 1));
        std::thread::sleep(delay);
        let pid = m.crash();
        let log = fs::read_to_string(ts.store.join("daemon.log")).unwrap_or_default();
        let phase = if log.contains("flatten: pass done") {
            "after the pass"
        } else if log.contains("flatten: pass starts") {
            mid_pass += 1;
            "in the middle of the pass"
        } else {
            "before the pass started"
        };
        eprintln!("run {run}: daemon {pid} killed {delay:?} after mounting, {phase}");
        m.unmount(); // clears the dead mount
        let verify = ts.verify();
        assert!(
            verify.success(),
            "run {run} (seed {seed}): strata verify after kill -9 during flatten:\n{}{}",
            verify.stdout,
            verify.stderr
        );
        assert_eq!(snapshot_names(s(&ts.store)), template.kept, "run {run}");
        // Read through a mount, whose daemon resumes the pass meanwhile.
        assert_eq!(
            all_sums(&ts, &template.kept),
            template.expected,
            "run {run} (seed {seed}): trees after kill -9 during flatten"
        );
        finish(s(&ts.store));
        ts.assert_verify_clean();
        assert_eq!(
            all_sums(&ts, &template.kept),
            template.expected,
            "run {run} (seed {seed}): trees after the pass completed"
        );
    }
    eprintln!("{mid_pass} of {runs} kills landed in the middle of a pass");
    assert!(
        runs == 0 || mid_pass > 0,
        "no kill landed in the middle of a pass (seed {seed}): the test did not test it"
    );
}
