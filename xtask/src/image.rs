//! Building the images QEMU boots: Veil for a board (`target/<board>/<profile>/veil.bin`) and the
//! bundled guests (`target/guests/tiny.bin`, `bench.bin`, `irq.bin`, `memio.bin`, `cpu.bin`),
//! each compiled by cargo and then turned from an ELF into a raw binary with the toolchain's
//! `llvm-objcopy`.
//!
//! A raw binary because QEMU passes the DTB address in x0 only for raw images and arm64 Images,
//! not for ELF files. Two more bundled guests exist to test Veil's loader on its other formats:
//! `tiny-elf` (the tiny guest's ELF as cargo built it, `target/guests/tiny.elf`) and `tiny-image`
//! (the tiny raw binary behind an arm64 Image header, `target/guests/tiny-image.bin`).

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
pub const MEMIO_PACKAGE: &str = "veil-guest-memio";
pub const CPU_PACKAGE: &str = "veil-guest-cpu";

/// The bundled guests, by the name scenarios and the VM package use.
pub const BUNDLED_GUESTS: [&str; 7] = [
    "tiny",
    "bench",
    "irq",
    "memio",
    "cpu",
    "tiny-elf",
    "tiny-image",
];

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

/// Builds bundled guest `name` (one of [`BUNDLED_GUESTS`]); returns its file and size.
pub fn build_bundled_guest(ws: &Workspace, name: &str) -> Result<(PathBuf, u64)> {
    match name {
        "tiny" => build_tiny_guest(ws),
        "bench" => build_bench_guest(ws),
        "irq" => build_irq_guest(ws),
        "memio" => build_guest(ws, MEMIO_PACKAGE, "memio"),
        "cpu" => build_guest(ws, CPU_PACKAGE, "cpu"),
        "tiny-elf" => {
            let elf = build_guest_elf(ws, TINY_PACKAGE, "tiny")?;
            let copy = bundled_guest_path(ws, name);
            std::fs::create_dir_all(ws.guests_dir())?;
            let size = std::fs::copy(&elf, &copy)
                .with_context(|| format!("cannot copy {} to {}", elf.display(), copy.display()))?;
            Ok((copy, size))
        }
        "tiny-image" => {
            let elf = build_guest_elf(ws, TINY_PACKAGE, "tiny")?;
            let (raw, _) = build_tiny_guest(ws)?;
            let (start, end) = elf_load_span(&std::fs::read(&elf)?)
                .with_context(|| format!("reading the program headers of {}", elf.display()))?;
            let image = arm64_image(&std::fs::read(&raw)?, start, end)?;
            let path = bundled_guest_path(ws, name);
            std::fs::write(&path, &image)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok((path, image.len() as u64))
        }
        _ => bail!(
            "no bundled guest `{name}` (there are {})",
            BUNDLED_GUESTS.join(", ")
        ),
    }
}

/// Where bundled guest `name` is written.
pub fn bundled_guest_path(ws: &Workspace, name: &str) -> PathBuf {
    let file = match name {
        "tiny-elf" => "tiny.elf".to_string(),
        _ => format!("{name}.bin"),
    };
    ws.guests_dir().join(file)
}

/// Builds guest `package` and makes `target/guests/<name>.bin`.
fn build_guest(ws: &Workspace, package: &str, name: &str) -> Result<(PathBuf, u64)> {
    let elf = build_guest_elf(ws, package, name)?;
    let bin = ws.guests_dir().join(format!("{name}.bin"));
    let size = objcopy(ws, &elf, &bin)?;
    Ok((bin, size))
}

/// Builds guest `package`; returns the ELF cargo made.
fn build_guest_elf(ws: &Workspace, package: &str, name: &str) -> Result<PathBuf> {
    let args = ["-p", package, "--target", GUEST_TARGET, "--release"];
    cargo_build(ws, &args, &[], package).with_context(|| format!("building the {name} guest"))
}

/// Where an arm64 Image puts its kernel: `text_offset` bytes above a 2 MiB boundary. The
/// bundled guests are linked at RAM base + 0x80000; `tiny-image` places its header one page
/// below that, so the loader must honour `text_offset` (not assume 0x80000) for the code to
/// land where it is linked.
const IMAGE_HEADER_PAGE: u64 = 0x1000;

/// Wraps `raw`, a binary linked to run at `start` whose memory image (.bss included) ends at
/// `end`, in an arm64 Linux Image (Documentation/arch/arm64/booting.rst): a 64-byte header whose
/// first instruction branches over the rest of its page to `raw`'s first byte. `text_offset`
/// puts the header one page below `start`; `image_size` covers `raw` and its .bss.
fn arm64_image(raw: &[u8], start: u64, end: u64) -> Result<Vec<u8>> {
    const SZ_2M: u64 = 2 << 20;
    let header_at = start
        .checked_sub(IMAGE_HEADER_PAGE)
        .context("image linked below one page")?;
    let text_offset = header_at % SZ_2M;
    let memory = (end.max(start + raw.len() as u64) - start).next_multiple_of(IMAGE_HEADER_PAGE);
    let image_size = IMAGE_HEADER_PAGE + memory;
    // `b .+0x1000`: B with imm26 = 0x1000 / 4.
    let code0: u32 = 0x1400_0000 | (IMAGE_HEADER_PAGE / 4) as u32;
    // flags: bit 0 little-endian (0), bits 1-2 page size 4 KiB (1), bit 3 placement anywhere (0).
    let flags: u64 = 1 << 1;
    let mut image = Vec::with_capacity((IMAGE_HEADER_PAGE as usize) + raw.len());
    image.extend_from_slice(&code0.to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes()); // code1
    image.extend_from_slice(&text_offset.to_le_bytes());
    image.extend_from_slice(&image_size.to_le_bytes());
    image.extend_from_slice(&flags.to_le_bytes());
    image.extend_from_slice(&[0; 24]); // res2, res3, res4
    image.extend_from_slice(b"ARM\x64");
    image.extend_from_slice(&0u32.to_le_bytes()); // res5: no PE/COFF header
    image.resize(IMAGE_HEADER_PAGE as usize, 0);
    image.extend_from_slice(raw);
    Ok(image)
}

/// The lowest load address and the end of the highest `PT_LOAD` segment (by `p_paddr` and
/// `p_memsz`) of a little-endian ELF64.
fn elf_load_span(elf: &[u8]) -> Result<(u64, u64)> {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        bail!("not a little-endian ELF64");
    }
    let (phoff, phentsize, phnum) = (
        u64_at(32).context("e_phoff")? as usize,
        u16_at(54).context("e_phentsize")? as usize,
        u16_at(56).context("e_phnum")? as usize,
    );
    let mut span: Option<(u64, u64)> = None;
    for index in 0..phnum {
        let at = phoff + index * phentsize;
        let kind = elf.get(at..at + 4).context("program header")?;
        if kind != 1u32.to_le_bytes() {
            continue;
        }
        let (paddr, memsz) = (
            u64_at(at + 24).context("p_paddr")?,
            u64_at(at + 40).context("p_memsz")?,
        );
        if memsz == 0 {
            continue;
        }
        let (low, high) = span.unwrap_or((u64::MAX, 0));
        span = Some((low.min(paddr), high.max(paddr + memsz)));
    }
    span.context("no PT_LOAD segment")
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
    fn arm64_image_header() {
        let raw = [0xaa; 100];
        let image = arm64_image(&raw, 0x4008_0000, 0x4009_0010).unwrap();
        let word = |at: usize| u64::from_le_bytes(image[at..at + 8].try_into().unwrap());
        // code0 branches 0x1000 forward, to the raw binary's first byte.
        assert_eq!(&image[0..4], &0x1400_0400u32.to_le_bytes());
        assert_eq!(word(8), 0x7_f000, "text_offset");
        assert_eq!(
            word(16),
            0x1000 + 0x1_1000,
            "image_size: header page + rounded memory"
        );
        assert_eq!(word(24), 2, "flags: 4 KiB pages");
        assert_eq!(&image[0x38..0x3c], b"ARM\x64");
        assert_eq!(image.len(), 0x1000 + raw.len());
        assert_eq!(&image[0x1000..], &raw);
    }

    #[test]
    fn elf_load_span_covers_every_pt_load() {
        let mut elf = vec![0u8; 64 + 3 * 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&3u16.to_le_bytes());
        let mut phdr = |i: usize, kind: u32, paddr: u64, memsz: u64| {
            let at = 64 + i * 56;
            elf[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            elf[at + 24..at + 32].copy_from_slice(&paddr.to_le_bytes());
            elf[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
        };
        phdr(0, 1, 0x4008_0000, 0x2000);
        phdr(1, 6, 0x1000, 0x10_0000); // not PT_LOAD
        phdr(2, 1, 0x4009_0000, 0x4_0000);
        assert_eq!(elf_load_span(&elf).unwrap(), (0x4008_0000, 0x400d_0000));
        assert!(elf_load_span(b"MZ").is_err());
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
