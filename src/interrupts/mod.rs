//! Physical interrupts: the host GIC as Veil uses it, and what an interrupt exit does.
//!
//! HCR_EL2.IMO/FMO route every physical IRQ and FIQ to EL2. Veil itself runs with interrupts
//! masked; it sees an interrupt either as a guest exit or, when idle, by polling after WFE.
//! Veil uses software-generated interrupts between its own CPUs:
//! - [`SGI_KICK`]: "look at your vCPU's state" (its VM ended, a CPU_ON request arrived).

#[cfg(target_arch = "aarch64")]
#[path = "_arch/aarch64/gic.rs"]
pub mod gic;
#[cfg(target_arch = "aarch64")]
#[path = "_arch/aarch64/vgic_hw.rs"]
pub mod vgic_hw;

pub mod routing;
pub mod vgic;

use crate::cpu::PerCpu;
use crate::vm::vcpu::Vcpu;

/// The SGI one CPU sends another to make it re-check its work.
pub const SGI_KICK: u32 = 1;
/// Every SGI Veil enables.
pub const SGI_ALL: [u32; 1] = [SGI_KICK];
/// The PPIs Veil enables on every CPU: the vGIC maintenance interrupt, the EL2 physical timer
/// (backing guests' emulated EL1 physical timers) and the EL1 virtual timer (the guest's own,
/// forwarded as a hardware-mapped virtual interrupt).
pub const MAINTENANCE_INTID: u32 = 25;
pub const HYP_TIMER_INTID: u32 = 26;
pub const VIRT_TIMER_INTID: u32 = 27;
pub const PPI_ALL: [u32; 3] = [MAINTENANCE_INTID, HYP_TIMER_INTID, VIRT_TIMER_INTID];

/// Which VM each passthrough SPI belongs to (VM index + 1; 0 = Veil's), by INTID.
static SPI_OWNER: [core::sync::atomic::AtomicUsize; 1020] =
    [const { core::sync::atomic::AtomicUsize::new(0) }; 1020];

/// The VM a physical SPI is passed through to, if any.
pub fn passthrough_owner(intid: u32) -> Option<usize> {
    let owner = SPI_OWNER
        .get(intid as usize)?
        .load(core::sync::atomic::Ordering::Acquire);
    owner.checked_sub(1)
}

/// Gives physical SPI `intid` to VM `vm`: enabled, routed to physical CPU `cpu`; each time it
/// fires it becomes the same INTID in the VM's vGIC, hardware-mapped.
pub fn pass_through_spi(intid: u32, vm: usize, cpu: usize) {
    if let Some(owner) = SPI_OWNER.get(intid as usize) {
        owner.store(vm + 1, core::sync::atomic::Ordering::Release);
        #[cfg(target_arch = "aarch64")]
        gic::enable_spi(intid, cpu);
        #[cfg(not(target_arch = "aarch64"))]
        let _ = cpu;
    }
}

/// Clears physical SPI `intid`'s active state (its VM restarts and will never deactivate it).
pub fn clear_spi_active(intid: u32) {
    #[cfg(target_arch = "aarch64")]
    gic::clear_spi_active(intid);
    #[cfg(not(target_arch = "aarch64"))]
    let _ = intid;
}

/// A passthrough SPI fired: pend it in its VM (vCPU 0's view; the vGIC routes it).
fn forward_passthrough(intid: u32, vm: usize) {
    if let Some(vm) = crate::vm::registry::get(vm) {
        if vm.state() == crate::vm::VmState::Running {
            if let Ok(kicks) = vm.irq.vgic.raise_edge(intid, 0) {
                vm.irq.deliver(kicks);
            }
            return;
        }
    }
    // Its VM has ended: nobody will deactivate it.
    #[cfg(target_arch = "aarch64")]
    gic::deactivate(intid);
}

/// Sets up the distributor (boot CPU, once).
pub fn init(platform: &crate::board::discovery::Platform, host_uart_intid: Option<u32>) {
    #[cfg(target_arch = "aarch64")]
    if let Some(info) = &platform.gic {
        if info.version == crate::board::discovery::GicVersion::V2 {
            gic::set_v2_gicd_base(info.distributor.base);
        }
        gic::init(info, platform.cpus.len(), host_uart_intid);
        vgic_hw::init(info.version, info.hyp_interface.map(|r| r.base));
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = (platform, host_uart_intid);
}

/// Sets up this CPU's interface.
pub fn init_this_cpu(index: usize) {
    #[cfg(target_arch = "aarch64")]
    gic::init_this_cpu(index);
    #[cfg(not(target_arch = "aarch64"))]
    let _ = index;
}

/// Makes CPU `cpu` (MPIDR `mpidr`) look at its work again.
pub fn kick(cpu: usize, mpidr: u64) {
    #[cfg(target_arch = "aarch64")]
    gic::send_sgi(SGI_KICK, cpu, mpidr);
    #[cfg(not(target_arch = "aarch64"))]
    let _ = (cpu, mpidr);
}

/// The virtual CPU interface's own state of a vCPU that is not loaded: its control register
/// (ICH_VMCR_EL2 / GICH_VMCR: the guest's priority mask, binary points, group enables), its
/// active priorities, and whether its hardware-mapped virtual timer interrupt was active.
/// List register contents are not kept here: they go back into the vGIC model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuGicState {
    pub vmcr: u64,
    pub apr0: u64,
    pub apr1: u64,
    pub vtimer_active: bool,
}

/// The loaded vCPU leaves this CPU: its list registers fold back into its vGIC, the interface
/// state is saved, and the physical timer PPI's active state (held for its hardware-mapped
/// virtual interrupt) is taken along and cleared for the next vCPU.
pub fn vcpu_leaves(vcpu: &mut Vcpu) {
    #[cfg(target_arch = "aarch64")]
    {
        let vgic = &vcpu.vm.irq.vgic;
        vgic.fold_lrs_from(
            vcpu.index,
            &vgic_hw::HwListRegisters::new(vgic.config().model),
        );
        for i in 0..vgic_hw::lr_count() {
            vgic_hw::write_lr(i, 0);
        }
        let (vmcr, apr0, apr1) = vgic_hw::save_interface();
        vcpu.gic = VcpuGicState {
            vmcr,
            apr0,
            apr1,
            vtimer_active: gic::ppi_active(VIRT_TIMER_INTID),
        };
        gic::set_ppi_active(VIRT_TIMER_INTID, false);
        vcpu.vm.irq.mark_dirty(vcpu.index);
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = vcpu;
}

/// A vCPU is loaded on this CPU: its interface state and timer PPI state come back, and its
/// list registers are filled from its vGIC. A vCPU starting afresh has all of it at reset.
pub fn vcpu_enters(vcpu: &mut Vcpu) {
    #[cfg(target_arch = "aarch64")]
    {
        for n in 0..vgic_hw::lr_count() {
            vgic_hw::write_lr(n, 0);
        }
        vgic_hw::restore_interface(vcpu.gic.vmcr, vcpu.gic.apr0, vcpu.gic.apr1);
        gic::set_ppi_active(VIRT_TIMER_INTID, vcpu.gic.vtimer_active);
        vcpu.vm.irq.mark_dirty(vcpu.index);
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = vcpu;
}

/// Brings this CPU's list registers and the vCPU's vGIC state together: what the guest did
/// with the loaded interrupts goes back into the model, then the most urgent pending ones go in.
/// Only the list registers in use are read and written.
pub fn sync_list_registers(vcpu: &mut Vcpu) {
    sync_list_registers_of(&vcpu.vm.irq.vgic, vcpu.index);
}

/// [`sync_list_registers`] for vCPU `vcpu` of the VM whose vGIC is `vgic`, which must be the
/// vCPU loaded on this CPU.
pub fn sync_list_registers_of(vgic: &vgic::Vgic, vcpu: usize) {
    #[cfg(target_arch = "aarch64")]
    {
        let fill = vgic.sync_lrs(
            vcpu,
            &mut vgic_hw::HwListRegisters::new(vgic.config().model),
        );
        // UIE: a maintenance interrupt once the list registers (nearly) drain, to load the
        // interrupts that did not fit.
        let hcr = vgic_hw::HCR_EN
            | if fill.more_pending {
                vgic_hw::HCR_UIE
            } else {
                0
            };
        vgic_hw::write_hcr(hcr);
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = (vgic, vcpu);
}

/// Takes every pending physical interrupt of this CPU and hands each to its owner: kicks need
/// nothing more (the caller then reschedules), the virtual timer becomes a virtual interrupt of
/// the vCPU loaded here, the EL2 timer serves the scheduler and emulated timers, host console
/// input goes to the first VM's UART.
pub fn handle_pending(this: &mut PerCpu) {
    #[cfg(target_arch = "aarch64")]
    while let Some(intid) = gic::acknowledge() {
        if intid >= 1020 {
            break;
        }
        // EOImode = 1: this write only drops the running priority; deactivation is separate, so
        // a hardware-mapped interrupt can stay active until the guest deactivates it.
        gic::end(intid);
        match intid {
            VIRT_TIMER_INTID => match this.vcpu() {
                Some(v) => {
                    // Left active: the guest's EOI of virtual INTID 27 deactivates it (HW bit).
                    if let Ok(kicks) = v.vm.irq.vgic.raise_edge(VIRT_TIMER_INTID, v.index) {
                        v.vm.irq.deliver(kicks);
                    }
                    v.vm.irq.mark_dirty(v.index);
                }
                None => {
                    // No vCPU loaded: the timer is stale. Silence it.
                    crate::timer::disable_virtual_timer();
                    gic::deactivate(intid);
                }
            },
            HYP_TIMER_INTID => {
                gic::deactivate(intid);
                this.hyp_timer_fired();
            }
            _ if intid >= 32 && passthrough_owner(intid).is_some() => {
                // Left active: the guest's EOI of the hardware-mapped INTID deactivates it.
                forward_passthrough(intid, passthrough_owner(intid).unwrap_or(0));
            }
            _ => {
                gic::deactivate(intid);
                if gic::is_host_uart(intid) {
                    crate::board::console::forward_input();
                } else if intid != SGI_KICK && intid != MAINTENANCE_INTID {
                    log::debug!("physical interrupt {intid} with no owner");
                }
            }
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = this;
}
