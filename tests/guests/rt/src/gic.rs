//! The interrupt controller as a guest sees it: a small GICv2 or GICv3 driver, enough for test
//! guests to take private and shared interrupts, send SGIs, and poke at each interrupt's state.
//!
//! [`discover`] finds the controller in the DTB. Set-up ([`Gic::init_distributor`],
//! [`Gic::init_this_cpu`]) goes through [`crate::probe`]: a hypervisor whose virtual GIC is
//! incomplete may refuse an access, and the caller gets a [`Refusal`] naming it instead of an
//! unexpected exception. Everything else uses plain accesses, so that timed paths and interrupt
//! handlers are exactly the hardware's.
//!
//! Interrupts are Group 1 (GICv3, through the system-register CPU interface) or Group 0 of a
//! GICv2 without Security Extensions (its reset group, signalled as IRQ while GICC_CTLR.FIQEn
//! is 0): either way they arrive as IRQs. Registers of INTIDs 0-31 are the calling vCPU's: its
//! banked distributor view (GICv2) or its redistributor's SGI_base frame (GICv3), at the same
//! offsets, so every per-INTID helper takes an INTID and finds the right frame itself.
//!
//! vCPUs are set up one at a time: a probe is global to the guest (see
//! [`expect_exception`](crate::exception::expect_exception)).

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::probe::{Refusal, read32, sysreg, write32};
use crate::{cpu, dtb, read_sysreg, write_sysreg};

/// INTID an acknowledge returns when nothing is pending.
pub const SPURIOUS: u32 = 1023;
/// SGIs are INTIDs 0-15.
pub const SGI_COUNT: u32 = 16;
/// SGIs and PPIs, banked per vCPU; SPIs start here.
pub const PRIVATE_COUNT: u32 = 32;

/// Distributor registers (both versions; IROUTER is GICv3's).
mod gicd {
    pub const CTLR: usize = 0x000;
    pub const IGROUPR: usize = 0x080;
    pub const ISENABLER: usize = 0x100;
    pub const ICENABLER: usize = 0x180;
    pub const ISPENDR: usize = 0x200;
    pub const ICPENDR: usize = 0x280;
    pub const ISACTIVER: usize = 0x300;
    pub const ICACTIVER: usize = 0x380;
    pub const IPRIORITYR: usize = 0x400;
    pub const ITARGETSR: usize = 0x800;
    pub const ICFGR: usize = 0xC00;
    pub const SGIR: usize = 0xF00;
    pub const CPENDSGIR: usize = 0xF10;
    pub const SPENDSGIR: usize = 0xF20;
    pub const IROUTER: usize = 0x6000;
    /// GICD_CTLR.RWP (GICv3): a register write is still taking effect.
    pub const CTLR_RWP: u32 = 1 << 31;
    /// GICD_CTLR (GICv3, as the non-secure or only security state sees it): ARE (bit 4),
    /// EnableGrp1A / EnableGrp1 (bit 1), EnableGrp1 / EnableGrp0 (bit 0) — what Linux writes,
    /// correct in both the one- and two-security-state views.
    pub const CTLR_V3_ENABLE: u32 = (1 << 4) | (1 << 1) | 1;
    /// GICD_CTLR.EnableGrp0 (GICv2 without security extensions): forward interrupts.
    pub const CTLR_V2_ENABLE: u32 = 1;
    /// GICD_SGIR.TargetListFilter: the listed CPUs, all but the sender, the sender only.
    pub const SGIR_FILTER_LIST: u32 = 0b00 << 24;
    pub const SGIR_FILTER_OTHERS: u32 = 0b01 << 24;
    pub const SGIR_FILTER_SELF: u32 = 0b10 << 24;
}

/// GICv3 redistributor: RD_base registers, then the SGI_base frame 64 KiB above.
mod gicr {
    pub const CTLR: usize = 0x000;
    pub const TYPER: usize = 0x008;
    pub const TYPER_LAST: u32 = 1 << 4;
    pub const WAKER: usize = 0x014;
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
    /// GICR_CTLR.RWP: a write to ICENABLER0 is still taking effect.
    pub const CTLR_RWP: u32 = 1 << 3;
    pub const SGI_BASE: usize = 0x1_0000;
    /// Distance between two vCPUs' redistributors (RD_base + SGI_base).
    pub const STRIDE: usize = 0x2_0000;
    /// Most redistributors searched for the caller's: the runtime's vCPU limit, with room.
    pub const MAX: usize = 64;
}

/// GICv2 CPU interface registers (also the offsets of a hypervisor's GICV behind them).
mod gicc {
    pub const CTLR: usize = 0x000;
    pub const PMR: usize = 0x004;
    pub const BPR: usize = 0x008;
    pub const RPR: usize = 0x014;
    pub const HPPIR: usize = 0x018;
    pub const DIR: usize = 0x1000;
    /// GICC_CTLR.EnableGrp0: signal Group 0 interrupts (as IRQs, FIQEn being 0).
    pub const CTLR_ENABLE_GRP0: u32 = 1 << 0;
    /// GICC_CTLR.EOImode (bit 9 both in a GICv2 without Security Extensions and in GICV_CTLR):
    /// GICC_EOIR only drops the priority, GICC_DIR deactivates.
    pub const CTLR_EOIMODE: u32 = 1 << 9;
}

/// GICv2 GICC_IAR, for guests that acknowledge from their own assembly.
pub const GICC_IAR: usize = 0x00C;
/// GICv2 GICC_EOIR, for guests that end interrupts from their own assembly.
pub const GICC_EOIR: usize = 0x010;

/// ICC_SRE_EL1: SRE (use the system registers), DFB and DIB (no FIQ/IRQ bypass).
const ICC_SRE_EL1_ENABLE: u64 = 0b111;
/// ICC_CTLR_EL1.EOImode: ICC_EOIR1_EL1 only drops the priority, ICC_DIR_EL1 deactivates.
const ICC_CTLR_EOIMODE: u64 = 1 << 1;
/// ICC_SGI1R_EL1.IRM: every PE but the sender, whatever the target list says.
const ICC_SGI1R_IRM: u64 = 1 << 40;
/// Priority [`Gic::init_this_cpu`] gives the interrupts it enables.
pub const DEFAULT_PRIORITY: u8 = 0x80;
/// The priority mask that lets every priority through.
pub const PRIORITY_MASK_ALL: u8 = 0xFF;
/// Polls of a "register write in progress" bit before giving up.
const MAX_POLLS: u32 = 100_000;

/// Each vCPU's redistributor (RD_base), by MPIDR Aff0, once found; 0 = not yet.
static REDISTRIBUTOR: [AtomicUsize; cpu::MAX_CPUS] = [const { AtomicUsize::new(0) }; cpu::MAX_CPUS];

/// Which GIC, and where its per-CPU part lives.
#[derive(Clone, Copy)]
enum Kind {
    V2 { cpu_interface: usize },
    V3 { redistributors: usize },
}

/// The guest's interrupt controller, as its DTB describes it.
#[derive(Clone, Copy)]
pub struct Gic {
    distributor: usize,
    kind: Kind,
}

/// How an SGI names a vCPU: GICv3 by affinity, GICv2 by CPU-interface bit.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Target {
    /// MPIDR_EL1 affinity fields (GICv3).
    pub mpidr: u64,
    /// The CPU interface's bit in GICv2 target lists (0 on GICv3).
    pub interface_mask: u8,
}

/// Finds the interrupt controller in the DTB: the node with `interrupt-controller` whose
/// `compatible` names a GICv3 (`reg`: distributor, redistributors) or a GICv2 (`reg`:
/// distributor, CPU interface, ...).
pub fn discover() -> Option<Gic> {
    let fdt = dtb::get().ok()?;
    for node in fdt.all_nodes() {
        if node.property("interrupt-controller").is_none() {
            continue;
        }
        let Some(compatible) = node.compatible() else {
            continue;
        };
        let Some(mut regs) = node.reg() else {
            continue;
        };
        let (Some(first), Some(second)) = (regs.next(), regs.next()) else {
            continue;
        };
        let distributor = first.starting_address as usize;
        let second = second.starting_address as usize;
        if compatible.all().any(|c| c == "arm,gic-v3") {
            return Some(Gic {
                distributor,
                kind: Kind::V3 {
                    redistributors: second,
                },
            });
        }
        let v2 = ["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"];
        if compatible.all().any(|c| v2.contains(&c)) {
            return Some(Gic {
                distributor,
                kind: Kind::V2 {
                    cpu_interface: second,
                },
            });
        }
    }
    None
}

/// The INTID bits of a raw acknowledge value.
pub fn intid(raw: u32) -> u32 {
    raw & 0x3FF
}

/// GICv2: the CPU that sent the SGI a raw acknowledge value names (GICC_IAR.CPUID); 0 for
/// anything else and on GICv3, whose acknowledge does not say.
pub fn sgi_source(raw: u32) -> u32 {
    (raw >> 10) & 0x7
}

fn read(address: usize) -> u32 {
    // SAFETY: every caller passes a register of the GIC the DTB describes (distributor,
    // redistributor or CPU interface), which no Rust object owns; reads of these registers
    // have no side effects on memory.
    unsafe { (address as *const u32).read_volatile() }
}

fn write(address: usize, value: u32) {
    // SAFETY: as in `read`; the callers write GIC registers only, which changes interrupt
    // state, never memory.
    unsafe { (address as *mut u32).write_volatile(value) }
}

/// Polls `address` until `bits` read as zero.
fn wait_clear(address: usize, bits: u32, what: &'static str) -> Result<(), Refusal> {
    for _ in 0..MAX_POLLS {
        if read32(address, what)? & bits == 0 {
            return Ok(());
        }
    }
    Err(Refusal::plain(what))
}

/// ISB: makes a system-register write take effect before the next instruction.
fn isb() {
    // SAFETY: a barrier only.
    unsafe { core::arch::asm!("isb", options(nomem, nostack, preserves_flags)) };
}

impl Gic {
    /// 2 or 3.
    pub fn version(&self) -> u32 {
        match self.kind {
            Kind::V2 { .. } => 2,
            Kind::V3 { .. } => 3,
        }
    }

    /// The distributor's base address.
    pub fn distributor(&self) -> usize {
        self.distributor
    }

    /// The GICv2 CPU interface's base address; `None` for GICv3 (system registers).
    pub fn cpu_interface(&self) -> Option<usize> {
        match self.kind {
            Kind::V2 { cpu_interface } => Some(cpu_interface),
            Kind::V3 { .. } => None,
        }
    }

    /// Turns the distributor on; once, on vCPU 0, before any `init_this_cpu`.
    pub fn init_distributor(&self) -> Result<(), Refusal> {
        let ctlr = self.distributor + gicd::CTLR;
        match self.kind {
            Kind::V3 { .. } => {
                // Groups off before ARE may change, as the architecture asks; then on.
                write32(ctlr, 0, "GICD_CTLR write")?;
                wait_clear(ctlr, gicd::CTLR_RWP, "GICD_CTLR.RWP stays set")?;
                write32(ctlr, gicd::CTLR_V3_ENABLE, "GICD_CTLR write")?;
                wait_clear(ctlr, gicd::CTLR_RWP, "GICD_CTLR.RWP stays set")
            }
            Kind::V2 { .. } => write32(ctlr, gicd::CTLR_V2_ENABLE, "GICD_CTLR write"),
        }
    }

    /// Sets up the calling vCPU's part of the GIC with the private interrupts in `intids` (a
    /// bit mask of INTIDs 0..31) enabled at [`DEFAULT_PRIORITY`] and every priority let
    /// through, and returns how SGIs name this vCPU.
    pub fn init_this_cpu(&self, intids: u32) -> Result<Target, Refusal> {
        let mpidr = cpu::mpidr() & cpu::MPIDR_AFFINITY_MASK;
        match self.kind {
            Kind::V3 { redistributors } => {
                let rd =
                    find_redistributor(redistributors, mpidr, |a| read32(a, "GICR_TYPER read"))?;
                let waker = rd + gicr::WAKER;
                let value = read32(waker, "GICR_WAKER read")?;
                write32(
                    waker,
                    value & !gicr::WAKER_PROCESSOR_SLEEP,
                    "GICR_WAKER write",
                )?;
                wait_clear(
                    waker,
                    gicr::WAKER_CHILDREN_ASLEEP,
                    "GICR_WAKER.ChildrenAsleep stays set",
                )?;
                let sgi = rd + gicr::SGI_BASE;
                let group = read32(sgi + gicd::IGROUPR, "GICR_IGROUPR0 read")?;
                write32(sgi + gicd::IGROUPR, group | intids, "GICR_IGROUPR0 write")?;
                probe_priorities(sgi + gicd::IPRIORITYR, intids)?;
                write32(sgi + gicd::ISENABLER, intids, "GICR_ISENABLER0 write")?;
                init_system_registers()?;
                Ok(Target {
                    mpidr,
                    interface_mask: 0,
                })
            }
            Kind::V2 { cpu_interface } => {
                let gicd = self.distributor;
                write32(gicd + gicd::ISENABLER, intids, "GICD_ISENABLER0 write")?;
                probe_priorities(gicd + gicd::IPRIORITYR, intids)?;
                let mask = interface_mask(read32(gicd + gicd::ITARGETSR, "GICD_ITARGETSR0 read")?);
                write32(
                    cpu_interface + gicc::PMR,
                    u32::from(PRIORITY_MASK_ALL),
                    "GICC_PMR write",
                )?;
                write32(
                    cpu_interface + gicc::CTLR,
                    gicc::CTLR_ENABLE_GRP0,
                    "GICC_CTLR write",
                )?;
                Ok(Target {
                    mpidr,
                    interface_mask: mask,
                })
            }
        }
    }

    /// How SGIs name the calling vCPU (the same value [`Gic::init_this_cpu`] returned).
    pub fn this_cpu(&self) -> Target {
        let mpidr = cpu::mpidr() & cpu::MPIDR_AFFINITY_MASK;
        match self.kind {
            Kind::V3 { .. } => Target {
                mpidr,
                interface_mask: 0,
            },
            Kind::V2 { .. } => Target {
                mpidr,
                interface_mask: interface_mask(read(self.distributor + gicd::ITARGETSR)),
            },
        }
    }

    /// The calling vCPU's redistributor (RD_base; its SGI_base frame is 64 KiB above), GICv3
    /// only. Found by GICR_TYPER affinity once, then remembered.
    ///
    /// # Panics
    /// If no redistributor has the caller's affinity: the DTB and the GIC disagree.
    pub fn this_redistributor(&self) -> Option<usize> {
        let Kind::V3 { redistributors } = self.kind else {
            return None;
        };
        let mpidr = cpu::mpidr() & cpu::MPIDR_AFFINITY_MASK;
        let slot = REDISTRIBUTOR.get((mpidr & 0xff) as usize);
        if let Some(rd) = slot
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&rd| rd != 0)
        {
            return Some(rd);
        }
        match find_redistributor(redistributors, mpidr, |a| Ok(read(a))) {
            Ok(rd) => Some(rd),
            Err(_) => panic!("no redistributor has affinity {mpidr:#x}"),
        }
    }

    // ---- The CPU interface -------------------------------------------------------------

    /// Acknowledges the highest-priority pending interrupt: its raw IAR value (pass it to
    /// [`Gic::end`]), [`SPURIOUS`] in the INTID bits when nothing is pending. Works with IRQs
    /// masked, which is how a guest can poll.
    pub fn acknowledge(&self) -> u32 {
        match self.kind {
            // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt; the caller ends it.
            Kind::V3 { .. } => unsafe { read_sysreg!(icc_iar1_el1) as u32 },
            Kind::V2 { cpu_interface } => read(cpu_interface + GICC_IAR),
        }
    }

    /// Ends the interrupt `raw` from `acknowledge`: drops the running priority and, unless
    /// [`Gic::set_split_eoi`] is on, deactivates it.
    pub fn end(&self, raw: u32) {
        match self.kind {
            // SAFETY: writing back an acknowledged INTID only ends that interrupt.
            Kind::V3 { .. } => unsafe { write_sysreg!(icc_eoir1_el1, u64::from(raw)) },
            Kind::V2 { cpu_interface } => write(cpu_interface + GICC_EOIR, raw),
        }
    }

    /// Deactivates the interrupt `raw` (ICC_DIR_EL1 / GICC_DIR); only meaningful with
    /// [`Gic::set_split_eoi`] on, after [`Gic::end`] dropped its priority.
    pub fn deactivate(&self, raw: u32) {
        match self.kind {
            // SAFETY: deactivating an interrupt changes only GIC state.
            Kind::V3 { .. } => unsafe {
                write_sysreg!(icc_dir_el1, u64::from(raw));
                isb();
            },
            Kind::V2 { cpu_interface } => write(cpu_interface + gicc::DIR, raw),
        }
    }

    /// EOImode: `true` splits ending an interrupt into a priority drop ([`Gic::end`]) and a
    /// deactivation ([`Gic::deactivate`]); `false` (the reset value) does both in `end`.
    pub fn set_split_eoi(&self, split: bool) {
        match self.kind {
            Kind::V3 { .. } => {
                // SAFETY: ICC_CTLR_EL1.EOImode only changes what EOIR and DIR writes do.
                unsafe {
                    let ctlr = read_sysreg!(icc_ctlr_el1);
                    let ctlr = if split {
                        ctlr | ICC_CTLR_EOIMODE
                    } else {
                        ctlr & !ICC_CTLR_EOIMODE
                    };
                    write_sysreg!(icc_ctlr_el1, ctlr);
                }
                isb();
            }
            Kind::V2 { cpu_interface } => {
                let ctlr = read(cpu_interface + gicc::CTLR);
                let ctlr = if split {
                    ctlr | gicc::CTLR_EOIMODE
                } else {
                    ctlr & !gicc::CTLR_EOIMODE
                };
                write(cpu_interface + gicc::CTLR, ctlr);
            }
        }
    }

    /// Sets the priority mask: only interrupts with a priority value below `mask` are signalled.
    pub fn set_priority_mask(&self, mask: u8) {
        match self.kind {
            Kind::V3 { .. } => {
                // SAFETY: the priority mask only decides which interrupts are signalled.
                unsafe { write_sysreg!(icc_pmr_el1, u64::from(mask)) };
                isb();
            }
            Kind::V2 { cpu_interface } => write(cpu_interface + gicc::PMR, u32::from(mask)),
        }
    }

    /// The priority mask as the CPU interface reads it back (unimplemented low bits read 0).
    pub fn priority_mask(&self) -> u8 {
        match self.kind {
            // SAFETY: reading ICC_PMR_EL1 has no side effects.
            Kind::V3 { .. } => unsafe { read_sysreg!(icc_pmr_el1) as u8 },
            Kind::V2 { cpu_interface } => read(cpu_interface + gicc::PMR) as u8,
        }
    }

    /// The running priority: that of the most urgent active (not yet priority-dropped)
    /// interrupt, 0xFF when none.
    pub fn running_priority(&self) -> u8 {
        match self.kind {
            // SAFETY: reading ICC_RPR_EL1 has no side effects.
            Kind::V3 { .. } => unsafe { read_sysreg!(icc_rpr_el1) as u8 },
            Kind::V2 { cpu_interface } => read(cpu_interface + gicc::RPR) as u8,
        }
    }

    /// The INTID of the highest-priority pending interrupt, whatever the priority mask says
    /// ([`SPURIOUS`] when none); acknowledges nothing.
    pub fn highest_pending(&self) -> u32 {
        match self.kind {
            // SAFETY: reading ICC_HPPIR1_EL1 has no side effects.
            Kind::V3 { .. } => intid(unsafe { read_sysreg!(icc_hppir1_el1) } as u32),
            Kind::V2 { cpu_interface } => intid(read(cpu_interface + gicc::HPPIR)),
        }
    }

    /// The binary point that splits priorities into preemption groups (ICC_BPR1_EL1 or
    /// GICC_BPR): priority bits above it decide preemption.
    pub fn binary_point(&self) -> u8 {
        match self.kind {
            // SAFETY: reading ICC_BPR1_EL1 has no side effects.
            Kind::V3 { .. } => unsafe { read_sysreg!(icc_bpr1_el1) as u8 & 7 },
            Kind::V2 { cpu_interface } => read(cpu_interface + gicc::BPR) as u8 & 7,
        }
    }

    // ---- SGIs --------------------------------------------------------------------------

    /// Sends SGI `sgi` (0..15) to `to`.
    pub fn send_sgi(&self, sgi: u32, to: Target) {
        match self.kind {
            Kind::V3 { .. } => {
                let aff =
                    |level: u32| (to.mpidr >> (if level == 3 { 32 } else { level * 8 })) & 0xff;
                let value = (aff(3) << 48)
                    | (aff(2) << 32)
                    | (u64::from(sgi) << 24)
                    | (aff(1) << 16)
                    | (1 << (aff(0) & 0xf));
                write_sgi1r(value);
            }
            Kind::V2 { .. } => {
                let value =
                    gicd::SGIR_FILTER_LIST | (u32::from(to.interface_mask) << 16) | (sgi & 0xf);
                write(self.distributor + gicd::SGIR, value);
            }
        }
    }

    /// [`Gic::send_sgi`], with a refused write caught: for the first send.
    pub fn try_send_sgi(&self, sgi: u32, to: Target) -> Result<(), Refusal> {
        sysreg("SGI generation", || self.send_sgi(sgi, to))
    }

    /// Sends SGI `sgi` to every vCPU but the caller: ICC_SGI1R_EL1.IRM = 1, or GICD_SGIR's
    /// TargetListFilter = 0b01.
    pub fn send_sgi_to_others(&self, sgi: u32) {
        match self.kind {
            Kind::V3 { .. } => write_sgi1r(ICC_SGI1R_IRM | (u64::from(sgi & 0xf) << 24)),
            Kind::V2 { .. } => write(
                self.distributor + gicd::SGIR,
                gicd::SGIR_FILTER_OTHERS | (sgi & 0xf),
            ),
        }
    }

    /// Sends SGI `sgi` to the caller itself (GICv2: TargetListFilter = 0b10).
    pub fn send_sgi_to_self(&self, sgi: u32) {
        match self.kind {
            Kind::V3 { .. } => self.send_sgi(sgi, self.this_cpu()),
            Kind::V2 { .. } => write(
                self.distributor + gicd::SGIR,
                gicd::SGIR_FILTER_SELF | (sgi & 0xf),
            ),
        }
    }

    // ---- Per-INTID state ---------------------------------------------------------------

    /// The register frame that holds `intid`: the calling vCPU's SGI_base for a GICv3 SGI or
    /// PPI, else the distributor. Both lay the per-INTID arrays out at the same offsets.
    pub fn frame_of(&self, intid: u32) -> usize {
        match self.kind {
            Kind::V3 { .. } if intid < PRIVATE_COUNT => {
                self.this_redistributor().expect("GICv3") + gicr::SGI_BASE
            }
            _ => self.distributor,
        }
    }

    /// Address of the 32-bit word of the 1-bit-per-INTID array at `array` holding `intid`, and
    /// the INTID's bit in it.
    fn bit_of(&self, array: usize, intid: u32) -> (usize, u32) {
        (
            self.frame_of(intid) + array + (intid / 32) as usize * 4,
            1 << (intid % 32),
        )
    }

    fn read_bit(&self, array: usize, intid: u32) -> bool {
        let (word, bit) = self.bit_of(array, intid);
        read(word) & bit != 0
    }

    /// Writes 1 to `intid`'s bit of a write-1-to-set or write-1-to-clear array.
    fn write_bit(&self, array: usize, intid: u32) {
        let (word, bit) = self.bit_of(array, intid);
        write(word, bit);
    }

    /// Read-modify-writes `intid`'s byte of an 8-bit-per-INTID array (IPRIORITYR, ITARGETSR).
    fn write_byte(&self, array: usize, intid: u32, value: u8) {
        let word = self.frame_of(intid) + array + (intid & !3) as usize;
        let shift = (intid & 3) * 8;
        let old = read(word);
        write(word, (old & !(0xFF << shift)) | (u32::from(value) << shift));
    }

    fn read_byte(&self, array: usize, intid: u32) -> u8 {
        let word = self.frame_of(intid) + array + (intid & !3) as usize;
        (read(word) >> ((intid & 3) * 8)) as u8
    }

    /// Prepares `intid` for delivery to the calling vCPU without enabling it: Group 1 on GICv3,
    /// `priority`, edge- or level-triggered (SPIs; SGIs are always edge, PPIs keep theirs), and
    /// an SPI is routed to the caller.
    pub fn configure(&self, intid: u32, priority: u8, edge: bool) {
        if self.version() == 3 {
            let (word, bit) = self.bit_of(gicd::IGROUPR, intid);
            write(word, read(word) | bit);
        }
        self.set_priority(intid, priority);
        if intid >= PRIVATE_COUNT {
            let word = self.distributor + gicd::ICFGR + (intid / 16) as usize * 4;
            let bit = 2 << ((intid % 16) * 2);
            let old = read(word);
            write(word, if edge { old | bit } else { old & !bit });
            self.route_to_this_cpu(intid);
        }
    }

    /// Routes SPI `intid` to the calling vCPU: GICD_ITARGETSR (GICv2) or GICD_IROUTER (GICv3).
    pub fn route_to_this_cpu(&self, intid: u32) {
        match self.kind {
            Kind::V3 { .. } => {
                let mpidr = cpu::mpidr() & cpu::MPIDR_AFFINITY_MASK;
                let irouter = self.distributor + gicd::IROUTER + intid as usize * 8;
                // IROUTER has MPIDR's layout (Aff3 at 39:32); IRM = 0: this vCPU only.
                write(irouter, mpidr as u32);
                write(irouter + 4, (mpidr >> 32) as u32);
            }
            Kind::V2 { .. } => {
                let mask = self.this_cpu().interface_mask;
                self.write_byte(gicd::ITARGETSR, intid, mask);
            }
        }
    }

    /// Sets `intid`'s priority (lower values are more urgent).
    pub fn set_priority(&self, intid: u32, priority: u8) {
        self.write_byte(gicd::IPRIORITYR, intid, priority);
    }

    /// `intid`'s priority as read back (unimplemented low bits read 0).
    pub fn priority(&self, intid: u32) -> u8 {
        self.read_byte(gicd::IPRIORITYR, intid)
    }

    /// Enables or disables the forwarding of `intid`.
    pub fn set_enabled(&self, intid: u32, enabled: bool) {
        if enabled {
            self.write_bit(gicd::ISENABLER, intid);
        } else {
            self.write_bit(gicd::ICENABLER, intid);
            self.wait_for_writes(intid);
        }
    }

    /// Whether `intid` is enabled (ISENABLER).
    pub fn is_enabled(&self, intid: u32) -> bool {
        self.read_bit(gicd::ISENABLER, intid)
    }

    /// Sets or clears `intid`'s pending state through ISPENDR / ICPENDR; for a GICv2 SGI, whose
    /// ISPENDR bits are read-only, through SPENDSGIR / CPENDSGIR with the caller as sender.
    pub fn set_pending(&self, intid: u32, pending: bool) {
        if self.version() == 2 && intid < SGI_COUNT {
            let array = if pending {
                gicd::SPENDSGIR
            } else {
                gicd::CPENDSGIR
            };
            // One byte per SGI, one bit per sender; a byte access, since a word write would
            // also write the other three SGIs' bytes (QEMU's GICv2 pends an SGI even for a
            // zero byte).
            let mask = self.this_cpu().interface_mask;
            let byte = (self.distributor + array + intid as usize) as *mut u8;
            // SAFETY: GICD_SPENDSGIR / CPENDSGIR take byte accesses; the write changes only
            // this SGI's pending state.
            unsafe { byte.write_volatile(mask) };
            return;
        }
        self.write_bit(
            if pending {
                gicd::ISPENDR
            } else {
                gicd::ICPENDR
            },
            intid,
        );
    }

    /// Whether `intid` is pending, as ISPENDR reads.
    pub fn is_pending(&self, intid: u32) -> bool {
        self.read_bit(gicd::ISPENDR, intid)
    }

    /// Whether `intid` is pending, as ICPENDR reads (the same state as ISPENDR).
    pub fn is_pending_via_clear_register(&self, intid: u32) -> bool {
        self.read_bit(gicd::ICPENDR, intid)
    }

    /// Sets or clears `intid`'s active state through ISACTIVER / ICACTIVER.
    pub fn set_active(&self, intid: u32, active: bool) {
        self.write_bit(
            if active {
                gicd::ISACTIVER
            } else {
                gicd::ICACTIVER
            },
            intid,
        );
    }

    /// Whether `intid` is active, as ISACTIVER reads.
    pub fn is_active(&self, intid: u32) -> bool {
        self.read_bit(gicd::ISACTIVER, intid)
    }

    /// Whether `intid` is active, as ICACTIVER reads (the same state as ISACTIVER).
    pub fn is_active_via_clear_register(&self, intid: u32) -> bool {
        self.read_bit(gicd::ICACTIVER, intid)
    }

    /// GICv3: waits for GICD_CTLR.RWP (SPIs) or GICR_CTLR.RWP (SGIs, PPIs) to clear, after
    /// which a disable has taken effect. Nothing to wait for on GICv2.
    fn wait_for_writes(&self, intid: u32) {
        let (ctlr, rwp) = match self.kind {
            Kind::V2 { .. } => return,
            Kind::V3 { .. } if intid < PRIVATE_COUNT => (
                self.this_redistributor().expect("GICv3") + gicr::CTLR,
                gicr::CTLR_RWP,
            ),
            Kind::V3 { .. } => (self.distributor + gicd::CTLR, gicd::CTLR_RWP),
        };
        for _ in 0..MAX_POLLS {
            if read(ctlr) & rwp == 0 {
                return;
            }
        }
    }
}

/// The calling CPU interface's bit in GICv2 target lists, from GICD_ITARGETSR0: its banked
/// byte 0 names the reading interface. A uniprocessor GICv2 makes the target registers RAZ;
/// its one interface is number 0.
fn interface_mask(itargetsr0: u32) -> u8 {
    match itargetsr0 as u8 {
        0 => 1,
        mask => mask,
    }
}

/// ICC_SGI1R_EL1 = `value`; the ISB makes the SGI leave now.
fn write_sgi1r(value: u64) {
    // SAFETY: ICC_SGI1R_EL1 only raises an SGI.
    unsafe { write_sysreg!(icc_sgi1r_el1, value) };
    isb();
}

/// Sets the priority byte of each INTID in `intids` (a bit mask of INTIDs 0..31) to
/// [`DEFAULT_PRIORITY`] in the IPRIORITYR array at `base`, one probed read-modify-write per word.
fn probe_priorities(base: usize, intids: u32) -> Result<(), Refusal> {
    for intid in (0..32).filter(|i| intids & (1 << i) != 0) {
        let word = base + (intid & !3);
        let shift = (intid & 3) * 8;
        let value = read32(word, "IPRIORITYR read")?;
        let value = (value & !(0xFF << shift)) | (u32::from(DEFAULT_PRIORITY) << shift);
        write32(word, value, "IPRIORITYR write")?;
    }
    Ok(())
}

/// The RD_base of the redistributor whose GICR_TYPER affinity is `mpidr`'s, read with
/// `read_word`; remembered for [`Gic::this_redistributor`].
fn find_redistributor(
    base: usize,
    mpidr: u64,
    read_word: impl Fn(usize) -> Result<u32, Refusal>,
) -> Result<usize, Refusal> {
    // GICR_TYPER[63:32] holds Aff3.Aff2.Aff1.Aff0; MPIDR keeps Aff3 at [39:32].
    let affinity = (((mpidr >> 32) & 0xff) << 24) | (mpidr & 0xff_ffff);
    for index in 0..gicr::MAX {
        let rd = base + index * gicr::STRIDE;
        let low = read_word(rd + gicr::TYPER)?;
        let high = read_word(rd + gicr::TYPER + 4)?;
        if u64::from(high) == affinity {
            if let Some(slot) = REDISTRIBUTOR.get((mpidr & 0xff) as usize) {
                slot.store(rd, Ordering::Relaxed);
            }
            return Ok(rd);
        }
        if low & gicr::TYPER_LAST != 0 {
            break;
        }
    }
    Err(Refusal::plain("no redistributor has this vCPU's affinity"))
}

/// The GICv3 CPU interface through system registers: enabled, all priorities let through,
/// Group 1 on.
fn init_system_registers() -> Result<(), Refusal> {
    // One access per probe: a second refused access inside one probe would end the guest.
    let read_sre = || {
        // SAFETY: reading ICC_SRE_EL1 has no side effects.
        unsafe { read_sysreg!(icc_sre_el1) }
    };
    let mut sre = 0;
    sysreg("ICC_SRE_EL1 read", || sre = read_sre())?;
    sysreg("ICC_SRE_EL1 write", || {
        // SAFETY: setting SRE selects the system-register interface, the only one this driver
        // uses; DFB/DIB only stop FIQ/IRQ bypass. The ISB makes the change take effect.
        unsafe {
            write_sysreg!(icc_sre_el1, sre | ICC_SRE_EL1_ENABLE);
        }
        isb();
    })?;
    sysreg("ICC_SRE_EL1 read", || sre = read_sre())?;
    if sre & 1 == 0 {
        return Err(Refusal::plain(
            "ICC_SRE_EL1.SRE reads 0: no system-register CPU interface",
        ));
    }
    sysreg("ICC_PMR_EL1 write", || {
        // SAFETY: the priority mask only decides which interrupts are signalled.
        unsafe { write_sysreg!(icc_pmr_el1, u64::from(PRIORITY_MASK_ALL)) }
    })?;
    sysreg("ICC_IGRPEN1_EL1 write", || {
        // SAFETY: enabling Group 1 lets this guest's own interrupts be signalled; PSTATE.I
        // still decides when they are taken.
        unsafe {
            write_sysreg!(icc_igrpen1_el1, 1);
        }
        isb();
    })
}
