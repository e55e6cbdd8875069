//! QEMU scenarios (`tests/scenarios.toml`): each boots Veil with one VM through the same path as
//! `cargo xtask run`, captures the console, and judges it.
//!
//! ```toml
//! [[scenario]]
//! name = "tiny-unmapped-gicv3"   # required, unique
//! board = "qemu-virt"            # default "qemu-virt"
//! gic = 3                        # default 3
//! smp = 1                        # default 1
//! guest = "tiny"                 # default "tiny"; "tiny", "bench", "irq", "memio", "cpu",
//!                                # "tiny-elf", "tiny-image" and "linux" are the bundled guests,
//!                                # anything else a path from the root
//! initrd = "path"                # optional, a path from the root
//! mem = "128M"                   # guest RAM, default "128M"
//! cmdline = "tiny.test=unmapped" # the guest's bootargs, default none
//! icount = false                 # deterministic instruction counting, default false
//! expect = ["Veil ", ["0x10000000", "stopped"]]
//! reject = ["panicked"]          # must appear nowhere, default none
//! exit = 1                       # expected exit status, default 0
//! timeout = 30                   # seconds, default 60
//! input = "hello\n"              # typed into the console once, default nothing
//! input_after = "waiting"        # ... once the console shows this (or each of a list of
//!                                # strings, any order), default at once
//! ```
//!
//! `expect` is matched in order, each entry after the end of the previous match: a string must
//! appear as it is; a list of strings must all appear on one line, in any order.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::launch::{Guest, Launch};
use crate::qemu::{Ending, Input, Outcome};
use crate::size;
use crate::workspace::{Profile, Workspace};

/// The scenario file, relative to the root.
pub const FILE: &str = "tests/scenarios.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    scenario: Vec<Scenario>,
}

/// One `[[scenario]]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default = "defaults::board")]
    pub board: String,
    #[serde(default = "defaults::gic")]
    pub gic: u32,
    #[serde(default = "defaults::smp")]
    pub smp: u32,
    /// vCPUs per VM (default: smp).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Copies of the guest, one VM each.
    #[serde(default = "defaults::vms")]
    pub vms: u32,
    /// Host device windows "BASE:SIZE" passed through to the first VM.
    #[serde(default)]
    pub passthrough_mmio: Vec<String>,
    /// Host SPIs passed through to the first VM.
    #[serde(default)]
    pub passthrough_spis: Vec<u32>,
    #[serde(default = "defaults::guest")]
    pub guest: String,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default = "defaults::mem")]
    pub mem: String,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub icount: bool,
    #[serde(default)]
    pub expect: Vec<Expect>,
    #[serde(default)]
    pub reject: Vec<String>,
    #[serde(default)]
    pub exit: i32,
    #[serde(default = "defaults::timeout")]
    pub timeout: u64,
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub input_after: Markers,
}

/// `input_after`: one string, or a list of them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(from = "OneOrMore")]
pub struct Markers(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMore {
    One(String),
    More(Vec<String>),
}

impl From<OneOrMore> for Markers {
    fn from(value: OneOrMore) -> Self {
        match value {
            OneOrMore::One(marker) => Markers(vec![marker]),
            OneOrMore::More(markers) => Markers(markers),
        }
    }
}

mod defaults {
    pub fn board() -> String {
        "qemu-virt".into()
    }
    pub fn gic() -> u32 {
        3
    }
    pub fn smp() -> u32 {
        1
    }
    pub fn vms() -> u32 {
        1
    }

    pub fn guest() -> String {
        "tiny".into()
    }
    pub fn mem() -> String {
        "128M".into()
    }
    pub fn timeout() -> u64 {
        60
    }
}

/// One entry of `expect`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Expect {
    /// This text, anywhere after the previous match.
    Text(String),
    /// One line (after the previous match) that holds all of these, in any order.
    Line(Vec<String>),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Text(text) => write!(f, "{text:?}"),
            Expect::Line(parts) => {
                let quoted: Vec<String> = parts.iter().map(|p| format!("{p:?}")).collect();
                write!(f, "a line with {}", quoted.join(" and "))
            }
        }
    }
}

impl Expect {
    /// Finds this expectation in `text` from byte `from`; returns where the match ends.
    fn find(&self, text: &str, from: usize) -> Option<usize> {
        let rest = &text[from..];
        match self {
            Expect::Text(needle) => rest
                .find(needle.as_str())
                .map(|at| from + at + needle.len()),
            Expect::Line(parts) => {
                let mut start = from;
                for line in rest.split_inclusive('\n') {
                    if parts.iter().all(|part| line.contains(part.as_str())) {
                        return Some(start + line.trim_end_matches('\n').len());
                    }
                    start += line.len();
                }
                None
            }
        }
    }
}

/// Parses and checks the scenario file's text.
pub fn parse(text: &str) -> Result<Vec<Scenario>> {
    let file: ScenarioFile = toml::from_str(text)?;
    let mut names = HashSet::new();
    for scenario in &file.scenario {
        let name = &scenario.name;
        ensure!(!name.trim().is_empty(), "a scenario has an empty name");
        ensure!(
            names.insert(name.clone()),
            "two scenarios are called `{name}`"
        );
        size::parse_guest_memory(&scenario.mem).with_context(|| format!("scenario {name}: mem"))?;
        ensure!(
            scenario.timeout > 0,
            "scenario {name}: timeout must be at least 1 second"
        );
        for expect in &scenario.expect {
            let empty = match expect {
                Expect::Text(text) => text.is_empty(),
                Expect::Line(parts) => parts.is_empty() || parts.iter().any(String::is_empty),
            };
            ensure!(!empty, "scenario {name}: an `expect` entry is empty");
        }
        ensure!(
            scenario.reject.iter().all(|r| !r.is_empty()),
            "scenario {name}: a `reject` entry is empty"
        );
        ensure!(
            scenario.input.as_ref().is_none_or(|i| !i.is_empty()),
            "scenario {name}: `input` is empty"
        );
        ensure!(
            scenario.input_after.0.is_empty() || scenario.input.is_some(),
            "scenario {name}: `input_after` without `input`"
        );
        ensure!(
            scenario.input_after.0.iter().all(|a| !a.is_empty()),
            "scenario {name}: an `input_after` entry is empty"
        );
    }
    Ok(file.scenario)
}

/// Reads `tests/scenarios.toml`.
pub fn load(ws: &Workspace) -> Result<Vec<Scenario>> {
    let path = ws.root.join(FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid {FILE}"))
}

impl Scenario {
    /// The boot this scenario asks for; fails early on a guest or initrd file that is missing.
    pub fn launch(&self, ws: &Workspace, profile: Profile) -> Result<Launch> {
        let bundled = self.guest == "linux" || Guest::bundled(&self.guest).is_some();
        let files = [(!bundled).then_some(&self.guest), self.initrd.as_ref()];
        for path in files.into_iter().flatten() {
            if !ws.root.join(path).is_file() {
                bail!("no file {path} (paths in {FILE} are relative to the repository root)");
            }
        }
        // "linux": Debian's arm64 kernel and the busybox initramfs, fetched and cached by
        // `cargo xtask linux` (target/linux/).
        let linux = if self.guest == "linux" {
            Some(crate::linux::prepare(ws)?)
        } else {
            None
        };
        let guest = match self.guest.as_str() {
            "linux" => Guest::File(linux.as_ref().expect("prepared above").image.clone()),
            name => Guest::bundled(name).unwrap_or_else(|| Guest::File(ws.root.join(name))),
        };
        let initrd = match &linux {
            Some(artifacts) if self.initrd.is_none() => Some(artifacts.initramfs.clone()),
            _ => self.initrd.as_ref().map(|path| ws.root.join(path)),
        };
        Ok(Launch {
            board: self.board.clone(),
            profile,
            gic: self.gic,
            smp: self.smp,
            vcpus: self.vcpus,
            vms: self.vms,
            passthrough_mmio: self
                .passthrough_mmio
                .iter()
                .map(|w| crate::parse_window(w).map_err(anyhow::Error::msg))
                .collect::<Result<_>>()?,
            passthrough_spis: self.passthrough_spis.clone(),
            memory: size::parse_guest_memory(&self.mem)?,
            guest,
            initrd,
            cmdline: Some(self.cmdline.clone()).filter(|c| !c.is_empty()),
            timeout: Some(Duration::from_secs(self.timeout)),
            icount: self.icount,
            gdb: false,
        })
    }

    /// What to type into the console, if anything.
    pub fn input(&self) -> Option<Input> {
        self.input.as_ref().map(|text| Input {
            text: text.clone(),
            after: self.input_after.0.clone(),
        })
    }

    /// Everything wrong with `outcome`; empty when the scenario passed.
    pub fn judge(&self, outcome: &Outcome) -> Vec<String> {
        let mut problems = Vec::new();
        if let Ending::TimedOut(_) = outcome.ending {
            problems.push(outcome.ending.to_string());
        } else if outcome.ending != Ending::Exited(self.exit) {
            problems.push(format!(
                "{}, expected exit status {}",
                outcome.ending, self.exit
            ));
        }
        if let Err(missing) = match_in_order(&outcome.console, &self.expect) {
            problems.push(missing);
        }
        for rejected in &self.reject {
            if outcome.console.contains(rejected.as_str()) {
                problems.push(format!("output contains rejected {rejected:?}"));
            }
        }
        problems
    }
}

/// Checks that every expectation appears in `text`, in order.
pub fn match_in_order(text: &str, expects: &[Expect]) -> std::result::Result<(), String> {
    let mut at = 0;
    let mut previous: Option<&Expect> = None;
    for expect in expects {
        match expect.find(text, at) {
            Some(end) => at = end,
            None => {
                let anywhere = expect.find(text, 0).is_some();
                return Err(match (previous, anywhere) {
                    (Some(before), true) => format!("{expect} appears only before {before}"),
                    (Some(before), false) => format!("missing {expect} (after {before})"),
                    (None, _) => format!("missing {expect}"),
                });
            }
        }
        previous = Some(expect);
    }
    Ok(())
}

/// Keeps the scenarios whose name contains `filter`.
pub fn select<'a>(scenarios: &'a [Scenario], filter: Option<&str>) -> Vec<&'a Scenario> {
    scenarios
        .iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        [[scenario]]
        name = "tiny-gicv3"
        expect = ["Veil ", "tiny: hello from EL1", "tiny: all checks passed"]
        reject = ["FAIL", "panicked"]

        [[scenario]]
        name = "tiny-unmapped-gicv2"
        board = "qemu-virt"
        gic = 2
        smp = 2
        mem = "256M"
        cmdline = "tiny.test=unmapped"
        icount = true
        expect = ["tiny: reading unmapped IPA 0x10000000", ["0x10000000", "stopped"]]
        exit = 1
        timeout = 30
        input = "hello\n"
        input_after = "waiting for input"
    "#;

    fn outcome(console: &str, ending: Ending) -> Outcome {
        Outcome {
            ending,
            console: console.into(),
            elapsed: Duration::from_millis(1200),
        }
    }

    #[test]
    fn parses_with_defaults() {
        let scenarios = parse(SAMPLE).unwrap();
        assert_eq!(scenarios.len(), 2);
        let [plain, unmapped] = [&scenarios[0], &scenarios[1]];
        assert_eq!(
            (
                plain.board.as_str(),
                plain.gic,
                plain.smp,
                plain.guest.as_str(),
                plain.mem.as_str()
            ),
            ("qemu-virt", 3, 1, "tiny", "128M")
        );
        assert_eq!(
            (
                plain.exit,
                plain.timeout,
                plain.icount,
                plain.cmdline.as_str()
            ),
            (0, 60, false, "")
        );
        assert_eq!(plain.expect[1], Expect::Text("tiny: hello from EL1".into()));
        assert_eq!(
            (unmapped.gic, unmapped.smp, unmapped.exit, unmapped.timeout),
            (2, 2, 1, 30)
        );
        assert_eq!(
            unmapped.expect[1],
            Expect::Line(vec!["0x10000000".into(), "stopped".into()])
        );
        assert!(unmapped.icount);
        assert_eq!(plain.input(), None);
        assert_eq!(
            unmapped.input(),
            Some(Input {
                text: "hello\n".into(),
                after: vec!["waiting for input".into()]
            })
        );
    }

    #[test]
    fn converts_to_a_launch() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let ws = Workspace {
            root: root.into(),
            target_dir: root.join("target"),
            cwd: root.into(),
        };
        let scenarios = parse(SAMPLE).unwrap();
        let launch = scenarios[1].launch(&ws, Profile::Debug).unwrap();
        assert_eq!(launch.guest, Guest::Tiny);
        assert_eq!(launch.memory, 256 * size::MIB);
        assert_eq!(launch.cmdline.as_deref(), Some("tiny.test=unmapped"));
        assert_eq!(launch.timeout, Some(Duration::from_secs(30)));
        let plain = scenarios[0].launch(&ws, Profile::Debug).unwrap();
        assert!(plain.cmdline.is_none());

        let file = Scenario {
            guest: "Cargo.toml".into(),
            ..scenarios[0].clone()
        };
        let guest = file.launch(&ws, Profile::Debug).unwrap().guest;
        assert_eq!(guest, Guest::File(root.join("Cargo.toml")));
        let bench = Scenario {
            guest: "bench".into(),
            ..scenarios[0].clone()
        };
        assert_eq!(
            bench.launch(&ws, Profile::Debug).unwrap().guest,
            Guest::Bench
        );
        let irq = Scenario {
            guest: "irq".into(),
            ..scenarios[0].clone()
        };
        assert_eq!(irq.launch(&ws, Profile::Debug).unwrap().guest, Guest::Irq);
        let memio = Scenario {
            guest: "memio".into(),
            ..scenarios[0].clone()
        };
        assert_eq!(
            memio.launch(&ws, Profile::Debug).unwrap().guest,
            Guest::Memio
        );
        let missing = Scenario {
            guest: "guests/Image".into(),
            ..scenarios[0].clone()
        };
        let err = missing.launch(&ws, Profile::Debug).unwrap_err().to_string();
        assert!(err.contains("no file guests/Image"), "{err}");
        let no_initrd = Scenario {
            initrd: Some("nope.cpio".into()),
            ..scenarios[0].clone()
        };
        assert!(no_initrd.launch(&ws, Profile::Debug).is_err());
    }

    #[test]
    fn rejects_bad_files() {
        let bad = [
            "[[scenario]]\nname = \"a\"\n[[scenario]]\nname = \"a\"\n",
            "[[scenario]]\nname = \"a\"\nmem = \"3M\"\n",
            "[[scenario]]\nname = \"a\"\nexpects = [\"typo\"]\n",
            "[[scenario]]\nname = \"\"\n",
            "[[scenario]]\nname = \"a\"\nexpect = [\"\"]\n",
            "[[scenario]]\nname = \"a\"\nexpect = [[]]\n",
            "[[scenario]]\nname = \"a\"\ntimeout = 0\n",
            "[[scenario]]\ngic = 3\n",
            "[[scenarios]]\nname = \"a\"\n",
            "[[scenario]]\nname = \"a\"\ninput = \"\"\n",
            "[[scenario]]\nname = \"a\"\ninput_after = \"x\"\n",
            "[[scenario]]\nname = \"a\"\ninput = \"x\"\ninput_after = \"\"\n",
            "[[scenario]]\nname = \"a\"\ninput = \"x\"\ninput_after = [\"y\", \"\"]\n",
            "[[scenario]]\nname = \"a\"\ninput = \"x\"\ninput_after = 3\n",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "should be refused:\n{text}");
        }
        assert!(parse("").unwrap().is_empty());
        let listed =
            parse("[[scenario]]\nname = \"a\"\ninput = \"x\"\ninput_after = [\"y\", \"z\"]\n")
                .unwrap();
        assert_eq!(listed[0].input().unwrap().after, ["y", "z"]);
    }

    #[test]
    fn the_repository_file_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        if let Ok(text) = std::fs::read_to_string(root.join(FILE)) {
            let scenarios = parse(&text).unwrap();
            assert!(!scenarios.is_empty());
        }
    }

    #[test]
    fn matches_in_order() {
        let text = "Veil 0.1.0 (qemu-virt)\ntiny: hello from EL1\ntiny: all checks passed\n";
        let t = |s: &str| Expect::Text(s.into());
        assert!(match_in_order(text, &[t("Veil "), t("hello"), t("all checks passed")]).is_ok());
        assert!(match_in_order(text, &[]).is_ok());
        let err = match_in_order(text, &[t("all checks passed"), t("hello")]).unwrap_err();
        assert_eq!(err, "\"hello\" appears only before \"all checks passed\"");
        let err = match_in_order(text, &[t("Veil "), t("goodbye")]).unwrap_err();
        assert_eq!(err, "missing \"goodbye\" (after \"Veil \")");
        assert_eq!(
            match_in_order(text, &[t("nope")]).unwrap_err(),
            "missing \"nope\""
        );
        // The same text twice needs two occurrences.
        assert!(match_in_order(text, &[t("tiny:"), t("tiny:")]).is_ok());
        assert!(match_in_order(text, &[t("Veil"), t("Veil")]).is_err());
    }

    #[test]
    fn line_expectations_need_one_line() {
        let text = "tiny: reading unmapped IPA 0x10000000\r\n\
                    [ERROR] veil: VM tiny stopped: data abort at IPA 0x10000000\r\n";
        let line = |parts: &[&str]| Expect::Line(parts.iter().map(|p| p.to_string()).collect());
        let guest = Expect::Text("tiny: reading unmapped IPA 0x10000000".into());
        // Either order within the line.
        assert!(match_in_order(text, &[guest.clone(), line(&["0x10000000", "stopped"])]).is_ok());
        assert!(match_in_order(text, &[guest.clone(), line(&["stopped", "0x10000000"])]).is_ok());
        // Parts on different lines do not make a match.
        let split = "IPA 0x10000000\nstopped\n";
        assert!(match_in_order(split, &[line(&["0x10000000", "stopped"])]).is_err());
        // A line match counts from the previous match, not from the start of its line.
        let same = "tiny: x 0x10000000 stopped\n";
        assert!(
            match_in_order(same, &[Expect::Text("tiny: x".into()), line(&["stopped"])]).is_ok()
        );
        assert!(match_in_order(same, &[Expect::Text("stopped".into()), line(&["tiny"])]).is_err());
        // A last line without a newline counts.
        assert!(match_in_order("a\nb c", &[line(&["c", "b"])]).is_ok());
        assert_eq!(line(&["a", "b"]).to_string(), "a line with \"a\" and \"b\"");
    }

    #[test]
    fn judges_outcomes() {
        let scenarios = parse(SAMPLE).unwrap();
        let plain = &scenarios[0];
        let good = "Veil 0.1\ntiny: hello from EL1\ntiny: all checks passed\n";
        assert!(plain.judge(&outcome(good, Ending::Exited(0))).is_empty());

        let problems = plain.judge(&outcome(good, Ending::Exited(2)));
        assert_eq!(problems, ["exit status 2, expected exit status 0"]);

        let panicked = "Veil 0.1\ntiny: hello from EL1\nveil panicked at src/vm.rs:3\n";
        let problems = plain.judge(&outcome(panicked, Ending::Exited(2)));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[1].contains("missing \"tiny: all checks passed\""));
        assert_eq!(problems[2], "output contains rejected \"panicked\"");

        let hung = plain.judge(&outcome(
            "Veil 0.1\n",
            Ending::TimedOut(Duration::from_secs(60)),
        ));
        assert_eq!(hung[0], "timeout after 60 s");
    }

    #[test]
    fn filters_by_name() {
        let scenarios = parse(SAMPLE).unwrap();
        assert_eq!(select(&scenarios, None).len(), 2);
        assert_eq!(
            select(&scenarios, Some("unmapped"))[0].name,
            "tiny-unmapped-gicv2"
        );
        assert!(select(&scenarios, Some("nothing")).is_empty());
    }
}
