//! Taking interrupts: the one IRQ entry every test and every vCPU shares, and the GIC it uses.
//!
//! [`entry`] (installed as the runtime's IRQ handler) reads both counters first thing, then
//! acknowledges the interrupt. A spurious acknowledge is counted and dropped, the wake-up
//! timer of [`crate::wait`] is silenced and ended here, and anything else goes to the handler
//! the running test installed with [`set_handler`], which must end (and, with split EOI,
//! deactivate) it. [`depth`] says how deeply the calling vCPU is nested in interrupt handlers:
//! a test that unmasks IRQs inside its handler sees a preempting interrupt at depth 2.
//!
//! State shared between vCPUs is kept in atomics that each have one writer; with the MMU off
//! every access is a non-cacheable one, so plain loads and stores are what the vCPUs see
//! (read-modify-write atomics are not guaranteed on Device memory, so none are used).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use veil_guest_rt::cpu::{self, MAX_CPUS};
use veil_guest_rt::gic::{self, Gic};
use veil_guest_rt::probe::Refusal;
use veil_guest_rt::{dtb, exception};

use crate::wait;

/// A test's interrupt handler: the raw acknowledge value and the counters at entry.
pub type Handler = fn(raw: u32, entered: Entered);

/// The counters as the IRQ entry first read them.
#[derive(Clone, Copy, Debug)]
pub struct Entered {
    /// CNTVCT_EL0.
    pub virtual_count: u64,
    /// CNTPCT_EL0.
    pub physical_count: u64,
}

/// The guest's GIC, written once by vCPU 0 before any interrupt is unmasked and any other
/// vCPU starts, read-only afterwards.
struct GicCell(UnsafeCell<Option<Gic>>);

// SAFETY: written once by `init` before any other vCPU or interrupt handler can read it (see
// there); only read afterwards.
unsafe impl Sync for GicCell {}

static GIC: GicCell = GicCell(UnsafeCell::new(None));
/// The running test's handler, a `Handler` as an address; 0 = none.
static HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Per vCPU: interrupt handlers the vCPU is inside of.
static DEPTH: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Per vCPU: acknowledges that returned a special INTID (1020-1023).
static SPURIOUS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Records the GIC, sets up the distributor and vCPU 0's CPU interface, and installs the IRQ
/// entry. Called once, by vCPU 0, before anything else touches interrupts.
pub fn init(gic: Gic) -> Result<(), Refusal> {
    // SAFETY: vCPU 0 alone runs at this point (no secondary is started before this returns),
    // IRQs are masked, and nothing has read the cell yet.
    unsafe { *GIC.0.get() = Some(gic) };
    gic.init_distributor()?;
    gic.init_this_cpu(0)?;
    exception::set_irq_handler(Some(entry));
    Ok(())
}

/// The guest's GIC.
pub fn gic() -> &'static Gic {
    // SAFETY: only read after `init` wrote it (see GicCell).
    unsafe { (*GIC.0.get()).as_ref() }.expect("dispatch::init ran first")
}

/// Installs the running test's handler.
pub fn set_handler(handler: Handler) {
    HANDLER.store(handler as *const () as usize, Ordering::SeqCst);
}

/// The calling vCPU's index: its MPIDR Aff0, which both Veil and QEMU `virt` (up to 8 CPUs)
/// number from 0 in DTB order.
pub fn this_index() -> usize {
    (cpu::mpidr() & 0xff) as usize
}

/// How many interrupt handlers the calling vCPU is inside of (0 outside any).
pub fn depth() -> u32 {
    DEPTH[this_index()].load(Ordering::Relaxed)
}

/// Spurious acknowledges the calling vCPU has seen.
pub fn spurious() -> u32 {
    SPURIOUS[this_index()].load(Ordering::Relaxed)
}

/// Both counters, fenced.
pub fn counters() -> Entered {
    let (virtual_count, physical_count): (u64, u64);
    // SAFETY: reading the counters has no side effects; CNTHCTL_EL2 leaves them to EL1.
    unsafe {
        core::arch::asm!(
            "isb",
            "mrs {v}, cntvct_el0",
            "mrs {p}, cntpct_el0",
            v = out(reg) virtual_count,
            p = out(reg) physical_count,
            options(nomem, nostack, preserves_flags),
        );
    }
    Entered {
        virtual_count,
        physical_count,
    }
}

/// The runtime's IRQ handler (see the module docs).
fn entry() {
    let entered = counters();
    let me = this_index();
    DEPTH[me].store(DEPTH[me].load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let gic = gic();
    let raw = gic.acknowledge();
    let intid = gic::intid(raw);
    if intid >= 1020 {
        SPURIOUS[me].store(SPURIOUS[me].load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    } else if wait::is_wake_intid(intid) {
        wait::silence_wake_timer();
        gic.end(raw);
    } else {
        match HANDLER.load(Ordering::SeqCst) {
            0 => panic!("interrupt {intid} with no handler installed"),
            address => {
                // SAFETY: set_handler stored a `Handler` here; function pointers round-trip
                // through usize unchanged on AArch64.
                let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(address) };
                handler(raw, entered);
            }
        }
    }
    DEPTH[me].store(DEPTH[me].load(Ordering::Relaxed) - 1, Ordering::Relaxed);
}

/// The vCPUs the DTB lists, by MPIDR affinity, in DTB order.
#[derive(Clone, Copy)]
pub struct Cpus {
    mpidr: [u64; MAX_CPUS],
    count: usize,
}

impl Cpus {
    pub fn len(&self) -> usize {
        self.count
    }

    /// The MPIDR affinity of vCPU `index`.
    pub fn mpidr(&self, index: usize) -> u64 {
        self.mpidr[index]
    }
}

/// The `/cpus/cpu@N` nodes' `reg` values (up to [`MAX_CPUS`]).
pub fn cpus() -> Cpus {
    let mut cpus = Cpus {
        mpidr: [0; MAX_CPUS],
        count: 0,
    };
    dtb::for_each_cpu(|mpidr| {
        if cpus.count < MAX_CPUS {
            cpus.mpidr[cpus.count] = mpidr;
            cpus.count += 1;
        }
    });
    cpus
}
