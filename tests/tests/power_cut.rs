//! Power cuts of a running strata: the store on a lossy disk (tests/src/lossy, the model
//! in docs/power-cut-harness.md), strata mounted over it, the power cut at a random time
//! or at a named point of the disk (the Nth write, fsync, rename or create of a pack, of
//! sled's files or of the intent log), the daemon killed with the cut, the disk rebooted with what it held
//! durably. After each cut and a remount: every record whose fsync returned is there,
//! `strata verify` is clean, and the store mounts without repair.
//!
//! `STRATA_POWER_CUTS` sets the number of cuts of each test (default below); the seed is
//! printed and can be set with `STRATA_POWER_SEED`.

use std::time::Duration;

use strata_tests::cli::env_u64;
use strata_tests::data::Rng;
use strata_tests::lossy::{Action, CutMode, Op, Point};
use strata_tests::power::{cut_and_reboot, logs_path, Acked, Writer};
use strata_tests::TestStore;

fn cuts(default: u64) -> u64 {
    env_u64("STRATA_POWER_CUTS").unwrap_or(default)
}

fn seed() -> u64 {
    env_u64("STRATA_POWER_SEED").unwrap_or_else(Rng::seed_from_time)
}

/// A cut's mode: everything unsynced lost, or a random part of it kept.
fn mode(rng: &mut Rng) -> CutMode {
    if rng.range(0, 2) == 0 {
        CutMode::DropAll
    } else {
        CutMode::Random(rng.next_u64())
    }
}

/// A named point of the store's disk, or None for a cut at a random time.
fn point(rng: &mut Rng) -> Option<Point> {
    let path = ["", "packs/", "meta/", "intent.log"][rng.range(0, 4) as usize];
    let p = match rng.range(0, 6) {
        0 => return None,
        1 => Point::new(Op::Write, rng.range(1, 400)),
        2 => Point::new(Op::Fsync, rng.range(1, 80)),
        3 => Point::new(Op::Rename, rng.range(1, 4)),
        4 => Point::new(Op::Create, rng.range(1, 4)),
        _ => Point::new(Op::Truncate, rng.range(1, 3)),
    };
    Some(if path.is_empty() { p } else { p.on(path) })
}

/// Cuts the power of the disk of `ts` at a random named point (or, if it is not reached
/// within 3 s, then) or at a random time; returns the mode, what was cut, and whether
/// a named point took it.
fn cut_somewhere(ts: &TestStore, rng: &mut Rng) -> (CutMode, String, bool) {
    let mode = mode(rng);
    match point(rng) {
        Some(p) => {
            ts.disk().arm(p.clone(), Action::Cut(mode));
            if ts.disk().wait_for_cut(Duration::from_secs(3)) {
                (mode, format!("at {p:?}"), true)
            } else {
                ts.disk().cut(mode);
                (mode, format!("after 3 s ({p:?} not reached)"), false)
            }
        }
        None => {
            let ms = rng.range(20, 1500);
            std::thread::sleep(Duration::from_millis(ms));
            ts.disk().cut(mode);
            (mode, format!("after {ms} ms"), false)
        }
    }
}

#[test]
fn fsynced_records_survive_power_cuts() {
    let cuts = cuts(12);
    let seed = seed();
    eprintln!("power cuts of the writer: {cuts} cuts, STRATA_POWER_SEED={seed}");
    let mut rng = Rng::new(seed);
    let ts = TestStore::on_lossy_disk();
    let logs = logs_path(&ts);
    let mut acked = Acked::default();
    let (mut at_points, mut at_times) = (0, 0);
    for cut in 0..cuts {
        let mount = ts.mount();
        let data = std::fs::read(ts.path("slots.dat")).unwrap_or_default();
        if let Err(problem) = acked.check(&data) {
            panic!(
                "cut {cut} (seed {seed}): an acknowledged record is lost: {problem}\n\
                 daemon logs of the cuts: {}",
                logs.display()
            );
        }
        let writer = Writer::start(
            env!("CARGO_BIN_EXE_power_writer").as_ref(),
            &ts.path("slots.dat"),
            rng.next_u64(),
            (cut + 1) * 1_000_000,
        );
        let (mode, what, at_point) = cut_somewhere(&ts, &mut rng);
        if at_point {
            at_points += 1;
        } else {
            at_times += 1;
        }
        let report = cut_and_reboot(&ts, mount, &logs);
        let acks = writer.stop();
        acked.add(&acks);
        eprintln!(
            "cut {cut}: {mode:?} {what}; {} writes acknowledged; disk kept {} and dropped {} \
             pages, kept {} and dropped {} directory operations",
            acks.len(),
            report.pages_kept,
            report.pages_dropped,
            report.dir_ops_kept,
            report.dir_ops_dropped
        );
        ts.assert_verify_clean();
    }
    let mount = ts.mount();
    let data = std::fs::read(ts.path("slots.dat")).unwrap_or_default();
    if let Err(problem) = acked.check(&data) {
        panic!("after the last cut (seed {seed}): {problem}");
    }
    mount.unmount();
    ts.assert_verify_clean();
    eprintln!(
        "power cuts of the writer: {cuts} cuts ({at_points} at named points, {at_times} at \
         random times), {} acknowledged writes checked, {} slots",
        acked.count,
        acked.slots.len()
    );
}

/// The payload of row `id` of the SQLite test, as an SQL expression of `id`.
const SQL_PAYLOAD: &str = "printf('%d:', id) || hex(zeroblob(400))";

/// Runs sqlite3 on `db` with `sql` and returns its stdout (panics on failure).
fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg("-bail")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3 (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "sqlite3 {} failed: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sqlite_wal_commits_survive_power_cuts() {
    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let cuts = cuts(6);
    let seed = seed();
    eprintln!("power cuts of SQLite: {cuts} cuts, STRATA_POWER_SEED={seed}");
    let mut rng = Rng::new(seed);
    let ts = TestStore::on_lossy_disk();
    let logs = logs_path(&ts);
    let db = ts.path("app.db");
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut counter_acked = 0u64;
    for cut in 0..cuts {
        let mount = ts.mount();
        // After each cut: the database is intact and holds every acknowledged commit.
        let setup = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
             CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL); \
             CREATE TABLE IF NOT EXISTS c(k INTEGER PRIMARY KEY, n INTEGER NOT NULL); \
             INSERT OR IGNORE INTO c VALUES (1, 0);";
        sqlite(&db, setup);
        let check = sqlite(&db, "PRAGMA integrity_check;");
        assert_eq!(
            check.trim(),
            "ok",
            "cut {cut} (seed {seed}): integrity_check"
        );
        let bad = sqlite(
            &db,
            &format!("SELECT count(*) FROM t WHERE v != {SQL_PAYLOAD};"),
        );
        assert_eq!(bad.trim(), "0", "cut {cut}: rows with wrong contents");
        let present: BTreeSet<u64> = sqlite(&db, "SELECT id FROM t;")
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        let missing: Vec<&u64> = acked.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "cut {cut} (seed {seed}): acknowledged commits lost: {missing:?} (logs: {})",
            logs.display()
        );
        let n: u64 = sqlite(&db, "SELECT n FROM c WHERE k = 1;")
            .trim()
            .parse()
            .unwrap();
        assert!(
            n >= counter_acked,
            "counter {n} < acknowledged {counter_acked}"
        );
        let next = present.iter().max().map_or(1, |m| m + 1);

        // A client committing transactions of 3 rows and a counter update, acknowledging
        // each commit once it returned.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "sqlite3", "-bail"])
            .arg(&db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sqlite3");
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let _ = writeln!(stdin, "PRAGMA synchronous=FULL;");
            for tx in 0..20_000u64 {
                let first = next + tx * 3;
                let rows: Vec<String> = (first..first + 3)
                    .map(|id| format!("({id}, {})", SQL_PAYLOAD.replace("id", &id.to_string())))
                    .collect();
                let sql = format!(
                    "BEGIN; INSERT INTO t VALUES {}; UPDATE c SET n = n + 1 WHERE k = 1; \
                     COMMIT; SELECT 'ack', {first}, (SELECT n FROM c WHERE k = 1);",
                    rows.join(", ")
                );
                if writeln!(stdin, "{sql}").is_err() {
                    return;
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split('|').collect();
                if f.len() == 3 && f[0] == "ack" {
                    acks.push((f[1].parse::<u64>().unwrap(), f[2].parse::<u64>().unwrap()));
                }
            }
            acks
        });
        let (mode, what, _) = cut_somewhere(&ts, &mut rng);
        let report = cut_and_reboot(&ts, mount, &logs);
        let _ = strata_tests::sys::kill(child.id(), libc::SIGKILL);
        let _ = child.wait();
        let _ = feeder.join();
        let acks = reader.join().unwrap();
        for (first, n) in &acks {
            acked.extend(*first..first + 3);
            counter_acked = counter_acked.max(*n);
        }
        eprintln!(
            "cut {cut}: {mode:?} {what}; {} commits acknowledged; disk dropped {} pages",
            acks.len(),
            report.pages_dropped
        );
        ts.assert_verify_clean();
    }
    let mount = ts.mount();
    assert_eq!(sqlite(&db, "PRAGMA integrity_check;").trim(), "ok");
    let present = sqlite(&db, "SELECT count(*) FROM t;")
        .trim()
        .parse::<u64>()
        .unwrap();
    assert!(present >= acked.len() as u64);
    mount.unmount();
    eprintln!(
        "power cuts of SQLite: {cuts} cuts, {} acknowledged rows checked",
        acked.len()
    );
}
