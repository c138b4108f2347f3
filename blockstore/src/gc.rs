//! `BlockStore::gc`: space reclamation (docs/packs.md, "Space reclamation").
//!
//! Mark is the caller's (`is_live`), made after `gc_begin`; this module sweeps, in
//! bounded steps, beside puts, syncs and reads:
//! 1. Under `sync_lock`: seal the active pack and sync (pending blocks into the index),
//!    collecting the pending blocks in the same critical section of the writer as the
//!    seal. From here on every pack below `first_new` is sealed and immutable and every
//!    record in it that any entry will ever name is indexed; every later append (a put's
//!    or this gc's copy) goes to a pack numbered `first_new` or above.
//! 2. One walk over the index (no lock): per pack below `first_new`, the bytes and count
//!    of live records (`is_live || pinned`); the ids of the others ("dead"). A pack is
//!    chosen for deletion when no live record is left in it, for rewriting by `GcPolicy`.
//! 3. Round A, in steps of `batch_entries`: under `pins`, the dead ids of the step that
//!    are not pinned (nor live) are removed in one sled batch; a pinned one is kept
//!    ("rescued"), and its pack moves from the packs to delete to the packs to rewrite.
//!    Then `commit_index` makes the removals durable and the packs with nothing left in
//!    them are deleted (inside `GcHost::delete_packs`), and the directory fsynced.
//! 4. Round B, in groups of up to `batch_bytes` or `batch_entries` copied: each live
//!    record of a chosen pack is read, checked in full (header, payload checksum,
//!    decompression, id) and appended unchanged through the writer. At the end of a
//!    group, under `sync_lock`, the new pack data is fsynced; one sled batch points the
//!    moved entries at their copies; `commit_index`; the packs wholly copied so far are
//!    deleted. A record that fails its check is not copied: it is reported, its entry
//!    stays, and its pack is kept.
//!
//! Puts beside the sweep. `BlockStore::pins` is `Some` from `gc_begin` until the session
//! ends. A put of block X ends in one critical section of `pins` (`keep_known`, or the
//! start of `append_if_new`) that checks whether X is stored (pending or index) and pins
//! X; when X was not stored, the put then appends a new record (under `writer`, which it
//! already holds). A step of round A checks `pinned` and removes entries in one critical
//! section of the same lock. For X among the dead ids, either
//! - the put's section came first: X is pinned, the step sees it and keeps the entry
//!   (and then the pack it points into, which round B rewrites); or
//! - the step came first: X's entry is gone when the put looks, so the put stores X
//!   anew, in a pack at or above `first_new`. The walk listed X once, so no later step of
//!   this gc looks at X again (and X is pinned by then in any case).
//!
//! A put whose check ran before `gc_begin` is the caller's: its mark, made after
//! `gc_begin`, must count every block the caller got from a put before it (the snapshot
//! layer puts and records a block under its state lock, and marks under that lock).
//! Dead ids come from the index, never from pending, and a block in the index is never
//! appended again (the put finds it stored), so pending and the dead list never share
//! an id. No entry below `first_new` is created after step 1, and only round A removes
//! entries: after round A, the entries pointing into an old pack are exactly the live
//! and rescued ones the walk of round B finds, so a pack is deleted only when nothing
//! points into it, and a moved entry cannot change under the gc (a put of its block
//! finds it stored). A copy and a put of the same bytes never both become the entry.
//!
//! Reads beside the sweep: `get` looks a location up, then reads; when the pack vanished
//! meanwhile the entry names the block's copy, and the read is retried there. The gc
//! never drops the entry of a block put since `gc_begin` or marked live, so a reader
//! that only reads such blocks never sees `NotFound` from the sweep; the snapshot layer
//! guarantees it with `gc_fence` (held by the gc over its mark, and around each pack
//! deletion through `GcHost::delete_packs`).
//!
//! Locks held by the sweep, each for a bounded step: `pins` for one batch of up to
//! `batch_entries` removals from the index (no I/O); `sync_lock` for the first seal and
//! sync, and for each group's fsync of at most `batch_bytes` of copies (plus what puts
//! appended meanwhile; a `sync` waits meanwhile, as it waits for another sync); `writer`
//! per copied record; `readers` per batch of deleted packs. `commit_index`,
//! `GcHost::delete_packs` and `GcHost::between_steps` are called with none of them held.
//! The longest hold is reported as `GcStats::max_lock_hold`.
//!
//! Crash safety: an index entry only ever changes to point at bytes already fsynced, and
//! a pack file is deleted only after the index change that left nothing pointing into it
//! is durable. A crash therefore leaves every entry on intact data; what it can leave
//! behind is garbage: records without an entry (in a new pack not yet indexed, or in an
//! old pack not yet deleted). Recovery at open never indexes records (it only seals a
//! torn pack), so such a record is never served, and the next gc deletes or rewrites
//! its pack because nothing live is in it. Running in steps changes none of this: a
//! crash between steps leaves some dead entries removed (removing never makes an entry
//! point at anything), some entries moved to fsynced copies, and old packs that still
//! hold live records, all of which the next gc handles like any other pack.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::index::{self, Entry};
use crate::layout::{Location, RecordHeader, FOOTER_LEN, PACK_HEADER_LEN, RECORD_HEADER_LEN};
use crate::record;
use crate::recovery::list_packs;
use crate::store::BlockStore;
use crate::sync::{lock, write, MutexGuard};
use crate::{BlockId, Error, GcPolicy, GcStats, PackId, Result};

/// Round B deletes the packs it wholly copied at least every this many packs (bounds
/// the packs a crash can leave behind).
const GROUP_PACKS: usize = 64;

/// What a gc needs from its caller besides the mark.
pub trait GcHost {
    /// Makes the index tree durable (flush sled, fsync its files and directory). Called
    /// after each index change a pack deletion depends on, with no lock of the block
    /// store held. An error stops the gc before it deletes anything more.
    fn commit_index(&mut self) -> Result<()>;

    /// Runs `delete`, which unlinks pack files nothing points into any more. The caller
    /// may hold a lock of its own around it (the snapshot layer holds `gc_fence`, so a
    /// file read that looked blocks up before finishes first). Called with no lock of the
    /// block store held.
    fn delete_packs(&mut self, delete: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        delete()
    }

    /// Called between the steps of the sweep, with no lock of the block store held
    /// (tests interleave puts here).
    fn between_steps(&mut self) {}
}

/// A closure is a host that only commits the index.
impl<F: FnMut() -> Result<()>> GcHost for F {
    fn commit_index(&mut self) -> Result<()> {
        self()
    }
}

/// A gc from `BlockStore::gc_begin` to the end of `sweep` (or until dropped): every block
/// put or deduplicated meanwhile is pinned, and the sweep keeps it. One session at a time
/// per store (`gc_begin` waits).
pub struct GcSession<'a> {
    store: &'a BlockStore,
    _serial: MutexGuard<'a, ()>,
}

impl<'a> GcSession<'a> {
    pub(crate) fn begin(store: &'a BlockStore) -> Self {
        let serial = lock(&store.gc_serial);
        *lock(&store.pins) = Some(HashSet::new());
        GcSession {
            store,
            _serial: serial,
        }
    }

    /// Reclaims the space of the blocks that are neither live by `is_live` (the caller's
    /// mark, made after `gc_begin`) nor put since `gc_begin`. See the module doc.
    pub fn sweep(
        self,
        is_live: &dyn Fn(&BlockId) -> bool,
        policy: &GcPolicy,
        host: &mut dyn GcHost,
    ) -> Result<GcStats> {
        run(self.store, is_live, policy, host)
    }
}

impl Drop for GcSession<'_> {
    fn drop(&mut self) {
        *lock(&self.store.pins) = None;
    }
}

/// What the walk of the index found in one pack.
#[derive(Clone, Copy, Debug, Default)]
struct Survey {
    size: u64,
    /// Bytes of the records (header and payload) of live entries.
    live_bytes: u64,
    live_blocks: u64,
}

impl Survey {
    /// Bytes that are neither live records nor the pack's header and footer.
    fn garbage(&self) -> u64 {
        self.size
            .saturating_sub(self.live_bytes + (PACK_HEADER_LEN + FOOTER_LEN) as u64)
    }

    fn live_fraction(&self) -> f64 {
        let used = self.live_bytes + self.garbage();
        if used == 0 {
            1.0
        } else {
            self.live_bytes as f64 / used as f64
        }
    }
}

/// Bumps the store's gc epoch now and when dropped (odd while a gc changes things).
struct EpochGuard<'a>(&'a AtomicU64);

impl<'a> EpochGuard<'a> {
    fn enter(epoch: &'a AtomicU64) -> Self {
        epoch.fetch_add(1, Ordering::SeqCst);
        EpochGuard(epoch)
    }
}

impl Drop for EpochGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The copies of round B not yet committed.
#[derive(Default)]
struct Group {
    moves: Vec<(BlockId, Location)>,
    /// Old packs wholly copied: deleted once the moves are durable.
    packs: Vec<PackId>,
    bytes: u64,
}

impl Group {
    fn full(&self, policy: &GcPolicy) -> bool {
        self.bytes >= policy.batch_bytes
            || self.moves.len() >= policy.batch_entries.max(1)
            || self.packs.len() >= GROUP_PACKS
    }
}

/// The state of one sweep shared by its steps.
struct Sweep<'a> {
    store: &'a BlockStore,
    policy: &'a GcPolicy,
    host: &'a mut dyn GcHost,
    stats: GcStats,
}

impl Sweep<'_> {
    /// Notes how long a lock was held (since `since`).
    fn held(&mut self, since: Instant) {
        let d: Duration = since.elapsed();
        self.stats.max_lock_hold = self.stats.max_lock_hold.max(d);
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sum of the sizes of the pack files (a pack removed meanwhile is not counted).
fn pack_bytes(dir: &Path) -> Result<u64> {
    Ok(list_packs(dir)?
        .iter()
        .filter_map(|(_, path)| std::fs::metadata(path).ok())
        .map(|m| m.len())
        .sum())
}

fn run(
    store: &BlockStore,
    is_live: &dyn Fn(&BlockId) -> bool,
    policy: &GcPolicy,
    host: &mut dyn GcHost,
) -> Result<GcStats> {
    let mut sw = Sweep {
        store,
        policy,
        host,
        stats: GcStats {
            pack_bytes_before: pack_bytes(&store.dir)?,
            ..GcStats::default()
        },
    };
    let live = |id: &BlockId| is_live(id) || store.pinned(id);

    // 1. Every block put so far indexed; every existing pack sealed.
    let first_new = {
        let serial = lock(&store.sync_lock);
        let since = Instant::now();
        let first_new = store.sync_locked(true)?;
        drop(serial);
        sw.held(since);
        first_new
    };

    // 2. Survey.
    let mut packs: BTreeMap<PackId, Survey> = BTreeMap::new();
    for (id, path) in list_packs(&store.dir)? {
        if id.0 >= first_new {
            continue;
        }
        let size = std::fs::metadata(&path).map_err(io_error(&path))?.len();
        packs.insert(
            id,
            Survey {
                size,
                ..Survey::default()
            },
        );
    }
    sw.stats.packs_examined = packs.len() as u64;
    let mut dead: Vec<(BlockId, PackId)> = Vec::new();
    for entry in index::entries(&store.index) {
        // A malformed entry is left alone: verify reports it.
        let Entry::Good(id, loc) = entry? else {
            continue;
        };
        // Entries in packs written since step 1 are all of blocks put since (pinned) or
        // of this gc's copies: not this gc's business.
        let Some(p) = packs.get_mut(&loc.pack) else {
            continue;
        };
        if !live(&id) {
            dead.push((id, loc.pack));
            continue;
        }
        sw.stats.blocks_live += 1;
        p.live_bytes += RECORD_HEADER_LEN as u64 + u64::from(loc.stored_len);
        p.live_blocks += 1;
    }
    let (mut delete, mut rewrite) = choose(&packs, policy);
    tracing::info!(
        packs = packs.len(),
        dead = dead.len(),
        delete = delete.len(),
        rewrite = rewrite.len(),
        "gc: survey done"
    );

    let _epoch = EpochGuard::enter(&store.gc_epoch);

    // 3. Round A: drop dead entries in steps, then delete the packs with nothing left in
    //    them. This needs no free space, so it frees what it can even on a full disk.
    let mut rescued: HashSet<PackId> = HashSet::new();
    for step in dead.chunks(policy.batch_entries.max(1)) {
        let pins = lock(&store.pins);
        let since = Instant::now();
        let mut batch = sled::Batch::default();
        let mut dropped = 0;
        for (id, pack) in step {
            if is_live(id) || pins.as_ref().is_some_and(|set| set.contains(id)) {
                // Put (or deduplicated) since the walk: kept, and so is its pack.
                rescued.insert(*pack);
                sw.stats.blocks_live += 1;
                sw.stats.blocks_revived += 1;
            } else {
                batch.remove(&id.0);
                dropped += 1;
            }
        }
        let applied = store.index.apply_batch(batch);
        drop(pins);
        sw.held(since);
        applied?;
        sw.stats.blocks_dropped += dropped;
        sw.host.between_steps();
    }
    drop(dead);
    if !rescued.is_empty() {
        // A pack chosen for deletion that a rescued entry points into is rewritten
        // instead (its survey was made before the rescue).
        tracing::info!(
            packs = rescued.len(),
            "gc: blocks put during the gc keep their packs"
        );
        rewrite.extend(delete.iter().filter(|p| rescued.contains(p)));
        rewrite.sort();
        delete.retain(|p| !rescued.contains(p));
    }
    if sw.stats.blocks_dropped > 0 || !delete.is_empty() {
        sw.host.commit_index()?;
        if !delete.is_empty() {
            sw.host.delete_packs(&mut || delete_packs(store, &delete))?;
            sw.stats.packs_deleted = delete.len() as u64;
            sw.host.between_steps();
        }
    }

    // 4. Round B: copy the live records of the packs to rewrite, in groups.
    if !rewrite.is_empty() {
        let chosen: HashSet<PackId> = rewrite.iter().copied().collect();
        let mut moving: HashMap<PackId, Vec<(BlockId, Location)>> = HashMap::new();
        for entry in index::entries(&store.index) {
            if let Entry::Good(id, loc) = entry? {
                if chosen.contains(&loc.pack) {
                    moving.entry(loc.pack).or_default().push((id, loc));
                }
            }
        }
        let mut group = Group::default();
        for pack in rewrite {
            let mut entries = moving.remove(&pack).unwrap_or_default();
            entries.sort_by_key(|(_, loc)| loc.offset);
            match copy_pack(&mut sw, pack, &entries, &mut group) {
                Ok(true) => group.packs.push(pack),
                Ok(false) => {}
                Err(e) => {
                    // Keep what was copied so far (it is valid), then stop.
                    commit_group(&mut sw, &mut group)?;
                    return Err(e);
                }
            }
            if group.full(policy) {
                commit_group(&mut sw, &mut group)?;
            }
        }
        commit_group(&mut sw, &mut group)?;
    }

    let mut stats = sw.stats;
    stats.pack_bytes_after = pack_bytes(&store.dir)?;
    tracing::info!(
        packs_examined = stats.packs_examined,
        packs_rewritten = stats.packs_rewritten,
        packs_deleted = stats.packs_deleted,
        blocks_dropped = stats.blocks_dropped,
        blocks_revived = stats.blocks_revived,
        blocks_moved = stats.blocks_moved,
        before = stats.pack_bytes_before,
        after = stats.pack_bytes_after,
        max_lock_ms = stats.max_lock_hold.as_secs_f64() * 1000.0,
        "gc done"
    );
    Ok(stats)
}

/// The packs to delete (nothing live in them) and to rewrite, both by id.
fn choose(packs: &BTreeMap<PackId, Survey>, policy: &GcPolicy) -> (Vec<PackId>, Vec<PackId>) {
    let mut delete = Vec::new();
    let mut rewrite = Vec::new();
    let mut kept: Vec<(PackId, Survey)> = Vec::new();
    // Bytes of live records everywhere plus the garbage of the packs kept as they are.
    let (mut total, mut unused) = (0u64, 0u64);
    for (id, p) in packs {
        if p.live_blocks == 0 {
            delete.push(*id);
            continue;
        }
        total += p.live_bytes;
        if p.garbage() > 0 && p.live_fraction() < policy.min_live_fraction {
            rewrite.push(*id);
        } else {
            total += p.garbage();
            unused += p.garbage();
            if p.garbage() > 0 {
                kept.push((*id, *p));
            }
        }
    }
    // Then the least live packs, until the garbage left is within the budget.
    kept.sort_by(|a, b| a.1.live_fraction().total_cmp(&b.1.live_fraction()));
    for (id, p) in kept {
        if unused as f64 <= policy.max_unused_fraction * total as f64 {
            break;
        }
        rewrite.push(id);
        unused -= p.garbage();
        total -= p.garbage();
    }
    rewrite.sort();
    (delete, rewrite)
}

/// Appends a checked copy of every record of `entries` (all in `pack`, by offset) and
/// notes the moves in `group`, committing the group whenever it is full (the pack's
/// records may span several groups; the pack joins the group of its last record).
/// Ok(false) when a record failed its check (the pack must then be kept).
fn copy_pack(
    sw: &mut Sweep<'_>,
    pack: PackId,
    entries: &[(BlockId, Location)],
    group: &mut Group,
) -> Result<bool> {
    let path = sw.store.pack_path(pack);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            sw.stats.problems.push(format!(
                "{}: cannot open to rewrite it: {e}; left as it is",
                path.display()
            ));
            return Ok(false);
        }
    };
    let mut intact = true;
    for (id, loc) in entries {
        let bytes = match read_record(&file, id, loc) {
            Ok(b) => b,
            Err(detail) => {
                tracing::error!(path = %path.display(), offset = loc.offset, block = %id,
                    "gc: damaged record not copied: {detail}");
                sw.stats.problems.push(format!(
                    "{} offset {}: block {id} is damaged ({detail}); not copied, its pack is \
                     kept (run strata verify)",
                    path.display(),
                    loc.offset
                ));
                intact = false;
                continue;
            }
        };
        let (new_pack, offset) = lock(&sw.store.writer).append(&bytes)?;
        group.moves.push((
            *id,
            Location {
                pack: new_pack,
                offset,
                ..*loc
            },
        ));
        group.bytes += bytes.len() as u64;
        sw.stats.blocks_moved += 1;
        sw.stats.bytes_moved += bytes.len() as u64;
        if group.full(sw.policy) {
            commit_group(sw, group)?;
        }
    }
    Ok(intact)
}

/// The record of `id` at `loc`, header and payload, after checking all of it.
pub(crate) fn read_record(
    file: &File,
    id: &BlockId,
    loc: &Location,
) -> std::result::Result<Vec<u8>, String> {
    let len = RECORD_HEADER_LEN + loc.stored_len as usize;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, loc.offset)
        .map_err(|e| format!("reading {len} bytes: {e}"))?;
    let mut hb = [0u8; RECORD_HEADER_LEN];
    hb.copy_from_slice(&bytes[..RECORD_HEADER_LEN]);
    let header = RecordHeader::decode(&hb)?;
    if header.id != *id {
        return Err(format!("the record there holds block {}", header.id));
    }
    if !loc.matches(&header) {
        return Err("the record header disagrees with the index".into());
    }
    record::open_payload(&header, bytes[RECORD_HEADER_LEN..].to_vec())?;
    Ok(bytes)
}

/// Makes the group's copies durable, points their entries at them, makes that durable,
/// then deletes the old packs the group wholly copied.
fn commit_group(sw: &mut Sweep<'_>, group: &mut Group) -> Result<()> {
    let group = std::mem::take(group);
    if group.moves.is_empty() && group.packs.is_empty() {
        return Ok(());
    }
    let store = sw.store;
    {
        // Under `sync_lock`: a sync that planned (and took) some of these copies before
        // has finished fsyncing them by the time this plan runs.
        let serial = lock(&store.sync_lock);
        let since = Instant::now();
        let planned = lock(&store.writer).plan_sync();
        let synced = planned.and_then(|plan| store.run_sync_plan(plan));
        drop(serial);
        sw.held(since);
        synced?;
    }
    if !group.moves.is_empty() {
        index::insert_all(&store.index, &group.moves)?;
    }
    sw.host.commit_index()?;
    tracing::info!(
        moved = group.moves.len(),
        packs = group.packs.len(),
        "gc: moves committed, deleting the old packs"
    );
    if !group.packs.is_empty() {
        sw.host
            .delete_packs(&mut || delete_packs(store, &group.packs))?;
        sw.stats.packs_rewritten += group.packs.len() as u64;
    }
    sw.host.between_steps();
    Ok(())
}

/// Deletes pack files nothing points into any more (durably: the directory is fsynced),
/// with their cached read handles. The handles go first, under the `readers` lock, and
/// the packs are marked `deleting` there so none is opened again; the files are
/// unlinked without the lock (reads of other packs go on meanwhile).
fn delete_packs(store: &BlockStore, packs: &[PackId]) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    if lock(&store.writer).faults.gc_crash_before_delete {
        return Err(Error::Io {
            path: store.dir.clone(),
            source: io::Error::other("simulated crash before deleting packs"),
        });
    }
    {
        let mut readers = write(&store.readers);
        for pack in packs {
            readers.open.remove(pack);
            readers.deleting.insert(*pack);
        }
    }
    let unlinked = packs.iter().try_for_each(|pack| {
        let path = store.pack_path(*pack);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(pack = %pack, "gc: deleted pack");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    });
    {
        let mut readers = write(&store.readers);
        for pack in packs {
            readers.deleting.remove(pack);
        }
    }
    unlinked?;
    File::open(&store.dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(&store.dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survey(size: u64, live: u64) -> Survey {
        Survey {
            size: size + 40,
            live_bytes: live,
            live_blocks: u64::from(live > 0),
        }
    }

    #[test]
    fn choice_follows_the_policy() {
        let policy = GcPolicy::default();
        let packs: BTreeMap<PackId, Survey> = [
            (PackId(0), survey(1000, 0)),    // nothing live: delete
            (PackId(1), survey(1000, 400)),  // 40% live: rewrite
            (PackId(2), survey(1000, 1000)), // all live: keep
            (PackId(3), survey(1000, 990)),  // 1% garbage: within the budget
        ]
        .into();
        assert_eq!(choose(&packs, &policy), (vec![PackId(0)], vec![PackId(1)]));
        // Many packs of 80% live: over the 5% budget, rewritten least live first until
        // the garbage left is within it.
        let packs: BTreeMap<PackId, Survey> = (0..10)
            .map(|i| (PackId(i), survey(1000, 800 + i as u64)))
            .collect();
        let (delete, rewrite) = choose(&packs, &policy);
        assert!(delete.is_empty());
        let left: u64 = (0..10u32)
            .filter(|i| !rewrite.contains(&PackId(*i)))
            .map(|i| 200 - u64::from(i))
            .sum();
        let total: u64 = (0..10).map(|i| 800 + i).sum::<u64>() + left;
        assert!(left as f64 <= 0.05 * total as f64, "{rewrite:?}");
        assert!(rewrite.len() < 10 && rewrite[0] == PackId(0), "{rewrite:?}");
        // Header and footer alone are not garbage: nothing to do.
        let packs: BTreeMap<PackId, Survey> = [(PackId(0), survey(100, 100))].into();
        assert_eq!(choose(&packs, &policy), (vec![], vec![]));
    }
}
