//! Interrupts from Veil's side: emulated devices, timers and passed-through hardware.
//!
//! A device model drives its interrupt line with [`State::set_level`] (the PL011's SPI 1 is
//! level-sensitive and stays asserted while its masked status is nonzero); a source of one-shot
//! events uses [`State::raise_edge`]. Both return the vCPUs that should look at their list
//! registers again (see `Vgic` on kicks). [`State::map_hw`] marks an interrupt as backed by a
//! physical one, so that list registers carry HW = 1 and the guest's deactivation reaches the
//! hardware (the virtual timer PPI 27, passthrough SPIs).

use super::irq_state::{PRIVATE_COUNT, SGI_COUNT, State};
use super::vcpu_set::VcpuSet;

/// Why an injection or mapping request was refused. Requests come from Veil, not guests, so
/// these are Veil bugs or misconfigurations, reported rather than panicked on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// The VM has no such INTID.
    NoSuchIntid,
    /// The VM has no such vCPU (for a PPI).
    NoSuchVcpu,
    /// SGIs come from guests only, and cannot be hardware-mapped.
    NotAllowed,
    /// A physical INTID outside 16..1020 (SGIs and special INTIDs cannot be mapped).
    BadPhysicalIntid,
}

/// Physical INTIDs a list register may name with HW = 1.
const HW_INTIDS: core::ops::Range<u32> = 16..1020;

impl State {
    /// The bank of `intid` as seen from `vcpu`: `vcpu` for a PPI, any for an SPI.
    fn injection_bank(&self, intid: u32, vcpu: usize) -> Result<usize, InjectError> {
        if intid < SGI_COUNT {
            return Err(InjectError::NotAllowed);
        }
        if intid >= self.intid_limit() {
            return Err(InjectError::NoSuchIntid);
        }
        if intid < PRIVATE_COUNT {
            if vcpu >= self.cfg.nr_vcpus {
                return Err(InjectError::NoSuchVcpu);
            }
            Ok(vcpu)
        } else {
            Ok(0)
        }
    }

    /// Drives the input line of `intid` (of `vcpu` for a PPI; ignored for an SPI). A rising
    /// line sets the latch of an edge-triggered interrupt; a level-sensitive one is pending
    /// while the line is high.
    pub fn set_level(
        &mut self,
        intid: u32,
        vcpu: usize,
        level: bool,
    ) -> Result<VcpuSet, InjectError> {
        let bank = self.injection_bank(intid, vcpu)?;
        let changed = self
            .update(bank, intid, |irq| {
                let changed = irq.line != level;
                irq.line = level;
                if changed && level && irq.edge {
                    irq.latch = true;
                }
                changed
            })
            .ok_or(InjectError::NoSuchIntid)?;
        if !changed {
            return Ok(VcpuSet::empty());
        }
        // A falling line also kicks a vCPU holding the interrupt, so that it stops offering it.
        Ok(self.kick_for(bank, intid))
    }

    /// Makes `intid` pending once, as an edge would, whatever its configuration: it stays
    /// pending until the guest acknowledges it (or clears it with ICPENDR).
    pub fn raise_edge(&mut self, intid: u32, vcpu: usize) -> Result<VcpuSet, InjectError> {
        let bank = self.injection_bank(intid, vcpu)?;
        self.update(bank, intid, |irq| irq.latch = true)
            .ok_or(InjectError::NoSuchIntid)?;
        Ok(self.kick_for(bank, intid))
    }

    /// Maps `intid` (of `vcpu` for a PPI) to physical INTID `pintid`, or unmaps it with
    /// `None`. The integrator keeps the physical interrupt active from its arrival until the
    /// guest deactivates the virtual one (EOImode = 1: priority drop only at EL2).
    pub fn map_hw(
        &mut self,
        intid: u32,
        vcpu: usize,
        pintid: Option<u32>,
    ) -> Result<(), InjectError> {
        let bank = self.injection_bank(intid, vcpu)?;
        let hw = match pintid {
            Some(p) if HW_INTIDS.contains(&p) => Some(p as u16),
            Some(_) => return Err(InjectError::BadPhysicalIntid),
            None => None,
        };
        self.update(bank, intid, |irq| irq.hw = hw)
            .ok_or(InjectError::NoSuchIntid)?;
        Ok(())
    }
}
