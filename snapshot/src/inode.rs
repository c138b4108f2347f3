//! Inode bookkeeping on the locked state: load/save records, allocate numbers, look up
//! entries, and destroy an inode with everything it owns.

use crate::codec::{self, InodeRecord};
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{State, Store};
use crate::types::{Attr, FileKind, InodeNo, NAME_MAX};

impl State {
    pub(crate) fn load_inode(&self, ino: InodeNo) -> Result<InodeRecord> {
        match self.meta.get(&keys::inode(ino))? {
            Some(v) => InodeRecord::decode(&v),
            None => Err(Error::NotFound),
        }
    }

    pub(crate) fn save_inode(&mut self, ino: InodeNo, rec: &InodeRecord) {
        self.meta.put(&keys::inode(ino), &rec.encode());
    }

    /// A fresh inode number. Numbers stay below `InodeNo::LIMIT` (fs numbers objects of
    /// snapshot views above it); running out is ENOSPC.
    pub(crate) fn alloc_ino(&mut self) -> Result<InodeNo> {
        if self.next_ino >= InodeNo::LIMIT {
            return Err(Error::NoSpace);
        }
        let ino = InodeNo(self.next_ino);
        self.next_ino += 1;
        Ok(ino)
    }

    pub(crate) fn lookup_entry(
        &self,
        dir: InodeNo,
        name: &[u8],
    ) -> Result<Option<(InodeNo, FileKind)>> {
        match self.meta.get(&keys::dirent(dir, name))? {
            Some(v) => Ok(Some(codec::decode_dirent(&v)?)),
            None => Ok(None),
        }
    }

    /// Loads `dir` and checks that it is a directory.
    pub(crate) fn load_dir(&self, dir: InodeNo) -> Result<InodeRecord> {
        let rec = self.load_inode(dir)?;
        if rec.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        Ok(rec)
    }

    pub(crate) fn is_open(&self, ino: InodeNo) -> bool {
        self.open.get(&(self.cur(), ino)).copied().unwrap_or(0) > 0
    }
}

impl Store {
    pub(crate) fn attr_of(&self, ino: InodeNo, rec: &InodeRecord) -> Attr {
        Attr {
            ino,
            kind: rec.kind,
            perm: rec.perm,
            uid: rec.uid,
            gid: rec.gid,
            nlink: rec.nlink,
            size: match rec.kind {
                FileKind::Dir => 4096,
                _ => rec.size,
            },
            blocks: match rec.kind {
                FileKind::Dir => 8,
                _ => rec.blocks,
            },
            atime: rec.atime,
            mtime: rec.mtime,
            ctime: rec.ctime,
            crtime: rec.crtime,
            rdev: rec.rdev,
            blksize: self.config.block_size,
        }
    }

    /// Removes an inode and everything it owns (xattrs, block map, buffered data,
    /// orphan marker). Blocks themselves stay in the packs until GC.
    pub(crate) fn destroy_inode(&self, st: &mut State, ino: InodeNo) -> Result<()> {
        if let Some(d) = st.dirty_remove(ino) {
            st.dirty_bytes -= d.blocks.len() * self.config.block_size as usize;
        }
        for prefix in [keys::block_prefix(ino), keys::xattr_prefix(ino)] {
            for (base, _) in st.meta.scan(&prefix)? {
                st.meta.delete(&base)?;
            }
        }
        st.meta.delete(&keys::orphan(ino))?;
        st.meta.delete(&keys::inode(ino))?;
        Ok(())
    }

    /// Drops one link to `ino` (already removed from its directory). When none remain it
    /// is destroyed at once, or, while open, marked orphan until its last release.
    pub(crate) fn drop_link(
        &self,
        st: &mut State,
        ino: InodeNo,
        rec: &mut InodeRecord,
    ) -> Result<()> {
        let dir = rec.kind == FileKind::Dir;
        rec.nlink = if dir { 0 } else { rec.nlink.saturating_sub(1) };
        if rec.nlink == 0 {
            if st.is_open(ino) {
                st.save_inode(ino, rec);
                st.meta.put(&keys::orphan(ino), &[]);
            } else {
                self.destroy_inode(st, ino)?;
            }
        } else {
            st.save_inode(ino, rec);
        }
        Ok(())
    }
}

pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::InvalidArgument("invalid file name"));
    }
    Ok(())
}
