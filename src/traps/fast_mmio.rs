//! The short exit for emulated device accesses.
//!
//! A load or store to an emulated device is the most frequent exit that needs Rust: a console
//! polls UARTFR around every byte it writes, a GIC driver reads and writes the distributor.
//! For these the vectors (`_arch/aarch64/vectors.s`, `.Lfast_dabt`) save the general-purpose
//! registers but not ELR_EL2 and SPSR_EL2, and call [`handle_mmio_exit`]; on the way back they
//! reload only x0–x18 and x30, the registers a Rust call may clobber (AAPCS64), unless the
//! access loaded into one of x19–x29. The handler does only what such an access needs: decode
//! the syndrome, find the device, perform the access, move ELR_EL2 past the instruction, and
//! refill the list registers if the access made an interrupt deliverable.
//!
//! It takes an access only when all of it fits that shape (`takes`, on `esr::DataAbort`):
//! - a stage-2 translation fault with ISS.ISV = 1 (the syndrome describes the access), not on
//!   a stage-1 walk;
//! - the guest's data accesses are little-endian (SCTLR_EL1.EE and E0E clear);
//! - a device on the VM's bus accepts it.
//!
//! Everything else — an access nobody answers, with its log line and injected abort, the
//! instruction decoding of ISV = 0 accesses, big-endian guests — returns [`FULL_EXIT`]: the
//! vectors complete the register file and take the full exit, whose `data_abort::handle`
//! starts the access over. That is sound because a device that refuses an access leaves its
//! state as it was (the [`MmioDevice`](crate::devices::MmioDevice) contract), and this path
//! changes nothing before the device has accepted.

use super::data_abort::fault_ipa;
use super::esr::{DataAbort, Esr, extend_load};
use crate::vm::vcpu::Vcpu;

/// [`handle_mmio_exit`]'s answer: the access is performed, return to the guest.
pub const DONE: u64 = 0;
/// [`handle_mmio_exit`]'s answer: take the full exit.
pub const FULL_EXIT: u64 = 1;
/// [`handle_mmio_exit`]'s answer: the access is performed and loaded one of x19–x29, which the
/// vectors must reload too (`MMIO_DONE_RELOAD_ALL` in `vectors.s`).
pub const DONE_RELOAD_ALL: u64 = 2;

/// Whether the short exit takes `abort`: a stage-2 translation fault (the one kind for which
/// HPFAR_EL2 holds the IPA, and the only kind Veil's stage 2 produces) with a valid syndrome,
/// not on a stage-1 table walk.
const fn takes(abort: &DataAbort) -> bool {
    abort.isv && !abort.stage1_walk && abort.is_translation_fault()
}

/// Performs the device access `esr` describes for `vcpu`, the vCPU loaded on this CPU, or
/// says that the full exit must. Called by the vectors with the general-purpose registers in
/// `vcpu.regs` (its ELR and SPSR slots are stale: ELR_EL2 itself is stepped).
///
/// # Safety
/// Only the vectors call this, on the CPU's EL2 stack, with the loaded vCPU (whose register
/// file is the first field of its `Vcpu`, as the per-CPU block's pointer is).
#[unsafe(no_mangle)]
extern "C" fn handle_mmio_exit(vcpu: &mut Vcpu, esr: u64) -> u64 {
    let access = DataAbort::decode(Esr(esr).iss());
    if !takes(&access) {
        return FULL_EXIT;
    }
    if arch::guest_may_be_big_endian() {
        return FULL_EXIT;
    }
    let ipa = fault_ipa(arch::hpfar(), arch::far());
    let vm = &*vcpu.vm;
    let Some((device, offset)) = vm.mmio.find(ipa) else {
        return FULL_EXIT;
    };
    let size = access.size;
    if access.write {
        let value = vcpu.regs.read(access.register) & size_mask(size);
        if device.write(offset, size, value).is_err() {
            return FULL_EXIT;
        }
    } else {
        let Ok(value) = device.read(offset, size) else {
            return FULL_EXIT;
        };
        vcpu.regs.write(
            access.register,
            extend_load(value, size, access.sign_extend, access.sixty_four),
        );
        if access.register.wrapping_sub(19) <= 29 - 19 {
            finish(vcpu);
            return DONE_RELOAD_ALL;
        }
    }
    finish(vcpu);
    DONE
}

/// What every performed access ends with.
fn finish(vcpu: &mut Vcpu) {
    arch::skip_instruction();
    // The access may have made an interrupt deliverable to this vCPU (a UART's line, a
    // distributor enable): its list registers must show it before the guest runs on.
    if vcpu.vm.irq.take_dirty(vcpu.index) {
        crate::interrupts::sync_list_registers(vcpu);
    }
}

/// The low `size` bytes.
const fn size_mask(size: u8) -> u64 {
    u64::MAX >> (64 - 8 * size as u32)
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use aarch64_cpu::registers::{ELR_EL2, FAR_EL2, HPFAR_EL2, SCTLR_EL1};
    use tock_registers::interfaces::{Readable, Writeable};

    pub fn hpfar() -> u64 {
        HPFAR_EL2.get()
    }

    pub fn far() -> u64 {
        FAR_EL2.get()
    }

    /// SCTLR_EL1.EE (bit 25, EL1 data) or E0E (bit 24, EL0 data) set: the guest may make
    /// big-endian accesses, whose byte order the full exit takes care of.
    pub fn guest_may_be_big_endian() -> bool {
        SCTLR_EL1.get() & (0b11 << 24) != 0
    }

    /// Moves the guest past the (32-bit) instruction that faulted.
    pub fn skip_instruction() {
        ELR_EL2.set(ELR_EL2.get().wrapping_add(4));
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod arch {
    pub fn hpfar() -> u64 {
        0
    }
    pub fn far() -> u64 {
        0
    }
    pub fn guest_may_be_big_endian() -> bool {
        true
    }
    pub fn skip_instruction() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ESR_EL2 for a data abort from a lower EL with the given ISS fields.
    fn esr(isv: bool, sas: u64, sse: bool, srt: u64, sf: bool, s1ptw: bool, wnr: bool) -> u64 {
        (0x24 << 26)
            | (1 << 25)
            | (isv as u64) << 24
            | sas << 22
            | (sse as u64) << 21
            | srt << 16
            | (sf as u64) << 15
            | (s1ptw as u64) << 7
            | (wnr as u64) << 6
            | 0x07 // DFSC: translation fault, level 3
    }

    #[test]
    fn takes_valid_syndromes_of_translation_faults_only() {
        let decode = |e: u64| DataAbort::decode(Esr(e).iss());
        let translation = esr(true, 2, false, 1, false, false, false);
        assert!(takes(&decode(translation)));
        for level in 0..4 {
            assert!(takes(&decode((translation & !0x3f) | 0b00_0100 | level)));
        }
        // Access flag (0b0010LL), permission (0b0011LL), external abort, address size.
        for dfsc in [0b00_1001, 0b00_1111, 0x10, 0b00_0001] {
            assert!(
                !takes(&decode((translation & !0x3f) | dfsc)),
                "DFSC {dfsc:#x}"
            );
        }
        assert!(
            !takes(&decode(esr(false, 2, false, 1, false, false, false))),
            "ISV = 0"
        );
        assert!(
            !takes(&decode(esr(true, 2, false, 1, false, true, false))),
            "S1PTW"
        );
    }

    #[test]
    fn size_masks() {
        assert_eq!(size_mask(1), 0xff);
        assert_eq!(size_mask(2), 0xffff);
        assert_eq!(size_mask(4), 0xffff_ffff);
        assert_eq!(size_mask(8), u64::MAX);
    }
}
