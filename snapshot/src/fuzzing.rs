//! Fuzz entry points (docs/fuzzing.md): one per target of the `fuzz/` crate. Each takes
//! arbitrary bytes, runs the decoders the store runs on what it reads from `meta/` and
//! `strata.toml`, and checks what they promise; it panics only when a promise is broken
//! (and a panic inside a decoder is a bug of that decoder).
//!
//! - `meta_value`: the values of the metadata tree (envelope, inode record, directory
//!   entry, block id, read-index checkpoint).
//! - `meta_key`: the keys of the metadata tree, versioned (`check_versioned`) and not.
//! - `generation_record`: `GenerationRecord::decode`.
//! - `flatten_pass`: the `S flatten` record (`Pass::decode`).
//! - `store_config`: strata.toml (`StoreConfig::parse`).
//! - `intent_log`: the bytes of an intent log (`intent_log::parse_records`).
//!
//! What decodes encodes to the same bytes (a 21-byte generation record excepted: it
//! encodes in today's layout), and nothing panics. Not an API.

use std::path::Path;

use crate::codec::{self, InodeRecord, PRESENT, TOMBSTONE};
use crate::config::{StoreConfig, FORMAT_VERSION};
use crate::flatten::Pass;
use crate::generation::{GenerationRecord, MAIN_BRANCH, STATE_DELETED, STATE_LIVE};
use crate::keys;
use crate::types::GenerationId;

/// A fuzz target: its name and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// The targets of this crate, as named under `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: [Target; 6] = [
    ("meta_value", meta_value),
    ("meta_key", meta_key),
    ("generation_record", generation_record),
    ("flatten_pass", flatten_pass),
    ("store_config", store_config),
    ("intent_log", intent_log),
];

/// Byte 0 chooses the decoder (modulo 5: inode record, directory entry, block id,
/// checkpoint, or a versioned value: envelope then each of them); the rest is a value.
pub fn meta_value(data: &[u8]) {
    let Some((&sel, value)) = data.split_first() else {
        return;
    };
    match sel % 5 {
        0 => inode_record(value),
        1 => dirent(value),
        2 => block_id(value),
        3 => checkpoint(value),
        _ => match crate::meta::unwrap_envelope(b"key", value) {
            Ok(Some(payload)) => {
                assert_eq!([&[PRESENT][..], &payload].concat(), value);
                inode_record(&payload);
                dirent(&payload);
                block_id(&payload);
                checkpoint(&payload);
            }
            Ok(None) => assert_eq!(value, [TOMBSTONE]),
            Err(e) => assert!(!e.to_string().is_empty()),
        },
    }
}

fn inode_record(b: &[u8]) {
    match InodeRecord::decode(b) {
        Ok(r) => assert_eq!(r.encode(), b, "an inode record encodes to its own bytes"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn dirent(b: &[u8]) {
    match codec::decode_dirent(b) {
        Ok((ino, kind)) => assert_eq!(codec::encode_dirent(ino, kind), b),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn block_id(b: &[u8]) {
    match codec::decode_block(b) {
        Ok(id) => assert_eq!(id.0[..], *b),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn checkpoint(b: &[u8]) {
    match codec::decode_checkpoint(b) {
        Ok(present) => {
            assert!(present.windows(2).all(|w| w[0].0 < w[1].0), "slots ascend");
            assert!(present
                .iter()
                .all(|(slot, _)| u64::from(*slot) < keys::CHUNK_BLOCKS));
            assert_eq!(codec::encode_checkpoint(&present), b);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Every key decoder on the bytes: what one accepts, the matching constructor builds
/// again byte for byte.
pub fn meta_key(key: &[u8]) {
    let be = |r: std::ops::Range<usize>| u64::from_be_bytes(key[r].try_into().unwrap());
    if let Ok((base, gen)) = keys::check_versioned(key) {
        assert_eq!(keys::versioned(base, gen), key);
        let ino = keys::key_ino(base);
        let again = match base[0] {
            keys::INODE => keys::inode(ino),
            keys::ORPHAN => keys::orphan(ino),
            keys::BLOCK => {
                let index = keys::block_index(base);
                let twin = keys::rtwin(key).expect("a versioned block key has a twin");
                let slot = (index % keys::CHUNK_BLOCKS) as u8;
                assert_eq!(keys::split_rkey(&twin), Some((gen, slot)));
                assert_eq!(keys::split_chunk(&twin), (ino, index / keys::CHUNK_BLOCKS));
                keys::block(ino, index)
            }
            keys::DIRENT => keys::dirent(ino, keys::dirent_name(base)),
            keys::XATTR => keys::xattr(ino, keys::xattr_name(base)),
            k => panic!("check_versioned accepted kind {k}"),
        };
        assert_eq!(again, base);
    }
    if let Some((gen, slot)) = keys::split_rkey(key) {
        let (ino, chunk) = keys::split_chunk(key);
        let mut again = keys::rchunk_at(ino, chunk, gen);
        again.push(slot);
        assert_eq!(again, key);
    }
    if let Some(gen) = keys::split_pkey(key) {
        let (ino, chunk) = keys::split_chunk(key);
        assert_eq!(keys::rcheckpoint(ino, chunk, gen), key);
    }
    if let Some((ino, chunk)) = keys::split_checkpoint_ref(key) {
        assert_eq!(
            keys::checkpoint_ref(GenerationId(be(1..9)), ino, chunk),
            key
        );
    }
    if let Some((ino, chunk, gen)) = keys::split_recheck(key) {
        assert_eq!(keys::recheck(ino, chunk, gen), key);
    }
    if let Some((gen, ino)) = keys::split_change(key) {
        assert_eq!(keys::change(gen, ino), key);
    }
    if let Some(twin) = keys::rtwin(key) {
        assert!(keys::split_rkey(&twin).is_some());
    }
    let _ = keys::describe(key);
}

pub fn generation_record(b: &[u8]) {
    match GenerationRecord::decode(b) {
        Ok(r) => {
            assert!((STATE_LIVE..=STATE_DELETED).contains(&r.state));
            assert_ne!(r.parent, Some(GenerationId(0)));
            let encoded = r.encode();
            if b.len() == 21 {
                // The layout from before snapshots: today's has the name and branch.
                assert_eq!(r.branch, MAIN_BRANCH);
                assert_eq!(encoded, [b, &[0, 0][..], MAIN_BRANCH.as_bytes()].concat());
            } else {
                assert_eq!(encoded, b, "a generation record encodes to its own bytes");
            }
            assert_eq!(GenerationRecord::decode(&encoded).unwrap(), r);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

pub fn flatten_pass(b: &[u8]) {
    match Pass::decode(b) {
        Ok(p) => {
            assert_eq!(p.encode(), b, "a flatten pass encodes to its own bytes");
            if let Some(base) = &p.base {
                let (kind, ino) = p.unit.expect("a base belongs to a unit");
                assert_eq!((base[0], keys::key_ino(base)), (kind, ino));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The bytes as an intent log of epoch 1: the records parse or the error names one;
/// what parses, written again as records, parses to the same entries and ends at the
/// same offset.
pub fn intent_log(b: &[u8]) {
    use crate::intent_log::record::{encode_entry, header};
    match crate::intent_log::parse_records(b, 1) {
        Ok((records, end)) => {
            assert!(end as usize <= b.len());
            let mut again = Vec::new();
            for (seq, entries) in records.iter().enumerate() {
                let mut payload = Vec::new();
                for e in entries {
                    encode_entry(e, &mut payload);
                }
                again.extend_from_slice(&header(1, seq as u64, &payload));
                again.extend_from_slice(&payload);
            }
            assert_eq!(again.len() as u64, end, "records encode to their own bytes");
            assert_eq!(&again[..], &b[..end as usize]);
            assert_eq!(
                crate::intent_log::parse_records(&again, 1).unwrap().0,
                records
            );
        }
        Err((at, detail)) => assert!(at as usize <= b.len() && !detail.is_empty()),
    }
}

/// The bytes as the text of a strata.toml (not UTF-8: nothing to parse; reading the
/// file refuses it first).
pub fn store_config(b: &[u8]) {
    let Ok(text) = std::str::from_utf8(b) else {
        return;
    };
    let store = Path::new("/fuzz/store");
    match StoreConfig::parse(text, store) {
        Ok(cfg) => {
            assert_eq!(cfg.format_version, FORMAT_VERSION);
            crate::config::validate_block_size(cfg.block_size).unwrap();
            crate::config::validate_compression_level(cfg.compression_level).unwrap();
            let written = toml::to_string(&cfg).expect("a config serializes");
            assert_eq!(StoreConfig::parse(&written, store).unwrap(), cfg);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the checked-in corpus of a target is.
    fn corpus_dir(target: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
    }

    #[test]
    fn the_corpus_replays() {
        for (target, run) in TARGETS {
            let n = replay(&corpus_dir(target), run);
            assert!(n > 0, "no corpus for {target}");
        }
    }

    /// Runs every file of `dir` through `run`; returns how many there were.
    pub(crate) fn replay(dir: &Path, run: fn(&[u8])) -> usize {
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{} fails its target", path.display());
            n += 1;
        }
        n
    }

    /// Regenerates the `real-*` seeds of every target of blockstore and snapshot under
    /// fuzz/corpus/ from a real store: a few files of each kind, snapshots, a clone, two
    /// snapshots deleted and a flatten pass stopped after its first batch (so `S flatten`
    /// is there). Other files of the corpus (inputs the fuzzer found) are left alone.
    /// `cargo test -p strata-snapshot --release -- --ignored make_corpus`.
    #[test]
    #[ignore]
    fn make_corpus() {
        use crate::{Ctx, InitOptions, InodeNo, Store, XattrFlags};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let opts = InitOptions {
            block_size: 4096,
            compression_level: 3,
        };
        Store::init(&path, &opts).unwrap();
        let s = Store::open(&path).unwrap();
        let v = s.main();
        let ctx = Ctx {
            uid: 1000,
            gid: 100,
            umask: 0,
        };
        let root = InodeNo::ROOT;
        let text = b"strata keeps every generation of this file.\n".repeat(200);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..6000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let hello = v
            .mknod(root, b"hello.txt", libc::S_IFREG | 0o644, 0, ctx)
            .unwrap();
        v.write(hello.ino, 0, &text).unwrap();
        let bin = v
            .mknod(root, b"noise.bin", libc::S_IFREG | 0o600, 0, ctx)
            .unwrap();
        v.write(bin.ino, 0, &noise).unwrap();
        v.write(bin.ino, 40_000, b"after a hole").unwrap();
        let d = v.mkdir(root, b"docs", 0o755, ctx).unwrap();
        let nested = v
            .mknod(d.ino, b"n\xc3\xa4me", libc::S_IFREG | 0o644, 0, ctx)
            .unwrap();
        v.write(nested.ino, 0, b"small").unwrap();
        v.symlink(root, b"link", b"hello.txt", ctx).unwrap();
        v.mknod(root, b"fifo", libc::S_IFIFO | 0o644, 0, ctx)
            .unwrap();
        let flags = XattrFlags {
            create: false,
            replace: false,
            kill_sgid: false,
        };
        v.setxattr(hello.ino, b"user.note", b"a value", flags)
            .unwrap();
        s.sync().unwrap();
        s.snapshot_create(MAIN_BRANCH, "s1").unwrap();
        v.write(hello.ino, 100, b"changed in the second generation")
            .unwrap();
        v.unlink(root, b"fifo").unwrap();
        s.snapshot_create(MAIN_BRANCH, "s2").unwrap();
        v.write(bin.ino, 0, &noise[..3000]).unwrap();
        v.rename(root, b"link", d.ino, b"moved-link", Default::default())
            .unwrap();
        s.snapshot_create(MAIN_BRANCH, "s3").unwrap();
        s.clone_branch("s3", "experiment").unwrap();
        s.snapshot_delete("s1", false).unwrap();
        s.snapshot_delete("s2", false).unwrap();
        s.flatten(1, std::time::Duration::ZERO, &mut |_| false)
            .unwrap();
        s.close().unwrap();
        drop((v, s));

        let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
        let db = sled::Config::new().path(path.join("meta")).open().unwrap();
        let mut pass_seen = false;
        for item in db.open_tree("meta").unwrap().iter() {
            let (k, v) = item.unwrap();
            let (k, v) = (k.to_vec(), v.to_vec());
            seeds.push(("meta_key", k.clone()));
            let payload = || v.get(1..).unwrap_or_default().to_vec();
            let with = |sel: u8, b: &[u8]| [&[sel][..], b].concat();
            match k[0] {
                keys::INODE | keys::DIRENT | keys::BLOCK | keys::XATTR | keys::ORPHAN => {
                    seeds.push(("meta_value", with(4, &v)));
                    let sel = match k[0] {
                        keys::INODE => 0,
                        keys::DIRENT => 1,
                        keys::BLOCK => 2,
                        _ => continue,
                    };
                    if v.first() == Some(&PRESENT) {
                        seeds.push(("meta_value", with(sel, &payload())));
                    }
                }
                keys::CHECKPOINT => seeds.push(("meta_value", with(3, &v))),
                keys::GENERATION => {
                    seeds.push(("generation_record", v.clone()));
                    if v.len() > 21 && v[0] == STATE_LIVE {
                        // The layout stores from before snapshots have.
                        seeds.push(("generation_record", v[..21].to_vec()));
                    }
                }
                keys::STATE if k == keys::state(crate::flatten::FLATTEN_STATE) => {
                    pass_seen = true;
                    seeds.push(("flatten_pass", v.clone()));
                }
                _ => {}
            }
        }
        assert!(pass_seen, "the flatten pass was not left under way");
        for item in db.open_tree("blocks").unwrap().iter() {
            let (_, v) = item.unwrap();
            seeds.push(strata_blockstore::fuzzing::seed_from_index_value(&v));
        }
        drop(db);
        for entry in std::fs::read_dir(path.join("packs")).unwrap() {
            let pack = std::fs::read(entry.unwrap().path()).unwrap();
            seeds.extend(strata_blockstore::fuzzing::seeds_from_pack(&pack));
        }
        let toml = std::fs::read_to_string(path.join("strata.toml")).unwrap();
        seeds.push(("store_config", toml.clone().into_bytes()));
        let settings =
            "auto_snapshot_every = \"15m\"\nauto_snapshot_keep = \"hourly=24,daily=7\"\n";
        seeds.push(("store_config", format!("{toml}{settings}").into_bytes()));
        let newer = toml.replace("format_version = 1", "format_version = 2");
        seeds.push(("store_config", newer.into_bytes()));
        write_seeds(&seeds, 60);
    }

    /// Regenerates the `real-*` seeds of `intent_log`: the log of a store (epoch 1)
    /// after writes, a truncation, a rename, an unlink and fsyncs, whole and cut after
    /// each record. `cargo test -p strata-snapshot --release -- --ignored
    /// make_intent_log_corpus`.
    #[test]
    #[ignore]
    fn make_intent_log_corpus() {
        use crate::{Ctx, InitOptions, InodeNo, SetAttr, Store};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let opts = InitOptions {
            block_size: 4096,
            compression_level: 3,
        };
        Store::init(&path, &opts).unwrap();
        let s = Store::open(&path).unwrap();
        let v = s.main();
        let ctx = Ctx {
            uid: 0,
            gid: 0,
            umask: 0,
        };
        let root = InodeNo::ROOT;
        let a = v.mknod(root, b"a", libc::S_IFREG | 0o644, 0, ctx).unwrap();
        s.sync().unwrap(); // the log's epoch is now 1
        v.write(a.ino, 0, &b"0123456789".repeat(900)).unwrap();
        v.fsync(a.ino).unwrap();
        let b = v.mknod(root, b"b", libc::S_IFREG | 0o644, 0, ctx).unwrap();
        v.write(b.ino, 5000, b"past a hole").unwrap();
        v.fsync(b.ino).unwrap();
        let set = SetAttr {
            size: Some(100),
            ..Default::default()
        };
        v.setattr(a.ino, &set).unwrap();
        v.write(a.ino, 4096, b"again").unwrap();
        v.rename(root, b"b", root, b"c", Default::default())
            .unwrap();
        v.fsync(a.ino).unwrap();
        v.unlink(root, b"c").unwrap();
        v.fsync(a.ino).unwrap();
        let log = std::fs::read(path.join(crate::intent_log::LOG_FILE)).unwrap();
        drop((v, s));
        let (records, end) = crate::intent_log::parse_records(&log, 1).unwrap();
        assert_eq!(records.len(), 4);
        let mut seeds = vec![("intent_log", log[..end as usize + 64].to_vec())];
        let mut at = 0usize;
        for r in &records {
            let mut payload = Vec::new();
            for e in r {
                crate::intent_log::record::encode_entry(e, &mut payload);
            }
            at += crate::intent_log::record::HEADER_LEN + payload.len();
            seeds.push(("intent_log", log[..at].to_vec()));
        }
        write_seeds(&seeds, 10);
    }

    /// Replaces the `real-*` files of each target's corpus with at most `per_target` of
    /// `seeds` (spread evenly over them), named by their content.
    pub(crate) fn write_seeds(seeds: &[(&str, Vec<u8>)], per_target: usize) {
        let mut by_target: std::collections::BTreeMap<&str, std::collections::BTreeSet<&[u8]>> =
            Default::default();
        for (t, b) in seeds {
            by_target.entry(t).or_default().insert(b);
        }
        for (target, all) in by_target {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            for entry in std::fs::read_dir(&dir).unwrap() {
                let p = entry.unwrap().path();
                if p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("real-")
                {
                    std::fs::remove_file(p).unwrap();
                }
            }
            let all: Vec<&[u8]> = all.into_iter().collect();
            let step = all.len().div_ceil(per_target).max(1);
            for b in all.iter().step_by(step) {
                let name = format!("real-{}", &blake3::hash(b).to_hex()[..16]);
                std::fs::write(dir.join(name), b).unwrap();
            }
            eprintln!(
                "{target}: {} seeds of {}",
                all.len().div_ceil(step),
                all.len()
            );
        }
    }

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        files.sort();
        files
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// A real input of the corpus, damaged: a byte changed (and cut there), or with
        /// random bytes appended.
        #[test]
        fn damaged_real_inputs_hold(
            target in 0usize..TARGETS.len(),
            pick in proptest::num::usize::ANY,
            at in proptest::num::usize::ANY,
            byte in proptest::num::u8::ANY,
            cut in proptest::bool::ANY,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..32),
        ) {
            let (name, run) = TARGETS[target];
            let files = corpus(name);
            let mut bytes = files[pick % files.len()].clone();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = byte;
                if cut {
                    bytes.truncate(i);
                }
            }
            bytes.extend(tail);
            run(&bytes);
        }

        #[test]
        fn targets_hold_on_random_bytes(
            sel in 0usize..TARGETS.len(),
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            (TARGETS[sel].1)(&bytes);
        }
    }
}
