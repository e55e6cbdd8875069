//! Device accesses from and into every general-purpose register.
//!
//! Veil performs a load or store on an emulated device on one of three paths, each moving the
//! value between the device and the guest's Rt its own way: a 32-bit load of a register the
//! VM publishes is answered in the exception vector itself (UARTFR, GICD_TYPER: a jump table
//! over Rt); other single accesses take a short exit into Rust that saves every register but
//! reloads only x0-x18 and x30, unless the access loaded one of x19-x29 (UARTIMSC, a 16-bit
//! UARTFR load, a UARTIMSC store); anything else the full exit. So each access here is tried
//! with Rt = x0..x30 and XZR, every other register holding a known pattern: a load's value
//! must land in Rt and nowhere else, XZR must drop it, a store must write Rt's value, and no
//! register may change otherwise.
//!
//! The device's address is in SP_EL0, used as the base register (`[sp, #offset]` after
//! `msr spsel, #0`), so that all 31 general-purpose registers are free for the patterns. An
//! exception taken meanwhile still runs on SP_EL1, the guest's real stack.

use crate::board::{GICD, PL011};

use veil_guest_rt::exception::expect_exception;
use veil_guest_rt::tally::Tally;

use veil_guest_rt::regprobe::pattern;

// One probe per (access, Rt): `extern "C" fn(out: *mut [u64; 31], base: u64)`. Sets SP_EL0 to
// `base`, loads x0..x30 with pattern(n), performs the access on SP_EL0, stores x0..x30 to `out`
// (veil_guest_rt::regprobe).
macro_rules! probe_body {
    ($name:literal, $insn:literal) => {
        veil_guest_rt::regprobe_per_rt!(
            concat!("memio_dest_", $name),
            "    msr     sp_el0, x1\n",
            veil_guest_rt::regprobe_patterns!(),
            "    msr     spsel, #0\n",
            concat!("    ", $insn, "\n"),
            "    msr     spsel, #1\n",
        )
    };
}

core::arch::global_asm!(
    probe_body!("fr", "ldr w\\rt, [sp, #0x18]"),
    probe_body!("fr_half", "ldrh w\\rt, [sp, #0x18]"),
    probe_body!("imsc", "ldr w\\rt, [sp, #0x38]"),
    probe_body!("imsc_store", "str w\\rt, [sp, #0x38]"),
    probe_body!("typer", "ldr w\\rt, [sp, #0x4]"),
);

/// A probe: x0..x30 after the access.
type Probe = unsafe extern "C" fn(out: *mut [u64; 31], base: u64);

unsafe extern "C" {
    static memio_dest_fr_table: [Probe; 32];
    static memio_dest_fr_half_table: [Probe; 32];
    static memio_dest_imsc_table: [Probe; 32];
    static memio_dest_imsc_store_table: [Probe; 32];
    static memio_dest_typer_table: [Probe; 32];
}

const UARTFR: u64 = PL011 + 0x18;
const UARTIMSC: u64 = PL011 + 0x38;
const GICD_TYPER: u64 = GICD + 0x4;
/// A UARTIMSC value for the loads: modem and error interrupt masks only (see `mmio`).
const IMSC_LOADED: u64 = 0x70c;
/// UARTIMSC's writable bits.
const IMSC_BITS: u64 = 0x7ff;

/// What a probe is expected to do to Rt.
enum Effect {
    /// A load: Rt receives the value.
    Loads(u64),
    /// A store: Rt keeps its pattern, and the device register then reads as `f(pattern)`.
    Stores(fn(u64) -> u64),
}

fn read32(address: u64) -> u64 {
    // SAFETY: callers pass registers of the board's PL011 and GIC distributor, owned by no
    // Rust object; reading them has no side effect.
    u64::from(unsafe { crate::board::read32(address) })
}

fn write32(address: u64, value: u64) {
    // SAFETY: callers pass UARTIMSC with modem, error or receive interrupt masks, which raise
    // nothing on a UART without input.
    unsafe { crate::board::write32(address, value as u32) }
}

/// Runs each probe of `table` on the device at `base` and checks every register after it.
fn every_register(tally: &mut Tally, what: &str, table: &[Probe; 32], base: u64, effect: Effect) {
    let mut bad = 0;
    for (rt, probe) in table.iter().enumerate() {
        let mut out = [0u64; 31];
        // SAFETY: the probe follows the procedure-call standard (x18..x30 saved and restored),
        // writes only `out`, and accesses one device register at `base` (see the callers).
        if let Some(info) = expect_exception(|| unsafe { probe(&mut out, base) }) {
            bad += 1;
            tally.fail(format_args!("{what} with Rt = x{rt} raised {info}"));
            continue;
        }
        for (n, &got) in out.iter().enumerate() {
            let want = match effect {
                Effect::Loads(value) if n == rt => value,
                _ => pattern(n),
            };
            if got != want {
                bad += 1;
                tally.fail(format_args!(
                    "{what} with Rt = x{rt}: x{n} = {got:#x}, expected {want:#x}"
                ));
            }
        }
        if let Effect::Stores(stored) = effect {
            let written = if rt == 31 { 0 } else { pattern(rt) };
            // Only the register's own bits: QEMU's model (bare runs) keeps the others.
            let got = read32(UARTIMSC) & IMSC_BITS;
            if got != stored(written) {
                bad += 1;
                tally.fail(format_args!(
                    "{what} from x{rt} ({written:#x}): the register then reads {got:#x}, expected {:#x}",
                    stored(written)
                ));
            }
        }
    }
    if bad == 0 {
        tally.pass(format_args!(
            "{what} with Rt = each of x0-x30 and XZR: every register as expected"
        ));
    }
}

pub fn run(tally: &mut Tally) {
    let fr = read32(UARTFR);
    let typer = read32(GICD_TYPER);
    let saved_imsc = read32(UARTIMSC);
    // SAFETY: the tables are read-only data filled by the assembler with the probes' addresses.
    let tables = unsafe {
        (
            &memio_dest_fr_table,
            &memio_dest_fr_half_table,
            &memio_dest_imsc_table,
            &memio_dest_imsc_store_table,
            &memio_dest_typer_table,
        )
    };
    every_register(
        tally,
        "`ldr w, [UARTFR]`",
        tables.0,
        PL011,
        Effect::Loads(fr),
    );
    every_register(
        tally,
        "`ldrh w, [UARTFR]`",
        tables.1,
        PL011,
        Effect::Loads(fr & 0xffff),
    );
    write32(UARTIMSC, IMSC_LOADED);
    every_register(
        tally,
        "`ldr w, [UARTIMSC]`",
        tables.2,
        PL011,
        Effect::Loads(IMSC_LOADED),
    );
    every_register(
        tally,
        "`str w, [UARTIMSC]`",
        tables.3,
        PL011,
        Effect::Stores(|value| value & IMSC_BITS),
    );
    write32(UARTIMSC, saved_imsc);
    every_register(
        tally,
        "`ldr w, [GICD_TYPER]`",
        tables.4,
        GICD,
        Effect::Loads(typer),
    );
}
