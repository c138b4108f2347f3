//! The locks of the blockstore, taken from one place so a model checker (loom,
//! shuttle) can replace them.
//!
//! Poisoning is ignored on purpose: no critical section in this crate leaves its data
//! half-updated across a call that can panic, so the data behind a poisoned lock is
//! still consistent, and refusing every later call would turn one bug into an outage.

pub(crate) use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use std::sync::PoisonError;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
