// Memory: guest RAM, anonymous shared memory (a memfd) handed to JS as one external ArrayBuffer.
#pragma once

#include <napi.h>

#include <memory>

#include "addon.h"
#include "fd.h"
#include "mapping.h"

class Memory : public Napi::ObjectWrap<Memory>, public Closable {
 public:
  static Napi::Function Define(Napi::Env env);
  // Maps `size` bytes (a positive multiple of the page size) and wraps them.
  static Napi::Object Create(Napi::Env env, int64_t size);
  // The mapping behind a Memory object (TypeError for anything else).
  static std::shared_ptr<Mapping> MappingOf(Napi::Env env, const Napi::Value& value);

  explicit Memory(const Napi::CallbackInfo& info);
  ~Memory() override;

  Kind kind() const override { return Kind::Memory; }
  void CloseHandles() override;

 private:
  Napi::Value GetBuffer(const Napi::CallbackInfo& info);
  Napi::Value GetSize(const Napi::CallbackInfo& info);
  Napi::Value View(const Napi::CallbackInfo& info);
  Napi::Value DataRanges(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  // What Create() hands the constructor.
  struct Init {
    std::shared_ptr<Mapping> mapping;
    UniqueFd fd;
  };

  AddonData* data_;
  std::shared_ptr<Mapping> mapping_;
  UniqueFd fd_;  // the memfd behind the mapping, for SEEK_DATA/SEEK_HOLE
  bool open_ = true;
};
