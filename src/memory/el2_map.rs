//! Veil's own address space: an EL2 stage-1 identity map, built once by the boot CPU before the
//! MMU is on and shared by every CPU after.
//!
//! The tables come from a fixed pool in .bss rather than the heap: building them happens before
//! caches are on, when locks (exclusive accesses) are not reliable on real cores. The map holds
//! host RAM (Normal write-back; Veil's code read-only and executable, everything else
//! execute-never) and the few devices Veil drives itself (Device-nGnRE, execute-never). Guest RAM
//! is part of host RAM, so Veil can load images into it; guests never see this map.

use crate::board::discovery::Region;
use aarch64_paging::{
    MapError, Mapping,
    descriptor::{El23Attributes, PhysicalAddress},
    paging::{Constraints, El2, MemoryRegion, PageTable, Translation},
};
use core::ptr::NonNull;

/// MAIR_EL2 index of Device-nGnRE (see `_arch/aarch64/mmu.rs`).
pub const MAIR_INDEX_DEVICE: u64 = 0;
/// MAIR_EL2 index of Normal, inner and outer write-back, read/write-allocate.
pub const MAIR_INDEX_NORMAL: u64 = 1;

/// The root table covers 2^39 bytes from level 1, which T0SZ = 25 in TCR_EL2 must match.
pub const ROOT_LEVEL: usize = 1;
pub const VA_BITS: u64 = 39;

/// Veil's data: read-write, never executable.
pub const DATA: El23Attributes = El23Attributes::VALID
    .union(El23Attributes::ATTRIBUTE_INDEX_1)
    .union(El23Attributes::INNER_SHAREABLE)
    .union(El23Attributes::ACCESSED)
    .union(El23Attributes::XN);
/// Veil's code: read-only, executable.
pub const CODE: El23Attributes = El23Attributes::VALID
    .union(El23Attributes::ATTRIBUTE_INDEX_1)
    .union(El23Attributes::INNER_SHAREABLE)
    .union(El23Attributes::ACCESSED)
    .union(El23Attributes::READ_ONLY);
/// Device registers: Device-nGnRE, never executable.
pub const DEVICE: El23Attributes = El23Attributes::VALID
    .union(El23Attributes::ATTRIBUTE_INDEX_0)
    .union(El23Attributes::ACCESSED)
    .union(El23Attributes::XN);

/// Pages for translation tables, enough for a few GiB of RAM and a handful of device windows
/// scattered over the first 4 GiB (each 2 MiB window with a device needs one level-3 table).
const POOL_PAGES: usize = 32;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Hands out pages from a fixed pool; tables are never freed (the map lives forever).
pub struct PoolTranslation {
    pool: *mut Page,
    used: usize,
    capacity: usize,
}

impl PoolTranslation {
    /// # Safety
    /// `pool` must point to `capacity` zeroed pages used by nothing else, identity-mapped.
    pub unsafe fn new(pool: *mut u8, capacity: usize) -> Self {
        PoolTranslation { pool: pool.cast(), used: 0, capacity }
    }

    /// How many pool pages the tables use.
    pub fn used(&self) -> usize {
        self.used
    }
}

impl Translation<El23Attributes> for PoolTranslation {
    fn allocate_table(&mut self) -> (NonNull<PageTable<El23Attributes>>, PhysicalAddress) {
        assert!(self.used < self.capacity, "EL2 table pool exhausted: raise POOL_PAGES");
        // SAFETY: index < capacity, so the page is inside the pool `new` was given.
        let page = unsafe { self.pool.add(self.used) };
        self.used += 1;
        let table = NonNull::new(page.cast::<PageTable<El23Attributes>>()).expect("pool is not null");
        (table, PhysicalAddress(page as usize))
    }

    unsafe fn deallocate_table(&mut self, _table: NonNull<PageTable<El23Attributes>>) {
        // Tables are never freed: the pool is the map's for good.
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<El23Attributes>> {
        NonNull::new(pa.0 as *mut PageTable<El23Attributes>).expect("table at address 0")
    }
}

/// The pool in .bss (zeroed by the entry code before Rust runs).
static mut POOL: [Page; POOL_PAGES] = [const { Page([0; 4096]) }; POOL_PAGES];

/// What goes into Veil's map.
pub struct El2Layout<'a> {
    pub ram: &'a [Region],
    /// Veil's executable code (page aligned).
    pub code: Region,
    pub devices: &'a [Region],
}

/// Builds the map in `translation`'s pages and returns it with the root table's address.
pub fn build<T: Translation<El23Attributes>>(
    translation: T,
    layout: &El2Layout,
) -> Result<Mapping<T, El2>, MapError> {
    let mut map = Mapping::new(translation, ROOT_LEVEL, El2);
    let limit = 1u64 << VA_BITS;
    for ram in layout.ram.iter().filter(|r| r.size != 0 && r.base < limit) {
        let end = ram.end().min(limit);
        map_identity(&mut map, ram.base, end, DATA)?;
    }
    map_identity(&mut map, layout.code.base, layout.code.end(), CODE)?;
    for dev in layout.devices.iter().filter(|r| r.size != 0) {
        let base = super::align_down(dev.base, super::PAGE_SIZE);
        let end = super::align_up(dev.end(), super::PAGE_SIZE).unwrap_or(u64::MAX);
        map_identity(&mut map, base, end, DEVICE)?;
    }
    Ok(map)
}

fn map_identity<T: Translation<El23Attributes>>(
    map: &mut Mapping<T, El2>,
    start: u64,
    end: u64,
    attrs: El23Attributes,
) -> Result<(), MapError> {
    let region = MemoryRegion::new(start as usize, end as usize);
    map.map_range(&region, PhysicalAddress(start as usize), attrs, Constraints::empty())
}

/// Builds Veil's map from the static pool and returns the root table's address (TTBR0_EL2).
/// Boot CPU only, once, before the MMU is on.
pub fn build_boot_map(layout: &El2Layout) -> Result<(u64, usize), MapError> {
    // SAFETY: POOL is only ever touched here, once, by the boot CPU; it is zeroed .bss and
    // identity-mapped (the MMU is off now, and RAM is identity-mapped once it is on).
    let translation = unsafe { PoolTranslation::new((&raw mut POOL).cast(), POOL_PAGES) };
    let map = build(translation, layout)?;
    let root = map.root_address().0 as u64;
    let used = map.translation().used();
    // The map is live for the rest of the system's life; never run its destructor.
    core::mem::forget(map);
    Ok((root, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aarch64_paging::descriptor::Descriptor;
    extern crate std;
    use std::vec::Vec;

    fn pool_translation(pages: usize) -> (PoolTranslation, Vec<Page>) {
        let mut v: Vec<Page> = (0..pages).map(|_| Page([0; 4096])).collect();
        // SAFETY: the vector outlives the translation in each test and is used by nothing else.
        let t = unsafe { PoolTranslation::new(v.as_mut_ptr().cast(), pages) };
        (t, v)
    }

    fn lookup<T: Translation<El23Attributes>>(map: &Mapping<T, El2>, va: u64) -> Option<(u64, El23Attributes, usize)> {
        let mut found = None;
        let region = MemoryRegion::new(va as usize, va as usize + 1);
        map.walk_range(&region, &mut |mr: &MemoryRegion, d: &Descriptor<El23Attributes>, level: usize| {
            if d.is_valid() && (level == 3 || !d.flags().contains(El23Attributes::TABLE_OR_PAGE)) {
                let _ = mr;
                let offset = va & (level_size(level) - 1);
                found = Some((d.output_address().0 as u64 + offset, d.flags(), level));
            }
            Ok(())
        })
        .ok()?;
        found
    }

    /// Bytes one descriptor maps at `level` with the 4 KiB granule.
    fn level_size(level: usize) -> u64 {
        4096 << (9 * (3 - level))
    }

    #[test]
    fn qemu_virt_layout() {
        let (t, _pool) = pool_translation(POOL_PAGES);
        let ram = [Region { base: 0x4000_0000, size: 0x4000_0000 }];
        let devices = [
            Region { base: 0x0900_0000, size: 0x1000 },
            Region { base: 0x0800_0000, size: 0x1_0000 },
            Region { base: 0x080a_0000, size: 0xf6_0000 },
        ];
        let layout = El2Layout { ram: &ram, code: Region { base: 0x4008_0000, size: 0x2_0000 }, devices: &devices };
        let map = build(t, &layout).unwrap();
        // RAM: read-write, XN, identity; a 1 GiB block where the code is not.
        let (pa, flags, _) = lookup(&map, 0x7fff_f000).unwrap();
        assert_eq!(pa, 0x7fff_f000);
        assert!(flags.contains(El23Attributes::XN) && !flags.contains(El23Attributes::READ_ONLY));
        // Code: read-only, executable.
        let (pa, flags, level) = lookup(&map, 0x4009_0000).unwrap();
        assert_eq!((pa, level), (0x4009_0000, 3));
        assert!(flags.contains(El23Attributes::READ_ONLY) && !flags.contains(El23Attributes::XN));
        // Just past the code: data again.
        let (_, flags, _) = lookup(&map, 0x400a_0000).unwrap();
        assert!(flags.contains(El23Attributes::XN));
        // Device: attribute index 0, XN.
        let (pa, flags, _) = lookup(&map, 0x0900_0ffc).unwrap();
        assert_eq!(pa, 0x0900_0ffc);
        assert_eq!(flags & El23Attributes::ATTRIBUTE_INDEX_7, El23Attributes::ATTRIBUTE_INDEX_0);
        assert!(lookup(&map, 0x0900_1000).is_none());
        assert!(lookup(&map, 0x1000_0000).is_none());
        assert!(map.translation().used() < POOL_PAGES);
    }

    #[test]
    fn pool_exhaustion_is_a_clear_panic() {
        let (t, _pool) = pool_translation(2);
        let ram = [Region { base: 0x4000_0000, size: 0x1000 }];
        let devices = [Region { base: 0x0900_0000, size: 0x1000 }];
        let layout = El2Layout { ram: &ram, code: Region { base: 0x4000_0000, size: 0x1000 }, devices: &devices };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = build(t, &layout);
        }));
        assert!(result.is_err());
    }
}
