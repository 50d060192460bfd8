/** Every state change goes through setState and is published on TCP_STATE_CHANNEL, with its reason. */
import t from 'tap';
import diagnostics_channel from 'node:diagnostics_channel';
import { TCP_ACK, TCP_FIN } from '../../src/wire/tcp.js';
import { TCP_STATE_CHANNEL, type StateChange } from '../../src/tcp/connection.js';
import { config, established, synReceived } from './helpers.js';

t.test('a full life, passive open to TIME-WAIT expiry, is traced transition by transition', async (t) => {
  const seen: string[] = [];
  const listener = (m: unknown): void => {
    const c = m as StateChange;
    seen.push(`${c.from} -> ${c.to} (${c.reason})`);
  };
  diagnostics_channel.subscribe(TCP_STATE_CHANNEL, listener);
  t.teardown(() => diagnostics_channel.unsubscribe(TCP_STATE_CHANNEL, listener));
  const f = established(config({ timeWaitMs: 100 }));
  f.conn.shutdownWrite();
  f.dispatch();
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });
  f.send({ flags: TCP_FIN | TCP_ACK });
  f.advance(100);
  t.same(seen, [
    'SYN-RECEIVED -> ESTABLISHED (handshake)',
    'ESTABLISHED -> FIN-WAIT-1 (fin-sent)',
    'FIN-WAIT-1 -> FIN-WAIT-2 (fin-acked)',
    'FIN-WAIT-2 -> TIME-WAIT (peer-fin)',
    'TIME-WAIT -> CLOSED (time-wait-expired)',
  ]);
  t.equal(f.rec.closed, 'fin', 'the owner still hears the RFC reason');
});

t.test('the peer closes first, then a reset: each change carries its reason', async (t) => {
  const seen: StateChange[] = [];
  const listener = (m: unknown): void => void seen.push(m as StateChange);
  diagnostics_channel.subscribe(TCP_STATE_CHANNEL, listener);
  t.teardown(() => diagnostics_channel.unsubscribe(TCP_STATE_CHANNEL, listener));
  const f = established();
  f.send({ flags: TCP_FIN | TCP_ACK });
  f.peerSeq++;
  f.send({ flags: 0x04 });
  t.same(seen.map((c) => [c.to, c.reason]), [
    ['ESTABLISHED', 'handshake'],
    ['CLOSE-WAIT', 'peer-fin'],
    ['CLOSED', 'reset'],
  ]);
  t.equal(seen[1]!.connection, f.conn, 'the connection itself is in the message');
});

t.test('with no subscriber nothing is published', async (t) => {
  t.equal(diagnostics_channel.channel(TCP_STATE_CHANNEL).hasSubscribers, false);
  const f = synReceived();
  t.equal(f.conn.state, 'SYN-RECEIVED');
});
