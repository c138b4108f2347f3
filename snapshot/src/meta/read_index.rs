//! The read index of the block map (docs/metadata.md, "Read index"): what makes a read
//! at any generation visit a bounded number of index entries, however many generations
//! the store holds.
//!
//! Every versioned `B` key has a twin under `R` with the same value (`stage` writes
//! both, so every path that changes the block map keeps the twin in step: writes,
//! truncation, deletion, flattening). Twins are ordered by chunk of
//! [`CHUNK_BLOCKS`](keys::CHUNK_BLOCKS) blocks and, inside a chunk, newest generation
//! first. A read at G finds, per chunk, the newest *checkpoint* G sees (`P`, same
//! order), then walks the twins from G down to that checkpoint's generation, taking for
//! each slot the first version G sees and re-seeking past generations it does not see
//! (another branch's); the checkpoint fills the slots still open.
//!
//! A checkpoint stored under g holds the whole chunk as g's parent saw it; g's own
//! versions win over it. Each commit checks the chunks it changed in the live
//! generation: when a walk there visits more than [`MAX_WALK`] entries, a checkpoint is
//! written under the live generation (listed under `K gen` for flattening). A walk
//! therefore visits at most `MAX_WALK` entries plus one generation's versions plus one
//! checkpoint, at every generation.
//!
//! Invariants (verify checks them): the `R` twins are exactly the `B` versions; every
//! checkpoint is listed under `K` and the reverse; a walk at a generation with a
//! checkpoint reads the chunk as the `B` records say. (Flattening may fold the parent's
//! versions into g after the checkpoint was written; g's own versions win, so the
//! walk's result stays right. When the live generation drops one of its own versions
//! under a checkpoint, the checkpoint is written again from the parent's current view.
//! A flatten pass removes the checkpoints of the generations it removes in its first
//! commit, and the heirs' walks are bounded again after it.)

use sled::IVec;

use super::{prefix_end, select_visible, unwrap_envelope, Meta};
use crate::codec;
use crate::error::{Error, Result};
use crate::generation::View;
use crate::keys::{self, CHUNK_BLOCKS};
use crate::types::{GenerationId, InodeNo};

/// Reads of fewer blocks than this look each block up by itself (`block_map`).
const POINT_BLOCKS: u64 = 4;
/// Versions of other branches a lookup of one block steps over before `block_map`
/// walks its chunk instead.
const POINT_STEPS: usize = 16;

/// (inode, chunk): where a step of the read-index check starts.
pub(crate) type ChunkAt = (InodeNo, u64);

/// State key present once the read index holds a twin of every `B` version.
const BUILT_STATE: &str = "read_index";
/// Twins written per sled batch when building the index of an older store.
const BUILD_BATCH: usize = 16_384;

/// Entries a walk may visit before a commit writes a checkpoint (two versions per block).
#[cfg(not(test))]
pub const MAX_WALK: usize = 2 * CHUNK_BLOCKS as usize;
/// Small in unit tests, so their histories of a few blocks write checkpoints often.
#[cfg(test)]
pub const MAX_WALK: usize = 3;

fn bad_key(k: &[u8]) -> Error {
    Error::BadRecord {
        key: format!("{k:?}"),
        detail: "bad read-index key".into(),
    }
}

/// Stages a `Q` entry for each generation in `gens` of `chunk` (building the index).
fn recheck_all(
    batch: &mut sled::Batch,
    chunk: Option<(InodeNo, u64)>,
    gens: &mut std::collections::BTreeSet<GenerationId>,
) {
    if let Some((ino, c)) = chunk {
        for g in std::mem::take(gens) {
            batch.insert(keys::recheck(ino, c, g), IVec::default());
        }
    }
}

/// A walk of one chunk: per slot, `None` = not resolved, `Some(None)` = hole.
pub(crate) struct Walk {
    pub slots: Vec<Option<Option<Vec<u8>>>>,
    /// Entries visited.
    pub visited: usize,
}

impl Walk {
    fn resolved(&self, lo: usize, hi: usize) -> bool {
        self.slots[lo..=hi].iter().all(Option::is_some)
    }
}

impl Meta {
    /// Stages `key` (and its read-index twin, for a `B` version) in the overlay.
    pub(super) fn stage(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if let Some(twin) = keys::rtwin(&key) {
            self.overlay.insert(twin, value.clone());
        }
        self.overlay.insert(key, value);
    }

    /// Gives a store made before the read index existed its `R` twins (once, at open;
    /// crash-safe: twins are idempotent and the state key is written last), and a `Q`
    /// entry for every generation of every chunk with versions, so the next flatten run
    /// checkpoints the old history where walks are long (oldest first: `Q` keys sort by
    /// generation inside a chunk).
    pub(super) fn build_read_index(&mut self) -> Result<()> {
        let done = keys::state(BUILT_STATE);
        if self.tree.get(&done)?.is_some() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        let mut total = 0usize;
        // The generations with versions in the chunk under way.
        let mut chunk: Option<(InodeNo, u64)> = None;
        let mut gens = std::collections::BTreeSet::new();
        for item in self.tree.range(vec![keys::BLOCK]..vec![keys::BLOCK + 1]) {
            let (k, v) = item?;
            let Some(twin) = keys::rtwin(&k) else {
                continue;
            };
            let here = keys::split_chunk(&twin);
            if chunk != Some(here) {
                recheck_all(&mut batch, chunk, &mut gens);
                chunk = Some(here);
            }
            gens.insert(keys::split_versioned(&k).1);
            batch.insert(twin, v);
            n += 1;
            if n >= BUILD_BATCH {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
                total += n;
                n = 0;
            }
        }
        recheck_all(&mut batch, chunk, &mut gens);
        batch.insert(done, IVec::default());
        self.tree.apply_batch(batch)?;
        total += n;
        self.flusher.flush()?;
        if total > 0 {
            tracing::info!(
                twins = total,
                "read index built; the next flatten run checkpoints the old history"
            );
        }
        Ok(())
    }

    /// Walks `chunk` of `ino` as `view` sees it (`parent_only`: as the parent of
    /// `view.gen` sees it, skipping `view.gen`'s own versions) until slots `lo..=hi` are
    /// resolved, a checkpoint is met, or the chunk ends.
    pub(crate) fn walk_chunk(
        &self,
        ino: InodeNo,
        chunk: u64,
        view: &View,
        (lo, hi): (usize, usize),
        parent_only: bool,
    ) -> Result<Walk> {
        let mut walk = Walk {
            slots: vec![None; CHUNK_BLOCKS as usize],
            visited: 0,
        };
        let sees = |g: GenerationId| view.sees(g) && !(parent_only && g == view.gen);
        // The floor: the newest checkpoint the view sees, and its generation.
        let mut floor: Option<(GenerationId, IVec)> = None;
        let end = prefix_end(&keys::pchunk(ino, chunk)).expect("chunk prefix has an end");
        let mut from = Some(view.gen);
        while let Some(at) = from.take() {
            let first = self
                .merged_iter(&keys::rcheckpoint(ino, chunk, at), Some(&end))
                .next();
            if let Some(item) = first {
                let (k, v) = item?;
                let g = keys::split_pkey(&k).ok_or_else(|| bad_key(&k))?;
                walk.visited += 1;
                if sees(g) {
                    floor = Some((g, v));
                } else {
                    from = view.nearest_below(g);
                }
            }
        }
        // The deltas from the view's generation down to the floor's (inclusive: a
        // generation's own versions win over its checkpoint).
        let end = prefix_end(&keys::rchunk(ino, chunk)).expect("chunk prefix has an end");
        let mut from = Some(view.gen);
        'seek: while let Some(at) = from.take() {
            for item in self.merged_iter(&keys::rchunk_at(ino, chunk, at), Some(&end)) {
                let (k, v) = item?;
                let (g, slot) = keys::split_rkey(&k).ok_or_else(|| bad_key(&k))?;
                if floor.as_ref().is_some_and(|(f, _)| g < *f) {
                    break 'seek;
                }
                walk.visited += 1;
                if !sees(g) {
                    from = view.nearest_below(g);
                    continue 'seek;
                }
                let s = &mut walk.slots[slot as usize];
                if s.is_none() {
                    *s = Some(unwrap_envelope(&k, &v)?);
                }
                if walk.resolved(lo, hi) {
                    break 'seek;
                }
            }
        }
        if let Some((_, v)) = floor {
            if !walk.resolved(lo, hi) {
                let mut present = codec::decode_checkpoint(&v)?.into_iter().peekable();
                for (slot, s) in walk.slots.iter_mut().enumerate() {
                    let here = present.next_if(|(p, _)| *p as usize == slot);
                    if s.is_none() {
                        *s = Some(here.map(|(_, id)| id.to_vec()));
                    }
                }
            }
        }
        for s in &mut walk.slots[lo..=hi] {
            s.get_or_insert(None);
        }
        Ok(walk)
    }

    /// The block map of `ino` for blocks `first..=last` as the live view sees it: the
    /// payload (block id) of each present block, by ascending index.
    pub fn block_map(&self, ino: InodeNo, first: u64, last: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        // A few blocks (a small random read): one reverse seek per block finds the
        // newest version its generation sees, at once on a linear history. One that
        // would step over more than `POINT_STEPS` versions of other branches is left to
        // the chunk walk below, which is bounded however the history branches.
        if last - first < POINT_BLOCKS {
            let mut gave_up = false;
            for idx in first..=last {
                match self.get_within(&keys::block(ino, idx), POINT_STEPS)? {
                    Some(Some(p)) => out.push((idx, p)),
                    Some(None) => {}
                    None => {
                        gave_up = true;
                        break;
                    }
                }
            }
            if !gave_up {
                return Ok(out);
            }
            out.clear();
        }
        for chunk in first / CHUNK_BLOCKS..=last / CHUNK_BLOCKS {
            let base = chunk * CHUNK_BLOCKS;
            let lo = (first.max(base) - base) as usize;
            let hi = (last.min(base + CHUNK_BLOCKS - 1) - base) as usize;
            let walk = self.walk_chunk(ino, chunk, &self.view, (lo, hi), false)?;
            for (slot, s) in walk.slots.into_iter().enumerate().take(hi + 1).skip(lo) {
                if let Some(Some(p)) = s {
                    out.push((base + slot as u64, p));
                }
            }
        }
        Ok(out)
    }

    /// The checkpoint of `chunk` for generation `view.gen`: the chunk as its parent sees it.
    pub(crate) fn checkpoint_of(&self, ino: InodeNo, chunk: u64, view: &View) -> Result<Vec<u8>> {
        let last = CHUNK_BLOCKS as usize - 1;
        let walk = self.walk_chunk(ino, chunk, view, (0, last), true)?;
        let mut present = Vec::new();
        for (slot, s) in walk.slots.into_iter().enumerate() {
            if let Some(Some(p)) = s {
                present.push((slot as u8, codec::decode_block(&p)?.0));
            }
        }
        Ok(codec::encode_checkpoint(&present))
    }

    /// Stages a checkpoint under `view.gen` for `chunk` if a walk there is longer than
    /// `MAX_WALK`.
    pub(crate) fn bound_walk(&mut self, ino: InodeNo, chunk: u64, view: &View) -> Result<()> {
        let last = CHUNK_BLOCKS as usize - 1;
        if self.walk_chunk(ino, chunk, view, (0, last), false)?.visited <= MAX_WALK {
            return Ok(());
        }
        let cp = self.checkpoint_of(ino, chunk, view)?;
        self.overlay
            .insert(keys::rcheckpoint(ino, chunk, view.gen), Some(cp));
        self.overlay
            .insert(keys::checkpoint_ref(view.gen, ino, chunk), Some(Vec::new()));
        Ok(())
    }

    /// Checks the read index against the committed block map (`verify`), for the chunks
    /// from `from` (inode, chunk) on, about `max` block records' worth: every `B`
    /// version has its `R` twin with the same value and every twin its `B` version;
    /// every checkpoint is listed under its generation (`K`) and equals the chunk as its
    /// generation's parent sees it. `views` gives the view of a generation (None: it no
    /// longer exists). Returns one line per problem and where the next step starts
    /// (None: done). Steps cover whole chunks, so each compares both sides entirely.
    pub(crate) fn check_read_index_step(
        &self,
        from: (InodeNo, u64),
        max: usize,
        views: &mut dyn FnMut(GenerationId) -> Option<View>,
    ) -> Result<(Vec<String>, Option<ChunkAt>)> {
        let block_at = |(ino, chunk): (InodeNo, u64)| keys::block(ino, chunk * CHUNK_BLOCKS);
        // The block records of the step: `max` of them, then the rest of the last chunk.
        let mut blocks = Vec::new();
        let mut next = None;
        for item in self.tree.range(block_at(from)..vec![keys::BLOCK + 1]) {
            let (k, v) = item?;
            keys::check_versioned(&k).map_err(|e| super::malformed(&k, e))?;
            if blocks.len() >= max {
                let (ino, idx) = (keys::key_ino(&k), keys::block_index(&k));
                let (last_ino, last_idx) = blocks
                    .last()
                    .map(|(k, _): &(IVec, IVec)| (keys::key_ino(k), keys::block_index(k)))
                    .unwrap_or((ino, idx));
                if (ino, idx / CHUNK_BLOCKS) != (last_ino, last_idx / CHUNK_BLOCKS) {
                    next = Some((ino, idx / CHUNK_BLOCKS));
                    break;
                }
            }
            blocks.push((k, v));
        }
        let upto = |kind: u8, at: fn(InodeNo, u64) -> Vec<u8>| match next {
            Some((ino, chunk)) => at(ino, chunk),
            None => vec![kind + 1],
        };
        let mut problems = Vec::new();
        let mut twins = std::collections::HashMap::new();
        for (k, v) in blocks {
            if let Some(t) = keys::rtwin(&k) {
                twins.insert(t, v);
            }
        }
        let r_end = upto(keys::READ, keys::rchunk);
        for item in self.tree.range(keys::rchunk(from.0, from.1)..r_end) {
            let (k, v) = item?;
            match keys::split_rkey(&k) {
                None => problems.push(format!("read index: bad key {}", keys::describe(&k))),
                Some((_, slot)) => {
                    let (ino, chunk) = keys::split_chunk(&k);
                    if twins.remove(k.as_ref()) != Some(v) {
                        problems.push(format!(
                            "read index: inode {} block {} differs from the block map",
                            ino.0,
                            chunk * CHUNK_BLOCKS + u64::from(slot)
                        ));
                    }
                }
            }
        }
        for k in twins.keys() {
            problems.push(format!("read index: missing twin {k:?}"));
        }
        // Every checkpoint is listed under its generation (flattening finds it there),
        // and a walk at its generation reads the chunk as the `B` records say.
        let p_end = upto(keys::CHECKPOINT, keys::pchunk);
        for item in self.tree.range(keys::pchunk(from.0, from.1)..p_end) {
            let (k, _) = item?;
            let Some(g) = keys::split_pkey(&k) else {
                problems.push(format!("read index: bad key {}", keys::describe(&k)));
                continue;
            };
            let (ino, chunk) = keys::split_chunk(&k);
            if !self
                .tree
                .contains_key(keys::checkpoint_ref(g, ino, chunk))?
            {
                problems.push(format!("read index: checkpoint {k:?} is not listed"));
            }
            let last = CHUNK_BLOCKS as usize - 1;
            let read = views(g).map(|view| -> Result<bool> {
                let walk = self.walk_chunk(ino, chunk, &view, (0, last), false)?;
                let walked: Vec<Option<Vec<u8>>> =
                    walk.slots.into_iter().map(Option::flatten).collect();
                Ok(walked == self.chunk_from_block_map(ino, chunk, &view)?)
            });
            let wrong = match read {
                Some(Ok(true)) => continue,
                Some(Ok(false)) | None => "read wrong".to_string(),
                Some(Err(e)) => format!("cannot be read ({e})"),
            };
            problems.push(format!(
                "read index: inode {} blocks {}.. {wrong} at generation {} (checkpoint)",
                ino.0,
                chunk * CHUNK_BLOCKS,
                g.0
            ));
        }
        Ok((problems, next))
    }

    /// The other half of the listing check, for about `max` `K` entries from `from`
    /// (a raw key; start at `[K]`): each names a stored checkpoint. Returns the problems
    /// and where the next step starts (None: done).
    pub(crate) fn check_checkpoint_refs_step(
        &self,
        from: &[u8],
        max: usize,
    ) -> Result<(Vec<String>, Option<Vec<u8>>)> {
        let mut problems = Vec::new();
        let mut last = None;
        let end = vec![keys::CHECKPOINT_REF + 1];
        for item in self.tree.range(from.to_vec()..end).take(max) {
            let (k, _) = item?;
            let listed = keys::split_checkpoint_ref(&k).map(|(ino, chunk)| {
                let g = GenerationId(u64::from_be_bytes(k[1..9].try_into().unwrap()));
                keys::rcheckpoint(ino, chunk, g)
            });
            match listed {
                Some(p) if self.tree.contains_key(&p)? => {}
                _ => problems.push(format!("read index: listed checkpoint {k:?} is missing")),
            }
            last = Some(k);
        }
        Ok((
            problems,
            last.map(|k| {
                let mut k = k.to_vec();
                k.push(0);
                k
            }),
        ))
    }

    /// A chunk as `view` sees it, from the committed `B` records alone.
    pub(crate) fn chunk_from_block_map(
        &self,
        ino: InodeNo,
        chunk: u64,
        view: &View,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = vec![None; CHUNK_BLOCKS as usize];
        let lo = keys::block(ino, chunk * CHUNK_BLOCKS);
        let hi = keys::block(ino, (chunk + 1) * CHUNK_BLOCKS);
        let items = self.tree.range(lo..hi).map(|i| i.map_err(Error::from));
        for (base, payload) in select_visible(view, items)? {
            out[(keys::block_index(&base) % CHUNK_BLOCKS) as usize] = Some(payload);
        }
        Ok(out)
    }

    /// After the live generation dropped its own version of `base`: if a checkpoint of
    /// its chunk is stored under the live generation, writes it again from the parent's
    /// current view (flattening may have changed what the parent shows since).
    pub(super) fn refresh_checkpoint(&mut self, base: &[u8]) -> Result<()> {
        if base.len() != 17 || base[0] != keys::BLOCK {
            return Ok(());
        }
        let (ino, chunk) = (keys::key_ino(base), keys::block_index(base) / CHUNK_BLOCKS);
        let cp = keys::rcheckpoint(ino, chunk, self.view.gen);
        let exists = match self.overlay.get(&cp) {
            Some(v) => v.is_some(),
            None => self.tree.get(&cp)?.is_some(),
        };
        if exists {
            let view = self.view.clone();
            let fresh = self.checkpoint_of(ino, chunk, &view)?;
            self.overlay.insert(cp, Some(fresh));
        }
        Ok(())
    }

    /// Before a commit: bounds the walks of the chunks staged versions changed, in each
    /// generation `live` gives a view of (the live heads: every branch's writes share the
    /// one overlay). Flattening's copies into frozen heirs are left to `recheck_walks`.
    pub(crate) fn bound_staged_walks(
        &mut self,
        live: &dyn Fn(GenerationId) -> Option<View>,
    ) -> Result<()> {
        let mut chunks = std::collections::BTreeSet::new();
        for k in self
            .overlay
            .range(vec![keys::READ]..vec![keys::READ + 1])
            .map(|(k, _)| k)
        {
            if let Some((g, _)) = keys::split_rkey(k) {
                let (ino, chunk) = keys::split_chunk(k);
                chunks.insert((g, ino, chunk));
            }
        }
        // Sorted by generation first: one view per generation.
        let mut view: Option<(GenerationId, Option<View>)> = None;
        for (g, ino, chunk) in chunks {
            if view.as_ref().map(|(v, _)| *v) != Some(g) {
                view = Some((g, live(g)));
            }
            if let Some((_, Some(v))) = &view {
                let v = v.clone();
                self.bound_walk(ino, chunk, &v)?;
            }
        }
        Ok(())
    }
}
