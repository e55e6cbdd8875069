//! Guest data aborts that reach Veil (EC 0x24): accesses to guest physical addresses stage 2
//! does not map. Those inside an emulated device go to it; anything else is the guest's error.

use super::{Exit, esr::{DataAbort, Esr, extend_load}};
use crate::vm::vcpu::Vcpu;

/// The faulting guest physical address: HPFAR_EL2.FIPA (bits [43:4]) holds IPA[51:12]; the
/// page offset comes from FAR_EL2.
pub const fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar >> 4) << 12) | (far & 0xfff)
}

/// Handles a stage-2 data abort from `vcpu`.
pub fn handle(vcpu: &mut Vcpu, esr: Esr, hpfar: u64, far: u64) -> Exit {
    let abort = DataAbort::decode(esr.iss());
    let ipa = fault_ipa(hpfar, far);
    let access = if abort.write { "write" } else { "read" };

    if !abort.isv {
        vcpu.vm.stop(format_args!(
            "data abort at IPA {ipa:#x}: a {access} the CPU gave no syndrome for (ISV=0, e.g. a \
             load/store pair or writeback form) at PC {:#x}",
            vcpu.regs.pc
        ));
        return Exit::VmEnded;
    }

    let reg_name = if abort.sixty_four { 'x' } else { 'w' };
    let Some((device, offset)) = vcpu.vm.mmio.find(ipa) else {
        vcpu.vm.stop(format_args!(
            "data abort at IPA {ipa:#x}: {}-byte {access} ({reg_name}{}) at PC {:#x}: no RAM or device there",
            abort.size, abort.register, vcpu.regs.pc
        ));
        return Exit::VmEnded;
    };

    let result = if abort.write {
        let value = vcpu.regs.read(abort.register);
        let mask = if abort.size == 8 { u64::MAX } else { (1u64 << (abort.size * 8)) - 1 };
        device.write(offset, abort.size, value & mask)
    } else {
        device.read(offset, abort.size).map(|value| {
            let value = extend_load(value, abort.size, abort.sign_extend, abort.sixty_four);
            vcpu.regs.write(abort.register, value);
        })
    };
    if result.is_err() {
        vcpu.vm.stop(format_args!(
            "{}-byte {access} of {} register {offset:#x} (IPA {ipa:#x}) at PC {:#x}: not a valid access",
            abort.size,
            device.name(),
            vcpu.regs.pc
        ));
        return Exit::VmEnded;
    }
    vcpu.regs.skip_instruction();
    Exit::Resume
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
}
