//! A vCPU's architectural state beyond its general-purpose registers, saved and restored when a
//! physical CPU switches between vCPUs: the EL1 system registers, the virtual timer, and the
//! FP/SIMD registers.
//!
//! The EL1 register file is listed once, in [`el1_context!`]'s invocation below: every register
//! Linux uses at EL1 (and EL0) that the hardware keeps per CPU. Registers that trap to Veil
//! (ACTLR_EL1, debug and PMU registers, the EL1 physical timer) are emulated per vCPU or
//! read-as-zero and need no switching; features whose registers are not listed here are hidden
//! from guests by `vm::id_regs` (SVE, SME, MTE, pointer authentication, RAS, TCR2/SCTLR2,
//! permission indirection).

use core::arch::asm;

macro_rules! el1_context {
    ($($field:ident => $reg:literal),* $(,)?) => {
        /// The EL1 (and EL0) system registers of a vCPU that is not running.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct El1Context {
            $(pub $field: u64,)*
        }

        impl El1Context {
            /// Reads the registers of the vCPU running on this CPU.
            pub fn save(&mut self) {
                $(
                    // SAFETY: reading an EL1 system register at EL2 has no side effects.
                    unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) self.$field, options(nomem, nostack)) };
                )*
            }

            /// Loads the registers of a vCPU about to run on this CPU.
            pub fn restore(&self) {
                $(
                    // SAFETY: EL1 state only affects EL1/EL0 execution, which is the incoming
                    // vCPU's; EL2 does not depend on these registers.
                    unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) self.$field, options(nostack)) };
                )*
            }
        }
    };
}

el1_context! {
    // Translation and memory attributes.
    sctlr => "sctlr_el1",
    ttbr0 => "ttbr0_el1",
    ttbr1 => "ttbr1_el1",
    tcr => "tcr_el1",
    mair => "mair_el1",
    amair => "amair_el1",
    contextidr => "contextidr_el1",
    // Exceptions.
    vbar => "vbar_el1",
    elr => "elr_el1",
    spsr => "spsr_el1",
    esr => "esr_el1",
    far => "far_el1",
    afsr0 => "afsr0_el1",
    afsr1 => "afsr1_el1",
    par => "par_el1",
    // Stacks and thread pointers.
    sp_el0 => "sp_el0",
    sp_el1 => "sp_el1",
    tpidr_el0 => "tpidr_el0",
    tpidrro_el0 => "tpidrro_el0",
    tpidr_el1 => "tpidr_el1",
    // Access controls.
    cpacr => "cpacr_el1",
    cntkctl => "cntkctl_el1",
    csselr => "csselr_el1",
    // The EL1 virtual timer (its offset CNTVOFF_EL2 is per VM).
    cntv_cval => "cntv_cval_el0",
    cntv_ctl => "cntv_ctl_el0",
}

/// SCTLR_EL1's RES1 bits (29, 28, 23, 22, 20, 11) with the MMU, caches and alignment checks
/// off: the state an Armv8.0 CPU comes out of reset with.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

impl El1Context {
    /// The EL1 state of a vCPU coming out of reset (and of one PSCI CPU_ON starts): MMU and
    /// caches off, everything else zero.
    pub fn reset() -> Self {
        El1Context {
            sctlr: SCTLR_EL1_RESET,
            ..Default::default()
        }
    }
}

/// The FP/SIMD register file: V0-V31, FPCR, FPSR.
#[repr(C, align(16))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FpContext {
    pub v: [u128; 32],
    pub fpcr: u64,
    pub fpsr: u64,
}

impl Default for FpContext {
    fn default() -> Self {
        FpContext {
            v: [0; 32],
            fpcr: 0,
            fpsr: 0,
        }
    }
}

impl FpContext {
    /// Stores this CPU's FP/SIMD registers. Veil itself is built soft-float and never touches
    /// them, so they hold the state of the last vCPU that used them.
    pub fn save(&mut self) {
        let base = self.v.as_mut_ptr();
        // SAFETY: `base` points to 32 16-byte-aligned u128s; FP access is not trapped at EL2
        // (CPTR_EL2.TFP only traps EL1/EL0).
        unsafe {
            asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                "stp q0, q1, [{b}, #0]", "stp q2, q3, [{b}, #32]",
                "stp q4, q5, [{b}, #64]", "stp q6, q7, [{b}, #96]",
                "stp q8, q9, [{b}, #128]", "stp q10, q11, [{b}, #160]",
                "stp q12, q13, [{b}, #192]", "stp q14, q15, [{b}, #224]",
                "stp q16, q17, [{b}, #256]", "stp q18, q19, [{b}, #288]",
                "stp q20, q21, [{b}, #320]", "stp q22, q23, [{b}, #352]",
                "stp q24, q25, [{b}, #384]", "stp q26, q27, [{b}, #416]",
                "stp q28, q29, [{b}, #448]", "stp q30, q31, [{b}, #480]",
                "mrs {c}, fpcr",
                "mrs {s}, fpsr",
                b = in(reg) base,
                c = out(reg) self.fpcr,
                s = out(reg) self.fpsr,
                options(nostack),
            );
        }
    }

    /// Loads these values into this CPU's FP/SIMD registers.
    pub fn restore(&self) {
        let base = self.v.as_ptr();
        // SAFETY: as in `save`; the registers belong to the vCPU about to run.
        unsafe {
            asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                "ldp q0, q1, [{b}, #0]", "ldp q2, q3, [{b}, #32]",
                "ldp q4, q5, [{b}, #64]", "ldp q6, q7, [{b}, #96]",
                "ldp q8, q9, [{b}, #128]", "ldp q10, q11, [{b}, #160]",
                "ldp q12, q13, [{b}, #192]", "ldp q14, q15, [{b}, #224]",
                "ldp q16, q17, [{b}, #256]", "ldp q18, q19, [{b}, #288]",
                "ldp q20, q21, [{b}, #320]", "ldp q22, q23, [{b}, #352]",
                "ldp q24, q25, [{b}, #384]", "ldp q26, q27, [{b}, #416]",
                "ldp q28, q29, [{b}, #448]", "ldp q30, q31, [{b}, #480]",
                "msr fpcr, {c}",
                "msr fpsr, {s}",
                b = in(reg) base,
                c = in(reg) self.fpcr,
                s = in(reg) self.fpsr,
                options(nostack),
            );
        }
    }
}

/// Traps (or not) the guest's FP/SIMD use: CPTR_EL2.TFP (bit 10), kept with the other bits
/// `el2::configure` set.
pub fn trap_fp(trap: bool) {
    let mut cptr: u64;
    // SAFETY: read-modify-write of CPTR_EL2's TFP bit only.
    unsafe {
        asm!("mrs {}, cptr_el2", out(reg) cptr, options(nomem, nostack));
        cptr = if trap {
            cptr | (1 << 10)
        } else {
            cptr & !(1 << 10)
        };
        asm!("msr cptr_el2, {}", "isb", in(reg) cptr, options(nostack));
    }
}

/// Stops this CPU's EL1 virtual timer from firing for a vCPU that is leaving it.
pub fn silence_virtual_timer() {
    // SAFETY: CNTV_CTL_EL0 = 0 disables the EL1 virtual timer; its state was saved.
    unsafe { asm!("msr cntv_ctl_el0, xzr", "isb", options(nostack)) };
}
