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
static_assert(KVM_GET_SUPPORTED_CPUID == 0xc008ae05, "C encoding of KVM_GET_SUPPORTED_CPUID");
static_assert(KVM_SET_CPUID2 == 0x4008ae90, "C encoding of KVM_SET_CPUID2");
#endif

static_assert(sizeof(struct kvm_dirty_gfn) == 16, "struct kvm_dirty_gfn is 16 bytes");
static_assert(sizeof(struct kvm_s390_cmma_log) == 32, "struct kvm_s390_cmma_log is 32 bytes");
static_assert(_IOC_SIZE(KVM_S390_GET_CMMA_BITS) == sizeof(struct kvm_s390_cmma_log), "CMMA ioctl encodes the struct size");
