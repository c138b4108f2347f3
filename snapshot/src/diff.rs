//! `diff` between two trees and `history` of one path, read from the versioned records.
//!
//! diff reads the change index (`C gen ino`): the generations on either side of the two
//! trees' common ancestry name every inode that may differ, so its cost follows what
//! changed, not the size of the tree. Entries of changed directories are compared name by
//! name; an inode that left one name and gained another is a rename.
//!
//! history resolves the path in each generation of the branch's chain (a point lookup
//! per path component) and reports the generations where what the path names changed —
//! a new inode (created, or replaced by an atomic rename) or a changed record.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::codec::{self, InodeRecord};
use crate::error::{Error, Result};
use crate::generation::{View, STATE_FROZEN, STATE_LIVE};
use crate::keys;
use crate::store::{State, Store};
use crate::types::{FileKind, GenerationId, InodeNo, Timestamp};
use crate::volume::VolumeKind;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    /// `+` added, `-` removed, `M` modified, `R` renamed (as `zfs diff`).
    pub change: char,
    pub path: String,
    /// For `R`: the new path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    pub generation: u64,
    /// The snapshot name, or `None` for the branch's live tree.
    pub snapshot: Option<String>,
    /// When the snapshot was taken (for the live tree: its last change, mtime).
    pub time: i64,
    /// `created`, `modified`, `replaced` or `deleted`.
    pub change: &'static str,
    pub size: Option<u64>,
    pub mtime: Option<i64>,
}

pub fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::File => "file",
        FileKind::Dir => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::CharDevice => "char-device",
        FileKind::BlockDevice => "block-device",
    }
}

/// The record with the timestamps a rename or a read touches masked out.
fn content_of(rec: &InodeRecord) -> Vec<u8> {
    let mut r = rec.clone();
    r.atime = Timestamp::default();
    r.ctime = Timestamp::default();
    r.parent = InodeNo(0);
    r.encode()
}

/// A path of `ino` in the tree `st` points at (dirs by their parent pointers, other
/// kinds through their parent hint), or None when it cannot be found.
pub(crate) fn path_of(st: &State, ino: InodeNo) -> Option<String> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut cur = ino;
    for _ in 0..4096 {
        if cur == InodeNo::ROOT {
            parts.reverse();
            let mut p = String::new();
            for part in parts {
                p.push('/');
                p.push_str(&String::from_utf8_lossy(&part));
            }
            return Some(if p.is_empty() { "/".into() } else { p });
        }
        let rec = st.load_inode(cur).ok()?;
        let dir = rec.parent;
        let name = st
            .meta
            .scan(&keys::dir_prefix(dir))
            .ok()?
            .into_iter()
            .find(|(_, v)| codec::decode_dirent(v).is_ok_and(|(i, _)| i == cur))
            .map(|(base, _)| keys::dirent_name(&base).to_vec())?;
        parts.push(name);
        cur = dir;
    }
    None
}

fn join(dir: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// What one side of a diff holds for the touched inodes.
struct Side {
    recs: HashMap<InodeNo, InodeRecord>,
    entries: HashMap<InodeNo, BTreeMap<Vec<u8>, (InodeNo, FileKind)>>,
}

fn load_side(st: &mut State, view: &View, touched: &BTreeSet<InodeNo>) -> Result<Side> {
    st.meta.set_view(view);
    let mut side = Side {
        recs: HashMap::new(),
        entries: HashMap::new(),
    };
    for &ino in touched {
        match st.load_inode(ino) {
            Ok(rec) => {
                if rec.kind == FileKind::Dir {
                    let mut m = BTreeMap::new();
                    for (base, v) in st.meta.scan(&keys::dir_prefix(ino))? {
                        m.insert(keys::dirent_name(&base).to_vec(), codec::decode_dirent(&v)?);
                    }
                    side.entries.insert(ino, m);
                }
                side.recs.insert(ino, rec);
            }
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(side)
}

impl Store {
    fn view_of(&self, st: &State, kind: &VolumeKind) -> Result<View> {
        match kind {
            VolumeKind::Branch(b) => st
                .heads
                .get(b)
                .cloned()
                .ok_or_else(|| Error::Invalid(format!("no branch named {b:?}"))),
            VolumeKind::Snapshot(g) => st.gens.view(*g),
        }
    }

    /// What changed from tree `a` to tree `b`, sorted by path.
    pub fn diff(&self, a: &VolumeKind, b: &VolumeKind) -> Result<Vec<DiffEntry>> {
        let mut st = self.lock();
        let va = self.view_of(&st, a)?;
        let vb = self.view_of(&st, b)?;
        let chain = |v: &View| -> HashSet<u64> {
            let mut s: HashSet<u64> = v.ancestors.iter().copied().collect();
            s.insert(v.gen.0);
            s
        };
        let (ca, cb) = (chain(&va), chain(&vb));
        let mut touched = BTreeSet::new();
        for g in ca.symmetric_difference(&cb) {
            touched.extend(st.meta.changes_of(GenerationId(*g))?);
        }
        let sa = load_side(&mut st, &va, &touched)?;
        let sb = load_side(&mut st, &vb, &touched)?;

        // Name-level changes in touched directories.
        let mut removed: Vec<(InodeNo, Vec<u8>, InodeNo, FileKind)> = Vec::new();
        let mut added: Vec<(InodeNo, Vec<u8>, InodeNo, FileKind)> = Vec::new();
        let empty = BTreeMap::new();
        for &dir in &touched {
            let ea = sa.entries.get(&dir).unwrap_or(&empty);
            let eb = sb.entries.get(&dir).unwrap_or(&empty);
            for (name, &(ino, kind)) in ea {
                if eb.get(name).map(|e| e.0) != Some(ino) {
                    removed.push((dir, name.clone(), ino, kind));
                }
            }
            for (name, &(ino, kind)) in eb {
                if ea.get(name).map(|e| e.0) != Some(ino) {
                    added.push((dir, name.clone(), ino, kind));
                }
            }
        }
        // Paths: of removed names in `a`, of added names in `b`.
        st.meta.set_view(&va);
        let mut dir_paths_a: HashMap<InodeNo, Option<String>> = HashMap::new();
        let mut removed_paths = Vec::new();
        for (dir, name, ino, kind) in &removed {
            let dp = dir_paths_a
                .entry(*dir)
                .or_insert_with(|| path_of(&st, *dir))
                .clone();
            if let Some(dp) = dp {
                removed_paths.push((join(&dp, name), *ino, *kind));
            }
        }
        st.meta.set_view(&vb);
        let mut dir_paths_b: HashMap<InodeNo, Option<String>> = HashMap::new();
        let mut added_paths = Vec::new();
        for (dir, name, ino, kind) in &added {
            let dp = dir_paths_b
                .entry(*dir)
                .or_insert_with(|| path_of(&st, *dir))
                .clone();
            if let Some(dp) = dp {
                added_paths.push((join(&dp, name), *ino, *kind));
            }
        }
        let mut out = Vec::new();
        // Renames: an inode that lost a name and gained one, present on both sides.
        let mut added_by_ino: HashMap<InodeNo, Vec<usize>> = HashMap::new();
        for (i, (_, ino, _)) in added_paths.iter().enumerate() {
            added_by_ino.entry(*ino).or_default().push(i);
        }
        let mut used = vec![false; added_paths.len()];
        for (path, ino, kind) in &removed_paths {
            let pair = added_by_ino
                .get_mut(ino)
                .and_then(|v| v.pop())
                .filter(|_| sa.recs.contains_key(ino) && sb.recs.contains_key(ino));
            match pair {
                Some(i) => {
                    used[i] = true;
                    out.push(DiffEntry {
                        change: 'R',
                        path: path.clone(),
                        new_path: Some(added_paths[i].0.clone()),
                        kind: kind_name(*kind),
                    });
                }
                None => out.push(DiffEntry {
                    change: '-',
                    path: path.clone(),
                    new_path: None,
                    kind: kind_name(*kind),
                }),
            }
        }
        for (i, (path, _, kind)) in added_paths.iter().enumerate() {
            if !used[i] {
                out.push(DiffEntry {
                    change: '+',
                    path: path.clone(),
                    new_path: None,
                    kind: kind_name(*kind),
                });
            }
        }
        // Modified: on both sides, and different beyond ctime/atime.
        let added_inos: HashSet<InodeNo> = added_paths
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .map(|(_, (_, ino, _))| *ino)
            .collect();
        for &ino in &touched {
            let (Some(ra), Some(rb)) = (sa.recs.get(&ino), sb.recs.get(&ino)) else {
                continue;
            };
            if rb.nlink == 0 || added_inos.contains(&ino) {
                continue;
            }
            let blocks_differ = ra.kind == FileKind::File && {
                let bp = keys::block_prefix(ino);
                st.meta.set_view(&va);
                let ba = st.meta.scan(&bp)?;
                st.meta.set_view(&vb);
                ba != st.meta.scan(&bp)?
            };
            if content_of(ra) != content_of(rb) || blocks_differ {
                st.meta.set_view(&vb);
                if let Some(p) = path_of(&st, ino) {
                    out.push(DiffEntry {
                        change: 'M',
                        path: p,
                        new_path: None,
                        kind: kind_name(rb.kind),
                    });
                }
            }
        }
        out.sort_by(|x, y| (&x.path, x.change).cmp(&(&y.path, y.change)));
        Ok(out)
    }

    /// Every generation of `branch`'s chain in which what `path` names changed, oldest
    /// first (the live tree last).
    pub fn history(&self, branch: &str, path: &str) -> Result<Vec<HistoryEntry>> {
        let mut st = self.lock();
        let head = st
            .heads
            .get(branch)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("no branch named {branch:?}")))?;
        let mut chain: Vec<GenerationId> =
            head.ancestors.iter().map(|g| GenerationId(*g)).collect();
        chain.sort();
        chain.push(head.gen);
        let comps: Vec<&[u8]> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(|c| c.as_bytes())
            .collect();
        let mut out: Vec<HistoryEntry> = Vec::new();
        let mut prev: Option<(InodeNo, Vec<u8>)> = None;
        let mut ever = false;
        for g in chain {
            let rec = st.gens.get(g)?.clone();
            let view = if g == head.gen {
                head.clone()
            } else {
                st.gens.view(g)?
            };
            st.meta.set_view(&view);
            let found = resolve(&st, &comps)?;
            let now = found.as_ref().map(|(i, r)| (*i, content_of(r)));
            let change = match (&prev, &now) {
                (None, None) => None,
                (None, Some(_)) => Some("created"),
                (Some(_), None) => Some("deleted"),
                (Some((pi, pc)), Some((ni, nc))) if pi != ni => {
                    let _ = (pc, nc);
                    Some("replaced")
                }
                (Some((_, pc)), Some((_, nc))) if pc != nc => Some("modified"),
                _ => None,
            };
            if let Some(change) = change {
                ever = true;
                let live = rec.state == STATE_LIVE;
                out.push(HistoryEntry {
                    generation: g.0,
                    snapshot: (rec.state == STATE_FROZEN).then(|| rec.name.clone()),
                    time: if live {
                        found
                            .as_ref()
                            .map(|(_, r)| r.mtime.secs)
                            .unwrap_or(Timestamp::now().secs)
                    } else {
                        rec.created.secs
                    },
                    change,
                    size: found.as_ref().map(|(_, r)| r.size),
                    mtime: found.as_ref().map(|(_, r)| r.mtime.secs),
                });
            }
            prev = now;
        }
        if !ever {
            return Err(Error::Invalid(format!(
                "{path}: not found in branch {branch} or any generation before it"
            )));
        }
        Ok(out)
    }
}

/// Resolves path components from the root in the tree `st` points at.
fn resolve(st: &State, comps: &[&[u8]]) -> Result<Option<(InodeNo, InodeRecord)>> {
    let mut cur = InodeNo::ROOT;
    for c in comps {
        if *c == b".." {
            cur = st.load_inode(cur)?.parent;
            continue;
        }
        match st.lookup_entry(cur, c) {
            Ok(Some((ino, _))) => cur = ino,
            Ok(None) | Err(Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    match st.load_inode(cur) {
        Ok(r) => Ok(Some((cur, r))),
        Err(Error::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}
