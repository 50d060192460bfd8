import t from 'tap';
import { CidrTrie, CidrTriePair, formatIp, parseCidr, parseIp, parseIpv4, parseIpv6, tryParseCidr } from '../../src/engine/policy/cidr-trie.js';
import { PolicyError } from '../../src/engine/policy/errors.js';
import { Rng } from './random-policy.js';

const v4 = (s: string): Uint8Array => parseIpv4(s)!;
const v6 = (s: string): Uint8Array => parseIpv6(s)!;

t.test('IPv4 text: dotted quad only', async (t) => {
  t.same([...v4('203.0.113.9')], [203, 0, 113, 9]);
  t.same([...v4('0.0.0.0')], [0, 0, 0, 0]);
  t.same([...v4('255.255.255.255')], [255, 255, 255, 255]);
  for (const bad of ['256.0.0.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1..3.4', '1.2.3.4 ', '', 'a.b.c.d', '1.2.3.-4', '1234.1.1.1']) {
    t.equal(parseIpv4(bad), null, `refuses ${JSON.stringify(bad)}`);
  }
});

t.test('IPv6 text: RFC 4291 section 2.2 forms', async (t) => {
  t.same([...v6('::')], new Array(16).fill(0));
  t.same([...v6('::1')], [...new Array(15).fill(0), 1]);
  t.same([...v6('2001:db8::')], [0x20, 0x01, 0x0d, 0xb8, ...new Array(12).fill(0)]);
  t.same([...v6('2001:DB8:0:0:8:800:200C:417A')], [...v6('2001:db8::8:800:200c:417a')]);
  t.same([...v6('::ffff:192.0.2.1')], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
  t.same([...v6('0:0:0:0:0:0:13.1.68.3')], [...new Array(12).fill(0), 13, 1, 68, 3]);
  t.same([...v6('1:2:3:4:5:6:7::')], [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0]);
  for (const bad of ['1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', ':1::', '1:', 'fe80::1%eth0', 'g::1', '::1.2.3', '1:2:3:4:5:6:7:8::', ':::', '::ffff:1.2.3.4:5']) {
    t.equal(parseIpv6(bad), null, `refuses ${JSON.stringify(bad)}`);
  }
  t.equal(formatIp(v6('2001:db8:0:0:1:0:0:1')), '2001:db8::1:0:0:1');
  t.equal(formatIp(v6('::')), '::');
  t.equal(formatIp(v6('::1')), '::1');
  t.equal(formatIp(v6('1::')), '1::');
  t.equal(formatIp(v4('10.1.2.3')), '10.1.2.3');
  t.equal(parseIp('10.0.0.1')!.length, 4);
  t.equal(parseIp('::1')!.length, 16);
});

t.test('CIDR text: lengths, bare addresses, host bits, errors', async (t) => {
  const a = parseCidr('10.1.2.3/8');
  t.equal(a.family, 4);
  t.equal(a.prefixLen, 8);
  t.same([...a.bytes], [10, 0, 0, 0], 'host bits cleared');
  t.equal(a.hostBitsSet, true, 'and reported');
  t.equal(parseCidr('10.0.0.0/8').hostBitsSet, false);
  t.equal(parseCidr('192.0.2.7').prefixLen, 32, 'bare IPv4 is a host route');
  t.equal(parseCidr('2001:db8::1').prefixLen, 128, 'bare IPv6 is a host route');
  t.equal(parseCidr('0.0.0.0/0').prefixLen, 0);
  t.equal(parseCidr('::/0').prefixLen, 0);
  t.equal(parseCidr(' 2001:db8::/32 ').prefixLen, 32, 'surrounding space is trimmed');
  for (const [bad, why] of [
    ['10.0.0.0/33', /0\.\.32/],
    ['2001:db8::/129', /0\.\.128/],
    ['10.0.0.0/', /prefix length/],
    ['10.0.0.0/08', /prefix length/],
    ['10.0.0/8', /not an IPv4 or IPv6 address/],
    ['example.com/24', /not an IPv4/],
    ['', /not an IPv4/],
  ] as const) {
    const r = tryParseCidr(bad);
    t.equal(r.ok, false, bad);
    if (!r.ok) t.match(r.reason, why, `${bad}: ${r.reason}`);
  }
  try {
    parseCidr('nope', 'tun.ipv4');
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof PolicyError);
    t.match(e, { code: 'SLUICE_POLICY_INVALID_CIDR', path: 'tun.ipv4', message: /^tun\.ipv4: "nope" is not an IPv4 or IPv6 address/ });
  }
});

function trie4(entries: [string, number][]): CidrTrie {
  const tr = new CidrTrie(4);
  for (const [c, v] of entries) {
    const p = parseCidr(c);
    tr.insert(p.bytes, p.prefixLen, v);
  }
  return tr;
}

t.test('IPv4 trie: /0, /32, overlapping prefixes, longest vs minimum', async (t) => {
  const tr = trie4([
    ['10.0.0.0/8', 5],
    ['10.1.0.0/16', 2],
    ['10.1.2.0/24', 9],
    ['10.1.2.3/32', 7],
    ['192.168.0.0/16', 1],
  ]);
  t.equal(tr.longestMatch(v4('10.1.2.3')), 7, 'longest: the /32');
  t.equal(tr.minMatch(v4('10.1.2.3')), 2, 'minimum over /8 /16 /24 /32: the /16 rule');
  t.equal(tr.longestMatch(v4('10.1.2.4')), 9);
  t.equal(tr.minMatch(v4('10.1.2.4')), 2);
  t.equal(tr.longestMatch(v4('10.2.0.1')), 5);
  t.equal(tr.minMatch(v4('10.2.0.1')), 5);
  t.equal(tr.minMatch(v4('11.0.0.1')), -1, 'outside every prefix');
  t.equal(tr.longestMatch(v4('11.0.0.1')), -1);
  t.equal(tr.minMatch(v4('192.168.255.255')), 1);
  t.equal(tr.minMatchV4(((192 << 24) | (168 << 16) | 1) >>> 0), 1, 'uint32 form');
  t.equal(tr.minMatch(v4('192.169.0.0')), -1);

  const withDefault = trie4([
    ['10.1.2.3/32', 4],
    ['0.0.0.0/0', 6],
  ]);
  t.equal(withDefault.minMatch(v4('8.8.8.8')), 6, '/0 holds every address');
  t.equal(withDefault.minMatch(v4('10.1.2.3')), 4);
  t.equal(withDefault.longestMatch(v4('10.1.2.3')), 4);
  t.equal(withDefault.minMatch(v4('10.1.2.2')), 6, '/32 holds one address only');
  const zeroFirst = trie4([
    ['0.0.0.0/0', 0],
    ['10.1.2.3/32', 4],
  ]);
  t.equal(zeroFirst.minMatch(v4('10.1.2.3')), 0, 'an earlier /0 wins over a later /32');
  t.equal(zeroFirst.longestMatch(v4('10.1.2.3')), 4, 'while longest-prefix still finds the /32');
});

t.test('the same prefix twice keeps the smaller value; insert returns the node', async (t) => {
  const tr = new CidrTrie(4);
  const p = parseCidr('172.16.0.0/12');
  const n1 = tr.insert(p.bytes, 12, 30);
  const n2 = tr.insert(p.bytes, 12, 3);
  const n3 = tr.insert(parseCidr('172.31.255.255/12').bytes, 12, 40);
  t.equal(n1, n2);
  t.equal(n1, n3, 'host bits do not make a different prefix');
  t.equal(tr.valueAt(n1), 3);
  t.equal(tr.minMatch(v4('172.20.1.1')), 3);
  t.throws(() => tr.insert(new Uint8Array(16), 8, 1), RangeError, 'wrong address length');
  t.throws(() => tr.insert(p.bytes, 33, 1), RangeError);
  t.throws(() => tr.insert(p.bytes, 8, -1), RangeError);
});

t.test('split nodes: diverging prefixes share an internal node without a value', async (t) => {
  const tr = trie4([
    ['10.0.0.0/24', 1],
    ['10.0.1.0/24', 2],
  ]);
  // root, the /23 split, two leaves
  t.equal(tr.nodeCount, 4);
  t.equal(tr.minMatch(v4('10.0.0.9')), 1);
  t.equal(tr.minMatch(v4('10.0.1.9')), 2);
  t.equal(tr.minMatch(v4('10.0.2.9')), -1, 'the split node is not a prefix');
  const out = new Int32Array(33);
  t.equal(tr.collect(v4('10.0.1.200'), out), 1);
  t.equal(tr.valueAt(out[0]!), 2);
});

t.test('IPv6 trie: /0, /128, overlapping prefixes, collect order', async (t) => {
  const tr = new CidrTrie(6);
  const add = (c: string, v: number): number => {
    const p = parseCidr(c);
    return tr.insert(p.bytes, p.prefixLen, v);
  };
  add('2001:db8::/32', 8);
  add('2001:db8:1::/48', 3);
  add('2001:db8:1:2::/64', 6);
  add('2001:db8:1:2::1/128', 9);
  add('::/0', 12);
  t.equal(tr.minMatch(v6('2001:db8:1:2::1')), 3);
  t.equal(tr.longestMatch(v6('2001:db8:1:2::1')), 9);
  t.equal(tr.longestMatch(v6('2001:db8:1:2::2')), 6);
  t.equal(tr.minMatch(v6('2001:db8:ffff::1')), 8);
  t.equal(tr.minMatch(v6('2001:db9::1')), 12, 'only ::/0');
  const out = new Int32Array(129);
  const n = tr.collect(v6('2001:db8:1:2::1'), out);
  t.same(Array.from(out.subarray(0, n), (x) => tr.valueAt(x)), [12, 8, 3, 6, 9], 'shortest prefix first');
  // prefix lengths that are not multiples of 32
  const odd = new CidrTrie(6);
  const p = parseCidr('2001:db8:8000::/33');
  odd.insert(p.bytes, 33, 1);
  t.equal(odd.minMatch(v6('2001:db8:8fff::')), 1);
  t.equal(odd.minMatch(v6('2001:db8:7fff::')), -1);
  const last = parseCidr('::1/127');
  odd.insert(last.bytes, 127, 2);
  t.equal(odd.minMatch(v6('::')), 2);
  t.equal(odd.minMatch(v6('::1')), 2);
  t.equal(odd.minMatch(v6('::2')), -1);
});

t.test('pair: family and address length must agree', async (t) => {
  const pair = new CidrTriePair();
  pair.insert(parseCidr('0.0.0.0/0'), 1);
  pair.insert(parseCidr('::/0'), 2);
  t.equal(pair.minMatch(4, v4('1.2.3.4')), 1);
  t.equal(pair.minMatch(6, v6('::1')), 2);
  t.equal(pair.minMatch(4, v6('::1')), -1, 'a 16-byte address is not IPv4');
  t.equal(pair.minMatch(6, v4('1.2.3.4')), -1);
  t.equal(pair.size, 2);
});

function brute(prefixes: { b: Uint8Array; len: number; v: number }[], addr: Uint8Array): { min: number; longest: number } {
  let min = -1;
  let longest = -1;
  let longestLen = -1;
  for (const p of prefixes) {
    let ok = true;
    for (let bit = 0; bit < p.len && ok; bit++) {
      const i = bit >> 3;
      const m = 0x80 >> (bit & 7);
      if ((p.b[i]! & m) !== (addr[i]! & m)) ok = false;
    }
    if (!ok) continue;
    if (min < 0 || p.v < min) min = p.v;
    if (p.len > longestLen || (p.len === longestLen && p.v < longest)) {
      longestLen = p.len;
      longest = p.v;
    }
  }
  return { min, longest };
}

for (const family of [4, 6] as const) {
  t.test(`IPv${family} trie against brute force: 2,000 random prefixes, 5,000 lookups`, async (t) => {
    const r = new Rng(family * 1000 + 17);
    const bytes = family === 4 ? 4 : 16;
    const bits = bytes * 8;
    const tr = new CidrTrie(family);
    const prefixes: { b: Uint8Array; len: number; v: number }[] = [];
    // clustered prefixes so they overlap: a few top bytes from a small set
    const randAddr = (): Uint8Array => {
      const b = new Uint8Array(bytes).map(() => r.int(256));
      b[0] = r.pick([10, 20, 30]);
      b[1] = r.pick([0, 1, 255]);
      return b;
    };
    for (let i = 0; i < 2000; i++) {
      const b = randAddr();
      const len = r.chance(0.01) ? 0 : r.int(bits + 1);
      for (let bit = len; bit < bits; bit++) b[bit >> 3]! &= ~(0x80 >> (bit & 7));
      const v = r.int(5000);
      prefixes.push({ b, len, v });
      tr.insert(b, len, v);
    }
    let bad = 0;
    for (let i = 0; i < 5000; i++) {
      const a = i % 3 === 0 ? prefixes[r.int(prefixes.length)]!.b.slice() : randAddr();
      if (i % 3 === 0) a[bytes - 1] = a[bytes - 1]! ^ r.int(4);
      const want = brute(prefixes, a);
      if (tr.minMatch(a) !== want.min || tr.longestMatch(a) !== want.longest) bad++;
    }
    t.equal(bad, 0);
  });
}
