//! The names of the benchmark operations, in the order the guest measures and prints them.
//!
//! Both ends of the guest's output contract need this list: the bench guest runs the
//! operations in this order, and `cargo xtask bench` recognises the guest's lines by these
//! names and lays its table out in this order. So it is written once, here, and xtask compiles
//! this file as a module of its own (`#[path]` in xtask/src/bench.rs). It must stay plain
//! `core` Rust with no `use`, so that it builds both in the no_std guest and on the host.

/// Every operation, in output order.
pub const OPS: [&str; 11] = [
    "boot",
    "null_hvc",
    "psci_version",
    "sysreg_trap",
    "gicd_read",
    "pl011_read",
    "pl011_write",
    "vtimer_latency",
    "virtual_eoi",
    "ipi_roundtrip",
    "vm_switch",
];
