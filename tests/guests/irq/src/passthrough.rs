//! The `passthrough` test: a host device and its interrupt given to the guest.
//!
//! The scenario passes QEMU virt's own PL031 RTC (0x0901_0000, SPI 2 = INTID 34) and fw_cfg
//! window (0x0902_0000) through to the VM. The guest reads the fw_cfg signature ("QEMU", which no
//! emulated device of Veil's board answers), then arms the RTC's match interrupt one second ahead
//! and waits in WFI: the physical SPI must arrive as the same INTID through the guest's GIC,
//! hardware-mapped, so its EOI (after clearing the RTC's interrupt) retires it for good.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use veil_guest_rt::exception::{mask_irqs, unmask_irqs};
use veil_guest_rt::gic;
use veil_guest_rt::tally::Tally;

use crate::dispatch::{self, Entered};
use crate::timer::Timer;
use crate::wait;

const RTC: usize = 0x0901_0000;
const INTID: u32 = 34;
const FW_CFG: usize = 0x0902_0000;

/// PL031 registers (ARM DDI 0224).
mod rtc {
    pub const DR: usize = 0x00;
    pub const MR: usize = 0x04;
    pub const IMSC: usize = 0x10;
    pub const RIS: usize = 0x14;
    pub const ICR: usize = 0x1c;
    pub const PERIPH_ID0: usize = 0xfe0;
}

fn rtc_read(offset: usize) -> u32 {
    // SAFETY: a PL031 register of the passed-through RTC.
    unsafe { ((RTC + offset) as *const u32).read_volatile() }
}

fn rtc_write(offset: usize, value: u32) {
    // SAFETY: as in `rtc_read`; the test owns the RTC's match register and interrupt.
    unsafe { ((RTC + offset) as *mut u32).write_volatile(value) }
}

static INTERRUPTS: AtomicU32 = AtomicU32::new(0);
/// `passthrough-reset`'s first boot: take the interrupt but never end it, so that the physical
/// SPI stays active when the VM resets.
static LEAVE_ACTIVE: AtomicBool = AtomicBool::new(false);
static OTHER: AtomicU32 = AtomicU32::new(0);
static STILL_RAISED: AtomicU32 = AtomicU32::new(0);

fn handler(raw: u32, _entered: Entered) {
    let gic = dispatch::gic();
    if gic::intid(raw) != INTID {
        OTHER.fetch_add(1, Ordering::Relaxed);
        gic.end(raw);
        return;
    }
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    // Quiet the device, then end the interrupt: the hardware-mapped EOI deactivates the
    // physical SPI, which must not fire again.
    rtc_write(rtc::ICR, 1);
    rtc_write(rtc::IMSC, 0);
    if rtc_read(rtc::RIS) & 1 != 0 {
        STILL_RAISED.fetch_add(1, Ordering::Relaxed);
    }
    if !LEAVE_ACTIVE.load(Ordering::Relaxed) {
        gic.end(raw);
    }
}

/// Reads fw_cfg's signature: selector register (big-endian, 16 bits) at +8, data at +0.
fn fw_cfg_signature() -> [u8; 4] {
    // SAFETY: fw_cfg's MMIO registers in the passed-through window; selecting key 0 (the
    // signature) and reading four data bytes has no other effect.
    unsafe {
        ((FW_CFG + 8) as *mut u16).write_volatile(0u16.to_be());
        core::array::from_fn(|_| (FW_CFG as *const u8).read_volatile())
    }
}

/// The `passthrough` test.
/// The guest's DTB describes both devices where they are, the RTC with its (passed) SPI, as
/// the host's DTB does: a driver finds them there.
fn described(tally: &mut Tally) {
    let Ok(fdt) = veil_guest_rt::dtb::get() else {
        tally.fail(format_args!("passthrough: the DTB cannot be read"));
        return;
    };
    let base_of = |compatible: &str| {
        fdt.find_compatible(&[compatible])
            .and_then(|node| node.reg())
            .and_then(|mut regions| regions.next())
            .map(|region| region.starting_address as usize)
    };
    let fw_cfg = base_of("qemu,fw-cfg-mmio");
    tally.check(
        fw_cfg == Some(FW_CFG),
        format_args!(
            "passthrough: the DTB describes a qemu,fw-cfg-mmio at {:#x} (0: none)",
            fw_cfg.unwrap_or(0)
        ),
        format_args!("{FW_CFG:#x}"),
    );
    let rtc = base_of("arm,pl031");
    // <GIC_SPI 2 IRQ_TYPE_LEVEL_HIGH>: INTID 34.
    const SPI_2_LEVEL: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 4];
    let interrupts = fdt
        .find_compatible(&["arm,pl031"])
        .and_then(|node| node.property("interrupts"))
        .map(|p| p.value);
    tally.check(
        rtc == Some(RTC) && interrupts == Some(&SPI_2_LEVEL[..]),
        format_args!(
            "passthrough: the DTB describes an arm,pl031 at {:#x} (0: none) with interrupts {interrupts:?}",
            rtc.unwrap_or(0)
        ),
        format_args!("{RTC:#x} with <0 2 4>"),
    );
}

pub fn run(tally: &mut Tally) {
    described(tally);
    let signature = fw_cfg_signature();
    tally.check(
        &signature == b"QEMU",
        format_args!(
            "passthrough: fw_cfg at {FW_CFG:#x} reads signature {:?}",
            core::str::from_utf8(&signature)
        ),
        format_args!("\"QEMU\", the host device itself"),
    );
    let id0 = rtc_read(rtc::PERIPH_ID0);
    tally.check(
        id0 == 0x31,
        format_args!("passthrough: the host PL031 at {RTC:#x} reads PeriphID0 {id0:#x}"),
        format_args!("0x31"),
    );

    interrupt_arrives(tally);
}

/// Arms the RTC's match interrupt two seconds ahead and checks that it arrives once as INTID 34,
/// and nothing else.
fn interrupt_arrives(tally: &mut Tally) {
    let now = arm_match();
    let got = wait::until(
        || INTERRUPTS.load(Ordering::Relaxed) > 0,
        5 * wait::frequency(),
    );
    // A little longer: a second delivery would be a deactivation that did not happen.
    wait::until(|| false, wait::frequency() / 10);
    mask_irqs();
    dispatch::gic().set_enabled(INTID, false);
    let interrupts = INTERRUPTS.load(Ordering::Relaxed);
    tally.check(
        got && interrupts == 1,
        format_args!("passthrough: the RTC's match interrupt arrived as INTID {INTID} {interrupts} time(s) (match at {})", now.wrapping_add(2)),
        format_args!("once, within 5 s"),
    );
    let (other, raised) = (
        OTHER.load(Ordering::Relaxed),
        STILL_RAISED.load(Ordering::Relaxed),
    );
    tally.check(
        other == 0 && raised == 0,
        format_args!("passthrough: {other} other interrupts, the RTC still raised after clearing {raised} time(s)"),
        format_args!("none"),
    );
}

/// Enables INTID 34 to this vCPU and the RTC's match interrupt two seconds ahead, with IRQs
/// unmasked; returns the RTC's time then.
fn arm_match() -> u32 {
    let gic = dispatch::gic();
    dispatch::set_handler(handler);
    wait::use_wake_timer(Timer::Virtual);
    rtc_write(rtc::IMSC, 0);
    rtc_write(rtc::ICR, 1);
    gic.configure(INTID, 0x80, false);
    gic.route_to_this_cpu(INTID);
    gic.set_enabled(INTID, true);
    let now = rtc_read(rtc::DR);
    rtc_write(rtc::MR, now.wrapping_add(2));
    rtc_write(rtc::IMSC, 1);
    unmask_irqs();
    now
}

/// What the first boot of `passthrough-reset` leaves for the second: "IRQRST01".
const RESET_NOTE_MAGIC: u64 = 0x4952_5152_5354_3031;

/// The `passthrough-reset` test: the first boot takes the RTC's interrupt and, without ending
/// it (the physical SPI stays active: it is hardware-mapped), resets the VM. The second boot
/// must get the interrupt again: Veil clears a passed-through SPI's active state at a reset.
pub fn run_reset(tally: &mut Tally) {
    let Some(note) = veil_guest_rt::dtb::reset_note() else {
        tally.fail(format_args!(
            "passthrough-reset: the DTB describes no RAM for the note"
        ));
        return;
    };
    // SAFETY: the last page of RAM holds nothing of this image, its stacks or its DTB
    // (`reset_note`); with the MMU off the accesses go to memory.
    if unsafe { note.read_volatile() } == [RESET_NOTE_MAGIC, u64::from(INTID)] {
        // SAFETY: as above.
        unsafe { note.write_volatile([0, 0]) };
        veil_guest_rt::println!("irq: passthrough-reset: booted again");
        interrupt_arrives(tally);
        return;
    }
    LEAVE_ACTIVE.store(true, Ordering::Relaxed);
    arm_match();
    let got = wait::until(
        || INTERRUPTS.load(Ordering::Relaxed) > 0,
        5 * wait::frequency(),
    );
    mask_irqs();
    if !got {
        tally.fail(format_args!(
            "passthrough-reset: the RTC's interrupt did not arrive on the first boot"
        ));
        return;
    }
    // SAFETY: as above.
    unsafe { note.write_volatile([RESET_NOTE_MAGIC, u64::from(INTID)]) };
    // SAFETY: a barrier only: the note reaches memory before the reset.
    unsafe { core::arch::asm!("dsb sy", options(nostack)) };
    veil_guest_rt::println!(
        "irq: passthrough-reset: INTID {INTID} taken and left active; resetting"
    );
    let error = veil_guest_rt::psci::system_reset();
    tally.fail(format_args!(
        "passthrough-reset: SYSTEM_RESET returned {error:?}"
    ));
}
