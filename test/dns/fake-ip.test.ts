import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { FakeIpPool } from '../../src/dns/fake-ip.js';

t.test('a domain keeps its address while mapped; reverse lookup finds it', async (t) => {
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/15', ipv6Range: 'fc00::/18', exclude: ['198.18.0.1'] });
  const a = pool.allocateIpv4('Example.COM.')!;
  t.equal(a, '198.18.0.2', 'first address skips the network and the excluded TUN address');
  t.equal(pool.allocateIpv4('example.com'), a, 'case and trailing dot do not matter');
  t.equal(pool.allocateIpv4('other.example'), '198.18.0.3');
  const v6 = pool.allocateIpv6('example.com')!;
  t.equal(v6, 'fc00::1');
  t.equal(pool.lookup(a), 'example.com');
  t.equal(pool.lookup('fc00:0:0:0::1'), 'example.com', 'non-canonical IPv6 text');
  t.equal(pool.lookup('198.18.0.200'), null, 'unmapped fake address');
  t.equal(pool.lookup('192.0.2.1'), null, 'outside the range');
  t.equal(pool.lookup('not an ip'), null);
  t.ok(pool.isFake('198.19.255.254'));
  t.notOk(pool.isFake('198.20.0.1'));
  t.ok(pool.isFake('fc00:3fff::1'));
  t.notOk(pool.isFake('fc00:4000::1'));
  // From packet bytes, as the engine sees a flow.
  const pkt = Uint8Array.from([0, 0, 198, 18, 0, 3]);
  t.equal(pool.lookupBytes(pkt, 2, 4), 'other.example');
  t.ok(pool.isFakeBytes(pkt, 2, 4));
  const v6pkt = new Uint8Array(16);
  v6pkt[0] = 0xfc;
  v6pkt[15] = 1;
  t.equal(pool.lookupBytes(v6pkt, 0, 6), 'example.com');
  v6pkt[8] = 1; // same low 32 bits, different middle bits: not an allocated offset
  t.equal(pool.lookupBytes(v6pkt, 0, 6), null);
  t.equal(pool.peek('example.com', 4), a);
  t.equal(pool.peek('nobody.example', 4), null);
  const s = pool.stats();
  t.equal(s.v4Entries, 2);
  t.equal(s.v6Entries, 1);
  t.equal(s.v4Capacity, 65536, 'capped by maxEntries (default)');
  t.equal(s.reverseMisses, 3, "unmapped, outside, and middle-bits miss; unparsable text is not counted");
});

t.test('without an IPv6 range there are no IPv6 fake addresses', async (t) => {
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/16' });
  t.equal(pool.hasIpv6, false);
  t.equal(pool.allocateIpv6('x.example'), null);
  t.notOk(pool.isFake('fc00::1'));
  t.equal(pool.lookup('fc00::1'), null);
});

t.test('never hands out network, broadcast or excluded addresses; recycles LRU when full', async (t) => {
  // /29: 8 addresses, .0 network, .7 broadcast, .1 the TUN, .2-.3 excluded as a CIDR -> .4 .5 .6 usable.
  const pool = new FakeIpPool({ ipv4Range: '10.9.0.0/29', exclude: ['10.9.0.1', '10.9.0.2/31', '192.0.2.0/24'] });
  t.equal(pool.stats().v4Capacity, 3);
  const a = pool.allocateIpv4('a.test');
  const b = pool.allocateIpv4('b.test');
  const c = pool.allocateIpv4('c.test');
  t.same([a, b, c], ['10.9.0.4', '10.9.0.5', '10.9.0.6']);
  // Use a via a flow (reverse lookup) and c via DNS: b becomes least recently used.
  t.equal(pool.lookup(a!), 'a.test');
  pool.allocateIpv4('c.test');
  const d = pool.allocateIpv4('d.test');
  t.equal(d, b, 'd reuses the least recently used address');
  t.equal(pool.lookup(b!), 'd.test');
  t.equal(pool.peek('b.test', 4), null, 'b was recycled');
  t.equal(pool.stats().recycled, 1);
  // Exhaustion keeps recycling and never leaves the usable set.
  const seen = new Set<string>();
  for (let i = 0; i < 100; i++) seen.add(pool.allocateIpv4(`n${i}.test`)!);
  t.same([...seen].sort(), ['10.9.0.4', '10.9.0.5', '10.9.0.6']);
  t.equal(pool.stats().v4Entries, 3);
  // The 3 most recent names own the 3 addresses, and each maps back.
  for (const n of ['n97.test', 'n98.test', 'n99.test']) t.equal(pool.lookup(pool.peek(n, 4)!), n);
});

t.test('maxEntries caps a large range; IPv6 ranges wider than 2^32 work', async (t) => {
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/15', ipv6Range: 'fc00::/18', maxEntries: 4 });
  const got: string[] = [];
  for (let i = 0; i < 6; i++) got.push(pool.allocateIpv6(`h${i}.test`)!);
  t.same(got, ['fc00::1', 'fc00::2', 'fc00::3', 'fc00::4', 'fc00::1', 'fc00::2']);
  t.equal(pool.lookup('fc00::1'), 'h4.test');
  t.equal(pool.stats().v6Entries, 4);
  const wide = new FakeIpPool({ ipv4Range: '198.18.0.0/15', maxEntries: 300 });
  let last = '';
  for (let i = 0; i < 300; i++) last = wide.allocateIpv4(`w${i}.test`)!;
  t.equal(last, '198.18.1.44', 'offsets carry across octets (300 = 0x12c)');
});

t.test('configuration errors name the field', async (t) => {
  t.throws(() => new FakeIpPool({ ipv4Range: 'fc00::/18' }), { code: 'SLUICE_DNS_FAKEIP_CONFIG', message: /dns\.fakeIp\.ipv4Range/ });
  t.throws(() => new FakeIpPool({ ipv6Range: '198.18.0.0/15' }), { message: /dns\.fakeIp\.ipv6Range/ });
  t.throws(() => new FakeIpPool({ ipv4Range: '198.18.0.0/31' }), { message: /too small/ });
  t.throws(() => new FakeIpPool({ ipv4Range: '198.18.0.0/30', exclude: ['198.18.0.0/30'] }), { message: /no usable addresses/ });
  t.throws(() => new FakeIpPool({ ipv4Range: '198.18.0.0/16', exclude: ['nope'] }), { message: /dns\.fakeIp\.exclude/ });
  t.throws(() => new FakeIpPool({ ipv4Range: '198.18.0.0/16', maxEntries: 0 }), { message: /dns\.fakeIp\.maxEntries/ });
});

t.test('persist and restore across instances, atomically', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-fakeip-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'fakeip.json');
  const opts = { ipv4Range: '198.18.0.0/24', ipv6Range: 'fc00::/120', exclude: ['198.18.0.1'], maxEntries: 4 };
  const one = new FakeIpPool(opts);
  const a = one.allocateIpv4('a.test')!;
  const b = one.allocateIpv4('b.test')!;
  const c6 = one.allocateIpv6('c.test')!;
  one.lookup(a); // a is now most recently used, b least
  await one.persist(file);
  t.same(await readdir(dir), ['fakeip.json'], 'no temporary file left behind');
  const doc = JSON.parse(await readFile(file, 'utf8')) as { version: number; entries: [string, string][] };
  t.equal(doc.version, 1);
  t.same(doc.entries, [['b.test', b], ['a.test', a], ['c.test', c6]], 'oldest use first');

  const two = new FakeIpPool(opts);
  t.same(await two.restore(file), { restored: 3, skipped: 0, error: null });
  t.equal(two.lookup(a), 'a.test', 'a client that cached the old answer still reaches a.test');
  t.equal(two.lookup(c6), 'c.test');
  t.equal(two.allocateIpv4('b.test'), b, 'stable across restart');
  t.equal(two.allocateIpv4('d.test'), '198.18.0.4', 'new allocations avoid restored addresses');
  two.allocateIpv4('e.test');
  // Full (4 entries): the next allocation recycles the least recently used.
  const victimBefore = ['a.test', 'b.test', 'd.test', 'e.test'].map((n) => two.peek(n, 4));
  two.allocateIpv4('f.test');
  const gone = ['a.test', 'b.test', 'd.test', 'e.test'].filter((n) => two.peek(n, 4) === null);
  t.same(gone, ['a.test'], 'a was used before b was re-allocated, so a is the least recently used');
  t.equal(two.peek('f.test', 4), victimBefore[0]);

  // Overwriting keeps a valid file at every instant (rename over it).
  await two.persist(file);
  const three = new FakeIpPool(opts);
  t.equal((await three.restore(file)).restored, 5);
});

t.test('restore skips what no longer fits and reports missing/corrupt files', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-fakeip-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'f.json');
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/29', exclude: ['198.18.0.1'], maxEntries: 2 });
  t.same(await pool.restore(join(dir, 'missing.json')), { restored: 0, skipped: 0, error: 'missing' });
  await writeFile(file, '{"version":1,"entries":[');
  t.same(await pool.restore(file), { restored: 0, skipped: 0, error: 'corrupt' });
  await writeFile(file, '{"version":99,"entries":[]}');
  t.equal((await pool.restore(file)).error, 'corrupt');
  await writeFile(
    file,
    JSON.stringify({
      version: 1,
      entries: [
        ['old.test', '198.18.0.2'],
        ['outside.test', '10.0.0.1'],
        ['network.test', '198.18.0.0'],
        ['tun.test', '198.18.0.1'],
        ['broadcast.test', '198.18.0.7'],
        ['junk'],
        ['dup.test', '198.18.0.3'],
        ['mid.test', '198.18.0.4'],
        ['new.test', '198.18.0.5'],
      ],
    }),
  );
  const r = await pool.restore(file);
  t.same(r, { restored: 2, skipped: 7, error: null }, 'capacity 2: the two newest survive');
  t.equal(pool.lookup('198.18.0.5'), 'new.test');
  t.equal(pool.lookup('198.18.0.4'), 'mid.test');
  t.equal(pool.lookup('198.18.0.2'), null);
});
