#!/usr/bin/env node
// npm install hook: builds the native addon (build/Release/kvm_dirty.node) with node-gyp.
//
// The build is offline: it compiles against the headers of the Node that runs this script
// (`--nodedir` = its prefix, when <prefix>/include/node exists) instead of downloading them.
// A failed build is not a failed install: the emulator backend works without the addon, and
// openKvm({ backend: 'auto' }) reports why native was not used. KVM_DIRTY_REQUIRE_NATIVE=1
// (CI on KVM runners) turns a failed build into a failed install.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const required = process.env.KVM_DIRTY_REQUIRE_NATIVE === '1';

function giveUp(reason) {
  const msg = `kvm-dirty: native addon not built: ${reason}`;
  if (required) {
    console.error(`${msg}\nkvm-dirty: KVM_DIRTY_REQUIRE_NATIVE=1, failing the install`);
    process.exit(1);
  }
  console.warn(`${msg}\nkvm-dirty: continuing; the emulator backend is available (openKvm({ backend: 'emulator' }))`);
  process.exit(0);
}

if (process.platform !== 'linux') giveUp(`KVM exists only on Linux (this is ${process.platform})`);

const nodePrefix = path.dirname(path.dirname(process.execPath));

// npm exports the path of its bundled node-gyp to scripts; run by hand, the node-gyp bundled
// with this Node's npm, else node-gyp from PATH.
const nodeGypJs = [
  process.env.npm_config_node_gyp,
  path.join(nodePrefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].find((p) => p && fs.existsSync(p));
const [command, prefixArgs] = nodeGypJs ? [process.execPath, [nodeGypJs]] : ['node-gyp', []];

const args = [...prefixArgs, 'rebuild'];
if (fs.existsSync(path.join(nodePrefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${nodePrefix}`);

const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
if (result.error) giveUp(`could not run node-gyp (${result.error.message})`);
if (result.status !== 0) {
  giveUp(`node-gyp exited with ${result.signal ?? `status ${result.status}`} (see its output above; a C++17 compiler, make and python3 are needed)`);
}
