//! Snapshot hooks: `strata snapshot create --pre/--post`, `pre_snapshot`/`post_snapshot`
//! in strata.toml (for automatic snapshots too), and `strata snapshot wrap`.
//!
//! The consistency case: SQLite in WAL mode keeps committed rows in `db-wal` until a
//! checkpoint; a pre hook that checkpoints (`PRAGMA wal_checkpoint(TRUNCATE)`) puts them
//! into the database file itself, so the snapshot's database file alone holds them —
//! without the hook it does not.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_tests::cli::{s, snapshot_names};
use strata_tests::{strata, TestStore};

/// A Python process that opens `db` in WAL mode with automatic checkpoints off, inserts
/// `rows` rows, commits, prints "ready" and keeps the connection open until its stdin
/// closes (so nothing checkpoints at close).
fn wal_writer(db: &Path, rows: u32) -> Child {
    let script = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
c.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(int(sys.argv[2]))])
c.commit()
print("ready", flush=True)
sys.stdin.read()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .arg(rows.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

/// Rows in the database file `db` read alone (copied without its -wal file).
fn rows_in_file_alone(db: &Path) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    fs::copy(db, &copy).unwrap();
    let out = Command::new("sqlite3")
        .arg(&copy)
        .arg("SELECT count(*) FROM t")
        .output()
        .expect("run sqlite3");
    if !out.status.success() {
        // The table itself is still only in the WAL.
        return 0;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_checkpointing_pre_hook_makes_a_wal_database_whole_in_the_snapshot() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let mnt = s(&ts.mnt);
    let db = mount.path("app.db");
    let mut writer = wal_writer(&db, 500);

    // Without a hook the snapshot's database file lacks the rows (they are in the WAL).
    strata(["snapshot", "create", mnt, "plain"]).assert_success();
    assert_eq!(
        rows_in_file_alone(&mount.path(".snapshots/plain/app.db")),
        0
    );

    let pre = format!(
        "sqlite3 {} 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null",
        db.display()
    );
    let log = ts.root.join("hooks.log");
    let post = format!(
        "echo \"$STRATA_HOOK $STRATA_SNAPSHOT $STRATA_BRANCH $STRATA_STORE\" >> {}",
        log.display()
    );
    strata([
        "snapshot",
        "create",
        mnt,
        "checkpointed",
        "--pre",
        &pre,
        "--post",
        &post,
    ])
    .assert_success();
    assert_eq!(
        rows_in_file_alone(&mount.path(".snapshots/checkpointed/app.db")),
        500
    );
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        format!("post checkpointed main {}\n", ts.store.display())
    );

    // A failing pre hook: no snapshot, a clear error, and the post hook still runs.
    strata([
        "snapshot", "create", mnt, "refused", "--pre", "exit 4", "--post", &post,
    ])
    .assert_error(&["pre-snapshot hook", "exit 4", "snapshot refused not taken"]);
    assert!(!snapshot_names(mnt).contains(&"refused".to_string()));
    assert!(fs::read_to_string(&log)
        .unwrap()
        .ends_with(&format!("post refused main {}\n", ts.store.display())));
    drop(writer.stdin.take());
    writer.wait().unwrap();
    mount.unmount();
}

#[test]
fn store_hooks_run_around_automatic_snapshots_and_wrap_takes_a_pair() {
    let ts = TestStore::new();
    let log = ts.root.join("hooks.log");
    let record = |when: &str| {
        format!(
            "echo \"{when} $STRATA_SNAPSHOT $STRATA_HOOK\" >> {}",
            log.display()
        )
    };
    ts.set_config("pre_snapshot", &format!("{:?}", record("pre")));
    ts.set_config("post_snapshot", &format!("{:?}", record("post")));
    let (store, mnt) = (s(&ts.store), s(&ts.mnt));

    // `wrap`: the command's exit status, the change only in NAME-post, and the store's
    // hooks around both snapshots.
    let mount = ts.mount();
    let file = ts.mnt.join("made-by-job");
    let job = format!("echo done > {}; exit 3", file.display());
    let run = strata(["snapshot", "wrap", mnt, "job", "--", "sh", "-c", &job]);
    assert_eq!(run.code(), Some(3), "{}", run.output());
    assert!(!ts.mnt.join(".snapshots/job-pre/made-by-job").exists());
    assert_eq!(
        fs::read_to_string(ts.mnt.join(".snapshots/job-post/made-by-job")).unwrap(),
        "done\n"
    );
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "pre job-pre pre\npost job-pre post\npre job-post pre\npost job-post post\n"
    );
    mount.unmount();

    // Automatic snapshots run the same hooks (output in the daemon log).
    fs::remove_file(&log).unwrap();
    strata(["mount", "--snapshot-every", "1s", store, mnt]).assert_success();
    let deadline = Instant::now() + Duration::from_secs(30);
    let auto = loop {
        let names = snapshot_names(store);
        if let Some(n) = names.iter().find(|n| n.starts_with("auto-")) {
            break n.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no automatic snapshot: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    strata(["umount", mnt]).assert_success();
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with(&format!("pre {auto} pre\npost {auto} post\n")),
        "{text}"
    );
    ts.assert_verify_clean();
}
