//! `veil-guest-bench`: Veil's benchmark guest. It times the operations whose cost a hypervisor
//! decides — a trapped hypercall, a trapped system register, an emulated MMIO access, an
//! interrupt from the virtual timer, an IPI between vCPUs, and the boot itself — and prints
//! how many instructions each costs.
//!
//! The clock is the virtual counter. Under QEMU with `-icount shift=0,align=off,sleep=off` one
//! nanosecond of virtual time is one executed instruction, at any exception level, and `virt`'s
//! counter runs at 1 GHz, so a counter difference is an instruction count and every run gives
//! the same numbers. Each operation runs in a counted loop between two counter reads (each
//! fenced by ISBs, see [`timing`]), and the same loop without the operation is subtracted: a
//! figure is the *extra* instructions one operation costs, itself included. Run bare on QEMU
//! (no hypervisor) the same guest gives the baseline a trapping operation would cost without
//! Veil (usually 1: the instruction itself, because QEMU emulates the device or PSCI call in
//! its own code).
//!
//! Command line (`/chosen/bootargs`): `bench.iters=N` (default 1000), `bench.quick` (20
//! iterations, for a smoke test), `bench.only=OP[,OP..]` (only these operations).
//!
//! Output contract, one line each, all starting `bench: `:
//!
//! - `bench: hypervisor <Veil|none>, GICv<N>, <n> vCPU(s), counter <Hz> Hz, iters=<N>`
//!   (information; parsers skip it).
//! - per operation, in [`OPS`] order: `bench: <op> <instructions-per-op> iters=<N>` (a plain
//!   integer when the average is exact, else two decimals; `boot` has no `iters=`), or
//!   `bench: <op> unavailable (<why>)`.
//! - `bench: done`, then PSCI SYSTEM_OFF.
//! - a broken command line: `bench: FAIL <what>`, then SYSTEM_OFF. The runtime reports anything
//!   unexpected (an exception outside a probe, a panic) as `bench: FAIL ...` too.

#![no_std]
#![no_main]
#![warn(clippy::undocumented_unsafe_blocks)]

mod ipi;
mod op_names;
mod ops;
mod timing;
mod vtimer;

use core::fmt;

use op_names::OPS;
use veil_guest_rt::sysreg::{Readable, registers};
use veil_guest_rt::{bootargs, dtb, gic, power_off, println, probe, smccc};

veil_guest_rt::guest!(name: "bench", main: main);

/// Iterations per operation without `bench.iters=` or `bench.quick`.
const DEFAULT_ITERS: u64 = 1000;
/// Iterations with `bench.quick`: enough to run every path, quick enough for `cargo xtask test`.
const QUICK_ITERS: u64 = 20;

/// Veil's vendor-hypervisor Call UID query (SMCCC owner 6) and the first word of its answer
/// (docs/HYPERCALLS.md); anything else means some other hypervisor, or none.
const VENDOR_HYP_CALL_UID: u32 = 0x8600_FF01;
const VEIL_UID_WORD0: u64 = 0x620b_7d5e;

/// What a run was asked to do.
pub struct Config {
    /// Iterations of each timed loop.
    pub iters: u64,
    /// `bench.only=` as given, or `None` for every operation.
    only: Option<&'static str>,
    /// Whether Veil answered the vendor UID query.
    pub under_veil: bool,
}

impl Config {
    /// Whether `op` should run.
    fn wants(&self, op: &str) -> bool {
        self.only
            .is_none_or(|only| only.split(',').any(|o| o == op))
    }
}

/// The result of one operation.
#[derive(Clone, Copy)]
pub enum Outcome {
    /// `extra` instructions over `iters` operations.
    Measured { extra: i64, iters: u64 },
    /// A single reading, not an average (`boot`).
    Single(u64),
    /// The operation cannot be measured here, and why.
    Unavailable(&'static str),
    /// The operation cannot be measured because a set-up step or probe was refused.
    Refused(&'static str, probe::Refusal),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Measured { extra, iters } => {
                write_average(f, *extra, *iters)?;
                write!(f, " iters={iters}")
            }
            Outcome::Single(count) => write!(f, "{count}"),
            Outcome::Unavailable(why) => write!(f, "unavailable ({why})"),
            Outcome::Refused(what, refusal) => write!(f, "unavailable ({what}: {refusal})"),
        }
    }
}

/// `extra / iters` as an integer when exact (the usual case under icount), else with two
/// decimals, truncated; integer arithmetic only, so no FP formatting code is linked.
fn write_average(f: &mut fmt::Formatter<'_>, extra: i64, iters: u64) -> fmt::Result {
    let sign = if extra < 0 { "-" } else { "" };
    let magnitude = u128::from(extra.unsigned_abs());
    let iters = u128::from(iters.max(1));
    let whole = magnitude / iters;
    let rest = magnitude % iters;
    if rest == 0 {
        write!(f, "{sign}{whole}")
    } else {
        write!(f, "{sign}{whole}.{:02}", rest * 100 / iters)
    }
}

fn main(_dtb: usize) -> ! {
    let args = dtb::bootargs().unwrap_or("");
    let config = match parse_args(args) {
        Ok(config) => config,
        Err(why) => {
            println!("bench: FAIL {}", why);
            power_off()
        }
    };
    let gic = gic::discover();
    let cpus = dtb_cpus();
    println!(
        "bench: hypervisor {}, GICv{}, {} vCPU(s), counter {} Hz, iters={}",
        if config.under_veil { "Veil" } else { "none" },
        gic.as_ref().map_or(0, gic::Gic::version),
        cpus.count,
        registers::CNTFRQ_EL0.get(),
        config.iters
    );

    // One run of the timer measures both vtimer_latency and virtual_eoi.
    let mut timer = None;
    for op in OPS {
        if !config.wants(op) {
            continue;
        }
        let outcome = match op {
            "boot" => Outcome::Single(veil_guest_rt::entry::boot_counter()),
            "null_hvc" => ops::null_hvc(config.iters),
            "psci_version" => ops::psci_version(config.iters),
            "sysreg_trap" => ops::sysreg_trap(config.iters),
            "gicd_read" => ops::gicd_read(gic.as_ref(), config.iters),
            "pl011_read" => ops::pl011_read(config.iters),
            "pl011_write" => ops::pl011_write(config.iters),
            "vtimer_latency" => {
                timer
                    .get_or_insert_with(|| vtimer::measure(gic.as_ref(), config.iters))
                    .latency
            }
            "virtual_eoi" => {
                timer
                    .get_or_insert_with(|| vtimer::measure(gic.as_ref(), config.iters))
                    .eoi
            }
            "ipi_roundtrip" => ipi::roundtrip(gic.as_ref(), cpus, config.iters),
            "vm_switch" => vm_switch(&config),
            _ => unreachable!("every name in OPS has an arm"),
        };
        println!("bench: {} {}", op, outcome);
    }
    println!("bench: done");
    power_off()
}

/// Reads the command line; an error names what is wrong with it.
fn parse_args(args: &'static str) -> Result<Config, &'static str> {
    let mut iters = if bootargs::has(args, "bench.quick") {
        QUICK_ITERS
    } else {
        DEFAULT_ITERS
    };
    if let Some(text) = bootargs::value(args, "bench.iters") {
        iters = match text.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => return Err("bench.iters must be a positive integer"),
        };
    }
    let only = bootargs::value(args, "bench.only");
    if let Some(only) = only
        && !only.split(',').all(|op| OPS.contains(&op))
    {
        return Err(
            "bench.only names an unknown operation (known: boot null_hvc psci_version \
                    sysreg_trap gicd_read pl011_read pl011_write vtimer_latency virtual_eoi \
                    ipi_roundtrip vm_switch)",
        );
    }
    Ok(Config {
        iters,
        only,
        under_veil: under_veil(),
    })
}

/// Whether the hypervisor answering HVC is Veil: its vendor Call UID.
fn under_veil() -> bool {
    // SAFETY: the Call UID query only reports; on bare QEMU it returns NOT_SUPPORTED.
    let [uid0, ..] = unsafe { smccc::hvc64(VENDOR_HYP_CALL_UID, 0, 0, 0) };
    uid0 == VEIL_UID_WORD0
}

/// The vCPUs the DTB lists: how many, and the MPIDR of one that is not the caller.
#[derive(Clone, Copy)]
pub struct Cpus {
    pub count: usize,
    pub other: Option<u64>,
}

fn dtb_cpus() -> Cpus {
    let me = veil_guest_rt::cpu::mpidr() & veil_guest_rt::cpu::MPIDR_AFFINITY_MASK;
    let mut cpus = Cpus {
        count: 0,
        other: None,
    };
    dtb::for_each_cpu(|mpidr| {
        cpus.count += 1;
        if mpidr != me && cpus.other.is_none() {
            cpus.other = Some(mpidr);
        }
    });
    cpus
}

/// Switching between two VMs on one physical CPU: only meaningful when another VM shares this
/// vCPU's CPU and yields back (`cargo xtask bench` boots two copies with `bench.only=vm_switch`
/// on one CPU), so it runs only when asked for by name.
fn vm_switch(config: &Config) -> Outcome {
    if !config.under_veil {
        return Outcome::Unavailable("no hypervisor, so nothing to switch");
    }
    if !config
        .only
        .is_some_and(|only| only.split(',').any(|o| o == "vm_switch"))
    {
        return Outcome::Unavailable(
            "needs a second VM on this CPU: bench.only=vm_switch with two VMs",
        );
    }
    ops::vm_switch(config.iters)
}
