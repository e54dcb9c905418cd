#include "vm.h"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "errors.h"
#include "memory.h"
#include "uapi.h"
#include "vcpu.h"

VmState::~VmState() {
  for (auto& entry : slots) entry.second.memory->Unpin();
}

void VmState::SetSlot(uint32_t slot, std::shared_ptr<Mapping> memory, uint64_t size) {
  auto it = slots.find(slot);
  if (it != slots.end()) {
    it->second.memory->Unpin();
    slots.erase(it);
  }
  if (size == 0 || !memory) return;
  memory->Pin();
  slots.emplace(slot, Slot{std::move(memory), size});
}

uint64_t ToU64(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  return static_cast<uint64_t>(v.As<Napi::Number>().Int64Value());
}

uint8_t* StructArg(Napi::Env env, const Napi::Value& v, size_t size, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, std::string(what) + ": the struct must be a Uint8Array");
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ByteLength() != size) {
    throw Napi::RangeError::New(env, std::string(what) + ": the struct must be " + std::to_string(size) + " bytes, got " +
                                         std::to_string(a.ByteLength()));
  }
  return a.Data();
}

Napi::Function Vm::Define(Napi::Env env) {
  return DefineClass(env, "Vm",
                     {
                         InstanceMethod<&Vm::CheckExtension>("checkExtension"),
                         InstanceMethod<&Vm::EnableCap>("enableCap"),
                         InstanceMethod<&Vm::CreateMemory>("createMemory"),
                         InstanceMethod<&Vm::SetUserMemoryRegion>("setUserMemoryRegion"),
                         InstanceMethod<&Vm::CreateVcpu>("createVcpu"),
                         InstanceMethod<&Vm::GetDirtyLog>("getDirtyLog"),
                         InstanceMethod<&Vm::ClearDirtyLog>("clearDirtyLog"),
                         InstanceMethod<&Vm::ResetDirtyRings>("resetDirtyRings"),
                         InstanceMethod<&Vm::HarvestRings>("harvestRings"),
                         InstanceMethod<&Vm::SetDeviceAttr>("setDeviceAttr"),
                         InstanceMethod<&Vm::GetDeviceAttr>("getDeviceAttr"),
                         InstanceMethod<&Vm::HasDeviceAttr>("hasDeviceAttr"),
                         InstanceMethod<&Vm::CreateIrqchip>("createIrqchip"),
                         InstanceMethod<&Vm::CreatePit2>("createPit2"),
                         InstanceMethod<&Vm::SetTssAddr>("setTssAddr"),
                         InstanceMethod<&Vm::SetIdentityMapAddr>("setIdentityMapAddr"),
                         InstanceMethod<&Vm::IrqLine>("irqLine"),
                         InstanceMethod<&Vm::GetIrqchip>("getIrqchip"),
                         InstanceMethod<&Vm::SetIrqchip>("setIrqchip"),
                         InstanceMethod<&Vm::GetPit2>("getPit2"),
                         InstanceMethod<&Vm::SetPit2>("setPit2"),
                         InstanceMethod<&Vm::GetClock>("getClock"),
                         InstanceMethod<&Vm::SetClock>("setClock"),
                         InstanceMethod<&Vm::GetCmmaBits>("getCmmaBits"),
                         InstanceMethod<&Vm::SetCmmaBits>("setCmmaBits"),
                         InstanceMethod<&Vm::Close>("close"),
                     });
}

Vm::Vm(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Vm>(info), data_(AddonData::Of(info.Env())) {
  VmInit* init = ConstructionToken<VmInit>(info);
  fd_ = std::move(init->fd);
  vcpuMmapSize_ = init->vcpuMmapSize;
  cpuid_ = std::move(init->cpuid);
  state_ = std::make_shared<VmState>();
  data_->Track(this);
}

Vm::~Vm() { CloseHandles(); }

void Vm::CloseHandles() {
  if (!fd_.valid()) return;
  fd_.reset();
  state_.reset();  // the memslots go with the VM once its vCPUs are closed too
  data_->Untrack(this);
}

int Vm::Fd(Napi::Env env, const char* ioctl) const {
  if (!fd_.valid()) ThrowKvmError(env, EBADF, ioctl);
  return fd_.get();
}

Napi::Value Vm::CheckExtension(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long cap = info[0].As<Napi::Number>().Int64Value();
  int r = ioctl(Fd(env, "KVM_CHECK_EXTENSION"), KVM_CHECK_EXTENSION, cap);  // per-VM answer (may differ by VM type)
  if (r < 0) ThrowKvmError(env, errno, "KVM_CHECK_EXTENSION");
  return Napi::Number::New(env, r);
}

// enableCap(cap, [a0, a1, a2, a3] (bigint | number), flags) -> ioctl result
Napi::Value Vm::EnableCap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  kvm_enable_cap cap{};
  cap.cap = info[0].As<Napi::Number>().Uint32Value();
  Napi::Array args = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < 4 && i < args.Length(); i++) cap.args[i] = ToU64(args.Get(i));
  cap.flags = info[2].As<Napi::Number>().Uint32Value();
  int r = ioctl(Fd(env, "KVM_ENABLE_CAP"), KVM_ENABLE_CAP, &cap);  // VM-wide capability (ring size, manual protect, ...)
  if (r < 0) ThrowKvmError(env, errno, "KVM_ENABLE_CAP");
  return Napi::Number::New(env, r);
}

Napi::Value Vm::CreateMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fd(env, nullptr);
  return Memory::Create(env, info[0].As<Napi::Number>().Int64Value());
}

// setUserMemoryRegion(slot, flags, guestPhysAddr, memorySize, memory | null, memoryOffset)
Napi::Value Vm::SetUserMemoryRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_SET_USER_MEMORY_REGION");
  kvm_userspace_memory_region region{};
  region.slot = info[0].As<Napi::Number>().Uint32Value();
  region.flags = info[1].As<Napi::Number>().Uint32Value();
  region.guest_phys_addr = static_cast<uint64_t>(info[2].As<Napi::Number>().Int64Value());
  region.memory_size = static_cast<uint64_t>(info[3].As<Napi::Number>().Int64Value());
  std::shared_ptr<Mapping> memory;
  if (!info[4].IsNull() && !info[4].IsUndefined()) {
    memory = Memory::MappingOf(env, info[4]);
    uint64_t offset = static_cast<uint64_t>(info[5].As<Napi::Number>().Int64Value());
    // The kernel trusts userspace_addr; a slot reaching past the mapping would let the guest
    // write whatever the process maps there next.
    if (offset > memory->size() || region.memory_size > memory->size() - offset) {
      throw Napi::RangeError::New(env, "setUserMemoryRegion: memoryOffset + memorySize exceeds the memory's size");
    }
    if (memory->closed()) ThrowKvmError(env, EBADF, "KVM_SET_USER_MEMORY_REGION", "memory is closed");
    region.userspace_addr = reinterpret_cast<uint64_t>(memory->addr()) + offset;
  }
  if (ioctl(fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {  // create, move, re-flag or (size 0) delete a memslot
    ThrowKvmError(env, errno, "KVM_SET_USER_MEMORY_REGION");
  }
  state_->SetSlot(region.slot, std::move(memory), region.memory_size);
  return env.Undefined();
}

// createVcpu(id, ringBytes): ringBytes is what KVM_ENABLE_CAP(DIRTY_LOG_RING*) took, 0 without a ring.
Napi::Value Vm::CreateVcpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_CREATE_VCPU");
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  uint32_t ringBytes = info[1].As<Napi::Number>().Uint32Value();
  int vcpuFd = ioctl(fd, KVM_CREATE_VCPU, static_cast<unsigned long>(id));  // a new vCPU; KVM returns it O_CLOEXEC
  if (vcpuFd < 0) ThrowKvmError(env, errno, "KVM_CREATE_VCPU");
  VcpuInit init;
  init.fd = UniqueFd(vcpuFd);
  init.id = id;
  init.vm = state_;
  int err = 0;
  // kvm_run (plus the PIO data page and coalesced MMIO ring) is shared with the kernel; it is
  // where exits are reported and immediate_exit is set.
  init.run = Mapping::Map(vcpuMmapSize_, PROT_READ | PROT_WRITE, MAP_SHARED, vcpuFd, 0, &err);
  if (!init.run) ThrowKvmError(env, err, nullptr, "kvm_run", "mmap");
#if defined(__x86_64__) || defined(__i386__)
  // A vCPU starts with an empty CPUID; without LM the kernel refuses EFER.LME in KVM_SET_SREGS.
  if (ioctl(vcpuFd, KVM_SET_CPUID2, cpuid_->data()) < 0) ThrowKvmError(env, errno, "KVM_SET_CPUID2");
  // How large the vCPU's XSAVE image is (at least 4096 bytes; more with AMX), and so which GET
  // the kernel wants: KVM_GET_XSAVE fails with EINVAL for an image above 4096 bytes.
  int xsave2 = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
  if (xsave2 > 0) {
    init.useXsave2 = true;
    init.xsaveSize = static_cast<uint32_t>(std::max(xsave2, static_cast<int>(sizeof(kvm_xsave_region))));
  }
#endif
  if (ringBytes != 0) {
    init.ring = MapDirtyRing(vcpuFd, ringBytes, &err);
    if (!init.ring) ThrowKvmError(env, err, nullptr, "dirty ring", "mmap");
  }
  return data_->vcpuCtor.New({Napi::External<VcpuInit>::New(env, &init)});
}

// getDirtyLog(slot, bitmap: Uint8Array): the kernel writes ALIGN(npages, 64) / 8 bytes.
Napi::Value Vm::GetDirtyLog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_GET_DIRTY_LOG");
  kvm_dirty_log log{};
  log.slot = info[0].As<Napi::Number>().Uint32Value();
  Napi::Uint8Array bitmap = info[1].As<Napi::Uint8Array>();
  auto it = state_->slots.find(log.slot);
  if (it != state_->slots.end()) {
    uint64_t pages = it->second.size / static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    if (bitmap.ByteLength() < (pages + 63) / 64 * 8) {
      throw Napi::RangeError::New(env, "getDirtyLog: the bitmap is smaller than the slot's ALIGN(pages, 64) bits");
    }
  }
  log.dirty_bitmap = bitmap.Data();
  if (ioctl(fd, KVM_GET_DIRTY_LOG, &log) < 0) ThrowKvmError(env, errno, "KVM_GET_DIRTY_LOG");  // copy (and without manual protect: clear + re-protect) the slot's bitmap
  return env.Undefined();
}

// clearDirtyLog(slot, firstPage, numPages, bitmap): the kernel reads ALIGN(numPages, 64) / 8 bytes.
Napi::Value Vm::ClearDirtyLog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_CLEAR_DIRTY_LOG");
  kvm_clear_dirty_log clear{};
  clear.slot = info[0].As<Napi::Number>().Uint32Value();
  clear.first_page = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
  clear.num_pages = info[2].As<Napi::Number>().Uint32Value();
  Napi::Uint8Array bitmap = info[3].As<Napi::Uint8Array>();
  if (bitmap.ByteLength() < (static_cast<uint64_t>(clear.num_pages) + 63) / 64 * 8) {
    throw Napi::RangeError::New(env, "clearDirtyLog: the mask is smaller than ALIGN(numPages, 64) bits");
  }
  clear.dirty_bitmap = bitmap.Data();
  if (ioctl(fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0) ThrowKvmError(env, errno, "KVM_CLEAR_DIRTY_LOG");  // clear + re-protect the masked pages
  return env.Undefined();
}

Napi::Value Vm::ResetDirtyRings(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_RESET_DIRTY_RINGS");
  // Since v6.17 a pending signal stops the walk and the ioctl returns the count reset so far:
  // 0 when the signal was pending from the start, indistinguishable from "nothing harvested".
  // So no signal may be pending for this thread during the call: block them all (a signal
  // sent meanwhile goes to another thread, or to this one once unblocked below). Then one
  // call walks every ring (its INT_MAX cap is beyond 65536 entries x KVM_MAX_VCPUS); older
  // kernels may still fail it with EINTR, which is retried.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int r;
  do {
    r = ioctl(fd, KVM_RESET_DIRTY_RINGS, 0);  // zero every RESET-marked entry, re-protect those pages
  } while (r < 0 && errno == EINTR);
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (r < 0) ThrowKvmError(env, err, "KVM_RESET_DIRTY_RINGS");
  return Napi::Number::New(env, r);
}

// setDeviceAttr(group, attr, value?: bigint): value (u64) is passed through attr.addr.
Napi::Value Vm::SetDeviceAttr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_SET_DEVICE_ATTR");
  kvm_device_attr attr{};
  attr.group = info[0].As<Napi::Number>().Uint32Value();
  attr.attr = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
  uint64_t value = 0;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    value = ToU64(info[2]);
    attr.addr = reinterpret_cast<uint64_t>(&value);
  }
  if (ioctl(fd, KVM_SET_DEVICE_ATTR, &attr) < 0) ThrowKvmError(env, errno, "KVM_SET_DEVICE_ATTR");  // VM attribute (s390: CMMA, migration)
  return env.Undefined();
}

Napi::Value Vm::GetDeviceAttr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_GET_DEVICE_ATTR");
  kvm_device_attr attr{};
  attr.group = info[0].As<Napi::Number>().Uint32Value();
  attr.attr = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
  uint64_t value = 0;
  attr.addr = reinterpret_cast<uint64_t>(&value);
  if (ioctl(fd, KVM_GET_DEVICE_ATTR, &attr) < 0) ThrowKvmError(env, errno, "KVM_GET_DEVICE_ATTR");  // reads a u64 through attr.addr
  return Napi::BigInt::New(env, value);
}

Napi::Value Vm::HasDeviceAttr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_HAS_DEVICE_ATTR");
  kvm_device_attr attr{};
  attr.group = info[0].As<Napi::Number>().Uint32Value();
  attr.attr = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
  if (ioctl(fd, KVM_HAS_DEVICE_ATTR, &attr) == 0) return Napi::Boolean::New(env, true);  // 0: supported, ENXIO: not
  if (errno == ENXIO) return Napi::Boolean::New(env, false);
  ThrowKvmError(env, errno, "KVM_HAS_DEVICE_ATTR");
}

// ---- x86 in-kernel devices and the VM clock ------------------------------------------------

#if defined(__x86_64__) || defined(__i386__)

Napi::Value Vm::CreateIrqchip(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // PIC master and slave, IOAPIC, and a local APIC for every later vCPU (so: before any vCPU)
  if (ioctl(Fd(env, "KVM_CREATE_IRQCHIP"), KVM_CREATE_IRQCHIP, 0) < 0) ThrowKvmError(env, errno, "KVM_CREATE_IRQCHIP");
  return env.Undefined();
}

// createPit2(flags): KVM_PIT_SPEAKER_DUMMY (1) is the only flag
Napi::Value Vm::CreatePit2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_CREATE_PIT2");
  kvm_pit_config config{};
  config.flags = info[0].As<Napi::Number>().Uint32Value();
  if (ioctl(fd, KVM_CREATE_PIT2, &config) < 0) ThrowKvmError(env, errno, "KVM_CREATE_PIT2");  // the i8254 PIT on IRQ 0 (needs the irqchip)
  return env.Undefined();
}

// setTssAddr(addr): the ioctl takes the address itself, not a pointer
Napi::Value Vm::SetTssAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_SET_TSS_ADDR");
  unsigned long addr = static_cast<unsigned long>(info[0].As<Napi::Number>().Int64Value());
  if (ioctl(fd, KVM_SET_TSS_ADDR, addr) < 0) ThrowKvmError(env, errno, "KVM_SET_TSS_ADDR");  // 3 guest pages VMX needs for real mode
  return env.Undefined();
}

Napi::Value Vm::SetIdentityMapAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_SET_IDENTITY_MAP_ADDR");
  uint64_t addr = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  // the guest page VMX uses for its identity page table in unpaged modes (before any vCPU)
  if (ioctl(fd, KVM_SET_IDENTITY_MAP_ADDR, &addr) < 0) ThrowKvmError(env, errno, "KVM_SET_IDENTITY_MAP_ADDR");
  return env.Undefined();
}

// irqLine(irq, level): a GSI's input line of the in-kernel PIC/IOAPIC
Napi::Value Vm::IrqLine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "KVM_IRQ_LINE");
  kvm_irq_level line{};
  line.irq = info[0].As<Napi::Number>().Uint32Value();
  line.level = info[1].As<Napi::Number>().Uint32Value();
  if (ioctl(fd, KVM_IRQ_LINE, &line) < 0) ThrowKvmError(env, errno, "KVM_IRQ_LINE");  // raise or lower the line
  return env.Undefined();
}

// One fixed-size struct in or out through the VM fd.
static Napi::Value VmStructIoctl(const Napi::CallbackInfo& info, int fd, unsigned long request, const char* name, size_t size) {
  Napi::Env env = info.Env();
  uint8_t* data = StructArg(env, info[0], size, name);
  if (ioctl(fd, request, data) < 0) ThrowKvmError(env, errno, name);
  return env.Undefined();
}

// struct kvm_irqchip: chip_id (PIC master 0, slave 1, IOAPIC 2) chooses the chip
Napi::Value Vm::GetIrqchip(const Napi::CallbackInfo& info) {
  return VmStructIoctl(info, Fd(info.Env(), "KVM_GET_IRQCHIP"), KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP", sizeof(kvm_irqchip));
}
Napi::Value Vm::SetIrqchip(const Napi::CallbackInfo& info) {
  return VmStructIoctl(info, Fd(info.Env(), "KVM_SET_IRQCHIP"), KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP", sizeof(kvm_irqchip));
}
// the PIT's three channels
Napi::Value Vm::GetPit2(const Napi::CallbackInfo& info) {
  return VmStructIoctl(info, Fd(info.Env(), "KVM_GET_PIT2"), KVM_GET_PIT2, "KVM_GET_PIT2", sizeof(kvm_pit_state2));
}
Napi::Value Vm::SetPit2(const Napi::CallbackInfo& info) {
  return VmStructIoctl(info, Fd(info.Env(), "KVM_SET_PIT2"), KVM_SET_PIT2, "KVM_SET_PIT2", sizeof(kvm_pit_state2));
}
// kvmclock: the guest's view of time in ns
Napi::Value Vm::GetClock(const Napi::CallbackInfo& info) {
  return VmStructIoctl(info, Fd(info.Env(), "KVM_GET_CLOCK"), KVM_GET_CLOCK, "KVM_GET_CLOCK", sizeof(kvm_clock_data));
}
Napi::Value Vm::SetClock(const Napi::CallbackInfo& info) {
  return VmStructIoctl(info, Fd(info.Env(), "KVM_SET_CLOCK"), KVM_SET_CLOCK, "KVM_SET_CLOCK", sizeof(kvm_clock_data));
}

#else

// x86 requests: not sent elsewhere, where the kernel either lacks them or means something else
// by them (arm64's KVM_IRQ_LINE numbers its lines differently); the struct layouts are x86's.
#define X86_ONLY(method, name)                                          \
  Napi::Value Vm::method(const Napi::CallbackInfo& info) {              \
    Fd(info.Env(), name);                                               \
    ThrowKvmError(info.Env(), ENOTTY, name, "an x86 request");          \
  }
X86_ONLY(CreateIrqchip, "KVM_CREATE_IRQCHIP")
X86_ONLY(CreatePit2, "KVM_CREATE_PIT2")
X86_ONLY(SetTssAddr, "KVM_SET_TSS_ADDR")
X86_ONLY(SetIdentityMapAddr, "KVM_SET_IDENTITY_MAP_ADDR")
X86_ONLY(IrqLine, "KVM_IRQ_LINE")
X86_ONLY(GetIrqchip, "KVM_GET_IRQCHIP")
X86_ONLY(SetIrqchip, "KVM_SET_IRQCHIP")
X86_ONLY(GetPit2, "KVM_GET_PIT2")
X86_ONLY(SetPit2, "KVM_SET_PIT2")
X86_ONLY(GetClock, "KVM_GET_CLOCK")
X86_ONLY(SetClock, "KVM_SET_CLOCK")
#undef X86_ONLY

#endif

Napi::Value Vm::Close(const Napi::CallbackInfo& info) {
  CloseHandles();
  return info.Env().Undefined();
}
