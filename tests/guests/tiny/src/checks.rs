//! The basic checks of the virtual board: what the DTB describes, what HVC answers, and what
//! the ID registers reveal. Each prints one `tiny: ok ..` or `tiny: FAIL ..` line.

use core::fmt;

use veil_guest_rt::exception::{ExceptionInfo, without_exception};
use veil_guest_rt::fdt::Fdt;
use veil_guest_rt::fdt::node::FdtNode;
use veil_guest_rt::sysreg::{Readable, registers};
use veil_guest_rt::tally::{Summary, Tally};
use veil_guest_rt::{dtb, println, psci, smccc};

/// Where the guest's RAM starts (QEMU `virt` layout).
const RAM_BASE: usize = 0x4000_0000;
/// Where the guest's PL011 sits.
const PL011_BASE: usize = 0x0900_0000;
/// PSCI 1.1, what both Veil and QEMU implement.
const PSCI_1_1: u32 = 0x0001_0001;
/// SMCCC 1.1, the oldest version with SMCCC_VERSION and the clobber rules the runtime assumes.
const SMCCC_1_1: i32 = 0x0001_0001;
/// A function ID nobody implements: fast call, SMC32, owner 5 (Standard Hypervisor Service
/// Calls), function 0x1234.
const UNKNOWN_FID: u32 = 0x8500_1234;

/// Makes an HVC with function ID `fid` and no arguments; returns x0.
fn hvc(fid: u32) -> Result<u64, ExceptionInfo> {
    // SAFETY: every ID this module passes only queries: PSCI_VERSION, SMCCC_VERSION and an ID
    // that no one implements.
    without_exception(|| unsafe { smccc::hvc64(fid, 0, 0, 0) }[0])
}

/// The basic checks, then the summary and power-off.
pub fn run(dtb_address: usize) -> ! {
    let mut tally = Tally::new(Summary::Failures);
    match dtb::get() {
        Ok(fdt) => {
            tally.pass(format_args!(
                "DTB at {:#x}: valid header, {} bytes",
                dtb_address,
                fdt.total_size()
            ));
            check_dtb(&mut tally, &fdt);
        }
        Err(error) => tally.fail(format_args!("DTB at {:#x}: {:?}", dtb_address, error)),
    }
    check_hvc(&mut tally);
    check_id_registers(&mut tally);
    tally.finish()
}

/// Whether `node`'s compatible list holds `want`.
fn is_compatible(node: FdtNode<'_, '_>, want: &str) -> bool {
    node.compatible()
        .is_some_and(|c| c.all().any(|s| s == want))
}

/// The start address of `node`'s first `reg` entry.
fn first_reg(node: FdtNode<'_, '_>) -> Option<(usize, Option<usize>)> {
    let region = node.reg()?.next()?;
    Some((region.starting_address as usize, region.size))
}

/// A node's compatible list, printed as `"a" "b"`.
struct CompatibleList<'b, 'a>(FdtNode<'b, 'a>);

impl fmt::Display for CompatibleList<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(compatible) = self.0.compatible() else {
            return f.write_str("(none)");
        };
        for (i, s) in compatible.all().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "\"{}\"", s)?;
        }
        Ok(())
    }
}

fn check_dtb(tally: &mut Tally, fdt: &Fdt<'_>) {
    match fdt.find_node("/memory").and_then(first_reg) {
        Some((base, Some(size))) if base == RAM_BASE && size != 0 => tally.pass(format_args!(
            "/memory reg = {:#x} + {:#x} ({} MiB)",
            base,
            size,
            size >> 20
        )),
        Some((base, size)) => tally.fail(format_args!(
            "/memory reg = {:#x} + {:#x}, expected {:#x} + a non-zero size",
            base,
            size.unwrap_or(0),
            RAM_BASE
        )),
        None => tally.fail(format_args!("no /memory node with a reg property")),
    }

    let cpus = fdt
        .find_node("/cpus")
        .map(|cpus| {
            cpus.children()
                .filter(|n| n.name.split('@').next() == Some("cpu"))
                .count()
        })
        .unwrap_or(0);
    tally.check(
        cpus >= 1,
        format_args!("/cpus has {} cpu node(s)", cpus),
        format_args!("at least 1"),
    );

    match fdt.find_node("/psci") {
        Some(psci) => {
            // PSCI 0.1 nodes say "arm,psci"; 0.2 and later add "arm,psci-0.2", "arm,psci-1.0".
            let is_psci = psci
                .compatible()
                .is_some_and(|c| c.all().any(|s| s.starts_with("arm,psci")));
            tally.check(
                is_psci,
                format_args!("/psci compatible {}", CompatibleList(psci)),
                format_args!("a \"arm,psci*\" entry"),
            );
            let method = psci
                .property("method")
                .and_then(|p| p.as_str())
                .unwrap_or("(none)");
            tally.check(
                method == "hvc",
                format_args!("/psci method \"{}\"", method),
                format_args!("\"hvc\""),
            );
        }
        None => tally.fail(format_args!("no /psci node")),
    }

    match fdt.find_compatible(&["arm,gic-v3", "arm,cortex-a15-gic"]) {
        Some(gic) => tally.pass(format_args!(
            "interrupt controller {} is {}",
            gic.name,
            CompatibleList(gic)
        )),
        None => tally.fail(format_args!(
            "no node compatible with \"arm,gic-v3\" or \"arm,cortex-a15-gic\""
        )),
    }

    let uart = fdt.all_nodes().find(|n| {
        is_compatible(*n, "arm,pl011") && first_reg(*n).map(|(base, _)| base) == Some(PL011_BASE)
    });
    match uart {
        Some(uart) => tally.pass(format_args!("PL011 {} at {:#x}", uart.name, PL011_BASE)),
        None => tally.fail(format_args!("no \"arm,pl011\" node at {:#x}", PL011_BASE)),
    }

    let bootargs = fdt
        .find_node("/chosen")
        .and_then(|chosen| chosen.property("bootargs"))
        .and_then(|p| p.as_str());
    match bootargs {
        Some(args) => println!("tiny: bootargs \"{}\"", args),
        None => println!("tiny: no bootargs"),
    }
}

fn check_hvc(tally: &mut Tally) {
    match hvc(psci::PSCI_VERSION) {
        Ok(x0) => tally.check(
            x0 as u32 == PSCI_1_1,
            format_args!("PSCI_VERSION = {:#x}", x0),
            format_args!("{:#x} (PSCI 1.1)", PSCI_1_1),
        ),
        Err(e) => tally.fail(format_args!(
            "PSCI_VERSION over HVC raised an exception: {}",
            e
        )),
    }
    match hvc(smccc::SMCCC_VERSION) {
        Ok(x0) => tally.check(
            x0 as u32 as i32 >= SMCCC_1_1,
            format_args!("SMCCC_VERSION = {:#x}", x0),
            format_args!("at least {:#x}", SMCCC_1_1),
        ),
        Err(e) => tally.fail(format_args!(
            "SMCCC_VERSION over HVC raised an exception: {}",
            e
        )),
    }
    // SMC32 calls return in w0; the upper half of x0 is not part of the answer.
    match hvc(UNKNOWN_FID) {
        Ok(x0) => tally.check(
            x0 as u32 as i32 == smccc::NOT_SUPPORTED,
            format_args!("unknown HVC {:#x} returned {:#x}", UNKNOWN_FID, x0),
            format_args!("NOT_SUPPORTED (-1) in w0"),
        ),
        Err(e) => tally.fail(format_args!(
            "unknown HVC {:#x} raised an exception instead of returning -1: {}",
            UNKNOWN_FID, e
        )),
    }
}

fn check_id_registers(tally: &mut Tally) {
    match without_exception(|| registers::ID_AA64PFR0_EL1.get()) {
        Ok(pfr0) => {
            // EL2 (bits 11:8) and EL3 (bits 15:12): 0 means "not implemented", which is what a
            // guest must see whatever the host has.
            let el2 = (pfr0 >> 8) & 0xf;
            let el3 = (pfr0 >> 12) & 0xf;
            tally.check(
                el2 == 0 && el3 == 0,
                format_args!(
                    "ID_AA64PFR0_EL1 = {:#x}: EL2 field {}, EL3 field {}",
                    pfr0, el2, el3
                ),
                format_args!("0 and 0 (no EL2 or EL3 visible to a guest)"),
            );
        }
        Err(e) => tally.fail(format_args!(
            "reading ID_AA64PFR0_EL1 raised an exception: {}",
            e
        )),
    }
    match without_exception(|| registers::MIDR_EL1.get()) {
        Ok(midr) => println!("tiny: MIDR_EL1 = {:#x}", midr),
        Err(e) => tally.fail(format_args!("reading MIDR_EL1 raised an exception: {}", e)),
    }
    match without_exception(|| registers::MPIDR_EL1.get()) {
        Ok(mpidr) => tally.check(
            mpidr & (1 << 31) != 0,
            format_args!("MPIDR_EL1 = {:#x}", mpidr),
            format_args!("bit 31 (RES1) set"),
        ),
        Err(e) => tally.fail(format_args!("reading MPIDR_EL1 raised an exception: {}", e)),
    }
}
