// Guest images for vcpu.loadImage(): a flat binary or a static ELF64 (x86-64, ET_EXEC), parsed
// into the segments to copy into guest memory, and checked against the VM's memory slots.
//
// The guest runs on the harness of lib/guest/x86.ts: 64-bit long mode set up from the host, an
// identity map of every slot (at least 4 GiB, so the LAPIC and IOAPIC pages are reachable), no
// firmware. So an ELF segment's virtual address must equal its physical one, and nothing may
// land in the harness's gpa [0, 2 MiB).

import { HARNESS_SIZE, MAX_MAP_BYTES, PAGE_SIZE } from './x86';

/** What to load: see Vcpu.loadImage(). */
export interface ImageOptions {
  /** a flat binary, or an ELF64 (recognised by its magic, \x7fELF) */
  image: Uint8Array;
  /** flat binary only: where it goes (default 2 MiB, the first byte after the harness) */
  gpa?: number;
  /** where the guest starts (default: the ELF's e_entry, or a flat binary's first byte) */
  entry?: number;
  /** the initial rsp (default: the end of the memory slot holding the entry point); 16-byte aligned */
  stackTop?: number;
}

export interface ImageSegment {
  /** guest-physical address of the segment's first byte */
  gpa: number;
  /** bytes copied from the image */
  fileBytes: number;
  /** bytes the segment occupies (the rest after fileBytes is zeroed: .bss) */
  memBytes: number;
}

/** What loadImage() did. */
export interface LoadedImage {
  format: 'elf' | 'flat';
  entry: number;
  stackTop: number;
  segments: ImageSegment[];
}

/** A slot of guest memory as loadImage() sees it: [gpa, gpa + size) with a host view of any part. */
export interface ImageSlot {
  gpa: number;
  size: number;
  /** a host view of the slot's bytes [offset, offset + length) */
  view(offset: number, length: number): Uint8Array;
}

interface ParsedSegment extends ImageSegment {
  /** offset of the file bytes in the image */
  offset: number;
}

const ELF_MAGIC = 0x464c457f; // "\x7fELF" little-endian
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const EV_CURRENT = 1;
const ET_EXEC = 2;
const ET_DYN = 3;
const EM_X86_64 = 62;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PF_X = 1;

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** A u64 field of the image as a safe integer, else RangeError naming it. */
function u64(v: DataView, at: number, name: string): number {
  const x = v.getBigUint64(at, true);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`ELF: ${name} is 0x${x.toString(16)}, beyond guest memory`);
  return Number(x);
}

function parseElf(image: Uint8Array): { entry: number; entryExecutable: boolean; segments: ParsedSegment[] } {
  if (image.length < EHDR_SIZE) throw new RangeError(`ELF: ${image.length} bytes is shorter than the 64-byte ELF64 header`);
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (image[4] !== ELFCLASS64) throw new RangeError(`ELF: class ${image[4]} is not ELFCLASS64 (2): the guest runs in 64-bit mode`);
  if (image[5] !== ELFDATA2LSB) throw new RangeError(`ELF: data encoding ${image[5]} is not little-endian (ELFDATA2LSB)`);
  if (image[6] !== EV_CURRENT || v.getUint32(20, true) !== EV_CURRENT) throw new RangeError('ELF: version is not EV_CURRENT (1)');
  const type = v.getUint16(16, true);
  if (type === ET_DYN) throw new RangeError('ELF: ET_DYN (a PIE or shared object) is not loaded: link a static executable (-static -no-pie, or ld without -pie)');
  if (type !== ET_EXEC) throw new RangeError(`ELF: type ${type} is not ET_EXEC (2)`);
  const machine = v.getUint16(18, true);
  if (machine !== EM_X86_64) throw new RangeError(`ELF: machine ${machine} is not EM_X86_64 (62)`);
  const entry = u64(v, 24, 'e_entry');
  const phoff = u64(v, 32, 'e_phoff');
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phentsize !== PHDR_SIZE) throw new RangeError(`ELF: e_phentsize ${phentsize} is not ${PHDR_SIZE}`);
  if (phnum === 0) throw new RangeError('ELF: no program headers');
  if (phoff > image.length || phnum * PHDR_SIZE > image.length - phoff) {
    throw new RangeError(`ELF: ${phnum} program headers at offset ${phoff} run past the image's ${image.length} bytes`);
  }
  const segments: ParsedSegment[] = [];
  let entryExecutable = false;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * PHDR_SIZE;
    const ptype = v.getUint32(at, true);
    if (ptype === PT_INTERP || ptype === PT_DYNAMIC) throw new RangeError('ELF: a dynamically linked executable (PT_INTERP/PT_DYNAMIC): link it static');
    if (ptype !== PT_LOAD) continue;
    const flags = v.getUint32(at + 4, true);
    const offset = u64(v, at + 8, `phdr[${i}].p_offset`);
    const vaddr = u64(v, at + 16, `phdr[${i}].p_vaddr`);
    const paddr = u64(v, at + 24, `phdr[${i}].p_paddr`);
    const fileBytes = u64(v, at + 32, `phdr[${i}].p_filesz`);
    const memBytes = u64(v, at + 40, `phdr[${i}].p_memsz`);
    if (memBytes === 0) continue;
    if (vaddr !== paddr) {
      throw new RangeError(`ELF: segment ${i} has p_vaddr ${hex(vaddr)} != p_paddr ${hex(paddr)}; the harness maps guest memory 1:1`);
    }
    if (fileBytes > memBytes) throw new RangeError(`ELF: segment ${i} has p_filesz ${fileBytes} > p_memsz ${memBytes}`);
    if (offset > image.length || fileBytes > image.length - offset) {
      throw new RangeError(`ELF: segment ${i}'s ${fileBytes} bytes at offset ${offset} run past the image's ${image.length} bytes`);
    }
    if (entry >= paddr && entry < paddr + memBytes && (flags & PF_X) !== 0) entryExecutable = true;
    segments.push({ gpa: paddr, fileBytes, memBytes, offset });
  }
  if (segments.length === 0) throw new RangeError('ELF: no PT_LOAD segment with bytes in memory');
  return { entry, entryExecutable, segments };
}

/** The segments of `options.image` and its entry point, before any check against memory. */
function parse(options: ImageOptions): { format: 'elf' | 'flat'; entry: number; segments: ParsedSegment[] } {
  const image = options.image;
  const isElf = image.length >= 4 && new DataView(image.buffer, image.byteOffset, image.byteLength).getUint32(0, true) === ELF_MAGIC;
  if (isElf) {
    if (options.gpa !== undefined) throw new RangeError('gpa is for flat binaries: an ELF image says where its segments go');
    const elf = parseElf(image);
    if (options.entry === undefined && !elf.entryExecutable) {
      throw new RangeError(`ELF: e_entry ${hex(elf.entry)} is not inside an executable PT_LOAD segment`);
    }
    return { format: 'elf', entry: options.entry ?? elf.entry, segments: elf.segments };
  }
  if (image.length === 0) throw new RangeError('image is empty');
  const gpa = options.gpa ?? HARNESS_SIZE;
  return { format: 'flat', entry: options.entry ?? gpa, segments: [{ gpa, fileBytes: image.length, memBytes: image.length, offset: 0 }] };
}

/**
 * Checks `options` against `slots` (address space 0) and copies the image into them: every
 * segment inside one slot, none in the harness's [0, 2 MiB) or overlapping another, the entry
 * and a page below stackTop in guest memory. Throws RangeError naming the problem before any
 * byte is written. Returns what was loaded.
 */
export function placeImage(options: ImageOptions, slots: readonly ImageSlot[]): LoadedImage {
  const { format, entry, segments } = parse(options);
  const slotOf = (gpa: number, length: number): ImageSlot | undefined =>
    slots.find((s) => gpa >= s.gpa && gpa + length <= s.gpa + s.size);
  const describeSlots = (): string => slots.map((s) => `[${hex(s.gpa)}, ${hex(s.gpa + s.size)})`).join(', ') || 'none';
  const sorted = [...segments].sort((a, b) => a.gpa - b.gpa);
  sorted.forEach((seg, i) => {
    const end = seg.gpa + seg.memBytes;
    if (seg.gpa < HARNESS_SIZE) {
      throw new RangeError(`segment [${hex(seg.gpa)}, ${hex(end)}) overlaps the guest harness's gpa [0, ${hex(HARNESS_SIZE)}) (page tables, GDT)`);
    }
    if (end > MAX_MAP_BYTES) throw new RangeError(`segment [${hex(seg.gpa)}, ${hex(end)}) lies beyond the ${MAX_MAP_BYTES / 2 ** 30} GiB the harness maps`);
    if (slotOf(seg.gpa, seg.memBytes) === undefined) {
      throw new RangeError(`segment [${hex(seg.gpa)}, ${hex(end)}) is not inside one memory slot (slots: ${describeSlots()})`);
    }
    if (i > 0 && sorted[i - 1].gpa + sorted[i - 1].memBytes > seg.gpa) {
      throw new RangeError(`segments [${hex(sorted[i - 1].gpa)}, ...) and [${hex(seg.gpa)}, ...) overlap`);
    }
  });
  if (!Number.isSafeInteger(entry) || entry < 0 || slotOf(entry, 1) === undefined) {
    throw new RangeError(`entry ${typeof entry === 'number' ? hex(entry) : String(entry)} is not in guest memory (slots: ${describeSlots()})`);
  }
  let stackTop = options.stackTop;
  if (stackTop === undefined) {
    const s = slotOf(entry, 1)!;
    stackTop = s.gpa + s.size;
  }
  if (!Number.isSafeInteger(stackTop) || stackTop % 16 !== 0) throw new RangeError(`stackTop must be a 16-byte aligned address, got ${stackTop}`);
  if (stackTop < HARNESS_SIZE + PAGE_SIZE || slotOf(stackTop - PAGE_SIZE, PAGE_SIZE) === undefined) {
    throw new RangeError(`stackTop ${hex(stackTop)} needs the page below it in guest memory above the harness (slots: ${describeSlots()})`);
  }
  const stackPage = stackTop - PAGE_SIZE;
  for (const seg of sorted) {
    if (seg.gpa < stackTop && stackPage < seg.gpa + seg.memBytes) {
      throw new RangeError(`stackTop ${hex(stackTop)}: the page below it overlaps segment [${hex(seg.gpa)}, ${hex(seg.gpa + seg.memBytes)})`);
    }
  }
  for (const seg of sorted) {
    const slot = slotOf(seg.gpa, seg.memBytes)!;
    const dst = slot.view(seg.gpa - slot.gpa, seg.memBytes);
    dst.set(options.image.subarray(seg.offset, seg.offset + seg.fileBytes));
    dst.fill(0, seg.fileBytes);
  }
  return { format, entry, stackTop, segments: sorted.map(({ gpa, fileBytes, memBytes }) => ({ gpa, fileBytes, memBytes })) };
}
