//! Directory operations on the live tree: lookup, create (files, directories, symlinks,
//! special files), link, unlink, rmdir, rename (plain, NOREPLACE, EXCHANGE), readdir.
//!
//! Permission checks are the kernel's (the mount uses default_permissions); this layer
//! keeps the tree consistent: link counts (a directory has 2 + its subdirectories),
//! parent pointers of directories, timestamps as ext4 sets them, setgid inheritance, and
//! the umask or the directory's default ACL (module `acl`).

use crate::acl::{self, Acl};
use crate::codec::{self, InodeRecord};
use crate::error::{Error, Result};
use crate::inode::check_name;
use crate::keys;
use crate::store::State;
use crate::types::{Attr, Ctx, DirEntry, FileKind, InodeNo, RenameFlags, Timestamp, LINK_MAX};
use crate::volume::Volume;

impl Volume {
    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<Attr> {
        if name.len() > crate::types::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let st = self.lock();
        self.check_alive(&st)?;
        st.load_dir(parent)?;
        let (ino, _) = st.lookup_entry(parent, name)?.ok_or(Error::NotFound)?;
        let rec = st.load_inode(ino)?;
        Ok(self.attr_of(ino, &rec))
    }

    pub fn getattr(&self, ino: InodeNo) -> Result<Attr> {
        let st = self.lock();
        let rec = st.load_inode(ino)?;
        Ok(self.attr_of(ino, &rec))
    }

    /// Creates a regular file, fifo, socket or device node. `mode` carries the type bits.
    pub fn mknod(
        &self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        rdev: u32,
        ctx: Ctx,
    ) -> Result<Attr> {
        let kind = match mode & libc::S_IFMT {
            0 => FileKind::File,
            _ => FileKind::from_mode(mode).ok_or(Error::InvalidArgument("unknown file type"))?,
        };
        if kind == FileKind::Dir || kind == FileKind::Symlink {
            return Err(Error::InvalidArgument("mknod of a directory or symlink"));
        }
        let rdev = match kind {
            FileKind::CharDevice | FileKind::BlockDevice => rdev,
            _ => 0,
        };
        self.create_node(parent, name, kind, mode, rdev, Vec::new(), ctx)
    }

    pub fn mkdir(&self, parent: InodeNo, name: &[u8], mode: u32, ctx: Ctx) -> Result<Attr> {
        self.create_node(parent, name, FileKind::Dir, mode, 0, Vec::new(), ctx)
    }

    pub fn symlink(&self, parent: InodeNo, name: &[u8], target: &[u8], ctx: Ctx) -> Result<Attr> {
        if target.is_empty() {
            return Err(Error::NotFound);
        }
        if target.len() >= libc::PATH_MAX as usize {
            return Err(Error::NameTooLong);
        }
        self.create_node(
            parent,
            name,
            FileKind::Symlink,
            0o777,
            0,
            target.to_vec(),
            ctx,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &self,
        parent: InodeNo,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        rdev: u32,
        target: Vec<u8>,
        ctx: Ctx,
    ) -> Result<Attr> {
        check_name(name)?;
        let mut st = self.writable()?;
        let mut prec = st.load_dir(parent)?;
        if prec.nlink == 0 {
            return Err(Error::NotFound); // directory was removed while we held it
        }
        if st.lookup_entry(parent, name)?.is_some() {
            return Err(Error::Exists);
        }
        if kind == FileKind::Dir && prec.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        let now = Timestamp::now();
        let mut perm = (mode & 0o7777) as u16;
        let mut gid = ctx.gid;
        if prec.perm & libc::S_ISGID as u16 != 0 {
            gid = prec.gid;
            if kind == FileKind::Dir {
                perm |= libc::S_ISGID as u16;
            }
        }
        let (perm, acls) = if kind == FileKind::Symlink {
            (perm, Vec::new())
        } else {
            inherited_acls(&st, parent, kind, perm, ctx.umask)?
        };
        let ino = st.alloc_ino()?;
        for (name, value) in acls {
            st.meta.put(&keys::xattr(ino, name), &value);
        }
        let rec = InodeRecord {
            kind,
            perm,
            uid: ctx.uid,
            gid,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            size: target.len() as u64,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            rdev,
            parent,
            target,
        };
        st.save_inode(ino, &rec);
        st.meta.put(
            &keys::dirent(parent, name),
            &codec::encode_dirent(ino, kind),
        );
        if kind == FileKind::Dir {
            prec.nlink += 1;
        }
        prec.mtime = now;
        prec.ctime = now;
        st.save_inode(parent, &prec);
        Ok(self.attr_of(ino, &rec))
    }

    pub fn link(&self, ino: InodeNo, newparent: InodeNo, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        let mut st = self.writable()?;
        let mut rec = st.load_inode(ino)?;
        if rec.kind == FileKind::Dir {
            return Err(Error::NotPermitted);
        }
        let mut prec = st.load_dir(newparent)?;
        if prec.nlink == 0 {
            return Err(Error::NotFound);
        }
        if st.lookup_entry(newparent, newname)?.is_some() {
            return Err(Error::Exists);
        }
        if rec.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        if rec.nlink == 0 {
            return Err(Error::NotFound);
        }
        let now = Timestamp::now();
        rec.nlink += 1;
        rec.ctime = now;
        st.save_inode(ino, &rec);
        st.meta.put(
            &keys::dirent(newparent, newname),
            &codec::encode_dirent(ino, rec.kind),
        );
        prec.mtime = now;
        prec.ctime = now;
        st.save_inode(newparent, &prec);
        Ok(self.attr_of(ino, &rec))
    }

    pub fn unlink(&self, parent: InodeNo, name: &[u8]) -> Result<()> {
        if name.len() > crate::types::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let mut st = self.writable()?;
        let mut prec = st.load_dir(parent)?;
        let (ino, kind) = st.lookup_entry(parent, name)?.ok_or(Error::NotFound)?;
        if kind == FileKind::Dir {
            return Err(Error::IsDir);
        }
        let now = Timestamp::now();
        st.meta.delete(&keys::dirent(parent, name))?;
        prec.mtime = now;
        prec.ctime = now;
        st.save_inode(parent, &prec);
        let mut rec = st.load_inode(ino)?;
        rec.ctime = now;
        self.drop_link(&mut st, ino, &mut rec)
    }

    pub fn rmdir(&self, parent: InodeNo, name: &[u8]) -> Result<()> {
        if name.len() > crate::types::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        if name == b"." {
            return Err(Error::InvalidArgument("rmdir of ."));
        }
        if name == b".." {
            return Err(Error::NotEmpty);
        }
        let mut st = self.writable()?;
        let mut prec = st.load_dir(parent)?;
        let (ino, kind) = st.lookup_entry(parent, name)?.ok_or(Error::NotFound)?;
        if kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        if has_entries(&st, ino)? {
            return Err(Error::NotEmpty);
        }
        let now = Timestamp::now();
        st.meta.delete(&keys::dirent(parent, name))?;
        prec.nlink = prec.nlink.saturating_sub(1);
        prec.mtime = now;
        prec.ctime = now;
        st.save_inode(parent, &prec);
        let mut rec = st.load_inode(ino)?;
        rec.ctime = now;
        self.drop_link(&mut st, ino, &mut rec)
    }

    pub fn rename(
        &self,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        if name.len() > crate::types::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        check_name(newname)?;
        if flags.exchange && flags.noreplace {
            return Err(Error::InvalidArgument(
                "RENAME_EXCHANGE with RENAME_NOREPLACE",
            ));
        }
        let mut st = self.writable()?;
        st.load_dir(parent)?;
        st.load_dir(newparent)?;
        let (src, src_kind) = st.lookup_entry(parent, name)?.ok_or(Error::NotFound)?;
        let dst = st.lookup_entry(newparent, newname)?;
        // Moving a directory under itself.
        if src_kind == FileKind::Dir && is_ancestor(&st, src, newparent)? {
            return Err(Error::InvalidArgument("rename of a directory into itself"));
        }
        if let Some((dst_ino, dst_kind)) = dst {
            if flags.noreplace {
                return Err(Error::Exists);
            }
            if flags.exchange {
                if dst_kind == FileKind::Dir && is_ancestor(&st, dst_ino, parent)? {
                    return Err(Error::InvalidArgument("rename of a directory into itself"));
                }
                return self.exchange(
                    &mut st,
                    parent,
                    name,
                    (src, src_kind),
                    newparent,
                    newname,
                    (dst_ino, dst_kind),
                );
            }
            if dst_ino == src {
                return Ok(()); // two links to one inode: POSIX says do nothing
            }
            match (src_kind == FileKind::Dir, dst_kind == FileKind::Dir) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) if has_entries(&st, dst_ino)? => return Err(Error::NotEmpty),
                _ => {}
            }
        } else if flags.exchange {
            return Err(Error::NotFound);
        }
        let now = Timestamp::now();
        // Replace the target, if any.
        if let Some((dst_ino, dst_kind)) = dst {
            let mut drec = st.load_inode(dst_ino)?;
            drec.ctime = now;
            if dst_kind == FileKind::Dir {
                let mut np = st.load_inode(newparent)?;
                np.nlink = np.nlink.saturating_sub(1);
                st.save_inode(newparent, &np);
            }
            self.drop_link(&mut st, dst_ino, &mut drec)?;
        }
        st.meta.delete(&keys::dirent(parent, name))?;
        st.meta.put(
            &keys::dirent(newparent, newname),
            &codec::encode_dirent(src, src_kind),
        );
        let mut srec = st.load_inode(src)?;
        srec.ctime = now;
        // For a directory the parent pointer is exact; for anything else it is a hint
        // (the directory of its latest name) that diff and history use to name paths.
        if src_kind != FileKind::Dir {
            srec.parent = newparent;
        }
        if src_kind == FileKind::Dir && parent != newparent {
            srec.parent = newparent;
            let mut op = st.load_inode(parent)?;
            op.nlink = op.nlink.saturating_sub(1);
            st.save_inode(parent, &op);
            let mut np = st.load_inode(newparent)?;
            np.nlink += 1;
            st.save_inode(newparent, &np);
        }
        st.save_inode(src, &srec);
        touch_dirs(&mut st, parent, newparent, now)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &self,
        st: &mut State,
        parent: InodeNo,
        name: &[u8],
        (a, a_kind): (InodeNo, FileKind),
        newparent: InodeNo,
        newname: &[u8],
        (b, b_kind): (InodeNo, FileKind),
    ) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let now = Timestamp::now();
        st.meta.put(
            &keys::dirent(parent, name),
            &codec::encode_dirent(b, b_kind),
        );
        st.meta.put(
            &keys::dirent(newparent, newname),
            &codec::encode_dirent(a, a_kind),
        );
        for (ino, kind, new_parent) in [(a, a_kind, newparent), (b, b_kind, parent)] {
            let mut r = st.load_inode(ino)?;
            r.ctime = now;
            let _ = kind;
            r.parent = new_parent;
            st.save_inode(ino, &r);
        }
        if parent != newparent {
            let dirs = |k: FileKind| (k == FileKind::Dir) as i64;
            let delta = dirs(b_kind) - dirs(a_kind); // change in subdirs of `parent`
            if delta != 0 {
                let mut p = st.load_inode(parent)?;
                p.nlink = (p.nlink as i64 + delta) as u32;
                st.save_inode(parent, &p);
                let mut np = st.load_inode(newparent)?;
                np.nlink = (np.nlink as i64 - delta) as u32;
                st.save_inode(newparent, &np);
            }
        }
        touch_dirs(st, parent, newparent, now)
    }

    pub fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        let st = self.lock();
        let rec = st.load_inode(ino)?;
        if rec.kind != FileKind::Symlink {
            return Err(Error::InvalidArgument("not a symlink"));
        }
        Ok(rec.target)
    }

    /// The entries of a directory (without `.` and `..`), in name order.
    pub fn readdir(&self, dir: InodeNo) -> Result<Vec<DirEntry>> {
        let st = self.lock();
        self.check_alive(&st)?;
        st.load_dir(dir)?;
        st.meta
            .scan(&keys::dir_prefix(dir))?
            .into_iter()
            .map(|(base, v)| {
                let (ino, kind) = codec::decode_dirent(&v)?;
                Ok(DirEntry {
                    name: keys::dirent_name(&base).to_vec(),
                    ino,
                    kind,
                })
            })
            .collect()
    }

    /// The parent of a directory (the root is its own parent), for `..`.
    pub fn parent_of(&self, dir: InodeNo) -> Result<InodeNo> {
        let st = self.lock();
        Ok(st.load_dir(dir)?.parent)
    }

    /// Counts an open handle on `ino` (an unlinked inode lives until its last
    /// reference goes).
    pub fn open_file(&self, ino: InodeNo) -> Result<Attr> {
        let mut st = self.lock();
        self.check_alive(&st)?;
        let rec = st.load_inode(ino)?;
        if !self.is_read_only() {
            let k = (st.cur(), ino);
            *st.open.entry(k).or_insert(0) += 1;
            *st.handles.entry(k).or_insert(0) += 1;
        } else {
            let g = st.cur();
            *st.frozen_open.entry(g).or_insert(0) += 1;
        }
        Ok(self.attr_of(ino, &rec))
    }

    pub fn release_file(&self, ino: InodeNo) -> Result<()> {
        if self.is_read_only() {
            let mut st = self.lock();
            let g = st.cur();
            if let Some(n) = st.frozen_open.get_mut(&g) {
                *n -= 1;
                if *n == 0 {
                    st.frozen_open.remove(&g);
                    if self.check_alive(&st).is_err() {
                        self.want_flatten();
                    }
                }
            }
            return Ok(());
        }
        {
            let mut st = self.lock();
            let k = (st.cur(), ino);
            if let Some(h) = st.handles.get_mut(&k) {
                *h -= 1;
                if *h == 0 {
                    st.handles.remove(&k);
                }
            }
        }
        self.drop_refs(ino, 1)
    }

    /// Counts `n` kernel references (FUSE lookups) on `ino`: the kernel may still send
    /// requests for an inode, e.g. write back cached pages of an unlinked file, until it
    /// forgets it, so an unlinked inode is kept until then.
    pub fn hold(&self, ino: InodeNo, n: u64) {
        if self.is_read_only() {
            return;
        }
        let mut st = self.lock();
        let k = (st.cur(), ino);
        *st.open.entry(k).or_insert(0) += n;
    }

    /// Drops `n` references (a release, or a FUSE forget); an unlinked inode whose last
    /// reference goes is destroyed.
    pub fn drop_refs(&self, ino: InodeNo, n: u64) -> Result<()> {
        if self.is_read_only() {
            return Ok(());
        }
        let mut st = self.lock();
        let k = (st.cur(), ino);
        let Some(count) = st.open.get_mut(&k) else {
            return Ok(());
        };
        *count = count.saturating_sub(n);
        if *count > 0 {
            return Ok(());
        }
        st.open.remove(&k);
        match st.load_inode(ino) {
            Ok(rec) if rec.nlink == 0 => self.destroy_inode(&mut st, ino),
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn has_entries(st: &State, dir: InodeNo) -> Result<bool> {
    Ok(!st.meta.scan(&keys::dir_prefix(dir))?.is_empty())
}

/// Whether `anc` is `node` or one of its ancestors (walking parent pointers of dirs).
fn is_ancestor(st: &State, anc: InodeNo, node: InodeNo) -> Result<bool> {
    let mut cur = node;
    for _ in 0..100_000 {
        if cur == anc {
            return Ok(true);
        }
        if cur == InodeNo::ROOT {
            return Ok(false);
        }
        cur = st.load_inode(cur)?.parent;
    }
    Err(Error::BadRecord {
        key: format!("inode {}", node.0),
        detail: "parent chain does not reach the root".into(),
    })
}

fn touch_dirs(st: &mut State, a: InodeNo, b: InodeNo, now: Timestamp) -> Result<()> {
    for d in [a, b] {
        let mut r = st.load_inode(d)?;
        r.mtime = now;
        r.ctime = now;
        st.save_inode(d, &r);
        if a == b {
            break;
        }
    }
    Ok(())
}

/// An extended attribute to store: its name and value.
type NamedValue = (&'static [u8], Vec<u8>);

/// The permissions and ACLs of a new inode in `parent` (posix_acl_create): without a
/// default ACL, `perm` less the umask and no ACL; with one, `perm` and that ACL masked by
/// each other, stored unless the bits say it all, and for a directory the default ACL
/// again as its own.
fn inherited_acls(
    st: &State,
    parent: InodeNo,
    kind: FileKind,
    perm: u16,
    umask: u32,
) -> Result<(u16, Vec<NamedValue>)> {
    let key = keys::xattr(parent, acl::DEFAULT);
    let Some(value) = st.meta.get(&key)? else {
        return Ok((perm & !(umask & 0o777) as u16, Vec::new()));
    };
    let mut access = Acl::decode(&value).map_err(|e| Error::BadRecord {
        key: format!("default ACL of inode {}", parent.0),
        detail: e.to_string(),
    })?;
    let perm = access.create_masq(perm);
    let mut acls = Vec::new();
    if !access.is_minimal() {
        acls.push((acl::ACCESS, access.encode()));
    }
    if kind == FileKind::Dir {
        acls.push((acl::DEFAULT, value));
    }
    Ok((perm, acls))
}
