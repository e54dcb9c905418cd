// The frames a live migration adds to the checkpoint stream (docs/stream-format.md §9): a
// Control frame for the handshake both ways (ping, the destination's "resumed", the source's
// "released"), and a StorageAttrs frame carrying s390 CMMA values inside an epoch.

import { FrameType, StreamError, encodeFrame, readU64, writeU64, type Frame } from './format';

export enum ControlKind {
  /** source -> destination: u64 nonce; answered at once with Pong */
  Ping = 1,
  /** destination -> source: the Ping's u64 nonce */
  Pong = 2,
  /**
   * destination -> source: the guest runs here now (u64 epoch it resumed from, u64 ns from the
   * guest's resumption to this frame's send); its outputs are held until Released
   */
  Resumed = 3,
  /** source -> destination: the source's guest is closed for good; the destination owns the guest */
  Released = 4,
}

export interface ControlRecord {
  kind: ControlKind;
  /** Ping/Pong: the nonce; Resumed: the epoch */
  a: number;
  /** Resumed: ns from resumption to sending */
  b: number;
}

const CONTROL_BYTES = 24;

/** Control payload (24 bytes): u32 kind, u32 zero, u64 a, u64 b. */
export function encodeControlFrame(streamId: number, seq: number, c: ControlRecord): Buffer {
  const p = Buffer.alloc(CONTROL_BYTES);
  p.writeUInt32LE(c.kind, 0);
  writeU64(p, 8, c.a);
  writeU64(p, 16, c.b);
  return encodeFrame(FrameType.Control, streamId, seq, p);
}

export function decodeControlFrame(frame: Frame): ControlRecord {
  const p = frame.payload;
  if (p.length !== CONTROL_BYTES) throw new StreamError('EFRAME', frame.offset, `Control frame of ${p.length} bytes (${CONTROL_BYTES} expected)`);
  const kind = p.readUInt32LE(0);
  if (!(kind in ControlKind) || p.readUInt32LE(4) !== 0) throw new StreamError('EFRAME', frame.offset, `unknown Control kind ${kind}`);
  return { kind, a: readU64(p, 8, frame.offset, 'control value'), b: readU64(p, 16, frame.offset, 'control value') };
}

/** A run of s390 CMMA values: page startGfn + i has values[i] (KVM_S390_GET_CMMA_BITS's output). */
export interface AttrRun {
  startGfn: number;
  values: Uint8Array;
}

export interface AttrsRecord {
  epoch: number;
  runs: AttrRun[];
}

/**
 * StorageAttrs payload: u64 epoch, u32 runs, u32 zero, then per run u64 startGfn, u32 count,
 * u32 zero and `count` value bytes, padded with zeros to a multiple of 8.
 */
export function encodeAttrsFrame(streamId: number, seq: number, r: AttrsRecord): Buffer {
  let size = 16;
  for (const run of r.runs) size += 16 + pad8(run.values.length);
  const p = Buffer.alloc(size);
  writeU64(p, 0, r.epoch);
  p.writeUInt32LE(r.runs.length, 8);
  let at = 16;
  for (const run of r.runs) {
    writeU64(p, at, run.startGfn);
    p.writeUInt32LE(run.values.length, at + 8);
    p.set(run.values, at + 16);
    at += 16 + pad8(run.values.length);
  }
  return encodeFrame(FrameType.StorageAttrs, streamId, seq, p);
}

export function decodeAttrsFrame(frame: Frame): AttrsRecord {
  const p = frame.payload;
  const off = frame.offset;
  if (p.length < 16) throw new StreamError('EFRAME', off, `StorageAttrs frame of ${p.length} bytes`);
  const epoch = readU64(p, 0, off, 'epoch number');
  const n = p.readUInt32LE(8);
  const runs: AttrRun[] = [];
  let at = 16;
  for (let i = 0; i < n; i++) {
    if (at + 16 > p.length) throw new StreamError('EFRAME', off, `StorageAttrs of epoch ${epoch}: run ${i} is past the frame's end`);
    const startGfn = readU64(p, at, off, 'gfn');
    const count = p.readUInt32LE(at + 8);
    if (at + 16 + pad8(count) > p.length) throw new StreamError('EFRAME', off, `StorageAttrs of epoch ${epoch}: run ${i} of ${count} values is past the frame's end`);
    runs.push({ startGfn, values: p.subarray(at + 16, at + 16 + count) });
    at += 16 + pad8(count);
  }
  if (at !== p.length) throw new StreamError('EFRAME', off, `StorageAttrs of epoch ${epoch}: ${p.length - at} bytes after its ${n} runs`);
  return { epoch, runs };
}

function pad8(n: number): number {
  return (n + 7) & ~7;
}
