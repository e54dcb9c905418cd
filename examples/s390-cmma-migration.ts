// s390 storage-attribute (CMMA) migration on an emulated s390x VM, the way QEMU's
// hw/s390x/s390-stattrib.c moves them: the source enters migration mode (every page
// CMMA-dirty), then each round drains KVM_S390_GET_CMMA_BITS into a stream of blocks
// (be64 address | flags, be64 length, the values) while the guest keeps issuing ESSA;
// the destination replays each block with KVM_S390_SET_CMMA_BITS. At the end both VMs
// must hold the same value for every page.
//
//   node dist/examples/s390-cmma-migration.js [--rounds 5] [--seed 7]
import { EssaOrc, MemFlag, PAGE_SIZE, openKvm, type Vm } from '../lib';

const arg = (name: string, dflt: number): number =>
  process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) : dflt;
const ROUNDS = arg('--rounds', 5);
const SEED = BigInt(arg('--seed', 7));

/** Guest memory: [0, 16 MiB), a hole, then two adjacent 16 MiB slots at 64 MiB (s390 memslots are whole MiBs). */
const LAYOUT = [
  { slot: 0, guestPhysAddr: 0, size: 16 << 20 },
  { slot: 1, guestPhysAddr: 64 << 20, size: 16 << 20 },
  { slot: 2, guestPhysAddr: 80 << 20, size: 16 << 20 },
];
/** Values per GET: QEMU asks for its whole buffer each call. */
const GET_COUNT = 4096;
/** Values one iterative round may send (QEMU stops at its migration rate limit); the final round sends all. */
const ROUND_BUDGET = 3000;
const ALL_BITS = 0xffff_ffff_ffff_ffffn; // QEMU's SET_CMMA_BITS mask: usage state and NODAT
/** Stream flags of QEMU's storage-attribute section (hw/s390x/s390-stattrib.c STATTR_FLAG_*). */
const STATTR_FLAG_EOS = 0x01n;
const STATTR_FLAG_MORE = 0x02n;
const STATTR_FLAG_DONE = 0x08n;

function buildVm(kvm: ReturnType<typeof openKvm>, flags: number): Vm {
  const vm = kvm.createVm();
  vm.enableCmma(); // before any vCPU
  for (const s of LAYOUT) {
    vm.setUserMemoryRegion({ slot: s.slot, guestPhysAddr: s.guestPhysAddr, memory: vm.createMemory(s.size), flags });
  }
  vm.createVcpu(0);
  return vm;
}

/** The guest's page-state changes between rounds: xorshift64 picks pages and operations. */
function makeGuest(vm: Vm, seed: bigint) {
  const gfns = LAYOUT.flatMap((s) => Array.from({ length: s.size / PAGE_SIZE }, (_, i) => s.guestPhysAddr / PAGE_SIZE + i));
  const orcs = [EssaOrc.SetStable, EssaOrc.SetUnused, EssaOrc.SetVolatile, EssaOrc.SetPotVolatile, EssaOrc.SetStableNodat, EssaOrc.GetState];
  let x = seed || 1n;
  const next = (): number => {
    x ^= (x << 13n) & 0xffff_ffff_ffff_ffffn;
    x ^= x >> 7n;
    x ^= (x << 17n) & 0xffff_ffff_ffff_ffffn;
    return Number(x % 0x1_0000_0000n);
  };
  return (essas: number): void => {
    for (let i = 0; i < essas; i++) vm.emulator!.essa(gfns[next() % gfns.length], orcs[next() % orcs.length]);
  };
}

/**
 * One save pass of the source: GET from the cursor until nothing is left (or the round's
 * budget is spent), restarting at gfn 0 when a call finds nothing above the cursor but pages
 * remain (rule 111). The cursor carries over to the next round, as QEMU's migration_cur_gfn.
 */
function savePass(src: Vm, cursor: { gfn: number }, final: boolean): { stream: Buffer; blocks: number; values: number; remaining: number } {
  const parts: Buffer[] = [];
  const values = new Uint8Array(GET_COUNT);
  let blocks = 0;
  let sent = 0;
  let remaining = 0;
  for (;;) {
    const r = src.getCmmaBits({ startGfn: cursor.gfn, count: GET_COUNT, values });
    remaining = r.remaining;
    if (r.count > 0) {
      const header = Buffer.alloc(16);
      header.writeBigUInt64BE((BigInt(r.startGfn) * BigInt(PAGE_SIZE)) | STATTR_FLAG_MORE, 0);
      header.writeBigUInt64BE(BigInt(r.count), 8);
      parts.push(header, Buffer.from(values.subarray(0, r.count)));
      blocks++;
      sent += r.count;
    }
    if (remaining === 0) break;
    cursor.gfn = r.count > 0 ? r.startGfn + r.count : 0;
    if (!final && sent >= ROUND_BUDGET) break;
  }
  const trailer = Buffer.alloc(final ? 16 : 8);
  if (final) trailer.writeBigUInt64BE(STATTR_FLAG_DONE, 0);
  trailer.writeBigUInt64BE(STATTR_FLAG_EOS, final ? 8 : 0);
  parts.push(trailer);
  return { stream: Buffer.concat(parts), blocks, values: sent, remaining };
}

/** The destination's load: each block becomes one KVM_S390_SET_CMMA_BITS. Returns true on DONE. */
function load(dst: Vm, stream: Buffer): boolean {
  let at = 0;
  for (;;) {
    const word = stream.readBigUInt64BE(at);
    at += 8;
    if (word & STATTR_FLAG_MORE) {
      const count = Number(stream.readBigUInt64BE(at));
      at += 8;
      const startGfn = Number((word & ~0xfffn) / BigInt(PAGE_SIZE));
      dst.setCmmaBits({ startGfn, values: stream.subarray(at, at + count), mask: ALL_BITS });
      at += count;
    } else if (word & STATTR_FLAG_DONE) {
      return true;
    } else if (word & STATTR_FLAG_EOS) {
      return false;
    } else {
      throw new Error(`bad stream word 0x${word.toString(16)} at ${at - 8}`);
    }
  }
}

const kvm = openKvm({ backend: 'emulator', arch: 's390x' });
const src = buildVm(kvm, MemFlag.LogDirtyPages); // migration mode needs dirty logging on every slot
const dst = buildVm(kvm, 0);
const guest = makeGuest(src, SEED);
const pages = LAYOUT.reduce((n, s) => n + s.size / PAGE_SIZE, 0);
console.log(`s390x (${kvm.backend}): ${pages} pages in ${LAYOUT.length} memslots`);

guest(2000); // the guest boots and starts using CMM (outside migration mode this turns on uses_cmm)
src.setMigrationMode(true);
console.log('round  ESSAs  GET blocks  values   bytes  remaining');
const cursor = { gfn: 0 };
for (let round = 0; round <= ROUNDS; round++) {
  const final = round === ROUNDS;
  const essas = round === 0 || final ? 0 : 500 * round; // the guest stops before the final pass
  guest(essas);
  const pass = savePass(src, cursor, final);
  const done = load(dst, pass.stream);
  console.log(
    `${String(round).padStart(5)}  ${String(essas).padStart(5)}  ${String(pass.blocks).padStart(10)}  ${String(pass.values).padStart(6)}  ${String(pass.stream.length).padStart(6)}  ${String(pass.remaining).padStart(9)}${done ? '  DONE' : ''}`,
  );
}
src.setMigrationMode(false);

// Both sides, peeked slot by slot, must agree on every page.
let differ = 0;
for (const s of LAYOUT) {
  const n = s.size / PAGE_SIZE;
  const a = src.getCmmaBits({ startGfn: s.guestPhysAddr / PAGE_SIZE, count: n, peek: true }).values;
  const b = dst.getCmmaBits({ startGfn: s.guestPhysAddr / PAGE_SIZE, count: n, peek: true }).values;
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) differ++;
}
const states = new Map<number, number>();
for (const s of LAYOUT) {
  for (const v of dst.getCmmaBits({ startGfn: s.guestPhysAddr / PAGE_SIZE, count: s.size / PAGE_SIZE, peek: true }).values) {
    states.set(v, (states.get(v) ?? 0) + 1);
  }
}
console.log(`destination page states: ${[...states].sort((p, q) => p[0] - q[0]).map(([v, n]) => `0x${v.toString(16).padStart(2, '0')}:${n}`).join(' ')}`);
console.log(differ === 0 ? `identical: all ${pages} pages` : `MISMATCH: ${differ} pages differ`);
kvm.close();
process.exitCode = differ === 0 ? 0 : 1;
