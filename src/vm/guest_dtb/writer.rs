//! A small DTB writer for the guest's tree, sized to what `guest_dtb` writes.
//!
//! `vm-fdt` is general: every property name becomes a heap `CString` looked up in a
//! `BTreeMap`, every value a `Vec`, and a node name with a unit address a formatted `String`;
//! writing one guest DTB cost about 200,000 instructions, a large part of Veil's boot. Here the
//! property names are a closed set, [`Name`], each put in the strings block on its first use
//! and found again by its index; the structure block is built as 32-bit words (every token,
//! length and padded value in a DTB is word-aligned); the fixed strings (node names,
//! `compatible` lists) are packed into such words at compile time ([`text!`]), unit addresses
//! are written as hex digits in place, and the finished blob is copied out once. What comes out is the same
//! version-17 DTB with the blocks in the usual order (header, empty reservation list,
//! structure, strings).
//!
//! Nothing here can fail: the caller (`guest_dtb::build`) checks its inputs, and nesting is
//! the caller's to balance (checked in debug builds).

use alloc::vec::Vec;

use crate::memory::bulk;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_END: u32 = 9;
const HEADER_SIZE: usize = 40;
/// The reservation list: only its terminating all-zero entry.
const RSVMAP_SIZE: usize = 16;

macro_rules! names {
    ($($variant:ident = $text:literal,)*) => {
        /// Every property name the guest's DTB uses.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(super) enum Name {
            $($variant,)*
        }

        impl Name {
            const ALL: &[&str] = &[$($text,)*];

            fn as_str(self) -> &'static str {
                Self::ALL[self as usize]
            }
        }
    };
}

names! {
    AddressCells = "#address-cells",
    AlwaysOn = "always-on",
    Bootargs = "bootargs",
    ClockCells = "#clock-cells",
    ClockFrequency = "clock-frequency",
    ClockNames = "clock-names",
    ClockOutputNames = "clock-output-names",
    Clocks = "clocks",
    Compatible = "compatible",
    CpuOff = "cpu_off",
    CpuOn = "cpu_on",
    CpuSuspend = "cpu_suspend",
    DeviceType = "device_type",
    DmaCoherent = "dma-coherent",
    EnableMethod = "enable-method",
    InitrdEnd = "linux,initrd-end",
    InitrdStart = "linux,initrd-start",
    InterruptCells = "#interrupt-cells",
    InterruptController = "interrupt-controller",
    InterruptParent = "interrupt-parent",
    Interrupts = "interrupts",
    Method = "method",
    Migrate = "migrate",
    Model = "model",
    Phandle = "phandle",
    RedistributorRegions = "#redistributor-regions",
    Reg = "reg",
    Serial0 = "serial0",
    SizeCells = "#size-cells",
    StdoutPath = "stdout-path",
}

/// Not yet in the strings block.
const ABSENT: u32 = u32::MAX;

/// A string packed at compile time into structure-block words: its bytes, a NUL, zero padding.
#[derive(Clone, Copy)]
pub(super) struct Text {
    pub words: &'static [u32],
    /// Bytes, without the NUL.
    pub len: usize,
}

/// Packs `bytes` and a NUL into `N` words in memory order (`N` = `bytes.len() / 4 + 1`).
pub(super) const fn pack<const N: usize>(bytes: &[u8]) -> [u32; N] {
    let mut words = [0u32; N];
    let mut i = 0;
    while i < N {
        let mut chunk = [0u8; 4];
        let mut j = 0;
        while j < 4 {
            if i * 4 + j < bytes.len() {
                chunk[j] = bytes[i * 4 + j];
            }
            j += 1;
        }
        words[i] = u32::from_ne_bytes(chunk);
        i += 1;
    }
    words
}

/// A [`Text`] of a string literal (a list is written with `\0` between its strings).
macro_rules! text {
    ($s:expr) => {{
        const S: &str = $s;
        const N: usize = S.len() / 4 + 1;
        const WORDS: [u32; N] = $crate::vm::guest_dtb::writer::pack::<N>(S.as_bytes());
        $crate::vm::guest_dtb::writer::Text {
            words: &WORDS,
            len: S.len(),
        }
    }};
}
pub(super) use text;

pub(super) struct Writer {
    /// The structure block, each word stored in the DTB's byte order (big-endian).
    structs: Vec<u32>,
    strings: Vec<u8>,
    /// Where each [`Name`] is in the strings block, or [`ABSENT`].
    offsets: [u32; Name::ALL.len()],
    depth: usize,
}

impl Writer {
    /// A writer with room for about `words` words of structure block.
    pub fn with_capacity(words: usize) -> Self {
        Self {
            structs: Vec::with_capacity(words),
            strings: Vec::with_capacity(512),
            offsets: [ABSENT; Name::ALL.len()],
            depth: 0,
        }
    }

    #[inline]
    fn word(&mut self, value: u32) {
        self.structs.push(value.to_be());
    }

    /// Words already in the DTB's byte order. A loop, not `extend_from_slice`: these are a
    /// few words, where a call to `memcpy` costs more than the copy.
    #[inline]
    fn words(&mut self, words: &[u32]) {
        self.structs.extend(words.iter().copied());
    }

    /// A node named `name`; the root's name is "".
    pub fn begin_node(&mut self, name: Text) {
        self.word(FDT_BEGIN_NODE);
        self.words(name.words);
        self.depth += 1;
    }

    /// A node named `name@<unit in hex>`, as device nodes are.
    pub fn begin_node_at(&mut self, name: Text, unit: u64) {
        self.word(FDT_BEGIN_NODE);
        let whole = name.len / 4;
        self.words(&name.words[..whole]);
        // The name's last, partial word (its unused bytes are zero) goes on with the rest.
        let text = Packer {
            out: &mut self.structs,
            word: u32::from_le(name.words[whole]),
            used: name.len % 4,
        };
        unit_address(text, unit);
        self.depth += 1;
    }

    /// [`Writer::begin_node_at`] with a name known only at run time; the caller has checked it
    /// holds no NUL and no `@`.
    pub fn begin_node_named_at(&mut self, name: &[u8], unit: u64) {
        self.word(FDT_BEGIN_NODE);
        let mut text = Packer::new(&mut self.structs);
        for &byte in name {
            text.byte(byte);
        }
        unit_address(text, unit);
        self.depth += 1;
    }

    pub fn end_node(&mut self) {
        debug_assert!(self.depth > 0, "end_node without begin_node");
        self.depth -= 1;
        self.word(FDT_END_NODE);
    }

    /// The property header, for a value of `len` bytes that the caller writes next.
    #[inline]
    fn begin_prop(&mut self, name: Name, len: usize) {
        let mut offset = self.offsets[name as usize];
        if offset == ABSENT {
            offset = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_str().as_bytes());
            self.strings.push(0);
            self.offsets[name as usize] = offset;
        }
        // One reservation for the three words (an array's iterator has a known length).
        self.structs
            .extend([FDT_PROP.to_be(), (len as u32).to_be(), offset.to_be()]);
    }

    /// A property with no value (a flag).
    pub fn null(&mut self, name: Name) {
        self.begin_prop(name, 0);
    }

    pub fn u32(&mut self, name: Name, value: u32) {
        self.u32s(name, &[value]);
    }

    pub fn u32s(&mut self, name: Name, values: &[u32]) {
        self.begin_prop(name, values.len() * 4);
        self.structs.extend(values.iter().map(|v| v.to_be()));
    }

    pub fn u64(&mut self, name: Name, value: u64) {
        self.u64s(name, &[value]);
    }

    pub fn u64s(&mut self, name: Name, values: &[u64]) {
        self.begin_prop(name, values.len() * 8);
        self.structs.reserve(values.len() * 2);
        for &value in values {
            self.structs
                .extend([((value >> 32) as u32).to_be(), (value as u32).to_be()]);
        }
    }

    /// A string (or a string list written with `\0` between its strings) known when Veil is
    /// built.
    pub fn text(&mut self, name: Name, value: Text) {
        self.begin_prop(name, value.len + 1);
        self.words(value.words);
    }

    /// A string made of `parts` one after the other; the caller has checked it holds no NUL.
    pub fn string(&mut self, name: Name, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.begin_prop(name, len + 1);
        let mut text = Packer::new(&mut self.structs);
        for part in parts {
            for &byte in *part {
                text.byte(byte);
            }
        }
        text.byte(0);
        text.finish();
    }

    /// A property whose value is `value` as it is: a string list copied from another DTB,
    /// its NULs included.
    pub fn raw(&mut self, name: Name, value: &[u8]) {
        self.begin_prop(name, value.len());
        let mut text = Packer::new(&mut self.structs);
        for &byte in value {
            text.byte(byte);
        }
        text.finish();
    }

    /// The finished DTB.
    pub fn finish(mut self, boot_cpuid_phys: u32) -> Vec<u8> {
        debug_assert_eq!(self.depth, 0, "nodes left open");
        self.word(FDT_END);
        let structs_size = self.structs.len() * 4;
        let structs_at = HEADER_SIZE + RSVMAP_SIZE;
        let strings_at = structs_at + structs_size;
        let total = strings_at + self.strings.len();
        let header = [
            FDT_MAGIC,
            total as u32,
            structs_at as u32,
            strings_at as u32,
            HEADER_SIZE as u32,
            17, // version
            16, // last compatible version
            boot_cpuid_phys,
            self.strings.len() as u32,
            structs_size as u32,
        ];
        let mut out = alloc::vec![0u8; total];
        for (slot, word) in out.chunks_exact_mut(4).zip(header) {
            slot.copy_from_slice(&word.to_be_bytes());
        }
        // The reservation list stays zero: its one entry is the terminator.
        bulk::copy_slice(
            &mut out[structs_at..strings_at],
            words_as_bytes(&self.structs),
        );
        bulk::copy_slice(&mut out[strings_at..], &self.strings);
        out
    }
}

/// The bytes of `words` in memory order.
fn words_as_bytes(words: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding and every byte of it is initialised; u8 needs no alignment;
    // the slice covers exactly the words' memory and borrows them for its life.
    unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 4) }
}

/// `value` in lower-case hex without leading zeros ("0" for zero), written into `buf`.
pub(super) fn hex(mut value: u64, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    &buf[at..]
}

/// The eight hex digits of `value` as ASCII, the most significant in the lowest byte (first
/// in memory): the nibbles are spread one per byte and turned into '0'-'9' or 'a'-'f' all at
/// once, instead of a table lookup per digit.
fn hex8(value: u32) -> u64 {
    let mut x = value as u64;
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // Nibble k is in byte k now; the most significant first in memory is the reverse.
    x = x.swap_bytes();
    // 0x30 + nibble, and 0x27 more ('a' - '0' - 10) where the nibble is 10 or more.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    x + 0x3030_3030_3030_3030 + letters * 0x27
}

/// Packs bytes into structure-block words, a byte at a time into a register.
/// Ends a node name being packed: `@`, `unit` in hex without leading zeros, the NUL. Inlined:
/// some forty nodes of every guest DTB end here.
#[inline(always)]
fn unit_address(mut text: Packer, unit: u64) {
    text.byte(b'@');
    // The hex digits, eight at a time (see `hex8`).
    let digits = (64 - (unit | 1).leading_zeros()).div_ceil(4) as usize;
    let low = hex8(unit as u32);
    if digits > 8 {
        let high = hex8((unit >> 32) as u32);
        text.bytes8(high >> (8 * (16 - digits)), digits - 8);
        text.bytes8(low, 8);
    } else {
        text.bytes8(low >> (8 * (8 - digits)), digits);
    }
    text.byte(0);
    text.finish();
}

struct Packer<'w> {
    out: &'w mut Vec<u32>,
    /// The word being filled, its first byte in the low bits.
    word: u32,
    used: usize,
}

impl<'w> Packer<'w> {
    fn new(out: &'w mut Vec<u32>) -> Self {
        Self {
            out,
            word: 0,
            used: 0,
        }
    }

    #[inline]
    fn byte(&mut self, byte: u8) {
        self.word |= (byte as u32) << (8 * self.used);
        self.used += 1;
        if self.used == 4 {
            self.out.push(self.word.to_le());
            self.word = 0;
            self.used = 0;
        }
    }

    /// The low `count` (at most 8) bytes of `bytes`, the lowest first; the bytes above
    /// `count` must be zero.
    #[inline]
    fn bytes8(&mut self, bytes: u64, count: usize) {
        let mut wide = self.word as u128 | (bytes as u128) << (8 * self.used);
        let mut held = self.used + count;
        while held >= 4 {
            self.out.push((wide as u32).to_le());
            wide >>= 32;
            held -= 4;
        }
        self.word = wide as u32;
        self.used = held;
    }

    /// Pads and writes the last word.
    fn finish(self) {
        if self.used > 0 {
            self.out.push(self.word.to_le());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits() {
        let mut buf = [0; 16];
        assert_eq!(hex(0, &mut buf), b"0");
        assert_eq!(hex(0x900_0000, &mut buf), b"9000000");
        assert_eq!(hex(0xa000e00, &mut buf), b"a000e00");
        assert_eq!(hex(u64::MAX, &mut buf), b"ffffffffffffffff");
    }

    #[test]
    fn hex8_digits() {
        for value in [
            0u32,
            1,
            9,
            0xa,
            0xf,
            0x10,
            0x9000_000,
            0xa000_e00,
            0x1234_5678,
            0xdead_beef,
            u32::MAX,
        ] {
            let expected = alloc::format!("{value:08x}");
            assert_eq!(
                &hex8(value).to_le_bytes(),
                expected.as_bytes(),
                "{value:#x}"
            );
        }
        for nibble in 0..16u32 {
            let value = nibble * 0x1111_1111;
            assert_eq!(
                &hex8(value).to_le_bytes(),
                alloc::format!("{value:08x}").as_bytes()
            );
        }
    }

    #[test]
    fn texts_are_packed_with_their_nul() {
        let t = text!("abcd");
        assert_eq!(t.len, 4);
        assert_eq!(t.words, [u32::from_ne_bytes(*b"abcd"), 0]);
        let t = text!("virtio,mmio");
        assert_eq!(t.words.len(), 3);
        assert_eq!(t.words[2], u32::from_ne_bytes(*b"mio\0"));
        assert_eq!(text!("").words, [0]);
    }

    #[test]
    fn names_are_stored_once_in_first_use_order() {
        let mut w = Writer::with_capacity(0);
        w.begin_node(text!(""));
        w.u32(Name::SizeCells, 2);
        w.null(Name::DmaCoherent);
        w.u32(Name::SizeCells, 1);
        w.end_node();
        let dtb = w.finish(0);
        let strings_at = u32::from_be_bytes(dtb[12..16].try_into().unwrap()) as usize;
        assert_eq!(&dtb[strings_at..], b"#size-cells\0dma-coherent\0");
    }

    /// Node names and strings of every length pad to the next word; the blob parses back.
    #[test]
    fn strings_and_names_of_every_length() {
        const NAMES: [Text; 9] = [
            text!("a"),
            text!("ab"),
            text!("abc"),
            text!("abcd"),
            text!("abcde"),
            text!("abcdef"),
            text!("abcdefg"),
            text!("abcdefgh"),
            text!("abcdefghi"),
        ];
        let text = "abcdefghij";
        let units = [0, 1, 0xf, 0x10, 0xabc, 0x900_0000, 0x1_0000_0000, u64::MAX];
        let mut w = Writer::with_capacity(0);
        w.begin_node(text!(""));
        for (i, name) in NAMES.iter().enumerate() {
            for &unit in &units {
                w.begin_node_at(*name, unit);
                w.string(Name::Model, &[text[..i].as_bytes()]);
                w.string(Name::StdoutPath, &[b"/a@", text[..i].as_bytes()]);
                w.text(Name::Compatible, text!("x\0yz"));
                w.end_node();
            }
        }
        w.end_node();
        let dtb = w.finish(3);
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        assert_eq!(fdt.total_size(), dtb.len());
        for i in 0..NAMES.len() {
            for &unit in &units {
                let path = alloc::format!("/{}@{unit:x}", &text[..=i]);
                let node = fdt.find_node(&path).unwrap_or_else(|| panic!("{path}"));
                assert_eq!(node.name, &path[1..]);
                assert_eq!(node.property("model").unwrap().as_str(), Some(&text[..i]));
                let list: Vec<&str> = node.compatible().unwrap().all().collect();
                assert_eq!(list, ["x", "yz"]);
                let stdout = node.property("stdout-path").unwrap().value;
                assert_eq!(stdout, alloc::format!("/a@{}\0", &text[..i]).as_bytes());
            }
        }
        assert_eq!(u32::from_be_bytes(dtb[28..32].try_into().unwrap()), 3);
    }
}
