//! The exit path: everything that happens between a guest trapping and it running again.
//!
//! Read top-down: the vectors (`_arch/aarch64/vectors.s`) save the guest's registers into its
//! vCPU and call [`handle_guest_exit`]; a synchronous exit is dispatched on ESR_EL2.EC through
//! one table ([`handler_for`]) to one handler per exception class; the handler emulates,
//! injects an exception, or ends the VM; the vectors restore and ERET. Exceptions taken at EL2
//! itself are Veil bugs and end in [`handle_el2_exception`].

pub mod context;
pub mod data_abort;
pub mod esr;
pub mod fast_mmio;
pub mod inject;
pub mod insn;
pub mod smccc;
pub mod sysreg;

use crate::cpu;
use crate::vm::vcpu::Vcpu;
use context::GuestRegs;
use esr::{Esr, ec};

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(include_str!("_arch/aarch64/vectors.s"));

/// What a handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Enter the guest again at its (possibly updated) PC.
    Resume,
    /// The VM is no longer running (powered off or stopped); this CPU lets go of the vCPU.
    VmEnded,
    /// The vCPU turned itself off (PSCI CPU_OFF); this CPU lets go of it.
    VcpuOff,
    /// The vCPU waits for an interrupt (WFI) and has none to take.
    Blocked,
    /// Something may have changed what this CPU should run (an interrupt exit).
    Reschedule,
    /// The vCPU gives its CPU to another vCPU sharing it, if one can run (VEIL_YIELD).
    Yield,
}

/// The kind of exception, as the vector entry passes it.
pub mod kind {
    pub const SYNC: u64 = 0;
    pub const IRQ: u64 = 1;
    pub const FIQ: u64 = 2;
    pub const SERROR: u64 = 3;
}

/// The syndrome registers a handler may need, read once at the exit.
#[derive(Clone, Copy, Debug)]
pub struct Syndrome {
    pub esr: Esr,
    pub far: u64,
    pub hpfar: u64,
}

type Handler = fn(&mut Vcpu, Syndrome) -> Exit;

/// The exception-class table: which handler each EC goes to. A class not listed here was not
/// asked to trap, so the guest gets what the hardware would have given it without Veil: an
/// UNDEFINED instruction exception.
pub fn handler_for(class: u8) -> Option<Handler> {
    let handler: Handler = match class {
        ec::WFX => wfx,
        ec::FP_ASIMD => fp_access,
        ec::HVC64 => hvc,
        ec::SMC64 => smc,
        ec::SYS64 => |vcpu, s| sysreg::handle(vcpu, s.esr),
        ec::DABT_LOWER => |vcpu, s| data_abort::handle(vcpu, s.esr, s.hpfar, s.far),
        ec::IABT_LOWER => instruction_abort,
        _ => return None,
    };
    Some(handler)
}

/// WFI (trapped by HCR_EL2.TWI): completes at once if the vCPU has an interrupt to take;
/// otherwise the vCPU blocks and its physical CPU runs another or sleeps in WFI itself until an
/// interrupt (its timers, a kick from another CPU, console input) gives it work (`cpu::sched`).
fn wfx(vcpu: &mut Vcpu, s: Syndrome) -> Exit {
    vcpu.regs.skip_instruction();
    if esr::wfx_is_wfe(s.esr.iss()) {
        // Only trapped while the CPU is shared: let the other vCPUs run.
        return Exit::Yield;
    }
    // What the guest did with its list registers must be in the model before asking it.
    crate::interrupts::sync_list_registers(vcpu);
    if vcpu.vm.irq.vgic.has_deliverable(vcpu.index) {
        Exit::Resume
    } else {
        Exit::Blocked
    }
}

/// FP/SIMD access while CPTR_EL2.TFP traps it: the registers still hold another vCPU's state.
/// Handled by the CPU's scheduler, which owns both vCPUs (see `handle_guest_exit`).
fn fp_access(_vcpu: &mut Vcpu, _s: Syndrome) -> Exit {
    Exit::Resume
}

/// HVC: the preferred return address is already the next instruction.
fn hvc(vcpu: &mut Vcpu, _s: Syndrome) -> Exit {
    smccc::handle(vcpu, smccc::Conduit::Hvc)
}

/// A trapped SMC returns to the SMC itself: step past it, then answer as for HVC.
fn smc(vcpu: &mut Vcpu, _s: Syndrome) -> Exit {
    vcpu.regs.skip_instruction();
    smccc::handle(vcpu, smccc::Conduit::Smc)
}

/// An instruction fetch from an IPA with no RAM: the guest jumped into a hole or a device. It
/// gets an instruction abort — unless the fetch that faulted is its own exception vector, which
/// an injected abort would only enter again: then the guest cannot go on and Veil stops it.
fn instruction_abort(vcpu: &mut Vcpu, s: Syndrome) -> Exit {
    let ipa = data_abort::fault_ipa(s.hpfar, s.far);
    let vbar = inject::guest_vbar();
    if vcpu.regs.pc.wrapping_sub(vbar) < 0x800 {
        vcpu.vm.stop(format_args!(
            "its exception vectors at {vbar:#x} are not in RAM (instruction fetch from IPA {ipa:#x}); \
             it cannot take exceptions"
        ));
        return Exit::VmEnded;
    }
    log::warn!(
        "VM {} \"{}\" vCPU {}: instruction fetch from IPA {ipa:#x} (PC {:#x}): not RAM; injected an instruction abort",
        vcpu.vm.id,
        vcpu.vm.name,
        vcpu.index,
        vcpu.regs.pc
    );
    inject::instruction_abort(&mut vcpu.regs, s.far);
    Exit::Resume
}

fn sync_exit(vcpu: &mut Vcpu, syndrome: Syndrome) -> Exit {
    match handler_for(syndrome.esr.ec()) {
        Some(handler) => handler(vcpu, syndrome),
        None => {
            log::warn!(
                "VM {} vCPU {}: unexpected {} exit (ESR {:#x}) at PC {:#x}: injecting UNDEFINED",
                vcpu.vm.id,
                vcpu.index,
                syndrome.esr.class_name(),
                syndrome.esr.0,
                vcpu.regs.pc
            );
            inject::undefined_instruction(&mut vcpu.regs);
            Exit::Resume
        }
    }
}

/// Called by the vectors for every guest exit, on the CPU's EL2 stack.
#[unsafe(no_mangle)]
extern "C" fn handle_guest_exit(_regs: *mut GuestRegs, kind: u64) {
    // SAFETY: the exit path takes this CPU's block once and holds it until it returns.
    let this = unsafe { cpu::this() };
    let outcome = match kind {
        kind::SYNC => {
            let syndrome = arch::read_syndrome();
            if syndrome.esr.ec() == ec::FP_ASIMD {
                this.fp_trap();
                Exit::Resume
            } else {
                let vcpu = this.vcpu().expect("guest exit on a CPU that runs no vCPU");
                sync_exit(vcpu, syndrome)
            }
        }
        kind::IRQ | kind::FIQ => {
            crate::interrupts::handle_pending(this);
            Exit::Reschedule
        }
        _ => {
            // A physical SError taken while the guest ran (e.g. an external abort on a write it
            // made to a passed-through device): it is the guest's, and it gets it as a virtual
            // SError, delivered by the hardware when the guest unmasks SErrors.
            let syndrome = arch::read_syndrome();
            let vcpu = this.vcpu().expect("guest exit on a CPU that runs no vCPU");
            log::warn!(
                "VM {} vCPU {}: SError (ESR {:#x}) at PC {:#x}: injected a virtual SError",
                vcpu.vm.id,
                vcpu.index,
                syndrome.esr.0,
                vcpu.regs.pc
            );
            #[cfg(target_arch = "aarch64")]
            cpu::el2::inject_virtual_serror();
            Exit::Resume
        }
    };
    this.finish_exit(outcome);
}

/// The register frame `EL2_EXCEPTION` saves.
#[repr(C)]
pub struct El2Frame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
}

/// An exception taken at EL2: always a Veil bug. Reports it readably and powers off.
#[unsafe(no_mangle)]
extern "C" fn handle_el2_exception(frame: &El2Frame, kind: u64) -> ! {
    let syndrome = arch::read_syndrome();
    let kind_name = match kind {
        kind::SYNC => "synchronous",
        kind::IRQ => "IRQ",
        kind::FIQ => "FIQ",
        _ => "SError",
    };
    // SAFETY: the panic path reads this CPU's block once; nothing else runs here any more.
    let running = unsafe { cpu::this() }
        .vcpu()
        .map(|v| (v.vm.id, v.vm.name.clone(), v.index));
    let who = match &running {
        Some((id, name, vcpu)) => alloc::format!("while running VM {id} \"{name}\" vCPU {vcpu}"),
        None => alloc::string::String::from("with no vCPU on this CPU"),
    };
    panic!(
        "{kind_name} exception at EL2 {who}: EC {:#04x} ({}), ISS {:#x}, FAR {:#x}, ELR {:#x}, SPSR {:#x}, LR {:#x}",
        syndrome.esr.ec(),
        syndrome.esr.class_name(),
        syndrome.esr.iss(),
        syndrome.far,
        frame.elr,
        frame.spsr,
        frame.x[30],
    );
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::{Esr, Syndrome};
    use aarch64_cpu::registers::{ESR_EL2, FAR_EL2, HPFAR_EL2};
    use tock_registers::interfaces::Readable;

    pub fn read_syndrome() -> Syndrome {
        Syndrome {
            esr: Esr(ESR_EL2.get()),
            far: FAR_EL2.get(),
            hpfar: HPFAR_EL2.get(),
        }
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod arch {
    use super::{Esr, Syndrome};
    pub fn read_syndrome() -> Syndrome {
        Syndrome {
            esr: Esr(0),
            far: 0,
            hpfar: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_what_el2_traps() {
        for class in [
            ec::WFX,
            ec::FP_ASIMD,
            ec::HVC64,
            ec::SMC64,
            ec::SYS64,
            ec::DABT_LOWER,
            ec::IABT_LOWER,
        ] {
            assert!(handler_for(class).is_some(), "EC {class:#x}");
        }
        for class in [ec::UNKNOWN, ec::SVC64, ec::BRK64, ec::PAC, ec::SVE] {
            assert!(
                handler_for(class).is_none(),
                "EC {class:#x} is answered with UNDEFINED"
            );
        }
    }
}
