//! Data comes back exactly: a 64 MiB file of mixed compressible, incompressible and zero
//! data, written in odd-sized pieces, read back whole and at random offsets before and
//! after a remount; `strata stats --json` shows identical data stored once; `strata verify`
//! is clean afterwards.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use strata_tests::data::{
    assert_same_bytes, checksum, mixed_chunk, random_bytes, write_synced, Rng,
};
use strata_tests::{strata, TestStore};

const MIB: usize = 1 << 20;
const SIZE_MIB: u64 = 64;
const SEED: u64 = 0x5eed;

fn expected_chunk(index: u64) -> Vec<u8> {
    mixed_chunk(SEED, index, MIB)
}

/// The whole expected file.
fn expected_file() -> Vec<u8> {
    (0..SIZE_MIB).flat_map(expected_chunk).collect()
}

/// Reads `path` whole, MiB by MiB, comparing each with its checksum.
fn check_whole(path: &std::path::Path, sums: &[String], expected: &[u8]) {
    let mut file = File::open(path).unwrap();
    assert_eq!(file.metadata().unwrap().len(), SIZE_MIB * MIB as u64);
    let mut buffer = vec![0u8; MIB];
    for (index, sum) in sums.iter().enumerate() {
        file.read_exact(&mut buffer)
            .unwrap_or_else(|err| panic!("read MiB {index}: {err}"));
        if &checksum(&buffer) != sum {
            assert_same_bytes(
                &buffer,
                &expected[index * MIB..(index + 1) * MIB],
                &format!("MiB {index}"),
            );
        }
    }
    let mut extra = [0u8; 1];
    assert_eq!(file.read(&mut extra).unwrap(), 0, "data past the end");
}

/// Reads 200 random ranges, some crossing block and MiB boundaries.
fn check_random_ranges(path: &std::path::Path, seed: u64, expected: &[u8]) {
    let file = File::open(path).unwrap();
    let mut rng = Rng::new(seed);
    let total = SIZE_MIB * MIB as u64;
    for _ in 0..200 {
        let len = rng.range(1, 300_000);
        let offset = rng.range(0, total - len);
        let mut got = vec![0u8; len as usize];
        file.read_exact_at(&mut got, offset).unwrap();
        let range = offset as usize..(offset + len) as usize;
        assert_same_bytes(&got, &expected[range], &format!("range {offset}+{len}"));
    }
}

#[test]
fn large_mixed_file_survives_remount() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let path = ts.path("large.bin");
    let expected = expected_file();
    let mut sums = Vec::new();
    {
        let mut file = File::create(&path).unwrap();
        // Odd write sizes so that writes straddle block boundaries.
        let mut pending = Vec::new();
        let mut rng = Rng::new(1);
        for index in 0..SIZE_MIB {
            let chunk = &expected[index as usize * MIB..(index as usize + 1) * MIB];
            sums.push(checksum(chunk));
            pending.extend_from_slice(chunk);
            while pending.len() > 2 * MIB {
                let n = rng.range(1, MIB as u64 + 4097) as usize;
                file.write_all(&pending[..n]).unwrap();
                pending.drain(..n);
            }
        }
        file.write_all(&pending).unwrap();
        file.sync_all().unwrap();
    }
    check_whole(&path, &sums, &expected);
    check_random_ranges(&path, 2, &expected);
    mount.unmount();

    let mount = ts.mount();
    check_whole(&path, &sums, &expected);
    check_random_ranges(&path, 3, &expected);
    // Overwrite a range in the middle and read it back after another remount.
    let patch = random_bytes(4, 3 * MIB + 123);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&patch, 10 * MIB as u64 + 77).unwrap();
    file.sync_all().unwrap();
    drop(file);
    mount.unmount();

    let mount = ts.mount();
    let file = File::open(&path).unwrap();
    let mut got = vec![0u8; patch.len() + 200];
    file.read_exact_at(&mut got, 10 * MIB as u64 - 23).unwrap();
    // The 100 bytes before the patch: the last 23 of MiB 9 and the first 77 of MiB 10.
    let start = 10 * MIB - 23;
    assert_same_bytes(
        &got[..100],
        &expected[start..start + 100],
        "bytes before the patch",
    );
    assert_same_bytes(&got[100..100 + patch.len()], &patch, "the patch");
    let after = start + 100 + patch.len();
    assert_same_bytes(
        &got[100 + patch.len()..],
        &expected[after..after + 100],
        "bytes after the patch",
    );
    drop(file);
    mount.unmount();

    let stats = ts.stats_json();
    let logical = stats["logical_bytes"].as_u64().expect("logical_bytes");
    let stored = stats["stored_bytes"].as_u64().expect("stored_bytes");
    assert!(
        logical >= 56 * MIB as u64,
        "logical_bytes {logical} for a 64 MiB file (8 MiB of zeros)"
    );
    assert!(
        stored < logical,
        "compression and zero blocks should make stored ({stored}) < logical ({logical})"
    );
    ts.assert_verify_clean();
}

#[test]
fn stats_show_dedup_of_identical_files() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let data = random_bytes(77, 8 * MIB);
    write_synced(&ts.path("one.bin"), &data).unwrap();
    fs::create_dir(ts.path("dir")).unwrap();
    write_synced(&ts.path("dir/two.bin"), &data).unwrap();
    mount.unmount();

    let stats = ts.stats_json();
    let field = |name: &str| {
        stats[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} missing from {stats}"))
    };
    let ratio = |name: &str| {
        stats[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} missing from {stats}"))
    };
    assert!(
        field("logical_bytes") >= 16 * MIB as u64,
        "logical_bytes: {stats}"
    );
    assert!(
        field("stored_bytes") < 9 * MIB as u64,
        "two copies stored twice? {stats}"
    );
    assert!(
        field("stored_bytes") >= 7 * MIB as u64,
        "8 MiB of random data cannot shrink: {stats}"
    );
    assert!(ratio("dedup_ratio") >= 1.8, "dedup_ratio: {stats}");
    assert!(
        field("files") >= 2 && field("directories") >= 1,
        "counts: {stats}"
    );
    assert!(
        field("blocks") > 0 && field("pack_files") > 0,
        "counts: {stats}"
    );
    assert_eq!(stats["store"].as_str(), ts.store.to_str());

    let human = strata(["stats".as_ref(), ts.store.as_os_str()]);
    human.assert_success();
    assert!(
        human.stdout.contains("dedup ratio") && human.stdout.contains("MiB"),
        "{}",
        human.stdout
    );
    let exact = strata(["stats".as_ref(), ts.store.as_os_str(), "--bytes".as_ref()]);
    exact.assert_success();
    assert!(
        exact.stdout.contains(&field("logical_bytes").to_string()),
        "{}",
        exact.stdout
    );
    ts.assert_verify_clean();
    let verify = ts.verify();
    assert!(
        verify.stdout.contains("clean"),
        "verify summary: {}",
        verify.stdout
    );
    assert!(
        verify.stderr.is_empty(),
        "verify printed on stderr without a terminal: {}",
        verify.stderr
    );
}
