//! Shorthands the CLI-level tests share: run `strata` expecting success, parse JSON
//! output, list snapshots, read numeric environment settings, and a guard that unmounts
//! an extra mount point a test made (beside `TestStore`'s own).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::binary::strata;
use crate::mounts;

/// `path` as `&str` (test paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

/// Runs `strata ARGS`, asserts success, returns stdout.
#[track_caller]
pub fn ok(args: &[&str]) -> String {
    let run = strata(args);
    run.assert_success();
    run.stdout
}

/// Runs `strata ARGS` (asserting success) and parses its stdout as JSON.
#[track_caller]
pub fn json(args: &[&str]) -> Value {
    let out = ok(args);
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("not JSON ({err}):\n{out}"))
}

/// `strata snapshot list STORE --json` as JSON objects.
#[track_caller]
pub fn snapshots(store: &str) -> Vec<Value> {
    match json(&["snapshot", "list", store, "--json"]) {
        Value::Array(rows) => rows,
        other => panic!("snapshot list --json is not an array: {other}"),
    }
}

/// The snapshot names of `store`, oldest first.
#[track_caller]
pub fn snapshot_names(store: &str) -> Vec<String> {
    snapshots(store)
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// A number from the environment, if set (panics on a value that is not a number).
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

/// Unmounts a mount point a test made itself (`strata umount`, then forced), even when
/// an assertion failed.
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if mounts::is_mounted(&self.0) {
            let _ = strata(["umount", s(&self.0)]);
            mounts::force_unmount(&self.0);
        }
    }
}
