//! I/O errors and a full disk under a running strata, injected by the lossy disk
//! (docs/power-cut-harness.md, "Faults") while a writer overwrites and appends fsynced
//! records: EIO on the Nth write or fsync of a pack or of sled's files, ENOSPC on their
//! writes until space is freed, and a disk whose statfs says it is full.
//!
//! An application's fsync goes to the intent log; packs and sled are written by the
//! background commit (every few seconds), so a fault there reaches the application at its
//! next fsync after that commit. In every case: the application's fsync fails (EIO or
//! ENOSPC) when the store could not make its data durable (a failed write of the intent
//! log for lack of space falls back to a commit, which can), and strata never
//! acknowledges what it could not make durable;
//! after a failed fsync or sled write of its own files the store refuses further writes
//! (EIO) with one clear log line, while reads go on; after a transient error of a pack
//! write or a full disk, writes go on once space is back. Then the power is cut (the
//! pages the failed fsync should have written never reach the disk), the disk rebooted,
//! the store mounted again: every acknowledged record is there, `strata verify` is
//! clean, and writes work again.

use std::time::Duration;

use strata_tests::data::{write_synced, Rng};
use strata_tests::lossy::{Action, Op, Point};
use strata_tests::power::{cut_and_reboot, logs_path, Acked, Writer};
use strata_tests::TestStore;

/// The line the store logs when it starts refusing writes.
const REFUSAL: &str = "refusing writes until the store is mounted again";

struct Case {
    point: Point,
    errno: i32,
    /// How many times the operation fails (None: until the fault is removed).
    times: Option<u64>,
    /// What the application's failing call returns; None: the store may absorb the error
    /// (a background commit failed and the next one wrote the data), so the
    /// application may see no error at all.
    app_sees: Option<&'static [i32]>,
    /// The store refuses writes afterwards (until mounted again); None: if the
    /// application saw the error (a sled write failed on its fsync path: sled refuses
    /// everything after it), not otherwise (the write was retried).
    refuses: Option<bool>,
    /// A write of sled's own log failed: sled then refuses whatever needs its log,
    /// including reads that would rewrite a page of its cache, so a read may fail with
    /// EIO (never give wrong bytes) until the store is mounted again.
    sled_write: bool,
}

fn run(case: Case) {
    let seed = Rng::seed_from_time();
    let what = format!(
        "{} on {:?} ({:?} times)",
        errno_name(case.errno),
        case.point,
        case.times
    );
    let ts = TestStore::on_lossy_disk();
    let logs = logs_path(&ts);
    let mount = ts.mount();
    let bin = env!("CARGO_BIN_EXE_power_writer");
    let mut writer = Writer::start(bin.as_ref(), &ts.path("slots.dat"), seed, 1);
    std::thread::sleep(Duration::from_millis(300));
    ts.disk().arm(
        case.point.clone(),
        Action::Fail {
            errno: case.errno,
            times: case.times,
        },
    );
    // A fault of a pack or of sled's files hits the background commit (fsyncs go to the
    // intent log): the writer sees it at its next fsync after that, within seconds.
    let patience = if case.app_sees.is_some() { 20 } else { 8 };
    let stopped = writer.wait_for_exit(Duration::from_secs(patience));
    let (acks, error) = writer.stop_with_error();
    let injected = ts.disk().injected();
    assert!(!injected.is_empty(), "{what}: nothing was injected");
    let mut acked = Acked::default();
    acked.add(&acks);
    let refuses = case.refuses.unwrap_or(stopped);
    match case.app_sees {
        Some(errnos) => {
            let expected: Vec<String> = errnos
                .iter()
                .map(|e| std::io::Error::from_raw_os_error(*e).to_string())
                .collect();
            assert!(
                stopped,
                "{what}: the writer never saw an error ({} acknowledged; injected {:?})",
                acks.len(),
                injected
            );
            assert!(
                expected.iter().any(|e| error.contains(e)),
                "{what}: the application saw {error:?}, not one of {expected:?}"
            );
        }
        None if stopped => assert!(
            error.contains("Input/output error"),
            "{what}: the application saw {error:?}"
        ),
        None => {}
    }
    eprintln!(
        "{what}: {} writes acknowledged, then the application saw: {}; injected at {:?}",
        acks.len(),
        if error.trim().is_empty() {
            "no error"
        } else {
            error.trim()
        },
        injected[0]
    );

    // Reads go on (after a failed write of sled's log: right bytes or EIO).
    match std::fs::read(ts.path("slots.dat")) {
        Ok(data) => acked
            .check(&data)
            .unwrap_or_else(|p| panic!("{what}: before the cut: {p}")),
        Err(e) if case.sled_write && e.raw_os_error() == Some(libc::EIO) => {
            eprintln!("{what}: a read failed with EIO (sled refuses after its write failed)")
        }
        Err(e) => panic!("{what}: reads go on, but: {e}"),
    }
    if case.times.is_none() {
        ts.disk().disarm_all(); // space is back
    }
    let probe = write_synced(&ts.path("probe"), b"after the fault");
    let log =
        std::fs::read_to_string(ts.disk().backing().join("store/daemon.log")).unwrap_or_default();
    let refusals = log.lines().filter(|l| l.contains(REFUSAL)).count();
    if refuses {
        let err = probe.expect_err("writes are refused after the failure");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{what}: {err}");
        assert_eq!(refusals, 1, "{what}: one log line says so:\n{log}");
        let line = log.lines().find(|l| l.contains(REFUSAL)).unwrap();
        eprintln!("{what}: the daemon logged: {line}");
    } else {
        probe.unwrap_or_else(|e| panic!("{what}: writes go on after the fault: {e}"));
        assert_eq!(
            refusals, 0,
            "{what}: the store must not refuse writes:\n{log}"
        );
    }

    // The power goes: what the failed fsync should have written never reaches the disk.
    ts.disk().disarm_all();
    cut_and_reboot(&ts, mount, &logs);
    ts.assert_verify_clean();
    let mount = ts.mount();
    let data = std::fs::read(ts.path("slots.dat")).unwrap_or_default();
    acked
        .check(&data)
        .unwrap_or_else(|p| panic!("{what}: after the reboot: {p}"));
    write_synced(&ts.path("probe-2"), b"mounted again").expect("writes work again");
    mount.unmount();
    ts.assert_verify_clean();
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EIO => "EIO",
        libc::ENOSPC => "ENOSPC",
        _ => "errno",
    }
}

#[test]
fn eio_on_a_pack_fsync() {
    run(Case {
        point: Point::new(Op::Fsync, 1).on("packs/"),
        errno: libc::EIO,
        times: Some(1),
        app_sees: Some(&[libc::EIO]),
        sled_write: false,
        refuses: Some(true),
    });
}

#[test]
fn eio_on_an_fsync_of_sleds_files() {
    run(Case {
        point: Point::new(Op::Fsync, 1).on("meta/"),
        errno: libc::EIO,
        times: Some(1),
        app_sees: Some(&[libc::EIO]),
        sled_write: false,
        refuses: Some(true),
    });
}

#[test]
fn eio_on_a_pack_write() {
    run(Case {
        point: Point::new(Op::Write, 3).on("packs/"),
        errno: libc::EIO,
        times: Some(1),
        app_sees: None,
        sled_write: false,
        refuses: Some(false),
    });
}

#[test]
fn eio_on_a_write_of_sleds_files() {
    run(Case {
        point: Point::new(Op::Write, 2).on("meta/"),
        errno: libc::EIO,
        times: Some(1),
        app_sees: Some(&[libc::EIO]),
        sled_write: true,
        refuses: Some(true),
    });
}

#[test]
fn eio_on_a_write_of_the_intent_log() {
    run(Case {
        point: Point::new(Op::Write, 20).on("intent.log"),
        errno: libc::EIO,
        // Twice: a write the kernel splits into several requests returns short after a
        // failed one, and the log's writer retries the rest; the retry fails too.
        times: Some(2),
        app_sees: Some(&[libc::EIO]),
        sled_write: false,
        refuses: Some(true),
    });
}

#[test]
fn eio_on_an_fsync_of_the_intent_log() {
    run(Case {
        point: Point::new(Op::Fsync, 20).on("intent.log"),
        errno: libc::EIO,
        times: Some(1),
        app_sees: Some(&[libc::EIO]),
        sled_write: false,
        refuses: Some(true),
    });
}

#[test]
fn enospc_on_intent_log_writes_falls_back_to_commits() {
    run(Case {
        point: Point::new(Op::Write, 20).on("intent.log"),
        errno: libc::ENOSPC,
        times: None,
        app_sees: None,
        sled_write: false,
        refuses: Some(false),
    });
}

#[test]
fn enospc_on_pack_writes_until_space_is_freed() {
    run(Case {
        point: Point::new(Op::Write, 1).on("packs/"),
        errno: libc::ENOSPC,
        times: None,
        app_sees: Some(&[libc::ENOSPC]),
        sled_write: false,
        refuses: Some(false),
    });
}

#[test]
fn enospc_on_writes_of_sleds_files() {
    run(Case {
        point: Point::new(Op::Write, 2).on("meta/"),
        errno: libc::ENOSPC,
        times: None,
        // ENOSPC if the failing commit was the writer's own, EIO at its next fsync if
        // it was the background one.
        app_sees: Some(&[libc::ENOSPC, libc::EIO]),
        sled_write: true,
        refuses: Some(true),
    });
}

#[test]
fn a_disk_whose_statfs_says_it_is_full() {
    let ts = TestStore::on_lossy_disk();
    let mount = ts.mount();
    let bin = env!("CARGO_BIN_EXE_power_writer");
    let mut writer = Writer::start(bin.as_ref(), &ts.path("slots.dat"), 7, 1);
    std::thread::sleep(Duration::from_millis(300));
    ts.disk().set_full(true);
    assert!(
        writer.wait_for_exit(Duration::from_secs(20)),
        "the writer never saw ENOSPC"
    );
    let (acks, error) = writer.stop_with_error();
    assert!(error.contains("No space left on device"), "{error}");
    let mut acked = Acked::default();
    acked.add(&acks);
    let err = write_synced(&ts.path("probe"), &[1u8; 65536]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let data = std::fs::read(ts.path("slots.dat")).expect("reads go on");
    acked.check(&data).unwrap();
    assert!(
        ts.disk().injected().is_empty(),
        "refused before the disk was written"
    );
    ts.disk().set_full(false);
    write_synced(&ts.path("probe"), &[1u8; 65536]).expect("writes go on once there is space");
    eprintln!(
        "full disk: {} writes acknowledged, then the application saw: {}",
        acks.len(),
        error.trim()
    );
    mount.unmount();
    ts.assert_verify_clean();
}

#[test]
fn a_store_that_refuses_writes_unmounts_says_so_and_does_not_panic() {
    let ts = TestStore::on_lossy_disk();
    let mount = ts.mount();
    let bin = env!("CARGO_BIN_EXE_power_writer");
    let mut writer = Writer::start(bin.as_ref(), &ts.path("slots.dat"), 3, 1);
    std::thread::sleep(Duration::from_millis(300));
    ts.disk().arm(
        Point::new(Op::Fsync, 1).on("packs/"),
        Action::Fail {
            errno: libc::EIO,
            times: Some(1),
        },
    );
    assert!(writer.wait_for_exit(Duration::from_secs(20)));
    let (acks, _) = writer.stop_with_error();
    let mut acked = Acked::default();
    acked.add(&acks);
    let pid = ts.daemon_pid().expect("the daemon still runs");
    std::mem::forget(mount); // unmounted by hand below
    let run = strata_tests::strata(["umount", strata_tests::cli::s(&ts.mnt)]);
    eprintln!(
        "strata umount after the failure: {} {}",
        run.status,
        run.stderr.trim()
    );
    run.assert_error(&["is unmounted, but its store had stopped taking writes"]);
    assert!(!strata_tests::mounts::is_mounted(&ts.mnt), "still mounted");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while strata_tests::sys::process_alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon does not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(ts.store.join("daemon.log")).unwrap();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
    assert_eq!(
        log.lines().filter(|l| l.contains(REFUSAL)).count(),
        1,
        "{log}"
    );
    let mount = ts.mount();
    let data = std::fs::read(ts.path("slots.dat")).unwrap();
    acked.check(&data).unwrap();
    write_synced(&ts.path("probe"), b"mounted again").expect("writes work again");
    mount.unmount();
    ts.assert_verify_clean();
}
