//! Waiting: with WFI for an interrupt, bounded by a wake-up timer, or by spinning.
//!
//! [`until`] is how vCPU 0 waits for something an interrupt handler does: it sleeps in WFI
//! (so under a hypervisor the vCPU blocks, and the interrupt has to wake it) and checks the
//! condition each time it wakes. So that a lost interrupt gives a FAIL line rather than a
//! vCPU asleep for ever, one of the EL1 timers is armed at the deadline as a wake-up timer
//! ([`use_wake_timer`]); its interrupt is silenced by the IRQ entry and never reaches a test.
//! The timer tests wake with the other timer than the one they test.
//!
//! [`spin`] and [`spin_until`] busy-wait with IRQs as they are, for checks that something is
//! *not* taken (a WFI would not return) or must happen without any exit.

use core::sync::atomic::{AtomicU8, Ordering};

use veil_guest_rt::exception::{mask_irqs, unmask_irqs};
use veil_guest_rt::sysreg::{Readable, registers};

use crate::dispatch;
use crate::timer::{CTL_ENABLE, Timer};

/// Priority of the wake-up timer: the most urgent, so no priority mask or running handler
/// keeps it back.
const WAKE_PRIORITY: u8 = 0x00;

/// The wake-up timer: 0 = none yet, 1 = virtual, 2 = physical.
static WAKE: AtomicU8 = AtomicU8::new(0);

/// The counter frequency in Hz.
pub fn frequency() -> u64 {
    registers::CNTFRQ_EL0.get()
}

/// The virtual counter, fenced.
pub fn now() -> u64 {
    dispatch::counters().virtual_count
}

fn wake_timer() -> Option<Timer> {
    match WAKE.load(Ordering::Relaxed) {
        1 => Some(Timer::Virtual),
        2 => Some(Timer::Physical),
        _ => None,
    }
}

/// Makes `timer` the calling vCPU's wake-up timer (vCPU 0 only: the state is global).
pub fn use_wake_timer(timer: Timer) {
    let gic = dispatch::gic();
    timer.set_ctl(0);
    gic.configure(timer.intid(), WAKE_PRIORITY, false);
    gic.set_enabled(timer.intid(), true);
    let code = match timer {
        Timer::Virtual => 1,
        Timer::Physical => 2,
    };
    WAKE.store(code, Ordering::Relaxed);
}

/// Whether `intid` is the wake-up timer's.
pub fn is_wake_intid(intid: u32) -> bool {
    wake_timer().is_some_and(|t| t.intid() == intid)
}

/// Stops the wake-up timer, which drops its line; the IRQ entry then ends the interrupt.
pub fn silence_wake_timer() {
    if let Some(timer) = wake_timer() {
        timer.set_ctl(0);
    }
}

/// Waits in WFI until `done()` holds or `ticks` of the virtual counter have passed; whether
/// `done()` held. IRQs are masked while `done()` is checked and unmasked while asleep, so an
/// interrupt that arrives between the check and the WFI still ends the WFI (the classic idle
/// loop). Returns with IRQs unmasked.
///
/// # Panics
/// Without a wake-up timer ([`use_wake_timer`]).
pub fn until(mut done: impl FnMut() -> bool, ticks: u64) -> bool {
    let timer = wake_timer().expect("wait::use_wake_timer first");
    let deadline = timer.now() + ticks;
    timer.set_cval(deadline);
    timer.set_ctl(CTL_ENABLE);
    let met = loop {
        mask_irqs();
        if done() {
            break true;
        }
        if timer.now() >= deadline {
            break done();
        }
        aarch64_wfi();
        unmask_irqs();
    };
    timer.set_ctl(0);
    unmask_irqs();
    met
}

/// Busy-waits `ticks` of the virtual counter, taking interrupts if they are unmasked.
pub fn spin(ticks: u64) {
    spin_until(|| false, ticks);
}

/// Busy-waits until `done()` holds or `ticks` have passed; whether `done()` held.
pub fn spin_until(mut done: impl FnMut() -> bool, ticks: u64) -> bool {
    let deadline = now() + ticks;
    loop {
        if done() {
            return true;
        }
        if now() >= deadline {
            return done();
        }
        // SAFETY: YIELD is a hint: under QEMU it lets another vCPU's thread run.
        unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
}

/// WFI, as a compiler barrier for memory (the handler that wakes it writes memory).
fn aarch64_wfi() {
    // SAFETY: WFI only waits; an interrupt or event ends it.
    unsafe { core::arch::asm!("dsb sy", "wfi", options(nostack, preserves_flags)) };
}
