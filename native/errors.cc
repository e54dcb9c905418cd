#include "errors.h"

#include <cstring>

#include "addon.h"

Napi::Object MakeKvmError(Napi::Env env, int err, const char* ioctl, const char* detail, const char* syscall) {
  Napi::Value ioctlName = ioctl ? Napi::String::New(env, ioctl) : env.Undefined();
  Napi::Value detailText = detail ? Napi::String::New(env, detail) : env.Undefined();
  AddonData* data = AddonData::Of(env);
  if (data != nullptr && !data->kvmError.IsEmpty()) {
    return data->kvmError.New({Napi::Number::New(env, err), ioctlName, detailText, Napi::String::New(env, syscall)});
  }
  // init({ KvmError }) not called yet (only lib/native/binding.ts loads the addon, and it calls
  // init first): a plain Error with the same fields.
  Napi::Object e = Napi::Error::New(env, std::string(strerror(err)) + ", " + syscall + (ioctl ? std::string(" ") + ioctl : "")).Value();
  const char* code = strerrorname_np(err);
  e.Set("code", Napi::String::New(env, code ? code : "UNKNOWN"));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (ioctl) e.Set("ioctl", ioctlName);
  return e;
}

void ThrowKvmError(Napi::Env env, int err, const char* ioctl, const char* detail, const char* syscall) {
  throw Napi::Error(env, MakeKvmError(env, err, ioctl, detail, syscall));
}
