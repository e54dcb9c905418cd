// examples/s390-cmma-migration.ts end to end: the source drains its CMMA values round after
// round while the guest issues ESSA, the destination replays the stream, and both must end
// with the same value on every page.
test('the s390 CMMA migration example ends with identical page states', () => {
  const lines: string[] = [];
  const log = jest.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void lines.push(args.join(' ')));
  const argv = process.argv;
  process.argv = [argv[0], 'example', '--rounds', '4', '--seed', '11'];
  try {
    jest.isolateModules(() => require('../examples/s390-cmma-migration'));
  } finally {
    process.argv = argv;
    log.mockRestore();
  }
  expect(process.exitCode ?? 0).toBe(0);
  expect(lines).toContain('identical: all 12288 pages');
  const rounds = lines.filter((l) => /^\s+\d+\s/.test(l));
  expect(rounds).toHaveLength(5);
  expect(rounds[0]).toMatch(/^\s+0\s+0\s+1\s+4096\s/); // round 0: the first 4096 of 12288 pages, all dirty at START
  expect(rounds[4]).toMatch(/\s0\s+DONE$/); // the final pass leaves nothing behind
});
