//! The guest's panic handler: a panic is a test failure, reported in the format the host
//! matches, and then the VM powers off so the run ends at once instead of timing out.

use core::panic::PanicInfo;

use crate::{name, power_off, println};

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => println!(
            "{}: FAIL panicked: {} at {}:{}",
            name(),
            info.message(),
            at.file(),
            at.line()
        ),
        None => println!("{}: FAIL panicked: {}", name(), info.message()),
    }
    power_off()
}
