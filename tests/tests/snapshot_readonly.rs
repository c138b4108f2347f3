//! Snapshot views are read-only, end to end: in `MOUNT/.snapshots/NAME/` and in a separate
//! `strata mount --snapshot NAME` mount, every call that pjdfstest's EROFS checks make
//! (chmod, chown, link, mkdir, mkfifo, mknod, open for writing/creating/truncating,
//! rename, rmdir, symlink, truncate, unlink, utimensat) and setxattr/removexattr fails
//! with EROFS and changes nothing; reading works and inode numbers are stable.
//!
//! A snapshot deleted while a file in it is open: the open file reads on exactly what
//! the snapshot held (flattening leaves its generation alone until the file is closed,
//! then the daemon removes it); nothing new opens in it.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use strata_tests::cli::{json, UnmountOnDrop};
use strata_tests::data::random_bytes;
use strata_tests::sys::{self, errno};
use strata_tests::{strata, TestStore};

/// Every mutating call on `dir` (holding file `f`, directory `d`, symlink `l`) fails with
/// EROFS; returns the list of calls that did not.
fn mutations_fail_with_erofs(dir: &Path) -> Vec<String> {
    let f = dir.join("f");
    let d = dir.join("d");
    let new = dir.join("new");
    let mut wrong = Vec::new();
    let mut check = |what: &str, r: std::io::Result<()>| match r {
        Err(e) if errno(&e) == libc::EROFS => {}
        other => wrong.push(format!("{what}: {other:?}")),
    };
    let c = |p: &Path| sys::cpath(p);
    let rc = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    check(
        "chmod",
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)),
    );
    check("chown", rc(unsafe { libc::chown(c(&f).as_ptr(), 1, 1) }));
    check(
        "lchown",
        rc(unsafe { libc::lchown(c(&dir.join("l")).as_ptr(), 1, 1) }),
    );
    check("link", std::fs::hard_link(&f, &new));
    check("mkdir", std::fs::create_dir(&new));
    check("mkfifo", sys::mkfifo(&new, 0o644));
    check(
        "mknod",
        rc(unsafe { libc::mknod(c(&new).as_ptr(), libc::S_IFREG | 0o644, 0) }),
    );
    check(
        "open O_CREAT",
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&new)
            .map(drop),
    );
    check(
        "open O_WRONLY",
        OpenOptions::new().write(true).open(&f).map(drop),
    );
    check(
        "open O_RDWR|O_TRUNC",
        OpenOptions::new()
            .read(true)
            .write(true)
            .truncate(true)
            .open(&f)
            .map(drop),
    );
    check("rename", std::fs::rename(&f, &new));
    check("rmdir", std::fs::remove_dir(&d));
    check("symlink", std::os::unix::fs::symlink("f", &new));
    check("truncate", rc(unsafe { libc::truncate(c(&f).as_ptr(), 0) }));
    check("unlink", std::fs::remove_file(&f));
    check(
        "utimensat",
        rc(unsafe { libc::utimensat(libc::AT_FDCWD, c(&f).as_ptr(), std::ptr::null(), 0) }),
    );
    check("setxattr", sys::set_xattr(&f, "user.x", b"1"));
    check("removexattr", sys::remove_xattr(&f, "user.kept"));
    wrong
}

fn assert_snapshot_content(dir: &Path) {
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"snapshot content");
    assert_eq!(std::fs::read_link(dir.join("l")).unwrap(), Path::new("f"));
    assert!(dir.join("d").is_dir());
    assert_eq!(sys::get_xattr(&dir.join("f"), "user.kept").unwrap(), b"v");
}

#[test]
fn snapshot_views_refuse_every_change_with_erofs() {
    let ts = TestStore::new();
    let mount = ts.mount();
    std::fs::write(mount.path("f"), b"snapshot content").unwrap();
    std::fs::create_dir(mount.path("d")).unwrap();
    std::os::unix::fs::symlink("f", mount.path("l")).unwrap();
    sys::set_xattr(&mount.path("f"), "user.kept", b"v").unwrap();
    strata(["snapshot", "create", ts.mnt.to_str().unwrap(), "ro"]).assert_success();
    std::fs::write(mount.path("f"), b"live content, changed").unwrap();

    // Inside the live mount: hidden from ls, reachable by path.
    let names: Vec<String> = std::fs::read_dir(mount.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.contains(&".snapshots".to_string()), "{names:?}");
    let listed: Vec<String> = std::fs::read_dir(mount.path(".snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, ["ro"]);
    let view = mount.path(".snapshots/ro");
    assert_snapshot_content(&view);
    let wrong = mutations_fail_with_erofs(&view);
    assert!(wrong.is_empty(), "in .snapshots/ro: {wrong:#?}");
    let live_ino = std::fs::metadata(mount.path("f")).unwrap().ino();
    let snap_ino = std::fs::metadata(view.join("f")).unwrap().ino();
    assert_ne!(
        live_ino, snap_ino,
        "snapshot and live inode numbers collide"
    );

    // A separate read-only mount of the snapshot.
    let ro_mnt = ts.store.parent().unwrap().join("ro-mnt");
    std::fs::create_dir_all(&ro_mnt).unwrap();
    let _guard = UnmountOnDrop(ro_mnt.clone());
    strata([
        "mount",
        "--snapshot",
        "ro",
        ts.store.to_str().unwrap(),
        ro_mnt.to_str().unwrap(),
    ])
    .assert_success();
    assert_snapshot_content(&ro_mnt);
    let wrong = mutations_fail_with_erofs(&ro_mnt);
    assert!(wrong.is_empty(), "in the --snapshot mount: {wrong:#?}");
    strata(["umount", ro_mnt.to_str().unwrap()]).assert_success();

    // Nothing changed, and the numbers survive a remount.
    mount.unmount();
    let mount = ts.mount();
    assert_snapshot_content(&mount.path(".snapshots/ro"));
    assert_eq!(
        std::fs::metadata(mount.path(".snapshots/ro/f"))
            .unwrap()
            .ino(),
        snap_ino
    );
    assert_eq!(
        std::fs::read(mount.path("f")).unwrap(),
        b"live content, changed"
    );
    mount.unmount();
    ts.assert_verify_clean();
}

#[test]
fn a_deleted_snapshot_reads_on_through_open_files_until_they_close() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let store = ts.store.to_str().unwrap();
    let data = |seed: u64| random_bytes(seed, 256 << 10);
    for (seed, name) in [(1, "s1"), (2, "s2")] {
        std::fs::write(mount.path("f"), data(seed)).unwrap();
        strata(["snapshot", "create", ts.mnt.to_str().unwrap(), name]).assert_success();
    }
    // The live file is rewritten whole: folding s2 away would drop every block it read.
    std::fs::write(mount.path("f"), data(3)).unwrap();
    let mut open = std::fs::File::open(mount.path(".snapshots/s2/f")).unwrap();
    let mut head = vec![0u8; 4096];
    open.read_exact(&mut head).unwrap();
    // Deleting says that the space waits for the open file, the dry run already.
    let waits = "1 file of the snapshot is open: it stays readable through it";
    let dry = strata(["snapshot", "delete", store, "s2", "--dry-run"]);
    assert!(
        dry.assert_success().stdout.contains(waits),
        "{}",
        dry.stdout
    );
    let done = strata(["snapshot", "delete", store, "s2"]);
    assert!(
        done.assert_success().stdout.contains(waits),
        "{}",
        done.stdout
    );
    assert!(std::fs::File::open(mount.path(".snapshots/s2/f")).is_err());
    // A flatten run (through the daemon) leaves the open snapshot's generation alone.
    let r = json(&["flatten", store, "--json"]);
    assert_eq!(r["generations_removed"], 0, "{r}");
    // Nor does gc free its blocks, which no other tree reads.
    strata(["gc", store]).assert_success();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).unwrap();
    head.extend(rest);
    assert!(
        head == data(2),
        "the open file of the deleted snapshot read other bytes"
    );
    // Closed: the daemon flattens the generation away by itself.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ts
        .daemon_log_tail(50)
        .contains("flattened: 1 deleted generations removed")
    {
        assert!(
            Instant::now() < deadline,
            "the daemon did not flatten the closed snapshot:\n{}",
            ts.daemon_log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::fs::read(mount.path(".snapshots/s1/f")).unwrap() == data(1));
    assert!(std::fs::read(mount.path("f")).unwrap() == data(3));
    ts.assert_verify_clean();
}
