//! Physical interrupts: the host GIC as Veil uses it, and what an interrupt exit does.
//!
//! HCR_EL2.IMO/FMO route every physical IRQ and FIQ to EL2. Veil itself runs with interrupts
//! masked; it sees an interrupt either as a guest exit or, when idle, by polling after WFE.
//! Veil uses software-generated interrupts between its own CPUs:
//! - [`SGI_KICK`]: "look at your vCPU's state" (its VM ended, a CPU_ON request arrived).

#[cfg(target_arch = "aarch64")]
#[path = "_arch/aarch64/gic.rs"]
pub mod gic;
#[cfg(target_arch = "aarch64")]
#[path = "_arch/aarch64/vgic_hw.rs"]
pub mod vgic_hw;

use crate::traps::Exit;

/// The SGI one CPU sends another to make it re-check its work.
pub const SGI_KICK: u32 = 1;
/// Every SGI Veil enables.
pub const SGI_ALL: [u32; 1] = [SGI_KICK];

/// Sets up the distributor (boot CPU, once).
pub fn init(platform: &crate::board::discovery::Platform) {
    #[cfg(target_arch = "aarch64")]
    if let Some(info) = &platform.gic {
        if info.version == crate::board::discovery::GicVersion::V2 {
            gic::set_v2_gicd_base(info.distributor.base);
        }
        gic::init(info, platform.cpus.len());
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = platform;
}

/// Sets up this CPU's interface.
pub fn init_this_cpu(index: usize) {
    #[cfg(target_arch = "aarch64")]
    gic::init_this_cpu(index);
    #[cfg(not(target_arch = "aarch64"))]
    let _ = index;
}

/// Makes CPU `cpu` (MPIDR `mpidr`) look at its work again.
pub fn kick(cpu: usize, mpidr: u64) {
    #[cfg(target_arch = "aarch64")]
    gic::send_sgi(SGI_KICK, cpu, mpidr);
    #[cfg(not(target_arch = "aarch64"))]
    let _ = (cpu, mpidr);
}

/// Takes every pending physical interrupt of this CPU. A kick needs no action of its own: the
/// caller re-checks its state after this returns.
pub fn handle_pending() {
    #[cfg(target_arch = "aarch64")]
    while let Some(intid) = gic::acknowledge() {
        if intid >= 1020 {
            break;
        }
        if intid != SGI_KICK {
            log::debug!("physical interrupt {intid} with no owner");
        }
        gic::end(intid);
    }
}

/// Handles an IRQ or FIQ exit.
pub fn handle_physical_interrupt() -> Exit {
    handle_pending();
    Exit::Resume
}
