#include "vcpu.h"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "errors.h"
#include "uapi.h"

// A real-time signal, because SIGUSR1 belongs to Node's inspector (and glibc keeps the first
// two real-time signals, which SIGRTMIN already skips). Its handler does nothing; installed
// without SA_RESTART, its only effect is that a KVM_RUN in progress returns EINTR.
int KickSignal() { return SIGRTMIN + 2; }

static void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(KickSignal(), &sa, nullptr);
  });
}

void EncodeExit(const RunResult& r, double* out) {
  std::fill(out, out + kExitFields, 0.0);
  out[kExitReason] = r.reason;
  out[kExitIoDirection] = r.ioDirection;
  out[kExitIoSize] = r.ioSize;
  out[kExitIoPort] = r.ioPort;
  out[kExitIoCount] = r.ioCount;
  out[kExitIoValue] = static_cast<double>(r.ioValue);  // at most 4 bytes: exact
  out[kExitMmioPhysAddr] = static_cast<double>(r.mmioPhysAddr);
  out[kExitMmioLen] = r.mmioLen;
  out[kExitMmioIsWrite] = r.mmioIsWrite;
  for (int i = 0; i < 8; i++) out[kExitMmioData + i] = r.mmioData[i];
  out[kExitHasDetail] = r.hasDetail;
  out[kExitDetailHigh] = static_cast<double>(r.detail >> 32);
  out[kExitDetailLow] = static_cast<double>(r.detail & 0xffffffffu);
}

// ---- the object --------------------------------------------------------------------------

Napi::Function Vcpu::Define(Napi::Env env) {
  return DefineClass(env, "Vcpu",
                     {
                         InstanceAccessor<&Vcpu::GetId>("id"),
                         InstanceAccessor<&Vcpu::GetRunBuffer>("runBuffer"),
                         InstanceAccessor<&Vcpu::GetRingBuffer>("ringBuffer"),
                         InstanceAccessor<&Vcpu::GetExitState>("exitState"),
                         InstanceMethod<&Vcpu::Run>("run"),
                         InstanceMethod<&Vcpu::RunAsync>("runAsync"),
                         InstanceMethod<&Vcpu::SpinForExit>("spinForExit"),
                         InstanceMethod<&Vcpu::SetRunWatch>("setRunWatch"),
                         InstanceMethod<&Vcpu::Kick>("kick"),
                         InstanceMethod<&Vcpu::GetRegs>("getRegs"),
                         InstanceMethod<&Vcpu::SetRegs>("setRegs"),
                         InstanceMethod<&Vcpu::GetSregs>("getSregs"),
                         InstanceMethod<&Vcpu::SetSregs>("setSregs"),
                         InstanceMethod<&Vcpu::HarvestRing>("harvestRing"),
                         InstanceAccessor<&Vcpu::GetXsaveSize>("xsaveSize"),
                         InstanceMethod<&Vcpu::GetFpu>("getFpu"),
                         InstanceMethod<&Vcpu::SetFpu>("setFpu"),
                         InstanceMethod<&Vcpu::GetXsave>("getXsave"),
                         InstanceMethod<&Vcpu::SetXsave>("setXsave"),
                         InstanceMethod<&Vcpu::GetXcrs>("getXcrs"),
                         InstanceMethod<&Vcpu::SetXcrs>("setXcrs"),
                         InstanceMethod<&Vcpu::GetMsrs>("getMsrs"),
                         InstanceMethod<&Vcpu::SetMsrs>("setMsrs"),
                         InstanceMethod<&Vcpu::GetLapic>("getLapic"),
                         InstanceMethod<&Vcpu::SetLapic>("setLapic"),
                         InstanceMethod<&Vcpu::GetVcpuEvents>("getVcpuEvents"),
                         InstanceMethod<&Vcpu::SetVcpuEvents>("setVcpuEvents"),
                         InstanceMethod<&Vcpu::GetDebugregs>("getDebugregs"),
                         InstanceMethod<&Vcpu::SetDebugregs>("setDebugregs"),
                         InstanceMethod<&Vcpu::GetMpState>("getMpState"),
                         InstanceMethod<&Vcpu::SetMpState>("setMpState"),
                         InstanceMethod<&Vcpu::GetCpuid2>("getCpuid2"),
                         InstanceMethod<&Vcpu::SetCpuid2>("setCpuid2"),
                         InstanceMethod<&Vcpu::Close>("close"),
                     });
}

Vcpu::Vcpu(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Vcpu>(info), data_(AddonData::Of(info.Env())) {
  VcpuInit* init = ConstructionToken<VcpuInit>(info);
  fd_ = std::move(init->fd);
  id_ = init->id;
  run_ = std::move(init->run);
  ring_ = std::move(init->ring);
  vm_ = std::move(init->vm);
  xsaveSize_ = init->xsaveSize;
  useXsave2_ = init->useXsave2;
  kvmRun_ = static_cast<kvm_run*>(run_->addr());
  Napi::Float64Array state = Napi::Float64Array::New(info.Env(), kExitFields);
  exitStateData_ = state.Data();
  exitState_ = Napi::Reference<Napi::Float64Array>::New(state, 1);
  data_->Track(this);
}

// Collected without close(): no run is in flight (runAsync holds a strong reference), so the
// worker is idle. Buffers JS still holds keep their mappings alive through their finalizers.
Vcpu::~Vcpu() {
  if (closed_) return;
  closed_ = true;
  StopWorker();
  run_.reset();
  ring_.reset();
  fd_.reset();
  vm_.reset();
  data_->Untrack(this);
}

void Vcpu::CloseHandles() {
  if (closed_) return;
  closed_ = true;
  StopWorker();  // kicks a running KVM_RUN and joins; its result is still delivered
  run_->Close();
  if (ring_) ring_->Close();
  fd_.reset();
  vm_.reset();
  data_->Untrack(this);
}

void Vcpu::StopWorker() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  __atomic_store_n(&kvmRun_->immediate_exit, 1, __ATOMIC_SEQ_CST);
  SignalKick();
  worker_.join();
  tsfn_.Release();  // a result already queued is still delivered, then the TSFN finalizes
}

int Vcpu::IdleFd(Napi::Env env, const char* ioctl) const {
  if (closed_) ThrowKvmError(env, EBADF, ioctl);
  if (running_) ThrowKvmError(env, EBUSY, ioctl, "runAsync() is in flight");
  return fd_.get();
}

// KVM_RUN until an exit userspace must see. Runs on the JS thread (run) or the worker (runAsync).
RunResult Vcpu::RunOnce() {
  RunResult r;
  for (;;) {
    int rc = ioctl(fd_.get(), KVM_RUN, 0);  // enter the guest until it exits to userspace
    if (rc == 0) break;
    int err = errno;
    if (err == EINTR) {
      // A kick sets immediate_exit (then signals): consume it and report Intr. Any other
      // signal: re-enter, as the selftests' vcpu_run does.
      if (__atomic_exchange_n(&kvmRun_->immediate_exit, 0, __ATOMIC_SEQ_CST)) {
        r.reason = KVM_EXIT_INTR;
        return r;
      }
      continue;
    }
    r.err = err;
    return r;
  }
  const kvm_run* run = kvmRun_;
  r.reason = run->exit_reason;
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      r.ioDirection = run->io.direction;
      r.ioSize = run->io.size;
      r.ioPort = run->io.port;
      r.ioCount = run->io.count;
      // the first access's bytes, at data_offset inside the mapping
      if (r.ioSize <= 8 && run->io.data_offset + r.ioSize <= run_->size()) {
        const uint8_t* p = reinterpret_cast<const uint8_t*>(run) + run->io.data_offset;
        for (int i = r.ioSize - 1; i >= 0; i--) r.ioValue = (r.ioValue << 8) | p[i];
      }
      break;
    }
    case KVM_EXIT_MMIO:
      r.mmioPhysAddr = run->mmio.phys_addr;
      r.mmioLen = run->mmio.len;
      r.mmioIsWrite = run->mmio.is_write != 0;
      std::memcpy(r.mmioData, run->mmio.data, sizeof r.mmioData);
      break;
    case KVM_EXIT_FAIL_ENTRY:
      r.hasDetail = true;
      r.detail = run->fail_entry.hardware_entry_failure_reason;
      break;
    case KVM_EXIT_INTERNAL_ERROR:
      r.hasDetail = true;
      r.detail = run->internal.suberror;
      break;
    default:
      break;
  }
  return r;
}

namespace {
int64_t MonotonicNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

template <typename Done>
void SpinUntil(Done done, int64_t ns) {
  const int64_t until = MonotonicNs() + ns;
  while (!done() && MonotonicNs() < until) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
}
}  // namespace

void Vcpu::WorkerMain() {
  // Named like the kernel's vCPU inode ("kvm-vcpu:N", at most 15 characters) for ps/top/gdb.
  char name[16];
  snprintf(name, sizeof name, "kvm-vcpu:%u", id_);
  pthread_setname_np(pthread_self(), name);
  // Only the kick reaches this thread; process-directed signals go to Node's threads.
  sigset_t mask;
  sigfillset(&mask);
  sigdelset(&mask, KickSignal());
  pthread_sigmask(SIG_SETMASK, &mask, nullptr);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // The next run is usually asked for within a checkpoint's pause (about 100 us): watch for
    // it a while (setRunWatch; a close ends the watch) before sleeping, since waking a sleeping
    // thread costs more than that on a nested host (runAsync() round trips measured 510 us
    // against 310 for run()).
    lock.unlock();
    SpinUntil([this] { return runRequested_.load(std::memory_order_acquire) || stop_.load(std::memory_order_relaxed); },
              runWatchNs_.load(std::memory_order_relaxed));
    lock.lock();
    cv_.wait(lock, [this] { return runRequested_.load() || stop_; });
    // A run requested before a close still runs (the close's kick makes it return Intr at
    // once), so its promise settles.
    if (!runRequested_) return;
    runRequested_ = false;
    lock.unlock();
    auto* result = new RunResult(RunOnce());
    resultPosted_.store(true, std::memory_order_release);
    if (tsfn_.NonBlockingCall(result) != napi_ok) delete result;  // the environment is shutting down
    lock.lock();
  }
}

void Vcpu::DeliverResult(Napi::Env env, Napi::Function, Vcpu* self, RunResult* result) {
  std::unique_ptr<RunResult> r(result);
  if (env == nullptr) return;  // environment teardown: nobody is waiting any more
  self->running_ = false;
  std::unique_ptr<Napi::Promise::Deferred> deferred = std::move(self->pending_);
  if (!self->closed_) self->tsfn_.Unref(env);
  self->Unref();
  if (r->err != 0) {
    deferred->Reject(MakeKvmError(env, r->err, "KVM_RUN"));
  } else {
    Napi::Float64Array state = Napi::Float64Array::New(env, kExitFields);
    EncodeExit(*r, state.Data());
    deferred->Resolve(state);
  }
}

void Vcpu::SignalKick() {
  // pthread_kill only while the worker exists (it is joined before it ends), so the id is live.
  if (worker_.joinable()) pthread_kill(worker_.native_handle(), KickSignal());
}

Napi::Value Vcpu::GetId(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), id_); }

Napi::Value Vcpu::GetRunBuffer(const Napi::CallbackInfo& info) {
  if (closed_) return Napi::ArrayBuffer::New(info.Env(), 0);
  return run_->Buffer(info.Env());
}

Napi::Value Vcpu::GetRingBuffer(const Napi::CallbackInfo& info) {
  if (!ring_) return info.Env().Null();
  if (closed_) return Napi::ArrayBuffer::New(info.Env(), 0);
  return ring_->Buffer(info.Env());
}

Napi::Value Vcpu::GetExitState(const Napi::CallbackInfo&) { return exitState_.Value(); }

Napi::Value Vcpu::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  IdleFd(env, "KVM_RUN");
  RunResult r = RunOnce();
  if (r.err != 0) ThrowKvmError(env, r.err, "KVM_RUN");
  EncodeExit(r, exitStateData_);
  return Napi::Number::New(env, r.reason);
}

Napi::Value Vcpu::RunAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  IdleFd(env, "KVM_RUN");
  if (!worker_.joinable()) {
    InstallKickHandler();
    tsfn_ = RunTsfn::New(env, "kvm-dirty:KVM_RUN", 0, 1, this);
    tsfn_.Unref(env);  // an idle vCPU does not keep the event loop alive
    worker_ = std::thread(&Vcpu::WorkerMain, this);
  }
  pending_ = std::make_unique<Napi::Promise::Deferred>(env);
  Napi::Promise promise = pending_->Promise();
  running_ = true;
  Ref();               // the object outlives its run even if JS drops it
  tsfn_.Ref(env);      // and the event loop waits for the result
  resultPosted_.store(false, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    runRequested_ = true;
  }
  cv_.notify_one();
  return promise;
}

// spinForExit(maxNs) -> whether the pending run's result is posted: the JS thread watches for
// it instead of sleeping in the event loop, whose wake-up costs ~100 us on a nested host; the
// promise then settles as soon as the loop runs.
Napi::Value Vcpu::SpinForExit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double ns = info[0].As<Napi::Number>().DoubleValue();
  if (!(ns >= 0) || ns > 1e9) throw Napi::RangeError::New(env, "spinForExit: maxNs must be from 0 to 1e9");
  if (!running_) return Napi::Boolean::New(env, false);
  SpinUntil([this] { return resultPosted_.load(std::memory_order_acquire); }, static_cast<int64_t>(ns));
  return Napi::Boolean::New(env, resultPosted_.load(std::memory_order_acquire));
}

// setRunWatch(ns) -> the previous ns: how long the worker watches for the next runAsync() after
// an exit; the watch holds a core, which a host without one to spare takes from other threads.
Napi::Value Vcpu::SetRunWatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double ns = info[0].As<Napi::Number>().DoubleValue();
  if (!(ns >= 0) || ns > 1e9) throw Napi::RangeError::New(env, "setRunWatch: ns must be from 0 to 1e9");
  return Napi::Number::New(env, static_cast<double>(runWatchNs_.exchange(static_cast<int64_t>(ns))));
}

// kick(): immediate_exit makes the next (or a starting) KVM_RUN return EINTR at once; the
// signal interrupts one already inside the guest. RunOnce() turns that EINTR into Intr and
// clears immediate_exit.
Napi::Value Vcpu::Kick(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) ThrowKvmError(env, EBADF, nullptr);
  __atomic_store_n(&kvmRun_->immediate_exit, 1, __ATOMIC_SEQ_CST);
  if (running_) SignalKick();
  return env.Undefined();
}

// The registers cross as the kernel's structs in a Uint8Array (lib/kvm-structs.ts decodes them):
// building a JS object field by field through Node-API cost several times the ioctl.
// general-purpose registers
Napi::Value Vcpu::GetRegs(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_GET_REGS, "KVM_GET_REGS", sizeof(kvm_regs)); }
Napi::Value Vcpu::SetRegs(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_SET_REGS, "KVM_SET_REGS", sizeof(kvm_regs)); }
// segments, control registers, EFER, APIC base
Napi::Value Vcpu::GetSregs(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_GET_SREGS, "KVM_GET_SREGS", sizeof(kvm_sregs)); }
Napi::Value Vcpu::SetSregs(const Napi::CallbackInfo& info) { return StructIoctl(info, KVM_SET_SREGS, "KVM_SET_SREGS", sizeof(kvm_sregs)); }

Napi::Value Vcpu::Close(const Napi::CallbackInfo& info) {
  CloseHandles();
  return info.Env().Undefined();
}
