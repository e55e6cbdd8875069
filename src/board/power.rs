//! Turning the machine off, and the firmware calls (PSCI over SMC or HVC) Veil makes as a client.
//!
//! The exit status matters under QEMU, where tests read it: with `veil.exit=semihosting` Veil
//! leaves through semihosting SYS_EXIT_EXTENDED, which passes any status through. Otherwise it
//! uses the board's own method, which can only say "off".

use super::{PowerOffMethod, discovery::PsciMethod, facts};

/// Why the machine is going down; the value is the exit status QEMU reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitStatus {
    /// Every VM powered itself off.
    AllVmsPoweredOff = 0,
    /// Veil stopped at least one VM because of an error.
    VmStopped = 1,
    /// Veil itself failed.
    VeilPanic = 2,
}

/// PSCI function IDs Veil calls on the host firmware (PSCI 1.1, DEN0022).
pub mod psci_fid {
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const CPU_ON_64: u32 = 0xC400_0003;
}

/// Makes an SMCCC call to the firmware through `conduit` and returns x0.
pub fn firmware_call(conduit: PsciMethod, fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    arch::smccc_call(conduit == PsciMethod::Hvc, fid, a1, a2, a3)
}

/// The conduit the host DTB names for PSCI, SMC when it names none.
pub fn host_psci_conduit() -> PsciMethod {
    super::PLATFORM
        .get()
        .and_then(|p| p.psci)
        .unwrap_or(PsciMethod::Smc)
}

/// Turns the machine off. Never returns; if every method fails, the CPU sleeps forever.
pub fn power_off(status: ExitStatus) -> ! {
    super::console::flush();
    if super::options().exit_semihosting {
        arch::semihosting_exit(status as u32);
    }
    match facts::POWEROFF {
        PowerOffMethod::Psci => {
            firmware_call(host_psci_conduit(), psci_fid::SYSTEM_OFF, 0, 0, 0);
        }
        PowerOffMethod::Bcm2711Watchdog => arch::bcm2711_watchdog_off(),
    }
    loop {
        arch::wait_forever_step();
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use core::arch::asm;

    pub fn smccc_call(hvc: bool, fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
        let mut x0 = fid as u64;
        // SAFETY: an SMCCC call into firmware; SMCCC 1.1 lets it clobber x0-x17, which are
        // declared clobbered here. It does not touch Veil's memory.
        unsafe {
            if hvc {
                asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
                     inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                     out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                     out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                     options(nostack));
            } else {
                asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
                     inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                     out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                     out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                     options(nostack));
            }
        }
        x0
    }

    /// Semihosting SYS_EXIT_EXTENDED (0x20) with reason ADP_Stopped_ApplicationExit (0x20026).
    pub fn semihosting_exit(status: u32) {
        let block: [u64; 2] = [0x20026, status as u64];
        // SAFETY: `hlt #0xf000` is the AArch64 semihosting trap; with semihosting enabled the
        // debugger/QEMU reads the parameter block and ends the program. Without it this would be
        // an undefined instruction, which is why it is only used when `veil.exit=semihosting`.
        unsafe {
            asm!("hlt #0xf000", in("x0") 0x20u64, in("x1") block.as_ptr(), options(nostack));
        }
    }

    /// BCM2711 PM watchdog: a full reset after a short timeout; QEMU's `-no-reboot` turns that
    /// reset into an exit (PLATFORM.md).
    pub fn bcm2711_watchdog_off() {
        const PM_RSTC: usize = 0xfe10_001c;
        const PM_WDOG: usize = 0xfe10_0024;
        const PM_PASSWORD: u32 = 0x5a00_0000;
        const PM_RSTC_WRCFG_FULL_RESET: u32 = 0x20;
        // SAFETY: the PM block is a board fact of the BCM2711 and mapped as device memory; these
        // two writes only arm the watchdog.
        unsafe {
            core::ptr::write_volatile(PM_WDOG as *mut u32, PM_PASSWORD | 10);
            core::ptr::write_volatile(PM_RSTC as *mut u32, PM_PASSWORD | PM_RSTC_WRCFG_FULL_RESET);
        }
    }

    pub fn wait_forever_step() {
        aarch64_cpu::asm::wfi();
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod arch {
    pub fn smccc_call(_hvc: bool, _fid: u32, _a1: u64, _a2: u64, _a3: u64) -> u64 {
        unimplemented!("firmware calls exist only on aarch64")
    }
    pub fn semihosting_exit(_status: u32) {}
    pub fn bcm2711_watchdog_off() {}
    pub fn wait_forever_step() {
        std::process::exit(3)
    }
}

/// What the host firmware says about the SMCCC Spectre/SSBD workaround calls, asked once at
/// boot so guests get the truth about the CPU they run on (SMCCC_ARCH_FEATURES answers for
/// ARCH_WORKAROUND_1, _2, _3; NOT_SUPPORTED when the firmware has no SMCCC 1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareWorkarounds {
    pub wa1: u64,
    pub wa2: u64,
    pub wa3: u64,
}

/// SMCCC function IDs used with the host firmware.
pub mod smccc_fid {
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    pub const ARCH_WORKAROUND_1: u32 = 0x8000_8000;
    pub const ARCH_WORKAROUND_2: u32 = 0x8000_7fff;
    pub const ARCH_WORKAROUND_3: u32 = 0x8000_3fff;
    pub const PSCI_FEATURES: u32 = 0x8400_000a;
}

static WORKAROUNDS: spin::Once<FirmwareWorkarounds> = spin::Once::new();

/// Asks the host firmware (boot CPU, once, after the MMU is on).
pub fn probe_firmware_workarounds() -> FirmwareWorkarounds {
    *WORKAROUNDS.call_once(|| {
        const NOT_SUPPORTED: u64 = -1i64 as u64;
        let none = FirmwareWorkarounds {
            wa1: NOT_SUPPORTED,
            wa2: NOT_SUPPORTED,
            wa3: NOT_SUPPORTED,
        };
        let Some(conduit) = super::PLATFORM.get().and_then(|p| p.psci) else {
            return none;
        };
        // SMCCC 1.1 is discovered through PSCI_FEATURES(SMCCC_VERSION), then SMCCC_VERSION.
        if firmware_call(
            conduit,
            smccc_fid::PSCI_FEATURES,
            smccc_fid::SMCCC_VERSION as u64,
            0,
            0,
        ) != 0
        {
            return none;
        }
        let version = firmware_call(conduit, smccc_fid::SMCCC_VERSION, 0, 0, 0);
        if version as i64 <= 0 || version < 0x1_0001 {
            return none;
        }
        let ask =
            |fid: u32| firmware_call(conduit, smccc_fid::SMCCC_ARCH_FEATURES, fid as u64, 0, 0);
        FirmwareWorkarounds {
            wa1: ask(smccc_fid::ARCH_WORKAROUND_1),
            wa2: ask(smccc_fid::ARCH_WORKAROUND_2),
            wa3: ask(smccc_fid::ARCH_WORKAROUND_3),
        }
    })
}

/// The host firmware's workaround answers, as probed at boot.
pub fn firmware_workarounds() -> FirmwareWorkarounds {
    WORKAROUNDS.get().copied().unwrap_or(FirmwareWorkarounds {
        wa1: -1i64 as u64,
        wa2: -1i64 as u64,
        wa3: -1i64 as u64,
    })
}
