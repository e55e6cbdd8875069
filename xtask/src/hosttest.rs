//! Host unit tests: `cargo test` for the hypervisor's pure modules (Veil is
//! `#![cfg_attr(not(test), no_std)]`, so they build for the host) and for xtask itself, with
//! libtest's output read back to count every test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::image::HYPERVISOR_PACKAGE;
use crate::workspace::{Workspace, describe};

/// The counts libtest prints, summed over every test binary of a `cargo test` run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// How many `test result:` lines there were (one per test binary).
    pub binaries: usize,
    /// Names of the tests that failed (`test NAME ... FAILED`).
    pub failures: Vec<String>,
}

/// Reads libtest's output: `test result: ok. 12 passed; 0 failed; 1 ignored; ...` lines, and
/// `test path::name ... FAILED` lines.
pub fn parse_summary(output: &str) -> Summary {
    let mut summary = Summary::default();
    for line in output.lines().map(str::trim) {
        if let Some(counts) = line.strip_prefix("test result:")
            && let Some(counts) = counts
                .trim_start()
                .strip_prefix("ok.")
                .or_else(|| counts.trim_start().strip_prefix("FAILED."))
        {
            summary.binaries += 1;
            for part in counts.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(label), Some(number)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(number) = number.parse::<u64>() else {
                    continue;
                };
                match label {
                    "passed" => summary.passed += number,
                    "failed" => summary.failed += number,
                    "ignored" => summary.ignored += number,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some(name) = rest.strip_suffix(" ... FAILED")
        {
            summary.failures.push(name.trim().to_string());
        }
    }
    summary
}

/// One `cargo test` invocation and what it reported.
#[derive(Debug)]
pub struct SuiteRun {
    /// `veil` or `xtask`.
    pub name: &'static str,
    pub command: String,
    pub success: bool,
    pub summary: Summary,
    /// Everything cargo and the tests printed, for a failure report.
    pub output: String,
    pub elapsed: Duration,
}

/// Runs Veil's and xtask's host unit tests; `filter` is passed on to libtest.
pub fn run(ws: &Workspace, filter: Option<&str>) -> Result<Vec<SuiteRun>> {
    let host = ws.host_triple()?;
    let suites: [(&'static str, Vec<&str>); 2] = [
        (
            HYPERVISOR_PACKAGE,
            vec!["-p", HYPERVISOR_PACKAGE, "--target", host.as_str()],
        ),
        ("xtask", vec!["-p", "xtask"]),
    ];
    let mut runs = Vec::new();
    for (name, args) in suites {
        let mut command = ws.cargo();
        command
            .arg("test")
            .args(args)
            // Veil's build script needs a board even for host tests.
            .env("VEIL_BOARD", "qemu-virt")
            .stdin(Stdio::null());
        if let Some(filter) = filter {
            command.arg("--").arg(filter);
        }
        let shown = describe(&command);
        println!("running {shown}");
        let start = Instant::now();
        let output = command
            .output()
            .with_context(|| format!("cannot run `{shown}`"))?;
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        runs.push(SuiteRun {
            name,
            command: shown,
            success: output.status.success(),
            summary: parse_summary(&String::from_utf8_lossy(&output.stdout)),
            output: text,
            elapsed: start.elapsed(),
        });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_test_binary() {
        let output = "\
running 3 tests
test size::tests::parses ... ok
test qemu::tests::versions ... ok
test board::tests::ignored_one ... ignored
test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

running 5 tests
test vm::tests::a ... ok
test vm::tests::b ... FAILED
test vm::tests::c ... ok
test vm::tests::d ... FAILED
test vm::tests::e ... ok

failures:

---- vm::tests::b stdout ----
thread 'vm::tests::b' panicked at src/vm.rs:9:5:
test result: this line is not a summary

failures:
    vm::tests::b
    vm::tests::d

test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        let summary = parse_summary(output);
        assert_eq!((summary.passed, summary.failed, summary.ignored), (5, 2, 1));
        assert_eq!(
            summary.binaries, 2,
            "the panic message's `test result:` is no summary"
        );
        assert_eq!(summary.failures, ["vm::tests::b", "vm::tests::d"]);
    }

    #[test]
    fn nothing_to_read() {
        assert_eq!(parse_summary(""), Summary::default());
        let compile_error =
            "error[E0425]: cannot find value `x` in this scope\nerror: could not compile `veil`\n";
        assert_eq!(parse_summary(compile_error), Summary::default());
        let none = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 4 filtered out; finished in 0.00s\n";
        let summary = parse_summary(none);
        assert_eq!(
            (summary.passed, summary.failed, summary.binaries),
            (0, 0, 1)
        );
    }
}
