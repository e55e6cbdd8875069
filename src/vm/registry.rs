//! Every VM Veil created, so that "has everything finished, and how?" has one answer.

use super::{Vm, VmState};
use crate::board::power::ExitStatus;
use alloc::{sync::Arc, vec::Vec};
use spin::Mutex;

static VMS: Mutex<Vec<Arc<Vm>>> = Mutex::new(Vec::new());

/// Adds a VM that has been created.
pub fn register(vm: Arc<Vm>) {
    VMS.lock().push(vm);
}

/// How many VMs exist.
pub fn count() -> usize {
    VMS.lock().len()
}

/// The VM with index `id`.
pub fn get(id: usize) -> Option<Arc<Vm>> {
    VMS.lock().iter().find(|vm| vm.id == id).cloned()
}

/// `None` while a VM still runs; once all have ended, the status the machine should exit with.
pub fn outcome() -> Option<ExitStatus> {
    let vms = VMS.lock();
    summarize(vms.iter().map(|vm| vm.state()))
}

/// The pure part of [`outcome`].
pub fn summarize(states: impl Iterator<Item = VmState>) -> Option<ExitStatus> {
    let mut status = ExitStatus::AllVmsPoweredOff;
    for state in states {
        match state {
            VmState::Running | VmState::Resetting | VmState::Restarting => return None,
            VmState::Stopped => status = ExitStatus::VmStopped,
            VmState::PoweredOff => {}
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_rules() {
        use VmState::*;
        assert_eq!(summarize([Running, PoweredOff].into_iter()), None);
        assert_eq!(summarize([Resetting, PoweredOff].into_iter()), None);
        assert_eq!(summarize([Restarting, Stopped].into_iter()), None);
        assert_eq!(
            summarize([PoweredOff, PoweredOff].into_iter()),
            Some(ExitStatus::AllVmsPoweredOff)
        );
        assert_eq!(
            summarize([PoweredOff, Stopped].into_iter()),
            Some(ExitStatus::VmStopped)
        );
        assert_eq!(
            summarize([].into_iter()),
            Some(ExitStatus::AllVmsPoweredOff)
        );
    }
}
