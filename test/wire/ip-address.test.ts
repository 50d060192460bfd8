import t from 'tap';
import {
  canonicalIp,
  cidrContains,
  formatIp,
  formatIpv6,
  ipFamilyOf,
  isIpv4Mapped,
  parseCidr,
  parseIp,
  parseIpv4Into,
  parseIpv4Text,
  parseIpv6Text,
  unbracket,
  unmapIpv4Text,
  withoutZone,
} from '../../src/wire/ip-address.js';
import { canonicalIp as dnsCanonicalIp, formatIp as dnsFormatIp } from '../../src/dns/address.js';
import { formatIp as policyFormatIp, parseIp as policyParseIp } from '../../src/engine/policy/cidr-trie.js';
import { formatIPv6 as socksFormatIpv6, readAddress, encodeRequest, Command } from '../../src/outbound/socks5-codec.js';
import { formatIp as configFormatIp, parseIp as configParseIp } from '../../src/config/net.js';
import { formatIpv6 as wireFormatIpv6 } from '../../src/wire/ipv6.js';

const v6 = (s: string): Uint8Array => {
  const b = new Uint8Array(16).fill(0xa5);
  if (!parseIpv6Text(s, b, 0)) throw new Error(`does not parse: ${s}`);
  return b;
};
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

t.test('IPv4 text: the dotted quad only', async (t) => {
  t.equal(parseIpv4Text('192.0.2.255'), 0xc00002ff);
  t.equal(parseIpv4Text('0.0.0.0'), 0);
  t.equal(parseIpv4Text('255.255.255.255'), 0xffffffff);
  for (const bad of ['', '1', '1.2.3', '1.2.3.4.5', '256.0.0.1', '01.2.3.4', '1.2.3.04', '1..3.4', '1.2.3.4 ', ' 1.2.3.4', 'a.b.c.d', '1.2.3.-4', '1234.1.1.1', '0x7f.0.0.1', '1.2.3.4/8']) {
    t.equal(parseIpv4Text(bad), null, `refuses ${JSON.stringify(bad)}`);
  }
  const out = new Uint8Array(6).fill(0xa5);
  t.ok(parseIpv4Into('203.0.113.9', out, 1));
  t.equal(hex(out), 'a5cb007109a5', 'written at the offset, nothing around it');
});

t.test('IPv6 text: RFC 4291 2.2 forms, into a buffer at an offset', async (t) => {
  t.equal(hex(v6('::')), '0'.repeat(32));
  t.equal(hex(v6('::1')), `${'0'.repeat(31)}1`);
  t.equal(hex(v6('1::')), `0001${'0'.repeat(28)}`);
  t.equal(hex(v6('2001:DB8::8:800:200C:417A')), '20010db80000000000080800200c417a', 'upper case hex');
  t.equal(hex(v6('1:2:3:4:5:6:7:8')), '00010002000300040005000600070008');
  t.equal(hex(v6('1:2:3:4:5:6:7::')), '00010002000300040005000600070000');
  t.equal(hex(v6('::2:3:4:5:6:7:8')), '00000002000300040005000600070008');
  t.equal(hex(v6('1:2::7:8')), '00010002000000000000000000070008');
  t.equal(hex(v6('0:0:0:0:0:0:13.1.68.3')), `${'0'.repeat(24)}0d014403`, 'dotted-quad tail (form 3)');
  t.equal(hex(v6('1:2:3:4:5:6:192.0.2.1')), '000100020003000400050006c0000201');
  t.equal(hex(v6('::ffff:192.0.2.1')), '00000000000000000000ffffc0000201');
  t.equal(hex(v6('ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255')), 'f'.repeat(32), 'the longest text (45 characters)');
  const out = new Uint8Array(20).fill(0xa5);
  t.ok(parseIpv6Text('2001:db8::1', out, 2));
  t.equal(hex(out), 'a5a520010db8000000000000000000000001a5a5', 'written at the offset, nothing around it');
  for (const bad of [
    '', ':', ':::', '1:', ':1', ':1::', '1::2:', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:8::', '::1:2:3:4:5:6:7:8',
    '1::2::3', '12345::', '00001::', 'g::1', '::1.2.3', '::1.2.3.4.5', '::01.2.3.4', '::256.1.1.1', '::ffff:1.2.3.4:5', '1.2.3.4::',
    '1:2:3:4:5:6:7:1.2.3.4', ' ::1', '::1 ', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255',
  ]) {
    t.notOk(parseIpv6Text(bad, new Uint8Array(16), 0), `refuses ${JSON.stringify(bad)}`);
  }
});

t.test('zone ids and brackets are not part of a bare address', async (t) => {
  const b = new Uint8Array(16);
  t.notOk(parseIpv6Text('fe80::1%eth0', b, 0), 'a zone id is refused (RFC 4007 11.2)');
  t.notOk(parseIpv6Text('[2001:db8::1]', b, 0), 'brackets are refused (RFC 3986 3.2.2)');
  t.equal(parseIp('[::1]'), null);
  t.equal(parseIp('fe80::1%25eth0'), null);
  t.equal(withoutZone('fe80::1%eth0'), 'fe80::1');
  t.equal(withoutZone('2001:db8::1'), '2001:db8::1');
  t.equal(unbracket('[2001:db8::1]'), '2001:db8::1');
  t.equal(unbracket('192.0.2.1'), '192.0.2.1');
  t.equal(unbracket('['), '[');
  t.equal(ipFamilyOf('fe80::1%eth0'), 0);
  t.equal(ipFamilyOf('fe80::1%eth0', true), 6, 'allowed where Node allows it');
  t.equal(ipFamilyOf('192.0.2.1%eth0', true), 0, 'never on IPv4');
  t.equal(ipFamilyOf('192.0.2.1'), 4);
  t.equal(ipFamilyOf('example.com'), 0);
  t.equal(ipFamilyOf('[::1]'), 0);
});

t.test('RFC 5952 printing', async (t) => {
  const cases: [string, string][] = [
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['2001:DB8:0:0:0:0:0:10', '2001:db8::10'],
    ['2001:0db8::0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['::c000:201', '::c000:201'],
  ];
  for (const [text, canon] of cases) t.equal(canonicalIp(text), canon, text);
  t.equal(canonicalIp('192.0.2.1'), '192.0.2.1');
  t.equal(canonicalIp('nonsense'), null);
  t.equal(formatIp(Uint8Array.of(10, 0, 0, 1)), '10.0.0.1');
  const b = new Uint8Array(20);
  b.set(v6('2001:db8::1'), 4);
  t.equal(formatIp(b, 4, 16), '2001:db8::1', 'at an offset');
});

t.test('IPv4-mapped addresses: mixed notation (RFC 5952 5), and every layer agrees', async (t) => {
  const mapped = v6('::ffff:c000:201');
  t.ok(isIpv4Mapped(mapped, 0));
  t.notOk(isIpv4Mapped(v6('::c000:201'), 0), 'IPv4-compatible (deprecated) is not mapped');
  t.notOk(isIpv4Mapped(v6('1::ffff:c000:201'), 0));
  t.notOk(isIpv4Mapped(v6('::fffe:c000:201'), 0));
  t.equal(formatIpv6(mapped), '::ffff:192.0.2.1');
  t.equal(canonicalIp('::FFFF:192.0.2.1'), '::ffff:192.0.2.1');
  t.equal(canonicalIp('0:0:0:0:0:ffff:c000:201'), '::ffff:192.0.2.1');
  // The five places that printed addresses on their own now print the same.
  t.equal(wireFormatIpv6(mapped, 0), '::ffff:192.0.2.1', 'wire codec');
  t.equal(dnsFormatIp(mapped), '::ffff:192.0.2.1', 'DNS layer');
  t.equal(dnsCanonicalIp('::ffff:c000:201'), '::ffff:192.0.2.1', 'DNS layer, from text');
  t.equal(policyFormatIp(policyParseIp('::ffff:c000:201')!), '::ffff:192.0.2.1', 'policy trie');
  t.equal(socksFormatIpv6(mapped, 0), '::ffff:192.0.2.1', 'SOCKS5 codec');
  t.equal(configFormatIp(configParseIp('::ffff:c000:201')!), '::ffff:192.0.2.1', 'config checks');
  const req = encodeRequest(Command.CONNECT, '::ffff:192.0.2.1', 80);
  t.equal(readAddress(req, 3)!.host, '::ffff:192.0.2.1', 'SOCKS5 address round trip');
  t.equal(unmapIpv4Text('::ffff:192.0.2.1'), '192.0.2.1');
  t.equal(unmapIpv4Text('::FFFF:192.0.2.1'), '192.0.2.1');
  t.equal(unmapIpv4Text('::ffff:c000:201'), '::ffff:c000:201', 'only the dotted form is unmapped');
  t.equal(unmapIpv4Text('::ffff:01.2.3.4'), '::ffff:01.2.3.4', 'not a valid quad: left alone');
  t.equal(unmapIpv4Text('2001:db8::1'), '2001:db8::1');
  t.equal(unmapIpv4Text('192.0.2.1'), '192.0.2.1');
});

t.test('SOCKS5 addresses with a zone id send the address without it', async (t) => {
  const req = encodeRequest(Command.CONNECT, 'fe80::1%eth0', 443);
  t.equal(req[3], 0x04, 'ATYP IPv6');
  t.equal(readAddress(req, 3)!.host, 'fe80::1');
});

t.test('CIDR blocks', async (t) => {
  const c = parseCidr('198.19.7.7/15')!;
  t.same({ family: c.family, prefix: c.prefix, hostBitsSet: c.hostBitsSet }, { family: 4, prefix: 15, hostBitsSet: true });
  t.equal(formatIp(c.bytes), '198.18.0.0', 'host bits cleared');
  t.equal(parseCidr('198.18.0.0/15')!.hostBitsSet, false);
  t.ok(cidrContains(c, parseIp('198.19.255.255')!));
  t.notOk(cidrContains(c, parseIp('198.20.0.0')!));
  const six = parseCidr('fc00::/18')!;
  t.ok(cidrContains(six, parseIp('fc00:3fff::1')!));
  t.notOk(cidrContains(six, parseIp('fc00:4000::')!));
  const at = new Uint8Array(20);
  at.set(parseIp('fc00:3fff::1')!, 4);
  t.ok(cidrContains(six, at, 4), 'an address at an offset');
  t.equal(parseCidr('1.2.3.4')!.prefix, 32, 'a bare address is a host block');
  t.equal(parseCidr('2001:db8::1')!.prefix, 128);
  t.equal(parseCidr('0.0.0.0/0')!.prefix, 0);
  t.equal(formatIp(parseCidr('::ffff:192.0.2.0/120')!.bytes), '::ffff:192.0.2.0');
  for (const bad of ['1.2.3.4/33', '2001:db8::/129', '1.2.3.4/x', '1.2.3.4/', '1.2.3.4/08', '1.2.3.4/-1', '/8', '1.2.3/8', '[::1]/128', 'fe80::%eth0/64', 'example.com/24']) {
    t.equal(parseCidr(bad), null, `refuses ${JSON.stringify(bad)}`);
  }
});
