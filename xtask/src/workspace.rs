//! Where things are: the repository root, cargo's target directory and the files xtask writes
//! there, plus the small helpers every command uses to run tools from the root.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A build profile of the hypervisor (guests are always built for release).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release_flag(release: bool) -> Self {
        if release {
            Profile::Release
        } else {
            Profile::Debug
        }
    }

    /// The directory cargo uses for this profile.
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// The repository this xtask belongs to.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The repository root (the directory holding the workspace `Cargo.toml`).
    pub root: PathBuf,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
    pub target_dir: PathBuf,
    /// Where the user started xtask (cargo run keeps it): paths in messages are relative to it.
    pub cwd: PathBuf,
}

impl Workspace {
    /// The workspace xtask was compiled in; `cargo xtask` always runs it from there.
    pub fn locate() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives one level below the repository root")
            .to_path_buf();
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => root.join(dir),
            _ => root.join("target"),
        };
        let cwd = std::env::current_dir().unwrap_or_else(|_| root.clone());
        Workspace {
            root,
            target_dir,
            cwd,
        }
    }

    /// `target/<board>/`: the VM package for that board.
    pub fn board_dir(&self, board: &str) -> PathBuf {
        self.target_dir.join(board)
    }

    /// `target/<board>/<profile>/`: the raw hypervisor image.
    pub fn image_dir(&self, board: &str, profile: Profile) -> PathBuf {
        self.board_dir(board).join(profile.dir())
    }

    /// `target/guests/`: raw binaries of the bundled guests.
    pub fn guests_dir(&self) -> PathBuf {
        self.target_dir.join("guests")
    }

    /// `path` relative to the current directory when it is below it, so that a command line
    /// printed for people to copy stays short and still works.
    pub fn short(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.cwd) {
            Ok(relative) if !relative.as_os_str().is_empty() => relative.to_path_buf(),
            _ => path.to_path_buf(),
        }
    }

    /// [`Workspace::short`] as text, for messages.
    pub fn show(&self, path: &Path) -> String {
        self.short(path).display().to_string()
    }

    /// The `cargo` that runs us (cargo sets `$CARGO` for `cargo run`), started in the root.
    pub fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command.current_dir(&self.root);
        command
    }

    /// `rustc` of the pinned toolchain (rustup honours rust-toolchain.toml in the root).
    pub fn rustc(&self) -> Command {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let mut command = Command::new(rustc);
        command.current_dir(&self.root);
        command
    }

    /// The host's target triple, from `rustc -vV`.
    pub fn host_triple(&self) -> Result<String> {
        let output = capture(self.rustc().arg("-vV"))?;
        parse_host_triple(&output)
            .map(str::to_string)
            .context("`rustc -vV` printed no `host:` line")
    }
}

/// Runs `command` to completion and returns its stdout; a failure carries its stderr.
pub fn capture(command: &mut Command) -> Result<String> {
    let shown = describe(command);
    let output = command
        .output()
        .with_context(|| format!("cannot run `{shown}`: is it installed and on PATH?"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A command as a shell line, for messages and for people to copy. A program given by path
/// is shown by name (`cargo`, not the toolchain's full path to it).
pub fn describe(command: &Command) -> String {
    let program = command.get_program();
    let program = Path::new(program).file_name().unwrap_or(program);
    std::iter::once(program)
        .chain(command.get_args())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes one word for a POSIX shell, only when it needs it.
pub fn shell_quote(word: impl AsRef<OsStr>) -> String {
    let word = word.as_ref().to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The `host:` line of `rustc -vV`.
pub fn parse_host_triple(rustc_vv: &str) -> Option<&str> {
    rustc_vv
        .lines()
        .find_map(|line| line.strip_prefix("host:"))
        .map(str::trim)
        .filter(|triple| !triple.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_triple_from_rustc() {
        let text = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\ncommit-hash: 5980\n\
                    host: x86_64-unknown-linux-gnu\nrelease: 1.95.0\nLLVM version: 20.1.8\n";
        assert_eq!(parse_host_triple(text), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(parse_host_triple("rustc 1.0\n"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("virt,virtualization=on"),
            "virt,virtualization=on"
        );
        assert_eq!(
            shell_quote("veil.exit=semihosting"),
            "veil.exit=semihosting"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let mut command = Command::new("qemu");
        command.args(["-append", "x y"]);
        assert_eq!(describe(&command), "qemu -append 'x y'");
        let cargo = Command::new("/root/.rustup/toolchains/stable/bin/cargo");
        assert_eq!(describe(&cargo), "cargo");
    }

    #[test]
    fn layout() {
        let ws = Workspace {
            root: "/r".into(),
            target_dir: "/r/target".into(),
            cwd: "/r".into(),
        };
        assert_eq!(
            ws.image_dir("qemu-virt", Profile::Release),
            Path::new("/r/target/qemu-virt/release")
        );
        assert_eq!(
            ws.show(Path::new("/r/target/guests/tiny.bin")),
            "target/guests/tiny.bin"
        );
        assert_eq!(ws.show(Path::new("/elsewhere/x")), "/elsewhere/x");
        assert_eq!(ws.short(Path::new("/r")), Path::new("/r"));
    }
}
