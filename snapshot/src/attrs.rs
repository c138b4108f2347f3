//! Attribute operations: setattr (chmod, chown, truncate, utimens), extended attributes
//! (POSIX ACLs among them, kept coherent with the permission bits: module `acl`), and
//! statfs figures from the disk under the store.

use crate::acl::{self, Acl};
use crate::error::{Error, Result};
use crate::keys;
use crate::types::{
    Attr, FileKind, InodeNo, SetAttr, StatFs, TimeSet, Timestamp, NAME_MAX, XATTR_VALUE_MAX,
};

/// setxattr's XATTR_CREATE / XATTR_REPLACE, and for an access ACL whether the caller is
/// neither in the file's group nor privileged (the kernel's in_group_or_capable), so that
/// setting it clears set-group-ID as on ext4.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XattrFlags {
    pub create: bool,
    pub replace: bool,
    pub kill_sgid: bool,
}

impl crate::volume::Volume {
    pub fn setattr(&self, ino: InodeNo, set: &SetAttr) -> Result<Attr> {
        let mut st = self.writable()?;
        let mut rec = st.load_inode(ino)?;
        let now = Timestamp::now();
        let mut changed = false;
        if let Some(size) = set.size {
            match rec.kind {
                FileKind::File => {}
                FileKind::Dir => return Err(Error::IsDir),
                _ => return Err(Error::InvalidArgument("truncate of a special file")),
            }
            self.truncate_locked(&mut st, ino, &mut rec, size)?;
            rec.mtime = now;
            changed = true;
        }
        if let Some(mode) = set.mode {
            rec.perm = (mode & 0o7777) as u16;
            changed = true;
            if rec.kind != FileKind::Symlink {
                chmod_acl(&mut st, ino, rec.perm)?;
            }
        }
        if let Some(uid) = set.uid {
            rec.uid = uid;
            changed = true;
        }
        if let Some(gid) = set.gid {
            rec.gid = gid;
            changed = true;
        }
        let pick = |t: TimeSet| match t {
            TimeSet::Now => now,
            TimeSet::At(t) => t,
        };
        if let Some(t) = set.atime {
            rec.atime = pick(t);
            changed = true;
        }
        if let Some(t) = set.mtime {
            rec.mtime = pick(t);
            changed = true;
        }
        if changed {
            rec.ctime = now;
        }
        if let Some(t) = set.ctime {
            rec.ctime = t;
            changed = true;
        }
        if changed {
            st.save_inode(ino, &rec);
        }
        Ok(self.attr_of(ino, &rec))
    }

    pub fn setxattr(
        &self,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(Error::AttributeTooBig);
        }
        let mut st = self.writable()?;
        let mut rec = st.load_inode(ino)?;
        let key = keys::xattr(ino, name);
        let exists = st.meta.get(&key)?.is_some();
        if flags.create && exists {
            return Err(Error::Exists);
        }
        if flags.replace && !exists {
            return Err(Error::NoAttribute);
        }
        if name == acl::ACCESS || name == acl::DEFAULT {
            if rec.kind == FileKind::Symlink {
                return Err(Error::NotSupported("POSIX ACLs on a symbolic link"));
            }
            if name == acl::DEFAULT && rec.kind != FileKind::Dir {
                return Err(Error::NotSupported("a default ACL on a non-directory"));
            }
            let a = Acl::decode(value)?;
            if name == acl::ACCESS {
                // posix_acl_update_mode: the bits from the ACL; the ACL only if it says more.
                rec.perm = (rec.perm & !0o777) | a.mode_bits();
                if flags.kill_sgid {
                    rec.perm &= !(libc::S_ISGID as u16);
                }
                if a.is_minimal() {
                    if exists {
                        st.meta.delete(&key)?;
                    }
                } else {
                    st.meta.put(&key, value);
                }
            } else {
                st.meta.put(&key, value);
            }
        } else {
            st.meta.put(&key, value);
        }
        rec.ctime = Timestamp::now();
        st.save_inode(ino, &rec);
        Ok(())
    }

    pub fn getxattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        let st = self.lock();
        st.load_inode(ino)?;
        st.meta
            .get(&keys::xattr(ino, name))?
            .ok_or(Error::NoAttribute)
    }

    pub fn listxattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>> {
        let st = self.lock();
        st.load_inode(ino)?;
        Ok(st
            .meta
            .scan(&keys::xattr_prefix(ino))?
            .into_iter()
            .map(|(base, _)| keys::xattr_name(&base).to_vec())
            .collect())
    }

    pub fn removexattr(&self, ino: InodeNo, name: &[u8]) -> Result<()> {
        check_xattr_name(name)?;
        let mut st = self.writable()?;
        let mut rec = st.load_inode(ino)?;
        let key = keys::xattr(ino, name);
        if st.meta.get(&key)?.is_none() {
            return Err(Error::NoAttribute);
        }
        st.meta.delete(&key)?;
        rec.ctime = Timestamp::now();
        st.save_inode(ino, &rec);
        Ok(())
    }

    /// Figures of the disk under the store (what the mount can really hold).
    pub fn statfs(&self) -> Result<StatFs> {
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidArgument("store path has a NUL byte"))?;
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(Error::io(&self.path, std::io::Error::last_os_error()));
        }
        Ok(StatFs {
            blocks: s.f_blocks as u64,
            bfree: s.f_bfree as u64,
            bavail: s.f_bavail as u64,
            files: s.f_files as u64,
            ffree: s.f_ffree as u64,
            bsize: s.f_bsize as u32,
            frsize: s.f_frsize as u32,
            namelen: NAME_MAX as u32,
        })
    }
}

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("empty attribute name"));
    }
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    if name.contains(&0) {
        return Err(Error::InvalidArgument("attribute name with a NUL byte"));
    }
    Ok(())
}

/// chmod's rewrite of an inode's access ACL, if it has one (posix_acl_chmod).
fn chmod_acl(st: &mut crate::store::State, ino: InodeNo, perm: u16) -> Result<()> {
    let key = keys::xattr(ino, acl::ACCESS);
    let Some(value) = st.meta.get(&key)? else {
        return Ok(());
    };
    let mut a = Acl::decode(&value).map_err(|e| Error::BadRecord {
        key: format!("access ACL of inode {}", ino.0),
        detail: e.to_string(),
    })?;
    a.chmod(perm);
    st.meta.put(&key, &a.encode());
    Ok(())
}
