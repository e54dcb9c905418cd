// The C guest of examples/own-guest under the checkpoint engine, as a user runs it: checkpointed
// every ~1 ms with its full state (State frames), restored from any epoch, failed over to a
// replica process when the primary is SIGKILLed, migrated live between two processes; each
// time it finishes with exactly the output and result of an uninterrupted run. Restored from
// the same stream with only its general and special registers, it does not.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Kvm } from '../lib';
import { buildGuest } from '../examples/own-guest/build';
import { guestBuildSkip } from './helpers/guest-build';
import { Checkpointer, OutputClient, OutputCommit, ReplicaImage, type CheckpointSink } from '../lib/checkpoint';
import { COM1_PORT } from '../lib/devices';
import { GUEST_EXIT_PORT, copyNonZeroPages, createImageMachine, machineFromLayout, restoreMachine, setRegisters } from '../lib/checkpoint/machine';
import { OutputTap } from '../lib/checkpoint/migration-link';
import { GuestRunner } from '../lib/dirtyrate/runner';
import { describeNative } from './helpers/native';
import { expectedRun } from './helpers/own-guest';

const CLI = path.join(__dirname, '..', 'dist', 'bin', 'kvm-dirty.js');
/** ~1 s of guest time (1 ms timer steps): long enough to be killed or migrated mid-run. */
const TICKS = 1000;
const EXPECTED = expectedRun([0xfb, 0xff], TICKS);

/** A sink that keeps the stream in memory and acknowledges each epoch once a replica image applied it. */
class MemorySink implements CheckpointSink {
  readonly chunks: Buffer[] = [];
  readonly #replica = new ReplicaImage();
  onAck: (epoch: number) => void = () => undefined;
  onFailure: (err: Error) => void = () => undefined;
  send(buf: Buffer, done: () => void): void {
    const copy = Buffer.from(buf);
    this.chunks.push(copy);
    done();
    const commits = this.#replica.push(Buffer.from(copy));
    if (commits.length) queueMicrotask(() => this.onAck(commits[commits.length - 1].epoch));
  }
  async close(): Promise<void> {}
}

/** Output records as text: COM1 bytes as characters, the result as its value. */
function decode(outputs: { port: number; value: number }[]): { text: string; result: number | null } {
  let text = '';
  let result: number | null = null;
  for (const o of outputs) {
    if (o.port === COM1_PORT) text += String.fromCharCode(o.value);
    else if (o.port === GUEST_EXIT_PORT) result = o.value;
  }
  return { text, result };
}

interface Ran { code: number | null; stdout: string; stderr: string }

function start(args: string[]): { child: ChildProcess; done: Promise<Ran>; port: Promise<number> } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let gotPort: (p: number) => void;
  const port = new Promise<number>((r) => (gotPort = r));
  const look = () => {
    const m = /listening on [^:\s]+:(\d+)|"event":"listening".*?"port":(\d+)/.exec(stdout + stderr);
    if (m) gotPort(Number(m[1] ?? m[2]));
  };
  child.stdout!.on('data', (d) => ((stdout += d), look()));
  child.stderr!.on('data', (d) => ((stderr += d), look()));
  const done = new Promise<Ran>((r) => child.on('exit', (code) => r({ code, stdout, stderr })));
  return { child, done, port };
}

const skip = guestBuildSkip();
let dir = '';
let image: Uint8Array;

if (skip !== undefined) {
  describe.skip(`the own-guest C program under checkpointing (skipped: ${skip})`, () => test('runs', () => undefined));
} else {
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-dirty-own-guest-'));
    image = new Uint8Array(fs.readFileSync(buildGuest(dir, { ticks: TICKS }).bin));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  describeNative('the own-guest C program under checkpointing', (open) => {
    let kvm: Kvm;
    beforeEach(() => (kvm = open()));
    afterEach(() => kvm.close());

    /** Checkpoints the whole run into memory (epochs of ~1 ms); the stream's bytes and what was released. */
    async function checkpointRun(): Promise<{ stream: Buffer; released: string; result: number | null; epochs: number }> {
      const m = createImageMachine(kvm, { image });
      expect([m.irqchip, m.fullState, m.exitPort]).toEqual([true, true, GUEST_EXIT_PORT]);
      const sink = new MemorySink();
      let released = '';
      const outputs = new OutputCommit((_first, packed, count) => {
        for (let i = 0; i < count; i++) if ((packed[2 * i] & 0xffff) === COM1_PORT) released += String.fromCharCode(packed[2 * i + 1]);
      });
      const stats = await new Checkpointer({ machine: m, sink, outputs, epochMs: 1 }).run();
      m.close();
      return { stream: Buffer.concat(sink.chunks), released, result: stats.guestResult, epochs: stats.epochs };
    }

    /** The stream's image as of epoch `epoch`. */
    function imageAt(stream: Buffer, epoch: number): ReplicaImage {
      const img = new ReplicaImage();
      for (let at = 0; at < stream.length && img.epoch < epoch; at += 1024) img.push(Buffer.from(stream.subarray(at, at + 1024)));
      expect(img.epoch).toBe(epoch);
      return img;
    }

    /** Runs a rebuilt machine on from the image's epoch for at most `ms`; the text and result it outputs. */
    async function runOn(m: ReturnType<typeof restoreMachine>, img: ReplicaImage, ms: number): Promise<{ text: string; result: number | null }> {
      const got: { port: number; value: number }[] = [];
      const tap = new OutputTap([GUEST_EXIT_PORT], img.committed!.outputSeq, { released: true, onRelease: (port, value) => got.push({ port, value }) });
      const runner = new GuestRunner(m, [tap]);
      runner.start();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([runner.done(), new Promise((r) => (timer = setTimeout(r, ms)))]);
      clearTimeout(timer);
      await runner.stop();
      m.close();
      return decode(got);
    }

    test('checkpointed every ~1 ms with its full state, it runs as without: the released output and the result are exact', async () => {
      const run = await checkpointRun();
      expect(run.released).toBe(EXPECTED.output);
      expect(run.result).toBe(EXPECTED.result);
      expect(run.epochs).toBeGreaterThan(200);
    });

    test('restored from an early, a middle and a late epoch of the stream, it finishes with exactly the rest of the output', async () => {
      const run = await checkpointRun();
      for (const epoch of [2, Math.floor(run.epochs / 2), run.epochs - 20]) {
        const img = imageAt(run.stream, epoch);
        expect(img.state).not.toBeNull();
        // output #i is the guest's i-th character: the rest of the run starts at the epoch's output sequence
        const seq = img.committed!.outputSeq;
        const after = await runOn(restoreMachine(kvm, img), img, 30_000);
        expect(after.text).toBe(EXPECTED.output.slice(seq));
        expect(after.result).toBe(EXPECTED.result);
      }
    });

    test('restored with only regs and sregs (no xsave, LAPIC, PIC, PIT, serial state), it visibly breaks', async () => {
      const run = await checkpointRun();
      const img = imageAt(run.stream, Math.floor(run.epochs / 2));
      const m = machineFromLayout(kvm, img.layout!);
      img.memory.forEach((_, i) => copyNonZeroPages(img.slot(i), m.slots[i].bytes));
      setRegisters(m, { ...img.layout!, vcpus: img.layout!.vcpus.map((v, i) => ({ ...v, sregs: img.state!.vcpus[i].state.sregs })) }, img.regs);
      const after = await runOn(m, img, 3000);
      // without its LAPIC timer it sleeps in hlt for ever, or without its xmm values it prints other numbers
      expect(after.result === EXPECTED.result && after.text === EXPECTED.output.slice(img.committed!.outputSeq)).toBe(false);
    });

    test('failover: the primary is SIGKILLed mid-run; the replica process takes over and the client gets every output once', async () => {
      const file = path.join(dir, 'guest.bin');
      fs.writeFileSync(file, image);
      const client = new OutputClient();
      const clientPort = await client.listen(0);
      try {
        const replica = start(['replica', '--listen', '0', '--take-over', '--output-client', `127.0.0.1:${clientPort}`, '--json']);
        const replicaPort = await replica.port;
        const primary = start(['checkpoint', '--image', file, '--backup', `127.0.0.1:${replicaPort}`, '--epoch-ms', '1', '--output-client', `127.0.0.1:${clientPort}`, '--json']);
        // about a third of the output released by the primary, then it dies
        await client.waitFor(Math.floor(EXPECTED.output.length / 3), 30_000);
        primary.child.kill('SIGKILL');
        const [p, r] = await Promise.all([primary.done, replica.done]);
        expect(p.code).toBe(null);
        expect([r.code, r.stderr]).toEqual([0, '']);
        const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
        expect(events.map((e) => e.event)).toEqual(expect.arrayContaining(['listening', 'lost', 'took-over', 'guest-exit']));
        expect(events.find((e) => e.event === 'guest-exit').guestResult).toBe(EXPECTED.result);
        await client.waitFor(EXPECTED.output.length + 1, 10_000);
        expect(client.violations).toEqual([]);
        expect(client.hosts).toBe(2);
        const values = client.values;
        expect(String.fromCharCode(...values.slice(0, -1))).toBe(EXPECTED.output);
        expect(values[values.length - 1]).toBe(EXPECTED.result);
      } finally {
        await client.close();
      }
    });

    test('live migration between two processes (migrate --image --to, incoming): source and destination output make the uninterrupted run', async () => {
      const file = path.join(dir, 'guest.bin');
      fs.writeFileSync(file, image);
      const dst = start(['incoming', '--listen', '0']);
      const port = await dst.port;
      const src = start(['migrate', '--image', file, '--to', `127.0.0.1:${port}`, '--run-ms', '300']);
      const [s, d] = await Promise.all([src.done, dst.done]);
      expect([s.code, d.code, s.stderr]).toEqual([0, 0, '']);
      // each prints the guest's serial output it released, then its report
      const fromSource = s.stdout.slice(0, s.stdout.indexOf('live migration to '));
      const fromDestination = d.stdout.slice(0, d.stdout.indexOf('migrated in: '));
      expect(fromSource.length).toBeGreaterThan(0);
      expect(fromDestination.length).toBeGreaterThan(0);
      expect(fromSource + fromDestination).toBe(EXPECTED.output);
      expect(s.stdout).toMatch(/live migration to 127\.0\.0\.1:\d+: completed/);
      expect(d.stdout).toContain(`guest result 0x${EXPECTED.result.toString(16).padStart(8, '0')}`);
    });

    test('kvm-dirty checkpoint --image --out, then kvm-dirty restore of the whole file and of a cut one: the result from the stream, or the guest runs on to it', async () => {
      const file = path.join(dir, 'guest.bin');
      const out = path.join(dir, 'stream.kdck');
      fs.writeFileSync(file, image);
      const ck = start(['checkpoint', '--image', file, '--out', out, '--epoch-ms', '2', '--json']);
      const c = await ck.done;
      expect([c.code, c.stderr]).toEqual([0, '']);
      const summary = JSON.parse(c.stdout);
      expect(summary).toMatchObject({ guestResult: EXPECTED.result, serial: EXPECTED.output, released: EXPECTED.output.length + 1 });
      // the whole run: the guest ended in the stream (halted after its result), nothing to run on
      const whole = await start(['restore', out, '--json']).done;
      expect([whole.code, whole.stderr]).toEqual([0, '']);
      const done = JSON.parse(whole.stdout);
      expect(done).toMatchObject({ ok: true, guestResult: EXPECTED.result });
      expect(done.checks.find((c: { name: string }) => c.name === 'guest').detail).toMatch(/had ended in the stream/);
      const cut = path.join(dir, 'cut.kdck');
      fs.writeFileSync(cut, fs.readFileSync(out).subarray(0, Math.floor(fs.statSync(out).size / 2)));
      const r = await start(['restore', cut, '--json']).done;
      expect([r.code, r.stderr]).toEqual([0, '']);
      const report = JSON.parse(r.stdout);
      expect(report).toMatchObject({ ok: true, guestResult: EXPECTED.result });
      expect(EXPECTED.output.endsWith(report.serial)).toBe(true);
      expect(report.serial.length).toBeGreaterThan(0);
    });
  });
}

describe('createImageMachine on the emulator', () => {
  test('refuses with the kernel\'s answer: no in-kernel irqchip (ENOTTY on KVM_CREATE_IRQCHIP)', () => {
    const { openKvm } = jest.requireActual('../lib') as typeof import('../lib');
    const kvm = openKvm({ backend: 'emulator' });
    try {
      expect(() => createImageMachine(kvm, { image: new Uint8Array(16) })).toThrow(expect.objectContaining({ code: 'ENOTTY', ioctl: 'KVM_CREATE_IRQCHIP' }));
    } finally {
      kvm.close();
    }
  });
});
