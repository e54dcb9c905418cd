// reference.c - the C reference of kvm-dirty's epoch loop, for benchmarks to compare against.
//
// One vCPU runs the library's own Workload.stride machine code (bench/guest-code.h, generated
// from lib/guest/x86.ts) in a 64-bit guest: every epoch it writes the epoch number to K pages
// spread over the guest and exits with OUT 0x10; the host then harvests the dirty pages and
// re-arms tracking, exactly as a checkpointing VMM does, in one of these modes:
//
//   ring               dirty ring: acquire-load flags, copy the page, release-store RESET,
//                      then KVM_RESET_DIRTY_RINGS (re-protects the harvested pages)
//   bitmap             KVM_GET_DIRTY_LOG (snapshot + re-protect) and a scan of the set bits
//   bitmap-clear       manual protect: KVM_GET_DIRTY_LOG, scan, KVM_CLEAR_DIRTY_LOG over the slot
//   harvest-per-entry  one run fills a 65,536-entry (1 MiB) ring with N distinct pages
//                      (N below the 65,472-entry soft limit); times the harvest loop alone
//
// Guest-physical memory (GUEST_* from bench/guest-code.h):
//   slot 0  [0, 2 MiB)             harness: page tables + code, written by this program, not logged
//   slot 1  [R, R + G GiB)         guest RAM, MAP_NORESERVE, KVM_MEM_LOG_DIRTY_PAGES; the K pages
//                                  of an epoch are slot pages 0, s, 2s, ... with s = pages / K.
//                                  R = --ram-gpa, default 2 MiB (right after the harness). The
//                                  local APIC's page (gpa 0xfee00000) is MMIO even with RAM under
//                                  it (an exit on this host), so a stride that lands there needs
//                                  R above 4 GiB.
//
// Output: one JSON object per run on stdout. Every ioctl is checked; any surprise (an exit
// other than the epoch's OUT, a harvest count other than K) ends the run with status 1.
//
// Build: cc -O2 -Wall -o build/kvm-dirty-reference bench/reference.c
// Run:   build/kvm-dirty-reference --mode ring --guest-gib 16 --k 16 --seconds 3
//        build/kvm-dirty-reference --mode harvest-per-entry --entries 65000 --repeats 9
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "guest-code.h"

// Numbers newer than the distribution's <linux/kvm.h> may know (kernel-semantics.md §1).
#ifndef KVM_CAP_DIRTY_LOG_RING_ACQ_REL
#define KVM_CAP_DIRTY_LOG_RING_ACQ_REL 223
#endif
#ifndef KVM_EXIT_DIRTY_RING_FULL
#define KVM_EXIT_DIRTY_RING_FULL 31
#endif

#define GIB (1ull << 30)
#define HARNESS_SLOT 0
#define GUEST_SLOT 1
#define RING_MAX_ENTRIES 65536u // KVM_DIRTY_RING_MAX_ENTRIES: a 1 MiB ring
#define RING_RSVD_ENTRIES 64u   // KVM_DIRTY_RING_RSVD_ENTRIES; a host with Intel PML reserves 512 more

enum mode { MODE_RING, MODE_BITMAP, MODE_BITMAP_CLEAR, MODE_HARVEST_PER_ENTRY };
static const char *const mode_names[] = { "ring", "bitmap", "bitmap-clear", "harvest-per-entry" };

struct options {
	enum mode mode;
	unsigned guest_gib;
	unsigned k;             // pages written per epoch (harvest-per-entry: N entries)
	unsigned long epochs;   // 0: run for `seconds`
	double seconds;
	unsigned ring_entries;  // 0: chosen from k
	unsigned ring_reserved; // entries the kernel keeps in reserve (0: learned from the kernel)
	uint64_t ram_gpa;       // guest-physical address of slot 1
	const char *device;
};

struct vm {
	int kvm, vm, vcpu;
	struct kvm_run *run;
	size_t run_size;
	uint8_t *harness, *guest;
	uint64_t ram_gpa, guest_bytes, guest_pages;
	struct kvm_dirty_gfn *ring; // NULL without the ring
	uint32_t ring_entries, fetch;
	uint64_t *bitmap;           // one bit per guest page (bitmap modes)
	uint64_t *pages;            // pages harvested in the current epoch
	uint64_t pages_cap;
};

static void die(const char *what)
{
	fprintf(stderr, "kvm-dirty-reference: %s: %s\n", what, strerror(errno));
	exit(1);
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "kvm-dirty-reference: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

// Every ioctl goes through here: a negative result ends the run with the request's name.
#define IOCTL(fd, req, arg) ({ int r_ = ioctl((fd), (req), (arg)); if (r_ < 0) die(#req); r_; })

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

// Mirrors installHarness() of lib/guest/x86.ts: identity-map [0, map_bytes) with 2 MiB pages,
// Accessed/Dirty preset so no page-table page is ever written by the CPU, then the code.
static void install_harness(uint8_t *h, uint64_t map_bytes)
{
	uint64_t *pml4 = (uint64_t *)(h + GUEST_PML4_GPA), *pdpt = (uint64_t *)(h + GUEST_PDPT_GPA);
	uint64_t pds = (map_bytes + GIB - 1) / GIB;

	if (pds > GUEST_PD_COUNT)
		fail("a guest of %llu GiB exceeds the harness's %llu GiB", (unsigned long long)pds, GUEST_PD_COUNT);
	memset(pml4, 0, GUEST_PAGE_SIZE);
	pml4[0] = GUEST_PDPT_GPA | GUEST_TABLE_ENTRY_FLAGS;
	memset(pdpt, 0, GUEST_PAGE_SIZE);
	for (uint64_t i = 0; i < pds; i++) {
		uint64_t *pd = (uint64_t *)(h + GUEST_PD_GPA + i * GUEST_PAGE_SIZE);
		pdpt[i] = (GUEST_PD_GPA + i * GUEST_PAGE_SIZE) | GUEST_TABLE_ENTRY_FLAGS;
		for (uint64_t j = 0; j < 512; j++)
			pd[j] = ((i * 512 + j) << 21) | GUEST_LARGE_PAGE_FLAGS;
	}
	memset(h + GUEST_CODE_GPA, 0, GUEST_PAGE_SIZE);
	memcpy(h + GUEST_STRIDE_GPA, guest_stride_code, sizeof guest_stride_code);
	memcpy(h + GUEST_RANDOM_GPA, guest_random_code, sizeof guest_random_code);
	memcpy(h + GUEST_COUNTER_GPA, guest_counter_code, sizeof guest_counter_code);
	memcpy(h + GUEST_SPIN_GPA, guest_spin_code, sizeof guest_spin_code);
}

static void *map_anonymous(uint64_t bytes)
{
	// MAP_SHARED like the library's guest RAM; MAP_NORESERVE: only pages the guest touches cost memory
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		die("mmap guest memory");
	return p;
}

static void set_slot(struct vm *v, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, void *host)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa, .memory_size = size, .userspace_addr = (uint64_t)host,
	};
	IOCTL(v->vm, KVM_SET_USER_MEMORY_REGION, &r); // the slot's pages now back gpa [gpa, gpa + size)
}

static void enable_cap(int vm, uint32_t cap, uint64_t arg0)
{
	struct kvm_enable_cap c = { .cap = cap, .args = { arg0 } };
	IOCTL(vm, KVM_ENABLE_CAP, &c); // a VM-wide capability, args[0] its argument
}

// The entries the kernel reserves below a ring's size (KVM_DIRTY_RING_RSVD_ENTRIES +
// kvm_cpu_dirty_log_size(): 64, or 576 with Intel PML), read off the smallest ring it takes:
// 4 KiB means 64; a larger minimum gives an upper bound (minimum / 16), as kvm-dirty's
// dirtyRingLimits() does when the host's own word is missing.
static unsigned probe_ring_reserved(const char *device)
{
	int kvm = open(device, O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die(device);
	uint32_t cap = IOCTL(kvm, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL) > 0
		? KVM_CAP_DIRTY_LOG_RING_ACQ_REL : KVM_CAP_DIRTY_LOG_RING;
	unsigned reserved = 0;
	for (uint64_t bytes = 4096; !reserved && bytes <= RING_MAX_ENTRIES * sizeof(struct kvm_dirty_gfn); bytes *= 2) {
		int vm = IOCTL(kvm, KVM_CREATE_VM, 0); // a scratch VM with no vCPU: a refused size leaves it as it was
		struct kvm_enable_cap c = { .cap = cap, .args = { bytes } };
		if (ioctl(vm, KVM_ENABLE_CAP, &c) == 0) // the ring cap, args[0] = bytes per vCPU
			reserved = bytes == 4096 ? RING_RSVD_ENTRIES : bytes / sizeof(struct kvm_dirty_gfn);
		else if (errno != EINVAL)
			die("KVM_ENABLE_CAP");
		close(vm);
	}
	close(kvm);
	if (!reserved)
		fail("the kernel took no dirty ring size");
	return reserved;
}

static void vm_open(struct vm *v, const struct options *o)
{
	memset(v, 0, sizeof *v);
	v->kvm = open(o->device, O_RDWR | O_CLOEXEC);
	if (v->kvm < 0)
		die(o->device);
	if (IOCTL(v->kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) // the one stable KVM API
		fail("KVM_GET_API_VERSION is not %d", KVM_API_VERSION);
	v->vm = IOCTL(v->kvm, KVM_CREATE_VM, 0); // machine type 0: a plain x86 VM

	if (o->mode == MODE_RING || o->mode == MODE_HARVEST_PER_ENTRY) {
		// Before any vCPU exists; _ACQ_REL where offered (the kernel then relies on our
		// acquire/release ordering), like QEMU and the selftests.
		uint32_t cap = IOCTL(v->vm, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL) > 0
			? KVM_CAP_DIRTY_LOG_RING_ACQ_REL : KVM_CAP_DIRTY_LOG_RING;
		v->ring_entries = o->ring_entries;
		// args[0] = ring bytes per vCPU; every vCPU created from now on gets one
		enable_cap(v->vm, cap, (uint64_t)v->ring_entries * sizeof(struct kvm_dirty_gfn));
	}
	if (o->mode == MODE_BITMAP_CLEAR) // GET no longer clears; we CLEAR what we processed
		enable_cap(v->vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);

	v->ram_gpa = o->ram_gpa;
	v->guest_bytes = (uint64_t)o->guest_gib * GIB;
	v->guest_pages = v->guest_bytes / GUEST_PAGE_SIZE;
	v->harness = map_anonymous(GUEST_HARNESS_SIZE);
	v->guest = map_anonymous(v->guest_bytes);
	install_harness(v->harness, v->ram_gpa + v->guest_bytes);
	set_slot(v, HARNESS_SLOT, 0, 0, GUEST_HARNESS_SIZE, v->harness);
	set_slot(v, GUEST_SLOT, KVM_MEM_LOG_DIRTY_PAGES, v->ram_gpa, v->guest_bytes, v->guest);

	v->vcpu = IOCTL(v->vm, KVM_CREATE_VCPU, 0);              // vCPU 0, with its ring when the cap is on
	v->run_size = IOCTL(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0); // kvm_run + PIO page (the ring is apart)
	// kvm_run: the exit reason and the OUT's data, shared with the kernel
	v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
	if (v->run == MAP_FAILED)
		die("mmap kvm_run");
	if (v->ring_entries) {
		// the ring is ring_entries kvm_dirty_gfn at page KVM_DIRTY_LOG_PAGE_OFFSET of the vCPU fd
		v->ring = mmap(NULL, v->ring_entries * sizeof(struct kvm_dirty_gfn), PROT_READ | PROT_WRITE, MAP_SHARED,
			       v->vcpu, KVM_DIRTY_LOG_PAGE_OFFSET * GUEST_PAGE_SIZE);
		if (v->ring == MAP_FAILED)
			die("mmap dirty ring");
	} else {
		v->bitmap = calloc(v->guest_pages / 64, sizeof(uint64_t));
		if (!v->bitmap)
			die("calloc bitmap");
	}

	struct kvm_sregs s;
	IOCTL(v->vcpu, KVM_GET_SREGS, &s); // start from the reset state (TR, LDT, APIC base stay as KVM made them)
	struct kvm_segment cs = { .limit = 0xffffffff, .selector = GUEST_CODE_SELECTOR, .type = 11, .present = 1, .s = 1, .l = 1, .g = 1 };
	struct kvm_segment ds = { .limit = 0xffffffff, .selector = GUEST_DATA_SELECTOR, .type = 3, .present = 1, .db = 1, .s = 1, .g = 1 };
	s.cs = cs;
	s.ds = s.es = s.fs = s.gs = s.ss = ds;
	s.cr0 = GUEST_CR0;
	s.cr3 = GUEST_CR3;
	s.cr4 = GUEST_CR4;
	s.efer = GUEST_EFER;
	IOCTL(v->vcpu, KVM_SET_SREGS, &s); // long mode, paging on, from the first instruction
}

// Workload.stride({ firstPage: ram_gpa / 4096, pages: k, stridePages }) at epoch 1.
static void load_stride(struct vm *v, unsigned k, uint64_t stride_pages)
{
	struct kvm_regs r = { 0 };
	r.rip = GUEST_STRIDE_GPA;
	r.rbx = 1;                                           // epoch
	r.rdi = v->ram_gpa;                                  // gpa of slot 1, page 0
	r.rsi = stride_pages * GUEST_PAGE_SIZE;              // stride in bytes
	r.r8 = k;                                            // pages per epoch
	r.rflags = 2;                                        // reserved bit 1; interrupts off
	IOCTL(v->vcpu, KVM_SET_REGS, &r);                    // the guest starts at epoch 1 on the next KVM_RUN

	v->pages_cap = k;
	v->pages = malloc(k * sizeof(uint64_t));
	if (!v->pages)
		die("malloc pages");
}

// Collects DIRTY entries in order into pages[] (slot offsets), marking each RESET.
static uint64_t ring_collect(struct vm *v, uint64_t n)
{
	uint32_t mask = v->ring_entries - 1;
	for (;;) {
		struct kvm_dirty_gfn *e = &v->ring[v->fetch & mask];
		if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY))
			return n;
		if (e->slot != GUEST_SLOT)
			fail("ring entry for slot %u, only slot %d is logged", e->slot, GUEST_SLOT);
		if (n == v->pages_cap)
			fail("the ring holds more than the %llu pages the guest wrote", (unsigned long long)v->pages_cap);
		v->pages[n++] = e->offset;
		__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		v->fetch++;
	}
}

// Ring harvest + re-arm: collect, then KVM_RESET_DIRTY_RINGS re-protects what was collected.
static uint64_t harvest_ring(struct vm *v, uint64_t n)
{
	uint64_t got = ring_collect(v, n);
	int reset = IOCTL(v->vm, KVM_RESET_DIRTY_RINGS, 0); // RESET entries -> 0, their pages re-protected
	if ((uint64_t)reset != got - n)
		fail("KVM_RESET_DIRTY_RINGS reset %d entries, %llu collected", reset, (unsigned long long)(got - n));
	return got;
}

// Bitmap harvest + re-arm: GET (without manual protect it snapshots and re-protects), scan,
// and with manual protect CLEAR the snapshot's bits (re-protects exactly those pages).
static uint64_t harvest_bitmap(struct vm *v, int clear)
{
	struct kvm_dirty_log log = { .slot = GUEST_SLOT, .dirty_bitmap = v->bitmap };
	IOCTL(v->vm, KVM_GET_DIRTY_LOG, &log); // ALIGN(pages, 64) / 8 bytes into bitmap
	uint64_t n = 0, words = v->guest_pages / 64;
	for (uint64_t w = 0; w < words; w++) {
		for (uint64_t bits = v->bitmap[w]; bits; bits &= bits - 1) {
			if (n == v->pages_cap)
				fail("the bitmap holds more than %llu pages", (unsigned long long)v->pages_cap);
			v->pages[n++] = w * 64 + (uint64_t)__builtin_ctzll(bits);
		}
	}
	if (clear) {
		struct kvm_clear_dirty_log c = { .slot = GUEST_SLOT, .first_page = 0, .num_pages = v->guest_pages, .dirty_bitmap = v->bitmap };
		IOCTL(v->vm, KVM_CLEAR_DIRTY_LOG, &c); // the whole slot: num_pages ends at the slot's end
	}
	return n;
}

// KVM_RUN until the guest's epoch OUT; a full ring (ring modes) is harvested on the way.
static uint64_t run_epoch(struct vm *v, uint64_t epoch, uint64_t *harvested)
{
	for (;;) {
		if (ioctl(v->vcpu, KVM_RUN, 0) < 0) { // the guest runs until its next exit
			if (errno == EINTR)
				continue;
			die("KVM_RUN");
		}
		if (v->run->exit_reason == KVM_EXIT_IO) {
			uint8_t value = *((uint8_t *)v->run + v->run->io.data_offset);
			if (v->run->io.direction != KVM_EXIT_IO_OUT || v->run->io.port != GUEST_EPOCH_PORT || v->run->io.size != 1 ||
			    value != (uint8_t)epoch)
				fail("unexpected I/O exit: port %#x size %u value %#x", v->run->io.port, v->run->io.size, value);
			return *harvested;
		}
		if (v->run->exit_reason == KVM_EXIT_DIRTY_RING_FULL && v->ring)
			*harvested = harvest_ring(v, *harvested);
		else if (v->run->exit_reason == KVM_EXIT_MMIO)
			fail("MMIO exit at gpa %#llx in epoch %llu: a stride page is not RAM here (the local APIC at 0xfee00000?"
			     " move RAM with --ram-gpa)", (unsigned long long)v->run->mmio.phys_addr, (unsigned long long)epoch);
		else
			fail("unexpected exit reason %u in epoch %llu", v->run->exit_reason, (unsigned long long)epoch);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *xs, uint64_t n)
{
	qsort(xs, n, sizeof *xs, cmp_u64);
	return n ? xs[n / 2] : 0;
}

static void epoch_loop(const struct options *o)
{
	struct vm v;
	vm_open(&v, o);
	uint64_t stride = v.guest_pages / o->k;
	load_stride(&v, o->k, stride);

	uint64_t cap = o->epochs ? o->epochs : 4096, epoch = 0;
	uint64_t *harvest_ns = malloc(cap * sizeof(uint64_t)), *run_ns = malloc(cap * sizeof(uint64_t));
	if (!harvest_ns || !run_ns)
		die("malloc");
	uint64_t start = now_ns(), deadline = start + (uint64_t)(o->seconds * 1e9);
	while (o->epochs ? epoch < o->epochs : now_ns() < deadline) {
		uint64_t n = 0, t = now_ns();
		epoch++;
		run_epoch(&v, epoch, &n);
		uint64_t t0 = now_ns();
		if (o->mode == MODE_RING)
			n = harvest_ring(&v, n);
		else
			n = harvest_bitmap(&v, o->mode == MODE_BITMAP_CLEAR);
		uint64_t t1 = now_ns();
		if (n != o->k)
			fail("harvested %llu pages, the guest wrote %u", (unsigned long long)n, o->k);
		if (epoch > cap) {
			cap *= 2;
			if (!(harvest_ns = realloc(harvest_ns, cap * sizeof(uint64_t))) || !(run_ns = realloc(run_ns, cap * sizeof(uint64_t))))
				die("realloc");
		}
		run_ns[epoch - 1] = t0 - t;
		harvest_ns[epoch - 1] = t1 - t0;
	}
	double seconds = (double)(now_ns() - start) / 1e9;

	// Tracking was re-armed each epoch: with the guest stopped, nothing is left dirty (with
	// manual protect this proves CLEAR cleared, since GET alone clears nothing).
	if (o->mode != MODE_RING && harvest_bitmap(&v, 0) != 0)
		fail("pages still dirty after epoch %llu", (unsigned long long)epoch);

	// The guest really wrote: the first and last page of the stride hold the last epoch.
	uint64_t first = *(uint64_t *)v.guest, last = *(uint64_t *)(v.guest + (o->k - 1) * stride * GUEST_PAGE_SIZE);
	if (first != epoch || last != epoch)
		fail("pages hold epochs %llu and %llu, not %llu", (unsigned long long)first, (unsigned long long)last,
		     (unsigned long long)epoch);

	printf("{\"mode\":\"%s\",\"guestGiB\":%u,\"k\":%u,\"epochs\":%llu,\"seconds\":%.6f,\"epochsPerSec\":%.1f,"
	       "\"harvestNsPerEpoch\":%llu,\"pagesPerEpoch\":%u,\"ringEntries\":%u,\"runNsPerEpoch\":%llu,\"ramGpa\":%llu}\n",
	       mode_names[o->mode], o->guest_gib, o->k, (unsigned long long)epoch, seconds, epoch / seconds,
	       (unsigned long long)median(harvest_ns, epoch), o->k, v.ring_entries, (unsigned long long)median(run_ns, epoch),
	       (unsigned long long)v.ram_gpa);
}

// One run fills the 1 MiB ring with k distinct pages; time the collect loop and the reset apart.
static void harvest_per_entry(const struct options *o)
{
	struct vm v;
	vm_open(&v, o);
	load_stride(&v, o->k, 1);

	unsigned long repeats = o->epochs ? o->epochs : 9;
	uint64_t *collect = malloc(repeats * sizeof *collect), *reset = malloc(repeats * sizeof *reset);
	if (!collect || !reset)
		die("malloc");
	uint64_t start = now_ns();
	for (uint64_t epoch = 1; epoch <= repeats; epoch++) {
		uint64_t n = 0;
		run_epoch(&v, epoch, &n);
		if (n)
			fail("the ring filled up (%llu entries harvested early)", (unsigned long long)n);
		uint64_t t0 = now_ns();
		n = ring_collect(&v, 0);
		uint64_t t1 = now_ns();
		int r = IOCTL(v.vm, KVM_RESET_DIRTY_RINGS, 0); // re-arm for the next repeat (timed apart)
		uint64_t t2 = now_ns();
		if (n != o->k || (uint64_t)r != n)
			fail("collected %llu entries, reset %d, the guest wrote %u", (unsigned long long)n, r, o->k);
		collect[epoch - 1] = t1 - t0;
		reset[epoch - 1] = t2 - t1;
	}
	double seconds = (double)(now_ns() - start) / 1e9;
	uint64_t c = median(collect, repeats), r = median(reset, repeats);
	printf("{\"mode\":\"%s\",\"guestGiB\":%u,\"k\":%u,\"epochs\":%lu,\"seconds\":%.6f,\"epochsPerSec\":%.1f,"
	       "\"harvestNsPerEpoch\":%llu,\"pagesPerEpoch\":%u,\"ringEntries\":%u,\"harvestNsPerEntry\":%.2f,"
	       "\"resetNsPerEntry\":%.2f,\"ramGpa\":%llu}\n",
	       mode_names[o->mode], o->guest_gib, o->k, repeats, seconds, repeats / seconds, (unsigned long long)c, o->k,
	       v.ring_entries, (double)c / o->k, (double)r / o->k, (unsigned long long)v.ram_gpa);
}

static void usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: kvm-dirty-reference [--mode ring|bitmap|bitmap-clear|harvest-per-entry] [--guest-gib 1|4|16|64]\n"
		"                           [--k PAGES] [--epochs N | --seconds S] [--ring-entries N] [--ring-reserved N]\n"
		"                           [--ram-gpa BYTES] [--device PATH]\n"
		"  --k        pages written per epoch (default 16); harvest-per-entry: entries in the one run\n"
		"             (default 65000, or the 1 MiB ring's soft limit if that is lower)\n"
		"  --epochs   epochs to run (harvest-per-entry: repeats, default 9); otherwise --seconds (default 2)\n"
		"  --ring-entries  ring size in entries (default: the smallest the kernel takes with a soft limit >= 2 * k)\n"
		"  --ring-reserved entries the kernel keeps in reserve (default: learned from the smallest ring it takes;\n"
		"             64 without PML, 576 with Intel PML)\n"
		"  --ram-gpa  guest-physical address of the RAM slot (default 2097152 = 2 MiB; a multiple of 4096,\n"
		"             at least 2 MiB; e.g. 4294967296 to keep the stride off the local APIC's page 0xfee00000)\n");
	exit(status);
}

static unsigned long long parse_ulong(const char *s, const char *name, unsigned long long min, unsigned long long max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || *end || !s[0] || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "kvm-dirty-reference: --%s must be an integer in [%llu, %llu]\n", name, min, max);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	struct options o = { .mode = MODE_RING, .guest_gib = 1, .seconds = 2, .ram_gpa = GUEST_HARNESS_SIZE, .device = "/dev/kvm" };
	static const struct option longopts[] = {
		{ "mode", required_argument, 0, 'm' }, { "guest-gib", required_argument, 0, 'g' },
		{ "k", required_argument, 0, 'k' },    { "epochs", required_argument, 0, 'e' },
		{ "seconds", required_argument, 0, 's' }, { "ring-entries", required_argument, 0, 'r' },
		{ "ram-gpa", required_argument, 0, 'a' }, { "device", required_argument, 0, 'd' },
		{ "ring-reserved", required_argument, 0, 'R' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
	};
	for (int c; (c = getopt_long(argc, argv, "m:g:k:e:s:r:R:a:d:h", longopts, NULL)) != -1;) {
		switch (c) {
		case 'm':
			for (o.mode = 0; o.mode < 4 && strcmp(optarg, mode_names[o.mode]); o.mode++)
				;
			if (o.mode == 4)
				usage(2);
			break;
		case 'g': o.guest_gib = parse_ulong(optarg, "guest-gib", 1, GUEST_PD_COUNT - 1); break;
		case 'k': o.k = parse_ulong(optarg, "k", 1, RING_MAX_ENTRIES - RING_RSVD_ENTRIES - 1); break;
		case 'e': o.epochs = parse_ulong(optarg, "epochs", 1, 100000000); break;
		case 's': o.seconds = strtod(optarg, NULL); if (!(o.seconds > 0)) usage(2); break;
		case 'r': o.ring_entries = parse_ulong(optarg, "ring-entries", 256, RING_MAX_ENTRIES); break;
		case 'R': o.ring_reserved = parse_ulong(optarg, "ring-reserved", RING_RSVD_ENTRIES, RING_MAX_ENTRIES - 1); break;
		case 'a': o.ram_gpa = parse_ulong(optarg, "ram-gpa", GUEST_HARNESS_SIZE, GUEST_PD_COUNT * GIB); break;
		case 'd': o.device = optarg; break;
		case 'h': usage(0); break;
		default: usage(2);
		}
	}
	if (optind != argc)
		usage(2);
	unsigned rsvd = 0;
	if (o.mode == MODE_RING || o.mode == MODE_HARVEST_PER_ENTRY)
		rsvd = o.ring_reserved ? o.ring_reserved : probe_ring_reserved(o.device);
	if (o.mode == MODE_HARVEST_PER_ENTRY) {
		o.k = o.k ? o.k : (65000 < RING_MAX_ENTRIES - rsvd ? 65000 : RING_MAX_ENTRIES - rsvd - 1);
		o.ring_entries = RING_MAX_ENTRIES;
	} else if (!o.k) {
		o.k = 16;
	}
	if (o.ring_entries & (o.ring_entries - 1))
		fail("--ring-entries %u is not a power of two", o.ring_entries);
	if (o.mode == MODE_RING && !o.ring_entries) {
		unsigned min = rsvd * sizeof(struct kvm_dirty_gfn) > 4096 ? rsvd : 4096 / sizeof(struct kvm_dirty_gfn);
		for (o.ring_entries = 256; (o.ring_entries < min || o.ring_entries < 2 * o.k + rsvd) && o.ring_entries < RING_MAX_ENTRIES;)
			o.ring_entries *= 2;
	}
	// On this PVM host one run can push every page it writes past the soft limit (kernel-semantics
	// §18.4): a ring smaller than one epoch's pages would overflow, so refuse it.
	if (o.ring_entries && o.k > o.ring_entries - rsvd)
		fail("k %u exceeds the ring's soft limit (%u entries)", o.k, o.ring_entries - rsvd);
	if (o.ram_gpa % GUEST_PAGE_SIZE || o.ram_gpa + (uint64_t)o.guest_gib * GIB > GUEST_PD_COUNT * GIB)
		fail("--ram-gpa %#llx: RAM must start on a page and end within the harness's %llu GiB map",
		     (unsigned long long)o.ram_gpa, GUEST_PD_COUNT);
	if ((uint64_t)o.k > (uint64_t)o.guest_gib * GIB / GUEST_PAGE_SIZE)
		fail("k %u exceeds the guest's %llu pages", o.k, (unsigned long long)o.guest_gib * GIB / GUEST_PAGE_SIZE);

	if (o.mode == MODE_HARVEST_PER_ENTRY)
		harvest_per_entry(&o);
	else
		epoch_loop(&o);
	return 0;
}
