/* Entry and interrupt stubs of the own-guest example (see guest.c). The host starts the
   guest here in 64-bit mode with rsp at the top of its memory and interrupts off. */

#define EXIT_PORT 0xf4

.section .text.start, "ax"
.globl _start
_start:
	/* .bss is zero in fresh guest memory, but a flat image loaded over used memory is not */
	lea __bss_start(%rip), %rdi
	lea __bss_end(%rip), %rcx
	sub %rdi, %rcx
	xor %eax, %eax
	rep stosb
	xor %ebp, %ebp
	call guest_main
	/* the result, 4 bytes on the exit port; the host stops here */
	mov $EXIT_PORT, %dx
	out %eax, %dx
1:	cli
	hlt
	jmp 1b

.text

/* The LAPIC timer's vector. The CPU pushed SS, RSP, RFLAGS, CS, RIP with RSP 16-byte aligned
   first; nine pushes more leave it aligned for the call, as the C ABI wants. The handler is
   C built with -mgeneral-regs-only, so no xmm register needs saving. */
.globl timer_entry
timer_entry:
	push %rax
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %r8
	push %r9
	push %r10
	push %r11
	call timer_interrupt
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rax
	iretq

/* The spurious-interrupt vector: no EOI, per the APIC's rules. */
.globl spurious_entry
spurious_entry:
	iretq

/* Exceptions 0..31: report the vector and stop (guest_fault never returns). */
fault_common:
	and $-16, %rsp
	call guest_fault
1:	hlt
	jmp 1b

.macro fault_stub n
.globl fault_entry_\n
fault_entry_\n:
	mov $\n, %edi
	jmp fault_common
.endm

.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	fault_stub \n
.endr

.section .rodata
.globl fault_entries
.align 8
fault_entries:
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad fault_entry_\n
.endr
