import './dispose';
import type { BackendMemory } from './backend';
import { fail } from './errors';
import { checkUint } from './validate';

/**
 * Guest RAM: anonymous shared memory (a memfd, mapped MAP_SHARED | MAP_NORESERVE: untouched
 * pages cost nothing).
 * `buffer` is the memory itself, zero-copy: what the guest writes is there, and what the
 * host writes there the guest reads (host writes are never dirty-logged). Closing (or
 * closing its VM) detaches `buffer` and every view before unmapping, so stale views read
 * as empty instead of faulting. On Node 20 `buffer` exists up to 4 GiB; view() works for
 * any size.
 */
export class GuestMemory {
  /** @internal */
  readonly _handle: BackendMemory;
  /** @internal the VM that made it */
  readonly _owner: object;
  #closed = false;

  /** @internal made by vm.createMemory() */
  constructor(handle: BackendMemory, owner: object) {
    this._handle = handle;
    this._owner = owner;
  }

  get buffer(): ArrayBuffer {
    return this._handle.buffer;
  }

  get size(): number {
    return this._handle.size;
  }

  /**
   * A zero-copy Uint8Array over bytes [offset, offset + length) of the memory (detached once
   * closed). Memory above 4 GiB has no single `buffer` on Node 20 (Node-API's external
   * ArrayBuffer limit); views of it work at any offset.
   */
  view(offset = 0, length = Math.min(this.size - offset, 2 ** 31)): Uint8Array {
    checkUint('offset', offset, this.size);
    checkUint('length', length, this.size - offset);
    if (this.#closed) fail('EBADF', undefined, 'the guest memory is closed');
    return this._handle.view(offset, length);
  }

  /**
   * Where the memory may hold data, found without reading it: byte ranges
   * `[start, end, start, end, ...]` (page-aligned, ascending), every byte outside them zero.
   * Native: the pages the kernel holds for the memory (written or read at some point; reading
   * an untouched page of shared memory allocates it, so a full copy should visit only these).
   * Emulator: the whole memory.
   */
  dataRanges(): Float64Array {
    if (this.#closed) fail('EBADF', undefined, 'the guest memory is closed');
    return this._handle.dataRanges();
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this._handle.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
