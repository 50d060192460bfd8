/**
 * The stack's TCP loss counters are sums over the open connections, read
 * live: the six getters read together walk the flows once while nothing
 * can have changed (countsGeneration), and again as soon as something may.
 */
import t from 'tap';
import { newStackStats, newTcpConnectionCounts, type TcpConnectionCounts, type TcpCounterSource } from '../../src/stack/counters.js';

class FakeSource implements TcpCounterSource {
  readonly closed = newTcpConnectionCounts();
  readonly open: TcpConnectionCounts[] = [newTcpConnectionCounts(), newTcpConnectionCounts()];
  walks = 0;
  countsGeneration: number | undefined = 0;
  forEachOpen(fn: (c: TcpConnectionCounts) => void): void {
    this.walks++;
    for (const c of this.open) fn(c);
  }
}

const readAll = (s: ReturnType<typeof newStackStats>): number[] => [s.tcpRetransmits, s.tcpTimeouts, s.tcpLostRetransmits, s.tcpLossProbes, s.tcpZeroWindowsSent, s.tcpWindowProbes];

t.test('one walk for the six getters at one generation; a new generation sums again', async (t) => {
  const src = new FakeSource();
  src.closed.retransmits = 1;
  src.open[0]!.retransmits = 2;
  src.open[1]!.windowProbes = 5;
  const stats = newStackStats(src);
  t.same(readAll(stats), [3, 0, 0, 0, 0, 5]);
  t.equal(src.walks, 1, 'six getters, one walk');
  t.same({ ...stats }.tcpRetransmits, 3, 'a spread reads the same');
  t.equal(src.walks, 1, 'still one walk at the same generation');
  src.open[1]!.retransmits = 10;
  src.countsGeneration!++;
  t.equal(stats.tcpRetransmits, 13, 'live: the change shows once the generation moved');
  t.equal(src.walks, 2);
});

t.test('a source without a generation is summed at every read', async (t) => {
  const src = new FakeSource();
  src.countsGeneration = undefined;
  const stats = newStackStats(src);
  readAll(stats);
  t.equal(src.walks, 6);
  src.open[0]!.timeouts = 4;
  t.equal(stats.tcpTimeouts, 4);
});

t.test('two sources at the same generation number never share a sum', async (t) => {
  const a = new FakeSource();
  const b = new FakeSource();
  a.open[0]!.lossProbes = 1;
  b.open[0]!.lossProbes = 7;
  const sa = newStackStats(a);
  const sb = newStackStats(b);
  t.equal(sa.tcpLossProbes, 1);
  t.equal(sb.tcpLossProbes, 7);
  t.equal(sa.tcpLossProbes, 1);
});
