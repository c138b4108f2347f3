//! Fuzz entry points (docs/fuzzing.md): one per target of the `fuzz/` crate.
//!
//! - `control_request`: a request line as the daemon reads it from its control socket,
//!   then the checks it makes before a request reaches the store (names, schedules):
//!   never a panic; a request that parses serializes to a line that parses to it again.
//! - `schedule`: `--snapshot-every` and `--keep` (or strata.toml's `auto_snapshot_*`).
//!
//! Not an API.

use crate::proto::{read_request, Request};
use crate::schedule::AutoSnapshots;
use strata_snapshot::KeepPolicy;

/// A fuzz target: its name and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// The targets of this crate, as named under `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: [Target; 2] = [("control_request", control_request), ("schedule", schedule)];

pub fn control_request(data: &[u8]) {
    let request = match read_request(data) {
        Ok(r) => r,
        Err(e) => return assert!(!e.is_empty()),
    };
    let line = serde_json::to_string(&request).expect("a request serializes") + "\n";
    assert_eq!(read_request(line.as_bytes()).as_ref(), Ok(&request));
    let _ = (request.op(), request.wants_progress());
    let check = |what: &str, name: &str| {
        if let Err(e) = strata_snapshot::check_name(what, name) {
            assert!(e.to_string().contains(what));
        }
    };
    match &request {
        Request::Mount {
            branch,
            snapshot,
            snapshot_every,
            keep,
            ..
        } => {
            branch.iter().for_each(|b| check("branch", b));
            snapshot.iter().for_each(|s| check("snapshot", s));
            check_schedule(snapshot_every.as_deref(), keep.as_deref());
        }
        Request::SnapshotCreate { name, branch, .. } | Request::Rollback { name, branch, .. } => {
            check("snapshot", name);
            branch.iter().for_each(|b| check("branch", b));
        }
        Request::SnapshotRename { old, new } => {
            check("snapshot", old);
            check("snapshot", new);
        }
        Request::Clone { snapshot, branch } => {
            check("snapshot", snapshot);
            check("branch", branch);
        }
        Request::SnapshotPrune { keep, .. } => check_keep(keep),
        _ => {}
    }
}

/// The bytes as `EVERY\nKEEP` (no newline: no keep rules; an empty first line: no
/// interval), as the daemon takes them from a mount.
pub fn schedule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (every, keep) = match text.split_once('\n') {
        Some((e, k)) => (Some(e), Some(k)),
        None => (Some(text), None),
    };
    check_schedule(every.filter(|e| !e.is_empty()), keep);
    if let Some(k) = keep {
        check_keep(k);
    }
}

fn check_schedule(every: Option<&str>, keep: Option<&str>) {
    match AutoSnapshots::parse(every, keep) {
        Ok(Some(auto)) => {
            assert!(auto.every.as_secs() >= 1);
            assert!(every.is_some());
        }
        Ok(None) => assert!(every.is_none() && keep.is_none()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Keep rules that parse print as rules that parse to the same policy.
fn check_keep(text: &str) {
    match KeepPolicy::parse(text) {
        Ok(policy) => assert_eq!(KeepPolicy::parse(&policy.to_string()).unwrap(), policy),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn corpus_dir(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
    }

    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = corpus_dir(target);
        let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        files.sort();
        files
    }

    /// Every file of each target's checked-in corpus passes its target.
    #[test]
    fn the_corpus_replays() {
        for (target, run) in TARGETS {
            let files = corpus(target);
            assert!(!files.is_empty(), "no corpus for {target}");
            for (path, bytes) in files {
                let outcome = std::panic::catch_unwind(|| run(&bytes));
                assert!(outcome.is_ok(), "{} fails its target", path.display());
            }
        }
    }

    /// Writes the `real-*` seeds of both targets: the request line the client sends for
    /// each kind of request, and schedules as users write them.
    /// `cargo test -p strata-cli --release -- --ignored make_corpus`.
    #[test]
    #[ignore]
    fn make_corpus() {
        let s = |x: &str| x.to_string();
        let requests = [
            Request::Ping,
            Request::Mount {
                mount_point: s("/mnt/data"),
                branch: Some(s("main")),
                snapshot: None,
                threads: Some(4),
                snapshot_every: Some(s("15m")),
                keep: Some(s("hourly=24,daily=7")),
            },
            Request::Mount {
                mount_point: s("/mnt/old"),
                branch: None,
                snapshot: Some(s("before-upgrade")),
                threads: None,
                snapshot_every: None,
                keep: None,
            },
            Request::SnapshotCreate {
                name: s("nightly"),
                branch: Some(s("main")),
                via: Some(s("/mnt/data")),
            },
            Request::SnapshotList,
            Request::SnapshotDelete {
                name: s("nightly"),
                dry_run: true,
            },
            Request::SnapshotRename {
                old: s("a"),
                new: s("b"),
            },
            Request::Stats,
            Request::Verify {
                rate_mib: Some(100),
                progress: true,
            },
            Request::SnapshotHold {
                name: s("keep-me"),
                hold: true,
            },
            Request::SnapshotPrune {
                keep: s("last=3,weekly=4"),
                all: false,
                dry_run: true,
            },
            Request::Rollback {
                name: s("nightly"),
                force: true,
                branch: None,
                via: Some(s("/mnt/data")),
            },
            Request::Clone {
                snapshot: s("nightly"),
                branch: s("experiment"),
            },
            Request::BranchList,
            Request::BranchDelete {
                branch: s("experiment"),
            },
            Request::Diff {
                a: s("nightly"),
                b: None,
                branch: Some(s("main")),
                via: None,
            },
            Request::History {
                mount_point: s("/mnt/data"),
                path: s("docs/n\u{e4}me"),
            },
            Request::Gc,
            Request::Defrag { progress: true },
            Request::Flatten { progress: false },
        ];
        let mut seeds: Vec<(&str, Vec<u8>)> = requests
            .iter()
            .map(|r| {
                (
                    "control_request",
                    (serde_json::to_string(r).unwrap() + "\n").into_bytes(),
                )
            })
            .collect();
        for text in [
            "15m",
            "1h\nhourly=24,daily=7,weekly=4",
            "30s\nlast=10",
            "1d\nmonthly=6,yearly=2",
        ] {
            seeds.push(("schedule", text.as_bytes().to_vec()));
        }
        for (target, _) in TARGETS {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (path, _) in corpus(target) {
                if path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("real-")
                {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
        for (target, bytes) in seeds {
            let name = format!("real-{:016x}", fnv(&bytes));
            std::fs::write(corpus_dir(target).join(name), bytes).unwrap();
        }
    }

    /// A content name without a hash crate (FNV-1a).
    fn fnv(b: &[u8]) -> u64 {
        b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
            (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// A real request line (of the corpus), damaged: a byte changed, cut short or
        /// spliced with another.
        #[test]
        fn damaged_real_inputs_hold(
            target in 0usize..2,
            pick in proptest::num::usize::ANY,
            at in proptest::num::usize::ANY,
            byte in proptest::num::u8::ANY,
            cut in proptest::bool::ANY,
        ) {
            let (name, run) = TARGETS[target];
            let files = corpus(name);
            let mut bytes = files[pick % files.len()].1.clone();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = byte;
                if cut {
                    bytes.truncate(i);
                }
            }
            run(&bytes);
        }
    }
}
