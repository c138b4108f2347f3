//! Snapshots through real FUSE mounts served in this process: `.snapshots` in a branch
//! mount, read-only snapshot mounts, inode numbering, and cache invalidation after a
//! rollback. Every mount is unmounted by `Fixture`'s Drop, also when a test fails.
//!
//! Needs root and /dev/fuse (strata mounts with mount(2) itself as root).

use std::ffi::CString;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_fs::{MountOptions, Mounted};
use strata_snapshot::{GenerationId, InitOptions, Store, Volume, VolumeKind};

const SNAPDIR_INO: u64 = (1 << 40) - 1;

/// A store in a temporary directory and the mounts of it; unmounts them all on drop.
struct Fixture {
    store: Option<Arc<Store>>,
    mounts: Vec<(PathBuf, Option<Mounted>)>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let opts = InitOptions {
            block_size: 32768,
            compression_level: 1,
        };
        Store::init(&path, &opts).unwrap();
        let store = Store::open(&path).unwrap();
        Fixture {
            store: Some(store),
            mounts: Vec::new(),
            dir,
        }
    }

    fn store(&self) -> &Arc<Store> {
        self.store.as_ref().unwrap()
    }

    /// Mounts `volume` at a fresh directory; returns the mount point.
    fn mount(&mut self, volume: Volume) -> PathBuf {
        let mp = self.dir.path().join(format!("mnt{}", self.mounts.len()));
        fs::create_dir(&mp).unwrap();
        let opts = MountOptions {
            threads: 2,
            fsname: "strata-test".into(),
            ..MountOptions::default()
        };
        let m = strata_fs::mount(volume, &mp, &opts).unwrap();
        self.mounts.push((mp.clone(), Some(m)));
        mp
    }

    fn mount_main(&mut self) -> PathBuf {
        let v = self.store().main();
        self.mount(v)
    }

    fn mounted(&self, mp: &Path) -> &Mounted {
        self.mounts
            .iter()
            .find(|(p, _)| p == mp)
            .and_then(|(_, m)| m.as_ref())
            .unwrap()
    }

    /// Unmounts every mount and waits for each session to end.
    fn unmount_all(&mut self) {
        for (mp, m) in &mut self.mounts {
            if let Some(m) = m.take() {
                if let Err(e) = m.unmounter().unmount() {
                    eprintln!("unmount {}: {e}", mp.display());
                }
                if let Err(e) = m.wait() {
                    eprintln!("wait {}: {e}", mp.display());
                }
            }
        }
    }

    /// Unmounts everything and closes and reopens the store.
    fn reopen(&mut self) {
        self.unmount_all();
        let store = self.store.take().unwrap();
        store.close().unwrap();
        let path = store.path().to_path_buf();
        drop(store);
        self.store = Some(Store::open(&path).unwrap());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.unmount_all();
        if let Some(store) = self.store.take() {
            let _ = store.close();
        }
    }
}

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("no errno in {e}")),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn setxattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn truncate(path: &Path) -> std::io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    if unsafe { libc::truncate(p.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The snapshot's generation.
fn generation(store: &Store, name: &str) -> GenerationId {
    store.snapshot_gen(name).unwrap()
}

#[test]
fn snapdir_is_hidden_but_lists_every_snapshot_at_once() {
    let mut f = Fixture::new();
    let mp = f.mount_main();
    fs::write(mp.join("a"), b"a").unwrap();
    f.store().snapshot_create("main", "first").unwrap();

    assert_eq!(names(&mp), vec!["a"]);
    let snapdir = mp.join(".snapshots");
    let md = fs::metadata(&snapdir).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o7777, 0o555);
    assert_eq!((md.uid(), md.gid(), md.ino()), (0, 0, SNAPDIR_INO));
    assert_eq!(names(&snapdir), vec!["first"]);
    assert_eq!(md.nlink(), 3);

    // `..` of `.snapshots` is the root, `..` of a snapshot root is `.snapshots`.
    assert_eq!(fs::metadata(snapdir.join("..")).unwrap().ino(), 1);
    assert_eq!(
        fs::metadata(snapdir.join("first/..")).unwrap().ino(),
        SNAPDIR_INO
    );

    // A snapshot taken while mounted shows at once, even after a failed lookup.
    assert_eq!(errno(fs::metadata(snapdir.join("second"))), libc::ENOENT);
    f.store().snapshot_create("main", "second").unwrap();
    assert!(fs::metadata(snapdir.join("second")).unwrap().is_dir());
    assert_eq!(names(&snapdir), vec!["first", "second"]);

    // A real `.snapshots` cannot be created over it.
    assert_eq!(errno(fs::create_dir(&snapdir)), libc::EEXIST);
    assert_eq!(names(&mp), vec!["a"]);

    // A deleted snapshot goes once the daemon invalidates.
    f.store().snapshot_delete("first", false).unwrap();
    f.mounted(&mp).invalidator().invalidate_snapshots();
    assert_eq!(names(&snapdir), vec!["second"]);
    assert_eq!(errno(fs::metadata(snapdir.join("first"))), libc::ENOENT);
}

#[test]
fn a_snapshot_keeps_the_old_content() {
    let mut f = Fixture::new();
    let mp = f.mount_main();
    fs::create_dir(mp.join("d")).unwrap();
    fs::write(mp.join("d/f"), b"old").unwrap();
    std::os::unix::fs::symlink("d/f", mp.join("l")).unwrap();
    f.store().snapshot_create("main", "s").unwrap();

    fs::write(mp.join("d/f"), b"new and longer").unwrap();
    fs::write(mp.join("added"), b"x").unwrap();
    fs::remove_file(mp.join("l")).unwrap();

    let s = mp.join(".snapshots/s");
    assert_eq!(fs::read(s.join("d/f")).unwrap(), b"old");
    assert_eq!(fs::metadata(s.join("d/f")).unwrap().len(), 3);
    assert_eq!(fs::read_link(s.join("l")).unwrap(), Path::new("d/f"));
    assert_eq!(fs::read(s.join("l")).unwrap(), b"old");
    assert_eq!(names(&s), vec!["d", "l"]);
    assert_eq!(fs::read(mp.join("d/f")).unwrap(), b"new and longer");

    // statfs inside a snapshot is the store's.
    let st = |p: &Path| {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        (s.f_blocks, s.f_bsize)
    };
    assert_eq!(st(&s.join("d")), st(&mp));

    // Copying out of a snapshot into the live tree works (across trees the kernel
    // copies through the page cache).
    fs::copy(s.join("d/f"), mp.join("restored")).unwrap();
    assert_eq!(fs::read(mp.join("restored")).unwrap(), b"old");
}

#[test]
fn a_mount_gets_a_large_readahead_and_reads_scattered_blocks_back() {
    let mut f = Fixture::new();
    let mp = f.mount_main();
    let dev = fs::metadata(&mp).unwrap().dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    let kb: u64 = fs::read_to_string(&knob).unwrap().trim().parse().unwrap();
    assert_eq!(kb, strata_fs::DEFAULT_READAHEAD / 1024, "{knob}");
    // 64 blocks written in order, then every third rewritten after a snapshot: a
    // sequential read crosses scattered and contiguous runs of records.
    let block = |i: usize, round: u8| -> Vec<u8> {
        (0..32768)
            .map(|k| (k as u8) ^ (i as u8).wrapping_mul(31) ^ round)
            .collect()
    };
    let mut want: Vec<u8> = (0..64).flat_map(|i| block(i, 0)).collect();
    fs::write(mp.join("f"), &want).unwrap();
    f.store().snapshot_create("main", "s").unwrap();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(mp.join("f"))
        .unwrap();
    for i in (0..64).rev().step_by(3) {
        let b = block(i, 7);
        std::os::unix::fs::FileExt::write_all_at(&file, &b, (i * 32768) as u64).unwrap();
        want[i * 32768..(i + 1) * 32768].copy_from_slice(&b);
    }
    file.sync_all().unwrap();
    drop(file);
    assert!(fs::read(mp.join("f")).unwrap() == want);
    assert_eq!(
        fs::read(mp.join(".snapshots/s/f")).unwrap().len(),
        64 * 32768
    );
}

#[test]
fn writes_inside_snapshots_and_snapdir_fail_with_erofs() {
    let mut f = Fixture::new();
    let mp = f.mount_main();
    fs::create_dir(mp.join("d")).unwrap();
    fs::write(mp.join("d/f"), b"data").unwrap();
    f.store().snapshot_create("main", "s").unwrap();
    let s = mp.join(".snapshots/s");
    let snapdir = mp.join(".snapshots");
    let erofs = libc::EROFS;

    // Inside a snapshot.
    assert_eq!(errno(fs::write(s.join("new"), b"x")), erofs);
    assert_eq!(
        errno(fs::OpenOptions::new().write(true).open(s.join("d/f"))),
        erofs
    );
    assert_eq!(
        errno(fs::OpenOptions::new().append(true).open(s.join("d/f"))),
        erofs
    );
    assert_eq!(errno(fs::remove_file(s.join("d/f"))), erofs);
    assert_eq!(errno(fs::create_dir(s.join("newdir"))), erofs);
    assert_eq!(errno(fs::remove_dir(s.join("d"))), erofs);
    assert_eq!(
        errno(fs::set_permissions(
            s.join("d/f"),
            fs::Permissions::from_mode(0o600)
        )),
        erofs
    );
    assert_eq!(errno(fs::rename(s.join("d/f"), s.join("d/g"))), erofs);
    assert_eq!(errno(std::os::unix::fs::symlink("x", s.join("sl"))), erofs);
    assert_eq!(errno(fs::hard_link(s.join("d/f"), s.join("h"))), erofs);
    assert_eq!(errno(setxattr(&s.join("d/f"), "user.k", b"v")), erofs);
    assert_eq!(errno(truncate(&s.join("d/f"))), erofs);
    let file = fs::File::open(s.join("d/f")).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 4);
    drop(file);

    // Between the live tree and a snapshot: EXDEV, as across mounts.
    assert_eq!(errno(fs::rename(s.join("d/f"), mp.join("f"))), libc::EXDEV);
    assert_eq!(errno(fs::rename(mp.join("d/f"), s.join("f"))), libc::EXDEV);
    assert_eq!(
        errno(fs::hard_link(s.join("d/f"), mp.join("h"))),
        libc::EXDEV
    );
    assert_eq!(
        errno(fs::hard_link(mp.join("d/f"), s.join("h"))),
        libc::EXDEV
    );

    // In `.snapshots` itself.
    assert_eq!(errno(fs::create_dir(snapdir.join("x"))), erofs);
    assert_eq!(errno(fs::write(snapdir.join("x"), b"x")), erofs);
    assert_eq!(errno(fs::remove_dir(snapdir.join("s"))), erofs);
    assert_eq!(errno(fs::remove_dir_all(snapdir.join("s"))), erofs);
    assert_eq!(
        errno(fs::rename(snapdir.join("s"), snapdir.join("t"))),
        erofs
    );
    assert_eq!(errno(fs::rename(mp.join("d"), snapdir.join("d"))), erofs);
    assert_eq!(errno(fs::rename(snapdir.join("s"), mp.join("s"))), erofs);
    assert_eq!(
        errno(fs::set_permissions(
            &snapdir,
            fs::Permissions::from_mode(0o755)
        )),
        erofs
    );
    assert_eq!(errno(setxattr(&snapdir, "user.k", b"v")), erofs);
    assert_eq!(
        errno(std::os::unix::fs::symlink("x", snapdir.join("sl"))),
        erofs
    );
    assert_eq!(
        errno(fs::hard_link(mp.join("d/f"), snapdir.join("h"))),
        erofs
    );
    assert_eq!(errno(fs::remove_dir(&snapdir)), erofs);
    assert_eq!(errno(fs::rename(&snapdir, mp.join("moved"))), erofs);

    // Nothing changed, and the live tree is still writable.
    assert_eq!(fs::read(s.join("d/f")).unwrap(), b"data");
    assert_eq!(names(&snapdir), vec!["s"]);
    fs::write(mp.join("d/f"), b"changed").unwrap();
    assert_eq!(fs::read(s.join("d/f")).unwrap(), b"data");
}

#[test]
fn inode_numbers_are_distinct_and_stable_across_remounts() {
    let mut f = Fixture::new();
    let mp = f.mount_main();
    fs::create_dir(mp.join("d")).unwrap();
    fs::write(mp.join("d/f"), b"data").unwrap();
    f.store().snapshot_create("main", "s").unwrap();
    let g = generation(f.store(), "s").0;

    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    let live = [ino(&mp), ino(&mp.join("d")), ino(&mp.join("d/f"))];
    let s = mp.join(".snapshots/s");
    let in_snap = [ino(&s), ino(&s.join("d")), ino(&s.join("d/f"))];
    assert_eq!(live[0], 1);
    assert_eq!(ino(&mp.join(".snapshots")), SNAPDIR_INO);
    for (l, s) in live.iter().zip(&in_snap) {
        assert!(*l < SNAPDIR_INO);
        assert_eq!(*s, (g << 40) | l);
    }
    // readdir reports the same numbers as stat.
    let listed: Vec<u64> = {
        use std::os::unix::fs::DirEntryExt;
        fs::read_dir(s.join("d"))
            .unwrap()
            .map(|e| e.unwrap().ino())
            .collect()
    };
    assert_eq!(listed, vec![in_snap[2]]);

    // An invalidator outliving its mount neither keeps the store open nor fails.
    let stale = f.mounted(&mp).invalidator();
    f.reopen();
    stale.invalidate_all();
    stale.invalidate_snapshots();
    let mp = f.mount_main();
    let s = mp.join(".snapshots/s");
    assert_eq!([ino(&mp), ino(&mp.join("d")), ino(&mp.join("d/f"))], live);
    assert_eq!([ino(&s), ino(&s.join("d")), ino(&s.join("d/f"))], in_snap);
}

#[test]
fn a_real_snapshots_entry_in_the_root_is_shadowed() {
    let mut f = Fixture::new();
    let ctx = strata_snapshot::Ctx {
        uid: 0,
        gid: 0,
        umask: 0,
    };
    let main = f.store().main();
    let real = main
        .mkdir(strata_snapshot::InodeNo::ROOT, b".snapshots", 0o755, ctx)
        .unwrap();
    main.mknod(real.ino, b"inside", libc::S_IFREG | 0o644, 0, ctx)
        .unwrap();
    f.store().snapshot_create("main", "s").unwrap();
    let mp = f.mount_main();

    assert_eq!(names(&mp), Vec::<String>::new());
    assert_eq!(
        fs::metadata(mp.join(".snapshots")).unwrap().ino(),
        SNAPDIR_INO
    );
    assert_eq!(names(&mp.join(".snapshots")), vec!["s"]);
    assert_eq!(errno(fs::remove_dir(mp.join(".snapshots"))), libc::EROFS);
    // Inside a snapshot there is no `.snapshots` of its own: the real one shows.
    assert_eq!(names(&mp.join(".snapshots/s")), vec![".snapshots"]);
    assert_eq!(names(&mp.join(".snapshots/s/.snapshots")), vec!["inside"]);
}

/// Retries a rollback while the kernel's asynchronous releases of just-closed files are
/// still arriving.
fn rollback(store: &Store, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match store.rollback("main", name, false) {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline && e.to_string().contains("open") => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("rollback: {e}"),
        }
    }
}

#[test]
fn after_a_rollback_and_invalidate_all_the_mount_shows_the_old_tree() {
    let mut f = Fixture::new();
    let mp = f.mount_main();
    fs::create_dir(mp.join("d")).unwrap();
    fs::write(mp.join("d/f"), b"v1").unwrap();
    fs::write(mp.join("keep"), b"k").unwrap();
    f.store().snapshot_create("main", "s").unwrap();

    fs::write(mp.join("d/f"), b"version two, longer").unwrap();
    fs::write(mp.join("added"), b"new").unwrap();
    fs::remove_file(mp.join("keep")).unwrap();
    // Fill the kernel's caches: entries, attributes, pages, directory listings.
    assert_eq!(fs::metadata(mp.join("d/f")).unwrap().len(), 19);
    assert_eq!(fs::read(mp.join("d/f")).unwrap(), b"version two, longer");
    assert_eq!(names(&mp), vec!["added", "d"]);
    assert_eq!(names(&mp.join("d")), vec!["f"]);
    assert!(fs::metadata(mp.join("added")).is_ok());
    assert!(fs::metadata(mp.join("keep")).is_err());

    rollback(f.store(), "s");
    f.mounted(&mp).invalidator().invalidate_all();

    assert_eq!(fs::metadata(mp.join("d/f")).unwrap().len(), 2);
    assert_eq!(fs::read(mp.join("d/f")).unwrap(), b"v1");
    assert_eq!(names(&mp), vec!["d", "keep"]);
    assert_eq!(errno(fs::metadata(mp.join("added"))), libc::ENOENT);
    assert_eq!(fs::read(mp.join("keep")).unwrap(), b"k");
    // The state before the rollback is kept as a snapshot, listed at once.
    let snaps = names(&mp.join(".snapshots"));
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let pre = snaps
        .iter()
        .find(|n| n.starts_with("pre-rollback-"))
        .unwrap();
    assert_eq!(
        fs::read(mp.join(".snapshots").join(pre).join("d/f")).unwrap(),
        b"version two, longer"
    );
    // And the live tree is writable as usual.
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(mp.join("d/f"))
        .unwrap();
    file.write_all(b"+").unwrap();
    drop(file);
    assert_eq!(fs::read(mp.join("d/f")).unwrap(), b"v1+");
}

#[test]
fn a_read_only_snapshot_mount_reads_and_refuses_writes() {
    let mut f = Fixture::new();
    let live = f.mount_main();
    fs::create_dir(live.join("d")).unwrap();
    fs::write(live.join("d/f"), b"old").unwrap();
    f.store().snapshot_create("main", "s").unwrap();
    fs::write(live.join("d/f"), b"new").unwrap();
    let g = generation(f.store(), "s");

    let v = f.store().volume(VolumeKind::Snapshot(g)).unwrap();
    let mp = f.mount(v);
    assert_eq!(fs::read(mp.join("d/f")).unwrap(), b"old");
    assert_eq!(names(&mp), vec!["d"]);
    assert_eq!(fs::metadata(&mp).unwrap().ino(), 1);
    assert_eq!(
        fs::metadata(mp.join("d/f")).unwrap().ino(),
        fs::metadata(live.join("d/f")).unwrap().ino()
    );
    assert_eq!(errno(fs::metadata(mp.join(".snapshots"))), libc::ENOENT);

    let erofs = libc::EROFS;
    assert_eq!(errno(fs::write(mp.join("new"), b"x")), erofs);
    assert_eq!(
        errno(fs::OpenOptions::new().write(true).open(mp.join("d/f"))),
        erofs
    );
    assert_eq!(errno(fs::remove_file(mp.join("d/f"))), erofs);
    assert_eq!(errno(fs::create_dir(mp.join("e"))), erofs);
    assert_eq!(errno(fs::rename(mp.join("d/f"), mp.join("g"))), erofs);
    assert_eq!(
        errno(fs::set_permissions(
            mp.join("d"),
            fs::Permissions::from_mode(0o700)
        )),
        erofs
    );

    // Mounted read-only, as /proc/mounts says.
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(mp.to_str().unwrap()))
        .unwrap();
    let options = line.split(' ').nth(3).unwrap();
    assert!(options.split(',').any(|o| o == "ro"), "{line}");
    assert_eq!(fs::read(live.join("d/f")).unwrap(), b"new");
    assert!(matches!(
        fs::metadata(live.join("nothing")).map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    ));
}
