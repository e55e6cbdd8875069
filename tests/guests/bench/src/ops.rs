//! The operations that are one instruction from the guest's side: a hypercall, a trapped
//! system-register read, and loads and stores to emulated devices. Under Veil each one is a
//! full exit (vector, save, decode, handle, restore, ERET); bare on QEMU each is answered by
//! QEMU itself and costs the one instruction.
//!
//! Each loop is measured twice, with and without the operation: what the loop needs anyway
//! (re-loading the function ID that the previous call overwrote, say) is in both.

use veil_guest_rt::gic::Gic;
use veil_guest_rt::probe::{read32, write32};

use crate::Outcome;
use crate::timed_loop;
use crate::timing::per_op;

/// The guest's PL011 (QEMU `virt` layout, which Veil's virtual board copies).
const PL011_BASE: usize = 0x0900_0000;
/// UARTFR, the flag register: reading it has no side effect.
const UARTFR: usize = 0x018;
/// UARTIMSC, the interrupt mask: rewriting its current value changes nothing.
const UARTIMSC: usize = 0x038;
/// GICD_TYPER, a read-only distributor register.
const GICD_TYPER: usize = 0x004;

/// Times an HVC with function ID `fid` (loaded into w0 with `movz`/`movk` before each call,
/// since the call returns its result there). SMCCC lets the callee change x0..x17, so all of
/// them are clobbers.
macro_rules! hvc_loop {
    ($iters:expr, $lo:literal, $hi:literal, [$($op:literal)?]) => {
        // SAFETY: the function IDs used here only report (a version, or NOT_SUPPORTED); every
        // register SMCCC lets the callee change is declared clobbered.
        unsafe {
            timed_loop!(
                $iters,
                [concat!("movz w0, #", $lo), concat!("movk w0, #", $hi, ", lsl #16"), $($op)?],
                lateout("x0") _, lateout("x1") _, lateout("x2") _, lateout("x3") _,
                lateout("x4") _, lateout("x5") _, lateout("x6") _, lateout("x7") _,
                lateout("x8") _, lateout("x9") _, lateout("x10") _, lateout("x11") _,
                lateout("x12") _, lateout("x13") _, lateout("x14") _, lateout("x15") _,
                lateout("x16") _, lateout("x17") _,
                options(nostack),
            )
        }
    };
}

/// `null_hvc`: an SMCCC call nobody implements (fast, SMC32, owner 5 "standard hypervisor
/// service", function 0x1234), answered NOT_SUPPORTED: the bare cost of a hypercall round trip.
pub fn null_hvc(iters: u64) -> Outcome {
    let with = hvc_loop!(iters, "0x1234", "0x8500", ["hvc #0"]);
    let without = hvc_loop!(iters, "0x1234", "0x8500", []);
    per_op(with, without, iters)
}

/// `vm_switch`: Veil's VEIL_YIELD (0xC600_0002) while a second VM on the same CPU runs the same
/// loop. One iteration is this VM's yield, a switch to the other VM, its yield, and a switch
/// back: the figure is half of it, one yield hypercall plus one VM switch.
pub fn vm_switch(iters: u64) -> Outcome {
    // SAFETY: VEIL_YIELD only gives the CPU away; it changes no guest state.
    let answer = unsafe { veil_guest_rt::smccc::hvc64(0xc600_0002, 0, 0, 0) };
    if answer[0] != 0 {
        return Outcome::Unavailable("VEIL_YIELD is not implemented here");
    }
    let with = hvc_loop!(iters, "0x0002", "0xc600", ["hvc #0"]);
    let without = hvc_loop!(iters, "0x0002", "0xc600", []);
    match per_op(with, without, iters) {
        Outcome::Measured { extra, iters } => Outcome::Measured {
            extra: extra / 2,
            iters,
        },
        other => other,
    }
}

/// `psci_version`: PSCI_VERSION (0x8400_0000), the simplest call with a real answer.
pub fn psci_version(iters: u64) -> Outcome {
    let with = hvc_loop!(iters, "0x0000", "0x8400", ["hvc #0"]);
    let without = hvc_loop!(iters, "0x0000", "0x8400", []);
    per_op(with, without, iters)
}

/// `sysreg_trap`: MRS ID_AA64PFR0_EL1, which HCR_EL2.TID3 traps so that Veil can answer from
/// the VM's sanitized ID registers.
pub fn sysreg_trap(iters: u64) -> Outcome {
    // SAFETY: reading an ID register has no side effects.
    let with = unsafe {
        timed_loop!(iters, ["mrs {v}, id_aa64pfr0_el1"], v = out(reg) _, options(nostack))
    };
    // SAFETY: an empty loop.
    let without = unsafe { timed_loop!(iters, [], options(nomem, nostack)) };
    per_op(with, without, iters)
}

/// `gicd_read`: a 32-bit read of GICD_TYPER, which an emulated distributor answers from the
/// VM's configuration. Probed once first: without a distributor behind the address the read
/// raises an abort, and the operation is reported unavailable.
pub fn gicd_read(gic: Option<&Gic>, iters: u64) -> Outcome {
    let Some(gic) = gic else {
        return Outcome::Unavailable("the DTB describes no GIC");
    };
    let typer = gic.distributor() + GICD_TYPER;
    if let Err(refusal) = read32(typer, "GICD_TYPER read") {
        return Outcome::Refused("no distributor answers", refusal);
    }
    mmio_read_loop(typer, iters)
}

/// `pl011_read`: a 32-bit read of UARTFR from the emulated PL011.
pub fn pl011_read(iters: u64) -> Outcome {
    let flags = PL011_BASE + UARTFR;
    if let Err(refusal) = read32(flags, "UARTFR read") {
        return Outcome::Refused("the PL011 does not answer", refusal);
    }
    mmio_read_loop(flags, iters)
}

/// `pl011_write`: a 32-bit write of UARTIMSC with the value it already holds, so the
/// measurement has no effect on the console.
pub fn pl011_write(iters: u64) -> Outcome {
    let mask = PL011_BASE + UARTIMSC;
    let current = match read32(mask, "UARTIMSC read") {
        Ok(value) => value,
        Err(refusal) => return Outcome::Refused("the PL011 does not answer", refusal),
    };
    // Rewriting UARTIMSC with its own value changes nothing.
    if let Err(refusal) = write32(mask, current, "UARTIMSC write") {
        return Outcome::Refused("the PL011 refuses writes", refusal);
    }
    // SAFETY: as above, `iters` times; the address is the PL011's, owned by no Rust object.
    let with = unsafe {
        timed_loop!(
            iters,
            ["str {v:w}, [{a}]"],
            a = in(reg) mask,
            v = in(reg) current,
            options(nostack),
        )
    };
    // SAFETY: an empty loop.
    let without = unsafe { timed_loop!(iters, [], options(nomem, nostack)) };
    per_op(with, without, iters)
}

/// Times a 32-bit load from the device register at `address`, which has been probed.
fn mmio_read_loop(address: usize, iters: u64) -> Outcome {
    // SAFETY: reading this register has no side effect (the callers pick such registers), and
    // the probe showed the read does not fault.
    let with = unsafe {
        timed_loop!(
            iters,
            ["ldr {v:w}, [{a}]"],
            a = in(reg) address,
            v = out(reg) _,
            options(nostack),
        )
    };
    // SAFETY: an empty loop.
    let without = unsafe { timed_loop!(iters, [], options(nomem, nostack)) };
    per_op(with, without, iters)
}
