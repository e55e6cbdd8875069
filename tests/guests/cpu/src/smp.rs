//! `smp`: PSCI power control of secondary vCPUs (run with four). vCPU 0 turns each of vCPUs
//! 1..3 on with CPU_ON and a context ID, watches it with AFFINITY_INFO while it runs and after
//! it turns itself off with CPU_OFF, checks the error codes of CPU_ON (ALREADY_ON, ON_PENDING,
//! INVALID_PARAMETERS, INVALID_ADDRESS), then turns a vCPU on again, this time through the
//! 32-bit CPU_ON, and all three at once.
//!
//! A secondary enters at `cpu_smp_entry` with x0 = the context ID, exactly as CPU_ON passed
//! it; it records the context ID and what it sees of itself (MPIDR, the entry state, Veil's
//! VEIL_VCPU_INFO) for vCPU 0, which alone prints; then it waits for vCPU 0's go and calls
//! CPU_OFF.

use core::sync::atomic::{AtomicU64, Ordering};

use veil_guest_rt::{cpu, println, read_sysreg, smccc};

use crate::tally::Tally;
use crate::timer;

/// PSCI function IDs and return codes used here.
const CPU_OFF: u32 = 0x8400_0002;
const CPU_ON_32: u32 = 0x8400_0003;
const CPU_ON_64: u32 = 0xC400_0003;
const AFFINITY_INFO_64: u32 = 0xC400_0004;
const VEIL_VCPU_INFO: u32 = 0xC600_0001;
const ALREADY_ON: i64 = -4;
const ON_PENDING: i64 = -5;
const INVALID_PARAMETERS: i64 = -2;
const INVALID_ADDRESS: i64 = -9;
/// AFFINITY_INFO answers.
const ON: i64 = 0;
const OFF: i64 = 1;

/// Secondary vCPUs this test drives: MPIDR Aff0 1..=3.
const SECONDARIES: usize = 3;
/// Slots per vCPU index (0..=3).
const SLOTS: usize = SECONDARIES + 1;
/// How long to wait for a vCPU to come up or go down.
const WAIT_MS: u64 = 5000;

/// SCTLR_EL1.M (MMU), .C (data cache).
const SCTLR_M: u64 = 1 << 0;
const SCTLR_C: u64 = 1 << 2;
/// DAIF all masked.
const DAIF_ALL: u64 = 0b1111 << 6;

/// What a secondary reports, by its MPIDR Aff0. Written by that secondary only, read by vCPU 0
/// once `STATE` says `RUNNING`; plain loads and stores (memory is Device with the MMU off).
struct Seen {
    state: AtomicU64,
    context: AtomicU64,
    mpidr: AtomicU64,
    sctlr: AtomicU64,
    daif: AtomicU64,
    current_el: AtomicU64,
    spsel: AtomicU64,
    /// VEIL_VCPU_INFO: x0, x2 (vCPU index), x3 (vCPU count).
    info: [AtomicU64; 3],
    /// How many times it has started.
    starts: AtomicU64,
    /// vCPU 0 sets this to let it turn itself off.
    go: AtomicU64,
    /// The mark the secondary leaves in its SCTLR_EL1 before CPU_OFF (C = 1), which the next
    /// CPU_ON must not carry over.
    dirty: AtomicU64,
}

/// `Seen::state` values.
const IDLE: u64 = 0;
const RUNNING: u64 = 1;
/// CPU_OFF returned (a failure): the value it returned is in `context`.
const OFF_RETURNED: u64 = 2;

impl Seen {
    const fn new() -> Self {
        Self {
            state: AtomicU64::new(IDLE),
            context: AtomicU64::new(0),
            mpidr: AtomicU64::new(0),
            sctlr: AtomicU64::new(0),
            daif: AtomicU64::new(0),
            current_el: AtomicU64::new(0),
            spsel: AtomicU64::new(0),
            info: [const { AtomicU64::new(0) }; 3],
            starts: AtomicU64::new(0),
            go: AtomicU64::new(0),
            dirty: AtomicU64::new(0),
        }
    }
}

static SEEN: [Seen; SLOTS] = [const { Seen::new() }; SLOTS];

// The secondaries' entry: x0 = context ID. Sets up what Rust code needs (FP/SIMD on, the
// runtime's vectors, the runtime's stack for this vCPU index = MPIDR Aff0), then calls
// `secondary(context, index)`. The entry state itself (SCTLR, DAIF, CurrentEL, SPSel) is read
// first, before anything changes it, and passed along in x2..x5.
core::arch::global_asm!(
    ".global cpu_smp_entry",
    ".balign 4",
    "cpu_smp_entry:",
    "    mrs     x2, sctlr_el1",
    "    mrs     x3, daif",
    "    mrs     x4, currentel",
    "    mrs     x5, spsel",
    "    mov     x6, #(3 << 20)",
    "    msr     cpacr_el1, x6",
    "    isb",
    "    adrp    x6, __veil_rt_vectors",
    "    add     x6, x6, :lo12:__veil_rt_vectors",
    "    msr     vbar_el1, x6",
    "    isb",
    "    mrs     x1, mpidr_el1",
    "    and     x1, x1, #0xff",
    "    add     x6, x1, #1",
    "    mov     x7, #{STACK_SIZE}",
    "    mul     x6, x6, x7",
    "    adrp    x7, {stacks}",
    "    add     x7, x7, :lo12:{stacks}",
    "    add     x6, x6, x7",
    "    mov     sp, x6",
    "    bl      {secondary}",
    "1:  wfi",
    "    b       1b",
    STACK_SIZE = const cpu::STACK_SIZE,
    stacks = sym cpu::STACKS,
    secondary = sym secondary,
);

unsafe extern "C" {
    fn cpu_smp_entry();
}

/// A secondary's Rust code: record, wait for the go, CPU_OFF.
extern "C" fn secondary(context: u64, index: u64, sctlr: u64, daif: u64, el: u64, spsel: u64) -> ! {
    let index = index as usize;
    if index >= SLOTS {
        // Not a vCPU this test started; nothing sensible to do but stop.
        veil_guest_rt::halt()
    }
    let seen = &SEEN[index];
    seen.context.store(context, Ordering::Relaxed);
    seen.mpidr.store(cpu::mpidr(), Ordering::Relaxed);
    seen.sctlr.store(sctlr, Ordering::Relaxed);
    seen.daif.store(daif, Ordering::Relaxed);
    seen.current_el.store((el >> 2) & 3, Ordering::Relaxed);
    seen.spsel.store(spsel & 1, Ordering::Relaxed);
    // SAFETY: VEIL_VCPU_INFO only reports (on bare QEMU: NOT_SUPPORTED).
    let info = unsafe { smccc::hvc64(VEIL_VCPU_INFO, 0, 0, 0) };
    seen.info[0].store(info[0], Ordering::Relaxed);
    seen.info[1].store(info[2], Ordering::Relaxed);
    seen.info[2].store(info[3], Ordering::Relaxed);
    seen.starts
        .store(seen.starts.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    // Leave a mark in SCTLR_EL1 that the next start must not see: C = 1 (with the MMU off it
    // changes nothing for data accesses, which stay Device).
    // SAFETY: see above; the ISB makes it take effect.
    unsafe {
        let sctlr: u64 = read_sysreg!(sctlr_el1);
        veil_guest_rt::write_sysreg!(sctlr_el1, sctlr | SCTLR_C);
        core::arch::asm!("isb", options(nostack));
    }
    seen.dirty.store(1, Ordering::Relaxed);
    seen.state.store(RUNNING, Ordering::SeqCst);
    while seen.go.load(Ordering::SeqCst) == 0 {
        core::hint::spin_loop();
    }
    seen.go.store(0, Ordering::Relaxed);
    seen.state.store(IDLE, Ordering::SeqCst);
    // SAFETY: CPU_OFF stops this vCPU; it holds nothing vCPU 0 waits for except `state`.
    let result = unsafe { smccc::hvc64(CPU_OFF, 0, 0, 0) };
    seen.context.store(result[0], Ordering::Relaxed);
    seen.state.store(OFF_RETURNED, Ordering::SeqCst);
    veil_guest_rt::halt()
}

/// A PSCI call over HVC; returns x0 as PSCI's signed result (w0 for 32-bit IDs).
fn psci(fid: u32, x1: u64, x2: u64, x3: u64) -> i64 {
    // SAFETY: every call here is CPU_ON of a vCPU at `cpu_smp_entry` (valid code, a free
    // stack) or with arguments Veil must refuse, or AFFINITY_INFO, which only reports.
    let [x0, ..] = unsafe { smccc::hvc64(fid, x1, x2, x3) };
    if fid & (1 << 30) == 0 {
        i64::from(x0 as u32 as i32)
    } else {
        x0 as i64
    }
}

fn affinity(mpidr: u64) -> i64 {
    psci(AFFINITY_INFO_64, mpidr, 0, 0)
}

/// The context ID for start `round` of vCPU `index`: all 64 bits used.
fn context_for(index: usize, round: u64) -> u64 {
    0xC0DE_0000_0000_0000 | (round << 32) | (0xABCD << 8) | index as u64
}

fn entry() -> u64 {
    cpu_smp_entry as *const () as u64
}

/// Waits until vCPU `index` reports RUNNING (started `starts` times in all).
fn wait_running(index: usize, starts: u64) -> bool {
    let seen = &SEEN[index];
    timer::wait_until(WAIT_MS, || {
        seen.state.load(Ordering::SeqCst) == RUNNING
            && seen.starts.load(Ordering::Relaxed) == starts
    })
}

/// Lets vCPU `index` turn itself off and waits until AFFINITY_INFO says OFF.
fn release_and_wait_off(tally: &mut Tally, index: usize) {
    let seen = &SEEN[index];
    seen.go.store(1, Ordering::SeqCst);
    let off = timer::wait_until(WAIT_MS, || affinity(index as u64) == OFF);
    if seen.state.load(Ordering::SeqCst) == OFF_RETURNED {
        tally.fail(format_args!(
            "vCPU {index}: CPU_OFF returned {:#x}",
            seen.context.load(Ordering::Relaxed)
        ));
    }
    tally.check(
        off,
        format_args!(
            "vCPU {index}: AFFINITY_INFO = {} after its CPU_OFF",
            affinity(index as u64)
        ),
        format_args!("{OFF} (OFF)"),
    );
    // Give Veil time to finish the CPU_OFF on the vCPU's own CPU before anyone turns it on
    // again: a CPU_ON in that window is lost (see `run_restart`, a known Veil bug).
    settle();
}

/// Waits 10 ms.
fn settle() {
    timer::wait_until(10, || false);
}

/// Checks what vCPU `index` recorded on its start number `starts` with `context`.
fn check_report(tally: &mut Tally, index: usize, context: u64) {
    let seen = &SEEN[index];
    let got = seen.context.load(Ordering::Relaxed);
    tally.check(
        got == context,
        format_args!("vCPU {index}: entered with x0 = {got:#x}"),
        format_args!("the context ID {context:#x}"),
    );
    let mpidr = seen.mpidr.load(Ordering::Relaxed);
    tally.check(
        mpidr == 0x8000_0000 | index as u64,
        format_args!("vCPU {index}: MPIDR_EL1 = {mpidr:#x}"),
        format_args!("{:#x}", 0x8000_0000 | index as u64),
    );
    let sctlr = seen.sctlr.load(Ordering::Relaxed);
    let daif = seen.daif.load(Ordering::Relaxed);
    let el = seen.current_el.load(Ordering::Relaxed);
    let spsel = seen.spsel.load(Ordering::Relaxed);
    tally.check(
        sctlr & (SCTLR_M | SCTLR_C) == 0 && daif == DAIF_ALL && el == 1 && spsel == 1,
        format_args!(
            "vCPU {index}: entry state SCTLR_EL1 {sctlr:#x}, DAIF {daif:#x}, EL{el}, SPSel {spsel}"
        ),
        format_args!("MMU and data cache off (M = C = 0), DAIF all masked, EL1h"),
    );
    if tally.veil {
        let info = [
            seen.info[0].load(Ordering::Relaxed),
            seen.info[1].load(Ordering::Relaxed),
            seen.info[2].load(Ordering::Relaxed),
        ];
        tally.check(
            info == [0, index as u64, SLOTS as u64],
            format_args!(
                "vCPU {index}: VEIL_VCPU_INFO = {:#x}, vCPU {}, {} vCPUs",
                info[0], info[1], info[2]
            ),
            format_args!("0, vCPU {index}, {SLOTS} vCPUs"),
        );
    }
}

/// `cpu.test=smp`.
pub fn run(tally: &mut Tally) {
    let me = cpu::mpidr();
    tally.check(
        me == 0x8000_0000,
        format_args!("vCPU 0: MPIDR_EL1 = {me:#x}"),
        format_args!("0x80000000"),
    );

    // One at a time: CPU_ON (64-bit), the state while it runs, ALREADY_ON, then CPU_OFF.
    for index in 1..=SECONDARIES {
        let mpidr = index as u64;
        let before = affinity(mpidr);
        tally.check(
            before == OFF,
            format_args!("vCPU {index}: AFFINITY_INFO = {before} before CPU_ON"),
            format_args!("{OFF} (OFF)"),
        );
        let context = context_for(index, 1);
        let on = psci(CPU_ON_64, mpidr, entry(), context);
        tally.check(
            on == 0,
            format_args!("CPU_ON(vCPU {index}, context {context:#x}) = {on}"),
            format_args!("0 (SUCCESS)"),
        );
        if on != 0 {
            continue;
        }
        // At once, before it necessarily runs: already on, or still pending.
        let again = psci(CPU_ON_64, mpidr, entry(), context);
        tally.check(
            again == ALREADY_ON || again == ON_PENDING,
            format_args!("CPU_ON(vCPU {index}) again at once = {again}"),
            format_args!("{ALREADY_ON} (ALREADY_ON) or {ON_PENDING} (ON_PENDING)"),
        );
        if !wait_running(index, 1) {
            tally.fail(format_args!("vCPU {index} did not run within {WAIT_MS} ms"));
            continue;
        }
        check_report(tally, index, context);
        let state = affinity(mpidr);
        tally.check(
            state == ON,
            format_args!("vCPU {index}: AFFINITY_INFO = {state} while it runs"),
            format_args!("{ON} (ON)"),
        );
        let again = psci(CPU_ON_64, mpidr, entry(), context);
        tally.check(
            again == ALREADY_ON,
            format_args!("CPU_ON(vCPU {index}) while it runs = {again}"),
            format_args!("{ALREADY_ON} (ALREADY_ON)"),
        );
        release_and_wait_off(tally, index);
    }

    // CPU_ON errors. Bare QEMU does not check entry addresses (it starts the vCPU there): the
    // INVALID_ADDRESS cases are Veil's promise only.
    let bad_entries: &[(&str, u64, u64)] = if tally.veil {
        &[
            (
                "CPU_ON(vCPU 1, entry 0x10000000 outside RAM)",
                1,
                0x1000_0000,
            ),
            ("CPU_ON(vCPU 1, entry 0x0)", 1, 0),
            ("CPU_ON(vCPU 1, entry past the end of RAM)", 1, ram_end()),
            (
                "CPU_ON(vCPU 1, entry 0x1_4008_0000, beyond the IPA space)",
                1,
                0x1_4008_0000,
            ),
            ("CPU_ON(vCPU 1, misaligned entry)", 1, entry() + 2),
        ]
    } else {
        tally.skip_veil_only(format_args!("CPU_ON with bad entry addresses"));
        &[]
    };
    for &(what, mpidr, entry) in bad_entries {
        let got = psci(CPU_ON_64, mpidr, entry, 0);
        tally.check(
            got == INVALID_ADDRESS,
            format_args!("{what} = {got}"),
            format_args!("{INVALID_ADDRESS} (INVALID_ADDRESS)"),
        );
    }
    for (what, fid, mpidr, entry, expected) in [
        (
            "CPU_ON(MPIDR 7, absent)",
            CPU_ON_64,
            7,
            entry(),
            INVALID_PARAMETERS,
        ),
        (
            "CPU_ON(MPIDR 0x100, absent)",
            CPU_ON_64,
            0x100,
            entry(),
            INVALID_PARAMETERS,
        ),
        (
            "CPU_ON(MPIDR 0x1_0000_0001, Aff3 = 1, absent)",
            CPU_ON_64,
            0x1_0000_0001,
            entry(),
            INVALID_PARAMETERS,
        ),
    ] {
        let got = psci(fid, mpidr, entry, 0);
        tally.check(
            got == expected,
            format_args!("{what} = {got}"),
            format_args!("{expected}"),
        );
    }
    let state = affinity(1);
    tally.check(
        state == OFF,
        format_args!("vCPU 1: AFFINITY_INFO = {state} after the refused CPU_ONs"),
        format_args!("{OFF} (OFF)"),
    );

    // Again, through the 32-bit CPU_ON: arguments are 32 bits, the upper halves ignored.
    // (Bare QEMU does not ignore them: no junk there.)
    let context = 0x1234_5678;
    let junk = if tally.veil { 0xDEAD_BEEF_0000_0000 } else { 0 };
    let on = psci(
        CPU_ON_32,
        (junk & 0xFFFF_FFFF_0000_0000) | 1,
        entry(),
        junk | context,
    );
    tally.check(
        on == 0,
        format_args!(
            "CPU_ON (32-bit) of vCPU 1 again after CPU_OFF, junk in the upper halves = {on}"
        ),
        format_args!("0 (SUCCESS)"),
    );
    if on == 0 {
        if wait_running(1, 2) {
            check_report(tally, 1, context);
            let mark = SEEN[1].sctlr.load(Ordering::Relaxed) & SCTLR_C;
            tally.check(
                mark == 0,
                format_args!("vCPU 1: SCTLR_EL1.C = {} on its second start", mark >> 2),
                format_args!("0 (its own SCTLR_EL1.C = 1 from before CPU_OFF not carried over)"),
            );
            release_and_wait_off(tally, 1);
        } else {
            tally.fail(format_args!("vCPU 1 did not run again within {WAIT_MS} ms"));
        }
    }

    // All three at once.
    let mut started = [false; SLOTS];
    for index in 1..=SECONDARIES {
        let expected_starts = SEEN[index].starts.load(Ordering::Relaxed) + 1;
        let on = psci(
            CPU_ON_64,
            index as u64,
            entry(),
            context_for(index, expected_starts),
        );
        started[index] = on == 0;
        if on != 0 {
            tally.fail(format_args!("CPU_ON(vCPU {index}) with all three = {on}"));
        }
    }
    let all = timer::wait_until(WAIT_MS, || {
        (1..=SECONDARIES).all(|i| !started[i] || SEEN[i].state.load(Ordering::SeqCst) == RUNNING)
    });
    tally.check(
        all,
        format_args!("vCPUs 1-3 running at the same time"),
        format_args!("all three to run"),
    );
    let on = (0..SLOTS).filter(|&i| affinity(i as u64) == ON).count();
    tally.check(
        on == SLOTS,
        format_args!("AFFINITY_INFO says {on} of {SLOTS} vCPUs ON"),
        format_args!("all {SLOTS}"),
    );
    let level1 = psci(AFFINITY_INFO_64, 0, 1, 0);
    tally.check(
        level1 == ON,
        format_args!("AFFINITY_INFO(cluster 0, level 1) = {level1}"),
        format_args!("{ON} (ON)"),
    );
    for index in (1..=SECONDARIES).filter(|&i| started[i]) {
        let starts = SEEN[index].starts.load(Ordering::Relaxed);
        check_report(tally, index, context_for(index, starts));
        release_and_wait_off(tally, index);
    }
    println!(
        "cpu: vCPUs 1-3 started {} times in all",
        (1..=SECONDARIES)
            .map(|i| SEEN[i].starts.load(Ordering::Relaxed))
            .sum::<u64>()
    );
}

/// Restarts of vCPU 1 in `run_restart`.
const RESTARTS: u64 = 400;

/// `cpu.test=smp-restart`: vCPU 1 turned on again the moment AFFINITY_INFO says it is off,
/// `RESTARTS` times. PSCI allows CPU_ON as soon as AFFINITY_INFO reports OFF; each one must
/// start the vCPU (seen within 1 s), none may be lost.
pub fn run_restart(tally: &mut Tally) {
    let seen = &SEEN[1];
    let mut lost = 0;
    let mut refused = 0;
    for round in 0..RESTARTS {
        let starts = seen.starts.load(Ordering::Relaxed) + 1;
        let context = context_for(1, starts);
        let on = psci(CPU_ON_64, 1, entry(), context);
        if on != 0 {
            refused += 1;
            println!("cpu: round {round}: CPU_ON(vCPU 1) = {on}");
            settle();
            continue;
        }
        let ran = timer::wait_until(1000, || {
            seen.state.load(Ordering::SeqCst) == RUNNING
                && seen.starts.load(Ordering::Relaxed) == starts
        });
        if !ran {
            lost += 1;
            println!(
                "cpu: round {round}: CPU_ON(vCPU 1) returned SUCCESS but it did not run within 1 s; AFFINITY_INFO = {}",
                affinity(1)
            );
            continue;
        }
        // Let it turn itself off, and turn it on again as soon as that shows.
        seen.go.store(1, Ordering::SeqCst);
        if !timer::wait_until(WAIT_MS, || affinity(1) == OFF) {
            tally.fail(format_args!("round {round}: vCPU 1 did not turn off"));
            return;
        }
    }
    tally.check(
        lost == 0 && refused == 0,
        format_args!(
            "CPU_ON of vCPU 1 right after AFFINITY_INFO showed it OFF: {} of {RESTARTS} ran, {lost} lost, {refused} refused",
            RESTARTS - lost - refused
        ),
        format_args!("all to run"),
    );
}

/// The first address past the guest's RAM, from the DTB (0x4800_0000 for 128 MiB).
fn ram_end() -> u64 {
    let Ok(fdt) = veil_guest_rt::dtb::get() else {
        return 0x4800_0000;
    };
    fdt.find_node("/memory")
        .and_then(|memory| memory.reg()?.next())
        .map(|region| region.starting_address as u64 + region.size.unwrap_or(0) as u64)
        .unwrap_or(0x4800_0000)
}
