//! The fields of every command's scripted output (`-H`, `-p`, `-o`; `scripted.rs`):
//! the keys of its `--json` rows, in the order `-H` prints them without `-o`.
//! docs/cli-output.md lists the same; a test checks each list against the JSON.

use crate::scripted::{field, Kind::*, Spec};

pub const SNAPSHOT_LIST: Spec = Spec {
    command: "snapshot list",
    rows_key: None,
    fields: &[
        field("name", Text),
        field("generation", Number),
        field("parent", Number),
        field("parent_name", Text),
        field("branch", Text),
        field("created", Time),
        field("created_utc", Text),
        field("referenced_bytes", Size),
        field("exclusive_bytes", Size),
        field("files", Number),
        field("held", Bool),
    ],
};

pub const SNAPSHOT_PRUNE: Spec = Spec {
    command: "snapshot prune",
    rows_key: Some("decisions"),
    fields: &[
        field("name", Text),
        field("time", Time),
        field("keep", Bool),
        field("reasons", List),
    ],
};

pub const BRANCH_LIST: Spec = Spec {
    command: "branch list",
    rows_key: None,
    fields: &[
        field("name", Text),
        field("generation", Number),
        field("origin", Text),
        field("created", Time),
        field("created_utc", Text),
    ],
};

pub const DIFF: Spec = Spec {
    command: "diff",
    rows_key: Some("changes"),
    fields: &[
        field("change", Text),
        field("path", Text),
        field("new_path", Text),
        field("kind", Text),
    ],
};

pub const HISTORY: Spec = Spec {
    command: "history",
    rows_key: Some("versions"),
    fields: &[
        field("generation", Number),
        field("snapshot", Text),
        field("live", Bool),
        field("time", Time),
        field("time_utc", Text),
        field("change", Text),
        field("size", Size),
        field("mtime", Time),
    ],
};

pub const STATS: Spec = Spec {
    command: "stats",
    rows_key: None,
    fields: &[
        field("store", Text),
        field("logical_bytes", Size),
        field("unique_bytes", Size),
        field("stored_bytes", Size),
        field("pack_bytes", Size),
        field("dedup_ratio", Ratio),
        field("compression_ratio", Ratio),
        field("blocks", Number),
        field("block_refs", Number),
        field("files", Number),
        field("directories", Number),
        field("symlinks", Number),
        field("other_inodes", Number),
        field("pack_files", Number),
    ],
};

pub const GC: Spec = Spec {
    command: "gc",
    rows_key: None,
    fields: &[
        field("store", Text),
        field("packs_examined", Number),
        field("packs_rewritten", Number),
        field("packs_deleted", Number),
        field("blocks_live", Number),
        field("blocks_freed", Number),
        field("blocks_revived", Number),
        field("blocks_moved", Number),
        field("bytes_moved", Size),
        field("pack_bytes_before", Size),
        field("pack_bytes_after", Size),
        field("freed_bytes", Size),
        field("problems", Count),
        field("took_ms", Number),
        field("state_lock_ms", Ratio),
        field("max_lock_ms", Ratio),
        field("meta_bytes", Size),
        field("meta_content_bytes", Size),
        field("meta_compaction_pending", Bool),
    ],
};

pub const VERIFY: Spec = Spec {
    command: "verify",
    rows_key: None,
    fields: &[
        field("store", Text),
        field("clean", Bool),
        field("blocks_checked", Number),
        field("bytes_checked", Size),
        field("inodes_checked", Number),
        field("problems", Count),
    ],
};

pub const FLATTEN: Spec = Spec {
    command: "flatten",
    rows_key: None,
    fields: &[
        field("store", Text),
        field("generations_removed", Number),
        field("records_examined", Number),
        field("records_folded", Number),
        field("records_dropped", Number),
        field("batches", Number),
        field("max_batch_ms", Number),
        field("took_ms", Number),
    ],
};

pub const DEFRAG: Spec = Spec {
    command: "defrag",
    rows_key: None,
    fields: &[
        field("store", Text),
        field("files_examined", Number),
        field("files_defragmented", Number),
        field("runs_before", Number),
        field("runs_after", Number),
        field("blocks_moved", Number),
        field("bytes_moved", Size),
        field("problems", Count),
        field("took_ms", Number),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Every spec, for the docs test.
    pub const ALL: &[&Spec] = &[
        &SNAPSHOT_LIST,
        &SNAPSHOT_PRUNE,
        &BRANCH_LIST,
        &DIFF,
        &HISTORY,
        &STATS,
        &GC,
        &VERIFY,
        &FLATTEN,
        &DEFRAG,
    ];

    /// The scalar keys of a JSON row, and the list ones.
    fn keys(row: &Value) -> Vec<String> {
        row.as_object().unwrap().keys().cloned().collect()
    }

    fn names(spec: &Spec) -> Vec<String> {
        let mut n: Vec<String> = spec.fields.iter().map(|f| f.name.to_string()).collect();
        n.sort();
        n
    }

    fn same(spec: &Spec, row: &Value) {
        let mut k = keys(row);
        k.sort();
        assert_eq!(
            names(spec),
            k,
            "{}: the fields are the JSON row's keys",
            spec.command
        );
    }

    #[test]
    fn every_field_is_a_key_of_the_json_and_every_key_a_field() {
        use crate::control::proto::{Branch, Snapshot};
        let snap = Snapshot {
            name: "s".into(),
            generation: 2,
            parent: Some(1),
            parent_name: Some("p".into()),
            branch: "main".into(),
            created: 0,
            referenced_bytes: Some(1),
            exclusive_bytes: Some(1),
            files: Some(1),
            held: false,
            took_us: None,
        };
        let doc: Value = serde_json::from_str(&crate::output::snapshot_json(&[snap])).unwrap();
        same(&SNAPSHOT_LIST, &doc[0]);
        let b = Branch {
            name: "b".into(),
            generation: 3,
            origin: Some("s".into()),
            created: 0,
        };
        let doc: Value = serde_json::from_str(&crate::output::branch_json(&[b])).unwrap();
        same(&BRANCH_LIST, &doc[0]);
        same(&STATS, &with_store(&strata_snapshot::Stats::default(), &[]));
        same(&GC, &with_store(&strata_snapshot::GcReport::default(), &[]));
        same(
            &VERIFY,
            &with_store(
                &strata_snapshot::VerifyReport::default(),
                &[("clean", true.into())],
            ),
        );
        same(
            &FLATTEN,
            &with_store(&strata_snapshot::FlattenReport::default(), &[]),
        );
        same(
            &DEFRAG,
            &with_store(&strata_snapshot::DefragReport::default(), &[]),
        );
    }

    #[test]
    fn docs_list_every_field_of_every_command() {
        let doc = include_str!("../../docs/cli-output.md");
        for spec in ALL {
            let heading = format!("### `strata {}", spec.command);
            let start = doc
                .find(&heading)
                .unwrap_or_else(|| panic!("docs/cli-output.md has no section {heading}"));
            let section = &doc[start + heading.len()..];
            let section = &section[..section.find("\n### ").unwrap_or(section.len())];
            let documented: Vec<&str> = section
                .lines()
                .filter_map(|l| l.strip_prefix("| `"))
                .filter_map(|l| l.split('`').next())
                .collect();
            let fields: Vec<&str> = spec.fields.iter().map(|f| f.name).collect();
            assert_eq!(documented, fields, "docs/cli-output.md, {}", spec.command);
            for f in spec.fields {
                let kind = format!("{:?}", f.kind).to_lowercase();
                assert!(
                    section.contains(&format!("| `{}` | {kind} |", f.name)),
                    "docs/cli-output.md, {}: {} is documented as {kind}",
                    spec.command,
                    f.name
                );
            }
        }
    }

    /// A report's `--json` document, as the command prints it (store `/s`).
    fn with_store<T: serde::Serialize>(report: &T, extra: &[(&str, Value)]) -> Value {
        let path = std::path::Path::new("/s");
        serde_json::from_str(&crate::output::json_with_store(report, path, extra).unwrap()).unwrap()
    }
}
