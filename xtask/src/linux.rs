//! `cargo xtask linux`: Debian's arm64 Linux as a guest, from packages to a shell prompt.
//!
//! Three steps, each cached under `target/linux/`:
//!
//! 1. **Fetch** the newest `linux-image-6.1.0-N-arm64-unsigned` and `busybox-static` of Debian
//!    bookworm for arm64 with a private APT (`target/linux/apt/apt.conf`: its own architecture,
//!    sources, lists, cache and an empty dpkg status), so the host's dpkg architectures and
//!    package lists stay as they are and no root is needed. The mirror and its key are read from
//!    the host's own Debian entry. The host's `apt.conf.d` still applies (proxies, the archive's
//!    quirks). A `.deb` whose size and SHA-256 match the package lists is not fetched again;
//!    the lists are fetched once and refreshed only when a download fails.
//! 2. **Extract** `boot/vmlinuz-*` (already a raw arm64 Image) to `target/linux/Image` and
//!    `bin/busybox` to `target/linux/busybox`, with `dpkg-deb --fsys-tarfile | tar -x`.
//! 3. **Pack** `target/linux/initramfs.cpio.gz`: busybox, the links a shell needs, `/dev/console`
//!    and `/dev/null` nodes, and [`INIT`], whose first line on the console is [`READY`]. With
//!    `veil.test=1` on the kernel command line it runs a fixed script, prints [`TEST_DONE`] and
//!    powers off; otherwise it starts a shell and powers off when the shell exits.
//!
//! Then it boots them: under Veil through the same path as `cargo xtask run --guest ...
//! --initrd ...`, or with `--bare` straight on QEMU (no hypervisor), which checks the markers
//! and times the boot: the "bare" column of a Veil-versus-bare comparison.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::value_parser;

use crate::cpio;
use crate::launch::{Guest, Launch, Launcher, Notes};
use crate::qemu::{self, Console, Ending};
use crate::size;
use crate::workspace::{Profile, Workspace, capture, describe};

/// The Debian release the guest comes from.
pub const SUITE: &str = "bookworm";
/// The kernel package is `linux-image-6.1.0-<N>-arm64-unsigned`; the newest N wins. The
/// generic flavour, not `-cloud` (fewer drivers, boots ~1 s faster on TCG, but made for VMs
/// with virtio only) nor `-rt`.
const KERNEL_PREFIX: &str = "linux-image-6.1.0-";
const KERNEL_SUFFIX: &str = "-arm64-unsigned";
/// A statically linked busybox: the whole user space of the initramfs.
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Where bookworm's busybox-static keeps it.
const BUSYBOX_MEMBER: &str = "./bin/busybox";
/// The keyring of Debian's archive, when the host's entry names none.
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The first line `/init` prints, once proc, sys and dev are mounted.
pub const READY: &str = "veil-initramfs: ready";
/// The last line of the test script.
pub const TEST_DONE: &str = "veil-test: done";
/// On the kernel command line, makes `/init` run the test script and power off.
pub const TEST_ARG: &str = "veil.test=1";
/// The kernel command line of `--bare` (a check, so it runs the test script).
pub const BARE_CMDLINE: &str = "console=ttyAMA0 veil.test=1";
/// The kernel command line under Veil (an interactive shell).
pub const VEIL_CMDLINE: &str = "console=ttyAMA0 earlycon";
/// How long a run with `veil.test=1` may take before it counts as hung.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// The arm64 Image header's magic, at offset 0x38 (Documentation/arch/arm64/booting.rst).
const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
const IMAGE_MAGIC_OFFSET: usize = 0x38;

/// `/init` of the initramfs: busybox's ash.
pub const INIT: &str = r#"#!/bin/sh
# /init of the initramfs that `cargo xtask linux` writes: Debian's busybox-static is the whole
# user space. Prints `veil-initramfs: ready` once the basics are mounted. With veil.test=1 on the
# kernel command line it runs a fixed script and powers off; with veil.test=reboot it reboots once
# (see below) and powers off; else it starts a shell on the console.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=vt100
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
/bin/busybox --install -s
hostname veil-guest
echo "veil-initramfs: ready (uptime $(cut -d' ' -f1 /proc/uptime) s, $(nproc) CPUs, Linux $(uname -r))"

if grep -qw veil.test=1 /proc/cmdline; then
    echo "veil-test: begin"
    cat /proc/cpuinfo | head
    cat /proc/interrupts
    date
    time sh -c 'i=0; while [ $i -lt 50000 ]; do i=$((i + 1)); done'
    uname -a
    echo "veil-test: cpus=$(nproc)"
    echo "veil-test: done"
    poweroff -f
fi

# A warm reset keeps the RTC, as a real machine's does: the first boot sets it to 2001 and
# reboots; the boot that finds 2001 there powers off.
if grep -qw veil.test=reboot /proc/cmdline; then
    hwclock -s
    if [ "$(date +%Y)" = 2001 ]; then
        echo "veil-test: booted again after the reboot; the RTC kept its time"
        poweroff -f
    fi
    date -s '2001-01-01 00:00:00' >/dev/null && hwclock -w
    echo "veil-test: rebooting"
    reboot -f
fi

echo "veil-initramfs: busybox shell; 'exit' or Ctrl-D powers off"
setsid cttyhack sh -l
echo "veil-initramfs: shell exited, powering off"
poweroff -f
"#;

/// Busybox applets linked in `/bin` of the archive itself; `/init` adds the rest with
/// `busybox --install -s` once /proc is mounted.
#[rustfmt::skip]
const APPLETS: &[&str] = &[
    "sh", "ash", "mount", "umount", "cat", "echo", "uname", "date", "poweroff", "reboot", "halt",
    "head", "tail", "grep", "mkdir", "ls", "ps", "time", "setsid", "cttyhack", "sleep", "dmesg",
    "nproc", "cut", "hostname", "free", "uptime", "top", "vi", "ln", "rm", "cp", "mv", "true",
    "false", "test", "[",
];

/// `cargo xtask linux` options.
#[derive(clap::Args, Debug)]
pub struct LinuxArgs {
    /// GIC version of the machine (and of the VM).
    #[arg(long, value_name = "2|3", default_value_t = 3, value_parser = value_parser!(u32).range(2..=3))]
    pub gic: u32,
    /// CPUs of the machine, and vCPUs of the VM.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = value_parser!(u32).range(1..=8))]
    pub smp: u32,
    /// Guest RAM with a K, M or G suffix; a multiple of 2 MiB.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = size::clap_guest_memory)]
    pub mem: u64,
    /// The kernel command line [default: "console=ttyAMA0 earlycon", an interactive shell; with
    /// --bare "console=ttyAMA0 veil.test=1"]. `veil.test=1` runs a fixed script and powers off.
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Fetch and prepare target/linux/Image and target/linux/initramfs.cpio.gz, boot nothing.
    #[arg(long)]
    pub fetch_only: bool,
    /// Boot on bare QEMU, without Veil: checks the console markers and times the boot.
    #[arg(long)]
    pub bare: bool,
    /// Stop QEMU after this many seconds; 0 = never [default: 180 with veil.test=1, else never].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// `cargo xtask linux`: prepares the artifacts, then boots them as the options say.
pub fn main(ws: &Workspace, args: &LinuxArgs) -> Result<u8> {
    let artifacts = prepare(ws)?;
    let veil_cmdline = args.cmdline.as_deref().unwrap_or(VEIL_CMDLINE);
    let launch = Launch {
        board: "qemu-virt".into(),
        profile: Profile::Debug,
        gic: args.gic,
        smp: args.smp,
        vcpus: None,
        vms: 1,
        passthrough_mmio: Vec::new(),
        passthrough_spis: Vec::new(),
        memory: args.mem,
        guest: Guest::File(artifacts.image.clone()),
        initrd: Some(artifacts.initramfs.clone()),
        cmdline: Some(veil_cmdline.to_string()),
        timeout: args.timeout(veil_cmdline),
        icount: false,
        gdb: false,
    };
    let bare = Bare {
        gic: args.gic,
        smp: args.smp,
        memory: args.mem,
        cmdline: args.cmdline.as_deref().unwrap_or(BARE_CMDLINE).to_string(),
    };
    if args.fetch_only {
        println!("Image      {}", ws.show(&artifacts.image));
        println!("initramfs  {}", ws.show(&artifacts.initramfs));
        println!("boot under Veil:     {}", launch.run_command(ws));
        println!(
            "check on bare QEMU:  {}",
            describe(&bare.command(ws, &artifacts))
        );
        return Ok(0);
    }
    if args.bare {
        qemu::ensure_installed(ws)?;
        let test = has_test_arg(&bare.cmdline);
        let run = bare.boot(ws, &artifacts, Console::Stream, args.timeout(&bare.cmdline))?;
        return Ok(report(&run, &bare.checks(test), &bare.title()));
    }
    on_veil(ws, &launch, has_test_arg(veil_cmdline))
}

impl LinuxArgs {
    /// `--timeout`, else a limit only for the test script: a shell may run for hours.
    fn timeout(&self, cmdline: &str) -> Option<Duration> {
        match self.timeout {
            Some(0) => None,
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None if has_test_arg(cmdline) => Some(TEST_TIMEOUT),
            None => None,
        }
    }
}

/// The files a Linux guest boots from.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The raw arm64 Image.
    pub image: PathBuf,
    /// The gzipped newc initramfs.
    pub initramfs: PathBuf,
    /// The kernel's package and version, e.g. `linux-image-6.1.0-50-arm64-unsigned 6.1.176-1`.
    pub kernel_package: String,
}

/// `target/linux/`.
pub fn linux_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("linux")
}

/// Fetches what is missing and writes `target/linux/Image` and `initramfs.cpio.gz`.
pub fn prepare(ws: &Workspace) -> Result<Artifacts> {
    let dir = linux_dir(ws);
    check_tools()?;
    let mirror = DebianMirror::from_host()?;
    let apt = Apt::configure(&dir.join("apt"), &mirror)?;
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;

    let mut refreshed = false;
    if apt.needs_update() {
        apt.update(ws)?;
        refreshed = true;
    }
    let (kernel, busybox) = loop {
        let fetched = apt.newest_kernel().and_then(|kernel| {
            let kernel = apt.fetch(ws, &kernel, &debs)?;
            let busybox = apt.fetch(ws, BUSYBOX_PACKAGE, &debs)?;
            Ok((kernel, busybox))
        });
        match fetched {
            Ok(pair) => break pair,
            Err(error) if !refreshed => {
                eprintln!("xtask: {error:#}\nxtask: refreshing the package lists and trying again");
                apt.update(ws)?;
                refreshed = true;
            }
            Err(error) => return Err(error),
        }
    };

    remove_other_debs(&debs, &[&kernel.path, &busybox.path]);

    let image = dir.join("Image");
    extract_image(ws, &kernel, &image, &dir.join("extract"))?;
    let busybox_path = dir.join("busybox");
    if !is_from(&busybox_path, &busybox.path) {
        let bytes = extract_member(&busybox.path, BUSYBOX_MEMBER, &dir.join("extract"))?;
        write_from(&busybox_path, &bytes, &busybox.path)?;
    }
    let busybox_bytes = std::fs::read(&busybox_path)
        .with_context(|| format!("cannot read {}", busybox_path.display()))?;
    let initramfs = dir.join("initramfs.cpio.gz");
    let packed = gzip(&initramfs_cpio(&busybox_bytes)?)?;
    write_atomically(&initramfs, &packed)?;
    eprintln!(
        "xtask: initramfs: {} ({}; busybox {})",
        ws.show(&initramfs),
        size::human(packed.len() as u64),
        busybox.version
    );
    Ok(Artifacts {
        image,
        initramfs,
        kernel_package: format!("{} {}", kernel.package, kernel.version),
    })
}

/// Says which of the programs this needs are missing, all at once.
fn check_tools() -> Result<()> {
    let needed = [
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
        ("tar", "tar"),
        ("sha256sum", "coreutils"),
    ];
    let missing: Vec<_> = needed
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let programs: Vec<&str> = missing.iter().map(|(program, _)| *program).collect();
    let mut packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    packages.dedup();
    bail!(
        "`cargo xtask linux` fetches Debian packages with APT and needs {} on PATH, which {} \
         not there. On Debian or Ubuntu install them, as root, with: apt-get install {}",
        programs.join(", "),
        if programs.len() == 1 { "is" } else { "are" },
        packages.join(" ")
    )
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The host's Debian archive: where its packages come from and the key that signs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebianMirror {
    /// The archive's URI, e.g. `http://deb.debian.org/debian`.
    pub uri: String,
    pub keyring: Keyring,
    /// Where it was found, for messages.
    pub origin: String,
}

/// How the archive's signing key is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keyring {
    /// A keyring file (`Signed-By: /usr/share/keyrings/...`).
    File(PathBuf),
    /// An ASCII-armoured key block written into the sources entry itself.
    Inline(String),
}

const DEB822_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const ONE_LINE_SOURCES: &str = "/etc/apt/sources.list";

impl DebianMirror {
    /// Reads the host's Debian entry: `debian.sources` (deb822), else `sources.list`.
    pub fn from_host() -> Result<Self> {
        let mut looked = Vec::new();
        for (path, parse) in [
            (
                DEB822_SOURCES,
                parse_deb822_sources as fn(&str) -> Option<(String, Option<Keyring>)>,
            ),
            (ONE_LINE_SOURCES, parse_one_line_sources),
        ] {
            let Ok(text) = std::fs::read_to_string(path) else {
                looked.push(format!("{path} (not there)"));
                continue;
            };
            let Some((uri, keyring)) = parse(&text) else {
                looked.push(format!("{path} (no Debian release entry)"));
                continue;
            };
            let keyring = match keyring {
                Some(keyring) => keyring,
                None => Keyring::File(DEFAULT_KEYRING.into()),
            };
            if let Keyring::File(file) = &keyring
                && std::fs::metadata(file).is_err()
            {
                bail!(
                    "the Debian archive key {} (named by {path}) cannot be read: install \
                     it with `sudo apt-get install debian-archive-keyring`",
                    file.display()
                );
            }
            return Ok(DebianMirror {
                uri,
                keyring,
                origin: path.to_string(),
            });
        }
        bail!(
            "cannot find a Debian archive in the host's APT sources: looked in {}. `cargo xtask \
             linux` takes Debian's packages from the mirror this Debian host already uses",
            looked.join(", ")
        )
    }
}

/// The first enabled deb822 stanza of type `deb` for a Debian release (a suite without a `-`,
/// like `bookworm`, rather than `bookworm-security`): its first URI and its `Signed-By`.
pub fn parse_deb822_sources(text: &str) -> Option<(String, Option<Keyring>)> {
    for stanza in deb822_stanzas(text) {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        let types = field("Types").unwrap_or_default();
        let suites = field("Suites").unwrap_or_default();
        let enabled = field("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if !enabled
            || !types.split_whitespace().any(|t| t == "deb")
            || !suites.split_whitespace().any(is_release_suite)
        {
            continue;
        }
        let Some(uri) = field("URIs").and_then(|u| u.split_whitespace().next()) else {
            continue;
        };
        let keyring = field("Signed-By").and_then(|value| {
            let first = value.lines().next().unwrap_or_default().trim();
            if !first.is_empty() {
                return Some(Keyring::File(first.into()));
            }
            // An inline key: continuation lines, with ` .` standing for an empty line.
            let block: String = value
                .lines()
                .skip(1)
                .map(|line| match line.trim() {
                    "." => "\n".to_string(),
                    line => format!("{line}\n"),
                })
                .collect();
            (!block.trim().is_empty()).then_some(Keyring::Inline(block))
        });
        return Some((uri.trim_end_matches('/').to_string(), keyring));
    }
    None
}

/// The first `deb [options] URI SUITE ...` line for a Debian release, and its `signed-by=`.
pub fn parse_one_line_sources(text: &str) -> Option<(String, Option<Keyring>)> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(bracketed) => bracketed.split_once(']')?,
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        if !is_release_suite(suite) {
            continue;
        }
        let keyring = options
            .split_whitespace()
            .find_map(|option| option.strip_prefix("signed-by="))
            .map(|path| Keyring::File(path.into()));
        return Some((uri.trim_end_matches('/').to_string(), keyring));
    }
    None
}

/// `bookworm`, `trixie`, `stable`: a release itself, not `-updates`, `-security`, ...
fn is_release_suite(suite: &str) -> bool {
    !suite.is_empty() && !suite.contains('-') && !suite.contains('/')
}

/// deb822 stanzas as (field, value) lists; a value's continuation lines are kept after `\n`.
fn deb822_stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stanzas: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !stanzas.last().is_some_and(Vec::is_empty) {
                stanzas.push(Vec::new());
            }
            continue;
        }
        let stanza = stanzas.last_mut().expect("never empty");
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = stanza.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((key, value)) = line.split_once(':') {
            stanza.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    stanzas.retain(|stanza| !stanza.is_empty());
    stanzas
}

/// A private APT for Debian's arm64 packages, living in `target/linux/apt/`.
struct Apt {
    dir: PathBuf,
    config: PathBuf,
}

/// One package as the package lists describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub size: u64,
    pub sha256: String,
}

impl Record {
    /// The file name `apt-get download` gives it (an epoch's `:` is written `%3a`).
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.package,
            self.version.replace(':', "%3a"),
            self.architecture
        )
    }
}

/// A downloaded, verified package.
struct Deb {
    package: String,
    version: String,
    path: PathBuf,
}

impl Apt {
    /// Writes apt.conf and sources.list (the lists are kept when the sources did not change).
    fn configure(dir: &Path, mirror: &DebianMirror) -> Result<Self> {
        for sub in [
            "state/lists/partial",
            "cache/archives/partial",
            "sources.list.d",
            "trusted.gpg.d",
            "preferences.d",
        ] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        let keyring = match &mirror.keyring {
            Keyring::File(path) => path.clone(),
            Keyring::Inline(block) => {
                let path = dir.join("debian-archive-keyring.asc");
                write_if_changed(&path, block.as_bytes())?;
                path
            }
        };
        let status = dir.join("state/status");
        if !status.exists() {
            // An empty dpkg status: nothing is installed for this APT, nothing is upgraded.
            write_atomically(&status, b"")?;
        }
        let sources = format!(
            "# Written by `cargo xtask linux` from {}.\n{}\n",
            mirror.origin,
            sources_line(&mirror.uri, &keyring)
        );
        let sources_path = dir.join("sources.list");
        if write_if_changed(&sources_path, sources.as_bytes())? {
            // Lists of another mirror: fetch them anew.
            let lists = dir.join("state/lists");
            for entry in std::fs::read_dir(&lists).into_iter().flatten().flatten() {
                if entry.path().is_file() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let config = dir.join("apt.conf");
        write_if_changed(&config, apt_conf(dir, &keyring, root)?.as_bytes())?;
        Ok(Apt {
            dir: dir.to_path_buf(),
            config,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("APT_CONFIG", &self.config).stdin(Stdio::null());
        command
    }

    /// True when no package list has been fetched yet.
    fn needs_update(&self) -> bool {
        let lists = self.dir.join("state/lists");
        !std::fs::read_dir(lists)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().contains("_Packages"))
    }

    fn update(&self, ws: &Workspace) -> Result<()> {
        eprintln!(
            "xtask: fetching Debian {SUITE} arm64 package lists into {} ...",
            ws.show(&self.dir)
        );
        let start = Instant::now();
        capture(
            self.command("apt-get")
                .args(["-qq", "update"])
                // Only the package lists: not appstream's metadata, which the host may ask for.
                .args([
                    "-o",
                    "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
                ]),
        )
        .context("fetching the package lists failed (is the network up?)")?;
        eprintln!(
            "xtask: package lists fetched in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The newest `linux-image-6.1.0-N-arm64-unsigned` in the lists.
    fn newest_kernel(&self) -> Result<String> {
        let names = capture(self.command("apt-cache").args(["pkgnames", KERNEL_PREFIX]))?;
        newest_kernel(names.lines())
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "Debian {SUITE}'s package lists have no {KERNEL_PREFIX}N{KERNEL_SUFFIX} \
                     (remove {} to fetch them anew)",
                    self.dir.display()
                )
            })
    }

    fn record(&self, package: &str) -> Result<Record> {
        let text = capture(
            self.command("apt-cache")
                .args(["show", "--no-all-versions", package]),
        )?;
        parse_record(&text).with_context(|| format!("`apt-cache show {package}` is incomplete"))
    }

    /// The package's `.deb` in `debs`, downloaded unless a verified copy is there.
    fn fetch(&self, ws: &Workspace, package: &str, debs: &Path) -> Result<Deb> {
        let record = self.record(package)?;
        let path = debs.join(record.file_name());
        let deb = Deb {
            package: record.package.clone(),
            version: record.version.clone(),
            path: path.clone(),
        };
        if verify(&path, &record).is_ok() {
            return Ok(deb);
        }
        eprintln!(
            "xtask: downloading {} {} ({}) ...",
            record.package,
            record.version,
            size::human(record.size)
        );
        let start = Instant::now();
        capture(
            self.command("apt-get")
                .args(["-qq", "download"])
                .arg(format!("{}={}", record.package, record.version))
                .current_dir(debs),
        )
        .with_context(|| format!("downloading {} failed", record.package))?;
        verify(&path, &record)?;
        eprintln!(
            "xtask: {} in {:.1} s",
            ws.show(&path),
            start.elapsed().as_secs_f64()
        );
        Ok(deb)
    }
}

/// `deb [arch=arm64 signed-by=KEYRING] URI bookworm main`.
fn sources_line(uri: &str, keyring: &Path) -> String {
    format!(
        "deb [arch=arm64 signed-by={}] {uri} {SUITE} main",
        keyring.display()
    )
}

/// The private apt.conf. As root, APT would hand downloads to the `_apt` user, who may not
/// enter target/: keep them as root, like a plain `apt-get download` in a root-owned folder.
fn apt_conf(dir: &Path, keyring: &Path, root: bool) -> Result<String> {
    let quoted = |path: &Path| -> Result<String> {
        let text = path.display().to_string();
        if text.contains('"') {
            bail!("APT cannot use a path with a `\"` in it: {text}");
        }
        Ok(format!("\"{text}\""))
    };
    let mut conf = format!(
        "// Written by `cargo xtask linux`: a private APT for Debian's arm64 packages, so that the\n\
         // host's dpkg architectures, package lists and caches stay as they are.\n\
         APT::Architecture \"arm64\";\n\
         APT::Architectures {{ \"arm64\"; }};\n\
         Dir::State {};\n\
         Dir::State::status {};\n\
         Dir::Cache {};\n\
         Dir::Etc::SourceList {};\n\
         Dir::Etc::SourceParts {};\n\
         Dir::Etc::Trusted {};\n\
         Dir::Etc::TrustedParts {};\n\
         Dir::Etc::Preferences {};\n\
         Dir::Etc::PreferencesParts {};\n\
         Acquire::Languages \"none\";\n",
        quoted(&dir.join("state"))?,
        quoted(&dir.join("state/status"))?,
        quoted(&dir.join("cache"))?,
        quoted(&dir.join("sources.list"))?,
        quoted(&dir.join("sources.list.d"))?,
        quoted(keyring)?,
        quoted(&dir.join("trusted.gpg.d"))?,
        quoted(&dir.join("preferences"))?,
        quoted(&dir.join("preferences.d"))?,
    );
    if root {
        conf.push_str("APT::Sandbox::User \"root\";\n");
    }
    Ok(conf)
}

/// The package with the highest N among `linux-image-6.1.0-N-arm64-unsigned`.
pub fn newest_kernel<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .map(str::trim)
        .filter_map(|name| {
            let abi = name
                .strip_prefix(KERNEL_PREFIX)?
                .strip_suffix(KERNEL_SUFFIX)?;
            let abi: u32 = abi
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| abi.parse().ok())??;
            Some((abi, name))
        })
        .max_by_key(|(abi, _)| *abi)
        .map(|(_, name)| name)
}

/// The first stanza of `apt-cache show`.
pub fn parse_record(text: &str) -> Option<Record> {
    let stanza = deb822_stanzas(text).into_iter().next()?;
    let field = |name: &str| {
        stanza
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    Some(Record {
        package: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
        size: field("Size")?.parse().ok()?,
        sha256: field("SHA256")?.to_ascii_lowercase(),
    })
}

/// Removes the packages an older run fetched (a kernel is ~60 MB).
fn remove_other_debs(debs: &Path, keep: &[&Path]) {
    for entry in std::fs::read_dir(debs).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "deb") && !keep.contains(&path.as_path()) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Checks a downloaded file's size and SHA-256 against the package lists.
fn verify(path: &Path, record: &Record) -> Result<()> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("{} is not there", path.display()))?;
    if metadata.len() != record.size {
        bail!(
            "{} has {} bytes, the package lists say {}",
            path.display(),
            metadata.len(),
            record.size
        );
    }
    let sum = capture(Command::new("sha256sum").arg(path))?;
    let sum = sum.split_whitespace().next().unwrap_or_default();
    if sum != record.sha256 {
        bail!(
            "{} has SHA-256 {sum}, the package lists say {}",
            path.display(),
            record.sha256
        );
    }
    Ok(())
}

/// Writes the kernel's `boot/vmlinuz-*` to `image`, unless it came from this very package.
fn extract_image(ws: &Workspace, kernel: &Deb, image: &Path, scratch: &Path) -> Result<()> {
    if !is_from(image, &kernel.path) {
        let bytes = extract_member(&kernel.path, "./boot/vmlinuz-*", scratch)?;
        check_image(&bytes).with_context(|| {
            format!("boot/vmlinuz-* of {} is not usable", kernel.path.display())
        })?;
        write_from(image, &bytes, &kernel.path)?;
    }
    let bytes = std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
    let header =
        check_image(&bytes).with_context(|| format!("{} is not usable", image.display()))?;
    eprintln!(
        "xtask: kernel: {} ({} {}; arm64 Image, {}, text_offset {:#x}, image_size {})",
        ws.show(image),
        kernel.package,
        kernel.version,
        size::human(bytes.len() as u64),
        header.text_offset,
        size::human(header.image_size)
    );
    Ok(())
}

/// The fields of an arm64 Image header that matter for loading it.
#[derive(Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub text_offset: u64,
    pub image_size: u64,
}

/// Checks for a raw arm64 Image: the `ARM\x64` magic at 0x38.
pub fn check_image(bytes: &[u8]) -> Result<ImageHeader> {
    let magic = bytes.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4);
    if magic != Some(IMAGE_MAGIC.as_slice()) {
        let hint = match bytes.get(..2) {
            Some([0x1f, 0x8b]) => " (it is gzip-compressed: Debian's vmlinuz used to be raw)",
            Some([b'M', b'Z']) => " (an EFI stub without the arm64 header?)",
            _ => "",
        };
        bail!("no arm64 Image magic \"ARM\\x64\" at offset {IMAGE_MAGIC_OFFSET:#x}{hint}");
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    Ok(ImageHeader {
        text_offset: word(0x08),
        image_size: word(0x10),
    })
}

/// One file of a package's data, by tar pattern: `dpkg-deb --fsys-tarfile | tar -x`.
fn extract_member(deb: &Path, pattern: &str, scratch: &Path) -> Result<Vec<u8>> {
    if scratch.exists() {
        std::fs::remove_dir_all(scratch)
            .with_context(|| format!("cannot clear {}", scratch.display()))?;
    }
    std::fs::create_dir_all(scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let tarball = dpkg.stdout.take().expect("piped");
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(scratch)
        .arg(pattern)
        .stdin(tarball)
        .output()
        .context("cannot run tar")?;
    let dpkg = dpkg.wait_with_output().context("waiting for dpkg-deb")?;
    if !dpkg.status.success() {
        bail!(
            "`dpkg-deb --fsys-tarfile {}` failed: {}",
            deb.display(),
            String::from_utf8_lossy(&dpkg.stderr).trim()
        );
    }
    if !tar.status.success() {
        bail!(
            "{pattern} is not in {}: {}",
            deb.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        );
    }
    let found = find_files(scratch)?;
    let result = match found.as_slice() {
        [one] => std::fs::read(one).with_context(|| format!("cannot read {}", one.display())),
        _ => Err(anyhow::anyhow!(
            "{pattern} matched {} files in {}, expected one",
            found.len(),
            deb.display()
        )),
    };
    let _ = std::fs::remove_dir_all(scratch);
    result
}

fn find_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(find_files(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// `<output>.from` names the package an extracted file came from.
fn stamp(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".from");
    output.with_file_name(name)
}

fn is_from(output: &Path, deb: &Path) -> bool {
    let want = deb.file_name().unwrap_or_default().to_string_lossy();
    output.is_file() && std::fs::read_to_string(stamp(output)).is_ok_and(|have| have.trim() == want)
}

fn write_from(output: &Path, bytes: &[u8], deb: &Path) -> Result<()> {
    write_atomically(output, bytes)?;
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    write_atomically(&stamp(output), format!("{name}\n").as_bytes())
}

/// The initramfs, uncompressed: busybox, its links, the device nodes the kernel needs before
/// devtmpfs is mounted, and `/init`.
pub fn initramfs_cpio(busybox: &[u8]) -> Result<Vec<u8>> {
    let mut archive = cpio::Archive::new();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "root", "etc",
    ] {
        archive.dir(dir, 0o755)?;
    }
    archive.dir("tmp", 0o1777)?;
    archive.file("bin/busybox", 0o755, busybox)?;
    for applet in APPLETS {
        archive.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    // The kernel opens /dev/console for /init before anything is mounted.
    archive.char_device("dev/console", 0o600, 5, 1)?;
    archive.char_device("dev/null", 0o666, 1, 3)?;
    archive.file(
        "etc/profile",
        0o644,
        b"PS1='veil-guest:\\w\\$ '\nexport PS1\n",
    )?;
    archive.file("init", 0o755, INIT.as_bytes())?;
    Ok(archive.finish())
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_os_string();
    temporary.push(".part");
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", Path::new(&temporary).display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `bytes` unless the file already holds them; says whether it wrote.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|have| have == bytes) {
        return Ok(false);
    }
    write_atomically(path, bytes)?;
    Ok(true)
}

fn has_test_arg(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|word| word == TEST_ARG)
}

/// Boots the artifacts under Veil: the `cargo xtask run --guest ... --initrd ...` path.
fn on_veil(ws: &Workspace, launch: &Launch, test: bool) -> Result<u8> {
    eprintln!("xtask: the same as: {}", launch.run_command(ws));
    let mut notes = Notes::new(Console::Stream);
    let outcome = Launcher::new(ws.clone()).launch(launch, Console::Stream, &mut notes)?;
    let run = Watched {
        ending: outcome.ending,
        console: outcome.console,
        elapsed: outcome.elapsed,
        // Launcher does not time console lines; the guest's own uptime is in the READY line.
        seen: Vec::new(),
    };
    let checks = Checks {
        test,
        smp: launch.smp,
        gic: launch.gic,
        exit: 0,
    };
    Ok(report(
        &run,
        &checks,
        &format!("Veil, GICv{}, {} vCPU", launch.gic, launch.smp),
    ))
}

/// A boot straight on QEMU's `virt`, without Veil.
#[derive(Clone, Debug)]
pub struct Bare {
    pub gic: u32,
    pub smp: u32,
    pub memory: u64,
    pub cmdline: String,
}

/// `-cpu` of the bare runs (see [`Bare::args`]).
pub const BARE_CPU: &str = "max,pauth=off,sve=off,sme=off";

impl Bare {
    pub fn args(&self, image: &Path, initramfs: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = [
            "-M".to_string(),
            format!("virt,gic-version={}", self.gic),
            "-cpu".into(),
            // The CPU a Veil guest sees: Veil hides pointer authentication, SVE and SME (their
            // state is not switched). Pointer authentication alone makes a TCG boot much
            // slower, so leaving it on would flatter Veil in the comparison.
            BARE_CPU.into(),
            "-smp".into(),
            self.smp.to_string(),
            "-m".into(),
            size::format_size(self.memory),
            "-nographic".into(),
            "-no-reboot".into(),
        ]
        .map(OsString::from)
        .into();
        args.extend(["-kernel".into(), image.as_os_str().to_os_string()]);
        args.extend(["-initrd".into(), initramfs.as_os_str().to_os_string()]);
        args.extend(["-append".into(), OsString::from(&self.cmdline)]);
        args
    }

    pub fn command(&self, ws: &Workspace, artifacts: &Artifacts) -> Command {
        let mut command = Command::new(qemu::PROGRAM);
        command.args(self.args(&ws.short(&artifacts.image), &ws.short(&artifacts.initramfs)));
        command
    }

    pub fn title(&self) -> String {
        format!(
            "bare QEMU, GICv{}, {} CPU{}, {}",
            self.gic,
            self.smp,
            if self.smp == 1 { "" } else { "s" },
            size::format_size(self.memory)
        )
    }

    pub fn checks(&self, test: bool) -> Checks {
        Checks {
            test,
            smp: self.smp,
            gic: self.gic,
            exit: 0,
        }
    }

    /// Boots and waits for QEMU to end, timing the [`READY`] and [`TEST_DONE`] lines.
    pub fn boot(
        &self,
        ws: &Workspace,
        artifacts: &Artifacts,
        console: Console,
        timeout: Option<Duration>,
    ) -> Result<Watched> {
        let command = self.command(ws, artifacts);
        if console == Console::Stream {
            eprintln!("xtask: {} ({})", self.title(), artifacts.kernel_package);
            eprintln!("xtask: {}", describe(&command));
        }
        watch(command, &[READY, TEST_DONE], console, timeout)
    }
}

/// A finished QEMU run whose console was watched for marker lines.
#[derive(Debug)]
pub struct Watched {
    pub ending: Ending,
    pub console: String,
    /// From QEMU's start to its end.
    pub elapsed: Duration,
    /// Each marker seen, with the time from QEMU's start to its arrival.
    pub seen: Vec<(&'static str, Duration)>,
}

impl Watched {
    pub fn time_of(&self, marker: &str) -> Option<Duration> {
        self.seen
            .iter()
            .find(|(m, _)| *m == marker)
            .map(|(_, t)| *t)
    }
}

/// Runs QEMU like `qemu::run`, and also notes when each marker first shows on the console.
fn watch(
    command: Command,
    markers: &[&'static str],
    console: Console,
    timeout: Option<Duration>,
) -> Result<Watched> {
    let live = console == Console::Stream;
    let (mut child, start) = qemu::spawn(command, console, false)?;
    let (sender, chunks) = mpsc::channel::<(bool, Instant, Vec<u8>)>();
    let readers = [
        reader(child.stdout.take(), false, sender.clone()),
        reader(child.stderr.take(), true, sender),
    ];
    let mut transcript = Vec::new();
    let mut streams: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut seen = Vec::new();
    let mut timed_out = false;
    let mut terminated: Option<Instant> = None;
    loop {
        match chunks.recv_timeout(Duration::from_millis(50)) {
            Ok((is_stderr, at, bytes)) => {
                if live {
                    let _ = if is_stderr {
                        std::io::stderr().write_all(&bytes)
                    } else {
                        std::io::stdout()
                            .write_all(&bytes)
                            .and_then(|()| std::io::stdout().flush())
                    };
                }
                transcript.extend_from_slice(&bytes);
                // Markers are searched in each stream on its own: a chunk of the other stream
                // arriving in between must not split one.
                let stream = &mut streams[usize::from(is_stderr)];
                let searched_from = stream.len();
                stream.extend_from_slice(&bytes);
                for marker in markers {
                    if seen.iter().any(|(m, _)| m == marker) {
                        continue;
                    }
                    let from = searched_from.saturating_sub(marker.len());
                    if find(&stream[from..], marker.as_bytes()) {
                        seen.push((*marker, at.duration_since(start)));
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if let Some(limit) = timeout
            && terminated.is_none()
            && now.duration_since(start) >= limit
        {
            timed_out = true;
            terminate(&child);
            terminated = Some(now);
        }
        if terminated.is_some_and(|at| now.duration_since(at) > Duration::from_secs(3)) {
            let _ = child.kill();
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    let elapsed = start.elapsed();
    for reader in readers {
        let _ = reader.join();
    }
    Ok(Watched {
        ending: if timed_out {
            Ending::TimedOut(timeout.unwrap_or_default())
        } else {
            ending_of(status)
        },
        console: String::from_utf8_lossy(&transcript).into_owned(),
        elapsed,
        seen,
    })
}

fn reader(
    pipe: Option<impl Read + Send + 'static>,
    is_stderr: bool,
    sender: mpsc::Sender<(bool, Instant, Vec<u8>)>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buffer) {
            if sender
                .send((is_stderr, Instant::now(), buffer[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// SIGTERM, so that QEMU restores the terminal.
fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill only sends a signal; `pid` is our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

fn ending_of(status: ExitStatus) -> Ending {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Exited(code),
        (None, Some(signal)) => Ending::Signalled(signal),
        (None, None) => Ending::Exited(-1),
    }
}

/// What a boot must show.
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    /// `veil.test=1` was on the command line: the test script must finish.
    pub test: bool,
    pub smp: u32,
    pub gic: u32,
    /// QEMU's expected exit status.
    pub exit: i32,
}

impl Checks {
    /// What is wrong with a console and an ending; empty when the boot passed.
    pub fn judge(&self, console: &str, ending: Ending) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(ready) = console.find(READY) else {
            problems.push(format!("no `{READY}` line: Linux did not reach /init"));
            problems.extend(ending_problem(ending, self.exit));
            return problems;
        };
        if self.test {
            let after = &console[ready..];
            match after.find(TEST_DONE) {
                None => problems.push(format!("no `{TEST_DONE}` line after `{READY}`")),
                Some(_) => {
                    let cpus = format!("veil-test: cpus={}", self.smp);
                    if !after.contains(&cpus) {
                        problems.push(format!(
                            "no `{cpus}` line: Linux brought up another number of CPUs"
                        ));
                    }
                    let chip = if self.gic == 3 { "GICv3" } else { "GIC-0" };
                    if !after.contains(chip) {
                        problems.push(format!("/proc/interrupts names no {chip} interrupt"));
                    }
                }
            }
        }
        for bad in [
            "Kernel panic",
            "Unable to handle kernel",
            "Internal error: Oops",
        ] {
            if console.contains(bad) {
                problems.push(format!("the console shows `{bad}`"));
            }
        }
        problems.extend(ending_problem(ending, self.exit));
        problems
    }
}

fn ending_problem(ending: Ending, expected: i32) -> Option<String> {
    match ending {
        Ending::Exited(code) if code == expected => None,
        ending => Some(format!(
            "QEMU ended with {ending}, expected exit status {expected}"
        )),
    }
}

/// The guest's uptime in the [`READY`] line, in seconds as Linux printed it.
pub fn guest_uptime(console: &str) -> Option<&str> {
    let line = console.lines().find(|line| line.contains(READY))?;
    let rest = &line[line.find("uptime ")? + "uptime ".len()..];
    rest.split_whitespace().next()
}

/// Prints the verdict and timings; returns the exit status for xtask.
fn report(run: &Watched, checks: &Checks, title: &str) -> u8 {
    let problems = checks.judge(&run.console, run.ending);
    let mut timing = Vec::new();
    if let Some(ready) = run.time_of(READY) {
        timing.push(format!("`{READY}` after {:.2} s", ready.as_secs_f64()));
    }
    if let Some(uptime) = guest_uptime(&run.console) {
        timing.push(format!("guest uptime {uptime} s"));
    }
    if let Some(done) = run.time_of(TEST_DONE) {
        timing.push(format!("`{TEST_DONE}` after {:.2} s", done.as_secs_f64()));
    }
    timing.push(format!(
        "{} after {:.2} s",
        run.ending,
        run.elapsed.as_secs_f64()
    ));
    eprintln!("xtask: {title}: {}", timing.join("; "));
    if problems.is_empty() {
        eprintln!(
            "xtask: ok: Linux booted{}",
            if checks.test {
                " and ran the test script"
            } else {
                ""
            }
        );
        return 0;
    }
    for problem in &problems {
        eprintln!("xtask: FAIL: {problem}");
    }
    match run.ending {
        Ending::TimedOut(_) => u8::try_from(qemu::TIMEOUT_EXIT).unwrap_or(1),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_debian_entry_of_debian_sources() {
        let text = "Types: deb\n\
                    # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                    URIs: http://deb.debian.org/debian\n\
                    Suites: bookworm bookworm-updates\n\
                    Components: main\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
                    \n\
                    Types: deb\n\
                    URIs: http://deb.debian.org/debian-security\n\
                    Suites: bookworm-security\n\
                    Components: main\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        assert_eq!(
            parse_deb822_sources(text),
            Some((
                "http://deb.debian.org/debian".to_string(),
                Some(Keyring::File(DEFAULT_KEYRING.into()))
            ))
        );
    }

    #[test]
    fn skips_disabled_security_and_source_stanzas() {
        let text = "Types: deb-src\nURIs: http://a/debian\nSuites: trixie\n\n\
                    Types: deb\nURIs: http://b/debian\nSuites: trixie\nEnabled: no\n\n\
                    Types: deb\nURIs: http://c/debian-security\nSuites: trixie-security\n\n\
                    Types: deb deb-src\nURIs: https://mirror.example/debian/ http://d/debian\n\
                    Suites: trixie-updates trixie\n";
        assert_eq!(
            parse_deb822_sources(text),
            Some(("https://mirror.example/debian".to_string(), None))
        );
        assert_eq!(
            parse_deb822_sources("Types: deb\nSuites: noble-security\n"),
            None
        );
        assert_eq!(parse_deb822_sources(""), None);
    }

    #[test]
    fn reads_an_inline_key() {
        let text = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\
                    Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBG\n \
                    -----END PGP PUBLIC KEY BLOCK-----\n";
        let (_, keyring) = parse_deb822_sources(text).unwrap();
        assert_eq!(
            keyring,
            Some(Keyring::Inline(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBG\n-----END PGP PUBLIC KEY BLOCK-----\n"
                    .into()
            ))
        );
    }

    #[test]
    fn reads_one_line_sources() {
        let text = "# deb cdrom:[Debian]/ bookworm main\n\
                    deb http://security.debian.org/debian-security bookworm-security main\n\
                    deb [arch=amd64 signed-by=/etc/k.gpg] http://ftp.de.debian.org/debian/ bookworm main\n";
        assert_eq!(
            parse_one_line_sources(text),
            Some((
                "http://ftp.de.debian.org/debian".to_string(),
                Some(Keyring::File("/etc/k.gpg".into()))
            ))
        );
        assert_eq!(
            parse_one_line_sources("deb http://m/debian stable main contrib"),
            Some(("http://m/debian".to_string(), None))
        );
        assert_eq!(
            parse_one_line_sources("deb-src http://m/debian bookworm main"),
            None
        );
    }

    #[test]
    fn private_apt_conf() {
        let conf = apt_conf(Path::new("/r/target/linux/apt"), Path::new("/k.gpg"), false).unwrap();
        for line in [
            "APT::Architecture \"arm64\";",
            "APT::Architectures { \"arm64\"; };",
            "Dir::State \"/r/target/linux/apt/state\";",
            "Dir::State::status \"/r/target/linux/apt/state/status\";",
            "Dir::Cache \"/r/target/linux/apt/cache\";",
            "Dir::Etc::SourceList \"/r/target/linux/apt/sources.list\";",
            "Dir::Etc::SourceParts \"/r/target/linux/apt/sources.list.d\";",
            "Dir::Etc::Trusted \"/k.gpg\";",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "missing {line:?} in\n{conf}"
            );
        }
        assert!(!conf.contains("Sandbox"));
        assert!(
            apt_conf(Path::new("/r"), Path::new("/k.gpg"), true)
                .unwrap()
                .contains("APT::Sandbox::User \"root\";")
        );
        assert!(apt_conf(Path::new("/a\"b"), Path::new("/k"), false).is_err());
        assert_eq!(
            sources_line("http://deb.debian.org/debian", Path::new("/k.gpg")),
            "deb [arch=arm64 signed-by=/k.gpg] http://deb.debian.org/debian bookworm main"
        );
    }

    #[test]
    fn picks_the_newest_generic_kernel() {
        let names = "linux-image-6.1.0-47-arm64-dbg\nlinux-image-6.1.0-9-arm64-unsigned\n\
                     linux-image-6.1.0-50-cloud-arm64-unsigned\nlinux-image-6.1.0-50-rt-arm64-unsigned\n\
                     linux-image-6.1.0-47-arm64-unsigned\nlinux-image-6.1.0-50-arm64-unsigned\n\
                     linux-image-6.1.0-50-arm64\nlinux-image-6.1.0-x-arm64-unsigned\n";
        assert_eq!(
            newest_kernel(names.lines()),
            Some("linux-image-6.1.0-50-arm64-unsigned")
        );
        // Numerically, not as text: 10 > 9.
        assert_eq!(
            newest_kernel([
                "linux-image-6.1.0-9-arm64-unsigned",
                "linux-image-6.1.0-10-arm64-unsigned"
            ]),
            Some("linux-image-6.1.0-10-arm64-unsigned")
        );
        assert_eq!(newest_kernel(["linux-image-6.1.0-50-arm64-dbg"]), None);
    }

    #[test]
    fn reads_apt_cache_show() {
        let text = "Package: busybox-static\nSource: busybox (1:1.35.0-4+deb12u1)\n\
                    Version: 1:1.35.0-4+deb12u1+b1\nArchitecture: arm64\n\
                    Description: Standalone rescue shell\n with tons of builtin utilities\n\
                    Filename: pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_arm64.deb\n\
                    Size: 822236\n\
                    SHA256: 732C9135564FC71337E0E05FB4DA4D11E6C28C1834BCE3E405E575AFEF2A52F5\n\n\
                    Package: busybox-static\nVersion: 0\n";
        let record = parse_record(text).unwrap();
        assert_eq!(record.size, 822_236);
        assert_eq!(&record.sha256[..8], "732c9135");
        assert_eq!(
            record.file_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb"
        );
        assert_eq!(parse_record("Package: x\nVersion: 1\n"), None);
    }

    #[test]
    fn checks_the_image_magic() {
        let mut image = vec![0u8; 64];
        image[0x08..0x10].copy_from_slice(&0u64.to_le_bytes());
        image[0x10..0x18].copy_from_slice(&0x01f9_0000u64.to_le_bytes());
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(
            check_image(&image).unwrap(),
            ImageHeader {
                text_offset: 0,
                image_size: 0x01f9_0000
            }
        );
        let gz = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0];
        let err = format!("{:#}", check_image(&gz).unwrap_err());
        assert!(err.contains("ARM\\x64") && err.contains("gzip"), "{err}");
        assert!(check_image(b"short").is_err());
    }

    #[test]
    fn initramfs_has_what_init_needs() {
        let archive = initramfs_cpio(b"\x7fELF-busybox").unwrap();
        let text = String::from_utf8_lossy(&archive);
        for needed in [
            "bin/busybox",
            "bin/sh",
            "bin/cttyhack",
            "bin/poweroff",
            "dev/console",
            "dev/null",
            "init",
            "TRAILER!!!",
        ] {
            assert!(text.contains(&format!("{needed}\0")), "no {needed}");
        }
        assert!(text.contains(INIT));
        assert_eq!(
            archive,
            initramfs_cpio(b"\x7fELF-busybox").unwrap(),
            "reproducible"
        );
        let packed = gzip(&archive).unwrap();
        assert_eq!(&packed[..2], [0x1f, 0x8b]);
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(packed.as_slice())
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, archive);
    }

    #[test]
    fn init_script_prints_what_the_checks_look_for() {
        assert!(INIT.starts_with("#!/bin/sh\n"));
        for marker in [READY, TEST_DONE, "veil-test: cpus=", TEST_ARG] {
            assert!(INIT.contains(marker), "{marker}");
        }
        assert!(INIT.contains("setsid cttyhack sh"));
    }

    #[test]
    fn judges_consoles() {
        let checks = Checks {
            test: true,
            smp: 2,
            gic: 3,
            exit: 0,
        };
        let good = "[    0.000000] Booting Linux\nveil-initramfs: ready (uptime 3.21 s, 2 CPUs, Linux 6.1.0-50-arm64)\n\
                    veil-test: begin\n 11:  1234  5678  GICv3  27 Level  arch_timer\n\
                    veil-test: cpus=2\nveil-test: done\n";
        assert_eq!(checks.judge(good, Ending::Exited(0)), Vec::<String>::new());
        assert_eq!(guest_uptime(good), Some("3.21"));

        let v2 = Checks { gic: 2, ..checks };
        assert_eq!(
            v2.judge(good, Ending::Exited(0)).len(),
            1,
            "GICv2 wants GIC-0"
        );
        let one = Checks { smp: 1, ..checks };
        assert!(one.judge(good, Ending::Exited(0))[0].contains("cpus=1"));

        let hung = "veil-initramfs: ready (uptime 3 s)\nveil-test: begin\n";
        let problems = checks.judge(hung, Ending::TimedOut(Duration::from_secs(5)));
        assert_eq!(problems.len(), 2, "{problems:?}");

        let panic = "Kernel panic - not syncing: VFS: Unable to mount root fs\n";
        let problems = checks.judge(panic, Ending::Exited(0));
        assert!(problems[0].contains("did not reach /init"), "{problems:?}");

        let interactive = Checks {
            test: false,
            ..checks
        };
        assert!(
            interactive
                .judge("veil-initramfs: ready\n", Ending::Exited(0))
                .is_empty()
        );
        assert!(has_test_arg(BARE_CMDLINE));
        assert!(!has_test_arg("console=ttyAMA0 veil.test=10"));
    }

    #[test]
    fn bare_command_line() {
        let bare = Bare {
            gic: 2,
            smp: 2,
            memory: size::GIB,
            cmdline: BARE_CMDLINE.into(),
        };
        let args: Vec<String> = bare
            .args(
                Path::new("target/linux/Image"),
                Path::new("target/linux/initramfs.cpio.gz"),
            )
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "-M virt,gic-version=2 -cpu max,pauth=off,sve=off,sme=off -smp 2 -m 1G -nographic -no-reboot \
             -kernel target/linux/Image -initrd target/linux/initramfs.cpio.gz \
             -append console=ttyAMA0 veil.test=1"
        );
    }

    #[test]
    fn watches_markers_with_times() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "printf 'veil-init'; sleep 0.3; printf 'ramfs: ready\\n'; echo err >&2",
        ]);
        let run = watch(
            command,
            &[READY, TEST_DONE],
            Console::Capture,
            Some(Duration::from_secs(10)),
        )
        .unwrap();
        assert_eq!(run.ending, Ending::Exited(0));
        let ready = run
            .time_of(READY)
            .expect("a marker split across two reads is still seen");
        assert!(ready >= Duration::from_millis(250), "{ready:?}");
        assert_eq!(run.time_of(TEST_DONE), None);
        assert!(run.console.contains("err\n"));

        let mut sleeper = Command::new("sh");
        sleeper.args(["-c", "exec sleep 30"]);
        let run = watch(
            sleeper,
            &[READY],
            Console::Capture,
            Some(Duration::from_millis(200)),
        )
        .unwrap();
        assert!(matches!(run.ending, Ending::TimedOut(_)));
        assert!(run.elapsed < Duration::from_secs(5));
    }

    /// Downloads Debian's packages (~60 MB, once) and boots them on bare QEMU with GICv2 and
    /// GICv3. Needs the network and QEMU: `cargo test -p xtask -- --ignored linux`.
    #[test]
    #[ignore = "downloads Debian packages and boots Linux in QEMU (~30 s)"]
    fn linux_boots_on_bare_qemu() {
        let ws = Workspace::locate();
        let artifacts = prepare(&ws).unwrap();
        qemu::ensure_installed(&ws).unwrap();
        for gic in [2, 3] {
            let bare = Bare {
                gic,
                smp: 2,
                memory: size::GIB,
                cmdline: BARE_CMDLINE.into(),
            };
            let run = bare
                .boot(&ws, &artifacts, Console::Capture, Some(TEST_TIMEOUT))
                .unwrap();
            let problems = bare.checks(true).judge(&run.console, run.ending);
            assert!(
                problems.is_empty(),
                "{}: {problems:?}\n{}",
                bare.title(),
                run.console
            );
            eprintln!(
                "{}: ready after {:.2} s, done after {:.2} s",
                bare.title(),
                run.time_of(READY).unwrap().as_secs_f64(),
                run.time_of(TEST_DONE).unwrap().as_secs_f64()
            );
        }
    }
}

/// Boots the same kernel, initramfs and command line directly on QEMU (no hypervisor) and
/// prints how long Linux took to reach `/init` under Veil and bare, by the guest's own uptime
/// in the [`READY`] line: both count from when the kernel started (under Veil the virtual
/// counter starts with the VM).
pub fn compare_with_bare(ws: &Workspace, launch: &Launch, veil_console: &str) {
    let Some(veil) = guest_uptime(veil_console).and_then(|u| u.parse::<f64>().ok()) else {
        println!("info linux boot time: no uptime in the Veil run's ready line");
        return;
    };
    let artifacts = match prepare(ws) {
        Ok(a) => a,
        Err(error) => {
            println!("info linux boot time: {error:#}");
            return;
        }
    };
    let bare = Bare {
        gic: launch.gic,
        smp: launch.smp,
        memory: launch.memory,
        cmdline: launch.cmdline.clone().unwrap_or_default(),
    };
    match bare.boot(ws, &artifacts, Console::Capture, Some(TEST_TIMEOUT)) {
        Ok(run) => match guest_uptime(&run.console).and_then(|u| u.parse::<f64>().ok()) {
            Some(bare_uptime) if bare_uptime > 0.0 => println!(
                "info linux boot to /init (GICv{}, {} CPUs): Veil {veil:.2} s, bare QEMU {bare_uptime:.2} s, ratio {:.2}",
                launch.gic,
                launch.smp,
                veil / bare_uptime
            ),
            _ => println!("info linux boot time: the bare run printed no ready line"),
        },
        Err(error) => println!("info linux boot time: bare QEMU run failed: {error:#}"),
    }
}
