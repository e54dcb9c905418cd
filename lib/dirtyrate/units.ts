// Rates in MB/s. As in QEMU (calc-dirty-rate, set-vcpu-dirty-limit, query-migrate), "MB" is a
// mebibyte, 2^20 bytes: 1 MB/s is 256 pages of 4 KiB per second. Every figure of this
// directory, the CLI and the bench uses it.

import { PAGE_SIZE } from '../constants';

/** Bytes in one "MB" (MiB, as QEMU reports it). */
export const MB = 2 ** 20;
/** 4 KiB pages in one MB: 256. */
export const PAGES_PER_MB = MB / PAGE_SIZE;

export function mbpsToPagesPerSec(mbps: number): number {
  return mbps * PAGES_PER_MB;
}

export function pagesPerSecToMBps(pagesPerSec: number): number {
  return pagesPerSec / PAGES_PER_MB;
}

/** A rate in MB/s from a JS argument: a positive finite number (TypeError / RangeError naming it). */
export function checkMBps(name: string, value: unknown, allowInfinity = false): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number (MB/s), got ${typeof value}`);
  if (Number.isNaN(value) || value <= 0 || (!allowInfinity && !Number.isFinite(value))) {
    throw new RangeError(`${name} must be a positive${allowInfinity ? '' : ' finite'} number of MB/s, got ${value}`);
  }
  return value;
}
