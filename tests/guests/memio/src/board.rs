//! The board as this guest sees it: the fixed addresses of QEMU `virt`'s devices, and what the
//! DTB and the hypervisor say about the rest (RAM, GIC version, the initrd, who answers HVC).

use veil_guest_rt::{dtb, smccc};

/// PL011 UART.
pub const PL011: u64 = 0x0900_0000;
/// PL031 RTC.
pub const PL031: u64 = 0x0901_0000;
/// The first virtio-mmio slot.
pub const VIRTIO_MMIO: u64 = 0x0a00_0000;
/// GIC distributor.
pub const GICD: u64 = 0x0800_0000;
/// GICv2 CPU interface (GICv2 boards only): 8 KiB of registers.
pub const GICC: u64 = 0x0801_0000;
/// GICv3 redistributors, 128 KiB per vCPU.
pub const GICR: u64 = 0x080a_0000;
pub const GICR_STRIDE: u64 = 0x2_0000;

/// Veil's vendor-hypervisor Call UID query and the first word of its answer
/// (docs/HYPERCALLS.md).
const VENDOR_HYP_CALL_UID: u32 = 0x8600_ff01;
const VEIL_UID_WORD0: u64 = 0x620b_7d5e;

/// What the checks need to know about where they run.
pub struct Host {
    /// Veil answered its Call UID: holes and device widths are Veil's, not bare QEMU's.
    pub under_veil: bool,
    /// 2 or 3, from the DTB's interrupt controller (3 if the DTB does not say).
    pub gic_version: u32,
    /// Number of `/cpus/cpu@N` nodes (at least 1).
    pub cpus: u64,
    /// RAM base and size, from `/memory` (QEMU `virt`'s base and 128 MiB if it has none).
    pub ram: (u64, u64),
    /// The DTB's address and `totalsize` (0, 0 if there is none).
    pub dtb: (u64, u64),
    /// `/chosen` `linux,initrd-start` and `-end`, if both are there.
    pub initrd: Option<(u64, u64)>,
}

impl Host {
    pub fn discover(dtb_address: usize) -> Self {
        let mut host = Host {
            under_veil: under_veil(),
            gic_version: 3,
            cpus: 1,
            ram: (0x4000_0000, 128 << 20),
            dtb: (0, 0),
            initrd: None,
        };
        let Ok(fdt) = dtb::get() else { return host };
        host.dtb = (dtb_address as u64, fdt.total_size() as u64);
        if let Some(region) = fdt.find_node("/memory").and_then(|m| m.reg()?.next()) {
            host.ram = (
                region.starting_address as u64,
                region.size.unwrap_or(0) as u64,
            );
        }
        if fdt
            .find_compatible(&["arm,cortex-a15-gic", "arm,gic-400"])
            .is_some()
        {
            host.gic_version = 2;
        }
        if let Some(cpus) = fdt.find_node("/cpus") {
            let count = cpus
                .children()
                .filter(|n| n.name.split('@').next() == Some("cpu"))
                .count();
            host.cpus = (count as u64).max(1);
        }
        if let Some(chosen) = fdt.find_node("/chosen") {
            let cell = |name| chosen.property(name).and_then(|p| be_number(p.value));
            if let (Some(start), Some(end)) = (cell("linux,initrd-start"), cell("linux,initrd-end"))
            {
                host.initrd = Some((start, end));
            }
        }
        host
    }
}

/// A DTB number property: one or two big-endian 32-bit cells.
pub fn be_number(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => Some(u32::from_be_bytes(bytes.try_into().ok()?) as u64),
        8 => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

unsafe extern "C" {
    /// The image's first instruction, where guest.ld starts the image.
    fn _start();
    /// The end of .bss, which guest.ld places after the stacks: the end of the image in memory.
    static __bss_end: u8;
}

/// Where this guest's image lies in memory, code to .bss and stacks included: `(start, end)`.
pub fn image() -> (u64, u64) {
    let end = core::ptr::addr_of!(__bss_end) as u64;
    (_start as *const () as u64, end)
}

/// Whether the hypervisor answering HVC is Veil.
fn under_veil() -> bool {
    // SAFETY: the Call UID query only reports; on bare QEMU it returns NOT_SUPPORTED.
    let [uid0, ..] = unsafe { smccc::hvc64(VENDOR_HYP_CALL_UID, 0, 0, 0) };
    uid0 == VEIL_UID_WORD0
}

/// 32-bit device read at `address`.
///
/// # Safety
/// `address` must be a device register (or a hole the caller expects to abort), owned by no Rust
/// object, and reading it must have no effect Rust code relies on.
pub unsafe fn read32(address: u64) -> u32 {
    // SAFETY: as the caller promises.
    unsafe { (address as *const u32).read_volatile() }
}

/// 32-bit device write at `address`.
///
/// # Safety
/// As for [`read32`], for a write.
pub unsafe fn write32(address: u64, value: u32) {
    // SAFETY: as the caller promises.
    unsafe { (address as *mut u32).write_volatile(value) }
}
