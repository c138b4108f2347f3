//! Settings of a mount read from STORE/strata.toml: `threads` (FUSE worker threads when
//! `mount --threads` is not given; the flag wins) and `block_cache_mib` (0: no block
//! cache; the data reads the same either way).

use std::fs;

use strata_tests::cli::s;
use strata_tests::data::random_bytes;
use strata_tests::{strata, TestStore};

/// The `--threads` value the daemon of `ts` was started with.
fn daemon_threads(ts: &TestStore) -> String {
    let pid = ts.daemon_pid().expect("a daemon serves the mount");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "--threads")
        .unwrap_or_else(|| panic!("no --threads in {args:?}"));
    args[at + 1].clone()
}

fn set(ts: &TestStore, line: &str) {
    let path = ts.store.join("strata.toml");
    let text = fs::read_to_string(&path).unwrap();
    let key = line.split(" =").next().unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with(key)).collect();
    fs::write(&path, kept.join("\n") + "\n" + line + "\n").unwrap();
}

#[test]
fn threads_and_the_block_cache_come_from_strata_toml() {
    let ts = TestStore::new();
    let (store, mnt) = (s(&ts.store), s(&ts.mnt));
    set(&ts, "threads = 3");
    set(&ts, "block_cache_mib = 0");
    strata(["mount", store, mnt]).assert_success();
    assert_eq!(daemon_threads(&ts), "3");
    let data = random_bytes(7, 3 << 20);
    fs::write(ts.mnt.join("f"), &data).unwrap();
    strata(["umount", mnt]).assert_success();

    // The flag wins over the file; the default cache reads the same bytes.
    set(&ts, "block_cache_mib = 32");
    strata(["mount", "--threads", "1", store, mnt]).assert_success();
    assert_eq!(daemon_threads(&ts), "1");
    assert_eq!(fs::read(ts.mnt.join("f")).unwrap(), data);
    strata(["umount", mnt]).assert_success();

    // A bad value is refused, naming the key.
    set(&ts, "threads = \"many\"");
    let run = strata(["mount", store, mnt]);
    assert!(!run.success(), "{}", run.output());
    assert!(run.stderr.contains("threads"), "{}", run.stderr);
    set(&ts, "threads = 0");
    let run = strata(["mount", store, mnt]);
    assert!(!run.success(), "{}", run.output());
    assert!(run.stderr.contains("threads = 0"), "{}", run.stderr);
}
