//! Scripted output: `-H` (no header, one tab between fields), `-p` (exact numbers,
//! times as seconds since the epoch) and `-o FIELD,...` (which fields, in which order),
//! as `zfs list -H -p -o name,used` has them. docs/cli-output.md lists every command's
//! fields.
//!
//! A command renders its `--json` document, so the three forms cannot disagree: a field
//! is a key of the JSON rows, under the same name, and `-p` prints its JSON value as it
//! is (a list as its items joined by `,`, or as their count for a `Count` field). A
//! listing's rows are the array (or the array under one key, as `history`'s
//! `versions`); a report (`stats`, `gc`, `verify`, ...) is one row.
//!
//! Invariants: without any of the three flags, nothing here runs and every command
//! prints what it always did; an unknown field is a `UsageError` (exit 2) that lists the
//! valid ones; `-H`/`-p`/`-o` and `--json` are refused together by clap.

use serde_json::Value;

use crate::error::UsageError;
use crate::output::{size, utc_time, Align};

/// The flags, flattened into each command's arguments.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Args {
    /// Scripted output: no header line, fields separated by one tab.
    #[arg(short = 'H', long = "no-header", conflicts_with = "json")]
    pub no_header: bool,
    /// Exact values: sizes in bytes, times in seconds since the epoch.
    #[arg(short = 'p', long = "parsable", conflicts_with = "json")]
    pub parsable: bool,
    /// The fields to print, in this order, comma-separated (docs/cli-output.md; an
    /// unknown one is refused with the list of valid ones).
    #[arg(
        short = 'o',
        long = "fields",
        value_name = "FIELD,...",
        value_delimiter = ',',
        conflicts_with = "json"
    )]
    pub fields: Vec<String>,
}

impl Args {
    /// True if any of the flags was given: the command prints through `render`.
    pub fn active(&self) -> bool {
        self.no_header || self.parsable || !self.fields.is_empty()
    }
}

/// How a field's value is shown without `-p` (with `-p` every value is its JSON one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string, as it is.
    Text,
    /// An integer, as it is (right-aligned in a table).
    Number,
    /// A number of bytes: human (`1.5 MiB`) unless exact.
    Size,
    /// Seconds since the epoch: `2026-11-23 15:04:05` (UTC) unless exact.
    Time,
    /// `yes`/`no` (`true`/`false` with `-p`).
    Bool,
    /// A ratio, two decimals.
    Ratio,
    /// A list shown as the number of its items.
    Count,
    /// A list shown as its items joined by `,`.
    List,
}

/// One field of a command's rows.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
}

pub const fn field(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

/// What a command prints: its name (for errors), where its rows are, its fields.
pub struct Spec {
    pub command: &'static str,
    /// `None`: the document is an array of rows, or one object that is the only row;
    /// `Some(key)`: the rows are the array under `key`.
    pub rows_key: Option<&'static str>,
    pub fields: &'static [Field],
}

impl Spec {
    /// The chosen fields, in order; an unknown name is refused with the valid ones.
    fn choose(&self, names: &[String]) -> Result<Vec<Field>, UsageError> {
        if names.is_empty() {
            return Ok(self.fields.to_vec());
        }
        names
            .iter()
            .map(|name| {
                let name = name.trim();
                self.fields
                    .iter()
                    .find(|f| f.name == name)
                    .copied()
                    .ok_or_else(|| {
                        let valid: Vec<&str> = self.fields.iter().map(|f| f.name).collect();
                        UsageError(format!(
                            "{}: unknown field '{name}' for -o; valid fields: {}",
                            self.command,
                            valid.join(", ")
                        ))
                    })
            })
            .collect()
    }
}

/// The rows of `doc` chosen by `-o`, as a table with a header (an upper-case field name
/// over each column) or, with `-H`, as tab-separated lines.
pub fn render(spec: &Spec, doc: &Value, args: &Args, exact: bool) -> Result<String, UsageError> {
    let fields = spec.choose(&args.fields)?;
    let exact = exact || args.parsable;
    let rows: Vec<&Value> = match (spec.rows_key, doc) {
        (Some(key), doc) => doc
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        (None, Value::Array(items)) => items.iter().collect(),
        (None, one) => vec![one],
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            fields
                .iter()
                .map(|f| cell(f.kind, row.get(f.name).unwrap_or(&Value::Null), args, exact))
                .collect()
        })
        .collect();
    if args.no_header {
        return Ok(cells.iter().map(|row| row.join("\t") + "\n").collect());
    }
    let headers: Vec<(String, Align)> = fields
        .iter()
        .map(|f| {
            let align = match f.kind {
                Kind::Number | Kind::Size | Kind::Ratio | Kind::Count => Align::Right,
                Kind::Text | Kind::Time | Kind::Bool | Kind::List => Align::Left,
            };
            (f.name.to_uppercase(), align)
        })
        .collect();
    let headers: Vec<(&str, Align)> = headers.iter().map(|(h, a)| (h.as_str(), *a)).collect();
    Ok(crate::output::table(&headers, &cells))
}

/// Prints a command's `--json` document (made by `doc` only if needed) as asked:
/// through `render` with `-H`/`-p`/`-o`, as it is with `--json`. False when neither
/// was asked: the caller prints its human output.
pub fn print_json(
    spec: &Spec,
    args: &Args,
    json: bool,
    exact: bool,
    doc: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<bool> {
    if args.active() {
        let value: Value = serde_json::from_str(&doc()?)?;
        print!("{}", render(spec, &value, args, exact)?);
    } else if json {
        let text = doc()?;
        if text.ends_with('\n') {
            print!("{text}");
        } else {
            println!("{text}");
        }
    } else {
        return Ok(false);
    }
    Ok(true)
}

/// One value as `-p` or the human form shows it; `-` for a missing one.
fn cell(kind: Kind, value: &Value, args: &Args, exact: bool) -> String {
    if value.is_null() {
        return "-".into();
    }
    if let (Kind::Count, Value::Array(items)) = (kind, value) {
        return items.len().to_string();
    }
    if let Value::Array(items) = value {
        if items.is_empty() {
            return "-".into();
        }
        return items.iter().map(plain).collect::<Vec<_>>().join(",");
    }
    if args.parsable {
        return plain(value);
    }
    match (kind, value) {
        (Kind::Size, Value::Number(n)) if n.as_u64().is_some() => {
            size(n.as_u64().unwrap_or(0), exact)
        }
        (Kind::Time, Value::Number(n)) if n.as_i64().is_some() => utc_time(n.as_i64().unwrap_or(0)),
        (Kind::Bool, Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        (Kind::Ratio, Value::Number(n)) => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
        _ => plain(value),
    }
}

/// A JSON scalar as text: strings without quotes, numbers and booleans as JSON has them.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: Spec = Spec {
        command: "snapshot list",
        rows_key: None,
        fields: &[
            field("name", Kind::Text),
            field("created", Kind::Time),
            field("referenced_bytes", Kind::Size),
            field("held", Kind::Bool),
            field("parent", Kind::Text),
        ],
    };

    fn args(h: bool, p: bool, o: &str) -> Args {
        Args {
            no_header: h,
            parsable: p,
            fields: o
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }

    fn doc() -> Value {
        json!([
            {"name": "a", "created": 1_795_000_000, "referenced_bytes": 1_572_864, "held": false, "parent": null},
            {"name": "b c", "created": 0, "referenced_bytes": 1024, "held": true, "parent": 3},
        ])
    }

    #[test]
    fn scripted_rows_are_tab_separated_and_exact() {
        let out = render(&SPEC, &doc(), &args(true, true, ""), false).unwrap();
        assert_eq!(
            out,
            "a\t1795000000\t1572864\tfalse\t-\nb c\t0\t1024\ttrue\t3\n"
        );
        let out = render(&SPEC, &doc(), &args(true, false, "held,name"), false).unwrap();
        assert_eq!(out, "no\ta\nyes\tb c\n");
    }

    #[test]
    fn chosen_fields_get_a_header_without_h() {
        let out = render(
            &SPEC,
            &doc(),
            &args(false, false, "name,referenced_bytes,created"),
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            "NAME  REFERENCED_BYTES  CREATED\n\
             a              1.5 MiB  2026-11-18 11:06:40\n\
             b c              1 KiB  1970-01-01 00:00:00\n"
        );
    }

    #[test]
    fn an_unknown_field_is_refused_with_the_valid_ones() {
        let err = render(&SPEC, &doc(), &args(true, false, "name,used"), false).unwrap_err();
        assert_eq!(
            err.0,
            "snapshot list: unknown field 'used' for -o; valid fields: name, created, \
             referenced_bytes, held, parent"
        );
    }

    #[test]
    fn a_report_is_one_row_and_lists_are_counted_or_joined() {
        const REPORT: Spec = Spec {
            command: "gc",
            rows_key: None,
            fields: &[
                field("freed_bytes", Kind::Size),
                field("problems", Kind::Count),
                field("reasons", Kind::List),
            ],
        };
        let doc =
            json!({"freed_bytes": 2048, "problems": ["x", "y"], "reasons": ["daily", "held"]});
        let out = render(&REPORT, &doc, &args(true, false, ""), false).unwrap();
        assert_eq!(out, "2 KiB\t2\tdaily,held\n");
        let out = render(&REPORT, &doc, &args(true, true, "freed_bytes"), false).unwrap();
        assert_eq!(out, "2048\n");
    }

    #[test]
    fn rows_under_a_key_and_an_empty_listing() {
        const HISTORY: Spec = Spec {
            command: "history",
            rows_key: Some("versions"),
            fields: &[field("generation", Kind::Text)],
        };
        let doc = json!({"branch": "main", "versions": [{"generation": 1}, {"generation": 4}]});
        assert_eq!(
            render(&HISTORY, &doc, &args(true, false, ""), false).unwrap(),
            "1\n4\n"
        );
        assert_eq!(
            render(&SPEC, &json!([]), &args(true, false, ""), false).unwrap(),
            ""
        );
        assert_eq!(
            render(&SPEC, &json!([]), &args(false, false, "name"), false).unwrap(),
            "NAME\n"
        );
    }
}
