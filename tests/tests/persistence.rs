//! A tree of files, directories, symlinks, hard links, a fifo, xattrs, permissions,
//! ownership and timestamps survives unmount and remount exactly; so do later changes to
//! it. Also the mount's lifecycle: SIGTERM/SIGINT to a `--foreground` mount unmount it
//! cleanly, and a daemon whose mount is removed with plain `umount` exits and flushes.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_tests::data::{
    assert_same_bytes, checksum, compressible_bytes, mixed_chunk, random_bytes, write_synced,
};
use strata_tests::{mounts, strata_bin, sys, TestStore};

/// What is compared about each entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    target: Option<PathBuf>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_dir() {
        "dir"
    } else if file_type.is_file() {
        "file"
    } else if meta.mode() & libc::S_IFMT == libc::S_IFIFO {
        "fifo"
    } else {
        "other"
    }
}

/// Metadata of every entry below `root` (not its contents, so no atime is disturbed).
fn metadata_tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = kind_of(&meta);
            let xattrs = if kind == "symlink" {
                Vec::new()
            } else {
                sys::list_xattrs(&path)
                    .unwrap()
                    .into_iter()
                    .filter(|name| name.starts_with("user."))
                    .map(|name| {
                        let value = sys::get_xattr(&path, &name).unwrap();
                        (name, value)
                    })
                    .collect()
            };
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            tree.insert(
                relative,
                Entry {
                    kind,
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size: if kind == "dir" { 0 } else { meta.size() },
                    nlink: meta.nlink(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    ctime: (meta.ctime(), meta.ctime_nsec()),
                    target: (kind == "symlink").then(|| fs::read_link(&path).unwrap()),
                    xattrs,
                },
            );
            if kind == "dir" {
                pending.push(path);
            }
        }
    }
    tree
}

/// Checksums of every regular file below `root`.
fn contents_tree(root: &Path, metadata: &BTreeMap<String, Entry>) -> BTreeMap<String, String> {
    metadata
        .iter()
        .filter(|(_, e)| e.kind == "file")
        .map(|(name, _)| (name.clone(), checksum(&fs::read(root.join(name)).unwrap())))
        .collect()
}

#[track_caller]
fn assert_same_trees(before: &BTreeMap<String, Entry>, after: &BTreeMap<String, Entry>) {
    let names_before: Vec<_> = before.keys().collect();
    let names_after: Vec<_> = after.keys().collect();
    assert_eq!(
        names_before, names_after,
        "the set of entries changed across remount"
    );
    for (name, entry) in before {
        assert_eq!(
            Some(entry),
            after.get(name),
            "{name} changed across remount"
        );
    }
}

const ATIME: (i64, i64) = (1_000_000_000, 123_456_789);
const MTIME: (i64, i64) = (1_500_000_000, 987_654_321);

/// Builds the tree; returns the expected contents of the regular files.
fn build_tree(root: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    let mut files: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    for dir in ["a", "a/b", "a/b/c", "empty", "sticky", "setgid"] {
        fs::create_dir(root.join(dir)).unwrap();
    }
    let mut big = Vec::new();
    for i in 0..3 {
        big.extend(mixed_chunk(7, i, 1 << 20));
    }
    big.extend_from_slice(b"tail of 17 bytes!");
    files.insert("empty.txt", Vec::new());
    files.insert("small.txt", b"hello, strata\n".to_vec());
    files.insert(
        "atime-probe.txt",
        b"never read before the remount\n".to_vec(),
    );
    files.insert("a/page.bin", random_bytes(1, 4096));
    files.insert("a/b/odd.bin", random_bytes(2, 100_003));
    files.insert("a/b/c/big.bin", big);
    files.insert("a/log.txt", compressible_bytes(3, 300_000));
    files.insert("naïve file ☃ with spaces.txt", b"unicode name\n".to_vec());
    for (name, data) in &files {
        write_synced(&root.join(name), data).unwrap();
    }
    // A sparse file: 4 KiB of data at 10 MiB, nothing before.
    let sparse = File::create(root.join("a/sparse.bin")).unwrap();
    let tail = random_bytes(4, 4096);
    sparse.write_all_at(&tail, 10 << 20).unwrap();
    sparse.sync_all().unwrap();
    let mut sparse_expected = vec![0u8; 10 << 20];
    sparse_expected.extend_from_slice(&tail);
    files.insert("a/sparse.bin", sparse_expected);

    symlink("a/b/odd.bin", root.join("link-rel")).unwrap();
    symlink("/etc/hostname", root.join("link-abs")).unwrap();
    symlink("nowhere/at/all", root.join("dangling")).unwrap();
    symlink("a", root.join("dirlink")).unwrap();
    fs::hard_link(root.join("a/page.bin"), root.join("hard.bin")).unwrap();
    files.insert("hard.bin", files["a/page.bin"].clone());
    sys::mkfifo(&root.join("fifo"), 0o600).unwrap();

    sys::set_xattr(&root.join("small.txt"), "user.one", b"1").unwrap();
    sys::set_xattr(
        &root.join("small.txt"),
        "user.binary",
        &[0, 255, 10, 13, 0, 7],
    )
    .unwrap();
    sys::set_xattr(&root.join("small.txt"), "user.empty", b"").unwrap();
    sys::set_xattr(
        &root.join("small.txt"),
        "user.large",
        &random_bytes(5, 3000),
    )
    .unwrap();
    sys::set_xattr(&root.join("small.txt"), "user.removed", b"gone").unwrap();
    sys::remove_xattr(&root.join("small.txt"), "user.removed").unwrap();
    sys::set_xattr(&root.join("a"), "user.dir", b"yes").unwrap();

    std::os::unix::fs::chown(root.join("small.txt"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(root.join("link-rel"), Some(42), Some(43)).unwrap();
    std::os::unix::fs::chown(root.join("a/b"), Some(1000), Some(1000)).unwrap();
    for (path, mode) in [
        ("small.txt", 0o640),
        ("a/page.bin", 0o755),
        ("a/b/odd.bin", 0o4755),
        ("a/log.txt", 0o444),
        ("empty.txt", 0o000),
        ("a/b/c", 0o700),
        ("sticky", 0o1777),
        ("setgid", 0o2775),
    ] {
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(mode)).unwrap();
    }
    // Times last, deepest first, so nothing touches them afterwards.
    let mut timed: Vec<&str> = files.keys().copied().collect();
    timed.extend(["a/b/c", "a/b", "a", "empty", "sticky", "setgid"]);
    for (i, name) in timed.iter().enumerate() {
        let offset = i as i64;
        sys::set_times(
            &root.join(name),
            (ATIME.0 + offset, ATIME.1),
            (MTIME.0 + offset, MTIME.1),
            true,
        )
        .unwrap();
    }
    sys::set_times(&root.join("atime-probe.txt"), ATIME, MTIME, true).unwrap();
    files
}

/// Checks the values the tree was built with (not only that they did not change).
fn check_expected_metadata(root: &Path, tree: &BTreeMap<String, Entry>) {
    let get = |name: &str| tree.get(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(get("small.txt").mode & 0o7777, 0o640);
    assert_eq!((get("small.txt").uid, get("small.txt").gid), (1234, 5678));
    assert_eq!(get("a/b/odd.bin").mode & 0o7777, 0o4755);
    assert_eq!(get("empty.txt").mode & 0o7777, 0o000);
    assert_eq!(get("sticky").mode & 0o7777, 0o1777);
    assert_eq!(get("setgid").mode & 0o7777, 0o2775);
    assert_eq!(get("a/b/c").mode & 0o7777, 0o700);
    assert_eq!((get("a/b").uid, get("a/b").gid), (1000, 1000));
    assert_eq!((get("link-rel").uid, get("link-rel").gid), (42, 43));
    assert_eq!(
        get("link-rel").target.as_deref(),
        Some(Path::new("a/b/odd.bin"))
    );
    assert_eq!(
        get("link-abs").target.as_deref(),
        Some(Path::new("/etc/hostname"))
    );
    assert_eq!(
        get("dangling").target.as_deref(),
        Some(Path::new("nowhere/at/all"))
    );
    assert_eq!(get("dirlink").kind, "symlink");
    assert_eq!(get("fifo").kind, "fifo");
    assert_eq!(get("fifo").mode & 0o7777, 0o600);
    assert_eq!(get("hard.bin").nlink, 2);
    assert_eq!(get("a/page.bin").nlink, 2);
    let ino = |name: &str| fs::symlink_metadata(root.join(name)).unwrap().ino();
    assert_eq!(
        ino("hard.bin"),
        ino("a/page.bin"),
        "hard links must share an inode"
    );
    assert_eq!(get("small.txt").mtime.1, MTIME.1, "nanoseconds of mtime");
    assert!(get("a/sparse.bin").size == (10 << 20) + 4096);
    let xattrs: Vec<&str> = get("small.txt")
        .xattrs
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        xattrs,
        ["user.binary", "user.empty", "user.large", "user.one"]
    );
    assert_eq!(get("small.txt").xattrs[0].1, [0, 255, 10, 13, 0, 7]);
    assert_eq!(get("a").xattrs, [("user.dir".to_string(), b"yes".to_vec())]);
    assert_eq!(
        sys::errno(&sys::get_xattr(&root.join("small.txt"), "user.removed").unwrap_err()),
        libc::ENODATA
    );
}

#[test]
fn tree_persists_across_remount() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let expected = build_tree(&ts.mnt);
    let before = metadata_tree(&ts.mnt);
    check_expected_metadata(&ts.mnt, &before);
    for (name, data) in &expected {
        assert_same_bytes(&fs::read(ts.path(name)).unwrap(), data, name);
    }
    let contents_before = contents_tree(&ts.mnt, &before);
    mount.unmount();

    let mount = ts.mount();
    let probe = fs::metadata(ts.path("atime-probe.txt")).unwrap();
    assert_eq!(
        (probe.atime(), probe.atime_nsec()),
        ATIME,
        "atime not kept across remount"
    );
    let after = metadata_tree(&ts.mnt);
    assert_same_trees(&before, &after);
    check_expected_metadata(&ts.mnt, &after);
    assert_eq!(contents_before, contents_tree(&ts.mnt, &after));
    for (name, data) in &expected {
        assert_same_bytes(&fs::read(ts.path(name)).unwrap(), data, name);
    }
    let sparse = fs::metadata(ts.path("a/sparse.bin")).unwrap();
    assert!(
        sparse.blocks() * 512 < (1 << 20),
        "the 10 MiB hole of a/sparse.bin takes {} blocks",
        sparse.blocks()
    );
    assert_same_bytes(
        &fs::read(ts.path("link-rel")).unwrap(),
        &expected["a/b/odd.bin"],
        "through link-rel",
    );
    assert_eq!(
        fs::read(ts.path("dirlink/page.bin")).unwrap(),
        expected["a/page.bin"]
    );

    // Change things and check that the changes persist too.
    let big = ts.path("a/b/c/big.bin");
    let file = OpenOptions::new().write(true).open(&big).unwrap();
    file.write_all_at(b"0123456789", (1 << 20) + 5).unwrap();
    file.set_len((2 << 20) + 100).unwrap();
    file.sync_all().unwrap();
    drop(file);
    let mut big_expected = expected["a/b/c/big.bin"].clone();
    big_expected[(1 << 20) + 5..(1 << 20) + 15].copy_from_slice(b"0123456789");
    big_expected.truncate((2 << 20) + 100);
    OpenOptions::new()
        .write(true)
        .open(ts.path("small.txt"))
        .unwrap()
        .set_len(3)
        .unwrap();
    File::options()
        .write(true)
        .open(ts.path("a/b/odd.bin"))
        .unwrap()
        .set_len(200_000)
        .unwrap();
    fs::rename(ts.path("a/log.txt"), ts.path("empty/log.txt")).unwrap();
    fs::remove_file(ts.path("a/page.bin")).unwrap();
    fs::remove_dir_all(ts.path("setgid")).unwrap();
    fs::set_permissions(ts.path("a/b/c"), fs::Permissions::from_mode(0o750)).unwrap();
    sys::remove_xattr(&ts.path("small.txt"), "user.large").unwrap();
    sys::set_xattr(&ts.path("small.txt"), "user.one", b"one, replaced").unwrap();
    fs::create_dir(ts.path("a/b/c/new-dir")).unwrap();
    write_synced(&ts.path("a/b/c/new-dir/new.txt"), b"new\n").unwrap();
    let changed = metadata_tree(&ts.mnt);
    assert_eq!(changed["hard.bin"].nlink, 1);
    assert_eq!(changed["small.txt"].size, 3);
    let contents_changed = contents_tree(&ts.mnt, &changed);
    mount.unmount();

    let mount = ts.mount();
    let after = metadata_tree(&ts.mnt);
    assert_same_trees(&changed, &after);
    assert_eq!(contents_changed, contents_tree(&ts.mnt, &after));
    assert_same_bytes(
        &fs::read(&big).unwrap(),
        &big_expected,
        "big.bin after changes",
    );
    let mut odd = expected["a/b/odd.bin"].clone();
    odd.resize(200_000, 0);
    assert_same_bytes(
        &fs::read(ts.path("a/b/odd.bin")).unwrap(),
        &odd,
        "odd.bin extended",
    );
    assert_eq!(fs::read(ts.path("small.txt")).unwrap(), b"hel");
    assert_eq!(
        sys::get_xattr(&ts.path("small.txt"), "user.one").unwrap(),
        b"one, replaced"
    );
    mount.unmount();
    ts.assert_verify_clean();
}

/// Waits until `path` is a strata mount point or `child` exits.
fn wait_mounted(path: &Path, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mounts::mount_at(path).is_some_and(|m| m.is_strata_fuse()) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("strata mount --foreground exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "no mount at {} after 60 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit; kills it and panics after `timeout`.
fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn foreground_mount_unmounts_cleanly_on_sigterm_and_sigint() {
    let ts = TestStore::new();
    for (round, signal) in [(0u64, libc::SIGTERM), (1, libc::SIGINT)] {
        let mut child = Command::new(strata_bin())
            .args(["mount", "--foreground"])
            .arg(&ts.store)
            .arg(&ts.mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_mounted(&ts.mnt, &mut child);
        // Written without fsync: the clean shutdown must flush it.
        let data = random_bytes(100 + round, 2 << 20);
        fs::write(ts.path(format!("unsynced-{round}.bin")), &data).unwrap();
        sys::kill(child.id(), signal).unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(120));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(
            status.success(),
            "strata mount --foreground after signal {signal}: {status}\n{stderr}"
        );
        assert!(
            !mounts::is_mounted(&ts.mnt),
            "still mounted after signal {signal}"
        );
        assert!(
            !ts.lock_is_held(),
            "store still locked after the foreground mount exited"
        );
    }
    let mount = ts.mount();
    for round in 0..2u64 {
        let data = random_bytes(100 + round, 2 << 20);
        assert_same_bytes(
            &fs::read(ts.path(format!("unsynced-{round}.bin"))).unwrap(),
            &data,
            "unsynced data",
        );
    }
    mount.unmount();
    ts.assert_verify_clean();
}

#[test]
fn daemon_exits_and_flushes_when_unmounted_by_umount() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let pid = ts.daemon_pid().expect("daemon pid");
    let data = random_bytes(9, 3 << 20);
    fs::write(ts.path("unsynced.bin"), &data).unwrap();
    let status = Command::new("umount").arg(&ts.mnt).status().unwrap();
    assert!(status.success(), "umount {}: {status}", ts.mnt.display());
    let deadline = Instant::now() + Duration::from_secs(60);
    while sys::process_alive(pid) || ts.lock_is_held() {
        assert!(
            Instant::now() < deadline,
            "daemon {pid} still running 60 s after its mount was removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(mount); // nothing left to unmount
    let mount = ts.mount();
    assert_same_bytes(
        &fs::read(ts.path("unsynced.bin")).unwrap(),
        &data,
        "data written before umount",
    );
    mount.unmount();
    ts.assert_verify_clean();
}
