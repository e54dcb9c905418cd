// Module init and registration: the classes, init({ KvmError }), the layout constants tests
// compare the emulator against, and the environment cleanup hook.
#include <napi.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>

#include "addon.h"
#include "memory.h"
#include "system.h"
#include "uapi.h"
#include "vcpu.h"
#include "vm.h"

void AddonData::Untrack(Closable* c) {
  auto it = std::find(open.begin(), open.end(), c);
  if (it != open.end()) open.erase(it);
}

void AddonData::CloseAll() {
  // vCPUs first: their threads are kicked and joined before anything they use goes away.
  Napi::HandleScope scope(env);  // closing detaches ArrayBuffers, which needs handles
  std::vector<Closable*> order = open;
  std::stable_sort(order.begin(), order.end(), [](Closable* a, Closable* b) { return a->kind() < b->kind(); });
  for (Closable* c : order) c->CloseHandles();
}

// init({ KvmError, maxBufferLength }): the error class every failure is thrown as, and
// buffer.constants.MAX_LENGTH of this Node.js.
static Napi::Value InitAddon(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "init({ KvmError, maxBufferLength })");
  Napi::Object options = info[0].As<Napi::Object>();
  Napi::Value ctor = options.Get("KvmError");
  if (!ctor.IsFunction()) throw Napi::TypeError::New(env, "init({ KvmError }): KvmError must be a class");
  AddonData* data = AddonData::Of(env);
  data->kvmError = Napi::Persistent(ctor.As<Napi::Function>());
  Napi::Value max = options.Get("maxBufferLength");
  if (max.IsNumber()) data->maxBufferLength = max.As<Napi::Number>().DoubleValue();
  return env.Undefined();
}

static Napi::Object Layout(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("pageSize", Napi::Number::New(env, static_cast<double>(sysconf(_SC_PAGESIZE))));
  o.Set("dirtyGfnSize", Napi::Number::New(env, sizeof(kvm_dirty_gfn)));
  o.Set("dirtyGfnSlotOffset", Napi::Number::New(env, offsetof(kvm_dirty_gfn, slot)));
  o.Set("dirtyGfnOffsetOffset", Napi::Number::New(env, offsetof(kvm_dirty_gfn, offset)));
  o.Set("dirtyLogPageOffset", Napi::Number::New(env, KVM_DIRTY_LOG_PAGE_OFFSET));
  o.Set("kvmRunImmediateExitOffset", Napi::Number::New(env, offsetof(kvm_run, immediate_exit)));
  o.Set("kvmRunExitReasonOffset", Napi::Number::New(env, offsetof(kvm_run, exit_reason)));
  o.Set("cmmaLogSize", Napi::Number::New(env, sizeof(kvm_s390_cmma_log)));
  o.Set("kickSignal", Napi::Number::New(env, KickSignal()));
  // Where each field of an exit sits in a vCPU's exitState (lib/native/backend.ts reads them).
  Napi::Object exit = Napi::Object::New(env);
  exit.Set("reason", Napi::Number::New(env, kExitReason));
  exit.Set("ioDirection", Napi::Number::New(env, kExitIoDirection));
  exit.Set("ioSize", Napi::Number::New(env, kExitIoSize));
  exit.Set("ioPort", Napi::Number::New(env, kExitIoPort));
  exit.Set("ioCount", Napi::Number::New(env, kExitIoCount));
  exit.Set("ioValue", Napi::Number::New(env, kExitIoValue));
  exit.Set("mmioPhysAddr", Napi::Number::New(env, kExitMmioPhysAddr));
  exit.Set("mmioLen", Napi::Number::New(env, kExitMmioLen));
  exit.Set("mmioIsWrite", Napi::Number::New(env, kExitMmioIsWrite));
  exit.Set("mmioData", Napi::Number::New(env, kExitMmioData));
  exit.Set("hasDetail", Napi::Number::New(env, kExitHasDetail));
  exit.Set("detailHigh", Napi::Number::New(env, kExitDetailHigh));
  exit.Set("detailLow", Napi::Number::New(env, kExitDetailLow));
  o.Set("exitFields", exit);
#if defined(__x86_64__) || defined(__i386__)
  // The state structs as compiled (lib/kvm-structs.ts encodes the same layouts).
  Napi::Object st = Napi::Object::New(env);
  auto set = [&](const char* k, size_t v) { st.Set(k, Napi::Number::New(env, static_cast<double>(v))); };
  set("regs", sizeof(kvm_regs));
  set("sregs", sizeof(kvm_sregs));
  set("sregsInterruptBitmap", offsetof(kvm_sregs, interrupt_bitmap));
  set("fpu", sizeof(kvm_fpu));
  set("fpuXmm", offsetof(kvm_fpu, xmm));
  set("fpuMxcsr", offsetof(kvm_fpu, mxcsr));
  set("xsave", sizeof(kvm_xsave_region));
  set("xcrs", sizeof(kvm_xcrs));
  set("msrsHeader", sizeof(kvm_msrs_header));
  set("msrEntry", sizeof(kvm_msr_entry));
  set("lapic", sizeof(kvm_lapic_state));
  set("vcpuEvents", sizeof(kvm_vcpu_events));
  set("vcpuEventsSipiVector", offsetof(kvm_vcpu_events, sipi_vector));
  set("vcpuEventsSmi", offsetof(kvm_vcpu_events, smi));
  set("vcpuEventsExceptionHasPayload", offsetof(kvm_vcpu_events, exception_has_payload));
  set("vcpuEventsExceptionPayload", offsetof(kvm_vcpu_events, exception_payload));
  set("debugregs", sizeof(kvm_debugregs));
  set("debugregsFlags", offsetof(kvm_debugregs, flags));
  set("cpuidHeader", sizeof(kvm_cpuid2_header));
  set("cpuidEntry", sizeof(kvm_cpuid_entry2));
  set("irqchip", sizeof(kvm_irqchip));
  set("irqchipChip", offsetof(kvm_irqchip, chip));
  set("ioapicRedirtbl", offsetof(kvm_ioapic_state, redirtbl));
  set("pitState2", sizeof(kvm_pit_state2));
  set("pitState2Flags", offsetof(kvm_pit_state2, flags));
  set("pitChannelCountLoadTime", offsetof(kvm_pit_channel_state, count_load_time));
  set("clockData", sizeof(kvm_clock_data));
  set("clockDataRealtime", offsetof(kvm_clock_data, realtime));
  set("clockDataHostTsc", offsetof(kvm_clock_data, host_tsc));
  o.Set("stateStructs", st);
#endif
  return o;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData(env);
  env.SetInstanceData(data);  // deleted by node-addon-api at environment teardown
  data->systemCtor = Napi::Persistent(System::Define(env));
  data->vmCtor = Napi::Persistent(Vm::Define(env));
  data->memoryCtor = Napi::Persistent(Memory::Define(env));
  data->vcpuCtor = Napi::Persistent(Vcpu::Define(env));
  // Worker or process exit: close whatever JS left open (join vCPU threads, unmap, close fds).
  napi_add_env_cleanup_hook(env, [](void* arg) { static_cast<AddonData*>(arg)->CloseAll(); }, data);

  exports.Set("System", data->systemCtor.Value());
  exports.Set("Vm", data->vmCtor.Value());
  exports.Set("Memory", data->memoryCtor.Value());
  exports.Set("Vcpu", data->vcpuCtor.Value());
  exports.Set("init", Napi::Function::New<InitAddon>(env, "init"));
  exports.Set("layout", Layout(env));
  return exports;
}

NODE_API_MODULE(kvm_dirty, Init)
