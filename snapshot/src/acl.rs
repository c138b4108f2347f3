//! POSIX ACLs (docs/metadata.md, "POSIX ACLs"): the value of the `system.posix_acl_access`
//! and `system.posix_acl_default` extended attributes, and the rules that tie an access
//! ACL to the permission bits, as Linux's generic code (fs/posix_acl.c) keeps them for
//! ext4:
//!
//! - Setting an access ACL sets the permission bits from it (the group bits from the
//!   mask entry when there is one); an ACL that says no more than the bits is not stored.
//! - chmod rewrites the owner, other and mask (or, without a mask, owning group) entries.
//! - A new inode in a directory with a default ACL gets that ACL, masked by the mode it
//!   was created with, instead of the umask; a new directory also inherits it as its own
//!   default ACL. Without a default ACL the umask applies.
//!
//! The kernel enforces ACLs (FUSE_POSIX_ACL with default_permissions) from the values this
//! layer stores; it has already checked a value before it sets one, and this layer checks
//! again (`Acl::decode`) so that nothing malformed is ever stored.
//!
//! The value's layout (include/uapi/linux/posix_acl_xattr.h): a little-endian u32 version
//! (2), then entries of 8 bytes: tag u16, permissions u16, id u32 (a uid or gid for named
//! entries, u32::MAX for the others), sorted by tag (named ones by id).

use crate::error::{Error, Result};

/// The extended attribute of an inode's access ACL.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// The extended attribute of a directory's default ACL.
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const HEADER: usize = 4;
const ENTRY: usize = 8;
/// The id of entries that name no user or group.
const NO_ID: u32 = u32::MAX;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// rwx
const RWX: u16 = 0o7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A decoded, valid ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    /// Decodes and checks an ACL value (posix_acl_from_xattr and posix_acl_valid): one
    /// owner, owning group and other entry, a mask if any user or group is named, entries
    /// in order and no unnamed one twice, permissions within rwx.
    pub(crate) fn decode(value: &[u8]) -> Result<Acl> {
        let bad = |why| Err(Error::InvalidArgument(why));
        if value.len() < HEADER || !(value.len() - HEADER).is_multiple_of(ENTRY) {
            return bad("POSIX ACL value of a wrong length");
        }
        if u32::from_le_bytes(value[..HEADER].try_into().unwrap()) != VERSION {
            return bad("POSIX ACL value of an unknown version");
        }
        let entries: Vec<Entry> = value[HEADER..]
            .chunks_exact(ENTRY)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let mut seen = 0u16;
        let mut named = false;
        let mut last = 0u16;
        for e in &entries {
            if e.perm & !RWX != 0 {
                return bad("POSIX ACL entry with permissions beyond rwx");
            }
            match e.tag {
                USER | GROUP => named = true,
                USER_OBJ | GROUP_OBJ | MASK | OTHER => {
                    if seen & e.tag != 0 {
                        return bad("POSIX ACL with a repeated entry");
                    }
                    seen |= e.tag;
                }
                _ => return bad("POSIX ACL entry of an unknown type"),
            }
            // The kernel's order (posix_acl_valid): by type; named entries by id.
            if e.tag < last {
                return bad("POSIX ACL entries out of order");
            }
            last = e.tag;
        }
        if seen & (USER_OBJ | GROUP_OBJ | OTHER) != USER_OBJ | GROUP_OBJ | OTHER {
            return bad("POSIX ACL without an owner, owning group or other entry");
        }
        if named && seen & MASK == 0 {
            return bad("POSIX ACL naming users or groups without a mask entry");
        }
        Ok(Acl { entries })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + ENTRY * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            let id = if matches!(e.tag, USER | GROUP) {
                e.id
            } else {
                NO_ID
            };
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// The rwx bits the ACL gives owner, group class and others (posix_acl_equiv_mode).
    pub(crate) fn mode_bits(&self) -> u16 {
        let mut mode = 0;
        for e in &self.entries {
            match e.tag {
                USER_OBJ => mode |= e.perm << 6,
                GROUP_OBJ if !self.has(MASK) => mode |= e.perm << 3,
                MASK => mode |= e.perm << 3,
                OTHER => mode |= e.perm,
                _ => {}
            }
        }
        mode
    }

    /// Whether the permission bits say all the ACL says (it need not be stored).
    pub(crate) fn is_minimal(&self) -> bool {
        self.entries
            .iter()
            .all(|e| matches!(e.tag, USER_OBJ | GROUP_OBJ | OTHER))
    }

    /// chmod's rewrite (posix_acl_chmod_masq): owner, other, and the mask or, without
    /// one, the owning group take the new bits of `perm`.
    pub(crate) fn chmod(&mut self, perm: u16) {
        let masked = self.has(MASK);
        for e in &mut self.entries {
            match e.tag {
                USER_OBJ => e.perm = (perm >> 6) & RWX,
                OTHER => e.perm = perm & RWX,
                MASK => e.perm = (perm >> 3) & RWX,
                GROUP_OBJ if !masked => e.perm = (perm >> 3) & RWX,
                _ => {}
            }
        }
    }

    /// A new inode's access ACL from its directory's default ACL (posix_acl_create_masq):
    /// the ACL's owner, other and mask (or owning group) entries are limited to the mode
    /// the inode is created with, and the mode's bits to the ACL's. Returns the new
    /// permission bits (set-ID and sticky bits of `perm` kept).
    pub(crate) fn create_masq(&mut self, perm: u16) -> u16 {
        let mut mode = perm;
        let masked = self.has(MASK);
        for e in &mut self.entries {
            match e.tag {
                USER_OBJ => {
                    e.perm &= (mode >> 6) & RWX;
                    mode &= (e.perm << 6) | !0o700;
                }
                OTHER => {
                    e.perm &= mode & RWX;
                    mode &= e.perm | !0o007;
                }
                MASK => {
                    e.perm &= (mode >> 3) & RWX;
                    mode &= (e.perm << 3) | !0o070;
                }
                GROUP_OBJ if !masked => {
                    e.perm &= (mode >> 3) & RWX;
                    mode &= (e.perm << 3) | !0o070;
                }
                _ => {}
            }
        }
        mode
    }

    fn has(&self, tag: u16) -> bool {
        self.entries.iter().any(|e| e.tag == tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        Acl {
            entries: entries
                .iter()
                .map(|&(tag, perm, id)| Entry { tag, perm, id })
                .collect(),
        }
    }

    /// `user::rw-,user:1000:r-x,group::r--,mask::r-x,other::---`
    fn named() -> Acl {
        acl(&[
            (USER_OBJ, 6, NO_ID),
            (USER, 5, 1000),
            (GROUP_OBJ, 4, NO_ID),
            (MASK, 5, NO_ID),
            (OTHER, 0, NO_ID),
        ])
    }

    #[test]
    fn values_round_trip_and_bad_ones_are_refused() {
        let a = named();
        assert_eq!(Acl::decode(&a.encode()).unwrap(), a);
        let good = a.encode();
        assert!(Acl::decode(&good[..good.len() - 1]).is_err());
        let mut v1 = good.clone();
        v1[0] = 1;
        assert!(Acl::decode(&v1).is_err());
        // No mask while a user is named.
        let no_mask = acl(&[
            (USER_OBJ, 6, NO_ID),
            (USER, 5, 1000),
            (GROUP_OBJ, 4, NO_ID),
            (OTHER, 0, NO_ID),
        ]);
        assert!(Acl::decode(&no_mask.encode()).is_err());
        // Out of order, repeated, missing other, bad permissions.
        let swapped = acl(&[
            (GROUP_OBJ, 4, NO_ID),
            (USER_OBJ, 6, NO_ID),
            (OTHER, 0, NO_ID),
        ]);
        assert!(Acl::decode(&swapped.encode()).is_err());
        let twice = acl(&[
            (USER_OBJ, 6, NO_ID),
            (GROUP_OBJ, 4, NO_ID),
            (GROUP_OBJ, 4, NO_ID),
            (OTHER, 0, NO_ID),
        ]);
        assert!(Acl::decode(&twice.encode()).is_err());
        assert!(
            Acl::decode(&acl(&[(USER_OBJ, 6, NO_ID), (GROUP_OBJ, 4, NO_ID)]).encode()).is_err()
        );
        let wide = acl(&[
            (USER_OBJ, 8, NO_ID),
            (GROUP_OBJ, 4, NO_ID),
            (OTHER, 0, NO_ID),
        ]);
        assert!(Acl::decode(&wide.encode()).is_err());
    }

    #[test]
    fn mode_bits_take_the_group_class_from_the_mask() {
        assert_eq!(named().mode_bits(), 0o650);
        assert!(!named().is_minimal());
        let minimal = acl(&[
            (USER_OBJ, 7, NO_ID),
            (GROUP_OBJ, 5, NO_ID),
            (OTHER, 1, NO_ID),
        ]);
        assert_eq!(minimal.mode_bits(), 0o751);
        assert!(minimal.is_minimal());
    }

    #[test]
    fn chmod_rewrites_owner_mask_and_other() {
        let mut a = named();
        a.chmod(0o4711);
        assert_eq!(a.mode_bits(), 0o711);
        // The named user and the owning group keep their entries; the mask limits them.
        assert!(a.entries.contains(&Entry {
            tag: USER,
            perm: 5,
            id: 1000
        }));
        assert!(a.entries.contains(&Entry {
            tag: GROUP_OBJ,
            perm: 4,
            id: NO_ID
        }));
        let mut minimal = acl(&[
            (USER_OBJ, 7, NO_ID),
            (GROUP_OBJ, 5, NO_ID),
            (OTHER, 1, NO_ID),
        ]);
        minimal.chmod(0o640);
        assert_eq!(minimal.mode_bits(), 0o640);
    }

    #[test]
    fn creation_masks_the_default_acl_with_the_mode() {
        // mkdir -m 0750 under `default:user::rwx,default:user:1000:rwx,default:group::r-x,
        // default:mask::rwx,default:other::r-x`.
        let mut a = acl(&[
            (USER_OBJ, 7, NO_ID),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, NO_ID),
            (MASK, 7, NO_ID),
            (OTHER, 5, NO_ID),
        ]);
        assert_eq!(a.create_masq(0o2750), 0o2750);
        assert_eq!(a.mode_bits(), 0o750);
        // A file created 0666 under a default ACL that gives others nothing.
        let mut b = acl(&[
            (USER_OBJ, 7, NO_ID),
            (GROUP_OBJ, 5, NO_ID),
            (OTHER, 0, NO_ID),
        ]);
        assert_eq!(b.create_masq(0o666), 0o640);
        assert!(b.is_minimal());
    }
}
