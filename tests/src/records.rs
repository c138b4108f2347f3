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

/// Size of one slot record of the power-cut writer: one page, written page-aligned in one
/// call, so the kernel sends it as one request (a write call that spans pages may reach
/// the daemon as two, and a writer killed between them leaves a torn record that it
/// never acknowledged; an overwrite in place could then destroy an acknowledged one).
pub const SLOT_SIZE: usize = 4096;
const SLOT_MAGIC: &[u8; 8] = b"STRASLOT";

/// The record `version` of slot `slot`: magic, slot, version (little-endian), bytes
/// derived from both, and the first 8 bytes of the blake3 hash of everything before.
pub fn slot_record(slot: u64, version: u64) -> Vec<u8> {
    let mut data = vec![0u8; SLOT_SIZE];
    data[..8].copy_from_slice(SLOT_MAGIC);
    data[8..16].copy_from_slice(&slot.to_le_bytes());
    data[16..24].copy_from_slice(&version.to_le_bytes());
    crate::data::Rng::new(slot ^ version.rotate_left(32)).fill(&mut data[24..SLOT_SIZE - 8]);
    let sum = blake3::hash(&data[..SLOT_SIZE - 8]);
    data[SLOT_SIZE - 8..].copy_from_slice(&sum.as_bytes()[..8]);
    data
}

/// The version held by slot `slot` of `file` (a whole, intact record of that slot), or an
/// error describing what is there instead.
pub fn slot_version(file: &[u8], slot: u64) -> Result<u64, String> {
    let start = slot as usize * SLOT_SIZE;
    let Some(rec) = file.get(start..start + SLOT_SIZE) else {
        return Err(format!(
            "slot {slot} (offset {start}) is past the end ({} bytes)",
            file.len()
        ));
    };
    if &rec[..8] != SLOT_MAGIC {
        return Err(format!(
            "slot {slot} (offset {start}): no record (magic {:02x?})",
            &rec[..8]
        ));
    }
    let got_slot = u64::from_le_bytes(rec[8..16].try_into().unwrap());
    let version = u64::from_le_bytes(rec[16..24].try_into().unwrap());
    if got_slot != slot || rec != slot_record(slot, version).as_slice() {
        return Err(format!(
            "slot {slot} (offset {start}): torn or damaged record (says slot {got_slot}, version {version})"
        ));
    }
    Ok(version)
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn slot_records_check_themselves() {
        let mut file = [slot_record(0, 5), slot_record(1, 9)].concat();
        assert_eq!(slot_version(&file, 0), Ok(5));
        assert_eq!(slot_version(&file, 1), Ok(9));
        assert!(slot_version(&file, 2).unwrap_err().contains("past the end"));
        file[SLOT_SIZE + 100] ^= 1;
        assert!(slot_version(&file, 1).unwrap_err().contains("torn"));
        file[..SLOT_SIZE].copy_from_slice(&slot_record(1, 3));
        assert!(slot_version(&file, 0).unwrap_err().contains("torn"));
    }
}

/// Size of the records of the snapshot tests' writer processes: odd, so that records
/// straddle pages and blocks.
pub const ODD_SIZE: usize = 1500;
const ODD_MAGIC: &[u8; 8] = b"STRAODD!";

/// Record `n` of stream `stream` (each writer process has its own).
pub fn odd_record(stream: u64, n: u64) -> Vec<u8> {
    let mut r = vec![0u8; ODD_SIZE];
    r[..8].copy_from_slice(ODD_MAGIC);
    r[8..16].copy_from_slice(&n.to_le_bytes());
    crate::data::Rng::new(n ^ stream.rotate_left(40) ^ 0x9E37_79B9_7F4A_7C15).fill(&mut r[16..]);
    r
}

/// The number of records of `stream` that `data` holds whole from its start, and the
/// offset where the first that is not whole (or not there) begins.
pub fn leading_odd_records(data: &[u8], stream: u64) -> u64 {
    data.chunks_exact(ODD_SIZE)
        .enumerate()
        .take_while(|(n, chunk)| *chunk == odd_record(stream, *n as u64).as_slice())
        .count() as u64
}

/// Checks that `data` is exactly records `0..n` of `stream` for some `n` (appended by
/// whole write calls); returns `n`, or an error naming what is wrong.
pub fn count_odd_records(data: &[u8], stream: u64) -> Result<u64, String> {
    if !data.len().is_multiple_of(ODD_SIZE) {
        return Err(format!(
            "{} bytes: not a whole number of {ODD_SIZE}-byte records (part of a write call)",
            data.len()
        ));
    }
    let n = leading_odd_records(data, stream);
    if n as usize * ODD_SIZE != data.len() {
        return Err(format!("record {n} is not what was written"));
    }
    Ok(n)
}

#[cfg(test)]
mod odd_tests {
    use super::*;

    #[test]
    fn odd_records_are_counted_and_checked() {
        let mut data: Vec<u8> = (0..4).flat_map(|n| odd_record(3, n)).collect();
        assert_eq!(count_odd_records(&data, 3), Ok(4));
        assert!(count_odd_records(&data, 2).is_err());
        assert!(count_odd_records(&data[..100], 3).is_err());
        data[ODD_SIZE + 7] ^= 1;
        assert_eq!(leading_odd_records(&data, 3), 1);
        assert!(count_odd_records(&data, 3)
            .unwrap_err()
            .contains("record 1"));
    }
}
