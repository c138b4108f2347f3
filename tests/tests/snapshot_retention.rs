//! Holds, pruning and automatic snapshots, end to end: `snapshot hold|release|prune`
//! unmounted and mounted, and a daemon taking automatic snapshots on a schedule, pruning
//! them by its keep rules, then flattening and collecting what it pruned. (The retention
//! rules themselves are tested over a simulated clock in the snapshot crate.)

use strata_tests::cli::snapshots;
use strata_tests::{strata, TestStore};

fn list(store: &str) -> Vec<(String, bool)> {
    snapshots(store)
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["held"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn hold_release_and_prune() {
    let ts = TestStore::new();
    let store = ts.store.to_str().unwrap();
    for name in ["a", "b", "c"] {
        strata(["snapshot", "create", store, name]).assert_success();
    }
    let held = strata(["snapshot", "hold", store, "a"]);
    held.assert_success();
    assert!(held.stdout.contains("held snapshot a"), "{}", held.stdout);
    strata(["snapshot", "delete", store, "a"]).assert_error(&["snapshot \"a\" is held"]);
    // Manual snapshots are left alone unless --all.
    let dry = strata(["snapshot", "prune", store, "--keep", "last=1"]);
    dry.assert_success();
    assert!(dry.stdout.contains("0 of 0 snapshots"), "{}", dry.stdout);
    let mount = ts.mount();
    let mnt = ts.mnt.to_str().unwrap();
    let dry = strata([
        "snapshot",
        "prune",
        mnt,
        "--keep",
        "last=1",
        "--all",
        "--dry-run",
    ]);
    dry.assert_success();
    assert!(dry.stdout.contains("would remove b"), "{}", dry.stdout);
    assert!(dry.stdout.contains("keep    a  (held)"), "{}", dry.stdout);
    assert_eq!(list(store).len(), 3, "a dry run removed something");
    strata(["snapshot", "prune", mnt, "--keep", "last=1", "--all"]).assert_success();
    assert_eq!(
        list(store),
        [("a".to_string(), true), ("c".to_string(), false)]
    );
    // The removed snapshot is gone from .snapshots too.
    assert!(!mount.path(".snapshots/b").exists());
    strata(["snapshot", "release", mnt, "a"]).assert_success();
    mount.unmount();
    strata(["snapshot", "prune", store, "--keep", "last=1", "--all"]).assert_success();
    assert_eq!(list(store), [("c".to_string(), false)]);
    strata(["snapshot", "prune", store, "--keep", "fortnightly=2"])
        .assert_error(&["unknown keep rule"]);
    ts.assert_verify_clean();
}

#[test]
fn the_daemon_takes_and_prunes_automatic_snapshots() {
    let ts = TestStore::new();
    let store = ts.store.to_str().unwrap();
    let mnt = ts.mnt.to_str().unwrap();
    strata([
        "mount",
        "--snapshot-every",
        "1s",
        "--keep",
        "last=2",
        store,
        mnt,
    ])
    .assert_success();
    std::fs::write(ts.path("f"), b"data").unwrap();
    strata(["snapshot", "create", mnt, "manual"]).assert_success();
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // After a prune removed snapshots, the daemon flattens them away and runs gc.
    let log_path = ts.store.join("daemon.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("gc after pruning") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for line in [
        "pruned automatic snapshot",
        "flattened:",
        "gc after pruning",
    ] {
        assert!(log.contains(line), "{line:?} not in the daemon log:\n{log}");
    }
    strata(["umount", mnt]).assert_success();
    let names: Vec<String> = list(store).into_iter().map(|(n, _)| n).collect();
    let auto: Vec<&String> = names.iter().filter(|n| n.starts_with("auto-")).collect();
    assert_eq!(
        auto.len(),
        2,
        "keep last=2 of the automatic snapshots: {names:?}"
    );
    assert!(names.contains(&"manual".to_string()), "{names:?}");
    let mut sorted = auto.clone();
    sorted.sort();
    assert_eq!(auto, sorted, "automatic names sort by time");
    strata(["mount", "--keep", "daily=1", store, mnt]).assert_error(&["--snapshot-every"]);
    ts.assert_verify_clean();
}
