//! `cargo xtask bench`: instructions per operation on Veil, against the same guest on bare QEMU.
//!
//! The bundled bench guest (tests/guests/bench, docs/BENCHMARKS.md) times each operation with
//! the virtual counter; under `-icount shift=0,align=off,sleep=off` on QEMU `virt` (1 GHz
//! counter) a tick is one executed instruction, so every figure is an instruction count and
//! two runs give the same numbers. This module:
//!
//! 1. builds Veil (release) and the bench guest, and reads Veil's section sizes from its ELF;
//! 2. boots the guest under Veil through the same [`Launcher`] as `run` and `test`, with
//!    `--icount`: once with one vCPU for every operation, once with two vCPUs for
//!    `ipi_roundtrip` alone (a second, idle CPU would otherwise add its own instructions to the
//!    virtual clock that the one-vCPU figures are read from);
//! 3. boots the same guest directly on QEMU (`-M virt`, no `virtualization=on`: it runs at EL1
//!    and QEMU answers PSCI over HVC itself), the baseline column, with the same two runs;
//! 4. prints one table (op, Veil, bare QEMU, Veil minus bare, target, verdict) and writes it as
//!    JSON with `--json`.
//!
//! Targets come from the issue "Benchmarks and fast exit paths" and are judged against the
//! Veil column: what the guest actually pays.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, value_parser};
use serde::Serialize;

use crate::image::Hypervisor;
use crate::launch::{Guest, Launch, Launcher, Notes};
use crate::qemu::{self, Console, Ending, Outcome};
use crate::size::{self, MIB};
use crate::workspace::{Profile, Workspace, describe};

// The operations the guest reports, in its output order: the guest's own list, so the two
// cannot drift apart.
#[path = "../../tests/guests/bench/src/op_names.rs"]
mod op_names;
use op_names::OPS;

/// The only board with both a Veil and a bare-QEMU run: the guest's addresses are `virt`'s.
const BOARD: &str = "qemu-virt";
/// Guest RAM in every run; the guest uses a few hundred KiB of it.
const GUEST_MEMORY: u64 = 128 * MIB;
/// Generous: a default run takes well under a second of host time per boot.
const TIMEOUT: Duration = Duration::from_secs(180);

/// The operation that needs two vCPUs, and so its own boot.
const TWO_VCPU_OP: &str = "ipi_roundtrip";
/// The op measured with two VMs on one CPU.
const SWITCH_OP: &str = "vm_switch";

/// Upper bounds from the issue, in instructions per operation on Veil.
pub const TARGETS: [(&str, u64); 6] = [
    ("null_hvc", 50),
    ("psci_version", 60),
    ("sysreg_trap", 50),
    ("gicd_read", 100),
    ("pl011_read", 100),
    ("boot", 150_000),
];

#[derive(Args)]
pub struct BenchArgs {
    /// GIC version of the machine and of the VM.
    #[arg(long, value_name = "2|3", default_value_t = 3, value_parser = value_parser!(u32).range(2..=3))]
    gic: u32,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Iterations of each timed loop in the guest.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = value_parser!(u64).range(1..=10_000_000))]
    iters: u64,
}

/// One operation's figure from one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Reading {
    /// Instructions per operation (an average over `iters`; `boot` is a single reading).
    Measured {
        instructions: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        iters: Option<u64>,
    },
    /// The guest could not measure it, and said why.
    Unavailable { reason: String },
}

impl Reading {
    fn instructions(&self) -> Option<f64> {
        match self {
            Reading::Measured { instructions, .. } => Some(*instructions),
            Reading::Unavailable { .. } => None,
        }
    }
}

/// Parses the bench guest's console: `bench: <op> <n> [iters=N]` and
/// `bench: <op> unavailable (<why>)` lines, in any order, among other output. Fails when
/// `bench: done` is missing or a `FAIL` line appears, since then the figures are incomplete.
pub fn parse_console(console: &str) -> Result<Vec<(String, Reading)>> {
    let mut readings = Vec::new();
    let mut done = false;
    for line in console.lines().map(str::trim) {
        // With several VMs each line carries its VM's name: `[bench0] bench: ...`.
        let line = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
            Some((_, rest)) => rest,
            None => line,
        };
        let Some(rest) = line.strip_prefix("bench: ") else {
            continue;
        };
        if rest.starts_with("FAIL") {
            bail!("the guest failed: {line}");
        }
        if rest == "done" {
            done = true;
            continue;
        }
        let Some((op, value)) = rest.split_once(' ') else {
            continue;
        };
        if !OPS.contains(&op) {
            continue;
        }
        readings.push((
            op.to_string(),
            parse_reading(value).with_context(|| format!("in `{line}`"))?,
        ));
    }
    ensure!(done, "the guest never printed `bench: done`");
    Ok(readings)
}

fn parse_reading(text: &str) -> Result<Reading> {
    if let Some(reason) = text.strip_prefix("unavailable") {
        let reason = reason.trim();
        let reason = reason
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(reason);
        return Ok(Reading::Unavailable {
            reason: reason.to_string(),
        });
    }
    let mut words = text.split_whitespace();
    let number = words.next().context("no figure")?;
    let instructions: f64 = number
        .parse()
        .with_context(|| format!("`{number}` is not a number"))?;
    let iters = match words.next() {
        Some(word) => {
            let n = word
                .strip_prefix("iters=")
                .with_context(|| format!("unexpected `{word}`"))?;
            Some(
                n.parse()
                    .with_context(|| format!("`{n}` is not an iteration count"))?,
            )
        }
        None => None,
    };
    Ok(Reading::Measured {
        instructions,
        iters,
    })
}

/// What was measured where, for one operation.
#[derive(Debug, Serialize)]
pub struct Row {
    pub op: &'static str,
    pub veil: Option<Reading>,
    pub bare: Option<Reading>,
    /// Veil minus bare QEMU, when both were measured.
    pub overhead: Option<f64>,
    pub target: Option<u64>,
    /// "pass" or "over" when the op has a target and Veil measured it.
    pub verdict: Option<&'static str>,
}

/// Joins both columns in [`OPS`] order and judges the targets.
pub fn rows(veil: &[(String, Reading)], bare: &[(String, Reading)]) -> Vec<Row> {
    let find = |readings: &[(String, Reading)], op: &str| {
        readings
            .iter()
            .find(|(name, _)| name == op)
            .map(|(_, r)| r.clone())
    };
    OPS.iter()
        .map(|&op| {
            let veil = find(veil, op);
            let bare = find(bare, op);
            let veil_n = veil.as_ref().and_then(Reading::instructions);
            let bare_n = bare.as_ref().and_then(Reading::instructions);
            let target = TARGETS.iter().find(|(name, _)| *name == op).map(|t| t.1);
            let verdict = match (veil_n, target) {
                (Some(n), Some(limit)) => Some(if n <= limit as f64 { "pass" } else { "over" }),
                _ => None,
            };
            Row {
                op,
                overhead: veil_n.zip(bare_n).map(|(v, b)| v - b),
                veil,
                bare,
                target,
                verdict,
            }
        })
        .collect()
}

/// One allocated ELF section.
#[derive(Debug, PartialEq, Serialize)]
pub struct Section {
    pub name: String,
    pub bytes: u64,
}

/// Sizes of Veil's image, from its ELF.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct ImageSize {
    /// Every allocated section, in file order.
    pub sections: Vec<Section>,
    /// Executable code.
    pub text: u64,
    /// Read-only data.
    pub rodata: u64,
    /// Initialized writable data.
    pub data: u64,
    /// Zero-initialized (NOBITS) sections, stacks included.
    pub bss: u64,
    /// The raw binary QEMU loads.
    pub bin: u64,
}

/// Reads the section headers of a little-endian ELF64 file and sums the allocated sections by
/// kind, as `llvm-size -A` lists them. Only the headers are parsed; nothing else is needed.
pub fn image_size(elf: &[u8]) -> Result<ImageSize> {
    const SHF_WRITE: u64 = 1;
    const SHF_ALLOC: u64 = 2;
    const SHF_EXECINSTR: u64 = 4;
    const SHT_NOBITS: u32 = 8;
    let u16_at = |at: usize| -> Result<u16> {
        let bytes = elf.get(at..at + 2).context("ELF file is truncated")?;
        Ok(u16::from_le_bytes(bytes.try_into()?))
    };
    let u32_at = |at: usize| -> Result<u32> {
        let bytes = elf.get(at..at + 4).context("ELF file is truncated")?;
        Ok(u32::from_le_bytes(bytes.try_into()?))
    };
    let u64_at = |at: usize| -> Result<u64> {
        let bytes = elf.get(at..at + 8).context("ELF file is truncated")?;
        Ok(u64::from_le_bytes(bytes.try_into()?))
    };
    ensure!(elf.starts_with(b"\x7fELF"), "not an ELF file");
    ensure!(
        elf.get(4..6) == Some(&[2, 1]),
        "not a little-endian 64-bit ELF file"
    );
    let shoff = usize::try_from(u64_at(0x28)?)?;
    let shentsize = usize::from(u16_at(0x3A)?);
    let shnum = usize::from(u16_at(0x3C)?);
    let shstrndx = usize::from(u16_at(0x3E)?);
    ensure!(shentsize >= 64, "ELF section headers of {shentsize} bytes");
    let header = |index: usize| shoff + index * shentsize;
    let strtab = usize::try_from(u64_at(header(shstrndx) + 24)?)?;
    let name_at = |offset: u32| -> String {
        let start = strtab + offset as usize;
        let bytes = elf.get(start..).unwrap_or_default();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    };
    let mut size = ImageSize::default();
    for index in 1..shnum {
        let at = header(index);
        let (name, kind, flags, bytes) = (
            u32_at(at)?,
            u32_at(at + 4)?,
            u64_at(at + 8)?,
            u64_at(at + 32)?,
        );
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        size.sections.push(Section {
            name: name_at(name),
            bytes,
        });
        if kind == SHT_NOBITS {
            size.bss += bytes;
        } else if flags & SHF_EXECINSTR != 0 {
            size.text += bytes;
        } else if flags & SHF_WRITE != 0 {
            size.data += bytes;
        } else {
            size.rodata += bytes;
        }
    }
    Ok(size)
}

/// Everything `--json` writes.
#[derive(Serialize)]
struct Report<'a> {
    date: String,
    qemu: String,
    board: &'static str,
    gic: u32,
    iters: u64,
    image: &'a ImageSize,
    ops: &'a [Row],
}

/// `cargo xtask bench`.
pub fn run(ws: &Workspace, args: &BenchArgs) -> Result<u8> {
    let version = qemu::ensure_installed(ws)?;
    let mut launcher = Launcher::new(ws.clone());
    let hypervisor = launcher.hypervisor(BOARD, Profile::Release)?;
    let image = veil_image_size(&hypervisor)?;
    let guest = launcher.bundled_guest("bench")?;

    let all = format!("bench.iters={}", args.iters);
    let ipi = format!("{all} bench.only={TWO_VCPU_OP}");
    let switch = format!("{all} bench.only={SWITCH_OP}");
    let mut veil = Vec::new();
    let mut bare = Vec::new();
    for (smp, cmdline) in [(1, &all), (2, &ipi)] {
        let from_veil = on_veil(ws, &mut launcher, args.gic, smp, 1, cmdline)?;
        let from_bare = on_bare_qemu(&guest, args.gic, smp, cmdline)?;
        merge(&mut veil, from_veil, smp);
        merge(&mut bare, from_bare, smp);
    }
    // The VM switch: two copies of the guest sharing one CPU, each yielding to the other.
    let from_veil = on_veil(ws, &mut launcher, args.gic, 1, 2, &switch)?;
    veil.retain(|(op, _)| op != SWITCH_OP);
    veil.extend(
        from_veil
            .into_iter()
            .filter(|(op, _)| op == SWITCH_OP)
            .take(1),
    );

    let rows = rows(&veil, &bare);
    print!("{}", table(&rows, args, &version.to_string()));
    println!("{}", image_line(&image));
    if let Some(path) = &args.json {
        let report = Report {
            date: today(),
            qemu: version.to_string(),
            board: BOARD,
            gic: args.gic,
            iters: args.iters,
            image: &image,
            ops: &rows,
        };
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("xtask: wrote {}", ws.show(path));
    }
    Ok(0)
}

/// Adds a run's readings: the one-vCPU run gives every op but `ipi_roundtrip`, the two-vCPU
/// run gives only that one.
fn merge(into: &mut Vec<(String, Reading)>, readings: Vec<(String, Reading)>, smp: u32) {
    let wanted = |op: &str| (op == TWO_VCPU_OP) == (smp > 1);
    into.extend(readings.into_iter().filter(|(op, _)| wanted(op)));
}

fn veil_image_size(hypervisor: &Hypervisor) -> Result<ImageSize> {
    let elf = std::fs::read(&hypervisor.elf)
        .with_context(|| format!("cannot read {}", hypervisor.elf.display()))?;
    let mut size = image_size(&elf)
        .with_context(|| format!("reading the sections of {}", hypervisor.elf.display()))?;
    size.bin = hypervisor.size;
    Ok(size)
}

/// Boots the bench guest under Veil.
fn on_veil(
    ws: &Workspace,
    launcher: &mut Launcher,
    gic: u32,
    smp: u32,
    vms: u32,
    cmdline: &str,
) -> Result<Vec<(String, Reading)>> {
    let launch = Launch {
        board: BOARD.into(),
        profile: Profile::Release,
        gic,
        smp,
        vcpus: None,
        vms,
        passthrough_mmio: Vec::new(),
        passthrough_spis: Vec::new(),
        memory: GUEST_MEMORY,
        guest: Guest::Bench,
        initrd: None,
        cmdline: Some(cmdline.into()),
        timeout: Some(TIMEOUT),
        icount: true,
        gdb: false,
    };
    eprintln!("xtask: bench on Veil: GICv{gic}, {vms} VM(s) of {smp} vCPU, {cmdline}");
    let mut notes = Notes::new(Console::Capture);
    let outcome = launcher.launch(&launch, Console::Capture, &mut notes)?;
    readings_of(&outcome)
        .with_context(|| format!("repeat it with: {}", launch.run_command(ws)))
        .with_context(|| format!("the run on Veil failed; its console:\n{}", outcome.console))
}

/// Boots the bench guest directly on QEMU: EL1, QEMU's own PSCI over HVC, real devices.
fn on_bare_qemu(guest: &Path, gic: u32, smp: u32, cmdline: &str) -> Result<Vec<(String, Reading)>> {
    let mut command = Command::new(qemu::PROGRAM);
    command
        .arg("-M")
        .arg(format!("virt,gic-version={gic}"))
        .args(["-cpu", "max", "-smp", &smp.to_string()])
        .args(["-m", &size::format_size(GUEST_MEMORY)])
        .args(["-nographic", "-no-reboot"])
        .args(["-icount", "shift=0,align=off,sleep=off"])
        .arg("-kernel")
        .arg(guest)
        .args(["-append", cmdline]);
    let shown = describe(&command);
    eprintln!("xtask: bench on bare QEMU: {shown}");
    let outcome = qemu::run(command, Console::Capture, Some(TIMEOUT))?;
    readings_of(&outcome)
        .with_context(|| format!("repeat it with: {shown}"))
        .with_context(|| {
            format!(
                "the run on bare QEMU failed; its console:\n{}",
                outcome.console
            )
        })
}

/// The readings of a run that ended as it should: the guest powered off (status 0).
fn readings_of(outcome: &Outcome) -> Result<Vec<(String, Reading)>> {
    ensure!(
        outcome.ending == Ending::Exited(0),
        "QEMU ended with {}",
        outcome.ending
    );
    parse_console(&outcome.console)
}

/// A figure for the table: an integer when it is one, else two decimals.
fn figure(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

fn cell(reading: Option<&Reading>) -> String {
    match reading {
        Some(Reading::Measured { instructions, .. }) => figure(*instructions),
        Some(Reading::Unavailable { .. }) => "n/a".into(),
        None => "-".into(),
    }
}

/// The table, then the reason for every `n/a` in it.
fn table(rows: &[Row], args: &BenchArgs, qemu_version: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Instructions per operation: Veil (release) vs bare QEMU {qemu_version}, GICv{}, \
         -icount shift=0, {} iterations",
        args.gic, args.iters
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>11} {:>9}  verdict",
        "op", "Veil", "bare QEMU", "Veil-bare", "target"
    );
    for row in rows {
        let target = row.target.map_or_else(|| "-".into(), |t| format!("<={t}"));
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>10} {:>11} {:>9}  {}",
            row.op,
            cell(row.veil.as_ref()),
            cell(row.bare.as_ref()),
            row.overhead.map_or_else(|| "-".into(), figure),
            target,
            row.verdict.unwrap_or("-")
        );
    }
    let mut reasons = String::new();
    for row in rows {
        for (column, reading) in [("Veil", &row.veil), ("bare QEMU", &row.bare)] {
            if let Some(Reading::Unavailable { reason }) = reading {
                let _ = writeln!(reasons, "  {} on {column}: {reason}", row.op);
            }
        }
    }
    if !reasons.is_empty() {
        let _ = writeln!(out, "n/a:");
        out.push_str(&reasons);
    }
    out
}

fn image_line(image: &ImageSize) -> String {
    let sections: Vec<String> = image
        .sections
        .iter()
        .map(|section| format!("{} {}", section.name, section.bytes))
        .collect();
    format!(
        "Veil image (release): text {} + rodata {} + data {} bytes loaded, bss {} bytes \
         ({}); veil.bin {}",
        image.text,
        image.rodata,
        image.data,
        image.bss,
        sections.join(", "),
        size::human(image.bin)
    )
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of day `days` since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VEIL: &str = "Veil 0.1.0\r\n\
        bench: hypervisor Veil, GICv3, 1 vCPU(s), counter 1000000000 Hz, iters=1000\r\n\
        bench: boot 1271159\r\n\
        bench: null_hvc 145 iters=1000\r\n\
        veil[0] WARN  VM 0 \"bench\" vCPU 0: 4-byte read (w9) at IPA 0x8000004\r\n\
        bench: gicd_read unavailable (no distributor answers: GICD_TYPER read raised an exception, EC=0x25 ISS=0x10)\r\n\
        bench: vtimer_latency 12.50 iters=20\r\n\
        bench: done\r\n";

    fn measured(n: f64, iters: Option<u64>) -> Reading {
        Reading::Measured {
            instructions: n,
            iters,
        }
    }

    #[test]
    fn parses_the_guest_console() {
        let readings = parse_console(VEIL).unwrap();
        let ops: Vec<&str> = readings.iter().map(|(op, _)| op.as_str()).collect();
        assert_eq!(ops, ["boot", "null_hvc", "gicd_read", "vtimer_latency"]);
        assert_eq!(readings[0].1, measured(1_271_159.0, None));
        assert_eq!(readings[1].1, measured(145.0, Some(1000)));
        assert_eq!(
            readings[2].1,
            Reading::Unavailable {
                reason:
                    "no distributor answers: GICD_TYPER read raised an exception, EC=0x25 ISS=0x10"
                        .into()
            }
        );
        assert_eq!(readings[3].1, measured(12.5, Some(20)));
    }

    #[test]
    fn refuses_incomplete_or_failed_runs() {
        let cut = VEIL.replace("bench: done", "");
        let err = format!("{:#}", parse_console(&cut).unwrap_err());
        assert!(err.contains("bench: done"), "{err}");
        let failed = VEIL.replace("bench: done", "bench: FAIL unexpected exception ESR=0x0");
        assert!(parse_console(&failed).is_err());
        let garbled = VEIL.replace("145 iters=1000", "many");
        assert!(parse_console(&garbled).is_err());
    }

    #[test]
    fn joins_columns_and_judges_targets() {
        let veil = parse_console(VEIL).unwrap();
        let bare = vec![
            ("boot".to_string(), measured(7.0, None)),
            ("null_hvc".to_string(), measured(1.0, Some(1000))),
            ("gicd_read".to_string(), measured(1.0, Some(1000))),
        ];
        let rows = rows(&veil, &bare);
        assert_eq!(rows.len(), OPS.len());
        let row = |op: &str| rows.iter().find(|r| r.op == op).unwrap();
        assert_eq!(row("boot").overhead, Some(1_271_152.0));
        assert_eq!(row("boot").verdict, Some("over"));
        assert_eq!(row("null_hvc").target, Some(50));
        assert_eq!(row("gicd_read").overhead, None);
        assert_eq!(row("gicd_read").verdict, None);
        assert_eq!(row("vm_switch").veil, None);

        let fast = vec![("null_hvc".to_string(), measured(50.0, Some(1000)))];
        assert_eq!(super::rows(&fast, &[])[1].verdict, Some("pass"));
    }

    #[test]
    fn merges_the_two_vcpu_run() {
        let mut into = Vec::new();
        let one = vec![
            ("null_hvc".to_string(), measured(1.0, Some(1))),
            (
                "ipi_roundtrip".to_string(),
                Reading::Unavailable {
                    reason: "one vCPU".into(),
                },
            ),
        ];
        let two = vec![("ipi_roundtrip".to_string(), measured(42.0, Some(1)))];
        merge(&mut into, one, 1);
        merge(&mut into, two, 2);
        assert_eq!(into.len(), 2);
        assert_eq!(
            into[1],
            ("ipi_roundtrip".to_string(), measured(42.0, Some(1)))
        );
    }

    #[test]
    fn reads_section_sizes_of_a_real_elf() {
        // The test binary itself is an ELF64 little-endian file on the hosts xtask supports.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let size = image_size(&exe).unwrap();
        assert!(size.text > 0);
        assert!(size.sections.iter().any(|section| section.name == ".text"));
        assert!(image_size(b"not an elf").is_err());
        assert!(image_size(&exe[..0x30]).is_err());
    }

    #[test]
    fn formats_figures_and_dates() {
        assert_eq!(figure(145.0), "145");
        assert_eq!(figure(12.5), "12.50");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
