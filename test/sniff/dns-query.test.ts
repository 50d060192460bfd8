import t from 'tap';
import type { Test } from 'tap';
import { readName, sniffDnsTcp, sniffDnsUdp } from '../../src/engine/sniff/dns-query.js';
import type { SniffResult } from '../../src/engine/sniff/result.js';
import { captureDigUdp, captureNodeDns } from './capture.js';
import { ascii, concat, dnsName, dnsQuery, hex, tcpFramed } from './fixtures.js';

function expectDns(t: Test, r: SniffResult, name: string | null, qtype: number, transport: 'udp' | 'tcp'): void {
  if (r.kind !== 'found' || r.protocol !== 'dns') {
    t.fail(`expected dns, got ${JSON.stringify(r)}`);
    return;
  }
  t.equal(r.serverName, name, `qname ${String(name)}`);
  t.equal(r.qtype, qtype, 'qtype');
  t.equal(r.transport, transport, 'transport');
}

t.test('real queries from c-ares (node:dns) over UDP, then TCP after TC=1', async (t) => {
  const { udp, tcp } = await captureNodeDns('WWW.Example.COM');
  expectDns(t, sniffDnsUdp(udp), 'www.example.com', 1, 'udp');
  expectDns(t, sniffDnsTcp(tcp), 'www.example.com', 1, 'tcp');
  for (let n = 0; n < tcp.length; n++) {
    const k = sniffDnsTcp(tcp.subarray(0, n)).kind;
    if (n < 2 + 12 + 17 + 4 && k !== 'need-more') t.fail(`prefix ${n}: ${k}`);
  }
  t.equal(sniffDnsUdp(udp.subarray(0, udp.length - 5)).kind, 'not-this', 'a UDP datagram cut inside its question');
});

t.test('real query from dig (AD flag, EDNS cookie)', async (t) => {
  const q = await captureDigUdp('mail.example.org', 'AAAA');
  t.equal(q[3]! & 0x20, 0x20, 'dig sets AD');
  t.ok(((q[10]! << 8) | q[11]!) >= 1, 'ARCOUNT counts the OPT record');
  expectDns(t, sniffDnsUdp(q), 'mail.example.org', 28, 'udp');
  expectDns(t, sniffDnsTcp(tcpFramed(q)), 'mail.example.org', 28, 'tcp');
});

t.test('built queries', async (t) => {
  expectDns(t, sniffDnsUdp(dnsQuery('a.example', { edns: true })), 'a.example', 1, 'udp');
  expectDns(t, sniffDnsUdp(dnsQuery('_sip._tcp.example.com', { qtype: 33 })), '_sip._tcp.example.com', 33, 'udp');
  expectDns(t, sniffDnsUdp(dnsQuery('', { qtype: 2 })), null, 2, 'udp');
  expectDns(t, sniffDnsUdp(dnsQuery('version.bind', { qtype: 16, qclass: 3 })), 'version.bind', 16, 'udp');
  expectDns(t, sniffDnsUdp(dnsQuery('x', { flags: 0x0000 })), 'x', 1, 'udp');
  // a label with a dot inside, or with a space, is DNS but not a usable name
  expectDns(t, sniffDnsUdp(dnsQuery('', { rawName: concat(hex('03'), ascii('a.b'), dnsName('example')) })), null, 1, 'udp');
  expectDns(t, sniffDnsUdp(dnsQuery('', { rawName: concat(hex('03'), ascii('a b'), dnsName('example')) })), null, 1, 'udp');
  // 63-byte labels, 253-character name: the maximum
  const max = ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(61)].join('.');
  expectDns(t, sniffDnsUdp(dnsQuery(max)), max, 1, 'udp');
});

t.test('compression pointers: loops and forward/self pointers are refused', async (t) => {
  const header = hex('1234 0100 0001 0000 0000 0000');
  const selfLoop = concat(header, hex('c00c'), hex('0001 0001'));
  t.equal(sniffDnsUdp(selfLoop).kind, 'not-this', 'pointer to itself');
  const twoStep = concat(header, hex('01 61 c00c'), hex('0001 0001'));
  t.equal(sniffDnsUdp(twoStep).kind, 'not-this', 'label then pointer back to the name start (a.a.a...)');
  const forward = concat(header, hex('c010 0001 0001 01 61 00'));
  t.equal(sniffDnsUdp(forward).kind, 'not-this', 'forward pointer');
  const intoHeader = concat(header, hex('c002'), hex('0001 0001'));
  t.equal(sniffDnsUdp(intoHeader).kind, 'not-this', 'pointer into the header');
  // readName itself: a pointer chain strictly backwards is followed, a loop is not
  const msg = concat(header, dnsName('example.com'), hex('0001 0001'), hex('03 777777 c00c'), hex('c01d'));
  const after = readName(msg, 0, 12 + 13 + 4, msg.length);
  t.equal(after, 12 + 13 + 4 + 6, 'www + pointer to example.com');
  t.equal(readName(msg, 0, 12 + 13 + 4 + 6, msg.length), msg.length, 'pointer to a pointer, still backwards');
  const loop = concat(header, hex('03 777777 c01b'), hex('c00c'));
  t.ok(readName(loop, 0, 12, loop.length) < 0, 'a two-pointer loop ends in an error');
  t.ok(readName(loop, 0, 16, loop.length) < 0, 'entered from its middle too');
});

t.test('not a query', async (t) => {
  const base = dnsQuery('a.example');
  const set = (i: number, v: number) => {
    const b = base.slice();
    b[i] = v;
    return b;
  };
  const cases: Array<[string, Uint8Array]> = [
    ['response (QR=1)', set(2, 0x81)],
    ['opcode NOTIFY', set(2, 0x20)],
    ['TC set', set(2, 0x03)],
    ['Z set', set(3, 0x40)],
    ['RCODE set', set(3, 0x03)],
    ['QDCOUNT 0', set(5, 0)],
    ['QDCOUNT 2', set(5, 2)],
    ['ANCOUNT 1', set(7, 1)],
    ['NSCOUNT 1', set(9, 1)],
    ['ARCOUNT 3', set(11, 3)],
    ['QTYPE 0', concat(base.subarray(0, base.length - 4), hex('0000 0001'))],
    ['QCLASS 2', concat(base.subarray(0, base.length - 4), hex('0001 0002'))],
    ['label type 0x40', concat(base.subarray(0, 12), hex('41 00'), hex('0001 0001'))],
    ['name over 255', dnsQuery('', { rawName: concat(...Array(5).fill(concat(hex('3f'), new Uint8Array(63).fill(0x61))), hex('00')) })],
    ['too short', base.subarray(0, 16)],
    ['TLS', hex('16 0301 0200 01 0001fc 0303 00000000 00000000 00000000')],
    ['HTTP', ascii('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
  ];
  for (const [what, bytes] of cases) t.equal(sniffDnsUdp(bytes).kind, 'not-this', what);
  t.equal(sniffDnsTcp(hex('0005 1234 0100 00')).kind, 'not-this', 'TCP length below a minimal query');
  t.equal(sniffDnsTcp(concat(hex('0011'), base)).kind, 'not-this', 'TCP length ends inside the question');
  t.equal(sniffDnsTcp(hex('00')).kind, 'need-more');
  t.equal(sniffDnsTcp(hex('0040 1234')).kind, 'need-more');
  t.equal(sniffDnsTcp(hex('0040 1234'), 16384, true).kind, 'not-this', 'final');
  t.equal(sniffDnsTcp(hex('0040 1234 8100')).kind, 'not-this', 'response flags seen early');
});
