//! Snapshot consistency, end to end on real mounts:
//! - every snapshot taken while a writer appends numbered records holds an exact prefix of
//!   them: everything acknowledged before `strata snapshot create` started, nothing after
//!   it returned, never part of one write call;
//! - kill -9 of the daemon during `snapshot create`: after a remount the snapshot exists
//!   completely or not at all, and `strata verify` is clean;
//! - SQLite in WAL mode written during snapshots: every snapshot, opened by sqlite3 from a
//!   clone of it, passes `PRAGMA integrity_check`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_tests::cli::{env_u64, s, snapshot_names, UnmountOnDrop};
use strata_tests::data::Rng;
use strata_tests::{mounts, strata, TestStore};

/// Records of an odd size, so that record boundaries fall inside pages and blocks.
const REC: usize = 1000;

fn record(n: u64) -> Vec<u8> {
    let mut r = vec![0u8; REC];
    r[..8].copy_from_slice(b"SNAPREC!");
    r[8..16].copy_from_slice(&n.to_le_bytes());
    Rng::new(n ^ 0x9E37_79B9_7F4A_7C15).fill(&mut r[16..]);
    r
}

/// The number of whole records `data` holds, checking each; an error names the problem.
fn count_records(data: &[u8]) -> Result<u64, String> {
    if !data.len().is_multiple_of(REC) {
        return Err(format!(
            "{} bytes: not a whole number of {REC}-byte records (a write was split)",
            data.len()
        ));
    }
    for (n, chunk) in data.chunks(REC).enumerate() {
        if chunk != record(n as u64).as_slice() {
            return Err(format!("record {n} is not what was written"));
        }
    }
    Ok((data.len() / REC) as u64)
}

#[test]
fn every_snapshot_holds_an_exact_prefix_of_the_appended_records() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let file = mount.path("records.dat");
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, file) = (acked.clone(), stop.clone(), file.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .open(&file)
                .expect("open records file");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&record(n)).expect("append a record");
                n += 1;
                acked.store(n, Ordering::SeqCst);
            }
        })
    };
    // (name, acknowledged before the request, acknowledged after it returned)
    let mut taken = Vec::new();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..12 {
        let name = format!("s{i:02}");
        let before = acked.load(Ordering::SeqCst);
        strata(["snapshot", "create", ts.mnt.to_str().unwrap(), &name]).assert_success();
        let after = acked.load(Ordering::SeqCst);
        taken.push((name, before, after));
        std::thread::sleep(Duration::from_millis(50 + 20 * i));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let mut last = 0;
    for (name, before, after) in &taken {
        let data = std::fs::read(mount.path(format!(".snapshots/{name}/records.dat")))
            .unwrap_or_else(|e| panic!("read snapshot {name}: {e}"));
        let n = count_records(&data).unwrap_or_else(|e| panic!("snapshot {name}: {e}"));
        assert!(
            *before <= n && n <= *after,
            "snapshot {name} holds {n} records; {before} were acknowledged before the request and {after} when it returned"
        );
        assert!(
            n >= last,
            "snapshot {name} holds fewer records than the one before"
        );
        last = n;
    }
    assert!(last > 0, "the writer wrote nothing");
    mount.unmount();
    ts.assert_verify_clean();
}

#[test]
fn kill_9_during_snapshot_create_leaves_all_or_nothing() {
    let runs = env_u64("STRATA_SNAPSHOT_CRASH_RUNS").unwrap_or(8);
    let seed = Rng::seed_from_time();
    eprintln!("snapshot crash test: {runs} runs, seed {seed}");
    let mut rng = Rng::new(seed);
    let ts = TestStore::new();
    // Content each snapshot must hold if it exists: file name -> bytes.
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for run in 0..runs {
        let mut mount = ts.mount();
        let data: Vec<u8> = (0..(256 << 10) + run as usize * 7777)
            .map(|i| (i as u64 * 31 + run) as u8)
            .collect();
        // Durable before the snapshot request: whoever completes the snapshot (the daemon,
        // or the CLI itself after the daemon died) must include it.
        strata_tests::data::write_synced(&mount.path(format!("f{run}")), &data).unwrap();
        let name = format!("crash-{run}");
        let mut cli = Command::new(strata_tests::binary::strata_bin())
            .args(["snapshot", "create", ts.mnt.to_str().unwrap(), &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.range(0, 15_000)));
        mount.crash();
        let _ = cli.wait();
        mount.unmount();
        let names = snapshot_names(s(&ts.store));
        if names.contains(&name) {
            expected.push((name.clone(), data.clone()));
        }
        // Every snapshot that exists is complete: all files of its time, exact bytes.
        ts.assert_verify_clean();
        let mount = ts.mount();
        for (snap, bytes) in &expected {
            let idx = snap.trim_start_matches("crash-");
            let got = std::fs::read(mount.path(format!(".snapshots/{snap}/f{idx}")))
                .unwrap_or_else(|e| panic!("run {run}: snapshot {snap}: {e}"));
            assert!(got == *bytes, "run {run}: snapshot {snap}: f{idx} differs");
        }
        for n in &names {
            assert!(n.starts_with("crash-"), "unexpected snapshot {n}");
        }
        mount.unmount();
    }
    eprintln!("{} of {runs} snapshots survived the kill", expected.len());
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3 (Debian package sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sqlite_wal_snapshots_pass_integrity_check_in_a_clone() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let db = mount.path("app.db");
    assert_eq!(sqlite(&db, "PRAGMA journal_mode=WAL;"), "wal");
    sqlite(
        &db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, k TEXT); CREATE INDEX tk ON t(k);",
    );
    // One sqlite3 process writing transactions until its input ends.
    let mut writer = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = writer.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let start = Instant::now();
        let mut i = 0u64;
        while start.elapsed() < Duration::from_secs(4) {
            let sql = format!(
                "BEGIN; INSERT INTO t(v, k) VALUES (randomblob({}), 'k{i}'); UPDATE t SET k = k || 'x' WHERE id % 7 = {}; DELETE FROM t WHERE id % 11 = {} AND id < {}; COMMIT;\n",
                500 + i % 5000,
                i % 7,
                i % 11,
                i / 2
            );
            if input.write_all(sql.as_bytes()).is_err() {
                break;
            }
            i += 1;
        }
        i
    });
    let mut names = Vec::new();
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(600));
        let name = format!("db-{i}");
        strata(["snapshot", "create", ts.mnt.to_str().unwrap(), &name]).assert_success();
        names.push(name);
    }
    let statements = feeder.join().unwrap();
    let status = writer.wait().unwrap();
    assert!(status.success(), "the sqlite3 writer failed");
    assert!(statements > 10, "only {statements} transactions ran");
    let clone_mnt = ts.store.parent().unwrap().join("clone-mnt");
    std::fs::create_dir_all(&clone_mnt).unwrap();
    let _guard = UnmountOnDrop(clone_mnt.clone());
    for name in &names {
        let branch = format!("check-{name}");
        strata(["clone", ts.store.to_str().unwrap(), name, &branch]).assert_success();
        strata([
            "mount",
            "--branch",
            &branch,
            ts.store.to_str().unwrap(),
            clone_mnt.to_str().unwrap(),
        ])
        .assert_success();
        let check = Command::new("sqlite3")
            .arg(clone_mnt.join("app.db"))
            .arg("PRAGMA integrity_check; SELECT count(*) FROM t;")
            .output()
            .unwrap();
        let umount = strata(["umount", clone_mnt.to_str().unwrap()]);
        if !umount.success() {
            mounts::force_unmount(&clone_mnt);
        }
        let out = String::from_utf8_lossy(&check.stdout).to_string();
        assert!(
            check.status.success() && out.lines().next() == Some("ok"),
            "snapshot {name}: integrity_check: {out}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        umount.assert_success();
    }
    mount.unmount();
    ts.assert_verify_clean();
}
