// A process that exits at each lifecycle stage exits cleanly (code 0, no signal): the
// addon's environment cleanup closes what is left, kicking and joining running vCPUs.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describeEachBackend } from './helpers/backends';

const fixture = join(__dirname, 'fixtures', 'exit-stage.js');

describeEachBackend('exit at each lifecycle stage', (b) => {
  test.each(['opened', 'vm', 'memory', 'vcpu', 'running', 'closed'])('%s', (stage) => {
    const r = spawnSync(process.execPath, [fixture, stage, b.name], { encoding: 'utf8', timeout: 30000 });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
  });

  test('running, then kicked: the run resolves and the process goes on to exit', () => {
    const r = spawnSync(process.execPath, [fixture, 'running-natural', b.name], { encoding: 'utf8', timeout: 30000 });
    expect({ status: r.status, signal: r.signal }).toEqual({ status: 3, signal: null });
  });
});
