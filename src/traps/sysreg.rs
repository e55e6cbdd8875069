//! Trapped system-register accesses (EC 0x18): one table from encoding to behaviour.
//!
//! What traps is decided in `cpu::el2` (HCR_EL2.TID3/TIDCP/TACR/TSW, MDCR_EL2, CNTHCTL_EL2);
//! what each trapped register does is decided here, by [`classify`]. An encoding Veil does not
//! know is UNDEFINED for the guest (an injected exception, logged once), never a Veil error.

use super::{
    Exit,
    esr::{Esr, SysRegAccess, SysRegEncoding},
    inject,
};
use crate::vm::vcpu::Vcpu;
use core::sync::atomic::{AtomicPtr, Ordering};

/// What Veil does with a trapped register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// An ID register: reads answer from the VM's sanitized table; writes are UNDEFINED.
    IdRegister,
    /// Reads as zero, writes ignored (hidden debug, PMU and auxiliary controls).
    RazWi,
    /// Data-cache maintenance by set/way: with HCR_EL2.SWIO, done as clean+invalidate.
    SetWay,
    /// A GICv3 SGI generation register (write-only): a virtual IPI through the vGIC.
    Sgi(crate::interrupts::vgic::SgiRegister),
    /// The EL1 physical timer (CNTHCTL_EL2.EL1PCEN = 0), emulated per vCPU.
    PhysTimer(crate::timer::ptimer::Register),
    /// Not emulated: UNDEFINED for the guest.
    Undefined,
}

/// A named row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: &'static str,
    pub behaviour: Behaviour,
}

const fn e(name: &'static str, behaviour: Behaviour) -> Entry {
    Entry { name, behaviour }
}

/// The table. Specific registers first, then whole classes of the encoding space.
pub fn classify(enc: SysRegEncoding) -> Entry {
    use Behaviour::*;
    let SysRegEncoding {
        op0,
        op1,
        crn,
        crm,
        op2,
    } = enc;
    match (op0, op1, crn, crm, op2) {
        // ID space, HCR_EL2.TID3.
        (3, 0, 0, 1..=7, _) => e("ID register", IdRegister),
        // ACTLR_EL1, HCR_EL2.TACR: IMPLEMENTATION DEFINED controls stay the host's.
        (3, 0, 1, 0, 1) => e("ACTLR_EL1", RazWi),
        // DC ISW / CSW / CISW, HCR_EL2.TSW.
        (1, 0, 7, 6, 2) => e("DC ISW", SetWay),
        (1, 0, 7, 10, 2) => e("DC CSW", SetWay),
        (1, 0, 7, 14, 2) => e("DC CISW", SetWay),
        // Debug registers (op0 = 2), MDCR_EL2.TDA/TDOSA/TDRA: the guest sees no debug
        // resources it could use to watch Veil or other VMs.
        // The allocated debug registers (breakpoints, watchpoints, DCC, OS lock, claim tags,
        // authentication status): hidden behind ID_AA64DFR0_EL1's minimum, read-as-zero.
        // Unallocated debug encodings stay UNDEFINED, as on hardware.
        (2, 0, 0 | 1 | 7, _, _) | (2, 3, 0, _, _) => e("debug register", RazWi),
        // PMU registers, MDCR_EL2.TPM/TPMCR (hidden in ID_AA64DFR0_EL1.PMUVer).
        (3, 3, 9, 12..=14, _) => e("PMU register", RazWi),
        (3, 0, 9, 14, 1 | 2) => e("PMINTEN", RazWi),
        (3, 3, 14, 8..=15, _) => e("PMU event counter", RazWi),
        // LORegion registers, HCR_EL2.TLOR (hidden in ID_AA64MMFR1_EL1).
        (3, 0, 10, 4, 0..=3 | 7) => e("LORegion register", RazWi),
        // The EL1 physical timer, CNTHCTL_EL2.EL1PCEN = 0.
        (3, 3, 14, 2, 0) => e(
            "CNTP_TVAL_EL0",
            PhysTimer(crate::timer::ptimer::Register::Tval),
        ),
        (3, 3, 14, 2, 1) => e(
            "CNTP_CTL_EL0",
            PhysTimer(crate::timer::ptimer::Register::Ctl),
        ),
        (3, 3, 14, 2, 2) => e(
            "CNTP_CVAL_EL0",
            PhysTimer(crate::timer::ptimer::Register::Cval),
        ),
        // GICv3 SGI generation: writes trap while HCR_EL2.IMO = 1.
        (3, 0, 12, 11, 5) => e(
            "ICC_SGI1R_EL1",
            Sgi(crate::interrupts::vgic::SgiRegister::Sgi1r),
        ),
        (3, 0, 12, 11, 6) => e(
            "ICC_ASGI1R_EL1",
            Sgi(crate::interrupts::vgic::SgiRegister::Asgi1r),
        ),
        (3, 0, 12, 11, 7) => e(
            "ICC_SGI0R_EL1",
            Sgi(crate::interrupts::vgic::SgiRegister::Sgi0r),
        ),
        // IMPLEMENTATION DEFINED space, HCR_EL2.TIDCP.
        (3, _, 11 | 15, _, _) => e("IMPLEMENTATION DEFINED register", Undefined),
        _ => e("unknown register", Undefined),
    }
}

/// The register classes (table rows, by name) already logged: one line per class keeps a guest
/// that touches hidden debug or PMU registers on every context switch from flooding the console.
static LOGGED: [AtomicPtr<u8>; 32] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 32];

/// Whether this is the first access of class `name` (and remembers it).
fn first_of_class(name: &'static str) -> bool {
    let key = name.as_ptr() as *mut u8;
    for slot in &LOGGED {
        match slot.compare_exchange(
            core::ptr::null_mut(),
            key,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return true,
            Err(existing) if existing == key => return false,
            Err(_) => {}
        }
    }
    false
}

fn log_once(enc: SysRegEncoding, entry: &Entry, read: bool, vcpu: &Vcpu) {
    if !first_of_class(entry.name) {
        return;
    }
    let what = if read { "read" } else { "write" };
    let (id, index, pc, name) = (vcpu.vm.id, vcpu.index, vcpu.regs.pc, entry.name);
    match entry.behaviour {
        // Hidden on purpose (the ID registers say so); guests probe them routinely.
        Behaviour::RazWi => log::info!(
            "VM {id} vCPU {index}: {name} {what} ({enc}) at PC {pc:#x}: read-as-zero/write-ignored; \
             further {name} accesses are not logged"
        ),
        _ => log::warn!(
            "VM {id} vCPU {index}: {name} {what} ({enc}) at PC {pc:#x}: UNDEFINED for the guest; \
             further {name} accesses are not logged"
        ),
    }
}

/// Handles a trapped MSR/MRS/SYS instruction.
pub fn handle(vcpu: &mut Vcpu, esr: Esr) -> Exit {
    let access = SysRegAccess::decode(esr.iss());
    let entry = classify(access.encoding);
    match (entry.behaviour, access.read) {
        (Behaviour::IdRegister, true) => {
            let value = vcpu.vm.id_regs.read(access.encoding).unwrap_or(0);
            vcpu.regs.write(access.register, value);
        }
        (Behaviour::RazWi, read) => {
            log_once(access.encoding, &entry, read, vcpu);
            if read {
                vcpu.regs.write(access.register, 0);
            }
        }
        (Behaviour::SetWay, _) => {
            // Set/way operations act on the physical caches, which the guest shares with Veil
            // and other VMs, so they cannot pass through. A guest loops over every set and way
            // of a level around turning its caches on or off; Veil answers the whole loop once,
            // when the loop reaches set 0 / way 0 (operand bits [31:4] all zero), by cleaning
            // and invalidating the VM's RAM by address — which is what the guest wanted: its
            // memory coherent with non-cacheable accesses.
            let operand = vcpu.regs.read(access.register);
            if (operand as u32) >> 4 == 0 {
                for chunk in &vcpu.vm.ram.chunks {
                    crate::memory::cache::clean_invalidate_dcache_range(
                        chunk.pa as usize,
                        chunk.size as usize,
                    );
                }
            }
        }
        (Behaviour::Sgi(register), false) => {
            let value = vcpu.regs.read(access.register);
            let targets = vcpu.vm.irq.vgic.write_icc_sgir(vcpu.index, value, register);
            vcpu.vm.irq.deliver(targets);
        }
        (Behaviour::PhysTimer(reg), read) => {
            if read {
                let value = crate::timer::guest_ptimer_access(vcpu, reg, None);
                vcpu.regs.write(access.register, value);
            } else {
                let value = vcpu.regs.read(access.register);
                crate::timer::guest_ptimer_access(vcpu, reg, Some(value));
            }
        }
        (Behaviour::IdRegister, false) | (Behaviour::Sgi(_), true) | (Behaviour::Undefined, _) => {
            log_once(access.encoding, &entry, access.read, vcpu);
            inject::undefined_instruction(&mut vcpu.regs);
            return Exit::Resume;
        }
    }
    vcpu.regs.skip_instruction();
    Exit::Resume
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Behaviour {
        classify(SysRegEncoding::new(op0, op1, crn, crm, op2)).behaviour
    }

    #[test]
    fn table() {
        assert_eq!(b(3, 0, 0, 4, 0), Behaviour::IdRegister, "ID_AA64PFR0_EL1");
        assert_eq!(b(3, 0, 0, 7, 7), Behaviour::IdRegister);
        assert_eq!(b(3, 0, 1, 0, 1), Behaviour::RazWi, "ACTLR_EL1");
        assert_eq!(b(2, 0, 0, 2, 4), Behaviour::RazWi, "DBGBVR0_EL1");
        assert_eq!(b(2, 3, 0, 4, 0), Behaviour::RazWi, "DBGDTR_EL0");
        assert_eq!(b(2, 0, 1, 0, 4), Behaviour::RazWi, "OSLAR_EL1");
        assert_eq!(
            b(2, 4, 0, 7, 0),
            Behaviour::Undefined,
            "DBGVCR32_EL2 from EL1"
        );
        assert_eq!(
            b(2, 1, 5, 0, 0),
            Behaviour::Undefined,
            "unallocated debug space"
        );
        assert_eq!(b(3, 3, 9, 12, 0), Behaviour::RazWi, "PMCR_EL0");
        assert_eq!(b(3, 3, 14, 8, 0), Behaviour::RazWi, "PMEVCNTR0_EL0");
        assert_eq!(b(1, 0, 7, 14, 2), Behaviour::SetWay, "DC CISW");
        assert_eq!(
            b(3, 1, 15, 2, 0),
            Behaviour::Undefined,
            "IMPDEF (Cortex-A72 CPUECTLR)"
        );
        assert_eq!(b(3, 0, 11, 0, 0), Behaviour::Undefined);
        assert_eq!(b(3, 4, 1, 1, 0), Behaviour::Undefined, "HCR_EL2 from EL1");
        assert_eq!(
            b(3, 3, 14, 2, 1),
            Behaviour::PhysTimer(crate::timer::ptimer::Register::Ctl),
            "CNTP_CTL_EL0"
        );
        assert_eq!(
            b(3, 0, 12, 11, 5),
            Behaviour::Sgi(crate::interrupts::vgic::SgiRegister::Sgi1r),
            "ICC_SGI1R_EL1"
        );
    }

    #[test]
    fn every_encoding_has_an_answer() {
        // The whole (op0, op1, CRn, CRm, op2) space classifies without panicking.
        for op0 in 0..4 {
            for op1 in 0..8 {
                for crn in 0..16 {
                    for crm in 0..16 {
                        for op2 in 0..8 {
                            let entry = classify(SysRegEncoding::new(op0, op1, crn, crm, op2));
                            assert!(!entry.name.is_empty());
                        }
                    }
                }
            }
        }
    }
}
