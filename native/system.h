// System: the /dev/kvm fd (KVM_GET_API_VERSION, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE,
// KVM_CREATE_VM, KVM_GET_SUPPORTED_CPUID, KVM_GET_MSR_INDEX_LIST).
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "addon.h"
#include "fd.h"

// The CPUID entries KVM supports (struct kvm_cpuid2: an 8-byte header, then the entries; see
// uapi.h for why not sizeof(kvm_cpuid2)), given to every
// vCPU with KVM_SET_CPUID2 so the guest may enter long mode.
using CpuidTable = std::vector<unsigned char>;

class System : public Napi::ObjectWrap<System>, public Closable {
 public:
  static Napi::Function Define(Napi::Env env);
  // new System(path): opens the device.
  explicit System(const Napi::CallbackInfo& info);
  ~System() override;

  Kind kind() const override { return Kind::System; }
  void CloseHandles() override;

 private:
  int Fd(Napi::Env env, const char* ioctl) const;
  Napi::Value GetApiVersion(const Napi::CallbackInfo& info);
  Napi::Value CheckExtension(const Napi::CallbackInfo& info);
  Napi::Value GetVcpuMmapSize(const Napi::CallbackInfo& info);
  Napi::Value CreateVm(const Napi::CallbackInfo& info);
  Napi::Value GetSupportedCpuid(const Napi::CallbackInfo& info);
  Napi::Value GetMsrIndexList(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  std::shared_ptr<const CpuidTable> SupportedCpuid(Napi::Env env);

  AddonData* data_;
  UniqueFd fd_;
  std::shared_ptr<const CpuidTable> cpuid_;
};
