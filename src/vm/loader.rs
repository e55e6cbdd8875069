//! Guest image formats, and where the kernel, initrd and DTB go in guest RAM.
//!
//! A VM package carries each guest's kernel as an arm64 Linux `Image`, an ELF64 executable or a
//! raw binary (see `docs/VM_PACKAGE.md`). [`detect`] tells which; [`plan`] decides, without
//! touching memory, which bytes go to which guest-physical address, where the initrd and the
//! DTB follow, and where the vCPU starts. The caller then copies the [`Segment`]s, zeroes their
//! tails and writes the DTB that `super::guest_dtb` builds with the initrd's final address.
//!
//! Every input comes from a package that may be hostile or broken, so nothing here indexes,
//! adds or multiplies unchecked: a bad image is a [`LoadError`] naming what is wrong, never a
//! panic in the hypervisor. The lints below hold the module to that.
//!
//! Layout, from the bottom of guest RAM up:
//!
//! ```text
//! ram_base (2 MiB-aligned up) + text_offset  kernel, image_size bytes reserved
//! next 2 MiB boundary                          initrd (if any)
//! next 2 MiB boundary                          DTB (at most 2 MiB, so it never crosses one)
//! ```
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use alloc::vec::Vec;
use core::fmt;

use super::virtual_board::RAW_IMAGE_OFFSET;

const SZ_2M: u64 = 2 << 20;
const PAGE_SIZE: u64 = 4096;

/// Largest DTB the arm64 boot protocol accepts (Documentation/arch/arm64/booting.rst).
pub const MAX_DTB_SIZE: u64 = SZ_2M;

// arm64 Image header (booting.rst, "Call the kernel image"): code0, code1, text_offset,
// image_size, flags, res2..res4, magic, res5 — 64 bytes, little-endian.
const IMAGE_HEADER_SIZE: u64 = 64;
const IMAGE_TEXT_OFFSET_AT: usize = 8;
const IMAGE_SIZE_AT: usize = 16;
const IMAGE_MAGIC_AT: usize = 0x38;
const IMAGE_MAGIC: u32 = 0x644d_5241; // "ARM\x64"
/// What pre-3.17 kernels (image_size == 0) expect; their header field may be in either
/// endianness, so booting.rst says to assume this value instead of reading it.
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;

// ELF64 (System V gABI and the AArch64 ELF supplement).
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ELFDATA2MSB: u8 = 2;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
/// `e_phnum` value meaning "the real count is in section header 0", which Veil does not read.
const PN_XNUM: u16 = 0xffff;
const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const E_TYPE_AT: usize = 16;
const E_MACHINE_AT: usize = 18;
const E_ENTRY_AT: usize = 24;
const E_PHOFF_AT: usize = 32;
const E_PHENTSIZE_AT: usize = 54;
const E_PHNUM_AT: usize = 56;
const P_TYPE_AT: usize = 0;
const P_OFFSET_AT: usize = 8;
const P_VADDR_AT: usize = 16;
const P_PADDR_AT: usize = 24;
const P_FILESZ_AT: usize = 32;
const P_MEMSZ_AT: usize = 40;

/// What a guest kernel image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// An arm64 Linux `Image`, with its header's fields.
    LinuxImage {
        /// Offset of the image from a 2 MiB-aligned base.
        text_offset: u64,
        /// Bytes the kernel needs from its load address, BSS included; 0 in pre-3.17 kernels.
        image_size: u64,
    },
    /// An ELF64 executable (AArch64 by its header; the rest is checked by [`plan`]).
    Elf64,
    /// Anything else: loaded as-is at `RAM_BASE + RAW_IMAGE_OFFSET` and entered at its start.
    Raw,
}

/// Bytes to place at one guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Guest-physical address of the first byte.
    pub ipa: u64,
    /// Bytes to copy there, borrowed from the image.
    pub data: &'a [u8],
    /// Bytes right after `data` to zero (ELF BSS, or the rest of a kernel's `image_size`).
    pub zero_fill: u64,
}

/// Where everything goes in guest RAM, and where the vCPU starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan<'a> {
    /// The image's kind; for a Linux `Image`, the header values as applied (pre-3.17
    /// defaults filled in, `image_size` = bytes reserved).
    pub kind: ImageKind,
    /// Guest-physical address the boot vCPU starts at.
    pub entry: u64,
    /// What to copy, sorted by address and non-overlapping.
    pub segments: Vec<Segment<'a>>,
    /// Where to copy the initrd, if one was given.
    pub initrd_ipa: Option<u64>,
    /// Where to write the DTB; its address goes in the boot vCPU's `x0`.
    pub dtb_ipa: u64,
}

/// Why an image cannot be loaded into the given guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The guest RAM given is empty or wraps past the top of the address space.
    BadRam {
        /// Base given.
        ram_base: u64,
        /// Size given.
        ram_size: u64,
    },
    /// The kernel image has no bytes.
    EmptyImage,
    /// A header or the data it points at extends past the end of the file.
    Truncated {
        /// Which structure.
        what: &'static str,
        /// File size it needs.
        need: u64,
        /// File size there is.
        have: u64,
    },
    /// The ELF file is not one Veil can load.
    BadElf(&'static str),
    /// Something does not fit in guest RAM.
    DoesNotFit {
        /// What: kernel image, ELF segment, raw image, initrd or DTB.
        what: &'static str,
        /// Guest-physical address it would start at.
        ipa: u64,
        /// Its size in bytes.
        size: u64,
        /// Start of guest RAM.
        ram_base: u64,
        /// Size of guest RAM.
        ram_size: u64,
    },
    /// Placing something needs an address beyond 2^64.
    AddressOverflow(&'static str),
    /// The ELF file has no `PT_LOAD` segment with bytes in memory.
    NoSegments,
    /// Two ELF segments claim the same guest memory.
    OverlappingSegments {
        /// Address of the lower segment.
        first: u64,
        /// Address of the segment that starts inside it.
        second: u64,
    },
    /// The ELF entry point lies in no loaded segment.
    EntryOutsideSegments {
        /// `e_entry`.
        entry: u64,
    },
    /// The DTB is empty or larger than [`MAX_DTB_SIZE`].
    BadDtbSize(u64),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRam { ram_base, ram_size } => {
                write!(
                    f,
                    "guest RAM of {ram_size:#x} bytes at {ram_base:#x} is empty or wraps"
                )
            }
            Self::EmptyImage => write!(f, "kernel image is empty"),
            Self::Truncated { what, need, have } => {
                write!(f, "{what} truncated: needs {need} bytes, file has {have}")
            }
            Self::BadElf(why) => write!(f, "unsupported ELF: {why}"),
            Self::DoesNotFit {
                what,
                ipa,
                size,
                ram_base,
                ram_size,
            } => write!(
                f,
                "{what} of {size} bytes ({size:#x}) at IPA {ipa:#x} does not fit in guest RAM \
                 of {ram_size} bytes ({ram_size:#x}) at {ram_base:#x}"
            ),
            Self::AddressOverflow(what) => write!(f, "{what}: address beyond 2^64"),
            Self::NoSegments => write!(f, "ELF has no loadable segment"),
            Self::OverlappingSegments { first, second } => {
                write!(f, "ELF segments at {first:#x} and {second:#x} overlap")
            }
            Self::EntryOutsideSegments { entry } => {
                write!(f, "ELF entry point {entry:#x} is in no loaded segment")
            }
            Self::BadDtbSize(size) => {
                write!(
                    f,
                    "DTB of {size} bytes is empty or larger than {MAX_DTB_SIZE}"
                )
            }
        }
    }
}

/// Says what kind of kernel image `image` is, from its header alone.
///
/// An ELF is recognised by `\x7fELF`, ELFCLASS64 and EM_AARCH64 (read in the file's own byte
/// order); an arm64 `Image` by "ARM\x64" at offset 0x38. Everything else is [`ImageKind::Raw`].
pub fn detect(image: &[u8]) -> ImageKind {
    if is_aarch64_elf64(image) {
        return ImageKind::Elf64;
    }
    if le_u32(image, IMAGE_MAGIC_AT) == Some(IMAGE_MAGIC) {
        // Both fields sit before the magic, so a file long enough for it has them.
        return ImageKind::LinuxImage {
            text_offset: le_u64(image, IMAGE_TEXT_OFFSET_AT).unwrap_or(0),
            image_size: le_u64(image, IMAGE_SIZE_AT).unwrap_or(0),
        };
    }
    ImageKind::Raw
}

/// Lays out `image`, an initrd of `initrd_size` bytes and a DTB of `dtb_size` bytes in the
/// guest RAM `ram_base..ram_base + ram_size`.
///
/// - Linux `Image`: at the first 2 MiB boundary of RAM plus `text_offset`, reserving
///   `image_size` (booting.rst); a pre-3.17 header (`image_size` 0) gets text_offset 0x80000
///   and the file size rounded up to a page. Entered at its first byte.
/// - ELF64 (little-endian AArch64, `ET_EXEC` or `ET_DYN`): each `PT_LOAD` at its `p_paddr`,
///   which must lie in RAM without overlapping another; entered at `e_entry` translated
///   through the segment whose virtual range holds it (or, failing that, whose physical range
///   does, for files that give a physical entry point).
/// - Raw: at `ram_base + RAW_IMAGE_OFFSET`, entered there.
///
/// The initrd follows the kernel at the next 2 MiB boundary, and the DTB the initrd (or the
/// kernel) at the next one after that.
///
/// `initrd_ipa` does not depend on `dtb_size`, which breaks the circle of "the DTB names the
/// initrd's address, the plan needs the DTB's size": plan with `MAX_DTB_SIZE` (or the size of
/// a DTB built with any in-RAM initrd range, since addresses do not change its size), then
/// build the real DTB and write it at `dtb_ipa`.
pub fn plan<'a>(
    image: &'a [u8],
    initrd_size: Option<u64>,
    dtb_size: u64,
    ram_base: u64,
    ram_size: u64,
) -> Result<LoadPlan<'a>, LoadError> {
    let ram = Ram::new(ram_base, ram_size)?;
    if image.is_empty() {
        return Err(LoadError::EmptyImage);
    }
    if dtb_size == 0 || dtb_size > MAX_DTB_SIZE {
        return Err(LoadError::BadDtbSize(dtb_size));
    }

    let kernel = match detect(image) {
        ImageKind::LinuxImage {
            text_offset,
            image_size,
        } => plan_linux(image, text_offset, image_size, &ram)?,
        ImageKind::Elf64 => plan_elf(image, &ram)?,
        // An ELF for another machine or a 32-bit one would otherwise be "loaded" as a raw
        // binary and jumped into: say what it is instead.
        ImageKind::Raw if image.starts_with(ELF_MAGIC) => {
            return Err(LoadError::BadElf("not an ELF64 for AArch64"));
        }
        ImageKind::Raw => plan_raw(image, &ram)?,
    };

    let mut next_free = kernel.end;
    let initrd_ipa = match initrd_size {
        Some(size) => {
            let ipa = align_up(next_free, SZ_2M, "initrd")?;
            next_free = ram.place("initrd", ipa, size)?;
            Some(ipa)
        }
        None => None,
    };
    // A 2 MiB-aligned start and a size of at most 2 MiB keep the DTB 8-byte aligned and
    // inside one 2 MiB block, which older kernels map as a unit.
    let dtb_ipa = align_up(next_free, SZ_2M, "DTB")?;
    ram.place("DTB", dtb_ipa, dtb_size)?;

    Ok(LoadPlan {
        kind: kernel.kind,
        entry: kernel.entry,
        segments: kernel.segments,
        initrd_ipa,
        dtb_ipa,
    })
}

/// Where the kernel went and where free RAM after it starts.
struct KernelPlan<'a> {
    kind: ImageKind,
    entry: u64,
    segments: Vec<Segment<'a>>,
    end: u64,
}

/// Guest RAM with a known-good end.
struct Ram {
    base: u64,
    size: u64,
    end: u64,
}

impl Ram {
    fn new(base: u64, size: u64) -> Result<Self, LoadError> {
        match base.checked_add(size) {
            Some(end) if size != 0 => Ok(Self { base, size, end }),
            _ => Err(LoadError::BadRam {
                ram_base: base,
                ram_size: size,
            }),
        }
    }

    /// Checks that `size` bytes at `ipa` lie in RAM; returns the end address.
    fn place(&self, what: &'static str, ipa: u64, size: u64) -> Result<u64, LoadError> {
        match ipa.checked_add(size) {
            Some(end) if ipa >= self.base && end <= self.end => Ok(end),
            _ => Err(LoadError::DoesNotFit {
                what,
                ipa,
                size,
                ram_base: self.base,
                ram_size: self.size,
            }),
        }
    }
}

fn plan_linux<'a>(
    image: &'a [u8],
    text_offset: u64,
    image_size: u64,
    ram: &Ram,
) -> Result<KernelPlan<'a>, LoadError> {
    let file_size = len64(image);
    if file_size < IMAGE_HEADER_SIZE {
        return Err(LoadError::Truncated {
            what: "arm64 Image header",
            need: IMAGE_HEADER_SIZE,
            have: file_size,
        });
    }
    let (text_offset, reserve) = if image_size == 0 {
        // No BSS size is known for these kernels; page-rounding the file is what other
        // loaders do, and the initrd's 2 MiB alignment adds slack behind it.
        (
            LEGACY_TEXT_OFFSET,
            align_up(file_size, PAGE_SIZE, "kernel image")?,
        )
    } else {
        // A file longer than image_size (data appended to the kernel) must still fit whole.
        (text_offset, image_size.max(file_size))
    };
    let base = align_up(ram.base, SZ_2M, "kernel image")?;
    let load = base
        .checked_add(text_offset)
        .ok_or(LoadError::AddressOverflow("kernel image"))?;
    let end = ram.place("kernel image", load, reserve)?;
    Ok(KernelPlan {
        kind: ImageKind::LinuxImage {
            text_offset,
            image_size: reserve,
        },
        entry: load,
        segments: alloc::vec![Segment {
            ipa: load,
            data: image,
            // reserve >= file_size by construction above.
            zero_fill: reserve.saturating_sub(file_size),
        }],
        end,
    })
}

fn plan_raw<'a>(image: &'a [u8], ram: &Ram) -> Result<KernelPlan<'a>, LoadError> {
    let load = ram
        .base
        .checked_add(RAW_IMAGE_OFFSET)
        .ok_or(LoadError::AddressOverflow("raw image"))?;
    let end = ram.place("raw image", load, len64(image))?;
    Ok(KernelPlan {
        kind: ImageKind::Raw,
        entry: load,
        segments: alloc::vec![Segment {
            ipa: load,
            data: image,
            zero_fill: 0
        }],
        end,
    })
}

/// One `PT_LOAD` as placed, with the virtual address kept for translating `e_entry`.
struct Loaded<'a> {
    segment: Segment<'a>,
    vaddr: u64,
    memsz: u64,
}

fn plan_elf<'a>(image: &'a [u8], ram: &Ram) -> Result<KernelPlan<'a>, LoadError> {
    let file_size = len64(image);
    if file_size < EHDR_SIZE {
        return Err(LoadError::Truncated {
            what: "ELF header",
            need: EHDR_SIZE,
            have: file_size,
        });
    }
    if image.get(EI_DATA) != Some(&ELFDATA2LSB) {
        return Err(LoadError::BadElf("not little-endian"));
    }
    let field = |at, what| le_u16(image, at).ok_or(LoadError::BadElf(what));
    let e_type = field(E_TYPE_AT, "e_type")?;
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(LoadError::BadElf(
            "not an executable (e_type is neither EXEC nor DYN)",
        ));
    }
    let e_phentsize = field(E_PHENTSIZE_AT, "e_phentsize")?;
    let e_phnum = field(E_PHNUM_AT, "e_phnum")?;
    let e_entry = le_u64(image, E_ENTRY_AT).ok_or(LoadError::BadElf("e_entry"))?;
    let e_phoff = le_u64(image, E_PHOFF_AT).ok_or(LoadError::BadElf("e_phoff"))?;
    if e_phnum == PN_XNUM {
        return Err(LoadError::BadElf("more than 65534 program headers"));
    }
    if u64::from(e_phentsize) < PHDR_SIZE {
        return Err(LoadError::BadElf(
            "program header entries smaller than Elf64_Phdr",
        ));
    }
    // u16 * u16 cannot overflow u64.
    let table_size = u64::from(e_phentsize).saturating_mul(u64::from(e_phnum));
    let table_end = e_phoff.checked_add(table_size);
    if table_end.is_none_or(|end| end > file_size) {
        return Err(LoadError::Truncated {
            what: "ELF program header table",
            need: table_end.unwrap_or(u64::MAX),
            have: file_size,
        });
    }

    let mut loaded: Vec<Loaded<'a>> = Vec::new();
    for index in 0..u64::from(e_phnum) {
        // Inside the table checked above, so neither step can overflow.
        let at = e_phoff.saturating_add(index.saturating_mul(u64::from(e_phentsize)));
        let phdr = slice(image, at, PHDR_SIZE).ok_or(LoadError::Truncated {
            what: "ELF program header",
            need: at.saturating_add(PHDR_SIZE),
            have: file_size,
        })?;
        if le_u32(phdr, P_TYPE_AT) != Some(PT_LOAD) {
            continue;
        }
        let word = |at| le_u64(phdr, at).ok_or(LoadError::BadElf("program header"));
        let (offset, vaddr, paddr) = (word(P_OFFSET_AT)?, word(P_VADDR_AT)?, word(P_PADDR_AT)?);
        let (filesz, memsz) = (word(P_FILESZ_AT)?, word(P_MEMSZ_AT)?);
        if filesz > memsz {
            return Err(LoadError::BadElf("segment has p_filesz > p_memsz"));
        }
        if memsz == 0 {
            // Occupies no memory; loaders (and the gABI) skip it.
            continue;
        }
        let data = slice(image, offset, filesz).ok_or(LoadError::Truncated {
            what: "ELF segment data",
            need: offset.saturating_add(filesz),
            have: file_size,
        })?;
        ram.place("ELF segment", paddr, memsz)?;
        loaded.push(Loaded {
            segment: Segment {
                ipa: paddr,
                data,
                zero_fill: memsz.saturating_sub(filesz),
            },
            vaddr,
            memsz,
        });
    }
    if loaded.is_empty() {
        return Err(LoadError::NoSegments);
    }

    loaded.sort_unstable_by_key(|l| l.segment.ipa);
    // Every segment passed ram.place, so ipa + memsz cannot overflow.
    let end_of = |l: &Loaded| l.segment.ipa.saturating_add(l.memsz);
    for pair in loaded.windows(2) {
        if let [lower, upper] = pair
            && end_of(lower) > upper.segment.ipa
        {
            return Err(LoadError::OverlappingSegments {
                first: lower.segment.ipa,
                second: upper.segment.ipa,
            });
        }
    }

    // e_entry is a virtual address; the vCPU starts with its MMU off, so translate it through
    // the segment that holds it. Some linkers write a physical entry instead: accept that too.
    let in_range =
        |addr: u64, start: u64, len: u64| addr.checked_sub(start).is_some_and(|off| off < len);
    let entry = loaded
        .iter()
        .find(|l| in_range(e_entry, l.vaddr, l.memsz))
        .map(|l| {
            l.segment
                .ipa
                .saturating_add(e_entry.saturating_sub(l.vaddr))
        })
        .or_else(|| {
            loaded
                .iter()
                .any(|l| in_range(e_entry, l.segment.ipa, l.memsz))
                .then_some(e_entry)
        })
        .ok_or(LoadError::EntryOutsideSegments { entry: e_entry })?;

    let end = loaded.iter().map(end_of).max().unwrap_or(ram.base);
    Ok(KernelPlan {
        kind: ImageKind::Elf64,
        entry,
        segments: loaded.into_iter().map(|l| l.segment).collect(),
        end,
    })
}

fn is_aarch64_elf64(image: &[u8]) -> bool {
    if !image.starts_with(ELF_MAGIC) || image.get(EI_CLASS) != Some(&ELFCLASS64) {
        return false;
    }
    let machine = match image.get(EI_DATA) {
        Some(&ELFDATA2LSB) => le_u16(image, E_MACHINE_AT),
        Some(&ELFDATA2MSB) => bytes::<2>(image, E_MACHINE_AT).map(u16::from_be_bytes),
        _ => None,
    };
    machine == Some(EM_AARCH64)
}

/// Rounds `value` up to a multiple of `align` (a power of two).
fn align_up(value: u64, align: u64, what: &'static str) -> Result<u64, LoadError> {
    let mask = align.saturating_sub(1);
    value
        .checked_add(mask)
        .map(|v| v & !mask)
        .ok_or(LoadError::AddressOverflow(what))
}

/// `len` bytes of `data` from `offset`, or `None` if any of them is missing.
fn slice(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

fn len64(data: &[u8]) -> u64 {
    // usize is at most 64 bits on every target Veil or its tests build for.
    data.len() as u64
}

fn bytes<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn le_u16(data: &[u8], at: usize) -> Option<u16> {
    bytes(data, at).map(u16::from_le_bytes)
}

fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    bytes(data, at).map(u32::from_le_bytes)
}

fn le_u64(data: &[u8], at: usize) -> Option<u64> {
    bytes(data, at).map(u64::from_le_bytes)
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec;

    const RAM: u64 = 0x4000_0000;
    const MIB: u64 = 1 << 20;
    const DTB: u64 = 0x1_0000;

    /// An arm64 Image shaped like a real one: EFI "MZ" code0, a branch in code1, the header
    /// fields of booting.rst, and `body` bytes of payload after the 64-byte header.
    fn linux_image(text_offset: u64, image_size: u64, body: usize) -> Vec<u8> {
        let mut v = vec![0u8; 64 + body];
        v[0..4].copy_from_slice(&0xfa40_5a4du32.to_le_bytes()); // "MZ", ccmp x18, #0, #0xd, pl
        v[4..8].copy_from_slice(&0x1400_0000u32.to_le_bytes()); // b stext (offset patched below)
        v[8..16].copy_from_slice(&text_offset.to_le_bytes());
        v[16..24].copy_from_slice(&image_size.to_le_bytes());
        v[24..32].copy_from_slice(&0xau64.to_le_bytes()); // LE, 4K pages, place anywhere
        v[0x38..0x3c].copy_from_slice(b"ARM\x64");
        v[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes()); // PE header offset
        for (i, b) in v[64..].iter_mut().enumerate() {
            *b = i as u8;
        }
        v
    }

    /// One program header: (p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz).
    type Phdr = (u32, u64, u64, u64, u64, u64);

    /// A little-endian AArch64 ET_EXEC with `phdrs` right after the ELF header, then `payload`.
    fn elf(entry: u64, phdrs: &[Phdr], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 64];
        v[0..4].copy_from_slice(b"\x7fELF");
        v[4] = 2; // ELFCLASS64
        v[5] = 1; // ELFDATA2LSB
        v[6] = 1; // EV_CURRENT
        v[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        v[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        v[20..24].copy_from_slice(&1u32.to_le_bytes());
        v[24..32].copy_from_slice(&entry.to_le_bytes());
        v[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        v[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        v[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        v[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for &(ty, off, va, pa, filesz, memsz) in phdrs {
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
            for x in [off, va, pa, filesz, memsz, 0x1_0000] {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    /// Offset of the payload in an [`elf`] with `n` program headers.
    fn payload_at(n: u64) -> u64 {
        64 + 56 * n
    }

    /// A two-segment guest like the Rust test guests: text at 0x4008_0000, data + BSS after.
    fn two_segment_elf() -> Vec<u8> {
        let p = payload_at(3);
        elf(
            0x4008_0000,
            &[
                (1, p, 0x4008_0000, 0x4008_0000, 0x100, 0x100),
                (0x6474_e551, 0, 0, 0, 0, 0), // PT_GNU_STACK: skipped
                (1, p + 0x100, 0x4009_0000, 0x4009_0000, 0x40, 0x2000),
            ],
            &[0xaa; 0x140],
        )
    }

    #[test]
    fn detects_each_kind() {
        assert_eq!(
            detect(&linux_image(0, 0x1f0_0000, 0)),
            ImageKind::LinuxImage {
                text_offset: 0,
                image_size: 0x1f0_0000
            }
        );
        assert_eq!(detect(&two_segment_elf()), ImageKind::Elf64);
        assert_eq!(detect(&[0x1f, 0x20, 0x03, 0xd5]), ImageKind::Raw); // nop
        assert_eq!(detect(&[]), ImageKind::Raw);
        assert_eq!(detect(b"\x7fELF"), ImageKind::Raw);
        // Magic present but the header cut short right after it: still an Image by its magic.
        assert!(matches!(
            detect(&linux_image(0, 0, 0)[..0x3c]),
            ImageKind::LinuxImage { .. }
        ));
        let mut e = two_segment_elf();
        e[4] = 1; // ELFCLASS32
        assert_eq!(detect(&e), ImageKind::Raw);
        let mut e = two_segment_elf();
        e[18] = 62; // EM_X86_64
        assert_eq!(detect(&e), ImageKind::Raw);
        let mut e = two_segment_elf();
        e[5] = 2; // big-endian: e_machine is read big-endian
        e[18..20].copy_from_slice(&183u16.to_be_bytes());
        assert_eq!(detect(&e), ImageKind::Elf64);
    }

    #[test]
    fn modern_linux_image() {
        // Shaped like Debian's 6.1 arm64 kernel: text_offset 0, image_size 31 MiB, file 29 MiB.
        let img = linux_image(0, 31 * MIB, (29 * MIB) as usize);
        let p = plan(&img, Some(20 * MIB), DTB, RAM, 1024 * MIB).unwrap();
        assert_eq!(
            p.kind,
            ImageKind::LinuxImage {
                text_offset: 0,
                image_size: 31 * MIB
            }
        );
        assert_eq!(p.entry, RAM);
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.segments[0].ipa, RAM);
        assert_eq!(p.segments[0].data.len(), img.len());
        assert_eq!(p.segments[0].zero_fill, 31 * MIB - img.len() as u64);
        assert_eq!(p.initrd_ipa, Some(RAM + 32 * MIB));
        assert_eq!(p.dtb_ipa, RAM + 52 * MIB);
    }

    #[test]
    fn text_offset_from_a_2mib_base() {
        let img = linux_image(0x8_0000, 0x20_0000, 0x1000);
        // RAM not 2 MiB aligned: the kernel's base rounds up into it.
        let p = plan(&img, None, DTB, RAM + 0x1000, 64 * MIB).unwrap();
        assert_eq!(p.entry, RAM + 0x20_0000 + 0x8_0000);
        assert_eq!(p.initrd_ipa, None);
        assert_eq!(p.dtb_ipa, RAM + 0x20_0000 + 0x20_0000 + 0x20_0000);
    }

    #[test]
    fn pre_3_17_image_uses_0x80000_and_file_size() {
        // image_size 0: text_offset in the header may be in either byte order, so ignored.
        let img = linux_image(0x0000_0800_0000_0000, 0, 0x1234);
        let p = plan(&img, Some(1), DTB, RAM, 64 * MIB).unwrap();
        assert_eq!(
            p.kind,
            ImageKind::LinuxImage {
                text_offset: 0x8_0000,
                image_size: 0x2000
            }
        );
        assert_eq!(p.entry, RAM + 0x8_0000);
        assert_eq!(p.segments[0].zero_fill, 0x2000 - img.len() as u64);
        assert_eq!(p.initrd_ipa, Some(RAM + 2 * MIB));
        assert_eq!(p.dtb_ipa, RAM + 4 * MIB);
    }

    #[test]
    fn file_longer_than_image_size_is_reserved_whole() {
        let img = linux_image(0, 0x100, 0x1000);
        let p = plan(&img, None, DTB, RAM, 64 * MIB).unwrap();
        assert_eq!(p.segments[0].zero_fill, 0);
        assert_eq!(
            p.kind,
            ImageKind::LinuxImage {
                text_offset: 0,
                image_size: 0x1040
            }
        );
    }

    #[test]
    fn linux_image_errors() {
        let short = &linux_image(0, 0x1000, 0)[..0x3e];
        assert_eq!(
            plan(short, None, DTB, RAM, 64 * MIB),
            Err(LoadError::Truncated {
                what: "arm64 Image header",
                need: 64,
                have: 0x3e
            })
        );
        let big = linux_image(0, 65 * MIB, 0);
        let e = plan(&big, None, DTB, RAM, 64 * MIB).unwrap_err();
        assert_eq!(
            e,
            LoadError::DoesNotFit {
                what: "kernel image",
                ipa: RAM,
                size: 65 * MIB,
                ram_base: RAM,
                ram_size: 64 * MIB
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("68157440") && msg.contains("67108864"),
            "{msg}"
        );
        assert_eq!(
            plan(
                &linux_image(u64::MAX - 0x1000, 0x1000, 0),
                None,
                DTB,
                RAM,
                64 * MIB
            ),
            Err(LoadError::AddressOverflow("kernel image"))
        );
        assert_eq!(
            plan(&linux_image(0, u64::MAX, 0), None, DTB, RAM, 64 * MIB)
                .unwrap_err()
                .to_string(),
            LoadError::DoesNotFit {
                what: "kernel image",
                ipa: RAM,
                size: u64::MAX,
                ram_base: RAM,
                ram_size: 64 * MIB
            }
            .to_string()
        );
    }

    #[test]
    fn everything_exactly_fills_ram() {
        // kernel 2 MiB, initrd 2 MiB, DTB 2 MiB: 6 MiB of RAM is just enough...
        let img = linux_image(0, 2 * MIB, 0);
        let p = plan(&img, Some(2 * MIB), 2 * MIB, RAM, 6 * MIB).unwrap();
        assert_eq!(
            (p.initrd_ipa, p.dtb_ipa),
            (Some(RAM + 2 * MIB), RAM + 4 * MIB)
        );
        // ...and one byte more of any of them is not.
        assert!(matches!(
            plan(&img, Some(2 * MIB + 1), 2 * MIB, RAM, 6 * MIB),
            Err(LoadError::DoesNotFit { what: "DTB", .. })
        ));
        assert!(matches!(
            plan(&img, Some(2 * MIB), 2 * MIB, RAM, 6 * MIB - 1),
            Err(LoadError::DoesNotFit { what: "DTB", .. })
        ));
        assert!(matches!(
            plan(&img, Some(2 * MIB), 2 * MIB, RAM, 4 * MIB - 1),
            Err(LoadError::DoesNotFit { what: "initrd", .. })
        ));
        assert_eq!(
            plan(&img, None, 2 * MIB + 1, RAM, 6 * MIB),
            Err(LoadError::BadDtbSize(2 * MIB + 1))
        );
        assert_eq!(
            plan(&img, None, 0, RAM, 6 * MIB),
            Err(LoadError::BadDtbSize(0))
        );
        // An empty initrd still gets its (empty) place.
        let p = plan(&img, Some(0), 8, RAM, 6 * MIB).unwrap();
        assert_eq!(
            (p.initrd_ipa, p.dtb_ipa),
            (Some(RAM + 2 * MIB), RAM + 2 * MIB)
        );
    }

    #[test]
    fn ram_at_the_top_of_the_address_space() {
        let img = [0u8; 16];
        assert_eq!(
            plan(&img, None, 8, RAM, 0),
            Err(LoadError::BadRam {
                ram_base: RAM,
                ram_size: 0
            })
        );
        assert_eq!(
            plan(&img, None, 8, u64::MAX - 0xfff, 0x2000),
            Err(LoadError::BadRam {
                ram_base: u64::MAX - 0xfff,
                ram_size: 0x2000
            })
        );
        // RAM ending at 2^64 - 1: the last 2 MiB block holds a DTB one byte short of 2 MiB,
        // and the arithmetic for a full 2 MiB one must fail cleanly rather than wrap.
        let base = u64::MAX - 4 * MIB + 1;
        let top_block = u64::MAX - 2 * MIB + 1;
        for kernel in [&img[..], &linux_image(0, 0x1000, 0)[..]] {
            let p = plan(kernel, None, 2 * MIB - 1, base, 4 * MIB - 1).unwrap();
            assert_eq!(p.dtb_ipa, top_block);
            assert!(matches!(
                plan(kernel, None, 2 * MIB, base, 4 * MIB - 1),
                Err(LoadError::DoesNotFit { what: "DTB", .. })
            ));
            assert!(matches!(
                plan(kernel, Some(3 * MIB), 8, base, 4 * MIB - 1),
                Err(LoadError::DoesNotFit { what: "initrd", .. })
            ));
        }
        // A 2 MiB-aligned DTB address past the top is an overflow, not a wrap to 0.
        assert_eq!(
            plan(&img, Some(2 * MIB - 0x8_0000), 8, base, 4 * MIB - 1),
            Err(LoadError::AddressOverflow("DTB"))
        );
    }

    #[test]
    fn raw_binary() {
        let img = [0x1f, 0x20, 0x03, 0xd5, 0, 0, 0, 0x14];
        let p = plan(&img, Some(0x1000), 0x800, RAM, 16 * MIB).unwrap();
        assert_eq!(p.kind, ImageKind::Raw);
        assert_eq!(p.entry, RAM + 0x8_0000);
        assert_eq!(
            p.segments,
            vec![Segment {
                ipa: RAM + 0x8_0000,
                data: &img[..],
                zero_fill: 0
            }]
        );
        assert_eq!(p.initrd_ipa, Some(RAM + 2 * MIB));
        assert_eq!(p.dtb_ipa, RAM + 4 * MIB);
        assert_eq!(
            plan(&[], None, 8, RAM, 16 * MIB),
            Err(LoadError::EmptyImage)
        );
        // 0x80000 + 1 MiB of RAM holds 0x80000 bytes of raw image and not one more.
        let ram = 0x8_0000 + 0x8_0000 + 4 * MIB;
        assert!(plan(&vec![1u8; 0x8_0000], None, 8, RAM, ram).is_ok());
        assert!(matches!(
            plan(&vec![1u8; 0x8_0001], None, 8, RAM, 0x10_0000),
            Err(LoadError::DoesNotFit {
                what: "raw image",
                ..
            })
        ));
    }

    #[test]
    fn elf_segments_bss_and_entry() {
        let img = two_segment_elf();
        let p = plan(&img, Some(0x1000), DTB, RAM, 64 * MIB).unwrap();
        assert_eq!(p.kind, ImageKind::Elf64);
        assert_eq!(p.entry, 0x4008_0000);
        let at = payload_at(3) as usize;
        assert_eq!(
            p.segments,
            vec![
                Segment {
                    ipa: 0x4008_0000,
                    data: &img[at..at + 0x100],
                    zero_fill: 0
                },
                Segment {
                    ipa: 0x4009_0000,
                    data: &img[at + 0x100..at + 0x140],
                    zero_fill: 0x1fc0
                },
            ]
        );
        // Kernel ends at 0x4009_2000: initrd and DTB on the next 2 MiB boundaries.
        assert_eq!(p.initrd_ipa, Some(0x4020_0000));
        assert_eq!(p.dtb_ipa, 0x4040_0000);
    }

    #[test]
    fn elf_segments_are_sorted_and_entry_translated() {
        // Linked at a high virtual address, loaded physically low, headers out of order.
        let p0 = payload_at(2);
        let img = elf(
            0xffff_0000_0000_1008,
            &[
                (
                    1,
                    p0 + 0x10,
                    0xffff_0000_0010_0000,
                    RAM + 0x10_0000,
                    0x10,
                    0x10,
                ),
                (1, p0, 0xffff_0000_0000_1000, RAM + 0x1000, 0x10, 0x10),
            ],
            &[0; 0x20],
        );
        let p = plan(&img, None, DTB, RAM, 64 * MIB).unwrap();
        assert_eq!(p.entry, RAM + 0x1008);
        assert_eq!(p.segments[0].ipa, RAM + 0x1000);
        assert_eq!(p.segments[1].ipa, RAM + 0x10_0000);
        // A physical e_entry is accepted too.
        let mut phys = img.clone();
        phys[24..32].copy_from_slice(&(RAM + 0x10_0008).to_le_bytes());
        assert_eq!(
            plan(&phys, None, DTB, RAM, 64 * MIB).unwrap().entry,
            RAM + 0x10_0008
        );
    }

    #[test]
    fn elf_adjacent_segments_are_fine_overlapping_ones_are_not() {
        let p0 = payload_at(2);
        let mk = |second: u64| {
            elf(
                RAM,
                &[
                    (1, p0, RAM, RAM, 0x10, 0x1000),
                    (1, p0, second, second, 0x10, 0x10),
                ],
                &[0; 0x10],
            )
        };
        assert!(plan(&mk(RAM + 0x1000), None, DTB, RAM, 64 * MIB).is_ok());
        assert_eq!(
            plan(&mk(RAM + 0xfff), None, DTB, RAM, 64 * MIB),
            Err(LoadError::OverlappingSegments {
                first: RAM,
                second: RAM + 0xfff
            })
        );
    }

    #[test]
    fn elf_errors() {
        let ok = two_segment_elf();
        let fits = |img: &[u8]| plan(img, None, DTB, RAM, 64 * MIB).map(|_| ());
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = ok.clone();
            f(&mut v);
            v
        };
        // Program header field offsets within the first header (at 64).
        let ph0 = 64;
        // Long enough to be detected as an ELF (e_machine is at 18), too short for its header.
        assert_eq!(
            fits(&ok[..40]),
            Err(LoadError::Truncated {
                what: "ELF header",
                need: 64,
                have: 40
            })
        );
        assert_eq!(
            fits(&ok[..63]),
            Err(LoadError::Truncated {
                what: "ELF header",
                need: 64,
                have: 63
            })
        );
        assert_eq!(
            fits(&ok[..64 + 56]),
            Err(LoadError::Truncated {
                what: "ELF program header table",
                need: 64 + 3 * 56,
                have: 120
            })
        );
        let payload_end = payload_at(3) + 0x140;
        assert_eq!(
            fits(&ok[..payload_end as usize - 1]),
            Err(LoadError::Truncated {
                what: "ELF segment data",
                need: payload_end,
                have: payload_end - 1
            })
        );
        let big_endian = with(&|v| {
            v[5] = 2;
            v[18..20].copy_from_slice(&183u16.to_be_bytes());
        });
        assert_eq!(
            fits(&big_endian),
            Err(LoadError::BadElf("not little-endian"))
        );
        assert!(matches!(
            fits(&with(&|v| v[16] = 1)),
            Err(LoadError::BadElf(_))
        )); // ET_REL
        assert!(fits(&with(&|v| v[16] = 3)).is_ok()); // ET_DYN
        assert!(matches!(
            fits(&with(&|v| v[54] = 55)),
            Err(LoadError::BadElf(_))
        ));
        assert!(matches!(
            fits(&with(&|v| {
                v[56] = 0xff;
                v[57] = 0xff
            })),
            Err(LoadError::BadElf(_))
        ));
        assert_eq!(
            fits(&with(&|v| {
                v[56] = 0;
                v[57] = 0
            })),
            Err(LoadError::NoSegments)
        );
        // Only the PT_GNU_STACK header left: nothing to load.
        assert_eq!(
            fits(&with(&|v| {
                v[ph0] = 0;
                v[ph0 + 2 * 56] = 0;
            })),
            Err(LoadError::NoSegments)
        );
        // p_filesz > p_memsz.
        assert!(matches!(
            fits(&with(
                &|v| v[ph0 + 40..ph0 + 48].copy_from_slice(&0x80u64.to_le_bytes())
            )),
            Err(LoadError::BadElf(_))
        ));
        // A segment below RAM, one past its end, and one whose end overflows.
        for paddr in [RAM - 0x100, RAM + 64 * MIB - 0x80, u64::MAX - 0x10] {
            assert!(matches!(
                fits(&with(
                    &|v| v[ph0 + 24..ph0 + 32].copy_from_slice(&paddr.to_le_bytes())
                )),
                Err(LoadError::DoesNotFit {
                    what: "ELF segment",
                    ..
                })
            ));
        }
        // p_offset past the file, and p_offset + p_filesz overflowing.
        for off in [ok.len() as u64, u64::MAX - 8] {
            assert!(matches!(
                fits(&with(
                    &|v| v[ph0 + 8..ph0 + 16].copy_from_slice(&off.to_le_bytes())
                )),
                Err(LoadError::Truncated {
                    what: "ELF segment data",
                    ..
                })
            ));
        }
        // e_phoff huge.
        assert!(matches!(
            fits(&with(
                &|v| v[32..40].copy_from_slice(&(u64::MAX - 10).to_le_bytes())
            )),
            Err(LoadError::Truncated {
                what: "ELF program header table",
                ..
            })
        ));
        // Entry just past the first segment, in the gap, and past the BSS.
        for entry in [0x4008_0100u64, 0x4008_8000, 0x4009_2000] {
            assert_eq!(
                fits(&with(&|v| v[24..32].copy_from_slice(&entry.to_le_bytes()))),
                Err(LoadError::EntryOutsideSegments { entry })
            );
        }
        // Entry in the BSS is in a loaded segment.
        assert!(
            fits(&with(
                &|v| v[24..32].copy_from_slice(&0x4009_1ffcu64.to_le_bytes())
            ))
            .is_ok()
        );
        // A 32-bit ARM ELF is refused, not run as a raw binary.
        assert_eq!(
            fits(&with(&|v| v[4] = 1)),
            Err(LoadError::BadElf("not an ELF64 for AArch64"))
        );
    }

    use crate::test_rng::Rng;

    /// Mostly values at the edges of what the loader checks, else any.
    fn interesting(rng: &mut Rng) -> u64 {
        const VALUES: [u64; 12] = [
            0,
            1,
            7,
            8,
            0xfff,
            0x1000,
            0x20_0000,
            0x4000_0000,
            0x4008_0000,
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
        ];
        match rng.below(3) {
            0 => VALUES[rng.below(VALUES.len() as u64) as usize],
            1 => rng.below(0x1_0000_0000),
            _ => rng.next(),
        }
    }

    /// Everything a successful plan promises, checked against its inputs.
    fn check_invariants(
        p: &LoadPlan,
        image: &[u8],
        initrd: Option<u64>,
        dtb: u64,
        base: u64,
        size: u64,
    ) {
        let end = base + size;
        let inside =
            |at: u64, len: u64| at >= base && at.checked_add(len).is_some_and(|e| e <= end);
        let overlaps = |a: u64, alen: u64, b: u64, blen: u64| a < b + blen && b < a + alen;
        let range = image.as_ptr_range();
        let mut ranges = Vec::new();
        for s in &p.segments {
            let len = s.data.len() as u64 + s.zero_fill;
            assert!(inside(s.ipa, len), "segment outside RAM: {p:?}");
            let d = s.data.as_ptr_range();
            assert!(
                range.start <= d.start && d.end <= range.end,
                "segment data outside image"
            );
            ranges.push((s.ipa, len));
        }
        assert!(!p.segments.is_empty());
        for w in ranges.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "segments unsorted or overlapping: {p:?}"
            );
        }
        assert!(
            ranges.iter().any(|&(a, l)| p.entry >= a && p.entry - a < l),
            "entry outside segments: {p:?}"
        );
        assert_eq!(p.initrd_ipa.is_some(), initrd.is_some());
        if let (Some(at), Some(len)) = (p.initrd_ipa, initrd) {
            assert!(inside(at, len) && at.is_multiple_of(PAGE_SIZE));
            assert!(ranges.iter().all(|&(a, l)| !overlaps(at, len, a, l)));
            assert!(!overlaps(at, len, p.dtb_ipa, dtb));
        }
        assert!(inside(p.dtb_ipa, dtb) && p.dtb_ipa.is_multiple_of(8) && dtb <= MAX_DTB_SIZE);
        assert_eq!(
            p.dtb_ipa / SZ_2M,
            (p.dtb_ipa + dtb - 1) / SZ_2M,
            "DTB crosses 2 MiB"
        );
        assert!(ranges.iter().all(|&(a, l)| !overlaps(p.dtb_ipa, dtb, a, l)));
    }

    #[test]
    fn hostile_mutations_never_panic() {
        let seeds = [
            linux_image(0, 0x30_0000, 0x400),
            linux_image(0x8_0000, 0, 0x100),
            two_segment_elf(),
            elf(
                0x4000_0000,
                &[(1, payload_at(1), 0x4000_0000, 0x4000_0000, 0x20, 0x4000)],
                &[0x55; 0x20],
            ),
            vec![0x1f, 0x20, 0x03, 0xd5],
        ];
        let mut rng = Rng::new(0x5eed_cafe_f00d_d00d);
        let (mut ok, mut err) = (0u32, 0u32);
        for round in 0..20_000 {
            let mut img = seeds[round % seeds.len()].clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(5) {
                    // Flip a byte, most often in the headers where the decisions are made.
                    0 | 1 => {
                        let span = if rng.below(2) == 0 {
                            64 + 3 * 56
                        } else {
                            img.len() as u64
                        };
                        let i = rng.below(span.min(img.len() as u64)) as usize;
                        if let Some(b) = img.get_mut(i) {
                            *b = rng.next() as u8;
                        }
                    }
                    // Overwrite an 8-byte header field with an extreme value.
                    2 => {
                        let i = (rng.below(30) * 8) as usize;
                        if i + 8 <= img.len() {
                            img[i..i + 8].copy_from_slice(&interesting(&mut rng).to_le_bytes());
                        }
                    }
                    3 => img.truncate(rng.below(img.len() as u64 + 1) as usize),
                    _ => img.extend((0..rng.below(300)).map(|_| rng.next() as u8)),
                }
            }
            let initrd = match rng.below(3) {
                0 => None,
                1 => Some(rng.below(8 * MIB)),
                _ => Some(interesting(&mut rng)),
            };
            let dtb = if rng.below(4) == 0 {
                interesting(&mut rng)
            } else {
                1 + rng.below(MAX_DTB_SIZE)
            };
            let base = if rng.below(4) == 0 {
                interesting(&mut rng)
            } else {
                RAM
            };
            let size = if rng.below(4) == 0 {
                interesting(&mut rng)
            } else {
                (1 + rng.below(128)) * MIB
            };
            let _ = detect(&img);
            match plan(&img, initrd, dtb, base, size) {
                Ok(p) => {
                    check_invariants(&p, &img, initrd, dtb, base, size);
                    ok += 1;
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    err += 1;
                }
            }
        }
        // The mutations must exercise both outcomes, or the test proves little.
        std::eprintln!("plan(): {ok} accepted, {err} refused");
        assert!(ok > 1000 && err > 1000, "ok {ok}, err {err}");
    }
}
