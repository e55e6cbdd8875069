//! Veil's own address space: an EL2 stage-1 identity map, built once by the boot CPU before the
//! MMU is on and shared by every CPU after.
//!
//! The tables come from a fixed pool rather than the heap: building them happens before
//! caches are on, when locks (exclusive accesses) are not reliable on real cores. The pool is
//! in a section of its own outside .bss, so the entry code does not zero it; a page is zeroed
//! when it becomes a table. The map holds host RAM (Normal write-back; Veil's code read-only and
//! executable, everything else execute-never) and the few devices Veil drives itself
//! (Device-nGnRE, execute-never). Guest RAM is part of host RAM, so Veil can load images into
//! it; guests never see this map.
//!
//! The tables are written by a small identity-map builder ([`Tables`]) rather than
//! `aarch64-paging`'s `Mapping`. This map is built once, with the MMU off, and is mostly whole
//! blocks: a 1 GiB block of RAM split once for Veil's code into 512 blocks of 2 MiB and 512
//! pages of 4 KiB. The general mapper spent about 50 instructions on each of those descriptors
//! (some 51,000 at every boot); here runs of descriptors are written in tight loops.

use super::bulk;
use crate::board::discovery::Region;
use aarch64_paging::descriptor::El23Attributes;

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
pub const POOL_PAGES: usize = 32;

/// One translation table: 512 descriptors.
#[repr(C, align(4096))]
pub struct Page([u64; ENTRIES]);

const ENTRIES: usize = 512;
const PAGE_SIZE: u64 = 4096;
/// Descriptor bits 1:0: a block (levels 1 and 2) is 0b01; a table or a page (level 3) is 0b11.
const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
/// The output address field (bits 47:12) of every descriptor kind.
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Why the map could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The table pool has no page left: raise [`POOL_PAGES`].
    PoolExhausted,
    /// A range to map is not page aligned or does not fit under 2^[`VA_BITS`].
    BadRange { start: u64, end: u64 },
}

/// Bytes one descriptor maps at `level` (4 KiB granule).
const fn level_size(level: usize) -> u64 {
    PAGE_SIZE << (9 * (3 - level))
}

/// An identity map being built in a pool of pages, each of which is at its own physical
/// address (true with the MMU off, and in host tests where addresses are only compared).
pub struct Tables<'p> {
    pool: &'p mut [Page],
    used: usize,
}

impl<'p> Tables<'p> {
    /// Starts a map whose root table is the pool's first page.
    pub fn new(pool: &'p mut [Page]) -> Result<Self, MapError> {
        let mut tables = Tables { pool, used: 0 };
        tables.allocate(true)?;
        Ok(tables)
    }

    /// The root table's address (TTBR0_EL2).
    pub fn root(&self) -> u64 {
        self.pool.as_ptr() as u64
    }

    /// How many pool pages the tables use.
    pub fn used(&self) -> usize {
        self.used
    }

    /// A page from the pool, by index: zeroed, unless the caller fills every entry itself.
    fn allocate(&mut self, zeroed: bool) -> Result<usize, MapError> {
        let index = self.used;
        let page = self.pool.get_mut(index).ok_or(MapError::PoolExhausted)?;
        if zeroed {
            bulk::zero_words(&mut page.0);
        }
        self.used += 1;
        Ok(index)
    }

    fn address(&self, index: usize) -> u64 {
        self.root() + index as u64 * PAGE_SIZE
    }

    /// The pool index of the table a table descriptor points to.
    fn table_index(&self, descriptor: u64) -> usize {
        ((descriptor & ADDRESS_MASK) - self.root()) as usize / PAGE_SIZE as usize
    }

    /// Maps `[start, end)` (page aligned) to itself with `attributes`, replacing what was there:
    /// whole blocks where the range covers them, tables (splitting blocks) where it does not.
    pub fn map(
        &mut self,
        start: u64,
        end: u64,
        attributes: El23Attributes,
    ) -> Result<(), MapError> {
        let aligned = start.is_multiple_of(PAGE_SIZE) && end.is_multiple_of(PAGE_SIZE);
        if !aligned || start > end || end > 1 << VA_BITS {
            return Err(MapError::BadRange { start, end });
        }
        self.map_in(0, ROOT_LEVEL, start, end, attributes.bits() as u64)
    }

    fn map_in(
        &mut self,
        table: usize,
        level: usize,
        start: u64,
        end: u64,
        attributes: u64,
    ) -> Result<(), MapError> {
        let size = level_size(level);
        let shift = size.trailing_zeros();
        let mut va = start;
        while va < end {
            let index = (va >> shift) as usize % ENTRIES;
            // How many whole entries from `va` the range covers in this table.
            let whole = (((end - va) / size) as usize).min(ENTRIES - index);
            if level == 3 {
                // Pages, to the range's end or the table's, in one loop (`va`, `end` are page
                // aligned, so `whole` is at least 1).
                let pages = &mut self.pool[table].0[index..index + whole];
                fill(pages, va | attributes | TABLE_OR_PAGE, size);
                va += whole as u64 * size;
                continue;
            }
            let entry_start = va & !(size - 1);
            let entry_end = entry_start + size;
            let descriptor = self.pool[table].0[index];
            let is_table = descriptor & (VALID | TABLE_OR_PAGE) == VALID | TABLE_OR_PAGE;
            if va == entry_start && whole > 0 && !is_table {
                // Blocks, as many as the range covers whole in this table. (A block over a table
                // would leak the table; the few ranges Veil maps never need that.)
                fill(
                    &mut self.pool[table].0[index..index + whole],
                    va | attributes,
                    size,
                );
                va += whole as u64 * size;
                continue;
            }
            let sub = if is_table {
                self.table_index(descriptor)
            } else {
                let splits_a_block = descriptor & VALID != 0;
                let sub = self.allocate(!splits_a_block)?;
                if splits_a_block {
                    // A block being split: the new table maps the same memory the same way.
                    let (base, flags) = (descriptor & ADDRESS_MASK, descriptor & !ADDRESS_MASK);
                    let kind = if level + 1 == 3 { TABLE_OR_PAGE } else { 0 };
                    fill(
                        &mut self.pool[sub].0,
                        base | flags | kind,
                        level_size(level + 1),
                    );
                }
                self.pool[table].0[index] = self.address(sub) | VALID | TABLE_OR_PAGE;
                sub
            };
            let chunk_end = end.min(entry_end);
            self.map_in(sub, level + 1, va, chunk_end, attributes)?;
            va = chunk_end;
        }
        Ok(())
    }
}

/// Writes descriptors `first`, `first + step`, ... into `slots` (the address field counts up;
/// the attribute bits stay as they are, the addresses being aligned to `step`).
fn fill(slots: &mut [u64], first: u64, step: u64) {
    // Four at a time (two store-pair instructions): a split block writes 512 of them.
    let mut descriptor = first;
    let mut quads = slots.chunks_exact_mut(4);
    for quad in &mut quads {
        quad[0] = descriptor;
        quad[1] = descriptor + step;
        quad[2] = descriptor + 2 * step;
        quad[3] = descriptor + 3 * step;
        descriptor += 4 * step;
    }
    for slot in quads.into_remainder() {
        *slot = descriptor;
        descriptor += step;
    }
}

/// The pool, outside .bss (section `.bss.el2_tables`, which `linker/veil.ld` places apart and
/// the entry code leaves alone): its contents are undefined until [`Tables`] zeroes a page.
#[unsafe(link_section = ".bss.el2_tables")]
static mut POOL: core::mem::MaybeUninit<[Page; POOL_PAGES]> = core::mem::MaybeUninit::uninit();

/// What goes into Veil's map.
pub struct El2Layout<'a> {
    pub ram: &'a [Region],
    /// Veil's executable code (page aligned).
    pub code: Region,
    pub devices: &'a [Region],
}

/// Builds the map in `tables`: RAM, then the code inside it, then the devices.
pub fn build(tables: &mut Tables, layout: &El2Layout) -> Result<(), MapError> {
    let limit = 1u64 << VA_BITS;
    for ram in layout.ram.iter().filter(|r| r.size != 0 && r.base < limit) {
        let start = super::align_up(ram.base, super::PAGE_SIZE).unwrap_or(limit);
        let end = super::align_down(ram.end().min(limit), super::PAGE_SIZE);
        if start < end {
            tables.map(start, end, DATA)?;
        }
    }
    tables.map(layout.code.base, layout.code.end(), CODE)?;
    for dev in layout.devices.iter().filter(|r| r.size != 0) {
        let base = super::align_down(dev.base, super::PAGE_SIZE);
        let end = super::align_up(dev.end(), super::PAGE_SIZE).unwrap_or(u64::MAX);
        tables.map(base, end, DEVICE)?;
    }
    Ok(())
}

/// Builds Veil's map from the static pool and returns the root table's address (TTBR0_EL2) and
/// how many pages it uses. Boot CPU only, once, before the MMU is on.
pub fn build_boot_map(layout: &El2Layout) -> Result<(u64, usize), MapError> {
    // SAFETY: POOL is only ever touched here, once, by the boot CPU; with the MMU off (and once
    // it is on, RAM is identity-mapped) each page is at its own physical address. A page is
    // written (zeroed) before it is read, so its undefined contents are never seen.
    let pool: &mut [Page; POOL_PAGES] = unsafe { (*(&raw mut POOL)).assume_init_mut() };
    let mut tables = Tables::new(pool)?;
    build(&mut tables, layout)?;
    Ok((tables.root(), tables.used()))
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn pool(pages: usize) -> Vec<Page> {
        (0..pages).map(|_| Page([0xdead; ENTRIES])).collect()
    }

    /// The output address, attributes (descriptor bits outside the address) and level of the
    /// descriptor that maps `va`, by walking the tables as the MMU would.
    fn lookup(tables: &Tables, va: u64) -> Option<(u64, u64, usize)> {
        let mut table = 0;
        for level in ROOT_LEVEL..=3 {
            let size = level_size(level);
            let descriptor = tables.pool[table].0[(va / size) as usize % ENTRIES];
            if descriptor & VALID == 0 {
                return None;
            }
            let leaf = level == 3 || descriptor & TABLE_OR_PAGE == 0;
            if leaf {
                let offset = va & (size - 1);
                return Some((
                    (descriptor & ADDRESS_MASK) + offset,
                    descriptor & !ADDRESS_MASK,
                    level,
                ));
            }
            table = tables.table_index(descriptor);
        }
        None
    }

    fn bits(attributes: El23Attributes) -> u64 {
        attributes.bits() as u64
    }

    fn has(flags: u64, attributes: El23Attributes) -> bool {
        flags & bits(attributes) == bits(attributes)
    }

    #[test]
    fn qemu_virt_layout() {
        let mut pool = pool(POOL_PAGES);
        let mut tables = Tables::new(&mut pool).unwrap();
        let ram = [Region {
            base: 0x4000_0000,
            size: 0x4000_0000,
        }];
        let devices = [
            Region {
                base: 0x0900_0000,
                size: 0x1000,
            },
            Region {
                base: 0x0800_0000,
                size: 0x1_0000,
            },
            Region {
                base: 0x080a_0000,
                size: 0xf6_0000,
            },
        ];
        let layout = El2Layout {
            ram: &ram,
            code: Region {
                base: 0x4008_0000,
                size: 0x2_0000,
            },
            devices: &devices,
        };
        build(&mut tables, &layout).unwrap();
        // RAM: read-write, XN, identity; 2 MiB blocks beside the code's 2 MiB.
        let (pa, flags, level) = lookup(&tables, 0x7fff_f000).unwrap();
        assert_eq!((pa, level), (0x7fff_f000, 2));
        assert!(has(flags, DATA) && !has(flags, El23Attributes::READ_ONLY));
        // Code: read-only, executable.
        let (pa, flags, level) = lookup(&tables, 0x4009_0000).unwrap();
        assert_eq!((pa, level), (0x4009_0000, 3));
        assert_eq!(flags, bits(CODE) | TABLE_OR_PAGE);
        // Around the code: data again, in pages.
        for va in [0x4007_f000, 0x400a_0000, 0x401f_f000] {
            let (pa, flags, level) = lookup(&tables, va).unwrap();
            assert_eq!((pa, flags, level), (va, bits(DATA) | TABLE_OR_PAGE, 3));
        }
        // Device: attribute index 0, XN; a 2 MiB block in the middle of the GICR window.
        let (pa, flags, _) = lookup(&tables, 0x0900_0ffc).unwrap();
        assert_eq!(pa, 0x0900_0ffc);
        assert!(has(flags, DEVICE));
        let (pa, flags, level) = lookup(&tables, 0x0820_0004).unwrap();
        assert_eq!((pa, flags, level), (0x0820_0004, bits(DEVICE), 2));
        assert_eq!(
            lookup(&tables, 0x080a_0000).map(|(pa, _, level)| (pa, level)),
            Some((0x080a_0000, 3))
        );
        assert!(lookup(&tables, 0x0809_f000).is_none());
        assert!(lookup(&tables, 0x0900_1000).is_none());
        assert!(lookup(&tables, 0x1000_0000).is_none());
        assert!(lookup(&tables, 0x8000_0000).is_none());
        // The root; the RAM's level-2 and level-3 (code) tables; the devices' level-2 table and
        // level-3 tables for 0x0800_0000 (GICD, GICR's start) and 0x0900_0000 (the UART), as
        // aarch64-paging built it.
        assert_eq!(tables.used(), 6);
    }

    /// Every page of a mixed layout maps to itself with the attributes of the last range that
    /// covers it, whatever blocks were split on the way.
    #[test]
    fn every_page_has_the_last_attributes_given() {
        let ranges: [(u64, u64, El23Attributes); 5] = [
            (0x4000_0000, 0x8000_0000, DATA),
            (0x4020_0000, 0x4060_0000, DEVICE),
            (0x4030_0000, 0x4030_2000, CODE),
            (0x3fff_f000, 0x4000_1000, CODE),
            (0x7fe0_0000, 0x8000_0000, DEVICE),
        ];
        let mut pool = pool(16);
        let mut tables = Tables::new(&mut pool).unwrap();
        for &(start, end, attributes) in &ranges {
            tables.map(start, end, attributes).unwrap();
        }
        for page in (0x3ff0_0000..0x8010_0000u64).step_by(PAGE_SIZE as usize) {
            let expected = ranges
                .iter()
                .rev()
                .find(|(s, e, _)| (*s..*e).contains(&page));
            match (expected, lookup(&tables, page)) {
                (None, None) => {}
                (Some(&(_, _, attributes)), Some((pa, flags, _))) => {
                    assert_eq!(pa, page);
                    assert_eq!(flags & !TABLE_OR_PAGE, bits(attributes), "page {page:#x}");
                }
                (expected, found) => {
                    panic!("page {page:#x}: expected {expected:?}, found {found:?}")
                }
            }
        }
    }

    #[test]
    fn pool_exhaustion_and_bad_ranges_are_errors() {
        let mut small = pool(2);
        let mut tables = Tables::new(&mut small).unwrap();
        // Level 2 fits, level 3 does not.
        assert_eq!(
            tables.map(0x4000_0000, 0x4000_1000, DATA),
            Err(MapError::PoolExhausted)
        );
        let mut pool = pool(4);
        let mut tables = Tables::new(&mut pool).unwrap();
        assert!(matches!(
            tables.map(0x1000, 0x1800, DATA),
            Err(MapError::BadRange { .. })
        ));
        assert!(matches!(
            tables.map(0, 2 << VA_BITS, DATA),
            Err(MapError::BadRange { .. })
        ));
        assert_eq!(tables.map(0x2000, 0x2000, DATA), Ok(()));
        assert_eq!(tables.used(), 1);
    }
}
