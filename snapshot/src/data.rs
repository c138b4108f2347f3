//! File contents: the block map and buffered writes.
//!
//! A file is a sparse array of blocks of `block_size` bytes: block `i` covers bytes
//! `[i*bs, (i+1)*bs)`. The block map (`B` records) names each block's content id; a
//! block without a record is a hole (zeros). Writes go to whole-block buffers in memory
//! (`State::dirty`) and reach the packs at the next commit (`seal_dirty`), where all-zero
//! blocks become holes and the last block is trimmed at end of file.
//!
//! Invariants:
//! - Bytes of a file past its size read as zeros: truncation zeroes the tail of the last
//!   block (buffered or committed) and drops whole blocks past the end.
//! - `blocks` (st_blocks) counts `bs/512` per block that is buffered or has a map record.
//! - A map record only ever names a block whose pack data is durable (records are written
//!   by the commit after the pack fsync, or copied from existing committed records).

use std::collections::HashMap;

use strata_blockstore::{is_zero, BlockId};

use crate::codec::{self, InodeRecord};
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{State, Store};
use crate::types::{
    FallocateMode, FileKind, GenerationId, InodeNo, SeekWhence, Timestamp, FILE_SIZE_MAX,
};
use crate::volume::Volume;

/// Free space kept back on the disk under the store, so metadata commits never meet a
/// full disk: writers get ENOSPC first.
const SPACE_RESERVE: u64 = 32 << 20;
/// Blocks hashed and compressed per batch at commit.
const SEAL_BATCH: usize = 64;

impl State {
    fn committed_block(&self, ino: InodeNo, idx: u64) -> Result<Option<BlockId>> {
        match self.meta.get(&keys::block(ino, idx))? {
            Some(v) => Ok(Some(codec::decode_block(&v)?)),
            None => Ok(None),
        }
    }

    fn is_allocated(&self, ino: InodeNo, idx: u64) -> Result<bool> {
        if self
            .dirty_of(ino)
            .is_some_and(|d| d.blocks.contains_key(&idx))
        {
            return Ok(true);
        }
        Ok(self.committed_block(ino, idx)?.is_some())
    }

    /// Allocated block indexes of `ino` in `[from, to)`, sorted.
    fn allocated_in(&self, ino: InodeNo, from: u64, to: u64) -> Result<Vec<u64>> {
        let lo = keys::block(ino, from);
        let hi = keys::block(ino, to);
        let mut v: Vec<u64> = self
            .meta
            .scan_range(&lo, Some(&hi))?
            .iter()
            .map(|(base, _)| keys::block_index(base))
            .collect();
        if let Some(d) = self.dirty_of(ino) {
            v.extend(d.blocks.range(from..to).map(|(i, _)| *i));
        }
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }
}

fn units(bs: u32) -> u64 {
    bs as u64 / 512
}

impl Store {
    fn bs(&self) -> u64 {
        self.config.block_size as u64
    }

    /// Free bytes on the disk under the store, less what is buffered and the reserve.
    pub(crate) fn check_space(&self, st: &State, more: u64) -> Result<()> {
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Ok(()); // cannot tell; the commit will report a real ENOSPC
        }
        let avail = s.f_bavail as u64 * s.f_frsize as u64;
        let need = st.dirty_bytes as u64 + more + SPACE_RESERVE;
        if avail < need {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    /// The buffer of block `idx`, created on first use: filled from the committed block
    /// when `load` (a partial overwrite), else zeros. The caller changes bytes `changed`
    /// of it (noted for the intent log).
    fn dirty_block<'a>(
        &self,
        st: &'a mut State,
        ino: InodeNo,
        idx: u64,
        rec: &mut InodeRecord,
        load: bool,
        changed: std::ops::Range<usize>,
    ) -> Result<&'a mut [u8]> {
        let bs = self.bs() as usize;
        let exists = st
            .dirty_of(ino)
            .is_some_and(|d| d.blocks.contains_key(&idx));
        if !exists {
            let committed = st.committed_block(ino, idx)?;
            let mut buf = vec![0u8; bs].into_boxed_slice();
            if let (Some(id), true) = (committed, load) {
                let data = self.blocks.get(&id)?;
                let n = data.len().min(bs);
                buf[..n].copy_from_slice(&data[..n]);
            }
            if committed.is_none() {
                rec.blocks += units(self.config.block_size);
            }
            st.dirty_entry(ino).blocks.insert(
                idx,
                crate::store::DirtyBlock {
                    data: buf,
                    unlogged: None,
                },
            );
            st.dirty_bytes += bs;
        }
        st.data_unlogged = true;
        st.unlogged_bytes += changed.len() as u64;
        let block = st.dirty_of_mut(ino).unwrap().blocks.get_mut(&idx).unwrap();
        block.touch(changed);
        Ok(&mut block.data)
    }

    /// Makes block `idx` a hole: drops its buffer and its map record.
    fn drop_block(
        &self,
        st: &mut State,
        ino: InodeNo,
        idx: u64,
        rec: &mut InodeRecord,
    ) -> Result<()> {
        let was = st.is_allocated(ino, idx)?;
        if st.dirty_drop_block(ino, idx) {
            st.dirty_bytes -= self.bs() as usize;
        }
        if st.committed_block(ino, idx)?.is_some() {
            st.meta.delete(&keys::block(ino, idx))?;
        }
        if was {
            rec.blocks = rec.blocks.saturating_sub(units(self.config.block_size));
        }
        Ok(())
    }

    /// Zeroes `[from, to)` of the file's blocks (to ≤ the block grid of the file):
    /// whole blocks become holes, partial ones are rewritten.
    fn zero_range(
        &self,
        st: &mut State,
        ino: InodeNo,
        rec: &mut InodeRecord,
        from: u64,
        to: u64,
    ) -> Result<()> {
        let bs = self.bs();
        let mut pos = from;
        while pos < to {
            let idx = pos / bs;
            let boff = pos % bs;
            let n = (bs - boff).min(to - pos);
            if n == bs {
                self.drop_block(st, ino, idx, rec)?;
            } else if st.is_allocated(ino, idx)? {
                let range = boff as usize..(boff + n) as usize;
                let buf = self.dirty_block(st, ino, idx, rec, true, range.clone())?;
                buf[range].fill(0);
            }
            pos += n;
        }
        Ok(())
    }

    /// Sets the size of a regular file (the caller saves `rec`).
    pub(crate) fn truncate_locked(
        &self,
        st: &mut State,
        ino: InodeNo,
        rec: &mut InodeRecord,
        size: u64,
    ) -> Result<()> {
        if size > FILE_SIZE_MAX {
            return Err(Error::FileTooBig);
        }
        let bs = self.bs();
        if size < rec.size {
            // Zero the tail of the new last block, drop every block past it.
            let first_gone = size.div_ceil(bs);
            if !size.is_multiple_of(bs) {
                self.zero_range(
                    st,
                    ino,
                    rec,
                    size,
                    (first_gone * bs).min(rec.size.max(size)),
                )?;
            }
            let last = rec.size.div_ceil(bs);
            for idx in st.allocated_in(ino, first_gone, last.max(first_gone))? {
                self.drop_block(st, ino, idx, rec)?;
            }
        } else if size > rec.size {
            self.check_space(st, 0)?;
        }
        rec.size = size;
        Ok(())
    }
}

impl Volume {
    pub fn write(&self, ino: InodeNo, offset: u64, data: &[u8]) -> Result<u32> {
        let mut st = self.writable()?;
        let mut rec = st.load_inode(ino)?;
        match rec.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(Error::IsDir),
            _ => return Err(Error::InvalidArgument("write to a special file")),
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= FILE_SIZE_MAX)
            .ok_or(Error::FileTooBig)?;
        self.check_space(&st, data.len() as u64)?;
        let bs = self.bs();
        let mut pos = offset;
        let mut done = 0usize;
        while pos < end {
            let idx = pos / bs;
            let boff = (pos % bs) as usize;
            let n = ((bs as usize) - boff).min((end - pos) as usize);
            let full = n == bs as usize;
            let buf = self.dirty_block(&mut st, ino, idx, &mut rec, !full, boff..boff + n)?;
            buf[boff..boff + n].copy_from_slice(&data[done..done + n]);
            pos += n as u64;
            done += n;
        }
        rec.size = rec.size.max(end);
        let now = Timestamp::now();
        rec.mtime = now;
        rec.ctime = now;
        self.last_write_ms
            .store(now.millis(), std::sync::atomic::Ordering::Relaxed);
        st.save_inode(ino, &rec);
        crate::split_writes::note_write(&mut st, ino, offset, end);
        self.after_dirtying(&mut st)?;
        Ok(data.len() as u32)
    }

    pub fn read(&self, ino: InodeNo, offset: u64, size: u32) -> Result<Vec<u8>> {
        // Held until the blocks looked up below are fetched (see `Store::gc_fence`): a gc
        // marks, and deletes packs, only between reads.
        let _fence = self.gc_fence.read().unwrap_or_else(|p| p.into_inner());
        let st = self.lock();
        let rec = st.load_inode(ino)?;
        match rec.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(Error::IsDir),
            _ => return Err(Error::InvalidArgument("read of a special file")),
        }
        if offset >= rec.size {
            return Ok(Vec::new());
        }
        let end = (offset + size as u64).min(rec.size);
        let bs = self.bs();
        // The committed block map of the range, from the read index: a bounded walk per
        // chunk, however many generations the store holds.
        let (first, last) = (offset / bs, (end - 1) / bs);
        let committed: HashMap<u64, BlockId> = st
            .meta
            .block_map(ino, first, last)?
            .into_iter()
            .map(|(idx, v)| Ok((idx, codec::decode_block(&v)?)))
            .collect::<Result<_>>()?;
        // The range piece by piece, in order (each within one block): the reply is then
        // built by appending, not by zeroing a buffer and copying over it.
        enum Piece {
            /// Bytes of a buffered write, copied while the lock is held.
            Dirty(Vec<u8>),
            /// The next of `ids`, from this offset in the block.
            Stored(usize),
            Hole,
        }
        let mut pieces: Vec<(Piece, usize)> = Vec::new();
        let mut ids: Vec<BlockId> = Vec::new();
        let dirty = st.dirty_of(ino);
        let mut pos = offset;
        while pos < end {
            let idx = pos / bs;
            let boff = (pos % bs) as usize;
            let n = ((bs as usize) - boff).min((end - pos) as usize);
            let piece = if let Some(b) = dirty.and_then(|d| d.blocks.get(&idx)) {
                Piece::Dirty(b.data[boff..boff + n].to_vec())
            } else if let Some(id) = committed.get(&idx) {
                ids.push(*id);
                Piece::Stored(boff)
            } else {
                Piece::Hole
            };
            pieces.push((piece, n));
            pos += n as u64;
        }
        drop(st);
        #[cfg(test)]
        std::thread::sleep(std::time::Duration::from_micros(
            self.read_pause_us
                .load(std::sync::atomic::Ordering::Relaxed),
        ));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let (blocks, runs) = self.blocks.get_many_runs(&ids);
        self.note_layout(&ids, runs, rec.ctime);
        let mut blocks = blocks.into_iter();
        for (piece, n) in pieces {
            match piece {
                Piece::Dirty(bytes) => out.extend_from_slice(&bytes),
                Piece::Hole => out.resize(out.len() + n, 0),
                Piece::Stored(boff) => {
                    let data = blocks
                        .next()
                        .expect("one fetched block per stored piece")
                        .inspect_err(|e| {
                            tracing::error!(ino = ino.0, offset = offset + out.len() as u64,
                                error = %e, "block read failed");
                        })?;
                    // A stored block may be shorter than `bs` (trimmed at the end of file
                    // when it was committed); past its end the file reads as zeros.
                    let avail = data.len().saturating_sub(boff).min(n);
                    if avail > 0 {
                        out.extend_from_slice(&data[boff..boff + avail]);
                    }
                    out.resize(out.len() + n - avail, 0);
                }
            }
        }
        Ok(out)
    }

    /// fsync, fdatasync and the fsync of a directory end here: every change so far is
    /// made durable through the intent log (docs/intent-log.md).
    pub fn fsync(&self, _ino: InodeNo) -> Result<()> {
        self.sync_log()
    }

    pub fn fallocate(
        &self,
        ino: InodeNo,
        offset: u64,
        len: u64,
        mode: FallocateMode,
    ) -> Result<()> {
        if len == 0 {
            return Err(Error::InvalidArgument("fallocate of zero length"));
        }
        if mode.punch_hole && !mode.keep_size {
            return Err(Error::NotSupported("PUNCH_HOLE without KEEP_SIZE"));
        }
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= FILE_SIZE_MAX)
            .ok_or(Error::FileTooBig)?;
        let mut st = self.writable()?;
        let mut rec = st.load_inode(ino)?;
        match rec.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(Error::IsDir),
            _ => return Err(Error::NotSupported("fallocate of a special file")),
        }
        if mode.punch_hole || mode.zero_range {
            let zend = end.min(rec.size);
            if offset < zend {
                self.zero_range(&mut st, ino, &mut rec, offset, zend)?;
            }
        } else {
            // Copy-on-write storage cannot reserve blocks ahead; promise only what the
            // disk under the store can hold.
            let grow = end.saturating_sub(rec.size);
            self.check_space(&st, grow)?;
        }
        if !mode.keep_size && end > rec.size {
            rec.size = end;
        }
        let now = Timestamp::now();
        rec.mtime = now;
        rec.ctime = now;
        st.save_inode(ino, &rec);
        Ok(())
    }

    pub fn lseek(&self, ino: InodeNo, offset: u64, whence: SeekWhence) -> Result<u64> {
        let st = self.lock();
        let rec = st.load_inode(ino)?;
        if offset >= rec.size {
            return Err(Error::NoDataPast);
        }
        let bs = self.bs();
        let first = offset / bs;
        let last = rec.size.div_ceil(bs);
        let allocated = st.allocated_in(ino, first, last)?;
        match whence {
            SeekWhence::Data => allocated
                .first()
                .map(|&i| (i * bs).max(offset))
                .ok_or(Error::NoDataPast),
            SeekWhence::Hole => {
                let mut idx = first;
                for &a in &allocated {
                    if a != idx {
                        break;
                    }
                    idx += 1;
                }
                Ok((idx * bs).max(offset).min(rec.size))
            }
        }
    }

    /// Copies `len` bytes from `src` at `off_in` to `dst` at `off_out`. Whole blocks at
    /// block-aligned offsets are copied as block-map records (no data is read or
    /// written: an in-filesystem reflink); the rest is copied through memory.
    pub fn copy_file_range(
        &self,
        src: InodeNo,
        off_in: u64,
        dst: InodeNo,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        let bs = self.bs();
        let mut st = self.writable()?;
        let srec = st.load_inode(src)?;
        let mut drec = st.load_inode(dst)?;
        if srec.kind != FileKind::File || drec.kind != FileKind::File {
            return Err(
                if srec.kind == FileKind::Dir || drec.kind == FileKind::Dir {
                    Error::IsDir
                } else {
                    Error::InvalidArgument("copy_file_range of a special file")
                },
            );
        }
        if off_in >= srec.size {
            return Ok(0);
        }
        let len = len.min(srec.size - off_in);
        if off_out.checked_add(len).is_none_or(|e| e > FILE_SIZE_MAX) {
            return Err(Error::FileTooBig);
        }
        if src == dst && off_in < off_out + len && off_out < off_in + len {
            return Err(Error::InvalidArgument("overlapping copy within one file"));
        }
        let mut copied = 0u64;
        if off_in.is_multiple_of(bs) && off_out.is_multiple_of(bs) && src != dst {
            let whole = len / bs;
            for i in 0..whole {
                let (si, di) = (off_in / bs + i, off_out / bs + i);
                let dirty_src = st
                    .dirty_of(src)
                    .and_then(|d| d.blocks.get(&si))
                    .map(|b| b.data.clone());
                if let Some(buf) = dirty_src {
                    let b = self.dirty_block(&mut st, dst, di, &mut drec, false, 0..bs as usize)?;
                    b.copy_from_slice(&buf);
                } else if let Some(id) = st.committed_block(src, si)? {
                    let was = st.is_allocated(dst, di)?;
                    if st.dirty_drop_block(dst, di) {
                        st.dirty_bytes -= bs as usize;
                    }
                    st.meta.put(&keys::block(dst, di), &id.0);
                    if !was {
                        drec.blocks += units(self.config.block_size);
                    }
                } else {
                    self.drop_block(&mut st, dst, di, &mut drec)?;
                }
            }
            copied = whole * bs;
            drec.size = drec.size.max(off_out + copied);
            let now = Timestamp::now();
            drec.mtime = now;
            drec.ctime = now;
            st.save_inode(dst, &drec);
        }
        drop(st);
        // The unaligned rest, through memory.
        while copied < len {
            let n = (len - copied).min(1 << 20) as u32;
            let data = self.read(src, off_in + copied, n)?;
            if data.is_empty() {
                break;
            }
            self.write(dst, off_out + copied, &data)?;
            copied += data.len() as u64;
        }
        Ok(copied)
    }
}

impl Store {
    /// Commit step 1: hash, compress and append every buffered block to the packs, and
    /// record the ids in the block maps (in the overlay). On error the buffers are kept.
    pub(crate) fn seal_dirty(&self, st: &mut State) -> Result<()> {
        if st.dirty.is_empty() {
            return Ok(());
        }
        let bs = self.bs();
        let dirty = std::mem::take(&mut st.dirty);
        let dirty_bytes = std::mem::replace(&mut st.dirty_bytes, 0);
        // ((gen, ino), idx, data trimmed at end of file)
        let mut items: Vec<((GenerationId, InodeNo), u64, &[u8])> = Vec::new();
        let mut holes: Vec<((GenerationId, InodeNo), u64)> = Vec::new();
        // Files too small to have a range worth laying out (`defrag_rewritten.rs`).
        let mut small: std::collections::HashSet<(GenerationId, InodeNo)> = Default::default();
        for (key @ (gen, ino), d) in &dirty {
            let view = match st.heads.values().find(|v| v.gen == *gen) {
                Some(v) => v.clone(),
                None => continue, // the branch was deleted
            };
            st.meta.set_view(&view);
            let size = match st.load_inode(*ino) {
                Ok(r) => r.size,
                Err(Error::NotFound) => continue,
                Err(e) => {
                    st.dirty = dirty;
                    st.dirty_bytes = dirty_bytes;
                    return Err(e);
                }
            };
            if self.config.defrag_rewritten && size < crate::defrag_on_read::MIN_READ_BYTES {
                small.insert(*key);
            }
            for (idx, block) in &d.blocks {
                let buf = &block.data;
                let start = idx * bs;
                if start >= size {
                    holes.push((*key, *idx));
                    continue;
                }
                let n = ((size - start).min(bs)) as usize;
                let data = &buf[..n];
                if is_zero(data) {
                    holes.push((*key, *idx));
                } else {
                    items.push((*key, *idx, data));
                }
            }
        }
        let mut ids: Vec<BlockId> = Vec::with_capacity(items.len());
        for chunk in items.chunks(SEAL_BATCH) {
            let datas: Vec<&[u8]> = chunk.iter().map(|(_, _, d)| *d).collect();
            match self.blocks.put_many(&datas) {
                Ok(v) => ids.extend(v),
                Err(e) => {
                    drop(items);
                    st.dirty = dirty;
                    st.dirty_bytes = dirty_bytes;
                    return Err(e.into());
                }
            }
        }
        for (((gen, ino), idx, _), id) in items.iter().zip(&ids) {
            st.meta.set_view(&self.head_view(st, *gen));
            st.meta.put(&keys::block(*ino, *idx), &id.0);
        }
        if self.config.defrag_rewritten {
            self.note_sealed(st, &items, &small);
        }
        // Holes: drop any older record; the buffered block no longer counts.
        let mut recs: std::collections::BTreeMap<(GenerationId, InodeNo), InodeRecord> =
            Default::default();
        for ((gen, ino), idx) in holes {
            st.meta.set_view(&self.head_view(st, gen));
            if st.committed_block(ino, idx)?.is_some() {
                st.meta.delete(&keys::block(ino, idx))?;
            }
            let rec = match recs.entry((gen, ino)) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(st.load_inode(ino)?),
            };
            rec.blocks = rec.blocks.saturating_sub(units(self.config.block_size));
        }
        for ((gen, ino), rec) in recs {
            st.meta.set_view(&self.head_view(st, gen));
            st.save_inode(ino, &rec);
        }
        Ok(())
    }

    /// Tells defragmentation of rewritten files which blocks of which files (but the
    /// `small` ones) of which branch the commit wrote.
    fn note_sealed(
        &self,
        st: &State,
        items: &[((GenerationId, InodeNo), u64, &[u8])],
        small: &std::collections::HashSet<(GenerationId, InodeNo)>,
    ) {
        let mut by_file: std::collections::BTreeMap<(GenerationId, InodeNo), Vec<u64>> =
            Default::default();
        for (key, idx, _) in items.iter().filter(|(key, _, _)| !small.contains(key)) {
            by_file.entry(*key).or_default().push(*idx);
        }
        for ((gen, ino), idxs) in by_file {
            if let Some((branch, _)) = st.heads.iter().find(|(_, v)| v.gen == gen) {
                self.note_rewritten(branch, ino, &idxs);
            }
        }
    }

    /// The view of the live generation `gen` (which has buffered data, so heads a branch).
    fn head_view(&self, st: &State, gen: GenerationId) -> crate::generation::View {
        st.heads
            .values()
            .find(|v| v.gen == gen)
            .cloned()
            .expect("buffered data belongs to a live generation")
    }
}
