/** limits.dials / limits.dialsPerSource: the caps, the counters, release. */
import t from 'tap';
import { DialLimiter } from '../../src/engine/dial-limiter.js';

t.test('per-source cap, then the global cap; both counted; release frees the slot', async (t) => {
  const d = new DialLimiter(5, 2);
  t.ok(d.tryAcquire('192.0.2.2'));
  t.ok(d.tryAcquire('192.0.2.2'));
  t.notOk(d.tryAcquire('192.0.2.2'), 'third dial from one source refused');
  t.equal(d.counters.refusedPerSource, 1);
  t.ok(d.tryAcquire('192.0.2.3'));
  t.ok(d.tryAcquire('192.0.2.3'));
  t.ok(d.tryAcquire('192.0.2.4'));
  t.notOk(d.tryAcquire('192.0.2.5'), 'sixth dial overall refused');
  t.equal(d.counters.refusedGlobal, 1);
  t.equal(d.counters.active, 5);
  t.equal(d.sources, 3);
  d.release('192.0.2.2');
  t.ok(d.tryAcquire('192.0.2.2'), 'a released slot is usable again');
  for (const s of ['192.0.2.2', '192.0.2.2', '192.0.2.3', '192.0.2.3', '192.0.2.4']) d.release(s);
  t.equal(d.counters.active, 0);
  t.equal(d.sources, 0, 'no entry left behind');
  d.release('198.51.100.9');
  t.equal(d.counters.active, 0, 'a stray release changes nothing');
});
