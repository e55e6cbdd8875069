//! The physical GIC, driven through the `arm-gic` crate (GICv2 and GICv3).
//!
//! Veil owns the distributor, the redistributors and its CPU interface; guests never reach them.
//! Every interrupt is Group 1 non-secure (GICv3) or the non-secure group (GICv2), and Veil
//! acknowledges and ends them itself. Distributor-wide operations take one lock; the CPU
//! interface is banked per CPU.

use crate::board::discovery::{GicInfo, GicVersion};
use arm_gic::{
    IntId, UniqueMmioPointer,
    gicv2::{self, GicV2},
    gicv3::{GicCpuInterface, GicV3, SgiTarget, SgiTargetGroup},
};
use core::ptr::NonNull;
use spin::{Mutex, Once};

enum Driver {
    V2(GicV2<'static>),
    V3(GicV3<'static>),
}

struct Gic {
    driver: Mutex<Driver>,
    version: GicVersion,
}

// SAFETY: the drivers hold pointers to the GIC's MMIO windows, which are valid for the life of
// the system and reached only through the mutex (distributor) or per CPU (banked registers).
unsafe impl Send for Gic {}
// SAFETY: as above.
unsafe impl Sync for Gic {}

static GIC: Once<Gic> = Once::new();

/// Where each CPU's GICv2 CPU-interface number (its ITARGETSR bit) and MPIDR are, by CPU index.
static GICV2_TARGET: [core::sync::atomic::AtomicU8; crate::cpu::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU8::new(0) }; crate::cpu::MAX_CPUS];

/// The host console UART's INTID (0 = none), routed to the boot CPU.
static HOST_UART_INTID: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
/// GICv2: the physical CPU interface, for GICC_DIR.
static GICV2_GICC: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Whether `intid` is the host console's receive interrupt.
pub fn is_host_uart(intid: u32) -> bool {
    intid != 0 && intid == HOST_UART_INTID.load(core::sync::atomic::Ordering::Relaxed)
}

/// Sets up the distributor (boot CPU, once). Every interrupt starts disabled but the host
/// console's, which goes to the boot CPU.
pub fn init(info: &GicInfo, cpu_count: usize, host_uart_intid: Option<u32>) {
    if let Some(gicc) = info.cpu_interface {
        GICV2_GICC.store(gicc.base as usize, core::sync::atomic::Ordering::Relaxed);
    }
    GIC.call_once(|| {
        let driver = match info.version {
            GicVersion::V2 => {
                let gicc = info.cpu_interface.expect("GICv2 without a CPU interface");
                // SAFETY: both windows come from the DTB, are mapped as device memory in Veil's
                // EL2 map, and this is the only driver for them.
                let mut gic = unsafe {
                    GicV2::new(
                        info.distributor.base as *mut gicv2::registers::Gicd,
                        gicc.base as *mut gicv2::registers::Gicc,
                    )
                };
                gic.setup();
                gic.enable_all_interrupts(false);
                Driver::V2(gic)
            }
            GicVersion::V3 => {
                let gicr = info.redistributors.expect("GICv3 without redistributors");
                // SAFETY: as above, for the distributor and the redistributor range.
                let mut gic = unsafe {
                    GicV3::new(
                        UniqueMmioPointer::new(
                            NonNull::new(info.distributor.base as *mut _).expect("GICD at 0"),
                        ),
                        NonNull::new(gicr.base as *mut _).expect("GICR at 0"),
                        cpu_count,
                    )
                }
                .expect("GICv3 redistributors not found");
                // EL2 uses the system-register interface; EL1 may enable its own (virtual) one.
                GicCpuInterface::enable_system_register_el2(true);
                gic.setup(0);
                Driver::V3(gic)
            }
        };
        Gic {
            driver: Mutex::new(driver),
            version: info.version,
        }
    });
    if let Some(intid) = host_uart_intid.filter(|&i| i >= 32) {
        HOST_UART_INTID.store(intid, core::sync::atomic::Ordering::Relaxed);
        enable_spi(intid, 0);
    }
}

/// Brings up this CPU's interface (and redistributor) and enables the SGIs Veil uses.
pub fn init_this_cpu(index: usize) {
    let Some(gic) = GIC.get() else { return };
    if let Some(info) = crate::board::platform().gic.as_ref() {
        set_private_base(index, info);
    }
    let mut driver = gic.driver.lock();
    match &mut *driver {
        Driver::V2(g) => {
            if index != 0 {
                g.setup();
            }
            // ITARGETSR0..7 are banked and read back this CPU's own interface bit.
            // SAFETY: reading a banked distributor register of a mapped GICD.
            let target =
                unsafe { core::ptr::read_volatile((gic_v2_gicd_base() + 0x800) as *const u8) };
            GICV2_TARGET[index].store(target, core::sync::atomic::Ordering::Relaxed);
            for sgi in crate::interrupts::SGI_ALL {
                g.set_interrupt_priority(IntId::sgi(sgi), 0x80);
                let _ = g.enable_interrupt(IntId::sgi(sgi), true);
            }
            for ppi in crate::interrupts::PPI_ALL {
                g.set_interrupt_priority(intid_from_raw(ppi), 0x80);
                let _ = g.enable_interrupt(intid_from_raw(ppi), true);
            }
            g.set_priority_mask(0xff);
            // GICC_CTLR.EOImodeNS (bit 9): EOIR drops priority only; GICC_DIR deactivates.
            let ctlr = GICV2_GICC.load(core::sync::atomic::Ordering::Relaxed);
            // SAFETY: GICC_CTLR of the mapped, banked CPU interface.
            unsafe {
                let v = core::ptr::read_volatile(ctlr as *const u32);
                core::ptr::write_volatile(ctlr as *mut u32, v | (1 << 9));
            }
        }
        Driver::V3(g) => {
            if index != 0 {
                GicCpuInterface::enable_system_register_el2(true);
                g.init_cpu(index);
                GicCpuInterface::enable_group1(true);
            }
            for sgi in crate::interrupts::SGI_ALL {
                let _ = g.set_interrupt_priority(IntId::sgi(sgi), Some(index), 0x80);
                let _ = g.enable_interrupt(IntId::sgi(sgi), Some(index), true);
            }
            for ppi in crate::interrupts::PPI_ALL {
                let _ = g.set_interrupt_priority(intid_from_raw(ppi), Some(index), 0x80);
                let _ = g.enable_interrupt(intid_from_raw(ppi), Some(index), true);
            }
            GicCpuInterface::set_priority_mask(0xff);
            // ICC_CTLR_EL1.EOImode (bit 1): EOIR1 drops priority only; ICC_DIR_EL1 deactivates.
            // SAFETY: this CPU's own physical CPU interface control.
            unsafe {
                let v: u64;
                core::arch::asm!("mrs {}, S3_0_C12_C12_4", out(reg) v, options(nomem, nostack));
                core::arch::asm!("msr S3_0_C12_C12_4, {}", "isb", in(reg) v | (1 << 1), options(nostack));
            }
        }
    }
}

static GICV2_GICD: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn gic_v2_gicd_base() -> usize {
    GICV2_GICD.load(core::sync::atomic::Ordering::Relaxed)
}

/// Records the GICv2 distributor base for the banked ITARGETSR read.
pub fn set_v2_gicd_base(base: u64) {
    GICV2_GICD.store(base as usize, core::sync::atomic::Ordering::Relaxed);
}

/// Sends SGI `sgi` to the CPU with linear index `cpu` whose MPIDR is `mpidr`.
pub fn send_sgi(sgi: u32, cpu: usize, mpidr: u64) {
    let Some(gic) = GIC.get() else { return };
    match gic.version {
        GicVersion::V2 => {
            let target = GICV2_TARGET[cpu].load(core::sync::atomic::Ordering::Relaxed);
            if let Driver::V2(g) = &mut *gic.driver.lock() {
                g.send_sgi(
                    IntId::sgi(sgi),
                    gicv2::SgiTarget::List {
                        target_list_filter: gicv2::SgiTargetListFilter::CPUTargetList,
                        target_list: target as u16,
                    },
                );
            }
        }
        GicVersion::V3 => {
            // ICC_SGI1R_EL1 is this CPU's own register: no lock needed.
            let _ = GicCpuInterface::send_sgi(
                IntId::sgi(sgi),
                SgiTarget::List {
                    affinity3: (mpidr >> 32) as u8,
                    affinity2: (mpidr >> 16) as u8,
                    affinity1: (mpidr >> 8) as u8,
                    target_list: 1 << (mpidr & 0xf),
                },
                SgiTargetGroup::CurrentGroup1,
            );
        }
    }
}

/// Acknowledges the highest-priority pending interrupt of this CPU, if any.
pub fn acknowledge() -> Option<u32> {
    let gic = GIC.get()?;
    match gic.version {
        GicVersion::V2 => match &mut *gic.driver.lock() {
            Driver::V2(g) => g
                .get_and_acknowledge_interrupt(arm_gic::InterruptGroup::Group0)
                .map(|i| i.raw_value() & 0x3ff),
            _ => None,
        },
        GicVersion::V3 => {
            GicCpuInterface::get_and_acknowledge_interrupt(arm_gic::InterruptGroup::Group1)
                .map(|i| i.raw_value())
        }
    }
}

/// Deactivates interrupt `intid` on this CPU (EOImode = 1: after [`end`]).
pub fn deactivate(intid: u32) {
    let Some(gic) = GIC.get() else { return };
    match gic.version {
        GicVersion::V2 => {
            let gicc = GICV2_GICC.load(core::sync::atomic::Ordering::Relaxed);
            // SAFETY: GICC_DIR, at 0x1000 in the mapped CPU interface.
            unsafe { core::ptr::write_volatile((gicc + 0x1000) as *mut u32, intid) };
        }
        GicVersion::V3 => {
            // SAFETY: ICC_DIR_EL1 only deactivates the interrupt named.
            unsafe {
                core::arch::asm!("msr S3_0_C12_C11_1, {}", in(reg) intid as u64, options(nostack))
            };
        }
    }
}

/// Drops the running priority of interrupt `intid` on this CPU (EOImode = 1: it stays active
/// until [`deactivate`] or, for a hardware-mapped one, the guest's deactivation).
pub fn end(intid: u32) {
    let Some(gic) = GIC.get() else { return };
    match gic.version {
        GicVersion::V2 => {
            if let Driver::V2(g) = &mut *gic.driver.lock() {
                g.end_interrupt(intid_from_raw(intid), arm_gic::InterruptGroup::Group0);
            }
        }
        GicVersion::V3 => {
            GicCpuInterface::end_interrupt(intid_from_raw(intid), arm_gic::InterruptGroup::Group1)
        }
    }
}

/// An `IntId` from a raw INTID (the crate builds them per kind).
fn intid_from_raw(raw: u32) -> IntId {
    match raw {
        0..16 => IntId::sgi(raw),
        16..32 => IntId::ppi(raw - 16),
        _ => IntId::spi(raw - 32),
    }
}

/// Where this CPU's private-interrupt (SGI/PPI) registers are: GICv3, its redistributor's
/// SGI_base frame; GICv2, the banked distributor.
static PRIVATE_BASE: [core::sync::atomic::AtomicUsize; crate::cpu::MAX_CPUS] =
    [const { core::sync::atomic::AtomicUsize::new(0) }; crate::cpu::MAX_CPUS];

/// Records where CPU `index`'s SGI/PPI registers are (each CPU, at its own bring-up).
pub fn set_private_base(index: usize, info: &GicInfo) {
    let base = match info.version {
        // Redistributors are laid out in CPU order, 128 KiB each; SGI_base is the second 64 KiB.
        GicVersion::V3 => info
            .redistributors
            .map_or(0, |r| r.base as usize + index * 0x2_0000 + 0x1_0000),
        GicVersion::V2 => info.distributor.base as usize,
    };
    PRIVATE_BASE[index].store(base, core::sync::atomic::Ordering::Relaxed);
}

fn private_base() -> usize {
    PRIVATE_BASE[crate::cpu::current_index()].load(core::sync::atomic::Ordering::Relaxed)
}

/// Whether PPI/SGI `intid` is active on this CPU (GICD/GICR ISACTIVER0).
pub fn ppi_active(intid: u32) -> bool {
    let base = private_base();
    if base == 0 {
        return false;
    }
    // SAFETY: ISACTIVER0 (offset 0x300) of this CPU's mapped SGI/PPI register frame.
    let v = unsafe { core::ptr::read_volatile((base + 0x300) as *const u32) };
    v & (1 << intid) != 0
}

/// Sets or clears the active state of PPI/SGI `intid` on this CPU (ISACTIVER0/ICACTIVER0).
pub fn set_ppi_active(intid: u32, active: bool) {
    let base = private_base();
    if base == 0 {
        return;
    }
    let offset = if active { 0x300 } else { 0x380 };
    // SAFETY: ISACTIVER0/ICACTIVER0 of this CPU's mapped SGI/PPI register frame; writing one
    // bit changes only that interrupt.
    unsafe { core::ptr::write_volatile((base + offset) as *mut u32, 1 << intid) };
}

/// Clears the active state of SPI `intid` in the distributor (GICD_ICACTIVER<n>, one bit per
/// INTID), whichever CPU activated it.
pub fn clear_spi_active(intid: u32) {
    let Some(gic) = GIC.get() else { return };
    let Some(info) = crate::board::platform().gic.as_ref() else {
        return;
    };
    let _serialized = gic.driver.lock();
    let register = info.distributor.base as usize + 0x380 + 4 * (intid as usize / 32);
    // SAFETY: GICD_ICACTIVER<n> of the mapped distributor; writing one bit changes only that
    // interrupt's active state.
    unsafe { core::ptr::write_volatile(register as *mut u32, 1 << (intid % 32)) };
}

/// Enables SPI `intid` and routes it to physical CPU `cpu` (the host console's input, or a
/// passthrough interrupt).
pub fn enable_spi(intid: u32, cpu: usize) {
    let Some(gic) = GIC.get() else { return };
    let id = intid_from_raw(intid);
    match &mut *gic.driver.lock() {
        Driver::V2(g) => {
            g.set_interrupt_priority(id, 0xa0);
            let target = GICV2_TARGET[cpu]
                .load(core::sync::atomic::Ordering::Relaxed)
                .max(1);
            // SAFETY: GICD_ITARGETSR<n>, one byte per INTID, of the mapped distributor.
            unsafe {
                core::ptr::write_volatile(
                    (gic_v2_gicd_base() + 0x800 + intid as usize) as *mut u8,
                    target,
                )
            };
            let _ = g.enable_interrupt(id, true);
        }
        Driver::V3(g) => {
            let _ = g.set_interrupt_priority(id, None, 0xa0);
            let _ = g
                .distributor()
                .set_routing(id, Some(crate::cpu::mpidr_of(cpu) & 0xff_00ff_ffff));
            let _ = g.enable_interrupt(id, None, true);
        }
    }
}
