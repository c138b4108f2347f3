//! Deleting snapshots in a random order under load, end to end on a real mount.
//!
//! A writer changes a small tree for the whole test: creates files, rewrites parts of them
//! (random offsets and lengths, and whole blocks), appends, truncates, rewrites them
//! wholly, renames files (also over others) and a directory, deletes files, makes and
//! removes symlinks, chmods, fsyncs now and then. It keeps a model of the tree.
//!
//! 1. 24 snapshots are taken while it runs (`strata snapshot create STORE NAME`, through
//!    the daemon). Each is walked right after its creation and recorded as a manifest
//!    (every path, its type, mode, size, blake3 of the contents per 64 KiB and whole,
//!    symlink targets); the manifest must equal the writer's model at the moment the
//!    snapshot was taken.
//! 2. With the writer still running, 20 of them are deleted in a random order; after each
//!    deletion `maintenance` runs (`strata flatten`, and `strata gc` every few deletions) and two random
//!    remaining snapshots are checked in full against their manifests. Meanwhile two
//!    readers keep checking random files of random remaining snapshots (whole files, or
//!    chunks read in two unaligned pieces). A snapshot about to be deleted is first
//!    withdrawn from the readers, and deleted once no reader is inside it, so every read
//!    error is a failure.
//! 3. The 4 snapshots kept and the live tree are checked in full with the writer stopped,
//!    `strata verify` runs mounted (through the daemon) and unmounted, and everything is
//!    checked again after a remount.
//!
//! Reads go to the daemon, not to the page cache: each file is opened afresh and its
//! cached pages dropped first (a strata mount keeps the page cache of files across opens).
//! `STRATA_TEST_SEED` replays the random choices of a run (the seed is printed first);
//! the interleaving of the threads is not replayed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strata_tests::cli::{env_u64, ok, s, snapshot_names};
use strata_tests::data::{compressible_bytes, Rng};
use strata_tests::{sys, TestStore};

/// Snapshots taken.
const SNAPSHOTS: usize = 24;
/// Snapshots never deleted.
const KEPT: usize = 4;
/// `strata gc` after every this many deletions.
const GC_EVERY: usize = 3;
/// Remaining snapshots checked in full after each deletion.
const FULL_CHECKS_PER_DELETION: usize = 2;
const READERS: usize = 2;
/// Files the writer keeps, give or take 4.
const FILES: usize = 20;
const SYMLINKS: usize = 4;
/// Largest size of a new file (partial writes past the end may grow one a little more).
const MAX_FILE: u64 = 3 << 20;
/// The store's block size (the default of `strata init`).
const BLOCK: u64 = 32 << 10;
/// Granularity of the manifests' checksums, to say where contents differ.
const CHUNK: usize = 64 << 10;
/// Fixed directories (mode 0755), made first.
const DIRS: [&str; 3] = ["a", "b", "b/c"];
/// The parents between which the directory `m` moves.
const MOVABLE_PARENTS: [&str; 3] = ["", "a", "b/c"];

// ------------------------------------------------------------------ manifests

/// What one path of a tree is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        size: u64,
        sum: blake3::Hash,
        chunks: Vec<blake3::Hash>,
    },
    Symlink {
        target: PathBuf,
    },
}

/// Relative path -> entry, for every path below a tree's root.
type Manifest = BTreeMap<String, Entry>;

fn file_entry(mode: u32, data: &[u8]) -> Entry {
    Entry::File {
        mode,
        size: data.len() as u64,
        sum: blake3::hash(data),
        chunks: data.chunks(CHUNK).map(blake3::hash).collect(),
    }
}

fn describe(entry: &Entry) -> String {
    match entry {
        Entry::Dir { mode } => format!("directory, mode {mode:o}"),
        Entry::File {
            mode, size, sum, ..
        } => format!("file, mode {mode:o}, {size} bytes, blake3 {}", short(sum)),
        Entry::Symlink { target } => format!("symlink -> {}", target.display()),
    }
}

fn short(hash: &blake3::Hash) -> String {
    hash.to_hex()[..16].to_string()
}

/// How `got` differs from `expected`, in one line.
fn entry_difference(expected: &Entry, got: &Entry) -> String {
    if let (
        Entry::File {
            mode: em,
            size: es,
            sum: esum,
            chunks: ec,
        },
        Entry::File {
            mode: gm,
            size: gs,
            sum: gsum,
            chunks: gc,
        },
    ) = (expected, got)
    {
        let mut parts = Vec::new();
        if em != gm {
            parts.push(format!("mode {gm:o}, expected {em:o}"));
        }
        if es != gs {
            parts.push(format!("size {gs}, expected {es}"));
        }
        if let Some(i) = (0..ec.len().max(gc.len())).find(|&i| ec.get(i) != gc.get(i)) {
            let hex = |h: Option<&blake3::Hash>| h.map_or("(none)".to_string(), short);
            parts.push(format!(
                "contents differ from offset {} (the {CHUNK}-byte chunk {i} of {}: blake3 {}, \
                 expected {}; whole file blake3 {}, expected {})",
                i * CHUNK,
                ec.len(),
                hex(gc.get(i)),
                hex(ec.get(i)),
                short(gsum),
                short(esum)
            ));
        }
        return parts.join("; ");
    }
    format!("{}, expected {}", describe(got), describe(expected))
}

/// The differences between a tree as read (`got`) and `expected`, one line each.
fn differences(expected: &Manifest, got: &Manifest) -> Vec<String> {
    let paths: BTreeSet<&String> = expected.keys().chain(got.keys()).collect();
    paths
        .into_iter()
        .filter_map(|path| match (expected.get(path), got.get(path)) {
            (Some(e), None) => Some(format!("{path}: missing (expected {})", describe(e))),
            (None, Some(g)) => Some(format!("{path}: not expected, found {}", describe(g))),
            (Some(e), Some(g)) if e != g => Some(format!("{path}: {}", entry_difference(e, g))),
            _ => None,
        })
        .collect()
}

/// The whole contents of `path`, read from the filesystem, not from the page cache.
fn read_uncached(path: &Path) -> Result<Vec<u8>, String> {
    let mut file = File::open(path).map_err(|e| format!("{}: open: {e}", path.display()))?;
    sys::drop_page_cache(&file).map_err(|e| format!("{}: fadvise: {e}", path.display()))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| format!("{}: read: {e}", path.display()))?;
    Ok(data)
}

/// The entry at `path` as the filesystem shows it now.
fn read_entry(path: &Path) -> Result<Entry, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("{}: lstat: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o7777;
    let kind = meta.file_type();
    if kind.is_dir() {
        Ok(Entry::Dir { mode })
    } else if kind.is_symlink() {
        let target =
            fs::read_link(path).map_err(|e| format!("{}: readlink: {e}", path.display()))?;
        Ok(Entry::Symlink { target })
    } else if kind.is_file() {
        let data = read_uncached(path)?;
        if data.len() as u64 != meta.len() {
            return Err(format!(
                "{}: stat says {} bytes, reading it gave {}",
                path.display(),
                meta.len(),
                data.len()
            ));
        }
        Ok(file_entry(mode, &data))
    } else {
        Err(format!("{}: unexpected file type {kind:?}", path.display()))
    }
}

/// Walks the tree below `root` (not following symlinks) and reads everything in it.
fn walk(root: &Path) -> Result<Manifest, String> {
    fn walk_into(root: &Path, dir: &Path, out: &mut Manifest) -> Result<(), String> {
        let entries = fs::read_dir(dir).map_err(|e| format!("{}: opendir: {e}", dir.display()))?;
        for entry in entries {
            let path = entry
                .map_err(|e| format!("{}: readdir: {e}", dir.display()))?
                .path();
            let entry = read_entry(&path)?;
            let is_dir = matches!(entry, Entry::Dir { .. });
            let relative = path.strip_prefix(root).expect("below the root");
            out.insert(relative.to_str().expect("utf-8 name").to_string(), entry);
            if is_dir {
                walk_into(root, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = Manifest::new();
    walk_into(root, root, &mut out)?;
    Ok(out)
}

/// Reads the whole tree at `root` and compares it with `expected`: an error lists the
/// differences (at most 20).
fn check_tree(root: &Path, expected: &Manifest) -> Result<(), String> {
    let got = walk(root)?;
    let diffs = differences(expected, &got);
    if diffs.is_empty() {
        return Ok(());
    }
    let shown = diffs.len().min(20);
    Err(format!(
        "{} of {} paths differ{}:\n  {}",
        diffs.len(),
        expected.len().max(got.len()),
        if shown < diffs.len() {
            format!(" (first {shown})")
        } else {
            String::new()
        },
        diffs[..shown].join("\n  ")
    ))
}

/// Checks one path of a snapshot against its manifest entry: a whole file, or (for half
/// of the files) three random chunks, each read in two pieces split at a random offset.
fn check_path(root: &Path, relative: &str, expected: &Entry, rng: &mut Rng) -> Result<(), String> {
    let path = root.join(relative);
    let Entry::File { size, chunks, .. } = expected else {
        let got = read_entry(&path)?;
        return if got == *expected {
            Ok(())
        } else {
            Err(format!("{relative}: {}", entry_difference(expected, &got)))
        };
    };
    if chunks.is_empty() || rng.range(0, 2) == 0 {
        let got = read_entry(&path)?;
        return if got == *expected {
            Ok(())
        } else {
            Err(format!("{relative}: {}", entry_difference(expected, &got)))
        };
    }
    let file = File::open(&path).map_err(|e| format!("{relative}: open: {e}"))?;
    sys::drop_page_cache(&file).map_err(|e| format!("{relative}: fadvise: {e}"))?;
    for _ in 0..3 {
        let i = rng.range(0, chunks.len() as u64) as usize;
        let start = (i * CHUNK) as u64;
        let len = (*size - start).min(CHUNK as u64) as usize;
        let split = rng.range(0, len as u64 + 1) as usize;
        let mut data = vec![0u8; len];
        let (first, second) = data.split_at_mut(split);
        file.read_exact_at(first, start)
            .and_then(|()| file.read_exact_at(second, start + split as u64))
            .map_err(|e| {
                format!("{relative}: reading {len} bytes at {start} (split at +{split}): {e}")
            })?;
        let got = blake3::hash(&data);
        if got != chunks[i] {
            return Err(format!(
                "{relative}: the {len} bytes at offset {start} (chunk {i}, read in two pieces \
                 split at +{split}) have blake3 {}, expected {}",
                short(&got),
                short(&chunks[i])
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ the writer's model

#[derive(Clone, Debug)]
enum Node {
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// The tree as the writer made it: every change is applied here once the filesystem
/// acknowledged it, under the same lock, so at any moment the lock is free the model is
/// exactly what the mount holds.
#[derive(Clone, Debug, Default)]
struct Model {
    /// Directories other than the root.
    dirs: BTreeSet<String>,
    nodes: BTreeMap<String, Node>,
    /// Where the movable directory `m` is now.
    movable: String,
    next_name: u64,
}

impl Model {
    fn manifest(&self) -> Manifest {
        let mut out: Manifest = self
            .dirs
            .iter()
            .map(|d| (d.clone(), Entry::Dir { mode: 0o755 }))
            .collect();
        for (path, node) in &self.nodes {
            let entry = match node {
                Node::File { data, mode } => file_entry(*mode, data),
                Node::Symlink(target) => Entry::Symlink {
                    target: PathBuf::from(target),
                },
            };
            out.insert(path.clone(), entry);
        }
        out
    }

    fn files(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n, Node::File { .. }))
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn symlinks(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n, Node::Symlink(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// A new path `DIR/PREFIXn` in a random directory.
    fn new_path(&mut self, prefix: &str, rng: &mut Rng) -> String {
        let dirs: Vec<&String> = self.dirs.iter().collect();
        let pick = rng.range(0, dirs.len() as u64 + 1) as usize;
        let name = format!("{prefix}{}", self.next_name);
        self.next_name += 1;
        match dirs.get(pick) {
            Some(dir) => format!("{dir}/{name}"),
            None => name,
        }
    }

    fn data_mut(&mut self, path: &str) -> &mut Vec<u8> {
        match self.nodes.get_mut(path) {
            Some(Node::File { data, .. }) => data,
            other => panic!("model: {path} is not a file: {other:?}"),
        }
    }
}

fn pick<'a>(items: &'a [String], rng: &mut Rng) -> &'a str {
    &items[rng.range(0, items.len() as u64) as usize]
}

fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.range(0, i as u64 + 1) as usize);
    }
}

/// A size for a new file: mostly small, some up to MAX_FILE.
fn random_size(rng: &mut Rng) -> u64 {
    match rng.range(0, 20) {
        0..=9 => rng.range(0, 64 << 10),
        10..=16 => rng.range(64 << 10, 1 << 20),
        _ => rng.range(1 << 20, MAX_FILE + 1),
    }
}

/// `len` bytes: incompressible, compressible text or zeros.
fn random_data(rng: &mut Rng, len: u64) -> Vec<u8> {
    let len = len as usize;
    match rng.range(0, 10) {
        0..=5 => {
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            data
        }
        6..=8 => compressible_bytes(rng.next_u64(), len),
        _ => vec![0u8; len],
    }
}

/// `data` written at `offset` of `file` (zeros fill a gap past the end).
fn splice(file: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let (offset, end) = (offset as usize, offset as usize + data.len());
    if file.len() < end {
        file.resize(end, 0);
    }
    file[offset..end].copy_from_slice(data);
}

fn create_file(mnt: &Path, model: &mut Model, path: String, rng: &mut Rng) -> Result<(), String> {
    let size = random_size(rng);
    let data = random_data(rng, size);
    let full = mnt.join(&path);
    let mut file = File::create(&full).map_err(|e| format!("create {path}: {e}"))?;
    file.write_all(&data)
        .map_err(|e| format!("write {} bytes to new {path}: {e}", data.len()))?;
    fs::set_permissions(&full, fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("chmod {path}: {e}"))?;
    if rng.range(0, 4) == 0 {
        file.sync_all().map_err(|e| format!("fsync {path}: {e}"))?;
    }
    model.nodes.insert(path, Node::File { data, mode: 0o644 });
    Ok(())
}

/// The fixed directories, `m`, and FILES files.
fn populate(mnt: &Path, rng: &mut Rng) -> Model {
    let mut model = Model::default();
    for dir in DIRS.iter().chain(&["m"]) {
        fs::create_dir(mnt.join(dir)).unwrap_or_else(|e| panic!("mkdir {dir}: {e}"));
        fs::set_permissions(mnt.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
        model.dirs.insert(dir.to_string());
    }
    model.movable = "m".to_string();
    for _ in 0..FILES {
        let path = model.new_path("f", rng);
        create_file(mnt, &mut model, path, rng).unwrap();
    }
    model
}

/// One random change of the tree, applied to the mount and then to the model; an error
/// says which operation failed on which path.
fn change(mnt: &Path, model: &mut Model, rng: &mut Rng) -> Result<(), String> {
    let files = model.files();
    let sync = rng.range(0, 4) == 0;
    let open_rw = |path: &str| {
        OpenOptions::new()
            .write(true)
            .open(mnt.join(path))
            .map_err(|e| format!("open {path}: {e}"))
    };
    let fsync = |file: &File, path: &str| -> Result<(), String> {
        if sync {
            file.sync_all().map_err(|e| format!("fsync {path}: {e}"))?;
        }
        Ok(())
    };
    let mut op = rng.range(0, 100);
    if files.len() < FILES - 4 {
        op = 0; // create
    } else if files.len() > FILES + 4 && op < 8 {
        op = 8; // delete
    }
    match op {
        // Create a file.
        0..=7 => {
            let path = model.new_path("f", rng);
            create_file(mnt, model, path, rng)
        }
        // Delete one.
        8..=13 => {
            let path = pick(&files, rng).to_string();
            fs::remove_file(mnt.join(&path)).map_err(|e| format!("unlink {path}: {e}"))?;
            model.nodes.remove(&path);
            Ok(())
        }
        // Write a few bytes to 64 KiB at a random offset (up to 16 KiB past the end).
        14..=35 => {
            let path = pick(&files, rng).to_string();
            let size = model.data_mut(&path).len() as u64;
            let offset = rng.range(0, size + (16 << 10) + 1);
            let len = rng.range(1, (64 << 10) + 1);
            let data = random_data(rng, len);
            let file = open_rw(&path)?;
            file.write_all_at(&data, offset)
                .map_err(|e| format!("write {} bytes at {offset} of {path}: {e}", data.len()))?;
            fsync(&file, &path)?;
            splice(model.data_mut(&path), offset, &data);
            Ok(())
        }
        // Rewrite one or two whole blocks (or add them at the end).
        36..=53 => {
            let path = pick(&files, rng).to_string();
            let blocks = (model.data_mut(&path).len() as u64).div_ceil(BLOCK);
            let offset = rng.range(0, blocks + 1) * BLOCK;
            let len = rng.range(1, 3) * BLOCK;
            let data = random_data(rng, len);
            let file = open_rw(&path)?;
            file.write_all_at(&data, offset).map_err(|e| {
                format!(
                    "write blocks ({} bytes) at {offset} of {path}: {e}",
                    data.len()
                )
            })?;
            fsync(&file, &path)?;
            splice(model.data_mut(&path), offset, &data);
            Ok(())
        }
        // Append up to 128 KiB.
        54..=63 => {
            let path = pick(&files, rng).to_string();
            if model.data_mut(&path).len() as u64 >= MAX_FILE {
                return Ok(());
            }
            let len = rng.range(1, (128 << 10) + 1);
            let data = random_data(rng, len);
            let mut file = OpenOptions::new()
                .append(true)
                .open(mnt.join(&path))
                .map_err(|e| format!("open {path} to append: {e}"))?;
            file.write_all(&data)
                .map_err(|e| format!("append {} bytes to {path}: {e}", data.len()))?;
            fsync(&file, &path)?;
            model.data_mut(&path).extend_from_slice(&data);
            Ok(())
        }
        // Truncate, shorter or longer.
        64..=71 => {
            let path = pick(&files, rng).to_string();
            let size = model.data_mut(&path).len() as u64;
            let new_size = rng.range(0, size + (64 << 10) + 1);
            let file = open_rw(&path)?;
            file.set_len(new_size)
                .map_err(|e| format!("truncate {path} from {size} to {new_size}: {e}"))?;
            fsync(&file, &path)?;
            model.data_mut(&path).resize(new_size as usize, 0);
            Ok(())
        }
        // Rewrite a file wholly (O_TRUNC).
        72..=75 => {
            let path = pick(&files, rng).to_string();
            let size = random_size(rng);
            let data = random_data(rng, size);
            let mut file =
                File::create(mnt.join(&path)).map_err(|e| format!("open {path} O_TRUNC: {e}"))?;
            file.write_all(&data)
                .map_err(|e| format!("rewrite {path} with {} bytes: {e}", data.len()))?;
            fsync(&file, &path)?;
            *model.data_mut(&path) = data;
            Ok(())
        }
        // Rename a file: to a new name, or over another file.
        76..=85 => {
            let from = pick(&files, rng).to_string();
            let to = if rng.range(0, 3) == 0 {
                pick(&files, rng).to_string()
            } else {
                model.new_path("f", rng)
            };
            if from == to {
                return Ok(());
            }
            fs::rename(mnt.join(&from), mnt.join(&to))
                .map_err(|e| format!("rename {from} -> {to}: {e}"))?;
            let node = model.nodes.remove(&from).expect("in the model");
            model.nodes.insert(to, node);
            Ok(())
        }
        // Make a symlink (dangling or not), or remove one.
        86..=90 => {
            let links = model.symlinks();
            if links.len() < SYMLINKS && rng.range(0, 3) > 0 {
                let path = model.new_path("l", rng);
                let target = if rng.range(0, 2) == 0 {
                    format!("../{}", pick(&files, rng))
                } else {
                    format!("nowhere/{}", rng.next_u64())
                };
                std::os::unix::fs::symlink(&target, mnt.join(&path))
                    .map_err(|e| format!("symlink {path} -> {target}: {e}"))?;
                model.nodes.insert(path, Node::Symlink(target));
            } else if !links.is_empty() {
                let path = pick(&links, rng).to_string();
                fs::remove_file(mnt.join(&path)).map_err(|e| format!("unlink {path}: {e}"))?;
                model.nodes.remove(&path);
            }
            Ok(())
        }
        // chmod.
        91..=95 => {
            let path = pick(&files, rng).to_string();
            let mode = [0o644, 0o600, 0o755, 0o640][rng.range(0, 4) as usize];
            fs::set_permissions(mnt.join(&path), fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {mode:o} {path}: {e}"))?;
            if let Some(Node::File { mode: m, .. }) = model.nodes.get_mut(&path) {
                *m = mode;
            }
            Ok(())
        }
        // Move the directory `m`, with what it holds, to another parent.
        _ => {
            let from = model.movable.clone();
            let parents: Vec<&str> = MOVABLE_PARENTS
                .iter()
                .copied()
                .filter(|p| Path::new(p).join("m") != Path::new(&from))
                .collect();
            let parent = parents[rng.range(0, parents.len() as u64) as usize];
            let to = Path::new(parent).join("m").to_str().unwrap().to_string();
            fs::rename(mnt.join(&from), mnt.join(&to))
                .map_err(|e| format!("rename directory {from} -> {to}: {e}"))?;
            let prefix = format!("{from}/");
            let moved: Vec<String> = model
                .nodes
                .keys()
                .filter(|p| p.starts_with(&prefix))
                .cloned()
                .collect();
            for path in moved {
                let node = model.nodes.remove(&path).unwrap();
                model
                    .nodes
                    .insert(format!("{to}/{}", &path[prefix.len()..]), node);
            }
            model.dirs.remove(&from);
            model.dirs.insert(to.clone());
            model.movable = to;
            Ok(())
        }
    }
}

// ------------------------------------------------------------------ the threads

/// What the main thread, the writer and the readers share.
struct Shared {
    seed: u64,
    stop: AtomicBool,
    /// The writer's model; held while a snapshot is taken, so the snapshot is the model.
    model: Mutex<Model>,
    /// The snapshots the readers may read.
    readable: Mutex<Readable>,
    /// Signalled when a reader leaves a snapshot.
    left: Condvar,
    failures: Mutex<Vec<String>>,
    writer_changes: AtomicU64,
    reader_checks: AtomicU64,
}

#[derive(Default)]
struct Readable {
    manifests: BTreeMap<String, Arc<Manifest>>,
    /// Readers inside each snapshot.
    inside: HashMap<String, usize>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn fail(&self, failure: String) {
        lock(&self.failures).push(failure);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Panics with every failure the threads reported, and `context`.
    #[track_caller]
    fn check(&self, context: &dyn Fn() -> String) {
        let failures = lock(&self.failures).clone();
        if !failures.is_empty() {
            panic!(
                "STRATA_TEST_SEED={}: {} failure(s):\n{}\n{}",
                self.seed,
                failures.len(),
                failures.join("\n"),
                context()
            );
        }
    }

    fn publish(&self, name: &str, manifest: Arc<Manifest>) {
        lock(&self.readable)
            .manifests
            .insert(name.to_string(), manifest);
    }

    /// Takes `name` away from the readers and waits until none is inside it.
    fn withdraw(&self, name: &str) {
        let mut readable = lock(&self.readable);
        readable.manifests.remove(name);
        while readable.inside.get(name).is_some_and(|n| *n > 0) {
            readable = self
                .left
                .wait(readable)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A reader inside a snapshot; leaves it on drop.
struct Inside<'a> {
    shared: &'a Shared,
    name: String,
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let mut readable = lock(&self.shared.readable);
        if let Some(n) = readable.inside.get_mut(&self.name) {
            *n -= 1;
        }
        drop(readable);
        self.shared.left.notify_all();
    }
}

fn writer(shared: &Shared, mnt: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    while !shared.stop.load(Ordering::SeqCst) {
        let result = change(mnt, &mut lock(&shared.model), &mut rng);
        if let Err(err) = result {
            shared.fail(format!("writer (live tree): {err}"));
            return;
        }
        shared.writer_changes.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(rng.range(0, 3)));
    }
}

fn reader(shared: &Shared, mnt: &Path, id: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    while !shared.stop.load(Ordering::SeqCst) {
        let entered = {
            let mut readable = lock(&shared.readable);
            let count = readable.manifests.len() as u64;
            if count == 0 {
                None
            } else {
                let i = rng.range(0, count) as usize;
                let (name, manifest) = readable.manifests.iter().nth(i).unwrap();
                let (name, manifest) = (name.clone(), manifest.clone());
                *readable.inside.entry(name.clone()).or_default() += 1;
                Some((
                    Inside {
                        shared,
                        name: name.clone(),
                    },
                    manifest,
                ))
            }
        };
        let Some((inside, manifest)) = entered else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let root = mnt.join(".snapshots").join(&inside.name);
        let paths: Vec<&String> = manifest.keys().collect();
        for _ in 0..3 {
            let path = paths[rng.range(0, paths.len() as u64) as usize];
            if let Err(err) = check_path(&root, path, &manifest[path], &mut rng) {
                shared.fail(format!(
                    "reader {id}: snapshot {} (not being deleted): {err}",
                    inside.name
                ));
                return;
            }
            shared.reader_checks.fetch_add(1, Ordering::Relaxed);
        }
        drop(inside);
        std::thread::sleep(Duration::from_millis(rng.range(0, 4)));
    }
}

/// The writer and the readers; Drop stops and joins them (also when the test panics,
/// before the mount goes away).
struct Workers {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    fn start(shared: &Arc<Shared>, mnt: &Path, seed: u64) -> Workers {
        let mut handles = Vec::new();
        let (s, m) = (shared.clone(), mnt.to_path_buf());
        handles.push(std::thread::spawn(move || writer(&s, &m, seed ^ 0x57)));
        for id in 0..READERS {
            let (s, m) = (shared.clone(), mnt.to_path_buf());
            let reader_seed = seed ^ (0x1000 + id as u64);
            handles.push(std::thread::spawn(move || reader(&s, &m, id, reader_seed)));
        }
        Workers {
            shared: shared.clone(),
            handles,
        }
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for handle in self.handles.drain(..) {
            if handle.join().is_err() {
                self.shared.fail("a worker thread panicked".to_string());
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------------ the test

/// Store maintenance after the `deleted`-th deletion; returns the output of each command
/// it ran: `strata flatten` every time, `strata gc` every GC_EVERY deletions.
fn maintenance(store: &str, deleted: usize) -> Vec<String> {
    // The daemon flattens by itself after each deletion; this one waits for it.
    let mut ran = vec![ok(&["flatten", store])];
    if deleted.is_multiple_of(GC_EVERY) {
        ran.push(ok(&["gc", store]));
    }
    ran
}

/// Checks every snapshot of `manifests` in full, and the live tree against `live`.
fn check_everything(
    mnt: &Path,
    manifests: &BTreeMap<String, Arc<Manifest>>,
    live: &Manifest,
    when: &str,
    seed: u64,
) {
    for (name, manifest) in manifests {
        if let Err(err) = check_tree(&mnt.join(".snapshots").join(name), manifest) {
            panic!("STRATA_TEST_SEED={seed}: {when}: snapshot {name}: {err}");
        }
    }
    if let Err(err) = check_tree(mnt, live) {
        panic!(
            "STRATA_TEST_SEED={seed}: {when}: the live tree differs from what was written: {err}"
        );
    }
}

#[test]
fn deleting_snapshots_in_random_order_under_load_keeps_the_others_intact() {
    let seed = env_u64("STRATA_TEST_SEED").unwrap_or_else(Rng::seed_from_time);
    eprintln!("snapshot_delete_random: STRATA_TEST_SEED={seed}");
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let ts = TestStore::new();
    let store = s(&ts.store).to_string();
    let mnt = ts.mnt.clone();
    let mount = ts.mount();
    let model = populate(&mnt, &mut rng);
    let shared = Arc::new(Shared {
        seed,
        stop: AtomicBool::new(false),
        model: Mutex::new(model),
        readable: Mutex::default(),
        left: Condvar::new(),
        failures: Mutex::default(),
        writer_changes: AtomicU64::new(0),
        reader_checks: AtomicU64::new(0),
    });
    let mut workers = Workers::start(&shared, &mnt, seed);
    // What happened so far, for the failure reports.
    let mut history: Vec<String> = Vec::new();
    let report = |history: &[String]| format!("history: {}", history.join(", "));

    // 1. Snapshots while the writer runs, each recorded and checked against the model.
    let mut manifests: BTreeMap<String, Arc<Manifest>> = BTreeMap::new();
    for i in 0..SNAPSHOTS {
        std::thread::sleep(Duration::from_millis(rng.range(50, 250)));
        let name = format!("s{i:02}");
        let model = {
            let model = lock(&shared.model);
            ok(&["snapshot", "create", &store, &name]);
            model.clone()
        };
        let root = mnt.join(".snapshots").join(&name);
        let manifest = walk(&root).unwrap_or_else(|err| {
            panic!("STRATA_TEST_SEED={seed}: snapshot {name} just created: {err}")
        });
        let diffs = differences(&model.manifest(), &manifest);
        assert!(
            diffs.is_empty(),
            "STRATA_TEST_SEED={seed}: snapshot {name}, read right after its creation, is not \
             the tree the writer had written when it was taken:\n  {}",
            diffs.join("\n  ")
        );
        let manifest = Arc::new(manifest);
        shared.publish(&name, manifest.clone());
        manifests.insert(name.clone(), manifest);
        history.push(format!("created {name}"));
        shared.check(&|| report(&history));
    }
    let created_in = started.elapsed();
    let files: Vec<usize> = manifests.values().map(|m| m.len()).collect();
    eprintln!(
        "{SNAPSHOTS} snapshots in {created_in:.1?} ({} to {} paths each), {} writer changes",
        files.iter().min().unwrap(),
        files.iter().max().unwrap(),
        shared.writer_changes.load(Ordering::Relaxed)
    );

    // 2. Deletions in a random order, the writer and the readers still running.
    let mut order: Vec<String> = manifests.keys().cloned().collect();
    shuffle(&mut order, &mut rng);
    let kept: BTreeSet<String> = order.drain(..KEPT).collect();
    eprintln!("keeping {kept:?}; deleting in this order: {order:?}");
    for (n, name) in order.iter().enumerate() {
        shared.withdraw(name);
        let out = ok(&["snapshot", "delete", &store, name]);
        manifests.remove(name);
        history.push(format!("deleted {name}"));
        let names = snapshot_names(&store);
        assert!(
            !names.contains(name),
            "STRATA_TEST_SEED={seed}: {name} still listed after `snapshot delete` said: {out}"
        );
        let listed: BTreeSet<String> = names.into_iter().collect();
        let expected: BTreeSet<String> = manifests.keys().cloned().collect();
        assert_eq!(
            listed,
            expected,
            "STRATA_TEST_SEED={seed}: snapshot list; {}",
            report(&history)
        );
        match fs::symlink_metadata(mnt.join(".snapshots").join(name)) {
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            other => {
                panic!("STRATA_TEST_SEED={seed}: .snapshots/{name} after its deletion: {other:?}")
            }
        }
        for out in maintenance(&store, n + 1) {
            eprintln!("after deletion {}: {}", n + 1, out.trim_end());
            history.push(out.trim_end().to_string());
        }
        let mut remaining: Vec<String> = manifests.keys().cloned().collect();
        shuffle(&mut remaining, &mut rng);
        for check in remaining.iter().take(FULL_CHECKS_PER_DELETION) {
            if let Err(err) = check_tree(&mnt.join(".snapshots").join(check), &manifests[check]) {
                panic!(
                    "STRATA_TEST_SEED={seed}: snapshot {check}, checked in full after deletion \
                     {} ({name}): {err}\n{}",
                    n + 1,
                    report(&history)
                );
            }
        }
        shared.check(&|| report(&history));
    }
    eprintln!(
        "{} deletions done at {:.1?}; {} writer changes, {} reader checks so far",
        order.len(),
        started.elapsed(),
        shared.writer_changes.load(Ordering::Relaxed),
        shared.reader_checks.load(Ordering::Relaxed)
    );

    // 3. Writer stopped: everything in full, verify mounted, unmounted, after a remount.
    workers.stop();
    shared.check(&|| report(&history));
    let live = lock(&shared.model).manifest();
    assert_eq!(
        manifests.keys().cloned().collect::<BTreeSet<_>>(),
        kept,
        "the snapshots left"
    );
    check_everything(&mnt, &manifests, &live, "writer stopped", seed);
    ts.assert_verify_clean();
    mount.unmount();
    ts.assert_verify_clean();
    let mount = ts.mount();
    check_everything(&mnt, &manifests, &live, "after a remount", seed);
    mount.unmount();
    eprintln!(
        "done in {:.1?}: {} writer changes, {} reader checks, {} paths live",
        started.elapsed(),
        shared.writer_changes.load(Ordering::Relaxed),
        shared.reader_checks.load(Ordering::Relaxed),
        live.len()
    );
}
