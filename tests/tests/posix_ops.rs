//! POSIX operations on a live mount that a real filesystem must get right: unlink of an
//! open file, rename in all its forms (incl. RENAME_NOREPLACE / RENAME_EXCHANGE), fallocate
//! (punch hole, keep size) with SEEK_DATA / SEEK_HOLE, copy_file_range, statfs figures and
//! the 255-byte name limit. Results are checked again after a remount where it matters.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, FileExt, MetadataExt};
use std::path::Path;

use strata_tests::data::{assert_same_bytes, random_bytes, write_synced};
use strata_tests::{sys, TestStore};

#[track_caller]
fn assert_errno<T: std::fmt::Debug>(result: std::io::Result<T>, errno: i32, what: &str) {
    match result {
        Ok(value) => panic!("{what}: expected errno {errno}, got success ({value:?})"),
        Err(err) => assert_eq!(sys::errno(&err), errno, "{what}: {err}"),
    }
}

fn read_all(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

#[test]
fn unlinked_open_file_stays_readable_and_writable() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let path = ts.path("doomed.bin");
    let data = random_bytes(1, 300_000);
    write_synced(&path, &data).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    fs::remove_file(&path).unwrap();
    assert_errno(
        fs::symlink_metadata(&path),
        libc::ENOENT,
        "stat after unlink",
    );
    assert!(fs::read_dir(&ts.mnt)
        .unwrap()
        .all(|e| e.unwrap().file_name() != "doomed.bin"));

    let mut back = vec![0u8; data.len()];
    file.read_exact_at(&mut back, 0).unwrap();
    assert_same_bytes(&back, &data, "unlinked file through its descriptor");
    file.write_all_at(b"still writable", data.len() as u64)
        .unwrap();
    file.sync_all().unwrap();
    let mut tail = [0u8; 14];
    file.read_exact_at(&mut tail, data.len() as u64).unwrap();
    assert_eq!(&tail, b"still writable");
    let meta = file.metadata().unwrap();
    assert_eq!(meta.nlink(), 0);
    assert_eq!(meta.len(), data.len() as u64 + 14);

    // A new file under the same name is a different file.
    write_synced(&path, b"new").unwrap();
    assert_eq!(read_all(&path), b"new");
    file.read_exact_at(&mut back[..10], 0).unwrap();
    assert_eq!(&back[..10], &data[..10]);

    // Replacing a file by rename keeps the old contents readable through an open descriptor.
    let victim = ts.path("victim.txt");
    write_synced(&victim, b"old contents").unwrap();
    write_synced(&ts.path("replacement.txt"), b"new contents").unwrap();
    let mut old = File::open(&victim).unwrap();
    fs::rename(ts.path("replacement.txt"), &victim).unwrap();
    let mut text = String::new();
    old.read_to_string(&mut text).unwrap();
    assert_eq!(text, "old contents");
    assert_eq!(read_all(&victim), b"new contents");
    drop((file, old));
    mount.unmount();

    let mount = ts.mount();
    assert_eq!(read_all(&path), b"new");
    assert_eq!(read_all(&victim), b"new contents");
    let names: Vec<String> = fs::read_dir(&ts.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "unexpected entries after remount: {names:?}"
    );
    mount.unmount();
    ts.assert_verify_clean();
}

#[test]
fn rename_variants() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let p = |name: &str| ts.path(name);
    for dir in ["d1", "d2", "d2/sub", "full", "emptydir"] {
        fs::create_dir(p(dir)).unwrap();
    }
    write_synced(&p("full/x"), b"x").unwrap();
    write_synced(&p("a.txt"), b"A").unwrap();
    write_synced(&p("b.txt"), b"B").unwrap();
    write_synced(&p("d1/f.txt"), b"F").unwrap();

    // Plain renames.
    fs::rename(p("a.txt"), p("a2.txt")).unwrap();
    assert_errno(
        fs::metadata(p("a.txt")),
        libc::ENOENT,
        "old name after rename",
    );
    assert_eq!(read_all(&p("a2.txt")), b"A");
    fs::rename(p("a2.txt"), p("a2.txt")).unwrap(); // onto itself: nothing happens
    assert_eq!(read_all(&p("a2.txt")), b"A");
    fs::rename(p("d1/f.txt"), p("d2/sub/f.txt")).unwrap(); // across directories
                                                           // Over an existing file.
    fs::rename(p("b.txt"), p("a2.txt")).unwrap();
    assert_eq!(read_all(&p("a2.txt")), b"B");
    assert_errno(
        fs::metadata(p("b.txt")),
        libc::ENOENT,
        "source after replacing rename",
    );
    // Directories: into another directory (".." follows), over an empty directory.
    fs::rename(p("d1"), p("d2/d1")).unwrap();
    assert_eq!(
        fs::metadata(p("d2/d1/..")).unwrap().ino(),
        fs::metadata(p("d2")).unwrap().ino()
    );
    fs::rename(p("d2/d1"), p("emptydir")).unwrap();
    assert!(p("emptydir").is_dir() && !p("d2/d1").exists());

    // What must fail, and leave everything in place.
    assert_errno(
        fs::rename(p("emptydir"), p("full")),
        libc::ENOTEMPTY,
        "dir over non-empty dir",
    );
    assert_errno(
        fs::rename(p("a2.txt"), p("full")),
        libc::EISDIR,
        "file over dir",
    );
    assert_errno(
        fs::rename(p("emptydir"), p("a2.txt")),
        libc::ENOTDIR,
        "dir over file",
    );
    assert_errno(
        fs::rename(p("d2"), p("d2/sub/inside")),
        libc::EINVAL,
        "dir into itself",
    );
    assert_errno(
        fs::rename(p("missing"), p("other")),
        libc::ENOENT,
        "missing source",
    );
    assert_eq!(read_all(&p("full/x")), b"x");
    assert_eq!(read_all(&p("a2.txt")), b"B");

    // RENAME_NOREPLACE.
    write_synced(&p("n1"), b"n1").unwrap();
    write_synced(&p("n2"), b"n2").unwrap();
    assert_errno(
        sys::rename2(&p("n1"), &p("n2"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "NOREPLACE onto a file",
    );
    assert_eq!(
        (read_all(&p("n1")), read_all(&p("n2"))),
        (b"n1".to_vec(), b"n2".to_vec())
    );
    sys::rename2(&p("n1"), &p("n3"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(read_all(&p("n3")), b"n1");

    // RENAME_EXCHANGE: file with file, file with directory.
    sys::rename2(&p("n2"), &p("n3"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(
        (read_all(&p("n2")), read_all(&p("n3"))),
        (b"n1".to_vec(), b"n2".to_vec())
    );
    sys::rename2(&p("n2"), &p("full"), libc::RENAME_EXCHANGE).unwrap();
    assert!(p("n2").is_dir() && p("n2/x").is_file());
    assert_eq!(read_all(&p("full")), b"n1");
    assert_eq!(
        fs::metadata(p("n2/..")).unwrap().ino(),
        fs::metadata(&ts.mnt).unwrap().ino()
    );
    assert_errno(
        sys::rename2(&p("n3"), &p("nothing"), libc::RENAME_EXCHANGE),
        libc::ENOENT,
        "EXCHANGE with nothing",
    );

    // Symlinks and hard links move as themselves.
    symlink("a2.txt", p("link")).unwrap();
    fs::hard_link(p("a2.txt"), p("hard")).unwrap();
    fs::rename(p("link"), p("d2/link")).unwrap();
    fs::rename(p("hard"), p("d2/hard")).unwrap();
    assert_eq!(fs::read_link(p("d2/link")).unwrap(), Path::new("a2.txt"));
    assert_eq!(fs::metadata(p("a2.txt")).unwrap().nlink(), 2);

    let listing = |dir: &Path| {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let root_before = listing(&ts.mnt);
    let d2_before = listing(&p("d2"));
    mount.unmount();

    let mount = ts.mount();
    assert_eq!(listing(&ts.mnt), root_before);
    assert_eq!(listing(&p("d2")), d2_before);
    assert_eq!(read_all(&p("a2.txt")), b"B");
    assert_eq!(read_all(&p("d2/hard")), b"B");
    assert_eq!(read_all(&p("d2/sub/f.txt")), b"F");
    assert_eq!(read_all(&p("full")), b"n1");
    assert_eq!(read_all(&p("n2/x")), b"x");
    assert_eq!(fs::read_link(p("d2/link")).unwrap(), Path::new("a2.txt"));
    assert_eq!(fs::metadata(p("a2.txt")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(p("n2/..")).unwrap().ino(),
        fs::metadata(&ts.mnt).unwrap().ino()
    );
    mount.unmount();
    ts.assert_verify_clean();
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

#[test]
fn fallocate_punch_hole_keep_size_and_seek_data_hole() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let path = ts.path("holes.bin");
    let data = random_bytes(11, MIB as usize);
    write_synced(&path, &data).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut expected = data.clone();

    // Punch an aligned and an unaligned hole; the size stays.
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    sys::fallocate(&file, punch, 256 * KIB, 256 * KIB).unwrap();
    expected[256 * KIB as usize..512 * KIB as usize].fill(0);
    sys::fallocate(&file, punch, 1000, 4000).unwrap();
    expected[1000..5000].fill(0);
    assert_eq!(file.metadata().unwrap().len(), MIB);
    let mut back = vec![0u8; MIB as usize];
    file.read_exact_at(&mut back, 0).unwrap();
    assert_same_bytes(&back, &expected, "after punching holes");

    // Preallocation past the end with KEEP_SIZE changes nothing visible; without it the
    // file grows with zeros.
    sys::fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, MIB, MIB).unwrap();
    assert_eq!(file.metadata().unwrap().len(), MIB);
    sys::fallocate(&file, 0, MIB, 64 * KIB).unwrap();
    assert_eq!(file.metadata().unwrap().len(), MIB + 64 * KIB);
    expected.resize((MIB + 64 * KIB) as usize, 0);
    let mut grown = vec![1u8; 64 * KIB as usize];
    file.read_exact_at(&mut grown, MIB).unwrap();
    assert!(
        grown.iter().all(|b| *b == 0),
        "fallocated range is not zero"
    );

    // SEEK_DATA / SEEK_HOLE on data [0, 256K), hole [256K, 1M), data [1M, 1M+64K).
    let sparse = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(ts.path("sparse.bin"))
        .unwrap();
    sparse
        .write_all_at(&random_bytes(12, 256 * KIB as usize), 0)
        .unwrap();
    sparse
        .write_all_at(&random_bytes(13, 64 * KIB as usize), MIB)
        .unwrap();
    sparse.sync_all().unwrap();
    let check_seeks = |f: &File| {
        assert_eq!(sys::lseek(f, 0, libc::SEEK_DATA).unwrap(), 0);
        assert_eq!(sys::lseek(f, 100, libc::SEEK_DATA).unwrap(), 100);
        assert_eq!(sys::lseek(f, 0, libc::SEEK_HOLE).unwrap(), 256 * KIB);
        assert_eq!(sys::lseek(f, 256 * KIB, libc::SEEK_DATA).unwrap(), MIB);
        assert_eq!(sys::lseek(f, 300 * KIB, libc::SEEK_DATA).unwrap(), MIB);
        assert_eq!(
            sys::lseek(f, 300 * KIB, libc::SEEK_HOLE).unwrap(),
            300 * KIB
        );
        assert_eq!(
            sys::lseek(f, MIB + 10, libc::SEEK_HOLE).unwrap(),
            MIB + 64 * KIB
        );
        assert_errno(
            sys::lseek(f, MIB + 64 * KIB, libc::SEEK_DATA),
            libc::ENXIO,
            "SEEK_DATA at EOF",
        );
        assert_errno(
            sys::lseek(f, 2 * MIB, libc::SEEK_HOLE),
            libc::ENXIO,
            "SEEK_HOLE past EOF",
        );
    };
    check_seeks(&sparse);
    // The punched hole of the first file shows as a hole too.
    assert_eq!(
        sys::lseek(&file, 256 * KIB, libc::SEEK_DATA).unwrap(),
        512 * KIB
    );
    drop((file, sparse));
    mount.unmount();

    let mount = ts.mount();
    assert_same_bytes(&read_all(&path), &expected, "holes after remount");
    check_seeks(&File::open(ts.path("sparse.bin")).unwrap());
    assert!(
        fs::metadata(ts.path("sparse.bin")).unwrap().blocks() * 512 < 640 * KIB,
        "the hole of sparse.bin takes space"
    );
    mount.unmount();
    ts.assert_verify_clean();
}

#[test]
fn copy_file_range_within_the_mount() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let data = random_bytes(21, 3 * MIB as usize + 5);
    write_synced(&ts.path("src.bin"), &data).unwrap();
    let src = File::open(ts.path("src.bin")).unwrap();

    // Whole file.
    let whole = File::create(ts.path("whole.bin")).unwrap();
    sys::copy_file_range_all(&src, 0, &whole, 0, data.len()).unwrap();
    whole.sync_all().unwrap();
    assert_same_bytes(&read_all(&ts.path("whole.bin")), &data, "whole copy");

    // Unaligned ranges into an existing file.
    let mut expected = random_bytes(22, 2 * MIB as usize);
    write_synced(&ts.path("dst.bin"), &expected).unwrap();
    let dst = OpenOptions::new()
        .read(true)
        .write(true)
        .open(ts.path("dst.bin"))
        .unwrap();
    let (src_off, dst_off, len) = (4096 + 7, 100usize, MIB as usize + 13);
    sys::copy_file_range_all(&src, src_off as u64, &dst, dst_off as u64, len).unwrap();
    expected[dst_off..dst_off + len].copy_from_slice(&data[src_off..src_off + len]);
    // A copy that extends the destination.
    let tail_off = 2 * MIB as usize - 10;
    sys::copy_file_range_all(&src, 0, &dst, tail_off as u64, 4096).unwrap();
    expected.truncate(tail_off);
    expected.extend_from_slice(&data[..4096]);
    dst.sync_all().unwrap();
    assert_same_bytes(&read_all(&ts.path("dst.bin")), &expected, "ranged copy");
    // Nothing to copy at the end of the source.
    assert_eq!(
        sys::copy_file_range(&src, data.len() as u64, &dst, 0, 100).unwrap(),
        0
    );
    drop((src, whole, dst));
    mount.unmount();

    let mount = ts.mount();
    assert_same_bytes(
        &read_all(&ts.path("whole.bin")),
        &data,
        "whole copy after remount",
    );
    assert_same_bytes(
        &read_all(&ts.path("dst.bin")),
        &expected,
        "ranged copy after remount",
    );
    mount.unmount();
    ts.assert_verify_clean();
}

#[test]
fn statfs_reports_real_figures() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let st = sys::statvfs(&ts.mnt).unwrap();
    let under = sys::statvfs(&ts.store).unwrap();
    let total = st.f_blocks as u128 * st.f_frsize as u128;
    let free = st.f_bfree as u128 * st.f_frsize as u128;
    let avail = st.f_bavail as u128 * st.f_frsize as u128;
    let under_total = under.f_blocks as u128 * under.f_frsize as u128;
    assert!(
        st.f_bsize > 0 && st.f_frsize > 0,
        "block sizes: {} {}",
        st.f_bsize,
        st.f_frsize
    );
    assert!(total > 0, "statfs reports a size of 0");
    assert!(
        free <= total && avail <= free,
        "free {free} / avail {avail} / total {total}"
    );
    assert!(avail > 0, "statfs reports no space available");
    assert_eq!(st.f_namemax, 255);
    assert!(
        total * 10 >= under_total * 9 && total * 10 <= under_total * 11,
        "the mount reports {total} bytes, the store's filesystem {under_total}"
    );
    assert!(st.f_files > 0, "statfs reports no inodes");
    // df works on it.
    let df = std::process::Command::new("df")
        .arg(&ts.mnt)
        .output()
        .unwrap();
    assert!(
        df.status.success(),
        "df: {}",
        String::from_utf8_lossy(&df.stderr)
    );
    mount.unmount();
}

#[test]
fn names_longer_than_255_bytes_are_refused() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let long = "x".repeat(256);
    let max = "y".repeat(255);
    let p = |name: &str| ts.path(name);
    write_synced(&p("existing"), b"e").unwrap();

    assert_errno(File::create(p(&long)), libc::ENAMETOOLONG, "create");
    assert_errno(fs::create_dir(p(&long)), libc::ENAMETOOLONG, "mkdir");
    assert_errno(symlink("existing", p(&long)), libc::ENAMETOOLONG, "symlink");
    assert_errno(
        fs::hard_link(p("existing"), p(&long)),
        libc::ENAMETOOLONG,
        "link",
    );
    assert_errno(
        fs::rename(p("existing"), p(&long)),
        libc::ENAMETOOLONG,
        "rename",
    );
    assert_errno(fs::metadata(p(&long)), libc::ENAMETOOLONG, "stat");
    // Multi-byte characters count in bytes: 128 × 2 bytes = 256.
    assert_errno(
        File::create(p(&"é".repeat(128))),
        libc::ENAMETOOLONG,
        "create, 2-byte characters",
    );
    assert!(
        fs::read_dir(&ts.mnt).unwrap().count() == 1,
        "a refused name left an entry"
    );

    // 255 bytes is fine, for files, directories and symlinks alike.
    write_synced(&p(&max), b"max").unwrap();
    fs::create_dir(p(&format!("d{}", &max[1..]))).unwrap();
    symlink(&max, p(&format!("l{}", &max[1..]))).unwrap();
    mount.unmount();

    let mount = ts.mount();
    assert_eq!(read_all(&p(&max)), b"max");
    assert!(p(&format!("d{}", &max[1..])).is_dir());
    assert_eq!(read_all(&p(&format!("l{}", &max[1..]))), b"max");
    assert_eq!(fs::read_dir(&ts.mnt).unwrap().count(), 4);
    let mut file = File::open(p(&max)).unwrap();
    file.seek(SeekFrom::Start(1)).unwrap();
    let mut rest = String::new();
    file.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "ax");
    drop(file);
    let mut append = OpenOptions::new().append(true).open(p(&max)).unwrap();
    append.write_all(b"!").unwrap();
    drop(append);
    mount.unmount();
}

/// pjdfstest's link_count_max is skipped on every FUSE mount (glibc's pathconf answers
/// LINK_MAX = 127 "unknown" for FUSE_SUPER_MAGIC), so this checks the same thing: a file
/// takes hard links up to strata's LINK_MAX (65000, as ext4) and the next gives EMLINK;
/// the link count survives a remount.
#[test]
fn link_count_stops_at_link_max_with_emlink() {
    const LINK_MAX: u64 = 65000;
    let ts = TestStore::new();
    let mount = ts.mount();
    fs::create_dir(ts.path("links")).unwrap();
    let target = ts.path("target");
    File::create(&target).unwrap();
    for i in 1..LINK_MAX {
        fs::hard_link(&target, ts.path(format!("links/{i}"))).unwrap();
    }
    assert_eq!(fs::metadata(&target).unwrap().nlink(), LINK_MAX);
    assert_errno(
        fs::hard_link(&target, ts.path("links/one-too-many")),
        libc::EMLINK,
        "link past LINK_MAX",
    );
    mount.unmount();
    let mount = ts.mount();
    assert_eq!(fs::metadata(&target).unwrap().nlink(), LINK_MAX);
    mount.unmount();
    ts.assert_verify_clean();
}
