// The test run's own reporting: a failing comparison of BigInts shows its diff when suites
// run in jest's worker processes (as npm test runs them), and the closing summary line
// counts a suite that failed to run as a failure.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(__dirname, '..');
const { summaryLine } = require('./helpers/summary-reporter.js') as { summaryLine: (r: Record<string, unknown>) => string };

test('a child jest with three suites: the BigInt diff arrives, the broken suite is counted', () => {
  // A fresh cache: with no timings from earlier runs, jest runs the suites in workers.
  const cache = mkdtempSync(join(tmpdir(), 'kvm-dirty-jest-'));
  try {
    const r = spawnSync(process.execPath, [require.resolve('jest/bin/jest'), '--config', 'test/fixtures/jest-failures/jest.config.js', '--cacheDirectory', cache], {
      cwd: root, encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' },
    });
    const out = r.stdout + r.stderr;
    expect(r.status).toBe(1);
    expect(out).not.toContain('Do not know how to serialize a BigInt');
    expect(out).toContain('-   "rflags": 6n,');
    expect(out).toContain('+   "rflags": 22n,');
    expect(out).toContain('this suite fails to load');
    expect(out).toMatch(/^tests: 1 passed, 2 failed \(1 suite failed to run\), 0 skipped$/m);
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

describe('summary line', () => {
  const base = { numPassedTests: 437, numFailedTests: 0, numPendingTests: 0, numTodoTests: 0, numRuntimeErrorTestSuites: 0, numFailedTestSuites: 0 };

  test('a green run', () => {
    expect(summaryLine(base)).toBe('tests: 437 passed, 0 failed, 0 skipped');
  });

  test('a suite that failed to run is a failure', () => {
    expect(summaryLine({ ...base, numRuntimeErrorTestSuites: 1, numFailedTestSuites: 1 })).toBe('tests: 437 passed, 1 failed (1 suite failed to run), 0 skipped');
  });

  test('failed tests and broken suites add up; skipped counts todo', () => {
    expect(summaryLine({ ...base, numFailedTests: 2, numRuntimeErrorTestSuites: 2, numFailedTestSuites: 3, numPendingTests: 4, numTodoTests: 1 }))
      .toBe('tests: 437 passed, 4 failed (2 suites failed to run), 5 skipped');
  });

  test('a red run with every test passed still says it failed', () => {
    expect(summaryLine({ ...base, numFailedTestSuites: 1 })).toBe('tests: 437 passed, 1 failed, 0 skipped');
    expect(summaryLine({ ...base, runExecError: { message: 'boom' } })).toBe('tests: 437 passed, 1 failed, 0 skipped');
  });
});
