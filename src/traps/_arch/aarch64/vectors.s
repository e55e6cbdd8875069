// EL2 exception vectors: the top of every guest exit.
//
// A guest exit saves the guest's general-purpose registers, ELR_EL2 and SPSR_EL2 into the
// register file of the vCPU running on this CPU, found through TPIDR_EL2 (the per-CPU block,
// whose first word points at that register file; see cpu::PerCpu), then calls
// handle_guest_exit(regs, kind) in Rust. On return, __guest_resume restores whatever register
// file the per-CPU block points at then (the handler may have switched vCPUs) and ERETs.
// Some synchronous exits never get that far: __guest_sync answers the frequent stateless ones
// in place, and data aborts first try a shorter exit into Rust (see there). EL2 itself runs with interrupts masked, so an exception taken from EL2 is a Veil bug:
// handle_el2_exception prints it and powers off.
//
// Offsets must match traps::context::GuestRegs and cpu::PerCpu (checked by const asserts).

.equ REGS_ELR,      248
.equ REGS_SPSR,     256
.equ PERCPU_REGS,   0
.equ PERCPU_STACK,  8
.equ PERCPU_ID_REGS, 16
.equ PERCPU_READ_CELLS, 24

.equ MMIO_DONE_RELOAD_ALL, 2      // traps::fast_mmio::DONE_RELOAD_ALL

.equ EXIT_SYNC,     0
.equ EXIT_IRQ,      1
.equ EXIT_FIQ,      2
.equ EXIT_SERROR,   3

// The general-purpose registers at their GuestRegs offsets (x<n> at 8 * n) from `base`.
.macro STORE_X4_X17 base
    stp     x4, x5, [\base, #32]
    stp     x6, x7, [\base, #48]
    stp     x8, x9, [\base, #64]
    stp     x10, x11, [\base, #80]
    stp     x12, x13, [\base, #96]
    stp     x14, x15, [\base, #112]
    stp     x16, x17, [\base, #128]
.endm
.macro STORE_X18_X29 base
    stp     x18, x19, [\base, #144]
    stp     x20, x21, [\base, #160]
    stp     x22, x23, [\base, #176]
    stp     x24, x25, [\base, #192]
    stp     x26, x27, [\base, #208]
    stp     x28, x29, [\base, #224]
.endm
.macro LOAD_X2_X17 base
    ldp     x2, x3, [\base, #16]
    ldp     x4, x5, [\base, #32]
    ldp     x6, x7, [\base, #48]
    ldp     x8, x9, [\base, #64]
    ldp     x10, x11, [\base, #80]
    ldp     x12, x13, [\base, #96]
    ldp     x14, x15, [\base, #112]
    ldp     x16, x17, [\base, #128]
.endm
.macro LOAD_X20_X29 base
    ldp     x20, x21, [\base, #160]
    ldp     x22, x23, [\base, #176]
    ldp     x24, x25, [\base, #192]
    ldp     x26, x27, [\base, #208]
    ldp     x28, x29, [\base, #224]
.endm

.macro GUEST_EXIT kind
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el2
    ldr     x0, [x0, #PERCPU_REGS]
    stp     x2, x3, [x0, #16]
    STORE_X4_X17 x0
    STORE_X18_X29 x0
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
    STORE_X4_X17 sp
    STORE_X18_X29 sp
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
    VECTOR_ENTRY b __guest_sync
    VECTOR_ENTRY GUEST_EXIT EXIT_IRQ
    VECTOR_ENTRY GUEST_EXIT EXIT_FIQ
    VECTOR_ENTRY GUEST_EXIT EXIT_SERROR
    // Lower EL, AArch32: impossible while HCR_EL2.RW = 1 keeps EL1 in AArch64.
    VECTOR_ENTRY EL2_EXCEPTION EXIT_SYNC
    VECTOR_ENTRY EL2_EXCEPTION EXIT_IRQ
    VECTOR_ENTRY EL2_EXCEPTION EXIT_FIQ
    VECTOR_ENTRY EL2_EXCEPTION EXIT_SERROR

// A synchronous exit. Three kinds are answered right here, with four scratch registers on the
// EL2 stack and nothing else saved, because they change no state and are frequent:
//  - HVC #0 calls whose answer is a constant: PSCI_VERSION, SMCCC_VERSION, and any function ID
//    of an SMCCC owner Veil implements nothing for (NOT_SUPPORTED). The rules are the same as
//    traps::smccc's: see Call::from_fid and `fast_answer` in its tests.
//  - MRS of an ID register (op0=3, op1=0, CRn=0, CRm=1..7), answered from the VM's sanitized
//    table (vm::id_regs), whose address the per-CPU block holds.
//  - 32-bit loads of the device registers the VM publishes (devices::read_cells).
// Other data aborts take a shorter exit into Rust (.Lmmio_short); everything else takes the
// full exit below.
__guest_sync:
    stp     x0, x1, [sp, #-32]!
    stp     x2, x3, [sp, #16]
    mrs     x2, esr_el2
    lsr     x3, x2, #26
    cmp     x3, #0x24                   // EC: data abort from a lower EL
    b.eq    .Lfast_dabt
    cmp     x3, #0x16                   // EC: HVC (AArch64)
    b.eq    .Lfast_hvc
    cmp     x3, #0x18                   // EC: MSR/MRS
    b.eq    .Lfast_sysreg
.Lfast_none:
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp], #32
    GUEST_EXIT EXIT_SYNC

.Lfast_hvc:
    tst     x2, #0xffff                 // ISS.imm16 must be 0 (HVC #0)
    b.ne    .Lfast_none
    mov     w1, w0                      // the function ID (W0)
    mov     w3, #0x84000000             // PSCI_VERSION
    cmp     w1, w3
    b.eq    .Lhvc_version
    mov     w3, #0x80000000             // SMCCC_VERSION
    cmp     w1, w3
    b.eq    .Lhvc_version
    ubfx    w3, w1, #24, #6             // owner
    cmp     w3, #0                      // Arm architecture calls
    b.eq    .Lfast_none
    cmp     w3, #4                      // standard secure service: PSCI
    b.eq    .Lfast_none
    cmp     w3, #6                      // vendor hypervisor service: Veil
    b.eq    .Lfast_none
    mov     x0, #-1                     // NOT_SUPPORTED
    b       .Lhvc_return
.Lhvc_version:
    mov     x0, #0x1                    // 1.1 (PSCI and SMCCC alike): 0x1_0001
    movk    x0, #0x1, lsl #16
.Lhvc_return:
    ldp     x2, x3, [sp, #16]
    ldr     x1, [sp, #8]
    add     sp, sp, #32
    eret

.Lfast_sysreg:
    // ISS: Op0[21:20] Op2[19:17] Op1[16:14] CRn[13:10] Rt[9:5] CRm[4:1] Direction[0].
    // Op0 = 3, Op1 = 0, CRn = 0 and Direction = 1 (MRS), checked under one mask.
    mov     x3, #0xfc01
    movk    x3, #0x31, lsl #16
    and     x3, x2, x3
    mov     x1, #0x0001
    movk    x1, #0x30, lsl #16
    cmp     x3, x1
    b.ne    .Lfast_none
    ubfx    x3, x2, #1, #4              // CRm
    sub     x3, x3, #1
    cmp     x3, #6                      // CRm - 1 in 0..=6
    b.hi    .Lfast_none
    ubfx    x1, x2, #17, #3             // Op2
    add     x3, x1, x3, lsl #3          // (CRm - 1) * 8 + Op2
    mrs     x1, tpidr_el2
    ldr     x1, [x1, #PERCPU_ID_REGS]
    cbz     x1, .Lfast_none
    ldr     x3, [x1, x3, lsl #3]        // the sanitized value
    ubfx    x2, x2, #5, #5              // Rt
    // fall through

// Completes an instruction answered here: x3 is the value for register x2 (Rt; 31 = XZR),
// the guest's x0-x3 are on the stack.
.Lanswer_rt:
    mrs     x1, elr_el2                 // step past the instruction
    add     x1, x1, #4
    msr     elr_el2, x1
    cmp     x2, #4
    b.hs    .Lanswer_high
    str     x3, [sp, x2, lsl #3]        // Rt = x0..x3: its saved slot
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp], #32
    eret
.Lanswer_high:
    adr     x1, .Lanswer_move
    sub     x2, x2, #4
    add     x1, x1, x2, lsl #3
    br      x1
    // One `mov xN, x3; b` pair per Rt = 4..31 (31: XZR, the value is dropped).
.Lanswer_move:
    .irp n, 4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30
    mov     x\n, x3
    b       .Lanswer_done
    .endr
    b       .Lanswer_done
    nop
.Lanswer_done:
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp], #32
    eret

// A data abort: first, a 32-bit load of a register the VM publishes (devices::read_cells)
// is answered from its cell. ISS (ESR_EL2 for EC 0x24): ISV[24] = 1, SAS[23:22] = 2 (word),
// SSE[21] = 0, S1PTW[7] = 0, WnR[6] = 0 and DFSC[5:2] = 0b0001 (a translation fault, for
// which HPFAR_EL2 holds the IPA), checked under one mask. A big-endian guest (SCTLR_EL1.EE or
// E0E) would need the bytes swapped: it goes the long way.
.Lfast_dabt:
    mov     x3, #0x00fc
    movk    x3, #0x01e0, lsl #16
    and     x3, x2, x3
    mov     x1, #0x0004
    movk    x1, #0x0180, lsl #16
    cmp     x3, x1
    b.ne    .Lmmio_short
    mrs     x1, sctlr_el1
    tst     x1, #0x3000000
    b.ne    .Lmmio_short
    mrs     x0, tpidr_el2
    ldr     x0, [x0, #PERCPU_READ_CELLS]
    cbz     x0, .Lmmio_short
    mrs     x3, hpfar_el2               // FIPA[43:4] = IPA[51:12]
    mrs     x1, far_el2
    lsl     x3, x3, #8
    bfxil   x3, x1, #0, #12             // x3 = the IPA
    eor     x1, x3, x3, lsr #14         // the slot: read_cells::slot_of
    ubfx    x1, x1, #2, #6
    add     x0, x0, x1, lsl #4
    ldp     x1, x0, [x0]                // the slot's IPA and cell
    cmp     x1, x3
    b.ne    .Lmmio_short
    ldr     w3, [x0]                    // the register's value
    ubfx    x2, x2, #16, #5             // SRT
    b       .Lanswer_rt

// A data abort the cells do not answer: almost always an access to an emulated device, tried
// on the short exit first (traps::fast_mmio). All general-purpose registers go to the vCPU's register
// file but not ELR_EL2 and SPSR_EL2, and on the way back only x0-x18 and x30 (the registers a
// Rust call may clobber) are reloaded, plus x19-x29 when the access loaded one of them:
// handle_mmio_exit answers MMIO_DONE, MMIO_DONE_RELOAD_ALL or MMIO_FULL_EXIT. The full exit
// saves ELR_EL2 and SPSR_EL2 too and starts the access over.
.Lmmio_short:
    mrs     x0, tpidr_el2
    ldr     x0, [x0, #PERCPU_REGS]
    STORE_X4_X17 x0
    STORE_X18_X29 x0
    str     x30, [x0, #240]
    ldp     x4, x5, [sp, #16]
    stp     x4, x5, [x0, #16]
    ldp     x4, x5, [sp], #32
    stp     x4, x5, [x0, #0]
    mov     x1, x2                      // ESR_EL2
    bl      handle_mmio_exit
    cbz     x0, .Lmmio_reload           // MMIO_DONE
    cmp     x0, #MMIO_DONE_RELOAD_ALL
    b.ne    .Lmmio_full_exit
    mrs     x0, tpidr_el2
    ldr     x0, [x0, #PERCPU_REGS]
    ldr     x19, [x0, #152]
    LOAD_X20_X29 x0
.Lmmio_reload:
    mrs     x0, tpidr_el2
    ldr     x0, [x0, #PERCPU_REGS]
    LOAD_X2_X17 x0
    ldr     x18, [x0, #144]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret
.Lmmio_full_exit:
    mrs     x0, tpidr_el2
    ldr     x0, [x0, #PERCPU_REGS]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #REGS_ELR]
    mov     x1, #EXIT_SYNC
    // fall through

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
    LOAD_X2_X17 x0
    ldp     x18, x19, [x0, #144]
    LOAD_X20_X29 x0
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret
