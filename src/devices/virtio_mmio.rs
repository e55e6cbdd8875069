//! Empty virtio-mmio transport slots: what a guest finds at the virtual board's
//! 0x0a00_0000 + 0x200 * n where no virtio device is plugged in.
//!
//! QEMU's `virt` board describes 32 virtio-mmio slots in its device tree whether or not a
//! device sits behind them, and Linux's `virtio_mmio` driver probes each one: it checks
//! MagicValue and Version, then reads DeviceID and quietly gives up on the slot when that
//! is 0 ("no device"). An empty slot must answer those reads; every other register reads as
//! zero and ignores writes.
//!
//! Register layout: virtio 1.x, section 4.2.2 "MMIO Device Register Layout".
//!
//! **Version 2.** The slot reports the modern (virtio 1.x) transport, not the legacy
//! version 1 that QEMU's empty slots report by default (`force-legacy=on`): the spec's
//! normative text requires a device to return 2, Linux accepts either for an empty slot,
//! and the devices Veil will later put in these slots will be modern ones, so a slot keeps
//! its version when it is filled.
//!
//! **One model, any number of slots.** Offsets are taken modulo the slot size, so a single
//! [`EmptyVirtioMmio`] may be placed over one slot or over a run of adjacent empty slots
//! (all 32 in one bus region). When a real device takes a slot, the run is split around it.

use super::{MmioDevice, MmioError};

/// Register offsets within a slot (virtio 1.x, 4.2.2).
mod reg {
    /// "virt" in little-endian ASCII.
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    /// Device-specific configuration space starts here and runs to the end of the slot.
    pub const CONFIG: u64 = 0x100;
}

/// MagicValue: the bytes "virt".
pub const MAGIC: u32 = 0x7472_6976;
/// Version: the virtio 1.x (non-legacy) MMIO transport.
pub const VERSION: u32 = 2;
/// DeviceID 0 is reserved to mean "no device here".
pub const NO_DEVICE: u32 = 0;
/// VendorID: "QEMU" in little-endian ASCII, as QEMU's transports report; guests that key
/// quirks on it see the board they expect.
pub const VENDOR_QEMU: u32 = 0x554d_4551;
/// The size of one transport slot on the virtual board.
pub const SLOT_SIZE: u64 = 0x200;

/// One or more adjacent empty virtio-mmio slots.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyVirtioMmio;

impl EmptyVirtioMmio {
    pub const fn new() -> Self {
        EmptyVirtioMmio
    }
}

/// Whether an access of `size` bytes at slot offset `offset` is one the spec allows:
/// 32-bit aligned words for the control registers; for the configuration space, any
/// naturally aligned 1, 2, 4 or 8 bytes (drivers read config fields at their own width).
fn valid(offset: u64, size: u8) -> bool {
    if offset < reg::CONFIG {
        size == 4 && offset.is_multiple_of(4)
    } else {
        matches!(size, 1 | 2 | 4 | 8) && offset.is_multiple_of(size as u64)
    }
}

impl MmioDevice for EmptyVirtioMmio {
    fn name(&self) -> &'static str {
        "virtio-mmio (empty)"
    }

    fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        let offset = offset % SLOT_SIZE;
        if !valid(offset, size) {
            return Err(MmioError::BadAccess);
        }
        let value = match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => NO_DEVICE,
            reg::VENDOR_ID => VENDOR_QEMU,
            // Features, queues, status, interrupts and config space: nothing is there.
            _ => 0,
        };
        Ok(value as u64)
    }

    fn write(&self, offset: u64, size: u8, _value: u64) -> Result<(), MmioError> {
        // Nothing to configure: a driver that ignores DeviceID 0 and writes Status or queue
        // registers anyway changes nothing.
        if valid(offset % SLOT_SIZE, size) {
            Ok(())
        } else {
            Err(MmioError::BadAccess)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sees_an_empty_modern_slot() {
        let dev = EmptyVirtioMmio::new();
        assert_eq!(dev.read(0x000, 4), Ok(0x7472_6976));
        assert_eq!(&(dev.read(0, 4).unwrap() as u32).to_le_bytes(), b"virt");
        assert_eq!(dev.read(0x004, 4), Ok(2));
        assert_eq!(dev.read(0x008, 4), Ok(0));
        assert_eq!(&(dev.read(0x00c, 4).unwrap() as u32).to_le_bytes(), b"QEMU");
    }

    #[test]
    fn one_instance_serves_every_slot() {
        let dev = EmptyVirtioMmio::new();
        for slot in 0..32u64 {
            let base = slot * SLOT_SIZE;
            assert_eq!(dev.read(base, 4), Ok(MAGIC as u64));
            assert_eq!(dev.read(base + 4, 4), Ok(2));
            assert_eq!(dev.read(base + 8, 4), Ok(0));
            assert_eq!(dev.read(base + 0x70, 4), Ok(0));
        }
    }

    #[test]
    fn everything_else_reads_zero_and_ignores_writes() {
        let dev = EmptyVirtioMmio::new();
        // Status, QueueNumMax, InterruptStatus, ConfigGeneration.
        for offset in [0x070, 0x034, 0x060, 0x0fc, 0x010] {
            dev.write(offset, 4, 0xffff_ffff).unwrap();
            assert_eq!(dev.read(offset, 4), Ok(0));
        }
        // Writes to the identification registers change nothing either.
        dev.write(0x008, 4, 1).unwrap();
        assert_eq!(dev.read(0x008, 4), Ok(0));
    }

    #[test]
    fn access_widths() {
        let dev = EmptyVirtioMmio::new();
        // Control registers: aligned words only.
        for size in [1, 2, 8] {
            assert_eq!(dev.read(0x000, size), Err(MmioError::BadAccess));
            assert_eq!(dev.write(0x070, size, 0), Err(MmioError::BadAccess));
        }
        assert_eq!(dev.read(0x002, 4), Err(MmioError::BadAccess));
        // Config space: any natural width, read as zero.
        for (offset, size) in [
            (0x100, 1),
            (0x101, 1),
            (0x102, 2),
            (0x104, 4),
            (0x108, 8),
            (0x1ff, 1),
        ] {
            assert_eq!(dev.read(offset, size), Ok(0), "{offset:#x}/{size}");
            assert_eq!(dev.write(offset, size, u64::MAX), Ok(()));
        }
        assert_eq!(dev.read(0x101, 2), Err(MmioError::BadAccess));
        assert_eq!(dev.read(0x100, 3), Err(MmioError::BadAccess));
        assert_eq!(dev.read(0x100, 0), Err(MmioError::BadAccess));
        assert_eq!(dev.read(0x100, 16), Err(MmioError::BadAccess));
        assert_eq!(dev.read(u64::MAX, 1), Ok(0));
    }
}
