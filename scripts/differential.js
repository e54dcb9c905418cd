#!/usr/bin/env node
// npm run test:differential -- --runs 10000 [--seed N]: the native-vs-emulator property test, longer.
const { spawnSync } = require('node:child_process');
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const env = { ...process.env, DIFFERENTIAL_RUNS: opt('--runs', '10000'), KVM_REQUIRED: process.env.KVM_REQUIRED ?? '1' };
if (opt('--seed')) env.DIFFERENTIAL_SEED = opt('--seed');
const jest = require.resolve('jest/bin/jest');
const r = spawnSync(process.execPath, [jest, 'test/differential.test.ts', '--testTimeout', String(6 * 3600 * 1000)], { stdio: 'inherit', env });
process.exit(r.status ?? 1);
