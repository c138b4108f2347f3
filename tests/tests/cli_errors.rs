//! Bad input to the `strata` command: each case must fail with one line
//! `strata: error: ...` that names the thing that was wrong, exit non-zero, and leave
//! everything as it was.

use std::ffi::OsStr;
use std::path::Path;

use strata_tests::binary::strata_env;
use strata_tests::mounts::{self, make_stale_fuse_mount, Tmpfs};
use strata_tests::{strata, sys, TestStore};

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

#[test]
fn init_rejects_invalid_block_sizes_and_levels() {
    let ts = TestStore::uninitialized();
    let store = s(&ts.store);
    for size in ["3K", "2K", "48K", "2M", "0", "abc", "4095", "1G"] {
        strata(["init", store, "--block-size", size]).assert_error(&[
            &format!("'{size}'"),
            "4K",
            "1M",
        ]);
        let run = strata(["init", store, "--block-size", size]);
        assert_eq!(run.code(), Some(2), "--block-size {size}");
    }
    for level in ["20", "-1", "x", "3.5", "100"] {
        let run = strata(["init", store, "--compression", level]);
        run.assert_error(&[&format!("'{level}'"), "19"]);
        assert_eq!(run.code(), Some(2), "--compression {level}");
    }
    assert!(
        !ts.store.exists(),
        "a rejected init must not create the store directory"
    );
}

#[test]
fn init_accepts_valid_block_sizes_and_levels() {
    let ts = TestStore::uninitialized();
    for (i, (size, level)) in [
        ("16K", "0"),
        ("32K", "3"),
        ("65536", "19"),
        ("1M", "1"),
        ("4K", "9"),
        ("64k", "3"),
    ]
    .iter()
    .enumerate()
    {
        let store = ts.root.join(format!("store-{i}"));
        strata([
            "init",
            s(&store),
            "--block-size",
            size,
            "--compression",
            level,
        ])
        .assert_success();
        assert!(
            store.join("strata.toml").is_file(),
            "no strata.toml after init --block-size {size}"
        );
    }
}

#[test]
fn init_never_clobbers() {
    let ts = TestStore::uninitialized();
    // A non-empty directory that is not a store.
    let dir = ts.root.join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("precious.txt"), b"keep me").unwrap();
    strata(["init", s(&dir)]).assert_error(&[s(&dir), "not empty"]);
    assert_eq!(std::fs::read(dir.join("precious.txt")).unwrap(), b"keep me");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "init added files to a non-empty dir"
    );
    // A regular file.
    let file = ts.root.join("file");
    std::fs::write(&file, b"x").unwrap();
    strata(["init", s(&file)]).assert_error(&[s(&file), "not a directory"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn init_refuses_an_existing_store() {
    let ts = TestStore::new();
    let config = std::fs::read(ts.store.join("strata.toml")).unwrap();
    strata(["init", s(&ts.store)]).assert_error(&[s(&ts.store), "already a strata store"]);
    strata(["init", s(&ts.store), "--block-size", "16K"]).assert_error(&["already a strata store"]);
    assert_eq!(
        std::fs::read(ts.store.join("strata.toml")).unwrap(),
        config,
        "strata.toml changed"
    );
}

#[test]
fn commands_name_a_path_that_is_not_a_store() {
    let ts = TestStore::uninitialized();
    let plain = ts.root.join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::write(plain.join("file"), b"data").unwrap();
    let missing = ts.root.join("missing");
    for store in [&plain, &missing] {
        strata(["mount", s(store), s(&ts.mnt)]).assert_error(&[s(store)]);
        strata(["verify", s(store)]).assert_error(&[s(store)]);
        strata(["stats", s(store)]).assert_error(&[s(store)]);
    }
    strata(["stats", s(&plain)]).assert_error(&["not a strata store"]);
    strata(["stats", s(&missing)]).assert_error(&["does not exist"]);
    assert!(!mounts::is_mounted(&ts.mnt));
    assert_eq!(std::fs::read(plain.join("file")).unwrap(), b"data");
    assert!(!missing.exists());
}

/// Sets every integer `...version = N` line of strata.toml to 999.
fn bump_format_version(store: &Path) {
    let path = store.join("strata.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut changed = false;
    let bumped: Vec<String> = text
        .lines()
        .map(|line| match line.split_once('=') {
            Some((key, value))
                if key.trim().contains("version") && value.trim().parse::<u64>().is_ok() =>
            {
                changed = true;
                format!("{} = 999", key.trim())
            }
            _ => line.to_string(),
        })
        .collect();
    assert!(
        changed,
        "no integer version field found in strata.toml:\n{text}"
    );
    std::fs::write(&path, bumped.join("\n") + "\n").unwrap();
}

#[test]
fn unknown_format_version_is_refused() {
    let ts = TestStore::new();
    bump_format_version(&ts.store);
    let before = std::fs::read(ts.store.join("strata.toml")).unwrap();
    strata(["verify", s(&ts.store)]).assert_error(&[s(&ts.store), "version", "999"]);
    strata(["stats", s(&ts.store)]).assert_error(&["version", "999"]);
    strata(["mount", s(&ts.store), s(&ts.mnt)]).assert_error(&["version", "999"]);
    assert!(
        !mounts::is_mounted(&ts.mnt),
        "a store of unknown version got mounted"
    );
    assert_eq!(
        std::fs::read(ts.store.join("strata.toml")).unwrap(),
        before,
        "strata.toml was rewritten"
    );
}

#[test]
fn mount_point_problems_are_named() {
    let ts = TestStore::new();
    let store = s(&ts.store);
    let missing = ts.root.join("no-such-dir");
    strata(["mount", store, s(&missing)]).assert_error(&[s(&missing), "does not exist"]);
    let file = ts.root.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    strata(["mount", store, s(&file)]).assert_error(&[s(&file), "not a directory"]);
    let inside = ts.store.join("meta");
    if inside.is_dir() {
        strata(["mount", store, s(&inside)]).assert_error(&["inside the store"]);
    }

    // Already a mount point (of something else).
    let _tmpfs = Tmpfs::mount(&ts.mnt, "1m");
    strata(["mount", store, s(&ts.mnt)]).assert_error(&[s(&ts.mnt), "already a mount point"]);
    assert_eq!(
        mounts::mount_at(&ts.mnt).unwrap().fs_type,
        "tmpfs",
        "the tmpfs was replaced"
    );
    assert!(!ts.lock_is_held());
}

#[test]
fn stale_mount_is_detected_and_cleared() {
    let ts = TestStore::new();
    make_stale_fuse_mount(&ts.mnt, &ts.store).expect("make a stale FUSE mount");
    let err = std::fs::metadata(&ts.mnt).unwrap_err();
    assert_eq!(
        sys::errno(&err),
        libc::ENOTCONN,
        "the synthetic mount is not stale: {err}"
    );

    let shown = s(&ts.mnt);
    strata(["mount", s(&ts.store), shown]).assert_error(&[
        &format!("{shown} is a stale mount (its daemon is gone)"),
        &format!("`strata umount {shown}`"),
    ]);
    strata(["umount", shown]).assert_success();
    assert!(
        !mounts::is_mounted(&ts.mnt),
        "strata umount left the stale mount"
    );
    assert!(std::fs::metadata(&ts.mnt).unwrap().is_dir());

    // And the mount point is usable again.
    ts.mount().unmount();
}

#[test]
fn umount_refuses_what_is_not_a_strata_mount() {
    let ts = TestStore::uninitialized();
    strata(["umount", s(&ts.mnt)]).assert_error(&[s(&ts.mnt), "not a mount point"]);
    let missing = ts.root.join("missing");
    strata(["umount", s(&missing)]).assert_error(&[s(&missing)]);
    let tmpfs = Tmpfs::mount(&ts.mnt, "1m");
    strata(["umount", s(&ts.mnt)]).assert_error(&[s(&ts.mnt), "not a strata mount", "tmpfs"]);
    assert!(
        mounts::is_mounted(tmpfs.path()),
        "strata umount removed a tmpfs"
    );
}

#[test]
fn store_in_use_by_another_process_is_refused() {
    let ts = TestStore::new();
    let _lock = sys::hold_flock(&ts.store.join("lock")).expect("take the store lock");
    // Exit 3: busy, distinct from other errors (as restic's locked repository).
    for command in ["stats", "verify"] {
        let run = strata([command, s(&ts.store)]);
        run.assert_error(&[s(&ts.store), "in use"]);
        assert_eq!(run.code(), Some(3), "strata {command} on a locked store");
    }
    // The daemon finds the lock taken and tells `strata mount`, which prints it.
    strata(["mount", s(&ts.store), s(&ts.mnt)]).assert_error(&[s(&ts.store), "in use"]);
    assert!(!mounts::is_mounted(&ts.mnt), "a locked store got mounted");
}

#[test]
fn mounted_store_is_named_with_its_mount_point() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let mnt = s(&ts.mnt);
    // stats and verify work mounted, through the daemon.
    strata(["stats", s(&ts.store)]).assert_success();
    let scrub = strata(["verify", s(&ts.store)]);
    scrub.assert_success();
    assert!(scrub.stdout.contains("clean"), "{}", scrub.stdout);

    // The same store a second time elsewhere.
    let second = ts.root.join("mnt2");
    std::fs::create_dir(&second).unwrap();
    strata(["mount", s(&ts.store), s(&second)]).assert_error(&[&format!("mounted at {mnt}")]);
    assert!(!mounts::is_mounted(&second));

    // Another store over the live mount.
    let other = TestStore::new();
    strata(["mount", s(&other.store), mnt]).assert_error(&[mnt, "already a mount point"]);
    mount.unmount();
}

#[test]
fn default_store_is_created_and_used() {
    let ts = TestStore::uninitialized();
    let default = ts.root.join("default-store");
    let env: [(&str, &OsStr); 1] = [("STRATA_DEFAULT_STORE", default.as_os_str())];
    strata_env(["mount".as_ref(), ts.mnt.as_os_str()], &env).assert_success();
    let entry = mounts::mount_at(&ts.mnt);
    let umount = strata(["umount", s(&ts.mnt)]);
    let entry = entry.expect("strata mount MOUNTPOINT did not mount");
    assert!(entry.is_strata_fuse(), "mount type {}", entry.fs_type);
    assert_eq!(Path::new(&entry.source), default);
    umount.assert_success();
    assert!(
        default.join("strata.toml").is_file(),
        "the default store was not created"
    );
    // A second mount reuses it.
    strata_env(["mount".as_ref(), ts.mnt.as_os_str()], &env).assert_success();
    strata(["umount", s(&ts.mnt)]).assert_success();
}
