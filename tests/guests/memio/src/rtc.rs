//! `memio.test=rtc`: the PL031 tells the wall-clock time, and it moves with the counter.
//!
//! The RTC's data register (RTCDR) counts seconds since the Unix epoch. The guest prints it
//! (`memio: rtc <seconds>`, for a person or a scenario to compare with the host's clock),
//! checks it is after 2025-01-01, then busy-waits two seconds on the virtual counter (at
//! CNTFRQ_EL0) and checks the RTC moved by 1 to 3 seconds (the two clocks' second boundaries
//! need not line up, and a loaded host may stretch the wait).

use veil_guest_rt::aarch64_cpu::asm::barrier;
use veil_guest_rt::println;
use veil_guest_rt::sysreg::{Readable, registers};
use veil_guest_rt::tally::Tally;

use crate::board::{PL031, read32};

/// 2025-01-01T00:00:00Z.
const JAN_1_2025: u64 = 1_735_689_600;
/// The busy wait, in seconds of the virtual counter.
const WAIT_SECONDS: u64 = 2;
/// RTCCR.RTCStart: the counter runs.
const RTCCR: u64 = PL031 + 0x00c;

fn rtcdr() -> u64 {
    // SAFETY: RTCDR is a read-only register of the board's PL031, owned by no Rust object.
    u64::from(unsafe { read32(PL031) })
}

/// The virtual counter, read after an ISB so that the read is not taken early.
fn counter() -> u64 {
    barrier::isb(barrier::SY);
    registers::CNTVCT_EL0.get()
}

pub fn run(tally: &mut Tally) {
    tally.equal(
        format_args!("PL031 PeriphID0"),
        crate::mmio::rtc_periph_id0(),
        0x31,
    );
    // SAFETY: RTCCR is a register of the board's PL031; reading it has no effect.
    let cr = u64::from(unsafe { read32(RTCCR) });
    tally.equal(format_args!("PL031 RTCCR (RTCStart)"), cr & 1, 1);

    let before = rtcdr();
    println!("memio: rtc {}", before);
    tally.check(
        before > JAN_1_2025,
        format_args!("RTCDR = {} seconds since the epoch", before),
        format_args!("after 2025-01-01 ({})", JAN_1_2025),
    );

    let frequency = registers::CNTFRQ_EL0.get();
    if frequency == 0 {
        tally.fail(format_args!("CNTFRQ_EL0 is 0: cannot time the RTC"));
        return;
    }
    let start = counter();
    while counter().wrapping_sub(start) < WAIT_SECONDS * frequency {
        core::hint::spin_loop();
    }
    let after = rtcdr();
    let moved = after.wrapping_sub(before);
    tally.check(
        (1..=3).contains(&moved),
        format_args!(
            "RTCDR went from {} to {} (+{} s) over {} s of the virtual counter at {} Hz",
            before, after, moved, WAIT_SECONDS, frequency
        ),
        format_args!("+1 to +3 s"),
    );
}
