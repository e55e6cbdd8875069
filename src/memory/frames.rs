//! Host physical memory: which ranges are free, and the page-frame allocator that hands them out.
//!
//! At boot the free ranges are computed purely ([`free_ranges`]): the DTB's memory minus Veil's
//! image, the DTB itself, the VM package and every firmware reservation. The heap takes the first
//! large-enough piece ([`take_block`]); the rest goes to a buddy allocator of 4 KiB frames from
//! which VMs get their RAM, naturally aligned.

use super::{PAGE_SIZE, align_down, align_up};
use crate::board::discovery::{Region, RegionList};
use buddy_system_allocator::FrameAllocator;
use spin::Mutex;

/// How many free ranges Veil tracks at boot (memory regions split by reservations).
pub const MAX_FREE_RANGES: usize = 32;
pub type FreeRanges = RegionList<MAX_FREE_RANGES>;

/// The memory in `memory` that is in none of `reserved`, page-aligned inwards.
/// Ranges are returned in address order of `memory`; ranges that would be empty are dropped.
pub fn free_ranges(memory: &[Region], reserved: &[Region]) -> FreeRanges {
    let mut out = FreeRanges::new();
    for mem in memory {
        let Some(start) = align_up(mem.base, PAGE_SIZE) else {
            continue;
        };
        let end = align_down(mem.base.saturating_add(mem.size), PAGE_SIZE);
        if start < end {
            subtract_into(
                Region {
                    base: start,
                    size: end - start,
                },
                reserved,
                &mut out,
            );
        }
    }
    out
}

/// Adds the parts of `range` not covered by any of `holes` to `out`.
fn subtract_into(range: Region, holes: &[Region], out: &mut FreeRanges) {
    // Walk the range left to right: find the lowest hole that overlaps the remaining part.
    let mut cursor = range.base;
    let end = range.base + range.size;
    while cursor < end {
        let next_hole = holes
            .iter()
            .filter(|h| h.size != 0)
            .map(|h| {
                let h_start = align_down(h.base, PAGE_SIZE);
                let h_end = align_up(h.base.saturating_add(h.size), PAGE_SIZE).unwrap_or(u64::MAX);
                (h_start, h_end)
            })
            .filter(|&(h_start, h_end)| h_end > cursor && h_start < end)
            .min_by_key(|&(h_start, _)| h_start);
        match next_hole {
            Some((h_start, h_end)) => {
                if h_start > cursor {
                    // A full list only loses free memory, never hands out reserved memory.
                    let _ = out.push(Region {
                        base: cursor,
                        size: h_start - cursor,
                    });
                }
                cursor = cursor.max(h_end);
            }
            None => {
                let _ = out.push(Region {
                    base: cursor,
                    size: end - cursor,
                });
                break;
            }
        }
    }
}

/// Removes `size` bytes aligned to `align` from the first free range that can give them.
pub fn take_block(free: &mut FreeRanges, size: u64, align: u64) -> Option<u64> {
    let mut result = None;
    let mut rest = FreeRanges::new();
    for r in free.iter() {
        if result.is_none() {
            if let Some(start) = align_up(r.base, align) {
                if start.checked_add(size).is_some_and(|e| e <= r.end()) {
                    result = Some(start);
                    let _ = rest.push(Region {
                        base: r.base,
                        size: start - r.base,
                    });
                    let _ = rest.push(Region {
                        base: start + size,
                        size: r.end() - start - size,
                    });
                    continue;
                }
            }
        }
        let _ = rest.push(*r);
    }
    let mut cleaned = FreeRanges::new();
    for r in rest.iter().filter(|r| r.size != 0) {
        let _ = cleaned.push(*r);
    }
    *free = cleaned;
    result
}

/// A buddy allocator of 4 KiB frames; blocks of up to 2^27 frames (512 GiB).
pub type Frames = FrameAllocator<28>;

/// The host's frames.
static FRAMES: Mutex<Frames> = Mutex::new(FrameAllocator::new());

/// Gives the free ranges to the frame allocator. Needs the heap (its free lists allocate).
pub fn init(free: &FreeRanges) {
    add_ranges(&mut FRAMES.lock(), free);
}

/// Allocates contiguous memory from the host's frames (see [`alloc_contiguous_in`]).
pub fn alloc_contiguous(size: u64, align: u64) -> Option<u64> {
    alloc_contiguous_in(&mut FRAMES.lock(), size, align)
}

/// Allocates memory as blocks from the host's frames (see [`alloc_blocks_in`]).
pub fn alloc_blocks(size: u64, min_block: u64) -> Option<alloc::vec::Vec<(u64, u64)>> {
    alloc_blocks_in(&mut FRAMES.lock(), size, min_block)
}

/// Gives memory back to the host's frames.
pub fn free_contiguous(base: u64, size: u64) {
    free_in(&mut FRAMES.lock(), base, size)
}

fn add_ranges(frames: &mut Frames, free: &FreeRanges) {
    for r in free.iter() {
        frames.add_frame(
            (r.base / PAGE_SIZE) as usize,
            (r.end() / PAGE_SIZE) as usize,
        );
    }
}

/// Allocates `size` bytes (a multiple of 4 KiB) of physically contiguous memory aligned to
/// `align` (a power of two, at least 4 KiB). The buddy allocator works in powers of two; the
/// unused tail of the block goes straight back.
pub fn alloc_contiguous_in(frames: &mut Frames, size: u64, align: u64) -> Option<u64> {
    if size == 0 || size % PAGE_SIZE != 0 || !align.is_power_of_two() || align < PAGE_SIZE {
        return None;
    }
    let count = (size / PAGE_SIZE) as usize;
    let block = count.next_power_of_two().max((align / PAGE_SIZE) as usize);
    let start = frames.alloc(block)?;
    free_frames(frames, start + count, start + block);
    Some(start as u64 * PAGE_SIZE)
}

/// Allocates `size` bytes (a multiple of `min_block`, a power of two) as few naturally aligned
/// blocks as possible, largest first: a big guest's RAM need not be one block, and the buddy
/// allocator cannot always give one (a 1 GiB block needs 1 GiB alignment). Returns (base,
/// size) pairs, or `None` (and nothing allocated) if the memory is not there.
pub fn alloc_blocks_in(
    frames: &mut Frames,
    size: u64,
    min_block: u64,
) -> Option<alloc::vec::Vec<(u64, u64)>> {
    if size == 0 || !min_block.is_power_of_two() || min_block < PAGE_SIZE || size % min_block != 0 {
        return None;
    }
    let mut blocks = alloc::vec::Vec::new();
    let mut remaining = size;
    let mut block = 1u64 << (63 - remaining.leading_zeros());
    while remaining > 0 {
        block = block.min(1u64 << (63 - remaining.leading_zeros()));
        match alloc_contiguous_in(frames, block, block) {
            Some(base) => {
                blocks.push((base, block));
                remaining -= block;
            }
            None if block > min_block => block /= 2,
            None => {
                for &(base, size) in &blocks {
                    free_in(frames, base, size);
                }
                return None;
            }
        }
    }
    Some(blocks)
}

/// Gives back memory from [`alloc_contiguous_in`] or [`alloc_blocks_in`].
pub fn free_in(frames: &mut Frames, base: u64, size: u64) {
    let first = (base / PAGE_SIZE) as usize;
    free_frames(frames, first, first + (size / PAGE_SIZE) as usize);
}

/// Returns frames `[start, end)` in naturally aligned power-of-two pieces, as the buddy
/// allocator needs them.
fn free_frames(frames: &mut Frames, start: usize, end: usize) {
    let mut cursor = start;
    while cursor < end {
        let piece = (cursor & cursor.wrapping_neg()).min(prev_power_of_two(end - cursor));
        frames.dealloc(cursor, piece);
        cursor += piece;
    }
}

fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: u64, size: u64) -> Region {
        Region { base, size }
    }

    #[test]
    fn reservations_are_cut_out_page_aligned() {
        let mem = [r(0x4000_0000, 0x4000_0000)];
        let reserved = [
            r(0x4008_0000, 0x12345),   // Veil's image, unaligned end
            r(0x4800_0000, 0x10_0000), // the DTB
            r(0x4400_0100, 0x10),      // a tiny unaligned reservation
        ];
        let free = free_ranges(&mem, &reserved);
        assert_eq!(
            free.as_slice(),
            &[
                r(0x4000_0000, 0x8_0000),
                r(0x4009_3000, 0x4400_0000 - 0x4009_3000),
                r(0x4400_1000, 0x4800_0000 - 0x4400_1000),
                r(0x4810_0000, 0x8000_0000 - 0x4810_0000),
            ]
        );
    }

    #[test]
    fn overlapping_and_outside_reservations() {
        let mem = [r(0x1000, 0x9000), r(0x2_0000, 0x1000)];
        let reserved = [
            r(0x0, 0x2000),
            r(0x1800, 0x1000),
            r(0x9000, 0x10_0000),
            r(0x5000, 0),
        ];
        let free = free_ranges(&mem, &reserved);
        assert_eq!(free.as_slice(), &[r(0x3000, 0x6000)]);
    }

    #[test]
    fn unaligned_memory_is_trimmed() {
        let free = free_ranges(&[r(0x1001, 0x2000)], &[]);
        assert_eq!(free.as_slice(), &[r(0x2000, 0x1000)]);
        assert!(free_ranges(&[r(0x1001, 0x10)], &[]).is_empty());
        assert!(free_ranges(&[r(u64::MAX - 0x10, 0x10)], &[]).is_empty());
    }

    #[test]
    fn take_block_respects_alignment_and_splits() {
        let mut free = free_ranges(&[r(0x4000_1000, 0x100_0000)], &[]);
        let got = take_block(&mut free, 0x20_0000, 0x20_0000).unwrap();
        assert_eq!(got, 0x4020_0000);
        assert_eq!(
            free.as_slice(),
            &[
                r(0x4000_1000, 0x1f_f000),
                r(0x4040_0000, 0x4100_1000 - 0x4040_0000)
            ]
        );
        assert_eq!(take_block(&mut free, 0x1_0000_0000, 0x1000), None);
    }

    fn frames_over(ranges: &[Region]) -> Frames {
        let mut frames = Frames::new();
        add_ranges(&mut frames, &free_ranges(ranges, &[]));
        frames
    }

    #[test]
    fn frame_allocator_returns_aligned_blocks_and_tails() {
        let mut frames = frames_over(&[r(0x8000_0000, 0x1000_0000)]);
        let a = alloc_contiguous_in(&mut frames, 3 << 20, 2 << 20).unwrap();
        assert_eq!(a % (2 << 20), 0);
        // The 1 MiB tail of the 4 MiB block went back: a 1 MiB allocation fits right after.
        let b = alloc_contiguous_in(&mut frames, 1 << 20, 1 << 20).unwrap();
        assert_eq!(b, a + (3 << 20));
        assert_eq!(alloc_contiguous_in(&mut frames, 0, 4096), None);
        assert_eq!(alloc_contiguous_in(&mut frames, 4097, 4096), None);
        free_in(&mut frames, a, 3 << 20);
        free_in(&mut frames, b, 1 << 20);
        assert_eq!(alloc_contiguous_in(&mut frames, 4 << 20, 4 << 20), Some(a));
    }

    #[test]
    fn blocks_when_no_single_block_fits() {
        // 6 MiB at an address only 2 MiB aligned: no 4 MiB-aligned 4 MiB block exists whole.
        let mut frames = frames_over(&[r(0x1_0020_0000, 0x60_0000)]);
        let blocks = alloc_blocks_in(&mut frames, 6 << 20, 2 << 20).unwrap();
        assert_eq!(blocks.iter().map(|b| b.1).sum::<u64>(), 6 << 20);
        assert!(blocks.iter().all(|&(base, size)| base % size == 0));
        assert!(
            blocks
                .iter()
                .all(|&(base, size)| base >= 0x1_0020_0000 && base + size <= 0x1_0080_0000)
        );
        assert_eq!(
            alloc_blocks_in(&mut frames, 2 << 20, 2 << 20),
            None,
            "everything is taken"
        );
        assert_eq!(
            alloc_blocks_in(&mut frames, 3 << 20, 2 << 20),
            None,
            "not a multiple of the block"
        );
        for (base, size) in blocks {
            free_in(&mut frames, base, size);
        }
        // A failed request gives back what it took on the way.
        assert_eq!(alloc_blocks_in(&mut frames, 8 << 20, 2 << 20), None);
        assert!(alloc_blocks_in(&mut frames, 6 << 20, 2 << 20).is_some());
    }
}
