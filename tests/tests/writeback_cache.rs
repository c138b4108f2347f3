//! The kernel's writeback cache (FUSE_WRITEBACK_CACHE), end to end on real mounts:
//! - snapshots taken while several writer processes append records through the page
//!   cache (buffered, no fsync) and a thread stores records into a shared mapping: every
//!   record whose write() (or store) returned before `strata snapshot create` started is
//!   in the snapshot, nothing written after it returned is, and a writer's file is never
//!   cut inside one of its write() calls;
//! - size and times, which the kernel owns while it caches writes: stat right after
//!   write, O_APPEND from two descriptors, ftruncate down and up, writes through mmap,
//!   and the same figures after a remount;
//! - a forced rollback while a file is open with writes in the page cache: the branch
//!   shows the snapshot, the saved state holds every write that returned.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_tests::cli::{ok, s};
use strata_tests::data::random_bytes;
use strata_tests::records::{count_odd_records, leading_odd_records, odd_record, ODD_SIZE};
use strata_tests::{strata, sys, TestStore};

/// A writer process and the count of records it acknowledged.
struct Writer {
    child: Child,
    acked: Arc<AtomicU64>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(file: &Path, stream: u64) -> Writer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_append_writer"))
            .arg(file)
            .arg(stream.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start append_writer");
        let out = child.stdout.take().unwrap();
        let acked = Arc::new(AtomicU64::new(0));
        let reader = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Some(n) = line
                        .strip_prefix("ack ")
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        acked.store(n + 1, Ordering::SeqCst);
                    }
                }
            })
        };
        Writer {
            child,
            acked,
            reader: Some(reader),
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        let _ = sys::kill(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A shared, writable mapping of a whole file.
struct Mapping {
    ptr: *mut u8,
    len: usize,
    _file: File,
}

unsafe impl Send for Mapping {}

impl Mapping {
    fn new(path: &Path, len: usize) -> Mapping {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        file.set_len(len as u64).unwrap();
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Mapping {
            ptr: ptr.cast(),
            len,
            _file: file,
        }
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.len);
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

const WRITERS: u64 = 3;
const MAPPED_STREAM: u64 = 99;
const MAPPED_RECORDS: usize = 40_000;

#[test]
fn snapshots_hold_what_writer_processes_and_a_mapping_wrote_through_the_page_cache() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|i| Writer::start(&mount.path(format!("w{i}.dat")), i))
        .collect();
    // The mapping: records stored one after the other, counted once each store is done.
    let mapped_acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut mapping = Mapping::new(&mount.path("mapped.dat"), MAPPED_RECORDS * ODD_SIZE);
    let mapper = {
        let (acked, stop) = (mapped_acked.clone(), stop.clone());
        std::thread::spawn(move || {
            for n in 0..MAPPED_RECORDS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                mapping.write(n * ODD_SIZE, &odd_record(MAPPED_STREAM, n as u64));
                acked.store(n as u64 + 1, Ordering::SeqCst);
                if n % 8 == 7 {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            mapping
        })
    };
    let counts = |w: &[Writer]| -> Vec<u64> {
        let mut v: Vec<u64> = w.iter().map(Writer::acked).collect();
        v.push(mapped_acked.load(Ordering::SeqCst));
        v
    };
    std::thread::sleep(Duration::from_millis(300));
    // (name, acknowledged before the request, acknowledged when it returned)
    let mut taken = Vec::new();
    for i in 0..10u64 {
        let name = format!("s{i:02}");
        let before = counts(&writers);
        strata(["snapshot", "create", s(&ts.mnt), &name]).assert_success();
        let after = counts(&writers);
        taken.push((name, before, after));
        std::thread::sleep(Duration::from_millis(40 + 25 * i));
    }
    for w in &mut writers {
        w.stop();
    }
    stop.store(true, Ordering::Relaxed);
    let mapping = mapper.join().unwrap();
    drop(mapping);
    let mut last = vec![0u64; WRITERS as usize + 1];
    for (name, before, after) in &taken {
        for i in 0..=WRITERS as usize {
            let file = if i < WRITERS as usize {
                format!("w{i}.dat")
            } else {
                "mapped.dat".into()
            };
            let data = fs::read(mount.path(format!(".snapshots/{name}/{file}")))
                .unwrap_or_else(|e| panic!("read {file} of snapshot {name}: {e}"));
            let n = if i < WRITERS as usize {
                count_odd_records(&data, i as u64)
                    .unwrap_or_else(|e| panic!("snapshot {name}, {file}: {e}"))
            } else {
                let n = leading_odd_records(&data, MAPPED_STREAM);
                // Nothing stored after the request returned: zeros from there on.
                let end = (after[i] as usize * ODD_SIZE).min(data.len());
                if let Some(at) = data[end..].iter().position(|b| *b != 0) {
                    panic!(
                        "snapshot {name}, {file}: bytes at offset {} were stored after the snapshot returned",
                        end + at
                    );
                }
                n
            };
            assert!(
                before[i] <= n && n <= after[i],
                "snapshot {name}, {file}: {n} records; {} were acknowledged before the request and {} when it returned",
                before[i],
                after[i]
            );
            assert!(
                n >= last[i],
                "snapshot {name}, {file}: fewer records than the snapshot before"
            );
            last[i] = n;
        }
    }
    assert!(
        last.iter().all(|n| *n > 0),
        "a writer wrote nothing: {last:?}"
    );
    // The live files hold everything acknowledged.
    for (i, w) in writers.iter().enumerate() {
        let data = fs::read(mount.path(format!("w{i}.dat"))).unwrap();
        let n = count_odd_records(&data, i as u64).unwrap();
        assert!(
            n >= w.acked(),
            "w{i}.dat: {n} records, {} acknowledged",
            w.acked()
        );
    }
    let data = fs::read(mount.path("mapped.dat")).unwrap();
    let stored = mapped_acked.load(Ordering::SeqCst);
    assert_eq!(leading_odd_records(&data, MAPPED_STREAM), stored);
    drop(writers);
    mount.unmount();
    ts.assert_verify_clean();
}

fn mtime_ns(md: &fs::Metadata) -> i128 {
    md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128
}

#[test]
fn size_and_times_stay_right_under_the_kernels_write_cache() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let plain = mount.path("plain.bin");
    let appended = mount.path("appended.bin");
    let cut = mount.path("truncated.bin");
    let mapped = mount.path("mapped.bin");

    // stat right after write, and the mtime of the write() (not of the write-back).
    let head = random_bytes(1, 10_000);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&plain)
        .unwrap();
    f.write_all_at(&head, 0).unwrap();
    assert_eq!(fs::metadata(&plain).unwrap().len(), 10_000);
    f.write_all_at(b"tail", 1_000_000).unwrap();
    let md = fs::metadata(&plain).unwrap();
    assert_eq!(md.len(), 1_000_004, "size right after an extending write");
    let written_at = mtime_ns(&md);
    std::thread::sleep(Duration::from_millis(1100));
    drop(f); // the close writes the pages back, a second later
    let md = fs::metadata(&plain).unwrap();
    assert_eq!(md.len(), 1_000_004);
    assert_eq!(mtime_ns(&md), written_at, "mtime moved to the write-back");

    // st_blocks of a file still open, once fsync brought its pages in: the kernel keeps
    // attributes for long and learns of the allocated blocks from the daemon.
    let grown = mount.path("grown.bin");
    let g = File::create(&grown).unwrap();
    g.write_all_at(&random_bytes(2, 1 << 20), 0).unwrap();
    g.sync_all().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fs::metadata(&grown).unwrap().blocks() < 2048 {
        assert!(
            std::time::Instant::now() < deadline,
            "st_blocks of an fsynced 1 MiB file still {} after 10 s",
            fs::metadata(&grown).unwrap().blocks()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(g);

    // O_APPEND from two descriptors, alternating.
    let open_append = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&appended)
            .unwrap()
    };
    let (mut a, mut b) = (open_append(), open_append());
    let mut expected = Vec::new();
    for i in 0..60u64 {
        let chunk = random_bytes(100 + i, 777);
        if i % 2 == 0 { &mut a } else { &mut b }
            .write_all(&chunk)
            .unwrap();
        expected.extend_from_slice(&chunk);
        assert_eq!(
            fs::metadata(&appended).unwrap().len(),
            expected.len() as u64
        );
    }
    drop((a, b));

    // ftruncate down, then up (zeros), then a write past the old end.
    let mut t = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&cut)
        .unwrap();
    let body = random_bytes(7, 100_000);
    t.write_all(&body).unwrap();
    t.set_len(5000).unwrap();
    assert_eq!(t.metadata().unwrap().len(), 5000);
    t.set_len(300_000).unwrap();
    assert_eq!(fs::metadata(&cut).unwrap().len(), 300_000);
    t.write_all_at(b"late", 200_000).unwrap();
    let mut truncated = body[..5000].to_vec();
    truncated.resize(300_000, 0);
    truncated[200_000..200_004].copy_from_slice(b"late");
    let mut got = Vec::new();
    File::open(&cut).unwrap().read_to_end(&mut got).unwrap();
    assert!(got == truncated, "truncated.bin differs before the remount");
    drop(t);

    // Stores through a shared mapping update the content and the mtime.
    fs::write(&mapped, random_bytes(9, 65_536)).unwrap();
    let old: sys::Time = (1_000_000, 0);
    sys::set_times(&mapped, old, old, true).unwrap();
    let mut mapped_expected = fs::read(&mapped).unwrap();
    {
        let mut m = Mapping::new_keep(&mapped, 65_536);
        m.write(4000, b"stored through the mapping");
        mapped_expected[4000..4026].copy_from_slice(b"stored through the mapping");
    }
    let md = fs::metadata(&mapped).unwrap();
    assert_eq!(md.len(), 65_536);
    assert!(
        md.mtime() > 1_000_000,
        "mtime not updated by a store through mmap"
    );
    let mapped_mtime = mtime_ns(&md);

    let check = |when: &str, m: &strata_tests::Mount| {
        let md = fs::metadata(m.path("plain.bin")).unwrap();
        assert_eq!(md.len(), 1_000_004, "{when}: plain.bin size");
        assert_eq!(mtime_ns(&md), written_at, "{when}: plain.bin mtime");
        let data = fs::read(m.path("plain.bin")).unwrap();
        assert!(data[..10_000] == head[..], "{when}: plain.bin head");
        assert_eq!(&data[1_000_000..], b"tail", "{when}: plain.bin tail");
        assert!(
            data[10_000..1_000_000].iter().all(|b| *b == 0),
            "{when}: plain.bin hole"
        );
        assert!(
            fs::read(m.path("appended.bin")).unwrap() == expected,
            "{when}: appended.bin differs"
        );
        assert!(
            fs::read(m.path("truncated.bin")).unwrap() == truncated,
            "{when}: truncated.bin differs"
        );
        let md = fs::metadata(m.path("mapped.bin")).unwrap();
        assert_eq!(mtime_ns(&md), mapped_mtime, "{when}: mapped.bin mtime");
        assert!(
            fs::read(m.path("mapped.bin")).unwrap() == mapped_expected,
            "{when}: mapped.bin differs"
        );
    };
    check("mounted", &mount);
    mount.unmount();
    let mount = ts.mount();
    check("after a remount", &mount);
    mount.unmount();
    ts.assert_verify_clean();
}

impl Mapping {
    /// A shared mapping of the first `len` bytes of an existing file, content kept.
    fn new_keep(path: &Path, len: usize) -> Mapping {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Mapping {
            ptr: ptr.cast(),
            len,
            _file: file,
        }
    }
}

#[test]
fn a_forced_rollback_drops_cached_writes_and_keeps_them_in_the_saved_state() {
    let ts = TestStore::new();
    let mnt = s(&ts.mnt);
    let mount = ts.mount();
    let path = mount.path("open.bin");
    let first = random_bytes(3, 200_000);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(&first).unwrap();
    ok(&["snapshot", "create", mnt, "r1"]);
    // Written after r1, still in the page cache, the file held open.
    let second = random_bytes(4, 150_000);
    f.write_all(&second).unwrap();
    let out = ok(&["rollback", "--force", mnt, "r1"]);
    let saved = out
        .split("kept as snapshot ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no saved snapshot in: {out}"))
        .to_string();
    let now = fs::read(&path).unwrap();
    assert!(
        now == first,
        "the branch does not show r1 after the rollback: {} bytes (r1: {}), first difference at {:?}",
        now.len(),
        first.len(),
        now.iter().zip(&first).position(|(a, b)| a != b)
    );
    let mut whole = first.clone();
    whole.extend_from_slice(&second);
    assert!(
        fs::read(mount.path(format!(".snapshots/{saved}/open.bin"))).unwrap() == whole,
        "the saved state lacks writes that returned before the rollback"
    );
    drop(f);
    assert!(
        fs::read(&path).unwrap() == first,
        "closing the file wrote stale pages back"
    );
    mount.unmount();
    let mount = ts.mount();
    assert!(fs::read(mount.path("open.bin")).unwrap() == first);
    mount.unmount();
    ts.assert_verify_clean();
}

/// Runs `script` with `sh -c` as the user nobody (uid and gid 65534, no groups).
fn as_nobody(dir: &Path, script: &str) {
    let st = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir(dir)
        .status()
        .expect("run setpriv (util-linux)");
    assert!(
        st.success(),
        "as nobody in {}: {script}: {st}",
        dir.display()
    );
}

/// The set-ID scenarios, in `dir`; returns each file's mode afterwards.
fn set_id_scenario(dir: &Path) -> Vec<(&'static str, u32)> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    let make = |name: &str, mode: u32| {
        let p = dir.join(name);
        fs::write(&p, b"0123456789").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    make("written", 0o6777);
    make("truncated", 0o6777);
    make("chowned", 0o6755);
    make("sgid-no-exec", 0o2646);
    make("written-by-root", 0o6777);
    let sub = dir.join("setgid-dir");
    fs::create_dir(&sub).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o2775)).unwrap();
    as_nobody(
        dir,
        "printf x >> written && truncate -s 3 truncated && printf y >> sgid-no-exec",
    );
    OpenOptions::new()
        .append(true)
        .open(dir.join("written-by-root"))
        .unwrap()
        .write_all(b"z")
        .unwrap();
    std::os::unix::fs::chown(dir.join("chowned"), Some(1), Some(1)).unwrap();
    std::os::unix::fs::chown(&sub, Some(1), Some(1)).unwrap();
    [
        "written",
        "truncated",
        "chowned",
        "sgid-no-exec",
        "written-by-root",
        "setgid-dir",
    ]
    .into_iter()
    .map(|n| (n, fs::metadata(dir.join(n)).unwrap().mode() & 0o7777))
    .collect()
}

#[test]
fn set_id_bits_are_cleared_as_on_the_native_file_system() {
    let native = tempfile::tempdir().unwrap();
    let expected = set_id_scenario(&native.path().join("t"));
    // The scenario is only a test if the native run cleared something.
    assert_eq!(expected[0], ("written", 0o777), "native: {expected:?}");
    let ts = TestStore::new();
    let mount = ts.mount();
    let got = set_id_scenario(&mount.path("t"));
    assert_eq!(
        got, expected,
        "strata (left) and the native file system (right) differ"
    );
    mount.unmount();
    let mount = ts.mount();
    let after: Vec<(&str, u32)> = got
        .iter()
        .map(|(n, _)| {
            (
                *n,
                fs::metadata(mount.path(format!("t/{n}"))).unwrap().mode() & 0o7777,
            )
        })
        .collect();
    assert_eq!(after, expected, "after a remount");
    mount.unmount();
}
