//! Bulk copies and fills: loading guest images into their RAM, clearing tables.
//!
//! Veil is built for `aarch64-unknown-none-softfloat`, which has `+strict-align`: the compiler
//! may not assume an unaligned access works, so the `memcpy` it links moves a misaligned source
//! a byte at a time (about 2.5 instructions per byte). That is fine for moving structs and
//! ruinous for a 30 MB Linux Image. Here the destination is brought to a 16-byte boundary with
//! a few single bytes, the body goes in 128-byte blocks of eight `ldp`/`stp` pairs of x
//! registers (0.14 instructions per byte; no q registers, Veil is soft-float), then a 64-byte
//! block and 16-byte steps, and single bytes finish.
//!
//! A copy's loads may be unaligned: both ranges must be Normal memory, which every RAM range
//! is once the MMU is on, and SCTLR_EL2.A (alignment checking) stays clear, as Veil leaves it.
//! Stores are always aligned, so zeroing also works with the MMU off (Device memory), as the
//! EL2 tables and discovery's name table need.
//!
//! The head and tail arithmetic is the same on every target; only the 16-byte-multiple body is
//! assembly, with a portable loop of the same contract on the host, so every alignment and
//! length is tested there.

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
/// `src` must be valid for `len` bytes of reads and `dst` for `len` bytes of writes, the two
/// must not overlap, and both must be Normal memory (see the module preamble).
pub unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    let head = head_len(dst, len);
    // SAFETY: every range below lies inside [dst, dst + len) and [src, src + len).
    unsafe {
        copy_bytes(dst, src, head);
        let body = (len - head) & !15;
        copy_chunks(dst.add(head), src.add(head), body);
        let done = head + body;
        copy_bytes(dst.add(done), src.add(done), len - done);
    }
}

/// Copies `src` into `dst`, which must be as long: [`copy`] for Veil's own memory.
///
/// Only once the MMU is on (Veil's memory is then Normal), which is all of Veil's life after
/// the first steps of boot.
pub fn copy_slice(dst: &mut [u8], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy_slice between slices of different lengths"
    );
    // SAFETY: both slices are live for their length and cannot overlap (`dst` is borrowed
    // mutably); they are Normal memory as the caller is told above.
    unsafe { copy(dst.as_mut_ptr(), src.as_ptr(), src.len()) }
}

/// Zeroes `dst`: [`zero`] for a slice of words (which serves Device memory too).
pub fn zero_words(dst: &mut [u64]) {
    // SAFETY: the slice is live and writable for its length; see above for the memory type.
    unsafe { zero(dst.as_mut_ptr().cast(), dst.len() * 8) }
}

/// Writes `len` zero bytes from `dst`.
///
/// Every store is aligned (single bytes, then 16-byte pairs at 16-byte boundaries), so this also
/// serves Device memory: what everything is before the MMU is on.
///
/// # Safety
/// `dst` must be valid for `len` bytes of writes.
pub unsafe fn zero(dst: *mut u8, len: usize) {
    let head = head_len(dst, len);
    // SAFETY: every range below lies inside [dst, dst + len).
    unsafe {
        zero_bytes(dst, head);
        let body = (len - head) & !15;
        zero_chunks(dst.add(head), body);
        let done = head + body;
        zero_bytes(dst.add(done), len - done);
    }
}

/// Bytes to move one at a time before `dst` is 16-byte aligned (at most `len`).
fn head_len(dst: *const u8, len: usize) -> usize {
    ((dst as usize).wrapping_neg() & 15).min(len)
}

/// At most 15 bytes, so a plain loop; volatile keeps the compiler from calling `memcpy`.
///
/// # Safety
/// As for [`copy`], for `len` bytes.
unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    for i in 0..len {
        // SAFETY: i < len, inside both ranges.
        unsafe { dst.add(i).write_volatile(src.add(i).read()) };
    }
}

/// # Safety
/// As for [`zero`], for `len` bytes.
unsafe fn zero_bytes(dst: *mut u8, len: usize) {
    for i in 0..len {
        // SAFETY: i < len, inside the range.
        unsafe { dst.add(i).write_volatile(0) };
    }
}

/// Copies `len` bytes, a multiple of 16, to `dst`, 16-byte aligned unless `len` is 0.
///
/// # Safety
/// As for [`copy`]; `len % 16 == 0` and `dst` 16-byte aligned.
#[cfg(target_arch = "aarch64")]
unsafe fn copy_chunks(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!(len.is_multiple_of(16) && (len == 0 || (dst as usize).is_multiple_of(16)));
    // SAFETY: reads [src, src + len) and writes [dst, dst + len), as the caller allows;
    // x-register pairs only, so no FP/SIMD state is touched.
    unsafe {
        core::arch::asm!(
            // 128-byte blocks: eight pairs, loaded and stored four at a time, both pointers
            // advanced by the first access of each kind. `len` runs 128 behind in the loop.
            "subs {len}, {len}, #128",
            "b.lo 2f",
            "1:",
            "ldp {a}, {b}, [{src}], #128",
            "ldp {c}, {d}, [{src}, #-112]",
            "ldp {e}, {f}, [{src}, #-96]",
            "ldp {g}, {h}, [{src}, #-80]",
            "stp {a}, {b}, [{dst}], #128",
            "stp {c}, {d}, [{dst}, #-112]",
            "stp {e}, {f}, [{dst}, #-96]",
            "stp {g}, {h}, [{dst}, #-80]",
            "ldp {a}, {b}, [{src}, #-64]",
            "ldp {c}, {d}, [{src}, #-48]",
            "ldp {e}, {f}, [{src}, #-32]",
            "ldp {g}, {h}, [{src}, #-16]",
            "stp {a}, {b}, [{dst}, #-64]",
            "stp {c}, {d}, [{dst}, #-48]",
            "stp {e}, {f}, [{dst}, #-32]",
            "stp {g}, {h}, [{dst}, #-16]",
            "subs {len}, {len}, #128",
            "b.hs 1b",
            // 0 to 112 bytes left: one 64-byte block if there is one, then 16-byte steps.
            "2:",
            "adds {len}, {len}, #128",
            "b.eq 4f",
            "tbz {len}, #6, 3f",
            "ldp {a}, {b}, [{src}], #64",
            "ldp {c}, {d}, [{src}, #-48]",
            "ldp {e}, {f}, [{src}, #-32]",
            "ldp {g}, {h}, [{src}, #-16]",
            "stp {a}, {b}, [{dst}], #64",
            "stp {c}, {d}, [{dst}, #-48]",
            "stp {e}, {f}, [{dst}, #-32]",
            "stp {g}, {h}, [{dst}, #-16]",
            "subs {len}, {len}, #64",
            "b.eq 4f",
            "3:",
            "ldp {a}, {b}, [{src}], #16",
            "subs {len}, {len}, #16",
            "stp {a}, {b}, [{dst}], #16",
            "b.ne 3b",
            "4:",
            dst = inout(reg) dst => _,
            src = inout(reg) src => _,
            len = inout(reg) len => _,
            a = out(reg) _, b = out(reg) _, c = out(reg) _, d = out(reg) _,
            e = out(reg) _, f = out(reg) _, g = out(reg) _, h = out(reg) _,
            options(nostack),
        );
    }
}

/// Zeroes `len` bytes, a multiple of 16, from `dst`, 16-byte aligned unless `len` is 0.
///
/// # Safety
/// As for [`zero`]; `len % 16 == 0` and `dst` 16-byte aligned.
#[cfg(target_arch = "aarch64")]
unsafe fn zero_chunks(dst: *mut u8, len: usize) {
    debug_assert!(len.is_multiple_of(16) && (len == 0 || (dst as usize).is_multiple_of(16)));
    // SAFETY: writes [dst, dst + len), as the caller allows.
    unsafe {
        core::arch::asm!(
            "subs {len}, {len}, #64",
            "b.lo 2f",
            "1:",
            "stp xzr, xzr, [{dst}], #64",
            "stp xzr, xzr, [{dst}, #-48]",
            "stp xzr, xzr, [{dst}, #-32]",
            "stp xzr, xzr, [{dst}, #-16]",
            "subs {len}, {len}, #64",
            "b.hs 1b",
            "2:",
            "adds {len}, {len}, #64",
            "b.eq 4f",
            "3:",
            "subs {len}, {len}, #16",
            "stp xzr, xzr, [{dst}], #16",
            "b.ne 3b",
            "4:",
            dst = inout(reg) dst => _,
            len = inout(reg) len => _,
            options(nostack),
        );
    }
}

/// The host's stand-in for the assembly body: the same contract, in 8-byte words.
#[cfg(not(target_arch = "aarch64"))]
unsafe fn copy_chunks(dst: *mut u8, src: *const u8, len: usize) {
    assert!(len.is_multiple_of(16) && (len == 0 || (dst as usize).is_multiple_of(16)));
    for at in (0..len).step_by(8) {
        // SAFETY: at + 8 <= len; dst is aligned, src may not be.
        unsafe {
            let word = src.add(at).cast::<u64>().read_unaligned();
            dst.add(at).cast::<u64>().write(word);
        }
    }
}

#[cfg(not(target_arch = "aarch64"))]
unsafe fn zero_chunks(dst: *mut u8, len: usize) {
    assert!(len.is_multiple_of(16) && (len == 0 || (dst as usize).is_multiple_of(16)));
    for at in (0..len).step_by(8) {
        // SAFETY: at + 8 <= len, dst is aligned.
        unsafe { dst.add(at).cast::<u64>().write(0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// 16-byte aligned scratch memory, so offsets 0..16 give every alignment.
    #[repr(C, align(16))]
    struct Buf([u8; 4096 + 64]);

    const GUARD: u8 = 0xa5;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251 + 1) as u8).collect()
    }

    fn lengths() -> impl Iterator<Item = usize> {
        (0..=200).chain([255, 256, 257, 1000, 1024, 4095, 4096])
    }

    /// `dst` holds `want` at offset `d` and the guard byte everywhere else.
    fn assert_wrote(dst: &Buf, d: usize, want: &[u8], what: core::fmt::Arguments) {
        let len = want.len();
        assert_eq!(&dst.0[d..d + len], want, "{what}: len {len}, dst +{d}");
        assert!(
            dst.0[..d].iter().all(|&b| b == GUARD),
            "{what}: wrote before: len {len}, dst +{d}"
        );
        assert!(
            dst.0[d + len..].iter().all(|&b| b == GUARD),
            "{what}: wrote after: len {len}, dst +{d}"
        );
    }

    #[test]
    fn copy_every_alignment_and_length() {
        let data = pattern(4096 + 32);
        let mut src = Buf([0; 4096 + 64]);
        let mut dst = Buf([0; 4096 + 64]);
        for len in lengths() {
            for s in 0..16 {
                src.0[s..s + len].copy_from_slice(&data[..len]);
                for d in 0..16 {
                    dst.0.fill(GUARD);
                    // SAFETY: both ranges lie inside their buffers (len + 16 <= 4096 + 64).
                    unsafe { copy(dst.0.as_mut_ptr().add(d), src.0.as_ptr().add(s), len) };
                    assert_wrote(&dst, d, &data[..len], format_args!("src +{s}"));
                }
            }
        }
    }

    #[test]
    fn zero_every_alignment_and_length() {
        let mut dst = Buf([0; 4096 + 64]);
        for len in lengths() {
            for d in 0..16 {
                dst.0.fill(GUARD);
                // SAFETY: the range lies inside the buffer.
                unsafe { zero(dst.0.as_mut_ptr().add(d), len) };
                assert_wrote(&dst, d, &alloc::vec![0; len], format_args!("zero"));
            }
        }
    }

    #[test]
    fn head_is_what_reaches_the_boundary() {
        assert_eq!(head_len(0x1000 as *const u8, 100), 0);
        assert_eq!(head_len(0x1001 as *const u8, 100), 15);
        assert_eq!(head_len(0x100f as *const u8, 100), 1);
        assert_eq!(head_len(0x1001 as *const u8, 3), 3);
    }
}
