//! Physical interrupts as Veil sees them.
//!
//! HCR_EL2.IMO/FMO route every physical IRQ and FIQ to EL2. Until the virtual GIC is in place
//! Veil enables none at the distributor, so an interrupt exit means a device the firmware left
//! enabled; it is logged and the guest resumes.

use crate::traps::Exit;

/// Handles an IRQ or FIQ exit.
pub fn handle_physical_interrupt() -> Exit {
    log::debug!("physical interrupt while a guest ran");
    Exit::Resume
}
