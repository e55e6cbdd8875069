//! A small set of vCPU indices: who an SGI reached, who needs a kick.
//!
//! A GICv3 guest has at most 123 vCPUs (`virtual_board::GICV3_MAX_VCPUS`), so one `u128`
//! holds any set without allocating, and the vGIC can return it from under its lock.

/// Most vCPUs a [`VcpuSet`] (and so a vGIC) can name.
pub const MAX_VCPUS: usize = 128;

/// A set of vCPU indices below [`MAX_VCPUS`].
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuSet(u128);

impl VcpuSet {
    /// The empty set.
    pub const fn empty() -> Self {
        VcpuSet(0)
    }

    /// `{0, 1, .., n - 1}`; every index from [`MAX_VCPUS`] on is left out.
    pub const fn first(n: usize) -> Self {
        if n >= MAX_VCPUS {
            VcpuSet(u128::MAX)
        } else {
            VcpuSet((1u128 << n) - 1)
        }
    }

    /// The set holding only `vcpu` (empty if `vcpu` is out of range).
    pub const fn single(vcpu: usize) -> Self {
        let mut s = VcpuSet(0);
        s.insert(vcpu);
        s
    }

    /// Adds `vcpu`; indices from [`MAX_VCPUS`] on are ignored.
    pub const fn insert(&mut self, vcpu: usize) {
        if vcpu < MAX_VCPUS {
            self.0 |= 1 << vcpu;
        }
    }

    pub const fn remove(&mut self, vcpu: usize) {
        if vcpu < MAX_VCPUS {
            self.0 &= !(1 << vcpu);
        }
    }

    pub const fn contains(&self, vcpu: usize) -> bool {
        vcpu < MAX_VCPUS && self.0 & (1 << vcpu) != 0
    }

    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub const fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    pub const fn union(self, other: Self) -> Self {
        VcpuSet(self.0 | other.0)
    }

    pub const fn intersection(self, other: Self) -> Self {
        VcpuSet(self.0 & other.0)
    }

    /// The set whose members are the set bits of `bits` (bit n: vCPU n).
    pub const fn from_bits(bits: u128) -> Self {
        VcpuSet(bits)
    }

    /// The lowest index in the set.
    pub const fn lowest(&self) -> Option<usize> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0.trailing_zeros() as usize)
        }
    }

    /// The indices in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(i)
        })
    }
}

impl core::fmt::Debug for VcpuSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<usize> for VcpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = VcpuSet::empty();
        for v in iter {
            s.insert(v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn set_operations() {
        let mut s = VcpuSet::empty();
        assert!(s.is_empty());
        s.insert(0);
        s.insert(127);
        s.insert(128); // ignored
        s.insert(5);
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 5, 127]);
        assert_eq!(s.len(), 3);
        assert!(s.contains(127) && !s.contains(128) && !s.contains(usize::MAX));
        s.remove(0);
        assert_eq!(s.lowest(), Some(5));
        assert_eq!(VcpuSet::first(3).iter().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(VcpuSet::first(200).len(), 128);
        assert_eq!(VcpuSet::first(0), VcpuSet::empty());
        assert_eq!(
            VcpuSet::single(3).union(VcpuSet::single(1)),
            [1, 3].into_iter().collect()
        );
        assert_eq!(
            VcpuSet::from_bits(0b1011).intersection(VcpuSet::first(3)),
            VcpuSet::from_bits(3)
        );
        assert_eq!(alloc::format!("{:?}", VcpuSet::single(2)), "{2}");
    }
}
