//! The snapshot commands end to end, through the built `strata` binary: `snapshot
//! create|list|delete|rename`, `rollback`, `clone`, `branch list|delete`, `diff`, `history`,
//! `mount --branch|--snapshot`, with the store unmounted (the command opens it) and mounted
//! (the command talks to the daemon over its control socket), which must print the same.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use strata_tests::binary::{strata_env, try_run};
use strata_tests::cli::{json, ok, s, snapshot_names, snapshots};
use strata_tests::data::random_bytes;
use strata_tests::{mounts, strata, strata_bin, sys, Run, TestStore};

/// Every live process that is a strata daemon of `store`.
fn daemon_pids(store: &Path) -> Vec<u32> {
    let store = store.to_string_lossy();
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let args = sys::cmdline(*pid);
            sys::process_alive(*pid)
                && args.iter().any(|a| a == "--foreground")
                && args.iter().any(|a| *a == store)
        })
        .collect();
    pids.sort();
    pids
}

/// A second (third, ...) mount of a test store at `root/NAME`, unmounted on drop if the
/// test did not (the `TestStore` cleans up whatever is left after that).
struct ExtraMount {
    mount_point: PathBuf,
}

impl ExtraMount {
    #[track_caller]
    fn new(ts: &TestStore, name: &str, args: &[&str]) -> ExtraMount {
        let mount_point = ts.root.join(name);
        fs::create_dir_all(&mount_point).unwrap();
        let mut all = vec!["mount"];
        all.extend_from_slice(args);
        all.push(s(&ts.store));
        all.push(s(&mount_point));
        let run = strata(&all);
        if !run.success() {
            panic!(
                "`{}` failed: {}\n--- daemon.log ---\n{}",
                run.what,
                run.stderr,
                ts.daemon_log_tail(30)
            );
        }
        assert!(mounts::is_mounted(&mount_point), "{name} not mounted");
        ExtraMount { mount_point }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.mount_point.join(relative)
    }

    #[track_caller]
    fn unmount(self) {
        ok(&["umount", s(&self.mount_point)]);
        assert!(!mounts::is_mounted(&self.mount_point));
    }
}

impl Drop for ExtraMount {
    fn drop(&mut self) {
        if mounts::is_mounted(&self.mount_point) {
            let mut command = std::process::Command::new(strata_bin());
            command.args(["umount".as_ref(), self.mount_point.as_os_str()]);
            command.args(["--timeout", "20"]);
            let _ = try_run(command, Duration::from_secs(40));
            if mounts::is_mounted(&self.mount_point) {
                mounts::force_unmount(&self.mount_point);
            }
        }
    }
}

/// Sends SIGCONT on drop (a test that stops the daemon must never leave it stopped).
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = sys::kill(self.0, libc::SIGCONT);
    }
}

/// Replaces `YYYY-MM-DD HH:MM:SS` and `YYYYMMDDTHHMMSSZ` by placeholders.
fn normalize_times(text: &str) -> String {
    const PATTERNS: [&str; 2] = ["0000-00-00 00:00:00", "00000000T000000Z"];
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    'outer: while i < bytes.len() {
        for pattern in PATTERNS {
            let p = pattern.as_bytes();
            if i + p.len() <= bytes.len()
                && p.iter().zip(&bytes[i..]).all(|(want, got)| {
                    if *want == b'0' {
                        got.is_ascii_digit()
                    } else {
                        want == got
                    }
                })
            {
                out.push_str("<time>");
                i += p.len();
                continue 'outer;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// `pre-rollback-...` from rollback's output.
fn saved_as(rollback_output: &str) -> String {
    let marker = "kept as snapshot ";
    let start = rollback_output
        .find(marker)
        .unwrap_or_else(|| panic!("no saved snapshot named in: {rollback_output}"))
        + marker.len();
    rollback_output[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn read_string(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

#[test]
fn listing_commands_print_the_same_mounted_and_unmounted() {
    let ts = TestStore::new();
    let store = s(&ts.store);
    let mnt = s(&ts.mnt);
    let m = ts.mount();
    fs::write(m.path("a"), b"hello").unwrap();
    fs::create_dir(m.path("dir")).unwrap();
    fs::write(m.path("dir/b"), random_bytes(1, 100_000)).unwrap();
    fs::write(m.path("old"), b"to be renamed").unwrap();
    ok(&["snapshot", "create", store, "s1"]);
    fs::write(m.path("a"), b"hello, world").unwrap();
    fs::remove_file(m.path("dir/b")).unwrap();
    fs::rename(m.path("old"), m.path("new")).unwrap();
    fs::write(m.path("c"), random_bytes(2, 50_000)).unwrap();
    ok(&["snapshot", "create", mnt, "s2"]);
    m.unmount();

    let commands = |store: &str| -> Vec<Vec<String>> {
        [
            vec!["snapshot", "list", store],
            vec!["snapshot", "list", store, "--bytes"],
            vec!["snapshot", "list", store, "--json"],
            vec!["branch", "list", store],
            vec!["branch", "list", store, "--json"],
            vec!["diff", store, "s1", "s2"],
            vec!["diff", store, "s1"],
            vec!["diff", store, "s1", "s2", "--json"],
            vec!["snapshot", "delete", store, "s1", "--dry-run"],
        ]
        .into_iter()
        .map(|c| c.into_iter().map(String::from).collect())
        .collect()
    };
    let run_all = |store: &str| -> Vec<String> {
        commands(store)
            .iter()
            .map(|c| ok(&c.iter().map(String::as_str).collect::<Vec<_>>()))
            .collect()
    };
    let unmounted = run_all(store);
    assert!(
        !ts.lock_is_held(),
        "a command left the unmounted store locked"
    );
    let m = ts.mount();
    let pid = ts.daemon_pid().expect("daemon");
    let by_store = run_all(store);
    let by_mount_point = run_all(mnt);
    let by_path_inside = run_all(s(&m.path("dir")));
    for (i, command) in commands(store).iter().enumerate() {
        assert_eq!(
            unmounted[i],
            by_store[i],
            "`{}` differs mounted",
            command.join(" ")
        );
        assert_eq!(
            unmounted[i],
            by_mount_point[i],
            "`{}` differs by mount point",
            command.join(" ")
        );
        assert_eq!(
            unmounted[i],
            by_path_inside[i],
            "`{}` differs by path inside",
            command.join(" ")
        );
    }
    // It really went through the daemon: the store stays locked by it, and it logged.
    assert_eq!(ts.daemon_pid(), Some(pid));
    assert!(
        ts.daemon_log_tail(200).contains("snapshot_list"),
        "the daemon did not see the requests"
    );

    let list = &unmounted[0];
    let header = list.lines().next().unwrap();
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "NAME",
            "GEN",
            "PARENT",
            "BRANCH",
            "CREATED",
            "REFERENCED",
            "EXCLUSIVE",
            "FILES",
            "HOLD"
        ]
    );
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(list.lines().nth(2).unwrap().starts_with("s2 "), "{list}");
    assert!(list.contains(" KiB"), "human sizes expected:\n{list}");
    let rows: Value = serde_json::from_str(&unmounted[2]).unwrap();
    assert_eq!(rows[1]["name"], "s2");
    assert_eq!(rows[1]["parent_name"], "s1");
    assert_eq!(rows[1]["branch"], "main");
    assert!(rows[0]["referenced_bytes"].as_u64().unwrap() > 50_000);
    assert!(rows[1]["files"].as_u64().unwrap() >= 4);
    let created = rows[0]["created_utc"].as_str().unwrap();
    assert!(
        list.contains(&created.replace('T', " ").replace('Z', "")),
        "CREATED in UTC: {created} in\n{list}"
    );
    assert!(unmounted[1].contains(&rows[0]["referenced_bytes"].to_string()));
    let diff = &unmounted[5];
    for line in ["M\t/a", "-\t/dir/b", "R\t/old -> /new", "+\t/c"] {
        assert!(diff.lines().any(|l| l == line), "{line:?} missing:\n{diff}");
    }
    assert_eq!(unmounted[5], unmounted[6], "s2 is the live tree");
    drop(m);
}

#[test]
fn changing_commands_print_the_same_mounted_and_unmounted() {
    let script = |store: &str| -> Vec<String> {
        let steps: Vec<Vec<&str>> = vec![
            vec!["snapshot", "create", store, "s1"],
            vec!["snapshot", "create", store, "s2"],
            vec!["snapshot", "rename", store, "s2", "s3"],
            vec!["snapshot", "delete", store, "s3", "--dry-run"],
            vec!["snapshot", "delete", store, "s3"],
            // A daemon flattens the deleted generation by itself, whenever it gets to it;
            // this makes both sides show the tree after it (what it prints depends on
            // whether the daemon was first).
            vec!["flatten", store],
            vec!["clone", store, "s1", "b1"],
            vec!["snapshot", "create", store, "on-b1", "--branch", "b1"],
            vec!["branch", "list", store],
            vec!["rollback", store, "s1"],
            vec!["snapshot", "list", store, "--bytes"],
            vec!["branch", "delete", store, "b1"],
            vec!["branch", "list", store],
            vec!["gc", store],
        ];
        steps
            .iter()
            .map(|step| {
                let out = ok(step);
                if step[0] == "flatten" {
                    return "(flattened)".to_string();
                }
                normalize_times(&out.replace(store, "STORE"))
            })
            .collect()
    };
    let unmounted = TestStore::new();
    let first = script(s(&unmounted.store));
    let mounted = TestStore::new();
    let m = mounted.mount();
    let second = script(s(&mounted.store));
    assert_eq!(first, second);
    assert!(first[0].starts_with("created snapshot s1 of branch main (generation "));
    assert_eq!(first[2], "renamed snapshot s2 to s3\n");
    assert_eq!(
        first[4],
        "deleted snapshot s3; 0 B is no longer referenced and returns to the disk at the next `strata gc`\n"
    );
    assert!(first[7].contains("of branch b1"), "{}", first[7]);
    assert!(first[9].starts_with(
        "rolled back branch main to s1; the previous state is kept as snapshot pre-rollback-"
    ));
    assert_eq!(first[11], "deleted branch b1\n");
    assert!(
        first[13].starts_with("gc: ") && first[13].contains(" freed (store packs "),
        "{}",
        first[13]
    );
    m.unmount();
}

#[test]
fn snapshot_is_isolated_from_later_writes() {
    let ts = TestStore::new();
    let store = s(&ts.store);
    let m = ts.mount();
    let before = random_bytes(7, 300_000);
    fs::write(m.path("data.bin"), &before).unwrap();
    fs::write(m.path("note"), b"first").unwrap();
    ok(&["snapshot", "create", s(&ts.mnt), "frozen"]);
    // Writes after the snapshot: overwrite, append, new file, removal.
    let mut after = before.clone();
    after[1000..2000].copy_from_slice(&random_bytes(8, 1000));
    fs::write(m.path("data.bin"), &after).unwrap();
    fs::write(m.path("note"), b"second, longer").unwrap();
    fs::write(m.path("later"), b"new").unwrap();
    assert_eq!(fs::read(m.path("data.bin")).unwrap(), after);

    let snapdir = m.path(".snapshots/frozen");
    assert!(
        snapdir.is_dir(),
        ".snapshots/frozen missing from the live mount"
    );
    assert_eq!(fs::read(snapdir.join("data.bin")).unwrap(), before);
    assert_eq!(read_string(&snapdir.join("note")), "first");
    assert!(!snapdir.join("later").exists());

    // The same snapshot as a separate read-only mount, served by the same daemon.
    let pid = ts.daemon_pid().expect("daemon");
    let ro = ExtraMount::new(&ts, "ro", &["--snapshot", "frozen"]);
    assert_eq!(daemon_pids(&ts.store), vec![pid], "one daemon serves both");
    assert_eq!(fs::read(ro.path("data.bin")).unwrap(), before);
    assert_eq!(read_string(&ro.path("note")), "first");
    assert!(!ro.path("later").exists());
    let err = fs::write(ro.path("note"), b"x").unwrap_err();
    assert_eq!(
        sys::errno(&err),
        libc::EROFS,
        "write into a snapshot: {err}"
    );
    let err = fs::write(ro.path("new-file"), b"x").unwrap_err();
    assert_eq!(sys::errno(&err), libc::EROFS, "create in a snapshot: {err}");
    // A mounted snapshot cannot be deleted; it can be renamed.
    strata(["snapshot", "delete", store, "frozen"])
        .assert_error(&["snapshot frozen is mounted at", s(&ro.mount_point)]);
    ro.unmount();
    // The main mount is untouched by the other mount's end.
    assert_eq!(ts.daemon_pid(), Some(pid));
    assert_eq!(read_string(&m.path("note")), "second, longer");
    ok(&["snapshot", "delete", store, "frozen"]);
    assert!(snapshot_names(store).is_empty());
    m.unmount();
    ts.assert_verify_clean();
}

#[test]
fn rollback_while_mounted_and_its_undo() {
    let ts = TestStore::new();
    let mnt = s(&ts.mnt);
    let m = ts.mount();
    fs::write(m.path("f"), b"version one").unwrap();
    fs::write(m.path("kept"), b"kept").unwrap();
    ok(&["snapshot", "create", mnt, "v1"]);
    fs::write(m.path("f"), b"version two, longer").unwrap();
    fs::write(m.path("added"), b"after v1").unwrap();
    fs::remove_file(m.path("kept")).unwrap();
    // Prime the kernel caches with the current state.
    assert_eq!(read_string(&m.path("f")), "version two, longer");
    assert!(m.path("added").exists());

    let out = ok(&["rollback", mnt, "v1"]);
    assert!(
        out.starts_with(
            "rolled back branch main to v1; the previous state is kept as snapshot pre-rollback-"
        ),
        "{out}"
    );
    let saved = saved_as(&out);
    assert_eq!(read_string(&m.path("f")), "version one");
    assert!(
        !m.path("added").exists(),
        "a file made after v1 is still seen"
    );
    assert_eq!(read_string(&m.path("kept")), "kept");
    assert!(snapshot_names(mnt).contains(&saved), "{saved} not listed");

    // Undo: roll back to the automatic snapshot.
    let out = ok(&["rollback", mnt, &saved]);
    assert!(out.contains(&format!("to {saved};")), "{out}");
    assert_eq!(read_string(&m.path("f")), "version two, longer");
    assert_eq!(read_string(&m.path("added")), "after v1");
    assert!(!m.path("kept").exists());
    m.unmount();
    ts.assert_verify_clean();
}

#[test]
fn rollback_is_refused_with_an_open_file_unless_forced() {
    let ts = TestStore::new();
    let mnt = s(&ts.mnt);
    let m = ts.mount();
    fs::write(m.path("held"), b"old").unwrap();
    ok(&["snapshot", "create", mnt, "r1"]);
    fs::write(m.path("held"), b"new content").unwrap();
    fs::write(m.path("fresh"), b"made after r1").unwrap();

    let mut held = File::open(m.path("held")).unwrap();
    let mut fresh = File::open(m.path("fresh")).unwrap();
    strata(["rollback", mnt, "r1"]).assert_error(&["open", "/held", "/fresh", "--force"]);
    assert_eq!(
        read_string(&m.path("held")),
        "new content",
        "refused, yet changed"
    );

    let out = ok(&["rollback", mnt, "r1", "--force"]);
    assert!(out.contains("/held") && out.contains("/fresh"), "{out}");
    assert!(out.contains("ENOENT"), "{out}");
    // An open handle reads the file of the same inode in the rolled-back tree...
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "old", "the open handle of a file that exists in r1");
    // ... and fails with ENOENT when that inode does not exist there.
    let mut buf = Vec::new();
    let err = fresh.read_to_end(&mut buf).unwrap_err();
    assert_eq!(sys::errno(&err), libc::ENOENT, "{err}");
    drop((held, fresh));
    assert_eq!(read_string(&m.path("held")), "old");
    assert!(!m.path("fresh").exists());
    m.unmount();
}

#[test]
fn clone_is_mounted_beside_main_by_the_same_daemon() {
    let ts = TestStore::new();
    let store = s(&ts.store);
    let m = ts.mount();
    fs::write(m.path("shared"), b"from main").unwrap();
    ok(&["snapshot", "create", store, "base"]);
    let out = ok(&["clone", store, "base", "feature"]);
    assert!(
        out.starts_with("created branch feature from snapshot base"),
        "{out}"
    );
    let pid = ts.daemon_pid().expect("daemon");
    let branch = ExtraMount::new(&ts, "feature", &["--branch", "feature"]);
    assert_eq!(
        daemon_pids(&ts.store),
        vec![pid],
        "one daemon for both mounts"
    );
    assert_eq!(read_string(&branch.path("shared")), "from main");

    fs::write(branch.path("only-in-branch"), b"b").unwrap();
    fs::write(branch.path("shared"), b"changed in branch").unwrap();
    fs::write(m.path("only-in-main"), b"m").unwrap();
    assert!(!m.path("only-in-branch").exists());
    assert_eq!(read_string(&m.path("shared")), "from main");
    assert!(!branch.path("only-in-main").exists());

    // Commands naming the branch's mount act on the branch.
    let bmp = s(&branch.mount_point);
    ok(&["snapshot", "create", bmp, "feature-1"]);
    let rows = snapshots(store);
    let row = rows.iter().find(|r| r["name"] == "feature-1").unwrap();
    assert_eq!(row["branch"], "feature");
    let diff = ok(&["diff", bmp, "base"]);
    assert!(diff.lines().any(|l| l == "+\t/only-in-branch"), "{diff}");
    assert!(!diff.contains("only-in-main"), "{diff}");
    let history = json(&["history", s(&branch.path("shared")), "--json"]);
    assert_eq!(history["branch"], "feature");

    let branches = json(&["branch", "list", store, "--json"]);
    let names: Vec<&str> = branches
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "feature"]);

    // A mounted branch cannot be deleted; the refusal names the mount point.
    strata(["branch", "delete", store, "feature"])
        .assert_error(&["branch feature is mounted at", bmp]);
    // A branch is mounted once.
    let again = ts.root.join("again");
    fs::create_dir(&again).unwrap();
    strata(["mount", "--branch", "feature", store, s(&again)])
        .assert_error(&["already mounted at", bmp]);
    strata(["mount", store, s(&again)]).assert_error(&["already mounted at", s(&ts.mnt)]);
    assert!(!mounts::is_mounted(&again));

    // Unmounting the branch leaves main mounted and the daemon running.
    branch.unmount();
    assert!(mounts::is_mounted(&ts.mnt));
    assert_eq!(ts.daemon_pid(), Some(pid));
    assert_eq!(read_string(&m.path("shared")), "from main");
    let out = ok(&["branch", "delete", store, "feature"]);
    assert_eq!(out, "deleted branch feature\n");
    m.unmount();
    assert!(!ts.control_socket().exists(), "socket left behind");
}

#[test]
fn diff_reports_added_removed_modified_and_renamed() {
    let ts = TestStore::new();
    let mnt = s(&ts.mnt);
    let m = ts.mount();
    fs::write(m.path("keep"), b"same").unwrap();
    fs::write(m.path("modify"), b"before").unwrap();
    fs::write(m.path("remove"), b"gone soon").unwrap();
    fs::write(m.path("old-name"), b"moving").unwrap();
    fs::create_dir(m.path("sub")).unwrap();
    fs::write(m.path("sub/inner"), b"inner").unwrap();
    ok(&["snapshot", "create", mnt, "a"]);
    fs::write(m.path("modify"), b"after, different").unwrap();
    fs::remove_file(m.path("remove")).unwrap();
    fs::rename(m.path("old-name"), m.path("new-name")).unwrap();
    fs::write(m.path("added"), b"new").unwrap();
    fs::write(m.path("sub/inner2"), b"another").unwrap();

    let live = ok(&["diff", mnt, "a"]);
    for line in [
        "M\t/modify",
        "-\t/remove",
        "R\t/old-name -> /new-name",
        "+\t/added",
        "+\t/sub/inner2",
    ] {
        assert!(live.lines().any(|l| l == line), "{line:?} missing:\n{live}");
    }
    assert!(!live.contains("/keep"), "unchanged file listed:\n{live}");
    assert!(
        !live.contains("/sub/inner\n"),
        "unchanged file listed:\n{live}"
    );
    for line in live.lines() {
        let code = line.split('\t').next().unwrap();
        assert!(["+", "-", "M", "R"].contains(&code), "bad code in {line:?}");
    }

    ok(&["snapshot", "create", mnt, "b"]);
    let between = ok(&["diff", mnt, "a", "b"]);
    assert_eq!(between, live, "a..b and a..live (= b)");
    let reverse = ok(&["diff", mnt, "b", "a"]);
    assert!(reverse.lines().any(|l| l == "+\t/remove"), "{reverse}");
    assert!(reverse.lines().any(|l| l == "-\t/added"), "{reverse}");
    assert!(
        reverse.lines().any(|l| l == "R\t/new-name -> /old-name"),
        "{reverse}"
    );
    assert_eq!(ok(&["diff", mnt, "b"]), "", "nothing changed since b");

    let doc = json(&["diff", mnt, "a", "b", "--json"]);
    assert_eq!(doc["from"], "a");
    assert_eq!(doc["to"], "b");
    let changes = doc["changes"].as_array().unwrap();
    let rename = changes.iter().find(|c| c["change"] == "R").unwrap();
    assert_eq!(rename["path"], "/old-name");
    assert_eq!(rename["new_path"], "/new-name");
    assert_eq!(rename["kind"], "file");
    assert_eq!(changes.len(), live.lines().count());
    strata(["diff", mnt, "nope"]).assert_error(&["no snapshot named \"nope\""]);
    m.unmount();
}

#[test]
fn history_of_a_file_changed_across_three_snapshots() {
    let ts = TestStore::new();
    let mnt = s(&ts.mnt);
    let m = ts.mount();
    let file = m.path("docs/report.txt");
    fs::create_dir(m.path("docs")).unwrap();
    fs::write(m.path("docs/other"), b"unrelated").unwrap();
    for (i, size) in [(1, 100usize), (2, 2000), (3, 30_000)] {
        fs::write(&file, vec![b'a' + i as u8; size]).unwrap();
        ok(&["snapshot", "create", mnt, &format!("h{i}")]);
        // A change elsewhere must not show in the file's history.
        fs::write(m.path("docs/other"), format!("unrelated {i}")).unwrap();
    }
    ok(&["snapshot", "create", mnt, "h4"]); // nothing changed in the file

    let doc = json(&["history", s(&file), "--json"]);
    assert_eq!(doc["branch"], "main");
    assert_eq!(doc["path"], "/docs/report.txt");
    let versions = doc["versions"].as_array().unwrap();
    let summary: Vec<(String, String, u64)> = versions
        .iter()
        .map(|v| {
            (
                v["snapshot"].as_str().unwrap_or("(live)").to_string(),
                v["change"].as_str().unwrap().to_string(),
                v["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("h1".to_string(), "created".to_string(), 100),
            ("h2".to_string(), "modified".to_string(), 2000),
            ("h3".to_string(), "modified".to_string(), 30_000),
        ]
    );

    // A change in the live tree is the last row, as (live).
    fs::write(&file, b"live").unwrap();
    let table = ok(&["history", s(&file)]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["GEN", "SNAPSHOT", "TIME", "CHANGE", "SIZE"]
    );
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[1].contains(" h1 ") && lines[1].contains("created"),
        "{table}"
    );
    assert!(lines[3].contains("29.3 KiB"), "{table}");
    assert!(
        lines[4].contains("(live)") && lines[4].trim_end().ends_with("4 B"),
        "{table}"
    );
    let exact = ok(&["history", s(&file), "--bytes"]);
    assert!(exact.contains("30000"), "{exact}");

    // Paths that are not in a branch's live tree.
    let in_snapshot = m.path(".snapshots/h1/docs/report.txt");
    strata(["history", s(&in_snapshot)]).assert_error(&[".snapshots"]);
    strata(["history", s(&ts.root.join("outside"))]).assert_error(&["not inside a strata mount"]);
    strata(["history", s(&m.path("never-existed"))]).assert_error(&["/never-existed", "not found"]);
    m.unmount();
}

#[test]
fn names_and_missing_things_are_clear_errors() {
    let ts = TestStore::new();
    let store = s(&ts.store);
    let long = "x".repeat(300);
    for bad in ["a/b", "", "..", long.as_str()] {
        let run = strata(["snapshot", "create", store, bad]);
        run.assert_error(&["invalid snapshot name"]);
        assert_eq!(run.code(), Some(2), "{bad:?}");
    }
    strata(["snapshot", "create", store, "bad\tname"]).assert_error(&["control character"]);
    ok(&["snapshot", "create", store, "good"]);
    ok(&["snapshot", "create", store, "other"]);
    let check = |run: Run, needles: &[&str]| {
        run.assert_error(needles);
    };
    check(
        strata(["snapshot", "create", store, "good"]),
        &["\"good\" exists already"],
    );
    check(
        strata(["snapshot", "rename", store, "good", "other"]),
        &["\"other\" exists already"],
    );
    check(
        strata(["snapshot", "rename", store, "good", "a/b"]),
        &["invalid snapshot name \"a/b\""],
    );
    check(
        strata(["snapshot", "rename", store, "missing", "x"]),
        &["no snapshot named \"missing\""],
    );
    check(
        strata(["snapshot", "delete", store, "missing"]),
        &["no snapshot named \"missing\""],
    );
    check(
        strata(["rollback", store, "missing"]),
        &["no snapshot named \"missing\""],
    );
    check(
        strata(["clone", store, "good", "x/y"]),
        &["invalid branch name \"x/y\""],
    );
    check(
        strata(["clone", store, "missing", "b"]),
        &["no snapshot named \"missing\""],
    );
    check(
        strata(["branch", "delete", store, "main"]),
        &["main branch cannot be deleted"],
    );
    check(
        strata(["branch", "delete", store, "nope"]),
        &["no branch named \"nope\""],
    );
    check(
        strata(["snapshot", "create", store, "x", "--branch", "nope"]),
        &["no branch named \"nope\""],
    );
    check(
        strata(["diff", store, "good", "missing"]),
        &["no snapshot named \"missing\""],
    );
    let plain = ts.root.join("plain");
    fs::create_dir(&plain).unwrap();
    check(
        strata(["snapshot", "list", s(&plain)]),
        &[s(&plain), "not a strata store"],
    );
    let missing = ts.root.join("missing");
    check(
        strata(["snapshot", "list", s(&missing)]),
        &[s(&missing), "does not exist"],
    );
    // Mounting something that is not there.
    check(
        strata(["mount", "--branch", "nope", store, s(&ts.mnt)]),
        &["no branch named \"nope\""],
    );
    check(
        strata(["mount", "--snapshot", "nope", store, s(&ts.mnt)]),
        &["no snapshot named \"nope\""],
    );
    check(
        strata(["mount", "--branch", "a/b", store, s(&ts.mnt)]),
        &["invalid branch name"],
    );
    assert!(!mounts::is_mounted(&ts.mnt));
    assert!(!ts.lock_is_held());

    // The same errors through the daemon, and a missing branch for a second mount.
    let m = ts.mount();
    check(
        strata(["snapshot", "create", store, "good"]),
        &["\"good\" exists already"],
    );
    check(
        strata(["snapshot", "delete", s(&ts.mnt), "missing"]),
        &["no snapshot named \"missing\""],
    );
    let second = ts.root.join("second");
    fs::create_dir(&second).unwrap();
    check(
        strata(["mount", "--branch", "nope", store, s(&second)]),
        &["no branch named \"nope\""],
    );
    check(
        strata(["mount", "--snapshot", "nope", store, s(&second)]),
        &["no snapshot named \"nope\""],
    );
    assert!(!mounts::is_mounted(&second));
    m.unmount();
}

#[test]
fn dry_run_frees_what_the_exclusive_column_says() {
    let ts = TestStore::new();
    let store = s(&ts.store);
    let m = ts.mount();
    fs::write(m.path("big"), random_bytes(11, 512 * 1024)).unwrap();
    fs::write(m.path("shared"), random_bytes(12, 128 * 1024)).unwrap();
    ok(&["snapshot", "create", store, "one"]);
    fs::write(m.path("big"), random_bytes(13, 256 * 1024)).unwrap();
    ok(&["snapshot", "create", store, "two"]);
    fs::remove_file(m.path("big")).unwrap();

    let rows = snapshots(store);
    let exclusive: Vec<u64> = rows
        .iter()
        .map(|r| r["exclusive_bytes"].as_u64().unwrap())
        .collect();
    assert!(
        exclusive[0] >= 512 * 1024,
        "the overwritten data is only in `one`: {rows:?}"
    );
    for (row, bytes) in rows.iter().zip(&exclusive) {
        let name = row["name"].as_str().unwrap();
        let out = ok(&["snapshot", "delete", store, name, "--dry-run"]);
        assert!(
            out.ends_with(&format!(" ({bytes} bytes)\n")) && out.starts_with("would free "),
            "{name}: {out} vs exclusive {bytes}"
        );
    }
    let table = ok(&["snapshot", "list", store, "--bytes"]);
    let line = table.lines().find(|l| l.starts_with("one ")).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[cells.len() - 3], exclusive[0].to_string(), "{table}");
    // Nothing was deleted by the dry runs.
    assert_eq!(snapshot_names(store), ["one", "two"]);
    let out = ok(&["snapshot", "delete", store, "one"]);
    assert!(out.starts_with("deleted snapshot one; "), "{out}");
    assert_eq!(snapshot_names(store), ["two"]);
    m.unmount();
    ts.assert_verify_clean();
}

#[test]
fn a_daemon_that_does_not_answer_is_named() {
    let ts = TestStore::new();
    let m = ts.mount();
    let pid = ts.daemon_pid().expect("daemon");
    let _resume = Resume(pid);
    sys::kill(pid, libc::SIGSTOP).unwrap();
    let env: [(&str, &std::ffi::OsStr); 1] = [("STRATA_CONTROL_TIMEOUT", "1".as_ref())];
    let run = strata_env(["snapshot", "list", s(&ts.store)], &env);
    sys::kill(pid, libc::SIGCONT).unwrap();
    run.assert_error(&[
        "is not answering",
        &ts.control_socket().display().to_string(),
    ]);
    ok(&["snapshot", "list", s(&ts.store)]);
    m.unmount();
}

#[test]
fn a_stale_control_socket_is_ignored_and_replaced() {
    let ts = TestStore::new();
    let mut m = ts.mount();
    ok(&["snapshot", "create", s(&ts.store), "before-crash"]);
    m.crash();
    assert!(
        ts.control_socket().exists(),
        "a killed daemon leaves its socket"
    );
    assert!(
        !ts.store.join("control.sock").exists(),
        "the socket lives in the runtime directory, not in the store"
    );
    // Nobody answers on it, and the lock is free: the command opens the store itself.
    assert_eq!(snapshot_names(s(&ts.store)), ["before-crash"]);
    m.unmount(); // clears the stale mount
    let m = ts.mount();
    ok(&["snapshot", "create", s(&ts.mnt), "after"]);
    assert!(ts.daemon_log_tail(100).contains("stale control socket"));
    m.unmount();
}

#[test]
fn sigterm_unmounts_every_mount_of_the_daemon() {
    let ts = TestStore::new();
    let m = ts.mount();
    fs::write(m.path("f"), b"unsynced").unwrap();
    ok(&["snapshot", "create", s(&ts.store), "s"]);
    let ro = ExtraMount::new(&ts, "ro", &["--snapshot", "s"]);
    let pid = ts.daemon_pid().expect("daemon");
    sys::kill(pid, libc::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sys::process_alive(pid) || ts.lock_is_held() {
        assert!(std::time::Instant::now() < deadline, "daemon still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!mounts::is_mounted(&ts.mnt));
    assert!(!mounts::is_mounted(&ro.mount_point));
    assert!(!ts.control_socket().exists());
    drop(ro);
    drop(m);
    let m = ts.mount();
    assert_eq!(read_string(&m.path("f")), "unsynced");
    m.unmount();
}

#[test]
fn a_store_on_a_filesystem_without_sockets_mounts_and_serves_commands() {
    let ts = TestStore::on_lossy_disk(); // refuses to create sockets (EPERM)
    let bind = std::os::unix::net::UnixListener::bind(ts.store.join("probe.sock"));
    assert!(bind.is_err(), "the lossy disk holds no sockets");
    let m = ts.mount();
    let socket = ts.control_socket();
    assert!(socket.exists(), "{} missing", socket.display());
    assert!(socket.starts_with("/run/strata") || std::env::var_os("STRATA_RUNTIME_DIR").is_some());
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "owner only");
    // Found from the store and from the mount point, through the daemon.
    fs::write(m.path("f"), b"x").unwrap();
    ok(&["snapshot", "create", s(&ts.store), "a"]);
    ok(&["snapshot", "create", s(&ts.mnt), "b"]);
    assert_eq!(snapshot_names(s(&ts.mnt)), ["a", "b"]);
    assert!(ts
        .daemon_log_tail(50)
        .contains(&format!("listening on {}", socket.display())));
    m.unmount();
    assert!(!socket.exists(), "removed at the end");
}
