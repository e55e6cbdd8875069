//! The emulated GICv3 redistributors (GICR) at the virtual board's 0x080A_0000.
//!
//! One redistributor per vCPU, `virtual_board::GICR_STRIDE` (128 KiB) apart, in vCPU order.
//! Each has an RD_base frame (control: CTLR, IIDR, TYPER, WAKER, identification) and an
//! SGI_base frame 64 KiB above it (the vCPU's SGIs and PPIs: IGROUPR0, I[SC]ENABLER0,
//! I[SC]PENDR0, I[SC]ACTIVER0, IPRIORITYR0-7, ICFGR0/1), IHI 0069 chapter 12. The frame, not
//! the accessing vCPU, says whose interrupts are addressed, so [`VirtualGicr`] needs no
//! per-CPU context: any vCPU may program any redistributor, as on hardware.
//!
//! No LPIs: GICR_TYPER.PLPIS = 0, and the LPI registers (PROPBASER, PENDBASER, SETLPIR, ...)
//! are RAZ/WI, as is GICR_CTLR. GICR_WAKER keeps ProcessorSleep and reports ChildrenAsleep
//! equal to it at once, which completes the handshake Linux performs when it brings a CPU's
//! redistributor up (or down) without waiting. Accesses to a redistributor beyond the last
//! vCPU are RAZ/WI: the window QEMU reserves is larger than most VMs need.

use super::bank_regs::{self, Access, Field};
use super::distributor::{IIDR, V3_ID_REGS, check_width, id_reg};
use super::irq_state::{PRIVATE_COUNT, State};
use super::{GicModel, Vgic};
use crate::devices::{MmioDevice, MmioError};
use alloc::sync::Arc;

/// Distance between two vCPUs' redistributors: RD_base + SGI_base.
pub const GICR_STRIDE: u64 = 0x2_0000;
/// Offset of SGI_base within a redistributor.
const SGI_BASE: u64 = 0x1_0000;

/// RD_base registers.
mod rd {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const TYPER_HI: u64 = 0x000c;
    pub const WAKER: u64 = 0x0014;
    /// SETLPIR, CLRLPIR, PROPBASER, PENDBASER, INVLPIR, INVALLR: 64-bit, RAZ/WI without LPIs.
    pub const LPI_REGS_64: [u64; 6] = [0x0040, 0x0048, 0x0070, 0x0078, 0x00a0, 0x00b0];
    pub const ID: u64 = 0xffd0;
    pub const ID_LEN: u64 = 0x30;
}

/// SGI_base registers that are not per-INTID arrays (both RAZ/WI with DS = 1, as in KVM).
mod sgi {
    pub const IGRPMODR0: u64 = 0x0d00;
    pub const NSACR: u64 = 0x0e00;
}

/// GICR_TYPER fields.
const TYPER_LAST: u64 = 1 << 4;
const TYPER_PROCESSOR_NUMBER_SHIFT: u32 = 8;
const TYPER_AFFINITY_SHIFT: u32 = 32;

/// GICR_WAKER bits.
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

/// A redistributor register.
enum Reg {
    Typer,
    Waker,
    Iidr,
    Id,
    /// An SGI_base array access covering INTIDs within 0-31.
    Array(Field, u32),
    /// RAZ/WI, taking 32-bit accesses or, for 64-bit registers, 64-bit ones too.
    Raz {
        wide: bool,
    },
}

impl Reg {
    /// `offset` is within one redistributor (below [`GICR_STRIDE`]).
    fn decode(offset: u64, size: u8) -> Reg {
        if offset < SGI_BASE {
            return match offset {
                rd::TYPER | rd::TYPER_HI => Reg::Typer,
                rd::WAKER => Reg::Waker,
                rd::IIDR => Reg::Iidr,
                o if (rd::ID..rd::ID + rd::ID_LEN).contains(&o) => Reg::Id,
                o if rd::LPI_REGS_64.iter().any(|&r| o == r || o == r + 4) => {
                    Reg::Raz { wide: true }
                }
                // No LPIs to enable and no write ever pending.
                rd::CTLR => Reg::Raz { wide: false },
                // STATUSR, SYNCR, reserved space.
                _ => Reg::Raz { wide: false },
            };
        }
        let o = offset - SGI_BASE;
        if o == sgi::IGRPMODR0 || o == sgi::NSACR {
            return Reg::Raz { wide: false };
        }
        match bank_regs::decode(o) {
            // Only the private words exist here; ITARGETSR has no redistributor counterpart.
            Some((f, first))
                if f != Field::Targets
                    && first + u32::from(size) * 8 / f.bits() <= PRIVATE_COUNT =>
            {
                Reg::Array(f, first)
            }
            _ => Reg::Raz { wide: false },
        }
    }

    fn widths(&self) -> &'static [u8] {
        match self {
            Reg::Typer | Reg::Raz { wide: true } => &[4, 8],
            Reg::Array(f, _) if f.byte_accessible() => &[1, 4],
            _ => &[4],
        }
    }
}

impl State {
    fn gicr_typer(&self, vcpu: usize) -> u64 {
        // GICR_TYPER.Affinity_Value is Aff3.Aff2.Aff1.Aff0, packed into 32 bits.
        let mpidr = self.cfg.vcpu_affinity(vcpu);
        let aff = (mpidr & 0xff_ffff) | ((mpidr >> 32) & 0xff) << 24;
        let last = if vcpu + 1 == self.cfg.nr_vcpus {
            TYPER_LAST
        } else {
            0
        };
        aff << TYPER_AFFINITY_SHIFT | (vcpu as u64) << TYPER_PROCESSOR_NUMBER_SHIFT | last
    }

    /// Splits a redistributor-region offset into (vCPU, offset in its redistributor).
    fn gicr_locate(&self, offset: u64) -> Option<(usize, u64)> {
        if self.cfg.model != GicModel::V3 {
            return None;
        }
        let vcpu = usize::try_from(offset / GICR_STRIDE).ok()?;
        Some((vcpu, offset % GICR_STRIDE))
    }

    /// The register a `size`-byte access at `offset` into the redistributor region reaches,
    /// the access (the frame's vCPU is both the bank and, for ISACTIVER, the owner of the active
    /// state) and the offset in the frame; `None` for a frame past the VM's vCPUs (RAZ/WI);
    /// `Err` for an access the redistributor does not take.
    fn gicr_access(&self, offset: u64, size: u8) -> Result<Option<(Reg, Access, u64)>, MmioError> {
        let (vcpu, off) = self.gicr_locate(offset).ok_or(MmioError::BadAccess)?;
        let r = Reg::decode(off, size);
        check_width(off, size, r.widths())?;
        Ok((vcpu < self.cfg.nr_vcpus).then_some((
            r,
            Access {
                accessor: vcpu,
                bank: vcpu,
            },
            off,
        )))
    }

    /// A guest read at `offset` into the redistributor region.
    pub fn gicr_read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        let Some((r, acc, off)) = self.gicr_access(offset, size)? else {
            return Ok(0);
        };
        let vcpu = acc.bank;
        Ok(match r {
            Reg::Typer => {
                let typer = self.gicr_typer(vcpu);
                if size == 8 {
                    typer
                } else {
                    (typer >> ((off & 4) * 8)) & 0xffff_ffff
                }
            }
            Reg::Waker => {
                let asleep = self.cpus.get(vcpu).is_some_and(|c| c.processor_sleep);
                u64::from(if asleep {
                    WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP
                } else {
                    0
                })
            }
            Reg::Iidr => u64::from(IIDR),
            Reg::Id => id_reg(&V3_ID_REGS, rd::ID, off),
            Reg::Array(f, first) => self.read_field(f, acc, first, u32::from(size) * 8 / f.bits()),
            Reg::Raz { .. } => 0,
        })
    }

    /// A guest write at `offset` into the redistributor region. vCPUs that must look at their
    /// list registers again are added to `self.kicks`.
    pub fn gicr_write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        let Some((r, acc, _)) = self.gicr_access(offset, size)? else {
            return Ok(());
        };
        let vcpu = acc.bank;
        match r {
            Reg::Waker => {
                if let Some(cpu) = self.cpus.get_mut(vcpu) {
                    cpu.processor_sleep = value as u32 & WAKER_PROCESSOR_SLEEP != 0;
                }
            }
            Reg::Array(f, first) => {
                self.write_field(f, acc, first, u32::from(size) * 8 / f.bits(), value)
            }
            Reg::Typer | Reg::Iidr | Reg::Id | Reg::Raz { .. } => {}
        }
        Ok(())
    }
}

/// The redistributor region as an [`MmioDevice`], at `virtual_board::GICR_BASE` with size
/// `virtual_board::gicr_size(nr_vcpus)` (or the whole window; the excess is RAZ/WI).
pub struct VirtualGicr {
    vgic: Arc<Vgic>,
}

impl VirtualGicr {
    /// `None` for a GICv2 VM, which has no redistributors.
    pub fn new(vgic: Arc<Vgic>) -> Option<Self> {
        (vgic.config().model == GicModel::V3).then_some(VirtualGicr { vgic })
    }
}

impl super::GicWindow for VirtualGicr {
    fn reads_list_register_state(&self, offset: u64) -> bool {
        (offset % GICR_STRIDE)
            .checked_sub(SGI_BASE)
            .is_some_and(|o| super::PENDING_ACTIVE.contains(&o))
    }
}

impl MmioDevice for VirtualGicr {
    fn name(&self) -> &'static str {
        "gicr"
    }

    fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        self.vgic.gicr_read(offset, size)
    }

    fn write(&self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        self.vgic.gicr_write(offset, size, value)
    }
}
