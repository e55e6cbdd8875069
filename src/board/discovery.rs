//! Platform discovery: what machine Veil is running on, read from the flattened device tree
//! (DTB) that the firmware or QEMU passes in `x0`.
//!
//! This runs early in boot, before Veil has a heap, so nothing here allocates: lists have a
//! fixed capacity and every string borrows from the blob. The result, [`Platform`], is plain
//! data (RAM, reserved ranges, CPUs and how to start them, the GIC, timer interrupts, the UART
//! and its interrupt, the RTC, the initrd that carries the VM package, and Veil's command line)
//! for the rest of boot to act on; nothing here touches hardware.
//!
//! Addresses are returned as CPU physical addresses: a `reg` is a bus address in its parent's
//! address space, so it is translated through the `ranges` of every ancestor bus (on the
//! Raspberry Pi 4, `/soc` maps bus 0x7e00_0000 to 0xfe00_0000).
//!
//! The tree is read in one pass by Veil's own token walker ([`walk`]), not the `fdt` crate.
//! The crate finds a node by rescanning the tree and a property by rescanning the node, and
//! validates every property name as UTF-8 on every lookup; booting spent some 720,000
//! instructions there. The walker reads each token once, compares names as bytes (each
//! distinct name once), and hands every node, its properties sorted by name, to the collector
//! here, which keeps the path from the root (cells and `ranges` for translation) and decides on
//! the spot. Only what the tree names later is resolved after the walk: `/chosen/stdout-path`
//! (often the last node) picks among the PL011s seen, through `/aliases` if need be.
//!
//! The DTB is input Veil does not control. The walker checks the structure as it reads (every
//! offset and length against its block, names terminated and text, properties before child
//! nodes, depth at most [`MAX_DEPTH`]) and never panics; a broken structure is an [`FdtError`]
//! even where a bad value comes earlier in the tree. `FDT_NOP` tokens, which loaders that
//! delete nodes leave behind (QEMU's raspi4b does), are passed over as libfdt does. The `fdt`
//! crate asserts, unwraps and slices without bounds checks on a malformed structure block and
//! on NOPs, so other modules that read device trees with it (the VM package) open them through
//! [`check_fdt`], which accepts what the walker accepts less the NOPs.

use core::fmt;

use fdt::Fdt;

mod walk;

use walk::{FDT_MAGIC, HEADER_SIZE, Nops, Prop, Tree, be_u32_at, be_u64_at, c_string};

/// Most RAM regions Veil records (QEMU virt has 1, a Raspberry Pi 4 up to 3).
pub const MAX_MEMORY_REGIONS: usize = 8;
/// Most reserved regions Veil records (`/memreserve/` plus `/reserved-memory`).
pub const MAX_RESERVED: usize = 16;
/// Most physical CPUs Veil records.
pub const MAX_CPUS: usize = 8;
/// Deepest node nesting accepted; real trees stay under 8.
pub const MAX_DEPTH: usize = 16;

/// A range of physical addresses. Regions produced by discovery never wrap past 2^64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

impl Region {
    /// One past the last byte (saturating, so a hand-made region cannot wrap).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    pub fn contains(&self, address: u64) -> bool {
        address >= self.base && address - self.base < self.size
    }

    /// Whether the two regions share at least one byte (empty regions overlap nothing).
    pub fn overlaps(&self, other: &Region) -> bool {
        // u128 so that a region reaching the top of the address space compares exactly.
        let (a0, a1) = (self.base as u128, self.base as u128 + self.size as u128);
        let (b0, b1) = (other.base as u128, other.base as u128 + other.size as u128);
        self.size != 0 && other.size != 0 && a0 < b1 && b0 < a1
    }
}

/// A fixed-capacity list, since discovery runs before there is a heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedList<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

/// The list was already full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListFull;

impl<T: Copy + Default, const N: usize> Default for FixedList<T, N> {
    fn default() -> Self {
        Self {
            items: [T::default(); N],
            len: 0,
        }
    }
}

impl<T: Copy + Default, const N: usize> FixedList<T, N> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, item: T) -> Result<(), ListFull> {
        let slot = self.items.get_mut(self.len).ok_or(ListFull)?;
        *slot = item;
        self.len += 1;
        Ok(())
    }

    pub fn as_slice(&self) -> &[T] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    pub fn iter(&self) -> core::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub const fn capacity(&self) -> usize {
        N
    }
}

/// A list of physical regions, e.g. RAM or reserved ranges.
pub type RegionList<const N: usize> = FixedList<Region, N>;

impl<const N: usize> FixedList<Region, N> {
    /// Whether any region in the list contains `address`.
    pub fn contains(&self, address: u64) -> bool {
        self.iter().any(|r| r.contains(address))
    }

    /// Whether any region in the list shares a byte with `region`.
    pub fn overlaps(&self, region: &Region) -> bool {
        self.iter().any(|r| r.overlaps(region))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

/// The host interrupt controller. Addresses are CPU physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicInfo {
    pub version: GicVersion,
    /// GICD.
    pub distributor: Region,
    /// GICC: the v2 CPU interface (a v3 GIC lists it only for legacy guests).
    pub cpu_interface: Option<Region>,
    /// GICH: the v2 hypervisor control interface; `None` without virtualization extensions.
    pub hyp_interface: Option<Region>,
    /// GICV: the v2 virtual CPU interface that guests see as their GICC.
    pub virtual_cpu_interface: Option<Region>,
    /// GICR: the first v3 redistributor region (one frame pair per CPU follows its base).
    pub redistributors: Option<Region>,
    /// INTID of the virtual interface maintenance interrupt.
    pub maintenance_intid: Option<u32>,
}

/// Generic timer interrupts as INTIDs (a PPI n is INTID 16 + n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerInfo {
    pub secure_phys: u32,
    pub nonsecure_phys: u32,
    pub virt: u32,
    pub hyp_phys: u32,
    /// Only with VHE (ARMv8.1); the Pi 4's Cortex-A72 has none.
    pub hyp_virt: Option<u32>,
}

/// The conduit for PSCI calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    Smc,
    Hvc,
}

/// How a secondary CPU is started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI CPU_ON, through [`Platform::psci`].
    Psci,
    /// Write the entry point to `release_addr` and `sev` (the Pi 4's firmware).
    SpinTable { release_addr: u64 },
    /// Absent or a method Veil does not know; such a CPU stays parked.
    #[default]
    Unknown,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// The CPU's `reg`: its MPIDR affinity fields.
    pub mpidr: u64,
    pub enable_method: EnableMethod,
}

/// The CPUs listed under `/cpus`, in tree order.
pub type CpuList = FixedList<CpuInfo, MAX_CPUS>;

/// A PL011 UART (`arm,pl011`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UartInfo {
    pub base: u64,
    pub size: u64,
    /// Its interrupt (an SPI, as the first `interrupts` specifier gives it), for console input.
    pub intid: Option<u32>,
}

/// Everything Veil learns about the host machine from its DTB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform<'a> {
    /// The root `model`, or "" if absent.
    pub model: &'a str,
    /// RAM from every enabled `device_type = "memory"` node; empty entries are left out.
    pub memory: RegionList<MAX_MEMORY_REGIONS>,
    /// `/memreserve/` entries and enabled `/reserved-memory` children that have a `reg`.
    /// Dynamically placed pools (only `size`) are Linux's business and are not listed.
    pub reserved: RegionList<MAX_RESERVED>,
    pub cpus: CpuList,
    /// The PL011 that `/chosen/stdout-path` names, else the first enabled one.
    pub uart: Option<UartInfo>,
    pub gic: Option<GicInfo>,
    pub timer: Option<TimerInfo>,
    pub psci: Option<PsciMethod>,
    /// `/chosen` `linux,initrd-start`/`-end`: where the boot loader put the VM package.
    pub initrd: Option<Region>,
    /// `/chosen/bootargs`: Veil's own command line, or "".
    pub bootargs: &'a str,
    /// The timer node's `clock-frequency`, for firmware that leaves CNTFRQ_EL0 unset.
    pub counter_frequency: Option<u32>,
    /// The first enabled PL031 RTC (`arm,pl031`) with a usable `reg`, for the guests' wall
    /// clock; its size is 4 KiB when the DTB gives none.
    pub rtc: Option<Region>,
}

/// Why a blob is not a device tree Veil can safely read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// Shorter than the 40-byte header.
    TooShort {
        len: usize,
    },
    BadMagic {
        found: u32,
    },
    /// The header's `totalsize` is more than the bytes available.
    Truncated {
        total_size: usize,
        available: usize,
    },
    UnsupportedVersion {
        version: u32,
        last_compatible: u32,
    },
    /// A header offset or size points outside the blob.
    BadLayout(&'static str),
    /// The structure block breaks the format at `offset` (from the block's start).
    BadStructure {
        offset: usize,
        problem: &'static str,
    },
    TooDeep,
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(
                f,
                "the device tree is only {len} bytes long, shorter than its 40-byte header"
            ),
            Self::BadMagic { found } => write!(
                f,
                "this is not a device tree: it starts with {found:#010x} instead of the magic \
                 number 0xd00dfeed"
            ),
            Self::Truncated {
                total_size,
                available,
            } => write!(
                f,
                "the device tree is cut short: its header says {total_size} bytes but only \
                 {available} are there"
            ),
            Self::UnsupportedVersion {
                version,
                last_compatible,
            } => write!(
                f,
                "the device tree has format version {version} (compatible back to \
                 {last_compatible}); Veil reads version 17"
            ),
            Self::BadLayout(what) => write!(f, "the device tree header is inconsistent: {what}"),
            Self::BadStructure { offset, problem } => write!(
                f,
                "the device tree is corrupt at offset {offset:#x} of its structure block: {problem}"
            ),
            Self::TooDeep => {
                write!(
                    f,
                    "the device tree nests nodes more than {MAX_DEPTH} levels deep"
                )
            }
        }
    }
}

/// Why discovery failed. Node names are borrowed from the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryError<'a> {
    /// The blob itself is broken.
    Fdt(FdtError),
    /// More entries than Veil has room for.
    TooMany { what: &'static str, max: usize },
    /// A property Veil needs has a value it cannot use.
    BadProperty {
        node: &'a str,
        property: &'static str,
        problem: &'static str,
    },
    /// `address` in `node` cannot be reached from the CPU: bus `bus` maps no range holding it.
    Untranslatable {
        node: &'a str,
        bus: &'a str,
        address: u64,
    },
}

impl From<FdtError> for DiscoveryError<'_> {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

impl fmt::Display for DiscoveryError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fdt(e) => e.fmt(f),
            Self::TooMany { what, max } => {
                write!(
                    f,
                    "the device tree lists more {what} than Veil supports ({max})"
                )
            }
            Self::BadProperty {
                node,
                property,
                problem,
            } => {
                write!(
                    f,
                    "device tree node `{}`: `{property}` {problem}",
                    shown(node)
                )
            }
            Self::Untranslatable { node, bus, address } => write!(
                f,
                "device tree node `{}`: address {address:#x} is not reachable from the CPU \
                 (bus `{}` maps no range that holds it)",
                shown(node),
                shown(bus)
            ),
        }
    }
}

/// The root node's name is empty; users know it as `/`.
fn shown(name: &str) -> &str {
    if name.is_empty() { "/" } else { name }
}

/// Reads the total size from a DTB header (at least its first 8 bytes), after checking the
/// magic number, so that the caller can map exactly the blob. `None` if it is not a DTB.
/// The size is the header's claim: bound it before mapping that much.
pub fn fdt_total_size(header: &[u8]) -> Option<usize> {
    if be_u32_at(header, 0)? != FDT_MAGIC {
        return None;
    }
    let size = usize::try_from(be_u32_at(header, 4)?).ok()?;
    (size >= HEADER_SIZE).then_some(size)
}

/// Checks that `blob` is a device tree the `fdt` crate can walk without panicking, and opens
/// it. The blob may be longer than the tree (a boot loader rounds sizes up); the rest is ignored.
///
/// Accepted is what dtc, libfdt and QEMU write: version 17, every block inside `totalsize`,
/// properties before child nodes, and no `FDT_NOP` tokens (the crate asserts on those).
/// [`Platform::from_fdt`] accepts the same trees and those with NOPs.
pub fn check_fdt(blob: &[u8]) -> Result<Fdt<'_>, FdtError> {
    let tree = Tree::new(blob)?;
    walk::walk(&tree, Nops::Refuse, &mut |_| {})?;
    Fdt::new(tree.blob).map_err(|_| FdtError::BadLayout("the fdt crate refused the header"))
}

/// A number of `cells` (1 or 2) 32-bit big-endian cells that fill `bytes` exactly.
fn cells_value(bytes: &[u8], cells: u32) -> Option<u64> {
    match (cells, bytes.len()) {
        (0, 0) => Some(0),
        (1, 4) => be_u32_at(bytes, 0).map(u64::from),
        (2, 8) => be_u64_at(bytes, 0),
        _ => None,
    }
}

/// Splits `cells` cells off the front of `bytes`.
fn take_cells(bytes: &[u8], cells: u32) -> Option<(&[u8], &[u8])> {
    let n = usize::try_from(cells).ok()?.checked_mul(4)?;
    (n <= bytes.len()).then(|| bytes.split_at(n))
}

fn bad<'a>(node: &'a str, property: &'static str, problem: &'static str) -> DiscoveryError<'a> {
    DiscoveryError::BadProperty {
        node,
        property,
        problem,
    }
}

/// A property that must be one 32-bit cell, if present.
fn u32_value<'a>(
    node: &'a str,
    name: &'static str,
    value: Option<&[u8]>,
) -> Result<Option<u32>, DiscoveryError<'a>> {
    value
        .map(|v| {
            let one_cell = (v.len() == 4).then(|| be_u32_at(v, 0)).flatten();
            one_cell.ok_or(bad(node, name, "is not one 32-bit cell"))
        })
        .transpose()
}

/// A property that is an address of one or two cells (firmware writes either), if present.
fn u64_value<'a>(
    node: &'a str,
    name: &'static str,
    value: Option<&[u8]>,
) -> Result<Option<u64>, DiscoveryError<'a>> {
    value
        .map(|v| {
            cells_value(v, 1).or_else(|| cells_value(v, 2)).ok_or(bad(
                node,
                name,
                "is not a 32- or 64-bit number",
            ))
        })
        .transpose()
}

/// A string property (the first string of a list), if present. An empty value reads as "".
fn str_value<'a>(
    node: &'a str,
    name: &'static str,
    value: Option<&'a [u8]>,
) -> Result<Option<&'a str>, DiscoveryError<'a>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(Some(""));
    }
    c_string(value)
        .and_then(|s| core::str::from_utf8(s).ok())
        .map(Some)
        .ok_or(bad(node, name, "is not a text string"))
}

/// The devices discovery looks for, as named by a node's `compatible` list; a set of bits.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Kinds(u8);

impl Kinds {
    const GIC_V2: Kinds = Kinds(1 << 0);
    const GIC_V3: Kinds = Kinds(1 << 1);
    const TIMER: Kinds = Kinds(1 << 2);
    const PSCI: Kinds = Kinds(1 << 3);
    const PL011: Kinds = Kinds(1 << 4);
    const PL031: Kinds = Kinds(1 << 5);

    /// What any string of a `compatible` value names, in one pass over it. Every name looked
    /// for starts with "arm,", which most strings (virtio, vendors') fail at once.
    fn of(compatible: &[u8]) -> Kinds {
        let mut kinds = 0;
        for name in compatible.split(|&b| b == 0) {
            let Some((b"arm,", name)) = name.split_first_chunk::<4>() else {
                continue;
            };
            kinds |= match name {
                b"gic-400" | b"cortex-a15-gic" | b"cortex-a7-gic" => Self::GIC_V2.0,
                b"gic-v3" => Self::GIC_V3.0,
                b"armv8-timer" | b"armv7-timer" => Self::TIMER.0,
                b"psci-1.0" | b"psci-0.2" | b"psci" => Self::PSCI.0,
                b"pl011" => Self::PL011.0,
                b"pl031" => Self::PL031.0,
                _ => 0,
            };
        }
        Kinds(kinds)
    }

    fn any(self, of: Kinds) -> bool {
        self.0 & of.0 != 0
    }
}

/// One node on the path from the root to the node being looked at: what its children need.
#[derive(Clone, Copy, Default)]
struct Level<'a> {
    /// `None` only in the unused entries (so that the path array starts as zeros); read
    /// through [`Level::name`].
    name: Option<&'a str>,
    address_cells: Option<&'a [u8]>,
    size_cells: Option<&'a [u8]>,
    ranges: Option<&'a [u8]>,
    /// Only read for `/cpus`, whose CPUs inherit it.
    enable_method: Option<&'a [u8]>,
}

impl<'a> Level<'a> {
    fn name(&self) -> &'a str {
        self.name.unwrap_or("")
    }
}

/// The `#address-cells` / `#size-cells` a node declares for its children.
#[derive(Clone, Copy)]
struct Cells {
    address: u32,
    size: u32,
}

impl Cells {
    /// The defaults when a node says nothing are the spec's: 2 address cells, 1 size cell.
    fn of<'a>(node: &Level<'a>) -> Result<Self, DiscoveryError<'a>> {
        Ok(Self {
            address: u32_value(node.name(), "#address-cells", node.address_cells)?.unwrap_or(2),
            size: u32_value(node.name(), "#size-cells", node.size_cells)?.unwrap_or(1),
        })
    }

    /// For decoding addresses and sizes Veil uses, which must fit in a u64.
    fn usable<'a>(node: &Level<'a>) -> Result<Self, DiscoveryError<'a>> {
        let cells = Self::of(node)?;
        if cells.address == 0 || cells.address > 2 {
            return Err(bad(
                node.name(),
                "#address-cells",
                "is not 1 or 2, so Veil cannot use its addresses",
            ));
        }
        if cells.size > 2 {
            return Err(bad(
                node.name(),
                "#size-cells",
                "is more than 2, so Veil cannot use its sizes",
            ));
        }
        Ok(cells)
    }
}

/// The node being looked at, with the path to it.
struct At<'s, 'a> {
    /// Root first, the node itself last.
    path: &'s [Level<'a>],
    /// The node's `reg`.
    reg: Option<&'a [u8]>,
}

impl<'a> At<'_, 'a> {
    fn name(&self) -> &'a str {
        self.path.last().map_or("", Level::name)
    }

    fn parent(&self) -> Option<&Level<'a>> {
        self.path.get(self.path.len().checked_sub(2)?)
    }

    /// How many `reg` entries the node has.
    fn reg_count(&self) -> Result<usize, DiscoveryError<'a>> {
        Ok(self
            .reg_layout()?
            .map_or(0, |(value, entry)| value.len() / entry))
    }

    /// Entry `index` of the node's `reg`, translated to a CPU physical address.
    fn reg(&self, index: usize) -> Result<Option<Region>, DiscoveryError<'a>> {
        let Some(parent) = self.parent() else {
            return Ok(None);
        };
        let Some((value, entry_len)) = self.reg_layout()? else {
            return Ok(None);
        };
        let cells = Cells::usable(parent)?;
        let start = index.checked_mul(entry_len);
        let Some(entry) = start.and_then(|at| value.get(at..at.checked_add(entry_len)?)) else {
            return Ok(None);
        };
        let node = self.name();
        let (address, size) =
            take_cells(entry, cells.address).ok_or(bad(node, "reg", "is cut short"))?;
        let address =
            cells_value(address, cells.address).ok_or(bad(node, "reg", "is cut short"))?;
        let size = cells_value(size, cells.size).ok_or(bad(node, "reg", "is cut short"))?;
        self.translate(address, size).map(Some)
    }

    /// The `reg` bytes and the length of one entry; checks the value is whole entries.
    fn reg_layout(&self) -> Result<Option<(&'a [u8], usize)>, DiscoveryError<'a>> {
        let (Some(parent), Some(reg)) = (self.parent(), self.reg) else {
            return Ok(None);
        };
        let cells = Cells::usable(parent)?;
        let entry_len = (cells.address + cells.size) as usize * 4;
        if !reg.len().is_multiple_of(entry_len) {
            return Err(bad(
                self.name(),
                "reg",
                "is not a whole number of (address, size) entries",
            ));
        }
        Ok(Some((reg, entry_len)))
    }

    /// Carries a region from the node's parent bus up to the root, through every bus's
    /// `ranges`. An empty `ranges` is an identity mapping; no `ranges` means the bus is not
    /// memory-mapped at all.
    fn translate(&self, mut address: u64, size: u64) -> Result<Region, DiscoveryError<'a>> {
        let node = self.name();
        for depth in (1..self.path.len().saturating_sub(1)).rev() {
            let (Some(bus), Some(above)) = (self.path.get(depth), self.path.get(depth - 1)) else {
                continue;
            };
            let unreachable = DiscoveryError::Untranslatable {
                node,
                bus: bus.name(),
                address,
            };
            let ranges = bus.ranges.ok_or(unreachable)?;
            if ranges.is_empty() {
                continue;
            }
            let child = Cells::usable(bus)?;
            let parent_cells = Cells::usable(above)?.address;
            let entry_len = (child.address + parent_cells + child.size) as usize * 4;
            if !ranges.len().is_multiple_of(entry_len) {
                return Err(bad(
                    bus.name(),
                    "ranges",
                    "is not a whole number of (child, parent, size) entries",
                ));
            }
            let mut mapped = None;
            for entry in ranges.chunks_exact(entry_len) {
                let (child_base, rest) = take_cells(entry, child.address).unwrap_or_default();
                let (parent_base, len) = take_cells(rest, parent_cells).unwrap_or_default();
                let short = bad(bus.name(), "ranges", "is cut short");
                let child_base = cells_value(child_base, child.address).ok_or(short)?;
                let parent_base = cells_value(parent_base, parent_cells).ok_or(short)?;
                let len = cells_value(len, child.size).ok_or(short)?;
                let Some(offset) = address.checked_sub(child_base) else {
                    continue;
                };
                // The whole region must sit in the window, not just its first byte.
                if offset.checked_add(size).is_some_and(|end| end <= len) {
                    mapped = Some(parent_base.checked_add(offset).ok_or(unreachable)?);
                    break;
                }
            }
            address = mapped.ok_or(unreachable)?;
        }
        match address.checked_add(size) {
            Some(_) => Ok(Region {
                base: address,
                size,
            }),
            None => Err(DiscoveryError::BadProperty {
                node,
                property: "reg",
                problem: "describes a region past the end of the 64-bit address space",
            }),
        }
    }
}

/// Whether the node whose path is `names` (the root's child first) is the node at `path`
/// ("/soc/serial@7e201000"); a component without a unit address matches any unit address, as
/// in the spec.
fn is_at<'n>(mut names: impl Iterator<Item = &'n [u8]>, path: &str) -> bool {
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    loop {
        match (names.next(), parts.next()) {
            (None, None) => return true,
            (Some(name), Some(part)) => {
                let part = part.as_bytes();
                let matches = name == part
                    || (!part.contains(&b'@') && name.split(|&b| b == b'@').next() == Some(part));
                if !matches {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// An interrupt specifier's first two cells (<type number ...>) as an INTID.
fn intid(kind: u32, number: u32) -> Option<u32> {
    match kind {
        0 if number < 988 => Some(32 + number), // SPI
        1 if number < 16 => Some(16 + number),  // PPI
        _ => None,
    }
}

/// The INTIDs in an `interrupts` value with `cells` cells per specifier.
fn intids<'a>(value: &'a [u8], cells: u32) -> impl Iterator<Item = Option<u32>> + 'a {
    let len = (cells as usize * 4).max(4);
    value.chunks(len).map(move |spec| {
        if spec.len() < 8 || spec.len() != len {
            None
        } else {
            intid(be_u32_at(spec, 0)?, be_u32_at(spec, 4)?)
        }
    })
}

/// Most enabled PL011s remembered until `/chosen/stdout-path` (often near the end of the tree)
/// says which one is the console; one past this is never picked by that path.
const MAX_UARTS: usize = 8;

/// An enabled PL011 and the node names of its path (the root's child first), as offsets of
/// the names in the structure block: a quarter of the room of the names themselves. Plain
/// integers only (`intid` 0 for none: INTID 0 is an SGI, never a UART's), so that a list of
/// them starts as zeroed memory rather than as copies of a template.
#[derive(Clone, Copy, Default)]
struct UartCandidate {
    base: u64,
    size: u64,
    intid: u32,
    depth: u32,
    path: [u32; MAX_DEPTH],
}

impl UartCandidate {
    fn uart(&self) -> UartInfo {
        UartInfo {
            base: self.base,
            size: self.size,
            intid: (self.intid != 0).then_some(self.intid),
        }
    }
}

/// The walk's visitor: the path to the node being looked at, and what has been found.
struct Collector<'a> {
    /// Root first; entries past the node's depth are stale.
    path: [Level<'a>; MAX_DEPTH],
    found: Found<'a>,
}

/// The state that builds up while the tree is walked.
struct Found<'a> {
    platform: Platform<'a>,
    /// The first thing wrong in a tree whose structure may still turn out broken: a broken
    /// structure is reported first, then this.
    error: Option<DiscoveryError<'a>>,
    chosen_seen: bool,
    /// `/chosen/stdout-path` (or `linux,stdout-path`) up to any ':': a path or an alias.
    stdout: Option<&'a str>,
    /// The properties of `/aliases`, to resolve `stdout` once the walk is done.
    aliases: Option<walk::Span>,
    uarts: FixedList<UartCandidate, MAX_UARTS>,
    /// Where the structure block starts, for [`UartCandidate::path`].
    structs: usize,
    first_uart: Option<UartInfo>,
    /// The GIC's `#interrupt-cells`, needed to read the timer's interrupts.
    gic_interrupt_cells: Option<u32>,
    /// The timer node's name and `interrupts`, read once the GIC is known.
    timer_interrupts: Option<(&'a str, &'a [u8])>,
}

impl<'a> Collector<'a> {
    fn node(&mut self, node: &walk::Node<'_, 'a>) {
        let p = node.props;
        let Some(level) = self.path.get_mut(node.depth.wrapping_sub(1)) else {
            return;
        };
        *level = Level {
            name: Some(node.name),
            address_cells: p.get(Prop::AddressCells),
            size_cells: p.get(Prop::SizeCells),
            ranges: p.get(Prop::Ranges),
            enable_method: p.get(Prop::EnableMethod),
        };
        let path = self.path.get(..node.depth).unwrap_or_default();
        if self.found.error.is_none()
            && let Err(e) = self.found.visit(path, node)
        {
            self.found.error = Some(e);
        }
    }
}

impl<'a> Found<'a> {
    fn visit(
        &mut self,
        path: &[Level<'a>],
        node: &walk::Node<'_, 'a>,
    ) -> Result<(), DiscoveryError<'a>> {
        let (p, name, depth) = (node.props, node.name, node.depth);
        let at = At {
            path,
            reg: p.get(Prop::Reg),
        };
        // The root, /chosen and /aliases are read whatever their status.
        if depth == 1 {
            self.platform.model = str_value(name, "model", p.get(Prop::Model))?.unwrap_or("");
        }
        if depth == 2 && name == "chosen" && !self.chosen_seen {
            self.chosen_seen = true;
            self.platform.bootargs =
                str_value(name, "bootargs", p.get(Prop::Bootargs))?.unwrap_or("");
            self.platform.initrd = initrd(name, p)?;
            let path = match str_value(name, "stdout-path", p.get(Prop::StdoutPath))? {
                Some(path) => Some(path),
                None => str_value(name, "linux,stdout-path", p.get(Prop::LinuxStdoutPath))?,
            };
            // "serial1:115200n8": the part before ':' is a path or an alias of one.
            self.stdout = path.and_then(|p| p.split(':').next());
        }
        if depth == 2 && name == "aliases" && self.aliases.is_none() {
            self.aliases = Some(node.span);
        }
        if p.get(Prop::Status)
            .is_some_and(|s| !matches!(c_string(s), Some(b"okay") | Some(b"ok")))
        {
            return Ok(());
        }
        let device_type = p.get(Prop::DeviceType).and_then(c_string);
        if device_type == Some(b"memory") {
            for index in 0..at.reg_count()? {
                if let Some(region) = at.reg(index)?.filter(|r| r.size != 0) {
                    self.platform
                        .memory
                        .push(region)
                        .map_err(|_| DiscoveryError::TooMany {
                            what: "memory regions",
                            max: MAX_MEMORY_REGIONS,
                        })?;
                }
            }
        }
        let under = |parent: &str| depth == 3 && path.get(1).is_some_and(|n| n.name() == parent);
        if under("reserved-memory") {
            for index in 0..at.reg_count()? {
                if let Some(region) = at.reg(index)?.filter(|r| r.size != 0) {
                    self.push_reserved(region)?;
                }
            }
        }
        if under("cpus") && device_type == Some(b"cpu") {
            self.cpu(&at, p)?;
        }
        let kinds = p.get(Prop::Compatible).map(Kinds::of).unwrap_or_default();
        if kinds == Kinds::default() {
            return Ok(());
        }
        let is = |kind: Kinds| kinds.any(kind);
        if self.platform.gic.is_none() && (is(Kinds::GIC_V2) || is(Kinds::GIC_V3)) {
            self.gic(&at, p, is(Kinds::GIC_V3))?;
        }
        if self.timer_interrupts.is_none() && is(Kinds::TIMER) {
            let interrupts =
                p.get(Prop::Interrupts)
                    .ok_or(bad(name, "interrupts", "is missing"))?;
            self.timer_interrupts = Some((name, interrupts));
            self.platform.counter_frequency =
                u32_value(name, "clock-frequency", p.get(Prop::ClockFrequency))?;
        }
        if self.platform.psci.is_none() && is(Kinds::PSCI) {
            self.platform.psci = match str_value(name, "method", p.get(Prop::Method))? {
                Some("smc") => Some(PsciMethod::Smc),
                Some("hvc") => Some(PsciMethod::Hvc),
                _ => return Err(bad(name, "method", "is not \"smc\" or \"hvc\"")),
            };
        }
        if is(Kinds::PL011) {
            let region = at.reg(0)?.ok_or(bad(name, "reg", "is missing"))?;
            let uart = UartInfo {
                base: region.base,
                size: region.size,
                intid: p.get(Prop::Interrupts).and_then(spi),
            };
            self.first_uart.get_or_insert(uart);
            let mut candidate = UartCandidate {
                base: uart.base,
                size: uart.size,
                intid: uart.intid.unwrap_or(0),
                depth: (depth - 1) as u32,
                ..UartCandidate::default()
            };
            for (slot, level) in candidate.path.iter_mut().zip(path.iter().skip(1)) {
                *slot = (level.name().as_ptr() as usize).wrapping_sub(self.structs) as u32;
            }
            // Past MAX_UARTS the stdout-path cannot pick it; the first UART is kept above.
            let _ = self.uarts.push(candidate);
        }
        // The RTC is a nicety (the guests' wall clock): one Veil cannot place is left out.
        if self.platform.rtc.is_none()
            && is(Kinds::PL031)
            && let Ok(Some(region)) = at.reg(0)
        {
            let size = if region.size == 0 {
                0x1000
            } else {
                region.size
            };
            self.platform.rtc = Some(Region { size, ..region });
        }
        Ok(())
    }

    fn push_reserved(&mut self, region: Region) -> Result<(), DiscoveryError<'a>> {
        self.platform
            .reserved
            .push(region)
            .map_err(|_| DiscoveryError::TooMany {
                what: "reserved memory regions",
                max: MAX_RESERVED,
            })
    }

    fn cpu(&mut self, at: &At<'_, 'a>, p: &walk::Props<'a>) -> Result<(), DiscoveryError<'a>> {
        let Some(cpus) = at.parent() else {
            return Ok(());
        };
        let node = at.name();
        let cells = Cells::usable(cpus)?;
        let reg = p.get(Prop::Reg).ok_or(bad(node, "reg", "is missing"))?;
        let mpidr = take_cells(reg, cells.address)
            .and_then(|(first, _)| cells_value(first, cells.address))
            .ok_or(bad(node, "reg", "is cut short"))?;
        // A CPU without its own method inherits the one on /cpus, as Linux does.
        let method = match str_value(node, "enable-method", p.get(Prop::EnableMethod))? {
            Some(method) => Some(method),
            None => str_value(cpus.name(), "enable-method", cpus.enable_method)?,
        };
        let enable_method = match method {
            Some("psci") => EnableMethod::Psci,
            Some("spin-table") => EnableMethod::SpinTable {
                release_addr: u64_value(node, "cpu-release-addr", p.get(Prop::CpuReleaseAddr))?
                    .ok_or(bad(
                        node,
                        "cpu-release-addr",
                        "is missing for a spin-table CPU",
                    ))?,
            },
            _ => EnableMethod::Unknown,
        };
        self.platform
            .cpus
            .push(CpuInfo {
                mpidr,
                enable_method,
            })
            .map_err(|_| DiscoveryError::TooMany {
                what: "CPUs",
                max: MAX_CPUS,
            })
    }

    fn gic(
        &mut self,
        at: &At<'_, 'a>,
        p: &walk::Props<'a>,
        v3: bool,
    ) -> Result<(), DiscoveryError<'a>> {
        let node = at.name();
        let version = if v3 { GicVersion::V3 } else { GicVersion::V2 };
        let cells = u32_value(node, "#interrupt-cells", p.get(Prop::InterruptCells))?.unwrap_or(3);
        if !(3..=4).contains(&cells) {
            return Err(bad(node, "#interrupt-cells", "is not 3 or 4"));
        }
        self.gic_interrupt_cells = Some(cells);
        let maintenance_intid = match p.get(Prop::Interrupts) {
            None => None,
            Some(value) => Some(intids(value, cells).next().flatten().ok_or(bad(
                node,
                "interrupts",
                "is not a valid SPI or PPI",
            ))?),
        };
        let distributor = at
            .reg(0)?
            .ok_or(bad(node, "reg", "has no distributor (GICD) entry"))?;
        // v3: GICD, then #redistributor-regions GICR entries, then the optional legacy GICC,
        // GICH, GICV. v2: GICD, GICC, and GICH, GICV with virtualization extensions.
        let (redistributors, cpu_index) = match version {
            GicVersion::V3 => {
                let regions = u32_value(
                    node,
                    "#redistributor-regions",
                    p.get(Prop::RedistributorRegions),
                )?
                .unwrap_or(1) as usize;
                let first =
                    at.reg(1)?
                        .ok_or(bad(node, "reg", "has no redistributor (GICR) entry"))?;
                (Some(first), regions.saturating_add(1))
            }
            GicVersion::V2 => (None, 1),
        };
        let cpu_interface = at.reg(cpu_index)?;
        if version == GicVersion::V2 && cpu_interface.is_none() {
            return Err(bad(node, "reg", "has no CPU interface (GICC) entry"));
        }
        self.platform.gic = Some(GicInfo {
            version,
            distributor,
            cpu_interface,
            hyp_interface: at.reg(cpu_index.saturating_add(1))?,
            virtual_cpu_interface: at.reg(cpu_index.saturating_add(2))?,
            redistributors,
            maintenance_intid,
        });
        Ok(())
    }

    /// The timer's interrupts: secure physical, non-secure physical, virtual, hypervisor
    /// physical and (with VHE) hypervisor virtual, in that order.
    fn timer(&self) -> Result<Option<TimerInfo>, DiscoveryError<'a>> {
        let Some((node, value)) = self.timer_interrupts else {
            return Ok(None);
        };
        let cells = self.gic_interrupt_cells.unwrap_or(3);
        let wrong = DiscoveryError::BadProperty {
            node,
            property: "interrupts",
            problem: "is not 4 or 5 valid PPI or SPI specifiers",
        };
        let mut found = [0u32; 5];
        let mut count = 0;
        for intid in intids(value, cells) {
            *found.get_mut(count).ok_or(wrong)? = intid.ok_or(wrong)?;
            count += 1;
        }
        if count < 4 {
            return Err(wrong);
        }
        let [secure_phys, nonsecure_phys, virt, hyp_phys, hyp_virt] = found;
        Ok(Some(TimerInfo {
            secure_phys,
            nonsecure_phys,
            virt,
            hyp_phys,
            hyp_virt: (count == 5).then_some(hyp_virt),
        }))
    }

    /// The UART `/chosen/stdout-path` leads to (aliases resolved), else the first enabled one.
    /// The Pi firmware's stdout-path names the mini UART; Veil drives only PL011s.
    fn console(&self, tree: &Tree<'a>) -> Option<UartInfo> {
        let path = match self.stdout {
            Some(alias) if !alias.starts_with('/') => match self.aliases {
                Some(aliases) if !alias.is_empty() => tree
                    .find(aliases, alias)
                    .and_then(|v| c_string(v).and_then(|s| core::str::from_utf8(s).ok())),
                _ => None,
            },
            path => path,
        };
        let name = |offset: u32| {
            let at = tree.structs.get(offset as usize..).unwrap_or_default();
            c_string(at).unwrap_or_default()
        };
        let stdout = path.and_then(|path| {
            self.uarts
                .iter()
                .filter(|c| is_at(c.path.iter().take(c.depth as usize).map(|&o| name(o)), path))
                .last()
        });
        stdout.map(UartCandidate::uart).or(self.first_uart)
    }
}

/// A UART's `interrupts` as Veil reads it for console input: an SPI, as its first specifier.
fn spi(interrupts: &[u8]) -> Option<u32> {
    match (be_u32_at(interrupts, 0)?, be_u32_at(interrupts, 4)?) {
        (0, number) => intid(0, number),
        _ => None,
    }
}

impl<'a> Platform<'a> {
    /// Reads the platform from a DTB, in one walk of its structure block. `blob` may extend
    /// past the tree's `totalsize`. A tree whose structure is broken is reported as such even
    /// where a bad value comes earlier in it.
    pub fn from_fdt(blob: &'a [u8]) -> Result<Self, DiscoveryError<'a>> {
        let tree = Tree::new(blob)?;
        let found = Found {
            platform: Platform {
                model: "",
                memory: RegionList::new(),
                reserved: RegionList::new(),
                cpus: CpuList::new(),
                uart: None,
                gic: None,
                timer: None,
                psci: None,
                initrd: None,
                bootargs: "",
                counter_frequency: None,
                rtc: None,
            },
            error: None,
            chosen_seen: false,
            stdout: None,
            aliases: None,
            uarts: FixedList::new(),
            structs: tree.structs.as_ptr() as usize,
            first_uart: None,
            gic_interrupt_cells: None,
            timer_interrupts: None,
        };
        // Built where it stays: the collector is a few KiB, and moves are copies.
        let mut collector = Collector {
            path: [Level::default(); MAX_DEPTH],
            found,
        };
        let found = &mut collector.found;
        for region in memory_reservations(tree.blob, tree.mem_rsvmap) {
            if let Err(e) = region.and_then(|r| found.push_reserved(r)) {
                found.error = Some(e);
                break;
            }
        }
        walk::walk(&tree, Nops::Skip, &mut |node| collector.node(node))?;
        let found = &mut collector.found;
        if let Some(e) = found.error {
            return Err(e);
        }
        found.platform.timer = found.timer()?;
        found.platform.uart = found.console(&tree);
        Ok(collector.found.platform)
    }
}

/// `linux,initrd-start` and `linux,initrd-end` (exclusive), in 32- or 64-bit cells.
fn initrd<'a>(chosen: &'a str, p: &walk::Props<'a>) -> Result<Option<Region>, DiscoveryError<'a>> {
    let start = u64_value(chosen, "linux,initrd-start", p.get(Prop::InitrdStart))?;
    let end = u64_value(chosen, "linux,initrd-end", p.get(Prop::InitrdEnd))?;
    match (start, end) {
        (None, None) => Ok(None),
        (Some(start), Some(end)) => end
            .checked_sub(start)
            .map(|size| Some(Region { base: start, size }))
            .ok_or(bad(
                chosen,
                "linux,initrd-end",
                "is before linux,initrd-start",
            )),
        (Some(_), None) => Err(bad(chosen, "linux,initrd-end", "is missing")),
        (None, Some(_)) => Err(bad(chosen, "linux,initrd-start", "is missing")),
    }
}

/// The `/memreserve/` entries (already checked to end inside the blob); empty ones skipped.
fn memory_reservations<'a>(
    blob: &[u8],
    start: usize,
) -> impl Iterator<Item = Result<Region, DiscoveryError<'a>>> + '_ {
    (start..blob.len())
        .step_by(16)
        .map_while(move |at| Some((be_u64_at(blob, at)?, be_u64_at(blob, at + 8)?)))
        .take_while(|&entry| entry != (0, 0))
        .filter(|&(_, size)| size != 0)
        .map(|(base, size)| match base.checked_add(size) {
            Some(_) => Ok(Region { base, size }),
            None => Err(DiscoveryError::Fdt(FdtError::BadLayout(
                "a /memreserve/ entry runs past the end of the address space",
            ))),
        })
}

#[cfg(test)]
mod tests {
    use super::walk::{FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_NOP, FDT_PROP};
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;
    use vm_fdt::FdtWriter;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/",
                $name
            ))
            .as_slice()
        };
    }

    const FIXTURES: &[&[u8]] = &[
        fixture!("qemu-virt-gicv3.dtb"),
        fixture!("qemu-virt-gicv2.dtb"),
        fixture!("qemu-virt-gicv3-initrd.dtb"),
        fixture!("qemu-virt-gicv2-initrd.dtb"),
        fixture!("bcm2711-rpi-4-b.dtb"),
        fixture!("bcm2711-rpi-4-b-booted.dtb"),
        fixture!("qemu-raspi4b.dtb"),
    ];

    fn region(base: u64, size: u64) -> Region {
        Region { base, size }
    }

    fn qemu_timer() -> TimerInfo {
        TimerInfo {
            secure_phys: 29,
            nonsecure_phys: 30,
            virt: 27,
            hyp_phys: 26,
            hyp_virt: Some(28),
        }
    }

    fn assert_qemu_common(p: &Platform<'_>) {
        assert_eq!(p.model, "linux,dummy-virt");
        assert_eq!(p.memory.as_slice(), &[region(0x4000_0000, 0x4000_0000)]);
        assert!(p.reserved.is_empty());
        assert_eq!(p.cpus.len(), 4);
        for (i, cpu) in p.cpus.iter().enumerate() {
            assert_eq!(
                *cpu,
                CpuInfo {
                    mpidr: i as u64,
                    enable_method: EnableMethod::Psci
                }
            );
        }
        assert_eq!(p.psci, Some(PsciMethod::Smc));
        assert_eq!(
            p.uart,
            Some(UartInfo {
                base: 0x0900_0000,
                size: 0x1000,
                intid: Some(33)
            })
        );
        assert_eq!(p.timer, Some(qemu_timer()));
        assert_eq!(p.counter_frequency, None);
        assert_eq!(p.rtc, Some(region(0x0901_0000, 0x1000)));
    }

    #[test]
    fn qemu_virt_gicv3() {
        let p = Platform::from_fdt(fixture!("qemu-virt-gicv3.dtb")).unwrap();
        assert_qemu_common(&p);
        let gic = GicInfo {
            version: GicVersion::V3,
            distributor: region(0x0800_0000, 0x1_0000),
            cpu_interface: None,
            hyp_interface: None,
            virtual_cpu_interface: None,
            redistributors: Some(region(0x080a_0000, 0xf6_0000)),
            maintenance_intid: Some(25),
        };
        assert_eq!(p.gic, Some(gic));
        assert_eq!((p.initrd, p.bootargs), (None, ""));
    }

    #[test]
    fn qemu_virt_gicv2() {
        let p = Platform::from_fdt(fixture!("qemu-virt-gicv2.dtb")).unwrap();
        assert_qemu_common(&p);
        let gic = GicInfo {
            version: GicVersion::V2,
            distributor: region(0x0800_0000, 0x1_0000),
            cpu_interface: Some(region(0x0801_0000, 0x1_0000)),
            hyp_interface: Some(region(0x0803_0000, 0x1_0000)),
            virtual_cpu_interface: Some(region(0x0804_0000, 0x1_0000)),
            redistributors: None,
            maintenance_intid: Some(25),
        };
        assert_eq!(p.gic, Some(gic));
    }

    #[test]
    fn qemu_puts_initrd_and_bootargs_in_chosen() {
        for blob in [
            fixture!("qemu-virt-gicv3-initrd.dtb"),
            fixture!("qemu-virt-gicv2-initrd.dtb"),
        ] {
            let p = Platform::from_fdt(blob).unwrap();
            assert_qemu_common(&p);
            // QEMU writes 64-bit cells; the test's initrd file was 200000 bytes.
            assert_eq!(p.initrd, Some(region(0x4800_0000, 200_000)));
            assert_eq!(p.bootargs, "veil.exit=semihosting veil.log=debug");
        }
    }

    fn assert_rpi4_common(p: &Platform<'_>) {
        assert_eq!(p.model, "Raspberry Pi 4 Model B");
        // /memreserve/ keeps the firmware's spin-table page; nvram@0 is disabled.
        assert_eq!(p.reserved.as_slice(), &[region(0, 0x1000)]);
        let release: Vec<_> = p.cpus.iter().map(|c| (c.mpidr, c.enable_method)).collect();
        let spin = |a| EnableMethod::SpinTable { release_addr: a };
        assert_eq!(
            release,
            [
                (0, spin(0xd8)),
                (1, spin(0xe0)),
                (2, spin(0xe8)),
                (3, spin(0xf0))
            ]
        );
        assert_eq!(p.psci, None);
        let gic = GicInfo {
            version: GicVersion::V2,
            distributor: region(0xff84_1000, 0x1000),
            cpu_interface: Some(region(0xff84_2000, 0x2000)),
            hyp_interface: Some(region(0xff84_4000, 0x2000)),
            virtual_cpu_interface: Some(region(0xff84_6000, 0x2000)),
            redistributors: None,
            maintenance_intid: Some(25),
        };
        assert_eq!(p.gic, Some(gic));
        // stdout-path is "serial1:115200n8", the mini UART; the first enabled PL011 is used.
        assert_eq!(
            p.uart,
            Some(UartInfo {
                base: 0xfe20_1000,
                size: 0x200,
                intid: Some(32 + 0x79)
            })
        );
        let timer = TimerInfo {
            hyp_virt: None,
            ..qemu_timer()
        };
        assert_eq!(p.timer, Some(timer));
        assert_eq!(p.rtc, None);
    }

    #[test]
    fn rpi4_as_shipped_has_no_memory_yet() {
        let p = Platform::from_fdt(fixture!("bcm2711-rpi-4-b.dtb")).unwrap();
        assert_rpi4_common(&p);
        assert!(p.memory.is_empty(), "the firmware fills in memory@0's size");
        assert_eq!((p.initrd, p.bootargs), (None, ""));
    }

    #[test]
    fn rpi4_as_the_firmware_hands_it_over() {
        let p = Platform::from_fdt(fixture!("bcm2711-rpi-4-b-booted.dtb")).unwrap();
        assert_rpi4_common(&p);
        assert_eq!(
            p.memory.as_slice(),
            &[region(0, 0x3b40_0000), region(0x4000_0000, 0x4000_0000)]
        );
        // 32-bit initrd cells, as the Pi firmware writes them.
        assert_eq!(p.initrd, Some(region(0x2a0_0000, 0x10_a5c0)));
        assert_eq!(p.bootargs, "veil.log=debug");
        assert!(p.memory.contains(0x7fff_ffff) && !p.memory.contains(0x3b40_0000));
    }

    /// QEMU's raspi4b loads the -dtb file and rewrites it: it fills in memory@0 (the RAM below
    /// the VideoCore's share only), adds /chosen, and deletes nodes it does not model.
    #[test]
    fn rpi4_as_qemu_raspi4b_hands_it_over() {
        let p = Platform::from_fdt(fixture!("qemu-raspi4b.dtb")).unwrap();
        assert_rpi4_common(&p);
        assert_eq!(p.memory.as_slice(), &[region(0, 0x3c00_0000)]);
        assert_eq!(p.initrd, Some(region(0x800_0000, 200_000)));
        assert_eq!(p.bootargs, "veil.log=debug");
    }

    #[test]
    fn total_size_from_header() {
        assert_eq!(fdt_total_size(fixture!("qemu-virt-gicv3.dtb")), Some(8122));
        assert_eq!(
            fdt_total_size(&fixture!("qemu-virt-gicv3.dtb")[..8]),
            Some(8122)
        );
        assert_eq!(fdt_total_size(&fixture!("qemu-virt-gicv3.dtb")[..7]), None);
        assert_eq!(fdt_total_size(&[0; 64]), None);
        assert_eq!(fdt_total_size(&[0xd0, 0x0d, 0xfe, 0xed, 0, 0, 0, 8]), None);
    }

    /// The walker reads words when the blob is 4-byte aligned in memory and bytes when not;
    /// both must see the same tree, and refuse the same corruptions.
    #[test]
    fn unaligned_blobs_read_the_same() {
        let mut buffer = alloc::vec![0u8; 32 * 1024];
        let aligned = buffer.as_ptr().align_offset(8);
        let bytes = &mut buffer[aligned..];
        let mut seed = 7u64;
        for blob in FIXTURES {
            for shift in 0..4 {
                bytes[shift..shift + blob.len()].copy_from_slice(blob);
                let view = &bytes[shift..shift + blob.len()];
                assert_eq!(view.as_ptr().align_offset(4) == 0, shift == 0);
                assert_eq!(
                    Platform::from_fdt(view),
                    Platform::from_fdt(blob),
                    "shift {shift}"
                );
            }
            for _ in 0..200 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (seed >> 33) as usize % blob.len();
                let value = (seed >> 13) as u8;
                let mut results = (0..4).map(|shift| {
                    let view = &mut bytes[shift..shift + blob.len()];
                    view.copy_from_slice(blob);
                    view[at] = value;
                    alloc::format!("{:?}", Platform::from_fdt(view))
                });
                let first = results.next().unwrap();
                assert!(results.all(|r| r == first), "byte {at} set to {value}");
            }
        }
    }

    #[test]
    fn trailing_bytes_after_the_tree_are_ignored() {
        let mut blob = fixture!("qemu-virt-gicv3.dtb").to_vec();
        blob.extend_from_slice(&[0xff; 4096]);
        assert_qemu_common(&Platform::from_fdt(&blob).unwrap());
    }

    #[test]
    fn region_arithmetic() {
        let top = region(u64::MAX - 0xfff, 0x1000);
        assert!(top.contains(u64::MAX) && !top.contains(u64::MAX - 0x1000));
        assert_eq!(top.end(), u64::MAX);
        assert!(top.overlaps(&region(u64::MAX, 1)));
        assert!(!region(0, 0x1000).overlaps(&region(0x1000, 0x1000)));
        assert!(!region(0, 0).overlaps(&region(0, 0x1000)));
        let mut list = RegionList::<1>::new();
        assert_eq!(list.push(top), Ok(()));
        assert_eq!(list.push(top), Err(ListFull));
        assert!(list.overlaps(&region(u64::MAX - 1, 1)));
    }

    #[test]
    fn errors_read_well() {
        let mut blob = fixture!("qemu-virt-gicv3.dtb").to_vec();
        blob.truncate(4000);
        let e = Platform::from_fdt(&blob).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the device tree is cut short: its header says 8122 bytes but only 4000 are there"
        );
        let e =
            Platform::from_fdt(b"\x7fELF and then some more bytes to fill a header..").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("this is not a device tree: it starts with 0x7f454c46")
        );
    }

    // ---- hostile input: nothing may panic ----

    /// Cuts the blob at every length and rewrites the header to claim exactly that much, so the
    /// structure checks (not just the size check) see every truncation point.
    #[test]
    fn truncated_blobs_are_refused_without_panicking() {
        for blob in FIXTURES {
            for len in 0..blob.len() {
                assert!(Platform::from_fdt(&blob[..len]).is_err());
                let mut cut = blob[..len].to_vec();
                if len >= HEADER_SIZE {
                    let struct_off = be_u32_at(&cut, 8).unwrap() as usize;
                    let strings_off = be_u32_at(&cut, 12).unwrap() as usize;
                    let clip =
                        |off: usize, size: u32| (size as usize).min(len.saturating_sub(off)) as u32;
                    let structs = clip(struct_off, be_u32_at(&cut, 36).unwrap());
                    let strings = clip(strings_off, be_u32_at(&cut, 32).unwrap());
                    cut[4..8].copy_from_slice(&(len as u32).to_be_bytes());
                    cut[32..36].copy_from_slice(&strings.to_be_bytes());
                    cut[36..40].copy_from_slice(&structs.to_be_bytes());
                }
                let _ = Platform::from_fdt(&cut);
            }
        }
    }

    /// Sets bytes of `blob`, one at a time, to each of `values` and parses the result.
    fn corrupt_each(blob: &[u8], offsets: impl Iterator<Item = usize>, values: &[u8]) {
        let mut copy = blob.to_vec();
        for at in offsets {
            let original = copy[at];
            for &value in values {
                copy[at] = value;
                let _ = Platform::from_fdt(&copy);
            }
            copy[at] = original;
        }
    }

    #[test]
    fn every_corrupted_byte_is_survived() {
        // Token values, small cell counts, and all-ones, in every byte of a QEMU tree.
        let qemu = fixture!("qemu-virt-gicv3-initrd.dtb");
        corrupt_each(qemu, 0..qemu.len(), &[0, 1, 2, 3, 4, 9, 0x80, 0xff]);
        // The Pi tree is 3 times larger and 5 times slower to walk, so only the low byte of
        // each word: tokens, lengths and string offsets are big-endian words.
        let pi = fixture!("bcm2711-rpi-4-b-booted.dtb");
        corrupt_each(pi, (3..pi.len()).step_by(4), &[1, 2, 3, 9, 0xff]);
        corrupt_each(pi, (0..pi.len()).step_by(4), &[0x80]);
    }

    /// Every byte of two QEMU trees set to every value, and every byte of the Pi tree to 32:
    /// about 4 minutes in release mode, so it runs only on request, after changing the checks:
    /// `cargo test --release -- --ignored exhaustive`.
    #[test]
    #[ignore]
    fn exhaustive_corruption() {
        let all: Vec<u8> = (0..=255).collect();
        for blob in [FIXTURES[1], FIXTURES[2]] {
            corrupt_each(blob, 0..blob.len(), &all);
        }
        let some: Vec<u8> = (0..=255).step_by(8).chain([1, 2, 3, 4, 9, 0xff]).collect();
        corrupt_each(FIXTURES[5], 0..FIXTURES[5].len(), &some);
    }

    /// Many random multi-byte corruptions, from a fixed seed so failures reproduce.
    #[test]
    fn random_corruption_is_survived() {
        let mut rng = crate::test_rng::Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut next = || rng.next();
        for blob in FIXTURES {
            for _ in 0..2000 {
                let mut copy = blob.to_vec();
                for _ in 0..1 + next() % 8 {
                    let at = (next() % copy.len() as u64) as usize;
                    // Small values hit token numbers, cell counts and offsets.
                    copy[at] = if next() % 2 == 0 {
                        next() as u8
                    } else {
                        (next() % 5) as u8
                    };
                }
                let _ = Platform::from_fdt(&copy);
            }
        }
    }

    /// A hand assembler for structure blocks the dtc tools would never write.
    #[derive(Default)]
    struct Raw {
        structs: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Raw {
        fn token(&mut self, t: u32) -> &mut Self {
            self.structs.extend_from_slice(&t.to_be_bytes());
            self
        }
        fn begin(&mut self, name: &str) -> &mut Self {
            self.token(FDT_BEGIN_NODE);
            self.structs.extend_from_slice(name.as_bytes());
            self.structs.push(0);
            while !self.structs.len().is_multiple_of(4) {
                self.structs.push(0);
            }
            self
        }
        fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            self.prop_at(offset, value)
        }
        fn prop_at(&mut self, name_offset: u32, value: &[u8]) -> &mut Self {
            self.token(FDT_PROP)
                .token(value.len() as u32)
                .token(name_offset);
            self.structs.extend_from_slice(value);
            while !self.structs.len().is_multiple_of(4) {
                self.structs.push(0);
            }
            self
        }
        fn end_node(&mut self) -> &mut Self {
            self.token(FDT_END_NODE)
        }
        fn blob(&mut self) -> Vec<u8> {
            let struct_off = 56u32;
            let strings_off = struct_off + self.structs.len() as u32;
            let total = strings_off + self.strings.len() as u32;
            let mut out = Vec::new();
            for word in [
                FDT_MAGIC,
                total,
                struct_off,
                strings_off,
                40,
                17,
                16,
                0,
                self.strings.len() as u32,
                self.structs.len() as u32,
            ] {
                out.extend_from_slice(&word.to_be_bytes());
            }
            out.extend_from_slice(&[0; 16]);
            out.extend_from_slice(&self.structs);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// The error for a blob, as the user reads it.
    fn error(blob: &[u8]) -> alloc::string::String {
        Platform::from_fdt(blob).unwrap_err().to_string()
    }

    fn structure_error(blob: &[u8]) -> &'static str {
        match Platform::from_fdt(blob) {
            Err(DiscoveryError::Fdt(FdtError::BadStructure { problem, .. })) => problem,
            other => panic!("expected a structure error, got {other:?}"),
        }
    }

    #[test]
    fn a_broken_structure_is_reported_before_an_earlier_bad_value() {
        let blob = Raw::default()
            .begin("")
            .prop("model", b"\xff\xfe\0")
            .token(0x77)
            .end_node()
            .token(FDT_END)
            .blob();
        assert!(structure_error(&blob).contains("unknown token"));
        let only_the_value = Raw::default()
            .begin("")
            .prop("model", b"\xff\xfe\0")
            .end_node()
            .token(FDT_END)
            .blob();
        assert!(error(&only_the_value).contains("`model` is not a text string"));
    }

    /// `check_fdt` (the VM package's way in) and discovery accept and refuse the same trees,
    /// but for NOP tokens, which only `check_fdt` refuses.
    #[test]
    fn check_fdt_agrees_with_discovery() {
        for blob in FIXTURES {
            assert!(check_fdt(blob).is_ok());
        }
        let mut seed = 0x5eed_u64;
        for blob in FIXTURES {
            for _ in 0..500 {
                let mut copy = blob.to_vec();
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (seed >> 33) as usize % copy.len();
                copy[at] = (seed >> 13) as u8 % 10;
                let nop = |e: &FdtError| matches!(e, FdtError::BadStructure { problem, .. } if problem.contains("NOP"));
                match (check_fdt(&copy), Platform::from_fdt(&copy)) {
                    (Err(a), Err(DiscoveryError::Fdt(b))) => {
                        assert!(a == b || nop(&a), "{a:?} / {b:?}")
                    }
                    (Err(a), _) if nop(&a) => {}
                    (Err(a), other) => panic!("check_fdt: {a:?}, discovery: {other:?}"),
                    (Ok(_), Err(DiscoveryError::Fdt(b))) => panic!("only discovery refused: {b:?}"),
                    (Ok(_), _) => {}
                }
            }
        }
    }

    #[test]
    fn a_wellformed_raw_tree_parses() {
        let blob = Raw::default()
            .begin("")
            .prop("model", b"raw\0")
            .end_node()
            .token(FDT_END)
            .blob();
        assert_eq!(Platform::from_fdt(&blob).unwrap().model, "raw");
    }

    /// A tree with NOP tokens wherever the format allows them reads like the tree without.
    #[test]
    fn nop_tokens_are_passed_over() {
        for blob in FIXTURES {
            let clean = Platform::from_fdt(blob).unwrap();
            for every in [1, 2, 7] {
                let noisy = with_nops(blob, every);
                assert_eq!(
                    Platform::from_fdt(&noisy).unwrap(),
                    clean,
                    "a NOP every {every} tokens"
                );
                match check_fdt(&noisy) {
                    Err(FdtError::BadStructure { problem, .. }) => assert!(problem.contains("NOP")),
                    other => panic!("check_fdt took NOPs: {:?}", other.err()),
                }
            }
        }
        let nop = Raw::default()
            .token(FDT_NOP)
            .begin("")
            .token(FDT_NOP)
            .prop("model", b"m\0")
            .token(FDT_NOP)
            .end_node()
            .token(FDT_NOP)
            .token(FDT_END)
            .blob();
        assert_eq!(Platform::from_fdt(&nop).unwrap().model, "m");
    }

    /// `blob` with an FDT_NOP token after every `every` tokens of its structure block (and one
    /// before the first), the header's sizes and offsets adjusted.
    fn with_nops(blob: &[u8], every: usize) -> Vec<u8> {
        let word = |at: usize| be_u32_at(blob, at).unwrap() as usize;
        let (structs_at, strings_at, structs_len, strings_len) =
            (word(8), word(12), word(36), word(32));
        let structs = &blob[structs_at..structs_at + structs_len];
        let mut noisy = FDT_NOP.to_be_bytes().to_vec();
        let mut at = 0;
        let mut count = 0;
        while at < structs.len() {
            let token = be_u32_at(structs, at).unwrap();
            let len = match token {
                FDT_BEGIN_NODE => {
                    4 + (c_string(&structs[at + 4..]).unwrap().len() + 1).next_multiple_of(4)
                }
                FDT_PROP => 12 + (be_u32_at(structs, at + 4).unwrap() as usize).next_multiple_of(4),
                _ => 4,
            };
            noisy.extend_from_slice(&structs[at..at + len]);
            at += len;
            count += 1;
            if count % every == 0 && token != FDT_END {
                noisy.extend_from_slice(&FDT_NOP.to_be_bytes());
            }
        }
        let mut out = blob[..structs_at].to_vec();
        let new_strings_at = structs_at + noisy.len();
        out.extend_from_slice(&noisy);
        out.extend_from_slice(&blob[strings_at..strings_at + strings_len]);
        let set = |out: &mut Vec<u8>, index: usize, value: usize| {
            out[index * 4..index * 4 + 4].copy_from_slice(&(value as u32).to_be_bytes());
        };
        let total = out.len();
        set(&mut out, 1, total);
        set(&mut out, 3, new_strings_at);
        set(&mut out, 9, noisy.len());
        out
    }

    #[test]
    fn malformed_structures_are_refused() {
        let late_prop = Raw::default()
            .begin("")
            .begin("a")
            .end_node()
            .prop("x", b"")
            .end_node()
            .token(FDT_END)
            .blob();
        assert!(structure_error(&late_prop).contains("after a child"));
        let bad_name = Raw::default()
            .begin("")
            .prop_at(1000, b"")
            .end_node()
            .token(FDT_END)
            .blob();
        assert!(structure_error(&bad_name).contains("strings block"));
        let long_value = {
            let mut raw = Raw::default();
            raw.begin("").token(FDT_PROP).token(0x7fff_ffff).token(0);
            raw.end_node().token(FDT_END).blob()
        };
        assert!(structure_error(&long_value).contains("runs past"));
        let unclosed = Raw::default()
            .begin("")
            .begin("a")
            .end_node()
            .token(FDT_END)
            .blob();
        assert!(structure_error(&unclosed).contains("ends before"));
        let two_roots = Raw::default()
            .begin("")
            .end_node()
            .begin("")
            .end_node()
            .token(FDT_END)
            .blob();
        assert!(structure_error(&two_roots).contains("end marker"));
        let named_root = Raw::default().begin("x").end_node().token(FDT_END).blob();
        assert!(structure_error(&named_root).contains("empty name"));
        let not_utf8 = {
            let mut raw = Raw::default();
            raw.token(FDT_BEGIN_NODE)
                .token(0)
                .token(FDT_BEGIN_NODE)
                .token(0xff00_0000);
            raw.end_node().end_node().token(FDT_END).blob()
        };
        assert!(structure_error(&not_utf8).contains("not text"));
        let mut deep = Raw::default();
        deep.begin("");
        for _ in 0..MAX_DEPTH {
            deep.begin("n");
        }
        assert_eq!(
            Platform::from_fdt(&deep.blob()),
            Err(DiscoveryError::Fdt(FdtError::TooDeep))
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        let good = Raw::default().begin("").end_node().token(FDT_END).blob();
        let with = |index: usize, value: u32| {
            let mut b = good.clone();
            b[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
            match Platform::from_fdt(&b) {
                Err(DiscoveryError::Fdt(e)) => e,
                other => panic!("expected an FDT error, got {other:?}"),
            }
        };
        assert!(matches!(with(0, 0), FdtError::BadMagic { found: 0 }));
        assert!(matches!(with(1, 0xffff_fff0), FdtError::Truncated { .. }));
        assert!(matches!(with(1, 8), FdtError::BadLayout(_)));
        assert!(matches!(with(2, 0xffff_fffc), FdtError::BadLayout(_)));
        assert!(matches!(with(2, 58), FdtError::BadLayout(_)));
        assert!(matches!(with(3, 0xffff_ffff), FdtError::BadLayout(_)));
        assert!(matches!(with(4, 0xffff_fff8), FdtError::BadLayout(_)));
        assert!(matches!(with(4, 44), FdtError::BadLayout(_)));
        assert!(matches!(with(5, 16), FdtError::UnsupportedVersion { .. }));
        assert!(matches!(with(6, 18), FdtError::UnsupportedVersion { .. }));
        assert!(matches!(with(9, 0x1_0000), FdtError::BadLayout(_)));
    }

    // ---- well-formed trees with values discovery must judge ----

    /// Writes a tree with `body` filling the root (which has 2 address and 2 size cells).
    fn tree(body: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        body(&mut w);
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn node(w: &mut FdtWriter, name: &str, props: impl FnOnce(&mut FdtWriter)) {
        let n = w.begin_node(name).unwrap();
        props(w);
        w.end_node(n).unwrap();
    }

    fn pl011(w: &mut FdtWriter, name: &str, reg: &[u32]) {
        node(w, name, |w| {
            w.property_string("compatible", "arm,pl011").unwrap();
            w.property_array_u32("reg", reg).unwrap();
        });
    }

    #[test]
    fn addresses_are_translated_through_every_bus() {
        let blob = tree(|w| {
            node(w, "bus@100000000", |w| {
                w.property_u32("#address-cells", 1).unwrap();
                w.property_u32("#size-cells", 1).unwrap();
                // bus 0x0 -> CPU 0x1_0000_0000, 16 MiB
                w.property_array_u32("ranges", &[0, 1, 0, 0x100_0000])
                    .unwrap();
                node(w, "sub@0", |w| {
                    w.property_u32("#address-cells", 1).unwrap();
                    w.property_u32("#size-cells", 1).unwrap();
                    // sub-bus 0x7e00_0000 -> bus 0x20_0000, 1 MiB; a window before it misses.
                    w.property_array_u32(
                        "ranges",
                        &[0x1000, 0, 0x10, 0x7e00_0000, 0x20_0000, 0x10_0000],
                    )
                    .unwrap();
                    pl011(w, "serial@7e001000", &[0x7e00_1000, 0x1000]);
                });
            });
        });
        let p = Platform::from_fdt(&blob).unwrap();
        assert_eq!(
            p.uart,
            Some(UartInfo {
                base: 0x1_0020_1000,
                size: 0x1000,
                intid: None
            })
        );
    }

    #[test]
    fn unreachable_addresses_are_reported() {
        let no_ranges = tree(|w| {
            node(w, "bus", |w| {
                w.property_u32("#address-cells", 1).unwrap();
                w.property_u32("#size-cells", 1).unwrap();
                pl011(w, "serial@1000", &[0x1000, 0x100]);
            });
        });
        let e = Platform::from_fdt(&no_ranges).unwrap_err();
        assert_eq!(
            e,
            DiscoveryError::Untranslatable {
                node: "serial@1000",
                bus: "bus",
                address: 0x1000
            }
        );
        assert!(e.to_string().contains("not reachable from the CPU"));
        let straddles = tree(|w| {
            node(w, "bus", |w| {
                w.property_u32("#address-cells", 1).unwrap();
                w.property_u32("#size-cells", 1).unwrap();
                w.property_array_u32("ranges", &[0, 0, 0, 0x1000]).unwrap();
                pl011(w, "serial@f00", &[0xf00, 0x200]);
            });
        });
        assert!(matches!(
            Platform::from_fdt(&straddles),
            Err(DiscoveryError::Untranslatable { .. })
        ));
    }

    #[test]
    fn regions_past_the_address_space_are_refused() {
        let blob = tree(|w| {
            node(w, "memory@0", |w| {
                w.property_string("device_type", "memory").unwrap();
                w.property_array_u64("reg", &[u64::MAX - 0xfff, 0x2000])
                    .unwrap();
            });
        });
        let e = Platform::from_fdt(&blob).unwrap_err();
        assert!(
            e.to_string()
                .contains("past the end of the 64-bit address space"),
            "{e}"
        );
    }

    #[test]
    fn several_memory_nodes_and_entries() {
        let blob = tree(|w| {
            node(w, "memory@40000000", |w| {
                w.property_string("device_type", "memory").unwrap();
                w.property_array_u64("reg", &[0x4000_0000, 0x1000_0000, 0x8000_0000, 0x1000_0000])
                    .unwrap();
            });
            node(w, "memory@100000000", |w| {
                w.property_string("device_type", "memory").unwrap();
                w.property_array_u64("reg", &[0x1_0000_0000, 0x4000_0000])
                    .unwrap();
            });
            node(w, "memory@200000000", |w| {
                w.property_string("device_type", "memory").unwrap();
                w.property_string("status", "disabled").unwrap();
                w.property_array_u64("reg", &[0x2_0000_0000, 0x4000_0000])
                    .unwrap();
            });
            node(w, "reserved-memory", |w| {
                w.property_u32("#address-cells", 2).unwrap();
                w.property_u32("#size-cells", 2).unwrap();
                w.property_null("ranges").unwrap();
                node(w, "secmon@40000000", |w| {
                    w.property_array_u64("reg", &[0x4000_0000, 0x20_0000])
                        .unwrap();
                });
                node(w, "pool", |w| w.property_u64("size", 0x100_0000).unwrap());
            });
        });
        let p = Platform::from_fdt(&blob).unwrap();
        assert_eq!(
            p.memory.as_slice(),
            &[
                region(0x4000_0000, 0x1000_0000),
                region(0x8000_0000, 0x1000_0000),
                region(0x1_0000_0000, 0x4000_0000)
            ]
        );
        assert_eq!(p.reserved.as_slice(), &[region(0x4000_0000, 0x20_0000)]);
    }

    #[test]
    fn lists_that_overflow_are_errors() {
        let many_regions = tree(|w| {
            node(w, "memory@0", |w| {
                w.property_string("device_type", "memory").unwrap();
                let reg: Vec<u64> = (0..9u64).flat_map(|i| [i << 32, 0x1000]).collect();
                w.property_array_u64("reg", &reg).unwrap();
            });
        });
        assert_eq!(
            Platform::from_fdt(&many_regions),
            Err(DiscoveryError::TooMany {
                what: "memory regions",
                max: MAX_MEMORY_REGIONS
            })
        );
        let many_cpus = tree(|w| {
            node(w, "cpus", |w| {
                w.property_u32("#address-cells", 2).unwrap();
                w.property_u32("#size-cells", 0).unwrap();
                for i in 0..9u64 {
                    node(w, &alloc::format!("cpu@{i:x}"), |w| {
                        w.property_string("device_type", "cpu").unwrap();
                        w.property_u64("reg", 0x100 * i).unwrap();
                        w.property_string("enable-method", "psci").unwrap();
                    });
                }
            });
        });
        let e = Platform::from_fdt(&many_cpus).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the device tree lists more CPUs than Veil supports (8)"
        );
    }

    #[test]
    fn cpus_with_two_cell_mpidr_and_inherited_method() {
        let blob = tree(|w| {
            node(w, "cpus", |w| {
                w.property_u32("#address-cells", 2).unwrap();
                w.property_u32("#size-cells", 0).unwrap();
                w.property_string("enable-method", "psci").unwrap();
                node(w, "cpu@100", |w| {
                    w.property_string("device_type", "cpu").unwrap();
                    w.property_u64("reg", 0x1_0000_0100).unwrap();
                });
                node(w, "cpu@0", |w| {
                    w.property_string("device_type", "cpu").unwrap();
                    w.property_u64("reg", 0).unwrap();
                    w.property_string("enable-method", "spin-table").unwrap();
                    w.property_u32("cpu-release-addr", 0xfff8).unwrap();
                });
                node(w, "cpu-map", |_| {});
            });
        });
        let p = Platform::from_fdt(&blob).unwrap();
        assert_eq!(
            p.cpus.as_slice(),
            &[
                CpuInfo {
                    mpidr: 0x1_0000_0100,
                    enable_method: EnableMethod::Psci
                },
                CpuInfo {
                    mpidr: 0,
                    enable_method: EnableMethod::SpinTable {
                        release_addr: 0xfff8
                    }
                },
            ]
        );
    }

    /// QEMU writes /aliases and /chosen last: the console is picked after the walk.
    #[test]
    fn stdout_path_after_the_uarts_and_alias_after_chosen() {
        let blob = tree(|w| {
            pl011(w, "uart@1000", &[0, 0x1000, 0, 0x1000]);
            node(w, "uart@2000", |w| {
                w.property_string("compatible", "arm,pl011").unwrap();
                w.property_array_u32("reg", &[0, 0x2000, 0, 0x1000])
                    .unwrap();
                w.property_array_u32("interrupts", &[0, 7, 4]).unwrap();
            });
            node(w, "chosen", |w| {
                w.property_string("stdout-path", "serial1:115200n8")
                    .unwrap()
            });
            node(w, "aliases", |w| {
                w.property_string("serial0", "/uart@1000").unwrap();
                w.property_string("serial1", "/uart@2000").unwrap();
            });
        });
        assert_eq!(
            Platform::from_fdt(&blob).unwrap().uart,
            Some(UartInfo {
                base: 0x2000,
                size: 0x1000,
                intid: Some(39)
            })
        );
        let unknown_alias = tree(|w| {
            pl011(w, "uart@1000", &[0, 0x1000, 0, 0x1000]);
            node(w, "chosen", |w| {
                w.property_string("stdout-path", "serial9").unwrap()
            });
        });
        assert_eq!(
            Platform::from_fdt(&unknown_alias)
                .unwrap()
                .uart
                .map(|u| u.base),
            Some(0x1000)
        );
    }

    #[test]
    fn rtc_behind_a_bus_is_translated_and_a_bad_one_ignored() {
        let pl031 = |w: &mut FdtWriter, reg: &[u32]| {
            node(w, "rtc@10", |w| {
                let compatible = ["arm,pl031", "arm,primecell"].map(String::from).to_vec();
                w.property_string_list("compatible", compatible).unwrap();
                w.property_array_u32("reg", reg).unwrap();
            });
        };
        let bus = |w: &mut FdtWriter, size_cells: u32, ranges: &[u32], reg: &[u32]| {
            let (ranges, reg) = (ranges.to_vec(), reg.to_vec());
            node(w, "soc", move |w| {
                w.property_u32("#address-cells", 1).unwrap();
                w.property_u32("#size-cells", size_cells).unwrap();
                w.property_array_u32("ranges", &ranges).unwrap();
                pl031(w, &reg);
            });
        };
        let translated = tree(|w| bus(w, 1, &[0, 0, 0x9000_0000, 0x1000], &[0x10, 0x100]));
        assert_eq!(
            Platform::from_fdt(&translated).unwrap().rtc,
            Some(region(0x9000_0010, 0x100))
        );
        // No size in `reg`: the PL031's 4 KiB.
        let sizeless = tree(|w| bus(w, 0, &[], &[0x901_0000]));
        assert_eq!(
            Platform::from_fdt(&sizeless).unwrap().rtc,
            Some(region(0x901_0000, 0x1000))
        );
        let unreachable = tree(|w| bus(w, 1, &[0, 0, 0x9000_0000, 0x10], &[0x10, 0x100]));
        assert_eq!(Platform::from_fdt(&unreachable).unwrap().rtc, None);
        let ragged = tree(|w| pl031(w, &[0, 0x10, 0]));
        assert_eq!(Platform::from_fdt(&ragged).unwrap().rtc, None);
    }

    #[test]
    fn stdout_path_alias_with_options_picks_that_uart() {
        let blob = tree(|w| {
            node(w, "chosen", |w| {
                w.property_string("stdout-path", "serial1:115200n8")
                    .unwrap()
            });
            node(w, "aliases", |w| {
                w.property_string("serial1", "/uart@2000").unwrap()
            });
            pl011(w, "uart@1000", &[0, 0x1000, 0, 0x1000]);
            pl011(w, "uart@2000", &[0, 0x2000, 0, 0x1000]);
        });
        assert_eq!(
            Platform::from_fdt(&blob).unwrap().uart,
            Some(UartInfo {
                base: 0x2000,
                size: 0x1000,
                intid: None
            })
        );
        let by_path = tree(|w| {
            node(w, "chosen", |w| {
                w.property_string("stdout-path", "/uart@2000").unwrap()
            });
            pl011(w, "uart@1000", &[0, 0x1000, 0, 0x1000]);
            node(w, "uart@2000", |w| {
                w.property_string("compatible", "arm,pl011").unwrap();
                w.property_string("status", "disabled").unwrap();
                w.property_array_u32("reg", &[0, 0x2000, 0, 0x1000])
                    .unwrap();
            });
        });
        // A disabled UART is not used even when stdout-path names it.
        assert_eq!(
            Platform::from_fdt(&by_path).unwrap().uart,
            Some(UartInfo {
                base: 0x1000,
                size: 0x1000,
                intid: None
            })
        );
    }

    #[test]
    fn initrd_cells_and_order() {
        let with = |start: &[u32], end: &[u32]| {
            tree(|w| {
                node(w, "chosen", |w| {
                    w.property_array_u32("linux,initrd-start", start).unwrap();
                    w.property_array_u32("linux,initrd-end", end).unwrap();
                });
            })
        };
        let blob = with(&[1, 0], &[1, 0x1000]);
        assert_eq!(
            Platform::from_fdt(&blob).unwrap().initrd,
            Some(region(0x1_0000_0000, 0x1000))
        );
        let e = error(&with(&[0x2000], &[0x1000]));
        assert!(e.contains("is before linux,initrd-start"), "{e}");
        let e = error(&with(&[1, 2, 3], &[0x1000]));
        assert!(e.contains("is not a 32- or 64-bit number"), "{e}");
    }

    #[test]
    fn gic_and_timer_values_are_checked() {
        let gic = |compatible: &str, reg: &[u64], interrupts: &[u32]| {
            let (compatible, reg, interrupts) =
                (compatible.to_owned(), reg.to_vec(), interrupts.to_vec());
            tree(move |w| {
                node(w, "intc@8000000", |w| {
                    w.property_string("compatible", &compatible).unwrap();
                    w.property_u32("#interrupt-cells", 3).unwrap();
                    w.property_array_u64("reg", &reg).unwrap();
                    w.property_array_u32("interrupts", &[1, 9, 4]).unwrap();
                });
                node(w, "timer", |w| {
                    w.property_string("compatible", "arm,armv8-timer").unwrap();
                    w.property_array_u32("interrupts", &interrupts).unwrap();
                    w.property_u32("clock-frequency", 54_000_000).unwrap();
                });
            })
        };
        let four = [1, 13, 8, 1, 14, 8, 1, 11, 8, 1, 10, 8];
        // A GICv2 without GICH/GICV (no virtualization extensions) is reported as such.
        let blob = gic("arm,gic-400", &[0x1000, 0x1000, 0x2000, 0x2000], &four);
        let p = Platform::from_fdt(&blob).unwrap();
        let g = p.gic.unwrap();
        assert_eq!((g.hyp_interface, g.virtual_cpu_interface), (None, None));
        assert_eq!(p.counter_frequency, Some(54_000_000));
        let e = error(&gic("arm,gic-400", &[0x1000, 0x1000], &four));
        assert!(e.contains("no CPU interface"), "{e}");
        let e = error(&gic("arm,gic-v3", &[0x1000, 0x1000], &four));
        assert!(e.contains("no redistributor"), "{e}");
        let gicd_gicr = [0x1000, 0x1000, 0x10_0000, 0x10_0000];
        let e = error(&gic("arm,gic-v3", &gicd_gicr, &four[..9]));
        assert!(e.contains("is not 4 or 5"), "{e}");
        let mut bad_ppi = four;
        bad_ppi[4] = 16;
        assert!(Platform::from_fdt(&gic("arm,gic-v3", &gicd_gicr, &bad_ppi)).is_err());
    }

    #[test]
    fn odd_cell_properties_are_errors_not_panics() {
        let blob = tree(|w| {
            node(w, "bus", |w| {
                // Three bytes: the fdt crate's own cell_sizes() would panic here.
                w.property("#address-cells", &[0, 0, 1]).unwrap();
                w.property_null("ranges").unwrap();
                pl011(w, "serial@0", &[0, 0x100]);
            });
        });
        let e = Platform::from_fdt(&blob).unwrap_err();
        assert_eq!(
            e,
            DiscoveryError::BadProperty {
                node: "bus",
                property: "#address-cells",
                problem: "is not one 32-bit cell"
            }
        );
        let three_cells = tree(|w| {
            node(w, "bus", |w| {
                w.property_u32("#address-cells", 3).unwrap();
                w.property_null("ranges").unwrap();
                pl011(w, "serial@0", &[0, 0, 0, 0x100]);
            });
        });
        assert!(
            Platform::from_fdt(&three_cells)
                .unwrap_err()
                .to_string()
                .contains("is not 1 or 2")
        );
        let ragged_reg = tree(|w| pl011(w, "serial@0", &[0, 0x1000, 0]));
        assert!(
            Platform::from_fdt(&ragged_reg)
                .unwrap_err()
                .to_string()
                .contains("whole number")
        );
    }
}
