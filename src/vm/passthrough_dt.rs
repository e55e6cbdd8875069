//! What a guest's DTB says about the host devices passed through to it.
//!
//! A passed-through device sits at the same address in the guest as in the host
//! (`passthrough-mmio`), and its SPI keeps its INTID (`passthrough-spis`). For the guest's
//! drivers to find it, its DTB must describe it: this finds the host DTB's nodes whose every
//! `reg` region lies inside one passed-through window, and says what of each node the guest gets
//! ([`PassedDevice`]): the `compatible` list; `reg` as CPU addresses (the host's bus addresses
//! translated through each ancestor's `ranges`, since the guest sees them flat); the interrupts
//! that are GIC SPIs the VM was given (others are left out: the guest could not receive them);
//! `clock-names`, whose clocks the guest DTB points at its fixed `apb-pclk`; and
//! `dma-coherent`. Everything else (pin control, resets, power domains, phandle references)
//! names host resources the guest does not have, and is left out.
//!
//! Pure and host-tested against QEMU's and the Raspberry Pi firmware's DTBs.

use alloc::vec::Vec;
use fdt::{Fdt, node::FdtNode};

/// A host device as the guest's DTB describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassedDevice<'a> {
    /// The node's name without its unit address (the guest's is the CPU address of `reg[0]`).
    pub name: &'a str,
    /// `compatible`, as the host DTB has it (NUL-separated strings).
    pub compatible: &'a [u8],
    /// `(address, size)` of each `reg` region, as CPU (and so guest) addresses.
    pub reg: Vec<(u64, u64)>,
    /// Three-cell GIC specifiers of its interrupts that are SPIs passed to the VM.
    pub interrupts: Vec<[u32; 3]>,
    /// `clock-names` (NUL-separated), if the node names its clocks.
    pub clock_names: Option<&'a [u8]>,
    pub dma_coherent: bool,
}

/// Compatible strings of the GICs whose 3-cell specifiers (type, number, flags) this reads.
const GIC_COMPATIBLES: [&str; 4] = [
    "arm,gic-v3",
    "arm,cortex-a15-gic",
    "arm,gic-400",
    "arm,cortex-a9-gic",
];
/// Specifier type 0: an SPI, INTID = number + 32.
const GIC_SPI: u32 = 0;

/// The host devices inside `windows` (CPU address, size), with the interrupts among `spis`
/// (INTIDs). A blob that does not pass Veil's check (`board::discovery::check_fdt`, which makes
/// sure the `fdt` crate can walk it without panicking) gives none.
pub fn find<'a>(host_dtb: &'a [u8], windows: &[(u64, u64)], spis: &[u32]) -> Vec<PassedDevice<'a>> {
    let mut found = Vec::new();
    if windows.is_empty() {
        return found;
    }
    let Ok(fdt) = crate::board::discovery::check_fdt(host_dtb) else {
        return found;
    };
    let Some(root) = fdt.find_node("/") else {
        return found;
    };
    let context = Context {
        address_cells: cells(root, "#address-cells").unwrap_or(2),
        size_cells: cells(root, "#size-cells").unwrap_or(1),
        ranges: Vec::new(),
        interrupt_parent: phandle(root, "interrupt-parent"),
    };
    for child in root.children() {
        visit(&fdt, child, &context, windows, spis, &mut found);
    }
    found
}

/// What a node inherits from its ancestors.
#[derive(Clone)]
struct Context {
    /// The parent's `#address-cells` and `#size-cells`, which the node's `reg` uses.
    address_cells: u32,
    size_cells: u32,
    /// From the parent's address space to the CPU's: each ancestor bus's `ranges`, innermost
    /// first, as (child address, parent address, size); an empty list in it is a 1:1 bus.
    ranges: Vec<Vec<(u64, u64, u64)>>,
    /// The nearest `interrupt-parent` phandle.
    interrupt_parent: Option<u32>,
}

fn visit<'a>(
    fdt: &Fdt<'a>,
    node: FdtNode<'_, 'a>,
    context: &Context,
    windows: &[(u64, u64)],
    spis: &[u32],
    found: &mut Vec<PassedDevice<'a>>,
) {
    let status = node.property("status").and_then(|p| p.as_str());
    if status.is_some_and(|s| s != "okay" && s != "ok") {
        return;
    }
    let interrupt_parent = phandle(node, "interrupt-parent").or(context.interrupt_parent);
    if let Some(device) = device(fdt, node, context, interrupt_parent, windows, spis) {
        found.push(device);
    }
    // A bus: its children's addresses go through its `ranges`. Without one they are not CPU
    // addresses at all (a bus of its own kind), and nothing under it can be passed.
    let Some(ranges) = node.property("ranges") else {
        return;
    };
    let child_cells = (
        cells(node, "#address-cells").unwrap_or(2),
        cells(node, "#size-cells").unwrap_or(1),
    );
    let Some(ranges) = parse_ranges(ranges.value, child_cells, context) else {
        return;
    };
    let mut inner = context.clone();
    inner.address_cells = child_cells.0;
    inner.size_cells = child_cells.1;
    inner.ranges.insert(0, ranges);
    inner.interrupt_parent = interrupt_parent;
    for child in node.children() {
        visit(fdt, child, &inner, windows, spis, found);
    }
}

/// The node as the guest sees it, if it is a device inside one window.
fn device<'a>(
    fdt: &Fdt<'a>,
    node: FdtNode<'_, 'a>,
    context: &Context,
    interrupt_parent: Option<u32>,
    windows: &[(u64, u64)],
    spis: &[u32],
) -> Option<PassedDevice<'a>> {
    let compatible = node.property("compatible")?.value;
    let reg_cells = node.property("reg")?.value;
    let entry = 4 * (context.address_cells + context.size_cells) as usize;
    if entry == 0 || reg_cells.is_empty() || reg_cells.len() % entry != 0 {
        return None;
    }
    let mut reg = Vec::new();
    for chunk in reg_cells.chunks_exact(entry) {
        let (address, size) = chunk.split_at(4 * context.address_cells as usize);
        let (address, size) = (number(address)?, number(size)?);
        let cpu = translate(address, size, &context.ranges)?;
        reg.push((cpu, size));
    }
    let inside = |&(a, s): &(u64, u64)| {
        windows
            .iter()
            .any(|&(w, ws)| a >= w && s <= ws && a - w <= ws - s)
    };
    if !reg.iter().all(inside) {
        return None;
    }
    let name = node.name.split('@').next().unwrap_or(node.name);
    Some(PassedDevice {
        name,
        compatible,
        reg,
        interrupts: interrupts(fdt, node, interrupt_parent, spis),
        clock_names: node.property("clock-names").map(|p| p.value),
        dma_coherent: node.property("dma-coherent").is_some(),
    })
}

/// The node's interrupts that are SPIs among `spis`, if its interrupt parent is a GIC with
/// 3-cell specifiers.
fn interrupts(fdt: &Fdt, node: FdtNode, parent: Option<u32>, spis: &[u32]) -> Vec<[u32; 3]> {
    let Some(gic) = parent.and_then(|p| fdt.find_phandle(p)) else {
        return Vec::new();
    };
    let is_gic = gic.property("compatible").is_some_and(|c| {
        c.value
            .split(|&b| b == 0)
            .any(|s| GIC_COMPATIBLES.iter().any(|g| g.as_bytes() == s))
    });
    if !is_gic || cells(gic, "#interrupt-cells") != Some(3) {
        return Vec::new();
    }
    let Some(value) = node.property("interrupts").map(|p| p.value) else {
        return Vec::new();
    };
    value
        .chunks_exact(12)
        .filter_map(|c| {
            let spec = [word(&c[0..4]), word(&c[4..8]), word(&c[8..12])];
            (spec[0] == GIC_SPI && spis.contains(&spec[1].saturating_add(32))).then_some(spec)
        })
        .collect()
}

/// Maps a bus address range to the CPU's through `ranges` (innermost bus first).
fn translate(address: u64, size: u64, ranges: &[Vec<(u64, u64, u64)>]) -> Option<u64> {
    let mut address = address;
    for bus in ranges {
        if bus.is_empty() {
            continue;
        }
        let &(child, parent, _) = bus.iter().find(|&&(child, _, length)| {
            address >= child && size <= length && address - child <= length - size
        })?;
        address = parent.checked_add(address - child)?;
    }
    Some(address)
}

/// A bus's `ranges`: (child address, parent address, size) triples in the cells of the bus
/// (`child_cells`) and of its parent (`context`). Empty: 1:1.
fn parse_ranges(
    value: &[u8],
    child_cells: (u32, u32),
    context: &Context,
) -> Option<Vec<(u64, u64, u64)>> {
    let (child, parent, size) = (
        4 * child_cells.0 as usize,
        4 * context.address_cells as usize,
        4 * child_cells.1 as usize,
    );
    let entry = child + parent + size;
    if entry == 0 || value.len() % entry != 0 {
        return None;
    }
    value
        .chunks_exact(entry)
        .map(|e| {
            Some((
                number(&e[..child])?,
                number(&e[child..child + parent])?,
                number(&e[child + parent..])?,
            ))
        })
        .collect()
}

/// A big-endian number of one or two cells (nothing wider is an address Veil can map).
fn number(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => Some(u64::from(word(bytes))),
        8 => Some(u64::from(word(&bytes[..4])) << 32 | u64::from(word(&bytes[4..]))),
        _ => None,
    }
}

fn word(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// A one-cell property (`#address-cells` and the like).
fn cells(node: FdtNode, name: &str) -> Option<u32> {
    let value = node.property(name)?.value;
    (value.len() == 4).then(|| word(value))
}

fn phandle(node: FdtNode, name: &str) -> Option<u32> {
    cells(node, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    const QEMU_GICV3: &[u8] = include_bytes!("../../tests/fixtures/qemu-virt-gicv3.dtb");
    const RPI4: &[u8] = include_bytes!("../../tests/fixtures/bcm2711-rpi-4-b.dtb");

    #[test]
    fn qemus_rtc_and_fw_cfg() {
        // In the host DTB's order.
        let found = find(
            QEMU_GICV3,
            &[(0x0901_0000, 0x1000), (0x0902_0000, 0x1000)],
            &[34],
        );
        assert_eq!(
            found,
            [
                PassedDevice {
                    name: "fw-cfg",
                    compatible: b"qemu,fw-cfg-mmio\0",
                    reg: std::vec![(0x0902_0000, 0x18)],
                    interrupts: std::vec![],
                    clock_names: None,
                    dma_coherent: true,
                },
                PassedDevice {
                    name: "pl031",
                    compatible: b"arm,pl031\0arm,primecell\0",
                    reg: std::vec![(0x0901_0000, 0x1000)],
                    interrupts: std::vec![[0, 2, 4]],
                    clock_names: Some(b"apb_pclk\0"),
                    dma_coherent: false,
                },
            ]
        );
    }

    #[test]
    fn interrupts_not_passed_are_left_out() {
        let found = find(QEMU_GICV3, &[(0x0901_0000, 0x1000)], &[35]);
        assert_eq!(found.len(), 1);
        assert!(found[0].interrupts.is_empty());
    }

    #[test]
    fn a_device_must_lie_wholly_inside_one_window() {
        // The RTC's 4 KiB at 0x0901_0000: half a window is not enough.
        assert!(find(QEMU_GICV3, &[(0x0901_0000, 0x800)], &[]).is_empty());
        assert!(find(QEMU_GICV3, &[(0x0900_0800, 0x1000)], &[]).is_empty());
        assert!(find(QEMU_GICV3, &[], &[34]).is_empty());
        assert!(find(b"not a dtb", &[(0, u64::MAX)], &[]).is_empty());
    }

    #[test]
    fn bus_addresses_are_translated() {
        // The Pi 4's PL011 (uart0) is at bus address 0x7e20_1000 under /soc, whose `ranges`
        // put 0x7e00_0000 at CPU 0xfe00_0000; its interrupt is GIC SPI 121 (INTID 153).
        let found = find(RPI4, &[(0xfe20_1000, 0x1000)], &[153]);
        let uart = found
            .iter()
            .find(|d| d.compatible.starts_with(b"arm,pl011"))
            .unwrap_or_else(|| panic!("no PL011 in {found:?}"));
        assert_eq!(uart.reg, [(0xfe20_1000, 0x200)]);
        assert_eq!(uart.interrupts, [[0, 121, 4]]);
        assert_eq!(uart.name, "serial");
    }
}
