// EL2 exception vectors: the top of every guest exit.
//
// A guest exit saves the guest's general-purpose registers, ELR_EL2 and SPSR_EL2 into the
// register file of the vCPU running on this CPU, found through TPIDR_EL2 (the per-CPU block,
// whose first word points at that register file; see cpu::PerCpu), then calls
// handle_guest_exit(regs, kind) in Rust. On return, __guest_resume restores whatever register
// file the per-CPU block points at then (the handler may have switched vCPUs) and ERETs.
// EL2 itself runs with interrupts masked, so an exception taken from EL2 is a Veil bug:
// handle_el2_exception prints it and powers off.
//
// Offsets must match traps::context::GuestRegs and cpu::PerCpu (checked by const asserts).

.equ REGS_ELR,      248
.equ REGS_SPSR,     256
.equ PERCPU_REGS,   0
.equ PERCPU_STACK,  8

.equ EXIT_SYNC,     0
.equ EXIT_IRQ,      1
.equ EXIT_FIQ,      2
.equ EXIT_SERROR,   3

.macro GUEST_EXIT kind
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el2
    ldr     x0, [x0, #PERCPU_REGS]
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x2, elr_el2
    stp     x30, x2, [x0, #240]
    mrs     x2, spsr_el2
    str     x2, [x0, #REGS_SPSR]
    mov     x1, #\kind
    b       __guest_exit_common
.endm

// An exception taken at EL2: save what a report needs on the stack and never come back.
.macro EL2_EXCEPTION kind
    sub     sp, sp, #(34 * 8)
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x0, elr_el2
    stp     x30, x0, [sp, #240]
    mrs     x0, spsr_el2
    str     x0, [sp, #256]
    mov     x0, sp
    mov     x1, #\kind
    b       handle_el2_exception
.endm

.macro VECTOR_ENTRY body:vararg
    .balign 0x80
    \body
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    // Current EL with SP_EL0: Veil never uses SP_EL0 at EL2.
    VECTOR_ENTRY EL2_EXCEPTION EXIT_SYNC
    VECTOR_ENTRY EL2_EXCEPTION EXIT_IRQ
    VECTOR_ENTRY EL2_EXCEPTION EXIT_FIQ
    VECTOR_ENTRY EL2_EXCEPTION EXIT_SERROR
    // Current EL with SP_EL2.
    VECTOR_ENTRY EL2_EXCEPTION EXIT_SYNC
    VECTOR_ENTRY EL2_EXCEPTION EXIT_IRQ
    VECTOR_ENTRY EL2_EXCEPTION EXIT_FIQ
    VECTOR_ENTRY EL2_EXCEPTION EXIT_SERROR
    // Lower EL, AArch64: the guest.
    VECTOR_ENTRY GUEST_EXIT EXIT_SYNC
    VECTOR_ENTRY GUEST_EXIT EXIT_IRQ
    VECTOR_ENTRY GUEST_EXIT EXIT_FIQ
    VECTOR_ENTRY GUEST_EXIT EXIT_SERROR
    // Lower EL, AArch32: impossible while HCR_EL2.RW = 1 keeps EL1 in AArch64.
    VECTOR_ENTRY EL2_EXCEPTION EXIT_SYNC
    VECTOR_ENTRY EL2_EXCEPTION EXIT_IRQ
    VECTOR_ENTRY EL2_EXCEPTION EXIT_FIQ
    VECTOR_ENTRY EL2_EXCEPTION EXIT_SERROR

__guest_exit_common:
    bl      handle_guest_exit
    // fall through

// Restores the register file the per-CPU block points at and enters the guest. Also the way
// into a guest for the first time (see cpu::enter_guest). The EL2 stack starts empty again.
.global __guest_resume
__guest_resume:
    mrs     x0, tpidr_el2
    ldr     x1, [x0, #PERCPU_STACK]
    mov     sp, x1
    ldr     x0, [x0, #PERCPU_REGS]
    ldp     x2, x3, [x0, #REGS_ELR]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret
