//! The guest's register file as the exception vectors save and restore it.

/// General-purpose registers and the exception return state of one vCPU.
///
/// The layout is fixed: `_arch/aarch64/vectors.s` stores x0..x30 at offsets 0..240, ELR_EL2 at
/// 248 and SPSR_EL2 at 256.
#[repr(C)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    pub x: [u64; 31],
    /// ELR_EL2: where the guest resumes.
    pub pc: u64,
    /// SPSR_EL2: the guest's PSTATE to restore.
    pub spsr: u64,
}

const _: () = assert!(core::mem::offset_of!(GuestRegs, pc) == 248);
const _: () = assert!(core::mem::offset_of!(GuestRegs, spsr) == 256);

impl GuestRegs {
    /// Reads general-purpose register `n` as an instruction would: 31 is XZR in loads, stores
    /// and system-register moves.
    pub fn read(&self, n: u8) -> u64 {
        if n < 31 { self.x[n as usize] } else { 0 }
    }

    /// Writes general-purpose register `n`; writes to XZR (31) are discarded.
    pub fn write(&mut self, n: u8, value: u64) {
        if n < 31 {
            self.x[n as usize] = value;
        }
    }

    /// Moves past the trapped 32-bit instruction.
    pub fn skip_instruction(&mut self) {
        self.pc = self.pc.wrapping_add(4);
    }
}

/// SPSR value for entering a guest at EL1h (SP_EL1) with D, A, I and F masked, as a CPU comes
/// out of reset and as the Linux boot protocol requires.
pub const SPSR_EL1H_MASKED: u64 = 0b1111 << 6 | 0b0101;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xzr_reads_zero_and_ignores_writes() {
        let mut regs = GuestRegs::default();
        regs.write(31, 5);
        assert_eq!(regs.read(31), 0);
        regs.write(30, 7);
        assert_eq!(regs.read(30), 7);
        regs.pc = 0x4008_0000;
        regs.skip_instruction();
        assert_eq!(regs.pc, 0x4008_0004);
        assert_eq!(SPSR_EL1H_MASKED, 0x3c5);
    }
}
