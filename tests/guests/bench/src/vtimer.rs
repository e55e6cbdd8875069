//! `vtimer_latency` and `virtual_eoi`: the guest's virtual timer fires, and the guest takes
//! the interrupt.
//!
//! Each round programs CNTV_CVAL_EL0 [`LEAD`] ticks ahead, enables the timer, unmasks IRQs and
//! spins. The IRQ vector's first instruction reads the counter: `vtimer_latency` is that value
//! minus the deadline, i.e. the instructions from the moment the timer condition became true
//! to the guest's handler running (bare QEMU: the GIC model and exception entry, a few
//! instructions; under Veil: the physical interrupt's exit to EL2, injection through a list
//! register, and the return). The handler then acknowledges the interrupt, turns the timer off
//! and times its end-of-interrupt write: `virtual_eoi` is that window minus the same window
//! without the write. With a hardware virtual CPU interface the EOI should not trap at all.
//!
//! The handler lives in this module's own vector table, installed only while measuring; its
//! other entries branch to the runtime's, so any other exception is reported as usual. It
//! shares registers with the spinning code instead of saving any (the register contract is
//! next to the table below), which keeps the measured path exactly what the hardware does.

use veil_guest_rt::gic::{GICC_EOIR, GICC_IAR, Gic};
use veil_guest_rt::read_sysreg;

use crate::Outcome;

/// The virtual timer's PPI.
const VTIMER_INTID: u32 = 27;
/// How far ahead of "now" each deadline is set: more than the few instructions between
/// reading the counter and spinning, so the interrupt always arrives during the spin.
const LEAD: u64 = 1000;
/// Spin iterations (3 instructions each) to wait for one interrupt before declaring that none
/// comes: far beyond any plausible injection path, short enough to fail fast.
const SPIN_BOUND: u64 = 200_000;

// The measurement's vector table. Register contract with `one_round`:
//   in   x11  0 for GICv3 (system registers), else the GICv2 CPU interface's base
//   out  x10  set to 1 when the handler ran
//        x12  counter at the handler's first instruction
//        x13  the acknowledged IAR value
//        x14, x15  counter just before and just after the EOI write
// The handler writes nothing else (no flags, no stack) and returns with ERET, so the spin
// loop it interrupted sees only these registers change.
core::arch::global_asm!(
    r#"
.macro FORWARD offset
    .balign 0x80
    b       __veil_rt_vectors + \offset
.endm

.section .text.bench_vectors, "ax"
.balign 0x800
.global __veil_bench_vectors
__veil_bench_vectors:
    FORWARD 0x000
    FORWARD 0x080
    FORWARD 0x100
    FORWARD 0x180
    FORWARD 0x200
    // Current EL with SP_ELx, IRQ.
    .balign 0x80
    mrs     x12, cntvct_el0
    cbnz    x11, 1f
    mrs     x13, icc_iar1_el1
    msr     cntv_ctl_el0, xzr
    isb
    mrs     x14, cntvct_el0
    isb
    msr     icc_eoir1_el1, x13
    isb
    mrs     x15, cntvct_el0
    mov     x10, #1
    eret
1:  ldr     w13, [x11, #{GICC_IAR}]
    msr     cntv_ctl_el0, xzr
    isb
    mrs     x14, cntvct_el0
    isb
    str     w13, [x11, #{GICC_EOIR}]
    isb
    mrs     x15, cntvct_el0
    mov     x10, #1
    eret
    FORWARD 0x300
    FORWARD 0x380
    FORWARD 0x400
    FORWARD 0x480
    FORWARD 0x500
    FORWARD 0x580
    FORWARD 0x600
    FORWARD 0x680
    FORWARD 0x700
    FORWARD 0x780
"#,
    GICC_IAR = const GICC_IAR,
    GICC_EOIR = const GICC_EOIR,
);

unsafe extern "C" {
    /// The table above.
    static __veil_bench_vectors: u8;
}

/// Both figures from one run of the timer.
#[derive(Clone, Copy)]
pub struct Figures {
    pub latency: Outcome,
    pub eoi: Outcome,
}

impl Figures {
    fn unavailable(outcome: Outcome) -> Self {
        Self {
            latency: outcome,
            eoi: outcome,
        }
    }
}

/// Sets up the GIC for the virtual timer's PPI and takes `iters` timer interrupts.
pub fn measure(gic: Option<&Gic>, iters: u64) -> Figures {
    let Some(gic) = gic else {
        return Figures::unavailable(Outcome::Unavailable("the DTB describes no GIC"));
    };
    if let Err(refusal) = gic
        .init_distributor()
        .and_then(|()| gic.init_this_cpu(1 << VTIMER_INTID))
    {
        return Figures::unavailable(Outcome::Refused("GIC set-up failed", refusal));
    }

    // SAFETY: reading VBAR_EL1 has no side effects.
    let runtime_vectors = unsafe { read_sysreg!(vbar_el1) };
    set_vbar(&raw const __veil_bench_vectors as u64);
    let gicc = gic.cpu_interface().unwrap_or(0);
    let mut latency = 0u64;
    let mut eoi = 0u64;
    let mut missed = None;
    for round in 0..iters {
        match one_round(gicc) {
            Some(sample) if sample.intid == VTIMER_INTID => {
                latency += sample.latency;
                eoi += sample.eoi;
            }
            Some(_) => {
                missed = Some(Outcome::Unavailable(
                    "an interrupt other than the virtual timer's arrived",
                ));
                break;
            }
            None => {
                missed = Some(Outcome::Unavailable(if round == 0 {
                    "the virtual timer's interrupt never arrived"
                } else {
                    "the virtual timer's interrupt stopped arriving"
                }));
                break;
            }
        }
    }
    set_vbar(runtime_vectors);
    if let Some(outcome) = missed {
        return Figures::unavailable(outcome);
    }
    let window = eoi_window_baseline();
    Figures {
        latency: Outcome::Measured {
            extra: latency as i64,
            iters,
        },
        eoi: Outcome::Measured {
            extra: eoi as i64 - (window * iters) as i64,
            iters,
        },
    }
}

/// One interrupt's readings.
struct Sample {
    /// Counter at the handler's first instruction minus the deadline.
    latency: u64,
    /// Counter difference around the EOI write (window baseline not yet subtracted).
    eoi: u64,
    intid: u32,
}

/// Arms the timer, spins with IRQs unmasked until the handler has run, and returns what it
/// recorded; `None` if no interrupt came within [`SPIN_BOUND`] iterations.
fn one_round(gicc: usize) -> Option<Sample> {
    let deadline: u64;
    let done: u64;
    let arrived: u64;
    let iar: u64;
    let before_eoi: u64;
    let after_eoi: u64;
    // SAFETY: only the virtual timer and PSTATE.I change, both restored (timer off, IRQs
    // masked) before the block ends; the handler changes only the registers declared here.
    unsafe {
        core::arch::asm!(
            "mrs    x9, cntvct_el0",
            "add    x9, x9, {lead}",
            "msr    cntv_cval_el0, x9",
            "mov    {tmp}, #1",
            "msr    cntv_ctl_el0, {tmp}",
            "isb",
            "msr    daifclr, #2",
            "2:",
            "cbnz   x10, 3f",
            "subs   {bound}, {bound}, #1",
            "b.ne   2b",
            "3:",
            "msr    daifset, #2",
            // After a timeout the timer is still armed: turn it off either way.
            "msr    cntv_ctl_el0, xzr",
            "isb",
            lead = in(reg) LEAD,
            tmp = out(reg) _,
            bound = inout(reg) SPIN_BOUND => _,
            out("x9") deadline,
            inout("x10") 0u64 => done,
            in("x11") gicc,
            out("x12") arrived,
            out("x13") iar,
            out("x14") before_eoi,
            out("x15") after_eoi,
            options(nostack),
        );
    }
    (done != 0).then(|| Sample {
        latency: arrived.wrapping_sub(deadline),
        eoi: after_eoi.wrapping_sub(before_eoi),
        intid: veil_guest_rt::gic::intid(iar as u32),
    })
}

/// The handler's EOI window with nothing in it: the same fences and reads, for subtracting.
fn eoi_window_baseline() -> u64 {
    let before: u64;
    let after: u64;
    // SAFETY: two counter reads.
    unsafe {
        core::arch::asm!(
            "isb",
            "mrs    {before}, cntvct_el0",
            "isb",
            "isb",
            "mrs    {after}, cntvct_el0",
            before = out(reg) before,
            after = out(reg) after,
            options(nomem, nostack, preserves_flags),
        );
    }
    after.wrapping_sub(before)
}

/// Points VBAR_EL1 at `vectors`; the ISB makes the next exception use them.
fn set_vbar(vectors: u64) {
    // SAFETY: both tables this module installs are complete vector tables (the runtime's,
    // and this module's, which forwards to the runtime's).
    unsafe {
        core::arch::asm!("msr vbar_el1, {}", "isb", in(reg) vectors, options(nostack));
    }
}
