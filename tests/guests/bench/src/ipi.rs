//! `ipi_roundtrip`: vCPU 0 sends an SGI to vCPU 1, which answers with an SGI back; one round
//! trip is the time from before the first send to after vCPU 0 has acknowledged and ended the
//! answer, minus an empty timed window.
//!
//! Both sides poll their acknowledge register with IRQs masked (an acknowledge returns pending
//! interrupts whatever PSTATE.I says), so no vector table is involved and the measurement is
//! the interrupt controller's path plus the hypervisor's: SGI generation traps to EL2 under a
//! hypervisor (it must emulate the send), delivery goes through the virtual CPU interface.
//!
//! Every poll loop executes YIELD. Under QEMU's -icount all vCPUs run round-robin on one host
//! thread, and a spinning vCPU would otherwise keep its turn for up to a tenth of a second of
//! virtual time; YIELD hands the turn on, so the figure counts the instructions on the path
//! (both vCPUs' and, under Veil, both physical CPUs' EL2 code) rather than scheduling slices.
//! On hardware YIELD is a hint and costs nothing.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use veil_guest_rt::gic::{self, Gic, SPURIOUS, Target};
use veil_guest_rt::{cpu, halt, psci};

use crate::timing::now;
use crate::{Cpus, Outcome};

/// The SGI both directions use.
const SGI: u32 = 1;
/// The secondary's vCPU index in the runtime (its stack).
const SECONDARY_INDEX: usize = 1;
/// Polls of the acknowledge register, or of a flag, before giving up on the other side.
const POLL_BOUND: u64 = 1_000_000;

/// The secondary's state, as it reports it.
const STARTING: u32 = 0;
const READY: u32 = 1;
const SETUP_FAILED: u32 = 2;

// Shared between the two vCPUs. With the MMU off these are Device accesses, never cached, and
// the runtime's atomics compile to plain (acquire/release) loads and stores, which is all the
// handshake needs: each flag has one writer.
static SECONDARY_STATE: AtomicU32 = AtomicU32::new(STARTING);
static SECONDARY_MPIDR: AtomicU64 = AtomicU64::new(0);
static SECONDARY_MASK: AtomicU32 = AtomicU32::new(0);
static PRIMARY_MPIDR: AtomicU64 = AtomicU64::new(0);
static PRIMARY_MASK: AtomicU32 = AtomicU32::new(0);
static STOP: AtomicU32 = AtomicU32::new(0);

/// Measures `iters` SGI round trips between this vCPU and `cpus.other`.
pub fn roundtrip(gic: Option<&Gic>, cpus: Cpus, iters: u64) -> Outcome {
    let Some(gic) = gic else {
        return Outcome::Unavailable("the DTB describes no GIC");
    };
    let Some(other) = cpus.other else {
        return Outcome::Unavailable("the DTB lists one vCPU; an IPI needs two");
    };
    let me = match gic
        .init_distributor()
        .and_then(|()| gic.init_this_cpu(1 << SGI))
    {
        Ok(me) => me,
        Err(refusal) => return Outcome::Refused("GIC set-up failed", refusal),
    };
    // An SGI to itself first: shows that sending, delivery and acknowledge work before a
    // second vCPU depends on them.
    if let Err(refusal) = gic.try_send_sgi(SGI, me) {
        return Outcome::Refused("sending an SGI failed", refusal);
    }
    if !wait_for_sgi(gic) {
        return Outcome::Unavailable("an SGI sent to this vCPU itself never arrived");
    }

    PRIMARY_MPIDR.store(me.mpidr, Ordering::Relaxed);
    PRIMARY_MASK.store(u32::from(me.interface_mask), Ordering::Relaxed);
    // SAFETY: stack 1 is unused: no other vCPU was started, and this one is stopped below
    // before the function returns.
    if unsafe { cpu::start(SECONDARY_INDEX, other, secondary_main, 0) }.is_err() {
        return Outcome::Unavailable("PSCI CPU_ON refused to start the second vCPU");
    }
    if !poll(|| SECONDARY_STATE.load(Ordering::Acquire) != STARTING) {
        return Outcome::Unavailable("the second vCPU never reported in");
    }
    if SECONDARY_STATE.load(Ordering::Acquire) == SETUP_FAILED {
        return Outcome::Unavailable("the second vCPU could not set up its GIC interface");
    }
    let target = Target {
        mpidr: SECONDARY_MPIDR.load(Ordering::Relaxed),
        interface_mask: SECONDARY_MASK.load(Ordering::Relaxed) as u8,
    };

    let mut total = 0u64;
    let mut lost = false;
    for _ in 0..iters {
        let start = now();
        gic.send_sgi(SGI, target);
        let answered = wait_for_sgi(gic);
        let end = now();
        if !answered {
            lost = true;
            break;
        }
        total += end.wrapping_sub(start);
    }
    STOP.store(1, Ordering::Release);
    // Let it finish (CPU_OFF) before the next operation; the outcome does not depend on it.
    poll(|| psci::affinity_info(other) == Ok(psci::AffinityState::Off));
    if lost {
        return Outcome::Unavailable("an SGI round trip was lost");
    }
    let window = {
        let start = now();
        now().wrapping_sub(start)
    };
    Outcome::Measured {
        extra: total as i64 - (window * iters) as i64,
        iters,
    }
}

/// The second vCPU: sets up its GIC interface, then answers each SGI with one back until told
/// to stop, and turns itself off.
fn secondary_main(_: usize) -> ! {
    // Only this vCPU probes now: vCPU 0 is polling SECONDARY_STATE, not inside a probe.
    let gic = gic::discover();
    let me = gic.as_ref().map(|gic| gic.init_this_cpu(1 << SGI));
    let (Some(gic), Some(Ok(me))) = (gic, me) else {
        SECONDARY_STATE.store(SETUP_FAILED, Ordering::Release);
        off()
    };
    SECONDARY_MPIDR.store(me.mpidr, Ordering::Relaxed);
    SECONDARY_MASK.store(u32::from(me.interface_mask), Ordering::Relaxed);
    SECONDARY_STATE.store(READY, Ordering::Release);
    let primary = Target {
        mpidr: PRIMARY_MPIDR.load(Ordering::Relaxed),
        interface_mask: PRIMARY_MASK.load(Ordering::Relaxed) as u8,
    };
    while STOP.load(Ordering::Acquire) == 0 {
        let raw = gic.acknowledge();
        if gic::intid(raw) == SPURIOUS {
            pause();
            continue;
        }
        gic.end(raw);
        if gic::intid(raw) == SGI {
            gic.send_sgi(SGI, primary);
        }
    }
    off()
}

fn off() -> ! {
    // CPU_OFF does not return on success; if it does, park quietly: vCPU 0 reports the IPI
    // figure either way and powers the VM off.
    let _ = psci::cpu_off();
    halt()
}

/// Polls for the SGI and ends it; false if it did not come within [`POLL_BOUND`] polls.
fn wait_for_sgi(gic: &Gic) -> bool {
    for _ in 0..POLL_BOUND {
        let raw = gic.acknowledge();
        match gic::intid(raw) {
            SPURIOUS => pause(),
            intid => {
                gic.end(raw);
                if intid == SGI {
                    return true;
                }
            }
        }
    }
    false
}

/// Polls `done` up to [`POLL_BOUND`] times.
fn poll(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..POLL_BOUND {
        if done() {
            return true;
        }
        pause();
    }
    false
}

/// YIELD: hands QEMU's round-robin turn to the other vCPU (see the module docs).
fn pause() {
    // SAFETY: YIELD is a hint with no architectural effect.
    unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
}
