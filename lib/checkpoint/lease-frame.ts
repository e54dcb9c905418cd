// The lease a writer works under (stream format extension 1, docs/stream-format.md §9): a
// primary's checkpoint stream says which lease (fencing token) and which of its streams it
// is, so that a backup can campaign with the newest state it holds; a VM host's output
// connection says which lease it releases under, so that the output client follows the
// newest holder and refuses an older one.

import { encodeFrame, readU64, StreamError, writeU64, type Frame, type FrameType } from './format';

export interface LeaseTag {
  /** the fencing token: the lease key's create revision in the coordinator (grows with every holder) */
  token: number;
  /** streams this holder started before this one (a backup joining restarts the stream) */
  stream: number;
  /** the holder's name */
  holder: string;
}

const FIXED = 16;
const MAX_HOLDER = 256;

export function encodeLeaseFrame(type: FrameType.Lease | FrameType.HostHello, streamId: number, seq: number, tag: LeaseTag): Buffer {
  const name = Buffer.from(tag.holder, 'utf8');
  if (name.length === 0 || name.length > MAX_HOLDER) throw new RangeError(`a lease holder's name is 1 to ${MAX_HOLDER} bytes of UTF-8, got ${name.length}`);
  const p = Buffer.alloc(FIXED + name.length);
  writeU64(p, 0, tag.token);
  writeU64(p, 8, tag.stream);
  name.copy(p, FIXED);
  return encodeFrame(type, streamId, seq, p);
}

export function decodeLeaseFrame(frame: Frame): LeaseTag {
  const p = frame.payload;
  if (p.length <= FIXED || p.length > FIXED + MAX_HOLDER) throw new StreamError('EFRAME', frame.offset, `lease payload of ${p.length} bytes (${FIXED + 1} to ${FIXED + MAX_HOLDER} expected)`);
  return { token: readU64(p, 0, frame.offset, 'lease token'), stream: readU64(p, 8, frame.offset, 'lease stream'), holder: p.subarray(FIXED).toString('utf8') };
}
