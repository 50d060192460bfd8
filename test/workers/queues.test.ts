/**
 * src/workers/queues.ts: tun.queues and its test-suite override
 * SLUICE_TEST_TUN_QUEUES ("auto" is the cores available, capped at 64;
 * a bad value names the variable).
 */
import t from 'tap';
import { availableParallelism } from 'node:os';
import { MAX_TUN_QUEUES, TUN_QUEUES_ENV, tunQueues } from '../../src/workers/queues.js';
import { defaultConfig } from '../../src/config/types.js';
import { parseConfig } from '../../src/config/load.js';

t.test('the configured count, auto, and the override', async (t) => {
  t.same(tunQueues(1, {}), { queues: 1, from: 'tun.queues' }, '1: the single-threaded path');
  t.same(tunQueues(4, {}), { queues: 4, from: 'tun.queues' }, 'a number as given');
  t.same(tunQueues('auto', {}), { queues: Math.min(MAX_TUN_QUEUES, availableParallelism()), from: 'tun.queues' }, 'auto: the cores available');
  t.same(tunQueues(1, { [TUN_QUEUES_ENV]: '2' }), { queues: 2, from: TUN_QUEUES_ENV }, 'the variable wins over the file');
  t.same(tunQueues(3, { [TUN_QUEUES_ENV]: '' }), { queues: 3, from: 'tun.queues' }, 'an empty variable is no override');
  t.same(tunQueues(1, { [TUN_QUEUES_ENV]: ' auto ' }).from, TUN_QUEUES_ENV, 'auto in the variable');
  for (const bad of ['0', '65', 'two', '1.5', '-1', '100']) {
    t.throws(() => tunQueues(1, { [TUN_QUEUES_ENV]: bad }), new RegExp(`^${TUN_QUEUES_ENV}: expected "auto" or a whole number from 1 to 64`), `${JSON.stringify(bad)} is refused, naming the variable`);
  }
});

t.test('the default is auto (issue 10): a file without tun.queues gets the cores available', async (t) => {
  t.equal(defaultConfig().tun.queues, 'auto', 'defaultConfig');
  const c = await parseConfig('tun: { name: sl0 }\n', 'x.yaml');
  t.equal(c.tun.queues, 'auto', 'a file that does not name it');
  t.same(tunQueues(c.tun.queues, {}), { queues: Math.min(MAX_TUN_QUEUES, availableParallelism()), from: 'tun.queues' }, 'resolved to the cores available');
  t.equal((await parseConfig('tun: { queues: 1 }\n', 'x.yaml')).tun.queues, 1, 'queues: 1 still asks for the single-threaded path');
  t.same(tunQueues(c.tun.queues, { [TUN_QUEUES_ENV]: '1' }), { queues: 1, from: TUN_QUEUES_ENV }, 'the suite runs at 1 through the variable');
});
