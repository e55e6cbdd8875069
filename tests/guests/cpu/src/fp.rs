//! `fp`: the guest's FP/SIMD state across exits. Veil is built soft-float and never saves the
//! FP registers, so they must come back from every exit exactly as the guest left them.
//!
//! An assembly loop fills q0-q31, FPCR and FPSR with a pattern, makes a batch of exits of one
//! kind using general-purpose registers only, then stores the FP state; Rust compares. Kinds:
//! HVC (PSCI_VERSION), a trapped ID register read (HCR_EL2.TID3), a PL011 MMIO read (emulated),
//! a trapped EL1 physical timer read (emulated), and WFI woken by the virtual timer (a WFI exit
//! plus an interrupt exit each time). Each kind runs 1000 times, in batches of 100 with a
//! fresh pattern each. With a second vCPU in the DTB, vCPU 1 runs the same batches at the same
//! time with its own patterns.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use veil_guest_rt::gic::{self, Gic};
use veil_guest_rt::{cpu, dtb, println, psci};

use crate::tally::Tally;
use crate::timer;

/// The FP/SIMD state as the assembly loads and stores it.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct FpState {
    q: [u128; 32],
    fpcr: u64,
    fpsr: u64,
    /// FPCR and FPSR as read right after writing them (bits the CPU does not implement read
    /// as zero): what must come back.
    fpcr_set: u64,
    fpsr_set: u64,
}

const _: () = assert!(core::mem::offset_of!(FpState, fpcr) == 512);
const _: () = assert!(core::mem::offset_of!(FpState, fpcr_set) == 528);

core::arch::global_asm!(
    r#"
.global cpu_fp_exits
.balign 4
// u64 cpu_fp_exits(kind x0, count x1, const FpState *in x2, FpState *out x3, aux x4, ticks x5)
// Returns how many timer wake-ups acknowledged something other than INTID 27.
cpu_fp_exits:
    stp     x29, x30, [sp, #-160]!
    mov     x29, sp
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     d8, d9, [sp, #80]
    stp     d10, d11, [sp, #96]
    stp     d12, d13, [sp, #112]
    stp     d14, d15, [sp, #128]
    mrs     x9, fpcr
    mrs     x10, fpsr
    stp     x9, x10, [sp, #144]
    mov     x19, x0
    mov     x20, x1
    mov     x21, x2
    mov     x22, x3
    mov     x23, x4
    mov     x24, x5
    mov     x25, #0
    add     x11, x21, #512
    ldp     x9, x10, [x11]
    msr     fpcr, x9
    msr     fpsr, x10
    mrs     x9, fpcr
    mrs     x10, fpsr
    add     x11, x22, #528
    stp     x9, x10, [x11]
    ldp     q0, q1, [x21, #0]
    ldp     q2, q3, [x21, #32]
    ldp     q4, q5, [x21, #64]
    ldp     q6, q7, [x21, #96]
    ldp     q8, q9, [x21, #128]
    ldp     q10, q11, [x21, #160]
    ldp     q12, q13, [x21, #192]
    ldp     q14, q15, [x21, #224]
    ldp     q16, q17, [x21, #256]
    ldp     q18, q19, [x21, #288]
    ldp     q20, q21, [x21, #320]
    ldp     q22, q23, [x21, #352]
    ldp     q24, q25, [x21, #384]
    ldp     q26, q27, [x21, #416]
    ldp     q28, q29, [x21, #448]
    ldp     q30, q31, [x21, #480]
1:  cbz     x20, 9f
    sub     x20, x20, #1
    cmp     x19, #1
    b.lo    10f
    b.eq    11f
    cmp     x19, #3
    b.lo    12f
    b.eq    13f
    cmp     x19, #5
    b.lo    14f
    b.eq    15f
    b       16f
// 0: HVC PSCI_VERSION.
10: movz    w0, #0
    movk    w0, #0x8400, lsl #16
    hvc     #0
    b       1b
// 1: trapped ID register read.
11: mrs     x0, id_aa64pfr0_el1
    b       1b
// 2: emulated MMIO read (x23 = PL011 UARTFR).
12: ldr     w0, [x23]
    b       1b
// 3: trapped EL1 physical timer register read (emulated).
13: mrs     x0, cntp_ctl_el0
    b       1b
// 4: WFI woken by the virtual timer, GICv3 system registers.
14: msr     cntv_tval_el0, x24
    mov     x0, #1
    msr     cntv_ctl_el0, x0
    isb
    dsb     sy
    wfi
    mrs     x0, icc_iar1_el1
    msr     cntv_ctl_el0, xzr
    isb
    and     x1, x0, #0xffffff
    cmp     x1, #27
    cinc    x25, x25, ne
    cmp     x1, #1020
    b.hs    1b
    msr     icc_eoir1_el1, x0
    isb
    b       1b
// 5: the same with the GICv2 CPU interface at x23.
15: msr     cntv_tval_el0, x24
    mov     x0, #1
    msr     cntv_ctl_el0, x0
    isb
    dsb     sy
    wfi
    ldr     w0, [x23, #0xc]
    msr     cntv_ctl_el0, xzr
    isb
    and     x1, x0, #0x3ff
    cmp     x1, #27
    cinc    x25, x25, ne
    cmp     x1, #1020
    b.hs    1b
    str     w0, [x23, #0x10]
    b       1b
// Anything else: no exit at all (a control).
16: b       1b
9:  stp     q0, q1, [x22, #0]
    stp     q2, q3, [x22, #32]
    stp     q4, q5, [x22, #64]
    stp     q6, q7, [x22, #96]
    stp     q8, q9, [x22, #128]
    stp     q10, q11, [x22, #160]
    stp     q12, q13, [x22, #192]
    stp     q14, q15, [x22, #224]
    stp     q16, q17, [x22, #256]
    stp     q18, q19, [x22, #288]
    stp     q20, q21, [x22, #320]
    stp     q22, q23, [x22, #352]
    stp     q24, q25, [x22, #384]
    stp     q26, q27, [x22, #416]
    stp     q28, q29, [x22, #448]
    stp     q30, q31, [x22, #480]
    mrs     x9, fpcr
    mrs     x10, fpsr
    add     x11, x22, #512
    stp     x9, x10, [x11]
    mov     x0, x25
    ldp     x9, x10, [sp, #144]
    msr     fpcr, x9
    msr     fpsr, x10
    ldp     d14, d15, [sp, #128]
    ldp     d12, d13, [sp, #112]
    ldp     d10, d11, [sp, #96]
    ldp     d8, d9, [sp, #80]
    ldp     x25, x26, [sp, #64]
    ldp     x23, x24, [sp, #48]
    ldp     x21, x22, [sp, #32]
    ldp     x19, x20, [sp, #16]
    ldp     x29, x30, [sp], #160
    ret
"#
);

unsafe extern "C" {
    fn cpu_fp_exits(
        kind: u64,
        count: u64,
        input: *const FpState,
        output: *mut FpState,
        aux: u64,
        ticks: u64,
    ) -> u64;
}

/// The kinds of exit, by the assembly's number.
const KINDS: [(u64, &str); 5] = [
    (0, "HVC"),
    (1, "trapped ID register read"),
    (2, "PL011 MMIO read"),
    (3, "trapped CNTP_CTL_EL0 read"),
    (4, "WFI woken by the virtual timer"),
];
/// The GICv2 variant of kind 4.
const WFI_GICV2: u64 = 5;
/// Exits per batch and batches per kind: 1000 exits of each kind.
const BATCH: u64 = 100;
const BATCHES: u64 = 10;
/// PL011 flag register: reading it is an emulated MMIO access.
const UARTFR: u64 = 0x0900_0018;
/// Most vCPUs this test drives.
const VCPUS: usize = 2;

/// A pattern word for (vCPU, kind, batch, register): distinct everywhere, no zero bytes.
fn pattern(vcpu: usize, kind: u64, batch: u64, reg: usize) -> u128 {
    let mut x = ((vcpu as u64) << 48) ^ (kind << 40) ^ (batch << 32) ^ reg as u64;
    let mut word = || {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (u128::from(word()) << 64) | u128::from(word())
}

/// FPCR/FPSR patterns: AHP, DN, FZ and a rounding mode; cumulative exception flags and QC.
fn control_pattern(batch: u64) -> (u64, u64) {
    if batch.is_multiple_of(2) {
        (
            (1 << 26) | (1 << 25) | (1 << 24) | (0b11 << 22),
            (1 << 27) | 0x9F,
        )
    } else {
        (0b01 << 22, (1 << 4) | 1)
    }
}

/// What one vCPU saw, for vCPU 0 to print.
struct Report {
    /// Per kind: batches whose state came back wrong.
    bad_batches: [AtomicU32; 6],
    /// Per kind: wake-ups that acknowledged something else than the timer.
    spurious: [AtomicU32; 6],
    /// The first difference: kind << 32 | register (32 = FPCR, 33 = FPSR), and the values.
    first_bad: AtomicU64,
    first_got: [AtomicU64; 2],
    first_want: [AtomicU64; 2],
    /// Set (last) when the vCPU finished.
    done: AtomicU32,
}

impl Report {
    const fn new() -> Self {
        Self {
            bad_batches: [const { AtomicU32::new(0) }; 6],
            spurious: [const { AtomicU32::new(0) }; 6],
            first_bad: AtomicU64::new(u64::MAX),
            first_got: [const { AtomicU64::new(0) }; 2],
            first_want: [const { AtomicU64::new(0) }; 2],
            done: AtomicU32::new(0),
        }
    }
}

// Plain loads and stores only (no read-modify-write atomics: memory is Device with the MMU
// off); each report is written by one vCPU and read by vCPU 0 after `done`.
static REPORTS: [Report; VCPUS] = [const { Report::new() }; VCPUS];
/// vCPU 1 waits for this before it starts, so both run at the same time.
static START: AtomicU32 = AtomicU32::new(0);

/// Runs every kind's batches on the calling vCPU and fills `REPORTS[vcpu]`.
fn exercise(vcpu: usize, gic: &Gic) {
    let report = &REPORTS[vcpu];
    let ticks = timer::ms(1) / 50; // 20 µs
    for (kind, _) in KINDS {
        let (asm_kind, aux) = match kind {
            2 => (kind, UARTFR),
            4 => match gic.cpu_interface() {
                Some(gicc) => (WFI_GICV2, gicc as u64),
                None => (kind, 0),
            },
            _ => (kind, 0),
        };
        for batch in 0..BATCHES {
            let mut input = FpState {
                q: [0; 32],
                fpcr: 0,
                fpsr: 0,
                fpcr_set: 0,
                fpsr_set: 0,
            };
            for (reg, q) in input.q.iter_mut().enumerate() {
                *q = pattern(vcpu, kind, batch, reg);
            }
            (input.fpcr, input.fpsr) = control_pattern(batch);
            let mut output = input;
            output.q = [0; 32];
            // SAFETY: the assembly follows the procedure-call standard (it saves x19-x29, LR,
            // d8-d15, FPCR and FPSR) and touches only `input`, `output`, the registers it
            // exits through (PSCI_VERSION, an ID register, the PL011's flag register, the
            // timer and the GIC CPU interface set up by `run`).
            let spurious =
                unsafe { cpu_fp_exits(asm_kind, BATCH, &input, &mut output, aux, ticks) };
            let k = kind as usize;
            report.spurious[k].store(
                report.spurious[k].load(Ordering::Relaxed) + spurious as u32,
                Ordering::Relaxed,
            );
            let differs = (0..34).find(|&r| match r {
                0..32 => output.q[r] != input.q[r],
                32 => output.fpcr != output.fpcr_set,
                _ => output.fpsr != output.fpsr_set,
            });
            if let Some(reg) = differs {
                report.bad_batches[k].store(
                    report.bad_batches[k].load(Ordering::Relaxed) + 1,
                    Ordering::Relaxed,
                );
                if report.first_bad.load(Ordering::Relaxed) == u64::MAX {
                    let (got, want) = match reg {
                        0..32 => (output.q[reg], input.q[reg]),
                        32 => (output.fpcr.into(), output.fpcr_set.into()),
                        _ => (output.fpsr.into(), output.fpsr_set.into()),
                    };
                    report.first_got[0].store((got >> 64) as u64, Ordering::Relaxed);
                    report.first_got[1].store(got as u64, Ordering::Relaxed);
                    report.first_want[0].store((want >> 64) as u64, Ordering::Relaxed);
                    report.first_want[1].store(want as u64, Ordering::Relaxed);
                    report
                        .first_bad
                        .store((kind << 32) | reg as u64, Ordering::Relaxed);
                }
            }
        }
    }
    report.done.store(1, Ordering::SeqCst);
}

/// vCPU 1's main: set up its GIC interface, wait for the start, run, report, turn off.
fn secondary(_: usize) -> ! {
    let ready = gic::discover().filter(|g| g.init_this_cpu(1 << 27).is_ok());
    if let Some(gic) = ready {
        START.store(1, Ordering::SeqCst);
        while START.load(Ordering::SeqCst) != 2 {
            core::hint::spin_loop();
        }
        exercise(1, &gic);
    } else {
        // vCPU 0 sees `done` without any batch run and reports the set-up failure.
        REPORTS[1].first_bad.store(u64::MAX - 1, Ordering::Relaxed);
        REPORTS[1].done.store(1, Ordering::SeqCst);
    }
    let error = psci::cpu_off();
    // CPU_OFF returned: nothing more this vCPU can do; vCPU 0 has its report already.
    let _ = error;
    veil_guest_rt::halt()
}

fn vcpu_count() -> usize {
    let Ok(fdt) = dtb::get() else { return 1 };
    fdt.find_node("/cpus")
        .map(|cpus| {
            cpus.children()
                .filter(|n| n.name.split('@').next() == Some("cpu"))
                .count()
        })
        .unwrap_or(1)
}

/// `cpu.test=fp`.
pub fn run(tally: &mut Tally) {
    let Some(gic) = gic::discover() else {
        tally.fail(format_args!("no GIC in the DTB"));
        return;
    };
    if let Err(why) = gic
        .init_distributor()
        .and_then(|()| gic.init_this_cpu(1 << 27))
    {
        tally.fail(format_args!("GIC set-up: {why}"));
        return;
    }
    let vcpus = vcpu_count().min(VCPUS);
    if vcpus > 1 {
        // SAFETY: stack 1 is free: no vCPU 1 runs yet.
        let started = unsafe { cpu::start(1, 0x8000_0001, secondary, 0) };
        if let Err(e) = started {
            tally.fail(format_args!("CPU_ON of vCPU 1: {e:?}"));
            return;
        }
        let ready = timer::wait_until(5000, || {
            START.load(Ordering::SeqCst) == 1 || REPORTS[1].done.load(Ordering::SeqCst) == 1
        });
        if !ready {
            tally.fail(format_args!("vCPU 1 did not come up within 5 s"));
            return;
        }
        START.store(2, Ordering::SeqCst);
    }
    println!(
        "cpu: {} vCPU(s) making {} exits of each kind, batches of {}",
        vcpus,
        BATCH * BATCHES,
        BATCH
    );
    exercise(0, &gic);
    if vcpus > 1 && !timer::wait_until(30_000, || REPORTS[1].done.load(Ordering::SeqCst) == 1) {
        tally.fail(format_args!("vCPU 1 did not finish within 30 s"));
    }
    for (vcpu, report) in REPORTS.iter().enumerate().take(vcpus) {
        if report.done.load(Ordering::SeqCst) != 1 {
            continue;
        }
        if report.first_bad.load(Ordering::Relaxed) == u64::MAX - 1 {
            tally.fail(format_args!("vCPU {vcpu}: GIC set-up failed"));
            continue;
        }
        for (kind, name) in KINDS {
            let k = kind as usize;
            let bad = report.bad_batches[k].load(Ordering::Relaxed);
            tally.check(
                bad == 0,
                format_args!(
                    "vCPU {vcpu}: {} {name} exits: q0-q31, FPCR, FPSR intact in {} of {} batches",
                    BATCH * BATCHES,
                    BATCHES - u64::from(bad),
                    BATCHES
                ),
                format_args!("all batches intact"),
            );
            let spurious = report.spurious[k].load(Ordering::Relaxed);
            if spurious != 0 {
                tally.fail(format_args!(
                    "vCPU {vcpu}: {spurious} of the {name} wake-ups acknowledged something other than INTID 27"
                ));
            }
        }
        let first = report.first_bad.load(Ordering::Relaxed);
        if first != u64::MAX {
            let reg = first & 0xffff_ffff;
            let name = match reg {
                32 => RegName::Fpcr,
                33 => RegName::Fpsr,
                n => RegName::Q(n),
            };
            println!(
                "cpu: vCPU {vcpu}: first difference after {} exits: {name} = {:#018x}{:016x}, expected {:#018x}{:016x}",
                KINDS[(first >> 32) as usize].1,
                report.first_got[0].load(Ordering::Relaxed),
                report.first_got[1].load(Ordering::Relaxed),
                report.first_want[0].load(Ordering::Relaxed),
                report.first_want[1].load(Ordering::Relaxed),
            );
        }
    }
}

enum RegName {
    Q(u64),
    Fpcr,
    Fpsr,
}

impl core::fmt::Display for RegName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegName::Q(n) => write!(f, "q{n}"),
            RegName::Fpcr => f.write_str("FPCR"),
            RegName::Fpsr => f.write_str("FPSR"),
        }
    }
}
