//! The two ways the memio guest judges an access: it completed, or it raised the synchronous
//! external abort that an access to a hole (or at a width a device refuses) must raise in the
//! guest's own vector. They are methods of the runtime's [`Tally`], which prints the lines; what
//! a right abort looks like (class, FSC, FAR, WnR) is this guest's concern, so it stays here.

use core::fmt;

use veil_guest_rt::exception::{
    ExceptionInfo, Kind, Source, ec, expect_exception, without_exception,
};
use veil_guest_rt::tally::Tally;

/// Fault status code of a synchronous external abort not on a table walk (ESR.ISS[5:0]).
pub const FSC_EXTERNAL_ABORT: u32 = 0x10;
/// ESR.ISS.WnR: the abort was caused by a write.
const ISS_WNR: u32 = 1 << 6;

/// Access checks as methods of the [`Tally`] they report to.
pub trait AccessChecks {
    /// The tally that counts the checks and prints their lines.
    fn tally(&mut self) -> &mut Tally;

    /// Runs `access`, which must complete without an exception; on one, fails `what` and
    /// returns `None` (the guest goes on).
    fn completes<T: Default>(
        &mut self,
        what: fmt::Arguments<'_>,
        access: impl FnOnce() -> T,
    ) -> Option<T> {
        match without_exception(access) {
            Ok(value) => Some(value),
            Err(info) => {
                self.tally()
                    .fail(format_args!("{} raised an exception: {}", what, info));
                None
            }
        }
    }

    /// Runs `access`, which must raise a synchronous external abort on a data access at
    /// `address` (FAR), a write if `write`, taken from this EL on SP_EL1 (the guest's own
    /// vector). One line either way.
    fn data_abort(
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
    fn abort_is(
        &mut self,
        what: fmt::Arguments<'_>,
        info: Option<ExceptionInfo>,
        class: u8,
        address: u64,
        write: Option<bool>,
    ) {
        let Some(info) = info else {
            self.tally().fail(format_args!(
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
        self.tally().check(
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
}

impl AccessChecks for Tally {
    fn tally(&mut self) -> &mut Tally {
        self
    }
}
