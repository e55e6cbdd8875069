//! QEMU: finding (or installing) a new enough `qemu-system-aarch64`, building its command line
//! from a board, and running it with a live or captured console and a timeout.
//!
//! Veil leaves QEMU through semihosting SYS_EXIT_EXTENDED, so QEMU's exit status is Veil's:
//! 0 = every VM powered off, 1 = a VM was stopped for an error, 2 = Veil panicked.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::board::Board;
use crate::size::{self, MIB};
use crate::workspace::Workspace;

pub const PROGRAM: &str = "qemu-system-aarch64";
/// Oldest QEMU Veil is tested with (bookworm's 7.2 lacks raspi4b and has older GIC models).
pub const MIN_VERSION: Version = Version {
    major: 9,
    minor: 0,
    patch: 0,
};
/// What xtask's timeout exits with, like coreutils' `timeout`.
pub const TIMEOUT_EXIT: i32 = 124;
/// Veil's own command line in the host DTB's `/chosen/bootargs`.
pub const VEIL_BOOTARGS: &str = "veil.exit=semihosting";
/// The port of QEMU's gdb stub (`-s`).
pub const GDB_PORT: u16 = 1234;
/// Machine RAM beyond the guests' RAM: Veil, its heap and the package itself.
pub const HOST_RAM_HEADROOM: u64 = 512 * MIB;
/// Machine RAM is a multiple of this.
pub const MACHINE_RAM_GRANULE: u64 = 256 * MIB;
/// Most console output kept for the caller; a runaway guest should not eat the host's memory.
const MAX_TRANSCRIPT: usize = 32 * 1024 * 1024;

/// A QEMU version, ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version in `qemu-system-aarch64 --version`'s first line
/// (`QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`).
pub fn parse_version(text: &str) -> Option<Version> {
    let first = text.lines().next()?;
    let rest = &first[first.find("version")? + "version".len()..];
    let word = rest.split_whitespace().next()?;
    let mut numbers = word.split('.').map(|n| {
        let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = numbers.next()??;
    let minor = numbers.next().flatten().unwrap_or(0);
    let patch = numbers.next().flatten().unwrap_or(0);
    Some(Version {
        major,
        minor,
        patch,
    })
}

/// The installed QEMU's version, or why there is none to use.
fn installed_version() -> std::result::Result<Version, String> {
    let output = Command::new(PROGRAM)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|_| format!("{PROGRAM} is not installed (or not on PATH)"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = parse_version(&text).ok_or_else(|| {
        format!(
            "cannot tell the version of {PROGRAM} from {:?}",
            text.trim()
        )
    })?;
    if version < MIN_VERSION {
        return Err(format!(
            "{PROGRAM} is version {version}, Veil needs {MIN_VERSION} or newer"
        ));
    }
    Ok(version)
}

/// Makes sure a QEMU >= 9.0 is there. As root on Debian or Ubuntu, installs one with
/// `.ci/install-qemu.sh`; anywhere else, says how.
pub fn ensure_installed(ws: &Workspace) -> Result<Version> {
    let problem = match installed_version() {
        Ok(version) => return Ok(version),
        Err(problem) => problem,
    };
    let script = ws.root.join(".ci/install-qemu.sh");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !(root && Path::new("/etc/debian_version").exists()) {
        bail!(
            "{problem}.\nInstall it with: sudo bash .ci/install-qemu.sh   (Debian/Ubuntu; \
             elsewhere install QEMU {MIN_VERSION} or newer with your package manager)"
        );
    }
    eprintln!("xtask: {problem}; installing it with `bash .ci/install-qemu.sh` ...");
    let status = Command::new("bash")
        .arg(&script)
        .current_dir(&ws.root)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{problem}, and `bash .ci/install-qemu.sh` failed ({status}): see its output above");
    }
    installed_version()
        .map_err(|still| anyhow::anyhow!("after running .ci/install-qemu.sh: {still}"))
}

/// Machine RAM: the board's default, or the guest's RAM plus 512 MiB for Veil if that is
/// more, rounded up to 256 MiB.
pub fn machine_memory(board_default: u64, guest_memory: u64) -> u64 {
    board_default
        .max(guest_memory.saturating_add(HOST_RAM_HEADROOM))
        .next_multiple_of(MACHINE_RAM_GRANULE)
}

/// Everything that goes on QEMU's command line.
#[derive(Debug)]
pub struct Invocation<'a> {
    pub board: &'a Board,
    pub gic: u32,
    pub smp: u32,
    /// Machine RAM in bytes.
    pub memory: u64,
    /// Veil's raw image (`-kernel`).
    pub kernel: PathBuf,
    /// The VM package (`-initrd`).
    pub package: PathBuf,
    /// The host DTB (`-dtb`), for machines for which QEMU builds none.
    pub dtb: Option<PathBuf>,
    pub icount: bool,
    pub gdb: bool,
}

impl Invocation<'_> {
    /// The `-M` value: the board's machine, plus the GIC version where the machine has that
    /// knob (`virt`; raspi4b has a fixed GIC-400).
    pub fn machine(&self) -> String {
        let machine = &self.board.qemu.machine;
        let kind = machine.split(',').next().unwrap_or_default();
        if kind == "virt" || kind.starts_with("virt-") {
            format!("{machine},gic-version={}", self.gic)
        } else {
            machine.clone()
        }
    }

    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["-M".into(), self.machine().into()];
        if !self.board.qemu.cpu.is_empty() {
            args.extend(["-cpu".into(), self.board.qemu.cpu.clone().into()]);
        }
        // A machine with a fixed CPU count gets it whatever the VM uses; Veil leaves the spare
        // CPUs off.
        let cpus = self.smp.max(self.board.qemu.min_smp);
        let plain = [
            "-smp",
            &cpus.to_string(),
            "-m",
            &size::format_size(self.memory),
            "-nographic",
            "-no-reboot",
        ];
        args.extend(plain.map(OsString::from));
        args.extend(["-kernel".into(), self.kernel.clone().into_os_string()]);
        args.extend(["-initrd".into(), self.package.clone().into_os_string()]);
        if let Some(dtb) = &self.dtb {
            args.extend(["-dtb".into(), dtb.clone().into_os_string()]);
        }
        let tail = [
            "-append",
            VEIL_BOOTARGS,
            "-semihosting-config",
            "enable=on,target=native",
        ];
        args.extend(tail.map(OsString::from));
        if self.icount {
            args.extend(["-icount", "shift=0,align=off,sleep=off"].map(OsString::from));
        }
        if self.gdb {
            args.extend(["-s", "-S"].map(OsString::from));
        }
        args
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(PROGRAM);
        command.args(self.args());
        command
    }
}

/// What happens to QEMU's console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// Shown live (and kept); stdin is passed through when it is a terminal.
    Stream,
    /// Only kept, for the caller to judge.
    Capture,
}

/// How a QEMU run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signalled(i32),
    TimedOut(Duration),
}

impl Ending {
    /// The status xtask exits with: QEMU's, 128 + signal, or 124 for a timeout.
    pub fn exit_code(self) -> i32 {
        match self {
            Ending::Exited(code) => code,
            Ending::Signalled(signal) => 128 + signal,
            Ending::TimedOut(_) => TIMEOUT_EXIT,
        }
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Exited(code) => write!(f, "exit status {code}"),
            Ending::Signalled(signal) => write!(f, "killed by signal {signal}"),
            Ending::TimedOut(after) => write!(f, "timeout after {} s", after.as_secs()),
        }
    }
}

/// A finished QEMU run.
#[derive(Debug)]
pub struct Outcome {
    pub ending: Ending,
    /// stdout and stderr, as they arrived (cut after 32 MiB).
    pub console: String,
    pub elapsed: Duration,
}

/// Text typed into QEMU's console (its stdin, which `-nographic` connects to the board's
/// first UART), once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub text: String,
    /// Typed only once the console output has shown each of these (in any order); none: at
    /// once.
    pub after: Vec<String>,
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)?;
        match self.after.as_slice() {
            [] => write!(f, " at once"),
            [marker] => write!(f, " once the console shows {marker:?}"),
            markers => write!(f, " once the console has shown each of {markers:?}"),
        }
    }
}

/// Runs `command` (QEMU) to its end or to `timeout`, whichever comes first.
pub fn run(command: Command, console: Console, timeout: Option<Duration>) -> Result<Outcome> {
    run_with_input(command, console, timeout, None)
}

/// Starts QEMU with stdout and stderr piped (the caller captures them, and shows them live for
/// [`Console::Stream`]) and stdin piped for typed input, else the terminal when one is there
/// and the console is live, else nothing. Returns the child and when it started.
pub fn spawn(
    mut command: Command,
    console: Console,
    typed_input: bool,
) -> Result<(Child, Instant)> {
    let interactive = console == Console::Stream && std::io::stdin().is_terminal();
    command
        .stdin(if typed_input {
            Stdio::piped()
        } else if interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {PROGRAM}: is it installed and on PATH?"))?;
    Ok((child, start))
}

/// [`run`], and types `input` into QEMU's stdin (kept open until QEMU ends, so that QEMU never
/// sees the end of its input) instead of connecting the terminal or nothing.
pub fn run_with_input(
    command: Command,
    console: Console,
    timeout: Option<Duration>,
    input: Option<&Input>,
) -> Result<Outcome> {
    let (mut child, start) = spawn(command, console, input.is_some())?;
    let transcript = Arc::new(Mutex::new(Vec::new()));
    let live = console == Console::Stream;
    let pumps = [
        pump(
            child.stdout.take(),
            Arc::clone(&transcript),
            live.then(|| Box::new(std::io::stdout()) as _),
        ),
        pump(
            child.stderr.take(),
            Arc::clone(&transcript),
            live.then(|| Box::new(std::io::stderr()) as _),
        ),
    ];
    let ended = Arc::new(AtomicBool::new(false));
    let feeder = input.map(|input| {
        feed(
            child.stdin.take(),
            input.clone(),
            Arc::clone(&transcript),
            Arc::clone(&ended),
        )
    });
    let ending = match wait(&mut child, timeout)? {
        Some(status) => ending_of(status),
        None => {
            stop(&mut child)?;
            Ending::TimedOut(timeout.unwrap_or_default())
        }
    };
    let elapsed = start.elapsed();
    ended.store(true, Ordering::Relaxed);
    if let Some(feeder) = feeder {
        // It notices `ended` within one poll.
        let _ = feeder.join();
    }
    for pump in pumps {
        // A pump only ends with its pipe; QEMU is gone, so this cannot hang.
        let _ = pump.join();
    }
    let bytes = std::mem::take(&mut *transcript.lock().unwrap_or_else(|e| e.into_inner()));
    let console = String::from_utf8_lossy(&bytes).into_owned();
    Ok(Outcome {
        ending: boot_failure_status(ending, &console),
        console,
        elapsed,
    })
}

/// Veil's status 2 ("Veil failed") for a run whose boot failed before Veil could learn that it
/// may exit through semihosting (it read no DTB yet): the machine then powered off with the
/// board's own method, which QEMU reports as success.
pub fn boot_failure_status(ending: Ending, console: &str) -> Ending {
    let failed_early = console
        .lines()
        .any(|line| line.starts_with("veil: cannot boot:"));
    match ending {
        Ending::Exited(0) if failed_early => Ending::Exited(2),
        other => other,
    }
}

/// Copies a pipe into the transcript, and to `echo` as it arrives.
fn pump(
    pipe: Option<impl Read + Send + 'static>,
    transcript: Arc<Mutex<Vec<u8>>>,
    echo: Option<Box<dyn Write + Send>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let (Some(mut pipe), mut echo) = (pipe, echo) else {
            return;
        };
        let mut buffer = [0u8; 4096];
        loop {
            let n = match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(out) = echo.as_mut() {
                // The console may be gone (a closed pager); keep draining the pipe regardless.
                let _ = out.write_all(&buffer[..n]).and_then(|()| out.flush());
            }
            let mut kept = transcript.lock().unwrap_or_else(|e| e.into_inner());
            let room = MAX_TRANSCRIPT.saturating_sub(kept.len());
            kept.extend_from_slice(&buffer[..n.min(room)]);
        }
    })
}

/// Writes `input` to QEMU's stdin once the transcript has shown each of its markers, then holds
/// stdin open until `ended`.
fn feed(
    stdin: Option<ChildStdin>,
    input: Input,
    transcript: Arc<Mutex<Vec<u8>>>,
    ended: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let Some(mut stdin) = stdin else {
            return;
        };
        let mut unseen: Vec<&[u8]> = input.after.iter().map(|m| m.as_bytes()).collect();
        let mut searched = 0;
        let mut typed = false;
        while !ended.load(Ordering::Relaxed) {
            if !typed {
                let kept = transcript.lock().unwrap_or_else(|e| e.into_inner());
                unseen.retain(|marker| {
                    let from = searched.min(kept.len()).saturating_sub(marker.len());
                    !kept[from..].windows(marker.len()).any(|w| w == *marker)
                });
                searched = kept.len();
                drop(kept);
                if unseen.is_empty() {
                    // QEMU may have gone already; the outcome says so, not this write.
                    let _ = stdin
                        .write_all(input.text.as_bytes())
                        .and_then(|()| stdin.flush());
                    typed = true;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Waits for the child; `None` when the timeout passed first.
fn wait(child: &mut Child, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
    let Some(timeout) = timeout else {
        return Ok(Some(child.wait().context("waiting for QEMU")?));
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Ends QEMU: SIGTERM first so it restores the terminal, SIGKILL if it lingers.
fn stop(child: &mut Child) -> Result<()> {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill only sends a signal; `pid` is our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if wait(child, Some(Duration::from_secs(3)))?.is_some() {
            return Ok(());
        }
    }
    child.kill().context("killing QEMU")?;
    child.wait().context("waiting for QEMU")?;
    Ok(())
}

fn ending_of(status: ExitStatus) -> Ending {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Exited(code),
        (None, Some(signal)) => Ending::Signalled(signal),
        (None, None) => Ending::Exited(-1),
    }
}

#[cfg(test)]
mod boot_failure_tests {
    use super::*;

    #[test]
    fn an_early_boot_failure_is_not_success() {
        let console = "\nveil: cannot boot: bad DTB at 0x8200000: corrupt\n";
        assert_eq!(
            boot_failure_status(Ending::Exited(0), console),
            Ending::Exited(2)
        );
        assert_eq!(
            boot_failure_status(Ending::Exited(0), "tiny: all checks passed\n"),
            Ending::Exited(0)
        );
        assert_eq!(
            boot_failure_status(Ending::Exited(1), console),
            Ending::Exited(1)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::GIB;

    #[test]
    fn parses_qemu_versions() {
        let debian = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
                      Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n";
        assert_eq!(
            parse_version(debian),
            Some(Version {
                major: 10,
                minor: 0,
                patch: 2
            })
        );
        let bookworm = "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)";
        assert_eq!(
            parse_version(bookworm),
            Some(Version {
                major: 7,
                minor: 2,
                patch: 15
            })
        );
        let rc = "QEMU emulator version 9.1.0-rc2";
        assert_eq!(
            parse_version(rc),
            Some(Version {
                major: 9,
                minor: 1,
                patch: 0
            })
        );
        assert_eq!(
            parse_version("QEMU emulator version 9"),
            Some(Version {
                major: 9,
                minor: 0,
                patch: 0
            })
        );
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("command not found"), None);
    }

    #[test]
    fn versions_order() {
        let v = |major, minor, patch| Version {
            major,
            minor,
            patch,
        };
        assert!(v(7, 2, 15) < MIN_VERSION);
        assert!(v(8, 99, 99) < MIN_VERSION);
        assert!(v(9, 0, 0) >= MIN_VERSION);
        assert!(v(10, 0, 2) > v(9, 2, 4));
        assert_eq!(v(10, 0, 2).to_string(), "10.0.2");
    }

    #[test]
    fn machine_memory_rules() {
        // Small guests keep the board's default.
        assert_eq!(machine_memory(GIB, 128 * MIB), GIB);
        assert_eq!(machine_memory(GIB, 512 * MIB), GIB);
        // Big guests get their RAM plus 512 MiB, rounded up to 256 MiB.
        assert_eq!(machine_memory(GIB, 1024 * MIB), 1536 * MIB);
        assert_eq!(machine_memory(GIB, 1026 * MIB), 1792 * MIB);
        assert_eq!(machine_memory(GIB, 4 * GIB), 4 * GIB + 512 * MIB);
        // An odd board default is rounded too.
        assert_eq!(machine_memory(1000 * MIB, 2 * MIB), GIB);
    }

    fn board(name: &str) -> Board {
        let text = match name {
            "qemu-virt" => include_str!("../../boards/qemu-virt.toml"),
            _ => include_str!("../../boards/rpi4.toml"),
        };
        Board::parse(name, text).unwrap()
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn command_line_for_qemu_virt() {
        let board = board("qemu-virt");
        let invocation = Invocation {
            board: &board,
            gic: 2,
            smp: 4,
            memory: 1536 * MIB,
            kernel: "target/qemu-virt/debug/veil.bin".into(),
            package: "target/qemu-virt/vms.pkg".into(),
            dtb: None,
            icount: false,
            gdb: false,
        };
        let expected = "-M virt,virtualization=on,gic-version=2 -cpu max -smp 4 -m 1536M -nographic \
                        -no-reboot -kernel target/qemu-virt/debug/veil.bin -initrd target/qemu-virt/vms.pkg \
                        -append veil.exit=semihosting -semihosting-config enable=on,target=native";
        assert_eq!(strings(invocation.args()).join(" "), expected);

        let extras = Invocation {
            icount: true,
            gdb: true,
            ..invocation
        };
        let args = strings(extras.args()).join(" ");
        assert!(
            args.ends_with("-icount shift=0,align=off,sleep=off -s -S"),
            "{args}"
        );
    }

    #[test]
    fn raspi4b_has_no_gic_or_cpu_knob() {
        let board = board("rpi4");
        let invocation = Invocation {
            board: &board,
            gic: 2,
            smp: 4,
            memory: 2 * GIB,
            kernel: "veil.bin".into(),
            package: "vms.pkg".into(),
            dtb: Some("bcm2711-rpi-4-b.dtb".into()),
            icount: false,
            gdb: false,
        };
        let args = strings(invocation.args());
        assert_eq!(&args[..4], ["-M", "raspi4b", "-smp", "4"]);
        assert!(args.contains(&"2G".to_string()));
        let joined = args.join(" ");
        assert!(
            joined.contains("-initrd vms.pkg -dtb bcm2711-rpi-4-b.dtb -append"),
            "{joined}"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Ending::Exited(0).exit_code(), 0);
        assert_eq!(Ending::Exited(2).exit_code(), 2);
        assert_eq!(Ending::Signalled(9).exit_code(), 137);
        assert_eq!(
            Ending::TimedOut(Duration::from_secs(5)).exit_code(),
            TIMEOUT_EXIT
        );
        assert_eq!(
            Ending::TimedOut(Duration::from_secs(5)).to_string(),
            "timeout after 5 s"
        );
    }

    #[test]
    fn runs_captures_and_times_out() {
        let mut echo = Command::new("sh");
        echo.args(["-c", "echo out; echo err >&2; exit 3"]);
        let outcome = run(echo, Console::Capture, Some(Duration::from_secs(10))).unwrap();
        assert_eq!(outcome.ending, Ending::Exited(3));
        assert!(outcome.console.contains("out\n") && outcome.console.contains("err\n"));

        let mut echo_input = Command::new("sh");
        echo_input.args(["-c", "echo 'ready?'; read line; echo \"got <$line>\""]);
        let input = Input {
            text: "typed\n".into(),
            after: vec!["ready?".into()],
        };
        let outcome = run_with_input(
            echo_input,
            Console::Capture,
            Some(Duration::from_secs(10)),
            Some(&input),
        )
        .unwrap();
        assert_eq!(outcome.ending, Ending::Exited(0));
        assert!(
            outcome.console.contains("got <typed>"),
            "{}",
            outcome.console
        );
        assert_eq!(
            input.to_string(),
            "\"typed\\n\" once the console shows \"ready?\""
        );

        // Several markers: typed only once both have appeared, whatever their order.
        let mut two_markers = Command::new("sh");
        two_markers.args([
            "-c",
            "echo second; sleep 0.3; echo first; read line; echo \"got <$line>\"",
        ]);
        let input = Input {
            text: "both\n".into(),
            after: vec!["first".into(), "second".into()],
        };
        let outcome = run_with_input(
            two_markers,
            Console::Capture,
            Some(Duration::from_secs(10)),
            Some(&input),
        )
        .unwrap();
        assert!(
            outcome.console.contains("got <both>"),
            "{}",
            outcome.console
        );
        assert_eq!(
            input.to_string(),
            "\"both\\n\" once the console has shown each of [\"first\", \"second\"]"
        );

        let mut sleeper = Command::new("sh");
        sleeper.args(["-c", "echo started; exec sleep 30"]);
        let outcome = run(sleeper, Console::Capture, Some(Duration::from_millis(300))).unwrap();
        assert_eq!(outcome.ending, Ending::TimedOut(Duration::from_millis(300)));
        assert!(outcome.console.contains("started"));
        assert!(
            outcome.elapsed < Duration::from_secs(10),
            "SIGTERM should end it quickly"
        );
    }
}
