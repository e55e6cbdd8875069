//! The flattened device tree format, read in one pass: the header checks and a token walker over
//! the structure block that validates as it goes.
//!
//! [`walk`] reads every token of the structure block once, in the grammar
//! `BEGIN_NODE("") prop* node* END_NODE END` with `node = BEGIN_NODE(name) prop* node* END_NODE`,
//! checking each offset, length and name against the blocks. It hands each node to a visitor as
//! soon as the node's properties are known (at its first child, or its end), with the
//! properties discovery asks about already sorted into a [`Props`] table by name. Discovery
//! thus reads the whole tree in one walk, and the nodes it needs later (`/aliases`) are
//! remembered as a [`Span`] of property tokens rather than searched for again.
//!
//! The walk is the hot part of discovery, so it is frugal: tokens are read as whole words when
//! the blob is 4-byte aligned in memory (it always is when a boot loader follows the boot
//! protocol), node names are scanned four bytes at a time for their NUL and for non-ASCII
//! bytes, and property names are compared as bytes once per distinct name: dtc, libfdt and
//! QEMU store each name once in the strings block, so almost every property of a tree names a
//! string already seen, and a small table indexed by the name's offset answers for it.

use super::{FdtError, MAX_DEPTH};
use crate::memory::bulk;

pub(super) const FDT_MAGIC: u32 = 0xd00d_feed;
pub(super) const HEADER_SIZE: usize = 40;
pub(super) const FDT_BEGIN_NODE: u32 = 1;
pub(super) const FDT_END_NODE: u32 = 2;
pub(super) const FDT_PROP: u32 = 3;
pub(super) const FDT_NOP: u32 = 4;
pub(super) const FDT_END: u32 = 9;

/// A device tree whose header has been checked: its blocks lie inside it.
pub(super) struct Tree<'a> {
    /// The tree, cut to the header's `totalsize`.
    pub blob: &'a [u8],
    pub structs: &'a [u8],
    pub strings: &'a [u8],
    /// Offset of the `/memreserve/` list, checked to end inside the blob.
    pub mem_rsvmap: usize,
}

impl<'a> Tree<'a> {
    /// Checks the header: magic, version 17, and every block inside `totalsize`, which must be
    /// inside `blob` (the blob may be longer: boot loaders round sizes up).
    pub fn new(blob: &'a [u8]) -> Result<Self, FdtError> {
        let header = |index: usize| be_u32_at(blob, index * 4).unwrap_or(0);
        if blob.len() < HEADER_SIZE {
            return Err(FdtError::TooShort { len: blob.len() });
        }
        if header(0) != FDT_MAGIC {
            return Err(FdtError::BadMagic { found: header(0) });
        }
        let total_size = header(1) as usize;
        if total_size > blob.len() {
            return Err(FdtError::Truncated {
                total_size,
                available: blob.len(),
            });
        }
        if total_size < HEADER_SIZE {
            return Err(FdtError::BadLayout(
                "its total size is smaller than the header",
            ));
        }
        let (version, last_compatible) = (header(5), header(6));
        // Version 16 lacks size_dt_struct, which the fdt crate relies on.
        if version < 17 || last_compatible > 17 {
            return Err(FdtError::UnsupportedVersion {
                version,
                last_compatible,
            });
        }
        let blob = blob.get(..total_size).unwrap_or_default();
        let block = |offset: u32, size: u32, what: &'static str| {
            let start = offset as usize;
            let end = start
                .checked_add(size as usize)
                .ok_or(FdtError::BadLayout(what))?;
            blob.get(start..end).ok_or(FdtError::BadLayout(what))
        };
        let structs = block(
            header(2),
            header(9),
            "the structure block lies outside the tree",
        )?;
        let strings = block(
            header(3),
            header(8),
            "the strings block lies outside the tree",
        )?;
        if !header(2).is_multiple_of(4) {
            return Err(FdtError::BadLayout(
                "the structure block is not 4-byte aligned",
            ));
        }
        let mem_rsvmap = header(4) as usize;
        if mem_rsvmap < HEADER_SIZE || !mem_rsvmap.is_multiple_of(8) {
            return Err(FdtError::BadLayout(
                "the memory reservation block is misplaced",
            ));
        }
        // The reservation list must end (an all-zero entry) inside the tree.
        let terminated = (mem_rsvmap..total_size)
            .step_by(16)
            .map(|at| (be_u64_at(blob, at), be_u64_at(blob, at + 8)))
            .take_while(|(a, s)| a.is_some() && s.is_some())
            .any(|entry| entry == (Some(0), Some(0)));
        if !terminated {
            return Err(FdtError::BadLayout(
                "the memory reservation list has no end",
            ));
        }
        Ok(Self {
            blob,
            structs,
            strings,
            mem_rsvmap,
        })
    }

    /// The value of the property called `name` among the tokens of `span`, which [`walk`] has
    /// checked; the first one if there are several.
    pub fn find(&self, span: Span, name: &str) -> Option<&'a [u8]> {
        let mut at = span.start;
        while at < span.end {
            match be_u32_at(self.structs, at)? {
                FDT_PROP => {}
                FDT_NOP => {
                    at += 4;
                    continue;
                }
                _ => return None,
            }
            let len = be_u32_at(self.structs, at + 4)? as usize;
            let name_at = be_u32_at(self.structs, at + 8)? as usize;
            let value = self.structs.get(at + 12..(at + 12).checked_add(len)?)?;
            let found = self.strings.get(name_at..)?;
            if found.get(..name.len()) == Some(name.as_bytes()) && found.get(name.len()) == Some(&0)
            {
                return Some(value);
            }
            at = align4(at + 12 + len);
        }
        None
    }
}

/// The properties discovery looks at, by name. `Other` is everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Prop {
    Other,
    Status,
    DeviceType,
    Compatible,
    Reg,
    Ranges,
    AddressCells,
    SizeCells,
    InterruptCells,
    Interrupts,
    ClockFrequency,
    Method,
    EnableMethod,
    CpuReleaseAddr,
    RedistributorRegions,
    Model,
    Bootargs,
    InitrdStart,
    InitrdEnd,
    StdoutPath,
    LinuxStdoutPath,
}

const PROP_KINDS: usize = Prop::LinuxStdoutPath as usize + 1;

impl Prop {
    const ALL: [Prop; PROP_KINDS] = [
        Prop::Other,
        Prop::Status,
        Prop::DeviceType,
        Prop::Compatible,
        Prop::Reg,
        Prop::Ranges,
        Prop::AddressCells,
        Prop::SizeCells,
        Prop::InterruptCells,
        Prop::Interrupts,
        Prop::ClockFrequency,
        Prop::Method,
        Prop::EnableMethod,
        Prop::CpuReleaseAddr,
        Prop::RedistributorRegions,
        Prop::Model,
        Prop::Bootargs,
        Prop::InitrdStart,
        Prop::InitrdEnd,
        Prop::StdoutPath,
        Prop::LinuxStdoutPath,
    ];

    fn of(name: &[u8]) -> Prop {
        match name {
            b"status" => Prop::Status,
            b"device_type" => Prop::DeviceType,
            b"compatible" => Prop::Compatible,
            b"reg" => Prop::Reg,
            b"ranges" => Prop::Ranges,
            b"#address-cells" => Prop::AddressCells,
            b"#size-cells" => Prop::SizeCells,
            b"#interrupt-cells" => Prop::InterruptCells,
            b"interrupts" => Prop::Interrupts,
            b"clock-frequency" => Prop::ClockFrequency,
            b"method" => Prop::Method,
            b"enable-method" => Prop::EnableMethod,
            b"cpu-release-addr" => Prop::CpuReleaseAddr,
            b"#redistributor-regions" => Prop::RedistributorRegions,
            b"model" => Prop::Model,
            b"bootargs" => Prop::Bootargs,
            b"linux,initrd-start" => Prop::InitrdStart,
            b"linux,initrd-end" => Prop::InitrdEnd,
            b"stdout-path" => Prop::StdoutPath,
            b"linux,stdout-path" => Prop::LinuxStdoutPath,
            _ => Prop::Other,
        }
    }

    /// [`Prop::of`] for a name given with its NUL and whatever follows it in the strings
    /// block, without looking for the NUL first: the first four bytes pick the one known name
    /// it can be, which is then compared with its NUL, byte by byte (a `memcmp` call costs more
    /// than these few bytes).
    fn of_terminated(name: &[u8]) -> Prop {
        let Some(&[a, b, c, d]) = name.first_chunk::<4>() else {
            return Prop::Other;
        };
        let (known, prop): (&[u8], Prop) = match &[a, b, c, d] {
            b"#add" => (b"#address-cells\0", Prop::AddressCells),
            b"#siz" => (b"#size-cells\0", Prop::SizeCells),
            b"#int" => (b"#interrupt-cells\0", Prop::InterruptCells),
            b"#red" => (b"#redistributor-regions\0", Prop::RedistributorRegions),
            b"boot" => (b"bootargs\0", Prop::Bootargs),
            b"comp" => (b"compatible\0", Prop::Compatible),
            b"cloc" => (b"clock-frequency\0", Prop::ClockFrequency),
            b"cpu-" => (b"cpu-release-addr\0", Prop::CpuReleaseAddr),
            b"devi" => (b"device_type\0", Prop::DeviceType),
            b"enab" => (b"enable-method\0", Prop::EnableMethod),
            b"inte" => (b"interrupts\0", Prop::Interrupts),
            b"linu" => match name.get(6) {
                Some(b'i') if name.get(13) == Some(&b's') => {
                    (b"linux,initrd-start\0", Prop::InitrdStart)
                }
                Some(b'i') => (b"linux,initrd-end\0", Prop::InitrdEnd),
                _ => (b"linux,stdout-path\0", Prop::LinuxStdoutPath),
            },
            b"meth" => (b"method\0", Prop::Method),
            b"mode" => (b"model\0", Prop::Model),
            b"reg\0" => return Prop::Reg,
            b"rang" => (b"ranges\0", Prop::Ranges),
            b"stat" => (b"status\0", Prop::Status),
            b"stdo" => (b"stdout-path\0", Prop::StdoutPath),
            _ => return Prop::Other,
        };
        if name.len() < known.len() {
            return Prop::Other;
        }
        let mut i = 4;
        while i < known.len() {
            if name[i] != known[i] {
                return Prop::Other;
            }
            i += 1;
        }
        prop
    }
}

/// One node's values of the properties in [`Prop`]. A value counts only while its bit in `set`
/// is, so a new node starts by clearing one word, not the table.
#[derive(Clone, Copy)]
pub(super) struct Props<'a> {
    set: u32,
    values: [&'a [u8]; PROP_KINDS],
}

impl<'a> Props<'a> {
    fn new() -> Self {
        Self {
            set: 0,
            values: [&[]; PROP_KINDS],
        }
    }

    pub fn get(&self, prop: Prop) -> Option<&'a [u8]> {
        (self.set & 1 << prop as u32 != 0).then(|| self.values[prop as usize])
    }

    /// Records a value; a repeated name (dtc refuses those) counts once, the first, as in
    /// libfdt.
    fn add(&mut self, prop: Prop, value: &'a [u8]) {
        let bit = 1 << prop as u32;
        if self.set & bit == 0 {
            self.set |= bit;
            self.values[prop as usize] = value;
        }
    }
}

/// Where a node's property tokens are in the structure block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Span {
    start: usize,
    end: usize,
}

/// A node as [`walk`] hands it over.
pub(super) struct Node<'t, 'a> {
    pub name: &'a str,
    /// 1 for the root.
    pub depth: usize,
    pub props: &'t Props<'a>,
    pub span: Span,
}

/// Strings-block offsets below this are remembered once their name is known; above it (no real
/// tree has a strings block this large) each property is checked and sorted afresh.
const NAME_TABLE: usize = 2048;

/// What the name at each strings-block offset is: 0 = not seen yet, else its [`Prop`] plus 1.
struct Names<'a, 't> {
    strings: &'a [u8],
    /// Empty when the walk does not sort names (`check_fdt`): each is then only checked.
    seen: &'t mut [u8],
    /// The whole strings block is text and ends with a NUL (checked once, as it always is for
    /// dtc, libfdt and QEMU trees): then every name in it is terminated text, unless it starts
    /// inside a character.
    text: bool,
}

impl Names<'_, '_> {
    /// The [`Prop`] the name at `offset` is; `Err` with the problem if it is not a name.
    #[inline(always)]
    fn prop(&mut self, offset: usize) -> Result<Prop, &'static str> {
        match self.seen.get(offset) {
            Some(&known) if known != 0 => Ok(Prop::ALL[known as usize - 1]),
            _ => self.first_sight(offset),
        }
    }

    #[inline(never)]
    fn first_sight(&mut self, offset: usize) -> Result<Prop, &'static str> {
        let outside = "a property name lies outside the strings block";
        let not_text = "a property name is not text";
        let prop = if self.text {
            let rest = self.strings.get(offset..).unwrap_or_default();
            match rest.first() {
                None => return Err(outside),
                Some(&byte) if byte & 0xc0 == 0x80 => return Err(not_text),
                Some(_) => Prop::of_terminated(rest),
            }
        } else {
            let name = self
                .strings
                .get(offset..)
                .and_then(c_string)
                .ok_or(outside)?;
            core::str::from_utf8(name).map_err(|_| not_text)?;
            Prop::of(name)
        };
        if let Some(slot) = self.seen.get_mut(offset) {
            *slot = prop as u8 + 1;
        }
        Ok(prop)
    }
}

/// The structure block, read a 32-bit word at a time at offsets that are multiples of 4 (every
/// token is). [`Aligned`] reads whole words; [`Unaligned`] byte by byte, for a blob that is not
/// 4-byte aligned in memory (the boot protocols place DTBs 8-byte aligned, so only tests and
/// odd boot loaders take that path).
trait Block<'a>: Copy {
    fn bytes(&self) -> &'a [u8];
    /// The big-endian word at byte offset `at`.
    fn word(&self, at: usize) -> Option<u32>;
    /// The node name that starts at byte offset `at`: its bytes up to the NUL, which must be
    /// there, as text.
    fn name(&self, at: usize) -> Result<&'a str, &'static str> {
        let name = c_string(self.bytes().get(at..).unwrap_or(&[]))
            .ok_or("a node name is not terminated")?;
        core::str::from_utf8(name).map_err(|_| "a node name is not text")
    }
}

#[derive(Clone, Copy)]
struct Unaligned<'a>(&'a [u8]);

impl<'a> Block<'a> for Unaligned<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.0
    }

    fn word(&self, at: usize) -> Option<u32> {
        be_u32_at(self.0, at)
    }
}

#[derive(Clone, Copy)]
struct Aligned<'a> {
    bytes: &'a [u8],
    /// The same memory as words, as far as whole words go.
    words: &'a [u32],
}

impl<'a> Block<'a> for Aligned<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    #[inline(always)]
    fn word(&self, at: usize) -> Option<u32> {
        self.words.get(at / 4).map(|&w| u32::from_be(w))
    }

    /// Four bytes at a time: a name of ASCII bytes up to its NUL is text; anything else is
    /// judged byte by byte.
    fn name(&self, at: usize) -> Result<&'a str, &'static str> {
        let mut index = at / 4;
        loop {
            let Some(&word) = self.words.get(index) else {
                break;
            };
            // Bytes in memory order, the first in the low bits.
            let word = u32::from_le(word);
            let zero = word.wrapping_sub(0x0101_0101) & !word & 0x8080_8080;
            let high = word & 0x8080_8080;
            if zero != 0 {
                // The lowest flagged byte is the first NUL; ASCII is checked up to it.
                let nul = zero.trailing_zeros() / 8;
                if high & ((1u32 << (nul * 8)).wrapping_sub(1)) != 0 {
                    break;
                }
                let end = index * 4 + nul as usize;
                let name = self.bytes.get(at..end).unwrap_or(&[]);
                // SAFETY: every byte of `name` is below 0x80 (checked above, word by word),
                // and ASCII is UTF-8.
                return Ok(unsafe { core::str::from_utf8_unchecked(name) });
            }
            if high != 0 {
                break;
            }
            index += 1;
        }
        Unaligned(self.bytes).name(at)
    }
}

/// What [`walk`] does with `FDT_NOP` tokens, which the format allows anywhere between tokens.
/// Loaders that delete nodes or properties leave them (QEMU's raspi4b does, and so may U-Boot
/// and firmware).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Nops {
    /// Pass over them, as libfdt does: discovery reads the host's DTB as the loader left it.
    Skip,
    /// Refuse the tree: the `fdt` crate asserts on them (`check_fdt`).
    Refuse,
}

/// Walks the structure block once, checking it, and calls `visit` with every node in tree
/// order (a node before its children), each once its properties are known. The visitor may
/// have been called for the nodes before an error; the error is what counts.
pub(super) fn walk<'a>(
    tree: &Tree<'a>,
    nops: Nops,
    visit: &mut impl FnMut(&Node<'_, 'a>),
) -> Result<(), FdtError> {
    // SAFETY: any four bytes are a valid u32; `align_to` only reinterprets the aligned middle.
    let (head, words, _) = unsafe { tree.structs.align_to::<u32>() };
    if head.is_empty() {
        let block = Aligned {
            bytes: tree.structs,
            words,
        };
        walk_block(block, tree.strings, nops, visit)
    } else {
        walk_block(Unaligned(tree.structs), tree.strings, nops, visit)
    }
}

/// Whether a walk sorts property names into [`Props`] for its visitor: discovery's does;
/// `check_fdt`'s only checks them, and so saves clearing the name table.
fn sorts_names(nops: Nops) -> bool {
    nops == Nops::Skip
}

fn walk_block<'a>(
    structs: impl Block<'a>,
    strings: &'a [u8],
    nops: Nops,
    visit: &mut impl FnMut(&Node<'_, 'a>),
) -> Result<(), FdtError> {
    let len = structs.bytes().len();
    let bad = |offset: usize, problem: &'static str| FdtError::BadStructure { offset, problem };
    let mut table = core::mem::MaybeUninit::<[u8; NAME_TABLE]>::uninit();
    let seen: &mut [u8] = if sorts_names(nops) {
        // SAFETY: every byte of the table is written (zeroed) before it is used as initialised.
        // `bulk::zero` stores only aligned bytes and 16-byte pairs, so it serves here too,
        // with the MMU off; and it is four times quicker than the `memset` of `[0; N]`.
        unsafe {
            bulk::zero(table.as_mut_ptr().cast(), NAME_TABLE);
            table.assume_init_mut()
        }
    } else {
        &mut []
    };
    let mut names = Names {
        strings,
        seen,
        text: strings.last() == Some(&0) && core::str::from_utf8(strings).is_ok(),
    };
    let mut at = 0usize;
    let mut depth = 0usize;
    // Properties may follow a node's name but not its first child.
    let mut props_allowed = false;
    // The node whose properties are being read, not yet handed to `visit`.
    let mut name = "";
    let mut props = Props::new();
    let mut span_start = 0;
    let mut pending = false;
    loop {
        let token = structs
            .word(at)
            .ok_or(bad(at, "it ends before the tree is closed"))?;
        match token {
            FDT_PROP => {
                if !props_allowed {
                    return Err(bad(
                        at,
                        "a property comes after a child node or outside any node",
                    ));
                }
                let (Some(value_len), Some(name_offset)) =
                    (structs.word(at + 4), structs.word(at + 8))
                else {
                    return Err(bad(at, "a property header is cut short"));
                };
                let value_start = at + 12;
                // In u64, where an offset plus a 32-bit length cannot overflow.
                let value_end = value_start as u64 + value_len as u64;
                if value_end > len as u64 {
                    return Err(bad(at, "a property value runs past the structure block"));
                }
                let value_end = value_end as usize;
                let prop = names
                    .prop(name_offset as usize)
                    .map_err(|problem| bad(at, problem))?;
                if prop != Prop::Other {
                    props.add(
                        prop,
                        structs.bytes().get(value_start..value_end).unwrap_or(&[]),
                    );
                }
                at = align4(value_end);
            }
            FDT_BEGIN_NODE => {
                if pending {
                    hand_over(visit, name, depth, &props, span_start, at);
                }
                let name_at = at + 4;
                let found = structs
                    .name(name_at)
                    .map_err(|problem| bad(name_at, problem))?;
                if (depth == 0) != found.is_empty() {
                    return Err(bad(name_at, "only the root node may have an empty name"));
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(FdtError::TooDeep);
                }
                props_allowed = true;
                at = align4(name_at + found.len() + 1);
                name = found;
                props.set = 0;
                span_start = at;
                pending = true;
            }
            FDT_END_NODE => {
                if pending {
                    hand_over(visit, name, depth, &props, span_start, at);
                }
                pending = false;
                depth = depth
                    .checked_sub(1)
                    .ok_or(bad(at, "a node ends that never began"))?;
                props_allowed = false;
                at += 4;
                if depth == 0 {
                    // The walk ends at the root's end (a second root is an error here).
                    while nops == Nops::Skip && structs.word(at) == Some(FDT_NOP) {
                        at += 4;
                    }
                    return match structs.word(at) {
                        Some(FDT_END) => Ok(()),
                        _ => Err(bad(at, "the root node is not followed by the end marker")),
                    };
                }
            }
            FDT_NOP if nops == Nops::Skip => at += 4,
            FDT_NOP => {
                return Err(bad(
                    at,
                    "it contains NOP tokens, which Veil does not accept",
                ));
            }
            FDT_END => return Err(bad(at, "it ends before the tree is closed")),
            _ => return Err(bad(at, "an unknown token")),
        }
    }
}

/// Hands a node to `visit` once its properties are known: at the token after them, its first
/// child or its end, at `props_end`. Inlined, as the walk is on every boot's path.
#[inline(always)]
fn hand_over<'a>(
    visit: &mut impl FnMut(&Node<'_, 'a>),
    name: &'a str,
    depth: usize,
    props: &Props<'a>,
    props_start: usize,
    props_end: usize,
) {
    let span = Span {
        start: props_start,
        end: props_end,
    };
    visit(&Node {
        name,
        depth,
        props,
        span,
    });
}

/// The bytes before the first NUL, if there is one.
pub(super) fn c_string(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().position(|&b| b == 0)?;
    bytes.get(..end)
}

/// `n` rounded up to a multiple of 4; `n` is an offset inside a block (or one past its end),
/// so it cannot overflow.
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub(super) fn be_u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

pub(super) fn be_u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of sorting a name agree, for every known name and near misses of them.
    #[test]
    fn names_sort_the_same_with_or_without_their_nul() {
        let known = [
            "status",
            "device_type",
            "compatible",
            "reg",
            "ranges",
            "#address-cells",
            "#size-cells",
            "#interrupt-cells",
            "interrupts",
            "clock-frequency",
            "method",
            "enable-method",
            "cpu-release-addr",
            "#redistributor-regions",
            "model",
            "bootargs",
            "linux,initrd-start",
            "linux,initrd-end",
            "stdout-path",
            "linux,stdout-path",
        ];
        let mut names: alloc::vec::Vec<alloc::string::String> = alloc::vec::Vec::new();
        for name in known {
            names.push(name.into());
            names.push(alloc::format!("{name}x"));
            names.push(name[..name.len() - 1].into());
            names.push(alloc::format!("x{name}"));
        }
        names.extend(["", "s", "#", "linux,", "phandle", "regs"].map(alloc::string::String::from));
        let mut seen = alloc::collections::BTreeSet::new();
        for name in &names {
            let bytes = alloc::format!("{name}\0more\0");
            let prop = Prop::of(name.as_bytes());
            assert_eq!(Prop::of_terminated(bytes.as_bytes()), prop, "{name:?}");
            seen.insert(prop as u8);
        }
        assert_eq!(seen.len(), PROP_KINDS, "every kind is reached");
    }
}
