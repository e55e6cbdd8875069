//! ARM PrimeCell UART (PL011), the host console.
//!
//! Veil only transmits: the firmware (or QEMU) has already set the baud rate, and guests get
//! their own emulated PL011 (`crate::devices::pl011`), never this one. Register names follow the
//! PL011 Technical Reference Manual (ARM DDI 0183).

use tock_registers::{
    interfaces::{Readable, Writeable},
    register_bitfields, register_structs,
    registers::{ReadOnly, ReadWrite},
};

register_bitfields! {u32,
    /// Flag Register.
    FR [
        /// Transmit FIFO full: wait before writing DR.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    /// Interrupt Mask Set/Clear Register.
    IMSC [
        /// Receive timeout interrupt.
        RTIM OFFSET(6) NUMBITS(1) [],
        /// Receive interrupt.
        RXIM OFFSET(4) NUMBITS(1) []
    ],
    /// Control Register.
    CR [
        RXE OFFSET(9) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) []
    ]
}

register_structs! {
    #[allow(non_snake_case)]
    pub Pl011Registers {
        (0x00 => DR: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x18 => FR: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x30 => CR: ReadWrite<u32, CR::Register>),
        (0x34 => _reserved2),
        (0x38 => IMSC: ReadWrite<u32, IMSC::Register>),
        (0x3c => _reserved3),
        (0x44 => ICR: ReadWrite<u32>),
        (0x48 => @END),
    }
}

/// A PL011 at a fixed physical address (Veil's EL2 mapping is an identity map).
pub struct Pl011 {
    base: usize,
}

impl Pl011 {
    /// # Safety
    /// `base` must be the address of a PL011's register block, mapped as device memory (or the
    /// MMU off), and no one else may drive that UART's transmitter concurrently.
    pub const unsafe fn new(base: usize) -> Self {
        Pl011 { base }
    }

    fn regs(&self) -> &Pl011Registers {
        // SAFETY: `new`'s contract: base points to a live PL011 register block.
        unsafe { &*(self.base as *const Pl011Registers) }
    }

    /// Makes sure the transmitter is on. The firmware's baud rate is kept.
    pub fn enable_tx(&self) {
        let cr = self.regs().CR.extract();
        if !cr.is_set(CR::UARTEN) || !cr.is_set(CR::TXE) {
            self.regs()
                .CR
                .write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
        }
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    pub fn put_byte(&self, byte: u8) {
        while self.regs().FR.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.regs().DR.set(byte as u32);
    }

    /// Sends a string, turning `\n` into `\r\n` for terminals.
    pub fn write_str(&self, s: &str) {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.put_byte(b'\r');
            }
            self.put_byte(byte);
        }
    }

    /// A received byte, if one is waiting.
    pub fn read_byte(&self) -> Option<u8> {
        if self.regs().FR.is_set(FR::RXFE) {
            None
        } else {
            Some(self.regs().DR.get() as u8)
        }
    }

    /// Clears every pending interrupt condition (ICR).
    pub fn clear_interrupts(&self) {
        self.regs().ICR.set(0x7ff);
    }

    /// Whether input raises the UART's interrupt (receive and receive-timeout), so typed
    /// characters wake Veil even when every CPU is idle.
    pub fn set_rx_interrupt(&self, enabled: bool) {
        if enabled {
            self.regs().IMSC.write(IMSC::RXIM::SET + IMSC::RTIM::SET);
        } else {
            self.regs().IMSC.set(0);
        }
    }

    /// Waits until every queued byte has left the UART (before power-off).
    pub fn flush(&self) {
        while self.regs().FR.is_set(FR::BUSY) {
            core::hint::spin_loop();
        }
    }
}
