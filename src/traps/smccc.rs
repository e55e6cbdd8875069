//! Guest calls into the hypervisor: SMCCC 1.1 over HVC or SMC (both trap here), with the PSCI
//! 1.1 power interface, the SMCCC architecture calls and Veil's own vendor range
//! (`docs/HYPERCALLS.md`). Any other function ID answers NOT_SUPPORTED (-1), in both the 32- and
//! 64-bit conventions. An SMC never reaches firmware: HCR_EL2.TSC traps it.

use super::Exit;
use crate::vm::vcpu::Vcpu;

/// SMCCC return codes (DEN0028) and PSCI return codes (DEN0022), as the guest reads them in x0.
pub mod ret {
    pub const SUCCESS: u64 = 0;
    pub const NOT_SUPPORTED: u64 = -1i64 as u64;
    pub const INVALID_PARAMETERS: u64 = -2i64 as u64;
    pub const DENIED: u64 = -3i64 as u64;
    pub const ALREADY_ON: u64 = -4i64 as u64;
    pub const INVALID_ADDRESS: u64 = -9i64 as u64;
}

/// Function IDs Veil answers.
pub mod fid {
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    pub const PSCI_CPU_SUSPEND_32: u32 = 0x8400_0001;
    pub const PSCI_CPU_SUSPEND_64: u32 = 0xc400_0001;
    pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
    pub const PSCI_CPU_ON_32: u32 = 0x8400_0003;
    pub const PSCI_CPU_ON_64: u32 = 0xc400_0003;
    pub const PSCI_AFFINITY_INFO_32: u32 = 0x8400_0004;
    pub const PSCI_AFFINITY_INFO_64: u32 = 0xc400_0004;
    pub const PSCI_MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
    pub const PSCI_SYSTEM_RESET: u32 = 0x8400_0009;
    pub const PSCI_SYSTEM_RESET2_32: u32 = 0x8400_0012;
    pub const PSCI_SYSTEM_RESET2_64: u32 = 0xc400_0012;
    pub const ARCH_WORKAROUND_1: u32 = 0x8000_8000;
    pub const ARCH_WORKAROUND_2: u32 = 0x8000_7fff;
    pub const ARCH_WORKAROUND_3: u32 = 0x8000_3fff;
    pub const PSCI_FEATURES: u32 = 0x8400_000a;
    /// Vendor-specific hypervisor service (owner 6): call count, UID and revision queries.
    pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_ff01;
    pub const VENDOR_HYP_REVISION: u32 = 0x8600_ff03;
    /// Veil: which VM and vCPU is calling (x1 = VM index, x2 = vCPU index, x3 = vCPU count).
    pub const VEIL_VCPU_INFO: u32 = 0xc600_0001;
    /// Veil: give this vCPU's physical CPU to another vCPU that shares it, if one can run.
    pub const VEIL_YIELD: u32 = 0xc600_0002;
}

/// The calls the exception vectors answer without entering Rust (`__guest_sync` in
/// `_arch/aarch64/vectors.s`), and their answer. Must agree with [`handle`]; the tests check it.
pub const fn fast_answer(fid: u32) -> Option<u64> {
    if fid == fid::PSCI_VERSION {
        return Some(PSCI_VERSION_1_1);
    }
    if fid == fid::SMCCC_VERSION {
        return Some(SMCCC_VERSION_1_1);
    }
    match (fid >> 24) & 0x3f {
        // Arm architecture, standard secure (PSCI), vendor hypervisor (Veil): the full path.
        0 | 4 | 6 => None,
        _ => Some(ret::NOT_SUPPORTED),
    }
}

/// SMCCC 1.1, PSCI 1.1: (major << 16) | minor.
pub const SMCCC_VERSION_1_1: u64 = 0x1_0001;
pub const PSCI_VERSION_1_1: u64 = 0x1_0001;
/// MIGRATE_INFO_TYPE: 2 = no Trusted OS that needs migrating.
pub const MIGRATE_INFO_TYPE_NONE: u64 = 2;
/// Veil's vendor-hypervisor UID, as four 32-bit words in x0..x3 (a random UUID,
/// 5e7d0b62-9f3c-4e8a-b1d4-7c2f0a8e6b91).
pub const VEIL_UID: [u64; 4] = [0x620b_7d5e, 0x8a4e_3c9f, 0x2f7c_d4b1, 0x916b_8e0a];
/// Veil's hypercall interface revision (major, minor).
pub const VEIL_REVISION: (u64, u64) = (0, 1);

/// What a call asks for, decided from its function ID alone (pure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    SmcccVersion,
    SmcccArchFeatures,
    PsciVersion,
    PsciFeatures,
    PsciMigrateInfoType,
    /// CPU_SUSPEND, CPU_ON and AFFINITY_INFO: `wide` = the SMC64 form (64-bit arguments).
    CpuSuspend {
        wide: bool,
    },
    CpuOff,
    CpuOn {
        wide: bool,
    },
    AffinityInfo {
        wide: bool,
    },
    SystemOff,
    SystemReset,
    SystemReset2,
    /// ARCH_WORKAROUND_1/2/3: executed by the host firmware when it implements them.
    ArchWorkaround(u32),
    VendorUid,
    VendorRevision,
    VeilVcpuInfo,
    VeilYield,
    Unknown,
}

impl Call {
    pub fn from_fid(fid: u32) -> Call {
        match fid {
            fid::SMCCC_VERSION => Call::SmcccVersion,
            fid::SMCCC_ARCH_FEATURES => Call::SmcccArchFeatures,
            fid::PSCI_VERSION => Call::PsciVersion,
            fid::PSCI_FEATURES => Call::PsciFeatures,
            fid::PSCI_MIGRATE_INFO_TYPE => Call::PsciMigrateInfoType,
            fid::PSCI_CPU_SUSPEND_32 => Call::CpuSuspend { wide: false },
            fid::PSCI_CPU_SUSPEND_64 => Call::CpuSuspend { wide: true },
            fid::PSCI_CPU_OFF => Call::CpuOff,
            fid::PSCI_CPU_ON_32 => Call::CpuOn { wide: false },
            fid::PSCI_CPU_ON_64 => Call::CpuOn { wide: true },
            fid::PSCI_AFFINITY_INFO_32 => Call::AffinityInfo { wide: false },
            fid::PSCI_AFFINITY_INFO_64 => Call::AffinityInfo { wide: true },
            fid::PSCI_SYSTEM_OFF => Call::SystemOff,
            fid::PSCI_SYSTEM_RESET => Call::SystemReset,
            fid::PSCI_SYSTEM_RESET2_32 | fid::PSCI_SYSTEM_RESET2_64 => Call::SystemReset2,
            fid::ARCH_WORKAROUND_1 | fid::ARCH_WORKAROUND_2 | fid::ARCH_WORKAROUND_3 => {
                Call::ArchWorkaround(fid)
            }
            fid::VENDOR_HYP_CALL_UID => Call::VendorUid,
            fid::VENDOR_HYP_REVISION => Call::VendorRevision,
            fid::VEIL_VCPU_INFO => Call::VeilVcpuInfo,
            fid::VEIL_YIELD => Call::VeilYield,
            _ => Call::Unknown,
        }
    }
}

/// PSCI_FEATURES: 0 for each PSCI function Veil implements, NOT_SUPPORTED for the rest.
pub fn psci_features(queried: u32) -> u64 {
    match Call::from_fid(queried) {
        Call::PsciVersion
        | Call::PsciFeatures
        | Call::PsciMigrateInfoType
        | Call::CpuOff
        | Call::CpuOn { .. }
        | Call::AffinityInfo { .. }
        | Call::SystemOff
        | Call::SystemReset
        | Call::SystemReset2 => ret::SUCCESS,
        // SMCCC_VERSION is discovered through PSCI_FEATURES (SMCCC 1.1, section 7.2).
        Call::SmcccVersion => ret::SUCCESS,
        // CPU_SUSPEND: bit 1 = extended StateID format (the original format is 0), bit 0 = OS-
        // initiated mode not supported (platform-coordinated only).
        Call::CpuSuspend { .. } => 0b10,
        _ => ret::NOT_SUPPORTED,
    }
}

/// SMCCC_ARCH_FEATURES: whether an Arm architecture call is implemented. For the workaround
/// calls the answer is the host firmware's, which knows this CPU's vulnerabilities.
pub fn arch_features(queried: u32, firmware: crate::board::power::FirmwareWorkarounds) -> u64 {
    match Call::from_fid(queried) {
        Call::SmcccVersion | Call::SmcccArchFeatures => ret::SUCCESS,
        Call::ArchWorkaround(fid::ARCH_WORKAROUND_1) => firmware.wa1,
        Call::ArchWorkaround(fid::ARCH_WORKAROUND_2) => firmware.wa2,
        Call::ArchWorkaround(_) => firmware.wa3,
        _ => ret::NOT_SUPPORTED,
    }
}

/// Whether the firmware implements a workaround call (ARCH_FEATURES answered 0 or 1).
fn firmware_implements(answer: u64) -> bool {
    answer == 0 || answer == 1
}

/// How the call arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

/// Handles an SMCCC call from `vcpu`. For an SMC the caller has already stepped past it.
pub fn handle(vcpu: &mut Vcpu, conduit: Conduit) -> Exit {
    // SMCCC: the function ID is W0; the upper half of X0 is ignored.
    let fid = vcpu.regs.x[0] as u32;
    let arg1 = vcpu.regs.x[1];
    let mut result = [
        ret::NOT_SUPPORTED,
        vcpu.regs.x[1],
        vcpu.regs.x[2],
        vcpu.regs.x[3],
    ];
    match Call::from_fid(fid) {
        Call::SmcccVersion => result[0] = SMCCC_VERSION_1_1,
        Call::SmcccArchFeatures => {
            result[0] = arch_features(arg1 as u32, crate::board::power::firmware_workarounds())
        }
        Call::ArchWorkaround(id) => {
            let firmware = crate::board::power::firmware_workarounds();
            let answer = match id {
                fid::ARCH_WORKAROUND_1 => firmware.wa1,
                fid::ARCH_WORKAROUND_2 => firmware.wa2,
                _ => firmware.wa3,
            };
            // The mitigation is the firmware's (it acts on this very CPU): pass the call on.
            // The workaround calls return nothing (WA_2 takes its enable flag in w1).
            if firmware_implements(answer) {
                crate::board::power::firmware_call(
                    crate::board::power::host_psci_conduit(),
                    id,
                    arg1 & 0xffff_ffff,
                    0,
                    0,
                );
                return Exit::Resume;
            }
        }
        Call::PsciVersion => result[0] = PSCI_VERSION_1_1,
        Call::PsciFeatures => result[0] = psci_features(arg1 as u32),
        Call::PsciMigrateInfoType => result[0] = MIGRATE_INFO_TYPE_NONE,
        Call::CpuSuspend { .. } => {
            // Every power state is treated as standby (PSCI allows it): the call returns as a
            // WFI would, with the vCPU's context intact.
            result[0] = ret::SUCCESS;
        }
        Call::CpuOff => return Exit::VcpuOff,
        Call::CpuOn { wide } => {
            result[0] = cpu_on(
                vcpu,
                narrow(wide, arg1),
                narrow(wide, vcpu.regs.x[2]),
                narrow(wide, vcpu.regs.x[3]),
            );
            vcpu.regs.x[..4].copy_from_slice(&result);
            // The new vCPU may share this CPU: let the scheduler see it now.
            return Exit::Reschedule;
        }
        Call::AffinityInfo { wide } => {
            result[0] = affinity_info(vcpu, narrow(wide, arg1), vcpu.regs.x[2] as u32)
        }
        Call::SystemOff => {
            vcpu.vm.power_off();
            return Exit::VmEnded;
        }
        Call::SystemReset => {
            vcpu.vm.reset(vcpu.index);
            return Exit::VmEnded;
        }
        Call::SystemReset2 => {
            // reset_type (W1 in both conventions): 0 is SYSTEM_WARM_RESET; other architectural
            // types are reserved and vendor types (bit 31) are Veil's to define, which it
            // defines none of.
            const SYSTEM_WARM_RESET: u32 = 0;
            if arg1 as u32 == SYSTEM_WARM_RESET {
                vcpu.vm.reset(vcpu.index);
                return Exit::VmEnded;
            }
            result[0] = ret::INVALID_PARAMETERS;
        }
        Call::VendorUid => result = VEIL_UID,
        Call::VendorRevision => result[..2].copy_from_slice(&[VEIL_REVISION.0, VEIL_REVISION.1]),
        Call::VeilYield => {
            vcpu.regs.x[0] = ret::SUCCESS;
            return Exit::Yield;
        }
        Call::VeilVcpuInfo => {
            result = [
                ret::SUCCESS,
                vcpu.vm.id as u64,
                vcpu.index as u64,
                vcpu.vm.vcpu_count as u64,
            ]
        }
        Call::Unknown => {
            log::debug!(
                "VM {} vCPU {}: unknown {:?} function {fid:#010x}: NOT_SUPPORTED",
                vcpu.vm.id,
                vcpu.index,
                conduit
            );
        }
    }
    vcpu.regs.x[..4].copy_from_slice(&result);
    Exit::Resume
}

/// SMC32/HVC32 calls pass 32-bit arguments: the upper halves are not the caller's.
fn narrow(wide: bool, value: u64) -> u64 {
    if wide { value } else { value & 0xffff_ffff }
}

/// PSCI CPU_ON: start the vCPU whose MPIDR is `target` at `entry` with `context_id` in x0.
fn cpu_on(vcpu: &Vcpu, target: u64, entry: u64, context_id: u64) -> u64 {
    let vm = &vcpu.vm;
    let Some(index) = vm.vcpu_by_affinity(target) else {
        return ret::INVALID_PARAMETERS;
    };
    // The entry point must be executable guest RAM and instruction-aligned.
    if vm.ram.pa_of(entry).is_none() || entry % 4 != 0 {
        return ret::INVALID_ADDRESS;
    }
    match vm.vcpu_power[index].request_on(crate::vm::psci::StartRequest { entry, context_id }) {
        Ok(()) => {
            vm.kick_vcpu(index);
            ret::SUCCESS
        }
        Err(code) => code,
    }
}

/// PSCI AFFINITY_INFO: the power state of the vCPU (level 0) or of any vCPU in its cluster.
fn affinity_info(vcpu: &Vcpu, target: u64, lowest_level: u32) -> u64 {
    let vm = &vcpu.vm;
    match lowest_level {
        0 => match vm.vcpu_by_affinity(target) {
            Some(index) => vm.vcpu_power[index].state() as u64,
            None => ret::INVALID_PARAMETERS,
        },
        // Every vCPU of a Veil VM is in cluster 0.0.0: Aff1..3 of `target` must be zero.
        1..=3 => {
            let shift = [0, 8, 16, 32][lowest_level as usize];
            let upper_mask = 0xff_00ff_ffffu64 & !((1u64 << shift) - 1);
            if target & upper_mask != 0 {
                return ret::INVALID_PARAMETERS;
            }
            use crate::vm::psci::PowerState;
            let states = vm.vcpu_power.iter().map(|p| p.state());
            let mut any_pending = false;
            for state in states {
                match state {
                    PowerState::On => return PowerState::On as u64,
                    PowerState::OnPending => any_pending = true,
                    PowerState::Off => {}
                }
            }
            if any_pending {
                PowerState::OnPending as u64
            } else {
                PowerState::Off as u64
            }
        }
        _ => ret::INVALID_PARAMETERS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ids() {
        assert_eq!(Call::from_fid(0x8400_0000), Call::PsciVersion);
        assert_eq!(Call::from_fid(0x8400_0008), Call::SystemOff);
        assert_eq!(Call::from_fid(0x8000_0000), Call::SmcccVersion);
        // Unallocated or unimplemented IDs, in both conventions.
        assert_eq!(Call::from_fid(0xc400_0003), Call::CpuOn { wide: true });
        assert_eq!(Call::from_fid(0x8400_0003), Call::CpuOn { wide: false });
        assert_eq!(narrow(false, 0xffff_ffff_4008_0000), 0x4008_0000);
        assert_eq!(narrow(true, 0xffff_ffff_4008_0000), 0xffff_ffff_4008_0000);
        for fid in [
            0x8500_1234,
            0xc500_1234,
            0x8400_00ff,
            0xc400_0008,
            0x0,
            0xffff_ffff,
        ] {
            assert_eq!(Call::from_fid(fid), Call::Unknown, "{fid:#x}");
        }
    }

    /// What the full path answers for calls that need no vCPU state.
    fn full_path_answer(fid: u32) -> Option<u64> {
        match Call::from_fid(fid) {
            Call::Unknown => Some(ret::NOT_SUPPORTED),
            Call::PsciVersion => Some(PSCI_VERSION_1_1),
            Call::SmcccVersion => Some(SMCCC_VERSION_1_1),
            _ => None,
        }
    }

    #[test]
    fn fast_path_agrees_with_the_full_path() {
        for owner in 0..64u32 {
            for fast in [0u32, 1 << 31] {
                for wide in [0u32, 1 << 30] {
                    for function in [
                        0u32, 1, 2, 3, 8, 0xa, 0x12, 0xff01, 0xff03, 0x8000, 0x1234, 0xffff,
                    ] {
                        let fid = fast | wide | owner << 24 | function;
                        if let Some(answer) = fast_answer(fid) {
                            assert_eq!(full_path_answer(fid), Some(answer), "{fid:#x}");
                        }
                    }
                }
            }
        }
        assert_eq!(fast_answer(fid::PSCI_VERSION), Some(0x1_0001));
        assert_eq!(fast_answer(0x8500_1234), Some(ret::NOT_SUPPORTED));
        assert_eq!(fast_answer(fid::PSCI_CPU_ON_64), None);
    }

    #[test]
    fn features_are_truthful() {
        assert_eq!(psci_features(fid::PSCI_SYSTEM_OFF), ret::SUCCESS);
        assert_eq!(psci_features(fid::PSCI_VERSION), ret::SUCCESS);
        assert_eq!(psci_features(fid::PSCI_CPU_ON_64), ret::SUCCESS);
        assert_eq!(psci_features(fid::PSCI_CPU_SUSPEND_32), 0b10);
        assert_eq!(psci_features(0x8400_0005), ret::NOT_SUPPORTED, "MIGRATE");
        assert_eq!(psci_features(0x1234), ret::NOT_SUPPORTED);
        let none = crate::board::power::FirmwareWorkarounds {
            wa1: ret::NOT_SUPPORTED,
            wa2: ret::NOT_SUPPORTED,
            wa3: ret::NOT_SUPPORTED,
        };
        assert_eq!(arch_features(fid::SMCCC_VERSION, none), ret::SUCCESS);
        assert_eq!(
            arch_features(fid::ARCH_WORKAROUND_1, none),
            ret::NOT_SUPPORTED
        );
        let affected = crate::board::power::FirmwareWorkarounds {
            wa1: 0,
            wa2: 1,
            wa3: -2i64 as u64,
        };
        assert_eq!(
            arch_features(fid::ARCH_WORKAROUND_1, affected),
            0,
            "the firmware's answer"
        );
        assert_eq!(arch_features(fid::ARCH_WORKAROUND_2, affected), 1);
        assert_eq!(
            arch_features(fid::ARCH_WORKAROUND_3, affected),
            -2i64 as u64
        );
        assert_eq!(
            psci_features(fid::SMCCC_VERSION),
            ret::SUCCESS,
            "SMCCC 1.1 discovery"
        );
        assert_eq!(psci_features(fid::PSCI_SYSTEM_RESET2_64), ret::SUCCESS);
        assert_eq!(ret::NOT_SUPPORTED, 0xffff_ffff_ffff_ffff);
    }
}
