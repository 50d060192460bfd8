/**
 * src/workers/mirror-flow.ts: the main thread's record of a worker flow,
 * made from what crosses the thread boundary (snapFlow, structured clone),
 * shows the same texts and explains with the same match context as the
 * worker's own record, without keeping a copy of either.
 */
import t from 'tap';
import type { FlowRecord } from '../../src/engine/flow-registry.js';
import type { MatchContext } from '../../src/engine/policy/types.js';
import { MirrorFlow } from '../../src/workers/mirror-flow.js';
import { matchContextOf, type MatchSeen } from '../../src/engine/match-seen.js';
import { snapFlow } from '../../src/workers/protocol.js';

/** A worker's flow record as the router fills it (FlowInfo's fields the snapshot reads), and the question the policy was asked for it. */
function workerFlow(srcIp: string, dstIp: string, bytes: { src: Uint8Array; dst: Uint8Array; family: 4 | 6 }): FlowRecord & { chain: readonly string[] | null; match: MatchSeen; asked: MatchContext } {
  const ctx: MatchContext = { network: 'tcp', inbound: 'tun', family: bytes.family, dst: bytes.dst, dstPort: 443, src: bytes.src, srcPort: 40000, domain: 'example.com', protocol: 'tls' };
  ctx.uid = 1000;
  ctx.process = 'curl';
  ctx.processPath = '/usr/bin/curl';
  return {
    id: '00000000-0000-4000-8000-000000000001',
    network: 'tcp',
    inbound: 'tun',
    srcIp,
    srcPort: 40000,
    dstIp,
    dstPort: 443,
    domain: 'example.com',
    nameFrom: 'sniff',
    sniffHost: 'example.com',
    protocol: 'tls',
    rule: 2,
    outbound: 'proxy',
    chains: ['member', 'group'],
    mode: null,
    remoteDestination: null,
    uid: 1000,
    process: 'curl',
    processPath: '/usr/bin/curl',
    started: 1_700_000_000_000,
    bytes: { bytesUp: 10, bytesDown: 20 },
    end: null,
    killed: false,
    chain: ['group', 'member'],
    match: { domain: ctx.domain, protocol: ctx.protocol, nameFrom: 'sniff' },
    asked: ctx,
  };
}

t.test('IPv4: texts, bytes and the match context as the worker has them', async (t) => {
  const f = workerFlow('192.0.2.10', '203.0.113.5', { family: 4, src: Uint8Array.of(192, 0, 2, 10), dst: Uint8Array.of(203, 0, 113, 5) });
  const ended: [unknown, string][] = [];
  const slot = { worker: 1 };
  const m = new MirrorFlow(structuredClone(snapFlow(f)), { endMirror: (s, id) => ended.push([s, id]) }, slot);
  t.equal(m.src, '192.0.2.10:40000');
  t.equal(m.dst, '203.0.113.5:443');
  t.same([m.bytes!.bytesUp, m.bytes!.bytesDown], [10, 20]);
  t.same([m.outbound, m.rule, m.chains, m.chain, m.domain, m.sniffHost, m.protocol, m.uid, m.process, m.processPath], ['proxy', 2, ['member', 'group'], ['group', 'member'], 'example.com', 'example.com', 'tls', 1000, 'curl', '/usr/bin/curl']);
  t.same(m.match, f.match, 'what the policy saw crosses as the worker kept it');
  const asked = matchContextOf(m, m.match!);
  t.same(asked, f.asked, 'the match context made again equals the one the policy was asked with');
  t.equal(asked.dst.length, 4, 'IPv4 addresses are 4 bytes, as the router matches them');
  m.end!.call(m);
  t.same(ended, [[slot, m.id]], 'end asks the pool to end it through its worker');
});

t.test('IPv6 and an IPv4-mapped destination', async (t) => {
  const src = new Uint8Array(16);
  src.set([0x20, 0x01, 0x0d, 0xb8], 0);
  src[15] = 7;
  const dst = new Uint8Array(16);
  dst.set([0xff, 0xff, 198, 51, 100, 1], 10);
  const f = workerFlow('2001:db8::7', '::ffff:198.51.100.1', { family: 6, src, dst });
  const m = new MirrorFlow(structuredClone(snapFlow(f)), { endMirror: () => {} }, null);
  t.equal(m.src, '[2001:db8::7]:40000');
  t.equal(m.dst, '[::ffff:198.51.100.1]:443');
  t.same(m.match, f.match);
  t.same(matchContextOf(m, m.match!), f.asked);
});

t.test('not routed by the rules, then routed: the match follows the latest snapshot', async (t) => {
  const f = workerFlow('192.0.2.10', '203.0.113.5', { family: 4, src: Uint8Array.of(192, 0, 2, 10), dst: Uint8Array.of(203, 0, 113, 5) });
  const routed = f.match;
  (f as { match: unknown }).match = null;
  f.outbound = '';
  const m = new MirrorFlow(structuredClone(snapFlow(f)), { endMirror: () => {} }, null);
  t.equal(m.match, null, 'not routed yet: no match context');
  (f as { match: unknown }).match = routed;
  f.outbound = 'proxy';
  f.bytes = { bytesUp: 99, bytesDown: 1 };
  m.update(structuredClone(snapFlow(f)));
  t.same(m.match, routed);
  t.equal(m.outbound, 'proxy');
  t.same([m.bytes!.bytesUp, m.bytes!.bytesDown], [99, 1]);
});
