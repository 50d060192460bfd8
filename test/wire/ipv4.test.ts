import t from 'tap';
import { WireError } from '../../src/wire/errors.js';
import {
  emitIpv4,
  formatIpv4,
  isFragment,
  newIpv4EmitRepr,
  newIpv4Repr,
  parseIpv4,
  parseIpv4Text,
  readIpv4Addr,
} from '../../src/wire/ipv4.js';
import { IPV4_TCP_SYN, IPV4_UDP_HEADER, hex, sealIpv4 } from './fixtures.js';

t.test('parses a real header: fields, offsets, payload', async (t) => {
  const pkt = new Uint8Array(0x73);
  pkt.set(IPV4_UDP_HEADER);
  const r = newIpv4Repr();
  t.equal(parseIpv4(pkt, 0, pkt.length, r), WireError.Ok);
  t.equal(r.headerLength, 20);
  t.equal(r.totalLength, 0x73);
  t.equal(r.protocol, 17);
  t.equal(r.ttl, 64);
  t.ok(r.dontFragment);
  t.notOk(isFragment(r));
  t.equal(formatIpv4(pkt, r.srcOffset), '192.168.0.1');
  t.equal(formatIpv4(pkt, r.dstOffset), '192.168.0.199');
  t.equal(r.payloadOffset, 20);
  t.equal(r.payloadLength, 0x73 - 20);
});

t.test('link padding beyond the total length is ignored; a short buffer is truncated', async (t) => {
  const pkt = sealIpv4(IPV4_TCP_SYN.slice());
  const padded = new Uint8Array(pkt.length + 6);
  padded.set(pkt);
  const r = newIpv4Repr();
  t.equal(parseIpv4(padded, 0, padded.length, r), WireError.Ok);
  t.equal(r.payloadLength, pkt.length - 20);
  for (let n = 0; n < pkt.length; n++) {
    const code = parseIpv4(pkt, 0, n, r);
    if (code === WireError.Ok) t.fail(`accepted a packet cut to ${n} bytes`);
  }
});

t.test('rejects bad version, IHL, total length and checksum', async (t) => {
  const r = newIpv4Repr();
  const base = sealIpv4(IPV4_TCP_SYN.slice());
  const v = base.slice();
  v[0] = 0x65;
  t.equal(parseIpv4(v, 0, v.length, r), WireError.BadVersion);
  const ihl = base.slice();
  ihl[0] = 0x44;
  t.equal(parseIpv4(ihl, 0, ihl.length, r), WireError.BadHeaderLength);
  const tl = base.slice();
  tl[2] = 0;
  tl[3] = 10;
  t.equal(parseIpv4(tl, 0, tl.length, r), WireError.BadTotalLength);
  const cs = base.slice();
  cs[8] ^= 1;
  t.equal(parseIpv4(cs, 0, cs.length, r), WireError.BadChecksum);
  t.equal(parseIpv4(cs, 0, cs.length, r, false), WireError.Ok, 'checksum check can be skipped (offloaded)');
});

t.test('options: well-formed list accepted, bad option lengths rejected', async (t) => {
  const r = newIpv4Repr();
  // IHL 6: NOP, NOP, router alert (148, len 4)... here: NOP NOP then EOL pad
  const good = sealIpv4(hex('4600 0018 0001 0000 4001 0000 c0000202 cb007102 9404 0000'));
  t.equal(parseIpv4(good, 0, good.length, r), WireError.Ok);
  t.equal(r.optionsLength, 4);
  t.equal(r.payloadOffset, 24);
  const bad = sealIpv4(hex('4600 0018 0001 0000 4001 0000 c0000202 cb007102 9409 0000'));
  t.equal(parseIpv4(bad, 0, bad.length, r), WireError.BadOption);
  const zero = sealIpv4(hex('4600 0018 0001 0000 4001 0000 c0000202 cb007102 0701 0000'));
  t.equal(parseIpv4(zero, 0, zero.length, r), WireError.BadOption);
});

t.test('fragments: MF and offset, and the ping-of-death bound', async (t) => {
  const r = newIpv4Repr();
  const frag = sealIpv4(hex('4500 001c 0abc 2000 4011 0000 c0000202 cb007102 0000 0000 0000 0000'));
  t.equal(parseIpv4(frag, 0, frag.length, r), WireError.Ok);
  t.ok(r.moreFragments);
  t.equal(r.fragmentOffset, 0);
  t.ok(isFragment(r));
  const last = sealIpv4(hex('4500 001c 0abc 0005 4011 0000 c0000202 cb007102 0000 0000 0000 0000'));
  t.equal(parseIpv4(last, 0, last.length, r), WireError.Ok);
  t.notOk(r.moreFragments);
  t.equal(r.fragmentOffset, 40);
  const death = sealIpv4(hex('4500 001c 0abc 1fff 4011 0000 c0000202 cb007102 0000 0000 0000 0000'));
  t.equal(parseIpv4(death, 0, death.length, r), WireError.BadLength);
});

t.test('emit writes every field; round trip through parse', async (t) => {
  const e = newIpv4EmitRepr();
  e.src = parseIpv4Text('203.0.113.2')!;
  e.dst = parseIpv4Text('192.0.2.2')!;
  e.protocol = 6;
  e.ttl = 61;
  e.id = 0xbeef;
  e.tos = 0x10;
  e.dontFragment = false;
  e.moreFragments = true;
  e.fragmentOffset = 1480;
  e.payloadLength = 8;
  const buf = new Uint8Array(40).fill(0xa5);
  t.equal(emitIpv4(e, buf, 4), 20);
  const r = newIpv4Repr();
  t.equal(parseIpv4(buf, 4, 28, r), WireError.Ok);
  t.equal(readIpv4Addr(buf, r.srcOffset), e.src);
  t.equal(readIpv4Addr(buf, r.dstOffset), e.dst);
  t.equal(r.ttl, 61);
  t.equal(r.id, 0xbeef);
  t.equal(r.tos, 0x10);
  t.equal(r.protocol, 6);
  t.notOk(r.dontFragment);
  t.ok(r.moreFragments);
  t.equal(r.fragmentOffset, 1480);
  t.equal(r.totalLength, 28);
});

t.test('text form', async (t) => {
  t.equal(parseIpv4Text('192.0.2.1'), 0xc0000201);
  t.equal(parseIpv4Text('255.255.255.255'), 0xffffffff);
  for (const bad of ['1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', 'a.b.c.d', '']) t.equal(parseIpv4Text(bad), null, bad);
});
