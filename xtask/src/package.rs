//! The writer side of the VM package (docs/VM_PACKAGE.md): a flattened device tree that carries
//! every guest Veil should start, written with `vm-fdt`. Veil reads it with the `fdt` crate.
//!
//! Also tells what kind of kernel a guest file is, only to tell the user: Veil loads it.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, ensure};
use vm_fdt::FdtWriter;

use crate::size::GUEST_RAM_ALIGN;

/// Root `compatible` of a VM package.
pub const COMPATIBLE: &str = "veil,vm-package";
/// The format version this writer produces (`veil,package-version`).
pub const VERSION: u32 = 1;
/// Longest VM name, in bytes.
pub const MAX_NAME_LEN: usize = 31;
/// Most vCPUs one VM may have.
pub const MAX_CPUS: u32 = 8;

/// One VM of the package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    /// Printable ASCII, at most 31 bytes.
    pub name: String,
    /// Bytes of guest RAM at IPA 0x4000_0000; a non-zero multiple of 2 MiB.
    pub memory_size: u64,
    /// Number of vCPUs, 1..=8.
    pub cpus: u32,
    /// 2 or 3; `None` = the host GIC's version.
    pub gic_version: Option<u32>,
    /// An arm64 Image, an ELF64 or a raw binary.
    pub kernel: Vec<u8>,
    pub initrd: Option<Vec<u8>>,
    /// The guest's `/chosen/bootargs`.
    pub bootargs: Option<String>,
    /// Host device windows (base, size) mapped into the guest at the same address.
    pub passthrough_mmio: Vec<(u64, u64)>,
    /// Host SPIs (INTIDs) delivered to the guest.
    pub passthrough_spis: Vec<u32>,
}

impl VmSpec {
    /// Checks the rules of docs/VM_PACKAGE.md, so that Veil never sees a package it refuses.
    pub fn validate(&self) -> Result<()> {
        let name = &self.name;
        ensure!(!name.is_empty(), "a VM needs a name");
        ensure!(
            name.len() <= MAX_NAME_LEN,
            "VM name `{name}` is longer than {MAX_NAME_LEN} bytes"
        );
        ensure!(
            name.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
            "VM name `{name}` must be printable ASCII"
        );
        ensure!(
            self.memory_size != 0 && self.memory_size.is_multiple_of(GUEST_RAM_ALIGN),
            "VM {name}: memory-size {} is not a non-zero multiple of 2 MiB",
            self.memory_size
        );
        ensure!(
            (1..=MAX_CPUS).contains(&self.cpus),
            "VM {name}: cpus must be 1 to {MAX_CPUS}, not {}",
            self.cpus
        );
        if let Some(gic) = self.gic_version {
            ensure!(
                gic == 2 || gic == 3,
                "VM {name}: gic-version must be 2 or 3, not {gic}"
            );
        }
        ensure!(!self.kernel.is_empty(), "VM {name}: the kernel is empty");
        if let Some(bootargs) = &self.bootargs {
            ensure!(
                !bootargs.contains('\0'),
                "VM {name}: bootargs contain a NUL byte"
            );
        }
        Ok(())
    }
}

/// Writes the package holding `vms`, in start order.
pub fn write(vms: &[VmSpec]) -> Result<Vec<u8>> {
    ensure!(!vms.is_empty(), "a VM package needs at least one VM");
    for vm in vms {
        vm.validate()?;
    }
    let fdt_error = |e: vm_fdt::Error| anyhow!("cannot write the VM package: {e}");
    let mut fdt = FdtWriter::new().map_err(fdt_error)?;
    let root = fdt.begin_node("").map_err(fdt_error)?;
    fdt.property_string("compatible", COMPATIBLE)
        .map_err(fdt_error)?;
    fdt.property_u32("veil,package-version", VERSION)
        .map_err(fdt_error)?;
    for (index, vm) in vms.iter().enumerate() {
        // Device-tree unit addresses are hexadecimal: the eleventh VM is vm@a.
        let node = fdt
            .begin_node(&format!("vm@{index:x}"))
            .map_err(fdt_error)?;
        fdt.property_string("vm-name", &vm.name)
            .map_err(fdt_error)?;
        fdt.property_u64("memory-size", vm.memory_size)
            .map_err(fdt_error)?;
        fdt.property_u32("cpus", vm.cpus).map_err(fdt_error)?;
        if let Some(gic) = vm.gic_version {
            fdt.property_u32("gic-version", gic).map_err(fdt_error)?;
        }
        fdt.property("kernel", &vm.kernel).map_err(fdt_error)?;
        if let Some(initrd) = &vm.initrd {
            fdt.property("initrd", initrd).map_err(fdt_error)?;
        }
        if let Some(bootargs) = &vm.bootargs {
            fdt.property_string("bootargs", bootargs)
                .map_err(fdt_error)?;
        }
        if !vm.passthrough_mmio.is_empty() {
            let cells: Vec<u64> = vm
                .passthrough_mmio
                .iter()
                .flat_map(|&(b, s)| [b, s])
                .collect();
            fdt.property_array_u64("passthrough-mmio", &cells)
                .map_err(fdt_error)?;
        }
        if !vm.passthrough_spis.is_empty() {
            fdt.property_array_u32("passthrough-spis", &vm.passthrough_spis)
                .map_err(fdt_error)?;
        }
        fdt.end_node(node).map_err(fdt_error)?;
    }
    fdt.end_node(root).map_err(fdt_error)?;
    fdt.finish().map_err(fdt_error)
}

/// Writes the package to `path`, creating its directory.
pub fn write_file(path: &Path, vms: &[VmSpec]) -> Result<u64> {
    let bytes = write(vms)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    std::fs::write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(bytes.len() as u64)
}

/// A VM name from a guest file's stem: printable ASCII, at most 31 bytes. Only a word-like
/// extension counts as one (`tiny.bin` -> `tiny`, but `vmlinuz-6.1.0-28-arm64` stays whole).
pub fn vm_name_for(path: &Path) -> String {
    let word_like = |ext: &std::ffi::OsStr| {
        let ext = ext.to_string_lossy();
        ext.starts_with(|c: char| c.is_ascii_alphabetic())
            && ext.chars().all(|c| c.is_ascii_alphanumeric())
    };
    let stem = match path.extension() {
        Some(ext) if word_like(ext) => path.file_stem(),
        _ => path.file_name(),
    };
    let stem = stem.map(|s| s.to_string_lossy()).unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(MAX_NAME_LEN)
        .collect();
    if name.is_empty() {
        "guest".to_string()
    } else {
        name
    }
}

/// What kind of kernel a guest file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestFormat {
    /// A Linux arm64 `Image` (magic `ARM\x64` at offset 0x38).
    LinuxImage,
    /// An ELF file.
    Elf,
    /// Anything else: loaded as a raw binary.
    Raw,
}

impl GuestFormat {
    pub fn detect(bytes: &[u8]) -> Self {
        const ARM64_MAGIC: &[u8] = b"ARM\x64";
        if bytes.get(0x38..0x3c) == Some(ARM64_MAGIC) {
            GuestFormat::LinuxImage
        } else if bytes.starts_with(b"\x7fELF") {
            GuestFormat::Elf
        } else {
            GuestFormat::Raw
        }
    }
}

impl fmt::Display for GuestFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestFormat::LinuxImage => "Linux arm64 Image",
            GuestFormat::Elf => "ELF",
            GuestFormat::Raw => "raw binary",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::MIB;

    fn tiny() -> VmSpec {
        VmSpec {
            name: "tiny".into(),
            memory_size: 128 * MIB,
            cpus: 1,
            gic_version: Some(3),
            kernel: vec![0xd5, 0x03, 0x20, 0x1f, 0x14],
            initrd: None,
            bootargs: None,
            passthrough_mmio: Vec::new(),
            passthrough_spis: Vec::new(),
        }
    }

    fn u64_of(prop: fdt::node::NodeProperty<'_>) -> u64 {
        u64::from_be_bytes(prop.value.try_into().expect("an 8-byte property"))
    }

    fn u32_of(prop: fdt::node::NodeProperty<'_>) -> u32 {
        u32::from_be_bytes(prop.value.try_into().expect("a 4-byte property"))
    }

    /// Reads a package back with the `fdt` crate, as Veil does.
    fn read_back(bytes: &[u8]) -> Vec<VmSpec> {
        let fdt = fdt::Fdt::new(bytes).expect("a valid DTB");
        let root = fdt.find_node("/").unwrap();
        assert_eq!(
            root.property("compatible").unwrap().as_str(),
            Some(COMPATIBLE)
        );
        assert_eq!(
            u32_of(root.property("veil,package-version").unwrap()),
            VERSION
        );
        let mut vms = Vec::new();
        for (index, node) in root.children().enumerate() {
            assert_eq!(node.name, format!("vm@{index:x}"));
            let known = [
                "vm-name",
                "memory-size",
                "cpus",
                "gic-version",
                "kernel",
                "initrd",
                "bootargs",
                "passthrough-mmio",
                "passthrough-spis",
            ];
            for prop in node.properties() {
                assert!(
                    known.contains(&prop.name),
                    "unexpected property {}",
                    prop.name
                );
            }
            vms.push(VmSpec {
                name: node
                    .property("vm-name")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                memory_size: u64_of(node.property("memory-size").unwrap()),
                cpus: u32_of(node.property("cpus").unwrap()),
                gic_version: node.property("gic-version").map(u32_of),
                kernel: node.property("kernel").unwrap().value.to_vec(),
                initrd: node.property("initrd").map(|p| p.value.to_vec()),
                bootargs: node
                    .property("bootargs")
                    .map(|p| p.as_str().unwrap().to_string()),
                passthrough_mmio: node
                    .property("passthrough-mmio")
                    .map(|p| {
                        p.value
                            .chunks_exact(16)
                            .map(|c| {
                                let w = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
                                (w(&c[..8]), w(&c[8..]))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                passthrough_spis: node
                    .property("passthrough-spis")
                    .map(|p| {
                        p.value
                            .chunks_exact(4)
                            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        vms
    }

    #[test]
    fn round_trip_one_vm() {
        let vm = tiny();
        let bytes = write(std::slice::from_ref(&vm)).unwrap();
        assert_eq!(&bytes[..4], &[0xd0, 0x0d, 0xfe, 0xed], "FDT magic");
        assert_eq!(
            u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
            17,
            "FDT version 17"
        );
        assert_eq!(read_back(&bytes), vec![vm]);
    }

    #[test]
    fn round_trip_every_property() {
        let linux = VmSpec {
            name: "linux".into(),
            memory_size: 1024 * MIB,
            cpus: 4,
            gic_version: Some(2),
            kernel: (0..=255u8).cycle().take(70_001).collect(),
            initrd: Some(b"070701 newc archive".to_vec()),
            bootargs: Some("console=ttyAMA0 earlycon rdinit=/init".into()),
            passthrough_mmio: Vec::new(),
            passthrough_spis: Vec::new(),
        };
        let bare = VmSpec {
            name: "bare metal".into(),
            gic_version: None,
            ..tiny()
        };
        let vms = vec![tiny(), linux, bare];
        let bytes = write(&vms).unwrap();
        assert_eq!(read_back(&bytes), vms);
    }

    #[test]
    fn unit_addresses_are_hex() {
        let vms: Vec<VmSpec> = (0..12)
            .map(|i| VmSpec {
                name: format!("vm{i}"),
                ..tiny()
            })
            .collect();
        let bytes = write(&vms).unwrap();
        let fdt = fdt::Fdt::new(&bytes).unwrap();
        assert!(fdt.find_node("/vm@a").is_some() && fdt.find_node("/vm@b").is_some());
        assert_eq!(read_back(&bytes), vms);
    }

    #[test]
    fn refuses_what_veil_refuses() {
        let cases = [
            VmSpec {
                name: String::new(),
                ..tiny()
            },
            VmSpec {
                name: "x".repeat(32),
                ..tiny()
            },
            VmSpec {
                name: "tab\there".into(),
                ..tiny()
            },
            VmSpec {
                memory_size: 0,
                ..tiny()
            },
            VmSpec {
                memory_size: 3 * MIB,
                ..tiny()
            },
            VmSpec { cpus: 0, ..tiny() },
            VmSpec { cpus: 9, ..tiny() },
            VmSpec {
                gic_version: Some(4),
                ..tiny()
            },
            VmSpec {
                kernel: Vec::new(),
                ..tiny()
            },
            VmSpec {
                bootargs: Some("a\0b".into()),
                ..tiny()
            },
        ];
        for vm in cases {
            assert!(
                write(std::slice::from_ref(&vm)).is_err(),
                "{vm:?} should be refused"
            );
        }
        assert!(write(&[]).is_err());
        assert!(
            write(&[VmSpec {
                name: "x".repeat(31),
                ..tiny()
            }])
            .is_ok()
        );
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(vm_name_for(Path::new("target/guests/tiny.bin")), "tiny");
        assert_eq!(
            vm_name_for(Path::new("/tmp/vmlinuz-6.1.0-28-arm64")),
            "vmlinuz-6.1.0-28-arm64"
        );
        assert_eq!(vm_name_for(Path::new("my kernel.img")), "my_kernel");
        assert_eq!(vm_name_for(Path::new("guest.elf")), "guest");
        assert_eq!(vm_name_for(Path::new("Image")), "Image");
        assert_eq!(vm_name_for(Path::new("Ärger.bin")), "_rger");
        assert_eq!(vm_name_for(Path::new(&"k".repeat(40))).len(), MAX_NAME_LEN);
        assert_eq!(vm_name_for(Path::new("/")), "guest");
    }

    #[test]
    fn detects_guest_formats() {
        let mut image = vec![0u8; 64];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(GuestFormat::detect(&image), GuestFormat::LinuxImage);
        assert_eq!(
            GuestFormat::detect(b"\x7fELF\x02\x01\x01"),
            GuestFormat::Elf
        );
        assert_eq!(
            GuestFormat::detect(&[0x1f, 0x20, 0x03, 0xd5]),
            GuestFormat::Raw
        );
        assert_eq!(GuestFormat::detect(&[]), GuestFormat::Raw);
        assert_eq!(
            GuestFormat::detect(&image[..0x3b]),
            GuestFormat::Raw,
            "short file"
        );
        assert_eq!(GuestFormat::LinuxImage.to_string(), "Linux arm64 Image");
    }
}
