//! Cache maintenance Veil needs when it hands memory to a guest.
//!
//! A guest starts with its MMU off, so its first accesses are non-cacheable and would miss data
//! Veil wrote through its own cacheable mapping. Loaded images are therefore cleaned to the Point
//! of Coherency, as the Linux boot protocol requires of any loader.

use aarch64_cpu::asm::barrier;
use core::arch::asm;

fn dcache_line_size() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    // CTR_EL0.DminLine (bits 19:16): log2 of the smallest data cache line in words.
    4 << ((ctr >> 16) & 0xf)
}

/// Cleans `[start, start + len)` from the data caches to the Point of Coherency.
pub fn clean_dcache_range(start: usize, len: usize) {
    let line = dcache_line_size();
    let mut addr = start & !(line - 1);
    let end = start.saturating_add(len);
    // Four lines per iteration while four remain (a loaded guest image is thousands of lines).
    while end.saturating_sub(addr) >= 4 * line {
        // SAFETY: DC CVAC on four lines Veil maps; it only writes back dirty lines.
        unsafe {
            asm!(
                "dc cvac, {addr}",
                "add {addr}, {addr}, {line}",
                "dc cvac, {addr}",
                "add {addr}, {addr}, {line}",
                "dc cvac, {addr}",
                "add {addr}, {addr}, {line}",
                "dc cvac, {addr}",
                "add {addr}, {addr}, {line}",
                addr = inout(reg) addr,
                line = in(reg) line,
                options(nostack),
            )
        };
    }
    while addr < end {
        // SAFETY: DC CVAC on an address Veil maps; it only writes back dirty lines.
        unsafe { asm!("dc cvac, {}", in(reg) addr, options(nostack)) };
        addr += line;
    }
    barrier::dsb(barrier::SY);
}

/// Invalidates all instruction caches to the Point of Unification (inner shareable), so a guest
/// never executes stale instructions from memory Veil just wrote.
pub fn invalidate_icache_all() {
    // SAFETY: IC IALLUIS only discards instruction cache contents.
    unsafe { asm!("ic ialluis", options(nostack)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

/// Cleans and invalidates `[start, start + len)` from the data caches to the Point of Coherency.
pub fn clean_invalidate_dcache_range(start: usize, len: usize) {
    let line = dcache_line_size();
    let mut addr = start & !(line - 1);
    let end = start.saturating_add(len);
    while addr < end {
        // SAFETY: DC CIVAC on an address Veil maps; dirty lines are written back first.
        unsafe { asm!("dc civac, {}", in(reg) addr, options(nostack)) };
        addr += line;
    }
    barrier::dsb(barrier::SY);
}
