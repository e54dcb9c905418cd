// A real etcd server for tests and trials: Debian's `etcd` binary (scripts/etcd.sh install),
// started on loopback ports with its data in a temporary folder, and stopped with its data
// removed. Deployments point the EtcdCoordinator at their own cluster instead (README).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface EtcdServer {
  /** the client URL, http://127.0.0.1:PORT */
  endpoint: string;
  /** host:port of the client URL (what an etcd://HOST:PORT/PREFIX coordinator names) */
  address: string;
  dataDir: string;
  pid: number;
  /** stops the server (SIGTERM, then SIGKILL after 5 s) and removes its data */
  stop(): Promise<void>;
}

export interface StartEtcdOptions {
  /** the etcd binary (default: $ETCD_BIN, else `etcd` on PATH) */
  bin?: string;
  /** ms to wait for the server to answer (default 20000) */
  timeoutMs?: number;
}

/** The etcd binary to run, or why there is none (`scripts/etcd.sh install` installs Debian's). */
export function findEtcd(bin = process.env.ETCD_BIN ?? 'etcd'): { bin: string; version: string } | { missing: string } {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  if (r.error) return { missing: `no etcd binary (${bin}: ${(r.error as NodeJS.ErrnoException).code}); \`bash scripts/etcd.sh install\` installs Debian's etcd-server` };
  const m = /etcd Version: (\S+)/.exec(r.stdout);
  if (r.status !== 0 || !m) return { missing: `${bin} --version failed: ${(r.stderr || r.stdout).trim()}` };
  return { bin, version: m[1] };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts a one-member etcd on 127.0.0.1. Its heartbeat (50 ms) and election timeout (250 ms)
 * are shorter than etcd's defaults so that a 1 s lease is allowed: etcd refuses TTLs below
 * ceil(1.5 * election timeout), 2 s with the defaults.
 */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdServer> {
  const found = findEtcd(options.bin);
  if ('missing' in found) throw new Error(found.missing);
  const timeoutMs = options.timeoutMs ?? 20000;
  for (let attempt = 1; ; attempt++) {
    const dataDir = mkdtempSync(join(tmpdir(), 'kvm-dirty-etcd-'));
    const [client, peer] = [await freePort(), await freePort()];
    const endpoint = `http://127.0.0.1:${client}`;
    const child = spawn(found.bin, [
      '--name', 'kvm-dirty', '--data-dir', dataDir,
      '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
      '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-cluster', `kvm-dirty=http://127.0.0.1:${peer}`,
      '--heartbeat-interval', '50', '--election-timeout', '250', '--log-level', 'warn',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr!.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-4000)));
    const stop = stopper(child, dataDir);
    try {
      await waitHealthy(endpoint, child, timeoutMs, () => log);
      return { endpoint, address: `127.0.0.1:${client}`, dataDir, pid: child.pid!, stop };
    } catch (e) {
      await stop();
      // another process took a port between freePort() and etcd's bind: pick again
      if (attempt < 3 && /address already in use/.test(log)) continue;
      throw e;
    }
  }
}

function stopper(child: ChildProcess, dataDir: string): () => Promise<void> {
  let stopped: Promise<void> | null = null;
  return () => (stopped ??= new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      rmSync(dataDir, { recursive: true, force: true });
      resolve();
    };
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    if (child.exitCode !== null || child.signalCode !== null) return done();
    child.once('exit', done);
    child.kill('SIGTERM');
  }));
}

async function waitHealthy(endpoint: string, child: ChildProcess, timeoutMs: number, log: () => string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`etcd exited (${child.exitCode ?? child.signalCode}): ${log().trim()}`);
    try {
      const r = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
      if (r.ok && (await r.json() as { health?: string }).health === 'true') return;
    } catch {
      // not listening yet
    }
    if (performance.now() > deadline) throw new Error(`etcd at ${endpoint} not healthy after ${timeoutMs} ms: ${log().trim()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
