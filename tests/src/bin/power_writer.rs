//! Child process of the power-cut tests: overwrites and appends the slot records of
//! `strata_tests::records` in FILE, fsyncing after each, and prints `ack SLOT VERSION`
//! on stdout once that record is durable. Versions start at BASE and grow by one per
//! write, so a version acknowledged in one run is never written again. Each write goes
//! to a random slot of the file, or appends a new one (1 in 4). Stops at the first error
//! (the power was cut) or after `MAX_WRITES`.
//!
//! Usage: power_writer FILE SEED BASE

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use strata_tests::data::Rng;
use strata_tests::records::{slot_record, SLOT_SIZE};

const MAX_WRITES: u64 = 100_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, seed, base] = args.as_slice() else {
        eprintln!("usage: power_writer FILE SEED BASE");
        std::process::exit(2);
    };
    let seed: u64 = seed.parse().expect("SEED is a number");
    let base: u64 = base.parse().expect("BASE is a number");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|err| panic!("open {path}: {err}"));
    let mut slots = file.metadata().map_or(0, |m| m.len()) / SLOT_SIZE as u64;
    let mut rng = Rng::new(seed);
    let stdout = std::io::stdout();
    for i in 0..MAX_WRITES {
        let slot = if slots == 0 || rng.range(0, 4) == 0 {
            slots
        } else {
            rng.range(0, slots)
        };
        let version = base + i;
        let result = file
            .write_all_at(&slot_record(slot, version), slot * SLOT_SIZE as u64)
            .and_then(|()| file.sync_data());
        if let Err(err) = result {
            eprintln!("power_writer: slot {slot} version {version}: {err}");
            std::process::exit(1);
        }
        slots = slots.max(slot + 1);
        let mut out = stdout.lock();
        if writeln!(out, "ack {slot} {version}")
            .and_then(|()| out.flush())
            .is_err()
        {
            std::process::exit(1);
        }
    }
}
