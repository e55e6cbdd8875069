//! Host tests of the whole vGIC through its public API: register semantics as a guest sees
//! them, and interrupts travelling through list registers as the hardware would move them.

use super::*;
use crate::devices::MmioDevice;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

const BAD: Result<u64, MmioError> = Err(MmioError::BadAccess);

fn vgic(model: GicModel, vcpus: usize, spis: u32) -> Vgic {
    Vgic::new(VgicConfig::new(model, vcpus, spis).unwrap())
}

fn set(v: &[usize]) -> VcpuSet {
    v.iter().copied().collect()
}

trait Regs {
    fn rd(&self, vcpu: usize, off: u64, size: u8) -> u64;
    fn wr(&self, vcpu: usize, off: u64, size: u8, value: u64);
    fn rr(&self, off: u64, size: u8) -> u64;
    fn rw(&self, off: u64, size: u8, value: u64);
}

impl Regs for Vgic {
    fn rd(&self, vcpu: usize, off: u64, size: u8) -> u64 {
        self.gicd_read(vcpu, off, size).unwrap()
    }
    fn wr(&self, vcpu: usize, off: u64, size: u8, value: u64) {
        self.gicd_write(vcpu, off, size, value).unwrap()
    }
    fn rr(&self, off: u64, size: u8) -> u64 {
        self.gicr_read(off, size).unwrap()
    }
    fn rw(&self, off: u64, size: u8, value: u64) {
        self.gicr_write(off, size, value).unwrap()
    }
}

/// Redistributor RD_base / SGI_base offsets of `vcpu`.
fn rd_base(vcpu: usize) -> u64 {
    vcpu as u64 * GICR_STRIDE
}
fn sgi_base(vcpu: usize) -> u64 {
    rd_base(vcpu) + 0x1_0000
}

/// Distributor offsets of a bit-per-INTID array word / byte-per-INTID byte.
const ISENABLER: u64 = 0x100;
const ICENABLER: u64 = 0x180;
const ISPENDR: u64 = 0x200;
const ICPENDR: u64 = 0x280;
const ISACTIVER: u64 = 0x300;
const ICACTIVER: u64 = 0x380;
const IPRIORITYR: u64 = 0x400;
const ITARGETSR: u64 = 0x800;
const ICFGR: u64 = 0xc00;
const IGROUPR: u64 = 0x080;

fn bit_reg(base: u64, intid: u32) -> (u64, u64) {
    (base + u64::from(intid / 32) * 4, 1 << (intid % 32))
}

/// Enables SPI/PPI `intid` for `vcpu`'s view (GICv2 distributor) with a priority.
fn enable_v2(g: &Vgic, vcpu: usize, intid: u32, prio: u8) {
    let (off, bit) = bit_reg(ISENABLER, intid);
    g.wr(vcpu, off, 4, bit);
    g.wr(vcpu, IPRIORITYR + u64::from(intid), 1, u64::from(prio));
}

/// Enables SPI `intid` on a GICv3 VM, routed to `vcpu`, group 1.
fn enable_v3_spi(g: &Vgic, intid: u32, prio: u8, route: u64) {
    let (off, bit) = bit_reg(ISENABLER, intid);
    g.wr(0, off, 4, bit);
    g.wr(0, IPRIORITYR + u64::from(intid), 1, u64::from(prio));
    g.wr(0, 0x6000 + 8 * u64::from(intid), 8, route);
}

fn lrs(n: usize) -> Vec<ListRegister> {
    vec![ListRegister::INVALID; n]
}

fn valid(lrs: &[ListRegister]) -> Vec<(u32, LrState)> {
    lrs.iter()
        .filter(|l| l.state != LrState::Invalid)
        .map(|l| (l.vintid, l.state))
        .collect()
}

/// What the guest's CPU interface does to a register: acknowledge (pending -> active) ...
fn ack(lr: &mut ListRegister) {
    assert!(lr.state.is_pending(), "acknowledging {lr:?}");
    lr.state = LrState::Active;
}

/// ... and deactivate (active -> inactive; pending and active -> pending).
fn eoi(lr: &mut ListRegister) {
    assert!(lr.state.is_active(), "deactivating {lr:?}");
    lr.state = if lr.state == LrState::PendingActive {
        LrState::Pending
    } else {
        LrState::Invalid
    };
}

/// One guest run: fill, let the guest act on the registers, fold.
fn run(
    g: &Vgic,
    vcpu: usize,
    n: usize,
    guest: impl FnOnce(&mut [ListRegister]),
) -> (Vec<ListRegister>, LrFill) {
    let mut regs = lrs(n);
    let fill = g.fill_lrs(vcpu, &mut regs);
    let loaded = regs.clone();
    guest(&mut regs);
    g.fold_lrs(vcpu, &regs);
    (loaded, fill)
}

// ---- configuration --------------------------------------------------------------------

#[test]
fn configurations() {
    assert_eq!(
        VgicConfig::new(GicModel::V2, 0, 64),
        Err(ConfigError::VcpuCount)
    );
    assert_eq!(
        VgicConfig::new(GicModel::V2, 9, 64),
        Err(ConfigError::VcpuCount)
    );
    assert!(VgicConfig::new(GicModel::V2, 8, 64).is_ok());
    assert!(VgicConfig::new(GicModel::V3, 123, 96).is_ok());
    assert_eq!(
        VgicConfig::new(GicModel::V3, 129, 64),
        Err(ConfigError::VcpuCount)
    );
    assert_eq!(
        VgicConfig::new(GicModel::V3, 1, 48),
        Err(ConfigError::SpiCount)
    );
    assert_eq!(
        VgicConfig::new(GicModel::V3, 1, 992),
        Err(ConfigError::SpiCount)
    );
    assert!(VgicConfig::new(GicModel::V3, 1, 960).is_ok());
    assert!(VgicConfig::new(GicModel::V3, 1, 0).is_ok());
    let cfg = VgicConfig::new(GicModel::V3, 4, 64).unwrap();
    assert_eq!(cfg.vcpu_of_affinity(3), Some(3));
    assert_eq!(cfg.vcpu_of_affinity(4), None);
    assert_eq!(cfg.vcpu_of_affinity(1 << 8), None);
}

// ---- distributor: identification and control ------------------------------------------

#[test]
fn v2_ctlr_typer_ids() {
    let g = vgic(GicModel::V2, 2, 64);
    assert_eq!(g.rd(0, 0x0, 4), 0);
    g.wr(0, 0x0, 4, 0xffff_ffff);
    assert_eq!(g.rd(1, 0x0, 4), 0b11, "EnableGrp0 and EnableGrp1 only");
    g.wr(1, 0x0, 4, 0b10);
    assert_eq!(g.rd(0, 0x0, 4), 0b10);
    // ITLinesNumber = 2 (96 INTIDs), CPUNumber = 1, no Security Extensions.
    assert_eq!(g.rd(0, 0x4, 4), 0x22);
    g.wr(0, 0x4, 4, 0);
    assert_eq!(g.rd(0, 0x4, 4), 0x22, "TYPER is read-only");
    assert_eq!(g.rd(0, 0x8, 4), 0x43b);
    assert_eq!(g.rd(0, 0xfe8, 4), 0x2b, "PIDR2.ArchRev = 2");
    assert_eq!((g.rd(0, 0xff0, 4), g.rd(0, 0xffc, 4)), (0x0d, 0xb1));
    assert_eq!(g.rd(0, 0xfd0, 4), 0x04);
    assert_eq!(g.rd(0, 0xc, 4), 0, "reserved");
    assert_eq!(g.rd(0, 0xffe8, 4), 0, "GICv3 ID block is not there");
    assert_eq!(vgic(GicModel::V2, 8, 960).rd(0, 0x4, 4), 30 | 7 << 5);
}

#[test]
fn v3_ctlr_typer_ids() {
    let g = vgic(GicModel::V3, 4, 64);
    assert_eq!(g.rd(0, 0x0, 4), 0x50, "ARE and DS read as one");
    g.wr(0, 0x0, 4, 0xffff_ffff);
    assert_eq!(g.rd(0, 0x0, 4), 0x53);
    g.wr(0, 0x0, 4, 0);
    assert_eq!(g.rd(0, 0x0, 4), 0x50, "ARE and DS cannot be cleared");
    // ITLinesNumber 2, IDbits 9, no LPIs, no MBIS, no RSS below 17 vCPUs.
    assert_eq!(g.rd(0, 0x4, 4), 2 | 9 << 19);
    assert_eq!(
        vgic(GicModel::V3, 20, 32).rd(0, 0x4, 4),
        1 | 9 << 19 | 1 << 26
    );
    assert_eq!(g.rd(0, 0xc, 4), 0, "TYPER2");
    assert_eq!(g.rd(0, 0x8, 4), 0x43b);
    assert_eq!(g.rd(0, 0xffe8, 4), 0x3b, "PIDR2.ArchRev = 3");
    assert_eq!(g.rd(0, 0xffd0, 4), 0x44);
    assert_eq!(g.rd(0, 0xfe8, 4), 0, "GICv2 ID block is not there");
}

#[test]
fn access_widths() {
    let g = vgic(GicModel::V2, 2, 64);
    // 32-bit-only registers.
    for size in [1, 2, 8] {
        assert_eq!(g.gicd_read(0, 0x0, size), BAD);
        assert_eq!(g.gicd_read(0, ISENABLER, size), BAD);
        assert_eq!(g.gicd_read(0, ICFGR, size), BAD);
        assert_eq!(g.gicd_write(0, 0xf00, size, 0), Err(MmioError::BadAccess));
    }
    // Byte-accessible ones take bytes and words, not halfwords or doublewords.
    for off in [IPRIORITYR + 0x21, ITARGETSR + 0x23, 0xf13, 0xf21] {
        assert!(g.gicd_read(0, off, 1).is_ok(), "{off:#x}");
        assert_eq!(g.gicd_read(0, off & !3, 2), BAD);
        assert_eq!(g.gicd_read(0, off & !7, 8), BAD);
        assert!(g.gicd_read(0, off & !3, 4).is_ok());
    }
    // Misaligned, out of the window, unknown vCPU, nonsense sizes.
    assert_eq!(g.gicd_read(0, IPRIORITYR + 1, 4), BAD);
    assert_eq!(g.gicd_read(0, 0x1_0000, 4), BAD);
    assert_eq!(g.gicd_read(0, u64::MAX, 4), BAD);
    assert_eq!(g.gicd_read(2, 0x0, 4), BAD);
    assert_eq!(g.gicd_read(0, 0x0, 0), BAD);
    assert_eq!(g.gicd_read(0, 0x0, 3), BAD);
    // Reserved space: RAZ/WI for words.
    for off in [0x040, 0xd00, 0xe00, 0xf30, 0x6100, 0x8000, 0xfffc - 0x30] {
        g.wr(0, off, 4, 0xffff_ffff);
        assert_eq!(g.rd(0, off, 4), 0, "{off:#x}");
    }
    // GICv3: IROUTER is 64-bit or either 32-bit half.
    let g = vgic(GicModel::V3, 2, 64);
    assert!(g.gicd_read(0, 0x6100, 8).is_ok());
    assert!(g.gicd_read(0, 0x6104, 4).is_ok());
    assert_eq!(g.gicd_read(0, 0x6104, 8), BAD);
    assert_eq!(g.gicd_read(0, 0x6100, 1), BAD);
    assert_eq!(g.gicd_read(0, 0x6100, 2), BAD);
    assert_eq!(g.gicd_read(0, 0x0, 8), BAD);
}

// ---- distributor: per-INTID arrays ---------------------------------------------------

#[test]
fn enables_set_clear_and_bank() {
    let g = vgic(GicModel::V2, 2, 64);
    assert_eq!(
        g.rd(0, ISENABLER, 4),
        0xffff,
        "SGIs come out of reset enabled"
    );
    g.wr(0, ISENABLER + 4, 4, 0x5);
    assert_eq!(
        (g.rd(1, ISENABLER + 4, 4), g.rd(1, ICENABLER + 4, 4)),
        (0x5, 0x5)
    );
    g.wr(1, ICENABLER + 4, 4, 0x1);
    assert_eq!(g.rd(0, ISENABLER + 4, 4), 0x4);
    g.wr(0, ISENABLER + 4, 4, 0);
    assert_eq!(g.rd(0, ISENABLER + 4, 4), 0x4, "zero bits change nothing");
    // Banked: vCPU 1's PPIs are not vCPU 0's.
    g.wr(1, ISENABLER, 4, 1 << 27);
    assert_eq!(g.rd(1, ISENABLER, 4), 0xffff | 1 << 27);
    assert_eq!(g.rd(0, ISENABLER, 4), 0xffff);
    g.wr(0, ICENABLER, 4, 0xffff_ffff);
    assert_eq!(
        (g.rd(0, ISENABLER, 4), g.rd(1, ISENABLER, 4)),
        (0, 0xffff | 1 << 27)
    );
    // Beyond the VM's INTIDs: RAZ/WI.
    g.wr(0, ISENABLER + 12, 4, 0xffff_ffff);
    assert_eq!(g.rd(0, ISENABLER + 12, 4), 0);
}

#[test]
fn pending_and_active_registers() {
    let g = vgic(GicModel::V2, 2, 64);
    g.wr(0, ISPENDR + 4, 4, 0x8000_0001);
    assert_eq!(
        (g.rd(1, ISPENDR + 4, 4), g.rd(1, ICPENDR + 4, 4)),
        (0x8000_0001, 0x8000_0001)
    );
    g.wr(1, ICPENDR + 4, 4, 0x1);
    assert_eq!(g.rd(0, ISPENDR + 4, 4), 0x8000_0000);
    // GICv2 SGIs ignore ISPENDR/ICPENDR (SPENDSGIR names a sender); PPIs take them, banked.
    g.wr(0, ISPENDR, 4, 0xffff_ffff);
    assert_eq!(g.rd(0, ISPENDR, 4), 0xffff_0000);
    assert_eq!(g.rd(1, ISPENDR, 4), 0);
    // A level line keeps its interrupt pending through ICPENDR.
    g.set_level(40, 0, true).unwrap();
    g.wr(0, ICPENDR + 4, 4, 1 << 8);
    assert_ne!(g.rd(0, ISPENDR + 4, 4) & 1 << 8, 0);
    g.set_level(40, 0, false).unwrap();
    assert_eq!(g.rd(0, ISPENDR + 4, 4) & 1 << 8, 0);
    // Active.
    g.wr(1, ISACTIVER + 4, 4, 0x3);
    g.wr(0, ISACTIVER, 4, 1 << 5);
    assert_eq!(
        (
            g.rd(0, ICACTIVER + 4, 4),
            g.rd(0, ISACTIVER, 4),
            g.rd(1, ISACTIVER, 4)
        ),
        (0x3, 1 << 5, 0)
    );
    g.wr(0, ICACTIVER + 4, 4, 0x1);
    assert_eq!(g.rd(1, ISACTIVER + 4, 4), 0x2);
}

#[test]
fn priorities_are_bytes_with_five_bits() {
    let g = vgic(GicModel::V2, 2, 64);
    g.wr(0, IPRIORITYR + 0x20, 1, 0xff);
    assert_eq!(g.rd(0, IPRIORITYR + 0x20, 1), 0xf8);
    g.wr(0, IPRIORITYR + 0x24, 4, 0x1234_5678);
    assert_eq!(g.rd(1, IPRIORITYR + 0x24, 4), 0x1030_5078);
    assert_eq!(g.rd(1, IPRIORITYR + 0x26, 1), 0x30);
    // Banked for SGIs/PPIs.
    g.wr(1, IPRIORITYR + 27, 1, 0xa0);
    assert_eq!(
        (g.rd(1, IPRIORITYR + 24, 4), g.rd(0, IPRIORITYR + 24, 4)),
        (0xa0 << 24, 0)
    );
    // Beyond the last SPI.
    g.wr(0, IPRIORITYR + 96, 4, 0xffff_ffff);
    assert_eq!(g.rd(0, IPRIORITYR + 96, 4), 0);
}

#[test]
fn v2_targets() {
    let g = vgic(GicModel::V2, 2, 64);
    // SGI/PPI bytes name the reader and are read-only.
    assert_eq!(g.rd(1, ITARGETSR, 4), 0x0202_0202);
    assert_eq!(g.rd(0, ITARGETSR + 0x1f, 1), 0x01);
    g.wr(0, ITARGETSR + 0x1c, 4, 0xffff_ffff);
    assert_eq!(g.rd(0, ITARGETSR + 0x1c, 4), 0x0101_0101);
    // SPI bytes: CPUs the VM lacks are RAZ/WI.
    g.wr(0, ITARGETSR + 0x20, 4, 0xff03_0201);
    assert_eq!(g.rd(1, ITARGETSR + 0x20, 4), 0x0303_0201);
    g.wr(0, ITARGETSR + 0x21, 1, 0x01);
    assert_eq!(g.rd(1, ITARGETSR + 0x20, 4), 0x0303_0101);
    // Uniprocessor: RAZ/WI, and every SPI goes to the one CPU.
    let g = vgic(GicModel::V2, 1, 32);
    g.wr(0, 0x0, 4, 0b01);
    g.wr(0, ITARGETSR + 0x20, 4, 0x0101_0101);
    assert_eq!(
        (g.rd(0, ITARGETSR, 4), g.rd(0, ITARGETSR + 0x20, 4)),
        (0, 0)
    );
    enable_v2(&g, 0, 33, 0);
    assert_eq!(g.set_level(33, 0, true).unwrap(), set(&[0]));
    assert_eq!(g.next_pending(0).map(|p| p.intid).collect::<Vec<_>>(), [33]);
}

#[test]
fn config_and_groups() {
    let g = vgic(GicModel::V2, 1, 64);
    assert_eq!((g.rd(0, ICFGR, 4), g.rd(0, ICFGR + 4, 4)), (0xaaaa_aaaa, 0));
    g.wr(0, ICFGR, 4, 0);
    g.wr(0, ICFGR + 4, 4, 0xffff_ffff);
    assert_eq!(
        (g.rd(0, ICFGR, 4), g.rd(0, ICFGR + 4, 4)),
        (0xaaaa_aaaa, 0),
        "SGI/PPI config is fixed"
    );
    g.wr(0, ICFGR + 8, 4, 0xffff_ffff);
    assert_eq!(g.rd(0, ICFGR + 8, 4), 0xaaaa_aaaa, "Int_config[0] is RES0");
    g.wr(0, ICFGR + 8, 4, 0x8);
    assert_eq!(g.rd(0, ICFGR + 8, 4), 0x8);
    assert_eq!(g.rd(0, IGROUPR, 4), 0, "GICv2 resets to group 0");
    g.wr(0, IGROUPR + 4, 4, 0xf0f0_f0f0);
    g.wr(0, IGROUPR, 4, 0x1);
    assert_eq!(
        (g.rd(0, IGROUPR, 4), g.rd(0, IGROUPR + 4, 4)),
        (1, 0xf0f0_f0f0)
    );
    let g = vgic(GicModel::V3, 1, 64);
    assert_eq!(
        g.rd(0, IGROUPR + 4, 4),
        0xffff_ffff,
        "GICv3 resets to group 1"
    );
}

#[test]
fn v3_distributor_leaves_private_interrupts_to_redistributors() {
    let g = vgic(GicModel::V3, 2, 64);
    for base in [
        IGROUPR,
        ISENABLER,
        ISPENDR,
        ISACTIVER,
        ICFGR,
        ICFGR + 4,
        IPRIORITYR,
        IPRIORITYR + 0x1c,
    ] {
        g.wr(0, base, 4, 0xffff_ffff);
        assert_eq!(g.rd(0, base, 4), 0, "{base:#x}");
    }
    assert_eq!(
        g.rr(sgi_base(0) + 0x100, 4),
        0xffff,
        "SGI enables untouched"
    );
    assert_eq!(g.rr(sgi_base(0) + 0x400, 4), 0);
    // No target registers, no GICD_SGIR, no SGI pending registers with ARE = 1.
    g.wr(0, ITARGETSR + 0x20, 4, 0x0101_0101);
    assert_eq!(g.rd(0, ITARGETSR + 0x20, 4), 0);
    g.wr(0, 0xf00, 4, 0x0200_0001);
    g.wr(0, 0xf20, 4, 0xff);
    assert_eq!(g.rr(sgi_base(0) + 0x200, 4), 0);
    assert_eq!(g.rd(0, 0xf20, 4), 0);
}

#[test]
fn irouter() {
    let g = vgic(GicModel::V3, 2, 64);
    let r32 = 0x6000 + 8 * 32;
    assert_eq!(g.rd(0, r32, 8), 0);
    g.wr(0, r32, 8, u64::MAX);
    assert_eq!(
        g.rd(0, r32, 8),
        0xff_80ff_ffff,
        "affinity and IRM; RES0 elsewhere"
    );
    g.wr(0, r32, 4, 0x1);
    assert_eq!(g.rd(0, r32, 8), 0xff_0000_0001);
    g.wr(0, r32 + 4, 4, 0);
    assert_eq!(
        (g.rd(1, r32, 8), g.rd(1, r32, 4), g.rd(1, r32 + 4, 4)),
        (1, 1, 0)
    );
    g.wr(0, r32 + 4, 4, 0x2);
    assert_eq!(g.rd(0, r32 + 4, 4), 2);
    // IROUTER0-31 and beyond the last SPI: RAZ/WI.
    for off in [0x6000, 0x60f8, 0x6000 + 8 * 96, 0x7fd8] {
        g.wr(0, off, 8, 0x1);
        assert_eq!(g.rd(0, off, 8), 0, "{off:#x}");
    }
}

// ---- GICv2 SGIs -----------------------------------------------------------------------

#[test]
fn v2_sgir_and_sgi_pending_registers() {
    let g = vgic(GicModel::V2, 4, 32);
    g.wr(0, 0x0, 4, 0b01);
    g.take_kicks();
    // vCPU 1 sends SGI 3 to the list {0, 2}; vCPU 2 sends SGI 3 to everyone else.
    g.wr(1, 0xf00, 4, 0x0005_0003);
    assert_eq!(g.take_kicks(), set(&[0, 2]));
    g.wr(2, 0xf00, 4, 0x0100_0003);
    // CPENDSGIR0/SPENDSGIR0 byte 3 is SGI 3: one bit per sender.
    assert_eq!(g.rd(0, 0xf23, 1), 0b0110);
    assert_eq!(g.rd(0, 0xf10, 4), 0b0110 << 24);
    assert_eq!(g.rd(2, 0xf23, 1), 0b0010);
    assert_eq!((g.rd(1, 0xf23, 1), g.rd(3, 0xf23, 1)), (0b0100, 0b0100));
    assert_eq!(g.rd(0, ISPENDR, 4), 1 << 3);
    // Self only; the reserved filter does nothing.
    g.wr(3, 0xf00, 4, 0x0200_000f);
    g.wr(3, 0xf00, 4, 0x03ff_000e);
    assert_eq!(g.rd(3, 0xf2c, 4), 0b1000 << 24);
    // SPENDSGIR sets, CPENDSGIR clears, per sender; senders the VM lacks are RAZ/WI.
    g.wr(0, 0xf25, 1, 0xff);
    assert_eq!(g.rd(0, 0xf25, 1), 0x0f);
    g.wr(0, 0xf14, 4, 0x0000_0300 | 0x0000_0002 << 24);
    assert_eq!(g.rd(0, 0xf24, 4), 0x0c00);
    assert_eq!(g.rd(0, 0xf00, 4), 0, "GICD_SGIR is write-only");
}

// ---- redistributors -------------------------------------------------------------------

#[test]
fn redistributor_rd_base() {
    let g = vgic(GicModel::V3, 2, 64);
    // vCPU 0: affinity 0, processor 0, not last. vCPU 1: Aff0 1, processor 1, Last.
    assert_eq!(g.rr(rd_base(0) + 0x8, 8), 0);
    assert_eq!(g.rr(rd_base(1) + 0x8, 8), 1 << 32 | 1 << 8 | 1 << 4);
    assert_eq!(
        (g.rr(rd_base(1) + 0x8, 4), g.rr(rd_base(1) + 0xc, 4)),
        (1 << 8 | 1 << 4, 1)
    );
    g.rw(rd_base(1) + 0x8, 8, 0);
    assert_eq!(g.rr(rd_base(1) + 0x8, 8), 1 << 32 | 1 << 8 | 1 << 4);
    assert_eq!(g.rr(rd_base(0) + 0x4, 4), 0x43b);
    assert_eq!(g.rr(rd_base(1) + 0xffe8, 4), 0x3b);
    // The WAKER handshake: asleep at reset; clearing ProcessorSleep wakes the children at once.
    assert_eq!(g.rr(rd_base(0) + 0x14, 4), 0b110);
    g.rw(rd_base(0) + 0x14, 4, 0);
    assert_eq!(
        (g.rr(rd_base(0) + 0x14, 4), g.rr(rd_base(1) + 0x14, 4)),
        (0, 0b110)
    );
    g.rw(rd_base(0) + 0x14, 4, 0b110);
    assert_eq!(g.rr(rd_base(0) + 0x14, 4), 0b110);
    // No LPIs: CTLR and the LPI registers are RAZ/WI, the 64-bit ones at either width.
    g.rw(rd_base(0), 4, 1);
    assert_eq!(g.rr(rd_base(0), 4), 0);
    for off in [0x70, 0x78, 0x40, 0xb0] {
        g.rw(rd_base(0) + off, 8, u64::MAX);
        assert_eq!(
            (g.rr(rd_base(0) + off, 8), g.rr(rd_base(0) + off + 4, 4)),
            (0, 0)
        );
    }
    assert_eq!(g.gicr_read(rd_base(0), 8), BAD);
    assert_eq!(g.gicr_read(rd_base(0) + 0x8, 2), BAD);
    assert_eq!(g.gicr_read(rd_base(0) + 0xc, 8), BAD, "misaligned");
    // Past the last redistributor: RAZ/WI.
    assert_eq!(g.rr(rd_base(2) + 0x8, 8), 0);
    g.rw(sgi_base(5) + 0x100, 4, 0xffff_ffff);
    assert_eq!(g.gicr_read(u64::MAX - 3, 4), Ok(0));
}

#[test]
fn redistributor_sgi_base() {
    let g = vgic(GicModel::V3, 2, 64);
    let s1 = sgi_base(1);
    assert_eq!(g.rr(s1 + 0x080, 4), 0xffff_ffff, "group 1 at reset");
    assert_eq!(g.rr(s1 + 0x100, 4), 0xffff);
    g.rw(s1 + 0x100, 4, 1 << 27);
    g.rw(s1 + 0x180, 4, 1 << 1);
    assert_eq!(
        (g.rr(s1 + 0x180, 4), g.rr(sgi_base(0) + 0x100, 4)),
        (0xfffd | 1 << 27, 0xffff)
    );
    g.rw(s1 + 0x200, 4, 1 << 2 | 1 << 20);
    assert_eq!(
        g.rr(s1 + 0x280, 4),
        1 << 2 | 1 << 20,
        "GICv3 SGIs are pended through ISPENDR0"
    );
    g.rw(s1 + 0x280, 4, 1 << 2);
    assert_eq!(g.rr(s1 + 0x200, 4), 1 << 20);
    g.rw(s1 + 0x300, 4, 1 << 20);
    assert_eq!(g.rr(s1 + 0x380, 4), 1 << 20);
    g.rw(s1 + 0x41b, 1, 0xff);
    assert_eq!(g.rr(s1 + 0x418, 4), 0xf8 << 24);
    g.rw(s1 + 0x400, 4, 0x8070_6050);
    assert_eq!(g.rr(s1 + 0x401, 1), 0x60);
    assert_eq!((g.rr(s1 + 0xc00, 4), g.rr(s1 + 0xc04, 4)), (0xaaaa_aaaa, 0));
    g.rw(s1 + 0xc04, 4, u64::MAX);
    assert_eq!(g.rr(s1 + 0xc04, 4), 0);
    // Only the private words exist; the rest of the frame is RAZ/WI, IGRPMODR0 and NSACR too.
    for off in [0x104, 0x420, 0xc08, 0x800, 0xd00, 0xe00] {
        g.rw(s1 + off, 4, u64::MAX);
        assert_eq!(g.rr(s1 + off, 4), 0, "{off:#x}");
    }
    assert_eq!(g.gicr_read(s1 + 0x100, 1), BAD);
    assert_eq!(g.gicr_read(s1 + 0x400, 2), BAD);
    // A GICv2 VM has no redistributors.
    let g2 = Arc::new(vgic(GicModel::V2, 1, 32));
    assert_eq!(g2.gicr_read(0x8, 4), BAD);
    assert!(VirtualGicr::new(g2).is_none());
}

// ---- delivery decisions ---------------------------------------------------------------

#[test]
fn next_pending_orders_by_priority_then_intid() {
    let g = vgic(GicModel::V2, 1, 64);
    g.wr(0, 0x0, 4, 0b11);
    g.wr(0, ITARGETSR + 32, 4, 0x0101_0101);
    g.wr(0, ITARGETSR + 36, 4, 0x0101_0101);
    for (intid, prio) in [
        (32, 0x80),
        (33, 0x40),
        (34, 0x80),
        (35, 0x40),
        (36, 0x00),
        (37, 0xff),
    ] {
        enable_v2(&g, 0, intid, prio);
        g.raise_edge(intid, 0).unwrap();
    }
    enable_v2(&g, 0, 27, 0x40);
    g.set_level(27, 0, true).unwrap();
    let order: Vec<_> = g.next_pending(0).map(|p| (p.intid, p.priority)).collect();
    assert_eq!(
        order,
        [
            (36, 0),
            (27, 0x40),
            (33, 0x40),
            (35, 0x40),
            (32, 0x80),
            (34, 0x80),
            (37, 0xf8)
        ]
    );
}

#[test]
fn delivery_is_gated_by_enable_group_and_target() {
    let g = vgic(GicModel::V2, 2, 64);
    enable_v2(&g, 0, 40, 0);
    g.raise_edge(40, 0).unwrap();
    assert_eq!(g.next_pending(0).count(), 0, "GICD_CTLR disabled");
    g.wr(0, 0x0, 4, 0b10);
    assert_eq!(g.next_pending(0).count(), 0, "group 0 disabled");
    g.wr(0, 0x0, 4, 0b01);
    assert_eq!(g.next_pending(0).count(), 0, "no target");
    g.wr(0, ITARGETSR + 40, 1, 0b10);
    assert_eq!(
        (g.next_pending(0).count(), g.next_pending(1).count()),
        (0, 1)
    );
    g.wr(0, ITARGETSR + 40, 1, 0b11);
    assert_eq!(
        (g.next_pending(0).count(), g.next_pending(1).count()),
        (1, 1)
    );
    g.wr(0, IGROUPR + 4, 4, 1 << 8);
    assert_eq!(
        g.next_pending(0).count(),
        0,
        "now group 1, which is disabled"
    );
    g.wr(0, 0x0, 4, 0b10);
    assert_eq!(g.next_pending(0).count(), 1);
    g.wr(1, ICENABLER + 4, 4, 1 << 8);
    assert_eq!(g.next_pending(1).count(), 0, "disabled");
    assert!(!g.has_deliverable(1));
    g.wr(1, ISENABLER + 4, 4, 1 << 8);
    assert!(g.has_deliverable(1));
    assert_eq!(g.next_pending(5).count(), 0, "no such vCPU");
}

#[test]
fn v3_routing() {
    let g = vgic(GicModel::V3, 3, 64);
    g.wr(0, 0x0, 4, 0b10);
    enable_v3_spi(&g, 50, 0x10, 2);
    g.raise_edge(50, 0).unwrap();
    assert_eq!(
        (0..3)
            .map(|v| g.next_pending(v).count())
            .collect::<Vec<_>>(),
        [0, 0, 1]
    );
    g.wr(0, 0x6000 + 8 * 50, 8, 1 << 31);
    assert_eq!(
        (0..3)
            .map(|v| g.next_pending(v).count())
            .collect::<Vec<_>>(),
        [1, 1, 1]
    );
    g.wr(0, 0x6000 + 8 * 50, 8, 1 << 8);
    assert_eq!(
        (0..3)
            .map(|v| g.next_pending(v).count())
            .collect::<Vec<_>>(),
        [0, 0, 0],
        "Aff1 = 1: nobody"
    );
    // PPIs through the redistributor of their vCPU.
    g.rw(sgi_base(1) + 0x100, 4, 1 << 27);
    g.set_level(27, 1, true).unwrap();
    assert_eq!(g.next_pending(1).map(|p| p.intid).collect::<Vec<_>>(), [27]);
    assert_eq!(g.next_pending(0).count(), 0);
}

#[test]
fn icc_sgi1r_marks_targets_pending() {
    let g = vgic(GicModel::V3, 4, 32);
    g.wr(0, 0x0, 4, 0b11);
    let reached = g.write_icc_sgir(0, 7 << 24 | 0b0110, SgiRegister::Sgi1r);
    assert_eq!(reached, set(&[1, 2]));
    assert_eq!(g.rr(sgi_base(1) + 0x200, 4), 1 << 7);
    assert_eq!(g.rr(sgi_base(3) + 0x200, 4), 0);
    assert_eq!(g.next_pending(2).map(|p| p.intid).collect::<Vec<_>>(), [7]);
    // Broadcast, except the sender.
    assert_eq!(
        g.write_icc_sgir(2, 1 << 40 | 1 << 24, SgiRegister::Sgi1r),
        set(&[0, 1, 3])
    );
    // ICC_SGI0R_EL1 reaches only group 0 SGIs.
    g.rw(sgi_base(3) + 0x080, 4, 0xffff_fff7);
    assert_eq!(
        g.write_icc_sgir(0, 3 << 24 | 0b1110, SgiRegister::Sgi0r),
        set(&[3])
    );
    assert_eq!(
        g.write_icc_sgir(0, 3 << 24 | 0b1110, SgiRegister::Asgi1r),
        set(&[3])
    );
    assert_eq!(
        g.write_icc_sgir(9, 1 << 40, SgiRegister::Sgi1r),
        VcpuSet::empty(),
        "no such sender"
    );
    let g2 = vgic(GicModel::V2, 2, 32);
    assert_eq!(
        g2.write_icc_sgir(0, 1 << 40, SgiRegister::Sgi1r),
        VcpuSet::empty()
    );
}

// ---- list registers -------------------------------------------------------------------

/// A GICv3 VM with SPIs enabled, group 1 on, routed to vCPU 0.
fn v3_vm(vcpus: usize) -> Vgic {
    let g = vgic(GicModel::V3, vcpus, 64);
    g.wr(0, 0x0, 4, 0b10);
    g
}

#[test]
fn edge_interrupt_through_list_registers() {
    let g = v3_vm(1);
    enable_v3_spi(&g, 40, 0xa0, 0);
    g.raise_edge(40, 0).unwrap();
    // Loaded but the guest did not take it: still pending, offered again.
    let (loaded, fill) = run(&g, 0, 4, |_| {});
    assert_eq!(valid(&loaded), [(40, LrState::Pending)]);
    assert_eq!(loaded[0].priority, 0xa0);
    assert!(loaded[0].group1 && !loaded[0].eoi_maintenance && loaded[0].hw.is_none());
    assert_eq!(
        fill,
        LrFill {
            used: 1,
            more_pending: false,
            active_overflow: false
        }
    );
    assert_eq!(g.rd(0, ISPENDR + 4, 4), 1 << 8);
    // Acknowledged: active in the model, kept in the registers.
    let (_, _) = run(&g, 0, 4, |r| ack(&mut r[0]));
    assert_eq!(
        (g.rd(0, ISPENDR + 4, 4), g.rd(0, ISACTIVER + 4, 4)),
        (0, 1 << 8)
    );
    // A second edge while active: pending and active in one register.
    g.raise_edge(40, 0).unwrap();
    let (loaded, _) = run(&g, 0, 4, |r| eoi(&mut r[0]));
    assert_eq!(valid(&loaded), [(40, LrState::PendingActive)]);
    // The guest deactivated the first; the second is pending alone.
    let (loaded, _) = run(&g, 0, 4, |r| {
        ack(&mut r[0]);
        eoi(&mut r[0]);
    });
    assert_eq!(valid(&loaded), [(40, LrState::Pending)]);
    // Both handled: nothing left.
    let (loaded, _) = run(&g, 0, 4, |_| {});
    assert!(valid(&loaded).is_empty());
    assert_eq!((g.rd(0, ISPENDR + 4, 4), g.rd(0, ISACTIVER + 4, 4)), (0, 0));
}

#[test]
fn edge_raised_while_loaded_is_not_lost() {
    let g = v3_vm(1);
    enable_v3_spi(&g, 40, 0, 0);
    g.raise_edge(40, 0).unwrap();
    let mut regs = lrs(4);
    g.fill_lrs(0, &mut regs);
    // The device fires again while the guest runs, then the guest handles the first one.
    assert_eq!(
        g.raise_edge(40, 0).unwrap(),
        set(&[0]),
        "the holder is kicked"
    );
    ack(&mut regs[0]);
    eoi(&mut regs[0]);
    g.fold_lrs(0, &regs);
    assert_eq!(g.next_pending(0).map(|p| p.intid).collect::<Vec<_>>(), [40]);
}

#[test]
fn level_interrupt_is_resampled() {
    let g = v3_vm(1);
    enable_v3_spi(&g, 33, 0x80, 0);
    assert_eq!(g.set_level(33, 0, true).unwrap(), set(&[0]));
    // The register asks for a maintenance interrupt on deactivation: the line may still be high.
    let (loaded, _) = run(&g, 0, 4, |r| {
        ack(&mut r[0]);
        eoi(&mut r[0]);
    });
    assert_eq!(valid(&loaded), [(33, LrState::Pending)]);
    assert!(loaded[0].eoi_maintenance);
    // Line still high after the deactivation: pending again.
    let (loaded, _) = run(&g, 0, 4, |r| ack(&mut r[0]));
    assert_eq!(valid(&loaded), [(33, LrState::Pending)]);
    // Active with the line high: active only (no pending+active for level), with EOI.
    let (loaded, _) = run(&g, 0, 4, |r| {
        // The guest's handler clears the device, then deactivates.
        eoi(&mut r[0]);
    });
    assert_eq!(valid(&loaded), [(33, LrState::Active)]);
    assert!(loaded[0].eoi_maintenance);
    g.set_level(33, 0, false).unwrap();
    let (loaded, _) = run(&g, 0, 4, |_| {});
    assert!(valid(&loaded).is_empty());
}

#[test]
fn level_dropped_before_ack_is_withdrawn() {
    let g = v3_vm(2);
    enable_v3_spi(&g, 33, 0x80, 1);
    g.set_level(33, 0, true).unwrap();
    let mut regs = lrs(4);
    g.fill_lrs(1, &mut regs);
    assert_eq!(valid(&regs), [(33, LrState::Pending)]);
    // The line falls while vCPU 1 runs: its holder is kicked, and on refill the register is gone.
    assert_eq!(g.set_level(33, 0, false).unwrap(), set(&[1]));
    g.fold_lrs(1, &regs);
    let (loaded, _) = run(&g, 1, 4, |_| {});
    assert!(valid(&loaded).is_empty());
}

#[test]
fn more_pending_than_list_registers() {
    let g = v3_vm(1);
    for (i, intid) in (40..46).enumerate() {
        enable_v3_spi(&g, intid, 0x80 - 8 * i as u8, 0);
        g.raise_edge(intid, 0).unwrap();
    }
    // Six pending, four registers: the four most urgent, and a request to refill.
    let (loaded, fill) = run(&g, 0, 4, |r| {
        for lr in r.iter_mut() {
            ack(lr);
            eoi(lr);
        }
    });
    assert_eq!(
        valid(&loaded).iter().map(|v| v.0).collect::<Vec<_>>(),
        [45, 44, 43, 42]
    );
    assert_eq!(
        fill,
        LrFill {
            used: 4,
            more_pending: true,
            active_overflow: false
        }
    );
    let (loaded, fill) = run(&g, 0, 4, |_| {});
    assert_eq!(
        valid(&loaded).iter().map(|v| v.0).collect::<Vec<_>>(),
        [41, 40]
    );
    assert!(!fill.more_pending);
}

#[test]
fn active_interrupts_are_never_dropped() {
    let g = v3_vm(1);
    for intid in 40..44 {
        enable_v3_spi(&g, intid, 0x80, 0);
        g.raise_edge(intid, 0).unwrap();
    }
    run(&g, 0, 4, |r| r.iter_mut().for_each(ack));
    // A more urgent interrupt arrives: the four active ones keep their registers.
    enable_v3_spi(&g, 50, 0x00, 0);
    g.raise_edge(50, 0).unwrap();
    let (loaded, fill) = run(&g, 0, 4, |_| {});
    assert_eq!(
        valid(&loaded),
        [40, 41, 42, 43].map(|i| (i, LrState::Active))
    );
    assert!(fill.more_pending && !fill.active_overflow);
    // One deactivated: the new one gets its register.
    run(&g, 0, 4, |r| eoi(&mut r[2]));
    let (loaded, fill) = run(&g, 0, 4, |_| {});
    assert_eq!(
        valid(&loaded),
        [
            (40, LrState::Active),
            (41, LrState::Active),
            (43, LrState::Active),
            (50, LrState::Pending)
        ]
    );
    assert!(!fill.more_pending);
    // More active than registers (the guest set them with ISACTIVER): the most urgent stay.
    g.wr(0, ISACTIVER + 4, 4, 0xf0_0000);
    let (loaded, fill) = run(&g, 0, 2, |_| {});
    assert!(fill.active_overflow);
    assert_eq!(valid(&loaded).len(), 2);
}

#[test]
fn an_spi_lives_in_one_vcpu_at_a_time() {
    let g = vgic(GicModel::V2, 2, 32);
    g.wr(0, 0x0, 4, 0b01);
    enable_v2(&g, 0, 40, 0);
    g.wr(0, ITARGETSR + 40, 1, 0b11);
    assert_eq!(g.raise_edge(40, 0).unwrap(), set(&[0, 1]));
    let mut r0 = lrs(4);
    g.fill_lrs(0, &mut r0);
    assert_eq!(valid(&r0), [(40, LrState::Pending)]);
    let (loaded, _) = run(&g, 1, 4, |_| {});
    assert!(valid(&loaded).is_empty(), "vCPU 0 holds it");
    // Acknowledged on vCPU 0: it stays there, active, until deactivated.
    ack(&mut r0[0]);
    g.fold_lrs(0, &r0);
    g.raise_edge(40, 0).unwrap();
    let (loaded, _) = run(&g, 1, 4, |_| {});
    assert!(valid(&loaded).is_empty(), "active on vCPU 0");
    let (loaded, _) = run(&g, 0, 4, |r| {
        eoi(&mut r[0]);
        ack(&mut r[0]);
        eoi(&mut r[0]);
    });
    assert_eq!(valid(&loaded), [(40, LrState::PendingActive)]);
    assert_eq!(g.rd(1, ISACTIVER + 4, 4), 0);
    assert_eq!(g.rd(1, ISPENDR + 4, 4), 0);
}

#[test]
fn hardware_mapped_timer() {
    let g = v3_vm(2);
    g.map_hw(27, 1, Some(27)).unwrap();
    g.rw(sgi_base(1) + 0x100, 4, 1 << 27);
    g.rw(sgi_base(1) + 0x418, 4, 0xa0 << 24);
    assert_eq!(g.set_level(27, 1, true).unwrap(), set(&[1]));
    // HW = 1 with the physical INTID; the hardware deactivates it, so no EOI maintenance.
    let mut regs = lrs(4);
    g.fill_lrs(1, &mut regs);
    assert_eq!(
        regs[0],
        ListRegister {
            vintid: 27,
            state: LrState::Pending,
            priority: 0xa0,
            group1: true,
            hw: Some(27),
            source: 0,
            eoi_maintenance: false,
        }
    );
    assert_eq!(ListRegister::decode_v3(regs[0].encode_v3()), regs[0]);
    // Not taken yet: the line comes back.
    g.fold_lrs(1, &regs);
    assert_eq!(g.next_pending(1).count(), 1);
    // Taken and deactivated: the line is down until the physical timer fires again.
    run(&g, 1, 4, |r| {
        ack(&mut r[0]);
        eoi(&mut r[0]);
    });
    assert_eq!(g.next_pending(1).count(), 0);
    assert_eq!(g.set_level(27, 1, true).unwrap(), set(&[1]));
    // Active is never combined with pending for HW; ICACTIVER cannot strand the physical one.
    run(&g, 1, 4, |r| ack(&mut r[0]));
    g.set_level(27, 1, false).unwrap();
    g.set_level(27, 1, true).unwrap();
    g.rw(sgi_base(1) + 0x380, 4, 1 << 27);
    let (loaded, _) = run(&g, 1, 4, |_| {});
    assert_eq!(valid(&loaded), [(27, LrState::Active)]);
    assert_eq!(g.next_pending(0).count(), 0, "vCPU 0's PPI 27 is its own");
}

#[test]
fn v2_sgi_senders_take_turns() {
    let g = vgic(GicModel::V2, 3, 32);
    g.wr(0, 0x0, 4, 0b01);
    g.wr(1, 0xf00, 4, 0x0001_0003);
    g.wr(2, 0xf00, 4, 0x0001_0003);
    // One register per INTID: sender 1 first, with EOI maintenance because sender 2 waits.
    let (loaded, fill) = run(&g, 0, 4, |r| ack(&mut r[0]));
    assert_eq!(valid(&loaded), [(3, LrState::Pending)]);
    assert_eq!((loaded[0].source, loaded[0].eoi_maintenance), (1, true));
    assert!(!fill.more_pending);
    assert_eq!(g.rd(0, 0xf23, 1), 0b100, "sender 1 was acknowledged");
    // Active from sender 1; sender 2 cannot share the register.
    let (loaded, _) = run(&g, 0, 4, |r| eoi(&mut r[0]));
    assert_eq!(valid(&loaded), [(3, LrState::Active)]);
    assert_eq!((loaded[0].source, loaded[0].eoi_maintenance), (1, true));
    let (loaded, _) = run(&g, 0, 4, |_| {});
    assert_eq!(valid(&loaded), [(3, LrState::Pending)]);
    assert_eq!((loaded[0].source, loaded[0].eoi_maintenance), (2, false));
    // Sender 1 again while its own instance is active: pending and active together.
    run(&g, 0, 4, |r| ack(&mut r[0]));
    g.wr(2, 0xf00, 4, 0x0001_0003);
    let (loaded, _) = run(&g, 0, 4, |_| {});
    assert_eq!(valid(&loaded), [(3, LrState::PendingActive)]);
    assert_eq!(ListRegister::decode_v2(loaded[0].encode_v2()), loaded[0]);
}

#[test]
fn guest_clears_state_of_a_loaded_interrupt() {
    let g = v3_vm(2);
    enable_v3_spi(&g, 40, 0, 0);
    g.raise_edge(40, 0).unwrap();
    let mut regs = lrs(4);
    g.fill_lrs(0, &mut regs);
    g.take_kicks();
    // vCPU 1 clears it while vCPU 0 runs with it loaded.
    g.wr(1, ICPENDR + 4, 4, 1 << 8);
    assert_eq!(g.rd(1, ISPENDR + 4, 4), 0);
    assert_eq!(g.take_kicks(), set(&[0]), "the holder must drop it");
    g.fold_lrs(0, &regs);
    assert_eq!(g.next_pending(0).count(), 0);
    // ISACTIVER/ICACTIVER on a loaded interrupt win over the register.
    g.raise_edge(40, 0).unwrap();
    g.fill_lrs(0, &mut regs);
    g.wr(1, ISACTIVER + 4, 4, 1 << 8);
    assert_eq!(g.rd(1, ISACTIVER + 4, 4), 1 << 8);
    g.fold_lrs(0, &regs);
    let (loaded, _) = run(&g, 0, 4, |_| {});
    assert_eq!(valid(&loaded), [(40, LrState::PendingActive)]);
    g.fill_lrs(0, &mut regs);
    g.wr(1, ICACTIVER + 4, 4, 1 << 8);
    g.fold_lrs(0, &regs);
    let (loaded, _) = run(&g, 0, 4, |_| {});
    assert_eq!(valid(&loaded), [(40, LrState::Pending)]);
}

#[test]
fn fill_without_fold_keeps_state() {
    let g = v3_vm(1);
    enable_v3_spi(&g, 40, 0, 0);
    g.raise_edge(40, 0).unwrap();
    let mut regs = lrs(4);
    g.fill_lrs(0, &mut regs);
    g.fill_lrs(0, &mut regs);
    assert_eq!(valid(&regs), [(40, LrState::Pending)]);
    // A register handed back with another INTID is taken as unchanged.
    regs[0].vintid = 41;
    regs[0].state = LrState::Invalid;
    g.fold_lrs(0, &regs);
    assert_eq!(g.next_pending(0).count(), 1);
    assert!(g.has_deliverable(0));
    // Folding a vCPU that does not exist, or with no registers, does nothing.
    g.fold_lrs(7, &regs);
    assert_eq!(g.fill_lrs(7, &mut regs), LrFill::default());
    assert_eq!(
        g.fill_lrs(0, &mut []),
        LrFill {
            used: 0,
            more_pending: true,
            active_overflow: false
        }
    );
}

// ---- injection and kicks ------------------------------------------------------------

#[test]
fn injection_errors() {
    let g = vgic(GicModel::V3, 2, 64);
    assert_eq!(g.set_level(3, 0, true), Err(InjectError::NotAllowed));
    assert_eq!(g.raise_edge(15, 0), Err(InjectError::NotAllowed));
    assert_eq!(g.set_level(96, 0, true), Err(InjectError::NoSuchIntid));
    assert_eq!(g.raise_edge(u32::MAX, 0), Err(InjectError::NoSuchIntid));
    assert_eq!(g.set_level(27, 2, true), Err(InjectError::NoSuchVcpu));
    assert_eq!(
        g.set_level(40, 99, true),
        Ok(VcpuSet::empty()),
        "an SPI ignores the vCPU"
    );
    assert_eq!(
        g.map_hw(27, 0, Some(1020)),
        Err(InjectError::BadPhysicalIntid)
    );
    assert_eq!(
        g.map_hw(27, 0, Some(15)),
        Err(InjectError::BadPhysicalIntid)
    );
    assert_eq!(g.map_hw(2, 0, Some(27)), Err(InjectError::NotAllowed));
    assert_eq!(g.map_hw(27, 0, None), Ok(()));
}

#[test]
fn kicks() {
    let g = vgic(GicModel::V2, 3, 32);
    g.wr(0, 0x0, 4, 0b01);
    g.take_kicks();
    g.wr(0, ITARGETSR + 33, 1, 0b110);
    // Disabled: nobody to kick, but it stays pending.
    assert_eq!(g.set_level(33, 0, true).unwrap(), VcpuSet::empty());
    assert_eq!(
        g.set_level(33, 0, true).unwrap(),
        VcpuSet::empty(),
        "no change"
    );
    g.take_kicks();
    g.wr(0, ISENABLER + 4, 4, 1 << 1);
    assert_eq!(g.take_kicks(), set(&[1, 2]));
    assert_eq!(g.take_kicks(), VcpuSet::empty());
    // Loaded on vCPU 2: disabling it kicks vCPU 2 only.
    let mut regs = lrs(4);
    g.fill_lrs(2, &mut regs);
    g.wr(0, ICENABLER + 4, 4, 1 << 1);
    assert_eq!(g.take_kicks(), set(&[2]));
    // GICD_CTLR changes concern everyone.
    g.wr(0, 0x0, 4, 0);
    assert_eq!(g.take_kicks(), set(&[0, 1, 2]));
    // SGIs kick their targets.
    g.wr(0, 0x0, 4, 0b01);
    g.take_kicks();
    g.wr(0, 0xf00, 4, 0x0100_0000);
    assert_eq!(g.take_kicks(), set(&[1, 2]));
}

// ---- adapters -----------------------------------------------------------------------

struct Current(Arc<AtomicUsize>);

impl CurrentVcpu for Current {
    fn current_vcpu(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

#[test]
fn mmio_adapters() {
    let g = Arc::new(vgic(GicModel::V2, 2, 32));
    let cur = Arc::new(AtomicUsize::new(1));
    let gicd = VirtualGicd::new(g.clone(), Current(cur.clone()));
    assert_eq!(gicd.name(), "gicd");
    assert_eq!(gicd.read(ITARGETSR, 1), Ok(0x02));
    gicd.write(ISENABLER, 4, 1 << 20).unwrap();
    cur.store(0, Ordering::Relaxed);
    assert_eq!(gicd.read(ITARGETSR, 1), Ok(0x01));
    assert_eq!(gicd.read(ISENABLER, 4), Ok(0xffff));
    assert_eq!(g.rd(1, ISENABLER, 4), 0xffff | 1 << 20);
    cur.store(5, Ordering::Relaxed);
    assert_eq!(
        gicd.read(0, 4),
        BAD,
        "an unknown vCPU is refused, not trusted"
    );

    let g = Arc::new(vgic(GicModel::V3, 2, 32));
    let gicr = VirtualGicr::new(g.clone()).unwrap();
    assert_eq!(gicr.name(), "gicr");
    assert_eq!(
        gicr.read(rd_base(1) + 0x8, 8),
        Ok(1 << 32 | 1 << 8 | 1 << 4)
    );
    gicr.write(rd_base(1) + 0x14, 4, 0).unwrap();
    assert_eq!(g.rr(rd_base(1) + 0x14, 4), 0);
}

// ---- robustness -----------------------------------------------------------------------

use crate::test_rng::Rng;

#[test]
fn no_guest_input_panics() {
    let mut rng = Rng::new(0x5eed);
    for (model, vcpus) in [(GicModel::V2, 8), (GicModel::V3, 3), (GicModel::V3, 17)] {
        let g = vgic(model, vcpus, 64);
        for i in 0..60_000u64 {
            let r = rng.next();
            let size = [1u8, 2, 4, 8, 3, 0][(r % 6) as usize];
            // Mostly real registers, sometimes anywhere at all.
            let offset = if r & 0x100 != 0 {
                (r >> 12) & 0xfffc
            } else {
                rng.next()
            };
            let value = rng.next();
            let vcpu = (r >> 40) as usize % (vcpus + 1);
            let _ = g.gicd_write(vcpu, offset, size, value);
            let _ = g.gicd_read(vcpu, offset, size);
            let gicr_off = (r >> 8) % (GICR_STRIDE * (vcpus as u64 + 1));
            let _ = g.gicr_write(gicr_off, size, value);
            let _ = g.gicr_read(gicr_off, size);
            let _ = g.write_icc_sgir(vcpu, value, SgiRegister::Sgi1r);
            let _ = g.set_level((value % 128) as u32, vcpu, r & 1 != 0);
            let _ = g.raise_edge((value >> 7) as u32 % 130, vcpu);
            if i % 7 == 0 {
                // The guest returns whatever registers it likes.
                let mut regs: Vec<_> = (0..4)
                    .map(|_| ListRegister::decode_v3(rng.next()))
                    .collect();
                g.fold_lrs(vcpu, &regs);
                let fill = g.fill_lrs(vcpu, &mut regs);
                assert!(fill.used <= 4);
                let mut ids: Vec<_> = valid(&regs).iter().map(|v| v.0).collect();
                let n = ids.len();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), n, "one register per INTID");
                for lr in &mut regs {
                    lr.state = LrState::from_bits(rng.next());
                }
                g.fold_lrs(vcpu, &regs);
                let _ = g.next_pending(vcpu).count();
                let _ = g.take_kicks();
            }
        }
    }
}

#[test]
fn a_spi_is_never_in_two_vcpus_registers() {
    // Random traffic across vCPUs; at every fill, no SPI is held by two vCPUs at once.
    let mut rng = Rng::new(42);
    let g = vgic(GicModel::V3, 3, 32);
    g.wr(0, 0x0, 4, 0b11);
    g.wr(0, ISENABLER + 4, 4, 0xffff_ffff);
    for intid in 32..64u64 {
        g.wr(0, 0x6000 + 8 * intid, 8, 1 << 31);
    }
    let mut held: Vec<Vec<ListRegister>> = vec![lrs(4); 3];
    for _ in 0..5_000 {
        let r = rng.next();
        let v = (r % 3) as usize;
        let _ = g.raise_edge(32 + (r >> 8) as u32 % 32, 0);
        let _ = g.set_level(32 + (r >> 16) as u32 % 32, 0, r & 1 << 30 != 0);
        for lr in held[v].iter_mut() {
            match (r >> 20) % 3 {
                0 if lr.state.is_pending() && !lr.state.is_active() => ack(lr),
                1 if lr.state.is_active() => eoi(lr),
                _ => {}
            }
        }
        g.fold_lrs(v, &held[v]);
        g.fill_lrs(v, &mut held[v]);
        let mut all: Vec<u32> = held.iter().flat_map(|h| valid(h)).map(|x| x.0).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "{held:?}");
    }
}

// ---- the list-register round trip as the integrator drives it -------------------------

/// List registers that count how often each one is read and written, standing in for the
/// hardware's behind [`ListRegisters`].
struct Counted {
    regs: Vec<ListRegister>,
    reads: Vec<core::cell::Cell<usize>>,
    writes: Vec<usize>,
}

impl Counted {
    fn new(n: usize) -> Self {
        Counted {
            regs: lrs(n),
            reads: vec![Default::default(); n],
            writes: vec![0; n],
        }
    }

    /// (reads, writes) per register since the last call.
    fn touched(&mut self) -> (Vec<usize>, Vec<usize>) {
        let reads = self.reads.iter().map(|c| c.take()).collect();
        (
            reads,
            core::mem::replace(&mut self.writes, vec![0; self.regs.len()]),
        )
    }
}

impl ListRegisters for Counted {
    fn count(&self) -> usize {
        self.regs.len()
    }

    fn read(&self, i: usize) -> Option<ListRegister> {
        let lr = self.regs.get(i).copied()?;
        self.reads[i].set(self.reads[i].get() + 1);
        Some(lr)
    }

    fn write(&mut self, i: usize, lr: ListRegister) {
        if let Some(slot) = self.regs.get_mut(i) {
            *slot = lr;
            self.writes[i] += 1;
        }
    }
}

#[test]
fn sync_touches_only_the_registers_in_use() {
    let g = v3_vm(1);
    g.map_hw(27, 0, Some(27)).unwrap();
    g.rw(sgi_base(0) + 0x100, 4, 1 << 27);
    let mut hw = Counted::new(4);
    // Nothing loaded, nothing pending: no register is read or written.
    assert_eq!(g.sync_lrs(0, &mut hw), LrFill::default());
    assert_eq!(hw.touched(), (vec![0; 4], vec![0; 4]));
    // The timer fires: one register written.
    g.set_level(27, 0, true).unwrap();
    assert_eq!(g.sync_lrs(0, &mut hw).used, 1);
    assert_eq!(hw.touched(), (vec![0; 4], vec![1, 0, 0, 0]));
    assert_eq!(valid(&hw.regs), [(27, LrState::Pending)]);
    // The guest takes it and deactivates it; the hardware deactivates the physical one, which
    // fires again: only that register is read and rewritten.
    ack(&mut hw.regs[0]);
    eoi(&mut hw.regs[0]);
    g.set_level(27, 0, false).unwrap();
    g.set_level(27, 0, true).unwrap();
    assert_eq!(g.sync_lrs(0, &mut hw).used, 1);
    assert_eq!(hw.touched(), (vec![1, 0, 0, 0], vec![1, 0, 0, 0]));
    assert_eq!(valid(&hw.regs), [(27, LrState::Pending)]);
    // Three SPIs and the timer; then all handled: the registers in use are emptied once, and
    // the fourth, never used, is never touched.
    for intid in [40, 41, 42] {
        enable_v3_spi(&g, intid, 0x80, 0);
        g.raise_edge(intid, 0).unwrap();
    }
    assert_eq!(g.sync_lrs(0, &mut hw).used, 4);
    assert_eq!(hw.touched(), (vec![1, 0, 0, 0], vec![1, 1, 1, 1]));
    for lr in &mut hw.regs {
        ack(lr);
        eoi(lr);
    }
    g.set_level(27, 0, false).unwrap();
    assert_eq!(g.sync_lrs(0, &mut hw).used, 0);
    assert_eq!(hw.touched(), (vec![1; 4], vec![1; 4]));
    assert!(valid(&hw.regs).is_empty());
    g.raise_edge(40, 0).unwrap();
    g.sync_lrs(0, &mut hw);
    assert_eq!(hw.touched(), (vec![0; 4], vec![1, 0, 0, 0]));
    // More registers than the vGIC fills: the rest are neither read nor written.
    let mut wide = Counted::new(MAX_LRS + 4);
    g.fold_lrs(0, &hw.regs);
    g.sync_lrs(0, &mut wide);
    assert_eq!(wide.touched().1.iter().sum::<usize>(), 1);
}

/// What a fill of `n` registers should load for `vcpu` (INTID and whether as active, in
/// register order), whether pending interrupts are left over and whether active ones are:
/// the definition, from a scan of every interrupt, for a vCPU whose registers are folded.
fn expected_fill(s: &irq_state::State, vcpu: usize, n: usize) -> (Vec<(u32, bool)>, bool, bool) {
    let private = (0..32).filter_map(|intid| Some((intid, s.irq(vcpu, intid)?)));
    let shared = s
        .spis
        .iter()
        .enumerate()
        .map(|(i, irq)| (32 + i as u32, irq));
    let mut active: Vec<(u8, u32)> = private
        .filter(|(_, irq)| irq.active)
        .chain(shared.filter(|(_, irq)| {
            irq.active && irq.lr.is_none() && irq.active_on == Some(vcpu as u16)
        }))
        .map(|(intid, irq)| (irq.priority, intid))
        .collect();
    active.sort_unstable();
    let active_overflow = active.len() > n;
    active.truncate(n);
    let pending = s.pending_by_scan(vcpu);
    let free = n - active.len();
    let loads = active
        .iter()
        .map(|&(_, intid)| (intid, true))
        .chain(pending.iter().take(free).map(|p| (p.intid, false)))
        .collect();
    (loads, pending.len() > free, active_overflow)
}

#[test]
fn fills_agree_with_a_full_scan() {
    // Random guest and device traffic on every register that affects delivery; before each
    // sync the expected choice is computed the slow way, and (through `Vgic`'s own checks) the
    // delivery index is compared with a scan after every operation.
    let mut rng = Rng::new(7);
    for (model, vcpus, n) in [
        (GicModel::V2, 3, 4),
        (GicModel::V3, 3, 4),
        (GicModel::V3, 2, 2),
    ] {
        let g = vgic(model, vcpus, 96);
        let mut held: Vec<Vec<ListRegister>> = vec![lrs(n); vcpus];
        let v3 = model == GicModel::V3;
        for step in 0..20_000 {
            let r = rng.next();
            let v = (r % vcpus as u64) as usize;
            let intid = (rng.next() % 128) as u32;
            let bits = rng.next() & rng.next();
            let word = u64::from(intid / 32) * 4;
            // A private word of a GICv3 VM lives in the redistributor of vCPU `v`.
            let bank_word = |g: &Vgic, base: u64, value: u64| match (v3, word) {
                (true, 0) => g.rw(sgi_base(v) + base, 4, value),
                _ => g.wr(v, base + word, 4, value),
            };
            match (r >> 8) % 16 {
                0 => {
                    let _ = g.raise_edge(intid, v);
                }
                1 | 2 => {
                    let _ = g.set_level(intid, v, r & 1 << 40 != 0);
                }
                3 => bank_word(&g, ISENABLER, bits),
                4 => bank_word(&g, ICENABLER, bits & rng.next()),
                5 => bank_word(&g, ISPENDR, bits),
                6 => bank_word(&g, ICPENDR, bits),
                7 => bank_word(&g, ISACTIVER, bits & rng.next()),
                8 => bank_word(&g, ICACTIVER, bits),
                9 if v3 && intid < 32 => g.rw(sgi_base(v) + 0x400 + u64::from(intid), 1, r >> 50),
                9 => g.wr(v, IPRIORITYR + u64::from(intid), 1, r >> 50),
                10 if v3 => g.wr(v, 0x6000 + 8 * u64::from(intid), 8, bits & (1 << 31 | 3)),
                10 => g.wr(v, ITARGETSR + u64::from(intid), 1, bits),
                11 if step % 50 == 0 => g.wr(v, 0x0, 4, r >> 20),
                12 if v3 => {
                    let _ = g.write_icc_sgir(v, bits & (1 << 40 | 0xf << 24 | 0xffff), {
                        if r & 1 << 41 != 0 {
                            SgiRegister::Sgi1r
                        } else {
                            SgiRegister::Sgi0r
                        }
                    });
                }
                12 => g.wr(v, 0xf00, 4, bits & 0x03ff_000f),
                13 if v3 => g.rw(sgi_base(v) + IGROUPR, 4, bits),
                13 => g.wr(v, IGROUPR + word, 4, bits),
                14 => g.wr(v, ICFGR + 8 + u64::from(intid % 64 / 16) * 4, 4, bits),
                _ => {
                    // vCPU `v` ran: the guest acknowledged or deactivated some interrupts.
                    for lr in held[v].iter_mut() {
                        match rng.next() % 3 {
                            0 if lr.state.is_pending() && !lr.state.is_active() => ack(lr),
                            1 if lr.state.is_active() => eoi(lr),
                            _ => {}
                        }
                    }
                    let mut folded = g.state.lock().clone();
                    folded.fold_lrs(v, &held[v][..]);
                    let expected = expected_fill(&folded, v, n);
                    let fill = g.sync_lrs(v, &mut held[v][..]);
                    let loaded: Vec<(u32, bool)> = held[v][..fill.used]
                        .iter()
                        .map(|l| (l.vintid, l.state.is_active()))
                        .collect();
                    assert_eq!(
                        (loaded, fill.more_pending, fill.active_overflow),
                        expected,
                        "step {step}: {:?}",
                        held[v]
                    );
                    assert!(valid(&held[v][fill.used..]).is_empty());
                }
            }
        }
    }
}

#[test]
fn the_reset_index_is_what_a_scan_computes() {
    // State::new builds the index without scanning; every shape of VM must agree.
    for model in [GicModel::V2, GicModel::V3] {
        for nr_vcpus in [1, 2, 3, 4, 8] {
            for nr_spis in [0, 32, 64, 96, 128, 960] {
                let Ok(cfg) = VgicConfig::new(model, nr_vcpus, nr_spis) else {
                    continue;
                };
                State::new(cfg).check_invariants();
            }
        }
    }
}

#[test]
fn windows_say_which_reads_need_the_list_registers() {
    let v3 = Arc::new(vgic(GicModel::V3, 2, 32));
    let gicd = VirtualGicd::new(v3.clone(), Current(Arc::new(AtomicUsize::new(0))));
    for (offset, what) in [
        (0x200, "ISPENDR0"),
        (0x2fc, "ICPENDR31"),
        (0x3fc, "ICACTIVER31"),
    ] {
        assert!(gicd.reads_list_register_state(offset), "GICD {what}");
    }
    for (offset, what) in [
        (0x0, "CTLR"),
        (0x4, "TYPER"),
        (0x100, "ISENABLER0"),
        (0x400, "IPRIORITYR0"),
    ] {
        assert!(!gicd.reads_list_register_state(offset), "GICD {what}");
    }
    let gicr = VirtualGicr::new(v3).unwrap();
    assert!(gicr.reads_list_register_state(0x1_0300), "GICR0 ISACTIVER0");
    assert!(
        gicr.reads_list_register_state(GICR_STRIDE + 0x1_0200),
        "GICR1 ISPENDR0"
    );
    assert!(
        !gicr.reads_list_register_state(0x0_0200),
        "RD_base, not SGI_base"
    );
    assert!(
        !gicr.reads_list_register_state(0x1_0100),
        "GICR0 ISENABLER0"
    );
}
