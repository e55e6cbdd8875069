//! `smccc`, `reset` and `reset2`: the calls a guest can make to Veil
//! (`docs/HYPERCALLS.md`), over HVC and over SMC, in the 32- and 64-bit conventions.
//!
//! Every call goes through a probe in assembly that loads x4..x30 with known patterns before
//! the HVC/SMC and records all of x0..x30 after it: SMCCC 1.1 lets the callee clobber x4..x17
//! (not checked), but x18..x30 must survive, and Veil documents that an unknown call "changes
//! nothing else", so x1..x3 must come back as passed there.

use veil_guest_rt::exception::expect_exception;
use veil_guest_rt::println;

use crate::tally::Tally;

/// SMCCC and PSCI function IDs (Arm DEN0028, DEN0022).
mod fid {
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    pub const SMCCC_ARCH_SOC_ID: u32 = 0x8000_0002;
    pub const SMCCC_ARCH_WORKAROUND_1: u32 = 0x8000_8000;
    pub const SMCCC_ARCH_WORKAROUND_2: u32 = 0x8000_7FFF;
    pub const SMCCC_ARCH_WORKAROUND_3: u32 = 0x8000_3FFF;
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
    pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON_32: u32 = 0x8400_0003;
    pub const CPU_ON_64: u32 = 0xC400_0003;
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const SYSTEM_RESET2_32: u32 = 0x8400_0012;
    pub const SYSTEM_RESET2_64: u32 = 0xC400_0012;
    pub const PSCI_FEATURES: u32 = 0x8400_000A;
    pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_FF01;
    pub const VENDOR_HYP_REVISION: u32 = 0x8600_FF03;
    pub const VEIL_VCPU_INFO: u32 = 0xC600_0001;
}

/// Return codes.
const SUCCESS: i64 = 0;
const NOT_SUPPORTED: i64 = -1;
const INVALID_PARAMETERS: i64 = -2;
const ALREADY_ON: i64 = -4;

/// Veil's vendor-hypervisor UID, `5e7d0b62-9f3c-4e8a-b1d4-7c2f0a8e6b91`, as SMCCC returns a
/// UID: bytes 0..3 in w0 (byte 0 least significant), 4..7 in w1, and so on.
const VEIL_UID: [u64; 4] = [0x620b_7d5e, 0x8a4e_3c9f, 0x2f7c_d4b1, 0x916b_8e0a];

/// What the probe puts in register `n` (4..30) before the call.
const fn pattern(n: usize) -> u64 {
    0x5EED_0000_0000_0000 | n as u64
}

// The probes: `extern "C" fn(regs: *mut [u64; 31])`. In: regs[0..4] = x0..x3 for the call.
// Out: regs[0..31] = x0..x30 right after it. x4..x30 hold pattern(n) during the call; x18..x30
// are saved on the stack and restored before returning, so the caller sees none of that.
macro_rules! probe_asm {
    ($name:literal, $insn:literal) => {
        concat!(
            ".global ", $name, "\n",
            ".balign 4\n",
            $name, ":\n",
            veil_guest_rt::regprobe_enter!(),
            "    ldp     x2, x3, [x0, #16]\n",
            "    ldp     x0, x1, [x0, #0]\n",
            "    .irp n, 4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30\n",
            "    movz    x\\n, #\\n\n",
            "    movk    x\\n, #0x5eed, lsl #48\n",
            "    .endr\n",
            "    ", $insn, " #0\n",
            veil_guest_rt::regprobe_leave!(),
        )
    };
}

core::arch::global_asm!(
    probe_asm!("cpu_smccc_probe_hvc", "hvc"),
    probe_asm!("cpu_smccc_probe_smc", "smc"),
    // Where a CPU_SUSPEND that really powered down would resume: Veil treats every state as
    // standby, so reaching this is a failure. It powers the VM off without the summary line.
    ".global cpu_suspend_entry",
    ".balign 4",
    "cpu_suspend_entry:",
    "    movz    w0, #0x0008",
    "    movk    w0, #0x8400, lsl #16",
    "    hvc     #0",
    "2:  wfi",
    "    b       2b",
);

unsafe extern "C" {
    fn cpu_smccc_probe_hvc(regs: *mut [u64; 31]);
    fn cpu_smccc_probe_smc(regs: *mut [u64; 31]);
    fn cpu_suspend_entry();
}

/// HVC or SMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

impl Conduit {
    fn name(self) -> &'static str {
        match self {
            Conduit::Hvc => "HVC",
            Conduit::Smc => "SMC",
        }
    }
}

/// Makes one call with x0..x3 = `args` and returns x0..x30 after it.
///
/// # Safety
/// The call must not do anything that breaks the guest (CPU_OFF, SYSTEM_OFF, CPU_ON at bad
/// code); queries are always sound.
unsafe fn call(conduit: Conduit, args: [u64; 4]) -> [u64; 31] {
    let mut regs = [0u64; 31];
    regs[..4].copy_from_slice(&args);
    // SAFETY: the probe saves and restores every register the ABI asks it to keep and writes
    // only `regs`; what the call itself does is the caller's promise.
    unsafe {
        match conduit {
            Conduit::Hvc => cpu_smccc_probe_hvc(&mut regs),
            Conduit::Smc => cpu_smccc_probe_smc(&mut regs),
        }
    }
    regs
}

/// Whether Veil answers: its vendor-hypervisor UID over HVC. On bare QEMU an unknown HVC
/// returns NOT_SUPPORTED (or, without a PSCI conduit, is UNDEFINED: caught).
pub fn under_veil() -> bool {
    let mut uid = [0; 31];
    let info = expect_exception(|| {
        // SAFETY: the UID query only reports.
        uid = unsafe { call(Conduit::Hvc, [u64::from(fid::VENDOR_HYP_CALL_UID), 0, 0, 0]) };
    });
    info.is_none() && uid[..4] == VEIL_UID
}

/// SYSTEM_OFF over SMC; returns only if that failed, after saying so.
pub fn system_off_by_smc() {
    // SAFETY: powering off ends the guest.
    let regs = unsafe { call(Conduit::Smc, [u64::from(fid::SYSTEM_OFF), 0, 0, 0]) };
    println!("cpu: FAIL SYSTEM_OFF over SMC returned {:#x}", regs[0]);
}

/// The result in x0 as the convention of `fid` defines it: SMC32/HVC32 calls return a signed
/// 32-bit value in w0, SMC64/HVC64 calls a 64-bit one in x0.
fn result(fid: u32, x0: u64) -> i64 {
    if fid & (1 << 30) == 0 {
        i64::from(x0 as u32 as i32)
    } else {
        x0 as i64
    }
}

/// A result: negative codes in decimal, anything else (versions, flags) in hex.
struct Code(i64);

impl core::fmt::Display for Code {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 < 0 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:#x}", self.0)
        }
    }
}

/// Checks and counts: x18..x30 preserved by every call of one conduit.
struct Calls<'t> {
    tally: &'t mut Tally,
    conduit: Conduit,
    made: u32,
    clobbered: u32,
}

impl<'t> Calls<'t> {
    fn new(tally: &'t mut Tally, conduit: Conduit) -> Self {
        Self {
            tally,
            conduit,
            made: 0,
            clobbered: 0,
        }
    }

    /// One call; checks x18..x30 and returns x0..x30.
    ///
    /// # Safety
    /// As for [`call`].
    unsafe fn raw(&mut self, fid: u64, x1: u64, x2: u64, x3: u64) -> [u64; 31] {
        // SAFETY: passed on to the caller.
        let regs = unsafe { call(self.conduit, [fid, x1, x2, x3]) };
        self.made += 1;
        for (n, &value) in regs.iter().enumerate().skip(18) {
            if value != pattern(n) {
                self.clobbered += 1;
                self.tally.fail(format_args!(
                    "{} {fid:#x}: x{n} = {:#x} after the call, expected {:#x} (SMCCC preserves x18-x30)",
                    self.conduit.name(),
                    value,
                    pattern(n)
                ));
            }
        }
        regs
    }

    /// A query that must return `expected` in x0 (w0 for 32-bit IDs).
    fn expect(
        &mut self,
        what: core::fmt::Arguments<'_>,
        fid: u32,
        x1: u64,
        x2: u64,
        x3: u64,
        expected: i64,
    ) -> [u64; 31] {
        // SAFETY: every ID passed here only queries or is refused (ALREADY_ON, bad parameters).
        let regs = unsafe { self.raw(u64::from(fid), x1, x2, x3) };
        let got = result(fid, regs[0]);
        let conduit = self.conduit.name();
        self.tally.check(
            got == expected,
            format_args!("{conduit} {what} ({fid:#x}, {x1:#x}) = {}", Code(got)),
            format_args!("{}", Code(expected)),
        );
        regs
    }

    fn summary(self) {
        let conduit = self.conduit.name();
        if self.clobbered == 0 {
            self.tally.pass(format_args!(
                "{conduit}: x18-x30 preserved across all {} calls",
                self.made
            ));
        }
    }
}

/// PSCI functions Veil implements and what PSCI_FEATURES says of each.
const PSCI_FEATURES: [(u32, &str, i64); 16] = [
    (fid::PSCI_VERSION, "PSCI_VERSION", 0),
    (fid::CPU_SUSPEND_32, "CPU_SUSPEND", 0b10),
    (fid::CPU_SUSPEND_64, "CPU_SUSPEND64", 0b10),
    (fid::CPU_OFF, "CPU_OFF", 0),
    (fid::CPU_ON_32, "CPU_ON", 0),
    (fid::CPU_ON_64, "CPU_ON64", 0),
    (fid::AFFINITY_INFO_32, "AFFINITY_INFO", 0),
    (fid::AFFINITY_INFO_64, "AFFINITY_INFO64", 0),
    (fid::MIGRATE_INFO_TYPE, "MIGRATE_INFO_TYPE", 0),
    (fid::SYSTEM_OFF, "SYSTEM_OFF", 0),
    (fid::SYSTEM_RESET, "SYSTEM_RESET", 0),
    (fid::SYSTEM_RESET2_32, "SYSTEM_RESET2", 0),
    (fid::SYSTEM_RESET2_64, "SYSTEM_RESET2_64", 0),
    (fid::PSCI_FEATURES, "PSCI_FEATURES", 0),
    // PSCI 1.0+ answers for SMCCC_VERSION too: how Linux (psci_init_smccc) finds SMCCC 1.1.
    (fid::SMCCC_VERSION, "SMCCC_VERSION", 0),
    // Not PSCI functions, or PSCI functions Veil does not implement: NOT_SUPPORTED.
    (0x8400_0005, "MIGRATE", NOT_SUPPORTED),
];

/// More IDs PSCI_FEATURES must refuse: unimplemented PSCI functions and non-PSCI IDs.
const PSCI_NOT_IMPLEMENTED: [u32; 9] = [
    0xC400_0005, // MIGRATE (64)
    0x8400_0007, // MIGRATE_INFO_UP_CPU
    0x8400_000B, // CPU_FREEZE
    0x8400_000C, // CPU_DEFAULT_SUSPEND
    0x8400_000E, // SYSTEM_SUSPEND
    0x8400_0013, // MEM_PROTECT
    0xC400_0002, // "CPU_OFF64": no such function
    fid::VENDOR_HYP_CALL_UID,
    0x1234_5678,
];

/// Function IDs nobody implements, across owners and both conventions, fast and yielding.
/// Each must return NOT_SUPPORTED and change nothing else — in particular the 64-bit forms of
/// CPU_OFF and SYSTEM_OFF, which do not exist, must not turn anything off.
const UNKNOWN: [u32; 27] = [
    fid::SMCCC_ARCH_SOC_ID,
    0x8000_FFFF,
    0xC000_0000,
    0x8100_0000, // CPU service
    0x8200_0000, // SiP
    0xC200_0001,
    0x8300_0000, // OEM
    0x8400_0005, // MIGRATE
    0x8400_0007,
    0x8400_000B,
    0x8400_000E,
    0x8400_0013, // MEM_PROTECT
    0xC400_0014, // MEM_PROTECT_CHECK_RANGE
    0x8401_0000, // PSCI_VERSION with reserved bits 23:16 set
    0xC400_0000, // PSCI_VERSION as SMC64: no such function
    0xC400_0002, // CPU_OFF as SMC64: no such function
    0xC400_0008, // SYSTEM_OFF as SMC64: no such function
    0xC400_000A,
    0x8500_0000, // standard hypervisor service
    0xC500_1234,
    0x8600_FF00, // vendor hypervisor call count: not implemented
    0x8600_0001, // VEIL_VCPU_INFO's SMC32 twin: not defined
    0xC600_00F0,
    0xB000_0000, // trusted applications
    0xBF00_FFFF, // trusted OS
    0x0400_0000, // PSCI_VERSION as a yielding call
    0xFFFF_FFFF,
];

/// Arguments passed with the unknown IDs: x1..x3 must come back unchanged.
const UNKNOWN_ARGS: [u64; 3] = [
    0x1111_2222_3333_4444,
    0x5555_6666_7777_8888,
    0x9999_AAAA_BBBB_CCCC,
];

/// `cpu.test=smccc`.
pub fn run(tally: &mut Tally) {
    for conduit in [Conduit::Hvc, Conduit::Smc] {
        if conduit == Conduit::Smc && !tally.veil {
            tally.skip_veil_only(format_args!(
                "SMC as a conduit (bare QEMU has no EL3 to answer it)"
            ));
            continue;
        }
        println!("cpu: --- over {} ---", conduit.name());
        let mut calls = Calls::new(tally, conduit);
        arch_calls(&mut calls);
        psci_calls(&mut calls);
        if calls.tally.veil {
            veil_calls(&mut calls);
        } else {
            calls
                .tally
                .skip_veil_only(format_args!("Veil's UID, revision and VEIL_VCPU_INFO"));
        }
        unknown_calls(&mut calls);
        calls.summary();
    }
    // The last call of the test: SYSTEM_OFF over SMC (after the summary line).
    tally.power_off_by_smc = tally.veil;
}

fn arch_calls(calls: &mut Calls<'_>) {
    calls.expect(
        format_args!("SMCCC_VERSION"),
        fid::SMCCC_VERSION,
        0,
        0,
        0,
        0x1_0001,
    );
    for (queried, name, expected) in [
        (fid::SMCCC_VERSION, "SMCCC_VERSION", SUCCESS),
        (fid::SMCCC_ARCH_FEATURES, "SMCCC_ARCH_FEATURES", SUCCESS),
        (fid::SMCCC_ARCH_SOC_ID, "SMCCC_ARCH_SOC_ID", NOT_SUPPORTED),
    ] {
        calls.expect(
            format_args!("SMCCC_ARCH_FEATURES({name})"),
            fid::SMCCC_ARCH_FEATURES,
            u64::from(queried),
            0,
            0,
            expected,
        );
    }
    // The Spectre workarounds: Veil answers what the host firmware answers (it passes the calls
    // on), so any of NOT_SUPPORTED, 0 (needed, implemented) and 1 (not needed) is right.
    for (queried, name) in [
        (fid::SMCCC_ARCH_WORKAROUND_1, "SMCCC_ARCH_WORKAROUND_1"),
        (fid::SMCCC_ARCH_WORKAROUND_2, "SMCCC_ARCH_WORKAROUND_2"),
        (fid::SMCCC_ARCH_WORKAROUND_3, "SMCCC_ARCH_WORKAROUND_3"),
    ] {
        // SAFETY: SMCCC_ARCH_FEATURES only reports.
        let regs = unsafe {
            calls.raw(
                u64::from(fid::SMCCC_ARCH_FEATURES),
                u64::from(queried),
                0,
                0,
            )
        };
        let got = result(fid::SMCCC_ARCH_FEATURES, regs[0]);
        let conduit = calls.conduit.name();
        calls.tally.check(
            matches!(got, NOT_SUPPORTED | 0 | 1),
            format_args!("{conduit} SMCCC_ARCH_FEATURES({name}) = {}", Code(got)),
            format_args!("-1, 0 or 1 (the host firmware's answer)"),
        );
    }
}

fn psci_calls(calls: &mut Calls<'_>) {
    calls.expect(
        format_args!("PSCI_VERSION"),
        fid::PSCI_VERSION,
        0,
        0,
        0,
        0x1_0001,
    );
    for (queried, name, expected) in PSCI_FEATURES {
        calls.expect(
            format_args!("PSCI_FEATURES({name})"),
            fid::PSCI_FEATURES,
            u64::from(queried),
            0,
            0,
            expected,
        );
    }
    for queried in PSCI_NOT_IMPLEMENTED {
        calls.expect(
            format_args!("PSCI_FEATURES({queried:#x})"),
            fid::PSCI_FEATURES,
            u64::from(queried),
            0,
            0,
            NOT_SUPPORTED,
        );
    }
    calls.expect(
        format_args!("MIGRATE_INFO_TYPE"),
        fid::MIGRATE_INFO_TYPE,
        0,
        0,
        0,
        2,
    );

    // CPU_SUSPEND: every state is standby, so the call returns 0 here, context intact (the
    // probe checks x18-x30), for a standby state and for a power-down one (StateType, bit 16).
    let entry = cpu_suspend_entry as *const () as u64;
    let suspend = if calls.tally.veil {
        [fid::CPU_SUSPEND_32, fid::CPU_SUSPEND_64].as_slice()
    } else {
        calls.tally.skip_veil_only(format_args!(
            "CPU_SUSPEND (bare QEMU really waits for an interrupt)"
        ));
        [].as_slice()
    };
    for &fid in suspend {
        calls.expect(
            format_args!("CPU_SUSPEND standby"),
            fid,
            0,
            entry,
            0x1234,
            SUCCESS,
        );
        calls.expect(
            format_args!("CPU_SUSPEND power-down"),
            fid,
            1 << 16,
            entry,
            0x1234,
            SUCCESS,
        );
    }

    // AFFINITY_INFO of vCPU 0 (the caller, on), at each level; then bad parameters.
    for fid in [fid::AFFINITY_INFO_32, fid::AFFINITY_INFO_64] {
        for level in 0..=3 {
            calls.expect(
                format_args!("AFFINITY_INFO(0) level {level}"),
                fid,
                0,
                level,
                0,
                0,
            );
        }
        calls.expect(
            format_args!("AFFINITY_INFO(0) level 4"),
            fid,
            0,
            4,
            0,
            INVALID_PARAMETERS,
        );
        calls.expect(
            format_args!("AFFINITY_INFO(vCPU 1, absent)"),
            fid,
            1,
            0,
            0,
            INVALID_PARAMETERS,
        );
        calls.expect(
            format_args!("AFFINITY_INFO(Aff1 = 1) level 1"),
            fid,
            0x100,
            1,
            0,
            INVALID_PARAMETERS,
        );
    }
    // SMC32: the upper halves of the arguments are not the caller's and must be ignored.
    calls.expect(
        format_args!("AFFINITY_INFO (32-bit) with junk in x1[63:32]"),
        fid::AFFINITY_INFO_32,
        0xFFFF_FFFF_0000_0000,
        0,
        0,
        0,
    );

    // CPU_ON of the caller itself, and of vCPUs this one-vCPU VM does not have.
    let entry = cpu_suspend_entry as *const () as u64;
    for fid in [fid::CPU_ON_32, fid::CPU_ON_64] {
        calls.expect(
            format_args!("CPU_ON(vCPU 0, running)"),
            fid,
            0,
            entry,
            0,
            ALREADY_ON,
        );
        calls.expect(
            format_args!("CPU_ON(vCPU 1, absent)"),
            fid,
            1,
            entry,
            0,
            INVALID_PARAMETERS,
        );
        calls.expect(
            format_args!("CPU_ON(MPIDR 0x100, absent)"),
            fid,
            0x100,
            entry,
            0,
            INVALID_PARAMETERS,
        );
    }
}

fn veil_calls(calls: &mut Calls<'_>) {
    let conduit = calls.conduit.name();
    // SAFETY: the vendor queries only report.
    let regs = unsafe { calls.raw(u64::from(fid::VENDOR_HYP_CALL_UID), 0, 0, 0) };
    let words = [
        regs[0] & 0xFFFF_FFFF,
        regs[1] & 0xFFFF_FFFF,
        regs[2] & 0xFFFF_FFFF,
        regs[3] & 0xFFFF_FFFF,
    ];
    calls.tally.check(
        words == VEIL_UID,
        format_args!(
            "{conduit} Call UID = {:#x} {:#x} {:#x} {:#x}",
            words[0], words[1], words[2], words[3]
        ),
        format_args!("Veil's UID 5e7d0b62-9f3c-4e8a-b1d4-7c2f0a8e6b91 in w0..w3"),
    );
    // SAFETY: as above.
    let regs = unsafe { calls.raw(u64::from(fid::VENDOR_HYP_REVISION), 0, 0, 0) };
    calls.tally.check(
        regs[0] as u32 == 0 && regs[1] as u32 == 1,
        format_args!("{conduit} Revision = {}.{}", regs[0] as u32, regs[1] as u32),
        format_args!("0.1"),
    );
    // SAFETY: as above.
    let regs = unsafe { calls.raw(u64::from(fid::VEIL_VCPU_INFO), 0, 0, 0) };
    calls.tally.check(
        regs[..4] == [0, 0, 0, 1],
        format_args!(
            "{conduit} VEIL_VCPU_INFO = x0 {:#x}, VM {}, vCPU {}, {} vCPU(s)",
            regs[0], regs[1], regs[2], regs[3]
        ),
        format_args!("0, VM 0, vCPU 0, 1 vCPU"),
    );
    // The function ID is w0: whatever is in x0[63:32] does not change the call.
    // SAFETY: as above.
    let regs = unsafe {
        calls.raw(
            0xFFFF_FFFF_0000_0000 | u64::from(fid::PSCI_VERSION),
            0,
            0,
            0,
        )
    };
    calls.tally.check(
        regs[0] as u32 == 0x1_0001,
        format_args!("{conduit} x0 = 0xffffffff84000000 answered {:#x}", regs[0]),
        format_args!("PSCI_VERSION's 0x10001: the function ID is w0"),
    );
}

fn unknown_calls(calls: &mut Calls<'_>) {
    let conduit = calls.conduit.name();
    let [a1, a2, a3] = UNKNOWN_ARGS;
    let mut failed = 0;
    for id in UNKNOWN {
        // SAFETY: nobody implements these IDs; a hypervisor that wrongly acts on one is what
        // this check is for.
        let regs = unsafe { calls.raw(u64::from(id), a1, a2, a3) };
        let got = result(id, regs[0]);
        if got != NOT_SUPPORTED {
            failed += 1;
            calls.tally.fail(format_args!(
                "{conduit} unknown function {id:#x} returned {}, expected NOT_SUPPORTED (-1)",
                Code(got)
            ));
        }
        if calls.tally.veil && regs[1..4] != UNKNOWN_ARGS {
            failed += 1;
            calls.tally.fail(format_args!(
                "{conduit} unknown function {id:#x} changed x1..x3 to {:#x} {:#x} {:#x} (HYPERCALLS.md: \"changes nothing else\")",
                regs[1], regs[2], regs[3]
            ));
        }
    }
    if failed == 0 {
        let unchanged = if calls.tally.veil {
            " with x1..x3 unchanged"
        } else {
            ""
        };
        calls.tally.pass(format_args!(
            "{conduit}: {} unknown function IDs returned NOT_SUPPORTED{unchanged}",
            UNKNOWN.len()
        ));
    }
}

/// `cpu.test=reset`: SYSTEM_RESET over SMC (HVC on bare QEMU). A warm reset restarts the VM:
/// the guest boots again from its entry point with the rest of RAM as it left it. So the first
/// boot leaves a note in the last page of RAM (no loader writes there) and resets; the second
/// finds the note, clears it and passes.
pub fn run_reset(tally: &mut Tally) {
    let conduit = if tally.veil {
        Conduit::Smc
    } else {
        Conduit::Hvc
    };
    reset(
        tally,
        conduit,
        "SYSTEM_RESET",
        fid::SYSTEM_RESET,
        ResetFrom::Boot,
    );
}

/// `cpu.test=reset2`: SYSTEM_RESET2 (SMC64, SYSTEM_WARM_RESET) over HVC; as `reset`, after
/// checking that the reset types Veil does not define are refused.
pub fn run_reset2(tally: &mut Tally) {
    reset(
        tally,
        Conduit::Hvc,
        "SYSTEM_RESET2",
        fid::SYSTEM_RESET2_64,
        ResetFrom::Boot,
    );
}

/// `cpu.test=reset-smp` (2 vCPUs): vCPU 1 asks for the reset while vCPU 0 waits in WFI; after
/// it, vCPU 0 alone runs again and vCPU 1 is off.
pub fn run_reset_smp(tally: &mut Tally) {
    reset(
        tally,
        Conduit::Hvc,
        "SYSTEM_RESET",
        fid::SYSTEM_RESET,
        ResetFrom::Secondary,
    );
}

/// Which vCPU asks for the reset.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResetFrom {
    Boot,
    Secondary,
}

/// What the first boot leaves for the second: "VEILRST1", then the function ID it called.
const RESET_NOTE_MAGIC: u64 = 0x5645_494c_5253_5431;

/// A word of this image's `.data` that the first boot overwrites: after the reset it must hold
/// its initial value again, because the VM's image is loaded anew.
static IMAGE_CANARY: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(0xC0FF_EE00_0000_0001);
const CANARY_INITIAL: u64 = 0xC0FF_EE00_0000_0001;

fn reset(tally: &mut Tally, conduit: Conduit, name: &str, fid: u32, from: ResetFrom) {
    let Some(note) = veil_guest_rt::dtb::reset_note() else {
        tally.fail(format_args!("the DTB describes no RAM for the reset note"));
        return;
    };
    // SAFETY: the last page of RAM holds nothing of this image, its stacks or its DTB (the
    // loader puts those at the bottom); with the MMU off the accesses go to memory.
    let found = unsafe { core::ptr::read_volatile(note) };
    if found == [RESET_NOTE_MAGIC, u64::from(fid)] {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(note, [0, 0]) };
        println!("cpu: booted again after {name}");
        tally.pass(format_args!(
            "{name} restarted the VM at its entry point; RAM outside the image kept its contents (note at {:#x})",
            note as usize
        ));
        let canary = IMAGE_CANARY.load(core::sync::atomic::Ordering::Relaxed);
        tally.check(
            canary == CANARY_INITIAL,
            format_args!("a .data word the first boot changed reads {canary:#x} after the reset (the image was loaded again)"),
            format_args!("{CANARY_INITIAL:#x}"),
        );
        if from == ResetFrom::Secondary {
            let state = veil_guest_rt::psci::affinity_info(1);
            tally.check(
                matches!(state, Ok(veil_guest_rt::psci::AffinityState::Off)),
                format_args!("vCPU 1 after the reset: AFFINITY_INFO = {state:?}"),
                format_args!("Off"),
            );
        }
        return;
    }
    if fid == fid::SYSTEM_RESET2_64 && tally.veil {
        for reset_type in [1u64, 0x8000_0000] {
            // SAFETY: a reset type Veil does not define: refused, nothing happens.
            let regs = unsafe { call(conduit, [u64::from(fid), reset_type, 0, 0]) };
            tally.check(
                regs[0] == INVALID_PARAMETERS as u64,
                format_args!(
                    "{name} with reset type {reset_type:#x} returned {:#x}",
                    regs[0]
                ),
                format_args!("INVALID_PARAMETERS (-2)"),
            );
        }
    }
    IMAGE_CANARY.store(!CANARY_INITIAL, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(note, [RESET_NOTE_MAGIC, u64::from(fid)]) };
    // SAFETY: a barrier only: the note reaches memory before the reset.
    unsafe { core::arch::asm!("dsb sy", options(nostack)) };
    match from {
        ResetFrom::Boot => {
            println!("cpu: calling {name} over {}", conduit.name());
            // SAFETY: a reset ends this boot. x1 = 0: SYSTEM_WARM_RESET, x2 = cookie.
            let regs = unsafe { call(conduit, [u64::from(fid), 0, 0, 0]) };
            tally.fail(format_args!("{name} returned {:#x}", regs[0]));
        }
        ResetFrom::Secondary => {
            println!("cpu: vCPU 1 calls {name} over {}", conduit.name());
            // SAFETY: stack 1 is free (no other vCPU was started); the function only resets.
            if let Err(e) = unsafe { veil_guest_rt::cpu::start(1, 1, reset_from_vcpu1, 0) } {
                tally.fail(format_args!("CPU_ON of vCPU 1 failed: {e:?}"));
                return;
            }
            // The reset takes this vCPU too, wherever it is; until then it waits.
            wait_forever()
        }
    }
}

/// vCPU 1 of `reset-smp`: asks for the reset.
fn reset_from_vcpu1(_arg: usize) -> ! {
    let error = veil_guest_rt::psci::system_reset();
    println!("cpu: FAIL SYSTEM_RESET from vCPU 1 returned {error:?}");
    wait_forever()
}

/// Waits in WFI for good (interrupts stay masked: nothing but a reset ends it).
fn wait_forever() -> ! {
    loop {
        // SAFETY: WFI only waits.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
