// For the suites that need a real etcd: the helper starts one (startEtcd: the `etcd` binary on
// loopback ports, data in a temporary folder) and stops it after the suite. KVM_DIRTY_ETCD=HOST:PORT
// uses a running server instead. Without a binary the suites are skipped with the reason, or
// fail when ETCD_REQUIRED=1 (.ci/run sets it after `scripts/etcd.sh install`).
import { findEtcd, startEtcd, type EtcdServer } from '../../lib/checkpoint/etcd-server';

export function describeWithEtcd(title: string, suite: (etcd: () => string) => void): void {
  const given = process.env.KVM_DIRTY_ETCD;
  const found = given ? null : findEtcd();
  const missing = found && 'missing' in found ? found.missing : undefined;
  if (missing && process.env.ETCD_REQUIRED !== '1') {
    describe.skip(`${title} (skipped: ${missing})`, () => suite(() => ''));
    return;
  }
  describe(title, () => {
    if (missing) {
      test('etcd is available (ETCD_REQUIRED=1)', () => {
        throw new Error(`etcd required but unavailable: ${missing}`);
      });
      return;
    }
    let server: EtcdServer | null = null;
    beforeAll(async () => {
      if (!given) server = await startEtcd();
    }, 30000);
    afterAll(async () => server?.stop());
    suite(() => given ?? server!.address);
  });
}
