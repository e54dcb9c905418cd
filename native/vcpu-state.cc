// The x86 vCPU state beyond registers: each method hands one kernel struct between the caller's
// Uint8Array and the vCPU fd, byte for byte (lib/kvm-structs.ts decodes them). Fixed-size structs
// go straight through (the kernel reads or writes exactly the checked length); the two with a
// count in their header (kvm_msrs, kvm_cpuid2) are copied first, so the kernel sees the count
// that was checked even if the caller's memory changes meanwhile.
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "uapi.h"
#include "vcpu.h"

// One fixed-size struct between the caller's Uint8Array and the vCPU fd (also kvm_regs and
// kvm_sregs, vcpu.cc).
Napi::Value Vcpu::StructIoctl(const Napi::CallbackInfo& info, unsigned long request, const char* name, size_t size) {
  Napi::Env env = info.Env();
  int fd = IdleFd(env, name);
  uint8_t* data = StructArg(env, info[0], size, name);
  if (ioctl(fd, request, data) < 0) ThrowKvmError(env, errno, name);
  return env.Undefined();
}

// Every architecture's vCPU has an MP state: runnable, halted, waiting for INIT/SIPI, ...
Napi::Value Vcpu::GetMpState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  kvm_mp_state mp{};
  if (ioctl(IdleFd(env, "KVM_GET_MP_STATE"), KVM_GET_MP_STATE, &mp) < 0) ThrowKvmError(env, errno, "KVM_GET_MP_STATE");
  return Napi::Number::New(env, mp.mp_state);
}

Napi::Value Vcpu::SetMpState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IdleFd(env, "KVM_SET_MP_STATE");
  kvm_mp_state mp{};
  mp.mp_state = info[0].As<Napi::Number>().Uint32Value();
  if (ioctl(fd, KVM_SET_MP_STATE, &mp) < 0) ThrowKvmError(env, errno, "KVM_SET_MP_STATE");
  return env.Undefined();
}

#if defined(__x86_64__) || defined(__i386__)

Napi::Value Vcpu::GetXsaveSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), xsaveSize_); }

// x87 and SSE registers in the legacy layout
Napi::Value Vcpu::GetFpu(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_GET_FPU, "KVM_GET_FPU", sizeof(kvm_fpu)); }
Napi::Value Vcpu::SetFpu(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_SET_FPU, "KVM_SET_FPU", sizeof(kvm_fpu)); }

// the XSAVE image of every enabled state component (x87, SSE, AVX, ...); KVM_GET_XSAVE2 where the
// image may exceed 4096 bytes (KVM_CAP_XSAVE2)
Napi::Value Vcpu::GetXsave(const Napi::CallbackInfo& info) {
  return useXsave2_ ? StructIoctl(info, KVM_GET_XSAVE2, "KVM_GET_XSAVE2", xsaveSize_)
                    : StructIoctl(info, KVM_GET_XSAVE, "KVM_GET_XSAVE", xsaveSize_);
}
// the kernel reads the vCPU's uabi_size bytes, at most xsaveSize_ (the cap's answer)
Napi::Value Vcpu::SetXsave(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_SET_XSAVE, "KVM_SET_XSAVE", xsaveSize_); }

// extended control registers (XCR0)
Napi::Value Vcpu::GetXcrs(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_GET_XCRS, "KVM_GET_XCRS", sizeof(kvm_xcrs)); }
Napi::Value Vcpu::SetXcrs(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_SET_XCRS, "KVM_SET_XCRS", sizeof(kvm_xcrs)); }

// the in-kernel local APIC's register page (needs KVM_CREATE_IRQCHIP)
Napi::Value Vcpu::GetLapic(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_GET_LAPIC, "KVM_GET_LAPIC", sizeof(kvm_lapic_state)); }
Napi::Value Vcpu::SetLapic(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_SET_LAPIC, "KVM_SET_LAPIC", sizeof(kvm_lapic_state)); }

// pending and injected exceptions, interrupts, NMI, SMI, the interrupt shadow
Napi::Value Vcpu::GetVcpuEvents(const Napi::CallbackInfo& info) {
  return StructIoctl(info, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", sizeof(kvm_vcpu_events));
}
Napi::Value Vcpu::SetVcpuEvents(const Napi::CallbackInfo& info) {
  return StructIoctl(info, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", sizeof(kvm_vcpu_events));
}

// DR0-3, DR6, DR7
Napi::Value Vcpu::GetDebugregs(const Napi::CallbackInfo& info) {
  return StructIoctl(info, KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", sizeof(kvm_debugregs));
}
Napi::Value Vcpu::SetDebugregs(const Napi::CallbackInfo& info) {
  return StructIoctl(info, KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", sizeof(kvm_debugregs));
}

// A header { u32 count; ... } followed by `entrySize`-byte entries, as the caller laid it out:
// copied, after checking that the buffer holds the entries its count announces.
static std::vector<uint8_t> CountedStruct(Napi::Env env, const Napi::Value& v, size_t header, size_t entrySize,
                                          const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, std::string(name) + ": the struct must be a Uint8Array");
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ByteLength() < header) throw Napi::RangeError::New(env, std::string(name) + ": the struct is shorter than its header");
  uint32_t count;
  std::memcpy(&count, a.Data(), sizeof count);
  if (a.ByteLength() < header + static_cast<uint64_t>(count) * entrySize) {
    throw Napi::RangeError::New(env, std::string(name) + ": the struct holds fewer entries than its count says");
  }
  return std::vector<uint8_t>(a.Data(), a.Data() + header + static_cast<size_t>(count) * entrySize);
}

// Model-specific registers: struct kvm_msrs with nmsrs entries; returns how many the kernel
// processed (it stops at the first MSR it refuses).
static Napi::Value MsrIoctl(const Napi::CallbackInfo& info, int fd, unsigned long request, const char* name, bool get) {
  Napi::Env env = info.Env();
  std::vector<uint8_t> msrs = CountedStruct(env, info[0], sizeof(kvm_msrs_header), sizeof(kvm_msr_entry), name);
  int r = ioctl(fd, request, msrs.data());
  if (r < 0) ThrowKvmError(env, errno, name);
  if (get) std::memcpy(info[0].As<Napi::Uint8Array>().Data(), msrs.data(), msrs.size());
  return Napi::Number::New(env, r);
}

Napi::Value Vcpu::GetMsrs(const Napi::CallbackInfo& info) {
  return MsrIoctl(info, IdleFd(info.Env(), "KVM_GET_MSRS"), KVM_GET_MSRS, "KVM_GET_MSRS", true);
}
Napi::Value Vcpu::SetMsrs(const Napi::CallbackInfo& info) {
  return MsrIoctl(info, IdleFd(info.Env(), "KVM_SET_MSRS"), KVM_SET_MSRS, "KVM_SET_MSRS", false);
}

// The CPUID the vCPU shows its guest (struct kvm_cpuid2): the kernel writes the entries and, on
// success, the count; E2BIG if nent is smaller than its table.
Napi::Value Vcpu::GetCpuid2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IdleFd(env, "KVM_GET_CPUID2");
  std::vector<uint8_t> cpuid = CountedStruct(env, info[0], sizeof(kvm_cpuid2_header), sizeof(kvm_cpuid_entry2), "KVM_GET_CPUID2");
  if (ioctl(fd, KVM_GET_CPUID2, cpuid.data()) < 0) ThrowKvmError(env, errno, "KVM_GET_CPUID2");
  std::memcpy(info[0].As<Napi::Uint8Array>().Data(), cpuid.data(), cpuid.size());
  return Napi::Number::New(env, reinterpret_cast<kvm_cpuid2_header*>(cpuid.data())->nent);
}

// Replaces the vCPU's CPUID; after the vCPU has run, the kernel takes only an identical table.
Napi::Value Vcpu::SetCpuid2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IdleFd(env, "KVM_SET_CPUID2");
  std::vector<uint8_t> cpuid = CountedStruct(env, info[0], sizeof(kvm_cpuid2_header), sizeof(kvm_cpuid_entry2), "KVM_SET_CPUID2");
  if (ioctl(fd, KVM_SET_CPUID2, cpuid.data()) < 0) ThrowKvmError(env, errno, "KVM_SET_CPUID2");
  return env.Undefined();
}

#else

// Other architectures have none of these x86 requests (or other structs under the same names):
// nothing is sent.
#define X86_ONLY(method, name)                                        \
  Napi::Value Vcpu::method(const Napi::CallbackInfo& info) {          \
    IdleFd(info.Env(), name);                                         \
    ThrowKvmError(info.Env(), ENOTTY, name, "an x86 request");        \
  }
Napi::Value Vcpu::GetXsaveSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), 0); }
X86_ONLY(GetFpu, "KVM_GET_FPU")
X86_ONLY(SetFpu, "KVM_SET_FPU")
X86_ONLY(GetXsave, "KVM_GET_XSAVE")
X86_ONLY(SetXsave, "KVM_SET_XSAVE")
X86_ONLY(GetXcrs, "KVM_GET_XCRS")
X86_ONLY(SetXcrs, "KVM_SET_XCRS")
X86_ONLY(GetMsrs, "KVM_GET_MSRS")
X86_ONLY(SetMsrs, "KVM_SET_MSRS")
X86_ONLY(GetLapic, "KVM_GET_LAPIC")
X86_ONLY(SetLapic, "KVM_SET_LAPIC")
X86_ONLY(GetVcpuEvents, "KVM_GET_VCPU_EVENTS")
X86_ONLY(SetVcpuEvents, "KVM_SET_VCPU_EVENTS")
X86_ONLY(GetDebugregs, "KVM_GET_DEBUGREGS")
X86_ONLY(SetDebugregs, "KVM_SET_DEBUGREGS")
X86_ONLY(GetCpuid2, "KVM_GET_CPUID2")
X86_ONLY(SetCpuid2, "KVM_SET_CPUID2")
#undef X86_ONLY

#endif
