//! Trapped system-register reads into every destination register. Veil answers a trapped MRS by
//! writing the value into the guest's Rt — in its exit fast path (ID registers, a jump table
//! over Rt) or in its full exit path (everything else) — so each Rt = x0..x30 and XZR is tried
//! with every other register holding a known pattern: the value must land in Rt and nowhere
//! else, and XZR must drop it.

use veil_guest_rt::println;

use crate::tally::{Tally, without_exception};

/// What a probe puts in register `n` before the MRS.
const fn pattern(n: usize) -> u64 {
    0xF00D_0000_0000_0000 | (n as u64) << 8 | n as u64
}

// One probe per (register, Rt): `extern "C" fn(out: *mut [u64; 31])`. Loads x0..x30 with
// pattern(n), does `mrs x<rt>, <register>`, stores x0..x30 to `out`. x18..x30 are saved and
// restored; the out pointer lives on the stack meanwhile.
macro_rules! probe_body {
    ($reg:literal) => {
        concat!(
            ".irp rt, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,zr\n",
            ".balign 4\n",
            "cpu_regs_", $reg, "_x\\rt:\n",
            "    sub     sp, sp, #112\n",
            "    stp     x18, x19, [sp, #0]\n",
            "    stp     x20, x21, [sp, #16]\n",
            "    stp     x22, x23, [sp, #32]\n",
            "    stp     x24, x25, [sp, #48]\n",
            "    stp     x26, x27, [sp, #64]\n",
            "    stp     x28, x29, [sp, #80]\n",
            "    stp     x30, x0, [sp, #96]\n",
            "    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30\n",
            "    movz    x\\n, #((\\n << 8) | \\n)\n",
            "    movk    x\\n, #0xf00d, lsl #48\n",
            "    .endr\n",
            "    mrs     x\\rt, ", $reg, "\n",
            "    sub     sp, sp, #256\n",
            "    stp     x0, x1, [sp, #0]\n",
            "    stp     x2, x3, [sp, #16]\n",
            "    stp     x4, x5, [sp, #32]\n",
            "    stp     x6, x7, [sp, #48]\n",
            "    stp     x8, x9, [sp, #64]\n",
            "    stp     x10, x11, [sp, #80]\n",
            "    stp     x12, x13, [sp, #96]\n",
            "    stp     x14, x15, [sp, #112]\n",
            "    stp     x16, x17, [sp, #128]\n",
            "    stp     x18, x19, [sp, #144]\n",
            "    stp     x20, x21, [sp, #160]\n",
            "    stp     x22, x23, [sp, #176]\n",
            "    stp     x24, x25, [sp, #192]\n",
            "    stp     x26, x27, [sp, #208]\n",
            "    stp     x28, x29, [sp, #224]\n",
            "    str     x30, [sp, #240]\n",
            "    ldr     x0, [sp, #256 + 104]\n",
            "    mov     x1, #0\n",
            "1:  ldr     x2, [sp, x1, lsl #3]\n",
            "    str     x2, [x0, x1, lsl #3]\n",
            "    add     x1, x1, #1\n",
            "    cmp     x1, #31\n",
            "    b.ne    1b\n",
            "    add     sp, sp, #256\n",
            "    ldp     x18, x19, [sp, #0]\n",
            "    ldp     x20, x21, [sp, #16]\n",
            "    ldp     x22, x23, [sp, #32]\n",
            "    ldp     x24, x25, [sp, #48]\n",
            "    ldp     x26, x27, [sp, #64]\n",
            "    ldp     x28, x29, [sp, #80]\n",
            "    ldr     x30, [sp, #96]\n",
            "    add     sp, sp, #112\n",
            "    ret\n",
            ".endr\n",
            ".section .rodata.cpu_regs, \"a\"\n",
            ".balign 8\n",
            ".global cpu_regs_", $reg, "_table\n",
            "cpu_regs_", $reg, "_table:\n",
            ".irp rt, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,zr\n",
            "    .quad   cpu_regs_", $reg, "_x\\rt\n",
            ".endr\n",
            ".text\n",
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
