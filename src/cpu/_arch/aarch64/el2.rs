//! The EL2 control registers every physical CPU sets once, and the EL1 reset state a new vCPU
//! starts from. What traps to Veil — and so what a guest cannot touch — is decided here.

use aarch64_cpu::registers::{
    CNTHCTL_EL2, HCR_EL2, ID_AA64MMFR0_EL1, MDCR_EL2, VBAR_EL2, VTCR_EL2,
};
use core::arch::asm;
use tock_registers::{
    interfaces::{Readable, Writeable},
    register_bitfields,
};

register_bitfields! {u64,
    /// CPTR_EL2 with HCR_EL2.E2H = 0 (Arm ARM D17.2.36); aarch64-cpu only names TAM.
    CPTR_EL2_NVHE [
        /// Trap CPACR_EL1 accesses: no, the guest manages its own FP enable.
        TCPAC OFFSET(31) NUMBITS(1) [],
        /// Trap activity monitor registers.
        TAM OFFSET(30) NUMBITS(1) [],
        /// Trap trace registers.
        TTA OFFSET(20) NUMBITS(1) [],
        /// Trap SME (RES1 when SME is not implemented).
        TSM OFFSET(12) NUMBITS(1) [],
        /// Trap FP/SIMD.
        TFP OFFSET(10) NUMBITS(1) [],
        /// Trap SVE (RES1 when SVE is not implemented).
        TZ OFFSET(8) NUMBITS(1) []
    ]
}

/// CPTR_EL2's RES1 bits in the E2H = 0 layout: [13], [9] and [7:0].
const CPTR_EL2_RES1: u64 = (1 << 13) | (1 << 9) | 0xff;

/// Configures this CPU's EL2 for running guests. Every CPU runs this once before its first
/// guest entry; per-VM and per-vCPU registers are loaded at each switch (`cpu::PerCpu::run`).
pub fn configure() {
    unsafe extern "C" {
        static el2_vectors: u8;
    }
    VBAR_EL2.set(&raw const el2_vectors as u64);

    // HCR_EL2 — what a guest may do without Veil:
    HCR_EL2.write(
        // EL1 runs AArch64.
        HCR_EL2::RW::EL1IsAarch64
        // Stage-2 translation on: guests see only what their stage-2 table maps.
        + HCR_EL2::VM::Enable
        // A guest's set/way invalidate must clean too: it may not drop Veil's or another VM's
        // dirty lines.
        + HCR_EL2::SWIO::SET
        // Physical IRQ, FIQ and SError go to EL2; the guest gets virtual ones.
        + HCR_EL2::IMO::EnableVirtualIRQ
        + HCR_EL2::FMO::EnableVirtualFIQ
        + HCR_EL2::AMO::SET
        // Broadcast the guest's TLB and cache maintenance to the inner shareable domain, so a
        // vCPU that moves between CPUs leaves no stale entries behind, and upgrade its barriers
        // to inner shareable for the same reason.
        + HCR_EL2::FB::SET
        + HCR_EL2::BSU::InnerShareable
        // Trap SMC: firmware is reached only through Veil's PSCI.
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        // Trap WFI so a waiting vCPU gives its CPU back. WFE (a spin-wait hint) traps only while
        // the CPU is shared (`cpu::sched` sets TWE then): a spinning vCPU's lock holder may be
        // the vCPU it keeps off the CPU.
        + HCR_EL2::TWI::SET
        // Trap the ID register group 3 (ID_AA64*): the guest sees a sanitized CPU.
        + HCR_EL2::TID3::SET
        // Trap IMPLEMENTATION DEFINED registers and ACTLR_EL1: no guest pokes at the core's
        // private controls.
        + HCR_EL2::TIDCP::SET
        + HCR_EL2::TACR::SET
        // Trap data-cache set/way operations: they cannot be virtualized by passing through.
        + HCR_EL2::TSW::SET
        // Trap LORegion registers (hidden in ID_AA64MMFR1_EL1).
        + HCR_EL2::TLOR::SET
        // API = APK = 0: pointer authentication instructions and key registers trap (hidden in
        // ID_AA64ISAR1/2_EL1; the keys are not switched).
        + HCR_EL2::API::EnableTrapPointerAuthInstToEl2
        + HCR_EL2::APK::EnableTrapPointerAuthKeyRegsToEl2,
    );

    // CPTR_EL2: trap trace, activity monitors, SVE and SME; FP/SIMD is not trapped (Veil is
    // built soft-float and never touches the FP registers, so the guest keeps them as is).
    let cptr = CPTR_EL2_RES1
        | (CPTR_EL2_NVHE::TAM::SET
            + CPTR_EL2_NVHE::TTA::SET
            + CPTR_EL2_NVHE::TSM::SET
            + CPTR_EL2_NVHE::TZ::SET)
            .value;
    // SAFETY: writing CPTR_EL2 only changes which EL1/EL0 instructions trap to EL2.
    unsafe { asm!("msr cptr_el2, {}", in(reg) cptr, options(nostack)) };

    // MDCR_EL2: trap debug (TDA), OS lock/debug (TDOSA), debug ROM (TDRA), PMU (TPM, TPMCR)
    // accesses — all are hidden or RAZ/WI; HPMN keeps every counter reserved to EL2.
    let pmcr_n = {
        let pmcr: u64;
        // SAFETY: reading PMCR_EL0 at EL2 has no side effects.
        unsafe { asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nomem, nostack)) };
        (pmcr >> 11) & 0x1f
    };
    MDCR_EL2.write(
        MDCR_EL2::TDA::SET
            + MDCR_EL2::TDOSA::SET
            + MDCR_EL2::TDRA::SET
            + MDCR_EL2::TPM::SET
            + MDCR_EL2::TPMCR::SET
            + MDCR_EL2::HPMN.val(pmcr_n),
    );

    // CNTHCTL_EL2: the guest may read the physical counter (EL1PCTEN) but its EL1 physical
    // timer (CNTP_*) traps (EL1PCEN = 0): Veil emulates it. The virtual timer is the guest's.
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::CLEAR);

    // VTCR_EL2: the stage-2 format every VM's table uses (see memory::stage2::vtcr).
    VTCR_EL2.set(crate::memory::stage2::vtcr(
        ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange),
    ));

    // Stage-2 TLB entries from before Veil are not Veil's: drop them all.
    // SAFETY: TLB maintenance only.
    unsafe { asm!("tlbi alle1is", "dsb ish", options(nostack)) };
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Drops every guest's stage-1 and stage-2 TLB entries, on every CPU (TLBI ALLE1IS): a VM that
/// restarts must not find its old translations.
pub fn invalidate_guest_tlbs() {
    // SAFETY: TLB maintenance only.
    unsafe { asm!("dsb ishst", "tlbi alle1is", "dsb ish", options(nostack)) };
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Reads one ID register by its CRm/op2 coordinates (op0=3, op1=0, CRn=0).
fn read_id<const CRM: u32, const OP2: u32>() -> u64 {
    let value: u64;
    // SAFETY: reading an ID register at EL2 has no side effects; unallocated encodings in this
    // space read as zero.
    unsafe {
        asm!("mrs {v}, S3_0_C0_C{crm}_{op2}", v = out(reg) value, crm = const CRM, op2 = const OP2, options(nomem, nostack))
    };
    value
}

macro_rules! id_space {
    ($($crm:literal),*) => {
        [$(
            read_id::<$crm, 0>(), read_id::<$crm, 1>(), read_id::<$crm, 2>(), read_id::<$crm, 3>(),
            read_id::<$crm, 4>(), read_id::<$crm, 5>(), read_id::<$crm, 6>(), read_id::<$crm, 7>(),
        )*]
    };
}

/// The host's whole ID register space (CRm 1..7, op2 0..7), in `vm::id_regs` index order.
pub fn read_id_space() -> [u64; crate::vm::id_regs::ID_REG_COUNT] {
    id_space!(1, 2, 3, 4, 5, 6, 7)
}

/// Traps (or not) the guest's WFE: HCR_EL2.TWE (bit 14).
pub fn trap_wfe(trap: bool) {
    use tock_registers::interfaces::ReadWriteable;
    HCR_EL2.modify(if trap {
        HCR_EL2::TWE::SET
    } else {
        HCR_EL2::TWE::CLEAR
    });
}

/// Makes a virtual SError pending for the guest (HCR_EL2.VSE, bit 8): the hardware delivers it
/// when the guest unmasks SErrors, with the syndrome in VSESR_EL2 (implementation defined when
/// RAS is not implemented, which is what Veil shows guests).
pub fn inject_virtual_serror() {
    use tock_registers::interfaces::ReadWriteable;
    HCR_EL2.modify(HCR_EL2::VSE::SET);
}
