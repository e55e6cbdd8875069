//! `memio.test=holes`: every hole of the board answers like a bus with nothing on it.
//!
//! A load and a store at an address in each hole — below the GIC, between the GIC's frames and
//! after them, between the PL011, the PL031 and the virtio-mmio slots, after the slots up to
//! RAM, past the end of RAM, and two high addresses — must each raise a synchronous external
//! abort (EC 0x25, DFSC 0x10) with FAR = the address and WnR telling a store from a load, taken
//! in the guest's own vector, and the guest then goes on. So must a load pair and a store with
//! writeback (instructions without syndrome), which must also leave the base register as it
//! was. A load from EL1 on SP_EL0 must come through the EL1t vector, and one from EL0 must be
//! a data abort from a lower EL (EC 0x24) in the EL0 vector. A branch into a hole must raise an
//! instruction abort (EC 0x21, IFSC 0x10) with FAR and ELR = the target.
//!
//! On bare QEMU some of these addresses hold devices (flash, fw_cfg, PCIe); those are skipped.

use core::arch::asm;

use veil_guest_rt::exception::{Kind, Source, ec, expect_exception};
use veil_guest_rt::tally::Tally;

use crate::access::{AccessChecks, FSC_EXTERNAL_ABORT};
use crate::board::{GICC, GICD, GICR, GICR_STRIDE, Host, PL011, PL031, VIRTIO_MMIO};

/// An address with nothing behind it on Veil's board.
#[derive(Clone, Copy)]
struct Hole {
    address: u64,
    what: &'static str,
    /// Also a hole on bare QEMU `virt` (where some of Veil's holes hold devices).
    on_qemu: bool,
}

const fn hole(address: u64, what: &'static str, on_qemu: bool) -> Hole {
    Hole {
        address,
        what,
        on_qemu,
    }
}

pub fn run(tally: &mut Tally, host: &Host) {
    let (ram_base, ram_size) = host.ram;
    let ram_end = ram_base + ram_size;
    let gicr_end = GICR + host.cpus * GICR_STRIDE;
    let gic_holes = if host.gic_version == 2 {
        [
            hole(GICC + 0x2000, "past the 8 KiB GICv2 CPU interface", true),
            hole(
                0x0802_0000,
                "after the GICv2 CPU interface window (QEMU: GICv2m)",
                false,
            ),
            hole(GICR, "where GICv3 redistributors would be", true),
        ]
    } else {
        [
            hole(
                GICD + 0x1_0000,
                "between the distributor and the redistributors",
                true,
            ),
            hole(0x0808_0000, "where QEMU has its ITS", false),
            hole(gicr_end, "after the last redistributor", true),
        ]
    };
    let common = [
        hole(0x0, "address 0 (QEMU: flash)", false),
        hole(0x0500_0000, "below the GIC (QEMU: flash)", false),
        hole(GICD - 4, "the last word below the GIC (QEMU: flash)", false),
        hole(PL011 - 4, "the last word below the PL011", true),
        hole(PL011 + 0x1000, "after the PL011", true),
        hole(PL031 - 4, "the last word below the PL031", true),
        hole(PL031 + 0x1000, "after the PL031", true),
        hole(0x0902_0000, "0x0902_0000 (QEMU: fw_cfg)", false),
        hole(
            VIRTIO_MMIO - 4,
            "the last word below the virtio-mmio slots",
            true,
        ),
        hole(
            VIRTIO_MMIO + 32 * 0x200,
            "after the 32 virtio-mmio slots",
            true,
        ),
        hole(0x1000_0000, "0x1000_0000 (QEMU: PCIe MMIO)", false),
        hole(
            ram_base - 4,
            "the last word below RAM (QEMU: PCIe ECAM)",
            false,
        ),
        hole(ram_end, "the first word past RAM", true),
        hole(0x3f_ffff_fffc, "the last word below 256 GiB", true),
        hole(0x7f_0000_0000, "0x7f_0000_0000", true),
        hole(0x1_0000_0000_0000, "2^48", true),
    ];
    for h in gic_holes.iter().chain(common.iter()) {
        if !host.under_veil && !h.on_qemu {
            tally.skip(
                format_args!("hole at {:#x}, {}", h.address, h.what),
                "a device on bare QEMU",
            );
            continue;
        }
        load_and_store(tally, h);
    }

    let between = PL011 + 0x1000;
    pair_into_a_hole(tally, between);
    writeback_into_a_hole(tally, between);

    from_el1t(tally, between);
    from_el0(tally, between);
    fetch_from_a_hole(tally, hole(between, "after the PL011", true));
    let flash = hole(0x0500_0000, "below the GIC (QEMU: flash)", false);
    if host.under_veil {
        fetch_from_a_hole(tally, flash);
    } else {
        tally.skip(
            format_args!("branch to {:#x}, {}", flash.address, flash.what),
            "a device on bare QEMU",
        );
    }
}

fn load_and_store(tally: &mut Tally, h: &Hole) {
    let a = h.address;
    tally.data_abort(
        format_args!("`ldr w` at {:#x}, {}", a, h.what),
        a,
        false,
        || {
            // SAFETY: a load from an address where no RAM or device is: it aborts (caught) and
            // reads nothing Rust code owns.
            unsafe { asm!("ldr {v:w}, [{a}]", a = in(reg) a, v = out(reg) _, options(nostack)) }
        },
    );
    tally.data_abort(format_args!("`str w` at {:#x}, {}", a, h.what), a, true, || {
        // SAFETY: a store to an address where no RAM or device is: it aborts (caught).
        unsafe { asm!("str {v:w}, [{a}]", a = in(reg) a, v = in(reg) 0x5a5a_5a5au32, options(nostack)) }
    });
}

/// A load pair (no syndrome) into a hole: aborts, and loads nothing.
fn pair_into_a_hole(tally: &mut Tally, a: u64) {
    let (mut v, mut w) = (0x1111u64, 0x2222u64);
    tally.data_abort(format_args!("`ldp x, x` at {:#x}", a), a, false, || {
        // SAFETY: as in load_and_store; the outputs keep their values on the abort.
        unsafe {
            asm!("ldp {v}, {w}, [{a}]", a = in(reg) a, v = inout(reg) v, w = inout(reg) w, options(nostack))
        }
    });
    tally.check(
        (v, w) == (0x1111, 0x2222),
        format_args!(
            "registers after the aborted `ldp x, x` = {:#x}, {:#x}",
            v, w
        ),
        format_args!("unchanged 0x1111, 0x2222"),
    );
}

/// A store with pre-index writeback into a hole: aborts, and leaves the base as it was.
fn writeback_into_a_hole(tally: &mut Tally, a: u64) {
    let mut base = a - 0x10;
    tally.data_abort(format_args!("`str w, [x, #16]!` at {:#x}", a), a, true, || {
        // SAFETY: as in load_and_store; `base` keeps its value on the abort.
        unsafe { asm!("str {v:w}, [{b}, #16]!", b = inout(reg) base, v = in(reg) 0u32, options(nostack)) }
    });
    tally.equal(
        format_args!("base after the aborted `str w, [x, #16]!`"),
        base,
        a - 0x10,
    );
}

core::arch::global_asm!(
    // A vector table for checks the runtime's handler cannot take, which report in x9-x11
    // (ESR, FAR, ELR of the first exception; the code that arms the table zeroes them):
    // - 0x200, synchronous from EL1h: a branch into a hole (`fetch_from_a_hole`) returns to the
    //   caller's link register (the runtime's handler would resume at the faulting address + 4,
    //   still in the hole);
    // - 0x400, synchronous from EL0 (`from_el0`): an SVC goes back to EL1h at the instruction
    //   after it; anything else is recorded and skipped, and EL0 goes on.
    // Every other entry goes to the runtime's table, which reports the exception as unexpected.
    // Uses x9-x13 only.
    ".section .text.memio_probe_vectors, \"ax\"",
    ".balign 0x800",
    "memio_probe_vectors:",
    ".irp offset, 0x000, 0x080, 0x100, 0x180",
    ".balign 0x80",
    "b __veil_rt_vectors + \\offset",
    ".endr",
    ".balign 0x80",
    "mrs x9, esr_el1",
    "mrs x10, far_el1",
    "mrs x11, elr_el1",
    "msr elr_el1, x30",
    "eret",
    ".irp offset, 0x280, 0x300, 0x380",
    ".balign 0x80",
    "b __veil_rt_vectors + \\offset",
    ".endr",
    ".balign 0x80",
    "mrs x12, esr_el1",
    "lsr x13, x12, #26",
    "cmp x13, #0x15",
    "b.eq 1f",
    "mov x9, x12",
    "mrs x10, far_el1",
    "mrs x11, elr_el1",
    "add x13, x11, #4",
    "msr elr_el1, x13",
    "eret",
    // SVC: its preferred return address is already the next instruction; return to EL1h with
    // D, A, I and F masked, as the runtime runs.
    "1: mov x13, #0x3c5",
    "msr spsr_el1, x13",
    "eret",
    ".irp offset, 0x480, 0x500, 0x580, 0x600, 0x680, 0x700, 0x780",
    ".balign 0x80",
    "b __veil_rt_vectors + \\offset",
    ".endr",
    ".text",
);

unsafe extern "C" {
    static memio_probe_vectors: u8;
}

/// Branches (with link) to `h.address`, a hole: an instruction abort must come back.
fn fetch_from_a_hole(tally: &mut Tally, h: Hole) {
    let vectors = core::ptr::addr_of!(memio_probe_vectors) as u64;
    let (esr, far, elr): (u64, u64, u64);
    // SAFETY: the branch goes to an address with nothing behind it, so it cannot execute
    // anything; the abort enters `memio_probe_vectors`, which returns to the instruction after
    // the BLR with only x9-x11 (outputs), x30 (clobbered) and ELR_EL1 changed. VBAR_EL1 is put
    // back before the runtime's handler could be needed again.
    unsafe {
        asm!(
            "mrs {old}, vbar_el1",
            "msr vbar_el1, {vectors}",
            "isb",
            "mov x9, xzr",
            "mov x10, xzr",
            "mov x11, xzr",
            "blr {target}",
            "msr vbar_el1, {old}",
            "isb",
            vectors = in(reg) vectors,
            target = in(reg) h.address,
            old = out(reg) _,
            out("x9") esr,
            out("x10") far,
            out("x11") elr,
            out("x30") _,
            options(nostack),
        );
    }
    let class = ((esr >> 26) & 0x3f) as u8;
    let fsc = (esr & 0x3f) as u32;
    tally.check(
        class == ec::INSTRUCTION_ABORT_SAME
            && fsc == FSC_EXTERNAL_ABORT
            && far == h.address
            && elr == h.address,
        format_args!(
            "branch to {:#x} ({}) raised ESR={:#x} FAR={:#x} ELR={:#x}",
            h.address, h.what, esr, far, elr
        ),
        format_args!(
            "an instruction abort: EC=0x21 IFSC=0x10 FAR=ELR={:#x}",
            h.address
        ),
    );
}

/// At EL1 on SP_EL0 (EL1t), a load from a hole: the abort must come through the vector for the
/// current EL with SP_EL0 (offset 0x000).
fn from_el1t(tally: &mut Tally, a: u64) {
    let info = expect_exception(|| {
        // SAFETY: SP_EL0 is given SP's value and used only by this block, which touches no
        // stack; the exception is taken on SP_EL1 (the same value, frames below it) and ERET
        // comes back to EL1t, where SPSel is set back. The load aborts (caught).
        unsafe {
            asm!(
                "mov {tmp}, sp",
                "msr sp_el0, {tmp}",
                "msr spsel, #0",
                "ldr {v:w}, [{a}]",
                "msr spsel, #1",
                a = in(reg) a,
                tmp = out(reg) _,
                v = out(reg) _,
                options(nostack),
            )
        }
    });
    let right = info.is_some_and(|i| {
        i.kind == Kind::Synchronous
            && i.source == Source::CurrentElSp0
            && i.ec() == ec::DATA_ABORT_SAME
            && i.iss() & 0x3f == FSC_EXTERNAL_ABORT
            && i.far == a
    });
    match info {
        Some(i) => tally.check(
            right,
            format_args!(
                "`ldr w` at {:#x} from EL1t raised ESR={:#x} FAR={:#x} ({:?} from {:?})",
                a, i.esr, i.far, i.kind, i.source
            ),
            format_args!(
                "an external abort (EC=0x25 FSC=0x10) through the EL1t vector (CurrentElSp0)"
            ),
        ),
        None => tally.fail(format_args!(
            "`ldr w` at {:#x} from EL1t completed, expected an external abort",
            a
        )),
    }
}

/// Runs `ldr w, [address]` at EL0 (MMU off: no permission checks); returns (value loaded, ESR,
/// FAR, ELR of the exception, all 0 if there was none).
pub fn ldr_at_el0(address: u64) -> (u64, u64, u64, u64) {
    let vectors = core::ptr::addr_of!(memio_probe_vectors) as u64;
    let (value, esr, far, elr): (u64, u64, u64, u64);
    // SAFETY: ERET drops to EL0t at label 1 with interrupts masked; EL0 runs one load and an
    // SVC, which `memio_probe_vectors` turns back into EL1h at label 2 (an abort of the load is
    // recorded in x9-x11 and skipped). Only the listed registers, ELR_EL1 and SPSR_EL1
    // change; VBAR_EL1 is put back before the runtime's handler could be needed again.
    unsafe {
        asm!(
            "mrs {old}, vbar_el1",
            "msr vbar_el1, {vectors}",
            "isb",
            "mov x9, xzr",
            "mov x10, xzr",
            "mov x11, xzr",
            "mov {v}, xzr",
            "adr {tmp}, 1f",
            "msr elr_el1, {tmp}",
            "mov {tmp}, #0x3c0",
            "msr spsr_el1, {tmp}",
            "eret",
            "1: ldr {v:w}, [{a}]",
            "svc #0",
            "2: msr vbar_el1, {old}",
            "isb",
            vectors = in(reg) vectors,
            a = in(reg) address,
            old = out(reg) _,
            tmp = out(reg) _,
            v = out(reg) value,
            out("x9") esr,
            out("x10") far,
            out("x11") elr,
            out("x12") _,
            out("x13") _,
            options(nostack),
        );
    }
    (value, esr, far, elr)
}

/// From EL0: a load from a hole is a data abort from a lower EL (EC 0x24) in the EL0 vector;
/// a load from the PL011 is emulated as from EL1.
fn from_el0(tally: &mut Tally, hole: u64) {
    let (_, esr, far, _) = ldr_at_el0(hole);
    let class = ((esr >> 26) & 0x3f) as u8;
    tally.check(
        class == ec::DATA_ABORT_LOWER
            && esr & 0x3f == u64::from(FSC_EXTERNAL_ABORT)
            && esr & (1 << 6) == 0
            && far == hole,
        format_args!(
            "`ldr w` at {:#x} from EL0 raised ESR={:#x} FAR={:#x}",
            hole, esr, far
        ),
        format_args!(
            "an external abort from a lower EL: EC=0x24 FSC=0x10 WnR=0 FAR={:#x}",
            hole
        ),
    );
    // SAFETY: UARTFR is a read-only register of the board's PL011; reading it has no effect.
    let fr = u64::from(unsafe { crate::board::read32(PL011 + 0x18) });
    let (value, esr, _, _) = ldr_at_el0(PL011 + 0x18);
    tally.check(
        esr == 0 && value == fr,
        format_args!("`ldr w` UARTFR from EL0 = {:#x} (ESR={:#x})", value, esr),
        format_args!("{:#x} and no exception", fr),
    );
}
