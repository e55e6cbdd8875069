//! `memio.test=mmio`: the emulated devices answer every access form a guest's CPU can make.
//!
//! With the MMU off every device access is a Device-memory access that faults into the
//! hypervisor. For a plain `LDR`/`STR` of one register the fault's syndrome describes the access
//! (ESR.ISV = 1); for pairs, pre- and post-index writeback and (on some CPUs) register offsets
//! it does not (ISV = 0), and the hypervisor must decode the instruction itself. Each check
//! here is one instruction, written in assembly so the form is exactly the one named, on a
//! register whose value is known:
//!
//! - widths: 8/16/32-bit loads of PL011 UARTFR, UARTIMSC and the PrimeCell ID registers, and
//!   stores to UARTIMSC; 64-bit accesses, which the PL011 refuses, and 16-bit ones to the PL031,
//!   must raise an external abort (Veil only: QEMU's own models accept any width);
//! - pairs (`LDP`/`STP`/`LDPSW`, with `WZR`), pre/post-index writeback (the base register must
//!   end up exactly as the instruction says), register offsets with every extension, sign
//!   extension into W and X (PCellID3 = 0xb1 through `LDRSB` is 0xffff_ffff_ffff_ffb1; UARTIBRD
//!   and RTCMR give 16- and 32-bit values with the top bit set), acquire/release;
//! - a pair that runs off the PL011's page into the hole after it must abort and load nothing;
//! - an empty virtio-mmio slot through a pair;
//! - big-endian data accesses (SCTLR_EL1.EE at EL1, E0E at EL0; MMU off only): the same device
//!   bytes assemble the other way round, single accesses and pairs alike.
//!
//! The registers written are ones without side effects the test could trip over: UARTIMSC only
//! with interrupt bits that never rise here (modem and error interrupts), UARTIBRD (no effect
//! on an emulated UART), RTCMR with the RTC interrupt masked. Each is reset at the end.

use core::arch::asm;

use veil_guest_rt::exception::{ec, expect_exception};
use veil_guest_rt::sysreg::{Readable, registers};
use veil_guest_rt::tally::Tally;

use crate::access::AccessChecks;
use crate::board::{Host, PL011, PL031, VIRTIO_MMIO, read32, write32};
use crate::mmu::{DEVICE_ALIAS, RAM_ALIAS, WALK_INTO_A_HOLE};

/// PL011 registers (PL011 TRM, table 3-1).
const UARTFR: u64 = PL011 + 0x018;
const UARTIBRD: u64 = PL011 + 0x024;
const UARTIMSC: u64 = PL011 + 0x038;
const UARTRIS: u64 = PL011 + 0x03c;
const UARTMIS: u64 = PL011 + 0x040;
const UARTICR: u64 = PL011 + 0x044;
const PERIPH_ID0: u64 = PL011 + 0xfe0;
const PERIPH_ID1: u64 = PL011 + 0xfe4;
const PCELL_ID3: u64 = PL011 + 0xffc;
/// PeriphID0..3, PCellID0..3 of a PL011.
const UART_ID: [u64; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// PL031 registers (PL031 TRM, table 3-1).
const RTCDR: u64 = PL031;
const RTCMR: u64 = PL031 + 0x004;
const RTCLR: u64 = PL031 + 0x008;
const RTC_PERIPH_ID0: u64 = PL031 + 0xfe0;

/// virtio-mmio MagicValue, "virt".
const VIRTIO_MAGIC: u64 = 0x7472_6976;

/// UARTIMSC values the checks write: modem (bits 0-3) and error (7-10) interrupt masks only;
/// neither kind of interrupt ever rises on an emulated UART with no input.
const IMSC_A: u64 = 0x70c;
const IMSC_B: u64 = 0x083;
const IMSC_BYTE: u64 = 0x8f;
const IMSC_HALF: u64 = 0x78f;

/// A value with bit 15 set, for UARTIBRD (16 bits wide).
const IBRD_NEGATIVE: u64 = 0x8001;
/// A value with bit 31 set, for RTCMR.
const RTCMR_NEGATIVE: u64 = 0x8000_8001;

/// One instruction on device registers, and what must hold after it:
///
/// ```ignore
/// access!(tally, "ldr w, [x, #4]!", "ldr {v:w}, [{b}, #4]!", b = UARTIMSC - 4, v = !0;
///         "value": v => IMSC_A, "base": b => UARTIMSC);
/// ```
///
/// Each `name = value` is a 64-bit register operand of `asm`, read and written; after the
/// instruction each `"label": got => expected` is checked (`got` may use the operand names). If
/// the instruction raises an exception, that is the one FAIL line and nothing else is checked.
macro_rules! access {
    ($tally:expr, $what:literal, $asm:literal, $($reg:ident = $init:expr),+;
     $($label:literal: $got:expr => $want:expr),* $(,)?) => {{
        $(let mut $reg: u64 = $init;)+
        let done = $tally.completes(format_args!("`{}`", $what), || {
            // SAFETY: the base register holds the address of a device register of the board
            // (from the fixed map at the top of this module), owned by no Rust object; the
            // instruction touches nothing else, and the registers it writes are operands.
            unsafe { asm!($asm, $($reg = inout(reg) $reg,)+ options(nostack)) }
        });
        if done.is_some() {
            $($tally.equal(format_args!("`{}`{}{}", $what, if $label.is_empty() { "" } else { " " }, $label), $got, $want);)*
        }
    }};
}

pub fn run(tally: &mut Tally, host: &Host) {
    let saved_ibrd = reg32(UARTIBRD);
    widths(tally);
    crate::destinations::run(tally);
    refused_widths(tally, host);
    pairs(tally);
    writeback(tally);
    register_offset(tally);
    sign_extension(tally);
    acquire_release(tally);
    crossing_into_a_hole(tally);
    virtio(tally, host);
    big_endian(tally);
    set32(UARTIMSC, 0);
    set32(UARTIBRD, saved_ibrd);
    set32(RTCMR, 0);
}

/// Reads a register with an ordinary 32-bit load (ISV = 1): the reference the other forms are
/// compared with.
fn reg32(address: u64) -> u64 {
    // SAFETY: callers pass registers of the board's PL011, PL031 and first virtio-mmio slot,
    // which no Rust object owns; reading them has no side effect.
    u64::from(unsafe { read32(address) })
}

/// Writes a register with an ordinary 32-bit store.
fn set32(address: u64, value: u64) {
    // SAFETY: callers pass registers that the module documentation lists as safe to write.
    unsafe { write32(address, value as u32) }
}

fn widths(tally: &mut Tally) {
    let fr = reg32(UARTFR);
    tally.pass(format_args!("`ldr w` UARTFR = {:#x}", fr));
    access!(tally, "ldrb w, [UARTFR]", "ldrb {v:w}, [{b}]", b = UARTFR, v = !0; "": v => fr & 0xff);
    access!(tally, "ldrh w, [UARTFR]", "ldrh {v:w}, [{b}]", b = UARTFR, v = !0; "": v => fr & 0xffff);
    for (i, &want) in UART_ID.iter().enumerate() {
        let at = PERIPH_ID0 + 4 * i as u64;
        tally.equal(
            format_args!("`ldr w` PL011 ID register {:#x}", at - PL011),
            reg32(at),
            want,
        );
    }
    access!(tally, "ldrb w, [PeriphID0]", "ldrb {v:w}, [{b}]", b = PERIPH_ID0, v = !0; "": v => 0x11);
    access!(tally, "ldrh w, [PeriphID0]", "ldrh {v:w}, [{b}]", b = PERIPH_ID0, v = !0; "": v => 0x11);
    access!(tally, "ldrb w, [PCellID3]", "ldrb {v:w}, [{b}]", b = PCELL_ID3, v = !0; "": v => 0xb1);

    // Stores at each width, read back with a 32-bit load, and narrow loads of what they wrote.
    access!(tally, "strb w, [UARTIMSC]", "strb {v:w}, [{b}]", b = UARTIMSC, v = IMSC_BYTE;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_BYTE);
    access!(tally, "strh w, [UARTIMSC]", "strh {v:w}, [{b}]", b = UARTIMSC, v = IMSC_HALF;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_HALF);
    access!(tally, "str w, [UARTIMSC]", "str {v:w}, [{b}]", b = UARTIMSC, v = IMSC_A;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_A);
    access!(tally, "ldrh w, [UARTIMSC]", "ldrh {v:w}, [{b}]", b = UARTIMSC, v = !0; "": v => IMSC_A);
    access!(tally, "ldrb w, [UARTIMSC]", "ldrb {v:w}, [{b}]", b = UARTIMSC, v = !0; "": v => IMSC_A & 0xff);
}

/// Widths the devices refuse: Veil answers them with an external abort, as a bus would. QEMU's
/// own PL011 and PL031 split or widen them instead, so bare QEMU skips these.
fn refused_widths(tally: &mut Tally, host: &Host) {
    if !host.under_veil {
        tally.skip(
            format_args!("64-bit PL011 and 16-bit PL031 accesses abort"),
            "QEMU's models accept every width",
        );
        return;
    }
    set32(UARTIMSC, IMSC_A);
    tally.data_abort(
        format_args!("`ldr x` UARTFR (64-bit)"),
        UARTFR,
        false,
        || {
            // SAFETY: a load from a device register; the abort is caught by expect_exception and
            // the load then has had no effect.
            unsafe { asm!("ldr {v}, [{b}]", b = in(reg) UARTFR, v = out(reg) _, options(nostack)) }
        },
    );
    tally.data_abort(
        format_args!("`str x` UARTIMSC (64-bit)"),
        UARTIMSC,
        true,
        || {
            // SAFETY: a store to UARTIMSC, which the device refuses at this width.
            unsafe {
                asm!("str {v}, [{b}]", b = in(reg) UARTIMSC, v = in(reg) 0u64, options(nostack))
            }
        },
    );
    tally.equal(
        format_args!("UARTIMSC after the refused `str x`"),
        reg32(UARTIMSC),
        IMSC_A,
    );
    tally.data_abort(format_args!("`ldp x, x` UARTIMSC (64-bit elements)"), UARTIMSC, false, || {
        // SAFETY: a pair load from device registers, refused; the outputs are discarded.
        unsafe { asm!("ldp {v}, {w}, [{b}]", b = in(reg) UARTIMSC, v = out(reg) _, w = out(reg) _, options(nostack)) }
    });
    tally.data_abort(
        format_args!("`ldrh w` RTCDR (the PL031 takes 32-bit accesses only)"),
        RTCDR,
        false,
        || {
            // SAFETY: a load from a device register, refused.
            unsafe {
                asm!("ldrh {v:w}, [{b}]", b = in(reg) RTCDR, v = out(reg) _, options(nostack))
            }
        },
    );
}

fn pairs(tally: &mut Tally) {
    let ris = reg32(UARTRIS);
    // UARTIMSC, then UARTRIS, which is read-only and must ignore the write.
    access!(tally, "stp w, w, [UARTIMSC]", "stp {v:w}, {w:w}, [{b}]", b = UARTIMSC, v = IMSC_A, w = 0xffff_ffff;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_A, "then UARTRIS (read-only)": reg32(UARTRIS) => ris);
    access!(tally, "ldp w, w, [UARTIMSC]", "ldp {v:w}, {w:w}, [{b}]", b = UARTIMSC, v = !0, w = !0;
            "first": v => IMSC_A, "second": w => ris);
    let (mis, icr) = (reg32(UARTMIS), reg32(UARTICR));
    access!(tally, "ldp w, w, [UARTIMSC, #8]", "ldp {v:w}, {w:w}, [{b}, #8]", b = UARTIMSC, v = !0, w = !0;
            "UARTMIS": v => mis, "UARTICR": w => icr, "base (no writeback)": b => UARTIMSC);
    access!(tally, "stp wzr, wzr, [UARTIMSC]", "stp wzr, wzr, [{b}]", b = UARTIMSC;
            "then UARTIMSC": reg32(UARTIMSC) => 0);
    // Two 32-bit registers sign-extended into X registers; RTCMR has bit 31 set.
    set32(RTCMR, RTCMR_NEGATIVE);
    let lr = reg32(RTCLR) as u32 as i32 as i64 as u64;
    access!(tally, "ldpsw x, x, [RTCMR]", "ldpsw {v}, {w}, [{b}]", b = RTCMR, v = 0, w = 0;
            "RTCMR": v => 0xffff_ffff_8000_8001, "RTCLR": w => lr);
}

fn writeback(tally: &mut Tally) {
    set32(UARTIMSC, IMSC_A);
    access!(tally, "ldr w, [x, #4]! (x = UARTIMSC - 4)", "ldr {v:w}, [{b}, #4]!", b = UARTIMSC - 4, v = !0;
            "value": v => IMSC_A, "base": b => UARTIMSC);
    access!(tally, "ldr w, [x], #-0x20 (x = UARTIMSC)", "ldr {v:w}, [{b}], #-0x20", b = UARTIMSC, v = !0;
            "value": v => IMSC_A, "base": b => UARTIMSC - 0x20);
    access!(tally, "str w, [x, #0x38]! (x = PL011)", "str {v:w}, [{b}, #0x38]!", b = PL011, v = IMSC_B;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_B, "base": b => UARTIMSC);
    access!(tally, "str w, [x], #12 (x = UARTIMSC)", "str {v:w}, [{b}], #12", b = UARTIMSC, v = IMSC_A;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_A, "base": b => UARTIMSC + 12);
    access!(tally, "ldrb w, [x], #4 (x = PeriphID0)", "ldrb {v:w}, [{b}], #4", b = PERIPH_ID0, v = !0;
            "value": v => 0x11, "base": b => PERIPH_ID1);
    access!(tally, "ldrh w, [x, #-4]! (x = PeriphID1)", "ldrh {v:w}, [{b}, #-4]!", b = PERIPH_ID1, v = !0;
            "value": v => 0x11, "base": b => PERIPH_ID0);
    access!(tally, "ldrsb x, [x], #-0x1c (x = PCellID3)", "ldrsb {v}, [{b}], #-0x1c", b = PCELL_ID3, v = 0;
            "value": v => 0xffff_ffff_ffff_ffb1, "base": b => PERIPH_ID0);
    set32(RTCMR, RTCMR_NEGATIVE);
    access!(tally, "ldrsw x, [x, #4]! (x = RTCDR)", "ldrsw {v}, [{b}, #4]!", b = RTCDR, v = 0;
            "value": v => 0xffff_ffff_8000_8001, "base": b => RTCMR);
    set32(UARTIMSC, 0);
    access!(tally, "stp w, w, [x, #-8]! (x = UARTMIS)", "stp {v:w}, {w:w}, [{b}, #-8]!", b = UARTMIS, v = IMSC_B, w = 0;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_B, "base": b => UARTIMSC, "first register": v => IMSC_B);
    let ris = reg32(UARTRIS);
    access!(tally, "ldp w, w, [x], #16 (x = UARTIMSC)", "ldp {v:w}, {w:w}, [{b}], #16", b = UARTIMSC, v = !0, w = !0;
            "first": v => IMSC_B, "second": w => ris, "base": b => UARTIMSC + 16);
}

fn register_offset(tally: &mut Tally) {
    access!(tally, "ldr w, [x, x] (PL011 + 0xfe0)", "ldr {v:w}, [{b}, {i}]", b = PL011, v = !0, i = 0xfe0;
            "value": v => 0x11, "base": b => PL011);
    access!(tally, "ldr w, [x, x, lsl #2] (PL011 + 0x3ff * 4)", "ldr {v:w}, [{b}, {i}, lsl #2]", b = PL011, v = !0, i = 0x3ff;
            "value": v => 0xb1);
    access!(tally, "ldrb w, [x, w, sxtw] (PL011 + 0x1000 - 4)", "ldrb {v:w}, [{b}, {i:w}, sxtw]", b = PL011 + 0x1000, v = !0, i = 0xffff_fffc;
            "value": v => 0xb1);
    // UXTW ignores the index's upper half.
    access!(tally, "ldr w, [x, w, uxtw #2] (PL011 + 6 * 4)", "ldr {v:w}, [{b}, {i:w}, uxtw #2]", b = PL011, v = !0, i = 0xdead_0000_0000_0006;
            "value": v => reg32(UARTFR));
    access!(tally, "ldrsb x, [x, x] (PL011 + 0xffc)", "ldrsb {v}, [{b}, {i}]", b = PL011, v = 0, i = 0xffc;
            "value": v => 0xffff_ffff_ffff_ffb1);
    access!(tally, "str w, [x, x] (PL011 + 0x38)", "str {v:w}, [{b}, {i}]", b = PL011, v = IMSC_A, i = 0x38;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_A);
    access!(tally, "strh w, [x, x, sxtx #1] (UARTRIS - 2 * 2)", "strh {v:w}, [{b}, {i}, sxtx #1]", b = UARTRIS, v = IMSC_B, i = -2i64 as u64;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_B);
}

fn sign_extension(tally: &mut Tally) {
    access!(tally, "ldrsb x, [PeriphID0]", "ldrsb {v}, [{b}]", b = PERIPH_ID0, v = 0; "": v => 0x11);
    access!(tally, "ldrsb x, [PCellID3]", "ldrsb {v}, [{b}]", b = PCELL_ID3, v = 0; "": v => 0xffff_ffff_ffff_ffb1);
    // A W destination is sign-extended to 32 bits and the upper half of X cleared.
    access!(tally, "ldrsb w, [PCellID3]", "ldrsb {v:w}, [{b}]", b = PCELL_ID3, v = !0; "as X": v => 0xffff_ffb1);
    access!(tally, "ldrsh x, [PCellID3]", "ldrsh {v}, [{b}]", b = PCELL_ID3, v = 0; "": v => 0xb1);
    access!(tally, "ldrsw x, [PCellID3]", "ldrsw {v}, [{b}]", b = PCELL_ID3, v = 0; "": v => 0xb1);
    set32(UARTIBRD, IBRD_NEGATIVE);
    access!(tally, "ldrsh x, [UARTIBRD = 0x8001]", "ldrsh {v}, [{b}]", b = UARTIBRD, v = 0; "": v => 0xffff_ffff_ffff_8001);
    access!(tally, "ldrsh w, [UARTIBRD = 0x8001]", "ldrsh {v:w}, [{b}]", b = UARTIBRD, v = !0; "as X": v => 0xffff_8001);
    access!(tally, "ldrh w, [UARTIBRD = 0x8001]", "ldrh {v:w}, [{b}]", b = UARTIBRD, v = !0; "": v => 0x8001);
    set32(RTCMR, RTCMR_NEGATIVE);
    access!(tally, "ldrsw x, [RTCMR = 0x80008001]", "ldrsw {v}, [{b}]", b = RTCMR, v = 0; "": v => 0xffff_ffff_8000_8001);
    access!(tally, "ldr w, [RTCMR = 0x80008001]", "ldr {v:w}, [{b}]", b = RTCMR, v = !0; "as X": v => RTCMR_NEGATIVE);
}

fn acquire_release(tally: &mut Tally) {
    access!(tally, "ldar w, [UARTFR]", "ldar {v:w}, [{b}]", b = UARTFR, v = !0; "": v => reg32(UARTFR));
    access!(tally, "ldarb w, [PeriphID0]", "ldarb {v:w}, [{b}]", b = PERIPH_ID0, v = !0; "": v => 0x11);
    access!(tally, "ldarh w, [PCellID3]", "ldarh {v:w}, [{b}]", b = PCELL_ID3, v = !0; "": v => 0xb1);
    access!(tally, "stlr w, [UARTIMSC]", "stlr {v:w}, [{b}]", b = UARTIMSC, v = IMSC_A;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_A);
    access!(tally, "stlrb w, [UARTIMSC]", "stlrb {v:w}, [{b}]", b = UARTIMSC, v = IMSC_BYTE;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_BYTE);
    // LDAPR (FEAT_LRCPC), given as a word so the assembler needs no feature flag.
    if (registers::ID_AA64ISAR1_EL1.get() >> 20) & 0xf == 0 {
        tally.skip(format_args!("`ldapr w` PL011 PeriphID0"), "no FEAT_LRCPC");
        return;
    }
    let mut value = !0u64;
    let done = tally.completes(format_args!("`ldapr w1, [x0]` PL011 PeriphID0"), || {
        // SAFETY: `ldapr w1, [x0]` (0xb8bfc001) with x0 at a device register; w1 is an output.
        unsafe {
            asm!(".inst 0xb8bfc001", in("x0") PERIPH_ID0, inout("x1") value, options(nostack))
        }
    });
    if done.is_some() {
        tally.equal(format_args!("`ldapr w` PL011 PeriphID0"), value, 0x11);
    }
}

/// Runs one `$asm` with SCTLR_EL1.EE set (EL1 data accesses big-endian), on operands `a`
/// (an address, in), `v` and `w` (in/out); returns `(v, w)`. Nothing else may run big-endian:
/// the block touches no memory but the device.
macro_rules! big_endian {
    ($asm:literal, a = $a:expr, v = $v:expr, w = $w:expr) => {{
        let (mut v, mut w): (u64, u64) = ($v, $w);
        // SAFETY: EE is set and cleared inside the block, around one access to a device
        // register that the device accepts (so no exception is taken while data accesses are
        // big-endian); no Rust memory is touched in between.
        unsafe {
            asm!(
                "mrs {old}, sctlr_el1",
                "orr {tmp}, {old}, #(1 << 25)",
                "msr sctlr_el1, {tmp}",
                "isb",
                $asm,
                "msr sctlr_el1, {old}",
                "isb",
                a = in(reg) $a,
                v = inout(reg) v,
                w = inout(reg) w,
                old = out(reg) _,
                tmp = out(reg) _,
                options(nostack),
            )
        }
        (v, w)
    }};
}

/// A big-endian EL1 (SCTLR_EL1.EE = 1, which ID_AA64MMFR0_EL1.BigEnd allows): the device's
/// bytes are the same, so a load assembles them the other way round, as on hardware — the
/// hypervisor must swap what it emulates, for single accesses and for pairs alike.
fn big_endian(tally: &mut Tally) {
    let mmfr0 = registers::ID_AA64MMFR0_EL1.get();
    if (mmfr0 >> 8) & 0xf == 0 {
        tally.skip(
            format_args!("big-endian device accesses"),
            "ID_AA64MMFR0_EL1.BigEnd = 0",
        );
        return;
    }
    if registers::SCTLR_EL1.get() & 1 != 0 {
        // EE also makes stage-1 table walks big-endian, and this guest's tables are not.
        tally.skip(format_args!("big-endian device accesses"), "the MMU is on");
        return;
    }
    let (v, _) = big_endian!("ldr {v:w}, [{a}]  // {w}", a = PERIPH_ID0, v = 0, w = 0);
    tally.equal(
        format_args!("big-endian `ldr w` PL011 PeriphID0"),
        v,
        0x1100_0000,
    );
    let (v, _) = big_endian!("ldrh {v:w}, [{a}]  // {w}", a = PERIPH_ID0, v = 0, w = 0);
    tally.equal(
        format_args!("big-endian `ldrh w` PL011 PeriphID0"),
        v,
        0x1100,
    );
    let (v, _) = big_endian!("ldrb {v:w}, [{a}]  // {w}", a = PERIPH_ID0, v = 0, w = 0);
    tally.equal(format_args!("big-endian `ldrb w` PL011 PeriphID0"), v, 0x11);
    // Swapped first, then sign-extended: UARTIBRD = 0x80 reads as 0x8000.
    set32(UARTIBRD, 0x80);
    let (v, _) = big_endian!("ldrsh {v}, [{a}]  // {w}", a = UARTIBRD, v = 0, w = 0);
    tally.equal(
        format_args!("big-endian `ldrsh x` UARTIBRD = 0x80"),
        v,
        0xffff_ffff_ffff_8000,
    );
    big_endian!(
        "str {v:w}, [{a}]  // {w}",
        a = UARTIMSC,
        v = 0x0c07_0000,
        w = 0
    );
    tally.equal(
        format_args!("UARTIMSC after big-endian `str w` 0x0c070000"),
        reg32(UARTIMSC),
        IMSC_A,
    );
    let ris = reg32(UARTRIS) as u32;
    let (v, w) = big_endian!("ldp {v:w}, {w:w}, [{a}]", a = UARTIMSC, v = 0, w = 0);
    tally.equal(
        format_args!("big-endian `ldp w, w` UARTIMSC"),
        v,
        0x0c07_0000,
    );
    tally.equal(
        format_args!("big-endian `ldp w, w` UARTRIS"),
        w,
        u64::from(ris.swap_bytes()),
    );
    big_endian!(
        "stp {v:w}, {w:w}, [{a}], #0",
        a = UARTIMSC,
        v = 0x8300_0000,
        w = 0
    );
    tally.equal(
        format_args!("UARTIMSC after big-endian `stp w, w` 0x83000000"),
        reg32(UARTIMSC),
        IMSC_B,
    );

    // EL0 has its own switch, SCTLR_EL1.E0E, which leaves EL1 (this code) little-endian.
    let sctlr = registers::SCTLR_EL1.get();
    // SAFETY: E0E changes only how EL0 accesses data, and nothing runs at EL0 but the probe.
    unsafe { veil_guest_rt::write_sysreg!(sctlr_el1, sctlr | (1 << 24)) };
    let (v, esr, _, _) = crate::holes::ldr_at_el0(PERIPH_ID0);
    // SAFETY: puts SCTLR_EL1 back as it was.
    unsafe { veil_guest_rt::write_sysreg!(sctlr_el1, sctlr) };
    tally.check(
        esr == 0 && v == 0x1100_0000,
        format_args!(
            "big-endian EL0 (E0E) `ldr w` PL011 PeriphID0 = {:#x} (ESR={:#x})",
            v, esr
        ),
        format_args!("0x11000000 and no exception"),
    );
}

/// A pair whose second element lies past the PL011's 4 KiB window, in the hole after it: the
/// whole instruction must abort and load nothing.
fn crossing_into_a_hole(tally: &mut Tally) {
    let (mut v, mut w) = (0x1111u64, 0x2222u64);
    let info = expect_exception(|| {
        // SAFETY: a pair load at the PL011's last register running into the hole after it;
        // the abort is caught, the outputs keep their values.
        unsafe {
            asm!("ldp {v:w}, {w:w}, [{b}]", b = in(reg) PCELL_ID3, v = inout(reg) v, w = inout(reg) w, options(nostack))
        }
    });
    // The fault may be reported at either element (Veil refuses the pair at the first; a CPU
    // performing it element by element faults at the second).
    let far = info.map_or(0, |i| i.far);
    let at = if far == PCELL_ID3 + 4 { far } else { PCELL_ID3 };
    tally.abort_is(
        format_args!("`ldp w, w` at PCellID3, into the hole"),
        info,
        ec::DATA_ABORT_SAME,
        at,
        Some(false),
    );
    tally.check(
        (v, w) == (0x1111, 0x2222),
        format_args!("registers after the aborted `ldp` = {:#x}, {:#x}", v, w),
        format_args!("unchanged 0x1111, 0x2222"),
    );
}

/// The first virtio-mmio slot, empty: MagicValue and Version through a pair.
fn virtio(tally: &mut Tally, host: &Host) {
    let magic = reg32(VIRTIO_MMIO);
    let version = reg32(VIRTIO_MMIO + 4);
    tally.equal(
        format_args!("virtio-mmio slot 0 MagicValue"),
        magic,
        VIRTIO_MAGIC,
    );
    tally.check(
        version == 1 || version == 2,
        format_args!("virtio-mmio slot 0 Version = {}", version),
        format_args!("1 (legacy) or 2"),
    );
    tally.equal(
        format_args!("virtio-mmio slot 0 DeviceID"),
        reg32(VIRTIO_MMIO + 8),
        0,
    );
    access!(tally, "ldp w, w, [virtio-mmio slot 0]", "ldp {v:w}, {w:w}, [{b}]", b = VIRTIO_MMIO, v = 0, w = 0;
            "MagicValue": v => magic, "Version": w => version);
    if !host.under_veil {
        tally.skip(
            format_args!("virtio-mmio widths"),
            "QEMU's transport answers every width",
        );
        return;
    }
    // Configuration space takes 64-bit accesses; the control registers only 32-bit ones.
    access!(tally, "ldr x, [virtio-mmio slot 0 config]", "ldr {v}, [{b}]", b = VIRTIO_MMIO + 0x100, v = !0; "": v => 0);
    tally.data_abort(
        format_args!("`ldrb w` virtio-mmio MagicValue (32-bit register)"),
        VIRTIO_MMIO,
        false,
        || {
            // SAFETY: a byte load of a device register, refused.
            unsafe {
                asm!("ldrb {v:w}, [{b}]", b = in(reg) VIRTIO_MMIO, v = out(reg) _, options(nostack))
            }
        },
    );
}

core::arch::global_asm!(
    // `memio_ldp_words(x0 = address) -> (x0, x1)`: one `ldp w2, w3, [x0]`, for
    // `through_aliases` to run from the RAM alias. Position-independent.
    ".section .text.memio_ldp_words, \"ax\"",
    ".balign 4",
    "memio_ldp_words:",
    "ldp w2, w3, [x0]",
    "mov x0, x2",
    "mov x1, x3",
    "ret",
    ".text",
);

unsafe extern "C" {
    fn memio_ldp_words();
}

/// With the guest's MMU on ([`crate::mmu`]): device accesses through a VA alias of the
/// devices, and a syndrome-less access executed from a VA alias of RAM. The hypervisor must use
/// the IPA for the device, the VA for FAR and the guest's translation of its PC to read the
/// instruction.
pub fn through_aliases(tally: &mut Tally) {
    let alias = |ipa: u64| ipa + DEVICE_ALIAS;
    set32(UARTIMSC, IMSC_A);
    let fr = reg32(UARTFR);
    access!(tally, "ldr w, [UARTFR alias]", "ldr {v:w}, [{b}]", b = alias(UARTFR), v = !0; "": v => fr);
    access!(tally, "ldp w, w, [UARTIMSC alias]", "ldp {v:w}, {w:w}, [{b}]", b = alias(UARTIMSC), v = !0, w = !0;
            "first": v => IMSC_A, "second": w => reg32(UARTRIS));
    access!(tally, "ldr w, [x, #4]! (x = UARTIMSC alias - 4)", "ldr {v:w}, [{b}, #4]!", b = alias(UARTIMSC) - 4, v = !0;
            "value": v => IMSC_A, "base": b => alias(UARTIMSC));
    access!(tally, "stp w, w, [x], #8 (x = UARTIMSC alias)", "stp {v:w}, {w:w}, [{b}], #8", b = alias(UARTIMSC), v = IMSC_B, w = 0;
            "then UARTIMSC": reg32(UARTIMSC) => IMSC_B, "base": b => alias(UARTIMSC) + 8);
    access!(tally, "ldrsb x, [x, x] (PL011 alias + 0xffc)", "ldrsb {v}, [{b}, {i}]", b = alias(PL011), v = 0, i = 0xffc;
            "value": v => 0xffff_ffff_ffff_ffb1);

    let code = memio_ldp_words as *const () as u64 + RAM_ALIAS;
    let (mut first, mut second) = (UARTIMSC, !0u64);
    let done = tally.completes(
        format_args!("`ldp w2, w3, [x0]` run from the RAM alias at {:#x}", code),
        || {
            // SAFETY: `memio_ldp_words` at its RAM alias is the same position-independent code;
            // it loads two device registers and returns, changing only x0-x3 and x30.
            unsafe {
                asm!("blr {f}", f = in(reg) code, inout("x0") first, out("x1") second,
                 out("x2") _, out("x3") _, out("x30") _, options(nostack))
            }
        },
    );
    if done.is_some() {
        tally.equal(
            format_args!("`ldp w2, w3, [x0]` from the RAM alias, first"),
            first,
            IMSC_B,
        );
        tally.equal(
            format_args!("`ldp w2, w3, [x0]` from the RAM alias, second"),
            second,
            reg32(UARTRIS),
        );
    }

    let hole = alias(PL011 + 0x1000);
    tally.data_abort(
        format_args!("`ldr w` at {:#x} (the hole after the PL011, aliased)", hole),
        hole,
        false,
        || {
            // SAFETY: a load from a hole: it aborts (caught).
            unsafe { asm!("ldr {v:w}, [{a}]", a = in(reg) hole, v = out(reg) _, options(nostack)) }
        },
    );
    tally.data_abort(
        format_args!("`stp w, w` at {:#x} (the hole, aliased)", hole),
        hole,
        true,
        || {
            // SAFETY: a store pair to a hole: it aborts (caught).
            unsafe { asm!("stp wzr, wzr, [{a}]", a = in(reg) hole, options(nostack)) }
        },
    );
    set32(UARTIMSC, 0);

    // A stage-1 walk that reads a table from a hole: an external abort on the walk (FSC
    // 0b0101LL with the level) or, as Veil reports it, a plain one (0x10); FAR is the VA.
    let va = WALK_INTO_A_HOLE;
    let info = expect_exception(|| {
        // SAFETY: a load whose translation reads a table in a hole: it aborts (caught).
        unsafe { asm!("ldr {v:w}, [{a}]", a = in(reg) va, v = out(reg) _, options(nostack)) }
    });
    match info {
        Some(i) => tally.check(
            i.ec() == ec::DATA_ABORT_SAME
                && matches!(i.iss() & 0x3f, 0x10 | 0x14..=0x17)
                && i.far == va,
            format_args!(
                "`ldr w` at {:#x}, whose table walk reads a hole, raised ESR={:#x} FAR={:#x}",
                va, i.esr, i.far
            ),
            format_args!(
                "an external abort (EC=0x25, FSC 0x10 or 0x14-0x17) with FAR={:#x}",
                va
            ),
        ),
        None => tally.fail(format_args!(
            "`ldr w` at {:#x}, whose table walk reads a hole, completed",
            va
        )),
    }
}

/// The PL031's PeriphID0, for `rtc` (0x31).
pub fn rtc_periph_id0() -> u64 {
    reg32(RTC_PERIPH_ID0)
}
