//! The guest's EL1 physical timer (CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTP_TVAL_EL0), emulated —
//! pure, host-tested.
//!
//! CNTHCTL_EL2.EL1PCEN = 0 makes every guest access trap; Veil keeps the registers here and
//! backs the timer with the EL2 physical timer of the CPU the vCPU is pinned to. The timer's
//! output is a level (Arm ARM D11.2.4): asserted while ENABLE = 1, IMASK = 0 and the counter
//! has reached CVAL; the vGIC sees that level on INTID 30.

/// CNTP_CTL bits.
pub const CTL_ENABLE: u64 = 1 << 0;
pub const CTL_IMASK: u64 = 1 << 1;
pub const CTL_ISTATUS: u64 = 1 << 2;

/// Which register an access names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    Ctl,
    Cval,
    Tval,
}

/// One vCPU's physical timer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysTimer {
    /// ENABLE and IMASK as the guest wrote them (ISTATUS is computed).
    ctl: u64,
    cval: u64,
}

impl PhysTimer {
    /// Whether the timer condition is met (ISTATUS), whatever IMASK says.
    pub fn condition(&self, now: u64) -> bool {
        self.ctl & CTL_ENABLE != 0 && now >= self.cval
    }

    /// The interrupt line's level.
    pub fn level(&self, now: u64) -> bool {
        self.condition(now) && self.ctl & CTL_IMASK == 0
    }

    /// When the line will rise, if it is armed and not yet raised: the hypervisor timer
    /// backing this one is programmed with it.
    pub fn deadline(&self, now: u64) -> Option<u64> {
        (self.ctl & CTL_ENABLE != 0 && self.ctl & CTL_IMASK == 0 && now < self.cval)
            .then_some(self.cval)
    }

    pub fn read(&self, reg: Register, now: u64) -> u64 {
        match reg {
            Register::Ctl => self.ctl | if self.condition(now) { CTL_ISTATUS } else { 0 },
            Register::Cval => self.cval,
            // TVAL reads as the low 32 bits of CVAL - count (a signed down-counter).
            Register::Tval => self.cval.wrapping_sub(now) & 0xffff_ffff,
        }
    }

    pub fn write(&mut self, reg: Register, value: u64, now: u64) {
        match reg {
            Register::Ctl => self.ctl = value & (CTL_ENABLE | CTL_IMASK),
            Register::Cval => self.cval = value,
            // Writing TVAL sets CVAL = count + SignExtend(TVAL[31:0]).
            Register::Tval => self.cval = now.wrapping_add(value as u32 as i32 as i64 as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tval_counts_down_and_sets_cval() {
        let mut t = PhysTimer::default();
        t.write(Register::Tval, 1000, 5000);
        assert_eq!(t.read(Register::Cval, 5000), 6000);
        assert_eq!(t.read(Register::Tval, 5500), 500);
        // Past the deadline TVAL is negative (as 32 bits).
        assert_eq!(t.read(Register::Tval, 6001), 0xffff_ffff);
        // A negative TVAL puts CVAL in the past.
        t.write(Register::Tval, (-10i32) as u32 as u64, 5000);
        assert_eq!(t.read(Register::Cval, 0), 4990);
    }

    #[test]
    fn level_follows_enable_imask_and_time() {
        let mut t = PhysTimer::default();
        t.write(Register::Cval, 100, 0);
        assert!(!t.level(200), "disabled");
        assert_eq!(t.read(Register::Ctl, 200), 0);
        t.write(Register::Ctl, CTL_ENABLE, 0);
        assert_eq!(t.deadline(50), Some(100));
        assert!(!t.level(99));
        assert!(t.level(100));
        assert_eq!(t.read(Register::Ctl, 100), CTL_ENABLE | CTL_ISTATUS);
        assert_eq!(t.deadline(100), None);
        t.write(Register::Ctl, CTL_ENABLE | CTL_IMASK | CTL_ISTATUS, 0);
        assert!(!t.level(100), "masked");
        assert_eq!(
            t.read(Register::Ctl, 100),
            CTL_ENABLE | CTL_IMASK | CTL_ISTATUS,
            "ISTATUS is read-only"
        );
        assert_eq!(
            t.deadline(50),
            None,
            "a masked timer needs no backing timer"
        );
    }
}
