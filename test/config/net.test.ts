import t from 'tap';
import { isIPv6 } from 'node:net';
import {
  cidrContains,
  cidrOverlap,
  cidrSize,
  formatCidr,
  formatIp,
  hasHostBits,
  networkOf,
  parseCidr,
  parseIp,
} from '../../src/config/net.js';
import { IPV4_CIDR, IPV6, IPV6_CIDR } from '../../src/config/schema.js';

t.test('parseIp reads both families into integers', async (t) => {
  t.same(parseIp('192.0.2.1'), { family: 4, value: 0xc0000201n });
  t.same(parseIp('::'), { family: 6, value: 0n });
  t.same(parseIp('::1'), { family: 6, value: 1n });
  t.same(parseIp('2001:db8::1'), { family: 6, value: 0x20010db8000000000000000000000001n });
  t.same(parseIp('::ffff:192.0.2.1'), { family: 6, value: 0xffffc0000201n });
  t.same(parseIp('1:2:3:4:5:6:7:8'), { family: 6, value: 0x00010002000300040005000600070008n });
  t.equal(parseIp('300.1.2.3'), null);
  t.equal(parseIp('010.1.2.3'), null, 'leading zeros are ambiguous (octal) and refused');
  t.equal(parseIp('fe80::1%eth0'), null, 'zone ids are not addresses');
  t.equal(parseIp('example.com'), null);
});

t.test('parseCidr, host bits and networks', async (t) => {
  t.same(parseCidr('198.18.0.0/15'), { family: 4, value: 0xc6120000n, prefix: 15 });
  t.equal(parseCidr('192.0.2.0'), null, 'a prefix length is required');
  t.equal(parseCidr('192.0.2.0/33'), null);
  t.equal(parseCidr('2001:db8::/129'), null);
  t.equal(parseCidr('192.0.2.0/024'), null, 'no leading zeros in the prefix');
  t.notOk(hasHostBits(parseCidr('203.0.113.0/24')!));
  t.ok(hasHostBits(parseCidr('203.0.113.7/24')!));
  t.equal(formatCidr(networkOf(parseCidr('203.0.113.7/24')!)), '203.0.113.0/24');
  t.equal(formatCidr(networkOf(parseCidr('2001:db8:1:2::5/32')!)), '2001:db8::/32');
  t.equal(cidrSize(parseCidr('198.18.0.0/16')!), 65536n);
  t.equal(cidrSize(parseCidr('fdfe:dcba:9876:1::/96')!), 1n << 32n);
});

t.test('overlap and containment', async (t) => {
  const a = parseCidr('198.18.0.0/15')!;
  const b = parseCidr('198.19.0.0/30')!;
  const c = parseCidr('198.20.0.0/16')!;
  t.ok(cidrOverlap(a, b));
  t.ok(cidrOverlap(b, a));
  t.notOk(cidrOverlap(a, c));
  t.notOk(cidrOverlap(parseCidr('198.18.0.0/16')!, b), 'the default fake range and TUN block are disjoint');
  t.notOk(cidrOverlap(a, parseCidr('::/0')!), 'families never overlap');
  t.ok(cidrContains(a, parseIp('198.19.255.255')!));
  t.notOk(cidrContains(a, parseIp('198.20.0.0')!));
});

t.test('formatIp follows RFC 5952', async (t) => {
  const f = (s: string): string => formatIp(parseIp(s)!);
  t.equal(f('2001:0db8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
  t.equal(f('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1', 'the first of two equal runs is compressed');
  t.equal(f('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1', 'a single zero group is not compressed');
  t.equal(f('::'), '::');
  t.equal(f('fe80::'), 'fe80::');
  t.equal(f('192.0.2.255'), '192.0.2.255');
  t.equal(f('::ffff:c000:201'), '::ffff:192.0.2.1', 'IPv4-mapped addresses print the dotted quad (RFC 5952 5)');
});

/** Deterministic PRNG (mulberry32) so the property test is reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), a | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('the schema IPv6 pattern agrees with node:net and the parser on random forms', async (t) => {
  const rand = rng(0x51ce);
  const re = new RegExp(`^${IPV6}$`, 'u');
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  let checked = 0;
  let valids = 0;
  for (let i = 0; i < 4000; i++) {
    const groups = Array.from({ length: 8 }, () => (rand() < 0.4 ? 0 : Math.floor(rand() * 65536)).toString(16));
    let text: string;
    const form = pick(['full', 'compressed', 'v4tail', 'mutated'] as const);
    if (form === 'full') text = groups.join(':');
    else if (form === 'v4tail') text = `${groups.slice(0, 6).join(':')}:${[1, 2, 3, 4].map(() => Math.floor(rand() * 256)).join('.')}`;
    else {
      const start = Math.floor(rand() * 8);
      const len = 1 + Math.floor(rand() * (8 - start));
      text = `${groups.slice(0, start).join(':')}::${groups.slice(start + len).join(':')}`;
    }
    if (form === 'mutated') {
      const pos = Math.floor(rand() * (text.length + 1));
      text = text.slice(0, pos) + pick([':', '::', 'g', '1', '.', '12345']) + text.slice(pos);
    }
    const valid = isIPv6(text);
    if (re.test(text) !== valid) t.fail(`pattern and isIPv6 disagree on ${text}`);
    if (valid) {
      const ip = parseIp(text)!;
      if (parseIp(formatIp(ip))!.value !== ip.value) t.fail(`round trip of ${text} through ${formatIp(ip)}`);
      valids++;
    }
    checked++;
  }
  t.equal(checked, 4000);
  t.ok(valids > 1000 && valids < 4000, `a mix of valid (${valids}) and invalid forms was tried`);
});

t.test('CIDR patterns accept what parseCidr accepts', async (t) => {
  const v4 = new RegExp(`^${IPV4_CIDR}$`, 'u');
  const v6 = new RegExp(`^${IPV6_CIDR}$`, 'u');
  for (const s of ['0.0.0.0/0', '192.0.2.0/24', '255.255.255.255/32', '10.0.0.0/8']) t.ok(v4.test(s), s);
  for (const s of ['300.1.2.3/8', '192.0.2.0/33', '192.0.2/24', '01.2.3.4/8', '1.2.3.4/']) t.notOk(v4.test(s), s);
  for (const s of ['::/0', '2001:db8::/32', 'fdfe:dcba:9876:1::/96', '::ffff:192.0.2.0/120']) t.ok(v6.test(s), s);
  for (const s of ['2001:db8::/129', '2001:db8:::/32', 'gg::/8', '2001:db8::']) t.notOk(v6.test(s), s);
});
