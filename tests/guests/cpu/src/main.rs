//! `veil-guest-cpu`: the guest-side tests of CPU virtualization. Each test checks one promise
//! of Veil's CPU model — the sanitized ID registers (`src/vm/id_regs.rs`), the trapped-register
//! table (`src/traps/sysreg.rs`), the hypercalls (`docs/HYPERCALLS.md`), PSCI power states,
//! WFI and the timers, and the guest's FP/SIMD state across exits — and prints one line per
//! check for the host to match.
//!
//! `/chosen/bootargs` picks the test with `cpu.test=<name>`:
//!
//! | name | what | vCPUs |
//! | --- | --- | --- |
//! | `idregs` | the 56 ID registers and each field Veil sanitizes; MIDR, MPIDR; a trapped MRS into each of x0-x30 and XZR | 1 |
//! | `idregs32` | the AArch32 ID registers Veil promises to sanitize (ID_DFR0_EL1) | 1 |
//! | `undef` | unemulated registers and pointer authentication raise UNDEFINED in the guest (also from EL1t); debug, PMU, LORegion and ACTLR registers read as zero and ignore writes; set/way operations; XZR/x30 operands | 1 |
//! | `sweep` | one MRS of every op0 = 2/3 encoding (32768), an MSR writing back what was read for the safe ones, 0 to the write-only ones; the guest must survive | 1 |
//! | `smccc` | every SMCCC/PSCI/Veil function over HVC and SMC, unknown IDs, PSCI_FEATURES, register preservation; powers off with an SMC | 1 |
//! | `reset`, `reset2` | SYSTEM_RESET over SMC, SYSTEM_RESET2 over HVC (undefined reset types refused): the VM boots again, RAM outside its image kept | 1 |
//! | `reset-smp` | SYSTEM_RESET from vCPU 1 while vCPU 0 waits: vCPU 0 alone boots again | 2 |
//! | `smp` | CPU_ON/CPU_OFF/AFFINITY_INFO of vCPUs 1..3, error codes, restart | 4 |
//! | `smp-restart` | CPU_ON of vCPU 1 the moment AFFINITY_INFO shows it OFF, 400 times | 2+ |
//! | `wfi` | WFI with interrupts masked, woken by the virtual timer | 1 |
//! | `wfi-ptimer` | the same with the emulated physical timer: 1 ms ahead, and a deadline inside the trapped CVAL write | 1 |
//! | `fp` | q0-q31, FPCR, FPSR across 1000 exits of each kind, on every vCPU at once | 1-2 |
//!
//! Output contract (every line starts with `cpu: `): `cpu: hello from EL1`, then
//! `cpu: hypervisor Veil|none`, then `cpu: ok <what>` / `cpu: FAIL <what>` per check (and
//! plain information lines), then `cpu: all checks passed (N checks)` or `cpu: N checks FAILED (M passed)`, then PSCI
//! SYSTEM_OFF. Checks of Veil-specific promises (RAZ/WI registers, its UID, SMC as a conduit)
//! are skipped with `cpu: skip <what>` when the guest runs on bare QEMU, so the same binary
//! tells guest bugs from hypervisor bugs:
//! `qemu-system-aarch64 -M virt,gic-version=3 -cpu max -kernel cpu.bin -append cpu.test=idregs`.

#![no_std]
#![no_main]
#![warn(clippy::undocumented_unsafe_blocks)]

mod fp;
mod idregs;
mod regs;
mod smccc;
mod smp;
mod sweep;
mod tally;
mod timer;
mod undef;
mod wfi;

use veil_guest_rt::{bootargs, dtb, power_off, println};

use crate::tally::Tally;

veil_guest_rt::guest!(name: "cpu", main: main);

/// A test: it records its checks in the tally; `main` prints the summary.
type Test = fn(&mut Tally);

/// Every test, by its `cpu.test=` name.
const TESTS: [(&str, Test); 13] = [
    ("idregs", idregs::run),
    ("idregs32", idregs::run_aarch32),
    ("undef", undef::run),
    ("sweep", sweep::run),
    ("smccc", smccc::run),
    ("reset", smccc::run_reset),
    ("reset2", smccc::run_reset2),
    ("reset-smp", smccc::run_reset_smp),
    ("smp", smp::run),
    ("smp-restart", smp::run_restart),
    ("wfi", wfi::run),
    ("wfi-ptimer", wfi::run_ptimer),
    ("fp", fp::run),
];

fn main(_dtb: usize) -> ! {
    println!("cpu: hello from EL1");
    let veil = smccc::under_veil();
    println!("cpu: hypervisor {}", if veil { "Veil" } else { "none" });
    let args = dtb::bootargs().unwrap_or("");
    let Some(name) = bootargs::value(args, "cpu.test") else {
        println!("cpu: FAIL no cpu.test=<name> in bootargs \"{}\"", args);
        power_off()
    };
    let Some((_, test)) = TESTS.iter().find(|(n, _)| *n == name) else {
        println!("cpu: FAIL unknown test cpu.test={}", name);
        power_off()
    };
    println!("cpu: test {}", name);
    let mut tally = Tally::new(veil);
    test(&mut tally);
    tally.finish()
}
