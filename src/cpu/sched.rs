//! Which vCPU a physical CPU runs, and switching between them.
//!
//! vCPUs are pinned: each physical CPU runs the vCPUs placed on it (`vm::placement`), usually
//! one. When it has several, they share it round-robin in time slices, and a vCPU waiting in WFI
//! gives the CPU to the next one that can run. Switching saves the outgoing vCPU's EL1 registers,
//! virtual timer and virtual CPU interface, and loads the incoming one's; FP/SIMD state moves
//! lazily, on the first FP instruction after a switch (CPTR_EL2.TFP), because most exits return
//! to the same vCPU and many guests run long stretches without FP.
//!
//! The exit path calls into this module only when something may change what runs: an interrupt
//! exit, a WFI with nothing to take, a vCPU turning off, a VM ending. Hypercalls, register traps
//! and MMIO return straight to the vCPU.

use super::{CURRENT_VCPU, Ordering, PerCpu, WORK, arch, assignments, context, note_work};
use crate::traps::Exit;
use crate::vm::{VmState, psci::PowerState, registry, vcpu::Vcpu};
use alloc::boxed::Box;

/// The length of a time slice when several vCPUs share a CPU: 10 ms.
const SLICE_HZ: u64 = 100;

impl PerCpu {
    /// Finishes a guest exit: keeps the loaded vCPU for `Resume`, otherwise decides what runs
    /// next. Returns with a vCPU loaded (the vectors then enter it); never returns if the
    /// machine powers off.
    pub fn finish_exit(&mut self, outcome: Exit) {
        match outcome {
            // The common case stays short: no scheduling, no VM-state check (a VM that another
            // CPU ends sends this one a kick, which comes back as `Reschedule`).
            Exit::Resume => {}
            Exit::Blocked => {
                if let Some(v) = self.vcpu() {
                    v.blocked = true;
                }
                self.schedule();
            }
            Exit::VcpuOff => {
                if let Some(v) = self.vcpu() {
                    v.vm.vcpu_power[v.index].turn_off();
                }
                note_work(self.index);
                self.schedule();
            }
            Exit::VmEnded => {
                note_work(self.index);
                self.schedule();
            }
            Exit::Reschedule => self.schedule(),
            Exit::Yield => {
                // End the slice now: the round-robin then prefers the next runnable vCPU.
                self.slice_end = 0;
                self.schedule();
            }
        }
        let Some(v) = self.vcpu() else { return };
        if v.rearm_timer {
            v.rearm_timer = false;
            self.rearm_timer(crate::timer::physical_count());
        }
        if let Some(v) = self.vcpu() {
            if v.vm.irq.take_dirty(v.index) {
                crate::interrupts::sync_list_registers(v);
            }
        }
    }

    /// Chooses the vCPU to run and loads it, waiting (in WFI) while none can run. Powers the
    /// machine off once every VM has ended.
    pub fn schedule(&mut self) {
        loop {
            if WORK[self.index].swap(false, Ordering::AcqRel) {
                self.reap();
                self.start_requested();
                #[cfg(target_arch = "aarch64")]
                super::el2::trap_wfe(self.vcpus.len() > 1);
            }
            let now = crate::timer::physical_count();
            // An emulated physical timer whose deadline passed while Veil was busy (handling a
            // trapped CNTP write, or this WFI) raises its line now: no timer will fire for it.
            for v in self.vcpus.iter_mut() {
                if v.ptimer.level(now) {
                    crate::timer::update_ptimer_line(v, now);
                }
            }
            if let Some(next) = self.pick(now) {
                self.switch_to(next, now);
                self.rearm_timer(now);
                return;
            }
            if let Some(status) = registry::outcome() {
                // Every idle CPU sees this at about the same time; one of them turns the lights out.
                static POWERING_OFF: core::sync::atomic::AtomicBool =
                    core::sync::atomic::AtomicBool::new(false);
                if !POWERING_OFF.swap(true, Ordering::AcqRel) {
                    log::info!("all VMs have ended; powering off");
                    crate::board::power::power_off(status);
                }
                loop {
                    arch::wait_for_interrupt();
                }
            }
            self.rearm_timer(now);
            arch::wait_for_interrupt();
            crate::interrupts::handle_pending(self);
        }
    }

    /// Whether vCPU `i` has something to do.
    fn runnable(&self, i: usize, now: u64) -> bool {
        let v = &self.vcpus[i];
        if !v.blocked || v.vm.irq.vgic.has_deliverable(v.index) {
            return true;
        }
        // A loaded vCPU's virtual timer is watched by the hardware (its PPI wakes this CPU);
        // a switched-out one's only by its saved registers.
        self.current != Some(i) && (virtual_timer_due(v, now) || v.ptimer.level(now))
    }

    /// Round-robin: the loaded vCPU keeps the CPU while its slice lasts, then the next runnable
    /// one after it gets it.
    fn pick(&self, now: u64) -> Option<usize> {
        let n = self.vcpus.len();
        if let Some(c) = self.current {
            if self.runnable(c, now) && now < self.slice_end {
                return Some(c);
            }
        }
        let start = self.current.map_or(0, |c| c + 1);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.runnable(i, now))
    }

    /// Starts the vCPUs pinned here that their guest turned on (PSCI CPU_ON; the boot vCPU's
    /// start is pending from VM creation).
    fn start_requested(&mut self) {
        for (vm_id, vcpu_index) in assignments(self.index) {
            let Some(vm) = registry::get(vm_id) else {
                continue;
            };
            if vm.state() != VmState::Running {
                continue;
            }
            if let Some(start) = vm.vcpu_power[vcpu_index].take_start() {
                if vm.state() != VmState::Running {
                    // The VM began a reset between the check above and the start: the vCPU
                    // goes straight off again, and the reset may be waiting for it.
                    vm.vcpu_power[vcpu_index].turn_off();
                    vm.finish_reset();
                    continue;
                }
                log::debug!("VM {vm_id} vCPU {vcpu_index} starts at {:#x}", start.entry);
                let vcpu = Box::new(Vcpu::new(vm, vcpu_index, start.entry, start.context_id));
                self.vcpus.push(vcpu);
            }
        }
    }

    /// Lets go of the vCPUs that turned off or whose VM ended.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.vcpus.len() {
            let v = &self.vcpus[i];
            let gone = v.vm.state() != VmState::Running
                || v.vm.vcpu_power[v.index].state() != PowerState::On;
            if !gone {
                i += 1;
                continue;
            }
            if self.current == Some(i) {
                self.unload_current();
            }
            let v = self.vcpus.remove(i);
            // A vCPU that turned itself off is Off already, and may have been turned on again
            // since (CPU_ON right after CPU_OFF): only a VM's end turns its vCPUs off here.
            if v.vm.state() != VmState::Running {
                v.vm.vcpu_power[v.index].turn_off();
                // The last of a resetting VM's vCPUs to go restarts it.
                v.vm.finish_reset();
            }
            if core::ptr::eq(self.fp_owner, &*v) {
                self.fp_owner = core::ptr::null();
            }
            if let Some(c) = self.current {
                if c > i {
                    self.current = Some(c - 1);
                }
            }
        }
    }

    /// Makes vCPU `i` the loaded one.
    fn switch_to(&mut self, i: usize, now: u64) {
        if self.current != Some(i) {
            log::trace!(
                "switch to VM {} vCPU {}",
                self.vcpus[i].vm.id,
                self.vcpus[i].index
            );
            self.unload_current();
            self.load(i);
        }
        if self.vcpus.len() > 1 && now >= self.slice_end {
            self.slice_end = now + crate::timer::frequency() / SLICE_HZ;
        }
        self.vcpus[i].blocked = false;
    }

    /// Saves the loaded vCPU's hardware state into it.
    fn unload_current(&mut self) {
        let Some(c) = self.current.take() else { return };
        let v = &mut self.vcpus[c];
        v.el1.save();
        context::silence_virtual_timer();
        crate::interrupts::vcpu_leaves(v);
        self.guest_regs = core::ptr::null_mut();
        self.id_regs = core::ptr::null();
        self.read_cells = core::ptr::null();
    }

    /// Loads vCPU `i`'s state into the hardware.
    fn load(&mut self, i: usize) {
        let fp_owned = core::ptr::eq(self.fp_owner, &*self.vcpus[i]);
        #[cfg(target_arch = "aarch64")]
        let shared = self.vcpus.len() > 1;
        let v = &mut self.vcpus[i];
        arch::load_vcpu_state(v);
        v.el1.restore();
        crate::interrupts::vcpu_enters(v);
        // Its FP/SIMD registers are loaded on its first FP instruction, unless still there.
        context::trap_fp(!fp_owned);
        #[cfg(target_arch = "aarch64")]
        super::el2::trap_wfe(shared);
        self.guest_regs = &mut v.regs;
        self.id_regs = v.vm.id_regs.as_ptr();
        self.read_cells = &v.vm.read_cells;
        CURRENT_VCPU[self.index].store(v.index, Ordering::Relaxed);
        self.current = Some(i);
        self.slice_end = crate::timer::physical_count() + crate::timer::frequency() / SLICE_HZ;
    }

    /// The loaded vCPU used FP/SIMD (CPTR_EL2.TFP trapped it): move the registers' owner's
    /// state out and the loaded vCPU's in.
    pub fn fp_trap(&mut self) {
        let Some(c) = self.current else { return };
        // TFP traps EL2's own FP instructions too: lift it before moving the registers.
        context::trap_fp(false);
        let owner = self
            .vcpus
            .iter()
            .position(|v| core::ptr::eq(self.fp_owner, &**v));
        if owner != Some(c) {
            if let Some(o) = owner {
                self.vcpus[o].fp.save();
            }
            self.vcpus[c].fp.restore();
            self.fp_owner = &*self.vcpus[c];
        }
    }

    /// The EL2 physical timer fired: the loaded vCPU's emulated physical timer, a switched-out
    /// vCPU's timer, or the end of a slice.
    /// Only stops the timer: the scheduler runs after every interrupt and rearms it.
    pub fn hyp_timer_fired(&mut self) {
        crate::timer::program_hyp_timer(None);
        let now = crate::timer::physical_count();
        for v in self.vcpus.iter_mut() {
            crate::timer::update_ptimer_line(v, now);
        }
    }

    /// Programs the EL2 physical timer for the next thing this CPU must notice by time: the
    /// loaded vCPU's emulated physical timer, switched-out vCPUs' timers, the slice's end.
    pub fn rearm_timer(&mut self, now: u64) {
        // Deadlines already past need no timer: their vCPU is runnable now, and the slice's
        // end (or the loaded vCPU's next exit) gets it the CPU.
        let mut deadline: Option<u64> = None;
        let mut consider = |d: Option<u64>| {
            if let Some(d) = d.filter(|&d| d > now) {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        };
        for (i, v) in self.vcpus.iter().enumerate() {
            consider(v.ptimer.deadline(now));
            if self.current != Some(i) {
                consider(virtual_timer_deadline(v));
            }
        }
        if self.vcpus.len() > 1 {
            consider(Some(self.slice_end));
        }
        crate::timer::program_hyp_timer(deadline);
    }
}

/// When a switched-out vCPU's virtual timer fires, in physical counter ticks, if armed.
fn virtual_timer_deadline(v: &Vcpu) -> Option<u64> {
    const ENABLE: u64 = 1;
    const IMASK: u64 = 2;
    (v.el1.cntv_ctl & (ENABLE | IMASK) == ENABLE)
        .then(|| v.el1.cntv_cval.wrapping_add(v.vm.counter_offset))
}

fn virtual_timer_due(v: &Vcpu, now: u64) -> bool {
    virtual_timer_deadline(v).is_some_and(|d| now >= d)
}

/// A CPU's life outside guests: run whatever becomes runnable. Never returns.
pub fn idle() -> ! {
    // SAFETY: nothing else on this CPU holds its block.
    let this = unsafe { super::this() };
    this.schedule();
    arch::enter_guest()
}
