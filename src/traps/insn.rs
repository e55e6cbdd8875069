//! Decoding a trapped A64 load or store from its instruction word — pure, host-tested.
//!
//! When a guest's access to an emulated device faults, the CPU usually describes it in the
//! data abort syndrome (ESR_EL2.ISS.ISV = 1) and [`super::esr::DataAbort`] is all Veil needs.
//! For some instructions it does not (ISV = 0): load/store pairs, pre- and post-indexed forms,
//! register-offset forms on some cores, SIMD&FP registers. Linux's MMIO accessors and
//! compiler-generated code use all of these, so the data abort handler fetches the faulting
//! instruction from guest memory and hands the word to [`decode`].
//!
//! Encodings follow the Arm ARM (DDI 0487), section C4.1 "A64 instruction set encoding",
//! "Loads and Stores" group. Decoded here:
//!
//! - single register, GPR and SIMD&FP: unsigned offset (`LDR x0, [x1, #8]`), unscaled
//!   (`LDUR`), pre-index (`[x1, #8]!`), post-index (`[x1], #8`), register offset
//!   (`[x1, w2, sxtw #3]`) and unprivileged (`LDTR`), in every width and extension
//!   (`LDRB/LDRH/LDRSB/LDRSH/LDRSW` and stores);
//! - pairs, GPR and SIMD&FP: `LDP/STP/LDPSW` with signed offset, pre- and post-index, and the
//!   non-temporal `LDNP/STNP`;
//! - acquire/release: `LDAR/STLR`, `LDLAR/STLLR`, `LDAPR`, `LDAPUR*/STLUR*`.
//!
//! Everything else is `None` and the caller answers the guest with an abort: exclusives,
//! atomics and compare-and-swap (a device register cannot take part in a read-modify-write),
//! PC-relative literals (their data sits beside code, never in a device), SIMD structure
//! loads (`LD1..LD4`), MTE tag accesses, pointer-authenticated loads, prefetches (which do
//! not fault), and encodings the Arm ARM leaves unallocated or CONSTRAINED UNPREDICTABLE.
//!
//! The data abort handler's part, in order:
//!
//! ```text
//! let access = decode(word)?;                          // None: inject an abort
//! let plan = plan(&access, far, ipa, |r| read_reg(r))?; // Err: inject an abort
//! let done = perform(&plan, |e| bus access of e)?;     // Err: inject an abort
//! write done.loaded() registers and done.writeback, then skip the instruction
//! ```
//!
//! [`plan`] turns a decoded [`Access`], the guest's registers and the fault address into
//! device accesses and the base register update; [`perform`] runs them and returns the
//! register writes.

use super::esr::extend_load;

/// What the instruction does with memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemOp {
    /// A load. `sign_extend` and `dest_64` mean what ESR's SSE and SF do: the element is sign-
    /// (else zero-) extended into a 64-bit X (else 32-bit W) register. Not meaningful for
    /// SIMD&FP loads.
    Load {
        sign_extend: bool,
        dest_64: bool,
    },
    Store,
}

/// How a register offset is extended before it is shifted and added to the base
/// (the `option` field of the register-offset form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// option 0b010: the low 32 bits, zero-extended.
    Uxtw,
    /// option 0b011: the whole 64-bit register (`LSL` / `UXTX`).
    Lsl,
    /// option 0b110: the low 32 bits, sign-extended.
    Sxtw,
    /// option 0b111: the whole 64-bit register.
    Sxtx,
}

/// What is added to the base register to form the address of the first element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// A byte offset, already scaled; 0 for post-indexed forms.
    Imm(i64),
    /// `Xm`/`Wm` (31 = the zero register) extended, then shifted left by `shift`.
    Reg { rm: u8, extend: Extend, shift: u8 },
}

/// A base register update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writeback {
    /// Rn; 31 is SP.
    pub base: u8,
    /// Added to the base register. Pre-index: before the access too (the address is
    /// base + offset); post-index: after it (the address is the old base).
    pub offset: i64,
    pub post_index: bool,
}

/// A decoded load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub op: MemOp,
    /// Bytes per element: 1, 2, 4, 8 or 16 (16 only for SIMD&FP Q registers).
    pub size: u8,
    /// Rt, then Rt2 for pairs (31 when there is no pair). As data registers 31 is XZR/WZR; for
    /// SIMD&FP these are V register numbers.
    pub regs: [u8; 2],
    /// Two elements, at the address and at address + `size`.
    pub pair: bool,
    /// Rn; 31 is SP.
    pub base: u8,
    /// Added to the base for the address of the first element.
    pub offset: Offset,
    pub writeback: Option<Writeback>,
    /// Load-acquire or store-release semantics (`LDAR`, `STLR`, `LDAPR`, ...).
    pub acquire_release: bool,
    /// The data registers are SIMD&FP registers, which Veil does not emulate.
    pub simd_fp: bool,
}

impl Access {
    /// The number of elements: 2 for pairs, else 1.
    pub const fn elements(&self) -> usize {
        if self.pair { 2 } else { 1 }
    }

    /// The number of bytes the instruction accesses.
    pub const fn bytes(&self) -> u64 {
        self.size as u64 * self.elements() as u64
    }

    pub const fn is_write(&self) -> bool {
        matches!(self.op, MemOp::Store)
    }
}

/// Bits `hi..=lo` of `insn`.
const fn field(insn: u32, hi: u32, lo: u32) -> u32 {
    (insn >> lo) & ((1 << (hi - lo + 1)) - 1)
}

const fn bit(insn: u32, n: u32) -> bool {
    insn & (1 << n) != 0
}

/// `value`'s low `bits` bits as a two's complement number.
const fn sign_extend(value: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((value as i64) << shift) >> shift
}

/// Rt, Rn and Rt2 sit at the same place in every form decoded here.
const fn rt(insn: u32) -> u8 {
    field(insn, 4, 0) as u8
}
const fn rn(insn: u32) -> u8 {
    field(insn, 9, 5) as u8
}
const fn rt2(insn: u32) -> u8 {
    field(insn, 14, 10) as u8
}

/// Decodes the load or store `insn`; `None` for anything Veil cannot emulate as device
/// accesses (see the module documentation).
pub fn decode(insn: u32) -> Option<Access> {
    // Masks over bits [29:21] and [11:10] pick the encoding class (C4.1.x tables); V (bit 26)
    // is left out where GPR and SIMD&FP forms share a class.
    let access = if insn & 0x3b00_0000 == 0x3900_0000 {
        single_unsigned_offset(insn)
    } else if insn & 0x3b20_0000 == 0x3800_0000 {
        single_imm9(insn)
    } else if insn & 0x3b20_0c00 == 0x3820_0800 {
        single_register_offset(insn)
    } else if insn & 0x3fff_fc00 == 0x38bf_c000 {
        // "Atomic memory operations" class: only LDAPR (A=1, R=0, Rs=11111, o3=1, opc=100)
        // is a plain load. The rest read-modify-write memory.
        Some(simple(
            insn,
            MemOp::Load {
                sign_extend: false,
                dest_64: field(insn, 31, 30) == 3,
            },
        ))
    } else if insn & 0x3a00_0000 == 0x2800_0000 {
        pair(insn)
    } else if insn & 0x3fbf_7c00 == 0x089f_7c00 {
        // "Load/store ordered": o2=1, o1=0, Rs and Rt2 all ones. L (bit 22) loads; o0
        // (bit 15) = 1 is LDAR/STLR, 0 the LORegion LDLAR/STLLR, which are the same to a
        // device. Rs and Rt2 are only "should be ones" fields, but a word that breaks them
        // is refused rather than guessed at: assemblers never emit one, and a later
        // extension may give it a meaning.
        let op = if bit(insn, 22) {
            MemOp::Load {
                sign_extend: false,
                dest_64: field(insn, 31, 30) == 3,
            }
        } else {
            MemOp::Store
        };
        Some(simple(insn, op))
    } else if insn & 0x3f20_0c00 == 0x1900_0000 {
        // LDAPUR*/STLUR* (FEAT_LRCPC2): GPR only, unscaled signed offset, no writeback.
        let size = field(insn, 31, 30);
        gpr_op(size, field(insn, 23, 22)).map(|op| Access {
            offset: Offset::Imm(sign_extend(field(insn, 20, 12), 9)),
            ..simple(insn, op)
        })
    } else {
        None
    }?;
    sane(access)
}

/// A single-register access at `[Rn]` with acquire/release semantics and the width in
/// bits [31:30] (the ordered forms).
fn simple(insn: u32, op: MemOp) -> Access {
    Access {
        op,
        size: 1 << field(insn, 31, 30),
        regs: [rt(insn), 31],
        pair: false,
        base: rn(insn),
        offset: Offset::Imm(0),
        writeback: None,
        acquire_release: true,
        simd_fp: false,
    }
}

/// The operation of a GPR single-register form from its `size` and `opc` fields.
fn gpr_op(size: u32, opc: u32) -> Option<MemOp> {
    match (opc, size) {
        (0b00, _) => Some(MemOp::Store),
        (0b01, _) => Some(MemOp::Load {
            sign_extend: false,
            dest_64: size == 3,
        }),
        // LDRSB/LDRSH/LDRSW into an X register.
        (0b10, 0..=2) => Some(MemOp::Load {
            sign_extend: true,
            dest_64: true,
        }),
        // LDRSB/LDRSH into a W register.
        (0b11, 0..=1) => Some(MemOp::Load {
            sign_extend: true,
            dest_64: false,
        }),
        // size 11, opc 10 is PRFM/PRFUM (a prefetch never faults); the rest are unallocated.
        _ => None,
    }
}

/// The element size and operation of a SIMD&FP single-register form: B, H, S, D by `size`,
/// and Q when `size` = 00 and opc<1> = 1.
fn simd_op(size: u32, opc: u32) -> Option<(u8, MemOp)> {
    let bytes = match (size, opc >> 1) {
        (s, 0) => 1 << s,
        (0, 1) => 16,
        _ => return None,
    };
    let op = if opc & 1 == 1 {
        MemOp::Load {
            sign_extend: false,
            dest_64: bytes >= 8,
        }
    } else {
        MemOp::Store
    };
    Some((bytes, op))
}

/// The element size and operation of a single-register form (bits [31:30] size, [26] V,
/// [23:22] opc).
fn single_op(insn: u32) -> Option<(u8, MemOp, bool)> {
    let (size, opc) = (field(insn, 31, 30), field(insn, 23, 22));
    if bit(insn, 26) {
        simd_op(size, opc).map(|(bytes, op)| (bytes, op, true))
    } else {
        gpr_op(size, opc).map(|op| (1 << size, op, false))
    }
}

fn single(insn: u32, size: u8, op: MemOp, simd_fp: bool, offset: Offset) -> Access {
    Access {
        op,
        size,
        regs: [rt(insn), 31],
        pair: false,
        base: rn(insn),
        offset,
        writeback: None,
        acquire_release: false,
        simd_fp,
    }
}

/// `LDR Xt, [Xn, #imm12 * size]`: an unsigned offset scaled by the element size.
fn single_unsigned_offset(insn: u32) -> Option<Access> {
    let (size, op, simd_fp) = single_op(insn)?;
    let offset = (field(insn, 21, 10) as i64) * size as i64;
    Some(single(insn, size, op, simd_fp, Offset::Imm(offset)))
}

/// The 9-bit signed unscaled immediate forms, told apart by bits [11:10].
fn single_imm9(insn: u32) -> Option<Access> {
    let (size, op, simd_fp) = single_op(insn)?;
    let imm = sign_extend(field(insn, 20, 12), 9);
    let base = rn(insn);
    let pre = Some(Writeback {
        base,
        offset: imm,
        post_index: false,
    });
    let post = Some(Writeback {
        base,
        offset: imm,
        post_index: true,
    });
    let (offset, writeback) = match field(insn, 11, 10) {
        0b00 => (imm, None), // LDUR/STUR
        0b01 => (0, post),
        // LDTR/STTR: the access is made with EL0 permissions, which stage 1 checked before
        // the stage-2 fault; to a device it is an ordinary access. No SIMD&FP form exists.
        0b10 if !simd_fp => (imm, None),
        0b11 => (imm, pre),
        _ => return None,
    };
    Some(Access {
        writeback,
        ..single(insn, size, op, simd_fp, Offset::Imm(offset))
    })
}

/// `LDR Xt, [Xn, Xm{, extend {#amount}}]`.
fn single_register_offset(insn: u32) -> Option<Access> {
    let (size, op, simd_fp) = single_op(insn)?;
    let extend = match field(insn, 15, 13) {
        0b010 => Extend::Uxtw,
        0b011 => Extend::Lsl,
        0b110 => Extend::Sxtw,
        0b111 => Extend::Sxtx,
        _ => return None, // option<1> = 0 is unallocated
    };
    // S scales the index by the element size; for bytes the amount is 0 either way.
    let shift = if bit(insn, 12) {
        size.trailing_zeros() as u8
    } else {
        0
    };
    let offset = Offset::Reg {
        rm: field(insn, 20, 16) as u8,
        extend,
        shift,
    };
    Some(single(insn, size, op, simd_fp, offset))
}

/// The load/store pair class: bits [31:30] opc, [26] V, [24:23] addressing, [22] L,
/// [21:15] imm7 scaled by the element size.
fn pair(insn: u32) -> Option<Access> {
    let (opc, load) = (field(insn, 31, 30), bit(insn, 22));
    let index = field(insn, 24, 23);
    let simd_fp = bit(insn, 26);
    let (size, op): (u8, MemOp) = if simd_fp {
        let size = match opc {
            0b00 => 4,
            0b01 => 8,
            0b10 => 16,
            _ => return None,
        };
        let op = if load {
            MemOp::Load {
                sign_extend: false,
                dest_64: size >= 8,
            }
        } else {
            MemOp::Store
        };
        (size, op)
    } else {
        match (opc, load) {
            (0b00, false) | (0b10, false) => (4 << (opc >> 1), MemOp::Store),
            (0b00, true) => (
                4,
                MemOp::Load {
                    sign_extend: false,
                    dest_64: false,
                },
            ),
            (0b10, true) => (
                8,
                MemOp::Load {
                    sign_extend: false,
                    dest_64: true,
                },
            ),
            // LDPSW; it has no non-temporal form.
            (0b01, true) if index != 0b00 => (
                4,
                MemOp::Load {
                    sign_extend: true,
                    dest_64: true,
                },
            ),
            // opc 01 with L = 0 is STGP (it writes allocation tags); opc 11 is unallocated.
            _ => return None,
        }
    };
    let imm = sign_extend(field(insn, 21, 15), 7) * size as i64;
    let base = rn(insn);
    let (offset, writeback) = match index {
        0b00 | 0b10 => (imm, None), // LDNP/STNP, and the signed offset form
        0b01 => (
            0,
            Some(Writeback {
                base,
                offset: imm,
                post_index: true,
            }),
        ),
        _ => (
            imm,
            Some(Writeback {
                base,
                offset: imm,
                post_index: false,
            }),
        ),
    };
    Some(Access {
        op,
        size,
        regs: [rt(insn), rt2(insn)],
        pair: true,
        base,
        offset: Offset::Imm(offset),
        writeback,
        acquire_release: false,
        simd_fp,
    })
}

/// Refuses the register combinations the Arm ARM leaves CONSTRAINED UNPREDICTABLE for loads
/// (a pair loading one register twice; a load with writeback into its own base), for which
/// no single answer is right. The architecture lets these be UNDEFINED, so an abort is a
/// permitted outcome. Stores with writeback that store their base store its old value, which
/// is also a permitted outcome, so they are kept.
fn sane(access: Access) -> Option<Access> {
    let MemOp::Load { .. } = access.op else {
        return Some(access);
    };
    if access.pair && access.regs[0] == access.regs[1] {
        return None;
    }
    if let Some(wb) = access.writeback {
        let clash = |r: u8| !access.simd_fp && r == wb.base;
        if wb.base != 31 && (clash(access.regs[0]) || (access.pair && clash(access.regs[1]))) {
            return None;
        }
    }
    Some(access)
}

/// A register the planner needs the value of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// X0..X30; 31 is the zero register and must read as 0.
    Gpr(u8),
    /// The guest's current stack pointer: SP_EL0 or SP_EL1 as SPSR_EL2.M says.
    Sp,
}

/// What one element access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementKind {
    /// Read `size` bytes, extend them as told, put them in `dest` (31: discard).
    Load {
        dest: u8,
        sign_extend: bool,
        dest_64: bool,
    },
    /// Write the low `size` bytes of `value` (already masked).
    Store { value: u64 },
}

/// One device access: `size` bytes at guest physical address `ipa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    pub ipa: u64,
    pub size: u8,
    pub kind: ElementKind,
}

/// The new value of a base register after writeback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseUpdate {
    /// 31 is SP (the one [`Operand::Sp`] read), not XZR.
    pub base: u8,
    pub value: u64,
}

/// The accesses an instruction makes, in address order, and its base register update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    elements: [Element; 2],
    count: usize,
    pub writeback: Option<BaseUpdate>,
}

impl Plan {
    pub fn elements(&self) -> &[Element] {
        &self.elements[..self.count]
    }
}

/// Why an access cannot be emulated; the guest gets an abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// SIMD&FP registers are not emulated.
    SimdFp,
    /// The fault address is not one the instruction accesses: the word fetched is not the
    /// instruction that faulted (the guest rewrote it) or the registers changed.
    OutsideAccess,
    /// Part of the access lies outside the faulting 4 KiB page, whose guest physical address
    /// Veil does not know without walking the guest's page tables.
    CrossesPage,
}

/// Translation granule every stage-1 configuration shares: within it, virtual and physical
/// addresses differ by a constant.
const PAGE_MASK: u64 = 0xfff;

/// Address bits compared between the instruction's address and FAR_EL2. With top-byte-ignore
/// the tag in bits [63:56] takes no part in translation and FAR may not report it.
const VA_MASK: u64 = (1 << 56) - 1;

/// Works out the device accesses of `access`, which faulted at virtual address `fault_va`
/// (FAR_EL2) and guest physical address `fault_ipa`, reading the guest's registers with
/// `read`.
///
/// The address comes from the base and offset registers, not from FAR alone, because for a
/// pair FAR may name either element. Elements must lie in the same 4 KiB page as the fault.
/// Store values and the writeback value are read before anything is written, so a store
/// of its own base register stores the old value.
pub fn plan(
    access: &Access,
    fault_va: u64,
    fault_ipa: u64,
    read: impl Fn(Operand) -> u64,
) -> Result<Plan, PlanError> {
    if access.simd_fp {
        return Err(PlanError::SimdFp);
    }
    let base = if access.base == 31 {
        read(Operand::Sp)
    } else {
        read(Operand::Gpr(access.base))
    };
    let offset = match access.offset {
        Offset::Imm(imm) => imm as u64,
        Offset::Reg { rm, extend, shift } => {
            let index = read(Operand::Gpr(rm));
            let extended = match extend {
                Extend::Uxtw => index as u32 as u64,
                Extend::Sxtw => index as u32 as i32 as i64 as u64,
                Extend::Lsl | Extend::Sxtx => index,
            };
            // `shift` is at most 4 (16-byte elements); the mask keeps a forged Access from
            // overflowing the shift.
            extended << (shift & 63)
        }
    };
    let address = base.wrapping_add(offset);

    // Where the fault lies in the access, then where the access lies in physical memory.
    let into = fault_va.wrapping_sub(address) & VA_MASK;
    if into >= access.bytes() {
        return Err(PlanError::OutsideAccess);
    }
    if fault_ipa & PAGE_MASK < into {
        return Err(PlanError::CrossesPage);
    }
    let first = fault_ipa - into;
    let last = first
        .checked_add(access.bytes() - 1)
        .ok_or(PlanError::CrossesPage)?;
    if last & !PAGE_MASK != fault_ipa & !PAGE_MASK {
        return Err(PlanError::CrossesPage);
    }

    let size = access.size;
    let mask = if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    };
    let element = |i: usize| {
        let reg = access.regs[i];
        let kind = match access.op {
            MemOp::Load {
                sign_extend,
                dest_64,
            } => ElementKind::Load {
                dest: reg,
                sign_extend,
                dest_64,
            },
            MemOp::Store => ElementKind::Store {
                value: read(Operand::Gpr(reg)) & mask,
            },
        };
        Element {
            ipa: first + (i as u64) * size as u64,
            size,
            kind,
        }
    };
    let first_element = element(0);
    let elements = [
        first_element,
        if access.pair {
            element(1)
        } else {
            first_element
        },
    ];
    let writeback = access.writeback.map(|wb| BaseUpdate {
        base: wb.base,
        value: base.wrapping_add(wb.offset as u64),
    });
    Ok(Plan {
        elements,
        count: access.elements(),
        writeback,
    })
}

/// The register writes that finish an emulated instruction. Loaded registers never alias the
/// written-back base ([`decode`] refuses such words), so they may be written in any order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    loaded: [(u8, u64); 2],
    count: usize,
    pub writeback: Option<BaseUpdate>,
}

impl Completion {
    /// (register, value) for each loaded general-purpose register, extended as the
    /// instruction would; register 31 is XZR (a write to discard).
    pub fn loaded(&self) -> &[(u8, u64)] {
        &self.loaded[..self.count]
    }
}

/// Performs `plan`'s element accesses in address order through `access` (which returns the
/// value read for a load, anything for a store) and returns the register writes to make.
///
/// The first error stops the instruction with no register written, as if it had faulted;
/// device side effects of elements already performed stay, as they would on hardware when
/// the second access of a pair faults.
pub fn perform<E>(
    plan: &Plan,
    mut access: impl FnMut(&Element) -> Result<u64, E>,
) -> Result<Completion, E> {
    let mut loaded = [(31, 0); 2];
    let mut count = 0;
    for element in plan.elements() {
        let value = access(element)?;
        if let ElementKind::Load {
            dest,
            sign_extend,
            dest_64,
        } = element.kind
        {
            loaded[count] = (dest, extend_load(value, element.size, sign_extend, dest_64));
            count += 1;
        }
    }
    Ok(Completion {
        loaded,
        count,
        writeback: plan.writeback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;
    use std::string::String;
    use std::vec::Vec;

    /// A compact, assembler-like summary of a decode, so tables read like disassembly:
    /// `[simd ][ar ]{ld|st}[p][s]{size}[x|w] t{rt}[,t{rt2}] [{x<n>|sp}[±imm|,<rm> <ext> <n>]]`
    /// then `!` (pre-index) or ` post±imm`; `-` for `None`.
    fn describe(access: Option<Access>) -> String {
        let Some(a) = access else { return "-".into() };
        let mut s = String::new();
        if a.simd_fp {
            s += "simd ";
        }
        if a.acquire_release {
            s += "ar ";
        }
        let pair = if a.pair { "p" } else { "" };
        match a.op {
            MemOp::Store => s += &format!("st{pair}{}", a.size),
            MemOp::Load {
                sign_extend,
                dest_64,
            } => {
                s += &format!("ld{pair}{}{}", if sign_extend { "s" } else { "" }, a.size);
                if !a.simd_fp {
                    s += if dest_64 { "x" } else { "w" };
                }
            }
        }
        s += &format!(" t{}", a.regs[0]);
        if a.pair {
            s += &format!(",t{}", a.regs[1]);
        }
        let reg = |n: u8, zero: &str| {
            if n == 31 {
                String::from(zero)
            } else {
                format!("x{n}")
            }
        };
        s += &format!(" [{}", reg(a.base, "sp"));
        match a.offset {
            Offset::Imm(0) => {}
            Offset::Imm(i) => s += &format!("{i:+}"),
            Offset::Reg { rm, extend, shift } => {
                let ext = match extend {
                    Extend::Uxtw => "uxtw",
                    Extend::Lsl => "lsl",
                    Extend::Sxtw => "sxtw",
                    Extend::Sxtx => "sxtx",
                };
                s += &format!(",{} {ext} {shift}", reg(rm, "xzr"));
            }
        }
        s += "]";
        match a.writeback {
            None => {}
            Some(wb) => {
                assert_eq!(wb.base, a.base);
                if wb.post_index {
                    assert_eq!(a.offset, Offset::Imm(0));
                    s += &format!(" post{:+}", wb.offset);
                } else {
                    assert_eq!(a.offset, Offset::Imm(wb.offset));
                    s += "!";
                }
            }
        }
        s
    }

    /// Words assembled by `aarch64-linux-gnu-as -march=armv8.7-a+rcpc+lse+memtag+ls64+pauth`
    /// and read back with `objdump -d`; the expected summaries were written from the
    /// assembly text, not from the decoder.
    const REAL: &[(u32, &str, &str)] = &[
        (0xf9400020, "ldr x0, [x1]", "ld8x t0 [x1]"),
        (0xb9400462, "ldr w2, [x3, #4]", "ld4w t2 [x3+4]"),
        (0xf97fffe4, "ldr x4, [sp, #32760]", "ld8x t4 [sp+32760]"),
        (0xb97ffcc5, "ldr w5, [x6, #16380]", "ld4w t5 [x6+16380]"),
        (0x397ffd07, "ldrb w7, [x8, #4095]", "ld1w t7 [x8+4095]"),
        (0x797ffd49, "ldrh w9, [x10, #8190]", "ld2w t9 [x10+8190]"),
        (0x3980058b, "ldrsb x11, [x12, #1]", "lds1x t11 [x12+1]"),
        (0x39c001cd, "ldrsb w13, [x14]", "lds1w t13 [x14]"),
        (0x7980060f, "ldrsh x15, [x16, #2]", "lds2x t15 [x16+2]"),
        (0x79c00e51, "ldrsh w17, [x18, #6]", "lds2w t17 [x18+6]"),
        (0xb9800a93, "ldrsw x19, [x20, #8]", "lds4x t19 [x20+8]"),
        (0xf90006d5, "str x21, [x22, #8]", "st8 t21 [x22+8]"),
        (0xb9000317, "str w23, [x24]", "st4 t23 [x24]"),
        (0x39000f59, "strb w25, [x26, #3]", "st1 t25 [x26+3]"),
        (0x7900077f, "strh wzr, [x27, #2]", "st2 t31 [x27+2]"),
        (0xf90003ff, "str xzr, [sp]", "st8 t31 [sp]"),
        (0xf8500020, "ldur x0, [x1, #-256]", "ld8x t0 [x1-256]"),
        (0xb84ff041, "ldur w1, [x2, #255]", "ld4w t1 [x2+255]"),
        (0x385ff083, "ldurb w3, [x4, #-1]", "ld1w t3 [x4-1]"),
        (0x789fd0c5, "ldursh x5, [x6, #-3]", "lds2x t5 [x6-3]"),
        (0xb88013e7, "ldursw x7, [sp, #1]", "lds4x t7 [sp+1]"),
        (0xb81fc128, "stur w8, [x9, #-4]", "st4 t8 [x9-4]"),
        (0x7800116a, "sturh w10, [x11, #1]", "st2 t10 [x11+1]"),
        (0xf8408c20, "ldr x0, [x1, #8]!", "ld8x t0 [x1+8]!"),
        (0xb8500fe2, "ldr w2, [sp, #-256]!", "ld4w t2 [sp-256]!"),
        (0x38401483, "ldrb w3, [x4], #1", "ld1w t3 [x4] post+1"),
        (0x785fe4c5, "ldrh w5, [x6], #-2", "ld2w t5 [x6] post-2"),
        (0xb88ff507, "ldrsw x7, [x8], #255", "lds4x t7 [x8] post+255"),
        (0xf81f0d49, "str x9, [x10, #-16]!", "st8 t9 [x10-16]!"),
        (0xb800458b, "str w11, [x12], #4", "st4 t11 [x12] post+4"),
        (0x381fffed, "strb w13, [sp, #-1]!", "st1 t13 [sp-1]!"),
        (0xf8626820, "ldr x0, [x1, x2]", "ld8x t0 [x1,x2 lsl 0]"),
        (
            0xf8657883,
            "ldr x3, [x4, x5, lsl #3]",
            "ld8x t3 [x4,x5 lsl 3]",
        ),
        (
            0xb86848e6,
            "ldr w6, [x7, w8, uxtw]",
            "ld4w t6 [x7,x8 uxtw 0]",
        ),
        (
            0xb86b5949,
            "ldr w9, [x10, w11, uxtw #2]",
            "ld4w t9 [x10,x11 uxtw 2]",
        ),
        (
            0xf86ddbec,
            "ldr x12, [sp, w13, sxtw #3]",
            "ld8x t12 [sp,x13 sxtw 3]",
        ),
        (
            0x7870f9ee,
            "ldrh w14, [x15, x16, sxtx #1]",
            "ld2w t14 [x15,x16 sxtx 1]",
        ),
        (
            0x38737a51,
            "ldrb w17, [x18, x19, lsl #0]",
            "ld1w t17 [x18,x19 lsl 0]",
        ),
        (
            0x38736a51,
            "ldrb w17, [x18, x19]",
            "ld1w t17 [x18,x19 lsl 0]",
        ),
        (
            0x38b6cab4,
            "ldrsb x20, [x21, w22, sxtw]",
            "lds1x t20 [x21,x22 sxtw 0]",
        ),
        (0xb83f6b17, "str w23, [x24, xzr]", "st4 t23 [x24,xzr lsl 0]"),
        (
            0x783b5b59,
            "strh w25, [x26, w27, uxtw #1]",
            "st2 t25 [x26,x27 uxtw 1]",
        ),
        (0xf8408820, "ldtr x0, [x1, #8]", "ld8x t0 [x1+8]"),
        (0x381ff862, "sttrb w2, [x3, #-1]", "st1 t2 [x3-1]"),
        (0x78c008a4, "ldtrsh w4, [x5]", "lds2w t4 [x5]"),
        (0xa9400440, "ldp x0, x1, [x2]", "ldp8x t0,t1 [x2]"),
        (
            0x296010a3,
            "ldp w3, w4, [x5, #-256]",
            "ldp4w t3,t4 [x5-256]",
        ),
        (0xa95f9fe6, "ldp x6, x7, [sp, #504]", "ldp8x t6,t7 [sp+504]"),
        (
            0xa9c12548,
            "ldp x8, x9, [x10, #16]!",
            "ldp8x t8,t9 [x10+16]!",
        ),
        (
            0x28ffb1ab,
            "ldp w11, w12, [x13], #-4",
            "ldp4w t11,t12 [x13] post-4",
        ),
        (
            0x69413e0e,
            "ldpsw x14, x15, [x16, #8]",
            "ldps4x t14,t15 [x16+8]",
        ),
        (
            0x68dfca71,
            "ldpsw x17, x18, [x19], #252",
            "ldps4x t17,t18 [x19] post+252",
        ),
        (
            0x69ff0440,
            "ldpsw x0, x1, [x2, #-8]!",
            "ldps4x t0,t1 [x2-8]!",
        ),
        (
            0xa9bf7bfd,
            "stp x29, x30, [sp, #-16]!",
            "stp8 t29,t30 [sp-16]!",
        ),
        (0x291f8440, "stp w0, w1, [x2, #252]", "stp4 t0,t1 [x2+252]"),
        (
            0xa8a07c7f,
            "stp xzr, xzr, [x3], #-512",
            "stp8 t31,t31 [x3] post-512",
        ),
        (0xa9001484, "stp x4, x5, [x4]", "stp8 t4,t5 [x4]"),
        (0xa8410440, "ldnp x0, x1, [x2, #16]", "ldp8x t0,t1 [x2+16]"),
        (0x283f90a3, "stnp w3, w4, [x5, #-4]", "stp4 t3,t4 [x5-4]"),
        (0xc8dffc20, "ldar x0, [x1]", "ar ld8x t0 [x1]"),
        (0x88dfffe2, "ldar w2, [sp]", "ar ld4w t2 [sp]"),
        (0x08dffc83, "ldarb w3, [x4]", "ar ld1w t3 [x4]"),
        (0x48dffcc5, "ldarh w5, [x6]", "ar ld2w t5 [x6]"),
        (0xc89ffd07, "stlr x7, [x8]", "ar st8 t7 [x8]"),
        (0x889ffd3f, "stlr wzr, [x9]", "ar st4 t31 [x9]"),
        (0x089ffd6a, "stlrb w10, [x11]", "ar st1 t10 [x11]"),
        (0x489ffdac, "stlrh w12, [x13]", "ar st2 t12 [x13]"),
        (0xf8bfc1ee, "ldapr x14, [x15]", "ar ld8x t14 [x15]"),
        (0xb8bfc230, "ldapr w16, [x17]", "ar ld4w t16 [x17]"),
        (0x38bfc272, "ldaprb w18, [x19]", "ar ld1w t18 [x19]"),
        (0x78bfc2b4, "ldaprh w20, [x21]", "ar ld2w t20 [x21]"),
        (0xd9500020, "ldapur x0, [x1, #-256]", "ar ld8x t0 [x1-256]"),
        (0x994ff062, "ldapur w2, [x3, #255]", "ar ld4w t2 [x3+255]"),
        (0x198010a4, "ldapursb x4, [x5, #1]", "ar lds1x t4 [x5+1]"),
        (0x19c000e6, "ldapursb w6, [x7]", "ar lds1w t6 [x7]"),
        (0x599fe128, "ldapursh x8, [x9, #-2]", "ar lds2x t8 [x9-2]"),
        (
            0x9980416a,
            "ldapursw x10, [x11, #4]",
            "ar lds4x t10 [x11+4]",
        ),
        (0x194001ac, "ldapurb w12, [x13]", "ar ld1w t12 [x13]"),
        (0xd90081ee, "stlur x14, [x15, #8]", "ar st8 t14 [x15+8]"),
        (0x191ff230, "stlurb w16, [x17, #-1]", "ar st1 t16 [x17-1]"),
        (0x59000272, "stlurh w18, [x19]", "ar st2 t18 [x19]"),
        (0xc8df7c20, "ldlar x0, [x1]", "ar ld8x t0 [x1]"),
        (0x889f7c62, "stllr w2, [x3]", "ar st4 t2 [x3]"),
        // Ordered forms whose Rs/Rt2 "should be ones" fields are not (objdump calls the
        // first undefined and the second stlr): refused rather than guessed at.
        (0x48d981bc, ".inst 0x48d981bc", "-"),
        (0xc88dde44, "stlr x4, [x18] with Rs = 13", "-"),
        (0x3dc00420, "ldr q0, [x1, #16]", "simd ld16 t0 [x1+16]"),
        (0xfc5f8c62, "ldr d2, [x3, #-8]!", "simd ld8 t2 [x3-8]!"),
        (0xbc4044a4, "ldr s4, [x5], #4", "simd ld4 t4 [x5] post+4"),
        (
            0x7c6878e6,
            "ldr h6, [x7, x8, lsl #1]",
            "simd ld2 t6 [x7,x8 lsl 1]",
        ),
        (0x3d400149, "ldr b9, [x10]", "simd ld1 t9 [x10]"),
        (
            0x3dbfffeb,
            "str q11, [sp, #65520]",
            "simd st16 t11 [sp+65520]",
        ),
        (0xfc1ff1ac, "stur d12, [x13, #-1]", "simd st8 t12 [x13-1]"),
        (
            0xad410440,
            "ldp q0, q1, [x2, #32]",
            "simd ldp16 t0,t1 [x2+32]",
        ),
        (
            0x6dbf10a3,
            "stp d3, d4, [x5, #-16]!",
            "simd stp8 t3,t4 [x5-16]!",
        ),
        (
            0x2cc11d06,
            "ldp s6, s7, [x8], #8",
            "simd ldp4 t6,t7 [x8] post+8",
        ),
        (0xac402969, "ldnp q9, q10, [x11]", "simd ldp16 t9,t10 [x11]"),
        // Not plain device accesses: exclusives, atomics, literals, prefetches, structure
        // loads, pointer authentication, MTE, LS64, and a non-memory instruction.
        (0xc85f7c20, "ldxr x0, [x1]", "-"),
        (0xc8027c83, "stxr w2, x3, [x4]", "-"),
        (0x885ffcc5, "ldaxr w5, [x6]", "-"),
        (0xc87f2127, "ldxp x7, x8, [x9]", "-"),
        (0xc87f8440, "ldaxp x0, x1, [x2]", "-"),
        (0xf8200041, "ldadd x0, x1, [x2]", "-"),
        (0xb8a300a4, "ldadda w3, w4, [x5]", "-"),
        (0xf8268107, "swp x6, x7, [x8]", "-"),
        (0xc8a97d6a, "cas x9, x10, [x11]", "-"),
        (0x48207c82, "casp x0, x1, x2, x3, [x4]", "-"),
        (0x580001e0, "ldr x0, lit", "-"),
        (0x180001c1, "ldr w1, lit", "-"),
        (0xf9800000, "prfm pldl1keep, [x0]", "-"),
        (0xf8a16800, "prfm pldl1keep, [x0, x1]", "-"),
        (0xf89ff000, "prfum pldl1keep, [x0, #-1]", "-"),
        (0x4c407000, "ld1 {v0.16b}, [x0]", "-"),
        (0x4c9fa820, "st1 {v0.4s, v1.4s}, [x1], #32", "-"),
        (0x0d409040, "ld1 {v0.s}[1], [x2]", "-"),
        (0xf8200420, "ldraa x0, [x1]", "-"),
        (0xf8fffc62, "ldrab x2, [x3, #-8]!", "-"),
        (0x69000440, "stgp x0, x1, [x2]", "-"),
        (0xd9200820, "stg x0, [x1]", "-"),
        (0xd9600020, "ldg x0, [x1]", "-"),
        (0xf83fd020, "ld64b x0, [x1]", "-"),
        (0x00000000, ".word 0", "-"),
        (0x8b020020, "add x0, x1, x2", "-"),
    ];

    #[test]
    fn real_instruction_words() {
        let mut failures = Vec::new();
        for &(word, asm, expected) in REAL {
            let got = describe(decode(word));
            if got != expected {
                failures.push(format!(
                    "{word:#010x} {asm}: got {got:?}, want {expected:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    // Encoders written from the Arm ARM's encoding diagrams, to reach edge values.

    /// Load/store register (unsigned immediate).
    fn uimm(size: u32, v: u32, opc: u32, imm12: u32, rn: u32, rt: u32) -> u32 {
        size << 30 | 0b111 << 27 | v << 26 | 0b01 << 24 | opc << 22 | imm12 << 10 | rn << 5 | rt
    }

    /// Load/store register, 9-bit immediate; `kind` is bits [11:10]: 00 unscaled, 01 post,
    /// 10 unprivileged, 11 pre.
    fn imm9(size: u32, v: u32, opc: u32, imm: i32, kind: u32, rn: u32, rt: u32) -> u32 {
        let imm9 = (imm as u32) & 0x1ff;
        size << 30 | 0b111 << 27 | v << 26 | opc << 22 | imm9 << 12 | kind << 10 | rn << 5 | rt
    }

    /// Load/store register (register offset). One argument per field of the diagram.
    #[allow(clippy::too_many_arguments)]
    fn regoff(size: u32, v: u32, opc: u32, rm: u32, option: u32, s: u32, rn: u32, rt: u32) -> u32 {
        size << 30
            | 0b111 << 27
            | v << 26
            | opc << 22
            | 1 << 21
            | rm << 16
            | option << 13
            | s << 12
            | 0b10 << 10
            | rn << 5
            | rt
    }

    /// Load/store pair; `index` is bits [24:23]: 00 non-temporal, 01 post, 10 offset, 11 pre.
    #[allow(clippy::too_many_arguments)]
    fn pair_enc(opc: u32, v: u32, index: u32, l: u32, imm: i32, rt2: u32, rn: u32, rt: u32) -> u32 {
        let imm7 = (imm as u32) & 0x7f;
        opc << 30
            | 0b101 << 27
            | v << 26
            | index << 23
            | l << 22
            | imm7 << 15
            | rt2 << 10
            | rn << 5
            | rt
    }

    #[test]
    fn unsigned_offset_extremes() {
        for size in 0..4 {
            let a = decode(uimm(size, 0, 0b01, 4095, 31, 31)).unwrap();
            assert_eq!(a.offset, Offset::Imm(4095 << size));
            assert_eq!((a.base, a.regs[0], a.size), (31, 31, 1 << size));
            assert_eq!(
                a.op,
                MemOp::Load {
                    sign_extend: false,
                    dest_64: size == 3
                }
            );
            let a = decode(uimm(size, 0, 0b00, 0, 0, 30)).unwrap();
            assert_eq!(
                (a.op, a.offset, a.writeback),
                (MemOp::Store, Offset::Imm(0), None)
            );
        }
        // Q registers scale by 16.
        assert_eq!(
            decode(uimm(0, 1, 0b11, 4095, 1, 2)).unwrap().offset,
            Offset::Imm(4095 * 16)
        );
        // LDRSW into W and LDRSx with size 11 do not exist; PRFM is not an access.
        assert_eq!(decode(uimm(2, 0, 0b11, 0, 0, 0)), None);
        assert_eq!(decode(uimm(3, 0, 0b11, 0, 0, 0)), None);
        assert_eq!(decode(uimm(3, 0, 0b10, 0, 0, 0)), None);
        // SIMD&FP: opc<1> only with size 00 (Q).
        assert_eq!(decode(uimm(1, 1, 0b10, 0, 0, 0)), None);
    }

    #[test]
    fn nine_bit_immediates() {
        for (imm, kind) in [
            (-256, 0b00),
            (255, 0b01),
            (-256, 0b11),
            (-1, 0b10),
            (0, 0b01),
        ] {
            let a = decode(imm9(3, 0, 0b01, imm, kind, 31, 5)).unwrap();
            let imm = imm as i64;
            match kind {
                0b00 | 0b10 => assert_eq!((a.offset, a.writeback), (Offset::Imm(imm), None)),
                0b01 => {
                    assert_eq!(a.offset, Offset::Imm(0));
                    assert_eq!(
                        a.writeback,
                        Some(Writeback {
                            base: 31,
                            offset: imm,
                            post_index: true
                        })
                    );
                }
                _ => {
                    assert_eq!(a.offset, Offset::Imm(imm));
                    assert_eq!(
                        a.writeback,
                        Some(Writeback {
                            base: 31,
                            offset: imm,
                            post_index: false
                        })
                    );
                }
            }
        }
        // No SIMD&FP unprivileged form; no pre/post-index prefetch.
        assert_eq!(decode(imm9(2, 1, 0b01, 0, 0b10, 0, 0)), None);
        assert_eq!(decode(imm9(3, 0, 0b10, 8, 0b01, 0, 0)), None);
        assert_eq!(decode(imm9(3, 0, 0b10, 8, 0b11, 0, 0)), None);
    }

    #[test]
    fn register_offsets() {
        for (option, extend) in [
            (0b010, Extend::Uxtw),
            (0b011, Extend::Lsl),
            (0b110, Extend::Sxtw),
            (0b111, Extend::Sxtx),
        ] {
            for size in 0..4u32 {
                let a = decode(regoff(size, 0, 0b00, 31, option, 1, 31, 31)).unwrap();
                assert_eq!(
                    a.offset,
                    Offset::Reg {
                        rm: 31,
                        extend,
                        shift: size as u8
                    }
                );
                let a = decode(regoff(size, 0, 0b00, 7, option, 0, 3, 4)).unwrap();
                assert_eq!(
                    a.offset,
                    Offset::Reg {
                        rm: 7,
                        extend,
                        shift: 0
                    }
                );
            }
        }
        // Q register: S shifts by 4.
        let a = decode(regoff(0, 1, 0b11, 2, 0b011, 1, 1, 0)).unwrap();
        assert_eq!(
            (a.size, a.offset),
            (
                16,
                Offset::Reg {
                    rm: 2,
                    extend: Extend::Lsl,
                    shift: 4
                }
            )
        );
        for option in [0b000, 0b001, 0b100, 0b101] {
            assert_eq!(decode(regoff(3, 0, 0b01, 1, option, 0, 2, 3)), None);
        }
    }

    #[test]
    fn pairs_at_the_edges() {
        // imm7 spans -64..=63 elements.
        for (opc, size) in [(0b00, 4i64), (0b10, 8)] {
            let a = decode(pair_enc(opc, 0, 0b10, 1, -64, 2, 31, 1)).unwrap();
            assert_eq!(
                (a.offset, a.regs, a.base, a.size as i64),
                (Offset::Imm(-64 * size), [1, 2], 31, size)
            );
            let a = decode(pair_enc(opc, 0, 0b11, 0, 63, 31, 31, 31)).unwrap();
            assert_eq!(
                a.writeback,
                Some(Writeback {
                    base: 31,
                    offset: 63 * size,
                    post_index: false
                })
            );
            assert_eq!(a.regs, [31, 31]);
        }
        let a = decode(pair_enc(0b10, 1, 0b01, 1, -64, 1, 3, 0)).unwrap();
        assert_eq!((a.size, a.simd_fp, a.offset), (16, true, Offset::Imm(0)));
        assert_eq!(
            a.writeback,
            Some(Writeback {
                base: 3,
                offset: -1024,
                post_index: true
            })
        );
        // LDPSW has no non-temporal form; STGP and opc 11 are refused.
        assert_eq!(decode(pair_enc(0b01, 0, 0b00, 1, 0, 1, 2, 3)), None);
        assert_eq!(decode(pair_enc(0b01, 0, 0b10, 0, 0, 1, 2, 3)), None);
        assert_eq!(decode(pair_enc(0b11, 0, 0b10, 1, 0, 1, 2, 3)), None);
        assert_eq!(decode(pair_enc(0b11, 1, 0b10, 1, 0, 1, 2, 3)), None);
    }

    #[test]
    fn unpredictable_register_combinations() {
        // LDP x1, x1: refused. STP x1, x1: fine.
        assert_eq!(decode(pair_enc(0b10, 0, 0b10, 1, 0, 1, 2, 1)), None);
        assert!(decode(pair_enc(0b10, 0, 0b10, 0, 0, 1, 2, 1)).is_some());
        // Load with writeback into its own base: refused, unless the base is SP and the data
        // register is XZR (both encoded 31) or the data registers are SIMD&FP.
        assert_eq!(decode(imm9(3, 0, 0b01, 8, 0b11, 4, 4)), None);
        assert_eq!(decode(pair_enc(0b10, 0, 0b01, 1, 2, 4, 4, 5)), None);
        assert!(decode(imm9(3, 0, 0b01, 8, 0b11, 31, 31)).is_some());
        assert!(decode(imm9(3, 1, 0b01, 8, 0b11, 4, 4)).is_some());
        // Without writeback the base may be loaded over.
        assert!(decode(uimm(3, 0, 0b01, 1, 4, 4)).is_some());
        // A store of its own base with writeback is kept.
        assert!(decode(imm9(3, 0, 0b00, -8, 0b11, 4, 4)).is_some());
    }

    /// Registers for [`plan`]: Xn = 0x1000 * n, SP = 0xdead_0000, XZR = 0.
    fn regs(op: Operand) -> u64 {
        match op {
            Operand::Gpr(31) => 0,
            Operand::Gpr(n) => 0x1000 * n as u64,
            Operand::Sp => 0xdead_0000,
        }
    }

    #[test]
    fn plan_single_store_with_pre_index_on_sp() {
        // STR w3, [sp, #-16]!: address SP-16; the fault is there.
        let a = decode(imm9(2, 0, 0b00, -16, 0b11, 31, 3)).unwrap();
        let p = plan(&a, 0xdead_0000 - 16, 0x0900_0ff0, regs).unwrap();
        assert_eq!(
            p.elements(),
            &[Element {
                ipa: 0x0900_0ff0,
                size: 4,
                kind: ElementKind::Store { value: 0x3000 }
            }]
        );
        assert_eq!(
            p.writeback,
            Some(BaseUpdate {
                base: 31,
                value: 0xdead_0000 - 16
            })
        );
    }

    #[test]
    fn plan_pair_load_fault_on_second_element() {
        // LDP w1, w2, [x4], #8: elements at 0x4000 and 0x4004; FAR names the second.
        let a = decode(pair_enc(0b00, 0, 0b01, 1, 2, 2, 4, 1)).unwrap();
        let p = plan(&a, 0x4004, 0x0a00_0004, regs).unwrap();
        let load = |dest| ElementKind::Load {
            dest,
            sign_extend: false,
            dest_64: false,
        };
        assert_eq!(
            p.elements(),
            &[
                Element {
                    ipa: 0x0a00_0000,
                    size: 4,
                    kind: load(1)
                },
                Element {
                    ipa: 0x0a00_0004,
                    size: 4,
                    kind: load(2)
                },
            ]
        );
        assert_eq!(
            p.writeback,
            Some(BaseUpdate {
                base: 4,
                value: 0x4008
            })
        );
        // Loads are extended; the completion names both registers.
        let done = perform(&p, |e| Ok::<_, ()>(0xffff_ffff_0000_0000 | e.ipa)).unwrap();
        assert_eq!(done.loaded(), &[(1, 0x0a00_0000), (2, 0x0a00_0004)]);
        assert_eq!(done.writeback, p.writeback);
    }

    #[test]
    fn plan_register_offset_and_extension() {
        // LDRSH x0, [x2, w3, sxtw #1] with w3 = -1: address x2 - 2.
        let a = decode(regoff(1, 0, 0b10, 3, 0b110, 1, 2, 0)).unwrap();
        let neg = |op| {
            if op == Operand::Gpr(3) {
                0x1234_5678_ffff_ffff
            } else {
                regs(op)
            }
        };
        let p = plan(&a, 0x2000 - 2, 0x0900_0ffe, neg).unwrap();
        assert_eq!(p.elements()[0].ipa, 0x0900_0ffe);
        let done = perform(&p, |_| Ok::<_, ()>(0x8001)).unwrap();
        assert_eq!(done.loaded(), &[(0, 0xffff_ffff_ffff_8001)]);
        // The same with UXTW: x2 + 0x1_ffff_fffe.
        let a = decode(regoff(1, 0, 0b10, 3, 0b010, 1, 2, 0)).unwrap();
        assert!(plan_ok(&a, 0x2000 + 0x1_ffff_fffe, neg));
    }

    fn plan_ok(a: &Access, va: u64, read: impl Fn(Operand) -> u64) -> bool {
        plan(a, va, 0x0900_0010, read).is_ok()
    }

    #[test]
    fn plan_refusals() {
        // STP x1, x2, [x3, #-8]: bytes x3-8 .. x3+8.
        let a = decode(pair_enc(0b10, 0, 0b10, 0, -1, 2, 3, 1)).unwrap();
        assert_eq!(
            plan(&a, 0x3000 + 8, 0x0900_0000, regs),
            Err(PlanError::OutsideAccess)
        );
        assert_eq!(
            plan(&a, 0x3000 - 9, 0x0900_0000, regs),
            Err(PlanError::OutsideAccess)
        );
        // The fault in the second element, at the start of a page: the first is in another
        // page.
        assert_eq!(
            plan(&a, 0x3000, 0x0900_1000, regs),
            Err(PlanError::CrossesPage)
        );
        // The fault in the first element at the end of a page.
        assert_eq!(
            plan(&a, 0x3000 - 8, 0x0900_0ff8, regs),
            Err(PlanError::CrossesPage)
        );
        let ok = plan(&a, 0x3000, 0x0900_0ff8, regs).unwrap();
        assert_eq!(ok.elements()[0].ipa, 0x0900_0ff0);
        assert_eq!(ok.elements()[1].ipa, 0x0900_0ff8);
        assert_eq!(ok.elements()[1].kind, ElementKind::Store { value: 0x2000 });
        // SIMD&FP.
        let q = decode(0x3dc00420).unwrap();
        assert_eq!(plan(&q, 0x1010, 0x0900_0010, regs), Err(PlanError::SimdFp));
        // Address arithmetic wraps like the CPU's; the top byte (a tag) is ignored.
        let a = decode(uimm(3, 0, 0b01, 1, 31, 0)).unwrap();
        let top = |_| 0xffff_ffff_ffff_fff8;
        assert!(plan(&a, 0, 0x0900_0000, top).is_ok());
        assert!(plan(&a, 0x5a00_0000_0000_0000, 0x0900_0000, top).is_ok());
        assert_eq!(plan(&a, 0, u64::MAX, top), Err(PlanError::CrossesPage));
    }

    #[test]
    fn store_values_are_masked_and_read_before_writeback() {
        // STRB w4, [x4], #1 stores the low byte of the old x4.
        let a = decode(imm9(0, 0, 0b00, 1, 0b01, 4, 4)).unwrap();
        let read = |op| if op == Operand::Gpr(4) { 0x1_2345 } else { 0 };
        let p = plan(&a, 0x1_2345, 0x0900_0345, read).unwrap();
        assert_eq!(p.elements()[0].kind, ElementKind::Store { value: 0x45 });
        assert_eq!(
            p.writeback,
            Some(BaseUpdate {
                base: 4,
                value: 0x1_2346
            })
        );
        // STP xzr, xzr stores zeros.
        let a = decode(pair_enc(0b10, 0, 0b10, 0, 0, 31, 1, 31)).unwrap();
        let p = plan(&a, 0x1000, 0x0900_0000, regs).unwrap();
        assert!(
            p.elements()
                .iter()
                .all(|e| e.kind == ElementKind::Store { value: 0 })
        );
        assert!(p.elements().iter().all(|e| e.size == 8));
    }

    #[test]
    fn perform_stops_at_the_first_error_without_register_writes() {
        let a = decode(0xa9400440).unwrap(); // ldp x0, x1, [x2]
        let p = plan(&a, 0x2008, 0x0900_0008, regs).unwrap();
        let mut seen = Vec::new();
        let result = perform(&p, |e| {
            seen.push(e.ipa);
            if e.ipa == 0x0900_0000 {
                Err("bad")
            } else {
                Ok(0)
            }
        });
        assert_eq!(result, Err("bad"));
        assert_eq!(seen, [0x0900_0000]);
        // Stores produce no register writes.
        let a = decode(0xa9bf7bfd).unwrap(); // stp x29, x30, [sp, #-16]!
        let p = plan(&a, 0xdead_0000 - 16, 0x0900_0000, regs).unwrap();
        let done = perform(&p, |_| Ok::<_, ()>(0)).unwrap();
        assert!(done.loaded().is_empty());
        assert_eq!(
            done.writeback,
            Some(BaseUpdate {
                base: 31,
                value: 0xdead_0000 - 16
            })
        );
    }

    use crate::test_rng::Rng;

    fn check_invariants(word: u32, a: &Access) {
        assert!(matches!(a.size, 1 | 2 | 4 | 8 | 16), "{word:#x}");
        assert!(a.size < 16 || a.simd_fp, "{word:#x}");
        assert!(a.regs.iter().all(|&r| r < 32) && a.base < 32, "{word:#x}");
        assert!(!(a.pair && a.acquire_release), "{word:#x}");
        if let Some(wb) = a.writeback {
            assert_eq!(wb.base, a.base);
        }
        if let Offset::Reg { rm, shift, .. } = a.offset {
            assert!(rm < 32 && shift <= 4, "{word:#x}");
        }
    }

    #[test]
    fn random_words_never_panic() {
        let mut rng = Rng::new(0x5eed_1234_abcd_0001);
        let mut decoded = 0;
        for i in 0..2_000_000u32 {
            let r = rng.next();
            // Half the words are forced into the load/store space (op0 = x1x0) so the deep
            // paths get exercised.
            let word = if i % 2 == 0 {
                r as u32
            } else {
                (r as u32 & !0x0a00_0000) | 0x0800_0000
            };
            let Some(a) = decode(word) else { continue };
            decoded += 1;
            check_invariants(word, &a);
            let (va, ipa, salt) = (rng.next(), rng.next(), rng.next());
            let read = |op: Operand| match op {
                Operand::Gpr(n) => salt.rotate_left(n as u32),
                Operand::Sp => !salt,
            };
            if let Ok(p) = plan(&a, va, ipa, read) {
                let _ = perform(&p, |e| if e.ipa & 1 == 0 { Ok(salt) } else { Err(()) });
            }
            // A fault anywhere inside an access that fits in one page must plan.
            if !a.simd_fp {
                let base = if a.base == 31 {
                    read(Operand::Sp)
                } else {
                    read(Operand::Gpr(a.base))
                };
                let addr = match a.offset {
                    Offset::Imm(i) => base.wrapping_add(i as u64),
                    Offset::Reg { .. } => continue,
                };
                let into = va % a.bytes();
                match plan(&a, addr.wrapping_add(into), 0x0900_0800 + into, read) {
                    Ok(p) => assert_eq!(p.elements()[0].ipa, 0x0900_0800, "{word:#x}"),
                    Err(e) => panic!("{word:#x}: {e:?}"),
                }
            }
        }
        assert!(decoded > 100_000, "only {decoded} words decoded");
    }
}
