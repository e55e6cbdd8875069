//! The guest's real-time clock: an emulated ARM PL031 (ARM DDI 0224) at the virtual board's
//! 0x0901_0000, so a guest's `rtc-pl031` driver reads wall-clock time at boot.
//!
//! The PL031 is a 32-bit seconds counter (RTCDR) that software sets through the load
//! register (RTCLR), plus a match register (RTCMR) that raises the interrupt when the counter
//! reaches it. Here the counter is the [`TimeSource`]'s seconds plus a per-VM offset, so a
//! guest that sets its clock moves only its own time. Nothing ticks: the match is looked for
//! whenever the guest or Veil looks at the interrupt state, by asking whether the counter has
//! passed the match value since the last look. [`VirtualPl031::next_interrupt_at`] tells the
//! caller when to look again if it wants the alarm delivered on time.

use super::{MmioDevice, MmioError};
use spin::Mutex;

/// Register offsets (PL031 TRM, table 3-1).
mod reg {
    /// Data: the current counter value. Read-only.
    pub const DR: u64 = 0x000;
    /// Match: the counter value that raises the interrupt.
    pub const MR: u64 = 0x004;
    /// Load: writing sets the counter; reads return the last value written.
    pub const LR: u64 = 0x008;
    /// Control: bit 0, RTCStart.
    pub const CR: u64 = 0x00c;
    /// Interrupt mask set/clear: bit 0 enables the interrupt.
    pub const IMSC: u64 = 0x010;
    /// Raw interrupt status. Read-only.
    pub const RIS: u64 = 0x014;
    /// Masked interrupt status. Read-only.
    pub const MIS: u64 = 0x018;
    /// Interrupt clear: writing 1 to bit 0 clears the interrupt. Write-only.
    pub const ICR: u64 = 0x01c;
    pub const PERIPH_ID0: u64 = 0xfe0;
}

/// The only interrupt bit of IMSC, RIS, MIS and ICR.
const INT_BIT: u32 = 1;
/// RTCStart: the counter runs. It cannot be stopped once started (TRM, RTCCR) and Veil starts
/// it before the guest runs, so it always reads 1.
const CR_START: u32 = 1;
/// PeriphID0-3 then PCellID0-3 of a PL031 (part 0x031, designer Arm, revision 1), as AMBA
/// probing expects (QEMU reports the same).
const ID_BYTES: [u32; 8] = [0x31, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Wall-clock time, in whole seconds since the Unix epoch.
pub trait TimeSource: Send + Sync {
    fn now_seconds(&self) -> u64;
}

/// A [`TimeSource`] from a free-running counter (the generic timer's CNTPCT_EL0, read by
/// `read_counter`) and the wall-clock time at one of its values, known at boot.
pub struct CounterClock<F: Fn() -> u64 + Send + Sync> {
    read_counter: F,
    frequency_hz: u64,
    base_count: u64,
    base_seconds: u64,
}

impl<F: Fn() -> u64 + Send + Sync> CounterClock<F> {
    /// `base_seconds` was the time when the counter read `base_count`.
    pub fn new(read_counter: F, frequency_hz: u64, base_count: u64, base_seconds: u64) -> Self {
        CounterClock {
            read_counter,
            frequency_hz,
            base_count,
            base_seconds,
        }
    }
}

impl<F: Fn() -> u64 + Send + Sync> TimeSource for CounterClock<F> {
    fn now_seconds(&self) -> u64 {
        // `checked_div`: a CNTFRQ of 0 is a firmware bug; the clock then stands still rather
        // than Veil dividing by zero.
        let elapsed = (self.read_counter)().saturating_sub(self.base_count);
        self.base_seconds
            .wrapping_add(elapsed.checked_div(self.frequency_hz).unwrap_or(0))
    }
}

struct State {
    /// Added (wrapping) to the time source's seconds to give this VM's counter. The counter
    /// is the low 32 bits; the full 64 bits let matches be found across a wrap.
    offset: u64,
    /// The last value written to RTCLR.
    load: u32,
    match_value: u32,
    imsc: u32,
    /// RIS: set when the counter reaches the match value, until RTCICR clears it.
    ris: bool,
    /// The counter value (64-bit) up to which matches have been looked for.
    checked_to: u64,
}

impl State {
    fn count(&self, now: u64) -> u64 {
        now.wrapping_add(self.offset)
    }

    /// Sets RIS if the counter has reached the match value since the last look.
    fn update(&mut self, now: u64) {
        let count = self.count(now);
        let elapsed = count.wrapping_sub(self.checked_to);
        // A clock that steps backwards (or a huge forward jump read as negative) is not a
        // passage of time through the match value; wait for it to catch up.
        if elapsed as i64 <= 0 {
            return;
        }
        if self.seconds_to_match() <= elapsed {
            self.ris = true;
        }
        self.checked_to = count;
    }

    /// How far past `checked_to` the counter's low 32 bits next equal the match value
    /// (1..=2^32).
    fn seconds_to_match(&self) -> u64 {
        self.match_value
            .wrapping_sub(self.checked_to.wrapping_add(1) as u32) as u64
            + 1
    }

    /// Looks for matches afresh from the current counter value, which itself counts: after
    /// the counter or match register is written, equal values raise the interrupt, as the
    /// hardware's comparator would, but values jumped over do not.
    fn rearm(&mut self, now: u64) {
        self.checked_to = self.count(now).wrapping_sub(1);
        self.update(now);
    }
}

/// One guest's PL031.
pub struct VirtualPl031<T: TimeSource> {
    state: Mutex<State>,
    clock: T,
}

impl<T: TimeSource> VirtualPl031<T> {
    /// A running RTC showing the time source's time (the guest may set its own).
    pub fn new(clock: T) -> Self {
        let now = clock.now_seconds();
        VirtualPl031 {
            state: Mutex::new(State {
                offset: 0,
                load: 0,
                match_value: 0,
                imsc: 0,
                ris: false,
                checked_to: now,
            }),
            clock,
        }
    }

    /// Whether the RTC's interrupt line is raised (RIS & IMSC), as of now.
    pub fn interrupt_pending(&self) -> bool {
        let mut s = self.state.lock();
        s.update(self.clock.now_seconds());
        s.ris && s.imsc & INT_BIT != 0
    }

    /// The time source second at which the interrupt line will next rise, or `None` if it is
    /// masked or already raised. Veil can arm a timer for it, then ask
    /// [`interrupt_pending`](Self::interrupt_pending).
    pub fn next_interrupt_at(&self) -> Option<u64> {
        let now = self.clock.now_seconds();
        let mut s = self.state.lock();
        s.update(now);
        if s.ris || s.imsc & INT_BIT == 0 {
            return None;
        }
        let target = s.checked_to.wrapping_add(s.seconds_to_match());
        Some(now.wrapping_add(target.wrapping_sub(s.count(now))))
    }
}

impl<T: TimeSource> MmioDevice for VirtualPl031<T> {
    fn name(&self) -> &'static str {
        "pl031"
    }

    fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        // The PL031 is a 32-bit APB device; Linux only uses readl/writel on it.
        if size != 4 || !offset.is_multiple_of(4) {
            return Err(MmioError::BadAccess);
        }
        let now = self.clock.now_seconds();
        let mut s = self.state.lock();
        s.update(now);
        let value = match offset {
            reg::DR => s.count(now) as u32,
            reg::MR => s.match_value,
            reg::LR => s.load,
            reg::CR => CR_START,
            reg::IMSC => s.imsc,
            reg::RIS => s.ris as u32,
            reg::MIS => (s.ris as u32) & s.imsc,
            // Write-only: reads as zero.
            reg::ICR => 0,
            o if (reg::PERIPH_ID0..0x1000).contains(&o) => {
                ID_BYTES[((o - reg::PERIPH_ID0) / 4) as usize]
            }
            _ => return Err(MmioError::BadAccess),
        };
        Ok(value as u64)
    }

    fn write(&self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        if size != 4 || !offset.is_multiple_of(4) {
            return Err(MmioError::BadAccess);
        }
        let value = value as u32;
        let now = self.clock.now_seconds();
        let mut s = self.state.lock();
        // Matches up to this moment happened under the old registers.
        s.update(now);
        match offset {
            reg::MR => {
                s.match_value = value;
                s.rearm(now);
            }
            reg::LR => {
                s.load = value;
                s.offset = (value as u64).wrapping_sub(now);
                s.rearm(now);
            }
            reg::IMSC => s.imsc = value & INT_BIT,
            reg::ICR => {
                if value & INT_BIT != 0 {
                    s.ris = false;
                }
            }
            // The counter always runs: RTCStart cannot be cleared.
            reg::CR => {}
            // DR, RIS, MIS and the ID registers are read-only: writes are ignored.
            reg::DR | reg::RIS | reg::MIS => {}
            o if (reg::PERIPH_ID0..0x1000).contains(&o) => {}
            _ => return Err(MmioError::BadAccess),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::vec::Vec;

    /// A clock the test sets by hand.
    #[derive(Clone, Default)]
    struct FakeClock(Arc<AtomicU64>);
    impl FakeClock {
        fn at(seconds: u64) -> Self {
            FakeClock(Arc::new(AtomicU64::new(seconds)))
        }
        fn set(&self, seconds: u64) {
            self.0.store(seconds, Ordering::SeqCst);
        }
        fn advance(&self, seconds: u64) {
            self.0.fetch_add(seconds, Ordering::SeqCst);
        }
    }
    impl TimeSource for FakeClock {
        fn now_seconds(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// 2025-01-01T00:00:00Z.
    const JAN_2025: u64 = 1_735_689_600;

    fn rtc() -> (VirtualPl031<FakeClock>, FakeClock) {
        let clock = FakeClock::at(JAN_2025);
        (VirtualPl031::new(clock.clone()), clock)
    }

    fn rd(rtc: &VirtualPl031<FakeClock>, offset: u64) -> u32 {
        rtc.read(offset, 4).unwrap() as u32
    }

    #[test]
    fn reads_wall_time_and_runs() {
        let (rtc, clock) = rtc();
        assert_eq!(rd(&rtc, reg::DR) as u64, JAN_2025);
        clock.advance(61);
        assert_eq!(rd(&rtc, reg::DR) as u64, JAN_2025 + 61);
        assert_eq!(rd(&rtc, reg::CR), 1);
        // Writes cannot stop it, nor change the data register.
        rtc.write(reg::CR, 4, 0).unwrap();
        rtc.write(reg::DR, 4, 5).unwrap();
        assert_eq!(rd(&rtc, reg::CR), 1);
        assert_eq!(rd(&rtc, reg::DR) as u64, JAN_2025 + 61);
    }

    #[test]
    fn load_shifts_only_this_vms_time() {
        let (rtc, clock) = rtc();
        let other = VirtualPl031::new(clock.clone());
        rtc.write(reg::LR, 4, 1000).unwrap();
        assert_eq!(rd(&rtc, reg::DR), 1000);
        assert_eq!(rd(&rtc, reg::LR), 1000);
        clock.advance(5);
        assert_eq!(rd(&rtc, reg::DR), 1005);
        assert_eq!(rd(&other, reg::DR) as u64, JAN_2025 + 5);
        // Setting a later time, and one past the 32-bit wrap.
        rtc.write(reg::LR, 4, u32::MAX as u64).unwrap();
        clock.advance(2);
        assert_eq!(rd(&rtc, reg::DR), 1);
    }

    #[test]
    fn match_raises_the_interrupt_once_it_is_reached() {
        let (rtc, clock) = rtc();
        let now = JAN_2025 as u32;
        rtc.write(reg::MR, 4, (now + 10) as u64).unwrap();
        rtc.write(reg::IMSC, 4, 1).unwrap();
        assert_eq!(rtc.next_interrupt_at(), Some(JAN_2025 + 10));
        clock.advance(9);
        assert!(!rtc.interrupt_pending());
        assert_eq!(rd(&rtc, reg::RIS), 0);
        clock.advance(1);
        assert!(rtc.interrupt_pending());
        assert_eq!((rd(&rtc, reg::RIS), rd(&rtc, reg::MIS)), (1, 1));
        assert_eq!(rtc.next_interrupt_at(), None);
        // It stays raised after the counter moves on, until cleared.
        clock.advance(100);
        assert!(rtc.interrupt_pending());
        rtc.write(reg::ICR, 4, 0).unwrap();
        assert!(rtc.interrupt_pending());
        rtc.write(reg::ICR, 4, 1).unwrap();
        assert!(!rtc.interrupt_pending());
        assert_eq!(rd(&rtc, reg::RIS), 0);
        // The next match is 2^32 seconds away.
        assert_eq!(rtc.next_interrupt_at(), Some(JAN_2025 + 10 + (1 << 32)));
    }

    #[test]
    fn a_match_passed_unobserved_still_counts() {
        let (rtc, clock) = rtc();
        rtc.write(reg::MR, 4, JAN_2025 + 3).unwrap();
        // Nobody looks until long after the match second.
        clock.advance(3600);
        assert_eq!(rd(&rtc, reg::RIS), 1);
        // Masked: raw status only.
        assert_eq!(rd(&rtc, reg::MIS), 0);
        assert!(!rtc.interrupt_pending());
        rtc.write(reg::IMSC, 4, 0xffff_ffff).unwrap();
        assert_eq!(rd(&rtc, reg::IMSC), 1);
        assert!(rtc.interrupt_pending());
    }

    #[test]
    fn writing_the_current_time_as_match_fires_but_jumping_over_it_does_not() {
        let (rtc, clock) = rtc();
        rtc.write(reg::MR, 4, JAN_2025).unwrap();
        assert_eq!(rd(&rtc, reg::RIS), 1);
        rtc.write(reg::ICR, 4, 1).unwrap();
        // A load that jumps the counter over the match value raises nothing...
        rtc.write(reg::MR, 4, 500).unwrap();
        rtc.write(reg::LR, 4, 400).unwrap();
        rtc.write(reg::LR, 4, 600).unwrap();
        assert_eq!(rd(&rtc, reg::RIS), 0);
        // ...but one that lands on it does, and so does counting up to it.
        rtc.write(reg::LR, 4, 500).unwrap();
        assert_eq!(rd(&rtc, reg::RIS), 1);
        rtc.write(reg::ICR, 4, 1).unwrap();
        rtc.write(reg::LR, 4, 498).unwrap();
        clock.advance(2);
        assert_eq!(rd(&rtc, reg::RIS), 1);
        // The clearing write does not re-raise it within the same second.
        rtc.write(reg::ICR, 4, 1).unwrap();
        assert_eq!(rd(&rtc, reg::RIS), 0);
    }

    #[test]
    fn a_clock_stepping_back_raises_nothing() {
        let (rtc, clock) = rtc();
        rtc.write(reg::MR, 4, JAN_2025 - 5).unwrap();
        clock.set(JAN_2025 - 10);
        assert_eq!(rd(&rtc, reg::RIS), 0);
        clock.set(JAN_2025 + 1);
        assert_eq!(rd(&rtc, reg::RIS), 0);
        clock.set(u64::MAX);
        let _ = rd(&rtc, reg::DR);
        clock.set(0);
        let _ = rtc.next_interrupt_at();
    }

    #[test]
    fn identification_registers() {
        let (rtc, _) = rtc();
        let ids: Vec<u32> = (0..8).map(|i| rd(&rtc, 0xfe0 + 4 * i)).collect();
        assert_eq!(ids, [0x31, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        rtc.write(0xfe0, 4, 0).unwrap();
        assert_eq!(rd(&rtc, 0xfe0), 0x31);
    }

    #[test]
    fn only_aligned_words_reach_registers() {
        let (rtc, _) = rtc();
        for size in [1, 2, 8] {
            assert_eq!(rtc.read(reg::DR, size), Err(MmioError::BadAccess));
            assert_eq!(rtc.write(reg::LR, size, 0), Err(MmioError::BadAccess));
        }
        assert_eq!(rtc.read(0x2, 4), Err(MmioError::BadAccess));
        assert_eq!(rtc.read(0x020, 4), Err(MmioError::BadAccess));
        assert_eq!(rtc.write(0x080, 4, 0), Err(MmioError::BadAccess));
        assert_eq!(rtc.read(0x1000, 4), Err(MmioError::BadAccess));
        assert_eq!(rtc.read(u64::MAX - 3, 4), Err(MmioError::BadAccess));
        assert_eq!(rd(&rtc, reg::ICR), 0);
        assert_eq!(rd(&rtc, reg::LR), 0);
    }

    #[test]
    fn counter_clock() {
        let clock = CounterClock::new(
            || 62_500_000 * 90 + 1,
            62_500_000,
            62_500_000 * 30,
            JAN_2025,
        );
        assert_eq!(clock.now_seconds(), JAN_2025 + 60);
        // Before the base, and with no frequency: the base time.
        assert_eq!(CounterClock::new(|| 0, 1, 10, 7).now_seconds(), 7);
        assert_eq!(CounterClock::new(|| 100, 0, 0, 7).now_seconds(), 7);
    }
}
