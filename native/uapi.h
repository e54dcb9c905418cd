// What the host's <linux/kvm.h> (Debian's 6.1 UAPI) may lack, with the values of the upstream
// UAPI (include/uapi/linux/kvm.h, arch/s390/include/uapi/asm/kvm.h). Each one is guarded so a
// newer header wins.
#pragma once

#include <linux/kvm.h>

#ifndef KVM_CAP_S390_CMMA_MIGRATION
#define KVM_CAP_S390_CMMA_MIGRATION 145
#endif
#ifndef KVM_CAP_DIRTY_LOG_RING
#define KVM_CAP_DIRTY_LOG_RING 192
#endif
#ifndef KVM_CAP_DIRTY_LOG_RING_ACQ_REL
#define KVM_CAP_DIRTY_LOG_RING_ACQ_REL 223
#endif
#ifndef KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP
#define KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP 228
#endif
#ifndef KVM_EXIT_DIRTY_RING_FULL
#define KVM_EXIT_DIRTY_RING_FULL 31
#endif
#ifndef KVM_RESET_DIRTY_RINGS
#define KVM_RESET_DIRTY_RINGS _IO(KVMIO, 0xc7)
#endif

// The ring's page offset in the vCPU fd. The generic header defines 0 ("no ring") when the
// arch header does not; x86 and arm64 use 64.
#if !defined(KVM_DIRTY_LOG_PAGE_OFFSET) || KVM_DIRTY_LOG_PAGE_OFFSET == 0
#undef KVM_DIRTY_LOG_PAGE_OFFSET
#define KVM_DIRTY_LOG_PAGE_OFFSET 64
#endif

#ifndef KVM_DIRTY_GFN_F_DIRTY
#define KVM_DIRTY_GFN_F_DIRTY (1u << 0)
#define KVM_DIRTY_GFN_F_RESET (1u << 1)
#define KVM_DIRTY_GFN_F_MASK 0x3
struct kvm_dirty_gfn {
  __u32 flags;
  __u32 slot;
  __u64 offset;
};
#endif

// s390 storage attributes. The struct and ioctl numbers exist on every arch so the requests
// reach the kernel everywhere (x86 answers ENOTTY), with the x86-64 encoding of the upstream
// definitions (_IOWR/_IOW of a 32-byte struct).
#ifndef KVM_S390_CMMA_PEEK
#define KVM_S390_CMMA_PEEK (1 << 0)
struct kvm_s390_cmma_log {
  __u64 start_gfn;
  __u32 count;
  __u32 flags;
  union {
    __u64 remaining;
    __u64 mask;
  };
  __u64 values;
};
#endif
#ifndef KVM_S390_GET_CMMA_BITS
#define KVM_S390_GET_CMMA_BITS _IOWR(KVMIO, 0xb8, struct kvm_s390_cmma_log)
#endif
#ifndef KVM_S390_SET_CMMA_BITS
#define KVM_S390_SET_CMMA_BITS _IOW(KVMIO, 0xb9, struct kvm_s390_cmma_log)
#endif

// s390 VM device attributes (arch/s390/include/uapi/asm/kvm.h).
#ifndef KVM_S390_VM_MEM_CTRL
#define KVM_S390_VM_MEM_CTRL 0
#endif
#ifndef KVM_S390_VM_MEM_ENABLE_CMMA
#define KVM_S390_VM_MEM_ENABLE_CMMA 0
#define KVM_S390_VM_MEM_CLR_CMMA 1
#define KVM_S390_VM_MEM_LIMIT_SIZE 2
#endif
#ifndef KVM_S390_VM_MIGRATION
#define KVM_S390_VM_MIGRATION 4
#endif
#ifndef KVM_S390_VM_MIGRATION_STOP
#define KVM_S390_VM_MIGRATION_STOP 0
#define KVM_S390_VM_MIGRATION_START 1
#define KVM_S390_VM_MIGRATION_STATUS 2
#endif

#if defined(__x86_64__) || defined(__i386__)
// In C++, the 6.1 header's __DECLARE_FLEX_ARRAY puts an empty struct (1 byte in C++, 0 in C)
// before the flexible array: sizeof(struct kvm_cpuid2) becomes 12 instead of 8, which changes
// both the ioctl numbers derived from it and where the entries start. Use the C layout: an
// 8-byte header { nent, padding } followed by the entries.
struct kvm_cpuid2_header {
  __u32 nent;
  __u32 padding;
};
#undef KVM_GET_SUPPORTED_CPUID
#undef KVM_SET_CPUID2
#define KVM_GET_SUPPORTED_CPUID _IOWR(KVMIO, 0x05, struct kvm_cpuid2_header)
#define KVM_SET_CPUID2 _IOW(KVMIO, 0x90, struct kvm_cpuid2_header)
#undef KVM_GET_CPUID2
#define KVM_GET_CPUID2 _IOWR(KVMIO, 0x91, struct kvm_cpuid2_header)
static_assert(KVM_GET_SUPPORTED_CPUID == 0xc008ae05, "C encoding of KVM_GET_SUPPORTED_CPUID");
static_assert(KVM_SET_CPUID2 == 0x4008ae90, "C encoding of KVM_SET_CPUID2");
static_assert(KVM_GET_CPUID2 == 0xc008ae91, "C encoding of KVM_GET_CPUID2");
static_assert(sizeof(struct kvm_cpuid_entry2) == 40, "struct kvm_cpuid_entry2 is 40 bytes");

// The same flexible-array problem in struct kvm_msrs (16 bytes in C++, 8 in C), struct
// kvm_msr_list (8, not 4) and struct kvm_xsave (4100, not 4096: its `extra[]` member): the
// C headers below, and the ioctl numbers the kernel's C build derives from them.
struct kvm_msrs_header {
  __u32 nmsrs;
  __u32 pad;
};
struct kvm_msr_list_header {
  __u32 nmsrs;
};
struct kvm_xsave_region {
  __u32 region[1024];
};
#undef KVM_GET_MSR_INDEX_LIST
#undef KVM_GET_MSRS
#undef KVM_SET_MSRS
#undef KVM_GET_XSAVE
#undef KVM_SET_XSAVE
#undef KVM_GET_XSAVE2
#define KVM_GET_MSR_INDEX_LIST _IOWR(KVMIO, 0x02, struct kvm_msr_list_header)
#define KVM_GET_MSRS _IOWR(KVMIO, 0x88, struct kvm_msrs_header)
#define KVM_SET_MSRS _IOW(KVMIO, 0x89, struct kvm_msrs_header)
#define KVM_GET_XSAVE _IOR(KVMIO, 0xa4, struct kvm_xsave_region)
#define KVM_SET_XSAVE _IOW(KVMIO, 0xa5, struct kvm_xsave_region)
#define KVM_GET_XSAVE2 _IOR(KVMIO, 0xcf, struct kvm_xsave_region)
static_assert(KVM_GET_MSR_INDEX_LIST == 0xc004ae02, "C encoding of KVM_GET_MSR_INDEX_LIST");
static_assert(KVM_GET_MSRS == 0xc008ae88, "C encoding of KVM_GET_MSRS");
static_assert(KVM_SET_MSRS == 0x4008ae89, "C encoding of KVM_SET_MSRS");
static_assert(KVM_GET_XSAVE == 0x9000aea4, "C encoding of KVM_GET_XSAVE");
static_assert(KVM_SET_XSAVE == 0x5000aea5, "C encoding of KVM_SET_XSAVE");
static_assert(KVM_GET_XSAVE2 == 0x9000aecf, "C encoding of KVM_GET_XSAVE2");
static_assert(sizeof(struct kvm_msr_entry) == 16, "struct kvm_msr_entry is 16 bytes");

// The fixed-size state structs, as the kernel's x86-64 C build has them (the TypeScript
// codecs in lib/kvm-structs.ts use the same sizes; test/native-layout.test.ts compares).
static_assert(sizeof(struct kvm_regs) == 144, "struct kvm_regs is 144 bytes");
static_assert(sizeof(struct kvm_sregs) == 312, "struct kvm_sregs is 312 bytes");
static_assert(sizeof(struct kvm_fpu) == 416, "struct kvm_fpu is 416 bytes");
static_assert(sizeof(struct kvm_xsave_region) == 4096, "struct kvm_xsave (without extra[]) is 4096 bytes");
static_assert(sizeof(struct kvm_xcrs) == 392, "struct kvm_xcrs is 392 bytes");
static_assert(sizeof(struct kvm_lapic_state) == 1024, "struct kvm_lapic_state is 1024 bytes");
static_assert(sizeof(struct kvm_vcpu_events) == 64, "struct kvm_vcpu_events is 64 bytes");
static_assert(sizeof(struct kvm_debugregs) == 128, "struct kvm_debugregs is 128 bytes");
static_assert(sizeof(struct kvm_mp_state) == 4, "struct kvm_mp_state is 4 bytes");
static_assert(sizeof(struct kvm_irqchip) == 520, "struct kvm_irqchip is 520 bytes");
static_assert(sizeof(struct kvm_pit_state2) == 112, "struct kvm_pit_state2 is 112 bytes");
static_assert(sizeof(struct kvm_clock_data) == 48, "struct kvm_clock_data is 48 bytes");
static_assert(sizeof(struct kvm_pit_config) == 64, "struct kvm_pit_config is 64 bytes");
static_assert(sizeof(struct kvm_irq_level) == 8, "struct kvm_irq_level is 8 bytes");
// Each fixed-size request encodes its struct's size; a mismatch would be ENOTTY from the kernel.
static_assert(_IOC_SIZE(KVM_GET_FPU) == 416 && _IOC_SIZE(KVM_GET_XCRS) == 392 && _IOC_SIZE(KVM_GET_LAPIC) == 1024 &&
                  _IOC_SIZE(KVM_GET_VCPU_EVENTS) == 64 && _IOC_SIZE(KVM_GET_DEBUGREGS) == 128 &&
                  _IOC_SIZE(KVM_GET_IRQCHIP) == 520 && _IOC_SIZE(KVM_GET_PIT2) == 112 && _IOC_SIZE(KVM_GET_CLOCK) == 48,
              "state ioctls encode the kernel's struct sizes");
#endif

static_assert(sizeof(struct kvm_dirty_gfn) == 16, "struct kvm_dirty_gfn is 16 bytes");
static_assert(sizeof(struct kvm_s390_cmma_log) == 32, "struct kvm_s390_cmma_log is 32 bytes");
static_assert(_IOC_SIZE(KVM_S390_GET_CMMA_BITS) == sizeof(struct kvm_s390_cmma_log), "CMMA ioctl encodes the struct size");
