// The EL1 vector table: 16 entries of 0x80 bytes, 2 KiB aligned as VBAR_EL1 requires.
//
// Every entry saves the full state the interrupted code may be using — all general-purpose
// registers, ELR/SPSR, and the whole FP/SIMD file (Rust code in the handler may use q0..q31,
// and the interrupted code may be inline assembly that the compiler believes cannot trap) —
// then calls handler(vector index, &mut saved ELR). The handler either returns, having chosen
// where to resume by editing the saved ELR, or powers the VM off. Restoring everything and
// ERET resumes there.
//
// Frame layout, from SP upwards (800 bytes, a multiple of 16):
//   0    x0..x30        248 bytes
//   248  ELR_EL1
//   256  SPSR_EL1
//   264  FPSR
//   272  FPCR
//   280  (padding)
//   288  q0..q31        512 bytes

.equ FRAME_SIZE,  800
.equ OFF_ELR,     248
.equ OFF_SPSR,    256
.equ OFF_FPCR,    272
.equ OFF_Q,       288

.macro VECTOR index
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\index
    b       .Lsave_and_handle
.endm

.section .text.vectors, "ax"
.balign 0x800
.global __veil_rt_vectors
__veil_rt_vectors:
    // Current EL with SP_EL0; current EL with SP_ELx; lower EL AArch64; lower EL AArch32.
    // In each group of four: synchronous, IRQ, FIQ, SError.
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

.Lsave_and_handle:
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x1, elr_el1
    stp     x30, x1, [sp, #16 * 15]
    mrs     x1, spsr_el1
    mrs     x2, fpsr
    stp     x1, x2, [sp, #OFF_SPSR]
    mrs     x1, fpcr
    str     x1, [sp, #OFF_FPCR]
    stp     q0, q1, [sp, #OFF_Q + 32 * 0]
    stp     q2, q3, [sp, #OFF_Q + 32 * 1]
    stp     q4, q5, [sp, #OFF_Q + 32 * 2]
    stp     q6, q7, [sp, #OFF_Q + 32 * 3]
    stp     q8, q9, [sp, #OFF_Q + 32 * 4]
    stp     q10, q11, [sp, #OFF_Q + 32 * 5]
    stp     q12, q13, [sp, #OFF_Q + 32 * 6]
    stp     q14, q15, [sp, #OFF_Q + 32 * 7]
    stp     q16, q17, [sp, #OFF_Q + 32 * 8]
    stp     q18, q19, [sp, #OFF_Q + 32 * 9]
    stp     q20, q21, [sp, #OFF_Q + 32 * 10]
    stp     q22, q23, [sp, #OFF_Q + 32 * 11]
    stp     q24, q25, [sp, #OFF_Q + 32 * 12]
    stp     q26, q27, [sp, #OFF_Q + 32 * 13]
    stp     q28, q29, [sp, #OFF_Q + 32 * 14]
    stp     q30, q31, [sp, #OFF_Q + 32 * 15]

    // x0 = vector index (set by the entry); x1 = where ELR is saved.
    add     x1, sp, #OFF_ELR
    bl      {handler}

    ldp     q0, q1, [sp, #OFF_Q + 32 * 0]
    ldp     q2, q3, [sp, #OFF_Q + 32 * 1]
    ldp     q4, q5, [sp, #OFF_Q + 32 * 2]
    ldp     q6, q7, [sp, #OFF_Q + 32 * 3]
    ldp     q8, q9, [sp, #OFF_Q + 32 * 4]
    ldp     q10, q11, [sp, #OFF_Q + 32 * 5]
    ldp     q12, q13, [sp, #OFF_Q + 32 * 6]
    ldp     q14, q15, [sp, #OFF_Q + 32 * 7]
    ldp     q16, q17, [sp, #OFF_Q + 32 * 8]
    ldp     q18, q19, [sp, #OFF_Q + 32 * 9]
    ldp     q20, q21, [sp, #OFF_Q + 32 * 10]
    ldp     q22, q23, [sp, #OFF_Q + 32 * 11]
    ldp     q24, q25, [sp, #OFF_Q + 32 * 12]
    ldp     q26, q27, [sp, #OFF_Q + 32 * 13]
    ldp     q28, q29, [sp, #OFF_Q + 32 * 14]
    ldp     q30, q31, [sp, #OFF_Q + 32 * 15]
    ldr     x1, [sp, #OFF_FPCR]
    msr     fpcr, x1
    ldp     x1, x2, [sp, #OFF_SPSR]
    msr     spsr_el1, x1
    msr     fpsr, x2
    ldp     x30, x1, [sp, #16 * 15]
    msr     elr_el1, x1
    ldp     x28, x29, [sp, #16 * 14]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x18, x19, [sp, #16 * 9]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #FRAME_SIZE
    eret
