//! Trapped system-register reads into every destination register. Veil answers a trapped MRS by
//! writing the value into the guest's Rt — in its exit fast path (ID registers, a jump table
//! over Rt) or in its full exit path (everything else) — so each Rt = x0..x30 and XZR is tried
//! with every other register holding a known pattern: the value must land in Rt and nowhere
//! else, and XZR must drop it.

use veil_guest_rt::exception::without_exception;
use veil_guest_rt::println;

use crate::tally::Tally;

use veil_guest_rt::regprobe::pattern;

// One probe per (register, Rt): `extern "C" fn(out: *mut [u64; 31])`. Loads x0..x30 with
// pattern(n), does `mrs x<rt>, <register>`, stores x0..x30 to `out` (veil_guest_rt::regprobe).
macro_rules! probe_body {
    ($reg:literal) => {
        veil_guest_rt::regprobe_per_rt!(
            concat!("cpu_regs_", $reg),
            veil_guest_rt::regprobe_patterns!(),
            concat!("    mrs     x\\rt, ", $reg, "\n"),
        )
    };
}

core::arch::global_asm!(probe_body!("id_aa64mmfr0_el1"), probe_body!("actlr_el1"));

/// A probe: x0..x30 after the MRS.
type Probe = unsafe extern "C" fn(out: *mut [u64; 31]);

unsafe extern "C" {
    /// Probes for Rt = x0..x30, then XZR, of an ID register (Veil's exit fast path).
    static cpu_regs_id_aa64mmfr0_el1_table: [Probe; 32];
    /// The same for ACTLR_EL1, read-as-zero (Veil's full exit path).
    static cpu_regs_actlr_el1_table: [Probe; 32];
}

/// Reads `value` through each probe of `table` and checks where it landed.
fn every_destination(tally: &mut Tally, name: &str, table: &[Probe; 32], value: u64) {
    let mut bad = 0;
    for (rt, probe) in table.iter().enumerate() {
        let mut out = [0u64; 31];
        // SAFETY: the probe follows the procedure-call standard (x18..x30 saved and restored)
        // and writes only `out`; the MRS only reads a register.
        let run = without_exception(|| unsafe { probe(&mut out) });
        if let Err(info) = run {
            bad += 1;
            tally.fail(format_args!("MRS into x{rt} of {name} raised {info}"));
            continue;
        }
        for (n, &got) in out.iter().enumerate() {
            let want = if n == rt { value } else { pattern(n) };
            if got != want {
                bad += 1;
                let rt_name = RegName(rt);
                tally.fail(format_args!(
                    "MRS {rt_name}, {name}: x{n} = {got:#x}, expected {want:#x}"
                ));
            }
        }
    }
    if bad == 0 {
        tally.pass(format_args!(
            "MRS of {name} into each of x0-x30 and XZR: the value ({value:#x}) lands in Rt only"
        ));
    }
}

/// `x<n>`, or `xzr` for 31.
struct RegName(usize);

impl core::fmt::Display for RegName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 == 31 {
            f.write_str("xzr")
        } else {
            write!(f, "x{}", self.0)
        }
    }
}

/// Both registers, every destination.
pub fn check(tally: &mut Tally) {
    // SAFETY: reading these registers has no side effects.
    let mmfr0 = without_exception(|| unsafe { veil_guest_rt::read_sysreg!(id_aa64mmfr0_el1) });
    // SAFETY: as above.
    let actlr = without_exception(|| unsafe { veil_guest_rt::read_sysreg!(actlr_el1) });
    let (Ok(mmfr0), Ok(actlr)) = (mmfr0, actlr) else {
        tally.fail(format_args!(
            "reading ID_AA64MMFR0_EL1 or ACTLR_EL1 raised an exception"
        ));
        return;
    };
    println!(
        "cpu: every destination register: ID_AA64MMFR0_EL1 = {mmfr0:#x}, ACTLR_EL1 = {actlr:#x}"
    );
    // SAFETY: the tables are read-only data filled by the assembler with the probes' addresses.
    let (id_table, actlr_table) =
        unsafe { (&cpu_regs_id_aa64mmfr0_el1_table, &cpu_regs_actlr_el1_table) };
    every_destination(tally, "ID_AA64MMFR0_EL1", id_table, mmfr0);
    every_destination(tally, "ACTLR_EL1", actlr_table, actlr);
}
