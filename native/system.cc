#include "system.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "uapi.h"
#include "vm.h"

Napi::Function System::Define(Napi::Env env) {
  return DefineClass(env, "System",
                     {
                         InstanceMethod<&System::GetApiVersion>("getApiVersion"),
                         InstanceMethod<&System::CheckExtension>("checkExtension"),
                         InstanceMethod<&System::GetVcpuMmapSize>("getVcpuMmapSize"),
                         InstanceMethod<&System::CreateVm>("createVm"),
                         InstanceMethod<&System::GetSupportedCpuid>("getSupportedCpuid"),
                         InstanceMethod<&System::GetMsrIndexList>("getMsrIndexList"),
                         InstanceMethod<&System::Close>("close"),
                     });
}

System::System(const Napi::CallbackInfo& info) : Napi::ObjectWrap<System>(info), data_(AddonData::Of(info.Env())) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "System(path): path must be a string");
  std::string path = info[0].As<Napi::String>();
  // The device; O_CLOEXEC so children spawned by Node do not inherit it.
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) ThrowKvmError(env, errno, nullptr, path.c_str(), "open");
  fd_ = UniqueFd(fd);
  data_->Track(this);
}

System::~System() { CloseHandles(); }

void System::CloseHandles() {
  if (!fd_.valid()) return;
  fd_.reset();
  data_->Untrack(this);
}

int System::Fd(Napi::Env env, const char* ioctl) const {
  if (!fd_.valid()) ThrowKvmError(env, EBADF, ioctl);
  return fd_.get();
}

Napi::Value System::GetApiVersion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int r = ioctl(Fd(env, "KVM_GET_API_VERSION"), KVM_GET_API_VERSION, 0);  // KVM_API_VERSION, 12 since 2.6.22
  if (r < 0) ThrowKvmError(env, errno, "KVM_GET_API_VERSION");
  return Napi::Number::New(env, r);
}

Napi::Value System::CheckExtension(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long cap = info[0].As<Napi::Number>().Int64Value();
  int r = ioctl(Fd(env, "KVM_CHECK_EXTENSION"), KVM_CHECK_EXTENSION, cap);  // 0 = absent, else a cap-specific value
  if (r < 0) ThrowKvmError(env, errno, "KVM_CHECK_EXTENSION");
  return Napi::Number::New(env, r);
}

Napi::Value System::GetVcpuMmapSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int r = ioctl(Fd(env, "KVM_GET_VCPU_MMAP_SIZE"), KVM_GET_VCPU_MMAP_SIZE, 0);  // bytes of kvm_run + PIO/MMIO pages
  if (r < 0) ThrowKvmError(env, errno, "KVM_GET_VCPU_MMAP_SIZE");
  return Napi::Number::New(env, r);
}

std::shared_ptr<const CpuidTable> System::SupportedCpuid(Napi::Env env) {
#if defined(__x86_64__) || defined(__i386__)
  if (cpuid_) return cpuid_;
  // KVM_MAX_CPUID_ENTRIES is 256; E2BIG would mean a larger table, so grow and ask again.
  for (unsigned nent = 256; nent <= 4096; nent *= 2) {
    auto table = std::make_shared<CpuidTable>(sizeof(kvm_cpuid2_header) + nent * sizeof(kvm_cpuid_entry2));
    auto* header = reinterpret_cast<kvm_cpuid2_header*>(table->data());
    header->nent = nent;
    if (ioctl(Fd(env, "KVM_GET_SUPPORTED_CPUID"), KVM_GET_SUPPORTED_CPUID, header) == 0) {  // what KVM can expose to a guest
      table->resize(sizeof(kvm_cpuid2_header) + header->nent * sizeof(kvm_cpuid_entry2));
      cpuid_ = table;
      return cpuid_;
    }
    if (errno != E2BIG) ThrowKvmError(env, errno, "KVM_GET_SUPPORTED_CPUID");
  }
  ThrowKvmError(env, E2BIG, "KVM_GET_SUPPORTED_CPUID");
#else
  (void)env;
  return nullptr;
#endif
}

Napi::Value System::CreateVm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned long type = info.Length() > 0 ? info[0].As<Napi::Number>().Uint32Value() : 0;
  int fd = Fd(env, "KVM_CREATE_VM");
  int mmapSize = ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);  // every vCPU of the VM maps this much kvm_run
  if (mmapSize < 0) ThrowKvmError(env, errno, "KVM_GET_VCPU_MMAP_SIZE");
  std::shared_ptr<const CpuidTable> cpuid = SupportedCpuid(env);
  int vmFd;
  do {
    // A new VM; KVM returns it O_CLOEXEC. A pending signal (a profiler's SIGPROF) fails the
    // creation with EINTR before anything exists: just ask again.
    vmFd = ioctl(fd, KVM_CREATE_VM, type);
  } while (vmFd < 0 && errno == EINTR);
  if (vmFd < 0) ThrowKvmError(env, errno, "KVM_CREATE_VM");
  VmInit init{UniqueFd(vmFd), static_cast<size_t>(mmapSize), std::move(cpuid)};
  return data_->vmCtor.New({Napi::External<VmInit>::New(env, &init)});
}

// getSupportedCpuid() -> Uint8Array: struct kvm_cpuid2 (8-byte header, then the entries), a copy
Napi::Value System::GetSupportedCpuid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fd(env, "KVM_GET_SUPPORTED_CPUID");
#if defined(__x86_64__) || defined(__i386__)
  std::shared_ptr<const CpuidTable> table = SupportedCpuid(env);
  Napi::Uint8Array out = Napi::Uint8Array::New(env, table->size());
  std::memcpy(out.Data(), table->data(), table->size());
  return out;
#else
  ThrowKvmError(env, ENOTTY, "KVM_GET_SUPPORTED_CPUID", "an x86 request");
#endif
}

// getMsrIndexList() -> Uint32Array: the MSRs the kernel saves and restores for a guest
Napi::Value System::GetMsrIndexList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_GET_MSR_INDEX_LIST");
#if defined(__x86_64__) || defined(__i386__)
  // Asked with room for none, the kernel answers E2BIG with the count; the list may grow in
  // between (it does not on a running kernel), so ask until it fits.
  kvm_msr_list_header probe{};
  if (ioctl(fd, KVM_GET_MSR_INDEX_LIST, &probe) == 0) return Napi::Uint32Array::New(env, 0);
  if (errno != E2BIG) ThrowKvmError(env, errno, "KVM_GET_MSR_INDEX_LIST");
  for (uint32_t n = probe.nmsrs;; n *= 2) {
    std::vector<uint32_t> list(1 + n);
    list[0] = n;
    if (ioctl(fd, KVM_GET_MSR_INDEX_LIST, list.data()) == 0) {  // the MSR numbers, after the count
      Napi::Uint32Array out = Napi::Uint32Array::New(env, list[0]);
      std::memcpy(out.Data(), list.data() + 1, list[0] * sizeof(uint32_t));
      return out;
    }
    if (errno != E2BIG || n > 65536) ThrowKvmError(env, errno, "KVM_GET_MSR_INDEX_LIST");
  }
#else
  (void)fd;
  ThrowKvmError(env, ENOTTY, "KVM_GET_MSR_INDEX_LIST", "an x86 request");
#endif
}

Napi::Value System::Close(const Napi::CallbackInfo& info) {
  CloseHandles();
  return info.Env().Undefined();
}
