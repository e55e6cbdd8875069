//! The `active` test: pending and active state through the distributor (and, on GICv3, the
//! redistributor's SGI_base frame), and what that state does to delivery.
//!
//! For an SPI ([`SPI`], edge-triggered):
//! 1. GICD_ISPENDR / ICPENDR set and clear its pending state, and both read it back; with
//!    IRQs masked it is the highest pending interrupt while pending. Cleared before IRQs are
//!    unmasked, it is never taken: clearing withdrew it.
//! 2. GICD_ISACTIVER makes it active; set pending too, it is not taken while active; once
//!    GICD_ICACTIVER deactivates it, it is taken once, and inside its handler it reads active
//!    and not pending.
//! 3. With split EOI (EOImode = 1), ending it in the handler only drops the priority: it stays
//!    active, and pending again it is not taken until the guest deactivates it (ICC_DIR_EL1 /
//!    GICC_DIR); then it is taken once more.
//!
//! For an SGI ([`SGI`]) and a PPI ([`PPI`]), in the calling vCPU's own frame (GICv3:
//! GICR_ISPENDR0 and friends in SGI_base; GICv2: the distributor's banked first word, with
//! GICD_SPENDSGIR / CPENDSGIR for the SGI's pending state, which ISPENDR0 only reads): set and
//! clear pending and active, read back; and active plus pending is not taken until deactivated.

use core::sync::atomic::{AtomicU32, Ordering};

use veil_guest_rt::exception::{mask_irqs, unmask_irqs};
use veil_guest_rt::gic::{self, SPURIOUS};
use veil_guest_rt::tally::Tally;

use crate::dispatch::{self, Entered};
use crate::wait;

/// SPI 92, which nothing drives on QEMU `virt` or Veil's board.
const SPI: u32 = 124;
const SGI: u32 = 6;
/// PPI 6: no timer or other source on either board.
const PPI: u32 = 22;
const PRIORITY: u8 = 0x80;

static TAKEN: [AtomicU32; 128] = [const { AtomicU32::new(0) }; 128];
/// What the SPI's handler read of its state, as `pending | active << 1`, last time.
static SEEN_IN_HANDLER: AtomicU32 = AtomicU32::new(0);
/// Split-EOI mode: 1 = end (priority drop) only and leave the deactivation to the test,
/// 2 = end and deactivate in the handler; 0 = plain EOI.
static SPLIT: AtomicU32 = AtomicU32::new(0);
/// The raw IAR value of the interrupt left active in split-EOI mode 1.
static DEFERRED: AtomicU32 = AtomicU32::new(SPURIOUS);

fn taken(intid: u32) -> u32 {
    TAKEN[intid as usize].load(Ordering::Relaxed)
}

fn handler(raw: u32, _entered: Entered) {
    let gic = dispatch::gic();
    let intid = gic::intid(raw);
    if intid == SPI {
        let seen = u32::from(gic.is_pending(SPI)) | u32::from(gic.is_active(SPI)) << 1;
        SEEN_IN_HANDLER.store(seen, Ordering::Relaxed);
    }
    if let Some(count) = TAKEN.get(intid as usize) {
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    gic.end(raw);
    match SPLIT.load(Ordering::Relaxed) {
        1 => DEFERRED.store(raw, Ordering::Relaxed),
        2 => gic.deactivate(raw),
        _ => {}
    }
}

/// `(pending, active)` as ISPENDR and ISACTIVER read, and whether ICPENDR and ICACTIVER
/// read the same.
fn state(intid: u32) -> ((bool, bool), bool) {
    let gic = dispatch::gic();
    let set = (gic.is_pending(intid), gic.is_active(intid));
    let clear = (
        gic.is_pending_via_clear_register(intid),
        gic.is_active_via_clear_register(intid),
    );
    (set, set == clear)
}

/// Checks that `intid` reads `(pending, active)` through both set and clear registers.
fn expect_state(tally: &mut Tally, intid: u32, want: (bool, bool), when: &str) {
    let (got, agree) = state(intid);
    tally.check(
        got == want && agree,
        format_args!(
            "active: INTID {intid} {when}: pending {}, active {}{}",
            got.0,
            got.1,
            if agree {
                ""
            } else {
                " (the IC*R registers read differently)"
            }
        ),
        format_args!("pending {}, active {}", want.0, want.1),
    );
}

/// The `active` test.
pub fn run(tally: &mut Tally) {
    let gic = dispatch::gic();
    let ms = wait::frequency() / 1000;
    dispatch::set_handler(handler);
    mask_irqs();

    // 1. Pending through the distributor, and withdrawing it.
    gic.configure(SPI, PRIORITY, true);
    gic.set_enabled(SPI, true);
    expect_state(tally, SPI, (false, false), "after reset");
    gic.set_pending(SPI, true);
    expect_state(tally, SPI, (true, false), "after GICD_ISPENDR");
    let hppi = gic.highest_pending();
    tally.check(
        hppi == SPI,
        format_args!("active: highest pending INTID {hppi} with IRQs masked"),
        format_args!("{SPI}"),
    );
    gic.set_pending(SPI, false);
    expect_state(tally, SPI, (false, false), "after GICD_ICPENDR");
    let hppi = gic.highest_pending();
    unmask_irqs();
    wait::spin(2 * ms);
    mask_irqs();
    tally.check(
        taken(SPI) == 0 && hppi == SPURIOUS,
        format_args!(
            "active: cleared before IRQs were unmasked, SPI {SPI} was taken {} times (highest pending {hppi})",
            taken(SPI)
        ),
        format_args!("never: clearing the pending state withdrew it"),
    );

    // 2. Active through the distributor holds a pending interrupt back.
    gic.set_active(SPI, true);
    expect_state(tally, SPI, (false, true), "after GICD_ISACTIVER");
    gic.set_pending(SPI, true);
    expect_state(tally, SPI, (true, true), "after GICD_ISPENDR while active");
    unmask_irqs();
    wait::spin(2 * ms);
    tally.check(
        taken(SPI) == 0,
        format_args!(
            "active: pending and active, SPI {SPI} taken {} times",
            taken(SPI)
        ),
        format_args!("not taken while active"),
    );
    gic.set_active(SPI, false);
    let once = wait::spin_until(|| taken(SPI) > 0, 100 * ms);
    wait::spin(ms);
    mask_irqs();
    tally.check(
        once && taken(SPI) == 1,
        format_args!(
            "active: after GICD_ICACTIVER, SPI {SPI} taken {} times",
            taken(SPI)
        ),
        format_args!("once"),
    );
    let seen = SEEN_IN_HANDLER.load(Ordering::Relaxed);
    tally.check(
        seen == 0b10,
        format_args!(
            "active: inside its handler SPI {SPI} read pending {}, active {}",
            seen & 1 != 0,
            seen & 2 != 0
        ),
        format_args!("pending false, active true"),
    );
    expect_state(tally, SPI, (false, false), "after its handler's EOI");

    // 3. Split EOI: a priority drop leaves it active until the deactivation.
    gic.set_split_eoi(true);
    SPLIT.store(1, Ordering::Relaxed);
    gic.set_pending(SPI, true);
    unmask_irqs();
    wait::spin_until(|| taken(SPI) > 1, 100 * ms);
    mask_irqs();
    let running = gic.running_priority();
    let (got, _) = state(SPI);
    tally.check(
        taken(SPI) == 2 && got == (false, true) && running == 0xFF,
        format_args!(
            "active: split EOI: taken again ({} in all), after the EOI alone pending {}, active {}, running priority {running:#x}",
            taken(SPI),
            got.0,
            got.1
        ),
        format_args!("active with its priority dropped (running priority 0xff)"),
    );
    SPLIT.store(2, Ordering::Relaxed);
    gic.set_pending(SPI, true);
    unmask_irqs();
    wait::spin(2 * ms);
    tally.check(
        taken(SPI) == 2,
        format_args!(
            "active: split EOI: pending again before the deactivation, SPI {SPI} taken {} times in all",
            taken(SPI)
        ),
        format_args!("2: not taken until deactivated"),
    );
    gic.deactivate(DEFERRED.load(Ordering::Relaxed));
    let again = wait::spin_until(|| taken(SPI) > 2, 100 * ms);
    wait::spin(ms);
    mask_irqs();
    tally.check(
        again && taken(SPI) == 3,
        format_args!(
            "active: split EOI: after the deactivation ({}), SPI {SPI} taken {} times in all",
            if gic.version() == 3 {
                "ICC_DIR_EL1"
            } else {
                "GICC_DIR"
            },
            taken(SPI)
        ),
        format_args!("3"),
    );
    expect_state(
        tally,
        SPI,
        (false, false),
        "after split EOI and deactivation",
    );
    gic.set_split_eoi(false);
    SPLIT.store(0, Ordering::Relaxed);
    gic.set_enabled(SPI, false);

    // 4. An SGI and a PPI in the vCPU's own frame.
    let frame = gic.frame_of(SGI);
    veil_guest_rt::println!(
        "irq: active: SGI {SGI} and PPI {PPI} through {} at {frame:#x}",
        if gic.version() == 3 {
            "the redistributor's SGI_base frame"
        } else {
            "the distributor's banked registers"
        }
    );
    for intid in [SGI, PPI] {
        gic.configure(intid, PRIORITY, true);
        gic.set_enabled(intid, false);
        expect_state(tally, intid, (false, false), "disabled, at the start");
        gic.set_pending(intid, true);
        expect_state(tally, intid, (true, false), "after setting pending");
        gic.set_pending(intid, false);
        expect_state(tally, intid, (false, false), "after clearing pending");
        gic.set_active(intid, true);
        expect_state(tally, intid, (false, true), "after setting active");
        gic.set_active(intid, false);
        expect_state(tally, intid, (false, false), "after clearing active");

        gic.set_active(intid, true);
        gic.set_pending(intid, true);
        gic.set_enabled(intid, true);
        unmask_irqs();
        wait::spin(2 * ms);
        let held = taken(intid) == 0;
        gic.set_active(intid, false);
        let once = wait::spin_until(|| taken(intid) > 0, 100 * ms);
        wait::spin(ms);
        mask_irqs();
        tally.check(
            held && once && taken(intid) == 1,
            format_args!(
                "active: INTID {intid} enabled, pending and active: {} while active, taken {} times once deactivated",
                if held { "not taken" } else { "taken" },
                taken(intid)
            ),
            format_args!("not taken while active, then once"),
        );
        expect_state(tally, intid, (false, false), "after its handler's EOI");
        gic.set_enabled(intid, false);
    }
    let spurious = dispatch::spurious();
    tally.check(
        spurious == 0,
        format_args!("active: {spurious} spurious acknowledges"),
        format_args!("none"),
    );
}
