//! Which physical CPU runs which vCPU — pure, host-tested.
//!
//! Veil pins vCPUs to physical CPUs (static partitioning, as Bao does): no scheduler on the exit
//! path, no vCPU waiting behind another. VMs are placed in package order; a VM whose vCPUs do not
//! all fit on the CPUs still free is not started, and says so.

use alloc::vec::Vec;

/// A VM that cannot be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom {
    pub wanted: usize,
    pub free: usize,
}

/// For each VM (by its vCPU count), the physical CPU index of each of its vCPUs.
pub fn place(vcpu_counts: &[usize], cpus: usize) -> Vec<Result<Vec<usize>, NoRoom>> {
    let mut next = 0;
    vcpu_counts
        .iter()
        .map(|&wanted| {
            let free = cpus - next;
            if wanted == 0 || wanted > free {
                return Err(NoRoom { wanted, free });
            }
            let cpus: Vec<usize> = (next..next + wanted).collect();
            next += wanted;
            Ok(cpus)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_pinning_and_refusal() {
        let p = place(&[2, 1, 4, 1], 4);
        assert_eq!(p[0], Ok(vec![0, 1]));
        assert_eq!(p[1], Ok(vec![2]));
        assert_eq!(p[2], Err(NoRoom { wanted: 4, free: 1 }));
        assert_eq!(p[3], Ok(vec![3]));
        assert_eq!(place(&[0], 1)[0], Err(NoRoom { wanted: 0, free: 1 }));
        assert!(place(&[], 4).is_empty());
    }
}
