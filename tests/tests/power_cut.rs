//! Power cuts of a running strata: the store on a lossy disk (tests/src/lossy, the model
//! in docs/power-cut-harness.md), strata mounted over it, the power cut at a random time
//! or at a named point of the disk (the Nth write, fsync, rename or create of a pack or
//! of sled's files), the daemon killed with the cut, the disk rebooted with what it held
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
    let path = ["", "packs/", "meta/"][rng.range(0, 3) as usize];
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
        let mode = mode(&mut rng);
        let point = point(&mut rng);
        let what = match point.clone() {
            Some(p) => {
                ts.disk().arm(p.clone(), Action::Cut(mode));
                if ts.disk().wait_for_cut(Duration::from_secs(3)) {
                    at_points += 1;
                    format!("at {p:?}")
                } else {
                    ts.disk().cut(mode);
                    at_times += 1;
                    format!("after 3 s ({p:?} not reached)")
                }
            }
            None => {
                let ms = rng.range(20, 1500);
                std::thread::sleep(Duration::from_millis(ms));
                ts.disk().cut(mode);
                at_times += 1;
                format!("after {ms} ms")
            }
        };
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
