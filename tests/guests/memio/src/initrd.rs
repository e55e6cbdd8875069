//! `memio.test=initrd`: the initrd the host passed is where `/chosen` says, whole and intact,
//! and the command line arrived as given.
//!
//! The scenario passes `tests/fixtures/memio-initrd.bin` (5000 bytes: not a whole number of
//! pages, so a loader that rounds the end shows). `/chosen` must name it with
//! `linux,initrd-start` / `linux,initrd-end`; the range must start on a page boundary, lie in
//! RAM clear of this image and the DTB, be exactly the file's length and hold exactly its bytes
//! (FNV-1a, compared with the value computed from the committed file). The guest prints the
//! checksum and its bootargs for the scenario to match.

use veil_guest_rt::tally::Tally;
use veil_guest_rt::{dtb, println};

use crate::board::{self, Host};

/// Length of tests/fixtures/memio-initrd.bin.
const FIXTURE_LEN: u64 = 5000;
/// FNV-1a (32-bit) of tests/fixtures/memio-initrd.bin.
const FIXTURE_FNV1A: u32 = 0x07e5_b32a;
const PAGE: u64 = 4096;

/// FNV-1a, 32-bit, over `len` bytes at guest physical `start`.
fn fnv1a(start: u64, len: u64) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for address in start..start + len {
        // SAFETY: the caller checked that [start, start + len) is guest RAM, which the initrd
        // occupies and no Rust object does; byte loads need no alignment.
        let byte = unsafe { (address as *const u8).read_volatile() };
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// `required`: without an initrd in `/chosen` the check fails (else it is skipped).
pub fn run(tally: &mut Tally, host: &Host, required: bool) {
    match dtb::bootargs() {
        Some(args) => println!("memio: bootargs \"{}\"", args),
        None => tally.fail(format_args!("no /chosen/bootargs")),
    }
    let Some((start, end)) = host.initrd else {
        if required {
            tally.fail(format_args!("no linux,initrd-start/end in /chosen"));
        } else {
            tally.skip(format_args!("initrd"), "no initrd in /chosen");
        }
        return;
    };
    println!("memio: initrd at {:#x}..{:#x}", start, end);
    let (ram_base, ram_size) = host.ram;
    let in_ram = start >= ram_base && end >= start && end <= ram_base + ram_size;
    tally.check(
        in_ram,
        format_args!(
            "initrd {:#x}..{:#x} in RAM {:#x}..{:#x}",
            start,
            end,
            ram_base,
            ram_base + ram_size
        ),
        format_args!("inside RAM"),
    );
    if !in_ram {
        return;
    }
    tally.check(
        start.is_multiple_of(PAGE),
        format_args!("initrd start {:#x} page-aligned", start),
        format_args!("a multiple of 4 KiB"),
    );
    let image = board::image();
    let dtb = (host.dtb.0, host.dtb.0 + host.dtb.1);
    tally.check(
        !overlaps((start, end), image) && !overlaps((start, end), dtb),
        format_args!(
            "initrd clear of the image {:#x}..{:#x} and the DTB {:#x}..{:#x}",
            image.0, image.1, dtb.0, dtb.1
        ),
        format_args!("no overlap"),
    );
    tally.equal(format_args!("initrd length"), end - start, FIXTURE_LEN);
    let hash = fnv1a(start, end - start);
    println!(
        "memio: initrd fnv1a32 {:#010x} over {} bytes",
        hash,
        end - start
    );
    tally.check(
        hash == FIXTURE_FNV1A,
        format_args!("initrd FNV-1a {:#010x}", hash),
        format_args!("{:#010x} (tests/fixtures/memio-initrd.bin)", FIXTURE_FNV1A),
    );
}
