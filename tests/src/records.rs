//! The numbered 4 KiB records of the crash test: record `n` is fully determined by `n`,
//! so a reader can check any prefix of a file without knowing what was written.

/// Size of one record.
pub const RECORD_SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"STRATREC";

/// Record `n`: magic, `n` little-endian, then bytes derived from `n`.
pub fn record(n: u64) -> Vec<u8> {
    let mut data = vec![0u8; RECORD_SIZE];
    data[..8].copy_from_slice(MAGIC);
    data[8..16].copy_from_slice(&n.to_le_bytes());
    crate::data::Rng::new(n.wrapping_mul(0x2545_F491_4F6C_DD1D)).fill(&mut data[16..]);
    data
}

/// Checks that `data` starts with records `0..count` intact; the error names the first bad one.
pub fn check_records(data: &[u8], count: u64) -> Result<(), String> {
    let needed = count as usize * RECORD_SIZE;
    if data.len() < needed {
        return Err(format!(
            "file has {} bytes, but {count} acknowledged records need {needed}",
            data.len()
        ));
    }
    for n in 0..count {
        let start = n as usize * RECORD_SIZE;
        if data[start..start + RECORD_SIZE] != record(n)[..] {
            let header = &data[start..start + 16];
            return Err(format!(
                "record {n} (offset {start}) is damaged; header bytes {header:02x?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_and_checked() {
        assert_eq!(record(7), record(7));
        assert_ne!(record(7), record(8));
        let mut data: Vec<u8> = (0..5).flat_map(record).collect();
        assert_eq!(check_records(&data, 5), Ok(()));
        assert_eq!(check_records(&data, 3), Ok(()));
        assert!(check_records(&data, 6)
            .unwrap_err()
            .contains("acknowledged records need"));
        data[2 * RECORD_SIZE + 100] ^= 1;
        assert!(check_records(&data, 5)
            .unwrap_err()
            .starts_with("record 2 "));
        assert_eq!(check_records(&data, 2), Ok(()));
    }
}
