/**
 * A full UDP session table: a one-way flood (spoofed sources, dead ports)
 * must not lock legitimate clients out for a whole idle timeout. The oldest
 * session that never got a reply makes room for a new one (conntrack's early
 * drop of entries not yet assured); a table where every session has been
 * answered refuses the newcomer instead.
 */
import t from 'tap';
import { Stack } from '../../src/stack.js';
import type { UdpSession } from '../../src/udp/session.js';
import { MemoryLink } from './memory-link.js';
import { udpDatagram } from './packets.js';

const payload = new Uint8Array([1, 2, 3]);

function lab(t: { teardown(fn: () => void): void }, max: number) {
  const link = new MemoryLink(1500);
  const clock = { now: 1000 };
  const sessions: UdpSession[] = [];
  const closed: number[] = [];
  const stack = new Stack(
    link,
    {
      onTcpFlow: (r) => r.drop(),
      onUdpSession: (s) => {
        sessions.push(s);
        s.on('message', () => {});
        s.on('close', () => void closed.push(s.srcPort));
      },
    },
    { clock: () => clock.now, maxUdpSessions: max, udpIdleTimeoutMs: 60_000 },
  );
  stack.start();
  t.teardown(() => stack.close());
  return { link, stack, sessions, closed };
}

t.test('a full table evicts the oldest unanswered session for a new one', async (t) => {
  const { link, stack, sessions, closed } = lab(t, 3);
  link.inject(udpDatagram(4, 1001, 53, payload));
  link.inject(udpDatagram(4, 1002, 53, payload));
  link.inject(udpDatagram(4, 1003, 53, payload));
  t.equal(stack.stats.udpSessionsActive, 3, 'the table is full');
  sessions[0]!.send(payload);
  link.drain();

  link.inject(udpDatagram(4, 1004, 53, payload));
  t.equal(sessions.length, 4, 'the newcomer got a session');
  t.same(closed, [1002], 'the oldest unanswered session (1002) made room; the answered 1001 stayed');
  t.equal(stack.stats.udpSessionsActive, 3, 'still bounded');
  t.equal(stack.stats.drops.udp_evicted, 1, 'the eviction is counted');
  t.equal(stack.stats.drops.udp_full, 0);

  link.inject(udpDatagram(4, 1001, 53, payload));
  t.equal(sessions.length, 4, 'the answered session still receives its datagrams');
  link.inject(udpDatagram(4, 1002, 53, payload));
  t.equal(sessions.length, 5, 'the evicted client starts a new session');
  t.same(closed, [1002, 1003], 'taking 1003 next, the oldest unanswered');
});

t.test('a table where every session was answered refuses the newcomer', async (t) => {
  const { link, stack, sessions, closed } = lab(t, 2);
  link.inject(udpDatagram(6, 2001, 53, payload));
  link.inject(udpDatagram(6, 2002, 53, payload));
  for (const s of sessions) s.send(payload);
  link.drain();
  link.inject(udpDatagram(6, 2003, 53, payload));
  t.equal(sessions.length, 2, 'no session for the newcomer');
  t.same(closed, [], 'no answered session was evicted');
  t.equal(stack.stats.drops.udp_full, 1, 'the refusal is counted');

  sessions[1]!.close();
  link.inject(udpDatagram(6, 2003, 53, payload));
  t.equal(sessions.length, 3, 'room again once a session ends');
});
