// First instructions of a Veil test guest, and of each secondary vCPU it starts.
//
// The loader enters _start at EL1h with the MMU off, interrupts masked and x0 = the DTB's
// address. Before Rust code can run: FP/SIMD must not trap (the compiler uses the q registers
// for copies, and the vector code saves them), exceptions must land in the runtime's table,
// and there must be a stack. .bss is zeroed here because no Rust code may see it before that.
//
// Operands filled in by entry.rs: CPACR_FPEN_NO_TRAP, STACK_SIZE, stacks (the stack array),
// rust_start and secondary_start (the Rust entry points).
//
// The very first instruction reads the physical counter, before anything else can add to it:
// under QEMU's -icount that is how many instructions ran from machine start to the guest
// (entry::boot_counter). x19 carries it past set-up, which clobbers only x1 and x2.

.macro ADDR reg, symbol
    adrp    \reg, \symbol
    add     \reg, \reg, :lo12:\symbol
.endm

.section .text.entry, "ax"
.global _start
_start:
    // No ISB before it: no earlier guest instruction exists to order it against.
    mrs     x19, cntpct_el0
    // x0 (the DTB) is left untouched until rust_start takes it as its argument.
    bl      .Lcpu_setup

    // vCPU 0's stack is the first in the array; stacks grow down from the end of theirs.
    ADDR    x1, {stacks}
    add     x1, x1, #{STACK_SIZE}
    mov     sp, x1

    ADDR    x1, __bss_start
    ADDR    x2, __bss_end
0:  cmp     x1, x2
    b.hs    1f
    // guest.ld aligns both ends to 16 bytes. Paired stores, never DC ZVA: with the MMU off all
    // data accesses are Device memory, where DC ZVA faults.
    stp     xzr, xzr, [x1], #16
    b       0b
1:  mov     x1, x19
    bl      {rust_start}
    // rust_start never returns; stay here if it ever did rather than run into whatever follows.
2:  wfi
    b       2b

// Entry of a vCPU started by cpu::start through PSCI CPU_ON, with x0 = its index (1..MAX_CPUS),
// which cpu::start checked. It runs on stack number x0 and enters secondary_start(index).
.global __veil_rt_secondary_entry
__veil_rt_secondary_entry:
    bl      .Lcpu_setup
    add     x1, x0, #1
    mov     x2, #{STACK_SIZE}
    mul     x1, x1, x2
    ADDR    x2, {stacks}
    add     x1, x1, x2
    mov     sp, x1
    bl      {secondary_start}
3:  wfi
    b       3b

// Per-vCPU state that Rust relies on. Clobbers x1 only.
.Lcpu_setup:
    mov     x1, #{CPACR_FPEN_NO_TRAP}
    msr     cpacr_el1, x1
    // FP/SIMD instructions after this point must see the new trap setting.
    isb
    ADDR    x1, __veil_rt_vectors
    msr     vbar_el1, x1
    // An exception taken after this point must use the new vector base.
    isb
    ret
