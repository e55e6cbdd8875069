//! The interrupt controller as the guest sees it: just enough of a GICv2 or GICv3 driver to
//! take the virtual timer's PPI and to bounce SGIs between two vCPUs.
//!
//! Veil's virtual GIC may be incomplete (or absent) when this guest runs, so every set-up
//! access goes through [`crate::probe`]: an access the hypervisor refuses comes back as a
//! [`Refusal`] naming the register, and the operation that needed it is reported unavailable
//! instead of ending the guest. Once set-up has worked, the timed paths use plain accesses.
//!
//! Interrupts are Group 1 (GICv3) or the single non-secure group (GICv2), so they arrive as
//! IRQs; every enabled interrupt gets priority 0x80 and the priority mask lets all through.

use veil_guest_rt::{cpu, dtb, read_sysreg, write_sysreg};

use crate::probe::{Refusal, read32, sysreg, write32};

/// INTID an acknowledge returns when nothing is pending.
pub const SPURIOUS: u32 = 1023;

/// Distributor registers (both versions).
const GICD_CTLR: usize = 0x000;
const GICD_ISENABLER0: usize = 0x100;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR0: usize = 0x800;
const GICD_SGIR: usize = 0xF00;
/// GICD_CTLR.RWP (GICv3): a register write is still taking effect.
const GICD_CTLR_RWP: u32 = 1 << 31;
/// GICD_CTLR (GICv3, as the non-secure or only security state sees it): ARE (bit 4),
/// EnableGrp1A / EnableGrp1 (bit 1), EnableGrp1 / EnableGrp0 (bit 0) — what Linux writes,
/// correct in both the one- and two-security-state views.
const GICD_CTLR_V3_ENABLE: u32 = (1 << 4) | (1 << 1) | 1;
/// GICD_CTLR.EnableGrp0 (GICv2 without security extensions): forward interrupts.
const GICD_CTLR_V2_ENABLE: u32 = 1;

/// GICv3 redistributor: RD_base registers, then the SGI_base frame 64 KiB above.
const GICR_TYPER: usize = 0x008;
const GICR_TYPER_LAST: u32 = 1 << 4;
const GICR_WAKER: usize = 0x014;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_SGI_BASE: usize = 0x1_0000;
const GICR_IGROUPR0: usize = 0x080;
const GICR_ISENABLER0: usize = 0x100;
const GICR_IPRIORITYR: usize = 0x400;
/// Distance between two vCPUs' redistributors (RD_base + SGI_base).
const GICR_STRIDE: usize = 0x2_0000;
/// Most redistributors searched for the caller's: the runtime's vCPU limit, with room.
const MAX_REDISTRIBUTORS: usize = 64;

/// GICv2 CPU interface registers.
const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
pub const GICC_IAR: usize = 0x00C;
pub const GICC_EOIR: usize = 0x010;

/// ICC_SRE_EL1: SRE (use the system registers), DFB and DIB (no FIQ/IRQ bypass).
const ICC_SRE_EL1_ENABLE: u64 = 0b111;
/// Priority of every interrupt this guest enables, and the mask that lets them all through.
const PRIORITY: u32 = 0x80;
const PRIORITY_MASK_ALL: u32 = 0xFF;
/// Polls of a "register write in progress" bit before giving up.
const MAX_POLLS: u32 = 100_000;

/// Polls `address` until `bits` read as zero.
fn wait_clear(address: usize, bits: u32, what: &'static str) -> Result<(), Refusal> {
    for _ in 0..MAX_POLLS {
        if read32(address, what)? & bits == 0 {
            return Ok(());
        }
    }
    Err(Refusal::plain(what))
}

/// Sets the priority byte of each INTID in `intids` (a bit mask of INTIDs 0..31) in the
/// IPRIORITYR array at `base`, one read-modify-write per word.
fn set_priorities(base: usize, intids: u32) -> Result<(), Refusal> {
    for intid in (0..32).filter(|i| intids & (1 << i) != 0) {
        let word = base + (intid & !3);
        let shift = (intid & 3) * 8;
        let value = read32(word, "IPRIORITYR read")?;
        let value = (value & !(0xFF << shift)) | (PRIORITY << shift);
        write32(word, value, "IPRIORITYR write")?;
    }
    Ok(())
}

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
#[derive(Clone, Copy, Default)]
pub struct Target {
    pub mpidr: u64,
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
        let ctlr = self.distributor + GICD_CTLR;
        match self.kind {
            Kind::V3 { .. } => {
                // Groups off before ARE may change, as the architecture asks; then on.
                write32(ctlr, 0, "GICD_CTLR write")?;
                wait_clear(ctlr, GICD_CTLR_RWP, "GICD_CTLR.RWP stays set")?;
                write32(ctlr, GICD_CTLR_V3_ENABLE, "GICD_CTLR write")?;
                wait_clear(ctlr, GICD_CTLR_RWP, "GICD_CTLR.RWP stays set")
            }
            Kind::V2 { .. } => write32(ctlr, GICD_CTLR_V2_ENABLE, "GICD_CTLR write"),
        }
    }

    /// Sets up the calling vCPU's part of the GIC with the private interrupts in `intids` (a
    /// bit mask of INTIDs 0..31) enabled, and returns how SGIs name this vCPU.
    pub fn init_this_cpu(&self, intids: u32) -> Result<Target, Refusal> {
        let mpidr = cpu::mpidr() & cpu::MPIDR_AFFINITY_MASK;
        match self.kind {
            Kind::V3 { redistributors } => {
                let rd = find_redistributor(redistributors, mpidr)?;
                let waker = rd + GICR_WAKER;
                let value = read32(waker, "GICR_WAKER read")?;
                write32(
                    waker,
                    value & !GICR_WAKER_PROCESSOR_SLEEP,
                    "GICR_WAKER write",
                )?;
                wait_clear(
                    waker,
                    GICR_WAKER_CHILDREN_ASLEEP,
                    "GICR_WAKER.ChildrenAsleep stays set",
                )?;
                let sgi = rd + GICR_SGI_BASE;
                let group = read32(sgi + GICR_IGROUPR0, "GICR_IGROUPR0 read")?;
                write32(sgi + GICR_IGROUPR0, group | intids, "GICR_IGROUPR0 write")?;
                set_priorities(sgi + GICR_IPRIORITYR, intids)?;
                write32(sgi + GICR_ISENABLER0, intids, "GICR_ISENABLER0 write")?;
                init_system_registers()?;
                Ok(Target {
                    mpidr,
                    interface_mask: 0,
                })
            }
            Kind::V2 { cpu_interface } => {
                let gicd = self.distributor;
                write32(gicd + GICD_ISENABLER0, intids, "GICD_ISENABLER0 write")?;
                set_priorities(gicd + GICD_IPRIORITYR, intids)?;
                // ITARGETSR0..7 are banked: byte 0 reads back this CPU interface's own bit.
                let mask = read32(gicd + GICD_ITARGETSR0, "GICD_ITARGETSR0 read")? as u8;
                write32(
                    cpu_interface + GICC_PMR,
                    PRIORITY_MASK_ALL,
                    "GICC_PMR write",
                )?;
                write32(cpu_interface + GICC_CTLR, 1, "GICC_CTLR write")?;
                Ok(Target {
                    mpidr,
                    interface_mask: mask,
                })
            }
        }
    }

    /// Acknowledges the highest-priority pending interrupt: its raw IAR value (pass it to
    /// [`Gic::end`]), [`SPURIOUS`] in the INTID bits when nothing is pending. Works with IRQs
    /// masked, which is how the IPI measurement polls.
    pub fn acknowledge(&self) -> u32 {
        match self.kind {
            // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt; the caller ends it.
            Kind::V3 { .. } => unsafe { read_sysreg!(icc_iar1_el1) as u32 },
            // SAFETY: as above, through GICC_IAR of the CPU interface set up earlier.
            Kind::V2 { cpu_interface } => unsafe {
                ((cpu_interface + GICC_IAR) as *const u32).read_volatile()
            },
        }
    }

    /// Ends (drops the priority of and deactivates) the interrupt `raw` from `acknowledge`.
    pub fn end(&self, raw: u32) {
        match self.kind {
            // SAFETY: writing back an acknowledged INTID only ends that interrupt.
            Kind::V3 { .. } => unsafe { write_sysreg!(icc_eoir1_el1, u64::from(raw)) },
            // SAFETY: as above, through GICC_EOIR.
            Kind::V2 { cpu_interface } => unsafe {
                ((cpu_interface + GICC_EOIR) as *mut u32).write_volatile(raw)
            },
        }
    }

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
                // SAFETY: ICC_SGI1R_EL1 only raises an SGI; the ISB makes it leave now.
                unsafe {
                    write_sysreg!(icc_sgi1r_el1, value);
                    core::arch::asm!("isb", options(nomem, nostack, preserves_flags));
                }
            }
            Kind::V2 { .. } => {
                let value = (u32::from(to.interface_mask) << 16) | sgi;
                // SAFETY: GICD_SGIR only raises an SGI (target-list filter 0: the listed CPUs).
                unsafe { ((self.distributor + GICD_SGIR) as *mut u32).write_volatile(value) };
            }
        }
    }

    /// [`Gic::send_sgi`], with a refused write caught: for the first send.
    pub fn try_send_sgi(&self, sgi: u32, to: Target) -> Result<(), Refusal> {
        sysreg("SGI generation", || self.send_sgi(sgi, to))
    }
}

/// The INTID bits of a raw acknowledge value.
pub fn intid(raw: u32) -> u32 {
    raw & 0x3FF
}

/// The RD_base of the redistributor whose GICR_TYPER affinity is `mpidr`'s.
fn find_redistributor(base: usize, mpidr: u64) -> Result<usize, Refusal> {
    // GICR_TYPER[63:32] holds Aff3.Aff2.Aff1.Aff0; MPIDR keeps Aff3 at [39:32].
    let affinity = (((mpidr >> 32) & 0xff) << 24) | (mpidr & 0xff_ffff);
    for index in 0..MAX_REDISTRIBUTORS {
        let rd = base + index * GICR_STRIDE;
        let low = read32(rd + GICR_TYPER, "GICR_TYPER read")?;
        let high = read32(rd + GICR_TYPER + 4, "GICR_TYPER read")?;
        if u64::from(high) == affinity {
            return Ok(rd);
        }
        if low & GICR_TYPER_LAST != 0 {
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
        // SAFETY: setting SRE selects the system-register interface, the only one this guest
        // uses; DFB/DIB only stop FIQ/IRQ bypass. The ISB makes the change take effect.
        unsafe {
            write_sysreg!(icc_sre_el1, sre | ICC_SRE_EL1_ENABLE);
            core::arch::asm!("isb", options(nomem, nostack, preserves_flags));
        }
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
            core::arch::asm!("isb", options(nomem, nostack, preserves_flags));
        }
    })
}
