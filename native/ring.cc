// The per-vCPU dirty ring: its mapping and the batch harvest (the JS harvester in lib/ring.ts
// follows the same protocol; tests hold the two to identical results).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "errors.h"
#include "uapi.h"
#include "vcpu.h"

std::shared_ptr<Mapping> MapDirtyRing(int vcpuFd, uint32_t bytes, int* err) {
  // struct kvm_dirty_gfn[bytes / 16] at page KVM_DIRTY_LOG_PAGE_OFFSET of the vCPU fd; the
  // kernel refuses a private or executable mapping of it.
  off_t offset = static_cast<off_t>(KVM_DIRTY_LOG_PAGE_OFFSET) * sysconf(_SC_PAGESIZE);
  return Mapping::Map(bytes, PROT_READ | PROT_WRITE, MAP_SHARED, vcpuFd, offset, err);
}

// From free-running index `fetch`, collects up to `max` entries while their flags are exactly
// DIRTY: acquire load of flags (the kernel wrote slot/offset before it set DIRTY), copy, then
// a release store of RESET (our reads are done before KVM may reuse the entry).
uint32_t HarvestDirtyGfns(kvm_dirty_gfn* gfns, uint32_t entries, uint64_t fetch, uint32_t max, uint32_t* slots,
                          double* offsets) {
  uint32_t n = 0;
  for (; n < max; n++) {
    kvm_dirty_gfn* e = &gfns[(fetch + n) & (entries - 1)];
    if (__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) != KVM_DIRTY_GFN_F_DIRTY) break;
    slots[n] = e->slot;
    offsets[n] = static_cast<double>(e->offset);
    __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
  }
  return n;
}

// harvestRing(fetch, max, slots: Uint32Array, offsets: Float64Array, start) -> count
Napi::Value Vcpu::HarvestRing(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) ThrowKvmError(env, EBADF, nullptr);
  if (!ring_) throw Napi::TypeError::New(env, "harvestRing: this vCPU has no dirty ring");
  double fetch = info[0].As<Napi::Number>().DoubleValue();
  double max = info[1].As<Napi::Number>().DoubleValue();
  Napi::Uint32Array slots = info[2].As<Napi::Uint32Array>();
  Napi::Float64Array offsets = info[3].As<Napi::Float64Array>();
  double start = info[4].As<Napi::Number>().DoubleValue();
  size_t room = std::min(slots.ElementLength(), offsets.ElementLength());
  if (!(fetch >= 0) || !(max >= 0) || !(start >= 0) || start > static_cast<double>(room)) {
    throw Napi::RangeError::New(env, "harvestRing: fetch, max and start must be non-negative, start within the output");
  }
  size_t first = static_cast<size_t>(start);
  uint32_t entries = static_cast<uint32_t>(ring_->size() / sizeof(kvm_dirty_gfn));
  // never past the output's capacity, never more than one lap of the ring
  uint32_t limit = static_cast<uint32_t>(std::min<double>({max, static_cast<double>(room - first), static_cast<double>(entries)}));
  uint32_t n = HarvestDirtyGfns(static_cast<kvm_dirty_gfn*>(ring_->addr()), entries, static_cast<uint64_t>(fetch), limit,
                                slots.Data() + first, offsets.Data() + first);
  return Napi::Number::New(env, n);
}

Vcpu* Vcpu::From(Napi::Env env, const Napi::Value& value) {
  Napi::FunctionReference& ctor = AddonData::Of(env)->vcpuCtor;
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(ctor.Value())) {
    throw Napi::TypeError::New(env, "harvestRings: expected vCPUs created by this VM's createVcpu()");
  }
  return Unwrap(value.As<Napi::Object>());
}

// harvestRings(vcpus, fetch: Float64Array, slots: Uint32Array, offsets: Float64Array, start, counts: Uint32Array) -> total
// Every ring of a VM in one call (a checkpoint collects all of them each epoch): vCPU i's DIRTY
// entries from its fetch index fetch[i], after those of vCPU i - 1, each ring at most one lap
// and all of them never past the output; counts[i] = the entries taken from ring i. The fetch
// indexes stay in JS (lib/ring.ts), which advances them by counts.
Napi::Value Vm::HarvestRings(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fd(env, nullptr);
  Napi::Array vcpus = info[0].As<Napi::Array>();
  Napi::Float64Array fetch = info[1].As<Napi::Float64Array>();
  Napi::Uint32Array slots = info[2].As<Napi::Uint32Array>();
  Napi::Float64Array offsets = info[3].As<Napi::Float64Array>();
  double start = info[4].As<Napi::Number>().DoubleValue();
  Napi::Uint32Array counts = info[5].As<Napi::Uint32Array>();
  uint32_t n = vcpus.Length();
  size_t room = std::min(slots.ElementLength(), offsets.ElementLength());
  if (fetch.ElementLength() < n || counts.ElementLength() < n || !(start >= 0) || start > static_cast<double>(room)) {
    throw Napi::RangeError::New(env, "harvestRings: fetch and counts need an element per vCPU, start must lie within the output");
  }
  // Checked before anything is collected: a harvest either takes every ring's entries or none.
  std::vector<Vcpu*> v(n);
  for (uint32_t i = 0; i < n; i++) {
    v[i] = Vcpu::From(env, vcpus.Get(i));
    if (v[i]->closed()) ThrowKvmError(env, EBADF, nullptr, "a vCPU of harvestRings() is closed");
    if (v[i]->vmState() != state_.get()) throw Napi::TypeError::New(env, "harvestRings: a vCPU of another VM");
    if (!v[i]->ring()) throw Napi::TypeError::New(env, "harvestRings: a vCPU without a dirty ring");
    if (!(fetch[i] >= 0)) throw Napi::RangeError::New(env, "harvestRings: fetch indexes must be non-negative");
  }
  size_t at = static_cast<size_t>(start);
  for (uint32_t i = 0; i < n; i++) {
    Mapping* ring = v[i]->ring();
    uint32_t entries = static_cast<uint32_t>(ring->size() / sizeof(kvm_dirty_gfn));
    uint32_t limit = static_cast<uint32_t>(std::min<size_t>(room - at, entries));
    uint32_t got = HarvestDirtyGfns(static_cast<kvm_dirty_gfn*>(ring->addr()), entries, static_cast<uint64_t>(fetch[i]), limit,
                                    slots.Data() + at, offsets.Data() + at);
    counts[i] = got;
    at += got;
  }
  return Napi::Number::New(env, static_cast<double>(at - static_cast<size_t>(start)));
}
