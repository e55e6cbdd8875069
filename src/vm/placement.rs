//! Which physical CPU runs which vCPU — pure, host-tested.
//!
//! Veil pins vCPUs to physical CPUs (no migration, so no vCPU state ever crosses CPUs). VMs are
//! placed in package order, each vCPU on the next CPU round-robin: with at least as many CPUs
//! as vCPUs every vCPU has a CPU of its own (static partitioning, as Bao does); with fewer, the
//! CPUs are shared evenly and their scheduler (`cpu::sched`) time-slices them.

use alloc::vec::Vec;

/// A VM with no vCPUs cannot be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoVcpus;

/// For each VM (by its vCPU count), the physical CPU index of each of its vCPUs.
pub fn place(vcpu_counts: &[usize], cpus: usize) -> Vec<Result<Vec<usize>, NoVcpus>> {
    let mut next = 0;
    vcpu_counts
        .iter()
        .map(|&wanted| {
            if wanted == 0 || cpus == 0 {
                return Err(NoVcpus);
            }
            let placed: Vec<usize> = (0..wanted).map(|i| (next + i) % cpus).collect();
            next = (next + wanted) % cpus;
            Ok(placed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_each_while_they_last() {
        let p = place(&[2, 1, 1], 4);
        assert_eq!(p, vec![Ok(vec![0, 1]), Ok(vec![2]), Ok(vec![3])]);
    }

    #[test]
    fn shared_evenly_when_oversubscribed() {
        let p = place(&[2, 2, 1], 2);
        assert_eq!(p, vec![Ok(vec![0, 1]), Ok(vec![0, 1]), Ok(vec![0])]);
        // A VM wider than the machine shares CPUs among its own vCPUs.
        assert_eq!(place(&[4], 2), vec![Ok(vec![0, 1, 0, 1])]);
        assert_eq!(place(&[0], 1), vec![Err(NoVcpus)]);
        assert!(place(&[], 4).is_empty());
    }
}
