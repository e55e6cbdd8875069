//! Veil's `log` backend: every line goes to the host console with the CPU that printed it.
//!
//! Levels mean: `error` = a VM was stopped, `warn` = a guest did something odd and was answered,
//! `info` = lifecycle, `debug`/`trace` = exits.

use log::{LevelFilter, Metadata, Record};

struct ConsoleLogger;

static LOGGER: ConsoleLogger = ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let cpu = crate::cpu::current_index();
            crate::board::console::print(format_args!(
                "veil[{cpu}] {:<5} {}\n",
                record.level(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. Called once by the boot CPU after the console is up.
pub fn init(level: LevelFilter) {
    // A second call only fails to install again, which is harmless.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
