//! Counting instructions with the virtual counter.
//!
//! Every reading is `isb; mrs cntvct_el0; isb`: the first ISB keeps the read from happening
//! before the code it follows has finished, the second keeps what follows from starting
//! before it. (QEMU executes in order anyway; the fences make the same code meaningful on
//! hardware and cost the same instructions in every measurement, so they cancel out.)
//!
//! [`timed_loop!`](crate::timed_loop) puts an operation in a counted assembly loop between two
//! readings; the operation's cost is that loop's time minus the time of the same loop without
//! the operation ([`per_op`]). Writing the loops in assembly keeps the compiler from
//! unrolling, hoisting or merging them, so the two loops differ by exactly the operation.

use crate::Outcome;

/// The virtual counter, fenced on both sides (see the module docs).
#[inline(always)]
pub fn now() -> u64 {
    let count: u64;
    // SAFETY: reading CNTVCT_EL0 at EL1 has no side effects and is never trapped by EL2.
    unsafe {
        core::arch::asm!(
            "isb",
            "mrs {count}, cntvct_el0",
            "isb",
            count = out(reg) count,
            options(nomem, nostack, preserves_flags),
        );
    }
    count
}

/// Runs assembly lines `[..]` `n` times in a counted loop between two fenced counter reads
/// and evaluates to the ticks that passed. Further arguments are `asm!` operands for the
/// lines (clobbers included). Must be used inside `unsafe`: the lines are the caller's.
///
/// The loop counter and both readings use registers the compiler picks, so they never collide
/// with the operands.
#[macro_export]
macro_rules! timed_loop {
    ($n:expr, [$($line:expr),* $(,)?] $(, $($operands:tt)*)?) => {{
        let start: u64;
        let end: u64;
        ::core::arch::asm!(
            "isb",
            "mrs {start}, cntvct_el0",
            "isb",
            "2:",
            $($line,)*
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "isb",
            "mrs {end}, cntvct_el0",
            "isb",
            n = inout(reg) $n => _,
            start = out(reg) start,
            end = out(reg) end,
            $($($operands)*)?
        );
        end.wrapping_sub(start)
    }};
}

/// The extra instructions per operation: a loop with the operation (`with`) against the same
/// loop without it (`without`), both over `iters` iterations.
pub fn per_op(with: u64, without: u64, iters: u64) -> Outcome {
    Outcome::Measured {
        extra: with as i64 - without as i64,
        iters,
    }
}
