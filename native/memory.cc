#include "memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "errors.h"

Napi::Function Memory::Define(Napi::Env env) {
  return DefineClass(env, "Memory",
                     {
                         InstanceAccessor<&Memory::GetBuffer>("buffer"),
                         InstanceAccessor<&Memory::GetSize>("size"),
                         InstanceMethod<&Memory::View>("view"),
                         InstanceMethod<&Memory::DataRanges>("dataRanges"),
                         InstanceMethod<&Memory::Close>("close"),
                     });
}

Napi::Object Memory::Create(Napi::Env env, int64_t size) {
  int64_t page = sysconf(_SC_PAGESIZE);
  if (size <= 0 || size % page != 0) throw Napi::RangeError::New(env, "createMemory: size must be a positive multiple of the page size");
  // Guest RAM is anonymous shared memory held by a memfd, so that SEEK_DATA/SEEK_HOLE can say
  // which pages were ever written (dataRanges): a full copy then reads only those, where
  // reading the rest of shmem would allocate every page of the guest.
  UniqueFd fd(memfd_create("kvm-dirty:guest", MFD_CLOEXEC));
  if (!fd.valid()) ThrowKvmError(env, errno, nullptr, "guest memory", "memfd_create");
  // Sizes the file; shmem allocates a page only when it is first touched.
  if (ftruncate(fd.get(), size) != 0) ThrowKvmError(env, errno, nullptr, "guest memory", "ftruncate");
  int err = 0;
  // MAP_SHARED so the VMM (and a checkpoint writer) sees exactly what the guest wrote;
  // MAP_NORESERVE: no commit charge up front (the memfd is sparse: a 64 GiB guest costs the pages it touches).
  std::shared_ptr<Mapping> m = Mapping::Map(static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get(), 0, &err);
  if (!m) ThrowKvmError(env, err, nullptr, "guest memory", "mmap");
  Init init{std::move(m), std::move(fd)};
  return AddonData::Of(env)->memoryCtor.New({Napi::External<Init>::New(env, &init)});
}

std::shared_ptr<Mapping> Memory::MappingOf(Napi::Env env, const Napi::Value& value) {
  Napi::FunctionReference& ctor = AddonData::Of(env)->memoryCtor;
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(ctor.Value())) {
    throw Napi::TypeError::New(env, "expected guest memory created by this VM's createMemory()");
  }
  return Unwrap(value.As<Napi::Object>())->mapping_;
}

Memory::Memory(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Memory>(info), data_(AddonData::Of(info.Env())) {
  Init* init = ConstructionToken<Init>(info);
  mapping_ = std::move(init->mapping);
  fd_ = std::move(init->fd);
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
  fd_.reset();
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

// dataRanges(): [start, end, start, end, ...] byte ranges the memfd holds pages for (written,
// read-faulted, or swapped out); every byte outside them reads as zero.
Napi::Value Memory::DataRanges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!open_) ThrowKvmError(env, EBADF, nullptr, "the guest memory is closed");
  std::vector<double> ranges;
  off_t size = static_cast<off_t>(mapping_->size());
  for (off_t pos = 0; pos < size;) {
    off_t start = lseek(fd_.get(), pos, SEEK_DATA);  // the next page shmem holds
    if (start < 0 && errno == ENXIO) break;          // none after pos
    if (start < 0) ThrowKvmError(env, errno, nullptr, "guest memory", "lseek");
    off_t end = lseek(fd_.get(), start, SEEK_HOLE);  // where that run of pages ends (size at the latest)
    if (end < 0) ThrowKvmError(env, errno, nullptr, "guest memory", "lseek");
    ranges.push_back(static_cast<double>(start));
    ranges.push_back(static_cast<double>(end));
    pos = end;
  }
  Napi::Float64Array out = Napi::Float64Array::New(env, ranges.size());
  std::copy(ranges.begin(), ranges.end(), out.Data());
  return out;
}

Napi::Value Memory::Close(const Napi::CallbackInfo& info) {
  CloseHandles();
  return info.Env().Undefined();
}
