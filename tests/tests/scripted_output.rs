//! Scripted output (`-H`, `-p`, `-o`; docs/cli-output.md) of every listing and report,
//! against `--json` of the same command on the same store: every row, every field, in
//! the order `-o` asks for; unknown fields and `--json` together refused with exit 2;
//! the default output unchanged. Run on a mounted store (the daemon answers) and on an
//! unmounted one (the command opens the store itself).

use std::fs;

use serde_json::Value;
use strata_tests::cli::{json, ok, s};
use strata_tests::data::random_bytes;
use strata_tests::{strata, TestStore};

/// A field's JSON value as `-p` prints it (`count` fields print a list's length).
fn expected(value: &Value, name: &str) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if name == "problems" => items.len().to_string(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// The JSON rows of a command: an array, the array under `key`, or one object.
fn rows(doc: &Value, key: Option<&str>) -> Vec<Value> {
    match (key, doc) {
        (Some(k), d) => d[k].as_array().cloned().unwrap_or_default(),
        (None, Value::Array(a)) => a.clone(),
        (None, one) => vec![one.clone()],
    }
}

/// Fields that differ from one run of a command to the next (it did work, or timed
/// it): checked to be numbers, not compared.
fn volatile(name: &str) -> bool {
    name.ends_with("_ms")
        || name.starts_with("pack_bytes_")
        || name.starts_with("meta_")
        || name == "freed_bytes"
}

/// Checks `-p` (header = the field names), `-H -p` (every field of every row) and
/// `-H -p -o` (two fields, reversed) against `--json`; returns the field names.
#[track_caller]
fn agrees(args: &[&str], key: Option<&str>) -> Vec<String> {
    let doc = json(&[args, &["--json"]].concat());
    let want = rows(&doc, key);

    let table = ok(&[args, &["-p"]].concat());
    let header = table.lines().next().unwrap_or_default();
    let names: Vec<String> = header.split_whitespace().map(str::to_lowercase).collect();
    assert!(!names.is_empty(), "{args:?} -p printed no header:\n{table}");
    assert_eq!(
        table.lines().count(),
        want.len() + 1,
        "{args:?} -p:\n{table}"
    );

    let scripted = ok(&[args, &["-H", "-p"]].concat());
    let lines: Vec<&str> = scripted.lines().collect();
    assert_eq!(
        lines.len(),
        want.len(),
        "{args:?} -H -p:\n{scripted}\njson: {doc}"
    );
    for (line, row) in lines.iter().zip(&want) {
        let cells: Vec<&str> = line.split('\t').collect();
        assert_eq!(cells.len(), names.len(), "{args:?}: {line:?}");
        for (cell, name) in cells.iter().zip(&names) {
            assert!(
                row.get(name).is_some() || *cell == "-",
                "{args:?}: field {name} is not a key of the JSON row {row}"
            );
            if volatile(name) && row[name.as_str()].is_number() {
                assert!(cell.parse::<f64>().is_ok(), "{args:?}: {name} = {cell:?}");
                continue;
            }
            assert_eq!(
                *cell,
                expected(&row[name.as_str()], name),
                "{args:?}: field {name} of {row}"
            );
        }
    }

    let stable: Vec<&String> = names.iter().filter(|n| !volatile(n)).collect();
    if stable.len() >= 2 {
        let (last, first) = (stable[stable.len() - 1], stable[0]);
        let pick = format!("{last},{first}");
        let out = ok(&[args, &["-H", "-p", "-o", &pick]].concat());
        let want_lines: Vec<String> = want
            .iter()
            .map(|row| {
                format!(
                    "{}\t{}",
                    expected(&row[last.as_str()], last),
                    expected(&row[first.as_str()], first)
                )
            })
            .collect();
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            want_lines,
            "{args:?} -o {pick}"
        );
    }
    names
}

/// An unknown field and `--json` with `-H` are usage errors (exit 2).
#[track_caller]
fn refuses(args: &[&str]) {
    let run = strata([args, &["-H", "-o", "no_such_field"]].concat());
    assert_eq!(run.code(), Some(2), "{args:?}: {}", run.output());
    assert!(
        run.stderr.contains("unknown field 'no_such_field'")
            && run.stderr.contains("valid fields: "),
        "{args:?}: {}",
        run.stderr
    );
    let run = strata([args, &["-H", "--json"]].concat());
    assert_eq!(run.code(), Some(2), "{args:?}: {}", run.output());
}

#[test]
fn scripted_output_agrees_with_json_for_every_listing_and_report() {
    let ts = TestStore::new();
    let (store, mnt) = (s(&ts.store), s(&ts.mnt));
    let mount = ts.mount();
    let file = ts.mnt.join("f.bin");
    fs::write(&file, random_bytes(1, 300_000)).unwrap();
    fs::write(ts.mnt.join("old name"), b"x").unwrap();
    ok(&["snapshot", "create", store, "first"]);
    fs::write(&file, random_bytes(2, 100_000)).unwrap();
    fs::rename(ts.mnt.join("old name"), ts.mnt.join("new name")).unwrap();
    fs::create_dir(ts.mnt.join("d")).unwrap();
    ok(&["snapshot", "create", store, "second"]);
    ok(&["snapshot", "hold", store, "second"]);
    ok(&["clone", store, "first", "side"]);

    let f = s(&file);
    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["snapshot", "list", store], None),
        (vec!["snapshot", "list", mnt], None),
        (
            vec![
                "snapshot",
                "prune",
                store,
                "--keep",
                "last=1",
                "--all",
                "--dry-run",
            ],
            Some("decisions"),
        ),
        (vec!["branch", "list", store], None),
        (vec!["diff", store, "first", "second"], Some("changes")),
        (vec!["diff", mnt, "first"], Some("changes")),
        (vec!["history", f], Some("versions")),
        (vec!["stats", store], None),
        (vec!["verify", store], None),
        (vec!["flatten", store], None),
        (vec!["defrag", store], None),
        (vec!["gc", store], None),
    ];
    for (args, key) in &cases {
        let names = agrees(args, *key);
        assert!(names.len() >= 4, "{args:?}: {names:?}");
        refuses(args);
    }

    // The default output is the human one, unchanged.
    let table = ok(&["snapshot", "list", store]);
    assert!(
        table.starts_with("NAME    GEN  PARENT  BRANCH  CREATED"),
        "{table}"
    );
    assert_eq!(
        ok(&["diff", store, "first", "second"])
            .lines()
            .filter(|l| l.starts_with("R\t/old name -> /new name"))
            .count(),
        1
    );

    // A few fields by hand: what a script would ask for.
    assert_eq!(
        ok(&["snapshot", "list", store, "-H", "-o", "name,held"]),
        "first\tno\nsecond\tyes\n"
    );
    assert_eq!(
        ok(&["branch", "list", store, "-H", "-o", "name,origin"]),
        "main\tsecond\nside\tfirst\n"
    );
    let clean = ok(&["verify", store, "-H", "-o", "clean,problems"]);
    assert_eq!(clean, "yes\t0\n");
    let stored: u64 = ok(&["stats", store, "-H", "-p", "-o", "stored_bytes"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        stored,
        json(&["stats", store, "--json"])["stored_bytes"]
            .as_u64()
            .unwrap()
    );

    // Unmounted: the command opens the store itself and prints the same.
    let listed = ok(&["snapshot", "list", store, "-H", "-p"]);
    mount.unmount();
    assert_eq!(ok(&["snapshot", "list", store, "-H", "-p"]), listed);
    for (args, key) in cases
        .iter()
        .filter(|(a, _)| !a.contains(&mnt) && !a.contains(&f))
    {
        agrees(args, *key);
    }
}
