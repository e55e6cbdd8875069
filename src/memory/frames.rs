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
        let Some(start) = align_up(mem.base, PAGE_SIZE) else { continue };
        let end = align_down(mem.base.saturating_add(mem.size), PAGE_SIZE);
        if start < end {
            subtract_into(Region { base: start, size: end - start }, reserved, &mut out);
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
                    let _ = out.push(Region { base: cursor, size: h_start - cursor });
                }
                cursor = cursor.max(h_end);
            }
            None => {
                let _ = out.push(Region { base: cursor, size: end - cursor });
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
                    let _ = rest.push(Region { base: r.base, size: start - r.base });
                    let _ = rest.push(Region { base: start + size, size: r.end() - start - size });
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

/// Buddy allocator of 4 KiB frames; 2^27 frames = 512 GiB per block at most.
static FRAMES: Mutex<FrameAllocator<28>> = Mutex::new(FrameAllocator::new());

/// Gives the free ranges to the frame allocator. Needs the heap (its free lists allocate).
pub fn init(free: &FreeRanges) {
    let mut frames = FRAMES.lock();
    for r in free.iter() {
        let first = (r.base / PAGE_SIZE) as usize;
        let last = (r.end() / PAGE_SIZE) as usize;
        frames.add_frame(first, last);
    }
}

/// Allocates `size` bytes (a multiple of 4 KiB) of physically contiguous memory aligned to
/// `align` (a power of two, at least 4 KiB). The buddy allocator works in powers of two; the
/// unused tail of the block goes straight back.
pub fn alloc_contiguous(size: u64, align: u64) -> Option<u64> {
    if size == 0 || size % PAGE_SIZE != 0 || !align.is_power_of_two() || align < PAGE_SIZE {
        return None;
    }
    let count = (size / PAGE_SIZE) as usize;
    let align_frames = (align / PAGE_SIZE) as usize;
    let block = count.next_power_of_two().max(align_frames);
    let mut frames = FRAMES.lock();
    let start = frames.alloc(block)?;
    // Return [start + count, start + block) in naturally aligned power-of-two pieces.
    let mut cursor = start + count;
    let end = start + block;
    while cursor < end {
        let piece = (cursor & cursor.wrapping_neg()).min(prev_power_of_two(end - cursor));
        frames.dealloc(cursor, piece);
        cursor += piece;
    }
    Some(start as u64 * PAGE_SIZE)
}

/// Gives back memory from [`alloc_contiguous`].
pub fn free_contiguous(base: u64, size: u64) {
    let mut frames = FRAMES.lock();
    let mut cursor = (base / PAGE_SIZE) as usize;
    let end = cursor + (size / PAGE_SIZE) as usize;
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
            r(0x4008_0000, 0x12345),     // Veil's image, unaligned end
            r(0x4800_0000, 0x10_0000),   // the DTB
            r(0x4400_0100, 0x10),        // a tiny unaligned reservation
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
        let reserved = [r(0x0, 0x2000), r(0x1800, 0x1000), r(0x9000, 0x10_0000), r(0x5000, 0)];
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
            &[r(0x4000_1000, 0x1f_f000), r(0x4040_0000, 0x4100_1000 - 0x4040_0000)]
        );
        assert_eq!(take_block(&mut free, 0x1_0000_0000, 0x1000), None);
    }

    #[test]
    fn frame_allocator_returns_aligned_blocks_and_tails() {
        init(&free_ranges(&[r(0x8000_0000, 0x1000_0000)], &[]));
        let a = alloc_contiguous(3 << 20, 2 << 20).unwrap();
        assert_eq!(a % (2 << 20), 0);
        // The 1 MiB tail of the 4 MiB block went back: a 1 MiB allocation fits right after.
        let b = alloc_contiguous(1 << 20, 1 << 20).unwrap();
        assert_eq!(b, a + (3 << 20));
        assert_eq!(alloc_contiguous(0, 4096), None);
        assert_eq!(alloc_contiguous(4097, 4096), None);
        free_contiguous(a, 3 << 20);
        free_contiguous(b, 1 << 20);
        assert_eq!(alloc_contiguous(4 << 20, 4 << 20), Some(a));
    }
}
