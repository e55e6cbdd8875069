//! Assembly scaffolding for register probes: functions that run one instruction with every
//! general-purpose register holding a known value and report all 31 afterwards, so a test can
//! see that a hypervisor wrote exactly the register it should (and preserved every other).
//!
//! A probe is `extern "C" fn(out: *mut [u64; 31], ...)`, written in `global_asm!` as
//!
//! ```ignore
//! concat!(
//!     "my_probe:\n",
//!     veil_guest_rt::regprobe_enter!(),   // saves x18..x30 and `out` (x0)
//!     /* load the registers: patterns, the call's arguments... */
//!     "    <the instruction>\n",
//!     veil_guest_rt::regprobe_leave!(),   // x0..x30 to `out`, restores, returns
//! )
//! ```
//!
//! Between the two, every register is the probe's: the frame `regprobe_enter!` pushes (112
//! bytes on SP) keeps what the procedure-call standard asks the callee to preserve.
//!
//! Most probes exist once per destination register: [`regprobe_per_rt!`](crate::regprobe_per_rt) writes one for each
//! Rt = x0..x30 and XZR, and a table of them; [`regprobe_patterns!`](crate::regprobe_patterns) fills x0..x30 with
//! [`pattern`]`(n)`.

/// The value [`regprobe_patterns!`](crate::regprobe_patterns) puts in register `n`: distinct per register, and unlike
/// anything a device or a system register holds.
pub const fn pattern(n: usize) -> u64 {
    0xF00D_0000_0000_0000 | (n as u64) << 8 | n as u64
}

/// Assembly text: x0..x30 = [`pattern`]`(n)`.
#[macro_export]
macro_rules! regprobe_patterns {
    () => {
        concat!(
            "    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30\n",
            "    movz    x\\n, #((\\n << 8) | \\n)\n",
            "    movk    x\\n, #0xf00d, lsl #48\n",
            "    .endr\n",
        )
    };
}

/// Assembly text: 32 probes `<prefix>_x0` .. `<prefix>_x30`, `<prefix>_xzr`, each
/// [`regprobe_enter!`](crate::regprobe_enter), the `body` (assembly text in which `\rt` is the register's number, or
/// `zr`) and [`regprobe_leave!`](crate::regprobe_leave); then `<prefix>_table`, their addresses in that order, in
/// `.rodata`.
#[macro_export]
macro_rules! regprobe_per_rt {
    ($prefix:expr, $($body:expr),+ $(,)?) => {
        concat!(
            ".irp rt, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,zr\n",
            ".balign 4\n",
            $prefix, "_x\\rt:\n",
            $crate::regprobe_enter!(),
            $($body,)+
            $crate::regprobe_leave!(),
            ".endr\n",
            ".section .rodata.", $prefix, ", \"a\"\n",
            ".balign 8\n",
            ".global ", $prefix, "_table\n",
            $prefix, "_table:\n",
            ".irp rt, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,zr\n",
            "    .quad   ", $prefix, "_x\\rt\n",
            ".endr\n",
            ".text\n",
        )
    };
}

/// Assembly text: a probe's start. Pushes a 112-byte frame with x18..x30 and x0 (the `out`
/// pointer, at `[sp, #104]`).
#[macro_export]
macro_rules! regprobe_enter {
    () => {
        concat!(
            "    sub     sp, sp, #112\n",
            "    stp     x18, x19, [sp, #0]\n",
            "    stp     x20, x21, [sp, #16]\n",
            "    stp     x22, x23, [sp, #32]\n",
            "    stp     x24, x25, [sp, #48]\n",
            "    stp     x26, x27, [sp, #64]\n",
            "    stp     x28, x29, [sp, #80]\n",
            "    stp     x30, x0, [sp, #96]\n",
        )
    };
}

/// Assembly text: a probe's end. Stores x0..x30 as they are into `out` (saved by
/// [`regprobe_enter!`](crate::regprobe_enter)), restores x18..x30 and returns.
#[macro_export]
macro_rules! regprobe_leave {
    () => {
        concat!(
            "    sub     sp, sp, #256\n",
            "    stp     x0, x1, [sp, #0]\n",
            "    stp     x2, x3, [sp, #16]\n",
            "    stp     x4, x5, [sp, #32]\n",
            "    stp     x6, x7, [sp, #48]\n",
            "    stp     x8, x9, [sp, #64]\n",
            "    stp     x10, x11, [sp, #80]\n",
            "    stp     x12, x13, [sp, #96]\n",
            "    stp     x14, x15, [sp, #112]\n",
            "    stp     x16, x17, [sp, #128]\n",
            "    stp     x18, x19, [sp, #144]\n",
            "    stp     x20, x21, [sp, #160]\n",
            "    stp     x22, x23, [sp, #176]\n",
            "    stp     x24, x25, [sp, #192]\n",
            "    stp     x26, x27, [sp, #208]\n",
            "    stp     x28, x29, [sp, #224]\n",
            "    str     x30, [sp, #240]\n",
            "    ldr     x0, [sp, #256 + 104]\n",
            "    mov     x1, #0\n",
            "1:  ldr     x2, [sp, x1, lsl #3]\n",
            "    str     x2, [x0, x1, lsl #3]\n",
            "    add     x1, x1, #1\n",
            "    cmp     x1, #31\n",
            "    b.ne    1b\n",
            "    add     sp, sp, #256\n",
            "    ldp     x18, x19, [sp, #0]\n",
            "    ldp     x20, x21, [sp, #16]\n",
            "    ldp     x22, x23, [sp, #32]\n",
            "    ldp     x24, x25, [sp, #48]\n",
            "    ldp     x26, x27, [sp, #64]\n",
            "    ldp     x28, x29, [sp, #80]\n",
            "    ldr     x30, [sp, #96]\n",
            "    add     sp, sp, #112\n",
            "    ret\n",
        )
    };
}
