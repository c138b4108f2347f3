//! Compaction of the metadata database: part of the sled-facing layer with `meta`.
//!
//! sled keeps its log file as large as the history made it: it gives space back only when
//! the segments at the end of the log fall empty. So after snapshots are deleted,
//! flattened and collected, `meta/` can stay several times larger than what it holds.
//! When gc finds it so (`wants_compaction`), it sets the state key `compact_meta`; the
//! next open of the store copies every tree into a fresh database and swaps it in, before
//! anything else uses it (`open`).
//!
//! Protocol, crash-safe at every step (`recover`, run at every open, finishes or undoes
//! an interrupted one):
//! 1. copy every tree of `meta/` into a new database in `meta.new/` (without the
//!    `compact_meta` key), flush it, fsync its files and directory;
//! 2. rename `meta/` to `meta.old/`;
//! 3. rename `meta.new/` to `meta/`, fsync the store directory;
//! 4. remove `meta.old/`.
//!
//! Recovery: `meta.new/` beside `meta/`: step 1 may be incomplete, remove `meta.new/`.
//! `meta.new/` and `meta.old/` without `meta/`: a crash between 2 and 3 (step 1 was
//! complete), rename `meta.new/` to `meta/`. `meta.old/` beside `meta/`: remove it.

use std::path::Path;

use crate::durable::{fsync_dir, TreeSyncer};
use crate::error::{Error, Result};
use crate::keys;
use crate::meta::META_DIR;

/// The state key asking the next open to compact.
pub const COMPACT_KEY: &str = "compact_meta";
const NEW_DIR: &str = "meta.new";
const OLD_DIR: &str = "meta.old";
/// Keys copied per batch.
const COPY_BATCH: usize = 10_000;

/// Whether `meta/` is so much larger than its content that a compaction pays: more than
/// twice the content plus 1 MiB (a fresh store's `meta/` takes about 0.5 MiB).
pub fn wants_compaction(disk_bytes: u64, content_bytes: u64) -> bool {
    disk_bytes > 2 * content_bytes + (1 << 20)
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
        _ => Ok(()),
    }
}

/// Finishes or undoes a compaction a crash interrupted.
pub fn recover(store: &Path) -> Result<()> {
    let (meta, new, old) = (
        store.join(META_DIR),
        store.join(NEW_DIR),
        store.join(OLD_DIR),
    );
    if new.exists() {
        if meta.exists() {
            tracing::warn!("removing an unfinished metadata compaction");
            remove_dir(&new)?;
        } else if old.exists() {
            tracing::warn!("finishing an interrupted metadata compaction");
            std::fs::rename(&new, &meta).map_err(|e| Error::io(&new, e))?;
            fsync_dir(store)?;
        }
    }
    if old.exists() && meta.exists() {
        remove_dir(&old)?;
    }
    Ok(())
}

/// Opens sled in `store/meta`, first compacting it if gc asked for that.
pub fn open(store: &Path, open_db: &dyn Fn(&Path) -> Result<sled::Db>) -> Result<sled::Db> {
    recover(store)?;
    let dir = store.join(META_DIR);
    let db = open_db(&dir)?;
    let wanted = db
        .open_tree(crate::meta::TREE)?
        .contains_key(keys::state(COMPACT_KEY))?;
    if !wanted {
        return Ok(db);
    }
    let before = crate::durable::dir_bytes(&dir);
    let new = store.join(NEW_DIR);
    remove_dir(&new)?;
    {
        let fresh = open_db(&new)?;
        for name in db.tree_names() {
            let (from, to) = (db.open_tree(&name)?, fresh.open_tree(&name)?);
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in from.iter() {
                let (k, v) = item?;
                batch.insert(k, v);
                n += 1;
                if n % COPY_BATCH == 0 {
                    to.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            to.apply_batch(batch)?;
        }
        fresh
            .open_tree(crate::meta::TREE)?
            .remove(keys::state(COMPACT_KEY))?;
        fresh.flush()?;
        TreeSyncer::default().sync(&new)?;
    }
    drop(db);
    let old = store.join(OLD_DIR);
    std::fs::rename(&dir, &old).map_err(|e| Error::io(&dir, e))?;
    std::fs::rename(&new, &dir).map_err(|e| Error::io(&new, e))?;
    fsync_dir(store)?;
    remove_dir(&old)?;
    let db = open_db(&dir)?;
    tracing::info!(
        before,
        after = crate::durable::dir_bytes(&dir),
        "metadata compacted"
    );
    Ok(db)
}

#[cfg(test)]
mod tests {
    use crate::tests::{new_store, reopen};
    use crate::*;

    /// Every tree's name and records (the compaction request left out).
    type Trees = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

    fn everything(s: &Store) -> Trees {
        let db = s.lock().meta.db();
        let mut names: Vec<_> = db.tree_names();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let t = db.open_tree(&n).unwrap();
                let kv = t
                    .iter()
                    .map(|i| i.unwrap())
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .filter(|(k, _)| *k != crate::keys::state(super::COMPACT_KEY))
                    .collect();
                (String::from_utf8_lossy(&n).into_owned(), kv)
            })
            .collect()
    }

    fn fill(s: &std::sync::Arc<Store>) {
        let v = s.main();
        for i in 0..40u32 {
            let name = format!("f{i}");
            let a = v
                .mknod(
                    InodeNo::ROOT,
                    name.as_bytes(),
                    libc::S_IFREG | 0o644,
                    0,
                    Ctx {
                        uid: 0,
                        gid: 0,
                        umask: 0,
                    },
                )
                .unwrap();
            v.write(a.ino, 0, &vec![i as u8; 70_000]).unwrap();
        }
        s.sync().unwrap();
    }

    #[test]
    fn a_requested_compaction_keeps_every_record_and_clears_the_request() {
        let (dir, s) = new_store();
        fill(&s);
        {
            let mut st = s.lock();
            st.meta
                .put_raw(crate::keys::state(super::COMPACT_KEY), Vec::new());
            s.commit_locked(&mut st).unwrap();
        }
        let before = everything(&s);
        let s = reopen(&dir, s);
        assert_eq!(everything(&s), before);
        assert!(s
            .lock()
            .meta
            .get_raw(&crate::keys::state(super::COMPACT_KEY))
            .unwrap()
            .is_none());
        assert!(!dir.path().join("store/meta.new").exists());
        assert!(!dir.path().join("store/meta.old").exists());
        assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
        s.close().unwrap();
    }

    #[test]
    fn an_interrupted_compaction_is_finished_or_undone_at_open() {
        let (dir, s) = new_store();
        fill(&s);
        let before = everything(&s);
        s.close().unwrap();
        drop(s);
        let store = dir.path().join("store");
        let copy = |from: &std::path::Path, to: &std::path::Path| {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
                }
            }
        };
        // Crash during step 1: a partial meta.new beside meta.
        std::fs::create_dir_all(store.join("meta.new")).unwrap();
        std::fs::write(store.join("meta.new/db"), b"half").unwrap();
        let s = Store::open(&store).unwrap();
        assert_eq!(everything(&s), before);
        assert!(!store.join("meta.new").exists());
        s.close().unwrap();
        drop(s);
        // Crash between steps 2 and 3: meta.old and a complete meta.new, no meta.
        copy(&store.join("meta"), &store.join("meta.new"));
        std::fs::rename(store.join("meta"), store.join("meta.old")).unwrap();
        let s = Store::open(&store).unwrap();
        assert_eq!(everything(&s), before);
        assert!(!store.join("meta.old").exists());
        assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
        s.close().unwrap();
    }
}
