// Live migration from another process: the destination side, receiveMigration().
//
// One connection, one migration. The rounds land in the guest memory of a new VM as they
// come (a ReplicaImage over the machine's slots: an epoch is applied at its Commit, whole,
// and acknowledged). At End the machine is complete: registers set, s390 storage attributes
// applied, and the guest resumes at once, its outputs held; the destination says Resumed.
// Only the source's Released makes it the guest's owner: then the outputs the client has
// not seen (replayed from the stream, as a failover does) and the held ones go out.
//
// Anything else ends it with nothing started that anyone could see: a damaged, truncated or
// foreign stream is refused (an Error frame back, the reason in the rejection); a source that
// goes away before End leaves no guest; a source that goes away after Resumed but before
// Released may still run its guest, so the destination's is stopped and discarded too (its
// outputs never left).

import { randomInt } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { GuestRunner } from '../dirtyrate/runner';
import type { Kvm } from '../kvm';
import { ControlKind, encodeControlFrame, type ControlRecord } from './control';
import { FrameType, StreamError } from './format';
import { ReplicaImage } from './image';
import { applyState, machineFromLayout, type DirtyMode, type ImageGuestOptions, type Machine } from './machine';
import { OutputTap, applyStorageAttrs } from './migration-link';
import { OutputChannel } from './output';
import { encodeErrorFrame, encodeU64Frame, type CommitRecord, type VcpuRegs } from './records';
import { warmUpStream } from './warm';

export interface ReceiveMigrationOptions {
  kvm: Kvm;
  /** listen here for the one migration (port 0: any; onListening says which) */
  listen?: { port: number; host?: string };
  /** or take a connection already accepted */
  socket?: Socket;
  /** dirty tracking of the new VM (default: the ring where the kernel has one) */
  mode?: DirtyMode | 'auto';
  onListening?: (port: number) => void;
  /** give up when no source connected within this many ms (default: wait) */
  acceptTimeoutMs?: number;
  /** the output client the guest's outputs go to once the destination owns the guest */
  outputs?: { port: number; host?: string } | null;
  /** I/O ports whose OUTs are guest output (default 0x11, the counter's; a guest image's machine: its exit port) */
  outputPorts?: number[];
  /** each output as it is released here (after the handover): a CLI prints a guest's serial bytes with it */
  onOutput?: (port: number, value: number) => void;
  /** a guest image's machine: its VMM devices and exit port (default standardDevices, GUEST_EXIT_PORT) */
  guest?: ImageGuestOptions;
  /** ms to wait for the source's Released after Resumed (default 30000) */
  handoverTimeoutMs?: number;
  /** after each applied round */
  onRound?: (c: CommitRecord) => void;
  /** the machine is complete (memory, registers, storage attributes), its guest not yet resumed; this time counts as downtime */
  onComplete?: (m: Machine) => void;
}

/** The guest, migrated in and running here. */
export interface IncomingMigration {
  machine: Machine;
  /** runs the guest; stop() it to stop the guest (the machine stays open) */
  runner: GuestRunner;
  /** the epoch the guest resumed from (the source's final round) */
  epoch: number;
  /** the registers it resumed with, per vCPU */
  regs: readonly VcpuRegs[];
  /** output sequence number of the guest's first output here */
  outputSeq: number;
  /** outputs the client had not confirmed, sent again from the stream */
  replayed: number;
  stats: {
    rounds: number;
    bytes: number;
    pages: number;
    storageAttrs: number;
    /** ms from the final round's Commit to the guest running */
    resumeMs: number;
    /** ms from the first byte to the handover */
    totalTimeMs: number;
  };
  /** the output channel to the client, if one was given */
  channel: OutputChannel | null;
}

/** Receives one migration and resumes its guest here; rejects (with the reason) if it did not complete. */
export async function receiveMigration(o: ReceiveMigrationOptions): Promise<IncomingMigration> {
  if (typeof o !== 'object' || o === null || typeof o.kvm !== 'object') throw new TypeError('options must be { kvm, listen | socket, ... }');
  if (!o.socket === !o.listen) throw new TypeError('give exactly one of listen and socket');
  warmUpStream(); // the final round's decoding optimised before the guest waits for it (once per process)
  const socket = o.socket ?? (await acceptOne(o.listen!, o.onListening, o.acceptTimeoutMs));
  return receive(socket, o);
}

function acceptOne(listen: { port: number; host?: string }, onListening?: (port: number) => void, timeoutMs?: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const server: Server = createServer({ noDelay: true }, (s) => {
      clearTimeout(timer);
      server.close();
      resolve(s);
    });
    server.once('error', reject);
    server.listen(listen.port, listen.host ?? '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          server.close();
          reject(new Error(`no source connected to ${listen.host ?? '127.0.0.1'}:${port} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      onListening?.(port);
    });
  });
}

async function receive(socket: Socket, o: ReceiveMigrationOptions): Promise<IncomingMigration> {
  const started = performance.now();
  const streamId = randomInt(1, 0xffff_ffff);
  let seq = 0;
  let machine: Machine | null = null;
  let runner: GuestRunner | null = null;
  let failure: Error | null = null;
  let released = false;
  let ended = false;
  let rounds = 0;
  let bytes = 0;
  let pages = 0;
  let lastCommitAt = 0;
  const warming: Promise<void>[] = [];
  let wake: (() => void) | null = null;
  const kick = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const reply = (buf: Buffer) => socket.write(buf);
  const onControl = (c: ControlRecord) => {
    if (c.kind === ControlKind.Ping) reply(encodeControlFrame(streamId, seq++, { kind: ControlKind.Pong, a: c.a, b: 0 }));
    else if (c.kind === ControlKind.Released) released = true;
    else throw new StreamError('EFRAME', 0, `a ${ControlKind[c.kind]} Control frame from the source`);
    kick();
  };
  const image = new ReplicaImage((layout) => {
    machine = machineFromLayout(o.kvm, layout, o.mode ?? 'auto', undefined, o.guest);
    // The special registers come with the Header: set now, out of the downtime (KVM_SET_SREGS resets the vCPU's MMU context).
    machine.vcpus.forEach((v, i) => {
      v.setSregs(layout.vcpus[i].sregs);
      machine!.sregs[i] = layout.vcpus[i].sregs;
      // One KVM_RUN with immediate_exit (EINTR at once, no guest code) starts the vCPU's thread now rather than at the resume.
      v.kick();
      warming.push(v.runAsync().then(() => undefined));
    });
    return machine.slots.map((s) => s.bytes);
  }, onControl);
  let handedOver = false;
  /** the stream was refused: the Error frame is on its way, the socket ends after it */
  let refused = false;
  socket.setNoDelay(true);
  socket.on('error', () => undefined); // the close that follows says what happened
  socket.on('data', (chunk: Buffer) => {
    if (failure) return;
    bytes += chunk.length;
    try {
      const commits = image.push(chunk);
      if (commits.length) {
        const c = commits[commits.length - 1];
        reply(encodeU64Frame(FrameType.Ack, streamId, seq++, c.epoch));
        lastCommitAt = performance.now();
        for (const x of commits) {
          rounds++;
          pages += x.pages;
          o.onRound?.(x);
        }
      }
      if (image.finished) ended = true;
    } catch (e) {
      const err = e instanceof StreamError ? e : new Error(String(e));
      if (err instanceof StreamError) {
        socket.end(encodeErrorFrame(streamId, seq++, err.code, `${err.message}; nothing was started`));
        refused = true;
      }
      failure = new Error(`the migration stream was refused: ${err.message}; nothing was started`);
    }
    kick();
  });
  socket.on('close', () => {
    if (handedOver) return;
    failure ??= new Error(ended ? 'the source went away before it released the guest: the guest stays with the source' : `the source closed the connection after ${rounds} round(s), before the migration completed: nothing was started`);
    kick();
  });
  const until = async (ready: () => boolean, timeoutMs = Infinity, what = ''): Promise<void> => {
    const deadline = performance.now() + timeoutMs;
    while (!ready() && !failure) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`the source did not ${what} within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, Math.min(left, 1000));
      });
    }
    if (failure) throw failure;
  };
  const discard = async () => {
    await runner?.stop().catch(() => undefined);
    (machine as Machine | null)?.close();
    if (!refused) socket.destroy();
  };

  try {
    await until(() => ended);
    const m = machine as Machine | null;
    if (!m || !image.restorable || !image.layout) throw new Error('the stream ended without a complete machine: nothing was started');
    // Complete: registers, storage attributes, then the guest runs on here with its outputs held.
    await Promise.all(warming);
    if (image.state) applyState(m, image.state); // a guest image's machine: vCPUs, VM devices, VMM devices
    else m.vcpus.forEach((v, i) => v.setRegs(image.regs[i].regs)); // (sregs were set at the Header)
    let attrs = 0;
    if (m.cmma) m.slots.forEach((s, i) => (attrs += applyStorageAttrs(m.vm, s.layout.guestPhysAddr / 4096, image.storageAttrs(i))));
    o.onComplete?.(m);
    const outputSeq = image.committed!.outputSeq;
    const tap = new OutputTap(o.outputPorts ?? (m.exitPort !== null ? [m.exitPort] : [0x11]), outputSeq, { released: false, onRelease: o.onOutput });
    runner = new GuestRunner(m, [tap]);
    runner.start();
    const resumedAt = performance.now();
    reply(encodeControlFrame(streamId, seq++, { kind: ControlKind.Resumed, a: image.epoch, b: Math.round((performance.now() - resumedAt) * 1e6) }));
    await until(() => released, o.handoverTimeoutMs ?? 30_000, 'release the guest');
    // The guest is ours. The outputs the client has not confirmed come again from the stream, then the held ones.
    let channel: OutputChannel | null = null;
    let replayed = 0;
    if (o.outputs) {
      const c = await OutputChannel.connect(o.outputs.port, o.outputs.host);
      channel = c.channel;
      const held = image.outputsFrom(c.next);
      if (held.firstSeq !== c.next) throw new Error(`the output client expects output ${c.next}; the stream holds outputs from ${held.firstSeq} on`);
      channel.sendRecords(held.firstSeq, held.outputs);
      replayed = held.outputs.length;
    }
    tap.release(channel);
    handedOver = true;
    socket.end();
    return {
      machine: m, runner, epoch: image.epoch, regs: image.regs, outputSeq, replayed, channel,
      stats: { rounds, bytes, pages, storageAttrs: attrs, resumeMs: resumedAt - lastCommitAt, totalTimeMs: performance.now() - started },
    };
  } catch (e) {
    await discard();
    throw e;
  }
}
