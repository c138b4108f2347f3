//! Byte sizes on the command line and in output: parsing `16K`, `64KiB`, `1M`, `65536`
//! (binary units: K = 1024), the block-size rule (a power of two from 4 KiB to 1 MiB),
//! and human-readable formatting (`1.5 GiB`).

/// Smallest block size a store may have.
pub const MIN_BLOCK_SIZE: u64 = 4 << 10;
/// Largest block size a store may have.
pub const MAX_BLOCK_SIZE: u64 = 1 << 20;
/// Block size of `strata init` without `--block-size`.
pub const DEFAULT_BLOCK_SIZE: u32 = 32 << 10;

/// Parses a byte count: digits with an optional unit `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
/// `G`/`GB`/`GiB` (case-insensitive, all binary). `None` if it is not one or overflows.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return None;
    }
    let number: u64 = text[..digits_end].parse().ok()?;
    let multiplier: u64 = match text[digits_end..]
        .trim_start()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// Parses and checks a block size; the error names the value and the allowed range.
pub fn parse_block_size(text: &str) -> Result<u32, String> {
    match parse_size(text) {
        Some(n) if n.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&n) => {
            Ok(n as u32)
        }
        _ => Err(format!(
            "invalid block size '{text}': must be a power of two from 4K to 1M \
             (4K, 8K, 16K, 32K, 64K, 128K, 256K, 512K or 1M)"
        )),
    }
}

/// Short form of a size that is a whole number of a binary unit: `64K`, `1M`, `4096`.
pub fn format_short(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (unit, suffix) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Human-readable size: `512 B`, `64 KiB`, `1.5 GiB` (binary units, at most one decimal).
pub fn format_human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let rounded = format!("{value:.1}");
    let rounded = rounded.strip_suffix(".0").unwrap_or(&rounded);
    format!("{rounded} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed_sizes() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("16K"), Some(16384));
        assert_eq!(parse_size("16k"), Some(16384));
        assert_eq!(parse_size("32KiB"), Some(32768));
        assert_eq!(parse_size("64KB"), Some(65536));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("100b"), Some(100));
    }

    #[test]
    fn rejects_malformed_sizes() {
        for bad in [
            "",
            "K",
            "abc",
            "1.5M",
            "-4K",
            "4X",
            "4KK",
            "99999999999999999999",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse_size("18446744073709551615G"), None);
    }

    #[test]
    fn block_size_must_be_power_of_two_in_range() {
        assert_eq!(parse_block_size("4K"), Ok(4096));
        assert_eq!(parse_block_size("16K"), Ok(16384));
        assert_eq!(parse_block_size("32K"), Ok(32768));
        assert_eq!(parse_block_size("65536"), Ok(65536));
        assert_eq!(parse_block_size("1M"), Ok(1 << 20));
        for bad in ["2K", "3K", "48K", "2M", "0", "abc", "4095"] {
            let err = parse_block_size(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
            assert!(err.contains("4K") && err.contains("1M"), "{err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_short(65536), "64K");
        assert_eq!(format_short(1 << 20), "1M");
        assert_eq!(format_short(4097), "4097");
        assert_eq!(format_human(0), "0 B");
        assert_eq!(format_human(1023), "1023 B");
        assert_eq!(format_human(1024), "1 KiB");
        assert_eq!(format_human(1536), "1.5 KiB");
        assert_eq!(format_human(64 << 20), "64 MiB");
        assert_eq!(format_human(3 << 29), "1.5 GiB");
    }
}
