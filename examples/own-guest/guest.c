/*
 * A freestanding guest for kvm-dirty's vcpu.loadImage(): no firmware, no libc. It
 *
 *   - installs its own IDT (the timer, a spurious vector, every exception),
 *   - programs the in-kernel PIC pair (remapped, all lines masked) and reads the masks back,
 *   - runs the local APIC timer periodically (1 ms) and sleeps in `sti; hlt` for each tick,
 *   - keeps its live values in SSE registers (xmm6, xmm7) for the whole run, moved in and out
 *     with movdqu only,
 *   - prints progress on the 16550 at 0x3f8 (polling LSR), and
 *   - returns a result that start.S writes to port 0xf4.
 *
 * Its output and result depend on nothing but its own code: each of the TICKS steps waits for
 * at least one timer interrupt, then advances the state. A checkpoint restored without the
 * xmm registers, the LAPIC or the PIC state changes the output or never finishes.
 *
 * Built with -mgeneral-regs-only: the compiler uses no SSE or x87 register, so the only xmm
 * instructions are the movdqu below. On a host where KVM emulates every guest instruction
 * (nested PVM) SSE arithmetic, ldmxcsr, int3, xsave/xrstor and cmpxchg16b end in
 * KVM_EXIT_INTERNAL_ERROR; build.ts checks the binary for them.
 */
#include <stdint.h>

#ifndef TICKS
#define TICKS 100 /* timer steps (build.ts may set another count: -DTICKS=N) */
#endif
#define REPORT_EVERY 10 /* a progress line every so many */
#define TICK_COUNT 1000000 /* LAPIC timer initial count: 1 ms at KVM's 1 GHz APIC bus, divide by 1 */

#define COM1 0x3f8
#define LSR_THRE 0x20

#define LAPIC_BASE 0xfee00000ul
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0b0
#define LAPIC_SVR 0x0f0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_DIVIDE 0x3e0
#define LVT_PERIODIC (1u << 17)

#define TIMER_VECTOR 0x20
#define PIC_VECTOR_BASE 0x30
#define SPURIOUS_VECTOR 0xff
#define FAULT_RESULT 0xdead0000u

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

static inline void lapic_write(uint32_t reg, uint32_t v) { *(volatile uint32_t *)(LAPIC_BASE + reg) = v; }

/* ---- serial output ------------------------------------------------------------------------ */

static void putc(char c) {
  while ((inb(COM1 + 5) & LSR_THRE) == 0) {
  }
  outb(COM1, (uint8_t)c);
}

static void puts(const char *s) {
  while (*s) putc(*s++);
}

static void puthex(uint64_t v, int digits) {
  for (int i = digits - 1; i >= 0; i--) putc("0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}

static void putdec(uint64_t v) {
  char buf[21];
  int n = 0;
  do {
    buf[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0) putc(buf[--n]);
}

/* ---- interrupts --------------------------------------------------------------------------- */

struct idt_gate {
  uint16_t offset0;
  uint16_t selector;
  uint8_t ist;
  uint8_t type; /* 0x8e: present, DPL 0, 64-bit interrupt gate */
  uint16_t offset1;
  uint32_t offset2;
  uint32_t reserved;
} __attribute__((packed));

struct idt_register {
  uint16_t limit;
  uint64_t base;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));

extern void timer_entry(void);
extern void spurious_entry(void);
extern void (*const fault_entries[32])(void);

static void set_gate(int vector, void (*handler)(void)) {
  uint64_t a = (uint64_t)handler;
  idt[vector] = (struct idt_gate){
      .offset0 = (uint16_t)a, .selector = 0x08, .ist = 0, .type = 0x8e,
      .offset1 = (uint16_t)(a >> 16), .offset2 = (uint32_t)(a >> 32), .reserved = 0,
  };
}

static volatile uint64_t ticks;

void timer_interrupt(void) {
  ticks++;
  lapic_write(LAPIC_EOI, 0);
}

__attribute__((noreturn)) void guest_fault(uint64_t vector) {
  puts("\nfault: exception ");
  putdec(vector);
  putc('\n');
  outl(0xf4, FAULT_RESULT | (uint32_t)vector);
  for (;;) __asm__ volatile("cli; hlt");
}

/* Sleeps until the timer has fired since the last call (at least one interrupt per step). */
static void wait_tick(uint64_t *seen) {
  while (ticks == *seen) __asm__ volatile("sti; hlt; cli" : : : "memory");
  *seen = ticks;
}

/* ---- the in-kernel 8259A pair: remapped above the timer vector, every line masked ---------- */

static void pic_init(void) {
  outb(0x20, 0x11); /* ICW1: edge, cascade, ICW4 follows */
  outb(0xa0, 0x11);
  outb(0x21, PIC_VECTOR_BASE); /* ICW2: vectors */
  outb(0xa1, PIC_VECTOR_BASE + 8);
  outb(0x21, 0x04); /* ICW3: slave on IRQ 2 */
  outb(0xa1, 0x02);
  outb(0x21, 0x01); /* ICW4: 8086 mode */
  outb(0xa1, 0x01);
  outb(0x21, 0xfb); /* OCW1: all masked but the cascade */
  outb(0xa1, 0xff);
}

/* ---- the state that lives in xmm6 and xmm7 ------------------------------------------------ */

struct pair {
  uint64_t lo, hi;
};

static inline struct pair xmm6_get(void) {
  struct pair p;
  __asm__ volatile("movdqu %%xmm6, %0" : "=m"(p));
  return p;
}
static inline void xmm6_set(struct pair p) { __asm__ volatile("movdqu %0, %%xmm6" : : "m"(p)); }
static inline struct pair xmm7_get(void) {
  struct pair p;
  __asm__ volatile("movdqu %%xmm7, %0" : "=m"(p));
  return p;
}
static inline void xmm7_set(struct pair p) { __asm__ volatile("movdqu %0, %%xmm7" : : "m"(p)); }

static uint64_t xorshift64(uint64_t x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

/* One step: xmm6 = { x, acc }, xmm7 = { step, checksum }. */
static void step(uint64_t i) {
  struct pair s = xmm6_get();
  struct pair c = xmm7_get();
  s.lo = xorshift64(s.lo);
  s.hi = s.hi * 6364136223846793005ull + (s.lo ^ i);
  c.lo = i;
  c.hi = (c.hi << 7 | c.hi >> 57) ^ s.hi;
  xmm6_set(s);
  xmm7_set(c);
}

uint32_t guest_main(void) {
  for (int v = 0; v < 32; v++) set_gate(v, fault_entries[v]);
  set_gate(TIMER_VECTOR, timer_entry);
  set_gate(SPURIOUS_VECTOR, spurious_entry);
  struct idt_register idtr = {sizeof idt - 1, (uint64_t)idt};
  __asm__ volatile("lidt %0" : : "m"(idtr));

  puts("own-guest: IDT, PIC, LAPIC timer\n");
  pic_init();
  xmm6_set((struct pair){0x9e3779b97f4a7c15ull, 1});
  xmm7_set((struct pair){0, 0x0123456789abcdefull});

  lapic_write(LAPIC_SVR, 0x100 | SPURIOUS_VECTOR); /* APIC software-enabled */
  lapic_write(LAPIC_TPR, 0);
  lapic_write(LAPIC_TIMER_DIVIDE, 0xb); /* divide by 1 */
  lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | TIMER_VECTOR);
  lapic_write(LAPIC_TIMER_INITIAL, TICK_COUNT);

  uint64_t seen = 0;
  for (uint64_t i = 1; i <= TICKS; i++) {
    wait_tick(&seen);
    step(i);
    if (i % REPORT_EVERY == 0) {
      struct pair s = xmm6_get();
      puts("tick ");
      putdec(xmm7_get().lo);
      puts(" acc ");
      puthex(s.hi, 16);
      putc('\n');
    }
  }
  lapic_write(LAPIC_TIMER_INITIAL, 0); /* timer off */

  uint8_t imr0 = inb(0x21), imr1 = inb(0xa1);
  struct pair c = xmm7_get();
  uint32_t result = (uint32_t)(c.hi ^ (c.hi >> 32)) ^ ((uint32_t)imr0 << 8 | imr1);
  puts("done: ");
  putdec(c.lo);
  puts(" ticks, ");
  puts(ticks >= c.lo ? "every step saw an interrupt" : "LOST INTERRUPTS");
  puts(", pic masks ");
  puthex(imr0, 2);
  putc('/');
  puthex(imr1, 2);
  puts(", checksum ");
  puthex(c.hi, 16);
  puts(", result ");
  puthex(result, 8);
  putc('\n');
  return result;
}
