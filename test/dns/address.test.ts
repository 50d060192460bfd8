import t from 'tap';
import { addressFromReverseName, canonicalIp, cidrContains, formatIp, parseCidr, parseIp, parseIpv4, parseIpv6, reverseName } from '../../src/dns/address.js';

t.test('IPv4 text', async (t) => {
  t.same([...parseIpv4('192.0.2.255')!], [192, 0, 2, 255]);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1..2.3', 'a.b.c.d', '1.2.3.4 ']) t.equal(parseIpv4(bad), null, bad);
  t.equal(formatIp(Uint8Array.of(10, 0, 0, 1)), '10.0.0.1');
});

t.test('IPv6 text and RFC 5952 canonical form', async (t) => {
  const cases: [string, string][] = [
    ['::', '::'],
    ['::1', '::1'],
    ['2001:DB8:0:0:0:0:0:10', '2001:db8::10'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['fc00::', 'fc00::'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'], // IPv4-mapped in mixed notation (RFC 5952 5), as everywhere in sluice
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ];
  for (const [text, canon] of cases) t.equal(canonicalIp(text), canon, text);
  for (const bad of [':', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::', '1:2:3:4:5:6:7', ':1::', '1::2:']) t.equal(parseIpv6(bad), null, bad);
  t.equal(parseIp('nonsense'), null);
});

t.test('CIDR blocks', async (t) => {
  const c = parseCidr('198.19.7.7/15')!;
  t.equal(formatIp(c.bytes), '198.18.0.0', 'host bits cleared');
  t.ok(cidrContains(c, parseIp('198.19.255.255')!));
  t.notOk(cidrContains(c, parseIp('198.20.0.0')!));
  const v6 = parseCidr('fc00::/18')!;
  t.ok(cidrContains(v6, parseIp('fc00:3fff::1')!));
  t.notOk(cidrContains(v6, parseIp('fc00:4000::')!));
  t.equal(parseCidr('1.2.3.4/33'), null);
  t.equal(parseCidr('1.2.3.4/x'), null);
  t.equal(parseCidr('1.2.3.4')!.prefix, 32);
});

t.test('reverse names (RFC 1035 3.5, RFC 3596 2.5)', async (t) => {
  t.equal(reverseName(parseIp('192.0.2.10')!), '10.2.0.192.in-addr.arpa');
  const six = reverseName(parseIp('2001:db8::567:89ab')!);
  t.equal(six, 'b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
  t.equal(formatIp(addressFromReverseName(six)!), '2001:db8::567:89ab');
  t.equal(formatIp(addressFromReverseName('10.2.0.192.IN-ADDR.ARPA.')!), '192.0.2.10');
  t.equal(addressFromReverseName('2.0.192.in-addr.arpa'), null, 'a zone, not an address');
  t.equal(addressFromReverseName('x.2.0.192.in-addr.arpa'), null);
  t.equal(addressFromReverseName('1.0.ip6.arpa'), null);
  t.equal(addressFromReverseName('example.com'), null);
});
