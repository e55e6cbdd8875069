//! Virtual machines: what one is made of, how it is built from a package entry, and its life.
//!
//! A [`Vm`] owns its RAM (a block of host frames), its stage-2 table, its devices and its
//! sanitized CPU description; its vCPUs ([`vcpu::Vcpu`]) are run by physical CPUs, each of which
//! knows only the vCPU it runs (`cpu::PerCpu`). There is no global "current VM". The list of all
//! VMs ([`registry`]) only answers "is anything still running?".

pub mod guest_dtb;
pub mod id_regs;
pub mod loader;
pub mod package;
pub mod passthrough_dt;
pub mod placement;
pub mod psci;
pub mod registry;
pub mod vcpu;
pub mod virtual_board;

use crate::devices::{
    MmioBus,
    pl011::{ConsoleSink, VirtualPl011},
    pl031::{CounterClock, VirtualPl031},
    read_cells::ReadCells,
    virtio_mmio::EmptyVirtioMmio,
};
use crate::interrupts::{
    routing::{IrqRouting, KickingGicWindow, RunningVcpu, VgicLine},
    vgic::{self, Vgic, VgicConfig, VirtualGicd, VirtualGicr},
};
use crate::memory::{
    self, frames,
    stage2::{self, Stage2Table},
};
use alloc::{boxed::Box, format, string::String, sync::Arc, vec::Vec};
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};
use id_regs::{GuestGic, IdRegs};
use spin::Mutex;

/// Most vCPUs one VM may have.
pub const MAX_VCPUS: usize = 8;
/// SPIs each VM's GIC has: INTIDs 32..128 cover every device of the virtual board.
pub const NR_SPIS: u32 = 96;
/// Room reserved in guest RAM for the DTB Veil writes for it.
pub const GUEST_DTB_MAX: u64 = 64 << 10;

/// One physically contiguous piece of a VM's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamChunk {
    pub ipa: u64,
    pub pa: u64,
    pub size: u64,
}

/// Where a VM's RAM is, seen from both sides: contiguous in guest physical space from the board's
/// RAM base, made of one or more host blocks (the frame allocator hands out naturally aligned
/// powers of two; stage 2 joins them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestRam {
    /// Guest physical base (always the virtual board's RAM base).
    pub ipa: u64,
    pub size: u64,
    /// In IPA order, adjacent in IPA space.
    pub chunks: Vec<RamChunk>,
}

impl GuestRam {
    /// Lays `blocks` (host base, size) out one after the other from `ipa`.
    pub fn from_blocks(ipa: u64, blocks: &[(u64, u64)]) -> Self {
        let mut next = ipa;
        let chunks: Vec<RamChunk> = blocks
            .iter()
            .map(|&(pa, size)| {
                let chunk = RamChunk {
                    ipa: next,
                    pa,
                    size,
                };
                next += size;
                chunk
            })
            .collect();
        GuestRam {
            ipa,
            size: next - ipa,
            chunks,
        }
    }

    /// The host physical address of `ipa`, if it is guest RAM.
    pub fn pa_of(&self, ipa: u64) -> Option<u64> {
        self.chunks
            .iter()
            .find(|c| ipa >= c.ipa && ipa - c.ipa < c.size)
            .map(|c| c.pa + (ipa - c.ipa))
    }

    /// The host ranges behind `[ipa, ipa + len)`, in order; `None` if any byte is not RAM.
    pub fn host_ranges(&self, ipa: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        let mut cursor = ipa;
        let end = ipa.checked_add(len)?;
        while cursor < end {
            let chunk = self
                .chunks
                .iter()
                .find(|c| cursor >= c.ipa && cursor - c.ipa < c.size)?;
            let take = (chunk.ipa + chunk.size).min(end) - cursor;
            out.push((chunk.pa + (cursor - chunk.ipa), take));
            cursor += take;
        }
        Some(out)
    }
}

/// A VM's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VmState {
    Running = 0,
    /// The guest asked to be turned off (PSCI SYSTEM_OFF).
    PoweredOff = 1,
    /// Veil stopped it after an error it could not answer architecturally.
    Stopped = 2,
    /// The guest asked for a reset (PSCI SYSTEM_RESET): its vCPUs are being turned off; the
    /// last CPU to let go of one restarts the VM.
    Resetting = 3,
    /// Being restarted: RAM reloaded, devices and vGIC reset (see [`Vm::finish_reset`]).
    Restarting = 4,
}

/// Facts about the host every VM is built from, gathered once at boot.
pub struct HostInfo {
    /// The host's raw ID register space (see `id_regs`).
    pub id_regs: [u64; id_regs::ID_REG_COUNT],
    /// The host GIC's version, the default for guests.
    pub gic: GuestGic,
    /// Whether more than one VM shares the console (prefix their lines).
    pub shared_console: bool,
    /// Wall-clock time (seconds since the Unix epoch) when the system counter read `.0`.
    pub wall_clock: (u64, u64),
    /// GICv2: the host's virtual CPU interface (GICV), mapped into each guest at its GICC.
    pub gicv: Option<crate::board::discovery::Region>,
    /// Host RAM: never passed through to a guest as a device.
    pub ram: Vec<crate::board::discovery::Region>,
    /// Host devices Veil drives itself (console, GIC windows): never passed through.
    pub own_devices: Vec<crate::board::discovery::Region>,
    /// Host SPIs Veil keeps (the console's input).
    pub own_spis: Vec<u32>,
    /// The host's DTB, where passed-through devices are described.
    pub dtb: &'static [u8],
}

/// One virtual machine.
pub struct Vm {
    pub id: usize,
    pub name: String,
    pub vmid: u8,
    pub ram: GuestRam,
    pub stage2: Mutex<Stage2Table>,
    /// VTTBR_EL2 while this VM runs.
    pub vttbr: u64,
    pub mmio: MmioBus,
    /// The device registers the exception vectors answer 32-bit reads of by themselves.
    pub read_cells: ReadCells,
    /// The VM's UART, also reachable from the host console's input.
    pub uart: Arc<VirtualPl011<VmConsole>>,
    /// The VM's interrupt controller and the delivery of its interrupts.
    pub irq: Arc<IrqRouting>,
    pub id_regs: IdRegs,
    pub gic: GuestGic,
    pub vcpu_count: usize,
    /// What guest RAM holds at power-on, for loading it again at a reset.
    boot_image: BootImage,
    /// Host SPIs passed through to this VM.
    passthrough_spis: Vec<u32>,
    /// Each vCPU's PSCI power state and pending start.
    pub vcpu_power: Vec<psci::VcpuPower>,
    /// The physical CPU each vCPU is pinned to.
    pub placement: Vec<usize>,
    /// CNTVOFF_EL2: the physical count when the VM was created, so its virtual counter starts
    /// near zero.
    pub counter_offset: u64,
    state: AtomicU8,
}

/// What a VM's RAM holds at power-on: the loader's plan (image segments), the initrd and the
/// guest DTB. The image and initrd are borrowed from the VM package, which stays in memory.
struct BootImage {
    plan: loader::LoadPlan<'static>,
    initrd: Option<&'static [u8]>,
    dtb: Vec<u8>,
}

impl BootImage {
    /// Copies it into `ram` (the plan guarantees every range lies inside) and makes the
    /// instruction side see it.
    fn load(&self, ram: &GuestRam) {
        for segment in &self.plan.segments {
            copy_to_guest(ram, segment.ipa, segment.data);
            zero_guest(
                ram,
                segment.ipa + segment.data.len() as u64,
                segment.zero_fill,
            );
        }
        if let (Some(ipa), Some(data)) = (self.plan.initrd_ipa, self.initrd) {
            copy_to_guest(ram, ipa, data);
        }
        copy_to_guest(ram, self.plan.dtb_ipa, &self.dtb);
        memory::cache::invalidate_icache_all();
    }

    /// The boot vCPU's start: the kernel's entry, with the DTB's address in x0 (the Linux boot
    /// protocol).
    fn start(&self) -> psci::StartRequest {
        psci::StartRequest {
            entry: self.plan.entry,
            context_id: self.plan.dtb_ipa,
        }
    }
}

/// Hardware-mapped interrupts: the virtual timer of each vCPU (the guest's deactivation
/// deactivates the physical PPI with no exit) and the passed-through SPIs (its EOI deactivates
/// the physical SPI).
fn map_hardware_interrupts(vgic: &Vgic, vcpu_count: usize, spis: &[u32]) {
    for v in 0..vcpu_count {
        vgic.map_hw(
            virtual_board::VIRT_TIMER_INTID,
            v,
            Some(virtual_board::VIRT_TIMER_INTID),
        )
        .expect("the virtual timer PPI exists");
    }
    for &intid in spis {
        vgic.map_hw(intid, 0, Some(intid))
            .expect("SPI range checked at creation");
    }
}

/// The table of registers the vectors answer (`devices::read_cells`): the UART's flags, the
/// distributor's control, type and implementer registers, each redistributor's control. A
/// register whose slot is taken is left to its device, and said so.
fn publish_registers(uart: &VirtualPl011<VmConsole>, vgic: &Vgic) -> ReadCells {
    let mut cells = ReadCells::new();
    let uart_registers = uart
        .published()
        .map(|(offset, cell)| (virtual_board::PL011_BASE + offset, cell));
    let gic_registers = vgic.published().map(|(window, offset, cell)| {
        let base = match window {
            vgic::Window::Distributor => virtual_board::GICD_BASE,
            vgic::Window::Redistributors => virtual_board::GICR_BASE,
        };
        (base + offset, cell)
    });
    for (ipa, cell) in uart_registers.chain(gic_registers) {
        if let Err(why) = cells.publish(ipa, cell) {
            log::debug!("register at {ipa:#x} not answered by the vectors: {why:?}");
        }
    }
    cells
}

/// Why a VM could not be built. Each names what to fix.
#[derive(Debug)]
pub enum VmError {
    TooManyVcpus {
        cpus: u32,
    },
    MemorySize {
        size: u64,
    },
    OutOfMemory {
        size: u64,
    },
    Load(loader::LoadError),
    Dtb(guest_dtb::GuestDtbError),
    DtbTooLarge {
        size: usize,
    },
    Stage2(aarch64_paging::MapError),
    GicMismatch {
        asked: u32,
    },
    Vgic(vgic::ConfigError),
    Passthrough {
        base: u64,
        size: u64,
        why: &'static str,
    },
    PassthroughSpi {
        intid: u32,
        why: &'static str,
    },
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            VmError::TooManyVcpus { cpus } => {
                write!(f, "{cpus} vCPUs asked, at most {MAX_VCPUS} supported")
            }
            VmError::MemorySize { size } => {
                write!(
                    f,
                    "memory-size {size:#x} must be a non-zero multiple of 2 MiB"
                )
            }
            VmError::OutOfMemory { size } => write!(
                f,
                "not enough free host memory for {} MiB of guest RAM: give the machine more memory or the VM less",
                size >> 20
            ),
            VmError::Load(e) => write!(f, "cannot load the kernel: {e}"),
            VmError::Dtb(e) => write!(f, "cannot build the guest DTB: {e:?}"),
            VmError::DtbTooLarge { size } => {
                write!(f, "guest DTB of {size} bytes exceeds {GUEST_DTB_MAX}")
            }
            VmError::Stage2(e) => write!(f, "cannot map guest RAM: {e:?}"),
            VmError::GicMismatch { asked } => write!(
                f,
                "gic-version {asked} differs from the host's GIC; Veil gives guests the host's GIC version"
            ),
            VmError::Vgic(e) => write!(f, "cannot model its GIC: {e:?}"),
            VmError::Passthrough { base, size, why } => {
                write!(f, "passthrough-mmio {base:#x}+{size:#x} refused: {why}")
            }
            VmError::PassthroughSpi { intid, why } => {
                write!(f, "passthrough-spis {intid} refused: {why}")
            }
        }
    }
}

/// A VM's console output: to the host console, prefixed with the VM's name when shared.
pub struct VmConsole {
    prefix: String,
}

impl ConsoleSink for VmConsole {
    fn write(&self, bytes: &[u8]) {
        crate::board::console::write_bytes(&self.prefix, bytes);
    }
}

impl Vm {
    /// Builds VM number `id` from its package entry: allocates and fills its RAM, maps it, and
    /// sets up its devices. On error nothing stays allocated.
    pub fn create(
        id: usize,
        spec: &package::VmSpec<'static>,
        host: &HostInfo,
        placement: Vec<usize>,
    ) -> Result<Arc<Vm>, VmError> {
        if spec.cpus == 0 || spec.cpus as usize > MAX_VCPUS {
            return Err(VmError::TooManyVcpus { cpus: spec.cpus });
        }
        let size = spec.memory_size;
        if size == 0 || size % memory::BLOCK_2M != 0 {
            return Err(VmError::MemorySize { size });
        }
        // The guest's CPU interface is the hardware's virtual one, so its GIC version is the
        // host's.
        let gic = match spec.gic_version {
            None => host.gic,
            Some(2) if host.gic == GuestGic::V2 => GuestGic::V2,
            Some(3) if host.gic == GuestGic::V3 => GuestGic::V3,
            Some(asked) => return Err(VmError::GicMismatch { asked }),
        };
        let vgic_model = if gic == GuestGic::V2 {
            vgic::GicModel::V2
        } else {
            vgic::GicModel::V3
        };
        let vgic_config =
            VgicConfig::new(vgic_model, spec.cpus as usize, NR_SPIS).map_err(VmError::Vgic)?;
        let vcpu_count = spec.cpus as usize;

        let plan = loader::plan(
            spec.kernel,
            spec.initrd.map(|i| i.len() as u64),
            GUEST_DTB_MAX,
            virtual_board::RAM_BASE,
            size,
        )
        .map_err(VmError::Load)?;

        let mpidrs: Vec<u64> = (0..vcpu_count).map(vcpu::mpidr_for).collect();
        let initrd_range = match (plan.initrd_ipa, spec.initrd) {
            (Some(start), Some(data)) => Some((start, start + data.len() as u64)),
            _ => None,
        };
        // Passed-through devices are described as the host's DTB describes them (windows that
        // turn out to be refused below end the VM's creation anyway).
        let windows: Vec<(u64, u64)> = spec.passthrough_regions().collect();
        let passed_spis: Vec<u32> = spec.passthrough_intids().collect();
        let passed_devices = passthrough_dt::find(host.dtb, &windows, &passed_spis);
        let dtb = guest_dtb::build(&guest_dtb::GuestDtbConfig {
            ram_size: size,
            vcpu_mpidrs: &mpidrs,
            gic: match gic {
                GuestGic::V2 => guest_dtb::GicModel::V2,
                GuestGic::V3 => guest_dtb::GicModel::V3,
            },
            bootargs: spec.bootargs,
            initrd: initrd_range,
            passthrough_windows: &windows,
            passthrough_devices: &passed_devices,
        })
        .map_err(VmError::Dtb)?;
        if dtb.len() as u64 > GUEST_DTB_MAX {
            return Err(VmError::DtbTooLarge { size: dtb.len() });
        }

        let blocks =
            frames::alloc_blocks(size, memory::BLOCK_2M).ok_or(VmError::OutOfMemory { size })?;
        let ram = GuestRam::from_blocks(virtual_board::RAM_BASE, &blocks);

        let mut table = Stage2Table::new();
        for chunk in &ram.chunks {
            if let Err(e) = table.map(chunk.ipa, chunk.pa, chunk.size, stage2::RAM) {
                for &(pa, size) in &blocks {
                    frames::free_contiguous(pa, size);
                }
                return Err(VmError::Stage2(e));
            }
        }

        // GICv2: the guest's CPU interface is the host's GICV, at the board's GICC address.
        if let (GuestGic::V2, Some(gicv)) = (gic, host.gicv) {
            let size = gicv.size.min(virtual_board::GICC_SIZE).min(0x2000);
            if let Err(e) = table.map(virtual_board::GICC_BASE, gicv.base, size, stage2::DEVICE) {
                for &(pa, size) in &blocks {
                    frames::free_contiguous(pa, size);
                }
                return Err(VmError::Stage2(e));
            }
        }

        // Passthrough device windows, at the same address in the guest as in the host.
        let mut passthrough: Vec<(u64, u64)> = Vec::new();
        for (base, size) in spec.passthrough_regions() {
            if let Err(why) = check_passthrough(base, size, &ram, host) {
                for &(pa, size) in &blocks {
                    frames::free_contiguous(pa, size);
                }
                return Err(VmError::Passthrough { base, size, why });
            }
            if let Err(e) = table.map(base, base, size, stage2::DEVICE) {
                for &(pa, size) in &blocks {
                    frames::free_contiguous(pa, size);
                }
                return Err(VmError::Stage2(e));
            }
            passthrough.push((base, size));
        }
        let spis: Vec<u32> = spec.passthrough_intids().collect();
        for &intid in &spis {
            let why = if intid < 32 || intid >= 32 + NR_SPIS {
                Some("not an SPI of the guest's GIC (INTIDs 32..128)")
            } else if host.own_spis.contains(&intid) {
                Some("Veil's own (the console)")
            } else if crate::interrupts::passthrough_owner(intid).is_some() {
                Some("already another VM's")
            } else {
                None
            };
            if let Some(why) = why {
                for &(pa, size) in &blocks {
                    frames::free_contiguous(pa, size);
                }
                return Err(VmError::PassthroughSpi { intid, why });
            }
        }

        // Fill guest RAM. The plan guarantees every range lies inside it.
        let boot_image = BootImage {
            plan,
            initrd: spec.initrd,
            dtb,
        };
        boot_image.load(&ram);

        let vgic = Arc::new(Vgic::new(vgic_config));
        map_hardware_interrupts(&vgic, vcpu_count, &spis);
        let irq = Arc::new(IrqRouting::new(vgic.clone(), placement.clone()));

        let line_buffered = host.shared_console;
        let prefix = if host.shared_console {
            format!("[{}] ", spec.name)
        } else {
            String::new()
        };
        let mut mmio = MmioBus::with_index(
            virtual_board::DEVICE_WINDOW_BASE,
            virtual_board::DEVICE_WINDOW_SIZE,
        );
        let uart_line = VgicLine {
            routing: irq.clone(),
            intid: virtual_board::spi_intid(virtual_board::PL011_SPI),
        };
        let uart = VirtualPl011::with_irq(
            VmConsole { prefix },
            line_buffered,
            Some(Box::new(uart_line)),
        );
        // The host console's input goes to one VM at a time (board::input_switch); more may wait
        // once that VM's guest drained some.
        let uart = uart.on_rx_drained(Box::new(crate::board::console::forward_input));
        let uart = Arc::new(uart);
        mmio.add(
            virtual_board::PL011_BASE,
            virtual_board::PL011_SIZE,
            Box::new(uart.clone()),
        )
        .expect("an empty bus has no overlaps");
        let gicd = KickingGicWindow {
            window: VirtualGicd::new(vgic.clone(), RunningVcpu),
            routing: irq.clone(),
        };
        mmio.add(virtual_board::GICD_BASE, vgic::GICD_WINDOW, Box::new(gicd))
            .expect("the virtual board's devices do not overlap");
        if let Some(gicr) = VirtualGicr::new(vgic.clone()) {
            let size = virtual_board::gicr_size(vcpu_count).expect("vCPU count checked above");
            let gicr = KickingGicWindow {
                window: gicr,
                routing: irq.clone(),
            };
            mmio.add(virtual_board::GICR_BASE, size, Box::new(gicr))
                .expect("the virtual board's devices do not overlap");
        }
        // The guest's RTC counts from the host's wall clock; its own writes shift only its view.
        // A passed-through device takes the place of the emulated one at its address.
        let passed = |base: u64, size: u64| {
            passthrough
                .iter()
                .any(|&(b, s)| base < b + s && b < base + size)
        };
        let (base_count, base_seconds) = host.wall_clock;
        let clock = CounterClock::new(
            crate::timer::physical_count,
            crate::timer::frequency(),
            base_count,
            base_seconds,
        );
        if !passed(virtual_board::PL031_BASE, virtual_board::PL031_SIZE) {
            mmio.add(
                virtual_board::PL031_BASE,
                virtual_board::PL031_SIZE,
                Box::new(VirtualPl031::new(clock)),
            )
            .expect("the virtual board's devices do not overlap");
        }
        // Guests probe every virtio-mmio slot of the board; with no device there they must read
        // "no device" (DeviceID 0), not fault. One model answers for all slots.
        let virtio_size =
            virtual_board::VIRTIO_MMIO_SLOT_SIZE * virtual_board::VIRTIO_MMIO_SLOTS as u64;
        if !passed(virtual_board::VIRTIO_MMIO_BASE, virtio_size) {
            mmio.add(
                virtual_board::VIRTIO_MMIO_BASE,
                virtio_size,
                Box::new(EmptyVirtioMmio::new()),
            )
            .expect("the virtual board's devices do not overlap");
        }
        let read_cells = publish_registers(&uart, &vgic);
        let vmid = (id + 1) as u8;
        // The boot vCPU starts at the kernel's entry with the DTB in x0 (the Linux boot
        // protocol); the others wait for the guest's PSCI CPU_ON.
        let vcpu_power: Vec<psci::VcpuPower> =
            (0..vcpu_count).map(|_| psci::VcpuPower::off()).collect();
        vcpu_power[0]
            .request_on(boot_image.start())
            .expect("a new vCPU is off");
        let vm = Arc::new(Vm {
            id,
            name: String::from(spec.name),
            vmid,
            ram,
            vttbr: stage2::vttbr(table.root(), vmid),
            stage2: Mutex::new(table),
            mmio,
            read_cells,
            uart,
            irq,
            id_regs: IdRegs::sanitize(&host.id_regs, gic, stage2::GUEST_PA_RANGE),
            gic,
            vcpu_count,
            boot_image,
            passthrough_spis: spis.clone(),
            vcpu_power,
            placement,
            counter_offset: crate::timer::physical_count(),
            state: AtomicU8::new(VmState::Running as u8),
        });
        // The physical SPIs go to the CPU of the vCPU the guest's GIC targets at reset (vCPU 0).
        for &intid in &spis {
            crate::interrupts::pass_through_spi(intid, id, vm.placement[0]);
        }
        Ok(vm)
    }

    pub fn state(&self) -> VmState {
        match self.state.load(Ordering::Acquire) {
            0 => VmState::Running,
            1 => VmState::PoweredOff,
            3 => VmState::Resetting,
            4 => VmState::Restarting,
            _ => VmState::Stopped,
        }
    }

    /// The guest turned itself off.
    pub fn power_off(&self) {
        if self
            .state
            .compare_exchange(
                0,
                VmState::PoweredOff as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            log::info!("VM {} \"{}\" powered off", self.id, self.name);
            self.kick_all_vcpus();
        }
    }

    /// The guest asked for a (warm) reset: every vCPU is turned off, then the VM starts again
    /// as at power-on, its RAM reloaded with its image, initrd and DTB (the rest of RAM keeps
    /// its contents, as a warm reset leaves memory), its devices and vGIC at reset, vCPU 0 at
    /// the entry point. `by` is the vCPU that asked.
    pub fn reset(&self, by: usize) {
        if self
            .state
            .compare_exchange(
                VmState::Running as u8,
                VmState::Resetting as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            log::info!(
                "VM {} \"{}\" reset by vCPU {by} (PSCI SYSTEM_RESET): restarting",
                self.id,
                self.name
            );
            self.kick_all_vcpus();
        }
    }

    /// Called whenever a CPU lets go of one of this VM's vCPUs: once a reset has turned every
    /// vCPU off (pending CPU_ONs are cancelled), restarts the VM. Exactly one caller does it.
    pub fn finish_reset(&self) {
        if self.state() != VmState::Resetting {
            return;
        }
        for power in &self.vcpu_power {
            power.cancel_pending();
        }
        if self
            .vcpu_power
            .iter()
            .any(|p| p.state() != psci::PowerState::Off)
        {
            return;
        }
        if self
            .state
            .compare_exchange(
                VmState::Resetting as u8,
                VmState::Restarting as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        // No vCPU of this VM runs anywhere now: its RAM, devices and vGIC are nobody's.
        self.boot_image.load(&self.ram);
        self.irq.vgic.reset();
        map_hardware_interrupts(&self.irq.vgic, self.vcpu_count, &self.passthrough_spis);
        for &intid in &self.passthrough_spis {
            // A passed-through SPI the old guest never deactivated would stay active, and
            // silent, for the new one.
            crate::interrupts::clear_spi_active(intid);
        }
        self.uart.reset();
        #[cfg(target_arch = "aarch64")]
        crate::cpu::el2::invalidate_guest_tlbs();
        self.vcpu_power[0]
            .request_on(self.boot_image.start())
            .expect("every vCPU is off");
        self.state.store(VmState::Running as u8, Ordering::Release);
        log::info!("VM {} \"{}\" restarted", self.id, self.name);
        self.kick_vcpu(0);
    }

    /// Veil stops the VM; `reason` says what the guest did, for the log.
    pub fn stop(&self, reason: fmt::Arguments) {
        if self
            .state
            .compare_exchange(
                0,
                VmState::Stopped as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            log::error!("VM {} \"{}\" stopped: {}", self.id, self.name, reason);
            self.kick_all_vcpus();
        }
    }

    /// The vCPU whose MPIDR affinity (Aff3..Aff0) is `affinity`.
    pub fn vcpu_by_affinity(&self, affinity: u64) -> Option<usize> {
        const AFFINITY_MASK: u64 = 0xff_00ff_ffff;
        (0..self.vcpu_count)
            .find(|&i| vcpu::mpidr_for(i) & AFFINITY_MASK == affinity & AFFINITY_MASK)
    }

    /// Makes the physical CPU of vCPU `index` look at its state (a CPU_ON, or the VM's end).
    pub fn kick_vcpu(&self, index: usize) {
        let cpu = self.placement[index];
        crate::cpu::note_work(cpu);
        if cpu != crate::cpu::current_index() {
            crate::interrupts::kick(cpu, crate::cpu::mpidr_of(cpu));
        }
    }

    /// Makes every CPU that runs one of this VM's vCPUs exit and notice the VM ended.
    fn kick_all_vcpus(&self) {
        for index in 0..self.vcpu_count.min(self.placement.len()) {
            self.kick_vcpu(index);
        }
    }
}

/// Why a passthrough window may not be given to a guest, if it may not.
fn check_passthrough(
    base: u64,
    size: u64,
    ram: &GuestRam,
    host: &HostInfo,
) -> Result<(), &'static str> {
    let page = memory::PAGE_SIZE;
    if size == 0 || base % page != 0 || size % page != 0 {
        return Err("base and size must be non-zero multiples of 4 KiB");
    }
    let end = base
        .checked_add(size)
        .ok_or("it wraps around the address space")?;
    if end > 1 << stage2::IPA_BITS {
        return Err("it lies above the guest's address space");
    }
    if base < ram.ipa + ram.size && ram.ipa < end {
        return Err("it overlaps the guest's RAM");
    }
    let overlaps = |r: &crate::board::discovery::Region| base < r.end() && r.base < end;
    if host.ram.iter().any(overlaps) {
        return Err("it is host RAM, not a device");
    }
    if host.own_devices.iter().any(overlaps) {
        return Err("Veil drives that device itself");
    }
    if base < virtual_board::GICR_BASE + virtual_board::GICR_REGION_SIZE
        && virtual_board::GICD_BASE < end
    {
        return Err("it overlaps the guest's interrupt controller");
    }
    if base < virtual_board::PL011_BASE + virtual_board::PL011_SIZE
        && virtual_board::PL011_BASE < end
    {
        return Err("it overlaps the guest's console UART");
    }
    Ok(())
}

fn copy_to_guest(ram: &GuestRam, ipa: u64, data: &[u8]) {
    let ranges = ram
        .host_ranges(ipa, data.len() as u64)
        .expect("load plan inside guest RAM");
    let mut offset = 0;
    for (pa, len) in ranges {
        let piece = &data[offset..offset + len as usize];
        // SAFETY: [pa, pa + len) lies in this VM's RAM (host_ranges checked it), which Veil
        // allocated for it and maps read-write (Normal memory) at EL2; no guest runs on it yet,
        // and `data` is Veil's (the package or the DTB), never this VM's RAM.
        unsafe { memory::bulk::copy(pa as *mut u8, piece.as_ptr(), piece.len()) };
        memory::cache::clean_dcache_range(pa as usize, piece.len());
        offset += len as usize;
    }
}

fn zero_guest(ram: &GuestRam, ipa: u64, len: u64) {
    for (pa, len) in ram
        .host_ranges(ipa, len)
        .expect("load plan inside guest RAM")
    {
        // SAFETY: as in copy_to_guest.
        unsafe { memory::bulk::zero(pa as *mut u8, len as usize) };
        memory::cache::clean_dcache_range(pa as usize, len as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ram_translation() {
        let ram = GuestRam::from_blocks(
            0x4000_0000,
            &[(0x8000_0000, 0x20_0000), (0x6000_0000, 0x40_0000)],
        );
        assert_eq!(ram.size, 0x60_0000);
        assert_eq!(ram.pa_of(0x4000_0000), Some(0x8000_0000));
        assert_eq!(ram.pa_of(0x401f_ffff), Some(0x801f_ffff));
        assert_eq!(ram.pa_of(0x4020_0000), Some(0x6000_0000));
        assert_eq!(ram.pa_of(0x405f_ffff), Some(0x603f_ffff));
        assert_eq!(ram.pa_of(0x4060_0000), None);
        assert_eq!(ram.pa_of(0x3fff_ffff), None);
        assert_eq!(
            ram.host_ranges(0x401f_f000, 0x2000),
            Some(vec![(0x801f_f000, 0x1000), (0x6000_0000, 0x1000)])
        );
        assert_eq!(ram.host_ranges(0x405f_f000, 0x2000), None);
        assert_eq!(ram.host_ranges(0x4000_0000, 0), Some(vec![]));
    }
}
