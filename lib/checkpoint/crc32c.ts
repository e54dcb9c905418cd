// CRC32C (Castagnoli, polynomial 0x1EDC6F41 reflected 0x82F63B78), the checksum of every frame
// of the checkpoint stream. @node-rs/crc32 computes it with the CPU's crc32 instruction
// (SSE 4.2 / ARMv8 CRC) in a prebuilt N-API module shipped inside the npm package itself (one
// optional dependency per platform, no download at install): about 8 GB/s here, where a
// table-driven JavaScript loop manages well under 1 GB/s, which would cost more per epoch
// than the whole rest of the checkpoint.
import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/**
 * CRC32C of `bytes`, continuing from `previous` (the CRC of the bytes before them) when given.
 * crc32c(Buffer.from('123456789')) === 0xe3069283, the standard check value.
 */
export function crc32c(bytes: Uint8Array, previous = 0): number {
  return nativeCrc32c(bytes, previous) >>> 0;
}
