// A 16550A UART, the transmit subset a polling guest needs (a `putc` that waits for LSR.THRE,
// then writes THR): every byte written to THR is transmitted at once, so LSR always reads
// "transmitter empty"; nothing is ever received. The other registers (IER, LCR, MCR, SCR, the
// divisor latch, FCR's FIFO enable) keep what the guest writes and read it back, and are the
// state save() returns. No interrupts are raised.

import { checkInstance, checkObject, checkUint, describe } from '../validate';
import type { Device } from './bus';

/** COM1 */
export const COM1_PORT = 0x3f8;

// Register offsets from the base port (DLAB = LCR bit 7 selects the divisor latch at 0 and 1).
const THR_RBR_DLL = 0;
const IER_DLM = 1;
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;
const LCR_DLAB = 0x80;
/** LSR: THR empty | transmitter empty (bytes leave at once) */
const LSR_IDLE = 0x60;
/** IIR: no interrupt pending; | 0xc0 with the FIFOs enabled */
const IIR_NONE = 0x01;
/** MSR: DCD | DSR | CTS, the modem lines of a connected terminal */
const MSR_CONNECTED = 0xb0;

/** save() layout, version 1: [1, ier, lcr, mcr, scr, dll, dlm, fcr] then transmitted (u64 LE). */
const STATE_VERSION = 1;
const STATE_SIZE = 16;

export interface SerialOptions {
  /** the base I/O port (default COM1, 0x3f8); the UART takes 8 ports */
  port?: number;
  /** the device's name on its bus (default 'serial') */
  name?: string;
  /** called with each transmitted byte */
  onByte?: (byte: number) => void;
}

export class Serial16550 implements Device {
  readonly name: string;
  readonly ioPorts: ReadonlyArray<readonly [number, number]>;
  readonly #base: number;
  readonly #onByte: ((byte: number) => void) | undefined;
  #output: number[] = [];
  /** bytes transmitted since the device was made, restored ones included */
  #transmitted = 0;
  #ier = 0;
  #lcr = 0;
  #mcr = 0;
  #scr = 0;
  #dll = 0;
  #dlm = 0;
  #fcr = 0;

  constructor(options: SerialOptions = {}) {
    const o = checkObject('options', options);
    this.#base = checkUint('port', o.port ?? COM1_PORT, 0xfff8);
    if (o.name !== undefined && (typeof o.name !== 'string' || o.name === '')) throw new TypeError(`name must be a non-empty string, got ${describe(o.name)}`);
    this.name = (o.name as string | undefined) ?? 'serial';
    if (o.onByte !== undefined && typeof o.onByte !== 'function') throw new TypeError(`onByte must be a function, got ${describe(o.onByte)}`);
    this.#onByte = o.onByte as ((byte: number) => void) | undefined;
    this.ioPorts = [[this.#base, this.#base + 7]];
  }

  /** The bytes transmitted by this device object (not those before a restore()). */
  get output(): Uint8Array {
    return Uint8Array.from(this.#output);
  }

  /** output as text (latin-1: one character per byte). */
  text(): string {
    return Buffer.from(this.#output).toString('latin1');
  }

  /** Bytes transmitted in the guest's life, counting those before the state this device was restored from. */
  get transmitted(): number {
    return this.#transmitted;
  }

  onIo(port: number, direction: 'in' | 'out', value: number): number | void {
    const dlab = (this.#lcr & LCR_DLAB) !== 0;
    const reg = port - this.#base;
    if (direction === 'out') {
      switch (reg) {
        case THR_RBR_DLL:
          if (dlab) this.#dll = value;
          else this.#transmit(value);
          return;
        case IER_DLM:
          if (dlab) this.#dlm = value;
          else this.#ier = value & 0x0f;
          return;
        case IIR_FCR:
          this.#fcr = value & 0x01; // FIFO enable; the reset bits act on FIFOs that are always empty
          return;
        case LCR:
          this.#lcr = value;
          return;
        case MCR:
          this.#mcr = value & 0x1f;
          return;
        case SCR:
          this.#scr = value;
          return;
        default:
          return; // LSR, MSR: read-only
      }
    }
    switch (reg) {
      case THR_RBR_DLL:
        return dlab ? this.#dll : 0; // nothing received
      case IER_DLM:
        return dlab ? this.#dlm : this.#ier;
      case IIR_FCR:
        return IIR_NONE | (this.#fcr ? 0xc0 : 0);
      case LCR:
        return this.#lcr;
      case MCR:
        return this.#mcr;
      case LSR:
        return LSR_IDLE;
      case MSR:
        return MSR_CONNECTED;
      case SCR:
        return this.#scr;
      default:
        return 0xff;
    }
  }

  save(): Uint8Array {
    const out = new Uint8Array(STATE_SIZE);
    out.set([STATE_VERSION, this.#ier, this.#lcr, this.#mcr, this.#scr, this.#dll, this.#dlm, this.#fcr]);
    new DataView(out.buffer).setBigUint64(8, BigInt(this.#transmitted), true);
    return out;
  }

  restore(bytes: Uint8Array): void {
    checkInstance('bytes', bytes, Uint8Array, 'a Uint8Array from save()');
    if (bytes.length !== STATE_SIZE || bytes[0] !== STATE_VERSION) {
      throw new RangeError(`not a 16550 state of version ${STATE_VERSION} (${STATE_SIZE} bytes): ${bytes.length} bytes, version ${bytes[0]}`);
    }
    if (bytes[1] > 0x0f || bytes[3] > 0x1f || bytes[7] > 1) throw new RangeError('16550 state: IER, MCR or FCR has bits this UART never keeps');
    const transmitted = new DataView(bytes.buffer, bytes.byteOffset, STATE_SIZE).getBigUint64(8, true);
    if (transmitted > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`transmitted count ${transmitted} is not a safe integer`);
    [, this.#ier, this.#lcr, this.#mcr, this.#scr, this.#dll, this.#dlm, this.#fcr] = bytes;
    this.#transmitted = Number(transmitted);
  }

  #transmit(byte: number): void {
    this.#output.push(byte);
    this.#transmitted++;
    this.#onByte?.(byte);
  }
}
