//! `strata defrag` end to end, through the built binary and real FUSE mounts:
//! - a file scattered by rewrites over 8 snapshots is laid out in one run by the daemon
//!   while a reader reads it; the live tree and every snapshot read back what they held,
//!   the store verifies clean, a second defrag has nothing to do, and gc frees the old
//!   copies;
//! - kill -9 of the daemon in the middle of a defrag (several runs at random moments):
//!   the store verifies clean, every tree reads back as before, and the next defrag
//!   finishes the job. `STRATA_DEFRAG_CRASH_RUNS` (default 4) and `STRATA_CRASH_SEED`
//!   as in the crash test;
//! - defragmentation on read: reading the scattered live file through a mount has the
//!   daemon lay it out (by the unmount at the latest); reading it again queues nothing,
//!   nor does reading a snapshot, the file just after it was written, or the file with
//!   `defrag_on_read = false`; every tree reads back what it held.
//!
//! - defragmentation of rewritten files: a file rewritten until the unmount is laid out
//!   by it (`strata defrag` then finds nothing to do); a file rewritten while mounted is
//!   laid out once it cooled, and the daemon's gc frees the old copies; every tree reads
//!   back what it held.
//!
//! The other tests switch both off (`set_auto_defrag`): reading the trees back, or the
//! unmount after the rewrites, would lay the file out.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_tests::cli::{env_u64, ok, s};
use strata_tests::data::{checksum, random_bytes, Rng};
use strata_tests::trees::{all_sums, copy_tree};
use strata_tests::{strata_bin, Mount, TestStore};

const BS: usize = 32 << 10;

#[track_caller]
fn defrag_json(target: &str) -> Value {
    let out = ok(&["defrag", target, "--json"]);
    serde_json::from_str(&out)
        .unwrap_or_else(|err| panic!("defrag --json is not JSON ({err}):\n{out}"))
}

/// A store with `blocks` blocks of file `f`, written whole and snapshotted as `s0`, then
/// `rounds` times: a tenth of its blocks rewritten at random, fsync, snapshot `sN`.
/// Returns the snapshot names, and the checksum of `f` in each (and as "(live)").
fn scattered(
    ts: &TestStore,
    blocks: usize,
    rounds: u64,
    seed: u64,
) -> (Vec<String>, BTreeMap<String, String>) {
    let store = s(&ts.store);
    let m = ts.mount();
    let mut content = random_bytes(seed, blocks * BS);
    fs::write(m.path("f"), &content).unwrap();
    fs::write(m.path("g"), b"a small file").unwrap();
    let mut names = vec!["s0".to_string()];
    let mut sums = BTreeMap::from([("s0".to_string(), checksum(&content))]);
    ok(&["snapshot", "create", store, "s0"]);
    let mut rng = Rng::new(seed);
    let file = fs::OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap();
    for round in 1..=rounds {
        for _ in 0..blocks / 10 {
            let i = rng.range(0, blocks as u64);
            let data = random_bytes(seed + round * 100_000 + i, BS);
            file.write_all_at(&data, i * BS as u64).unwrap();
            content[i as usize * BS..(i as usize + 1) * BS].copy_from_slice(&data);
        }
        file.sync_all().unwrap();
        names.push(format!("s{round}"));
        sums.insert(names.last().unwrap().clone(), checksum(&content));
        ok(&["snapshot", "create", store, names.last().unwrap()]);
    }
    drop(file);
    m.unmount();
    sums.insert("(live)".to_string(), checksum(&content));
    (names, sums)
}

#[test]
fn defrag_lays_a_scattered_file_out_and_every_tree_reads_the_same() {
    const BLOCKS: usize = 512; // 16 MiB
    let ts = TestStore::new();
    ts.set_auto_defrag(false, false);
    let (names, _) = scattered(&ts, BLOCKS, 8, 7);
    let expected = all_sums(&ts, &names);

    let m = ts.mount();
    let live = expected["(live)"]["f"].clone();
    let stop = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        // A reader of the live file throughout the defrag: every read is whole and right.
        let reader = scope.spawn(|| {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                assert_eq!(checksum(&fs::read(m.path("f")).unwrap()), live);
                reads += 1;
            }
            reads
        });
        let report = defrag_json(s(&ts.mnt));
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        eprintln!("{reads} reads of the live file beside the defrag: {report}");
        report
    });
    assert_eq!(report["files_defragmented"], 1, "{report}");
    assert!(report["runs_before"].as_u64().unwrap() > 50, "{report}");
    assert_eq!(report["runs_after"], 1, "{report}");
    assert_eq!(report["blocks_moved"], BLOCKS as u64, "{report}");
    let again = defrag_json(s(&ts.mnt));
    assert_eq!(again["files_defragmented"], 0, "{again}");
    m.unmount();

    assert_eq!(all_sums(&ts, &names), expected);
    ts.assert_verify_clean();
    gc_frees_at_least(&ts, (BLOCKS * BS / 2) as u64);
    assert_eq!(all_sums(&ts, &names), expected);
    ts.assert_verify_clean();
}

#[test]
fn kill_9_during_defrag_loses_nothing() {
    const BLOCKS: usize = 1536; // 48 MiB
    let runs = env_u64("STRATA_DEFRAG_CRASH_RUNS").unwrap_or(4);
    let seed = env_u64("STRATA_CRASH_SEED").unwrap_or_else(Rng::seed_from_time);
    eprintln!("defrag crash test: {runs} runs, STRATA_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let template = TestStore::new();
    template.set_auto_defrag(false, false);
    let (names, _) = scattered(&template, BLOCKS, 6, 11);
    let expected: BTreeMap<_, _> = all_sums(&template, &names);
    let copy = || {
        let ts = TestStore::uninitialized();
        copy_tree(&template.store, &ts.store);
        ts
    };

    // Calibration: how long an uninterrupted defrag of a copy takes.
    let cal = copy();
    let m = cal.mount_env(&[("STRATA_DEFRAG_GROUP", (4u64 << 20).to_string().as_ref())]);
    let started = Instant::now();
    let report = defrag_json(s(&cal.mnt));
    let took = started.elapsed();
    m.unmount();
    eprintln!("defrag of the template: {took:?}: {report}");
    assert_eq!(report["runs_after"], 1, "{report}");
    drop(cal);

    for run in 0..runs {
        let ts = copy();
        // Copies made durable every 4 MiB: a kill lands between commits of 12 groups.
        let mut m = ts.mount_env(&[("STRATA_DEFRAG_GROUP", (4u64 << 20).to_string().as_ref())]);
        let mut defrag = Command::new(strata_bin())
            .args(["defrag".as_ref(), ts.mnt.as_os_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start strata defrag");
        let delay = Duration::from_micros(rng.range(0, took.as_micros() as u64 * 5 / 4 + 1));
        std::thread::sleep(delay);
        let pid = m.crash();
        let status = defrag.wait().expect("wait for strata defrag");
        let log = fs::read_to_string(ts.store.join("daemon.log")).unwrap_or_default();
        let committed = log.matches("defrag: moves committed").count();
        eprintln!(
            "run {run}: daemon {pid} killed {delay:?} into the defrag, {committed} group(s) \
             of copies committed (defrag exited {status})"
        );
        m.unmount(); // clears the dead mount
        let verify = ts.verify();
        assert!(
            verify.success(),
            "run {run} (seed {seed}): strata verify after kill -9 during defrag:\n{}{}",
            verify.stdout,
            verify.stderr
        );
        assert_eq!(
            all_sums(&ts, &names),
            expected,
            "run {run} (seed {seed}): trees after kill -9 during defrag"
        );
        let report = defrag_json(s(&ts.store));
        let runs_after = report["runs_after"].as_u64().unwrap();
        assert!(
            report["files_defragmented"] == 0 || runs_after == 1,
            "run {run} (seed {seed}): the defrag after the crash: {report}"
        );
        ts.assert_verify_clean();
    }
}

/// Runs `strata gc` on the unmounted store and checks that it freed at least `bytes`
/// (the old copies of the blocks laid out again).
#[track_caller]
fn gc_frees_at_least(ts: &TestStore, bytes: u64) {
    let gc: Value = serde_json::from_str(&ok(&["gc", s(&ts.store), "--json"])).unwrap();
    assert!(
        gc["freed_bytes"].as_u64().unwrap() >= bytes,
        "gc after laying out blocks freed less than {bytes} bytes: {gc}"
    );
}

/// How many blocks the daemon log says were laid out again.
fn laid_out(ts: &TestStore) -> u64 {
    ts.daemon_log_tail(100_000)
        .lines()
        .filter_map(|l| l.split("laid out again: ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Mounts with a daemon that treats every file as cold (no wait after a change).
fn mount_cold(ts: &TestStore) -> Mount<'_> {
    ts.mount_env(&[("STRATA_DEFRAG_HOT_SECS", "0".as_ref())])
}

#[test]
fn reading_a_scattered_live_file_has_the_daemon_lay_it_out() {
    const BLOCKS: usize = 512; // 16 MiB
    let ts = TestStore::new();
    ts.set_auto_defrag(false, false);
    let (names, _) = scattered(&ts, BLOCKS, 8, 9);
    // Just written, the file is hot: with the default wait, reading it moves nothing.
    ts.set_auto_defrag(true, false);
    let expected = all_sums(&ts, &names);
    assert_eq!(laid_out(&ts), 0, "{}", ts.daemon_log_tail(20));
    // Switched off, reading it moves nothing either (the wait set to 0 below).
    ts.set_auto_defrag(false, false);
    let m = mount_cold(&ts);
    assert_eq!(
        checksum(&fs::read(m.path("f")).unwrap()),
        expected["(live)"]["f"]
    );
    m.unmount();
    assert_eq!(laid_out(&ts), 0, "{}", ts.daemon_log_tail(20));

    ts.set_auto_defrag(true, false);
    // Reading a snapshot queues nothing: snapshots keep the layout they were written with.
    let m = mount_cold(&ts);
    let snap = fs::read(m.path(".snapshots/s8/f")).unwrap();
    assert_eq!(checksum(&snap), expected["s8"]["f"]);
    m.unmount();
    assert_eq!(laid_out(&ts), 0, "{}", ts.daemon_log_tail(20));

    // Reading the live file does; the last unmount waits until it is laid out.
    let m = mount_cold(&ts);
    let live = fs::read(m.path("f")).unwrap();
    assert_eq!(checksum(&live), expected["(live)"]["f"]);
    m.unmount();
    let moved = laid_out(&ts);
    assert!(
        moved >= BLOCKS as u64 / 2 && moved <= BLOCKS as u64,
        "{moved} blocks laid out:\n{}",
        ts.daemon_log_tail(20)
    );

    // Laid out, it reads in runs: reading it again queues nothing.
    let m = mount_cold(&ts);
    assert_eq!(
        checksum(&fs::read(m.path("f")).unwrap()),
        expected["(live)"]["f"]
    );
    m.unmount();
    assert_eq!(laid_out(&ts), moved, "{}", ts.daemon_log_tail(20));

    ts.set_auto_defrag(false, false);
    assert_eq!(all_sums(&ts, &names), expected);
    ts.assert_verify_clean();
    // The old copies are garbage that gc frees.
    gc_frees_at_least(&ts, moved * BS as u64 / 2);
    assert_eq!(all_sums(&ts, &names), expected);
    ts.assert_verify_clean();
}

/// The checksum of `f` in the live tree and in each of `names`, read through a mount.
fn f_sums(ts: &TestStore, names: &[String]) -> BTreeMap<String, String> {
    all_sums(ts, names)
        .into_iter()
        .map(|(tree, files)| (tree, files["f"].clone()))
        .collect()
}

#[test]
fn a_file_rewritten_until_the_unmount_is_laid_out_by_it() {
    const BLOCKS: usize = 512; // 16 MiB
    let ts = TestStore::new();
    ts.set_auto_defrag(false, true);
    // The rewrites scatter `f`; the unmount that ends `scattered` lays it out, hot as
    // it is: no write can follow.
    let (names, sums) = scattered(&ts, BLOCKS, 8, 13);
    let moved = laid_out(&ts);
    assert!(
        moved >= BLOCKS as u64 / 2,
        "{moved} blocks laid out:\n{}",
        ts.daemon_log_tail(20)
    );
    assert_eq!(f_sums(&ts, &names), sums);
    ts.assert_verify_clean();
    // It lies in runs now: `strata defrag` finds nothing to do, and a mount that wrote
    // nothing lays out nothing more.
    let report = defrag_json(s(&ts.store));
    assert_eq!(report["files_defragmented"], 0, "{report}");
    assert_eq!(laid_out(&ts), moved, "{}", ts.daemon_log_tail(20));
    gc_frees_at_least(&ts, moved * BS as u64 / 2);
    assert_eq!(f_sums(&ts, &names), sums);
    ts.assert_verify_clean();
}

#[test]
fn a_rewritten_file_that_cooled_is_laid_out_while_mounted() {
    const BLOCKS: usize = 512; // 16 MiB
    let ts = TestStore::new();
    ts.set_auto_defrag(false, false);
    let (names, sums) = scattered(&ts, BLOCKS, 8, 17);
    assert_eq!(laid_out(&ts), 0, "{}", ts.daemon_log_tail(20));
    ts.set_auto_defrag(false, true);
    // Every block rewritten with the bytes it holds: the content stays, the commit
    // wrote every range of the file (and so gives the budget the whole file). The daemon
    // runs a gc after 1 MiB laid out here (1 GiB by default).
    let m = ts.mount_env(&[
        ("STRATA_DEFRAG_HOT_SECS", "0".as_ref()),
        ("STRATA_RELOCATED_GC_BYTES", "1048576".as_ref()),
    ]);
    let content = fs::read(m.path("f")).unwrap();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap();
    file.write_all_at(&content, 0).unwrap();
    file.sync_all().unwrap();
    drop(file);
    // Cool at once (no wait in this test): the daemon lays it out while mounted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while laid_out(&ts) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let moved = laid_out(&ts);
    assert!(
        moved >= BLOCKS as u64 / 2,
        "{moved} blocks laid out while mounted:\n{}",
        ts.daemon_log_tail(20)
    );
    // Then the gc that frees the old copies, while mounted.
    let gc_line = || {
        ts.daemon_log_tail(100_000)
            .lines()
            .find_map(|l| {
                l.split("gc after relocating blocks found scattered: ")
                    .nth(1)
            })
            .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while gc_line().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let freed = gc_line().unwrap_or_else(|| panic!("no gc:\n{}", ts.daemon_log_tail(20)));
    assert!(
        freed >= moved * BS as u64 / 2,
        "{freed} bytes freed after laying out {moved} blocks"
    );
    assert_eq!(checksum(&fs::read(m.path("f")).unwrap()), sums["(live)"]);
    m.unmount();
    assert_eq!(laid_out(&ts), moved, "{}", ts.daemon_log_tail(20));
    assert_eq!(f_sums(&ts, &names), sums);
    ts.assert_verify_clean();
    let report = defrag_json(s(&ts.store));
    assert_eq!(report["files_defragmented"], 0, "{report}");
}
