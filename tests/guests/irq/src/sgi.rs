//! The `sgi` test: software-generated interrupts between vCPUs, counted on both sides.
//!
//! 1. Ping-pong: for each other vCPU k in turn, vCPU 0 sends [`PING`] to k (GICv3: an
//!    ICC_SGI1R_EL1 target list with k's affinity; GICv2: GICD_SGIR with k's CPU-interface bit)
//!    and sleeps in WFI until k's answer, SGI [`pong`]`(k)`, has been taken; [`ROUNDS`] times.
//!    k counts the pings its handler took, vCPU 0 the pongs from k: both must be [`ROUNDS`],
//!    with nothing lost, duplicated or sent to the wrong vCPU. On GICv2 each handler also checks
//!    the sender GICC_IAR names.
//! 2. Broadcast: each vCPU in turn sends [`BROADCAST`] to all others (GICv3: IRM = 1; GICv2:
//!    TargetListFilter = 0b01); every other vCPU must take it exactly once, the sender never.
//!
//! Secondary vCPUs are started one at a time (their GIC set-up probes, which is global), then
//! idle in WFI with the classic masked check, taking SGIs in their handler. vCPU 0 asks one to
//! broadcast by bumping its request number and waking it with [`WAKE`].

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use veil_guest_rt::cpu::{self, MAX_CPUS};
use veil_guest_rt::exception::{mask_irqs, unmask_irqs};
use veil_guest_rt::gic::{self, Target};
use veil_guest_rt::tally::Tally;
use veil_guest_rt::{halt, psci};

use crate::dispatch::{self, Cpus, Entered};
use crate::spread::Spread;
use crate::timer::Timer;
use crate::wait;

/// vCPU 0 to a secondary: answer me.
const PING: u32 = 1;
/// Anyone to everyone else.
const BROADCAST: u32 = 2;
/// vCPU 0 to a secondary: look at your request number.
const WAKE: u32 = 3;
/// A secondary's answer: SGI 8 + its index, so vCPU 0 knows who answered on GICv3 too.
const fn pong(index: usize) -> u32 {
    8 + index as u32
}
/// Round trips per pair.
const ROUNDS: u32 = 1000;

// One writer each: vCPU k writes index k of the per-vCPU arrays (its handler or main loop),
// except PONGS (vCPU 0's handler), REQUEST and STOP (vCPU 0's main).
static READY: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// How SGIs name each vCPU, as each found out (GICv2: its CPU-interface bit).
static TARGET_MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static TARGET_MASK: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Pings each secondary took.
static PINGS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Pongs vCPU 0 took from each secondary.
static PONGS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Broadcasts each vCPU took.
static BROADCASTS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Interrupts each vCPU took that it should not have, and the last one's raw IAR value.
static UNEXPECTED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static UNEXPECTED_RAW: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// GICv2: SGIs whose GICC_IAR.CPUID named the wrong sender, per receiving vCPU.
static WRONG_SENDER: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Broadcast requests vCPU 0 made of each secondary, and those each carried out.
static REQUEST: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static DONE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Set by vCPU 0 when the secondaries should turn themselves off.
static STOP: AtomicU32 = AtomicU32::new(0);

fn bump(counter: &AtomicU32) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release);
}

fn target(index: usize) -> Target {
    Target {
        mpidr: TARGET_MPIDR[index].load(Ordering::Acquire),
        interface_mask: TARGET_MASK[index].load(Ordering::Acquire) as u8,
    }
}

/// GICv2 names the sender of an SGI in GICC_IAR; true if it is vCPU `from` (always on GICv3).
fn sender_is(raw: u32, from: usize) -> bool {
    let gic = dispatch::gic();
    gic.version() != 2 || 1u32 << gic::sgi_source(raw) == TARGET_MASK[from].load(Ordering::Acquire)
}

/// Every vCPU's handler.
fn handler(raw: u32, _entered: Entered) {
    let gic = dispatch::gic();
    let me = dispatch::this_index();
    let intid = gic::intid(raw);
    gic.end(raw);
    match intid {
        PING if me != 0 => {
            if !sender_is(raw, 0) {
                bump(&WRONG_SENDER[me]);
            }
            bump(&PINGS[me]);
            gic.send_sgi(pong(me), target(0));
        }
        BROADCAST => bump(&BROADCASTS[me]),
        WAKE if me != 0 => {}
        i if me == 0 && (pong(1)..pong(MAX_CPUS)).contains(&i) => {
            let from = (i - pong(0)) as usize;
            if !sender_is(raw, from) {
                bump(&WRONG_SENDER[0]);
            }
            bump(&PONGS[from]);
        }
        _ => {
            bump(&UNEXPECTED[me]);
            UNEXPECTED_RAW[me].store(raw, Ordering::Relaxed);
        }
    }
}

/// The SGIs a vCPU enables: pings, broadcasts and wake-ups on secondaries, pongs and
/// broadcasts on vCPU 0.
fn enabled_sgis(index: usize) -> u32 {
    if index == 0 {
        (1 << BROADCAST) | (pong(1)..pong(MAX_CPUS)).fold(0, |m, s| m | 1 << s)
    } else {
        (1 << PING) | (1 << BROADCAST) | (1 << WAKE)
    }
}

/// A secondary vCPU's life: GIC set-up, then idle in WFI until told to stop.
fn secondary_main(index: usize) -> ! {
    let gic = dispatch::gic();
    match gic.init_this_cpu(enabled_sgis(index)) {
        Ok(me) => {
            TARGET_MPIDR[index].store(me.mpidr, Ordering::Release);
            TARGET_MASK[index].store(u32::from(me.interface_mask), Ordering::Release);
            READY[index].store(1, Ordering::Release);
        }
        Err(_) => {
            READY[index].store(2, Ordering::Release);
            off()
        }
    }
    loop {
        mask_irqs();
        if STOP.load(Ordering::Acquire) != 0 {
            break;
        }
        let request = REQUEST[index].load(Ordering::Acquire);
        if request != DONE[index].load(Ordering::Relaxed) {
            DONE[index].store(request, Ordering::Release);
            gic.send_sgi_to_others(BROADCAST);
        }
        // SAFETY: WFI only waits; a pending interrupt ends it even with IRQs masked.
        unsafe { core::arch::asm!("dsb sy", "wfi", options(nostack, preserves_flags)) };
        unmask_irqs();
    }
    off()
}

fn off() -> ! {
    // CPU_OFF does not return on success; vCPU 0 reports either way.
    let _ = psci::cpu_off();
    halt()
}

/// The `sgi` test.
pub fn run(tally: &mut Tally, cpus: &Cpus) {
    let gic = dispatch::gic();
    let n = cpus.len();
    if n < 2 {
        tally.fail(format_args!(
            "sgi: the DTB lists {n} vCPU(s); the test needs at least 2"
        ));
        return;
    }
    let second = wait::frequency();
    dispatch::set_handler(handler);
    wait::use_wake_timer(Timer::Virtual);
    match gic.init_this_cpu(enabled_sgis(0)) {
        Ok(me) => {
            TARGET_MPIDR[0].store(me.mpidr, Ordering::Release);
            TARGET_MASK[0].store(u32::from(me.interface_mask), Ordering::Release);
        }
        Err(refusal) => {
            tally.fail(format_args!("sgi: vCPU 0's GIC set-up: {refusal}"));
            return;
        }
    }
    unmask_irqs();

    let mut started = 1;
    for (index, state) in READY.iter().enumerate().take(n).skip(1) {
        // SAFETY: stack `index` is free: vCPU `index` has not run, and no other is started on it.
        let on = unsafe { cpu::start(index, cpus.mpidr(index), secondary_main, index) };
        let ready = on.is_ok()
            && wait::spin_until(|| state.load(Ordering::Acquire) != 0, 2 * second)
            && state.load(Ordering::Acquire) == 1;
        tally.check(
            ready,
            format_args!(
                "sgi: vCPU {index} (MPIDR {:#x}) started (CPU_ON {:?}) and set up its GIC interface",
                cpus.mpidr(index),
                on
            ),
            format_args!("a started vCPU with a working GIC interface"),
        );
        if !ready {
            break;
        }
        started += 1;
    }

    for peer in 1..started {
        ping_pong(tally, peer);
    }
    for sender in 0..started {
        broadcast(tally, sender, started);
    }

    STOP.store(1, Ordering::Release);
    for index in 1..started {
        gic.send_sgi(WAKE, target(index));
        let off = wait::spin_until(
            || psci::affinity_info(cpus.mpidr(index)) == Ok(psci::AffinityState::Off),
            2 * second,
        );
        if !off {
            tally.fail(format_args!("sgi: vCPU {index} did not turn itself off"));
        }
    }
    mask_irqs();
    for index in 0..started {
        let unexpected = UNEXPECTED[index].load(Ordering::Acquire);
        let wrong = WRONG_SENDER[index].load(Ordering::Acquire);
        tally.check(
            unexpected == 0 && wrong == 0,
            format_args!(
                "sgi: vCPU {index} took {unexpected} unexpected interrupts (last IAR {:#x}) and {wrong} SGIs naming the wrong sender",
                UNEXPECTED_RAW[index].load(Ordering::Relaxed)
            ),
            format_args!("none"),
        );
    }
}

/// [`ROUNDS`] round trips between vCPU 0 and `peer`.
fn ping_pong(tally: &mut Tally, peer: usize) {
    let gic = dispatch::gic();
    let to = target(peer);
    let mut times = Spread::new();
    let mut lost = None;
    for round in 0..ROUNDS {
        let start = wait::now();
        gic.send_sgi(PING, to);
        let answered = wait::until(
            || PONGS[peer].load(Ordering::Acquire) > round,
            wait::frequency(),
        );
        if !answered {
            lost = Some(round);
            break;
        }
        times.add(wait::now() - start);
    }
    // Let a late or duplicated SGI show up before counting.
    wait::spin(wait::frequency() / 100);
    let pings = PINGS[peer].load(Ordering::Acquire);
    let pongs = PONGS[peer].load(Ordering::Acquire);
    let sent = lost.unwrap_or(ROUNDS);
    tally.check(
        lost.is_none() && pings == ROUNDS && pongs == ROUNDS,
        format_args!(
            "sgi: vCPU 0 <-> vCPU {peer}: {} round trips; vCPU {peer} took {pings} pings (SGI {PING}), vCPU 0 took {pongs} pongs (SGI {}){}",
            sent,
            pong(peer),
            if lost.is_some() { " - a round trip did not complete within 1 s" } else { "" }
        ),
        format_args!("{ROUNDS} of each, none lost"),
    );
    veil_guest_rt::println!(
        "irq: sgi: vCPU 0 <-> vCPU {peer} round trip (send to answer taken): {times}"
    );
}

/// vCPU `sender` broadcasts once; each of the other `n - 1` vCPUs must take it exactly once.
fn broadcast(tally: &mut Tally, sender: usize, n: usize) {
    let gic = dispatch::gic();
    let before: [u32; MAX_CPUS] = core::array::from_fn(|i| BROADCASTS[i].load(Ordering::Acquire));
    if sender == 0 {
        gic.send_sgi_to_others(BROADCAST);
    } else {
        bump(&REQUEST[sender]);
        gic.send_sgi(WAKE, target(sender));
    }
    let delta = |i: usize| BROADCASTS[i].load(Ordering::Acquire) - before[i];
    let arrived = wait::until(
        || (0..n).filter(|&i| i != sender).all(|i| delta(i) >= 1),
        wait::frequency(),
    );
    // A second copy, or one to the sender, would arrive about as fast as the first.
    wait::spin(wait::frequency() / 100);
    let once = (0..n).filter(|&i| i != sender).all(|i| delta(i) == 1);
    let mut counts = [0u32; MAX_CPUS];
    for (i, count) in counts.iter_mut().enumerate().take(n) {
        *count = delta(i);
    }
    tally.check(
        arrived && once && delta(sender) == 0,
        format_args!(
            "sgi: broadcast (SGI {BROADCAST}, {}) from vCPU {sender}: taken {:?} times by vCPUs 0..{n}",
            if gic.version() == 3 { "ICC_SGI1R_EL1.IRM = 1" } else { "GICD_SGIR filter 0b01" },
            &counts[..n]
        ),
        format_args!("once by every other vCPU, never by the sender"),
    );
}
