//! Delivery: what a vCPU should see next, and the list-register round trip around each run.
//!
//! After a vCPU exits, the integrator reads its list registers, decodes them and calls
//! [`State::fold_lrs`]: each register's state is compared with what was loaded.
//! - Still pending: the guest has not taken it; the moved pending state returns to the model.
//! - Pending became active: acknowledged; the interrupt stays active (and stays with this vCPU).
//! - Pending or active became invalid: acknowledged and deactivated (for an edge interrupt,
//!   that edge is consumed). A level-sensitive interrupt is pending again at once if its line
//!   is still high: the line is re-sampled, not remembered. For a hardware-mapped interrupt
//!   the hardware deactivated the physical interrupt too; if its source is still asserted it
//!   fires again and the integrator reports it with `set_level` as before.
//!
//! Before the vCPU runs again, [`State::fill_lrs`] chooses what the registers hold: first every
//! interrupt active on this vCPU (never dropped, or the guest could not deactivate it), then the
//! deliverable pending interrupts in priority order (lower value first, ties by INTID, then by
//! GICv2 SGI sender). If more are pending than fit, [`LrFill::more_pending`] asks the integrator
//! for an underflow maintenance interrupt (ICH_HCR_EL2.UIE / GICH_HCR.UIE, and NPIE where
//! useful) so that it can refill once the guest has worked through them.
//!
//! Two cases use a register's EOI bit (maintenance interrupt when the guest deactivates it)
//! instead: a level-sensitive interrupt whose line is still high (it must be offered again as
//! soon as it is deactivated, which the hardware cannot know), and a GICv2 SGI with more
//! senders waiting (one register per INTID: two registers with the same vINTID are
//! UNPREDICTABLE). Hardware-mapped registers have no EOI bit and need none.

use super::irq_state::{Loaded, PRIVATE_COUNT, State};
use super::list_register::{ListRegister, LrState};
use alloc::vec;
use alloc::vec::Vec;

/// A pending interrupt a vCPU could be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingIrq {
    pub intid: u32,
    pub priority: u8,
    pub group1: bool,
    /// GICv2 SGI: the sender of the instance that goes first.
    pub source: Option<u8>,
    /// The physical INTID of a hardware-mapped interrupt.
    pub hw: Option<u32>,
}

/// What [`State::fill_lrs`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LrFill {
    /// List registers now valid (from the first on; the rest are invalid).
    pub used: usize,
    /// Deliverable interrupts did not fit: set UIE (underflow maintenance) to refill.
    pub more_pending: bool,
    /// More interrupts are active on this vCPU than there are list registers; the
    /// lowest-priority ones wait in the model. Only a guest nesting that deep gets here.
    pub active_overflow: bool,
}

impl State {
    /// The interrupts that could go into `vcpu`'s list registers as new pending ones, best
    /// first: pending, enabled, group enabled in GICD_CTLR, routed or targeted to `vcpu`, not
    /// active (an active one stays with its owner) and not held by any list register.
    pub fn pending_for(&self, vcpu: usize) -> Vec<PendingIrq> {
        let mut out = Vec::new();
        if vcpu >= self.cfg.nr_vcpus {
            return out;
        }
        let private = (0..PRIVATE_COUNT).filter_map(|intid| Some((intid, self.irq(vcpu, intid)?)));
        let shared = self.spis.iter().enumerate().map(|(i, irq)| (PRIVATE_COUNT + i as u32, irq));
        for (intid, irq) in private.chain(shared) {
            if self.deliverable(vcpu, vcpu, intid, irq) {
                out.push(PendingIrq {
                    intid,
                    priority: irq.priority,
                    group1: irq.group1,
                    source: self.is_v2_sgi(intid).then(|| irq.sgi_sources.trailing_zeros() as u8),
                    hw: irq.hw.map(u32::from),
                });
            }
        }
        out.sort_by_key(|p| (p.priority, p.intid, p.source));
        out
    }

    /// Whether `vcpu` has something to take: a deliverable interrupt, or a pending one already
    /// in its list registers. The integrator's WFI handling uses it (the guest's priority mask
    /// and CPU interface enables, in ICH_VMCR_EL2 / GICH_VMCR, are not considered).
    pub fn has_deliverable(&self, vcpu: usize) -> bool {
        let loaded_pending = self.cpus.get(vcpu).is_some_and(|cpu| {
            cpu.slots
                .iter()
                .flatten()
                .any(|&intid| self.irq(vcpu, intid).and_then(|i| i.lr).is_some_and(|l| l.pending))
        });
        loaded_pending || !self.pending_for(vcpu).is_empty()
    }

    /// Folds the list registers of `vcpu`, as decoded after it exited (`lrs[i]` is register
    /// `i`), back into the model. A register missing from `lrs`, or holding another INTID than
    /// was loaded, is taken as unchanged.
    pub fn fold_lrs(&mut self, vcpu: usize, lrs: &[ListRegister]) {
        let Some(cpu) = self.cpus.get_mut(vcpu) else { return };
        let slots = core::mem::take(&mut cpu.slots);
        for (i, slot) in slots.iter().enumerate() {
            let Some(intid) = *slot else { continue };
            let seen = lrs.get(i).filter(|lr| lr.vintid == intid).map(|lr| lr.state);
            self.unload(vcpu, intid, seen);
        }
    }

    fn unload(&mut self, vcpu: usize, intid: u32, seen: Option<LrState>) {
        let v2_sgi = self.is_v2_sgi(intid);
        let Some(irq) = self.irq_mut(vcpu, intid) else { return };
        let Some(ld) = irq.lr.filter(|l| usize::from(l.vcpu) == vcpu) else { return };
        irq.lr = None;
        let state = seen.unwrap_or(LrState::from_parts(ld.pending, ld.active));
        if state.is_pending() {
            // Not acknowledged: what was moved into the register comes back, unless the guest
            // cleared it meanwhile. A hardware line always comes back, its physical interrupt
            // still being active.
            if ld.moved_latch && !ld.cancel_pending {
                if v2_sgi {
                    irq.sgi_sources |= 1u8.checked_shl(u32::from(ld.source)).unwrap_or(0);
                } else {
                    irq.latch = true;
                }
            }
            if ld.moved_line {
                irq.line = true;
            }
        }
        let active = match ld.active_override {
            Some(a) if irq.hw.is_none() => a,
            _ => state.is_active(),
        };
        irq.active = active;
        if v2_sgi && state.is_active() {
            irq.active_source = ld.source;
        }
        if intid >= PRIVATE_COUNT {
            irq.active_on = active.then_some(vcpu as u16);
        }
    }

    /// Chooses the next contents of `vcpu`'s list registers (all of `lrs` is written; unused
    /// ones are invalid) and records them for the next [`State::fold_lrs`]. If the previous
    /// contents were not folded, they are folded first as unchanged.
    pub fn fill_lrs(&mut self, vcpu: usize, lrs: &mut [ListRegister]) -> LrFill {
        lrs.fill(ListRegister::INVALID);
        if vcpu >= self.cfg.nr_vcpus {
            return LrFill::default();
        }
        self.fold_lrs(vcpu, &[]);
        let n = lrs.len();

        let mut active: Vec<(u8, u32)> = (0..PRIVATE_COUNT)
            .filter_map(|intid| {
                self.irq(vcpu, intid).filter(|i| i.active).map(|i| (i.priority, intid))
            })
            .collect();
        for (i, irq) in self.spis.iter().enumerate() {
            if irq.active && irq.lr.is_none() && irq.active_on.map(usize::from) == Some(vcpu) {
                active.push((irq.priority, PRIVATE_COUNT + i as u32));
            }
        }
        active.sort_unstable();
        let active_overflow = active.len() > n;
        active.truncate(n);

        let candidates = self.pending_for(vcpu);
        let free = n - active.len();
        let more_pending = candidates.len() > free;

        let mut slots = vec![None; n];
        let loads = active
            .iter()
            .map(|&(_, intid)| (intid, true, None))
            .chain(candidates.iter().take(free).map(|p| (p.intid, false, p.source)));
        for ((lr, slot), (intid, as_active, source)) in
            lrs.iter_mut().zip(slots.iter_mut()).zip(loads)
        {
            if let Some(content) = self.load(vcpu, intid, as_active, source) {
                *lr = content;
                *slot = Some(intid);
            }
        }
        let used = slots.iter().flatten().count();
        if let Some(cpu) = self.cpus.get_mut(vcpu) {
            cpu.slots = slots;
        }
        LrFill { used, more_pending, active_overflow }
    }

    /// Puts `intid` into a register of `vcpu`: as active (adding its pending state when the
    /// register can carry both) or as a new pending interrupt from GICv2 sender `source`.
    fn load(
        &mut self,
        vcpu: usize,
        intid: u32,
        as_active: bool,
        source: Option<u8>,
    ) -> Option<ListRegister> {
        let v2_sgi = self.is_v2_sgi(intid);
        let irq = self.irq(vcpu, intid)?;
        let (pending, source) = if as_active {
            let src = irq.active_source;
            let src_bit = 1u8.checked_shl(u32::from(src)).unwrap_or(0);
            // Pending and active together only for a latched event (a new edge, a write to
            // ISPENDR, another SGI from the same sender) on an interrupt that is not
            // hardware-mapped (the hardware tracks that one). A level line is not copied: it
            // may fall before the deactivation; the EOI bit gets it re-sampled then.
            let pend = irq.hw.is_none()
                && irq.enabled
                && self.group_enabled(irq)
                && if v2_sgi { irq.sgi_sources & src_bit != 0 } else { irq.latch };
            (pend, src)
        } else {
            (true, source.unwrap_or(0))
        };
        let irq = self.irq_mut(vcpu, intid)?;
        let mut ld =
            Loaded { vcpu: vcpu as u16, source, pending, active: as_active, ..Loaded::default() };
        if pending {
            if v2_sgi {
                irq.sgi_sources &= !1u8.checked_shl(u32::from(source)).unwrap_or(0);
                ld.moved_latch = true;
            } else {
                ld.moved_latch = irq.latch;
                irq.latch = false;
                if irq.hw.is_some() && !irq.edge {
                    ld.moved_line = irq.line;
                    irq.line = false;
                }
            }
        }
        irq.lr = Some(ld);
        Some(ListRegister {
            vintid: intid,
            state: LrState::from_parts(pending, as_active),
            priority: irq.priority,
            group1: irq.group1,
            hw: irq.hw.map(u32::from),
            source: if v2_sgi { source } else { 0 },
            // Still pending after the move: a level line still high, or more SGI senders.
            eoi_maintenance: irq.hw.is_none() && irq.pending(),
        })
    }
}
