/** createOutbound from the config shape, and the blocking outbounds. */
import t from 'tap';
import {
  DirectOutbound,
  DropOutbound,
  HttpConnectOutbound,
  OutboundConfigError,
  OutboundError,
  RejectOutbound,
  Socks5Outbound,
  blockingReaction,
  createOutbound,
  createOutbounds,
} from '../../src/outbound/index.js';
import type { OutboundConfig } from '../../src/outbound/index.js';
import { echoServer } from './servers.js';

// The example from the shared configuration shape.
const CONFIG: OutboundConfig[] = [
  { name: 'direct', type: 'direct', mark: 0x162, interface: 'eth0' },
  { name: 'proxy', type: 'socks5', server: '192.0.2.1', port: 1080, username: 'u', password: 'p', udp: true },
  { name: 'corp', type: 'http', server: '192.0.2.2', port: 3128, username: 'u', password: 'p' },
  { name: 'block', type: 'reject' },
  { name: 'sink', type: 'drop' },
];

t.test('every type from the config shape', async (t) => {
  const all = createOutbounds(CONFIG);
  t.same([...all.keys()], ['direct', 'proxy', 'corp', 'block', 'sink']);
  t.type(all.get('direct'), DirectOutbound);
  t.ok((all.get('direct') as DirectOutbound).marked);
  t.type(all.get('proxy'), Socks5Outbound);
  t.equal(all.get('proxy')!.supportsUdp, true);
  t.type(all.get('corp'), HttpConnectOutbound);
  t.equal(all.get('corp')!.supportsUdp, false);
  t.equal(all.get('corp')!.openUdp, undefined);
  t.type(all.get('block'), RejectOutbound);
  t.type(all.get('sink'), DropOutbound);
  t.same(
    [...all.values()].map((o) => [o.name, o.type, o.action]),
    [
      ['direct', 'direct', 'connect'],
      ['proxy', 'socks5', 'connect'],
      ['corp', 'http', 'connect'],
      ['block', 'reject', 'reject'],
      ['sink', 'drop', 'drop'],
    ],
  );
});

t.test('reject and drop: the engine can tell without connecting', async (t) => {
  const block = createOutbound({ name: 'block', type: 'reject' });
  const sink = createOutbound({ name: 'sink', type: 'drop' });
  const direct = createOutbound({ name: 'direct', type: 'direct' });
  t.equal(blockingReaction(block), 'rst');
  t.equal(blockingReaction(sink), 'drop');
  t.equal(blockingReaction(direct), null);
  const e1 = await block.connectTcp({ host: '192.0.2.1', port: 80 }).catch((e: unknown) => e);
  t.type(e1, OutboundError);
  t.match(e1, { code: 'SLUICE_OUTBOUND_REJECTED', reaction: 'rst', outbound: 'block' });
  await t.rejects(sink.connectTcp({ host: '192.0.2.1', port: 80 }), { code: 'SLUICE_OUTBOUND_DROPPED', reaction: 'drop' });
  await t.rejects(block.openUdp!({}), { code: 'SLUICE_OUTBOUND_REJECTED' });
  await t.rejects(sink.openUdp!({}), { code: 'SLUICE_OUTBOUND_DROPPED' });
});

t.test('defaults: connect timeout, process-wide mark, lookup', async (t) => {
  const echo = await echoServer(t);
  let asked = '';
  const ob = createOutbound(
    { name: 'direct', type: 'direct' },
    {
      connectTimeoutMs: 1234,
      lookup: async (host) => {
        asked = host;
        return { address: '127.0.0.1', family: 4 };
      },
    },
  );
  const s = await ob.connectTcp({ host: 'via-lookup.test', port: echo.port });
  s.destroy();
  t.equal(asked, 'via-lookup.test');
  const marked = createOutbound({ name: 'direct', type: 'direct' }, { mark: 7 }) as DirectOutbound;
  t.ok(marked.marked, 'default mark applies when the entry has none');
  const own = createOutbound({ name: 'direct', type: 'direct', mark: 0 }, { mark: 7 }) as DirectOutbound;
  t.notOk(own.marked, 'an explicit mark 0 wins');
});

t.test('config errors name the field', async (t) => {
  t.throws(() => createOutbounds([{ name: 'a', type: 'reject' }, { name: 'a', type: 'drop' }]), {
    code: 'SLUICE_OUTBOUND_CONFIG',
    field: 'outbounds[1].name',
  });
  t.throws(() => createOutbound({ name: 'x', type: 'vmess' } as unknown as OutboundConfig), OutboundConfigError);
  t.throws(() => createOutbound({ name: 'd', type: 'direct', mark: -1 }), { field: 'outbounds[d].mark', code: 'SLUICE_OUTBOUND_CONFIG' });
  t.throws(() => createOutbound({ name: 'd', type: 'direct', interface: 'x'.repeat(16) }), { field: 'outbounds[d].interface', code: 'SLUICE_OUTBOUND_CONFIG' });
  t.throws(() => createOutbound({ name: 'h', type: 'http', server: 'h', port: 70000 }), { field: 'outbounds[h].port', code: 'SLUICE_OUTBOUND_CONFIG' });
});
