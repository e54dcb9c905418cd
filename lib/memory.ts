import './dispose';
import type { BackendMemory } from './backend';

/**
 * Guest RAM: an anonymous shared mapping (MAP_NORESERVE: untouched pages cost nothing).
 * `buffer` is the memory itself, zero-copy: what the guest writes is there, and what the
 * host writes there the guest reads (host writes are never dirty-logged). Closing (or
 * closing its VM) detaches `buffer` before unmapping, so stale views read as empty
 * instead of faulting.
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
