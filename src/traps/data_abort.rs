//! Guest data aborts that reach Veil (EC 0x24): accesses to guest physical addresses stage 2
//! does not map. An access inside an emulated device is performed on it; anything else — no
//! RAM or device there, a register the device refuses, an instruction Veil cannot decode — is
//! answered as hardware would: a synchronous external abort injected into the guest, with a
//! log line naming the VM, the address and the access.
//!
//! With ISS.ISV = 1 the syndrome describes the access. With ISV = 0 (load/store pair,
//! writeback and register-offset forms) Veil fetches the instruction from guest memory and
//! decodes it ([`super::insn`]).
//!
//! Device models speak little-endian values (the device's bytes in address order). A guest
//! whose data accesses are big-endian (SCTLR_EL1.EE at EL1, E0E at EL0, PSTATE.E in AArch32)
//! assembles the same bytes the other way round, so each element is byte-reversed between the
//! guest's register and the device ([`device_order`]), before a load is extended.

use super::{
    Exit,
    esr::{DataAbort, Esr, extend_load},
    inject, insn,
};
use crate::vm::vcpu::Vcpu;

/// The faulting guest physical address: HPFAR_EL2.FIPA (bits [43:4]) holds IPA[51:12]; the
/// page offset comes from FAR_EL2.
pub const fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar >> 4) << 12) | (far & 0xfff)
}

/// SPSR.M[4]: the guest was in AArch32.
const SPSR_AARCH32: u64 = 1 << 4;
/// SPSR.E (AArch32 only): data accesses are big-endian.
const SPSR_E: u64 = 1 << 9;
/// SCTLR_EL1.EE: EL1 data accesses are big-endian.
const SCTLR_EE: u64 = 1 << 25;
/// SCTLR_EL1.E0E: EL0 (AArch64) data accesses are big-endian.
const SCTLR_E0E: u64 = 1 << 24;

/// Whether the guest's data accesses at the state in `spsr` are big-endian, given its
/// SCTLR_EL1.
pub const fn big_endian_data(spsr: u64, sctlr_el1: u64) -> bool {
    if spsr & SPSR_AARCH32 != 0 {
        spsr & SPSR_E != 0
    } else if spsr & 0b1100 == 0 {
        sctlr_el1 & SCTLR_E0E != 0
    } else {
        sctlr_el1 & SCTLR_EE != 0
    }
}

/// The `size` low bytes of `value` in the order the other side sees them: unchanged for a
/// little-endian guest, byte-reversed for a big-endian one. The same conversion serves both
/// directions; bytes above `size` are dropped.
pub const fn device_order(value: u64, size: u8, big_endian: bool) -> u64 {
    let bits = size as u32 * 8;
    let value = if bits >= 64 {
        value
    } else {
        value & ((1u64 << bits) - 1)
    };
    if big_endian && bits > 8 && bits <= 64 {
        value.swap_bytes() >> (64 - bits)
    } else {
        value
    }
}

/// Handles a stage-2 data abort from `vcpu`.
pub fn handle(vcpu: &mut Vcpu, esr: Esr, hpfar: u64, far: u64) -> Exit {
    let abort = DataAbort::decode(esr.iss());
    if !abort.is_translation_fault() {
        // Veil's stage 2 maps RAM and passed-through devices fully (access flag set, read-write),
        // so nothing else should reach it; HPFAR_EL2 is not even valid for every other kind.
        return refuse(
            vcpu,
            far,
            abort.write,
            format_args!(
                "stage-2 fault with DFSC {:#04x} (not a translation fault) at VA {far:#x}",
                abort.status
            ),
        );
    }
    let ipa = fault_ipa(hpfar, far);
    if abort.stage1_walk {
        return refuse(
            vcpu,
            far,
            abort.write,
            format_args!("guest page-table walk at IPA {ipa:#x}: not RAM"),
        );
    }
    if abort.isv {
        single_access(vcpu, &abort, ipa, far)
    } else {
        decoded_access(vcpu, &abort, ipa, far)
    }
}

/// Injects a synchronous external abort for the access at `far`, and says why.
#[cold]
fn refuse(vcpu: &mut Vcpu, far: u64, write: bool, why: core::fmt::Arguments) -> Exit {
    log::warn!(
        "VM {} \"{}\" vCPU {}: {why} (PC {:#x}); injected a synchronous external abort",
        vcpu.vm.id,
        vcpu.vm.name,
        vcpu.index,
        vcpu.regs.pc
    );
    inject::data_abort(&mut vcpu.regs, far, write);
    Exit::Resume
}

/// An access the syndrome describes (ISV = 1): one register, one width. The common case of the
/// whole I/O path, kept short: no message is built unless the access is refused.
fn single_access(vcpu: &mut Vcpu, abort: &DataAbort, ipa: u64, far: u64) -> Exit {
    let Some((device, offset)) = vcpu.vm.mmio.find(ipa) else {
        return refuse_single(vcpu, abort, ipa, far, None);
    };
    let big_endian = big_endian_data(vcpu.regs.spsr, arch::guest_sctlr());
    let ok = if abort.write {
        let value = device_order(vcpu.regs.read(abort.register), abort.size, big_endian);
        device.write(offset, abort.size, value).is_ok()
    } else {
        match device.read(offset, abort.size) {
            Ok(value) => {
                let value = device_order(value, abort.size, big_endian);
                vcpu.regs.write(
                    abort.register,
                    extend_load(value, abort.size, abort.sign_extend, abort.sixty_four),
                );
                true
            }
            Err(_) => false,
        }
    };
    if !ok {
        let name = device.name();
        return refuse_single(vcpu, abort, ipa, far, Some((name, offset)));
    }
    vcpu.regs.skip_instruction();
    Exit::Resume
}

/// Refuses an ISV = 1 access: nothing at `ipa`, or the device (`name`, register `offset`) said no.
#[cold]
fn refuse_single(
    vcpu: &mut Vcpu,
    abort: &DataAbort,
    ipa: u64,
    far: u64,
    device: Option<(&str, u64)>,
) -> Exit {
    let access = if abort.write { "write" } else { "read" };
    let reg = if abort.sixty_four { 'x' } else { 'w' };
    match device {
        None => refuse(
            vcpu,
            far,
            abort.write,
            format_args!(
                "{}-byte {access} ({reg}{}) at IPA {ipa:#x}: no RAM or device there",
                abort.size, abort.register
            ),
        ),
        Some((name, offset)) => refuse(
            vcpu,
            far,
            abort.write,
            format_args!(
                "{}-byte {access} of {name} register {offset:#x} (IPA {ipa:#x}): not a valid access",
                abort.size
            ),
        ),
    }
}

/// An access without syndrome (ISV = 0): decode the instruction and perform each element.
fn decoded_access(vcpu: &mut Vcpu, abort: &DataAbort, ipa: u64, far: u64) -> Exit {
    let Some(word) = fetch_instruction(vcpu) else {
        return refuse(
            vcpu,
            far,
            abort.write,
            format_args!("access at IPA {ipa:#x} by an instruction Veil cannot read"),
        );
    };
    let Some(access) = insn::decode(word) else {
        return refuse(
            vcpu,
            far,
            abort.write,
            format_args!(
                "access at IPA {ipa:#x} by instruction {word:#010x}, which Veil does not emulate on devices"
            ),
        );
    };
    let spsr = vcpu.regs.spsr;
    let regs = &vcpu.regs;
    let plan = match insn::plan(&access, far, ipa, |operand| match operand {
        insn::Operand::Gpr(n) => regs.read(n),
        insn::Operand::Sp => arch::read_guest_sp(spsr),
    }) {
        Ok(plan) => plan,
        Err(e) => {
            return refuse(
                vcpu,
                far,
                abort.write,
                format_args!("access at IPA {ipa:#x} by {word:#010x}: {e:?}"),
            );
        }
    };
    let vm = vcpu.vm.clone();
    let big_endian = big_endian_data(spsr, arch::guest_sctlr());
    let completion = insn::perform(&plan, |element| {
        let (device, offset) = vm.mmio.find(element.ipa).ok_or(element.ipa)?;
        let size = element.size;
        match element.kind {
            insn::ElementKind::Store { value } => device
                .write(offset, size, device_order(value, size, big_endian))
                .map(|_| 0),
            insn::ElementKind::Load { .. } => device
                .read(offset, size)
                .map(|value| device_order(value, size, big_endian)),
        }
        .map_err(|_| element.ipa)
    });
    match completion {
        Ok(done) => {
            for &(reg, value) in done.loaded() {
                vcpu.regs.write(reg, value);
            }
            if let Some(wb) = done.writeback {
                if wb.base == 31 {
                    arch::write_guest_sp(spsr, wb.value);
                } else {
                    vcpu.regs.write(wb.base, wb.value);
                }
            }
            vcpu.regs.skip_instruction();
            Exit::Resume
        }
        Err(bad) => refuse(
            vcpu,
            far,
            abort.write,
            format_args!(
                "access at IPA {bad:#x} by {word:#010x}: no device there or not a valid access"
            ),
        ),
    }
}

/// Reads the 32-bit instruction at the guest's PC through its own translation.
fn fetch_instruction(vcpu: &Vcpu) -> Option<u32> {
    let ipa = arch::translate_guest_va(vcpu.regs.pc)?;
    let pa = vcpu.vm.ram.pa_of(ipa)?;
    if pa % 4 != 0 {
        return None;
    }
    // SAFETY: `pa` lies in this VM's RAM, which Veil maps read-write; an aligned word read.
    Some(unsafe { core::ptr::read_volatile(pa as *const u32) })
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use aarch64_cpu::registers::{PAR_EL1, SCTLR_EL1, SP_EL0, SP_EL1};
    use core::arch::asm;
    use tock_registers::interfaces::{Readable, Writeable};

    /// SPSR.M[0] (SPSel): 1 = the guest used SP_EL1 (EL1h), 0 = SP_EL0.
    fn uses_sp_el1(spsr: u64) -> bool {
        spsr & 0b1101 == 0b0101
    }

    pub fn read_guest_sp(spsr: u64) -> u64 {
        if uses_sp_el1(spsr) {
            SP_EL1.get()
        } else {
            SP_EL0.get()
        }
    }

    pub fn write_guest_sp(spsr: u64, value: u64) {
        if uses_sp_el1(spsr) {
            SP_EL1.set(value)
        } else {
            SP_EL0.set(value)
        }
    }

    /// The running guest's SCTLR_EL1 (Veil runs at EL2 without VHE, so this is the guest's).
    pub fn guest_sctlr() -> u64 {
        SCTLR_EL1.get()
    }

    /// The guest physical address of guest virtual address `va`, through the guest's stage 1
    /// (AT S1E1R; with its MMU off VA = IPA). PAR_EL1 is the guest's register: it is restored.
    pub fn translate_guest_va(va: u64) -> Option<u64> {
        let saved = PAR_EL1.get();
        // SAFETY: AT only writes PAR_EL1, which is saved and restored around it.
        unsafe { asm!("at s1e1r, {}", "isb", in(reg) va, options(nostack)) };
        let par = PAR_EL1.get();
        PAR_EL1.set(saved);
        // PAR_EL1.F (bit 0) = the translation failed; PA[47:12] in bits [47:12].
        (par & 1 == 0).then(|| (par & 0x0000_ffff_ffff_f000) | (va & 0xfff))
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod arch {
    pub fn read_guest_sp(_spsr: u64) -> u64 {
        0
    }
    pub fn write_guest_sp(_spsr: u64, _value: u64) {}
    pub fn guest_sctlr() -> u64 {
        0
    }
    pub fn translate_guest_va(_va: u64) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipa_from_hpfar_and_far() {
        // IPA 0x0900_0018: HPFAR.FIPA = 0x9000 (IPA >> 12) at bit 4.
        assert_eq!(fault_ipa(0x9000 << 4, 0xffff_0000_dead_b018), 0x0900_0018);
        assert_eq!(fault_ipa(0x1_0000 << 4, 0x0), 0x1000_0000);
        // A 48-bit IPA.
        assert_eq!(fault_ipa(0xffff_ffff_f << 4, 0xfff), 0xffff_ffff_ffff);
    }

    #[test]
    fn endianness_by_state() {
        const EL0T: u64 = 0b0000;
        const EL1H: u64 = 0b0101;
        const AARCH32_USR: u64 = 0b1_0000;
        assert!(!big_endian_data(EL1H, 0));
        assert!(big_endian_data(EL1H, SCTLR_EE));
        assert!(!big_endian_data(EL1H, SCTLR_E0E));
        assert!(big_endian_data(EL0T, SCTLR_E0E));
        assert!(!big_endian_data(EL0T, SCTLR_EE));
        // AArch32 follows PSTATE.E, not SCTLR_EL1.
        assert!(big_endian_data(AARCH32_USR | SPSR_E, 0));
        assert!(!big_endian_data(AARCH32_USR, SCTLR_EE | SCTLR_E0E));
    }

    #[test]
    fn device_order_swaps_within_the_access() {
        // A big-endian 32-bit load of the bytes 11 00 00 00 reads 0x1100_0000.
        assert_eq!(device_order(0x11, 4, true), 0x1100_0000);
        assert_eq!(device_order(0x0c07_0000, 4, true), 0x70c);
        assert_eq!(device_order(0x1234, 2, true), 0x3412);
        assert_eq!(
            device_order(0x0102_0304_0506_0708, 8, true),
            0x0807_0605_0403_0201
        );
        // Bytes have no order; bytes above the access are dropped either way.
        assert_eq!(device_order(0xffab, 1, true), 0xab);
        assert_eq!(device_order(0xdead_1234, 2, false), 0x1234);
        assert_eq!(device_order(0xdead_1234, 2, true), 0x3412);
        // Swapped before extension: 0x80 00 as a big-endian halfword is negative.
        assert_eq!(
            extend_load(device_order(0x0080, 2, true), 2, true, true),
            0xffff_ffff_ffff_8000
        );
    }
}
