//! Child process of the kill -9 test: appends the numbered records of
//! `strata_tests::records` to a file, fsyncs after each, and prints `ack N` on stdout once
//! record N is durable. Stops at the first error (the daemon was killed) or after
//! `MAX_RECORDS`.
//!
//! Usage: crash_writer FILE

use std::fs::OpenOptions;
use std::io::Write;

use strata_tests::records::record;

const MAX_RECORDS: u64 = 200_000;

fn main() {
    let path = std::env::args_os()
        .nth(1)
        .expect("usage: crash_writer FILE");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|err| panic!("open {path:?}: {err}"));
    let stdout = std::io::stdout();
    for n in 0..MAX_RECORDS {
        if let Err(err) = file.write_all(&record(n)).and_then(|()| file.sync_data()) {
            eprintln!("crash_writer: record {n}: {err}");
            std::process::exit(1);
        }
        let mut out = stdout.lock();
        if writeln!(out, "ack {n}").and_then(|()| out.flush()).is_err() {
            std::process::exit(1);
        }
    }
}
