//! Drivers for the host board's devices that Veil itself uses. One file per hardware block,
//! named after it. The GIC is driven through the `arm-gic` crate (see `crate::interrupts`).

pub mod pl011;
