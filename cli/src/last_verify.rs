//! The result of the last `strata verify` of a store, kept in `STORE/last-verify.json`
//! for `strata status` (as `zpool status` shows the last scrub). Written by whoever ran
//! the verify (the daemon, or the command with the store opened itself), replaced
//! atomically; a missing or unreadable file reads as "never verified".

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_snapshot::VerifyReport;

pub const FILE: &str = "last-verify.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastVerify {
    /// When it ended (seconds since the epoch).
    pub at: i64,
    pub problems: u64,
    /// The first problems found (at most 10).
    pub first_problems: Vec<String>,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub inodes_checked: u64,
}

fn path(store: &Path) -> PathBuf {
    store.join(FILE)
}

/// Records `report` as the store's last verify. A failure to write is logged, not an
/// error of the verify.
pub fn record(store: &Path, report: &VerifyReport) {
    let last = LastVerify {
        at: strata_snapshot::Timestamp::now().secs,
        problems: report.problems.len() as u64,
        first_problems: report.problems.iter().take(10).cloned().collect(),
        blocks_checked: report.blocks_checked,
        bytes_checked: report.bytes_checked,
        inodes_checked: report.inodes_checked,
    };
    let tmp = store.join(format!(".{FILE}.tmp"));
    let text = serde_json::to_string_pretty(&last).expect("serializes") + "\n";
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path(store))) {
        tracing::warn!(error = %e, "cannot record the verify result in {}", path(store).display());
    }
}

/// The store's last verify, if one was recorded.
pub fn load(store: &Path) -> Option<LastVerify> {
    let text = std::fs::read_to_string(path(store)).ok()?;
    serde_json::from_str(&text).ok()
}
