//! VMGEXIT: the GHCB MSR protocol when the GHCB MSR holds a request, else the NAE event in the
//! GHCB page at the GPA it holds (GHCB specification 56421, version 2).
//!
//! The SEV information offers versions 1 up to `ghcb_max` (`sim.cfg`, default 2). With 1 the
//! simulator is a version 1 hypervisor: a version 2 MSR-protocol request (HV_FEATURES, AP
//! Reset Hold, the SEV-SNP ones) ends the run, as an MSR-protocol code it does not know would,
//! and a version 2 NAE event (HV_FEATURES, the SEV-SNP ones) gets the error reply for an
//! invalid event, as KVM gives for events it does not know. Every GHCB request's protocol
//! version field must name an offered version, else the run ends; a version 2 event in a
//! request that says version 1 is invalid too.
//!
//! The GHCB is read from the shared view only: a guest that left its GHCB encrypted has put its
//! request where the simulator, like a hypervisor, cannot see it. Requests are parsed from one
//! snapshot by `sev::host`, which checks valid bits, usage and scratch ranges; a malformed
//! request gets the specification's error reply. Devices and MSRs the simulator does not
//! provide get #GP and a console line.

use crate::devices;
use crate::memory::View;
use crate::vcpu::{SimError, Stop, Vcpu, Vm};
use handoff::sim_hypercall;
use sev::exception::Exception;
use sev::ghcb::{Ghcb, GhcbField, GhcbSnapshot};
use sev::host::{self, ApJumpTableRequest, NaeRequest};
use sev::hv_features::HvFeatures;
use sev::ioio::IoioInfo;
use sev::msr_protocol::{GhcbVersion, MsrRequest, MsrResponse};
use sim::cpuid::{self, Regs};
use sim::nmi_storm::NmiStorm;
use sim::x2apic::{self, IcrError, Ipi};
use x86::serial_println;

/// IA32_TIME_STAMP_COUNTER.
const IA32_TSC: u32 = 0x10;
/// VMGEXIT (`rep vmmcall`) is four bytes; QEMU gives no next RIP.
const VMGEXIT_LEN: u64 = 4;

/// Serves the VMGEXIT the vCPU is stopped at and steps over it.
pub fn handle(vcpu: &mut Vcpu, vm: &Vm) -> Result<(), Stop> {
    let value = vcpu.ghcb_msr;
    if value & 0xfff != 0 {
        msr_protocol(vcpu, vm, value)?;
    } else {
        ghcb_page(vcpu, vm, value)?;
    }
    vcpu.vmcb.set_rip(vcpu.vmcb.rip() + VMGEXIT_LEN);
    Ok(())
}

fn host_cpuid(vcpu: &Vcpu, vm: &Vm, leaf: u32, subleaf: u32) -> Regs {
    if leaf == sim_hypercall::GUEST_TIME_LEAF {
        let (ticks, exits) = (vcpu.counters.guest_tsc(), vcpu.counters.total_exits());
        return Regs {
            eax: ticks as u32,
            edx: (ticks >> 32) as u32,
            ebx: exits as u32,
            ecx: (exits >> 32) as u32,
        };
    }
    let h = x86::msr::cpuid(leaf, subleaf);
    let host = Regs {
        eax: h.eax,
        ebx: h.ebx,
        ecx: h.ecx,
        edx: h.edx,
    };
    cpuid::guest_view(leaf, host, vcpu.id, vm.mem.c_bit())
}

fn msr_protocol(vcpu: &mut Vcpu, vm: &Vm, value: u64) -> Result<(), Stop> {
    let req = MsrRequest::decode(value);
    vcpu.counters.msr_protocol(req.as_ref().ok());
    if vm.trace {
        serial_println!("sim: vmgexit vcpu={} msr {value:#x} {req:?}", vcpu.id);
    }
    let req = req.map_err(|error| Stop::Error(SimError::MsrProtocol { value, error }))?;
    if req.min_version() > vm.ghcb_max {
        return Err(Stop::Error(SimError::NewerMsrRequest {
            request: req,
            offered: vm.ghcb_max,
        }));
    }
    let resp = match req {
        MsrRequest::SevInfo => MsrResponse::SevInfo {
            max: vm.ghcb_max.number(),
            min: GhcbVersion::MIN.number(),
            cbit: vm.mem.c_bit() as u8,
        },
        MsrRequest::Cpuid { function, reg } => {
            let r = host_cpuid(vcpu, vm, function, 0);
            let value = [r.eax, r.ebx, r.ecx, r.edx][reg as usize];
            MsrResponse::Cpuid { reg, value }
        }
        MsrRequest::ApResetHold => {
            vcpu.park(vm);
            MsrResponse::ApResetHold { result: 1 }
        }
        // KVM terminates an SEV-ES guest that sends either (they are SEV-SNP requests): so
        // does the simulator, so that a guest passing here does not die on hardware.
        MsrRequest::PreferredGhcbGpa => {
            return Err(Stop::Error(SimError::SnpOnly {
                what: "preferred GHCB GPA",
            }));
        }
        MsrRequest::RegisterGhcbGpa { .. } => {
            return Err(Stop::Error(SimError::SnpOnly {
                what: "GHCB GPA registration",
            }));
        }
        MsrRequest::PageStateChange { .. } => {
            return Err(Stop::Error(SimError::SnpOnly {
                what: "page state change",
            }));
        }
        MsrRequest::RunVmpl { .. } => {
            return Err(Stop::Error(SimError::SnpOnly { what: "run VMPL" }));
        }
        MsrRequest::HvFeatures => MsrResponse::HvFeatures(HvFeatures::empty()),
        MsrRequest::Terminate(reason) => return Err(Stop::GuestTerminated(reason)),
    };
    vcpu.ghcb_msr = resp.encode();
    Ok(())
}

fn ghcb_page(vcpu: &mut Vcpu, vm: &Vm, gpa: u64) -> Result<(), Stop> {
    let page = vm
        .mem
        .host(gpa, 4096, View::Shared)
        .ok_or(Stop::Error(SimError::BadGhcbGpa { gpa }))?;
    // SAFETY: a page of the shared view (checked; page-aligned because the MSR's low 12 bits
    // are zero here). The guest may write it concurrently from another vCPU: `Ghcb` is an
    // `UnsafeCell` over plain integers, and every request is parsed from one snapshot.
    let ghcb = unsafe { &mut *(page as *mut Ghcb) };
    let parsed = NaeRequest::parse(ghcb, gpa);
    let code = parsed
        .as_ref()
        .ok()
        .and_then(|(_, s)| s.get(GhcbField::SwExitCode));
    vcpu.counters.nae(code);
    if vm.trace {
        match &parsed {
            Ok((req, _)) => serial_println!("sim: vmgexit vcpu={} ghcb {gpa:#x} {req:?}", vcpu.id),
            Err(e) => serial_println!("sim: vmgexit vcpu={} ghcb {gpa:#x} invalid: {e:?}", vcpu.id),
        }
    }
    match parsed {
        Ok((req, snapshot)) => {
            let version = request_version(ghcb, vm)?;
            if req.min_version() > version {
                let code = snapshot.get(GhcbField::SwExitCode).unwrap_or(0);
                serial_println!(
                    "sim: vcpu {}: event {code:#x} is GHCB protocol {}, the request says {}: \
                     invalid event",
                    vcpu.id,
                    req.min_version().number(),
                    version.number()
                );
                host::reply_error(ghcb, host::HostError::UnknownExit(code));
                return Ok(());
            }
            serve(vcpu, vm, ghcb, req, &snapshot)
        }
        Err(e) => {
            serial_println!(
                "sim: vcpu {}: invalid GHCB request at {gpa:#x}: {e:?}; answered with error {}",
                vcpu.id,
                e.code()
            );
            host::reply_error(ghcb, e);
            Ok(())
        }
    }
}

/// The protocol version field of the request in `ghcb`, read once: a version the simulator does
/// not offer ends the run.
fn request_version(ghcb: &Ghcb, vm: &Vm) -> Result<GhcbVersion, Stop> {
    let version = ghcb.protocol_version();
    GhcbVersion::from_number(version)
        .filter(|v| *v <= vm.ghcb_max)
        .ok_or(Stop::Error(SimError::GhcbVersion {
            version,
            offered: vm.ghcb_max,
        }))
}

/// Answers with #GP and says so: the simulator does not provide `what`.
fn refuse(vcpu: &Vcpu, ghcb: &mut Ghcb, what: core::fmt::Arguments) -> Result<(), Stop> {
    serial_println!("sim: vcpu {}: refused {what}: #GP", vcpu.id);
    host::reply_exception(ghcb, Exception::Gp(0));
    Ok(())
}

fn serve(
    vcpu: &mut Vcpu,
    vm: &Vm,
    ghcb: &mut Ghcb,
    req: NaeRequest,
    s: &GhcbSnapshot,
) -> Result<(), Stop> {
    use GhcbField::{Rax, Rbx, Rcx, Rdx};
    match req {
        NaeRequest::Cpuid { leaf, subleaf, .. } => {
            let r = host_cpuid(vcpu, vm, leaf, subleaf);
            let out = [
                (Rax, u64::from(r.eax)),
                (Rbx, u64::from(r.ebx)),
                (Rcx, u64::from(r.ecx)),
                (Rdx, u64::from(r.edx)),
            ];
            host::reply_ok(ghcb, 0, &out);
        }
        NaeRequest::Io { info, value } => {
            if !devices::port_allowed(info.port, info.size) {
                return refuse(vcpu, ghcb, format_args!("port I/O to {:#x}", info.port));
            }
            match value {
                None => {
                    let v = devices::port_in(info.port, info.size);
                    host::reply_ok(ghcb, 0, &[(Rax, u64::from(v))]);
                }
                Some(v) if info.port == devices::DEBUG_EXIT => {
                    return Err(Stop::DebugExit(v as u32));
                }
                Some(v) => {
                    devices::port_out(info.port, info.size, v as u32);
                    host::reply_ok(ghcb, 0, &[]);
                }
            }
        }
        NaeRequest::IoString {
            info,
            count,
            scratch,
        } => {
            if !devices::port_allowed(info.port, info.size) || info.port == devices::DEBUG_EXIT {
                return refuse(vcpu, ghcb, format_args!("string I/O to {:#x}", info.port));
            }
            io_string(ghcb, info, count, scratch.offset);
            host::reply_ok(ghcb, 0, &[]);
        }
        NaeRequest::RdMsr { msr } => match msr_read(vcpu, msr) {
            Some(v) => host::reply_ok(ghcb, 0, &[(Rax, v & 0xffff_ffff), (Rdx, v >> 32)]),
            None => return refuse(vcpu, ghcb, format_args!("RDMSR {msr:#x}")),
        },
        NaeRequest::WrMsr { msr, value } => match msr_write(vcpu, vm, msr, value) {
            Ok(()) => host::reply_ok(ghcb, 0, &[]),
            Err(why) => {
                return refuse(
                    vcpu,
                    ghcb,
                    format_args!("WRMSR {msr:#x} <- {value:#x} ({why})"),
                );
            }
        },
        NaeRequest::Rdtsc => {
            let v = x86::tsc::rdtsc();
            host::reply_ok(ghcb, 0, &[(Rax, v & 0xffff_ffff), (Rdx, v >> 32)]);
        }
        NaeRequest::Rdtscp => {
            let v = x86::tsc::rdtsc();
            let out = [(Rax, v & 0xffff_ffff), (Rdx, v >> 32), (Rcx, vcpu.tsc_aux)];
            host::reply_ok(ghcb, 0, &out);
        }
        // Six counters, none of them running: each reads zero.
        NaeRequest::Rdpmc { counter } if counter < 6 => {
            host::reply_ok(ghcb, 0, &[(Rax, 0), (Rdx, 0)]);
        }
        NaeRequest::Rdpmc { counter } => {
            return refuse(vcpu, ghcb, format_args!("RDPMC of counter {counter}"));
        }
        NaeRequest::ReadDr7 => host::reply_ok(ghcb, 0, &[(Rax, vcpu.dr7)]),
        NaeRequest::WriteDr7 { value } if value >> 32 == 0 => {
            vcpu.dr7 = value;
            host::reply_ok(ghcb, 0, &[]);
        }
        NaeRequest::WriteDr7 { value } => {
            return refuse(vcpu, ghcb, format_args!("DR7 <- {value:#x}"));
        }
        NaeRequest::Wbinvd | NaeRequest::Monitor { .. } | NaeRequest::Mwait { .. } => {
            host::reply_ok(ghcb, 0, &[]);
        }
        NaeRequest::Vmmcall { rax, cpl } => {
            let result = if cpl == 0 {
                hypercall(vcpu, vm, rax, s)
            } else {
                sim_hypercall::UNKNOWN_FUNCTION
            };
            host::reply_ok(ghcb, 0, &[(Rax, result)]);
        }
        NaeRequest::MmioRead { gpa, scratch } => {
            let len = scratch.len as u64;
            if devices::mmio_device(gpa, len).is_none() {
                return refuse(
                    vcpu,
                    ghcb,
                    format_args!("MMIO read of {len} bytes at {gpa:#x}"),
                );
            }
            let v = devices::mmio_read(gpa, len).to_le_bytes();
            // The range was checked against the shared buffer by the parser.
            let _ = ghcb.write_shared(scratch.offset, &v[..scratch.len]);
            host::reply_ok(ghcb, 0, &[]);
        }
        NaeRequest::MmioWrite { gpa, scratch } => {
            let len = scratch.len as u64;
            if devices::mmio_device(gpa, len).is_none() {
                return refuse(
                    vcpu,
                    ghcb,
                    format_args!("MMIO write of {len} bytes at {gpa:#x}"),
                );
            }
            let mut v = [0u8; 8];
            let _ = ghcb.read_shared(scratch.offset, &mut v[..scratch.len]);
            devices::mmio_write(gpa, len, u64::from_le_bytes(v));
            host::reply_ok(ghcb, 0, &[]);
        }
        NaeRequest::NmiComplete if vcpu.refuse_nmi_complete => {
            vcpu.refuse_nmi_complete = false;
            host::reply_error(ghcb, host::HostError::InvalidInput);
        }
        NaeRequest::NmiComplete => {
            vcpu.nmi_blocked = false;
            vcpu.nmi_completed += 1;
            if let Some(storm) = vcpu.nmi_storm.as_mut() {
                storm.completed();
            }
            host::reply_ok(ghcb, 0, &[]);
        }
        NaeRequest::ApHltLoop => {
            vcpu.park(vm);
            // Non-zero SW_EXITINFO2: woken by a start-up IPI.
            host::reply_ok(ghcb, 1, &[]);
        }
        NaeRequest::ApJumpTable(ApJumpTableRequest::Set { gpa }) => {
            vm.ap_jump_table
                .store(gpa, core::sync::atomic::Ordering::Relaxed);
            host::reply_ok(ghcb, 0, &[]);
        }
        NaeRequest::ApJumpTable(ApJumpTableRequest::Get) => {
            let gpa = vm.ap_jump_table.load(core::sync::atomic::Ordering::Relaxed);
            host::reply_ok(ghcb, gpa, &[]);
        }
        NaeRequest::HvFeatures => host::reply_ok(ghcb, HvFeatures::empty().bits(), &[]),
        NaeRequest::Terminate(reason) => return Err(Stop::GuestTerminated(reason)),
        NaeRequest::Unsupported { info1, info2 } => {
            return Err(Stop::GuestGaveUp { info1, info2 });
        }
        NaeRequest::Psc
        | NaeRequest::GuestRequest { .. }
        | NaeRequest::ExtGuestRequest { .. }
        | NaeRequest::ApCreation { .. }
        | NaeRequest::RunVmpl { .. } => {
            let code = s.get(GhcbField::SwExitCode).unwrap_or(0);
            serial_println!(
                "sim: vcpu {}: SNP-only event {code:#x} from an SEV-ES guest: invalid event",
                vcpu.id
            );
            host::reply_error(ghcb, host::HostError::UnknownExit(code));
        }
    }
    Ok(())
}

/// The MSRs the simulator provides: the TSC, TSC_AUX and the virtual x2APIC.
fn msr_read(vcpu: &Vcpu, msr: u32) -> Option<u64> {
    let id = u64::from(vcpu.id);
    Some(match msr {
        IA32_TSC => x86::tsc::rdtsc(),
        x86::msr::IA32_TSC_AUX => vcpu.tsc_aux,
        x2apic::MSR_APIC_BASE => x2apic::apic_base(vcpu.id == 0),
        x2apic::MSR_ID => id,
        // Version 0x14, six LVT entries.
        x2apic::MSR_VERSION => 0x5_0014,
        x2apic::MSR_TPR => vcpu.tpr,
        // Logical ID: cluster in bits 31:16, one bit of 16 in 15:0.
        x2apic::MSR_LDR => (id >> 4) << 16 | 1 << (id & 0xf),
        x2apic::MSR_SVR => vcpu.svr,
        x2apic::MSR_ESR => 0,
        _ => return None,
    })
}

/// Writes one of the MSRs of [`msr_read`]; `Err` says why it is refused.
fn msr_write(vcpu: &mut Vcpu, vm: &Vm, msr: u32, value: u64) -> Result<(), &'static str> {
    match msr {
        x86::msr::IA32_TSC_AUX if value >> 32 == 0 => vcpu.tsc_aux = value,
        x2apic::MSR_APIC_BASE if value == x2apic::apic_base(vcpu.id == 0) => {}
        x2apic::MSR_APIC_BASE => return Err("the x2APIC stays enabled at its base"),
        x2apic::MSR_TPR if value <= 0xff => vcpu.tpr = value,
        x2apic::MSR_EOI if value == 0 => vcpu.end_of_interrupt(),
        x2apic::MSR_SVR if value <= 0x1fff => vcpu.svr = value,
        x2apic::MSR_ESR if value == 0 => {}
        x2apic::MSR_ICR => send_ipi(vcpu, vm, value)?,
        // SELF_IPI: a fixed interrupt to the sender.
        x2apic::MSR_SELF_IPI if value <= 0xff => send_ipi(vcpu, vm, value | 1 << 18)?,
        _ => return Err("not provided"),
    }
    Ok(())
}

/// Posts the IPI of an ICR write to every vCPU it reaches (APIC ID = vCPU number; an IPI to a
/// vCPU that does not exist is dropped, as by hardware).
fn send_ipi(vcpu: &Vcpu, vm: &Vm, icr: u64) -> Result<(), &'static str> {
    let ipi = match Ipi::decode(icr) {
        Ok(Some(ipi)) => ipi,
        Ok(None) => return Ok(()),
        Err(IcrError::Logical) => return Err("logical destination mode is not provided"),
        Err(IcrError::DeliveryMode(_)) => return Err("delivery mode not provided"),
        Err(IcrError::IllegalVector(_)) => return Err("illegal vector"),
    };
    for (target, slot) in (0u32..).zip(vm.vcpus.iter()) {
        if ipi.reaches(vcpu.id, target) {
            slot.mailbox.post(ipi.delivery);
        }
    }
    Ok(())
}

/// INS/OUTS of `count` elements through the shared buffer at `offset` (the parser checked that
/// `count * size` bytes fit).
fn io_string(ghcb: &mut Ghcb, info: IoioInfo, count: u64, offset: usize) {
    let size = usize::from(info.size);
    for i in 0..count as usize {
        let at = offset + i * size;
        let mut b = [0u8; 4];
        if info.input {
            let v = devices::port_in(info.port, info.size).to_le_bytes();
            let _ = ghcb.write_shared(at, &v[..size]);
        } else {
            let _ = ghcb.read_shared(at, &mut b[..size]);
            devices::port_out(info.port, info.size, u32::from_le_bytes(b));
        }
    }
}

/// The simulator's test hypercalls (`handoff::sim_hypercall`), with their inputs from the
/// request `s` (a register the guest did not send reads 0); anything else is unknown.
fn hypercall(vcpu: &mut Vcpu, vm: &Vm, function: u64, s: &GhcbSnapshot) -> u64 {
    let input = |r| s.get(r).unwrap_or(0);
    let rbx = input(GhcbField::Rbx);
    match function {
        sim_hypercall::INJECT_NMI => {
            vcpu.nmi_pending = true;
            0
        }
        sim_hypercall::BENCH_START => {
            vcpu.bench = Some((x86::tsc::rdtsc(), vcpu.counters.total_exits()));
            0
        }
        sim_hypercall::BENCH_END => {
            let Some((t0, e0)) = vcpu.bench.take() else {
                return sim_hypercall::UNKNOWN_FUNCTION;
            };
            serial_println!(
                "SIM-BENCH iterations={rbx} exits={} tsc={} tsc_hz={}",
                vcpu.counters.total_exits() - e0,
                x86::tsc::rdtsc() - t0,
                vm.tsc_hz
            );
            0
        }
        sim_hypercall::NMI_STORM => {
            let (min, max) = (input(GhcbField::Rcx), input(GhcbField::Rdx));
            let (Ok(min), Ok(max)) = (u32::try_from(min), u32::try_from(max)) else {
                return sim_hypercall::INVALID_INPUT;
            };
            // A fixed seed per vCPU: the same storm every run.
            let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(vcpu.id) + 1);
            match NmiStorm::new(rbx, min, max, seed) {
                Some(storm) => {
                    vcpu.nmi_storm = Some(storm);
                    0
                }
                None => sim_hypercall::INVALID_INPUT,
            }
        }
        sim_hypercall::NMI_AT => {
            vcpu.arm_nmi_at(rbx);
            0
        }
        sim_hypercall::INJECT_INTERRUPT => match u8::try_from(rbx) {
            Ok(v) => {
                vcpu.hostile_interrupt = Some(v);
                0
            }
            Err(_) => sim_hypercall::INVALID_INPUT,
        },
        sim_hypercall::REFUSE_NMI_COMPLETE => {
            vcpu.refuse_nmi_complete = true;
            0
        }
        sim_hypercall::NMI_COUNTER => match rbx {
            sim_hypercall::NMIS_INJECTED => vcpu.counters.nmis_injected(),
            sim_hypercall::NMI_COMPLETES => vcpu.nmi_completed,
            _ => sim_hypercall::UNKNOWN_FUNCTION,
        },
        _ => sim_hypercall::UNKNOWN_FUNCTION,
    }
}
