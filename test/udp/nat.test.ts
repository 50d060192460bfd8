/**
 * src/udp/nat.ts without sockets: fake client sessions and a fake
 * association. RFC 4787 REQ-1 (one mapping per client endpoint and
 * outbound), true sources, REQ-8 filtering modes, lifetime.
 */
import t from 'tap';
import { EventEmitter } from 'node:events';
import { UdpNat, newUdpNatCounters, type NatBinding, type NatSession, type UdpNatMode } from '../../src/udp/nat.js';
import type { Outbound, Target, UdpAssociation, UdpCloseHandler, UdpMessageHandler } from '../../src/outbound/types.js';
import { parseIp } from '../../src/wire/ip-address.js';

class FakeSession extends EventEmitter implements NatSession {
  readonly got: string[] = [];
  closed = false;
  readonly remoteBytes: Uint8Array;
  readonly localBytes: Uint8Array;
  constructor(
    readonly table: Map<string, FakeSession>,
    readonly localAddress: string,
    readonly localPort: number,
    readonly fromRemote = false,
    readonly family = 4,
    readonly remoteAddress = '192.0.2.2',
    readonly remotePort = 40000,
  ) {
    super();
    this.remoteBytes = parseIp(remoteAddress)!;
    this.localBytes = parseIp(localAddress) ?? new Uint8Array(4);
    table.set(`${localAddress}:${localPort}`, this);
  }
  send(data: Uint8Array): boolean {
    this.got.push(Buffer.from(data).toString());
    return true;
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.table.delete(`${this.localAddress}:${this.localPort}`);
    this.emit('close');
  }
  sibling(host: string, port: number): NatSession | null {
    return this.table.get(`${host}:${port}`) ?? new FakeSession(this.table, host, port, true);
  }
}

class FakeAssoc implements UdpAssociation {
  closed = false;
  readonly sent: string[] = [];
  readonly stats = { sent: 0, received: 0, sendDropped: 0, receiveDropped: 0 };
  handler: UdpMessageHandler | null = null;
  closer: UdpCloseHandler | null = null;
  send(payload: Uint8Array, dst: Target): void {
    this.sent.push(`${dst.host}:${dst.port} ${Buffer.from(payload).toString()}`);
  }
  onMessage(cb: UdpMessageHandler): void {
    this.handler = cb;
  }
  onClose(cb: UdpCloseHandler): void {
    this.closer = cb;
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closer?.(null);
  }
  from(host: string, port: number, text: string): void {
    this.handler!(Buffer.from(text), { host, port });
  }
}

const direct = { name: 'direct' } as Outbound;

function setup(mode: UdpNatMode, admit = true) {
  const counters = newUdpNatCounters();
  const inbound: NatBinding[] = [];
  const nat = new UdpNat({ mode, counters, admit: () => admit, onInbound: (b) => inbound.push(b) });
  const assocs: FakeAssoc[] = [];
  const open = (): Promise<UdpAssociation> => {
    const a = new FakeAssoc();
    assocs.push(a);
    return Promise.resolve(a);
  };
  const table = new Map<string, FakeSession>();
  const gone = new AbortController().signal;
  const attach = (s: FakeSession, hosts = [s.localAddress], target: Target = { host: s.localAddress, port: s.localPort }) => nat.attach('tun', direct, s, target, hosts, { bytesDown: 0 }, open, gone);
  return { nat, counters, inbound, assocs, table, attach, open };
}

t.test('REQ-1: sessions of one client socket share one association; replies by true source', async (t) => {
  const { counters, assocs, table, attach } = setup('endpoint-independent');
  const a = new FakeSession(table, '203.0.113.2', 3478);
  const b = new FakeSession(table, '203.0.113.3', 3478);
  const [ba, bb] = await Promise.all([attach(a), attach(b)]);
  t.equal(assocs.length, 1, 'one association for both destinations');
  t.equal(counters.mappingsActive, 1);
  ba.send(Buffer.from('x'));
  bb.send(Buffer.from('y'));
  t.same(assocs[0]!.sent, ['203.0.113.2:3478 x', '203.0.113.3:3478 y']);
  assocs[0]!.from('203.0.113.3', 3478, 'from-b');
  assocs[0]!.from('203.0.113.2', 3478, 'from-a');
  t.same(a.got, ['from-a']);
  t.same(b.got, ['from-b']);
  t.equal(ba.result.bytesDown, 6);
});

t.test('a fake-IP session is found under its real addresses', async (t) => {
  const { assocs, table, attach } = setup('address-and-port-dependent');
  const f = new FakeSession(table, '198.18.0.5', 3478);
  await attach(f, ['198.18.0.5', '203.0.113.2'], { host: 'stun.example', port: 3478 });
  assocs[0]!.from('203.0.113.2', 3478, 'real');
  t.same(f.got, ['real'], 'the reply from the real address reaches the fake-IP session');
});

t.test('REQ-8 filtering of new sources, and the policy check', async (t) => {
  const cases: [UdpNatMode, boolean, boolean, boolean][] = [
    // mode, admit, alt (sent-to address, other port) let in, third (never contacted) let in
    ['endpoint-independent', true, true, true],
    ['address-dependent', true, true, false],
    ['address-and-port-dependent', true, false, false],
    ['endpoint-independent', false, false, false],
  ];
  for (const [mode, admit, alt, third] of cases) {
    const { counters, inbound, assocs, table, attach } = setup(mode, admit);
    const a = new FakeSession(table, '203.0.113.2', 3478);
    const ba = await attach(a);
    ba.send(Buffer.from('probe'));
    assocs[0]!.from('203.0.113.2', 3479, 'alt');
    assocs[0]!.from('203.0.113.4', 5000, 'third');
    const got = inbound.map((b) => `${b.session.localAddress}:${b.session.localPort}`);
    t.same(got, [...(alt ? ['203.0.113.2:3479'] : []), ...(third ? ['203.0.113.4:5000'] : [])], `${mode}${admit ? '' : ', policy refuses'}: new sessions ${JSON.stringify(got)}`);
    t.equal(counters.filtered, (alt ? 0 : 1) + (third ? 0 : 1), 'the rest counted as filtered');
    if (alt) {
      t.same((table.get('203.0.113.2:3479') as FakeSession).got, ['alt'], 'the new session sent it from its true source');
      assocs[0]!.from('203.0.113.2', 3479, 'again');
      t.equal(inbound.length, (alt ? 1 : 0) + (third ? 1 : 0), 'a second datagram from it uses the same session');
    }
  }
});

t.test('a source the SOCKS5 relay names by domain is filtered', async (t) => {
  const { counters, inbound, assocs, table, attach } = setup('endpoint-independent');
  await attach(new FakeSession(table, '203.0.113.2', 3478));
  assocs[0]!.from('peer.example', 5000, 'named');
  t.equal(inbound.length, 0);
  t.equal(counters.filtered, 1);
});

t.test('lifetime: the mapping ends with its last session; an ended association ends every session', async (t) => {
  const { counters, assocs, table, attach } = setup('endpoint-independent');
  const a = new FakeSession(table, '203.0.113.2', 3478);
  const b = new FakeSession(table, '203.0.113.3', 3478);
  await attach(a);
  await attach(b);
  a.close();
  t.notOk(assocs[0]!.closed, 'one session left: the association stays');
  b.close();
  t.ok(assocs[0]!.closed, 'the last session gone: the association closed');
  t.equal(counters.mappingsActive, 0);

  const c = new FakeSession(table, '203.0.113.2', 3478);
  const d = new FakeSession(table, '203.0.113.3', 3478);
  await attach(c);
  await attach(d);
  t.equal(assocs.length, 2, 'a new mapping after the old one ended');
  assocs[1]!.close();
  t.ok(c.closed && d.closed, 'the association ended: its sessions too');
});

t.test('a session gone while its mapping opens: nothing is bound, the mapping ends', async (t) => {
  const counters = newUdpNatCounters();
  const nat = new UdpNat({ mode: 'endpoint-independent', counters, admit: () => true, onInbound: () => {} });
  const a = new FakeAssoc();
  let release!: (x: UdpAssociation) => void;
  const opening = new Promise<UdpAssociation>((r) => (release = r));
  const ac = new AbortController();
  const s = new FakeSession(new Map(), '203.0.113.2', 3478);
  const p = nat.attach('tun', direct, s, { host: '203.0.113.2', port: 3478 }, ['203.0.113.2'], { bytesDown: 0 }, () => opening, ac.signal);
  ac.abort();
  release(a);
  await t.rejects(p);
  t.ok(a.closed, 'the association was closed');
  t.equal(nat.size, 0);
});
