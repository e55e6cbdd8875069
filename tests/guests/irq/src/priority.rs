//! The `priority` test: the priority mask, the running priority and preemption.
//!
//! 1. Masking: with the priority mask at [`LOW`], an SPI set pending through GICD_ISPENDR and
//!    an SGI sent to itself, both of priority [`LOW`], must stay pending and untaken (the
//!    highest-pending register still names one of them); once the mask lets [`LOW`] through
//!    both are taken, once each.
//! 2. Preemption: with the mask open, [`MID_SPI`] (priority [`MID`]) is set pending. Its
//!    handler, with IRQs unmasked after the acknowledge, sends itself [`HIGH_SGI`] (priority
//!    [`HIGH`]), which must preempt it at once (nested, running priority [`HIGH`]), then sets
//!    [`LOWER_SPI`] (priority [`LOW`]) pending, which must not be taken before the
//!    [`MID_SPI`] handler has ended its interrupt. The binary point keeps its reset value;
//!    the three priorities differ in their top three bits, so they are in different
//!    preemption groups whatever the implemented binary point (at most 4 for Group 1 with
//!    5 priority bits).
//!
//! The handler logs every entry and exit (INTID, nesting depth, running priority); the order
//! is what is checked.

use core::sync::atomic::{AtomicU32, Ordering};

use veil_guest_rt::exception::{mask_irqs, unmask_irqs};
use veil_guest_rt::gic::{self, PRIORITY_MASK_ALL};
use veil_guest_rt::println;
use veil_guest_rt::tally::Tally;

use crate::dispatch::{self, Entered};
use crate::wait;

/// Priorities: lower values are more urgent.
const HIGH: u8 = 0x40;
const MID: u8 = 0xA0;
const LOW: u8 = 0xC0;
/// A mask that just lets [`LOW`] through.
const MASK_OPEN_FOR_LOW: u8 = 0xD0;

/// Part 1: an SPI and an SGI of priority [`LOW`].
const MASKED_SPI: u32 = 120;
const MASKED_SGI: u32 = 4;
/// Part 2. SPIs 88..91 (INTIDs 120..123) drive nothing on QEMU `virt` or Veil's board.
const MID_SPI: u32 = 121;
const HIGH_SGI: u32 = 5;
const LOWER_SPI: u32 = 122;

/// Interrupts taken, by INTID.
static TAKEN: [AtomicU32; 128] = [const { AtomicU32::new(0) }; 128];
/// Handler log: each entry is `intid | depth << 12 | running priority << 16 | exit << 31`.
static LOG: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
static LOG_LEN: AtomicU32 = AtomicU32::new(0);
/// Whether [`LOWER_SPI`] read as pending at the end of the [`MID_SPI`] handler.
static LOWER_PENDING_IN_MID: AtomicU32 = AtomicU32::new(0);
/// Whether [`HIGH_SGI`] was taken inside the [`MID_SPI`] handler.
static HIGH_IN_MID: AtomicU32 = AtomicU32::new(0);
const EXIT: u32 = 1 << 31;

fn taken(intid: u32) -> u32 {
    TAKEN[intid as usize].load(Ordering::Relaxed)
}

fn log(intid: u32, exit: bool) {
    let gic = dispatch::gic();
    let entry = intid
        | (dispatch::depth() << 12)
        | (u32::from(gic.running_priority()) << 16)
        | if exit { EXIT } else { 0 };
    let n = LOG_LEN.load(Ordering::Relaxed) as usize;
    if n < LOG.len() {
        LOG[n].store(entry, Ordering::Relaxed);
        LOG_LEN.store(n as u32 + 1, Ordering::Relaxed);
    }
}

fn handler(raw: u32, _entered: Entered) {
    let gic = dispatch::gic();
    let intid = gic::intid(raw);
    log(intid, false);
    if intid == MID_SPI {
        let ticks = wait::frequency() / 10;
        // Acknowledged: the running priority is MID's now, so unmasking lets only more
        // urgent interrupts in.
        unmask_irqs();
        gic.send_sgi_to_self(HIGH_SGI);
        let preempted = wait::spin_until(|| taken(HIGH_SGI) > 0, ticks);
        HIGH_IN_MID.store(u32::from(preempted), Ordering::Relaxed);
        gic.set_pending(LOWER_SPI, true);
        wait::spin(ticks / 10);
        LOWER_PENDING_IN_MID.store(u32::from(gic.is_pending(LOWER_SPI)), Ordering::Relaxed);
        mask_irqs();
    }
    if let Some(count) = TAKEN.get(intid as usize) {
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    log(intid, true);
    gic.end(raw);
}

/// The `priority` test.
pub fn run(tally: &mut Tally) {
    let gic = dispatch::gic();
    let ms = wait::frequency() / 1000;
    dispatch::set_handler(handler);
    println!(
        "irq: priority: binary point {}, priority mask {:#x}, running priority {:#x} at the start",
        gic.binary_point(),
        gic.priority_mask(),
        gic.running_priority()
    );

    // 1. Masking.
    gic.set_priority_mask(LOW);
    let mask = gic.priority_mask();
    tally.check(
        mask == LOW,
        format_args!("priority: priority mask reads back {mask:#x}"),
        format_args!("{LOW:#x}"),
    );
    gic.configure(MASKED_SPI, LOW, true);
    gic.set_enabled(MASKED_SPI, true);
    gic.configure(MASKED_SGI, LOW, true);
    gic.set_enabled(MASKED_SGI, true);
    unmask_irqs();
    gic.set_pending(MASKED_SPI, true);
    gic.send_sgi_to_self(MASKED_SGI);
    wait::spin(2 * ms);
    let held = taken(MASKED_SPI) == 0 && taken(MASKED_SGI) == 0;
    tally.check(
        held,
        format_args!(
            "priority: with the mask at {LOW:#x}, SPI {MASKED_SPI} (set pending through ISPENDR) and SGI {MASKED_SGI} (sent to itself), both priority {LOW:#x}, taken {} and {} times",
            taken(MASKED_SPI),
            taken(MASKED_SGI)
        ),
        format_args!("not taken"),
    );
    let (spi, sgi, hppi) = (
        gic.is_pending(MASKED_SPI),
        gic.is_pending(MASKED_SGI),
        gic.highest_pending(),
    );
    // GICv3's ICC_HPPIR1_EL1 ignores the priority mask; QEMU's GICv2 GICC_HPPIR does not
    // (it shows only what could be signalled), so there 1023 is right too.
    let hppi_ok = hppi == MASKED_SGI
        || hppi == MASKED_SPI
        || (gic.version() == 2 && hppi == veil_guest_rt::gic::SPURIOUS);
    tally.check(
        spi && sgi && hppi_ok,
        format_args!(
            "priority: held back, they read pending {spi} and {sgi}; highest pending INTID {hppi}"
        ),
        format_args!("both pending, the highest pending one of them (GICv2: or 1023)"),
    );
    gic.set_priority_mask(MASK_OPEN_FOR_LOW);
    let both = wait::spin_until(|| taken(MASKED_SPI) > 0 && taken(MASKED_SGI) > 0, 100 * ms);
    wait::spin(ms);
    tally.check(
        both && taken(MASKED_SPI) == 1 && taken(MASKED_SGI) == 1,
        format_args!(
            "priority: with the mask at {MASK_OPEN_FOR_LOW:#x}, SPI {MASKED_SPI} taken {} times, SGI {MASKED_SGI} {} times",
            taken(MASKED_SPI),
            taken(MASKED_SGI)
        ),
        format_args!("once each, at once"),
    );

    // 2. Preemption.
    mask_irqs();
    gic.set_priority_mask(PRIORITY_MASK_ALL);
    LOG_LEN.store(0, Ordering::Relaxed);
    for (intid, priority) in [(MID_SPI, MID), (HIGH_SGI, HIGH), (LOWER_SPI, LOW)] {
        gic.configure(intid, priority, true);
        gic.set_enabled(intid, true);
    }
    let idle = gic.running_priority();
    gic.set_pending(MID_SPI, true);
    unmask_irqs();
    let done = wait::spin_until(|| taken(LOWER_SPI) > 0, 500 * ms);
    wait::spin(ms);
    mask_irqs();
    let after = gic.running_priority();

    let n = (LOG_LEN.load(Ordering::Relaxed) as usize).min(LOG.len());
    let log: [u32; 16] = core::array::from_fn(|i| LOG[i].load(Ordering::Relaxed));
    let log = &log[..n];
    print_log(log);
    let ev =
        |intid: u32, depth: u32, exit: bool| intid | (depth << 12) | if exit { EXIT } else { 0 };
    // Running priorities are checked separately: compare without them.
    let shape: [u32; 16] = core::array::from_fn(|i| log.get(i).map_or(0, |e| e & !(0xFF << 16)));
    let expected = [
        ev(MID_SPI, 1, false),
        ev(HIGH_SGI, 2, false),
        ev(HIGH_SGI, 2, true),
        ev(MID_SPI, 1, true),
        ev(LOWER_SPI, 1, false),
        ev(LOWER_SPI, 1, true),
    ];
    tally.check(
        done && n == expected.len() && shape[..n] == expected,
        format_args!(
            "priority: handler order: {} entries/exits, MID {MID_SPI} in, HIGH {HIGH_SGI} in/out nested, MID out, LOWER {LOWER_SPI} in/out",
            n
        ),
        format_args!("exactly that order (see the log above)"),
    );
    let rpr = |i: usize| log.get(i).map_or(0, |e| (e >> 16) & 0xFF);
    tally.check(
        rpr(0) == u32::from(MID) && rpr(1) == u32::from(HIGH) && rpr(4) == u32::from(LOW),
        format_args!(
            "priority: running priority {:#x} in the MID handler, {:#x} in the nested HIGH one, {:#x} in the LOWER one",
            rpr(0),
            rpr(1),
            rpr(4)
        ),
        format_args!("{MID:#x}, {HIGH:#x}, {LOW:#x}"),
    );
    tally.check(
        HIGH_IN_MID.load(Ordering::Relaxed) == 1,
        format_args!(
            "priority: SGI {HIGH_SGI} (priority {HIGH:#x}) preempted the handler of SPI {MID_SPI} (priority {MID:#x}): {}",
            HIGH_IN_MID.load(Ordering::Relaxed) == 1
        ),
        format_args!("taken inside it"),
    );
    tally.check(
        LOWER_PENDING_IN_MID.load(Ordering::Relaxed) == 1,
        format_args!(
            "priority: SPI {LOWER_SPI} (priority {LOW:#x}) still pending at the end of the SPI {MID_SPI} handler: {}",
            LOWER_PENDING_IN_MID.load(Ordering::Relaxed) == 1
        ),
        format_args!("pending, not taken, until the more urgent handler ended"),
    );
    tally.check(
        idle == 0xFF && after == 0xFF,
        format_args!("priority: running priority {idle:#x} before and {after:#x} after"),
        format_args!("0xff (idle)"),
    );
    let spurious = dispatch::spurious();
    tally.check(
        spurious == 0,
        format_args!("priority: {spurious} spurious acknowledges"),
        format_args!("none"),
    );
}

fn print_log(log: &[u32]) {
    veil_guest_rt::print!("irq: priority: handler log:");
    for e in log {
        veil_guest_rt::print!(
            " {}{} (depth {}, running priority {:#x})",
            if e & EXIT != 0 { "out " } else { "in " },
            e & 0x3FF,
            (e >> 12) & 0xF,
            (e >> 16) & 0xFF
        );
    }
    println!();
}
