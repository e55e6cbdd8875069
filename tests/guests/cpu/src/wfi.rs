//! `wfi` and `wfi-ptimer`: WFI with interrupts masked (PSTATE.I = 1), woken by a timer. Veil
//! traps WFI (HCR_EL2.TWI) and must keep the vCPU waiting until an interrupt is pending for it,
//! then resume it with that interrupt pending in its CPU interface, ready to acknowledge and end.
//!
//! - `wfi`: the virtual timer (PPI 27, the guest's own, hardware-mapped), 1 ms ahead.
//! - `wfi-ptimer`: the EL1 physical timer (PPI 30), which Veil emulates on its EL2 timer: 1 ms
//!   ahead; then, 256 times, a deadline placed so that it passes while Veil is still handling the
//!   trapped CNTP_CVAL_EL0 write that sets it (spread over the first half of the time such a
//!   write takes, as the guest measures it). The
//!   virtual timer is armed as a backstop each time, so a lost wake-up shows as a FAIL line
//!   instead of a guest that never comes back.

use crate::tally::Tally;
use crate::timer::{self, CTL_ENABLE, CTL_ISTATUS, Timer};
use veil_guest_rt::gic::{self, Gic, SPURIOUS};
use veil_guest_rt::println;

/// PSTATE.I as DAIF shows it.
const DAIF_I: u64 = 1 << 7;
/// The backstop's distance: far beyond any wake-up Veil owes the guest.
const BACKSTOP_MS: u64 = 100;

/// `cpu.test=wfi`.
pub fn run(tally: &mut Tally) {
    if let Some(gic) = set_up(tally) {
        wake_by(tally, &gic, Timer::Virtual, timer::ms(1), false);
    }
}

/// `cpu.test=wfi-ptimer`.
pub fn run_ptimer(tally: &mut Tally) {
    if let Some(gic) = set_up(tally) {
        wake_by(tally, &gic, Timer::Physical, timer::ms(1), true);
        deadline_during_the_trap(tally, &gic);
    }
}

/// Attempts at a deadline inside the trapped CVAL write.
const RACE_ATTEMPTS: u64 = 256;

/// Writes CNTP_CVAL_EL0 = CNTPCT_EL0 + `delta` (both in one breath); returns CNTPCT_EL0 before
/// and after the (trapped) write.
fn set_cval_ahead(delta: u64) -> (u64, u64) {
    let (before, after): (u64, u64);
    // SAFETY: programs the guest's own EL1 physical timer, whose PPI stays masked by PSTATE.I.
    unsafe {
        core::arch::asm!(
            "isb",
            "mrs {b}, cntpct_el0",
            "add {t}, {b}, {d}",
            "msr cntp_cval_el0, {t}",
            "isb",
            "mrs {a}, cntpct_el0",
            b = out(reg) before,
            a = out(reg) after,
            t = out(reg) _,
            d = in(reg) delta,
            options(nostack),
        )
    };
    (before, after)
}

/// The physical timer enabled with its deadline far away, then moved to `delta` ticks ahead
/// with a CVAL write, `RACE_ATTEMPTS` times with `delta` spread over the write's own duration:
/// every WFI must be woken by INTID 30, not by the virtual-timer backstop.
fn deadline_during_the_trap(tally: &mut Tally, gic: &Gic) {
    let t = Timer::Physical;
    // How long a trapped CVAL write takes, seen from the guest.
    t.set_ctl(0);
    let (b, a) = set_cval_ahead(u64::MAX / 2);
    let span = (a - b).max(RACE_ATTEMPTS);
    println!("cpu: a trapped CNTP_CVAL_EL0 write takes {span} ticks");
    let mut lost = 0;
    for k in 0..RACE_ATTEMPTS {
        // The first half of the write's duration: the trap's way in and its handling.
        let delta = span * k / (2 * RACE_ATTEMPTS);
        Timer::Virtual.set_tval(timer::ms(20));
        Timer::Virtual.set_ctl(CTL_ENABLE);
        set_cval_ahead(u64::MAX / 2);
        t.set_ctl(CTL_ENABLE);
        set_cval_ahead(delta);
        aarch64_wfi();
        let pending = gic.highest_pending();
        let ctl = t.ctl();
        Timer::Virtual.set_ctl(0);
        t.set_ctl(0);
        if pending != t.intid() {
            lost += 1;
            println!(
                "cpu: deadline {delta} ticks after the CVAL write: woken with INTID {pending} pending, CNTP_CTL {ctl:#x}"
            );
        }
        // End whatever came (the timer's line is low again, the backstop's too).
        for _ in 0..4 {
            let raw = gic.acknowledge();
            if gic::intid(raw) >= 1020 {
                break;
            }
            gic.end(raw);
        }
    }
    tally.check(
        lost == 0,
        format_args!(
            "physical timer, deadline inside the trapped CVAL write: {} of {RACE_ATTEMPTS} WFIs woken by INTID 30",
            RACE_ATTEMPTS - lost
        ),
        format_args!("all (the others were woken only by the virtual-timer backstop 20 ms later)"),
    );
}

/// Both timers' PPIs enabled, the CPU interface open, PSTATE.I checked.
fn set_up(tally: &mut Tally) -> Option<Gic> {
    let Some(gic) = gic::discover() else {
        tally.fail(format_args!("no GIC in the DTB"));
        return None;
    };
    let intids = (1 << Timer::Virtual.intid()) | (1 << Timer::Physical.intid());
    let init = gic
        .init_distributor()
        .and_then(|()| gic.init_this_cpu(intids));
    if let Err(why) = init {
        tally.fail(format_args!("GIC set-up: {why}"));
        return None;
    }
    println!(
        "cpu: GICv{} set up, counter {} Hz",
        gic.version(),
        timer::frequency()
    );
    let daif: u64;
    // SAFETY: reading DAIF has no side effects.
    unsafe { core::arch::asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack)) };
    tally.check(
        daif & DAIF_I != 0,
        format_args!("PSTATE.I = {} before WFI", (daif & DAIF_I) >> 7),
        format_args!("1 (interrupts masked: WFI must still wake)"),
    );
    Some(gic)
}

/// One WFI, woken by timer `t` set `ticks` ahead (and, with `backstop`, by the virtual timer
/// 100 ms ahead if `t` never wakes it).
fn wake_by(tally: &mut Tally, gic: &Gic, t: Timer, ticks: u64, backstop: bool) {
    let name = t.name();
    let before = gic.highest_pending();
    tally.check(
        before == SPURIOUS,
        format_args!("{name}, {ticks} ticks: nothing pending before ({before})"),
        format_args!("{SPURIOUS}"),
    );
    if backstop {
        Timer::Virtual.set_tval(timer::ms(BACKSTOP_MS));
        Timer::Virtual.set_ctl(CTL_ENABLE);
    }
    t.set_tval(ticks);
    let deadline = t.cval();
    t.set_ctl(CTL_ENABLE);
    aarch64_wfi();
    let now = t.count();
    tally.check(
        now >= deadline,
        format_args!(
            "{name}, {ticks} ticks: WFI returned at count {now:#x}, {} ticks after the deadline {deadline:#x}",
            now as i64 - deadline as i64
        ),
        format_args!("no return before the deadline (Veil's WFI waits for an interrupt)"),
    );
    let ctl = t.ctl();
    tally.check(
        ctl & CTL_ISTATUS != 0,
        format_args!("{name}, {ticks} ticks: CTL = {ctl:#x} after WFI"),
        format_args!("ISTATUS (bit 2) set"),
    );
    let pending = gic.highest_pending();
    tally.check(
        pending == t.intid(),
        format_args!("{name}, {ticks} ticks: highest pending interrupt after WFI = {pending}"),
        format_args!(
            "{} ({})",
            t.intid(),
            if backstop && pending == Timer::Virtual.intid() {
                "the timer fired but its interrupt never became pending: only the backstop woke the vCPU"
            } else {
                "the timer's"
            }
        ),
    );
    if backstop {
        Timer::Virtual.set_ctl(0);
    }
    // Acknowledge whatever is pending, lower its source, end it; until nothing is left.
    for _ in 0..4 {
        let raw = gic.acknowledge();
        let intid = gic::intid(raw);
        if intid >= 1020 {
            break;
        }
        tally.check(
            intid == t.intid(),
            format_args!("{name}, {ticks} ticks: acknowledged INTID {intid}"),
            format_args!("{}", t.intid()),
        );
        // Lower the timer's output before ending the interrupt, as an OS handler does, so that
        // it is not pending again at once.
        t.set_ctl(0);
        gic.end(raw);
    }
    t.set_ctl(0);
    let after = gic.highest_pending();
    tally.check(
        after == SPURIOUS,
        format_args!("{name}, {ticks} ticks: nothing pending after the end of interrupt ({after})"),
        format_args!("{SPURIOUS}"),
    );
}

/// WFI, in a function of its own so that the compiler keeps it where it is.
#[inline(never)]
fn aarch64_wfi() {
    // SAFETY: WFI only waits; the preceding DSB completes the timer writes.
    unsafe { core::arch::asm!("dsb sy", "wfi", options(nostack)) };
}
