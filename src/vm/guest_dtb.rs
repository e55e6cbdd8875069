//! The device tree Veil hands a guest in `x0`.
//!
//! It describes the virtual board of `super::virtual_board` the way QEMU's `virt` machine
//! describes the same devices (node names, `compatible` lists, interrupt specifiers, clocks), so
//! that an unmodified Linux binds the same drivers it binds under QEMU. Devices Veil does not
//! emulate (ITS, GICv2m, PCIe, flash, fw-cfg, PL061, PMU) are left out: a node for them would
//! send the guest's driver into memory that faults. Host devices passed through to the VM are
//! described as the host's DTB describes them (`super::passthrough_dt`), in place of any
//! emulated device in their window.
//!
//! The result is a plain DTB (version 17) written by the small [`writer`] beside this file;
//! `build` checks its inputs, so a DTB it returns is one `dtc` accepts without warnings.

mod writer;

use alloc::vec::Vec;
use core::fmt;

use super::passthrough_dt::PassedDevice;
use writer::{Name, Writer, text};

use super::virtual_board::{
    APB_PCLK_HZ, GICC_BASE, GICC_SIZE, GICD_BASE, GICD_SIZE, GICR_BASE, GICV2_MAX_VCPUS,
    GICV3_MAX_VCPUS, HYP_TIMER_INTID, PHYS_TIMER_INTID, PL011_BASE, PL011_SIZE, PL011_SPI,
    PL031_BASE, PL031_SIZE, PL031_SPI, RAM_BASE, RAM_MAX_SIZE, SEC_PHYS_TIMER_INTID,
    VIRT_TIMER_INTID, VIRTIO_MMIO_FIRST_SPI, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SLOTS, gicr_size,
    intid_to_ppi, virtio_mmio_slot_base,
};

/// Which GIC the guest is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicModel {
    /// GICv2: distributor plus memory-mapped CPU interface (`arm,cortex-a15-gic`).
    V2,
    /// GICv3: distributor plus one redistributor per vCPU, system-register CPU interface.
    V3,
}

/// Everything about a guest's DTB that is not fixed by the virtual board.
#[derive(Clone, Copy, Debug)]
pub struct GuestDtbConfig<'a> {
    /// Bytes of guest RAM starting at [`RAM_BASE`].
    pub ram_size: u64,
    /// The MPIDR of each vCPU, in vCPU order; vCPU 0 is the boot CPU. Only the affinity fields
    /// (Aff3 and Aff2..Aff0) are used, so VMPIDR_EL2 values can be passed as they are.
    pub vcpu_mpidrs: &'a [u64],
    /// The interrupt controller the guest sees.
    pub gic: GicModel,
    /// The kernel command line; an empty string leaves `/chosen/bootargs` out.
    pub bootargs: &'a str,
    /// Guest-physical `(start, end)` of the initrd, end exclusive, if there is one.
    pub initrd: Option<(u64, u64)>,
    /// Host device windows `(base, size)` passed through: no emulated device is described
    /// inside them.
    pub passthrough_windows: &'a [(u64, u64)],
    /// The host's descriptions of the devices in those windows (`super::passthrough_dt`).
    pub passthrough_devices: &'a [PassedDevice<'a>],
}

/// Why a guest DTB could not be built.
#[derive(Debug, PartialEq, Eq)]
pub enum GuestDtbError {
    /// `vcpu_mpidrs` is empty.
    NoVcpus,
    /// More vCPUs than the chosen GIC can address.
    TooManyVcpus {
        /// vCPUs asked for.
        count: usize,
        /// Most the GIC model supports.
        max: usize,
    },
    /// Two vCPUs have the same MPIDR affinity; Linux would bring up only one of them.
    DuplicateMpidr(u64),
    /// `ram_size` is zero or larger than [`RAM_MAX_SIZE`].
    BadRamSize(u64),
    /// The initrd is empty-reversed (`end < start`) or not inside guest RAM.
    InitrdOutsideRam {
        /// Start IPA given.
        start: u64,
        /// End IPA given.
        end: u64,
    },
    /// `bootargs` contains a NUL byte, which cannot be stored in a DTB string.
    BootargsContainNul,
}

impl fmt::Display for GuestDtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVcpus => write!(f, "a guest needs at least one vCPU"),
            Self::TooManyVcpus { count, max } => {
                write!(
                    f,
                    "{count} vCPUs asked for, but this GIC model supports at most {max}"
                )
            }
            Self::DuplicateMpidr(aff) => write!(f, "two vCPUs share MPIDR affinity {aff:#x}"),
            Self::BadRamSize(size) => write!(
                f,
                "guest RAM size {size:#x} is zero or larger than the board's {RAM_MAX_SIZE:#x}"
            ),
            Self::InitrdOutsideRam { start, end } => {
                write!(f, "initrd {start:#x}..{end:#x} is not inside guest RAM")
            }
            Self::BootargsContainNul => write!(f, "bootargs contain a NUL byte"),
        }
    }
}

/// MPIDR_EL1 bits that identify a CPU: Aff3 (39:32) and Aff2..Aff0 (23:0). The DT `cpus`
/// binding puts exactly these in `reg`.
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

// Interrupt specifier cells of the GIC bindings (arm,gic.yaml, arm,gic-v3.yaml).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_TYPE_EDGE_RISING: u32 = 1;
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// Shift of the GICv2 PPI CPU-target mask inside the flags cell.
const GICV2_PPI_CPU_MASK_SHIFT: u32 = 8;

// Any distinct non-zero values would do; they are only referenced inside this DTB.
const GIC_PHANDLE: u32 = 1;
const APB_PCLK_PHANDLE: u32 = 2;

/// PSCI 0.1 function IDs as QEMU lists them. Linux ignores them when `compatible` names
/// PSCI 0.2 or later, but a PSCI 0.1-only guest needs them.
const PSCI_0_1_FUNCTIONS: [(Name, u32); 4] = [
    (Name::CpuSuspend, 0xc400_0001),
    (Name::CpuOff, 0x8400_0002),
    (Name::CpuOn, 0xc400_0003),
    (Name::Migrate, 0xc400_0005),
];

/// Builds the DTB for one guest.
///
/// Fails on inputs that would give the guest an inconsistent machine: no vCPUs, more vCPUs than
/// the GIC addresses, duplicate MPIDRs, RAM of size zero or beyond the board's RAM window, an
/// initrd outside RAM, or bootargs containing NUL.
pub fn build(cfg: &GuestDtbConfig) -> Result<Vec<u8>, GuestDtbError> {
    let ram_end = check_ram(cfg.ram_size)?;
    let cpu_regs = cpu_regs(cfg.vcpu_mpidrs, cfg.gic)?;
    if let Some((start, end)) = cfg.initrd
        && !(RAM_BASE <= start && start <= end && end <= ram_end)
    {
        return Err(GuestDtbError::InitrdOutsideRam { start, end });
    }
    if cfg.bootargs.contains('\0') {
        return Err(GuestDtbError::BootargsContainNul);
    }

    // About 1,500 words for one vCPU and no bootargs; each vCPU adds 20.
    let words = 1600 + 20 * cpu_regs.len() + cfg.bootargs.len() / 4;
    let mut fdt = Writer::with_capacity(words);
    fdt.begin_node(text!(""));
    fdt.u32(Name::InterruptParent, GIC_PHANDLE);
    // Guest RAM is ordinary cacheable memory and Veil's emulated devices see it coherently.
    fdt.null(Name::DmaCoherent);
    fdt.text(Name::Model, text!("linux,dummy-virt"));
    fdt.u32(Name::SizeCells, 2);
    fdt.u32(Name::AddressCells, 2);
    fdt.text(Name::Compatible, text!("linux,dummy-virt"));

    write_psci(&mut fdt);
    write_memory(&mut fdt, cfg.ram_size);
    write_cpus(&mut fdt, &cpu_regs);
    write_timer(&mut fdt, cfg.gic, cpu_regs.len());
    write_gic(&mut fdt, cfg.gic, cpu_regs.len())?;
    write_apb_pclk(&mut fdt);
    write_pl011(&mut fdt);
    let emulated = |base: u64, size: u64| {
        !cfg.passthrough_windows
            .iter()
            .any(|&(b, s)| base < b.saturating_add(s) && b < base + size)
    };
    if emulated(PL031_BASE, PL031_SIZE) {
        write_pl031(&mut fdt);
    }
    write_virtio_mmio(&mut fdt, emulated);
    for device in cfg.passthrough_devices {
        write_passed_device(&mut fdt, device);
    }

    // "/pl011@9000000", which `/chosen/stdout-path` and `/aliases/serial0` name.
    let mut digits = [0; 16];
    let uart: [&[u8]; 2] = [b"/pl011@", writer::hex(PL011_BASE, &mut digits)];
    fdt.begin_node(text!("aliases"));
    fdt.string(Name::Serial0, &uart);
    fdt.end_node();

    fdt.begin_node(text!("chosen"));
    if !cfg.bootargs.is_empty() {
        fdt.string(Name::Bootargs, &[cfg.bootargs.as_bytes()]);
    }
    fdt.string(Name::StdoutPath, &uart);
    if let Some((start, end)) = cfg.initrd {
        // Two cells each, following the root's #address-cells, as QEMU writes them.
        fdt.u64(Name::InitrdStart, start);
        fdt.u64(Name::InitrdEnd, end);
    }
    fdt.end_node();

    fdt.end_node();
    // Only Aff2..Aff0 fit the header field; Linux does not rely on it on arm64 anyway.
    let boot_cpu = cpu_regs.first().copied().unwrap_or(0);
    Ok(fdt.finish((boot_cpu & 0xff_ffff) as u32))
}

/// Returns the end of guest RAM.
fn check_ram(ram_size: u64) -> Result<u64, GuestDtbError> {
    if ram_size == 0 || ram_size > RAM_MAX_SIZE {
        return Err(GuestDtbError::BadRamSize(ram_size));
    }
    // Cannot overflow: RAM_BASE + RAM_MAX_SIZE is a compile-time constant that fits.
    Ok(RAM_BASE + ram_size)
}

/// The `reg` value of each vCPU's node, checked for count and uniqueness.
fn cpu_regs(mpidrs: &[u64], gic: GicModel) -> Result<Vec<u64>, GuestDtbError> {
    let max = match gic {
        GicModel::V2 => GICV2_MAX_VCPUS,
        GicModel::V3 => GICV3_MAX_VCPUS,
    };
    if mpidrs.is_empty() {
        return Err(GuestDtbError::NoVcpus);
    }
    if mpidrs.len() > max {
        return Err(GuestDtbError::TooManyVcpus {
            count: mpidrs.len(),
            max,
        });
    }
    let regs: Vec<u64> = mpidrs.iter().map(|m| m & MPIDR_AFFINITY_MASK).collect();
    for (i, reg) in regs.iter().enumerate() {
        if regs.iter().take(i).any(|earlier| earlier == reg) {
            return Err(GuestDtbError::DuplicateMpidr(*reg));
        }
    }
    Ok(regs)
}

fn write_psci(fdt: &mut Writer) {
    fdt.begin_node(text!("psci"));
    for (name, id) in PSCI_0_1_FUNCTIONS {
        fdt.u32(name, id);
    }
    // Veil answers PSCI itself at EL2; a guest's SMC would go to the host's firmware.
    fdt.text(Name::Method, text!("hvc"));
    fdt.text(
        Name::Compatible,
        text!("arm,psci-1.0\0arm,psci-0.2\0arm,psci"),
    );
    fdt.end_node();
}

fn write_memory(fdt: &mut Writer, ram_size: u64) {
    fdt.begin_node_at(text!("memory"), RAM_BASE);
    fdt.u64s(Name::Reg, &[RAM_BASE, ram_size]);
    fdt.text(Name::DeviceType, text!("memory"));
    fdt.end_node();
}

fn write_cpus(fdt: &mut Writer, regs: &[u64]) {
    // One address cell is enough, and what QEMU uses, until some vCPU has a non-zero Aff3.
    let two_cells = regs.iter().any(|r| r >> 32 != 0);
    fdt.begin_node(text!("cpus"));
    fdt.u32(Name::SizeCells, 0);
    fdt.u32(Name::AddressCells, if two_cells { 2 } else { 1 });
    for &reg in regs {
        fdt.begin_node_at(text!("cpu"), reg);
        if two_cells {
            fdt.u64(Name::Reg, reg);
        } else {
            fdt.u32(Name::Reg, reg as u32);
        }
        fdt.text(Name::EnableMethod, text!("psci"));
        // The generic binding value: the vCPU is whatever the host core is, less what Veil hides.
        fdt.text(Name::Compatible, text!("arm,arm-v8"));
        fdt.text(Name::DeviceType, text!("cpu"));
        fdt.end_node();
    }
    fdt.end_node();
}

fn write_timer(fdt: &mut Writer, gic: GicModel, nr_vcpus: usize) {
    // QEMU describes the timer PPIs as level-high; under GICv2 the flags cell also carries the
    // mask of CPU interfaces the PPI is wired to (all of them).
    let flags = match gic {
        GicModel::V2 => {
            // nr_vcpus <= GICV2_MAX_VCPUS (8) was checked, so the shift cannot overflow.
            let mask = (1u32 << nr_vcpus) - 1;
            IRQ_TYPE_LEVEL_HIGH | (mask << GICV2_PPI_CPU_MASK_SHIFT)
        }
        GicModel::V3 => IRQ_TYPE_LEVEL_HIGH,
    };
    fdt.begin_node(text!("timer"));
    // Order fixed by the arm,armv8-timer binding: secure phys, NS phys, virt, hyp phys.
    let mut cells = [0; 12];
    let intids = [
        SEC_PHYS_TIMER_INTID,
        PHYS_TIMER_INTID,
        VIRT_TIMER_INTID,
        HYP_TIMER_INTID,
    ];
    for (spec, intid) in cells.chunks_exact_mut(3).zip(intids) {
        spec.copy_from_slice(&[GIC_PPI, intid_to_ppi(intid), flags]);
    }
    fdt.u32s(Name::Interrupts, &cells);
    // The counter keeps running in every power state Veil gives a vCPU.
    fdt.null(Name::AlwaysOn);
    fdt.text(Name::Compatible, text!("arm,armv8-timer\0arm,armv7-timer"));
    fdt.end_node();
}

fn write_gic(fdt: &mut Writer, gic: GicModel, nr_vcpus: usize) -> Result<(), GuestDtbError> {
    fdt.begin_node_at(text!("intc"), GICD_BASE);
    fdt.u32(Name::Phandle, GIC_PHANDLE);
    match gic {
        GicModel::V2 => {
            fdt.u64s(Name::Reg, &[GICD_BASE, GICD_SIZE, GICC_BASE, GICC_SIZE]);
            fdt.text(Name::Compatible, text!("arm,cortex-a15-gic"));
        }
        GicModel::V3 => {
            // One redistributor per vCPU rather than QEMU's whole 123-frame window, so the
            // guest never probes a frame that has no vCPU behind it.
            let gicr = gicr_size(nr_vcpus).ok_or(GuestDtbError::TooManyVcpus {
                count: nr_vcpus,
                max: GICV3_MAX_VCPUS,
            })?;
            fdt.u64s(Name::Reg, &[GICD_BASE, GICD_SIZE, GICR_BASE, gicr]);
            fdt.u32(Name::RedistributorRegions, 1);
            fdt.text(Name::Compatible, text!("arm,gic-v3"));
        }
    }
    fdt.null(Name::InterruptController);
    fdt.u32(Name::InterruptCells, 3);
    // The GIC has no children here (no ITS, no v2m), but dtc's interrupt_provider check wants
    // #address-cells on every interrupt controller; 0 says "interrupt-map parents need none".
    fdt.u32(Name::AddressCells, 0);
    fdt.end_node();
    Ok(())
}

fn write_apb_pclk(fdt: &mut Writer) {
    fdt.begin_node(text!("apb-pclk"));
    fdt.u32(Name::Phandle, APB_PCLK_PHANDLE);
    fdt.text(Name::ClockOutputNames, text!("clk24mhz"));
    fdt.u32(Name::ClockFrequency, APB_PCLK_HZ);
    fdt.u32(Name::ClockCells, 0);
    fdt.text(Name::Compatible, text!("fixed-clock"));
    fdt.end_node();
}

fn write_pl011(fdt: &mut Writer) {
    fdt.begin_node_at(text!("pl011"), PL011_BASE);
    // The AMBA bus enables `apb_pclk` before reading the PrimeCell ID, and the pl011 driver
    // takes its baud-rate clock from `uartclk`: without both the UART never probes.
    fdt.text(Name::ClockNames, text!("uartclk\0apb_pclk"));
    fdt.u32s(Name::Clocks, &[APB_PCLK_PHANDLE, APB_PCLK_PHANDLE]);
    fdt.u32s(Name::Interrupts, &[GIC_SPI, PL011_SPI, IRQ_TYPE_LEVEL_HIGH]);
    fdt.u64s(Name::Reg, &[PL011_BASE, PL011_SIZE]);
    fdt.text(Name::Compatible, text!("arm,pl011\0arm,primecell"));
    fdt.end_node();
}

fn write_pl031(fdt: &mut Writer) {
    fdt.begin_node_at(text!("pl031"), PL031_BASE);
    fdt.text(Name::ClockNames, text!("apb_pclk"));
    fdt.u32(Name::Clocks, APB_PCLK_PHANDLE);
    fdt.u32s(Name::Interrupts, &[GIC_SPI, PL031_SPI, IRQ_TYPE_LEVEL_HIGH]);
    fdt.u64s(Name::Reg, &[PL031_BASE, PL031_SIZE]);
    fdt.text(Name::Compatible, text!("arm,pl031\0arm,primecell"));
    fdt.end_node();
}

fn write_virtio_mmio(fdt: &mut Writer, emulated: impl Fn(u64, u64) -> bool) {
    // Ascending addresses, as in QEMU's finished DTB: Linux probes in this order, so the first
    // populated slot becomes vda / eth0 on both.
    for slot in 0..VIRTIO_MMIO_SLOTS {
        let Some(base) = virtio_mmio_slot_base(slot) else {
            break;
        };
        if !emulated(base, VIRTIO_MMIO_SLOT_SIZE) {
            continue;
        }
        fdt.begin_node_at(text!("virtio_mmio"), base);
        fdt.null(Name::DmaCoherent);
        let spi = VIRTIO_MMIO_FIRST_SPI + slot;
        fdt.u32s(Name::Interrupts, &[GIC_SPI, spi, IRQ_TYPE_EDGE_RISING]);
        fdt.u64s(Name::Reg, &[base, VIRTIO_MMIO_SLOT_SIZE]);
        fdt.text(Name::Compatible, text!("virtio,mmio"));
        fdt.end_node();
    }
}

/// A host device passed through, as the host's DTB describes it (see `super::passthrough_dt`
/// for what is kept). Its clocks become the board's `apb-pclk`, one per name: the PrimeCell
/// bus needs `apb_pclk` to read the device's ID, and the guest has no other clock to offer.
fn write_passed_device(fdt: &mut Writer, device: &PassedDevice) {
    let Some(&(base, _)) = device.reg.first() else {
        return;
    };
    fdt.begin_node_named_at(device.name.as_bytes(), base);
    if device.dma_coherent {
        fdt.null(Name::DmaCoherent);
    }
    if let Some(names) = device.clock_names {
        let count = names.split(|&b| b == 0).filter(|n| !n.is_empty()).count();
        fdt.raw(Name::ClockNames, names);
        fdt.u32s(Name::Clocks, &alloc::vec![APB_PCLK_PHANDLE; count]);
    }
    if !device.interrupts.is_empty() {
        let cells: Vec<u32> = device.interrupts.iter().flatten().copied().collect();
        fdt.u32s(Name::Interrupts, &cells);
    }
    let reg: Vec<u64> = device.reg.iter().flat_map(|&(a, s)| [a, s]).collect();
    fdt.u64s(Name::Reg, &reg);
    fdt.raw(Name::Compatible, device.compatible);
    fdt.end_node();
}

#[cfg(test)]
mod tests {
    //! The DTB is checked three ways: parsed back with the `fdt` crate and compared, node by
    //! node and property by property, with a tree written out by hand here; fed to `dtc`, which
    //! must accept it without a warning; and compared with the DTB QEMU itself dumps for the
    //! same `virt` machine, where every difference must be one listed below.

    use super::*;
    use std::collections::BTreeMap;
    use std::process::Command;
    use std::string::ToString;
    use std::vec;

    /// path -> property name -> value, with phandle references replaced by the path they name
    /// so that trees from different writers compare.
    type Tree = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

    const MIB: u64 = 1 << 20;

    fn cfg<'a>(mpidrs: &'a [u64], gic: GicModel) -> GuestDtbConfig<'a> {
        GuestDtbConfig {
            ram_size: 128 * MIB,
            vcpu_mpidrs: mpidrs,
            gic,
            bootargs: "",
            initrd: None,
            passthrough_windows: &[],
            passthrough_devices: &[],
        }
    }

    /// Reads a whole DTB into a [`Tree`] through the `fdt` crate.
    fn parse(dtb: &[u8]) -> Tree {
        let fdt = fdt::Fdt::new(dtb).expect("fdt crate rejects the DTB");
        let root = fdt.find_node("/").expect("no root node");
        let mut raw = Tree::new();
        let mut phandles = BTreeMap::new();
        walk(root, String::new(), &mut raw, &mut phandles);
        // Phandle numbers are arbitrary; what they point at is not.
        for props in raw.values_mut() {
            for name in ["interrupt-parent", "clocks", "phandle"] {
                if let Some(v) = props.get_mut(name) {
                    *v = if name == "phandle" {
                        b"<phandle>".to_vec()
                    } else {
                        refs_of(v, &phandles)
                    };
                }
            }
        }
        raw
    }

    fn walk(
        node: fdt::node::FdtNode,
        path: String,
        out: &mut Tree,
        phandles: &mut BTreeMap<u32, String>,
    ) {
        let shown = if path.is_empty() {
            "/".to_string()
        } else {
            path.clone()
        };
        let mut props = BTreeMap::new();
        for p in node.properties() {
            assert!(
                props.insert(p.name.to_string(), p.value.to_vec()).is_none(),
                "{shown}: duplicate property {}",
                p.name
            );
            if p.name == "phandle" {
                phandles.insert(p.as_usize().unwrap() as u32, shown.clone());
            }
        }
        assert!(out.insert(shown, props).is_none(), "duplicate node {path}");
        for child in node.children() {
            walk(child, format!("{path}/{}", child.name), out, phandles);
        }
    }

    fn refs_of(cells: &[u8], phandles: &BTreeMap<u32, String>) -> Vec<u8> {
        let names: Vec<String> = cells
            .chunks(4)
            .map(|c| {
                let ph = u32::from_be_bytes(c.try_into().unwrap());
                format!(
                    "&{}",
                    phandles
                        .get(&ph)
                        .cloned()
                        .unwrap_or(format!("<dangling {ph}>"))
                )
            })
            .collect();
        names.join(" ").into_bytes()
    }

    // Property value encoders for the hand-written expected trees.
    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }
    fn sl(v: &[&str]) -> Vec<u8> {
        v.iter().flat_map(|x| s(x)).collect()
    }
    fn u32s(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_be_bytes()).collect()
    }
    fn u64s(v: &[u64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_be_bytes()).collect()
    }
    fn r(paths: &[&str]) -> Vec<u8> {
        paths
            .iter()
            .map(|p| format!("&{p}"))
            .collect::<Vec<_>>()
            .join(" ")
            .into_bytes()
    }
    fn node(props: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
        props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// The tree `build` must produce for `c`, written out from the QEMU `virt` DTB by hand
    /// (literal addresses, not the `virtual_board` constants, so a wrong constant shows up).
    fn expected(c: &GuestDtbConfig) -> Tree {
        let mut t = Tree::new();
        t.insert(
            "/".into(),
            node(&[
                ("interrupt-parent", r(&["/intc@8000000"])),
                ("dma-coherent", vec![]),
                ("model", s("linux,dummy-virt")),
                ("#size-cells", u32s(&[2])),
                ("#address-cells", u32s(&[2])),
                ("compatible", s("linux,dummy-virt")),
            ]),
        );
        t.insert(
            "/psci".into(),
            node(&[
                ("cpu_suspend", u32s(&[0xc400_0001])),
                ("cpu_off", u32s(&[0x8400_0002])),
                ("cpu_on", u32s(&[0xc400_0003])),
                ("migrate", u32s(&[0xc400_0005])),
                ("method", s("hvc")),
                (
                    "compatible",
                    sl(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]),
                ),
            ]),
        );
        t.insert(
            "/memory@40000000".into(),
            node(&[
                ("reg", u64s(&[0x4000_0000, c.ram_size])),
                ("device_type", s("memory")),
            ]),
        );
        let aff: Vec<u64> = c.vcpu_mpidrs.iter().map(|m| m & 0xff_00ff_ffff).collect();
        let two = aff.iter().any(|a| *a > u32::MAX as u64);
        t.insert(
            "/cpus".into(),
            node(&[
                ("#size-cells", u32s(&[0])),
                ("#address-cells", u32s(&[if two { 2 } else { 1 }])),
            ]),
        );
        for a in &aff {
            let reg = if two { u64s(&[*a]) } else { u32s(&[*a as u32]) };
            t.insert(
                format!("/cpus/cpu@{a:x}"),
                node(&[
                    ("reg", reg),
                    ("enable-method", s("psci")),
                    ("compatible", s("arm,arm-v8")),
                    ("device_type", s("cpu")),
                ]),
            );
        }
        let n = c.vcpu_mpidrs.len() as u32;
        let tflags = match c.gic {
            GicModel::V2 => 4 | (((1 << n) - 1) << 8),
            GicModel::V3 => 4,
        };
        t.insert(
            "/timer".into(),
            node(&[
                (
                    "interrupts",
                    u32s(&[1, 13, tflags, 1, 14, tflags, 1, 11, tflags, 1, 10, tflags]),
                ),
                ("always-on", vec![]),
                ("compatible", sl(&["arm,armv8-timer", "arm,armv7-timer"])),
            ]),
        );
        let mut gic = node(&[
            ("phandle", b"<phandle>".to_vec()),
            ("interrupt-controller", vec![]),
            ("#interrupt-cells", u32s(&[3])),
            ("#address-cells", u32s(&[0])),
        ]);
        match c.gic {
            GicModel::V2 => {
                gic.insert(
                    "reg".into(),
                    u64s(&[0x800_0000, 0x1_0000, 0x801_0000, 0x1_0000]),
                );
                gic.insert("compatible".into(), s("arm,cortex-a15-gic"));
            }
            GicModel::V3 => {
                let gicr = 0x2_0000 * n as u64;
                gic.insert(
                    "reg".into(),
                    u64s(&[0x800_0000, 0x1_0000, 0x80a_0000, gicr]),
                );
                gic.insert("#redistributor-regions".into(), u32s(&[1]));
                gic.insert("compatible".into(), s("arm,gic-v3"));
            }
        }
        t.insert("/intc@8000000".into(), gic);
        t.insert(
            "/apb-pclk".into(),
            node(&[
                ("phandle", b"<phandle>".to_vec()),
                ("clock-output-names", s("clk24mhz")),
                ("clock-frequency", u32s(&[24_000_000])),
                ("#clock-cells", u32s(&[0])),
                ("compatible", s("fixed-clock")),
            ]),
        );
        t.insert(
            "/pl011@9000000".into(),
            node(&[
                ("clock-names", sl(&["uartclk", "apb_pclk"])),
                ("clocks", r(&["/apb-pclk", "/apb-pclk"])),
                ("interrupts", u32s(&[0, 1, 4])),
                ("reg", u64s(&[0x900_0000, 0x1000])),
                ("compatible", sl(&["arm,pl011", "arm,primecell"])),
            ]),
        );
        t.insert(
            "/pl031@9010000".into(),
            node(&[
                ("clock-names", s("apb_pclk")),
                ("clocks", r(&["/apb-pclk"])),
                ("interrupts", u32s(&[0, 2, 4])),
                ("reg", u64s(&[0x901_0000, 0x1000])),
                ("compatible", sl(&["arm,pl031", "arm,primecell"])),
            ]),
        );
        for i in 0..32u64 {
            let base = 0x0a00_0000 + i * 0x200;
            t.insert(
                format!("/virtio_mmio@{base:x}"),
                node(&[
                    ("dma-coherent", vec![]),
                    ("interrupts", u32s(&[0, 16 + i as u32, 1])),
                    ("reg", u64s(&[base, 0x200])),
                    ("compatible", s("virtio,mmio")),
                ]),
            );
        }
        t.insert("/aliases".into(), node(&[("serial0", s("/pl011@9000000"))]));
        let mut chosen = node(&[("stdout-path", s("/pl011@9000000"))]);
        if !c.bootargs.is_empty() {
            chosen.insert("bootargs".into(), s(c.bootargs));
        }
        if let Some((start, end)) = c.initrd {
            chosen.insert("linux,initrd-start".into(), u64s(&[start]));
            chosen.insert("linux,initrd-end".into(), u64s(&[end]));
        }
        t.insert("/chosen".into(), chosen);
        t
    }

    /// vCPU MPIDRs, GIC, bootargs, initrd.
    type Combo = (Vec<u64>, GicModel, &'static str, Option<(u64, u64)>);

    /// Every combination the acceptance list names: 1..8 vCPUs, both GICs, with and without
    /// bootargs and initrd.
    fn all_configs() -> Vec<Combo> {
        let mut v = Vec::new();
        for n in 1..=8u64 {
            for gic in [GicModel::V2, GicModel::V3] {
                for bootargs in ["", "console=ttyAMA0 earlycon rdinit=/init"] {
                    for initrd in [None, Some((0x4400_0000, 0x4412_3456))] {
                        v.push(((0..n).collect(), gic, bootargs, initrd));
                    }
                }
            }
        }
        v
    }

    #[test]
    fn round_trip_matches_expected_tree() {
        for (mpidrs, gic, bootargs, initrd) in all_configs() {
            let c = GuestDtbConfig {
                bootargs,
                initrd,
                ..cfg(&mpidrs, gic)
            };
            let dtb = build(&c).unwrap();
            let got = parse(&dtb);
            let want = expected(&c);
            // Compare node lists first so a failure names the node, not a 40-node diff.
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "nodes for {c:?}"
            );
            for (path, props) in &want {
                assert_eq!(&got[path], props, "node {path} for {c:?}");
            }
        }
    }

    #[test]
    fn fdt_crate_accessors_see_the_board() {
        let mpidrs = [0x8000_0000, 0x8000_0001, 0x8000_0100];
        let c = GuestDtbConfig {
            ram_size: 512 * MIB,
            bootargs: "console=ttyAMA0",
            initrd: Some((0x4800_0000, 0x4900_0000)),
            ..cfg(&mpidrs, GicModel::V3)
        };
        let dtb = build(&c).unwrap();
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        assert_eq!(fdt.total_size(), dtb.len());
        assert_eq!(fdt.root().compatible().first(), "linux,dummy-virt");
        let ids: Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
        assert_eq!(ids, [0, 1, 0x100]);
        let mem: Vec<_> = fdt.memory().regions().collect();
        assert_eq!(mem.len(), 1);
        assert_eq!(mem[0].starting_address as u64, 0x4000_0000);
        assert_eq!(mem[0].size, Some(512 << 20));
        assert_eq!(fdt.chosen().bootargs(), Some("console=ttyAMA0"));
        let uart = fdt.chosen().stdout().expect("stdout-path does not resolve");
        assert_eq!(uart.name, "pl011@9000000");
        assert_eq!(
            uart.reg().unwrap().next().unwrap().starting_address as u64,
            0x900_0000
        );
        // The fdt crate does not inherit interrupt-parent; Linux takes it from the root.
        let root = fdt.find_node("/").unwrap();
        assert_eq!(root.interrupt_parent().unwrap().name, "intc@8000000");
        assert!(fdt.find_compatible(&["arm,gic-v3"]).is_some());
        assert_eq!(fdt.find_all_nodes("/virtio_mmio").count(), 32);
    }

    #[test]
    fn aff3_needs_two_address_cells() {
        let mpidrs = [0, 0x1_0000_0000];
        let c = cfg(&mpidrs, GicModel::V3);
        let dtb = build(&c).unwrap();
        let got = parse(&dtb);
        assert_eq!(got, expected(&c));
        assert_eq!(got["/cpus/cpu@100000000"]["reg"], u64s(&[0x1_0000_0000]));
        dtc_accepts(&dtb, "aff3");
    }

    #[test]
    fn boot_cpu_is_vcpu_0() {
        let mpidrs = [0x8000_0203, 0];
        let dtb = build(&cfg(&mpidrs, GicModel::V3)).unwrap();
        // boot_cpuid_phys, header word 7.
        assert_eq!(u32::from_be_bytes(dtb[28..32].try_into().unwrap()), 0x203);
    }

    #[test]
    fn rejects_inconsistent_configs() {
        let one = [0u64];
        let nine: Vec<u64> = (0..9).collect();
        let many: Vec<u64> = (0..124).collect();
        let max_v3: Vec<u64> = (0..123).collect();
        assert_eq!(build(&cfg(&[], GicModel::V3)), Err(GuestDtbError::NoVcpus));
        assert_eq!(
            build(&cfg(&nine, GicModel::V2)),
            Err(GuestDtbError::TooManyVcpus { count: 9, max: 8 })
        );
        assert!(build(&cfg(&nine, GicModel::V3)).is_ok());
        assert!(build(&cfg(&max_v3, GicModel::V3)).is_ok());
        assert_eq!(
            build(&cfg(&many, GicModel::V3)),
            Err(GuestDtbError::TooManyVcpus {
                count: 124,
                max: 123
            })
        );
        // Bit 31 (RES1) differs but the affinity is the same CPU.
        assert_eq!(
            build(&cfg(&[0x8000_0001, 1], GicModel::V2)),
            Err(GuestDtbError::DuplicateMpidr(1))
        );
        for bad in [0, RAM_MAX_SIZE + 1, u64::MAX] {
            assert_eq!(
                build(&GuestDtbConfig {
                    ram_size: bad,
                    ..cfg(&one, GicModel::V3)
                }),
                Err(GuestDtbError::BadRamSize(bad))
            );
        }
        assert!(
            build(&GuestDtbConfig {
                ram_size: RAM_MAX_SIZE,
                ..cfg(&one, GicModel::V3)
            })
            .is_ok()
        );
        let ram_end = 0x4000_0000 + 128 * MIB;
        for (start, end) in [
            (0x3fff_f000, 0x4000_1000),
            (0x4100_0000, 0x40ff_0000),
            (ram_end - 0x1000, ram_end + 1),
            (u64::MAX - 1, u64::MAX),
        ] {
            assert_eq!(
                build(&GuestDtbConfig {
                    initrd: Some((start, end)),
                    ..cfg(&one, GicModel::V3)
                }),
                Err(GuestDtbError::InitrdOutsideRam { start, end })
            );
        }
        // Exactly filling RAM, and empty, are both fine.
        for initrd in [(0x4000_0000, ram_end), (ram_end, ram_end)] {
            assert!(
                build(&GuestDtbConfig {
                    initrd: Some(initrd),
                    ..cfg(&one, GicModel::V3)
                })
                .is_ok()
            );
        }
        assert_eq!(
            build(&GuestDtbConfig {
                bootargs: "a\0b",
                ..cfg(&one, GicModel::V3)
            }),
            Err(GuestDtbError::BootargsContainNul)
        );
        // Every error has a message.
        assert!(!GuestDtbError::NoVcpus.to_string().is_empty());
    }

    /// Path of a scratch file unique to this test process and `tag`.
    fn scratch(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("veil-guest-dtb-{}-{tag}.dtb", std::process::id()))
    }

    fn dtc_accepts(dtb: &[u8], tag: &str) {
        let path = scratch(tag);
        std::fs::write(&path, dtb).unwrap();
        let out = Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts", "-o", "/dev/null"])
            .arg(&path)
            .output();
        std::fs::remove_file(&path).ok();
        let Ok(out) = out else {
            std::eprintln!("dtc not installed; skipping the dtc check");
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "dtc on {tag}: {stderr}"
        );
    }

    #[test]
    fn passed_through_devices_replace_emulated_ones() {
        // QEMU's own PL031 and fw-cfg, and the first virtio-mmio slot's window.
        let host = include_bytes!("../../tests/fixtures/qemu-virt-gicv3.dtb");
        let windows = [
            (PL031_BASE, 0x1000),
            (0x0902_0000, 0x1000),
            (0x0a00_0000, 0x200),
        ];
        let devices = super::super::passthrough_dt::find(host, &windows, &[34]);
        let mpidrs = [0x8000_0000];
        let mut c = cfg(&mpidrs, GicModel::V3);
        c.passthrough_windows = &windows;
        c.passthrough_devices = &devices;
        let dtb = build(&c).unwrap();
        dtc_accepts(&dtb, "passthrough");
        let tree = parse(&dtb);
        let rtc = &tree["/pl031@9010000"];
        assert_eq!(rtc["compatible"], sl(&["arm,pl031", "arm,primecell"]));
        assert_eq!(rtc["interrupts"], u32s(&[0, 2, 4]));
        assert_eq!(rtc["clock-names"], s("apb_pclk"));
        assert_eq!(rtc["clocks"], r(&["/apb-pclk"]));
        assert_eq!(rtc["reg"], u64s(&[PL031_BASE, 0x1000]));
        let fw_cfg = &tree["/fw-cfg@9020000"];
        assert_eq!(fw_cfg["compatible"], s("qemu,fw-cfg-mmio"));
        assert_eq!(fw_cfg["reg"], u64s(&[0x0902_0000, 0x18]));
        assert!(fw_cfg.contains_key("dma-coherent"));
        // The first virtio slot is the host's now: its node is QEMU's, without the interrupt
        // (SPI 16, not passed); the next slot is still Veil's, with its interrupt.
        let slot = &tree["/virtio_mmio@a000000"];
        assert!(!slot.contains_key("interrupts"));
        assert!(slot.contains_key("dma-coherent"));
        assert!(tree["/virtio_mmio@a000200"].contains_key("interrupts"));
        assert_eq!(
            tree.keys().filter(|k| k.starts_with("/pl031")).count(),
            1,
            "one RTC: the host's"
        );
        // Without passthrough the board is as before.
        let plain = parse(&build(&cfg(&mpidrs, GicModel::V3)).unwrap());
        assert!(!plain.contains_key("/fw-cfg@9020000"));
        assert!(plain.contains_key("/virtio_mmio@a000000"));
    }

    #[test]
    fn dtc_accepts_without_warnings() {
        for (i, (mpidrs, gic, bootargs, initrd)) in all_configs().into_iter().enumerate() {
            let c = GuestDtbConfig {
                bootargs,
                initrd,
                ..cfg(&mpidrs, gic)
            };
            dtc_accepts(&build(&c).unwrap(), &format!("cfg{i}"));
        }
    }

    /// Nodes of QEMU's `virt` DTB that Veil leaves out on purpose: devices it does not emulate
    /// (and their helpers), plus QEMU's CPU topology map.
    fn omitted_from_qemu(path: &str) -> bool {
        const PREFIXES: [&str; 9] = [
            "/platform-bus@",
            "/fw-cfg@",
            "/gpio-keys",
            "/pl061@",
            "/pcie@",
            "/pmu",
            "/flash@",
            "/intc@8000000/",
            "/cpus/cpu-map",
        ];
        PREFIXES.iter().any(|p| path.starts_with(p))
    }

    /// Properties where Veil knowingly differs from QEMU, and why.
    fn differs_from_qemu(path: &str, prop: &str) -> bool {
        matches!(
            (path, prop),
            // QEMU names the model it emulates (cortex-a57 for -cpu max); Veil's vCPU is the
            // host core, so it uses the generic binding value.
            (p, "compatible") if p.starts_with("/cpus/cpu@")
        ) || matches!(
            (path, prop),
            // QEMU leaves enable-method out with a single CPU; Veil always says PSCI, which
            // is true and harmless.
            (p, "enable-method") if p.starts_with("/cpus/cpu@")
        ) || matches!(
            (path, prop),
            // QEMU sizes GICR for 123 frames; Veil for the vCPUs it has. QEMU's intc has
            // address cells for its ITS/v2m child, Veil's has no children.
            ("/intc@8000000", "reg" | "#address-cells")
        ) || matches!(
            (path, prop),
            // Guest-specific, and QEMU was given none.
            (
                "/chosen",
                "bootargs" | "linux,initrd-start" | "linux,initrd-end"
            )
        )
    }

    fn qemu_dtb(gic: GicModel, smp: usize) -> Option<Vec<u8>> {
        let path = scratch(&format!("qemu-{gic:?}-{smp}"));
        let gic_arg = match gic {
            GicModel::V2 => 2,
            GicModel::V3 => 3,
        };
        let status = Command::new("qemu-system-aarch64")
            .arg("-M")
            .arg(format!(
                "virt,gic-version={gic_arg},dumpdtb={}",
                path.display()
            ))
            .args(["-cpu", "max", "-m", "128M", "-display", "none", "-smp"])
            .arg(smp.to_string())
            .output()
            .ok()?;
        let dtb = std::fs::read(&path).ok();
        std::fs::remove_file(&path).ok();
        assert!(
            status.status.success(),
            "qemu: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        dtb
    }

    #[test]
    fn matches_qemu_virt_dtb() {
        for (gic, smp) in [
            (GicModel::V2, 1),
            (GicModel::V2, 8),
            (GicModel::V3, 4),
            (GicModel::V3, 8),
        ] {
            let Some(qemu) = qemu_dtb(gic, smp) else {
                std::eprintln!("qemu-system-aarch64 not installed; skipping the QEMU comparison");
                return;
            };
            let qemu = parse(&qemu);
            let mpidrs: Vec<u64> = (0..smp as u64).collect();
            let c = GuestDtbConfig {
                bootargs: "console=ttyAMA0",
                initrd: Some((0x4400_0000, 0x4410_0000)),
                ..cfg(&mpidrs, gic)
            };
            let ours = parse(&build(&c).unwrap());
            for (path, props) in &ours {
                let theirs = qemu
                    .get(path)
                    .unwrap_or_else(|| panic!("{gic:?}/{smp}: QEMU has no node {path}"));
                for (name, value) in props {
                    if differs_from_qemu(path, name) {
                        continue;
                    }
                    assert_eq!(
                        theirs.get(name),
                        Some(value),
                        "{gic:?}/{smp}: {path} {name} differs from QEMU"
                    );
                }
                // What QEMU says about a device Veil shows must be said by Veil too, except
                // the per-boot seeds (Veil has no entropy source to offer) and CPU phandles
                // (only QEMU's cpu-map refers to them).
                for name in theirs.keys() {
                    let allowed_missing = matches!(
                        (path.as_str(), name.as_str()),
                        ("/chosen", "rng-seed" | "kaslr-seed")
                            | ("/intc@8000000", "#size-cells" | "ranges")
                    ) || (path.starts_with("/cpus/cpu@")
                        && name == "phandle");
                    assert!(
                        props.contains_key(name) || allowed_missing,
                        "{gic:?}/{smp}: {path} lacks QEMU's property {name}"
                    );
                }
            }
            for path in qemu.keys() {
                assert!(
                    ours.contains_key(path) || omitted_from_qemu(path),
                    "{gic:?}/{smp}: QEMU node {path} is neither built nor listed as omitted"
                );
            }
        }
    }
}
