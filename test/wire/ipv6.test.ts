import t from 'tap';
import { WireError } from '../../src/wire/errors.js';
import {
  NH_UDP,
  emitIpv6,
  emitIpv6FragmentHeader,
  formatIpv6,
  isIpv6Fragment,
  newIpv6EmitRepr,
  newIpv6Repr,
  parseIpv6,
  parseIpv6Text,
} from '../../src/wire/ipv6.js';
import { IPV6_EXT_CHAIN, hex } from './fixtures.js';

t.test('walks hop-by-hop, destination options and fragment headers to UDP', async (t) => {
  const r = newIpv6Repr();
  t.equal(parseIpv6(IPV6_EXT_CHAIN, 0, IPV6_EXT_CHAIN.length, r), WireError.Ok);
  t.equal(r.nextHeader, 0);
  t.equal(r.hopLimit, 64);
  t.equal(r.upperProtocol, NH_UDP);
  t.equal(r.upperOffset, 40 + 24);
  t.equal(r.upperLength, 16);
  t.ok(r.hasFragmentHeader);
  t.ok(r.moreFragments);
  t.equal(r.fragmentOffset, 0);
  t.equal(r.fragmentId, 0xdeadbeef);
  t.equal(r.unfragmentableLength, 56);
  t.equal(r.fragmentNextHeaderFieldOffset, 48, 'the destination-options header names the fragment header');
  t.ok(isIpv6Fragment(r));
  t.equal(formatIpv6(IPV6_EXT_CHAIN, r.srcOffset), '2001:db8:c::2');
  t.equal(formatIpv6(IPV6_EXT_CHAIN, r.dstOffset), '2001:db8:5::2');
});

t.test('every truncation is refused; a second hop-by-hop header and a too-long chain are errors', async (t) => {
  const r = newIpv6Repr();
  for (let n = 0; n < IPV6_EXT_CHAIN.length; n++) {
    if (parseIpv6(IPV6_EXT_CHAIN, 0, n, r) === WireError.Ok) t.fail(`accepted ${n} bytes`);
  }
  const hbhTwice = IPV6_EXT_CHAIN.slice();
  hbhTwice[40] = 0; // hop-by-hop names another hop-by-hop
  t.equal(parseIpv6(hbhTwice, 0, hbhTwice.length, r), WireError.BadExtensionHeader);
  // 9 destination-options headers in a row
  const chain = new Uint8Array(40 + 9 * 8 + 8);
  chain.set(hex('6000 0000 0050 3c40'));
  for (let i = 0; i < 9; i++) chain[40 + i * 8] = i === 8 ? 17 : 60;
  chain[5] = 9 * 8 + 8;
  t.equal(parseIpv6(chain, 0, chain.length, r), WireError.BadExtensionHeader);
  const jumbo = IPV6_EXT_CHAIN.slice();
  jumbo[4] = 0;
  jumbo[5] = 0;
  t.equal(parseIpv6(jumbo, 0, jumbo.length, r), WireError.Unsupported);
  const v4 = IPV6_EXT_CHAIN.slice();
  v4[0] = 0x45;
  t.equal(parseIpv6(v4, 0, v4.length, r), WireError.BadVersion);
});

t.test('a non-first fragment stops the walk at the fragment header', async (t) => {
  const pkt = new Uint8Array(40 + 8 + 16);
  const e = newIpv6EmitRepr();
  parseIpv6Text('2001:db8::1', e.src, 0);
  parseIpv6Text('2001:db8::2', e.dst, 0);
  e.nextHeader = 44;
  e.payloadLength = 24;
  emitIpv6(e, pkt, 0);
  emitIpv6FragmentHeader(6, 1448, false, 7, pkt, 40);
  const r = newIpv6Repr();
  t.equal(parseIpv6(pkt, 0, pkt.length, r), WireError.Ok);
  t.equal(r.fragmentOffset, 1448);
  t.notOk(r.moreFragments);
  t.equal(r.fragmentId, 7);
  t.equal(r.upperProtocol, 6);
  t.equal(r.upperOffset, 48);
});

t.test('emit round trip into a 0xa5-filled buffer', async (t) => {
  const e = newIpv6EmitRepr();
  t.ok(parseIpv6Text('2001:db8:5::2', e.src, 0));
  t.ok(parseIpv6Text('2001:db8:c::2', e.dst, 0));
  e.nextHeader = 6;
  e.hopLimit = 63;
  e.trafficClass = 0xb8;
  e.flowLabel = 0x12345;
  e.payloadLength = 20;
  const buf = new Uint8Array(64).fill(0xa5);
  t.equal(emitIpv6(e, buf, 2), 40);
  const r = newIpv6Repr();
  t.equal(parseIpv6(buf, 2, 60, r), WireError.Ok);
  t.equal(r.trafficClass, 0xb8);
  t.equal(r.flowLabel, 0x12345);
  t.equal(r.hopLimit, 63);
  t.equal(r.upperProtocol, 6);
  t.equal(r.upperOffset, 42);
  t.equal(formatIpv6(buf, r.srcOffset), '2001:db8:5::2');
});

t.test('text forms (RFC 4291 2.2, RFC 5952)', async (t) => {
  const out = new Uint8Array(16);
  const cases: [string, string][] = [
    ['::', '::'],
    ['::1', '::1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['fe80::1:2:3:4', 'fe80::1:2:3:4'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
    ['64:ff9b::198.51.100.7', '64:ff9b::c633:6407'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ];
  for (const [input, expected] of cases) {
    t.ok(parseIpv6Text(input, out, 0), `parses ${input}`);
    t.equal(formatIpv6(out, 0), expected);
  }
  for (const bad of ['1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::1', ':', '1.2.3.4', '::1.2.3']) {
    t.notOk(parseIpv6Text(bad, out, 0), `rejects ${bad}`);
  }
});
