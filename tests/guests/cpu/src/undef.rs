//! `undef`: what happens to system-register accesses Veil does not emulate, and to those it
//! answers as read-as-zero / write-ignored (`src/traps/sysreg.rs`).
//!
//! - Unemulated registers — IMPLEMENTATION DEFINED ones (trapped by HCR_EL2.TIDCP), unallocated
//!   encodings, EL2/EL3 registers from EL1, writes to read-only ID registers, write-only GIC
//!   registers read — raise UNDEFINED (EC 0x00) in the guest's own vector, and the guest goes on.
//! - Pointer authentication is hidden (ID_AA64ISAR1/2) and trapped (HCR_EL2.API/APK = 0): its
//!   instructions and key registers are UNDEFINED too. On bare QEMU, where the ID registers show
//!   it, they must work: the rule checked is "the CPU does what its ID registers say".
//! - Debug, PMU, LORegion and auxiliary-control registers read as zero and ignore writes, with
//!   no exception (checked under Veil only: bare QEMU implements them).
//! - Set/way cache maintenance (HCR_EL2.TSW) completes without an exception.
//! - Trapped accesses naming XZR or x30 move exactly what an access through x0 moves.

use veil_guest_rt::exception::{ExceptionInfo, ec, expect_exception, without_exception};
use veil_guest_rt::{gic, println, read_sysreg, write_sysreg};

use crate::tally::{Tally, field};

/// Checks that `f` raises an UNDEFINED instruction exception (EC 0x00) taken from EL1 itself.
fn expect_undef(tally: &mut Tally, what: &str, f: impl FnOnce()) {
    match expect_exception(f) {
        Some(info) => tally.check(
            info.ec() == ec::UNKNOWN,
            format_args!("{what}: UNDEFINED in the guest, {}", info),
            format_args!("EC 0x0 (unknown reason)"),
        ),
        None => tally.fail(format_args!(
            "{what}: completed, expected an UNDEFINED exception"
        )),
    }
}

/// Checks that `f` raises no exception.
fn expect_none<T: Default>(tally: &mut Tally, what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match without_exception(f) {
        Ok(v) => Some(v),
        Err(info) => {
            tally.fail(format_args!("{what}: raised {}, expected none", info));
            None
        }
    }
}

/// [`expect_undef`] of `mrs x0, <reg>`.
macro_rules! undef_read {
    ($tally:expr, $what:expr, $reg:ident) => {
        expect_undef($tally, $what, || {
            // SAFETY: the read raises the exception that expect_exception catches or, if it is
            // wrongly answered, only writes the register the asm names as its output.
            unsafe { read_sysreg!($reg) };
        })
    };
}

/// [`expect_undef`] of `msr <reg>, x0` with x0 = 0.
macro_rules! undef_write {
    ($tally:expr, $what:expr, $reg:ident) => {
        expect_undef($tally, $what, || {
            // SAFETY: the write raises the exception that expect_exception catches or, if it
            // is wrongly accepted, writes 0 to a register no part of this guest relies on.
            unsafe { write_sysreg!($reg, 0) };
        })
    };
}

/// `cpu.test=undef`.
pub fn run(tally: &mut Tally) {
    unemulated(tally);
    pointer_authentication(tally);
    read_as_zero(tally);
    set_way(tally);
    register_operands(tally);
    from_sp_el0(tally);
}

fn unemulated(tally: &mut Tally) {
    if tally.veil {
        implementation_defined(tally);
    } else {
        tally.skip_veil_only(format_args!(
            "IMPLEMENTATION DEFINED registers (QEMU's -cpu max has some)"
        ));
    }
    undef_read!(tally, "MRS S3_2_C9_C9_7 (unallocated)", s3_2_c9_c9_7);
    undef_read!(
        tally,
        "MRS S2_7_C0_C0_0 (unallocated debug space)",
        s2_7_c0_c0_0
    );
    undef_read!(tally, "MRS HCR_EL2 from EL1", hcr_el2);
    undef_read!(tally, "MRS VBAR_EL2 from EL1", vbar_el2);
    undef_write!(tally, "MSR CNTHCTL_EL2 from EL1", cnthctl_el2);
    undef_read!(tally, "MRS SCR_EL3 from EL1", s3_6_c1_c1_0);
    undef_write!(
        tally,
        "MSR ID_AA64PFR0_EL1 (S3_0_C0_C4_0), x0",
        s3_0_c0_c4_0
    );
    undef_write!(
        tally,
        "MSR S3_0_C0_C7_7 (reserved ID encoding), x0",
        s3_0_c0_c7_7
    );
    undef_write!(tally, "MSR MIDR_EL1 (S3_0_C0_C0_0), x0", s3_0_c0_c0_0);
    if gic::discover().map(|g| g.version()) == Some(3) {
        undef_read!(tally, "MRS ICC_SGI1R_EL1 (write-only)", s3_0_c12_c11_5);
    }
    // The ID space itself stays readable after all that.
    // SAFETY: reading ID_AA64PFR0_EL1 has no side effects.
    let read = expect_none(tally, "MRS ID_AA64PFR0_EL1 afterwards", || unsafe {
        read_sysreg!(s3_0_c0_c4_0)
    });
    if let Some(v) = read {
        tally.pass(format_args!("guest continues: ID_AA64PFR0_EL1 = {v:#x}"));
    }
}

/// The IMPLEMENTATION DEFINED space (op0 = 3, CRn = 11 or 15), trapped by HCR_EL2.TIDCP.
fn implementation_defined(tally: &mut Tally) {
    undef_read!(
        tally,
        "MRS S3_1_C15_C2_0 (IMPLEMENTATION DEFINED, CPUECTLR-like)",
        s3_1_c15_c2_0
    );
    undef_read!(
        tally,
        "MRS S3_0_C15_C0_0 (IMPLEMENTATION DEFINED)",
        s3_0_c15_c0_0
    );
    undef_write!(
        tally,
        "MSR S3_1_C15_C2_1, x0 (IMPLEMENTATION DEFINED write)",
        s3_1_c15_c2_1
    );
    undef_read!(
        tally,
        "MRS S3_0_C11_C0_0 (IMPLEMENTATION DEFINED CRn=11)",
        s3_0_c11_c0_0
    );
    undef_read!(
        tally,
        "MRS S3_7_C15_C15_7 (IMPLEMENTATION DEFINED, last encoding)",
        s3_7_c15_c15_7
    );
}

/// PACGA x0, x1, x2 (raw encoding, so no assembler feature is needed).
const PACGA_X0_X1_X2: u32 = 0x9AC2_3020;
/// PACIA x0, x1.
const PACIA_X0_X1: u32 = 0xDAC1_0020;
/// SCTLR_EL1.EnIA: PACIA* compute a code (when 0 they leave the register as it is).
const SCTLR_ENIA: u64 = 1 << 31;

fn pointer_authentication(tally: &mut Tally) {
    // SAFETY: reading an ID register has no side effects.
    let isar1 = match without_exception(|| unsafe { read_sysreg!(s3_0_c0_c6_1) }) {
        Ok(v) => v,
        Err(e) => {
            tally.fail(format_args!("reading ID_AA64ISAR1_EL1 raised {e}"));
            return;
        }
    };
    // SAFETY: as above.
    let isar2 = without_exception(|| unsafe { read_sysreg!(s3_0_c0_c6_2) }).unwrap_or(0);
    let address_auth = field(isar1, 4) | field(isar1, 8) | field(isar2, 12) != 0;
    let generic_auth = field(isar1, 24) | field(isar1, 28) | field(isar2, 8) != 0;
    println!(
        "cpu: ID registers show address authentication {}, generic authentication {}",
        if address_auth { "present" } else { "absent" },
        if generic_auth { "present" } else { "absent" },
    );

    let pacga = || {
        let out: u64;
        // SAFETY: PACGA only computes into x0 (or raises an exception caught by the caller).
        unsafe {
            core::arch::asm!(
                ".inst {insn}",
                insn = const PACGA_X0_X1_X2,
                inout("x0") 0u64 => out,
                in("x1") 0x1234_5678u64,
                in("x2") 0x9abc_def0u64,
                options(nostack),
            )
        };
        out
    };
    pauth_case(tally, "PACGA x0, x1, x2", generic_auth, pacga);

    // PACIA with SCTLR_EL1.EnIA = 1, so that it would compute a code if it ran.
    // SAFETY: EnIA only changes what PACIA*/AUTIA* do; this guest has none of those except the
    // probe below, and the original value is put back right after.
    let sctlr = unsafe { read_sysreg!(sctlr_el1) };
    // SAFETY: as above; the ISB makes the change take effect.
    unsafe {
        write_sysreg!(sctlr_el1, sctlr | SCTLR_ENIA);
        core::arch::asm!("isb", options(nostack));
    }
    let pacia = || {
        let out: u64;
        // SAFETY: PACIA only modifies x0 (or raises an exception caught by the caller).
        unsafe {
            core::arch::asm!(
                ".inst {insn}",
                insn = const PACIA_X0_X1,
                inout("x0") 0x4008_0000u64 => out,
                in("x1") 0x1234u64,
                options(nostack),
            )
        };
        out
    };
    pauth_case(
        tally,
        "PACIA x0, x1 (SCTLR_EL1.EnIA = 1)",
        address_auth,
        pacia,
    );
    // SAFETY: restores SCTLR_EL1 as it was.
    unsafe {
        write_sysreg!(sctlr_el1, sctlr);
        core::arch::asm!("isb", options(nostack));
    }

    if address_auth {
        // SAFETY: reading a key register has no side effects.
        let read = expect_none(
            tally,
            "MRS APIAKeyLo_EL1 (shown by the ID registers)",
            || unsafe { read_sysreg!(s3_0_c2_c1_0) },
        );
        if read.is_some() {
            tally.pass(format_args!(
                "MRS APIAKeyLo_EL1 works where the ID registers show it"
            ));
        }
    } else {
        // SAFETY: as above; a refused read raises an exception.
        undef_read!(
            tally,
            "MRS APIAKeyLo_EL1 (hidden, HCR_EL2.APK = 0)",
            s3_0_c2_c1_0
        );
        // SAFETY: writing 0 to a hidden key register is refused; if it were not, no code of
        // this guest uses the key.
        undef_write!(tally, "MSR APIBKeyHi_EL1 (hidden), x0", s3_0_c2_c1_3);
    }
}

/// A pointer-authentication instruction `f` (returning x0): UNDEFINED when the ID registers
/// hide the feature, a computed value otherwise.
fn pauth_case(tally: &mut Tally, what: &str, shown: bool, f: impl FnOnce() -> u64) {
    let mut value = 0;
    let info: Option<ExceptionInfo> = expect_exception(|| value = f());
    match (shown, info) {
        (false, Some(info)) => tally.check(
            info.ec() == ec::UNKNOWN,
            format_args!("{what} with the feature hidden: {info}"),
            format_args!("EC 0x0 (UNDEFINED)"),
        ),
        (false, None) => tally.fail(format_args!(
            "{what} ran (x0 = {value:#x}) although the ID registers hide pointer authentication"
        )),
        (true, None) => tally.pass(format_args!(
            "{what} ran (x0 = {value:#x}): the ID registers show pointer authentication"
        )),
        (true, Some(info)) => tally.fail(format_args!(
            "{what} raised {info} although the ID registers show pointer authentication"
        )),
    }
}

/// A register that reads as zero and ignores writes under Veil.
struct RazWi {
    name: &'static str,
    read: fn() -> u64,
    /// Writes the value; `None` for read-only registers.
    write: Option<fn(u64)>,
    /// What to write: harmless on bare QEMU too.
    value: u64,
}

macro_rules! razwi {
    ($name:literal, $reg:ident, $value:expr) => {
        RazWi {
            name: $name,
            // SAFETY: reading these registers has no side effects.
            read: || unsafe { read_sysreg!($reg) },
            // SAFETY: the value written is harmless (see each entry) and the original is put
            // back afterwards.
            write: Some(|v| unsafe { write_sysreg!($reg, v) }),
            value: $value,
        }
    };
    ($name:literal, $reg:ident) => {
        RazWi {
            name: $name,
            // SAFETY: as above.
            read: || unsafe { read_sysreg!($reg) },
            write: None,
            value: 0,
        }
    };
}

fn read_as_zero(tally: &mut Tally) {
    let registers = [
        // TDCC: traps EL0's debug communication channel; nothing runs at EL0.
        razwi!("MDSCR_EL1", mdscr_el1, 1 << 12),
        razwi!("OSLSR_EL1", oslsr_el1),
        razwi!("OSDLR_EL1", osdlr_el1, 0),
        razwi!("DBGBVR0_EL1", dbgbvr0_el1, 0x4008_0000),
        razwi!("DBGBCR0_EL1", dbgbcr0_el1, 0),
        razwi!("DBGWVR0_EL1", dbgwvr0_el1, 0x4010_0000),
        razwi!("MDCCINT_EL1", mdccint_el1, 0),
        razwi!("DBGCLAIMSET_EL1", dbgclaimset_el1, 1),
        // E: counters on; nothing reads them.
        razwi!("PMCR_EL0", pmcr_el0, 1),
        razwi!("PMCCNTR_EL0", pmccntr_el0, 0x1234),
        razwi!("PMCNTENSET_EL0", pmcntenset_el0, 1 << 31),
        razwi!("PMUSERENR_EL0", pmuserenr_el0, 0),
        razwi!("PMINTENSET_EL1", pmintenset_el1, 0),
        razwi!("PMEVCNTR0_EL0", pmevcntr0_el0, 0x55),
        razwi!("PMEVTYPER0_EL0", pmevtyper0_el0, 0x11),
        razwi!("PMSELR_EL0", pmselr_el0, 0),
        // ACTLR_EL1 is IMPLEMENTATION DEFINED: a write of what it already holds is harmless.
        razwi!("ACTLR_EL1", actlr_el1),
        // LORC_EL1.EN = 0: LORegions stay off.
        razwi!("LORC_EL1", s3_0_c10_c4_3, 0),
    ];
    for reg in registers {
        let name = reg.name;
        let Some(before) = expect_none(tally, name, reg.read) else {
            continue;
        };
        let written = match reg.write {
            Some(write) => {
                let value = reg.value;
                if expect_none(tally, name, || write(value)).is_none() {
                    continue;
                }
                Some(value)
            }
            None => None,
        };
        let Some(after) = expect_none(tally, name, reg.read) else {
            continue;
        };
        if let Some(write) = reg.write {
            let _ = without_exception(|| write(before));
        }
        if tally.veil {
            tally.check(
                before == 0 && after == 0,
                format_args!(
                    "{name}: read {before:#x}{}, then read {after:#x}, no exception",
                    match written {
                        Some(v) => WrittenNote(v),
                        None => WrittenNote(u64::MAX),
                    }
                ),
                format_args!("0 and 0 (read-as-zero, writes ignored)"),
            );
        } else {
            println!("cpu: {name}: read {before:#x}, then {after:#x} (bare QEMU implements it)");
        }
    }
    if !tally.veil {
        tally.skip_veil_only(format_args!("read-as-zero/write-ignored values"));
    }
}

/// ", wrote 0x.." or nothing (u64::MAX = read-only register).
struct WrittenNote(u64);

impl core::fmt::Display for WrittenNote {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 == u64::MAX {
            Ok(())
        } else {
            write!(f, ", wrote {:#x}", self.0)
        }
    }
}

fn set_way(tally: &mut Tally) {
    // Set 0, way 0, level 1: the operand Veil answers with a clean+invalidate of the VM's RAM.
    for (what, op) in [("DC CISW", 0u8), ("DC CSW", 1), ("DC ISW", 2)] {
        // SAFETY: set/way maintenance by a guest is cleaned as well as invalidated
        // (HCR_EL2.SWIO, and Veil's emulation), and with the MMU off this guest keeps nothing
        // dirty in a cache that an invalidate could lose.
        let result = expect_none(tally, what, || unsafe {
            match op {
                0 => core::arch::asm!("dc cisw, {}", in(reg) 0u64, options(nostack)),
                1 => core::arch::asm!("dc csw, {}", in(reg) 0u64, options(nostack)),
                _ => core::arch::asm!("dc isw, {}", in(reg) 0u64, options(nostack)),
            }
        });
        if result.is_some() {
            tally.pass(format_args!("{what} (set/way, trapped) completed"));
        }
    }
}

/// MRS/MSR through XZR (Rt = 31) and x30: the trap handler must treat 31 as the zero register
/// (not SP) and reach the top general-purpose register.
fn register_operands(tally: &mut Tally) {
    // SAFETY: reading ID_AA64PFR0_EL1 has no side effects.
    let Some(via_x0) = expect_none(tally, "MRS x0, ID_AA64PFR0_EL1", || unsafe {
        read_sysreg!(s3_0_c0_c4_0)
    }) else {
        return;
    };
    let via_x30 = expect_none(tally, "MRS x30, ID_AA64PFR0_EL1", || {
        let value: u64;
        // SAFETY: the read goes to x30, which the asm declares clobbered... and returns.
        unsafe {
            core::arch::asm!(
                "mrs x30, s3_0_c0_c4_0",
                "mov {v}, x30",
                v = out(reg) value,
                out("x30") _,
                options(nostack),
            )
        };
        value
    });
    if let Some(v) = via_x30 {
        tally.check(
            v == via_x0,
            format_args!("MRS into x30 = {v:#x}"),
            format_args!("{via_x0:#x}, as into x0"),
        );
    }
    let sp_before: u64;
    let sp_after: u64;
    let mut raised = None;
    // SAFETY: MRS to XZR discards the value; SP is only read.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) sp_before, options(nomem, nostack)) };
    if let Some(info) = expect_exception(|| unsafe {
        // SAFETY: as above.
        core::arch::asm!("mrs xzr, s3_0_c0_c4_0", options(nostack))
    }) {
        raised = Some(info);
    }
    // SAFETY: as above.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) sp_after, options(nomem, nostack)) };
    match raised {
        Some(info) => tally.fail(format_args!("MRS xzr, ID_AA64PFR0_EL1 raised {info}")),
        None => tally.check(
            sp_before == sp_after,
            format_args!("MRS xzr, ID_AA64PFR0_EL1: SP {sp_before:#x} -> {sp_after:#x}"),
            format_args!("SP unchanged (Rt = 31 is XZR, not SP)"),
        ),
    }
    // A write from XZR to a read-as-zero register: no exception.
    // SAFETY: PMSELR_EL0 = 0 selects counter 0, which nothing uses.
    if expect_none(tally, "MSR PMSELR_EL0, xzr", || unsafe {
        core::arch::asm!("msr pmselr_el0, xzr", options(nostack))
    })
    .is_some()
    {
        tally.pass(format_args!("MSR PMSELR_EL0, xzr completed"));
    }
}

/// An exception taken while the guest runs on SP_EL0 (EL1t) comes through the vector table's
/// first quarter ("current EL with SP_EL0"), for an UNDEFINED that Veil injects (a trapped
/// IMPLEMENTATION DEFINED register) as for one the hardware raises (UDF); and SPSR_EL1 records
/// the interrupted PSTATE: EL1t and the condition flags as they were.
fn from_sp_el0(tally: &mut Tally) {
    /// NZCV = 0b1010, set just before the access.
    const FLAGS: u64 = 0b1010 << 28;
    const SPSR_M: u64 = 0b1111;
    const EL1T: u64 = 0b0100;
    for (what, veil_only) in [("trapped S3_1_C15_C2_0", true), ("UDF", false)] {
        if veil_only && !tally.veil {
            tally.skip_veil_only(format_args!("{what} from EL1t"));
            continue;
        }
        let info = expect_exception(|| {
            // SAFETY: SP_EL0 is pointed 16 KiB below the current stack, inside this vCPU's
            // stack and below anything in use, before switching to it; the handler runs on
            // SP_EL1 above it. The flags are clobbered (declared), SPSel is restored.
            unsafe {
                if veil_only {
                    core::arch::asm!(
                        "mov x9, sp",
                        "sub x9, x9, #0x4000",
                        "msr sp_el0, x9",
                        "msr spsel, #0",
                        "msr nzcv, {flags}",
                        "mrs x9, s3_1_c15_c2_0",
                        "msr spsel, #1",
                        flags = in(reg) FLAGS,
                        out("x9") _,
                    )
                } else {
                    core::arch::asm!(
                        "mov x9, sp",
                        "sub x9, x9, #0x4000",
                        "msr sp_el0, x9",
                        "msr spsel, #0",
                        "msr nzcv, {flags}",
                        "udf #0",
                        "msr spsel, #1",
                        flags = in(reg) FLAGS,
                        out("x9") _,
                    )
                }
            }
        });
        // SAFETY: reading SPSR_EL1 has no side effects; no exception came since.
        let spsr = unsafe { read_sysreg!(spsr_el1) };
        match info {
            Some(info) => tally.check(
                info.ec() == ec::UNKNOWN
                    && info.source == veil_guest_rt::exception::Source::CurrentElSp0
                    && spsr & SPSR_M == EL1T
                    && spsr & (0xF << 28) == FLAGS,
                format_args!("{what} from EL1t: {info}, SPSR_EL1 {spsr:#x}"),
                format_args!("EC 0x0 through the SP_EL0 vector, SPSR_EL1.M = EL1t, NZCV = 0b1010"),
            ),
            None => tally.fail(format_args!("{what} from EL1t: no exception")),
        }
    }
}
