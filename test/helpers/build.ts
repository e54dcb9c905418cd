// The failover suites' children run the compiled library: rebuild dist/ when a source is newer than it.
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { haNodeScript } from '../../lib/checkpoint/failover';

const ROOT = join(__dirname, '..', '..');

export function ensureBuilt(): void {
  const script = haNodeScript();
  const built = (() => {
    try {
      return statSync(script).mtimeMs;
    } catch {
      return 0;
    }
  })();
  const newest = (dir: string): number => readdirSync(dir, { withFileTypes: true }).reduce((t, e) => {
    const p = join(dir, e.name);
    return Math.max(t, e.isDirectory() ? newest(p) : e.name.endsWith('.ts') ? statSync(p).mtimeMs : 0);
  }, 0);
  if (newest(join(ROOT, 'lib')) > built) {
    try {
      execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'pipe' });
    } catch {
      // tsc emits even when some other file has a type error; the check below is what counts
    }
  }
  expect(statSync(script).mtimeMs).toBeGreaterThan(0);
}
