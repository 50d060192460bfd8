/**
 * src/workers/observed-events.ts: a worker engine's observer events cross
 * to the main thread as numbers and one list of texts, and replay there
 * into the same observer calls, in order, with the same values (through a
 * structured clone, as postMessage sends them); a full batch drops events
 * instead of growing without bound.
 */
import t from 'tap';
import type { EndedFlow, EngineObserver, SniffOutcome } from '../../src/engine/observer.js';
import { ObservedRecorder, replayObserved, type ObservedBatch } from '../../src/workers/observed-events.js';

class Calls implements EngineObserver {
  readonly seen: unknown[] = [];
  flowEnded(f: EndedFlow): void {
    this.seen.push(['flow', { ...f }]);
  }
  dialed(outbound: string, seconds: number, failure: Error | null): void {
    this.seen.push(['dial', outbound, seconds, failure === null ? null : failure.message]);
  }
  sniffed(protocol: string | null, outcome: SniffOutcome): void {
    this.seen.push(['sniff', protocol, outcome]);
  }
  reloaded(): void {}
}

t.test('events replay in order with their values', async (t) => {
  let wakes = 0;
  const rec = new ObservedRecorder(1000, () => wakes++);
  const want = new Calls();
  const flows: EndedFlow[] = [
    { network: 'tcp', inbound: 'tun', outbound: 'direct', close: 'client closed', bytesUp: 77, bytesDown: 1024 + 240, durationMs: 3.5 },
    { network: 'udp', inbound: 'tproxy', outbound: '', close: 'upstream failed: connect ECONNREFUSED', bytesUp: 0, bytesDown: 0, durationMs: 0 },
  ];
  // Enough events to grow the recorder's buffer past its first size.
  for (let i = 0; i < 100; i++) {
    for (const o of [rec, want]) {
      o.dialed('direct', 0.001 * i, i % 7 === 0 ? new Error('connect ETIMEDOUT') : null);
      o.sniffed(i % 3 === 0 ? null : 'http', i % 3 === 0 ? 'not_found' : 'found');
      o.flowEnded(flows[i % 2]!);
    }
    rec.dnsUpstream(0.25, i % 2 === 0);
    want.seen.push(['dns', 0.25, i % 2 === 0]);
  }
  t.equal(rec.size, 400, 'four events a round');
  t.equal(wakes, 400, 'each event asks for a report');
  const batch = structuredClone(rec.take()) as ObservedBatch;
  t.ok(batch.strings.length <= 8, `each text crosses once (${batch.strings.length})`);
  const got = new Calls();
  replayObserved(batch, got, (seconds, ok) => got.seen.push(['dns', seconds, ok]));
  t.same(got.seen, want.seen, 'the same calls, in order');
  t.equal(rec.take().nums.length, 0, 'a take empties the recorder');
});

t.test('a full batch drops events', async (t) => {
  const rec = new ObservedRecorder(3, () => {});
  for (let i = 0; i < 10; i++) rec.sniffed('tls', 'found');
  t.equal(rec.size, 3, 'at most max events a batch');
  const got = new Calls();
  replayObserved(rec.take(), got, null);
  t.equal(got.seen.length, 3);
  rec.sniffed('tls', 'found');
  t.equal(rec.size, 1, 'the next batch starts empty');
});
