//! Group commit of the intent log, the checkpoint's part of a commit, and replay.
//!
//! An fsync (`Store::sync_log`) needs a record written after its changes to be durable.
//! Records are collected under the state lock and numbered (`State::log_collected`); a
//! caller's target is the number of the record that will hold its changes (the next one
//! if some change is not collected yet, else the last). One caller at a time is the
//! *leader*: it collects everything not yet logged, writes the record and fdatasyncs
//! it, with the state lock released, while later callers wait and are mostly satisfied
//! by its record (their changes were in it) — concurrent fsyncs share one flush.
//!
//! Lock order: the state lock before `Store::log` (`LogControl`). A leader is chosen with
//! both held, so a commit (which holds the state lock and waits for the leader to
//! finish) never waits for a leader that waits for the state lock.

use std::sync::MutexGuard;

use super::record::{encode_entry, Entry};
use super::{Appended, IntentLog};
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{DirtyBlock, State, Store};

/// The store's state key holding the current epoch of the intent log.
pub(crate) const EPOCH_KEY: &str = "log_epoch";
/// An fsync that would log more buffered data than this commits instead: bulk data
/// goes to the packs once (a commit's fsyncs cost little beside it), and the log stays
/// small.
pub(crate) const LOG_DATA_MAX: u64 = 1 << 20;

/// Who writes the log, and how far it is durable. The log file itself is in
/// `Store::log_file`, used only by the leader.
#[derive(Default)]
pub(crate) struct LogControl {
    /// A record (or a commit) is being written.
    pub leader: bool,
    /// Records up to this number are durable (a commit makes every one durable).
    pub durable: u64,
}

impl State {
    /// Whether some change is not in the intent log (nor committed) yet.
    pub(crate) fn has_unlogged(&self) -> bool {
        self.data_unlogged || self.meta.has_unlogged()
    }

    /// The payload of the next record: every change not yet logged; from now on it
    /// counts as logged.
    fn collect_log_payload(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_entry(
            &Entry::Counters {
                next_ino: self.next_ino,
                next_gen: self.next_gen,
            },
            &mut out,
        );
        for (key, value) in self.meta.take_unlogged() {
            let e = match value {
                Some(value) => Entry::Put { key, value },
                None => Entry::Delete { key },
            };
            encode_entry(&e, &mut out);
        }
        // Drops before data: a block dropped and then written again since the last
        // record comes back as what was written after the drop.
        for (gen, ino, block) in self.dirty_dropped.drain(..) {
            encode_entry(&Entry::Drop { gen, ino, block }, &mut out);
        }
        for ((gen, ino), d) in self.dirty.iter_mut() {
            for (idx, b) in d.blocks.iter_mut() {
                if let Some((a, z)) = b.unlogged.take() {
                    encode_entry(
                        &Entry::Data {
                            gen: *gen,
                            ino: *ino,
                            block: *idx,
                            offset: a,
                            bytes: b.data[a as usize..z as usize].to_vec(),
                        },
                        &mut out,
                    );
                }
            }
        }
        self.data_unlogged = false;
        self.unlogged_bytes = 0;
        out
    }
}

impl Store {
    fn log_control(&self) -> MutexGuard<'_, LogControl> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_file(&self) -> MutexGuard<'_, Option<IntentLog>> {
        self.log_file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// fsync, fdatasync, fsync of a directory: returns once every change made before the
    /// call is durable, through the intent log (one fdatasync shared by the concurrent
    /// callers), or a commit when the log is full.
    pub(crate) fn sync_log(&self) -> Result<()> {
        loop {
            let mut st = self.lock();
            if let Some(p) = &st.poisoned {
                return Err(Error::Poisoned(p.clone()));
            }
            let target = st.log_collected + u64::from(st.has_unlogged());
            let mut lc = self.log_control();
            if lc.durable >= target {
                return Ok(());
            }
            if lc.leader {
                drop(st);
                let lc = self
                    .log_cv
                    .wait_while(lc, |lc| lc.leader)
                    .unwrap_or_else(|p| p.into_inner());
                drop(lc);
                continue;
            }
            if st.unlogged_bytes > LOG_DATA_MAX || st.log_needs_commit {
                drop(lc);
                return self.commit_locked(&mut st);
            }
            lc.leader = true;
            drop(lc);
            let payload = st.collect_log_payload();
            st.log_collected += 1;
            let seq = st.log_collected;
            drop(st);
            let appended = {
                // Written with no lock but the file's (only the leader takes it): later
                // changes and fsyncs go on meanwhile.
                let appended = match self.log_file().as_mut() {
                    Some(log) => log.append(&payload),
                    None => Ok(Appended::Full), // no log: a commit does it
                };
                let mut lc = self.log_control();
                lc.leader = false;
                if matches!(appended, Ok(Appended::Durable)) {
                    lc.durable = lc.durable.max(seq);
                }
                self.log_cv.notify_all();
                appended
            };
            match appended {
                Ok(Appended::Durable) => {}
                Ok(Appended::Full) => {
                    // The collected changes are still in memory: a commit takes them.
                    let mut st = self.lock();
                    self.commit_locked(&mut st)?;
                }
                Err(e) if e.is_disk_full() => {
                    // What the record held is in memory only: commits take over until
                    // one succeeds (it writes everything; the log's next epoch forgets
                    // what this record may have left).
                    let mut st = self.lock();
                    st.log_needs_commit = true;
                    return self.commit_locked(&mut st);
                }
                Err(e) => {
                    // The log's pages may be lost even if a later fsync succeeds: refuse
                    // writes, and report this fsync's data as not durable.
                    self.poison(format!("intent log: {e}"));
                    return Err(e);
                }
            }
        }
    }

    /// Becomes the log's writer for a commit (waits for a record being written); the
    /// caller holds the state lock and calls `end_commit_lead` after.
    pub(crate) fn lead_log_for_commit(&self) {
        let lc = self.log_control();
        let mut lc = self
            .log_cv
            .wait_while(lc, |lc| lc.leader)
            .unwrap_or_else(|p| p.into_inner());
        lc.leader = true;
    }

    /// The epoch the next commit writes (the current one plus one).
    pub(crate) fn next_log_epoch(&self) -> u64 {
        self.log_file().as_ref().map_or(0, |l| l.epoch()) + 1
    }

    /// After a commit (successful or not) that `lead_log_for_commit` began: on success
    /// the log starts again under `epoch` and every record so far counts as durable.
    pub(crate) fn end_commit_lead(&self, st: &mut State, committed: Option<u64>) {
        if let (Some(epoch), Some(log)) = (committed, self.log_file().as_mut()) {
            log.reset(epoch);
        }
        let mut lc = self.log_control();
        if committed.is_some() {
            st.log_collected += 1;
            st.data_unlogged = false;
            st.unlogged_bytes = 0;
            st.log_needs_commit = false;
            st.dirty_dropped.clear();
            lc.durable = st.log_collected;
        }
        lc.leader = false;
        self.log_cv.notify_all();
    }

    /// Whether the log is past `fraction` of its size (a commit should empty it).
    pub(crate) fn log_filling(&self, fraction: f64) -> bool {
        self.log_file()
            .as_ref()
            .is_some_and(|l| l.used() as f64 > l.max_len() as f64 * fraction)
    }

    /// Applies the records of the log (read at open) to the state; returns how many
    /// entries it applied. The caller commits afterwards.
    pub(crate) fn replay_log(&self, st: &mut State, records: Vec<Vec<Entry>>) -> Result<usize> {
        let mut applied = 0;
        let bs = self.config.block_size as usize;
        for entries in records {
            for e in entries {
                applied += 1;
                match e {
                    Entry::Counters { next_ino, next_gen } => {
                        st.next_ino = st.next_ino.max(next_ino);
                        st.next_gen = st.next_gen.max(next_gen);
                    }
                    Entry::Put { key, value } => st.meta.replay_raw(key, Some(value)),
                    Entry::Delete { key } => st.meta.replay_raw(key, None),
                    Entry::Drop { gen, ino, block } => {
                        let removed = st
                            .dirty
                            .get_mut(&(gen, ino))
                            .and_then(|d| d.blocks.remove(&block));
                        if removed.is_some() {
                            st.dirty_bytes -= bs;
                        }
                    }
                    Entry::Data {
                        gen,
                        ino,
                        block,
                        offset,
                        bytes,
                    } => {
                        let end = offset as usize + bytes.len();
                        if end > bs {
                            return Err(Error::BadRecord {
                                key: format!("intent log data of inode {} block {block}", ino.0),
                                detail: format!("bytes {offset}..{end} past the block size {bs}"),
                            });
                        }
                        let view = st.gens.view(gen)?;
                        st.meta.set_view(&view);
                        if !st
                            .dirty
                            .get(&(gen, ino))
                            .is_some_and(|d| d.blocks.contains_key(&block))
                        {
                            let mut buf = vec![0u8; bs].into_boxed_slice();
                            if let Some(v) = st.meta.get(&keys::block(ino, block))? {
                                let id = crate::codec::decode_block(&v)?;
                                let data = self.blocks.get(&id)?;
                                let n = data.len().min(bs);
                                buf[..n].copy_from_slice(&data[..n]);
                            }
                            st.dirty.entry((gen, ino)).or_default().blocks.insert(
                                block,
                                DirtyBlock {
                                    data: buf,
                                    unlogged: None,
                                },
                            );
                            st.dirty_bytes += bs;
                        }
                        let b = st
                            .dirty
                            .get_mut(&(gen, ino))
                            .and_then(|d| d.blocks.get_mut(&block))
                            .expect("just made");
                        b.data[offset as usize..end].copy_from_slice(&bytes);
                    }
                }
            }
        }
        Ok(applied)
    }
}
