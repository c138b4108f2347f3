//! The reboot after a power cut: writes what the disk held durably into a new directory
//! (`materialize`), which then replaces the backing directory.
//!
//! Per the cut's mode, every unsynced page and file size is dropped (`DropAll`) or kept
//! at random, and each directory keeps a prefix of its unsynced operations (`Random`).
//! A file whose durable content is its live content is hard-linked, not copied.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::model::{apply, Entry, FileState, Kind, Model, Obj, Special, PAGE};
use super::points::CutMode;

/// What a reboot kept and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebootReport {
    pub files: u64,
    pub dirs: u64,
    /// Files linked unchanged (their live content was durable).
    pub files_unchanged: u64,
    pub pages_dropped: u64,
    pub pages_kept: u64,
    pub dir_ops_dropped: u64,
    pub dir_ops_kept: u64,
    /// Bytes of file data the cut took (live size or content that did not survive).
    pub bytes_lost: u64,
    /// Objects reachable twice (a directory both in its old and its new place): kept once.
    pub skipped: Vec<String>,
}

/// A small deterministic generator (xorshift64*).
struct Coin(u64);

impl Coin {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn flip(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

struct Materializer<'a> {
    model: &'a Model,
    coin: Option<Coin>,
    made: HashMap<Obj, PathBuf>,
    report: RebootReport,
}

/// Writes the durable state of `model` under the cut `mode` into `out` (created; must not
/// exist).
pub fn materialize(model: &Model, mode: CutMode, out: &Path) -> io::Result<RebootReport> {
    let mut m = Materializer {
        model,
        coin: match mode {
            CutMode::DropAll => None,
            CutMode::Random(seed) => Some(Coin(seed | 1)),
        },
        made: HashMap::new(),
        report: RebootReport::default(),
    };
    let root = model.root;
    fs::create_dir(out)?;
    if let Some(d) = model.dirs.get(&root) {
        fs::set_permissions(out, fs::Permissions::from_mode(d.mode & 0o7777))?;
    }
    m.made.insert(root, out.to_path_buf());
    m.dir(root, out)?;
    Ok(m.report)
}

impl Materializer<'_> {
    /// The entries of `dir` after the cut.
    fn entries(&mut self, dir: Obj) -> BTreeMap<OsString, Entry> {
        let Some(d) = self.model.dirs.get(&dir) else {
            return BTreeMap::new();
        };
        let mut entries = d.durable.clone();
        let keep = match &mut self.coin {
            None => 0,
            Some(c) => c.below(d.pending.len() as u64 + 1) as usize,
        };
        for op in &d.pending[..keep] {
            apply(&mut entries, op);
        }
        self.report.dir_ops_kept += keep as u64;
        self.report.dir_ops_dropped += (d.pending.len() - keep) as u64;
        entries
    }

    fn dir(&mut self, dir: Obj, path: &Path) -> io::Result<()> {
        self.report.dirs += 1;
        for (name, entry) in self.entries(dir) {
            let child = path.join(&name);
            if let Some(first) = self.made.get(&entry.obj) {
                if entry.kind == Kind::File {
                    fs::hard_link(first, &child)?;
                } else {
                    self.report.skipped.push(format!(
                        "{} (also at {})",
                        child.display(),
                        first.display()
                    ));
                }
                continue;
            }
            match entry.kind {
                Kind::Dir => {
                    fs::create_dir(&child)?;
                    if let Some(d) = self.model.dirs.get(&entry.obj) {
                        fs::set_permissions(&child, fs::Permissions::from_mode(d.mode & 0o7777))?;
                    }
                    self.made.insert(entry.obj, child.clone());
                    self.dir(entry.obj, &child)?;
                }
                Kind::File => {
                    match self.model.files.get(&entry.obj) {
                        Some(f) => self.file(f, &child)?,
                        None => {
                            File::create(&child)?;
                        }
                    }
                    self.made.insert(entry.obj, child);
                }
                Kind::Symlink => {
                    if let Some(Special::Symlink(target)) = self.model.specials.get(&entry.obj) {
                        std::os::unix::fs::symlink(target, &child)?;
                        self.made.insert(entry.obj, child);
                    }
                }
                Kind::Fifo => {
                    let mode = match self.model.specials.get(&entry.obj) {
                        Some(Special::Fifo(mode)) => *mode,
                        _ => 0o644,
                    };
                    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
                        child.as_os_str(),
                    ))
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                    // SAFETY: a valid C string.
                    if unsafe { libc::mkfifo(c.as_ptr(), mode & 0o7777) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    self.made.insert(entry.obj, child);
                }
            }
        }
        Ok(())
    }

    fn file(&mut self, f: &FileState, path: &Path) -> io::Result<()> {
        self.report.files += 1;
        let live = f.live_size()?;
        let size = match self.coin.as_mut().map(Coin::flip) {
            Some(true) => live,
            _ => f.durable_size,
        };
        if f.pre.is_empty() && f.lost.is_empty() && size == live && live == f.durable_size {
            let proc = PathBuf::from(format!("/proc/self/fd/{}", f.data.as_raw_fd()));
            // A file unlinked from the live tree cannot be linked again: copy it then.
            if link_following(&proc, path).is_ok() {
                self.report.files_unchanged += 1;
                return Ok(());
            }
        }
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode & 0o7777)
            .open(path)?;
        out.set_len(size)?;
        copy_range(&f.data, &out, size.min(live))?;
        // Pages the cut took back to their durable bytes.
        let restore = |page: u64, old: &[u8], out: &File| -> io::Result<()> {
            let from = page * PAGE;
            if from >= size {
                return Ok(());
            }
            let len = (size - from).min(PAGE) as usize;
            let mut bytes = vec![0u8; len];
            let n = old.len().min(len);
            bytes[..n].copy_from_slice(&old[..n]);
            out.write_all_at(&bytes, from)
        };
        for (page, old) in &f.pre {
            let keep = match &mut self.coin {
                Some(c) => c.flip(),
                None => false,
            };
            if keep {
                self.report.pages_kept += 1;
            } else {
                self.report.pages_dropped += 1;
                restore(*page, old, &out)?;
            }
        }
        for (page, old) in &f.lost {
            self.report.pages_dropped += 1;
            restore(*page, old, &out)?;
        }
        // Pages past the durable size hold what was written only if they reached the disk.
        if size > f.durable_size {
            let first = f.durable_size.div_ceil(PAGE);
            let last = size.div_ceil(PAGE);
            let zeros = vec![0u8; PAGE as usize];
            for page in first..last {
                let keep = match &mut self.coin {
                    Some(c) => c.flip(),
                    None => false,
                };
                if keep {
                    self.report.pages_kept += 1;
                } else {
                    self.report.pages_dropped += 1;
                    let from = page * PAGE;
                    let len = (size - from).min(PAGE) as usize;
                    out.write_all_at(&zeros[..len], from)?;
                }
            }
        }
        self.report.bytes_lost += live.saturating_sub(size);
        Ok(())
    }
}

/// `link(2)` of the file behind a /proc/self/fd link.
fn link_following(proc_link: &Path, new: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(proc_link.as_os_str().as_bytes())?;
    let b = std::ffi::CString::new(new.as_os_str().as_bytes())?;
    // SAFETY: valid C strings.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies bytes `0..len` of `from` to the same offsets of `to`.
fn copy_range(from: &File, to: &File, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        let want = ((len - off) as usize).min(buf.len());
        let n = from.read_at(&mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        to.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}
