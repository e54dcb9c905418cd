// The machine's full state in the checkpoint stream (extension 3): Header flags, State frames
// with every vCPU's VcpuState, the VM's and the devices' state; what a reader refuses; and
// the VMM's own writes (memory.write) merged into the epochs. On both backends: a workload
// machine can record its full state too (machine.fullState), which the emulator answers with
// what it models.
import { Workload, type Kvm } from '../lib';
import { Checkpointer, type CheckpointSink } from '../lib/checkpoint/checkpointer';
import { ENVELOPE_BYTES, FRAME_OVERHEAD, FrameType, StreamError, sealFrame, writeEnvelope } from '../lib/checkpoint/format';
import { ReplicaImage } from '../lib/checkpoint/image';
import { captureState, createMachine, dataGfnFor, describeMachine, restoreMachine, sameContents, type Machine } from '../lib/checkpoint/machine';
import { encodeStatePayload } from '../lib/checkpoint/state-frame';
import { PageSet } from '../lib/checkpoint/tracker';
import { StreamWriter } from '../lib/checkpoint/writer';
import { describeEachBackend } from './helpers/backends';
import { expectSameRegs } from './helpers/regs';

/** Keeps the stream and acknowledges each epoch once a replica image applied it. */
class CaptureSink implements CheckpointSink {
  readonly chunks: Buffer[] = [];
  readonly replica = new ReplicaImage();
  onAck: (epoch: number) => void = () => undefined;
  onFailure: (err: Error) => void = () => undefined;
  send(buf: Buffer, done: () => void): void {
    const copy = Buffer.from(buf);
    this.chunks.push(copy);
    done();
    const commits = this.replica.push(Buffer.from(copy));
    if (commits.length) queueMicrotask(() => this.onAck(commits[commits.length - 1].epoch));
  }
  async close(): Promise<void> {}
}

/** Each frame of a stream: where it starts, its type, its payload bytes. */
function frames(stream: Buffer): { at: number; type: number; length: number }[] {
  const out = [];
  for (let at = 0; at < stream.length; at += FRAME_OVERHEAD + stream.readUInt32LE(at + 12)) out.push({ at, type: stream[at + 6], length: stream.readUInt32LE(at + 12) });
  return out;
}

/** Pushes a stream; the error it ends with (or null) and the image. */
function read(stream: Buffer): { image: ReplicaImage; error: StreamError | null } {
  const image = new ReplicaImage();
  try {
    image.push(stream);
    return { image, error: null };
  } catch (e) {
    return { image, error: e as StreamError };
  }
}

const stride = (data: number) => Workload.stride({ firstPage: dataGfnFor(data), pages: 16, stridePages: 7 });

describeEachBackend('the full state in the stream', (b) => {
  let kvm: Kvm;
  beforeEach(() => (kvm = b.open()));
  afterEach(() => kvm.close());

  function fullStateMachine(): Machine {
    const m = createMachine(kvm, { dataPages: 256, mode: 'bitmap', workloads: stride(256) });
    m.fullState = true;
    return m;
  }

  test('a machine that records its full state: the Header says so, every epoch has a State frame, the replica restores from it', async () => {
    const m = fullStateMachine();
    const sink = new CaptureSink();
    await new Checkpointer({ machine: m, sink, epochMs: 5 }).run({ epochs: 6 });
    const stream = Buffer.concat(sink.chunks);
    const fs = frames(stream);
    expect(sink.replica.layout).toMatchObject({ fullState: true });
    expect(sink.replica.layout!.irqchip).toBeUndefined();
    expect(fs.filter((f) => f.type === FrameType.State).length).toBe(7); // the base epoch and 6 more
    expect(fs.filter((f) => f.type === FrameType.Commit).length).toBe(7);
    const img = sink.replica;
    expect(img.epoch).toBe(6);
    expect(img.state!.vcpus.map((v) => v.id)).toEqual([0]);
    expect(img.state!.vm).toBeNull(); // no in-kernel devices on a workload machine
    expectSameRegs(img.state!.vcpus[0].state.regs, img.regs[0].regs);
    expectSameRegs(img.state!.vcpus[0].state.regs, m.vcpus[0].getRegs());
    const copy = restoreMachine(kvm, img);
    expect(m.slots.every((s, i) => sameContents(s, copy.slots[i]))).toBe(true);
    expectSameRegs(copy.vcpus[0].getRegs(), m.vcpus[0].getRegs());
    expect(copy.vcpus[0].getSregs()).toEqual(m.vcpus[0].getSregs());
    // both run the same next epoch
    expect(copy.vcpus[0].run()).toEqual(m.vcpus[0].run());
    copy.close();
    m.close();
  });

  test('refused, nothing of the epoch applied: a damaged piece (its frame CRC made right again), a State frame outside an epoch', async () => {
    const m = fullStateMachine();
    const sink = new CaptureSink();
    await new Checkpointer({ machine: m, sink, epochMs: 5, delta: false }).run({ epochs: 3 });
    m.close();
    const stream = Buffer.concat(sink.chunks);
    const states = frames(stream).filter((f) => f.type === FrameType.State);
    const last = states[states.length - 1];
    // a byte of the last epoch's vCPU state (its magic): the frame CRC made right again, so the decoder must catch it
    const bad = Buffer.from(stream);
    bad[last.at + ENVELOPE_BYTES + 24 + 8] ^= 0xff;
    sealFrame(bad, last.at, last.length);
    const r = read(bad);
    expect(r.error).toMatchObject({ code: 'EFRAME' });
    expect(r.error!.message).toMatch(/State of epoch 3: vCPU 0's state/);
    expect(r.image.epoch).toBe(2);
    // a State frame outside an epoch: after the Commit
    const cut = stream.subarray(0, last.at + FRAME_OVERHEAD + last.length + FRAME_OVERHEAD + 48);
    const extra = Buffer.from(stream.subarray(last.at, last.at + FRAME_OVERHEAD + last.length));
    const again = read(Buffer.concat([cut, reseq(extra, frames(cut).length)]));
    expect(again.error).toMatchObject({ code: 'EORDER' });
    expect(again.image.epoch).toBe(3);
  });

  test('a fullState Header with an epoch that has registers but no State frame is refused at its Commit', () => {
    const m = fullStateMachine();
    const w = new StreamWriter(4096, { delta: false });
    const set = new PageSet(m.slots.map((s) => s.layout.size / 4096));
    const slots = m.slots.map((s) => ({ gfn: s.layout.guestPhysAddr / 4096, bytes: s.bytes }));
    const regs = [{ id: 0, regs: m.vcpus[0].getRegs() }];
    const parts = [
      w.header(describeMachine(m)),
      w.finish(w.epoch(0, regs, new Uint32Array(0), 0, set, slots, 0, 0, undefined, encodeStatePayload(0, captureState(m)))),
      w.finish(w.epoch(1, regs, new Uint32Array(0), 0, set, slots, 0, 0)),
    ];
    const r = read(Buffer.concat(parts));
    expect(r.error).toMatchObject({ code: 'EFRAME' });
    expect(r.error!.message).toMatch(/epoch 1 carries registers but no State frame/);
    expect(r.image.epoch).toBe(0);
    m.close();
  });

  test('a State frame in a stream whose Header does not announce it, and unknown Header flags, are refused', () => {
    const m = createMachine(kvm, { dataPages: 256, mode: 'bitmap', workloads: stride(256) });
    const w = new StreamWriter(4096, { delta: false });
    const set = new PageSet(m.slots.map((s) => s.layout.size / 4096));
    const slots = m.slots.map((s) => ({ gfn: s.layout.guestPhysAddr / 4096, bytes: s.bytes }));
    const regs = [{ id: 0, regs: m.vcpus[0].getRegs() }];
    const stream = Buffer.concat([w.header(describeMachine(m)), w.finish(w.epoch(0, regs, new Uint32Array(0), 0, set, slots, 0, 0, undefined, encodeStatePayload(0, captureState(m))))]);
    const r = read(stream);
    expect(r.error).toMatchObject({ code: 'EFRAME' });
    expect(r.error!.message).toMatch(/does not announce full state/);
    const flags = Buffer.from(stream);
    flags.writeUInt32LE(4, ENVELOPE_BYTES + 12);
    sealFrame(flags, 0, frames(stream)[0].length);
    expect(read(flags).error!.message).toMatch(/unknown Header flags 0x4/);
    m.close();
  });

  for (const mode of ['ring', 'bitmap'] as const) {
    test(`VMM writes (memory.write) reach the replica in the next epoch, ${mode} mode: the log never sees them`, async () => {
      if (mode === 'ring' && !kvm.dirtyRingLimits().supported) return;
      const m = createMachine(kvm, { dataPages: 256, mode, workloads: stride(256) });
      const sink = new CaptureSink();
      let wrote = false;
      const ck: Checkpointer = new Checkpointer({
        machine: m, sink, epochMs: 5,
        onEpoch: (e) => {
          // at epoch 2, with the guest paused: a device's DMA into a page the workload never writes
          if (e.epoch === 2) {
            m.slots[1].memory.write(5 * 4096 + 12, Uint8Array.from([1, 2, 3, 4]));
            wrote = true;
          }
        },
      });
      await ck.run({ epochs: 4 });
      expect(wrote).toBe(true);
      const img = sink.replica;
      expect([...img.slot(1).bytes.subarray(5 * 4096 + 12, 5 * 4096 + 16)]).toEqual([1, 2, 3, 4]);
      expect(m.slots.every((s, i) => sameContents(s, img.slot(i)))).toBe(true);
      m.close();
    });
  }
});

/** A frame given sequence number `seq`, its envelope CRC made right. */
function reseq(frame: Buffer, seq: number): Buffer {
  writeEnvelope(frame, 0, frame[6], frame.readUInt32LE(8), seq, frame.readUInt32LE(12));
  return frame;
}
