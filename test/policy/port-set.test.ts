import t from 'tap';
import { PortIndex, PortSet, parsePortItem } from '../../src/engine/policy/port-set.js';

t.test('port items: numbers, strings, ranges', async (t) => {
  t.same(parsePortItem(443), { ok: true, lo: 443, hi: 443 });
  t.same(parsePortItem('443'), { ok: true, lo: 443, hi: 443 });
  t.same(parsePortItem('8000-8100'), { ok: true, lo: 8000, hi: 8100 });
  t.same(parsePortItem(' 8000 - 8100 '), { ok: true, lo: 8000, hi: 8100 });
  t.same(parsePortItem(0), { ok: true, lo: 0, hi: 0 });
  t.same(parsePortItem('0-65535'), { ok: true, lo: 0, hi: 65535 });
  const bad: [unknown, RegExp][] = [
    [65536, /0\.\.65535/],
    [-1, /0\.\.65535/],
    [1.5, /0\.\.65535/],
    ['70000', /above 65535/],
    ['8100-8000', /ends before it starts; write "8000-8100"/],
    ['80,443', /expected a port/],
    ['http', /expected a port/],
    ['', /expected a port/],
    [null, /got null/],
    [true, /got boolean/],
  ];
  for (const [item, why] of bad) {
    const r = parsePortItem(item);
    t.equal(r.ok, false, String(item));
    if (!r.ok) t.match(r.reason, why);
  }
});

t.test('PortSet merges and answers membership', async (t) => {
  const s = new PortSet([
    [443, 443],
    [8000, 8100],
    [8101, 8200],
    [80, 80],
    [8050, 8060],
  ]);
  t.equal(s.rangeCount, 3, 'adjacent and overlapping ranges merged');
  t.equal(s.toString(), '80,443,8000-8200');
  for (const p of [80, 443, 8000, 8100, 8101, 8200]) t.ok(s.has(p), `has ${p}`);
  for (const p of [0, 79, 81, 442, 444, 7999, 8201, 65535]) t.notOk(s.has(p), `lacks ${p}`);
  t.notOk(new PortSet([]).has(0));
});

t.test('PortIndex: smallest value per port, any insertion order', async (t) => {
  const ix = new PortIndex();
  ix.add(0, 65535, 9);
  ix.add(8000, 8100, 4);
  ix.add(8080, 8080, 2);
  ix.add(8050, 8090, 7);
  ix.add(22, 22, 11);
  ix.build();
  t.equal(ix.minMatch(8080), 2);
  t.equal(ix.minMatch(8079), 4);
  t.equal(ix.minMatch(8101), 9);
  t.equal(ix.minMatch(22), 9, 'rule 9 covers 22 and comes first');
  t.equal(ix.minMatch(65535), 9);
  t.equal(ix.size, 5);
  t.throws(() => ix.add(1, 1, 1), /after build/);
  const empty = new PortIndex().build();
  t.equal(empty.minMatch(80), -1);
});

t.test('PortIndex against brute force', async (t) => {
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const ranges: [number, number, number][] = [];
  const ix = new PortIndex();
  for (let i = 0; i < 300; i++) {
    const lo = rnd(65536);
    const hi = Math.min(65535, lo + (rnd(4) === 0 ? rnd(20000) : rnd(10)));
    const v = rnd(1000);
    ranges.push([lo, hi, v]);
    ix.add(lo, hi, v);
  }
  ix.build();
  let bad = 0;
  for (let p = 0; p < 65536; p += 7) {
    let want = -1;
    for (const [lo, hi, v] of ranges) if (p >= lo && p <= hi && (want < 0 || v < want)) want = v;
    if (ix.minMatch(p) !== want) bad++;
  }
  t.equal(bad, 0);
});
