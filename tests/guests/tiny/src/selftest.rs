//! `tiny.test=selftest`: checks of the runtime itself, so that later tests can trust the tools
//! they check the hypervisor with.
//!
//! Covered: `expect_exception` for an undefined instruction, an alignment fault, SVC and BRK
//! (what is recorded, and where execution resumes); that the vector code restores every
//! register; raw `read_sysreg!` against `aarch64-cpu`; the PSCI query wrappers; and, when the
//! DTB lists a second CPU, CPU_ON into a Rust function, exceptions on that vCPU, CPU_OFF and
//! AFFINITY_INFO.

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use veil_guest_rt::exception::{ExceptionInfo, Kind, Source, ec, expect_exception};
use veil_guest_rt::sysreg::{Readable, registers};
use veil_guest_rt::tally::{Summary, Tally};
use veil_guest_rt::{cpu, dtb, halt, println, psci, read_sysreg};

/// An `Option<ExceptionInfo>` as text: the record, or `none`.
struct Taken(Option<ExceptionInfo>);

impl fmt::Display for Taken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(info) => write!(f, "{}", info),
            None => f.write_str("none"),
        }
    }
}

/// Whether `info` is a synchronous exception from the guest's own EL1h code with class `ec`.
fn is_sync_el1h(info: &Option<ExceptionInfo>, ec: u8) -> bool {
    info.is_some_and(|i| {
        i.kind == Kind::Synchronous && i.source == Source::CurrentElSpx && i.ec() == ec
    })
}

pub fn run() -> ! {
    let mut tally = Tally::new(Summary::Failures);
    undefined_instruction(&mut tally);
    registers_survive_an_exception(&mut tally);
    alignment_fault(&mut tally);
    svc_resumes_after_the_call(&mut tally);
    brk(&mut tally);
    no_exception(&mut tally);
    raw_sysreg_reads(&mut tally);
    el2_register_is_undefined(&mut tally);
    psci_queries(&mut tally);
    secondary_vcpu(&mut tally);
    tally.finish()
}

fn undefined_instruction(tally: &mut Tally) {
    let (mut at, mut after) = (0u64, 0u64);
    // SAFETY: `udf` changes nothing; the expected exception resumes at the `mov`.
    let info = expect_exception(|| unsafe {
        asm!(
            "adr {at}, 0f",
            "0: udf #0x1234",
            "mov {after}, #1",
            at = out(reg) at,
            after = out(reg) after,
            options(nomem, nostack),
        );
    });
    let passed = is_sync_el1h(&info, ec::UNKNOWN)
        && info.is_some_and(|i| i.elr == at && i.iss() == 0)
        && after == 1;
    tally.check(
        passed,
        format_args!(
            "udf at {:#x}: {}; resumed after it: {}",
            at,
            Taken(info),
            after == 1
        ),
        format_args!("EC=0x0 with ELR at the udf, resumed after it"),
    );
}

fn registers_survive_an_exception(tally: &mut Tally) {
    let (mut x0, mut x9, mut x17, mut x30) = (0x1000u64, 0x9009u64, 0x1717u64, 0x3030u64);
    let (mut d0, mut d31) = (0u64, 0u64);
    // SAFETY: only the named registers are used, all declared; `udf` resumes at the next `fmov`.
    let info = expect_exception(|| unsafe {
        asm!(
            "fmov d0, {a}",
            "fmov d31, {b}",
            "udf #1",
            "fmov {a}, d0",
            "fmov {b}, d31",
            a = inout(reg) 0xd0d0u64 => d0,
            b = inout(reg) 0xd31d31u64 => d31,
            inout("x0") x0,
            inout("x9") x9,
            inout("x17") x17,
            inout("x30") x30,
            out("v0") _,
            out("v31") _,
            options(nomem, nostack),
        );
    });
    let passed = is_sync_el1h(&info, ec::UNKNOWN)
        && (x0, x9, x17, x30) == (0x1000, 0x9009, 0x1717, 0x3030)
        && (d0, d31) == (0xd0d0, 0xd31d31);
    tally.check(
        passed,
        format_args!(
            "registers across an exception ({}): x0={:#x} x9={:#x} x17={:#x} x30={:#x} \
             d0={:#x} d31={:#x}",
            Taken(info),
            x0,
            x9,
            x17,
            x30,
            d0,
            d31
        ),
        format_args!("EC=0x0 and 0x1000 0x9009 0x1717 0x3030 0xd0d0 0xd31d31"),
    );
}

fn alignment_fault(tally: &mut Tally) {
    static PROBE: u64 = 0;
    // With the MMU off every data access is to Device memory, where a misaligned load faults.
    let address = (&raw const PROBE as u64) + 1;
    // SAFETY: a load from inside a static the guest owns; it faults before reading anything.
    let info = expect_exception(|| unsafe {
        asm!("ldr {v}, [{a}]", a = in(reg) address, v = out(reg) _, options(readonly, nostack));
    });
    // ISS.DFSC (bits 5:0) 0b100001: alignment fault.
    let passed = is_sync_el1h(&info, ec::DATA_ABORT_SAME)
        && info.is_some_and(|i| i.iss() & 0x3f == 0x21 && i.far == address);
    tally.check(
        passed,
        format_args!("misaligned load from {:#x}: {}", address, Taken(info)),
        format_args!("EC=0x25 with DFSC=0x21 (alignment fault) and that FAR"),
    );
}

fn svc_resumes_after_the_call(tally: &mut Tally) {
    let (mut next, mut first, mut second) = (0u64, 0u64, 0u64);
    // SAFETY: `svc` is taken by the runtime's handler, which resumes at its ELR: the `mov` right
    // after the `svc`, so both `mov`s run.
    let info = expect_exception(|| unsafe {
        asm!(
            "adr {next}, 0f",
            "svc #0x42",
            "0: mov {first}, #1",
            "mov {second}, #1",
            next = out(reg) next,
            first = out(reg) first,
            second = out(reg) second,
            options(nomem, nostack),
        );
    });
    let passed = is_sync_el1h(&info, ec::SVC64)
        && info.is_some_and(|i| i.iss() & 0xffff == 0x42 && i.elr == next)
        && (first, second) == (1, 1);
    tally.check(
        passed,
        format_args!(
            "svc #0x42: {}; the next two instructions ran: {} {}",
            Taken(info),
            first,
            second
        ),
        format_args!("EC=0x15 ISS=0x42 ELR={:#x} and both ran (1 1)", next),
    );
}

fn brk(tally: &mut Tally) {
    let mut after = 0u64;
    // SAFETY: `brk` changes nothing; the expected exception resumes at the `mov`.
    let info = expect_exception(|| unsafe {
        asm!("brk #0x7", "mov {after}, #1", after = out(reg) after, options(nomem, nostack));
    });
    let passed = is_sync_el1h(&info, ec::BRK64)
        && info.is_some_and(|i| i.iss() & 0xffff == 0x7)
        && after == 1;
    tally.check(
        passed,
        format_args!(
            "brk #0x7: {}; resumed after it: {}",
            Taken(info),
            after == 1
        ),
        format_args!("EC=0x3c ISS=0x7, resumed after it"),
    );
}

fn no_exception(tally: &mut Tally) {
    // SAFETY: `nop` does nothing.
    let info = expect_exception(|| unsafe { asm!("nop", options(nomem, nostack)) });
    tally.check(
        info.is_none(),
        format_args!("nop under expect_exception: {}", Taken(info)),
        format_args!("none"),
    );
}

fn raw_sysreg_reads(tally: &mut Tally) {
    // SAFETY: reading ID registers has no side effects.
    let (raw_pfr0, raw_mpidr) = unsafe { (read_sysreg!(s3_0_c0_c4_0), read_sysreg!(mpidr_el1)) };
    let typed_pfr0 = registers::ID_AA64PFR0_EL1.get();
    let typed_mpidr = registers::MPIDR_EL1.get();
    tally.check(
        raw_pfr0 == typed_pfr0 && raw_mpidr == typed_mpidr,
        format_args!(
            "raw s3_0_c0_c4_0 = {:#x}, mpidr_el1 = {:#x}",
            raw_pfr0, raw_mpidr
        ),
        format_args!(
            "what aarch64-cpu reads: {:#x}, {:#x}",
            typed_pfr0, typed_mpidr
        ),
    );
}

fn el2_register_is_undefined(tally: &mut Tally) {
    // SAFETY: HCR_EL2 (s3_4_c1_c1_0) is UNDEFINED at EL1; the read has no other effect.
    let info = expect_exception(|| unsafe {
        let _ = read_sysreg!(s3_4_c1_c1_0);
    });
    tally.check(
        is_sync_el1h(&info, ec::UNKNOWN),
        format_args!("reading HCR_EL2 at EL1: {}", Taken(info)),
        format_args!("EC=0x0"),
    );
}

fn psci_queries(tally: &mut Tally) {
    let version = psci::version();
    tally.check(
        version == 0x0001_0001,
        format_args!("psci::version() = {:#x}", version),
        format_args!("0x10001"),
    );
    let cpu_on = psci::features(psci::CPU_ON);
    tally.check(
        cpu_on.is_ok(),
        format_args!("PSCI_FEATURES(CPU_ON) = {:?}", cpu_on),
        format_args!("Ok"),
    );
    let unknown = psci::features(0x8400_00FF);
    tally.check(
        unknown == Err(psci::Error::NotSupported),
        format_args!("PSCI_FEATURES(0x840000ff) = {:?}", unknown),
        format_args!("Err(NotSupported)"),
    );
    let me = cpu::mpidr() & cpu::MPIDR_AFFINITY_MASK;
    let state = psci::affinity_info(me);
    tally.check(
        state == Ok(psci::AffinityState::On),
        format_args!("AFFINITY_INFO({:#x}) for this vCPU = {:?}", me, state),
        format_args!("Ok(On)"),
    );
}

/// What the secondary vCPU reports back; each is written once, MPIDR last.
static SECONDARY_MPIDR: AtomicU64 = AtomicU64::new(0);
static SECONDARY_ARG: AtomicU64 = AtomicU64::new(0);
static SECONDARY_UDF_EC: AtomicU64 = AtomicU64::new(u64::MAX);

/// The argument handed to the secondary, to see that it arrives.
const SECONDARY_ARG_VALUE: usize = 0x5a5a;

/// Runs on the second vCPU: checks that its exception handling works, reports, and powers off.
fn secondary_main(arg: usize) -> ! {
    // SAFETY: `udf` changes nothing; the boot vCPU is not inside expect_exception meanwhile.
    let info = expect_exception(|| unsafe { asm!("udf #0", options(nomem, nostack)) });
    SECONDARY_UDF_EC.store(
        info.map_or(u64::MAX, |i| u64::from(i.ec())),
        Ordering::Relaxed,
    );
    SECONDARY_ARG.store(arg as u64, Ordering::Relaxed);
    // Release: the boot vCPU reads the other two after it sees this one.
    SECONDARY_MPIDR.store(cpu::mpidr(), Ordering::Release);
    let error = psci::cpu_off();
    println!(
        "tiny: FAIL CPU_OFF on the secondary vCPU returned {:?}",
        error
    );
    halt()
}

/// Polls `done` until it holds or `ms` milliseconds of the virtual counter have passed.
fn wait_until(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let ticks = registers::CNTFRQ_EL0.get() * ms / 1000;
    let start = registers::CNTVCT_EL0.get();
    loop {
        if done() {
            return true;
        }
        if registers::CNTVCT_EL0.get().wrapping_sub(start) > ticks {
            return false;
        }
        core::hint::spin_loop();
    }
}

fn secondary_vcpu(tally: &mut Tally) {
    let me = cpu::mpidr() & cpu::MPIDR_AFFINITY_MASK;
    let other = dtb::get().ok().and_then(|fdt| {
        let cpus = fdt.find_node("/cpus")?;
        cpus.children()
            .filter(|n| n.name.split('@').next() == Some("cpu"))
            .filter_map(|n| n.reg()?.next())
            .map(|r| r.starting_address as u64)
            .find(|&mpidr| mpidr != me)
    });
    let Some(target) = other else {
        println!("tiny: skipped the secondary vCPU checks: the DTB lists one cpu");
        return;
    };

    // SAFETY: stack 1 is unused: no other vCPU was started before, and this one is waited for.
    let started = unsafe { cpu::start(1, target, secondary_main, SECONDARY_ARG_VALUE) };
    tally.check(
        started.is_ok(),
        format_args!("CPU_ON for MPIDR {:#x} returned {:?}", target, started),
        format_args!("Ok"),
    );
    if started.is_err() {
        return;
    }
    let reported = wait_until(1000, || SECONDARY_MPIDR.load(Ordering::Acquire) != 0);
    let mpidr = SECONDARY_MPIDR.load(Ordering::Acquire);
    let arg = SECONDARY_ARG.load(Ordering::Relaxed);
    let udf_ec = SECONDARY_UDF_EC.load(Ordering::Relaxed);
    tally.check(
        reported
            && mpidr & cpu::MPIDR_AFFINITY_MASK == target
            && arg == SECONDARY_ARG_VALUE as u64
            && udf_ec == u64::from(ec::UNKNOWN),
        format_args!(
            "secondary vCPU reported MPIDR={:#x} arg={:#x} udf EC={:#x}",
            mpidr, arg, udf_ec
        ),
        format_args!(
            "MPIDR affinity {:#x}, arg {:#x}, EC 0x0",
            target, SECONDARY_ARG_VALUE
        ),
    );
    let mut state = psci::affinity_info(target);
    let off = wait_until(1000, || {
        state = psci::affinity_info(target);
        state == Ok(psci::AffinityState::Off)
    });
    tally.check(
        off,
        format_args!(
            "AFFINITY_INFO({:#x}) after its CPU_OFF = {:?}",
            target, state
        ),
        format_args!("Ok(Off)"),
    );
}
