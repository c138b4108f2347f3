//! Store-level tests of the POSIX model, without FUSE: each operation, then a reopen
//! to check that what was committed is what comes back.

use std::sync::Arc;

use crate::*;

const CTX: Ctx = Ctx {
    uid: 1000,
    gid: 100,
    umask: 0,
};
pub(crate) const BS: u32 = 16384;

pub(crate) fn new_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    Store::init(
        &path,
        &InitOptions {
            block_size: BS,
            compression_level: 3,
        },
    )
    .unwrap();
    let s = Store::open(&path).unwrap();
    (dir, s)
}

pub(crate) fn reopen(dir: &tempfile::TempDir, s: Arc<Store>) -> Arc<Store> {
    s.close().unwrap();
    drop(s);
    Store::open(&dir.path().join("store")).unwrap()
}

fn file(s: &Arc<Store>, parent: InodeNo, name: &str) -> InodeNo {
    s.main()
        .mknod(parent, name.as_bytes(), libc::S_IFREG | 0o644, 0, CTX)
        .unwrap()
        .ino
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

#[test]
fn init_refuses_non_empty_and_existing_stores() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), b"x").unwrap();
    let o = InitOptions {
        block_size: BS,
        compression_level: 3,
    };
    assert!(
        matches!(Store::init(dir.path(), &o), Err(Error::Invalid(m)) if m.contains("not empty"))
    );
    let p = dir.path().join("s");
    Store::init(&p, &o).unwrap();
    assert!(matches!(Store::init(&p, &o), Err(Error::Invalid(m)) if m.contains("already")));
    assert!(matches!(
        Store::open(dir.path()),
        Err(Error::NotAStore { .. })
    ));
    let _s = Store::open(&p).unwrap();
    assert!(matches!(Store::open(&p), Err(Error::Locked { .. })));
}

#[test]
fn write_read_across_blocks_and_reopen() {
    let (dir, s) = new_store();
    let f = file(&s, InodeNo::ROOT, "f");
    let data = pattern(3 * BS as usize + 1234, 7);
    assert_eq!(s.main().write(f, 100, &data).unwrap() as usize, data.len());
    let back = s.main().read(f, 100, data.len() as u32 + 50).unwrap();
    assert_eq!(back, data);
    assert_eq!(s.main().read(f, 0, 100).unwrap(), vec![0; 100]);
    let s = reopen(&dir, s);
    let a = s.main().lookup(InodeNo::ROOT, b"f").unwrap();
    assert_eq!(a.size, 100 + data.len() as u64);
    assert_eq!(s.main().read(f, 100, data.len() as u32).unwrap(), data);
    // Partial overwrite of committed data.
    s.main()
        .write(f, BS as u64 - 10, b"0123456789abcdefghij")
        .unwrap();
    let mut expect = vec![0u8; 100];
    expect.extend_from_slice(&data);
    expect[BS as usize - 10..BS as usize + 10].copy_from_slice(b"0123456789abcdefghij");
    assert_eq!(s.main().read(f, 0, expect.len() as u32).unwrap(), expect);
    let s = reopen(&dir, s);
    assert_eq!(s.main().read(f, 0, expect.len() as u32).unwrap(), expect);
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

#[test]
fn truncate_zeroes_the_tail_and_holes_read_as_zero() {
    let (dir, s) = new_store();
    let f = file(&s, InodeNo::ROOT, "f");
    s.main().write(f, 0, &vec![0xab; 2 * BS as usize]).unwrap();
    s.sync().unwrap();
    s.main()
        .setattr(
            f,
            &SetAttr {
                size: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
    s.main()
        .setattr(
            f,
            &SetAttr {
                size: Some(3 * BS as u64),
                ..Default::default()
            },
        )
        .unwrap();
    let back = s.main().read(f, 0, 3 * BS).unwrap();
    assert_eq!(&back[..10], &[0xab; 10]);
    assert!(back[10..].iter().all(|&b| b == 0));
    let s = reopen(&dir, s);
    let back = s.main().read(f, 0, 3 * BS).unwrap();
    assert_eq!(&back[..10], &[0xab; 10]);
    assert!(back[10..].iter().all(|&b| b == 0));
    assert_eq!(s.main().getattr(f).unwrap().blocks, BS as u64 / 512);
}

#[test]
fn seek_data_hole_and_punch() {
    let (_dir, s) = new_store();
    let f = file(&s, InodeNo::ROOT, "f");
    let bs = BS as u64;
    s.main().write(f, 2 * bs, &vec![1; bs as usize]).unwrap();
    s.main()
        .setattr(
            f,
            &SetAttr {
                size: Some(5 * bs),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(s.main().lseek(f, 0, SeekWhence::Data).unwrap(), 2 * bs);
    assert_eq!(
        s.main().lseek(f, 2 * bs + 5, SeekWhence::Hole).unwrap(),
        3 * bs
    );
    assert_eq!(s.main().lseek(f, 0, SeekWhence::Hole).unwrap(), 0);
    assert!(matches!(
        s.main().lseek(f, 3 * bs, SeekWhence::Data),
        Err(Error::NoDataPast)
    ));
    assert!(matches!(
        s.main().lseek(f, 5 * bs, SeekWhence::Hole),
        Err(Error::NoDataPast)
    ));
    s.sync().unwrap();
    assert_eq!(s.main().lseek(f, 0, SeekWhence::Data).unwrap(), 2 * bs);
    let keep = FallocateMode {
        keep_size: true,
        punch_hole: true,
        zero_range: false,
    };
    s.main().fallocate(f, 2 * bs, bs, keep).unwrap();
    assert!(matches!(
        s.main().lseek(f, 0, SeekWhence::Data),
        Err(Error::NoDataPast)
    ));
    assert_eq!(s.main().getattr(f).unwrap().size, 5 * bs);
    assert_eq!(s.main().getattr(f).unwrap().blocks, 0);
}

#[test]
fn copy_file_range_shares_blocks() {
    let (dir, s) = new_store();
    let a = file(&s, InodeNo::ROOT, "a");
    let b = file(&s, InodeNo::ROOT, "b");
    let data = pattern(4 * BS as usize + 100, 3);
    s.main().write(a, 0, &data).unwrap();
    s.sync().unwrap();
    let before = s.stats().unwrap();
    let n = s
        .main()
        .copy_file_range(a, 0, b, 0, data.len() as u64)
        .unwrap();
    assert_eq!(n as usize, data.len());
    s.sync().unwrap();
    let after = s.stats().unwrap();
    assert_eq!(
        after.blocks, before.blocks,
        "whole blocks are shared, not stored again"
    );
    let s = reopen(&dir, s);
    assert_eq!(s.main().read(b, 0, data.len() as u32).unwrap(), data);
}

#[test]
fn namespace_operations_keep_counts_and_survive_reopen() {
    let (dir, s) = new_store();
    let d = s.main().mkdir(InodeNo::ROOT, b"d", 0o755, CTX).unwrap().ino;
    let e = s.main().mkdir(d, b"e", 0o700, CTX).unwrap().ino;
    assert_eq!(s.main().getattr(d).unwrap().nlink, 3);
    assert_eq!(s.main().getattr(InodeNo::ROOT).unwrap().nlink, 3);
    let f = file(&s, d, "f");
    s.main().link(f, InodeNo::ROOT, b"hard").unwrap();
    assert_eq!(s.main().getattr(f).unwrap().nlink, 2);
    s.main()
        .symlink(InodeNo::ROOT, b"sym", b"d/f", CTX)
        .unwrap();
    assert!(matches!(
        s.main().mkdir(InodeNo::ROOT, b"d", 0o755, CTX),
        Err(Error::Exists)
    ));
    assert!(matches!(
        s.main().rmdir(InodeNo::ROOT, b"d"),
        Err(Error::NotEmpty)
    ));
    assert!(matches!(
        s.main().unlink(InodeNo::ROOT, b"d"),
        Err(Error::IsDir)
    ));
    assert!(matches!(
        s.main()
            .rename(InodeNo::ROOT, b"d", e, b"x", RenameFlags::default()),
        Err(Error::InvalidArgument(_))
    ));
    // Move e up to the root, exchange, noreplace.
    s.main()
        .rename(d, b"e", InodeNo::ROOT, b"e2", RenameFlags::default())
        .unwrap();
    assert_eq!(s.main().getattr(d).unwrap().nlink, 2);
    assert_eq!(s.main().getattr(InodeNo::ROOT).unwrap().nlink, 4);
    assert!(matches!(
        s.main().rename(
            InodeNo::ROOT,
            b"hard",
            InodeNo::ROOT,
            b"sym",
            RenameFlags {
                noreplace: true,
                exchange: false
            }
        ),
        Err(Error::Exists)
    ));
    s.main()
        .rename(
            InodeNo::ROOT,
            b"hard",
            InodeNo::ROOT,
            b"sym",
            RenameFlags {
                noreplace: false,
                exchange: true,
            },
        )
        .unwrap();
    assert_eq!(
        s.main()
            .readlink(s.main().lookup(InodeNo::ROOT, b"hard").unwrap().ino)
            .unwrap(),
        b"d/f"
    );
    assert_eq!(s.main().lookup(InodeNo::ROOT, b"sym").unwrap().ino, f);
    assert_eq!(s.main().parent_of(e).unwrap(), InodeNo::ROOT);
    assert!(matches!(
        s.main().mkdir(InodeNo::ROOT, &[b'n'; 256], 0o755, CTX),
        Err(Error::NameTooLong)
    ));
    let s = reopen(&dir, s);
    let names: Vec<_> = s
        .main()
        .readdir(InodeNo::ROOT)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        vec![
            b"d".to_vec(),
            b"e2".to_vec(),
            b"hard".to_vec(),
            b"sym".to_vec()
        ]
    );
    s.main().unlink(InodeNo::ROOT, b"sym").unwrap();
    assert_eq!(s.main().getattr(f).unwrap().nlink, 1);
    s.main().rmdir(InodeNo::ROOT, b"e2").unwrap();
    assert_eq!(s.main().getattr(InodeNo::ROOT).unwrap().nlink, 3);
    assert!(matches!(s.main().getattr(e), Err(Error::NotFound)));
    let s = reopen(&dir, s);
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

#[test]
fn unlinked_open_file_stays_readable_and_is_removed_at_release_or_reopen() {
    let (dir, s) = new_store();
    let f = file(&s, InodeNo::ROOT, "f");
    s.main().write(f, 0, b"still here").unwrap();
    s.main().open_file(f).unwrap();
    s.main().unlink(InodeNo::ROOT, b"f").unwrap();
    assert_eq!(s.main().read(f, 0, 100).unwrap(), b"still here");
    s.sync().unwrap();
    // A crash now (drop without release) must not leak the inode: reopen removes it.
    let g = file(&s, InodeNo::ROOT, "g");
    s.main().open_file(g).unwrap();
    s.main().unlink(InodeNo::ROOT, b"g").unwrap();
    s.main().release_file(g).unwrap();
    assert!(matches!(s.main().getattr(g), Err(Error::NotFound)));
    let s = reopen(&dir, s);
    assert!(matches!(s.main().getattr(f), Err(Error::NotFound)));
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

#[test]
fn setgid_directories_pass_their_group_on() {
    let (_dir, s) = new_store();
    let d = s
        .main()
        .mkdir(
            InodeNo::ROOT,
            b"d",
            0o2775,
            Ctx {
                uid: 0,
                gid: 50,
                umask: 0,
            },
        )
        .unwrap();
    assert_eq!(d.perm & 0o2000, 0o2000);
    let f = s
        .main()
        .mknod(d.ino, b"f", libc::S_IFREG | 0o644, 0, CTX)
        .unwrap();
    assert_eq!(f.gid, 50);
    let sub = s.main().mkdir(d.ino, b"sub", 0o755, CTX).unwrap();
    assert_eq!((sub.gid, sub.perm & 0o2000), (50, 0o2000));
}

#[test]
fn xattrs_flags_and_errors() {
    let (dir, s) = new_store();
    let f = file(&s, InodeNo::ROOT, "f");
    let create = XattrFlags {
        create: true,
        replace: false,
        kill_sgid: false,
    };
    let replace = XattrFlags {
        create: false,
        replace: true,
        kill_sgid: false,
    };
    assert!(matches!(
        s.main().setxattr(f, b"user.a", b"1", replace),
        Err(Error::NoAttribute)
    ));
    s.main().setxattr(f, b"user.a", b"1", create).unwrap();
    assert!(matches!(
        s.main().setxattr(f, b"user.a", b"2", create),
        Err(Error::Exists)
    ));
    s.main().setxattr(f, b"user.a", b"2", replace).unwrap();
    s.main()
        .setxattr(f, b"user.b", b"", XattrFlags::default())
        .unwrap();
    let s = reopen(&dir, s);
    assert_eq!(s.main().getxattr(f, b"user.a").unwrap(), b"2");
    assert_eq!(
        s.main().listxattr(f).unwrap(),
        vec![b"user.a".to_vec(), b"user.b".to_vec()]
    );
    s.main().removexattr(f, b"user.a").unwrap();
    assert!(matches!(
        s.main().getxattr(f, b"user.a"),
        Err(Error::NoAttribute)
    ));
    assert!(matches!(
        s.main().removexattr(f, b"user.a"),
        Err(Error::NoAttribute)
    ));
}

#[test]
fn dedup_and_zero_blocks() {
    let (_dir, s) = new_store();
    let a = file(&s, InodeNo::ROOT, "a");
    let b = file(&s, InodeNo::ROOT, "b");
    let data = pattern(2 * BS as usize, 9);
    s.main().write(a, 0, &data).unwrap();
    s.main().write(b, 0, &data).unwrap();
    let z = file(&s, InodeNo::ROOT, "z");
    s.main().write(z, 0, &vec![0; 4 * BS as usize]).unwrap();
    s.sync().unwrap();
    let st = s.stats().unwrap();
    assert_eq!(st.blocks, 2);
    assert_eq!(st.logical_bytes, 4 * BS as u64);
    assert!((st.dedup_ratio - 2.0).abs() < 1e-9);
    assert_eq!(
        s.main().getattr(z).unwrap().blocks,
        0,
        "zero blocks are holes"
    );
    assert_eq!(
        s.main().read(z, 0, 4 * BS).unwrap(),
        vec![0; 4 * BS as usize]
    );
}

#[test]
fn reads_past_a_trimmed_last_block_are_zeros() {
    let (_dir, s) = new_store();
    let f = file(&s, InodeNo::ROOT, "f");
    s.main().write(f, 0, &[7u8; 100]).unwrap();
    s.sync().unwrap(); // block 0 is stored trimmed to 100 bytes
    s.main()
        .setattr(
            f,
            &SetAttr {
                size: Some(BS as u64 + 10),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(s.main().read(f, 200, 50).unwrap(), vec![0u8; 50]);
    let all = s.main().read(f, 0, BS + 10).unwrap();
    assert_eq!(&all[..100], &[7u8; 100]);
    assert!(all[100..].iter().all(|&b| b == 0));
}

/// A sled snapshot left half written by a crash (`snap.LSN.generating`, empty) made sled
/// refuse to open the store; the open removes it.
#[test]
fn a_half_written_sled_snapshot_does_not_stop_the_open() {
    let (dir, s) = new_store();
    let f = file(&s, InodeNo::ROOT, "kept");
    s.main().write(f, 0, b"committed").unwrap();
    s.close().unwrap();
    drop(s);
    let meta = dir.path().join("store/meta");
    let leftover = meta.join("snap.FFFFFFFFFFFFFFF0.generating");
    std::fs::write(&leftover, b"").unwrap();
    let s = Store::open(&dir.path().join("store")).unwrap();
    assert!(!leftover.exists());
    assert_eq!(s.main().read(f, 0, 100).unwrap(), b"committed");
}
