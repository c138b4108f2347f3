//! `BlockStore::gc`: space reclamation (docs/packs.md, "Space reclamation").
//!
//! Mark is the caller's (`is_live`); this module sweeps:
//! 1. `sync` (pending blocks into the index), then seal the active pack and fsync it:
//!    from here on every pack below `first_new` is sealed and immutable, and every pack
//!    written by this gc is numbered `first_new` or above.
//! 2. One walk over the index: per pack, the bytes and count of live records; the ids of
//!    dead entries. A pack is chosen for deletion when no live record is left in it, for
//!    rewriting by `GcPolicy`.
//! 3. Round A: one sled batch removes every dead entry; `commit_index` makes it durable;
//!    then the packs with nothing live are deleted (and the directory fsynced).
//! 4. Round B, in groups of up to `GROUP_BYTES` copied: each live record of a chosen pack
//!    is read, checked in full (header, payload checksum, decompression, id) and appended
//!    unchanged through the writer; the new pack data is fsynced; one sled batch points
//!    the moved entries at their copies; `commit_index`; the group's old packs are
//!    deleted. A record that fails its check is not copied: it is reported, its entry
//!    stays, and its pack is kept.
//!
//! Crash safety: an index entry only ever changes to point at bytes already fsynced, and
//! a pack file is deleted only after the index change that left nothing pointing into it
//! is durable. A crash therefore leaves every entry on intact data; what it can leave
//! behind is garbage: records without an entry (in a new pack not yet indexed, or in an
//! old pack not yet deleted). Recovery at open never indexes records (it only seals a
//! torn pack), so such a record is never served, and the next gc deletes or rewrites
//! its pack because nothing live is in it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::index::{self, Entry};
use crate::layout::{Location, RecordHeader, FOOTER_LEN, PACK_HEADER_LEN, RECORD_HEADER_LEN};
use crate::record;
use crate::recovery::list_packs;
use crate::store::BlockStore;
use crate::sync::{lock, write};
use crate::{BlockId, Error, GcPolicy, GcStats, PackId, Result};

/// Round B makes its copies durable and indexed, and deletes their old packs, at least
/// every this many copied bytes (bounds the extra disk space a gc needs at a time) ...
const GROUP_BYTES: u64 = 64 << 20;
/// ... and every this many packs (bounds the packs a crash can leave behind).
const GROUP_PACKS: usize = 64;

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

pub(crate) fn run(
    store: &BlockStore,
    is_live: &dyn Fn(&BlockId) -> bool,
    policy: &GcPolicy,
    commit_index: &mut dyn FnMut() -> Result<()>,
) -> Result<GcStats> {
    let _serial = lock(&store.sync_lock);
    let mut stats = GcStats {
        pack_bytes_before: pack_bytes(&store.dir)?,
        ..GcStats::default()
    };

    // 1. Every block put so far indexed; every existing pack sealed.
    store.sync_locked()?;
    let plan = lock(&store.writer).seal_now()?;
    store.run_sync_plan(plan)?;
    let (_, first_new) = lock(&store.writer).extent();

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
    stats.packs_examined = packs.len() as u64;
    let mut dead: Vec<BlockId> = Vec::new();
    for entry in index::entries(&store.index) {
        // A malformed entry is left alone: verify reports it.
        let Entry::Good(id, loc) = entry? else {
            continue;
        };
        if !is_live(&id) {
            dead.push(id);
            continue;
        }
        stats.blocks_live += 1;
        if let Some(p) = packs.get_mut(&loc.pack) {
            p.live_bytes += RECORD_HEADER_LEN as u64 + u64::from(loc.stored_len);
            p.live_blocks += 1;
        }
    }
    let (delete, rewrite) = choose(&packs, policy);
    tracing::info!(
        packs = packs.len(),
        dead = dead.len(),
        delete = delete.len(),
        rewrite = rewrite.len(),
        "gc: survey done"
    );

    let _epoch = EpochGuard::enter(&store.gc_epoch);

    // 3. Round A: drop dead entries, delete the packs with nothing live. This needs no
    //    free space, so it frees what it can even on a full disk.
    if !dead.is_empty() || !delete.is_empty() {
        if !dead.is_empty() {
            let mut batch = sled::Batch::default();
            for id in &dead {
                batch.remove(&id.0);
            }
            store.index.apply_batch(batch)?;
        }
        commit_index()?;
        stats.blocks_dropped = dead.len() as u64;
        delete_packs(store, &delete)?;
        stats.packs_deleted = delete.len() as u64;
    }
    drop(dead);

    // 4. Round B: copy the live records of the packs to rewrite.
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
            match copy_pack(store, pack, &entries, &mut group, &mut stats) {
                Ok(true) => group.packs.push(pack),
                Ok(false) => {}
                Err(e) => {
                    // Keep what was copied so far (it is valid), then stop.
                    commit_group(store, &mut group, commit_index, &mut stats)?;
                    return Err(e);
                }
            }
            if group.bytes >= GROUP_BYTES || group.packs.len() >= GROUP_PACKS {
                commit_group(store, &mut group, commit_index, &mut stats)?;
            }
        }
        commit_group(store, &mut group, commit_index, &mut stats)?;
    }

    stats.pack_bytes_after = pack_bytes(&store.dir)?;
    tracing::info!(
        packs_examined = stats.packs_examined,
        packs_rewritten = stats.packs_rewritten,
        packs_deleted = stats.packs_deleted,
        blocks_dropped = stats.blocks_dropped,
        blocks_moved = stats.blocks_moved,
        before = stats.pack_bytes_before,
        after = stats.pack_bytes_after,
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
/// notes the moves in `group`. Ok(false) when a record failed its check (the pack must
/// then be kept).
fn copy_pack(
    store: &BlockStore,
    pack: PackId,
    entries: &[(BlockId, Location)],
    group: &mut Group,
    stats: &mut GcStats,
) -> Result<bool> {
    let path = store.pack_path(pack);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            stats.problems.push(format!(
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
                stats.problems.push(format!(
                    "{} offset {}: block {id} is damaged ({detail}); not copied, its pack is \
                     kept (run strata verify)",
                    path.display(),
                    loc.offset
                ));
                intact = false;
                continue;
            }
        };
        let (new_pack, offset) = lock(&store.writer).append(&bytes)?;
        group.moves.push((
            *id,
            Location {
                pack: new_pack,
                offset,
                ..*loc
            },
        ));
        group.bytes += bytes.len() as u64;
        stats.blocks_moved += 1;
        stats.bytes_moved += bytes.len() as u64;
    }
    Ok(intact)
}

/// The record of `id` at `loc`, header and payload, after checking all of it.
fn read_record(file: &File, id: &BlockId, loc: &Location) -> std::result::Result<Vec<u8>, String> {
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
/// then deletes the old packs.
fn commit_group(
    store: &BlockStore,
    group: &mut Group,
    commit_index: &mut dyn FnMut() -> Result<()>,
    stats: &mut GcStats,
) -> Result<()> {
    let group = std::mem::take(group);
    if group.moves.is_empty() && group.packs.is_empty() {
        return Ok(());
    }
    let plan = lock(&store.writer).plan_sync()?;
    store.run_sync_plan(plan)?;
    if !group.moves.is_empty() {
        index::insert_all(&store.index, &group.moves)?;
    }
    commit_index()?;
    tracing::info!(
        moved = group.moves.len(),
        packs = group.packs.len(),
        "gc: moves committed, deleting the old packs"
    );
    delete_packs(store, &group.packs)?;
    stats.packs_rewritten += group.packs.len() as u64;
    Ok(())
}

/// Deletes pack files nothing points into any more (durably: the directory is fsynced),
/// with their cached read handles.
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
            let path = store.pack_path(*pack);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(pack = %pack, "gc: deleted pack"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io { path, source: e }),
            }
            readers.remove(pack);
        }
    }
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
