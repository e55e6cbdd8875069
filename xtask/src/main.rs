//! `cargo xtask`: Veil's host-side driver. It builds the hypervisor image for a board, packs
//! guests into a VM package (docs/VM_PACKAGE.md), boots both under QEMU, and runs the test suite
//! (host unit tests, then the QEMU scenarios of tests/scenarios.toml).
//!
//! Modules: `board` (boards/*.toml), `image` (cargo + llvm-objcopy), `package` (the VM package
//! writer), `qemu` (finding and running QEMU), `launch` (one boot, shared by `run` and `test`),
//! `scenario` (scenario files and judging a console), `hosttest` (`cargo test` and libtest's
//! summaries), `bench` (`cargo xtask bench`), `size` and `workspace` (small shared helpers).

mod bench;
mod board;
mod cpio;
mod hosttest;
mod image;
mod launch;
mod linux;
mod package;
mod qemu;
mod scenario;
mod size;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, value_parser};

use crate::launch::{Guest, Launch, Launcher, Notes};
use crate::qemu::{Console, Ending};
use crate::workspace::{Profile, Workspace};

/// What xtask exits with when it fails itself (bad arguments, a failed build, no QEMU), so that
/// it is never mistaken for one of Veil's statuses.
const XTASK_FAILED: u8 = 125;

/// What `run` exits with, for its `--help` and the top-level one.
macro_rules! run_exit_help {
    () => {
        "Exit status of `run`: QEMU's, which is Veil's (0 = every VM powered off, 1 = Veil stopped a VM
for an error, 2 = Veil panicked); 124 = timeout; 125 = xtask itself failed."
    };
}

const RUN_EXIT_HELP: &str = run_exit_help!();
const EXIT_STATUS_HELP: &str = concat!(
    run_exit_help!(),
    "\nExit status of `test`: 0 when every test passed, 1 otherwise."
);

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run and test Veil, a type-1 hypervisor for ARMv8-A",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build Veil for a board and the bundled tiny guest, as raw binaries.
    Build(BuildArgs),
    /// Build, pack one guest into a VM package, and boot Veil with it under QEMU.
    #[command(after_help = RUN_EXIT_HELP)]
    Run(RunArgs),
    /// Run the host unit tests, then every QEMU scenario in tests/scenarios.toml.
    ///
    /// Prints one line per test and, last, `N passed, M failed`. A failing scenario's console
    /// output is printed with the `cargo xtask run` line that repeats it.
    Test(TestArgs),
    /// Fetch Debian's arm64 Linux and busybox, pack an initramfs, and boot them (see
    /// xtask/src/linux.rs); `--bare` boots them on QEMU without Veil, as a check.
    Linux(linux::LinuxArgs),
    /// Instructions per exit, emulated access and interrupt: the bench guest on Veil (release,
    /// -icount) against the same guest on bare QEMU, with the targets (docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// Board to build for: one of boards/*.toml.
    #[arg(long, value_name = "BOARD", default_value = "qemu-virt")]
    board: String,
    /// Build Veil with the release profile (LTO, slower to build).
    #[arg(long)]
    release: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// GIC version of the machine and of the VM [default: 3, or the board's only one].
    #[arg(long, value_name = "2|3", value_parser = value_parser!(u32).range(2..=3))]
    gic: Option<u32>,
    /// CPUs of the machine, and vCPUs of the VM.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = value_parser!(u32).range(1..=8))]
    smp: u32,
    /// vCPUs of each VM [default: --smp]; more than --smp share the machine's CPUs.
    #[arg(long, value_name = "N", value_parser = value_parser!(u32).range(1..=8))]
    vcpus: Option<u32>,
    /// Pass a host device window through to the VM at the same address: BASE:SIZE (hex with
    /// 0x, or decimal), page-aligned. Repeatable.
    #[arg(long, value_name = "BASE:SIZE", value_parser = parse_window)]
    passthrough_mmio: Vec<(u64, u64)>,
    /// Deliver host SPI INTID to the VM as a hardware-mapped interrupt. Repeatable.
    #[arg(long, value_name = "INTID")]
    passthrough_spi: Vec<u32>,
    /// Run N VMs, each with its own copy of the guest (console lines prefixed by VM name).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = value_parser!(u32).range(1..=8))]
    vms: u32,
    /// Guest RAM with a K, M or G suffix; a multiple of 2 MiB. The machine gets at least
    /// this plus 512M.
    #[arg(long, value_name = "SIZE", default_value = "128M", value_parser = size::clap_guest_memory)]
    mem: u64,
    /// Guest kernel: a Linux arm64 Image, an ELF or a raw binary [default: the bundled tiny
    /// guest, target/guests/tiny.bin].
    #[arg(long, value_name = "FILE")]
    guest: Option<PathBuf>,
    /// Initial ramdisk for the guest.
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// The guest's kernel command line (its /chosen/bootargs).
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Stop QEMU after this many seconds and exit 124; 0 = never [default: 60, never with --gdb].
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Deterministic timing: one instruction per nanosecond of virtual time.
    #[arg(long)]
    icount: bool,
    /// Start QEMU's gdb stub on :1234 and wait for the debugger (prints the gdb line).
    #[arg(long)]
    gdb: bool,
}

#[derive(Args)]
struct TestArgs {
    /// Run only scenarios whose name contains STR (also passed to libtest as a name filter).
    #[arg(long, value_name = "STR")]
    filter: Option<String>,
    /// Skip the host unit tests; run only the QEMU scenarios.
    #[arg(long)]
    no_host: bool,
    /// Boot the release build of Veil in the scenarios.
    #[arg(long)]
    release: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(XTASK_FAILED)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let ws = Workspace::locate();
    let result = match cli.command {
        Command::Build(args) => build(&ws, &args),
        Command::Run(args) => run(&ws, args),
        Command::Test(args) => test(&ws, &args),
        Command::Linux(args) => linux::main(&ws, &args),
        Command::Bench(args) => bench::run(&ws, &args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("xtask: error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::from(XTASK_FAILED)
        }
    }
}

fn build(ws: &Workspace, args: &BuildArgs) -> Result<u8> {
    board::Board::load(&ws.root, &args.board)?;
    let hypervisor =
        image::build_hypervisor(ws, &args.board, Profile::from_release_flag(args.release))?;
    let (tiny, tiny_size) = image::build_tiny_guest(ws)?;
    println!(
        "veil  {}  {}  (ELF for gdb: {})",
        ws.show(&hypervisor.bin),
        size::human(hypervisor.size),
        ws.show(&hypervisor.elf)
    );
    println!("tiny  {}  {}", ws.show(&tiny), size::human(tiny_size));
    Ok(0)
}

fn run(ws: &Workspace, args: RunArgs) -> Result<u8> {
    let timeout = match args.timeout {
        Some(0) => None,
        Some(seconds) => Some(Duration::from_secs(seconds)),
        None if args.gdb => None,
        None => Some(Duration::from_secs(60)),
    };
    let gic = match args.gic {
        Some(gic) => gic,
        None => board::Board::load(&ws.root, &args.build.board)?.default_gic(),
    };
    let launch = Launch {
        board: args.build.board,
        profile: Profile::from_release_flag(args.build.release),
        gic,
        smp: args.smp,
        vcpus: args.vcpus,
        vms: args.vms,
        passthrough_mmio: args.passthrough_mmio.clone(),
        passthrough_spis: args.passthrough_spi.clone(),
        memory: args.mem,
        guest: args.guest.map_or(Guest::Tiny, Guest::File),
        initrd: args.initrd,
        cmdline: args.cmdline,
        timeout,
        icount: args.icount,
        gdb: args.gdb,
    };
    let mut notes = Notes::new(Console::Stream);
    let outcome = Launcher::new(ws.clone()).launch(&launch, Console::Stream, &mut notes)?;
    let meaning = match outcome.ending {
        Ending::Exited(0) => " (every VM powered off)",
        Ending::Exited(1) => " (Veil stopped a VM for an error)",
        Ending::Exited(2) => " (Veil panicked)",
        _ => "",
    };
    match outcome.ending {
        Ending::TimedOut(_) => eprintln!("xtask: {}", outcome.ending),
        ending => eprintln!(
            "xtask: {ending}{meaning} after {:.1} s",
            outcome.elapsed.as_secs_f64()
        ),
    }
    Ok(u8::try_from(outcome.ending.exit_code()).unwrap_or(XTASK_FAILED))
}

/// Passed and failed tests, for the closing line.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

fn test(ws: &Workspace, args: &TestArgs) -> Result<u8> {
    let mut tally = Tally::default();
    if !args.no_host {
        host_tests(ws, args.filter.as_deref(), &mut tally);
    }
    scenarios(ws, args, &mut tally);
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 { 0 } else { 1 })
}

fn host_tests(ws: &Workspace, filter: Option<&str>, tally: &mut Tally) {
    let runs = match hosttest::run(ws, filter) {
        Ok(runs) => runs,
        Err(error) => {
            println!("FAIL host unit tests: {error:#}");
            tally.failed += 1;
            return;
        }
    };
    for suite in runs {
        let summary = &suite.summary;
        let seconds = suite.elapsed.as_secs_f64();
        tally.passed += summary.passed;
        tally.failed += summary.failed;
        if suite.success && summary.failed == 0 {
            println!(
                "ok   {} host unit tests: {} passed ({seconds:.1} s)",
                suite.name, summary.passed
            );
            continue;
        }
        for name in &summary.failures {
            println!("FAIL {}::{name}: host unit test failed", suite.name);
        }
        let unnamed = summary.failed.saturating_sub(summary.failures.len() as u64);
        if unnamed > 0 {
            println!(
                "FAIL {} host unit tests: {unnamed} more failed (see the output)",
                suite.name
            );
        }
        if summary.failed == 0 {
            // It failed before reporting any test: a compile error or a crash.
            println!(
                "FAIL {} host unit tests: `{}` failed before reporting results",
                suite.name, suite.command
            );
            tally.failed += 1;
        }
        print_block(&format!("output of {}", suite.command), &suite.output, "");
    }
}

fn scenarios(ws: &Workspace, args: &TestArgs, tally: &mut Tally) {
    let all = match scenario::load(ws) {
        Ok(all) => all,
        Err(error) => {
            println!("FAIL {}: {error:#}", scenario::FILE);
            tally.failed += 1;
            return;
        }
    };
    let selected = scenario::select(&all, args.filter.as_deref());
    if selected.is_empty() {
        println!(
            "no scenario in {} matches {:?}",
            scenario::FILE,
            args.filter.as_deref().unwrap_or("")
        );
    }
    let profile = Profile::from_release_flag(args.release);
    let mut launcher = Launcher::new(ws.clone());
    for scenario in selected {
        let launch = match scenario.launch(ws, profile) {
            Ok(launch) => launch,
            Err(error) => {
                println!("FAIL {}: {error:#}", scenario.name);
                tally.failed += 1;
                continue;
            }
        };
        let mut notes = Notes::new(Console::Capture);
        let input = scenario.input();
        let outcome =
            match launcher.launch_with_input(&launch, Console::Capture, &mut notes, input.as_ref())
            {
                Ok(outcome) => outcome,
                Err(error) => {
                    println!("FAIL {}: {error:#}", scenario.name);
                    tally.failed += 1;
                    continue;
                }
            };
        let problems = scenario.judge(&outcome);
        if problems.is_empty() {
            let seconds = outcome.elapsed.as_secs_f64();
            println!("ok   {} ({seconds:.1} s)", scenario.name);
            tally.passed += 1;
            // The bare run is QEMU virt with the fixed script: a comparison only for Veil on the
            // same machine running the same script.
            if scenario.guest == "linux"
                && scenario.board == "qemu-virt"
                && scenario
                    .cmdline
                    .split_whitespace()
                    .any(|a| a == linux::TEST_ARG)
            {
                linux::compare_with_bare(ws, &launch, &outcome.console);
            }
            continue;
        }
        println!("FAIL {}: {}", scenario.name, problems.join("; "));
        tally.failed += 1;
        let notes = notes.lines.iter().map(|line| format!("xtask: {line}\n"));
        let transcript: String = notes.chain([outcome.console]).collect();
        let repeat = format!("repeat it with: {}", launch.run_command(ws));
        print_block(
            &format!("console of {}", scenario.name),
            &transcript,
            &repeat,
        );
    }
}

/// Prints captured output between two marker lines.
fn print_block(title: &str, text: &str, footer: &str) {
    println!("---- {title} ----");
    print!("{text}");
    if !text.is_empty() && !text.ends_with('\n') {
        println!();
    }
    println!(
        "---- end ----{}",
        if footer.is_empty() {
            String::new()
        } else {
            format!(" {footer}")
        }
    );
}

/// `BASE:SIZE` of `--passthrough-mmio`.
pub fn parse_window(text: &str) -> Result<(u64, u64), String> {
    let number = |t: &str| match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    let (base, size) = text.split_once(':').ok_or("expected BASE:SIZE")?;
    Ok((
        number(base).map_err(|e| format!("base {base:?}: {e}"))?,
        number(size).map_err(|e| format!("size {size:?}: {e}"))?,
    ))
}
