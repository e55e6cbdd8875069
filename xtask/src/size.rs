//! Byte sizes as people write them on command lines and in TOML files (`128M`, `1G`, `512K`,
//! `4096`), and back again for QEMU's `-m` and for messages.
//!
//! Suffixes are binary: `K` = KiB, `M` = MiB, `G` = GiB (either case, an optional `iB`/`B`).

use anyhow::{Context, Result, bail};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Guest RAM is mapped with 2 MiB blocks, so its size must be a multiple of this.
pub const GUEST_RAM_ALIGN: u64 = 2 * MIB;

/// Parses `128M`, `1G`, `512k`, `4096` (bytes) and the like.
pub fn parse_size(text: &str) -> Result<u64> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        bail!(
            "`{text}` is not a size: write a number with an optional K, M or G suffix, e.g. 128M"
        );
    }
    let number: u64 = digits
        .parse()
        .with_context(|| format!("`{text}` is too large to be a size"))?;
    let multiplier = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => KIB,
        "M" | "MB" | "MIB" => MIB,
        "G" | "GB" | "GIB" => GIB,
        _ => bail!("`{text}` has an unknown unit `{unit}`: use K, M or G (binary: 1M = 1024K)"),
    };
    number
        .checked_mul(multiplier)
        .with_context(|| format!("`{text}` is too large to be a size"))
}

/// Parses the size of a guest's RAM: non-zero and a multiple of 2 MiB.
pub fn parse_guest_memory(text: &str) -> Result<u64> {
    let bytes = parse_size(text)?;
    if bytes == 0 {
        bail!("guest memory `{text}` is zero: give the guest some RAM, e.g. 128M");
    }
    if bytes % GUEST_RAM_ALIGN != 0 {
        bail!(
            "guest memory `{text}` ({bytes} bytes) is not a multiple of 2 MiB: Veil maps guest RAM \
             in 2 MiB blocks; try {}",
            format_size(bytes.next_multiple_of(GUEST_RAM_ALIGN))
        );
    }
    Ok(bytes)
}

/// `clap` value parser for `--mem`.
pub fn clap_guest_memory(text: &str) -> std::result::Result<u64, String> {
    parse_guest_memory(text).map_err(|e| format!("{e:#}"))
}

/// The shortest exact spelling of `bytes` with a K/M/G suffix, as QEMU's `-m` accepts it.
pub fn format_size(bytes: u64) -> String {
    match bytes {
        0 => "0".to_string(),
        b if b % GIB == 0 => format!("{}G", b / GIB),
        b if b % MIB == 0 => format!("{}M", b / MIB),
        b if b % KIB == 0 => format!("{}K", b / KIB),
        b => b.to_string(),
    }
}

/// A size for people to read: `812 bytes`, `14.2 KiB`, `29.8 MiB`.
pub fn human(bytes: u64) -> String {
    // Sizes here are far below 2^53, so f64 is exact enough for one decimal.
    let b = bytes as f64;
    if bytes < KIB {
        format!("{bytes} bytes")
    } else if bytes < MIB {
        format!("{:.1} KiB", b / KIB as f64)
    } else if bytes < GIB {
        format!("{:.1} MiB", b / MIB as f64)
    } else {
        format!("{:.2} GiB", b / GIB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512K").unwrap(), 512 * KIB);
        assert_eq!(parse_size("512k").unwrap(), 512 * KIB);
        assert_eq!(parse_size("128M").unwrap(), 128 * MIB);
        assert_eq!(parse_size("128MiB").unwrap(), 128 * MIB);
        assert_eq!(parse_size(" 2G ").unwrap(), 2 * GIB);
        assert_eq!(parse_size("1g").unwrap(), GIB);
        assert_eq!(parse_size("0").unwrap(), 0);
    }

    #[test]
    fn rejects_malformed_sizes() {
        for bad in [
            "",
            "M",
            "12X",
            "1.5G",
            "-4M",
            "12 M M",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(
            parse_size("17179869184G").is_err(),
            "overflow must be caught"
        );
    }

    #[test]
    fn guest_memory_must_be_2mib_multiple() {
        assert_eq!(parse_guest_memory("128M").unwrap(), 128 * MIB);
        assert_eq!(parse_guest_memory("2M").unwrap(), 2 * MIB);
        assert_eq!(parse_guest_memory("4096K").unwrap(), 4 * MIB);
        let err = format!("{:#}", parse_guest_memory("3M").unwrap_err());
        assert!(
            err.contains("multiple of 2 MiB") && err.contains("try 4M"),
            "{err}"
        );
        assert!(parse_guest_memory("0").is_err());
        assert!(parse_guest_memory("1K").is_err());
    }

    #[test]
    fn formats_exactly() {
        assert_eq!(format_size(GIB), "1G");
        assert_eq!(format_size(1536 * MIB), "1536M");
        assert_eq!(format_size(3 * KIB), "3K");
        assert_eq!(format_size(1000), "1000");
        for n in [MIB, 640 * MIB, 5 * GIB, 12 * KIB, 77] {
            assert_eq!(parse_size(&format_size(n)).unwrap(), n);
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(812), "812 bytes");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(30 * MIB + MIB / 2), "30.5 MiB");
        assert_eq!(human(2 * GIB), "2.00 GiB");
    }
}
