//! Wire types of the control socket. A request is one JSON object on one line, tagged by
//! `op`; the reply is one JSON object on one line:
//!
//! ```text
//! {"op":"snapshot_create","branch":"main","name":"x"}
//! {"ok":true,"result":{"name":"x","generation":4,...}}
//! {"ok":false,"error":"no snapshot named \"x\""}
//! {"ok":false,"error":"the daemon is shutting down","closing":true}
//! ```
//!
//! `closing` tells the client that the daemon is releasing the store (its last mount
//! ended): the client waits for the store's lock and carries the request out itself.
//!
//! The result types below are what both ways of running a command produce (through the
//! daemon, or with the store opened by the command itself), so the output is formatted
//! from the same values either way.

use serde::{Deserialize, Serialize};
use strata_snapshot::{BranchInfo, DiffEntry, HistoryEntry, SnapshotInfo, SnapshotUsage};

/// Longest request line the daemon reads.
pub const MAX_REQUEST: usize = 1 << 20;

/// Reads one request line from `r`, as the daemon reads it from a client: at most
/// `MAX_REQUEST` bytes, UTF-8, ending in a newline, one JSON object. The error says what
/// was wrong (it is the reply's `error`).
pub fn read_request(r: impl std::io::Read) -> Result<Request, String> {
    use std::io::BufRead;
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(r.take(MAX_REQUEST as u64));
    match reader.read_line(&mut line) {
        Ok(0) => Err("empty request".into()),
        Ok(_) if !line.ends_with('\n') => Err(format!(
            "request line too long or not terminated (at most {MAX_REQUEST} bytes)"
        )),
        Ok(_) => serde_json::from_str(line.trim_end()).map_err(|err| format!("bad request: {err}")),
        Err(err) => Err(format!("cannot read the request: {err}")),
    }
}

/// One request. `branch`: the branch to act on, if the user named one; `via`: the mount
/// point the user named the store by, whose branch is the default (else `main`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is a daemon there? Answers the daemon's status.
    Ping,
    /// Mount a branch (default `main`) or a snapshot (read-only) at `mount_point`.
    Mount {
        mount_point: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threads: Option<usize>,
        /// Automatic snapshots, e.g. "15m", with keep rules.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot_every: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep: Option<String>,
    },
    SnapshotCreate {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    SnapshotList,
    SnapshotDelete {
        name: String,
        #[serde(default)]
        dry_run: bool,
    },
    SnapshotRename {
        old: String,
        new: String,
    },
    /// The store's space figures (`strata stats`).
    Stats,
    /// Check every block and every tree (a scrub), reading packs at most `rate_mib`
    /// MiB/s (0: as fast as the disk allows; None: `ops::MOUNTED_SCRUB_RATE_MIB` in a
    /// daemon beside mounts, else no limit).
    Verify {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate_mib: Option<u64>,
        /// Send `Progress` lines before the reply.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        progress: bool,
    },
    /// Hold (`hold: true`) or release a snapshot.
    SnapshotHold {
        name: String,
        hold: bool,
    },
    /// Apply keep rules (`hourly=24,daily=7,...`) to the automatic snapshots (or all).
    SnapshotPrune {
        keep: String,
        #[serde(default)]
        all: bool,
        #[serde(default)]
        dry_run: bool,
    },
    Rollback {
        name: String,
        #[serde(default)]
        force: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    Clone {
        snapshot: String,
        branch: String,
    },
    BranchList,
    BranchDelete {
        branch: String,
    },
    /// What changed from snapshot `a` to snapshot `b`, or to the branch's live tree.
    Diff {
        a: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        b: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// History of `path` (from the root of the tree mounted at `mount_point`).
    History {
        mount_point: String,
        path: String,
    },
    /// Reclaim the space of blocks nothing references (`strata_snapshot::GcReport`).
    Gc,
    /// Lay the live trees' fragmented files out contiguously again
    /// (`strata_snapshot::DefragReport`).
    Defrag {
        /// Send `Progress` lines before the reply.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        progress: bool,
    },
    /// Fold deleted generations away (`strata_snapshot::FlattenReport`).
    Flatten {
        /// Send `Progress` lines before the reply.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        progress: bool,
    },
}

impl Request {
    /// The op name as it appears on the wire, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Mount { .. } => "mount",
            Request::SnapshotCreate { .. } => "snapshot_create",
            Request::SnapshotList => "snapshot_list",
            Request::SnapshotDelete { .. } => "snapshot_delete",
            Request::SnapshotRename { .. } => "snapshot_rename",
            Request::SnapshotHold { .. } => "snapshot_hold",
            Request::Verify { .. } => "verify",
            Request::Stats => "stats",
            Request::SnapshotPrune { .. } => "snapshot_prune",
            Request::Rollback { .. } => "rollback",
            Request::Clone { .. } => "clone",
            Request::BranchList => "branch_list",
            Request::BranchDelete { .. } => "branch_delete",
            Request::Diff { .. } => "diff",
            Request::History { .. } => "history",
            Request::Gc => "gc",
            Request::Flatten { .. } => "flatten",
            Request::Defrag { .. } => "defrag",
        }
    }
}

/// The reply line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closing: bool,
}

impl Response {
    pub fn success(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
            closing: false,
        }
    }

    pub fn failure(error: String) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(error),
            closing: false,
        }
    }

    pub fn closing() -> Self {
        Response {
            ok: false,
            result: None,
            error: Some("the strata daemon is releasing the store (its last mount ended)".into()),
            closing: true,
        }
    }
}

/// How far a long request has got, sent as `{"progress":{"done":N,"total":M}}` lines
/// before the reply when the request asked for them (`progress: true`): verify counts
/// pack bytes, flatten record versions, defrag bytes of files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// One progress line on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressLine {
    pub progress: Progress,
}

impl Request {
    /// Whether the client asked for progress lines before the reply.
    pub fn wants_progress(&self) -> bool {
        matches!(
            self,
            Request::Verify { progress: true, .. }
                | Request::Flatten { progress: true }
                | Request::Defrag { progress: true }
        )
    }
}

/// A snapshot (result of `snapshot_create`, and a row of `snapshot_list` with usage).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    pub generation: u64,
    pub parent: Option<u64>,
    pub parent_name: Option<String>,
    pub branch: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// Held: not deletable or prunable until released.
    #[serde(default)]
    pub held: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referenced_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// For `snapshot_create`: how long the store took (waiting for in-flight writes,
    /// committing buffered data, the snapshot's own commit), in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_us: Option<u64>,
}

impl Snapshot {
    pub fn from_info(info: SnapshotInfo, usage: Option<SnapshotUsage>) -> Self {
        Snapshot {
            name: info.name,
            generation: info.generation,
            parent: info.parent,
            parent_name: info.parent_name,
            branch: info.branch,
            created: info.created,
            held: info.held,
            referenced_bytes: usage.as_ref().map(|u| u.referenced_bytes),
            exclusive_bytes: usage.as_ref().map(|u| u.exclusive_bytes),
            files: usage.as_ref().map(|u| u.files),
            took_us: None,
        }
    }
}

/// Result of `snapshot_hold`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub name: String,
    pub held: bool,
}

/// Result of `snapshot_prune`: every considered snapshot, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    pub keep: String,
    pub dry_run: bool,
    pub decisions: Vec<strata_snapshot::Decision>,
}

/// Result of `snapshot_delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub name: String,
    pub dry_run: bool,
    /// Stored bytes no other snapshot or branch references.
    pub bytes: u64,
    /// Files of the snapshot open through the mount: its generation, and the space, stay
    /// until they close.
    #[serde(default)]
    pub open_files: u64,
}

/// Result of `snapshot_rename`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renamed {
    pub old: String,
    pub new: String,
}

/// Result of `rollback`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    pub branch: String,
    pub snapshot: String,
    pub saved_as: String,
    /// Files that were open and stayed open (with `force`).
    pub open_files: Vec<String>,
    /// Mount points whose kernel caches were invalidated.
    pub invalidated: Vec<String>,
}

/// A branch (result of `clone`, and a row of `branch_list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    pub name: String,
    pub generation: u64,
    pub origin: Option<String>,
    pub created: i64,
}

impl From<BranchInfo> for Branch {
    fn from(b: BranchInfo) -> Self {
        Branch {
            name: b.name,
            generation: b.generation,
            origin: b.origin,
            created: b.created,
        }
    }
}

/// Result of `branch_delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchDeleted {
    pub branch: String,
}

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `+`, `-`, `M` or `R`.
    pub change: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    pub kind: String,
}

impl From<DiffEntry> for Change {
    fn from(d: DiffEntry) -> Self {
        Change {
            change: d.change.to_string(),
            path: d.path,
            new_path: d.new_path,
            kind: d.kind.to_string(),
        }
    }
}

/// Result of `diff`: what was compared, and the changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    pub from: String,
    /// A snapshot name, or `branch:NAME (live)`.
    pub to: String,
    pub changes: Vec<Change>,
}

/// One generation in which a path changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub generation: u64,
    /// The snapshot name; `None` for the live tree.
    pub snapshot: Option<String>,
    pub time: i64,
    pub change: String,
    pub size: Option<u64>,
    pub mtime: Option<i64>,
}

impl From<HistoryEntry> for Version {
    fn from(h: HistoryEntry) -> Self {
        Version {
            generation: h.generation,
            snapshot: h.snapshot,
            time: h.time,
            change: h.change.to_string(),
            size: h.size,
            mtime: h.mtime,
        }
    }
}

/// Result of `history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub branch: String,
    pub path: String,
    pub versions: Vec<Version>,
}

/// One mount of the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    pub mount_point: String,
    /// The branch served (read-write), or none for a snapshot mount.
    pub branch: Option<String>,
    /// The snapshot served (read-only), or none for a branch mount.
    pub snapshot: Option<String>,
    pub read_only: bool,
    /// Files open in the mount.
    #[serde(default)]
    pub open_files: u64,
}

/// Result of `ping` (and the document of `strata status --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub store: String,
    pub mounts: Vec<MountInfo>,
    /// Why the store refuses writes (it could not make data durable), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusing_writes: Option<String>,
    /// When the daemon started (seconds since the epoch).
    #[serde(default)]
    pub since: i64,
    /// File data written and not yet sealed into packs (it is in the intent log once
    /// fsynced).
    #[serde(default)]
    pub dirty_bytes: u64,
    /// When the daemon last committed (seconds since the epoch), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<i64>,
    /// Background work under way.
    #[serde(default)]
    pub background: Vec<Job>,
    /// Bytes of blocks queued to be laid out again (defragmentation on read or of
    /// rewritten files).
    #[serde(default)]
    pub relocation_queued_bytes: u64,
    /// Automatic snapshot schedules of the mounted branches.
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    /// Mounts that ended with an error since the daemon started.
    #[serde(default)]
    pub mount_errors: Vec<String>,
    /// The cache of decompressed blocks.
    #[serde(default)]
    pub block_cache: BlockCache,
}

/// The daemon's block cache (docs/packs.md, "Block cache").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCache {
    /// `block_cache_mib` in bytes (0: off).
    pub capacity_bytes: u64,
    pub bytes: u64,
    pub blocks: u64,
    /// Reads served from it, and reads that missed it, since the daemon started.
    pub hits: u64,
    pub misses: u64,
}

impl From<strata_snapshot::BlockCacheStats> for BlockCache {
    fn from(s: strata_snapshot::BlockCacheStats) -> Self {
        BlockCache {
            capacity_bytes: s.capacity_bytes,
            bytes: s.bytes,
            blocks: s.blocks,
            hits: s.hits,
            misses: s.misses,
        }
    }
}

/// A piece of background work of the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// `flatten`, `gc`, `relocate` or `queue-rewritten`.
    pub what: String,
    /// Why it runs.
    pub why: String,
    /// When it started (seconds since the epoch).
    pub since: i64,
    /// How far it got, when it counts (flatten: inode record groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// The automatic snapshots of one mounted branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub branch: String,
    pub every_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    /// When the next one is due (seconds since the epoch).
    pub next: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_wire_form() {
        let r = Request::SnapshotCreate {
            name: "x".into(),
            branch: Some("main".into()),
            via: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"snapshot_create","name":"x","branch":"main"}"#
        );
        let parsed: Request =
            serde_json::from_str(r#"{"op":"snapshot_create","branch":"main","name":"x"}"#).unwrap();
        assert_eq!(parsed, r);
        let parsed: Request = serde_json::from_str(r#"{"op":"snapshot_delete","name":"a"}"#)
            .expect("dry_run defaults to false");
        assert_eq!(
            parsed,
            Request::SnapshotDelete {
                name: "a".into(),
                dry_run: false
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::Ping).unwrap(),
            r#"{"op":"ping"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Gc).unwrap(),
            r#"{"op":"gc"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let ok = Response::success(serde_json::json!({"a": 1}));
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"ok":true,"result":{"a":1}}"#
        );
        let err = Response::failure("no snapshot named \"x\"".into());
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"ok":false,"error":"no snapshot named \"x\""}"#
        );
        let closing: Response =
            serde_json::from_str(&serde_json::to_string(&Response::closing()).unwrap()).unwrap();
        assert!(closing.closing && !closing.ok);
    }
}
