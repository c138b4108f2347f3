//! Deterministic test data (random, compressible, zeros, mixed), checksums, and byte
//! comparisons that name the first differing offset instead of dumping buffers.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// splitmix64: small, fast, deterministic; good enough to defeat compression and dedup.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// A generator seeded from the clock and pid, for randomised tests (print the seed).
    pub fn seed_from_time() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(high > low);
        low + self.next_u64() % (high - low)
    }

    pub fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// `len` incompressible bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    Rng::new(seed).fill(&mut data);
    data
}

/// `len` bytes of log-like text that compresses well but is not all the same.
pub fn compressible_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut data = Vec::with_capacity(len + 128);
    let mut line = 0u64;
    while data.len() < len {
        let level = ["INFO", "WARN", "DEBUG"][(rng.next_u64() % 3) as usize];
        let _ = writeln!(
            data,
            "2026-11-23T12:00:{:02} {level} strata::test line {line} value={}",
            line % 60,
            rng.next_u64() % 1000
        );
        line += 1;
    }
    data.truncate(len);
    data
}

/// Chunk `index` of a mixed data set: random, compressible, zeros or half-and-half.
pub fn mixed_chunk(seed: u64, index: u64, len: usize) -> Vec<u8> {
    let chunk_seed = seed.wrapping_mul(1_000_003).wrapping_add(index);
    match index % 4 {
        0 => random_bytes(chunk_seed, len),
        1 => compressible_bytes(chunk_seed, len),
        2 if index % 8 == 2 => vec![0u8; len],
        _ => {
            let mut data = random_bytes(chunk_seed, len / 2);
            data.extend_from_slice(&compressible_bytes(chunk_seed, len - len / 2));
            data
        }
    }
}

/// blake3 of `data`, as hex.
pub fn checksum(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Panics naming the first differing offset (and the lengths) if `actual != expected`.
#[track_caller]
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: contents differ: length {} vs expected {}, first difference at offset {first}",
        actual.len(),
        expected.len()
    );
}

/// Creates (or truncates) `path` with `data` and fsyncs it.
pub fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(data)?;
    file.sync_all()
}
