//! Child process of the snapshot tests: appends the records of
//! `strata_tests::records::odd_record` (stream STREAM) to FILE, one buffered write() call
//! each (no fsync: they return from the page cache), and prints `ack N` on stdout once
//! the call for record N returned, pausing 1 ms every `BURST` records (at most about
//! 12 MB/s: the page cache absorbs writes far faster than a snapshot test can read them
//! back). Stops when stdout closes, at the first error, or after `MAX_RECORDS`.
//!
//! Usage: append_writer FILE STREAM

use std::fs::OpenOptions;
use std::io::Write;

use strata_tests::records::odd_record;

const MAX_RECORDS: u64 = 2_000_000;
const BURST: u64 = 8;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), Some(stream)) = (args.next(), args.next()) else {
        eprintln!("usage: append_writer FILE STREAM");
        std::process::exit(2);
    };
    let stream: u64 = stream
        .to_str()
        .and_then(|s| s.parse().ok())
        .expect("STREAM: a number");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|err| panic!("open {path:?}: {err}"));
    let stdout = std::io::stdout();
    for n in 0..MAX_RECORDS {
        if let Err(err) = file.write_all(&odd_record(stream, n)) {
            eprintln!("append_writer: record {n}: {err}");
            std::process::exit(1);
        }
        let mut out = stdout.lock();
        if writeln!(out, "ack {n}").and_then(|()| out.flush()).is_err() {
            return;
        }
        drop(out);
        if n % BURST == BURST - 1 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
