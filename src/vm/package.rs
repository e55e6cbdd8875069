//! The VM package reader: the guests Veil runs arrive beside it in one blob, placed in RAM by
//! the boot loader as if it were an initrd (format: `docs/VM_PACKAGE.md`).
//!
//! The package is a flattened device tree with one `vm@N` node per guest. This module checks
//! the package as a whole ([`Package::parse`]) and then each VM on its own ([`Package::vms`]),
//! so that one badly described VM is reported by index, name and field while the others still
//! start. It only reads: kernels and initrds are returned as slices of the blob for the loader
//! to copy into the VM's own memory; whether that memory is free is the allocator's question.
//!
//! The blob comes from outside Veil, so it is checked by the same structural validator as the
//! host DTB before the `fdt` crate walks it, and every value is decoded here with its length
//! checked: no input makes this module panic.

use core::fmt;

use fdt::Fdt;
use fdt::node::FdtNode;

use crate::board::discovery::{FdtError, check_fdt};

/// The root `compatible` of a VM package.
pub const PACKAGE_COMPATIBLE: &str = "veil,vm-package";
/// The `veil,package-version` this reader understands.
pub const PACKAGE_VERSION: u32 = 1;
/// Most vCPUs one VM may have.
pub const MAX_VCPUS: u32 = 8;
/// Longest VM name, in bytes.
pub const MAX_NAME_LEN: usize = 31;
/// Where guest RAM starts in the guest's physical (IPA) space.
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;
/// Guest RAM comes in 2 MiB blocks so that stage 2 can map it with block descriptors.
pub const GUEST_RAM_ALIGN: u64 = 2 << 20;

/// A checked VM package; borrows the blob.
#[derive(Clone, Copy, Debug)]
pub struct Package<'a> {
    fdt: Fdt<'a>,
}

/// One VM as the package describes it; the slices point into the package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSpec<'a> {
    /// Position in start order, which the node's unit address repeats (`vm@0`, `vm@1`, ...).
    pub index: u32,
    pub name: &'a str,
    /// Bytes of guest RAM at [`GUEST_RAM_BASE`]; a non-zero multiple of 2 MiB.
    pub memory_size: u64,
    /// 1..=[`MAX_VCPUS`].
    pub cpus: u32,
    /// 2 or 3, or `None` for the host GIC's version.
    pub gic_version: Option<u32>,
    /// An arm64 Image, an ELF64 or a raw binary; never empty. Only 4-byte aligned.
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    /// The guest's `/chosen/bootargs`, or "".
    pub bootargs: &'a str,
    /// `passthrough-mmio`: host device windows mapped into the guest at the same address, as
    /// big-endian (base, size) u64 pairs; checked to be whole pairs.
    pub passthrough_mmio: &'a [u8],
    /// `passthrough-spis`: host SPIs (INTIDs) delivered to the guest, big-endian u32s.
    pub passthrough_spis: &'a [u8],
}

impl VmSpec<'_> {
    /// The passthrough device windows, (base, size).
    pub fn passthrough_regions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.passthrough_mmio.chunks_exact(16).map(|c| {
            let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
            (word(&c[..8]), word(&c[8..]))
        })
    }

    /// The passthrough SPIs, as INTIDs.
    pub fn passthrough_intids(&self) -> impl Iterator<Item = u32> + '_ {
        self.passthrough_spis
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap_or([0; 4])))
    }
}

/// Why the package as a whole was refused; no VM starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageError {
    /// The blob is not a readable device tree.
    Fdt(FdtError),
    /// The root is not `compatible = "veil,vm-package"`.
    NotAPackage,
    MissingVersion,
    /// `veil,package-version` is not one 32-bit cell.
    BadVersion,
    UnsupportedVersion(u32),
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fdt(e) => write!(f, "the VM package is unreadable: {e}"),
            Self::NotAPackage => write!(
                f,
                "the initrd is not a VM package: its root is not compatible with \
                 \"{PACKAGE_COMPATIBLE}\""
            ),
            Self::MissingVersion => write!(f, "the VM package has no `veil,package-version`"),
            Self::BadVersion => {
                write!(
                    f,
                    "the VM package's `veil,package-version` is not one 32-bit number"
                )
            }
            Self::UnsupportedVersion(v) => write!(
                f,
                "the VM package has version {v}, but this Veil reads version {PACKAGE_VERSION}"
            ),
        }
    }
}

/// What is wrong with one field of one VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmProblem {
    Missing,
    Empty,
    /// A string that is not NUL-terminated UTF-8 without embedded NULs.
    NotAString,
    /// A name with bytes outside printable ASCII.
    NotPrintable,
    TooLong,
    /// A number stored in the wrong number of bytes.
    WrongSize {
        expected: usize,
        found: usize,
    },
    Zero,
    Unaligned(u64),
    /// Guest RAM would run past the end of the 64-bit address space.
    TooLarge(u64),
    CpusOutOfRange(u32),
    UnsupportedGic(u32),
    /// The node's unit address is not its position in the package.
    WrongUnitAddress,
}

/// Why one VM cannot start; the other VMs are unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSpecError<'a> {
    pub index: u32,
    /// The VM's name, when that much of it was valid.
    pub name: Option<&'a str>,
    /// The property at fault, as spelled in the package.
    pub field: &'static str,
    pub problem: VmProblem,
}

impl fmt::Display for VmSpecError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VM {}", self.index)?;
        if let Some(name) = self.name {
            write!(f, " ({name:?})")?;
        }
        write!(f, ": `{}` ", self.field)?;
        match self.problem {
            VmProblem::Missing => write!(f, "is missing"),
            VmProblem::Empty => write!(f, "is empty"),
            VmProblem::NotAString => write!(f, "is not a NUL-terminated UTF-8 string"),
            VmProblem::NotPrintable => write!(f, "may hold only printable ASCII characters"),
            VmProblem::TooLong => write!(f, "is longer than {MAX_NAME_LEN} bytes"),
            VmProblem::WrongSize { expected, found } => {
                write!(f, "is {found} bytes long; it must be {expected}")
            }
            VmProblem::Zero => write!(f, "is zero"),
            VmProblem::Unaligned(v) => write!(f, "{v:#x} is not a multiple of 2 MiB"),
            VmProblem::TooLarge(v) => write!(f, "{v:#x} does not fit in the guest address space"),
            VmProblem::CpusOutOfRange(n) => {
                write!(f, "is {n}, but a VM has 1 to {MAX_VCPUS} vCPUs")
            }
            VmProblem::UnsupportedGic(n) => write!(f, "is {n}; it must be 2 or 3"),
            VmProblem::WrongUnitAddress => {
                write!(
                    f,
                    "is not vm@{:x}, the VM's position in the package",
                    self.index
                )
            }
        }
    }
}

impl<'a> Package<'a> {
    /// Checks the blob is a VM package this Veil understands. `blob` may run past the tree's
    /// end (boot loaders round the initrd size up).
    pub fn parse(blob: &'a [u8]) -> Result<Self, PackageError> {
        let fdt = check_fdt(blob).map_err(PackageError::Fdt)?;
        {
            let root = fdt.find_node("/").ok_or(PackageError::NotAPackage)?;
            let compatible = root
                .compatible()
                .is_some_and(|c| c.all().any(|s| s == PACKAGE_COMPATIBLE));
            if !compatible {
                return Err(PackageError::NotAPackage);
            }
            let version = root
                .property("veil,package-version")
                .ok_or(PackageError::MissingVersion)?;
            match u32_value(version.value) {
                Some(PACKAGE_VERSION) => {}
                Some(other) => return Err(PackageError::UnsupportedVersion(other)),
                None => return Err(PackageError::BadVersion),
            }
        }
        Ok(Self { fdt })
    }

    /// The VMs in start order, each checked on its own. Children of the root not named `vm`
    /// (with a unit address) are skipped, so later formats can add nodes this Veil ignores.
    pub fn vms(&self) -> impl Iterator<Item = Result<VmSpec<'a>, VmSpecError<'a>>> + '_ {
        self.fdt
            .find_node("/")
            .into_iter()
            .flat_map(|root| root.children())
            .filter(|node| node.name.split('@').next() == Some("vm"))
            .zip(0..=u32::MAX)
            .map(|(node, index)| vm_spec(node, index))
    }

    /// The package's size as its header gives it.
    pub fn total_size(&self) -> usize {
        self.fdt.total_size()
    }
}

fn vm_spec<'a>(node: FdtNode<'_, 'a>, index: u32) -> Result<VmSpec<'a>, VmSpecError<'a>> {
    let fail = |name, field, problem| VmSpecError {
        index,
        name,
        field,
        problem,
    };
    let name = match node.property("vm-name") {
        None => Err(VmProblem::Missing),
        Some(p) => vm_name(p.value),
    }
    .map_err(|problem| fail(None, "vm-name", problem))?;
    let fail = |field, problem| fail(Some(name), field, problem);

    // DT unit addresses are hex. The position decides the index; the unit address only
    // catches a package whose writer and reader disagree about the order.
    let unit = node.name.split_once('@').map(|(_, unit)| unit);
    let hex = unit.filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex.and_then(|u| u32::from_str_radix(u, 16).ok()) != Some(index) {
        return Err(fail("unit address", VmProblem::WrongUnitAddress));
    }

    let memory_size = {
        let value = node
            .property("memory-size")
            .ok_or(fail("memory-size", VmProblem::Missing))?
            .value;
        let size = u64_value(value).ok_or(fail(
            "memory-size",
            VmProblem::WrongSize {
                expected: 8,
                found: value.len(),
            },
        ))?;
        if size == 0 {
            return Err(fail("memory-size", VmProblem::Zero));
        }
        if !size.is_multiple_of(GUEST_RAM_ALIGN) {
            return Err(fail("memory-size", VmProblem::Unaligned(size)));
        }
        if GUEST_RAM_BASE.checked_add(size).is_none() {
            return Err(fail("memory-size", VmProblem::TooLarge(size)));
        }
        size
    };

    let cpus = {
        let value = node
            .property("cpus")
            .ok_or(fail("cpus", VmProblem::Missing))?
            .value;
        let cpus = u32_value(value).ok_or(fail(
            "cpus",
            VmProblem::WrongSize {
                expected: 4,
                found: value.len(),
            },
        ))?;
        if !(1..=MAX_VCPUS).contains(&cpus) {
            return Err(fail("cpus", VmProblem::CpusOutOfRange(cpus)));
        }
        cpus
    };

    let gic_version = match node.property("gic-version") {
        None => None,
        Some(p) => match u32_value(p.value) {
            Some(v @ (2 | 3)) => Some(v),
            Some(v) => return Err(fail("gic-version", VmProblem::UnsupportedGic(v))),
            None => {
                let problem = VmProblem::WrongSize {
                    expected: 4,
                    found: p.value.len(),
                };
                return Err(fail("gic-version", problem));
            }
        },
    };

    let kernel = node
        .property("kernel")
        .ok_or(fail("kernel", VmProblem::Missing))?
        .value;
    if kernel.is_empty() {
        return Err(fail("kernel", VmProblem::Empty));
    }

    let initrd = match node.property("initrd") {
        None => None,
        Some(p) if p.value.is_empty() => return Err(fail("initrd", VmProblem::Empty)),
        Some(p) => Some(p.value),
    };

    let bootargs = match node.property("bootargs") {
        None => "",
        Some(p) => text(p.value).ok_or(fail("bootargs", VmProblem::NotAString))?,
    };

    let passthrough_mmio = match node.property("passthrough-mmio") {
        None => &[][..],
        Some(p) if p.value.len() % 16 != 0 => {
            return Err(fail(
                "passthrough-mmio",
                VmProblem::WrongSize {
                    expected: 16,
                    found: p.value.len() % 16,
                },
            ));
        }
        Some(p) => p.value,
    };
    let passthrough_spis = match node.property("passthrough-spis") {
        None => &[][..],
        Some(p) if p.value.len() % 4 != 0 => {
            return Err(fail(
                "passthrough-spis",
                VmProblem::WrongSize {
                    expected: 4,
                    found: p.value.len() % 4,
                },
            ));
        }
        Some(p) => p.value,
    };

    Ok(VmSpec {
        index,
        name,
        memory_size,
        cpus,
        gic_version,
        kernel,
        initrd,
        bootargs,
        passthrough_mmio,
        passthrough_spis,
    })
}

/// A string property: UTF-8 ending in its only NUL.
fn text(value: &[u8]) -> Option<&str> {
    let (last, body) = value.split_last()?;
    if *last != 0 || body.contains(&0) {
        return None;
    }
    core::str::from_utf8(body).ok()
}

/// The name: printable ASCII, 1 to 31 bytes, since it appears in every log line about the VM.
fn vm_name(value: &[u8]) -> Result<&str, VmProblem> {
    let (last, body) = value.split_last().ok_or(VmProblem::NotAString)?;
    if *last != 0 || body.contains(&0) {
        return Err(VmProblem::NotAString);
    }
    if body.is_empty() {
        return Err(VmProblem::Empty);
    }
    if !body.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(VmProblem::NotPrintable);
    }
    if body.len() > MAX_NAME_LEN {
        return Err(VmProblem::TooLong);
    }
    core::str::from_utf8(body).map_err(|_| VmProblem::NotPrintable)
}

fn u32_value(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

/// A `<hi lo>` pair of cells.
fn u64_value(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;
    use vm_fdt::FdtWriter;

    /// A package root with `compatible` and `version`, then whatever `body` writes.
    fn package_with(
        compatible: &str,
        version: &[u8],
        body: impl FnOnce(&mut FdtWriter),
    ) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_string("compatible", compatible).unwrap();
        w.property("veil,package-version", version).unwrap();
        body(&mut w);
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn package(body: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
        package_with(PACKAGE_COMPATIBLE, &1u32.to_be_bytes(), body)
    }

    /// A `vm@{unit}` node: a valid VM named `name`, then `extra` (which may override a field;
    /// the reader takes the first of two properties with one name, so overrides go first).
    fn vm(w: &mut FdtWriter, unit: u32, name: &str, extra: impl FnOnce(&mut FdtWriter)) {
        let node = w.begin_node(&alloc::format!("vm@{unit:x}")).unwrap();
        extra(w);
        w.property_string("vm-name", name).unwrap();
        w.property_u64("memory-size", 64 << 20).unwrap();
        w.property_u32("cpus", 1).unwrap();
        w.property("kernel", &[0xaa; 100]).unwrap();
        w.end_node(node).unwrap();
    }

    fn parse_vms(blob: &[u8]) -> Vec<Result<VmSpec<'_>, VmSpecError<'_>>> {
        Package::parse(blob).unwrap().vms().collect()
    }

    fn only_error(extra: impl FnOnce(&mut FdtWriter)) -> VmSpecError<'static> {
        let blob = package(|w| vm(w, 0, "guest", extra));
        let blob: &'static [u8] = Vec::leak(blob);
        let vms: Vec<_> = Package::parse(blob).unwrap().vms().collect();
        assert_eq!(vms.len(), 1);
        vms[0].unwrap_err()
    }

    #[test]
    fn full_and_minimal_vms() {
        let kernel: Vec<u8> = (0..=255).cycle().take(1 << 20).collect();
        let blob = package(|w| {
            let n = w.begin_node("vm@0").unwrap();
            w.property_string("vm-name", "linux").unwrap();
            w.property_u64("memory-size", 256 << 20).unwrap();
            w.property_u32("cpus", 4).unwrap();
            w.property_u32("gic-version", 2).unwrap();
            w.property("kernel", &kernel).unwrap();
            w.property("initrd", b"070701").unwrap();
            w.property_string("bootargs", "console=ttyAMA0 rdinit=/init")
                .unwrap();
            w.end_node(n).unwrap();
            vm(w, 1, "tiny", |_| {});
        });
        let package = Package::parse(&blob).unwrap();
        assert_eq!(package.total_size(), blob.len());
        let vms: Vec<_> = package.vms().map(Result::unwrap).collect();
        assert_eq!(
            vms[0],
            VmSpec {
                index: 0,
                name: "linux",
                memory_size: 256 << 20,
                cpus: 4,
                gic_version: Some(2),
                kernel: &kernel,
                initrd: Some(b"070701"),
                bootargs: "console=ttyAMA0 rdinit=/init",
                passthrough_mmio: &[],
                passthrough_spis: &[],
            }
        );
        let tiny = vms[1];
        assert_eq!(
            (tiny.index, tiny.name, tiny.cpus, tiny.gic_version),
            (1, "tiny", 1, None)
        );
        assert_eq!(
            (tiny.initrd, tiny.bootargs, tiny.kernel.len()),
            (None, "", 100)
        );
        assert_eq!(vms.len(), 2);
    }

    #[test]
    fn an_empty_package_has_no_vms_and_other_nodes_are_skipped() {
        assert_eq!(parse_vms(&package(|_| {})).len(), 0);
        let blob = package(|w| {
            let n = w.begin_node("future-extension").unwrap();
            w.end_node(n).unwrap();
            vm(w, 0, "a", |_| {});
        });
        assert_eq!(parse_vms(&blob)[0].unwrap().name, "a");
    }

    #[test]
    fn trailing_bytes_after_the_package_are_ignored() {
        let mut blob = package(|w| vm(w, 0, "a", |_| {}));
        blob.extend_from_slice(&[0x55; 4096]);
        assert!(parse_vms(&blob)[0].is_ok());
    }

    #[test]
    fn foreign_or_future_packages_are_refused() {
        let one = 1u32.to_be_bytes();
        let refuse = |blob: Vec<u8>| Package::parse(&blob).err().unwrap();
        assert_eq!(
            refuse(package_with("linux,dummy-virt", &one, |_| {})),
            PackageError::NotAPackage
        );
        assert_eq!(
            refuse(package_with(
                PACKAGE_COMPATIBLE,
                &2u32.to_be_bytes(),
                |_| {}
            )),
            PackageError::UnsupportedVersion(2)
        );
        assert_eq!(
            refuse(package_with(PACKAGE_COMPATIBLE, &[0, 1], |_| {})),
            PackageError::BadVersion
        );
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_string("compatible", PACKAGE_COMPATIBLE).unwrap();
        w.end_node(root).unwrap();
        assert_eq!(refuse(w.finish().unwrap()), PackageError::MissingVersion);
        assert_eq!(
            PackageError::UnsupportedVersion(2).to_string(),
            "the VM package has version 2, but this Veil reads version 1"
        );
    }

    #[test]
    fn a_blob_that_is_not_a_package_is_refused() {
        assert!(matches!(
            Package::parse(b"not a package"),
            Err(PackageError::Fdt(FdtError::TooShort { .. }))
        ));
        let elf = [0x7f, b'E', b'L', b'F']
            .iter()
            .copied()
            .cycle()
            .take(64)
            .collect::<Vec<_>>();
        let e = Package::parse(&elf).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("the VM package is unreadable: this is not a device tree"),
            "{e}"
        );
    }

    #[test]
    fn one_bad_vm_does_not_spoil_the_others() {
        let blob = package(|w| {
            vm(w, 0, "first", |_| {});
            vm(w, 1, "broken", |w| w.property_u32("cpus", 0).unwrap());
            vm(w, 2, "third", |_| {});
        });
        let vms = parse_vms(&blob);
        assert_eq!(vms[0].unwrap().name, "first");
        assert_eq!(
            vms[1].unwrap_err(),
            VmSpecError {
                index: 1,
                name: Some("broken"),
                field: "cpus",
                problem: VmProblem::CpusOutOfRange(0)
            }
        );
        assert_eq!(
            vms[1].unwrap_err().to_string(),
            "VM 1 (\"broken\"): `cpus` is 0, but a VM has 1 to 8 vCPUs"
        );
        assert_eq!(vms[2].unwrap().index, 2);
    }

    #[test]
    fn missing_and_empty_kernel() {
        let no_kernel = package(|w| {
            let n = w.begin_node("vm@0").unwrap();
            w.property_string("vm-name", "nokernel").unwrap();
            w.property_u64("memory-size", 2 << 20).unwrap();
            w.property_u32("cpus", 1).unwrap();
            w.end_node(n).unwrap();
        });
        let e = parse_vms(&no_kernel)[0].unwrap_err();
        assert_eq!((e.field, e.problem), ("kernel", VmProblem::Missing));
        assert_eq!(e.to_string(), "VM 0 (\"nokernel\"): `kernel` is missing");
        let e = only_error(|w| w.property("kernel", &[]).unwrap());
        assert_eq!((e.field, e.problem), ("kernel", VmProblem::Empty));
    }

    #[test]
    fn memory_sizes_are_checked() {
        let e = only_error(|w| w.property_u64("memory-size", 0).unwrap());
        assert_eq!(e.problem, VmProblem::Zero);
        let e = only_error(|w| w.property_u64("memory-size", 3 << 20).unwrap());
        assert_eq!(e.problem, VmProblem::Unaligned(3 << 20));
        assert_eq!(
            e.to_string(),
            "VM 0 (\"guest\"): `memory-size` 0x300000 is not a multiple of 2 MiB"
        );
        let huge = u64::MAX - (GUEST_RAM_ALIGN - 1);
        assert_eq!(
            only_error(|w| w.property_u64("memory-size", huge).unwrap()).problem,
            VmProblem::TooLarge(huge)
        );
        let e = only_error(|w| w.property_u32("memory-size", 64 << 20).unwrap());
        assert_eq!(
            e.problem,
            VmProblem::WrongSize {
                expected: 8,
                found: 4
            }
        );
    }

    #[test]
    fn cpus_and_gic_version_are_checked() {
        let e = only_error(|w| w.property_u32("cpus", MAX_VCPUS + 1).unwrap());
        assert_eq!(e.problem, VmProblem::CpusOutOfRange(9));
        let e = only_error(|w| w.property_u64("cpus", 1).unwrap());
        assert_eq!(
            e.problem,
            VmProblem::WrongSize {
                expected: 4,
                found: 8
            }
        );
        let e = only_error(|w| w.property_u32("gic-version", 4).unwrap());
        assert_eq!(
            (e.field, e.problem),
            ("gic-version", VmProblem::UnsupportedGic(4))
        );
        let ok = package(|w| vm(w, 0, "max", |w| w.property_u32("cpus", MAX_VCPUS).unwrap()));
        assert_eq!(parse_vms(&ok)[0].unwrap().cpus, 8);
    }

    #[test]
    fn names_are_checked() {
        let cases: [(&[u8], VmProblem); 5] = [
            (&[0xff, 0xfe, 0], VmProblem::NotPrintable),
            (b"tab\there\0", VmProblem::NotPrintable),
            (b"no-terminator", VmProblem::NotAString),
            (b"two\0strings\0", VmProblem::NotAString),
            (b"\0", VmProblem::Empty),
        ];
        for (value, problem) in cases {
            let e = only_error(|w| w.property("vm-name", value).unwrap());
            assert_eq!(
                (e.name, e.field, e.problem),
                (None, "vm-name", problem),
                "{value:?}"
            );
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let e = only_error(|w| w.property_string("vm-name", &long).unwrap());
        assert_eq!(e.problem, VmProblem::TooLong);
        assert_eq!(e.to_string(), "VM 0: `vm-name` is longer than 31 bytes");
        let blob = package(|w| vm(w, 0, &"x".repeat(MAX_NAME_LEN), |_| {}));
        assert!(parse_vms(&blob)[0].is_ok());
        let e = only_error(|w| w.property("bootargs", b"console=\xff\0").unwrap());
        assert_eq!((e.field, e.problem), ("bootargs", VmProblem::NotAString));
        let e = only_error(|w| w.property("initrd", &[]).unwrap());
        assert_eq!((e.field, e.problem), ("initrd", VmProblem::Empty));
    }

    #[test]
    fn unit_addresses_must_match_positions() {
        let blob = package(|w| {
            vm(w, 0, "a", |_| {});
            vm(w, 5, "b", |_| {});
            let n = w.begin_node("vm").unwrap();
            w.end_node(n).unwrap();
        });
        let vms = parse_vms(&blob);
        let e = vms[1].unwrap_err();
        assert_eq!(
            (e.index, e.field, e.problem),
            (1, "unit address", VmProblem::WrongUnitAddress)
        );
        assert_eq!(
            e.to_string(),
            "VM 1 (\"b\"): `unit address` is not vm@1, the VM's position in the package"
        );
        assert_eq!(vms[2].unwrap_err().field, "vm-name");
        let hex = package(|w| (0..12).for_each(|i| vm(w, i, "n", |_| {})));
        assert!(parse_vms(&hex).iter().all(Result::is_ok));
    }

    /// Truncated and corrupted packages give errors, never panics.
    #[test]
    fn hostile_packages_do_not_panic() {
        let blob = package(|w| {
            vm(w, 0, "a", |w| {
                w.property("initrd", &[1; 40]).unwrap();
                w.property_string("bootargs", "x").unwrap();
                w.property_u32("gic-version", 3).unwrap();
            });
            vm(w, 1, "b", |_| {});
        });
        let drain = |b: &[u8]| {
            if let Ok(p) = Package::parse(b) {
                p.vms().for_each(|vm| drop(vm.map_err(|e| e.to_string())));
            }
        };
        for len in 0..blob.len() {
            assert!(Package::parse(&blob[..len]).is_err());
            // The header claiming just the truncated length reaches the structure checks.
            let mut cut = blob[..len].to_vec();
            if len >= 40 {
                cut[4..8].copy_from_slice(&(len as u32).to_be_bytes());
            }
            drain(&cut);
        }
        let mut copy = blob.clone();
        for at in 0..copy.len() {
            for value in [0, 1, 2, 3, 4, 9, 0x80, 0xff, copy[at] ^ 0x01] {
                let original = copy[at];
                copy[at] = value;
                drain(&copy);
                copy[at] = original;
            }
        }
        assert_eq!(copy, blob);
    }
}
