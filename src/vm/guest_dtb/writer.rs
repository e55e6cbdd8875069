//! A small DTB writer for the guest's tree, sized to what `guest_dtb` writes.
//!
//! `vm-fdt` is general: every property name becomes a heap `CString` looked up in a
//! `BTreeMap`, every value a `Vec`, and a node name with a unit address a formatted `String`;
//! writing one guest DTB cost about 200,000 instructions, a large part of Veil's boot. Here the
//! property names are a closed set, [`Name`], each put in the strings block on its first use
//! and found again by its index; the structure block is built as 32-bit words (every token,
//! length and padded value in a DTB is word-aligned), with unit addresses written as hex
//! digits in place; and the finished blob is copied out once. What comes out is the same
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

    fn word(&mut self, value: u32) {
        self.structs.push(value.to_be());
    }

    /// A node named `name`; the root's name is "".
    pub fn begin_node(&mut self, name: &str) {
        self.word(FDT_BEGIN_NODE);
        let mut text = Packer::new(&mut self.structs);
        text.bytes(name.as_bytes());
        text.finish_string();
        self.depth += 1;
    }

    /// A node named `name@<unit in hex>`, as device nodes are.
    pub fn begin_node_at(&mut self, name: &str, unit: u64) {
        self.word(FDT_BEGIN_NODE);
        let mut digits = [0; 16];
        let mut text = Packer::new(&mut self.structs);
        text.bytes(name.as_bytes());
        text.bytes(b"@");
        text.bytes(hex(unit, &mut digits));
        text.finish_string();
        self.depth += 1;
    }

    pub fn end_node(&mut self) {
        debug_assert!(self.depth > 0, "end_node without begin_node");
        self.depth -= 1;
        self.word(FDT_END_NODE);
    }

    /// The property header; the length word is patched by [`Self::end_prop`].
    fn begin_prop(&mut self, name: Name) -> usize {
        let mut offset = self.offsets[name as usize];
        if offset == ABSENT {
            offset = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_str().as_bytes());
            self.strings.push(0);
            self.offsets[name as usize] = offset;
        }
        self.word(FDT_PROP);
        let len_at = self.structs.len();
        self.word(0);
        self.word(offset);
        len_at
    }

    fn end_prop(&mut self, len_at: usize, len: usize) {
        self.structs[len_at] = (len as u32).to_be();
    }

    /// A property with no value (a flag).
    pub fn null(&mut self, name: Name) {
        self.begin_prop(name);
    }

    pub fn u32(&mut self, name: Name, value: u32) {
        self.u32s(name, &[value]);
    }

    pub fn u32s(&mut self, name: Name, values: &[u32]) {
        let len_at = self.begin_prop(name);
        for &value in values {
            self.word(value);
        }
        self.end_prop(len_at, values.len() * 4);
    }

    pub fn u64(&mut self, name: Name, value: u64) {
        self.u64s(name, &[value]);
    }

    pub fn u64s(&mut self, name: Name, values: &[u64]) {
        let len_at = self.begin_prop(name);
        for &value in values {
            self.word((value >> 32) as u32);
            self.word(value as u32);
        }
        self.end_prop(len_at, values.len() * 8);
    }

    /// A string; the caller has checked it holds no NUL.
    pub fn string(&mut self, name: Name, value: &str) {
        self.strings_list(name, &[value]);
    }

    /// A string list: each string NUL-terminated, one after the other.
    pub fn strings_list(&mut self, name: Name, values: &[&str]) {
        let len_at = self.begin_prop(name);
        let mut text = Packer::new(&mut self.structs);
        for value in values {
            text.bytes(value.as_bytes());
            text.bytes(&[0]);
        }
        let len = text.finish();
        self.end_prop(len_at, len);
    }

    /// A string made of `parts` one after the other, e.g. a path with a unit address.
    pub fn string_of(&mut self, name: Name, parts: &[&[u8]]) {
        let len_at = self.begin_prop(name);
        let mut text = Packer::new(&mut self.structs);
        for part in parts {
            text.bytes(part);
        }
        text.bytes(&[0]);
        let len = text.finish();
        self.end_prop(len_at, len);
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

/// Packs bytes into structure-block words, zero-padding the last.
struct Packer<'w> {
    out: &'w mut Vec<u32>,
    word: [u8; 4],
    used: usize,
    len: usize,
}

impl<'w> Packer<'w> {
    fn new(out: &'w mut Vec<u32>) -> Self {
        Self {
            out,
            word: [0; 4],
            used: 0,
            len: 0,
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        let mut rest = bytes;
        if self.used == 0 {
            let mut words = rest.chunks_exact(4);
            for chunk in &mut words {
                self.out
                    .push(u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
            }
            rest = words.remainder();
        }
        for &byte in rest {
            self.word[self.used] = byte;
            self.used += 1;
            if self.used == 4 {
                self.out.push(u32::from_ne_bytes(self.word));
                self.used = 0;
            }
        }
    }

    /// Ends a node name: its NUL, then padding.
    fn finish_string(mut self) {
        self.bytes(&[0]);
        self.finish();
    }

    /// Pads the last word; returns how many bytes were packed (the padding not counted).
    fn finish(self) -> usize {
        if self.used > 0 {
            let mut word = self.word;
            word[self.used..].fill(0);
            self.out.push(u32::from_ne_bytes(word));
        }
        self.len
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
    fn names_are_stored_once_in_first_use_order() {
        let mut w = Writer::with_capacity(0);
        w.begin_node("");
        w.u32(Name::SizeCells, 2);
        w.null(Name::DmaCoherent);
        w.u32(Name::SizeCells, 1);
        w.end_node();
        let dtb = w.finish(0);
        let strings_at = u32::from_be_bytes(dtb[12..16].try_into().unwrap()) as usize;
        assert_eq!(&dtb[strings_at..], b"#size-cells\0dma-coherent\0");
    }

    /// Strings of every length pad to the next word; the blob parses back.
    #[test]
    fn strings_and_names_of_every_length() {
        let text = "abcdefghij";
        let mut w = Writer::with_capacity(0);
        w.begin_node("");
        for n in 0..=text.len() {
            w.begin_node_at(&text[..n.max(1)], n as u64);
            w.string(Name::Model, &text[..n]);
            w.strings_list(Name::Compatible, &[&text[..n], "x"]);
            w.string_of(Name::StdoutPath, &[b"/a@", text[..n].as_bytes()]);
            w.end_node();
        }
        w.end_node();
        let dtb = w.finish(3);
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        assert_eq!(fdt.total_size(), dtb.len());
        for n in 0..=text.len() {
            let node = fdt
                .find_node(&alloc::format!("/{}@{n:x}", &text[..n.max(1)]))
                .unwrap();
            assert_eq!(node.property("model").unwrap().as_str(), Some(&text[..n]));
            let list: Vec<&str> = node.compatible().unwrap().all().collect();
            assert_eq!(list, [&text[..n], "x"]);
            let path = node.property("stdout-path").unwrap().value;
            assert_eq!(path, alloc::format!("/a@{}\0", &text[..n]).as_bytes());
        }
        assert_eq!(u32::from_be_bytes(dtb[28..32].try_into().unwrap()), 3);
    }
}
