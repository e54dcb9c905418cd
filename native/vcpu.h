// Vcpu: a vCPU fd with its kvm_run page and dirty ring mapped (KVM_RUN, KVM_GET/SET_REGS,
// KVM_GET/SET_SREGS; the ring's batch harvest is in ring.cc; the rest of the x86 vCPU state,
// FPU, XSAVE, XCRS, MSRS, LAPIC, VCPU_EVENTS, DEBUGREGS, MP_STATE and CPUID2, in vcpu-state.cc).
#pragma once

#include <napi.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <atomic>
#include <mutex>
#include <thread>

#include "addon.h"
#include "fd.h"
#include "mapping.h"
#include "uapi.h"
#include "vm.h"

// What Vm::CreateVcpu hands to the Vcpu constructor.
struct VcpuInit {
  UniqueFd fd;
  uint32_t id = 0;
  std::shared_ptr<Mapping> run;
  std::shared_ptr<Mapping> ring;  // null without a dirty ring
  std::shared_ptr<VmState> vm;
  // Bytes of this vCPU's XSAVE state: KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM (at least
  // 4096), or 4096 without the cap. useXsave2: read it with KVM_GET_XSAVE2.
  uint32_t xsaveSize = 4096;
  bool useXsave2 = false;
};

// One KVM_RUN's outcome, copied out of kvm_run on the thread that ran it.
struct RunResult {
  int err = 0;  // errno of a failed KVM_RUN (EINTR that was not a kick is retried, a kick is Intr)
  uint32_t reason = 0;
  uint8_t ioDirection = 0, ioSize = 0;
  uint16_t ioPort = 0;
  uint32_t ioCount = 0;
  uint64_t ioValue = 0;
  uint64_t mmioPhysAddr = 0;
  uint8_t mmioData[8] = {};
  uint32_t mmioLen = 0;
  bool mmioIsWrite = false;
  bool hasDetail = false;
  uint64_t detail = 0;
};

// An exit as numbers, for lib/native/backend.ts's exit decoder (layout.exitFields names the indexes):
// run() fills the vCPU's exitState array and returns; runAsync() resolves with a fresh one.
// Numbers cross Node-API far cheaper than objects built field by field.
enum ExitField {
  kExitReason,
  kExitIoDirection,
  kExitIoSize,
  kExitIoPort,
  kExitIoCount,
  kExitIoValue,
  kExitMmioPhysAddr,
  kExitMmioLen,
  kExitMmioIsWrite,
  kExitMmioData,  // 8 entries: the bytes written
  kExitHasDetail = kExitMmioData + 8,
  kExitDetailHigh,  // the u64 detail as two u32 halves
  kExitDetailLow,
  kExitFields,
};
void EncodeExit(const RunResult& r, double* out);

// The real-time signal that interrupts a KVM_RUN on a vCPU's thread (never SIGUSR1: Node's inspector).
int KickSignal();

// dirty ring (ring.cc)
std::shared_ptr<Mapping> MapDirtyRing(int vcpuFd, uint32_t bytes, int* err);
uint32_t HarvestDirtyGfns(kvm_dirty_gfn* gfns, uint32_t entries, uint64_t fetch, uint32_t max, uint32_t* slots,
                          double* offsets);

class Vcpu : public Napi::ObjectWrap<Vcpu>, public Closable {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Vcpu(const Napi::CallbackInfo& info);
  ~Vcpu() override;

  Kind kind() const override { return Kind::Vcpu; }
  void CloseHandles() override;

  // The vCPU behind a JS value (TypeError if it is not one); for Vm::HarvestRings (ring.cc).
  static Vcpu* From(Napi::Env env, const Napi::Value& value);
  bool closed() const { return closed_; }
  const VmState* vmState() const { return vm_.get(); }
  Mapping* ring() const { return ring_.get(); }

 private:
  static void DeliverResult(Napi::Env env, Napi::Function, Vcpu* self, RunResult* result);
  using RunTsfn = Napi::TypedThreadSafeFunction<Vcpu, RunResult, &Vcpu::DeliverResult>;

  // EBADF when closed; EBUSY while runAsync() is in flight (the kernel would block this thread
  // on the vCPU mutex until the guest exits).
  int IdleFd(Napi::Env env, const char* ioctl) const;
  RunResult RunOnce();
  void WorkerMain();
  void StopWorker();
  void SignalKick();

  Napi::Value GetId(const Napi::CallbackInfo& info);
  Napi::Value GetRunBuffer(const Napi::CallbackInfo& info);
  Napi::Value GetRingBuffer(const Napi::CallbackInfo& info);
  Napi::Value GetExitState(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value RunAsync(const Napi::CallbackInfo& info);
  Napi::Value SpinForExit(const Napi::CallbackInfo& info);
  Napi::Value SetRunWatch(const Napi::CallbackInfo& info);
  Napi::Value Kick(const Napi::CallbackInfo& info);
  Napi::Value GetRegs(const Napi::CallbackInfo& info);
  Napi::Value SetRegs(const Napi::CallbackInfo& info);
  Napi::Value GetSregs(const Napi::CallbackInfo& info);
  Napi::Value SetSregs(const Napi::CallbackInfo& info);
  Napi::Value HarvestRing(const Napi::CallbackInfo& info);  // ring.cc
  // vcpu-state.cc
  Napi::Value GetXsaveSize(const Napi::CallbackInfo& info);
  Napi::Value GetFpu(const Napi::CallbackInfo& info);
  Napi::Value SetFpu(const Napi::CallbackInfo& info);
  Napi::Value GetXsave(const Napi::CallbackInfo& info);
  Napi::Value SetXsave(const Napi::CallbackInfo& info);
  Napi::Value GetXcrs(const Napi::CallbackInfo& info);
  Napi::Value SetXcrs(const Napi::CallbackInfo& info);
  Napi::Value GetMsrs(const Napi::CallbackInfo& info);
  Napi::Value SetMsrs(const Napi::CallbackInfo& info);
  Napi::Value GetLapic(const Napi::CallbackInfo& info);
  Napi::Value SetLapic(const Napi::CallbackInfo& info);
  Napi::Value GetVcpuEvents(const Napi::CallbackInfo& info);
  Napi::Value SetVcpuEvents(const Napi::CallbackInfo& info);
  Napi::Value GetDebugregs(const Napi::CallbackInfo& info);
  Napi::Value SetDebugregs(const Napi::CallbackInfo& info);
  Napi::Value GetMpState(const Napi::CallbackInfo& info);
  Napi::Value SetMpState(const Napi::CallbackInfo& info);
  Napi::Value GetCpuid2(const Napi::CallbackInfo& info);
  Napi::Value SetCpuid2(const Napi::CallbackInfo& info);
  // One fixed-size struct in or out: `buffer` must be exactly `size` bytes.
  Napi::Value StructIoctl(const Napi::CallbackInfo& info, unsigned long request, const char* name, size_t size);
  Napi::Value Close(const Napi::CallbackInfo& info);

  AddonData* data_;
  UniqueFd fd_;
  uint32_t id_;
  std::shared_ptr<Mapping> run_;
  std::shared_ptr<Mapping> ring_;
  std::shared_ptr<VmState> vm_;
  uint32_t xsaveSize_;
  bool useXsave2_;
  kvm_run* kvmRun_;  // run_'s address; valid until CloseHandles (after the worker is joined)
  // run()'s result, read by the adapter after each call (a strong reference keeps it alive)
  Napi::Reference<Napi::Float64Array> exitState_;
  double* exitStateData_ = nullptr;
  bool closed_ = false;

  // runAsync(): KVM_RUN on this vCPU's own thread, the result posted back through tsfn_.
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  // written under mu_; the worker also reads it without the lock while it spins (WorkerMain)
  std::atomic<bool> runRequested_{false};
  // set by the worker as it posts a run's result, cleared by runAsync(): spinForExit() watches it
  std::atomic<bool> resultPosted_{false};
  // how long the worker watches for the next runAsync() after an exit before it sleeps (setRunWatch)
  std::atomic<int64_t> runWatchNs_{200 * 1000};
  std::atomic<bool> stop_{false};  // written under mu_; the worker's watch also reads it without the lock
  bool running_ = false;       // JS thread: a runAsync() promise is pending
  std::unique_ptr<Napi::Promise::Deferred> pending_;
  RunTsfn tsfn_;
};
