//! `Store`: an open store directory — its superblock, lock, metadata, blocks, and the
//! live generation's in-memory state (the overlay and buffered file data).
//!
//! Locking: `state` (one mutex) guards all metadata and buffered data. Block fetches and
//! decompression for reads of committed data run outside it. The background committer
//! takes the same mutex to commit. `gc_fence` keeps a gc from dropping a block between a
//! read's lookup and its fetch, and from deleting a pack under a fetch (gc.rs). Lock
//! order: a gc session (`BlockStore::gc_begin`, taken only by `Store::gc`, with nothing
//! else held) before `gc_fence` before `state` before the blockstore's internal locks;
//! nothing takes `state` while holding a blockstore lock, nor `gc_fence` while holding
//! `state`. A gc's sweep holds no lock of this layer but `gc_fence`, briefly, around each
//! pack deletion. `relocation` (the queue of defragmentation on read, and the ranges
//! commits rewrote) is a leaf: held only to push or take ids and ranges, with or
//! without `gc_fence` or `state`, never while taking another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use strata_blockstore::{self as blockstore, BlockStore};

use crate::codec::InodeRecord;
use crate::config::{StoreConfig, CONFIG_FILE};
use crate::error::{Error, Result};
use crate::generation::{self, GenerationRecord, Generations, MAIN_BRANCH};
use crate::keys;
use crate::lock::StoreLock;
use crate::meta::{Meta, META_DIR};
use crate::types::{FileKind, GenerationId, InodeNo, Timestamp};

pub const PACKS_DIR: &str = "packs";
/// Largest pack file before it is sealed.
const MAX_PACK_SIZE: u64 = 256 << 20;
/// Buffered file data above which a background commit is started.
const DIRTY_SOFT_LIMIT: usize = 32 << 20;
/// Buffered file data above which writers commit before buffering more.
const DIRTY_HARD_LIMIT: usize = 128 << 20;

#[derive(Clone, Debug)]
pub struct InitOptions {
    pub block_size: u32,
    pub compression_level: i32,
}

/// Buffered (not yet committed) content of one file: whole blocks, by block index.
#[derive(Default)]
pub(crate) struct DirtyFile {
    pub blocks: std::collections::BTreeMap<u64, DirtyBlock>,
}

/// One buffered block: its whole content, and the bytes changed since the intent log
/// last took it.
pub(crate) struct DirtyBlock {
    pub data: Box<[u8]>,
    /// `start..end` of the bytes changed since the last intent-log record took this
    /// block (one range covering every change), if any.
    pub unlogged: Option<(u32, u32)>,
}

impl DirtyBlock {
    /// Notes that bytes `range` changed.
    pub fn touch(&mut self, range: std::ops::Range<usize>) {
        let (a, b) = (range.start as u32, range.end as u32);
        self.unlogged = Some(match self.unlogged {
            Some((x, y)) => (x.min(a), y.max(b)),
            None => (a, b),
        });
    }
}

pub(crate) struct State {
    pub meta: Meta,
    /// Every generation; heads and snapshots are looked up here.
    pub gens: Generations,
    /// The view of each branch's live generation.
    pub heads: HashMap<String, crate::generation::View>,
    /// Buffered file data, by (live generation, inode).
    pub dirty: HashMap<(GenerationId, InodeNo), DirtyFile>,
    pub dirty_bytes: usize,
    /// References per inode of a live generation: open handles plus kernel lookups (an
    /// unlinked inode lives while this is non-zero).
    pub open: HashMap<(GenerationId, InodeNo), u64>,
    /// Open file handles per inode of a live generation (rollback refuses while any).
    pub handles: HashMap<(GenerationId, InodeNo), u64>,
    /// Open file handles per snapshot generation: flattening leaves a deleted one alone
    /// while any is open, so they go on reading exactly what the snapshot held.
    pub frozen_open: HashMap<GenerationId, u64>,
    pub next_ino: u64,
    pub next_gen: u64,
    /// Set after a failed commit: later writes are refused (never pretend after a failed
    /// fsync).
    pub poisoned: Option<String>,
    /// Write requests that may be the first part of a write call the kernel split (see
    /// `split_writes`): end offset and arrival time, per (live generation, inode).
    pub partial_writes: HashMap<(GenerationId, InodeNo), (u64, std::time::Instant)>,
    /// Buffered blocks dropped since the last intent-log record (it tells replay to drop
    /// them too); cleared by a commit.
    pub dirty_dropped: Vec<(GenerationId, InodeNo, u64)>,
    /// Some buffered block changed (or was dropped) since the last intent-log record.
    pub data_unlogged: bool,
    /// Bytes of buffered data changed since the last intent-log record (an estimate: the
    /// sum of the changes, overlapping ones counted twice).
    pub unlogged_bytes: u64,
    /// The intent log could not take a record for lack of space: fsyncs commit until a
    /// commit succeeds (what that record held is in memory only).
    pub log_needs_commit: bool,
    /// Intent-log records collected in this process (a record's sequence number in
    /// `intent_log::sync`'s group commit; a commit counts as one).
    pub log_collected: u64,
}

/// See `Store::activity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    pub dirty_bytes: u64,
    /// Seconds since the epoch of the last commit since the store was opened.
    pub last_commit: Option<i64>,
    pub relocation_queued_bytes: u64,
    /// The block cache (docs/packs.md, "Block cache").
    pub block_cache: blockstore::CacheStats,
}

pub struct Store {
    pub(crate) path: PathBuf,
    pub(crate) config: StoreConfig,
    pub(crate) blocks: BlockStore,
    pub(crate) state: Mutex<State>,
    /// Taken for writing by `gc` over its mark (before `state`) and around each pack
    /// deletion of its sweep; for reading by a file read from its block-map lookup to the
    /// end of its block fetches (before `state`): a read that looked blocks up before a
    /// gc's mark fetches them before the sweep can drop them, and no pack is deleted
    /// while a read fetches.
    pub(crate) gc_fence: RwLock<()>,
    /// One flatten run at a time (the daemon's background one, or a requested one).
    pub(crate) flatten_serial: Mutex<()>,
    /// Tests: a pause between a read's block-map lookup and its block fetches.
    #[cfg(test)]
    pub(crate) read_pause_us: std::sync::atomic::AtomicU64,
    /// Tests: the sweep's step size (entries), instead of the default.
    #[cfg(test)]
    pub(crate) gc_batch_entries: std::sync::atomic::AtomicUsize,
    /// Tests: called between the steps of a gc's sweep (no lock held).
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub(crate) gc_step_hook: Mutex<Option<Box<dyn FnMut() + Send>>>,
    background: Mutex<Option<JoinHandle<()>>>,
    wake: Condvar,
    stop: AtomicBool,
    /// Set when the last open file of a deleted snapshot closed: flattening can take its
    /// generation now (`take_flatten_wanted`).
    flatten_wanted: AtomicBool,
    /// Blocks long reads (`defrag_on_read`) or looks at rewritten ranges
    /// (`defrag_rewritten`) found scattered, for the daemon to lay out again.
    pub(crate) relocation: Mutex<crate::defrag_on_read::RelocationQueue>,
    /// Files changed less than this many seconds ago are not queued.
    pub(crate) hot_secs: std::sync::atomic::AtomicI64,
    /// When a write last came (ms since the epoch): relocation waits for a pause.
    pub(crate) last_write_ms: std::sync::atomic::AtomicI64,
    /// When the last commit of this process succeeded (seconds since the epoch; 0: none).
    last_commit_secs: std::sync::atomic::AtomicI64,
    /// Who writes the intent log and how far it is durable (`intent_log::sync`; after
    /// `state` in the lock order).
    pub(crate) log: Mutex<crate::intent_log::sync::LogControl>,
    pub(crate) log_cv: Condvar,
    /// The intent log file, used by the one writer `log` names.
    pub(crate) log_file: Mutex<Option<crate::intent_log::IntentLog>>,
    _lock: StoreLock,
}

const STATE_NEXT_INO: &str = "next_ino";
const STATE_NEXT_GEN: &str = "next_gen";
/// Written by `init` (the first head of `main`); heads are found from the generation
/// records since snapshots exist.
const STATE_LIVE_GEN: &str = "live_gen";

impl Store {
    /// Creates a new, empty store in `path` (created if missing; must be empty).
    pub fn init(path: &Path, opts: &InitOptions) -> Result<()> {
        let cfg = StoreConfig::new(opts.block_size, opts.compression_level)?;
        if path.join(CONFIG_FILE).exists() {
            return Err(Error::Invalid(format!(
                "{} is already a strata store",
                path.display()
            )));
        }
        match std::fs::read_dir(path) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(Error::Invalid(format!(
                        "{} is not empty; a new store needs an empty or missing directory",
                        path.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(Error::Invalid(format!(
                    "{} exists and is not a directory",
                    path.display()
                )))
            }
            Err(e) => return Err(Error::io(path, e)),
        }
        let lock = StoreLock::acquire(path)?;
        std::fs::create_dir_all(path.join(PACKS_DIR))
            .map_err(|e| Error::io(path.join(PACKS_DIR), e))?;
        {
            let mut meta = Meta::open(path)?;
            let live = GenerationId(1);
            meta.set_view(&generation::View {
                gen: live,
                ancestors: Default::default(),
            });
            let now = Timestamp::now();
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            let root = InodeRecord {
                kind: FileKind::Dir,
                perm: 0o755,
                uid,
                gid,
                nlink: 2,
                size: 0,
                blocks: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                rdev: 0,
                parent: InodeNo::ROOT,
                target: Vec::new(),
            };
            meta.put(&keys::inode(InodeNo::ROOT), &root.encode());
            meta.put_raw(
                keys::generation(live),
                GenerationRecord::new_live(None, now, MAIN_BRANCH).encode(),
            );
            meta.put_raw(keys::state(STATE_LIVE_GEN), live.0.to_le_bytes().to_vec());
            meta.put_raw(keys::state(STATE_NEXT_GEN), 2u64.to_le_bytes().to_vec());
            meta.put_raw(
                keys::state(STATE_NEXT_INO),
                InodeNo::FIRST_FREE.to_le_bytes().to_vec(),
            );
            meta.commit()?;
        }
        crate::durable::fsync_dir(&path.join(META_DIR))?;
        // strata.toml last: a directory without it is not (yet) a store.
        cfg.write_new(path)?;
        drop(lock);
        Ok(())
    }

    /// Opens the store at `path`, taking its lock. Unlinked-but-open inodes left by a
    /// crash are removed.
    pub fn open(path: &Path) -> Result<Arc<Store>> {
        let meta_md = std::fs::metadata(path);
        match meta_md {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::NotAStore {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Invalid(format!(
                    "store {} does not exist; create it with `strata init {}`",
                    path.display(),
                    path.display()
                )))
            }
            Err(e) => return Err(Error::io(path, e)),
        }
        let path = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
        let config = StoreConfig::load(&path)?;
        let lock = StoreLock::acquire(&path)?;
        let mut meta = Meta::open(&path)?;
        let read_u64 = |meta: &Meta, name: &str| -> Result<u64> {
            let v = meta
                .get_raw(&keys::state(name))?
                .ok_or_else(|| Error::BadRecord {
                    key: name.into(),
                    detail: "missing".into(),
                })?;
            Ok(u64::from_le_bytes(v.as_slice().try_into().map_err(
                |_| Error::BadRecord {
                    key: name.into(),
                    detail: "not 8 bytes".into(),
                },
            )?))
        };
        let next_gen = read_u64(&meta, STATE_NEXT_GEN)?;
        let next_ino = read_u64(&meta, STATE_NEXT_INO)?;
        let gens = generation::load_all(&meta)?;
        let main = gens.head(MAIN_BRANCH).ok_or_else(|| Error::BadRecord {
            key: "generations".into(),
            detail: "no live generation heads the main branch".into(),
        })?;
        meta.set_view(&gens.view(main)?);
        let blocks = BlockStore::open(
            &path.join(PACKS_DIR),
            meta.block_index_tree()?,
            blockstore::Config {
                compression_level: config.compression_level,
                max_pack_size: MAX_PACK_SIZE,
                cache_bytes: config.block_cache_mib.saturating_mul(1 << 20),
            },
        )?;
        let store = Arc::new(Store {
            path,
            config,
            blocks,
            state: Mutex::new(State {
                meta,
                heads: HashMap::new(),
                gens,
                dirty: HashMap::new(),
                dirty_bytes: 0,
                open: HashMap::new(),
                handles: HashMap::new(),
                frozen_open: HashMap::new(),
                next_ino,
                next_gen,
                poisoned: None,
                partial_writes: HashMap::new(),
                dirty_dropped: Vec::new(),
                data_unlogged: false,
                unlogged_bytes: 0,
                log_needs_commit: false,
                log_collected: 0,
            }),
            gc_fence: RwLock::new(()),
            flatten_serial: Mutex::new(()),
            #[cfg(test)]
            read_pause_us: Default::default(),
            #[cfg(test)]
            gc_batch_entries: Default::default(),
            #[cfg(test)]
            gc_step_hook: Mutex::new(None),
            background: Mutex::new(None),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            flatten_wanted: AtomicBool::new(false),
            relocation: Mutex::default(),
            hot_secs: std::sync::atomic::AtomicI64::new(crate::defrag_on_read::HOT_SECS),
            last_write_ms: std::sync::atomic::AtomicI64::new(0),
            last_commit_secs: std::sync::atomic::AtomicI64::new(0),
            log: Mutex::default(),
            log_cv: Condvar::new(),
            log_file: Mutex::new(None),
            _lock: lock,
        });
        store.lock().refresh_heads()?;
        store.open_intent_log()?;
        store.remove_orphans()?;
        Ok(store)
    }

    /// Opens the intent log and replays the records of the current epoch over the last
    /// commit, then commits them (docs/intent-log.md, "Replay").
    fn open_intent_log(&self) -> Result<()> {
        let mut st = self.lock();
        let epoch = match st
            .meta
            .get_raw(&keys::state(crate::intent_log::sync::EPOCH_KEY))?
        {
            Some(v) => {
                u64::from_le_bytes(v.as_slice().try_into().map_err(|_| Error::BadRecord {
                    key: crate::intent_log::sync::EPOCH_KEY.into(),
                    detail: "not 8 bytes".into(),
                })?)
            }
            None => 0,
        };
        let max = self.config.intent_log_mib.max(4) << 20;
        let (log, records) = crate::intent_log::IntentLog::open(&self.path, epoch, max)?;
        *self.log_file.lock().unwrap_or_else(|p| p.into_inner()) = Some(log);
        if records.is_empty() {
            return Ok(());
        }
        let n = records.len();
        let entries = self.replay_log(&mut st, records)?;
        tracing::info!(records = n, entries, "replayed the intent log");
        self.commit_locked(&mut st)
    }

    /// Waits until the block index and the metadata are loaded into sled's cache (see
    /// `meta::Meta::open`), for at most `max`; the warm-up goes on in the background
    /// after that. A daemon calls it before it serves: the first reads after a mount then
    /// find the trees parsed instead of parsing them page by page, cold, while the warm-up
    /// competes with them (after 1000 generations of a 256 MiB file: cold sequential reads
    /// at once at ~1.0× of those of a 1-generation store instead of ~0.7×; `strata mount`
    /// 0.71 s).
    pub fn wait_for_warm_up(&self, max: std::time::Duration) {
        let Some(done) = self.lock().meta.take_warm_done() else {
            return;
        };
        let started = std::time::Instant::now();
        // Nothing is ever sent: the warm-up ends by dropping the sender.
        let finished = matches!(
            done.recv_timeout(max),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
        tracing::debug!(
            finished,
            waited_ms = started.elapsed().as_millis() as u64,
            "waited for the warm-up of the block index and metadata"
        );
    }

    /// Whether a deleted snapshot's generation became free to flatten (its last open
    /// file closed) since the last call.
    pub fn take_flatten_wanted(&self) -> bool {
        self.flatten_wanted.swap(false, Ordering::AcqRel)
    }

    /// Whether files of snapshot generation `g` are open (a deleted snapshot then stays
    /// readable through them until they close).
    pub fn has_open_files(&self, g: GenerationId) -> bool {
        self.open_file_count(g) > 0
    }

    /// How many files of snapshot generation `g` are open.
    pub fn open_file_count(&self, g: GenerationId) -> u64 {
        self.lock().frozen_open.get(&g).copied().unwrap_or(0)
    }

    pub(crate) fn want_flatten(&self) {
        self.flatten_wanted.store(true, Ordering::Release);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn block_size(&self) -> u32 {
        self.config.block_size
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the background committer: buffered changes become durable within the
    /// store's commit interval, or sooner when much data is buffered.
    pub fn start_background(self: &Arc<Self>) {
        let mut bg = self.background.lock().unwrap();
        if bg.is_some() {
            return;
        }
        let weak = Arc::downgrade(self);
        let interval = Duration::from_secs(self.config.commit_interval_secs.max(1));
        *bg = Some(
            std::thread::Builder::new()
                .name("strata-commit".into())
                .spawn(move || loop {
                    let Some(store) = weak.upgrade() else { return };
                    if store.stop.load(Ordering::Acquire) {
                        return;
                    }
                    {
                        let st = store.lock();
                        let st = if st.dirty_bytes < DIRTY_SOFT_LIMIT && !store.log_filling(0.5) {
                            store.wake.wait_timeout(st, interval).unwrap().0
                        } else {
                            st
                        };
                        drop(st);
                    }
                    if store.stop.load(Ordering::Acquire) {
                        return;
                    }
                    if let Err(e) = store.sync() {
                        tracing::error!(error = %e, "background commit failed");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                })
                .expect("spawn commit thread"),
        );
    }

    /// Called after buffering data: wakes the committer past the soft limit, and commits
    /// inline past the hard limit (back-pressure on writers).
    pub(crate) fn after_dirtying(&self, st: &mut MutexGuard<'_, State>) -> Result<()> {
        if st.dirty_bytes >= DIRTY_HARD_LIMIT {
            self.commit_locked(st)?;
        } else if st.dirty_bytes >= DIRTY_SOFT_LIMIT {
            self.wake.notify_all();
        }
        Ok(())
    }

    /// Refuses every later write and commit (after a fault that may have left the
    /// in-memory state half changed); what was committed stays as it is on disk.
    pub fn poison(&self, why: String) {
        self.lock().poison(why);
    }

    /// Why the store refuses writes (it could not make data durable), if it does.
    pub fn refusing_writes(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }

    /// Makes every change so far durable with a commit (unmount, the commit interval).
    pub fn sync(&self) -> Result<()> {
        let mut st = self.lock();
        self.commit_locked(&mut st)
    }

    /// The commit protocol (docs/metadata.md): seal buffered blocks into packs, fsync the
    /// packs and record them in the block index, then apply all metadata changes as one
    /// atomic batch and flush/fsync sled. It is also the intent log's checkpoint: the
    /// batch moves the log to its next epoch, so the records so far stop counting once
    /// the commit is durable (docs/intent-log.md).
    pub(crate) fn commit_locked(&self, st: &mut State) -> Result<()> {
        if let Some(p) = &st.poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        if st.dirty.is_empty() && !st.meta.is_dirty() {
            return Ok(());
        }
        self.lead_log_for_commit();
        let epoch = self.next_log_epoch();
        let committed = self.commit_as_leader(st, epoch);
        self.end_commit_lead(st, committed.is_ok().then_some(epoch));
        committed
    }

    fn commit_as_leader(&self, st: &mut State, epoch: u64) -> Result<()> {
        let view = st.meta.view().clone();
        let sealed = self.seal_dirty(st);
        st.meta.set_view(&view);
        sealed?;
        if let Err(e) = self.blocks.sync() {
            st.poison(e.to_string());
            return Err(e.into());
        }
        st.meta.put_raw(
            keys::state(STATE_NEXT_INO),
            st.next_ino.to_le_bytes().to_vec(),
        );
        st.meta.put_raw(
            keys::state(STATE_NEXT_GEN),
            st.next_gen.to_le_bytes().to_vec(),
        );
        st.meta.put_raw(
            keys::state(crate::intent_log::sync::EPOCH_KEY),
            epoch.to_le_bytes().to_vec(),
        );
        // The read index: checkpoints where this commit made a live head's walk long.
        let gens = &st.gens;
        let live = |g| {
            gens.all
                .get(&g)
                .filter(|r| r.state == crate::generation::STATE_LIVE)
                .and_then(|_| gens.view(g).ok())
        };
        // Nothing is written yet if it fails, but the buffers are sealed into block-map
        // records whose index entries sled holds only in memory: an intent-log record
        // must not take them (it would name blocks a crash could lose). Refuse writes.
        if let Err(e) = st.meta.bound_staged_walks(&live) {
            st.poison(e.to_string());
            return Err(e);
        }
        if let Err(e) = st.meta.commit() {
            st.poison(e.to_string());
            return Err(e);
        }
        self.last_commit_secs
            .store(Timestamp::now().secs, Ordering::Relaxed);
        Ok(())
    }

    /// What `strata status` shows of the store's own work: data buffered and not yet
    /// sealed into packs, the last commit, blocks queued to be laid out again.
    pub fn activity(&self) -> Activity {
        let dirty_bytes = self.lock().dirty_bytes as u64;
        let relocation_queued_bytes =
            self.relocation.lock().unwrap().ids.len() as u64 * u64::from(self.config.block_size);
        let last = self.last_commit_secs.load(Ordering::Relaxed);
        Activity {
            dirty_bytes,
            last_commit: (last > 0).then_some(last),
            relocation_queued_bytes,
            block_cache: self.blocks.cache_stats(),
        }
    }

    /// Stops the background committer and commits everything.
    pub fn close(&self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_all();
        if let Some(h) = self.background.lock().unwrap().take() {
            let _ = h.join();
        }
        // Nobody refers to unlinked inodes any more.
        self.lock().open.clear();
        self.remove_orphans()?;
        self.sync()
    }

    /// Removes, in every branch, the inodes that were unlinked while open and are no
    /// longer referenced (at open: left by a crash; at close: by anything).
    fn remove_orphans(&self) -> Result<()> {
        let mut st = self.lock();
        let heads: Vec<GenerationId> = st.gens.heads().map(|(g, _)| g).collect();
        let mut any = false;
        for head in heads {
            let view = st.gens.view(head)?;
            st.meta.set_view(&view);
            for (base, _) in st.meta.scan(&[keys::ORPHAN])? {
                let ino = keys::key_ino(&base);
                if st.open.contains_key(&(head, ino)) {
                    continue;
                }
                tracing::info!(
                    ino = ino.0,
                    gen = head.0,
                    "removing inode unlinked while open"
                );
                self.destroy_inode(&mut st, ino)?;
                any = true;
            }
        }
        if any {
            self.commit_locked(&mut st)?;
        }
        Ok(())
    }
}

impl State {
    /// Refuses every later write and commit, after the store could not make data durable
    /// (a failed fsync or sled flush: the kernel may have dropped what it could not write,
    /// so a retry could report success for lost data) or a fault left its memory half
    /// changed. Logs one error line, the first time. Reads go on.
    pub(crate) fn poison(&mut self, why: String) {
        if self.poisoned.is_none() {
            tracing::error!(
                "refusing writes until the store is mounted again (reads go on): {why}"
            );
            self.poisoned = Some(why);
        }
    }

    /// Rebuilds the branch → view table from the generation records.
    pub(crate) fn refresh_heads(&mut self) -> Result<()> {
        let mut heads = HashMap::new();
        for (g, r) in self.gens.heads() {
            heads.insert(r.branch.clone(), self.gens.view(g)?);
        }
        self.heads = heads;
        Ok(())
    }

    /// The generation the state is pointed at (see `Volume::lock`).
    pub(crate) fn cur(&self) -> GenerationId {
        self.meta.view().gen
    }

    pub(crate) fn dirty_of(&self, ino: InodeNo) -> Option<&DirtyFile> {
        self.dirty.get(&(self.cur(), ino))
    }

    pub(crate) fn dirty_of_mut(&mut self, ino: InodeNo) -> Option<&mut DirtyFile> {
        let k = (self.cur(), ino);
        self.dirty.get_mut(&k)
    }

    pub(crate) fn dirty_entry(&mut self, ino: InodeNo) -> &mut DirtyFile {
        let k = (self.cur(), ino);
        self.dirty.entry(k).or_default()
    }

    /// Drops every buffered block of `ino` (noted for the intent log).
    pub(crate) fn dirty_remove(&mut self, ino: InodeNo) -> Option<DirtyFile> {
        let k = (self.cur(), ino);
        let d = self.dirty.remove(&k)?;
        for idx in d.blocks.keys() {
            self.dirty_dropped.push((k.0, ino, *idx));
        }
        self.data_unlogged = true;
        Some(d)
    }

    /// Drops the buffered block `idx` of `ino` (noted for the intent log); whether there
    /// was one.
    pub(crate) fn dirty_drop_block(&mut self, ino: InodeNo, idx: u64) -> bool {
        let k = (self.cur(), ino);
        let Some(d) = self.dirty.get_mut(&k) else {
            return false;
        };
        if d.blocks.remove(&idx).is_none() {
            return false;
        }
        self.dirty_dropped.push((k.0, ino, idx));
        self.data_unlogged = true;
        true
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_all();
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if st.poisoned.is_none() && (!st.dirty.is_empty() || st.meta.is_dirty()) {
            tracing::warn!("store dropped with uncommitted changes; call close() to keep them");
        }
        if st.poisoned.is_some() {
            st.meta.abandon();
        }
    }
}
