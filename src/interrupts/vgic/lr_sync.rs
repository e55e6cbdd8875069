//! Delivery: what a vCPU should see next, and the list-register round trip around each run.
//!
//! After a vCPU exits, the integrator reads its list registers, decodes them and calls
//! [`State::fold_lrs`]: each register's state is compared with what was loaded. (Or it hands
//! [`State::sync_lrs`] a [`ListRegisters`] that reads and writes the hardware, and only the
//! registers in use are touched.)
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

use super::irq_state::{CpuState, Irq, Loaded, MAX_LRS, PRIVATE_COUNT, State};
use super::list_register::{ListRegister, ListRegisters, LrState};
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

/// The sort key of an interrupt in list-register order, as `CpuState::slots` keeps it:
/// priority first, then INTID (INTIDs stay below 1024).
const fn slot_key(priority: u8, intid: u32) -> u32 {
    (priority as u32) << 16 | intid
}

/// The INTID of a [`slot_key`].
const fn slot_intid(key: u32) -> u32 {
    key & 0xffff
}

/// Offers `key` to `keys[..*len]`, which holds the smallest keys offered so far, sorted, at
/// most `keys.len()` of them: the few interrupts that fit in the list registers, chosen
/// without collecting and sorting all of them.
fn keep_best(keys: &mut [u32], len: &mut usize, key: u32) {
    if *len == keys.len() {
        match keys.last() {
            Some(&last) if key < last => *len -= 1,
            _ => return,
        }
    }
    let mut i = *len;
    while i > 0 && keys[i - 1] > key {
        keys[i] = keys[i - 1];
        i -= 1;
    }
    keys[i] = key;
    *len += 1;
}

/// Interrupt `intid` among a vCPU's `private` ones and the VM's `spis`.
fn irq_in<'a>(private: &'a [Irq], spis: &'a [Irq], intid: u32) -> Option<&'a Irq> {
    if intid < PRIVATE_COUNT {
        private.get(intid as usize)
    } else {
        spis.get((intid - PRIVATE_COUNT) as usize)
    }
}

impl State {
    /// The interrupts that could go into `vcpu`'s list registers as new pending ones, best
    /// first: pending, enabled, group enabled in GICD_CTLR, routed or targeted to `vcpu`, not
    /// active (an active one stays with its owner) and not held by any list register.
    pub fn pending_for(&self, vcpu: usize) -> Vec<PendingIrq> {
        let mut out = Vec::new();
        self.index.for_each_ready(vcpu, |intid| {
            if let Some(irq) = self.irq(vcpu, intid) {
                out.push(self.pending_irq(intid, irq));
            }
        });
        out.sort_by_key(|p| (p.priority, p.intid, p.source));
        out
    }

    /// What [`State::pending_for`] finds, by looking at every interrupt of the VM: the
    /// definition the delivery index must agree with.
    #[cfg(test)]
    pub fn pending_by_scan(&self, vcpu: usize) -> Vec<PendingIrq> {
        let mut out = Vec::new();
        if vcpu >= self.cfg.nr_vcpus {
            return out;
        }
        let private = (0..PRIVATE_COUNT).filter_map(|intid| Some((intid, self.irq(vcpu, intid)?)));
        let shared = self
            .spis
            .iter()
            .enumerate()
            .map(|(i, irq)| (PRIVATE_COUNT + i as u32, irq));
        for (intid, irq) in private.chain(shared) {
            if self.deliverable(vcpu, vcpu, intid, irq) {
                out.push(self.pending_irq(intid, irq));
            }
        }
        out.sort_by_key(|p| (p.priority, p.intid, p.source));
        out
    }

    fn pending_irq(&self, intid: u32, irq: &Irq) -> PendingIrq {
        PendingIrq {
            intid,
            priority: irq.priority,
            group1: irq.group1,
            source: self
                .is_v2_sgi(intid)
                .then(|| irq.sgi_sources.trailing_zeros() as u8),
            hw: irq.hw.map(u32::from),
        }
    }

    /// Whether `vcpu` has something to take: a deliverable interrupt, or a pending one already
    /// in its list registers. The integrator's WFI handling uses it (the guest's priority mask
    /// and CPU interface enables, in ICH_VMCR_EL2 / GICH_VMCR, are not considered).
    pub fn has_deliverable(&self, vcpu: usize) -> bool {
        let loaded_pending = self.cpus.get(vcpu).is_some_and(|cpu| {
            cpu.slots[..cpu.loaded].iter().any(|&key| {
                self.irq(vcpu, slot_intid(key))
                    .and_then(|i| i.lr)
                    .is_some_and(|l| l.pending)
            })
        });
        loaded_pending || self.index.any_ready(vcpu)
    }

    /// Folds the list registers of `vcpu`, as decoded after it exited (register `i` is
    /// `lrs.read(i)`; only those the last fill used are read), back into the model. A missing
    /// register, or one holding another INTID than was loaded, is taken as unchanged.
    #[inline(always)]
    pub fn fold_lrs(&mut self, vcpu: usize, lrs: &(impl ListRegisters + ?Sized)) {
        let Some(cpu) = self.cpus.get_mut(vcpu) else {
            return;
        };
        let loaded = core::mem::take(&mut cpu.loaded);
        for i in 0..loaded {
            let intid = slot_intid(self.cpus[vcpu].slots[i]);
            let seen = lrs
                .read(i)
                .filter(|lr| lr.vintid == intid)
                .map(|lr| lr.state);
            self.unload(vcpu, intid, seen);
        }
    }

    // Kept out of line: inlined, its setup is hoisted ahead of every fold, even an empty one.
    #[inline(never)]
    fn unload(&mut self, vcpu: usize, intid: u32, seen: Option<LrState>) {
        let v2_sgi = self.is_v2_sgi(intid);
        self.update(vcpu, intid, |irq| {
            let Some(ld) = irq.lr.filter(|l| usize::from(l.vcpu) == vcpu) else {
                return;
            };
            irq.lr = None;
            let state = seen.unwrap_or(LrState::from_parts(ld.pending, ld.active));
            if state.is_pending() {
                // Not acknowledged: what was moved into the register comes back, unless the
                // guest cleared it meanwhile. A hardware line always comes back, its physical
                // interrupt still being active.
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
        });
    }

    /// Chooses the next contents of `vcpu`'s list registers (all of `lrs` is written; unused
    /// ones are invalid, and so is every one from [`MAX_LRS`] on) and records them for the
    /// next [`State::fold_lrs`]. If the previous contents were not folded, they are folded
    /// first as unchanged.
    pub fn fill_lrs(&mut self, vcpu: usize, lrs: &mut [ListRegister]) -> LrFill {
        lrs.fill(ListRegister::INVALID);
        if vcpu >= self.cfg.nr_vcpus {
            return LrFill::default();
        }
        if self.cpus[vcpu].loaded != 0 {
            self.fold_lrs(vcpu, &[] as &[ListRegister]);
        }
        self.load_lrs(vcpu, lrs)
    }

    /// An exit's whole round trip through `vcpu`'s list registers: [`State::fold_lrs`], then
    /// the choice [`State::fill_lrs`] makes, touching only registers in use. The registers
    /// this fill leaves empty are written only if the last fill used them: every other one is
    /// taken to be invalid already (as the integrator leaves them when a vCPU is loaded).
    pub fn sync_lrs(&mut self, vcpu: usize, lrs: &mut (impl ListRegisters + ?Sized)) -> LrFill {
        let Some(cpu) = self.cpus.get(vcpu) else {
            return LrFill::default();
        };
        let before = cpu.loaded;
        self.fold_lrs(vcpu, lrs);
        let fill = self.load_lrs(vcpu, lrs);
        for i in fill.used..before {
            lrs.write(i, ListRegister::INVALID);
        }
        fill
    }

    /// Chooses and loads the interrupts for `vcpu`'s registers, which are all folded, and
    /// writes the registers that receive one (from the first on).
    fn load_lrs(&mut self, vcpu: usize, lrs: &mut (impl ListRegisters + ?Sized)) -> LrFill {
        let n = lrs.count().min(MAX_LRS);

        // The choice is made in the vCPU's slots, sorted: first every interrupt active on it,
        // most urgent first, then the most urgent pending ones that fit.
        let State {
            index, cpus, spis, ..
        } = self;
        let CpuState { private, slots, .. } = &mut cpus[vcpu];
        let (mut actives, mut offered) = (0, 0);
        index.for_each_active(vcpu, |intid| {
            if let Some(irq) = irq_in(private, spis, intid)
                && (intid < PRIVATE_COUNT || irq.active_on.map(usize::from) == Some(vcpu))
            {
                offered += 1;
                keep_best(&mut slots[..n], &mut actives, slot_key(irq.priority, intid));
            }
        });
        let active_overflow = offered > n;
        let (mut pendings, mut offered) = (0, 0);
        index.for_each_ready(vcpu, |intid| {
            if let Some(irq) = irq_in(private, spis, intid) {
                offered += 1;
                keep_best(
                    &mut slots[actives..n],
                    &mut pendings,
                    slot_key(irq.priority, intid),
                );
            }
        });
        let more_pending = offered > n - actives;

        let mut used = 0;
        for i in 0..actives + pendings {
            let key = self.cpus[vcpu].slots[i];
            if let Some(content) = self.load(vcpu, slot_intid(key), i < actives) {
                lrs.write(used, content);
                self.cpus[vcpu].slots[used] = key;
                used += 1;
            }
        }
        self.cpus[vcpu].loaded = used;
        LrFill {
            used,
            more_pending,
            active_overflow,
        }
    }

    /// Puts `intid` into a register of `vcpu`: as active (adding its pending state when the
    /// register can carry both) or as a new pending interrupt (a GICv2 SGI from its lowest
    /// pending sender).
    fn load(&mut self, vcpu: usize, intid: u32, as_active: bool) -> Option<ListRegister> {
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
                && if v2_sgi {
                    irq.sgi_sources & src_bit != 0
                } else {
                    irq.latch
                };
            (pend, src)
        } else {
            let lowest_sender = if v2_sgi {
                irq.sgi_sources.trailing_zeros() as u8
            } else {
                0
            };
            (true, lowest_sender)
        };
        self.update(vcpu, intid, |irq| {
            let mut ld = Loaded {
                vcpu: vcpu as u16,
                source,
                pending,
                active: as_active,
                ..Loaded::default()
            };
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
            ListRegister {
                vintid: intid,
                state: LrState::from_parts(pending, as_active),
                priority: irq.priority,
                group1: irq.group1,
                hw: irq.hw.map(u32::from),
                source: if v2_sgi { source } else { 0 },
                // Still pending after the move: a level line still high, or more SGI senders.
                eoi_maintenance: irq.hw.is_none() && irq.pending(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_best_keeps_the_smallest_in_order() {
        let mut keys = [0; 3];
        let mut len = 0;
        for (prio, intid) in [
            (0x80, 40),
            (0x40, 41),
            (0x80, 33),
            (0xf8, 50),
            (0x00, 60),
            (0x40, 27),
        ] {
            keep_best(&mut keys, &mut len, slot_key(prio, intid));
        }
        assert_eq!(
            keys[..len]
                .iter()
                .map(|&k| slot_intid(k))
                .collect::<Vec<_>>(),
            [60, 27, 41]
        );
        let mut len = 0;
        keep_best(&mut [], &mut len, 1);
        assert_eq!(len, 0);
        let mut keys = [0; MAX_LRS];
        for intid in (32..64).rev() {
            keep_best(&mut keys, &mut len, slot_key(0x10, intid));
        }
        assert_eq!(
            keys.map(slot_intid),
            core::array::from_fn(|i| 32 + i as u32)
        );
    }
}
