// What the README tells users to import exists where it says: every name of an
// `import { ... } from 'kvm-dirty[/checkpoint|/dirtyrate]'` in its code, and every function it
// names as `name(` in its prose about kvm-dirty/checkpoint, is a runtime export of that entry point.
import * as fs from 'node:fs';
import * as path from 'node:path';

const README = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
const ENTRY: Record<string, string> = {
  'kvm-dirty': '../lib',
  'kvm-dirty/checkpoint': '../lib/checkpoint',
  'kvm-dirty/dirtyrate': '../lib/dirtyrate',
};

describe('the README\'s imports', () => {
  const imports = [...README.matchAll(/import \{([^}]+)\} from '(kvm-dirty(?:\/\w+)?)'/g)].map((m) => ({
    names: m[1].split(',').map((n) => n.trim()).filter((n) => n && !n.startsWith('type ')),
    entry: m[2],
  }));

  test('the README imports from the package at all', () => {
    expect(imports.map((i) => i.entry)).toEqual(expect.arrayContaining(['kvm-dirty', 'kvm-dirty/checkpoint', 'kvm-dirty/dirtyrate']));
  });

  test.each(imports.map((i) => [i.entry, i.names] as const))('%s exports %j', (entry, names) => {
    const mod = require(ENTRY[entry]) as Record<string, unknown>;
    expect(names.filter((n) => mod[n] === undefined)).toEqual([]);
  });

  test('the library functions the live-migration, own-guest and fencing sections name are exported by kvm-dirty/checkpoint', () => {
    const mod = require(ENTRY['kvm-dirty/checkpoint']) as Record<string, unknown>;
    for (const name of ['migrateTo', 'receiveMigration', 'createImageMachine', 'restoreMachine', 'Checkpointer', 'ReplicaServer', 'EtcdCoordinator', 'OutputTap', 'captureState', 'applyState']) {
      expect([name, typeof mod[name]]).toEqual([name, 'function']);
    }
  });
});
