//! Exceptions taken to the guest's EL1: what a test may provoke on purpose, and what fails it.
//!
//! Every exception goes through the vector table in `exception/vectors.s` to one handler, which
//! reads ESR_EL1, FAR_EL1 and ELR_EL1 into an [`ExceptionInfo`]. Then:
//!
//! - inside [`expect_exception`], the first synchronous exception or SError is recorded and the
//!   guest resumes after it ([`ExceptionInfo::resume_address`]); the call returns the record.
//!   This is how tests check that the hypervisor injects an UNDEF or an abort;
//!   [`without_exception`] is the same for code that should not raise one, so that a check
//!   that does is reported and the guest goes on.
//! - an IRQ goes to the handler the guest installed with [`set_irq_handler`], which must
//!   acknowledge and end it (see [`crate::gic`]); the interrupted code resumes where it was.
//!   The handler runs with IRQs masked; it may unmask them to let a more urgent interrupt
//!   preempt it, since every entry saves the whole interrupted state on the vCPU's stack.
//! - anywhere else, for an IRQ without a handler, or for an FIQ, the guest prints
//!   `<guest>: FAIL unexpected exception ESR=0x.. EC=0x.. FAR=0x.. ELR=0x..` and powers off.
//!
//! The record is global, not per vCPU: one vCPU at a time may expect an exception. The IRQ
//! handler is global too: every vCPU calls the same one.

use core::fmt;

/// Exception classes (ESR_ELx.EC) that tests meet at EL1.
pub mod ec {
    /// Unknown reason: an undefined instruction, or a trapped access the hypervisor refuses.
    pub const UNKNOWN: u8 = 0x00;
    /// WFI or WFE trapped.
    pub const WFX: u8 = 0x01;
    /// FP/SIMD access trapped by CPACR_EL1.FPEN.
    pub const FP_ACCESS: u8 = 0x07;
    /// Illegal execution state.
    pub const ILLEGAL_STATE: u8 = 0x0E;
    /// SVC from AArch64.
    pub const SVC64: u8 = 0x15;
    /// HVC from AArch64, taken to EL1 only if injected.
    pub const HVC64: u8 = 0x16;
    /// SMC from AArch64.
    pub const SMC64: u8 = 0x17;
    /// MSR, MRS or system instruction trapped.
    pub const SYSREG: u8 = 0x18;
    /// Instruction abort from a lower EL.
    pub const INSTRUCTION_ABORT_LOWER: u8 = 0x20;
    /// Instruction abort without a change of EL.
    pub const INSTRUCTION_ABORT_SAME: u8 = 0x21;
    /// Misaligned PC.
    pub const PC_ALIGNMENT: u8 = 0x22;
    /// Data abort from a lower EL.
    pub const DATA_ABORT_LOWER: u8 = 0x24;
    /// Data abort without a change of EL.
    pub const DATA_ABORT_SAME: u8 = 0x25;
    /// Misaligned SP.
    pub const SP_ALIGNMENT: u8 = 0x26;
    /// SError.
    pub const SERROR: u8 = 0x2F;
    /// BRK instruction.
    pub const BRK64: u8 = 0x3C;
}

/// What kind of exception, from the vector entry that took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Caused by an instruction (ESR describes it).
    Synchronous,
    /// An IRQ.
    Irq,
    /// An FIQ.
    Fiq,
    /// An SError (asynchronous abort).
    SError,
}

/// Where the exception came from, from the vector entry that took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// EL1 while using SP_EL0 (the runtime never does).
    CurrentElSp0,
    /// EL1 while using SP_EL1: the guest's own code.
    CurrentElSpx,
    /// EL0 in AArch64.
    LowerElAarch64,
    /// EL0 in AArch32.
    LowerElAarch32,
}

/// An exception as the EL1 handler saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionInfo {
    /// Which kind, from the vector entry.
    pub kind: Kind,
    /// Which source, from the vector entry.
    pub source: Source,
    /// ESR_EL1 (meaningful for synchronous exceptions and SErrors only).
    pub esr: u64,
    /// FAR_EL1 (meaningful only for aborts and watchpoints; UNKNOWN otherwise).
    pub far: u64,
    /// ELR_EL1: the preferred return address.
    pub elr: u64,
}

impl ExceptionInfo {
    /// Builds the record for the exception taken through vector entry `vector` (0..16).
    pub fn from_vector(vector: usize, esr: u64, far: u64, elr: u64) -> Self {
        let kind = match vector % 4 {
            0 => Kind::Synchronous,
            1 => Kind::Irq,
            2 => Kind::Fiq,
            _ => Kind::SError,
        };
        let source = match (vector / 4) % 4 {
            0 => Source::CurrentElSp0,
            1 => Source::CurrentElSpx,
            2 => Source::LowerElAarch64,
            _ => Source::LowerElAarch32,
        };
        Self {
            kind,
            source,
            esr,
            far,
            elr,
        }
    }

    /// The exception class, ESR.EC (bits 31:26); see [`ec`].
    pub fn ec(&self) -> u8 {
        ((self.esr >> 26) & 0x3f) as u8
    }

    /// The instruction-specific syndrome, ESR.ISS (bits 24:0).
    pub fn iss(&self) -> u32 {
        (self.esr & 0x1ff_ffff) as u32
    }

    /// Where execution continues after an expected exception: past the instruction that caused
    /// a synchronous exception, and where it was for an asynchronous one.
    ///
    /// For SVC and HVC the preferred return address in ELR is already the next instruction;
    /// for every other synchronous exception it is the faulting instruction itself (always
    /// 4 bytes long in AArch64), so the guest skips it. An SError interrupts no particular
    /// instruction, so nothing is skipped.
    pub fn resume_address(&self) -> u64 {
        match (self.kind, self.ec()) {
            (Kind::Synchronous, ec::SVC64 | ec::HVC64) => self.elr,
            (Kind::Synchronous, _) => self.elr.wrapping_add(4),
            _ => self.elr,
        }
    }
}

/// `ESR=0x.. EC=0x.. FAR=0x.. ELR=0x.. (<kind> from <source>)`: the runtime's FAIL line uses
/// exactly this, so tests printing a record match the same patterns.
impl fmt::Display for ExceptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ESR={:#x} EC={:#x} FAR={:#x} ELR={:#x} ({:?} from {:?})",
            self.esr,
            self.ec(),
            self.far,
            self.elr,
            self.kind,
            self.source
        )
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use handler::{expect_exception, set_irq_handler};
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use irq_mask::{mask_irqs, unmask_irqs};

/// Runs `f`, which should raise no exception; returns its value, or the exception it raised
/// instead of letting the runtime end the guest, so one broken check does not hide the others.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn without_exception<T: Default>(f: impl FnOnce() -> T) -> Result<T, ExceptionInfo> {
    let mut value = T::default();
    match expect_exception(|| value = f()) {
        None => Ok(value),
        Some(info) => Err(info),
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod irq_mask {
    //! PSTATE.I: whether the calling vCPU takes IRQs.

    /// Masks IRQs (PSTATE.I = 1), as every vCPU starts.
    #[inline(always)]
    pub fn mask_irqs() {
        // SAFETY: masking interrupts only delays them. Not `nomem`: the compiler must not move
        // memory accesses across it, since an IRQ handler may share them.
        unsafe { core::arch::asm!("msr daifset, #2", options(nostack, preserves_flags)) };
    }

    /// Unmasks IRQs (PSTATE.I = 0): a pending interrupt is taken at once, by the handler from
    /// [`set_irq_handler`](super::set_irq_handler), which must be installed.
    #[inline(always)]
    pub fn unmask_irqs() {
        // SAFETY: as for `mask_irqs`: an interrupt taken from here saves and restores all the
        // state the interrupted code uses (see vectors.s).
        unsafe { core::arch::asm!("msr daifclr, #2", options(nostack, preserves_flags)) };
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod handler {
    //! The vector table's Rust half and the armed/taken bookkeeping of `expect_exception`.

    use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

    use aarch64_cpu::registers::{ESR_EL1, FAR_EL1, Readable};

    use super::{ExceptionInfo, Kind};
    use crate::{name, power_off, println};

    core::arch::global_asm!(include_str!("exception/vectors.s"), handler = sym handle);

    /// No `expect_exception` in progress.
    const IDLE: u8 = 0;
    /// Inside `expect_exception`, nothing taken yet.
    const ARMED: u8 = 1;
    /// Inside `expect_exception`, one exception taken and recorded.
    const TAKEN: u8 = 2;

    // Plain loads and stores only: with the MMU off memory is Device, where the exclusives that
    // read-modify-write atomics compile to are not guaranteed to work. The handler runs on the
    // same vCPU as the code it interrupts, so program order is all the ordering needed.
    static STATE: AtomicU8 = AtomicU8::new(IDLE);
    static TAKEN_VECTOR: AtomicUsize = AtomicUsize::new(0);
    static TAKEN_ESR: AtomicU64 = AtomicU64::new(0);
    static TAKEN_FAR: AtomicU64 = AtomicU64::new(0);
    static TAKEN_ELR: AtomicU64 = AtomicU64::new(0);
    /// The guest's IRQ handler, a `fn()` as an address; 0 = none.
    static IRQ_HANDLER: AtomicUsize = AtomicUsize::new(0);

    /// Installs `handler` for every IRQ any vCPU takes from now on (`None`: IRQs are
    /// unexpected again). It runs on the interrupted vCPU's stack with IRQs masked, and must
    /// acknowledge and end the interrupt, or the vCPU takes it again at once.
    pub fn set_irq_handler(handler: Option<fn()>) {
        let address = handler.map_or(0, |f| f as *const () as usize);
        IRQ_HANDLER.store(address, Ordering::SeqCst);
    }

    /// Runs `f`, expecting it to cause one synchronous exception (or SError) at EL1.
    ///
    /// Returns the exception's record, or `None` if `f` finished without one. The guest resumes
    /// at [`ExceptionInfo::resume_address`], so `f` runs to its end either way; an instruction
    /// that faulted has had no effect (an `mrs` leaves its destination as it was). Only the first
    /// exception is expected: a second one inside `f` is reported as unexpected.
    ///
    /// ```ignore
    /// let info = expect_exception(|| unsafe { core::arch::asm!("udf #0") });
    /// assert_eq!(info.map(|i| i.ec()), Some(ec::UNKNOWN));
    /// ```
    ///
    /// # Panics
    /// If called from inside `f` (the record is single and global).
    pub fn expect_exception(f: impl FnOnce()) -> Option<ExceptionInfo> {
        assert_eq!(
            STATE.load(Ordering::Relaxed),
            IDLE,
            "expect_exception does not nest"
        );
        STATE.store(ARMED, Ordering::SeqCst);
        call_opaque(f);
        let taken = STATE.load(Ordering::SeqCst) == TAKEN;
        STATE.store(IDLE, Ordering::SeqCst);
        taken.then(|| {
            ExceptionInfo::from_vector(
                TAKEN_VECTOR.load(Ordering::Relaxed),
                TAKEN_ESR.load(Ordering::Relaxed),
                TAKEN_FAR.load(Ordering::Relaxed),
                TAKEN_ELR.load(Ordering::Relaxed),
            )
        })
    }

    /// Calls `f` through a function pointer the compiler cannot see through.
    ///
    /// `f` may hold inline assembly declared `nomem` (as `aarch64-cpu`'s register reads are)
    /// that nonetheless traps into `handle`, which writes STATE. An opaque call must be assumed
    /// to read and write every static, so the arming store cannot sink below it and the check
    /// of STATE cannot rise above it.
    fn call_opaque<F: FnOnce()>(f: F) {
        let mut f = Some(f);
        let call: fn(&mut Option<F>) = |f| {
            if let Some(f) = f.take() {
                f();
            }
        };
        core::hint::black_box(call)(&mut f);
    }

    /// Called by vectors.s for every exception, with the index of the vector entry and the
    /// saved ELR_EL1, which is where the guest resumes when this returns.
    extern "C" fn handle(vector: usize, saved_elr: &mut u64) {
        // IRQ entries (current EL with SP_ELx or SP_EL0, lower EL) go to the guest's handler.
        let handler = IRQ_HANDLER.load(Ordering::Relaxed);
        if vector % 4 == 1 && handler != 0 {
            // SAFETY: set_irq_handler stored a `fn()` here, and function pointers round-trip
            // through usize unchanged on AArch64.
            let handler: fn() = unsafe { core::mem::transmute::<usize, fn()>(handler) };
            handler();
            return;
        }
        let info = ExceptionInfo::from_vector(vector, ESR_EL1.get(), FAR_EL1.get(), *saved_elr);
        let expectable = matches!(info.kind, Kind::Synchronous | Kind::SError);
        if expectable && STATE.load(Ordering::Relaxed) == ARMED {
            TAKEN_VECTOR.store(vector, Ordering::Relaxed);
            TAKEN_ESR.store(info.esr, Ordering::Relaxed);
            TAKEN_FAR.store(info.far, Ordering::Relaxed);
            TAKEN_ELR.store(info.elr, Ordering::Relaxed);
            STATE.store(TAKEN, Ordering::SeqCst);
            *saved_elr = info.resume_address();
            return;
        }
        println!("{}: FAIL unexpected exception {}", name(), info);
        power_off()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_index_gives_kind_and_source() {
        let info = ExceptionInfo::from_vector(4, 0, 0, 0);
        assert_eq!(
            (info.kind, info.source),
            (Kind::Synchronous, Source::CurrentElSpx)
        );
        let info = ExceptionInfo::from_vector(7, 0, 0, 0);
        assert_eq!(
            (info.kind, info.source),
            (Kind::SError, Source::CurrentElSpx)
        );
        let info = ExceptionInfo::from_vector(9, 0, 0, 0);
        assert_eq!(
            (info.kind, info.source),
            (Kind::Irq, Source::LowerElAarch64)
        );
        let info = ExceptionInfo::from_vector(14, 0, 0, 0);
        assert_eq!(
            (info.kind, info.source),
            (Kind::Fiq, Source::LowerElAarch32)
        );
    }

    #[test]
    fn esr_fields() {
        // A data abort at EL1: EC 0x25, IL 1, ISS with DFSC 0x21 (alignment fault).
        let info = ExceptionInfo::from_vector(4, 0x9600_0021, 0x4008_0001, 0x4008_1000);
        assert_eq!(info.ec(), ec::DATA_ABORT_SAME);
        assert_eq!(info.iss(), 0x21);
    }

    #[test]
    fn resume_skips_the_faulting_instruction_only_where_elr_points_at_it() {
        let udf = ExceptionInfo::from_vector(4, 0x0200_0000, 0, 0x1000);
        assert_eq!(udf.resume_address(), 0x1004);
        let svc = ExceptionInfo::from_vector(4, (u64::from(ec::SVC64) << 26) | 0x42, 0, 0x1004);
        assert_eq!(svc.resume_address(), 0x1004);
        let hvc = ExceptionInfo::from_vector(4, u64::from(ec::HVC64) << 26, 0, 0x1004);
        assert_eq!(hvc.resume_address(), 0x1004);
        let serror = ExceptionInfo::from_vector(7, u64::from(ec::SERROR) << 26, 0, 0x2000);
        assert_eq!(serror.resume_address(), 0x2000);
    }

    #[test]
    fn display_matches_the_fail_line_contract() {
        let info = ExceptionInfo::from_vector(4, 0x0200_0000, 0x10, 0x4008_0000);
        let mut text = String::new();
        fmt::write(&mut text, format_args!("{info}")).unwrap();
        assert_eq!(
            text,
            "ESR=0x2000000 EC=0x0 FAR=0x10 ELR=0x40080000 (Synchronous from CurrentElSpx)"
        );
    }
}
