//! kill -9 of the daemon loses nothing that was fsynced: a writer process appends
//! numbered 4 KiB records to a file on the mount, fsyncing each and reporting the last
//! durable one; the daemon is killed at a random moment; `strata umount` clears the dead
//! mount; after remount every acknowledged record of every run so far is intact and
//! `strata verify` is clean. Runs `STRATA_CRASH_RUNS` times (default 10); the random seed
//! is printed and can be set with `STRATA_CRASH_SEED`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_tests::cli::env_u64;
use strata_tests::data::Rng;
use strata_tests::records::{check_records, RECORD_SIZE};
use strata_tests::{sys, TestStore};

#[test]
fn kill_9_loses_no_fsynced_record() {
    let runs = env_u64("STRATA_CRASH_RUNS").unwrap_or(10);
    let seed = env_u64("STRATA_CRASH_SEED").unwrap_or_else(Rng::seed_from_time);
    eprintln!("crash test: {runs} runs, STRATA_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let ts = TestStore::new();
    // (file name, records acknowledged) of every run so far.
    let mut acknowledged: Vec<(String, u64)> = Vec::new();

    for run in 0..runs {
        let mut mount = ts.mount();
        for (name, count) in &acknowledged {
            let data = std::fs::read(ts.path(name))
                .unwrap_or_else(|err| panic!("run {run}: read {name}: {err}"));
            if let Err(problem) = check_records(&data, *count) {
                panic!("run {run} (seed {seed}): {name}: {problem}");
            }
        }

        let name = format!("records-{run}.dat");
        let mut writer = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
            .arg(ts.path(&name))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start crash_writer");
        let stdout = writer.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line
                    .strip_prefix("ack ")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    last = Some(n);
                }
            }
            last
        });

        let delay = Duration::from_millis(rng.range(50, 1500));
        std::thread::sleep(delay);
        let pid = mount.crash();
        // The writer fails once the connection is gone; make sure it is gone.
        let _ = sys::kill(writer.id(), libc::SIGKILL);
        let _ = writer.wait();
        let last = reader.join().expect("reader thread");
        let count = last.map_or(0, |n| n + 1);
        eprintln!("run {run}: daemon {pid} killed after {delay:?}, {count} records acknowledged");
        acknowledged.push((name, count));

        let start = Instant::now();
        mount.unmount(); // strata umount of the stale mount
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "clearing the dead mount took {:?}",
            start.elapsed()
        );
        let verify = ts.verify();
        assert!(
            verify.success(),
            "run {run} (seed {seed}): strata verify after kill -9 failed:\n{}{}",
            verify.stdout,
            verify.stderr
        );
    }

    let mount = ts.mount();
    for (name, count) in &acknowledged {
        let data = std::fs::read(ts.path(name)).unwrap();
        if let Err(problem) = check_records(&data, *count) {
            panic!("final check (seed {seed}): {name}: {problem}");
        }
        assert!(data.len() >= *count as usize * RECORD_SIZE);
    }
    mount.unmount();
    ts.assert_verify_clean();
}
