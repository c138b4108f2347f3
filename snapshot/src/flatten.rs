//! Chain flattening (docs/generations.md, "Flattening"): deleted generations leave the
//! tree. What a kept generation still saw of them is folded into it; what nobody sees
//! any more is dropped. Metadata only: block-map records move, block data never does.
//!
//! A *pass* removes a set R of deleted generations fixed when it starts: every deleted
//! generation with at most one child whose subtree holds a generation that is not
//! deleted (a deleted generation with two such children is a junction two branches
//! share; it stays, so its records are never copied twice). Each r in R has at most one
//! *heir*: the first generation below r, following the live side, that is not in R. The
//! heir sees r's records wherever it and the R generations between them have none.
//!
//! Per record base (`keys`): if some r in R holds a version, the heir k of that r gets a
//! copy of the nearest such version unless k has its own; a tombstone is copied only
//! when an ancestor of k outside R holds a visible version it must keep hiding. Then the
//! versions of R are removed. When every base is done, the change index of each r is
//! merged into its heir's, the generation records of R are removed and every generation
//! whose parent was in R is re-parented to its nearest ancestor outside R.
//!
//! Work is found through the change index (`C r ino`): only the inodes R changed are
//! visited, kind by kind (`B`, `D`, `I`, `O`, `X`), in key order. It runs in batches of a
//! bounded number of records under the state lock; each batch is one commit that also
//! stores the pass (R, heirs) and a cursor (the unit under way, the last base done in it) under the state key
//! `flatten`, so a pass resumes where it stopped after a crash or an unmount.
//!
//! Invariants: between batches every kept generation reads exactly what it read before
//! the pass (a base is either untouched or fully folded); new generations made during a
//! pass are outside R; a frozen generation's content never changes. Reads at r itself
//! (a file of a deleted snapshot still open) may see a partly folded tree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::codec::{PRESENT, TOMBSTONE};
use crate::error::{Error, Result};
use crate::generation::{is_kept, Generations, View};
use crate::keys;
use crate::store::{State, Store};
use crate::types::{GenerationId, InodeNo};

/// The state key holding the pass in progress.
pub(crate) const FLATTEN_STATE: &str = "flatten";
/// Record kinds visited per inode, in key order.
const KINDS: [u8; 5] = [
    keys::BLOCK,
    keys::DIRENT,
    keys::INODE,
    keys::ORPHAN,
    keys::XATTR,
];
/// Records examined per batch by default (one batch holds the state lock). Each removed
/// block-map version also removes its read-index twin, so a batch commits about twice
/// as many keys: 2,048 keeps a batch near 100 ms on this machine's disk (BENCHMARKS.md).
pub const DEFAULT_BATCH_RECORDS: usize = 2_048;

/// What a flatten run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlattenReport {
    /// Deleted generations that left the tree.
    pub generations_removed: u64,
    /// Versions of records read.
    pub records_examined: u64,
    /// Versions folded into an heir (copied to it).
    pub records_folded: u64,
    /// Versions of removed generations deleted (folded or seen by nobody).
    pub records_dropped: u64,
    /// Commits made (each holds the state lock once).
    pub batches: u64,
    /// The longest single batch, in milliseconds.
    pub max_batch_ms: u64,
    pub took_ms: u64,
}

/// Where a run is, for progress displays.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlattenProgress {
    /// Units (inode, record kind) of the current pass done, and in all.
    pub done: u64,
    pub total: u64,
    /// Generations the current pass removes.
    pub generations: u64,
}

/// A pass: the removable generations with their heirs, and where it is: every unit
/// (record kind, inode) before `unit` is done, and in `unit` every base up to `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pass {
    pub heirs: BTreeMap<GenerationId, Option<GenerationId>>,
    pub unit: Option<(u8, InodeNo)>,
    pub base: Option<Vec<u8>>,
}

impl Pass {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(4 + self.heirs.len() * 16);
        b.extend_from_slice(&(self.heirs.len() as u32).to_le_bytes());
        for (r, h) in &self.heirs {
            b.extend_from_slice(&r.0.to_le_bytes());
            b.extend_from_slice(&h.map(|h| h.0).unwrap_or(0).to_le_bytes());
        }
        if let Some((kind, ino)) = self.unit {
            b.push(kind);
            b.extend_from_slice(&ino.0.to_be_bytes());
            b.extend_from_slice(self.base.as_deref().unwrap_or(&[]));
        }
        b
    }

    /// The inverse of `encode`; refuses what `encode` never writes (so a decoded pass
    /// encodes to the same bytes). A damaged pass must not resume: a unit of an unknown
    /// kind, or a last base outside its unit, would skip records of the generations the
    /// pass then removes, and what the kept ones saw of them would be lost.
    pub(crate) fn decode(b: &[u8]) -> Result<Pass> {
        let bad = |detail: String| Error::BadRecord {
            key: format!("state key {FLATTEN_STATE:?} (the flatten pass under way)"),
            detail,
        };
        let count = b
            .get(..4)
            .ok_or_else(|| bad(format!("{} bytes, too few for the count", b.len())))?;
        let n = u32::from_le_bytes(count.try_into().unwrap()) as usize;
        let list = b[4..]
            .get(..n.saturating_mul(16))
            .ok_or_else(|| bad(format!("{n} generations listed in {} bytes", b.len())))?;
        let mut heirs = BTreeMap::new();
        for c in list.chunks_exact(16) {
            let r = u64::from_le_bytes(c[..8].try_into().unwrap());
            let h = u64::from_le_bytes(c[8..].try_into().unwrap());
            if r == 0
                || heirs
                    .last_key_value()
                    .is_some_and(|(l, _)| GenerationId(r) <= *l)
            {
                return Err(bad(format!(
                    "generation {r} is listed out of order (ids ascend from 1)"
                )));
            }
            heirs.insert(GenerationId(r), (h != 0).then_some(GenerationId(h)));
        }
        if let Some((r, h)) = heirs
            .iter()
            .find_map(|(r, h)| h.filter(|h| heirs.contains_key(h)).map(|h| (r, h)))
        {
            return Err(bad(format!(
                "generation {} is the heir of {} and is removed too",
                h.0, r.0
            )));
        }
        let rest = &b[4 + list.len()..];
        let (unit, base) = match rest.len() {
            0 => (None, None),
            1..=8 => return Err(bad(format!("a cursor of {} bytes", rest.len()))),
            len => {
                let kind = rest[0];
                if !KINDS.contains(&kind) {
                    return Err(bad(format!(
                        "the cursor's record kind {:?} is not one of B, D, I, O, X",
                        kind as char
                    )));
                }
                let ino = InodeNo(u64::from_be_bytes(rest[1..9].try_into().unwrap()));
                let base = (len > 9).then(|| rest[9..].to_vec());
                if let Some(base) = &base {
                    if !base.starts_with(&rest[..9]) {
                        return Err(bad(format!(
                            "the cursor's last base {} is not in its unit",
                            keys::describe(base)
                        )));
                    }
                    keys::check_base(base)
                        .map_err(|e| bad(format!("the cursor's last base: {e}")))?;
                }
                (Some((kind, ino)), base)
            }
        };
        Ok(Pass { heirs, unit, base })
    }
}

/// The generations a new pass would remove, each with its heir: those not kept
/// (`generation::is_kept`; `open` is `State::frozen_open`, so a snapshot deleted while
/// its files are open stays until they close).
fn plan(
    gens: &Generations,
    open: &HashMap<GenerationId, u64>,
) -> BTreeMap<GenerationId, Option<GenerationId>> {
    let deleted = |g: &GenerationId, r: &crate::generation::GenerationRecord| !is_kept(*g, r, open);
    let mut children: HashMap<GenerationId, Vec<GenerationId>> = HashMap::new();
    for (g, r) in &gens.all {
        if let Some(p) = r.parent {
            children.entry(p).or_default().push(*g);
        }
    }
    // Whether a generation's subtree holds one that is not deleted. Children have
    // higher ids than their parent, so descending order sees children first.
    let mut alive: HashMap<GenerationId, bool> = HashMap::new();
    for (g, r) in gens.all.iter().rev() {
        let any_child = children
            .get(g)
            .is_some_and(|cs| cs.iter().any(|c| alive[c]));
        alive.insert(*g, !deleted(g, r) || any_child);
    }
    let alive_children = |g: &GenerationId| -> Vec<GenerationId> {
        children
            .get(g)
            .map(|cs| cs.iter().copied().filter(|c| alive[c]).collect())
            .unwrap_or_default()
    };
    let removable: BTreeSet<GenerationId> = gens
        .all
        .iter()
        .filter(|(g, r)| deleted(g, r) && alive_children(g).len() <= 1)
        .map(|(g, _)| *g)
        .collect();
    removable
        .iter()
        .map(|r| {
            let mut cur = *r;
            let heir = loop {
                match alive_children(&cur).first() {
                    None => break None,
                    Some(c) if !removable.contains(c) => break Some(*c),
                    Some(c) => cur = *c,
                }
            };
            (*r, heir)
        })
        .collect()
}

/// At the start of a pass (in its first commit): the read-index checkpoints of the
/// generations it removes go. A checkpoint holds its parent's view; once the fold
/// removes the versions that shadowed parts of it (a tombstone nobody needs any more),
/// it would show them again. The heirs' walks of those chunks are bounded again after
/// the pass (`recheck_walks`).
fn drop_checkpoints(
    st: &mut State,
    heirs: &BTreeMap<GenerationId, Option<GenerationId>>,
) -> Result<()> {
    for (r, heir) in heirs {
        for (k, _) in st.meta.scan_raw(&keys::checkpoint_refs(*r))? {
            if let Some((ino, chunk)) = keys::split_checkpoint_ref(&k) {
                st.meta.remove_raw(keys::rcheckpoint(ino, chunk, *r));
                if let Some(h) = heir {
                    st.meta.put_raw(keys::recheck(ino, chunk, *h), Vec::new());
                }
            }
            st.meta.remove_raw(k);
        }
    }
    Ok(())
}

/// The smallest key after every version of `base`.
fn after_base(base: &[u8]) -> Vec<u8> {
    let mut k = keys::versioned(base, GenerationId(u64::MAX));
    k.push(0);
    k
}

/// Counters of one batch.
#[derive(Default)]
struct Batch {
    examined: u64,
    folded: u64,
    dropped: u64,
}

impl Store {
    /// Whether deleted generations are waiting to be flattened (or a pass is under way).
    pub fn flatten_pending(&self) -> Result<bool> {
        let st = self.lock();
        Ok(st.meta.get_raw(&keys::state(FLATTEN_STATE))?.is_some()
            || !plan(&st.gens, &st.frozen_open).is_empty()
            || st
                .meta
                .committed_range(&[keys::RECHECK], Some(&[keys::RECHECK + 1]))
                .next()
                .is_some())
    }

    /// Flattens until no deleted generation is left to remove, in batches of about
    /// `batch_records` record versions, sleeping `pause` between batches so file
    /// operations get the state lock. `progress` is called after each batch; when it
    /// returns false the run stops there (the pass resumes at the next run).
    pub fn flatten(
        &self,
        batch_records: usize,
        pause: Duration,
        progress: &mut dyn FnMut(&FlattenProgress) -> bool,
    ) -> Result<FlattenReport> {
        self.flatten_batches(batch_records, pause, progress, u64::MAX)
    }

    /// `flatten`, stopping after `max_batches` batches (tests: a pass cut short).
    pub(crate) fn flatten_batches(
        &self,
        batch_records: usize,
        pause: Duration,
        progress: &mut dyn FnMut(&FlattenProgress) -> bool,
        max_batches: u64,
    ) -> Result<FlattenReport> {
        let _serial = self
            .flatten_serial
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let mut report = FlattenReport::default();
        // The inodes of the current pass (from the change index), by its generations.
        let mut inos: Option<(Vec<GenerationId>, Vec<InodeNo>)> = None;
        while report.batches < max_batches {
            let t = Instant::now();
            let mut st = self.lock();
            let Some(step) = self.flatten_batch(&mut st, batch_records.max(1), &mut inos)? else {
                break;
            };
            drop(st);
            report.batches += 1;
            report.records_examined += step.batch.examined;
            report.records_folded += step.batch.folded;
            report.records_dropped += step.batch.dropped;
            report.generations_removed += step.removed;
            report.max_batch_ms = report.max_batch_ms.max(t.elapsed().as_millis() as u64);
            if !progress(&step.progress) {
                break;
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        report.took_ms = started.elapsed().as_millis() as u64;
        if report.batches > 0 {
            tracing::info!(
                removed = report.generations_removed,
                examined = report.records_examined,
                folded = report.records_folded,
                dropped = report.records_dropped,
                batches = report.batches,
                max_batch_ms = report.max_batch_ms,
                took_ms = report.took_ms,
                "flatten done"
            );
        }
        Ok(report)
    }

    /// One batch: `None` when there is nothing to do.
    fn flatten_batch(
        &self,
        st: &mut State,
        budget: usize,
        inos: &mut Option<(Vec<GenerationId>, Vec<InodeNo>)>,
    ) -> Result<Option<Step>> {
        // Buffered changes first: from here the overlay is empty, so sled holds
        // everything and this batch's changes are all the next commit holds.
        self.commit_locked(st)?;
        let mut pass = match st.meta.get_raw(&keys::state(FLATTEN_STATE))? {
            Some(v) => Pass::decode(&v)?,
            None => {
                if let Some(step) = self.recheck_walks(st, budget)? {
                    return Ok(Some(step));
                }
                let heirs = plan(&st.gens, &st.frozen_open);
                if heirs.is_empty() {
                    return Ok(None);
                }
                tracing::info!(generations = heirs.len(), "flatten: pass starts");
                drop_checkpoints(st, &heirs)?;
                Pass {
                    heirs,
                    unit: None,
                    base: None,
                }
            }
        };
        let gens_of_pass: Vec<GenerationId> = pass.heirs.keys().copied().collect();
        if inos.as_ref().map(|(g, _)| g) != Some(&gens_of_pass) {
            let mut set = BTreeSet::new();
            for r in &gens_of_pass {
                set.extend(st.meta.changes_of(*r)?);
            }
            *inos = Some((gens_of_pass, set.into_iter().collect()));
        }
        let inos = &inos.as_ref().unwrap().1;
        // Units (record kind, inode) in key order: unit i is KINDS[i / n], inos[i % n].
        let n = inos.len();
        let unit_at = |i: usize| (KINDS[i / n], inos[i % n]);
        let total_units = KINDS.len() * n;
        let first = match pass.unit {
            None => 0,
            Some((kind, ino)) => {
                let k = KINDS.iter().position(|x| *x == kind).unwrap_or(KINDS.len());
                k * n + inos.partition_point(|x| *x < ino)
            }
        };
        let mut views: HashMap<GenerationId, View> = HashMap::new();
        let mut batch = Batch::default();
        // Work done: versions read plus units visited (an empty unit costs a seek).
        let mut work = 0usize;
        let mut unit = first;
        let mut finished = true;
        while unit < total_units {
            if work >= budget {
                finished = false;
                break;
            }
            let (kind, ino) = unit_at(unit);
            let mut prefix = vec![kind];
            prefix.extend_from_slice(&ino.0.to_be_bytes());
            let lo = match &pass.base {
                Some(b) if pass.unit == Some((kind, ino)) => after_base(b),
                _ => prefix.clone(),
            };
            pass.unit = Some((kind, ino));
            let hi = crate::meta::prefix_end(&prefix);
            let range = st.meta.committed_range(&lo, hi.as_deref());
            work += 1;
            let mut group: Vec<(GenerationId, Vec<u8>)> = Vec::new();
            let mut base: Vec<u8> = Vec::new();
            let mut stopped = false;
            for item in range {
                let (k, v) = item?;
                let (kb, g) =
                    keys::check_versioned(&k).map_err(|e| crate::meta::malformed(&k, e))?;
                if kb != base.as_slice() {
                    if !group.is_empty() {
                        work += group.len();
                        self.fold(st, &pass, &base, &group, &mut views, &mut batch)?;
                        pass.base = Some(base.clone());
                        group.clear();
                        if work >= budget {
                            stopped = true;
                            break;
                        }
                    }
                    base = kb.to_vec();
                }
                group.push((g, v));
            }
            if stopped {
                finished = false;
                break;
            }
            if !group.is_empty() {
                work += group.len();
                self.fold(st, &pass, &base, &group, &mut views, &mut batch)?;
            }
            unit += 1;
            pass.unit = (unit < total_units).then(|| unit_at(unit));
            pass.base = None;
        }
        let total = total_units as u64;
        let generations = pass.heirs.len() as u64;
        let mut removed = 0;
        if finished {
            removed = self.finish_pass(st, &pass)?;
        } else {
            st.meta.put_raw(keys::state(FLATTEN_STATE), pass.encode());
            self.commit_locked(st)?;
        }
        Ok(Some(Step {
            batch,
            removed,
            progress: FlattenProgress {
                done: if finished { total } else { unit as u64 },
                total,
                generations,
            },
        }))
    }

    /// After a pass: bounds again the read-index walks of the heirs whose chunks lost a
    /// checkpoint (`Q` keys), about `budget / 64` of them per batch (a walk reads up to
    /// a chunk's worth of entries). `None`: none left. Runs after a commit, so the
    /// pending entries are all in sled; only the batch's share of them is read.
    fn recheck_walks(&self, st: &mut State, budget: usize) -> Result<Option<Step>> {
        let per_batch = budget.div_ceil(keys::CHUNK_BLOCKS as usize);
        let pending: Vec<Vec<u8>> = st
            .meta
            .committed_range(&[keys::RECHECK], Some(&[keys::RECHECK + 1]))
            .take(per_batch + 1)
            .map(|item| item.map(|(k, _)| k))
            .collect::<Result<_>>()?;
        if pending.is_empty() {
            return Ok(None);
        }
        let more = pending.len() > per_batch;
        let mut views: HashMap<GenerationId, View> = HashMap::new();
        let mut done = 0u64;
        for k in pending.into_iter().take(per_batch) {
            let (ino, chunk, gen) = keys::split_recheck(&k).ok_or_else(|| Error::BadRecord {
                key: format!("{k:?}"),
                detail: "bad recheck key".into(),
            })?;
            if st.gens.all.contains_key(&gen) {
                let view = match views.entry(gen) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(st.gens.view(gen)?),
                };
                st.meta.bound_walk(ino, chunk, view)?;
            }
            st.meta.remove_raw(k);
            done += 1;
        }
        self.commit_locked(st)?;
        // The total left is not counted (that would read every entry per batch).
        Ok(Some(Step {
            batch: Batch::default(),
            removed: 0,
            progress: FlattenProgress {
                done,
                total: done + u64::from(more),
                generations: 0,
            },
        }))
    }

    /// Folds the versions of one base (ascending by generation) for the pass.
    fn fold(
        &self,
        st: &mut State,
        pass: &Pass,
        base: &[u8],
        group: &[(GenerationId, Vec<u8>)],
        views: &mut HashMap<GenerationId, View>,
        batch: &mut Batch,
    ) -> Result<()> {
        batch.examined += group.len() as u64;
        // The nearest version of R per heir: versions ascend, so the last one wins.
        let mut nearest: BTreeMap<GenerationId, &[u8]> = BTreeMap::new();
        for (g, v) in group {
            let Some(heir) = pass.heirs.get(g) else {
                continue;
            };
            if let Some(h) = heir {
                nearest.insert(*h, v);
            }
            st.meta.remove_raw(keys::versioned(base, *g));
            batch.dropped += 1;
        }
        // What the kept generations hold after this fold: their own versions, plus the
        // copies made so far (heirs ascend, so an heir's kept ancestors come first).
        let mut kept: Vec<(GenerationId, bool)> = group
            .iter()
            .filter(|(g, _)| !pass.heirs.contains_key(g))
            .map(|(g, v)| (*g, v.first() == Some(&PRESENT)))
            .collect();
        for (heir, v) in nearest {
            if group.iter().any(|(g, _)| *g == heir) {
                continue; // superseded by the heir's own version
            }
            let present = match v.first() {
                Some(&PRESENT) => true,
                Some(&TOMBSTONE) => false,
                _ => {
                    return Err(Error::BadRecord {
                        key: format!("{base:?}"),
                        detail: "bad envelope byte".into(),
                    })
                }
            };
            // A tombstone is needed only if a kept ancestor's version would show through.
            let copy = present || {
                let view = match views.get(&heir) {
                    Some(v) => v,
                    None => {
                        let v = st.gens.view(heir)?;
                        views.entry(heir).or_insert(v)
                    }
                };
                kept.iter()
                    .filter(|(g, _)| view.sees(*g))
                    .max_by_key(|(g, _)| *g)
                    .is_some_and(|(_, p)| *p)
            };
            if copy {
                st.meta.put_raw(keys::versioned(base, heir), v.to_vec());
                kept.push((heir, present));
                batch.folded += 1;
            }
        }
        Ok(())
    }

    /// The last batch of a pass: change index, generation records, parents. Returns
    /// the number of generations removed.
    fn finish_pass(&self, st: &mut State, pass: &Pass) -> Result<u64> {
        for (r, heir) in &pass.heirs {
            for ino in st.meta.changes_of(*r)? {
                if let Some(h) = heir {
                    st.meta.put_raw(keys::change(*h, ino), Vec::new());
                }
                st.meta.remove_raw(keys::change(*r, ino));
            }
            st.meta.remove_raw(keys::generation(*r));
            st.meta.remove_raw(keys::hold(*r));
        }
        let mut reparented = Vec::new();
        for (g, rec) in &st.gens.all {
            if pass.heirs.contains_key(g) {
                continue;
            }
            let mut parent = rec.parent;
            while let Some(p) = parent.filter(|p| pass.heirs.contains_key(p)) {
                parent = st.gens.get(p)?.parent;
            }
            if parent != rec.parent {
                let mut rec = rec.clone();
                rec.parent = parent;
                st.meta.put_raw(keys::generation(*g), rec.encode());
                reparented.push((*g, rec));
            }
        }
        st.meta.remove_raw(keys::state(FLATTEN_STATE));
        self.commit_locked(st)?;
        for r in pass.heirs.keys() {
            st.gens.all.remove(r);
        }
        for (g, rec) in reparented {
            st.gens.all.insert(g, rec);
        }
        st.refresh_heads()?;
        tracing::info!(
            removed = pass.heirs.len(),
            "flatten: pass done, deleted generations removed"
        );
        Ok(pass.heirs.len() as u64)
    }
}

/// What one batch did.
struct Step {
    batch: Batch,
    removed: u64,
    progress: FlattenProgress,
}

impl Store {
    /// Records stored under generations that do not exist (what a faulty flatten would
    /// leave behind), counted per generation; `verify` reports them. Scanned without
    /// the state lock (a mounted store keeps serving), but with no flatten running; a
    /// generation made during the scan is not counted.
    pub(crate) fn stray_records(&self) -> Result<BTreeMap<GenerationId, u64>> {
        let _serial = self
            .flatten_serial
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let records: Vec<_> = {
            let st = self.lock();
            KINDS
                .iter()
                .map(|kind| st.meta.committed_range(&[*kind], Some(&[*kind + 1])))
                .collect()
        };
        let mut out = BTreeMap::new();
        for range in records {
            for item in range {
                let (k, _) = item?;
                if k.len() < keys::GEN_SUFFIX_LEN + 9 {
                    continue;
                }
                let (_, g) = keys::split_versioned(&k);
                *out.entry(g).or_insert(0u64) += 1;
            }
        }
        let st = self.lock();
        out.retain(|g, _| !st.gens.all.contains_key(g));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::{GenerationRecord, STATE_FROZEN, STATE_LIVE};
    use crate::types::Timestamp;

    fn gens(list: &[(u64, u8, Option<u64>)]) -> Generations {
        let mut g = Generations::default();
        for (id, state, parent) in list {
            g.all.insert(
                GenerationId(*id),
                GenerationRecord {
                    state: *state,
                    parent: parent.map(GenerationId),
                    created: Timestamp::default(),
                    name: String::new(),
                    branch: "main".into(),
                },
            );
        }
        g
    }

    #[test]
    fn plan_keeps_junctions_and_finds_heirs() {
        const D: u8 = crate::generation::STATE_DELETED;
        // 1(D) - 2(D) - 3(F) - 5(D) - 6(L)
        //               3 - 4(D, a deleted branch head)
        // 2 - 7(D) - 8(L): 2 is a junction (children 3 and 7 both lead to kept ones).
        let g = gens(&[
            (1, D, None),
            (2, D, Some(1)),
            (3, STATE_FROZEN, Some(2)),
            (4, D, Some(3)),
            (5, D, Some(3)),
            (6, STATE_LIVE, Some(5)),
            (7, D, Some(2)),
            (8, STATE_LIVE, Some(7)),
        ]);
        let p = plan(&g, &HashMap::new());
        let want: BTreeMap<_, _> = [(1, Some(2)), (4, None), (5, Some(6)), (7, Some(8))]
            .into_iter()
            .map(|(r, h): (u64, Option<u64>)| (GenerationId(r), h.map(GenerationId)))
            .collect();
        assert_eq!(p, want);
    }

    #[test]
    fn pass_round_trips() {
        let p = Pass {
            heirs: [
                (GenerationId(3), Some(GenerationId(9))),
                (GenerationId(4), None),
            ]
            .into_iter()
            .collect(),
            unit: Some((keys::BLOCK, InodeNo(7))),
            base: Some(keys::block(InodeNo(7), 3)),
        };
        assert_eq!(Pass::decode(&p.encode()).unwrap(), p);
        let unit_start = Pass {
            base: None,
            ..p.clone()
        };
        assert_eq!(Pass::decode(&unit_start.encode()).unwrap(), unit_start);
        let fresh = Pass {
            unit: None,
            base: None,
            ..p.clone()
        };
        assert_eq!(Pass::decode(&fresh.encode()).unwrap(), fresh);
        assert!(Pass::decode(&[9, 0, 0, 0, 1]).is_err());
    }

    /// A damaged pass used to resume as if it were sound. A cursor of an unknown record
    /// kind put the pass past its last unit (`position` found no kind), so the next
    /// batch finished it at once: the removed generations' records were never folded,
    /// and the kept generations lost what they saw of them. A last base outside its
    /// unit skipped the unit the same way, and a list out of order or with a generation
    /// twice decoded to another list than the one written.
    #[test]
    fn a_damaged_pass_is_refused() {
        let good = Pass {
            heirs: [
                (GenerationId(3), Some(GenerationId(9))),
                (GenerationId(4), None),
            ]
            .into_iter()
            .collect(),
            unit: Some((keys::BLOCK, InodeNo(7))),
            base: Some(keys::block(InodeNo(7), 3)),
        };
        let b = good.encode();
        let mut kind = b.clone();
        kind[4 + 32] = b'Z';
        let mut outside = b.clone();
        let n = outside.len();
        outside[n - 9] ^= 1; // the base's inode
        let mut order = b.clone();
        order[4..12].copy_from_slice(&5u64.to_le_bytes()); // 5 before 4
        let mut twice = b.clone();
        twice[4..12].copy_from_slice(&4u64.to_le_bytes());
        let mut heir_removed = b.clone();
        heir_removed[12..20].copy_from_slice(&4u64.to_le_bytes());
        let mut short_base = b.clone();
        short_base.truncate(n - 3);
        let cases = [
            (kind, "record kind 'Z' is not one of B, D, I, O, X"),
            (outside, "is not in its unit"),
            (order, "generation 4 is listed out of order"),
            (twice, "generation 4 is listed out of order"),
            (
                heir_removed,
                "generation 4 is the heir of 3 and is removed too",
            ),
            (short_base, "the cursor's last base"),
            (
                b[..b.len() - keys::block(InodeNo(7), 3).len() - 4].to_vec(),
                "a cursor of 5 bytes",
            ),
        ];
        for (bytes, why) in cases {
            let err = Pass::decode(&bytes).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("flatten"), "{why}: {err}");
        }
    }
}
