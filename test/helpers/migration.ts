// Two processes migrating a guest (test/fixtures/migration-peer.js): start them, wait for
// their reports, kill them.
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const PEER = join(__dirname, '..', 'fixtures', 'migration-peer.js');
const live = new Set<Peer>();

/** Kills every peer still running (afterEach). */
export async function killPeers(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()));
}

export interface PeerState {
  memory: string;
  pages: number;
  regs: Record<string, string>[];
  attrs: string | null;
}

type Event = { ev: string; [k: string]: unknown };

export class Peer {
  readonly child: ChildProcess;
  readonly events: Event[] = [];
  readonly #waiters: { ev: string; resolve: (e: Event) => void; reject: (e: Error) => void }[] = [];
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(config: Record<string, unknown>) {
    this.child = fork(PEER, [], { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    live.add(this);
    let stderr = '';
    this.child.stderr!.on('data', (d) => (stderr += d));
    this.child.on('message', (e: Event) => {
      this.events.push(e);
      const w = this.#waiters.find((x) => x.ev === e.ev);
      if (w) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(e);
      }
      if (e.ev === 'failed') for (const x of this.#waiters.splice(0)) x.reject(new Error(`peer failed: ${String(e.message)}`));
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => {
      live.delete(this);
      this.exit = { code, signal };
      for (const x of this.#waiters.splice(0)) x.reject(new Error(`peer exited (${signal ?? code}) before '${x.ev}'${stderr ? `: ${stderr.slice(-2000)}` : ''}`));
      resolve(this.exit);
    }));
    this.child.send(config);
  }

  /** The first event of this kind (already seen, or the next to come). */
  wait<T = Event>(ev: string, timeoutMs = 60_000): Promise<T> {
    const seen = this.events.find((e) => e.ev === ev);
    if (seen) return Promise.resolve(seen as T);
    if (this.exit) return Promise.reject(new Error(`peer has exited (${this.exit.signal ?? this.exit.code}); no '${ev}'`));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no '${ev}' from the peer within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push({ ev, resolve: (e) => (clearTimeout(timer), resolve(e as T)), reject: (e) => (clearTimeout(timer), reject(e)) });
    });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<unknown> {
    if (this.exit) return Promise.resolve(this.exit);
    this.child.kill(signal);
    return this.exited;
  }
}

/** Starts a destination, then a source migrating to it; both configs get `common`. */
export async function startPair(common: Record<string, unknown>, source: Record<string, unknown> = {}, destination: Record<string, unknown> = {}): Promise<{ src: Peer; dst: Peer }> {
  const dst = new Peer({ ...common, ...destination, role: 'destination' });
  const { port } = await dst.wait<{ port: number }>('listening');
  const src = new Peer({ ...common, ...source, role: 'source', to: port });
  return { src, dst };
}
