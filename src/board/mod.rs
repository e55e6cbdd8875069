//! The host machine: what Veil was built for, what it found, and how it talks and powers off.
//!
//! Facts a DTB cannot give come from `boards/<board>.toml` through the build script ([`facts`]);
//! everything else is discovered at boot from the DTB in x0 ([`discovery`]) and kept for the
//! life of the system in [`platform`].

pub mod console;
pub mod discovery;
pub mod drivers;
pub mod input_switch;
pub mod panic;
pub mod power;

use spin::Once;

/// How a board turns itself off (from `boards/<board>.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOffMethod {
    /// PSCI SYSTEM_OFF through the conduit the DTB names.
    Psci,
    /// The BCM2711 power-management watchdog (Raspberry Pi 4 and QEMU raspi4b).
    Bcm2711Watchdog,
}

/// Constants generated from `boards/<board>.toml`.
pub mod facts {
    use super::PowerOffMethod;
    include!(concat!(env!("OUT_DIR"), "/board.rs"));
}

/// The DTB Veil was given, discovered once by the boot CPU and read-only after that.
static PLATFORM: Once<discovery::Platform<'static>> = Once::new();

/// Records the discovered platform. Called once, by the boot CPU.
pub fn set_platform(
    platform: discovery::Platform<'static>,
) -> &'static discovery::Platform<'static> {
    PLATFORM.call_once(|| platform)
}

/// The platform Veil runs on. Panics if called before discovery, which would be a Veil bug.
pub fn platform() -> &'static discovery::Platform<'static> {
    PLATFORM.get().expect("platform used before discovery")
}

/// Options for Veil itself, from the host DTB's `/chosen/bootargs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VeilOptions {
    /// Leave QEMU through semihosting so the exit status reaches the caller.
    pub exit_semihosting: bool,
    /// The most detailed log level printed.
    pub log_level: log::LevelFilter,
}

impl VeilOptions {
    /// Parses the `veil.*` words of a command line; other words are for no one here.
    pub fn parse(bootargs: &str) -> Self {
        let mut options = VeilOptions {
            exit_semihosting: false,
            log_level: log::LevelFilter::Info,
        };
        for word in bootargs.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("veil.exit", "semihosting")) => options.exit_semihosting = true,
                Some(("veil.log", level)) => {
                    if let Ok(level) = level.parse() {
                        options.log_level = level;
                    }
                }
                _ => {}
            }
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_bootargs() {
        let o = VeilOptions::parse("console=x veil.exit=semihosting veil.log=debug");
        assert!(o.exit_semihosting);
        assert_eq!(o.log_level, log::LevelFilter::Debug);
        let o = VeilOptions::parse("veil.log=bogus veil.exit=psci");
        assert!(!o.exit_semihosting);
        assert_eq!(o.log_level, log::LevelFilter::Info);
        assert_eq!(
            VeilOptions::parse(""),
            VeilOptions {
                exit_semihosting: false,
                log_level: log::LevelFilter::Info
            }
        );
    }
}

static OPTIONS: Once<VeilOptions> = Once::new();

/// Records Veil's own options (boot CPU, once, after discovery).
pub fn set_options(options: VeilOptions) {
    OPTIONS.call_once(|| options);
}

/// Veil's options; the defaults until discovery has run.
pub fn options() -> VeilOptions {
    OPTIONS.get().copied().unwrap_or(VeilOptions {
        exit_semihosting: false,
        log_level: log::LevelFilter::Info,
    })
}
