/**
 * src/workers/fake-ip-channel.ts with real worker threads: two workers
 * share the main thread's one FakeIpPool and DnsSnoop, so a name gets one
 * address whichever worker asks and either worker maps it back; range checks
 * are answered without asking, and so is every lookup while the main
 * thread's tables are empty; an entry added through one worker is seen by
 * the other at once (no refresh delay); an ask the main thread never answers ends
 * after the timeout as "not mapped" and is counted, and the channel works
 * again afterwards (a late reply is never taken for a later ask's answer).
 */
import t from 'tap';
import { MessageChannel, Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { DnsSnoop } from '../../src/dns/snoop.js';
import { DnsClass, DnsRcode, DnsType } from '../../src/dns/message.js';
import { FakeIpChannelServer, newFakeIpChannel, newTableSizes } from '../../src/workers/fake-ip-channel.js';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/fake-ip-worker.js');

interface Side {
  ask(m: Record<string, unknown>): Promise<unknown>;
  close(): Promise<void>;
  /** Stops answering this worker's asks (the main thread "busy"), or starts again. */
  answering: boolean;
}

function startWorker(pool: FakeIpPool, snoop: DnsSnoop, sizes: SharedArrayBuffer): Side {
  const sab = newFakeIpChannel();
  const wake = new MessageChannel();
  const server = new FakeIpChannelServer(sab, sizes, pool, snoop);
  const side: Side = {
    answering: true,
    ask: (m) =>
      new Promise((resolve) => {
        w.once('message', resolve);
        w.postMessage(m);
      }),
    close: async () => {
      wake.port1.close();
      await w.terminate();
    },
  };
  wake.port1.on('message', () => {
    if (side.answering) server.serve();
  });
  const w = new Worker(FIXTURE, { workerData: { sab, sizes, wake: wake.port2 }, transferList: [wake.port2] });
  return side;
}

t.test('two workers, one pool: same address for a name, reverse lookups from either side', async (t) => {
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/16', ipv6Range: 'fc00::/18', exclude: ['198.18.0.1'] });
  const snoop = new DnsSnoop({ maxEntries: 100, now: () => Date.now() / 1000 });
  const sizes = newTableSizes();
  const a = startWorker(pool, snoop, sizes);
  const b = startWorker(pool, snoop, sizes);
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const ipA = await a.ask({ op: 'alloc4', name: 'Web.Example' });
  const ipB = await b.ask({ op: 'alloc4', name: 'web.example' });
  t.equal(ipA, ipB, 'the same fake IP whichever worker asks');
  t.equal(pool.peek('web.example', 4), ipA, 'the main thread holds the mapping');
  t.equal(await b.ask({ op: 'lookup', addr: ipA as string }), 'web.example', 'the other worker maps it back');
  t.equal(await a.ask({ op: 'lookupBytes', bytes: (ipA as string).split('.').map(Number) }), 'web.example', 'from packet bytes too');
  const v6 = await a.ask({ op: 'alloc6', name: 'six.example' });
  t.match(v6, /^fc00:/, 'IPv6 from the v6 range');
  t.equal(await b.ask({ op: 'lookup', addr: v6 as string }), 'six.example', 'and back on the other worker');
  t.equal(await a.ask({ op: 'lookup', addr: '198.18.9.9' }), null, 'an unmapped fake address: null');
  const c0 = (await b.ask({ op: 'counts' })) as { asks: number };
  t.equal(await b.ask({ op: 'snoopLookup', addr: '192.0.2.77' }), null, 'snoop table empty: not mapped');
  const c1 = (await b.ask({ op: 'counts' })) as { asks: number };
  t.equal(c1.asks, c0.asks, 'and no round trip while it is empty');
  const before = (await a.ask({ op: 'counts' })) as { asks: number };
  t.equal(await a.ask({ op: 'isFake', addr: '198.18.200.1' }), true, 'range check');
  t.equal(await a.ask({ op: 'lookup', addr: '192.0.2.1' }), null, 'outside the range: null');
  const after = (await a.ask({ op: 'counts' })) as { asks: number };
  t.equal(after.asks, before.asks, 'range checks and out-of-range lookups never ask the main thread');
  const long = 'x'.repeat(2000);
  t.equal(await a.ask({ op: 'alloc4', name: long }), null, 'a name too long for the channel is refused, not truncated');

  // The snoop table (real-ip): an answer observed on one worker names the address for the other.
  const msg = {
    qr: true,
    rcode: DnsRcode.NoError,
    questions: [{ name: 'www.example.org', type: DnsType.A, class: DnsClass.IN }],
    answers: [
      { name: 'www.example.org', type: DnsType.CNAME, class: DnsClass.IN, ttl: 300, address: null, target: 'edge.example.net' },
      { name: 'edge.example.net', type: DnsType.A, class: DnsClass.IN, ttl: 300, address: '192.0.2.77', target: null },
    ],
  };
  t.equal(await a.ask({ op: 'observe', msg }), 1, 'one address recorded through worker a');
  t.equal(snoop.lookup('192.0.2.77'), 'www.example.org', 'in the main thread table');
  t.equal(await b.ask({ op: 'snoopLookup', addr: '192.0.2.77' }), 'www.example.org', 'worker b finds the name');

  t.equal(await b.ask({ op: 'clear' }), 2, 'clear from a worker clears the one pool');
  t.equal(pool.peek('web.example', 4), null, 'gone on the main thread');
});

t.test('an unanswered ask times out as "not mapped", is counted, and the channel recovers', async (t) => {
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/16' });
  const snoop = new DnsSnoop({ maxEntries: 10, now: () => Date.now() / 1000 });
  const a = startWorker(pool, snoop, newTableSizes());
  t.teardown(() => a.close());
  t.match(await a.ask({ op: 'alloc4', name: 'one.example' }), /^198\.18\./, 'answered while the main thread serves');
  a.answering = false;
  t.equal(await a.ask({ op: 'alloc4', name: 'two.example' }), null, 'no answer: null after the timeout');
  const c = (await a.ask({ op: 'counts' })) as { timeouts: number };
  t.equal(c.timeouts, 1, 'the timeout is counted');
  a.answering = true;
  const three = await a.ask({ op: 'alloc4', name: 'three.example' });
  t.equal(three, pool.peek('three.example', 4), 'the next ask gets its own answer');
  t.equal(await a.ask({ op: 'lookup', addr: three as string }), 'three.example', 'and lookups work again');
});
