//! Removing FDT_NOP tokens from the host DTB, in place — pure, host-tested.
//!
//! Loaders that delete nodes from a DTB (QEMU does for raspi4b; U-Boot and firmware may) leave
//! FDT_NOP tokens where the nodes were. They are legal, but the `fdt` crate and Veil's own
//! readers refuse them, so the boot CPU squeezes them out of the structure block first: the
//! blob is Veil's to change (it is reserved from the allocator and never shown to a guest).

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

fn be32(blob: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(blob.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Removes every FDT_NOP token of the structure block, moving what follows down and shrinking
/// `size_dt_struct`. Returns how many were removed; `None` (and the blob unchanged in meaning)
/// if the blob is not a DTB this can walk — the caller's parser then says what is wrong.
pub fn strip_nops(blob: &mut [u8]) -> Option<usize> {
    if be32(blob, 0)? != FDT_MAGIC {
        return None;
    }
    let start = be32(blob, 8)? as usize;
    let size = be32(blob, 36)? as usize;
    let end = start.checked_add(size)?;
    if end > blob.len() {
        return None;
    }
    let (mut read, mut write, mut removed) = (start, start, 0);
    while read < end {
        let token = be32(blob, read)?;
        let len = match token {
            FDT_BEGIN_NODE => {
                let name_end = blob.get(read + 4..end)?.iter().position(|&b| b == 0)?;
                4 + (name_end + 1).next_multiple_of(4)
            }
            FDT_PROP => 12 + (be32(blob, read + 4)? as usize).next_multiple_of(4),
            FDT_END_NODE | FDT_NOP => 4,
            FDT_END => 4,
            _ => return None,
        };
        let next = read.checked_add(len).filter(|&n| n <= end)?;
        if token == FDT_NOP {
            removed += 1;
        } else {
            blob.copy_within(read..next, write);
            write += len;
        }
        read = next;
        if token == FDT_END {
            break;
        }
    }
    let new_size = (size - (read - write)) as u32;
    blob[36..40].copy_from_slice(&new_size.to_be_bytes());
    Some(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// A minimal DTB: header, structure block of `tokens`, one strings-block name "a".
    fn dtb(tokens: &[u32]) -> Vec<u8> {
        let structure: Vec<u8> = tokens.iter().flat_map(|t| t.to_be_bytes()).collect();
        let strings = b"a\0";
        let off_struct = 40u32;
        let off_strings = off_struct + structure.len() as u32;
        let total = off_strings + strings.len() as u32;
        let header = [FDT_MAGIC, total, off_struct, off_strings, 40, 17, 16, 0, strings.len() as u32, structure.len() as u32];
        let mut blob: Vec<u8> = header.iter().flat_map(|w| w.to_be_bytes()).collect();
        blob.extend(structure);
        blob.extend(strings);
        blob
    }

    // Root node "" (name = NUL + padding) with one 4-byte property "a".
    const ROOT: [u32; 2] = [FDT_BEGIN_NODE, 0];
    const PROP: [u32; 4] = [FDT_PROP, 4, 0, 0x1234_5678];

    #[test]
    fn nops_are_squeezed_out() {
        let clean: Vec<u32> = [&ROOT[..], &PROP[..], &[FDT_END_NODE, FDT_END]].concat();
        let noisy: Vec<u32> = [&[FDT_NOP][..], &ROOT[..], &[FDT_NOP, FDT_NOP], &PROP[..], &[FDT_NOP, FDT_END_NODE, FDT_END]].concat();
        let mut blob = dtb(&noisy);
        assert_eq!(strip_nops(&mut blob), Some(4));
        let expected = dtb(&clean);
        // Same structure (the strings block stays where it was, after a gap).
        let size = u32::from_be_bytes(blob[36..40].try_into().unwrap()) as usize;
        assert_eq!(size, clean.len() * 4);
        assert_eq!(&blob[40..40 + size], &expected[40..40 + size]);
        let mut again = blob.clone();
        assert_eq!(strip_nops(&mut again), Some(0));
        assert_eq!(again, blob);
    }

    #[test]
    fn real_dtbs_are_left_alone() {
        for fixture in [&include_bytes!("../../tests/fixtures/qemu-virt-gicv3.dtb")[..], &include_bytes!("../../tests/fixtures/bcm2711-rpi-4-b.dtb")[..]] {
            let mut blob = fixture.to_vec();
            assert_eq!(strip_nops(&mut blob), Some(0));
            assert_eq!(blob, fixture);
        }
    }

    #[test]
    fn hostile_blobs_do_not_panic() {
        let base: Vec<u32> = [&ROOT[..], &PROP[..], &[FDT_END_NODE, FDT_END]].concat();
        let good = dtb(&base);
        for cut in 0..good.len() {
            let mut blob = good[..cut].to_vec();
            let _ = strip_nops(&mut blob);
        }
        for at in 0..good.len() {
            for value in [0u8, 0xff, 0x04] {
                let mut blob = good.clone();
                blob[at] = value;
                let _ = strip_nops(&mut blob);
            }
        }
        assert_eq!(strip_nops(&mut [0u8; 8]), None);
    }
}
