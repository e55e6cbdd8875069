//! One boot of Veil under QEMU with one VM: the path that `cargo xtask run`, every scenario of
//! `cargo xtask test` and `cargo xtask bench` take. Reads the user's files, makes sure QEMU is
//! there, builds Veil (once per board and profile) and a bundled guest (once each), writes the
//! VM package, starts QEMU.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::board::Board;
use crate::image::{self, Hypervisor};
use crate::package::{self, GuestFormat, VmSpec};
use crate::qemu::{self, Console, GDB_PORT, Input, Invocation, Outcome};
use crate::size;
use crate::workspace::{Profile, Workspace, describe, shell_quote};

/// Which kernel the VM boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guest {
    /// The bundled tiny guest, built from tests/guests/tiny.
    Tiny,
    /// The bundled benchmark guest, built from tests/guests/bench.
    Bench,
    /// The bundled interrupt guest, built from tests/guests/irq.
    Irq,
    /// The bundled memory and I/O test guest, built from tests/guests/memio.
    Memio,
    /// The bundled CPU-virtualization test guest, built from tests/guests/cpu.
    Cpu,
    /// The tiny guest as an ELF, to test Veil's ELF loader.
    TinyElf,
    /// The tiny guest behind an arm64 Image header, to test Veil's Image loader.
    TinyImage,
    /// A file: an arm64 Image, an ELF or a raw binary.
    File(PathBuf),
}

impl Guest {
    /// The bundled guest called `name` (see [`image::BUNDLED_GUESTS`]).
    pub fn bundled(name: &str) -> Option<Guest> {
        match name {
            "tiny" => Some(Guest::Tiny),
            "bench" => Some(Guest::Bench),
            "irq" => Some(Guest::Irq),
            "memio" => Some(Guest::Memio),
            "cpu" => Some(Guest::Cpu),
            "tiny-elf" => Some(Guest::TinyElf),
            "tiny-image" => Some(Guest::TinyImage),
            _ => None,
        }
    }

    /// A bundled guest's name, also its VM's name; `None` for a file.
    pub fn bundled_name(&self) -> Option<&'static str> {
        match self {
            Guest::Tiny => Some("tiny"),
            Guest::Bench => Some("bench"),
            Guest::Irq => Some("irq"),
            Guest::Memio => Some("memio"),
            Guest::Cpu => Some("cpu"),
            Guest::TinyElf => Some("tiny-elf"),
            Guest::TinyImage => Some("tiny-image"),
            Guest::File(_) => None,
        }
    }
}

/// Everything one boot needs.
#[derive(Clone, Debug)]
pub struct Launch {
    pub board: String,
    pub profile: Profile,
    pub gic: u32,
    pub smp: u32,
    /// vCPUs of each VM; `None` = one per machine CPU (`smp`). More than `smp` share CPUs.
    pub vcpus: Option<u32>,
    /// How many VMs run the guest (each its own copy, named `<guest>0`, `<guest>1`, ...).
    pub vms: u32,
    /// Host device windows (base, size) and SPIs passed through to the (first) VM.
    pub passthrough_mmio: Vec<(u64, u64)>,
    pub passthrough_spis: Vec<u32>,
    /// Guest RAM in bytes (a multiple of 2 MiB).
    pub memory: u64,
    pub guest: Guest,
    pub initrd: Option<PathBuf>,
    /// The guest's bootargs.
    pub cmdline: Option<String>,
    /// `None` = wait for QEMU however long it runs.
    pub timeout: Option<Duration>,
    pub icount: bool,
    pub gdb: bool,
}

impl Launch {
    /// The `cargo xtask run` line that repeats this boot, for people to copy.
    pub fn run_command(&self, ws: &Workspace) -> String {
        let mut words = vec![
            "cargo xtask run".to_string(),
            format!("--board {}", shell_quote(&self.board)),
            format!("--gic {}", self.gic),
            format!("--smp {}", self.smp),
            format!("--mem {}", size::format_size(self.memory)),
        ];
        if let Some(vcpus) = self.vcpus {
            words.push(format!("--vcpus {vcpus}"));
        }
        if self.vms != 1 {
            words.push(format!("--vms {}", self.vms));
        }
        for (base, size) in &self.passthrough_mmio {
            words.push(format!("--passthrough-mmio {base:#x}:{size:#x}"));
        }
        for intid in &self.passthrough_spis {
            words.push(format!("--passthrough-spi {intid}"));
        }
        if self.profile == Profile::Release {
            words.push("--release".into());
        }
        match (&self.guest, self.guest.bundled_name()) {
            (Guest::Tiny, _) => {}
            (Guest::File(path), _) => {
                words.push(format!("--guest {}", shell_quote(ws.short(path))))
            }
            (_, Some(name)) => {
                let file = image::bundled_guest_path(ws, name);
                words.push(format!("--guest {}", shell_quote(ws.short(&file))));
            }
            (_, None) => unreachable!("only files have no bundled name"),
        }
        if let Some(initrd) = &self.initrd {
            words.push(format!("--initrd {}", shell_quote(ws.short(initrd))));
        }
        if let Some(cmdline) = self.cmdline.as_deref().filter(|c| !c.is_empty()) {
            words.push(format!("--cmdline {}", shell_quote(cmdline)));
        }
        if self.icount {
            words.push("--icount".into());
        }
        words.join(" ")
    }
}

/// What xtask says about a boot besides QEMU's console: shown at once when the console is
/// streamed, kept for a failure report when it is captured.
#[derive(Debug, Default)]
pub struct Notes {
    echo: bool,
    pub lines: Vec<String>,
}

impl Notes {
    pub fn new(console: Console) -> Self {
        Notes {
            echo: console == Console::Stream,
            lines: Vec::new(),
        }
    }

    pub fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        if self.echo {
            eprintln!("xtask: {line}");
        }
        self.lines.push(line);
    }
}

/// Boots Veil; remembers builds and the QEMU check across boots.
pub struct Launcher {
    ws: Workspace,
    hypervisors: HashMap<(String, Profile), std::result::Result<Hypervisor, String>>,
    /// Bundled guests built so far, by name.
    guests: HashMap<&'static str, std::result::Result<PathBuf, String>>,
    qemu: Option<std::result::Result<qemu::Version, String>>,
}

impl Launcher {
    pub fn new(ws: Workspace) -> Self {
        Launcher {
            ws,
            hypervisors: HashMap::new(),
            guests: HashMap::new(),
            qemu: None,
        }
    }

    /// Boots Veil with one VM as `launch` says and waits for QEMU to end.
    pub fn launch(
        &mut self,
        launch: &Launch,
        console: Console,
        notes: &mut Notes,
    ) -> Result<Outcome> {
        self.launch_with_input(launch, console, notes, None)
    }

    /// [`Launcher::launch`], typing `input` into the console (see [`qemu::run_with_input`]).
    pub fn launch_with_input(
        &mut self,
        launch: &Launch,
        console: Console,
        notes: &mut Notes,
        input: Option<&Input>,
    ) -> Result<Outcome> {
        let board = Board::load(&self.ws.root, &launch.board)?;
        board.check_gic(launch.gic)?;
        board.check_smp(launch.smp)?;

        // The user's files first: a typo should not have to wait for a build.
        let user_kernel = match &launch.guest {
            Guest::File(path) => Some((path.clone(), read_input(path, "--guest")?)),
            _ => None,
        };
        let initrd = launch
            .initrd
            .as_deref()
            .map(|p| read_input(p, "--initrd"))
            .transpose()?;

        let dtb = self.host_dtb(&board, notes)?;

        self.qemu()?;
        notes.note(format!("board {}: {}", board.name, board.description));
        let hypervisor = self.hypervisor(&launch.board, launch.profile)?;
        notes.note(format!(
            "veil: {} ({})",
            self.ws.show(&hypervisor.bin),
            size::human(hypervisor.size)
        ));

        let (name, path, kernel) = match user_kernel {
            Some((path, bytes)) => (package::vm_name_for(&path), path, bytes),
            None => {
                let name = launch.guest.bundled_name().unwrap_or("tiny");
                let path = self.bundled_guest(name)?;
                let bytes = read_input(&path, &format!("the {name} guest"))?;
                (name.to_string(), path, bytes)
            }
        };
        notes.note(format!(
            "guest {name}: {} ({}, {})",
            self.ws.show(&path),
            GuestFormat::detect(&kernel),
            size::human(kernel.len() as u64)
        ));
        if let (Some(path), Some(bytes)) = (&launch.initrd, &initrd) {
            notes.note(format!(
                "initrd: {} ({})",
                self.ws.show(path),
                size::human(bytes.len() as u64)
            ));
        }

        let vm = VmSpec {
            name,
            memory_size: launch.memory,
            cpus: launch.vcpus.unwrap_or(launch.smp),
            gic_version: Some(launch.gic),
            kernel,
            initrd,
            bootargs: launch.cmdline.clone().filter(|c| !c.is_empty()),
            passthrough_mmio: launch.passthrough_mmio.clone(),
            passthrough_spis: launch.passthrough_spis.clone(),
        };
        let summary = format!(
            "{} VM `{}`: {} RAM, {} vCPU, GICv{}{}",
            launch.vms.max(1),
            vm.name,
            size::format_size(vm.memory_size),
            vm.cpus,
            launch.gic,
            vm.bootargs
                .as_deref()
                .map(|b| format!(", bootargs {b:?}"))
                .unwrap_or_default()
        );
        let package_path = self.ws.board_dir(&launch.board).join("vms.pkg");
        let vms: Vec<VmSpec> = if launch.vms <= 1 {
            vec![vm.clone()]
        } else {
            // Devices can be passed through to one VM only: the first.
            (0..launch.vms)
                .map(|i| VmSpec {
                    name: format!("{}{i}", vm.name),
                    passthrough_mmio: if i == 0 {
                        vm.passthrough_mmio.clone()
                    } else {
                        Vec::new()
                    },
                    passthrough_spis: if i == 0 {
                        vm.passthrough_spis.clone()
                    } else {
                        Vec::new()
                    },
                    ..vm.clone()
                })
                .collect()
        };
        let package_size = package::write_file(&package_path, &vms)?;
        notes.note(format!(
            "package: {} ({}; {summary})",
            self.ws.show(&package_path),
            size::human(package_size)
        ));

        let invocation = Invocation {
            board: &board,
            gic: launch.gic,
            smp: launch.smp,
            memory: qemu::machine_memory(board.memory()?, launch.memory),
            kernel: self.ws.short(&hypervisor.bin),
            package: self.ws.short(&package_path),
            dtb,
            icount: launch.icount,
            gdb: launch.gdb,
        };
        let command = invocation.command();
        notes.note(describe(&command));
        if launch.gdb {
            notes.note(format!(
                "QEMU waits for gdb; in another terminal: gdb-multiarch {} -ex 'target remote :{GDB_PORT}'",
                shell_quote(self.ws.short(&hypervisor.elf))
            ));
        }
        if let Some(input) = input {
            notes.note(format!("input: {input}"));
        } else if console == Console::Stream && std::io::stdin().is_terminal() {
            notes.note("the console is yours; Ctrl-A x quits QEMU");
        }
        qemu::run_with_input(command, console, launch.timeout, input)
    }

    /// The `-dtb` file the board asks for, checked before anything is built.
    fn host_dtb(&self, board: &Board, notes: &mut Notes) -> Result<Option<PathBuf>> {
        Ok(match &board.qemu.dtb {
            Some(dtb) => {
                let path = self.ws.root.join(dtb);
                if !path.is_file() {
                    bail!(
                        "board {}: no DTB file {dtb} ([qemu] dtb in boards/{0}.toml)",
                        board.name
                    );
                }
                Some(self.ws.short(&path))
            }
            None if board.qemu.machine.starts_with("raspi") => {
                notes.note(format!(
                    "QEMU builds no DTB for {}: set [qemu] dtb in boards/{}.toml",
                    board.qemu.machine, board.name
                ));
                None
            }
            None => None,
        })
    }

    fn qemu(&mut self) -> Result<qemu::Version> {
        let ws = &self.ws;
        let checked = self
            .qemu
            .get_or_insert_with(|| qemu::ensure_installed(ws).map_err(|e| format!("{e:#}")));
        checked.clone().map_err(|e| anyhow!(e))
    }

    /// Veil built for `board` with `profile` (once per pair).
    pub fn hypervisor(&mut self, board: &str, profile: Profile) -> Result<Hypervisor> {
        let ws = &self.ws;
        let built = self
            .hypervisors
            .entry((board.to_string(), profile))
            .or_insert_with(|| {
                image::build_hypervisor(ws, board, profile).map_err(|e| format!("{e:#}"))
            });
        built.clone().map_err(|e| anyhow!(e))
    }

    /// The file of bundled guest `name` (one of [`image::BUNDLED_GUESTS`]), built once.
    pub fn bundled_guest(&mut self, name: &'static str) -> Result<PathBuf> {
        let ws = &self.ws;
        let built = self.guests.entry(name).or_insert_with(|| {
            image::build_bundled_guest(ws, name)
                .map(|(file, _)| file)
                .map_err(|e| format!("{e:#}"))
        });
        built.clone().map_err(|e| anyhow!(e))
    }
}

/// Reads a file the user named; the error says which option named it.
fn read_input(path: &Path, option: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {option} file {}", path.display()))?;
    if bytes.is_empty() {
        bail!("{option} file {} is empty", path.display());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            board: "qemu-virt".into(),
            profile: Profile::Debug,
            gic: 2,
            smp: 1,
            vcpus: None,
            vms: 1,
            passthrough_mmio: Vec::new(),
            passthrough_spis: Vec::new(),
            memory: 128 * size::MIB,
            guest: Guest::Tiny,
            initrd: None,
            cmdline: Some("tiny.test=unmapped".into()),
            timeout: Some(Duration::from_secs(30)),
            icount: false,
            gdb: false,
        }
    }

    #[test]
    fn repeats_itself_as_a_run_command() {
        let ws = Workspace {
            root: "/r".into(),
            target_dir: "/r/target".into(),
            cwd: "/r".into(),
        };
        assert_eq!(
            launch().run_command(&ws),
            "cargo xtask run --board qemu-virt --gic 2 --smp 1 --mem 128M --cmdline tiny.test=unmapped"
        );
        let linux = Launch {
            guest: Guest::File("/r/guests/Image".into()),
            initrd: Some("/tmp/initrd.cpio".into()),
            cmdline: Some("console=ttyAMA0 rdinit=/init".into()),
            profile: Profile::Release,
            memory: size::GIB,
            icount: true,
            ..launch()
        };
        let bench = Launch {
            guest: Guest::Bench,
            cmdline: Some("bench.quick".into()),
            ..launch()
        };
        assert_eq!(
            bench.run_command(&ws),
            "cargo xtask run --board qemu-virt --gic 2 --smp 1 --mem 128M \
             --guest target/guests/bench.bin --cmdline bench.quick"
        );
        let irq = Launch {
            guest: Guest::Irq,
            cmdline: Some("irq.test=sgi".into()),
            smp: 4,
            ..launch()
        };
        assert_eq!(
            irq.run_command(&ws),
            "cargo xtask run --board qemu-virt --gic 2 --smp 4 --mem 128M \
             --guest target/guests/irq.bin --cmdline irq.test=sgi"
        );
        let elf = Launch {
            guest: Guest::TinyElf,
            cmdline: None,
            ..launch()
        };
        assert_eq!(
            elf.run_command(&ws),
            "cargo xtask run --board qemu-virt --gic 2 --smp 1 --mem 128M --guest target/guests/tiny.elf"
        );
        assert_eq!(
            linux.run_command(&ws),
            "cargo xtask run --board qemu-virt --gic 2 --smp 1 --mem 1G --release --guest guests/Image \
             --initrd /tmp/initrd.cpio --cmdline 'console=ttyAMA0 rdinit=/init' --icount"
        );
    }

    #[test]
    fn missing_inputs_name_the_file() {
        let err = format!(
            "{:#}",
            read_input(Path::new("/nonexistent/Image"), "--guest").unwrap_err()
        );
        assert!(err.contains("--guest file /nonexistent/Image"), "{err}");
    }
}
