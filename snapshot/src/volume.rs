//! `Volume`: one tree of the store that POSIX operations act on — the writable head of a
//! branch, or a frozen snapshot (read-only). Every POSIX operation is a method of
//! `Volume`; each takes the store's state lock through `Volume::lock`, which points the
//! metadata reads (and, for a branch, the writes) at this volume's generation.
//!
//! A branch volume follows its branch: after a snapshot or a rollback the same volume
//! reads and writes the branch's new live generation. A snapshot volume is fixed.

use std::sync::{Arc, MutexGuard};

use crate::error::{Error, Result};
use crate::generation::View;
use crate::store::{State, Store};
use crate::types::GenerationId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// The live head of the named branch.
    Branch(String),
    /// A frozen generation (read-only).
    Snapshot(GenerationId),
}

#[derive(Clone)]
pub struct Volume {
    store: Arc<Store>,
    kind: VolumeKind,
    /// The fixed view of a snapshot volume.
    frozen: Option<View>,
}

impl std::ops::Deref for Volume {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Volume {
    pub(crate) fn new(store: Arc<Store>, kind: VolumeKind, frozen: Option<View>) -> Volume {
        Volume {
            store,
            kind,
            frozen,
        }
    }

    pub fn kind(&self) -> &VolumeKind {
        &self.kind
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn is_read_only(&self) -> bool {
        self.frozen.is_some()
    }

    /// The state lock with reads pointed at this volume. A branch that no longer exists
    /// (deleted while this volume was held) reads as empty: every lookup fails.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = self.store.lock();
        self.enter(&mut st);
        st
    }

    /// For a snapshot volume whose snapshot was deleted: `Stale` (flattening may be
    /// folding its generation away; only files opened before the deletion read on).
    pub(crate) fn check_alive(&self, st: &State) -> Result<()> {
        match &self.frozen {
            Some(v)
                if st
                    .gens
                    .all
                    .get(&v.gen)
                    .is_none_or(|r| r.state != crate::generation::STATE_FROZEN) =>
            {
                Err(Error::Stale)
            }
            _ => Ok(()),
        }
    }

    /// Points `st` at this volume.
    pub(crate) fn enter(&self, st: &mut State) {
        match (&self.frozen, &self.kind) {
            (Some(v), _) => st.meta.set_view(v),
            (None, VolumeKind::Branch(b)) => {
                let v = st.heads.get(b.as_str()).cloned().unwrap_or_else(|| View {
                    gen: GenerationId(0),
                    ancestors: Default::default(),
                });
                st.meta.set_view(&v);
            }
            (None, VolumeKind::Snapshot(_)) => unreachable!("snapshot volumes carry a view"),
        }
    }

    /// The state lock for a change: refused on a snapshot (EROFS), on a deleted branch,
    /// and after a failed commit.
    pub(crate) fn writable(&self) -> Result<MutexGuard<'_, State>> {
        if self.frozen.is_some() {
            return Err(Error::ReadOnly);
        }
        let st = self.lock();
        if let Some(p) = &st.poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        if st.meta.view().gen.0 == 0 {
            return Err(Error::NotFound);
        }
        Ok(st)
    }

    /// The generation this volume reads now.
    pub fn generation(&self) -> GenerationId {
        let st = self.lock();
        st.meta.view().gen
    }
}
