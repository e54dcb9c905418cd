// Did a guest of the harness workloads run on correctly? What the CLI's `incoming` (and
// `migrate` after a failed attempt) check once the guest was stopped: its registers and the
// memory it writes agree with each other, and it got further than where it started.

import { RANDOM_GPA } from '../guest/x86';
import type { Machine } from './machine';

export interface WorkloadCheck {
  ok: boolean;
  /** the epoch (stride, random) or counter value reached, per vCPU */
  reached: number[];
  /** what was wrong, per problem */
  problems: string[];
}

/**
 * Checks each vCPU's workload, stopped (after GuestRunner.stop(): no OUT half done):
 * stride: the epoch in rbx was written to its first pages and the one before to the rest
 * (a stop may fall inside an epoch); random, stopped after a store: its page holds the epoch;
 * counter: the u64 at its page is rax, and `outputSeq` outputs were counted (each
 * increment is one). `from`: per vCPU, the epoch or value it must have passed.
 */
export function checkWorkload(m: Machine, from: number[] = [], outputSeq?: number): WorkloadCheck {
  const problems: string[] = [];
  const reached: number[] = [];
  const u64 = (gfn: number): bigint => {
    const s = m.slots.find((x) => gfn * 4096 >= x.layout.guestPhysAddr && gfn * 4096 < x.layout.guestPhysAddr + x.layout.size);
    if (!s) throw new RangeError(`gfn ${gfn} is in no slot`);
    return s.bytes.readBigUInt64LE(gfn * 4096 - s.layout.guestPhysAddr);
  };
  m.vcpus.forEach((v, i) => {
    const spec = m.workloads[i]?.spec;
    const r = v.getRegs();
    if (!spec || spec.kind === 'spin') return void reached.push(0);
    if (spec.kind === 'counter') {
      const value = u64(spec.page);
      reached.push(Number(value));
      if (value !== r.rax) problems.push(`vCPU ${v.id}: the counter page holds ${value}, rax ${r.rax}`);
      if (outputSeq !== undefined && Number(value) !== outputSeq) problems.push(`vCPU ${v.id}: the counter is ${value} after ${outputSeq} outputs`);
    } else {
      const epoch = Number(r.rbx);
      reached.push(epoch);
      if (spec.kind === 'stride') {
        let boundary = -1;
        for (let j = 0; j < spec.pages; j++) {
          const got = Number(u64(spec.firstPage + j * spec.stridePages));
          if (got === epoch) continue;
          if (got === epoch - 1 && boundary < 0) boundary = j;
          if (got !== epoch - 1 || boundary < 0) {
            problems.push(`vCPU ${v.id}: stride page ${spec.firstPage + j * spec.stridePages} holds ${got} in epoch ${epoch}`);
            break;
          }
        }
      } else if (r.rip >= BigInt(RANDOM_GPA + 0x36) && r.rip <= BigInt(RANDOM_GPA + 0x3f)) {
        // stopped after an epoch's store (mov [rdi + rdx], rbx at +0x32) and before inc rbx
        const got = Number(u64(Number((r.rdi + r.rdx) / 4096n)));
        if (got !== epoch) problems.push(`vCPU ${v.id}: the random workload's last page holds ${got} in epoch ${epoch}`);
      }
    }
    if (from[i] !== undefined && reached[i] <= from[i]) problems.push(`vCPU ${v.id}: still at ${reached[i]}, no further than ${from[i]}`);
  });
  return { ok: problems.length === 0, reached, problems };
}
