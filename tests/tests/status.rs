//! `strata status`: a store without a daemon, a mounted one (mounts, open files, the
//! automatic snapshot schedule, unsealed bytes, the last commit and verify), the same in
//! `--json` and `-p`, and a store whose last verify found a damaged pack: exit 1 naming
//! the problem.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;

use strata_tests::cli::{json, s};
use strata_tests::data::random_bytes;
use strata_tests::{strata, TestStore};

#[test]
fn status_tells_what_the_daemon_does_and_whether_the_store_is_healthy() {
    let ts = TestStore::new();
    let (store, mnt) = (s(&ts.store), s(&ts.mnt));

    let out = strata(["status", store]);
    out.assert_success();
    for line in [
        "health:     ok",
        "daemon:     none (not mounted)",
        "verify:     never",
    ] {
        assert!(
            out.stdout.contains(line),
            "{line:?} not in:\n{}",
            out.stdout
        );
    }

    strata([
        "mount",
        "--snapshot-every",
        "1h",
        "--keep",
        "last=3",
        store,
        mnt,
    ])
    .assert_success();
    let mut open = File::create(ts.mnt.join("open.bin")).unwrap();
    open.write_all(&random_bytes(1, 1 << 20)).unwrap();
    open.sync_all().unwrap();
    let doc = json(&["status", mnt, "--json"]);
    assert_eq!(doc["healthy"], true, "{doc}");
    let daemon = &doc["daemon"];
    let pid = daemon["pid"].as_u64().unwrap();
    assert_eq!(Some(pid as u32), ts.daemon_pid(), "{doc}");
    let mount = &daemon["mounts"][0];
    assert_eq!(mount["mount_point"], mnt);
    assert_eq!(mount["branch"], "main");
    assert_eq!(mount["read_only"], false);
    assert_eq!(mount["open_files"], 1, "{doc}");
    let cache = &daemon["block_cache"];
    assert_eq!(cache["capacity_bytes"], 32 << 20, "{doc}");
    assert!(cache["bytes"].as_u64().unwrap() <= 32 << 20, "{doc}");
    let schedule = &daemon["schedules"][0];
    assert_eq!(schedule["every_secs"], 3600, "{doc}");
    assert_eq!(schedule["keep"], "last=3");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let next = schedule["next"].as_i64().unwrap();
    assert!(
        next > now && next <= now + 3600 && next % 3600 == 0,
        "{doc}"
    );
    assert!(daemon["since"].as_i64().unwrap() <= now);
    // The parsable text says the same as the JSON.
    let text = strata(["status", mnt, "-p"]);
    text.assert_success();
    assert!(
        text.stdout
            .contains(&format!("daemon:     pid {pid}, since {}", daemon["since"])),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!("next {next}")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("cache:      ") && l.contains(&format!(" of {} (", 32 << 20))),
        "{}",
        text.stdout
    );
    drop(open);

    // A verify of the mounted store is recorded.
    strata(["verify", mnt]).assert_success();
    let doc = json(&["status", store, "--json"]);
    assert_eq!(doc["last_verify"]["problems"], 0, "{doc}");
    assert!(doc["last_verify"]["blocks_checked"].as_u64().unwrap() > 0);
    strata(["umount", mnt]).assert_success();

    // Damage a pack: verify finds it, and status says the store is not healthy.
    let pack = fs::read_dir(ts.store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a pack");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 1], at).unwrap();
    drop(f);
    assert_eq!(strata(["verify", store]).code(), Some(1));
    let out = strata(["status", store]);
    assert_eq!(out.code(), Some(1), "{}", out.output());
    assert!(
        out.stdout.contains("health:     PROBLEMS") && out.stdout.contains("problem(s)"),
        "{}",
        out.stdout
    );
    let doc: serde_json::Value =
        serde_json::from_str(&strata(["status", store, "--json"]).stdout).unwrap();
    assert_eq!(doc["healthy"], false);
    assert!(
        doc["last_verify"]["problems"].as_u64().unwrap() >= 1,
        "{doc}"
    );
    assert!(!doc["last_verify"]["first_problems"][0]
        .as_str()
        .unwrap()
        .is_empty());
}
