//! `veil-guest-irq`: interrupt and timer virtualization, checked from the guest's side. Each
//! test sets up the GIC the DTB describes, takes real interrupts in its EL1 IRQ vector and
//! prints what it saw, so the same binary tells a hypervisor's bugs (under Veil) from its own
//! (on bare QEMU at EL1).
//!
//! Command line (`/chosen/bootargs`): `irq.test=<name>`, one of
//!
//! - `vtimer`: 100 EL1 virtual timer interrupts (INTID 27), one per millisecond (CNTV_TVAL),
//!   each acknowledged and ended in the IRQ handler; prints the lateness spread.
//! - `ptimer`: the same with the EL1 physical timer (CNTP_*, INTID 30).
//! - `sgi`: SGI ping-pong between vCPU 0 and every other vCPU (1,000 round trips per pair,
//!   counted on both sides), then a broadcast from each vCPU to all the others.
//! - `priority`: the priority mask holds a pending interrupt back until it is raised; in a
//!   handler, a more urgent interrupt preempts and a less urgent one waits.
//! - `active`: pending and active state set and cleared through the distributor and (GICv3)
//!   the redistributor, read back, and what it does to delivery.
//! - `uart-rx`: the PL011's level-triggered receive interrupt (SPI 1, INTID 33) wakes a WFI;
//!   the handler drains the FIFO and sees the line drop. The host types the input.
//!
//! Output contract, one line each, all starting `irq: `:
//!
//! - `irq: test <name>: GICv<N>, <n> vCPU(s), counter <Hz> Hz` first (information).
//! - per check, `irq: ok <what>` or `irq: FAIL <what>`; information lines without either word.
//! - `uart-rx` only: `irq: waiting for input` when it starts waiting (the host's cue to type),
//!   and `irq: uart-rx got "<text>"` with the received line.
//! - `irq: all checks passed` or `irq: <N> checks FAILED`, then PSCI SYSTEM_OFF.
//!
//! A broken command line, a missing GIC, an unexpected exception or a panic print
//! `irq: FAIL ...` and power off too.

#![no_std]
#![no_main]
#![warn(clippy::undocumented_unsafe_blocks)]

mod active;
mod dispatch;
mod passthrough;
mod priority;
mod sgi;
mod spread;
mod timer;
mod uart;
mod wait;

use veil_guest_rt::sysreg::{Readable, registers};
use veil_guest_rt::tally::{Summary, Tally};
use veil_guest_rt::{bootargs, dtb, gic, power_off, println};

veil_guest_rt::guest!(name: "irq", main: main);

/// Every test, by its `irq.test=` name.
const TESTS: [&str; 8] = [
    "vtimer",
    "ptimer",
    "sgi",
    "priority",
    "active",
    "uart-rx",
    "passthrough",
    "passthrough-reset",
];

fn main(_dtb: usize) -> ! {
    let args = dtb::bootargs().unwrap_or("");
    let Some(test) = bootargs::value(args, "irq.test") else {
        println!(
            "irq: FAIL no irq.test= on the command line (one of {:?})",
            TESTS
        );
        power_off()
    };
    if !TESTS.contains(&test) {
        println!(
            "irq: FAIL unknown test irq.test={} (one of {:?})",
            test, TESTS
        );
        power_off()
    }
    let Some(gic) = gic::discover() else {
        println!("irq: FAIL the DTB describes no GICv2 or GICv3");
        power_off()
    };
    let cpus = dispatch::cpus();
    println!(
        "irq: test {}: GICv{}, {} vCPU(s), counter {} Hz",
        test,
        gic.version(),
        cpus.len(),
        registers::CNTFRQ_EL0.get()
    );
    // Only vCPU 0 reports.
    let mut tally = Tally::new(Summary::Failures);
    if let Err(refusal) = dispatch::init(gic) {
        tally.fail(format_args!("GIC set-up on vCPU 0: {}", refusal));
        tally.finish()
    }
    match test {
        "vtimer" => timer::run(&mut tally, timer::Timer::Virtual),
        "ptimer" => timer::run(&mut tally, timer::Timer::Physical),
        "sgi" => sgi::run(&mut tally, &cpus),
        "priority" => priority::run(&mut tally),
        "active" => active::run(&mut tally),
        "uart-rx" => uart::run(&mut tally),
        "passthrough" => passthrough::run(&mut tally),
        "passthrough-reset" => passthrough::run_reset(&mut tally),
        _ => unreachable!("checked against TESTS"),
    }
    tally.finish()
}
