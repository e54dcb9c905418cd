// The arithmetic under the dirty-rate code, without a guest: units, the exact modulo the
// pacer's replay uses, the page set, the page sample and its estimate.
import fc from 'fast-check';
import { DistinctPages, MB, PAGES_PER_MB, mbpsToPagesPerSec, pagesPerSecToMBps } from '../lib/dirtyrate';
import { mod64 } from '../lib/dirtyrate/paced';
import { mulberry32, samplePages } from '../lib/dirtyrate/sampling';

test('MB is a MiB, as QEMU reports it: 1 MB/s = 256 pages/s', () => {
  expect(MB).toBe(1048576);
  expect(PAGES_PER_MB).toBe(256);
  expect(mbpsToPagesPerSec(10)).toBe(2560);
  expect(pagesPerSecToMBps(25600)).toBe(100);
});

test('mod64 is (hi * 2^32 + lo) mod d exactly, for every d up to 2^32', () => {
  fc.assert(fc.property(fc.nat({ max: 0xffff_ffff }), fc.nat({ max: 0xffff_ffff }), fc.integer({ min: 1, max: 0xffff_ffff }), (lo, hi, d) => {
    expect(mod64(lo, hi, d)).toBe(Number(((BigInt(hi) << 32n) | BigInt(lo)) % BigInt(d)));
  }), { numRuns: 2000 });
});

test('DistinctPages counts each page of each slot once until cleared', () => {
  const s = new DistinctPages([100, 40]);
  expect([s.add(0, 5), s.add(0, 5), s.add(1, 5), s.add(0, 99), s.add(1, 39)]).toEqual([true, false, true, true, true]);
  expect(s.count).toBe(4);
  expect(s.has(1, 5)).toBe(true);
  expect(s.has(1, 6)).toBe(false);
  s.clear();
  expect(s.count).toBe(0);
  expect(s.has(0, 5)).toBe(false);
  expect(s.add(0, 5)).toBe(true);
});

test('samplePages: n distinct pages in increasing order, about uniform; mulberry32 is repeatable', () => {
  const a = samplePages(1000, 300, mulberry32(5));
  expect(a).toEqual(samplePages(1000, 300, mulberry32(5)));
  expect(new Set(a).size).toBe(300);
  for (let i = 1; i < a.length; i++) expect(a[i]).toBeGreaterThan(a[i - 1]);
  expect(a[a.length - 1]).toBeLessThan(1000);
  expect(samplePages(10, 10, mulberry32(1))).toEqual(Float64Array.from({ length: 10 }, (_, i) => i));
  // Each half of the range gets about half the sample: binomial s.d. 32, 4 s.d. allowed.
  const b = samplePages(1 << 20, 4000, mulberry32(11));
  const low = b.filter((x) => x < 1 << 19).length;
  expect(Math.abs(low - 2000)).toBeLessThan(130);
});
