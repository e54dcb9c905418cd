// Vm: a VM fd (KVM_CHECK_EXTENSION, KVM_ENABLE_CAP, KVM_SET_USER_MEMORY_REGION, KVM_CREATE_VCPU,
// KVM_GET/CLEAR_DIRTY_LOG, KVM_RESET_DIRTY_RINGS, KVM_SET/GET/HAS_DEVICE_ATTR, the x86 in-kernel
// devices and clock (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2, KVM_SET_TSS_ADDR,
// KVM_SET_IDENTITY_MAP_ADDR, KVM_IRQ_LINE, KVM_GET/SET_IRQCHIP, KVM_GET/SET_PIT2,
// KVM_GET/SET_CLOCK), and in cmma.cc KVM_S390_GET/SET_CMMA_BITS).
#pragma once

#include <napi.h>

#include <cstdint>
#include <map>
#include <memory>

#include "addon.h"
#include "fd.h"
#include "mapping.h"
#include "system.h"

// What the kernel's memslots refer to. Shared by the Vm and its vCPUs: the guest memory of a
// slot must stay mapped (or reserved) while any of them can still run the guest.
struct VmState {
  struct Slot {
    std::shared_ptr<Mapping> memory;
    uint64_t size;
  };
  // keyed by (as_id << 16) | slot id, as KVM_SET_USER_MEMORY_REGION takes it
  std::map<uint32_t, Slot> slots;

  VmState() = default;
  VmState(const VmState&) = delete;
  VmState& operator=(const VmState&) = delete;
  ~VmState();
  // Records a successful KVM_SET_USER_MEMORY_REGION (size 0 deletes).
  void SetSlot(uint32_t slot, std::shared_ptr<Mapping> memory, uint64_t size);
};

// What System::CreateVm hands to the Vm constructor.
struct VmInit {
  UniqueFd fd;
  size_t vcpuMmapSize;
  std::shared_ptr<const CpuidTable> cpuid;
};

class Vm : public Napi::ObjectWrap<Vm>, public Closable {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Vm(const Napi::CallbackInfo& info);
  ~Vm() override;

  Kind kind() const override { return Kind::Vm; }
  void CloseHandles() override;

 private:
  int Fd(Napi::Env env, const char* ioctl) const;
  Napi::Value CheckExtension(const Napi::CallbackInfo& info);
  Napi::Value EnableCap(const Napi::CallbackInfo& info);
  Napi::Value CreateMemory(const Napi::CallbackInfo& info);
  Napi::Value SetUserMemoryRegion(const Napi::CallbackInfo& info);
  Napi::Value CreateVcpu(const Napi::CallbackInfo& info);
  Napi::Value GetDirtyLog(const Napi::CallbackInfo& info);
  Napi::Value ClearDirtyLog(const Napi::CallbackInfo& info);
  Napi::Value ResetDirtyRings(const Napi::CallbackInfo& info);
  Napi::Value HarvestRings(const Napi::CallbackInfo& info);  // ring.cc
  Napi::Value SetDeviceAttr(const Napi::CallbackInfo& info);
  Napi::Value GetDeviceAttr(const Napi::CallbackInfo& info);
  Napi::Value HasDeviceAttr(const Napi::CallbackInfo& info);
  Napi::Value CreateIrqchip(const Napi::CallbackInfo& info);
  Napi::Value CreatePit2(const Napi::CallbackInfo& info);
  Napi::Value SetTssAddr(const Napi::CallbackInfo& info);
  Napi::Value SetIdentityMapAddr(const Napi::CallbackInfo& info);
  Napi::Value IrqLine(const Napi::CallbackInfo& info);
  Napi::Value GetIrqchip(const Napi::CallbackInfo& info);
  Napi::Value SetIrqchip(const Napi::CallbackInfo& info);
  Napi::Value GetPit2(const Napi::CallbackInfo& info);
  Napi::Value SetPit2(const Napi::CallbackInfo& info);
  Napi::Value GetClock(const Napi::CallbackInfo& info);
  Napi::Value SetClock(const Napi::CallbackInfo& info);
  // cmma.cc
  Napi::Value GetCmmaBits(const Napi::CallbackInfo& info);
  Napi::Value SetCmmaBits(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  AddonData* data_;
  UniqueFd fd_;
  size_t vcpuMmapSize_;
  std::shared_ptr<const CpuidTable> cpuid_;
  std::shared_ptr<VmState> state_;
};

// A JS number or bigint as the u64 the kernel takes (bigints wrap modulo 2^64: -1n is all ones).
uint64_t ToU64(const Napi::Value& v);

// The bytes of a caller's Uint8Array that must hold exactly one kernel struct of `size` bytes
// (the kernel reads or writes that many through the pointer): TypeError for another type,
// RangeError for another length (a detached buffer has length 0).
uint8_t* StructArg(Napi::Env env, const Napi::Value& v, size_t size, const char* what);
