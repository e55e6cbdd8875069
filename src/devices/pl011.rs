//! The guest's UART: an emulated ARM PL011 (ARM DDI 0183) at the virtual board's 0x0900_0000.
//!
//! Enough of the register file for Linux's `amba-pl011` driver and `earlycon=pl011`: data,
//! flags, the line and baud registers (stored, no effect), interrupt mask/status, and the
//! PrimeCell identification registers AMBA probing reads. Transmitted bytes go to a
//! [`ConsoleSink`]; received bytes come from [`VirtualPl011::push_input`].

use super::{IrqLine, MmioDevice, MmioError};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

/// Register offsets (PL011 TRM, table 3-1).
mod reg {
    pub const DR: u64 = 0x000;
    pub const RSR_ECR: u64 = 0x004;
    pub const FR: u64 = 0x018;
    pub const ILPR: u64 = 0x020;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02c;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
    pub const PERIPH_ID0: u64 = 0xfe0;
}

/// FR bits.
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const FR_RXFF: u32 = 1 << 6;
const FR_TXFE: u32 = 1 << 7;
/// RIS/IMSC bits: receive and transmit interrupts.
const INT_RX: u32 = 1 << 4;
const INT_TX: u32 = 1 << 5;
/// PeriphID0-3 then PCellID0-3, as a PL011 r1p5 reports them (QEMU reports the same).
const ID_BYTES: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
/// The receive FIFO depth of a PL011.
const RX_FIFO_DEPTH: usize = 32;
/// A partial line is flushed once it is this long, so output never waits forever.
const LINE_MAX: usize = 256;

/// UARTFR for a receive FIFO holding `queued` bytes. TXFF is never set: output leaves at
/// once, so the transmit FIFO is always empty (TXFE).
const fn flags_for(queued: usize) -> u32 {
    let _ = FR_TXFF;
    let mut fr = FR_TXFE;
    if queued == 0 {
        fr |= FR_RXFE;
    }
    if queued >= RX_FIFO_DEPTH {
        fr |= FR_RXFF;
    }
    fr
}

/// Where a virtual UART's output goes.
pub trait ConsoleSink: Send + Sync {
    fn write(&self, bytes: &[u8]);
}

struct State {
    rx: VecDeque<u8>,
    line: Vec<u8>,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    ris: u32,
    dmacr: u32,
    ilpr: u32,
    /// The level last given to the interrupt line.
    irq_level: bool,
}

impl State {
    /// The registers at reset (PL011 TRM, 3.3), with `rx` waiting to be read and `line`
    /// waiting to be sent.
    fn at_reset(rx: VecDeque<u8>, line: Vec<u8>) -> State {
        // The transmit FIFO is always empty, so its interrupt is always raised.
        let ris = if rx.is_empty() {
            INT_TX
        } else {
            INT_TX | INT_RX
        };
        State {
            rx,
            line,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            // Reset value: TXE and RXE set, UART disabled (TRM 3.3.8).
            cr: 0x300,
            ifls: 0x12,
            imsc: 0,
            ris,
            dmacr: 0,
            ilpr: 0,
            irq_level: false,
        }
    }
}

/// One guest's PL011.
pub struct VirtualPl011<S: ConsoleSink> {
    state: Mutex<State>,
    /// UARTFR as it stands, rewritten under the lock whenever the receive FIFO changes: the
    /// register drivers poll around every byte they send, answered without the lock (reading
    /// it has no side effect).
    flags: AtomicU32,
    sink: S,
    /// Collect output into whole lines before handing it to the sink (several VMs share one
    /// console); otherwise every byte goes out at once (an interactive shell's prompt).
    line_buffered: bool,
    /// UARTINTR, the combined interrupt output (RIS & IMSC), if wired.
    irq: Option<Box<dyn IrqLine>>,
    /// Called (without the UART's lock) when the guest has emptied the receive FIFO, so that
    /// whoever feeds it can send more: input is never read from its source faster than the
    /// guest takes it, and so never dropped here.
    rx_drained: Option<Box<dyn Fn() + Send + Sync>>,
}

impl<S: ConsoleSink> VirtualPl011<S> {
    pub fn new(sink: S, line_buffered: bool) -> Self {
        Self::with_irq(sink, line_buffered, None)
    }

    /// A PL011 whose combined interrupt drives `irq`.
    pub fn with_irq(sink: S, line_buffered: bool, irq: Option<Box<dyn IrqLine>>) -> Self {
        VirtualPl011 {
            state: Mutex::new(State::at_reset(VecDeque::new(), Vec::new())),
            flags: AtomicU32::new(flags_for(0)),
            sink,
            line_buffered,
            irq,
            rx_drained: None,
        }
    }

    /// Sets the hook called when the guest empties the receive FIFO.
    pub fn on_rx_drained(mut self, hook: Box<dyn Fn() + Send + Sync>) -> Self {
        self.rx_drained = Some(hook);
        self
    }

    /// The registers whose 32-bit reads a cell answers (`devices::read_cells`): UARTFR.
    pub fn published(&self) -> impl Iterator<Item = (u64, &AtomicU32)> {
        [(reg::FR, &self.flags)].into_iter()
    }

    /// Back to the reset state (the VM restarts): registers as the TRM gives them, the
    /// interrupt line low without telling it (the VM's vGIC is reset too). Bytes waiting in
    /// the receive FIFO stay: what was typed during a reboot is not lost.
    pub fn reset(&self) {
        let mut s = self.state.lock();
        let rx = core::mem::take(&mut s.rx);
        let line = core::mem::take(&mut s.line);
        *s = State::at_reset(rx, line);
    }

    /// Whether the receive FIFO can take `bytes` more bytes.
    pub fn rx_has_room_for(&self, bytes: usize) -> bool {
        self.state.lock().rx.len() + bytes <= RX_FIFO_DEPTH
    }

    /// Tells the interrupt line about a change of RIS & IMSC.
    fn update_line(&self, s: &mut State) {
        let level = s.ris & s.imsc != 0;
        if level != s.irq_level {
            s.irq_level = level;
            if let Some(irq) = &self.irq {
                irq.set_level(level);
            }
        }
    }

    /// Queues a received byte; dropped when the FIFO is full, as the hardware would.
    pub fn push_input(&self, byte: u8) {
        let mut s = self.state.lock();
        if s.rx.len() < RX_FIFO_DEPTH {
            s.rx.push_back(byte);
            self.flags.store(flags_for(s.rx.len()), Ordering::Relaxed);
            s.ris |= INT_RX;
            self.update_line(&mut s);
        }
    }

    /// Whether the UART's interrupt line is raised (RIS & IMSC).
    pub fn interrupt_pending(&self) -> bool {
        let s = self.state.lock();
        s.ris & s.imsc != 0
    }

    fn transmit(&self, s: &mut State, byte: u8) {
        if !self.line_buffered {
            self.sink.write(&[byte]);
            return;
        }
        s.line.push(byte);
        if byte == b'\n' || s.line.len() >= LINE_MAX {
            self.sink.write(&s.line);
            s.line.clear();
        }
    }
}

impl<S: ConsoleSink> MmioDevice for VirtualPl011<S> {
    fn name(&self) -> &'static str {
        "pl011"
    }

    fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        if size > 4 || offset & (size as u64).wrapping_sub(1) != 0 {
            return Err(MmioError::BadAccess);
        }
        if offset == reg::FR {
            return Ok(u64::from(self.flags.load(Ordering::Relaxed)));
        }
        let mut s = self.state.lock();
        let value = match offset {
            reg::DR => {
                let had_input = !s.rx.is_empty();
                let byte = s.rx.pop_front().unwrap_or(0);
                self.flags.store(flags_for(s.rx.len()), Ordering::Relaxed);
                if had_input && s.rx.is_empty() {
                    s.ris &= !INT_RX;
                    self.update_line(&mut s);
                    drop(s);
                    if let Some(hook) = &self.rx_drained {
                        hook();
                    }
                    return Ok(byte as u64);
                }
                byte as u32
            }
            reg::RSR_ECR => 0,
            reg::ILPR => s.ilpr,
            reg::IBRD => s.ibrd,
            reg::FBRD => s.fbrd,
            reg::LCR_H => s.lcr_h,
            reg::CR => s.cr,
            reg::IFLS => s.ifls,
            reg::IMSC => s.imsc,
            reg::RIS => s.ris,
            reg::MIS => s.ris & s.imsc,
            reg::ICR => 0,
            reg::DMACR => s.dmacr,
            o if (reg::PERIPH_ID0..0x1000).contains(&o) && o % 4 == 0 => {
                ID_BYTES[((o - reg::PERIPH_ID0) / 4) as usize]
            }
            _ => return Err(MmioError::BadAccess),
        };
        Ok(value as u64)
    }

    fn write(&self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        if size > 4 || offset & (size as u64).wrapping_sub(1) != 0 {
            return Err(MmioError::BadAccess);
        }
        let value = value as u32;
        let mut s = self.state.lock();
        match offset {
            reg::DR => self.transmit(&mut s, value as u8),
            reg::RSR_ECR => {}
            reg::ILPR => s.ilpr = value & 0xff,
            reg::IBRD => s.ibrd = value & 0xffff,
            reg::FBRD => s.fbrd = value & 0x3f,
            reg::LCR_H => s.lcr_h = value & 0xff,
            reg::CR => s.cr = value & 0xff87,
            reg::IFLS => s.ifls = value & 0x3f,
            reg::IMSC => s.imsc = value & 0x7ff,
            reg::ICR => {
                // The transmit interrupt cannot be cleared while the FIFO stays empty.
                s.ris &= !(value & 0x7ff);
                s.ris |= INT_TX;
                if !s.rx.is_empty() {
                    s.ris |= INT_RX;
                }
            }
            reg::DMACR => s.dmacr = value & 0x7,
            // FR, RIS, MIS and the ID registers are read-only: writes are ignored, as on the
            // real part.
            reg::FR | reg::RIS | reg::MIS => {}
            o if (reg::PERIPH_ID0..0x1000).contains(&o) => {}
            _ => return Err(MmioError::BadAccess),
        }
        self.update_line(&mut s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::sync::{Arc, Mutex as StdMutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<StdMutex<Vec<Vec<u8>>>>);
    impl ConsoleSink for Capture {
        fn write(&self, bytes: &[u8]) {
            self.0.lock().unwrap().push(bytes.to_vec());
        }
    }

    #[test]
    fn unbuffered_output_goes_byte_by_byte() {
        let cap = Capture::default();
        let uart = VirtualPl011::new(cap.clone(), false);
        for b in b"hi\n" {
            uart.write(reg::DR, 4, *b as u64).unwrap();
        }
        assert_eq!(
            *cap.0.lock().unwrap(),
            vec![b"h".to_vec(), b"i".to_vec(), b"\n".to_vec()]
        );
    }

    #[test]
    fn line_buffered_output_waits_for_newline_or_length() {
        let cap = Capture::default();
        let uart = VirtualPl011::new(cap.clone(), true);
        for b in b"ab" {
            uart.write(reg::DR, 1, *b as u64).unwrap();
        }
        assert!(cap.0.lock().unwrap().is_empty());
        uart.write(reg::DR, 4, b'\n' as u64).unwrap();
        assert_eq!(*cap.0.lock().unwrap(), vec![b"ab\n".to_vec()]);
        for _ in 0..LINE_MAX {
            uart.write(reg::DR, 4, b'x' as u64).unwrap();
        }
        assert_eq!(cap.0.lock().unwrap()[1].len(), LINE_MAX);
    }

    #[test]
    fn reset_keeps_typed_input_but_not_the_setup() {
        let lines = Line::default();
        let uart = VirtualPl011::with_irq(Capture::default(), false, Some(Box::new(lines.clone())));
        uart.write(reg::CR, 4, 0x301).unwrap();
        uart.write(reg::IMSC, 4, INT_RX as u64).unwrap();
        uart.push_input(b'r');
        assert!(uart.interrupt_pending());
        uart.reset();
        assert_eq!(uart.read(reg::CR, 4).unwrap(), 0x300);
        assert_eq!(uart.read(reg::IMSC, 4).unwrap(), 0);
        assert!(!uart.interrupt_pending());
        assert_eq!(uart.read(reg::RIS, 4).unwrap() as u32, INT_TX | INT_RX);
        // The line is low again without a call (the vGIC is reset with it); unmasking raises it.
        let calls = lines.0.lock().unwrap().len();
        uart.write(reg::IMSC, 4, INT_RX as u64).unwrap();
        assert_eq!(lines.0.lock().unwrap().len(), calls + 1);
        assert_eq!(uart.read(reg::DR, 4).unwrap(), b'r' as u64);
    }

    #[test]
    fn flags_and_receive() {
        let uart = VirtualPl011::new(Capture::default(), false);
        assert_eq!(uart.read(reg::FR, 4).unwrap() as u32, FR_TXFE | FR_RXFE);
        uart.push_input(b'x');
        assert_eq!(uart.read(reg::FR, 4).unwrap() as u32, FR_TXFE);
        uart.write(reg::IMSC, 4, INT_RX as u64).unwrap();
        assert!(uart.interrupt_pending());
        assert_eq!(uart.read(reg::DR, 4).unwrap(), b'x' as u64);
        assert!(!uart.interrupt_pending());
        assert_eq!(uart.read(reg::DR, 4).unwrap(), 0);
        for i in 0..100 {
            uart.push_input(i);
        }
        assert_eq!(uart.read(reg::FR, 4).unwrap() as u32 & FR_RXFF, FR_RXFF);
    }

    #[derive(Clone, Default)]
    struct Line(Arc<StdMutex<Vec<bool>>>);
    impl IrqLine for Line {
        fn set_level(&self, level: bool) {
            self.0.lock().unwrap().push(level);
        }
    }

    #[test]
    fn interrupt_line_follows_ris_and_imsc() {
        let line = Line::default();
        let uart = VirtualPl011::with_irq(Capture::default(), false, Some(Box::new(line.clone())));
        // Enabling the TX interrupt raises the line at once: the FIFO is always empty.
        uart.write(reg::IMSC, 4, INT_TX as u64).unwrap();
        uart.write(reg::DR, 4, b'a' as u64).unwrap();
        uart.write(reg::IMSC, 4, INT_RX as u64).unwrap();
        uart.push_input(b'z');
        assert_eq!(uart.read(reg::DR, 4).unwrap(), b'z' as u64);
        // Only changes are reported.
        assert_eq!(*line.0.lock().unwrap(), vec![true, false, true, false]);
    }

    #[test]
    fn drained_hook_runs_when_the_fifo_empties() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let uart = VirtualPl011::new(Capture::default(), false).on_rx_drained(Box::new(|| {
            CALLS.fetch_add(1, Ordering::SeqCst);
        }));
        uart.push_input(1);
        uart.push_input(2);
        assert!(uart.rx_has_room_for(1));
        uart.read(reg::DR, 4).unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst), 0);
        uart.read(reg::DR, 4).unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        uart.read(reg::DR, 4).unwrap();
        assert_eq!(
            CALLS.load(Ordering::SeqCst),
            1,
            "reading an empty FIFO is no news"
        );
        for i in 0..RX_FIFO_DEPTH {
            uart.push_input(i as u8);
        }
        assert!(!uart.rx_has_room_for(1));
        uart.read(reg::DR, 4).unwrap();
        assert!(uart.rx_has_room_for(1));
        assert!(!uart.rx_has_room_for(2));
    }

    #[test]
    fn identification_registers() {
        let uart = VirtualPl011::new(Capture::default(), false);
        let ids: Vec<u64> = (0..8)
            .map(|i| uart.read(0xfe0 + 4 * i, 4).unwrap())
            .collect();
        assert_eq!(ids, vec![0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    }

    #[test]
    fn registers_hold_values_and_bad_accesses_fail() {
        let uart = VirtualPl011::new(Capture::default(), false);
        uart.write(reg::IBRD, 4, 0x1_0027).unwrap();
        assert_eq!(uart.read(reg::IBRD, 4).unwrap(), 0x27);
        uart.write(reg::CR, 2, 0x301).unwrap();
        assert_eq!(uart.read(reg::CR, 4).unwrap(), 0x301);
        uart.write(reg::ICR, 4, 0x7ff).unwrap();
        assert_eq!(uart.read(reg::RIS, 4).unwrap() as u32, INT_TX);
        assert_eq!(uart.read(reg::DR, 8), Err(MmioError::BadAccess));
        assert_eq!(uart.read(0x2, 4), Err(MmioError::BadAccess));
        assert_eq!(uart.read(0x800, 4), Err(MmioError::BadAccess));
        assert_eq!(uart.write(0x900, 4, 0), Err(MmioError::BadAccess));
        // Writes to read-only registers are ignored.
        uart.write(reg::FR, 4, 0).unwrap();
        assert_eq!(uart.read(reg::FR, 4).unwrap() as u32, FR_TXFE | FR_RXFE);
    }
}
