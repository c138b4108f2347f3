//! Generation operations: snapshot create/list/delete/rename, rollback, clone, branches.
//!
//! Each is one atomic metadata commit made after every buffered write is committed, so a
//! crash leaves the operation done completely or not at all (docs/generations.md).
//!
//! - snapshot: the branch's live generation G is frozen under the name; a new live
//!   generation whose parent is G heads the branch. Cost: one small batch, whatever the
//!   size of the tree.
//! - rollback to S: the live generation is frozen as `pre-rollback-<time>`; a new live
//!   generation whose parent is S heads the branch. Nothing is destroyed.
//! - clone: a new branch whose live generation's parent is a snapshot.
//! - delete: the snapshot loses its name (state deleted); its records stay visible to its
//!   descendants until flattening folds them away; blocks no kept tree references any
//!   more are reclaimed by the next gc (`gc.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use strata_blockstore::BlockId;

use crate::codec::InodeRecord;
use crate::error::{Error, Result};
use crate::generation::{
    GenerationRecord, View, MAIN_BRANCH, STATE_DELETED, STATE_FROZEN, STATE_LIVE,
};
use crate::keys;
use crate::store::{State, Store};
use crate::types::{GenerationId, InodeNo, Timestamp, NAME_MAX};
use crate::volume::{Volume, VolumeKind};

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub generation: u64,
    /// The generation this snapshot's was started from (none for the first).
    pub parent: Option<u64>,
    /// The snapshot name of the parent, if it is a named snapshot.
    pub parent_name: Option<String>,
    pub branch: String,
    /// Seconds since the epoch when the snapshot was taken.
    pub created: i64,
    /// Held: no deletion and no pruning until released.
    pub held: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotUsage {
    pub name: String,
    /// Stored bytes (record header + compressed payload) of the blocks the snapshot's
    /// files reference.
    pub referenced_bytes: u64,
    /// Stored bytes of the blocks no other snapshot or branch references: what deleting
    /// the snapshot frees at the next gc.
    pub exclusive_bytes: u64,
    /// Inodes in the snapshot's tree (files, directories, links, ...).
    pub files: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BranchInfo {
    pub name: String,
    pub generation: u64,
    /// The snapshot the branch started from (its live generation's parent).
    pub origin: Option<String>,
    pub created: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RollbackInfo {
    /// The automatic snapshot holding the state just before the rollback.
    pub saved_as: String,
    /// Files that were open (kept open under --force).
    pub open_files: Vec<String>,
}

/// Names of automatic snapshots start with this; `snapshot prune` considers only them
/// unless told otherwise.
pub const AUTO_PREFIX: &str = "auto-";

/// Validates a snapshot or branch name.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Invalid(format!(
            "invalid {what} name {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    if name.len() > NAME_MAX {
        return bad(&format!("{} bytes, at most {NAME_MAX}", name.len()));
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    Ok(())
}

impl Store {
    /// A volume of this store: a branch's live tree or a snapshot (read-only).
    pub fn volume(self: &Arc<Self>, kind: VolumeKind) -> Result<Volume> {
        let st = self.lock();
        let frozen = match &kind {
            VolumeKind::Branch(b) => {
                if !st.heads.contains_key(b) {
                    return Err(Error::Invalid(format!("no branch named {b:?}")));
                }
                None
            }
            VolumeKind::Snapshot(g) => {
                let r = st.gens.get(*g)?;
                if r.state == STATE_LIVE {
                    return Err(Error::Invalid(format!("generation {} is not frozen", g.0)));
                }
                Some(st.gens.view(*g)?)
            }
        };
        drop(st);
        Ok(Volume::new(self.clone(), kind, frozen))
    }

    /// The main branch's live tree.
    pub fn main(self: &Arc<Self>) -> Volume {
        self.volume(VolumeKind::Branch(MAIN_BRANCH.into()))
            .expect("the main branch exists")
    }

    /// The generation of the snapshot `name`.
    pub fn snapshot_gen(&self, name: &str) -> Result<GenerationId> {
        self.lock()
            .gens
            .snapshot(name)
            .ok_or_else(|| Error::Invalid(format!("no snapshot named {name:?}")))
    }

    /// Every snapshot, oldest first (cheap: no walk of the trees).
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        let st = self.lock();
        st.gens
            .snapshots()
            .map(|(g, r)| SnapshotInfo {
                name: r.name.clone(),
                generation: g.0,
                parent: r.parent.map(|p| p.0),
                parent_name: r.parent.and_then(|p| {
                    st.gens
                        .all
                        .get(&p)
                        .filter(|pr| pr.state == STATE_FROZEN)
                        .map(|pr| pr.name.clone())
                }),
                branch: r.branch.clone(),
                created: r.created.secs,
                held: st.meta.get_raw(&keys::hold(g)).ok().flatten().is_some(),
            })
            .collect()
    }

    fn is_held(&self, g: GenerationId) -> Result<bool> {
        Ok(self.lock().meta.get_raw(&keys::hold(g))?.is_some())
    }

    /// Holds (`hold = true`) or releases snapshot `name`: a held snapshot cannot be
    /// deleted and no retention rule removes it.
    pub fn snapshot_hold(&self, name: &str, hold: bool) -> Result<()> {
        let mut st = self.lock();
        let g = st
            .gens
            .snapshot(name)
            .ok_or_else(|| Error::Invalid(format!("no snapshot named {name:?}")))?;
        if hold {
            st.meta.put_raw(keys::hold(g), Vec::new());
        } else {
            st.meta.remove_raw(keys::hold(g));
        }
        self.commit_locked(&mut st)
    }

    /// Applies `policy` to the automatic snapshots (names starting `auto-`), or to every
    /// snapshot with `all`; deletes what no rule keeps unless `dry_run`. Returns every
    /// considered snapshot's decision, newest first.
    pub fn snapshot_prune(
        &self,
        policy: &crate::retention::KeepPolicy,
        all: bool,
        dry_run: bool,
    ) -> Result<Vec<crate::retention::Decision>> {
        let candidates: Vec<crate::retention::Candidate> = self
            .snapshots()
            .into_iter()
            .filter(|s| all || s.name.starts_with(AUTO_PREFIX))
            .map(|s| crate::retention::Candidate {
                name: s.name,
                time: s.created,
                held: s.held,
            })
            .collect();
        let decisions = crate::retention::plan(&candidates, policy);
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                self.remove_snapshot(&d.name, self.snapshot_gen(&d.name)?)?;
            }
        }
        Ok(decisions)
    }

    /// Takes an automatic snapshot of `branch`, named `auto-YYYYMMDDTHHMMSSZ` (names sort
    /// by time).
    pub fn snapshot_auto(&self, branch: &str) -> Result<SnapshotInfo> {
        self.snapshot_create(branch, &self.auto_snapshot_name())
    }

    /// The name an automatic snapshot taken now gets: `auto-YYYYMMDDTHHMMSSZ`, made
    /// unique among the snapshots there are.
    pub fn auto_snapshot_name(&self) -> String {
        let base = format!("{AUTO_PREFIX}{}", utc_stamp(Timestamp::now().secs));
        unique_name(&self.lock(), &base)
    }

    pub fn branches(&self) -> Vec<BranchInfo> {
        let st = self.lock();
        let mut v: Vec<BranchInfo> = st
            .gens
            .heads()
            .map(|(g, r)| BranchInfo {
                name: r.branch.clone(),
                generation: g.0,
                origin: r.parent.and_then(|p| {
                    st.gens
                        .all
                        .get(&p)
                        .filter(|pr| pr.state == STATE_FROZEN)
                        .map(|pr| pr.name.clone())
                }),
                created: r.created.secs,
            })
            .collect();
        v.sort_by(|a, b| (a.name != MAIN_BRANCH, &a.name).cmp(&(b.name != MAIN_BRANCH, &b.name)));
        v
    }

    /// Freezes `branch`'s live tree as snapshot `name`.
    pub fn snapshot_create(&self, branch: &str, name: &str) -> Result<SnapshotInfo> {
        check_name("snapshot", name)?;
        let mut st = self.lock_between_writes(|st| st.heads.get(branch).map(|v| v.gen));
        if st.gens.snapshot(name).is_some() {
            return Err(Error::Invalid(format!(
                "a snapshot named {name:?} exists already"
            )));
        }
        let head = head_of(&st, branch)?;
        self.commit_locked(&mut st)?;
        let now = Timestamp::now();
        let mut frozen = st.gens.get(head)?.clone();
        frozen.state = STATE_FROZEN;
        frozen.name = name.to_string();
        frozen.created = now;
        let next = GenerationRecord::new_live(Some(head), now, branch);
        let new = self.apply_generations(&mut st, vec![(head, frozen)], Some(next))?;
        rekey(&mut st, head, new.expect("a new generation"));
        let parent = st.gens.get(head)?.parent;
        Ok(SnapshotInfo {
            name: name.to_string(),
            generation: head.0,
            parent: parent.map(|p| p.0),
            parent_name: parent.and_then(|p| {
                st.gens
                    .all
                    .get(&p)
                    .filter(|r| r.state == STATE_FROZEN)
                    .map(|r| r.name.clone())
            }),
            branch: branch.to_string(),
            created: now.secs,
            held: false,
        })
    }

    pub fn snapshot_rename(&self, old: &str, new: &str) -> Result<()> {
        check_name("snapshot", new)?;
        let mut st = self.lock();
        let g = st
            .gens
            .snapshot(old)
            .ok_or_else(|| Error::Invalid(format!("no snapshot named {old:?}")))?;
        if old == new {
            return Ok(());
        }
        if st.gens.snapshot(new).is_some() {
            return Err(Error::Invalid(format!(
                "a snapshot named {new:?} exists already"
            )));
        }
        self.commit_locked(&mut st)?;
        let mut r = st.gens.get(g)?.clone();
        r.name = new.to_string();
        self.apply_generations(&mut st, vec![(g, r)], None)?;
        Ok(())
    }

    /// Deletes snapshot `name` (unless `dry_run`); returns the bytes that no other
    /// snapshot or branch references (what the next gc frees).
    pub fn snapshot_delete(&self, name: &str, dry_run: bool) -> Result<u64> {
        let g = self.snapshot_gen(name)?;
        // Refuse before the (whole-store) usage pass; checked again under the lock.
        if self.is_held(g)? {
            return Err(held_error(name));
        }
        let usage = self.usage()?;
        let freed = usage.get(&g).map(|u| u.exclusive_bytes).unwrap_or(0);
        if dry_run {
            return Ok(freed);
        }
        self.remove_snapshot(name, g)?;
        Ok(freed)
    }

    /// Marks snapshot `name` (generation `g`) deleted, in one commit.
    fn remove_snapshot(&self, name: &str, g: GenerationId) -> Result<()> {
        let mut st = self.lock();
        if st.gens.snapshot(name) != Some(g) {
            return Err(Error::Invalid(format!("no snapshot named {name:?}")));
        }
        if st.meta.get_raw(&keys::hold(g))?.is_some() {
            return Err(held_error(name));
        }
        self.commit_locked(&mut st)?;
        let mut r = st.gens.get(g)?.clone();
        r.state = STATE_DELETED;
        r.name.clear();
        self.apply_generations(&mut st, vec![(g, r)], None)?;
        Ok(())
    }

    /// Open file handles on `branch`'s live tree, as paths.
    pub fn open_files(&self, branch: &str) -> Result<Vec<String>> {
        let mut st = self.lock();
        let head = head_of(&st, branch)?;
        let inos: Vec<InodeNo> = st
            .handles
            .keys()
            .filter(|(g, _)| *g == head)
            .map(|(_, i)| *i)
            .collect();
        let view = st.heads[branch].clone();
        st.meta.set_view(&view);
        let mut out: Vec<String> = inos
            .into_iter()
            .map(|i| crate::diff::path_of(&st, i).unwrap_or_else(|| format!("(inode {})", i.0)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Makes `branch`'s live tree the content of snapshot `name`, keeping the current
    /// state as an automatic snapshot. Refuses while files are open unless `force`.
    pub fn rollback(&self, branch: &str, name: &str, force: bool) -> Result<RollbackInfo> {
        let target = self.snapshot_gen(name)?;
        let open_files = self.open_files(branch)?;
        if !open_files.is_empty() && !force {
            return Err(Error::Invalid(format!(
                "files are open in branch {branch}: {}; close them or use --force",
                open_files.join(", ")
            )));
        }
        let mut st = self.lock_between_writes(|st| st.heads.get(branch).map(|v| v.gen));
        let head = head_of(&st, branch)?;
        self.commit_locked(&mut st)?;
        let now = Timestamp::now();
        let saved_as = unique_name(&st, &format!("pre-rollback-{}", utc_stamp(now.secs)));
        let mut frozen = st.gens.get(head)?.clone();
        frozen.state = STATE_FROZEN;
        frozen.name = saved_as.clone();
        frozen.created = now;
        let next = GenerationRecord::new_live(Some(target), now, branch);
        let new = self.apply_generations(&mut st, vec![(head, frozen)], Some(next))?;
        rekey(&mut st, head, new.expect("a new generation"));
        Ok(RollbackInfo {
            saved_as,
            open_files,
        })
    }

    /// A new writable branch starting at snapshot `snapshot`.
    pub fn clone_branch(&self, snapshot: &str, branch: &str) -> Result<BranchInfo> {
        check_name("branch", branch)?;
        let target = self.snapshot_gen(snapshot)?;
        let mut st = self.lock();
        if st.heads.contains_key(branch) {
            return Err(Error::Invalid(format!(
                "a branch named {branch:?} exists already"
            )));
        }
        self.commit_locked(&mut st)?;
        let now = Timestamp::now();
        let next = GenerationRecord::new_live(Some(target), now, branch);
        let g = self
            .apply_generations(&mut st, vec![], Some(next))?
            .expect("a new generation");
        Ok(BranchInfo {
            name: branch.to_string(),
            generation: g.0,
            origin: Some(snapshot.to_string()),
            created: now.secs,
        })
    }

    /// Deletes a branch (not `main`); the caller makes sure it is not mounted.
    pub fn branch_delete(&self, branch: &str) -> Result<()> {
        if branch == MAIN_BRANCH {
            return Err(Error::Invalid("the main branch cannot be deleted".into()));
        }
        let mut st = self.lock();
        let head = head_of(&st, branch)?;
        if st.handles.keys().any(|(g, _)| *g == head) {
            return Err(Error::Invalid(format!("files are open in branch {branch}")));
        }
        self.commit_locked(&mut st)?;
        let mut r = st.gens.get(head)?.clone();
        r.state = STATE_DELETED;
        self.apply_generations(&mut st, vec![(head, r)], None)?;
        st.open.retain(|(g, _), _| *g != head);
        Ok(())
    }

    /// Writes changed generation records and, if `new` is given, a new generation, as one
    /// atomic commit; then updates the in-memory table. The overlay must be empty (the
    /// caller committed), so the batch holds exactly this operation.
    fn apply_generations(
        &self,
        st: &mut State,
        changed: Vec<(GenerationId, GenerationRecord)>,
        new: Option<GenerationRecord>,
    ) -> Result<Option<GenerationId>> {
        let mut new_id = None;
        for (g, r) in &changed {
            st.meta.put_raw(keys::generation(*g), r.encode());
        }
        if let Some(r) = &new {
            let g = GenerationId(st.next_gen);
            st.next_gen += 1;
            st.meta.put_raw(keys::generation(g), r.encode());
            new_id = Some(g);
        }
        self.commit_locked(st)?;
        for (g, r) in changed {
            st.gens.all.insert(g, r);
        }
        if let (Some(g), Some(r)) = (new_id, new) {
            st.gens.all.insert(g, r);
        }
        st.refresh_heads()?;
        Ok(new_id)
    }

    /// Per snapshot and branch head: referenced and exclusive stored bytes and inode
    /// counts. One pass over every block-map and inode record of every generation (the
    /// same visibility pass as gc's mark, `visible_blocks`).
    pub(crate) fn usage(&self) -> Result<HashMap<GenerationId, SnapshotUsage>> {
        let mut st = self.lock();
        self.commit_locked(&mut st)?;
        let targets = kept_trees(&st)?;
        let blocks = st.meta.all_versions(&[keys::BLOCK])?;
        let inodes = st.meta.all_versions(&[keys::INODE])?;
        drop(st);
        let mut usage: Vec<SnapshotUsage> = targets
            .iter()
            .map(|(_, _, n)| SnapshotUsage {
                name: n.clone(),
                referenced_bytes: 0,
                exclusive_bytes: 0,
                files: 0,
            })
            .collect();
        let views: Vec<View> = targets.iter().map(|(_, v, _)| v.clone()).collect();
        // block id -> (the one target referencing it, or None when shared)
        let mut owner: HashMap<BlockId, Option<usize>> = HashMap::new();
        let mut sizes: HashMap<BlockId, u64> = HashMap::new();
        visible_blocks(&blocks, &views, |t, id| {
            let size = match sizes.get(&id) {
                Some(s) => *s,
                None => {
                    // The whole record: what the packs shrink by once it is reclaimed.
                    let s = self.blocks.record_len(&id)?.unwrap_or(0);
                    sizes.insert(id, s);
                    s
                }
            };
            usage[t].referenced_bytes += size;
            owner
                .entry(id)
                .and_modify(|o| {
                    if *o != Some(t) {
                        *o = None
                    }
                })
                .or_insert(Some(t));
            Ok(())
        })?;
        for (id, o) in owner {
            if let Some(t) = o {
                usage[t].exclusive_bytes += sizes[&id];
            }
        }
        for group in inodes.chunk_by(|a, b| a.0 == b.0) {
            for (t, view) in views.iter().enumerate() {
                let visible = group.iter().rev().find(|(_, g, _)| view.sees(*g));
                if let Some((_, _, Some(v))) = visible {
                    if InodeRecord::decode(v)?.nlink > 0 {
                        usage[t].files += 1;
                    }
                }
            }
        }
        Ok(targets.iter().map(|(g, _, _)| *g).zip(usage).collect())
    }

    /// `snapshots()` with their space and file counts.
    pub fn snapshot_usage(&self) -> Result<Vec<(SnapshotInfo, SnapshotUsage)>> {
        let mut usage = self.usage()?;
        Ok(self
            .snapshots()
            .into_iter()
            .map(|s| {
                let u = usage
                    .remove(&GenerationId(s.generation))
                    .unwrap_or(SnapshotUsage {
                        name: s.name.clone(),
                        referenced_bytes: 0,
                        exclusive_bytes: 0,
                        files: 0,
                    });
                (s, u)
            })
            .collect())
    }
}

/// The trees whose blocks are kept (`generation::is_kept`: branch heads, snapshots, and
/// deleted snapshots whose files are still open), with their views and snapshot names.
/// A deleted generation's records that a descendant still sees are covered through the
/// descendant's view.
pub(crate) fn kept_trees(st: &State) -> Result<Vec<(GenerationId, View, String)>> {
    st.gens
        .all
        .iter()
        .filter(|(g, r)| crate::generation::is_kept(**g, r, &st.frozen_open))
        .map(|(g, r)| Ok((*g, st.gens.view(*g)?, r.name.clone())))
        .collect()
}

/// The one visibility pass over block maps, shared by space accounting and gc's mark:
/// `versions` are all versions of all `B` records (`Meta::all_versions`, in key order);
/// for each record base and each tree `views[t]` whose visible version of it names a
/// block (not a tombstone), calls `f(t, block)`.
pub(crate) fn visible_blocks(
    versions: &[crate::meta::Version],
    views: &[View],
    mut f: impl FnMut(usize, BlockId) -> Result<()>,
) -> Result<()> {
    for group in versions.chunk_by(|a, b| a.0 == b.0) {
        for (t, view) in views.iter().enumerate() {
            // Versions ascend by generation; the highest one the view sees wins.
            let visible = group.iter().rev().find(|(_, g, _)| view.sees(*g));
            if let Some((_, _, Some(v))) = visible {
                f(t, crate::codec::decode_block(v)?)?;
            }
        }
    }
    Ok(())
}

fn held_error(name: &str) -> Error {
    Error::Invalid(format!(
        "snapshot {name:?} is held; release it first (strata snapshot release)"
    ))
}

fn head_of(st: &State, branch: &str) -> Result<GenerationId> {
    st.heads
        .get(branch)
        .map(|v| v.gen)
        .ok_or_else(|| Error::Invalid(format!("no branch named {branch:?}")))
}

/// Moves the per-inode reference counts of a branch from its old live generation to
/// its new one (open files stay open across a snapshot or a rollback).
fn rekey(st: &mut State, old: GenerationId, new: GenerationId) {
    for map in [&mut st.open, &mut st.handles] {
        let moved: Vec<((GenerationId, InodeNo), u64)> = map
            .iter()
            .filter(|((g, _), _)| *g == old)
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((_, ino), v) in moved {
            map.remove(&(old, ino));
            map.insert((new, ino), v);
        }
    }
    st.partial_writes.retain(|(g, _), _| *g != old);
    debug_assert!(st.dirty.keys().all(|(g, _)| *g != old));
}

fn unique_name(st: &State, base: &str) -> String {
    if st.gens.snapshot(base).is_none() {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| st.gens.snapshot(n).is_none())
        .unwrap()
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (UTC), so names sort by time.
pub fn utc_stamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(check_name("snapshot", "ok-1.2").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            let e = check_name("snapshot", bad).unwrap_err().to_string();
            assert!(e.contains("invalid snapshot name"), "{e}");
        }
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_795_000_000), "20261118T110640Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }
}
