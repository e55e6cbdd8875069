//! `veil-guest-memio`: the guest-side tests of memory and I/O virtualization. It checks that
//! its RAM is all there and private, that the emulated devices answer every access form a CPU
//! can make (including the ones that give the hypervisor no syndrome), that every hole of the
//! board raises an external abort in the guest's own vector, that the RTC tells the time, and
//! that the initrd arrives intact.
//!
//! Command line (`/chosen/bootargs`): `memio.test=<name>`, one of
//!
//! - `ram`: a distinct pattern in every 4 KiB page of RAM (from `/memory`, minus this image,
//!   its stacks, the DTB and the initrd), all written, then all read back; twice, the second
//!   time inverted.
//! - `mmio`: the PL011, PL031 and an empty virtio-mmio slot at every width they take, and the
//!   forms with no syndrome (pairs, pre/post-index, register offset, sign extension,
//!   acquire/release), little- and big-endian; widths a device refuses must raise an external
//!   abort.
//! - `mmio-mmu`: the same with the guest's MMU on, then again through virtual aliases of the
//!   devices and of RAM (VA != IPA); see [`mmu`].
//! - `holes`: a load and a store at an address in every hole of the board, and a branch into
//!   one: each must raise a synchronous external abort (EC 0x25 / 0x21, FSC 0x10) with FAR =
//!   the address and WnR right, in the guest's own vector.
//! - `rtc`: the PL031's time is after 2025-01-01 and advances with the virtual counter.
//! - `initrd`: `/chosen` names the initrd, which lies page-aligned in RAM and holds exactly the
//!   bytes of `tests/fixtures/memio-initrd.bin`.
//! - `all`: ram, mmio, holes, rtc, and initrd if `/chosen` has one.
//!
//! Output, every line starting `memio: `: `memio: hello from EL1 (...)` first; then one
//! `memio: ok <what>`, `memio: FAIL <what>` or `memio: skip <what> (<why>)` per check; then
//! `memio: all checks passed` or `memio: N checks FAILED`; then PSCI SYSTEM_OFF.
//!
//! The same image runs on bare QEMU (`-M virt -cpu max -kernel memio.bin`, entered at EL1), to
//! tell a guest bug from a hypervisor bug. Checks of what only Veil promises (a device refusing
//! a width that QEMU's models accept, holes where QEMU has devices) are then skipped.

#![no_std]
#![no_main]
#![warn(clippy::undocumented_unsafe_blocks)]

mod access;
mod board;
mod destinations;
mod holes;
mod initrd;
mod mmio;
mod mmu;
mod ram;
mod rtc;

use veil_guest_rt::tally::{Summary, Tally};
use veil_guest_rt::{bootargs, dtb, power_off, println};

veil_guest_rt::guest!(name: "memio", main: main);

fn main(dtb_address: usize) -> ! {
    let host = board::Host::discover(dtb_address);
    let args = dtb::bootargs().unwrap_or("");
    let test = bootargs::value(args, "memio.test").unwrap_or("all");
    println!(
        "memio: hello from EL1 (test {}, hypervisor {}, GICv{}, RAM {:#x}+{:#x})",
        test,
        if host.under_veil { "Veil" } else { "none" },
        host.gic_version,
        host.ram.0,
        host.ram.1
    );
    let mut tally = Tally::new(Summary::Failures);
    match test {
        "ram" => ram::run(&mut tally, &host),
        "mmio" => mmio::run(&mut tally, &host),
        "mmio-mmu" => {
            mmu::enable();
            tally.pass(format_args!(
                "MMU on: RAM and devices identity-mapped, aliases at +{:#x}",
                mmu::DEVICE_ALIAS
            ));
            mmio::run(&mut tally, &host);
            mmio::through_aliases(&mut tally);
        }
        "holes" => holes::run(&mut tally, &host),
        "rtc" => rtc::run(&mut tally),
        "initrd" => initrd::run(&mut tally, &host, true),
        "all" => {
            ram::run(&mut tally, &host);
            mmio::run(&mut tally, &host);
            holes::run(&mut tally, &host);
            rtc::run(&mut tally);
            initrd::run(&mut tally, &host, false);
        }
        other => {
            println!("memio: FAIL unknown test memio.test={}", other);
            power_off()
        }
    }
    tally.finish()
}
