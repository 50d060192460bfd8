/**
 * The health checker's scheduling, against a counting outbound whose
 * "server" answers at once: lazy groups check only once used, one round
 * at a time; eager ones at start.
 */
import t from 'tap';
import { Duplex } from 'node:stream';
import { GroupHealth, type CheckResult } from '../../src/outbound/group-health.js';
import type { Outbound } from '../../src/outbound/types.js';

/** An outbound whose every connection answers an HTTP request with 204. */
function answering(): Outbound & { dials: number } {
  const o = {
    name: 'fake',
    type: 'direct' as const,
    action: 'connect' as const,
    supportsUdp: false,
    dials: 0,
    connectTcp(): Promise<Duplex> {
      o.dials++;
      const d = new Duplex({
        read() {},
        write(_c, _e, cb) {
          d.push('HTTP/1.1 204 No Content\r\n\r\n');
          cb();
        },
      });
      return Promise.resolve(d);
    },
  };
  return o;
}

const settings = (lazy: boolean) => ({ url: 'http://192.0.2.1/204', interval: 3600, timeout: 2000, lazy });

t.test('lazy: no check until the group is used; then one round, not one per flow', async (t) => {
  const o = answering();
  const results: CheckResult[] = [];
  const h = new GroupHealth({ members: [o], check: settings(true), onResult: (_i, r) => results.push(r) });
  t.teardown(() => h.close());
  h.start();
  await new Promise((r) => setImmediate(r));
  t.equal(o.dials, 0, 'started, unused: nothing checked');
  h.touch();
  h.touch();
  h.touch();
  await h.checkAll();
  t.equal(o.dials, 1, 'three flows while stale: one round');
  t.match(results, [{ ok: true }]);
  h.touch();
  await new Promise((r) => setImmediate(r));
  t.equal(o.dials, 1, 'used again before the interval: no extra round');
});

t.test('eager: a round at start', async (t) => {
  const o = answering();
  const h = new GroupHealth({ members: [o, o], check: settings(false), onResult: () => {} });
  t.teardown(() => h.close());
  h.start();
  await h.checkAll();
  t.equal(o.dials, 2, 'both members checked once');
});
