// Veil's first instructions, for every way a board may enter it.
//
// The firmware (or QEMU) jumps to _start with the MMU and caches off and x0 = the DTB's
// physical address. Veil must run at EL2: from EL3 it drops to EL2; at EL1 the CPU offers no
// virtualization, which Rust reports. Only the CPU whose MPIDR affinity is 0.0.0.0 boots;
// any other CPU that arrives here (a board that releases all cores at once) parks.
//
// Secondary CPUs started later by Veil itself (PSCI CPU_ON) enter at _secondary_start with
// x0 = their linear CPU index, chosen by the boot CPU.

.equ CURRENTEL_EL2,        0x8
.equ CURRENTEL_EL3,        0xc

// SCR_EL3: NS (bit 0) = lower levels are Non-secure; HCE (bit 8) = HVC enabled;
// RW (bit 10) = EL2 is AArch64. RES1 bits 4 and 5.
.equ SCR_EL3_VALUE,        (1 << 10) | (1 << 8) | (1 << 5) | (1 << 4) | (1 << 0)
// SPSR for the ERET into EL2: M = EL2h (0b1001), D, A, I, F masked.
.equ SPSR_EL2H_MASKED,     0x3c9
// SCTLR_EL2 with only its RES1 bits set: MMU, caches and alignment checks off, little-endian.
.equ SCTLR_EL2_RES1,       0x30c50830
// MPIDR_EL1 Aff3 (39:32), Aff2 (23:16), Aff1 (15:8), Aff0 (7:0).
.equ MPIDR_AFFINITY_MASK,  0xff00ffffff

.section .text.boot, "ax"
.global _start
_start:
    mov     x19, x0                     // the DTB address lives in x19 until Rust takes it

    mrs     x1, CurrentEL
    cmp     x1, #CURRENTEL_EL3
    b.eq    .Lfrom_el3
    cmp     x1, #CURRENTEL_EL2
    b.eq    .Lat_el2
    // EL1 (or lower): no hypervisor possible. Set a stack and let Rust say so.
    bl      .Lset_boot_stack
    lsr     x0, x1, #2
    b       boot_at_wrong_el

.Lfrom_el3:
    ldr     x1, =SCR_EL3_VALUE
    msr     scr_el3, x1
    mov     x1, #SPSR_EL2H_MASKED
    msr     spsr_el3, x1
    adr     x1, .Lat_el2
    msr     elr_el3, x1
    eret

.Lat_el2:
    ldr     x1, =SCTLR_EL2_RES1
    msr     sctlr_el2, x1
    isb

    mrs     x1, mpidr_el1
    ldr     x2, =MPIDR_AFFINITY_MASK
    and     x1, x1, x2
    cbnz    x1, .Lpark

    bl      .Lset_boot_stack

    // Zero .bss. The linker script aligns both ends to 16 bytes. 128 bytes per iteration while
    // 128 remain (8 stores, the first moving the pointer, and 2 loop instructions), then 16 at
    // a time. No DC ZVA: the MMU is off, so this is Device memory, where DC ZVA faults.
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
    sub     x3, x2, #128                // the last address a 128-byte block may start at
    b       2f
1:  stp     xzr, xzr, [x1], #128
    stp     xzr, xzr, [x1, #-112]
    stp     xzr, xzr, [x1, #-96]
    stp     xzr, xzr, [x1, #-80]
    stp     xzr, xzr, [x1, #-64]
    stp     xzr, xzr, [x1, #-48]
    stp     xzr, xzr, [x1, #-32]
    stp     xzr, xzr, [x1, #-16]
2:  cmp     x1, x3
    b.ls    1b
    b       4f
3:  stp     xzr, xzr, [x1], #16
4:  cmp     x1, x2
    b.lo    3b
    mov     x0, x19
    b       boot_primary                 // never returns

// Boot CPU (index 0) stack: the top of the first STACK_SIZE slice of .stacks.
.Lset_boot_stack:
    adrp    x2, __stacks_start
    add     x2, x2, :lo12:__stacks_start
    ldr     x3, =STACK_SIZE
    add     sp, x2, x3
    ret

.Lpark:
    wfe
    b       .Lpark

.global _secondary_spin_start
_secondary_spin_start:
    // Released from a spin-table: no context ID. The CPU's index is its MPIDR Aff0, which on
    // the boards that use spin-tables (Raspberry Pi 4) numbers the cores in DTB order.
    mrs     x0, mpidr_el1
    and     x0, x0, #0xff
    // fall through

.global _secondary_start
_secondary_start:
    // x0 = this CPU's linear index (the context_id Veil gave PSCI CPU_ON).
    ldr     x1, =SCTLR_EL2_RES1
    msr     sctlr_el2, x1
    isb
    adrp    x2, __stacks_start
    add     x2, x2, :lo12:__stacks_start
    ldr     x3, =STACK_SIZE
    madd    x2, x0, x3, x2              // this CPU's slice ...
    add     sp, x2, x3                  // ... and its top
    b       boot_secondary              // never returns

.ltorg
