/**
 * src/workers/shared-dials.ts: the dials table every engine of a
 * multi-queue run shares (limits.dials, limits.dialsPerSource over all
 * workers), checked against a plain model through many acquire/release
 * steps on a small table (long probe runs, so the backward-shift deletion
 * is exercised), and across two worker threads on one buffer.
 */
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { newDialTable, SharedDialTable } from '../../src/workers/shared-dials.js';

t.test('caps in all and per source, against a model', async (t) => {
  const table = new SharedDialTable(newDialTable(20)); // 64 slots
  const model = new Map<string, number>();
  let active = 0;
  let seed = 7;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  let mismatches = 0;
  for (let step = 0; step < 20_000; step++) {
    const src = `192.0.2.${rand(40)}`;
    const have = model.get(src) ?? 0;
    if (rand(2) === 0) {
      const want = active >= 20 ? 'global' : have >= 3 ? 'source' : 'ok';
      const got = table.tryAcquire(src, 20, 3);
      if (got !== want) mismatches++;
      if (got === 'ok') {
        model.set(src, have + 1);
        active++;
      }
    } else if (have > 0) {
      table.release(src);
      if (have === 1) model.delete(src);
      else model.set(src, have - 1);
      active--;
    }
    if (table.active !== active) mismatches++;
  }
  t.equal(mismatches, 0, 'every verdict and the total match the model');
  for (const [src, n] of model) for (let i = 0; i < n; i++) table.release(src);
  t.equal(table.active, 0, 'all released');
  t.equal(table.tryAcquire('198.51.100.1', 1, 1), 'ok', 'a fresh source gets a slot');
  t.equal(table.tryAcquire('198.51.100.2', 1, 1), 'global', 'limits.dials over all sources');
});

t.test('two threads on one table never exceed the caps', async (t) => {
  const sab = newDialTable(8);
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.mod).then(({ SharedDialTable }) => {
      const t = new SharedDialTable(workerData.sab);
      let ok = 0, over = 0;
      for (let i = 0; i < 20000; i++) {
        const src = '203.0.113.' + (i % 5);
        if (t.tryAcquire(src, 8, 2) === 'ok') { ok++; if (t.active > 8) over++; t.release(src); }
      }
      parentPort.postMessage({ ok, over });
    });`;
  const mod = new URL('../../src/workers/shared-dials.js', import.meta.url).href;
  const run = (): Promise<{ ok: number; over: number }> =>
    new Promise((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { sab, mod } });
      w.once('message', resolve);
      w.once('error', reject);
    });
  const [a, b] = await Promise.all([run(), run()]);
  t.ok(a.ok > 0 && b.ok > 0, `both threads got slots (${a.ok}, ${b.ok})`);
  t.equal(a.over + b.over, 0, 'the total never went past limits.dials');
  t.equal(new SharedDialTable(sab).active, 0, 'every slot given back');
});
