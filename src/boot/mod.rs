//! From the first instruction to the first guest.
//!
//! The boot CPU, in order: reads the DTB it was given (no heap or MMU needed), builds Veil's EL2
//! map and turns the MMU and caches on, switches to the DTB's console and logger, prints the
//! banner, hands free RAM to the heap and the frame allocator, configures its EL2 controls,
//! builds every VM in the package, and enters the first vCPU. Each step's failure is a clear
//! message and a power-off, never a hang.

use crate::board::{
    self,
    discovery::{EnableMethod, GicVersion, Platform, Region},
    power::ExitStatus,
};
use crate::memory::{self, el2_map, frames, heap, layout};
use crate::vm::{self, HostInfo, Vm, id_regs::GuestGic, package, registry};
use crate::{cpu, println};
use core::sync::atomic::{AtomicU64, Ordering};

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(include_str!("_arch/aarch64/entry.s"));

/// Entered at EL1 or EL0: the CPU (or the firmware) gives Veil no EL2.
#[unsafe(no_mangle)]
extern "C" fn boot_at_wrong_el(el: u64) -> ! {
    println!(
        "\nVeil was entered at EL{el}: this CPU (or its firmware) offers no virtualization.\n\
         Veil needs to start at EL2 (QEMU: -M virt,virtualization=on; Raspberry Pi: the stock \
         firmware with arm_64bit=1)."
    );
    loop {
        aarch64_cpu_wait();
    }
}

fn aarch64_cpu_wait() {
    #[cfg(target_arch = "aarch64")]
    aarch64_cpu::asm::wfe();
}

/// Stops boot with a message a user can act on.
fn fail(what: core::fmt::Arguments) -> ! {
    println!("\nveil: cannot boot: {what}");
    board::power::power_off(ExitStatus::VeilPanic)
}

/// The boot CPU's Rust entry, with the MMU off and `dtb` from x0.
#[unsafe(no_mangle)]
extern "C" fn boot_primary(dtb: usize) -> ! {
    cpu::init_this_cpu(0);

    // 1. The DTB, read in place. Its size comes from its header.
    if dtb == 0 {
        fail(format_args!(
            "no DTB in x0; boot Veil as a raw binary (QEMU -kernel veil.bin), not as an ELF"
        ));
    }
    // SAFETY: the boot protocol puts a DTB at x0; we read just its 40-byte header first.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 40) };
    let Some(size) = board::discovery::fdt_total_size(header) else {
        fail(format_args!("x0 = {dtb:#x} does not point to a DTB"));
    };
    // SAFETY: the header says the blob is `size` bytes long; it stays untouched for Veil's
    // whole life (it is reserved from the frame allocator below). Discovery passes over the
    // FDT_NOP tokens that loaders which delete nodes leave (QEMU's raspi4b).
    let blob: &'static [u8] = unsafe { core::slice::from_raw_parts(dtb as *const u8, size) };
    // Kept on the stack until the MMU is on: the global cells use atomics, which need caches.
    let discovered = match Platform::from_fdt(blob) {
        Ok(p) => p,
        Err(e) => fail(format_args!("bad DTB at {dtb:#x}: {e}")),
    };
    let platform = &discovered;

    // 2. Veil's own map; then MMU and caches on.
    let image = layout::image();
    let mut devices = [Region::default(); 8];
    let device_count = host_devices(platform, &mut devices);
    let el2 = el2_map::El2Layout {
        ram: platform.memory.as_slice(),
        code: code_region(),
        devices: &devices[..device_count],
    };
    let (root, tables) = match el2_map::build_boot_map(&el2) {
        Ok(r) => r,
        Err(e) => fail(format_args!("cannot build the EL2 map: {e:?}")),
    };
    // SAFETY: the map covers all RAM (code, stacks, data, DTB) and the console.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        memory::mmu::enable(root)
    };
    let platform = board::set_platform(discovered);
    board::set_options(board::VeilOptions::parse(platform.bootargs));

    // 3. Console and log.
    if let Some(uart) = platform.uart {
        board::console::init(uart.base);
    }
    crate::logger::init(board::options().log_level);
    print_banner(platform, image, tables);

    // 4. Free memory: everything the DTB calls RAM minus what is already used.
    let mut reserved = [Region::default(); 4 + board::discovery::MAX_RESERVED];
    reserved[0] = image;
    reserved[1] = Region {
        base: dtb as u64,
        size: size as u64,
    };
    if let Some(initrd) = platform.initrd {
        reserved[2] = initrd;
    }
    for (slot, r) in reserved[3..].iter_mut().zip(platform.reserved.iter()) {
        *slot = *r;
    }
    let mut free = frames::free_ranges(platform.memory.as_slice(), &reserved);
    let Some(heap_base) = frames::take_block(&mut free, heap::HEAP_SIZE, memory::BLOCK_2M) else {
        fail(format_args!(
            "less than {} MiB of free RAM for Veil's heap",
            heap::HEAP_SIZE >> 20
        ));
    };
    // SAFETY: the block was just removed from the free ranges and is mapped read-write.
    unsafe { heap::init(heap_base) };
    frames::init(&free);
    let free_bytes: u64 = free.iter().map(|r| r.size).sum();
    log::info!(
        "memory: {} MiB free for guests after a {} MiB heap",
        free_bytes >> 20,
        heap::HEAP_SIZE >> 20
    );

    // 5. This CPU's EL2 controls.
    #[cfg(target_arch = "aarch64")]
    cpu::el2::configure();

    let workarounds = board::power::probe_firmware_workarounds();
    log::debug!("firmware SMCCC workarounds: {workarounds:?}");

    // 6. Interrupts, then the VMs, pinned to CPUs; then the CPUs that run them.
    crate::interrupts::init(platform, platform.uart.and_then(|u| u.intid));
    board::console::enable_input();
    crate::interrupts::init_this_cpu(0);
    create_vms(platform, blob);
    if registry::count() == 0 {
        log::error!("no VM to run");
        board::power::power_off(ExitStatus::VmStopped);
    }
    EL2_ROOT.store(root, Ordering::Release);
    for cpu in 1..platform.cpus.len().min(cpu::MAX_CPUS) {
        if cpu::is_assigned(cpu) {
            start_secondary(platform, cpu);
        }
    }
    cpu::idle()
}

/// The root of Veil's EL2 map, for secondary CPUs to turn their MMU on with.
static EL2_ROOT: AtomicU64 = AtomicU64::new(0);

/// Starts physical CPU `index` at `_secondary_start` through the firmware's method.
fn start_secondary(platform: &Platform, index: usize) {
    unsafe extern "C" {
        fn _secondary_start();
        fn _secondary_spin_start();
    }
    let entry = _secondary_start as *const () as u64;
    let cpu = platform.cpus.as_slice()[index];
    match cpu.enable_method {
        EnableMethod::Psci => {
            let result = board::power::firmware_call(
                board::power::host_psci_conduit(),
                board::power::psci_fid::CPU_ON_64,
                cpu.mpidr & 0xff_00ff_ffff,
                entry,
                index as u64,
            );
            if result != 0 {
                log::error!(
                    "CPU {index} (MPIDR {:#x}) did not start: PSCI CPU_ON returned {}",
                    cpu.mpidr,
                    result as i64
                );
            }
        }
        EnableMethod::SpinTable { release_addr } => {
            // SAFETY: the DTB names this word as the CPU's release address; the firmware's
            // holding pen reads it with caches off, hence the clean and the event.
            let entry = _secondary_spin_start as *const () as u64;
            unsafe { core::ptr::write_volatile(release_addr as *mut u64, entry) };
            memory::cache::clean_dcache_range(release_addr as usize, 8);
            #[cfg(target_arch = "aarch64")]
            aarch64_cpu::asm::sev();
        }
        EnableMethod::Unknown => {
            log::error!("CPU {index}: no known enable-method in the DTB; it stays off")
        }
    }
}

/// A secondary CPU's Rust entry, with the MMU off; `index` came through PSCI CPU_ON's context ID
/// (or is fixed per spin-table slot).
#[unsafe(no_mangle)]
extern "C" fn boot_secondary(index: usize) -> ! {
    cpu::init_this_cpu(index);
    // SAFETY: the boot CPU's map covers all RAM (this CPU's stack included) and the devices.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        memory::mmu::enable(EL2_ROOT.load(Ordering::Acquire))
    };
    #[cfg(target_arch = "aarch64")]
    cpu::el2::configure();
    crate::interrupts::init_this_cpu(index);
    // Debug level: secondaries come up while guests print, and a line here would split theirs.
    log::debug!("CPU {index} up");
    cpu::idle()
}

/// The host devices Veil itself maps: the console, the RTC and the GIC's register windows.
fn host_devices(platform: &Platform, out: &mut [Region; 8]) -> usize {
    let mut n = 0;
    let mut add = |r: Option<Region>| {
        if let Some(r) = r {
            if n < out.len() {
                out[n] = r;
                n += 1;
            }
        }
    };
    add(platform.uart.map(|u| Region {
        base: u.base,
        size: u.size,
    }));
    add(platform.rtc);
    if let Some(gic) = &platform.gic {
        add(Some(gic.distributor));
        add(gic.cpu_interface);
        add(gic.hyp_interface);
        add(gic.virtual_cpu_interface);
        add(gic.redistributors);
    }
    if board::facts::POWEROFF == board::PowerOffMethod::Bcm2711Watchdog {
        // The BCM2711 power-management block (watchdog) used to power off.
        add(Some(Region {
            base: 0xfe10_0000,
            size: 0x1000,
        }));
    }
    n
}

/// Veil's code, from the image start to the start of read-only data (page aligned by the
/// linker script).
fn code_region() -> Region {
    #[cfg(target_os = "none")]
    {
        unsafe extern "C" {
            static __image_start: u8;
            static __rodata_start: u8;
        }
        let (start, end) = (
            &raw const __image_start as u64,
            &raw const __rodata_start as u64,
        );
        Region {
            base: start,
            size: end - start,
        }
    }
    #[cfg(not(target_os = "none"))]
    {
        Region::default()
    }
}

fn print_banner(platform: &Platform, image: Region, tables: usize) {
    println!(
        "\nVeil {} — type-1 hypervisor for ARMv8-A (board {})",
        env!("CARGO_PKG_VERSION"),
        board::facts::NAME
    );
    println!("  machine  {}", platform.model);
    println!("  cpus     {}", platform.cpus.len());
    for r in platform.memory.iter() {
        println!(
            "  memory   {:#012x}..{:#012x} ({} MiB)",
            r.base,
            r.end(),
            r.size >> 20
        );
    }
    println!(
        "  veil     {:#012x}..{:#012x}, EL2 map in {tables} pages",
        image.base,
        image.end()
    );
    if let Some(uart) = platform.uart {
        println!("  console  PL011 at {:#x}", uart.base);
    }
    match &platform.gic {
        Some(gic) => {
            let version = match gic.version {
                GicVersion::V2 => 2,
                GicVersion::V3 => 3,
            };
            println!(
                "  gic      v{version}, distributor at {:#x}",
                gic.distributor.base
            );
        }
        None => println!("  gic      none found"),
    }
    if let Some(t) = &platform.timer {
        println!(
            "  timer    {} Hz; INTIDs: EL1 phys {}, EL1 virt {}, EL2 phys {}",
            crate::timer::frequency(),
            t.nonsecure_phys,
            t.virt,
            t.hyp_phys
        );
    }
    match platform.psci {
        Some(m) => println!(
            "  psci     via {}",
            if m == board::discovery::PsciMethod::Smc {
                "smc"
            } else {
                "hvc"
            }
        ),
        None => println!("  psci     none"),
    }
    if let Some(initrd) = platform.initrd {
        println!(
            "  vms      package at {:#x} ({} KiB)",
            initrd.base,
            initrd.size >> 10
        );
    }
}

/// Builds every VM in the package the boot loader placed as the initrd.
fn create_vms(platform: &Platform, host_dtb: &'static [u8]) {
    let Some(initrd) = platform.initrd.filter(|r| r.size != 0) else {
        log::error!(
            "no VM package: pass one as the initrd (QEMU: -initrd vms.pkg; see docs/VM_PACKAGE.md)"
        );
        return;
    };
    // SAFETY: the boot loader placed the package there; its range is reserved from the frame
    // allocator and identity-mapped as RAM.
    let blob: &'static [u8] =
        unsafe { core::slice::from_raw_parts(initrd.base as *const u8, initrd.size as usize) };
    let package = match package::Package::parse(blob) {
        Ok(p) => p,
        Err(e) => {
            log::error!("VM package at {:#x}: {e}", initrd.base);
            return;
        }
    };
    // Each VM's entry is read once (the fdt crate rescans a node for every property it is asked).
    let specs: alloc::vec::Vec<_> = package.vms().collect();
    let host = HostInfo {
        id_regs: read_host_id_regs(),
        gic: match platform.gic.as_ref().map(|g| g.version) {
            Some(GicVersion::V2) => GuestGic::V2,
            _ => GuestGic::V3,
        },
        shared_console: specs.len() > 1,
        wall_clock: host_wall_clock(),
        gicv: platform.gic.as_ref().and_then(|g| g.virtual_cpu_interface),
        ram: platform.memory.as_slice().to_vec(),
        own_devices: {
            let mut devices = [Region::default(); 8];
            let n = host_devices(platform, &mut devices);
            // The RTC Veil only reads once at boot: a guest may have it.
            let rtc = platform.rtc.map(|r| r.base);
            devices[..n]
                .iter()
                .copied()
                .filter(|r| Some(r.base) != rtc)
                .collect()
        },
        own_spis: platform.uart.and_then(|u| u.intid).into_iter().collect(),
        dtb: host_dtb,
    };
    let counts: alloc::vec::Vec<usize> = specs
        .iter()
        .map(|s| s.as_ref().map_or(0, |s| s.cpus as usize))
        .collect();
    let cpus = platform.cpus.len().min(cpu::MAX_CPUS);
    let placements = vm::placement::place(&counts, cpus);
    for (index, (spec, placement)) in specs.into_iter().zip(placements).enumerate() {
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => {
                log::error!("VM {index} not created: {e}");
                continue;
            }
        };
        let Ok(placement) = placement else {
            log::error!("VM {index} \"{}\" not created: it has no vCPUs", spec.name);
            continue;
        };
        match Vm::create(index, &spec, &host, placement.clone()) {
            Ok(vm) => {
                log::info!(
                    "VM {index} \"{}\": {} MiB at PA {:#x}{}, {} vCPU(s) on CPU(s) {:?}, GICv{}, {:?} kernel",
                    vm.name,
                    vm.ram.size >> 20,
                    vm.ram.chunks[0].pa,
                    if vm.ram.chunks.len() > 1 {
                        " (and more)"
                    } else {
                        ""
                    },
                    vm.vcpu_count,
                    placement,
                    if vm.gic == GuestGic::V2 { 2 } else { 3 },
                    vm::loader::detect(spec.kernel),
                );
                for (vcpu, &cpu) in placement.iter().enumerate() {
                    if !cpu::assign(cpu, index, vcpu) {
                        vm.stop(format_args!(
                            "CPU {cpu} already runs {} vCPUs",
                            cpu::MAX_VCPUS_PER_CPU
                        ));
                    }
                }
                registry::register(vm);
            }
            Err(e) => log::error!("VM {index} \"{}\" not created: {e}", spec.name),
        }
    }
    if registry::count() > 1 {
        log::info!(
            "console input goes to VM 0; type Ctrl-] and a VM's number to switch (Ctrl-] twice: a Ctrl-])"
        );
    }
}

/// The host's wall-clock time, from a PL031 RTC if the host has one (QEMU virt does), paired
/// with the counter value at which it was read. Without an RTC the guests' clocks start at the
/// epoch, as they would on a board without one.
fn host_wall_clock() -> (u64, u64) {
    let now = crate::timer::physical_count();
    match board::platform().rtc {
        Some(rtc) => {
            // RTCDR (offset 0) holds the current time in seconds.
            // SAFETY: the RTC's window comes from the DTB and is mapped as device memory.
            let seconds = unsafe { core::ptr::read_volatile(rtc.base as *const u32) };
            (now, seconds as u64)
        }
        None => (now, 0),
    }
}

/// The host's ID register space, read once (see `vm::id_regs`).
fn read_host_id_regs() -> [u64; vm::id_regs::ID_REG_COUNT] {
    #[cfg(target_arch = "aarch64")]
    {
        crate::cpu::el2::read_id_space()
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        [0; vm::id_regs::ID_REG_COUNT]
    }
}
