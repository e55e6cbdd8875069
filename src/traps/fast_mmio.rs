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
//! It takes an access only when all of it fits that shape ([`FastAccess::decode`]):
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
use super::esr::extend_load;
use crate::vm::vcpu::Vcpu;

/// [`handle_mmio_exit`]'s answer: the access is performed, return to the guest.
pub const DONE: u64 = 0;
/// [`handle_mmio_exit`]'s answer: take the full exit.
pub const FULL_EXIT: u64 = 1;
/// [`handle_mmio_exit`]'s answer: the access is performed and loaded one of x19–x29, which the
/// vectors must reload too (`MMIO_DONE_RELOAD_ALL` in `vectors.s`).
pub const DONE_RELOAD_ALL: u64 = 2;

/// ISS bits of a data abort (ARM ARM D24.2.45, ESR_EL2 for EC 0x24).
const ISV: u64 = 1 << 24;
const SAS_SHIFT: u64 = 22;
const SSE: u64 = 1 << 21;
const SRT_SHIFT: u64 = 16;
const SF: u64 = 1 << 15;
const S1PTW: u64 = 1 << 7;
const WNR: u64 = 1 << 6;
/// DFSC[5:2] = 0b0001: a translation fault (at any level), the one kind for which HPFAR_EL2
/// holds the faulting IPA and the only kind Veil's stage 2 produces.
const DFSC_KIND: u64 = 0b11_1100;
const DFSC_TRANSLATION: u64 = 0b00_0100;

/// A data abort the short exit can perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastAccess {
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// The transfer register (31: XZR).
    pub register: u8,
    pub write: bool,
    pub sign_extend: bool,
    pub sixty_four: bool,
}

impl FastAccess {
    /// The access `esr` describes, if it has the shape the short exit takes.
    pub const fn decode(esr: u64) -> Option<Self> {
        if esr & (ISV | S1PTW | DFSC_KIND) != ISV | DFSC_TRANSLATION {
            return None;
        }
        let register = ((esr >> SRT_SHIFT) & 31) as u8;
        Some(FastAccess {
            size: 1 << ((esr >> SAS_SHIFT) & 3),
            register,
            write: esr & WNR != 0,
            sign_extend: esr & SSE != 0,
            sixty_four: esr & SF != 0,
        })
    }
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
    let Some(access) = FastAccess::decode(esr) else {
        return FULL_EXIT;
    };
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
    use crate::traps::esr::DataAbort;

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
    fn agrees_with_the_full_decoder_where_it_takes_the_access() {
        // Every combination of the fields the short exit reads.
        for bits in 0..(1u64 << 11) {
            let isv = bits & 1 != 0;
            let sas = (bits >> 1) & 3;
            let sse = bits & 8 != 0;
            let sf = bits & 16 != 0;
            let s1ptw = bits & 32 != 0;
            let wnr = bits & 64 != 0;
            let srt = (bits >> 7) & 15;
            for srt in [srt, srt + 16] {
                let e = esr(isv, sas, sse, srt, sf, s1ptw, wnr);
                let full = DataAbort::decode((e & 0x1ff_ffff) as u32);
                match FastAccess::decode(e) {
                    Some(fast) => {
                        assert!(full.isv && !full.stage1_walk, "{e:#x}");
                        assert_eq!(fast.size, full.size, "{e:#x}");
                        assert_eq!(fast.register, full.register, "{e:#x}");
                        assert_eq!(fast.write, full.write, "{e:#x}");
                        assert_eq!(fast.sign_extend, full.sign_extend, "{e:#x}");
                        assert_eq!(fast.sixty_four, full.sixty_four, "{e:#x}");
                    }
                    None => assert!(
                        !full.isv || full.stage1_walk || !full.is_translation_fault(),
                        "{e:#x} left to the full exit without a reason"
                    ),
                }
            }
        }
    }

    #[test]
    fn only_translation_faults_are_taken() {
        let translation = esr(true, 2, false, 1, false, false, false);
        assert!(FastAccess::decode(translation).is_some());
        for level in 0..4 {
            assert!(FastAccess::decode((translation & !0x3f) | 0b00_0100 | level).is_some());
        }
        // Access flag (0b0010LL), permission (0b0011LL), synchronous external abort (0x10).
        for dfsc in [0b00_1001, 0b00_1111, 0x10, 0b00_0001] {
            assert_eq!(
                FastAccess::decode((translation & !0x3f) | dfsc),
                None,
                "DFSC {dfsc:#x}"
            );
        }
    }

    #[test]
    fn size_masks() {
        assert_eq!(size_mask(1), 0xff);
        assert_eq!(size_mask(2), 0xffff);
        assert_eq!(size_mask(4), 0xffff_ffff);
        assert_eq!(size_mask(8), u64::MAX);
    }
}
