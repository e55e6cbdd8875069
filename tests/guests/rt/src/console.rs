//! The guest's console: the board's PL011 UART at 0x0900_0000, transmit only.
//!
//! Only the data register (DR) is written, after polling the flag register (FR) until the
//! transmit FIFO has room: that is all a hypervisor's emulated or passed-through PL011 must
//! support for test output, and QEMU's PL011 needs no set-up before it transmits. Lines end in
//! CR LF so that an interactive terminal shows them as lines too.
//!
//! There is no lock: vCPUs that print at the same time interleave their characters. Tests that
//! run several vCPUs let one of them speak at a time.

use core::fmt;

/// Base address of the PL011 on the guest's board (the QEMU `virt` layout).
const PL011_BASE: usize = 0x0900_0000;
/// Data register: a write transmits its low 8 bits.
const UARTDR: usize = 0x000;
/// Flag register.
const UARTFR: usize = 0x018;
/// UARTFR.TXFF: the transmit FIFO is full.
const UARTFR_TXFF: u32 = 1 << 5;

/// The PL011 as a [`fmt::Write`] sink; it holds no state, so any number of them may exist.
pub struct Console;

impl Console {
    fn write_byte(&mut self, byte: u8) {
        let fr = (PL011_BASE + UARTFR) as *const u32;
        let dr = (PL011_BASE + UARTDR) as *mut u32;
        // SAFETY: FR and DR are 32-bit registers of the PL011 that the board places at
        // PL011_BASE; the guest runs with the MMU off, so these addresses reach the device, and
        // reading FR or writing DR has no effect on memory that Rust code owns.
        unsafe {
            while fr.read_volatile() & UARTFR_TXFF != 0 {
                core::hint::spin_loop();
            }
            dr.write_volatile(u32::from(byte));
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}

/// Backs [`print!`](crate::print) and [`println!`](crate::println); not for direct use.
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Console::write_str never fails; an Err could only come from a Display impl, and then the
    // partial line already on the wire is all there is to show.
    let _ = fmt::Write::write_fmt(&mut Console, args);
}

/// Prints to the guest's console, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*))
    };
}

/// Prints a line to the guest's console, like `std::println!`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::print!("\n")
    };
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    };
}
