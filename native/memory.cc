#include "memory.h"

#include <unistd.h>

#include "errors.h"

Napi::Function Memory::Define(Napi::Env env) {
  return DefineClass(env, "Memory",
                     {
                         InstanceAccessor<&Memory::GetBuffer>("buffer"),
                         InstanceAccessor<&Memory::GetSize>("size"),
                         InstanceMethod<&Memory::View>("view"),
                         InstanceMethod<&Memory::Close>("close"),
                     });
}

Napi::Object Memory::Create(Napi::Env env, int64_t size) {
  int64_t page = sysconf(_SC_PAGESIZE);
  if (size <= 0 || size % page != 0) throw Napi::RangeError::New(env, "createMemory: size must be a positive multiple of the page size");
  int err = 0;
  // Guest RAM. MAP_SHARED so the VMM (and a checkpoint writer) sees exactly what the guest
  // wrote; MAP_NORESERVE so a 64 GiB guest costs only the pages it touches.
  std::shared_ptr<Mapping> m = Mapping::Map(static_cast<size_t>(size), PROT_READ | PROT_WRITE,
                                            MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, &err);
  if (!m) ThrowKvmError(env, err, nullptr, "guest memory", "mmap");
  return AddonData::Of(env)->memoryCtor.New({Napi::External<std::shared_ptr<Mapping>>::New(env, &m)});
}

std::shared_ptr<Mapping> Memory::MappingOf(Napi::Env env, const Napi::Value& value) {
  Napi::FunctionReference& ctor = AddonData::Of(env)->memoryCtor;
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(ctor.Value())) {
    throw Napi::TypeError::New(env, "expected guest memory created by this VM's createMemory()");
  }
  return Unwrap(value.As<Napi::Object>())->mapping_;
}

Memory::Memory(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Memory>(info), data_(AddonData::Of(info.Env())) {
  mapping_ = *ConstructionToken<std::shared_ptr<Mapping>>(info);
  data_->Track(this);
}

// Collected without close(): a buffer JS still holds keeps the mapping alive (its finalizer
// owns a reference), so only this object's reference goes.
Memory::~Memory() {
  if (open_) data_->Untrack(this);
}

void Memory::CloseHandles() {
  if (!open_) return;
  open_ = false;
  mapping_->Close();
  data_->Untrack(this);
}

Napi::Value Memory::GetBuffer(const Napi::CallbackInfo& info) { return mapping_->Buffer(info.Env()); }

Napi::Value Memory::GetSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(mapping_->size()));
}

// view(offset, length): a Uint8Array over part of the memory (its own ArrayBuffer), for
// memories larger than one ArrayBuffer may be (buffer.constants.MAX_LENGTH, 4 GiB on Node 20).
// Detached on close().
Napi::Value Memory::View(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double offset = info[0].As<Napi::Number>().DoubleValue();
  double length = info[1].As<Napi::Number>().DoubleValue();
  double size = static_cast<double>(mapping_->size());
  if (!(offset >= 0) || !(length >= 0) || offset + length > size || offset != static_cast<double>(static_cast<size_t>(offset)) ||
      length != static_cast<double>(static_cast<size_t>(length))) {
    throw Napi::RangeError::New(env, "view(offset, length): the range must be integers within the memory");
  }
  Napi::ArrayBuffer window = mapping_->Window(env, static_cast<size_t>(offset), static_cast<size_t>(length));
  return Napi::Uint8Array::New(env, window.ByteLength(), window, 0);
}

Napi::Value Memory::Close(const Napi::CallbackInfo& info) {
  CloseHandles();
  return info.Env().Undefined();
}
