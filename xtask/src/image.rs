//! Building the images QEMU boots: Veil for a board (`target/<board>/<profile>/veil.bin`) and the
//! bundled guests (`target/guests/tiny.bin`, `bench.bin`, `irq.bin`), each compiled by cargo
//! and then turned from an ELF into a raw binary with the toolchain's `llvm-objcopy`.
//!
//! A raw binary because QEMU passes the DTB address in x0 only for raw images and arm64 Images,
//! not for ELF files.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::workspace::{Profile, Workspace, describe};

/// Veil is built soft-float: the hard-float target lets the compiler use FP/SIMD registers in
/// `memcpy`, which would clobber guest state on every exit.
pub const HYPERVISOR_TARGET: &str = "aarch64-unknown-none-softfloat";
pub const HYPERVISOR_PACKAGE: &str = "veil";
pub const GUEST_TARGET: &str = "aarch64-unknown-none";
pub const TINY_PACKAGE: &str = "veil-guest-tiny";
pub const BENCH_PACKAGE: &str = "veil-guest-bench";
pub const IRQ_PACKAGE: &str = "veil-guest-irq";

/// A built hypervisor image.
#[derive(Clone, Debug)]
pub struct Hypervisor {
    /// The ELF cargo built (for gdb and objdump).
    pub elf: PathBuf,
    /// The raw binary QEMU boots.
    pub bin: PathBuf,
    pub size: u64,
}

/// Builds Veil for `board` (cargo reads the board through `VEIL_BOARD`) and makes `veil.bin`.
pub fn build_hypervisor(ws: &Workspace, board: &str, profile: Profile) -> Result<Hypervisor> {
    let mut args = vec!["-p", HYPERVISOR_PACKAGE, "--target", HYPERVISOR_TARGET];
    if profile == Profile::Release {
        args.push("--release");
    }
    let elf = cargo_build(ws, &args, &[("VEIL_BOARD", board)], HYPERVISOR_PACKAGE)
        .with_context(|| format!("building Veil for board {board}"))?;
    let bin = ws.image_dir(board, profile).join("veil.bin");
    let size = objcopy(ws, &elf, &bin)?;
    Ok(Hypervisor { elf, bin, size })
}

/// Builds the bundled tiny guest (always release: it is small and fast either way) and makes
/// `target/guests/tiny.bin`.
pub fn build_tiny_guest(ws: &Workspace) -> Result<(PathBuf, u64)> {
    build_guest(ws, TINY_PACKAGE, "tiny")
}

/// Builds the bundled benchmark guest (release, like tiny) and makes `target/guests/bench.bin`.
pub fn build_bench_guest(ws: &Workspace) -> Result<(PathBuf, u64)> {
    build_guest(ws, BENCH_PACKAGE, "bench")
}

/// Builds the bundled interrupt guest (release, like tiny) and makes `target/guests/irq.bin`.
pub fn build_irq_guest(ws: &Workspace) -> Result<(PathBuf, u64)> {
    build_guest(ws, IRQ_PACKAGE, "irq")
}

/// Builds guest `package` and makes `target/guests/<name>.bin`.
fn build_guest(ws: &Workspace, package: &str, name: &str) -> Result<(PathBuf, u64)> {
    let args = ["-p", package, "--target", GUEST_TARGET, "--release"];
    let elf = cargo_build(ws, &args, &[], package)
        .with_context(|| format!("building the {name} guest"))?;
    let bin = ws.guests_dir().join(format!("{name}.bin"));
    let size = objcopy(ws, &elf, &bin)?;
    Ok((bin, size))
}

/// The parts of cargo's `--message-format=json` lines that say where a binary went.
#[derive(Deserialize)]
struct CargoMessage {
    reason: String,
    #[serde(default)]
    package_id: String,
    #[serde(default)]
    target: Option<CargoTarget>,
    #[serde(default)]
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct CargoTarget {
    kind: Vec<String>,
    name: String,
}

/// Runs `cargo build <args>` (diagnostics shown as usual) and returns the path of the one
/// binary `package` produced.
fn cargo_build(
    ws: &Workspace,
    args: &[&str],
    env: &[(&str, &str)],
    package: &str,
) -> Result<PathBuf> {
    let mut command = ws.cargo();
    command
        .arg("build")
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let shown = describe(&command);
    let output = command
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): see the compiler's messages above",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    binary_from_messages(&stdout, package)
        .with_context(|| format!("`{shown}` built no binary for package {package}"))
}

/// The executable of a `bin` target of `package` in cargo's JSON messages.
fn binary_from_messages(messages: &str, package: &str) -> Result<PathBuf> {
    let mut found: Vec<(String, PathBuf)> = messages
        .lines()
        .filter_map(|line| serde_json::from_str::<CargoMessage>(line).ok())
        .filter(|m| m.reason == "compiler-artifact" && package_matches(&m.package_id, package))
        .filter_map(|m| {
            let target = m.target?;
            target
                .kind
                .iter()
                .any(|k| k == "bin")
                .then_some((target.name, m.executable?))
        })
        .collect();
    match found.len() {
        0 => bail!("cargo reported no executable"),
        1 => Ok(found.pop().expect("one element").1),
        _ => {
            // Prefer the binary named after the package, as cargo does for `cargo run`.
            let names: Vec<String> = found.iter().map(|(name, _)| name.clone()).collect();
            found
                .into_iter()
                .find(|(name, _)| name == package)
                .map(|(_, path)| path)
                .with_context(|| {
                    format!(
                        "several binaries ({}); which one to boot?",
                        names.join(", ")
                    )
                })
        }
    }
}

/// Whether a cargo package id names `package`. Ids look like
/// `path+file:///work/main#veil@0.1.0` or, in older cargo, `veil 0.1.0 (path+file:///...)`.
fn package_matches(package_id: &str, package: &str) -> bool {
    if let Some((_, fragment)) = package_id.rsplit_once('#') {
        let name = fragment.split('@').next().unwrap_or_default();
        // `#0.1.0` alone means the name is the last path segment.
        if name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            let path = package_id
                .rsplit_once('#')
                .map(|(p, _)| p)
                .unwrap_or_default();
            return path.rsplit('/').next() == Some(package);
        }
        return name == package;
    }
    package_id.split_whitespace().next() == Some(package)
}

/// `llvm-objcopy -O binary elf bin`; returns the binary's size.
fn objcopy(ws: &Workspace, elf: &Path, bin: &Path) -> Result<u64> {
    let tool = llvm_objcopy(ws)?;
    if let Some(dir) = bin.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut command = std::process::Command::new(&tool);
    command.arg("-O").arg("binary").arg(elf).arg(bin);
    crate::workspace::capture(&mut command)?;
    let size = std::fs::metadata(bin)
        .with_context(|| format!("llvm-objcopy wrote no {}", bin.display()))?
        .len();
    if size == 0 {
        bail!(
            "{} is empty: the ELF {} has no loadable sections",
            bin.display(),
            elf.display()
        );
    }
    Ok(size)
}

/// The pinned toolchain's `llvm-objcopy` (component `llvm-tools`).
fn llvm_objcopy(ws: &Workspace) -> Result<PathBuf> {
    let sysroot = crate::workspace::capture(ws.rustc().arg("--print").arg("sysroot"))?;
    let host = ws.host_triple()?;
    let tool = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-objcopy");
    if !tool.is_file() {
        bail!(
            "llvm-objcopy is missing (looked for {}): run: rustup component add llvm-tools",
            tool.display()
        );
    }
    Ok(tool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_binary_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#log@0.4.28","target":{"kind":["lib"],"name":"log"},"executable":null}
{"reason":"compiler-artifact","package_id":"path+file:///work/main#veil@0.1.0","target":{"kind":["custom-build"],"name":"build-script-build"},"executable":null}
{"reason":"build-script-executed","package_id":"path+file:///work/main#veil@0.1.0"}
{"reason":"compiler-artifact","package_id":"path+file:///work/main#veil@0.1.0","target":{"kind":["bin"],"name":"veil"},"executable":"/work/main/target/aarch64-unknown-none-softfloat/debug/veil"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            binary_from_messages(messages, "veil").unwrap(),
            Path::new("/work/main/target/aarch64-unknown-none-softfloat/debug/veil")
        );
        assert!(binary_from_messages(messages, "veil-guest-tiny").is_err());
        assert!(binary_from_messages("not json\n", "veil").is_err());
    }

    #[test]
    fn several_binaries_prefer_the_package_name() {
        let line = |name: &str| {
            format!(
                r#"{{"reason":"compiler-artifact","package_id":"path+file:///w/tests/guests/tiny#veil-guest-tiny@0.1.0","target":{{"kind":["bin"],"name":"{name}"}},"executable":"/t/{name}"}}"#
            )
        };
        let two = format!("{}\n{}\n", line("helper"), line("veil-guest-tiny"));
        assert_eq!(
            binary_from_messages(&two, "veil-guest-tiny").unwrap(),
            Path::new("/t/veil-guest-tiny")
        );
        let ambiguous = format!("{}\n{}\n", line("a"), line("b"));
        let err = format!(
            "{:#}",
            binary_from_messages(&ambiguous, "veil-guest-tiny").unwrap_err()
        );
        assert!(err.contains("a, b"), "{err}");
    }

    #[test]
    fn package_ids() {
        assert!(package_matches("path+file:///work/main#veil@0.1.0", "veil"));
        assert!(!package_matches(
            "path+file:///work/main#veil@0.1.0",
            "veil-guest-tiny"
        ));
        assert!(package_matches(
            "path+file:///work/main/xtask#0.1.0",
            "xtask"
        ));
        assert!(package_matches(
            "veil 0.1.0 (path+file:///work/main)",
            "veil"
        ));
        assert!(!package_matches(
            "veil-guest-rt 0.1.0 (path+file:///x)",
            "veil"
        ));
    }
}
