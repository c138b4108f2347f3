//! `BlockStore`: the public API over the writer, the pending map and the index.
//!
//! Locks, always taken in this order (never a later one while waiting for an earlier):
//! `gc_serial` → `sync_lock` → `writer` → `pins` → `pending` → `readers`.
//! - A block is appended only under `writer`, after re-checking pending and index
//!   there, so concurrent puts of the same data write it once.
//! - While a gc runs (`pins` is `Some`), every put checks that its block is stored and
//!   pins it in one critical section of `pins`, and the gc drops index entries under the
//!   same lock, skipping pinned ones: see `gc.rs` for why no put can then name a block
//!   the gc drops.
//! - `pending` holds every block appended since it was last synced; a block leaves it
//!   only after `sync` inserted it into the index (insert first, then remove), and
//!   lookups check pending before the index, so a stored block is always found.
//! - Hashing and compression happen before `writer` is taken; fsync happens with
//!   only `sync_lock` held, so puts proceed while a sync waits on the disk.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::cache::{BlockCache, CacheStats};
use crate::gc::{GcHost, GcSession};
use crate::index;
use crate::layout::{Location, RecordHeader, MAX_BLOCK_LEN, RECORD_HEADER_LEN};
use crate::pread;
use crate::record::{self, EncodedRecord};
use crate::recovery;
use crate::sync::{lock, read, write, Arc, Mutex, RwLock};
use crate::writer::{PackWriter, SyncPlan};
use crate::{BlockId, Config, Error, GcPolicy, GcStats, PackId, Result, Stats, VerifyReport};

/// Read handles kept open at most; past this the cache starts over.
const MAX_OPEN_READERS: usize = 256;
/// A read of at most this many blocks keeps what it reads in the block cache.
const CACHE_MAX_BLOCKS_PER_READ: usize = 2;
/// `put_many` hashes and compresses on several threads from this many bytes on.
const PARALLEL_MIN_BYTES: usize = 128 << 10;

pub struct BlockStore {
    pub(crate) dir: PathBuf,
    pub(crate) index: sled::Tree,
    level: i32,
    /// One gc at a time: held by a `GcSession` for its whole life. First in the lock
    /// order; only `gc_begin` waits for it.
    pub(crate) gc_serial: Mutex<()>,
    /// Serialises `sync`s, and a gc's fsync-then-index steps with them.
    pub(crate) sync_lock: Mutex<()>,
    /// The active pack. After `sync_lock` in the lock order.
    pub(crate) writer: Mutex<PackWriter>,
    /// True once the writer failed for good (lock-free check for `put`).
    failed: Arc<AtomicBool>,
    /// While a gc runs: every block put (stored anew or deduplicated) since it began.
    /// The gc never drops the entry of a pinned block. Checked and changed together with
    /// the store's content (`contains`) in one critical section, see `gc.rs`.
    pub(crate) pins: Mutex<Option<HashSet<BlockId>>>,
    /// Blocks appended since the last sync, id → location. After `pins` in the lock order.
    pub(crate) pending: RwLock<HashMap<BlockId, Location>>,
    /// Read-only handles by pack. Last in the lock order. A handle is opened and
    /// inserted under the write lock; `gc`, under the write lock too, drops the handles
    /// of the packs it is about to delete and marks them `deleting` (no handle is opened
    /// for those), then unlinks the files without the lock (unlinking a large file can
    /// take a while). So no cached handle of a deleted pack outlives the deletion (an open
    /// handle would keep the file's space allocated).
    pub(crate) readers: RwLock<Readers>,
    /// Odd while a `gc` may be moving entries or deleting packs; bumped at its start and
    /// end. `verify` runs again when it changed meanwhile (a scrub runs beside a gc).
    pub(crate) gc_epoch: AtomicU64,
    /// Decompressed blocks recently read (`cache.rs`). No lock order: taken
    /// alone, never while another lock of the store is held.
    cache: BlockCache,
}

/// The cache of read handles (see `BlockStore::readers`).
#[derive(Default)]
pub(crate) struct Readers {
    pub open: HashMap<PackId, Arc<File>>,
    /// Packs a gc is deleting: no handle is opened for them.
    pub deleting: HashSet<PackId>,
}

// Used from many threads at once (`&self` everywhere).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<BlockStore>();
};

/// A block the cache may share, as the caller's own.
fn unshare(data: Arc<Vec<u8>>) -> Vec<u8> {
    Arc::try_unwrap(data).unwrap_or_else(|shared| (*shared).clone())
}

/// A block after hashing and compression, before the writer lock.
enum Prepared {
    Known(BlockId),
    New(EncodedRecord),
}

impl BlockStore {
    /// Opens (creating if needed) the packs directory and seals any pack a previous
    /// run left unsealed. Writing starts in a new pack.
    pub fn open(packs_dir: &Path, index: sled::Tree, cfg: Config) -> Result<Self> {
        if !packs_dir.is_dir() {
            create_dir_durably(packs_dir)?;
        }
        let next_id = recovery::recover(packs_dir, &index)?;
        let writer = PackWriter::new(packs_dir, cfg.max_pack_size, next_id);
        tracing::info!(dir = %packs_dir.display(), next_pack = next_id,
            level = cfg.compression_level, "block store open");
        Ok(BlockStore {
            dir: packs_dir.to_path_buf(),
            index,
            level: cfg.compression_level,
            gc_serial: Mutex::new(()),
            sync_lock: Mutex::new(()),
            pins: Mutex::new(None),
            failed: writer.failed_flag(),
            writer: Mutex::new(writer),
            pending: RwLock::new(HashMap::new()),
            readers: RwLock::new(Readers::default()),
            gc_epoch: AtomicU64::new(0),
            cache: BlockCache::new(usize::try_from(cfg.cache_bytes).unwrap_or(usize::MAX)),
        })
    }

    /// The directory holding the pack files.
    pub fn packs_dir(&self) -> &Path {
        &self.dir
    }

    /// The file of pack `pack` (whether or not it exists).
    pub fn pack_path(&self, pack: PackId) -> PathBuf {
        self.dir.join(pack.file_name())
    }

    pub fn put(&self, data: &[u8]) -> Result<BlockId> {
        self.check_writable()?;
        let rec = match self.prepare(data)? {
            Prepared::Known(id) => {
                if self.keep_known(&id)? {
                    return Ok(id);
                }
                // A running gc dropped the block since `prepare` found it: store it anew.
                record::encode_with_id(id, data, self.level)
            }
            Prepared::New(rec) => rec,
        };
        self.append_if_new(&mut lock(&self.writer), &rec)?;
        Ok(rec.header.id)
    }

    /// Like `put` for each block, hashing and compressing in parallel; records are
    /// appended in input order. On an error the blocks before it may be stored.
    pub fn put_many(&self, blocks: &[&[u8]]) -> Result<Vec<BlockId>> {
        self.check_writable()?;
        let prepared = self.prepare_all(blocks)?;
        let mut writer = lock(&self.writer);
        let mut ids = Vec::with_capacity(prepared.len());
        for (p, data) in prepared.into_iter().zip(blocks) {
            let rec = match p {
                Prepared::Known(id) => {
                    if self.keep_known(&id)? {
                        ids.push(id);
                        continue;
                    }
                    // Dropped by a running gc since `prepare` found it: store it anew.
                    record::encode_with_id(id, data, self.level)
                }
                Prepared::New(rec) => rec,
            };
            self.append_if_new(&mut writer, &rec)?;
            ids.push(rec.header.id);
        }
        Ok(ids)
    }

    /// Hits, misses and size of the block cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    pub fn get(&self, id: &BlockId) -> Result<Vec<u8>> {
        match self.location(id)? {
            Some(loc) => self.get_cached(id, loc, true).map(unshare),
            None => Err(Error::NotFound(*id)),
        }
    }

    /// Reads several blocks, one result each, in order. Their records' pack ranges are
    /// first announced to the kernel (`POSIX_FADV_WILLNEED`), so the disk fetches them
    /// together instead of one read at a time: what keeps a sequential read of a file
    /// whose blocks copy-on-write scattered over the packs from waiting on each in turn.
    pub fn get_many(&self, ids: &[BlockId]) -> Vec<Result<Vec<u8>>> {
        let blocks = self.get_many_runs(ids).0;
        blocks.into_iter().map(|b| b.map(unshare)).collect()
    }

    /// `get_many`, and in how many contiguous runs the stored records of `ids` lie in
    /// that order, from the same lookups (as `runs` counts them, except that a repeated
    /// id counts each time: this is the order the read fetches). The blocks are shared
    /// with the block cache, not copied.
    pub fn get_many_runs(&self, ids: &[BlockId]) -> (Vec<Result<Arc<Vec<u8>>>>, u64) {
        let locs: Vec<Result<Option<Location>>> = ids.iter().map(|id| self.location(id)).collect();
        let found: Vec<&Location> = locs.iter().flatten().flatten().collect();
        let breaks = found
            .windows(2)
            .filter(|w| !w[0].is_followed_by(w[1]))
            .count() as u64;
        // Only scattered blocks: a record that follows the previous one in its pack is
        // left to the kernel's readahead on the pack file, which sequential reads of
        // contiguous records already ramp up (and which advice would cut short).
        if breaks > 0 {
            for loc in &found {
                self.advise_willneed(loc);
            }
        }
        let runs = if found.is_empty() { 0 } else { breaks + 1 };
        // A read of many blocks is a stream (the kernel's readahead): served from the
        // cache where it hits, but not kept, so a scan does not flush what small reads
        // use again (keeping it made a cold sequential read 15% slower: each block then
        // decompresses into memory that left the CPU's caches).
        let keep = ids.len() <= CACHE_MAX_BLOCKS_PER_READ;
        let data = ids
            .iter()
            .zip(locs)
            .map(|(id, loc)| match loc? {
                Some(loc) => self.get_cached(id, loc, keep),
                None => Err(Error::NotFound(*id)),
            })
            .collect();
        (data, runs)
    }

    /// Asks the kernel to start reading the record at `loc` into the page cache. Advice
    /// only: a pack that cannot be opened is left to the read that follows to report.
    fn advise_willneed(&self, loc: &Location) {
        use std::os::fd::AsRawFd;
        if let Ok(file) = self.reader(loc.pack, &self.pack_path(loc.pack)) {
            let len = RECORD_HEADER_LEN as i64 + i64::from(loc.stored_len);
            // SAFETY: posix_fadvise only reads its arguments; the descriptor is open
            // for as long as `file` lives.
            unsafe {
                libc::posix_fadvise(
                    file.as_raw_fd(),
                    loc.offset as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
    }

    /// From the block cache, else `get_at` (kept in the cache if `keep`).
    fn get_cached(&self, id: &BlockId, loc: Location, keep: bool) -> Result<Arc<Vec<u8>>> {
        if let Some(data) = self.cache.get(id) {
            return Ok(data);
        }
        let data = Arc::new(self.get_at(id, loc)?);
        if keep {
            self.cache.insert(id, &data);
        }
        Ok(data)
    }

    /// Reads `id` from `loc`, following it if a gc moved it meanwhile.
    fn get_at(&self, id: &BlockId, mut loc: Location) -> Result<Vec<u8>> {
        loop {
            match self.read_block(id, &loc) {
                Ok(data) => return Ok(data),
                Err(e) => {
                    // A gc may have moved the block and deleted its old pack between the
                    // lookup and the read: follow the entry to its new place.
                    match self.location(id)? {
                        Some(now) if now != loc => loc = now,
                        _ => {
                            if let Error::Corrupt {
                                path,
                                offset,
                                detail,
                            } = &e
                            {
                                tracing::error!(path = %path.display(), offset, block = %id,
                                    "corrupt block: {detail}");
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Bytes the block takes in its pack (compressed payload), if stored.
    pub fn stored_len(&self, id: &BlockId) -> Result<Option<u64>> {
        Ok(self.location(id)?.map(|l| u64::from(l.stored_len)))
    }

    /// Bytes of the block's whole record (header and payload), if stored: what the
    /// packs shrink by once the block is dropped and its pack rewritten.
    pub fn record_len(&self, id: &BlockId) -> Result<Option<u64>> {
        Ok(self
            .location(id)?
            .map(|l| RECORD_HEADER_LEN as u64 + u64::from(l.stored_len)))
    }

    pub fn contains(&self, id: &BlockId) -> Result<bool> {
        Ok(read(&self.pending).contains_key(id) || index::contains(&self.index, id)?)
    }

    /// Makes every block put so far durable, then indexes it (sled is not flushed).
    pub fn sync(&self) -> Result<()> {
        let _serial = lock(&self.sync_lock);
        self.sync_locked(false).map(|_| ())
    }

    /// `sync` for a caller that holds `sync_lock`. With `seal`, the active pack is sealed
    /// too, in the same critical section of `writer` that collects the pending blocks:
    /// every block appended to a pack below the returned number is then indexed (the
    /// number is the first pack the writer has not started yet).
    pub(crate) fn sync_locked(&self, seal: bool) -> Result<u32> {
        let (plan, batch, first_new) = {
            let mut writer = lock(&self.writer);
            let plan = if seal {
                writer.seal_now()?
            } else {
                writer.plan_sync()?
            };
            let batch: Vec<(BlockId, Location)> = read(&self.pending)
                .iter()
                .map(|(id, loc)| (*id, *loc))
                .collect();
            (plan, batch, writer.extent().1)
        };
        self.run_sync_plan(plan)?;
        if batch.is_empty() {
            return Ok(first_new);
        }
        index::insert_all(&self.index, &batch)?;
        let mut pending = write(&self.pending);
        for (id, _) in &batch {
            pending.remove(id);
        }
        Ok(first_new)
    }

    /// Runs a sync plan; a failed fsync fails the writer for good.
    pub(crate) fn run_sync_plan(&self, plan: SyncPlan) -> Result<()> {
        if let Err((path, e)) = plan.run() {
            lock(&self.writer).fail(&path, format!("fsync: {e}"));
            return Err(Error::Io { path, source: e });
        }
        Ok(())
    }

    /// Starts a gc (waiting for one already running to end): from now until the
    /// session is dropped, every block put or deduplicated is pinned, and the session's
    /// `sweep` keeps it whatever the mark says. The caller marks after this call, then
    /// sweeps; see `gc.rs` and docs/packs.md ("Space reclamation").
    pub fn gc_begin(&self) -> GcSession<'_> {
        GcSession::begin(self)
    }

    /// `gc_begin` and `sweep` in one call, for a caller whose mark `is_live` was made
    /// with no block put since (puts while this runs are safe: they are pinned).
    /// `host.commit_index` must make the index tree durable (flush sled and fsync its
    /// files); it is called after each index change and before any pack file is deleted.
    pub fn gc(
        &self,
        is_live: &dyn Fn(&BlockId) -> bool,
        policy: &GcPolicy,
        host: &mut dyn GcHost,
    ) -> Result<GcStats> {
        self.gc_begin().sweep(is_live, policy, host)
    }

    /// Counts over the index and pending blocks (a walk of the whole index) and the
    /// pack files on disk. Exact when no sync runs meanwhile; never counts twice.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        let mut add = |loc: &Location| {
            s.blocks += 1;
            s.raw_bytes += u64::from(loc.raw_len);
            s.stored_bytes += u64::from(loc.stored_len);
        };
        // Pending first: a block a sync moves into the index meanwhile is then found in
        // one of the two (it enters the index before it leaves pending).
        let mut pending = read(&self.pending).clone();
        for entry in index::entries(&self.index) {
            if let index::Entry::Good(id, loc) = entry? {
                pending.remove(&id);
                add(&loc);
            }
        }
        pending.values().for_each(&mut add);
        for (_, path) in recovery::list_packs(&self.dir)? {
            // A pack removed meanwhile is simply not counted.
            if let Ok(meta) = std::fs::metadata(&path) {
                s.pack_files += 1;
                s.pack_bytes += meta.len();
            }
        }
        Ok(s)
    }

    /// Checks every record of every pack and every index entry; see `verify.rs`.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        crate::verify::run(self, progress)
    }

    /// Seals the active pack and fsyncs it, reporting what `Drop` could only log.
    pub fn close(self) -> Result<()> {
        lock(&self.writer).close()
    }

    /// Drops the store as a kill -9 would: nothing sealed, nothing more written.
    #[cfg(test)]
    pub(crate) fn crash(self) {
        lock(&self.writer).abandon();
    }

    #[cfg(test)]
    pub(crate) fn with_faults<T>(&self, f: impl FnOnce(&mut crate::writer::Faults) -> T) -> T {
        f(&mut lock(&self.writer).faults)
    }

    fn check_writable(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            lock(&self.writer).check()?;
        }
        Ok(())
    }

    fn prepare(&self, data: &[u8]) -> Result<Prepared> {
        if data.len() > MAX_BLOCK_LEN {
            return Err(Error::Io {
                path: self.dir.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a block of {} bytes exceeds the {MAX_BLOCK_LEN}-byte limit",
                        data.len()
                    ),
                ),
            });
        }
        let id = BlockId::of(data);
        if self.contains(&id)? {
            return Ok(Prepared::Known(id));
        }
        Ok(Prepared::New(record::encode_with_id(id, data, self.level)))
    }

    fn prepare_all(&self, blocks: &[&[u8]]) -> Result<Vec<Prepared>> {
        let bytes: usize = blocks.iter().map(|b| b.len()).sum();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(blocks.len());
        if threads < 2 || bytes < PARALLEL_MIN_BYTES {
            return blocks.iter().map(|b| self.prepare(b)).collect();
        }
        let per_thread = blocks.len().div_ceil(threads);
        std::thread::scope(|s| {
            let workers: Vec<_> = blocks
                .chunks(per_thread)
                .map(|part| s.spawn(move || part.iter().map(|b| self.prepare(b)).collect()))
                .collect();
            let mut out = Vec::with_capacity(blocks.len());
            for w in workers {
                let part: Result<Vec<Prepared>> = w
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                out.extend(part?);
            }
            Ok(out)
        })
    }

    /// For a block `prepare` found stored: whether it still is. While a gc runs, the
    /// check and the pin are one critical section of `pins` (the gc drops entries under
    /// it too): either the block is pinned before the gc looks at it, and kept, or it was
    /// dropped before this looked, and the caller stores it anew.
    fn keep_known(&self, id: &BlockId) -> Result<bool> {
        let mut pins = lock(&self.pins);
        let Some(set) = pins.as_mut() else {
            return Ok(true);
        };
        if self.contains(id)? {
            set.insert(*id);
            return Ok(true);
        }
        Ok(false)
    }

    /// Appends `rec` unless its block was stored since it was prepared; either way the
    /// block is pinned while a gc runs (see `keep_known`).
    fn append_if_new(&self, writer: &mut PackWriter, rec: &EncodedRecord) -> Result<()> {
        let h = &rec.header;
        {
            let mut pins = lock(&self.pins);
            let stored = self.contains(&h.id)?;
            if let Some(set) = pins.as_mut() {
                set.insert(h.id);
            }
            if stored {
                return Ok(());
            }
        }
        let (pack, offset) = writer.append(&rec.bytes)?;
        let loc = Location {
            pack,
            offset,
            stored_len: h.payload_len,
            raw_len: h.raw_len,
            flags: h.flags,
        };
        write(&self.pending).insert(h.id, loc);
        Ok(())
    }

    /// Whether a running gc must keep `id` whatever its mark says.
    pub(crate) fn pinned(&self, id: &BlockId) -> bool {
        lock(&self.pins)
            .as_ref()
            .is_some_and(|set| set.contains(id))
    }

    fn location(&self, id: &BlockId) -> Result<Option<Location>> {
        if let Some(loc) = read(&self.pending).get(id) {
            return Ok(Some(*loc));
        }
        index::lookup(&self.index, &self.dir, id)
    }

    pub(crate) fn reader(&self, pack: PackId, path: &Path) -> io::Result<Arc<File>> {
        if let Some(f) = read(&self.readers).open.get(&pack) {
            return Ok(f.clone());
        }
        // Opened under the write lock: see `readers`.
        let mut readers = write(&self.readers);
        if let Some(f) = readers.open.get(&pack) {
            return Ok(f.clone());
        }
        if readers.deleting.contains(&pack) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let file = Arc::new(File::open(path)?);
        if readers.open.len() >= MAX_OPEN_READERS {
            readers.open.clear();
        }
        readers.open.insert(pack, file.clone());
        Ok(file)
    }

    /// Reads and checks the record of `id` at `loc`: never returns wrong bytes.
    pub(crate) fn read_block(&self, id: &BlockId, loc: &Location) -> Result<Vec<u8>> {
        let path = self.pack_path(loc.pack);
        // Logged by `get` once it is sure the block has not just moved.
        let corrupt = |detail: String| Error::Corrupt {
            path: path.clone(),
            offset: loc.offset,
            detail,
        };
        let file = match self.reader(loc.pack, &path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt("the pack file is missing".into()))
            }
            Err(source) => return Err(Error::Io { path, source }),
        };
        // Header and payload in one call, the payload's length from the index; the
        // header read with it must then agree with the index.
        let mut hb = [0u8; RECORD_HEADER_LEN];
        let payload =
            match pread::read_record_at(&file, &mut hb, loc.stored_len as usize, loc.offset) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(corrupt(format!(
                        "the pack ends inside the record ({} bytes at {})",
                        RECORD_HEADER_LEN as u64 + u64::from(loc.stored_len),
                        loc.offset
                    )))
                }
                Err(source) => return Err(Error::Io { path, source }),
            };
        let header = RecordHeader::decode(&hb).map_err(corrupt)?;
        if header.id != *id {
            return Err(corrupt(format!(
                "the record there holds block {}",
                header.id
            )));
        }
        if !loc.matches(&header) {
            return Err(corrupt(format!(
                "record header ({} stored, {} raw, flags {:#04x}) disagrees with the index \
                 ({} stored, {} raw, flags {:#04x})",
                header.payload_len,
                header.raw_len,
                header.flags,
                loc.stored_len,
                loc.raw_len,
                loc.flags
            )));
        }
        record::open_payload(&header, payload).map_err(corrupt)
    }
}

/// Creates `dir` (and missing parents) and fsyncs its parent so the entry survives.
fn create_dir_durably(dir: &Path) -> Result<()> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(parent))?;
    }
    Ok(())
}

impl Drop for BlockStore {
    fn drop(&mut self) {
        if let Err(e) = lock(&self.writer).close() {
            tracing::error!("closing the block store: {e}");
        }
    }
}
