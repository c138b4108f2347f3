//! FUSE inode numbers: how the objects a mount serves are numbered for the kernel.
//!
//! Owns the one mapping between a FUSE inode number and the place it names, so every
//! handler agrees on it and the numbers are stable across remounts (they are computed,
//! never allocated):
//!
//! - an object of the mounted volume (the branch's live tree, or the snapshot of a
//!   read-only snapshot mount): its model inode number unchanged. The model hands out
//!   numbers below `SNAPDIR` (`strata_snapshot::InodeNo::LIMIT`, 2^40 - 1).
//! - `.snapshots` of a branch mount: `SNAPDIR` = 2^40 - 1, a number the model never
//!   hands out.
//! - the object with model inode `i` inside snapshot generation `g`, seen through
//!   `.snapshots/NAME/` of a branch mount: `(g << 40) | i`. Inode numbers are the same
//!   in a snapshot as in the tree it was taken from, so the generation keeps them apart;
//!   generations up to 2^24 - 1 can be numbered (a later one is refused with EOVERFLOW).
//!
//! A read-only snapshot mount has no `.snapshots` and numbers its objects as they are.

use strata_snapshot::{GenerationId, InodeNo as Ino};

/// Bits of a FUSE inode number that hold the model inode number.
const GEN_SHIFT: u32 = 40;
const INO_MASK: u64 = (1 << GEN_SHIFT) - 1;

/// The FUSE inode number of `.snapshots`.
pub const SNAPDIR: u64 = INO_MASK;

/// The highest generation whose objects can be numbered inside `.snapshots`.
pub const MAX_GEN: u64 = (1 << (64 - GEN_SHIFT)) - 1;

// The model never hands out `SNAPDIR` or anything above it.
const _: () = assert!(SNAPDIR == Ino::LIMIT);

/// What a FUSE inode number names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// An object of the mounted volume.
    Own(Ino),
    /// `.snapshots` (branch mounts only).
    SnapDir,
    /// An object of a snapshot seen through `.snapshots` (branch mounts only).
    Snap(GenerationId, Ino),
}

/// The numbering of one mount.
#[derive(Clone, Copy, Debug)]
pub struct InoMap {
    /// Whether the mount has `.snapshots` (a branch mount).
    pub snapdir: bool,
}

impl InoMap {
    /// The place a FUSE inode number names; `None` for a number this mount never hands
    /// out.
    pub fn place(self, fuse: u64) -> Option<Place> {
        if fuse < SNAPDIR {
            return (fuse != 0).then_some(Place::Own(Ino(fuse)));
        }
        if !self.snapdir {
            return None;
        }
        if fuse == SNAPDIR {
            return Some(Place::SnapDir);
        }
        let (g, i) = (fuse >> GEN_SHIFT, fuse & INO_MASK);
        (i != 0 && i != SNAPDIR).then_some(Place::Snap(GenerationId(g), Ino(i)))
    }
}

/// The FUSE number of model inode `i` of the mounted volume.
pub fn own(i: Ino) -> u64 {
    debug_assert!(i.0 < SNAPDIR, "model inode {} out of range", i.0);
    i.0
}

/// The FUSE number of model inode `i` inside snapshot generation `g`, if it can be
/// numbered.
pub fn snap(g: GenerationId, i: Ino) -> Option<u64> {
    (g.0 >= 1 && g.0 <= MAX_GEN && i.0 != 0 && i.0 < SNAPDIR).then_some((g.0 << GEN_SHIFT) | i.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_never_collide() {
        let branch = InoMap { snapdir: true };
        let snapshot_mount = InoMap { snapdir: false };
        assert_eq!(branch.place(1), Some(Place::Own(Ino::ROOT)));
        assert_eq!(branch.place(0), None);
        assert_eq!(branch.place(SNAPDIR), Some(Place::SnapDir));
        assert_eq!(snapshot_mount.place(SNAPDIR), None);
        let n = snap(GenerationId(7), Ino(1)).unwrap();
        assert_eq!(n, (7 << 40) | 1);
        assert!(n > SNAPDIR);
        assert_eq!(branch.place(n), Some(Place::Snap(GenerationId(7), Ino(1))));
        assert_eq!(snapshot_mount.place(n), None);
        let last = snap(GenerationId(MAX_GEN), Ino(SNAPDIR - 1)).unwrap();
        assert_eq!(last, u64::MAX - 1);
        assert_eq!(
            branch.place(last),
            Some(Place::Snap(GenerationId(MAX_GEN), Ino(SNAPDIR - 1)))
        );
        assert_eq!(branch.place(u64::MAX), None);
        assert_eq!(snap(GenerationId(MAX_GEN + 1), Ino(1)), None);
        assert_eq!(snap(GenerationId(0), Ino(1)), None);
        assert_eq!(snap(GenerationId(1), Ino(SNAPDIR)), None);
        assert_eq!(own(Ino(SNAPDIR - 1)), SNAPDIR - 1);
    }
}
