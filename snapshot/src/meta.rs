//! The metadata store: the one module that speaks to sled.
//!
//! Owns the sled database (`STORE/meta/`) and, above it, the *overlay*: every change made
//! since the last commit, as raw key → value (`None` = remove the key). Reads merge the
//! overlay over sled, so callers see their own changes at once; `commit` writes the
//! whole overlay as one atomic sled batch, flushes, and fsyncs sled's files. A crash
//! therefore always recovers the state of some commit: never half a rename, never a
//! block map without its inode.
//!
//! Versioned records (see `keys`) are read "as of" the live generation: the newest
//! version written by the live generation or its nearest ancestor wins; a tombstone
//! hides the record. The overlay only ever holds versions of the live generation (and
//! unversioned keys).
//!
//! Invariant: callers hold the store's state mutex around every call (the overlay is
//! plain data); sled itself is thread-safe and is also read by the blockstore.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::codec::{PRESENT, TOMBSTONE};
use crate::error::{Error, Result};
use crate::generation::View;
use crate::keys::{self, GEN_SUFFIX_LEN};
use crate::types::GenerationId;

mod overlay;
mod read_index;

#[cfg(test)]
pub(crate) use read_index::MAX_WALK;

pub const META_DIR: &str = "meta";
pub(crate) const TREE: &str = "meta";
pub const BLOCK_INDEX_TREE: &str = "blocks";

/// One stored version of a record: base key, generation, payload (None: tombstone).
pub type Version = (Vec<u8>, GenerationId, Option<Vec<u8>>);

pub struct Meta {
    db: sled::Db,
    tree: sled::Tree,
    view: View,
    overlay: overlay::Overlay,
    flusher: Flusher,
    /// Tells the background warm-up (`warm_trees`) to stop: set when this handle
    /// goes, so the warm-up never keeps sled (and its lock) open after the store closes.
    warming: Arc<std::sync::atomic::AtomicBool>,
    /// Disconnected when the warm-up ends (`take_warm_done`).
    warm_done: Option<std::sync::mpsc::Receiver<()>>,
}

impl Drop for Meta {
    fn drop(&mut self) {
        // sled's own closing flush panics when its fsync fails (`abandon`): on a disk
        // that fails fsyncs, it must not run.
        let db = self.flusher.dir.join("db");
        if std::fs::File::open(&db).and_then(|f| f.sync_all()).is_err() {
            tracing::warn!(path = %db.display(), "cannot fsync sled's log at close; leaving it as it is");
            self.abandon();
        }
        self.warming
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.flusher
            .nudge
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Makes everything sled holds durable (flush, then fsync of `meta/`) without a
/// `&mut Meta`: gc commits its index changes through a clone while file operations go
/// on (the state lock is not held). Clones share one `TreeSyncer`; a flush runs under
/// its mutex, so two flushes never interleave.
#[derive(Clone)]
pub struct Flusher {
    db: sled::Db,
    dir: PathBuf,
    syncer: Arc<Mutex<crate::durable::TreeSyncer>>,
    nudge: Arc<Nudge>,
}

impl Flusher {
    /// Flushes sled (including anything the blockstore inserted into its index) and
    /// fsyncs its files and directory.
    pub fn flush(&self) -> Result<()> {
        let mut syncer = self.syncer.lock().unwrap_or_else(|p| p.into_inner());
        self.nudge.watch(&self.db);
        let flushed = self.db.flush();
        self.nudge.done();
        flushed?;
        syncer.sync(&self.dir)
    }
}

/// How long a sled flush may wait before the nudger wakes it.
const NUDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// Works around a lost wakeup in sled 0.34.7: when a background write of its log fails
/// (`Logger::exit_reservation`), sled records the error but does not wake the flushes
/// waiting for that write, so a flush waits forever (found by the I/O-fault tests: an
/// EIO on a write of `meta/db` hung every later request). While a flush has been waiting
/// longer than `NUDGE_AFTER`, a thread starts another flush every `NUDGE_AFTER`: with the
/// error recorded it returns at once and wakes every waiter, which then return the error
/// (otherwise it waits like the first and returns with it). The nudging thread itself
/// never waits on sled.
#[derive(Default)]
struct Nudge {
    /// When the flush under way started (ms since `epoch`), 0: none.
    since_ms: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
    /// The nudging thread is running.
    started: std::sync::atomic::AtomicBool,
    /// Tells the nudging thread to end (the handle is closed).
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Nudge {
    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(std::time::Instant::now);
        epoch.elapsed().as_millis() as u64 + 1
    }

    fn watch(self: &Arc<Self>, db: &sled::Db) {
        use std::sync::atomic::Ordering;
        self.since_ms.store(self.now_ms(), Ordering::Release);
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::downgrade(self);
        let stop = self.stop.clone();
        let db = db.clone();
        let spawned = std::thread::Builder::new()
            .name("strata-sled-nudge".into())
            .spawn(move || loop {
                // Short steps: a closed store's sled (and its lock) goes with this thread.
                for _ in 0..10 {
                    std::thread::sleep(NUDGE_AFTER / 10);
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                }
                let Some(nudge) = me.upgrade() else { return };
                let since = nudge.since_ms.load(Ordering::Acquire);
                if since == 0 || nudge.now_ms() - since < NUDGE_AFTER.as_millis() as u64 {
                    continue;
                }
                let db = db.clone();
                let _ = std::thread::Builder::new()
                    .name("strata-sled-wake".into())
                    .spawn(move || {
                        let _ = db.flush();
                    });
            });
        if spawned.is_err() {
            self.started.store(false, Ordering::Release);
        }
    }

    fn done(&self) {
        self.since_ms.store(0, std::sync::atomic::Ordering::Release);
    }
}

impl Meta {
    /// The signal of the warm-up's end (a disconnect), once; `None` if no
    /// warm-up runs or it was taken.
    pub(crate) fn take_warm_done(&mut self) -> Option<std::sync::mpsc::Receiver<()>> {
        self.warm_done.take()
    }

    pub fn open(store: &Path) -> Result<Meta> {
        let dir = store.join(META_DIR);
        let db = crate::meta_compact::open(store, &open_sled)?;
        let tree = db.open_tree(TREE)?;
        let warming = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let warm_done = if prewarm(&dir) {
            warm_trees(
                vec![db.open_tree(BLOCK_INDEX_TREE)?, tree.clone()],
                warming.clone(),
            )
        } else {
            None
        };
        let flusher = Flusher {
            db: db.clone(),
            dir,
            syncer: Default::default(),
            nudge: Default::default(),
        };
        let mut meta = Meta {
            db,
            tree,
            view: View {
                gen: GenerationId(0),
                ancestors: Default::default(),
            },
            overlay: Default::default(),
            flusher,
            warming,
            warm_done,
        };
        meta.build_read_index()?;
        Ok(meta)
    }

    /// Makes sure sled never runs its closing flush: after the store could not make
    /// data durable, sled's `Drop` would flush and fsync again and panic when that fails
    /// (`sync_all().unwrap()` in sled 0.34.7's `Log::drop`). One handle of the database
    /// is leaked: its files close with the process. Nothing is lost that was durable.
    pub fn abandon(&mut self) {
        std::mem::forget(self.db.clone());
    }

    /// The sled tree that the blockstore keeps its index in.
    pub fn block_index_tree(&self) -> Result<sled::Tree> {
        Ok(self.db.open_tree(BLOCK_INDEX_TREE)?)
    }

    /// Sets the generation that reads are made as of and writes go to (writes only ever
    /// go to a live generation: the callers check).
    pub fn set_view(&mut self, view: &View) {
        if self.view.gen != view.gen
            || !std::sync::Arc::ptr_eq(&self.view.ancestors, &view.ancestors)
        {
            self.view = view.clone();
        }
    }

    /// Committed records with keys in `[lo, hi)` (`hi = None`: to the end), in key
    /// order, without the overlay. The iterator owns its handle on sled, so it can be
    /// read while the caller stages changes in the overlay (flattening does, after a
    /// commit emptied it), or without the state lock.
    pub fn committed_range(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'static {
        let range = match hi {
            Some(h) => self.tree.range(lo.to_vec()..h.to_vec()),
            None => self.tree.range(lo.to_vec()..),
        };
        range.map(|item| {
            let (k, v) = item?;
            Ok((k.to_vec(), v.to_vec()))
        })
    }

    /// A handle that measures the database without the state lock (`SizeProbe::content_bytes`).
    pub fn size_probe(&self) -> SizeProbe {
        SizeProbe {
            db: self.db.clone(),
        }
    }

    /// The database itself (tests compare whole databases).
    #[cfg(test)]
    pub fn db(&self) -> sled::Db {
        self.db.clone()
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    pub fn is_dirty(&self) -> bool {
        !self.overlay.is_empty()
    }

    // ---- unversioned keys ----

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Unversioned keys starting with `prefix`, overlay merged over sled.
    pub fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.merged_range(prefix, prefix_end(prefix).as_deref())
    }

    pub fn remove_raw(&mut self, key: Vec<u8>) {
        self.stage(key, None);
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.stage(key, Some(value));
    }

    // ---- versioned records ----

    /// The payload of the newest version of `base` visible from the live generation.
    pub fn get(&self, base: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_within(base, usize::MAX)?.flatten())
    }

    /// Like `get`, giving up (None) when finding the version would step over more than
    /// `steps` versions of generations the view does not see (other branches').
    pub(crate) fn get_within(&self, base: &[u8], steps: usize) -> Result<Option<Option<Vec<u8>>>> {
        let live_key = keys::versioned(base, self.view.gen);
        match self.overlay.get(&live_key) {
            Some(Some(v)) => return Ok(Some(unwrap_envelope(&live_key, v)?)),
            Some(None) => {}
            None => {
                if let Some(v) = self.tree.get(&live_key)? {
                    return Ok(Some(unwrap_envelope(&live_key, &v)?));
                }
            }
        }
        if self.view.ancestors.is_empty() {
            return Ok(Some(None));
        }
        // Nearest ancestor: the highest visible generation below live.
        let lo = keys::versioned(base, GenerationId(0));
        for (n, item) in self.tree.range(lo..live_key).rev().enumerate() {
            let (k, v) = item?;
            let gen = version_of(base, &k)?;
            if self.view.ancestors.contains(&gen.0) {
                return Ok(Some(unwrap_envelope(&k, &v)?));
            }
            if n >= steps {
                return Ok(None);
            }
        }
        Ok(Some(None))
    }

    /// Whether an ancestor of the live generation holds a non-tombstone version.
    fn ancestor_has(&self, base: &[u8]) -> Result<bool> {
        if self.view.ancestors.is_empty() {
            return Ok(false);
        }
        let lo = keys::versioned(base, GenerationId(0));
        let hi = keys::versioned(base, self.view.gen);
        for item in self.tree.range(lo..hi).rev() {
            let (k, v) = item?;
            let gen = version_of(base, &k)?;
            if self.view.ancestors.contains(&gen.0) {
                return Ok(v.first() == Some(&PRESENT));
            }
        }
        Ok(false)
    }

    pub fn put(&mut self, base: &[u8], payload: &[u8]) {
        let mut v = Vec::with_capacity(payload.len() + 1);
        v.push(PRESENT);
        v.extend_from_slice(payload);
        self.stage(keys::versioned(base, self.view.gen), Some(v));
        self.note_change(base);
    }

    /// Records in the change index that the inode of `base` changed in the live
    /// generation (diff and history read it; its cost follows what changed).
    fn note_change(&mut self, base: &[u8]) {
        if base.len() >= 9 {
            let key = keys::change(self.view.gen, keys::key_ino(base));
            self.overlay.insert_empty_if_absent(key);
        }
    }

    /// The inodes generation `gen` changed, in order.
    pub fn changes_of(&self, gen: GenerationId) -> Result<Vec<crate::types::InodeNo>> {
        let prefix = keys::change_prefix(gen);
        self.merged_range(&prefix, prefix_end(&prefix).as_deref())?
            .into_iter()
            .map(|(k, _)| match keys::split_change(&k) {
                Some((_, ino)) => Ok(ino),
                None => Err(malformed(&k, "not a change-index key".into())),
            })
            .collect()
    }

    /// Every stored version (of every generation) of the records whose base starts with
    /// `prefix`: (base, generation, payload or None for a tombstone), in key order.
    pub fn all_versions(&self, prefix: &[u8]) -> Result<Vec<Version>> {
        let hi = prefix_end(prefix);
        self.versions_range(prefix, hi.as_deref(), usize::MAX)
    }

    /// Like `all_versions`, for the raw keys in `[lo, hi)` (`hi = None`: to the end),
    /// at most `max` of them: a pass in steps resumes after the last one returned, at
    /// `keys::versioned(base, gen)` followed by a zero byte.
    pub fn versions_range(&self, lo: &[u8], hi: Option<&[u8]>, max: usize) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        for item in self.merged_iter(lo, hi).take(max) {
            let (k, v) = item?;
            let (base, gen) = keys::check_versioned(&k).map_err(|e| malformed(&k, e))?;
            out.push((base.to_vec(), gen, unwrap_envelope(base, &v)?));
        }
        Ok(out)
    }

    /// Removes `base` as seen from the live generation: drops the live version, and
    /// writes a tombstone if an ancestor's version would otherwise show through.
    pub fn delete(&mut self, base: &[u8]) -> Result<()> {
        let k = keys::versioned(base, self.view.gen);
        self.note_change(base);
        if self.ancestor_has(base)? {
            self.stage(k, Some(vec![TOMBSTONE]));
        } else {
            self.stage(k, None);
            self.refresh_checkpoint(base)?;
        }
        Ok(())
    }

    /// Every record visible from the live generation whose base starts with `prefix`,
    /// as (base, payload), in key order.
    pub fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let hi = prefix_end(prefix);
        self.scan_range(prefix, hi.as_deref())
    }

    /// Like `scan`, for bases in `[lo, hi)` (`hi = None`: to the end of the keyspace).
    pub fn scan_range(&self, lo: &[u8], hi: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        select_visible(&self.view, self.merged_iter(lo, hi))
    }

    /// Raw keys in `[lo, hi)`, overlay merged over sled.
    fn merged_range(&self, lo: &[u8], hi: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.merged_iter(lo, hi)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect()
    }

    /// Raw keys in `[lo, hi)` (`hi = None`: to the end), committed and staged, staged
    /// ones winning, in key order, read lazily; straight from sled when nothing is
    /// staged in the range (every read of committed data).
    fn merged_iter(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<(sled::IVec, sled::IVec)>> + '_> {
        let upper = match hi {
            Some(h) => Bound::Excluded(h.to_vec()),
            None => Bound::Unbounded,
        };
        let range = (Bound::Included(lo.to_vec()), upper);
        let sled = self
            .tree
            .range::<Vec<u8>, _>(range.clone())
            .map(|i| i.map_err(Error::from));
        let mut staged = self.overlay.range(range).peekable();
        if staged.peek().is_none() {
            return Box::new(sled);
        }
        let mut sled = sled.peekable();
        Box::new(std::iter::from_fn(move || loop {
            let take_staged = match (staged.peek(), sled.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((sk, _)), Some(Ok((k, _)))) => sk.as_slice() <= k.as_ref(),
                (_, Some(Err(_))) => false,
            };
            if !take_staged {
                return sled.next();
            }
            let (k, v) = staged.next().unwrap();
            if matches!(sled.peek(), Some(Ok((sk, _))) if sk.as_ref() == k.as_slice()) {
                sled.next();
            }
            if let Some(v) = v {
                return Some(Ok((k.as_slice().into(), v.as_slice().into())));
            }
        }))
    }

    /// Whether a change is not in the intent log yet.
    pub fn has_unlogged(&self) -> bool {
        self.overlay.has_unlogged()
    }

    /// The changes the intent log does not hold yet (raw key → value, None: removed);
    /// from now on they count as logged.
    pub fn take_unlogged(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.overlay.take_unlogged()
    }

    /// Replay of the intent log: sets a raw key as a record of it says.
    pub fn replay_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.overlay.insert(key, value);
    }

    /// Makes the overlay durable as one atomic batch. On failure the overlay is kept.
    pub fn commit(&mut self) -> Result<()> {
        if !self.overlay.is_empty() {
            let mut batch = sled::Batch::default();
            for (k, v) in self.overlay.iter() {
                match v {
                    Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                    None => batch.remove(k.as_slice()),
                }
            }
            self.tree.apply_batch(batch)?;
            self.overlay.clear();
        }
        self.flush()
    }

    /// Flushes sled (including anything the blockstore inserted into its index) and
    /// fsyncs its files and directory.
    pub fn flush(&mut self) -> Result<()> {
        self.flusher.flush()
    }

    /// A handle that flushes like `flush`, usable without the state lock.
    pub fn flusher(&self) -> Flusher {
        self.flusher.clone()
    }
}

/// Of raw (key, value) items in key order, the payload of the newest version `view`
/// sees of each base, as (base, payload); tombstoned bases are left out.
pub(crate) fn select_visible<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    view: &View,
    items: impl Iterator<Item = Result<(K, V)>>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    // The current base and the value of its best visible version so far.
    let mut cur: Option<(Vec<u8>, Option<V>)> = None;
    let flush = |cur: &mut Option<(Vec<u8>, Option<V>)>, out: &mut Vec<_>| -> Result<()> {
        if let Some((base, Some(v))) = cur.take() {
            if let Some(p) = unwrap_envelope(&base, v.as_ref())? {
                out.push((base, p));
            }
        }
        Ok(())
    };
    for item in items {
        let (k, v) = item?;
        let k = k.as_ref();
        let (base, gen) = keys::check_versioned(k).map_err(|e| malformed(k, e))?;
        if cur.as_ref().map(|(b, _)| b.as_slice()) != Some(base) {
            flush(&mut cur, &mut out)?;
            cur = Some((base.to_vec(), None));
        }
        if view.sees(gen) {
            // Versions come in ascending generation order; the highest visible one
            // is the nearest (ids grow down every chain).
            if let Some((_, best)) = cur.as_mut() {
                *best = Some(v);
            }
        }
    }
    flush(&mut cur, &mut out)?;
    Ok(out)
}

/// Measures the metadata database (`Meta::size_probe`).
pub struct SizeProbe {
    db: sled::Db,
}

impl SizeProbe {
    /// Bytes of keys and values in every tree: what a compacted database holds, give or
    /// take sled's own overhead. One pass over every tree.
    pub fn content_bytes(&self) -> Result<u64> {
        let mut content = 0u64;
        for name in self.db.tree_names() {
            for item in self.db.open_tree(&name)?.iter() {
                let (k, v) = item?;
                content += (k.len() + v.len()) as u64;
            }
        }
        Ok(content)
    }
}

/// Largest `meta/` read into the page cache at open, as a fraction of the machine's RAM.
const PREWARM_RAM_FRACTION: u64 = 8;

/// Asks the kernel to read sled's files into the page cache, in the background
/// (`POSIX_FADV_WILLNEED`), when they take at most 1/8 of RAM: sled keeps a tree page as
/// a chain of small fragments scattered over its log, so a cold lookup costs several
/// small random reads, while the whole file reads sequentially in a fraction of that
/// (51 MB in ~35 ms here, against ~0.5 s of cold lookups for one file's block map after
/// 1000 generations; BENCHMARKS.md). The same warm-up databases do at start (InnoDB's
/// buffer pool load, pg_prewarm). Advice only: failures are ignored.
fn prewarm(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let files: Vec<(std::fs::File, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let md = e.metadata().ok().filter(|m| m.is_file())?;
            Some((std::fs::File::open(e.path()).ok()?, md.len()))
        })
        .collect();
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    // SAFETY: sysinfo only writes the struct it is given.
    let ram = unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        if libc::sysinfo(&mut info) != 0 {
            return false;
        }
        info.totalram as u64 * u64::from(info.mem_unit)
    };
    if total > ram / PREWARM_RAM_FRACTION {
        tracing::debug!(total, ram, "meta/ not prewarmed: too large");
        return false;
    }
    // The kernel reads at most the device's readahead size per call: ask piece by piece.
    const PIECE: u64 = 128 << 10;
    for (file, len) in files {
        for at in (0..len).step_by(PIECE as usize) {
            // SAFETY: posix_fadvise only reads its arguments; `file` is open.
            unsafe {
                libc::posix_fadvise(
                    file.as_raw_fd(),
                    at as libc::off_t,
                    PIECE as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
    }
    true
}

/// sled's page cache.
const SLED_CACHE_BYTES: u64 = 64 << 20;

/// Loads the block index, then the metadata tree, into sled's own cache, in the
/// background: a file read looks up its block map and each block's id at random places
/// of the trees, so a cold lookup parses a page that one pass in key order parses once
/// for all (after 1000 generations, cold random reads cost the daemon ~40% more CPU each
/// until the pages they touch were parsed; BENCHMARKS.md). The thread runs at idle
/// priority (`SCHED_IDLE`): right after a mount the reads it is meant to speed up compete
/// with it for the CPU, and on two cores it took a fifth of a cold sequential read's time.
fn warm_trees(
    trees: Vec<sled::Tree>,
    go_on: Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::sync::mpsc::Receiver<()>> {
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("strata-warm".into())
        .spawn(move || {
            // Dropped at the end: the receiver sees the disconnect.
            let _done = done;
            // SAFETY: sched_setscheduler reads the struct it is given; pid 0 is this thread.
            unsafe {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
            }
            // Half of sled's cache at most: beyond it, warming would evict itself.
            let mut bytes = 0usize;
            'trees: for tree in trees {
                for item in tree.iter() {
                    let Ok((k, v)) = item else { break };
                    if !go_on.load(std::sync::atomic::Ordering::Relaxed) {
                        break 'trees;
                    }
                    bytes += k.len() + v.len();
                    if bytes > SLED_CACHE_BYTES as usize / 2 {
                        break 'trees;
                    }
                }
            }
            tracing::debug!(bytes, "block index and metadata warmed");
        });
    spawned.ok().map(|_| done_rx)
}

/// Opens sled. Our own store lock is already held, so a sled lock held elsewhere can
/// only be this process's previous handle whose last reference is still being dropped
/// by one of sled's threads: wait for it briefly.
fn open_sled(dir: &Path) -> Result<sled::Db> {
    remove_interrupted_snapshots(dir)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(None)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map_err(|e| open_error(dir, e)),
        }
    }
}

/// Removes the snapshot files sled was writing when it was interrupted
/// (`snap.LSN.generating`), then fsyncs the directory if it removed any.
///
/// sled 0.34.7 writes its snapshot (at open, after recovering its log) to
/// `snap.LSN.generating`, fsyncs it, renames it to `snap.LSN` and only then removes the
/// older snapshot; but when it opens it takes the highest-named `snap.` file, the
/// `.generating` one included, and refuses to open ("Read corrupted data") if that is
/// empty or torn. A crash or power cut between the create and the rename left such a
/// file behind (found by the power-cut tests). It never holds anything the previous
/// snapshot and the log do not: removing it is always safe.
fn remove_interrupted_snapshots(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            tracing::info!(path = %path.display(), "removed a sled snapshot left half written");
            removed += 1;
        }
    }
    if removed > 0 {
        crate::durable::fsync_dir(dir)?;
    }
    Ok(())
}

/// What a failed open of the metadata database says: the directory, and what sled
/// found (its own text of a corruption carries an empty backtrace and no file).
fn open_error(dir: &Path, e: sled::Error) -> Error {
    match e {
        sled::Error::Corruption { at, .. } => Error::Invalid(format!(
            "{}: the metadata database is damaged (sled found corrupted data{}); it cannot be \
             opened",
            dir.display(),
            at.map(|at| format!(" at {at}")).unwrap_or_default()
        )),
        sled::Error::Io(source) => Error::Io {
            path: dir.to_path_buf(),
            source,
        },
        other => Error::Invalid(format!(
            "{}: the metadata database cannot be opened: {other}",
            dir.display()
        )),
    }
}

/// A key of the tree that does not have the shape of its kind.
pub(crate) fn malformed(key: &[u8], detail: String) -> Error {
    Error::BadRecord {
        key: format!("malformed key {}", keys::describe(key)),
        detail,
    }
}

/// The generation of `key`, a version of `base` found by a range read of its versions
/// (any other key there is malformed: bases are prefix-free).
fn version_of(base: &[u8], key: &[u8]) -> Result<GenerationId> {
    if key.len() != base.len() + GEN_SUFFIX_LEN || !key.starts_with(base) {
        return Err(malformed(
            key,
            format!("not a version of {}", keys::describe(base)),
        ));
    }
    Ok(keys::split_versioned(key).1)
}

pub(crate) fn unwrap_envelope(key: &[u8], v: &[u8]) -> Result<Option<Vec<u8>>> {
    match v.first() {
        Some(&PRESENT) => Ok(Some(v[1..].to_vec())),
        Some(&TOMBSTONE) if v.len() == 1 => Ok(None),
        // A tombstone is one byte: more means damage (a present record whose envelope
        // byte changed would otherwise read as removed).
        Some(&TOMBSTONE) => Err(Error::BadRecord {
            key: keys::describe(key),
            detail: format!("a tombstone with {} bytes after it", v.len() - 1),
        }),
        Some(b) => Err(Error::BadRecord {
            key: keys::describe(key),
            detail: format!("bad envelope byte {b} (0 = removed, 1 = present)"),
        }),
        None => Err(Error::BadRecord {
            key: keys::describe(key),
            detail: "empty value (no envelope byte)".into(),
        }),
    }
}

/// The smallest key greater than every key starting with `prefix` (None: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::types::InodeNo;

    fn view(g: u64, anc: &[u64]) -> View {
        View {
            gen: GenerationId(g),
            ancestors: std::sync::Arc::new(anc.iter().copied().collect()),
        }
    }

    #[test]
    fn overlay_reads_scan_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Meta::open(dir.path()).unwrap();
        m.set_view(&view(1, &[]));
        let a = keys::dirent(InodeNo(1), b"a");
        let b = keys::dirent(InodeNo(1), b"b");
        m.put(&a, b"A");
        m.put(&b, b"B");
        assert_eq!(m.get(&a).unwrap(), Some(b"A".to_vec()));
        m.commit().unwrap();
        m.delete(&a).unwrap();
        assert_eq!(m.get(&a).unwrap(), None);
        let listed = m.scan(&keys::dir_prefix(InodeNo(1))).unwrap();
        assert_eq!(listed, vec![(b.clone(), b"B".to_vec())]);
        m.commit().unwrap();
        drop(m);
        let mut m = Meta::open(dir.path()).unwrap();
        m.set_view(&view(1, &[]));
        assert_eq!(m.get(&a).unwrap(), None);
        assert_eq!(m.get(&b).unwrap(), Some(b"B".to_vec()));
    }

    #[test]
    fn ancestors_show_through_and_tombstones_hide() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Meta::open(dir.path()).unwrap();
        let a = keys::dirent(InodeNo(1), b"a");
        let b = keys::dirent(InodeNo(1), b"b");
        m.set_view(&view(1, &[]));
        m.put(&a, b"A1");
        m.put(&b, b"B1");
        m.commit().unwrap();
        // Generation 2 is a sibling branch, 3 a child of 1.
        m.set_view(&view(2, &[1]));
        m.put(&a, b"A2");
        m.commit().unwrap();
        m.set_view(&view(3, &[1]));
        assert_eq!(m.get(&a).unwrap(), Some(b"A1".to_vec()));
        m.delete(&b).unwrap();
        assert_eq!(m.get(&b).unwrap(), None);
        m.commit().unwrap();
        assert_eq!(
            m.scan(&keys::dir_prefix(InodeNo(1))).unwrap(),
            vec![(a.clone(), b"A1".to_vec())]
        );
        m.set_view(&view(1, &[]));
        assert_eq!(m.get(&b).unwrap(), Some(b"B1".to_vec()));
    }

    /// Keys of the wrong shape (as a bug or a damaged database could leave them) used to
    /// panic the reader: a directory entry key without a name (`dirent_name` sliced past
    /// its end: a `readdir`), a change-index key too short (`changes_of` read 8 bytes
    /// that are not there: a diff or a flatten), and a key inside a base's range that
    /// is not a version of it was read as one (another record's bytes). Each is now an
    /// error naming the key.
    #[test]
    fn malformed_keys_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Meta::open(dir.path()).unwrap();
        m.set_view(&view(2, &[1]));
        let mut no_name = keys::dir_prefix(InodeNo(1));
        no_name.extend_from_slice(&1u64.to_be_bytes());
        m.tree
            .insert(&no_name, &[PRESENT, 5, 0, 0, 0, 0, 0, 0, 0, 1][..])
            .unwrap();
        let err = m
            .scan(&keys::dir_prefix(InodeNo(1)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("malformed key D") && err.contains("NUL"),
            "{err}"
        );
        let mut short = keys::change_prefix(GenerationId(2));
        short.push(7);
        m.tree.insert(&short, &[][..]).unwrap();
        let err = m.changes_of(GenerationId(2)).unwrap_err().to_string();
        assert!(err.contains("not a change-index key"), "{err}");
        // Inside the range of `I 3`'s versions, but a longer key.
        let base = keys::inode(InodeNo(3));
        let mut longer = keys::versioned(&base, GenerationId(0));
        longer.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0]);
        m.tree.insert(&longer, &[PRESENT][..]).unwrap();
        let err = m.get(&base).unwrap_err().to_string();
        assert!(err.contains("not a version of I"), "{err}");
    }

    /// Found by the property test over `meta_value`: a tombstone followed by bytes read
    /// as a tombstone, so a record whose envelope byte was damaged to 0 read as removed.
    #[test]
    fn a_tombstone_with_bytes_after_it_is_an_error() {
        assert_eq!(unwrap_envelope(b"k", &[TOMBSTONE]).unwrap(), None);
        assert_eq!(unwrap_envelope(b"k", &[PRESENT, 7]).unwrap(), Some(vec![7]));
        let err = unwrap_envelope(b"k", &[TOMBSTONE, 252, 18])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a tombstone with 2 bytes after it"), "{err}");
        let err = unwrap_envelope(b"k", &[9]).unwrap_err().to_string();
        assert!(err.contains("bad envelope byte 9"), "{err}");
    }

    #[test]
    fn prefix_end_carries() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
