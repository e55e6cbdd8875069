//! Which interrupts can be delivered where, as bitmaps: what list-register filling looks at
//! instead of scanning every interrupt of the VM.
//!
//! An interrupt is *ready* when it could go into a list register as a new pending interrupt on
//! a vCPU it is routed to: pending, enabled, its group enabled in GICD_CTLR, not active and not
//! in any list register. It is *idle-active* when it is active and in no list register (its
//! owner must load it, or the guest could not deactivate it). Both depend only on the
//! interrupt's own [`Irq`] and the group enables; where an SPI may go (GICD_ITARGETSR /
//! GICD_IROUTER) is kept apart, per vCPU, because it changes only when the guest reprograms it.
//! So the SPIs ready for vCPU `v` are `spi_ready & spi_routed[v]`, a few words (64 SPIs each).
//!
//! [`IrqIndex`] holds the bits; `State` updates them after every change to an interrupt (see
//! `State::update`), and host tests compare them with [`IrqIndex::scan`] after every operation.

use super::irq_state::{Irq, PRIVATE_COUNT, State};
use super::vcpu_set::VcpuSet;
use alloc::vec;
use alloc::vec::Vec;

/// SPIs per bitmap word.
const WORD_BITS: u32 = u64::BITS;

/// The delivery bitmaps of one VM (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqIndex {
    /// Per vCPU: its ready SGIs and PPIs, bit n for INTID n.
    private_ready: Vec<u32>,
    /// Per vCPU: its idle-active SGIs and PPIs.
    private_active: Vec<u32>,
    /// Ready SPIs: bit n of word w is INTID 32 + 64 * w + n.
    spi_ready: Vec<u64>,
    /// Idle-active SPIs; the vCPU that must load each is its `Irq::active_on`.
    spi_active: Vec<u64>,
    /// Per vCPU, `words` words each: the SPIs it may be given.
    spi_routed: Vec<u64>,
    /// Words per SPI bitmap.
    words: usize,
}

impl IrqIndex {
    /// All clear: nothing ready, nothing active, no SPI routed anywhere.
    pub fn new(nr_vcpus: usize, nr_spis: u32) -> Self {
        let words = nr_spis.div_ceil(WORD_BITS) as usize;
        IrqIndex {
            private_ready: vec![0; nr_vcpus],
            private_active: vec![0; nr_vcpus],
            spi_ready: vec![0; words],
            spi_active: vec![0; words],
            spi_routed: vec![0; nr_vcpus * words],
            words,
        }
    }

    /// What the bits of every interrupt of `state` should be, from a full scan.
    pub fn scan(state: &State) -> Self {
        let mut index = IrqIndex::new(state.cfg.nr_vcpus, state.cfg.nr_spis);
        for (vcpu, cpu) in state.cpus.iter().enumerate() {
            for (intid, irq) in (0..).zip(&cpu.private) {
                index.set(
                    vcpu,
                    intid,
                    irq.ready(state.group_enabled(irq)),
                    irq.idle_active(),
                );
            }
        }
        for (intid, irq) in (PRIVATE_COUNT..).zip(&state.spis) {
            index.set(
                0,
                intid,
                irq.ready(state.group_enabled(irq)),
                irq.idle_active(),
            );
            index.set_route(intid, state.routed(0, intid, irq));
        }
        index
    }

    /// Sets the ready and idle-active bits of `intid` (of vCPU `bank` below 32).
    pub fn set(&mut self, bank: usize, intid: u32, ready: bool, active: bool) {
        if intid < PRIVATE_COUNT {
            let bit = 1u32 << intid;
            if let (Some(r), Some(a)) = (
                self.private_ready.get_mut(bank),
                self.private_active.get_mut(bank),
            ) {
                assign(r, bit, ready);
                assign(a, bit, active);
            }
        } else {
            let (w, bit) = spi_bit(intid);
            if let (Some(r), Some(a)) = (self.spi_ready.get_mut(w), self.spi_active.get_mut(w)) {
                assign(r, bit, ready);
                assign(a, bit, active);
            }
        }
    }

    /// Sets the vCPUs SPI `intid` is routed to.
    pub fn set_route(&mut self, intid: u32, routed: VcpuSet) {
        let (w, bit) = spi_bit(intid);
        if w >= self.words {
            return;
        }
        for (vcpu, row) in self.spi_routed.chunks_exact_mut(self.words).enumerate() {
            assign(&mut row[w], bit, routed.contains(vcpu));
        }
    }

    /// Calls `f` with each INTID ready for `vcpu`, in increasing order.
    /// Routes each of the `spis` SPIs to the vCPUs in `routed` (and to no other).
    pub fn route_all_spis(&mut self, spis: u32, routed: VcpuSet) {
        for (vcpu, row) in self
            .spi_routed
            .chunks_exact_mut(self.words.max(1))
            .enumerate()
        {
            for (w, word) in row.iter_mut().enumerate() {
                *word = if routed.contains(vcpu) { !0 } else { 0 };
                // Bits past the last SPI stay clear, as `set_route` leaves them.
                let first = w as u32 * WORD_BITS;
                if first >= spis {
                    *word = 0;
                } else if spis - first < WORD_BITS {
                    *word &= (1u64 << (spis - first)) - 1;
                }
            }
        }
    }

    #[inline]
    pub fn for_each_ready(&self, vcpu: usize, mut f: impl FnMut(u32)) {
        let Some(&private) = self.private_ready.get(vcpu) else {
            return;
        };
        for_each_bit(u64::from(private), 0, &mut f);
        let routed = &self.spi_routed[vcpu * self.words..(vcpu + 1) * self.words];
        for (w, (ready, routed)) in self.spi_ready.iter().zip(routed).enumerate() {
            for_each_bit(ready & routed, PRIVATE_COUNT + w as u32 * WORD_BITS, &mut f);
        }
    }

    /// Whether some interrupt is ready for `vcpu`.
    pub fn any_ready(&self, vcpu: usize) -> bool {
        let Some(&private) = self.private_ready.get(vcpu) else {
            return false;
        };
        let routed = &self.spi_routed[vcpu * self.words..(vcpu + 1) * self.words];
        private != 0 || self.spi_ready.iter().zip(routed).any(|(r, t)| r & t != 0)
    }

    /// Calls `f` with each idle-active SGI and PPI of `vcpu` and each idle-active SPI (of
    /// whichever vCPU: the caller checks the owner), in increasing order.
    #[inline]
    pub fn for_each_active(&self, vcpu: usize, mut f: impl FnMut(u32)) {
        let Some(&private) = self.private_active.get(vcpu) else {
            return;
        };
        for_each_bit(u64::from(private), 0, &mut f);
        for (w, &active) in self.spi_active.iter().enumerate() {
            for_each_bit(active, PRIVATE_COUNT + w as u32 * WORD_BITS, &mut f);
        }
    }
}

/// The word and bit of SPI `intid` (at least 32).
fn spi_bit(intid: u32) -> (usize, u64) {
    let n = intid - PRIVATE_COUNT;
    ((n / WORD_BITS) as usize, 1 << (n % WORD_BITS))
}

fn assign<T>(word: &mut T, bit: T, on: bool)
where
    T: Copy
        + core::ops::BitOr<Output = T>
        + core::ops::BitAnd<Output = T>
        + core::ops::Not<Output = T>,
{
    *word = if on { *word | bit } else { *word & !bit };
}

/// `f(base + n)` for each set bit n of `bits`, lowest first.
#[inline(always)]
fn for_each_bit(mut bits: u64, base: u32, f: &mut impl FnMut(u32)) {
    while bits != 0 {
        f(base + bits.trailing_zeros());
        bits &= bits - 1;
    }
}

impl State {
    /// Changes interrupt `intid` (of vCPU `bank` below 32) with `change`, then brings the
    /// delivery index up to date with it. Every change to an [`Irq`] goes through here (or,
    /// for a change that concerns every interrupt, is followed by [`State::reindex_all`]).
    pub fn update<R>(
        &mut self,
        bank: usize,
        intid: u32,
        change: impl FnOnce(&mut Irq) -> R,
    ) -> Option<R> {
        let groups = (self.grp0_enabled, self.grp1_enabled);
        let irq = if intid < PRIVATE_COUNT {
            self.cpus.get_mut(bank)?.private.get_mut(intid as usize)?
        } else {
            self.spis.get_mut((intid - PRIVATE_COUNT) as usize)?
        };
        let route = (irq.targets, irq.route);
        let result = change(irq);
        let group_enabled = if irq.group1 { groups.1 } else { groups.0 };
        self.index
            .set(bank, intid, irq.ready(group_enabled), irq.idle_active());
        if route != (irq.targets, irq.route) {
            self.reroute(intid);
        }
        Some(result)
    }

    /// Brings the routing bits of SPI `intid` up to date (after a GICD_ITARGETSR or
    /// GICD_IROUTER write: rare, and kept out of [`State::update`]'s way).
    #[cold]
    #[inline(never)]
    fn reroute(&mut self, intid: u32) {
        if let Some(irq) = self.irq(0, intid) {
            let routed = self.routed(0, intid, irq);
            self.index.set_route(intid, routed);
        }
    }

    /// Rebuilds the whole index (after a GICD_CTLR group enable changed).
    pub fn reindex_all(&mut self) {
        self.index = IrqIndex::scan(self);
    }

    /// Host tests: the index is what a full scan computes.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        assert_eq!(
            self.index,
            IrqIndex::scan(self),
            "the delivery index went stale"
        );
    }
}
