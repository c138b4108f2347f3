//! The power-cut harness itself: what a cut keeps and drops, as docs/power-cut-harness.md
//! says. Each test writes through a lossy disk, cuts the power (or fires a named point),
//! reboots, and looks at what the directory underneath holds.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use strata_tests::lossy::{Action, CutMode, LossyDisk, Op, Point};

struct Disk {
    _dir: tempfile::TempDir,
    disk: LossyDisk,
}

impl Disk {
    fn new() -> Disk {
        let dir = tempfile::Builder::new()
            .prefix("strata-lossy-")
            .tempdir()
            .unwrap();
        let backing = dir.path().join("disk");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&backing).unwrap();
        fs::create_dir(&mnt).unwrap();
        let disk = LossyDisk::mount(&backing, &mnt).unwrap();
        Disk { _dir: dir, disk }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.disk.path().join(rel)
    }

    fn reboot(&self) {
        let report = self.disk.reboot().unwrap();
        eprintln!("{report:?}");
        assert!(
            self.disk.harness_errors().is_empty(),
            "{:?}",
            self.disk.harness_errors()
        );
    }
}

fn fsync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn write_synced(path: &Path, bytes: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn fsynced_data_and_names_survive_and_nothing_else_does() {
    let d = Disk::new();
    fs::create_dir(d.p("dir")).unwrap();
    fsync_dir(d.disk.path());
    write_synced(&d.p("dir/synced"), b"durable");
    fs::write(d.p("dir/unsynced-data"), b"lost").unwrap();
    fsync_dir(&d.p("dir"));
    // Data fsynced, name never: the file is gone.
    write_synced(&d.p("nameless"), b"orphan");
    d.reboot();
    assert_eq!(fs::read(d.p("dir/synced")).unwrap(), b"durable");
    assert_eq!(
        fs::read(d.p("dir/unsynced-data")).unwrap(),
        b"",
        "its name was durable, its data was not"
    );
    assert!(!d.p("nameless").exists());
}

#[test]
fn unsynced_overwrites_appends_truncations_and_unlinks_are_undone() {
    let d = Disk::new();
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    write_synced(&d.p("f"), &data);
    write_synced(&d.p("g"), b"keep me");
    write_synced(&d.p("h"), &data);
    fsync_dir(d.disk.path());
    let f = OpenOptions::new().write(true).open(d.p("f")).unwrap();
    f.write_all_at(&[0xee; 5000], 3000).unwrap();
    f.write_all_at(b"appended", 20_000).unwrap();
    drop(f);
    fs::remove_file(d.p("g")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(d.p("h"))
        .unwrap()
        .set_len(100)
        .unwrap();
    fs::write(d.p("h"), b"rewritten after truncation").unwrap();
    d.reboot();
    assert_eq!(fs::read(d.p("f")).unwrap(), data);
    assert_eq!(fs::read(d.p("g")).unwrap(), b"keep me");
    assert_eq!(fs::read(d.p("h")).unwrap(), data);
}

#[test]
fn a_rename_is_durable_with_its_directory_only() {
    let d = Disk::new();
    write_synced(&d.p("old"), b"v1");
    fsync_dir(d.disk.path());
    write_synced(&d.p("tmp"), b"v2");
    fs::rename(d.p("tmp"), d.p("old")).unwrap();
    d.reboot();
    assert_eq!(fs::read(d.p("old")).unwrap(), b"v1");
    assert!(!d.p("tmp").exists());

    write_synced(&d.p("tmp"), b"v2");
    fs::rename(d.p("tmp"), d.p("old")).unwrap();
    fsync_dir(d.disk.path());
    d.reboot();
    assert_eq!(fs::read(d.p("old")).unwrap(), b"v2");
    assert!(!d.p("tmp").exists());
}

#[test]
fn a_cut_at_a_named_point_stops_everything_after_it() {
    let d = Disk::new();
    let f = d.p("log");
    let mut file = File::create(&f).unwrap();
    fsync_dir(d.disk.path());
    d.disk.arm(
        Point::new(Op::Fsync, 3).on("log"),
        Action::Cut(CutMode::DropAll),
    );
    let mut acked = 0;
    for i in 0..10u8 {
        if file.write_all(&[i; 100]).is_err() || file.sync_data().is_err() {
            break;
        }
        acked += 1;
    }
    assert_eq!(acked, 2, "the third fsync is the cut");
    assert!(d.disk.cut_mode().is_some());
    let err = File::create(d.p("after")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "the dead disk answers EIO"
    );
    drop(file);
    d.reboot();
    let got = fs::read(&f).unwrap();
    assert_eq!(got.len(), 200, "two acknowledged records, not the third");
    assert!(got[..100].iter().all(|b| *b == 0) && got[100..].iter().all(|b| *b == 1));
}

#[test]
fn a_failed_fsync_loses_its_data_even_after_a_later_successful_one() {
    let d = Disk::new();
    write_synced(&d.p("f"), b"old old old");
    fsync_dir(d.disk.path());
    d.disk.arm(
        Point::new(Op::Fsync, 1).on("f"),
        Action::Fail {
            errno: libc::EIO,
            times: Some(1),
        },
    );
    let file = OpenOptions::new().write(true).open(d.p("f")).unwrap();
    file.write_all_at(b"new", 0).unwrap();
    let err = file.sync_all().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    file.sync_all()
        .expect("the error is reported once, as on Linux");
    assert_eq!(
        fs::read(d.p("f")).unwrap(),
        b"new old old",
        "still in the cache"
    );
    assert_eq!(d.disk.injected().len(), 1);
    drop(file);
    d.reboot();
    assert_eq!(
        fs::read(d.p("f")).unwrap(),
        b"old old old",
        "never written back"
    );
}

#[test]
fn injected_write_errors_apply_nothing() {
    let d = Disk::new();
    write_synced(&d.p("f"), b"abc");
    d.disk.arm(
        Point::new(Op::Write, 1),
        Action::Fail {
            errno: libc::ENOSPC,
            times: None,
        },
    );
    let file = OpenOptions::new().write(true).open(d.p("f")).unwrap();
    for _ in 0..3 {
        let err = file.write_all_at(b"xyz", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    }
    d.disk.disarm_all();
    assert_eq!(fs::read(d.p("f")).unwrap(), b"abc");
    file.write_all_at(b"xyz", 0).unwrap();
    assert_eq!(fs::read(d.p("f")).unwrap(), b"xyz");
    d.disk.set_full(true);
    let free = statvfs_free(d.disk.path());
    assert_eq!(free, 0);
    d.disk.set_full(false);
    assert!(statvfs_free(d.disk.path()) > 0);
}

fn statvfs_free(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid pointers.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail
}

#[test]
fn a_random_cut_keeps_all_that_was_synced_and_some_of_the_rest() {
    for seed in 1..=8u64 {
        let d = Disk::new();
        let old = vec![1u8; 64 * 1024];
        write_synced(&d.p("f"), &old);
        fsync_dir(d.disk.path());
        let f = OpenOptions::new().write(true).open(d.p("f")).unwrap();
        f.write_all_at(&vec![2u8; 64 * 1024], 0).unwrap();
        drop(f);
        for i in 0..8 {
            fs::write(d.p(&format!("new-{i}")), b"n").unwrap();
        }
        d.disk.cut(CutMode::Random(seed));
        let report = d.disk.reboot().unwrap();
        assert!(d.disk.harness_errors().is_empty());
        let got = fs::read(d.p("f")).unwrap();
        assert_eq!(got.len(), old.len());
        for (page, chunk) in got.chunks(4096).enumerate() {
            assert!(
                chunk.iter().all(|b| *b == 1) || chunk.iter().all(|b| *b == 2),
                "seed {seed}: page {page} is torn within itself"
            );
        }
        // The creates are one directory's operations: a prefix of them survives.
        let kept: Vec<bool> = (0..8).map(|i| d.p(&format!("new-{i}")).exists()).collect();
        let n = kept.iter().filter(|k| **k).count();
        assert!(
            kept[..n].iter().all(|k| *k),
            "seed {seed}: not a prefix: {kept:?}"
        );
        assert_eq!(report.dir_ops_kept, n as u64);
        eprintln!("seed {seed}: {report:?}");
    }
}

#[test]
fn the_disk_cannot_hold_a_unix_socket() {
    let d = Disk::new();
    let err = std::os::unix::net::UnixListener::bind(d.p("s.sock")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
}

#[test]
fn hard_links_symlinks_and_directories_come_back() {
    let d = Disk::new();
    fs::create_dir_all(d.p("a/b")).unwrap();
    write_synced(&d.p("a/b/f"), b"linked");
    fs::hard_link(d.p("a/b/f"), d.p("a/g")).unwrap();
    std::os::unix::fs::symlink("b/f", d.p("a/s")).unwrap();
    for dir in ["", "a", "a/b"] {
        fsync_dir(&d.p(dir));
    }
    // A directory made and filled but never fsynced in its parent goes with its content.
    fs::create_dir(d.p("lost")).unwrap();
    write_synced(&d.p("lost/x"), b"x");
    fsync_dir(&d.p("lost"));
    d.reboot();
    assert_eq!(fs::read(d.p("a/g")).unwrap(), b"linked");
    assert_eq!(fs::read(d.p("a/s")).unwrap(), b"linked");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(d.p("a/g")).unwrap().ino(),
        fs::metadata(d.p("a/b/f")).unwrap().ino()
    );
    assert!(!d.p("lost").exists());
}
