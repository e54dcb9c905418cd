// A failover trial: a Remus pair of separate processes (ha-node.ts) on loopback TCP, a
// counter guest whose every increment is an output, and an output client (this process)
// that must see 1, 2, 3, ... with no gap and no repeat while the primary is killed with
// SIGKILL at random moments, again and again: each time the backup takes over from its last
// committed epoch, a new backup is started, and the guest counts on.

import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { HaCommand, HaConfig, HaEvent } from './ha-node';
import type { DirtyMode } from './machine';
import { OutputClient } from './output';

export interface FailoverOptions {
  backend: 'native' | 'emulator';
  kills: number;
  mode?: DirtyMode | 'auto';
  /** outputs the client must receive from each new primary before it may be killed (default 20) */
  minOutputsBetweenKills?: number;
  /** extra random wait before each kill, up to this many ms (default 40) */
  maxKillDelayMs?: number;
  epochMs?: number;
  outputsPerEpoch?: number;
  /** the compiled ha-node.js (default: next to this file, or dist/ when running from the sources) */
  nodeScript?: string;
  /** progress lines */
  log?: (line: string) => void;
}

export interface FailoverResult {
  backend: string;
  kills: number;
  /** failovers after which the backup took over and the client's sequence went on intact */
  failovers: number;
  gaps: number;
  duplicates: number;
  /** outputs the client received */
  outputs: number;
  /** the counter value each takeover restored, with the output count it had committed */
  takeovers: { epoch: number; counter: number; outputSeq: number; clientNext: number; replayed: number }[];
  violations: string[];
  seconds: number;
}

/** The ha-node.js script the children run. */
export function haNodeScript(): string {
  const here = join(__dirname, 'ha-node.js');
  if (existsSync(here)) return here;
  return resolve(__dirname, '../../dist/lib/checkpoint/ha-node.js');
}

class Host {
  readonly child: ChildProcess;
  readonly #events: HaEvent[] = [];
  readonly #waiters: { want: HaEvent['ev']; resolve: (e: HaEvent) => void; reject: (e: Error) => void }[] = [];
  exited = false;

  constructor(script: string, backend: string) {
    this.child = fork(script, [], { env: { ...process.env, KVM_DIRTY_BACKEND: backend }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (e: HaEvent) => {
      const w = this.#waiters.find((x) => x.want === e.ev);
      if (e.ev === 'failed') this.#waiters.splice(0).forEach((x) => x.reject(new Error(`host ${this.child.pid} failed: ${e.message}`)));
      else if (w) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(e);
      } else this.#events.push(e);
    });
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      this.#waiters.splice(0).forEach((x) => x.reject(new Error(`host ${this.child.pid} exited (${signal ?? code}) while waiting for '${x.want}'`)));
    });
  }

  send(c: HaCommand): void {
    this.child.send(c);
  }

  wait<E extends HaEvent['ev']>(want: E, timeoutMs = 30000): Promise<Extract<HaEvent, { ev: E }>> {
    const i = this.#events.findIndex((e) => e.ev === want);
    if (i >= 0) return Promise.resolve(this.#events.splice(i, 1)[0] as Extract<HaEvent, { ev: E }>);
    if (this.exited) return Promise.reject(new Error(`host ${this.child.pid} has exited`));
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`host ${this.child.pid}: no '${want}' within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push({
        want,
        resolve: (e) => (clearTimeout(timer), res(e as Extract<HaEvent, { ev: E }>)),
        reject: (e) => (clearTimeout(timer), rej(e)),
      });
    });
  }

  kill(): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((r) => {
      this.child.once('exit', () => r());
      this.child.kill('SIGKILL');
    });
  }
}

export async function runFailoverTrial(o: FailoverOptions): Promise<FailoverResult> {
  const started = Date.now();
  const log = o.log ?? (() => undefined);
  const script = o.nodeScript ?? haNodeScript();
  if (!existsSync(script)) throw new Error(`${script} is missing: build with \`npm run build\` first`);
  const client = new OutputClient();
  const clientPort = await client.listen(0);
  const config: HaConfig = {
    clientPort, counterPage: 512, dataPages: 64, mode: o.mode ?? 'auto',
    epochMs: o.epochMs ?? 5, outputsPerEpoch: o.outputsPerEpoch ?? 25,
  };
  const hosts: Host[] = [];
  const startBackup = async () => {
    const h = new Host(script, o.backend);
    hosts.push(h);
    h.send({ cmd: 'backup', config });
    return { host: h, port: (await h.wait('listening')).port };
  };
  const result: FailoverResult = {
    backend: o.backend, kills: 0, failovers: 0, gaps: 0, duplicates: 0, outputs: 0, takeovers: [], violations: [], seconds: 0,
  };
  try {
    let backup = await startBackup();
    let primary = new Host(script, o.backend);
    hosts.push(primary);
    primary.send({ cmd: 'primary', config: { ...config, backupPort: backup.port } });
    await primary.wait('running');
    for (let k = 1; k <= o.kills; k++) {
      await client.waitFor(client.next + (o.minOutputsBetweenKills ?? 20));
      await new Promise((r) => setTimeout(r, Math.random() * (o.maxKillDelayMs ?? 40)));
      const before = client.next;
      await primary.kill();
      result.kills++;
      const t = await backup.host.wait('took-over');
      const counter = Number(t.counter);
      result.takeovers.push({ epoch: t.epoch, counter, outputSeq: t.outputSeq, clientNext: t.clientNext, replayed: t.replayed });
      if (counter !== t.outputSeq) client.violations.push(`takeover #${k}: the counter restored to ${counter}, but ${t.outputSeq} outputs were committed`);
      primary = backup.host;
      backup = await startBackup();
      primary.send({ cmd: 'protect', port: backup.port });
      await primary.wait('running');
      await client.waitFor(Math.max(before, t.outputSeq) + 1); // the new primary's guest counts on
      if (client.violations.length === 0) result.failovers++;
      log(`kill ${k}/${o.kills}: took over at epoch ${t.epoch}, counter ${counter}, client had ${t.clientNext}, resent ${t.replayed}`);
    }
    primary.send({ cmd: 'stop' });
    await primary.wait('stopped');
    await backup.host.wait('stopped');
  } finally {
    await Promise.all(hosts.map((h) => h.kill()));
    await client.close();
  }
  const values = client.values;
  const bad = values.findIndex((v, i) => v !== i + 1);
  if (bad >= 0) client.violations.push(`output #${bad} is ${values[bad]}, expected ${bad + 1}`);
  result.violations = client.violations;
  result.gaps = client.violations.filter((v) => v.startsWith('gap')).length;
  result.duplicates = client.violations.filter((v) => v.startsWith('duplicate')).length;
  result.outputs = values.length;
  result.seconds = (Date.now() - started) / 1000;
  return result;
}

/** "50/50 failovers, 0 gaps, 0 duplicates" */
export function formatFailover(r: FailoverResult): string {
  return `${r.failovers}/${r.kills} failovers, ${r.gaps} gaps, ${r.duplicates} duplicates`;
}
