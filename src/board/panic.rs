//! What happens when Veil itself fails: a readable report on the console, then power-off with
//! the "Veil panicked" status. Guests' faults never come here; they stop only their VM.

use super::power::{ExitStatus, power_off};

/// The panic handler's body.
pub fn hypervisor_panic(info: &core::panic::PanicInfo) -> ! {
    super::console::enter_panic_mode();
    let cpu = crate::cpu::current_index();
    match info.location() {
        Some(loc) => crate::println!(
            "\nveil[{cpu}] PANIC at {}:{}: {}",
            loc.file(),
            loc.line(),
            info.message()
        ),
        None => crate::println!("\nveil[{cpu}] PANIC: {}", info.message()),
    }
    power_off(ExitStatus::VeilPanic)
}
