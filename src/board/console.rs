//! The host console: one UART shared by Veil's log and every guest's output.
//!
//! Before the MMU is on, exclusive loads and stores (and so locks) may not work on real cores,
//! so early output goes straight to the UART named in the board file, unlocked and from the boot
//! CPU only. Once the EL2 MMU is on, [`init`] switches to the UART the DTB names, behind a lock
//! that keeps lines whole when several CPUs print.

use super::drivers::pl011::Pl011;
use super::input_switch::{InputSwitch, Typed};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use spin::Mutex;

/// The console UART's base address once [`init`] ran; 0 before.
static CONSOLE_BASE: AtomicUsize = AtomicUsize::new(0);
static CONSOLE_LOCK: Mutex<()> = Mutex::new(());
/// Set by the panic path: from then on every writer bypasses the lock.
static PANICKING: AtomicBool = AtomicBool::new(false);

struct Writer(Pl011);

impl Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_str(s);
        Ok(())
    }
}

fn uart() -> Pl011 {
    let base = match CONSOLE_BASE.load(Ordering::Acquire) {
        0 => super::facts::EARLY_UART_BASE as usize,
        base => base,
    };
    // SAFETY: either the board file's early UART (MMU off: device memory) or the DTB's UART,
    // which memory::el2 maps as device memory before `init` publishes it. Concurrent writers are
    // serialized by CONSOLE_LOCK except on the panic path, where interleaving is acceptable.
    unsafe { Pl011::new(base) }
}

/// Switches the console to the DTB's UART. Call after the EL2 MMU maps it as device memory.
pub fn init(base: u64) {
    CONSOLE_BASE.store(base as usize, Ordering::Release);
    uart().enable_tx();
}

/// Whether [`init`] ran, i.e. locks may be used.
fn locked_mode() -> bool {
    CONSOLE_BASE.load(Ordering::Acquire) != 0 && !PANICKING.load(Ordering::Relaxed)
}

/// Prints formatted text, whole, to the console.
pub fn print(args: fmt::Arguments) {
    if locked_mode() {
        let _guard = CONSOLE_LOCK.lock();
        let _ = Writer(uart()).write_fmt(args);
    } else {
        let _ = Writer(uart()).write_fmt(args);
    }
}

/// Prints raw bytes from a guest (already line-assembled by its virtual UART).
pub fn write_bytes(prefix: &str, bytes: &[u8]) {
    let write = |u: &Pl011| {
        // Guests' bytes go out as they are: a guest's tty already turns "\n" into "\r\n".
        u.write_str(prefix);
        for &b in bytes {
            u.put_byte(b);
        }
    };
    if locked_mode() {
        let _guard = CONSOLE_LOCK.lock();
        write(&uart());
    } else {
        write(&uart());
    }
}

/// Waits until the UART has sent everything (before the machine powers off).
pub fn flush() {
    uart().flush();
}

/// From now on, print without taking the lock: the holder may be the CPU that panicked.
pub fn enter_panic_mode() {
    PANICKING.store(true, Ordering::Relaxed);
}

/// `print!` to the host console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::board::console::print(format_args!($($arg)*)) };
}

/// `println!` to the host console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::board::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Lets console input raise the UART's interrupt (once the GIC routes it to Veil).
pub fn enable_input() {
    if CONSOLE_BASE.load(Ordering::Acquire) != 0 {
        uart().clear_interrupts();
        uart().set_rx_interrupt(true);
    }
}

/// Where typed input goes: the escape sequence's state and the VM that receives input now.
struct InputRoute {
    switch: InputSwitch,
    target: usize,
}

/// Serializes [`forward_input`], which the host UART's interrupt (on the boot CPU) and every
/// VM's UART (on whichever CPU its guest drains it) call.
static INPUT: Mutex<InputRoute> = Mutex::new(InputRoute {
    switch: InputSwitch::new(),
    target: 0,
});

/// Moves bytes typed on the host console to the UART of the VM input goes to (VM 0 at first;
/// Ctrl-] and a digit switch when several VMs run, see `board::input_switch`), as many as its
/// receive FIFO takes. The rest wait in the host UART, whose interrupt is masked meanwhile; a
/// VM's UART calls this again once its guest has drained its FIFO.
pub fn forward_input() {
    let uart = uart();
    let mut route = INPUT.lock();
    let several = crate::vm::registry::count() > 1;
    loop {
        let Some(vm) = crate::vm::registry::get(route.target) else {
            // Nobody to take it (no VMs at all): what is typed goes nowhere.
            while uart.read_byte().is_some() {}
            break;
        };
        // One byte may become two (an escape passed on): room for both before reading.
        if !vm.uart.rx_has_room_for(2) {
            uart.set_rx_interrupt(false);
            return;
        }
        let Some(byte) = uart.read_byte() else { break };
        if !several {
            vm.uart.push_input(byte);
            continue;
        }
        match route.switch.feed(byte) {
            Typed::SwitchTo(n) => match crate::vm::registry::get(n) {
                Some(next) => {
                    route.target = n;
                    log::info!("console input now goes to VM {n} \"{}\"", next.name);
                }
                None => log::warn!(
                    "console input: there is no VM {n}; it stays with VM {}",
                    route.target
                ),
            },
            typed => {
                for &b in typed.bytes() {
                    vm.uart.push_input(b);
                }
            }
        }
    }
    uart.set_rx_interrupt(true);
}
