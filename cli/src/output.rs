//! Output of the snapshot commands, in one place: the human tables and lines, and the
//! `--json` documents. Every function takes the result types of `control::proto`, which a
//! command gets the same way whether the daemon or the command itself did the work, so
//! the output is the same either way.
//!
//! Times are UTC, `2026-11-23 15:04:05` (JSON carries seconds since the epoch and the
//! same moment as `2026-11-23T15:04:05Z`); sizes are human (`1.5 MiB`) unless exact
//! (`--bytes`; JSON is always exact).

use serde::Serialize;
use strata_snapshot::{utc_stamp, DefragReport, FlattenReport, GcReport};

use crate::control::proto::{
    Branch, Deleted, Diff, Held, History, Pruned, Renamed, RolledBack, Snapshot,
};
use crate::size::format_human;

/// `2026-11-23 15:04:05` (UTC) for seconds since the epoch.
pub fn utc_time(secs: i64) -> String {
    let stamp = utc_stamp(secs); // YYYYMMDDTHHMMSSZ
    if stamp.len() != 16 {
        return stamp;
    }
    format!(
        "{}-{}-{} {}:{}:{}",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
}

/// `2026-11-23T15:04:05Z` (RFC 3339, UTC).
pub fn rfc3339(secs: i64) -> String {
    utc_time(secs).replacen(' ', "T", 1) + "Z"
}

/// A size for a table: human, or exact bytes.
pub fn size(bytes: u64, exact: bool) -> String {
    if exact {
        bytes.to_string()
    } else {
        format_human(bytes)
    }
}

/// Column alignment in `table`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table: a header row, columns two spaces apart, no trailing blanks.
pub fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| -> String {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i] - cell.chars().count();
            match headers[i].1 {
                Align::Left => {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
                Align::Right => {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
            }
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = render(headers.iter().map(|(h, _)| *h).collect());
    for row in rows {
        out.push_str(&render(row.iter().map(String::as_str).collect()));
    }
    out
}

fn pretty<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
        + "\n"
}

/// The PARENT column: the parent snapshot's name, else its generation, else `-`.
fn parent_label(s: &Snapshot) -> String {
    match (&s.parent_name, s.parent) {
        (Some(name), _) => name.clone(),
        (None, Some(g)) => format!("gen {g}"),
        (None, None) => "-".into(),
    }
}

/// `snapshot list`: NAME GEN PARENT BRANCH CREATED REFERENCED EXCLUSIVE FILES.
pub fn snapshot_table(rows: &[Snapshot], exact: bool) -> String {
    let headers = [
        ("NAME", Align::Left),
        ("GEN", Align::Right),
        ("PARENT", Align::Left),
        ("BRANCH", Align::Left),
        ("CREATED", Align::Left),
        ("REFERENCED", Align::Right),
        ("EXCLUSIVE", Align::Right),
        ("FILES", Align::Right),
        ("HOLD", Align::Left),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.generation.to_string(),
                parent_label(s),
                s.branch.clone(),
                utc_time(s.created),
                size(s.referenced_bytes.unwrap_or(0), exact),
                size(s.exclusive_bytes.unwrap_or(0), exact),
                s.files.unwrap_or(0).to_string(),
                if s.held { "held" } else { "-" }.to_string(),
            ]
        })
        .collect();
    table(&headers, &cells)
}

/// A snapshot in `snapshot list --json`.
#[derive(Serialize)]
struct SnapshotJson<'a> {
    name: &'a str,
    generation: u64,
    parent: Option<u64>,
    parent_name: Option<&'a str>,
    branch: &'a str,
    created: i64,
    created_utc: String,
    referenced_bytes: u64,
    exclusive_bytes: u64,
    files: u64,
    held: bool,
}

/// `snapshot list --json`.
pub fn snapshot_json(rows: &[Snapshot]) -> String {
    let items: Vec<SnapshotJson> = rows
        .iter()
        .map(|s| SnapshotJson {
            name: &s.name,
            generation: s.generation,
            parent: s.parent,
            parent_name: s.parent_name.as_deref(),
            branch: &s.branch,
            created: s.created,
            created_utc: rfc3339(s.created),
            referenced_bytes: s.referenced_bytes.unwrap_or(0),
            exclusive_bytes: s.exclusive_bytes.unwrap_or(0),
            files: s.files.unwrap_or(0),
            held: s.held,
        })
        .collect();
    pretty(&items)
}

/// `snapshot create`.
pub fn snapshot_created(s: &Snapshot) -> String {
    format!(
        "created snapshot {} of branch {} (generation {}, {})\n",
        s.name,
        s.branch,
        s.generation,
        utc_time(s.created)
    )
}

/// `snapshot delete [--dry-run]`.
pub fn snapshot_deleted(d: &Deleted) -> String {
    let mut out = if d.dry_run {
        format!("would free {} ({} bytes)\n", format_human(d.bytes), d.bytes)
    } else {
        format!(
            "deleted snapshot {}; {} is no longer referenced and returns to the disk at the next `strata gc`\n",
            d.name,
            format_human(d.bytes)
        )
    };
    if d.open_files > 0 {
        out.push_str(&format!(
            "{} file{} of the snapshot {} open: it stays readable through {} and its space \
             is freed only after they close\n",
            d.open_files,
            if d.open_files == 1 { "" } else { "s" },
            if d.open_files == 1 { "is" } else { "are" },
            if d.open_files == 1 { "it" } else { "them" },
        ));
    }
    out
}

/// `gc`: one summary line, then one line per problem.
pub fn gc_report(r: &GcReport, exact: bool) -> String {
    let mut out = format!(
        "gc: {} pack{} examined, {} rewritten, {} deleted; {} freed (store packs {} -> {})\n",
        r.packs_examined,
        if r.packs_examined == 1 { "" } else { "s" },
        r.packs_rewritten,
        r.packs_deleted,
        size(r.freed_bytes, exact),
        size(r.pack_bytes_before, exact),
        size(r.pack_bytes_after, exact),
    );
    if r.meta_compaction_pending {
        out.push_str(&format!(
            "metadata: {} on disk for {} of records; compacted at the next mount\n",
            size(r.meta_bytes, exact),
            size(r.meta_content_bytes, exact)
        ));
    }
    for p in &r.problems {
        out.push_str(&format!("problem: {}\n", crate::error::one_line(p)));
    }
    out
}

/// A command's report as one pretty JSON object, with the store's path under `store`
/// and any `extra` fields.
pub fn json_with_store(
    report: &impl serde::Serialize,
    store: &std::path::Path,
    extra: &[(&str, serde_json::Value)],
) -> anyhow::Result<String> {
    let mut value = serde_json::to_value(report)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("store".into(), store.display().to_string().into());
        for (key, v) in extra {
            object.insert((*key).into(), v.clone());
        }
    }
    Ok(serde_json::to_string_pretty(&value)?)
}

/// `flatten`: one line.
/// `defrag`: what moved, then each problem on its own line.
pub fn defrag_report(r: &DefragReport, exact: bool) -> String {
    let mut out = if r.files_defragmented == 0 {
        format!(
            "defrag: nothing to do ({} file{} examined, none in runs shorter than {} on average)\n",
            r.files_examined,
            if r.files_examined == 1 { "" } else { "s" },
            size(strata_snapshot::DEFRAG_MIN_AVERAGE_RUN, exact)
        )
    } else {
        format!(
            "defrag: {} of {} file{} laid out again ({} runs -> {}); {} blocks, {} copied in {} ms; \
             run `strata gc` to free the old copies\n",
            r.files_defragmented,
            r.files_examined,
            if r.files_examined == 1 { "" } else { "s" },
            r.runs_before,
            r.runs_after,
            r.blocks_moved,
            size(r.bytes_moved, exact),
            r.took_ms,
        )
    };
    for p in &r.problems {
        out.push_str(&format!("problem: {}\n", crate::error::one_line(p)));
    }
    out
}

pub fn flatten_report(r: &FlattenReport) -> String {
    if r.batches == 0 {
        return "flatten: nothing to do (no deleted generation left to fold)\n".into();
    }
    format!(
        "flatten: {} deleted generation{} removed; {} record versions examined, {} folded into kept generations, {} dropped; {} batches (longest {} ms), {} ms\n",
        r.generations_removed,
        if r.generations_removed == 1 { "" } else { "s" },
        r.records_examined,
        r.records_folded,
        r.records_dropped,
        r.batches,
        r.max_batch_ms,
        r.took_ms,
    )
}

/// `snapshot hold` / `snapshot release`.
pub fn snapshot_held(h: &Held) -> String {
    if h.held {
        format!(
            "held snapshot {}: it cannot be deleted or pruned until released\n",
            h.name
        )
    } else {
        format!("released snapshot {}\n", h.name)
    }
}

/// `snapshot prune`: a line per snapshot, newest first, then a summary.
pub fn snapshot_pruned(p: &Pruned) -> String {
    let mut out = String::new();
    for d in &p.decisions {
        if d.keep {
            out.push_str(&format!("keep    {}  ({})\n", d.name, d.reasons.join(", ")));
        } else {
            let verb = if p.dry_run { "would remove" } else { "removed" };
            out.push_str(&format!("{verb:<7} {}\n", d.name));
        }
    }
    let gone = p.decisions.iter().filter(|d| !d.keep).count();
    out.push_str(&format!(
        "{} {gone} of {} snapshots (keep {})\n",
        if p.dry_run { "would remove" } else { "removed" },
        p.decisions.len(),
        p.keep
    ));
    out
}

/// `snapshot rename`.
pub fn snapshot_renamed(r: &Renamed) -> String {
    format!("renamed snapshot {} to {}\n", r.old, r.new)
}

/// `rollback`.
pub fn rolled_back(r: &RolledBack) -> String {
    let mut out = format!(
        "rolled back branch {} to {}; the previous state is kept as snapshot {}\n",
        r.branch, r.snapshot, r.saved_as
    );
    if !r.open_files.is_empty() {
        out.push_str(&format!(
            "files open during the rollback (kept open): {}\n",
            r.open_files.join(", ")
        ));
        out.push_str(
            "an open handle now reads and writes the file of the same inode in the \
             rolled-back tree if it exists there, and fails with ENOENT if it does not\n",
        );
    }
    out
}

/// `clone`.
pub fn cloned(b: &Branch, store: &str) -> String {
    format!(
        "created branch {} from snapshot {} (generation {}); mount it with \
         `strata mount --branch {} {store} MOUNTPOINT`\n",
        b.name,
        b.origin.as_deref().unwrap_or("-"),
        b.generation,
        b.name
    )
}

/// `branch list`: NAME GEN ORIGIN CREATED.
pub fn branch_table(rows: &[Branch]) -> String {
    let headers = [
        ("NAME", Align::Left),
        ("GEN", Align::Right),
        ("ORIGIN", Align::Left),
        ("CREATED", Align::Left),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.generation.to_string(),
                b.origin.clone().unwrap_or_else(|| "-".into()),
                utc_time(b.created),
            ]
        })
        .collect();
    table(&headers, &cells)
}

/// A branch in `branch list --json`.
#[derive(Serialize)]
struct BranchJson<'a> {
    name: &'a str,
    generation: u64,
    origin: Option<&'a str>,
    created: i64,
    created_utc: String,
}

/// `branch list --json`.
pub fn branch_json(rows: &[Branch]) -> String {
    let items: Vec<BranchJson> = rows
        .iter()
        .map(|b| BranchJson {
            name: &b.name,
            generation: b.generation,
            origin: b.origin.as_deref(),
            created: b.created,
            created_utc: rfc3339(b.created),
        })
        .collect();
    pretty(&items)
}

/// `diff`: one line per change, `CODE\tPATH` (`R\tOLD -> NEW`), as `zfs diff`.
pub fn diff_lines(d: &Diff) -> String {
    d.changes
        .iter()
        .map(|c| match &c.new_path {
            Some(new) => format!("{}\t{} -> {new}\n", c.change, c.path),
            None => format!("{}\t{}\n", c.change, c.path),
        })
        .collect()
}

/// `diff --json`.
pub fn diff_json(d: &Diff) -> String {
    pretty(d)
}

/// `history`: GEN SNAPSHOT TIME CHANGE SIZE (the live tree as `(live)`).
pub fn history_table(h: &History, exact: bool) -> String {
    let headers = [
        ("GEN", Align::Right),
        ("SNAPSHOT", Align::Left),
        ("TIME", Align::Left),
        ("CHANGE", Align::Left),
        ("SIZE", Align::Right),
    ];
    let cells: Vec<Vec<String>> = h
        .versions
        .iter()
        .map(|v| {
            vec![
                v.generation.to_string(),
                v.snapshot.clone().unwrap_or_else(|| "(live)".into()),
                utc_time(v.time),
                v.change.clone(),
                v.size.map_or_else(|| "-".into(), |s| size(s, exact)),
            ]
        })
        .collect();
    table(&headers, &cells)
}

/// A version in `history --json`.
#[derive(Serialize)]
struct VersionJson<'a> {
    generation: u64,
    /// The snapshot name; null for the live tree.
    snapshot: Option<&'a str>,
    live: bool,
    time: i64,
    time_utc: String,
    change: &'a str,
    size: Option<u64>,
    mtime: Option<i64>,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    branch: &'a str,
    path: &'a str,
    versions: Vec<VersionJson<'a>>,
}

/// `history --json`.
pub fn history_json(h: &History) -> String {
    pretty(&HistoryJson {
        branch: &h.branch,
        path: &h.path,
        versions: h
            .versions
            .iter()
            .map(|v| VersionJson {
                generation: v.generation,
                snapshot: v.snapshot.as_deref(),
                live: v.snapshot.is_none(),
                time: v.time,
                time_utc: rfc3339(v.time),
                change: &v.change,
                size: v.size,
                mtime: v.mtime,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{Change, Version};
    use serde_json::Value;

    fn snap(name: &str, gen: u64, parent: Option<(u64, &str)>) -> Snapshot {
        Snapshot {
            name: name.into(),
            generation: gen,
            parent: parent.map(|p| p.0),
            parent_name: parent.map(|p| p.1.to_string()),
            branch: "main".into(),
            created: 1_795_000_000,
            referenced_bytes: Some(3 << 19),
            exclusive_bytes: Some(1024),
            files: Some(12),
            held: false,
            took_us: None,
        }
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc_time(1_795_000_000), "2026-11-18 11:06:40");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn snapshot_table_is_aligned() {
        let rows = vec![
            snap("first", 1, None),
            snap("second-one", 12, Some((1, "first"))),
        ];
        let text = snapshot_table(&rows, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME        GEN  PARENT  BRANCH  CREATED              REFERENCED  EXCLUSIVE  FILES  HOLD"
        );
        assert_eq!(
            lines[1],
            "first         1  -       main    2026-11-18 11:06:40     1.5 MiB      1 KiB     12  -"
        );
        assert!(
            lines[2].starts_with("second-one   12  first "),
            "{}",
            lines[2]
        );
        let exact = snapshot_table(&rows, true);
        assert!(
            exact.contains("1572864") && exact.contains("1024"),
            "{exact}"
        );
        let json: Value = serde_json::from_str(&snapshot_json(&rows)).unwrap();
        assert_eq!(json[1]["exclusive_bytes"], 1024);
        assert_eq!(json[1]["parent_name"], "first");
        assert_eq!(json[0]["created_utc"], "2026-11-18T11:06:40Z");
    }

    #[test]
    fn gc_summary() {
        let r = GcReport {
            packs_examined: 12,
            packs_rewritten: 3,
            packs_deleted: 2,
            pack_bytes_before: 3 << 30,
            pack_bytes_after: 2 << 30,
            freed_bytes: 1 << 30,
            ..GcReport::default()
        };
        assert_eq!(
            gc_report(&r, false),
            "gc: 12 packs examined, 3 rewritten, 2 deleted; 1 GiB freed (store packs 3 GiB -> 2 GiB)\n"
        );
        let r = GcReport {
            packs_examined: 1,
            problems: vec!["/s/packs/00000001.pack offset 16: block x is damaged".into()],
            ..r
        };
        let text = gc_report(&r, true);
        assert!(text.starts_with("gc: 1 pack examined"), "{text}");
        assert!(text.contains("1073741824 freed"), "{text}");
        assert!(
            text.ends_with("problem: /s/packs/00000001.pack offset 16: block x is damaged\n"),
            "{text}"
        );
    }

    #[test]
    fn lines_of_the_simple_commands() {
        let d = Deleted {
            name: "x".into(),
            dry_run: true,
            bytes: 1_234_567,
            open_files: 0,
        };
        assert_eq!(snapshot_deleted(&d), "would free 1.2 MiB (1234567 bytes)\n");
        let d = Deleted {
            dry_run: false,
            ..d
        };
        assert_eq!(
            snapshot_deleted(&d),
            "deleted snapshot x; 1.2 MiB is no longer referenced and returns to the disk at the next `strata gc`\n"
        );
        let d = Deleted { open_files: 2, ..d };
        assert!(
            snapshot_deleted(&d).ends_with(
                "\n2 files of the snapshot are open: it stays readable through them and its \
                 space is freed only after they close\n"
            ),
            "{}",
            snapshot_deleted(&d)
        );
        let r = RolledBack {
            branch: "main".into(),
            snapshot: "s1".into(),
            saved_as: "pre-rollback-20261123T150405Z".into(),
            open_files: vec![],
            invalidated: vec![],
        };
        assert_eq!(
            rolled_back(&r),
            "rolled back branch main to s1; the previous state is kept as snapshot \
             pre-rollback-20261123T150405Z\n"
        );
    }

    #[test]
    fn diff_and_history() {
        let d = Diff {
            from: "a".into(),
            to: "main (live)".into(),
            changes: vec![
                Change {
                    change: "M".into(),
                    path: "/m".into(),
                    new_path: None,
                    kind: "file".into(),
                },
                Change {
                    change: "R".into(),
                    path: "/old".into(),
                    new_path: Some("/new".into()),
                    kind: "file".into(),
                },
            ],
        };
        assert_eq!(diff_lines(&d), "M\t/m\nR\t/old -> /new\n");
        let h = History {
            branch: "main".into(),
            path: "/f".into(),
            versions: vec![
                Version {
                    generation: 1,
                    snapshot: Some("s1".into()),
                    time: 0,
                    change: "created".into(),
                    size: Some(2048),
                    mtime: Some(0),
                },
                Version {
                    generation: 4,
                    snapshot: None,
                    time: 60,
                    change: "deleted".into(),
                    size: None,
                    mtime: None,
                },
            ],
        };
        let text = history_table(&h, false);
        assert_eq!(
            text,
            "GEN  SNAPSHOT  TIME                 CHANGE    SIZE\n  \
             1  s1        1970-01-01 00:00:00  created  2 KiB\n  \
             4  (live)    1970-01-01 00:01:00  deleted      -\n"
        );
    }
}
