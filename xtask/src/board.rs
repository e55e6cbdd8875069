//! Boards Veil can be built for, read from `boards/<name>.toml`.
//!
//! The hypervisor's build script reads the same files (through `VEIL_BOARD`) for what Veil
//! needs before it has a DTB; xtask only needs the `[qemu]` table: which machine to start and
//! what it can do. Keys xtask does not use are ignored here.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::size;

/// The parts of `boards/<name>.toml` that xtask uses.
#[derive(Debug, Deserialize)]
pub struct Board {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub qemu: QemuMachine,
}

/// The `[qemu]` table: how to model this board in QEMU.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuMachine {
    /// `-M` value, e.g. `virt,virtualization=on`.
    pub machine: String,
    /// `-cpu` value; empty for machines with a fixed CPU (raspi4b).
    #[serde(default)]
    pub cpu: String,
    /// Default machine RAM (`-m`), e.g. `1G`.
    pub memory: String,
    /// GIC versions the machine can model.
    pub gic_versions: Vec<u32>,
    /// Most CPUs the machine takes.
    pub max_smp: u32,
    /// Fewest CPUs the machine takes (raspi4b always has 4); VMs may use fewer.
    #[serde(default = "one")]
    pub min_smp: u32,
    /// A DTB to pass with `-dtb` (a path from the repository root), for machines for which
    /// QEMU builds none (raspi4b).
    #[serde(default)]
    pub dtb: Option<String>,
}

fn one() -> u32 {
    1
}

impl Board {
    /// Reads `boards/<name>.toml`, or says which boards exist.
    pub fn load(root: &Path, name: &str) -> Result<Board> {
        let path = root.join("boards").join(format!("{name}.toml"));
        let plain_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain_name || !path.is_file() {
            let known = available(root);
            bail!(
                "unknown board `{name}`: available boards are {} (files boards/*.toml)",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Board::parse(name, &text).with_context(|| format!("invalid board file {}", path.display()))
    }

    /// Parses and checks a board file's text; `name` is the file's stem.
    pub fn parse(name: &str, text: &str) -> Result<Board> {
        let board: Board = toml::from_str(text)?;
        ensure!(
            board.name == name,
            "the file says `name = \"{}\"` but is called {name}.toml: make them agree",
            board.name
        );
        ensure!(!board.qemu.machine.is_empty(), "[qemu] machine is empty");
        ensure!(
            !board.qemu.gic_versions.is_empty(),
            "[qemu] gic_versions is empty"
        );
        ensure!(board.qemu.max_smp >= 1, "[qemu] max_smp must be at least 1");
        board.memory().context("[qemu] memory")?;
        Ok(board)
    }

    /// The machine's default RAM in bytes.
    pub fn memory(&self) -> Result<u64> {
        size::parse_size(&self.qemu.memory)
    }

    /// The GIC version to use when none is asked for: 3 where the machine has it, else the
    /// newest it has.
    pub fn default_gic(&self) -> u32 {
        let versions = &self.qemu.gic_versions;
        if versions.contains(&3) {
            3
        } else {
            versions.iter().copied().max().unwrap_or(3)
        }
    }

    /// Checks that QEMU can model `gic` on this board.
    pub fn check_gic(&self, gic: u32) -> Result<()> {
        ensure!(
            self.qemu.gic_versions.contains(&gic),
            "board {} has no GICv{gic}: its QEMU machine models GIC version(s) {}",
            self.name,
            list(&self.qemu.gic_versions)
        );
        Ok(())
    }

    /// Checks that QEMU can give this board `smp` CPUs.
    pub fn check_smp(&self, smp: u32) -> Result<()> {
        ensure!(
            (1..=self.qemu.max_smp).contains(&smp),
            "board {} takes 1 to {} CPUs, not {smp}",
            self.name,
            self.qemu.max_smp
        );
        Ok(())
    }
}

/// Names of the boards in `boards/`, sorted.
pub fn available(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("boards"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    names
}

fn list(numbers: &[u32]) -> String {
    numbers
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_VIRT: &str = include_str!("../../boards/qemu-virt.toml");

    #[test]
    fn parses_the_qemu_virt_board() {
        let board = Board::parse("qemu-virt", QEMU_VIRT).unwrap();
        assert_eq!(board.qemu.machine, "virt,virtualization=on");
        assert_eq!(board.qemu.cpu, "max");
        assert_eq!(board.memory().unwrap(), size::GIB);
        assert!(board.check_gic(2).is_ok() && board.check_gic(3).is_ok());
        assert!(board.check_gic(4).is_err());
        assert_eq!(board.default_gic(), 3);
        let rpi4 = Board::parse("rpi4", include_str!("../../boards/rpi4.toml")).unwrap();
        assert_eq!(rpi4.default_gic(), 2);
        assert!(rpi4.check_smp(4).is_ok() && rpi4.check_smp(5).is_err());
        assert!(board.check_smp(8).is_ok());
        assert!(board.check_smp(0).is_err() && board.check_smp(9).is_err());
    }

    #[test]
    fn name_must_match_file() {
        let err = Board::parse("other", QEMU_VIRT).unwrap_err();
        assert!(err.to_string().contains("other.toml"), "{err}");
    }

    #[test]
    fn unknown_board_lists_the_known_ones() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let err = Board::load(root, "nope").unwrap_err().to_string();
        assert!(
            err.contains("unknown board `nope`") && err.contains("qemu-virt"),
            "{err}"
        );
        assert!(Board::load(root, "../Cargo").is_err());
        assert!(available(root).contains(&"qemu-virt".to_string()));
    }

    #[test]
    fn rejects_bad_qemu_tables() {
        let bad_memory = QEMU_VIRT.replace("memory = \"1G\"", "memory = \"lots\"");
        assert!(Board::parse("qemu-virt", &bad_memory).is_err());
        let typo = QEMU_VIRT.replace("max_smp", "max_cpus");
        assert!(Board::parse("qemu-virt", &typo).is_err());
        let with_dtb = format!("{QEMU_VIRT}dtb = \"tests/fixtures/x.dtb\"\n");
        let board = Board::parse("qemu-virt", &with_dtb).unwrap();
        assert_eq!(board.qemu.dtb.as_deref(), Some("tests/fixtures/x.dtb"));
    }
}
