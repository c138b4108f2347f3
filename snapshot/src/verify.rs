//! `strata verify` and `strata stats`: a full check of the store and its figures.
//!
//! verify checks every block in every pack against its id (the blockstore's scan), then
//! every block record version once (`verify_blocks`: it names a block that is stored
//! and sound, of an inode that exists), then every tree (each branch's live tree, each
//! snapshot): each entry names an existing inode of the same kind, link counts agree
//! with the entries, every inode is reachable or a recorded orphan, and the files that
//! read a damaged or missing block are named. Problems name the tree and the file
//! (path), and for data the byte offset.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::codec::{self, InodeRecord};
use crate::error::{Error, Result};
use crate::generation::{MAIN_BRANCH, STATE_FROZEN, STATE_LIVE};
use crate::keys;
use crate::store::{State, Store};
use crate::types::GenerationId;
use crate::types::{FileKind, InodeNo};
use crate::verify_blocks::BlockVersions;

/// Block records (or checkpoint listings) checked against the read index per hold of the
/// state lock (a few in unit tests, so they cross step boundaries).
const INDEX_STEP: usize = if cfg!(test) { 5 } else { 4096 };

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct VerifyReport {
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub inodes_checked: u64,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Stats {
    /// Bytes of file data in the live tree (holes excluded), before dedup and compression.
    pub logical_bytes: u64,
    /// Unique block bytes before compression.
    pub unique_bytes: u64,
    /// Compressed bytes of unique blocks.
    pub stored_bytes: u64,
    /// Size of the pack files on disk.
    pub pack_bytes: u64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    pub blocks: u64,
    pub block_refs: u64,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub other_inodes: u64,
    pub pack_files: u64,
}

struct Problems<'a> {
    problems: &'a mut Vec<String>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

impl Store {
    /// Figures of the main branch's live tree and of the blockstore.
    pub fn stats(&self) -> Result<Stats> {
        let mut st = self.lock();
        let view = st.heads[crate::generation::MAIN_BRANCH].clone();
        st.meta.set_view(&view);
        let bs = self.config.block_size as u64;
        let mut s = Stats::default();
        let mut sizes: HashMap<InodeNo, u64> = HashMap::new();
        for (base, v) in st.meta.scan(&[keys::INODE])? {
            let rec = InodeRecord::decode(&v)?;
            match rec.kind {
                FileKind::File => s.files += 1,
                FileKind::Dir => s.directories += 1,
                FileKind::Symlink => s.symlinks += 1,
                _ => s.other_inodes += 1,
            }
            sizes.insert(keys::key_ino(&base), rec.size);
        }
        for (base, _) in st.meta.scan(&[keys::BLOCK])? {
            let ino = keys::key_ino(&base);
            let start = keys::block_index(&base) * bs;
            let size = sizes.get(&ino).copied().unwrap_or(0);
            s.logical_bytes += size.saturating_sub(start).min(bs);
            s.block_refs += 1;
        }
        drop(st);
        let b = self.blocks.stats()?;
        s.blocks = b.blocks;
        s.unique_bytes = b.raw_bytes;
        s.stored_bytes = b.stored_bytes;
        s.pack_bytes = b.pack_bytes;
        s.pack_files = b.pack_files;
        s.dedup_ratio = ratio(s.logical_bytes, s.unique_bytes);
        s.compression_ratio = ratio(s.unique_bytes, s.stored_bytes);
        Ok(s)
    }

    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        // What fsync made durable through the intent log is checked too: commit it first
        // (a store that refuses writes is checked as it stands).
        match self.sync() {
            Ok(()) | Err(Error::Poisoned(_)) => {}
            Err(e) => return Err(e),
        }
        let b = self.blocks.verify(progress)?;
        let mut r = VerifyReport {
            blocks_checked: b.records_checked,
            bytes_checked: b.bytes_checked,
            problems: b.problems,
            ..Default::default()
        };
        let bad: HashSet<_> = b.bad_blocks.into_iter().collect();
        // Every tree: each branch's live tree and each snapshot. The state lock is taken
        // per tree, so a mounted store keeps serving between them.
        let trees: Vec<(String, GenerationId)> = self
            .lock()
            .gens
            .all
            .iter()
            .filter_map(|(g, rec)| match rec.state {
                STATE_LIVE if rec.branch == MAIN_BRANCH => Some((String::new(), *g)),
                STATE_LIVE => Some((format!("branch {}: ", rec.branch), *g)),
                STATE_FROZEN => Some((format!("snapshot {}: ", rec.name), *g)),
                _ => None,
            })
            .collect();
        let labels: HashMap<GenerationId, String> =
            trees.iter().map(|(l, g)| (*g, l.clone())).collect();
        let label = |g: GenerationId| match labels.get(&g) {
            Some(l) => l.clone(),
            None => format!("generation {}: ", g.0),
        };
        let tree_gens: HashSet<GenerationId> = labels.keys().copied().collect();
        let versions = self.verify_block_versions(&bad, &tree_gens, &label)?;
        r.problems.extend(versions.problems.iter().cloned());
        for (label, g) in trees {
            let mut st = self.lock();
            let Ok(view) = st.gens.view(g) else { continue }; // deleted meanwhile
            st.meta.set_view(&view);
            let mut problems = Vec::new();
            r.inodes_checked += self.verify_tree(&st, &versions, &mut problems)?;
            r.problems
                .extend(problems.into_iter().map(|p| format!("{label}{p}")));
        }
        // The read index against the block map, in steps of whole chunks, each at a
        // commit and under the state lock (the mount serves between them).
        let mut at = Some((InodeNo(0), 0));
        while let Some(from) = at {
            let mut st = self.lock();
            self.commit_locked(&mut st)?;
            let st = &mut *st;
            let gens = &st.gens;
            let (problems, next) = st
                .meta
                .check_read_index_step(from, INDEX_STEP, &mut |g| gens.view(g).ok())?;
            r.problems.extend(problems);
            at = next;
        }
        let mut at = Some(vec![keys::CHECKPOINT_REF]);
        while let Some(from) = at {
            let st = self.lock();
            let (problems, next) = st.meta.check_checkpoint_refs_step(&from, INDEX_STEP)?;
            r.problems.extend(problems);
            at = next;
        }
        for (g, n) in self.stray_records()? {
            r.problems.push(format!(
                "metadata: {n} record{} of generation {}, which does not exist",
                if n == 1 { "" } else { "s" },
                g.0
            ));
        }
        Ok(r)
    }

    /// Checks the tree `st` points at; returns the number of inodes checked.
    fn verify_tree(
        &self,
        st: &State,
        versions: &BlockVersions,
        problems: &mut Vec<String>,
    ) -> Result<u64> {
        let r = Problems { problems };
        let bs = self.config.block_size as u64;

        let mut inodes: HashMap<InodeNo, InodeRecord> = HashMap::new();
        for (base, v) in st.meta.scan(&[keys::INODE])? {
            match InodeRecord::decode(&v) {
                Ok(rec) => {
                    inodes.insert(keys::key_ino(&base), rec);
                }
                Err(e) => r
                    .problems
                    .push(format!("inode {}: {e}", keys::key_ino(&base).0)),
            }
        }
        let checked = inodes.len() as u64;
        let orphans: HashSet<InodeNo> = st
            .meta
            .scan(&[keys::ORPHAN])?
            .into_iter()
            .map(|(b, _)| keys::key_ino(&b))
            .collect();

        // Walk the tree from the root: paths, link counts, entry targets.
        let mut paths: HashMap<InodeNo, String> = HashMap::new();
        let mut links: HashMap<InodeNo, u32> = HashMap::new();
        let mut subdirs: HashMap<InodeNo, u32> = HashMap::new();
        paths.insert(InodeNo::ROOT, "/".into());
        let mut queue = VecDeque::from([InodeNo::ROOT]);
        let mut seen_dirs = HashSet::from([InodeNo::ROOT]);
        while let Some(dir) = queue.pop_front() {
            let dpath = paths[&dir].clone();
            for (base, v) in st.meta.scan(&keys::dir_prefix(dir))? {
                let name = String::from_utf8_lossy(keys::dirent_name(&base)).into_owned();
                let path = if dpath == "/" {
                    format!("/{name}")
                } else {
                    format!("{dpath}/{name}")
                };
                let (ino, kind) = match codec::decode_dirent(&v) {
                    Ok(x) => x,
                    Err(e) => {
                        r.problems.push(format!("{path}: bad entry: {e}"));
                        continue;
                    }
                };
                let Some(rec) = inodes.get(&ino) else {
                    r.problems.push(format!(
                        "{path}: entry names inode {} which does not exist",
                        ino.0
                    ));
                    continue;
                };
                if rec.kind != kind {
                    r.problems.push(format!(
                        "{path}: entry kind {kind:?} but inode {} is {:?}",
                        ino.0, rec.kind
                    ));
                }
                *links.entry(ino).or_default() += 1;
                paths.entry(ino).or_insert(path.clone());
                if rec.kind == FileKind::Dir {
                    *subdirs.entry(dir).or_default() += 1;
                    if rec.parent != dir {
                        r.problems.push(format!(
                            "{path}: parent pointer {} but listed in {}",
                            rec.parent.0, dir.0
                        ));
                    }
                    if !seen_dirs.insert(ino) {
                        r.problems.push(format!("{path}: directory linked twice"));
                        continue;
                    }
                    queue.push_back(ino);
                }
            }
        }
        for (ino, rec) in &inodes {
            let name = paths
                .get(ino)
                .cloned()
                .unwrap_or_else(|| format!("inode {}", ino.0));
            let expected = if rec.kind == FileKind::Dir {
                2 + subdirs.get(ino).copied().unwrap_or(0)
            } else {
                links.get(ino).copied().unwrap_or(0)
            };
            let reachable = *ino == InodeNo::ROOT || links.contains_key(ino);
            if !reachable && !orphans.contains(ino) {
                r.problems.push(format!(
                    "{name}: inode is not reachable from the root and not an orphan"
                ));
            } else if reachable && rec.nlink != expected {
                r.problems.push(format!(
                    "{name}: link count {} but {} found",
                    rec.nlink, expected
                ));
            }
        }
        // The block map itself was checked once per version (`verify_blocks`): name the
        // files of this tree that read a damaged or missing block.
        for suspect in &versions.suspects {
            let name = paths
                .get(&suspect.ino)
                .cloned()
                .unwrap_or_else(|| format!("inode {}", suspect.ino.0));
            r.problems.extend(suspect.report_in(st, &name, bs)?);
        }
        for (ino, last) in &versions.unsettled {
            if inodes.contains_key(ino) {
                continue;
            }
            if let Some((idx, _)) = st.meta.block_map(*ino, 0, *last)?.first() {
                r.problems.push(format!(
                    "inode {}: block record at offset {} for a missing inode",
                    ino.0,
                    idx * bs
                ));
            }
        }
        for (base, _) in st.meta.scan(&[keys::XATTR])? {
            let ino = keys::key_ino(&base);
            if !inodes.contains_key(&ino) {
                r.problems
                    .push(format!("xattr record for missing inode {}", ino.0));
            }
        }
        Ok(checked)
    }
}
