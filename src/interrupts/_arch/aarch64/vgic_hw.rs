//! The hardware half of the virtual GIC: the virtual CPU interface's control registers and list
//! registers, GICv3 through the ICH_*_EL2 system registers, GICv2 through the GICH window.
//!
//! vCPUs are pinned, so each CPU's interface holds the state of its one vCPU for the vCPU's
//! whole life: nothing is saved or restored on exits, only reset when a vCPU (re)starts.

use crate::board::discovery::GicVersion;
use crate::interrupts::vgic::{GicModel, ListRegister, ListRegisters, MAX_LRS};
use core::arch::asm;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Which interface this machine has, and (GICv2) where GICH is.
static VERSION: AtomicU8 = AtomicU8::new(0);
static GICH_BASE: AtomicU64 = AtomicU64::new(0);

/// Records the interface kind (boot CPU, once).
pub fn init(version: GicVersion, gich_base: Option<u64>) {
    VERSION.store(
        if version == GicVersion::V2 { 2 } else { 3 },
        Ordering::Relaxed,
    );
    GICH_BASE.store(gich_base.unwrap_or(0), Ordering::Relaxed);
}

fn is_v2() -> bool {
    VERSION.load(Ordering::Relaxed) == 2
}

// GICH register offsets (GICv2 architecture, 5.3).
const GICH_HCR: usize = 0x000;
const GICH_VTR: usize = 0x004;
const GICH_VMCR: usize = 0x008;
const GICH_MISR: usize = 0x010;
const GICH_APR: usize = 0x0f0;
const GICH_LR0: usize = 0x100;

fn gich_read(offset: usize) -> u32 {
    // SAFETY: GICH comes from the DTB and is mapped as device memory in Veil's EL2 map; its
    // registers are banked per CPU.
    unsafe {
        core::ptr::read_volatile(
            (GICH_BASE.load(Ordering::Relaxed) as usize + offset) as *const u32,
        )
    }
}

fn gich_write(offset: usize, value: u32) {
    // SAFETY: as in gich_read.
    unsafe {
        core::ptr::write_volatile(
            (GICH_BASE.load(Ordering::Relaxed) as usize + offset) as *mut u32,
            value,
        )
    }
}

macro_rules! sysreg_rw {
    ($read:ident, $write:ident, $name:literal) => {
        #[allow(dead_code)]
        fn $read() -> u64 {
            let v: u64;
            // SAFETY: reading a GICv3 hypervisor-interface register at EL2.
            unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
            v
        }
        #[allow(dead_code)]
        fn $write(v: u64) {
            // SAFETY: the callers write values built for this register.
            unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nostack)) };
        }
    };
}

sysreg_rw!(read_ich_hcr, write_ich_hcr, "S3_4_C12_C11_0");
sysreg_rw!(read_ich_vtr, write_ich_vtr, "S3_4_C12_C11_1");
sysreg_rw!(read_ich_misr, write_ich_misr, "S3_4_C12_C11_2");
sysreg_rw!(read_ich_vmcr, write_ich_vmcr, "S3_4_C12_C11_7");
sysreg_rw!(read_ich_ap0r0, write_ich_ap0r0, "S3_4_C12_C8_0");
sysreg_rw!(read_ich_ap1r0, write_ich_ap1r0, "S3_4_C12_C9_0");

fn read_ich_lr<const N: u32>() -> u64 {
    let v: u64;
    // SAFETY: ICH_LR<N>_EL2 for N below ICH_VTR_EL2.ListRegs + 1 (checked by the callers).
    // ICH_LR0..7_EL2 are S3_4_C12_C12_<n>, ICH_LR8..15_EL2 are S3_4_C12_C13_<n-8>.
    unsafe {
        asm!("mrs {v}, S3_4_C12_C{crm}_{op2}", v = out(reg) v, crm = const 12 + N / 8, op2 = const N % 8, options(nomem, nostack))
    };
    v
}

fn write_ich_lr<const N: u32>(v: u64) {
    // SAFETY: as in read_ich_lr.
    unsafe {
        asm!("msr S3_4_C12_C{crm}_{op2}, {v}", v = in(reg) v, crm = const 12 + N / 8, op2 = const N % 8, options(nostack))
    };
}

macro_rules! lr_dispatch {
    ($n:expr, $f:ident $(, $arg:expr)?) => {
        match $n {
            0 => $f::<0>($($arg)?), 1 => $f::<1>($($arg)?), 2 => $f::<2>($($arg)?), 3 => $f::<3>($($arg)?),
            4 => $f::<4>($($arg)?), 5 => $f::<5>($($arg)?), 6 => $f::<6>($($arg)?), 7 => $f::<7>($($arg)?),
            8 => $f::<8>($($arg)?), 9 => $f::<9>($($arg)?), 10 => $f::<10>($($arg)?), 11 => $f::<11>($($arg)?),
            12 => $f::<12>($($arg)?), 13 => $f::<13>($($arg)?), 14 => $f::<14>($($arg)?), _ => $f::<15>($($arg)?),
        }
    };
}

/// How many list registers this CPU has (ICH_VTR_EL2.ListRegs / GICH_VTR.ListRegs, plus one).
pub fn lr_count() -> usize {
    if is_v2() {
        (gich_read(GICH_VTR) as usize & 0x3f) + 1
    } else {
        (read_ich_vtr() as usize & 0x1f) + 1
    }
}

/// List register `n` (raw: 64-bit ICH_LR<n>_EL2, or the 32-bit GICH_LR<n>).
pub fn read_lr(n: usize) -> u64 {
    if is_v2() {
        gich_read(GICH_LR0 + 4 * n) as u64
    } else {
        lr_dispatch!(n, read_ich_lr)
    }
}

pub fn write_lr(n: usize, value: u64) {
    if is_v2() {
        gich_write(GICH_LR0 + 4 * n, value as u32)
    } else {
        lr_dispatch!(n, write_ich_lr, value)
    }
}

/// This CPU's list registers, decoded and encoded in the VM's format, for
/// `vgic::Vgic::sync_lrs` (which reads and writes only the ones in use).
pub struct HwListRegisters {
    count: usize,
    v2: bool,
}

impl HwListRegisters {
    /// The registers of this CPU (at most `vgic::MAX_LRS`), in the GICv2 format or the GICv3 one.
    pub fn new(model: GicModel) -> Self {
        HwListRegisters {
            count: lr_count().min(MAX_LRS),
            v2: model == GicModel::V2,
        }
    }
}

impl ListRegisters for HwListRegisters {
    #[inline]
    fn count(&self) -> usize {
        self.count
    }

    #[inline]
    fn read(&self, i: usize) -> Option<ListRegister> {
        if i >= self.count {
            return None;
        }
        let raw = read_lr(i);
        Some(if self.v2 {
            ListRegister::decode_v2(raw as u32)
        } else {
            ListRegister::decode_v3(raw)
        })
    }

    #[inline]
    fn write(&mut self, i: usize, lr: ListRegister) {
        if i < self.count {
            write_lr(
                i,
                if self.v2 {
                    u64::from(lr.encode_v2())
                } else {
                    lr.encode_v3()
                },
            );
        }
    }
}

/// ICH_HCR_EL2 / GICH_HCR bits Veil uses: En (bit 0) enables the virtual CPU interface;
/// UIE (bit 1) raises a maintenance interrupt when at most one list register holds an
/// interrupt, so the rest can be refilled.
pub const HCR_EN: u64 = 1 << 0;
pub const HCR_UIE: u64 = 1 << 1;

pub fn write_hcr(value: u64) {
    if is_v2() {
        gich_write(GICH_HCR, value as u32)
    } else {
        write_ich_hcr(value)
    }
}

pub fn read_hcr() -> u64 {
    if is_v2() {
        gich_read(GICH_HCR) as u64
    } else {
        read_ich_hcr()
    }
}

/// The maintenance interrupt status (ICH_MISR_EL2 / GICH_MISR).
pub fn read_misr() -> u64 {
    if is_v2() {
        gich_read(GICH_MISR) as u64
    } else {
        read_ich_misr()
    }
}

/// The interface's own state: (VMCR, APR0, APR1). GICv2 has one APR (in `APR0`); GICv3 one
/// register each for groups 0 and 1 with the 5 priority bits QEMU and Cortex-A cores implement.
pub fn save_interface() -> (u64, u64, u64) {
    if is_v2() {
        (gich_read(GICH_VMCR) as u64, gich_read(GICH_APR) as u64, 0)
    } else {
        (read_ich_vmcr(), read_ich_ap0r0(), read_ich_ap1r0())
    }
}

/// Loads the interface state [`save_interface`] returned, and enables the interface.
pub fn restore_interface(vmcr: u64, apr0: u64, apr1: u64) {
    if is_v2() {
        gich_write(GICH_VMCR, vmcr as u32);
        gich_write(GICH_APR, apr0 as u32);
    } else {
        write_ich_vmcr(vmcr);
        write_ich_ap0r0(apr0);
        write_ich_ap1r0(apr1);
    }
    write_hcr(HCR_EN);
}
