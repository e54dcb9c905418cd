// s390 storage attributes of a VM: KVM_S390_GET_CMMA_BITS / KVM_S390_SET_CMMA_BITS. The requests
// are made on every arch; elsewhere the kernel answers ENOTTY, which comes back as KvmError.
#include <sys/ioctl.h>

#include <cerrno>

#include "errors.h"
#include "uapi.h"
#include "vm.h"

// getCmmaBits(startGfn, count, flags, values: Uint8Array) -> { startGfn, count, flags, remaining }
Napi::Value Vm::GetCmmaBits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_S390_GET_CMMA_BITS");
  kvm_s390_cmma_log log{};
  log.start_gfn = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  log.count = info[1].As<Napi::Number>().Uint32Value();
  log.flags = info[2].As<Napi::Number>().Uint32Value();
  Napi::Uint8Array values = info[3].As<Napi::Uint8Array>();
  // the kernel writes up to count values there
  if (values.ByteLength() < log.count) throw Napi::RangeError::New(env, "getCmmaBits: values is shorter than count");
  log.values = reinterpret_cast<uint64_t>(values.Data());
  if (ioctl(fd, KVM_S390_GET_CMMA_BITS, &log) < 0) ThrowKvmError(env, errno, "KVM_S390_GET_CMMA_BITS");  // CMMA values (and in migration mode: collect dirty ones)
  Napi::Object out = Napi::Object::New(env);
  out.Set("startGfn", Napi::Number::New(env, static_cast<double>(log.start_gfn)));
  out.Set("count", Napi::Number::New(env, log.count));
  out.Set("flags", Napi::Number::New(env, log.flags));
  out.Set("remaining", Napi::Number::New(env, static_cast<double>(log.remaining)));
  return out;
}

// setCmmaBits(startGfn, count, flags, mask: bigint, values: Uint8Array)
Napi::Value Vm::SetCmmaBits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_S390_SET_CMMA_BITS");
  kvm_s390_cmma_log log{};
  log.start_gfn = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  log.count = info[1].As<Napi::Number>().Uint32Value();
  log.flags = info[2].As<Napi::Number>().Uint32Value();
  log.mask = ToU64(info[3]);
  Napi::Uint8Array values = info[4].As<Napi::Uint8Array>();
  // the kernel reads count values from there
  if (values.ByteLength() < log.count) throw Napi::RangeError::New(env, "setCmmaBits: values is shorter than count");
  log.values = reinterpret_cast<uint64_t>(values.Data());
  if (ioctl(fd, KVM_S390_SET_CMMA_BITS, &log) < 0) ThrowKvmError(env, errno, "KVM_S390_SET_CMMA_BITS");  // set CMMA values under mask (PGSTE bit positions)
  return env.Undefined();
}
