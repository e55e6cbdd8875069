//! The guest's own MMU, for `memio.test=mmio-mmu`: the device checks again with stage 1 on,
//! and through aliases whose virtual address differs from the guest physical one.
//!
//! One level-1 table of 1 GiB blocks (4 KiB granule, 39-bit virtual addresses):
//!
//! | VA | IPA | memory |
//! | --- | --- | --- |
//! | 0x0000_0000 | 0x0000_0000 | Device-nGnRnE, never executable (the devices and holes) |
//! | 0x4000_0000 | 0x4000_0000 | Normal write-back (RAM, where the guest runs) |
//! | 0x8000_0000 | 0x0000_0000 | Device-nGnRnE: [`DEVICE_ALIAS`] |
//! | 0xc000_0000 | 0x4000_0000 | Normal write-back, executable: [`RAM_ALIAS`] |
//! | 0x1_0000_0000 | — | a level-2 table in a hole: [`WALK_INTO_A_HOLE`] |
//!
//! With an alias the fault address (FAR, a VA) and the address that reaches the hypervisor's
//! device (the IPA) differ, so a hypervisor that mixes them up shows: it must emulate the
//! access at the IPA, report aborts at the VA, and fetch a syndrome-less instruction through
//! the guest's own translation of its PC.

use core::cell::UnsafeCell;

use veil_guest_rt::sysreg::{Readable, registers};

/// Added to a device's IPA to reach it through the device alias.
pub const DEVICE_ALIAS: u64 = 0x8000_0000;
/// Added to a RAM address to reach it (and execute it) through the RAM alias.
pub const RAM_ALIAS: u64 = 0x8000_0000;

/// A VA whose level-1 entry points to a level-2 table at [`WALK_TABLE`], a hole of the board:
/// the stage-1 walk itself aborts.
pub const WALK_INTO_A_HOLE: u64 = 4 << 30;
/// Where that level-2 table would be: the hole after the PL011.
const WALK_TABLE: u64 = 0x0900_1000;
/// Level-1 table descriptor.
const TABLE: u64 = 0b11;

const GIB: u64 = 1 << 30;

/// MAIR_EL1: attribute 0 Device-nGnRnE, attribute 1 Normal inner/outer write-back
/// read/write-allocate.
const MAIR: u64 = 0xff << 8;
const ATTR_DEVICE: u64 = 0;
const ATTR_NORMAL: u64 = 1 << 2;
/// Level-1 block descriptor; access flag set; EL1 read/write (AP = 00).
const BLOCK: u64 = 0b01 | (1 << 10);
/// Inner shareable (SH = 11), for normal memory.
const INNER_SHAREABLE: u64 = 0b11 << 8;
/// PXN and UXN: never executable.
const NEVER_EXECUTE: u64 = (1 << 53) | (1 << 54);

/// TCR_EL1: T0SZ = 25 (39-bit VAs from TTBR0, walks start at level 1), table walks
/// non-cacheable (IRGN0 = ORGN0 = 0, so tables written with the MMU off need no cache
/// maintenance), 4 KiB granule (TG0 = 0), no TTBR1 walks (EPD1), IPS set from PARange.
const TCR_T0SZ: u64 = 25;
const TCR_EPD1: u64 = 1 << 23;
const TCR_IPS_SHIFT: u32 = 32;

/// SCTLR_EL1: M (MMU), C (data cache), I (instruction cache).
const SCTLR_M_C_I: u64 = (1 << 0) | (1 << 2) | (1 << 12);

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; 512]>);

// SAFETY: written once by `enable` on the only vCPU running, before the MMU reads it.
unsafe impl Sync for Table {}

static LEVEL1: Table = Table(UnsafeCell::new([0; 512]));

/// Builds the map above and turns the MMU and caches on. Everything the guest uses (image,
/// stack, DTB, devices) stays at the same address, so execution just goes on.
pub fn enable() {
    let device = BLOCK | ATTR_DEVICE | NEVER_EXECUTE;
    let normal = BLOCK | ATTR_NORMAL | INNER_SHAREABLE;
    // SAFETY: the MMU is off and nothing else refers to the table yet.
    let table = unsafe { &mut *LEVEL1.0.get() };
    table[0] = device;
    table[1] = GIB | normal;
    table[((DEVICE_ALIAS) / GIB) as usize] = device;
    table[((GIB + RAM_ALIAS) / GIB) as usize] = GIB | normal;
    table[(WALK_INTO_A_HOLE / GIB) as usize] = WALK_TABLE | TABLE;

    let pa_range = registers::ID_AA64MMFR0_EL1.get() & 0xf;
    let tcr = TCR_T0SZ | (TCR_T0SZ << 16) | TCR_EPD1 | (pa_range.min(0b101) << TCR_IPS_SHIFT);
    let ttbr = table.as_ptr() as u64;
    // SAFETY: the map keeps every address the guest uses where it is (identity for RAM and
    // devices), so turning the MMU on changes no address Rust code holds; the barriers make
    // the table and registers visible to the walker before the MMU uses them.
    unsafe {
        core::arch::asm!(
            "dsb sy",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "mrs {tmp}, sctlr_el1",
            "orr {tmp}, {tmp}, {mci}",
            "msr sctlr_el1, {tmp}",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) tcr,
            ttbr = in(reg) ttbr,
            mci = in(reg) SCTLR_M_C_I,
            tmp = out(reg) _,
            options(nostack),
        );
    }
}
