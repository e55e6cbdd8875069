//! `memio.test=ram`: every 4 KiB page of guest RAM holds what was written to it.
//!
//! Every page gets a pattern made from its own address and the word's place in it, so two
//! guest pages that the hypervisor backed with one host page (or a page mapped at the wrong
//! address) read back another page's pattern. All pages are written before any is read, so
//! such aliasing cannot hide; then the same again with the pattern inverted, so every bit is
//! seen at both values. Skipped: this image (code, data, stacks, .bss), the DTB and the initrd,
//! which the guest is using.
//!
//! The guest's MMU is off, so RAM is Device memory here: only aligned 64-bit accesses.

use veil_guest_rt::println;
use veil_guest_rt::tally::Tally;

use crate::board::{self, Host};

const PAGE: u64 = 4096;
const WORDS_PER_PAGE: u64 = PAGE / 8;
/// Mismatches printed before the rest are only counted.
const MAX_REPORTED: u32 = 8;

/// The value word `index` of the page at `page` holds in pass `pass`.
fn pattern(page: u64, index: u64, pass: u32) -> u64 {
    // An odd multiplier makes every (page, index) pair give a different value; the page
    // address keeps the high bits distinct between pages.
    let value = page ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (index << 48);
    if pass == 0 { value } else { !value }
}

/// Page-aligned ranges the test must not write, sorted.
struct InUse {
    ranges: [(u64, u64); 3],
}

impl InUse {
    fn new(host: &Host) -> Self {
        let round = |(start, end): (u64, u64)| (start & !(PAGE - 1), end.div_ceil(PAGE) * PAGE);
        let dtb = (host.dtb.0, host.dtb.0 + host.dtb.1);
        let initrd = host.initrd.unwrap_or((0, 0));
        let mut ranges = [round(board::image()), round(dtb), round(initrd)];
        ranges.sort_unstable();
        InUse { ranges }
    }

    fn contains(&self, page: u64) -> bool {
        self.ranges
            .iter()
            .any(|&(start, end)| page >= start && page < end)
    }
}

pub fn run(tally: &mut Tally, host: &Host) {
    let (base, size) = host.ram;
    let in_use = InUse::new(host);
    for (start, end) in in_use.ranges.iter().filter(|(s, e)| s != e) {
        println!("memio: ram: skipping {:#x}..{:#x} (in use)", start, end);
    }
    let pages = || {
        (base..base + size)
            .step_by(PAGE as usize)
            .filter(|&p| !in_use.contains(p))
    };
    let total = size / PAGE;
    let mut checked = 0u64;
    let mut bad_words = 0u64;
    let mut reported = 0u32;
    for pass in 0..2 {
        for page in pages() {
            for index in 0..WORDS_PER_PAGE {
                let word = (page + index * 8) as *mut u64;
                // SAFETY: `page` is guest RAM (from /memory) that no Rust object and none of
                // the image, stacks, DTB or initrd occupies; an aligned 64-bit store.
                unsafe { word.write_volatile(pattern(page, index, pass)) };
            }
        }
        checked = 0;
        for page in pages() {
            checked += 1;
            for index in 0..WORDS_PER_PAGE {
                let word = (page + index * 8) as *const u64;
                // SAFETY: as above, an aligned 64-bit load of memory this test wrote.
                let got = unsafe { word.read_volatile() };
                let want = pattern(page, index, pass);
                if got != want {
                    bad_words += 1;
                    if reported < MAX_REPORTED {
                        reported += 1;
                        println!(
                            "memio: FAIL ram pass {}: {:#x} holds {:#x}, expected {:#x}",
                            pass, word as u64, got, want
                        );
                    }
                }
            }
        }
    }
    tally.check(
        bad_words == 0 && checked > 0,
        format_args!(
            "ram: {} of {} pages at {:#x}..{:#x} written and read back twice, {} bad words",
            checked,
            total,
            base,
            base + size,
            bad_words
        ),
        format_args!("no bad words"),
    );
    println!("memio: ram pages checked {}", checked);
}
