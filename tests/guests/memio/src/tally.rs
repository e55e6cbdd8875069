//! Counting checks and printing one line for each, in the format the host matches; and the two
//! ways an access can be judged: it completed, or it raised the expected abort.

use core::fmt;

use veil_guest_rt::exception::{
    ExceptionInfo, Kind, Source, ec, expect_exception, without_exception,
};
use veil_guest_rt::{power_off, println};

/// Fault status code of a synchronous external abort not on a table walk (ESR.ISS[5:0]).
pub const FSC_EXTERNAL_ABORT: u32 = 0x10;
/// ESR.ISS.WnR: the abort was caused by a write.
const ISS_WNR: u32 = 1 << 6;

/// Counts failures and prints each check's line.
pub struct Tally {
    failed: u32,
}

impl Tally {
    pub fn new() -> Self {
        Self { failed: 0 }
    }

    /// `memio: ok <got>` if `passed`, else `memio: FAIL <got>, expected <expected>`.
    pub fn check(&mut self, passed: bool, got: fmt::Arguments<'_>, expected: fmt::Arguments<'_>) {
        if passed {
            self.pass(got);
        } else {
            self.failed += 1;
            println!("memio: FAIL {}, expected {}", got, expected);
        }
    }

    pub fn pass(&mut self, what: fmt::Arguments<'_>) {
        println!("memio: ok {}", what);
    }

    pub fn fail(&mut self, what: fmt::Arguments<'_>) {
        self.failed += 1;
        println!("memio: FAIL {}", what);
    }

    /// A check that does not apply here (`why`), neither passed nor failed.
    pub fn skip(&mut self, what: fmt::Arguments<'_>, why: &str) {
        println!("memio: skip {} ({})", what, why);
    }

    /// Checks that `value` is `expected`, printing both in hex.
    pub fn equal(&mut self, what: fmt::Arguments<'_>, value: u64, expected: u64) {
        self.check(
            value == expected,
            format_args!("{} = {:#x}", what, value),
            format_args!("{:#x}", expected),
        );
    }

    /// Runs `access`, which must complete without an exception; on one, fails `what` and
    /// returns `None` (the guest goes on).
    pub fn completes<T: Default>(
        &mut self,
        what: fmt::Arguments<'_>,
        access: impl FnOnce() -> T,
    ) -> Option<T> {
        match without_exception(access) {
            Ok(value) => Some(value),
            Err(info) => {
                self.fail(format_args!("{} raised an exception: {}", what, info));
                None
            }
        }
    }

    /// Runs `access`, which must raise a synchronous external abort on a data access at
    /// `address` (FAR), a write if `write`, taken from this EL on SP_EL1 (the guest's own
    /// vector). One line either way.
    pub fn data_abort(
        &mut self,
        what: fmt::Arguments<'_>,
        address: u64,
        write: bool,
        access: impl FnOnce(),
    ) {
        let info = expect_exception(access);
        self.abort_is(what, info, ec::DATA_ABORT_SAME, address, Some(write));
    }

    /// Judges the exception `info` against a synchronous external abort of class `class` at
    /// `address`; `write` is the expected WnR (data aborts only).
    pub fn abort_is(
        &mut self,
        what: fmt::Arguments<'_>,
        info: Option<ExceptionInfo>,
        class: u8,
        address: u64,
        write: Option<bool>,
    ) {
        let Some(info) = info else {
            self.fail(format_args!(
                "{} completed, expected an external abort",
                what
            ));
            return;
        };
        let wnr = info.iss() & ISS_WNR != 0;
        let right = info.kind == Kind::Synchronous
            && info.source == Source::CurrentElSpx
            && info.ec() == class
            && info.iss() & 0x3f == FSC_EXTERNAL_ABORT
            && info.far == address
            && write.is_none_or(|w| w == wnr);
        self.check(
            right,
            format_args!(
                "{} raised ESR={:#x} FAR={:#x} ({:?} from {:?})",
                what, info.esr, info.far, info.kind, info.source
            ),
            format_args!(
                "a synchronous external abort from EL1h: EC={:#x} FSC=0x10{} FAR={:#x}",
                class,
                match write {
                    Some(true) => " WnR=1",
                    Some(false) => " WnR=0",
                    None => "",
                },
                address
            ),
        );
    }

    /// Prints the summary line and powers off.
    pub fn finish(self) -> ! {
        if self.failed == 0 {
            println!("memio: all checks passed");
        } else {
            println!("memio: {} checks FAILED", self.failed);
        }
        power_off()
    }
}
