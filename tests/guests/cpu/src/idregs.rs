//! `idregs` and `idregs32`: the CPU the guest is shown. Reads the whole ID register space
//! (op0=3, op1=0, CRn=0, CRm=1..7, op2=0..7: 56 encodings, each `mrs S3_0_C0_C<m>_<n>`, which
//! Veil traps with HCR_EL2.TID3 and answers from its sanitized table) and checks every field
//! that `src/vm/id_regs.rs` promises to hide or cap; also MIDR_EL1 (printed) and MPIDR_EL1.

use veil_guest_rt::exception::{ExceptionInfo, without_exception};
use veil_guest_rt::sysreg::{Readable, registers};
use veil_guest_rt::{gic, println};

use crate::tally::{Tally, field};

/// 7 CRm values x 8 op2 values.
const COUNT: usize = 56;

/// Reads the ID register at (CRm, op2) by its encoding.
fn read_id<const CRM: u32, const OP2: u32>() -> u64 {
    let value: u64;
    // SAFETY: reading an ID register has no side effects; a refused read raises an exception
    // that the caller's `without_exception` catches.
    unsafe {
        core::arch::asm!(
            "mrs {v}, S3_0_C0_C{crm}_{op2}",
            v = out(reg) value,
            crm = const CRM,
            op2 = const OP2,
            options(nostack),
        )
    };
    value
}

macro_rules! id_space {
    ($($crm:literal),*) => {
        [$(
            read_id::<$crm, 0> as fn() -> u64, read_id::<$crm, 1>, read_id::<$crm, 2>,
            read_id::<$crm, 3>, read_id::<$crm, 4>, read_id::<$crm, 5>, read_id::<$crm, 6>,
            read_id::<$crm, 7>,
        )*]
    };
}

/// One reader per encoding, in (CRm - 1) * 8 + op2 order.
const READERS: [fn() -> u64; COUNT] = id_space!(1, 2, 3, 4, 5, 6, 7);

/// Architectural names of the allocated ID registers, by index; `None` for reserved encodings.
fn name(index: usize) -> Option<&'static str> {
    Some(match index {
        0 => "ID_PFR0_EL1",
        1 => "ID_PFR1_EL1",
        2 => "ID_DFR0_EL1",
        3 => "ID_AFR0_EL1",
        4 => "ID_MMFR0_EL1",
        5 => "ID_MMFR1_EL1",
        6 => "ID_MMFR2_EL1",
        7 => "ID_MMFR3_EL1",
        8 => "ID_ISAR0_EL1",
        9 => "ID_ISAR1_EL1",
        10 => "ID_ISAR2_EL1",
        11 => "ID_ISAR3_EL1",
        12 => "ID_ISAR4_EL1",
        13 => "ID_ISAR5_EL1",
        14 => "ID_MMFR4_EL1",
        15 => "ID_ISAR6_EL1",
        16 => "MVFR0_EL1",
        17 => "MVFR1_EL1",
        18 => "MVFR2_EL1",
        20 => "ID_PFR2_EL1",
        21 => "ID_DFR1_EL1",
        22 => "ID_MMFR5_EL1",
        24 => "ID_AA64PFR0_EL1",
        25 => "ID_AA64PFR1_EL1",
        26 => "ID_AA64PFR2_EL1",
        28 => "ID_AA64ZFR0_EL1",
        29 => "ID_AA64SMFR0_EL1",
        31 => "ID_AA64FPFR0_EL1",
        32 => "ID_AA64DFR0_EL1",
        33 => "ID_AA64DFR1_EL1",
        34 => "ID_AA64DFR2_EL1",
        36 => "ID_AA64AFR0_EL1",
        37 => "ID_AA64AFR1_EL1",
        40 => "ID_AA64ISAR0_EL1",
        41 => "ID_AA64ISAR1_EL1",
        42 => "ID_AA64ISAR2_EL1",
        43 => "ID_AA64ISAR3_EL1",
        48 => "ID_AA64MMFR0_EL1",
        49 => "ID_AA64MMFR1_EL1",
        50 => "ID_AA64MMFR2_EL1",
        51 => "ID_AA64MMFR3_EL1",
        52 => "ID_AA64MMFR4_EL1",
        _ => return None,
    })
}

/// Index of (CRm, op2).
const fn at(crm: usize, op2: usize) -> usize {
    (crm - 1) * 8 + op2
}

const ID_PFR1: usize = at(1, 1);
const ID_DFR0: usize = at(1, 2);
const ID_AA64PFR0: usize = at(4, 0);
const ID_AA64PFR1: usize = at(4, 1);
const ID_AA64ZFR0: usize = at(4, 4);
const ID_AA64SMFR0: usize = at(4, 5);
const ID_AA64DFR0: usize = at(5, 0);
const ID_AA64DFR1: usize = at(5, 1);
const ID_AA64AFR0: usize = at(5, 4);
const ID_AA64AFR1: usize = at(5, 5);
const ID_AA64ISAR1: usize = at(6, 1);
const ID_AA64ISAR2: usize = at(6, 2);
const ID_AA64MMFR0: usize = at(7, 0);
const ID_AA64MMFR1: usize = at(7, 1);
const ID_AA64MMFR2: usize = at(7, 2);

/// The largest PARange Veil gives a guest: 0b001, 36 bits (`memory::stage2::GUEST_PA_RANGE`).
const MAX_PA_RANGE: u64 = 0b001;
/// The oldest debug architecture an Armv8-A CPU has: 0b0110, Armv8.0 debug.
const MIN_DEBUG_VER: u64 = 0b0110;

/// Reads all 56 registers, printing each; a read that raises an exception fails (every
/// encoding in the space, allocated or reserved, must read, reserved ones as zero).
fn read_all(tally: &mut Tally) -> [u64; COUNT] {
    let mut values = [0; COUNT];
    let mut faulted: Option<(usize, ExceptionInfo)> = None;
    for (index, read) in READERS.iter().enumerate() {
        match without_exception(read) {
            Ok(value) => values[index] = value,
            Err(info) => {
                faulted.get_or_insert((index, info));
                tally.fail(format_args!(
                    "reading S3_0_C0_C{}_{} raised {}",
                    index / 8 + 1,
                    index % 8,
                    info
                ));
            }
        }
    }
    for (index, value) in values.iter().enumerate() {
        println!(
            "cpu: S3_0_C0_C{}_{} {:<18} = {:#018x}",
            index / 8 + 1,
            index % 8,
            name(index).unwrap_or("(reserved)"),
            value
        );
    }
    if faulted.is_none() {
        tally.pass(format_args!(
            "all {} ID register encodings read without an exception",
            COUNT
        ));
    }
    values
}

/// Checks that each 4-bit field at `shifts` in register `index` is zero (the feature is hidden).
fn hidden(tally: &mut Tally, values: &[u64; COUNT], index: usize, fields: &[(u32, &str)]) {
    let value = values[index];
    let reg = name(index).unwrap_or("?");
    for &(shift, what) in fields {
        let got = field(value, shift);
        tally.check(
            got == 0,
            format_args!("{reg}.{what} (bits {}:{shift}) = {got:#x}", shift + 3),
            format_args!("0 (hidden)"),
        );
    }
}

/// Checks that register `index` reads as zero as a whole.
fn zero(tally: &mut Tally, values: &[u64; COUNT], index: usize) {
    let reg = name(index).unwrap_or("?");
    tally.check(
        values[index] == 0,
        format_args!("{reg} = {:#x}", values[index]),
        format_args!("0 (nothing to describe)"),
    );
}

/// `cpu.test=idregs`.
pub fn run(tally: &mut Tally) {
    let values = read_all(tally);
    if !tally.veil {
        tally.skip_veil_only(format_args!(
            "sanitized fields (bare QEMU shows its own CPU)"
        ));
        identity(tally);
        crate::regs::check(tally);
        return;
    }
    let gicv3 = gic::discover().map(|g| g.version()) == Some(3);

    // ID_AA64PFR0_EL1.
    hidden(
        tally,
        &values,
        ID_AA64PFR0,
        &[
            (8, "EL2"),
            (12, "EL3"),
            (28, "RAS"),
            (32, "SVE"),
            (36, "SEL2"),
            (40, "MPAM"),
            (44, "AMU"),
            (52, "RME"),
        ],
    );
    let gic_field = field(values[ID_AA64PFR0], 24);
    tally.check(
        gic_field == u64::from(gicv3),
        format_args!(
            "ID_AA64PFR0_EL1.GIC = {gic_field} with a GICv{} in the DTB",
            if gicv3 { 3 } else { 2 }
        ),
        format_args!("1 iff the guest has a GICv3 CPU interface"),
    );
    for (shift, what) in [(0, "EL0"), (4, "EL1")] {
        let got = field(values[ID_AA64PFR0], shift);
        tally.check(
            got == 1 || got == 2,
            format_args!("ID_AA64PFR0_EL1.{what} = {got}"),
            format_args!("1 or 2 (AArch64 implemented)"),
        );
    }

    hidden(
        tally,
        &values,
        ID_AA64PFR1,
        &[(8, "MTE"), (24, "SME"), (36, "NMI"), (44, "GCS")],
    );
    zero(tally, &values, ID_AA64ZFR0);
    zero(tally, &values, ID_AA64SMFR0);

    hidden(
        tally,
        &values,
        ID_AA64DFR0,
        &[(4, "TraceVer"), (8, "PMUVer"), (32, "PMSVer")],
    );
    let debug_ver = field(values[ID_AA64DFR0], 0);
    tally.check(
        debug_ver >= MIN_DEBUG_VER,
        format_args!("ID_AA64DFR0_EL1.DebugVer = {debug_ver:#x}"),
        format_args!("at least {MIN_DEBUG_VER:#x} (kept: the debug architecture is mandatory)"),
    );
    zero(tally, &values, ID_AA64DFR1);
    zero(tally, &values, ID_AA64AFR0);
    zero(tally, &values, ID_AA64AFR1);

    hidden(
        tally,
        &values,
        ID_AA64ISAR1,
        &[(4, "APA"), (8, "API"), (24, "GPA"), (28, "GPI")],
    );
    hidden(tally, &values, ID_AA64ISAR2, &[(8, "GPA3"), (12, "APA3")]);

    let pa_range = field(values[ID_AA64MMFR0], 0);
    tally.check(
        pa_range <= MAX_PA_RANGE,
        format_args!("ID_AA64MMFR0_EL1.PARange = {pa_range:#05b}"),
        format_args!("at most {MAX_PA_RANGE:#05b} (36 bits, what stage 2 maps)"),
    );
    hidden(tally, &values, ID_AA64MMFR0, &[(56, "FGT"), (60, "ECV")]);
    hidden(tally, &values, ID_AA64MMFR1, &[(8, "VH"), (16, "LO")]);
    hidden(tally, &values, ID_AA64MMFR2, &[(24, "NV")]);

    identity(tally);
    crate::regs::check(tally);
}

/// MIDR_EL1 (printed: Veil passes the host's through VPIDR_EL2) and MPIDR_EL1 (vCPU 0).
fn identity(tally: &mut Tally) {
    match without_exception(|| registers::MIDR_EL1.get()) {
        Ok(midr) => println!(
            "cpu: MIDR_EL1 = {:#x} (implementer {:#x}, part {:#x}, variant {}, revision {})",
            midr,
            (midr >> 24) & 0xff,
            (midr >> 4) & 0xfff,
            (midr >> 20) & 0xf,
            midr & 0xf
        ),
        Err(e) => tally.fail(format_args!("reading MIDR_EL1 raised {}", e)),
    }
    match without_exception(|| registers::MPIDR_EL1.get()) {
        Ok(mpidr) => tally.check(
            mpidr == 0x8000_0000,
            format_args!("MPIDR_EL1 = {mpidr:#x} on vCPU 0"),
            format_args!("0x80000000 (RES1 bit 31 | vCPU index 0)"),
        ),
        Err(e) => tally.fail(format_args!("reading MPIDR_EL1 raised {}", e)),
    }
}

/// `cpu.test=idregs32`: the AArch32 debug feature register, which `id_regs.rs` promises to show
/// without a PMU or trace (ID_DFR0_EL1.CopTrc, PerfMon, TraceFilt = 0), and ID_PFR1_EL1.GIC,
/// which describes the guest's GIC like ID_AA64PFR0_EL1.GIC.
pub fn run_aarch32(tally: &mut Tally) {
    let values = read_all(tally);
    if !tally.veil {
        tally.skip_veil_only(format_args!(
            "sanitized fields (bare QEMU shows its own CPU)"
        ));
        return;
    }
    hidden(
        tally,
        &values,
        ID_DFR0,
        &[(12, "CopTrc"), (24, "PerfMon"), (28, "TraceFilt")],
    );
    let gicv3 = gic::discover().map(|g| g.version()) == Some(3);
    let aarch32_el1 = field(values[ID_AA64PFR0], 4) == 2;
    let pfr1_gic = field(values[ID_PFR1], 28);
    if aarch32_el1 {
        tally.check(
            pfr1_gic == u64::from(gicv3),
            format_args!(
                "ID_PFR1_EL1.GIC = {pfr1_gic} with a GICv{} in the DTB",
                if gicv3 { 3 } else { 2 }
            ),
            format_args!("1 iff the guest has a GICv3 CPU interface, as ID_AA64PFR0_EL1.GIC"),
        );
    } else {
        println!("cpu: ID_PFR1_EL1.GIC = {pfr1_gic} (no AArch32 EL1: not checked)");
    }
}
