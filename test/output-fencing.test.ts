// The output client as the fencing point: with a lease check, an Output frame counts only
// once the check (issued after the frame arrived) says the host's lease is still the VM's.
// A host that writes after its lease ended (paused between its own check and its write) is
// cut off there, and the next holder continues the sequence exactly.
import { OutputChannel, OutputClient } from '../lib/checkpoint';
import { packOutput } from '../lib/checkpoint/records';

const outputs = (from: number, n: number) => {
  const packed = new Uint32Array(2 * n);
  for (let i = 0; i < n; i++) {
    packed[2 * i] = packOutput(0x11, 4, 0);
    packed[2 * i + 1] = from + i + 1;
  }
  return packed;
};

async function until(what: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('outputs of a lease that is no longer the VM\'s do not count; the connection ends (expired); the next holder continues exactly', async () => {
  const client = new OutputClient();
  let current = 5;
  const asked: number[] = [];
  client.setLeaseCheck(async (token) => (asked.push(token), token === current));
  const port = await client.listen(0);
  try {
    const a = await OutputChannel.connect(port, '127.0.0.1', { token: 5, stream: 0, holder: 'a' });
    expect(a.next).toBe(0);
    a.channel.send(0, outputs(0, 3), 3);
    await client.waitFor(3);
    // the lease moved on (a did not notice: paused, cut off): what it writes now is not taken
    current = 7;
    a.channel.send(3, outputs(3, 2), 2);
    await until(() => client.hostLog[0].ended === 'expired');
    expect(client.values).toEqual([1, 2, 3]);
    const b = await OutputChannel.connect(port, '127.0.0.1', { token: 7, stream: 0, holder: 'b' });
    expect(b.next).toBe(3);
    b.channel.send(3, outputs(3, 2), 2);
    await client.waitFor(5);
    expect(client.values).toEqual([1, 2, 3, 4, 5]);
    expect(client.violations).toEqual([]);
    expect(client.log.map((l) => [l.holder, l.firstSeq, l.count])).toEqual([['a', 0, 3], ['b', 3, 2]]);
    expect(new Set(asked)).toEqual(new Set([5, 7]));
    b.channel.close();
  } finally {
    await client.close();
  }
});

test('a check that fails (the coordinator unreachable) holds the outputs and asks again; a host closing meanwhile is still served to the end', async () => {
  const client = new OutputClient();
  let failures = 3;
  client.setLeaseCheck(async () => {
    if (failures-- > 0) throw new Error('etcd unreachable');
    return true;
  });
  const port = await client.listen(0);
  try {
    const a = await OutputChannel.connect(port, '127.0.0.1', { token: 9, stream: 0, holder: 'a' });
    a.channel.send(0, outputs(0, 4), 4);
    await a.channel.close();
    await client.waitFor(4);
    expect(failures).toBe(-1);
    expect(client.values).toEqual([1, 2, 3, 4]);
    expect(client.hostLog[0].ended).toBeUndefined();
    // the next host is served after it
    const b = await OutputChannel.connect(port, '127.0.0.1', { token: 9, stream: 1, holder: 'a' });
    expect(b.next).toBe(4);
    b.channel.close();
  } finally {
    await client.close();
  }
});

test('without a lease check, or from a host naming no lease, outputs count on arrival (as before)', async () => {
  const client = new OutputClient();
  const port = await client.listen(0);
  try {
    const a = await OutputChannel.connect(port);
    a.channel.send(0, outputs(0, 2), 2);
    await client.waitFor(2);
    expect(client.values).toEqual([1, 2]);
    a.channel.close();
  } finally {
    await client.close();
  }
});
