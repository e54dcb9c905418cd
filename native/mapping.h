// Mapping: one mmap()ed region, unmapped exactly once, and the ArrayBuffers JS sees over it.
//
// The ArrayBuffers are external (zero-copy). Each one's finalizer holds a shared_ptr to the
// Mapping, so a buffer still reachable from JS keeps the memory mapped; the finalizer only
// drops that reference, so close-then-GC can never unmap twice. Close() DETACHES every buffer
// (byteLength 0; typed arrays over it read as empty) before it unmaps, so JS never touches
// freed memory.
//
// Guest RAM registered in a memory slot is also "pinned" by the VM: the kernel keeps the
// address in the memslot, so a closed but pinned mapping is replaced by an inaccessible
// reservation (the pages are freed, the address range cannot be reused by another mmap that
// the guest would then write into) and unmapped when the last pin goes.
#pragma once

#include <napi.h>
#include <sys/mman.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"

class Mapping : public std::enable_shared_from_this<Mapping> {
 public:
  // mmap(2); on failure returns null with *err = errno.
  static std::shared_ptr<Mapping> Map(size_t length, int prot, int flags, int fd, off_t offset, int* err) {
    void* addr = mmap(nullptr, length, prot, flags, fd, offset);
    if (addr == MAP_FAILED) {
      *err = errno;
      return nullptr;
    }
    return std::shared_ptr<Mapping>(new Mapping(addr, length));
  }

  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { Unmap(); }

  // Host address of the first byte (null once unmapped).
  void* addr() const { return closed_ ? nullptr : addr_; }
  size_t size() const { return length_; }
  bool closed() const { return closed_; }

  // The ArrayBuffer over the whole mapping: the same object on every call while it lives;
  // once the mapping is closed, an empty (byteLength 0) buffer.
  Napi::ArrayBuffer Buffer(Napi::Env env) {
    if (!whole_.IsEmpty()) {
      Napi::Value v = whole_.Value();
      if (!v.IsEmpty()) return v.As<Napi::ArrayBuffer>();
    }
    if (closed_) return Napi::ArrayBuffer::New(env, 0);
    Napi::ArrayBuffer ab = Wrap(env, 0, length_);
    whole_ = Napi::Reference<Napi::ArrayBuffer>::New(ab, 0);
    return ab;
  }

  // A new ArrayBuffer over [offset, offset + length) (the caller checked the range); closed:
  // an empty one. For mappings larger than one ArrayBuffer may be.
  Napi::ArrayBuffer Window(Napi::Env env, size_t offset, size_t length) {
    if (closed_) return Napi::ArrayBuffer::New(env, 0);
    return Wrap(env, offset, length);
  }

  // Detaches every buffer JS still holds, then unmaps (or, while pinned, frees the pages and
  // keeps the range reserved). Idempotent. JS thread only.
  void Close() {
    if (closed_) return;
    closed_ = true;
    for (auto& ref : views_) {
      Napi::Value v = ref.Value();
      if (!v.IsEmpty() && !v.As<Napi::ArrayBuffer>().IsDetached()) v.As<Napi::ArrayBuffer>().Detach();
    }
    views_.clear();
    whole_.Reset();
    if (pins_ == 0) {
      Unmap();
    } else {
      // The VM still names this range in a memslot: swap in an inaccessible reservation so
      // guest accesses fail (EFAULT) instead of reaching whatever would be mapped here next.
      mmap(addr_, length_, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    }
  }

  // A memory slot refers to this mapping (KVM_SET_USER_MEMORY_REGION succeeded).
  void Pin() { ++pins_; }
  // That slot is gone (deleted, replaced, or its VM closed).
  void Unpin() {
    if (--pins_ == 0 && closed_) Unmap();
  }

 private:
  Mapping(void* addr, size_t length) : addr_(addr), length_(length) {}

  // An external ArrayBuffer over [offset, offset + length), remembered (weakly) for Close().
  Napi::ArrayBuffer Wrap(Napi::Env env, size_t offset, size_t length) {
    // Node-API builds external ArrayBuffers through node::Buffer, so they are capped at
    // buffer.constants.MAX_LENGTH (2^32 on Node 20); beyond it Node frees the finalizer data
    // and node-addon-api frees it again. Refuse before that.
    if (length > AddonData::Of(env)->maxBufferLength) {
      throw Napi::RangeError::New(env, "an ArrayBuffer of " + std::to_string(length) +
                                           " bytes is larger than this Node.js allows (buffer.constants.MAX_LENGTH = " +
                                           std::to_string(static_cast<uint64_t>(AddonData::Of(env)->maxBufferLength)) +
                                           "); use a view of at most that size");
    }
    views_.erase(std::remove_if(views_.begin(), views_.end(), [](auto& r) { return r.Value().IsEmpty(); }), views_.end());
    auto* keepMapped = new std::shared_ptr<Mapping>(shared_from_this());
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
        env, static_cast<char*>(addr_) + offset, length,
        [](Napi::Env, void*, std::shared_ptr<Mapping>* hint) { delete hint; }, keepMapped);
    // Weak: the buffer's lifetime is JS's business; the reference only lets Close() find it.
    views_.push_back(Napi::Reference<Napi::ArrayBuffer>::New(ab, 0));
    return ab;
  }

  void Unmap() {
    if (addr_ != nullptr) munmap(addr_, length_);  // the region this object mapped (or its reservation), once
    addr_ = nullptr;
    closed_ = true;
  }

  void* addr_;
  size_t length_;
  bool closed_ = false;
  int pins_ = 0;
  std::vector<Napi::Reference<Napi::ArrayBuffer>> views_;  // every buffer handed out
  Napi::Reference<Napi::ArrayBuffer> whole_;               // Buffer()'s, also in views_
};
