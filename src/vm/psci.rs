//! PSCI power state of each vCPU — pure, host-tested.
//!
//! PSCI (Arm DEN0022) CPU_ON / CPU_OFF / AFFINITY_INFO as a small state machine per vCPU:
//! `Off --CPU_ON--> OnPending --(its physical CPU picks it up)--> On --CPU_OFF--> Off`.
//! The request is written by whichever vCPU calls CPU_ON and taken by the physical CPU the target
//! vCPU is pinned to, so every transition is a compare-and-swap.

use core::sync::atomic::{AtomicU8, Ordering};
use spin::Mutex;

/// PSCI return codes for CPU_ON.
pub mod ret {
    pub const ALREADY_ON: u64 = -4i64 as u64;
    pub const ON_PENDING: u64 = -5i64 as u64;
}

/// AFFINITY_INFO's answers, which are also the states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PowerState {
    On = 0,
    Off = 1,
    OnPending = 2,
}

/// Where a vCPU starts when turned on: entry point and context ID (its x0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartRequest {
    pub entry: u64,
    pub context_id: u64,
}

/// One vCPU's power state.
pub struct VcpuPower {
    state: AtomicU8,
    request: Mutex<Option<StartRequest>>,
}

impl VcpuPower {
    /// A vCPU that is off until someone turns it on.
    pub const fn off() -> Self {
        VcpuPower {
            state: AtomicU8::new(PowerState::Off as u8),
            request: Mutex::new(None),
        }
    }

    pub fn state(&self) -> PowerState {
        match self.state.load(Ordering::Acquire) {
            0 => PowerState::On,
            2 => PowerState::OnPending,
            _ => PowerState::Off,
        }
    }

    /// CPU_ON: queues the start. Err carries the PSCI error for the caller's x0.
    pub fn request_on(&self, request: StartRequest) -> Result<(), u64> {
        let mut slot = self.request.lock();
        match self.state.compare_exchange(
            PowerState::Off as u8,
            PowerState::OnPending as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                *slot = Some(request);
                Ok(())
            }
            Err(s) if s == PowerState::On as u8 => Err(ret::ALREADY_ON),
            Err(_) => Err(ret::ON_PENDING),
        }
    }

    /// The physical CPU takes a pending start; the vCPU is On from now.
    pub fn take_start(&self) -> Option<StartRequest> {
        let mut slot = self.request.lock();
        let request = slot.take()?;
        self.state.store(PowerState::On as u8, Ordering::Release);
        Some(request)
    }

    /// A reset: a start requested but not yet taken is dropped (the vCPU stays Off). A start
    /// already taken is not: its CPU lets go of the vCPU itself.
    pub fn cancel_pending(&self) {
        let mut slot = self.request.lock();
        if self.state() == PowerState::OnPending {
            *slot = None;
            self.state.store(PowerState::Off as u8, Ordering::Release);
        }
    }

    /// CPU_OFF (or the VM ended): the vCPU is Off and may be turned on again.
    pub fn turn_off(&self) {
        let mut slot = self.request.lock();
        *slot = None;
        self.state.store(PowerState::Off as u8, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: StartRequest = StartRequest {
        entry: 0x4008_0000,
        context_id: 7,
    };

    #[test]
    fn a_reset_cancels_only_pending_starts() {
        let p = VcpuPower::off();
        p.request_on(REQ).unwrap();
        p.cancel_pending();
        assert_eq!(p.state(), PowerState::Off);
        assert_eq!(p.take_start(), None, "the cancelled start is gone");
        p.request_on(REQ).unwrap();
        assert_eq!(p.take_start(), Some(REQ));
        p.cancel_pending();
        assert_eq!(
            p.state(),
            PowerState::On,
            "a running vCPU is its CPU's to stop"
        );
        p.turn_off();
        p.cancel_pending();
        assert_eq!(p.state(), PowerState::Off);
    }

    #[test]
    fn on_off_cycle() {
        let p = VcpuPower::off();
        assert_eq!(p.state(), PowerState::Off);
        assert_eq!(p.take_start(), None);
        p.request_on(REQ).unwrap();
        assert_eq!(p.state(), PowerState::OnPending);
        assert_eq!(p.request_on(REQ), Err(ret::ON_PENDING));
        assert_eq!(p.take_start(), Some(REQ));
        assert_eq!(p.state(), PowerState::On);
        assert_eq!(p.request_on(REQ), Err(ret::ALREADY_ON));
        p.turn_off();
        assert_eq!(p.state(), PowerState::Off);
        p.request_on(StartRequest {
            entry: 1,
            context_id: 2,
        })
        .unwrap();
        assert_eq!(
            p.take_start(),
            Some(StartRequest {
                entry: 1,
                context_id: 2
            })
        );
    }
}
