//! The `uart-rx` test: the PL011's receive interrupt, a level-triggered SPI.
//!
//! The guest turns on the UART's receive path and its RX interrupt (UARTIMSC.RXIM), enables
//! SPI 1 (INTID [`INTID`]) in the GIC as level-triggered, prints `irq: waiting for input` and
//! sleeps in WFI. The host types a line. Each interrupt's handler reads DR until the flag
//! register says the receive FIFO is empty; reading empties the FIFO, which clears the raw
//! RX status, which drops the line, so before it ends the interrupt the handler checks that
//! UARTRIS.RXRIS and UARTMIS read 0 and that the GIC no longer shows the interrupt pending.
//! An interrupt taken while UARTMIS reads 0 would be one delivered after its line fell.
//! Once a newline (or carriage return) arrives the guest prints the line it got.

use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use veil_guest_rt::exception::{mask_irqs, unmask_irqs};
use veil_guest_rt::gic;
use veil_guest_rt::println;
use veil_guest_rt::tally::Tally;

use crate::dispatch::{self, Entered};
use crate::timer::Timer;
use crate::wait;

/// The PL011 of QEMU `virt` and Veil's board, and its interrupt (SPI 1).
const PL011: usize = 0x0900_0000;
const INTID: u32 = 33;
const PRIORITY: u8 = 0x80;
/// How long the host has to type, in seconds.
const TIMEOUT_SECONDS: u64 = 30;

/// PL011 registers (ARM DDI 0183) and bits.
mod reg {
    pub const DR: usize = 0x000;
    pub const FR: usize = 0x018;
    pub const LCR_H: usize = 0x02C;
    pub const CR: usize = 0x030;
    pub const IMSC: usize = 0x038;
    pub const RIS: usize = 0x03C;
    pub const MIS: usize = 0x040;
    pub const ICR: usize = 0x044;
    pub const FR_RXFE: u32 = 1 << 4;
    /// LCR_H: FIFOs on, 8-bit words.
    pub const LCR_H_FEN: u32 = 1 << 4;
    pub const LCR_H_WLEN8: u32 = 0b11 << 5;
    /// CR: UART, transmitter and receiver on.
    pub const CR_UARTEN: u32 = 1 << 0;
    pub const CR_TXE: u32 = 1 << 8;
    pub const CR_RXE: u32 = 1 << 9;
    /// RX interrupt (IMSC.RXIM, RIS.RXRIS, MIS.RXMIS, ICR.RXIC).
    pub const INT_RX: u32 = 1 << 4;
    /// Every interrupt's clear bit.
    pub const ICR_ALL: u32 = 0x7FF;
}

fn read(offset: usize) -> u32 {
    // SAFETY: a PL011 register at the board's fixed address; reading DR pops the receive FIFO,
    // which only this test consumes.
    unsafe { ((PL011 + offset) as *const u32).read_volatile() }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`; the writes configure the UART the console also uses, keeping its
    // transmitter on.
    unsafe { ((PL011 + offset) as *mut u32).write_volatile(value) }
}

/// The received line, and its length.
static LINE: [AtomicU8; 128] = [const { AtomicU8::new(0) }; 128];
static LEN: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);
/// Interrupts taken while UARTMIS read 0 (the line was already down).
static WITHOUT_STATUS: AtomicU32 = AtomicU32::new(0);
/// Interrupts after whose drain RIS, MIS or the GIC still showed the interrupt; and the last
/// such reading, as `RIS | MIS << 8 | pending << 16`.
static NOT_DROPPED: AtomicU32 = AtomicU32::new(0);
static NOT_DROPPED_SEEN: AtomicU32 = AtomicU32::new(0);
static OTHER: AtomicU32 = AtomicU32::new(0);

fn bump(counter: &AtomicU32) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

fn handler(raw: u32, _entered: Entered) {
    let gic = dispatch::gic();
    if gic::intid(raw) != INTID {
        bump(&OTHER);
        gic.end(raw);
        return;
    }
    bump(&INTERRUPTS);
    if read(reg::MIS) & reg::INT_RX == 0 {
        bump(&WITHOUT_STATUS);
    }
    while read(reg::FR) & reg::FR_RXFE == 0 {
        let byte = read(reg::DR) as u8;
        let len = LEN.load(Ordering::Relaxed);
        if byte == b'\n' || byte == b'\r' {
            if len > 0 {
                DONE.store(1, Ordering::Relaxed);
            }
        } else if (len as usize) < LINE.len() {
            LINE[len as usize].store(byte, Ordering::Relaxed);
            LEN.store(len + 1, Ordering::Relaxed);
        }
    }
    let (ris, mis, pending) = (read(reg::RIS), read(reg::MIS), gic.is_pending(INTID));
    if ris & reg::INT_RX != 0 || mis != 0 || pending {
        bump(&NOT_DROPPED);
        NOT_DROPPED_SEEN.store(ris | mis << 8 | u32::from(pending) << 16, Ordering::Relaxed);
    }
    gic.end(raw);
}

/// The `uart-rx` test.
pub fn run(tally: &mut Tally) {
    let gic = dispatch::gic();
    dispatch::set_handler(handler);
    wait::use_wake_timer(Timer::Virtual);

    write(
        reg::LCR_H,
        read(reg::LCR_H) | reg::LCR_H_FEN | reg::LCR_H_WLEN8,
    );
    write(
        reg::CR,
        read(reg::CR) | reg::CR_UARTEN | reg::CR_TXE | reg::CR_RXE,
    );
    // Whatever arrived before the test does not count.
    while read(reg::FR) & reg::FR_RXFE == 0 {
        read(reg::DR);
    }
    write(reg::ICR, reg::ICR_ALL);
    gic.configure(INTID, PRIORITY, false);
    write(reg::IMSC, reg::INT_RX);
    gic.set_enabled(INTID, true);
    let (ris, pending) = (read(reg::RIS) & reg::INT_RX, gic.is_pending(INTID));
    tally.check(
        ris == 0 && !pending,
        format_args!(
            "uart-rx: RX interrupt enabled (UARTIMSC.RXIM, INTID {INTID} level) with the FIFO empty: RXRIS {ris:#x}, pending {pending}"
        ),
        format_args!("line low, nothing pending"),
    );

    println!("irq: waiting for input");
    unmask_irqs();
    let got = wait::until(
        || DONE.load(Ordering::Relaxed) != 0,
        TIMEOUT_SECONDS * wait::frequency(),
    );
    mask_irqs();
    write(reg::IMSC, 0);
    gic.set_enabled(INTID, false);

    let len = (LEN.load(Ordering::Relaxed) as usize).min(LINE.len());
    let bytes: [u8; 128] = core::array::from_fn(|i| LINE[i].load(Ordering::Relaxed));
    let text = core::str::from_utf8(&bytes[..len]).unwrap_or("<not UTF-8>");
    println!("irq: uart-rx got \"{}\"", text);
    let interrupts = INTERRUPTS.load(Ordering::Relaxed);
    tally.check(
        got && interrupts > 0,
        format_args!(
            "uart-rx: a line of {len} bytes in {interrupts} receive interrupts, each taken from WFI and drained from DR until RXFE"
        ),
        format_args!("a whole line within {TIMEOUT_SECONDS} s"),
    );
    let not_dropped = NOT_DROPPED.load(Ordering::Relaxed);
    let seen = NOT_DROPPED_SEEN.load(Ordering::Relaxed);
    tally.check(
        not_dropped == 0,
        format_args!(
            "uart-rx: {not_dropped} interrupts still showed after the drain (last: RIS {:#x}, MIS {:#x}, GIC pending {})",
            seen & 0xFF,
            (seen >> 8) & 0xFF,
            seen >> 16 != 0
        ),
        format_args!("none: an empty FIFO clears RXRIS, and the level line drops"),
    );
    let without = WITHOUT_STATUS.load(Ordering::Relaxed);
    tally.check(
        without == 0,
        format_args!("uart-rx: {without} interrupts taken while UARTMIS read 0"),
        format_args!("none: a fallen level is not delivered"),
    );
    let other = OTHER.load(Ordering::Relaxed);
    tally.check(
        other == 0,
        format_args!("uart-rx: {other} other interrupts"),
        format_args!("none"),
    );
}
