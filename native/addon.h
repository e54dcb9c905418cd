// Per-environment state of the addon (one per Node.js environment: main thread or worker).
#pragma once

#include <napi.h>

#include <vector>

// An object that holds kernel resources (an fd, mappings, a thread). The environment's
// cleanup hook closes every one still open when the environment exits.
class Closable {
 public:
  // Teardown order at environment exit: vCPUs (threads joined) before everything else.
  enum class Kind { Vcpu, Memory, Vm, System };
  virtual ~Closable() = default;
  virtual Kind kind() const = 0;
  // Releases the resources. Idempotent.
  virtual void CloseHandles() = 0;
};

struct AddonData {
  explicit AddonData(napi_env e) : env(e) {}
  napi_env env;
  // buffer.constants.MAX_LENGTH: the largest external ArrayBuffer Node-API can make.
  double maxBufferLength = 4294967296.0;
  // lib/errors.ts KvmError, handed over once through init({ KvmError }).
  Napi::FunctionReference kvmError;
  // Constructors of the native classes; children are created only through their parent.
  Napi::FunctionReference systemCtor, vmCtor, memoryCtor, vcpuCtor;
  // Objects whose resources are still held.
  std::vector<Closable*> open;

  static AddonData* Of(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
  void Track(Closable* c) { open.push_back(c); }
  void Untrack(Closable* c);
  // Closes everything still open (environment exit).
  void CloseAll();
};

// Guards a native constructor: children are made by their parent, which passes an External
// token carrying the resources; JS cannot construct them directly.
template <typename T>
T* ConstructionToken(const Napi::CallbackInfo& info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "This type cannot be created directly");
  }
  return info[0].As<Napi::External<T>>().Data();
}
